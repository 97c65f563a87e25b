/**
 * mkfs: formats a Disk as a new ext4 filesystem, without e2fsprogs.
 *
 * Design notes
 * - Geometry follows mke2fs's "ext4" defaults: 4 KiB blocks, 32768 blocks and a multiple of 16
 *   inodes (one per 16 KiB) per group, 256-byte inodes, flex_bg of 16 groups with each flex group's
 *   block bitmaps, inode bitmaps and inode tables packed at the start of its first group, sparse_super
 *   backups, a journal sized like mke2fs's default (inode 8, contiguous extents), root and lost+found.
 * - Features: has_journal ext_attr dir_index filetype extent 64bit flex_bg sparse_super large_file
 *   huge_file dir_nlink extra_isize metadata_csum — mke2fs's ext4 set minus resize_inode (growth
 *   uses meta_bg instead, see grow.ts).
 * - Deterministic: same options (UUID, hash seed, time) → same bytes. Unused inode tables are left
 *   as they are when the caller says the device reads as zeros (a new sparse file), else zeroed;
 *   groups are flagged INODE_ZEROED, empty ones INODE_UNINIT with bg_itable_unused set.
 * - All checksums (superblock, descriptors, bitmaps, inodes, extent and directory blocks) are
 *   computed here; the result is verified by reading it back with the reader in the tests.
 */
import { randomBytes } from 'node:crypto';
import { UsageError } from '../../errors.ts';
import type { Disk } from '../../io/disk.ts';
import { view } from '../../io/bytes.ts';
import { BlockAllocator, buildDirBlocks, buildExtentTree, extentTreeBlocks, runsToExtents } from './build.ts';
import { crc32cUpdate } from './crc.ts';
import { DirFileType } from './dir.ts';
import { BgFlags, encodeGroupDesc, groupDescChecksum, type GroupDesc } from './group.ts';
import { FileType, InodeFlags, encodeInode, setInodeChecksum, type Timestamp } from './inode.ts';
import { Layout } from './fs.ts';
import { Compat, EXT4_MAGIC, Incompat, RoCompat, SUPERBLOCK_OFFSET, decodeSuperblock, encodeSuperblock, type Superblock } from './superblock.ts';

export interface MkfsOptions {
  /** Filesystem size in bytes (rounded down to whole blocks); defaults to the disk size. */
  size?: number;
  label?: string;
  uuid?: Uint8Array;
  /** Seed of the directory hash (16 bytes); random unless given. */
  hashSeed?: Uint8Array;
  /** Creation time (seconds since the epoch); defaults to now. */
  time?: number;
  /** Bytes per inode (default 16384). */
  inodeRatio?: number;
  /** Journal size in blocks (default: mke2fs's choice for the size; 0 = no journal). */
  journalBlocks?: number;
  /** The disk already reads as zeros (a freshly created sparse file): skip zeroing inode tables. */
  zeroed?: boolean;
  reservedPercent?: number;
}

export interface MkfsResult {
  blockSize: number;
  blocks: number;
  groups: number;
  inodes: number;
  journalBlocks: number;
  uuid: Uint8Array;
}

export const BLOCK_SIZE = 4096;
const INODE_SIZE = 256;
const LOG_FLEX = 4;
const ROOT = 2;
const JOURNAL = 8;
const LOST_FOUND = 11;
const FIRST_INO = 11;

export function defaultJournalBlocks(blocks: number): number {
  if (blocks < 2048) return 0;
  if (blocks < 32768) return 1024;
  if (blocks < 256 * 1024) return 4096;
  if (blocks < 512 * 1024) return 8192;
  if (blocks < 4096 * 1024) return 16384;
  if (blocks < 8192 * 1024) return 32768;
  if (blocks < 16384 * 1024) return 65536;
  if (blocks < 32768 * 1024) return 131072;
  return 262144;
}

