/** The 96-byte SquashFS 4.0 superblock: decode (validating every field) and encode. */
import { CorruptImageError, UnsupportedFeatureError } from '../../errors.ts';
import { readU64, view } from '../../io/bytes.ts';

export const SQUASHFS_MAGIC = 0x73717368;
export const SUPERBLOCK_SIZE = 96;
export const NO_TABLE = 0xffff_ffff_ffff_ffffn;
export const METADATA_SIZE = 8192;

export const Flags = {
  inodesUncompressed: 0x1,
  dataUncompressed: 0x2,
  fragmentsUncompressed: 0x8,
  noFragments: 0x10,
  alwaysFragments: 0x20,
  duplicates: 0x40,
  exportable: 0x80,
  xattrsUncompressed: 0x100,
  noXattrs: 0x200,
  compressorOptions: 0x400,
  idsUncompressed: 0x800,
} as const;

export interface Superblock {
  readonly inodes: number;
  readonly mkfsTime: number;
  readonly blockSize: number;
  readonly fragments: number;
  readonly compression: number;
  readonly blockLog: number;
  readonly flags: number;
  readonly idCount: number;
  readonly rootInode: bigint;
  readonly bytesUsed: number;
  readonly idTableStart: number;
  /** undefined when the image has no xattr table. */
  readonly xattrIdTableStart: number | undefined;
  readonly inodeTableStart: number;
  readonly directoryTableStart: number;
  readonly fragmentTableStart: number;
  /** undefined when the image is not exportable. */
  readonly lookupTableStart: number | undefined;
}

function corrupt(field: string, message: string, offset: number): CorruptImageError {
  return new CorruptImageError('squashfs', `superblock.${field}`, message, offset);
}

