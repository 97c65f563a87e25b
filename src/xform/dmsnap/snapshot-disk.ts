/**
 * The combined device (what /dev/mapper/live-rw shows): base + overlay with dm-snapshot semantics.
 *
 * Design notes
 * - A read alternates base runs (consecutive chunks without an exception) and overlay runs (consecutive
 *   chunks whose COW chunks are consecutive too), one call each; large reads find their runs through a
 *   sorted index of the exceptions instead of a lookup per chunk.
 * - A write to a chunk without an exception allocates one (see store.ts), then writes the whole chunk:
 *   from the caller's bytes when they cover it (clipped at the end of the base), otherwise the base
 *   chunk with the caller's bytes laid over it, as kcopyd does. A write that needs more chunks than
 *   the overlay has left is refused before anything is written: with PO the overlay stays valid and
 *   later writes fail (the kernel's "Overflow", held in memory only); with P the snapshot is invalidated
 *   on disk, as the kernel does.
 * - New exceptions are committed by flush() (and close()), so a caller decides how often it pays for the
 *   two flushes a commit costs; until then a crash loses the unflushed writes but never the overlay.
 * - Reads share a lock; writes and flushes hold it exclusively, so a read never sees a chunk mapped
 *   before its data is in place and two writes never race on a new chunk.
 */
import { ReadOnlyError } from '../../errors.ts';
import { checkRange, type Disk } from '../../io/disk.ts';
import { OverlayFullError, SnapshotInvalidError } from './errors.ts';
import type { ExceptionStore } from './store.ts';

export type OverflowMode = 'P' | 'PO';

class RwLock {
  #readers = 0;
  #writer = false;
  #waiters: (() => void)[] = [];

  async read<T>(fn: () => Promise<T>): Promise<T> {
    while (this.#writer) await new Promise<void>((r) => this.#waiters.push(r));
    this.#readers++;
    try {
      return await fn();
    } finally {
      this.#readers--;
      this.#wake();
    }
  }

  async write<T>(fn: () => Promise<T>): Promise<T> {
    while (this.#writer || this.#readers > 0) await new Promise<void>((r) => this.#waiters.push(r));
    this.#writer = true;
    try {
      return await fn();
    } finally {
      this.#writer = false;
      this.#wake();
    }
  }

  #wake(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w();
  }
}

export interface SnapshotDiskOptions {
  mode?: OverflowMode;
  readOnly?: boolean;
}

export class SnapshotDisk implements Disk {
  readonly base: Disk;
  readonly store: ExceptionStore;
  readonly mode: OverflowMode;
  readonly readOnly: boolean;
  readonly #chunkBytes: number;
  readonly #lock = new RwLock();

  constructor(base: Disk, store: ExceptionStore, options: SnapshotDiskOptions = {}) {
    this.base = base;
    this.store = store;
    this.mode = options.mode ?? 'PO';
    this.readOnly = (options.readOnly ?? false) || store.disk.readOnly;
    this.#chunkBytes = store.geometry.chunkBytes;
    store.checkFitsBase(base.size);
  }

  get size(): number {
    return this.base.size;
  }

  read(buf: Uint8Array, offset: number): Promise<void> {
    checkRange(this, offset, buf.byteLength, 'read');
    if (!this.store.valid) return Promise.reject(new SnapshotInvalidError('the snapshot is invalid: the kernel refuses all I/O to it'));
    return this.#lock.read(() => this.#read(buf, offset));
  }

  async #read(buf: Uint8Array, offset: number): Promise<void> {
    const cb = this.#chunkBytes;
    const end = offset + buf.byteLength;
    const store = this.store;
    if (store.exceptionCount === 0) return this.base.read(buf, offset);
    const first = Math.floor(offset / cb);
    const last = Math.floor((end - 1) / cb);
    // Alternate base runs and overlay runs, in order; each is one call.
    const runs: [number, number, number][] = [];
    if (last - first < 32) {
      for (let c = first; c <= last; c++) {
        const mapped = store.lookup(c);
        if (mapped === undefined) continue;
        const prev = runs.at(-1);
        if (prev && prev[0] + prev[1] === c && prev[2] + prev[1] === mapped) prev[1]++;
        else runs.push([c, 1, mapped]);
      }
    } else {
      store.forEachRun(first, last, (o, n, m) => runs.push([o, n, m]));
    }
    let pos = offset;
    for (const [oldFirst, count, newFirst] of runs) {
      const from = Math.max(offset, oldFirst * cb);
      const to = Math.min(end, (oldFirst + count) * cb);
      if (from > pos) await this.base.read(buf.subarray(pos - offset, from - offset), pos);
      await store.disk.read(buf.subarray(from - offset, to - offset), newFirst * cb + (from - oldFirst * cb));
      pos = to;
    }
    if (pos < end) await this.base.read(buf.subarray(pos - offset), pos);
  }

