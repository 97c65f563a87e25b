/**
 * The block map: for every block of an ext2/3/4 filesystem, whether it is free, which kind of
 * filesystem metadata it is, or which inode owns it (data, extent/indirect tree block, EA block).
 *
 * Design notes
 * - Three flat typed arrays, no per-block objects: `used` (the allocation bitmaps, concatenated,
 *   bit i = block firstDataBlock + i), `kind` (one byte per block) and `owner` (u32 inode per block).
 *   5.1 bytes per block: an 8 GiB filesystem of 4 KiB blocks needs ~10 MiB.
 * - Built in three passes, all sequential I/O: (1) block bitmaps, read in runs of adjacent blocks
 *   (flex_bg packs them), BLOCK_UNINIT groups synthesized as e2fsprogs does; (2) the fixed layout
 *   (superblock copies, descriptors, reserved GDT, bitmaps, inode tables); (3) one pass over the
 *   in-use part of every inode table in large reads, walking each live inode's blocks with the same
 *   walker the file reader uses (in-inode extent roots need no further I/O).
 * - Ownership follows debugfs icheck: inodes with links_count 0 or a dtime are skipped, the EA block
 *   counts, and the resize inode (7) owns the reserved GDT blocks it maps (their kind stays
 *   reserved_gdt). The journal inode's data blocks have kind `journal`.
 * - Queries take byte or block ranges, so the overlay `status` can ask about its chunks directly;
 *   inode → path names come from one walk of the directory tree for just the inodes asked about.
 */
import { CorruptImageError } from '../../errors.ts';
import { view } from '../../io/bytes.ts';
import { crc32cUpdate } from './crc.ts';
import { decodeDirBlock } from './dir.ts';
import { type Ext4, ROOT_INO } from './fs.ts';
import { BgFlags, hasGroupChecksums } from './group.ts';
import { InodeFlags, kindOfMode } from './inode.ts';
import { FORMAT, RoCompat } from './superblock.ts';

export const BlockKind = {
  free: 0,
  superblock: 1,
  descriptors: 2,
  reservedGdt: 3,
  blockBitmap: 4,
  inodeBitmap: 5,
  inodeTable: 6,
  journal: 7,
  data: 8,
  extentTree: 9,
  indirect: 10,
  xattr: 11,
  /** Marked in use in the bitmap, but no inode or layout structure claims it. */
  unowned: 12,
  /** Before s_first_data_block (block 0 of a 1 KiB-block filesystem: the boot sector area). */
  boot: 13,
} as const;
export type BlockKindCode = (typeof BlockKind)[keyof typeof BlockKind];

export const BLOCK_KIND_NAMES: readonly string[] = ['free', 'superblock', 'descriptors', 'reserved_gdt', 'block_bitmap', 'inode_bitmap', 'inode_table', 'journal', 'data', 'extent_tree', 'indirect', 'xattr', 'unowned', 'boot'];

export interface RangeUsage {
  /** Block range [start, end) this summary covers. */
  readonly start: number;
  readonly end: number;
  readonly free: number;
  /** Blocks per kind name (free included). */
  readonly kinds: Record<string, number>;
  /** Inode → number of its blocks in the range. */
  readonly owners: Map<number, number>;
}

export interface BuildOptions {
  /** Called with (groups done, total groups). */
  onProgress?: (done: number, total: number) => void;
}

export class BlockMap {
  readonly blockSize: number;
  readonly blocksCount: number;
  readonly firstDataBlock: number;
  readonly used: Uint8Array;
  readonly kind: Uint8Array;
  readonly owner: Uint32Array;
  /** Blocks claimed by more than one inode (should be 0 on a healthy filesystem). */
  multiplyClaimed = 0;
  /** Blocks an inode claims although the bitmap says free. */
  claimedButFree = 0;
  /** Directory inodes seen in the scan, with where their blocks are (for path lookups). */
  readonly directories: DirectoryIndex;
  readonly #fs: Ext4;

  constructor(fs: Ext4, directories: DirectoryIndex, used: Uint8Array, kind: Uint8Array, owner: Uint32Array) {
    this.#fs = fs;
    this.blockSize = fs.blockSize;
    this.blocksCount = fs.sb.blocksCount;
    this.firstDataBlock = fs.sb.firstDataBlock;
    this.used = used;
    this.kind = kind;
    this.owner = owner;
    this.directories = directories;
  }

