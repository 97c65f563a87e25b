/**
 * ext4 as a WritableFileSystem: every change one jbd2 transaction, committed before the call
 * returns, so a crash at any write leaves the old or the new state (after journal replay by the
 * kernel, e2fsck or `replayJournal`).
 *
 * Design notes
 * - The stack: lower Disk → JournaledDisk (jbd2/journaled-disk.ts) → Ext4 → Ext4Writer. One writer
 *   lives as long as the filesystem is open and keeps the allocation state in memory; it defers
 *   frees to the end of a transaction, so a change never writes over a block the committed state
 *   still uses, and it tells the JournaledDisk which blocks the change allocated (those are written in
 *   place; every other metadata block is logged). A change is: writer operations, the writer's
 *   primary-only flush (changed bitmaps, their descriptor blocks, the primary superblock), commit.
 *   Any failure inside a change drops what was collected and reloads the writer from the disk (a
 *   failure after the commit record replays the journal first); a failure the reload cannot repair
 *   makes every later call throw it.
 * - File data never goes through the journal (data=ordered): a WritableFile writes its blocks on the
 *   lower Disk directly, and each commit flushes the lower Disk before it logs anything. Every
 *   transaction first brings the inodes of open files up to date (size, unwritten extents that were
 *   written since), so a metadata change never commits ahead of data written before it — a rename of
 *   a freshly written file names complete content.
 * - `createFile` allocates the whole size at once, one free run where there is one (BlockAllocator
 *   .allocRuns); without `uninitialized` the extents are unwritten and read as zeros, and a block is
 *   noted as written (and converted at the next transaction) on its first write, which fills the rest
 *   of a partial block with zeros. With `uninitialized` they are plain extents over whatever the
 *   blocks held (nothing is cleared, and preallocation becomes plain extents as the size covers it).
 * - `resize` growing past the file's blocks is one transaction that allocates right after the last
 *   block where free; while growth comes in steps smaller than the file's preallocation step (16 MiB,
 *   growing to a quarter of the file, at most 256 MiB) it takes a whole step, as unwritten extents
 *   past i_size, so the SquashFS writer's 4 MiB steps cost one transaction per step, not one per call.
 *   Growth inside those blocks only changes the in-memory size: the next transaction (any change, the
 *   file's or the filesystem's flush, close) commits it. An extent index block, once there, is
 *   rewritten in place (journaled), so it does not land in the file's way at each step. Shrinking is one transaction that frees the
 *   blocks past the end (preallocation included); the last handle's close frees the preallocation.
 *   Bytes between an old unaligned end and the new end are zeroed on growth, never on shrink (a
 *   crash before the shrink commits keeps them); not for `uninitialized` files.
 * - `rename` is one transaction: the target entry is pointed at the source inode (or a new entry
 *   made), the source entry removed, the replaced inode's link count dropped (freed at zero).
 *   Replacing or unlinking a file that is open for writing here is refused (EBUSY).
 * - `setXattr`/`removeXattr` are one transaction each on the node itself (a symlink's own): the
 *   writer rewrites the inode's whole attribute set, in the inode's extra space when all of it fits,
 *   else all of it in one fresh EA block (allocated in the transaction, so written in place; the old
 *   block's free deferred past the commit, or its refcount dropped when shared). Only user.*,
 *   trusted.* and security.* names, user.* only on files and directories (the kernel's rule: it
 *   neither sets nor reads them elsewhere); a set that does not fit one block (no ea_inode) fails
 *   with nothing changed.
 * - Opening: a journal that needs recovery is replayed first (as a mount would); pending orphans or
 *   recorded errors are refused (UnsupportedFeatureError: mount it once or run e2fsck). Without a
 *   journal the same changes go through OrderedDisk (ordered-disk.ts), the superblock is marked not
 *   clean from the first change to close, and rename makes the new name durable before removing the
 *   old one: `renameIsAtomic` is false (a crash can leave both names for the new content; repeating
 *   the rename then removes the source name — so there, unlike POSIX, renaming one hard link onto
 *   another of the same file removes the source name).
 * - Everything is serialized through one lock (file reads and writes included), so a transaction
 *   never sees a file's state half changed. Memory: the writer's allocation bitmap, each open file's
 *   extent list and its written-block ranges; data is never buffered.
 * - Limits: what Ext4Writer refuses (no extents feature, i.e. ext2/ext3; quota, bigalloc, encrypt,
 *   casefold, verity and other features it does not keep; checksum errors) and fast-commit or
 *   v1-checksum journals are refused at open; inline-data directories and the attributes of
 *   inline-data inodes cannot change, and inline-data or block-mapped files cannot be opened for
 *   writing; an htree directory that changes is rewritten linear (Ext4Writer); a change whose
 *   metadata outgrows the journal fails with nothing changed.
 */
