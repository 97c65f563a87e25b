/**
 * The exFAT boot region: the main boot sector, eight extended boot sectors, the OEM parameters and a
 * reserved sector, then the boot checksum sector (sectors 0–11); the backup region repeats it at 12–23.
 *
 * Design notes
 * - The checksum covers sectors 0–10 except VolumeFlags (bytes 106–107) and PercentInUse (112), so
 *   those two are changed in place without touching anything else (main region only, as the spec asks).
 * - `readBootRegion` prefers the main region; a main region that fails its checksum falls back to the
 *   backup (reported in `usedBackup`), and only both failing is an error.
 */
import { CorruptImageError, UnsupportedFeatureError } from '../../errors.ts';
import { readU64, view } from '../../io/bytes.ts';
import { readAt, type Disk } from '../../io/disk.ts';

export const FORMAT = 'exfat';
const NAME = 'EXFAT   ';

export const VOLUME_FLAG_ACTIVE_FAT = 1;
export const VOLUME_FLAG_DIRTY = 2;
export const VOLUME_FLAG_MEDIA_FAILURE = 4;

export interface BootSector {
  readonly partitionOffset: number;
  /** In sectors. */
  readonly volumeLength: number;
  readonly fatOffset: number;
  readonly fatLength: number;
  readonly clusterHeapOffset: number;
  readonly clusterCount: number;
  readonly rootCluster: number;
  readonly serial: number;
  /** major << 8 | minor. */
  readonly revision: number;
  readonly volumeFlags: number;
  readonly bytesPerSectorShift: number;
  readonly sectorsPerClusterShift: number;
  readonly numberOfFats: number;
  readonly driveSelect: number;
  readonly percentInUse: number;
}

function bad(field: string, message: string, offset?: number): CorruptImageError {
  return new CorruptImageError(FORMAT, field, message, offset);
}

export function decodeBootSector(bytes: Uint8Array): BootSector {
  if (bytes.byteLength < 512) throw bad('boot sector', `${bytes.byteLength} bytes, need 512`);
  const dv = view(bytes);
  if (bytes[0] !== 0xeb || bytes[1] !== 0x76 || bytes[2] !== 0x90) throw bad('JumpBoot', 'not EB 76 90', 0);
  if (new TextDecoder('latin1').decode(bytes.subarray(3, 11)) !== NAME) throw bad('FileSystemName', 'not "EXFAT   "', 3);
  for (let i = 11; i < 64; i++) if (bytes[i] !== 0) throw bad('MustBeZero', 'not zero (a FAT BIOS parameter block?)', i);
  if (dv.getUint16(510, true) !== 0xaa55) throw bad('BootSignature', 'not AA55', 510);
  const b: BootSector = {
    partitionOffset: readU64(dv, 64, FORMAT, 'PartitionOffset'),
    volumeLength: readU64(dv, 72, FORMAT, 'VolumeLength'),
    fatOffset: dv.getUint32(80, true),
    fatLength: dv.getUint32(84, true),
    clusterHeapOffset: dv.getUint32(88, true),
    clusterCount: dv.getUint32(92, true),
    rootCluster: dv.getUint32(96, true),
    serial: dv.getUint32(100, true),
    revision: dv.getUint16(104, true),
    volumeFlags: dv.getUint16(106, true),
    bytesPerSectorShift: bytes[108]!,
    sectorsPerClusterShift: bytes[109]!,
    numberOfFats: bytes[110]!,
    driveSelect: bytes[111]!,
    percentInUse: bytes[112]!,
  };
  validateBootSector(b);
  return b;
}

function validateBootSector(b: BootSector): void {
  if (b.bytesPerSectorShift < 9 || b.bytesPerSectorShift > 12) throw bad('BytesPerSectorShift', `${b.bytesPerSectorShift} is outside 9..12`, 108);
  if (b.sectorsPerClusterShift > 25 - b.bytesPerSectorShift) throw bad('SectorsPerClusterShift', `${b.sectorsPerClusterShift} makes clusters above 32 MiB`, 109);
  if (b.revision >> 8 !== 1) throw new UnsupportedFeatureError(FORMAT, 'revision', `FileSystemRevision ${b.revision >> 8}.${b.revision & 0xff}`);
  if (b.numberOfFats !== 1 && b.numberOfFats !== 2) throw bad('NumberOfFats', `${b.numberOfFats} is neither 1 nor 2`, 110);
  if (b.percentInUse > 100 && b.percentInUse !== 0xff) throw bad('PercentInUse', `${b.percentInUse} is neither 0..100 nor FF`, 112);
  const sectorSize = 2 ** b.bytesPerSectorShift;
  if (b.volumeLength < 2 ** 20 / sectorSize) throw bad('VolumeLength', `${b.volumeLength} sectors is below 1 MiB`, 72);
  if (b.fatOffset < 24) throw bad('FatOffset', `${b.fatOffset} overlaps the boot regions`, 80);
  if (b.clusterCount < 1 || b.clusterCount > 0xfffffff5) throw bad('ClusterCount', `${b.clusterCount} is out of range`, 92);
  if (b.fatLength * sectorSize < (b.clusterCount + 2) * 4) throw bad('FatLength', `${b.fatLength} sectors cannot hold ${b.clusterCount + 2} entries`, 84);
  if (b.clusterHeapOffset < b.fatOffset + b.fatLength * b.numberOfFats) throw bad('ClusterHeapOffset', `${b.clusterHeapOffset} overlaps the FAT`, 88);
  if (b.clusterHeapOffset + b.clusterCount * 2 ** b.sectorsPerClusterShift > b.volumeLength) throw bad('ClusterCount', `the cluster heap ends past VolumeLength`, 92);
  if (b.rootCluster < 2 || b.rootCluster > b.clusterCount + 1) throw bad('FirstClusterOfRootDirectory', `${b.rootCluster} is not a cluster`, 96);
}

