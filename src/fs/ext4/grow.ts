/**
 * Growing an ext4 filesystem to fill a larger device (offline; for `home resize`).
 *
 * Design notes
 * - The old last group is widened (its padding bits become free blocks), then whole new groups are
 *   appended, each holding its own bitmaps and inode table right after its fixed metadata (legal with
 *   or without flex_bg). New groups start INODE_UNINIT with bg_itable_unused = inodes per group.
 * - When the descriptor table needs more blocks than it has, the filesystem switches to meta_bg with
 *   s_first_meta_bg = the old descriptor block count: old descriptor blocks stay where they are (and
 *   in every backup group), new ones live in their own meta groups (first, second and last group of
 *   each run of descriptors-per-block groups), as the kernel's online resize does.
 * - Filesystems with a resize inode (mke2fs's default) are refused when a new group would need a
 *   superblock backup, since the resize inode's lists would have to be rebuilt; livestick's own mkfs
 *   does not create one.
 */
import { UnsupportedFeatureError, UsageError } from '../../errors.ts';
import { view } from '../../io/bytes.ts';
import { crc32cUpdate } from './crc.ts';
import { type Ext4, Layout } from './fs.ts';
import { BgFlags, type GroupDesc, hasGroupChecksums } from './group.ts';
import { writeSuperblocksAndDescriptors } from './mkfs.ts';
import { Compat, Incompat, type Superblock } from './superblock.ts';

export interface GrowResult {
  oldBlocks: number;
  newBlocks: number;
  oldGroups: number;
  newGroups: number;
  metaBgEnabled: boolean;
}

