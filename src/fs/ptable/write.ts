/**
 * Writing partition tables: a new GPT, a partition added in free space, the backup GPT moved to the
 * disk's end (what `sgdisk -e` does).
 *
 * Design notes
 * - Never a byte inside an existing partition: every write goes through `guardedWrite`, which refuses
 *   a range that meets a partition of the table (GPT entries, and hybrid MBR entries except one that
 *   starts at LBA 0 and so contains the tables by design, as an isohybrid image's whole-ISO entry does).
 * - One valid copy at every instant (assuming sector writes are atomic): both GPT copies are rewritten
 *   whole, entries then header, each followed by a flush; the copy the table was not read from goes
 *   first (normally the backup), so the copy in use stays valid until the other one is complete.
 *   `moveBackupToEnd` writes the new backup where nothing points yet, then switches the primary header
 *   (one sector) to it; the old backup is left where it was (it may lie in bytes an ISO image owns).
 * - The MBR sector is written last, in one 512-byte write: a protective 0xEE entry starting at LBA 1
 *   is stretched to the disk's end; hybrid entries are kept as they are.
 * - Deterministic: a new partition's unique GUID, unless given, is derived (SHA-256) from the disk GUID,
 *   the entry index and the start LBA; a new GPT's disk GUID must be given.
 * - The table passed in must be what readPartitionTable says now; it is re-read and compared first.
 */
import { createHash } from 'node:crypto';
import { ExitCode, LivestickError, UnsupportedFeatureError, UsageError } from '../../errors.ts';
import type { Disk } from '../../io/disk.ts';
import { equalBytes } from '../../io/bytes.ts';
import {
  encodeGptEntries,
  encodeGptEntry,
  encodeGptHeader,
  entryArrayCrc,
  entryArraySectors,
  GPT_DEFAULT_ENTRIES,
  GPT_ENTRY_SIZE,
  GPT_HEADER_SIZE,
  GPT_REVISION,
  UNUSED_ENTRY,
  type GptHeader,
} from './gpt.ts';
import { EMPTY_ENTRY, encodeMbr, isEmptyEntry, mbrEntry, type Mbr, type MbrEntry } from './mbr.ts';
import { readPartitionTable, type PartitionTable, type SectorSize } from './table.ts';
import { gptTypeOf, isGuid, mbrTypeOf, MBR_PROTECTIVE_TYPE, type PartitionTypeName } from './types.ts';

const MIB = 1 << 20;

export class NoSpaceForPartitionError extends LivestickError {
  constructor(message: string) {
    super('NO_SPACE', ExitCode.ioError, message);
  }
}

export interface NewPartition {
  /** Bytes, rounded up to whole sectors; omitted: the whole largest free gap. */
  sizeBytes?: number;
  type: PartitionTypeName | string | number;
  /** GPT only (up to 36 UTF-16 code units). */
  name?: string;
  /** GPT only; default derived deterministically. */
  uuid?: string;
  /** GPT only. */
  attributes?: bigint;
}

interface Range {
  readonly first: number;
  readonly last: number;
}

function occupied(table: PartitionTable): Range[] {
  const ranges = table.partitions.map((p) => ({ first: p.startLba, last: p.startLba + p.sectors - 1 }));
  if (table.kind === 'gpt' && table.mbr?.role === 'hybrid') {
    for (const e of table.mbr.value.entries) {
      if (!isEmptyEntry(e) && e.type !== MBR_PROTECTIVE_TYPE && e.startLba > 0) ranges.push({ first: e.startLba, last: e.startLba + e.sectors - 1 });
    }
  }
  return ranges;
}

async function guardedWrite(disk: Disk, table: PartitionTable, bytes: Uint8Array, offset: number): Promise<void> {
  const first = Math.floor(offset / table.sectorSize);
  const last = Math.floor((offset + bytes.byteLength - 1) / table.sectorSize);
  const hit = occupied(table).find((r) => r.first <= last && first <= r.last);
  if (hit) throw new UsageError(`refusing to write sectors ${first}-${last}: they belong to a partition (sectors ${hit.first}-${hit.last})`);
  await disk.write(bytes, offset);
}

