/**
 * Directory entries: the 32-byte short (8.3) entry, the VFAT long-name (LFN) entry with its checksum,
 * FAT timestamps, and the name rules (validation, case-insensitive comparison, 8.3 aliases).
 *
 * Design notes
 * - A name that is a valid 8.3 name whose base and extension are each all upper or all lower case is
 *   stored without LFN entries, the lower case recorded in the NT case bits (0x08 base, 0x10 extension),
 *   as Windows NT and Linux (shortname=mixed) do. Any other name gets LFN entries plus an alias.
 * - Aliases follow Windows: upper case; characters invalid in 8.3 (and non-ASCII ones, as no OEM code
 *   page is assumed) become '_'; spaces and leading dots are dropped; base up to 8 characters before the
 *   last dot, extension up to 3 after it. A lossy or truncated name, or one already taken, gets a numeric
 *   tail ~1..~4; after that the base is two characters plus four hex digits of a hash of the long name,
 *   then ~1..~9 (Windows' own hash is undocumented; ours is FNV-1a, so aliases past ~4 differ from it).
 * - Short-name bytes above 0x7F are read as code page 850 (mtools' default; it agrees with Linux's 437
 *   on the common accented letters and has the upper-case ones 437 lacks); aliases we write are ASCII.
 * - Comparison folds each UTF-16 unit to upper case where that keeps one unit (ASCII, Latin-1,
 *   Latin Extended, Greek, Cyrillic, …): what Linux's vfat does with its NLS tables for common ranges.
 * - Timestamps are local time: the caller passes a time-zone offset (minutes east of UTC).
 */
import { CorruptImageError, UnsupportedFeatureError } from '../../errors.ts';
import { view } from '../../io/bytes.ts';
import { FORMAT } from './boot.ts';

export const ENTRY_SIZE = 32;
export const ATTR_READ_ONLY = 0x01;
export const ATTR_HIDDEN = 0x02;
export const ATTR_SYSTEM = 0x04;
export const ATTR_VOLUME = 0x08;
export const ATTR_DIRECTORY = 0x10;
export const ATTR_ARCHIVE = 0x20;
export const ATTR_LFN = 0x0f;
export const DELETED = 0xe5;
export const CASE_LOWER_BASE = 0x08;
export const CASE_LOWER_EXT = 0x10;
export const MAX_NAME_UNITS = 255;
export const MAX_FILE_SIZE = 0xffffffff;
/** A directory holds at most this many entries (2 MiB), as the format allows. */
export const MAX_DIR_ENTRIES = 65536;

/** A short directory entry. `name` is the 11 raw bytes (8 + 3, space padded). */
export interface ShortEntry {
  readonly name: Uint8Array;
  readonly attr: number;
  readonly ntCase: number;
  readonly createTenths: number;
  readonly createTime: number;
  readonly createDate: number;
  readonly accessDate: number;
  readonly firstCluster: number;
  readonly writeTime: number;
  readonly writeDate: number;
  readonly size: number;
}

export function decodeShortEntry(bytes: Uint8Array, fat32: boolean): ShortEntry {
  if (bytes.byteLength !== ENTRY_SIZE) throw new CorruptImageError(FORMAT, 'directory entry', `needs 32 bytes, got ${bytes.byteLength}`);
  const dv = view(bytes);
  const high = fat32 ? dv.getUint16(20, true) : 0;
  return {
    name: bytes.slice(0, 11),
    attr: bytes[11]!,
    ntCase: bytes[12]!,
    createTenths: bytes[13]!,
    createTime: dv.getUint16(14, true),
    createDate: dv.getUint16(16, true),
    accessDate: dv.getUint16(18, true),
    firstCluster: ((high << 16) | dv.getUint16(26, true)) >>> 0,
    writeTime: dv.getUint16(22, true),
    writeDate: dv.getUint16(24, true),
    size: dv.getUint32(28, true),
  };
}

