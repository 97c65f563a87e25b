/**
 * Ventoy sticks: a data partition of ISO files and a small FAT partition labelled VTOYEFI (its GRUB
 * and EFI loader). A stick is Ventoy's when a volume labelled VTOYEFI holds /grub or /EFI, or a
 * volume holds /ventoy/ventoy.json; the data volume is the one with ventoy.json, else the first
 * partition beside VTOYEFI.
 *
 * Bases: each ISO named by ventoy.json or lying in the data volume's root or a directory below it,
 * opened as a nested ISO9660 volume and read with the dracut, casper and live-boot rules (scheme
 * ventoy-dracut, ventoy-casper, ventoy-live-boot). Persistence: the backend files ventoy.json's
 * `persistence` plugin maps to an ISO (an ext4/xfs filesystem in a file, possibly LUKS), with the
 * upper where Ventoy's hooks put it: for dracut `/vtoyoverlayfs/overlayfs` + `/vtoyoverlayfs/ovlwork`,
 * for casper `upper/` + `work/` (label casper-rw or writable), for live-boot per its persistence.conf.
 */
import type { FileSystem } from '../../../fs/filesystem.ts';
import { decodeVentoyJson, type VentoyJson } from '../ventoy-json.ts';
import { kindOf, listDir, persistence, readText, type LiveSystem, type Persistence, type SchemeName } from '../model.ts';
import type { Found, Scheme, SchemeContext } from '../scheme.ts';
import type { Volume } from '../volumes.ts';
import { casperBases, casperVolumePersistence } from './casper.ts';
import { dracutBases } from './dracut.ts';
import { liveBootBases, liveBootVolumePersistence } from './live-boot.ts';

const MAX_ISOS = 256;

async function findVentoy(ctx: SchemeContext): Promise<{ data: Volume; dataFs: FileSystem; efi?: Volume } | undefined> {
  let efi: Volume | undefined;
  let data: Volume | undefined;
  for (const v of ctx.stick.topLevel) {
    const fs = await v.tryOpen();
    if (!fs) continue;
    if (v.filesystem?.label === 'VTOYEFI' && ((await kindOf(fs, '/grub')) === 'dir' || (await kindOf(fs, '/EFI')) === 'dir')) efi = v;
    else if ((await kindOf(fs, '/ventoy/ventoy.json')) === 'file') data ??= v;
  }
  if (!data && efi) data = ctx.stick.topLevel.find((v) => v !== efi && v.partition?.index === 1);
  if (!data) return undefined;
  const dataFs = await data.tryOpen();
  return dataFs ? { data, dataFs, ...(efi ? { efi } : {}) } : undefined;
}

async function isoFiles(fs: FileSystem): Promise<string[]> {
  const out: string[] = [];
  const visit = async (dir: string, depth: number): Promise<void> => {
    for (const e of (await listDir(fs, dir)).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      if (out.length >= MAX_ISOS) return;
      const path = dir === '/' ? `/${e.name}` : `${dir}/${e.name}`;
      if (e.kind === 'file' && /\.iso$/i.test(e.name)) out.push(path);
      else if (e.kind === 'dir' && depth > 0 && e.name !== 'ventoy' && !e.name.startsWith('.') && e.name !== 'System Volume Information') await visit(path, depth - 1);
    }
  };
  await visit('/', 1);
  return out;
}

const INNER: readonly { scheme: SchemeName; find: typeof dracutBases }[] = [
  { scheme: 'ventoy-dracut', find: dracutBases },
  { scheme: 'ventoy-casper', find: casperBases },
  { scheme: 'ventoy-live-boot', find: liveBootBases },
];

function isoOf(system: LiveSystem): string | undefined {
  return system.volume.parent ? system.volume.path : undefined;
}

