/**
 * The up-case table: a map from each UTF-16 code unit to its upper case, used for case-insensitive
 * name lookup and the name hash. On disk it is a run of u16 values, where 0xFFFF followed by a count N
 * means "the next N code units map to themselves" (the compressed form; mkfs.exfat writes it plain).
 *
 * Design notes
 * - Decoding accepts both forms, stops at 0x10000 code units, and checks the table checksum (the boot
 *   checksum's rotate-and-add over the table's bytes) against the root directory's entry.
 * - Our own table (`defaultUpcaseMappings`) is derived from the engine's toUpperCase, limited to
 *   scripts whose case pairs were fixed long ago (Latin, Greek, Cyrillic, Armenian, Latin/Greek extended,
 *   Roman numerals, circled and fullwidth letters) and to one-unit results, so it does not change with
 *   a newer Unicode in a newer Node: the written bytes stay the same. Non-ASCII letters never map into
 *   ASCII (dotless i, long s), so ASCII names compare exactly as everyone expects.
 */
import { CorruptImageError } from '../../errors.ts';
import { FORMAT } from './boot.ts';

export const UPCASE_UNITS = 0x10000;

const STABLE_RANGES: readonly (readonly [number, number])[] = [
  [0x0000, 0x0590],
  [0x1e00, 0x2000],
  [0x2160, 0x2190],
  [0x24b6, 0x24ea],
  [0xff21, 0xff5b],
];

/** The full 0x10000-entry table our mkfs writes. */
export function defaultUpcaseMappings(): Uint16Array {
  const table = identityTable();
  for (const [from, to] of STABLE_RANGES) {
    for (let c = from; c < to; c++) {
      const upper = String.fromCharCode(c).toUpperCase();
      if (upper.length !== 1) continue;
      const u = upper.charCodeAt(0);
      if (u === c || (c >= 0x80 && u < 0x80)) continue;
      table[c] = u;
    }
  }
  return table;
}

function identityTable(): Uint16Array {
  const table = new Uint16Array(UPCASE_UNITS);
  for (let i = 0; i < UPCASE_UNITS; i++) table[i] = i;
  return table;
}

export function upcaseChecksum(bytes: Uint8Array): number {
  let sum = 0;
  for (let i = 0; i < bytes.byteLength; i++) sum = ((((sum & 1) << 31) | (sum >>> 1)) + bytes[i]!) >>> 0;
  return sum;
}

/** Compressed form: identity runs of 3+ units become 0xFFFF, N; the table always reaches 0x10000. */
export function encodeUpcaseTable(table: Uint16Array): Uint8Array {
  if (table.length !== UPCASE_UNITS) throw new RangeError('an up-case table has 0x10000 entries');
  for (let c = 0; c < 0xffff; c++) if (table[c] === 0xffff) throw new RangeError(`unit ${c} maps to 0xFFFF, the run marker`);
  const out: number[] = [];
  let c = 0;
  while (c < UPCASE_UNITS) {
    let run = 0;
    while (c + run < UPCASE_UNITS && table[c + run] === c + run && c + run !== 0xffff) run++;
    if (run >= 3 || (run > 0 && c + run === 0xffff)) {
      out.push(0xffff, run);
      c += run;
    } else if (run > 0) {
      for (let i = 0; i < run; i++) out.push(table[c + i]!);
      c += run;
    } else if (c === 0xffff && table[c] === 0xffff) {
      // 0xFFFF cannot be written as itself (it is the run marker): a run of one.
      out.push(0xffff, 1);
      c++;
    } else {
      out.push(table[c]!);
      c++;
    }
  }
  const bytes = new Uint8Array(out.length * 2);
  const dv = new DataView(bytes.buffer);
  out.forEach((v, i) => dv.setUint16(i * 2, v, true));
  return bytes;
}

export function decodeUpcaseTable(bytes: Uint8Array, expectedChecksum: number, offset?: number): Uint16Array {
  if (bytes.byteLength === 0 || bytes.byteLength % 2 !== 0 || bytes.byteLength > UPCASE_UNITS * 2 * 2) {
    throw new CorruptImageError(FORMAT, 'up-case table DataLength', `${bytes.byteLength} bytes`, offset);
  }
  const sum = upcaseChecksum(bytes);
  if (sum !== expectedChecksum) {
    throw new CorruptImageError(FORMAT, 'up-case TableChecksum', `stored ${expectedChecksum.toString(16)}, computed ${sum.toString(16)}`, offset);
  }
  const table = identityTable();
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = bytes.byteLength / 2;
  let index = 0;
  for (let i = 0; i < n && index < UPCASE_UNITS; i++) {
    const v = dv.getUint16(i * 2, true);
    if (v === 0xffff && i + 1 < n) {
      index += dv.getUint16(++i * 2, true);
    } else {
      table[index++] = v;
    }
  }
  return table;
}