export function encodeShortEntry(e: ShortEntry): Uint8Array {
  const out = new Uint8Array(ENTRY_SIZE);
  const dv = view(out);
  out.set(e.name.subarray(0, 11));
  out[11] = e.attr;
  out[12] = e.ntCase;
  out[13] = e.createTenths;
  dv.setUint16(14, e.createTime, true);
  dv.setUint16(16, e.createDate, true);
  dv.setUint16(18, e.accessDate, true);
  dv.setUint16(20, (e.firstCluster >>> 16) & 0xffff, true);
  dv.setUint16(22, e.writeTime, true);
  dv.setUint16(24, e.writeDate, true);
  dv.setUint16(26, e.firstCluster & 0xffff, true);
  dv.setUint32(28, e.size, true);
  return out;
}

/** The LFN checksum of an 11-byte short name. */
export function lfnChecksum(name: Uint8Array): number {
  let sum = 0;
  for (let i = 0; i < 11; i++) sum = (((sum & 1) << 7) + (sum >> 1) + name[i]!) & 0xff;
  return sum;
}

export interface LfnEntry {
  /** 1-based sequence number; `last` marks the first physical entry (the name's final piece). */
  readonly sequence: number;
  readonly last: boolean;
  readonly checksum: number;
  /** The 13 UTF-16 units of this piece (0x0000 terminator and 0xFFFF padding included). */
  readonly units: readonly number[];
}

const LFN_UNIT_OFFSETS = [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30];

export function decodeLfnEntry(bytes: Uint8Array): LfnEntry {
  const dv = view(bytes);
  if (bytes[11] !== ATTR_LFN) throw new CorruptImageError(FORMAT, 'long name entry', 'attribute byte is not 0x0F');
  const order = bytes[0]!;
  const sequence = order & 0x1f;
  if (sequence < 1 || sequence > 20) throw new CorruptImageError(FORMAT, 'long name entry', `sequence number ${sequence} is not 1..20`);
  return { sequence, last: (order & 0x40) !== 0, checksum: bytes[13]!, units: LFN_UNIT_OFFSETS.map((o) => dv.getUint16(o, true)) };
}

export function encodeLfnEntry(e: LfnEntry): Uint8Array {
  const out = new Uint8Array(ENTRY_SIZE);
  const dv = view(out);
  out[0] = e.sequence | (e.last ? 0x40 : 0);
  out[11] = ATTR_LFN;
  out[13] = e.checksum;
  LFN_UNIT_OFFSETS.forEach((o, i) => dv.setUint16(o, e.units[i] ?? 0xffff, true));
  return out;
}

/** The LFN entries for `name`, in on-disk order (highest sequence first). */
export function lfnEntriesFor(name: string, shortName: Uint8Array): Uint8Array[] {
  const checksum = lfnChecksum(shortName);
  const units = Array.from({ length: name.length }, (_, i) => name.charCodeAt(i));
  const count = Math.ceil(units.length / 13);
  if (units.length % 13 !== 0) units.push(0);
  while (units.length < count * 13) units.push(0xffff);
  const out: Uint8Array[] = [];
  for (let seq = count; seq >= 1; seq--) {
    out.push(encodeLfnEntry({ sequence: seq, last: seq === count, checksum, units: units.slice((seq - 1) * 13, seq * 13) }));
  }
  return out;
}

/** Joins LFN pieces (given in on-disk order) into the name, or undefined when they are not a valid set. */
export function joinLfn(pieces: readonly LfnEntry[], shortName: Uint8Array): string | undefined {
  if (pieces.length === 0 || !pieces[0]!.last || pieces[0]!.sequence !== pieces.length) return undefined;
  const sum = lfnChecksum(shortName);
  const units: number[] = [];
  for (let i = pieces.length - 1; i >= 0; i--) {
    const p = pieces[i]!;
    if (p.sequence !== pieces.length - i || p.checksum !== sum) return undefined;
    units.push(...p.units);
  }
  const end = units.indexOf(0);
  const used = end < 0 ? units : units.slice(0, end);
  if (used.length === 0 || used.length > MAX_NAME_UNITS) return undefined;
  return String.fromCharCode(...used);
}

