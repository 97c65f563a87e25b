/**
 * Directory entries (32 bytes each) and file entry sets.
 *
 * Design notes
 * - A file or directory is an entry set: a File entry (0x85) naming SecondaryCount, then a Stream
 *   Extension (0xC0: flags, name length and hash, ValidDataLength, FirstCluster, DataLength), then
 *   ceil(NameLength / 15) File Name entries (0xC1), then possibly benign vendor secondaries (kept as
 *   bytes, never interpreted). The set checksum covers every byte of the set except its own field.
 * - Decoders validate types, counts, lengths, the checksum and the name hash (against the volume's
 *   up-case table); pointer checks against the cluster heap happen where the heap is known (fs.ts).
 * - Timestamps: a DOS-style date and time (2-second units), a 10 ms increment (0–199) adding up to
 *   1.99 s, and a UTC offset in 15-minute units (bit 7 says it is valid). We write UTC (offset 0, valid).
 */
import { CorruptImageError } from '../../errors.ts';
import { readU64, view } from '../../io/bytes.ts';
import { FORMAT } from './boot.ts';

export const ENTRY_SIZE = 32;
export const TYPE_END = 0x00;
export const TYPE_BITMAP = 0x81;
export const TYPE_UPCASE = 0x82;
export const TYPE_LABEL = 0x83;
export const TYPE_FILE = 0x85;
export const TYPE_GUID = 0xa0;
export const TYPE_STREAM = 0xc0;
export const TYPE_NAME = 0xc1;
export const IN_USE = 0x80;

export const ATTR_READ_ONLY = 0x01;
export const ATTR_DIRECTORY = 0x10;
export const ATTR_ARCHIVE = 0x20;

export const FLAG_ALLOCATION_POSSIBLE = 0x01;
export const FLAG_NO_FAT_CHAIN = 0x02;

export const MAX_NAME_UNITS = 255;
export const LABEL_UNITS = 11;

function bad(field: string, message: string, offset?: number): CorruptImageError {
  return new CorruptImageError(FORMAT, field, message, offset);
}

// ---- timestamps -------------------------------------------------------------------------------

export interface ExfatTimestamp {
  /** Packed date/time: year-1980 (7 bits), month, day, hour, minute, seconds/2. */
  readonly packed: number;
  /** 0..199, units of 10 ms. */
  readonly increment10ms: number;
  /** Bit 7 valid; bits 0–6 a signed count of 15-minute units. */
  readonly utcOffset: number;
}

export function encodeTimestamp(ms: number): ExfatTimestamp {
  const d = new Date(Math.max(ms, Date.UTC(1980, 0, 1)));
  const year = Math.min(d.getUTCFullYear(), 2107) - 1980;
  const packed =
    ((year << 25) | ((d.getUTCMonth() + 1) << 21) | (d.getUTCDate() << 16) | (d.getUTCHours() << 11) | (d.getUTCMinutes() << 5) | (d.getUTCSeconds() >> 1)) >>> 0;
  const increment10ms = (d.getUTCSeconds() & 1) * 100 + Math.floor(d.getUTCMilliseconds() / 10);
  return { packed, increment10ms, utcOffset: 0x80 };
}

/** Seconds and nanoseconds since the epoch; a field without a valid offset is read as UTC. */
export function decodeTimestamp(t: ExfatTimestamp): { sec: number; nsec: number } {
  const p = t.packed;
  const year = 1980 + (p >>> 25);
  const month = Math.min(Math.max((p >>> 21) & 0xf, 1), 12);
  const day = Math.max((p >>> 16) & 0x1f, 1);
  const local = Date.UTC(year, month - 1, day, (p >>> 11) & 0x1f, (p >>> 5) & 0x3f, (p & 0x1f) * 2) / 1000;
  const inc = Math.min(t.increment10ms, 199);
  let offsetMin = 0;
  if (t.utcOffset & 0x80) offsetMin = (((t.utcOffset & 0x7f) << 25) >> 25) * 15;
  const sec = local + Math.floor(inc / 100) - offsetMin * 60;
  return { sec, nsec: (inc % 100) * 10_000_000 };
}

// ---- checksums and names ----------------------------------------------------------------------

