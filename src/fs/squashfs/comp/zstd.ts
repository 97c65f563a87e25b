import { createRequire } from 'node:module';
import { Decompress, decompress as fzstdDecompress } from 'fzstd';
import { CorruptImageError } from '../../../errors.ts';
import { view } from '../../../io/bytes.ts';
import { CompressionId, type Compressor, type CompressorSettings } from './types.ts';

/* zstd per block: one frame (squashfs-tools' ZSTD_compress). Encoding runs libzstd in wasm
 * (@bokuweb/zstd-wasm, initialised once per thread); decoding uses the same wasm when loaded, else
 * fzstd (pure JS); the frame's declared size is checked against the block size first, and frames
 * without one are streamed with a running bound. */

interface ZstdWasm {
  init(): Promise<void>;
  compress(buf: Uint8Array, level?: number): Uint8Array;
  decompress(buf: Uint8Array): Uint8Array;
}
let wasm: ZstdWasm | undefined;
let ready: Promise<void> | undefined;
let wasmReady = false;

/** Loads the wasm encoder; `zstdCompressor(...).compress` needs it done first. */
export function initZstd(): Promise<void> {
  if (ready === undefined) {
    wasm = createRequire(import.meta.url)('@bokuweb/zstd-wasm') as ZstdWasm;
    ready = wasm.init().then(() => {
      wasmReady = true;
    });
  }
  return ready;
}

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
      if (wasm === undefined) throw new Error('zstd: initZstd() was not awaited');
      return wasm.compress(src, level);
    },
    decompress(src, maxSize) {
      try {
        const size = frameContentSize(src);
        if (size !== undefined) {
          if (size > maxSize) throw new Error(`frame declares ${size} bytes, more than ${maxSize}`);
          // libzstd in wasm when it is loaded (fastest); else fzstd, which sizes its output from the
          // (checked) frame header. fzstd with a caller-supplied buffer is very slow: not used.
          const out = wasmReady && wasm ? wasm.decompress(src) : fzstdDecompress(src);
          if (out.byteLength !== size) throw new Error(`frame produced ${out.byteLength} bytes, declared ${size}`);
          return out;
        }
        // No declared size: stream, and stop as soon as the output passes the bound.
        const chunks: Uint8Array[] = [];
        let total = 0;
        const d = new Decompress((chunk) => {
          total += chunk.byteLength;
          if (total > maxSize) throw new Error(`output exceeds ${maxSize} bytes`);
          chunks.push(chunk);
        });
        d.push(src, true);
        return chunks.length === 1 ? (chunks[0] as Uint8Array) : new Uint8Array(Buffer.concat(chunks));
      } catch (err) {
        throw new CorruptImageError('squashfs', 'zstd block', `cannot decompress: ${(err as Error).message}`, undefined, { cause: err });
      }
    },
  };
}

/** Frame_Content_Size from a zstd frame header, or undefined when the frame does not declare it. */
function frameContentSize(src: Uint8Array): number | undefined {
  if (src.byteLength < 6) throw new Error('frame too short');
  const dv = view(src);
  if (dv.getUint32(0, true) !== 0xfd2fb528) throw new Error('bad frame magic');
  const fhd = src[4] as number;
  const fcsFlag = fhd >> 6;
  const single = (fhd >> 5) & 1;
  const dictBytes = [0, 1, 2, 4][fhd & 3] as number;
  const fcsBytes = [single ? 1 : 0, 2, 4, 8][fcsFlag] as number;
  const at = 5 + (single ? 0 : 1) + dictBytes;
  if (fcsBytes === 0) return undefined;
  if (at + fcsBytes > src.byteLength) throw new Error('frame header truncated');
  switch (fcsBytes) {
    case 1:
      return src[at] as number;
    case 2:
      return dv.getUint16(at, true) + 256;
    case 4:
      return dv.getUint32(at, true);
    default: {
      const v = dv.getBigUint64(at, true);
      return v > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(v);
    }
  }
}

export function zstdFromSettings(s: CompressorSettings): Compressor {
  const level = s.level ?? 15;
  if (!Number.isInteger(level) || level < 1 || level > 22) throw new RangeError(`zstd level ${level} is not 1..22`);
  return zstdCompressor(level, level !== 15);
}
