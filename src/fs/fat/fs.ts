/**
 * FatFs: FAT12/16/32 with VFAT long names as a WritableFileSystem.
 *
 * Design notes
 * - Directories are read whole (at most 65536 entries, 2 MiB, as the format allows) into a parsed
 *   listing kept in a small LRU; any change to a directory drops its listing.
 * - Write order, so a power loss leaves at worst lost clusters: file data, then the FAT in every copy
 *   (FatTable.writeBack), then the directory entry. Deletes go the other way: the directory entry is
 *   marked deleted first, then the chain is freed in the FATs. Growing a directory zeroes the new
 *   cluster before linking it. An existing chain (a file that grows, a directory) links to new clusters
 *   only once they are in every copy, and a shrunk chain gets its end mark in every copy before its
 *   tail is freed, so no cut between FAT writes (FAT32 chunks, FAT12/16 sector spans go out one by one)
 *   leaves a named chain running into free clusters.
 * - The boot sector's dirty bit is set before the first change and cleared by `close` after the FATs,
 *   FSInfo (exact free count and next-free hint) and everything else are on disk, as Linux does. After
 *   a write or flush that failed during the session (WatchedDisk), close leaves it set.
 * - `dirty` is the bit as found at open. A dirty volume opened for writing is repaired by the open,
 *   before anything else (repair.ts: what fsck.fat -a does about lost chains, FAT copies that differ,
 *   orphaned long-name slots and FSInfo; second names and overlong chains are left for the repeat of the
 *   cut operation), so it is clean once closed even if nothing else changes; what the repair cannot
 *   judge (loops, cross-links, damaged chains) fails the open with FatRepairError, nothing written. Opened
 *   read-only, a dirty volume is read as it is.
 * - Rename is not atomic (renameIsAtomic = false), as on Linux: the new entry is written first (in one
 *   write where the directory has room inside a sector), then the old entry is deleted; onto an existing
 *   file, the target's short entry is repointed at the source's chain (one 32-byte write), the source's
 *   entry deleted, the target's old chain freed last. A cut leaves at worst two names for one chain
 *   (plus the old chain as lost clusters), never none. Repeating the rename finishes it: a target that
 *   already names the source's first cluster only costs the source's entry. unlink, rmdir and every
 *   replacement free a chain only when no other entry of the same directory still names its first
 *   cluster, so the leftover of a cut rename never frees data its other name still uses. Where two
 *   entries match one name case-insensitively (old and new spelling after a cut), the exact spelling wins.
 * - Files are limited to 4 GiB − 1 bytes (the 32-bit size field); larger sizes are refused up front.
 * - createFile allocates (contiguous where possible) and writes both FATs and an entry naming no
 *   clusters yet; the file reads as zeros, and its clusters are cleared lazily (filedisk.ts: written
 *   clusters need nothing, the rest goes through #clear, which reads in 4 MiB pieces and writes zeros
 *   only over clusters with a non-zero byte, so a sparse host image stays sparse); only then does the
 *   entry get the clusters and the size (#settled: the file's flush or close, the volume's flush or
 *   close, or before rename/unlink/rmdir/writeFile/openFile could expose it). Listings show the size
 *   meanwhile. A cut before that leaves an empty file and lost clusters, never a deleted file's bytes.
 *   Whether a free cluster was ever used cannot be told from the FAT (a deleted file's clusters are free
 *   there too, its bytes still in them), so nothing is skipped unless the caller says `uninitialized`
 *   (then the entry has the size at once and nothing is cleared). writeFile writes the data first.
 * - File Disks from createFile/openFileForWriting resize (#resize). Growth takes the free clusters right
 *   after the file's last one first (it stays contiguous), then any; new bytes read as zeros (the last
 *   cluster's slack included) unless the file was created `uninitialized`; order: zeros, both FATs, the
 *   entry's size. Shrinking writes the entry's size first, then frees the tail in both FATs. A cut in
 *   between leaves a chain longer than the size: readers take the clusters the size needs (as Linux
 *   does), fsck.fat truncates the chain, and the same resize again completes it (a writable file keeps
 *   its whole chain, so the extra clusters are reused or freed). A file Disk finds its entry by slot and
 *   checks it is still the same file: one renamed or removed while open is refused, not resized.
 * - Timestamps are local time written with `timeZoneOffsetMinutes`; `now` is the clock (fixed in tests,
 *   so images are byte-for-byte reproducible).
 * - close() leaves the Disk open: its owner closes it.
 */
import { AlreadyExistsError, CorruptImageError, NotFoundError, ReadOnlyError, UnsupportedFeatureError } from '../../errors.ts';
import { CLEAR_PIECE, zeroBuffer } from '../../io/bytes.ts';
import { readAt, type Disk } from '../../io/disk.ts';
import type { CreateFileOptions, FsEntry, FsSpace, FsStat, FsTime, WritableFile, WritableFileSystem } from '../filesystem.ts';
import { FORMAT, FSINFO_UNKNOWN, decodeBootSector, decodeFsInfo, encodeBootSector, encodeFsInfo, layoutOf, type BootSector, type FatType, type Layout } from './boot.ts';
import {
  ATTR_ARCHIVE,
  ATTR_DIRECTORY,
  ATTR_LFN,
  ATTR_READ_ONLY,
  ATTR_VOLUME,
  DELETED,
  ENTRY_SIZE,
  MAX_DIR_ENTRIES,
  MAX_FILE_SIZE,
  decodeLfnEntry,
  decodeShortEntry,
  encodeShortEntry,
  foldName,
  fromFatStamp,
  joinLfn,
  lfnEntriesFor,
  makeAlias,
  plainShortName,
  shortNameText,
  toFatStamp,
  validateName,
  type LfnEntry,
  type ShortEntry,
} from './dirent.ts';
import { FatFileDisk, forEachExtent, placeRuns } from './filedisk.ts';
import { repairFat, type FatRepairReport } from './repair.ts';
import { FatTable, runClusters, type Run } from './table.ts';

export interface FatOpenOptions {
  readOnly?: boolean;
  /** Minutes east of UTC of the local time the timestamps are in (default 0). */
  timeZoneOffsetMinutes?: number;
  /** The clock for new timestamps, in ms since the epoch (default Date.now). */
  now?: () => number;
}

const DIR_CACHE = 64;

interface Located {
  readonly name: string;
  readonly short: ShortEntry;
  readonly firstSlot: number;
  readonly slotCount: number;
}

