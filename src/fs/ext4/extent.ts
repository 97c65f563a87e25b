/** Extent tree nodes (12-byte header, 12-byte entries) as stored in i_block and in tree blocks. */
import { CorruptImageError } from '../../errors.ts';
import { view } from '../../io/bytes.ts';
import { FORMAT } from './superblock.ts';

export const EXTENT_MAGIC = 0xf30a;
export const MAX_EXTENT_DEPTH = 5;
/** ee_len values above this mark unwritten extents (length ee_len − 32768). */
export const EXT_INIT_MAX_LEN = 32768;

export interface ExtentHeader {
  readonly entries: number;
  readonly max: number;
  readonly depth: number;
  readonly generation: number;
}

export interface ExtentLeaf {
  readonly logical: number;
  readonly length: number;
  readonly physical: number;
  readonly unwritten: boolean;
}

export interface ExtentIndex {
  readonly logical: number;
  readonly child: number;
}

export interface ExtentNode {
  readonly header: ExtentHeader;
  readonly leaves: readonly ExtentLeaf[];
  readonly indexes: readonly ExtentIndex[];
}

/** Decodes a node; `where` names it in errors, `offset` is its byte offset on the device. */
export function decodeExtentNode(bytes: Uint8Array, where: string, offset: number): ExtentNode {
  const dv = view(bytes);
  if (bytes.byteLength < 12) throw new CorruptImageError(FORMAT, `${where}.eh_magic`, 'node too small', offset);
  const magic = dv.getUint16(0, true);
  if (magic !== EXTENT_MAGIC) throw new CorruptImageError(FORMAT, `${where}.eh_magic`, `0x${magic.toString(16)} is not 0xf30a`, offset);
  const entries = dv.getUint16(2, true);
  const max = dv.getUint16(4, true);
  const depth = dv.getUint16(6, true);
  const capacity = Math.floor((bytes.byteLength - 12) / 12);
  if (max === 0 || max > capacity) throw new CorruptImageError(FORMAT, `${where}.eh_max`, `${max} (room for ${capacity})`, offset + 4);
  if (entries > max) throw new CorruptImageError(FORMAT, `${where}.eh_entries`, `${entries} > eh_max ${max}`, offset + 2);
  if (depth > MAX_EXTENT_DEPTH) throw new CorruptImageError(FORMAT, `${where}.eh_depth`, `${depth}`, offset + 6);
  const header: ExtentHeader = { entries, max, depth, generation: dv.getUint32(8, true) };
  const leaves: ExtentLeaf[] = [];
  const indexes: ExtentIndex[] = [];
  let prevEnd = -1;
  for (let i = 0; i < entries; i++) {
    const at = 12 + 12 * i;
    const logical = dv.getUint32(at, true);
    if (logical < prevEnd) {
      throw new CorruptImageError(FORMAT, `${where}.entry[${i}]`, `logical block ${logical} out of order`, offset + at);
    }
    if (depth === 0) {
      const rawLen = dv.getUint16(at + 4, true);
      const unwritten = rawLen > EXT_INIT_MAX_LEN;
      const length = unwritten ? rawLen - EXT_INIT_MAX_LEN : rawLen;
      if (length === 0) throw new CorruptImageError(FORMAT, `${where}.entry[${i}].ee_len`, 'zero length', offset + at + 4);
      const physical = dv.getUint16(at + 6, true) * 2 ** 32 + dv.getUint32(at + 8, true);
      leaves.push({ logical, length, physical, unwritten });
      prevEnd = logical + length;
    } else {
      const child = dv.getUint16(at + 8, true) * 2 ** 32 + dv.getUint32(at + 4, true);
      indexes.push({ logical, child });
      prevEnd = logical + 1;
    }
  }
  return { header, leaves, indexes };
}

export function encodeExtentHeader(h: ExtentHeader): Uint8Array {
  const out = new Uint8Array(12);
  const dv = view(out);
  dv.setUint16(0, EXTENT_MAGIC, true);
  dv.setUint16(2, h.entries, true);
  dv.setUint16(4, h.max, true);
  dv.setUint16(6, h.depth, true);
  dv.setUint32(8, h.generation, true);
  return out;
}

export function encodeExtentLeaf(e: ExtentLeaf): Uint8Array {
  const out = new Uint8Array(12);
  const dv = view(out);
  dv.setUint32(0, e.logical, true);
  dv.setUint16(4, e.unwritten ? e.length + EXT_INIT_MAX_LEN : e.length, true);
  dv.setUint16(6, Math.floor(e.physical / 2 ** 32), true);
  dv.setUint32(8, e.physical % 2 ** 32, true);
  return out;
}

export function encodeExtentIndex(e: ExtentIndex): Uint8Array {
  const out = new Uint8Array(12);
  const dv = view(out);
  dv.setUint32(0, e.logical, true);
  dv.setUint32(4, e.child % 2 ** 32, true);
  dv.setUint16(8, Math.floor(e.child / 2 ** 32), true);
  return out;
}