  isUsed(block: number): boolean {
    if (block < this.firstDataBlock) return true;
    const i = block - this.firstDataBlock;
    return ((this.used[i >>> 3]! >>> (i & 7)) & 1) === 1;
  }

  kindOf(block: number): string {
    return BLOCK_KIND_NAMES[this.kind[block]!] ?? 'unknown';
  }

  ownerOf(block: number): number {
    return this.owner[block]!;
  }

  freeCount(start = 0, end = this.blocksCount): number {
    let n = 0;
    for (let b = Math.max(start, this.firstDataBlock); b < end; b++) if (!this.isUsed(b)) n++;
    return n;
  }

  /** Summary of blocks [start, end). */
  queryBlocks(start: number, end: number): RangeUsage {
    const s = Math.max(0, Math.min(start, this.blocksCount));
    const e = Math.max(s, Math.min(end, this.blocksCount));
    const counts = new Array<number>(BLOCK_KIND_NAMES.length).fill(0);
    const owners = new Map<number, number>();
    let free = 0;
    for (let b = s; b < e; b++) {
      counts[this.kind[b]!]!++;
      if (!this.isUsed(b)) free++;
      const o = this.owner[b]!;
      if (o !== 0) owners.set(o, (owners.get(o) ?? 0) + 1);
    }
    const kinds: Record<string, number> = {};
    counts.forEach((c, k) => {
      if (c > 0) kinds[BLOCK_KIND_NAMES[k]!] = c;
    });
    return { start: s, end: e, free, kinds, owners };
  }

  /** Summary of the blocks overlapping device bytes [startByte, endByte). */
  queryBytes(startByte: number, endByte: number): RangeUsage {
    return this.queryBlocks(Math.floor(startByte / this.blockSize), Math.ceil(endByte / this.blockSize));
  }

  /** Free block runs [start, length] (for discarding free space when merging). */
  *freeRuns(): Generator<[number, number]> {
    let runStart = -1;
    for (let b = this.firstDataBlock; b < this.blocksCount; b++) {
      const free = !this.isUsed(b);
      if (free && runStart < 0) runStart = b;
      else if (!free && runStart >= 0) {
        yield [runStart, b - runStart];
        runStart = -1;
      }
    }
    if (runStart >= 0) yield [runStart, this.blocksCount - runStart];
  }

  /** Path names (all hard links) of the given inodes, like debugfs ncheck. */
  async paths(inodes: Iterable<number>): Promise<Map<number, string[]>> {
    return pathsFromIndex(this.#fs, this.directories, inodes);
  }
}

/** Path names of inodes (all their links), walking the directory tree from the root once. */
export async function pathsOf(fs: Ext4, inodes: Iterable<number>): Promise<Map<number, string[]>> {
  const wanted = new Set(inodes);
  const out = new Map<number, string[]>();
  if (wanted.has(ROOT_INO)) out.set(ROOT_INO, ['/']);
  const visited = new Set<number>([ROOT_INO]);
  const queue: [number, string][] = [[ROOT_INO, '']];
  while (queue.length > 0) {
    const [dirIno, dirPath] = queue.shift()!;
    const dir = await fs.readInode(dirIno);
    for (const e of await fs.readDirInode(dir)) {
      const path = `${dirPath}/${e.name}`;
      if (wanted.has(e.ino)) {
        const list = out.get(e.ino);
        if (list) list.push(path);
        else out.set(e.ino, [path]);
      }
      const isDir = e.fileType === 2 || (e.fileType === 0 && kindOfMode((await fs.readInode(e.ino)).mode) === 'dir');
      if (isDir && !visited.has(e.ino)) {
        visited.add(e.ino);
        queue.push([e.ino, path]);
      }
    }
  }
  return out;
}

/**
 * Where every directory's blocks are: one entry per directory, its runs flattened into typed arrays
 * (logical, physical, length), so path lookups read directory blocks in disk order without touching
 * inodes or extent trees again.
 */
export interface DirectoryIndex {
  readonly inos: Uint32Array;
  readonly generations: Uint32Array;
  readonly flags: Uint32Array;
  /** Blocks the directory's i_size covers. */
  readonly sizeBlocks: Float64Array;
  /** Runs of directory d are runLogical/runPhysical/runLength[runStart[d] .. runStart[d+1]). */
  readonly runStart: Uint32Array;
  readonly runLogical: Float64Array;
  readonly runPhysical: Float64Array;
  readonly runLength: Float64Array;
}

class DirectoryIndexBuilder {
  inos: number[] = [];
  generations: number[] = [];
  flags: number[] = [];
  sizeBlocks: number[] = [];
  runStart: number[] = [];
  runLogical: number[] = [];
  runPhysical: number[] = [];
  runLength: number[] = [];