/** Grows `fs` to `newSize` bytes (the disk must already be at least that large). */
export async function growFs(fs: Ext4, newSize: number, options: { zeroed?: boolean } = {}): Promise<GrowResult> {
  const sb0 = fs.sb;
  const bs = fs.blockSize;
  const disk = fs.disk;
  if (disk.readOnly) throw new UsageError('the disk is open read-only');
  if (newSize > disk.size) throw new UsageError(`new size ${newSize} exceeds the device (${disk.size} bytes)`);
  if ((await fs.state()).needsRecovery) throw new UnsupportedFeatureError('ext4', 'growing', 'the journal needs recovery');
  if (fs.checksumErrorCount > 0) throw new UnsupportedFeatureError('ext4', 'growing', 'the filesystem has checksum errors');
  const bpg = sb0.blocksPerGroup;
  const ipg = sb0.inodesPerGroup;
  const first = sb0.firstDataBlock;
  const oldBlocks = sb0.blocksCount;
  let newBlocks = Math.floor(newSize / bs);
  if (!(sb0.featureIncompat & Incompat.bit64) && newBlocks >= 2 ** 32) newBlocks = 2 ** 32 - 1;
  const oldGroups = fs.groupCount;
  const itb = Math.ceil((ipg * sb0.inodeSize) / bs);
  let newGroups = Math.ceil((newBlocks - first) / bpg);
  const tail = newBlocks - first - (newGroups - 1) * bpg;
  if (newGroups > oldGroups && tail < itb + 64) {
    newBlocks -= tail;
    newGroups--;
  }
  if (newBlocks <= oldBlocks) throw new UsageError(`the filesystem already has ${oldBlocks} blocks; ${newSize} bytes gives ${newBlocks}`);
  if ((newGroups * ipg) >= 2 ** 32) throw new UsageError('too many inodes for the new size');

  const perBlock = bs / sb0.descSize;
  const oldDescBlocks = Math.ceil(oldGroups / perBlock);
  const newDescBlocks = Math.ceil(newGroups / perBlock);
  let featureIncompat = sb0.featureIncompat;
  let firstMetaBg = sb0.firstMetaBg;
  let metaBgEnabled = false;
  if (!(featureIncompat & Incompat.metaBg) && newDescBlocks > oldDescBlocks) {
    if (sb0.featureCompat & Compat.resizeInode || sb0.reservedGdtBlocks > 0) {
      throw new UnsupportedFeatureError('ext4', 'growing', 'the descriptor table must grow and the filesystem has a resize inode (use resize2fs)');
    }
    featureIncompat |= Incompat.metaBg;
    firstMetaBg = oldDescBlocks;
    metaBgEnabled = true;
  }
  const sb: Superblock = {
    ...sb0,
    blocksCount: newBlocks,
    inodesCount: newGroups * ipg,
    featureIncompat,
    firstMetaBg,
    reservedBlocksCount: Math.floor((newBlocks * sb0.reservedBlocksCount) / oldBlocks),
  };
  const layout = new Layout(sb);
  if (sb0.featureCompat & Compat.resizeInode) {
    for (let g = oldGroups; g < newGroups; g++) {
      if (layout.hasSuper(g)) throw new UnsupportedFeatureError('ext4', 'growing', 'new groups need superblock backups and the filesystem has a resize inode (use resize2fs)');
    }
  }
  const csums = hasGroupChecksums(sb);
  const metadataCsum = fs.metadataCsum;
  const wide = sb.descSize >= 64;
  const groups: GroupDesc[] = fs.groups.map((g) => ({ ...g }));
  const bitmapCsum = (bitmap: Uint8Array, bytes: number) => {
    const c = crc32cUpdate(fs.csumSeed, bitmap, 0, bytes);
    return wide ? c : c & 0xffff;
  };

  // Widen the old last group.
  {
    const g = oldGroups - 1;
    const gd = groups[g]!;
    const gFirst = layout.groupFirstBlock(g);
    const oldCount = oldBlocks - gFirst;
    const newCount = layout.groupBlocks(g);
    let bitmap: Uint8Array;
    if (csums && gd.flags & BgFlags.blockUninit) {
      bitmap = new Uint8Array(bs);
      const mark = (start: number, n: number) => {
        for (let b = start; b < start + n; b++) if (b >= gFirst && b < gFirst + oldCount) bitmap[(b - gFirst) >>> 3]! |= 1 << ((b - gFirst) & 7);
      };
      for (const [, s, n] of new Layout(sb0).fixedMetadata(g)) mark(s, n);
      for (const other of groups) {
        mark(other.blockBitmap, 1);
        mark(other.inodeBitmap, 1);
        mark(other.inodeTable, itb);
      }
    } else {
      bitmap = await fs.readBlocks(gd.blockBitmap, 1);
    }
    for (let i = oldCount; i < bs * 8; i++) {
      if (i < newCount) bitmap[i >>> 3]! &= ~(1 << (i & 7));
      else bitmap[i >>> 3]! |= 1 << (i & 7);
    }
    let free = 0;
    for (let i = 0; i < newCount; i++) if (!((bitmap[i >>> 3]! >>> (i & 7)) & 1)) free++;
    await disk.write(bitmap, gd.blockBitmap * bs);
    groups[g] = { ...gd, freeBlocks: free, flags: gd.flags & ~BgFlags.blockUninit, blockBitmapCsum: metadataCsum ? bitmapCsum(bitmap, sb.clustersPerGroup / 8) : gd.blockBitmapCsum };
  }

  // New groups.
  const zeros = new Uint8Array(Math.min(itb, 256) * bs);
  for (let g = oldGroups; g < newGroups; g++) {
    const gFirst = layout.groupFirstBlock(g);
    const count = layout.groupBlocks(g);
    let next = gFirst;
    for (const [, s, n] of layout.fixedMetadata(g)) next = Math.max(next, s + n);
    const blockBitmap = next;
    const inodeBitmap = next + 1;
    const inodeTable = next + 2;
    const used = inodeTable + itb - gFirst;
    if (used > count) throw new UsageError(`group ${g} is too small for its metadata`);
    const bitmap = new Uint8Array(bs);
    for (let i = 0; i < bs * 8; i++) if (i < used || i >= count) bitmap[i >>> 3]! |= 1 << (i & 7);
    const ibitmap = new Uint8Array(bs);
    for (let i = ipg; i < bs * 8; i++) ibitmap[i >>> 3]! |= 1 << (i & 7);
    await disk.write(bitmap, blockBitmap * bs);
    await disk.write(ibitmap, inodeBitmap * bs);
    if (!options.zeroed) {
      for (let b = 0; b < itb; b += 256) {
        const n = Math.min(256, itb - b);
        await disk.write(zeros.subarray(0, n * bs), (inodeTable + b) * bs);
      }
    }
    groups.push({
      blockBitmap,
      inodeBitmap,
      inodeTable,
      freeBlocks: count - used,
      freeInodes: ipg,
      usedDirs: 0,
      flags: csums ? BgFlags.inodeUninit | BgFlags.inodeZeroed : 0,
      excludeBitmap: 0,
      blockBitmapCsum: metadataCsum ? bitmapCsum(bitmap, sb.clustersPerGroup / 8) : 0,
      inodeBitmapCsum: metadataCsum ? bitmapCsum(ibitmap, ipg / 8) : 0,
      itableUnused: csums ? ipg : 0,
      checksum: 0,
    });
  }
  const freeBlocks = groups.reduce((a, g) => a + g.freeBlocks, 0);
  const freeInodes = groups.reduce((a, g) => a + g.freeInodes, 0);
  const finalSb: Superblock = { ...sb, freeBlocksCount: freeBlocks, freeInodesCount: freeInodes, raw: withFirstMetaBg(sb.raw, firstMetaBg) };
  await writeSuperblocksAndDescriptors(disk, finalSb, groups, fs.csumSeed);
  await disk.flush();
  return { oldBlocks, newBlocks, oldGroups, newGroups, metaBgEnabled };
}

function withFirstMetaBg(raw: Uint8Array, firstMetaBg: number): Uint8Array {
  const out = raw.slice();
  view(out).setUint32(260, firstMetaBg, true);
  return out;
}
