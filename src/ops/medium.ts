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
import { readdir, stat } from 'node:fs/promises';
import { pathExists } from '../io/host.ts';
import { basename, join } from 'node:path';
import { LivestickError, NotFoundError, UnsupportedFeatureError, UsageError, fromSystemError } from '../errors.ts';
import { FileDisk, readAt, type Disk } from '../io/disk.ts';
import { view } from '../io/bytes.ts';
import { SquashfsReader } from '../fs/squashfs/index.ts';

export const LIVEOS = 'LiveOS';
export const BASE_NAME = 'squashfs.img';
/** Names livestick gives its own files beside the medium's; never taken for an overlay. */
export const TEMP_MARK = '.livestick-';

export interface Medium {
  readonly dir: string;
  readonly liveos: string;
  readonly basePath: string;
  /** The image inside squashfs.img that the overlay covers (LiveOS/rootfs.img or LiveOS/ext3fs.img). */
  readonly rootImage: string;
  readonly overlayPath: string | undefined;
  readonly overlayCandidates: readonly string[];
}

export interface OpenMedium extends Medium {
  readonly baseFile: FileDisk;
  readonly squashfs: SquashfsReader;
  /** The root image as a read-only Disk (decompressed on demand). */
  readonly rootDisk: Disk;
  close(): Promise<void>;
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

async function magicOf(path: string): Promise<ImageKind> {
  const disk = await FileDisk.open(path, { readOnly: true });
  try {
    return await imageKind(disk);
  } finally {
    await disk.close();
  }
}

/** The medium's LiveOS directory (MEDIUM/LiveOS, or MEDIUM itself when it is one). */
export async function liveosDir(dir: string): Promise<string> {
  const liveos = join(dir, LIVEOS);
  if (await pathExists(liveos)) return liveos;
  if (basename(dir) === LIVEOS && (await pathExists(join(dir, BASE_NAME)))) return dir;
  throw new NotFoundError(`no ${LIVEOS}/ directory: not a live medium (expected ${join(dir, LIVEOS, BASE_NAME)})`, { file: dir });
}

/** Finds LiveOS/, the base and the overlay; names unsupported layouts plainly. */
export async function locateMedium(dir: string, options: { overlay?: string } = {}): Promise<Medium> {
  const liveos = await liveosDir(dir);
  const basePath = join(liveos, BASE_NAME);
  let names: string[];
  try {
    names = await readdir(liveos);
  } catch (err) {
    throw fromSystemError(err, liveos, 'list the directory');
  }
  const overlayEntries = names.filter((n) => n.startsWith('overlay-') && !n.includes(TEMP_MARK)).sort();
  const overlayFiles: string[] = [];
  const overlayDirs: string[] = [];
  for (const n of overlayEntries) {
    const st = await stat(join(liveos, n));
    (st.isDirectory() ? overlayDirs : overlayFiles).push(join(liveos, n));
  }
  if (!(await pathExists(basePath))) {
    if (names.includes('rootfs.img')) {
      throw new UnsupportedFeatureError('live medium', 'layout', `${join(liveos, 'rootfs.img')} without squashfs.img (an uncompressed live root) is not supported yet`, { file: dir });
    }
    throw new NotFoundError(`no ${BASE_NAME} in ${liveos}`, { file: basePath });
  }
  const kind = await magicOf(basePath);
  if (kind === 'erofs') throw new UnsupportedFeatureError('live medium', 'layout', 'squashfs.img is an EROFS image (Fedora 42+ kiwi builds); EROFS bases are not supported yet', { file: basePath });
  if (kind !== 'squashfs') throw new UnsupportedFeatureError('live medium', 'layout', `squashfs.img is not a SquashFS image (${kind})`, { file: basePath });

  const disk = await FileDisk.open(basePath, { readOnly: true });
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
    throw err instanceof LivestickError ? err.withFile(basePath) : err;
  } finally {
    await disk.close();
  }
  if (rootImage === undefined) {
    if (flat) {
      throw new UnsupportedFeatureError('live medium', 'layout', 'squashfs.img holds the root tree directly (Fedora 41+ "flat" images, booted with overlayfs persistence); only the rootfs.img layout is supported yet', { file: basePath });
    }
    throw new UnsupportedFeatureError('live medium', 'layout', 'squashfs.img holds neither LiveOS/rootfs.img nor LiveOS/ext3fs.img', { file: basePath });
  }
  if (overlayDirs.length > 0 && overlayFiles.length === 0 && options.overlay === undefined) {
    throw new UnsupportedFeatureError('live medium', 'persistence', `${overlayDirs[0]} is an overlayfs persistence directory; only dm-snapshot overlay files are supported yet`, { file: overlayDirs[0] });
  }
  // A bare name (no directory part) is a file inside LiveOS/.
  let overlayPath: string | undefined = options.overlay !== undefined && !/[\\/]/.test(options.overlay) ? join(liveos, options.overlay) : options.overlay;
  if (overlayPath === undefined) {
    if (overlayFiles.length > 1) {
      throw new UsageError(`several overlay files in ${liveos} (${overlayFiles.map((f) => basename(f)).join(', ')}); choose one with --overlay`);
    }
    overlayPath = overlayFiles[0];
  }
  return { dir, liveos, basePath, rootImage, overlayPath, overlayCandidates: overlayFiles };
}

/** Opens the base squashfs.img and the root image inside it. */
export async function openMedium(medium: Medium): Promise<OpenMedium> {
  const baseFile = await FileDisk.open(medium.basePath, { readOnly: true });
  try {
    // Reads of the root image are mostly sequential: a small block cache serves them and keeps memory flat.
    const squashfs = await SquashfsReader.open(baseFile, { cacheBytes: 16 << 20 });
    const rootDisk = await squashfs.openFileDisk(medium.rootImage);
    return { ...medium, baseFile, squashfs, rootDisk, close: () => baseFile.close() };
  } catch (err) {
    await baseFile.close();
    throw err instanceof LivestickError ? err.withFile(medium.basePath) : err;
  }
}
