import { deflateSync, inflate, inflateSync, constants as z } from 'node:zlib';
import { CorruptImageError, UnsupportedFeatureError } from '../../../errors.ts';
import { view } from '../../../io/bytes.ts';
import { zlibEncode } from './libdeflate.ts';
import { decodeNative, nativeCodecs, type NativeCodecs } from './native.ts';
import { CompressionId, type Compressor, type CompressorSettings } from './types.ts';

/*
 * gzip per block: one zlib stream (RFC 1950), as squashfs-tools writes it. With the default window
 * and strategy, blocks are compressed by libdeflate (wasm, libdeflate.ts) at the same level: smaller
 * and faster than Node's zlib. A non-default window or strategy list needs zlib's own parameters:
 * node:zlib then, trying each strategy and keeping the smallest, as mksquashfs does. Decoding is
 * libdeflate's decompressor in the native addon where one ships (native.ts; ~2x zlib's inflate), else
 * node:zlib, synchronous or on its thread pool.
 */

export interface GzipOptions {
  readonly level: number;
  readonly window: number;
  readonly strategies: number;
}

const STRATEGY_BITS: ReadonlyArray<[number, number]> = [
  [1, z.Z_DEFAULT_STRATEGY],
  [2, z.Z_FILTERED],
  [4, z.Z_HUFFMAN_ONLY],
  [8, z.Z_RLE],
  [0x10, z.Z_FIXED],
];

export function decodeGzipOptions(bytes: Uint8Array | undefined): GzipOptions {
  if (bytes === undefined) return { level: 9, window: 15, strategies: 0 };
  if (bytes.byteLength < 8) throw new CorruptImageError('squashfs', 'gzip options', `length ${bytes.byteLength} is too short`);
  const dv = view(bytes);
  const level = dv.getUint32(0, true);
  const window = dv.getUint16(4, true);
  const strategies = dv.getUint16(6, true);
  if (level < 1 || level > 9) throw new CorruptImageError('squashfs', 'gzip options.level', `${level} is not 1..9`);
  if (window < 8 || window > 15) throw new CorruptImageError('squashfs', 'gzip options.window', `${window} is not 8..15`);
  if (strategies & ~0x1f) throw new UnsupportedFeatureError('squashfs', 'gzip strategy', `bits 0x${strategies.toString(16)}`);
  return { level, window, strategies };
}

export function encodeGzipOptions(o: GzipOptions): Uint8Array {
  const out = new Uint8Array(8);
  const dv = view(out);
  dv.setUint32(0, o.level, true);
  dv.setUint16(4, o.window, true);
  dv.setUint16(6, o.strategies, true);
  return out;
}

const INFLATE_FAILURE: Record<number, string> = { 1: 'corrupt data', 3: 'more output than the block holds', 4: 'out of memory' };

/** One zlib stream's content, at most `maxSize` bytes, by libdeflate (bytes after the stream are ignored, as zlib does). */
export function nativeInflate(native: NativeCodecs, src: Uint8Array, maxSize: number, transient = false): Uint8Array {
  return decodeNative(maxSize, transient, (dst) => native.zlibDecode(src, dst), (n) => new CorruptImageError('squashfs', 'gzip block', `cannot inflate: ${INFLATE_FAILURE[-n] ?? `libdeflate result ${-n}`}`));
}

export function gzipCompressor(opts: GzipOptions, storeOptions: boolean): Compressor {
  const strategies = STRATEGY_BITS.filter(([bit]) => opts.strategies & bit).map(([, s]) => s);
  if (strategies.length === 0) strategies.push(z.Z_DEFAULT_STRATEGY);
  const useLibdeflate = opts.window === 15 && strategies.length === 1 && strategies[0] === z.Z_DEFAULT_STRATEGY;
  return {
    name: 'gzip',
    id: CompressionId.gzip,
    options: storeOptions ? encodeGzipOptions(opts) : undefined,
    compress(src) {
      if (useLibdeflate) return zlibEncode(src, opts.level) ?? src;
      let best: Uint8Array | undefined;
      for (const strategy of strategies) {
        const out = deflateSync(src, { level: opts.level, windowBits: opts.window, strategy, memLevel: 8 });
        if (best === undefined || out.byteLength < best.byteLength) best = out;
      }
      return best as Uint8Array;
    },
    compressTransient(src) {
      return useLibdeflate ? (zlibEncode(src, opts.level, true) ?? src) : this.compress(src);
    },
    decompress(src, maxSize) {
      const native = nativeCodecs();
      if (native !== undefined) return nativeInflate(native, src, maxSize);
      try {
        return inflateSync(src, { maxOutputLength: Math.max(maxSize, 1) });
      } catch (err) {
        throw new CorruptImageError('squashfs', 'gzip block', `cannot inflate: ${(err as Error).message}`, undefined, { cause: err });
      }
    },
    decompressTransient(src, maxSize) {
      const native = nativeCodecs();
      return native !== undefined ? nativeInflate(native, src, maxSize, true) : this.decompress(src, maxSize);
    },
    // zlib's inflate on the thread pool, where no native libdeflate ships: a block decoded natively
    // on the calling thread is faster than a round trip through the pool.
    ...(nativeCodecs() === undefined
      ? {
          decompressAsync: (src: Uint8Array, maxSize: number) =>
            new Promise<Uint8Array>((resolve, reject) => {
              inflate(src, { maxOutputLength: Math.max(maxSize, 1) }, (err, out) => {
                if (err) reject(new CorruptImageError('squashfs', 'gzip block', `cannot inflate: ${err.message}`, undefined, { cause: err }));
                else resolve(out);
              });
            }),
        }
      : {}),
  };
}

export function gzipFromSettings(s: CompressorSettings): Compressor {
  const level = s.level ?? 9;
  const window = s.window ?? 15;
  if (!Number.isInteger(level) || level < 1 || level > 9) throw new RangeError(`gzip level ${level} is not 1..9`);
  if (!Number.isInteger(window) || window < 8 || window > 15) throw new RangeError(`gzip window ${window} is not 8..15`);
  // mksquashfs stores gzip options only when they differ from the defaults.
  return gzipCompressor({ level, window, strategies: 0 }, level !== 9 || window !== 15);
}