async function backendPersistence(ctx: SchemeContext, backend: Volume, iso: string, path: string, target: LiveSystem | undefined): Promise<Persistence[]> {
  const claims = (base: LiveSystem): boolean => base === target;
  const unmatchedReason = `ventoy.json maps ${path} to ${iso}, ${target ? 'whose live system is not recognised' : 'which holds no live system livestick recognises (or is missing)'}`;
  const fs = await backend.tryOpen();
  const label = backend.filesystem?.label;
  const pick: SchemeName | undefined = target?.scheme ?? (label === 'casper-rw' || label === 'writable' ? 'ventoy-casper' : label === 'persistence' ? 'ventoy-live-boot' : label === 'vtoycow' ? 'ventoy-dracut' : undefined);
  const menu = `when ${iso} is booted from Ventoy's menu with ${path} chosen as its persistence`;
  if (pick === 'ventoy-casper') return [await casperVolumePersistence(backend, { scheme: pick, claims, unmatchedReason, how: `the backend ${path}`, when: `${menu} (Ventoy sets PERSISTENT=YES${label === 'casper-rw' || label === 'writable' ? '' : `; casper needs the label casper-rw or writable, this one is ${label ?? 'unlabelled'}`})` })];
  if (pick === 'ventoy-live-boot') {
    return liveBootVolumePersistence(ctx, backend, { scheme: pick, claims, unmatchedReason, how: `the backend ${path} (${menu})` });
  }
  const upper = '/vtoyoverlayfs/overlayfs';
  const work = '/vtoyoverlayfs/ovlwork';
  const present = fs !== undefined && (await kindOf(fs, upper)) === 'dir';
  return [
    persistence({
      kind: 'overlayfs',
      scheme: pick ?? 'ventoy-dracut',
      volume: backend,
      upper,
      work,
      present,
      mode: fs
        ? `Ventoy maps the backend as a device and dracut mounts ${upper} on it as the overlayfs upper (work ${work}) ${menu}${present ? '' : '; both directories are created on the first boot'}`
        : `the backend ${path} ${backend.encryption ? 'is LUKS-encrypted (Ventoy asks for its passphrase at boot)' : `cannot be opened${backend.problem ? ` (${backend.problem})` : ''}`}; it is used ${menu}`,
      claims,
      unmatchedReason,
    }),
  ];
}

async function ventoyStick(ctx: SchemeContext): Promise<Found> {
  const v = await findVentoy(ctx);
  if (!v) return {};
  const { data, dataFs } = v;
  let conf: VentoyJson = { persistence: [], other: {} };
  const text = await readText(dataFs, '/ventoy/ventoy.json');
  if (text !== undefined) {
    try {
      conf = decodeVentoyJson(text);
    } catch (err) {
      ctx.problem(data.displayPath('/ventoy/ventoy.json'), err);
    }
  }
  const isos = await isoFiles(dataFs);
  for (const e of conf.persistence) if (!isos.includes(e.image)) isos.push(e.image);
  const systems: LiveSystem[] = [];
  for (const iso of isos) {
    const nested = await ctx.stick.nested(data, iso);
    if (!nested) {
      if (conf.persistence.some((e) => e.image === iso)) ctx.problems.push(`${data.displayPath('/ventoy/ventoy.json')}: the persistence plugin names ${iso}, which is not on ${data.display}`);
      continue;
    }
    const fs = await nested.tryOpen();
    if (!fs) continue;
    for (const inner of INNER) systems.push(...(await inner.find(ctx, nested, fs, inner.scheme)));
  }
  const found: Persistence[] = [];
  for (const e of conf.persistence) {
    const targets = systems.filter((s) => isoOf(s) === e.image);
    for (const path of e.backends) {
      const backend = await ctx.stick.nested(data, path);
      if (!backend) {
        ctx.problems.push(`${data.displayPath('/ventoy/ventoy.json')}: the backend ${path} of ${e.image} is not on ${data.display}`);
        continue;
      }
      found.push(...(await backendPersistence(ctx, backend, e.image, path, targets.length === 1 ? targets[0] : undefined)));
    }
  }
  return { systems, persistence: found };
}

export const ventoy: Scheme = { name: 'ventoy', stick: ventoyStick };
