/**
 * The userspace overlay view against the host kernel's overlayfs. Per seed: a random lower tree on
 * the host, packed as squashfs by livestick; the kernel mounts an overlay over the host lower dir
 * and random changes are made THROUGH that mount (renames of files and dirs, deletes, chmod/chown,
 * truncates, writes, hard links, a dir replaced by a file and back, user.* and security.* xattrs),
 * with redirect_dir, metacopy or index on for some seeds; after unmounting, our view (lower = our
 * squashfs reader over the image, upper = the host upper dir) must equal a fresh kernel mount's view
 * path by path: kind, mode, owner, size, content, symlink target, non-overlay xattrs and hard-link
 * grouping. Then the analysis is checked against what the changes did.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { appendFileSync, chmodSync, chownSync, lchownSync, linkSync, lstatSync, mkdirSync, readFileSync, readdirSync, readlinkSync, renameSync, rmSync, symlinkSync, truncateSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { FileDisk, readAt } from '../../src/io/disk.ts';
import { HostFileSystem } from '../../src/fs/host/index.ts';
import { SquashfsFileSystem } from '../../src/fs/squashfs/filesystem.ts';
import { SquashfsReader, writeSquashfs } from '../../src/fs/squashfs/index.ts';
import type { FileSystem } from '../../src/fs/filesystem.ts';
import { OverlayFileSystem, analyzeUpper } from '../../src/fs/overlay/index.ts';
import { tempDir } from '../helpers/tmp.ts';
import { run } from '../helpers/tools.ts';
import { xorshift } from '../helpers/random.ts';

const xattr = createRequire(import.meta.url)('@napi-rs/xattr') as { listAttributesSync(p: string): string[]; getAttributeSync(p: string, n: string): Buffer | null; setAttributeSync(p: string, n: string, v: Uint8Array): void };

function skipReason(): false | string {
  const reasons: string[] = [];
  if (process.getuid?.() !== 0) reasons.push('not root (mounting overlayfs needs root)');
  let fss = '';
  try {
    fss = readFileSync('/proc/filesystems', 'utf8');
  } catch {}
  if (!/\toverlay$/m.test(fss)) reasons.push('no overlay in /proc/filesystems');
  if (reasons.length === 0) return false;
  if (process.env.CI) throw new Error(`CI must run the overlay oracle: ${reasons.join('; ')}`);
  return reasons.join('; ');
}

function rng(seed: number): () => number {
  return xorshift((seed * 2654435761) >>> 0);
}

const NAMES = ['a', 'b', 'c', 'd', 'e'];

function buildLower(dir: string, r: () => number, depth = 0): void {
  const n = 2 + Math.floor(r() * 4);
  for (let i = 0; i < n; i++) {
    const p = join(dir, NAMES[i]!);
    const k = r();
    if (k < 0.3 && depth < 3) {
      mkdirSync(p);
      buildLower(p, r, depth + 1);
      chmodSync(p, 0o700 + Math.floor(r() * 64));
    } else if (k < 0.85) {
      const size = r() < 0.2 ? 0 : Math.floor(r() * 20000);
      writeFileSync(p, Buffer.alloc(size, `${p}${size}`));
      chmodSync(p, 0o600 + Math.floor(r() * 64));
      if (r() < 0.3) chownSync(p, Math.floor(r() * 3), Math.floor(r() * 3));
    } else {
      symlinkSync(`target-${Math.floor(r() * 100)}`, p);
    }
    if (r() < 0.25 && !lstatSync(p).isSymbolicLink()) xattr.setAttributeSync(p, `user.l${Math.floor(r() * 2)}`, Buffer.from(`lv${i}`));
  }
}

function walkHost(root: string, rel = ''): string[] {
  const out: string[] = [];
  for (const name of readdirSync(join(root, rel)).sort()) {
    const p = `${rel}/${name}`;
    out.push(p);
    if (lstatSync(join(root, p)).isDirectory()) out.push(...walkHost(root, p));
  }
  return out;
}

/** Random changes through the kernel mount; returns what was done (for the analysis checks). */
function change(merged: string, r: () => number, count: number): { unchangedRewrites: string[]; deletedDirs: string[] } {
  const pick = (filter: (p: string) => boolean) => {
    const all = walkHost(merged).filter((p) => filter(p));
    return all.length === 0 ? undefined : all[Math.floor(r() * all.length)]!;
  };
  const isDir = (p: string) => lstatSync(join(merged, p)).isDirectory();
  const isFile = (p: string) => lstatSync(join(merged, p)).isFile();
  const notLink = (p: string) => !lstatSync(join(merged, p)).isSymbolicLink();
  const unchangedRewrites: string[] = [];
  const deletedDirs: string[] = [];
  for (let i = 0; i < count; i++) {
    const k = Math.floor(r() * 14);
    try {
      switch (k) {
        case 0: {
          const p = pick(() => true);
          const q = pick(isDir);
          if (p && q !== undefined && !`${q}/`.startsWith(`${p}/`)) renameSync(join(merged, p), join(merged, q, `r${i}`));
          break;
        }
        case 1: {
          const p = pick((x) => !isDir(x));
          if (p) rmSync(join(merged, p));
          break;
        }
        case 2: {
          const p = pick(isDir);
          if (p) {
            rmSync(join(merged, p), { recursive: true });
            deletedDirs.push(p);
          }
          break;
        }
        case 3: {
          const p = pick(notLink);
          if (p) chmodSync(join(merged, p), 0o700 + Math.floor(r() * 64));
          break;
        }
        case 4: {
          const p = pick(() => true);
          if (p) lchownSync(join(merged, p), Math.floor(r() * 5), Math.floor(r() * 5));
          break;
        }
        case 5: {
          const p = pick(isFile);
          if (p) truncateSync(join(merged, p), Math.floor(r() * 5000));
          break;
        }
        case 6: {
          const p = pick(isFile);
          if (p) appendFileSync(join(merged, p), `more${i}`);
          break;
        }
        case 7: {
          const p = pick(isFile);
          const q = pick(isDir);
          if (p && q !== undefined) linkSync(join(merged, p), join(merged, q, `h${i}`));
          break;
        }
        case 8: {
          const p = pick(isDir);
          if (p) {
            rmSync(join(merged, p), { recursive: true });
            writeFileSync(join(merged, p), `was a dir ${i}`);
            deletedDirs.push(p);
          }
          break;
        }
        case 9: {
          const p = pick(isFile);
          if (p) {
            rmSync(join(merged, p));
            mkdirSync(join(merged, p));
            writeFileSync(join(merged, p, 'inside'), `new ${i}`);
          }
          break;
        }
        case 10: {
          const p = pick(notLink);
          if (p) xattr.setAttributeSync(join(merged, p), r() < 0.7 ? `user.c${i % 3}` : `security.t${i % 2}`, Buffer.from(`cv${i}`));
          break;
        }
        case 11: {
          const p = pick(isFile);
          if (p) {
            const bytes = readFileSync(join(merged, p));
            writeFileSync(join(merged, p), bytes);
            unchangedRewrites.push(p);
          }
          break;
        }
        case 13: {
          const p = pick(isDir);
          if (p) renameSync(join(merged, p), join(merged, `${p}-renamed${i}`));
          break;
        }
        case 12: {
          const q = pick(isDir) ?? '';
          writeFileSync(join(merged, q, `n${i}`), Buffer.alloc(Math.floor(r() * 9000), i));
          break;
        }
      }
    } catch (err) {
      // EXDEV: renaming a lower dir without redirect_dir; such refusals are part of the semantics.
      if ((err as NodeJS.ErrnoException).code !== 'EXDEV') throw err;
    }
  }
  return { unchangedRewrites, deletedDirs };
}

