/** Public entry points of the ext4 layer: open an image, describe it, list, and ask who owns blocks. */
import { FileDisk, type Disk } from '../../io/disk.ts';
import { LivestickError } from '../../errors.ts';
import { BLOCK_KIND_NAMES, buildBlockMap, type BlockMap } from './blockmap.ts';
import { Ext4, type FsState, type Stat } from './fs.ts';
import { featureNames, formatUuid } from './superblock.ts';

export { Ext4, type Stat, type FsState, type DirListing, type OpenOptions, type ChecksumError } from './fs.ts';
export { buildBlockMap, BlockMap, BlockKind, BLOCK_KIND_NAMES, pathsOf, type RangeUsage } from './blockmap.ts';
export { mkfs, type MkfsOptions, type MkfsResult } from './mkfs.ts';
export { Ext4Writer, type NodeAttrs, type Data } from './writer.ts';
export { Ext4WritableFileSystem, type Ext4WritableOptions } from './writable.ts';
export { growFs, type GrowResult } from './grow.ts';
export { copyIn, type CopyStats } from './copyin.ts';
export { NoSpaceError } from './errors.ts';

/** Opens an ext4 image file read-only (or read-write); the caller closes the returned disk. */
export async function openExt4File(path: string, options: { write?: boolean } = {}): Promise<{ fs: Ext4; disk: Disk }> {
  const disk = await FileDisk.open(path, { readOnly: !options.write });
  try {
    return { fs: await Ext4.open(disk), disk };
  } catch (err) {
    await disk.close();
    throw err instanceof LivestickError ? err.withFile(path) : err;
  }
}

export interface Ext4Info {
  label: string;
  uuid: string;
  blockSize: number;
  blocks: number;
  freeBlocks: number;
  reservedBlocks: number;
  inodes: number;
  freeInodes: number;
  inodeSize: number;
  groups: number;
  revision: number;
  features: string[];
  state: 'clean' | 'dirty';
  needsRecovery: boolean;
  hasErrors: boolean;
  orphansPending: boolean;
  journal: { inode: number; blocks: number; extents: (readonly [number, number])[] } | null;
  lastMounted: string;
  checksumErrors: number;
}

export async function ext4Info(fs: Ext4): Promise<Ext4Info> {
  const sb = fs.sb;
  const state: FsState = await fs.state();
  return {
    label: sb.volumeName,
    uuid: formatUuid(sb.uuid),
    blockSize: sb.blockSize,
    blocks: sb.blocksCount,
    freeBlocks: sb.freeBlocksCount,
    reservedBlocks: sb.reservedBlocksCount,
    inodes: sb.inodesCount,
    freeInodes: sb.freeInodesCount,
    inodeSize: sb.inodeSize,
    groups: fs.groupCount,
    revision: sb.revLevel,
    features: featureNames(sb),
    state: state.clean ? 'clean' : 'dirty',
    needsRecovery: state.needsRecovery,
    hasErrors: state.hasErrors,
    orphansPending: state.orphansPending,
    journal: state.journal ? { inode: state.journal.inode, blocks: state.journal.blocks, extents: [...state.journal.extents] } : null,
    lastMounted: sb.lastMounted,
    checksumErrors: fs.checksumErrorCount,
  };
}

export interface LsEntry {
  name: string;
  ino: number;
  kind: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  nlink: number;
  mtime: number;
  target?: string;
  rdev?: { major: number; minor: number };
}

export async function listDirectory(fs: Ext4, path: string): Promise<LsEntry[]> {
  const out: LsEntry[] = [];
  for (const e of await fs.readdir(path)) {
    const st: Stat = await fs.statInode(e.ino);
    const entry: LsEntry = { name: e.name, ino: e.ino, kind: st.kind, mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, size: st.size, nlink: st.nlink, mtime: st.mtime.sec };
    if (st.kind === 'symlink') entry.target = new TextDecoder().decode(await fs.readInodeData(await fs.readInode(e.ino), 65536));
    if (st.rdev) entry.rdev = st.rdev;
    out.push(entry);
  }
  return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

export interface BlockRangeUsage {
  start: number;
  end: number;
  free: number;
  kinds: Record<string, number>;
  owners: { inode: number; blocks: number; paths: string[] }[];
}

/** For each block range [start, end): free blocks, blocks per kind, and the owning inodes with their paths. */
export async function blockUsage(fs: Ext4, ranges: readonly (readonly [number, number])[], map?: BlockMap): Promise<{ blockSize: number; ranges: BlockRangeUsage[] }> {
  const bm = map ?? (await buildBlockMap(fs));
  const results = ranges.map(([s, e]) => bm.queryBlocks(s, e));
  const inodes = new Set<number>();
  for (const r of results) for (const ino of r.owners.keys()) inodes.add(ino);
  const names = await bm.paths(inodes);
  return {
    blockSize: fs.blockSize,
    ranges: results.map((r) => ({
      start: r.start,
      end: r.end,
      free: r.free,
      kinds: r.kinds,
      owners: [...r.owners].sort((a, b) => a[0] - b[0]).map(([inode, blocks]) => ({ inode, blocks, paths: names.get(inode) ?? [] })),
    })),
  };
}

export { BLOCK_KIND_NAMES as blockKindNames };
