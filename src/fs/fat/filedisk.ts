/**
 * A FAT file's content as a Disk: its cluster chain as runs of consecutive clusters. A writable one
 * resizes through its filesystem (FatFs orders the FAT and directory-entry writes); it keeps the runs
 * of its whole chain, which may reach past the size (clusters left by a resize that power loss cut).
 *
 * Deferred clearing (a new file from createFile): until `settle`, the file's clusters are not yet
 * known to be zero and its directory entry does not name them (FatFs shows the file with its size
 * meanwhile). A cluster stops being "unclear" when a write covers it (the parts of it the write does
 * not cover are zeroed first); reads of unclear clusters give zeros without touching the device. settle
 * (the file's flush or close, or anything FatFs does that could expose the entry) clears what is still
 * unclear (FatFs #clear: zeros only over non-zero clusters) and then lets the entry name the clusters.
 * A file written from start to end so costs no reads at all, and a cut before settle leaves an empty
 * file and lost clusters, never a deleted file's bytes.
 */
import { ReadOnlyError } from '../../errors.ts';
import { checkRange, type Disk } from '../../io/disk.ts';
import type { Layout } from './boot.ts';
import type { WritableFile } from '../filesystem.ts';
import type { Run } from './table.ts';

export interface ClusterRun {
  /** Byte offset of the run within the file. */
  readonly fileOffset: number;
  readonly first: number;
  readonly count: number;
}

/** Runs placed in file order (each run's byte offset within the file). */
export function placeRuns(runs: readonly Run[], clusterSize: number): ClusterRun[] {
  const out: ClusterRun[] = [];
  let at = 0;
  for (const r of runs) {
    const last = out[out.length - 1];
    if (last && last.first + last.count === r.first) out[out.length - 1] = { fileOffset: last.fileOffset, first: last.first, count: last.count + r.count };
    else out.push({ fileOffset: at, first: r.first, count: r.count });
    at += r.count * clusterSize;
  }
  return out;
}

/** Visits the device ranges backing [offset, offset + length) of a file laid out in `runs`. */
export function forEachExtent(runs: readonly ClusterRun[], layout: Layout, offset: number, length: number, visit: (deviceOffset: number, bufOffset: number, len: number) => void): void {
  const cs = layout.clusterSize;
  let lo = 0;
  let hi = runs.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (runs[mid]!.fileOffset <= offset) lo = mid;
    else hi = mid - 1;
  }
  let done = 0;
  for (let r = lo; done < length && r < runs.length; r++) {
    const run = runs[r]!;
    const runStart = run.fileOffset;
    const runEnd = runStart + run.count * cs;
    const from = offset + done;
    if (from >= runEnd) continue;
    const len = Math.min(length - done, runEnd - from);
    visit(layout.dataOffset + (run.first - 2) * cs + (from - runStart), done, len);
    done += len;
  }
}

/** What a writable file asks of its filesystem. */
export interface FatFileOwner {
  /** Before the first write: the volume's dirty bit. */
  beginChange(): Promise<void>;
  /** Changes the file's size (allocation, zeroing, FAT and entry in crash-safe order) and its layout. */
  resize(file: FatFileDisk, size: number): Promise<void>;
  /** Makes these clusters read as zeros (deferred clearing). */
  clear?(runs: readonly Run[]): Promise<void>;
  /** Deferred clearing is done: the entry may name the file's clusters now. */
  settled?(file: FatFileDisk): Promise<void>;
}

export class FatFileDisk implements WritableFile {
  readonly readOnly: boolean;
  readonly #device: Disk;
  readonly #layout: Layout;
  readonly #owner: FatFileOwner | undefined;
  #size: number;
  #runs: ClusterRun[];
  #chain: Run[];
  #written = false;
  /** Deferred clearing: 1 per cluster (file order) not yet known to be zero. */
  #unclear: Uint8Array | undefined;
  #unclearCount = 0;

  /** `chain`: the file's clusters in chain order (at least enough for `size`). */
  constructor(device: Disk, layout: Layout, chain: readonly Run[], size: number, readOnly: boolean, owner?: FatFileOwner) {
    this.#device = device;
    this.#layout = layout;
    this.#chain = [...chain];
    this.#runs = placeRuns(chain, layout.clusterSize);
    this.#size = size;
    this.readOnly = readOnly;
    this.#owner = owner;
  }

  get size(): number {
    return this.#size;
  }

  /** @internal The clusters of the whole chain, in chain order. */
  get chain(): readonly Run[] {
    return this.#chain;
  }

  /** @internal Set by the filesystem after a resize. */
  relayout(chain: readonly Run[], size: number): void {
    this.#chain = [...chain];
    this.#runs = placeRuns(chain, this.#layout.clusterSize);
    this.#size = size;
  }

  /** @internal Every cluster of the file is unclear until written or settled. */
  deferClearing(): void {
    const n = this.#runs.reduce((sum, r) => sum + r.count, 0);
    this.#unclear = new Uint8Array(n).fill(1);
    this.#unclearCount = n;
  }

  /** @internal Whether clearing is still deferred. */
  get pending(): boolean {
    return this.#unclear !== undefined;
  }

