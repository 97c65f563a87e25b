/**
 * mkfsFat: formats a Disk as FAT12/16/32 with the layout mkfs.fat (dosfstools 4.2) picks by default.
 *
 * Design notes
 * - From mkfs.fat: 512-byte sectors, its fake CHS geometry with the sector count rounded down to whole
 *   tracks, 2 FATs, media 0xF8 (floppy sizes 360K..2.88M get their classic
 *   geometry), 512 root entries (FAT12/16), 1 reserved sector (FAT32: 32), FAT32 by default at 512 MiB
 *   and up, FAT32 cluster size by volume size (≤ 260 MiB: 512 B, ≤ 8 GiB: 4 KiB, ≤ 16 GiB: 8 KiB,
 *   ≤ 32 GiB: 16 KiB, above: 32 KiB); FAT12/16 start at 4 sectors per cluster and double until the
 *   cluster count fits, choosing FAT16 when it gives more clusters. Above 8192 sectors the reserved
 *   area, the FATs and the root directory are aligned to the cluster size.
 * - Only metadata is written: boot sector (FAT32: its backup at sector 6, FSInfo at 1 and its copy at 7),
 *   zeroed FATs with their first entries, a zeroed root directory, the volume label entry. Data clusters
 *   are left as they are (a sparse image stays sparse).
 * - The serial defaults to mkfs.fat's formula on the clock (seconds << 20 | microseconds), so a fixed
 *   `now` gives identical bytes.
 */
import { UnsupportedFeatureError } from '../../errors.ts';
import type { Disk } from '../../io/disk.ts';
import { FORMAT, encodeBootSector, encodeFsInfo, type BootSector, type FatType } from './boot.ts';
import { ATTR_VOLUME, encodeShortEntry, toFatStamp } from './dirent.ts';

export interface MkfsFatOptions {
  /** Up to 11 characters (ASCII, no *?.,;:/\|+=<>[]"), stored as given. */
  label?: string;
  /** The volume serial (blkid's UUID "ABCD-1234"); default from `now` as mkfs.fat does. */
  serial?: number;
  type?: FatType;
  /** Clock for the serial and the label's timestamps (ms since the epoch). */
  now?: number;
  timeZoneOffsetMinutes?: number;
}

export interface MkfsFatResult {
  readonly type: FatType;
  readonly sectorsPerCluster: number;
  readonly clusterCount: number;
  readonly sectorsPerFat: number;
  readonly reservedSectors: number;
  readonly rootEntries: number;
  readonly totalSectors: number;
  readonly serial: number;
}

const SECTOR = 512;
const MAX_CLUST_12 = 4084;
const MAX_CLUST_16 = 65524;
const MAX_CLUST_32 = 0x0ffffff5;
const MIN_CLUST_32 = 65529;
const FAT12_THRESHOLD = 4085;
const NR_FATS = 2;

const FLOPPIES: Record<number, { spt: number; heads: number; media: number; cluster: number; root: number }> = {
  360: { spt: 9, heads: 2, media: 0xfd, cluster: 2, root: 112 },
  720: { spt: 9, heads: 2, media: 0xf9, cluster: 2, root: 112 },
  1200: { spt: 15, heads: 2, media: 0xf9, cluster: 1, root: 224 },
  1440: { spt: 18, heads: 2, media: 0xf0, cluster: 1, root: 224 },
  2880: { spt: 36, heads: 2, media: 0xf0, cluster: 2, root: 224 },
};

interface Geometry {
  type: FatType;
  cluster: number;
  clusters: number;
  fatLength: number;
  reserved: number;
  rootEntries: number;
  numSectors: number;
  media: number;
  spt: number;
  heads: number;
}

function refuse(message: string): never {
  throw new UnsupportedFeatureError(FORMAT, 'volume size', message);
}

