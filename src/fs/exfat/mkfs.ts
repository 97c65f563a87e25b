/**
 * mkfsExfat: a fresh exFAT volume laid out as exfatprogs' mkfs.exfat lays it out.
 *
 * Design notes
 * - Cluster size by volume size: up to 256 MiB 4 KiB, up to 32 GiB 32 KiB, above 128 KiB. 512-byte
 *   sectors. The FAT starts at 1 MiB (or one cluster, if larger); its length is (ClusterCount + 2) × 4
 *   bytes rounded up to a cluster, and the cluster heap starts at the next 1 MiB boundary, so
 *   ClusterCount and FatLength are found together (a fixed point, reached in two or three rounds).
 * - Cluster 2 holds the allocation bitmap, then the up-case table (ours, compressed; upcase.ts), then
 *   one cluster of root directory with the label, bitmap and up-case entries; each has a FAT chain.
 * - Deterministic: the serial, when not given, is a hash of the size and label (mkfs.exfat uses the
 *   clock); only metadata is written (the FAT region, the three first objects, both boot regions).
 */
import { UsageError } from '../../errors.ts';
import type { Disk } from '../../io/disk.ts';
import { encodeBootRegion, type BootSector } from './boot.ts';
import { LABEL_UNITS, encodeBitmapEntry, encodeLabelEntry, encodeUpcaseEntry, invalidNameReason } from './entries.ts';
import { defaultUpcaseMappings, encodeUpcaseTable, upcaseChecksum } from './upcase.ts';

const MiB = 1024 * 1024;
const SECTOR_SHIFT = 9;

export interface MkfsExfatOptions {
  /** Up to 11 UTF-16 units. */
  label?: string;
  /** VolumeSerialNumber (blkid shows it as XXXX-XXXX); default derived from the size and label. */
  serial?: number;
  /** Bytes, a power of two from 512 to 32 MiB; default by volume size as mkfs.exfat chooses. */
  clusterSize?: number;
}

export interface ExfatLayout {
  readonly boot: BootSector;
  readonly clusterSize: number;
  readonly bitmapBytes: number;
  readonly upcaseCluster: number;
  readonly rootCluster: number;
}

export function defaultClusterSize(volumeBytes: number): number {
  if (volumeBytes <= 256 * MiB) return 4096;
  if (volumeBytes <= 32 * 1024 * MiB) return 32 * 1024;
  return 128 * 1024;
}

const roundUp = (n: number, to: number): number => Math.ceil(n / to) * to;

function defaultSerial(size: number, label: string): number {
  let h = 0x811c9dc5;
  for (const ch of `${size}:${label}`) h = Math.imul(h ^ ch.charCodeAt(0), 0x01000193) >>> 0;
  return h;
}

export function exfatLayout(volumeBytes: number, options: MkfsExfatOptions = {}, upcaseBytes = encodeUpcaseTable(defaultUpcaseMappings()).byteLength): ExfatLayout {
  const ss = 2 ** SECTOR_SHIFT;
  const size = Math.floor(volumeBytes / ss) * ss;
  const clusterSize = options.clusterSize ?? defaultClusterSize(size);
  if (!Number.isInteger(Math.log2(clusterSize)) || clusterSize < ss || clusterSize > 32 * MiB) {
    throw new UsageError(`exfat: cluster size ${clusterSize} is not a power of two from 512 bytes to 32 MiB`);
  }
  const align = Math.max(MiB, clusterSize);
  const fatOffset = align;
  let clusterCount = Math.floor(size / clusterSize);
  let fatBytes = 0;
  let heap = 0;
  for (let round = 0; round < 8; round++) {
    fatBytes = roundUp((clusterCount + 2) * 4, clusterSize);
    heap = roundUp(fatOffset + fatBytes, align);
    const next = Math.floor((size - heap) / clusterSize);
    if (next === clusterCount) break;
    clusterCount = next;
  }
  const bitmapBytes = Math.ceil(clusterCount / 8);
  const bitmapClusters = Math.ceil(bitmapBytes / clusterSize);
  const upcaseClusters = Math.ceil(upcaseBytes / clusterSize);
  if (clusterCount < bitmapClusters + upcaseClusters + 2 || size - heap < clusterSize * 4) {
    throw new UsageError(`exfat: ${size} bytes is too small for an exFAT volume with ${clusterSize}-byte clusters`);
  }
  if (clusterCount > 0xfffffff5) throw new UsageError(`exfat: ${clusterCount} clusters is too many; choose a larger cluster size`);
  const upcaseCluster = 2 + bitmapClusters;
  const rootCluster = upcaseCluster + upcaseClusters;
  const used = rootCluster - 1;
  const boot: BootSector = {
    partitionOffset: 0,
    volumeLength: size / ss,
    fatOffset: fatOffset / ss,
    fatLength: fatBytes / ss,
    clusterHeapOffset: heap / ss,
    clusterCount,
    rootCluster,
    serial: (options.serial ?? defaultSerial(size, options.label ?? '')) >>> 0,
    revision: 0x0100,
    volumeFlags: 0,
    bytesPerSectorShift: SECTOR_SHIFT,
    sectorsPerClusterShift: Math.log2(clusterSize / ss),
    numberOfFats: 1,
    driveSelect: 0x80,
    percentInUse: Math.floor((used * 100) / clusterCount),
  };
  return { boot, clusterSize, bitmapBytes, upcaseCluster, rootCluster };
}

