/**
 * System Use Sharing Protocol (SUSP 1.12) and Rock Ridge (RRIP 1.12) entries in a directory record's
 * System Use area.
 *
 * Design notes
 * - An entry is signature (2 bytes), length, version, data. `decodeEntries` splits an area; each
 *   typed decoder (PX, PN, SL, NM, TF, CE, SP, ER, CL, PL) checks its own length and fields and has an
 *   encoder beside it.
 * - CE continuation areas are read from the disk within their bounds (block, offset, length inside the
 *   image and inside one block run); the chain is cut after MAX_CONTINUATIONS hops and a repeated area
 *   is a cycle. ST ends the area.
 * - `rockRidge` folds the entries of one record into what the filesystem needs: the name (NM pieces
 *   joined), POSIX attributes, the symlink target (SL components joined, across SL entries), times,
 *   and the relocation marks (CL: this placeholder file is the directory at that block; RE: this
 *   directory was moved here and is hidden; PL in '..'). SF (sparse files) is refused with a typed error.
 */
import type { Disk } from '../../io/disk.ts';
import { readAt } from '../../io/disk.ts';
import { UnsupportedFeatureError } from '../../errors.ts';
import { FORMAT, both32, corrupt, decodeLongDate, decodeShortDate, encodeLongDate, encodeShortDate, need, putBoth32, type IsoTime } from './format.ts';

export const MAX_CONTINUATIONS = 32;

export interface SuspEntry {
  readonly sig: string;
  readonly version: number;
  /** The entry's bytes after the 4-byte header. */
  readonly data: Uint8Array;
  /** Image offset of the entry (for errors). */
  readonly offset: number;
}

export function decodeEntries(area: Uint8Array, base = 0): SuspEntry[] {
  const out: SuspEntry[] = [];
  let at = 0;
  while (at + 4 <= area.byteLength) {
    const length = area[at + 2]!;
    const sig = String.fromCharCode(area[at]!, area[at + 1]!);
    if (area[at] === 0 && area[at + 1] === 0 && length === 0) break; // padding
    if (length < 4) throw corrupt(`susp.${sig}.length`, `is ${length}, below 4`, base + at + 2);
    if (at + length > area.byteLength) throw corrupt(`susp.${sig}.length`, `${length} runs past the System Use area`, base + at + 2);
    out.push({ sig, version: area[at + 3]!, data: area.subarray(at + 4, at + length), offset: base + at });
    if (sig === 'ST') break;
    at += length;
  }
  return out;
}

export function encodeEntry(sig: string, data: Uint8Array, version = 1): Uint8Array {
  if (data.byteLength + 4 > 255) throw new RangeError(`a ${sig} entry of ${data.byteLength + 4} bytes does not fit in 255`);
  const b = new Uint8Array(4 + data.byteLength);
  b[0] = sig.charCodeAt(0);
  b[1] = sig.charCodeAt(1);
  b[2] = b.byteLength;
  b[3] = version;
  b.set(data, 4);
  return b;
}

function needData(e: SuspEntry, n: number): void {
  need(e.data, 0, n, `susp.${e.sig}`, e.offset + 4);
}

// ---- SP, CE, ER --------------------------------------------------------------------------------

export interface SpEntry {
  readonly skip: number;
}

export function decodeSP(e: SuspEntry): SpEntry {
  needData(e, 3);
  if (e.data[0] !== 0xbe || e.data[1] !== 0xef) throw corrupt('susp.SP.check', 'check bytes are not BE EF', e.offset + 4);
  return { skip: e.data[2]! };
}

export function encodeSP(sp: SpEntry): Uint8Array {
  return encodeEntry('SP', Uint8Array.of(0xbe, 0xef, sp.skip));
}

export interface CeEntry {
  readonly block: number;
  readonly offset: number;
  readonly length: number;
}

export function decodeCE(e: SuspEntry): CeEntry {
  needData(e, 24);
  const base = e.offset + 4;
  return { block: both32(e.data, 0, 'susp.CE.block', base), offset: both32(e.data, 8, 'susp.CE.offset', base), length: both32(e.data, 16, 'susp.CE.length', base) };
}

