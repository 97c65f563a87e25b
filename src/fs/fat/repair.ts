/**
 * Repair of a FAT volume that was not closed cleanly (its boot sector's dirty bit set when it was
 * opened for writing): what `fsck.fat -a` would do about what an interrupted write leaves, and nothing
 * else.
 *
 * Design notes
 * - The write orders of fs.ts (data → every FAT copy, first copy first → directory entry; deletes the
 *   other way; a link from an existing chain to new clusters only after the new clusters are in every
 *   copy) mean a cut leaves: clusters allocated in the FAT that no entry names (lost chains: a half
 *   written new file, the old chain of a cut rename-over or unlink), the first FAT ahead of the others,
 *   FSInfo's free count behind, long-name slots whose short entry was never written or was deleted
 *   first, two entries naming one chain (a cut rename) and a chain longer than its file's size (a cut
 *   resize). The first four are repaired; the last two are left as they are, because repeating the
 *   operation finishes them (the switch repeats its renames; a resize repeat ends or reuses the chain).
 * - A scan first, writing nothing: the whole tree is walked from the root (a work list, no recursion),
 *   every chain followed through the first FAT and its clusters marked in a bitmap (one bit per
 *   cluster), so the walk is bounded by the cluster count and a cluster met twice ends it: inside one
 *   chain that is a loop, across chains a cross-link. Entries naming a first cluster already walked are
 *   second names of one chain (a cut rename, in one directory or, for a move, in two): kept, not walked
 *   again. The scan refuses (FatRepairError, nothing written) what it cannot judge: a loop, a cross-link,
 *   a chain into a free or bad cluster or out of range, a file whose chain is shorter than its size
 *   (its missing clusters may be among the "lost" ones), a directory whose chain or "."/".." entries
 *   are damaged, a directory inside itself, a file and a directory naming one cluster, and entries past
 *   a directory's end marker (Linux and fsck.fat read them, livestick does not). fsck.fat decides those.
 * - Long-name slots are judged as fsck.fat judges them (lfn.c): a run of LFN slots followed by a free
 *   slot or the directory's end, or a complete one followed by another LFN slot, is orphaned and
 *   marked deleted (0xE5); the cases fsck.fat leaves alone (a fragment outside a sequence, a wrong
 *   sequence number or checksum) are left alone too.
 * - Then the writes, each safe to cut (the volume stays dirty until close, so the next open repairs
 *   again): orphaned slots deleted; the other FAT copies made equal to the first, sector by sector where
 *   they differ; every allocated cluster nothing names freed in the table (bad clusters stay marked) and
 *   written back to every copy; FSInfo recounted; a flush. A cluster any entry names is never freed.
 */
import { CorruptImageError, RepairRefusedError } from '../../errors.ts';
import type { Disk } from '../../io/disk.ts';
import { FORMAT, type Layout } from './boot.ts';
import { ATTR_DIRECTORY, ATTR_LFN, ATTR_VOLUME, DELETED, ENTRY_SIZE, MAX_DIR_ENTRIES, decodeLfnEntry, decodeShortEntry, joinLfn, shortNameText, type LfnEntry } from './dirent.ts';
import { FREE, type FatTable, type Run } from './table.ts';

/** The repair found something it cannot judge: nothing was written; fsck.fat has to decide. */
export class FatRepairError extends RepairRefusedError {
  constructor(what: string) {
    super(FORMAT, what, 'fsck.fat');
  }
}

export interface FatRepairReport {
  /** Allocated clusters no entry named, freed (in every FAT copy). */
  readonly lostClusters: number;
  /** Sectors of the other FAT copies rewritten to equal the first. */
  readonly fatSectorsCopied: number;
  /** Orphaned long-name slots marked deleted. */
  readonly orphanSlots: number;
  /** Entries that name a chain another entry names first (cut renames), kept. */
  readonly secondNames: number;
}

interface DirWork {
  /** 0: the FAT12/16 root region. */
  readonly cluster: number;
  readonly clusters: readonly number[];
  readonly path: string;
  readonly parent: DirWork | undefined;
}

interface Scan {
  readonly named: Uint8Array;
  /** Device offsets of orphaned LFN slots, with the slot bytes to write (first byte 0xE5). */
  readonly orphans: { offset: number; bytes: Uint8Array }[];
  readonly secondNames: number;
}

const refuse = (what: string): never => {
  throw new FatRepairError(what);
};

