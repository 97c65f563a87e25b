/**
 * The ext2/3/4 superblock (1024 bytes at byte 1024 of the filesystem). `decodeSuperblock` validates
 * every field the rest of the layer relies on; the decoded value keeps the raw bytes so that
 * `encodeSuperblock` rewrites the fields it knows and preserves everything else.
 */
import { CorruptImageError, UnsupportedFeatureError } from '../../errors.ts';
import { view } from '../../io/bytes.ts';
import { crc32cUpdate } from './crc.ts';

export const FORMAT = 'ext4';
export const SUPERBLOCK_OFFSET = 1024;
export const SUPERBLOCK_SIZE = 1024;
export const EXT4_MAGIC = 0xef53;

export const Compat = {
  dirPrealloc: 0x1,
  imagicInodes: 0x2,
  hasJournal: 0x4,
  extAttr: 0x8,
  resizeInode: 0x10,
  dirIndex: 0x20,
  lazyBg: 0x40,
  excludeBitmap: 0x100,
  sparseSuper2: 0x200,
  fastCommit: 0x400,
  stableInodes: 0x800,
  orphanFile: 0x1000,
} as const;

export const Incompat = {
  compression: 0x1,
  filetype: 0x2,
  recover: 0x4,
  journalDev: 0x8,
  metaBg: 0x10,
  extents: 0x40,
  bit64: 0x80,
  mmp: 0x100,
  flexBg: 0x200,
  eaInode: 0x400,
  dirdata: 0x1000,
  csumSeed: 0x2000,
  largedir: 0x4000,
  inlineData: 0x8000,
  encrypt: 0x10000,
  casefold: 0x20000,
} as const;

export const RoCompat = {
  sparseSuper: 0x1,
  largeFile: 0x2,
  btreeDir: 0x4,
  hugeFile: 0x8,
  gdtCsum: 0x10,
  dirNlink: 0x20,
  extraIsize: 0x40,
  hasSnapshot: 0x80,
  quota: 0x100,
  bigalloc: 0x200,
  metadataCsum: 0x400,
  replica: 0x800,
  readonly: 0x1000,
  project: 0x2000,
  sharedBlocks: 0x4000,
  verity: 0x8000,
  orphanPresent: 0x10000,
} as const;

const FEATURE_NAMES: [number, Record<string, number>][] = [
  [0, { dir_prealloc: 0x1, imagic_inodes: 0x2, has_journal: 0x4, ext_attr: 0x8, resize_inode: 0x10, dir_index: 0x20, lazy_bg: 0x40, exclude_bitmap: 0x100, sparse_super2: 0x200, fast_commit: 0x400, stable_inodes: 0x800, orphan_file: 0x1000 }],
  [1, { compression: 0x1, filetype: 0x2, needs_recovery: 0x4, journal_dev: 0x8, meta_bg: 0x10, extent: 0x40, '64bit': 0x80, mmp: 0x100, flex_bg: 0x200, ea_inode: 0x400, dirdata: 0x1000, metadata_csum_seed: 0x2000, large_dir: 0x4000, inline_data: 0x8000, encrypt: 0x10000, casefold: 0x20000 }],
  [2, { sparse_super: 0x1, large_file: 0x2, btree_dir: 0x4, huge_file: 0x8, uninit_bg: 0x10, dir_nlink: 0x20, extra_isize: 0x40, snapshot_bitmap: 0x80, quota: 0x100, bigalloc: 0x200, metadata_csum: 0x400, replica: 0x800, read_only: 0x1000, project: 0x2000, shared_blocks: 0x4000, verity: 0x8000, orphan_present: 0x10000 }],
];

/** Incompatible features this reader understands; anything else is refused. */
const KNOWN_INCOMPAT = Incompat.filetype | Incompat.recover | Incompat.metaBg | Incompat.extents | Incompat.bit64 | Incompat.mmp | Incompat.flexBg | Incompat.csumSeed | Incompat.largedir | Incompat.inlineData | Incompat.encrypt | Incompat.casefold | Incompat.eaInode;

