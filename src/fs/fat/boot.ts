/**
 * The FAT boot sector (BPB for FAT12/16/32) and the FAT32 FSInfo sector: one decode/encode pair each,
 * plus the derived layout every other module works from.
 *
 * Design notes
 * - The FAT type follows Linux (fs/fat/inode.c): a zero 16-bit FAT size with a 32-bit one means
 *   FAT32; otherwise more than 4084 clusters means FAT16, else FAT12.
 * - Every field is checked before use: sizes and offsets against the disk size, the FAT against the
 *   cluster count it must describe, the FAT32 root cluster and FSInfo sector against their ranges.
 * - The dirty ("state") bit is BS_Reserved1 bit 0 (offset 0x25 on FAT12/16, 0x41 on FAT32), where Linux
 *   sets it while mounted and fsck.fat reports it.
 */
import { CorruptImageError, UnsupportedFeatureError } from '../../errors.ts';
import { view } from '../../io/bytes.ts';

export const FORMAT = 'fat';
export type FatType = 'fat12' | 'fat16' | 'fat32';

export const MAX_FAT12_CLUSTERS = 4084;
export const MAX_FAT16_CLUSTERS = 65524;
export const MAX_FAT32_CLUSTERS = 0x0ffffff5;

export interface BootSector {
  readonly oemName: string;
  readonly bytesPerSector: number;
  readonly sectorsPerCluster: number;
  readonly reservedSectors: number;
  readonly numFats: number;
  readonly rootEntries: number;
  readonly totalSectors: number;
  readonly media: number;
  readonly sectorsPerFat: number;
  readonly sectorsPerTrack: number;
  readonly heads: number;
  readonly hiddenSectors: number;
  /** FAT32 only (0 otherwise). */
  readonly rootCluster: number;
  readonly fsInfoSector: number;
  readonly backupBootSector: number;
  readonly extFlags: number;
  readonly driveNumber: number;
  readonly dirty: boolean;
  /** Whether the extended boot signature (0x29) is present: then serial, label and type are meaningful. */
  readonly hasExtendedSignature: boolean;
  readonly serial: number;
  readonly label: string;
  readonly fsTypeText: string;
  readonly type: FatType;
  /** Bytes 0..2 and the boot code are kept as they are on a rewrite. */
  readonly raw: Uint8Array;
}

export interface Layout {
  readonly type: FatType;
  readonly sectorSize: number;
  readonly clusterSize: number;
  readonly fatOffset: number;
  readonly fatBytes: number;
  readonly numFats: number;
  /** FAT12/16 root region (bytes); FAT32: 0. */
  readonly rootOffset: number;
  readonly rootBytes: number;
  readonly dataOffset: number;
  readonly clusterCount: number;
  readonly rootCluster: number;
  readonly totalBytes: number;
}

function bad(field: string, message: string, offset?: number): CorruptImageError {
  return new CorruptImageError(FORMAT, field, message, offset);
}

const isPow2 = (n: number): boolean => n > 0 && (n & (n - 1)) === 0;
const text = (b: Uint8Array): string => String.fromCharCode(...b);

export function dirtyBitOffset(type: FatType): number {
  return type === 'fat32' ? 0x41 : 0x25;
}

