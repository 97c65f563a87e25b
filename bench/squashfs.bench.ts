/**
 * SquashFS benchmark: livestick against mksquashfs/unsquashfs, side by side in one run, same corpus,
 * compressor, block size and 2 threads.
 *   node --import tsx bench/squashfs.bench.ts [--corpus /usr/lib/llvm-14] [--comp gzip,zstd,lz4,xz] [--block-size 128K] [--create-runs 1] [--extract-runs 5]
 * Both tools run as child processes. Ours runs the CLI compiled by tsc (as shipped) into
 * node_modules/.cache/livestick-bench; if that build fails it falls back to tsx. Prints a Markdown
 * table: wall times, wall ratio (ours / theirs, lower is better), size ratio (bytes_used), peak RSS.
 * Extraction takes 1-4 s, where a shared machine's noise is of the order of the differences: it runs
 * --extract-runs times, alternating the two tools, and the table shows medians and the range of the
 * per-pair ratios. --create-runs does the same for creation (median; ranges printed below the table).
 * Every timed run starts after `sync`, so none pays for the previous run's writeback.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, openSync, readSync, closeSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { nativeStatus } from '../src/fs/squashfs/comp/native.ts';

const arg = (name: string, def: string): string => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? (process.argv[i + 1] as string) : def;
};
const corpus = arg('corpus', '/usr/lib/llvm-14');
const comps = arg('comp', 'gzip,zstd,lz4,xz').split(',');
const blockSize = arg('block-size', '128K');
const extractRuns = Number(arg('extract-runs', '5'));
const createRuns = Number(arg('create-runs', '1'));
const notes: string[] = [];
const root = fileURLToPath(new URL('..', import.meta.url));
const buildDir = join(root, 'node_modules/.cache/livestick-bench');
const build = spawnSync(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', join(root, 'tsconfig.build.json'), '--outDir', buildDir, '--sourceMap', 'false', '--declaration', 'false'], { encoding: 'utf8' });
const compiled = existsSync(join(buildDir, 'cli/main.js'));
const cli = compiled ? join(buildDir, 'cli/main.js') : join(root, 'src/cli/main.ts');
const nodeArgs = compiled ? [cli] : ['--import', 'tsx', cli];
if (!compiled) console.error(`tsc build failed, running from sources through tsx: ${build.stdout.slice(0, 500)}`);
const dir = mkdtempSync(join(tmpdir(), 'livestick-sqfs-bench-'));
const haveTime = existsSync('/usr/bin/time');

function timed(cmd: string, args: string[]): { seconds: number; rssMiB: number | undefined; cpu: number | undefined } {
  // Start each run with no dirty pages: otherwise a run pays for writing back the previous run's output.
  spawnSync('sync');
  const argv = haveTime ? ['/usr/bin/time', '-f', '%M %U %S', cmd, ...args] : [cmd, ...args];
  const t = process.hrtime.bigint();
  const r = spawnSync(argv[0] as string, argv.slice(1), { encoding: 'utf8', maxBuffer: 1 << 26 });
  const seconds = Number(process.hrtime.bigint() - t) / 1e9;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${r.stderr}`);
  const m = /^(\d+) ([\d.]+) ([\d.]+)$/.exec(r.stderr.trim().split('\n').pop() ?? '');
  return { seconds, rssMiB: m ? Number(m[1]) / 1024 : undefined, cpu: m ? Number(m[2]) + Number(m[3]) : undefined };
}

/** The run with the median wall time, its CPU and memory with it (odd counts; the upper middle otherwise). */
function median<T extends { seconds: number }>(runs: T[]): T {
  return [...runs].sort((a, b) => a.seconds - b.seconds)[Math.floor(runs.length / 2)] as T;
}

function bytesUsed(img: string): number {
  const fd = openSync(img, 'r');
  const b = Buffer.alloc(96);
  readSync(fd, b, 0, 96, 0);
  closeSync(fd);
  return Number(b.readBigUInt64LE(40));
}

