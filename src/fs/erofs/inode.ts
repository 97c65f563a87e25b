/**
 * EROFS on-disk inodes: the 32-byte compact and the 64-byte extended form, decoded to their raw
 * fields (`decodeInode` / `encodeInode`), and `describeInode`, which turns the raw fields into what a
 * reader uses (kind, nlink, absolute mtime, start block, rdev, chunk geometry, where the body ends).
 *
 * Design notes
 * - Inode `nid` lives at meta_blkaddr × blksz + 32 × nid. A compact inode never crosses a block; an
 *   extended one may (the caller hands over 64 contiguous bytes).
 * - Compact inodes: mtime = sb.epoch + i_mtime, nsec = sb.fixed_nsec; nlink = 1 when NLINK_1 is set
 *   on a non-directory (i_nb then holds startblk_hi, used only by 48-bit images which are refused).
 */
import { CorruptImageError, UnsupportedFeatureError } from '../../errors.ts';
import { toSafeNumber, view } from '../../io/bytes.ts';
import type { NodeKind } from '../filesystem.ts';

export const COMPACT_INODE_SIZE = 32;
export const EXTENDED_INODE_SIZE = 64;

export const DataLayout = {
  flatPlain: 0,
  compressedFull: 1,
  flatInline: 2,
  compressedCompact: 3,
  chunkBased: 4,
} as const;

export const ChunkFormat = {
  blkbitsMask: 0x1f,
  indexes: 0x20,
  bit48: 0x40,
} as const;

const I_ALL = 0x1f;
const NLINK_1_BIT = 0x10;
export const NULL_ADDR_32 = 0xffffffff;

export const S_IFMT = 0o170000;
const KIND_OF_IFMT: Record<number, NodeKind> = {
  0o100000: 'file', 0o040000: 'dir', 0o120000: 'symlink', 0o020000: 'chardev', 0o060000: 'blockdev', 0o010000: 'fifo', 0o140000: 'socket',
};

/** The raw fields of an inode (compact inodes store no nlink or nsec: those are 0 here). */
export interface RawInode {
  readonly extended: boolean;
  /** i_format: bit 0 version, bits 1-3 data layout, bit 4 NLINK_1 / DOT_OMITTED. */
  readonly format: number;
  readonly xattrIcount: number;
  /** Full st_mode (type and permission bits). */
  readonly mode: number;
  /** i_nb: nlink (compact without NLINK_1), else blocks_hi / startblk_hi. */
  readonly nb: number;
  readonly size: number;
  /** i_u: startblk_lo, blocks_lo, rdev, or chunk format (low 16 bits). */
  readonly u: number;
  readonly ino: number;
  readonly uid: number;
  readonly gid: number;
  /** Compact: seconds after sb.epoch; extended: seconds since 1970. */
  readonly mtime: number;
  readonly mtimeNsec: number;
  /** Extended inodes only (0 in compact ones). */
  readonly nlink: number;
}

function corrupt(nid: number, field: string, message: string, offset: number | undefined): CorruptImageError {
  return new CorruptImageError('erofs', `inode.${field}`, `nid ${nid}: ${message}`, offset);
}

export function kindOfMode(mode: number): NodeKind | undefined {
  return KIND_OF_IFMT[mode & S_IFMT];
}