/** Decodes and validates the boot sector (its first 512 bytes) against a disk of `diskSize` bytes. */
export function decodeBootSector(bytes: Uint8Array, diskSize: number): BootSector {
  if (bytes.byteLength < 512) throw bad('boot sector', `needs 512 bytes, got ${bytes.byteLength}`);
  const dv = view(bytes);
  if (dv.getUint16(510, true) !== 0xaa55) throw bad('signature', 'the boot sector does not end in 55 AA', 510);
  if (bytes[0] !== 0xeb && bytes[0] !== 0xe9) throw bad('jump', `byte ${bytes[0]} is not a jump instruction (EB or E9)`, 0);
  const bytesPerSector = dv.getUint16(11, true);
  if (![512, 1024, 2048, 4096].includes(bytesPerSector)) throw bad('bytes per sector', `${bytesPerSector} is not 512, 1024, 2048 or 4096`, 11);
  const sectorsPerCluster = bytes[13]!;
  if (!isPow2(sectorsPerCluster)) throw bad('sectors per cluster', `${sectorsPerCluster} is not a power of two`, 13);
  if (sectorsPerCluster * bytesPerSector > 1 << 17) throw bad('sectors per cluster', `clusters of ${sectorsPerCluster * bytesPerSector} bytes exceed 128 KiB`, 13);
  const reservedSectors = dv.getUint16(14, true);
  if (reservedSectors === 0) throw bad('reserved sectors', 'is 0 (the boot sector itself is reserved)', 14);
  const numFats = bytes[16]!;
  if (numFats < 1 || numFats > 4) throw bad('number of FATs', `${numFats} is not 1 to 4`, 16);
  const rootEntries = dv.getUint16(17, true);
  const total16 = dv.getUint16(19, true);
  const media = bytes[21]!;
  if (media !== 0xf0 && media < 0xf8) throw bad('media', `0x${media.toString(16)} is not a FAT media byte`, 21);
  const fat16Size = dv.getUint16(22, true);
  const sectorsPerTrack = dv.getUint16(24, true);
  const heads = dv.getUint16(26, true);
  const hiddenSectors = dv.getUint32(28, true);
  const total32 = dv.getUint32(32, true);
  const totalSectors = total16 !== 0 ? total16 : total32;
  if (totalSectors === 0) throw bad('total sectors', 'both the 16- and 32-bit counts are 0', 19);
  if (total16 !== 0 && total32 !== 0 && total32 !== total16) throw bad('total sectors', `16-bit count ${total16} and 32-bit count ${total32} disagree`, 32);
  if (totalSectors * bytesPerSector > diskSize) {
    throw bad('total sectors', `${totalSectors} sectors of ${bytesPerSector} bytes exceed the device (${diskSize} bytes)`, total16 !== 0 ? 19 : 32);
  }
  const isFat32 = fat16Size === 0;
  let sectorsPerFat = fat16Size;
  let rootCluster = 0;
  let fsInfoSector = 0;
  let backupBootSector = 0;
  let extFlags = 0;
  let ext = 36;
  if (isFat32) {
    sectorsPerFat = dv.getUint32(36, true);
    if (sectorsPerFat === 0) throw bad('sectors per FAT', 'both the 16- and 32-bit sizes are 0', 36);
    extFlags = dv.getUint16(40, true);
    const version = dv.getUint16(42, true);
    if (version !== 0) throw new UnsupportedFeatureError(FORMAT, 'FAT32 version', `${version >> 8}.${version & 0xff} (only 0.0 exists)`);
    rootCluster = dv.getUint32(44, true);
    fsInfoSector = dv.getUint16(48, true);
    backupBootSector = dv.getUint16(50, true);
    if (rootEntries !== 0) throw bad('root entries', `FAT32 has no fixed root directory, yet ${rootEntries} entries are declared`, 17);
    ext = 64;
  } else if (rootEntries === 0) {
    throw bad('root entries', 'FAT12/16 needs a root directory region', 17);
  }
  const rootBytes = rootEntries * 32;
  const rootSectors = Math.ceil(rootBytes / bytesPerSector);
  const dataSector = reservedSectors + numFats * sectorsPerFat + rootSectors;
  if (dataSector >= totalSectors) throw bad('sectors per FAT', `the metadata (${dataSector} sectors) fills the whole volume (${totalSectors})`, isFat32 ? 36 : 22);
  const clusterCount = Math.floor((totalSectors - dataSector) / sectorsPerCluster);
  if (clusterCount === 0) throw bad('total sectors', 'no room for a single data cluster', 19);
  const type: FatType = isFat32 ? 'fat32' : clusterCount > MAX_FAT12_CLUSTERS ? 'fat16' : 'fat12';
  if (type === 'fat16' && clusterCount > MAX_FAT16_CLUSTERS) throw bad('sectors per FAT', `${clusterCount} clusters are too many for FAT16 and the FAT32 size field is not used`, 22);
  if (type === 'fat32' && clusterCount > MAX_FAT32_CLUSTERS) throw bad('total sectors', `${clusterCount} clusters exceed FAT32's maximum`, 32);
  const neededFatBytes = type === 'fat12' ? Math.ceil(((clusterCount + 2) * 3) / 2) : (clusterCount + 2) * (type === 'fat16' ? 2 : 4);
  if (sectorsPerFat * bytesPerSector < neededFatBytes) {
    throw bad('sectors per FAT', `${sectorsPerFat} sectors cannot describe ${clusterCount} clusters (${neededFatBytes} bytes needed)`, isFat32 ? 36 : 22);
  }
  if (isFat32) {
    if (rootCluster < 2 || rootCluster > clusterCount + 1) throw bad('root cluster', `${rootCluster} is outside clusters 2..${clusterCount + 1}`, 44);
    if (fsInfoSector !== 0 && fsInfoSector !== 0xffff && fsInfoSector >= reservedSectors) throw bad('FSInfo sector', `${fsInfoSector} is outside the ${reservedSectors} reserved sectors`, 48);
    if (backupBootSector !== 0 && backupBootSector !== 0xffff && backupBootSector >= reservedSectors) throw bad('backup boot sector', `${backupBootSector} is outside the ${reservedSectors} reserved sectors`, 50);
  }
  const hasExtendedSignature = bytes[ext + 2] === 0x29;
  return {
    oemName: text(bytes.subarray(3, 11)),
    bytesPerSector,
    sectorsPerCluster,
    reservedSectors,
    numFats,
    rootEntries,
    totalSectors,
    media,
    sectorsPerFat,
    sectorsPerTrack,
    heads,
    hiddenSectors,
    rootCluster,
    fsInfoSector: fsInfoSector === 0xffff ? 0 : fsInfoSector,
    backupBootSector: backupBootSector === 0xffff ? 0 : backupBootSector,
    extFlags,
    driveNumber: bytes[ext]!,
    dirty: (bytes[ext + 1]! & 1) !== 0,
    hasExtendedSignature,
    serial: hasExtendedSignature ? dv.getUint32(ext + 3, true) : 0,
    label: hasExtendedSignature ? text(bytes.subarray(ext + 7, ext + 18)) : '',
    fsTypeText: hasExtendedSignature ? text(bytes.subarray(ext + 18, ext + 26)) : '',
    type,
    raw: bytes.slice(0, 512),
  };
}

