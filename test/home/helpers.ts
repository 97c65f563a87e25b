/** Shared by the home tests: a source tree with every kind of node, tree comparison, e2fsck on a home. */
import { createHash } from 'node:crypto';
import { linkSync, lstatSync, mkdirSync, readFileSync, readdirSync, readlinkSync, symlinkSync, utimesSync, writeFileSync, chmodSync } from 'node:fs';
import { join } from 'node:path';
import { dumpHomeFilesystem, type HomeAccess } from '../../src/ops/home.ts';
import { run } from '../helpers/tools.ts';

export const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
export const access = (pass: string): HomeAccess => ({ passphrase: async () => enc(pass) });
export const LOW_KDF = { type: 'pbkdf2', iterations: 1000 } as const;

/** Deterministic pseudo-random bytes. */
export function bytes(seed: string, n: number): Buffer {
  const out = Buffer.alloc(n);
  let block = createHash('sha256').update(seed).digest();
  for (let at = 0; at < n; at += 32) {
    block.copy(out, at, 0, Math.min(32, n - at));
    block = createHash('sha256').update(block).digest();
  }
  return out;
}

/** A tree with files (empty, small, multi-MiB), nested dirs, a symlink, a hard link, odd modes and times. */
export function makeTree(root: string, options: { files?: number; bigBytes?: number } = {}): void {
  mkdirSync(join(root, 'Documents', 'deep', 'er'), { recursive: true });
  mkdirSync(join(root, '.config'), { recursive: true });
  writeFileSync(join(root, 'empty'), '');
  writeFileSync(join(root, 'notes.txt'), 'hello home\n');
  writeFileSync(join(root, 'Documents', 'big.bin'), bytes('big', options.bigBytes ?? 3 * 1024 * 1024 + 123));
  writeFileSync(join(root, '.config', 'settings.ini'), '[a]\nb=c\n');
  for (let i = 0; i < (options.files ?? 20); i++) writeFileSync(join(root, 'Documents', 'deep', `f${i}.dat`), bytes(`f${i}`, 100 + i * 997));
  writeFileSync(join(root, 'Documents', 'deep', 'er', 'script.sh'), '#!/bin/sh\necho hi\n');
  chmodSync(join(root, 'Documents', 'deep', 'er', 'script.sh'), 0o750);
  chmodSync(join(root, '.config'), 0o700);
  symlinkSync('Documents/big.bin', join(root, 'link-to-big'));
  linkSync(join(root, 'notes.txt'), join(root, 'Documents', 'notes-hardlink.txt'));
  const t = new Date('2024-03-01T12:34:56Z');
  utimesSync(join(root, 'notes.txt'), t, t);
  utimesSync(join(root, 'Documents', 'deep'), t, t);
}

export interface Node {
  kind: string;
  mode: number;
  mtime: number;
  sha?: string;
  target?: string;
}

/** path → node (kind, permission bits, mtime in seconds, content hash or link target). */
export function describeTree(root: string, options: { skip?: string[] } = {}): Map<string, Node> {
  const out = new Map<string, Node>();
  const walk = (dir: string, rel: string): void => {
    for (const name of readdirSync(dir).sort()) {
      const p = join(dir, name);
      const r = rel === '' ? name : `${rel}/${name}`;
      if (options.skip?.includes(r)) continue;
      const st = lstatSync(p);
      const node: Node = { kind: st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : st.isFile() ? 'file' : 'other', mode: st.mode & 0o7777, mtime: Math.floor(st.mtimeMs / 1000) };
      if (st.isFile()) node.sha = createHash('sha256').update(readFileSync(p)).digest('hex');
      if (st.isSymbolicLink()) {
        node.target = readlinkSync(p);
        node.mode = 0;
        node.mtime = 0;
      }
      out.set(r, node);
      if (st.isDirectory()) walk(p, r);
    }
  };
  walk(root, '');
  return out;
}

/** e2fsck -fn on the home's filesystem (the decrypted payload dumped to a temp file when encrypted). */
export async function e2fsckHome(image: string, scratch: string, acc: HomeAccess = {}): Promise<{ status: number; out: string }> {
  await dumpHomeFilesystem(image, scratch, acc);
  const r = run('e2fsck', ['-fn', scratch], { allowFail: true });
  run('rm', ['-f', scratch]);
  return { status: r.status, out: r.stdout + r.stderr };
}
