/**
 * The model every scheme fills in and every op reads: a LiveSystem (a base as a lower stack, top
 * first) and its Persistence (dm-snapshot COW files, overlayfs uppers, live-boot bind and link
 * directories), each with the volume it lives on and what booting will do with it.
 *
 * Design notes
 * - A Persistence says which bases it may belong to through `claims(base)`; find.ts gives it to the
 *   one base that claims it, and lists it as unmatched when none (or several) do — so a scheme's
 *   matching rule (dracut's overlay-LABEL-UUID, Ventoy's ventoy.json) lives in its own file.
 * - Opening goes through the stick, which owns every Disk and FileSystem: `openLowers()` and
 *   `open()` need no close of their own beyond the returned no-op, and the stick's close ends them.
 */
import { LivestickError, ReadOnlyError, UnsupportedFeatureError, UsageError } from '../../errors.ts';
import type { Disk } from '../../io/disk.ts';
import type { FileSystem, FsEntry, WritableFileSystem } from '../../fs/filesystem.ts';
import { imageKind, type ImageKind } from '../medium.ts';
import type { Volume } from './volumes.ts';

export type SchemeName = 'dracut' | 'live-boot' | 'casper' | 'ventoy-dracut' | 'ventoy-casper' | 'ventoy-live-boot';

export interface Lower {
  readonly volume: Volume;
  /** The image file on the volume ('/LiveOS/squashfs.img', '/casper/filesystem.squashfs'). */
  readonly path: string;
  /** Its format by magic. */
  readonly format: ImageKind;
  /** An image inside it that is the real root ('LiveOS/rootfs.img' inside squashfs.img), and that image's format. */
  readonly inner?: { readonly path: string; readonly format: ImageKind };
}

export interface LowerLayer {
  readonly fs: FileSystem;
  readonly root: string;
  /** For a root image inside another (rootfs.img in squashfs.img): the outer image as a filesystem. */
  readonly container?: FileSystem;
}

export interface Home {
  readonly volume: Volume;
  /** '/LiveOS/home.img' on the volume, or '/' for a casper home-rw volume (a filesystem of its own). */
  readonly path: string;
  readonly encrypted: boolean;
  readonly mode: string;
}

export interface OpenPersistence {
  readonly fs: FileSystem;
  readonly upperRoot: string;
  readonly workRoot: string | undefined;
  close(): Promise<void>;
}

export type PersistenceKind = 'dm-snapshot' | 'overlayfs' | 'bind' | 'link';

export interface Persistence {
  readonly kind: PersistenceKind;
  readonly scheme: SchemeName;
  /** The volume holding the upper (a nested volume for an image file), or the COW file's volume. */
  readonly volume: Volume;
  /** The upper directory on `volume` (dm-snapshot: the COW file). */
  readonly upper: string;
  readonly work: string | undefined;
  /** The directory of the live system it persists ('/' for the root). */
  readonly target: string;
  /** The image or partition is LUKS (opened only with a passphrase). */
  readonly encrypted: boolean;
  /** casper's pre-upper/ layout: the root entries are moved into upper/ on the next boot. */
  readonly legacy: boolean;
  /** The upper exists already (a fresh Ventoy .dat gets it on its first boot). */
  readonly present: boolean;
  /** What booting will do with it, in one sentence (find.ts adds the caveat of a weak claim). */
  mode: string;
  belongsTo: LiveSystem | undefined;
  /** Why it belongs to no base, when it does not. */
  unmatched: string | undefined;
  /** Whether it may belong to `base` (find.ts assigns it when exactly one base claims it). */
  claims(base: LiveSystem): boolean;
  /** Said when no base claims it. */
  readonly unmatchedReason: string;
  /** Asked only when no base `claims` it: a base it may still belong to, and the caveat added to `mode` then. */
  readonly weakClaim?: { readonly claims: (base: LiveSystem) => boolean; readonly note: string };
  /** dm-snapshot: the COW file (volume + path), for the existing dm-snapshot pieces. */
  readonly cow?: { readonly volume: Volume; readonly path: string };
  /** The filesystem holding the upper (writable with `write`), the upper and work roots on it. */
  open(options?: { write?: boolean }): Promise<OpenPersistence>;
}