/** The layout mkfs.fat would choose for a device of `size` bytes. */
export function chooseGeometry(size: number, type?: FatType): Geometry {
  // No real geometry for an image or a stick: mkfs.fat's fake one (SD card CHS below 256 MiB of
  // sectors, LBA-assist above), and the sector count rounded down to whole tracks.
  const sectors = Math.floor(size / SECTOR);
  let heads: number;
  let spt: number;
  if (sectors <= 524288) {
    heads = sectors <= 32768 ? 2 : sectors <= 65536 ? 4 : sectors <= 262144 ? 8 : 16;
    spt = sectors <= 4096 ? 16 : 32;
  } else {
    heads = sectors <= 16 * 63 * 1024 ? 16 : sectors <= 32 * 63 * 1024 ? 32 : sectors <= 64 * 63 * 1024 ? 64 : sectors <= 128 * 63 * 1024 ? 128 : 255;
    spt = 63;
  }
  let media = 0xf8;
  let cluster = 4;
  let rootEntries = 512;
  const floppy = FLOPPIES[Math.floor(size / 1024)];
  if (floppy) ({ spt, heads, media, cluster, root: rootEntries } = floppy);
  let sizeFat = type === 'fat12' ? 12 : type === 'fat16' ? 16 : type === 'fat32' ? 32 : 0;
  const byUser = sizeFat !== 0;
  if (!sizeFat && size >= 512 * 2 ** 20) sizeFat = 32;
  if (sizeFat === 32) {
    const mb = Math.floor(size / 2 ** 20);
    cluster = mb > 32 * 1024 ? 64 : mb > 16 * 1024 ? 32 : mb > 8 * 1024 ? 16 : mb > 260 ? 8 : 1;
    rootEntries = 0;
  }
  let reserved = sizeFat === 32 ? 32 : 1;
  const numSectors = Math.floor(Math.min(sectors, 0xffffffff) / spt) * spt;
  const align = numSectors > 8192;
  const alignTo = (n: number, c: number): number => (align ? Math.ceil(n / c) * c : n);
  const rootSectors = Math.ceil((rootEntries * 32) / SECTOR);
  let clust12 = 0, clust16 = 0, clust32 = 0, len12 = 0, len16 = 0, len32 = 0;
  for (; cluster <= 128; cluster *= 2) {
    const fatdata32 = numSectors - alignTo(reserved, cluster);
    const fatdata1216 = fatdata32 - alignTo(rootSectors, cluster);
    clust12 = Math.floor((2 * (fatdata1216 * SECTOR + NR_FATS * 3)) / (2 * cluster * SECTOR + NR_FATS * 3));
    len12 = alignTo(Math.ceil((((clust12 + 2) * 3 + 1) >> 1) / SECTOR), cluster);
    clust12 = Math.floor((fatdata1216 - NR_FATS * len12) / cluster);
    const max12 = Math.min(Math.floor((len12 * 2 * SECTOR) / 3), MAX_CLUST_12);
    if (clust12 > max12 - 2) clust12 = 0;

    clust16 = Math.floor((fatdata1216 * SECTOR + NR_FATS * 4) / (cluster * SECTOR + NR_FATS * 2));
    len16 = alignTo(Math.ceil(((clust16 + 2) * 2) / SECTOR), cluster);
    clust16 = Math.floor((fatdata1216 - NR_FATS * len16) / cluster);
    const max16 = Math.min(Math.floor((len16 * SECTOR) / 2), MAX_CLUST_16);
    if (clust16 > max16 - 2) clust16 = 0;
    if (clust16 < FAT12_THRESHOLD && !(byUser && sizeFat === 16)) clust16 = 0;

    clust32 = Math.floor((fatdata32 * SECTOR + NR_FATS * 8) / (cluster * SECTOR + NR_FATS * 4));
    len32 = alignTo(Math.ceil(((clust32 + 2) * 4) / SECTOR), cluster);
    clust32 = Math.floor((fatdata32 - NR_FATS * len32) / cluster);
    const max32 = Math.min(Math.floor((len32 * SECTOR) / 4), MAX_CLUST_32);
    if (clust32 > 0 && clust32 < MIN_CLUST_32 && !(byUser && sizeFat === 32)) clust32 = 0;
    if (clust32 > max32) clust32 = 0;

    if ((clust12 > 0 && (sizeFat === 0 || sizeFat === 12)) || (clust16 > 0 && (sizeFat === 0 || sizeFat === 16)) || (clust32 > 0 && sizeFat === 32)) break;
  }
  if (cluster > 128) refuse(`${size} bytes cannot hold a FAT${sizeFat || ''} filesystem mkfs.fat would make`);
  if (!sizeFat) sizeFat = clust16 > clust12 ? 16 : 12;
  const t: FatType = sizeFat === 12 ? 'fat12' : sizeFat === 16 ? 'fat16' : 'fat32';
  const clusters = t === 'fat12' ? clust12 : t === 'fat16' ? clust16 : clust32;
  const fatLength = t === 'fat12' ? len12 : t === 'fat16' ? len16 : len32;
  // Below 4085 clusters every reader (Linux, Windows, fsck.fat) takes the volume for FAT12, whatever was asked for.
  if (t === 'fat16' && clusters < FAT12_THRESHOLD) {
    refuse(byUser ? `${size} bytes give only ${clusters} clusters: too few for FAT16 (at least ${FAT12_THRESHOLD}; readers would take it for FAT12) — make it larger, or FAT12` : 'an unfortunate size: too big for FAT12, too small for FAT16 (make it a bit smaller)');
  }
  if (clusters <= 0) refuse(`${size} bytes are too small for ${t}`);
  reserved = alignTo(reserved, cluster);
  if (align && t !== 'fat32') rootEntries = alignTo(rootSectors, cluster) * (SECTOR >> 5);
  return { type: t, cluster, clusters, fatLength, reserved, rootEntries: t === 'fat32' ? 0 : rootEntries, numSectors, media, spt, heads };
}

function checkLabel(label: string): string {
  if (label.length > 11) throw new UnsupportedFeatureError(FORMAT, 'volume label', `"${label}" is longer than 11 characters`);
  if (/^ /.test(label)) throw new UnsupportedFeatureError(FORMAT, 'volume label', 'cannot start with a space');
  for (const ch of label) {
    const c = ch.charCodeAt(0);
    if (c < 0x20 || c > 0x7e || '*?.,;:/\\|+=<>[]"'.includes(ch)) throw new UnsupportedFeatureError(FORMAT, 'volume label', `"${label}" contains ${JSON.stringify(ch)}`);
  }
  return label.padEnd(11, ' ');
}