/** A new superblock for the given geometry (used by mkfs and grow). */
function newSuperblock(fields: {
  blocks: number; ipg: number; groups: number; label: string; uuid: Uint8Array; hashSeed: Uint8Array; time: number; reservedBlocks: number; journalBlocks: number;
}): Superblock {
  const raw = new Uint8Array(1024);
  const dv = view(raw);
  dv.setUint32(0, fields.ipg * fields.groups, true);
  dv.setUint32(4, fields.blocks % 2 ** 32, true);
  dv.setUint32(336, Math.floor(fields.blocks / 2 ** 32), true);
  dv.setUint32(8, fields.reservedBlocks % 2 ** 32, true);
  dv.setUint32(340, Math.floor(fields.reservedBlocks / 2 ** 32), true);
  dv.setUint32(20, 0, true);
  dv.setUint32(24, 2, true);
  dv.setUint32(28, 2, true);
  dv.setUint32(32, 32768, true);
  dv.setUint32(36, 32768, true);
  dv.setUint32(40, fields.ipg, true);
  dv.setUint32(48, fields.time, true);
  dv.setInt16(54, -1, true);
  dv.setUint16(56, EXT4_MAGIC, true);
  dv.setUint16(58, 1, true);
  dv.setUint16(60, 1, true);
  dv.setUint32(64, fields.time, true);
  dv.setUint32(76, 1, true);
  dv.setUint32(84, FIRST_INO, true);
  dv.setUint16(88, INODE_SIZE, true);
  dv.setUint32(92, Compat.extAttr | Compat.dirIndex | (fields.journalBlocks > 0 ? Compat.hasJournal : 0), true);
  dv.setUint32(96, Incompat.filetype | Incompat.extents | Incompat.bit64 | Incompat.flexBg, true);
  dv.setUint32(100, RoCompat.sparseSuper | RoCompat.largeFile | RoCompat.hugeFile | RoCompat.dirNlink | RoCompat.extraIsize | RoCompat.metadataCsum, true);
  raw.set(fields.uuid, 104);
  raw.set(new TextEncoder().encode(fields.label).subarray(0, 16), 120);
  dv.setUint32(224, fields.journalBlocks > 0 ? JOURNAL : 0, true);
  raw.set(fields.hashSeed.subarray(0, 16), 236);
  dv.setUint8(252, 1);
  dv.setUint8(253, fields.journalBlocks > 0 ? 1 : 0);
  dv.setUint16(254, 64, true);
  dv.setUint32(256, 0x000c, true);
  dv.setUint32(264, fields.time, true);
  dv.setUint16(348, 32, true);
  dv.setUint16(350, 32, true);
  dv.setUint32(352, 1, true);
  dv.setUint8(372, LOG_FLEX);
  dv.setUint8(373, 1);
  return decodeSuperblock(raw);
}

export function computeGeometry(size: number, inodeRatio = 16384): { blocks: number; groups: number; ipg: number } {
  let blocks = Math.floor(size / BLOCK_SIZE);
  if (blocks < 2048) throw new UsageError(`an ext4 filesystem needs at least 8 MiB (got ${size} bytes)`);
  let groups = Math.ceil(blocks / 32768);
  const last = blocks - (groups - 1) * 32768;
  if (groups > 1 && last < 1024) {
    blocks -= last;
    groups--;
  }
  const inodesPerBlock = BLOCK_SIZE / INODE_SIZE;
  let ipg = Math.ceil(Math.floor((blocks * BLOCK_SIZE) / inodeRatio) / groups);
  ipg = Math.max(inodesPerBlock, Math.ceil(ipg / inodesPerBlock) * inodesPerBlock);
  ipg = Math.min(ipg, 32768);
  if (ipg * groups >= 2 ** 32) ipg = Math.floor((2 ** 32 - 1) / groups / inodesPerBlock) * inodesPerBlock;
  return { blocks, groups, ipg };
}

