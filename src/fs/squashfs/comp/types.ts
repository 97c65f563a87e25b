/** The per-block codec interface every SquashFS compressor implements. */
import { CorruptImageError } from '../../../errors.ts';

export const CompressionId = { gzip: 1, lzma: 2, lzo: 3, xz: 4, lz4: 5, zstd: 6 } as const;
export type CompressorName = 'gzip' | 'xz' | 'zstd' | 'lz4';

export interface Compressor {
  readonly name: CompressorName;
  readonly id: number;
  /** The compressor-options payload stored after the superblock, or undefined to store none. */
  readonly options: Uint8Array | undefined;
  /** Compresses one block; the caller stores it uncompressed when the result is not smaller. */
  compress(src: Uint8Array): Uint8Array;
  /**
   * Same as compress, but the result may be a view into the codec's own memory, valid only until the
   * codec's next call on this thread (a worker that copies the result at once then allocates nothing).
   */
  compressTransient?(src: Uint8Array): Uint8Array;
  /** Decompresses one block whose uncompressed size is at most `maxSize`; throws CorruptImageError. */
  decompress(src: Uint8Array, maxSize: number): Uint8Array;
  /** Same as decompress, off the main thread where the codec allows (readers use it for read-ahead). */
  decompressAsync?(src: Uint8Array, maxSize: number): Promise<Uint8Array>;
  /**
   * Same as decompress, but the result may be a view into the codec's own memory, valid only until
   * the codec's next call on this thread (spares a copy when the block is written out at once).
   */
  decompressTransient?(src: Uint8Array, maxSize: number): Uint8Array;
  /**
   * Decoding is slow enough (xz: ~50 MB/s) that worker threads pay for their messaging and copies;
   * for zstd and lz4 (hundreds of MB/s) measured extracts were faster inline.
   */
  readonly decodeOnWorkers?: boolean;
}

/** What callers may ask of a compressor when writing. */
export interface CompressorSettings {
  /** gzip 1-9 (default 9), zstd 1-22 (default 15), xz preset 0-9 (default 6). */
  level?: number;
  /** gzip: zlib window bits 8-15 (default 15). */
  window?: number;
  /** xz: dictionary size (default: the block size). */
  dictSize?: number;
  /** xz: BCJ filters to try per block (the smallest output wins). */
  bcj?: readonly XzFilter[];
  /** lz4: encode with LZ4HC at its highest level (flag stored in the options, as mksquashfs -Xhc). */
  hc?: boolean;
}

export type XzFilter = 'x86' | 'powerpc' | 'ia64' | 'arm' | 'armthumb' | 'sparc';
export const XZ_FILTER_BITS: Record<XzFilter, number> = { x86: 1, powerpc: 2, ia64: 4, arm: 8, armthumb: 0x10, sparc: 0x20 };

/** Runs a block decoder; whatever it throws becomes a CorruptImageError naming the codec's block. */
export function decodedBlock(codec: CompressorName, decode: () => Uint8Array): Uint8Array {
  try {
    return decode();
  } catch (err) {
    throw new CorruptImageError('squashfs', `${codec} block`, `cannot decompress: ${(err as Error).message}`, undefined, { cause: err });
  }
}
