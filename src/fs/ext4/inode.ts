/** On-disk inodes (s_inode_size bytes), their checksum, times and device numbers. */
import { CorruptImageError } from '../../errors.ts';
import { view } from '../../io/bytes.ts';
import { crc32cU32, crc32cUpdate } from './crc.ts';
import { FORMAT } from './superblock.ts';

export const InodeFlags = {
  secrm: 0x1,
  immutable: 0x10,
  append: 0x20,
  noatime: 0x80,
  index: 0x1000,
  journalData: 0x4000,
  dirsync: 0x10000,
  topdir: 0x20000,
  hugeFile: 0x40000,
  extents: 0x80000,
  verity: 0x100000,
  eaInode: 0x200000,
  inlineData: 0x10000000,
  projinherit: 0x20000000,
  casefold: 0x40000000,
  encrypt: 0x800,
} as const;

export const S_IFMT = 0o170000;
export const FileType = {
  fifo: 0o010000,
  chr: 0o020000,
  dir: 0o040000,
  blk: 0o060000,
  reg: 0o100000,
  lnk: 0o120000,
  sock: 0o140000,
} as const;

export type Kind = 'file' | 'dir' | 'symlink' | 'chardev' | 'blockdev' | 'fifo' | 'socket' | 'unknown';

export function kindOfMode(mode: number): Kind {
  switch (mode & S_IFMT) {
    case FileType.reg:
      return 'file';
    case FileType.dir:
      return 'dir';
    case FileType.lnk:
      return 'symlink';
    case FileType.chr:
      return 'chardev';
    case FileType.blk:
      return 'blockdev';
    case FileType.fifo:
      return 'fifo';
    case FileType.sock:
      return 'socket';
    default:
      return 'unknown';
  }
}

/** A timestamp: seconds since the epoch (may be negative) and nanoseconds. */
export interface Timestamp {
  readonly sec: number;
  readonly nsec: number;
}

export interface Inode {
  readonly ino: number;
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  readonly size: number;
  readonly atime: Timestamp;
  readonly ctime: Timestamp;
  readonly mtime: Timestamp;
  readonly crtime: Timestamp | undefined;
  readonly dtime: number;
  readonly linksCount: number;
  /** i_blocks in 512-byte units (converted when HUGE_FILE_FL says fs blocks). */
  readonly blocks512: number;
  readonly flags: number;
  readonly generation: number;
  readonly fileAcl: number;
  readonly extraIsize: number;
  readonly projid: number;
  /** The 60 bytes of i_block (extent root, block pointers, fast symlink or inline data). */
  readonly iBlock: Uint8Array;
  readonly checksum: number | undefined;
  /** The whole on-disk inode. */
  readonly raw: Uint8Array;
}

function time(dv: DataView, at: number, extraAt: number | undefined): Timestamp {
  const base = dv.getInt32(at, true);
  if (extraAt === undefined) return { sec: base, nsec: 0 };
  const extra = dv.getUint32(extraAt, true);
  return { sec: base + (extra & 3) * 2 ** 32, nsec: extra >>> 2 };
}

/** `copy: false` keeps a view of `bytes` (for scans that drop the inode before the buffer changes). */
export function decodeInode(bytes: Uint8Array, ino: number, blockSize: number, hugeFileFeature: boolean, offset: number, copy = true): Inode {
  const raw = copy ? bytes.slice() : bytes;
  const dv = view(raw);
  const u16 = (o: number) => dv.getUint16(o, true);
  const u32 = (o: number) => dv.getUint32(o, true);
  const large = raw.byteLength > 128;
  const extraIsize = large ? u16(128) : 0;
  if (large && (extraIsize > raw.byteLength - 128 || extraIsize % 4 !== 0)) {
    throw new CorruptImageError(FORMAT, `inode[${ino}].i_extra_isize`, `${extraIsize}`, offset + 128);
  }
  const has = (fieldEnd: number) => large && 128 + extraIsize >= fieldEnd;
  const flags = u32(32);
  let blocks512 = u16(116) * 2 ** 32 + u32(28);
  if (!hugeFileFeature) blocks512 = u32(28);
  else if (flags & InodeFlags.hugeFile) blocks512 *= blockSize / 512;
  return {
    ino,
    mode: u16(0),
    uid: u16(2) | (u16(120) << 16),
    gid: u16(24) | (u16(122) << 16),
    size: u32(108) * 2 ** 32 + u32(4),
    atime: time(dv, 8, has(144) ? 140 : undefined),
    ctime: time(dv, 12, has(136) ? 132 : undefined),
    mtime: time(dv, 16, has(140) ? 136 : undefined),
    crtime: has(152) ? time(dv, 144, 148) : undefined,
    dtime: u32(20),
    linksCount: u16(26),
    blocks512,
    flags,
    generation: u32(100),
    fileAcl: u16(118) * 2 ** 32 + u32(104),
    extraIsize,
    projid: has(160) ? u32(156) : 0,
    iBlock: raw.subarray(40, 100),
    checksum: large && extraIsize >= 4 ? u16(124) | (u16(130) << 16) : u16(124),
    raw,
  };
}

