/**
 * EROFS benchmark: `livestick erofs create` and `extract` against erofs-utils 1.8.6 (mkfs.erofs and
 * fsck.erofs --extract from the Debian 13 chroot that scripts/trixie/build.sh makes), side by side in
 * one run, same corpus, same options, 2 threads each (mkfs.erofs --workers=2).
 *   node --import tsx bench/erofs.bench.ts [--corpus /usr/lib/x86_64-linux-gnu] [--extract-runs 3]
 *     [--variant fedora43|fedora42|lz4hc|zstd|deflate|all]
 * fedora43 is what Fedora 43 and Rawhide build their live bases with (-zlzma,level=6 -C1048576
 * -Efragments), fedora42 uses -Eall-fragments instead. The corpus is copied into the chroot once, so
 * both tools read the same files from the same page cache. Ours is the CLI compiled by tsc (dist/).
 * Prints a Markdown table: wall time, ratio (ours / theirs, lower is better), image size and its
 * ratio, peak RSS. Every timed run starts after `sync`.
 */
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, rmSync, statSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const arg = (name: string, def: string): string => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? (process.argv[i + 1] as string) : def;
};
const root = fileURLToPath(new URL('..', import.meta.url));
const trixie = join(root, '.cache/trixie');
const corpusSource = arg('corpus', '/usr/lib/x86_64-linux-gnu');
const extractRuns = Number(arg('extract-runs', '3'));

interface Variant {
  readonly name: string;
  readonly theirs: string[];
  readonly ours: string[];
}
const VARIANTS: Variant[] = [
  { name: 'fedora43', theirs: ['-zlzma,level=6', '-C1048576', '-Efragments'], ours: ['-z', 'lzma,level=6', '-C', '1M', '--fragments'] },
  { name: 'fedora42', theirs: ['-zlzma,level=6', '-C1048576', '-Eall-fragments'], ours: ['-z', 'lzma,level=6', '-C', '1M', '--all-fragments'] },
  { name: 'lz4hc', theirs: ['-zlz4hc,level=12', '-C65536'], ours: ['-z', 'lz4hc,level=12', '-C', '64K'] },
  { name: 'zstd', theirs: ['-zzstd,level=15', '-C131072'], ours: ['-z', 'zstd,level=15', '-C', '128K'] },
  { name: 'deflate', theirs: ['-zdeflate,level=9', '-C65536'], ours: ['-z', 'deflate,level=9', '-C', '64K'] },
];
const which = arg('variant', 'fedora43');
const variants = which === 'all' ? VARIANTS : VARIANTS.filter((v) => which.split(',').includes(v.name));
if (variants.length === 0) throw new Error(`no variant ${which}`);

const cli = join(root, 'dist/cli/main.js');

function run(cmd: string, args: string[]): { seconds: number; rssMiB: number } {
  spawnSync('sync');
  const t = process.hrtime.bigint();
  const r = spawnSync('/usr/bin/time', ['-f', '@@RSS %M', cmd, ...args], { encoding: 'utf8', maxBuffer: 1 << 26 });
  const seconds = Number(process.hrtime.bigint() - t) / 1e9;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${r.stderr.slice(-2000)}`);
  return { seconds, rssMiB: Number(/@@RSS (\d+)/.exec(r.stderr)?.[1] ?? 0) / 1024 };
}

function median(xs: number[]): number {
  return [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;
}

function main(): void {
  if (!existsSync(join(trixie, 'usr/bin/mkfs.erofs'))) throw new Error(`no erofs-utils 1.8.6 in ${trixie}: run scripts/trixie/build.sh`);
  const b = spawnSync('npm', ['run', '--silent', 'build'], { cwd: root, encoding: 'utf8' });
  if (b.status !== 0) throw new Error(`npm run build: ${b.stderr}`);
  const work = join(trixie, 'tmp/livestick-erofs-bench');
  const inChroot = '/tmp/livestick-erofs-bench';
  rmSync(work, { recursive: true, force: true });
  mkdirSync(work, { recursive: true });
  try {
    const corpus = join(work, 'corpus');
    cpSync(corpusSource, corpus, { recursive: true, verbatimSymlinks: true, preserveTimestamps: true });
    const du = spawnSync('du', ['-sm', corpus], { encoding: 'utf8' }).stdout.split('\t')[0];
    console.log(`corpus ${corpusSource}: ${du} MiB; load ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
    const rows: string[] = [];
    for (const v of variants) {
      const theirsImg = join(work, 'theirs.img');
      const oursImg = join(work, 'ours.img');
      const theirs = run('chroot', [trixie, 'mkfs.erofs', '--quiet', '--workers=2', ...v.theirs, `${inChroot}/theirs.img`, `${inChroot}/corpus`]);
      const ours = run(process.execPath, [cli, 'erofs', 'create', '--quiet', '--threads', '2', ...v.ours, corpus, oursImg]);
      const tSize = statSync(theirsImg).size;
      const oSize = statSync(oursImg).size;
      rows.push(`| ${v.name} create | ${ours.seconds.toFixed(1)} s | ${theirs.seconds.toFixed(1)} s | **${(ours.seconds / theirs.seconds).toFixed(2)}×** | ${(oSize / 2 ** 20).toFixed(1)} MiB | ${(tSize / 2 ** 20).toFixed(1)} MiB | **${(oSize / tSize).toFixed(3)}×** | ${ours.rssMiB.toFixed(0)} MiB | ${theirs.rssMiB.toFixed(0)} MiB |`);
      // Extraction of mkfs.erofs's image by both tools, alternating, median of the runs.
      const o: number[] = [];
      const t: number[] = [];
      let oRss = 0;
      let tRss = 0;
      for (let i = 0; i < extractRuns; i++) {
        for (const side of ['theirs', 'ours'] as const) {
          const out = join(work, `x-${side}`);
          rmSync(out, { recursive: true, force: true });
          const r = side === 'theirs'
            ? run('chroot', [trixie, 'fsck.erofs', `--extract=${inChroot}/x-theirs`, `${inChroot}/theirs.img`])
            : run(process.execPath, [cli, 'erofs', 'extract', '--quiet', theirsImg, out]);
          (side === 'theirs' ? t : o).push(r.seconds);
          if (side === 'theirs') tRss = Math.max(tRss, r.rssMiB);
          else oRss = Math.max(oRss, r.rssMiB);
          rmSync(out, { recursive: true, force: true });
        }
      }
      rows.push(`| ${v.name} extract | ${median(o).toFixed(1)} s | ${median(t).toFixed(1)} s | **${(median(o) / median(t)).toFixed(2)}×** | | | | ${oRss.toFixed(0)} MiB | ${tRss.toFixed(0)} MiB |`);
      rmSync(theirsImg, { force: true });
      rmSync(oursImg, { force: true });
    }
    console.log('| run | livestick | erofs-utils 1.8.6 | time ratio | our image | theirs | size ratio | our peak RSS | theirs |');
    console.log('|---|---|---|---|---|---|---|---|---|');
    for (const r of rows) console.log(r);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

main();
