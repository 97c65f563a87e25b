/**
 * ISO9660 benchmark: listing a 100k-entry ISO (100 directories of 1,000 empty files, Rock Ridge and
 * Joliet) with Iso9660Fs (readdir + stat of every entry, in this process) against
 * `xorriso -indev X -find /` (a child process; its wall time includes its start, a few ms).
 *   node --import tsx bench/iso9660.bench.ts [--runs 3]
 * The image is built once into .cache/iso9660-bench-100k.iso. Prints a Markdown table with medians.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FileDisk } from '../src/io/disk.ts';
import { Iso9660Fs } from '../src/fs/iso9660/index.ts';

const runsArg = process.argv.indexOf('--runs');
const runs = runsArg > 0 ? Number(process.argv[runsArg + 1]) : 3;
const root = fileURLToPath(new URL('..', import.meta.url));
const cacheDir = join(root, '.cache');
const iso = join(cacheDir, 'iso9660-bench-100k.iso');

if (!existsSync(iso)) {
  const dir = mkdtempSync(join(tmpdir(), 'livestick-iso-bench-'));
  try {
    const src = join(dir, 'src');
    for (let d = 0; d < 100; d++) {
      const sub = join(src, `directory-${String(d).padStart(3, '0')}`);
      mkdirSync(sub, { recursive: true });
      for (let f = 0; f < 1000; f++) writeFileSync(join(sub, `an-empty-file-with-a-longish-name-${f}.txt`), '');
    }
    mkdirSync(cacheDir, { recursive: true });
    const r = spawnSync('xorriso', ['-as', 'mkisofs', '-R', '-J', '-o', `${iso}.tmp`, src], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`xorriso: ${r.stderr}`);
    renameSync(`${iso}.tmp`, iso);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function ours(): Promise<{ seconds: number; entries: number }> {
  const started = performance.now();
  const disk = await FileDisk.open(iso, { readOnly: true });
  const fs = await Iso9660Fs.open(disk);
  let entries = 0;
  const queue = ['/'];
  while (queue.length > 0) {
    const dir = queue.pop()!;
    for (const e of await fs.readdir(dir)) {
      const p = dir === '/' ? `/${e.name}` : `${dir}/${e.name}`;
      await fs.stat(p);
      entries++;
      if (e.kind === 'dir') queue.push(p);
    }
  }
  await disk.close();
  return { seconds: (performance.now() - started) / 1000, entries };
}

function theirs(): { seconds: number; entries: number } {
  const started = performance.now();
  const r = spawnSync('xorriso', ['-indev', iso, '-find', '/'], { encoding: 'utf8', maxBuffer: 1 << 30 });
  if (r.status !== 0) throw new Error(`xorriso: ${r.stderr}`);
  return { seconds: (performance.now() - started) / 1000, entries: r.stdout.split('\n').filter((l) => l !== '').length - 1 };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const a: number[] = [];
const b: number[] = [];
let counts = '';
for (let i = 0; i < runs; i++) {
  const o = await ours();
  const t = theirs();
  a.push(o.seconds);
  b.push(t.seconds);
  counts = `${o.entries} / ${t.entries}`;
}
console.log('| list 100k-entry ISO | livestick (s) | xorriso -find (s) | ratio (ours / theirs) | entries (ours / theirs) |');
console.log('|---|---|---|---|---|');
console.log(`| readdir + stat, Rock Ridge | ${median(a).toFixed(3)} | ${median(b).toFixed(3)} | ${(median(a) / median(b)).toFixed(2)} | ${counts} |`);
