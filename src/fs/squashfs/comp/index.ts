/**
 * Chooses the codec for an image (reading) or for options (writing). Each codec module (with its
 * embedded wasm) is loaded on first use, so a process or worker thread only parses the one it needs.
 */
import { UnsupportedFeatureError } from '../../../errors.ts';
import { CompressionId, type Compressor, type CompressorName, type CompressorSettings } from './types.ts';

export * from './types.ts';

export const COMPRESSOR_NAMES: Record<number, string> = { 1: 'gzip', 2: 'lzma', 3: 'lzo', 4: 'xz', 5: 'lz4', 6: 'zstd' };

/** The decoder for an image's compression id and stored options (undefined when none are stored). */
export async function compressorForImage(id: number, options: Uint8Array | undefined, blockSize: number): Promise<Compressor> {
  switch (id) {
    case CompressionId.gzip: {
      const { decodeGzipOptions, gzipCompressor } = await import('./gzip.ts');
      return gzipCompressor(decodeGzipOptions(options), options !== undefined);
    }
    case CompressionId.xz: {
      const { decodeXzOptions, xzCompressor } = await import('./xz.ts');
      return xzCompressor(decodeXzOptions(options, blockSize), 6, options !== undefined);
    }
    case CompressionId.zstd: {
      const { decodeZstdOptions, zstdCompressor } = await import('./zstd.ts');
      return zstdCompressor(decodeZstdOptions(options).level, options !== undefined);
    }
    case CompressionId.lz4: {
      const { decodeLz4Options, lz4Compressor } = await import('./lz4.ts');
      return lz4Compressor(decodeLz4Options(options).hc);
    }
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
      return (await import('./gzip.ts')).gzipFromSettings(settings);
    case 'xz':
      return (await import('./xz.ts')).xzFromSettings(settings, blockSize);
    case 'zstd':
      return (await import('./zstd.ts')).zstdFromSettings(settings);
    case 'lz4':
      return (await import('./lz4.ts')).lz4FromSettings(settings);
    default:
      throw new RangeError(`unknown compressor "${String(name)}" (use gzip, xz, zstd or lz4)`);
  }
}
