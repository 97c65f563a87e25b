/** The EROFS superblock (at byte 1024, 128 + 16 × sb_extslots bytes): decode (validating every field), encode, checksum. */
import { CorruptImageError, UnsupportedFeatureError } from '../../errors.ts';
import { toSafeNumber, view } from '../../io/bytes.ts';
import { crc32cUpdate } from '../ext4/crc.ts';

export const EROFS_MAGIC = 0xe0f5e1e2;
export const SUPER_OFFSET = 1024;
export const SUPERBLOCK_BASE_SIZE = 128;
export const EXTSLOT_SIZE = 16;

export const Compat = {
  sbChecksum: 0x1,
  mtime: 0x2,
  xattrFilter: 0x4,
  sharedEaInMetabox: 0x8,
  plainXattrPrefix: 0x10,
  ishareXattrs: 0x20,
} as const;

export const Incompat = {
  lz4ZeroPadding: 0x1,
  comprCfgs: 0x2,
  bigPcluster: 0x2,
  chunkedFile: 0x4,
  deviceTable: 0x8,
  comprHead2: 0x8,
  ztailpacking: 0x10,
  fragments: 0x20,
  dedupe: 0x20,
  xattrPrefixes: 0x40,
  bit48: 0x80,
  metabox: 0x100,
} as const;

/** Incompat bits this reader implements (48BIT and METABOX are rejected by name). */
const KNOWN_INCOMPAT = 0x7f;

export interface Superblock {
  readonly checksum: number;
  readonly featureCompat: number;
  readonly blkszbits: number;
  readonly extSlots: number;
  readonly rootNid: number;
  readonly inos: number;
  readonly epoch: number;
  readonly fixedNsec: number;
  readonly blocks: number;
  readonly metaBlkaddr: number;
  readonly xattrBlkaddr: number;
  readonly uuid: Uint8Array;
  readonly volumeName: Uint8Array;
  readonly featureIncompat: number;
  /** available_compr_algs (COMPR_CFGS) or lz4_max_distance. */
  readonly u1: number;
  readonly extraDevices: number;
  readonly devtSlotoff: number;
  readonly dirblkbits: number;
  readonly xattrPrefixCount: number;
  readonly xattrPrefixStart: number;
  readonly packedNid: number;
  readonly xattrFilterReserved: number;
  readonly buildTime: number;
}

function corrupt(field: string, message: string, at: number): CorruptImageError {
  return new CorruptImageError('erofs', `superblock.${field}`, message, SUPER_OFFSET + at);
}

export function superblockSize(extSlots: number): number {
  return SUPERBLOCK_BASE_SIZE + extSlots * EXTSLOT_SIZE;
}

/** The bytes the checksum covers: from byte 1024 to the end of its block (the whole block when blocks are ≤ 1 KiB). */
export function checksumSpan(blkszbits: number): number {
  const bs = 2 ** blkszbits;
  return bs > SUPER_OFFSET ? bs - SUPER_OFFSET : bs;
}

/** crc32c (seed ~0, no final inversion) of the span with the checksum field taken as zero. */
export function superblockChecksum(span: Uint8Array): number {
  const copy = Uint8Array.from(span);
  view(copy).setUint32(4, 0, true);
  return crc32cUpdate(0xffffffff, copy);
}

/**
 * Decodes and validates a superblock. `bytes` start at byte 1024 of the image and run at least to
 * the end of the superblock (to the end of block 0 when the checksum is to be verified).
 */