const CP850_HIGH =
  'ÇüéâäàåçêëèïîìÄÅÉæÆôöòûùÿÖÜø£Ø×ƒáíóúñÑªº¿®¬½¼¡«»░▒▓│┤ÁÂÀ©╣║╗╝¢¥┐└┴┬├─┼ãÃ╚╔╩╦╠═╬¤ðÐÊËÈıÍÎÏ┘┌█▄¦Ì▀ÓßÔÒõÕµþÞÚÛÙýÝ¯´\u00ad±‗¾¶§÷¸°¨·¹³²■\u00a0';

/** The display form of a short name: "NAME.EXT", lower-cased per the NT case bits. */
export function shortNameText(name: Uint8Array, ntCase: number): string {
  const bytes = Array.from(name);
  if (bytes[0] === 0x05) bytes[0] = 0xe5;
  const str = (b: number[]): string => b.map((c) => (c < 0x80 ? String.fromCharCode(c) : CP850_HIGH[c - 0x80]!)).join('').replace(/ +$/, '');
  let base = str(bytes.slice(0, 8));
  let ext = str(bytes.slice(8, 11));
  if (ntCase & CASE_LOWER_BASE) base = base.toLowerCase();
  if (ntCase & CASE_LOWER_EXT) ext = ext.toLowerCase();
  return ext ? `${base}.${ext}` : base;
}

/** Case folding for comparisons: each UTF-16 unit upper-cased where that keeps it one unit. */
export function foldName(name: string): string {
  let out = '';
  for (let i = 0; i < name.length; i++) {
    const ch = name[i]!;
    const up = ch.toUpperCase();
    out += up.length === 1 ? up : ch;
  }
  return out;
}

const FORBIDDEN_LONG = new Set('"*/:<>?\\|');

/** Refuses names FAT cannot hold (typed error naming the reason). */
export function validateName(name: string): void {
  const refuse = (why: string): never => {
    throw new UnsupportedFeatureError(FORMAT, 'file name', `"${name}" ${why}`);
  };
  if (name.length === 0) refuse('is empty');
  if (name === '.' || name === '..') refuse('is reserved');
  if (name.length > MAX_NAME_UNITS) refuse(`is longer than ${MAX_NAME_UNITS} UTF-16 units`);
  for (const ch of name) {
    if (ch.charCodeAt(0) < 0x20 || FORBIDDEN_LONG.has(ch)) refuse(`contains ${JSON.stringify(ch)}, which FAT does not allow`);
  }
  if (/[ .]$/.test(name)) refuse('ends in a dot or a space, which FAT drops');
}

const SHORT_SPECIAL = new Set("!#$%&'()-@^_`{}~");
const isShortChar = (ch: string): boolean => /^[A-Z0-9]$/.test(ch) || SHORT_SPECIAL.has(ch);

function padded(base: string, ext: string): Uint8Array {
  const out = new Uint8Array(11).fill(0x20);
  for (let i = 0; i < base.length; i++) out[i] = base.charCodeAt(i);
  for (let i = 0; i < ext.length; i++) out[8 + i] = ext.charCodeAt(i);
  if (out[0] === 0xe5) out[0] = 0x05;
  return out;
}

/**
 * The name as a plain 8.3 entry when it needs no LFN: its 11 bytes and NT case bits; otherwise undefined.
 */
export function plainShortName(name: string): { name: Uint8Array; ntCase: number } | undefined {
  const dot = name.lastIndexOf('.');
  const base = dot < 0 ? name : name.slice(0, dot);
  const ext = dot < 0 ? '' : name.slice(dot + 1);
  if (base.length === 0 || base.length > 8 || ext.length > 3 || (dot >= 0 && ext.length === 0)) return undefined;
  if (base.includes('.')) return undefined;
  const caseOf = (s: string): number | undefined => {
    if (s === s.toUpperCase()) return 0;
    if (s === s.toLowerCase()) return 1;
    return undefined;
  };
  const bc = caseOf(base);
  const ec = caseOf(ext);
  if (bc === undefined || ec === undefined) return undefined;
  const B = base.toUpperCase();
  const E = ext.toUpperCase();
  if (![...B, ...E].every(isShortChar)) return undefined;
  return { name: padded(B, E), ntCase: (bc ? CASE_LOWER_BASE : 0) | (ec ? CASE_LOWER_EXT : 0) };
}

