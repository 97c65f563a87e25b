/**
 * Bytes appended in order and read back by range: the packed inode's content, which grows with every
 * fragment while the other files' data is written and is compressed only at the end. Held in memory
 * up to a limit, then in a temporary file (removed by close), so a root of many small files does not
 * hold all their bytes in memory.
 */
import { closeSync, mkdtempSync, openSync, readSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fromSystemError } from '../../errors.ts';

export class ByteSpool {
  readonly #memoryLimit: number;
  #parts: Uint8Array[] = [];
  #length = 0;
  #fd: number | undefined;
  #dir: string | undefined;
  #file = '';

  constructor(memoryLimit = 64 << 20) {
    this.#memoryLimit = memoryLimit;
  }

  get length(): number {
    return this.#length;
  }

  /** Whether the bytes went to a temporary file. */
  get spilled(): boolean {
    return this.#fd !== undefined;
  }

  /** Appends a copy of `bytes` (the caller may reuse its buffer). */
  append(bytes: Uint8Array): void {
    if (bytes.byteLength === 0) return;
    if (this.#fd === undefined && this.#length + bytes.byteLength > this.#memoryLimit) this.#spill();
    if (this.#fd === undefined) this.#parts.push(Uint8Array.from(bytes));
    else this.#writeAt(bytes, this.#length);
    this.#length += bytes.byteLength;
  }

  /** A copy of `length` bytes from `at`. */
  read(at: number, length: number): Uint8Array {
    if (at < 0 || length < 0 || at + length > this.#length) throw new RangeError(`spool read ${at}+${length} is outside its ${this.#length} bytes`);
    const out = new Uint8Array(length);
    if (this.#fd !== undefined) {
      let got = 0;
      while (got < length) {
        let n: number;
        try {
          n = readSync(this.#fd, out, got, length - got, at + got);
        } catch (err) {
          throw fromSystemError(err, this.#file, 'read the spooled packed inode');
        }
        if (n === 0) throw fromSystemError(new Error('the spool file is shorter than what was written to it'), this.#file, 'read the spooled packed inode');
        got += n;
      }
      return out;
    }
    let partStart = 0;
    for (const p of this.#parts) {
      const partEnd = partStart + p.byteLength;
      if (partEnd > at && partStart < at + length) {
        const from = Math.max(at, partStart);
        const to = Math.min(at + length, partEnd);
        out.set(p.subarray(from - partStart, to - partStart), from - at);
      }
      if (partEnd >= at + length) break;
      partStart = partEnd;
    }
    return out;
  }

  close(): void {
    if (this.#fd !== undefined) {
      try {
        closeSync(this.#fd);
      } catch {}
      this.#fd = undefined;
    }
    if (this.#dir !== undefined) rmSync(this.#dir, { recursive: true, force: true });
    this.#dir = undefined;
    this.#parts = [];
  }

  #spill(): void {
    try {
      this.#dir = mkdtempSync(join(tmpdir(), 'livestick-erofs-packed-'));
      this.#file = join(this.#dir, 'packed');
      this.#fd = openSync(this.#file, 'w+', 0o600);
    } catch (err) {
      throw fromSystemError(err, this.#file || tmpdir(), 'create a temporary file for the packed inode');
    }
    let at = 0;
    for (const p of this.#parts) {
      this.#writeAt(p, at);
      at += p.byteLength;
    }
    this.#parts = [];
  }

  #writeAt(bytes: Uint8Array, at: number): void {
    let done = 0;
    while (done < bytes.byteLength) {
      try {
        done += writeSync(this.#fd as number, bytes, done, bytes.byteLength - done, at + done);
      } catch (err) {
        throw fromSystemError(err, this.#file, 'write the spooled packed inode');
      }
    }
  }
}
