import { createRequire } from 'node:module';
import { CorruptImageError, UnsupportedFeatureError } from '../../../errors.ts';
import { view } from '../../../io/bytes.ts';
import { CompressionId, XZ_FILTER_BITS, type Compressor, type CompressorSettings, type XzFilter } from './types.ts';

/*
 * xz per block, as squashfs-tools does: one .xz stream with a CRC32 check, LZMA2 with the dictionary
 * size from the options (default: the block size), and optionally one stream per BCJ filter with the
 * smallest kept. lzma-native's native coder is driven synchronously (no stream machinery): a worker
 * thread calls it, so parallelism comes from the writer's worker pool.
 */

interface NativeStream {
  bufferHandler: (buf: Buffer | null, processed: unknown, err: Error | null) => void;
  code(chunk: Buffer | null, async: boolean): void;
  streamEncoder_(filters: unknown[], check: number): void;
  streamDecoder_(memlimit: number | null, flags: number): void;
}
interface LzmaNative {
  Stream: new () => NativeStream;
  FILTER_LZMA2: unknown;
  FILTER_X86: unknown;
  FILTER_POWERPC: unknown;
  FILTER_IA64: unknown;
  FILTER_ARM: unknown;
  FILTER_ARMTHUMB: unknown;
  FILTER_SPARC: unknown;
  CHECK_CRC32: number;
}

let lzmaModule: LzmaNative | undefined;
function lzma(): LzmaNative {
  lzmaModule ??= createRequire(import.meta.url)('lzma-native') as LzmaNative;
  return lzmaModule;
}

function codeSync(setup: (s: NativeStream) => void, input: Uint8Array, limit: number): Buffer {
  const s = new (lzma().Stream)();
  setup(s);
  const out: Buffer[] = [];
  let total = 0;
  let error: Error | null = null;
  s.bufferHandler = (buf, _processed, err) => {
    if (err) error = err;
    if (buf) {
      total += buf.byteLength;
      if (total <= limit) out.push(buf);
      else error ??= new Error(`output exceeds ${limit} bytes`);
    }
  };
  s.code(Buffer.from(input.buffer, input.byteOffset, input.byteLength), false);
  if (error === null) s.code(null, false);
  if (error !== null) throw error;
  return Buffer.concat(out);
}

/**
 * liblzma's preset parameters, spelled out: lzma-native applies a `preset` after `dictSize` and so
 * would silently use the preset's 8 MiB dictionary (the kernel then refuses the blocks).
 */
function presetParams(level: number): Record<string, number> {
  const base = { lc: 3, lp: 0, pb: 2 };
  if (level <= 3) return { ...base, mode: 1, mf: level === 0 ? 0x03 : 0x04, niceLen: level <= 1 ? 128 : 273, depth: [4, 8, 24, 48][level] as number };
  return { ...base, mode: 2, mf: 0x14, niceLen: level === 4 ? 16 : level === 5 ? 32 : 64, depth: 0 };
}

/** The same coding on liblzma's own thread (lzma-native's async mode); resolves at end of stream. */
function codeAsync(setup: (s: NativeStream) => void, input: Uint8Array, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const s = new (lzma().Stream)();
    setup(s);
    const out: Buffer[] = [];
    let total = 0;
    let done = false;
    s.bufferHandler = (buf, processed, err) => {
      if (done) return;
      if (err) {
        done = true;
        reject(err);
        return;
      }
      if (buf) {
        total += buf.byteLength;
        if (total > limit) {
          done = true;
          reject(new Error(`output exceeds ${limit} bytes`));
          return;
        }
        out.push(buf);
      } else if (typeof processed !== 'number') {
        done = true;
        resolve(Buffer.concat(out));
      }
    };
    s.code(Buffer.from(input.buffer, input.byteOffset, input.byteLength), true);
    s.code(null, true);
  });
}

export interface XzOptions {
  readonly dictSize: number;
  readonly filters: number;
}

