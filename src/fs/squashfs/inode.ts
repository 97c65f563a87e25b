/** Inodes (§2.3): the 16-byte common header and one body per type, basic and extended forms. */
import { CorruptImageError } from '../../errors.ts';
import { toSafeNumber, view } from '../../io/bytes.ts';
import type { MetadataReader, MetaPos } from './metadata.ts';
import { METADATA_SIZE } from './superblock.ts';

export const InodeType = {
  dir: 1, file: 2, symlink: 3, blockDev: 4, charDev: 5, fifo: 6, socket: 7,
  ldir: 8, lfile: 9, lsymlink: 10, lblockDev: 11, lcharDev: 12, lfifo: 13, lsocket: 14,
} as const;

export const NO_FRAGMENT = 0xffffffff;
export const NO_XATTR = 0xffffffff;

export type InodeKind = 'dir' | 'file' | 'symlink' | 'blockdev' | 'chardev' | 'fifo' | 'socket';
const KIND_OF_BASIC: readonly InodeKind[] = ['dir', 'dir', 'file', 'symlink', 'blockdev', 'chardev', 'fifo', 'socket'];

export interface DirIndexEntry {
  readonly index: number;
  readonly startBlock: number;
  readonly name: Uint8Array;
}

interface InodeBase {
  /** On-disk type 1..14. */
  readonly type: number;
  /** Permission bits (07777). */
  readonly mode: number;
  readonly uidIndex: number;
  readonly gidIndex: number;
  readonly mtime: number;
  readonly inodeNumber: number;
  readonly nlink: number;
  /** Index into the xattr-id table, or undefined. */
  readonly xattr: number | undefined;
}

export interface DirInode extends InodeBase {
  readonly kind: 'dir';
  readonly startBlock: number;
  readonly offset: number;
  /** Listing size + 3, as stored. */
  readonly fileSize: number;
  readonly parentInode: number;
  readonly index: readonly DirIndexEntry[];
}

export interface FileInode extends InodeBase {
  readonly kind: 'file';
  readonly blocksStart: number;
  readonly fileSize: number;
  readonly sparse: number;
  readonly fragment: number;
  readonly fragmentOffset: number;
  /** Stored size words of the full blocks (bit 24 = uncompressed, 0 = sparse). */
  readonly blockSizes: Uint32Array;
}

export interface SymlinkInode extends InodeBase {
  readonly kind: 'symlink';
  readonly target: Uint8Array;
}

export interface DeviceInode extends InodeBase {
  readonly kind: 'blockdev' | 'chardev';
  readonly rdev: number;
}

export interface IpcInode extends InodeBase {
  readonly kind: 'fifo' | 'socket';
}

export type Inode = DirInode | FileInode | SymlinkInode | DeviceInode | IpcInode;

export function kindOfType(type: number): InodeKind {
  const basic = type > 7 ? type - 7 : type;
  return KIND_OF_BASIC[basic] as InodeKind;
}

export interface InodeContext {
  readonly blockSize: number;
  readonly idCount: number;
  readonly inodes: number;
  readonly bytesUsed: number;
  readonly fragments: number;
  readonly xattrIds: number;
}

