/** Builds the varied source tree for squashfs oracle tests, and snapshots trees for comparison. */
import { chownSync, linkSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { run } from '../helpers/tools.ts';
import type { SquashfsReader } from '../../src/fs/squashfs/reader.ts';
import type { Inode } from '../../src/fs/squashfs/inode.ts';

export const BS = 4096 * 2;

/** A tree with every host-creatable file type, block-boundary sizes, sparse, hard links, xattrs, big dirs. */
export function makeVariedTree(root: string, opts: { bigDir?: number; blockSize?: number } = {}): void {
  const bs = opts.blockSize ?? 131072;
  mkdirSync(root, { recursive: true });
  const w = (p: string, data: Uint8Array | string) => writeFileSync(join(root, p), data);
  w('empty', '');
  w('hello.txt', 'hello world\n');
  const rnd = (n: number, seed: number) => {
    const out = new Uint8Array(n);
    let x = seed >>> 0 || 1;
    for (let i = 0; i < n; i++) {
      x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
      out[i] = (i % 7 === 0 ? x : i & 0x3f) & 0xff;
    }
    return out;
  };
  for (const [name, n] of [['bs-1', bs - 1], ['bs', bs], ['bs+1', bs + 1], ['2bs', 2 * bs], ['3bs+17', 3 * bs + 17]] as const) w(name, rnd(n, n));
  const a = rnd(bs + 100, 7);
  const b = Uint8Array.from(a);
  b[b.length - 1] = (b[b.length - 1] as number) ^ 1;
  w('same-a', a);
  w('same-b', b);
  w('same-c', a);
  const sparse = new Uint8Array(3 * bs + 5);
  sparse.set(rnd(10, 3), bs + 7);
  w('sparse', sparse);
  w('zeros', new Uint8Array(2 * bs));
  mkdirSync(join(root, 'sub/deeper'), { recursive: true });
  w('sub/deeper/file', 'deep\n');
  linkSync(join(root, 'hello.txt'), join(root, 'sub/hardlink'));
  linkSync(join(root, 'bs+1'), join(root, 'sub/deeper/hardlink2'));
  symlinkSync('../hello.txt', join(root, 'sub/rel-link'));
  symlinkSync('/nonexistent/absolute', join(root, 'abs-link'));
  w(`${'L'.repeat(255)}`, 'long name');
  w('naïve-名前-ü.txt', 'non-ascii');
  mkdirSync(join(root, 'emptydir'));
  w('owned', 'owned by a large id');
  chownSync(join(root, 'owned'), 100000, 2000000);
  writeFileSync(join(root, 'mode'), 'x', { mode: 0o4755 });
  utimesSync(join(root, 'mode'), 1234567, 1234567);
  run('setfattr', ['-n', 'user.comment', '-v', 'a comment', join(root, 'hello.txt')]);
  run('setfattr', ['-n', 'trusted.overlay.opaque', '-v', 'y', join(root, 'sub')]);
  run('setfattr', ['-n', 'user.big', '-v', `0x${'ab'.repeat(3000)}`, join(root, 'owned')]);
  run('mknod', [join(root, 'chardev'), 'c', '1', '3']);
  run('mknod', [join(root, 'blockdev'), 'b', '7', '300']);
  run('mkfifo', [join(root, 'fifo')]);
  const n = opts.bigDir ?? 0;
  if (n > 0) {
    mkdirSync(join(root, 'big'));
    for (let i = 0; i < n; i++) writeFileSync(join(root, 'big', `entry-${i.toString().padStart(6, '0')}-with-a-longer-name`), i % 10 === 0 ? `content ${i}` : '');
  }
}

/** A comparable description of a tree: type, mode, owner, mtime (not for dirs/links), content hash, link groups, xattrs. */
export function snapshot(root: string, options: { xattrs?: boolean; times?: boolean; specials?: boolean; links?: boolean } = {}): Map<string, string> {
  const out = new Map<string, string>();
  const inodes = new Map<string, string>();
  let xattrs = new Map<string, string>();
  if (options.xattrs !== false) xattrs = readXattrDump(root);
  const walk = (rel: string): void => {
    const p = rel === '' ? root : join(root, rel);
    const st = lstatSync(p);
    const type = st.isDirectory() ? 'dir' : st.isFile() ? 'file' : st.isSymbolicLink() ? 'link' : st.isFIFO() ? 'fifo' : st.isCharacterDevice() ? 'chr' : st.isBlockDevice() ? 'blk' : 'sock';
    if (options.specials === false && !['dir', 'file', 'link'].includes(type)) return;
    let desc = `${type} mode=${(st.mode & 0o7777).toString(8)} uid=${st.uid} gid=${st.gid}`;
    if (options.times !== false && type !== 'link') desc += type === 'dir' ? '' : ` mtime=${Math.floor(st.mtimeMs / 1000)}`;
    if (type === 'file') {
      desc += ` size=${st.size} sha=${createHash('sha256').update(readFileSync(p)).digest('hex').slice(0, 16)}`;
      if (st.nlink > 1 && options.links !== false) {
        const key = `${st.dev}:${st.ino}`;
        const first = inodes.get(key);
        if (first === undefined) inodes.set(key, rel);
        desc += ` links=${st.nlink} group=${first ?? rel}`;
      }
    }
    if (type === 'link') desc += ` -> ${readlinkSync(p)}`;
    if (type === 'chr' || type === 'blk') desc += ` rdev=${st.rdev}`;
    const x = xattrs.get(rel);
    if (x) desc += ` xattrs=${x}`;
    out.set(rel, desc);
    if (type === 'dir') for (const name of readdirSync(p).sort()) walk(rel === '' ? name : `${rel}/${name}`);
  };
  walk('');
  return out;
}

function readXattrDump(root: string): Map<string, string> {
  const r = run('getfattr', ['-R', '-P', '-h', '-d', '-m', '-', '-e', 'hex', '--absolute-names', root], { allowFail: true });
  const map = new Map<string, string>();
  let cur: string | undefined;
  const acc: string[] = [];
  const flush = () => {
    if (cur !== undefined && acc.length > 0) map.set(cur, acc.sort().join(','));
    acc.length = 0;
  };
  for (const line of r.stdout.split('\n')) {
    if (line.startsWith('# file: ')) {
      flush();
      const abs = line.slice(8);
      cur = abs === root ? '' : abs.slice(root.length + 1);
    } else if (line.includes('=') && !line.startsWith('security.selinux')) {
      acc.push(line.trim());
    }
  }
  flush();
  return map;
}

/** An xattr reader for the writer's scan from getfattr (one run), independent of io/xattr.ts. */
export function xattrReaderFor(root: string): (path: string) => Promise<Array<{ name: string; value: Uint8Array }>> {
  const dump = readXattrDump(root);
  return async (path: string) => {
    const rel = path === root ? '' : path.slice(root.length + 1);
    const line = dump.get(rel);
    if (!line) return [];
    return line.split(',').map((kv) => {
      const at = kv.indexOf('=');
      return { name: kv.slice(0, at), value: Buffer.from(kv.slice(at + 3), 'hex') };
    });
  };
}

/** The same description as snapshot(), read through our SquashfsReader. */
export async function readerSnapshot(reader: SquashfsReader, options: { times?: boolean; links?: boolean } = {}): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const groups = new Map<number, string>();
  const names: Record<string, string> = { dir: 'dir', file: 'file', symlink: 'link', fifo: 'fifo', chardev: 'chr', blockdev: 'blk', socket: 'sock' };
  const entries: Array<{ path: string; inode: Inode }> = [];
  for await (const e of reader.walk()) entries.push(e);
  entries.sort((x, y) => (x.path.split('/').join('\0') < y.path.split('/').join('\0') ? -1 : 1));
  for (const { path, inode } of entries) {
    const type = names[inode.kind] as string;
    let desc = `${type} mode=${inode.mode.toString(8)} uid=${reader.uid(inode)} gid=${reader.gid(inode)}`;
    if (options.times !== false && type !== 'link' && type !== 'dir') desc += ` mtime=${inode.mtime}`;
    if (inode.kind === 'file') {
      desc += ` size=${inode.fileSize} sha=${createHash('sha256').update(await reader.readFile(inode)).digest('hex').slice(0, 16)}`;
      if (inode.nlink > 1 && options.links !== false) {
        const first = groups.get(inode.inodeNumber);
        if (first === undefined) groups.set(inode.inodeNumber, path);
        desc += ` links=${inode.nlink} group=${first ?? path}`;
      }
    }
    if (inode.kind === 'symlink') desc += ` -> ${Buffer.from(inode.target).toString('utf8')}`;
    if (inode.kind === 'chardev' || inode.kind === 'blockdev') desc += ` rdev=${inode.rdev}`;
    const x = await reader.xattrs(inode);
    if (x.length > 0) desc += ` xattrs=${x.map((a) => `${a.name}=0x${Buffer.from(a.value).toString('hex')}`).sort().join(',')}`;
    out.set(path, desc);
  }
  return out;
}

export function diffSnapshots(a: Map<string, string>, b: Map<string, string>): string[] {
  const diffs: string[] = [];
  for (const [k, v] of a) if (b.get(k) !== v) diffs.push(`${k}: ${v}  !=  ${b.get(k) ?? '(missing)'}`);
  for (const k of b.keys()) if (!a.has(k)) diffs.push(`${k}: (missing)  !=  ${b.get(k)}`);
  return diffs.slice(0, 20);
}
