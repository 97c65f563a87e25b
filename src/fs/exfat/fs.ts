/**
 * ExfatFs: an exFAT volume over a Disk, read and write (the WritableFileSystem of filesystem.ts).
 *
 * Design notes
 * - Open reads the boot region (backup if the main one is damaged), the root directory (allocation
 *   bitmap, up-case table, label) and keeps only the bitmap (one bit per cluster) in memory; FAT
 *   entries are read through a small page cache, directories are read whole when a path goes through
 *   them (at most 256 MiB each, as the spec bounds them), file data never.
 * - Every cluster pointer is checked against the heap before use; a file's clusters become runs
 *   (contiguous NoFatChain files are one run), FAT chains are walked ceil(DataLength/cluster) steps and
 *   runs that overlap are refused, so cycles and cross-chains end in a CorruptImageError. What the FAT
 *   holds after the last cluster the size needs is not looked at (Linux reads the same way): a chain
 *   that goes on past the size (a resize cut between the FAT and the entry set) still reads.
 * - Writes: VolumeDirty is set in the main boot sector (flushed) before the first change and cleared
 *   (with PercentInUse) by flush/close, unless a write or flush failed during the session (then it
 *   stays set, for the next open to repair).
 * - `dirty` is VolumeDirty as found at open. A dirty volume opened for writing is repaired by the open,
 *   before anything else (#repair): a scan that writes nothing walks the whole tree from the root (a
 *   work list; every directory listed once, second names of one first cluster — a cut rename — kept and
 *   not walked again) and marks in a bitmap every cluster a set names (within its DataLength; the
 *   allocation bitmap, the up-case table and allocations of benign entries too); a cluster met twice
 *   (a cross-link; a loop inside one chain is refused by the chain walk), a chain into a non-cluster, a
 *   damaged set or directory, a directory inside itself, or a named cluster the bitmap has free (no cut
 *   of ours leaves one: the bitmap is written before anything names a cluster) refuses the repair with
 *   ExfatRepairError, nothing written. Then: in-use secondaries without a primary (a delete cut between
 *   two directory runs) are marked unused, a chained file whose FAT goes on past its DataLength (a cut
 *   resize) gets its end mark where the size ends (clusters past DataLength are not the file's; the size
 *   and data stay), and bitmap bits nothing names are cleared (lost clusters). There is one FAT (TexFAT
 *   is refused), so there are no copies to compare. Opened read-only, a dirty volume is read as it is. Order per operation: data and new clusters first (bitmap, then
 *   FAT where a chain is needed), the entry set last; deletes remove the entry set first, then free the
 *   clusters. A crash leaves lost clusters at worst, except inside a rename (below). An in-place set
 *   rewrite writes only the bytes that change (one write where the set does not straddle a sector).
 * - Rename is not atomic (renameIsAtomic false): a new name's set is written (in one write where the
 *   directory has room inside a sector or one run), then the old set deleted; onto an existing file,
 *   the target's set is rewritten in place to name the source's data, the source's set deleted, the
 *   target's old clusters freed last. A cut leaves at worst both names for one file (plus lost
 *   clusters); the same rename again finishes it (a target naming the source's first cluster costs only
 *   the source's set). unlink, rmdir and replacements free clusters only when no other set of the same
 *   directory names the same first cluster. Two sets matching one name (old and new spelling after a
 *   cut): the exact spelling wins. A delete straddling two directory runs writes the part with the file
 *   entry first; the in-use secondaries a cut leaves behind are skipped by listing.
 * - New files prefer one contiguous run (NoFatChain); a fragmented allocation gets a FAT chain.
 *   createFile clears the clusters (reads them in 4 MiB pieces, writes zeros only over non-zero
 *   clusters, so a sparse image stays sparse) and sets ValidDataLength to the size by default, because
 *   Linux before 6.8 reads ValidDataLength as the file size (the qemu oracle's 6.1 kernel does);
 *   `uninitialized` skips the clearing. With `lazyValidDataLength` a created file starts at 0 and grows
 *   it as it is written (a write past it zeroes the gap first), so a huge file costs only the bitmap
 *   bits; the entry set is then rewritten on the file Disk's flush/close and on the volume's flush.
 *   Reads past ValidDataLength give zeros.
 * - File Disks resize (resizeFile): growth takes the free clusters after the last one first (a
 *   NoFatChain file stays one while it is contiguous; otherwise the whole chain is written before the
 *   set says so), new bytes are cleared unless ValidDataLength is lazy or the file `uninitialized`;
 *   bitmap, zeros, FAT, then the set. Shrinking writes the set first, then the FAT end mark, then frees
 *   the tail. The same resize again completes a cut one (an overlong chain is ended; its tail stays lost
 *   space: clusters past DataLength are not the file's, so they are never freed on the FAT's word).
 * - Names compare through the volume's up-case table; sets carry the name hash and checksum.
 */
import {
  AlreadyExistsError,
  CorruptImageError,
  RepairRefusedError,
  LivestickError,
  ExitCode,
  NotFoundError,
  ReadOnlyError,
  UnsupportedFeatureError,
  UsageError,
} from '../../errors.ts';
import { CLEAR_PIECE, zeroBuffer } from '../../io/bytes.ts';
import { checkRange, readAt, type Disk } from '../../io/disk.ts';
import type { CreateFileOptions, FsEntry, FsSpace, FsStat, WritableFile, WritableFileSystem } from '../filesystem.ts';
import { FORMAT, VOLUME_FLAG_ACTIVE_FAT, VOLUME_FLAG_DIRTY, readBootRegion, type BootSector } from './boot.ts';
import {
  ATTR_ARCHIVE,
  ATTR_DIRECTORY,
  ENTRY_SIZE,
  FLAG_ALLOCATION_POSSIBLE,
  FLAG_NO_FAT_CHAIN,
  IN_USE,
  TYPE_BITMAP,
  TYPE_FILE,
  TYPE_LABEL,
  TYPE_UPCASE,
  decodeBitmapEntry,
  decodeFileEntrySet,
  decodeLabelEntry,
  decodeTimestamp,
  decodeUpcaseEntry,
  encodeFileEntrySet,
  encodeTimestamp,
  invalidNameReason,
  nameHash,
  type FileEntrySet,
} from './entries.ts';
import { decodeUpcaseTable } from './upcase.ts';

const FAT_EOF = 0xffffffff;
const FAT_BAD = 0xfffffff7;
const MAX_DIR_BYTES = 256 * 1024 * 1024;
const FAT_PAGE = 4096;
const FAT_CACHE_PAGES = 256;
const IO_CHUNK = 1 << 20;

export interface ExfatOpenOptions {
  /** Refuse every change (also implied by a read-only Disk). */
  readOnly?: boolean;
  /** The clock for timestamps, in ms since the epoch (tests pin it for byte-identical images). */
  now?: () => number;
  /**
   * createFile leaves ValidDataLength at 0 and grows it as the file is written, instead of zeroing the
   * whole file and setting it to the size. Fast for huge files, and right for Windows, macOS and Linux
   * 6.8+, but Linux before 6.8 takes ValidDataLength as the file's size (such a file looks short there).
   */
  lazyValidDataLength?: boolean;
}

/** A run of clusters: `length` clusters from `start`. */
interface Run {
  readonly start: number;
  readonly length: number;
}

interface DirRef {
  readonly firstCluster: number;
  /** Root: undefined (FAT chain, length from the chain). */
  readonly node: Node | undefined;
}

interface Node {
  set: FileEntrySet;
  /** The directory holding the set, and where: entry index and entry count. */
  readonly parent: DirRef;
  index: number;
  count: number;
}

interface DirListing {
  readonly runs: Run[];
  readonly bytes: Uint8Array;
  readonly sets: Node[];
  /** Entry indexes of in-use secondaries without a primary (what a cut delete can leave). */
  readonly orphans: number[];
  /** Clusters benign entries record (vendor allocations, an access control table). */
  readonly allocations: EntryAllocation[];
}

/** The repair of a dirty volume found something it cannot judge: nothing was written; fsck.exfat decides. */
export class ExfatRepairError extends RepairRefusedError {
  constructor(what: string) {
    super(FORMAT, what, 'fsck.exfat');
  }
}

export interface ExfatRepairReport {
  /** Bitmap bits no set named, cleared. */
  readonly lostClusters: number;
  /** In-use secondary entries without a primary, marked unused. */
  readonly orphanEntries: number;
  /** Chained files whose FAT went on past their DataLength, ended there. */
  readonly chainsEnded: number;
  /** Sets naming a first cluster another set names first (cut renames), kept. */
  readonly secondNames: number;
}

/** A cluster allocation recorded by a benign entry (a vendor allocation, an access control table). */
interface EntryAllocation {
  readonly first: number;
  readonly noFatChain: boolean;
  readonly length: number;
  readonly what: string;
}