/** Decodes the inode at `pos` in the inode table, validating every field against the image. */
export async function readInode(table: MetadataReader, pos: MetaPos, ctx: InodeContext): Promise<Inode> {
  const at = table.start + pos.block;
  const corrupt = (field: string, msg: string): CorruptImageError => new CorruptImageError('squashfs', `inode.${field}`, `${msg} (inode block ${pos.block}, offset ${pos.offset})`, at);
  const h = view(await table.read(pos, 16));
  const type = h.getUint16(0, true);
  if (type < 1 || type > 14) throw corrupt('type', `${type} is not 1..14`);
  const mode = h.getUint16(2, true);
  if (mode & ~0o7777) throw corrupt('mode', `0${mode.toString(8)} has file-type bits set`);
  const uidIndex = h.getUint16(4, true);
  const gidIndex = h.getUint16(6, true);
  if (uidIndex >= ctx.idCount) throw corrupt('uid', `id index ${uidIndex} is past the id table (${ctx.idCount})`);
  if (gidIndex >= ctx.idCount) throw corrupt('gid', `id index ${gidIndex} is past the id table (${ctx.idCount})`);
  const mtime = h.getUint32(8, true);
  const inodeNumber = h.getUint32(12, true);
  if (inodeNumber < 1 || inodeNumber > ctx.inodes) throw corrupt('inode_number', `${inodeNumber} is not 1..${ctx.inodes}`);
  const base = { type, mode, uidIndex, gidIndex, mtime, inodeNumber };
  const xattrOf = (v: number): number | undefined => {
    if (v === NO_XATTR) return undefined;
    if (v >= ctx.xattrIds) throw corrupt('xattr', `index ${v} is past the xattr-id table (${ctx.xattrIds})`);
    return v;
  };
  const kind = kindOfType(type);
  switch (type) {
    case InodeType.dir: {
      const b = view(await table.read(pos, 16));
      return { kind: 'dir', nlink: b.getUint32(4, true), xattr: undefined, startBlock: b.getUint32(0, true), fileSize: b.getUint16(8, true), offset: b.getUint16(10, true), parentInode: b.getUint32(12, true), index: [], ...base };
    }
    case InodeType.ldir: {
      const b = view(await table.read(pos, 24));
      const count = b.getUint16(16, true);
      const offset = b.getUint16(18, true);
      const dirInode = { kind: 'dir' as const, nlink: b.getUint32(0, true), fileSize: b.getUint32(4, true), startBlock: b.getUint32(8, true), parentInode: b.getUint32(12, true), offset, xattr: xattrOf(b.getUint32(20, true)), ...base };
      const index: DirIndexEntry[] = [];
      for (let i = 0; i < count; i++) {
        const e = view(await table.read(pos, 12));
        const nameSize = e.getUint32(8, true) + 1;
        if (nameSize > 256) throw corrupt('dir_index.name_size', `${nameSize} is more than 256`);
        const name = await table.read(pos, nameSize);
        index.push({ index: e.getUint32(0, true), startBlock: e.getUint32(4, true), name });
      }
      return { ...dirInode, index };
    }
    case InodeType.file:
    case InodeType.lfile: {
      let blocksStart: number, fileSize: number, sparse = 0, nlink = 1, fragment: number, fragmentOffset: number, xattr: number | undefined;
      if (type === InodeType.file) {
        const b = view(await table.read(pos, 16));
        blocksStart = b.getUint32(0, true);
        fragment = b.getUint32(4, true);
        fragmentOffset = b.getUint32(8, true);
        fileSize = b.getUint32(12, true);
      } else {
        const b = view(await table.read(pos, 40));
        blocksStart = toSafeNumber(b.getBigUint64(0, true), 'squashfs', 'inode.start_block', at);
        fileSize = toSafeNumber(b.getBigUint64(8, true), 'squashfs', 'inode.file_size', at);
        sparse = toSafeNumber(b.getBigUint64(16, true), 'squashfs', 'inode.sparse', at);
        nlink = b.getUint32(24, true);
        fragment = b.getUint32(28, true);
        fragmentOffset = b.getUint32(32, true);
        xattr = xattrOf(b.getUint32(36, true));
      }
      if (blocksStart > ctx.bytesUsed) throw corrupt('start_block', `${blocksStart} is past the image end`);
      const hasFragment = fragment !== NO_FRAGMENT;
      const tail = fileSize % ctx.blockSize;
      if (hasFragment) {
        if (fragment >= ctx.fragments) throw corrupt('fragment', `index ${fragment} is past the fragment table (${ctx.fragments})`);
        if (tail === 0) throw corrupt('fragment', 'a file whose size is a multiple of the block size has a fragment');
        if (fragmentOffset + tail > ctx.blockSize) throw corrupt('offset', `fragment range ${fragmentOffset}+${tail} is past the block size`);
      }
      const count = hasFragment ? Math.floor(fileSize / ctx.blockSize) : Math.ceil(fileSize / ctx.blockSize);
      // Each stored word takes 4 bytes of the inode table; a metadata block holds 8 KiB and takes at least 3 bytes on disk.
      if (count * 4 > (table.length / 3 + 1) * METADATA_SIZE) throw corrupt('file_size', `${fileSize} needs ${count} block words, more than the inode table can hold`);
      const words = await table.read(pos, count * 4);
      const blockSizes = new Uint32Array(count);
      const wv = view(words);
      for (let i = 0; i < count; i++) {
        const w = wv.getUint32(i * 4, true);
        if (w & ~0x1ffffff) throw corrupt('block_size', `block ${i} size word 0x${w.toString(16)} has bits above 24`);
        if ((w & 0xffffff) > ctx.blockSize) throw corrupt('block_size', `block ${i} stores ${w & 0xffffff} bytes, more than the block size`);
        blockSizes[i] = w;
      }
      return { kind: 'file', nlink, xattr, blocksStart, fileSize, sparse, fragment, fragmentOffset, blockSizes, ...base };
    }
    case InodeType.symlink:
    case InodeType.lsymlink: {
      const b = view(await table.read(pos, 8));
      const nlink = b.getUint32(0, true);
      const size = b.getUint32(4, true);
      if (size > 4096) throw corrupt('symlink_size', `${size} is more than 4096`);
      const target = await table.read(pos, size);
      const xattr = type === InodeType.lsymlink ? xattrOf(view(await table.read(pos, 4)).getUint32(0, true)) : undefined;
      return { kind: 'symlink', nlink, xattr, target, ...base };
    }
    case InodeType.blockDev:
    case InodeType.charDev:
    case InodeType.lblockDev:
    case InodeType.lcharDev: {
      const long = type > 7;
      const b = view(await table.read(pos, long ? 12 : 8));
      return { kind: kind as 'blockdev' | 'chardev', nlink: b.getUint32(0, true), rdev: b.getUint32(4, true), xattr: long ? xattrOf(b.getUint32(8, true)) : undefined, ...base };
    }
    default: {
      const long = type > 7;
      const b = view(await table.read(pos, long ? 8 : 4));
      return { kind: kind as 'fifo' | 'socket', nlink: b.getUint32(0, true), xattr: long ? xattrOf(b.getUint32(4, true)) : undefined, ...base };
    }
  }
}

