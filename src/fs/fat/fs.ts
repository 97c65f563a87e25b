/**
 * FatFs: FAT12/16/32 with VFAT long names as a WritableFileSystem.
 *
 * Design notes
 * - Directories are read whole (at most 65536 entries, 2 MiB, as the format allows) into a parsed
 *   listing kept in a small LRU; any change to a directory drops its listing.
 * - Write order, so a power loss leaves at worst lost clusters: file data, then the FAT in every copy
 *   (FatTable.writeBack), then the directory entry. Deletes go the other way: the directory entry is
 *   marked deleted first, then the chain is freed in the FATs. Growing a directory zeroes the new
 *   cluster before linking it.
 * - The boot sector's dirty bit is set before the first change and cleared by `close` after the FATs,
 *   FSInfo (exact free count and next-free hint) and everything else are on disk, as Linux does.
 * - Rename is not atomic (renameIsAtomic = false), as on Linux: the new entry is written first (or an
 *   existing target's entry is repointed in place), then the old entry is deleted. A crash between the
 *   two leaves two names for one cluster chain (fsck.fat reports the shared clusters); never none.
 * - Files are limited to 4 GiB − 1 bytes (the 32-bit size field); larger sizes are refused up front.
 * - createFile allocates (contiguous where possible) and writes the entry with the final size before
 *   any data: its clusters read as whatever they held (zeros on a fresh volume); it does not zero them,
 *   so a sparse host image stays sparse. writeFile writes the data first.
 * - Timestamps are local time written with `timeZoneOffsetMinutes`; `now` is the clock (fixed in tests,
 *   so images are byte-for-byte reproducible).
 * - close() leaves the Disk open: its owner closes it.
 */
import { AlreadyExistsError, CorruptImageError, NotFoundError, ReadOnlyError, UnsupportedFeatureError } from '../../errors.ts';
import { readAt, type Disk } from '../../io/disk.ts';
import { isAllZero } from '../../io/bytes.ts';
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
import { FatFileDisk, forEachExtent, runsOf } from './filedisk.ts';
import { FatTable } from './table.ts';

export interface FatOpenOptions {
  readOnly?: boolean;
  /** Minutes east of UTC of the local time the timestamps are in (default 0). */
  timeZoneOffsetMinutes?: number;
  /** The clock for new timestamps, in ms since the epoch (default Date.now). */
  now?: () => number;
}

const MAX_DIR_ENTRIES = 65536;
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
  readonly shortNames: Set<string>;
  readonly label: string | undefined;
}

export class FatFsError extends UnsupportedFeatureError {}

const latin1 = (b: Uint8Array): string => String.fromCharCode(...b);

export class FatFs implements WritableFileSystem {
  readonly renameIsAtomic = false;
  readonly readOnly: boolean;
  readonly layout: Layout;
  readonly #disk: Disk;
  #boot: BootSector;
  readonly #fat: FatTable;
  readonly #tz: number;
  readonly #now: () => number;
  readonly #dirs = new Map<number, Dir>();
  #dirty = false;
  #label: string | undefined;
  #closed = false;

