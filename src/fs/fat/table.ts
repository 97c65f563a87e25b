/**
 * The File Allocation Table: entry access for FAT12/16/32, chain walking, allocation and write-back to
 * every FAT copy.
 *
 * Design notes
 * - FAT12/16 tables (at most 128 KiB) are held whole. FAT32 tables are read in 64 KiB chunks through a
 *   bounded cache (CACHE_CHUNKS); changed chunks stay until `writeBack`, which writes each to every FAT
 *   copy, copy 0 first. Callers write back before they write the directory entry that points at a chain,
 *   so data → FAT copies → directory entry is the order on disk.
 * - The first FAT copy is the one read (as Linux does with mirroring on); the FAT32 ext-flags "active FAT"
 *   mode (mirroring off) is refused for writing.
 * - Free clusters are counted by one streaming pass (`countFree`); the count and the next-free hint are
 *   kept exact from then on, and go into FSInfo on flush.
 * - Allocation prefers one contiguous run (first fit from the next-free hint, wrapping); without one,
 *   it takes free clusters in order from the hint.
 * - Chains are walked with a bound (the cluster count, or the caller's) and every link is checked, so a
 *   cycle or a pointer out of range is a CorruptImageError, never a hang.
 */
import { CorruptImageError, LivestickError, ExitCode } from '../../errors.ts';
import type { Disk } from '../../io/disk.ts';
import { FORMAT, type Layout } from './boot.ts';

const CHUNK_BYTES = 64 * 1024;
const CACHE_CHUNKS = 128;

export const FREE = 0;

export class FatNoSpaceError extends LivestickError {
  constructor(message: string) {
    super('NO_SPACE', ExitCode.ioError, message);
  }
}

export interface Run {
  readonly first: number;
  readonly count: number;
}

export class FatTable {
  readonly layout: Layout;
  readonly #disk: Disk;
  readonly #eoc: number;
  readonly #bad: number;
  #whole: Uint8Array | undefined;
  #wholeDirty = new Set<number>();
  #chunks = new Map<number, Uint8Array>();
  #dirtyChunks = new Set<number>();
  #free: number | undefined;
  nextFree = 2;

  constructor(disk: Disk, layout: Layout) {
    this.#disk = disk;
    this.layout = layout;
    this.#eoc = layout.type === 'fat12' ? 0xff8 : layout.type === 'fat16' ? 0xfff8 : 0x0ffffff8;
    this.#bad = this.#eoc - 1;
  }

  get maxCluster(): number {
    return this.layout.clusterCount + 1;
  }

  get endOfChain(): number {
    return this.layout.type === 'fat12' ? 0xfff : this.layout.type === 'fat16' ? 0xffff : 0x0fffffff;
  }

