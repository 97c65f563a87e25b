/**
 * overlayfs merge benchmark (root; the host kernel's overlayfs): `livestick merge` on a medium in
 * dracut's flat layout against the pipeline a user has today — unsquashfs the base, copy the merged
 * tree out of a kernel overlay mount of base + upper (`cp -a`), mksquashfs it with the base's
 * compressor and -processors 2 — side by side in one run, on a base of --fill-mib of host files
 * (default 1100) with --changes percent of its bytes changed through a real overlay mount: files
 * rewritten with new content, files rewritten unchanged (what dnf and apt do), files and directories
 * deleted, new files.
 *   node --import tsx bench/overlayfs-merge.bench.ts [--fill-mib 1100] [--changes 5,20,50] [--comp gzip] [--sources DIR,…]
 * With --format erofs the base is an EROFS image made by mkfs.erofs 1.8.6 (the trixie chroot,
 * .cache/trixie) with Fedora's options (-zlzma,level=6 -C1048576 -Efragments, --workers=2), and the
 * pipeline is fsck.erofs --extract, cp -a out of the overlay mount, mkfs.erofs with the same options.
 * With --prepare DIR it only builds the media (DIR/m5, DIR/m20, …; each a medium directory) and
 * keeps them, for profiling one merge by hand (a merge changes its medium: copy it first).
 */
import { spawnSync } from 'node:child_process';
import { appendFileSync, cpSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const arg = (name: string, def: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? (process.argv[i + 1] as string) : def;
};
const fillMiB = Number(arg('fill-mib', '1100'));
const changes = arg('changes', '5,20,50').split(',').map(Number);
const comp = arg('comp', 'gzip');
const prepare = arg('prepare', '');
const erofs = arg('format', 'squashfs') === 'erofs';
const root = fileURLToPath(new URL('..', import.meta.url));
const TRIXIE = join(root, '.cache', 'trixie');
// EROFS: erofs-utils 1.8.6 runs in the chroot, so the work directory is inside it.
const work = prepare || mkdtempSync(join(erofs ? join(TRIXIE, 'tmp') : tmpdir(), 'livestick-bench-ovl-'));
const inChroot = (p: string) => `/${relative(TRIXIE, p)}`;
const MKFS_EROFS = ['-zlzma,level=6', '-C1048576', '-Efragments', '--workers=2'];
const baseImage = (src: string, img: string): ReturnType<typeof timed> =>
  erofs
    ? timed('chroot', [TRIXIE, 'mkfs.erofs', ...MKFS_EROFS, '--quiet', inChroot(img), inChroot(src)])
    : timed('mksquashfs', [src, img, '-comp', comp, '-b', '128K', '-processors', '2', '-noappend', '-quiet']);
if (prepare) mkdirSync(prepare, { recursive: true });
// The compiled CLI, as an installed package runs it (bin/ in a checkout would run the sources through tsx).
const cli = join(root, 'dist', 'cli', 'main.js');
const OVERLAY = 'overlay-LIVE-2026-1201';

function sh(cmd: string, args: string[]): void {
  const r = spawnSync(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr}`);
}

function timed(cmd: string, args: string[]): { seconds: number; maxRssKiB: number; stdout: string } {
  const t = process.hrtime.bigint();
  const r = spawnSync('/usr/bin/time', ['-f', '@@RSS %M', cmd, ...args], { encoding: 'utf8', maxBuffer: 1 << 26 });
  const seconds = Number(process.hrtime.bigint() - t) / 1e9;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr}`);
  return { seconds, maxRssKiB: Number(/@@RSS (\d+)/.exec(r.stderr)?.[1] ?? 0), stdout: r.stdout };
}

// Host directories the base is filled from, in order (--sources a,b,…; /usr/share alone makes a tree of
// small files, as a desktop root is).
const SOURCES = arg('sources', '/usr/lib/x86_64-linux-gnu,/usr/share,/usr/lib,/usr/bin').split(',');

