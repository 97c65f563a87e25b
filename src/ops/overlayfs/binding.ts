/**
 * Which base an overlayfs upper belongs to: a small record in the upper's work directory, where
 * neither the kernel (it only uses work/work and work/index) nor the boot code looks, and which the
 * merged view never shows.
 *
 * Design notes
 * - The record names each lower image of the stack, top first, by its path on its volume and a
 *   sampled identity (io/identity.ts: size plus SHA-256 over sampled ranges), so checking it costs a
 *   few MiB of reads whatever the base's size.
 * - One decode/encode pair; the decoder validates every field and throws CorruptImageError naming
 *   the record.
 */
import { CorruptImageError, LivestickError } from '../../errors.ts';
import { sampleDigest } from '../../io/identity.ts';
import type { FileSystem, WritableFileSystem } from '../../fs/filesystem.ts';
import type { LiveSystem } from '../live/index.ts';
import { readSmallFileOn } from '../files.ts';

export const BINDING_NAME = 'livestick-base.json';
const MAX_BYTES = 64 << 10;

export interface LowerIdentity {
  readonly path: string;
  readonly size: number;
  readonly digest: string;
}

export interface OverlayfsBinding {
  readonly schemaVersion: 1;
  readonly lowers: readonly LowerIdentity[];
  /** ISO 8601 time of binding. */
  readonly boundAt: string;
}

const fail = (field: string, message: string): never => {
  throw new CorruptImageError('livestick binding', field, message);
};

export function decodeBinding(bytes: Uint8Array): OverlayfsBinding {
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch (err) {
    return fail('json', `not valid UTF-8 JSON (${(err as Error).message})`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return fail('json', 'not an object');
  const v = value as Record<string, unknown>;
  if (v.schemaVersion !== 1) fail('schemaVersion', `unknown version ${JSON.stringify(v.schemaVersion)}`);
  if (typeof v.boundAt !== 'string' || Number.isNaN(Date.parse(v.boundAt))) fail('boundAt', 'not a time');
  if (!Array.isArray(v.lowers) || v.lowers.length === 0 || v.lowers.length > 64) fail('lowers', 'not a list of 1..64 images');
  const lowers = (v.lowers as unknown[]).map((l, i): LowerIdentity => {
    if (typeof l !== 'object' || l === null) return fail(`lowers[${i}]`, 'not an object');
    const e = l as Record<string, unknown>;
    if (typeof e.path !== 'string' || !e.path.startsWith('/') || e.path.length > 4096) fail(`lowers[${i}].path`, 'not an absolute path');
    if (typeof e.size !== 'number' || !Number.isSafeInteger(e.size) || e.size < 0) fail(`lowers[${i}].size`, 'not a size');
    if (typeof e.digest !== 'string' || !/^[0-9a-f]{64}$/.test(e.digest)) fail(`lowers[${i}].digest`, 'not a SHA-256');
    return { path: e.path as string, size: e.size as number, digest: e.digest as string };
  });
  return { schemaVersion: 1, lowers, boundAt: v.boundAt as string };
}

export function encodeBinding(b: OverlayfsBinding): Uint8Array {
  return new TextEncoder().encode(`${JSON.stringify({ schemaVersion: b.schemaVersion, lowers: b.lowers.map((l) => ({ path: l.path, size: l.size, digest: l.digest })), boundAt: b.boundAt }, null, 1)}\n`);
}

/** The identity of one image file, recorded under `recordAs` (its path in the lower stack). */
export async function fileIdentity(fs: FileSystem, path: string, recordAs = path): Promise<LowerIdentity> {
  const disk = await fs.openFile(path);
  try {
    const { size, digest } = await sampleDigest(disk);
    return { path: recordAs, size, digest };
  } finally {
    await disk.close();
  }
}

/** The identity of a system's lower stack as it is now. */
export async function lowerIdentities(system: LiveSystem): Promise<LowerIdentity[]> {
  const out: LowerIdentity[] = [];
  for (const lower of system.lowers) {
    const fs = await lower.volume.open();
    if (!fs) throw new CorruptImageError('live base', 'volume', `${lower.volume.display} cannot be opened`);
    out.push(await fileIdentity(fs, lower.path));
  }
  return out;
}

export function sameLowers(a: readonly LowerIdentity[], b: readonly LowerIdentity[]): boolean {
  return a.length === b.length && a.every((x, i) => x.path === b[i]!.path && x.size === b[i]!.size && x.digest === b[i]!.digest);
}

function bindingPath(work: string): string {
  return work === '/' ? `/${BINDING_NAME}` : `${work}/${BINDING_NAME}`;
}

/** The upper's binding, undefined when it has none; a damaged record is a CorruptImageError. */
export async function readBinding(fs: FileSystem, work: string | undefined): Promise<OverlayfsBinding | undefined> {
  if (work === undefined) return undefined;
  const bytes = await readSmallFileOn(fs, bindingPath(work), MAX_BYTES, 'livestick binding');
  return bytes === undefined ? undefined : decodeBinding(bytes);
}

export type BindingState = { readonly state: 'unbound' } | { readonly state: 'bound'; readonly matches: boolean; readonly binding: OverlayfsBinding } | { readonly state: 'damaged'; readonly message: string };

export async function bindingState(fs: FileSystem, work: string | undefined, current: readonly LowerIdentity[]): Promise<BindingState> {
  try {
    const binding = await readBinding(fs, work);
    if (binding === undefined) return { state: 'unbound' };
    return { state: 'bound', matches: sameLowers(binding.lowers, current), binding };
  } catch (err) {
    if (err instanceof LivestickError) return { state: 'damaged', message: err.message };
    throw err;
  }
}

/** Records `lowers` as the upper's base (a new file renamed over the old one). */
export async function writeBinding(fs: WritableFileSystem, work: string, lowers: readonly LowerIdentity[], now = new Date()): Promise<void> {
  const path = bindingPath(work);
  const temp = `${path}.livestick-tmp`;
  await fs.writeFile(temp, encodeBinding({ schemaVersion: 1, lowers, boundAt: now.toISOString() }));
  await fs.rename(temp, path);
}