export function encodeCE(ce: CeEntry): Uint8Array {
  const d = new Uint8Array(24);
  putBoth32(d, 0, ce.block);
  putBoth32(d, 8, ce.offset);
  putBoth32(d, 16, ce.length);
  return encodeEntry('CE', d);
}

export interface ErEntry {
  readonly id: string;
  readonly descriptor: string;
  readonly source: string;
  readonly extensionVersion: number;
}

export function decodeER(e: SuspEntry): ErEntry {
  needData(e, 4);
  const [li, ld, ls] = [e.data[0]!, e.data[1]!, e.data[2]!];
  needData(e, 4 + li + ld + ls);
  const text = (from: number, n: number) => new TextDecoder('latin1').decode(e.data.subarray(from, from + n));
  return { id: text(4, li), descriptor: text(4 + li, ld), source: text(4 + li + ld, ls), extensionVersion: e.data[3]! };
}

export function encodeER(er: ErEntry): Uint8Array {
  const enc = (s: string) => Uint8Array.from(s, (c) => c.charCodeAt(0) & 0xff);
  const [id, des, src] = [enc(er.id), enc(er.descriptor), enc(er.source)];
  const d = new Uint8Array(4 + id.length + des.length + src.length);
  d.set([id.length, des.length, src.length, er.extensionVersion]);
  d.set(id, 4);
  d.set(des, 4 + id.length);
  d.set(src, 4 + id.length + des.length);
  return encodeEntry('ER', d);
}

// ---- Rock Ridge -------------------------------------------------------------------------------

export interface PxEntry {
  readonly mode: number;
  readonly nlink: number;
  readonly uid: number;
  readonly gid: number;
  readonly ino: number | undefined;
}

export function decodePX(e: SuspEntry): PxEntry {
  needData(e, 32);
  const base = e.offset + 4;
  return {
    mode: both32(e.data, 0, 'rr.PX.mode', base),
    nlink: both32(e.data, 8, 'rr.PX.nlink', base),
    uid: both32(e.data, 16, 'rr.PX.uid', base),
    gid: both32(e.data, 24, 'rr.PX.gid', base),
    ino: e.data.byteLength >= 40 ? both32(e.data, 32, 'rr.PX.ino', base) : undefined,
  };
}

export function encodePX(px: PxEntry): Uint8Array {
  const d = new Uint8Array(px.ino === undefined ? 32 : 40);
  putBoth32(d, 0, px.mode);
  putBoth32(d, 8, px.nlink);
  putBoth32(d, 16, px.uid);
  putBoth32(d, 24, px.gid);
  if (px.ino !== undefined) putBoth32(d, 32, px.ino);
  return encodeEntry('PX', d);
}

export interface PnEntry {
  readonly high: number;
  readonly low: number;
}

export function decodePN(e: SuspEntry): PnEntry {
  needData(e, 16);
  return { high: both32(e.data, 0, 'rr.PN.high', e.offset + 4), low: both32(e.data, 8, 'rr.PN.low', e.offset + 4) };
}

export function encodePN(pn: PnEntry): Uint8Array {
  const d = new Uint8Array(16);
  putBoth32(d, 0, pn.high);
  putBoth32(d, 8, pn.low);
  return encodeEntry('PN', d);
}

export const SL_CONTINUE = 0x01;
export const SL_CURRENT = 0x02;
export const SL_PARENT = 0x04;
export const SL_ROOT = 0x08;

export interface SlComponent {
  readonly flags: number;
  readonly content: Uint8Array;
}

export interface SlEntry {
  /** Bit 0: the target continues in the next SL entry. */
  readonly flags: number;
  readonly components: readonly SlComponent[];
}

export function decodeSL(e: SuspEntry): SlEntry {
  needData(e, 1);
  const components: SlComponent[] = [];
  let at = 1;
  while (at < e.data.byteLength) {
    need(e.data, at, 2, 'rr.SL.component', e.offset + 4);
    const flags = e.data[at]!;
    const length = e.data[at + 1]!;
    need(e.data, at + 2, length, 'rr.SL.component.length', e.offset + 4);
    if (flags & (SL_CURRENT | SL_PARENT | SL_ROOT) && length !== 0) {
      throw corrupt('rr.SL.component', `a '.', '..' or '/' component has ${length} content bytes`, e.offset + 4 + at);
    }
    components.push({ flags, content: e.data.slice(at + 2, at + 2 + length) });
    at += 2 + length;
  }
  return { flags: e.data[0]!, components };
}

