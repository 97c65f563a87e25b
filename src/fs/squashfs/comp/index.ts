/** Chooses the codec for an image (reading) or for options (writing). */
import { UnsupportedFeatureError } from '../../../errors.ts';
import { decodeGzipOptions, gzipCompressor, gzipFromSettings } from './gzip.ts';
import { decodeLz4Options, lz4Compressor, lz4FromSettings } from './lz4.ts';
import { CompressionId, type Compressor, type CompressorName, type CompressorSettings } from './types.ts';
import { decodeXzOptions, xzCompressor, xzFromSettings } from './xz.ts';
import { decodeZstdOptions, zstdCompressor, zstdFromSettings } from './zstd.ts';

export * from './types.ts';

export const COMPRESSOR_NAMES: Record<number, string> = { 1: 'gzip', 2: 'lzma', 3: 'lzo', 4: 'xz', 5: 'lz4', 6: 'zstd' };

/** The decoder for an image's compression id and stored options (undefined when none are stored). */
export function compressorForImage(id: number, options: Uint8Array | undefined, blockSize: number): Compressor {
  switch (id) {
    case CompressionId.gzip:
      return gzipCompressor(decodeGzipOptions(options), options !== undefined);
    case CompressionId.xz:
      return xzCompressor(decodeXzOptions(options, blockSize), 6, options !== undefined);
    case CompressionId.zstd:
      return zstdCompressor(decodeZstdOptions(options).level, options !== undefined);
    case CompressionId.lz4:
      return lz4Compressor(decodeLz4Options(options).hc);
    case CompressionId.lzma:
      throw new UnsupportedFeatureError('squashfs', 'compressor lzma', 'legacy LZMA1 images are not supported (the kernel cannot mount them either)');
    case CompressionId.lzo:
      throw new UnsupportedFeatureError('squashfs', 'compressor lzo', 'no clean pure-JS LZO dependency exists; recreate the image with gzip, xz, zstd or lz4');
    default:
      throw new UnsupportedFeatureError('squashfs', 'compressor', `unknown compression id ${id}`);
  }
}

/** A compressor for writing. */
export async function compressorForWriting(name: CompressorName, settings: CompressorSettings, blockSize: number): Promise<Compressor> {
  switch (name) {
    case 'gzip':
      return gzipFromSettings(settings);
    case 'xz':
      return xzFromSettings(settings, blockSize);
    case 'zstd':
      return zstdFromSettings(settings);
    case 'lz4':
      return lz4FromSettings(settings);
    default:
      throw new RangeError(`unknown compressor "${String(name)}" (use gzip, xz, zstd or lz4)`);
  }
}