interface Dir {
  /** 0: the FAT12/16 root region. */
  readonly cluster: number;
  /** Cluster list; empty for the FAT12/16 root. */
  readonly clusters: readonly number[];
  readonly capacity: number;
  readonly entries: readonly Located[];
  readonly free: Uint8Array;
  /** The first slot of the free end (the first 0x00 entry; capacity when there is none). */
  readonly end: number;
  readonly shortNames: Set<string>;
  readonly label: string | undefined;
}

/** Where a file's short entry is (for a file open for writing): directory, slot, and what it held. */
interface EntryRef {
  readonly parent: number;
  readonly slot: number;
  readonly shortName: Uint8Array;
  first: number;
}

export class FatFsError extends UnsupportedFeatureError {}

/**
 * The device as FatFs uses it: a write or flush that fails is remembered, so close leaves the dirty bit
 * set (what the failed write left is repaired by the next open for writing).
 */
class WatchedDisk implements Disk {
  readonly inner: Disk;
  failed = false;

  constructor(inner: Disk) {
    this.inner = inner;
  }

  get size(): number {
    return this.inner.size;
  }

  get readOnly(): boolean {
    return this.inner.readOnly;
  }

  read(buf: Uint8Array, offset: number): Promise<void> {
    return this.inner.read(buf, offset);
  }

  async write(buf: Uint8Array, offset: number): Promise<void> {
    try {
      await this.inner.write(buf, offset);
    } catch (err) {
      this.failed = true;
      throw err;
    }
  }

  async flush(): Promise<void> {
    try {
      await this.inner.flush();
    } catch (err) {
      this.failed = true;
      throw err;
    }
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}


/** Clusters [from, to) of a chain (counted in chain order) as runs. */
function sliceRuns(chain: readonly Run[], from: number, to: number): Run[] {
  const out: Run[] = [];
  let at = 0;
  for (const r of chain) {
    const lo = Math.max(from, at);
    const hi = Math.min(to, at + r.count);
    if (hi > lo) out.push({ first: r.first + (lo - at), count: hi - lo });
    at += r.count;
    if (at >= to) break;
  }
  return out;
}

/** A cluster list as runs of consecutive clusters. */
function clusterRuns(clusters: readonly number[]): Run[] {
  const out: Run[] = [];
  for (const c of clusters) {
    const last = out[out.length - 1];
    if (last && last.first + last.count === c) out[out.length - 1] = { first: last.first, count: last.count + 1 };
    else out.push({ first: c, count: 1 });
  }
  return out;
}

const latin1 = (b: Uint8Array): string => String.fromCharCode(...b);

export class FatFs implements WritableFileSystem {
  readonly renameIsAtomic = false;
  readonly readOnly: boolean;
  readonly layout: Layout;
  readonly #disk: WatchedDisk;
  #boot: BootSector;
  readonly #fat: FatTable;
  readonly #tz: number;
  readonly #now: () => number;
  readonly #dirs = new Map<number, Dir>();
  /** New files whose clearing is deferred, by "directory cluster:short entry slot": what their entry will say. */
  readonly #pending = new Map<string, { file: FatFileDisk; first: number; size: number }>();
  #dirty = false;
  /** The boot sector's dirty bit as found at open. */
  readonly #wasDirty: boolean;
  #repaired: FatRepairReport | undefined;
  #label: string | undefined;
  #closed = false;

  private constructor(disk: Disk, boot: BootSector, options: FatOpenOptions) {
    this.#disk = new WatchedDisk(disk);
    this.#boot = boot;
    this.#wasDirty = boot.dirty;
    this.layout = layoutOf(boot);
    this.#fat = new FatTable(this.#disk, this.layout);
    this.readOnly = (options.readOnly ?? false) || disk.readOnly;
    this.#tz = options.timeZoneOffsetMinutes ?? 0;
    this.#now = options.now ?? Date.now;
  }

  static async open(disk: Disk, options: FatOpenOptions = {}): Promise<FatFs> {
    if (disk.size < 512) throw new CorruptImageError(FORMAT, 'boot sector', `the device has only ${disk.size} bytes`);
    const boot = decodeBootSector(await readAt(disk, 0, 512), disk.size);
    const fs = new FatFs(disk, boot, options);
    if (!fs.readOnly && boot.type === 'fat32' && (boot.extFlags & 0x80) !== 0) {
      throw new UnsupportedFeatureError(FORMAT, 'FAT mirroring off', 'this FAT32 volume uses one active FAT; livestick writes only mirrored FATs (open it read-only)');
    }
    if (boot.type === 'fat32' && boot.fsInfoSector !== 0) {
      try {
        const info = decodeFsInfo(await readAt(disk, boot.fsInfoSector * boot.bytesPerSector, 512));
        if (info.nextFree >= 2 && info.nextFree <= fs.layout.clusterCount + 1) fs.#fat.nextFree = info.nextFree;
      } catch (err) {
        if (!(err instanceof CorruptImageError)) throw err;
      }
    }
    if (!fs.readOnly) {
      await fs.#fat.countFree();
      if (boot.dirty) {
        // Not closed cleanly: repaired now, before anything else (repair.ts); close then clears the bit.
        fs.#repaired = await repairFat(fs.#disk, fs.layout, fs.#fat, () => fs.#writeFsInfo());
        fs.#dirty = true;
      }
    }
    const root = await fs.#dir(fs.#rootCluster());
    fs.#label = root.label ?? (boot.hasExtendedSignature && boot.label.trim() !== 'NO NAME' ? boot.label.replace(/ +$/, '') : undefined);
    return fs;
  }

  get type(): FatType {
    return this.layout.type;
  }

  get label(): string | undefined {
    return this.#label || undefined;
  }

  get uuid(): string | undefined {
    if (!this.#boot.hasExtendedSignature) return undefined;
    const hex = this.#boot.serial.toString(16).toUpperCase().padStart(8, '0');
    return `${hex.slice(0, 4)}-${hex.slice(4)}`;
  }

  get serial(): number {
    return this.#boot.serial;
  }

  /** Whether the boot sector's dirty bit is set (a volume not cleanly closed, or one open for writing). */
  get dirtyBit(): boolean {
    return this.#boot.dirty;
  }

  /**
   * The volume was not closed cleanly: its dirty bit (BS_Reserved1 bit 0: byte 65 on FAT32, 37 on
   * FAT12/16, where Linux and fsck.fat keep it) was set when it was opened. Opened for writing, such a
   * volume is repaired by the open (repair.ts) and clean once closed.
   */
  get dirty(): boolean {
    return this.#wasDirty;
  }

  /** What the open repaired (a dirty volume opened for writing), or undefined. */
  get repaired(): FatRepairReport | undefined {
    return this.#repaired;
  }

  #rootCluster(): number {
    return this.layout.type === 'fat32' ? this.layout.rootCluster : 0;
  }

