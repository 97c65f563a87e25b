/** Little helpers for fixed-layout binary structures. All multi-byte access goes through DataView. */
import { CorruptImageError } from '../errors.ts';

export function view(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** A 64-bit field as a JS number, or a CorruptImageError naming the field if it exceeds 2^53. */
export function toSafeNumber(value: bigint, format: string, field: string, offset?: number): number {
  if (value > BigInt(Number.MAX_SAFE_INTEGER) || value < 0n) {
    throw new CorruptImageError(format, field, `value ${value} is out of range`, offset);
  }
  return Number(value);
}

export function readU64(dv: DataView, at: number, format: string, field: string, littleEndian = true): number {
  return toSafeNumber(dv.getBigUint64(at, littleEndian), format, field, at);
}

export function isAllZero(bytes: Uint8Array): boolean {
  // Word-at-a-time when aligned: this runs over every block of large images.
  const n = bytes.byteLength;
  let i = 0;
  if ((bytes.byteOffset & 7) === 0 && n >= 64) {
    const words = new BigUint64Array(bytes.buffer, bytes.byteOffset, n >>> 3);
    for (let w = 0; w < words.length; w++) if (words[w] !== 0n) return false;
    i = words.length << 3;
  } else if ((bytes.byteOffset & 3) === 0 && n >= 64) {
    const words = new Uint32Array(bytes.buffer, bytes.byteOffset, n >>> 2);
    for (let w = 0; w < words.length; w++) if (words[w] !== 0) return false;
    i = words.length << 2;
  }
  for (; i < n; i++) if (bytes[i] !== 0) return false;
  return true;
}

export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false;
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

export function asciiz(bytes: Uint8Array): string {
  const end = bytes.indexOf(0);
  return new TextDecoder('latin1').decode(end < 0 ? bytes : bytes.subarray(0, end));
}

/** Parses 512, 4K, 4KiB, 512M, 4G, 1.5G … into bytes (binary units). */
export function parseSize(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(?:i?b)?\s*$/i.exec(text);
  if (!m) throw new RangeError(`not a size: "${text}" (use bytes or a number with K, M, G or T)`);
  const unit = (m[2] ?? '').toLowerCase();
  const mult = { '': 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40, p: 2 ** 50 }[unit] ?? 1;
  const value = Number(m[1]) * mult;
  if (!Number.isSafeInteger(value)) throw new RangeError(`not a whole number of bytes: "${text}"`);
  return value;
}

export function formatSize(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = bytes;
  let u = 0;
  while (Math.abs(v) >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${bytes} B` : `${v.toFixed(v >= 100 ? 0 : v >= 10 ? 1 : 2)} ${units[u]}`;
}

/** Clearing reads and writes this much at a time (big reads: a sparse image's holes cost the kernel per call). */
export const CLEAR_PIECE = 4 << 20;
let zeros: Buffer | undefined;

/** A shared zero-filled buffer of at least `n` bytes (never written to). */
export function zeroBuffer(n: number): Buffer {
  if (!zeros || zeros.byteLength < n) zeros = Buffer.alloc(Math.max(n, CLEAR_PIECE));
  return zeros;
}

/** Buffers of one size handed back after use, for the next taker: a hot loop allocates none after the first few. */
export class BufferPool {
  readonly #free: Uint8Array[] = [];
  constructor(
    readonly size: number,
    readonly keep: number,
  ) {}

  take(): Uint8Array {
    return this.#free.pop() ?? new Uint8Array(this.size);
  }

  /** Keeps `b` for the next take (if it is of the pool's size and fewer than `keep` are waiting). */
  give(b: Uint8Array): void {
    if (b.byteLength === this.size && this.#free.length < this.keep) this.#free.push(b);
  }
}
