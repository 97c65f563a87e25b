/**
 * The persistent exception store, loaded and written with the kernel's rules (dm-snap-persistent.c).
 *
 * Design notes
 * - Loading: areas 0, 1, … are read until the first one that is not full; within an area the table
 *   ends at the first entry whose new_chunk is 0. next_free = max(new_chunk) + 1 (at least 2), bumped
 *   past a metadata chunk. Consecutive-run merging is an in-memory optimisation of the kernel and is not
 *   needed here: a Map from origin chunk to COW chunk serves lookups.
 * - Validation goes beyond the kernel's (which trusts its own writes): an entry that points at the
 *   header, a metadata area or past the end of the file, and duplicate origin or COW chunks, are
 *   reported as corruption instead of being served.
 * - Allocation is the kernel's: new_chunk = next_free++, skipping metadata chunks; refused when
 *   (next_free + 1) * chunk exceeds the COW size. One deliberate difference: the kernel may allocate the
 *   last data chunk of an area whose successor area does not fit in the file, and then invalidates the
 *   snapshot when it cannot zero that successor; livestick refuses that allocation instead (the overlay
 *   is full one chunk earlier, but stays valid).
 * - Commit: new exceptions stay pending (served from memory) until commit(), which does what the kernel
 *   does per batch: flush (data durable before metadata), then for each area that fills, zero the next
 *   area, flush, write the full area, flush; finally write the partial current area and flush. A crash
 *   at any instant leaves areas that describe only chunks whose data is durable, and a full area is
 *   always followed by a zeroed one, so the terminator rule holds.
 */
import { CorruptImageError } from '../../errors.ts';
import { readAt, type Disk } from '../../io/disk.ts';
import {
  DEFAULT_CHUNK_SECTORS,
  FORMAT,
  SECTOR,
  areaChunk,
  decodeArea,
  decodeHeader,
  encodeArea,
  encodeHeader,
  geometry,
  isMetadataChunk,
  type Exception,
  type Geometry,
} from './format.ts';
import { BINDING_BYTES, BINDING_OFFSET, decodeBinding, encodeBinding, type BaseBinding, type BindingState } from './binding.ts';
import { OverlayFullError, SnapshotInvalidError } from './errors.ts';

export type StoreState = 'new' | 'active' | 'invalid';

export interface StoreStatus {
  /** `dmsetup status` figures: sectors_allocated / total_sectors metadata_sectors. */
  readonly allocatedSectors: number;
  readonly totalSectors: number;
  readonly metadataSectors: number;
}

export class ExceptionStore {
  readonly disk: Disk;
  readonly geometry: Geometry;
  #state: StoreState;
  #binding: BindingState;
  readonly #map = new Map<number, number>();
  readonly #olds: number[] = [];
  readonly #news: number[] = [];
  #committed = 0;
  #nextFree = 2;
  #currentArea = 0;
  #areaEntries: Exception[] = [];
  #overflowed = false;

  private constructor(disk: Disk, g: Geometry, state: StoreState, binding: BindingState) {
    this.disk = disk;
    this.geometry = g;
    this.#state = state;
    this.#binding = binding;
  }

  /**
   * Opens an overlay. An all-zero header is a new snapshot (what the kernel initialises on activation);
   * it takes `chunkSectorsIfNew`, the chunk size a table line would give (dracut: 8).
   */
  static async open(disk: Disk, options: { chunkSectorsIfNew?: number } = {}): Promise<ExceptionStore> {
    if (disk.size < 16) {
      throw new CorruptImageError(FORMAT, 'header', disk.size === 0 ? 'the overlay file is empty' : `the overlay file is ${disk.size} bytes, too short for a header`, 0);
    }
    const header = decodeHeader(await readAt(disk, 0, 16));
    const g = geometry(header.kind === 'new' ? (options.chunkSectorsIfNew ?? DEFAULT_CHUNK_SECTORS) : header.chunkSectors);
    if (disk.size < 2 * g.chunkBytes) {
      throw new CorruptImageError(FORMAT, 'size', `the overlay file is ${disk.size} bytes, smaller than a header and one metadata area (${2 * g.chunkBytes} bytes)`, 0);
    }
    if (header.kind === 'new') return new ExceptionStore(disk, g, 'new', { state: 'unbound' });
    const headerChunk = await readAt(disk, 0, Math.min(g.chunkBytes, BINDING_OFFSET + BINDING_BYTES));
    const store = new ExceptionStore(disk, g, header.valid ? 'active' : 'invalid', decodeBinding(headerChunk));
    if (header.valid) await store.#load();
    return store;
  }