import { AlreadyExistsError, NotFoundError, PermissionError, ReadOnlyError, UnsupportedFeatureError, UsageError } from '../../errors.ts';
import { checkRange, type Disk } from '../../io/disk.ts';
import type { CreateFileOptions, FsEntry, FsSpace, FsStat, FsXattr, WritableFile, WritableFileSystem } from '../filesystem.ts';
import { NoSpaceError } from './errors.ts';
import { Ext4FileSystem } from './filesystem.ts';
import { Ext4 } from './fs.ts';
import { InodeFlags, kindOfMode, type Timestamp } from './inode.ts';
import { JournaledDisk, type CommitStep } from './jbd2/journaled-disk.ts';
import { Journal, replayJournal } from './jbd2/journal.ts';
import { OrderedDisk } from './ordered-disk.ts';
import { RoCompat, formatUuid } from './superblock.ts';
import { Ext4Writer } from './writer.ts';
import { checkXattrName } from './xattr.ts';

export interface Ext4WritableOptions {
  /** Fixed timestamps (tests). */
  readonly now?: () => Timestamp;
  /** Called at each journal commit step (tests). */
  readonly onCommitStep?: (step: CommitStep) => void | Promise<void>;
  /** Smallest preallocation step for growing files, bytes (default 16 MiB). */
  readonly preallocStep?: number;
}

const MAX_PREALLOC = 256 << 20;

interface Extent {
  logical: number;
  physical: number;
  length: number;
  unwritten: boolean;
}

/** Sorted, disjoint, merged [start, end) ranges of blocks. */
class RangeSet {
  ranges: [number, number][] = [];

  get empty(): boolean {
    return this.ranges.length === 0;
  }

  /** Index of the first range whose end is > b. */
  #after(b: number): number {
    let lo = 0;
    let hi = this.ranges.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.ranges[mid]![1] > b) hi = mid;
      else lo = mid + 1;
    }
    return lo;
  }

  add(s: number, e: number): void {
    if (e <= s) return;
    const last = this.ranges[this.ranges.length - 1];
    if (!last || last[1] < s) {
      this.ranges.push([s, e]);
      return;
    }
    let i = this.#after(s - 1);
    if (i > 0 && this.ranges[i - 1]![1] === s) i--;
    let j = i;
    let ns = s;
    let ne = e;
    while (j < this.ranges.length && this.ranges[j]![0] <= e) {
      ns = Math.min(ns, this.ranges[j]![0]);
      ne = Math.max(ne, this.ranges[j]![1]);
      j++;
    }
    this.ranges.splice(i, j - i, [ns, ne]);
  }

  /** The parts of [s, e) inside the set and outside it, in order. */
  split(s: number, e: number): { start: number; end: number; inside: boolean }[] {
    const out: { start: number; end: number; inside: boolean }[] = [];
    let at = s;
    for (let i = this.#after(s); i < this.ranges.length && at < e; i++) {
      const [rs, re] = this.ranges[i]!;
      if (rs >= e) break;
      if (rs > at) out.push({ start: at, end: rs, inside: false });
      const from = Math.max(at, rs);
      const to = Math.min(e, re);
      out.push({ start: from, end: to, inside: true });
      at = to;
    }
    if (at < e) out.push({ start: at, end: e, inside: false });
    return out;
  }

  /** Drops everything at or after block b. */
  truncate(b: number): void {
    const i = this.#after(b);
    if (i >= this.ranges.length) return;
    const r = this.ranges[i]!;
    if (r[0] >= b) this.ranges.length = i;
    else {
      r[1] = b;
      this.ranges.length = i + 1;
    }
  }

  clear(): void {
    this.ranges = [];
  }
}

/** Merges touching extents of one kind. */
function normalize(extents: readonly Extent[]): Extent[] {
  const out: Extent[] = [];
  for (const e of [...extents].sort((a, b) => a.logical - b.logical)) {
    if (e.length <= 0) continue;
    const last = out[out.length - 1];
    if (last && last.unwritten === e.unwritten && last.logical + last.length === e.logical && last.physical + last.length === e.physical) last.length += e.length;
    else out.push({ ...e });
  }
  return out;
}

function mappedEnd(extents: readonly Extent[]): number {
  const last = extents[extents.length - 1];
  return last ? last.logical + last.length : 0;
}

