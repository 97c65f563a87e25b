/** Shared by the FAT tests: random trees (long, Unicode and alias-clashing names), host copies, walks, sparse image files. */
import { mulberry32 } from '../fuzz/mutate.ts';
import { createHash } from 'node:crypto';
import { closeSync, ftruncateSync, mkdirSync, openSync, readdirSync, readFileSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import type { FileSystem } from '../../src/fs/filesystem.ts';
import { readAt } from '../../src/io/disk.ts';

export type Tree = Map<string, { kind: 'dir' } | { kind: 'file'; data: Uint8Array }>;

export function rng(seed: number): () => number {
  return mulberry32(seed);
}

const STEMS = ['README', 'notes', 'Data File', 'longfilename', 'Ünïcödé', 'résumé', '日本語のファイル', 'x', 'Mixed.Case.Name', 'a+b=c;d', 'kernel-6.1.0-amd64', 'ÆØÅ æøå', 'Ελληνικά', 'кириллица', 'file with  spaces'];
const EXTS = ['', '.txt', '.TXT', '.squashfs', '.img', '.c', '.tar.gz', '.HTML'];

/** A random tree: deep and wide directories, empty files, names that share 8.3 aliases. */
export function randomTree(seed: number, options: { files?: number; maxSize?: number } = {}): Tree {
  const r = rng(seed);
  const tree: Tree = new Map();
  const folded = new Set<string>();
  const dirs = [''];
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
  const fresh = (parent: string): string => {
    for (;;) {
      let name = pick(STEMS) + (r() < 0.5 ? String(Math.floor(r() * 20)) : '') + pick(EXTS);
      if (r() < 0.1) name = name.toLowerCase();
      if (r() < 0.05) name = 'n'.repeat(100 + Math.floor(r() * 150));
      const key = `${parent}/${name}`.toUpperCase();
      if (!folded.has(key)) {
        folded.add(key);
        return name;
      }
    }
  };
  const nDirs = 12;
  for (let i = 0; i < nDirs; i++) {
    const parent = r() < 0.6 ? dirs[dirs.length - 1]! : pick(dirs);
    const path = `${parent}/${fresh(parent)}`;
    tree.set(path, { kind: 'dir' });
    dirs.push(path);
  }
  const nFiles = options.files ?? 60;
  const maxSize = options.maxSize ?? 20000;
  for (let i = 0; i < nFiles; i++) {
    const parent = i < 25 ? dirs[1 + (i % 2)]! : pick(dirs); // two wide directories
    const size = r() < 0.15 ? 0 : Math.floor(r() * r() * maxSize);
    const data = new Uint8Array(size);
    for (let k = 0; k < size; k++) data[k] = (k * 131 + i * 7 + (k >> 8)) & 0xff;
    tree.set(`${parent}/${fresh(parent)}`, { kind: 'file', data });
  }
  return tree;
}

export function writeHostTree(root: string, tree: Tree): void {
  mkdirSync(root, { recursive: true });
  for (const [path, node] of [...tree].sort(([a], [b]) => a.length - b.length)) {
    if (node.kind === 'dir') mkdirSync(join(root, path), { recursive: true });
    else writeFileSync(join(root, path), node.data);
  }
}

export const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

/** path → "dir" or the file's sha256, from a host directory. */
export function hostListing(root: string, prefix = ''): Map<string, string> {
  const out = new Map<string, string>();
  for (const name of readdirSync(join(root, prefix))) {
    const rel = `${prefix}/${name}`;
    if (statSync(join(root, rel)).isDirectory()) {
      out.set(rel, 'dir');
      for (const [k, v] of hostListing(root, rel)) out.set(k, v);
    } else out.set(rel, sha(readFileSync(join(root, rel))));
  }
  return out;
}

export function treeListing(tree: Tree): Map<string, string> {
  return new Map([...tree].map(([p, n]) => [p, n.kind === 'dir' ? 'dir' : sha(n.data)]));
}

/** path → "dir" or the file's sha256, read through a FileSystem. */
export async function fsListing(fs: FileSystem, prefix = ''): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const e of await fs.readdir(prefix || '/')) {
    const rel = `${prefix}/${e.name}`;
    if (e.kind === 'dir') {
      out.set(rel, 'dir');
      for (const [k, v] of await fsListing(fs, rel)) out.set(k, v);
    } else {
      const disk = await fs.openFile(rel);
      out.set(rel, sha(await readAt(disk, 0, disk.size)));
    }
  }
  return out;
}

export function sorted(m: Map<string, string>): [string, string][] {
  return [...m].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}

/** Block offsets of `bytes` holding a non-zero byte (64 KiB blocks), for writing an image sparsely. */
export function dataBlocks(bytes: Uint8Array, block = 65536): number[] {
  const out: number[] = [];
  const zero = Buffer.alloc(block);
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let at = 0; at < b.byteLength; at += block) {
    const end = Math.min(b.byteLength, at + block);
    if (b.compare(zero, 0, end - at, at, end) !== 0) out.push(at);
  }
  return out;
}

/** (Re)writes `path` as exactly `bytes`, sparse: truncated to nothing, then only the data blocks written. */
export function writeSparse(path: string, bytes: Uint8Array, blocks = dataBlocks(bytes), block = 65536): void {
  writeFileSync(path, '');
  const fd = openSync(path, 'r+');
  try {
    ftruncateSync(fd, bytes.byteLength);
    for (const at of blocks) writeSync(fd, bytes, at, Math.min(block, bytes.byteLength - at), at);
  } finally {
    closeSync(fd);
  }
}
