/**
 * The prebuilt native codec addon (native/README.md), where one exists for this platform: libzstd
 * compiled natively encodes level-15 blocks about 1.3x faster than the same version in wasm. It is
 * only an accelerator. Each thread loads it once; if there is no binary for the platform, it does
 * not load (another libc, an old glibc), its libzstd version differs from the wasm build's (the two
 * must write the same bytes), or LIVESTICK_NATIVE=0 is set, callers use the wasm build instead.
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
}

/** The libzstd version of libzstd.wasm.ts (wasm/build-zstd.sh). */
export const WASM_ZSTD_VERSION = 10506;

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
    const version = codecs.zstdVersion();
    if (version !== WASM_ZSTD_VERSION) return { codecs: undefined, why: `${file} has libzstd ${version}, the wasm build ${WASM_ZSTD_VERSION}` };
    return { codecs, why: file };
  } catch (err) {
    return { codecs: undefined, why: `${file} did not load: ${(err as Error).message}` };
  }
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
