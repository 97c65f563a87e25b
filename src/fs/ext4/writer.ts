/**
 * Writing to an ext4 filesystem: directories, regular files (streamed, any size), symlinks, hard
 * links, device nodes, modes/owners/times, delete, append.
 *
 * Design notes
 * - The writer loads the allocation state once (a whole-filesystem block bitmap, per-group inode
 *   bitmaps, the descriptors) and keeps it in memory; `close()` (or `flush()`) writes back the
 *   changed bitmaps, descriptors and the superblock with fresh checksums. Inodes, extent trees and
 *   directory blocks are written as each operation completes, data before metadata.
 * - New files get extent trees built from the runs the allocator returns (goal: the inode's group,
 *   then right after the previous run, so streamed files stay contiguous); appending rebuilds the
 *   tree over the old and new runs.
 * - Directories are kept linear. An htree directory that must change is rewritten as a linear one
 *   (same entries, fresh blocks with checksum tails) — valid for e2fsck and the kernel, and it keeps
 *   the code free of hashing. Inline-data directories and indirect-mapped filesystems are read-only
 *   here (UnsupportedFeatureError).
 * - Refuses filesystems whose journal needs recovery, and features whose bookkeeping it does not do
 *   (quota, bigalloc, …), so it never leaves a filesystem e2fsck must repair.
 * - Device nodes (overlayfs whiteouts are char 0:0) and extended attributes (trusted.overlay.* and
 *   friends) are supported: attributes go in the inode when they fit, else all into one EA block.
 * - For callers that make every change one transaction (writable.ts over jbd2): `deferFrees` keeps
 *   freed blocks out of the allocator until the next `flush()` (as the kernel keeps them until the
 *   commit), so a change never writes over a block the last committed state still uses;
 *   `beginTransaction()`/`allocatedInTransaction(b)` tell which blocks the current change took (free
 *   in the committed state, so they may be written in place); `flush({ primaryOnly })` writes only
 *   the changed bitmaps, the descriptor blocks holding changed groups and the primary superblock, as
 *   the kernel does. `rename`, preallocated files (`createRegular`) and `setFileLayout` (extents with
 *   unwritten flags, any size) serve the WritableFileSystem adapter.
 */
import { AlreadyExistsError, NotFoundError, UnsupportedFeatureError, UsageError } from '../../errors.ts';
import { view } from '../../io/bytes.ts';
import { BlockAllocator, MAX_EXTENT_LEN, buildDirBlocks, buildExtentTree, runsToExtents, type NewDirEntry } from './build.ts';
import { crc32cUpdate } from './crc.ts';
import { DirFileType, dirEntrySize, encodeDirEntry, hasDirTail, writeDirTail, DIR_TAIL_SIZE } from './dir.ts';
import { NoSpaceError } from './errors.ts';
import { type Ext4, ROOT_INO, type Run } from './fs.ts';
import { BgFlags, type GroupDesc, hasGroupChecksums } from './group.ts';
import { FileType, InodeFlags, type Inode, type Timestamp, encodeInode, kindOfMode, setInodeChecksum } from './inode.ts';
import { writePrimarySuperblockAndDescriptors, writeSuperblocksAndDescriptors } from './mkfs.ts';
import { type ExtentLeaf } from './extent.ts';
import { Incompat, RoCompat, type Superblock } from './superblock.ts';
import { type Xattr, checkXattrName, decodeXattrBlock, encodeInodeXattrs, encodeXattrBlock, xattrBlockChecksum } from './xattr.ts';

export interface NodeAttrs {
  mode?: number;
  uid?: number;
  gid?: number;
  atime?: Timestamp;
  mtime?: Timestamp;
  ctime?: Timestamp;
}

export type Data = Uint8Array | AsyncIterable<Uint8Array> | Iterable<Uint8Array>;

export interface WriterOptions {
  now?: () => Timestamp;
  /** Freed blocks return to the allocator only at the next `flush()` (one change = one transaction). */
  deferFrees?: boolean;
}

/** A regular file's block map for `setFileLayout`/`createRegular`: extents sorted by logical block, no overlaps. */
export interface FileLayout {
  readonly extents: readonly ExtentLeaf[];
  readonly size: number;
}

const WRITABLE_RO_COMPAT = RoCompat.sparseSuper | RoCompat.largeFile | RoCompat.hugeFile | RoCompat.gdtCsum | RoCompat.dirNlink | RoCompat.extraIsize | RoCompat.metadataCsum | RoCompat.btreeDir;
const WRITABLE_INCOMPAT = Incompat.filetype | Incompat.extents | Incompat.bit64 | Incompat.flexBg | Incompat.metaBg | Incompat.csumSeed | Incompat.largedir | Incompat.inlineData;
const FT_OF: Record<string, number> = { file: DirFileType.reg, dir: DirFileType.dir, symlink: DirFileType.symlink, chardev: DirFileType.chr, blockdev: DirFileType.blk, fifo: DirFileType.fifo, socket: DirFileType.sock };

export class Ext4Writer {
  readonly fs: Ext4;
  readonly #alloc: BlockAllocator;
  readonly #groups: GroupDesc[];
  readonly #inodeBitmaps: Uint8Array[];
  readonly #dirtyGroups = new Set<number>();
  readonly #time: () => Timestamp;
  /** Directory entries (name → inode) of the directories this writer has looked at. */
  readonly #dirs = new Map<number, Map<string, number>>();
  /** Resolved directory paths. */
  readonly #dirPaths = new Map<string, number>();
  /** Per directory: index of the block where the last entry went (scan for room from there). */
  readonly #roomHint = new Map<number, number>();
  readonly #deferFrees: boolean;
  /** Runs freed since the last flush, still marked in the allocator (deferFrees). */
  #pendingFrees: [number, number][] = [];
  #pendingFreeCount = 0;
  /** Runs allocated since beginTransaction() (none recorded before the first call). */
  #txnAllocated: [number, number][] | undefined;
  /** Superblock fields the next flush writes (e.g. s_state). */
  #sbPatch: Partial<Superblock> = {};
  #sbDirty = false;

  private constructor(fs: Ext4, alloc: BlockAllocator, groups: GroupDesc[], inodeBitmaps: Uint8Array[], time: () => Timestamp, deferFrees: boolean) {
    this.fs = fs;
    this.#alloc = alloc;
    this.#groups = groups;
    this.#inodeBitmaps = inodeBitmaps;
    this.#time = time;
    this.#deferFrees = deferFrees;
  }

