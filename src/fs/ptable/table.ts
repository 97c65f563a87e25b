/**
 * readPartitionTable: what a disk's partition table says, as one typed readonly value.
 *
 * Design notes
 * - GPT first: a header at LBA 1 of 512-byte sectors, then of 4096-byte sectors (or only the size the
 *   caller names). The primary copy is used when its header and entry array check out; otherwise the
 *   backup, found through the primary's alternate LBA, the disk's last sector, or the end of the
 *   protective MBR entry (where it sits when an ISO was dd'd onto a larger stick). A copy that fails, a
 *   backup away from the disk's end, copies that disagree, partitions outside the usable range or the
 *   disk, and overlaps are `problems`, not errors. It throws only when a GPT signature is there but no
 *   copy is usable.
 * - A usable MBR without a 0xEE entry is the table even when a GPT header is there (Linux does the
 *   same; isohybrid images look like that), with a problem saying so.
 * - MBR otherwise: 0x55AA, boot indicators 0x00/0x80, and not a filesystem boot sector (a FAT, exFAT
 *   or NTFS "superfloppy" also ends in 0x55AA). Primaries are 1-4 by slot, logicals 5+ in chain order,
 *   as Linux numbers them. Without a GPT the sector size is 512 unless the caller says otherwise.
 * - Every LBA is checked against the disk before it is read; reads are a few sectors and one bounded
 *   entry array.
 */
import { CorruptImageError, LivestickError, UsageError } from '../../errors.ts';
import { readAt, SliceDisk, type Disk } from '../../io/disk.ts';
import { equalBytes } from '../../io/bytes.ts';
import { decodeGptEntries, decodeGptHeader, entryArraySectors, hasGptSignature, isUnusedEntry, type GptEntry, type GptHeader } from './gpt.ts';
import { decodeMbr, hasMbrSignature, isEmptyEntry, looksLikeVolumeBootRecord, MBR_SIZE, readLogicalChain, type LogicalPartition, type Mbr } from './mbr.ts';
import { gptTypeName, MBR_EXTENDED_TYPES, MBR_PROTECTIVE_TYPE, mbrTypeName } from './types.ts';

export type SectorSize = 512 | 4096;

/** Problems of one kind listed one by one; the rest are counted. */
const MAX_OVERLAP_PROBLEMS = 16;

export interface Partition {
  /** As Linux numbers it: GPT entry index + 1; MBR primaries 1-4 by slot, logicals 5+. */
  readonly index: number;
  readonly startLba: number;
  readonly sectors: number;
  readonly startBytes: number;
  readonly sizeBytes: number;
  /** A GPT type GUID (upper case) or an MBR type byte. */
  readonly type: string | number;
  readonly typeName: string;
  /** GPT only. */
  readonly name?: string;
  readonly uuid?: string;
  readonly attributes?: bigint;
  /** MBR: the 0x80 status; GPT: attribute bit 2 (legacy BIOS bootable). */
  readonly bootable: boolean;
  /** MBR: a logical partition inside the extended one. */
  readonly logical?: boolean;
}

export interface GptInfo {
  /** The copy the partitions come from. */
  readonly used: 'primary' | 'backup';
  /** The used copy's header (for the backup: as stored there). */
  readonly header: GptHeader;
  readonly entries: readonly GptEntry[];
  /** The used copy's raw entry array (entryCount * entrySize bytes). */
  readonly entryArray: Uint8Array;
  readonly primaryValid: boolean;
  readonly backupValid: boolean;
  readonly diskGuid: string;
  readonly firstUsableLba: number;
  readonly lastUsableLba: number;
  readonly backupLba: number;
  readonly backupAtEnd: boolean;
}

export interface MbrInfo {
  readonly value: Mbr;
  /** Beside a GPT: protective (only 0xEE) or hybrid (0xEE and real entries); otherwise the table itself. */
  readonly role: 'protective' | 'hybrid' | 'table';
  readonly logicals: readonly LogicalPartition[];
}

export interface PartitionTable {
  readonly kind: 'gpt' | 'mbr' | 'none';
  readonly sectorSize: SectorSize;
  readonly diskSectors: number;
  readonly partitions: readonly Partition[];
  readonly mbr?: MbrInfo;
  readonly gpt?: GptInfo;
  readonly problems: readonly string[];
}

export interface ReadOptions {
  sectorSize?: SectorSize;
}

interface GptCopy {
  readonly header: GptHeader;
  readonly entries: GptEntry[];
  readonly array: Uint8Array;
}

