/** A seeded, varied source tree for EROFS oracle tests, and our reader's view in the shape of squashfs/fixture.ts's snapshot(). */
import { chownSync, linkSync, mkdirSync, symlinkSync, truncateSync, utimesSync, writeFileSync, openSync, writeSync, closeSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { run } from '../helpers/tools.ts';
import { snapshot } from '../squashfs/fixture.ts';
import type { ErofsReader } from '../../src/fs/erofs/reader.ts';
import { xorshift } from '../helpers/random.ts';

/** The Debian 13 chroot with erofs-utils 1.8.6 (scripts/trixie/build.sh makes it). */
export const TRIXIE = fileURLToPath(new URL('../../.cache/trixie', import.meta.url));

/** Like missingTools(): false when the chroot's mkfs.erofs is there, a skip reason locally, a failure in CI. */
export function missingTrixie(): false | string {
  if (existsSync(join(TRIXIE, 'usr/bin/mkfs.erofs'))) return false;
  const reason = `erofs-utils 1.8.6 is not there (${TRIXIE}; run scripts/trixie/build.sh)`;
  if (process.env.CI) throw new Error(`CI must have every oracle: ${reason}`);
  return reason;
}

export function rng(seed: number): () => number {
  return xorshift(seed);
}

/** Bytes that compress somewhat (words) with `randomShare` of incompressible runs. */
export function content(n: number, seed: number, randomShare = 0.2): Uint8Array {
  const r = rng(seed);
  const out = new Uint8Array(n);
  const words = ['alpha ', 'beta ', 'gamma ', 'delta ', 'epsilon ', 'zeta\n', 'eta ', 'theta '];
  let i = 0;
  while (i < n) {
    if (r() < randomShare) {
      const run = Math.min(n - i, 1 + Math.floor(r() * 9000));
      for (let k = 0; k < run; k++) out[i++] = Math.floor(r() * 256);
    } else {
      const w = words[Math.floor(r() * words.length)] as string;
      for (let k = 0; k < w.length && i < n; k++) out[i++] = w.charCodeAt(k);
    }
  }
  return out;
}

/** Every file type, sizes 0 B .. several MiB, holes, hard links, duplicates and a near-duplicate, long and Unicode names, a 3000-entry directory, deep paths, xattrs. */
export function makeErofsTree(root: string, seed = 1): void {
  const r = rng(seed);
  mkdirSync(root, { recursive: true });
  const w = (p: string, data: Uint8Array | string, mtime?: number) => {
    writeFileSync(join(root, p), data);
    if (mtime !== undefined) utimesSync(join(root, p), mtime, mtime);
  };
  w('empty', '');
  w('one', 'x');
  for (const n of [4095, 4096, 4097, 8191, 12345, 65543, 131072, 200_000]) w(`size-${n}`, content(n, n));
  w('random-64k', content(65536, 3, 1));
  w('text-1m', content(1 << 20, 4, 0));
  w('mixed-3m', content(3 * (1 << 20) + 1234, 5, 0.3));
  w('dup-a', content(300_000, 6, 0.1));
  w('dup-b', content(300_000, 6, 0.1));
  // dup-a with 8 bytes more: mkfs.erofs 1.8 under -Efragments (and our writer with dedupe) share its leading pclusters.
  w('dup-c', Buffer.concat([content(300_000, 6, 0.1), Buffer.from('changed\n')]));
  const fd = openSync(join(root, 'sparse'), 'w');
  writeSync(fd, content(10000, 7), 0, 10000, 2 << 20);
  writeSync(fd, content(5000, 8), 0, 5000, 4096 * 3);
  closeSync(fd);
  truncateSync(join(root, 'sparse'), 5 << 20);
  w('hole-only', '');
  truncateSync(join(root, 'hole-only'), 1 << 20);
  w('L'.repeat(255), 'a 255-byte name');
  w('naïve-名前-ü-😀.txt', 'unicode name');
  w('Ünïcødé-ΔΩ-данные', content(5000, 9));
  mkdirSync(join(root, 'links/inner'), { recursive: true });
  w('links/target', 'hard linked\n');
  linkSync(join(root, 'links/target'), join(root, 'links/inner/second'));
  linkSync(join(root, 'links/target'), join(root, 'third-name'));
  symlinkSync('../one', join(root, 'links/rel'));
  symlinkSync('/abs/' + 'p'.repeat(900), join(root, 'links/long-target'));
  symlinkSync('dangling', join(root, 'links/dangling'));
  let deep = 'deep';
  for (let i = 0; i < 30; i++) deep += `/level-${i}`;
  mkdirSync(join(root, deep), { recursive: true });
  w(`${deep}/leaf`, 'at the bottom\n');
  mkdirSync(join(root, 'big'));
  for (let i = 0; i < 3000; i++) {
    const name = `entry-${i.toString().padStart(5, '0')}-${'n'.repeat(Math.floor(r() * 40))}`;
    w(`big/${name}`, i % 50 === 0 ? content(100 + i, i) : '');
  }
  mkdirSync(join(root, 'emptydir'));
  mkdirSync(join(root, 'opaque'));
  w('opaque/inside', 'in an opaque dir');
  w('owned', 'large ids');
  chownSync(join(root, 'owned'), 100000, 2000000);
  w('setuid', 'x');
  run('chmod', ['4755', join(root, 'setuid')]);
  w('old', 'old time', 1234567);
  utimesSync(join(root, 'old'), new Date(1234567890123), new Date(1234567890123));
  run('mknod', [join(root, 'chardev'), 'c', '1', '3']);
  run('mknod', [join(root, 'blockdev'), 'b', '7', '300']);
  run('mknod', [join(root, 'whiteout'), 'c', '0', '0']);
  run('mkfifo', [join(root, 'fifo')]);
  run('python3', ['-c', `import socket; s = socket.socket(socket.AF_UNIX); s.bind(${JSON.stringify(join(root, 'socket'))})`]);
  const setx = (p: string, name: string, value: string) => run('setfattr', ['-h', '-n', name, '-v', value, join(root, p)]);
  setx('opaque', 'trusted.overlay.opaque', 'y');
  setx('links', 'trusted.overlay.redirect', '/somewhere/else');
  setx('one', 'user.comment', 'a comment');
  setx('one', 'security.test', 'label');
  setx('owned', 'user.big', `0x${'ab'.repeat(1000)}`);
  setx('emptydir', 'trusted.overlay.origin', '0x00fb1200');
  // The same xattr on many nodes: mkfs stores it once, shared.
  for (const p of ['size-4095', 'size-4096', 'size-4097', 'text-1m', 'links/target', 'deep', 'big']) setx(p, 'user.shared', 'the same value everywhere');
  setx('links/rel', 'trusted.symlink-own', 'on the link itself');
}

/** Our reader's view in snapshot() form (test/squashfs/fixture.ts), plus ino and mtime nsec per path. */
export async function erofsSnapshot(reader: ErofsReader): Promise<{ desc: Map<string, string>; ids: Map<string, string> }> {
  const desc = new Map<string, string>();
  const ids = new Map<string, string>();
  const groups = new Map<number, string>();
  const names: Record<string, string> = { dir: 'dir', file: 'file', symlink: 'link', fifo: 'fifo', chardev: 'chr', blockdev: 'blk', socket: 'sock' };
  const entries: Array<{ path: string; inode: Awaited<ReturnType<ErofsReader['inode']>> }> = [];
  for await (const e of reader.walk()) entries.push(e);
  entries.sort((x, y) => (x.path.split('/').join('\0') < y.path.split('/').join('\0') ? -1 : 1));
  for (const { path, inode } of entries) {
    const type = names[inode.kind] as string;
    let d = `${type} mode=${inode.mode.toString(8)} uid=${inode.uid} gid=${inode.gid}`;
    if (type !== 'link' && type !== 'dir') d += ` mtime=${inode.mtime.sec}`;
    if (inode.kind === 'file') {
      d += ` size=${inode.size} sha=${createHash('sha256').update(await reader.readFile(inode)).digest('hex').slice(0, 16)}`;
      if (inode.nlink > 1) {
        const first = groups.get(inode.nid);
        if (first === undefined) groups.set(inode.nid, path);
        d += ` links=${inode.nlink} group=${first ?? path}`;
      }
    }
    if (inode.kind === 'symlink') d += ` -> ${await reader.readlink(inode)}`;
    if (inode.rdev !== undefined) {
      const { major, minor } = inode.rdev;
      d += ` rdev=${(minor & 0xff) | ((major & 0xfff) << 8) | ((minor & ~0xff) << 12)}`;
    }
    const x = (await reader.xattrs(inode)).filter((a) => a.name !== 'security.selinux');
    if (x.length > 0) d += ` xattrs=${x.map((a) => `${a.name}=0x${Buffer.from(a.value).toString('hex')}`).sort().join(',')}`;
    desc.set(path, d);
    ids.set(path, `ino=${inode.nid} nsec=${inode.mtime.nsec} nlink=${inode.nlink}`);
  }
  return { desc, ids };
}

/** What the host kernel shows mounting the EROFS image `img` at `mnt` (made if missing, unmounted after). */
export function mountedSnapshot(img: string, mnt: string): Map<string, string> {
  mkdirSync(mnt, { recursive: true });
  run('mount', ['-t', 'erofs', '-o', 'loop,ro', img, mnt]);
  try {
    return snapshot(mnt);
  } finally {
    run('umount', [mnt]);
  }
}