export async function mkfs(disk: Disk, options: MkfsOptions = {}): Promise<MkfsResult> {
  const size = options.size ?? disk.size;
  if (size > disk.size) throw new UsageError(`filesystem size ${size} exceeds the device (${disk.size} bytes)`);
  const bs = BLOCK_SIZE;
  const { blocks, groups, ipg } = computeGeometry(size, options.inodeRatio);
  const time = options.time ?? Math.floor(Date.now() / 1000);
  const ts: Timestamp = { sec: time, nsec: 0 };
  const uuid = options.uuid ?? uuidV4();
  const hashSeed = options.hashSeed ?? uuidV4();
  const journalBlocks = options.journalBlocks ?? defaultJournalBlocks(blocks);
  const reservedBlocks = Math.floor((blocks * (options.reservedPercent ?? 5)) / 100);
  let sb = newSuperblock({ blocks, ipg, groups, label: options.label ?? '', uuid, hashSeed, time, reservedBlocks, journalBlocks });
  const layout = new Layout(sb);
  const seed = crc32cUpdate(0xffffffff, uuid);
  const itb = (ipg * INODE_SIZE) / bs;
  const alloc = new BlockAllocator(blocks);

  // Fixed metadata, then flex-group tables.
  for (let g = 0; g < groups; g++) for (const [, start, count] of layout.fixedMetadata(g)) alloc.mark(start, count);
  const bbm: number[] = new Array<number>(groups);
  const ibm: number[] = new Array<number>(groups);
  const itable: number[] = new Array<number>(groups);
  const flex = 1 << LOG_FLEX;
  for (let f = 0; f < groups; f += flex) {
    const members = Math.min(flex, groups - f);
    const goal = layout.groupFirstBlock(f);
    for (let i = 0; i < members; i++) bbm[f + i] = allocContiguous(alloc, 1, goal);
    for (let i = 0; i < members; i++) ibm[f + i] = allocContiguous(alloc, 1, goal);
    for (let i = 0; i < members; i++) itable[f + i] = allocContiguous(alloc, itb, goal);
  }

  // Root, lost+found and journal data.
  const rootBlock = alloc.allocOne(layout.groupFirstBlock(0));
  const lfBlock = alloc.allocOne(rootBlock);
  const inodes = new Map<number, Uint8Array>();
  const writes: [number, Uint8Array][] = [];
  const rootDir = buildDirBlocks(
    [
      { ino: ROOT, name: enc('.'), fileType: DirFileType.dir },
      { ino: ROOT, name: enc('..'), fileType: DirFileType.dir },
      { ino: LOST_FOUND, name: enc('lost+found'), fileType: DirFileType.dir },
    ],
    bs,
    { seed, ino: ROOT, generation: 0 },
  );
  const lfDir = buildDirBlocks(
    [
      { ino: LOST_FOUND, name: enc('.'), fileType: DirFileType.dir },
      { ino: ROOT, name: enc('..'), fileType: DirFileType.dir },
    ],
    bs,
    { seed, ino: LOST_FOUND, generation: 0 },
  );
  writes.push([rootBlock, rootDir[0]!], [lfBlock, lfDir[0]!]);
  const dirInode = (ino: number, block: number, mode: number, links: number) => {
    const tree = buildExtentTree(runsToExtents([[block, 1]]), bs, () => alloc.allocOne(), { seed, ino, generation: 0 });
    inodes.set(ino, encodeInode({ mode: FileType.dir | mode, linksCount: links, size: bs, blocks512: bs / 512, flags: InodeFlags.extents, iBlock: tree.iBlock, time: ts }, INODE_SIZE));
  };
  dirInode(ROOT, rootBlock, 0o755, 3);
  dirInode(LOST_FOUND, lfBlock, 0o700, 2);

  let journalIBlock: Uint8Array | undefined;
  if (journalBlocks > 0) {
    const jgoal = layout.groupFirstBlock(Math.floor((groups - 1) / 2) === 0 ? 0 : Math.floor(groups / 2));
    const runs = alloc.alloc(journalBlocks, jgoal);
    const extents = runsToExtents(runs);
    const treeCount = extentTreeBlocks(extents.length, bs);
    const tree = buildExtentTree(extents, bs, () => alloc.allocOne(runs[0]![0]), { seed, ino: JOURNAL, generation: 0 });
    writes.push(...tree.treeBlocks);
    journalIBlock = tree.iBlock;
    inodes.set(JOURNAL, encodeInode({ mode: FileType.reg | 0o600, linksCount: 1, size: journalBlocks * bs, blocks512: (journalBlocks + treeCount) * (bs / 512), flags: InodeFlags.extents, iBlock: tree.iBlock, time: ts }, INODE_SIZE));
    writes.push([runs[0]![0], journalSuperblock(bs, journalBlocks, uuid)]);
  }
  // Reserved inodes 1, 3–7, 9, 10 are empty but carry a checksum, as mke2fs writes them.
  for (let ino = 1; ino < FIRST_INO; ino++) if (!inodes.has(ino)) inodes.set(ino, encodeInode({ mode: 0, linksCount: 0, time: { sec: 0, nsec: 0 } }, INODE_SIZE).fill(0));
  for (const [ino, raw] of inodes) setInodeChecksum(seed, ino, raw);

  // Bitmaps, descriptors.
  const descs: GroupDesc[] = [];
  const perGroupBits = 32768;
  let freeBlocksTotal = 0;
  for (let g = 0; g < groups; g++) {
    const first = layout.groupFirstBlock(g);
    const count = layout.groupBlocks(g);
    const bitmap = new Uint8Array(bs);
    let free = 0;
    for (let i = 0; i < perGroupBits; i++) {
      if (i >= count || alloc.isUsed(first + i)) bitmap[i >>> 3]! |= 1 << (i & 7);
      else free++;
    }
    freeBlocksTotal += free;
    const usedInodes = g === 0 ? FIRST_INO : 0;
    const ibitmap = new Uint8Array(bs);
    for (let i = 0; i < bs * 8; i++) if (i < usedInodes || i >= ipg) ibitmap[i >>> 3]! |= 1 << (i & 7);
    writes.push([bbm[g]!, bitmap], [ibm[g]!, ibitmap]);
    const bcsum = crc32cUpdate(seed, bitmap, 0, perGroupBits / 8);
    const icsum = crc32cUpdate(seed, ibitmap, 0, ipg / 8);
    descs.push({
      blockBitmap: bbm[g]!,
      inodeBitmap: ibm[g]!,
      inodeTable: itable[g]!,
      freeBlocks: free,
      freeInodes: ipg - usedInodes,
      usedDirs: g === 0 ? 2 : 0,
      flags: BgFlags.inodeZeroed | (usedInodes === 0 ? BgFlags.inodeUninit : 0),
      excludeBitmap: 0,
      blockBitmapCsum: bcsum,
      inodeBitmapCsum: icsum,
      itableUnused: ipg - usedInodes,
      checksum: 0,
    });
  }
  sb = { ...sb, freeBlocksCount: freeBlocksTotal, freeInodesCount: ipg * groups - FIRST_INO };
  if (journalIBlock) {
    const raw = sb.raw.slice();
    const dv = view(raw);
    for (let i = 0; i < 15; i++) dv.setUint32(268 + 4 * i, view(journalIBlock).getUint32(4 * i, true), true);
    dv.setUint32(268 + 64, (journalBlocks * bs) % 2 ** 32, true);
    dv.setUint32(268 + 60, Math.floor((journalBlocks * bs) / 2 ** 32), true);
    sb = { ...sb, raw };
  }

  // Write: inode tables (zeroed unless the device already is), tables, inodes, superblocks, descriptors.
  if (!options.zeroed) {
    const zeros = new Uint8Array(Math.min(itb, 256) * bs);
    for (let g = 0; g < groups; g++) {
      for (let b = 0; b < itb; b += 256) {
        const n = Math.min(256, itb - b);
        await disk.write(zeros.subarray(0, n * bs), (itable[g]! + b) * bs);
      }
    }
    await disk.write(new Uint8Array(SUPERBLOCK_OFFSET), 0);
  }
  for (const [blk, bytes] of writes) await disk.write(bytes, blk * bs);
  for (const [ino, raw] of inodes) {
    const g = Math.floor((ino - 1) / ipg);
    await disk.write(raw, itable[g]! * bs + ((ino - 1) % ipg) * INODE_SIZE);
  }
  await writeSuperblocksAndDescriptors(disk, sb, descs, seed);
  await disk.flush();
  return { blockSize: bs, blocks, groups, inodes: ipg * groups, journalBlocks, uuid };
}