export function encodeBootSector(b: BootSector): Uint8Array {
  validateBootSector(b);
  const bytes = new Uint8Array(512);
  const dv = view(bytes);
  bytes.set([0xeb, 0x76, 0x90], 0);
  bytes.set(new TextEncoder().encode(NAME), 3);
  dv.setBigUint64(64, BigInt(b.partitionOffset), true);
  dv.setBigUint64(72, BigInt(b.volumeLength), true);
  dv.setUint32(80, b.fatOffset, true);
  dv.setUint32(84, b.fatLength, true);
  dv.setUint32(88, b.clusterHeapOffset, true);
  dv.setUint32(92, b.clusterCount, true);
  dv.setUint32(96, b.rootCluster, true);
  dv.setUint32(100, b.serial >>> 0, true);
  dv.setUint16(104, b.revision, true);
  dv.setUint16(106, b.volumeFlags, true);
  bytes[108] = b.bytesPerSectorShift;
  bytes[109] = b.sectorsPerClusterShift;
  bytes[110] = b.numberOfFats;
  bytes[111] = b.driveSelect;
  bytes[112] = b.percentInUse;
  dv.setUint16(510, 0xaa55, true);
  return bytes;
}

/** The boot checksum over sectors 0–10 of a region (VolumeFlags and PercentInUse skipped). */
export function bootChecksum(region: Uint8Array, sectorSize: number): number {
  let sum = 0;
  const end = 11 * sectorSize;
  for (let i = 0; i < end; i++) {
    if (i === 106 || i === 107 || i === 112) continue;
    sum = (((sum & 1) << 31) | (sum >>> 1)) + region[i]!;
    sum >>>= 0;
  }
  return sum;
}

/** A whole boot region (12 sectors) for `b`: extended boot sectors with signatures, OEM sector of FF, checksum. */
export function encodeBootRegion(b: BootSector): Uint8Array {
  const ss = 2 ** b.bytesPerSectorShift;
  const region = new Uint8Array(12 * ss);
  region.set(encodeBootSector(b), 0);
  for (let s = 1; s <= 8; s++) view(region).setUint32((s + 1) * ss - 4, 0xaa550000, true);
  region.fill(0xff, 9 * ss, 10 * ss);
  const sum = bootChecksum(region, ss);
  const dv = view(region);
  for (let i = 11 * ss; i < 12 * ss; i += 4) dv.setUint32(i, sum, true);
  return region;
}

function checkRegion(region: Uint8Array, ss: number, base: number): void {
  const dv = view(region);
  for (let s = 1; s <= 8; s++) {
    const at = (s + 1) * ss - 4;
    if (dv.getUint32(at, true) !== 0xaa550000) throw bad('ExtendedBootSignature', `sector ${s} lacks 0xAA550000`, base + at);
  }
  const sum = bootChecksum(region, ss);
  for (let i = 11 * ss; i < 12 * ss; i += 4) {
    if (dv.getUint32(i, true) !== sum) throw bad('BootChecksum', `stored ${dv.getUint32(i, true).toString(16)}, computed ${sum.toString(16)}`, base + i);
  }
}

async function readRegion(disk: Disk, base: number): Promise<BootSector> {
  if (disk.size < base + 512) throw bad('boot region', `the device (${disk.size} bytes) is too small`, base);
  const b = decodeBootSector(await readAt(disk, base, 512));
  const ss = 2 ** b.bytesPerSectorShift;
  if (disk.size < base + 12 * ss) throw bad('boot region', `the device (${disk.size} bytes) is too small`, base);
  checkRegion(await readAt(disk, base, 12 * ss), ss, base);
  return b;
}

export async function readBootRegion(disk: Disk): Promise<{ boot: BootSector; usedBackup: boolean }> {
  try {
    return { boot: await readRegion(disk, 0), usedBackup: false };
  } catch (mainErr) {
    if (!(mainErr instanceof CorruptImageError)) throw mainErr;
    // The backup region sits at sector 12 of whatever sector size it declares: try each.
    for (let shift = 9; shift <= 12; shift++) {
      try {
        const boot = await readRegion(disk, 12 * 2 ** shift);
        if (boot.bytesPerSectorShift === shift) return { boot, usedBackup: true };
      } catch {
        // next size
      }
    }
    throw mainErr;
  }
}
