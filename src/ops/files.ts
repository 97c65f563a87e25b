/** Small file chores the medium operations share, on any FileSystem. */
import { CorruptImageError, LivestickError } from '../errors.ts';
import type { Disk } from '../io/disk.ts';
import type { FileSystem, WritableFileSystem } from '../fs/filesystem.ts';
import type { MediumRoot } from './root.ts';

/** A typed "no such file" from any FileSystem. */
export const isNotFound = (err: unknown): boolean => err instanceof LivestickError && err.code === 'NOT_FOUND';

export async function fileExists(fs: FileSystem, path: string): Promise<boolean> {
  try {
    await fs.stat(path);
    return true;
  } catch (err) {
    if (isNotFound(err)) return false;
    throw err;
  }
}

/** Removes a file; a missing one is not an error. Returns whether one was removed. */
export async function removeIfExists(fs: WritableFileSystem, path: string): Promise<boolean> {
  if (!(await fileExists(fs, path))) return false;
  try {
    await fs.unlink(path);
    return true;
  } catch (err) {
    if (isNotFound(err)) return false;
    throw err;
  }
}

/** A small file's bytes on any FileSystem (undefined when it does not exist); larger than `max` is a typed error naming `shown`. */
export async function readSmallFileOn(fs: FileSystem, path: string, max: number, what: string, shown = path): Promise<Uint8Array | undefined> {
  let disk: Disk;
  try {
    disk = await fs.openFile(path);
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw err;
  }
  try {
    if (disk.size > max) throw new CorruptImageError(what, 'size', `${disk.size} bytes, more than ${max} such a file ever holds`, undefined, { file: shown });
    const bytes = new Uint8Array(disk.size);
    if (bytes.byteLength > 0) await disk.read(bytes, 0);
    return bytes;
  } finally {
    await disk.close();
  }
}

/** A small file's bytes (undefined when it does not exist); larger than `max` is a typed error. */
export async function readSmallFile(root: MediumRoot, path: string, max: number, what: string): Promise<Uint8Array | undefined> {
  return readSmallFileOn(root.fs, path, max, what, root.display(path));
}

/** Copies a Disk's bytes into a new file `to` (which must not exist); durable when it returns. */
export async function copyDiskInto(src: Disk, fs: WritableFileSystem, to: string, onBytes?: (done: number) => void): Promise<void> {
  const dst = await fs.createFile(to, { size: src.size, uninitialized: true });
  try {
    const piece = new Uint8Array(Math.min(4 << 20, Math.max(1, src.size)));
    for (let at = 0; at < src.size; at += piece.byteLength) {
      const part = piece.subarray(0, Math.min(piece.byteLength, src.size - at));
      await src.read(part, at);
      await dst.write(part, at);
      onBytes?.(at + part.byteLength);
    }
    await dst.flush();
  } finally {
    await dst.close();
  }
  await fs.flush();
}

/** Copies a file within one filesystem (durable when it returns); `to` must not exist. */
export async function copyWithin(fs: WritableFileSystem, from: string, to: string): Promise<void> {
  const src = await fs.openFile(from);
  try {
    await copyDiskInto(src, fs, to);
  } finally {
    await src.close();
  }
}
