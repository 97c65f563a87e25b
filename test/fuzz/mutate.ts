/**
 * Mutations of a seed image, as a list of byte patches plus a new size, so a case never copies the
 * image: `MutantDisk` serves the seed with the patches applied (bytes past the seed read as zeros).
 *
 * Design notes
 * - Every case draws from its own generator, seeded by (run seed, case index): one case replays alone.
 * - Structure-aware kinds aim at known fields (boundary values of the field's width: 0, 1, max, -1,
 *   the sign bit, the image size, the field's own offset as a self-pointer, neighbours of the old
 *   value) and at 32/64-bit words inside the seed's hot regions (its metadata); `splice` copies one
 *   piece of metadata over another (pointer loops, duplicated entries). Random kinds flip bits,
 *   overwrite byte runs, truncate and extend. A case applies one to three of them.
 * - Targets may add their own kinds (LUKS2 JSON edits with a valid checksum) through `extra`.
 */
import { OutOfRangeError, ReadOnlyError } from '../../src/errors.ts';
import type { Disk } from '../../src/io/disk.ts';

export type Rng = () => number;

/** The generator for case `index` of a run seeded with `seed`. */
export function rngFor(seed: number, index: number): Rng {
  return mulberry32((Math.imul(seed >>> 0, 0x9e3779b1) ^ Math.imul(index + 1, 0x85ebca77)) >>> 0);
}