  /** Formats `disk` as an empty snapshot: header (valid, chunk size, optional binding), zeroed area 0. */
  static async format(disk: Disk, chunkSectors: number, binding?: BaseBinding): Promise<ExceptionStore> {
    const g = geometry(chunkSectors);
    if (disk.size < 3 * g.chunkBytes) {
      throw new RangeError(`an overlay needs room for a header, a metadata area and a data chunk (${3 * g.chunkBytes} bytes)`);
    }
    const store = new ExceptionStore(disk, g, 'active', binding ? { state: 'bound', binding } : { state: 'unbound' });
    await disk.write(new Uint8Array(g.chunkBytes), areaChunk(g, 0) * g.chunkBytes);
    await disk.flush();
    await store.#writeHeader(true);
    return store;
  }

  get state(): StoreState {
    return this.#state;
  }

  get valid(): boolean {
    return this.#state !== 'invalid';
  }

  get binding(): BindingState {
    return this.#binding;
  }

  get overflowed(): boolean {
    return this.#overflowed;
  }

  /** Number of exceptions (committed and pending). */
  get exceptionCount(): number {
    return this.#olds.length;
  }

  get pendingCount(): number {
    return this.#olds.length - this.#committed;
  }

  get nextFree(): number {
    return this.#nextFree;
  }

  /** COW chunks that fit in the file. */
  get cowChunks(): number {
    return Math.floor(this.disk.size / this.geometry.chunkBytes);
  }

