/** EROFS as the common FileSystem (read-only): paths, stats (ino = nid), xattrs, files as Disks. */
import type { Disk } from '../../io/disk.ts';
import { UsageError } from '../../errors.ts';
import type { FileSystem, FsEntry, FsSpace, FsStat, FsXattr } from '../filesystem.ts';
import type { Inode } from './inode.ts';
import type { ErofsReader } from './reader.ts';
import { uuidText, volumeLabel } from './superblock.ts';

export function statOf(i: Inode): FsStat {
  return {
    kind: i.kind, size: i.size, mode: i.mode, uid: i.uid, gid: i.gid, nlink: i.nlink, mtime: i.mtime, ino: i.nid,
    ...(i.rdev !== undefined ? { rdev: i.rdev } : {}),
  };
}

export class ErofsFileSystem implements FileSystem {
  readonly type = 'erofs';
  readonly label: string | undefined;
  readonly uuid: string | undefined;
  readonly readOnly = true;

  constructor(readonly reader: ErofsReader) {
    this.label = volumeLabel(reader.superblock);
    this.uuid = uuidText(reader.superblock);
  }

  async stat(path: string): Promise<FsStat> {
    return statOf(await this.reader.lookup(path));
  }

  async readdir(path: string): Promise<FsEntry[]> {
    return (await this.reader.readdir(path)).map((e) => ({ name: e.name, kind: e.kind }));
  }

  async readlink(path: string): Promise<string> {
    const i = await this.reader.lookup(path);
    if (i.kind !== 'symlink') throw new UsageError(`${path} is not a symbolic link`);
    return this.reader.readlink(i);
  }

  xattrs(path: string): Promise<readonly FsXattr[]> {
    return this.reader.xattrs(path);
  }

  openFile(path: string): Promise<Disk> {
    return this.reader.openFileDisk(path);
  }

  async space(): Promise<FsSpace> {
    return { totalBytes: this.reader.superblock.blocks * this.reader.blockSize, freeBytes: 0 };
  }

  async close(): Promise<void> {}
}