export function decodeXzOptions(bytes: Uint8Array | undefined, blockSize: number): XzOptions {
  if (bytes === undefined) return { dictSize: blockSize, filters: 0 };
  if (bytes.byteLength < 8) throw new CorruptImageError('squashfs', 'xz options', `length ${bytes.byteLength} is too short`);
  const dv = view(bytes);
  const dictSize = dv.getUint32(0, true);
  const filters = dv.getUint32(4, true);
  // A valid dictionary is 2^n or 2^n + 2^(n-1), at least 8 KiB (squashfs-tools' rule).
  const n = 31 - Math.clz32(dictSize);
  if (dictSize < 8192 || (dictSize !== 2 ** n && dictSize !== 2 ** n + 2 ** (n - 1))) {
    throw new CorruptImageError('squashfs', 'xz options.dict_size', `${dictSize} is not a valid dictionary size`);
  }
  if (filters & ~0x3f) throw new UnsupportedFeatureError('squashfs', 'xz filter', `bits 0x${filters.toString(16)}`);
  return { dictSize, filters };
}

export function encodeXzOptions(o: XzOptions): Uint8Array {
  const out = new Uint8Array(8);
  view(out).setUint32(0, o.dictSize, true);
  view(out).setUint32(4, o.filters, true);
  return out;
}

export function xzCompressor(opts: XzOptions, preset: number, storeOptions: boolean): Compressor {
  const filterIds = (): unknown[][] => {
    const m = lzma();
    const lzma2 = { id: m.FILTER_LZMA2, options: { dictSize: opts.dictSize, ...presetParams(preset) } };
    const chains: unknown[][] = [[lzma2]];
    const bcj: Array<[number, unknown]> = [
      [1, m.FILTER_X86],
      [2, m.FILTER_POWERPC],
      [4, m.FILTER_IA64],
      [8, m.FILTER_ARM],
      [0x10, m.FILTER_ARMTHUMB],
      [0x20, m.FILTER_SPARC],
    ];
    for (const [bit, id] of bcj) if (opts.filters & bit) chains.push([{ id }, lzma2]);
    return chains;
  };
  let chains: unknown[][] | undefined;
  return {
    name: 'xz',
    id: CompressionId.xz,
    options: storeOptions ? encodeXzOptions(opts) : undefined,
    compress(src) {
      chains ??= filterIds();
      let best: Uint8Array | undefined;
      for (const chain of chains) {
        const out = codeSync((s) => s.streamEncoder_(chain, lzma().CHECK_CRC32), src, Number.MAX_SAFE_INTEGER);
        if (best === undefined || out.byteLength < best.byteLength) best = out;
      }
      return best as Uint8Array;
    },
    decompress(src, maxSize) {
      let out: Buffer;
      try {
        out = codeSync((s) => s.streamDecoder_(null, 0), src, maxSize);
      } catch (err) {
        throw new CorruptImageError('squashfs', 'xz block', `cannot decompress: ${(err as Error).message}`, undefined, { cause: err });
      }
      return out;
    },
    async decompressAsync(src, maxSize) {
      try {
        return await codeAsync((s) => s.streamDecoder_(null, 0), src, maxSize);
      } catch (err) {
        throw new CorruptImageError('squashfs', 'xz block', `cannot decompress: ${(err as Error).message}`, undefined, { cause: err });
      }
    },
  };
}

export function xzFromSettings(s: CompressorSettings, blockSize: number): Compressor {
  const preset = s.level ?? 6;
  if (!Number.isInteger(preset) || preset < 0 || preset > 9) throw new RangeError(`xz preset ${preset} is not 0..9`);
  const dictSize = s.dictSize ?? blockSize;
  let filters = 0;
  for (const f of s.bcj ?? []) {
    const bit = XZ_FILTER_BITS[f as XzFilter];
    if (bit === undefined) throw new RangeError(`unknown xz BCJ filter "${f}"`);
    filters |= bit;
  }
  const opts = decodeXzOptions(encodeXzOptions({ dictSize, filters }), blockSize);
  if (opts.dictSize > blockSize) throw new RangeError(`xz dictionary ${dictSize} is larger than the block size`);
  return xzCompressor(opts, preset, dictSize !== blockSize || filters !== 0);
}