  status(): StoreStatus {
    const cs = this.geometry.chunkSectors;
    return {
      allocatedSectors: this.#nextFree * cs,
      totalSectors: Math.floor(this.disk.size / SECTOR),
      metadataSectors: (this.#currentArea + 2) * cs,
    };
  }

  lookup(oldChunk: number): number | undefined {
    return this.#map.get(oldChunk);
  }

  #sortedOld: Float64Array = new Float64Array(0);
  #sortedNew: Float64Array = new Float64Array(0);
  #sortedCount = -1;

  /**
   * Calls `visit(oldFirst, count, newFirst)` for each run of consecutive origin chunks in
   * [first, last] whose COW chunks are consecutive too, in origin order. Uses a sorted index (rebuilt
   * after new exceptions) so large reads cost O(log n + runs) instead of a lookup per chunk.
   */
  forEachRun(first: number, last: number, visit: (oldFirst: number, count: number, newFirst: number) => void): void {
    if (this.#sortedCount !== this.#olds.length) this.#buildIndex();
    const olds = this.#sortedOld;
    const news = this.#sortedNew;
    let lo = 0;
    let hi = olds.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((olds[mid] as number) < first) lo = mid + 1;
      else hi = mid;
    }
    let i = lo;
    while (i < olds.length && (olds[i] as number) <= last) {
      const o = olds[i] as number;
      const n = news[i] as number;
      let count = 1;
      while (i + count < olds.length && olds[i + count] === o + count && news[i + count] === n + count && o + count <= last) count++;
      visit(o, count, n);
      i += count;
    }
  }

  #buildIndex(): void {
    const n = this.#olds.length;
    const order = new Uint32Array(n).map((_, i) => i);
    const olds = this.#olds;
    order.sort((a, b) => (olds[a] as number) - (olds[b] as number));
    this.#sortedOld = new Float64Array(n);
    this.#sortedNew = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      const j = order[i] as number;
      this.#sortedOld[i] = olds[j] as number;
      this.#sortedNew[i] = this.#news[j] as number;
    }
    this.#sortedCount = n;
  }

  /** The exceptions in table order (committed first, then pending). */
  *exceptions(): Generator<Exception> {
    for (let i = 0; i < this.#olds.length; i++) yield { oldChunk: this.#olds[i] as number, newChunk: this.#news[i] as number };
  }

  /** Throws if an exception maps an origin chunk beyond a base of `baseSize` bytes. */
  checkFitsBase(baseSize: number): void {
    const baseChunks = Math.ceil(baseSize / this.geometry.chunkBytes);
    let max = -1;
    for (const o of this.#olds) if (o > max) max = o;
    if (max >= baseChunks) {
      throw new CorruptImageError(FORMAT, 'old_chunk', `an exception maps origin chunk ${max}, but the base has only ${baseChunks} chunks of ${this.geometry.chunkBytes} bytes (is this the right base?)`);
    }
  }

  /** How many more chunks can be allocated before the overlay is full. */
  freeChunks(): number {
    let n = 0;
    const sim = { nextFree: this.#nextFree, inArea: this.#areaEntries.length + this.pendingCount, area: this.#currentArea };
    while (this.#fits(sim)) {
      this.#advance(sim);
      n++;
    }
    return n;
  }

  /** True if `count` new chunks can be allocated now. */
  canAllocate(count: number): boolean {
    if (!this.valid || this.#overflowed) return false;
    const sim = { nextFree: this.#nextFree, inArea: this.#areaEntries.length + this.pendingCount, area: this.#currentArea };
    for (let i = 0; i < count; i++) {
      if (!this.#fits(sim)) return false;
      this.#advance(sim);
    }
    return true;
  }

  #fits(sim: { nextFree: number; inArea: number; area: number }): boolean {
    const g = this.geometry;
    if (this.status().totalSectors < (sim.nextFree + 1) * g.chunkSectors) return false;
    // inArea counts entries from the start of `area`, possibly beyond one area's worth.
    const slot = sim.inArea;
    const fillsArea = (slot + 1) % g.exceptionsPerArea === 0;
    if (fillsArea) {
      const nextArea = sim.area + Math.floor(slot / g.exceptionsPerArea) + 1;
      if (areaChunk(g, nextArea) >= this.cowChunks) return false;
    }
    return true;
  }

  #advance(sim: { nextFree: number; inArea: number; area: number }): void {
    sim.nextFree = this.#skipMetadata(sim.nextFree + 1);
    sim.inArea++;
  }

  #skipMetadata(nextFree: number): number {
    return nextFree % (this.geometry.exceptionsPerArea + 1) === 1 ? nextFree + 1 : nextFree;
  }

  /** Allocates a COW chunk for `oldChunk` (pending until commit). Caller checked canAllocate. */
  allocate(oldChunk: number): number {
    if (!this.valid) throw new SnapshotInvalidError('the snapshot is invalid');
    if (this.#map.has(oldChunk)) throw new Error(`origin chunk ${oldChunk} already has an exception`);
    if (!this.canAllocate(1)) throw new OverlayFullError('the overlay is full');
    const newChunk = this.#nextFree;
    this.#nextFree = this.#skipMetadata(this.#nextFree + 1);
    this.#map.set(oldChunk, newChunk);
    this.#olds.push(oldChunk);
    this.#news.push(newChunk);
    return newChunk;
  }

  /** PO behaviour: remember (in memory only, as the kernel does) that a write found the overlay full. */
  markOverflowed(): void {
    this.#overflowed = true;
  }

  /** Writes pending exceptions to the metadata areas, in the kernel's order (see design notes). */
  async commit(): Promise<void> {
    if (this.#state === 'new') await this.initialize();
    if (this.pendingCount === 0) return;
    const g = this.geometry;
    await this.disk.flush();
    let dirty = false;
    while (this.#committed < this.#olds.length) {
      const i = this.#committed;
      this.#areaEntries.push({ oldChunk: this.#olds[i] as number, newChunk: this.#news[i] as number });
      this.#committed++;
      if (this.#areaEntries.length === g.exceptionsPerArea) {
        await this.disk.write(new Uint8Array(g.chunkBytes), areaChunk(g, this.#currentArea + 1) * g.chunkBytes);
        await this.disk.flush();
        await this.#writeCurrentArea();
        await this.disk.flush();
        this.#currentArea++;
        this.#areaEntries = [];
        dirty = false;
      } else {
        dirty = true;
      }
    }
    if (dirty) {
      await this.#writeCurrentArea();
      await this.disk.flush();
    }
  }

  /** What the kernel does on activating an all-zero COW: write the header, zero area 0. */
  async initialize(): Promise<void> {
    if (this.#state !== 'new') return;
    const g = this.geometry;
    await this.disk.write(new Uint8Array(g.chunkBytes), areaChunk(g, 0) * g.chunkBytes);
    await this.disk.flush();
    this.#state = 'active';
    await this.#writeHeader(true);
  }

  /** P behaviour on overflow and on errors: persist valid = 0 (the kernel zero-fills the header chunk). */
  async invalidate(): Promise<void> {
    this.#state = 'invalid';
    this.#binding = { state: 'unbound' };
    await this.#writeHeader(false);
  }

  /**
   * Empties the overlay, keeping its size, chunk size and binding: zero area 0 first (the table is then
   * empty whatever happens next), then a valid header.
   */
  async reset(): Promise<void> {
    const g = this.geometry;
    await this.disk.write(new Uint8Array(g.chunkBytes), areaChunk(g, 0) * g.chunkBytes);
    await this.disk.flush();
    this.#map.clear();
    this.#sortedCount = -1;
    this.#olds.length = 0;
    this.#news.length = 0;
    this.#committed = 0;
    this.#nextFree = 2;
    this.#currentArea = 0;
    this.#areaEntries = [];
    this.#overflowed = false;
    this.#state = 'active';
    await this.#writeHeader(true);
  }

  /** Records (or replaces) the base binding; one sector write, so it is atomic. */
  async bind(binding: BaseBinding): Promise<void> {
    if (this.#state === 'new') await this.initialize();
    if (!this.valid) throw new SnapshotInvalidError('cannot bind an invalidated snapshot');
    this.#binding = { state: 'bound', binding };
    await this.#writeHeader(true);
  }

  async #writeHeader(valid: boolean): Promise<void> {
    const chunk = encodeHeader({ valid, chunkSectors: this.geometry.chunkSectors });
    if (valid && this.#binding.state === 'bound') chunk.set(encodeBinding(this.#binding.binding), BINDING_OFFSET);
    // The header fields and the binding share the first sector: write it alone, then the (zero) rest once.
    await this.disk.write(chunk.subarray(0, SECTOR), 0);
    await this.disk.flush();
  }

  async #writeCurrentArea(): Promise<void> {
    const g = this.geometry;
    await this.disk.write(encodeArea(this.#areaEntries, g), areaChunk(g, this.#currentArea) * g.chunkBytes);
  }

  async #load(): Promise<void> {
    const g = this.geometry;
    const cowChunks = this.cowChunks;
    const seenNew = new Uint8Array(Math.ceil(cowChunks / 8));
    for (let area = 0; ; area++) {
      const chunk = areaChunk(g, area);
      const offset = chunk * g.chunkBytes;
      if (chunk >= cowChunks) {
        throw new CorruptImageError(FORMAT, 'area', `metadata area ${area} (chunk ${chunk}) lies past the end of the overlay file: the file was truncated, or the previous area claims to be full`, offset);
      }
      const decoded = decodeArea(await readAt(this.disk, offset, g.chunkBytes), g, offset);
      decoded.exceptions.forEach((e, i) => {
        const at = offset + i * 16;
        if (e.newChunk >= cowChunks) {
          throw new CorruptImageError(FORMAT, 'new_chunk', `exception ${this.#olds.length} points at COW chunk ${e.newChunk}, past the end of the overlay (${cowChunks} chunks)`, at + 8);
        }
        if (isMetadataChunk(g, e.newChunk)) {
          throw new CorruptImageError(FORMAT, 'new_chunk', `exception ${this.#olds.length} points at COW chunk ${e.newChunk}, which holds metadata`, at + 8);
        }
        if (this.#map.has(e.oldChunk)) {
          throw new CorruptImageError(FORMAT, 'old_chunk', `duplicate exception for origin chunk ${e.oldChunk}`, at);
        }
        const byte = e.newChunk >>> 3;
        const bit = 1 << (e.newChunk & 7);
        if (((seenNew[byte] ?? 0) & bit) !== 0) {
          throw new CorruptImageError(FORMAT, 'new_chunk', `COW chunk ${e.newChunk} is used by two exceptions`, at + 8);
        }
        seenNew[byte] = (seenNew[byte] ?? 0) | bit;
        this.#map.set(e.oldChunk, e.newChunk);
        this.#olds.push(e.oldChunk);
        this.#news.push(e.newChunk);
        if (e.newChunk >= this.#nextFree) this.#nextFree = e.newChunk + 1;
      });
      if (!decoded.full) {
        this.#currentArea = area;
        this.#areaEntries = [...decoded.exceptions];
        break;
      }
    }
    this.#committed = this.#olds.length;
    this.#nextFree = this.#skipMetadata(this.#nextFree);
  }
}
