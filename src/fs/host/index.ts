/** A host directory (a mounted stick, or a copy) as the common FileSystem, read side. */
import { lstat, readdir, readlink, statfs } from 'node:fs/promises';
import { join, sep } from 'node:path';
import { fromSystemError } from '../../errors.ts';
import { FileDisk, type Disk } from '../../io/disk.ts';
import type { FileSystem, FsEntry, FsSpace, FsStat, NodeKind } from '../filesystem.ts';

function kindOf(st: { isDirectory(): boolean; isSymbolicLink(): boolean; isFile(): boolean; isBlockDevice(): boolean; isCharacterDevice(): boolean; isFIFO(): boolean }): NodeKind {
  if (st.isDirectory()) return 'dir';
  if (st.isSymbolicLink()) return 'symlink';
  if (st.isFile()) return 'file';
  if (st.isBlockDevice()) return 'blockdev';
  if (st.isCharacterDevice()) return 'chardev';
  return st.isFIFO() ? 'fifo' : 'socket';
}

export class HostFileSystem implements FileSystem {
  readonly type = 'host';
  readonly label = undefined;
  readonly uuid = undefined;
  readonly readOnly = true;
  constructor(readonly root: string) {}

  /** The host path of a filesystem path (no '..' escapes the root). */
  hostPath(path: string): string {
    const parts = path.split('/').filter((p) => p !== '' && p !== '.');
    if (parts.includes('..')) throw fromSystemError(Object.assign(new Error('".." is not allowed'), { code: 'EINVAL' }), path, 'resolve the path');
    return parts.length === 0 ? this.root : join(this.root, ...parts).split('/').join(sep);
  }
  async stat(path: string): Promise<FsStat> {
    const p = this.hostPath(path);
    try {
      const st = await lstat(p);
      const t = (ms: number) => ({ sec: Math.floor(ms / 1000), nsec: Math.round((ms % 1000) * 1e6) });
      return { kind: kindOf(st), size: st.size, mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, nlink: st.nlink, mtime: t(st.mtimeMs), atime: t(st.atimeMs), ctime: t(st.ctimeMs) };
    } catch (err) {
      throw fromSystemError(err, p, 'stat');
    }
  }
  async readdir(path: string): Promise<FsEntry[]> {
    const p = this.hostPath(path);
    try {
      return (await readdir(p, { withFileTypes: true })).map((d) => ({ name: d.name, kind: kindOf(d) }));
    } catch (err) {
      throw fromSystemError(err, p, 'list the directory');
    }
  }
  async readlink(path: string): Promise<string> {
    const p = this.hostPath(path);
    try {
      return await readlink(p);
    } catch (err) {
      throw fromSystemError(err, p, 'read the link');
    }
  }
  openFile(path: string): Promise<Disk> {
    return FileDisk.open(this.hostPath(path), { readOnly: true });
  }
  async space(): Promise<FsSpace> {
    try {
      const s = await statfs(this.root);
      return { totalBytes: s.blocks * s.bsize, freeBytes: s.bavail * s.bsize };
    } catch {
      return { totalBytes: 0, freeBytes: 0 };
    }
  }
  async close(): Promise<void> {}
}
