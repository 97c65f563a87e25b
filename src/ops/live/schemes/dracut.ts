/**
 * dracut dmsquash-live (Fedora and any LiveOS/ medium), 059 and dracut-ng.
 *
 * Base: `LiveOS/squashfs.img` (SquashFS or EROFS, told by magic) holding `LiveOS/rootfs.img` (or
 * 059's `ext3fs.img`), or a flat root (dracut-ng: `/usr` or `/ostree` at its root; 059: `/proc`);
 * or a bare `LiveOS/rootfs.img`. `rd.live.dir=` in the boot config names other LiveOS directories.
 * Persistence, on any volume of the stick (dracut's rd.live.overlay=LABEL=x names the volume):
 * - a file `LiveOS/overlay-L-U` without a filesystem: the dm-snapshot COW of rootfs.img;
 * - a file `LiveOS/overlay-L-U` holding a filesystem with `overlayfs/` and `ovlwork/`: the upper and
 *   work inside it (the vfat-stick form);
 * - a directory `LiveOS/overlay-L-U/` with `LiveOS/ovlwork/` beside it;
 * - dracut-ng's `rd.overlay=` device: `/overlay` and `/ovlwork` at a volume's root.
 * L-U is the base volume's label and uuid; the overlay belongs to the base whose volume has them.
 */
import type { FileSystem } from '../../../fs/filesystem.ts';
import { TEMP_MARK } from '../../medium.ts';
import { dracutOverlayName, fileKind, kindOf, listDir, liveSystem, persistence, type LiveSystem, type Lower, type Persistence, type SchemeName } from '../model.ts';
import type { Found, HomeCandidate, Scheme, SchemeContext } from '../scheme.ts';
import type { Volume } from '../volumes.ts';

const ROOT_IMAGES = ['LiveOS/rootfs.img', 'LiveOS/ext3fs.img'];

async function liveDirs(ctx: SchemeContext, volume: Volume, fs: FileSystem): Promise<string[]> {
  const dirs = ['/LiveOS'];
  for (const d of (await ctx.bootArgs(volume, fs)).values('rd.live.dir')) {
    const p = `/${d.replace(/^\/+|\/+$/g, '')}`;
    if (p !== '/' && !dirs.includes(p)) dirs.push(p);
  }
  return dirs;
}

/** dracut bases on a volume (`scheme` is 'ventoy-dracut' for an ISO on a Ventoy stick). */
export async function dracutBases(ctx: SchemeContext, volume: Volume, fs: FileSystem, scheme: SchemeName = 'dracut'): Promise<LiveSystem[]> {
  const out: LiveSystem[] = [];
  for (const dir of await liveDirs(ctx, volume, fs)) {
    if ((await kindOf(fs, dir)) !== 'dir') continue;
    const img = `${dir}/squashfs.img`;
    const notes: string[] = [];
    let lowers: Lower[] | undefined;
    let flat = false;
    if ((await kindOf(fs, img)) === 'file') {
      const format = await fileKind(fs, img);
      if (format === 'squashfs') {
        try {
          const inside = await squashfsInside(fs, img);
          flat = inside.flat;
          lowers = [{ volume, path: img, format, ...(inside.inner ? { inner: inside.inner } : {}) }];
          if (!inside.inner && !inside.flat) notes.push(`${img} holds neither ${ROOT_IMAGES.join(' nor ')} nor a root tree (/usr, /ostree or /proc): dracut cannot boot it`);
          if (inside.flat && inside.only059) notes.push(`${img} is a flat root with /proc but neither /usr nor /ostree: dracut 059 boots it, dracut-ng does not`);
        } catch (err) {
          ctx.problem(volume.displayPath(img), err);
          continue;
        }
      } else if (format === 'erofs') {
        // EROFS needs dracut ≥ 103, which takes it as a flat root (Fedora 42+); the root test is dracut-ng's.
        try {
          const top = await erofsTop(fs, img);
          flat = top.has('usr') || top.has('ostree');
          if (!flat) notes.push(`${img} is EROFS without /usr or /ostree: dracut cannot boot it as a root`);
        } catch (err) {
          ctx.problem(volume.displayPath(img), err);
          continue;
        }
        lowers = [{ volume, path: img, format }];
        notes.push(`${img} is EROFS (dracut-ng ≥ 103 boots it; dracut 059 does not)`);
      } else {
        ctx.problems.push(`${volume.displayPath(img)}: not a SquashFS or EROFS image (${format}); dracut cannot boot it`);
        continue;
      }
    } else if ((await kindOf(fs, `${dir}/rootfs.img`)) === 'file') {
      lowers = [{ volume, path: `${dir}/rootfs.img`, format: await fileKind(fs, `${dir}/rootfs.img`) }];
    }
    if (!lowers) continue;
    let home: LiveSystem['home'];
    if ((await kindOf(fs, `${dir}/home.img`)) === 'file') {
      const encrypted = (await fileKind(fs, `${dir}/home.img`)) === 'LUKS';
      home = { volume, path: `${dir}/home.img`, encrypted, mode: `mounted on /home by the live system's livesys scripts (${encrypted ? 'LUKS-encrypted, asked for at boot' : 'plain ext4'})` };
    }
    out.push(liveSystem({ scheme, volume, lowers, flat, notes, ...(home ? { home } : {}) }));
  }
  return out;
}