/** Decodes and validates a superblock; `deviceSize` bounds every table position. */
export function decodeSuperblock(bytes: Uint8Array, deviceSize: number): Superblock {
  if (bytes.byteLength < SUPERBLOCK_SIZE) throw corrupt('size', `image is ${bytes.byteLength} bytes, smaller than a superblock`, 0);
  const dv = view(bytes);
  const magic = dv.getUint32(0, true);
  if (magic !== SQUASHFS_MAGIC) {
    if (magic === 0x68737173) throw new UnsupportedFeatureError('squashfs', 'big-endian image', 'byte-swapped magic (SquashFS < 4 or big-endian)');
    if (magic === 0x53515348 || magic === 0x48535153) throw new UnsupportedFeatureError('squashfs', 'streamed image', 'superblock at the end is not supported');
    throw corrupt('magic', `0x${magic.toString(16)} is not a SquashFS magic`, 0);
  }
  const major = dv.getUint16(28, true);
  const minor = dv.getUint16(30, true);
  if (major !== 4 || minor !== 0) throw new UnsupportedFeatureError('squashfs', 'version', `${major}.${minor} (only 4.0)`);
  const inodes = dv.getUint32(4, true);
  const mkfsTime = dv.getUint32(8, true);
  const blockSize = dv.getUint32(12, true);
  const fragments = dv.getUint32(16, true);
  const compression = dv.getUint16(20, true);
  const blockLog = dv.getUint16(22, true);
  const flags = dv.getUint16(24, true);
  const idCount = dv.getUint16(26, true);
  const rootInode = dv.getBigUint64(32, true);
  const bytesUsed = readU64(dv, 40, 'squashfs', 'superblock.bytes_used');
  if (blockSize < 4096 || blockSize > 1 << 20 || (blockSize & (blockSize - 1)) !== 0) {
    throw corrupt('block_size', `${blockSize} is not a power of two in 4 KiB..1 MiB`, 12);
  }
  if (blockLog > 20 || 1 << blockLog !== blockSize) throw corrupt('block_log', `${blockLog} does not match block size ${blockSize}`, 22);
  if (idCount < 1) throw corrupt('no_ids', 'must be at least 1', 26);
  if (inodes < 1) throw corrupt('inodes', 'must be at least 1', 4);
  if (bytesUsed < SUPERBLOCK_SIZE || bytesUsed > deviceSize) {
    throw corrupt('bytes_used', `${bytesUsed} is outside [${SUPERBLOCK_SIZE}, ${deviceSize}] (image truncated?)`, 40);
  }
  const table = (at: number, name: string, optional: boolean): number | undefined => {
    const raw = dv.getBigUint64(at, true);
    if (optional && raw === NO_TABLE) return undefined;
    const v = readU64(dv, at, 'squashfs', `superblock.${name}`);
    if (v < SUPERBLOCK_SIZE || v > bytesUsed) throw corrupt(name, `${v} is outside the image (bytes_used ${bytesUsed})`, at);
    return v;
  };
  const idTableStart = table(48, 'id_table_start', false) as number;
  const xattrIdTableStart = table(56, 'xattr_id_table_start', true);
  const inodeTableStart = table(64, 'inode_table_start', false) as number;
  const directoryTableStart = table(72, 'directory_table_start', false) as number;
  const fragmentTableStart = table(80, 'fragment_table_start', fragments === 0) ?? bytesUsed;
  const lookupTableStart = table(88, 'lookup_table_start', true);
  if (inodeTableStart >= directoryTableStart) throw corrupt('inode_table_start', `${inodeTableStart} is not before the directory table ${directoryTableStart}`, 64);
  if (Number(rootInode & 0xffffn) >= METADATA_SIZE) throw corrupt('root_inode', 'offset inside its metadata block is past 8192', 32);
  if (Number(rootInode >> 16n) >= directoryTableStart - inodeTableStart) throw corrupt('root_inode', 'points past the inode table', 32);
  if (fragments > Math.floor(bytesUsed / 16)) throw corrupt('fragments', `${fragments} entries cannot fit in the image`, 16);
  if (inodes > bytesUsed) throw corrupt('inodes', `${inodes} inodes cannot fit in the image`, 4);
  if (lookupTableStart === undefined && flags & Flags.exportable) {
    throw corrupt('lookup_table_start', 'missing although the exportable flag is set', 88);
  }
  return {
    inodes, mkfsTime, blockSize, fragments, compression, blockLog, flags, idCount, rootInode, bytesUsed,
    idTableStart, xattrIdTableStart, inodeTableStart, directoryTableStart, fragmentTableStart, lookupTableStart,
  };
}

export function encodeSuperblock(sb: Superblock): Uint8Array {
  const out = new Uint8Array(SUPERBLOCK_SIZE);
  const dv = view(out);
  dv.setUint32(0, SQUASHFS_MAGIC, true);
  dv.setUint32(4, sb.inodes, true);
  dv.setUint32(8, sb.mkfsTime, true);
  dv.setUint32(12, sb.blockSize, true);
  dv.setUint32(16, sb.fragments, true);
  dv.setUint16(20, sb.compression, true);
  dv.setUint16(22, sb.blockLog, true);
  dv.setUint16(24, sb.flags, true);
  dv.setUint16(26, sb.idCount, true);
  dv.setUint16(28, 4, true);
  dv.setUint16(30, 0, true);
  dv.setBigUint64(32, sb.rootInode, true);
  dv.setBigUint64(40, BigInt(sb.bytesUsed), true);
  dv.setBigUint64(48, BigInt(sb.idTableStart), true);
  dv.setBigUint64(56, sb.xattrIdTableStart === undefined ? NO_TABLE : BigInt(sb.xattrIdTableStart), true);
  dv.setBigUint64(64, BigInt(sb.inodeTableStart), true);
  dv.setBigUint64(72, BigInt(sb.directoryTableStart), true);
  dv.setBigUint64(80, BigInt(sb.fragmentTableStart), true);
  dv.setBigUint64(88, sb.lookupTableStart === undefined ? NO_TABLE : BigInt(sb.lookupTableStart), true);
  return out;
}
