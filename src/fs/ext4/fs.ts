/**
 * Ext4: read access to an ext2/3/4 filesystem on any Disk.
 *
 * Design notes
 * - Nothing is read eagerly except the superblock and the group descriptor table; inodes, extent
 *   trees and directory blocks are read on demand through the Disk, so the image never has to fit
 *   in memory. Files stream in pieces (`stream`), coalescing physically contiguous runs into one read.
 * - Every inode's blocks go through one walker (`walkBlocks`) that reports data runs and tree blocks
 *   (extent index/leaf blocks, indirect blocks) to a visitor; the path reader and the block map
 *   (blockmap.ts) both use it, so they agree on what a file owns.
 * - Bounds: every block number is checked against the filesystem; an extent child must be exactly one
 *   level shallower (so trees cannot loop); the number of tree blocks read per inode is capped by what
 *   i_blocks accounts for; directory walks are bounded and symlinks in paths are followed at most 40
 *   times. Corrupt input gives CorruptImageError, unknown incompat features UnsupportedFeatureError.
 * - Checksums (metadata_csum, or gdt_csum for descriptors) are verified as structures are read;
 *   mismatches are collected in `checksumErrors` (or thrown with `strict`), since a caller inspecting a
 *   damaged stick still wants to see what is there.
 * - Directories are scanned linearly: htree interior blocks look like empty entries, so no hashing
 *   is needed on the read side.
 */
import { CorruptImageError, NotFoundError, UnsupportedFeatureError, UsageError } from '../../errors.ts';
import type { Disk } from '../../io/disk.ts';
import { formatSize, isAllZero, view } from '../../io/bytes.ts';
import { crc32cU32, crc32cUpdate } from './crc.ts';
import { type DirEntry, decodeDirBlock, dirLeafChecksum, dxCountOffset, dxNodeChecksum, hasDirTail } from './dir.ts';
import { decodeExtentNode } from './extent.ts';
import { BgFlags, type GroupDesc, decodeGroupDesc, groupDescChecksum, hasGroupChecksums } from './group.ts';
import { type Inode, InodeFlags, type Kind, type Timestamp, decodeInode, deviceNumber, inodeChecksum, kindOfMode, storedInodeChecksum } from './inode.ts';
import { Compat, FORMAT, Incompat, RoCompat, SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE, type Superblock, decodeSuperblock, groupCount, maxFileSize, superblockChecksum } from './superblock.ts';
import { type Xattr, decodeInodeXattrs, decodeXattrBlock, xattrBlockChecksum } from './xattr.ts';

export const ROOT_INO = 2;
const MAX_SYMLINK_FOLLOWS = 40;
const MAX_CHECKSUM_ERRORS = 1000;

export interface ChecksumError {
  readonly structure: string;
  readonly offset: number;
  readonly stored: number;
  readonly computed: number;
}

export interface OpenOptions {
  /** Throw CorruptImageError on the first checksum mismatch instead of collecting it. */
  strict?: boolean;
  /** Skip checksum verification entirely (faster; for trusted images). */
  skipChecksums?: boolean;
}

export interface Stat {
  readonly ino: number;
  readonly kind: Kind;
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  readonly size: number;
  readonly nlink: number;
  readonly atime: Timestamp;
  readonly mtime: Timestamp;
  readonly ctime: Timestamp;
  readonly crtime: Timestamp | undefined;
  readonly blocks512: number;
  readonly flags: number;
  readonly generation: number;
  readonly rdev: { major: number; minor: number } | undefined;
}

export interface DirListing {
  readonly name: string;
  readonly ino: number;
  readonly fileType: number;
}

/** A contiguous run of file data: logical block, physical block, length in blocks. */
export interface Run {
  logical: number;
  physical: number;
  length: number;
  unwritten: boolean;
}

export type TreeBlockKind = 'extent' | 'indirect';

export interface BlockVisitor {
  data(logical: number, physical: number, length: number, unwritten: boolean): void;
  tree(physical: number, kind: TreeBlockKind): void;
}

export interface JournalInfo {
  readonly inode: number;
  /** Physical extents of the journal: [start block, length]. */
  readonly extents: readonly (readonly [number, number])[];
  readonly blocks: number;
  readonly sequence: number;
  /** s_start of the journal superblock: non-zero means transactions wait to be replayed. */
  readonly start: number;
}

export interface FsState {
  readonly clean: boolean;
  readonly needsRecovery: boolean;
  readonly hasErrors: boolean;
  readonly orphansPending: boolean;
  readonly journal: JournalInfo | undefined;
}