async function readGptCopy(disk: Disk, lba: number, sectorSize: number, diskSectors: number): Promise<GptCopy> {
  if (lba <= 0 || lba >= diskSectors) throw new CorruptImageError('gpt', 'header', `LBA ${lba} is not on the disk`);
  const header = decodeGptHeader(await readAt(disk, lba * sectorSize, sectorSize), sectorSize, diskSectors);
  if (header.myLba !== lba) throw new CorruptImageError('gpt', 'my_lba', `says ${header.myLba} but was read at LBA ${lba}`, 24);
  const array = await readAt(disk, header.entriesLba * sectorSize, entryArraySectors(header, sectorSize) * sectorSize);
  return { header, entries: decodeGptEntries(array, header), array: array.subarray(0, header.entryCount * header.entrySize) };
}

function describe(err: unknown): string {
  if (err instanceof LivestickError) return err.message;
  throw err;
}

function mbrRole(mbr: Mbr): 'protective' | 'hybrid' | undefined {
  const used = mbr.entries.filter((e) => !isEmptyEntry(e));
  if (!used.some((e) => e.type === MBR_PROTECTIVE_TYPE)) return undefined;
  return used.length === 1 ? 'protective' : 'hybrid';
}

function checkPlacement(parts: readonly Partition[], diskSectors: number, problems: string[], range?: [number, number]): void {
  let misplaced = 0;
  for (const p of parts) {
    const past = p.startLba + p.sectors > diskSectors;
    const outside = !past && range !== undefined && (p.startLba < range[0] || p.startLba + p.sectors - 1 > range[1]);
    if ((past || outside) && ++misplaced > MAX_OVERLAP_PROBLEMS) continue;
    if (past) problems.push(`partition ${p.index} (sectors ${p.startLba}-${p.startLba + p.sectors - 1}) runs past the disk's end (last sector ${diskSectors - 1})`);
    else if (outside) problems.push(`partition ${p.index} (sectors ${p.startLba}-${p.startLba + p.sectors - 1}) is outside the usable range ${range[0]}-${range[1]}`);
  }
  if (misplaced > MAX_OVERLAP_PROBLEMS) problems.push(`${misplaced - MAX_OVERLAP_PROBLEMS} more partitions outside the disk or the usable range`);
  const sorted = [...parts].sort((a, b) => a.startLba - b.startLba || a.index - b.index);
  let reach: Partition | undefined;
  let overlaps = 0;
  for (const p of sorted) {
    if (reach && reach.startLba + reach.sectors > p.startLba) {
      if (++overlaps <= MAX_OVERLAP_PROBLEMS) problems.push(`partitions ${reach.index} and ${p.index} overlap`);
    }
    if (!reach || p.startLba + p.sectors > reach.startLba + reach.sectors) reach = p;
  }
  if (overlaps > MAX_OVERLAP_PROBLEMS) problems.push(`${overlaps - MAX_OVERLAP_PROBLEMS} more overlapping partitions`);
}

