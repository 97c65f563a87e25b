import { CorruptImageError } from '../../../errors.ts';
import { view } from '../../../io/bytes.ts';
import { zstdDecode, zstdEncode } from './libzstd.ts';
import { CompressionId, decodedBlock, type Compressor, type CompressorSettings } from './types.ts';

/* zstd per block: one frame, as squashfs-tools' ZSTD_compressCCtx writes it, by libzstd (libzstd.ts:
 * the native addon where one ships, else wasm). Decoding is single-pass into a buffer of the block
 * size, so the output is bounded and frames with or without a declared content size decode alike. */

export function decodeZstdOptions(bytes: Uint8Array | undefined): { level: number } {
  if (bytes === undefined) return { level: 15 };
  if (bytes.byteLength < 4) throw new CorruptImageError('squashfs', 'zstd options', `length ${bytes.byteLength} is too short`);
  const level = view(bytes).getUint32(0, true);
  if (level < 1 || level > 22) throw new CorruptImageError('squashfs', 'zstd options.level', `${level} is not 1..22`);
  return { level };
}

export function encodeZstdOptions(o: { level: number }): Uint8Array {
  const out = new Uint8Array(4);
  view(out).setUint32(0, o.level, true);
  return out;
}

export function zstdCompressor(level: number, storeOptions: boolean): Compressor {
  return {
    name: 'zstd',
    id: CompressionId.zstd,
    options: storeOptions ? encodeZstdOptions({ level }) : undefined,
    compress(src) {
      return zstdEncode(src, level) ?? src;
    },
    compressTransient(src) {
      return zstdEncode(src, level, true) ?? src;
    },
    decompress(src, maxSize) {
      return decodedBlock('zstd', () => zstdDecode(src, maxSize));
    },
    decompressTransient(src, maxSize) {
      return decodedBlock('zstd', () => zstdDecode(src, maxSize, true));
    },
  };
}

export function zstdFromSettings(s: CompressorSettings): Compressor {
  const level = s.level ?? 15;
  if (!Number.isInteger(level) || level < 1 || level > 22) throw new RangeError(`zstd level ${level} is not 1..22`);
  return zstdCompressor(level, level !== 15);
}