export function setChecksum(set: Uint8Array): number {
  let sum = 0;
  for (let i = 0; i < set.byteLength; i++) {
    if (i === 2 || i === 3) continue;
    sum = ((((sum & 1) << 15) | (sum >>> 1)) + set[i]!) & 0xffff;
  }
  return sum;
}

export function upcaseUnits(name: string, upcase: Uint16Array): Uint16Array {
  const out = new Uint16Array(name.length);
  for (let i = 0; i < name.length; i++) out[i] = upcase[name.charCodeAt(i)]!;
  return out;
}

export function nameHash(name: string, upcase: Uint16Array): number {
  let sum = 0;
  for (const u of upcaseUnits(name, upcase)) {
    sum = ((((sum & 1) << 15) | (sum >>> 1)) + (u & 0xff)) & 0xffff;
    sum = ((((sum & 1) << 15) | (sum >>> 1)) + (u >>> 8)) & 0xffff;
  }
  return sum;
}

/** The characters a file name must not contain (spec §7.7.3): controls and " * / : < > ? \ |. */
export function invalidNameReason(name: string): string | undefined {
  if (name.length === 0) return 'the name is empty';
  if (name.length > MAX_NAME_UNITS) return `the name has ${name.length} UTF-16 units (at most ${MAX_NAME_UNITS})`;
  if (name === '.' || name === '..') return `"${name}" is not a file name`;
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i);
    if (c < 0x20 || '"*/:<>?\\|'.includes(name[i]!)) return `the name contains ${JSON.stringify(name[i])}`;
  }
  return undefined;
}

// ---- the root's critical entries ---------------------------------------------------------------

export interface BitmapEntry {
  readonly flags: number;
  readonly firstCluster: number;
  readonly dataLength: number;
}

export interface UpcaseEntry {
  readonly checksum: number;
  readonly firstCluster: number;
  readonly dataLength: number;
}

export function decodeBitmapEntry(e: Uint8Array, offset?: number): BitmapEntry {
  const dv = view(e);
  if (e[0] !== TYPE_BITMAP) throw bad('allocation bitmap entry', `type ${e[0]}`, offset);
  const flags = e[1]!;
  if (flags > 1) throw bad('BitmapFlags', `${flags}`, offset);
  return { flags, firstCluster: dv.getUint32(20, true), dataLength: readU64(dv, 24, FORMAT, 'bitmap DataLength') };
}

export function encodeBitmapEntry(b: BitmapEntry): Uint8Array {
  const e = new Uint8Array(ENTRY_SIZE);
  const dv = view(e);
  e[0] = TYPE_BITMAP;
  e[1] = b.flags;
  dv.setUint32(20, b.firstCluster, true);
  dv.setBigUint64(24, BigInt(b.dataLength), true);
  return e;
}

export function decodeUpcaseEntry(e: Uint8Array, offset?: number): UpcaseEntry {
  const dv = view(e);
  if (e[0] !== TYPE_UPCASE) throw bad('up-case table entry', `type ${e[0]}`, offset);
  return { checksum: dv.getUint32(4, true), firstCluster: dv.getUint32(20, true), dataLength: readU64(dv, 24, FORMAT, 'up-case DataLength') };
}

export function encodeUpcaseEntry(u: UpcaseEntry): Uint8Array {
  const e = new Uint8Array(ENTRY_SIZE);
  const dv = view(e);
  e[0] = TYPE_UPCASE;
  dv.setUint32(4, u.checksum, true);
  dv.setUint32(20, u.firstCluster, true);
  dv.setBigUint64(24, BigInt(u.dataLength), true);
  return e;
}

export function decodeLabelEntry(e: Uint8Array, offset?: number): string {
  if (e[0] !== TYPE_LABEL) throw bad('volume label entry', `type ${e[0]}`, offset);
  const count = e[1]!;
  if (count > LABEL_UNITS) throw bad('volume label CharacterCount', `${count} is above ${LABEL_UNITS}`, offset);
  const dv = view(e);
  let s = '';
  for (let i = 0; i < count; i++) s += String.fromCharCode(dv.getUint16(2 + i * 2, true));
  return s;
}

