/**
 * Debian live-boot. Base: every `live/*.squashfs` in sorted order, the last on top. Persistence: a
 * volume whose GPT partition name or filesystem label is `persistence` (or one of the labels of a
 * `persistence-label=` boot argument), or an image file of that name at a volume's root (or under
 * `persistence-path=`), holding `persistence.conf` at its root; each line of it is one persistence:
 * `union` → overlayfs upper `<source>/rw` and work `<source>/work`; `bind` → the directory itself;
 * `link` → files linked into the live directory. A LUKS volume or image with such a name is
 * reported as encrypted (live-boot opens it with persistence-encryption=luks).
 */
import type { FileSystem } from '../../../fs/filesystem.ts';
import { decodePersistenceConf, entryPaths } from '../persistence-conf.ts';
import { fileKind, kindOf, listDir, liveSystem, persistence, readText, type LiveSystem, type Persistence, type SchemeName } from '../model.ts';
import type { Found, Scheme, SchemeContext } from '../scheme.ts';
import type { Volume } from '../volumes.ts';

const BASE_FORMATS = new Set(['squashfs', 'ext4']);

/** live-boot bases on a volume (`scheme` is 'ventoy-live-boot' for an ISO on a Ventoy stick). */
export async function liveBootBases(_ctx: SchemeContext, volume: Volume, fs: FileSystem, scheme: SchemeName = 'live-boot'): Promise<LiveSystem[]> {
  const files = (await listDir(fs, '/live')).filter((e) => e.kind === 'file' && e.name.endsWith('.squashfs')).map((e) => e.name).sort();
  const lowers = [];
  for (const name of files) {
    const format = await fileKind(fs, `/live/${name}`);
    if (BASE_FORMATS.has(format)) lowers.push({ volume, path: `/live/${name}`, format });
  }
  if (lowers.length === 0) return [];
  return [liveSystem({ scheme, volume, lowers: lowers.reverse(), flat: true })];
}

async function labels(ctx: SchemeContext): Promise<string[]> {
  const given = (await ctx.argValues('persistence-label')).flatMap((v) => v.split(',')).filter((l) => l !== '');
  return given.length > 0 ? given : ['persistence'];
}

/**
 * The persistence of one live-boot volume (a partition, or the filesystem of an image file), read
 * from its persistence.conf. `claims` says which bases it belongs to.
 */
export async function liveBootVolumePersistence(
  ctx: SchemeContext,
  volume: Volume,
  options: { scheme: SchemeName; claims: (base: LiveSystem) => boolean; unmatchedReason: string; how: string },
): Promise<Persistence[]> {
  const fs = await volume.tryOpen();
  const common = { scheme: options.scheme, volume, claims: options.claims, unmatchedReason: options.unmatchedReason };
  if (!fs) {
    return [
      persistence({
        ...common,
        kind: 'overlayfs',
        upper: '/rw',
        work: '/work',
        present: false,
        mode: volume.encryption
          ? `${options.how} is LUKS-encrypted: live-boot opens it when booted with persistence-encryption=luks and then reads its persistence.conf; livestick opens it only with a passphrase`
          : `${options.how} cannot be opened${volume.problem ? ` (${volume.problem})` : ''}`,
      }),
    ];
  }
  const text = await readText(fs, '/persistence.conf');
  if (text === undefined) {
    ctx.problems.push(`${volume.display}: ${options.how} has no persistence.conf at its root, so live-boot ignores it`);
    return [];
  }
  let conf;
  try {
    conf = decodePersistenceConf(text);
  } catch (err) {
    ctx.problem(volume.displayPath('/persistence.conf'), err);
    return [];
  }
  const out: Persistence[] = [];
  for (const e of conf.entries) {
    const { upper, work } = entryPaths(e);
    const present = (await kindOf(fs, upper)) === 'dir';
    const what = e.dir === '/' ? 'the root' : e.dir;
    const mode =
      e.method === 'union'
        ? `live-boot mounts ${options.how} and uses ${upper} as the overlayfs upper of ${what} (work ${work}, redirect_dir=on) when booted with persistence${present ? '' : `; ${upper} is created on the first boot`}`
        : e.method === 'bind'
          ? `live-boot bind-mounts ${upper} of ${options.how} on ${e.dir} when booted with persistence${present ? '' : ` (first filled from ${e.dir} of the base)`}`
          : `live-boot links each file under ${upper} of ${options.how} into ${e.dir} when booted with persistence`;
    out.push(persistence({ ...common, kind: e.method === 'union' ? 'overlayfs' : e.method, upper, ...(work ? { work } : {}), target: e.dir, present, mode }));
  }
  return out;
}

async function liveBootPersistence(ctx: SchemeContext, volume: Volume, fs: FileSystem | undefined): Promise<Found> {
  const names = await labels(ctx);
  const claims = (base: LiveSystem): boolean => base.scheme === 'live-boot';
  const unmatchedReason = 'no live-boot base (live/*.squashfs) on this stick';
  const out: Persistence[] = [];
  const named = (volume.partition?.name !== undefined && names.includes(volume.partition.name)) || (volume.filesystem?.label !== undefined && names.includes(volume.filesystem.label));
  if (named || (volume.locked && volume.partition?.name !== undefined && names.includes(volume.partition.name))) {
    out.push(...(await liveBootVolumePersistence(ctx, volume, { scheme: 'live-boot', claims, unmatchedReason, how: `the volume ${volume.display}` })));
  }
  if (!fs) return { persistence: out };
  const dirs = ['/', ...(await ctx.argValues('persistence-path')).map((p) => `/${p.replace(/^\/+|\/+$/g, '')}`)];
  for (const dir of dirs) {
    for (const name of names) {
      const path = dir === '/' ? `/${name}` : `${dir}/${name}`;
      if ((await kindOf(fs, path)) !== 'file') continue;
      const kind = await fileKind(fs, path);
      if (kind === 'unknown') continue;
      const nested = await ctx.stick.nested(volume, path);
      if (nested) out.push(...(await liveBootVolumePersistence(ctx, nested, { scheme: 'live-boot', claims, unmatchedReason, how: `the image ${path}` })));
    }
  }
  return { persistence: out };
}

export const liveBoot: Scheme = {
  name: 'live-boot',
  bases: (ctx, volume, fs) => liveBootBases(ctx, volume, fs),
  persistence: liveBootPersistence,
};
