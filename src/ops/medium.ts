/**
 * The live medium: a directory holding LiveOS/ (a mounted stick or an unpacked copy), recognised the
 * way dracut's dmsquash-live does it — by content, not by name alone.
 *
 * Block layout (supported): LiveOS/squashfs.img is SquashFS whose root holds LiveOS/rootfs.img
 * (Fedora 24–40) or LiveOS/ext3fs.img (older); persistence is a dm-snapshot overlay file named
 * LiveOS/overlay-LABEL-UUID. Other layouts are recognised and named as not yet supported: a flat root
 * tree in squashfs.img (Fedora 41+), EROFS in squashfs.img (Fedora 42+ kiwi builds), an overlayfs
 * persistence directory, or an uncompressed LiveOS/rootfs.img on the medium.
 */
import { LivestickError, NotFoundError, RepairRefusedError, UnsupportedFeatureError, UsageError } from '../errors.ts';
import { readAt, type Disk } from '../io/disk.ts';
import { view } from '../io/bytes.ts';
import { SquashfsReader } from '../fs/squashfs/index.ts';
import type { WritableFile } from '../fs/filesystem.ts';
import type { RecoveryReport } from './switch.ts';
import { basename } from 'node:path';
import { isNotFound } from './files.ts';
import { directoryRoot, fsBasename, fsJoin, mediumPath, openMediumRoot, type MediumRoot, type OpenRootOptions } from './root.ts';

export const LIVEOS = 'LiveOS';
export const BASE_NAME = 'squashfs.img';
/** Names livestick gives its own files beside the medium's; never taken for an overlay. */
export const TEMP_MARK = '.livestick-';

/** Paths are the medium filesystem's own ('/LiveOS/squashfs.img'); `root.display` names them for people. */
export interface Medium {
  readonly root: MediumRoot;
  /** What the user named (a directory, an image file or a device). */
  readonly dir: string;
  readonly liveos: string;
  readonly basePath: string;
  /** The image inside squashfs.img that the overlay covers (LiveOS/rootfs.img or LiveOS/ext3fs.img). */
  readonly rootImage: string;
  readonly overlayPath: string | undefined;
  readonly overlayCandidates: readonly string[];
}

export interface OpenMedium extends Medium {
  readonly baseFile: Disk;
  readonly squashfs: SquashfsReader;
  /** The root image as a read-only Disk (decompressed on demand). */
  readonly rootDisk: Disk;
  close(): Promise<void>;
}

/**
 * Opens a medium for a command that reads it, after finishing an interrupted merge: a directory is
 * opened writable as always; an image or device read-only, and read-write only when a switch
 * journal or build leftovers need recovery or the volume was left dirty (so a healthy stick is never
 * opened for writing).
 */
export async function withRecoveredMedium<T>(target: string, options: OpenRootOptions, fn: (root: MediumRoot, recovery: RecoveryReport) => Promise<T>): Promise<T> {
  const { recoverMedium, recoveryNeeded } = await import('./switch.ts');
  const none: RecoveryReport = { action: 'none', files: [], warnings: [] };
  const recovered = async (root: MediumRoot): Promise<T> => fn(root, await recoverMedium({ root, liveos: await liveosDir(root) }));
  // One open when nothing needs recovery; the reopen for writing only when something does.
  const reopen = await withMediumRoot(target, options, async (root) => {
    if (!root.fs.readOnly) return { result: await recovered(root) };
    // A volume left dirty by a crash is reopened for writing too: that open repairs it (a lost chain of an unfinished build is space given back).
    if (root.fs.dirty === true || (await recoveryNeeded({ root, liveos: await liveosDir(root) }))) return undefined;
    return { result: await fn(root, none) };
  });
  if (reopen !== undefined) return reopen.result;
  try {
    return await withMediumRoot(target, { ...options, write: true }, recovered);
  } catch (err) {
    // A reading command on a volume whose repair is refused (damage a crash cannot explain) still reads it, as it is.
    if (!(err instanceof RepairRefusedError)) throw err;
    const warning = `the volume was not closed cleanly and livestick will not repair it (${err.message}); it is read as it is — check it with fsck.fat or chkdsk`;
    return withMediumRoot(target, options, (root) => fn(root, { ...none, warnings: [warning] }));
  }
}

