/**
 * A writer tree from any FileSystem: how a merged view (an overlayfs lower stack with its upper, or
 * any other tree livestick can read) becomes a new SquashFS image.
 *
 * Design notes
 * - The walk is lstat-only; names are sorted by the writer, so the order of readdir does not matter.
 * - File data is read lazily, one file at a time, when the writer reaches it, and the stored blocks
 *   of a carried file are looked up then too: a tree of a hundred thousand files holds no open
 *   handles and no per-file image state. A file's content is one small class instance (no closure,
 *   no context object), holding the walk's path string.
 * - `blocksFrom` names, for a file, a SquashFS image and a path in it holding the same bytes (an
 *   overlayfs file that is still its lower's): the writer then copies that file's stored blocks
 *   verbatim, so untouched data is never decompressed or recompressed. The caller vouches that the
 *   image uses the output's compressor and block size, and that the data is identical. It may name
 *   an EROFS image instead (`erofs`): the content then names that image's reader and the file's
 *   inode, and the EROFS writer copies the pclusters its settings fit (writer.ts settingsFit).
 * - Hard links share one node, grouped by `linkKey` (default: the stat's ino, for entries with more
 *   than one link), which carries the stat's nlink for a writer that streams the tree.
 * - lazyTreeFromFileSystem lists a directory only when the writer reaches it, so the SquashFS writer
 *   holds no more of a tree than its queue and the walk's path; treeFromFileSystem is the same tree
 *   held whole, for writers that lay out every inode first (EROFS).
 */
import { createHash } from 'node:crypto';
import { UsageError } from '../../errors.ts';
import { BufferPool } from '../../io/bytes.ts';
import type { FileSystem, FsStat } from '../filesystem.ts';
import { storedBlockRef } from './copy.ts';
import type { SquashfsReader } from './reader.ts';
import type { ErofsReader } from '../erofs/reader.ts';
import { materialize, type DirNode, type FileContent, type LazyDirNode, type NodeMeta, type SourceNode } from './tree.ts';
import type { Xattr } from './xattr.ts';

const PIECE = 1 << 20;

export type BlocksSource =
  | {
      readonly reader: SquashfsReader;
      /** The file's path inside that image. */
      readonly path: string;
    }
  /** The same file in an EROFS image: its content then names the reader and inode (FileContent `erofs`) for an EROFS writer. */
  | { readonly erofs: ErofsReader; readonly path: string };

export interface TreeFromFsOptions {
  blocksFrom?: (path: string, st: FsStat) => Promise<BlocksSource | undefined> | BlocksSource | undefined;
  linkKey?: (path: string, st: FsStat) => string | undefined;
  /** Read xattrs where the filesystem has them (default true). */
  xattrs?: boolean;
  /** Which xattrs the tree keeps (default all); `dropped` hears of each one left out. */
  keepXattr?: (name: string) => boolean;
  onXattrDropped?: (path: string, name: string) => void;
  /** Called once per node visited (progress). */
  onNode?: (path: string) => void;
}

type XattrSource = FileSystem & { xattrs?: (path: string) => Promise<readonly Xattr[]> };

function join(dir: string, name: string): string {
  return dir === '/' ? `/${name}` : `${dir}/${name}`;
}

/** Piece buffers of finished streams, for the next large file (small files get one of their size). */
const spareBuffers = new BufferPool(PIECE, 2);

/**
 * Streams a file of `fs` in pieces, opening it only when the writer asks for its content. A class,
 * not a closure: a tree of many files then holds one small object per file.
 */
class LazyContent {
  readonly kind = 'stream';
  constructor(
    readonly fs: FileSystem,
    readonly path: string,
    readonly size: number,
  ) {}

  // One buffer per file, refilled for each piece: the writer copies a piece out before it asks for
  // the next one (a stream's pieces are only valid until then).
  async *open(): AsyncGenerator<Uint8Array> {
    const { fs, path, size } = this;
    const disk = await fs.openFile(path);
    try {
      if (disk.size !== size) throw new UsageError(`${path} changed size while being read (${size} → ${disk.size} bytes)`);
      const buf = size >= PIECE ? spareBuffers.take() : new Uint8Array(size);
      try {
        for (let at = 0; at < size; at += PIECE) {
          const piece = buf.subarray(0, Math.min(PIECE, size - at));
          await disk.read(piece, at);
          yield piece;
        }
      } finally {
        spareBuffers.give(buf);
      }
    } finally {
      await disk.close();
    }
  }
}

/** A file whose stored blocks come from an image: they are looked up when the writer reaches it. */
class DeferredContent {
  readonly kind = 'deferred';
  constructor(
    readonly fs: FileSystem,
    readonly path: string,
    readonly size: number,
    readonly reader: SquashfsReader,
    readonly sourcePath: string,
  ) {}

  async resolve(): Promise<FileContent> {
    return (await verbatimContent({ reader: this.reader, path: this.sourcePath }, this.size)) ?? new LazyContent(this.fs, this.path, this.size);
  }
}

/** A file whose pclusters may come from an EROFS image: its inode there is looked up when the writer reaches it. */
class ErofsDeferredContent {
  readonly kind = 'deferred';
  constructor(
    readonly fs: FileSystem,
    readonly path: string,
    readonly size: number,
    readonly reader: ErofsReader,
    readonly sourcePath: string,
  ) {}

