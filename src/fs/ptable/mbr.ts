/**
 * The MBR (and EBR) sector: 440 bytes of boot code, the disk signature, two reserved bytes, four
 * 16-byte partition entries and the 0x55AA signature. An EBR has the same layout; in it entry 0 is the
 * logical partition (start relative to this EBR) and the first extended-type entry links to the next
 * EBR (start relative to the extended partition).
 *
 * Design notes
 * - The structure is always the first 512 bytes of its sector, whatever the sector size.
 * - CHS fields are kept as their three raw bytes, so decode/encode round-trips exactly; new entries get
 *   CHS computed for the conventional 255 heads / 63 sectors geometry, or the 1023/254/63 marker.
 * - `readLogicalChain` walks the EBR chain with a bound on its length, a visited set (cycles) and
 *   every EBR and logical partition checked against the extended partition and the disk; what is
 *   wrong ends the walk with a problem instead of an error, keeping the logicals found so far.
 */
import { CorruptImageError } from '../../errors.ts';
import { readAt, type Disk } from '../../io/disk.ts';
import { view } from '../../io/bytes.ts';
import { MBR_EXTENDED_TYPES } from './types.ts';

export const MBR_SIZE = 512;
export const MAX_LOGICAL_PARTITIONS = 256;

export type Chs = readonly [number, number, number];

export interface MbrEntry {
  /** 0x00, or 0x80 for the active (bootable) partition. */
  readonly status: number;
  readonly startChs: Chs;
  readonly type: number;
  readonly endChs: Chs;
  readonly startLba: number;
  readonly sectors: number;
}

export interface Mbr {
  readonly bootCode: Uint8Array;
  readonly diskSignature: number;
  readonly reserved: number;
  readonly entries: readonly [MbrEntry, MbrEntry, MbrEntry, MbrEntry];
}

export const EMPTY_ENTRY: MbrEntry = { status: 0, startChs: [0, 0, 0], type: 0, endChs: [0, 0, 0], startLba: 0, sectors: 0 };

/** Unused: no sectors (a type 0x00 entry with sectors counts, as isohybrid writes it and Linux reads it). */
export function isEmptyEntry(e: MbrEntry): boolean {
  return e.sectors === 0;
}

export function hasMbrSignature(bytes: Uint8Array): boolean {
  return bytes.byteLength >= MBR_SIZE && bytes[510] === 0x55 && bytes[511] === 0xaa;
}

/** Decodes the first 512 bytes of a sector; throws CorruptImageError without the 0x55AA signature. */
export function decodeMbr(bytes: Uint8Array, format = 'mbr'): Mbr {
  if (bytes.byteLength < MBR_SIZE) throw new CorruptImageError(format, 'sector', `needs ${MBR_SIZE} bytes, got ${bytes.byteLength}`);
  if (!hasMbrSignature(bytes)) throw new CorruptImageError(format, 'signature', `0x${bytes[510]!.toString(16)}${bytes[511]!.toString(16)} is not 0x55aa`, 510);
  const dv = view(bytes);
  const entry = (i: number): MbrEntry => {
    const at = 446 + i * 16;
    return {
      status: bytes[at]!,
      startChs: [bytes[at + 1]!, bytes[at + 2]!, bytes[at + 3]!],
      type: bytes[at + 4]!,
      endChs: [bytes[at + 5]!, bytes[at + 6]!, bytes[at + 7]!],
      startLba: dv.getUint32(at + 8, true),
      sectors: dv.getUint32(at + 12, true),
    };
  };
  return {
    bootCode: bytes.slice(0, 440),
    diskSignature: dv.getUint32(440, true),
    reserved: dv.getUint16(444, true),
    entries: [entry(0), entry(1), entry(2), entry(3)],
  };
}

export function encodeMbr(mbr: Mbr): Uint8Array {
  const out = new Uint8Array(MBR_SIZE);
  const dv = view(out);
  out.set(mbr.bootCode.subarray(0, 440));
  dv.setUint32(440, mbr.diskSignature >>> 0, true);
  dv.setUint16(444, mbr.reserved & 0xffff, true);
  mbr.entries.forEach((e, i) => {
    const at = 446 + i * 16;
    out[at] = e.status;
    out.set(e.startChs, at + 1);
    out[at + 4] = e.type;
    out.set(e.endChs, at + 5);
    dv.setUint32(at + 8, e.startLba >>> 0, true);
    dv.setUint32(at + 12, e.sectors >>> 0, true);
  });
  out[510] = 0x55;
  out[511] = 0xaa;
  return out;
}

