import { CorruptImageError, UnsupportedFeatureError } from '../../../errors.ts';
import { view } from '../../../io/bytes.ts';
import { lz4Decode, lz4Encode } from './liblz4.ts';
import { CompressionId, decodedBlock, type Compressor, type CompressorSettings } from './types.ts';

/* lz4 per block: a raw LZ4 block (no frame). squashfs-tools always stores the options
 * {version 1, flags}; flag 1 (HC) only changes the encoder. Decoding and HC encoding are liblz4 in
 * wasm (liblz4.ts), the library squashfs-tools links. The default (fast) encoder is our own: liblz4
 * built for a 32-bit target hashes 4 bytes instead of 5 and measured 3% larger than mksquashfs
 * (ours: 0.4% smaller), and lz4js' encoder can start a match within the last 12 bytes, which
 * liblz4's decoder rejects. */

export function decodeLz4Options(bytes: Uint8Array | undefined): { hc: boolean } {
  if (bytes === undefined) return { hc: false };
  if (bytes.byteLength < 8) throw new CorruptImageError('squashfs', 'lz4 options', `length ${bytes.byteLength} is too short`);
  const version = view(bytes).getUint32(0, true);
  const flags = view(bytes).getUint32(4, true);
  if (version !== 1) throw new UnsupportedFeatureError('squashfs', 'lz4 version', `${version}`);
  if (flags & ~1) throw new UnsupportedFeatureError('squashfs', 'lz4 flags', `0x${flags.toString(16)}`);
  return { hc: (flags & 1) !== 0 };
}

export function encodeLz4Options(o: { hc: boolean }): Uint8Array {
  const out = new Uint8Array(8);
  view(out).setUint32(0, 1, true);
  view(out).setUint32(4, o.hc ? 1 : 0, true);
  return out;
}

/**
 * Greedy single-probe LZ4 block encoder (the "fast" scheme). Respects the block rules liblz4's safe
 * decoder enforces: the last 5 bytes are literals and no match starts within the last 12 bytes.
 */
export function lz4CompressBlock(src: Uint8Array, table: Int32Array): Uint8Array {
  const n = src.byteLength;
  const dst = new Uint8Array(n + Math.ceil(n / 255) + 16);
  table.fill(-1);
  let d = 0;
  let anchor = 0;
  const matchLimit = n - 12;
  const lastLiterals = n - 5;
  const dv = new DataView(src.buffer, src.byteOffset, src.byteLength);
  const u32 = (i: number): number => dv.getUint32(i, true);
  const writeLen = (len: number): void => {
    while (len >= 255) {
      dst[d++] = 255;
      len -= 255;
    }
    dst[d++] = len;
  };
  let i = 0;
  let step = 1 << 6;
  while (i < matchLimit) {
    const seq = u32(i);
    const h = Math.imul(seq, 2654435761) >>> 16;
    const ref = table[h] as number;
    table[h] = i;
    if (ref < 0 || i - ref > 65535 || u32(ref) !== seq) {
      i += step++ >> 6;
      continue;
    }
    step = 1 << 6;
    let s = ref;
    let m = i;
    // extend backwards over pending literals
    while (m > anchor && s > 0 && src[m - 1] === src[s - 1]) {
      m--;
      s--;
    }
    let len = 4 + (i - m);
    let a = i + 4;
    let b = ref + 4;
    while (a + 4 <= lastLiterals && dv.getUint32(a, true) === dv.getUint32(b, true)) {
      a += 4;
      b += 4;
      len += 4;
    }
    while (a < lastLiterals && src[a] === src[b]) {
      a++;
      b++;
      len++;
    }
    const lit = m - anchor;
    const token = d++;
    dst[token] = (Math.min(lit, 15) << 4) | Math.min(len - 4, 15);
    if (lit >= 15) writeLen(lit - 15);
    if (lit > 32) {
      dst.set(src.subarray(anchor, m), d);
      d += lit;
    } else {
      for (let k = anchor; k < m; k++) dst[d++] = src[k] as number;
    }
    const off = m - s;
    dst[d++] = off & 0xff;
    dst[d++] = off >>> 8;
    if (len - 4 >= 15) writeLen(len - 4 - 15);
    i = m + len;
    anchor = i;
    if (i - 2 >= 0 && i - 2 < matchLimit) table[Math.imul(u32(i - 2), 2654435761) >>> 16] = i - 2;
  }
  const lit = n - anchor;
  dst[d++] = Math.min(lit, 15) << 4;
  if (lit >= 15) writeLen(lit - 15);
  dst.set(src.subarray(anchor), d);
  d += lit;
  return dst.subarray(0, d);
}

export function lz4Compressor(hc: boolean): Compressor {
  let table: Int32Array | undefined;
  return {
    name: 'lz4',
    id: CompressionId.lz4,
    options: encodeLz4Options({ hc }),
    compress(src) {
      if (hc) return lz4Encode(src, true) ?? src;
      table ??= new Int32Array(1 << 16);
      return lz4CompressBlock(src, table);
    },
    decompress(src, maxSize) {
      return decodedBlock('lz4', () => lz4Decode(src, maxSize));
    },
    decompressTransient(src, maxSize) {
      return decodedBlock('lz4', () => lz4Decode(src, maxSize, true));
    },
  };
}

export function lz4FromSettings(s: CompressorSettings): Compressor {
  return lz4Compressor(s.hc === true);
}
