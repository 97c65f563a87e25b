/**
 * The File Allocation Table: entry access for FAT12/16/32, chain walking, allocation and write-back to
 * every FAT copy.
 *
 * Design notes
 * - FAT12/16 tables (at most 128 KiB) are held whole. FAT32 tables are read in 64 KiB chunks through a
 *   bounded cache (CACHE_CHUNKS); a changed chunk remembers the byte range that changed and stays until
 *   `writeBack`, which writes the changed sectors of each chunk to every FAT copy, copy 0 first.
 *   Callers write back before they write the directory entry that points at a chain, so data → FAT
 *   copies → directory entry is the order on disk.
 * - The first FAT copy is the one read (as Linux does with mirroring on); the FAT32 ext-flags "active FAT"
 *   mode (mirroring off) is refused for writing.
 * - Free clusters are counted by one streaming pass (`countFree`); the count and the next-free hint are
 *   kept exact from then on, and go into FSInfo on flush.
 * - For the repair of a dirty volume (repair.ts): `freeUnnamed` frees, in one streaming pass, every
 *   allocated cluster a bitmap of named clusters lacks (bad clusters stay marked), and `syncCopies`
 *   rewrites the sectors of the other copies that differ from the first.
 * - Allocation prefers one contiguous run (first fit from the next-free hint, wrapping); without one,
 *   it takes free clusters in order from the hint. A file that grows asks for the clusters right after
 *   its last one first (`after`), so it stays contiguous where the space allows.
 * - Chains are walked as runs of consecutive clusters (FAT32: a tight loop over the chunk while each
 *   entry points at the next cluster, so a contiguous 1 GiB file costs one pass over 1 MiB of table),
 *   with a bound (the cluster count, or the caller's) and every link checked; runs that overlap (a loop
 *   inside the bound) are refused too, so a cycle or a pointer out of range is a CorruptImageError,
 *   never a hang. `walk` may stop at a bound before the end of the chain: a file reads the clusters its
 *   size needs, as Linux does, so a chain longer than the size (a grow or a shrink cut by power loss
 *   between the FAT and the directory entry) still reads.
 */
import { CorruptImageError, LivestickError, ExitCode } from '../../errors.ts';
import type { Disk } from '../../io/disk.ts';
import { FORMAT, type Layout } from './boot.ts';

const CHUNK_BYTES = 64 * 1024;
const CHUNK_ENTRIES = CHUNK_BYTES / 4;
const CACHE_CHUNKS = 128;

export const FREE = 0;

export class FatNoSpaceError extends LivestickError {
  constructor(message: string) {
    super('NO_SPACE', ExitCode.ioError, message);
  }
}

/** `count` consecutive clusters from `first`. */
export interface Run {
  readonly first: number;
  readonly count: number;
}

interface Chunk {
  readonly bytes: Uint8Array;
  readonly view: DataView;
  /** The changed byte range [lo, hi) (lo > hi: unchanged). */
  lo: number;
  hi: number;
}

export interface Walk {
  readonly runs: Run[];
  /** Clusters in `runs`. */
  readonly count: number;
  /** Whether the walk reached the end-of-chain mark (else it stopped at its bound). */
  readonly ended: boolean;
}

export function runClusters(runs: readonly Run[]): number {
  let n = 0;
  for (const r of runs) n += r.count;
  return n;
}

export class FatTable {
  readonly layout: Layout;
  readonly #disk: Disk;
  readonly #eoc: number;
  readonly #bad: number;
  readonly #fat32: boolean;
  #whole: Uint8Array | undefined;
  #wholeDirty = new Set<number>();
  #chunks = new Map<number, Chunk>();
  #dirtyChunks = new Set<number>();
  #lastIndex = -1;
  #last: Chunk | undefined;
  #free: number | undefined;
  nextFree = 2;