export function encodeSL(sl: SlEntry): Uint8Array {
  const size = 1 + sl.components.reduce((n, c) => n + 2 + c.content.byteLength, 0);
  const d = new Uint8Array(size);
  d[0] = sl.flags;
  let at = 1;
  for (const c of sl.components) {
    d[at] = c.flags;
    d[at + 1] = c.content.byteLength;
    d.set(c.content, at + 2);
    at += 2 + c.content.byteLength;
  }
  return encodeEntry('SL', d);
}

export const NM_CONTINUE = 0x01;
export const NM_CURRENT = 0x02;
export const NM_PARENT = 0x04;

export interface NmEntry {
  readonly flags: number;
  readonly name: Uint8Array;
}

export function decodeNM(e: SuspEntry): NmEntry {
  needData(e, 1);
  return { flags: e.data[0]!, name: e.data.slice(1) };
}

export function encodeNM(nm: NmEntry): Uint8Array {
  const d = new Uint8Array(1 + nm.name.byteLength);
  d[0] = nm.flags;
  d.set(nm.name, 1);
  return encodeEntry('NM', d);
}

const TF_LONG = 0x80;
const TF_KINDS = ['creation', 'modify', 'access', 'attributes', 'backup', 'expiration', 'effective'] as const;
export type TfKind = (typeof TF_KINDS)[number];

export type TfEntry = { readonly long: boolean } & { readonly [K in TfKind]?: IsoTime };

export function decodeTF(e: SuspEntry): TfEntry {
  needData(e, 1);
  const flags = e.data[0]!;
  const long = (flags & TF_LONG) !== 0;
  const width = long ? 17 : 7;
  const out: Record<string, IsoTime | boolean> = { long };
  let at = 1;
  for (let bit = 0; bit < TF_KINDS.length; bit++) {
    if (!(flags & (1 << bit))) continue;
    const field = `rr.TF.${TF_KINDS[bit]}`;
    need(e.data, at, width, field, e.offset + 4);
    const t = long ? decodeLongDate(e.data, at, field, e.offset + 4) : decodeShortDate(e.data, at, field, e.offset + 4);
    if (t) out[TF_KINDS[bit]!] = t;
    at += width;
  }
  return out as TfEntry;
}

export function encodeTF(tf: TfEntry): Uint8Array {
  let flags = tf.long ? TF_LONG : 0;
  const parts: Uint8Array[] = [];
  TF_KINDS.forEach((k, bit) => {
    const t = tf[k];
    if (t === undefined) return;
    flags |= 1 << bit;
    parts.push(tf.long ? encodeLongDate(t) : encodeShortDate(t));
  });
  const d = new Uint8Array(1 + parts.reduce((n, p) => n + p.byteLength, 0));
  d[0] = flags;
  let at = 1;
  for (const p of parts) {
    d.set(p, at);
    at += p.byteLength;
  }
  return encodeEntry('TF', d);
}

/** CL and PL: a block number (both-endian). */
export function decodeLink(e: SuspEntry): number {
  needData(e, 8);
  return both32(e.data, 0, `rr.${e.sig}.block`, e.offset + 4);
}

export function encodeLink(sig: 'CL' | 'PL', block: number): Uint8Array {
  const d = new Uint8Array(8);
  putBoth32(d, 0, block);
  return encodeEntry(sig, d);
}

// ---- reading a record's whole System Use ------------------------------------------------------

/**
 * The entries of a record's System Use area followed through its CE continuation areas. `skip` is
 * the SP entry's LEN_SKP (bytes before the entries in each record's area).
 */