async function assertCurrent(disk: Disk, table: PartitionTable): Promise<void> {
  const now = await readPartitionTable(disk, { sectorSize: table.sectorSize });
  const same =
    now.kind === table.kind &&
    now.partitions.length === table.partitions.length &&
    now.partitions.every((p, i) => p.startLba === table.partitions[i]!.startLba && p.sectors === table.partitions[i]!.sectors && p.type === table.partitions[i]!.type) &&
    (now.gpt === undefined || (table.gpt !== undefined && now.gpt.backupLba === table.gpt.backupLba && equalBytes(now.gpt.entryArray, table.gpt.entryArray)));
  if (!same) throw new UsageError('the partition table changed since it was read; read it again');
}

function protectiveEntry(diskSectors: number): MbrEntry {
  const e = mbrEntry(MBR_PROTECTIVE_TYPE, 1, Math.min(diskSectors - 1, 0xffffffff));
  return { ...e, startChs: [0x00, 0x02, 0x00] };
}

/** The MBR to leave beside a GPT on a disk of `diskSectors`: protective entries stretched, hybrids kept. */
function mbrBesideGpt(table: PartitionTable, diskSectors: number): Mbr {
  const current = table.mbr?.value;
  if (!current) return { bootCode: new Uint8Array(440), diskSignature: 0, reserved: 0, entries: [protectiveEntry(diskSectors), EMPTY_ENTRY, EMPTY_ENTRY, EMPTY_ENTRY] };
  const entries = current.entries.map((e) =>
    e.type === MBR_PROTECTIVE_TYPE && e.startLba === 1 && (table.mbr!.role === 'protective' || e.sectors >= (table.gpt?.backupLba ?? 0)) ? { ...protectiveEntry(diskSectors), status: e.status } : e,
  ) as unknown as Mbr['entries'];
  return { ...current, entries };
}

async function writeMbrSector(disk: Disk, table: PartitionTable, mbr: Mbr): Promise<void> {
  const bytes = encodeMbr(mbr);
  const old = table.mbr ? encodeMbr(table.mbr.value) : undefined;
  if (old && equalBytes(old, bytes)) return;
  await guardedWrite(disk, table, bytes, 0);
  await disk.flush();
}

interface GptLayout {
  readonly header: GptHeader;
  readonly array: Uint8Array;
  readonly primaryEntriesLba: number;
  readonly backupLba: number;
}

/** Writes both copies (see the design notes for the order). */
async function writeGptCopies(disk: Disk, table: PartitionTable, layout: GptLayout, primaryFirst: boolean): Promise<void> {
  const ss = table.sectorSize;
  const sectors = entryArraySectors(layout.header, ss);
  const padded = new Uint8Array(sectors * ss);
  padded.set(layout.array);
  const entriesCrc = entryArrayCrc(layout.array, layout.header);
  const backupEntriesLba = layout.backupLba - sectors;
  if (layout.primaryEntriesLba + sectors > layout.header.firstUsableLba || backupEntriesLba <= layout.header.lastUsableLba) {
    throw new UnsupportedFeatureError('gpt', 'layout', 'the entry arrays do not fit outside the usable range');
  }
  const primary: GptHeader = { ...layout.header, myLba: 1, alternateLba: layout.backupLba, entriesLba: layout.primaryEntriesLba, entriesCrc };
  const backup: GptHeader = { ...layout.header, myLba: layout.backupLba, alternateLba: 1, entriesLba: backupEntriesLba, entriesCrc };
  const copies = primaryFirst ? [primary, backup] : [backup, primary];
  for (const h of copies) {
    await guardedWrite(disk, table, padded, h.entriesLba * ss);
    await disk.flush();
    await guardedWrite(disk, table, encodeGptHeader(h, ss), h.myLba * ss);
    await disk.flush();
  }
}

function derivedGuid(...parts: (string | number)[]): string {
  const h = createHash('sha256').update(parts.join('/')).digest();
  h[6] = (h[6]! & 0x0f) | 0x40;
  h[8] = (h[8]! & 0x3f) | 0x80;
  const x = h.subarray(0, 16).toString('hex').toUpperCase();
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
}

export interface CreateGptOptions {
  sectorSize?: SectorSize;
  diskGuid: string;
  entryCount?: number;
}