  constructor(disk: Disk, layout: Layout) {
    this.#disk = disk;
    this.layout = layout;
    this.#fat32 = layout.type === 'fat32';
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

  /** The loaded chunk `index`, or undefined (no I/O). */
  #loaded(index: number): Chunk | undefined {
    if (index === this.#lastIndex) return this.#last;
    const c = this.#chunks.get(index);
    if (c) {
      this.#lastIndex = index;
      this.#last = c;
    }
    return c;
  }

  async #chunk(index: number): Promise<Chunk> {
    const hit = this.#loaded(index);
    if (hit) return hit;
    const start = index * CHUNK_BYTES;
    const bytes = new Uint8Array(Math.min(CHUNK_BYTES, this.layout.fatBytes - start));
    await this.#disk.read(bytes, this.layout.fatOffset + start);
    if (this.#chunks.size >= CACHE_CHUNKS) {
      for (const key of this.#chunks.keys()) {
        if (!this.#dirtyChunks.has(key)) {
          this.#chunks.delete(key);
          break;
        }
      }
      if (this.#chunks.size >= CACHE_CHUNKS) {
        await this.writeBack();
        this.#chunks.delete(this.#chunks.keys().next().value!);
      }
      this.#lastIndex = -1;
      this.#last = undefined;
    }
    const c: Chunk = { bytes, view: new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength), lo: 1, hi: 0 };
    this.#chunks.set(index, c);
    this.#lastIndex = index;
    this.#last = c;
    return c;
  }

  /** The raw entry of `cluster` (0..maxCluster). */
  async get(cluster: number): Promise<number> {
    const v = this.peek(cluster);
    if (v !== undefined) return v;
    if (this.#fat32) await this.#chunk(Math.floor(cluster / CHUNK_ENTRIES));
    else await this.#wholeTable();
    return this.peek(cluster)!;
  }

  /** The entry when its piece of the table is in memory (no await: hot loops use it), else undefined. */
  peek(cluster: number): number | undefined {
    if (this.#fat32) {
      const c = this.#loaded(Math.floor(cluster / CHUNK_ENTRIES));
      if (!c) return undefined;
      return c.view.getUint32((cluster % CHUNK_ENTRIES) * 4, true) & 0x0fffffff;
    }
    const t = this.#whole;
    if (!t) return undefined;
    if (this.layout.type === 'fat16') return t[cluster * 2]! | (t[cluster * 2 + 1]! << 8);
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
    const old = this.peek(cluster)!;
    if (this.#free !== undefined && cluster >= 2) {
      if (old === FREE && value !== FREE) this.#free--;
      else if (old !== FREE && value === FREE) this.#free++;
    }
    if (this.#fat32) {
      const index = Math.floor(cluster / CHUNK_ENTRIES);
      const c = this.#loaded(index)!;
      const o = (cluster % CHUNK_ENTRIES) * 4;
      const v = (c.view.getUint32(o, true) & 0xf0000000) | (value & 0x0fffffff); // the top 4 bits are reserved: kept
      c.view.setUint32(o, v >>> 0, true);
      if (o < c.lo) c.lo = o;
      if (o + 4 > c.hi) c.hi = o + 4;
      this.#dirtyChunks.add(index);
      return;
    }
    const t = this.#whole!;
    if (this.layout.type === 'fat16') {
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
      // Runs of consecutive sectors go out as one write.
      const spans: [number, number][] = [];
      for (const s of sectors) {
        const last = spans[spans.length - 1];
        if (last && last[1] === s) last[1] = s + 1;
        else spans.push([s, s + 1]);
      }
      for (let copy = 0; copy < numFats; copy++) {
        for (const [from, to] of spans) {
          await this.#disk.write(this.#whole.subarray(from * sectorSize, to * sectorSize), fatOffset + copy * fatBytes + from * sectorSize);
        }
      }
      this.#wholeDirty.clear();
    }
    if (this.#dirtyChunks.size > 0) {
      const indices = [...this.#dirtyChunks].sort((a, b) => a - b);
      for (let copy = 0; copy < numFats; copy++) {
        for (const i of indices) {
          const c = this.#chunks.get(i)!;
          const lo = c.lo - (c.lo % sectorSize);
          const hi = Math.min(c.bytes.byteLength, Math.ceil(c.hi / sectorSize) * sectorSize);
          await this.#disk.write(c.bytes.subarray(lo, hi), fatOffset + copy * fatBytes + i * CHUNK_BYTES + lo);
        }
      }
      for (const i of indices) {
        const c = this.#chunks.get(i)!;
        c.lo = 1;
        c.hi = 0;
      }
      this.#dirtyChunks.clear();
    }
  }

  /** The number of free clusters (one streaming pass the first time, exact afterwards). */
  async countFree(): Promise<number> {
    if (this.#free === undefined) {
      let free = 0;
      let firstFree = 0;
      const max = this.maxCluster;
      if (this.#fat32) {
        for (let c = 2; c <= max; ) {
          const index = Math.floor(c / CHUNK_ENTRIES);
          const { view } = await this.#chunk(index);
          const end = Math.min(max, (index + 1) * CHUNK_ENTRIES - 1);
          for (let o = (c % CHUNK_ENTRIES) * 4; c <= end; c++, o += 4) {
            if ((view.getUint32(o, true) & 0x0fffffff) === FREE) {
              free++;
              if (firstFree === 0) firstFree = c;
            }
          }
        }
      } else {
        await this.#wholeTable();
        for (let c = 2; c <= max; c++) {
          if (this.peek(c) === FREE) {
            free++;
            if (firstFree === 0) firstFree = c;
          }
        }
      }
      this.#free = free;
      if (this.nextFree < 2 || this.nextFree > this.maxCluster) this.nextFree = firstFree || 2;
    }
    return this.#free;
  }

  /**
   * The chain from `first` (0: empty) as runs, following at most `limit` clusters: `ended` says whether
   * it reached the end-of-chain mark. Links out of range, to a free or a bad cluster, and loops throw.
   */
  async walk(first: number, limit: number, what: string): Promise<Walk> {
    const runs: Run[] = [];
    if (first === 0 || limit <= 0) return { runs, count: 0, ended: first === 0 };
    const bound = Math.min(limit, this.layout.clusterCount);
    const max = this.maxCluster;
    let c = first;
    let start = first;
    let len = 0;
    let count = 0;
    let ended = false;
    for (;;) {
      if (c < 2 || c > max) throw new CorruptImageError(FORMAT, `${what} cluster chain`, `cluster ${c} is outside 2..${max}`);
      if (count === bound) break;
      if (len > 0 && c === start + len) len++;
      else {
        if (len > 0) runs.push({ first: start, count: len });
        start = c;
        len = 1;
      }
      count++;
      let next: number;
      if (this.#fat32) {
        const index = Math.floor(c / CHUNK_ENTRIES);
        const chunk = this.#loaded(index) ?? (await this.#chunk(index));
        // Consecutive clusters inside this chunk: one tight pass, no per-entry bookkeeping.
        const o = (c % CHUNK_ENTRIES) * 4;
        const step = consecutive(chunk.view, o, Math.min(bound - count, max - c), c);
        c += step;
        len += step;
        count += step;
        next = chunk.view.getUint32(o + step * 4, true) & 0x0fffffff;
      } else {
        next = this.peek(c) ?? (await this.get(c));
      }
      if (this.isEndOfChain(next)) {
        ended = true;
        break;
      }
      if (next === FREE) throw new CorruptImageError(FORMAT, `${what} cluster chain`, `cluster ${c} links to a free cluster`);
      if (next === this.#bad) throw new CorruptImageError(FORMAT, `${what} cluster chain`, `cluster ${c} links to a bad cluster`);
      c = next;
    }
    if (len > 0) runs.push({ first: start, count: len });
    if (runs.length > 1) checkOverlaps(runs, what);
    return { runs, count, ended };
  }

  /** The whole chain from `first` as runs; longer than `limit` clusters is an error. */
  async runs(first: number, limit: number, what: string): Promise<Run[]> {
    const bound = Math.min(limit, this.layout.clusterCount);
    const w = await this.walk(first, bound, what);
    if (!w.ended) throw new CorruptImageError(FORMAT, `${what} cluster chain`, `longer than ${bound} clusters (a loop or a size mismatch)`);
    return w.runs;
  }

  /** The clusters of the chain starting at `first` (first 0: empty), at most `limit` of them. */
  async chain(first: number, limit: number, what: string): Promise<number[]> {
    const out: number[] = [];
    for (const r of await this.runs(first, limit, what)) for (let k = 0; k < r.count; k++) out.push(r.first + k);
    return out;
  }

  async #isFree(c: number): Promise<boolean> {
    return (this.peek(c) ?? (await this.get(c))) === FREE;
  }

  /** How many free clusters follow from `from` on (consecutively), up to `max`. */
  async #freeFrom(from: number, max: number): Promise<number> {
    let n = 0;
    while (n < max && from + n <= this.maxCluster && (await this.#isFree(from + n))) n++;
    return n;
  }

  /** Sets every cluster of `run` to point at the next one, the last at `next`. */
  async #linkRun(run: Run, next: number): Promise<void> {
    const end = run.first + run.count - 1;
    if (this.#fat32) {
      for (let c = run.first; c <= end; ) {
        const index = Math.floor(c / CHUNK_ENTRIES);
        const chunk = await this.#chunk(index);
        const { view } = chunk;
        const stop = Math.min(end, (index + 1) * CHUNK_ENTRIES - 1);
        let o = (c % CHUNK_ENTRIES) * 4;
        const lo = o;
        let taken = 0;
        let released = 0;
        for (; c <= stop; c++, o += 4) {
          const raw = view.getUint32(o, true);
          const value = c === end ? next : c + 1;
          if ((raw & 0x0fffffff) === FREE) {
            if (value !== FREE) taken++;
          } else if (value === FREE) released++;
          view.setUint32(o, ((raw & 0xf0000000) | (value & 0x0fffffff)) >>> 0, true);
        }
        if (this.#free !== undefined) this.#free += released - taken;
        if (lo < chunk.lo) chunk.lo = lo;
        if (o > chunk.hi) chunk.hi = o;
        this.#dirtyChunks.add(index);
      }
      return;
    }
    for (let c = run.first; c <= end; c++) {
      const pending = this.set(c, c === end ? next : c + 1);
      if (pending) await pending;
    }
  }

  /** First fit of one contiguous run of `n` free clusters from the next-free hint, wrapping; or undefined. */
  async #findRun(n: number): Promise<Run | undefined> {
    const max = this.maxCluster;
    const start = this.nextFree >= 2 && this.nextFree <= max ? this.nextFree : 2;
    // From the hint to the end, then from the start of the volume to the hint (a run does not wrap).
    for (const [from, to] of [[start, max], [2, start - 1]] as const) {
      let runStart = 0;
      let runLength = 0;
      for (let c = from; c <= to; ) {
        if (this.#fat32) {
          const index = Math.floor(c / CHUNK_ENTRIES);
          const { view } = this.#loaded(index) ?? (await this.#chunk(index));
          const stop = Math.min(to, (index + 1) * CHUNK_ENTRIES - 1);
          for (let o = (c % CHUNK_ENTRIES) * 4; c <= stop; c++, o += 4) {
            if ((view.getUint32(o, true) & 0x0fffffff) === FREE) {
              if (runLength === 0) runStart = c;
              if (++runLength === n) return { first: runStart, count: n };
            } else runLength = 0;
          }
        } else {
          if ((this.peek(c) ?? (await this.get(c))) === FREE) {
            if (runLength === 0) runStart = c;
            if (++runLength === n) return { first: runStart, count: n };
          } else runLength = 0;
          c++;
        }
      }
    }
    return undefined;
  }

  /**
   * Allocates `n` clusters and links them into one chain ending in end-of-chain; returns its runs in
   * chain order. With `after` (a file's last cluster), the free clusters right after it come first. Then
   * one contiguous run where one exists, else free clusters in order from the hint. Not yet written back.
   */
  async allocate(n: number, after?: number): Promise<Run[]> {
    if (n === 0) return [];
    const free = await this.countFree();
    if (n > free) throw new FatNoSpaceError(`no space left on the FAT filesystem: ${n} clusters needed, ${free} free`);
    const runs: Run[] = [];
    const eoc = this.endOfChain;
    let need = n;
    const take = async (run: Run): Promise<void> => {
      await this.#linkRun(run, eoc); // marks them used, so the next search skips them
      runs.push(run);
      need -= run.count;
    };
    if (after !== undefined && after >= 2 && after < this.maxCluster) {
      const k = await this.#freeFrom(after + 1, need);
      if (k > 0) await take({ first: after + 1, count: k });
    }
    if (need > 0) {
      const run = await this.#findRun(need);
      if (run) await take(run);
    }
    if (need > 0) {
      const max = this.maxCluster;
      const start = this.nextFree >= 2 && this.nextFree <= max ? this.nextFree : 2;
      let runStart = 0;
      let runLength = 0;
      for (let i = 0; i < this.layout.clusterCount && need > runLength; i++) {
        const c = start + i > max ? start + i - max + 1 : start + i;
        const isFree = (this.peek(c) ?? (await this.get(c))) === FREE;
        if (isFree && runLength > 0 && c === runStart + runLength) runLength++;
        else {
          if (runLength > 0) await take({ first: runStart, count: runLength });
          if (isFree) {
            runStart = c;
            runLength = 1;
          } else runLength = 0;
        }
      }
      if (runLength > 0) await take({ first: runStart, count: runLength });
    }
    for (let i = 0; i + 1 < runs.length; i++) {
      const pending = this.set(runs[i]!.first + runs[i]!.count - 1, runs[i + 1]!.first);
      if (pending) await pending;
    }
    const lastRun = runs[runs.length - 1]!;
    const last = lastRun.first + lastRun.count - 1;
    this.nextFree = last + 1 > this.maxCluster ? 2 : last + 1;
    return runs;
  }

  /** The bad-cluster mark (0xFF7, 0xFFF7, 0x0FFFFFF7): not free, and never part of a chain. */
  get badCluster(): number {
    return this.#bad;
  }

  /**
   * Repair: frees every cluster that is allocated in the table (neither free nor marked bad) and not
   * set in `named` (bit c for cluster c). Returns how many were freed. Not yet written back.
   */
  async freeUnnamed(named: Uint8Array): Promise<number> {
    const max = this.maxCluster;
    const isNamed = (c: number): boolean => (named[c >>> 3]! & (1 << (c & 7))) !== 0;
    let freed = 0;
    if (this.#fat32) {
      for (let c = 2; c <= max; ) {
        const index = Math.floor(c / CHUNK_ENTRIES);
        const chunk = await this.#chunk(index);
        const end = Math.min(max, (index + 1) * CHUNK_ENTRIES - 1);
        for (let o = (c % CHUNK_ENTRIES) * 4; c <= end; c++, o += 4) {
          const raw = chunk.view.getUint32(o, true);
          const v = raw & 0x0fffffff;
          if (v === FREE || v === this.#bad || isNamed(c)) continue;
          chunk.view.setUint32(o, (raw & 0xf0000000) >>> 0, true); // the reserved top bits are kept
          if (o < chunk.lo) chunk.lo = o;
          if (o + 4 > chunk.hi) chunk.hi = o + 4;
          this.#dirtyChunks.add(index);
          freed++;
        }
      }
      if (this.#free !== undefined) this.#free += freed;
      return freed;
    }
    await this.#wholeTable();
    for (let c = 2; c <= max; c++) {
      const v = this.peek(c)!;
      if (v === FREE || v === this.#bad || isNamed(c)) continue;
      this.#setLoaded(c, FREE);
      freed++;
    }
    return freed;
  }

  /**
   * Repair: makes every other FAT copy equal to the first (the one written first, so the one ahead
   * after a cut), writing only the sectors that differ. Reads the copies from the device in pieces;
   * call it before anything changes the table in memory. Returns the number of sectors written.
   */
  async syncCopies(): Promise<number> {
    const { fatOffset, fatBytes, numFats, sectorSize } = this.layout;
    if (numFats < 2) return 0;
    const piece = Math.min(fatBytes, 1 << 20);
    const first = new Uint8Array(piece);
    const other = new Uint8Array(piece);
    let written = 0;
    for (let at = 0; at < fatBytes; at += piece) {
      const len = Math.min(piece, fatBytes - at);
      const a = first.subarray(0, len);
      await this.#disk.read(a, fatOffset + at);
      for (let copy = 1; copy < numFats; copy++) {
        const b = other.subarray(0, len);
        await this.#disk.read(b, fatOffset + copy * fatBytes + at);
        if (Buffer.from(a.buffer, a.byteOffset, len).equals(Buffer.from(b.buffer, b.byteOffset, len))) continue;
        // Runs of differing sectors, each one write.
        let from = -1;
        for (let o = 0; o <= len; o += sectorSize) {
          const differs = o < len && !Buffer.from(a.buffer, a.byteOffset + o, sectorSize).equals(Buffer.from(b.buffer, b.byteOffset + o, sectorSize));
          if (differs && from < 0) from = o;
          if (!differs && from >= 0) {
            await this.#disk.write(a.subarray(from, o), fatOffset + copy * fatBytes + at + from);
            written += (o - from) / sectorSize;
            from = -1;
          }
        }
      }
    }
    return written;
  }

  /** Frees every cluster of the runs. Not yet written back. */
  async free(runs: readonly Run[]): Promise<void> {
    for (const r of runs) await this.#freeRun(r);
  }

  async #freeRun(run: Run): Promise<void> {
    if (this.#fat32) {
      // #linkRun writes c + 1 inside the run; freeing needs FREE everywhere, so do it directly.
      const end = run.first + run.count - 1;
      for (let c = run.first; c <= end; ) {
        const index = Math.floor(c / CHUNK_ENTRIES);
        const chunk = await this.#chunk(index);
        const stop = Math.min(end, (index + 1) * CHUNK_ENTRIES - 1);
        let o = (c % CHUNK_ENTRIES) * 4;
        const lo = o;
        let released = 0;
        for (; c <= stop; c++, o += 4) {
          const raw = chunk.view.getUint32(o, true);
          if ((raw & 0x0fffffff) !== FREE) released++;
          chunk.view.setUint32(o, (raw & 0xf0000000) >>> 0, true);
        }
        if (this.#free !== undefined) this.#free += released;
        if (lo < chunk.lo) chunk.lo = lo;
        if (o > chunk.hi) chunk.hi = o;
        this.#dirtyChunks.add(index);
      }
      return;
    }
    for (let c = run.first; c < run.first + run.count; c++) {
      const pending = this.set(c, FREE);
      if (pending) await pending;
    }
  }
}

/**
 * How many entries from byte `o` of a FAT32 chunk on point at the cluster after their own (entry at `o`
 * belongs to cluster `c`), at most `most`, staying inside the chunk (the last counted entry's successor
 * is still in it).
 */
function consecutive(view: DataView, o: number, most: number, c: number): number {
  const last = Math.min(most, (view.byteLength - o) / 4 - 1);
  let k = 0;
  while (k < last && (view.getUint32(o + k * 4, true) & 0x0fffffff) === c + k + 1) k++;
  return k;
}

/** Refuses runs that share clusters (a chain that loops back into itself within the walk's bound). */
function checkOverlaps(runs: readonly Run[], what: string): void {
  const sorted = [...runs].sort((a, b) => a.first - b.first);
  for (let i = 1; i < sorted.length; i++) {
    const prev = sorted[i - 1]!;
    if (prev.first + prev.count > sorted[i]!.first) {
      throw new CorruptImageError(FORMAT, `${what} cluster chain`, `cluster ${sorted[i]!.first} appears twice (a loop)`);
    }
  }
}