  async resolve(): Promise<FileContent> {
    return (await erofsContent(this.reader, this.sourcePath, this.size)) ?? new LazyContent(this.fs, this.path, this.size);
  }
}

/** The file at `path` of an EROFS image as content naming its reader and inode (undefined when it is not a file of that size). */
async function erofsContent(reader: ErofsReader, path: string, size: number): Promise<FileContent | undefined> {
  const inode = await reader.lookup(path);
  if (inode.kind !== 'file' || inode.size !== size) return undefined;
  return { kind: 'disk', disk: await reader.openFileDisk(inode), erofs: { reader, inode } };
}

const imageTags = new WeakMap<SquashfsReader, number>();
let nextImageTag = 0;
function imageTag(reader: SquashfsReader): number {
  let t = imageTags.get(reader);
  if (t === undefined) imageTags.set(reader, (t = nextImageTag++));
  return t;
}

async function verbatimContent(source: { readonly reader: SquashfsReader; readonly path: string }, size: number): Promise<FileContent | undefined> {
  const inode = await source.reader.lookup(source.path);
  if (inode.kind !== 'file' || inode.fileSize !== size) return undefined;
  const disk = await source.reader.openFileDisk(inode);
  const offsets = source.reader.blockOffsets(inode);
  const reader = source.reader;
  // Files the old image stored once (its deduplication) have the same blocks (start and size words,
  // sparse ones included) and the same tail in the same fragment.
  const words = inode.blockSizes.length === 0 ? '' : createHash('sha256').update(new Uint8Array(inode.blockSizes.buffer, inode.blockSizes.byteOffset, inode.blockSizes.byteLength)).digest().toString('latin1');
  const sameAs = `${imageTag(reader)}:${inode.blocksStart}:${inode.fragment}:${inode.fragmentOffset}:${words}`;
  return { kind: 'disk', disk, verbatim: (i) => (i < inode.blockSizes.length ? storedBlockRef(reader, inode, offsets, i) : undefined), sameAs };
}

/** The writer tree of `fs` below `root` (a directory), held whole in memory. */
export async function treeFromFileSystem(fs: FileSystem, root = '/', options: TreeFromFsOptions = {}): Promise<DirNode> {
  return materialize(await lazyTreeFromFileSystem(fs, root, options));
}

/**
 * The writer tree of `fs` below `root`, each directory listed (and its entries stat'ed) when a writer
 * reaches it, and listed anew if it comes back. A node with several names (by `linkKey`) is one object
 * for the whole walk, and carries the stat's nlink.
 */
export async function lazyTreeFromFileSystem(fs: FileSystem, root = '/', options: TreeFromFsOptions = {}): Promise<LazyDirNode> {
  const withXattrs = options.xattrs !== false && typeof (fs as XattrSource).xattrs === 'function';
  const links = new Map<string, SourceNode>();
  const linkKey = options.linkKey ?? ((_: string, st: FsStat) => (st.ino !== undefined ? String(st.ino) : undefined));

  const visit = async (path: string, st: FsStat): Promise<SourceNode> => {
    options.onNode?.(path);
    const key = st.kind !== 'dir' && st.nlink > 1 ? linkKey(path, st) : undefined;
    if (key !== undefined) {
      const known = links.get(key);
      if (known !== undefined) return known;
    }
    const meta: NodeMeta = { mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, mtime: st.mtime.sec };
    if (key !== undefined) meta.nlink = st.nlink;
    if (withXattrs) {
      const keep = options.keepXattr;
      const x = (await (fs as XattrSource).xattrs!(path)).filter((a) => {
        if (keep === undefined || keep(a.name)) return true;
        options.onXattrDropped?.(path, a.name);
        return false;
      });
      if (x.length > 0) meta.xattrs = x.map((a) => ({ name: a.name, value: a.value }));
    }
    let node: SourceNode;
    switch (st.kind) {
      case 'dir':
        node = { type: 'lazydir', load: () => listing(path), ...meta };
        break;
      case 'file': {
        const size = st.size;
        const source = await options.blocksFrom?.(path, st);
        const content: FileContent =
          source === undefined ? new LazyContent(fs, path, size)
          : 'erofs' in source ? new ErofsDeferredContent(fs, path, size, source.erofs, source.path)
          : new DeferredContent(fs, path, size, source.reader, source.path);
        node = { type: 'file', size, content, ...meta };
        break;
      }
      case 'symlink':
        node = { type: 'symlink', target: await fs.readlink(path), ...meta };
        break;
      case 'chardev':
      case 'blockdev':
        node = { type: st.kind, major: st.rdev?.major ?? 0, minor: st.rdev?.minor ?? 0, ...meta };
        break;
      default:
        node = { type: st.kind, ...meta };
    }
    if (key !== undefined) links.set(key, node);
    return node;
  };
  const listing = async (path: string): Promise<Map<string, SourceNode>> => {
    const entries = new Map<string, SourceNode>();
    for (const e of await fs.readdir(path)) {
      const child = join(path, e.name);
      entries.set(e.name, await visit(child, await fs.stat(child)));
    }
    return entries;
  };

  const top = await visit(root, await fs.stat(root));
  if (top.type !== 'lazydir') throw new UsageError(`${root} is not a directory`);
  return top;
}