export function encodeLabelEntry(label: string): Uint8Array {
  if (label.length > LABEL_UNITS) throw new RangeError(`an exFAT label has at most ${LABEL_UNITS} UTF-16 units`);
  const e = new Uint8Array(ENTRY_SIZE);
  const dv = view(e);
  e[0] = TYPE_LABEL;
  e[1] = label.length;
  for (let i = 0; i < label.length; i++) dv.setUint16(2 + i * 2, label.charCodeAt(i), true);
  return e;
}

// ---- file entry sets ----------------------------------------------------------------------------

export interface FileEntrySet {
  readonly name: string;
  readonly attributes: number;
  readonly created: ExfatTimestamp;
  readonly modified: ExfatTimestamp;
  /** The access timestamp has no 10 ms field; its increment is 0. */
  readonly accessed: ExfatTimestamp;
  readonly secondaryFlags: number;
  readonly nameHash: number;
  readonly validDataLength: number;
  readonly firstCluster: number;
  readonly dataLength: number;
  /** Benign secondaries after the names (vendor extensions), kept verbatim. */
  readonly extra: readonly Uint8Array[];
}

export function entryCount(nameLength: number, extra = 0): number {
  return 2 + Math.ceil(nameLength / 15) + extra;
}

/**
 * Decodes the set starting at `bytes[0]` (a File entry); `bytes` holds at least the whole set.
 * `upcase` checks the name hash.
 */
export function decodeFileEntrySet(bytes: Uint8Array, upcase: Uint16Array, offset?: number): FileEntrySet {
  if (bytes.byteLength < 3 * ENTRY_SIZE) throw bad('file entry set', 'shorter than three entries', offset);
  if (bytes[0] !== TYPE_FILE) throw bad('file entry', `type ${bytes[0]}`, offset);
  const secondaryCount = bytes[1]!;
  if (secondaryCount < 2 || secondaryCount > 18) throw bad('SecondaryCount', `${secondaryCount} is outside 2..18`, offset === undefined ? undefined : offset + 1);
  const size = (secondaryCount + 1) * ENTRY_SIZE;
  if (bytes.byteLength < size) throw bad('file entry set', `SecondaryCount ${secondaryCount} runs past the directory`, offset);
  const set = bytes.subarray(0, size);
  const dv = view(set);
  const stored = dv.getUint16(2, true);
  const computed = setChecksum(set);
  if (stored !== computed) throw bad('SetChecksum', `stored ${stored.toString(16)}, computed ${computed.toString(16)}`, offset === undefined ? undefined : offset + 2);
  const attributes = dv.getUint16(4, true);
  const ts = (at: number, inc: number | undefined, off: number): ExfatTimestamp => ({ packed: dv.getUint32(at, true), increment10ms: inc === undefined ? 0 : set[inc]!, utcOffset: set[off]! });
  const created = ts(8, 20, 22);
  const modified = ts(12, 21, 23);
  const accessed = ts(16, undefined, 24);
  if (created.increment10ms > 199 || modified.increment10ms > 199) throw bad('10msIncrement', 'above 199', offset);

  const s = 32;
  if (set[s] !== TYPE_STREAM) throw bad('stream extension entry', `type ${set[s]} follows the file entry`, offset === undefined ? undefined : offset + s);
  const secondaryFlags = set[s + 1]!;
  if (!(secondaryFlags & FLAG_ALLOCATION_POSSIBLE)) throw bad('GeneralSecondaryFlags', 'AllocationPossible is clear on a stream extension', offset === undefined ? undefined : offset + s + 1);
  const nameLength = set[s + 3]!;
  const hash = dv.getUint16(s + 4, true);
  const validDataLength = readU64(dv, s + 8, FORMAT, 'ValidDataLength');
  const firstCluster = dv.getUint32(s + 20, true);
  const dataLength = readU64(dv, s + 24, FORMAT, 'DataLength');
  if (nameLength < 1) throw bad('NameLength', 'zero', offset === undefined ? undefined : offset + s + 3);
  if (validDataLength > dataLength) throw bad('ValidDataLength', `${validDataLength} exceeds DataLength ${dataLength}`, offset === undefined ? undefined : offset + s + 8);
  if ((firstCluster === 0) !== (dataLength === 0)) throw bad('FirstCluster', `${firstCluster} with DataLength ${dataLength}`, offset === undefined ? undefined : offset + s + 20);
  const nameEntries = Math.ceil(nameLength / 15);
  if (nameEntries + 1 > secondaryCount) throw bad('SecondaryCount', `${secondaryCount} cannot hold a ${nameLength}-unit name`, offset);
  let name = '';
  for (let i = 0; i < nameEntries; i++) {
    const at = (2 + i) * ENTRY_SIZE;
    if (set[at] !== TYPE_NAME) throw bad('file name entry', `type ${set[at]} where name entry ${i + 1} belongs`, offset === undefined ? undefined : offset + at);
    for (let k = 0; k < 15 && name.length < nameLength; k++) name += String.fromCharCode(dv.getUint16(at + 2 + k * 2, true));
  }
  const extra: Uint8Array[] = [];
  for (let i = 2 + nameEntries; i <= secondaryCount; i++) {
    const e = set.subarray(i * ENTRY_SIZE, (i + 1) * ENTRY_SIZE);
    const type = e[0]!;
    if ((type & 0xc0) !== 0xc0) throw bad('secondary entry', `type ${type} is not a secondary`, offset === undefined ? undefined : offset + i * ENTRY_SIZE);
    if (type & IN_USE && !(type & 0x20)) throw bad('secondary entry', `unknown critical secondary ${type}`, offset === undefined ? undefined : offset + i * ENTRY_SIZE);
    extra.push(e.slice());
  }
  const reason = invalidNameReason(name);
  if (reason) throw bad('FileName', reason, offset === undefined ? undefined : offset + 64);
  const expectedHash = nameHash(name, upcase);
  if (hash !== expectedHash) throw bad('NameHash', `stored ${hash.toString(16)}, computed ${expectedHash.toString(16)}`, offset === undefined ? undefined : offset + s + 4);
  return { name, attributes, created, modified, accessed, secondaryFlags, nameHash: hash, validDataLength, firstCluster, dataLength, extra };
}