/** Index of the extent holding logical block b, else of the first one after it (extents.length if none). */
function extentAt(extents: readonly Extent[], b: number): number {
  let lo = 0;
  let hi = extents.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    const e = extents[mid]!;
    if (e.logical + e.length > b) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

/** Extents below logical block `end`, and the physical runs at or after it. */
function cutExtents(extents: readonly Extent[], end: number): { kept: Extent[]; released: [number, number][] } {
  const kept: Extent[] = [];
  const released: [number, number][] = [];
  for (const e of extents) {
    if (e.logical + e.length <= end) kept.push({ ...e });
    else if (e.logical >= end) released.push([e.physical, e.length]);
    else {
      const keep = end - e.logical;
      kept.push({ ...e, length: keep });
      released.push([e.physical + keep, e.length - keep]);
    }
  }
  return { kept, released };
}

/** Unwritten parts inside `written` become written extents. */
function convertExtents(extents: readonly Extent[], written: RangeSet): Extent[] {
  const out: Extent[] = [];
  for (const e of extents) {
    if (!e.unwritten) {
      out.push({ ...e });
      continue;
    }
    for (const part of written.split(e.logical, e.logical + e.length)) {
      out.push({ logical: part.start, physical: e.physical + (part.start - e.logical), length: part.end - part.start, unwritten: !part.inside });
    }
  }
  return normalize(out);
}

/** An open regular file: its committed block map and what changed since. */
class FileState {
  readonly ino: number;
  extents: Extent[];
  committedSize: number;
  size: number;
  /** Blocks of unwritten extents written since the last commit. */
  readonly written = new RangeSet();
  /** Data or size changed since the last commit (mtime and size to write). */
  touched = false;
  readonly uninitialized: boolean;
  /**
   * Blocks past the end that were there when the file was opened (another writer's fallocate);
   * close keeps those and frees only our own preallocation. A shrink frees them too.
   */
  keepBlocks: number;
  handles = 0;

  constructor(ino: number, extents: Extent[], size: number, uninitialized: boolean, blockSize: number) {
    this.ino = ino;
    this.extents = extents;
    this.committedSize = size;
    this.size = size;
    this.uninitialized = uninitialized;
    const end = mappedEnd(extents);
    this.keepBlocks = end > Math.ceil(size / blockSize) ? end : 0;
  }

  get dirty(): boolean {
    return this.touched || this.size !== this.committedSize || !this.written.empty;
  }
}

export class Ext4WritableFileSystem implements WritableFileSystem {
  readonly readOnly = false;
  readonly renameIsAtomic: boolean;
  /** Whether changes go through the journal (else OrderedDisk: damage-limited, not atomic). */
  readonly journaled: boolean;
  readonly #lower: Disk;
  readonly #options: Ext4WritableOptions;
  readonly #bs: number;
  readonly #preallocStep: number;
  #txn!: JournaledDisk | OrderedDisk;
  #fs!: Ext4;
  #writer!: Ext4Writer;
  #reader!: Ext4FileSystem;
  readonly #files = new Map<number, FileState>();
  readonly #handles = new Set<Ext4WritableFile>();
  #lock: Promise<unknown> = Promise.resolve();
  #closed = false;
  #broken: unknown;
  /** s_state as found (no journal: restored at close). */
  #cleanState = 0;
  #markedDirty = false;

  private constructor(lower: Disk, journaled: boolean, options: Ext4WritableOptions, blockSize: number) {
    this.#lower = lower;
    this.journaled = journaled;
    this.renameIsAtomic = journaled;
    this.#options = options;
    this.#bs = blockSize;
    this.#preallocStep = Math.max(blockSize, options.preallocStep ?? 16 << 20);
  }

  /**
   * Opens the ext4 filesystem on `disk` for writing. A journal that needs recovery is replayed
   * first; filesystems the writer cannot keep consistent are refused (UnsupportedFeatureError).
   */
  static async open(disk: Disk, options: Ext4WritableOptions = {}): Promise<Ext4WritableFileSystem> {
    if (disk.readOnly) throw new ReadOnlyError('ext4: the disk is open read-only');
    let fs = await Ext4.open(disk);
    if ((await fs.state()).needsRecovery) {
      await replayJournal(fs, disk);
      fs = await Ext4.open(disk);
    }
    const sb = fs.sb;
    if (sb.lastOrphan !== 0 || sb.featureRoCompat & RoCompat.orphanPresent) {
      throw new UnsupportedFeatureError('ext4', 'writing', 'inodes are waiting on the orphan list: mount it once (or run e2fsck) first');
    }
    if (sb.state & 2) throw new UnsupportedFeatureError('ext4', 'writing', 'the filesystem has recorded errors: run e2fsck first');
    const journaled = (await Journal.locate(fs)) !== undefined;
    const self = new Ext4WritableFileSystem(disk, journaled, options, fs.blockSize);
    self.#cleanState = sb.state;
    await self.#load();
    return self;
  }

  /** (Re)builds the stack from what is on the lower disk. */
  async #load(): Promise<void> {
    const base = await Ext4.open(this.#lower);
    const isFree = (b: number): boolean => this.#writer.allocatedInTransaction(b);
    if (this.journaled) {
      this.#txn = await JournaledDisk.open(this.#lower, base, {
        isFreeAtStart: isFree,
        onStep: this.#options.onCommitStep,
        onOverflow: async (reason) => {
          throw new UnsupportedFeatureError('ext4', 'journaled change', `the change does not fit one transaction (${reason}); nothing was changed`);
        },
      });
    } else {
      this.#txn = new OrderedDisk(this.#lower, base, isFree);
    }
    this.#fs = await Ext4.open(this.#txn);
    this.#writer = await Ext4Writer.open(this.#fs, { now: this.#options.now, deferFrees: true });
    this.#reader = new Ext4FileSystem(this.#fs);
  }

  get type(): string {
    return 'ext4';
  }
  get label(): string | undefined {
    return this.#fs.sb.volumeName || undefined;
  }
  get uuid(): string | undefined {
    return formatUuid(this.#fs.sb.uuid);
  }

  // ---- serialization and transactions --------------------------------------------------------

  #exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#lock.then(() => {
      if (this.#closed) throw new UsageError('ext4: the filesystem is closed');
      if (this.#broken !== undefined) throw this.#broken;
      return fn();
    });
    this.#lock = run.catch(() => {});
    return run;
  }

  /**
   * One change as one transaction (lock held): open files' pending state, `fn`, the writer's
   * flush, the commit. `skip` is a file whose layout `fn` writes itself.
   */
  async #change<T>(fn: (w: Ext4Writer) => Promise<T>, skip?: FileState): Promise<T> {
    const synced: [FileState, Extent[], number][] = [];
    let result: T;
    try {
      await this.#markDirty();
      this.#writer.beginTransaction();
      for (const f of this.#files.values()) {
        if (f === skip || !f.dirty) continue;
        const extents = this.#pendingExtents(f);
        await this.#writer.setFileLayout(f.ino, { extents, size: f.size }, { reuseTree: this.journaled });
        synced.push([f, extents, f.size]);
      }
      result = await fn(this.#writer);
      await this.#commit();
    } catch (err) {
      await this.#recover(err);
      throw err;
    }
    for (const [f, extents, size] of synced) this.#committed(f, extents, size);
    return result;
  }

  async #commit(): Promise<void> {
    await this.#writer.flush({ primaryOnly: true });
    await this.#txn.commit();
    this.#writer.beginTransaction();
  }

  /** The file's extents with what was written since the last commit converted. */
  #pendingExtents(f: FileState): Extent[] {
    if (f.uninitialized) {
      const below = new RangeSet();
      below.add(0, Math.ceil(f.size / this.#bs));
      return convertExtents(f.extents, below);
    }
    return convertExtents(f.extents, f.written);
  }

  #committed(f: FileState, extents: Extent[], size: number): void {
    f.extents = extents;
    f.committedSize = size;
    if (f.size === size) f.touched = false;
    if (!f.uninitialized) f.written.clear();
  }

  /** After a failed change: drop what it collected and reload the committed state. */
  async #recover(err: unknown): Promise<void> {
    try {
      await this.#txn.close();
      const fs = await Ext4.open(this.#lower);
      if ((await fs.state()).needsRecovery) await replayJournal(fs, this.#lower);
      await this.#load();
      for (const f of this.#files.values()) {
        const inode = await this.#fs.readInode(f.ino);
        f.extents = await this.#extentsOf(inode);
        f.committedSize = this.#fs.sizeOf(inode);
        // A size the disk has (the failed change may have committed after all), or a pending growth
        // that its blocks still cover.
        f.size = Math.max(f.committedSize, Math.min(f.size, mappedEnd(f.extents) * this.#bs));
        f.written.truncate(Math.ceil(f.size / this.#bs));
        f.touched = true;
      }
    } catch (again) {
      // The state on the disk is unknown here: later calls fail until the filesystem is reopened.
      this.#broken = again;
      void err;
    }
  }

  /** Without a journal: the superblock says "not clean" before the first change reaches the disk. */
  async #markDirty(): Promise<void> {
    if (this.journaled || this.#markedDirty) return;
    this.#writer.patchSuperblock({ state: this.#cleanState & ~1 });
    this.#writer.beginTransaction();
    await this.#commit();
    this.#markedDirty = true;
  }

  async #extentsOf(inode: Awaited<ReturnType<Ext4['readInode']>>): Promise<Extent[]> {
    const out: Extent[] = [];
    await this.#fs.walkBlocks(inode, { data: (logical, physical, length, unwritten) => out.push({ logical, physical, length, unwritten }), tree: () => {} });
    return normalize(out);
  }

  // ---- FileSystem -----------------------------------------------------------------------------

  async stat(path: string): Promise<FsStat> {
    return this.#exclusive(async () => {
      const ino = await this.#fs.lookup(path, { follow: false });
      const st = await this.#reader.stat(path);
      const f = this.#files.get(ino);
      return f ? { ...st, size: f.size } : st;
    });
  }

  readdir(path: string): Promise<FsEntry[]> {
    return this.#exclusive(() => this.#reader.readdir(path));
  }

  readlink(path: string): Promise<string> {
    return this.#exclusive(() => this.#reader.readlink(path));
  }

  xattrs(path: string): Promise<readonly FsXattr[]> {
    return this.#exclusive(() => this.#reader.xattrs(path));
  }

  /** A file as a read-only Disk (an open file's view shows what has been written to it so far). */
  openFile(path: string): Promise<Disk> {
    return this.#exclusive(async () => {
      const ino = await this.#fs.lookup(path);
      const f = this.#files.get(ino);
      if (f) return new Ext4WritableFile(this, f, true);
      return this.#reader.openFile(path);
    });
  }

  space(): Promise<FsSpace> {
    return this.#exclusive(async () => ({ totalBytes: this.#fs.sb.blocksCount * this.#bs, freeBytes: this.#writer.allocatableBlocks * this.#bs }));
  }

  // ---- WritableFileSystem -------------------------------------------------------------------

  mkdir(path: string, options: { mode?: number } = {}): Promise<void> {
    return this.#exclusive(() => this.#change(async (w) => void (await w.mkdir(path, { mode: options.mode ?? 0o755 }))));
  }

  async #exists(path: string): Promise<number | undefined> {
    try {
      return await this.#fs.lookup(path, { follow: false });
    } catch (err) {
      if (err instanceof NotFoundError) return undefined;
      throw err;
    }
  }

  createFile(path: string, options: CreateFileOptions): Promise<WritableFile> {
    return this.#exclusive(async () => {
      const size = options.size;
      if (!Number.isSafeInteger(size) || size < 0) throw new UsageError(`ext4: ${path}: size ${size} is not a byte count`);
      if ((await this.#exists(path)) !== undefined) throw new AlreadyExistsError(`ext4: ${path}: it already exists (EEXIST)`);
      const unwritten = !options.uninitialized;
      const blocks = Math.ceil(size / this.#bs);
      if (blocks > this.#writer.allocatableBlocks) throw new NoSpaceError(`${path}: ${size} bytes do not fit (${this.#writer.allocatableBlocks * this.#bs} bytes free)`);
      const { ino, extents } = await this.#change(async (w) => {
        const runs = w.allocateRuns(blocks, 0);
        const extents: Extent[] = [];
        let logical = 0;
        for (const [physical, length] of runs) {
          extents.push({ logical, physical, length, unwritten });
          logical += length;
        }
        const ino = await w.createRegular(path, { extents, size }, { mode: options.mode ?? 0o644 });
        return { ino, extents };
      });
      const f = new FileState(ino, normalize(extents), size, options.uninitialized === true, this.#bs);
      return this.#open(f);
    });
  }

  #open(f: FileState): Ext4WritableFile {
    this.#files.set(f.ino, f);
    f.handles++;
    const h = new Ext4WritableFile(this, f, false);
    this.#handles.add(h);
    return h;
  }

  openFileForWriting(path: string): Promise<WritableFile> {
    return this.#exclusive(async () => {
      const ino = await this.#fs.lookup(path, { follow: true });
      const existing = this.#files.get(ino);
      if (existing) {
        existing.handles++;
        const h = new Ext4WritableFile(this, existing, false);
        this.#handles.add(h);
        return h;
      }
      const inode = await this.#fs.readInode(ino);
      if (kindOfMode(inode.mode) !== 'file') throw new UsageError(`ext4: ${path}: not a regular file`);
      if (inode.flags & InodeFlags.inlineData) throw new UnsupportedFeatureError('ext4', 'writing', `${path}: a file with inline data`);
      if (!(inode.flags & InodeFlags.extents)) throw new UnsupportedFeatureError('ext4', 'writing', `${path}: a file without extents (block-mapped)`);
      if (inode.flags & (InodeFlags.immutable | InodeFlags.append)) throw new UsageError(`ext4: ${path}: the file is immutable or append-only (EPERM)`);
      if (inode.flags & (InodeFlags.encrypt | InodeFlags.verity)) throw new UnsupportedFeatureError('ext4', 'writing', `${path}: an encrypted or verity file`);
      return this.#open(new FileState(ino, await this.#extentsOf(inode), this.#fs.sizeOf(inode), false, this.#bs));
    });
  }

  writeFile(path: string, data: Uint8Array, options: { mode?: number } = {}): Promise<void> {
    return this.#exclusive(async () => {
      const ino = await this.#exists(path);
      if (ino !== undefined) this.#refuseOpen(ino, path);
      await this.#change(async (w) => void (await w.writeFile(path, data, { mode: options.mode ?? 0o644 })));
    });
  }

  #refuseOpen(ino: number, path: string): void {
    if (this.#files.has(ino)) throw new UsageError(`ext4: ${path} is open for writing (EBUSY)`);
  }

  rename(from: string, to: string): Promise<void> {
    return this.#exclusive(async () => {
      await this.#fs.lookup(from, { follow: false });
      const target = await this.#exists(to);
      if (target !== undefined) {
        const source = await this.#fs.lookup(from, { follow: false });
        if (source !== target) this.#refuseOpen(target, to);
      }
      if (this.journaled) {
        await this.#change((w) => w.rename(from, to));
      } else {
        // Each step durable before the next: the new name, then the old one gone, then the replaced
        // inode. Both names on one inode are what a cut rename leaves: repeating it finishes it.
        await this.#change((w) => w.rename(from, to, { between: () => this.#commit(), finishSameInode: true }));
      }
    });
  }

  unlink(path: string): Promise<void> {
    return this.#exclusive(async () => {
      const ino = await this.#fs.lookup(path, { follow: false });
      if (kindOfMode((await this.#fs.readInode(ino)).mode) === 'dir') throw new UsageError(`ext4: ${path}: is a directory (EISDIR)`);
      this.#refuseOpen(ino, path);
      await this.#change((w) => w.unlink(path));
    });
  }

  rmdir(path: string): Promise<void> {
    return this.#exclusive(async () => {
      const ino = await this.#fs.lookup(path, { follow: false });
      if (ino === 2) throw new UsageError('ext4: the root directory cannot be removed');
      const inode = await this.#fs.readInode(ino);
      if (kindOfMode(inode.mode) !== 'dir') throw new UsageError(`ext4: ${path}: not a directory (ENOTDIR)`);
      if ((await this.#fs.readDirInode(inode)).length > 0) throw new AlreadyExistsError(`ext4: ${path}: directory not empty (ENOTEMPTY)`);
      await this.#change((w) => w.unlink(path));
    });
  }

  removeTree(path: string): Promise<void> {
    const BATCH = 256;
    const remove = async (p: string): Promise<void> => {
      const ino = await this.#fs.lookup(p, { follow: false });
      const inode = await this.#fs.readInode(ino);
      if (kindOfMode(inode.mode) !== 'dir') {
        this.#refuseOpen(ino, p);
        await this.#change((w) => w.unlink(p));
        return;
      }
      if (ino === 2) throw new UsageError('ext4: the root directory cannot be removed');
      const others: string[] = [];
      for (const e of await this.#fs.readDirInode(inode)) {
        const child = p === '/' ? `/${e.name}` : `${p}/${e.name}`;
        const isDir = e.fileType === 2 || (e.fileType === 0 && kindOfMode((await this.#fs.readInode(e.ino)).mode) === 'dir');
        if (isDir) await remove(child);
        else {
          this.#refuseOpen(e.ino, child);
          others.push(child);
        }
      }
      for (let i = 0; i < others.length; i += BATCH) {
        const batch = others.slice(i, i + BATCH);
        await this.#change(async (w) => {
          for (const f of batch) await w.unlink(f);
        });
      }
      await this.#change((w) => w.unlink(p));
    };
    return this.#exclusive(async () => {
      try {
        await this.#fs.lookup(path, { follow: false });
      } catch (err) {
        if (err instanceof NotFoundError) return;
        throw err;
      }
      await remove(path);
    });
  }

  link(existing: string, path: string): Promise<void> {
    return this.#exclusive(() => this.#change((w) => w.link(existing, path)));
  }

  setMode(path: string, mode: number): Promise<void> {
    return this.#exclusive(() => this.#change((w) => w.setAttrs(path, { mode })));
  }

  setOwner(path: string, uid: number, gid: number): Promise<void> {
    return this.#exclusive(() => this.#change((w) => w.setAttrs(path, { uid, gid })));
  }

  setXattr(path: string, name: string, value: Uint8Array): Promise<void> {
    return this.#exclusive(async () => {
      checkXattrName(name);
      const kind = kindOfMode((await this.#fs.readInode(await this.#fs.lookup(path, { follow: false }))).mode);
      if (name.startsWith('user.') && kind !== 'file' && kind !== 'dir') throw new PermissionError(`ext4: ${path}: user.* attributes are only for files and directories, as Linux allows them (EPERM on a ${kind})`);
      const copy = value.slice();
      await this.#change((w) => w.setXattr(path, name, copy));
    });
  }

  removeXattr(path: string, name: string): Promise<void> {
    return this.#exclusive(async () => {
      checkXattrName(name);
      const inode = await this.#fs.readInode(await this.#fs.lookup(path, { follow: false }));
      if (!(await this.#fs.xattrs(inode)).some((a) => a.name === name)) throw new NotFoundError(`ext4: ${path}: no extended attribute ${name} (ENODATA)`);
      await this.#change((w) => w.setXattr(path, name, undefined));
    });
  }

  flush(): Promise<void> {
    return this.#exclusive(() => this.#flushUnlocked());
  }

  async #flushUnlocked(): Promise<void> {
    if ([...this.#files.values()].some((f) => f.dirty)) await this.#change(async () => {});
    await this.#lower.flush();
  }

  /** Commits what open files still hold (their preallocation freed), then lets go of everything. */
  async close(): Promise<void> {
    if (this.#closed) return;
    await this.#exclusive(async () => {
      for (const h of [...this.#handles]) await this.closeFile(h);
      if (!this.journaled && this.#markedDirty) {
        this.#writer.patchSuperblock({ state: this.#cleanState });
        this.#writer.beginTransaction();
        await this.#commit();
        this.#markedDirty = false;
      }
      await this.#lower.flush();
      await this.#txn.close();
    });
    this.#closed = true;
  }

  // ---- files (called by Ext4WritableFile with the lock held) ----------------------------------

  /** @internal */
  exclusive<T>(fn: () => Promise<T>): Promise<T> {
    return this.#exclusive(fn);
  }

  /** @internal Reads file bytes [offset, offset + buf.length) into buf (zeros for holes and unwritten blocks). */
  async readFileBytes(f: FileState, buf: Uint8Array, offset: number): Promise<void> {
    const bs = this.#bs;
    const end = offset + buf.byteLength;
    buf.fill(0);
    let i = extentAt(f.extents, Math.floor(offset / bs));
    for (; i < f.extents.length; i++) {
      const e = f.extents[i]!;
      const eStart = e.logical * bs;
      if (eStart >= end) break;
      const from = Math.max(offset, eStart);
      const to = Math.min(end, (e.logical + e.length) * bs);
      if (to <= from) continue;
      const parts = !e.unwritten || f.uninitialized ? [{ start: Math.floor(from / bs), end: Math.ceil(to / bs), inside: true }] : f.written.split(Math.floor(from / bs), Math.ceil(to / bs));
      for (const p of parts) {
        if (!p.inside) continue;
        const a = Math.max(from, p.start * bs);
        const z = Math.min(to, p.end * bs);
        await this.#lower.read(buf.subarray(a - offset, z - offset), e.physical * bs + (a - eStart));
      }
    }
  }

  /** @internal Writes file bytes (within the file's size). */
  async writeFileBytes(f: FileState, buf: Uint8Array, offset: number): Promise<void> {
    const bs = this.#bs;
    const end = offset + buf.byteLength;
    await this.#fillHoles(f, Math.floor(offset / bs), Math.ceil(end / bs));
    let i = extentAt(f.extents, Math.floor(offset / bs));
    for (; i < f.extents.length; i++) {
      const e = f.extents[i]!;
      const eStart = e.logical * bs;
      if (eStart >= end) break;
      const from = Math.max(offset, eStart);
      const to = Math.min(end, (e.logical + e.length) * bs);
      if (to <= from) continue;
      const put = (a: number, z: number) => this.#lower.write(buf.subarray(a - offset, z - offset), e.physical * bs + (a - eStart));
      if (!e.unwritten || f.uninitialized) {
        await put(from, to);
        continue;
      }
      const firstBlock = Math.floor(from / bs);
      const endBlock = Math.ceil(to / bs);
      for (const p of f.written.split(firstBlock, endBlock)) {
        const a = Math.max(from, p.start * bs);
        const z = Math.min(to, p.end * bs);
        if (p.inside) {
          await put(a, z);
          continue;
        }
        // Blocks never written: whole blocks go down as they are, a partial one with zeros around the bytes.
        const padded = async (blockStart: number, from: number, to: number) => {
          const block = new Uint8Array(bs);
          block.set(buf.subarray(from - offset, to - offset), from - blockStart);
          await this.#lower.write(block, e.physical * bs + (blockStart - eStart));
        };
        let at = a;
        const headStart = Math.floor(at / bs) * bs;
        if (at !== headStart || z < headStart + bs) {
          const stop = Math.min(z, headStart + bs);
          await padded(headStart, at, stop);
          at = stop;
        }
        const wholeEnd = Math.max(at, Math.floor(z / bs) * bs);
        if (wholeEnd > at) await put(at, wholeEnd);
        if (z > wholeEnd) await padded(wholeEnd, wholeEnd, z);
      }
      f.written.add(firstBlock, endBlock);
    }
    f.touched = true;
  }

  /** Allocates blocks for holes in [first, end) (files opened with holes), as unwritten extents. */
  async #fillHoles(f: FileState, first: number, end: number): Promise<void> {
    const holes: [number, number][] = [];
    let at = first;
    for (let i = extentAt(f.extents, first); i < f.extents.length && at < end; i++) {
      const e = f.extents[i]!;
      if (e.logical > at) holes.push([at, Math.min(end, e.logical)]);
      at = Math.max(at, e.logical + e.length);
    }
    if (at < end) holes.push([at, end]);
    if (holes.length === 0) return;
    const total = holes.reduce((a, [s, e]) => a + e - s, 0);
    if (total > this.#writer.allocatableBlocks) throw new NoSpaceError(`${total * this.#bs} bytes to fill holes of inode ${f.ino}`);
    await this.#relayout(f, (w, extents) => {
      const added: Extent[] = [];
      for (const [s, e] of holes) {
        const before = extents.filter((x) => x.logical < s).pop();
        const goal = before ? before.physical + (s - before.logical) : 0;
        let logical = s;
        for (const [physical, length] of w.allocateRuns(e - s, goal, true)) {
          added.push({ logical, physical, length, unwritten: true });
          logical += length;
        }
      }
      return { extents: normalize([...extents, ...added]), size: f.size };
    });
  }

  /** One transaction that replaces the file's layout (pending conversions included). */
  async #relayout(f: FileState, plan: (w: Ext4Writer, extents: Extent[]) => { extents: Extent[]; size: number }): Promise<void> {
    let next: { extents: Extent[]; size: number } | undefined;
    await this.#change(async (w) => {
      const p = plan(w, this.#pendingExtents(f));
      await w.setFileLayout(f.ino, { extents: p.extents, size: p.size }, { reuseTree: this.journaled });
      next = p;
    }, f);
    this.#committed(f, next!.extents, next!.size);
    f.size = next!.size;
    f.touched = false;
  }

  /** @internal */
  async resizeFile(f: FileState, size: number): Promise<void> {
    if (!Number.isSafeInteger(size) || size < 0) throw new UsageError(`ext4: size ${size} is not a byte count`);
    const bs = this.#bs;
    const old = f.size;
    if (size === old) return;
    const need = Math.ceil(size / bs);
    if (size < old) {
      await this.#relayout(f, (w, extents) => {
        const { kept, released } = cutExtents(extents, need);
        w.releaseRuns(released);
        return { extents: kept, size };
      });
      f.written.truncate(need);
      f.keepBlocks = 0;
      return;
    }
    // Growth: the bytes after the old end of its last block read as zeros from now on.
    if (old % bs !== 0 && !f.uninitialized) {
      const b = Math.floor(old / bs);
      const e = f.extents[extentAt(f.extents, b)];
      if (e && e.logical <= b && (!e.unwritten || f.written.split(b, b + 1)[0]!.inside)) {
        const stop = Math.min(size, (b + 1) * bs);
        await this.#lower.write(new Uint8Array(stop - old), e.physical * bs + (old - e.logical * bs));
      }
    }
    const have = mappedEnd(f.extents);
    if (need <= have) {
      f.size = size;
      f.touched = true;
      return;
    }
    const want = need - have;
    const free = this.#writer.allocatableBlocks;
    if (want > free) throw new NoSpaceError(`growing inode ${f.ino} to ${size} bytes needs ${want * bs} more bytes (${free * bs} free)`);
    // Streaming growth (steps smaller than the preallocation step) takes a whole step.
    const step = Math.ceil(Math.min(MAX_PREALLOC, Math.max(this.#preallocStep, (have * bs) / 4)) / bs);
    const extra = want < step ? Math.max(0, Math.min(step - want, Math.floor((free - want) / 2))) : 0;
    await this.#relayout(f, (w, extents) => {
      const last = extents[extents.length - 1];
      const goal = last ? last.physical + last.length : 0;
      const added: Extent[] = [];
      let logical = have;
      for (const [physical, length] of w.allocateRuns(want + extra, goal, last !== undefined)) {
        added.push({ logical, physical, length, unwritten: true });
        logical += length;
      }
      let all = normalize([...extents, ...added]);
      if (f.uninitialized) {
        const below = new RangeSet();
        below.add(0, need);
        all = convertExtents(all, below);
      }
      return { extents: all, size };
    });
  }

  /** @internal Commits the file's pending state and flushes its data. */
  async flushFile(f: FileState): Promise<void> {
    if (f.dirty) await this.#change(async () => {});
    await this.#lower.flush();
  }

  /** @internal The last handle frees the preallocation past the end; commits what is pending. */
  async closeFile(h: Ext4WritableFile): Promise<void> {
    if (!this.#handles.delete(h)) return;
    const f = h.state;
    h.markClosed();
    if (--f.handles > 0) {
      if (f.dirty) await this.#change(async () => {});
      return;
    }
    const keep = Math.max(Math.ceil(f.size / this.#bs), f.keepBlocks);
    try {
      if (mappedEnd(f.extents) > keep) {
        await this.#relayout(f, (w, extents) => {
          const { kept, released } = cutExtents(extents, keep);
          w.releaseRuns(released);
          return { extents: kept, size: f.size };
        });
      } else if (f.dirty) {
        await this.#change(async () => {});
      }
    } finally {
      this.#files.delete(f.ino);
    }
  }
}