interface Seen {
  kind: string;
  mode: number;
  uid: number;
  gid: number;
  size?: number;
  sha?: string;
  target?: string;
  xattrs: string;
}

function kernelView(root: string): { nodes: Map<string, Seen>; links: string[][] } {
  const nodes = new Map<string, Seen>();
  const byIno = new Map<string, string[]>();
  for (const p of walkHost(root)) {
    const h = join(root, p);
    const st = lstatSync(h);
    const kind = st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : st.isFile() ? 'file' : 'other';
    const xs = xattr
      .listAttributesSync(h)
      .filter((n) => !n.startsWith('system.'))
      .sort()
      .map((n) => `${n}=${xattr.getAttributeSync(h, n)?.toString('hex')}`)
      .join(',');
    nodes.set(p, { kind, mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, ...(kind === 'file' ? { size: st.size, sha: createHash('sha256').update(readFileSync(h)).digest('hex') } : {}), ...(kind === 'symlink' ? { target: readlinkSync(h) } : {}), xattrs: xs });
    if (kind !== 'dir') byIno.set(`${st.dev}:${st.ino}`, [...(byIno.get(`${st.dev}:${st.ino}`) ?? []), p]);
  }
  return { nodes, links: [...byIno.values()].filter((g) => g.length > 1).map((g) => g.sort()).sort() };
}