function fnv1a(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

/** A Windows-style 8.3 alias for `name` not in `taken` (keys: the 11 bytes as latin1 text). */
export function makeAlias(name: string, taken: (alias: string) => boolean): Uint8Array {
  let lossy = false;
  const convert = (s: string): string => {
    let out = '';
    for (const ch of s.toUpperCase()) {
      if (ch === ' ') continue;
      if (isShortChar(ch)) out += ch;
      else {
        out += '_';
        lossy = true;
      }
    }
    return out;
  };
  const stripped = name.replace(/^[. ]+/, '');
  if (stripped.length !== name.length) lossy = true;
  const dot = stripped.lastIndexOf('.');
  const rawBase = dot < 0 ? stripped : stripped.slice(0, dot);
  const rawExt = dot < 0 ? '' : stripped.slice(dot + 1);
  const baseAll = convert(rawBase.replace(/\./g, ''));
  if (rawBase.includes('.')) lossy = true;
  const extAll = convert(rawExt);
  const base = baseAll.slice(0, 8) || '_';
  const ext = extAll.slice(0, 3);
  const fits = !lossy && baseAll.length <= 8 && extAll.length <= 3;
  const key = (b: Uint8Array): string => String.fromCharCode(...b);
  if (fits) {
    const plain = padded(base, ext);
    if (!taken(key(plain))) return plain;
  }
  for (let n = 1; n <= 4; n++) {
    const tail = `~${n}`;
    const candidate = padded(base.slice(0, 8 - tail.length) + tail, ext);
    if (!taken(key(candidate))) return candidate;
  }
  let hash = fnv1a(name);
  for (let round = 0; round < 0x10000; round++) {
    const hex = ((hash + round) & 0xffff).toString(16).toUpperCase().padStart(4, '0');
    for (let n = 1; n <= 9; n++) {
      const candidate = padded(base.slice(0, 2) + hex + `~${n}`, ext);
      if (!taken(key(candidate))) return candidate;
    }
  }
  throw new UnsupportedFeatureError(FORMAT, 'file name', `no free 8.3 alias for "${name}"`);
}

// ---- timestamps ------------------------------------------------------------------------------

export interface FatStamp {
  readonly date: number;
  readonly time: number;
  /** Units of 10 ms past the 2-second time (0..199), for creation times. */
  readonly tenths: number;
}

const MIN_MS = Date.UTC(1980, 0, 1);
const MAX_MS = Date.UTC(2107, 11, 31, 23, 59, 58);

/** A UTC time in ms as FAT local date/time fields. */
export function toFatStamp(ms: number, offsetMinutes: number): FatStamp {
  const local = Math.min(MAX_MS, Math.max(MIN_MS, ms + offsetMinutes * 60_000));
  const d = new Date(local);
  return {
    date: ((d.getUTCFullYear() - 1980) << 9) | ((d.getUTCMonth() + 1) << 5) | d.getUTCDate(),
    time: (d.getUTCHours() << 11) | (d.getUTCMinutes() << 5) | (d.getUTCSeconds() >> 1),
    tenths: ((d.getUTCSeconds() & 1) * 100 + Math.floor(d.getUTCMilliseconds() / 10)) % 200,
  };
}

/** FAT local date/time as UTC ms; impossible fields (month 0, day 0, 25 o'clock) clamp into range. */
export function fromFatStamp(date: number, time: number, tenths: number, offsetMinutes: number): number {
  const year = 1980 + (date >> 9);
  const month = Math.min(12, Math.max(1, (date >> 5) & 0x0f));
  const day = Math.max(1, date & 0x1f);
  const hours = Math.min(23, time >> 11);
  const minutes = Math.min(59, (time >> 5) & 0x3f);
  const seconds = Math.min(58, (time & 0x1f) * 2);
  const extra = Math.min(199, tenths) * 10;
  return Date.UTC(year, month - 1, day, hours, minutes, seconds) + extra - offsetMinutes * 60_000;
}
