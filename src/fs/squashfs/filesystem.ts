/** SquashFS as the common FileSystem (read-only): paths, stats, and files as Disks. */
import type { Disk } from '../../io/disk.ts';
import type { FileSystem, FsEntry, FsSpace, FsStat, FsXattr, NodeKind } from '../filesystem.ts';
import { decodeDev, type Inode } from './inode.ts';
import type { SquashfsReader } from './reader.ts';

function statOf(i: Inode, reader: SquashfsReader): FsStat {
  const size = i.kind === 'file' ? i.fileSize : i.kind === 'symlink' ? i.target.byteLength : i.kind === 'dir' ? i.fileSize : 0;
  const ids = reader.ids;
  return { kind: i.kind as NodeKind, size, mode: i.mode & 0o7777, uid: ids[i.uidIndex] ?? 0, gid: ids[i.gidIndex] ?? 0, nlink: i.nlink, mtime: { sec: i.mtime, nsec: 0 }, ino: i.inodeNumber, ...(i.kind === 'chardev' || i.kind === 'blockdev' ? { rdev: decodeDev(i.rdev) } : {}) };
}

export class SquashfsFileSystem implements FileSystem {
  readonly type = 'squashfs';
  readonly label = undefined;
  readonly uuid = undefined;
  readonly readOnly = true;
  constructor(
    readonly reader: SquashfsReader,
    readonly imageBytes: number,
  ) {}
  async stat(path: string): Promise<FsStat> {
    return statOf(await this.reader.lookup(path), this.reader);
  }
  async readdir(path: string): Promise<FsEntry[]> {
    return (await this.reader.readdir(path)).map((e) => ({ name: e.name, kind: e.inode.kind as NodeKind }));
  }
  async readlink(path: string): Promise<string> {
    const i = await this.reader.lookup(path);
    if (i.kind !== 'symlink') throw new (await import('../../errors.ts')).UsageError(`${path} is not a symbolic link`);
    return new TextDecoder().decode(i.target);
  }
  async xattrs(path: string): Promise<readonly FsXattr[]> {
    return this.reader.xattrs(await this.reader.lookup(path));
  }
  openFile(path: string): Promise<Disk> {
    return this.reader.openFileDisk(path);
  }
  async space(): Promise<FsSpace> {
    return { totalBytes: this.imageBytes, freeBytes: 0 };
  }
  async close(): Promise<void> {}
}