async function ourView(view: FileSystem): Promise<{ nodes: Map<string, Seen>; links: string[][] }> {
  const nodes = new Map<string, Seen>();
  const byIno = new Map<number, string[]>();
  const walk = async (dir: string): Promise<void> => {
    for (const e of [...(await view.readdir(dir || '/'))].sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const p = `${dir}/${e.name}`;
      const st = await view.stat(p);
      const kind = st.kind === 'dir' || st.kind === 'symlink' || st.kind === 'file' ? st.kind : 'other';
      const xs = [...(await view.xattrs!(p))]
        .sort((a, b) => (a.name < b.name ? -1 : 1))
        .map((x) => `${x.name}=${Buffer.from(x.value).toString('hex')}`)
        .join(',');
      let sha: string | undefined;
      if (kind === 'file') {
        const disk = await view.openFile(p);
        sha = createHash('sha256').update(await readAt(disk, 0, disk.size)).digest('hex');
        await disk.close();
      }
      nodes.set(p, { kind, mode: st.mode, uid: st.uid, gid: st.gid, ...(kind === 'file' ? { size: st.size, sha } : {}), ...(kind === 'symlink' ? { target: await view.readlink(p) } : {}), xattrs: xs });
      if (kind !== 'dir') byIno.set(st.ino!, [...(byIno.get(st.ino!) ?? []), p]);
      if (kind === 'dir') await walk(p);
    }
  };
  await walk('');
  return { nodes, links: [...byIno.values()].filter((g) => g.length > 1).map((g) => g.sort()).sort() };
}

const OPTIONS = ['', 'redirect_dir=on', 'metacopy=on,redirect_dir=on', 'index=on,redirect_dir=on'];
const SEEDS = Array.from({ length: 24 }, (_, i) => i + 1);

describe('overlay view against the kernel', { skip: skipReason() }, () => {
  const tmp = tempDir('livestick-ovl-');
  const mounted: string[] = [];
  const mount = (opts: string, lower: string, upper: string, work: string, at: string) => {
    mkdirSync(at, { recursive: true });
    run('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${lower},upperdir=${upper},workdir=${work}${opts ? `,${opts}` : ''}`, at]);
    mounted.push(at);
  };
  const umount = (at: string) => {
    run('umount', [at]);
    mounted.splice(mounted.indexOf(at), 1);
  };
  before(() => {});
  after(() => {
    for (const at of [...mounted].reverse()) run('umount', ['-l', at], { allowFail: true });
    tmp.cleanup();
  });

  for (const seed of SEEDS) {
    const opts = OPTIONS[seed % OPTIONS.length]!;
    test(`seed ${seed} (${opts || 'defaults'})`, async () => {
      const base = join(tmp.dir, `s${seed}`);
      const lower = join(base, 'lower');
      const upper = join(base, 'upper');
      const work = join(base, 'work');
      for (const d of [lower, upper, work]) mkdirSync(d, { recursive: true });
      const r = rng(seed);
      buildLower(lower, r);
      const image = join(base, 'lower.sqfs');
      await writeSquashfs(lower, image, { threads: 0, compressor: 'gzip' });

      mount(opts, lower, upper, work, join(base, 'm1'));
      const did = change(join(base, 'm1'), r, 40);
      umount(join(base, 'm1'));
      mount(opts, lower, upper, work, join(base, 'm2'));
      const kernel = kernelView(join(base, 'm2'));
      umount(join(base, 'm2'));

      const disk = await FileDisk.open(image, { readOnly: true });
      try {
        const sq = new SquashfsFileSystem(await SquashfsReader.open(disk), disk.size);
        const view = new OverlayFileSystem({ upper: { fs: new HostFileSystem(upper), root: '/' }, lowers: [{ fs: sq, root: '/' }] });
        const ours = await ourView(view);
        assert.deepEqual([...ours.nodes.keys()], [...kernel.nodes.keys()], 'the same paths');
        for (const [p, k] of kernel.nodes) assert.deepEqual(ours.nodes.get(p), k, p);
        assert.deepEqual(ours.links, kernel.links, 'hard-link groups');

        const report = await analyzeUpper(view, { workdir: { fs: new HostFileSystem(work), root: '/' } });
        const byPath = new Map(report.entries.map((e) => [e.path, e]));
        for (const p of did.unchangedRewrites) {
          const e = byPath.get(p);
          // A rewrite of the same bytes (not renamed or changed later) is reclaimable.
          if (e && kernel.nodes.get(p)?.sha !== undefined && e.class !== 'new' && e.class !== 'copied-up-changed' && e.class !== 'metadata-only') assert.equal(e.class, 'copied-up-identical', p);
        }
        for (const e of report.entries) {
          if (e.class === 'whiteout' || e.class === 'opaque-dir') assert.ok(e.hiddenBytes >= 0);
        }
        assert.equal(report.flags.redirect, report.entries.some((e) => e.class === 'redirect-dir'));
        if (opts.includes('index=on')) assert.equal(report.flags.index, true, 'index=on leaves an index dir');
      } finally {
        await disk.close();
      }
    });
  }
});