export interface LiveSystem {
  readonly scheme: SchemeName;
  /** The volume holding the base images. */
  readonly volume: Volume;
  /** The lower stack, top first. */
  readonly lowers: readonly Lower[];
  /** dracut: squashfs.img holds the root tree itself (no rootfs.img inside). */
  readonly flat: boolean;
  readonly persistence: Persistence[];
  home: Home | undefined;
  readonly notes: string[];
  /** The lower stack opened as filesystems, top first. */
  openLowers(): Promise<LowerLayer[]>;
}

/** The entries of a directory, or [] when it is missing or unreadable. */
export async function listDir(fs: FileSystem, path: string): Promise<FsEntry[]> {
  try {
    return await fs.readdir(path);
  } catch (err) {
    if (err instanceof LivestickError) return [];
    throw err;
  }
}

export async function kindOf(fs: FileSystem, path: string): Promise<'file' | 'dir' | 'other' | undefined> {
  try {
    const k = (await fs.stat(path)).kind;
    return k === 'file' || k === 'dir' ? k : 'other';
  } catch (err) {
    if (err instanceof LivestickError) return undefined;
    throw err;
  }
}

/** A file's format by magic ('unknown' when it cannot be read). */
export async function fileKind(fs: FileSystem, path: string): Promise<ImageKind> {
  let disk: Disk | undefined;
  try {
    disk = await fs.openFile(path);
    return await imageKind(disk);
  } catch (err) {
    if (err instanceof LivestickError) return 'unknown';
    throw err;
  } finally {
    await disk?.close();
  }
}

/** Reads a small text file (a boot config, persistence.conf, ventoy.json); undefined when missing or above `limit` bytes. */
export async function readText(fs: FileSystem, path: string, limit = 1 << 20): Promise<string | undefined> {
  let disk: Disk | undefined;
  try {
    const st = await fs.stat(path);
    if (st.kind !== 'file' || st.size > limit) return undefined;
    disk = await fs.openFile(path);
    const bytes = new Uint8Array(disk.size);
    if (bytes.byteLength > 0) await disk.read(bytes, 0);
    return new TextDecoder().decode(bytes);
  } catch (err) {
    if (err instanceof LivestickError) return undefined;
    throw err;
  } finally {
    await disk?.close();
  }
}

/** Opens one lower: SquashFS (and an ext4 rootfs.img inside it), a bare ext4 image; EROFS is not supported yet. */
export async function openLower(lower: Lower): Promise<LowerLayer> {
  const fs = await lower.volume.open();
  if (!fs) throw new UsageError(`${lower.volume.display} cannot be opened${lower.volume.problem ? `: ${lower.volume.problem}` : ''}`);
  const shown = lower.volume.displayPath(lower.path);
  const erofs = (): never => {
    throw new UnsupportedFeatureError('live base', 'EROFS image', 'a root image inside an EROFS base (or an EROFS root image inside SquashFS) is not a layout any distro builds', { file: shown });
  };
  try {
    const disk = await fs.openFile(lower.path);
    lower.volume.stick.adopt(disk);
    if (lower.format === 'erofs') {
      if (lower.inner) erofs();
      const [{ ErofsReader }, { ErofsFileSystem }] = await Promise.all([import('../../fs/erofs/reader.ts'), import('../../fs/erofs/filesystem.ts')]);
      return { fs: new ErofsFileSystem(await ErofsReader.open(disk)), root: '/' };
    }
    if (lower.format === 'squashfs') {
      const [{ SquashfsReader }, { SquashfsFileSystem }] = await Promise.all([import('../../fs/squashfs/reader.ts'), import('../../fs/squashfs/filesystem.ts')]);
      // Reads of a flat base are mostly whole blocks (decoded uncached) and fragment tails in order.
      const reader = await SquashfsReader.open(disk, { cacheBytes: lower.inner ? 16 << 20 : 8 << 20 });
      if (!lower.inner) return { fs: new SquashfsFileSystem(reader, disk.size), root: '/' };
      if (lower.inner.format === 'erofs') erofs();
      const inner = await reader.openFileDisk(lower.inner.path);
      return { fs: await ext4On(inner), root: '/', container: new SquashfsFileSystem(reader, disk.size) };
    }
    if (lower.format === 'ext4') return { fs: await ext4On(disk), root: '/' };
    throw new UnsupportedFeatureError('live base', lower.format, `not an image livestick can read as a base`, { file: shown });
  } catch (err) {
    throw err instanceof LivestickError ? err.withFile(shown) : err;
  }
}