export function decodeSuperblock(bytes: Uint8Array, deviceSize: number): Superblock {
  if (bytes.byteLength < SUPERBLOCK_BASE_SIZE) throw corrupt('size', `${bytes.byteLength} bytes after byte 1024, smaller than a superblock`, 0);
  const dv = view(bytes);
  const magic = dv.getUint32(0, true);
  if (magic !== EROFS_MAGIC) throw corrupt('magic', `0x${magic.toString(16)} is not the EROFS magic`, 0);
  const checksum = dv.getUint32(4, true);
  const featureCompat = dv.getUint32(8, true);
  const blkszbits = dv.getUint8(12);
  const extSlots = dv.getUint8(13);
  const featureIncompat = dv.getUint32(80, true);
  if (blkszbits < 9 || blkszbits > 16) throw corrupt('blkszbits', `${blkszbits} is outside 9..16 (512 B .. 64 KiB blocks)`, 12);
  if (featureIncompat & Incompat.bit48) throw new UnsupportedFeatureError('erofs', '48BIT', '48-bit block addresses');
  if (featureIncompat & Incompat.metabox) throw new UnsupportedFeatureError('erofs', 'METABOX', 'metadata in a metabox inode');
  const unknown = featureIncompat & ~KNOWN_INCOMPAT;
  if (unknown !== 0) throw new UnsupportedFeatureError('erofs', `INCOMPAT_0x${unknown.toString(16)}`, 'unknown incompatible feature bits');
  const size = superblockSize(extSlots);
  if (size > bytes.byteLength) throw corrupt('sb_extslots', `${extSlots} slots make a ${size}-byte superblock, past the ${bytes.byteLength} bytes read`, 13);
  const blockSize = 2 ** blkszbits;
  if (featureCompat & Compat.sbChecksum) {
    const span = checksumSpan(blkszbits);
    if (bytes.byteLength < span) throw corrupt('checksum', `needs ${span} bytes after byte 1024, only ${bytes.byteLength} read`, 4);
    const actual = superblockChecksum(bytes.subarray(0, span));
    if (actual !== checksum) throw corrupt('checksum', `crc32c is 0x${actual.toString(16)}, the superblock says 0x${checksum.toString(16)}`, 4);
  }
  const rootNid = dv.getUint16(14, true);
  const inos = toSafeNumber(dv.getBigUint64(16, true), 'erofs', 'superblock.inos', SUPER_OFFSET + 16);
  const epoch = toSafeNumber(dv.getBigUint64(24, true), 'erofs', 'superblock.epoch', SUPER_OFFSET + 24);
  const fixedNsec = dv.getUint32(32, true);
  const blocks = dv.getUint32(36, true);
  const metaBlkaddr = dv.getUint32(40, true);
  const xattrBlkaddr = dv.getUint32(44, true);
  const u1 = dv.getUint16(84, true);
  const extraDevices = dv.getUint16(86, true);
  const devtSlotoff = dv.getUint16(88, true);
  const dirblkbits = dv.getUint8(90);
  const xattrPrefixCount = dv.getUint8(91);
  const xattrPrefixStart = dv.getUint32(92, true);
  const packedNid = toSafeNumber(dv.getBigUint64(96, true), 'erofs', 'superblock.packed_nid', SUPER_OFFSET + 96);
  const xattrFilterReserved = dv.getUint8(104);
  const buildTime = dv.getUint32(108, true);
  if (fixedNsec >= 1e9) throw corrupt('fixed_nsec', `${fixedNsec} is not below 10^9`, 32);
  const imageBlocks = Math.floor(deviceSize / blockSize);
  if (blocks > imageBlocks) throw corrupt('blocks', `${blocks} blocks of ${blockSize} bytes do not fit in the ${deviceSize}-byte image (truncated?)`, 36);
  if (metaBlkaddr >= imageBlocks) throw corrupt('meta_blkaddr', `block ${metaBlkaddr} is past the image (${imageBlocks} blocks)`, 40);
  if (xattrBlkaddr >= imageBlocks) throw corrupt('xattr_blkaddr', `block ${xattrBlkaddr} is past the image (${imageBlocks} blocks)`, 44);
  const metaSlots = ((imageBlocks - metaBlkaddr) * blockSize) / 32;
  if (rootNid >= metaSlots) throw corrupt('root_nid', `nid ${rootNid} is past the image`, 14);
  if (packedNid !== 0 && packedNid >= metaSlots) throw corrupt('packed_nid', `nid ${packedNid} is past the image`, 96);
  if (dirblkbits !== 0) throw new UnsupportedFeatureError('erofs', 'DIRBLKBITS', `directory blocks of 2^${dirblkbits} file-system blocks`);
  if (xattrPrefixCount > 0 && !(featureIncompat & Incompat.xattrPrefixes)) throw corrupt('xattr_prefix_count', `${xattrPrefixCount} long prefixes without the XATTR_PREFIXES feature`, 91);
  if (xattrPrefixCount > 0x80) throw corrupt('xattr_prefix_count', `${xattrPrefixCount} is more than the 128 a name index can select`, 91);
  if (xattrPrefixStart * 4 > deviceSize && xattrPrefixCount > 0 && packedNid === 0) throw corrupt('xattr_prefix_start', `byte ${xattrPrefixStart * 4} is past the image`, 92);
  return {
    checksum, featureCompat, blkszbits, extSlots, rootNid, inos, epoch, fixedNsec, blocks, metaBlkaddr, xattrBlkaddr,
    uuid: bytes.slice(48, 64), volumeName: bytes.slice(64, 80), featureIncompat, u1, extraDevices, devtSlotoff,
    dirblkbits, xattrPrefixCount, xattrPrefixStart, packedNid, xattrFilterReserved, buildTime,
  };
}

/** The superblock's bytes (128 + 16 × extSlots); the checksum field is written as given (see superblockChecksum). */
export function encodeSuperblock(sb: Superblock): Uint8Array {
  const out = new Uint8Array(superblockSize(sb.extSlots));
  const dv = view(out);
  dv.setUint32(0, EROFS_MAGIC, true);
  dv.setUint32(4, sb.checksum, true);
  dv.setUint32(8, sb.featureCompat, true);
  dv.setUint8(12, sb.blkszbits);
  dv.setUint8(13, sb.extSlots);
  dv.setUint16(14, sb.rootNid, true);
  dv.setBigUint64(16, BigInt(sb.inos), true);
  dv.setBigUint64(24, BigInt(sb.epoch), true);
  dv.setUint32(32, sb.fixedNsec, true);
  dv.setUint32(36, sb.blocks, true);
  dv.setUint32(40, sb.metaBlkaddr, true);
  dv.setUint32(44, sb.xattrBlkaddr, true);
  out.set(sb.uuid.subarray(0, 16), 48);
  out.set(sb.volumeName.subarray(0, 16), 64);
  dv.setUint32(80, sb.featureIncompat, true);
  dv.setUint16(84, sb.u1, true);
  dv.setUint16(86, sb.extraDevices, true);
  dv.setUint16(88, sb.devtSlotoff, true);
  dv.setUint8(90, sb.dirblkbits);
  dv.setUint8(91, sb.xattrPrefixCount);
  dv.setUint32(92, sb.xattrPrefixStart, true);
  dv.setBigUint64(96, BigInt(sb.packedNid), true);
  dv.setUint8(104, sb.xattrFilterReserved);
  dv.setUint32(108, sb.buildTime, true);
  return out;
}

/** The volume name as text (NUL-padded), undefined when empty. */
export function volumeLabel(sb: Superblock): string | undefined {
  const end = sb.volumeName.indexOf(0);
  const text = Buffer.from(end < 0 ? sb.volumeName : sb.volumeName.subarray(0, end)).toString('utf8');
  return text === '' ? undefined : text;
}

export function uuidText(sb: Superblock): string | undefined {
  if (sb.uuid.every((b) => b === 0)) return undefined;
  const h = Buffer.from(sb.uuid).toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}