/** Decodes the inode at the start of `bytes` (32 bytes, or 64 for an extended inode); `offset` is its image position for errors. */
export function decodeInode(bytes: Uint8Array, nid: number, offset?: number): RawInode {
  if (bytes.byteLength < COMPACT_INODE_SIZE) throw corrupt(nid, 'size', `${bytes.byteLength} bytes, less than a compact inode`, offset);
  const dv = view(bytes);
  const format = dv.getUint16(0, true);
  if (format & ~I_ALL) throw new UnsupportedFeatureError('erofs', 'INODE_FORMAT', `nid ${nid}: i_format 0x${format.toString(16)} has unknown bits`);
  const layout = (format >> 1) & 7;
  if (layout > DataLayout.chunkBased) throw new UnsupportedFeatureError('erofs', 'DATALAYOUT', `nid ${nid}: data layout ${layout}`);
  const extended = (format & 1) === 1;
  const xattrIcount = dv.getUint16(2, true);
  const mode = dv.getUint16(4, true);
  if (kindOfMode(mode) === undefined) throw corrupt(nid, 'i_mode', `0o${mode.toString(8)} is no file type`, offset === undefined ? undefined : offset + 4);
  const nb = dv.getUint16(6, true);
  if (!extended) {
    return {
      extended, format, xattrIcount, mode, nb, size: dv.getUint32(8, true), mtime: dv.getUint32(12, true), u: dv.getUint32(16, true),
      ino: dv.getUint32(20, true), uid: dv.getUint16(24, true), gid: dv.getUint16(26, true), mtimeNsec: 0, nlink: 0,
    };
  }
  if (bytes.byteLength < EXTENDED_INODE_SIZE) throw corrupt(nid, 'size', `${bytes.byteLength} bytes, less than an extended inode`, offset);
  const size = toSafeNumber(dv.getBigUint64(8, true), 'erofs', 'inode.i_size', offset === undefined ? undefined : offset + 8);
  const mtime = toSafeNumber(dv.getBigUint64(32, true), 'erofs', 'inode.i_mtime', offset === undefined ? undefined : offset + 32);
  const mtimeNsec = dv.getUint32(40, true);
  if (mtimeNsec >= 1e9) throw corrupt(nid, 'i_mtime_nsec', `${mtimeNsec} is not below 10^9`, offset === undefined ? undefined : offset + 40);
  return {
    extended, format, xattrIcount, mode, nb, size, u: dv.getUint32(16, true), ino: dv.getUint32(20, true),
    uid: dv.getUint32(24, true), gid: dv.getUint32(28, true), mtime, mtimeNsec, nlink: dv.getUint32(44, true),
  };
}

export function encodeInode(i: RawInode): Uint8Array {
  const out = new Uint8Array(i.extended ? EXTENDED_INODE_SIZE : COMPACT_INODE_SIZE);
  const dv = view(out);
  dv.setUint16(0, (i.format & ~1) | (i.extended ? 1 : 0), true);
  dv.setUint16(2, i.xattrIcount, true);
  dv.setUint16(4, i.mode, true);
  dv.setUint16(6, i.nb, true);
  dv.setUint32(16, i.u >>> 0, true);
  dv.setUint32(20, i.ino, true);
  if (!i.extended) {
    dv.setUint32(8, i.size, true);
    dv.setUint32(12, i.mtime, true);
    dv.setUint16(24, i.uid, true);
    dv.setUint16(26, i.gid, true);
  } else {
    dv.setBigUint64(8, BigInt(i.size), true);
    dv.setUint32(24, i.uid, true);
    dv.setUint32(28, i.gid, true);
    dv.setBigUint64(32, BigInt(i.mtime), true);
    dv.setUint32(40, i.mtimeNsec, true);
    dv.setUint32(44, i.nlink, true);
  }
  return out;
}

/** Size of the inline xattr area for i_xattr_icount (0, or a 12-byte header plus 4 × (n − 1)). */
export function xattrIbodySize(icount: number): number {
  return icount === 0 ? 0 : 12 + 4 * (icount - 1);
}

export interface Inode {
  readonly nid: number;
  readonly raw: RawInode;
  readonly kind: NodeKind;
  readonly layout: number;
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  readonly nlink: number;
  readonly size: number;
  readonly mtime: { readonly sec: number; readonly nsec: number };
  /** Image byte offset of the inode. */
  readonly pos: number;
  readonly inodeSize: number;
  readonly xattrSize: number;
  /** First byte after the inode and its inline xattrs (map header, chunk indexes or tail data follow). */
  readonly bodyPos: number;
  /** Flat layouts: the first data block, undefined when the file is one hole (EROFS_NULL_ADDR). */
  readonly startBlock: number | undefined;
  readonly rdev: { readonly major: number; readonly minor: number } | undefined;
  readonly chunkFormat: number;
  readonly chunkBits: number;
  readonly dotOmitted: boolean;
}

export interface InodeContext {
  readonly blkszbits: number;
  readonly epoch: number;
  readonly fixedNsec: number;
  readonly imageSize: number;
}