/** Encodes an inode in the form its `type` names (the writer chooses basic or extended). */
export function encodeInode(inode: Inode): Uint8Array {
  const parts: Uint8Array[] = [];
  const hdr = new Uint8Array(16);
  const h = view(hdr);
  h.setUint16(0, inode.type, true);
  h.setUint16(2, inode.mode, true);
  h.setUint16(4, inode.uidIndex, true);
  h.setUint16(6, inode.gidIndex, true);
  h.setUint32(8, inode.mtime, true);
  h.setUint32(12, inode.inodeNumber, true);
  parts.push(hdr);
  const xattr = inode.xattr ?? NO_XATTR;
  switch (inode.type) {
    case InodeType.dir: {
      const d = inode as DirInode;
      const b = new Uint8Array(16);
      const v = view(b);
      v.setUint32(0, d.startBlock, true);
      v.setUint32(4, d.nlink, true);
      v.setUint16(8, d.fileSize, true);
      v.setUint16(10, d.offset, true);
      v.setUint32(12, d.parentInode, true);
      parts.push(b);
      break;
    }
    case InodeType.ldir: {
      const d = inode as DirInode;
      const b = new Uint8Array(24);
      const v = view(b);
      v.setUint32(0, d.nlink, true);
      v.setUint32(4, d.fileSize, true);
      v.setUint32(8, d.startBlock, true);
      v.setUint32(12, d.parentInode, true);
      v.setUint16(16, d.index.length, true);
      v.setUint16(18, d.offset, true);
      v.setUint32(20, xattr, true);
      parts.push(b);
      for (const e of d.index) {
        const eb = new Uint8Array(12 + e.name.byteLength);
        const ev = view(eb);
        ev.setUint32(0, e.index, true);
        ev.setUint32(4, e.startBlock, true);
        ev.setUint32(8, e.name.byteLength - 1, true);
        eb.set(e.name, 12);
        parts.push(eb);
      }
      break;
    }
    case InodeType.file:
    case InodeType.lfile: {
      const f = inode as FileInode;
      const long = f.type === InodeType.lfile;
      const b = new Uint8Array((long ? 40 : 16) + f.blockSizes.length * 4);
      const v = view(b);
      if (long) {
        v.setBigUint64(0, BigInt(f.blocksStart), true);
        v.setBigUint64(8, BigInt(f.fileSize), true);
        v.setBigUint64(16, BigInt(f.sparse), true);
        v.setUint32(24, f.nlink, true);
        v.setUint32(28, f.fragment, true);
        v.setUint32(32, f.fragmentOffset, true);
        v.setUint32(36, xattr, true);
      } else {
        v.setUint32(0, f.blocksStart, true);
        v.setUint32(4, f.fragment, true);
        v.setUint32(8, f.fragmentOffset, true);
        v.setUint32(12, f.fileSize, true);
      }
      const base = long ? 40 : 16;
      for (let i = 0; i < f.blockSizes.length; i++) v.setUint32(base + i * 4, f.blockSizes[i] as number, true);
      parts.push(b);
      break;
    }
    case InodeType.symlink:
    case InodeType.lsymlink: {
      const s = inode as SymlinkInode;
      const long = s.type === InodeType.lsymlink;
      const b = new Uint8Array(8 + s.target.byteLength + (long ? 4 : 0));
      const v = view(b);
      v.setUint32(0, s.nlink, true);
      v.setUint32(4, s.target.byteLength, true);
      b.set(s.target, 8);
      if (long) v.setUint32(8 + s.target.byteLength, xattr, true);
      parts.push(b);
      break;
    }
    case InodeType.blockDev:
    case InodeType.charDev:
    case InodeType.lblockDev:
    case InodeType.lcharDev: {
      const d = inode as DeviceInode;
      const long = d.type > 7;
      const b = new Uint8Array(long ? 12 : 8);
      const v = view(b);
      v.setUint32(0, d.nlink, true);
      v.setUint32(4, d.rdev, true);
      if (long) v.setUint32(8, xattr, true);
      parts.push(b);
      break;
    }
    default: {
      const long = inode.type > 7;
      const b = new Uint8Array(long ? 8 : 4);
      const v = view(b);
      v.setUint32(0, inode.nlink, true);
      if (long) v.setUint32(4, xattr, true);
      parts.push(b);
    }
  }
  return Buffer.concat(parts);
}

/** Linux new_encode_dev / new_decode_dev. */
export function encodeDev(major: number, minor: number): number {
  return ((minor & 0xff) | ((major & 0xfff) << 8) | ((minor & ~0xff) << 12)) >>> 0;
}
export function decodeDev(dev: number): { major: number; minor: number } {
  return { major: (dev & 0xfff00) >>> 8, minor: (dev & 0xff) | ((dev >>> 12) & 0xfff00) };
}
