/**
 * GPT structures: the header (primary at LBA 1, backup normally at the last LBA) and the partition
 * entry array, each with its CRC32 (IEEE, as node:zlib computes it).
 *
 * Design notes
 * - `decodeGptHeader` validates the signature, header size, the header CRC, revision major, the
 *   reserved word, and every LBA against the disk's sector count (the entry array must fit on the disk
 *   and not overlap the header; usable range inside the disk); a caller decides what a bad copy means.
 * - The entry array is bounded (MAX_ENTRY_ARRAY_BYTES) before it is read; entry sizes are 128 * 2^n.
 * - 64-bit LBAs go through toSafeNumber; attributes stay a bigint (a bit field, not a size).
 * - Bytes between 92 and the header size are kept (they are covered by the CRC), so a rewrite of a
 *   header with a larger header size stays valid.
 */
import { crc32 } from 'node:zlib';
import { CorruptImageError, UnsupportedFeatureError, UsageError } from '../../errors.ts';
import { isAllZero, toSafeNumber, view } from '../../io/bytes.ts';
import { decodeGuid, encodeGuid, ZERO_GUID } from './types.ts';

export const GPT_SIGNATURE = 'EFI PART';
export const GPT_REVISION = 0x00010000;
export const GPT_HEADER_SIZE = 92;
export const GPT_ENTRY_SIZE = 128;
export const GPT_DEFAULT_ENTRIES = 128;
export const MAX_ENTRY_ARRAY_BYTES = 4 << 20;
export const NAME_UNITS = 36;

export interface GptHeader {
  readonly revision: number;
  readonly headerSize: number;
  readonly myLba: number;
  readonly alternateLba: number;
  readonly firstUsableLba: number;
  readonly lastUsableLba: number;
  readonly diskGuid: string;
  readonly entriesLba: number;
  readonly entryCount: number;
  readonly entrySize: number;
  readonly entriesCrc: number;
  /** Bytes 92..headerSize (usually none). */
  readonly extra: Uint8Array;
}

export interface GptEntry {
  readonly typeGuid: string;
  readonly uniqueGuid: string;
  readonly firstLba: number;
  /** Inclusive. */
  readonly lastLba: number;
  readonly attributes: bigint;
  readonly name: string;
}

export function hasGptSignature(bytes: Uint8Array): boolean {
  return bytes.byteLength >= 8 && String.fromCharCode(...bytes.subarray(0, 8)) === GPT_SIGNATURE;
}

function fail(field: string, message: string, offset?: number): never {
  throw new CorruptImageError('gpt', field, message, offset);
}

/** Bytes the entry array of this header occupies, rounded up to whole sectors. */
export function entryArraySectors(header: Pick<GptHeader, 'entryCount' | 'entrySize'>, sectorSize: number): number {
  return Math.ceil((header.entryCount * header.entrySize) / sectorSize);
}

/**
 * Decodes a header sector. `diskSectors` bounds every LBA. Throws CorruptImageError naming the first
 * bad field (a bad CRC included).
 */