/** Writes the primary superblock and descriptors and every backup copy. */
export async function writeSuperblocksAndDescriptors(disk: Disk, sb: Superblock, descs: readonly GroupDesc[], seed: number): Promise<void> {
  const layout = new Layout(sb);
  const bs = sb.blockSize;
  const table = new Uint8Array(layout.descBlocks * bs);
  descs.forEach((gd, g) => {
    const bytes = encodeGroupDesc(gd, sb.descSize);
    const csum = groupDescChecksum(sb, seed, g, bytes);
    if (csum !== undefined) view(bytes).setUint16(30, csum, true);
    table.set(bytes, g * sb.descSize);
  });
  for (let g = 0; g < layout.groups; g++) {
    const first = layout.groupFirstBlock(g);
    const hasSuper = layout.hasSuper(g);
    if (hasSuper) {
      await disk.write(encodeSuperblock({ ...sb, blockGroupNr: g }), g === 0 ? SUPERBLOCK_OFFSET : first * bs);
      if (layout.oldDescBlocks > 0) await disk.write(table.subarray(0, layout.oldDescBlocks * bs), (first + 1) * bs);
    }
    if (layout.metaBg) {
      const m = Math.floor(g / layout.descPerBlock);
      const r = g % layout.descPerBlock;
      if (m >= sb.firstMetaBg && m < layout.descBlocks && (r === 0 || r === 1 || r === layout.descPerBlock - 1)) {
        await disk.write(table.subarray(m * bs, (m + 1) * bs), (first + (hasSuper ? 1 : 0)) * bs);
      }
    }
  }
}