/** Walks the tree and marks what it names; refuses what it cannot judge. Reads only. */
async function scan(disk: Disk, layout: Layout, fat: FatTable): Promise<Scan> {
  const max = fat.maxCluster;
  const named = new Uint8Array((max >>> 3) + 1);
  const isSet = (c: number): boolean => (named[c >>> 3]! & (1 << (c & 7))) !== 0;
  const cs = layout.clusterSize;
  const fat32 = layout.type === 'fat32';
  const dirLimit = Math.ceil((MAX_DIR_ENTRIES * ENTRY_SIZE) / cs);

  /** Follows a chain, marking it; at most `limit` clusters. Refuses loops, cross-links and bad links. */
  const follow = async (first: number, what: string, limit: number): Promise<Run[]> => {
    const runs: Run[] = [];
    let count = 0;
    for (let c = first; ; ) {
      if (c < 2 || c > max) refuse(`${what}: its chain names cluster ${c}, outside 2..${max}`);
      if (isSet(c)) {
        const own = runs.some((r) => c >= r.first && c < r.first + r.count);
        refuse(own ? `${what}: its cluster chain loops back to cluster ${c}` : `${what}: cluster ${c} of its chain belongs to another chain too (cross-linked)`);
      }
      if (++count > limit) refuse(`${what}: its chain is longer than ${limit} clusters`);
      named[c >>> 3]! |= 1 << (c & 7);
      const last = runs[runs.length - 1];
      if (last && last.first + last.count === c) runs[runs.length - 1] = { first: last.first, count: last.count + 1 };
      else runs.push({ first: c, count: 1 });
      const next = fat.peek(c) ?? (await fat.get(c));
      if (fat.isEndOfChain(next)) return runs;
      if (next === FREE) refuse(`${what}: cluster ${c} of its chain links to a free cluster`);
      if (next === fat.badCluster) refuse(`${what}: cluster ${c} of its chain links to a bad cluster`);
      c = next;
    }
  };

  /** First clusters walked: directory or file, and (files) how many clusters the chain has. */
  const firsts = new Map<number, { dir: boolean; clusters: number }>();
  const orphans: { offset: number; bytes: Uint8Array }[] = [];
  let secondNames = 0;
  const work: DirWork[] = [];
  if (fat32) {
    const clusters: number[] = [];
    for (const r of await follow(layout.rootCluster, 'the root directory', dirLimit)) for (let k = 0; k < r.count; k++) clusters.push(r.first + k);
    firsts.set(layout.rootCluster, { dir: true, clusters: clusters.length });
    work.push({ cluster: layout.rootCluster, clusters, path: '', parent: undefined });
  } else {
    work.push({ cluster: 0, clusters: [], path: '', parent: undefined });
  }

  while (work.length > 0) {
    const dir = work.pop()!;
    const shown = dir.path || '/';
    let bytes: Uint8Array;
    if (dir.cluster === 0) {
      bytes = new Uint8Array(layout.rootBytes);
      await disk.read(bytes, layout.rootOffset);
    } else {
      bytes = new Uint8Array(dir.clusters.length * cs);
      for (let i = 0; i < dir.clusters.length; i++) await disk.read(bytes.subarray(i * cs, (i + 1) * cs), layout.dataOffset + (dir.clusters[i]! - 2) * cs);
    }
    const slotOffset = (slot: number): number => {
      if (dir.cluster === 0) return layout.rootOffset + slot * ENTRY_SIZE;
      const at = slot * ENTRY_SIZE;
      return layout.dataOffset + (dir.clusters[Math.floor(at / cs)]! - 2) * cs + (at % cs);
    };
    const capacity = bytes.byteLength / ENTRY_SIZE;
    const isRoot = dir.parent === undefined;
    let start = 0;
    if (!isRoot) {
      // "." and "..": checked by name (fsck.fat fixes their clusters itself; a cut directory move leaves
      // ".." naming either parent until the move is repeated).
      if (capacity < 2 || bytes[0] !== 0x2e || bytes[ENTRY_SIZE] !== 0x2e || !(bytes[11]! & ATTR_DIRECTORY) || !(bytes[ENTRY_SIZE + 11]! & ATTR_DIRECTORY)) {
        refuse(`directory ${shown}: its first two entries are not "." and ".."`);
      }
      start = 2;
    }
    let lfn: { slots: number[]; pieces: (LfnEntry | undefined)[]; expect: number } | undefined;
    const orphaned = (): void => {
      if (!lfn) return;
      for (const slot of lfn.slots) {
        const raw = bytes.slice(slot * ENTRY_SIZE, (slot + 1) * ENTRY_SIZE);
        raw[0] = DELETED;
        orphans.push({ offset: slotOffset(slot), bytes: raw });
      }
      lfn = undefined;
    };
    let ended = false;
    const children: DirWork[] = [];
    for (let slot = start; slot < capacity; slot++) {
      const raw = bytes.subarray(slot * ENTRY_SIZE, (slot + 1) * ENTRY_SIZE);
      const b0 = raw[0]!;
      if (b0 === 0 || b0 === DELETED) {
        orphaned();
        if (b0 === 0) ended = true;
        continue;
      }
      if (ended) refuse(`directory ${shown}: slot ${slot} is in use after the end marker`);
      const attr = raw[11]!;
      if (attr === ATTR_LFN) {
        if (lfn && lfn.expect === 0) orphaned();
        const seq = b0 & 0x1f;
        if (b0 & 0x40 && seq !== 0) lfn = { slots: [], pieces: [], expect: seq };
        else if (!lfn) continue; // a fragment outside a sequence: fsck.fat leaves it
        else if (seq !== lfn.expect) {
          lfn = undefined; // a wrong sequence number: fsck.fat leaves it and forgets the name so far
          continue;
        }
        lfn.slots.push(slot);
        let piece: LfnEntry | undefined; // only for the name in messages
        try {
          piece = decodeLfnEntry(raw);
        } catch (err) {
          if (!(err instanceof CorruptImageError)) throw err;
        }
        lfn.pieces.push(piece);
        lfn.expect--;
        continue;
      }
      const long = lfn && lfn.expect === 0 && lfn.pieces.every((p) => p) ? lfn.pieces : undefined;
      lfn = undefined;
      if ((attr & 0x3f) === ATTR_LFN) refuse(`directory ${shown}: slot ${slot} has long-name attributes plus others (0x${attr.toString(16)})`);
      if (attr & ATTR_VOLUME) continue;
      const short = decodeShortEntry(raw, fat32);
      // (For messages: the long name where it belongs to this entry.)
      const path = `${dir.path}/${(long && joinLfn(long as LfnEntry[], short.name)) ?? shortNameText(short.name, short.ntCase)}`;
      if (b0 === 0x2e) refuse(`directory ${shown}: a "." entry at slot ${slot}`);
      const isDir = (attr & ATTR_DIRECTORY) !== 0;
      const first = short.firstCluster;
      const need = isDir ? 0 : Math.ceil(short.size / cs);
      if (first === 0) {
        if (isDir) refuse(`directory ${path} has no cluster`);
        if (need > 0) refuse(`${path}: ${short.size} bytes and no cluster chain`);
        continue;
      }
      if (first < 2 || first > max) refuse(`${path}: first cluster ${first} is outside 2..${max}`);
      const prior = firsts.get(first);
      if (prior) {
        if (prior.dir !== isDir) refuse(`${path}: a file and a directory name cluster ${first}`);
        for (let up: DirWork | undefined = dir; up; up = up.parent) if (up.cluster === first) refuse(`directory ${path} is inside itself`);
        if (!isDir && need > prior.clusters) refuse(`${path}: its chain of ${prior.clusters} clusters is shorter than its ${short.size} bytes`);
        secondNames++;
        continue;
      }
      if (isSet(first)) refuse(`${path}: its first cluster ${first} lies inside another chain (cross-linked)`);
      const runs = await follow(first, isDir ? `directory ${path}` : path, isDir ? dirLimit : layout.clusterCount);
      const clusters = runs.reduce((n, r) => n + r.count, 0);
      if (need > clusters) refuse(`${path}: its chain of ${clusters} clusters is shorter than its ${short.size} bytes`);
      firsts.set(first, { dir: isDir, clusters });
      if (isDir) {
        const list: number[] = [];
        for (const r of runs) for (let k = 0; k < r.count; k++) list.push(r.first + k);
        children.push({ cluster: first, clusters: list, path, parent: dir });
      }
    }
    orphaned();
    // Depth first, in directory order (the work list is a stack).
    for (let i = children.length - 1; i >= 0; i--) work.push(children[i]!);
  }
  return { named, orphans, secondNames };
}

