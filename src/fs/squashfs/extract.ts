/**
 * Extracts an image (or a subtree) into a host directory.
 *
 * Safety: the reader refuses names that are empty, ".", "..", or contain "/" or NUL; here duplicate
 * names in one directory are refused, every directory on the way is checked with lstat to be a real
 * directory (never a symlink, even one that was already in DEST), and existing non-directories are
 * replaced, never written through. Hard links are only made to files extracted in this run.
 * Node has no mknod, mkfifo or xattr API: devices, fifos, sockets and xattrs are reported as skipped.
 */
import { chmod, lchown, link, lstat, lutimes, mkdir, open, symlink, unlink, utimes } from 'node:fs/promises';
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

async function lstatOrUndefined(path: string) {
  try {
    return await lstat(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw fromSystemError(err, path, 'stat');
  }
}

async function clearForNonDir(path: string): Promise<void> {
  const st = await lstatOrUndefined(path);
  if (st === undefined) return;
  if (st.isDirectory()) throw new AlreadyExistsError(`a directory is in the way of a non-directory`, { file: path });
  await unlink(path).catch((err) => {
    throw fromSystemError(err, path, 'replace');
  });
}

export async function extractSquashfs(reader: SquashfsReader, dest: string, subpath = '', options: ExtractOptions = {}): Promise<ExtractResult> {
  const owners = options.owners ?? (typeof process.getuid === 'function' && process.getuid() === 0);
  const result: ExtractResult = { files: 0, dirs: 0, symlinks: 0, hardlinks: 0, bytes: 0, skipped: [] };
  const linked = new Map<number, string>();
  const dirsToFinish: Array<{ path: string; inode: Inode }> = [];
  const names = new Map<string, Set<string>>();
  const prefix = subpath.split('/').filter((p) => p !== '' && p !== '.').join('/');
  const rel = (p: string): string => (prefix === '' ? p : p === prefix ? '' : p.slice(prefix.length + 1));

  await mkdir(dest, { recursive: true }).catch((err) => {
    throw fromSystemError(err, dest, 'create the destination');
  });
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
    const meta = async (): Promise<void> => {
      if (owners) await lchown(target, reader.uid(inode), reader.gid(inode)).catch((err) => {
        throw fromSystemError(err, target, 'set ownership');
      });
      if (inode.kind === 'symlink') {
        await lutimes(target, inode.mtime, inode.mtime).catch(() => {});
      } else {
        await chmod(target, inode.mode);
        await utimes(target, inode.mtime, inode.mtime);
      }
    };
    if (inode.xattr !== undefined) result.skipped.push({ path: imagePath, reason: 'xattrs (no xattr API in Node.js)' });
    switch (inode.kind) {
      case 'dir': {
        const st = await lstatOrUndefined(target);
        if (st === undefined) {
          await mkdir(target, { mode: 0o700 }).catch((err) => {
            throw fromSystemError(err, target, 'create the directory');
          });
        } else if (!st.isDirectory()) {
          if (r === '') throw new AlreadyExistsError('the destination is not a directory', { file: target });
          await clearForNonDir(target);
          await mkdir(target, { mode: 0o700 });
        }
        result.dirs++;
        dirsToFinish.push({ path: target, inode });
        break;
      }
      case 'file': {
        await clearForNonDir(target);
        const first = inode.nlink > 1 ? linked.get(inode.inodeNumber) : undefined;
        if (first !== undefined) {
          await link(first, target).catch((err) => {
            throw fromSystemError(err, target, 'create the hard link');
          });
          result.hardlinks++;
          break;
        }
        let fh;
        try {
          fh = await open(target, 'wx', 0o600);
        } catch (err) {
          throw fromSystemError(err, target, 'create the file');
        }
        try {
          let at = 0;
          for await (const piece of reader.stream(inode)) {
            if (!isAllZero(piece)) {
              let done = 0;
              while (done < piece.byteLength) done += (await fh.write(piece, done, piece.byteLength - done, at + done)).bytesWritten;
            }
            at += piece.byteLength;
          }
          await fh.truncate(at);
          result.bytes += at;
        } catch (err) {
          throw fromSystemError(err, target, 'write the file');
        } finally {
          await fh.close();
        }
        await meta();
        if (inode.nlink > 1) linked.set(inode.inodeNumber, target);
        result.files++;
        options.onFile?.(imagePath, inode.fileSize);
        break;
      }
      case 'symlink':
        await clearForNonDir(target);
        await symlink(Buffer.from(inode.target), target).catch((err) => {
          throw fromSystemError(err, target, 'create the symlink');
        });
        await meta();
        result.symlinks++;
        break;
      default:
        result.skipped.push({ path: imagePath, reason: `${inode.kind} (Node.js cannot create special files)` });
    }
  }
  for (const d of dirsToFinish.reverse()) {
    if (owners) await lchown(d.path, reader.uid(d.inode), reader.gid(d.inode));
    await chmod(d.path, d.inode.mode);
    await utimes(d.path, d.inode.mtime, d.inode.mtime);
  }
  return result;
}
