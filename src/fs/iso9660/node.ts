/**
 * What a directory record becomes in a listing: an IsoNode (an FsStat with a name and where its data is).
 *
 * Design notes
 * - `nodeOf` is the general builder: it takes a decoded record (record.ts) and the folded Rock Ridge
 *   entries (susp.ts) and handles everything (symlinks, device numbers, relocation, long-form times).
 * - `quickNode` is a one-pass builder for the records nearly every image is made of: a plain file or
 *   directory whose System Use area holds at most PX, TF (short form) and one whole NM entry. It reads
 *   the bytes in place (no record object, no entry list, no subarrays) and returns undefined for
 *   anything else — another entry that matters (CE, SL, CL, RE, PL, PN, SP, ER, SF), a long-form TF,
 *   a split or special NM, the associated or multi-extent flag — and for any field the general path
 *   would refuse, so the general path then decodes that record and throws its own typed error. For
 *   the records it accepts it gives the same node as the general path (test/iso9660/quick.test.ts
 *   checks this on mutated records).
 * - Equal times are shared between consecutive nodes (a `TimeMemo`): an image written in one go has
 *   a handful of distinct times, so a 100k-entry listing keeps a few time objects, not 300k.
 */
import { Buffer } from 'node:buffer';
import type { Disk } from '../../io/disk.ts';
import type { FsStat, FsTime, NodeKind } from '../filesystem.ts';
import { corrupt, daysFromCivil, type IsoTime } from './format.ts';
import { FLAG_ASSOCIATED, FLAG_DIRECTORY, FLAG_MULTI_EXTENT, type DirRecord } from './record.ts';
import type { RockRidge } from './susp.ts';

export type Namespace = 'rockridge' | 'joliet' | 'iso';

/** A byte range of the image. */
export interface Extent {
  readonly offset: number;
  readonly length: number;
}

export interface IsoNode extends FsStat {
  readonly name: string;
  /** The first (nearly always the only) extent: its image offset and length. */
  readonly offset: number;
  readonly dataLength: number;
  /** Every extent, for a file of several (multi-extent); undefined for one. */
  readonly more: readonly Extent[] | undefined;
  readonly symlink: string | undefined;
  readonly interleaved: boolean;
}

const S_IFMT = 0o170000;
const KIND_OF: Record<number, NodeKind> = { 0o040000: 'dir', 0o100000: 'file', 0o120000: 'symlink', 0o020000: 'chardev', 0o060000: 'blockdev', 0o010000: 'fifo', 0o140000: 'socket' };

const utf8 = new TextDecoder('utf-8');
const latin1 = new TextDecoder('latin1');
const encoder = new TextEncoder();

/** Every node is made here, so all nodes have one shape (the same properties in the same order). */
function makeNode(
  name: string,
  kind: NodeKind,
  size: number,
  mode: number,
  uid: number,
  gid: number,
  nlink: number,
  mtime: FsTime,
  atime: FsTime | undefined,
  ctime: FsTime | undefined,
  offset: number,
  dataLength: number,
  more: readonly Extent[] | undefined,
  symlink: string | undefined,
  interleaved: boolean,
): IsoNode {
  return { name, kind, size, mode, uid, gid, nlink, mtime, atime, ctime, offset, dataLength, more, symlink, interleaved };
}

/** A node with another name or kind (relocated directories). */
export function renamed(n: IsoNode, name: string, kind: NodeKind): IsoNode {
  return makeNode(name, kind, n.size, n.mode, n.uid, n.gid, n.nlink, n.mtime, n.atime, n.ctime, n.offset, n.dataLength, n.more, n.symlink, n.interleaved);
}

/** A multi-extent file: the node of its first record with all its extents and their total size. */
export function withExtents(n: IsoNode, extents: readonly Extent[]): IsoNode {
  const size = extents.reduce((s, e) => s + e.length, 0);
  return makeNode(n.name, n.kind, size, n.mode, n.uid, n.gid, n.nlink, n.mtime, n.atime, n.ctime, extents[0]!.offset, extents[0]!.length, extents, n.symlink, n.interleaved);
}

