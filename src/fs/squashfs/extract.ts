/**
 * Extracts an image (or a subtree) into a host directory.
 *
 * Safety: the reader refuses names that are empty, ".", "..", or contain "/" or NUL; here duplicate
 * names in one directory are refused, every directory on the way is checked with lstat to be a real
 * directory (never a symlink, even one that was already in DEST), and existing non-directories are
 * replaced, never written through. Hard links are only made to files extracted in this run.
 * Node has no mknod, mkfifo or xattr API: devices, fifos, sockets and xattrs are reported as skipped.
 * Host calls are synchronous: per small file they cost far less than thread-pool round trips.
 */
import { chmodSync, closeSync, ftruncateSync, lchownSync, linkSync, lstatSync, lutimesSync, mkdirSync, openSync, symlinkSync, unlinkSync, utimesSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { AlreadyExistsError, CorruptImageError, fromSystemError } from '../../errors.ts';
import { isAllZero } from '../../io/bytes.ts';
import type { Inode } from './inode.ts';
import type { SquashfsReader } from './reader.ts';

export interface ExtractOptions {
  /** Set ownership from the image (default: when running as root). */
  owners?: boolean;
  onFile?: (path: string, bytes: number) => void;
}

export interface ExtractResult {
  files: number;
  dirs: number;
  symlinks: number;
  hardlinks: number;
  bytes: number;
  skipped: Array<{ path: string; reason: string }>;
}

function lstatOrUndefined(path: string) {
  try {
    return lstatSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw fromSystemError(err, path, 'stat');
  }
}

function clearForNonDir(path: string): void {
  const st = lstatOrUndefined(path);
  if (st === undefined) return;
  if (st.isDirectory()) throw new AlreadyExistsError(`a directory is in the way of a non-directory`, { file: path });
  try {
    unlinkSync(path);
  } catch (err) {
    throw fromSystemError(err, path, 'replace');
  }
}

function host<T>(path: string, action: string, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    throw fromSystemError(err, path, action);
  }
}

export async function extractSquashfs(reader: SquashfsReader, dest: string, subpath = '', options: ExtractOptions = {}): Promise<ExtractResult> {
  const owners = options.owners ?? (typeof process.getuid === 'function' && process.getuid() === 0);
  const result: ExtractResult = { files: 0, dirs: 0, symlinks: 0, hardlinks: 0, bytes: 0, skipped: [] };
  const linked = new Map<number, string>();
  const dirsToFinish: Array<{ path: string; inode: Inode }> = [];
  const names = new Map<string, Set<string>>();
  const prefix = subpath.split('/').filter((p) => p !== '' && p !== '.').join('/');
  const rel = (p: string): string => (prefix === '' ? p : p === prefix ? '' : p.slice(prefix.length + 1));

  host(dest, 'create the destination', () => mkdirSync(dest, { recursive: true }));
  for await (const { path: imagePath, inode } of reader.walk(prefix)) {
    const r = rel(imagePath);
    const target = r === '' ? dest : join(dest, ...r.split('/'));
    if (r !== '') {
      const cut = r.lastIndexOf('/');
      const parent = cut < 0 ? '' : r.slice(0, cut);
      const name = r.slice(cut + 1);
      let set = names.get(parent);
      if (set === undefined) names.set(parent, (set = new Set()));
      if (set.has(name)) throw new CorruptImageError('squashfs', 'directory', `duplicate name /${imagePath}`);
      set.add(name);
    }
    const meta = (): void => {
      if (owners) host(target, 'set ownership', () => lchownSync(target, reader.uid(inode), reader.gid(inode)));
      if (inode.kind === 'symlink') {
        try {
          lutimesSync(target, inode.mtime, inode.mtime);
        } catch {
          // not every host can set a symlink's times
        }
      } else {
        host(target, 'set mode and times', () => {
          chmodSync(target, inode.mode);
          utimesSync(target, inode.mtime, inode.mtime);
        });
      }
    };
    if (inode.xattr !== undefined) result.skipped.push({ path: imagePath, reason: 'xattrs (no xattr API in Node.js)' });
    switch (inode.kind) {
      case 'dir': {
        const st = lstatOrUndefined(target);
        if (st === undefined) {
          host(target, 'create the directory', () => mkdirSync(target, { mode: 0o700 }));
        } else if (!st.isDirectory()) {
          if (r === '') throw new AlreadyExistsError('the destination is not a directory', { file: target });
          clearForNonDir(target);
          host(target, 'create the directory', () => mkdirSync(target, { mode: 0o700 }));
        }
        result.dirs++;
        dirsToFinish.push({ path: target, inode });
        break;
      }
      case 'file': {
        clearForNonDir(target);
        const first = inode.nlink > 1 ? linked.get(inode.inodeNumber) : undefined;
        if (first !== undefined) {
          host(target, 'create the hard link', () => linkSync(first, target));
          result.hardlinks++;
          break;
        }
        const fd = host(target, 'create the file', () => openSync(target, 'wx', 0o600));
        try {
          let at = 0;
          for await (const piece of reader.stream(inode)) {
            if (!isAllZero(piece)) {
              let done = 0;
              while (done < piece.byteLength) done += host(target, 'write the file', () => writeSync(fd, piece, done, piece.byteLength - done, at + done));
            }
            at += piece.byteLength;
          }
          host(target, 'write the file', () => ftruncateSync(fd, at));
          result.bytes += at;
        } finally {
          closeSync(fd);
        }
        meta();
        if (inode.nlink > 1) linked.set(inode.inodeNumber, target);
        result.files++;
        options.onFile?.(imagePath, inode.fileSize);
        break;
      }
      case 'symlink':
        clearForNonDir(target);
        host(target, 'create the symlink', () => symlinkSync(Buffer.from(inode.target) as unknown as string, target));
        meta();
        result.symlinks++;
        break;
      default:
        result.skipped.push({ path: imagePath, reason: `${inode.kind} (Node.js cannot create special files)` });
    }
  }
  for (const d of dirsToFinish.reverse()) {
    host(d.path, 'set mode and times', () => {
      if (owners) lchownSync(d.path, reader.uid(d.inode), reader.gid(d.inode));
      chmodSync(d.path, d.inode.mode);
      utimesSync(d.path, d.inode.mtime, d.inode.mtime);
    });
  }
  return result;
}