export interface Superblock {
  readonly inodesCount: number;
  readonly blocksCount: number;
  readonly reservedBlocksCount: number;
  readonly freeBlocksCount: number;
  readonly freeInodesCount: number;
  readonly firstDataBlock: number;
  readonly logBlockSize: number;
  readonly blockSize: number;
  readonly logClusterSize: number;
  readonly blocksPerGroup: number;
  readonly clustersPerGroup: number;
  readonly inodesPerGroup: number;
  readonly mtime: number;
  readonly wtime: number;
  readonly mountCount: number;
  readonly maxMountCount: number;
  readonly state: number;
  readonly errors: number;
  readonly minorRevLevel: number;
  readonly lastCheck: number;
  readonly checkInterval: number;
  readonly creatorOs: number;
  readonly revLevel: number;
  readonly defResuid: number;
  readonly defResgid: number;
  readonly firstIno: number;
  readonly inodeSize: number;
  readonly blockGroupNr: number;
  readonly featureCompat: number;
  readonly featureIncompat: number;
  readonly featureRoCompat: number;
  readonly uuid: Uint8Array;
  readonly volumeName: string;
  readonly lastMounted: string;
  readonly reservedGdtBlocks: number;
  readonly journalUuid: Uint8Array;
  readonly journalInum: number;
  readonly journalDev: number;
  readonly lastOrphan: number;
  readonly hashSeed: readonly number[];
  readonly defHashVersion: number;
  readonly jnlBackupType: number;
  readonly descSize: number;
  readonly defaultMountOpts: number;
  readonly firstMetaBg: number;
  readonly mkfsTime: number;
  readonly minExtraIsize: number;
  readonly wantExtraIsize: number;
  readonly flags: number;
  readonly logGroupsPerFlex: number;
  readonly checksumType: number;
  readonly kbytesWritten: number;
  readonly backupBgs: readonly [number, number];
  readonly lpfIno: number;
  readonly checksumSeedField: number;
  readonly orphanFileInum: number;
  readonly checksum: number;
  /** The 1024 raw bytes (fields this module does not model round-trip through encode). */
  readonly raw: Uint8Array;
}

function corrupt(field: string, message: string, at: number): CorruptImageError {
  return new CorruptImageError(FORMAT, `superblock.${field}`, message, SUPERBLOCK_OFFSET + at);
}

function text(bytes: Uint8Array): string {
  const end = bytes.indexOf(0);
  return new TextDecoder('utf-8').decode(end < 0 ? bytes : bytes.subarray(0, end));
}

