/**
 * Ubuntu casper. Base: `casper/*.squashfs` in sorted order (the last on top), or a layer chain
 * `A`, `A.B`, `A.B.C` for `layerfs-path=A.B.C.squashfs` (top first: A.B.C) — taken from the boot
 * config, else from the file names (each longest chain whose every prefix exists is one system).
 * Persistence: a volume labelled `writable` (else `casper-rw`), or a file of that name holding a
 * filesystem at the root of a FAT volume (or under `persistent-path=`); upper `upper/` and work
 * `work/`, or the legacy layout with the upper at the filesystem root (casper moves it into upper/
 * on the next boot). `home-rw` (label or file) is mounted on /home as it is.
 */
import type { FileSystem } from '../../../fs/filesystem.ts';
import { fileKind, kindOf, listDir, liveSystem, persistence, type LiveSystem, type Lower, type Persistence, type SchemeName } from '../model.ts';
import type { Found, HomeCandidate, Scheme, SchemeContext } from '../scheme.ts';
import type { Volume } from '../volumes.ts';

const LEGACY_KEEP = new Set(['lost+found', 'upper', 'work', 'log', 'crash']);

function chain(stem: string): string[] {
  const parts = stem.split('.');
  return parts.map((_, i) => parts.slice(0, i + 1).join('.'));
}