/** crc32c of an inode; `full` says whether the high 16 bits are stored (inode > 128 and extra_isize ≥ 4). */
export function inodeChecksum(seed: number, ino: number, raw: Uint8Array): { value: number; full: boolean } {
  const dv = view(raw);
  const full = raw.byteLength > 128 && dv.getUint16(128, true) >= 4;
  let crc = crc32cU32(seed, ino);
  crc = crc32cU32(crc, dv.getUint32(100, true));
  // The checksum fields count as zero; feed the bytes around them without copying the inode.
  crc = crc32cUpdate(crc, raw, 0, 124);
  crc = crc32cUpdate(crc, ZERO2, 0, 2);
  if (full) {
    crc = crc32cUpdate(crc, raw, 126, 130);
    crc = crc32cUpdate(crc, ZERO2, 0, 2);
    crc = crc32cUpdate(crc, raw, 132, raw.byteLength);
  } else {
    crc = crc32cUpdate(crc, raw, 126, raw.byteLength);
  }
  return { value: full ? crc >>> 0 : crc & 0xffff, full };
}

const ZERO2 = new Uint8Array(2);

export function storedInodeChecksum(raw: Uint8Array): number {
  const dv = view(raw);
  const full = raw.byteLength > 128 && dv.getUint16(128, true) >= 4;
  return full ? (dv.getUint16(124, true) | (dv.getUint16(130, true) << 16)) >>> 0 : dv.getUint16(124, true);
}

export function setInodeChecksum(seed: number, ino: number, raw: Uint8Array): void {
  const dv = view(raw);
  const { value, full } = inodeChecksum(seed, ino, raw);
  dv.setUint16(124, value & 0xffff, true);
  if (full) dv.setUint16(130, value >>> 16, true);
}

export function deviceNumber(inode: Inode): { major: number; minor: number } {
  const dv = view(inode.iBlock);
  const old = dv.getUint32(0, true);
  if (old !== 0) return { major: (old >>> 8) & 0xff, minor: old & 0xff };
  const v = dv.getUint32(4, true);
  return { major: (v >>> 8) & 0xfff, minor: (v & 0xff) | ((v >>> 12) & 0xfff00) };
}

/** What a new inode holds; unset times default to `time`. */
export interface InodeInit {
  mode: number;
  uid?: number;
  gid?: number;
  size?: number;
  linksCount: number;
  blocks512?: number;
  flags?: number;
  generation?: number;
  fileAcl?: number;
  iBlock?: Uint8Array;
  time: Timestamp;
  atime?: Timestamp;
  mtime?: Timestamp;
  ctime?: Timestamp;
  crtime?: Timestamp;
  projid?: number;
}

export const DEFAULT_EXTRA_ISIZE = 32;

function encodeTime(dv: DataView, at: number, extraAt: number | undefined, t: Timestamp): void {
  const epoch = Math.floor((t.sec + 2 ** 31) / 2 ** 32);
  const low = t.sec - epoch * 2 ** 32;
  dv.setInt32(at, low, true);
  if (extraAt !== undefined) dv.setUint32(extraAt, ((t.nsec << 2) | (epoch & 3)) >>> 0, true);
}

/** Encodes a new inode of `inodeSize` bytes (i_extra_isize 32 when there is room); no checksum. */
export function encodeInode(init: InodeInit, inodeSize: number): Uint8Array {
  const raw = new Uint8Array(inodeSize);
  const dv = view(raw);
  const large = inodeSize > 128;
  const uid = init.uid ?? 0;
  const gid = init.gid ?? 0;
  const size = init.size ?? 0;
  const blocks = init.blocks512 ?? 0;
  dv.setUint16(0, init.mode, true);
  dv.setUint16(2, uid & 0xffff, true);
  dv.setUint32(4, size % 2 ** 32, true);
  dv.setUint16(24, gid & 0xffff, true);
  dv.setUint16(26, init.linksCount, true);
  dv.setUint32(28, blocks % 2 ** 32, true);
  dv.setUint32(32, init.flags ?? 0, true);
  if (init.iBlock) raw.set(init.iBlock.subarray(0, 60), 40);
  dv.setUint32(100, init.generation ?? 0, true);
  const acl = init.fileAcl ?? 0;
  dv.setUint32(104, acl % 2 ** 32, true);
  dv.setUint32(108, Math.floor(size / 2 ** 32), true);
  dv.setUint16(116, Math.floor(blocks / 2 ** 32), true);
  dv.setUint16(118, Math.floor(acl / 2 ** 32), true);
  dv.setUint16(120, uid >>> 16, true);
  dv.setUint16(122, gid >>> 16, true);
  const extra = large ? DEFAULT_EXTRA_ISIZE : 0;
  if (large) dv.setUint16(128, extra, true);
  const has = (end: number) => large && 128 + extra >= end;
  encodeTime(dv, 8, has(144) ? 140 : undefined, init.atime ?? init.time);
  encodeTime(dv, 12, has(136) ? 132 : undefined, init.ctime ?? init.time);
  encodeTime(dv, 16, has(140) ? 136 : undefined, init.mtime ?? init.time);
  if (has(152)) encodeTime(dv, 144, 148, init.crtime ?? init.time);
  if (has(160)) dv.setUint32(156, init.projid ?? 0, true);
  return raw;
}