  add(ino: number, generation: number, flags: number, sizeBlocks: number): void {
    this.inos.push(ino);
    this.generations.push(generation);
    this.flags.push(flags);
    this.sizeBlocks.push(sizeBlocks);
    this.runStart.push(this.runLogical.length);
  }

  run(logical: number, physical: number, length: number): void {
    this.runLogical.push(logical);
    this.runPhysical.push(physical);
    this.runLength.push(length);
  }

  build(): DirectoryIndex {
    return {
      inos: Uint32Array.from(this.inos),
      generations: Uint32Array.from(this.generations),
      flags: Uint32Array.from(this.flags),
      sizeBlocks: Float64Array.from(this.sizeBlocks),
      runStart: Uint32Array.from([...this.runStart, this.runLogical.length]),
      runLogical: Float64Array.from(this.runLogical),
      runPhysical: Float64Array.from(this.runPhysical),
      runLength: Float64Array.from(this.runLength),
    };
  }
}

/** ncheck: names of the given inodes, from one pass over all directory blocks in disk order. */
export async function pathsFromIndex(fs: Ext4, dirs: DirectoryIndex, inodes: Iterable<number>): Promise<Map<number, string[]>> {
  const wanted = new Set(inodes);
  const isDir = new Set(dirs.inos);
  const parentOf = new Map<number, [number, string]>();
  const hits: [number, number, string][] = [];
  const hasFt = (fs.sb.featureIncompat & 0x2) !== 0;
  const bs = fs.blockSize;
  const order = [...dirs.inos.keys()].sort((a, b) => (dirs.runPhysical[dirs.runStart[a]!] ?? 0) - (dirs.runPhysical[dirs.runStart[b]!] ?? 0));
  const handle = (dirIno: number, entries: { inode: number; name: string }[]) => {
    for (const e of entries) {
      if (e.name === '.' || e.name === '..') continue;
      if (isDir.has(e.inode) && !parentOf.has(e.inode)) parentOf.set(e.inode, [dirIno, e.name]);
      if (wanted.has(e.inode)) hits.push([e.inode, dirIno, e.name]);
    }
  };
  for (const d of order) {
    const ino = dirs.inos[d]!;
    if (dirs.flags[d]! & InodeFlags.inlineData) {
      const entries = await fs.readDirInode(await fs.readInode(ino));
      handle(ino, entries.map((e) => ({ inode: e.ino, name: e.name })));
      continue;
    }
    const entries: DirEntryLike[] = [];
    for (let r = dirs.runStart[d]!; r < dirs.runStart[d + 1]!; r++) {
      const logical = dirs.runLogical[r]!;
      const end = Math.min(logical + dirs.runLength[r]!, dirs.sizeBlocks[d]!);
      for (let lb = logical; lb < end; lb += 256) {
        const n = Math.min(256, end - lb);
        const phys = dirs.runPhysical[r]! + (lb - logical);
        const buf = await fs.readBlocks(phys, n);
        for (let i = 0; i < n; i++) {
          const block = buf.subarray(i * bs, (i + 1) * bs);
          fs.verifyDirBlock({ ino, generation: dirs.generations[d]! }, block, lb + i, (phys + i) * bs, (dirs.flags[d]! & InodeFlags.index) !== 0);
          decodeDirBlock(block, hasFt, `dir[${ino}][block ${lb + i}]`, (phys + i) * bs, entries);
        }
      }
    }
    handle(ino, entries);
  }
  const dirPath = new Map<number, string | null>([[ROOT_INO, '']]);
  const resolve = (dir: number): string | null => {
    const chain: number[] = [];
    let cur = dir;
    let known = dirPath.get(cur);
    while (known === undefined) {
      chain.push(cur);
      const p = parentOf.get(cur);
      if (!p || chain.length > 4096 || chain.includes(p[0])) {
        known = null;
        break;
      }
      cur = p[0];
      known = dirPath.get(cur);
    }
    for (let i = chain.length - 1; i >= 0; i--) {
      const d = chain[i]!;
      known = known === null || known === undefined ? null : `${known}/${parentOf.get(d)![1]}`;
      dirPath.set(d, known);
    }
    return dirPath.get(dir) ?? null;
  };
  const out = new Map<number, string[]>();
  if (wanted.has(ROOT_INO)) out.set(ROOT_INO, ['/']);
  for (const [ino, dir, name] of hits) {
    const base = resolve(dir);
    if (base === null) continue;
    const path = `${base}/${name}`;
    const list = out.get(ino);
    if (list) list.push(path);
    else out.set(ino, [path]);
  }
  return out;
}

type DirEntryLike = { inode: number; name: string; nameBytes: Uint8Array; fileType: number };

function setBits(bits: Uint8Array, from: number, count: number): void {
  for (let i = from; i < from + count; i++) bits[i >>> 3]! |= 1 << (i & 7);
}

export async function buildBlockMap(fs: Ext4, options: BuildOptions = {}): Promise<BlockMap> {
  const sb = fs.sb;
  const bs = fs.blockSize;
  const blocks = sb.blocksCount;
  const first = sb.firstDataBlock;
  const layout = fs.layout;
  const nGroups = fs.groupCount;
  const bpg = sb.blocksPerGroup;
  const used = new Uint8Array(Math.ceil((blocks - first) / 8) + 1);
  const kind = new Uint8Array(blocks);
  const owner = new Uint32Array(blocks);
  const csums = hasGroupChecksums(sb);
  const metadataCsum = (sb.featureRoCompat & RoCompat.metadataCsum) !== 0;
  const itableBlocks = Math.ceil((sb.inodesPerGroup * sb.inodeSize) / bs);
  const uninit = (g: number) => csums && (fs.groups[g]!.flags & BgFlags.blockUninit) !== 0 && fs.groupChecksumValid(g);

  // Pass 1: block bitmaps, read in runs of adjacent bitmap blocks.
  const order = [...fs.groups.keys()].filter((g) => !uninit(g)).sort((a, b) => fs.groups[a]!.blockBitmap - fs.groups[b]!.blockBitmap);
  const bitmapBytes = bpg / 8;
  for (let i = 0; i < order.length; ) {
    let j = i + 1;
    const start = fs.groups[order[i]!]!.blockBitmap;
    while (j < order.length && j - i < 256 && fs.groups[order[j]!]!.blockBitmap === start + (j - i)) j++;
    const buf = await fs.readBlocks(start, j - i);
    for (let k = i; k < j; k++) {
      const g = order[k]!;
      const bitmap = buf.subarray((k - i) * bs, (k - i) * bs + bitmapBytes);
      if (metadataCsum && fs.verifyChecksums) {
        const crc = crc32cUpdate(fs.csumSeed, bitmap);
        const gd = fs.groups[g]!;
        const wide = sb.descSize >= 64;
        fs.reportChecksum(`group[${g}].block_bitmap`, (start + k - i) * bs, gd.blockBitmapCsum, wide ? crc : crc & 0xffff);
      }
      const groupBlocks = layout.groupBlocks(g);
      const at = (g * bpg) >>> 3;
      used.set(bitmap.subarray(0, Math.ceil(groupBlocks / 8)), at);
    }
    i = j;
  }
  // Bits past the end of the filesystem are not blocks.
  for (let i = blocks - first; i < used.length * 8; i++) used[i >>> 3]! &= ~(1 << (i & 7));

  // Pass 2: the fixed layout.
  const mark = (start: number, count: number, k: number) => {
    const s = Math.max(0, start);
    const e = Math.min(blocks, start + count);
    if (e > s) kind.fill(k, s, e);
  };
  if (first > 0) mark(0, first, BlockKind.boot);
  for (let g = 0; g < nGroups; g++) {
    const gd = fs.groups[g]!;
    for (const [k, start, count] of layout.fixedMetadata(g)) {
      const code = k === 'superblock' ? BlockKind.superblock : k === 'descriptors' ? BlockKind.descriptors : BlockKind.reservedGdt;
      mark(start, count, code);
      if (uninit(g)) setBits(used, start - first, Math.min(count, blocks - start));
    }
    mark(gd.blockBitmap, 1, BlockKind.blockBitmap);
    mark(gd.inodeBitmap, 1, BlockKind.inodeBitmap);
    mark(gd.inodeTable, itableBlocks, BlockKind.inodeTable);
    if (uninit(g)) {
      setBits(used, gd.blockBitmap - first, 1);
      setBits(used, gd.inodeBitmap - first, 1);
      setBits(used, gd.inodeTable - first, itableBlocks);
    }
  }

  // Pass 3: one sequential pass over the inode tables.
  const map = { multiply: 0 };
  const journalIno = sb.journalInum;
  const claim = (ino: number, start: number, count: number, k: number, keepKind: boolean) => {
    for (let b = start; b < start + count; b++) {
      if (owner[b] !== 0 && owner[b] !== ino) map.multiply++;
    }
    owner.fill(ino, start, start + count);
    if (keepKind) {
      for (let b = start; b < start + count; b++) if (kind[b] === BlockKind.free) kind[b] = k;
    } else kind.fill(k, start, start + count);
  };
  const directories = new DirectoryIndexBuilder();
  const isz = sb.inodeSize;
  const ipg = sb.inodesPerGroup;
  const chunkInodes = Math.max(1, Math.floor((1 << 20) / isz));
  for (let g = 0; g < nGroups; g++) {
    const gd = fs.groups[g]!;
    if (csums && gd.flags & BgFlags.inodeUninit && fs.groupChecksumValid(g)) {
      options.onProgress?.(g + 1, nGroups);
      continue;
    }
    const live = csums && fs.groupChecksumValid(g) ? ipg - gd.itableUnused : ipg;
    for (let i0 = 0; i0 < live; i0 += chunkInodes) {
      const n = Math.min(chunkInodes, live - i0);
      const offset = gd.inodeTable * bs + i0 * isz;
      const buf = new Uint8Array(n * isz);
      await fs.disk.read(buf, offset);
      const dv = view(buf);
      for (let i = 0; i < n; i++) {
        const at = i * isz;
        if (dv.getUint16(at + 26, true) === 0 || dv.getUint32(at + 20, true) !== 0) continue;
        const ino = g * ipg + i0 + i + 1;
        const inode = fs.decodeInodeAt(buf.subarray(at, at + isz), ino, offset + at, false);
        if (inode.fileAcl !== 0) {
          fs.checkBlockRange(inode.fileAcl, 1, `inode[${ino}].i_file_acl`);
          claim(ino, inode.fileAcl, 1, BlockKind.xattr, false);
        }
        const isDir = kindOfMode(inode.mode) === 'dir';
        if (isDir) directories.add(ino, inode.generation, inode.flags, Math.ceil(fs.sizeOf(inode) / bs));
        if (!fs.hasBlockMap(inode)) continue;
        const dataKind = ino === journalIno ? BlockKind.journal : BlockKind.data;
        const keep = ino === 7;
        await fs.walkBlocks(inode, {
          data: (l, p, len, unwritten) => {
            claim(ino, p, len, dataKind, keep);
            if (isDir && !unwritten) directories.run(l, p, len);
          },
          tree: (p, k) => claim(ino, p, 1, k === 'extent' ? BlockKind.extentTree : BlockKind.indirect, keep),
        });
      }
    }
    options.onProgress?.(g + 1, nGroups);
  }

  const bm = new BlockMap(fs, directories.build(), used, kind, owner);
  bm.multiplyClaimed = map.multiply;
  let claimedFree = 0;
  for (let b = first; b < blocks; b++) {
    const i = b - first;
    const inUse = ((used[i >>> 3]! >>> (i & 7)) & 1) === 1;
    if (inUse) {
      if (kind[b] === BlockKind.free) kind[b] = BlockKind.unowned;
    } else if (owner[b] !== 0 || kind[b] !== BlockKind.free) {
      claimedFree++;
    }
  }
  bm.claimedButFree = claimedFree;
  return bm;
}