  // ---- directories ----------------------------------------------------------------------------

  async #dir(cluster: number): Promise<Dir> {
    const cached = this.#dirs.get(cluster);
    if (cached) {
      this.#dirs.delete(cluster);
      this.#dirs.set(cluster, cached);
      return cached;
    }
    const { layout } = this;
    let bytes: Uint8Array;
    let clusters: number[] = [];
    if (cluster === 0) {
      bytes = await readAt(this.#disk, layout.rootOffset, layout.rootBytes);
    } else {
      const limit = Math.ceil((MAX_DIR_ENTRIES * ENTRY_SIZE) / layout.clusterSize);
      const runs = await this.#fat.runs(cluster, limit, 'directory');
      for (const r of runs) for (let k = 0; k < r.count; k++) clusters.push(r.first + k);
      bytes = new Uint8Array(clusters.length * layout.clusterSize);
      for (const run of placeRuns(runs, layout.clusterSize)) {
        await this.#disk.read(bytes.subarray(run.fileOffset, run.fileOffset + run.count * layout.clusterSize), layout.dataOffset + (run.first - 2) * layout.clusterSize);
      }
    }
    const capacity = bytes.byteLength / ENTRY_SIZE;
    const free = new Uint8Array(capacity);
    const entries: Located[] = [];
    const shortNames = new Set<string>();
    let label: string | undefined;
    let pending: LfnEntry[] = [];
    let pendingStart = 0;
    let ended = false;
    let end = capacity;
    const fat32 = layout.type === 'fat32';
    for (let slot = 0; slot < capacity; slot++) {
      const raw = bytes.subarray(slot * ENTRY_SIZE, (slot + 1) * ENTRY_SIZE);
      if (ended || raw[0] === 0) {
        if (!ended) end = slot;
        ended = true;
        free[slot] = 1;
        continue;
      }
      if (raw[0] === DELETED) {
        free[slot] = 1;
        pending = [];
        continue;
      }
      if ((raw[11]! & 0x3f) === ATTR_LFN) {
        let piece: LfnEntry | undefined;
        try {
          piece = decodeLfnEntry(raw);
        } catch (err) {
          if (!(err instanceof CorruptImageError)) throw err;
        }
        if (piece?.last) {
          pending = [piece];
          pendingStart = slot;
        } else if (piece && pending.length > 0) pending.push(piece);
        else pending = [];
        continue;
      }
      const short = decodeShortEntry(raw, fat32);
      shortNames.add(latin1(short.name));
      const lfn = pending;
      pending = [];
      if (short.attr & ATTR_VOLUME) {
        if (cluster === this.#rootCluster() && label === undefined) label = latin1(short.name).replace(/ +$/, '');
        continue;
      }
      if (short.name[0] === 0x2e) continue; // "." and ".."
      if (short.firstCluster !== 0 && (short.firstCluster < 2 || short.firstCluster > this.#fat.maxCluster)) {
        throw new CorruptImageError(FORMAT, 'directory entry first cluster', `${short.firstCluster} is outside 2..${this.#fat.maxCluster} (${shortNameText(short.name, 0)})`, slot * ENTRY_SIZE);
      }
      const long = lfn.length > 0 && pendingStart + lfn.length === slot ? joinLfn(lfn, short.name) : undefined;
      const useLong = long !== undefined;
      const deferred = this.#pending.get(`${cluster}:${slot}`);
      const shown = deferred ? { ...short, firstCluster: deferred.first, size: deferred.size } : short;
      entries.push({ name: long ?? shortNameText(shown.name, shown.ntCase), short: shown, firstSlot: useLong ? pendingStart : slot, slotCount: useLong ? lfn.length + 1 : 1 });
    }
    const dir: Dir = { cluster, clusters, capacity, entries, free, end, shortNames, label };
    if (this.#dirs.size >= DIR_CACHE) this.#dirs.delete(this.#dirs.keys().next().value!);
    this.#dirs.set(cluster, dir);
    return dir;
  }

  /**
   * The entry named `name` (case-insensitively, long name or alias). Two entries can match only after
   * a rename that power loss cut (old and new spelling of one name): the exact spelling wins.
   */
  #find(dir: Dir, name: string): Located | undefined {
    const folded = foldName(name);
    let found: Located | undefined;
    for (const e of dir.entries) {
      if (e.name === name) return e;
      if (!found && (foldName(e.name) === folded || foldName(shortNameText(e.short.name, 0)) === folded)) found = e;
    }
    return found;
  }

  #split(path: string): string[] {
    if (!path.startsWith('/')) throw new NotFoundError(`FAT paths are absolute: "${path}"`);
    const parts = path.split('/').filter((p) => p !== '');
    for (const p of parts) if (p === '.' || p === '..') throw new NotFoundError(`"." and ".." are not resolved: "${path}"`);
    return parts;
  }

  async #resolve(parts: readonly string[], path: string): Promise<{ dirCluster: number; entry: Located | undefined }> {
    let cluster = this.#rootCluster();
    let entry: Located | undefined;
    for (let i = 0; i < parts.length; i++) {
      if (entry && !(entry.short.attr & ATTR_DIRECTORY)) throw new NotFoundError(`not a directory: ${parts.slice(0, i).join('/')}`, { file: path });
      if (entry) cluster = entry.short.firstCluster;
      if (entry && cluster === 0) throw new CorruptImageError(FORMAT, 'directory entry', `directory ${parts.slice(0, i).join('/')} has no cluster`);
      entry = this.#find(await this.#dir(cluster), parts[i]!);
      if (!entry) throw new NotFoundError(`no such file or directory: ${path}`, { file: path });
    }
    return { dirCluster: cluster, entry };
  }

  async #lookup(path: string): Promise<{ parent: number; entry: Located | undefined }> {
    const r = await this.#resolve(this.#split(path), path);
    return { parent: r.dirCluster, entry: r.entry };
  }