/** Writes a new empty GPT (both copies) and a protective MBR over whatever the disk holds. */
export async function createGpt(disk: Disk, options: CreateGptOptions): Promise<PartitionTable> {
  const ss = options.sectorSize ?? 512;
  if (!isGuid(options.diskGuid)) throw new UsageError(`not a GUID: "${options.diskGuid}"`);
  const entryCount = options.entryCount ?? GPT_DEFAULT_ENTRIES;
  const diskSectors = Math.floor(disk.size / ss);
  const arraySectors = Math.ceil((entryCount * GPT_ENTRY_SIZE) / ss);
  const lastUsableLba = diskSectors - 2 - arraySectors;
  if (lastUsableLba < 2 + arraySectors) throw new NoSpaceForPartitionError(`a disk of ${disk.size} bytes is too small for a GPT`);
  const empty: PartitionTable = { kind: 'none', sectorSize: ss, diskSectors, partitions: [], problems: [] };
  const header: GptHeader = {
    revision: GPT_REVISION,
    headerSize: GPT_HEADER_SIZE,
    myLba: 1,
    alternateLba: diskSectors - 1,
    firstUsableLba: 2 + arraySectors,
    lastUsableLba,
    diskGuid: options.diskGuid.toUpperCase(),
    entriesLba: 2,
    entryCount,
    entrySize: GPT_ENTRY_SIZE,
    entriesCrc: 0,
    extra: new Uint8Array(0),
  };
  await writeGptCopies(disk, empty, { header, array: encodeGptEntries(new Array(entryCount).fill(UNUSED_ENTRY)), primaryEntriesLba: 2, backupLba: diskSectors - 1 }, true);
  await writeMbrSector(disk, empty, mbrBesideGpt(empty, diskSectors));
  return readPartitionTable(disk, { sectorSize: ss });
}

function freeGaps(used: Range[], first: number, last: number): Range[] {
  const gaps: Range[] = [];
  let at = first;
  for (const r of [...used].sort((a, b) => a.first - b.first)) {
    if (r.first > at) gaps.push({ first: at, last: Math.min(r.first - 1, last) });
    at = Math.max(at, r.last + 1);
    if (at > last) break;
  }
  if (at <= last) gaps.push({ first: at, last });
  return gaps.filter((g) => g.last >= g.first);
}

function placeIn(gaps: Range[], alignSectors: number, wantSectors: number | undefined): Range | undefined {
  const aligned = gaps
    .map((g) => ({ first: Math.ceil(g.first / alignSectors) * alignSectors, last: g.last }))
    .filter((g) => g.last >= g.first);
  if (wantSectors !== undefined) {
    const fit = aligned.find((g) => g.last - g.first + 1 >= wantSectors);
    return fit && { first: fit.first, last: fit.first + wantSectors - 1 };
  }
  let best: Range | undefined;
  for (const g of aligned) if (!best || g.last - g.first > best.last - best.first) best = g;
  return best;
}

function wantedSectors(sizeBytes: number | undefined, ss: number): number | undefined {
  if (sizeBytes === undefined) return undefined;
  if (!Number.isSafeInteger(sizeBytes) || sizeBytes <= 0) throw new UsageError(`not a partition size: ${sizeBytes}`);
  return Math.ceil(sizeBytes / ss);
}

/**
 * Adds a partition in free space, its start aligned to 1 MiB: in the first gap that fits `sizeBytes`,
 * or the whole largest gap. GPT: both copies rewritten, the protective MBR updated. MBR: a primary
 * entry in a free slot. Returns the table as it reads afterwards.
 */