export function decodeSuperblock(bytes: Uint8Array, deviceSize?: number): Superblock {
  if (bytes.byteLength < SUPERBLOCK_SIZE) throw corrupt('size', `only ${bytes.byteLength} bytes`, 0);
  const raw = bytes.slice(0, SUPERBLOCK_SIZE);
  const dv = view(raw);
  const u8 = (o: number) => dv.getUint8(o);
  const u16 = (o: number) => dv.getUint16(o, true);
  const u32 = (o: number) => dv.getUint32(o, true);
  const magic = u16(56);
  if (magic !== EXT4_MAGIC) throw corrupt('s_magic', `0x${magic.toString(16)} is not 0xef53: not an ext2/3/4 filesystem`, 56);
  const featureCompat = u32(92);
  const featureIncompat = u32(96);
  const featureRoCompat = u32(100);
  const revLevel = u32(76);
  if (revLevel > 1) throw new UnsupportedFeatureError(FORMAT, 'revision', `s_rev_level ${revLevel}`);
  const unknownIncompat = featureIncompat & ~KNOWN_INCOMPAT;
  if (unknownIncompat !== 0) throw new UnsupportedFeatureError(FORMAT, 'incompat features', `0x${unknownIncompat.toString(16)}`);
  if (featureIncompat & Incompat.journalDev) throw new UnsupportedFeatureError(FORMAT, 'external journal device');
  if (featureRoCompat & RoCompat.bigalloc) throw new UnsupportedFeatureError(FORMAT, 'bigalloc');
  const is64 = (featureIncompat & Incompat.bit64) !== 0;
  const logBlockSize = u32(24);
  if (logBlockSize > 6) throw corrupt('s_log_block_size', `${logBlockSize} gives a block size above 64 KiB`, 24);
  const blockSize = 1024 << logBlockSize;
  const logClusterSize = u32(28);
  const blocksLo = u32(4);
  const blocksHi = is64 ? u32(336) : 0;
  const blocksCount = blocksHi * 2 ** 32 + blocksLo;
  if (!Number.isSafeInteger(blocksCount * blockSize)) throw corrupt('s_blocks_count', `${blocksCount} blocks is too large`, 4);
  if (blocksCount === 0) throw corrupt('s_blocks_count', 'zero blocks', 4);
  if (deviceSize !== undefined && blocksCount * blockSize > deviceSize) {
    throw corrupt('s_blocks_count', `${blocksCount} blocks of ${blockSize} bytes exceed the device size ${deviceSize}`, 4);
  }
  const firstDataBlock = u32(20);
  if (firstDataBlock !== (blockSize === 1024 ? 1 : 0)) throw corrupt('s_first_data_block', `${firstDataBlock} is wrong for ${blockSize}-byte blocks`, 20);
  const blocksPerGroup = u32(32);
  if (blocksPerGroup < 8 || blocksPerGroup > blockSize * 8 || blocksPerGroup % 8 !== 0) throw corrupt('s_blocks_per_group', `${blocksPerGroup}`, 32);
  const clustersPerGroup = u32(36);
  if (logClusterSize !== logBlockSize || clustersPerGroup !== blocksPerGroup) {
    if (revLevel > 0 || clustersPerGroup !== 0) throw corrupt('s_clusters_per_group', `${clustersPerGroup} (cluster size differs from block size without bigalloc)`, 36);
  }
  const inodesPerGroup = u32(40);
  if (inodesPerGroup === 0 || inodesPerGroup > blockSize * 8 || inodesPerGroup % 8 !== 0) throw corrupt('s_inodes_per_group', `${inodesPerGroup}`, 40);
  const groups = Math.ceil((blocksCount - firstDataBlock) / blocksPerGroup);
  const inodesCount = u32(0);
  if (inodesCount !== groups * inodesPerGroup && !(groups * inodesPerGroup > 0xffffffff)) {
    throw corrupt('s_inodes_count', `${inodesCount} is not ${groups} groups × ${inodesPerGroup}`, 0);
  }
  const inodeSize = revLevel === 0 ? 128 : u16(88);
  if (inodeSize < 128 || inodeSize > blockSize || (inodeSize & (inodeSize - 1)) !== 0) throw corrupt('s_inode_size', `${inodeSize}`, 88);
  const firstIno = revLevel === 0 ? 11 : u32(84);
  if (firstIno < 11 || firstIno > inodesCount) throw corrupt('s_first_ino', `${firstIno}`, 84);
  let descSize = 32;
  if (is64) {
    descSize = u16(254);
    if (descSize < 64 || descSize > 1024 || (descSize & (descSize - 1)) !== 0) throw corrupt('s_desc_size', `${descSize} with 64bit`, 254);
  }
  const checksumType = u8(373);
  if (featureRoCompat & RoCompat.metadataCsum && checksumType !== 1) throw corrupt('s_checksum_type', `${checksumType} (only 1 = crc32c exists)`, 373);
  const logGroupsPerFlex = u8(372);
  if (featureIncompat & Incompat.flexBg && logGroupsPerFlex > 31) throw corrupt('s_log_groups_per_flex', `${logGroupsPerFlex}`, 372);
  const reservedGdtBlocks = u16(206);
  if (reservedGdtBlocks > blockSize / 4) throw corrupt('s_reserved_gdt_blocks', `${reservedGdtBlocks}`, 206);
  const journalInum = u32(224);
  if (journalInum > inodesCount) throw corrupt('s_journal_inum', `${journalInum}`, 224);
  const hashSeed = [u32(236), u32(240), u32(244), u32(248)];
  return {
    inodesCount,
    blocksCount,
    reservedBlocksCount: (is64 ? u32(340) : 0) * 2 ** 32 + u32(8),
    freeBlocksCount: (is64 ? u32(344) : 0) * 2 ** 32 + u32(12),
    freeInodesCount: u32(16),
    firstDataBlock,
    logBlockSize,
    blockSize,
    logClusterSize,
    blocksPerGroup,
    clustersPerGroup,
    inodesPerGroup,
    mtime: u32(44),
    wtime: u32(48),
    mountCount: u16(52),
    maxMountCount: dv.getInt16(54, true),
    state: u16(58),
    errors: u16(60),
    minorRevLevel: u16(62),
    lastCheck: u32(64),
    checkInterval: u32(68),
    creatorOs: u32(72),
    revLevel,
    defResuid: u16(80),
    defResgid: u16(82),
    firstIno,
    inodeSize,
    blockGroupNr: u16(90),
    featureCompat,
    featureIncompat,
    featureRoCompat,
    uuid: raw.slice(104, 120),
    volumeName: text(raw.subarray(120, 136)),
    lastMounted: text(raw.subarray(136, 200)),
    reservedGdtBlocks,
    journalUuid: raw.slice(208, 224),
    journalInum,
    journalDev: u32(228),
    lastOrphan: u32(232),
    hashSeed,
    defHashVersion: u8(252),
    jnlBackupType: u8(253),
    descSize,
    defaultMountOpts: u32(256),
    firstMetaBg: u32(260),
    mkfsTime: u32(264),
    minExtraIsize: u16(348),
    wantExtraIsize: u16(350),
    flags: u32(352),
    logGroupsPerFlex,
    checksumType,
    kbytesWritten: Number(dv.getBigUint64(376, true) & 0x1fffffffffffffn),
    backupBgs: [u32(588), u32(592)],
    lpfIno: u32(616),
    checksumSeedField: u32(624),
    orphanFileInum: u32(640),
    checksum: u32(1020),
    raw,
  };
}