export async function systemUseEntries(disk: Disk, area: Uint8Array, areaOffset: number, skip: number, blockSize: number): Promise<SuspEntry[]> {
  const entries: SuspEntry[] = [];
  let current = skip <= area.byteLength ? decodeEntries(area.subarray(skip), areaOffset + skip) : [];
  const seen = new Set<string>();
  for (let hop = 0; ; hop++) {
    let next: CeEntry | undefined;
    for (const e of current) {
      if (e.sig === 'CE') next = decodeCE(e);
      else entries.push(e);
    }
    if (!next) return entries;
    const at = next.block * blockSize + next.offset;
    const where = current.find((e) => e.sig === 'CE')!.offset;
    if (hop >= MAX_CONTINUATIONS) throw corrupt('susp.CE', `more than ${MAX_CONTINUATIONS} continuation areas`, where);
    if (next.offset >= blockSize || next.length > 64 * blockSize || at + next.length > disk.size) {
      throw corrupt('susp.CE', `continuation area of ${next.length} bytes at block ${next.block} offset ${next.offset} is outside the image`, where);
    }
    const key = `${next.block}:${next.offset}`;
    if (seen.has(key)) throw corrupt('susp.CE', `continuation areas form a cycle at block ${next.block}`, where);
    seen.add(key);
    current = decodeEntries(await readAt(disk, at, next.length), at);
  }
}

export interface RockRidge {
  /** An SP entry was seen (only in the root's '.' record). */
  readonly sp: SpEntry | undefined;
  readonly extensions: readonly ErEntry[];
  readonly name: Uint8Array | undefined;
  readonly px: PxEntry | undefined;
  readonly pn: PnEntry | undefined;
  readonly symlink: string | undefined;
  readonly times: TfEntry | undefined;
  /** CL: this record stands for the directory relocated to that block. */
  readonly childLink: number | undefined;
  /** PL (in a relocated directory's '..'): the original parent's block. */
  readonly parentLink: number | undefined;
  /** RE: this directory was relocated here and is listed under its original parent instead. */
  readonly relocated: boolean;
  /** Any Rock Ridge entry at all. */
  readonly any: boolean;
}

const utf8 = new TextDecoder('utf-8');

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.byteLength;
  }
  return out;
}

export function rockRidge(entries: readonly SuspEntry[]): RockRidge {
  let sp: SpEntry | undefined;
  const extensions: ErEntry[] = [];
  const nameParts: Uint8Array[] = [];
  let nameDone = false;
  let special = false;
  let px: PxEntry | undefined;
  let pn: PnEntry | undefined;
  let times: TfEntry | undefined;
  let childLink: number | undefined;
  let parentLink: number | undefined;
  let relocated = false;
  let any = false;
  let linkParts: string[] | undefined;
  let glue = false;
  let linkDone = false;
  for (const e of entries) {
    switch (e.sig) {
      case 'SP':
        sp = decodeSP(e);
        break;
      case 'ER':
        extensions.push(decodeER(e));
        break;
      case 'PX':
        px = decodePX(e);
        any = true;
        break;
      case 'PN':
        pn = decodePN(e);
        any = true;
        break;
      case 'NM': {
        any = true;
        const nm = decodeNM(e);
        if (nm.flags & (NM_CURRENT | NM_PARENT)) special = true;
        if (!nameDone) nameParts.push(nm.name);
        if (!(nm.flags & NM_CONTINUE)) nameDone = true;
        break;
      }
      case 'SL': {
        any = true;
        if (linkDone) break;
        const sl = decodeSL(e);
        linkParts ??= [];
        for (const c of sl.components) {
          const text = c.flags & SL_CURRENT ? '.' : c.flags & SL_PARENT ? '..' : c.flags & SL_ROOT ? '' : utf8.decode(c.content);
          if (glue && linkParts.length > 0) linkParts[linkParts.length - 1] += text;
          else linkParts.push(text);
          glue = (c.flags & SL_CONTINUE) !== 0;
        }
        if (!(sl.flags & SL_CONTINUE)) linkDone = true;
        break;
      }
      case 'TF':
        times = decodeTF(e);
        any = true;
        break;
      case 'CL':
        childLink = decodeLink(e);
        any = true;
        break;
      case 'PL':
        parentLink = decodeLink(e);
        any = true;
        break;
      case 'RE':
        relocated = true;
        any = true;
        break;
      case 'SF':
        throw new UnsupportedFeatureError(FORMAT, 'Rock Ridge sparse file (SF entry)', `at byte ${e.offset}`);
    }
  }
  let symlink: string | undefined;
  if (linkParts) symlink = linkParts.length === 1 && linkParts[0] === '' ? '/' : linkParts.join('/');
  return { sp, extensions, name: special || nameParts.length === 0 ? undefined : concat(nameParts), px, pn, symlink, times, childLink, parentLink, relocated, any };
}