/** CHS bytes for an LBA in the 255-head, 63-sector geometry; past cylinder 1023 the 1023/254/63 marker. */
export function lbaToChs(lba: number): Chs {
  const cylinder = Math.floor(lba / (255 * 63));
  if (cylinder > 1023) return [0xfe, 0xff, 0xff];
  const head = Math.floor(lba / 63) % 255;
  const sector = (lba % 63) + 1;
  return [head, ((cylinder >> 2) & 0xc0) | sector, cylinder & 0xff];
}

/** A new entry with CHS computed from the LBAs. */
export function mbrEntry(type: number, startLba: number, sectors: number, bootable = false): MbrEntry {
  return { status: bootable ? 0x80 : 0, startChs: lbaToChs(startLba), type, endChs: lbaToChs(startLba + sectors - 1), startLba, sectors };
}

/** Does this sector look like a filesystem boot sector (a partitionless "superfloppy") rather than an MBR? */
export function looksLikeVolumeBootRecord(bytes: Uint8Array): boolean {
  const text = (at: number, n: number) => String.fromCharCode(...bytes.subarray(at, at + n));
  if (text(3, 8) === 'NTFS    ' || text(3, 8) === 'EXFAT   ') return true;
  const jump = bytes[0] === 0xeb || bytes[0] === 0xe9;
  return jump && (text(54, 5) === 'FAT12' || text(54, 5) === 'FAT16' || text(82, 5) === 'FAT32');
}

export interface LogicalPartition {
  /** The EBR's LBA. */
  readonly ebrLba: number;
  /** The logical partition's entry as stored (start relative to the EBR). */
  readonly entry: MbrEntry;
  /** Absolute first LBA and length. */
  readonly startLba: number;
  readonly sectors: number;
}

export interface LogicalChain {
  readonly logicals: readonly LogicalPartition[];
  readonly problems: readonly string[];
}

/** Walks the EBR chain of the extended partition [extStart, extStart + extSectors). */
export async function readLogicalChain(disk: Disk, sectorSize: number, extStart: number, extSectors: number): Promise<LogicalChain> {
  const diskSectors = Math.floor(disk.size / sectorSize);
  const extEnd = Math.min(extStart + extSectors, diskSectors);
  const logicals: LogicalPartition[] = [];
  const problems: string[] = [];
  const visited = new Set<number>();
  let ebrLba = extStart;
  for (let hop = 0; ; hop++) {
    if (hop >= MAX_LOGICAL_PARTITIONS) {
      problems.push(`the logical partition chain is longer than ${MAX_LOGICAL_PARTITIONS} links; the rest is ignored`);
      break;
    }
    if (visited.has(ebrLba)) {
      problems.push(`the logical partition chain loops back to the EBR at sector ${ebrLba}`);
      break;
    }
    visited.add(ebrLba);
    if (ebrLba < extStart || ebrLba >= extEnd) {
      problems.push(`an EBR at sector ${ebrLba} lies outside the extended partition (sectors ${extStart}-${extEnd - 1})`);
      break;
    }
    const bytes = await readAt(disk, ebrLba * sectorSize, MBR_SIZE);
    if (!hasMbrSignature(bytes)) {
      problems.push(`the EBR at sector ${ebrLba} has no 0x55aa signature; the chain ends there`);
      break;
    }
    const ebr = decodeMbr(bytes, 'ebr');
    const data = ebr.entries.slice(0, 2).find((e) => !isEmptyEntry(e) && !MBR_EXTENDED_TYPES.has(e.type));
    if (data) {
      const startLba = ebrLba + data.startLba;
      if (startLba + data.sectors > extEnd || data.startLba === 0) {
        problems.push(`logical partition ${5 + logicals.length} (sectors ${startLba}+${data.sectors}) is not inside the extended partition; ignored`);
      } else {
        logicals.push({ ebrLba, entry: data, startLba, sectors: data.sectors });
      }
    }
    const link = ebr.entries.find((e) => !isEmptyEntry(e) && MBR_EXTENDED_TYPES.has(e.type));
    if (!link) break;
    ebrLba = extStart + link.startLba;
  }
  return { logicals, problems };
}