/** A regular file open for writing (or an open file's read-only view). */
class Ext4WritableFile implements WritableFile {
  readonly readOnly: boolean;
  readonly state: FileState;
  readonly #fs: Ext4WritableFileSystem;
  #closed = false;

  constructor(fs: Ext4WritableFileSystem, state: FileState, readOnly: boolean) {
    this.#fs = fs;
    this.state = state;
    this.readOnly = readOnly;
  }

  get size(): number {
    return this.state.size;
  }

  markClosed(): void {
    this.#closed = true;
  }

  #check(write: boolean): void {
    if (this.#closed) throw new UsageError('ext4: the file is closed');
    if (write && this.readOnly) throw new ReadOnlyError('ext4: this view of the file is read-only');
  }

  read(buf: Uint8Array, offset: number): Promise<void> {
    return this.#fs.exclusive(async () => {
      this.#check(false);
      checkRange(this, offset, buf.byteLength, 'read');
      await this.#fs.readFileBytes(this.state, buf, offset);
    });
  }

  write(buf: Uint8Array, offset: number): Promise<void> {
    return this.#fs.exclusive(async () => {
      this.#check(true);
      checkRange(this, offset, buf.byteLength, 'write');
      if (buf.byteLength > 0) await this.#fs.writeFileBytes(this.state, buf, offset);
    });
  }

  resize(size: number): Promise<void> {
    return this.#fs.exclusive(async () => {
      this.#check(true);
      await this.#fs.resizeFile(this.state, size);
    });
  }

  flush(): Promise<void> {
    return this.#fs.exclusive(async () => {
      this.#check(false);
      if (!this.readOnly) await this.#fs.flushFile(this.state);
    });
  }

  close(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    if (this.readOnly) {
      this.#closed = true;
      return Promise.resolve();
    }
    return this.#fs.exclusive(() => this.#fs.closeFile(this));
  }
}

