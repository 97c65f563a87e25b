/**
 * A host directory (a mounted stick, or a copy) as the common FileSystem; writable when opened so.
 * Every change goes through io/host.ts (or FileDisk), so each passes a fault point; `flush` fsyncs
 * the directories changed since the last flush (a file's own data is flushed through its Disk).
 * Extended attributes are set and removed on the node itself (lsetxattr: a symlink's own) through
 * io/xattr.ts, one fault point each; like `setMode`, they count as changes to the parent directory
 * for `flush`.
 */
import { lstat, mkdir, readdir, readlink, rmdir } from 'node:fs/promises';
import { dirname, join, sep } from 'node:path';
import { fromSystemError } from '../../errors.ts';
import { FileDisk, type Disk } from '../../io/disk.ts';
import { SimulatedCrash, faultPoint } from '../../io/faults.ts';
import { chmod, chown, fsyncDir, hostSpace, link, removeFile, rename } from '../../io/host.ts';
import { readHostXattrs, removeHostXattr, setHostXattr } from '../../io/xattr.ts';
import type { CreateFileOptions, FsEntry, FsSpace, FsStat, FsXattr, NodeKind, WritableFile, WritableFileSystem } from '../filesystem.ts';

function kindOf(st: { isDirectory(): boolean; isSymbolicLink(): boolean; isFile(): boolean; isBlockDevice(): boolean; isCharacterDevice(): boolean; isFIFO(): boolean }): NodeKind {
  if (st.isDirectory()) return 'dir';
  if (st.isSymbolicLink()) return 'symlink';
  if (st.isFile()) return 'file';
  if (st.isBlockDevice()) return 'blockdev';
  if (st.isCharacterDevice()) return 'chardev';
  return st.isFIFO() ? 'fifo' : 'socket';
}

/** glibc's dev_t split (major: bits 8-19 and 32-43; minor: bits 0-7 and 20-31); macOS packs major<<24 | minor. */
function decodeHostDev(rdev: number): { major: number; minor: number } {
  if (process.platform === 'darwin') return { major: Math.floor(rdev / 2 ** 24) & 0xff, minor: rdev & 0xffffff };
  const lo = rdev % 2 ** 32;
  const hi = Math.floor(rdev / 2 ** 32);
  return { major: ((lo >>> 8) & 0xfff) | ((hi & 0xfffff000) >>> 0), minor: (lo & 0xff) | ((lo >>> 12) & 0xfff00) };
}

export class HostFileSystem implements WritableFileSystem {
  readonly type = 'host';
  readonly label = undefined;
  readonly uuid = undefined;
  readonly readOnly: boolean;
  readonly renameIsAtomic = true;
  readonly #changedDirs = new Set<string>();
  constructor(
    readonly root: string,
    options: { writable?: boolean } = {},
  ) {
    this.readOnly = !options.writable;
  }

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
      const kind = kindOf(st);
      const device = kind === 'chardev' || kind === 'blockdev' ? { rdev: decodeHostDev(st.rdev) } : {};
      return { kind, size: st.size, allocatedBytes: st.blocks * 512, mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, nlink: st.nlink, mtime: t(st.mtimeMs), atime: t(st.atimeMs), ctime: t(st.ctimeMs), ino: st.ino, ...device };
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
  async xattrs(path: string): Promise<readonly FsXattr[]> {
    return readHostXattrs(this.hostPath(path));
  }
  openFile(path: string): Promise<Disk> {
    return FileDisk.open(this.hostPath(path), { readOnly: true });
  }
  /** Space for this user (bavail); a host that cannot tell reports no limit. */
  async space(): Promise<FsSpace> {
    const s = await hostSpace(this.root);
    return { totalBytes: s.totalBytes ?? 0, freeBytes: s.freeBytes ?? Number.POSITIVE_INFINITY };
  }
  async close(): Promise<void> {}

  #writable(path: string): string {
    if (this.readOnly) throw fromSystemError(Object.assign(new Error('opened read-only'), { code: 'EROFS' }), this.root, 'change the medium');
    const p = this.hostPath(path);
    this.#changedDirs.add(dirname(p));
    return p;
  }
  async mkdir(path: string, options: { mode?: number } = {}): Promise<void> {
    const p = this.#writable(path);
    try {
      faultPoint('create', p);
      await mkdir(p, { mode: options.mode ?? 0o755 });
    } catch (err) {
      if (err instanceof SimulatedCrash) throw err;
      throw fromSystemError(err, p, 'create the directory');
    }
  }
  async createFile(path: string, options: CreateFileOptions): Promise<WritableFile> {
    const p = this.#writable(path);
    const disk = await FileDisk.open(p, { create: { size: options.size } });
    if (options.mode !== undefined) await chmod(p, options.mode);
    return disk;
  }
  async openFileForWriting(path: string): Promise<WritableFile> {
    return FileDisk.open(this.#writable(path), { readOnly: false });
  }
  async writeFile(path: string, data: Uint8Array, options: { mode?: number } = {}): Promise<void> {
    const p = this.#writable(path);
    await removeFile(p);
    const disk = await FileDisk.open(p, { create: { size: data.byteLength } });
    try {
      if (data.byteLength > 0) await disk.write(data, 0);
      await disk.flush();
    } finally {
      await disk.close();
    }
    if (options.mode !== undefined) await chmod(p, options.mode);
  }
  async rename(from: string, to: string): Promise<void> {
    const f = this.#writable(from);
    const t = this.#writable(to);
    await rename(f, t);
    this.#movePending(f, t);
  }
  /** Directories still to be synced that were renamed or removed keep their sync under their new name, or lose it. */
  #movePending(from: string, to: string | undefined): void {
    for (const dir of [...this.#changedDirs]) {
      if (dir !== from && !dir.startsWith(`${from}/`)) continue;
      this.#changedDirs.delete(dir);
      if (to !== undefined) this.#changedDirs.add(to + dir.slice(from.length));
    }
  }
  async unlink(path: string): Promise<void> {
    const p = this.#writable(path);
    if (!(await removeFile(p))) throw fromSystemError(Object.assign(new Error('no such file'), { code: 'ENOENT' }), p, 'remove the file');
  }
  async rmdir(path: string): Promise<void> {
    const p = this.#writable(path);
    try {
      faultPoint('unlink', p);
      await rmdir(p);
    } catch (err) {
      if (err instanceof SimulatedCrash) throw err;
      throw fromSystemError(err, p, 'remove the directory');
    }
    this.#movePending(p, undefined);
  }
  async link(existing: string, path: string): Promise<void> {
    await link(this.#writable(existing), this.#writable(path));
  }
  async setMode(path: string, mode: number): Promise<void> {
    await chmod(this.#writable(path), mode);
  }
  async setOwner(path: string, uid: number, gid: number): Promise<void> {
    await chown(this.#writable(path), uid, gid);
  }
  async setXattr(path: string, name: string, value: Uint8Array): Promise<void> {
    setHostXattr(this.#writable(path), name, value);
  }
  async removeXattr(path: string, name: string): Promise<void> {
    removeHostXattr(this.#writable(path), name);
  }
  async flush(): Promise<void> {
    for (const dir of [...this.#changedDirs]) {
      await fsyncDir(dir);
      this.#changedDirs.delete(dir);
    }
  }
}