/**
 * The primary superblock and the primary descriptor blocks that hold any of `groups` (what a change
 * touches; the backups keep their copies, as the kernel leaves them).
 */
export async function writePrimarySuperblockAndDescriptors(disk: Disk, sb: Superblock, descs: readonly GroupDesc[], seed: number, groups: readonly number[]): Promise<void> {
  const layout = new Layout(sb);
  const bs = sb.blockSize;
  const perBlock = bs / sb.descSize;
  for (const d of [...new Set(groups.map((g) => Math.floor(g / perBlock)))].sort((a, b) => a - b)) {
    const block = new Uint8Array(bs);
    for (let i = 0; i < perBlock && d * perBlock + i < descs.length; i++) {
      const g = d * perBlock + i;
      const bytes = encodeGroupDesc(descs[g]!, sb.descSize);
      const csum = groupDescChecksum(sb, seed, g, bytes);
      if (csum !== undefined) view(bytes).setUint16(30, csum, true);
      block.set(bytes, i * sb.descSize);
    }
    await disk.write(block, layout.descriptorBlock(d) * bs);
  }
  await disk.write(encodeSuperblock({ ...sb, blockGroupNr: 0 }), SUPERBLOCK_OFFSET);
}

function allocContiguous(alloc: BlockAllocator, count: number, goal: number): number {
  let b = goal;
  for (;;) {
    if (b + count > alloc.blocks) throw new UsageError('the filesystem is too small for its metadata');
    let ok = true;
    for (let i = 0; i < count; i++) {
      if (alloc.isUsed(b + i)) {
        ok = false;
        b = b + i + 1;
        break;
      }
    }
    if (ok) {
      alloc.mark(b, count);
      return b;
    }
  }
}

function journalSuperblock(bs: number, blocks: number, uuid: Uint8Array): Uint8Array {
  const out = new Uint8Array(bs);
  const dv = view(out);
  dv.setUint32(0, 0xc03b3998, false);
  dv.setUint32(4, 4, false);
  dv.setUint32(12, bs, false);
  dv.setUint32(16, blocks, false);
  dv.setUint32(20, 1, false);
  dv.setUint32(24, 1, false);
  out.set(uuid, 48);
  dv.setUint32(64, 1, false);
  return out;
}

function enc(s: string): Uint8Array {
  return new TextEncoder().encode(s);
}

function uuidV4(): Uint8Array {
  const u = new Uint8Array(randomBytes(16));
  u[6] = (u[6]! & 0x0f) | 0x40;
  u[8] = (u[8]! & 0x3f) | 0x80;
  return u;
}
