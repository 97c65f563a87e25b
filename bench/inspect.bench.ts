/**
 * `livestick inspect` of a 32 GiB stick image (sparse): GPT, a 1 GiB ext4 partition holding a sample
 * LiveOS/ medium, and the rest as one more ext4 partition. Goal (issue 12): under a second.
 *   node --import tsx bench/inspect.bench.ts
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FileDisk } from '../src/io/disk.ts';
import { addPartition, createGpt } from '../src/fs/ptable/index.ts';
import { applyPackageUpdate, buildSampleMedium } from '../src/ops/sample.ts';

const GiB = 2 ** 30;
const root = fileURLToPath(new URL('..', import.meta.url));
const work = mkdtempSync(join(tmpdir(), 'livestick-bench-inspect-'));
try {
  const tree = join(work, 'tree');
  await buildSampleMedium(tree);
  await applyPackageUpdate(tree, 1);
  const img = join(work, 'stick.img');
  const disk = await FileDisk.open(img, { create: { size: 32 * GiB } });
  let table = await createGpt(disk, { diskGuid: '0F1E2D3C-4B5A-4978-8695-A4B3C2D1E0F9' });
  table = await addPartition(disk, table, { sizeBytes: GiB, type: 'linux-filesystem', name: 'LIVE' });
  table = await addPartition(disk, table, { type: 'linux-filesystem', name: 'persistence' });
  await disk.close();
  const [p1, p2] = table.partitions;
  const mk = (args: string[]) => {
    const r = spawnSync('mke2fs', ['-q', '-t', 'ext4', ...args], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(r.stderr);
  };
  mk(['-L', 'LIVE', '-d', tree, '-E', `offset=${p1!.startBytes}`, img, `${p1!.sizeBytes / 1024}k`]);
  mk(['-L', 'persistence', '-E', `offset=${p2!.startBytes}`, img, `${Math.floor(p2!.sizeBytes / 4096) * 4}k`]);
  spawnSync('npm', ['run', '--silent', 'build'], { cwd: root, stdio: 'ignore' });
  const runs: number[] = [];
  for (let i = 0; i < 5; i++) {
    const t = process.hrtime.bigint();
    const r = spawnSync(process.execPath, [join(root, 'dist', 'cli', 'main.js'), 'inspect', img, '--json'], { encoding: 'utf8' });
    runs.push(Number(process.hrtime.bigint() - t) / 1e9);
    if (r.status !== 0) throw new Error(r.stdout + r.stderr);
    if (i === 0) console.log(`live systems found: ${JSON.parse(r.stdout).liveSystems.length}`);
  }
  runs.sort((a, b) => a - b);
  console.log(`inspect of a 32 GiB stick image: median ${runs[2]!.toFixed(2)} s (runs ${runs.map((r) => r.toFixed(2)).join(', ')}), CLI start-up included`);
} finally {
  rmSync(work, { recursive: true, force: true });
}