/** The byte ranges of the image holding a node's data, in order. */
export function extentsOf(n: IsoNode): readonly Extent[] {
  return n.more ?? [{ offset: n.offset, length: n.dataLength }];
}

export function stripVersion(name: string): string {
  const semi = name.lastIndexOf(';');
  const base = semi >= 0 ? name.slice(0, semi) : name;
  return base.endsWith('.') && base.length > 1 ? base.slice(0, -1) : base;
}

export function ucs2(bytes: Uint8Array): string {
  let s = '';
  for (let i = 0; i + 1 < bytes.byteLength; i += 2) s += String.fromCharCode((bytes[i]! << 8) | bytes[i + 1]!);
  return s;
}

export function extentOf(disk: Disk, r: DirRecord, blockSize: number, at: number): Extent {
  const offset = (r.extent + r.extAttrLength) * blockSize;
  if (r.dataLength > 0 && offset + r.dataLength > disk.size) {
    throw corrupt('record.extent', `${r.dataLength} bytes at block ${r.extent} run past the image (${disk.size} bytes)`, at + 2);
  }
  return { offset, length: r.dataLength };
}

export function nameOf(r: DirRecord, ns: Namespace, rr: RockRidge | undefined): string {
  if (ns === 'rockridge' && rr?.name) return utf8.decode(rr.name);
  if (ns === 'joliet') return stripVersion(ucs2(r.name));
  return stripVersion(latin1.decode(r.name));
}

/** The general builder: a decoded record and its folded Rock Ridge entries (undefined outside Rock Ridge). */
export function nodeOf(disk: Disk, blockSize: number, name: string, r: DirRecord, rr: RockRidge | undefined): IsoNode {
  const extent = extentOf(disk, r, blockSize, 0);
  let kind: NodeKind = r.isDirectory ? 'dir' : 'file';
  let mode = r.isDirectory ? 0o755 : 0o644;
  let uid = 0;
  let gid = 0;
  let nlink = 1;
  if (rr?.px) {
    const k = KIND_OF[rr.px.mode & S_IFMT];
    if (k === undefined) throw corrupt('rr.PX.mode', `file type 0o${(rr.px.mode & S_IFMT).toString(8)} is unknown`);
    if ((k === 'dir') !== r.isDirectory && rr.childLink === undefined) throw corrupt('rr.PX.mode', `says ${k} but the record ${r.isDirectory ? 'is' : 'is not'} a directory`);
    kind = k;
    mode = rr.px.mode & 0o7777;
    ({ uid, gid, nlink } = rr.px);
  }
  if (kind === 'symlink' && rr?.symlink === undefined) throw corrupt('rr.SL', 'a symbolic link without an SL entry');
  const times = rr?.times;
  const size = kind === 'file' || kind === 'dir' ? r.dataLength : kind === 'symlink' ? encoder.encode(rr!.symlink!).byteLength : 0;
  const symlink = kind === 'symlink' ? rr!.symlink! : undefined;
  return makeNode(name, kind, size, mode, uid, gid, nlink, times?.modify ?? r.recorded, times?.access || undefined, times?.attributes || undefined, extent.offset, extent.length, undefined, symlink, r.fileUnitSize !== 0 || r.interleaveGap !== 0);
}

// ---- the one-pass builder -----------------------------------------------------------------------

/** The last few distinct times seen (a node has up to three), handed out again instead of new objects for equal values. */
export class TimeMemo {
  readonly #slots: IsoTime[] = [{ sec: 0, nsec: 0 }, { sec: 0, nsec: 0 }, { sec: 0, nsec: 0 }, { sec: 0, nsec: 0 }];
  #next = 0;