async function erofsTop(fs: FileSystem, img: string): Promise<Set<string>> {
  const { ErofsReader } = await import('../../../fs/erofs/reader.ts');
  const disk = await fs.openFile(img);
  try {
    return new Set((await (await ErofsReader.open(disk)).readdir('/')).map((e) => e.name));
  } finally {
    await disk.close();
  }
}

async function squashfsInside(fs: FileSystem, img: string): Promise<{ inner?: Lower['inner']; flat: boolean; only059: boolean }> {
  const { SquashfsReader } = await import('../../../fs/squashfs/reader.ts');
  const disk = await fs.openFile(img);
  try {
    const sq = await SquashfsReader.open(disk);
    const top = new Set((await sq.readdir('/')).map((e) => e.name));
    if (top.has('LiveOS')) {
      for (const candidate of ROOT_IMAGES) {
        try {
          const ino = await sq.lookup(candidate);
          if (ino.kind !== 'file') continue;
          const { imageKind } = await import('../../medium.ts');
          const inner = await sq.openFileDisk(candidate);
          try {
            return { inner: { path: candidate, format: await imageKind(inner) }, flat: false, only059: false };
          } finally {
            await inner.close();
          }
        } catch (err) {
          if (!(err instanceof Error && 'code' in err && (err as { code: string }).code === 'NOT_FOUND')) throw err;
        }
      }
    }
    const ng = top.has('usr') || top.has('ostree');
    return { flat: ng || top.has('proc'), only059: !ng && top.has('proc') };
  } finally {
    await disk.close();
  }
}

function dracutClaim(name: string): (base: LiveSystem) => boolean {
  return (base) => (base.scheme === 'dracut') && dracutOverlayName(base.volume) === name;
}

function overlayArg(volume: Volume): string {
  const label = volume.filesystem?.label;
  return label ? `rd.live.overlay=LABEL=${label}` : `rd.live.overlay=UUID=${volume.filesystem?.uuid ?? '…'}`;
}

