import { createRequire } from 'node:module';
import { CorruptImageError, UnsupportedFeatureError } from '../../../errors.ts';
import { view } from '../../../io/bytes.ts';
import { CompressionId, type Compressor, type CompressorSettings } from './types.ts';

/* lz4 per block: a raw LZ4 block (no frame). squashfs-tools always stores the options
 * {version 1, flags}; flag 1 (HC) only changes the encoder. Encoding uses lz4js' block encoder;
 * decoding is our own bounds-checked loop. */

interface Lz4js {
  compressBlock(src: Uint8Array, dst: Uint8Array, sIndex: number, sLength: number, hashTable: Uint32Array): number;
  compressBound(n: number): number;
}
let lz4js: Lz4js | undefined;

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

function corrupt(message: string): CorruptImageError {
  return new CorruptImageError('squashfs', 'lz4 block', message);
}

export function lz4DecompressBlock(src: Uint8Array, maxSize: number): Uint8Array {
  const dst = new Uint8Array(maxSize);
  let s = 0;
  let d = 0;
  const n = src.byteLength;
  while (s < n) {
    const token = src[s++] as number;
    let lit = token >>> 4;
    if (lit === 15) {
      let b: number;
      do {
        if (s >= n) throw corrupt('truncated literal length');
        b = src[s++] as number;
        lit += b;
      } while (b === 255);
    }
    if (s + lit > n) throw corrupt('literals run past the input');
    if (d + lit > maxSize) throw corrupt(`output exceeds ${maxSize} bytes`);
    dst.set(src.subarray(s, s + lit), d);
    s += lit;
    d += lit;
    if (s === n) break; // the last sequence has literals only
    if (s + 2 > n) throw corrupt('truncated match offset');
    const offset = (src[s] as number) | ((src[s + 1] as number) << 8);
    s += 2;
    if (offset === 0 || offset > d) throw corrupt(`match offset ${offset} points before the output`);
    let len = (token & 15) + 4;
    if ((token & 15) === 15) {
      let b: number;
      do {
        if (s >= n) throw corrupt('truncated match length');
        b = src[s++] as number;
        len += b;
      } while (b === 255);
    }
    if (d + len > maxSize) throw corrupt(`output exceeds ${maxSize} bytes`);
    if (offset >= len) {
      dst.copyWithin(d, d - offset, d - offset + len);
      d += len;
    } else {
      for (let i = 0; i < len; i++, d++) dst[d] = dst[d - offset] as number;
    }
  }
  return dst.subarray(0, d);
}

export function lz4Compressor(hc: boolean): Compressor {
  let table: Uint32Array | undefined;
  return {
    name: 'lz4',
    id: CompressionId.lz4,
    options: encodeLz4Options({ hc }),
    compress(src) {
      lz4js ??= createRequire(import.meta.url)('lz4js') as Lz4js;
      table ??= new Uint32Array(1 << 16);
      table.fill(0);
      const dst = new Uint8Array(lz4js.compressBound(src.byteLength));
      const n = lz4js.compressBlock(src, dst, 0, src.byteLength, table);
      // lz4js returns 0 when it found no match at all: report "not smaller" so the block is stored.
      return n === 0 ? src : dst.subarray(0, n);
    },
    decompress(src, maxSize) {
      return lz4DecompressBlock(src, maxSize);
    },
  };
}

export function lz4FromSettings(s: CompressorSettings): Compressor {
  if (s.hc) throw new RangeError('lz4 high-compression encoding is not available (lz4js has no HC encoder)');
  return lz4Compressor(false);
}