export class Ext4 {
  readonly disk: Disk;
  readonly sb: Superblock;
  readonly blockSize: number;
  readonly groupCount: number;
  readonly groups: readonly GroupDesc[];
  /** crc32c seed for metadata checksums. */
  readonly csumSeed: number;
  readonly metadataCsum: boolean;
  readonly checksumErrors: ChecksumError[] = [];
  checksumErrorCount = 0;
  readonly #strict: boolean;
  readonly #verify: boolean;
  readonly #reported = new Set<string>();
  /** Bumped by every write through `disk`: decoded listings are valid only for the generation they were read in. */
  #generation = 0;
  readonly #listings = new Map<number, { generation: number; shape: string; entries: DirListing[]; dots: boolean }>();
  #listedEntries = 0;

  private constructor(disk: Disk, sb: Superblock, groups: GroupDesc[], csumSeed: number, options: OpenOptions) {
    // Every metadata write goes through this.disk (the writer uses it too), so counting its writes
    // tells the listing cache when anything may have changed.
    this.disk = new Proxy(disk, {
      get: (target, key) => {
        if (key === 'write') {
          return (buf: Uint8Array, offset: number) => {
            this.#generation++;
            return target.write(buf, offset);
          };
        }
        const value: unknown = Reflect.get(target, key, target);
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });
    this.sb = sb;
    this.blockSize = sb.blockSize;
    this.groupCount = groups.length;
    this.groups = groups;
    this.csumSeed = csumSeed;
    this.metadataCsum = (sb.featureRoCompat & RoCompat.metadataCsum) !== 0;
    this.#strict = options.strict ?? false;
    this.#verify = !(options.skipChecksums ?? false);
  }

  static async open(disk: Disk, options: OpenOptions = {}): Promise<Ext4> {
    if (disk.size < SUPERBLOCK_OFFSET + SUPERBLOCK_SIZE) throw new CorruptImageError(FORMAT, 'superblock', `device of ${disk.size} bytes is too small`, 0);
    const sbBytes = new Uint8Array(SUPERBLOCK_SIZE);
    await disk.read(sbBytes, SUPERBLOCK_OFFSET);
    const sb = decodeSuperblock(sbBytes, disk.size);
    const metadataCsum = (sb.featureRoCompat & RoCompat.metadataCsum) !== 0;
    const csumSeed = sb.featureIncompat & Incompat.csumSeed ? sb.checksumSeedField : crc32cUpdate(0xffffffff, sb.uuid);
    const count = groupCount(sb);
    const pending: ChecksumError[] = [];
    const check = (structure: string, offset: number, stored: number, computed: number) => {
      if (stored !== computed) {
        if (options.strict) throw new CorruptImageError(FORMAT, `${structure}.checksum`, `stored 0x${stored.toString(16)}, computed 0x${computed.toString(16)}`, offset);
        pending.push({ structure, offset, stored, computed });
      }
    };
    if (metadataCsum && !options.skipChecksums) check('superblock', SUPERBLOCK_OFFSET + 1020, sb.checksum, superblockChecksum(sb.raw));
    const bs = sb.blockSize;
    const perBlock = bs / sb.descSize;
    const descBlocks = Math.ceil(count / perBlock);
    const layout = new Layout(sb);
    const groups: GroupDesc[] = [];
    const itableBlocks = Math.ceil((sb.inodesPerGroup * sb.inodeSize) / bs);
    for (let d = 0; d < descBlocks; d++) {
      const blk = layout.descriptorBlock(d);
      if (blk >= sb.blocksCount) throw new CorruptImageError(FORMAT, 'group descriptor table', `block ${blk} is past the end`, blk * bs);
      const block = new Uint8Array(bs);
      await disk.read(block, blk * bs);
      for (let i = 0; i < perBlock && d * perBlock + i < count; i++) {
        const g = d * perBlock + i;
        const bytes = block.subarray(i * sb.descSize, (i + 1) * sb.descSize);
        const offset = blk * bs + i * sb.descSize;
        const gd = decodeGroupDesc(bytes, sb.descSize, g, offset);
        for (const [field, value, len] of [['bg_block_bitmap', gd.blockBitmap, 1], ['bg_inode_bitmap', gd.inodeBitmap, 1], ['bg_inode_table', gd.inodeTable, itableBlocks]] as const) {
          if (value < sb.firstDataBlock || value === 0 || value + len > sb.blocksCount) {
            throw new CorruptImageError(FORMAT, `group[${g}].${field}`, `block ${value} is outside the filesystem`, offset);
          }
        }
        if (gd.itableUnused > sb.inodesPerGroup) throw new CorruptImageError(FORMAT, `group[${g}].bg_itable_unused`, `${gd.itableUnused}`, offset + 28);
        if (!options.skipChecksums) {
          const computed = groupDescChecksum(sb, csumSeed, g, bytes);
          if (computed !== undefined) check(`group[${g}]`, offset + 30, gd.checksum, computed);
        }
        groups.push(gd);
      }
    }
    const fs = new Ext4(disk, sb, groups, csumSeed, options);
    fs.checksumErrors.push(...pending);
    fs.checksumErrorCount = pending.length;
    return fs;
  }

  get layout(): Layout {
    return new Layout(this.sb);
  }

  /** Records (or throws, when strict) a checksum mismatch. */
  reportChecksum(structure: string, offset: number, stored: number, computed: number): void {
    if (stored === computed) return;
    if (this.#strict) throw new CorruptImageError(FORMAT, `${structure}.checksum`, `stored 0x${stored.toString(16)}, computed 0x${computed.toString(16)}`, offset);
    const key = `${structure}@${offset}`;
    if (this.#reported.has(key)) return;
    if (this.#reported.size < 100_000) this.#reported.add(key);
    this.checksumErrorCount++;
    if (this.checksumErrors.length < MAX_CHECKSUM_ERRORS) this.checksumErrors.push({ structure, offset, stored, computed });
  }

  get verifyChecksums(): boolean {
    return this.#verify;
  }

  /** True when the group's descriptor checksum is valid, so its UNINIT flags may be trusted. */
  groupChecksumValid(g: number, raw?: Uint8Array): boolean {
    if (!hasGroupChecksums(this.sb)) return false;
    void raw;
    return !this.checksumErrors.some((e) => e.structure === `group[${g}]`);
  }

  async readBlocks(block: number, count: number): Promise<Uint8Array> {
    this.checkBlockRange(block, count, 'block');
    const buf = new Uint8Array(count * this.blockSize);
    await this.disk.read(buf, block * this.blockSize);
    return buf;
  }

  checkBlockRange(block: number, count: number, what: string, offset?: number): void {
    if (!Number.isSafeInteger(block) || block < this.sb.firstDataBlock || block === 0 || count < 0 || block + count > this.sb.blocksCount) {
      throw new CorruptImageError(FORMAT, what, `blocks ${block}..${block + count - 1} are outside the filesystem (${this.sb.blocksCount} blocks)`, offset);
    }
  }

  inodeLocation(ino: number): number {
    if (!Number.isInteger(ino) || ino < 1 || ino > this.sb.inodesCount) throw new CorruptImageError(FORMAT, 'inode number', `${ino} is outside 1..${this.sb.inodesCount}`);
    const g = Math.floor((ino - 1) / this.sb.inodesPerGroup);
    const idx = (ino - 1) % this.sb.inodesPerGroup;
    return this.groups[g]!.inodeTable * this.blockSize + idx * this.sb.inodeSize;
  }

  async readInode(ino: number): Promise<Inode> {
    const offset = this.inodeLocation(ino);
    const raw = new Uint8Array(this.sb.inodeSize);
    await this.disk.read(raw, offset);
    return this.decodeInodeAt(raw, ino, offset);
  }

  decodeInodeAt(raw: Uint8Array, ino: number, offset: number, copy = true): Inode {
    if (this.metadataCsum && this.#verify && !isAllZero(raw)) {
      this.reportChecksum(`inode[${ino}]`, offset + 124, storedInodeChecksum(raw), inodeChecksum(this.csumSeed, ino, raw).value);
    }
    return decodeInode(raw, ino, this.blockSize, (this.sb.featureRoCompat & RoCompat.hugeFile) !== 0, offset, copy);
  }

  /** ext2fs_inode_has_valid_blocks2: whether i_block holds block pointers / an extent tree. */
  hasBlockMap(inode: Inode): boolean {
    const kind = kindOfMode(inode.mode);
    if (kind !== 'file' && kind !== 'dir' && kind !== 'symlink') return false;
    if (inode.flags & InodeFlags.inlineData) return false;
    if (kind === 'symlink') {
      if (inode.fileAcl === 0) {
        if (inode.blocks512 === 0) return false;
      } else {
        if (inode.size >= 60) return true;
        if (inode.size > 4 && view(inode.iBlock).getUint32(4, true) === 0) return true;
        return false;
      }
    }
    return true;
  }

  /** i_size, refused when it is beyond what the filesystem can address (a corrupt size_high, say). */
  sizeOf(inode: Inode): number {
    const limit = maxFileSize(this.sb, (inode.flags & InodeFlags.extents) !== 0);
    if (!(inode.size <= limit)) {
      throw new CorruptImageError(FORMAT, `inode[${inode.ino}].i_size`, `${inode.size} bytes (${formatSize(inode.size)}) is beyond the filesystem's maximum file size (${formatSize(limit)})`, this.inodeLocation(inode.ino) + 4);
    }
    return inode.size;
  }

  /** Upper bound on tree blocks an inode may own (its i_blocks, in fs blocks, plus slack). */
  #treeBudget(inode: Inode): number {
    return Math.min(this.sb.blocksCount, Math.ceil((inode.blocks512 * 512) / this.blockSize) + 4);
  }

  /** Reports every data run and tree block of an inode (nothing for inline/fast-symlink/device inodes). */
  async walkBlocks(inode: Inode, visitor: BlockVisitor): Promise<void> {
    if (!this.hasBlockMap(inode)) return;
    const budget = { left: this.#treeBudget(inode) };
    if (inode.flags & InodeFlags.extents) {
      const root = decodeExtentNode(inode.iBlock, `inode[${inode.ino}].extent_root`, this.inodeLocation(inode.ino) + 40);
      await this.#walkExtentNode(inode, root, visitor, budget, 0);
    } else {
      await this.#walkIndirect(inode, visitor, budget);
    }
  }

  async #walkExtentNode(inode: Inode, node: ReturnType<typeof decodeExtentNode>, visitor: BlockVisitor, budget: { left: number }, level: number): Promise<void> {
    const where = `inode[${inode.ino}].extent`;
    if (node.header.depth === 0) {
      for (const leaf of node.leaves) {
        this.checkBlockRange(leaf.physical, leaf.length, `${where}.ee_start`);
        visitor.data(leaf.logical, leaf.physical, leaf.length, leaf.unwritten);
      }
      return;
    }
    for (const idx of node.indexes) {
      this.checkBlockRange(idx.child, 1, `${where}.ei_leaf`);
      if (--budget.left < 0) throw new CorruptImageError(FORMAT, `${where}`, 'the extent tree has more blocks than i_blocks accounts for');
      visitor.tree(idx.child, 'extent');
      const offset = idx.child * this.blockSize;
      const block = new Uint8Array(this.blockSize);
      await this.disk.read(block, offset);
      const child = decodeExtentNode(block, `${where}[block ${idx.child}]`, offset);
      if (child.header.depth !== node.header.depth - 1) {
        throw new CorruptImageError(FORMAT, `${where}[block ${idx.child}].eh_depth`, `${child.header.depth} under a node of depth ${node.header.depth}`, offset + 6);
      }
      if (this.metadataCsum && this.#verify) {
        const tailAt = 12 + child.header.max * 12;
        if (tailAt + 4 <= this.blockSize) {
          let crc = crc32cU32(this.csumSeed, inode.ino);
          crc = crc32cU32(crc, inode.generation);
          crc = crc32cUpdate(crc, block, 0, tailAt);
          this.reportChecksum(`${where}[block ${idx.child}]`, offset + tailAt, view(block).getUint32(tailAt, true), crc);
        }
      }
      await this.#walkExtentNode(inode, child, visitor, budget, level + 1);
    }
  }

  async #walkIndirect(inode: Inode, visitor: BlockVisitor, budget: { left: number }): Promise<void> {
    const iv = view(inode.iBlock);
    const per = this.blockSize / 4;
    let run: Run | undefined;
    const emit = (logical: number, physical: number) => {
      if (run && run.logical + run.length === logical && run.physical + run.length === physical) {
        run.length++;
        return;
      }
      if (run) visitor.data(run.logical, run.physical, run.length, false);
      run = { logical, physical, length: 1, unwritten: false };
    };
    const where = `inode[${inode.ino}].i_block`;
    for (let i = 0; i < 12; i++) {
      const p = iv.getUint32(i * 4, true);
      if (p !== 0) {
        this.checkBlockRange(p, 1, where);
        emit(i, p);
      }
    }
    const walk = async (block: number, level: number, firstLogical: number): Promise<void> => {
      this.checkBlockRange(block, 1, `${where}.indirect`);
      if (--budget.left < 0) throw new CorruptImageError(FORMAT, where, 'more indirect blocks than i_blocks accounts for');
      visitor.tree(block, 'indirect');
      const buf = new Uint8Array(this.blockSize);
      await this.disk.read(buf, block * this.blockSize);
      const dv = view(buf);
      const span = per ** (level - 1);
      for (let i = 0; i < per; i++) {
        const p = dv.getUint32(i * 4, true);
        if (p === 0) continue;
        const logical = firstLogical + i * span;
        if (level === 1) {
          this.checkBlockRange(p, 1, `${where}.indirect[${block}]`);
          emit(logical, p);
        } else await walk(p, level - 1, logical);
      }
    };
    const roots = [iv.getUint32(48, true), iv.getUint32(52, true), iv.getUint32(56, true)];
    let first = 12;
    for (let level = 1; level <= 3; level++) {
      const r = roots[level - 1]!;
      if (r !== 0) await walk(r, level, first);
      first += per ** level;
    }
    if (run) visitor.data(run.logical, run.physical, run.length, false);
  }

  /** The data runs of an inode, sorted by logical block. */
  async runs(inode: Inode): Promise<Run[]> {
    const out: Run[] = [];
    await this.walkBlocks(inode, {
      data: (logical, physical, length, unwritten) => out.push({ logical, physical, length, unwritten }),
      tree: () => {},
    });
    out.sort((a, b) => a.logical - b.logical);
    return out;
  }

  /** Extended attributes (in-inode first, then the EA block), names with their prefixes. */
  async xattrs(inode: Inode): Promise<Xattr[]> {
    const out = decodeInodeXattrs(inode.raw, inode.extraIsize, inode.ino, this.inodeLocation(inode.ino));
    if (inode.fileAcl !== 0) {
      this.checkBlockRange(inode.fileAcl, 1, `inode[${inode.ino}].i_file_acl`);
      const offset = inode.fileAcl * this.blockSize;
      const block = new Uint8Array(this.blockSize);
      await this.disk.read(block, offset);
      const { header, attrs } = decodeXattrBlock(block, inode.fileAcl, offset);
      if (this.metadataCsum && this.#verify) this.reportChecksum(`xattr_block[${inode.fileAcl}]`, offset + 16, header.checksum, xattrBlockChecksum(this.csumSeed, inode.fileAcl, block));
      out.push(...attrs);
    }
    return out;
  }

  async #inlineData(inode: Inode): Promise<Uint8Array> {
    const attrs = decodeInodeXattrs(inode.raw, inode.extraIsize, inode.ino, this.inodeLocation(inode.ino));
    const extra = attrs.find((a) => a.name === 'system.data')?.value ?? new Uint8Array(0);
    const all = new Uint8Array(60 + extra.byteLength);
    all.set(inode.iBlock);
    all.set(extra, 60);
    return all;
  }

  /**
   * Streams an inode's contents in pieces of at most `pieceSize` bytes (holes and unwritten extents
   * read as zeros). With `reuse`, every piece is a view of one buffer that is only valid until the
   * next piece is asked for — several times faster for large files (no fresh memory per piece).
   */
  async *streamInode(inode: Inode, pieceSize = 1 << 20, options: { reuse?: boolean } = {}): AsyncGenerator<Uint8Array> {
    const size = this.sizeOf(inode);
    if (inode.flags & InodeFlags.inlineData) {
      const data = await this.#inlineData(inode);
      if (size > data.byteLength) throw new CorruptImageError(FORMAT, `inode[${inode.ino}].i_size`, `${size} bytes but only ${data.byteLength} inline`);
      if (size > 0) yield data.slice(0, size);
      return;
    }
    if (!this.hasBlockMap(inode)) {
      if (kindOfMode(inode.mode) === 'symlink') {
        if (size > 60) throw new CorruptImageError(FORMAT, `inode[${inode.ino}].i_size`, `fast symlink of ${size} bytes`);
        yield inode.iBlock.slice(0, size);
      }
      return;
    }
    const bs = this.blockSize;
    const piece = Math.max(bs, Math.floor(pieceSize / bs) * bs);
    const runs = await this.runs(inode);
    let r = 0;
    const shared = options.reuse ? new Uint8Array(Math.min(piece, size)) : undefined;
    for (let pos = 0; pos < size; pos += piece) {
      const len = Math.min(piece, size - pos);
      const buf = shared ? shared.subarray(0, len) : new Uint8Array(len);
      let filled = 0;
      const firstBlock = pos / bs;
      const endBlock = Math.ceil((pos + len) / bs);
      while (r < runs.length && runs[r]!.logical + runs[r]!.length <= firstBlock) r++;
      for (let k = r; k < runs.length && runs[k]!.logical < endBlock; k++) {
        const run = runs[k]!;
        if (run.unwritten) continue;
        const from = Math.max(run.logical, firstBlock);
        const to = Math.min(run.logical + run.length, endBlock);
        const dst = (from - firstBlock) * bs;
        const bytes = Math.min((to - from) * bs, len - dst);
        if (shared && dst > filled) buf.fill(0, filled, dst);
        await this.disk.read(buf.subarray(dst, dst + bytes), (run.physical + (from - run.logical)) * bs);
        filled = dst + bytes;
      }
      if (shared && filled < len) buf.fill(0, filled, len);
      yield buf;
    }
  }

  async readInodeData(inode: Inode, maxSize = 1 << 30): Promise<Uint8Array> {
    const size = this.sizeOf(inode);
    if (size > maxSize) throw new UnsupportedFeatureError(FORMAT, 'large read', `inode ${inode.ino} has ${size} bytes (limit ${maxSize}); stream it instead`);
    const out = new Uint8Array(size);
    let at = 0;
    for await (const piece of this.streamInode(inode, 1 << 20, { reuse: true })) {
      out.set(piece, at);
      at += piece.byteLength;
    }
    return out;
  }

  /**
   * Entries of a directory inode in on-disk order, without "." and ".." unless asked. Listings are kept (bounded, about 64k entries) until the next write, so a
   * walk that looks up every path of a large tree decodes and checksums each directory once.
   */
  async readDirInode(inode: Inode, options: { includeDots?: boolean } = {}): Promise<DirListing[]> {
    const dots = options.includeDots === true;
    // The inode as given (the writer may hold one it has not written yet) must be the one listed.
    const shape = `${inode.size}:${inode.flags}:${inode.generation}:${Buffer.from(inode.iBlock).toString('latin1')}`;
    const known = this.#listings.get(inode.ino);
    if (known !== undefined && known.generation === this.#generation && known.dots === dots && known.shape === shape) {
      this.#listings.delete(inode.ino);
      this.#listings.set(inode.ino, known);
      return known.entries.slice();
    }
    const generation = this.#generation;
    const entries = await this.#decodeDirInode(inode, options);
    if (generation === this.#generation) {
      if (known !== undefined) {
        this.#listings.delete(inode.ino);
        this.#listedEntries -= known.entries.length;
      }
      this.#listings.set(inode.ino, { generation, shape, entries, dots });
      this.#listedEntries += entries.length;
      while (this.#listedEntries > 1 << 16 && this.#listings.size > 1) {
        const [oldest, old] = this.#listings.entries().next().value as [number, { entries: DirListing[] }];
        this.#listings.delete(oldest);
        this.#listedEntries -= old.entries.length;
      }
    }
    return entries.slice();
  }

  async #decodeDirInode(inode: Inode, options: { includeDots?: boolean }): Promise<DirListing[]> {
    if (kindOfMode(inode.mode) !== 'dir') throw new NotFoundError(`inode ${inode.ino} is not a directory`);
    const hasFt = (this.sb.featureIncompat & Incompat.filetype) !== 0;
    const entries: DirEntry[] = [];
    const where = `dir[${inode.ino}]`;
    if (inode.flags & InodeFlags.inlineData) {
      const data = await this.#inlineData(inode);
      const parent = view(data).getUint32(0, true);
      if (options.includeDots) entries.push({ inode: inode.ino, name: '.', nameBytes: Uint8Array.of(46), fileType: 2 }, { inode: parent, name: '..', nameBytes: Uint8Array.of(46, 46), fileType: 2 });
      decodeDirBlock(data.subarray(4, 60), hasFt, where, 0, entries);
      if (data.byteLength > 60) decodeDirBlock(data.subarray(60), hasFt, where, 0, entries);
    } else {
      const bs = this.blockSize;
      const nBlocks = Math.ceil(this.sizeOf(inode) / bs);
      const runs = await this.runs(inode);
      const isIndexed = (inode.flags & InodeFlags.index) !== 0;
      for (const run of runs) {
        if (run.unwritten) continue;
        const end = Math.min(run.logical + run.length, nBlocks);
        for (let lb = run.logical; lb < end; lb += 256) {
          const n = Math.min(256, end - lb);
          const phys = run.physical + (lb - run.logical);
          const buf = await this.readBlocks(phys, n);
          for (let i = 0; i < n; i++) {
            const block = buf.subarray(i * bs, (i + 1) * bs);
            const offset = (phys + i) * bs;
            const logical = lb + i;
            this.verifyDirBlock(inode, block, logical, offset, isIndexed);
            decodeDirBlock(block, hasFt, `${where}[block ${logical}]`, offset, entries);
          }
        }
      }
    }
    const out: DirListing[] = [];
    for (const e of entries) {
      if (!options.includeDots && (e.name === '.' || e.name === '..')) continue;
      if (e.inode > this.sb.inodesCount) throw new CorruptImageError(FORMAT, `${where}.entry "${e.name}"`, `inode ${e.inode} does not exist`);
      out.push({ name: e.name, ino: e.inode, fileType: e.fileType });
    }
    return out;
  }

  verifyDirBlock(inode: Pick<Inode, 'ino' | 'generation'>, block: Uint8Array, logical: number, offset: number, isIndexed: boolean): void {
    if (!this.metadataCsum || !this.#verify) return;
    if (hasDirTail(block)) {
      const t = block.byteLength - 12;
      this.reportChecksum(`dir[${inode.ino}][block ${logical}]`, offset + t + 8, view(block).getUint32(t + 8, true), dirLeafChecksum(this.csumSeed, inode.ino, inode.generation, block));
      return;
    }
    if (isIndexed) {
      const co = dxCountOffset(block, logical === 0);
      if (co === undefined) return;
      const r = dxNodeChecksum(this.csumSeed, inode.ino, inode.generation, block, co);
      if (r) this.reportChecksum(`dir[${inode.ino}][dx block ${logical}]`, offset, r[0], r[1]);
    }
  }

  /** Resolves a path to an inode number; symlinks in the middle are followed, the last one only with `follow`. */
  async lookup(path: string, options: { follow?: boolean } = {}): Promise<number> {
    let follows = 0;
    const resolve = async (start: number, parts: string[]): Promise<number> => {
      let ino = start;
      const stack: number[] = [];
      for (let i = 0; i < parts.length; i++) {
        const part = parts[i]!;
        if (part === '' || part === '.') continue;
        if (part === '..') {
          ino = stack.pop() ?? ROOT_INO;
          continue;
        }
        const dir = await this.readInode(ino);
        if (kindOfMode(dir.mode) !== 'dir') throw new NotFoundError(`${path}: not a directory`);
        const entry = (await this.readDirInode(dir)).find((e) => e.name === part);
        if (!entry) throw new NotFoundError(`${path}: no such file or directory`);
        const last = i === parts.length - 1;
        const child = await this.readInode(entry.ino);
        if (kindOfMode(child.mode) === 'symlink' && (!last || options.follow)) {
          if (++follows > MAX_SYMLINK_FOLLOWS) throw new NotFoundError(`${path}: too many levels of symbolic links`);
          const target = new TextDecoder().decode(await this.readInodeData(child, 4096));
          const base = target.startsWith('/') ? ROOT_INO : ino;
          ino = await resolve(base, [...target.split('/'), ...parts.slice(i + 1)]);
          return ino;
        }
        stack.push(ino);
        ino = entry.ino;
      }
      return ino;
    };
    return resolve(ROOT_INO, path.split('/'));
  }

  async statInode(ino: number): Promise<Stat> {
    return toStat(await this.readInode(ino));
  }

  async stat(path: string): Promise<Stat> {
    return this.statInode(await this.lookup(path));
  }

  async readdir(path: string): Promise<DirListing[]> {
    return this.readDirInode(await this.readInode(await this.lookup(path, { follow: true })));
  }

  async readFile(path: string, maxSize?: number): Promise<Uint8Array> {
    const inode = await this.readInode(await this.lookup(path, { follow: true }));
    const kind = kindOfMode(inode.mode);
    if (kind !== 'file') throw new UsageError(`${path} is not a regular file (${kind})`);
    return this.readInodeData(inode, maxSize);
  }

  async *stream(path: string, pieceSize?: number, options: { reuse?: boolean } = {}): AsyncGenerator<Uint8Array> {
    const inode = await this.readInode(await this.lookup(path, { follow: true }));
    if (kindOfMode(inode.mode) !== 'file') throw new UsageError(`${path} is not a regular file`);
    yield* this.streamInode(inode, pieceSize, options);
  }

  async readlink(path: string): Promise<string> {
    const inode = await this.readInode(await this.lookup(path));
    if (kindOfMode(inode.mode) !== 'symlink') throw new UsageError(`${path} is not a symbolic link`);
    return new TextDecoder().decode(await this.readInodeData(inode, 65536));
  }

  async getXattrs(path: string): Promise<Xattr[]> {
    return this.xattrs(await this.readInode(await this.lookup(path)));
  }

  /** Clean / needs recovery, and where the journal lives. */
  async state(): Promise<FsState> {
    const sb = this.sb;
    const needsRecovery = (sb.featureIncompat & Incompat.recover) !== 0;
    let journal: JournalInfo | undefined;
    if (sb.featureCompat & Compat.hasJournal && sb.journalInum !== 0) {
      const inode = await this.readInode(sb.journalInum);
      const extents: [number, number][] = [];
      await this.walkBlocks(inode, {
        data: (_l, p, len) => {
          const last = extents[extents.length - 1];
          if (last && last[0] + last[1] === p) last[1] += len;
          else extents.push([p, len]);
        },
        tree: () => {},
      });
      const first = extents[0];
      let sequence = 0;
      let start = 0;
      let blocks = 0;
      if (first) {
        const jsb = await this.readBlocks(first[0], 1);
        const dv = view(jsb);
        if (dv.getUint32(0, false) !== 0xc03b3998) throw new CorruptImageError(FORMAT, 'journal superblock.h_magic', `0x${dv.getUint32(0, false).toString(16)}`, first[0] * this.blockSize);
        blocks = dv.getUint32(16, false);
        sequence = dv.getUint32(24, false);
        start = dv.getUint32(28, false);
      }
      journal = { inode: sb.journalInum, extents, blocks, sequence, start };
    }
    const hasErrors = (sb.state & 2) !== 0;
    const dirty = needsRecovery || (journal?.start ?? 0) !== 0;
    return {
      clean: (sb.state & 1) !== 0 && !hasErrors && !dirty,
      needsRecovery: dirty,
      hasErrors,
      orphansPending: sb.lastOrphan !== 0 || (sb.featureRoCompat & RoCompat.orphanPresent) !== 0,
      journal,
    };
  }
}

export function toStat(inode: Inode): Stat {
  const kind = kindOfMode(inode.mode);
  return {
    ino: inode.ino,
    kind,
    mode: inode.mode,
    uid: inode.uid,
    gid: inode.gid,
    size: inode.size,
    nlink: inode.linksCount,
    atime: inode.atime,
    mtime: inode.mtime,
    ctime: inode.ctime,
    crtime: inode.crtime,
    blocks512: inode.blocks512,
    flags: inode.flags,
    generation: inode.generation,
    rdev: kind === 'chardev' || kind === 'blockdev' ? deviceNumber(inode) : undefined,
  };
}

/** Where the fixed metadata of each group lives (superblock copies, descriptor blocks, reserved GDT). */
export class Layout {
  readonly sb: Superblock;
  readonly groups: number;
  readonly descPerBlock: number;
  readonly descBlocks: number;

  constructor(sb: Superblock) {
    this.sb = sb;
    this.groups = groupCount(sb);
    this.descPerBlock = sb.blockSize / sb.descSize;
    this.descBlocks = Math.ceil(this.groups / this.descPerBlock);
  }

  groupFirstBlock(g: number): number {
    return this.sb.firstDataBlock + g * this.sb.blocksPerGroup;
  }

  groupBlocks(g: number): number {
    return Math.min(this.sb.blocksPerGroup, this.sb.blocksCount - this.groupFirstBlock(g));
  }

  hasSuper(g: number): boolean {
    if (g === 0) return true;
    const sb = this.sb;
    if (sb.featureCompat & Compat.sparseSuper2) return g === sb.backupBgs[0] || g === sb.backupBgs[1];
    if (g <= 1 || !(sb.featureRoCompat & RoCompat.sparseSuper)) return true;
    if (!(g & 1)) return false;
    for (const base of [3, 5, 7]) {
      let p = base;
      while (p < g) p *= base;
      if (p === g) return true;
    }
    return false;
  }

  get metaBg(): boolean {
    return (this.sb.featureIncompat & Incompat.metaBg) !== 0;
  }

  /** Descriptor blocks in the classic layout (all of them, or those below s_first_meta_bg). */
  get oldDescBlocks(): number {
    return this.metaBg ? Math.min(this.sb.firstMetaBg, this.descBlocks) : this.descBlocks;
  }

  /** Physical block of the d-th primary descriptor block. */
  descriptorBlock(d: number): number {
    if (!this.metaBg || d < this.sb.firstMetaBg) return this.sb.firstDataBlock + 1 + d;
    const g = d * this.descPerBlock;
    return this.groupFirstBlock(g) + (this.hasSuper(g) ? 1 : 0);
  }

  /**
   * Fixed metadata of group g as [kind, start, count] ranges: superblock copy, classic descriptor
   * copy, reserved GDT blocks, and the meta_bg descriptor block.
   */
  fixedMetadata(g: number): [ 'superblock' | 'descriptors' | 'reserved_gdt', number, number][] {
    const out: ['superblock' | 'descriptors' | 'reserved_gdt', number, number][] = [];
    const first = this.groupFirstBlock(g);
    if (this.hasSuper(g)) {
      out.push(['superblock', first, 1]);
      if (this.oldDescBlocks > 0) out.push(['descriptors', first + 1, this.oldDescBlocks]);
      if (!this.metaBg && this.sb.reservedGdtBlocks > 0) out.push(['reserved_gdt', first + 1 + this.oldDescBlocks, this.sb.reservedGdtBlocks]);
    }
    if (this.metaBg) {
      const m = Math.floor(g / this.descPerBlock);
      const r = g % this.descPerBlock;
      if (m >= this.sb.firstMetaBg && m < this.descBlocks && (r === 0 || r === 1 || r === this.descPerBlock - 1)) {
        out.push(['descriptors', first + (this.hasSuper(g) ? 1 : 0), 1]);
      }
    }
    return out;
  }
}

export { BgFlags };
