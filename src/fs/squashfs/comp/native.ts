/**
 * The prebuilt native codec addon (native/README.md), where one exists for this platform: libzstd,
 * liblzma and libdeflate compiled natively (zstd level 15 encodes ~1.3x faster than
 * in wasm). It is only an accelerator. Each thread loads it once; if there is no binary for the
 * platform, it does not load (another libc, an old glibc), its library versions differ from the wasm
 * builds' (the two must write the same bytes), or LIVESTICK_NATIVE=0 is set, callers use wasm (and
 * node:zlib for gzip decoding) instead.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface NativeCodecs {
  zstdEncode(level: number, src: Uint8Array, dst: Uint8Array): number;
  zstdDecode(src: Uint8Array, dst: Uint8Array): number;
  zstdError(code: number): string;
  zstdVersion(): number;
  xzEncode(preset: number, dictSize: number, bcjId: number, src: Uint8Array, dst: Uint8Array): number;
  xzDecode(memlimit: number, src: Uint8Array, dst: Uint8Array): number;
  xzVersion(): number;
  microLzmaDecode(dictSize: number, exact: number, src: Uint8Array, dst: Uint8Array): number;
  microLzmaEncode(preset: number, dictSize: number, src: Uint8Array, dst: Uint8Array, outLen: Uint8Array): number;
  /** The content length, or -(libdeflate_result): 1 bad data, 3 more output than dst holds, 4 out of memory. */
  zlibDecode(src: Uint8Array, dst: Uint8Array): number;
  /** The zlib stream's length, 0 when it does not fit in dst, or -1 (bad level, no memory). */
  zlibEncode(level: number, src: Uint8Array, dst: Uint8Array): number;
  deflateVersion(): number;
}

/** The library versions of libzstd.wasm.ts and liblzma.wasm.ts (wasm/build-*.sh). */
export const WASM_ZSTD_VERSION = 10506;
export const WASM_XZ_VERSION = 50080032;
/** libdeflate.wasm.ts's version, major × 1000 + minor (wasm/build-deflate.sh). */
export const WASM_DEFLATE_VERSION = 1025;

const PREBUILT: Readonly<Record<string, string>> = { 'linux-x64': 'linux-x64-gnu.node' };

let loaded: { codecs: NativeCodecs | undefined; why: string } | undefined;

/** This thread's addon, or undefined (see nativeStatus for why). */
export function nativeCodecs(): NativeCodecs | undefined {
  loaded ??= load();
  return loaded.codecs;
}

/** Whether the addon is in use on this thread, and if not, why. */
export function nativeStatus(): { active: boolean; why: string } {
  loaded ??= load();
  return { active: loaded.codecs !== undefined, why: loaded.why };
}

function load(): { codecs: NativeCodecs | undefined; why: string } {
  if (process.env['LIVESTICK_NATIVE'] === '0') return { codecs: undefined, why: 'LIVESTICK_NATIVE=0' };
  const name = PREBUILT[`${process.platform}-${process.arch}`];
  if (name === undefined) return { codecs: undefined, why: `no prebuilt binary for ${process.platform}-${process.arch}` };
  const file = findUp(join('native', 'prebuilt', name));
  if (file === undefined) return { codecs: undefined, why: `native/prebuilt/${name} not found` };
  try {
    const codecs = createRequire(import.meta.url)(file) as NativeCodecs;
    const zstd = codecs.zstdVersion();
    if (zstd !== WASM_ZSTD_VERSION) return { codecs: undefined, why: `${file} has libzstd ${zstd}, the wasm build ${WASM_ZSTD_VERSION}` };
    const xz = codecs.xzVersion();
    if (xz !== WASM_XZ_VERSION) return { codecs: undefined, why: `${file} has liblzma ${xz}, the wasm build ${WASM_XZ_VERSION}` };
    const deflate = typeof codecs.deflateVersion === 'function' ? codecs.deflateVersion() : 0;
    if (deflate !== WASM_DEFLATE_VERSION) return { codecs: undefined, why: `${file} has libdeflate ${deflate}, the wasm build ${WASM_DEFLATE_VERSION}` };
    return { codecs, why: file };
  } catch (err) {
    return { codecs: undefined, why: `${file} did not load: ${(err as Error).message}` };
  }
}

/** This thread's output buffer for the addon: encodes and transient decodes land here. */
let scratch = new Uint8Array(0);

function scratchOf(size: number): Uint8Array {
  if (scratch.byteLength < size) scratch = new Uint8Array(Math.max(size, 128 * 1024));
  return scratch.subarray(0, size);
}

/**
 * Runs an addon encoder, `run(dst)` returning the output length, 0 when it does not fit, or a negative
 * error (made an Error by `fail`), with `cap` bytes of room: undefined when the result is not smaller
 * than the `srcLength`-byte block (it is then stored as it is). With `transient`, the result is a view
 * of this thread's scratch buffer, valid until the next addon call. Mirrors wasm-module's encodeWith.
 */
export function encodeNative(srcLength: number, cap: number, run: (dst: Uint8Array) => number, fail: (n: number) => Error, transient = false): Uint8Array | undefined {
  if (srcLength <= 1) return undefined;
  const out = scratchOf(cap);
  const n = run(out);
  if (n < 0) throw fail(n);
  if (n === 0 || n >= srcLength) return undefined;
  return transient ? out.subarray(0, n) : out.slice(0, n);
}

/**
 * Runs an addon decoder, `run(dst)` returning the output length or a negative error, with room for
 * `maxSize` bytes. With `transient`, the result is a view of this thread's scratch buffer, valid until
 * the next addon call. Mirrors wasm-module's decodeWith.
 */
export function decodeNative(maxSize: number, transient: boolean, run: (dst: Uint8Array) => number, fail: (n: number) => Error): Uint8Array {
  // Decoded into the scratch buffer either way: a kept result is then one allocation of its exact
  // size (not one of maxSize and a trimmed copy), which keeps the allocator's arenas from growing.
  const out = scratchOf(maxSize);
  const n = run(out);
  if (n < 0) throw fail(n);
  return transient ? out.subarray(0, n) : out.slice(0, n);
}

/** `relative` under the nearest ancestor of this module's folder that has it (src/, dist/ or a copy). */
function findUp(relative: string): string | undefined {
  for (let dir = dirname(fileURLToPath(import.meta.url)); ; ) {
    const candidate = join(dir, relative);
    if (existsSync(candidate)) return candidate;
    const parent = dirname(dir);
    if (parent === dir) return undefined;
    dir = parent;
  }
}