  /** A time of `sec` seconds and no nanoseconds (the 7-byte form has none). */
  seconds(sec: number): IsoTime {
    const slots = this.#slots;
    for (let i = 0; i < slots.length; i++) if (slots[i]!.sec === sec) return slots[i]!;
    const t = { sec, nsec: 0 };
    slots[this.#next] = t;
    this.#next = (this.#next + 1) % slots.length;
    return t;
  }
}

export interface QuickContext {
  readonly namespace: Namespace;
  /** SUSP LEN_SKP (Rock Ridge only). */
  readonly skip: number;
  readonly blockSize: number;
  readonly diskSize: number;
  readonly times: TimeMemo;
}

const SIG_PX = 0x5058;
const SIG_TF = 0x5446;
const SIG_NM = 0x4e4d;
const SIG_ST = 0x5354;
/** Entries the general path acts on (or refuses) that this builder does not handle. */
const GENERAL_ONLY = new Set(['CE', 'SP', 'ER', 'PN', 'SL', 'CL', 'PL', 'RE', 'SF'].map((s) => (s.charCodeAt(0) << 8) | s.charCodeAt(1)));
const TF_LONG = 0x80;
const TF_MODIFY = 1 << 1;
const TF_ACCESS = 1 << 2;
const TF_ATTRIBUTES = 1 << 3;

/** A both-endian 32-bit field, or -1 when its copies differ. */
function both32(b: Uint8Array, at: number): number {
  const le = (b[at]! | (b[at + 1]! << 8) | (b[at + 2]! << 16) | (b[at + 3]! << 24)) >>> 0;
  const be = ((b[at + 4]! << 24) | (b[at + 5]! << 16) | (b[at + 6]! << 8) | b[at + 7]!) >>> 0;
  return le === be ? le : -1;
}

/** The 7-byte date as seconds, or NaN where decodeShortDate would throw. */
function shortDate(b: Uint8Array, at: number): number {
  const raw = b[at + 6]!;
  const gmt = raw > 127 ? raw - 256 : raw;
  if (gmt < -48 || gmt > 52) return NaN;
  const mo = b[at + 1]!;
  const d = b[at + 2]!;
  if (mo === 0 && d === 0) return 0;
  const h = b[at + 3]!;
  const mi = b[at + 4]!;
  const s = b[at + 5]!;
  if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || s > 60) return NaN;
  return daysFromCivil(1900 + b[at]!, mo, d) * 86400 + h * 3600 + mi * 60 + s - gmt * 900;
}

/** Bytes [from, to) are all below 0x80 (then UTF-8, windows-1252 and Latin-1 read them alike). */
function ascii(b: Uint8Array, from: number, to: number): boolean {
  for (let i = from; i < to; i++) if (b[i]! > 0x7f) return false;
  return true;
}

/**
 * The node of the record starting at b[at] (b[at] is its length, the record lies inside b and
 * does not cross a sector; it is not a directory's '.' or '..'), or undefined when the general
 * path must decode it. See the design notes for what is handled here.
 */