/** Encodes a set; the name hash is taken as given (compute it with `nameHash`), the checksum is computed. */
export function encodeFileEntrySet(f: FileEntrySet): Uint8Array {
  const reason = invalidNameReason(f.name);
  if (reason) throw new RangeError(reason);
  const nameEntries = Math.ceil(f.name.length / 15);
  const count = 2 + nameEntries + f.extra.length;
  if (count > 19) throw new RangeError('too many secondary entries');
  const set = new Uint8Array(count * ENTRY_SIZE);
  const dv = view(set);
  set[0] = TYPE_FILE;
  set[1] = count - 1;
  dv.setUint16(4, f.attributes, true);
  dv.setUint32(8, f.created.packed, true);
  dv.setUint32(12, f.modified.packed, true);
  dv.setUint32(16, f.accessed.packed, true);
  set[20] = f.created.increment10ms;
  set[21] = f.modified.increment10ms;
  set[22] = f.created.utcOffset;
  set[23] = f.modified.utcOffset;
  set[24] = f.accessed.utcOffset;
  const s = 32;
  set[s] = TYPE_STREAM;
  set[s + 1] = f.secondaryFlags;
  set[s + 3] = f.name.length;
  dv.setUint16(s + 4, f.nameHash, true);
  dv.setBigUint64(s + 8, BigInt(f.validDataLength), true);
  dv.setUint32(s + 20, f.firstCluster, true);
  dv.setBigUint64(s + 24, BigInt(f.dataLength), true);
  for (let i = 0; i < nameEntries; i++) {
    const at = (2 + i) * ENTRY_SIZE;
    set[at] = TYPE_NAME;
    for (let k = 0; k < 15; k++) {
      const c = i * 15 + k;
      if (c < f.name.length) dv.setUint16(at + 2 + k * 2, f.name.charCodeAt(c), true);
    }
  }
  f.extra.forEach((e, i) => set.set(e, (2 + nameEntries + i) * ENTRY_SIZE));
  dv.setUint16(2, setChecksum(set), true);
  return set;
}