/** casper bases on a volume (`scheme` is 'ventoy-casper' for an ISO on a Ventoy stick). */
export async function casperBases(ctx: SchemeContext, volume: Volume, fs: FileSystem, scheme: SchemeName = 'casper'): Promise<LiveSystem[]> {
  const stems = new Map<string, Lower>();
  for (const e of await listDir(fs, '/casper')) {
    if (e.kind !== 'file' || !e.name.endsWith('.squashfs')) continue;
    const path = `/casper/${e.name}`;
    const format = await fileKind(fs, path);
    if (format === 'squashfs') stems.set(e.name.slice(0, -'.squashfs'.length), { volume, path, format });
  }
  if (stems.size === 0) return [];
  const complete = (stem: string): boolean => chain(stem).every((s) => stems.has(s));
  const systemOf = (stem: string, source: string): LiveSystem =>
    liveSystem({ scheme, volume, flat: true, lowers: chain(stem).reverse().map((s) => stems.get(s)!), notes: [`layer chain ${chain(stem).join(' < ')} (${source})`] });
  const fromConfig = (await ctx.bootArgs(volume, fs)).values('layerfs-path').map((v) => v.replace(/^.*\//, '').replace(/\.squashfs$/, ''));
  const out: LiveSystem[] = [];
  for (const stem of fromConfig) {
    if (complete(stem)) out.push(systemOf(stem, 'layerfs-path in the boot config'));
    else ctx.problems.push(`${volume.display}: the boot config's layerfs-path=${stem}.squashfs names layers missing from /casper (${chain(stem).filter((s) => !stems.has(s)).map((s) => `${s}.squashfs`).join(', ')})`);
  }
  if (out.length > 0) return out;
  const layered = [...stems.keys()].filter((s) => s.includes('.') && complete(s));
  if (layered.length > 0) {
    const maximal = layered.filter((s) => !layered.some((o) => o !== s && o.startsWith(`${s}.`))).sort();
    return maximal.map((s) => systemOf(s, 'from the file names'));
  }
  const all = [...stems.keys()].sort();
  return [liveSystem({ scheme, volume, flat: true, lowers: all.reverse().map((s) => stems.get(s)!) })];
}

/** Where casper finds the upper on a persistence filesystem, and what its next boot does. */
export async function casperLayout(fs: FileSystem): Promise<{ upper: string; work: string; legacy: boolean; present: boolean }> {
  if ((await kindOf(fs, '/upper')) === 'dir') return { upper: '/upper', work: '/work', legacy: false, present: true };
  const entries = (await listDir(fs, '/')).filter((e) => !LEGACY_KEEP.has(e.name) && !e.name.startsWith('install-logs-'));
  if (entries.length > 0) return { upper: '/', work: '/work', legacy: true, present: true };
  return { upper: '/upper', work: '/work', legacy: false, present: false };
}

/** The root persistence of one casper volume (a partition, or an image file's filesystem). */
export async function casperVolumePersistence(volume: Volume, options: { scheme: SchemeName; claims: (b: LiveSystem) => boolean; unmatchedReason: string; how: string; when: string }): Promise<Persistence> {
  const fs = await volume.tryOpen();
  const common = { kind: 'overlayfs' as const, scheme: options.scheme, volume, claims: options.claims, unmatchedReason: options.unmatchedReason };
  if (!fs) {
    return persistence({
      ...common,
      upper: '/upper',
      work: '/work',
      present: false,
      mode: `${options.how} ${volume.encryption ? 'is LUKS-encrypted; casper does not open encrypted persistence' : `cannot be opened${volume.problem ? ` (${volume.problem})` : ''}`}`,
    });
  }
  const l = await casperLayout(fs);
  const mode = l.legacy
    ? `casper moves the root entries of ${options.how} into upper/ on the next boot ${options.when}, then mounts it at /cow with upper/ as the overlayfs upper of / (work work/)`
    : `casper mounts ${options.how} at /cow and uses upper/ as the overlayfs upper of / (work work/) when booted ${options.when}${l.present ? '' : '; upper/ and work/ are created on the first boot'}`;
  return persistence({ ...common, upper: l.upper, work: l.work, legacy: l.legacy, present: l.present, mode });
}

async function isFat(volume: Volume): Promise<boolean> {
  return (volume.filesystem?.type ?? '').startsWith('fat');
}

async function casperPersistence(ctx: SchemeContext, volume: Volume, fs: FileSystem | undefined): Promise<Found> {
  if (!fs) return {};
  const claims = (base: LiveSystem): boolean => base.scheme === 'casper';
  const unmatchedReason = 'no casper base (casper/*.squashfs) on this stick';
  const out: Persistence[] = [];
  const homes: HomeCandidate[] = [];
  const label = volume.filesystem?.label;
  const when = 'with persistent';
  if (label === 'writable' || label === 'casper-rw') {
    const how = `the volume ${volume.display} (label ${label})`;
    out.push(await casperVolumePersistence(volume, { scheme: 'casper', claims, unmatchedReason, how: label === 'casper-rw' ? `${how}, used only when no volume is labelled writable,` : how, when }));
  }
  if (label === 'home-rw') homes.push({ volume, path: '/', encrypted: false, mode: 'casper mounts this volume on /home as it is (no overlay) when booted with persistent', claims });
  if (!(await isFat(volume))) return { persistence: out, homes };
  // Files are looked for on FAT volumes only (casper's find_cow_device), at the root or under persistent-path=.
  const dirs = ['/', ...(await ctx.argValues('persistent-path')).map((p) => `/${p.replace(/^\/+|\/+$/g, '')}`)];
  for (const dir of dirs) {
    for (const name of ['writable', 'casper-rw', 'home-rw']) {
      const path = dir === '/' ? `/${name}` : `${dir}/${name}`;
      if ((await kindOf(fs, path)) !== 'file' || (await fileKind(fs, path)) === 'unknown') continue;
      const nested = await ctx.stick.nested(volume, path);
      if (!nested) continue;
      if (name === 'home-rw') {
        homes.push({ volume: nested, path: '/', encrypted: nested.encryption !== undefined, mode: `casper loop-mounts the image ${path} on /home as it is (no overlay) when booted with persistent`, claims });
        continue;
      }
      const how = name === 'casper-rw' ? `the image ${path}, used only when there is no writable,` : `the image ${path}`;
      out.push(await casperVolumePersistence(nested, { scheme: 'casper', claims, unmatchedReason, how, when }));
    }
  }
  return { persistence: out, homes };
}

export const casper: Scheme = {
  name: 'casper',
  bases: (ctx, volume, fs) => casperBases(ctx, volume, fs),
  persistence: casperPersistence,
};