/** Opens the medium's root, runs `fn`, and closes it (also when `fn` throws). */
export async function withMediumRoot<T>(target: string, options: OpenRootOptions, fn: (root: MediumRoot) => Promise<T>): Promise<T> {
  const root = await openMediumRoot(target, options);
  let result: T;
  try {
    result = await fn(root);
  } catch (err) {
    await root.close().catch(() => {});
    throw err;
  }
  await root.close();
  return result;
}

export type ImageKind = 'squashfs' | 'erofs' | 'ext4' | 'LUKS' | 'unknown';

/** What an image file holds, by its magic: the bases, persistence and home images a live medium uses. */
export async function imageKind(disk: Disk): Promise<ImageKind> {
  const head = await readAt(disk, 0, Math.min(disk.size, 2048));
  const dv = view(head);
  if (head.byteLength >= 4 && dv.getUint32(0, true) === 0x73717368) return 'squashfs';
  if (head.byteLength >= 1028 && dv.getUint32(1024, true) === 0xe0f5e1e2) return 'erofs';
  if (head.byteLength >= 1082 && dv.getUint16(1080, true) === 0xef53) return 'ext4';
  if (head.byteLength >= 6 && [0x4c, 0x55, 0x4b, 0x53, 0xba, 0xbe].every((b, i) => head[i] === b)) return 'LUKS';
  return 'unknown';
}

async function magicOf(root: MediumRoot, path: string): Promise<ImageKind> {
  const disk = await root.fs.openFile(path);
  try {
    return await imageKind(disk);
  } finally {
    await disk.close();
  }
}

async function kindAt(root: MediumRoot, path: string): Promise<'file' | 'dir' | 'other' | undefined> {
  try {
    const k = (await root.fs.stat(path)).kind;
    return k === 'file' || k === 'dir' ? k : 'other';
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw err;
  }
}

/** The medium's LiveOS directory (/LiveOS, or the root itself when the user named LiveOS/). */
export async function liveosDir(root: MediumRoot): Promise<string> {
  if ((await kindAt(root, `/${LIVEOS}`)) === 'dir') return `/${LIVEOS}`;
  if (root.hostDir !== undefined && basename(root.hostDir) === LIVEOS && (await kindAt(root, `/${BASE_NAME}`)) === 'file') return '/';
  throw new NotFoundError(`no ${LIVEOS}/ directory: not a live medium (expected ${root.display(`/${LIVEOS}/${BASE_NAME}`)})`, { file: root.target });
}