  /**
   * Opens a writer over a filesystem opened on a writable Disk. `now` fixes timestamps (deterministic
   * output). Reopen the filesystem after `close()` to read it: the Ext4 object's descriptors are stale.
   */
  static async open(fs: Ext4, options: WriterOptions = {}): Promise<Ext4Writer> {
    const sb = fs.sb;
    if (fs.disk.readOnly) throw new UsageError('the disk is open read-only');
    if (sb.featureIncompat & Incompat.recover) throw new UnsupportedFeatureError('ext4', 'writing', 'the journal needs recovery: mount it once (or run e2fsck) first');
    const badRo = sb.featureRoCompat & ~WRITABLE_RO_COMPAT;
    const badIn = sb.featureIncompat & ~WRITABLE_INCOMPAT;
    if (badRo || badIn) throw new UnsupportedFeatureError('ext4', 'writing', `features ro_compat 0x${badRo.toString(16)} incompat 0x${badIn.toString(16)}`);
    if (!(sb.featureIncompat & Incompat.extents)) throw new UnsupportedFeatureError('ext4', 'writing', 'filesystems without extents (ext2/ext3)');
    if (fs.checksumErrorCount > 0) throw new UnsupportedFeatureError('ext4', 'writing', 'the filesystem has checksum errors');
    const bs = fs.blockSize;
    const alloc = new BlockAllocator(sb.blocksCount);
    const layout = fs.layout;
    const csums = hasGroupChecksums(sb);
    const groups = fs.groups.map((g) => ({ ...g }));
    const inodeBitmaps: Uint8Array[] = [];
    const itb = Math.ceil((sb.inodesPerGroup * sb.inodeSize) / bs);
    if (sb.firstDataBlock > 0) alloc.mark(0, sb.firstDataBlock);
    for (let g = 0; g < groups.length; g++) {
      const gd = groups[g]!;
      const first = layout.groupFirstBlock(g);
      const count = layout.groupBlocks(g);
      if (csums && gd.flags & BgFlags.blockUninit) {
        for (const [, start, n] of layout.fixedMetadata(g)) alloc.mark(start, n);
      } else {
        const bitmap = await fs.readBlocks(gd.blockBitmap, 1);
        for (let i = 0; i < count; i++) if ((bitmap[i >>> 3]! >>> (i & 7)) & 1) alloc.mark(first + i, 1);
      }
      if (csums && gd.flags & BgFlags.inodeUninit) inodeBitmaps.push(new Uint8Array(bs));
      else inodeBitmaps.push(await fs.readBlocks(gd.inodeBitmap, 1));
    }
    // Every group's own tables are in use wherever they lie (BLOCK_UNINIT groups included).
    for (const gd of groups) {
      alloc.mark(gd.blockBitmap, 1);
      alloc.mark(gd.inodeBitmap, 1);
      alloc.mark(gd.inodeTable, itb);
    }
    const now = options.now ?? (() => {
      const ms = Date.now();
      return { sec: Math.floor(ms / 1000), nsec: (ms % 1000) * 1e6 };
    });
    return new Ext4Writer(fs, alloc, groups, inodeBitmaps, now, options.deferFrees ?? false);
  }

  // ---- transactions (see the design notes) --------------------------------------------------

  /** Starts recording the blocks allocated from here on (allocatedInTransaction). */
  beginTransaction(): void {
    this.#txnAllocated = [];
  }

  /** Whether block `b` was allocated since beginTransaction() (so it was free in the committed state). */
  allocatedInTransaction(b: number): boolean {
    const runs = this.#txnAllocated;
    if (!runs) return false;
    for (let i = runs.length - 1; i >= 0; i--) {
      const [s, n] = runs[i]!;
      if (b >= s && b < s + n) return true;
    }
    return false;
  }