export function decodeGptHeader(bytes: Uint8Array, sectorSize: number, diskSectors: number): GptHeader {
  if (bytes.byteLength < sectorSize || sectorSize < 512) fail('sector', `needs ${sectorSize} bytes, got ${bytes.byteLength}`);
  if (!hasGptSignature(bytes)) fail('signature', 'no "EFI PART" signature', 0);
  const dv = view(bytes);
  const headerSize = dv.getUint32(12, true);
  if (headerSize < GPT_HEADER_SIZE || headerSize > sectorSize) fail('header_size', `${headerSize} is outside ${GPT_HEADER_SIZE}..${sectorSize}`, 12);
  const storedCrc = dv.getUint32(16, true);
  const copy = bytes.slice(0, headerSize);
  view(copy).setUint32(16, 0, true);
  const actualCrc = crc32(copy);
  if (actualCrc !== storedCrc) fail('header_crc32', `stored 0x${storedCrc.toString(16)}, computed 0x${actualCrc.toString(16)}`, 16);
  const revision = dv.getUint32(8, true);
  if (revision >>> 16 !== 1) throw new UnsupportedFeatureError('gpt', 'revision', `0x${revision.toString(16)}`);
  if (dv.getUint32(20, true) !== 0) fail('reserved', 'must be zero', 20);
  const lba = (at: number, field: string) => {
    const v = toSafeNumber(dv.getBigUint64(at, true), 'gpt', field, at);
    if (v >= diskSectors) fail(field, `LBA ${v} is past the disk's last sector ${diskSectors - 1}`, at);
    return v;
  };
  const myLba = lba(24, 'my_lba');
  const alternateLba = lba(32, 'alternate_lba');
  const firstUsableLba = lba(40, 'first_usable_lba');
  const lastUsableLba = lba(48, 'last_usable_lba');
  if (myLba === 0 || alternateLba === 0) fail('my_lba', 'LBA 0 holds the MBR, not a GPT header', 24);
  if (lastUsableLba < firstUsableLba) fail('last_usable_lba', `${lastUsableLba} is before first usable LBA ${firstUsableLba}`, 48);
  const entriesLba = lba(72, 'partition_entry_lba');
  const entryCount = dv.getUint32(80, true);
  const entrySize = dv.getUint32(84, true);
  if (entrySize < GPT_ENTRY_SIZE || entrySize > 4096 || (entrySize & (entrySize - 1)) !== 0) fail('size_of_partition_entry', `${entrySize} is not 128 * 2^n (up to 4096)`, 84);
  if (entryCount === 0) fail('number_of_partition_entries', 'zero entries', 80);
  if (entryCount * entrySize > MAX_ENTRY_ARRAY_BYTES) throw new UnsupportedFeatureError('gpt', 'entry array size', `${entryCount} entries of ${entrySize} bytes (more than ${MAX_ENTRY_ARRAY_BYTES} bytes)`);
  const arraySectors = Math.ceil((entryCount * entrySize) / sectorSize);
  if (entriesLba + arraySectors > diskSectors) fail('partition_entry_lba', `the entry array (${arraySectors} sectors at ${entriesLba}) runs past the disk's end`, 72);
  if (entriesLba <= myLba && myLba < entriesLba + arraySectors) fail('partition_entry_lba', `the entry array (${arraySectors} sectors at ${entriesLba}) overlaps its own header`, 72);
  if (entriesLba <= 0) fail('partition_entry_lba', 'the entry array cannot start at LBA 0', 72);
  return {
    revision,
    headerSize,
    myLba,
    alternateLba,
    firstUsableLba,
    lastUsableLba,
    diskGuid: decodeGuid(bytes.subarray(56, 72)),
    entriesLba,
    entryCount,
    entrySize,
    entriesCrc: dv.getUint32(88, true),
    extra: bytes.slice(GPT_HEADER_SIZE, headerSize),
  };
}

/** One header sector with its CRC computed. */
export function encodeGptHeader(h: GptHeader, sectorSize: number): Uint8Array {
  if (h.headerSize !== GPT_HEADER_SIZE + h.extra.byteLength || h.headerSize > sectorSize) throw new UsageError(`GPT header size ${h.headerSize} does not match its ${h.extra.byteLength} extra bytes`);
  const out = new Uint8Array(sectorSize);
  const dv = view(out);
  out.set(new TextEncoder().encode(GPT_SIGNATURE));
  dv.setUint32(8, h.revision, true);
  dv.setUint32(12, h.headerSize, true);
  dv.setBigUint64(24, BigInt(h.myLba), true);
  dv.setBigUint64(32, BigInt(h.alternateLba), true);
  dv.setBigUint64(40, BigInt(h.firstUsableLba), true);
  dv.setBigUint64(48, BigInt(h.lastUsableLba), true);
  out.set(encodeGuid(h.diskGuid), 56);
  dv.setBigUint64(72, BigInt(h.entriesLba), true);
  dv.setUint32(80, h.entryCount, true);
  dv.setUint32(84, h.entrySize, true);
  dv.setUint32(88, h.entriesCrc >>> 0, true);
  out.set(h.extra, GPT_HEADER_SIZE);
  dv.setUint32(16, crc32(out.subarray(0, h.headerSize)), true);
  return out;
}