/** The allocation a benign primary or secondary entry records, if it has one (generic entry template). */
function allocationOf(e: Uint8Array, what: string): EntryAllocation | undefined {
  const flags = e[1]!;
  const dv = new DataView(e.buffer, e.byteOffset, e.byteLength);
  const first = dv.getUint32(20, true);
  const length = Number(dv.getBigUint64(24, true));
  if (!(flags & FLAG_ALLOCATION_POSSIBLE) || first === 0 || length === 0) return undefined;
  return { first, noFatChain: (flags & FLAG_NO_FAT_CHAIN) !== 0, length, what };
}

/**
 * The Disk as ExfatFs uses it: a write or flush that fails calls `failed` (the volume then stays dirty
 * at close).
 */
function watched(disk: Disk, failed: () => void): Disk {
  const note = (err: unknown): never => {
    failed();
    throw err;
  };
  return {
    get size() {
      return disk.size;
    },
    get readOnly() {
      return disk.readOnly;
    },
    read: (buf, offset) => disk.read(buf, offset),
    write: (buf, offset) => disk.write(buf, offset).catch(note),
    flush: () => disk.flush().catch(note),
    close: () => disk.close(),
  };
}

function noSpace(message: string): LivestickError {
  return new LivestickError('NO_SPACE', ExitCode.ioError, `${message}: no space left on device (ENOSPC)`);
}

function isDir(set: FileEntrySet): boolean {
  return (set.attributes & ATTR_DIRECTORY) !== 0;
}


/** Clusters [from, to) of a file (counted in file order) as runs. */
function sliceRuns(runs: readonly Run[], from: number, to: number): Run[] {
  const out: Run[] = [];
  let at = 0;
  for (const r of runs) {
    const lo = Math.max(from, at);
    const hi = Math.min(to, at + r.length);
    if (hi > lo) out.push({ start: r.start + (lo - at), length: hi - lo });
    at += r.length;
    if (at >= to) break;
  }
  return out;
}

/** Runs in file order, neighbours that touch merged. */
function joinRuns(a: readonly Run[], b: readonly Run[]): Run[] {
  const out: Run[] = [...a];
  for (const r of b) {
    const last = out[out.length - 1];
    if (last && last.start + last.length === r.start) out[out.length - 1] = { start: last.start, length: last.length + r.length };
    else out.push(r);
  }
  return out;
}

const clustersIn = (runs: readonly Run[]): number => runs.reduce((n, r) => n + r.length, 0);

/** Refuses a chain whose runs share clusters (a loop inside the clusters its size needs). */
function checkOverlaps(runs: readonly Run[], what: string): void {
  const sorted = [...runs].sort((x, y) => x.start - y.start);
  for (let i = 1; i < sorted.length; i++) {
    if (sorted[i - 1]!.start + sorted[i - 1]!.length > sorted[i]!.start) {
      throw new CorruptImageError(FORMAT, `${what} FAT chain`, `cluster ${sorted[i]!.start} appears twice (a loop)`);
    }
  }
}

export class ExfatFs implements WritableFileSystem {
  readonly type = 'exfat';
  readonly renameIsAtomic = false;
  readonly readOnly: boolean;
  readonly disk: Disk;
  readonly boot: BootSector;
  /** The main boot region failed its checks and the backup was used. */
  readonly usedBackupBootRegion: boolean;
  readonly sectorSize: number;
  readonly clusterSize: number;
  #label: string | undefined;
  readonly #upcase: Uint16Array;
  readonly #bitmap: Uint8Array;
  readonly #bitmapRuns: Run[];
  readonly #upcaseRuns: Run[];
  #freeClusters: number;
  readonly #fatBase: number;
  readonly #fatCache = new Map<number, Uint8Array>();
  readonly #now: () => number;
  readonly #lazyValid: boolean;
  readonly #wasDirty: boolean;
  #dirtyMarked = false;
  /** A write or flush failed during this session: VolumeDirty stays set. */
  #failed = false;
  #repaired: ExfatRepairReport | undefined;
  readonly #openFiles = new Set<ExfatFileDisk>();

  private constructor(disk: Disk, boot: BootSector, usedBackup: boolean, readOnly: boolean, upcase: Uint16Array, bitmap: Uint8Array, bitmapRuns: Run[], upcaseRuns: Run[], label: string | undefined, now: () => number, lazyValid = false) {
    this.disk = watched(disk, () => {
      this.#failed = true;
    });
    this.boot = boot;
    this.usedBackupBootRegion = usedBackup;
    this.readOnly = readOnly;
    this.sectorSize = 2 ** boot.bytesPerSectorShift;
    this.clusterSize = 2 ** (boot.bytesPerSectorShift + boot.sectorsPerClusterShift);
    this.#upcase = upcase;
    this.#bitmap = bitmap;
    this.#bitmapRuns = bitmapRuns;
    this.#upcaseRuns = upcaseRuns;
    this.#label = label;
    this.#now = now;
    this.#lazyValid = lazyValid;
    this.#wasDirty = (boot.volumeFlags & VOLUME_FLAG_DIRTY) !== 0;
    const activeFat = boot.numberOfFats === 2 && boot.volumeFlags & VOLUME_FLAG_ACTIVE_FAT ? 1 : 0;
    this.#fatBase = (boot.fatOffset + activeFat * boot.fatLength) * this.sectorSize;
    let used = 0;
    for (let c = 0; c < boot.clusterCount; c++) if (bitmap[c >>> 3]! & (1 << (c & 7))) used++;
    this.#freeClusters = boot.clusterCount - used;
  }

