/**
 * Merge benchmark: `livestick merge` against the pipeline a user has today — unsquashfs the base,
 * apply the overlay (`livestick overlay export` stands in for dmsetup), mksquashfs the result with the
 * same compressor and -processors 2 — side by side in one run, on a realistic medium: an ext4 root of
 * --rootfs-mib (default 1536) built by mke2fs -d from host files, in a gzip squashfs.img, with an
 * overlay holding new files, rewritten files and deleted data, at several amounts of change.
 *   node --import tsx bench/merge.bench.ts [--rootfs-mib 1536] [--fill-mib 700] [--changes 5,20,50] [--churn 1]
 * --churn N rewrites the new files N times (repeated upgrades): the earlier copies stay in the overlay, free.
 */
import { spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const arg = (name: string, def: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? (process.argv[i + 1] as string) : def;
};
const rootfsMiB = Number(arg('rootfs-mib', '1536'));
const fillMiB = Number(arg('fill-mib', '700'));
const changes = arg('changes', '5,20,50').split(',').map(Number);
const churn = Number(arg('churn', '1'));
const root = fileURLToPath(new URL('..', import.meta.url));
const work = mkdtempSync(join(tmpdir(), 'livestick-bench-merge-'));
const tsx = import.meta.resolve('tsx');
// The commands are timed as users run them: the compiled CLI (built first), not through tsx.
const cli = join(root, 'bin', 'livestick.js');

function sh(cmd: string, args: string[]): void {
  const r = spawnSync(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr}`);
}

/** Wall seconds and peak RSS (KiB) of a command, via GNU time. */
function timed(cmd: string, args: string[], env: Record<string, string> = {}): { seconds: number; maxRssKiB: number; stdout: string } {
  const t = process.hrtime.bigint();
  const r = spawnSync('/usr/bin/time', ['-f', '@@RSS %M', cmd, ...args], { encoding: 'utf8', env: { ...process.env, ...env }, maxBuffer: 1 << 26 });
  const seconds = Number(process.hrtime.bigint() - t) / 1e9;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr}`);
  const rss = Number(/@@RSS (\d+)/.exec(r.stderr)?.[1] ?? 0);
  return { seconds, maxRssKiB: rss, stdout: r.stdout };
}

function tree(dir: string, budgetMiB: number): void {
  let left = budgetMiB * 2 ** 20;
  const walk = (src: string, dst: string): void => {
    for (const name of readdirSync(src).sort()) {
      if (left <= 0) return;
      const s = join(src, name);
      let st;
      try {
        st = statSync(s, { throwIfNoEntry: false });
      } catch {
        continue;
      }
      if (!st) continue;
      const d = join(dst, name);
      if (st.isDirectory()) {
        mkdirSync(d, { recursive: true });
        walk(s, d);
      } else if (st.isFile()) {
        try {
          cpSync(s, d);
          left -= st.size;
        } catch {}
      }
    }
  };
  for (const src of ['/usr/lib/x86_64-linux-gnu', '/usr/share', '/usr/lib/gcc']) {
    mkdirSync(join(dir, src), { recursive: true });
    walk(src, join(dir, src));
  }
}

