/**
 * The in-memory tree the writer consumes. A node object reachable under several names is a hard
 * link. A regular file's content comes from bytes, a host path, a Disk, or an async iterable of
 * pieces; `verbatim` lets a caller hand over already-compressed blocks for unchanged regions.
 */
import { closeSync, lstatSync, openSync, readdirSync, readlinkSync, readSync } from 'node:fs';
import { join } from 'node:path';
import { fromSystemError } from '../../errors.ts';
import type { Disk } from '../../io/disk.ts';
import { readHostXattrs } from '../../io/xattr.ts';
import type { Xattr } from './xattr.ts';
import type { ErofsReader } from '../erofs/reader.ts';
import type { Inode as ErofsInode } from '../erofs/inode.ts';

export interface NodeMeta {
  /** Permission bits 07777. */
  mode: number;
  uid: number;
  gid: number;
  /** Seconds since the epoch. */
  mtime: number;
  xattrs?: Xattr[];
  /**
   * How many names the node has in the whole tree, where its source knows it. A writer that streams a
   * lazy tree writes an inode before it meets the node's later names, so it takes this number (and
   * writes again, counting first, when the tree proves it wrong); a tree held whole is counted.
   */
  nlink?: number;
}

/**
 * A stored block to copy verbatim, with its block-size word (bit 24 = uncompressed): either its
 * on-disk bytes, or their length and a way to read them into the writer's output buffer when the
 * block's turn comes (so a merge carrying gigabytes allocates nothing for them).
 */
export type StoredBlock =
  | { readonly bytes: Uint8Array; readonly word: number }
  | { readonly size: number; readonly word: number; readInto(dst: Uint8Array): Promise<void> };

export function storedBlockSize(b: StoredBlock): number {
  return 'bytes' in b ? b.bytes.byteLength : b.size;
}

export type FileContent =
  | { readonly kind: 'bytes'; readonly bytes: Uint8Array }
  | { readonly kind: 'path'; readonly path: string }
  | {
      readonly kind: 'disk';
      readonly disk: Disk;
      /**
       * For block i (of the writer's block size), stored bytes from an image with the same compressor
       * and block size, or undefined to read and compress the block normally. The caller vouches that
       * they decompress to the Disk's bytes.
       */
      readonly verbatim?: (blockIndex: number) => Promise<StoredBlock | undefined> | StoredBlock | undefined;
      /**
       * An identity of the content: files of equal size whose `sameAs` is equal hold the same bytes
       * (the caller vouches), so the writer stores them once without reading the later ones.
       */
      readonly sameAs?: string;
      /**
       * The same file in an EROFS image (its reader and inode): an EROFS writer whose settings fit that
       * image's copies its compressed pclusters as they are (the caller vouches that the Disk's bytes
       * are that file's).
       */
      readonly erofs?: { readonly reader: ErofsReader; readonly inode: ErofsInode };
    }
  /** Pieces in order; each is valid until the next is asked for (a source may refill one buffer). */
  | { readonly kind: 'stream'; readonly open: () => AsyncIterable<Uint8Array> }
  /** Content decided when the writer reaches the file (a tree of many files then holds no per-file state). */
  | { readonly kind: 'deferred'; readonly resolve: () => Promise<FileContent> };

export type TreeNode =
  | (NodeMeta & { type: 'dir'; entries: Map<string, TreeNode> })
  | (NodeMeta & { type: 'file'; size: number; content: FileContent })
  | (NodeMeta & { type: 'symlink'; target: string })
  | (NodeMeta & { type: 'blockdev' | 'chardev'; major: number; minor: number })
  | (NodeMeta & { type: 'fifo' | 'socket' });

export type DirNode = Extract<TreeNode, { type: 'dir' }>;
export type FileNode = Extract<TreeNode, { type: 'file' }>;

/**
 * A directory whose entries are listed when a writer reaches it, so that a tree of any size is never
 * held whole: each call lists them anew (a node with several names must be the same object each time).
 */
export type LazyDirNode = NodeMeta & { type: 'lazydir'; load(): Promise<ReadonlyMap<string, SourceNode>> };
/** A node of a tree a writer takes: held in memory, or with directories listed on demand. */
export type SourceNode = Exclude<TreeNode, DirNode> | DirNode | LazyDirNode;
export type SourceDir = DirNode | LazyDirNode;

export function isSourceDir(n: SourceNode): n is SourceDir {
  return n.type === 'dir' || n.type === 'lazydir';
}

export function entriesOf(dir: SourceDir): Promise<ReadonlyMap<string, SourceNode>> | ReadonlyMap<string, SourceNode> {
  return dir.type === 'dir' ? dir.entries : dir.load();
}

/** The whole tree in memory (for writers that lay out every inode before writing data). */
export async function materialize(dir: SourceDir): Promise<DirNode> {
  if (dir.type === 'dir') return dir; // its entries are TreeNodes: in memory all the way down
  const entries = new Map<string, TreeNode>();
  for (const [name, child] of await entriesOf(dir)) entries.set(name, isSourceDir(child) ? await materialize(child) : child);
  const { load: _load, type: _type, ...meta } = dir;
  return { type: 'dir', entries, ...meta };
}

export function dirNode(meta: Partial<NodeMeta> = {}, entries: Record<string, TreeNode> = {}): DirNode {
  return { type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: 0, ...meta, entries: new Map(Object.entries(entries)) };
}