/** Finds LiveOS/, the base and the overlay; names unsupported layouts plainly. A string is a directory medium. */
export async function locateMedium(at: MediumRoot | string, options: { overlay?: string } = {}): Promise<Medium> {
  const root = typeof at === 'string' ? directoryRoot(at, { write: true }) : at;
  const dir = root.target;
  const liveos = await liveosDir(root);
  const basePath = fsJoin(liveos, BASE_NAME);
  const names = (await root.fs.readdir(liveos)).map((e) => e.name);
  const overlayEntries = names.filter((n) => n.startsWith('overlay-') && !n.includes(TEMP_MARK)).sort();
  const overlayFiles: string[] = [];
  const overlayDirs: string[] = [];
  for (const n of overlayEntries) {
    const k = await kindAt(root, fsJoin(liveos, n));
    (k === 'dir' ? overlayDirs : overlayFiles).push(fsJoin(liveos, n));
  }
  if ((await kindAt(root, basePath)) !== 'file') {
    if (names.includes('rootfs.img')) {
      throw new UnsupportedFeatureError('live medium', 'layout', `${root.display(fsJoin(liveos, 'rootfs.img'))} without squashfs.img (an uncompressed live root) is not supported yet`, { file: dir });
    }
    throw new NotFoundError(`no ${BASE_NAME} in ${root.display(liveos)}`, { file: root.display(basePath) });
  }
  const shown = root.display(basePath);
  const kind = await magicOf(root, basePath);
  if (kind === 'erofs') throw new UnsupportedFeatureError('live medium', 'layout', 'squashfs.img is an EROFS image (Fedora 42 and later): such a base keeps its changes in an overlayfs upper (LiveOS/overlay-LABEL-UUID/ with LiveOS/ovlwork/), and none is here; a dm-snapshot overlay cannot work over it', { file: shown });
  if (kind !== 'squashfs') throw new UnsupportedFeatureError('live medium', 'layout', `squashfs.img is not a SquashFS image (${kind})`, { file: shown });

  const disk = await root.fs.openFile(basePath);
  let rootImage: string | undefined;
  let flat = false;
  try {
    const sq = await SquashfsReader.open(disk);
    for (const candidate of ['LiveOS/rootfs.img', 'LiveOS/ext3fs.img']) {
      try {
        const ino = await sq.lookup(candidate);
        if (ino.kind === 'file') {
          rootImage = candidate;
          break;
        }
      } catch (err) {
        if (!(err instanceof NotFoundError)) throw err;
      }
    }
    if (rootImage === undefined) {
      const top = (await sq.readdir('/')).map((e) => e.name);
      flat = top.includes('usr') || top.includes('ostree');
    }
  } catch (err) {
    throw err instanceof LivestickError ? err.withFile(shown) : err;
  } finally {
    await disk.close();
  }
  if (rootImage === undefined) {
    if (flat) {
      throw new UnsupportedFeatureError('live medium', 'layout', 'squashfs.img holds the root tree directly (Fedora 41+ "flat" images, booted with overlayfs persistence); only the rootfs.img layout is supported yet', { file: shown });
    }
    throw new UnsupportedFeatureError('live medium', 'layout', 'squashfs.img holds neither LiveOS/rootfs.img nor LiveOS/ext3fs.img', { file: shown });
  }
  if (overlayDirs.length > 0 && overlayFiles.length === 0 && options.overlay === undefined) {
    throw new UnsupportedFeatureError('live medium', 'persistence', `${root.display(overlayDirs[0]!)} is an overlayfs persistence directory; only dm-snapshot overlay files are supported yet`, { file: root.display(overlayDirs[0]!) });
  }
  let overlayPath: string | undefined = options.overlay !== undefined ? mediumPath(root, liveos, options.overlay) : undefined;
  if (overlayPath === undefined) {
    if (overlayFiles.length > 1) {
      throw new UsageError(`several overlay files in ${root.display(liveos)} (${overlayFiles.map((f) => fsBasename(f)).join(', ')}); choose one with --overlay`);
    }
    overlayPath = overlayFiles[0];
  } else if ((await kindAt(root, overlayPath)) !== 'file') {
    throw new NotFoundError(`no overlay file ${root.display(overlayPath)}`, { file: root.display(overlayPath) });
  }
  return { root, dir, liveos, basePath, rootImage, overlayPath, overlayCandidates: overlayFiles };
}

/** Opens the base squashfs.img and the root image inside it. */
export async function openMedium(medium: Medium): Promise<OpenMedium> {
  const baseFile = await medium.root.fs.openFile(medium.basePath);
  try {
    // Reads of the root image are mostly sequential: a small block cache serves them and keeps memory flat.
    const squashfs = await SquashfsReader.open(baseFile, { cacheBytes: 16 << 20 });
    const rootDisk = await squashfs.openFileDisk(medium.rootImage);
    return { ...medium, baseFile, squashfs, rootDisk, close: () => baseFile.close() };
  } catch (err) {
    await baseFile.close();
    throw err instanceof LivestickError ? err.withFile(medium.root.display(medium.basePath)) : err;
  }
}

/** A file of the medium as a Disk: read-only, or writable in place (typed errors name the file). */
export async function openMediumFile(root: MediumRoot, path: string, mode: 'read'): Promise<Disk>;
export async function openMediumFile(root: MediumRoot, path: string, mode: 'write'): Promise<WritableFile>;
export async function openMediumFile(root: MediumRoot, path: string, mode: 'read' | 'write'): Promise<Disk> {
  try {
    return mode === 'read' ? await root.fs.openFile(path) : await root.writable().openFileForWriting(path);
  } catch (err) {
    throw err instanceof LivestickError ? err.withFile(root.display(path)) : err;
  }
}