async function dracutPersistence(ctx: SchemeContext, volume: Volume, fs: FileSystem | undefined): Promise<Found> {
  if (!fs) return {};
  const out: Persistence[] = [];
  const homes: HomeCandidate[] = [];
  for (const dir of await liveDirs(ctx, volume, fs)) {
    const names = await listDir(fs, dir);
    const hasWork = names.some((e) => e.name === 'ovlwork' && e.kind === 'dir');
    for (const e of names.filter((x) => x.name.startsWith('overlay-') && !x.name.includes(TEMP_MARK)).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const path = `${dir}/${e.name}`;
      const claims = dracutClaim(e.name);
      const expected = dracutOverlayName(volume);
      const weakClaim = {
        claims: (base: LiveSystem) => base.scheme === 'dracut' && base.volume === volume,
        note:
          expected === undefined
            ? `the volume's label and uuid are not known here (a directory), so whether the name matches the base's cannot be checked`
            : `its name is not ${expected}, the default for this base: dracut uses it only when the boot arguments name it (rd.live.overlay=…:${path})`,
      };
      const unmatchedReason = `${e.name} names no base on this stick (no volume with that label and uuid holds ${dir}/squashfs.img)`;
      const arg = overlayArg(volume);
      if (e.kind === 'dir') {
        out.push(
          persistence({
            kind: 'overlayfs',
            scheme: 'dracut',
            volume,
            upper: path,
            work: `${dir}/ovlwork`,
            present: hasWork,
            mode: hasWork
              ? `dracut mounts it as the overlayfs upper (work ${dir}/ovlwork) over the base when booted with ${arg} (plus rd.live.overlay.overlayfs for a rootfs.img base)`
              : `dracut does not use it: ${dir}/ovlwork is missing beside it, so the boot falls back to a temporary overlay`,
            claims,
            unmatchedReason,
            weakClaim,
          }),
        );
        continue;
      }
      if (e.kind !== 'file') continue;
      const kind = await fileKind(fs, path);
      if (kind === 'unknown') {
        out.push(
          persistence({
            kind: 'dm-snapshot',
            scheme: 'dracut',
            volume,
            upper: path,
            cow: { volume, path },
            mode: `dracut maps it as the persistent dm-snapshot COW (PO, 4 KiB chunks) of LiveOS/rootfs.img when booted with ${arg}`,
            claims: (base) => claims(base) && !base.flat,
            unmatchedReason,
            weakClaim: { claims: (base: LiveSystem) => weakClaim.claims(base) && !base.flat, note: weakClaim.note },
          }),
        );
        continue;
      }
      const nested = await ctx.stick.nested(volume, path);
      if (!nested) continue;
      const inner = await nested.tryOpen();
      const image = `the image ${path}`;
      if (!inner) {
        out.push(
          persistence({
            kind: 'overlayfs',
            scheme: 'dracut',
            volume: nested,
            upper: '/overlayfs',
            work: '/ovlwork',
            present: false,
            mode: nested.encryption ? `${image} is LUKS-encrypted: dracut does not open an encrypted overlay file; livestick opens it only with a passphrase` : `${image} holds ${kind}, which livestick cannot open${nested.problem ? ` (${nested.problem})` : ''}`,
            claims,
            unmatchedReason,
            weakClaim,
          }),
        );
        continue;
      }
      const ready = (await kindOf(inner, '/overlayfs')) === 'dir' && (await kindOf(inner, '/ovlwork')) === 'dir';
      out.push(
        persistence({
          kind: 'overlayfs',
          scheme: 'dracut',
          volume: nested,
          upper: '/overlayfs',
          work: '/ovlwork',
          present: ready,
          mode: ready
            ? `dracut loop-mounts ${image} and uses its /overlayfs as the overlayfs upper (work /ovlwork) over the base when booted with ${arg} rd.live.overlay.overlayfs`
            : `dracut does not use ${image} as overlayfs persistence: it lacks /overlayfs and /ovlwork at its root`,
          claims,
          unmatchedReason,
          weakClaim,
        }),
      );
    }
  }
  // dracut-ng's device-mode overlay: /overlay and /ovlwork at the root of the volume itself.
  if ((await kindOf(fs, '/overlay')) === 'dir' && (await kindOf(fs, '/ovlwork')) === 'dir') {
    const label = volume.filesystem?.label ?? volume.partition?.name;
    out.push(
      persistence({
        kind: 'overlayfs',
        scheme: 'dracut',
        volume,
        upper: '/overlay',
        work: '/ovlwork',
        mode: `dracut-ng (≥ 110) mounts this volume and uses /overlay as the overlayfs upper (work /ovlwork) when booted with rd.overlay=${label ? `LABEL=${label}` : 'this device'}${volume.encryption ? ' (rd.overlay.crypt: the LUKS passphrase is asked at boot)' : ''}`,
        claims: (base) => base.scheme === 'dracut',
        unmatchedReason: 'no dracut base on this stick',
      }),
    );
  }
  return { persistence: out, homes };
}

export const dracut: Scheme = {
  name: 'dracut',
  bases: (ctx, volume, fs) => dracutBases(ctx, volume, fs),
  persistence: dracutPersistence,
};
