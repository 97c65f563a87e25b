/**
 * Test fixtures for the ext4 layer, generated at test time: a varied source tree and mke2fs images
 * of it in several feature combinations (ext2, ext3, ext4 with/without metadata_csum, 64bit, flex_bg,
 * inline_data, meta_bg, 1 KiB and 4 KiB blocks).
 */
import { mkdirSync, writeFileSync, symlinkSync, linkSync, chmodSync, chownSync, utimesSync, openSync, closeSync, ftruncateSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { run } from '../helpers/tools.ts';

export function prng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s;
  };
}

export function randomBytes(n: number, seed: number): Uint8Array {
  const next = prng(seed);
  const out = new Uint8Array(n);
  const words = new Uint32Array(out.buffer, 0, n >>> 2);
  for (let i = 0; i < words.length; i++) words[i] = next();
  for (let i = words.length * 4; i < n; i++) out[i] = next() & 0xff;
  return out;
}

export const isRoot = process.getuid?.() === 0;

/** Builds the source tree; returns the list of xattrs to add with debugfs (mke2fs -d copies host xattrs, but the host tools to set them are absent). */
export function makeTree(root: string, options: { manyFiles?: number } = {}): { xattrs: [string, string, string][] } {
  mkdirSync(root, { recursive: true });
  writeFileSync(join(root, 'empty'), '');
  writeFileSync(join(root, 'small.txt'), 'hello, ext4\n');
  writeFileSync(join(root, 'sixty'), 'x'.repeat(60));
  writeFileSync(join(root, 'block-1'), randomBytes(4095, 1));
  writeFileSync(join(root, 'block'), randomBytes(4096, 2));
  writeFileSync(join(root, 'medium.bin'), randomBytes(300_000, 3));
  writeFileSync(join(root, 'large.bin'), randomBytes(5_000_000, 4));
  const fd = openSync(join(root, 'sparse.bin'), 'w');
  writeSync(fd, randomBytes(5000, 5), 0, 5000, 0);
  writeSync(fd, randomBytes(7000, 6), 0, 7000, 3_000_000);
  ftruncateSync(fd, 9_000_000);
  closeSync(fd);
  mkdirSync(join(root, 'dir/sub/deeper'), { recursive: true });
  writeFileSync(join(root, 'dir/sub/deeper/leaf'), 'leaf\n');
  writeFileSync(join(root, 'dir/ünïcødé ñame'), 'utf8\n');
  writeFileSync(join(root, 'dir/' + 'n'.repeat(255)), 'long name\n');
  symlinkSync('small.txt', join(root, 'fast-link'));
  symlinkSync('dir/sub/deeper/leaf', join(root, 'dir-link'));
  symlinkSync('/' + 'long/'.repeat(30) + 'target', join(root, 'slow-link'));
  symlinkSync('dir/sub', join(root, 'subdir-link'));
  linkSync(join(root, 'small.txt'), join(root, 'dir/hardlink'));
  writeFileSync(join(root, 'modes'), 'modes\n');
  chmodSync(join(root, 'modes'), 0o4751);
  if (isRoot) {
    chownSync(join(root, 'modes'), 1234, 5678);
    spawnSync('mknod', [join(root, 'chardev'), 'c', '4', '64']);
    spawnSync('mknod', [join(root, 'blockdev'), 'b', '259', '300000']);
    spawnSync('mknod', [join(root, 'whiteout'), 'c', '0', '0']);
  }
  spawnSync('mkfifo', [join(root, 'fifo')]);
  const many = options.manyFiles ?? 400;
  mkdirSync(join(root, 'big-dir'));
  for (let i = 0; i < many; i++) writeFileSync(join(root, 'big-dir', `file-with-a-longish-name-${i.toString().padStart(5, '0')}`), `${i}\n`);
  utimesSync(join(root, 'small.txt'), 1_000_000_000, 1_234_567_890);
  return {
    xattrs: [
      ['/small.txt', 'user.comment', 'a-short-value'],
      ['/dir', 'trusted.overlay.opaque', 'y'],
      ['/medium.bin', 'user.big', 'v'.repeat(600)],
    ],
  };
}

export interface Variant {
  name: string;
  args: string[];
  blockSize: number;
}

export const VARIANTS: Variant[] = [
  { name: 'ext2-1k', args: ['-t', 'ext2', '-b', '1024', '-I', '128'], blockSize: 1024 },
  { name: 'ext3-2k', args: ['-t', 'ext3', '-b', '2048'], blockSize: 2048 },
  { name: 'ext4-default', args: ['-t', 'ext4', '-b', '4096', '-I', '256'], blockSize: 4096 },
  { name: 'ext4-nocsum-32bit', args: ['-t', 'ext4', '-b', '4096', '-I', '256', '-O', '^metadata_csum,^64bit,uninit_bg'], blockSize: 4096 },
  { name: 'ext4-noflex-1k', args: ['-t', 'ext4', '-b', '1024', '-O', '^flex_bg'], blockSize: 1024 },
  { name: 'ext4-inline-metabg', args: ['-t', 'ext4', '-b', '4096', '-I', '256', '-O', 'inline_data,meta_bg,^resize_inode', '-g', '8192'], blockSize: 4096 },
  { name: 'ext4-orphan-sparse2-casefold', args: ['-t', 'ext4', '-b', '4096', '-I', '512', '-g', '4096', '-O', 'orphan_file,sparse_super2,^resize_inode,casefold,large_dir'], blockSize: 4096 },
  { name: 'ext4-noextents', args: ['-t', 'ext4', '-b', '4096', '-I', '256', '-O', '^extent,^64bit,^metadata_csum,^huge_file'], blockSize: 4096 },
];

export function makeImage(image: string, srcDir: string, variant: Variant, sizeMiB = 64): void {
  run('mke2fs', ['-q', '-F', '-L', 'lsk-test', '-U', '6c1b4d43-8f6b-4d0e-9a48-0d5f6e0b7a11', '-E', 'hash_seed=2d4c5e3a-1111-2222-3333-444455556666,lazy_itable_init=1', ...variant.args, '-d', srcDir, image, `${sizeMiB}M`]);
}

export function debugfs(image: string, request: string, write = false): string {
  const r = run('debugfs', [...(write ? ['-w'] : []), '-R', request, image]);
  return r.stdout;
}

export function addXattrs(image: string, xattrs: [string, string, string][]): void {
  for (const [path, name, value] of xattrs) run('debugfs', ['-w', '-R', `ea_set ${path} ${name} ${value}`, image]);
}