  static async open(disk: Disk, options: ExfatOpenOptions = {}): Promise<ExfatFs> {
    const { boot, usedBackup } = await readBootRegion(disk);
    const ss = 2 ** boot.bytesPerSectorShift;
    if (boot.volumeLength * ss > disk.size) {
      throw new CorruptImageError(FORMAT, 'VolumeLength', `${boot.volumeLength} sectors exceed the device (${disk.size} bytes)`, 72);
    }
    const readOnly = options.readOnly === true || disk.readOnly;
    // A provisional instance reads the root with an identity up-case table and an empty bitmap.
    const probe = new ExfatFs(disk, boot, usedBackup, true, new Uint16Array(0), new Uint8Array(Math.ceil(boot.clusterCount / 8)), [], [], undefined, Date.now);
    const rootRuns = await probe.#rootRuns();
    const root = await probe.#readRuns(rootRuns, rootRuns.reduce((n, r) => n + r.length, 0) * probe.clusterSize);
    let bitmapEntry;
    let upcaseEntry;
    let label: string | undefined;
    for (let i = 0; i < root.byteLength / ENTRY_SIZE; i++) {
      const e = root.subarray(i * ENTRY_SIZE, (i + 1) * ENTRY_SIZE);
      if (e[0] === 0) break;
      if (e[0] === TYPE_BITMAP && bitmapEntry === undefined) bitmapEntry = decodeBitmapEntry(e, i * ENTRY_SIZE);
      else if (e[0] === TYPE_UPCASE && upcaseEntry === undefined) upcaseEntry = decodeUpcaseEntry(e, i * ENTRY_SIZE);
      else if (e[0] === TYPE_LABEL && label === undefined) label = decodeLabelEntry(e, i * ENTRY_SIZE);
    }
    if (bitmapEntry === undefined) throw new CorruptImageError(FORMAT, 'allocation bitmap entry', 'missing from the root directory');
    if (upcaseEntry === undefined) throw new CorruptImageError(FORMAT, 'up-case table entry', 'missing from the root directory');
    if (boot.numberOfFats === 2) throw new UnsupportedFeatureError(FORMAT, 'TexFAT', 'two FATs and two allocation bitmaps');
    const bitmapBytes = Math.ceil(boot.clusterCount / 8);
    if (bitmapEntry.dataLength < bitmapBytes || bitmapEntry.dataLength > bitmapBytes + probe.clusterSize) {
      throw new CorruptImageError(FORMAT, 'allocation bitmap DataLength', `${bitmapEntry.dataLength} bytes for ${boot.clusterCount} clusters`);
    }
    const bitmapRuns = await probe.#chainRuns(bitmapEntry.firstCluster, false, bitmapEntry.dataLength, 'allocation bitmap');
    const bitmap = (await probe.#readRuns(bitmapRuns, bitmapEntry.dataLength)).slice(0, bitmapBytes);
    if (upcaseEntry.dataLength === 0 || upcaseEntry.dataLength > 2 * 0x20000) {
      throw new CorruptImageError(FORMAT, 'up-case table DataLength', `${upcaseEntry.dataLength} bytes`);
    }
    const upcaseRuns = await probe.#chainRuns(upcaseEntry.firstCluster, false, upcaseEntry.dataLength, 'up-case table');
    const upcase = decodeUpcaseTable(await probe.#readRuns(upcaseRuns, upcaseEntry.dataLength), upcaseEntry.checksum);
    const fs = new ExfatFs(disk, boot, usedBackup, readOnly, upcase, bitmap, bitmapRuns, upcaseRuns, label, options.now ?? Date.now, options.lazyValidDataLength === true);
    // Not closed cleanly: repaired now, before anything else; close then clears VolumeDirty. (A volume
    // read from the backup boot region takes no writes at all.)
    if (!readOnly && fs.#wasDirty && !usedBackup) {
      fs.#repaired = await fs.#repair();
      fs.#dirtyMarked = true;
    }
    return fs;
  }

  get label(): string | undefined {
    return this.#label === '' ? undefined : this.#label;
  }

  get uuid(): string {
    const hex = this.boot.serial.toString(16).toUpperCase().padStart(8, '0');
    return `${hex.slice(0, 4)}-${hex.slice(4)}`;
  }

  /** Whether the volume was marked dirty when it was opened (not cleanly unmounted). */
  get wasDirty(): boolean {
    return this.#wasDirty;
  }

  /** VolumeDirty as found at open (FileSystem.dirty): opened for writing, such a volume is repaired by the open. */
  get dirty(): boolean {
    return this.#wasDirty;
  }

  /** What the open repaired (a dirty volume opened for writing), or undefined. */
  get repaired(): ExfatRepairReport | undefined {
    return this.#repaired;
  }

  /** The repair of a dirty volume (see the notes above). Throws ExfatRepairError, having written nothing. */
  async #repair(): Promise<ExfatRepairReport> {
    const refuse = (what: string): never => {
      throw new ExfatRepairError(what);
    };
    const total = this.boot.clusterCount;
    const named = new Uint8Array(this.#bitmap.byteLength);
    const isNamed = (c: number): boolean => (named[(c - 2) >>> 3]! & (1 << ((c - 2) & 7))) !== 0;
    const mark = (runs: readonly Run[], what: string): void => {
      for (const r of runs) {
        for (let c = r.start; c < r.start + r.length; c++) {
          if (isNamed(c)) refuse(`${what}: cluster ${c} belongs to another chain too (cross-linked)`);
          named[(c - 2) >>> 3]! |= 1 << ((c - 2) & 7);
        }
      }
    };
    interface Work {
      readonly dir: DirRef;
      readonly path: string;
      readonly parent: Work | undefined;
    }
    const orphans: { runs: Run[]; index: number; entry: Uint8Array }[] = [];
    const chainEnds: number[] = [];
    let secondNames = 0;
    try {
      mark(this.#bitmapRuns, 'the allocation bitmap');
      mark(this.#upcaseRuns, 'the up-case table');
      const rootRuns = await this.#rootRuns();
      mark(rootRuns, 'the root directory');
      const firsts = new Map<number, { dir: boolean; clusters: number }>([[this.boot.rootCluster, { dir: true, clusters: clustersIn(rootRuns) }]]);
      const work: Work[] = [{ dir: ExfatFs.#root, path: '', parent: undefined }];
      while (work.length > 0) {
        const item = work.pop()!;
        const listing = await this.#list(item.dir);
        for (const index of listing.orphans) orphans.push({ runs: listing.runs, index, entry: listing.bytes.slice(index * ENTRY_SIZE, (index + 1) * ENTRY_SIZE) });
        for (const a of listing.allocations) mark(await this.#chainRuns(a.first, a.noFatChain, a.length, a.what), `${item.path || '/'}: ${a.what}`);
        const children: Work[] = [];
        for (const node of listing.sets) {
          const s = node.set;
          const path = `${item.path}/${s.name}`;
          if (s.dataLength === 0) continue;
          const dir = isDir(s);
          const prior = firsts.get(s.firstCluster);
          if (prior) {
            if (prior.dir !== dir) refuse(`${path}: a file and a directory name cluster ${s.firstCluster}`);
            for (let up: Work | undefined = item; up; up = up.parent) if ((up.dir.node?.set.firstCluster ?? this.boot.rootCluster) === s.firstCluster) refuse(`directory ${path} is inside itself`);
            if (Math.ceil(s.dataLength / this.clusterSize) > prior.clusters) refuse(`${path}: its ${s.dataLength} bytes need more clusters than the chain it shares`);
            secondNames++;
            continue;
          }
          const ref: DirRef = { firstCluster: s.firstCluster, node };
          const runs = dir ? await this.#dirRuns(ref) : await this.#chainRuns(s.firstCluster, (s.secondaryFlags & FLAG_NO_FAT_CHAIN) !== 0, s.dataLength, `"${s.name}"`);
          mark(runs, path);
          firsts.set(s.firstCluster, { dir, clusters: clustersIn(runs) });
          if (!(s.secondaryFlags & FLAG_NO_FAT_CHAIN) && (await this.#chainGoesOn(runs))) {
            const last = runs[runs.length - 1]!;
            chainEnds.push(last.start + last.length - 1);
          }
          if (dir) children.push({ dir: ref, path, parent: item });
        }
        for (let i = children.length - 1; i >= 0; i--) work.push(children[i]!);
      }
    } catch (err) {
      if (err instanceof CorruptImageError && !(err instanceof ExfatRepairError)) throw new ExfatRepairError(err.message.replace(/^exfat: /, ''));
      throw err;
    }
    const lost: Run[] = [];
    let lostClusters = 0;
    for (let i = 0; i < total; i++) {
      const isUsed = (named[i >>> 3]! >> (i & 7)) & 1;
      const marked = (this.#bitmap[i >>> 3]! >> (i & 7)) & 1;
      if (isUsed && !marked) refuse(`cluster ${i + 2} is in use but free in the allocation bitmap`);
      if (marked && !isUsed) {
        const last = lost[lost.length - 1];
        if (last && last.start + last.length === i + 2) lost[lost.length - 1] = { start: last.start, length: last.length + 1 };
        else lost.push({ start: i + 2, length: 1 });
        lostClusters++;
      }
    }
    // The writes, each safe to cut (VolumeDirty stays set until close).
    for (const o of orphans) {
      o.entry[0]! &= ~IN_USE;
      await this.#writeEntries(o.runs, o.index, o.entry);
    }
    for (const c of chainEnds) await this.#setFat(c, FAT_EOF); // before the tail's bits are cleared
    if (lost.length > 0) await this.#markBitmap(lost, false);
    await this.disk.flush();
    return { lostClusters, orphanEntries: orphans.length, chainsEnded: chainEnds.length, secondNames };
  }

  /**
   * Checks the allocation: every cluster reachable from the root (metadata, directories, files, what
   * benign entries allocate) is used once and marked in the bitmap, and nothing else is marked. Returns the problems (empty: consistent).
   * fsck.exfat -n does not report lost clusters, so this is the tests' (and a status command's) check.
   */
  async verify(): Promise<string[]> {
    const problems: string[] = [];
    const seen = new Uint8Array(this.#bitmap.byteLength);
    const mark = (runs: readonly Run[], what: string): boolean => {
      let ok = true;
      for (const r of runs) {
        for (let c = r.start; c < r.start + r.length; c++) {
          const i = c - 2;
          if (seen[i >>> 3]! & (1 << (i & 7))) {
            if (problems.length < 100) problems.push(`cluster ${c} is used twice (again by ${what})`);
            ok = false;
          }
          seen[i >>> 3]! |= 1 << (i & 7);
        }
      }
      return ok;
    };
    mark(this.#bitmapRuns, 'the allocation bitmap');
    mark(this.#upcaseRuns, 'the up-case table');
    mark(await this.#rootRuns(), 'the root directory');
    const walk = async (dir: DirRef, path: string): Promise<void> => {
      const listing = await this.#list(dir);
      for (const a of listing.allocations) mark(await this.#chainRuns(a.first, a.noFatChain, a.length, a.what), `${path || '/'}: ${a.what}`);
      for (const node of listing.sets) {
        const s = node.set;
        const p = `${path}/${s.name}`;
        const runs = await this.#chainRuns(s.firstCluster, (s.secondaryFlags & FLAG_NO_FAT_CHAIN) !== 0, s.dataLength, `"${s.name}"`);
        if (mark(runs, p) && isDir(s)) await walk({ firstCluster: s.firstCluster, node }, p);
      }
    };
    await walk(ExfatFs.#root, '');
    for (let i = 0; i < this.boot.clusterCount; i++) {
      const used = (seen[i >>> 3]! >> (i & 7)) & 1;
      const marked = (this.#bitmap[i >>> 3]! >> (i & 7)) & 1;
      if (used !== marked && problems.length < 100) problems.push(`cluster ${i + 2} is ${used ? 'in use but free in the bitmap' : 'marked in the bitmap but unused (lost)'}`);
    }
    return problems;
  }

  // ---- clusters, FAT, bitmap ------------------------------------------------------------------

  #clusterOffset(cluster: number): number {
    return this.boot.clusterHeapOffset * this.sectorSize + (cluster - 2) * this.clusterSize;
  }

  #isCluster(c: number): boolean {
    return c >= 2 && c <= this.boot.clusterCount + 1;
  }

  async #fat(cluster: number): Promise<number> {
    const at = cluster * 4;
    const page = Math.floor(at / FAT_PAGE);
    let bytes = this.#fatCache.get(page);
    if (bytes === undefined) {
      const fatBytes = this.boot.fatLength * this.sectorSize;
      const len = Math.min(FAT_PAGE, fatBytes - page * FAT_PAGE);
      bytes = await readAt(this.disk, this.#fatBase + page * FAT_PAGE, len);
      if (this.#fatCache.size >= FAT_CACHE_PAGES) this.#fatCache.clear();
      this.#fatCache.set(page, bytes);
    }
    return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(at - page * FAT_PAGE, true);
  }

  async #setFat(cluster: number, value: number): Promise<void> {
    const at = cluster * 4;
    const entry = new Uint8Array(4);
    new DataView(entry.buffer).setUint32(0, value >>> 0, true);
    await this.disk.write(entry, this.#fatBase + at);
    const page = this.#fatCache.get(Math.floor(at / FAT_PAGE));
    if (page) page.set(entry, at % FAT_PAGE);
  }

  /** The runs of a file of `dataLength` bytes from `first`, checked against the heap and the FAT. */
  async #chainRuns(first: number, noFatChain: boolean, dataLength: number, what: string): Promise<Run[]> {
    if (dataLength === 0) return [];
    const count = Math.ceil(dataLength / this.clusterSize);
    if (!this.#isCluster(first) || count > this.boot.clusterCount) {
      throw new CorruptImageError(FORMAT, `${what} FirstCluster`, `cluster ${first} with ${dataLength} bytes is outside the heap`);
    }
    if (noFatChain) {
      if (first + count - 1 > this.boot.clusterCount + 1) throw new CorruptImageError(FORMAT, `${what} DataLength`, `${count} contiguous clusters from ${first} run past the heap`);
      return [{ start: first, length: count }];
    }
    const runs: Run[] = [];
    let start = first;
    let length = 1;
    let c = first;
    for (let i = 1; i < count; i++) {
      const next = await this.#fat(c);
      if (!this.#isCluster(next)) {
        throw new CorruptImageError(FORMAT, `${what} FAT chain`, `cluster ${c} points to ${next.toString(16)} after ${i} of ${count} clusters`, this.#fatBase + c * 4);
      }
      if (next === c + 1) length++;
      else {
        runs.push({ start, length });
        start = next;
        length = 1;
      }
      c = next;
    }
    runs.push({ start, length });
    // The entry after the last cluster the size needs is not looked at: a chain longer than the size
    // (a resize cut between the FAT and the entry set) reads as Linux reads it; its tail is lost space.
    if (runs.length > 1) checkOverlaps(runs, what);
    return runs;
  }

  /** Whether a chained file's FAT goes on past its last cluster (a resize cut before the entry set). */
  async #chainGoesOn(runs: readonly Run[]): Promise<boolean> {
    const last = runs[runs.length - 1];
    return last !== undefined && (await this.#fat(last.start + last.length - 1)) !== FAT_EOF;
  }

  async #rootRuns(): Promise<Run[]> {
    const runs: Run[] = [];
    const maxClusters = Math.min(this.boot.clusterCount, Math.ceil(MAX_DIR_BYTES / this.clusterSize));
    let c = this.boot.rootCluster;
    for (let n = 1; ; n++) {
      const last = runs[runs.length - 1];
      if (last && last.start + last.length === c) runs[runs.length - 1] = { start: last.start, length: last.length + 1 };
      else runs.push({ start: c, length: 1 });
      const next = await this.#fat(c);
      if (next === FAT_EOF) return runs;
      if (!this.#isCluster(next) || next === FAT_BAD) throw new CorruptImageError(FORMAT, 'root directory FAT chain', `cluster ${c} points to ${next.toString(16)}`, this.#fatBase + c * 4);
      if (n >= maxClusters) throw new CorruptImageError(FORMAT, 'root directory FAT chain', `longer than ${maxClusters} clusters (a cycle?)`);
      c = next;
    }
  }

  async #readRuns(runs: Run[], length: number): Promise<Uint8Array> {
    const out = new Uint8Array(length);
    let at = 0;
    for (const r of runs) {
      if (at >= length) break;
      const n = Math.min(r.length * this.clusterSize, length - at);
      await this.disk.read(out.subarray(at, at + n), this.#clusterOffset(r.start));
      at += n;
    }
    return out;
  }

  /** Disk offset of byte `pos` of a file laid out in `runs`, and how many bytes follow contiguously. */
  #locate(runs: readonly Run[], pos: number): { offset: number; contiguous: number } {
    let base = 0;
    for (const r of runs) {
      const bytes = r.length * this.clusterSize;
      if (pos < base + bytes) return { offset: this.#clusterOffset(r.start) + (pos - base), contiguous: base + bytes - pos };
      base += bytes;
    }
    throw new CorruptImageError(FORMAT, 'cluster runs', `byte ${pos} lies past the allocation`);
  }

  async readRunsAt(runs: readonly Run[], buf: Uint8Array, pos: number): Promise<void> {
    let done = 0;
    while (done < buf.byteLength) {
      const { offset, contiguous } = this.#locate(runs, pos + done);
      const n = Math.min(contiguous, buf.byteLength - done);
      await this.disk.read(buf.subarray(done, done + n), offset);
      done += n;
    }
  }

  async writeRunsAt(runs: readonly Run[], buf: Uint8Array, pos: number): Promise<void> {
    let done = 0;
    while (done < buf.byteLength) {
      const { offset, contiguous } = this.#locate(runs, pos + done);
      const n = Math.min(contiguous, buf.byteLength - done);
      await this.disk.write(buf.subarray(done, done + n), offset);
      done += n;
    }
  }

  #isFree(c: number): boolean {
    const i = c - 2;
    return (this.#bitmap[i >>> 3]! & (1 << (i & 7))) === 0;
  }

  async #markBitmap(runs: readonly Run[], used: boolean): Promise<void> {
    let lo = Infinity;
    let hi = -1;
    for (const r of runs) {
      for (let c = r.start; c < r.start + r.length; c++) {
        const i = c - 2;
        if (used) this.#bitmap[i >>> 3]! |= 1 << (i & 7);
        else this.#bitmap[i >>> 3]! &= ~(1 << (i & 7));
      }
      lo = Math.min(lo, (r.start - 2) >>> 3);
      hi = Math.max(hi, (r.start - 2 + r.length - 1) >>> 3);
      this.#freeClusters += used ? -r.length : r.length;
    }
    if (hi < 0) return;
    const from = lo - (lo % this.sectorSize);
    const to = Math.min(this.#bitmap.byteLength, hi + 1);
    await this.writeRunsAt(this.#bitmapRuns, this.#bitmap.subarray(from, to), from);
  }

  /** First-fit: one contiguous run of `count` clusters if there is one, else the first free clusters. */
  #findClusters(count: number): Run[] {
    if (count > this.#freeClusters) throw noSpace(`cannot allocate ${count} clusters (${this.#freeClusters} free)`);
    const total = this.boot.clusterCount;
    let runStart = -1;
    for (let i = 0; i < total; i++) {
      if ((i & 7) === 0 && this.#bitmap[i >>> 3] === 0xff && i + 8 <= total) {
        runStart = -1;
        i += 7;
        continue;
      }
      if (this.#bitmap[i >>> 3]! & (1 << (i & 7))) runStart = -1;
      else {
        if (runStart < 0) runStart = i;
        if (i - runStart + 1 === count) return [{ start: runStart + 2, length: count }];
      }
    }
    const runs: Run[] = [];
    let need = count;
    for (let i = 0; i < total && need > 0; i++) {
      if (this.#bitmap[i >>> 3]! & (1 << (i & 7))) continue;
      const last = runs[runs.length - 1];
      if (last && last.start + last.length === i + 2) runs[runs.length - 1] = { start: last.start, length: last.length + 1 };
      else runs.push({ start: i + 2, length: 1 });
      need--;
    }
    return runs;
  }

  async #writeChain(runs: readonly Run[]): Promise<void> {
    const clusters: number[] = [];
    for (const r of runs) for (let c = r.start; c < r.start + r.length; c++) clusters.push(c);
    for (let i = 0; i < clusters.length; i++) await this.#setFat(clusters[i]!, i + 1 < clusters.length ? clusters[i + 1]! : FAT_EOF);
  }

  /** Allocates `count` clusters: bitmap, then a FAT chain if fragmented (or `chain` asks for one). */
  async #allocate(count: number, chain = false): Promise<{ runs: Run[]; contiguous: boolean }> {
    if (count === 0) return { runs: [], contiguous: true };
    const runs = this.#findClusters(count);
    await this.#markBitmap(runs, true);
    const contiguous = runs.length === 1 && !chain;
    if (!contiguous) await this.#writeChain(runs);
    return { runs, contiguous };
  }

  async #free(runs: readonly Run[], chained: boolean): Promise<void> {
    if (chained) for (const r of runs) for (let c = r.start; c < r.start + r.length; c++) await this.#setFat(c, 0);
    await this.#markBitmap(runs, false);
  }

  /**
   * Makes the clusters of `runs` read as zeros without writing what is zero already: read in 4 MiB
   * pieces, zeros written only over clusters with a non-zero byte (a sparse image stays sparse).
   */
  async #clear(runs: readonly Run[]): Promise<void> {
    const cs = this.clusterSize;
    const pieceBytes = Math.max(cs, CLEAR_PIECE - (CLEAR_PIECE % cs));
    const zero = zeroBuffer(pieceBytes);
    let piece: Buffer | undefined;
    for (const r of runs) {
      const end = this.#clusterOffset(r.start + r.length);
      for (let at = this.#clusterOffset(r.start); at < end; ) {
        const len = Math.min(pieceBytes, end - at);
        piece ??= Buffer.allocUnsafe(pieceBytes);
        const buf = piece.subarray(0, len);
        await this.disk.read(buf, at);
        if (buf.compare(zero, 0, len) !== 0) {
          let dirtyFrom = -1;
          for (let o = 0; o <= len; o += cs) {
            const dirty = o < len && buf.compare(zero, 0, cs, o, o + cs) !== 0;
            if (dirty && dirtyFrom < 0) dirtyFrom = o;
            if (!dirty && dirtyFrom >= 0) {
              await this.disk.write(zero.subarray(0, o - dirtyFrom), at + dirtyFrom);
              dirtyFrom = -1;
            }
          }
        }
        at += len;
      }
    }
  }

  /** Makes bytes [from, to) of a file laid out in `runs` read as zeros (whole clusters through #clear). */
  async #zeroRange(runs: readonly Run[], from: number, to: number): Promise<void> {
    if (to <= from) return;
    const cs = this.clusterSize;
    const headEnd = Math.min(to, Math.ceil(from / cs) * cs);
    if (headEnd > from) await this.writeRunsAt(runs, zeroBuffer(headEnd - from).subarray(0, headEnd - from), from);
    const firstWhole = Math.ceil(from / cs);
    const lastWhole = Math.ceil(to / cs);
    if (lastWhole > firstWhole) await this.#clear(sliceRuns(runs, firstWhole, lastWhole));
  }

  async #zero(runs: readonly Run[]): Promise<void> {
    const zeros = new Uint8Array(Math.min(IO_CHUNK, this.clusterSize * 64));
    for (const r of runs) {
      const end = this.#clusterOffset(r.start) + r.length * this.clusterSize;
      for (let at = this.#clusterOffset(r.start); at < end; at += zeros.byteLength) await this.disk.write(zeros.subarray(0, Math.min(zeros.byteLength, end - at)), at);
    }
  }

  // ---- directories -------------------------------------------------------------------------

  async #dirRuns(dir: DirRef): Promise<Run[]> {
    if (dir.node === undefined) return this.#rootRuns();
    const s = dir.node.set;
    if (s.dataLength > MAX_DIR_BYTES || s.dataLength % this.clusterSize !== 0) {
      throw new CorruptImageError(FORMAT, 'directory DataLength', `${s.dataLength} bytes for "${s.name}"`);
    }
    return this.#chainRuns(s.firstCluster, (s.secondaryFlags & FLAG_NO_FAT_CHAIN) !== 0, s.dataLength, `directory "${s.name}"`);
  }

  async #list(dir: DirRef): Promise<DirListing> {
    const runs = await this.#dirRuns(dir);
    const length = runs.reduce((n, r) => n + r.length, 0) * this.clusterSize;
    const bytes = await this.#readRuns(runs, length);
    const sets: Node[] = [];
    const orphans: number[] = [];
    const allocations: EntryAllocation[] = [];
    const isRoot = dir.node === undefined;
    const n = length / ENTRY_SIZE;
    for (let i = 0; i < n; i++) {
      const type = bytes[i * ENTRY_SIZE]!;
      if (type === 0) break;
      if (!(type & IN_USE)) continue;
      const where = i * ENTRY_SIZE;
      if (type === TYPE_FILE) {
        const set = decodeFileEntrySet(bytes.subarray(where), this.#upcase, where);
        if (set.dataLength > 0) {
          const count = Math.ceil(set.dataLength / this.clusterSize);
          if (!this.#isCluster(set.firstCluster) || count > this.boot.clusterCount) {
            throw new CorruptImageError(FORMAT, 'FirstCluster', `"${set.name}": cluster ${set.firstCluster} with ${set.dataLength} bytes is outside the heap`, where + 52);
          }
        }
        const count = bytes[where + 1]! + 1;
        sets.push({ set, parent: dir, index: i, count });
        set.extra.forEach((e, k) => {
          if (!(e[0]! & IN_USE)) return;
          const a = allocationOf(e, `"${set.name}": secondary entry ${k + 1} of type ${e[0]!.toString(16)}`);
          if (a) allocations.push(a);
        });
        i += count - 1;
      } else if (isRoot && (type === TYPE_BITMAP || type === TYPE_UPCASE || type === TYPE_LABEL)) {
        continue;
      } else if ((type & 0x40) === 0 && (type & 0x20) === 0) {
        throw new CorruptImageError(FORMAT, 'directory entry', `unknown critical primary entry type ${type.toString(16)}`, where);
      } else if ((type & 0x40) === 0) {
        // A benign primary and its secondaries: skipped, their allocations noted.
        const count = bytes[where + 1]!;
        for (let k = 0; k <= count && i + k < n; k++) {
          const e = bytes.subarray((i + k) * ENTRY_SIZE, (i + k + 1) * ENTRY_SIZE);
          if (!(e[0]! & IN_USE)) continue;
          const a = allocationOf(e, `entry ${i + k} of type ${e[0]!.toString(16)}`);
          if (a) allocations.push(a);
        }
        i += count;
      } else {
        // A secondary without a primary, what a delete cut between two directory runs leaves (the file
        // entry goes first). It names nothing: skipped (the repair marks it unused).
        orphans.push(i);
      }
    }
    return { runs, bytes, sets, orphans, allocations };
  }

  #sameName(a: string, b: string): boolean {
    if (a.length !== b.length) return false;
    for (let i = 0; i < a.length; i++) if (this.#upcase[a.charCodeAt(i)] !== this.#upcase[b.charCodeAt(i)]) return false;
    return true;
  }

  /**
   * The set named `name` through the up-case table. Two can match only after a rename that power loss
   * cut (old and new spelling of one name): the exact spelling wins.
   */
  #named(sets: readonly Node[], name: string): Node | undefined {
    return sets.find((n) => n.set.name === name) ?? sets.find((n) => this.#sameName(n.set.name, name));
  }

  #split(path: string): string[] {
    if (!path.startsWith('/')) throw new UsageError(`exfat: "${path}" is not an absolute path`);
    const parts = path.split('/').filter((p) => p !== '');
    for (const p of parts) if (p === '.' || p === '..') throw new UsageError(`exfat: "${path}": "." and ".." are not resolved`);
    return parts;
  }

  static readonly #root: DirRef = { firstCluster: 0, node: undefined };

  /** The node at `parts`, or undefined for the root. */
  async #resolve(parts: readonly string[], path: string): Promise<Node | undefined> {
    let dir: DirRef = ExfatFs.#root;
    let node: Node | undefined;
    for (let k = 0; k < parts.length; k++) {
      if (node !== undefined && !isDir(node.set)) throw new NotFoundError(`exfat: ${path}: not a directory (ENOTDIR)`);
      const listing = await this.#list(dir);
      node = this.#named(listing.sets, parts[k]!);
      if (node === undefined) throw new NotFoundError(`exfat: ${path}: no such file or directory (ENOENT)`);
      dir = { firstCluster: node.set.firstCluster, node };
    }
    return node;
  }

  async #resolveDir(parts: readonly string[], path: string): Promise<DirRef> {
    const node = await this.#resolve(parts, path);
    if (node === undefined) return ExfatFs.#root;
    if (!isDir(node.set)) throw new NotFoundError(`exfat: ${path}: not a directory (ENOTDIR)`);
    return { firstCluster: node.set.firstCluster, node };
  }

  /** Writes entries (32-byte multiples) at entry index `index` of a directory. */
  async #writeEntries(runs: readonly Run[], index: number, bytes: Uint8Array): Promise<void> {
    await this.writeRunsAt(runs, bytes, index * ENTRY_SIZE);
  }

  /**
   * Rewrites a node's set in place (same entry count). Only the bytes that change are written: a new
   * size or cluster touches the file and stream entries (checksum, times, lengths), 64 bytes in one
   * sector unless the set straddles one, so the rewrite is one write where the directory allows it.
   */
  async #rewrite(node: Node): Promise<void> {
    const bytes = encodeFileEntrySet(node.set);
    if (bytes.byteLength / ENTRY_SIZE !== node.count) throw new Error('exfat: an in-place rewrite must keep the entry count');
    const runs = await this.#dirRuns(node.parent);
    const old = new Uint8Array(bytes.byteLength);
    await this.readRunsAt(runs, old, node.index * ENTRY_SIZE);
    let lo = 0;
    while (lo < bytes.byteLength && bytes[lo] === old[lo]) lo++;
    if (lo === bytes.byteLength) return;
    let hi = bytes.byteLength;
    while (bytes[hi - 1] === old[hi - 1]) hi--;
    await this.writeRunsAt(runs, bytes.subarray(lo, hi), node.index * ENTRY_SIZE + lo);
  }

  /**
   * Marks a set's entries not in use. When the set straddles two runs of the directory, the part with
   * the file entry goes first: a cut between leaves in-use secondaries without a primary, which listing
   * skips, never a file entry whose secondaries are gone.
   */
  async #deleteSet(node: Node): Promise<void> {
    const runs = await this.#dirRuns(node.parent);
    const bytes = new Uint8Array(node.count * ENTRY_SIZE);
    await this.readRunsAt(runs, bytes, node.index * ENTRY_SIZE);
    for (let i = 0; i < node.count; i++) bytes[i * ENTRY_SIZE]! &= ~IN_USE;
    await this.#writeEntries(runs, node.index, bytes);
  }

  /**
   * Places a new set in `dir` (growing it by a cluster when no run of free entries is long enough).
   * `oneWrite` (a rename's new set) prefers free entries inside one sector, then inside one run of the
   * directory's clusters, so the set goes to disk in one write where the directory allows it.
   */
  async #insert(dir: DirRef, set: FileEntrySet, oneWrite = false): Promise<Node> {
    const bytes = encodeFileEntrySet(set);
    const count = bytes.byteLength / ENTRY_SIZE;
    let listing = await this.#list(dir);
    let index = this.#freeSlot(listing, count, oneWrite);
    if (index < 0) {
      await this.#growDir(dir, listing);
      listing = await this.#list(dir);
      index = this.#freeSlot(listing, count, oneWrite);
      if (index < 0) throw noSpace('the directory cannot hold another entry');
    }
    await this.#writeEntries(listing.runs, index, bytes);
    return { set, parent: dir, index, count };
  }

  #freeSlot(listing: DirListing, count: number, oneWrite: boolean): number {
    const { bytes } = listing;
    const n = bytes.byteLength / ENTRY_SIZE;
    const perSector = this.sectorSize / ENTRY_SIZE;
    // Entry indexes where a new run of the directory's clusters starts (a write is split there).
    const breaks = new Set<number>();
    let at = 0;
    for (const r of listing.runs) {
      if (at > 0) breaks.add(at);
      at += (r.length * this.clusterSize) / ENTRY_SIZE;
    }
    const oneRun = (first: number, last: number): boolean => {
      for (let i = first + 1; i <= last; i++) if (breaks.has(i)) return false;
      return true;
    };
    let any = -1;
    let inRun = -1;
    const pick = (first: number): number | undefined => {
      if (!oneWrite || Math.floor(first / perSector) === Math.floor((first + count - 1) / perSector)) return first;
      if (any < 0) any = first;
      if (inRun < 0 && oneRun(first, first + count - 1)) inRun = first;
      return undefined;
    };
    let start = -1;
    for (let i = 0; i < n; i++) {
      const type = bytes[i * ENTRY_SIZE]!;
      if (type & IN_USE) {
        start = -1;
        continue;
      }
      if (start < 0) start = i;
      if (type === 0) {
        // Everything after the end marker is free; a set may begin there, not beyond.
        for (let first = start; first <= i && n - first >= count; first++) {
          const picked = pick(first);
          if (picked !== undefined) return picked;
        }
        break;
      }
      if (i - start + 1 >= count) {
        const first = pick(i - count + 1);
        if (first !== undefined) return first;
      }
    }
    return inRun >= 0 ? inRun : any;
  }

  async #growDir(dir: DirRef, listing: DirListing): Promise<void> {
    const length = listing.bytes.byteLength;
    if (length + this.clusterSize > MAX_DIR_BYTES) throw noSpace('a directory holds at most 256 MiB of entries');
    const last = listing.runs[listing.runs.length - 1]!;
    const after = last.start + last.length;
    const node = dir.node;
    const contiguousNow = node !== undefined && (node.set.secondaryFlags & FLAG_NO_FAT_CHAIN) !== 0;
    let added: Run;
    if (this.#isCluster(after) && this.#isFree(after)) {
      added = { start: after, length: 1 };
    } else {
      if (this.#freeClusters < 1) throw noSpace('cannot grow the directory');
      added = this.#findClusters(1)[0]!;
    }
    await this.#zero([added]);
    await this.#markBitmap([added], true);
    const keepContiguous = contiguousNow && added.start === after;
    if (!keepContiguous) {
      if (contiguousNow) await this.#writeChain([...listing.runs, added]);
      else {
        await this.#setFat(added.start, FAT_EOF);
        await this.#setFat(last.start + last.length - 1, added.start);
      }
    }
    if (node !== undefined) {
      const newLength = length + this.clusterSize;
      node.set = { ...node.set, dataLength: newLength, validDataLength: newLength, secondaryFlags: keepContiguous ? node.set.secondaryFlags : node.set.secondaryFlags & ~FLAG_NO_FAT_CHAIN };
      await this.#rewrite(node);
    }
  }

  // ---- dirty flag ---------------------------------------------------------------------------

  async #beginChange(): Promise<void> {
    if (this.readOnly) throw new ReadOnlyError('exfat: the volume is open read-only');
    if (this.usedBackupBootRegion) {
      throw new CorruptImageError(FORMAT, 'boot region', 'the main boot region is damaged (read from the backup); repair it with fsck.exfat before writing', 0);
    }
    if (this.#dirtyMarked) return;
    await this.#writeFlags(this.boot.volumeFlags | VOLUME_FLAG_DIRTY, this.boot.percentInUse);
    await this.disk.flush();
    this.#dirtyMarked = true;
  }

  async #writeFlags(flags: number, percent: number): Promise<void> {
    const b = new Uint8Array(2);
    new DataView(b.buffer).setUint16(0, flags, true);
    await this.disk.write(b, 106);
    await this.disk.write(Uint8Array.of(percent), 112);
  }

  // ---- FileSystem -----------------------------------------------------------------------------

  async stat(path: string): Promise<FsStat> {
    const node = await this.#resolve(this.#split(path), path);
    if (node === undefined) return { kind: 'dir', size: 0, mode: 0o755, uid: 0, gid: 0, nlink: 2, mtime: { sec: 0, nsec: 0 } };
    const s = node.set;
    const dir = isDir(s);
    return {
      kind: dir ? 'dir' : 'file',
      size: dir ? 0 : s.dataLength,
      mode: dir ? 0o755 : 0o644,
      uid: 0,
      gid: 0,
      nlink: dir ? 2 : 1,
      mtime: decodeTimestamp(s.modified),
      atime: decodeTimestamp(s.accessed),
    };
  }

  async readdir(path: string): Promise<FsEntry[]> {
    const dir = await this.#resolveDir(this.#split(path), path);
    const listing = await this.#list(dir);
    return listing.sets.map((n) => ({ name: n.set.name, kind: isDir(n.set) ? 'dir' : 'file' }));
  }

  async readlink(path: string): Promise<string> {
    await this.#resolve(this.#split(path), path);
    throw new UnsupportedFeatureError(FORMAT, 'symbolic links', `${path} is not a symlink (exFAT has none)`);
  }

  async #fileNode(path: string): Promise<Node> {
    const node = await this.#resolve(this.#split(path), path);
    if (node === undefined || isDir(node.set)) throw new NotFoundError(`exfat: ${path}: is a directory (EISDIR)`);
    return node;
  }

  async openFile(path: string): Promise<Disk> {
    const node = await this.#fileNode(path);
    const s = node.set;
    const runs = await this.#chainRuns(s.firstCluster, (s.secondaryFlags & FLAG_NO_FAT_CHAIN) !== 0, s.dataLength, `"${s.name}"`);
    return new ExfatFileDisk(this, node, runs, true);
  }

  async space(): Promise<FsSpace> {
    return { totalBytes: this.boot.clusterCount * this.clusterSize, freeBytes: this.#freeClusters * this.clusterSize };
  }

  async close(): Promise<void> {
    if (!this.readOnly) await this.flush();
  }

  async flush(): Promise<void> {
    if (this.readOnly) return;
    for (const f of this.#openFiles) await f.commit();
    if (!this.#dirtyMarked) return;
    await this.disk.flush();
    const used = this.boot.clusterCount - this.#freeClusters;
    const percent = Math.floor((used * 100) / this.boot.clusterCount);
    // Dirty at open and not repaired (the open repairs every dirty volume it may write), or a failed write.
    const stays = this.#failed || (this.#wasDirty && this.#repaired === undefined);
    await this.#writeFlags(stays ? this.boot.volumeFlags | VOLUME_FLAG_DIRTY : this.boot.volumeFlags & ~VOLUME_FLAG_DIRTY, percent);
    await this.disk.flush();
    this.#dirtyMarked = false;
  }

  // ---- WritableFileSystem -------------------------------------------------------------------

  #newSet(name: string, attributes: number, firstCluster: number, dataLength: number, validDataLength: number, contiguous: boolean): FileEntrySet {
    const reason = invalidNameReason(name);
    if (reason) throw new UsageError(`exfat: "${name}": ${reason}`);
    const t = encodeTimestamp(this.#now());
    return {
      name,
      attributes,
      created: t,
      modified: t,
      accessed: { ...t, increment10ms: 0 },
      secondaryFlags: FLAG_ALLOCATION_POSSIBLE | (dataLength > 0 && contiguous ? FLAG_NO_FAT_CHAIN : 0),
      nameHash: nameHash(name, this.#upcase),
      validDataLength,
      firstCluster,
      dataLength,
      extra: [],
    };
  }

  async #parentFor(path: string): Promise<{ dir: DirRef; name: string; existing: Node | undefined; parts: string[] }> {
    const parts = this.#split(path);
    if (parts.length === 0) throw new AlreadyExistsError(`exfat: ${path}: the root directory already exists`);
    const name = parts[parts.length - 1]!;
    const reason = invalidNameReason(name);
    if (reason) throw new UsageError(`exfat: "${path}": ${reason}`);
    const dir = await this.#resolveDir(parts.slice(0, -1), path);
    const listing = await this.#list(dir);
    const existing = this.#named(listing.sets, name);
    return { dir, name, existing, parts };
  }

  async mkdir(path: string): Promise<void> {
    await this.#beginChange();
    const { dir, name, existing } = await this.#parentFor(path);
    if (existing) throw new AlreadyExistsError(`exfat: ${path}: it already exists (EEXIST)`);
    const { runs } = await this.#allocateZeroed(1);
    await this.#insert(dir, this.#newSet(name, ATTR_DIRECTORY, runs[0]!.start, this.clusterSize, this.clusterSize, true));
  }

  async #allocateZeroed(count: number): Promise<{ runs: Run[]; contiguous: boolean }> {
    if (count > this.#freeClusters) throw noSpace(`cannot allocate ${count} clusters`);
    const runs = this.#findClusters(count);
    await this.#zero(runs);
    await this.#markBitmap(runs, true);
    const contiguous = runs.length === 1;
    if (!contiguous) await this.#writeChain(runs);
    return { runs, contiguous };
  }

  /**
   * A new file. Its clusters read as zeros: by default they are cleared (zeros written only over
   * clusters holding a non-zero byte) and ValidDataLength is the size; with `lazyValidDataLength` it
   * starts at 0 instead (bytes past it read as zeros, nothing cleared). `uninitialized` skips the
   * clearing (the caller writes every byte first).
   */
  async createFile(path: string, options: CreateFileOptions): Promise<WritableFile> {
    const size = options.size;
    if (!Number.isSafeInteger(size) || size < 0) throw new UsageError(`exfat: ${path}: size ${size} is not a byte count`);
    await this.#beginChange();
    const { dir, name, existing } = await this.#parentFor(path);
    if (existing) throw new AlreadyExistsError(`exfat: ${path}: it already exists (EEXIST)`);
    const uninitialized = options.uninitialized === true;
    const { runs, contiguous } = await this.#allocate(Math.ceil(size / this.clusterSize));
    if (!this.#lazyValid && !uninitialized) await this.#clear(runs);
    const node = await this.#insert(dir, this.#newSet(name, ATTR_ARCHIVE, runs[0]?.start ?? 0, size, this.#lazyValid ? 0 : size, contiguous));
    return this.#track(new ExfatFileDisk(this, node, runs, false, uninitialized));
  }

  #track(f: ExfatFileDisk): ExfatFileDisk {
    this.#openFiles.add(f);
    return f;
  }

  /** @internal the file Disk's close. */
  untrack(f: ExfatFileDisk): void {
    this.#openFiles.delete(f);
  }

  /**
   * @internal the file Disk rewrites its set (new ValidDataLength and modification time). A file whose
   * name is gone (unlinked while open) has no set to update; one renamed while open had its set
   * committed before the rename (rename commits every open file first).
   */
  async updateSet(node: Node, validDataLength: number): Promise<void> {
    if (!(await this.#isCurrent(node))) return;
    await this.#beginChange();
    const t = encodeTimestamp(this.#now());
    node.set = { ...node.set, validDataLength, modified: t, accessed: { ...t, increment10ms: 0 } };
    await this.#rewrite(node);
  }

  /** Whether the set at `node`'s place is still the same file (not renamed or deleted meanwhile). */
  async #isCurrent(node: Node): Promise<boolean> {
    const listing = await this.#list(node.parent);
    const now = listing.sets.find((n) => n.index === node.index);
    return now !== undefined && now.set.name === node.set.name && now.set.firstCluster === node.set.firstCluster && now.set.dataLength === node.set.dataLength;
  }

  async #current(node: Node, path: string): Promise<void> {
    if (!(await this.#isCurrent(node))) throw new NotFoundError(`exfat: ${path} was renamed or removed while it was open for writing`);
  }

  /**
   * @internal ExfatFileDisk.resize. Growing: the free clusters right after the file's last one first
   * (a NoFatChain file stays one; a file that stops being contiguous gets its whole chain written),
   * then anywhere; bitmap, zeros (unless lazy ValidDataLength or `uninitialized`), FAT, then the set.
   * Shrinking: the set first, then the FAT end mark and the freed clusters. A cut leaves lost clusters,
   * or a chain running past the size (not read; fsck.exfat truncates it); the same resize again
   * completes it.
   */
  async resizeFile(file: ExfatFileDisk, node: Node, size: number, uninitialized: boolean): Promise<void> {
    const path = `/${node.set.name}`;
    if (!Number.isSafeInteger(size) || size < 0) throw new UsageError(`exfat: ${path}: size ${size} is not a byte count`);
    const cs = this.clusterSize;
    const runs = file.runs;
    const have = clustersIn(runs);
    const need = Math.ceil(size / cs);
    const oldSize = file.size;
    const s = node.set;
    const noFatChain = (s.secondaryFlags & FLAG_NO_FAT_CHAIN) !== 0;
    const goesOn = !noFatChain && need === have && have > 0 && (await this.#chainGoesOn(runs));
    if (size === oldSize && need === have && !goesOn) return;
    await this.#beginChange();
    await this.#current(node, path);
    let valid = file.valid;
    const t = encodeTimestamp(this.#now());
    const touched = { modified: t, accessed: { ...t, increment10ms: 0 } };
    if (need > have) {
      const last = runs[runs.length - 1];
      const after = last ? last.start + last.length : 0;
      let want = need - have;
      if (want > this.#freeClusters) throw noSpace(`cannot grow ${path} by ${want} clusters (${this.#freeClusters} free)`);
      const added: Run[] = [];
      if (last && this.#isCluster(after)) {
        let k = 0;
        while (k < want && this.#isCluster(after + k) && this.#isFree(after + k)) k++;
        if (k > 0) {
          added.push({ start: after, length: k });
          await this.#markBitmap(added, true);
          want -= k;
        }
      }
      if (want > 0) {
        const more = this.#findClusters(want);
        await this.#markBitmap(more, true);
        added.push(...more);
      }
      const grown = joinRuns(runs, added);
      if (!this.#lazyValid) {
        if (!uninitialized) await this.#zeroRange(grown, valid, size);
        valid = size;
      }
      let contiguous = noFatChain || have === 0;
      if (contiguous && grown.length > 1) {
        await this.#writeChain(grown); // the whole file, read through the FAT once the set says so
        contiguous = false;
      } else if (!contiguous) {
        await this.#writeChain(added);
        await this.#setFat(last!.start + last!.length - 1, added[0]!.start);
      }
      node.set = { ...s, ...touched, firstCluster: grown[0]!.start, dataLength: size, validDataLength: valid, secondaryFlags: contiguous ? s.secondaryFlags | FLAG_NO_FAT_CHAIN : s.secondaryFlags & ~FLAG_NO_FAT_CHAIN };
      await this.#rewrite(node);
      file.relayout(grown, size, valid);
      return;
    }
    if (size > oldSize && !this.#lazyValid) {
      if (!uninitialized) await this.#zeroRange(runs, valid, size);
      valid = size;
    }
    valid = Math.min(valid, size);
    const kept = sliceRuns(runs, 0, need);
    if (size !== oldSize || valid !== s.validDataLength) {
      node.set = {
        ...s,
        ...touched,
        firstCluster: need > 0 ? s.firstCluster : 0,
        dataLength: size,
        validDataLength: valid,
        secondaryFlags: need > 0 ? s.secondaryFlags : s.secondaryFlags & ~FLAG_NO_FAT_CHAIN,
      };
      await this.#rewrite(node);
    }
    if (need < have || goesOn) {
      if (!noFatChain && need > 0) {
        const k = kept[kept.length - 1]!;
        await this.#setFat(k.start + k.length - 1, FAT_EOF);
      }
      if (need < have) await this.#free(sliceRuns(runs, need, have), !noFatChain);
    }
    file.relayout(kept, size, valid);
  }

  async openFileForWriting(path: string): Promise<WritableFile> {
    if (this.readOnly) throw new ReadOnlyError('exfat: the volume is open read-only');
    const node = await this.#fileNode(path);
    const s = node.set;
    const runs = await this.#chainRuns(s.firstCluster, (s.secondaryFlags & FLAG_NO_FAT_CHAIN) !== 0, s.dataLength, `"${s.name}"`);
    return this.#track(new ExfatFileDisk(this, node, runs, false, false));
  }

  async writeFile(path: string, data: Uint8Array): Promise<void> {
    await this.#beginChange();
    const { dir, name, existing } = await this.#parentFor(path);
    if (existing && isDir(existing.set)) throw new NotFoundError(`exfat: ${path}: is a directory (EISDIR)`);
    const { runs, contiguous } = await this.#allocate(Math.ceil(data.byteLength / this.clusterSize));
    for (let at = 0; at < data.byteLength; at += IO_CHUNK) await this.writeRunsAt(runs, data.subarray(at, Math.min(data.byteLength, at + IO_CHUNK)), at);
    const fresh = this.#newSet(existing?.set.name ?? name, ATTR_ARCHIVE, runs[0]?.start ?? 0, data.byteLength, data.byteLength, contiguous);
    if (existing === undefined) {
      await this.#insert(dir, fresh);
      return;
    }
    const old = existing.set;
    const oldRuns = await this.#chainRuns(old.firstCluster, (old.secondaryFlags & FLAG_NO_FAT_CHAIN) !== 0, old.dataLength, `"${old.name}"`);
    if (encodeFileEntrySet(fresh).byteLength / ENTRY_SIZE === existing.count) {
      existing.set = { ...fresh, created: old.created };
      await this.#rewrite(existing);
    } else {
      await this.#deleteSet(existing);
      await this.#insert(dir, fresh);
    }
    await this.#release(dir, old, oldRuns);
  }

  /**
   * Frees a set's clusters once no set names them, unless another set of the same directory still
   * names its first cluster (a rename cut by power loss left two names for one file): then nothing.
   */
  async #release(dir: DirRef, old: FileEntrySet, runs: readonly Run[]): Promise<void> {
    if (runs.length === 0) return;
    if (old.firstCluster !== 0 && (await this.#list(dir)).sets.some((n) => n.set.firstCluster === old.firstCluster)) return;
    await this.#free(runs, (old.secondaryFlags & FLAG_NO_FAT_CHAIN) === 0);
  }

  async #releaseNode(node: Node): Promise<void> {
    const s = node.set;
    const runs = await this.#chainRuns(s.firstCluster, (s.secondaryFlags & FLAG_NO_FAT_CHAIN) !== 0, s.dataLength, `"${s.name}"`);
    await this.#deleteSet(node);
    await this.#release(node.parent, s, runs);
  }

  /** Deletes the set, then frees the clusters unless another set of the directory still names them. */
  async unlink(path: string): Promise<void> {
    await this.#beginChange();
    const node = await this.#fileNode(path);
    await this.#releaseNode(node);
  }

  async #isEmptyDir(node: Node): Promise<boolean> {
    return (await this.#list({ firstCluster: node.set.firstCluster, node })).sets.length === 0;
  }

  async rmdir(path: string): Promise<void> {
    await this.#beginChange();
    const node = await this.#resolve(this.#split(path), path);
    if (node === undefined) throw new UsageError('exfat: the root directory cannot be removed');
    if (!isDir(node.set)) throw new NotFoundError(`exfat: ${path}: not a directory (ENOTDIR)`);
    if (!(await this.#isEmptyDir(node))) throw new AlreadyExistsError(`exfat: ${path}: directory not empty (ENOTEMPTY)`);
    await this.#releaseNode(node);
  }

  /**
   * Renames (renameIsAtomic false). A new name: the new set is written, then the old one deleted; a cut
   * between leaves two sets naming one file, and the same rename again finishes it (a target that
   * already names the source's first cluster: only the source's set is deleted, nothing freed). Onto
   * another file: the target's set is rewritten in place to name the source's data (same name, so the
   * same entry count), the source's set deleted, the target's old clusters freed last (unless another
   * set of the directory still names them).
   */
  async rename(from: string, to: string): Promise<void> {
    await this.#beginChange();
    for (const f of this.#openFiles) await f.commit(); // the set copied to the new name carries what was written
    const fromParts = this.#split(from);
    const source = await this.#resolve(fromParts, from);
    if (source === undefined) throw new UsageError('exfat: the root directory cannot be renamed');
    const target = await this.#parentFor(to);
    if (isDir(source.set) && target.parts.length > fromParts.length && fromParts.every((p, i) => this.#sameName(p, target.parts[i]!))) {
      throw new UsageError(`exfat: cannot move ${from} into itself (${to})`);
    }
    let replaced: Node | undefined = target.existing;
    if (replaced && replaced.parent.firstCluster === source.parent.firstCluster && replaced.index === source.index) replaced = undefined;
    if (replaced) {
      if (isDir(replaced.set) && !isDir(source.set)) throw new NotFoundError(`exfat: ${to}: is a directory (EISDIR)`);
      if (!isDir(replaced.set) && isDir(source.set)) throw new NotFoundError(`exfat: ${to}: not a directory (ENOTDIR)`);
      if (source.set.firstCluster !== 0 && replaced.set.firstCluster === source.set.firstCluster) {
        // `to` names the source's data already: an earlier rename was cut after its new set. Finish it.
        await this.#deleteSet(source);
        return;
      }
      if (isDir(replaced.set) && !(await this.#isEmptyDir(replaced))) throw new AlreadyExistsError(`exfat: ${to}: directory not empty (ENOTEMPTY)`);
      const old = replaced.set;
      const oldRuns = await this.#chainRuns(old.firstCluster, (old.secondaryFlags & FLAG_NO_FAT_CHAIN) !== 0, old.dataLength, `"${old.name}"`);
      const moved: FileEntrySet = { ...source.set, name: target.name, nameHash: nameHash(target.name, this.#upcase) };
      if (encodeFileEntrySet(moved).byteLength / ENTRY_SIZE === replaced.count) {
        replaced.set = moved;
        await this.#rewrite(replaced);
        await this.#deleteSet(source);
      } else {
        // The source carries other secondary entries than the target (vendor extensions): no in-place
        // rewrite. The target's set goes first, so a cut here can leave the source's name alone.
        await this.#deleteSet(replaced);
        await this.#insert(target.dir, moved, true);
        await this.#deleteSet(source);
      }
      await this.#release(replaced.parent, old, oldRuns);
      return;
    }
    const moved: FileEntrySet = { ...source.set, name: target.name, nameHash: nameHash(target.name, this.#upcase) };
    await this.#insert(target.dir, moved, true);
    await this.#deleteSet(source);
  }
}

/** A file's content as a Disk: reads past ValidDataLength are zeros; writes there zero the gap first. */
class ExfatFileDisk implements WritableFile {
  readonly readOnly: boolean;
  readonly #fs: ExfatFs;
  readonly #node: Node;
  readonly #uninitialized: boolean;
  #runs: readonly Run[];
  #size: number;
  #valid: number;
  #committed: number;
  #closed = false;

  constructor(fs: ExfatFs, node: Node, runs: readonly Run[], readOnly: boolean, uninitialized = false) {
    this.#fs = fs;
    this.#node = node;
    this.#runs = runs;
    this.readOnly = readOnly;
    this.#uninitialized = uninitialized;
    this.#size = node.set.dataLength;
    this.#valid = node.set.validDataLength;
    this.#committed = this.#valid;
  }

  get size(): number {
    return this.#size;
  }

  /** @internal */
  get runs(): readonly Run[] {
    return this.#runs;
  }

  /** @internal ValidDataLength as written so far (the set may lag until commit). */
  get valid(): number {
    return this.#valid;
  }

  /** @internal set by ExfatFs.resizeFile (the set was rewritten with these). */
  relayout(runs: readonly Run[], size: number, valid: number): void {
    this.#runs = runs;
    this.#size = size;
    this.#valid = valid;
    this.#committed = valid;
  }

  async resize(size: number): Promise<void> {
    if (this.readOnly || this.#closed) throw new ReadOnlyError(this.#closed ? 'exfat: the file is closed' : undefined);
    await this.#fs.resizeFile(this, this.#node, size, this.#uninitialized);
  }

  async read(buf: Uint8Array, offset: number): Promise<void> {
    checkRange(this, offset, buf.byteLength, 'read');
    const stored = Math.max(0, Math.min(buf.byteLength, this.#valid - offset));
    if (stored > 0) await this.#fs.readRunsAt(this.#runs, buf.subarray(0, stored), offset);
    buf.fill(0, stored);
  }

  async write(buf: Uint8Array, offset: number): Promise<void> {
    if (this.readOnly || this.#closed) throw new ReadOnlyError(this.#closed ? 'exfat: the file is closed' : undefined);
    checkRange(this, offset, buf.byteLength, 'write');
    if (buf.byteLength === 0) return;
    if (offset > this.#valid) {
      const zeros = new Uint8Array(Math.min(IO_CHUNK, offset - this.#valid));
      for (let at = this.#valid; at < offset; at += zeros.byteLength) {
        await this.#fs.writeRunsAt(this.#runs, zeros.subarray(0, Math.min(zeros.byteLength, offset - at)), at);
      }
    }
    await this.#fs.writeRunsAt(this.#runs, buf, offset);
    this.#valid = Math.max(this.#valid, offset + buf.byteLength);
  }

  /** Writes the set when ValidDataLength grew. */
  async commit(): Promise<void> {
    if (this.readOnly || this.#valid === this.#committed) return;
    await this.#fs.updateSet(this.#node, this.#valid);
    this.#committed = this.#valid;
  }

  async flush(): Promise<void> {
    await this.commit();
    await this.#fs.disk.flush();
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    await this.commit();
    this.#closed = true;
    this.#fs.untrack(this);
  }
}