/** Writes the modelled fields over `sb.raw` and recomputes the checksum when metadata_csum is on. */
export function encodeSuperblock(sb: Superblock): Uint8Array {
  const out = sb.raw.slice();
  const dv = view(out);
  const is64 = (sb.featureIncompat & Incompat.bit64) !== 0;
  const lo = (v: number) => v % 2 ** 32;
  const hi = (v: number) => Math.floor(v / 2 ** 32);
  dv.setUint32(0, sb.inodesCount, true);
  dv.setUint32(4, lo(sb.blocksCount), true);
  dv.setUint32(8, lo(sb.reservedBlocksCount), true);
  dv.setUint32(12, lo(sb.freeBlocksCount), true);
  dv.setUint32(16, sb.freeInodesCount, true);
  dv.setUint32(20, sb.firstDataBlock, true);
  dv.setUint32(24, sb.logBlockSize, true);
  dv.setUint32(28, sb.logClusterSize, true);
  dv.setUint32(32, sb.blocksPerGroup, true);
  dv.setUint32(36, sb.clustersPerGroup, true);
  dv.setUint32(40, sb.inodesPerGroup, true);
  dv.setUint32(44, sb.mtime, true);
  dv.setUint32(48, sb.wtime, true);
  dv.setUint16(52, sb.mountCount, true);
  dv.setInt16(54, sb.maxMountCount, true);
  dv.setUint16(56, EXT4_MAGIC, true);
  dv.setUint16(58, sb.state, true);
  dv.setUint16(60, sb.errors, true);
  dv.setUint16(62, sb.minorRevLevel, true);
  dv.setUint32(64, sb.lastCheck, true);
  dv.setUint32(68, sb.checkInterval, true);
  dv.setUint32(72, sb.creatorOs, true);
  dv.setUint32(76, sb.revLevel, true);
  dv.setUint16(80, sb.defResuid, true);
  dv.setUint16(82, sb.defResgid, true);
  dv.setUint32(84, sb.firstIno, true);
  dv.setUint16(88, sb.inodeSize, true);
  dv.setUint16(90, sb.blockGroupNr, true);
  dv.setUint32(92, sb.featureCompat, true);
  dv.setUint32(96, sb.featureIncompat, true);
  dv.setUint32(100, sb.featureRoCompat, true);
  out.set(sb.uuid.subarray(0, 16), 104);
  const name = new TextEncoder().encode(sb.volumeName).subarray(0, 16);
  out.fill(0, 120, 136);
  out.set(name, 120);
  out.fill(0, 136, 200);
  out.set(new TextEncoder().encode(sb.lastMounted).subarray(0, 63), 136);
  dv.setUint16(206, sb.reservedGdtBlocks, true);
  out.set(sb.journalUuid.subarray(0, 16), 208);
  dv.setUint32(224, sb.journalInum, true);
  dv.setUint32(228, sb.journalDev, true);
  dv.setUint32(232, sb.lastOrphan, true);
  sb.hashSeed.forEach((v, i) => dv.setUint32(236 + 4 * i, v, true));
  dv.setUint8(252, sb.defHashVersion);
  dv.setUint8(253, sb.jnlBackupType);
  dv.setUint16(254, is64 ? sb.descSize : 0, true);
  dv.setUint32(256, sb.defaultMountOpts, true);
  dv.setUint32(260, sb.firstMetaBg, true);
  dv.setUint32(264, sb.mkfsTime, true);
  if (is64) {
    dv.setUint32(336, hi(sb.blocksCount), true);
    dv.setUint32(340, hi(sb.reservedBlocksCount), true);
    dv.setUint32(344, hi(sb.freeBlocksCount), true);
  }
  dv.setUint16(348, sb.minExtraIsize, true);
  dv.setUint16(350, sb.wantExtraIsize, true);
  dv.setUint32(352, sb.flags, true);
  dv.setUint8(372, sb.logGroupsPerFlex);
  dv.setUint8(373, sb.checksumType);
  dv.setBigUint64(376, BigInt(sb.kbytesWritten), true);
  dv.setUint32(588, sb.backupBgs[0], true);
  dv.setUint32(592, sb.backupBgs[1], true);
  dv.setUint32(616, sb.lpfIno, true);
  dv.setUint32(624, sb.checksumSeedField, true);
  dv.setUint32(640, sb.orphanFileInum, true);
  if (sb.featureRoCompat & RoCompat.metadataCsum) dv.setUint32(1020, superblockChecksum(out), true);
  return out;
}