  write(buf: Uint8Array, offset: number): Promise<void> {
    if (this.readOnly) return Promise.reject(new ReadOnlyError('the combined device is open read-only'));
    checkRange(this, offset, buf.byteLength, 'write');
    return this.#lock.write(() => this.#write(buf, offset));
  }

  async #write(buf: Uint8Array, offset: number): Promise<void> {
    const store = this.store;
    if (!store.valid) throw new SnapshotInvalidError('the snapshot is invalid: the kernel refuses all I/O to it');
    if (store.overflowed) throw new OverlayFullError('the overlay overflowed earlier: writes are refused until it is reset or merged');
    if (buf.byteLength === 0) return;
    const cb = this.#chunkBytes;
    const end = offset + buf.byteLength;
    const first = Math.floor(offset / cb);
    const last = Math.floor((end - 1) / cb);
    let needed = 0;
    for (let c = first; c <= last; c++) if (store.lookup(c) === undefined) needed++;
    if (!store.canAllocate(needed)) {
      const free = store.freeChunks();
      if (this.mode === 'P') {
        await store.invalidate();
        throw new SnapshotInvalidError(`the overlay is full (a write needed ${needed} new chunks, ${free} left); with overflow mode P the snapshot is now invalidated, as the kernel does`);
      }
      store.markOverflowed();
      throw new OverlayFullError(`the overlay is full: a write needed ${needed} new chunks of ${cb} bytes but only ${free} are left; nothing was written (merge or reset the overlay to make room)`);
    }
    // Contiguous COW ranges are written with one call.
    let pendingAt = -1;
    let pending: Uint8Array[] = [];
    let pendingLen = 0;
    const emit = async (): Promise<void> => {
      if (pending.length === 0) return;
      const data = pending.length === 1 ? (pending[0] as Uint8Array) : Buffer.concat(pending);
      await store.disk.write(data, pendingAt);
      pending = [];
      pendingLen = 0;
    };
    const queue = async (cowOffset: number, data: Uint8Array): Promise<void> => {
      if (pending.length > 0 && pendingAt + pendingLen === cowOffset && pendingLen < 8 * 2 ** 20) {
        pending.push(data);
      } else {
        await emit();
        pendingAt = cowOffset;
        pending = [data];
      }
      pendingLen += data.byteLength;
    };
    for (let c = first; c <= last; c++) {
      const chunkStart = c * cb;
      const from = Math.max(offset, chunkStart);
      const to = Math.min(end, chunkStart + cb);
      const part = buf.subarray(from - offset, to - offset);
      const mapped = store.lookup(c);
      if (mapped !== undefined) {
        await queue(mapped * cb + (from - chunkStart), part);
        continue;
      }
      const chunkLen = Math.min(cb, this.base.size - chunkStart);
      let data: Uint8Array;
      if (from === chunkStart && to - from === chunkLen) {
        if (chunkLen === cb) {
          data = part;
        } else {
          data = new Uint8Array(cb);
          data.set(part);
        }
      } else {
        data = new Uint8Array(cb);
        await this.base.read(data.subarray(0, chunkLen), chunkStart);
        data.set(part, from - chunkStart);
      }
      const newChunk = store.allocate(c);
      await queue(newChunk * cb, data);
    }
    await emit();
  }

  /** Commits new exceptions (data durable before the metadata that points at it). */
  flush(): Promise<void> {
    if (this.readOnly) return Promise.resolve();
    return this.#lock.write(async () => {
      if (this.store.valid) await this.store.commit();
      await this.store.disk.flush();
    });
  }

  /** Commits; the base and overlay Disks stay open (their owner closes them). */
  async close(): Promise<void> {
    await this.flush();
  }
}
