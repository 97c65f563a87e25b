/** ext2/3/4 as the common FileSystem (read side): paths, stats, and files as read-only Disks over their extents. */
import { UsageError } from '../../errors.ts';
import { checkRange, type Disk } from '../../io/disk.ts';
import type { FileSystem, FsEntry, FsSpace, FsStat, FsXattr, NodeKind } from '../filesystem.ts';
import type { Ext4, Run } from './fs.ts';
import { formatUuid } from './superblock.ts';

const kindOf = (k: string): NodeKind => (k === 'unknown' ? 'file' : (k as NodeKind));

/** A file inside ext4 as a read-only Disk: each read maps onto the file's extents (holes read as zeros). */
class Ext4FileDisk implements Disk {
  readonly readOnly = true;
  constructor(
    readonly fs: Ext4,
    readonly runs: readonly Run[],
    readonly size: number,
  ) {}
  async read(buf: Uint8Array, offset: number): Promise<void> {
    checkRange(this, offset, buf.byteLength, 'read');
    buf.fill(0);
    const bs = this.fs.blockSize;
    const end = offset + buf.byteLength;
    for (const r of this.runs) {
      const rStart = r.logical * bs;
      const rEnd = rStart + r.length * bs;
      if (rEnd <= offset || rStart >= end || r.unwritten) continue;
      const from = Math.max(offset, rStart);
      const to = Math.min(end, rEnd);
      const firstBlock = Math.floor((from - rStart) / bs);
      const lastBlock = Math.ceil((to - rStart) / bs);
      const data = await this.fs.readBlocks(r.physical + firstBlock, lastBlock - firstBlock);
      const skip = from - (rStart + firstBlock * bs);
      buf.set(data.subarray(skip, skip + (to - from)), from - offset);
    }
  }
  async write(): Promise<void> {
    throw new UsageError('a file inside ext4 is opened read-only here');
  }
  async flush(): Promise<void> {}
  async close(): Promise<void> {}
}

export class Ext4FileSystem implements FileSystem {
  readonly readOnly = true;
  constructor(readonly fs: Ext4) {}

  get type(): string {
    const sb = this.fs.sb;
    const extents = (sb.featureIncompat & 0x40) !== 0;
    const journal = (sb.featureCompat & 0x4) !== 0;
    return extents ? 'ext4' : journal ? 'ext3' : 'ext2';
  }
  get label(): string | undefined {
    return this.fs.sb.volumeName || undefined;
  }
  get uuid(): string | undefined {
    return formatUuid(this.fs.sb.uuid);
  }
  async stat(path: string): Promise<FsStat> {
    const s = await this.fs.statInode(await this.fs.lookup(path, { follow: false }));
    return { kind: kindOf(s.kind), size: s.size, allocatedBytes: s.blocks512 * 512, mode: s.mode & 0o7777, uid: s.uid, gid: s.gid, nlink: s.nlink, mtime: s.mtime, atime: s.atime, ctime: s.ctime, ino: s.ino, ...(s.rdev === undefined ? {} : { rdev: s.rdev }) };
  }
  async xattrs(path: string): Promise<readonly FsXattr[]> {
    return this.fs.xattrs(await this.fs.readInode(await this.fs.lookup(path, { follow: false })));
  }
  async readdir(path: string): Promise<FsEntry[]> {
    const out: FsEntry[] = [];
    for (const e of await this.fs.readdir(path)) {
      if (e.name === '.' || e.name === '..') continue;
      out.push({ name: e.name, kind: kindOf((await this.fs.statInode(e.ino)).kind) });
    }
    return out;
  }
  readlink(path: string): Promise<string> {
    return this.fs.readlink(path);
  }
  async openFile(path: string): Promise<Disk> {
    const inode = await this.fs.readInode(await this.fs.lookup(path));
    return new Ext4FileDisk(this.fs, await this.fs.runs(inode), this.fs.sizeOf(inode));
  }
  async space(): Promise<FsSpace> {
    const sb = this.fs.sb;
    return { totalBytes: sb.blocksCount * sb.blockSize, freeBytes: sb.freeBlocksCount * sb.blockSize };
  }
  async close(): Promise<void> {}
}