export async function addPartition(disk: Disk, table: PartitionTable, spec: NewPartition): Promise<PartitionTable> {
  if (table.kind === 'none') throw new UnsupportedFeatureError('partition table', 'disk without a partition table', 'create one first (createGpt)');
  await assertCurrent(disk, table);
  const ss = table.sectorSize;
  const align = MIB / ss;
  const want = wantedSectors(spec.sizeBytes, ss);
  if (table.kind === 'mbr') {
    const mbr = table.mbr!.value;
    const slot = mbr.entries.findIndex(isEmptyEntry);
    if (slot < 0) throw new NoSpaceForPartitionError('all four MBR primary entries are in use');
    const type = mbrTypeOf(spec.type);
    const last = Math.min(table.diskSectors, 0xffffffff) - 1;
    const used = mbr.entries.filter((e) => !isEmptyEntry(e)).map((e) => ({ first: e.startLba, last: e.startLba + e.sectors - 1 }));
    const place = placeIn(freeGaps(used, align, last), align, want);
    if (!place) throw new NoSpaceForPartitionError(`no free gap of ${want === undefined ? 'any size' : `${want} sectors`} in the MBR table`);
    const entries = mbr.entries.map((e, i) => (i === slot ? mbrEntry(type, place.first, place.last - place.first + 1) : e)) as unknown as Mbr['entries'];
    await guardedWrite(disk, table, encodeMbr({ ...mbr, entries }), 0);
    await disk.flush();
    return readPartitionTable(disk, { sectorSize: ss });
  }
  const gpt = table.gpt!;
  const typeGuid = gptTypeOf(spec.type);
  if (spec.uuid !== undefined && !isGuid(spec.uuid)) throw new UsageError(`not a GUID: "${spec.uuid}"`);
  const slot = gpt.entries.findIndex((e, i) => e.typeGuid === UNUSED_ENTRY.typeGuid && !table.partitions.some((p) => p.index === i + 1));
  if (slot < 0) throw new NoSpaceForPartitionError(`all ${gpt.entries.length} GPT entries are in use`);
  const place = placeIn(freeGaps(occupied(table), gpt.firstUsableLba, gpt.lastUsableLba), align, want);
  if (!place) throw new NoSpaceForPartitionError(`no free gap of ${want === undefined ? 'any size' : `${want} sectors`} in the GPT's usable range`);
  const entry = {
    typeGuid,
    uniqueGuid: (spec.uuid ?? derivedGuid(gpt.diskGuid, slot, place.first)).toUpperCase(),
    firstLba: place.first,
    lastLba: place.last,
    attributes: spec.attributes ?? 0n,
    name: spec.name ?? '',
  };
  const array = gpt.entryArray.slice();
  array.set(encodeGptEntry(entry, gpt.header.entrySize), slot * gpt.header.entrySize);
  const primaryEntriesLba = gpt.used === 'primary' ? gpt.header.entriesLba : 2;
  await writeGptCopies(disk, table, { header: gpt.header, array, primaryEntriesLba, backupLba: gpt.backupLba }, gpt.used === 'backup');
  await writeMbrSector(disk, table, mbrBesideGpt(table, table.diskSectors));
  return readPartitionTable(disk, { sectorSize: ss });
}

/**
 * Moves the backup GPT (entries and header) to the disk's last sectors and updates the primary's
 * alternate and last usable LBAs, as `sgdisk -e` does; stretches a protective MBR entry.
 */
export async function moveBackupToEnd(disk: Disk, table: PartitionTable): Promise<PartitionTable> {
  if (table.kind !== 'gpt') throw new UnsupportedFeatureError('partition table', `${table.kind} table`, 'only a GPT has a backup copy');
  await assertCurrent(disk, table);
  const gpt = table.gpt!;
  const ss = table.sectorSize;
  const backupLba = table.diskSectors - 1;
  const lastUsableLba = backupLba - entryArraySectors(gpt.header, ss) - 1;
  if (gpt.backupAtEnd && gpt.primaryValid && gpt.backupValid && gpt.lastUsableLba === lastUsableLba) {
    await writeMbrSector(disk, table, mbrBesideGpt(table, table.diskSectors));
    return readPartitionTable(disk, { sectorSize: ss });
  }
  if (lastUsableLba < gpt.lastUsableLba) {
    const last = Math.max(...table.partitions.map((p) => p.startLba + p.sectors - 1), gpt.firstUsableLba);
    if (last > lastUsableLba) throw new NoSpaceForPartitionError(`partitions reach sector ${last}, past where the usable range would end (${lastUsableLba})`);
  }
  const header: GptHeader = { ...gpt.header, lastUsableLba };
  const primaryEntriesLba = gpt.used === 'primary' ? gpt.header.entriesLba : 2;
  await writeGptCopies(disk, table, { header, array: gpt.entryArray, primaryEntriesLba, backupLba }, false);
  await writeMbrSector(disk, table, mbrBesideGpt(table, table.diskSectors));
  return readPartitionTable(disk, { sectorSize: ss });
}