const ZERO_CHUNK = 1 << 20;

async function zero(disk: Disk, offset: number, length: number): Promise<void> {
  const buf = new Uint8Array(Math.min(ZERO_CHUNK, length));
  for (let at = 0; at < length; at += buf.byteLength) {
    const n = Math.min(buf.byteLength, length - at);
    await disk.write(n === buf.byteLength ? buf : buf.subarray(0, n), offset + at);
  }
}

/** A tiny boot program: print nothing, halt. (Not bootable; BIOSes move on via int 18h.) */
const BOOT_STUB = [0xcd, 0x18, 0xf4, 0xeb, 0xfd];

export async function mkfsFat(disk: Disk, options: MkfsFatOptions = {}): Promise<MkfsFatResult> {
  const g = chooseGeometry(disk.size, options.type);
  const label = checkLabel(options.label ?? '');
  const now = options.now ?? Date.now();
  const serial = (options.serial ?? ((Math.floor(now / 1000) << 20) | ((now % 1000) * 1000))) >>> 0;
  const raw = new Uint8Array(512);
  const bootCodeAt = g.type === 'fat32' ? 90 : 62;
  raw.set([0xeb, bootCodeAt - 2, 0x90], 0);
  raw.set(BOOT_STUB, bootCodeAt);
  const bs: BootSector = {
    oemName: 'MSWIN4.1',
    bytesPerSector: SECTOR,
    sectorsPerCluster: g.cluster,
    reservedSectors: g.reserved,
    numFats: NR_FATS,
    rootEntries: g.rootEntries,
    totalSectors: g.numSectors,
    media: g.media,
    sectorsPerFat: g.fatLength,
    sectorsPerTrack: g.spt,
    heads: g.heads,
    hiddenSectors: 0,
    rootCluster: g.type === 'fat32' ? 2 : 0,
    fsInfoSector: g.type === 'fat32' ? 1 : 0,
    backupBootSector: g.type === 'fat32' ? 6 : 0,
    extFlags: 0,
    driveNumber: g.media === 0xf8 ? 0x80 : 0,
    dirty: false,
    hasExtendedSignature: true,
    serial,
    label: label.trim() === '' ? 'NO NAME    ' : label,
    fsTypeText: g.type === 'fat12' ? 'FAT12   ' : g.type === 'fat16' ? 'FAT16   ' : 'FAT32   ',
    type: g.type,
    raw,
  };
  const fatBytes = g.fatLength * SECTOR;
  const fatOffset = g.reserved * SECTOR;
  const rootOffset = fatOffset + NR_FATS * fatBytes;
  const rootBytes = g.type === 'fat32' ? g.cluster * SECTOR : Math.ceil((g.rootEntries * 32) / SECTOR) * SECTOR;
  // Metadata first zeroed (reserved area, FATs, root), then filled in; the boot sector last.
  await zero(disk, 0, rootOffset + rootBytes);
  const first = new Uint8Array(12);
  if (g.type === 'fat12') first.set([g.media, 0xff, 0xff]);
  else if (g.type === 'fat16') first.set([g.media, 0xff, 0xff, 0xff]);
  else first.set([g.media, 0xff, 0xff, 0x0f, 0xff, 0xff, 0xff, 0x0f, 0xff, 0xff, 0xff, 0x0f]);
  for (let copy = 0; copy < NR_FATS; copy++) await disk.write(first.subarray(0, g.type === 'fat32' ? 12 : g.type === 'fat16' ? 4 : 3), fatOffset + copy * fatBytes);
  if (label.trim() !== '') {
    const t = toFatStamp(now, options.timeZoneOffsetMinutes ?? 0);
    const entry = encodeShortEntry({
      name: Uint8Array.from(label, (c) => c.charCodeAt(0)),
      attr: ATTR_VOLUME,
      ntCase: 0,
      createTenths: 0,
      createTime: 0,
      createDate: 0,
      accessDate: 0,
      firstCluster: 0,
      writeTime: t.time,
      writeDate: t.date,
      size: 0,
    });
    await disk.write(entry, rootOffset);
  }
  const boot = encodeBootSector(bs);
  if (g.type === 'fat32') {
    const info = encodeFsInfo({ freeCount: g.clusters - 1, nextFree: 3 });
    await disk.write(info, SECTOR);
    await disk.write(boot, 6 * SECTOR);
    await disk.write(info, 7 * SECTOR);
  }
  await disk.write(boot, 0);
  await disk.flush();
  return {
    type: g.type,
    sectorsPerCluster: g.cluster,
    clusterCount: g.clusters,
    sectorsPerFat: g.fatLength,
    reservedSectors: g.reserved,
    rootEntries: g.rootEntries,
    totalSectors: g.numSectors,
    serial,
  };
}
