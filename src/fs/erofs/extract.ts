/**
 * Extracts an EROFS image (or a subtree) into a host directory, with the rules of
 * squashfs/extract.ts: names that are empty, "." or ".." or hold "/" never reach the host (the walk
 * skips "." and "..", a name with "/" or NUL is refused); duplicate names in one directory are
 * refused; every directory on the way is one this run created or is checked with lstat to be a real
 * directory (never a symlink already in DEST); existing non-directories are replaced, never written
 * through (files open with O_EXCL); hard links are made only to files extracted in this run.
 * Devices, fifos and sockets are reported as skipped (Node has no mknod). Xattrs: user.* always,
 * trusted.* and security.* as root, after the owner and before the mode. File data is read in 1 MiB
 * pieces through the reader's caches; all-zero pieces stay holes.
 */
import { chmodSync, closeSync, fchmodSync, fchownSync, ftruncateSync, futimesSync, lchownSync, linkSync, lutimesSync, mkdirSync, openSync, symlinkSync, utimesSync } from 'node:fs';
import { join } from 'node:path';
import { AlreadyExistsError, CorruptImageError } from '../../errors.ts';
import { HostXattrWriter, type XattrNamespace } from '../../io/xattr.ts';
import { clearForNonDir, host, lstatOrUndefined, writePiece } from '../extract-host.ts';
import type { FsXattr } from '../filesystem.ts';
import type { Inode } from './inode.ts';
import type { ErofsReader } from './reader.ts';

export interface ErofsExtractOptions {
  /** Set ownership from the image (default: when running as root). */
  owners?: boolean;
  /** Xattr namespaces to restore (default: user, plus trusted and security as root); false: none. */
  xattrs?: readonly XattrNamespace[] | false;
  onFile?: (path: string, bytes: number) => void;
}

export interface ErofsExtractResult {
  files: number;
  dirs: number;
  symlinks: number;
  hardlinks: number;
  bytes: number;
  skipped: Array<{ path: string; reason: string }>;
}

const PIECE = 1 << 20;

const seconds = (i: Inode): number => i.mtime.sec + i.mtime.nsec / 1e9;

export async function extractErofs(reader: ErofsReader, dest: string, subpath = '', options: ErofsExtractOptions = {}): Promise<ErofsExtractResult> {
  const owners = options.owners ?? (typeof process.getuid === 'function' && process.getuid() === 0);
  const result: ErofsExtractResult = { files: 0, dirs: 0, symlinks: 0, hardlinks: 0, bytes: 0, skipped: [] };
  const xw = options.xattrs !== false ? new HostXattrWriter(options.xattrs === undefined ? {} : { namespaces: options.xattrs }) : undefined;
  const xattrsOf = async (i: Inode): Promise<readonly FsXattr[] | undefined> => (xw !== undefined && i.xattrSize > 0 ? reader.xattrs(i) : undefined);
  const linked = new Map<number, string>();
  const names = new Map<string, Set<string>>();
  const fresh = new Set<string>();
  const dirsToFinish: Array<{ path: string; inode: Inode }> = [];
  const prefix = subpath.split('/').filter((p) => p !== '' && p !== '.').join('/');
  const rel = (p: string): string => (prefix === '' ? p : p === prefix ? '' : p.slice(prefix.length + 1));
  const buf = new Uint8Array(PIECE);

  if (host(dest, 'create the destination', () => mkdirSync(dest, { recursive: true })) !== undefined) fresh.add('');
  for await (const { path: imagePath, inode } of reader.walk(prefix)) {
    const r = rel(imagePath);
    const target = r === '' ? dest : join(dest, ...r.split('/'));
    let inFresh = false;
    if (r !== '') {
      const cut = r.lastIndexOf('/');
      const parent = cut < 0 ? '' : r.slice(0, cut);
      const name = r.slice(cut + 1);
      if (name === '' || name === '.' || name === '..' || name.includes('\0')) throw new CorruptImageError('erofs', 'dirent.name', `unsafe name in /${imagePath}`);
      inFresh = fresh.has(parent);
      let set = names.get(parent);
      if (set === undefined) names.set(parent, (set = new Set()));
      if (set.has(name)) throw new CorruptImageError('erofs', 'directory', `duplicate name /${imagePath}`);
      set.add(name);
    }
    switch (inode.kind) {
      case 'dir': {
        const st = inFresh ? undefined : lstatOrUndefined(target);
        if (st === undefined || !st.isDirectory()) {
          if (st !== undefined) {
            if (r === '') throw new AlreadyExistsError('the destination is not a directory', { file: target });
            clearForNonDir(target);
          }
          host(target, 'create the directory', () => mkdirSync(target, { mode: 0o700 }));
          if (r !== '') fresh.add(r);
        }
        result.dirs++;
        dirsToFinish.push({ path: target, inode });
        break;
      }
      case 'file': {
        if (!inFresh) clearForNonDir(target);
        const first = inode.nlink > 1 ? linked.get(inode.nid) : undefined;
        if (first !== undefined) {
          host(target, 'create the hard link', () => linkSync(first, target));
          result.hardlinks++;
          break;
        }
        const xattrs = await xattrsOf(inode);
        const fd = host(target, 'create the file', () => openSync(target, 'wx', 0o600));
        try {
          let end = 0;
          for (let at = 0; at < inode.size; at += PIECE) {
            const piece = buf.subarray(0, Math.min(PIECE, inode.size - at));
            await reader.readRange(inode, piece, at);
            if (writePiece(target, fd, piece, at)) end = at + piece.byteLength;
          }
          if (end !== inode.size) host(target, 'write the file', () => ftruncateSync(fd, inode.size));
          if (owners) host(target, 'set ownership', () => fchownSync(fd, inode.uid, inode.gid));
          if (xattrs !== undefined) xw?.write(target, xattrs);
          host(target, 'set mode and times', () => {
            fchmodSync(fd, inode.mode);
            futimesSync(fd, seconds(inode), seconds(inode));
          });
        } finally {
          closeSync(fd);
        }
        if (inode.nlink > 1) linked.set(inode.nid, target);
        result.files++;
        result.bytes += inode.size;
        options.onFile?.(imagePath, inode.size);
        break;
      }
      case 'symlink': {
        if (!inFresh) clearForNonDir(target);
        const link = await reader.readlink(inode);
        host(target, 'create the symlink', () => symlinkSync(link, target));
        if (owners) host(target, 'set ownership', () => lchownSync(target, inode.uid, inode.gid));
        const xattrs = await xattrsOf(inode);
        if (xattrs !== undefined) xw?.write(target, xattrs);
        try {
          lutimesSync(target, seconds(inode), seconds(inode));
        } catch {
          // not every host can set a symlink's times
        }
        result.symlinks++;
        break;
      }
      default:
        result.skipped.push({ path: imagePath, reason: `${inode.kind} (Node.js cannot create special files)` });
    }
  }
  for (const d of dirsToFinish.reverse()) {
    const xattrs = await xattrsOf(d.inode);
    host(d.path, 'set mode and times', () => {
      if (owners) lchownSync(d.path, d.inode.uid, d.inode.gid);
      if (xattrs !== undefined) xw?.write(d.path, xattrs);
      chmodSync(d.path, d.inode.mode);
      utimesSync(d.path, seconds(d.inode), seconds(d.inode));
    });
  }
  return result;
}