async function main() {
  sh('npm', ['run', '--silent', 'build']);
  console.log(`Building the medium: ${rootfsMiB} MiB ext4 root filled with ~${fillMiB} MiB of host files, gzip squashfs.img (mksquashfs -processors 2)…`);
  const src = join(work, 'tree');
  tree(src, fillMiB);
  const sqsrc = join(work, 'sqsrc', 'LiveOS');
  mkdirSync(sqsrc, { recursive: true });
  sh('mke2fs', ['-q', '-t', 'ext4', '-b', '4096', '-d', src, join(sqsrc, 'rootfs.img'), `${rootfsMiB}M`]);
  rmSync(src, { recursive: true, force: true });
  const pristine = join(work, 'pristine');
  mkdirSync(join(pristine, 'LiveOS'), { recursive: true });
  sh('mksquashfs', [join(work, 'sqsrc'), join(pristine, 'LiveOS', 'squashfs.img'), '-comp', 'gzip', '-b', '128K', '-processors', '2', '-noappend', '-quiet']);
  rmSync(join(work, 'sqsrc'), { recursive: true, force: true });
  const rows: string[] = [];
  for (const pct of changes) {
    const medium = join(work, `m${pct}`);
    cpSync(pristine, medium, { recursive: true });
    // Changes through the overlay: pct% of the filled size written as new files (a third of it deleted again), plus old files deleted.
    const r = spawnSync(process.execPath, ['--import', tsx, join(root, 'bench', 'merge-changes.ts'), medium, String(Math.round((fillMiB * pct) / 100)), String(churn)], { stdio: 'inherit' });
    if (r.status !== 0) throw new Error('making the changes failed');
    const overlay = readdirSync(join(medium, 'LiveOS')).find((f) => f.startsWith('overlay-')) as string;
    const overlayPath = join(medium, 'LiveOS', overlay);
    const info = JSON.parse(timed(process.execPath, [cli, 'overlay', 'info', overlayPath, '--json']).stdout);

    // The reference pipeline.
    const pipe = join(work, `p${pct}`);
    mkdirSync(pipe, { recursive: true });
    const t0 = process.hrtime.bigint();
    const un = timed('unsquashfs', ['-q', '-n', '-processors', '2', '-d', join(pipe, 'x'), join(medium, 'LiveOS', 'squashfs.img')]);
    mkdirSync(join(pipe, 'new', 'LiveOS'), { recursive: true });
    const ex = timed(process.execPath, [cli, 'overlay', 'export', join(pipe, 'x', 'LiveOS', 'rootfs.img'), overlayPath, join(pipe, 'new', 'LiveOS', 'rootfs.img')]);
    rmSync(join(pipe, 'x'), { recursive: true, force: true });
    const mk = timed('mksquashfs', [join(pipe, 'new'), join(pipe, 'squashfs.img'), '-comp', 'gzip', '-b', '128K', '-processors', '2', '-noappend', '-quiet']);
    const pipeSeconds = Number(process.hrtime.bigint() - t0) / 1e9;
    const pipeSize = statSync(join(pipe, 'squashfs.img')).size;
    const pipeRss = Math.max(un.maxRssKiB, ex.maxRssKiB, mk.maxRssKiB);
    rmSync(pipe, { recursive: true, force: true });

    const dry = JSON.parse(timed(process.execPath, [cli, 'merge', medium, '--dry-run', '--json']).stdout);
    const m = timed(process.execPath, [cli, 'merge', medium, '--json']);
    const res = JSON.parse(m.stdout);
    const estimate = `${(dry.newBaseBytes / 2 ** 20).toFixed(0)} MiB (${(dry.newBaseBytes / res.newBaseBytes).toFixed(3)}x)`;
    rows.push(
      `| ${pct}% | ${(info.usedBytes / 2 ** 20).toFixed(0)} MiB | ${(res.freeBytesDropped / 2 ** 20).toFixed(0)} MiB | ${res.blocks.rebuilt}/${res.blocks.total} | ${m.seconds.toFixed(1)} s | ${pipeSeconds.toFixed(1)} s | **${(m.seconds / pipeSeconds).toFixed(2)}x** | ${(res.newBaseBytes / 2 ** 20).toFixed(0)} MiB | ${estimate} | ${(pipeSize / 2 ** 20).toFixed(0)} MiB | **${(res.newBaseBytes / pipeSize).toFixed(3)}x** | ${(m.maxRssKiB / 1024).toFixed(0)} MiB | ${(pipeRss / 1024).toFixed(0)} MiB |`,
    );
    rmSync(medium, { recursive: true, force: true });
  }
  console.log(`\nchurn ${churn}\n\n| changed | overlay used | free dropped | blocks rebuilt | livestick merge | pipeline | time ratio | new base | dry-run estimate | pipeline base | size ratio | merge peak RSS | pipeline peak RSS |`);
  console.log('|---|---|---|---|---|---|---|---|---|---|---|---|---|');
  for (const r of rows) console.log(r);
}

try {
  await main();
} finally {
  rmSync(work, { recursive: true, force: true });
}