async function ext4On(disk: Disk): Promise<FileSystem> {
  const [{ Ext4 }, { Ext4FileSystem }] = await Promise.all([import('../../fs/ext4/fs.ts'), import('../../fs/ext4/filesystem.ts')]);
  return new Ext4FileSystem(await Ext4.open(disk));
}

/** A LiveSystem with the lower stack opener every scheme shares. */
export function liveSystem(fields: Omit<LiveSystem, 'persistence' | 'openLowers' | 'home' | 'notes'> & { home?: Home; notes?: string[] }): LiveSystem {
  return {
    ...fields,
    home: fields.home,
    notes: fields.notes ?? [],
    persistence: [],
    openLowers: async () => {
      const out: LowerLayer[] = [];
      for (const l of fields.lowers) out.push(await openLower(l));
      return out;
    },
  };
}

export interface PersistenceFields {
  readonly kind: PersistenceKind;
  readonly scheme: SchemeName;
  readonly volume: Volume;
  readonly upper: string;
  readonly work?: string;
  readonly target?: string;
  readonly legacy?: boolean;
  readonly present?: boolean;
  readonly mode: string;
  readonly claims: (base: LiveSystem) => boolean;
  readonly unmatchedReason: string;
  readonly weakClaim?: Persistence['weakClaim'];
  readonly cow?: { readonly volume: Volume; readonly path: string };
}

/** A Persistence whose `open` gives the volume's filesystem (writable on request) and its upper/work roots. */
export function persistence(f: PersistenceFields): Persistence {
  const volume = f.volume;
  return {
    kind: f.kind,
    scheme: f.scheme,
    volume,
    upper: f.upper,
    work: f.work,
    target: f.target ?? '/',
    encrypted: volume.encryption !== undefined,
    legacy: f.legacy ?? false,
    present: f.present ?? true,
    mode: f.mode,
    belongsTo: undefined,
    unmatched: undefined,
    claims: f.claims,
    unmatchedReason: f.unmatchedReason,
    ...(f.weakClaim ? { weakClaim: f.weakClaim } : {}),
    ...(f.cow ? { cow: f.cow } : {}),
    async open(options = {}) {
      if (f.kind === 'dm-snapshot') throw new UsageError(`${volume.displayPath(f.upper)} is a dm-snapshot COW file, not an upper directory: open it through the overlay engine (cow)`);
      if (volume.locked) throw new UsageError(`${volume.display} is ${volume.problem ?? 'LUKS-encrypted'}: a passphrase is needed to open it`);
      let fs: FileSystem | WritableFileSystem | undefined;
      if (options.write) fs = await volume.writable();
      else fs = await volume.open();
      if (!fs) throw new ReadOnlyError(`${volume.display} holds no filesystem livestick can open`);
      return { fs, upperRoot: f.upper, workRoot: f.work, close: async () => {} };
    },
  };
}

/** The label and uuid of a base volume as dracut names its overlay: `overlay-LABEL-UUID`. */
export function dracutOverlayName(volume: Volume): string | undefined {
  const fs = volume.filesystem;
  if (!fs?.label || !fs.uuid) return undefined;
  return `overlay-${fs.label}-${fs.uuid}`;
}