  async #parentOf(path: string): Promise<{ parent: number; name: string; existing: Located | undefined }> {
    const parts = this.#split(path);
    if (parts.length === 0) throw new AlreadyExistsError('the root directory already exists', { file: path });
    const name = parts[parts.length - 1]!;
    const r = await this.#resolve(parts.slice(0, -1), path);
    let parent = this.#rootCluster();
    if (r.entry) {
      if (!(r.entry.short.attr & ATTR_DIRECTORY)) throw new NotFoundError(`not a directory: ${parts.slice(0, -1).join('/')}`, { file: path });
      parent = r.entry.short.firstCluster;
    }
    return { parent, name, existing: this.#find(await this.#dir(parent), name) };
  }

  #time(date: number, time: number, tenths = 0): FsTime {
    const ms = fromFatStamp(date, time, tenths, this.#tz);
    return { sec: Math.floor(ms / 1000), nsec: (ms % 1000) * 1e6 };
  }

  #statOf(e: ShortEntry): FsStat {
    const dir = (e.attr & ATTR_DIRECTORY) !== 0;
    const ro = (e.attr & ATTR_READ_ONLY) !== 0;
    return {
      kind: dir ? 'dir' : 'file',
      size: dir ? 0 : e.size,
      mode: dir ? (ro ? 0o555 : 0o755) : ro ? 0o444 : 0o644,
      uid: 0,
      gid: 0,
      nlink: 1,
      mtime: this.#time(e.writeDate, e.writeTime),
      atime: this.#time(e.accessDate, 0),
      ctime: this.#time(e.createDate, e.createTime, e.createTenths),
    };
  }

  async stat(path: string): Promise<FsStat> {
    const { entry } = await this.#lookup(path);
    if (!entry) return { kind: 'dir', size: 0, mode: 0o755, uid: 0, gid: 0, nlink: 1, mtime: { sec: 315532800, nsec: 0 } };
    return this.#statOf(entry.short);
  }

  async readdir(path: string): Promise<FsEntry[]> {
    const { entry } = await this.#lookup(path);
    if (entry && !(entry.short.attr & ATTR_DIRECTORY)) throw new NotFoundError(`not a directory: ${path}`, { file: path });
    const dir = await this.#dir(entry ? entry.short.firstCluster : this.#rootCluster());
    return dir.entries.map((e) => ({ name: e.name, kind: e.short.attr & ATTR_DIRECTORY ? 'dir' : 'file' }));
  }

  async readlink(path: string): Promise<string> {
    await this.#lookup(path);
    throw new UnsupportedFeatureError(FORMAT, 'symbolic links', `FAT has none (${path} is not one)`);
  }

  /**
   * The clusters holding a file's bytes: the first ceil(size / cluster) of its chain (a longer chain is
   * read as Linux reads it; `whole` takes all of it, for writing).
   */
  async #fileChain(e: ShortEntry, path: string, whole: boolean): Promise<Run[]> {
    const need = this.#clustersFor(e.size);
    const w = await this.#fat.walk(e.firstCluster, whole ? this.layout.clusterCount : need, `file ${path}`);
    if (w.count < need) throw new CorruptImageError(FORMAT, `file ${path} cluster chain`, `${w.count} clusters cannot hold ${e.size} bytes`);
    if (whole && !w.ended) throw new CorruptImageError(FORMAT, `file ${path} cluster chain`, `longer than ${this.layout.clusterCount} clusters (a loop)`);
    return w.runs;
  }

  async #fileEntry(path: string): Promise<Located> {
    const { entry } = await this.#lookup(path);
    if (!entry || entry.short.attr & ATTR_DIRECTORY) throw new NotFoundError(`is a directory: ${path}`, { file: path });
    return entry;
  }

  async openFile(path: string): Promise<Disk> {
    let entry = await this.#fileEntry(path);
    if (this.#pending.size > 0) {
      await this.#settleAll();
      entry = await this.#fileEntry(path);
    }
    return new FatFileDisk(this.#disk, this.layout, await this.#fileChain(entry.short, path, false), entry.short.size, true);
  }

  async space(): Promise<FsSpace> {
    const cs = this.layout.clusterSize;
    return { totalBytes: this.layout.clusterCount * cs, freeBytes: (await this.#fat.countFree()) * cs };
  }

  /** The free-cluster count (exact: counted once, then kept). */
  freeClusters(): Promise<number> {
    return this.#fat.countFree();
  }

  // ---- writing --------------------------------------------------------------------------------

  async #beginChange(): Promise<void> {
    if (this.#closed) throw new ReadOnlyError('the FAT filesystem is closed');
    if (this.readOnly) throw new ReadOnlyError('the FAT filesystem is open read-only');
    if (!this.#dirty) {
      this.#dirty = true;
      if (!this.#boot.dirty) {
        this.#boot = { ...this.#boot, dirty: true };
        await this.#disk.write(encodeBootSector(this.#boot), 0);
      }
    }
  }

  #stampNow(): ReturnType<typeof toFatStamp> {
    return toFatStamp(this.#now(), this.#tz);
  }

  #clusterOffset(cluster: number): number {
    return this.layout.dataOffset + (cluster - 2) * this.layout.clusterSize;
  }

  async #writeRuns(runs: readonly Run[], data: Uint8Array): Promise<void> {
    const pieces: [number, number, number][] = [];
    forEachExtent(placeRuns(runs, this.layout.clusterSize), this.layout, 0, data.byteLength, (dev, at, len) => pieces.push([dev, at, len]));
    for (const [dev, at, len] of pieces) await this.#disk.write(data.subarray(at, at + len), dev);
  }

  /**
   * Makes every cluster of `runs` read as zeros. Reads them in pieces of up to CLEAR_PIECE bytes and
   * writes zeros only over clusters holding a non-zero byte, so the zero clusters of a sparse image stay
   * holes. (Whether never-used clusters are zero cannot be told from the FAT: a deleted file's clusters
   * are free there too, with its bytes still in them.)
   */
  async #clear(runs: readonly Run[]): Promise<void> {
    const cs = this.layout.clusterSize;
    const pieceBytes = Math.max(cs, CLEAR_PIECE - (CLEAR_PIECE % cs));
    const zero = zeroBuffer(pieceBytes);
    let piece: Buffer | undefined;
    for (const r of runs) {
      const end = this.#clusterOffset(r.first + r.count);
      for (let at = this.#clusterOffset(r.first); at < end; ) {
        const len = Math.min(pieceBytes, end - at);
        piece ??= Buffer.allocUnsafe(pieceBytes);
        const buf = piece.subarray(0, len);
        await this.#disk.read(buf, at);
        if (buf.compare(zero, 0, len) !== 0) {
          // Zero the non-zero clusters of this piece, consecutive ones in one write.
          let dirtyFrom = -1;
          for (let o = 0; o <= len; o += cs) {
            const dirty = o < len && buf.compare(zero, 0, cs, o, o + cs) !== 0;
            if (dirty && dirtyFrom < 0) dirtyFrom = o;
            if (!dirty && dirtyFrom >= 0) {
              await this.#disk.write(zero.subarray(0, o - dirtyFrom), at + dirtyFrom);
              dirtyFrom = -1;
            }
          }
        }
        at += len;
      }
    }
  }

  /** Makes bytes [from, to) of a file laid out in `chain` read as zeros (whole clusters through #clear). */
  async #zeroRange(chain: readonly Run[], from: number, to: number): Promise<void> {
    if (to <= from) return;
    const cs = this.layout.clusterSize;
    const headEnd = Math.min(to, Math.ceil(from / cs) * cs);
    if (headEnd > from) {
      const placed = placeRuns(chain, cs);
      const pieces: [number, number][] = [];
      forEachExtent(placed, this.layout, from, headEnd - from, (dev, _at, len) => pieces.push([dev, len]));
      for (const [dev, len] of pieces) await this.#disk.write(zeroBuffer(len).subarray(0, len), dev);
    }
    const firstWhole = Math.ceil(from / cs);
    const lastWhole = Math.ceil(to / cs);
    if (lastWhole > firstWhole) await this.#clear(sliceRuns(chain, firstWhole, lastWhole));
  }

  #slotOffset(dir: Dir, slot: number): number {
    if (dir.cluster === 0) return this.layout.rootOffset + slot * ENTRY_SIZE;
    const cs = this.layout.clusterSize;
    const at = slot * ENTRY_SIZE;
    return this.layout.dataOffset + (dir.clusters[Math.floor(at / cs)]! - 2) * cs + (at % cs);
  }

  async #writeSlots(dir: Dir, first: number, bytes: Uint8Array): Promise<void> {
    const cs = this.layout.clusterSize;
    let i = 0;
    while (i < bytes.byteLength / ENTRY_SIZE) {
      const slot = first + i;
      const inCluster = dir.cluster === 0 ? dir.capacity - slot : (cs - ((slot * ENTRY_SIZE) % cs)) / ENTRY_SIZE;
      const n = Math.min(inCluster, bytes.byteLength / ENTRY_SIZE - i);
      await this.#disk.write(bytes.subarray(i * ENTRY_SIZE, (i + n) * ENTRY_SIZE), this.#slotOffset(dir, slot));
      i += n;
    }
    this.#dirs.delete(dir.cluster);
  }

  /**
   * n consecutive free slots in the directory, growing it (zeroed cluster, then the FAT link) if needed.
   * `oneWrite` (a rename's new entry) prefers slots inside one sector, then inside one cluster, so the
   * entry goes to disk in one write where the directory allows it; otherwise the first fit.
   */
  async #freeSlots(dirCluster: number, n: number, oneWrite = false): Promise<{ dir: Dir; slot: number }> {
    const perSector = this.layout.sectorSize / ENTRY_SIZE;
    const perCluster = this.layout.clusterSize / ENTRY_SIZE;
    for (;;) {
      const dir = await this.#dir(dirCluster);
      let run = 0;
      let any = -1;
      let inCluster = -1;
      for (let s = 0; s < dir.capacity; s++) {
        run = dir.free[s] ? run + 1 : 0;
        if (run < n) continue;
        const first = s - n + 1;
        if (first > dir.end) break; // past the end marker, an entry is only seen right at it
        if (!oneWrite || Math.floor(first / perSector) === Math.floor(s / perSector)) return { dir, slot: first };
        if (any < 0) any = first;
        if (inCluster < 0 && (dir.cluster === 0 || Math.floor(first / perCluster) === Math.floor(s / perCluster))) inCluster = first;
      }
      if (inCluster >= 0) return { dir, slot: inCluster };
      if (any >= 0) return { dir, slot: any };
      if (dir.cluster === 0) throw new AlreadyExistsError(`the root directory is full (${dir.capacity} entries on ${this.layout.type})`);
      if (dir.capacity + 1 > MAX_DIR_ENTRIES) throw new AlreadyExistsError(`the directory is full (${MAX_DIR_ENTRIES} entries)`);
      const [added] = await this.#fat.allocate(1);
      await this.#writeRuns([added!], new Uint8Array(this.layout.clusterSize));
      await this.#fat.writeBack(); // the new cluster in every copy before the directory links to it
      await this.#fat.set(dir.clusters[dir.clusters.length - 1]!, added!.first);
      await this.#fat.writeBack();
      this.#dirs.delete(dirCluster);
    }
  }

  /** Writes a new entry (LFN pieces + short entry) for `name`; returns where its short entry is. */
  async #addEntry(dirCluster: number, name: string, base: Omit<ShortEntry, 'name' | 'ntCase'>, oneWrite = false): Promise<EntryRef> {
    const dir = await this.#dir(dirCluster);
    const plain = plainShortName(name);
    let shortName: Uint8Array;
    let ntCase = 0;
    let lfn: Uint8Array[] = [];
    if (plain && !dir.shortNames.has(latin1(plain.name))) {
      shortName = plain.name;
      ntCase = plain.ntCase;
    } else {
      shortName = makeAlias(name, (k) => dir.shortNames.has(k));
      lfn = lfnEntriesFor(name, shortName);
    }
    const { dir: target, slot } = await this.#freeSlots(dirCluster, lfn.length + 1, oneWrite);
    const bytes = new Uint8Array((lfn.length + 1) * ENTRY_SIZE);
    lfn.forEach((piece, i) => bytes.set(piece, i * ENTRY_SIZE));
    bytes.set(encodeShortEntry({ ...base, name: shortName, ntCase }), lfn.length * ENTRY_SIZE);
    await this.#writeSlots(target, slot, bytes);
    return { parent: dirCluster, slot: slot + lfn.length, shortName, first: base.firstCluster };
  }

  /**
   * Marks an entry deleted (LFN pieces and short entry) in one write per directory cluster it spans.
   * When it spans two clusters, the part holding the short entry goes first, so a cut between the two
   * leaves orphaned long-name pieces (ignored by readers; fsck.fat drops them), never the 8.3 alias as a
   * visible name.
   */
  async #deleteEntry(dirCluster: number, entry: Located): Promise<void> {
    const dir = await this.#dir(dirCluster);
    const bytes = new Uint8Array(entry.slotCount * ENTRY_SIZE);
    for (let i = 0; i < entry.slotCount; i++) {
      const raw = await readAt(this.#disk, this.#slotOffset(dir, entry.firstSlot + i), ENTRY_SIZE);
      raw[0] = DELETED;
      bytes.set(raw, i * ENTRY_SIZE);
    }
    const perCluster = dir.cluster === 0 ? Infinity : this.layout.clusterSize / ENTRY_SIZE;
    const last = entry.firstSlot + entry.slotCount - 1;
    const split = Math.floor(entry.firstSlot / perCluster) === Math.floor(last / perCluster) ? 0 : (Math.floor(last / perCluster) * perCluster - entry.firstSlot);
    if (split > 0) {
      await this.#writeSlots(dir, entry.firstSlot + split, bytes.subarray(split * ENTRY_SIZE));
      await this.#writeSlots(dir, entry.firstSlot, bytes.subarray(0, split * ENTRY_SIZE));
    } else await this.#writeSlots(dir, entry.firstSlot, bytes);
  }

  async #rewriteShort(dirCluster: number, entry: Located, short: ShortEntry): Promise<void> {
    const dir = await this.#dir(dirCluster);
    await this.#writeSlots(dir, entry.firstSlot + entry.slotCount - 1, encodeShortEntry(short));
  }

  /**
   * Frees a chain no entry names any more, unless another entry of the directory still names its first
   * cluster (a rename cut by power loss left two names for one chain): then nothing is freed.
   */
  async #release(dirCluster: number, first: number, runs: readonly Run[]): Promise<void> {
    if (first !== 0 && (await this.#dir(dirCluster)).entries.some((e) => e.short.firstCluster === first)) return;
    if (runs.length === 0) return;
    await this.#fat.free(runs);
    await this.#fat.writeBack();
  }

  #newEntryFields(attr: number, firstCluster: number, size: number): Omit<ShortEntry, 'name' | 'ntCase'> {
    const t = this.#stampNow();
    return { attr, createTenths: t.tenths, createTime: t.time, createDate: t.date, accessDate: t.date, firstCluster, writeTime: t.time, writeDate: t.date, size };
  }

  #checkSize(size: number, path: string): void {
    if (!Number.isSafeInteger(size) || size < 0) throw new UnsupportedFeatureError(FORMAT, 'file size', `${size} is not a byte count (${path})`);
    if (size > MAX_FILE_SIZE) {
      throw new UnsupportedFeatureError(FORMAT, 'file size', `${path}: ${size} bytes is more than FAT allows: files are limited to 4 GiB − 1 (${MAX_FILE_SIZE} bytes)`);
    }
  }

  #clustersFor(size: number): number {
    return Math.ceil(size / this.layout.clusterSize);
  }

  /**
   * A new file of `size` bytes: clusters allocated, `fill` writes them (data, or zeros), both FATs, then
   * the entry. `replace` lets an existing file's entry be repointed (its old chain freed afterwards).
   */
  async #newFile(path: string, size: number, mode: number | undefined, fill: ((runs: Run[]) => Promise<void>) | undefined, replace: boolean, deferred = false): Promise<{ runs: Run[]; ref: EntryRef | undefined }> {
    this.#checkSize(size, path);
    if (replace) await this.#settleAll();
    const { parent, name, existing } = await this.#parentOf(path);
    validateName(name);
    if (existing && (existing.short.attr & ATTR_DIRECTORY || !replace)) throw new AlreadyExistsError(`it already exists: ${path}`, { file: path });
    await this.#beginChange();
    const runs = await this.#fat.allocate(this.#clustersFor(size));
    if (fill) await fill(runs);
    await this.#fat.writeBack();
    const attr = ATTR_ARCHIVE | (mode !== undefined && (mode & 0o222) === 0 ? ATTR_READ_ONLY : 0);
    // A deferred file's entry names no clusters until they are cleared (#settled).
    const fields = deferred ? this.#newEntryFields(attr, 0, 0) : this.#newEntryFields(attr, runs[0]?.first ?? 0, size);
    if (existing) {
      const old = await this.#fat.runs(existing.short.firstCluster, this.layout.clusterCount, `file ${path}`);
      await this.#rewriteShort(parent, existing, { ...existing.short, ...fields, createDate: existing.short.createDate, createTime: existing.short.createTime, createTenths: existing.short.createTenths });
      await this.#release(parent, existing.short.firstCluster, old);
      return { runs, ref: undefined };
    }
    return { runs, ref: await this.#addEntry(parent, name, fields) };
  }

  async writeFile(path: string, data: Uint8Array, options: { mode?: number } = {}): Promise<void> {
    await this.#newFile(path, data.byteLength, options.mode, (runs) => this.#writeRuns(runs, data), true);
  }

  /**
   * A new file reads as zeros, as POSIX promises. FAT has no holes and cannot tell a never-used free
   * cluster from a deleted file's, so the clusters are cleared, lazily: the entry is written naming no
   * clusters (size 0), the file Disk defers the clearing (filedisk.ts: what the caller writes needs none,
   * the rest is cleared by #clear, which writes zeros only over non-zero clusters and so keeps a sparse
   * image sparse), and once that is done the entry is rewritten with the clusters and the size
   * (#settled: on the file's flush or close, the volume's flush or close, or before any operation that
   * could expose it). Meanwhile listings show the file with its size. A cut before that leaves an empty
   * file and lost clusters. `uninitialized` writes the entry with the size at once and clears nothing.
   */
  async createFile(path: string, options: CreateFileOptions): Promise<WritableFile> {
    const uninitialized = options.uninitialized === true;
    const defer = !uninitialized && options.size > 0;
    const { runs, ref } = await this.#newFile(path, options.size, options.mode, undefined, false, defer);
    const file = this.#writable(path, ref!, runs, options.size, uninitialized);
    if (defer) {
      ref!.first = runs[0]!.first;
      this.#pending.set(`${ref!.parent}:${ref!.slot}`, { file, first: runs[0]!.first, size: options.size });
      this.#dirs.delete(ref!.parent);
      file.deferClearing();
    }
    return file;
  }

  /** A deferred file's clusters are clear: its entry names them and gets its size. */
  async #settled(ref: EntryRef, path: string, file: FatFileDisk): Promise<void> {
    const key = `${ref.parent}:${ref.slot}`;
    if (this.#pending.get(key)?.file !== file) return;
    const e = await this.#entryAt(ref, path);
    const t = this.#stampNow();
    await this.#rewriteShort(ref.parent, e, { ...e.short, writeTime: t.time, writeDate: t.date, accessDate: t.date });
    this.#pending.delete(key);
    this.#dirs.delete(ref.parent);
  }

  /** Settles every deferred file (before operations that rewrite or free entries, and on flush). */
  async #settleAll(): Promise<void> {
    for (const p of [...this.#pending.values()]) await p.file.settle();
  }

  async openFileForWriting(path: string): Promise<WritableFile> {
    if (this.readOnly) throw new ReadOnlyError('the FAT filesystem is open read-only');
    await this.#settleAll();
    const { parent, entry } = await this.#lookup(path);
    if (!entry || entry.short.attr & ATTR_DIRECTORY) throw new NotFoundError(`is a directory: ${path}`, { file: path });
    const chain = await this.#fileChain(entry.short, path, true);
    const ref: EntryRef = { parent, slot: entry.firstSlot + entry.slotCount - 1, shortName: entry.short.name, first: entry.short.firstCluster };
    return this.#writable(path, ref, chain, entry.short.size, false);
  }

  #writable(path: string, ref: EntryRef, chain: Run[], size: number, uninitialized: boolean): FatFileDisk {
    return new FatFileDisk(this.#disk, this.layout, chain, size, false, {
      beginChange: () => this.#beginChange(),
      resize: (file, n) => this.#resize(path, ref, file, n, uninitialized),
      clear: (runs) => this.#clear(runs),
      settled: (file) => this.#settled(ref, path, file),
    });
  }

  /** The short entry `ref` points at, checked to be the same file still. */
  async #entryAt(ref: EntryRef, path: string): Promise<Located> {
    const dir = await this.#dir(ref.parent);
    const e = dir.entries.find((x) => x.firstSlot + x.slotCount - 1 === ref.slot);
    if (!e || latin1(e.short.name) !== latin1(ref.shortName) || e.short.firstCluster !== ref.first) {
      throw new NotFoundError(`${path} was renamed or removed while it was open for writing`, { file: path });
    }
    return e;
  }

  async #setEntry(ref: EntryRef, entry: Located, first: number, size: number): Promise<void> {
    const t = this.#stampNow();
    await this.#rewriteShort(ref.parent, entry, { ...entry.short, firstCluster: first, size, writeTime: t.time, writeDate: t.date, accessDate: t.date });
    ref.first = first;
  }

  /**
   * Resizes a file open for writing. Growing: clusters after the last one where free (else wherever),
   * zeros in every new byte (unless `uninitialized`), both FATs, then the entry's size. Shrinking: the
   * entry's size first, then the tail freed in both FATs. A cut in between leaves a chain longer than
   * the size (read as Linux reads it; fsck.fat truncates it); the same resize again completes it.
   */
  async #resize(path: string, ref: EntryRef, file: FatFileDisk, size: number, uninitialized: boolean): Promise<void> {
    this.#checkSize(size, path);
    const chain = file.chain;
    const have = runClusters(chain);
    const need = this.#clustersFor(size);
    const oldSize = file.size;
    if (size === oldSize && need === have) return;
    await this.#beginChange();
    const entry = await this.#entryAt(ref, path);
    if (need > have) {
      const lastRun = chain[chain.length - 1];
      const last = lastRun ? lastRun.first + lastRun.count - 1 : undefined;
      const added = await this.#fat.allocate(need - have, last);
      const grown = [...chain, ...added];
      if (!uninitialized) await this.#zeroRange(grown, oldSize, size);
      // The new clusters are in every FAT copy before the file's last cluster links to them: a cut
      // between leaves them lost, never a chain running into clusters still free on disk.
      await this.#fat.writeBack();
      if (last !== undefined) {
        await this.#fat.set(last, added[0]!.first);
        await this.#fat.writeBack();
      }
      await this.#setEntry(ref, entry, grown[0]!.first, size);
      file.relayout(grown, size);
      return;
    }
    if (size > oldSize && !uninitialized) await this.#zeroRange(chain, oldSize, size);
    if (size !== oldSize) await this.#setEntry(ref, entry, need > 0 ? chain[0]!.first : 0, size);
    if (need < have) {
      const kept = sliceRuns(chain, 0, need);
      const tail = sliceRuns(chain, need, have);
      if (need > 0) {
        // The chain ends in every copy before its tail is freed (else a cut could leave it linking into
        // free clusters).
        const k = kept[kept.length - 1]!;
        await this.#fat.set(k.first + k.count - 1, this.#fat.endOfChain);
        await this.#fat.writeBack();
      }
      await this.#fat.free(tail);
      await this.#fat.writeBack();
      file.relayout(kept, size);
    } else file.relayout(chain, size);
  }

  async mkdir(path: string): Promise<void> {
    const { parent, name, existing } = await this.#parentOf(path);
    validateName(name);
    if (existing) throw new AlreadyExistsError(`it already exists: ${path}`, { file: path });
    await this.#beginChange();
    const [run] = await this.#fat.allocate(1);
    const cluster = run!.first;
    const fields = this.#newEntryFields(ATTR_DIRECTORY, cluster, 0);
    const block = new Uint8Array(this.layout.clusterSize);
    const dotName = (s: string): Uint8Array => Uint8Array.from(s.padEnd(11, ' '), (c) => c.charCodeAt(0));
    block.set(encodeShortEntry({ ...fields, name: dotName('.'), ntCase: 0 }), 0);
    block.set(encodeShortEntry({ ...fields, name: dotName('..'), ntCase: 0, firstCluster: parent === this.#rootCluster() ? 0 : parent }), ENTRY_SIZE);
    await this.#writeRuns([run!], block);
    await this.#fat.writeBack();
    await this.#addEntry(parent, name, fields);
  }

  /** Deletes the entry, then frees the chain unless another entry of the directory still names it. */
  async unlink(path: string): Promise<void> {
    await this.#settleAll();
    const { parent, entry } = await this.#lookup(path);
    if (!entry || entry.short.attr & ATTR_DIRECTORY) throw new NotFoundError(`is a directory: ${path}`, { file: path });
    const chain = await this.#fat.runs(entry.short.firstCluster, this.layout.clusterCount, `file ${path}`);
    await this.#beginChange();
    await this.#deleteEntry(parent, entry);
    await this.#release(parent, entry.short.firstCluster, chain);
  }

  async rmdir(path: string): Promise<void> {
    await this.#settleAll();
    const { parent, entry } = await this.#lookup(path);
    if (!entry) throw new AlreadyExistsError('the root directory cannot be removed', { file: path });
    if (!(entry.short.attr & ATTR_DIRECTORY)) throw new NotFoundError(`not a directory: ${path}`, { file: path });
    const dir = await this.#dir(entry.short.firstCluster);
    if (dir.entries.length > 0) throw new AlreadyExistsError(`directory not empty: ${path}`, { file: path });
    await this.#beginChange();
    await this.#deleteEntry(parent, entry);
    await this.#release(parent, entry.short.firstCluster, clusterRuns(dir.clusters));
    this.#dirs.delete(entry.short.firstCluster);
  }

  /**
   * Renames (renameIsAtomic false). A new name: the new entry is written, then the old one deleted; a cut
   * between leaves two entries for one chain, and the same rename again finishes it (the target then
   * names the source's first cluster: only the source's entry is deleted, nothing is freed). Onto another
   * file: the target's short entry is repointed at the source's data (one 32-byte write), the source's
   * entry deleted, then the target's old chain freed (unless another entry still names it); a cut leaves
   * at worst the two names sharing the data and the old chain as lost clusters.
   */
  async rename(from: string, to: string): Promise<void> {
    await this.#settleAll();
    const src = await this.#lookup(from);
    if (!src.entry) throw new AlreadyExistsError('the root directory cannot be renamed', { file: from });
    const source = src.entry;
    const isDir = (source.short.attr & ATTR_DIRECTORY) !== 0;
    const fromParts = this.#split(from);
    const toParts = this.#split(to);
    if (isDir && toParts.length > fromParts.length && fromParts.every((p, i) => foldName(p) === foldName(toParts[i]!))) {
      throw new AlreadyExistsError(`cannot move a directory into itself: ${from} → ${to}`, { file: from });
    }
    const { parent, name, existing } = await this.#parentOf(to);
    validateName(name);
    const sameEntry = existing !== undefined && parent === src.parent && existing.firstSlot === source.firstSlot;
    if (sameEntry && existing.name === name) return;
    const { name: _oldName, ntCase: _oldCase, ...moved } = source.short;
    if (existing && !sameEntry) {
      const targetDir = (existing.short.attr & ATTR_DIRECTORY) !== 0;
      if (targetDir !== isDir) throw isDir ? new NotFoundError(`not a directory: ${to}`, { file: to }) : new NotFoundError(`is a directory: ${to}`, { file: to });
      if (source.short.firstCluster !== 0 && existing.short.firstCluster === source.short.firstCluster) {
        // `to` names the source's data already: an earlier rename was cut after its new entry. Finish it.
        await this.#beginChange();
        if (isDir && parent !== src.parent) await this.#setDotDot(source.short.firstCluster, parent);
        await this.#deleteEntry(src.parent, source);
        return;
      }
      let oldChain: Run[];
      if (targetDir) {
        const d = await this.#dir(existing.short.firstCluster);
        if (d.entries.length > 0) throw new AlreadyExistsError(`directory not empty: ${to}`, { file: to });
        oldChain = clusterRuns(d.clusters);
      } else {
        oldChain = await this.#fat.runs(existing.short.firstCluster, this.layout.clusterCount, `file ${to}`);
      }
      await this.#beginChange();
      await this.#rewriteShort(parent, existing, { ...existing.short, ...moved, name: existing.short.name, ntCase: existing.short.ntCase });
      if (isDir && parent !== src.parent) await this.#setDotDot(source.short.firstCluster, parent);
      await this.#deleteEntry(src.parent, source);
      await this.#release(parent, existing.short.firstCluster, oldChain);
      if (targetDir) this.#dirs.delete(existing.short.firstCluster);
      return;
    }
    // (A new spelling of the same name goes the same way: the old short name counts as taken, so the new
    // entry gets an alias, and the old entry is deleted after it.)
    await this.#beginChange();
    await this.#addEntry(parent, name, moved, true);
    if (isDir && parent !== src.parent) await this.#setDotDot(source.short.firstCluster, parent);
    await this.#deleteEntry(src.parent, source);
  }

  async #setDotDot(dirCluster: number, parent: number): Promise<void> {
    const off = this.layout.dataOffset + (dirCluster - 2) * this.layout.clusterSize + ENTRY_SIZE;
    const raw = await readAt(this.#disk, off, ENTRY_SIZE);
    if (raw[0] !== 0x2e || raw[1] !== 0x2e) throw new CorruptImageError(FORMAT, '".." entry', 'the second entry of a directory is not ".."', off);
    const dotdot = decodeShortEntry(raw, this.layout.type === 'fat32');
    await this.#disk.write(encodeShortEntry({ ...dotdot, firstCluster: parent === this.#rootCluster() ? 0 : parent }), off);
    this.#dirs.delete(dirCluster);
  }

  async #writeFsInfo(): Promise<void> {
    if (this.layout.type !== 'fat32' || this.#boot.fsInfoSector === 0) return;
    const free = await this.#fat.countFree();
    await this.#disk.write(encodeFsInfo({ freeCount: free, nextFree: this.#fat.nextFree ?? FSINFO_UNKNOWN }, 512), this.#boot.fsInfoSector * this.#boot.bytesPerSector);
  }

  async flush(): Promise<void> {
    await this.#settleAll();
    if (!this.#dirty) return;
    await this.#fat.writeBack();
    await this.#writeFsInfo();
    await this.#disk.flush();
  }

  /**
   * Writes everything out, clears the dirty bit (after a flush) and ends use of the filesystem. After a
   * write or flush that failed during the session the bit stays set: what the failure left (lost
   * clusters, FAT copies that differ) is repaired by the next open for writing.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    if (this.#dirty) {
      await this.flush();
      if (!this.#disk.failed) {
        this.#boot = { ...this.#boot, dirty: false };
        await this.#disk.write(encodeBootSector(this.#boot), 0);
        await this.#disk.flush();
      }
      this.#dirty = false;
    }
    this.#closed = true;
  }
}