/** Encodes a boot sector: the BPB fields over `raw` (jump and boot code kept). */
export function encodeBootSector(bs: BootSector): Uint8Array {
  const out = new Uint8Array(512);
  out.set(bs.raw.subarray(0, 512));
  const dv = view(out);
  const put = (s: string, at: number, len: number): void => {
    for (let i = 0; i < len; i++) out[at + i] = i < s.length ? s.charCodeAt(i) & 0xff : 0x20;
  };
  put(bs.oemName, 3, 8);
  dv.setUint16(11, bs.bytesPerSector, true);
  out[13] = bs.sectorsPerCluster;
  dv.setUint16(14, bs.reservedSectors, true);
  out[16] = bs.numFats;
  dv.setUint16(17, bs.rootEntries, true);
  const small = bs.totalSectors < 0x10000 && bs.type !== 'fat32';
  dv.setUint16(19, small ? bs.totalSectors : 0, true);
  out[21] = bs.media;
  dv.setUint16(22, bs.type === 'fat32' ? 0 : bs.sectorsPerFat, true);
  dv.setUint16(24, bs.sectorsPerTrack, true);
  dv.setUint16(26, bs.heads, true);
  dv.setUint32(28, bs.hiddenSectors, true);
  dv.setUint32(32, small ? 0 : bs.totalSectors, true);
  let ext = 36;
  if (bs.type === 'fat32') {
    dv.setUint32(36, bs.sectorsPerFat, true);
    dv.setUint16(40, bs.extFlags, true);
    dv.setUint16(42, 0, true);
    dv.setUint32(44, bs.rootCluster, true);
    dv.setUint16(48, bs.fsInfoSector, true);
    dv.setUint16(50, bs.backupBootSector, true);
    out.fill(0, 52, 64);
    ext = 64;
  }
  out[ext] = bs.driveNumber;
  out[ext + 1] = (out[ext + 1]! & ~1) | (bs.dirty ? 1 : 0);
  if (bs.hasExtendedSignature) {
    out[ext + 2] = 0x29;
    dv.setUint32(ext + 3, bs.serial, true);
    put(bs.label, ext + 7, 11);
    put(bs.fsTypeText, ext + 18, 8);
  }
  dv.setUint16(510, 0xaa55, true);
  return out;
}

export function layoutOf(bs: BootSector): Layout {
  const sectorSize = bs.bytesPerSector;
  const fatOffset = bs.reservedSectors * sectorSize;
  const fatBytes = bs.sectorsPerFat * sectorSize;
  const rootOffset = fatOffset + bs.numFats * fatBytes;
  const rootBytes = bs.rootEntries * 32;
  const dataOffset = rootOffset + Math.ceil(rootBytes / sectorSize) * sectorSize;
  const clusterSize = bs.sectorsPerCluster * sectorSize;
  const clusterCount = Math.floor((bs.totalSectors * sectorSize - dataOffset) / clusterSize);
  return {
    type: bs.type,
    sectorSize,
    clusterSize,
    fatOffset,
    fatBytes,
    numFats: bs.numFats,
    rootOffset: bs.type === 'fat32' ? 0 : rootOffset,
    rootBytes: bs.type === 'fat32' ? 0 : rootBytes,
    dataOffset,
    clusterCount,
    rootCluster: bs.rootCluster,
    totalBytes: bs.totalSectors * sectorSize,
  };
}

/** FSInfo: the FAT32 hint sector with the free-cluster count and the next-free hint (0xFFFFFFFF: unknown). */
export interface FsInfo {
  readonly freeCount: number;
  readonly nextFree: number;
}

export const FSINFO_UNKNOWN = 0xffffffff;

export function decodeFsInfo(bytes: Uint8Array): FsInfo {
  if (bytes.byteLength < 512) throw bad('FSInfo', `needs 512 bytes, got ${bytes.byteLength}`);
  const dv = view(bytes);
  if (dv.getUint32(0, true) !== 0x41615252) throw bad('FSInfo lead signature', 'is not RRaA', 0);
  if (dv.getUint32(484, true) !== 0x61417272) throw bad('FSInfo signature', 'is not rrAa', 484);
  if (dv.getUint32(508, true) !== 0xaa550000) throw bad('FSInfo trail signature', 'is not 00 00 55 AA', 508);
  return { freeCount: dv.getUint32(488, true), nextFree: dv.getUint32(492, true) };
}

export function encodeFsInfo(info: FsInfo, sectorSize = 512): Uint8Array {
  const out = new Uint8Array(sectorSize);
  const dv = view(out);
  dv.setUint32(0, 0x41615252, true);
  dv.setUint32(484, 0x61417272, true);
  dv.setUint32(488, info.freeCount, true);
  dv.setUint32(492, info.nextFree, true);
  dv.setUint32(508, 0xaa550000, true);
  return out;
}