export function fileNode(bytes: Uint8Array | string, meta: Partial<NodeMeta> = {}): FileNode {
  const b = typeof bytes === 'string' ? Buffer.from(bytes, 'utf8') : bytes;
  return { type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: 0, ...meta, size: b.byteLength, content: { kind: 'bytes', bytes: b } };
}

export interface ScanOptions {
  /** How xattrs (user/trusted/security) are read: default the host's own (io/xattr.ts); false: none. */
  readXattrs?: ((path: string) => Promise<Xattr[]> | Xattr[]) | false;
}

/** Builds a tree from a host directory (lstat, no symlink following; synchronous calls, which are
 * much faster than a thread-pool round trip per entry); hard links share a node. */
export async function treeFromDirectory(root: string, options: ScanOptions = {}): Promise<DirNode> {
  return materialize(await lazyTreeFromDirectory(root, options));
}

/**
 * The same tree, each directory listed (and its entries lstat'ed) when a writer reaches it. A node with
 * several names is one object for the whole walk and declares the host's nlink, which counts names
 * outside `root` too: a writer should count names first (writeSquashfs does, for a path).
 */
export async function lazyTreeFromDirectory(root: string, options: ScanOptions = {}): Promise<LazyDirNode> {
  const byIno = new Map<string, SourceNode>();
  const readXattrs = options.readXattrs ?? readHostXattrs;
  const scan = async (path: string): Promise<SourceNode> => {
    let st;
    try {
      st = lstatSync(path, { bigint: true });
    } catch (err) {
      throw fromSystemError(err, path, 'stat');
    }
    const inoKey = `${st.dev}:${st.ino}`;
    const linked = !st.isDirectory() && st.nlink > 1n;
    if (linked) {
      const known = byIno.get(inoKey);
      if (known !== undefined) return known;
    }
    const meta: NodeMeta = { mode: Number(st.mode & 0o7777n), uid: Number(st.uid), gid: Number(st.gid), mtime: Number(st.mtimeMs / 1000n) };
    if (linked) meta.nlink = Number(st.nlink);
    if (readXattrs !== false) {
      const x = await readXattrs(path);
      if (x.length > 0) meta.xattrs = x;
    }
    let node: SourceNode;
    if (st.isDirectory()) {
      node = { type: 'lazydir', load: () => listing(path), ...meta };
    } else if (st.isFile()) {
      node = { type: 'file', size: Number(st.size), content: { kind: 'path', path }, ...meta };
    } else if (st.isSymbolicLink()) {
      node = { type: 'symlink', target: readlinkSync(path), ...meta };
    } else if (st.isBlockDevice() || st.isCharacterDevice()) {
      const rdev = Number(st.rdev);
      node = { type: st.isBlockDevice() ? 'blockdev' : 'chardev', major: (rdev >>> 8) & 0xfff, minor: (rdev & 0xff) | ((rdev >>> 12) & 0xfff00), ...meta };
    } else if (st.isFIFO()) {
      node = { type: 'fifo', ...meta };
    } else {
      node = { type: 'socket', ...meta };
    }
    if (linked) byIno.set(inoKey, node);
    return node;
  };
  const listing = async (path: string): Promise<Map<string, SourceNode>> => {
    let names: string[];
    try {
      names = readdirSync(path);
    } catch (err) {
      throw fromSystemError(err, path, 'list the directory');
    }
    const entries = new Map<string, SourceNode>();
    for (const name of names.sort()) entries.set(name, await scan(join(path, name)));
    return entries;
  };
  const top = await scan(root);
  if (top.type !== 'lazydir') throw fromSystemError(Object.assign(new Error('not a directory'), { code: 'ENOTDIR' }), root, 'read the source directory');
  return top;
}

/** Opens a file content as a sequence of pieces (any sizes); the writer re-blocks them. */
export async function* contentPieces(content: FileContent, size: number, pieceSize: number): AsyncGenerator<Uint8Array> {
  if (size === 0 && content.kind !== 'stream') return;
  if (content.kind === 'deferred') {
    yield* contentPieces(await content.resolve(), size, pieceSize);
    return;
  }
  switch (content.kind) {
    case 'bytes':
      for (let at = 0; at < content.bytes.byteLength; at += pieceSize) yield content.bytes.subarray(at, at + pieceSize);
      return;
    case 'path': {
      // Synchronous reads: the main thread only feeds the compression workers, and a thread-pool
      // round trip per small file costs more than the read itself.
      let fd: number;
      try {
        fd = openSync(content.path, 'r');
      } catch (err) {
        throw fromSystemError(err, content.path, 'open');
      }
      try {
        let at = 0;
        while (at < size) {
          const buf = new Uint8Array(Math.min(pieceSize, size - at));
          let got = 0;
          while (got < buf.byteLength) {
            let n: number;
            try {
              n = readSync(fd, buf, got, buf.byteLength - got, at + got);
            } catch (err) {
              throw fromSystemError(err, content.path, 'read');
            }
            if (n === 0) throw fromSystemError(new Error('the file shrank while being read'), content.path, 'read');
            got += n;
          }
          at += got;
          yield buf;
        }
      } finally {
        closeSync(fd);
      }
      return;
    }
    case 'disk':
      for (let at = 0; at < size; at += pieceSize) {
        const buf = new Uint8Array(Math.min(pieceSize, size - at));
        await content.disk.read(buf, at);
        yield buf;
      }
      return;
    case 'stream':
      yield* content.open();
  }
}
