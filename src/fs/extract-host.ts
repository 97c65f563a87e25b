/**
 * Host-side steps shared by the image extractors (squashfs/extract.ts, erofs/extract.ts): what stands
 * in the way of a non-directory is removed (a directory is refused), host errors become typed errors
 * naming the path, and all-zero pieces are left as holes.
 */
import { lstatSync, unlinkSync, writeSync } from 'node:fs';
import { AlreadyExistsError, fromSystemError } from '../errors.ts';
import { isAllZero } from '../io/bytes.ts';

export function lstatOrUndefined(path: string) {
  try {
    return lstatSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw fromSystemError(err, path, 'stat');
  }
}

export function clearForNonDir(path: string): void {
  const st = lstatOrUndefined(path);
  if (st === undefined) return;
  if (st.isDirectory()) throw new AlreadyExistsError(`a directory is in the way of a non-directory`, { file: path });
  try {
    unlinkSync(path);
  } catch (err) {
    throw fromSystemError(err, path, 'replace');
  }
}

export function host<T>(path: string, action: string, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    throw fromSystemError(err, path, action);
  }
}

/** Writes a piece of a file at `at`, leaving all-zero pieces as holes; false when it left a hole. */
export function writePiece(target: string, fd: number, piece: Uint8Array, at: number): boolean {
  if (isAllZero(piece)) return false;
  let done = 0;
  while (done < piece.byteLength) done += host(target, 'write the file', () => writeSync(fd, piece, done, piece.byteLength - done, at + done));
  return true;
}