async function readGpt(disk: Disk, sectorSize: SectorSize, mbr: Mbr | undefined, problems: string[]): Promise<PartitionTable | undefined> {
  const diskSectors = Math.floor(disk.size / sectorSize);
  if (diskSectors < 3) return undefined;
  const primarySector = await readAt(disk, sectorSize, sectorSize);
  const primarySeen = hasGptSignature(primarySector);
  const protective = mbr?.entries.find((e) => e.type === MBR_PROTECTIVE_TYPE && !isEmptyEntry(e));
  if (!primarySeen && !protective) return undefined;

  let primary: GptCopy | undefined;
  let primaryError: string | undefined;
  let alternate: number | undefined;
  if (primarySeen) {
    try {
      primary = await readGptCopy(disk, 1, sectorSize, diskSectors);
      alternate = primary.header.alternateLba;
    } catch (err) {
      primaryError = describe(err);
      try {
        alternate = decodeGptHeader(primarySector, sectorSize, diskSectors).alternateLba;
      } catch {}
    }
  }
  const candidates = [alternate, diskSectors - 1, protective && protective.startLba === 1 ? protective.sectors : undefined].filter(
    (lba, i, all): lba is number => lba !== undefined && lba > 1 && lba < diskSectors && all.indexOf(lba) === i,
  );
  let backup: GptCopy | undefined;
  const backupErrors: string[] = [];
  for (const lba of primary ? candidates.slice(0, 1) : candidates) {
    const head = await readAt(disk, lba * sectorSize, sectorSize);
    if (!hasGptSignature(head)) {
      backupErrors.push(`no GPT header at LBA ${lba}`);
      continue;
    }
    try {
      backup = await readGptCopy(disk, lba, sectorSize, diskSectors);
      break;
    } catch (err) {
      backupErrors.push(`at LBA ${lba}: ${describe(err)}`);
    }
  }
  if (!primary && !backup) {
    if (!primarySeen && backupErrors.every((e) => e.startsWith('no GPT header'))) return undefined;
    throw new CorruptImageError('gpt', 'header', `no usable copy: primary: ${primaryError ?? 'no GPT header at LBA 1'}; backup: ${backupErrors.join('; ') || 'not found'}`);
  }
  if (!primary) problems.push(`the primary GPT is unusable (${primaryError ?? 'no GPT header at LBA 1'}); the backup at LBA ${backup!.header.myLba} is used`);
  if (primary && !backup) problems.push(`the backup GPT is unusable (${backupErrors.join('; ')}); the primary is used`);
  if (primary && backup) {
    const p = primary.header;
    const b = backup.header;
    if (b.alternateLba !== 1) problems.push(`the backup GPT header's alternate LBA is ${b.alternateLba}, not 1`);
    if (p.diskGuid !== b.diskGuid || p.firstUsableLba !== b.firstUsableLba || p.lastUsableLba !== b.lastUsableLba || p.entryCount !== b.entryCount || p.entrySize !== b.entrySize) problems.push('the primary and backup GPT headers disagree');
    else if (!equalBytes(primary.array, backup.array)) problems.push('the primary and backup GPT entry arrays differ');
  }
  const used = primary ?? backup!;
  const h = used.header;
  const backupLba = primary ? (backup?.header.myLba ?? h.alternateLba) : h.myLba;
  const backupAtEnd = backupLba === diskSectors - 1;
  if (!backupAtEnd) problems.push(`the backup GPT header is at LBA ${backupLba}, not at the disk's last sector ${diskSectors - 1} (an image written to a larger disk?)`);

  const partitions: Partition[] = [];
  used.entries.forEach((e, i) => {
    if (isUnusedEntry(e)) return;
    if (e.lastLba < e.firstLba) {
      problems.push(`GPT entry ${i + 1} ends (LBA ${e.lastLba}) before it starts (LBA ${e.firstLba}); ignored`);
      return;
    }
    const sectors = e.lastLba - e.firstLba + 1;
    partitions.push({
      index: i + 1,
      startLba: e.firstLba,
      sectors,
      startBytes: e.firstLba * sectorSize,
      sizeBytes: sectors * sectorSize,
      type: e.typeGuid,
      typeName: gptTypeName(e.typeGuid),
      name: e.name,
      uuid: e.uniqueGuid,
      attributes: e.attributes,
      bootable: (e.attributes & 4n) !== 0n,
    });
  });
  checkPlacement(partitions, diskSectors, problems, [h.firstUsableLba, h.lastUsableLba]);
  const role = mbr ? mbrRole(mbr) : undefined;
  if (!mbr) problems.push('no MBR beside the GPT (a protective MBR is expected at sector 0)');
  else if (!role) problems.push('the MBR beside the GPT has no 0xEE protective entry');
  return {
    kind: 'gpt',
    sectorSize,
    diskSectors,
    partitions,
    ...(mbr && role ? { mbr: { value: mbr, role, logicals: [] } } : {}),
    gpt: {
      used: primary ? 'primary' : 'backup',
      header: h,
      entries: used.entries,
      entryArray: used.array,
      primaryValid: primary !== undefined,
      backupValid: backup !== undefined,
      diskGuid: h.diskGuid,
      firstUsableLba: h.firstUsableLba,
      lastUsableLba: h.lastUsableLba,
      backupLba,
      backupAtEnd,
    },
    problems,
  };
}