  private constructor(disk: Disk, boot: BootSector, options: FatOpenOptions) {
    this.#disk = disk;
    this.#boot = boot;
    this.layout = layoutOf(boot);
    this.#fat = new FatTable(disk, this.layout);
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
    const root = await fs.#dir(fs.#rootCluster());
    fs.#label = root.label ?? (boot.hasExtendedSignature && boot.label.trim() !== 'NO NAME' ? boot.label.replace(/ +$/, '') : undefined);
    if (!fs.readOnly) await fs.#fat.countFree();
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
      clusters = await this.#fat.chain(cluster, limit, 'directory');
      bytes = new Uint8Array(clusters.length * layout.clusterSize);
      for (const run of runsOf(clusters, layout.clusterSize)) {
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
    const fat32 = layout.type === 'fat32';
    for (let slot = 0; slot < capacity; slot++) {
      const raw = bytes.subarray(slot * ENTRY_SIZE, (slot + 1) * ENTRY_SIZE);
      if (ended || raw[0] === 0) {
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
      entries.push({ name: long ?? shortNameText(short.name, short.ntCase), short, firstSlot: useLong ? pendingStart : slot, slotCount: useLong ? lfn.length + 1 : 1 });
    }
    const dir: Dir = { cluster, clusters, capacity, entries, free, shortNames, label };
    if (this.#dirs.size >= DIR_CACHE) this.#dirs.delete(this.#dirs.keys().next().value!);
    this.#dirs.set(cluster, dir);
    return dir;
  }

  #find(dir: Dir, name: string): Located | undefined {
    const folded = foldName(name);
    return dir.entries.find((e) => foldName(e.name) === folded || foldName(shortNameText(e.short.name, 0)) === folded);
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

  async #fileRuns(e: ShortEntry, path: string) {
    const cs = this.layout.clusterSize;
    const need = Math.ceil(e.size / cs);
    const clusters = await this.#fat.chain(e.firstCluster, Math.max(need, 1) + 0, `file ${path}`);
    if (clusters.length < need) throw new CorruptImageError(FORMAT, `file ${path} cluster chain`, `${clusters.length} clusters cannot hold ${e.size} bytes`);
    return runsOf(clusters, cs);
  }

  async #fileEntry(path: string): Promise<Located> {
    const { entry } = await this.#lookup(path);
    if (!entry || entry.short.attr & ATTR_DIRECTORY) throw new NotFoundError(`is a directory: ${path}`, { file: path });
    return entry;
  }

  async openFile(path: string): Promise<Disk> {
    const entry = await this.#fileEntry(path);
    return new FatFileDisk(this.#disk, this.layout, await this.#fileRuns(entry.short, path), entry.short.size, true);
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

  async #writeClusters(clusters: readonly number[], data: Uint8Array): Promise<void> {
    const runs = runsOf(clusters, this.layout.clusterSize);
    const pieces: [number, number, number][] = [];
    forEachExtent(runs, this.layout, 0, data.byteLength, (dev, at, len) => pieces.push([dev, at, len]));
    for (const [dev, at, len] of pieces) await this.#disk.write(data.subarray(at, at + len), dev);
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

  /** n consecutive free slots in the directory, growing it (zeroed cluster, then the FAT link) if needed. */
  async #freeSlots(dirCluster: number, n: number): Promise<{ dir: Dir; slot: number }> {
    for (;;) {
      const dir = await this.#dir(dirCluster);
      let run = 0;
      for (let s = 0; s < dir.capacity; s++) {
        run = dir.free[s] ? run + 1 : 0;
        if (run === n) return { dir, slot: s - n + 1 };
      }
      if (dir.cluster === 0) throw new AlreadyExistsError(`the root directory is full (${dir.capacity} entries on ${this.layout.type})`);
      if (dir.capacity + 1 > MAX_DIR_ENTRIES) throw new AlreadyExistsError(`the directory is full (${MAX_DIR_ENTRIES} entries)`);
      const [added] = await this.#fat.allocate(1);
      await this.#writeClusters([added!], new Uint8Array(this.layout.clusterSize));
      await this.#fat.set(dir.clusters[dir.clusters.length - 1]!, added!);
      await this.#fat.writeBack();
      this.#dirs.delete(dirCluster);
    }
  }

  /** Writes a new entry (LFN pieces + short entry) for `name`; `except` is a slot range to ignore for clashes. */
  async #addEntry(dirCluster: number, name: string, base: Omit<ShortEntry, 'name' | 'ntCase'>): Promise<void> {
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
    const { dir: target, slot } = await this.#freeSlots(dirCluster, lfn.length + 1);
    const bytes = new Uint8Array((lfn.length + 1) * ENTRY_SIZE);
    lfn.forEach((piece, i) => bytes.set(piece, i * ENTRY_SIZE));
    bytes.set(encodeShortEntry({ ...base, name: shortName, ntCase }), lfn.length * ENTRY_SIZE);
    await this.#writeSlots(target, slot, bytes);
  }

  async #deleteEntry(dirCluster: number, entry: Located): Promise<void> {
    const dir = await this.#dir(dirCluster);
    const bytes = new Uint8Array(entry.slotCount * ENTRY_SIZE);
    for (let i = 0; i < entry.slotCount; i++) {
      const off = this.#slotOffset(dir, entry.firstSlot + i);
      const raw = await readAt(this.#disk, off, ENTRY_SIZE);
      raw[0] = DELETED;
      bytes.set(raw, i * ENTRY_SIZE);
    }
    await this.#writeSlots(dir, entry.firstSlot, bytes);
  }

  async #rewriteShort(dirCluster: number, entry: Located, short: ShortEntry): Promise<void> {
    const dir = await this.#dir(dirCluster);
    await this.#writeSlots(dir, entry.firstSlot + entry.slotCount - 1, encodeShortEntry(short));
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

  async #newFile(path: string, size: number, mode: number | undefined, data: Uint8Array | undefined): Promise<{ clusters: number[] }> {
    this.#checkSize(size, path);
    const { parent, name, existing } = await this.#parentOf(path);
    validateName(name);
    if (existing && (existing.short.attr & ATTR_DIRECTORY || !data)) throw new AlreadyExistsError(`it already exists: ${path}`, { file: path });
    await this.#beginChange();
    const clusters = await this.#fat.allocate(this.#clustersFor(size));
    if (data) await this.#writeClusters(clusters, data);
    await this.#fat.writeBack();
    const attr = ATTR_ARCHIVE | (mode !== undefined && (mode & 0o222) === 0 ? ATTR_READ_ONLY : 0);
    const fields = this.#newEntryFields(attr, clusters[0] ?? 0, size);
    if (existing) {
      const old = await this.#fat.chain(existing.short.firstCluster, this.layout.clusterCount, `file ${path}`);
      await this.#rewriteShort(parent, existing, { ...existing.short, ...fields, createDate: existing.short.createDate, createTime: existing.short.createTime, createTenths: existing.short.createTenths });
      await this.#fat.free(old);
      await this.#fat.writeBack();
    } else {
      await this.#addEntry(parent, name, fields);
    }
    return { clusters };
  }