/** Formats `disk` as exFAT (the whole Disk; put a SliceDisk in front for a partition). */
export async function mkfsExfat(disk: Disk, options: MkfsExfatOptions = {}): Promise<ExfatLayout> {
  const label = options.label ?? '';
  if (label.length > LABEL_UNITS) throw new UsageError(`exfat: the label "${label}" is longer than ${LABEL_UNITS} UTF-16 units`);
  if (label !== '' && invalidNameReason(label)) throw new UsageError(`exfat: the label "${label}": ${invalidNameReason(label)}`);
  const upcase = encodeUpcaseTable(defaultUpcaseMappings());
  const layout = exfatLayout(disk.size, options, upcase.byteLength);
  const { boot, clusterSize } = layout;
  const ss = 2 ** boot.bytesPerSectorShift;
  const heap = boot.clusterHeapOffset * ss;
  const clusterAt = (c: number): number => heap + (c - 2) * clusterSize;

  // Zero everything before the heap except what the boot regions overwrite, then the three objects.
  const zeros = new Uint8Array(MiB);
  for (let at = 0; at < heap; at += zeros.byteLength) await disk.write(zeros.subarray(0, Math.min(zeros.byteLength, heap - at)), at);

  const bitmapClusters = layout.upcaseCluster - 2;
  const upcaseClusters = layout.rootCluster - layout.upcaseCluster;
  const used = bitmapClusters + upcaseClusters + 1;
  const bitmap = new Uint8Array(bitmapClusters * clusterSize);
  for (let i = 0; i < used; i++) bitmap[i >>> 3]! |= 1 << (i & 7);
  await disk.write(bitmap, clusterAt(2));
  const upcaseArea = new Uint8Array(upcaseClusters * clusterSize);
  upcaseArea.set(upcase);
  await disk.write(upcaseArea, clusterAt(layout.upcaseCluster));
  const root = new Uint8Array(clusterSize);
  root.set(encodeLabelEntry(label), 0);
  root.set(encodeBitmapEntry({ flags: 0, firstCluster: 2, dataLength: layout.bitmapBytes }), 32);
  root.set(encodeUpcaseEntry({ checksum: upcaseChecksum(upcase), firstCluster: layout.upcaseCluster, dataLength: upcase.byteLength }), 64);
  await disk.write(root, clusterAt(layout.rootCluster));

  const fatHead = new Uint8Array((used + 2) * 4);
  const dv = new DataView(fatHead.buffer);
  dv.setUint32(0, 0xfffffff8, true);
  dv.setUint32(4, 0xffffffff, true);
  const chain = (first: number, count: number): void => {
    for (let c = first; c < first + count; c++) dv.setUint32(c * 4, c === first + count - 1 ? 0xffffffff : c + 1, true);
  };
  chain(2, bitmapClusters);
  chain(layout.upcaseCluster, upcaseClusters);
  chain(layout.rootCluster, 1);
  await disk.write(fatHead, boot.fatOffset * ss);

  const region = encodeBootRegion(boot);
  await disk.write(region, 12 * ss);
  await disk.flush();
  await disk.write(region, 0);
  await disk.flush();
  return layout;
}