/** Copies host files (regular files and directories only) until `budgetMiB` is reached. */
function fill(dir: string, budgetMiB: number): void {
  let left = budgetMiB * 2 ** 20;
  const walk = (src: string, dst: string): void => {
    for (const name of readdirSync(src).sort()) {
      if (left <= 0) return;
      const s = join(src, name);
      let st;
      try {
        st = lstatSync(s);
      } catch {
        continue;
      }
      const d = join(dst, name);
      if (st.isDirectory()) {
        // A source inside another (/usr/lib/x86_64-linux-gnu in /usr/lib) is copied once: a tree of
        // duplicates would measure SquashFS deduplication, not the merge.
        if (SOURCES.includes(s)) continue;
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
  for (const src of SOURCES) {
    mkdirSync(join(dir, src), { recursive: true });
    walk(src, join(dir, src));
  }
  mkdirSync(join(dir, 'proc'));
}

function files(dir: string): { path: string; size: number }[] {
  const out: { path: string; size: number }[] = [];
  const walk = (d: string): void => {
    for (const name of readdirSync(d).sort()) {
      const p = join(d, name);
      const st = lstatSync(p);
      if (st.isDirectory()) walk(p);
      else if (st.isFile()) out.push({ path: relative(dir, p), size: st.size });
    }
  };
  walk(dir);
  return out;
}

/** pct% of the base's bytes changed through a kernel overlay mount: 40% rewritten with new content, 20% rewritten unchanged, 20% deleted, 20% new. */
function change(lower: string, upper: string, workdir: string, pct: number): void {
  const mnt = join(work, 'mnt');
  mkdirSync(mnt, { recursive: true });
  sh('mount', ['-t', 'overlay', 'bench', '-o', `lowerdir=${lower},upperdir=${upper},workdir=${workdir}`, mnt]);
  try {
    const all = files(lower);
    const total = all.reduce((n, f) => n + f.size, 0);
    let seed = 12345;
    const rnd = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
    const shuffled = all.map((f) => ({ f, k: rnd() })).sort((a, b) => a.k - b.k).map((x) => x.f);
    let at = 0;
    const take = (bytes: number): { path: string; size: number }[] => {
      const out: { path: string; size: number }[] = [];
      let n = 0;
      while (n < bytes && at < shuffled.length) {
        const f = shuffled[at++]!;
        out.push(f);
        n += f.size;
      }
      return out;
    };
    const budget = (total * pct) / 100;
    for (const f of take(budget * 0.4)) appendFileSync(join(mnt, f.path), 'changed\n');
    for (const f of take(budget * 0.2)) writeFileSync(join(mnt, f.path), readFileSync(join(mnt, f.path)));
    for (const f of take(budget * 0.2)) rmSync(join(mnt, f.path), { force: true });
    mkdirSync(join(mnt, 'opt/new'), { recursive: true });
    let i = 0;
    for (const f of take(budget * 0.2)) {
      const b = readFileSync(join(lower, f.path));
      for (let j = 0; j < b.length; j += 4096) b[j] = (b[j]! + 1) & 0xff;
      writeFileSync(join(mnt, 'opt/new', `f${i++}`), b);
    }
  } finally {
    sh('umount', [mnt]);
  }
}

async function main() {
  sh('npm', ['run', '--silent', 'build']);
  console.log(`Building the base: ~${fillMiB} MiB of host files, ${erofs ? `EROFS squashfs.img (mkfs.erofs 1.8.6 ${MKFS_EROFS.join(' ')})` : `${comp} squashfs.img (mksquashfs -processors 2)`}…`);
  const lower = join(work, 'lower');
  fill(lower, fillMiB);
  const base = join(work, 'base.img');
  baseImage(lower, base);
  const rows: string[] = [];
  for (const pct of changes) {
    const medium = join(work, `m${pct}`);
    const liveos = join(medium, 'LiveOS');
    mkdirSync(join(liveos, OVERLAY), { recursive: true });
    mkdirSync(join(liveos, 'ovlwork'));
    cpSync(base, join(liveos, 'squashfs.img'));
    change(lower, join(liveos, OVERLAY), join(liveos, 'ovlwork'), pct);
    if (prepare) {
      console.log(`prepared ${medium}`);
      continue;
    }
    const st = JSON.parse(timed(process.execPath, [cli, 'status', medium, '--json']).stdout);

    // The reference pipeline, on copies of the upper (a mount writes into it).
    const pipe = join(work, `p${pct}`);
    mkdirSync(pipe);
    sh('cp', ['-a', join(liveos, OVERLAY), join(pipe, 'upper')]);
    mkdirSync(join(pipe, 'work'));
    mkdirSync(join(pipe, 'mnt'));
    const t0 = process.hrtime.bigint();
    const un = erofs
      ? timed('chroot', [TRIXIE, 'fsck.erofs', `--extract=${inChroot(join(pipe, 'x'))}`, '--xattrs', inChroot(join(liveos, 'squashfs.img'))])
      : timed('unsquashfs', ['-q', '-n', '-processors', '2', '-d', join(pipe, 'x'), join(liveos, 'squashfs.img')]);
    sh('mount', ['-t', 'overlay', 'pipe', '-o', `lowerdir=${join(pipe, 'x')},upperdir=${join(pipe, 'upper')},workdir=${join(pipe, 'work')}`, join(pipe, 'mnt')]);
    let cp;
    try {
      cp = timed('cp', ['-a', `${join(pipe, 'mnt')}/.`, join(pipe, 'new')]);
    } finally {
      sh('umount', [join(pipe, 'mnt')]);
    }
    rmSync(join(pipe, 'x'), { recursive: true, force: true });
    const mk = baseImage(join(pipe, 'new'), join(pipe, 'squashfs.img'));
    const pipeSeconds = Number(process.hrtime.bigint() - t0) / 1e9;
    const pipeSize = statSync(join(pipe, 'squashfs.img')).size;
    const pipeRss = Math.max(un.maxRssKiB, cp.maxRssKiB, mk.maxRssKiB);
    rmSync(pipe, { recursive: true, force: true });

    const m = timed(process.execPath, [cli, 'merge', medium, '--threads', '2', '--json']);
    const res = JSON.parse(m.stdout);
    rows.push(
      `| ${pct}% | ${(st.upper.bytes / 2 ** 20).toFixed(0)} MiB | ${(st.upper.hiddenBaseBytes / 2 ** 20).toFixed(0)} MiB | ${res.files.rebuilt}/${res.files.rebuilt + res.files.carried} | ${m.seconds.toFixed(1)} s | ${pipeSeconds.toFixed(1)} s | **${(m.seconds / pipeSeconds).toFixed(2)}×** | ${(res.newBaseBytes / 2 ** 20).toFixed(0)} MiB | ${(pipeSize / 2 ** 20).toFixed(0)} MiB | **${(res.newBaseBytes / pipeSize).toFixed(3)}×** | ${(m.maxRssKiB / 1024).toFixed(0)} MiB | ${(pipeRss / 1024).toFixed(0)} MiB |`,
    );
    rmSync(medium, { recursive: true, force: true });
  }
  console.log(`\nbase ${(statSync(base).size / 2 ** 20).toFixed(0)} MiB (${erofs ? 'EROFS lzma level 6, 1 MiB pclusters, fragments' : comp}), tree ${fillMiB} MiB\n`);
  console.log(`| changed | upper | base data dropped | files compressed${erofs ? ' (not carried)' : ''} | livestick merge | pipeline | time ratio | new base | pipeline base | size ratio | merge peak RSS | pipeline peak RSS |`);
  console.log('|---|---|---|---|---|---|---|---|---|---|---|---|');
  for (const r of rows) console.log(r);
}

try {
  await main();
} finally {
  if (prepare) rmSync(join(work, 'lower'), { recursive: true, force: true });
  else rmSync(work, { recursive: true, force: true });
}
