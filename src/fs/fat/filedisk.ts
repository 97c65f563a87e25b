/** A FAT file's content as a Disk: its cluster chain as runs of consecutive clusters. */
import { ReadOnlyError, UnsupportedFeatureError } from '../../errors.ts';
import { checkRange, type Disk } from '../../io/disk.ts';
import type { Layout } from './boot.ts';
import type { WritableFile } from '../filesystem.ts';

export interface ClusterRun {
  /** Byte offset of the run within the file. */
  readonly fileOffset: number;
  readonly first: number;
  readonly count: number;
}

export function runsOf(clusters: readonly number[], clusterSize: number): ClusterRun[] {
  const runs: ClusterRun[] = [];
  let i = 0;
  while (i < clusters.length) {
    let j = i + 1;
    while (j < clusters.length && clusters[j] === clusters[j - 1]! + 1) j++;
    runs.push({ fileOffset: i * clusterSize, first: clusters[i]!, count: j - i });
    i = j;
  }
  return runs;
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

export class FatFileDisk implements WritableFile {
  readonly size: number;
  readonly readOnly: boolean;
  readonly #device: Disk;
  readonly #runs: readonly ClusterRun[];
  readonly #layout: Layout;
  readonly #onWrite: (() => Promise<void>) | undefined;
  #written = false;

  constructor(device: Disk, layout: Layout, runs: readonly ClusterRun[], size: number, readOnly: boolean, onFirstWrite?: () => Promise<void>) {
    this.#device = device;
    this.#layout = layout;
    this.#runs = runs;
    this.size = size;
    this.readOnly = readOnly;
    this.#onWrite = onFirstWrite;
  }

  async resize(size: number): Promise<void> {
    if (size === this.size) return;
    throw new UnsupportedFeatureError('FAT', 'resize', `changing a file's size in place is not supported yet (${this.size} → ${size} bytes)`);
  }

  async read(buf: Uint8Array, offset: number): Promise<void> {
    checkRange(this, offset, buf.byteLength, 'read');
    const pieces: [number, number, number][] = [];
    forEachExtent(this.#runs, this.#layout, offset, buf.byteLength, (dev, at, len) => pieces.push([dev, at, len]));
    for (const [dev, at, len] of pieces) await this.#device.read(buf.subarray(at, at + len), dev);
  }

  async write(buf: Uint8Array, offset: number): Promise<void> {
    if (this.readOnly) throw new ReadOnlyError('this FAT file is open read-only');
    checkRange(this, offset, buf.byteLength, 'write');
    if (!this.#written) {
      this.#written = true;
      await this.#onWrite?.();
    }
    const pieces: [number, number, number][] = [];
    forEachExtent(this.#runs, this.#layout, offset, buf.byteLength, (dev, at, len) => pieces.push([dev, at, len]));
    for (const [dev, at, len] of pieces) await this.#device.write(buf.subarray(at, at + len), dev);
  }

  flush(): Promise<void> {
    return this.#device.flush();
  }

  async close(): Promise<void> {}
}