export function entryArrayCrc(array: Uint8Array, header: Pick<GptHeader, 'entryCount' | 'entrySize'>): number {
  return crc32(array.subarray(0, header.entryCount * header.entrySize));
}

export function isUnusedEntry(e: GptEntry): boolean {
  return e.typeGuid === ZERO_GUID;
}

/** Decodes one entry (the table layer checks its LBAs against the disk). */
export function decodeGptEntry(bytes: Uint8Array, at = 0): GptEntry {
  const dv = view(bytes);
  const typeGuid = decodeGuid(bytes.subarray(at, at + 16));
  const nameBytes = bytes.subarray(at + 56, at + 56 + NAME_UNITS * 2);
  let units = 0;
  while (units < NAME_UNITS && (nameBytes[units * 2] !== 0 || nameBytes[units * 2 + 1] !== 0)) units++;
  return {
    typeGuid,
    uniqueGuid: decodeGuid(bytes.subarray(at + 16, at + 32)),
    firstLba: toSafeNumber(dv.getBigUint64(at + 32, true), 'gpt', 'starting_lba', at + 32),
    lastLba: toSafeNumber(dv.getBigUint64(at + 40, true), 'gpt', 'ending_lba', at + 40),
    attributes: dv.getBigUint64(at + 48, true),
    name: new TextDecoder('utf-16le').decode(nameBytes.subarray(0, units * 2)),
  };
}

/** Decodes the whole array (used and unused slots); checks its CRC against `header.entriesCrc`. */
export function decodeGptEntries(array: Uint8Array, header: Pick<GptHeader, 'entryCount' | 'entrySize' | 'entriesCrc'>): GptEntry[] {
  const need = header.entryCount * header.entrySize;
  if (array.byteLength < need) fail('partition_entries', `needs ${need} bytes, got ${array.byteLength}`);
  const actual = entryArrayCrc(array, header);
  if (actual !== header.entriesCrc) fail('partition_entry_array_crc32', `stored 0x${header.entriesCrc.toString(16)}, computed 0x${actual.toString(16)}`);
  const entries: GptEntry[] = [];
  for (let i = 0; i < header.entryCount; i++) {
    const at = i * header.entrySize;
    const slot = array.subarray(at, at + header.entrySize);
    entries.push(isAllZero(slot.subarray(0, 16)) ? UNUSED_ENTRY : decodeGptEntry(slot));
  }
  return entries;
}

export const UNUSED_ENTRY: GptEntry = { typeGuid: ZERO_GUID, uniqueGuid: ZERO_GUID, firstLba: 0, lastLba: 0, attributes: 0n, name: '' };

export function encodeGptName(name: string): Uint8Array {
  const out = new Uint8Array(NAME_UNITS * 2);
  if (name.length > NAME_UNITS) throw new UsageError(`a GPT partition name has at most ${NAME_UNITS} UTF-16 code units, "${name}" has ${name.length}`);
  for (let i = 0; i < name.length; i++) {
    const u = name.charCodeAt(i);
    out[i * 2] = u & 0xff;
    out[i * 2 + 1] = u >> 8;
  }
  return out;
}

export function encodeGptEntry(e: GptEntry, entrySize = GPT_ENTRY_SIZE): Uint8Array {
  const out = new Uint8Array(entrySize);
  if (isUnusedEntry(e)) return out;
  const dv = view(out);
  out.set(encodeGuid(e.typeGuid), 0);
  out.set(encodeGuid(e.uniqueGuid), 16);
  dv.setBigUint64(32, BigInt(e.firstLba), true);
  dv.setBigUint64(40, BigInt(e.lastLba), true);
  dv.setBigUint64(48, BigInt.asUintN(64, e.attributes), true);
  out.set(encodeGptName(e.name), 56);
  return out;
}

export function encodeGptEntries(entries: readonly GptEntry[], entrySize = GPT_ENTRY_SIZE): Uint8Array {
  const out = new Uint8Array(entries.length * entrySize);
  entries.forEach((e, i) => out.set(encodeGptEntry(e, entrySize), i * entrySize));
  return out;
}