/** The reader's view of a raw inode at image position `pos`, validated against the image. */
export function describeInode(raw: RawInode, nid: number, pos: number, ctx: InodeContext): Inode {
  const kind = kindOfMode(raw.mode) as NodeKind;
  const layout = (raw.format >> 1) & 7;
  const inodeSize = raw.extended ? EXTENDED_INODE_SIZE : COMPACT_INODE_SIZE;
  const xattrSize = xattrIbodySize(raw.xattrIcount);
  const bodyPos = pos + inodeSize + xattrSize;
  const bs = 2 ** ctx.blkszbits;
  let nlink = raw.nlink;
  if (!raw.extended) nlink = kind !== 'dir' && raw.format & NLINK_1_BIT ? 1 : raw.nb;
  const mtime = raw.extended ? { sec: raw.mtime, nsec: raw.mtimeNsec } : { sec: ctx.epoch + raw.mtime, nsec: ctx.fixedNsec };
  let startBlock: number | undefined;
  let rdev: Inode['rdev'];
  let chunkFormat = 0;
  let chunkBits = 0;
  if (kind === 'file' || kind === 'dir' || kind === 'symlink') {
    if (layout === DataLayout.flatPlain || layout === DataLayout.flatInline) {
      startBlock = raw.u >>> 0;
      if (layout === DataLayout.flatPlain && startBlock === NULL_ADDR_32) startBlock = undefined;
      const fullBlocks = layout === DataLayout.flatInline ? Math.max(0, Math.ceil(raw.size / bs) - 1) : Math.ceil(raw.size / bs);
      if (startBlock !== undefined && fullBlocks > 0 && (startBlock + fullBlocks) * bs > ctx.imageSize) {
        throw corrupt(nid, 'i_u.startblk', `data blocks ${startBlock}+${fullBlocks} run past the image`, pos + 16);
      }
      if (layout === DataLayout.flatInline) {
        const tail = raw.size - fullBlocks * bs;
        if (tail > 0 && (bodyPos % bs) + tail > bs) throw corrupt(nid, 'i_size', `the ${tail}-byte inline tail crosses a block boundary`, pos + 8);
      }
    } else if (layout === DataLayout.chunkBased) {
      chunkFormat = raw.u & 0xffff;
      if (chunkFormat & ~0x7f) throw new UnsupportedFeatureError('erofs', 'CHUNK_FORMAT', `nid ${nid}: chunk format 0x${chunkFormat.toString(16)}`);
      if (chunkFormat & ChunkFormat.bit48) throw new UnsupportedFeatureError('erofs', '48BIT', `nid ${nid}: 48-bit chunk indexes`);
      chunkBits = ctx.blkszbits + (chunkFormat & ChunkFormat.blkbitsMask);
      if (chunkBits > 48) throw corrupt(nid, 'i_u.chunk_format', `chunk size 2^${chunkBits} is too large`, pos + 16);
    }
  } else if (kind === 'chardev' || kind === 'blockdev') {
    const dev = raw.u >>> 0;
    rdev = { major: (dev & 0xfff00) >>> 8, minor: (dev & 0xff) | ((dev >>> 12) & 0xfff00) };
  }
  if ((kind === 'chardev' || kind === 'blockdev' || kind === 'fifo' || kind === 'socket') && raw.size !== 0) {
    throw corrupt(nid, 'i_size', `a ${kind} has size ${raw.size}`, pos + 8);
  }
  if (raw.size > ctx.imageSize * 4096 && !(layout === DataLayout.chunkBased || layout === DataLayout.flatPlain)) {
    // A compressed file cannot expand by more than a pcluster's worth per block; this bound only stops absurd sizes.
    throw corrupt(nid, 'i_size', `${raw.size} bytes cannot come from a ${ctx.imageSize}-byte image`, pos + 8);
  }
  return {
    nid, raw, kind, layout, mode: raw.mode & 0o7777, uid: raw.uid, gid: raw.gid, nlink, size: raw.size, mtime, pos, inodeSize, xattrSize, bodyPos,
    startBlock, rdev, chunkFormat, chunkBits, dotOmitted: kind === 'dir' && (raw.format & NLINK_1_BIT) !== 0,
  };
}