  async #wholeTable(): Promise<Uint8Array> {
    if (!this.#whole) {
      const bytes = new Uint8Array(this.layout.fatBytes);
      await this.#disk.read(bytes, this.layout.fatOffset);
      this.#whole = bytes;
    }
    return this.#whole;
  }

  async #chunk(index: number): Promise<Uint8Array> {
    let c = this.#chunks.get(index);
    if (c) {
      this.#chunks.delete(index);
      this.#chunks.set(index, c);
      return c;
    }
    const start = index * CHUNK_BYTES;
    c = new Uint8Array(Math.min(CHUNK_BYTES, this.layout.fatBytes - start));
    await this.#disk.read(c, this.layout.fatOffset + start);
    if (this.#chunks.size >= CACHE_CHUNKS) {
      for (const key of this.#chunks.keys()) {
        if (!this.#dirtyChunks.has(key)) {
          this.#chunks.delete(key);
          break;
        }
      }
      if (this.#chunks.size >= CACHE_CHUNKS) await this.writeBack();
    }
    this.#chunks.set(index, c);
    return c;
  }

  /** The raw entry of `cluster` (0..maxCluster). */
  async get(cluster: number): Promise<number> {
    const v = this.peek(cluster);
    if (v !== undefined) return v;
    if (this.layout.type === 'fat32') await this.#chunk(Math.floor((cluster * 4) / CHUNK_BYTES));
    else await this.#wholeTable();
    return this.peek(cluster)!;
  }

  /** The entry when its piece of the table is in memory (no await: hot loops use it), else undefined. */
  peek(cluster: number): number | undefined {
    const type = this.layout.type;
    if (type === 'fat32') {
      const at = cluster * 4;
      const c = this.#chunks.get(Math.floor(at / CHUNK_BYTES));
      if (!c) return undefined;
      const o = at % CHUNK_BYTES;
      return (c[o]! | (c[o + 1]! << 8) | (c[o + 2]! << 16) | (c[o + 3]! << 24)) & 0x0fffffff;
    }
    const t = this.#whole;
    if (!t) return undefined;
    if (type === 'fat16') return t[cluster * 2]! | (t[cluster * 2 + 1]! << 8);
    const at = cluster + (cluster >> 1);
    const v = t[at]! | (t[at + 1]! << 8);
    return cluster & 1 ? v >> 4 : v & 0xfff;
  }

  /** Sets an entry; synchronous (returns nothing) when its piece of the table is in memory. */
  set(cluster: number, value: number): Promise<void> | void {
    if (this.peek(cluster) === undefined) return this.get(cluster).then(() => this.#setLoaded(cluster, value));
    this.#setLoaded(cluster, value);
  }

  #setLoaded(cluster: number, value: number): void {
    const type = this.layout.type;
    const old = this.peek(cluster)!;
    if (this.#free !== undefined && cluster >= 2) {
      if (old === FREE && value !== FREE) this.#free--;
      else if (old !== FREE && value === FREE) this.#free++;
    }
    if (type === 'fat32') {
      const at = cluster * 4;
      const index = Math.floor(at / CHUNK_BYTES);
      const c = this.#chunks.get(index)!;
      const o = at % CHUNK_BYTES;
      const v = ((c[o + 3]! & 0xf0) << 24) | (value & 0x0fffffff); // the top 4 bits are reserved: kept
      c[o] = v & 0xff;
      c[o + 1] = (v >>> 8) & 0xff;
      c[o + 2] = (v >>> 16) & 0xff;
      c[o + 3] = (v >>> 24) & 0xff;
      this.#dirtyChunks.add(index);
      return;
    }
    const t = this.#whole!;
    if (type === 'fat16') {
      t[cluster * 2] = value & 0xff;
      t[cluster * 2 + 1] = (value >> 8) & 0xff;
      this.#wholeDirty.add(Math.floor((cluster * 2) / this.layout.sectorSize));
      return;
    }
    const at = cluster + (cluster >> 1);
    if (cluster & 1) {
      t[at] = (t[at]! & 0x0f) | ((value << 4) & 0xf0);
      t[at + 1] = (value >> 4) & 0xff;
    } else {
      t[at] = value & 0xff;
      t[at + 1] = (t[at + 1]! & 0xf0) | ((value >> 8) & 0x0f);
    }
    this.#wholeDirty.add(Math.floor(at / this.layout.sectorSize));
    this.#wholeDirty.add(Math.floor((at + 1) / this.layout.sectorSize));
  }

  isEndOfChain(value: number): boolean {
    return value >= this.#eoc;
  }

  /** Writes every changed piece of the table to each FAT copy (copy 0 first). */
  async writeBack(): Promise<void> {
    const { fatOffset, fatBytes, numFats, sectorSize } = this.layout;
    if (this.#whole && this.#wholeDirty.size > 0) {
      const sectors = [...this.#wholeDirty].sort((a, b) => a - b);
      for (let copy = 0; copy < numFats; copy++) {
        for (const s of sectors) {
          await this.#disk.write(this.#whole.subarray(s * sectorSize, (s + 1) * sectorSize), fatOffset + copy * fatBytes + s * sectorSize);
        }
      }
      this.#wholeDirty.clear();
    }
    if (this.#dirtyChunks.size > 0) {
      const indices = [...this.#dirtyChunks].sort((a, b) => a - b);
      for (let copy = 0; copy < numFats; copy++) {
        for (const i of indices) await this.#disk.write(this.#chunks.get(i)!, fatOffset + copy * fatBytes + i * CHUNK_BYTES);
      }
      this.#dirtyChunks.clear();
    }
  }

  /** The number of free clusters (one streaming pass the first time, exact afterwards). */
  async countFree(): Promise<number> {
    if (this.#free === undefined) {
      let free = 0;
      let firstFree = 0;
      for (let c = 2; c <= this.maxCluster; c++) {
        if ((this.peek(c) ?? (await this.get(c))) === FREE) {
          free++;
          if (firstFree === 0) firstFree = c;
        }
      }
      this.#free = free;
      if (this.nextFree < 2 || this.nextFree > this.maxCluster) this.nextFree = firstFree || 2;
    }
    return this.#free;
  }

  /** The clusters of the chain starting at `first` (first 0: empty), at most `limit` of them. */
  async chain(first: number, limit: number, what: string): Promise<number[]> {
    const out: number[] = [];
    if (first === 0) return out;
    let c = first;
    const bound = Math.min(limit, this.layout.clusterCount);
    for (;;) {
      if (c < 2 || c > this.maxCluster) throw new CorruptImageError(FORMAT, `${what} cluster chain`, `cluster ${c} is outside 2..${this.maxCluster}`);
      if (out.length >= bound) throw new CorruptImageError(FORMAT, `${what} cluster chain`, `longer than ${bound} clusters (a loop or a size mismatch)`);
      out.push(c);
      const next = this.peek(c) ?? (await this.get(c));
      if (this.isEndOfChain(next)) return out;
      if (next === FREE) throw new CorruptImageError(FORMAT, `${what} cluster chain`, `cluster ${c} links to a free cluster`);
      if (next === this.#bad) throw new CorruptImageError(FORMAT, `${what} cluster chain`, `cluster ${c} links to a bad cluster`);
      c = next;
    }
  }

  /**
   * Allocates `n` clusters (one contiguous run where one exists) and links them into a chain ending in
   * end-of-chain; returns them in chain order. Not yet written back.
   */
  async allocate(n: number): Promise<number[]> {
    if (n === 0) return [];
    const free = await this.countFree();
    if (n > free) throw new FatNoSpaceError(`no space left on the FAT filesystem: ${n} clusters needed, ${free} free`);
    const max = this.maxCluster;
    const start = this.nextFree >= 2 && this.nextFree <= max ? this.nextFree : 2;
    let picked: number[] | undefined;
    let runStart = 0;
    let runLength = 0;
    for (let i = 0; i < this.layout.clusterCount; i++) {
      const c = start + i > max ? start + i - max + 1 : start + i;
      if (c === 2 && i > 0) runLength = 0; // wrapped: a run cannot continue across the end
      if ((this.peek(c) ?? (await this.get(c))) === FREE) {
        if (runLength === 0) runStart = c;
        if (++runLength === n) {
          picked = Array.from({ length: n }, (_, k) => runStart + k);
          break;
        }
      } else runLength = 0;
    }
    if (!picked) {
      picked = [];
      for (let i = 0; i < this.layout.clusterCount && picked.length < n; i++) {
        const c = start + i > max ? start + i - max + 1 : start + i;
        if ((this.peek(c) ?? (await this.get(c))) === FREE) picked.push(c);
      }
    }
    for (let k = 0; k < n; k++) {
      const pending = this.set(picked[k]!, k + 1 < n ? picked[k + 1]! : this.endOfChain);
      if (pending) await pending;
    }
    const last = picked[n - 1]!;
    this.nextFree = last + 1 > max ? 2 : last + 1;
    return picked;
  }

  /** Frees every cluster of a chain (given as its cluster list). Not yet written back. */
  async free(clusters: readonly number[]): Promise<void> {
    for (const c of clusters) {
      const pending = this.set(c, FREE);
      if (pending) await pending;
    }
  }
}
