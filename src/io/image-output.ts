import { open, unlink, type FileHandle } from 'node:fs/promises';
import { fromSystemError } from '../errors.ts';
import type { Disk } from './disk.ts';
import { SimulatedCrash, faultPoint } from './faults.ts';

/**
 * Buffered positional output of an image writer (SquashFS, EROFS) to a host file or a Disk (grown
 * with resize when it has one): sequential appends are gathered into one buffer, a write elsewhere
 * flushes first; every host operation is a fault point.
 */
export class ImageOutput {
  #fh: FileHandle | undefined;
  #disk: (Disk & { resize?: (n: number) => Promise<void> }) | undefined;
  #buf = new Uint8Array(4 << 20);
  #bufStart = 0;
  #bufLen = 0;
  path: string;

  private constructor(path: string) {
    this.path = path;
  }

  static async toPath(path: string): Promise<ImageOutput> {
    const o = new ImageOutput(path);
    try {
      faultPoint('create', path);
      o.#fh = await open(path, 'w');
    } catch (err) {
      if (err instanceof SimulatedCrash) throw err;
      throw fromSystemError(err, path, 'create the image');
    }
    return o;
  }

  static toDisk(disk: Disk): ImageOutput {
    const o = new ImageOutput('(disk)');
    o.#disk = disk;
    return o;
  }

  /** Appends `n` bytes at `at` that `fill` reads straight into the buffer (n ≤ the buffer's size). */
  async writeFrom(n: number, at: number, fill: (dst: Uint8Array) => Promise<void>): Promise<void> {
    if (n > this.#buf.byteLength) throw new RangeError(`writeFrom: ${n} bytes do not fit the output buffer`);
    if (at !== this.#bufStart + this.#bufLen || this.#bufLen + n > this.#buf.byteLength) {
      await this.flushBuffer();
      this.#bufStart = at;
    }
    await fill(this.#buf.subarray(this.#bufLen, this.#bufLen + n));
    this.#bufLen += n;
    if (this.#bufLen === this.#buf.byteLength) await this.flushBuffer();
  }

  /** Sequential append at `at` (must equal the end of the buffered range, or start a new range). */
  async write(bytes: Uint8Array, at: number): Promise<void> {
    if (at !== this.#bufStart + this.#bufLen) {
      await this.flushBuffer();
      this.#bufStart = at;
    }
    let done = 0;
    while (done < bytes.byteLength) {
      const n = Math.min(bytes.byteLength - done, this.#buf.byteLength - this.#bufLen);
      this.#buf.set(bytes.subarray(done, done + n), this.#bufLen);
      this.#bufLen += n;
      done += n;
      if (this.#bufLen === this.#buf.byteLength) await this.flushBuffer();
    }
  }

  async flushBuffer(): Promise<void> {
    if (this.#bufLen === 0) {
      return;
    }
    const data = this.#buf.subarray(0, this.#bufLen);
    await this.#raw(data, this.#bufStart);
    this.#bufStart += this.#bufLen;
    this.#bufLen = 0;
  }

  async #raw(data: Uint8Array, at: number): Promise<void> {
    if (this.#fh) {
      try {
        faultPoint('write', this.path);
        let done = 0;
        while (done < data.byteLength) {
          const { bytesWritten } = await this.#fh.write(data, done, data.byteLength - done, at + done);
          done += bytesWritten;
        }
      } catch (err) {
        if (err instanceof SimulatedCrash) throw err;
        throw fromSystemError(err, this.path, 'write the image');
      }
    } else if (this.#disk) {
      if (at + data.byteLength > this.#disk.size) {
        if (typeof this.#disk.resize !== 'function') throw new RangeError(`the output disk (${this.#disk.size} bytes) is too small`);
        await this.#disk.resize(at + data.byteLength);
      }
      await this.#disk.write(data, at);
    }
  }

  async finish(size: number): Promise<void> {
    await this.flushBuffer();
    if (this.#fh) {
      try {
        faultPoint('truncate', this.path);
        await this.#fh.truncate(size);
        await this.#fh.close();
      } catch (err) {
        if (err instanceof SimulatedCrash) throw err;
        throw fromSystemError(err, this.path, 'finish the image');
      }
    } else if (this.#disk && typeof this.#disk.resize === 'function' && this.#disk.size !== size) {
      await this.#disk.resize(size);
    }
  }

  /** Closes and removes a partly written image file (a Disk is left as it is). */
  async abort(): Promise<void> {
    if (this.#fh) {
      await this.#fh.close().catch(() => {});
      try {
        faultPoint('unlink', this.path);
        await unlink(this.path);
      } catch {
        // Left for the caller's cleanup (or, after a crash, for recovery).
      }
    }
  }
}
