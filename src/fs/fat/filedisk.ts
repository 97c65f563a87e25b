/**
 * A FAT file's content as a Disk: its cluster chain as runs of consecutive clusters. A writable one
 * resizes through its filesystem (FatFs orders the FAT and directory-entry writes); it keeps the runs
 * of its whole chain, which may reach past the size (clusters left by a resize that power loss cut).
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

  async resize(size: number): Promise<void> {
    if (this.readOnly || !this.#owner) throw new ReadOnlyError('this FAT file is open read-only');
    await this.#owner.resize(this, size);
  }

  async read(buf: Uint8Array, offset: number): Promise<void> {
    checkRange(this, offset, buf.byteLength, 'read');
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
    const runs = this.#runs;
    if (runs.length === 1) {
      await this.#device.write(buf, this.#layout.dataOffset + (runs[0]!.first - 2) * this.#layout.clusterSize + offset);
      return;
    }
    const pieces: [number, number, number][] = [];
    forEachExtent(runs, this.#layout, offset, buf.byteLength, (dev, at, len) => pieces.push([dev, at, len]));
    for (const [dev, at, len] of pieces) await this.#device.write(buf.subarray(at, at + len), dev);
  }

  flush(): Promise<void> {
    return this.#device.flush();
  }

  async close(): Promise<void> {}
}