const du = spawnSync('du', ['-sb', corpus], { encoding: 'utf8' }).stdout.split('\t')[0];
console.log(`Ours: ${compiled ? 'compiled JS' : 'tsx'}. Corpus: ${corpus} (${(Number(du) / 2 ** 20).toFixed(0)} MiB), block size ${blockSize}, 2 threads each\n`);
const native = nativeStatus();
console.log(`zstd: ${native.active ? 'native addon' : `wasm (${native.why})`}\n`);
console.log(`Load average at start: ${loadavg().map((l) => l.toFixed(1)).join(' ')} (the machine is shared: compare ratios, and CPU seconds)\n`);
console.log('| compressor | mksquashfs create wall (cpu) | livestick create wall (cpu) | wall ratio | cpu ratio | size ratio | unsquashfs extract wall (cpu), median | livestick extract wall (cpu), median | wall ratio (pairs) | peak RSS ours (create/extract) |');
console.log('|---|---|---|---|---|---|---|---|---|---|');
try {
  for (const comp of comps) {
    const m = join(dir, `m-${comp}.sqfs`);
    const o = join(dir, `o-${comp}.sqfs`);
    const creates: Array<[ReturnType<typeof timed>, ReturnType<typeof timed>]> = [];
    for (let run = 0; run < createRuns; run++) {
      creates.push([
        timed('mksquashfs', [corpus, m, '-comp', comp, '-b', blockSize, '-processors', '2', '-noappend', '-no-progress', '-quiet']),
        timed(process.execPath, [...nodeArgs, 'squashfs', 'create', corpus, o, '--compressor', comp, '--block-size', blockSize, '--threads', '2']),
      ]);
    }
    const theirs = median(creates.map((p) => p[0]));
    const ours = median(creates.map((p) => p[1]));
    if (createRuns > 1) {
      const r = creates.map(([t, u]) => `${(u.seconds / t.seconds).toFixed(2)}x${u.cpu !== undefined && t.cpu !== undefined ? ` (cpu ${(u.cpu / t.cpu).toFixed(2)}x)` : ''}`);
      notes.push(`${comp} create, per pair: ${r.join(', ')}`);
    }
    const xm = join(dir, 'x-m');
    const xo = join(dir, 'x-o');
    const pairs: Array<[ReturnType<typeof timed>, ReturnType<typeof timed>]> = [];
    for (let run = 0; run < extractRuns; run++) {
      const u = timed('unsquashfs', ['-q', '-n', '-processors', '2', '-d', xm, m]);
      const l = timed(process.execPath, [...nodeArgs, 'squashfs', 'extract', m, xo]);
      pairs.push([u, l]);
      rmSync(xm, { recursive: true, force: true });
      rmSync(xo, { recursive: true, force: true });
    }
    const ux = median(pairs.map((p) => p[0]));
    const ox = median(pairs.map((p) => p[1]));
    const pairRatios = pairs.map(([u, l]) => l.seconds / u.seconds).sort((a, b) => a - b);
    const range = pairs.length > 1 ? ` (${(pairRatios[0] as number).toFixed(2)}–${(pairRatios[pairRatios.length - 1] as number).toFixed(2)})` : '';
    const sizeRatio = bytesUsed(o) / bytesUsed(m);
    const c = (t: { cpu: number | undefined }) => (t.cpu === undefined ? '' : ` (${t.cpu.toFixed(1)})`);
    const cpuRatio = ours.cpu !== undefined && theirs.cpu !== undefined ? `${(ours.cpu / theirs.cpu).toFixed(2)}x` : '?';
    console.log(`| ${comp} | ${theirs.seconds.toFixed(1)} s${c(theirs)} | ${ours.seconds.toFixed(1)} s${c(ours)} | ${(ours.seconds / theirs.seconds).toFixed(2)}x | ${cpuRatio} | ${sizeRatio.toFixed(4)}x | ${ux.seconds.toFixed(1)} s${c(ux)} | ${ox.seconds.toFixed(1)} s${c(ox)} | ${(ox.seconds / ux.seconds).toFixed(2)}x${range} | ${ours.rssMiB?.toFixed(0) ?? '?'} / ${ox.rssMiB?.toFixed(0) ?? '?'} MiB |`);
    rmSync(m, { force: true });
    rmSync(o, { force: true });
  }
  for (const n of notes) console.log(`\n${n}`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