  /** @internal Clears what is still unclear, then lets the filesystem write the entry (once). */
  async settle(): Promise<void> {
    const unclear = this.#unclear;
    if (!unclear) return;
    if (this.#unclearCount > 0) {
      const runs: Run[] = [];
      let k = 0;
      for (const r of this.#chain) {
        for (let i = 0; i < r.count; i++, k++) {
          if (!unclear[k]) continue;
          const c = r.first + i;
          const last = runs[runs.length - 1];
          if (last && last.first + last.count === c) runs[runs.length - 1] = { first: last.first, count: last.count + 1 };
          else runs.push({ first: c, count: 1 });
        }
      }
      await this.#owner!.clear!(runs);
    }
    this.#unclear = undefined;
    this.#unclearCount = 0;
    await this.#owner!.settled!(this);
  }

  async resize(size: number): Promise<void> {
    if (this.readOnly || !this.#owner) throw new ReadOnlyError('this FAT file is open read-only');
    await this.settle();
    await this.#owner.resize(this, size);
  }

  async read(buf: Uint8Array, offset: number): Promise<void> {
    checkRange(this, offset, buf.byteLength, 'read');
    if (this.#unclearCount > 0) return this.#readDeferred(buf, offset);
    const runs = this.#runs;
    if (runs.length === 1) {
      await this.#device.read(buf, this.#layout.dataOffset + (runs[0]!.first - 2) * this.#layout.clusterSize + offset);
      return;
    }
    const pieces: [number, number, number][] = [];
    forEachExtent(runs, this.#layout, offset, buf.byteLength, (dev, at, len) => pieces.push([dev, at, len]));
    for (const [dev, at, len] of pieces) await this.#device.read(buf.subarray(at, at + len), dev);
  }

  async write(buf: Uint8Array, offset: number): Promise<void> {
    if (this.readOnly) throw new ReadOnlyError('this FAT file is open read-only');
    checkRange(this, offset, buf.byteLength, 'write');
    if (!this.#written) {
      this.#written = true;
      await this.#owner?.beginChange();
    }
    if (this.#unclearCount > 0 && buf.byteLength > 0) await this.#coverDeferred(offset, offset + buf.byteLength);
    const runs = this.#runs;
    if (runs.length === 1) {
      await this.#device.write(buf, this.#layout.dataOffset + (runs[0]!.first - 2) * this.#layout.clusterSize + offset);
      return;
    }
    const pieces: [number, number, number][] = [];
    forEachExtent(runs, this.#layout, offset, buf.byteLength, (dev, at, len) => pieces.push([dev, at, len]));
    for (const [dev, at, len] of pieces) await this.#device.write(buf.subarray(at, at + len), dev);
  }

  /** Reads with unclear clusters giving zeros (the device is read only where the file was written). */
  async #readDeferred(buf: Uint8Array, offset: number): Promise<void> {
    const cs = this.#layout.clusterSize;
    const unclear = this.#unclear!;
    const end = offset + buf.byteLength;
    for (let at = offset; at < end; ) {
      const k = Math.floor(at / cs);
      const zero = unclear[k] === 1;
      let stop = Math.min(end, (k + 1) * cs);
      while (stop < end && (unclear[Math.floor(stop / cs)] === 1) === zero) stop = Math.min(end, stop + cs);
      const part = buf.subarray(at - offset, stop - offset);
      if (zero) part.fill(0);
      else {
        const pieces: [number, number, number][] = [];
        forEachExtent(this.#runs, this.#layout, at, part.byteLength, (dev, o, len) => pieces.push([dev, o, len]));
        for (const [dev, o, len] of pieces) await this.#device.read(part.subarray(o, o + len), dev);
      }
      at = stop;
    }
  }

  /**
   * A write of [from, to) is about to land: the unclear clusters it touches become clear, and where it
   * covers one only in part, the rest of that cluster is zeroed first.
   */
  async #coverDeferred(from: number, to: number): Promise<void> {
    const cs = this.#layout.clusterSize;
    const unclear = this.#unclear!;
    const first = Math.floor(from / cs);
    const last = Math.floor((to - 1) / cs);
    const zeroPart = async (a: number, b: number): Promise<void> => {
      if (b <= a) return;
      const zeros = new Uint8Array(b - a);
      const pieces: [number, number, number][] = [];
      forEachExtent(this.#runs, this.#layout, a, b - a, (dev, o, len) => pieces.push([dev, o, len]));
      for (const [dev, o, len] of pieces) await this.#device.write(zeros.subarray(o, o + len), dev);
    };
    if (unclear[first]) await zeroPart(first * cs, from);
    if (unclear[last]) await zeroPart(to, (last + 1) * cs);
    for (let k = first; k <= last; k++) {
      if (unclear[k]) {
        unclear[k] = 0;
        this.#unclearCount--;
      }
    }
  }

  /** Settles deferred clearing (the file's bytes and its entry), then flushes the device. */
  async flush(): Promise<void> {
    await this.settle();
    await this.#device.flush();
  }

  async close(): Promise<void> {
    await this.settle();
  }
}
