/**
 * Host-filesystem operations for the layers that manage files on a medium. Every operation that
 * changes something passes a fault point first (io/faults.ts), so tests can fail any one of them.
 */
import * as fsp from 'node:fs/promises';
import { constants as fsConstants } from 'node:fs';
import { SimulatedCrash, faultPoint } from './faults.ts';
import { fromSystemError } from '../errors.ts';

/** Runs a host operation; a system error becomes the typed one (the original kept as its cause). */
async function typed<T>(path: string, action: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof SimulatedCrash) throw err;
    throw fromSystemError(err, path, action);
  }
}

export async function pathExists(path: string): Promise<boolean> {
  try {
    await fsp.lstat(path);
    return true;
  } catch {
    return false;
  }
}

/** fsync a file by path (data and metadata). */
export async function fsyncFile(path: string): Promise<void> {
  await typed(path, 'flush the file to disk', async () => {
    faultPoint('fsync', path);
    const fh = await fsp.open(path, 'r+');
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
  });
}

/** Errors that mean "this host cannot fsync a directory" (Windows, some network filesystems). */
const DIR_SYNC_UNSUPPORTED = new Set(['EISDIR', 'EINVAL', 'ENOTSUP', 'EOPNOTSUPP', 'EPERM', 'EACCES', 'EBADF']);

/** fsync a directory so renames in it are durable; a host that cannot (Windows) is left alone. */
export async function fsyncDir(dir: string): Promise<void> {
  try {
    faultPoint('fsync', dir);
    const fh = await fsp.open(dir, 'r');
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
  } catch (err) {
    // The rename itself is still atomic there; a real I/O error is not ignored.
    if (err instanceof SimulatedCrash) throw err;
    if (!DIR_SYNC_UNSUPPORTED.has((err as NodeJS.ErrnoException).code ?? '')) throw fromSystemError(err, dir, 'flush the directory to disk');
  }
}

export async function rename(from: string, to: string): Promise<void> {
  await typed(from, `rename it to ${to}`, async () => {
    faultPoint('rename', `${from} -> ${to}`);
    await fsp.rename(from, to);
  });
}

/** Removes a file; a missing file is not an error. */
export async function removeFile(path: string): Promise<boolean> {
  if (!(await pathExists(path))) return false;
  try {
    faultPoint('unlink', path);
    await fsp.unlink(path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    if (err instanceof SimulatedCrash) throw err;
    throw fromSystemError(err, path, 'remove the file');
  }
}

export async function link(existing: string, newPath: string): Promise<void> {
  await typed(newPath, `link it to ${existing}`, async () => {
    faultPoint('link', `${existing} -> ${newPath}`);
    await fsp.link(existing, newPath);
  });
}

export async function copyFile(from: string, to: string): Promise<void> {
  await typed(to, `copy ${from} to it`, async () => {
    faultPoint('copy', `${from} -> ${to}`);
    await fsp.copyFile(from, to, fsConstants.COPYFILE_EXCL);
  });
}

/** Writes a small file durably under a temporary name, then renames it over `path`. */
export async function writeFileAtomic(path: string, data: string | Uint8Array, tmpSuffix: string): Promise<void> {
  const tmp = `${path}${tmpSuffix}`;
  await removeFile(tmp);
  await typed(tmp, 'write the file', async () => {
    faultPoint('create', tmp);
    await fsp.writeFile(tmp, data, { flag: 'wx' });
  });
  await fsyncFile(tmp);
  await rename(tmp, path);
}

export async function chown(path: string, uid: number, gid: number): Promise<void> {
  await typed(path, `give it owner ${uid}:${gid}`, async () => {
    faultPoint('write', `chown ${path}`);
    await fsp.chown(path, uid, gid);
  });
}

export async function chmod(path: string, mode: number): Promise<void> {
  await typed(path, `set its mode to ${mode.toString(8)}`, async () => {
    faultPoint('write', `chmod ${path}`);
    await fsp.chmod(path, mode);
  });
}

/** The largest file FAT12/16/32 can hold. */
export const FAT_MAX_FILE_BYTES = 2 ** 32 - 1;

export interface HostSpace {
  /** Free bytes for this user, or null when the host does not say. */
  readonly freeBytes: number | null;
  readonly totalBytes?: number | null;
  /** FAT and exFAT have no sparse files: a new image is allocated in full. */
  readonly kind: 'fat' | 'exfat' | 'other';
}

const MSDOS_SUPER_MAGIC = 0x4d44;
const EXFAT_SUPER_MAGIC = 0x2011bab0;

export async function hostSpace(dir: string): Promise<HostSpace> {
  try {
    const s = await fsp.statfs(dir);
    const kind = s.type === MSDOS_SUPER_MAGIC ? 'fat' : s.type === EXFAT_SUPER_MAGIC ? 'exfat' : 'other';
    return { freeBytes: s.bavail * s.bsize, totalBytes: s.blocks * s.bsize, kind };
  } catch {
    return { freeBytes: null, totalBytes: null, kind: 'other' };
  }
}

/**
 * Whether the host can hold a new image of `size` bytes: refused on FAT above 4 GiB − 1 and, where
 * files are allocated in full (FAT, exFAT), when the space is not there; a sparse image larger than
 * the free space is allowed with a warning (it can only grow into what the host has).
 */
export function newImageVerdict(space: HostSpace, size: number, what: string, fmt: (n: number) => string): { refuse?: string; warning?: string } {
  if (space.kind === 'fat' && size > FAT_MAX_FILE_BYTES) {
    return { refuse: `${what} of ${fmt(size)} cannot live on FAT: a FAT32 file holds at most 4 GiB − 1 byte. Choose a smaller size, or put it on an ext4 or exFAT partition` };
  }
  if (space.freeBytes === null || size <= space.freeBytes) return {};
  if (space.kind !== 'other') return { refuse: `${what} of ${fmt(size)} does not fit: ${space.kind === 'fat' ? 'FAT' : 'exFAT'} allocates files in full and only ${fmt(space.freeBytes)} is free` };
  return { warning: `${what} is ${fmt(size)} but the host has only ${fmt(space.freeBytes)} free: the file is sparse and can only really grow by that much; writes beyond it will fail on the live system` };
}