  async writeFile(path: string, data: Uint8Array, options: { mode?: number } = {}): Promise<void> {
    await this.#newFile(path, data.byteLength, options.mode, data);
  }

  /**
   * A new file reads as zeros, as POSIX promises: FAT has no holes, so clusters that still hold a
   * deleted file's bytes are zeroed; clusters that read as zeros already (a fresh or sparse image) are
   * left unwritten, which keeps the host file sparse.
   */
  async createFile(path: string, options: CreateFileOptions): Promise<WritableFile> {
    const { clusters } = await this.#newFile(path, options.size, options.mode, undefined);
    const disk = new FatFileDisk(this.#disk, this.layout, runsOf(clusters, this.layout.clusterSize), options.size, false, () => this.#beginChange());
    const piece = new Uint8Array(Math.min(4 << 20, Math.max(1, options.size)));
    for (let at = 0; at < options.size; at += piece.byteLength) {
      const part = piece.subarray(0, Math.min(piece.byteLength, options.size - at));
      await disk.read(part, at);
      if (!isAllZero(part)) await disk.write(part.fill(0), at);
    }
    return disk;
  }

  async openFileForWriting(path: string): Promise<WritableFile> {
    if (this.readOnly) throw new ReadOnlyError('the FAT filesystem is open read-only');
    const entry = await this.#fileEntry(path);
    return new FatFileDisk(this.#disk, this.layout, await this.#fileRuns(entry.short, path), entry.short.size, false, () => this.#beginChange());
  }

  async mkdir(path: string): Promise<void> {
    const { parent, name, existing } = await this.#parentOf(path);
    validateName(name);
    if (existing) throw new AlreadyExistsError(`it already exists: ${path}`, { file: path });
    await this.#beginChange();
    const [cluster] = await this.#fat.allocate(1);
    const fields = this.#newEntryFields(ATTR_DIRECTORY, cluster!, 0);
    const block = new Uint8Array(this.layout.clusterSize);
    const dotName = (s: string): Uint8Array => Uint8Array.from(s.padEnd(11, ' '), (c) => c.charCodeAt(0));
    block.set(encodeShortEntry({ ...fields, name: dotName('.'), ntCase: 0 }), 0);
    block.set(encodeShortEntry({ ...fields, name: dotName('..'), ntCase: 0, firstCluster: parent === this.#rootCluster() ? 0 : parent }), ENTRY_SIZE);
    await this.#writeClusters([cluster!], block);
    await this.#fat.writeBack();
    await this.#addEntry(parent, name, fields);
  }

  async unlink(path: string): Promise<void> {
    const { parent, entry } = await this.#lookup(path);
    if (!entry || entry.short.attr & ATTR_DIRECTORY) throw new NotFoundError(`is a directory: ${path}`, { file: path });
    const chain = await this.#fat.chain(entry.short.firstCluster, this.layout.clusterCount, `file ${path}`);
    await this.#beginChange();
    await this.#deleteEntry(parent, entry);
    await this.#fat.free(chain);
    await this.#fat.writeBack();
  }

  async rmdir(path: string): Promise<void> {
    const { parent, entry } = await this.#lookup(path);
    if (!entry) throw new AlreadyExistsError('the root directory cannot be removed', { file: path });
    if (!(entry.short.attr & ATTR_DIRECTORY)) throw new NotFoundError(`not a directory: ${path}`, { file: path });
    const dir = await this.#dir(entry.short.firstCluster);
    if (dir.entries.length > 0) throw new AlreadyExistsError(`directory not empty: ${path}`, { file: path });
    await this.#beginChange();
    await this.#deleteEntry(parent, entry);
    await this.#fat.free(dir.clusters);
    await this.#fat.writeBack();
    this.#dirs.delete(entry.short.firstCluster);
  }

  async rename(from: string, to: string): Promise<void> {
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
    await this.#beginChange();
    const { name: _oldName, ntCase: _oldCase, ...moved } = source.short;
    if (existing && !sameEntry) {
      const targetDir = (existing.short.attr & ATTR_DIRECTORY) !== 0;
      if (targetDir !== isDir) throw isDir ? new NotFoundError(`not a directory: ${to}`, { file: to }) : new NotFoundError(`is a directory: ${to}`, { file: to });
      let oldChain: readonly number[];
      if (targetDir) {
        const d = await this.#dir(existing.short.firstCluster);
        if (d.entries.length > 0) throw new AlreadyExistsError(`directory not empty: ${to}`, { file: to });
        oldChain = d.clusters;
      } else {
        oldChain = await this.#fat.chain(existing.short.firstCluster, this.layout.clusterCount, `file ${to}`);
      }
      await this.#rewriteShort(parent, existing, { ...existing.short, ...moved, name: existing.short.name, ntCase: existing.short.ntCase });
      if (isDir && parent !== src.parent) await this.#setDotDot(source.short.firstCluster, parent);
      await this.#deleteEntry(src.parent, source);
      await this.#fat.free(oldChain);
      await this.#fat.writeBack();
      return;
    }
    // (A new spelling of the same name goes the same way: the old short name counts as taken, so the new
    // entry gets an alias, and the old entry is deleted after it.)
    await this.#addEntry(parent, name, moved);
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
    if (!this.#dirty) return;
    await this.#fat.writeBack();
    await this.#writeFsInfo();
    await this.#disk.flush();
  }

  /** Writes everything out, clears the dirty bit (after a flush) and ends use of the filesystem. */
  async close(): Promise<void> {
    if (this.#closed) return;
    if (this.#dirty) {
      await this.flush();
      this.#boot = { ...this.#boot, dirty: false };
      await this.#disk.write(encodeBootSector(this.#boot), 0);
      await this.#disk.flush();
      this.#dirty = false;
    }
    this.#closed = true;
  }
}