  #recordAllocated(runs: readonly (readonly [number, number])[]): void {
    const list = this.#txnAllocated;
    if (!list) return;
    for (const [s, n] of runs) {
      const last = list[list.length - 1];
      if (last && last[0] + last[1] === s) last[1] += n;
      else list.push([s, n]);
    }
  }

  /** Free blocks now (those freed but deferred included) and free inodes. */
  get freeBlocksCount(): number {
    return this.#groups.reduce((a, g) => a + g.freeBlocks, 0);
  }

  /** Blocks an allocation can take now (deferred frees are not available until the next flush). */
  get allocatableBlocks(): number {
    return this.freeBlocksCount - this.#pendingFreeCount;
  }

  get freeInodesCount(): number {
    return this.#groups.reduce((a, g) => a + g.freeInodes, 0);
  }

  /** Superblock fields the next flush writes (s_state for a filesystem without a journal). */
  patchSuperblock(fields: Partial<Superblock>): void {
    this.#sbPatch = { ...this.#sbPatch, ...fields };
    this.#sbDirty = true;
  }

  /**
   * `count` data blocks, as few runs as possible (see BlockAllocator.allocRuns); with `extend`, the
   * free blocks right at `goal` first. Accounted in the descriptors.
   */
  allocateRuns(count: number, goal: number, extend = false): [number, number][] {
    if (count === 0) return [];
    if (count > this.allocatableBlocks) throw new NoSpaceError(`no space left for ${count} blocks (${this.allocatableBlocks} free)`);
    const runs = this.#alloc.allocRuns(count, goal, extend);
    this.#accountBlocks(runs, 1);
    this.#recordAllocated(runs);
    return runs;
  }

  /** Frees data runs (deferred until the next flush with deferFrees). */
  releaseRuns(runs: readonly (readonly [number, number])[]): void {
    this.#freeBlocks(runs);
  }

  get #sb() {
    return this.fs.sb;
  }

  // ---- inodes -------------------------------------------------------------------------------

  async #writeInode(ino: number, raw: Uint8Array): Promise<void> {
    if (this.fs.metadataCsum) setInodeChecksum(this.fs.csumSeed, ino, raw);
    await this.fs.disk.write(raw, this.fs.inodeLocation(ino));
  }

  #allocInode(goalGroup: number, isDir: boolean): number {
    const sb = this.#sb;
    const ipg = sb.inodesPerGroup;
    const n = this.#groups.length;
    for (let k = 0; k < n; k++) {
      const g = (goalGroup + k) % n;
      const gd = this.#groups[g]!;
      if (gd.freeInodes === 0) continue;
      const bitmap = this.#inodeBitmaps[g]!;
      const start = g === 0 ? sb.firstIno - 1 : 0;
      for (let i = start; i < ipg; i++) {
        if ((bitmap[i >>> 3]! >>> (i & 7)) & 1) continue;
        bitmap[i >>> 3]! |= 1 << (i & 7);
        const csums = hasGroupChecksums(sb);
        const flags = gd.flags & ~BgFlags.inodeUninit;
        let itableUnused = gd.itableUnused;
        if (csums && ipg - itableUnused <= i) itableUnused = ipg - (i + 1);
        this.#groups[g] = { ...gd, flags, freeInodes: gd.freeInodes - 1, usedDirs: gd.usedDirs + (isDir ? 1 : 0), itableUnused };
        this.#dirtyGroups.add(g);
        return g * ipg + i + 1;
      }
    }
    throw new NoSpaceError('no free inodes');
  }

  #freeInode(ino: number, isDir: boolean): void {
    const ipg = this.#sb.inodesPerGroup;
    const g = Math.floor((ino - 1) / ipg);
    const i = (ino - 1) % ipg;
    const bitmap = this.#inodeBitmaps[g]!;
    bitmap[i >>> 3]! &= ~(1 << (i & 7));
    const gd = this.#groups[g]!;
    this.#groups[g] = { ...gd, freeInodes: gd.freeInodes + 1, usedDirs: gd.usedDirs - (isDir ? 1 : 0) };
    this.#dirtyGroups.add(g);
  }

  #groupOfBlock(b: number): number {
    return Math.floor((b - this.#sb.firstDataBlock) / this.#sb.blocksPerGroup);
  }

  #accountBlocks(runs: readonly (readonly [number, number])[], sign: 1 | -1): void {
    for (const [start, len] of runs) {
      let b = start;
      while (b < start + len) {
        const g = this.#groupOfBlock(b);
        const groupEnd = this.fs.layout.groupFirstBlock(g) + this.#sb.blocksPerGroup;
        const n = Math.min(start + len, groupEnd) - b;
        const gd = this.#groups[g]!;
        this.#groups[g] = { ...gd, freeBlocks: gd.freeBlocks - sign * n, flags: gd.flags & ~BgFlags.blockUninit };
        this.#dirtyGroups.add(g);
        b += n;
      }
    }
  }

  #allocBlocks(count: number, goal: number): [number, number][] {
    if (count === 0) return [];
    const runs = this.#alloc.alloc(count, goal);
    this.#accountBlocks(runs, 1);
    this.#recordAllocated(runs);
    return runs;
  }

  #freeBlocks(runs: readonly (readonly [number, number])[]): void {
    if (this.#deferFrees) {
      for (const [s, n] of runs) {
        if (n === 0) continue;
        this.#pendingFrees.push([s, n]);
        this.#pendingFreeCount += n;
      }
    } else {
      for (const [s, n] of runs) this.#alloc.unmark(s, n);
    }
    this.#accountBlocks(runs, -1);
  }

  #groupGoal(ino: number): number {
    const g = Math.floor((ino - 1) / this.#sb.inodesPerGroup);
    return this.fs.layout.groupFirstBlock(g);
  }

  /** Writes data runs + a fresh extent tree into the inode's i_block; returns the tree block count. */
  #setExtents(ino: number, generation: number, runs: readonly (readonly [number, number])[], raw: Uint8Array): Promise<number> {
    const extents = runsToExtents(runs);
    const treeWrites: [number, Uint8Array][] = [];
    const goal = runs.length > 0 ? runs[runs.length - 1]![0] + runs[runs.length - 1]![1] : this.#groupGoal(ino);
    const tree = buildExtentTree(extents, this.fs.blockSize, () => this.#allocBlocks(1, goal)[0]![0], this.fs.metadataCsum ? { seed: this.fs.csumSeed, ino, generation } : undefined);
    treeWrites.push(...tree.treeBlocks);
    raw.set(tree.iBlock, 40);
    return (async () => {
      for (const [b, bytes] of treeWrites) await this.fs.disk.write(bytes, b * this.fs.blockSize);
      return treeWrites.length;
    })();
  }

  /** All blocks (data runs, tree blocks) an inode holds. */
  async #blocksOf(inode: Inode): Promise<{ data: Run[]; tree: number[] }> {
    const data: Run[] = [];
    const tree: number[] = [];
    await this.fs.walkBlocks(inode, {
      data: (logical, physical, length, unwritten) => data.push({ logical, physical, length, unwritten }),
      tree: (p) => tree.push(p),
    });
    data.sort((a, b) => a.logical - b.logical);
    return { data, tree };
  }

  // ---- directories --------------------------------------------------------------------------

  async #resolveParent(path: string): Promise<{ parent: number; name: Uint8Array; nameText: string }> {
    const parts = path.split('/').filter((p) => p !== '' && p !== '.');
    const nameText = parts.pop();
    if (nameText === undefined || nameText === '..') throw new UsageError(`"${path}" does not name an entry`);
    const name = new TextEncoder().encode(nameText);
    if (name.byteLength > 255) throw new UsageError(`"${nameText}" is longer than 255 bytes`);
    const key = `/${parts.join('/')}`;
    let parent = this.#dirPaths.get(key);
    if (parent === undefined) {
      parent = await this.fs.lookup(key, { follow: true });
      const p = await this.fs.readInode(parent);
      if (kindOfMode(p.mode) !== 'dir') throw new NotFoundError(`${path}: parent is not a directory`);
      this.#dirPaths.set(key, parent);
    }
    return { parent, name, nameText };
  }

  async #entries(dir: number): Promise<Map<string, number>> {
    let m = this.#dirs.get(dir);
    if (!m) {
      m = new Map();
      for (const e of await this.fs.readDirInode(await this.fs.readInode(dir))) m.set(e.name, e.ino);
      this.#dirs.set(dir, m);
    }
    return m;
  }

  async #findEntry(dir: number, name: string): Promise<number | undefined> {
    return (await this.#entries(dir)).get(name);
  }

  /** Rewrites an htree directory as a linear one (same entries). */
  async #linearize(dir: Inode): Promise<Inode> {
    const entries = (await this.fs.readDirInode(dir, { includeDots: true })).map((e) => ({ ino: e.ino, name: new TextEncoder().encode(e.name), fileType: e.fileType }));
    const old = await this.#blocksOf(dir);
    this.#roomHint.delete(dir.ino);
    await this.#replaceDirBlocks(dir, entries, old);
    return this.fs.readInode(dir.ino);
  }

  async #replaceDirBlocks(dir: Inode, entries: NewDirEntry[], old: { data: Run[]; tree: number[] }): Promise<void> {
    const bs = this.fs.blockSize;
    const csum = this.fs.metadataCsum ? { seed: this.fs.csumSeed, ino: dir.ino, generation: dir.generation } : undefined;
    const blocks = buildDirBlocks(entries, bs, csum);
    this.#freeBlocks([...old.data.map((r) => [r.physical, r.length] as const), ...old.tree.map((t) => [t, 1] as const)]);
    const runs = this.#allocBlocks(blocks.length, this.#groupGoal(dir.ino));
    let k = 0;
    for (const [s, n] of runs) for (let i = 0; i < n; i++) await this.fs.disk.write(blocks[k++]!, (s + i) * bs);
    const raw = dir.raw.slice();
    const dv = view(raw);
    dv.setUint32(32, (dv.getUint32(32, true) & ~InodeFlags.index) | InodeFlags.extents, true);
    const treeCount = await this.#setExtents(dir.ino, dir.generation, runs, raw);
    setSize(raw, blocks.length * bs);
    setBlocks512(raw, (blocks.length + treeCount) * (bs / 512) + (dir.fileAcl ? bs / 512 : 0));
    await this.#writeInode(dir.ino, raw);
  }

  async #addEntry(dirIno: number, entry: NewDirEntry, time: Timestamp): Promise<void> {
    let dir = await this.fs.readInode(dirIno);
    if (dir.flags & InodeFlags.inlineData) throw new UnsupportedFeatureError('ext4', 'writing', 'changing an inline-data directory');
    if (dir.flags & InodeFlags.index) dir = await this.#linearize(dir);
    const bs = this.fs.blockSize;
    const need = dirEntrySize(entry.name.byteLength);
    const tail = this.fs.metadataCsum ? DIR_TAIL_SIZE : 0;
    const { data, tree } = await this.#blocksOf(dir);
    const nameText = new TextDecoder().decode(entry.name);
    const physicals: number[] = [];
    for (const run of data) for (let i = 0; i < run.length; i++) physicals.push(run.physical + i);
    for (let k = Math.min(this.#roomHint.get(dirIno) ?? 0, physicals.length); k < physicals.length; k++) {
      const phys = physicals[k]!;
      const block = await this.fs.readBlocks(phys, 1);
      const dv = view(block);
      const limit = bs - (hasDirTail(block) ? DIR_TAIL_SIZE : 0);
      for (let at = 0; at < limit; ) {
        const recLen = dv.getUint16(at + 4, true);
        if (recLen < 8) break;
        const ino = dv.getUint32(at, true);
        const used = ino === 0 ? 0 : dirEntrySize(dv.getUint8(at + 6));
        if (recLen - used >= need) {
          if (ino === 0) {
            block.set(encodeDirEntry(entry.ino, entry.name, entry.fileType, recLen), at);
          } else {
            dv.setUint16(at + 4, used, true);
            block.set(encodeDirEntry(entry.ino, entry.name, entry.fileType, recLen - used), at + used);
          }
          await this.#writeDirBlock(dir, block, phys);
          await this.#touch(dir, time);
          this.#roomHint.set(dirIno, k);
          this.#dirs.get(dirIno)?.set(nameText, entry.ino);
          return;
        }
        at += recLen;
      }
    }
    // No room: add a block.
    const block = new Uint8Array(bs);
    block.set(encodeDirEntry(entry.ino, entry.name, entry.fileType, bs - tail), 0);
    const lastRun = data[data.length - 1];
    const goal = lastRun ? lastRun.physical + lastRun.length : this.#groupGoal(dir.ino);
    const [[phys]] = this.#allocBlocks(1, goal) as [[number, number]];
    await this.#writeDirBlock(dir, block, phys);
    const runs: [number, number][] = data.map((r) => [r.physical, r.length]);
    const last = runs[runs.length - 1];
    if (last && last[0] + last[1] === phys) last[1]++;
    else runs.push([phys, 1]);
    this.#freeBlocks(tree.map((t) => [t, 1] as const));
    const raw = dir.raw.slice();
    const treeCount = await this.#setExtents(dir.ino, dir.generation, runs, raw);
    const nBlocks = runs.reduce((a, [, n]) => a + n, 0);
    setSize(raw, nBlocks * bs);
    setBlocks512(raw, (nBlocks + treeCount) * (bs / 512) + (dir.fileAcl ? bs / 512 : 0));
    setTimes(raw, { mtime: time, ctime: time });
    await this.#writeInode(dir.ino, raw);
    this.#roomHint.set(dirIno, physicals.length);
    this.#dirs.get(dirIno)?.set(nameText, entry.ino);
  }

  async #writeDirBlock(dir: Inode, block: Uint8Array, phys: number): Promise<void> {
    if (this.fs.metadataCsum) writeDirTail(this.fs.csumSeed, dir.ino, dir.generation, block);
    await this.fs.disk.write(block, phys * this.fs.blockSize);
  }

  async #touch(dir: Inode, time: Timestamp): Promise<void> {
    const raw = (await this.fs.readInode(dir.ino)).raw.slice();
    setTimes(raw, { mtime: time, ctime: time });
    await this.#writeInode(dir.ino, raw);
  }

  async #removeEntry(dirIno: number, name: string, time: Timestamp): Promise<number> {
    let dir = await this.fs.readInode(dirIno);
    if (dir.flags & InodeFlags.inlineData) throw new UnsupportedFeatureError('ext4', 'writing', 'changing an inline-data directory');
    if (dir.flags & InodeFlags.index) dir = await this.#linearize(dir);
    const { data } = await this.#blocksOf(dir);
    const bs = this.fs.blockSize;
    const hasFt = (this.#sb.featureIncompat & Incompat.filetype) !== 0;
    for (const run of data) {
      for (let i = 0; i < run.length; i++) {
        const phys = run.physical + i;
        const block = await this.fs.readBlocks(phys, 1);
        const dv = view(block);
        const limit = bs - (hasDirTail(block) ? DIR_TAIL_SIZE : 0);
        let prev = -1;
        for (let at = 0; at < limit; ) {
          const recLen = dv.getUint16(at + 4, true);
          if (recLen < 8) break;
          const ino = dv.getUint32(at, true);
          const nameLen = hasFt ? dv.getUint8(at + 6) : dv.getUint16(at + 6, true);
          if (ino !== 0 && new TextDecoder().decode(block.subarray(at + 8, at + 8 + nameLen)) === name) {
            if (prev >= 0) dv.setUint16(prev + 4, dv.getUint16(prev + 4, true) + recLen, true);
            else dv.setUint32(at, 0, true);
            await this.#writeDirBlock(dir, block, phys);
            await this.#touch(dir, time);
            this.#dirs.get(dirIno)?.delete(name);
            return ino;
          }
          prev = at;
          at += recLen;
        }
      }
    }
    throw new NotFoundError(`no entry "${name}" in directory inode ${dirIno}`);
  }

  async #adjustLinks(ino: number, delta: number, time: Timestamp): Promise<void> {
    const raw = (await this.fs.readInode(ino)).raw.slice();
    const dv = view(raw);
    dv.setUint16(26, dv.getUint16(26, true) + delta, true);
    setTimes(raw, { ctime: time });
    await this.#writeInode(ino, raw);
  }

  // ---- public operations --------------------------------------------------------------------

  async #createNode(path: string, mode: number, attrs: NodeAttrs, build: (ino: number, raw: Uint8Array) => Promise<void>): Promise<number> {
    const time = this.#time();
    const { parent, name, nameText } = await this.#resolveParent(path);
    if ((await this.#findEntry(parent, nameText)) !== undefined) throw new AlreadyExistsError(`${path} already exists`);
    const isDir = (mode & 0o170000) === FileType.dir;
    const pg = Math.floor((parent - 1) / this.#sb.inodesPerGroup);
    const ino = this.#allocInode(isDir ? (pg + 1) % this.#groups.length : pg, isDir);
    const raw = encodeInode(
      { mode, uid: attrs.uid ?? 0, gid: attrs.gid ?? 0, linksCount: isDir ? 2 : 1, time, atime: attrs.atime, mtime: attrs.mtime, ctime: attrs.ctime, crtime: time },
      this.#sb.inodeSize,
    );
    await build(ino, raw);
    await this.#writeInode(ino, raw);
    await this.#addEntry(parent, { ino, name, fileType: FT_OF[kindOfMode(mode)] ?? 0 }, time);
    if (isDir) await this.#adjustLinks(parent, 1, time);
    return ino;
  }

  async mkdir(path: string, attrs: NodeAttrs = {}): Promise<number> {
    const ino = await this.#createNode(path, FileType.dir | ((attrs.mode ?? 0o755) & 0o7777), attrs, async (ino, raw) => {
      const { parent } = await this.#resolveParent(path);
      const csum = this.fs.metadataCsum ? { seed: this.fs.csumSeed, ino, generation: 0 } : undefined;
      const blocks = buildDirBlocks(
        [
          { ino, name: Uint8Array.of(46), fileType: DirFileType.dir },
          { ino: parent, name: Uint8Array.of(46, 46), fileType: DirFileType.dir },
        ],
        this.fs.blockSize,
        csum,
      );
      const runs = this.#allocBlocks(1, this.#groupGoal(ino));
      await this.fs.disk.write(blocks[0]!, runs[0]![0] * this.fs.blockSize);
      view(raw).setUint32(32, InodeFlags.extents, true);
      const tree = await this.#setExtents(ino, 0, runs, raw);
      setSize(raw, this.fs.blockSize);
      setBlocks512(raw, (1 + tree) * (this.fs.blockSize / 512));
    });
    this.#dirs.set(ino, new Map());
    return ino;
  }

  /** Creates (or replaces) a regular file with the given contents, streamed. */
  async writeFile(path: string, data: Data, attrs: NodeAttrs = {}): Promise<number> {
    const { parent, nameText } = await this.#resolveParent(path);
    const existing = await this.#findEntry(parent, nameText);
    if (existing !== undefined) {
      const inode = await this.fs.readInode(existing);
      if (kindOfMode(inode.mode) !== 'file') throw new AlreadyExistsError(`${path} exists and is not a regular file`);
      await this.unlink(path);
    }
    return this.#createNode(path, FileType.reg | ((attrs.mode ?? 0o644) & 0o7777), attrs, async (ino, raw) => {
      view(raw).setUint32(32, InodeFlags.extents, true);
      await this.#appendData(ino, 0, raw, data, [], 0);
    });
  }

  /** Appends data to a regular file (grows it). */
  async appendFile(path: string, data: Data): Promise<void> {
    const ino = await this.fs.lookup(path, { follow: true });
    const inode = await this.fs.readInode(ino);
    if (kindOfMode(inode.mode) !== 'file') throw new UsageError(`${path} is not a regular file`);
    if (!(inode.flags & InodeFlags.extents) || inode.flags & InodeFlags.inlineData) throw new UnsupportedFeatureError('ext4', 'appending', 'to a file without extents');
    const { data: old, tree } = await this.#blocksOf(inode);
    if (old.some((r) => r.unwritten)) throw new UnsupportedFeatureError('ext4', 'appending', 'to a file with unwritten extents');
    const bs = this.fs.blockSize;
    const raw = inode.raw.slice();
    // Fill the last partial block first by rewriting it.
    let size = this.fs.sizeOf(inode);
    const runs: [number, number][] = [];
    let expect = 0;
    for (const r of old) {
      if (r.logical !== expect) throw new UnsupportedFeatureError('ext4', 'appending', 'to a sparse file');
      runs.push([r.physical, r.length]);
      expect += r.length;
    }
    this.#freeBlocks(tree.map((t) => [t, 1] as const));
    let carry: Uint8Array = new Uint8Array(0);
    if (size % bs !== 0 && runs.length > 0) {
      const lastBlock = Math.floor(size / bs);
      const phys = physicalOf(runs, lastBlock);
      if (phys !== undefined) {
        carry = (await this.fs.readBlocks(phys, 1)).subarray(0, size % bs);
        // Drop that block from the runs; it is rewritten with the appended bytes.
        dropLastBlock(runs);
        this.#freeBlocks([[phys, 1]]);
        size -= carry.byteLength;
      }
    }
    await this.#appendData(ino, inode.generation, raw, prepend(carry, data), runs, size);
    setTimes(raw, { mtime: this.#time(), ctime: this.#time() });
    await this.#writeInode(ino, raw);
  }

  async #appendData(ino: number, generation: number, raw: Uint8Array, data: Data, runs: [number, number][], startSize: number): Promise<void> {
    const bs = this.fs.blockSize;
    let size = startSize;
    let pending = new Uint8Array(0);
    const flush = async (bytes: Uint8Array, final: boolean) => {
      const whole = final ? Math.ceil(bytes.byteLength / bs) : Math.floor(bytes.byteLength / bs);
      if (whole === 0) return bytes;
      const last = runs[runs.length - 1];
      const goal = last ? last[0] + last[1] : this.#groupGoal(ino);
      const got = this.#allocBlocks(whole, goal);
      let off = 0;
      for (const [s, n] of got) {
        const chunk = bytes.subarray(off * bs, Math.min(bytes.byteLength, (off + n) * bs));
        const padded = chunk.byteLength === n * bs ? chunk : padTo(chunk, n * bs);
        await this.fs.disk.write(padded, s * bs);
        off += n;
        const tail = runs[runs.length - 1];
        if (tail && tail[0] + tail[1] === s) tail[1] += n;
        else runs.push([s, n]);
      }
      return bytes.subarray(Math.min(bytes.byteLength, whole * bs));
    };
    for await (const piece of toIterable(data)) {
      size += piece.byteLength;
      const joined = pending.byteLength === 0 ? piece : concat(pending, piece);
      pending = new Uint8Array(await flush(joined, false));
    }
    if (pending.byteLength > 0) await flush(pending, true);
    const treeCount = await this.#setExtents(ino, generation, runs, raw);
    const nBlocks = runs.reduce((a, [, n]) => a + n, 0);
    setSize(raw, size);
    const acl = view(raw).getUint32(104, true) !== 0 ? bs / 512 : 0;
    setBlocks512(raw, (nBlocks + treeCount) * (bs / 512) + acl);
  }

  async symlink(path: string, target: string, attrs: NodeAttrs = {}): Promise<number> {
    const bytes = new TextEncoder().encode(target);
    if (bytes.byteLength === 0 || bytes.byteLength >= this.fs.blockSize) throw new UsageError(`symlink target must be 1..${this.fs.blockSize - 1} bytes`);
    return this.#createNode(path, FileType.lnk | 0o777, attrs, async (ino, raw) => {
      if (bytes.byteLength < 60) {
        raw.set(bytes, 40);
        setSize(raw, bytes.byteLength);
      } else {
        view(raw).setUint32(32, InodeFlags.extents, true);
        await this.#appendData(ino, 0, raw, bytes, [], 0);
      }
    });
  }

  /** Device nodes, FIFOs and sockets (an overlayfs whiteout is a char device 0:0). */
  async mknod(path: string, kind: 'chardev' | 'blockdev' | 'fifo' | 'socket', dev: { major: number; minor: number } = { major: 0, minor: 0 }, attrs: NodeAttrs = {}): Promise<number> {
    const type = { chardev: FileType.chr, blockdev: FileType.blk, fifo: FileType.fifo, socket: FileType.sock }[kind];
    return this.#createNode(path, type | ((attrs.mode ?? 0o644) & 0o7777), attrs, async (_ino, raw) => {
      const dv = view(raw);
      if (dev.major < 256 && dev.minor < 256) dv.setUint32(40, (dev.major << 8) | dev.minor, true);
      else dv.setUint32(44, ((dev.minor & 0xff) | (dev.major << 8) | ((dev.minor & ~0xff) << 12)) >>> 0, true);
    });
  }

  async link(existing: string, path: string): Promise<void> {
    const time = this.#time();
    const ino = await this.fs.lookup(existing);
    const inode = await this.fs.readInode(ino);
    const kind = kindOfMode(inode.mode);
    if (kind === 'dir') throw new UsageError('hard links to directories are not allowed');
    const { parent, name, nameText } = await this.#resolveParent(path);
    if ((await this.#findEntry(parent, nameText)) !== undefined) throw new AlreadyExistsError(`${path} already exists`);
    await this.#addEntry(parent, { ino, name, fileType: FT_OF[kind] ?? 0 }, time);
    await this.#adjustLinks(ino, 1, time);
  }

  async setAttrs(path: string, attrs: NodeAttrs): Promise<void> {
    const ino = await this.fs.lookup(path);
    const raw = (await this.fs.readInode(ino)).raw.slice();
    const dv = view(raw);
    if (attrs.mode !== undefined) dv.setUint16(0, (dv.getUint16(0, true) & 0o170000) | (attrs.mode & 0o7777), true);
    if (attrs.uid !== undefined) {
      dv.setUint16(2, attrs.uid & 0xffff, true);
      dv.setUint16(120, attrs.uid >>> 16, true);
    }
    if (attrs.gid !== undefined) {
      dv.setUint16(24, attrs.gid & 0xffff, true);
      dv.setUint16(122, attrs.gid >>> 16, true);
    }
    setTimes(raw, { atime: attrs.atime, mtime: attrs.mtime, ctime: attrs.ctime ?? this.#time() });
    await this.#writeInode(ino, raw);
  }

  /** Removes a name; frees the inode and its blocks when it was the last link. Directories must be empty. */
  async unlink(path: string): Promise<void> {
    const time = this.#time();
    const { parent, nameText } = await this.#resolveParent(path);
    const ino = await this.#findEntry(parent, nameText);
    if (ino === undefined) throw new NotFoundError(`${path}: no such file or directory`);
    const inode = await this.fs.readInode(ino);
    const isDir = kindOfMode(inode.mode) === 'dir';
    if (isDir && (await this.#entries(ino)).size > 0) throw new UsageError(`${path}: directory not empty`);
    await this.#removeEntry(parent, nameText, time);
    if (isDir) {
      await this.#adjustLinks(parent, -1, time);
      this.#dirPaths.clear();
      this.#dirs.delete(ino);
      this.#roomHint.delete(ino);
    }
    await this.#dropLink(inode, isDir, time);
  }

  /** One name of `inode` is gone: its link count drops, and at zero it and its blocks are freed. */
  async #dropLink(inode: Inode, isDir: boolean, time: Timestamp): Promise<void> {
    const ino = inode.ino;
    const links = isDir ? 0 : inode.linksCount - 1;
    if (links > 0) {
      await this.#adjustLinks(ino, -1, time);
      return;
    }
    const { data, tree } = await this.#blocksOf(inode);
    this.#freeBlocks([...data.map((r) => [r.physical, r.length] as const), ...tree.map((t) => [t, 1] as const)]);
    if (inode.fileAcl !== 0) await this.#releaseXattrBlock(inode.fileAcl);
    const raw = inode.raw.slice();
    const dv = view(raw);
    dv.setUint16(26, 0, true);
    dv.setUint32(20, time.sec >>> 0, true);
    setTimes(raw, { ctime: time });
    await this.#writeInode(ino, raw);
    this.#freeInode(ino, isDir);
  }

  /**
   * Renames `from` to `to` as POSIX rename(2) does: an existing `to` is replaced (a file by a file,
   * an empty directory by a directory; its inode loses a link and is freed at zero); both names for
   * one inode leave everything as it is; a directory cannot move under itself. `between` runs after
   * `to` names the inode and again after `from` is gone, before the replaced inode is dropped (a
   * caller without a journal makes each step durable there, so a crash leaves both names, never
   * neither). With `finishSameInode`, two names of one inode are not left alone: `from` goes (what a
   * rename cut between its steps needs to finish; the link count drops only while above one, as the
   * cut rename never raised it).
   */
  async rename(from: string, to: string, options: { between?: () => Promise<void>; finishSameInode?: boolean } = {}): Promise<void> {
    const time = this.#time();
    const src = await this.#resolveParent(from);
    const ino = await this.#findEntry(src.parent, src.nameText);
    if (ino === undefined) throw new NotFoundError(`${from}: no such file or directory`);
    const dst = await this.#resolveParent(to);
    const inode = await this.fs.readInode(ino);
    const kind = kindOfMode(inode.mode);
    const isDir = kind === 'dir';
    const existing = await this.#findEntry(dst.parent, dst.nameText);
    if (existing === ino) {
      if (!options.finishSameInode || (src.parent === dst.parent && src.nameText === dst.nameText)) return;
      await this.#removeEntry(src.parent, src.nameText, time);
      if (isDir) {
        if (src.parent !== dst.parent) {
          await this.#setDotDot(ino, dst.parent);
          await this.#adjustLinks(src.parent, -1, time);
          await this.#adjustLinks(dst.parent, 1, time);
        }
        this.#dirPaths.clear();
      } else if (inode.linksCount > 1) {
        await this.#adjustLinks(ino, -1, time);
      }
      return;
    }
    if (isDir) {
      // The new parent may not be the directory itself or inside it.
      let at = dst.parent;
      for (let hops = 0; ; hops++) {
        if (at === ino) throw new UsageError(`cannot move ${from} into itself (${to}) (EINVAL)`);
        if (at === ROOT_INO || hops > this.#sb.inodesCount) break;
        at = await this.#dotDot(at);
      }
    }
    let replaced: Inode | undefined;
    if (existing !== undefined) {
      replaced = await this.fs.readInode(existing);
      const oldDir = kindOfMode(replaced.mode) === 'dir';
      if (oldDir && !isDir) throw new UsageError(`${to}: is a directory (EISDIR)`);
      if (!oldDir && isDir) throw new UsageError(`${to}: not a directory (ENOTDIR)`);
      if (oldDir && (await this.#entries(existing)).size > 0) throw new AlreadyExistsError(`${to}: directory not empty (ENOTEMPTY)`);
      await this.#setEntry(dst.parent, dst.nameText, ino, FT_OF[kind] ?? 0, time);
    } else {
      await this.#addEntry(dst.parent, { ino, name: dst.name, fileType: FT_OF[kind] ?? 0 }, time);
    }
    await options.between?.();
    await this.#removeEntry(src.parent, src.nameText, time);
    if (isDir && src.parent !== dst.parent) {
      await this.#setDotDot(ino, dst.parent);
      await this.#adjustLinks(src.parent, -1, time);
      await this.#adjustLinks(dst.parent, 1, time);
    }
    const raw = (await this.fs.readInode(ino)).raw.slice();
    setTimes(raw, { ctime: time });
    await this.#writeInode(ino, raw);
    if (isDir) this.#dirPaths.clear();
    if (replaced) {
      await options.between?.();
      const oldDir = kindOfMode(replaced.mode) === 'dir';
      if (oldDir) {
        await this.#adjustLinks(dst.parent, -1, time);
        this.#dirs.delete(replaced.ino);
        this.#roomHint.delete(replaced.ino);
      }
      await this.#dropLink(await this.fs.readInode(replaced.ino), oldDir, time);
    }
  }

  /** The inode a directory's ".." names. */
  async #dotDot(dirIno: number): Promise<number> {
    const entries = await this.fs.readDirInode(await this.fs.readInode(dirIno), { includeDots: true });
    const up = entries.find((e) => e.name === '..');
    if (!up) throw new NotFoundError(`directory inode ${dirIno} has no ".." entry`);
    return up.ino;
  }

  /** Points the ".." entry of a directory at `parent` (an htree directory is made linear first). */
  async #setDotDot(dirIno: number, parent: number): Promise<void> {
    let dir = await this.fs.readInode(dirIno);
    if (dir.flags & InodeFlags.inlineData) throw new UnsupportedFeatureError('ext4', 'writing', 'moving an inline-data directory');
    if (dir.flags & InodeFlags.index) dir = await this.#linearize(dir);
    const { data } = await this.#blocksOf(dir);
    const first = data.find((r) => r.logical === 0);
    if (!first) throw new NotFoundError(`directory inode ${dirIno} has no first block`);
    const block = await this.fs.readBlocks(first.physical, 1);
    const dv = view(block);
    const dotLen = dv.getUint16(4, true);
    const nameLen = dv.getUint8(dotLen + 6);
    if (dotLen < 12 || dotLen + 12 > block.byteLength || nameLen !== 2 || block[dotLen + 8] !== 46 || block[dotLen + 9] !== 46) {
      throw new UnsupportedFeatureError('ext4', 'moving a directory', `inode ${dirIno}: ".." is not the second entry of its first block`);
    }
    dv.setUint32(dotLen, parent, true);
    await this.#writeDirBlock(dir, block, first.physical);
  }

  /** Points the entry `name` of a directory at another inode (rename over an existing name). */
  async #setEntry(dirIno: number, name: string, ino: number, fileType: number, time: Timestamp): Promise<void> {
    let dir = await this.fs.readInode(dirIno);
    if (dir.flags & InodeFlags.inlineData) throw new UnsupportedFeatureError('ext4', 'writing', 'changing an inline-data directory');
    if (dir.flags & InodeFlags.index) dir = await this.#linearize(dir);
    const { data } = await this.#blocksOf(dir);
    const bs = this.fs.blockSize;
    const hasFt = (this.#sb.featureIncompat & Incompat.filetype) !== 0;
    for (const run of data) {
      for (let i = 0; i < run.length; i++) {
        const phys = run.physical + i;
        const block = await this.fs.readBlocks(phys, 1);
        const dv = view(block);
        const limit = bs - (hasDirTail(block) ? DIR_TAIL_SIZE : 0);
        for (let at = 0; at < limit; ) {
          const recLen = dv.getUint16(at + 4, true);
          if (recLen < 8) break;
          const nameLen = hasFt ? dv.getUint8(at + 6) : dv.getUint16(at + 6, true);
          if (dv.getUint32(at, true) !== 0 && new TextDecoder().decode(block.subarray(at + 8, at + 8 + nameLen)) === name) {
            dv.setUint32(at, ino, true);
            if (hasFt) dv.setUint8(at + 7, fileType);
            await this.#writeDirBlock(dir, block, phys);
            await this.#touch(dir, time);
            this.#dirs.get(dirIno)?.set(name, ino);
            return;
          }
          at += recLen;
        }
      }
    }
    throw new NotFoundError(`no entry "${name}" in directory inode ${dirIno}`);
  }

  /**
   * Creates a regular file whose blocks the caller allocated (allocateRuns): `layout.extents` as
   * they are (unwritten ones read as zeros), i_size `layout.size`. Returns the inode number.
   */
  async createRegular(path: string, layout: FileLayout, attrs: NodeAttrs = {}): Promise<number> {
    return this.#createNode(path, FileType.reg | ((attrs.mode ?? 0o644) & 0o7777), attrs, async (ino, raw) => {
      view(raw).setUint32(32, InodeFlags.extents, true);
      await this.#layoutInto(ino, 0, raw, layout, 0);
    });
  }

  /**
   * Replaces the block map and size of an extent-mapped regular file (blocks it no longer maps
   * must have been released by the caller, new ones allocated with allocateRuns) and writes a fresh
   * extent tree. With `reuseTree` (a caller whose change is atomic) the old tree blocks are rewritten
   * in place as far as they go, so a growing file's index block stays where it is; otherwise the
   * tree goes to new blocks and the old ones are freed (the inode switches between whole trees).
   * Sets mtime and ctime.
   */
  async setFileLayout(ino: number, layout: FileLayout, options: { reuseTree?: boolean } = {}): Promise<void> {
    const inode = await this.fs.readInode(ino);
    if (kindOfMode(inode.mode) !== 'file' || !(inode.flags & InodeFlags.extents) || inode.flags & InodeFlags.inlineData) {
      throw new UnsupportedFeatureError('ext4', 'changing the blocks of', `inode ${ino}, which is not an extent-mapped regular file`);
    }
    const { tree } = await this.#blocksOf(inode);
    const reuse = options.reuseTree ? tree.slice() : [];
    const raw = inode.raw.slice();
    await this.#layoutInto(ino, inode.generation, raw, layout, inode.fileAcl, reuse);
    const used = new Set(options.reuseTree ? tree.filter((t) => !reuse.includes(t)) : []);
    this.#freeBlocks(tree.filter((t) => !used.has(t)).map((t) => [t, 1] as const));
    const time = this.#time();
    setTimes(raw, { mtime: time, ctime: time });
    await this.#writeInode(ino, raw);
  }

  /** `reuse`: tree blocks to take before allocating (those taken are removed from it). */
  async #layoutInto(ino: number, generation: number, raw: Uint8Array, layout: FileLayout, fileAcl: number, reuse: number[] = []): Promise<void> {
    const bs = this.fs.blockSize;
    const leaves = splitExtents(layout.extents);
    // New tree blocks from the last group on, out of the way of files growing in place (data tends
    // to fill the filesystem from its start).
    const goal = this.fs.layout.groupFirstBlock(this.#groups.length - 1);
    const tree = buildExtentTree(leaves, bs, () => reuse.shift() ?? this.#allocBlocks(1, goal)[0]![0], this.fs.metadataCsum ? { seed: this.fs.csumSeed, ino, generation } : undefined);
    for (const [b, bytes] of tree.treeBlocks) await this.fs.disk.write(bytes, b * bs);
    raw.set(tree.iBlock, 40);
    const dataBlocks = leaves.reduce((a, e) => a + e.length, 0);
    setSize(raw, layout.size);
    setBlocks512(raw, (dataBlocks + tree.treeBlocks.length) * (bs / 512) + (fileAcl !== 0 ? bs / 512 : 0));
  }

  /**
   * Sets (or, with `undefined`, removes: NotFoundError when absent) an extended attribute such as
   * "trusted.overlay.opaque" of the node itself (a symlink's own).
   */
  async setXattr(path: string, name: string, value: Uint8Array | undefined): Promise<void> {
    checkXattrName(name);
    const ino = await this.fs.lookup(path, { follow: false });
    const inode = await this.fs.readInode(ino);
    if (inode.flags & InodeFlags.inlineData) throw new UnsupportedFeatureError('ext4', 'writing', 'xattrs of inline-data inodes');
    const before = await this.fs.xattrs(inode);
    const attrs: Xattr[] = before.filter((a) => a.name !== name);
    if (value === undefined && attrs.length === before.length) throw new NotFoundError(`ext4: ${path}: no extended attribute ${name} (ENODATA)`);
    if (value !== undefined) attrs.push({ name, value });
    const raw = inode.raw.slice();
    const dv = view(raw);
    const bs = this.fs.blockSize;
    const oldBlock = inode.fileAcl;
    let newBlock = 0;
    if (!encodeInodeXattrs(raw, inode.extraIsize, attrs)) {
      encodeInodeXattrs(raw, inode.extraIsize, []);
      const [[blk]] = this.#allocBlocks(1, this.#groupGoal(ino)) as [[number, number]];
      const block = encodeXattrBlock(attrs, bs, blk, this.fs.metadataCsum ? this.fs.csumSeed : undefined);
      if (!block) {
        this.#freeBlocks([[blk, 1]]);
        throw new NoSpaceError(`the extended attributes of ${path} do not fit in one block`);
      }
      await this.fs.disk.write(block, blk * bs);
      newBlock = blk;
    }
    if (oldBlock !== 0) await this.#releaseXattrBlock(oldBlock);
    dv.setUint32(104, newBlock % 2 ** 32, true);
    dv.setUint16(118, Math.floor(newBlock / 2 ** 32), true);
    const blocks = inode.blocks512 - (oldBlock !== 0 ? bs / 512 : 0) + (newBlock !== 0 ? bs / 512 : 0);
    setBlocks512(raw, blocks);
    setTimes(raw, { ctime: this.#time() });
    await this.#writeInode(ino, raw);
  }

  async #releaseXattrBlock(block: number): Promise<void> {
    const bs = this.fs.blockSize;
    const bytes = await this.fs.readBlocks(block, 1);
    const { header } = decodeXattrBlock(bytes, block, block * bs);
    if (header.refcount > 1) {
      view(bytes).setUint32(4, header.refcount - 1, true);
      if (this.fs.metadataCsum) view(bytes).setUint32(16, xattrBlockChecksum(this.fs.csumSeed, block, bytes), true);
      await this.fs.disk.write(bytes, block * bs);
    } else {
      this.#freeBlocks([[block, 1]]);
    }
  }

  /**
   * Writes bitmaps, descriptors and the superblock (with all backups; with `primaryOnly` only the
   * changed bitmaps, the primary descriptor blocks of changed groups and the primary superblock,
   * nothing when nothing changed, and no flush: the caller commits). Deferred frees become
   * allocatable.
   */
  async flush(options: { primaryOnly?: boolean } = {}): Promise<void> {
    const fs = this.fs;
    const sb = fs.sb;
    const bs = fs.blockSize;
    const layout = fs.layout;
    const csums = hasGroupChecksums(sb);
    for (const [s, n] of this.#pendingFrees) this.#alloc.unmark(s, n);
    this.#pendingFrees = [];
    this.#pendingFreeCount = 0;
    const changed = [...this.#dirtyGroups].sort((a, b) => a - b);
    for (const g of changed) {
      const gd = this.#groups[g]!;
      const first = layout.groupFirstBlock(g);
      const count = layout.groupBlocks(g);
      const bitmap = new Uint8Array(bs);
      for (let i = 0; i < bs * 8; i++) if (i >= count || this.#alloc.isUsed(first + i)) bitmap[i >>> 3]! |= 1 << (i & 7);
      const ibitmap = this.#inodeBitmaps[g]!;
      for (let i = sb.inodesPerGroup; i < bs * 8; i++) ibitmap[i >>> 3]! |= 1 << (i & 7);
      await fs.disk.write(bitmap, gd.blockBitmap * bs);
      await fs.disk.write(ibitmap, gd.inodeBitmap * bs);
      let updated: GroupDesc = { ...gd };
      if (fs.metadataCsum) {
        const wide = sb.descSize >= 64;
        const bc = crc32cUpdate(fs.csumSeed, bitmap, 0, sb.clustersPerGroup / 8);
        const ic = crc32cUpdate(fs.csumSeed, ibitmap, 0, sb.inodesPerGroup / 8);
        updated = { ...updated, blockBitmapCsum: wide ? bc : bc & 0xffff, inodeBitmapCsum: wide ? ic : ic & 0xffff };
      }
      if (!csums) updated = { ...updated, flags: 0, itableUnused: 0 };
      this.#groups[g] = updated;
    }
    this.#dirtyGroups.clear();
    const freeBlocks = this.#groups.reduce((a, g) => a + g.freeBlocks, 0);
    const freeInodes = this.#groups.reduce((a, g) => a + g.freeInodes, 0);
    const newSb = { ...sb, ...this.#sbPatch, freeBlocksCount: freeBlocks, freeInodesCount: freeInodes };
    if (options.primaryOnly) {
      // The caller's commit flushes.
      if (changed.length === 0 && !this.#sbDirty) return;
      await writePrimarySuperblockAndDescriptors(fs.disk, newSb, this.#groups, fs.csumSeed, changed);
      this.#sbDirty = false;
      return;
    } else {
      await writeSuperblocksAndDescriptors(fs.disk, newSb, this.#groups, fs.csumSeed);
    }
    this.#sbDirty = false;
    await fs.disk.flush();
  }

  async close(): Promise<void> {
    await this.flush();
  }
}

/** Merges touching extents of the same kind and splits them at the on-disk length limits (32768 written, 32767 unwritten). */
export function splitExtents(extents: readonly ExtentLeaf[]): ExtentLeaf[] {
  const merged: { logical: number; physical: number; length: number; unwritten: boolean }[] = [];
  for (const e of extents) {
    if (e.length === 0) continue;
    const last = merged[merged.length - 1];
    if (last && last.unwritten === e.unwritten && last.logical + last.length === e.logical && last.physical + last.length === e.physical) last.length += e.length;
    else merged.push({ ...e });
  }
  const out: ExtentLeaf[] = [];
  for (const e of merged) {
    const max = e.unwritten ? MAX_EXTENT_LEN - 1 : MAX_EXTENT_LEN;
    for (let done = 0; done < e.length; done += max) out.push({ logical: e.logical + done, physical: e.physical + done, length: Math.min(max, e.length - done), unwritten: e.unwritten });
  }
  return out;
}

function setSize(raw: Uint8Array, size: number): void {
  const dv = view(raw);
  dv.setUint32(4, size % 2 ** 32, true);
  dv.setUint32(108, Math.floor(size / 2 ** 32), true);
}

function setBlocks512(raw: Uint8Array, blocks: number): void {
  const dv = view(raw);
  dv.setUint32(28, blocks % 2 ** 32, true);
  dv.setUint16(116, Math.floor(blocks / 2 ** 32), true);
  dv.setUint32(32, dv.getUint32(32, true) & ~InodeFlags.hugeFile, true);
}

function setTimes(raw: Uint8Array, t: { atime?: Timestamp; mtime?: Timestamp; ctime?: Timestamp }): void {
  const dv = view(raw);
  const large = raw.byteLength > 128 && dv.getUint16(128, true) >= 16;
  const put = (at: number, extraAt: number, ts: Timestamp | undefined) => {
    if (!ts) return;
    const epoch = Math.floor((ts.sec + 2 ** 31) / 2 ** 32);
    dv.setInt32(at, ts.sec - epoch * 2 ** 32, true);
    if (large) dv.setUint32(extraAt, ((ts.nsec << 2) | (epoch & 3)) >>> 0, true);
  };
  put(8, 140, t.atime);
  put(12, 132, t.ctime);
  put(16, 136, t.mtime);
}

function physicalOf(runs: [number, number][], logical: number): number | undefined {
  let l = 0;
  for (const [s, n] of runs) {
    if (logical < l + n) return s + (logical - l);
    l += n;
  }
  return undefined;
}

function dropLastBlock(runs: [number, number][]): void {
  const last = runs[runs.length - 1];
  if (!last) return;
  if (last[1] === 1) runs.pop();
  else last[1]--;
}

function padTo(bytes: Uint8Array, n: number): Uint8Array {
  const out = new Uint8Array(n);
  out.set(bytes);
  return out;
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.byteLength + b.byteLength);
  out.set(a);
  out.set(b, a.byteLength);
  return out;
}

async function* toIterable(data: Data): AsyncGenerator<Uint8Array> {
  if (data instanceof Uint8Array) {
    for (let at = 0; at < data.byteLength; at += 1 << 20) yield data.subarray(at, Math.min(data.byteLength, at + (1 << 20)));
    return;
  }
  for await (const piece of data as AsyncIterable<Uint8Array>) yield piece;
}

async function* prepend(first: Uint8Array, rest: Data): AsyncGenerator<Uint8Array> {
  if (first.byteLength > 0) yield first.slice();
  yield* toIterable(rest);
}

export { ROOT_INO };