/** mulberry32: small, fast, good enough to spread mutations and random trees. */
export function mulberry32(state: number): Rng {
  let a = state >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export const int = (rng: Rng, n: number): number => Math.floor(rng() * n);
export const pick = <T>(rng: Rng, items: readonly T[]): T => items[int(rng, items.length)]!;

export interface Field {
  readonly name: string;
  readonly offset: number;
  readonly width: 1 | 2 | 4 | 8;
  readonly bigEndian?: boolean;
}

export interface Seed {
  readonly name: string;
  readonly bytes: Uint8Array;
  readonly fields: readonly Field[];
  /** Byte ranges [start, end) holding metadata, where most mutations land. */
  readonly hot: readonly (readonly [number, number])[];
  /** Target-specific mutations (return undefined to fall back to a generic one). */
  readonly extra?: (rng: Rng) => Mutation | undefined;
}

export interface Patch {
  readonly offset: number;
  readonly bytes: Uint8Array;
}

export interface Mutation {
  readonly patches: Patch[];
  readonly size?: number;
  readonly what: string;
}

export interface Mutant {
  readonly patches: Patch[];
  readonly size: number;
  readonly what: string[];
}

function encodeInt(value: bigint, width: number, bigEndian: boolean): Uint8Array {
  const out = new Uint8Array(width);
  let v = BigInt.asUintN(width * 8, value);
  for (let i = 0; i < width; i++) {
    out[bigEndian ? width - 1 - i : i] = Number(v & 0xffn);
    v >>= 8n;
  }
  return out;
}

function decodeInt(bytes: Uint8Array, at: number, width: number, bigEndian: boolean): bigint {
  let v = 0n;
  for (let i = 0; i < width; i++) v = (v << 8n) | BigInt(bytes[bigEndian ? at + i : at + width - 1 - i] ?? 0);
  return v;
}

function boundary(rng: Rng, width: number, old: bigint, seed: Seed, at: number): [bigint, string] {
  const max = (1n << BigInt(width * 8)) - 1n;
  const size = BigInt(seed.bytes.byteLength);
  const candidates: [bigint, string][] = [
    [0n, '0'],
    [1n, '1'],
    [2n, '2'],
    [max, 'max'],
    [max - 1n, 'max-1'],
    [1n << BigInt(width * 8 - 1), 'sign bit'],
    [(1n << BigInt(width * 8 - 1)) - 1n, 'signed max'],
    [old + 1n, 'old+1'],
    [old - 1n, 'old-1'],
    [old * 2n, 'old*2'],
    [old << 8n, 'old<<8'],
    [old >> 1n, 'old/2'],
    [size, 'image size'],
    [size / 512n, 'image sectors'],
    [size / 4096n, 'image 4K blocks'],
    [size + 4096n, 'past the end'],
    [BigInt(at), 'self-pointer'],
    [BigInt(int(rng, 2 ** 31)) * BigInt(1 + int(rng, 2 ** 20)), 'random'],
  ];
  const [v, why] = pick(rng, candidates);
  return [BigInt.asUintN(width * 8, v), why];
}

function hotOffset(rng: Rng, seed: Seed, size: number): number {
  if (seed.hot.length > 0 && rng() < 0.8) {
    const [s, e] = pick(rng, seed.hot);
    const end = Math.min(e, size);
    if (end > s) return s + int(rng, end - s);
  }
  return int(rng, Math.max(1, size));
}

function randomBytes(rng: Rng, n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = int(rng, 256);
  return out;
}

/** One generic mutation of `seed` (whose current size is `size`). */
export function mutateOnce(rng: Rng, seed: Seed, size: number): Mutation {
  const bytes = seed.bytes;
  const kind = int(rng, 100);
  if (kind < 28 && seed.fields.length > 0) {
    const f = pick(rng, seed.fields);
    const old = decodeInt(bytes, f.offset, f.width, f.bigEndian ?? false);
    const [v, why] = boundary(rng, f.width, old, seed, f.offset);
    return { patches: [{ offset: f.offset, bytes: encodeInt(v, f.width, f.bigEndian ?? false) }], what: `field ${f.name} = ${v} (${why})` };
  }
  if (kind < 44) {
    const width = rng() < 0.7 ? 4 : 8;
    const at = hotOffset(rng, seed, size) & ~(width - 1);
    const old = decodeInt(bytes, at, width, false);
    const bigEndian = rng() < 0.2;
    const [v, why] = boundary(rng, width, old, seed, at);
    return { patches: [{ offset: at, bytes: encodeInt(v, width, bigEndian) }], what: `u${width * 8}${bigEndian ? 'be' : 'le'} at ${at} = ${v} (${why})` };
  }
  if (kind < 66) {
    const flips = 1 + int(rng, 8);
    const patches: Patch[] = [];
    const where: number[] = [];
    for (let i = 0; i < flips; i++) {
      const at = hotOffset(rng, seed, size);
      patches.push({ offset: at, bytes: Uint8Array.of((bytes[at] ?? 0) ^ (1 << int(rng, 8))) });
      where.push(at);
    }
    return { patches, what: `bit flips at ${where.join(',')}` };
  }
  if (kind < 78) {
    const len = 1 + int(rng, rng() < 0.8 ? 32 : 4096);
    const at = hotOffset(rng, seed, size);
    const fill = int(rng, 4);
    const run = fill === 0 ? new Uint8Array(len) : fill === 1 ? new Uint8Array(len).fill(0xff) : fill === 2 ? new Uint8Array(len).fill(int(rng, 256)) : randomBytes(rng, len);
    return { patches: [{ offset: at, bytes: run }], what: `${len}-byte run (${['zeros', '0xff', 'one byte', 'random'][fill]}) at ${at}` };
  }
  if (kind < 86) {
    const len = 16 << int(rng, 8);
    const from = hotOffset(rng, seed, size);
    const to = hotOffset(rng, seed, size);
    return { patches: [{ offset: to, bytes: bytes.slice(from, from + len) }], what: `splice ${len} bytes from ${from} to ${to}` };
  }
  if (kind < 94) {
    const align = pick(rng, [1, 512, 4096]);
    const cut = Math.floor(int(rng, Math.max(1, size)) / align) * align;
    return { patches: [], size: cut, what: `truncate to ${cut}` };
  }
  const grow = 1 + int(rng, 1 << 16);
  return { patches: [], size: size + grow, what: `extend by ${grow}` };
}

/** The mutated image of case `index`: one to three mutations (target-specific ones among them). */
export function mutant(seed: Seed, rng: Rng): Mutant {
  let size = seed.bytes.byteLength;
  const patches: Patch[] = [];
  const what: string[] = [];
  const n = 1 + (rng() < 0.5 ? 0 : int(rng, 3));
  for (let i = 0; i < n; i++) {
    const m = (seed.extra && rng() < 0.35 ? seed.extra(rng) : undefined) ?? mutateOnce(rng, seed, size);
    patches.push(...m.patches.filter((p) => p.bytes.byteLength > 0));
    if (m.size !== undefined) size = m.size;
    what.push(m.what);
  }
  return { patches, size, what };
}

/** The seed with patches applied, as a read-only Disk (past the seed: zeros). */
export class MutantDisk implements Disk {
  readonly readOnly = true;
  readonly size: number;
  readonly #base: Uint8Array;
  readonly #patches: readonly Patch[];

  constructor(base: Uint8Array, m: Pick<Mutant, 'patches' | 'size'>) {
    this.#base = base;
    this.#patches = m.patches;
    this.size = m.size;
  }

  async read(buf: Uint8Array, offset: number): Promise<void> {
    if (!Number.isSafeInteger(offset) || offset < 0 || offset + buf.byteLength > this.size) {
      throw new OutOfRangeError(`read of ${buf.byteLength} bytes at ${offset} is outside the device (size ${this.size})`);
    }
    const end = offset + buf.byteLength;
    const fromBase = Math.max(0, Math.min(end, this.#base.byteLength) - offset);
    if (fromBase > 0) buf.set(this.#base.subarray(offset, offset + fromBase));
    if (fromBase < buf.byteLength) buf.fill(0, fromBase);
    for (const p of this.#patches) {
      const s = Math.max(p.offset, offset);
      const e = Math.min(p.offset + p.bytes.byteLength, end, this.size);
      if (s < e) buf.set(p.bytes.subarray(s - p.offset, e - p.offset), s - offset);
    }
  }

  async write(): Promise<void> {
    throw new ReadOnlyError();
  }

  async flush(): Promise<void> {}
  async close(): Promise<void> {}

  /** The whole mutated image (to save a finding). */
  async bytes(): Promise<Uint8Array> {
    const out = new Uint8Array(this.size);
    await this.read(out, 0);
    return out;
  }
}
