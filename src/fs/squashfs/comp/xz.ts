import { CorruptImageError, UnsupportedFeatureError } from '../../../errors.ts';
import { view } from '../../../io/bytes.ts';
import { xzDecode, xzEncode } from './liblzma.ts';
import { CompressionId, decodedBlock, XZ_FILTER_BITS, type Compressor, type CompressorSettings, type XzFilter } from './types.ts';

/*
 * xz per block, as squashfs-tools does: one .xz stream with a CRC32 check, LZMA2 at the preset with
 * the dictionary size from the options (default: the block size), and optionally one stream per BCJ
 * filter with the smallest kept. liblzma runs in wasm (liblzma.ts), synchronously: the writer's
 * worker pool gives the parallelism.
 */

/** liblzma's filter ids for the squashfs BCJ option bits. */
const BCJ_FILTER_IDS: ReadonlyArray<readonly [number, number]> = [
  [XZ_FILTER_BITS.x86, 0x04],
  [XZ_FILTER_BITS.powerpc, 0x05],
  [XZ_FILTER_BITS.ia64, 0x06],
  [XZ_FILTER_BITS.arm, 0x07],
  [XZ_FILTER_BITS.armthumb, 0x08],
  [XZ_FILTER_BITS.sparc, 0x09],
];

/** Decoder memory allowed beyond the output: the dictionary (at most the block size) plus state. */
const DECODER_OVERHEAD = 16 << 20;

export interface XzOptions {
  readonly dictSize: number;
  readonly filters: number;
}

/** The dictionary when no options are stored: the block size, but at least 8 KiB (as the kernel). */
export function defaultXzDictSize(blockSize: number): number {
  return Math.max(blockSize, 8192);
}

export function decodeXzOptions(bytes: Uint8Array | undefined, blockSize: number): XzOptions {
  if (bytes === undefined) return { dictSize: defaultXzDictSize(blockSize), filters: 0 };
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
  const bcjIds = BCJ_FILTER_IDS.filter(([bit]) => (opts.filters & bit) !== 0).map(([, id]) => id);
  return {
    name: 'xz',
    id: CompressionId.xz,
    options: storeOptions ? encodeXzOptions(opts) : undefined,
    decodeOnWorkers: true,
    compress(src) {
      let best = xzEncode(src, preset, opts.dictSize, 0);
      for (const bcj of bcjIds) {
        const out = xzEncode(src, preset, opts.dictSize, bcj);
        if (out !== undefined && (best === undefined || out.byteLength < best.byteLength)) best = out;
      }
      return best ?? src;
    },
    decompress(src, maxSize) {
      return decodedBlock('xz', () => xzDecode(src, maxSize, maxSize + DECODER_OVERHEAD));
    },
    decompressTransient(src, maxSize) {
      return decodedBlock('xz', () => xzDecode(src, maxSize, maxSize + DECODER_OVERHEAD, true));
    },
  };
}

export function xzFromSettings(s: CompressorSettings, blockSize: number): Compressor {
  const preset = s.level ?? 6;
  if (!Number.isInteger(preset) || preset < 0 || preset > 9) throw new RangeError(`xz preset ${preset} is not 0..9`);
  const defaultDict = defaultXzDictSize(blockSize);
  const dictSize = s.dictSize ?? defaultDict;
  let filters = 0;
  for (const f of s.bcj ?? []) {
    const bit = XZ_FILTER_BITS[f as XzFilter];
    if (bit === undefined) throw new RangeError(`unknown xz BCJ filter "${f}"`);
    filters |= bit;
  }
  const opts = decodeXzOptions(encodeXzOptions({ dictSize, filters }), blockSize);
  if (opts.dictSize > defaultDict) throw new RangeError(`xz dictionary ${dictSize} is larger than the block size`);
  return xzCompressor(opts, preset, dictSize !== defaultDict || filters !== 0);
}