export function superblockChecksum(raw: Uint8Array): number {
  return crc32cUpdate(0xffffffff, raw, 0, 1020);
}

/**
 * The largest i_size a file may have (the kernel's ext4_max_size / ext4_max_bitmap_size): extents
 * address 2^32 - 1 logical blocks; block maps 12 + p + p^2 + p^3 blocks (p pointers per block); and
 * without huge_file, i_blocks (2^32 - 1 sectors) caps the blocks a file may own. A larger i_size can
 * only come from corruption. (Lenient by the few tree blocks the kernel also subtracts.)
 */
export function maxFileSize(sb: Pick<Superblock, 'blockSize' | 'featureRoCompat'>, extents: boolean): number {
  const bs = sb.blockSize;
  const perBlock = bs / 4;
  const addressable = extents ? 2 ** 32 - 1 : 12 + perBlock + perBlock ** 2 + perBlock ** 3;
  const ownable = sb.featureRoCompat & RoCompat.hugeFile ? 2 ** 48 - 1 : Math.floor((2 ** 32 - 1) / (bs / 512));
  return Math.min(addressable, ownable) * bs;
}

export function groupCount(sb: Superblock): number {
  return Math.ceil((sb.blocksCount - sb.firstDataBlock) / sb.blocksPerGroup);
}

export function featureNames(sb: Superblock): string[] {
  const words = [sb.featureCompat, sb.featureIncompat, sb.featureRoCompat];
  const names: string[] = [];
  for (const [w, table] of FEATURE_NAMES) {
    let left = words[w]!;
    for (const [name, bit] of Object.entries(table)) {
      if (left & bit) {
        names.push(name);
        left &= ~bit;
      }
    }
    for (let b = 0; b < 32; b++) if (left & (1 << b)) names.push(`FEATURE_${'CIR'[w]}${b}`);
  }
  return names;
}

export function formatUuid(uuid: Uint8Array): string {
  const h = Buffer.from(uuid).toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

export function parseUuid(textUuid: string): Uint8Array {
  const hex = textUuid.replace(/-/g, '');
  if (!/^[0-9a-fA-F]{32}$/.test(hex)) throw new RangeError(`not a UUID: "${textUuid}"`);
  return Uint8Array.from(Buffer.from(hex, 'hex'));
}