async function readMbrTable(disk: Disk, mbr: Mbr, sectorSize: SectorSize, problems: string[]): Promise<PartitionTable> {
  const diskSectors = Math.floor(disk.size / sectorSize);
  const partitions: Partition[] = [];
  const logicals: LogicalPartition[] = [];
  let extendedSeen = false;
  mbr.entries.forEach((e, slot) => {
    if (isEmptyEntry(e)) return;
    partitions.push({
      index: slot + 1,
      startLba: e.startLba,
      sectors: e.sectors,
      startBytes: e.startLba * sectorSize,
      sizeBytes: e.sectors * sectorSize,
      type: e.type,
      typeName: mbrTypeName(e.type),
      bootable: e.status === 0x80,
    });
  });
  for (const e of mbr.entries) {
    if (isEmptyEntry(e) || !MBR_EXTENDED_TYPES.has(e.type)) continue;
    if (extendedSeen) {
      problems.push('more than one extended partition; only the first one\'s logical partitions are read');
      continue;
    }
    extendedSeen = true;
    if (e.startLba === 0 || e.startLba >= diskSectors) {
      problems.push(`the extended partition starts at sector ${e.startLba}, not on the disk; its logical partitions are not read`);
      continue;
    }
    const chain = await readLogicalChain(disk, sectorSize, e.startLba, e.sectors);
    problems.push(...chain.problems);
    logicals.push(...chain.logicals);
  }
  const logicalParts: Partition[] = logicals.map((l, i) => ({
    index: 5 + i,
    startLba: l.startLba,
    sectors: l.sectors,
    startBytes: l.startLba * sectorSize,
    sizeBytes: l.sectors * sectorSize,
    type: l.entry.type,
    typeName: mbrTypeName(l.entry.type),
    bootable: l.entry.status === 0x80,
    logical: true,
  }));
  for (const e of mbr.entries) if (!isEmptyEntry(e) && e.type !== MBR_PROTECTIVE_TYPE && e.status !== 0 && e.status !== 0x80) problems.push(`an MBR entry has status 0x${e.status.toString(16)}`);
  const primaries = partitions.filter((p) => !MBR_EXTENDED_TYPES.has(p.type as number));
  checkPlacement([...primaries, ...logicalParts], diskSectors, problems);
  checkPlacement(partitions.filter((p) => MBR_EXTENDED_TYPES.has(p.type as number)), diskSectors, problems);
  if (mbrRole(mbr)) problems.push('a protective (0xEE) MBR entry but no GPT header');
  return { kind: 'mbr', sectorSize, diskSectors, partitions: [...partitions, ...logicalParts], mbr: { value: mbr, role: 'table', logicals }, problems };
}

/** Reads the disk's partition table (see the design notes for what is a problem and what throws). */
export async function readPartitionTable(disk: Disk, options: ReadOptions = {}): Promise<PartitionTable> {
  if (options.sectorSize !== undefined && options.sectorSize !== 512 && options.sectorSize !== 4096) throw new UsageError(`sector size ${options.sectorSize} is not 512 or 4096`);
  const problems: string[] = [];
  const none = (sectorSize: SectorSize): PartitionTable => ({ kind: 'none', sectorSize, diskSectors: Math.floor(disk.size / sectorSize), partitions: [], problems });
  if (disk.size < MBR_SIZE) return none(options.sectorSize ?? 512);
  const sector0 = await readAt(disk, 0, MBR_SIZE);
  const mbr = hasMbrSignature(sector0) ? decodeMbr(sector0) : undefined;
  const mbrUsable = mbr !== undefined && mbr.entries.every((e) => e.status === 0 || e.status === 0x80) && !looksLikeVolumeBootRecord(sector0) && !mbr.entries.every(isEmptyEntry);
  const sizes = options.sectorSize ? [options.sectorSize] : ([512, 4096] as const);
  if (mbrUsable && !mbrRole(mbr)) {
    // No 0xEE entry: Linux ignores a GPT then (isohybrid images carry one this way) and so do we.
    for (const size of sizes) {
      if (disk.size >= 2 * size && hasGptSignature(await readAt(disk, size, size))) {
        problems.push(`a GPT header at LBA 1 (${size}-byte sectors) is ignored: the MBR has no 0xEE protective entry, so the MBR is the table (as Linux reads it)`);
        break;
      }
    }
    return readMbrTable(disk, mbr, options.sectorSize ?? 512, problems);
  }
  for (const size of sizes) {
    const table = await readGpt(disk, size, mbr, problems);
    if (table) return table;
  }
  const sectorSize = options.sectorSize ?? 512;
  if (!mbr || !mbrUsable) return none(sectorSize);
  return readMbrTable(disk, mbr, sectorSize, problems);
}

/** A partition as a Disk of its own (a slice of `disk`); refuses one that runs past the disk's end. */
export function partitionDisk(disk: Disk, partition: Pick<Partition, 'index' | 'startBytes' | 'sizeBytes'>, options: { readOnly?: boolean } = {}): SliceDisk {
  if (partition.startBytes + partition.sizeBytes > disk.size) throw new CorruptImageError('partition table', `partition ${partition.index}`, `runs past the disk's end (${partition.startBytes + partition.sizeBytes} > ${disk.size} bytes)`);
  return new SliceDisk(disk, partition.startBytes, partition.sizeBytes, options);
}