export function quickNode(b: Buffer, at: number, ctx: QuickContext): IsoNode | undefined {
  const length = b[at]!;
  if (length < 34) return undefined;
  const end = at + length;
  const nameLength = b[at + 32]!;
  if (nameLength === 0) return undefined;
  const nameStart = at + 33;
  const nameEnd = nameStart + nameLength;
  const suStart = nameEnd + (nameLength % 2 === 0 ? 1 : 0);
  if (suStart > end) return undefined;
  const flags = b[at + 25]!;
  if (flags & (FLAG_ASSOCIATED | FLAG_MULTI_EXTENT)) return undefined;
  const extent = both32(b, at + 2);
  const dataLength = both32(b, at + 10);
  if (extent < 0 || dataLength < 0) return undefined;
  const recorded = shortDate(b, at + 18);
  if (Number.isNaN(recorded)) return undefined;
  if ((b[at + 28]! | (b[at + 29]! << 8)) !== ((b[at + 30]! << 8) | b[at + 31]!)) return undefined;
  const offset = (extent + b[at + 1]!) * ctx.blockSize;
  if (dataLength > 0 && offset + dataLength > ctx.diskSize) return undefined;
  const isDirectory = (flags & FLAG_DIRECTORY) !== 0;
  const interleaved = b[at + 26] !== 0 || b[at + 27] !== 0;

  if (ctx.namespace !== 'rockridge') {
    let name: string;
    if (ctx.namespace === 'joliet') name = stripVersion(ucs2(b.subarray(nameStart, nameEnd)));
    else name = stripVersion(ascii(b, nameStart, nameEnd) ? b.toString('latin1', nameStart, nameEnd) : latin1.decode(b.subarray(nameStart, nameEnd)));
    return makeNode(name, isDirectory ? 'dir' : 'file', dataLength, isDirectory ? 0o755 : 0o644, 0, 0, 1, ctx.times.seconds(recorded), undefined, undefined, offset, dataLength, undefined, undefined, interleaved);
  }

  let px = false;
  let pxMode = 0;
  let nlink = 1;
  let uid = 0;
  let gid = 0;
  let tf = false;
  let modify = NaN;
  let access = NaN;
  let attributes = NaN;
  let nmStart = -1;
  let nmEnd = -1;
  const skip = ctx.skip;
  for (let p = suStart + skip <= end ? suStart + skip : end; p + 4 <= end; ) {
    const s0 = b[p]!;
    const s1 = b[p + 1]!;
    const len = b[p + 2]!;
    if (s0 === 0 && s1 === 0 && len === 0) break; // padding
    if (len < 4 || p + len > end) return undefined;
    const sig = (s0 << 8) | s1;
    if (sig === SIG_PX) {
      if (len < 36) return undefined;
      pxMode = both32(b, p + 4);
      nlink = both32(b, p + 12);
      uid = both32(b, p + 20);
      gid = both32(b, p + 28);
      if (pxMode < 0 || nlink < 0 || uid < 0 || gid < 0) return undefined;
      if (len >= 44 && both32(b, p + 36) < 0) return undefined;
      px = true;
    } else if (sig === SIG_TF) {
      if (len < 5) return undefined;
      const f = b[p + 4]!;
      if (f & TF_LONG) return undefined;
      tf = true;
      modify = access = attributes = NaN;
      let q = p + 5;
      for (let bit = 1; bit < TF_LONG; bit <<= 1) {
        if (!(f & bit)) continue;
        if (q + 7 > p + len) return undefined;
        const t = shortDate(b, q);
        if (Number.isNaN(t)) return undefined;
        if (bit === TF_MODIFY) modify = t;
        else if (bit === TF_ACCESS) access = t;
        else if (bit === TF_ATTRIBUTES) attributes = t;
        q += 7;
      }
    } else if (sig === SIG_NM) {
      if (nmStart >= 0 || len < 6 || b[p + 4] !== 0) return undefined;
      nmStart = p + 5;
      nmEnd = p + len;
    } else if (sig === SIG_ST) {
      break;
    } else if (GENERAL_ONLY.has(sig)) {
      return undefined;
    }
    p += len;
  }

  let kind: NodeKind = isDirectory ? 'dir' : 'file';
  let mode = isDirectory ? 0o755 : 0o644;
  if (px) {
    const k = KIND_OF[pxMode & S_IFMT];
    if (k === undefined || (k === 'dir') !== isDirectory || k === 'symlink') return undefined;
    kind = k;
    mode = pxMode & 0o7777;
  }
  let name: string;
  if (nmStart >= 0) name = ascii(b, nmStart, nmEnd) ? b.toString('latin1', nmStart, nmEnd) : utf8.decode(b.subarray(nmStart, nmEnd));
  else name = stripVersion(ascii(b, nameStart, nameEnd) ? b.toString('latin1', nameStart, nameEnd) : latin1.decode(b.subarray(nameStart, nameEnd)));
  const times = ctx.times;
  const mtime = times.seconds(tf && !Number.isNaN(modify) ? modify : recorded);
  const atime = tf && !Number.isNaN(access) ? times.seconds(access) : undefined;
  const ctime = tf && !Number.isNaN(attributes) ? times.seconds(attributes) : undefined;
  const size = kind === 'file' || kind === 'dir' ? dataLength : 0;
  return makeNode(name, kind, size, mode, uid, gid, nlink, mtime, atime, ctime, offset, dataLength, undefined, undefined, interleaved);
}