/**
 * Repairs a dirty volume opened for writing (see the notes above). `writeFsInfo` recounts FSInfo
 * (FatFs owns it). Throws FatRepairError, having written nothing, when the scan cannot judge the tree.
 */
export async function repairFat(disk: Disk, layout: Layout, fat: FatTable, writeFsInfo: () => Promise<void>): Promise<FatRepairReport> {
  let found: Scan;
  try {
    found = await scan(disk, layout, fat);
  } catch (err) {
    if (err instanceof CorruptImageError && !(err instanceof FatRepairError)) throw new FatRepairError(err.message.replace(/^fat: /, ''));
    throw err;
  }
  // Orphaned slots, consecutive ones in one write.
  const { orphans } = found;
  for (let i = 0; i < orphans.length; ) {
    let j = i + 1;
    while (j < orphans.length && orphans[j]!.offset === orphans[j - 1]!.offset + ENTRY_SIZE) j++;
    const bytes = new Uint8Array((j - i) * ENTRY_SIZE);
    for (let k = i; k < j; k++) bytes.set(orphans[k]!.bytes, (k - i) * ENTRY_SIZE);
    await disk.write(bytes, orphans[i]!.offset);
    i = j;
  }
  const fatSectorsCopied = await fat.syncCopies();
  const lostClusters = await fat.freeUnnamed(found.named);
  await fat.writeBack();
  await writeFsInfo();
  await disk.flush();
  return { lostClusters, fatSectorsCopied, orphanSlots: orphans.length, secondNames: found.secondNames };
}
