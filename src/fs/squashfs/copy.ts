/**
 * Rebuilding an image from an existing one: a writer tree whose nodes mirror the old image (names,
 * modes, owners, times, xattrs, hard links, devices) and whose files hand their stored blocks to the
 * writer verbatim, so unchanged data is never decompressed or recompressed. A caller can override any
 * file's content (the merge replaces LiveOS/rootfs.img) and still reuse the blocks it did not change.
 */
import { readAt } from '../../io/disk.ts';
import { CorruptImageError } from '../../errors.ts';
import type { FileInode, Inode } from './inode.ts';
import { SquashfsReader } from './reader.ts';
import type { DirNode, NodeMeta, StoredBlock, TreeNode } from './tree.ts';

function storedExtent(reader: SquashfsReader, f: FileInode, offsets: Float64Array, i: number): { word: number; len: number; at: number } {
  const word = f.blockSizes[i];
  if (word === undefined) throw new RangeError(`block ${i} is not a full stored block of inode ${f.inodeNumber}`);
  const len = word & 0xffffff;
  const at = offsets[i] as number;
  if (at + len > reader.superblock.bytesUsed) throw new CorruptImageError('squashfs', 'file blocks', `block ${i} of inode ${f.inodeNumber} runs past the image end`, at);
  return { word, len, at };
}

/** The stored bytes and size word of full block `i` of a file (sparse blocks: empty bytes, word 0). */
export async function storedBlock(reader: SquashfsReader, f: FileInode, offsets: Float64Array, i: number): Promise<{ bytes: Uint8Array; word: number }> {
  const { word, len, at } = storedExtent(reader, f, offsets, i);
  return { bytes: len === 0 ? new Uint8Array(0) : await readAt(reader.disk, at, len), word };
}

/** Full block `i` of a file as the writer copies it: read straight into its output when written. */
export function storedBlockRef(reader: SquashfsReader, f: FileInode, offsets: Float64Array, i: number): StoredBlock {
  const { word, len, at } = storedExtent(reader, f, offsets, i);
  return { size: len, word, readInto: (dst) => reader.disk.read(dst, at) };
}

export interface CopyOptions {
  /** Replace the node at this path (relative, "LiveOS/rootfs.img"). */
  override?: (path: string, inode: Inode, meta: NodeMeta) => Promise<TreeNode | undefined> | TreeNode | undefined;
}

/** A writer tree mirroring `reader`'s image. Verbatim reuse is only valid with the same compressor and block size. */
export async function treeFromImage(reader: SquashfsReader, options: CopyOptions = {}): Promise<DirNode> {
  const byInode = new Map<number, TreeNode>();
  const meta = async (inode: Inode): Promise<NodeMeta> => {
    const xattrs = await reader.xattrs(inode);
    return { mode: inode.mode, uid: reader.uid(inode), gid: reader.gid(inode), mtime: inode.mtime, ...(xattrs.length > 0 ? { xattrs } : {}) };
  };
  const build = async (path: string, inode: Inode): Promise<TreeNode> => {
    const m = await meta(inode);
    const replaced = await options.override?.(path, inode, m);
    if (replaced !== undefined) return replaced;
    const shared = inode.kind !== 'dir' ? byInode.get(inode.inodeNumber) : undefined;
    if (shared !== undefined) return shared;
    let node: TreeNode;
    switch (inode.kind) {
      case 'dir': {
        const entries = new Map<string, TreeNode>();
        for (const e of await reader.readdir(inode)) entries.set(e.name, await build(path === '' ? e.name : `${path}/${e.name}`, e.inode));
        node = { type: 'dir', entries, ...m };
        break;
      }
      case 'file': {
        const disk = await reader.openFileDisk(inode);
        const offsets = reader.blockOffsets(inode);
        node = { type: 'file', size: inode.fileSize, content: { kind: 'disk', disk, verbatim: (i) => (i < inode.blockSizes.length ? storedBlockRef(reader, inode, offsets, i) : undefined) }, ...m };
        break;
      }
      case 'symlink':
        node = { type: 'symlink', target: Buffer.from(inode.target).toString('utf8'), ...m };
        break;
      case 'blockdev':
      case 'chardev': {
        const d = inode.rdev;
        node = { type: inode.kind, major: (d & 0xfff00) >>> 8, minor: (d & 0xff) | ((d >>> 12) & 0xfff00), ...m };
        break;
      }
      default:
        node = { type: inode.kind, ...m };
    }
    if (inode.kind !== 'dir') byInode.set(inode.inodeNumber, node);
    return node;
  };
  const root = await build('', await reader.root());
  if (root.type !== 'dir') throw new CorruptImageError('squashfs', 'root inode', 'the root is not a directory');
  return root;
}
