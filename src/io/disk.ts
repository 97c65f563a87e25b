/**
 * The Disk: a random-access byte device (read / write / size / flush / close). Every layer above
 * talks to Disks only, so a COW overlay, a LUKS volume or a file inside a SquashFS image can stand
 * wherever a plain file can.
 *
 * Contract: `read(buf, offset)` fills all of `buf` from `offset` and `write(buf, offset)` stores all
 * of it; both throw OutOfRangeError when [offset, offset + length) is not inside [0, size). A Disk
 * never returns short reads. `flush()` makes every completed write durable. Offsets are JS numbers
 * (exact to 2^53 bytes).
 */
import { open, type FileHandle } from 'node:fs/promises';
import { constants as fsConstants, readSync, writeSync } from 'node:fs';
import { SimulatedCrash, faultPoint } from './faults.ts';
import { checkWritableDevice, inspectDevice } from './device.ts';
import { OutOfRangeError, ReadOnlyError, fromSystemError } from '../errors.ts';

/** A system error as a typed one; a simulated crash (tests) passes through untouched. */
function systemFailure(err: unknown, path: string, action: string): Error {
  return err instanceof SimulatedCrash ? err : fromSystemError(err, path, action);
}

export interface Disk {
  readonly size: number;
  readonly readOnly: boolean;
  read(buf: Uint8Array, offset: number): Promise<void>;
  write(buf: Uint8Array, offset: number): Promise<void>;
  flush(): Promise<void>;
  close(): Promise<void>;
}

export function checkRange(disk: { size: number }, offset: number, length: number, what = 'access'): void {
  if (!Number.isSafeInteger(offset) || offset < 0 || length < 0 || offset + length > disk.size) {
    throw new OutOfRangeError(`${what} of ${length} bytes at ${offset} is outside the device (size ${disk.size})`);
  }
}

/** Reads `length` bytes at `offset` into a new buffer. */
export async function readAt(disk: Disk, offset: number, length: number): Promise<Uint8Array> {
  const buf = new Uint8Array(length);
  await disk.read(buf, offset);
  return buf;
}

export interface FileDiskOptions {
  readOnly?: boolean;
  /** Create the file (fails if it exists) with this size; sparse where the host filesystem allows. */
  create?: { size: number };
  /** Write a block device even while it is mounted or holds this host's system (io/device.ts). */
  force?: boolean;
}

/**
 * A Disk over a host file. The size is the file size at open (or after resize). Positional reads and
 * writes are synchronous system calls behind the async interface: a page-cache hit then costs a few
 * microseconds instead of a thread-pool round trip of tens, which dominates chunk-sized I/O. CPU-heavy
 * work runs in worker threads, so the main thread doing ordered I/O is the intended shape.
 */
export class FileDisk implements Disk {
  readonly path: string;
  readonly readOnly: boolean;
  #size: number;
  #fh: FileHandle;

  /** The open descriptor, for positional I/O on worker threads (they share the process's fd table). */
  get fd(): number {
    return this.#fh.fd;
  }

  private constructor(path: string, fh: FileHandle, size: number, readOnly: boolean) {
    this.path = path;
    this.#fh = fh;
    this.#size = size;
    this.readOnly = readOnly;
  }

  static async open(path: string, options: FileDiskOptions = {}): Promise<FileDisk> {
    const readOnly = options.readOnly ?? false;
    let fh: FileHandle;
    try {
      faultPoint(options.create ? 'create' : 'open', path);
      if (options.create) {
        fh = await open(path, fsConstants.O_RDWR | fsConstants.O_CREAT | fsConstants.O_EXCL, 0o644);
        await fh.truncate(options.create.size);
      } else {
        fh = await open(path, readOnly ? 'r' : 'r+');
      }
    } catch (err) {
      throw systemFailure(err, path, options.create ? 'create the file' : 'open the file');
    }
    try {
      const st = await fh.stat();
      if (!st.isFile() && !st.isBlockDevice()) {
        throw fromSystemError(Object.assign(new Error('not a regular file'), { code: 'EINVAL' }), path, 'open the file');
      }
      if (st.isBlockDevice()) {
        // A block device's stat size is 0: sysfs or probing gives it; writing is refused while it is in use.
        const info = inspectDevice(path, fh.fd);
        if (!readOnly) checkWritableDevice(info, options.force);
        return new FileDisk(path, fh, info.size, readOnly);
      }
      return new FileDisk(path, fh, st.size, readOnly);
    } catch (err) {
      await fh.close();
      throw fromSystemError(err, path, 'open the file');
    }
  }

  get size(): number {
    return this.#size;
  }

  async read(buf: Uint8Array, offset: number): Promise<void> {
    checkRange(this, offset, buf.byteLength, 'read');
    let done = 0;
    while (done < buf.byteLength) {
      let n: number;
      try {
        n = readSync(this.#fh.fd, buf, done, buf.byteLength - done, offset + done);
      } catch (err) {
        throw fromSystemError(err, this.path, `read ${buf.byteLength} bytes at offset ${offset}`);
      }
      if (n === 0) {
        // The file shrank under us: what lies past its end reads as nothing; report it honestly.
        throw fromSystemError(new Error(`unexpected end of file at ${offset + done}`), this.path, 'read');
      }
      done += n;
    }
  }

  async write(buf: Uint8Array, offset: number): Promise<void> {
    if (this.readOnly) throw new ReadOnlyError(`${this.path} is open read-only`);
    checkRange(this, offset, buf.byteLength, 'write');
    let done = 0;
    while (done < buf.byteLength) {
      try {
        if (done === 0) faultPoint('write', this.path);
        done += writeSync(this.#fh.fd, buf, done, buf.byteLength - done, offset + done);
      } catch (err) {
        throw systemFailure(err, this.path, `write ${buf.byteLength} bytes at offset ${offset}`);
      }
    }
  }

  /** Changes the file size (sparse growth where the host allows). */
  async resize(size: number): Promise<void> {
    if (this.readOnly) throw new ReadOnlyError(`${this.path} is open read-only`);
    try {
      faultPoint('truncate', this.path);
      await this.#fh.truncate(size);
    } catch (err) {
      throw systemFailure(err, this.path, `resize to ${size} bytes`);
    }
    this.#size = size;
  }

  async flush(): Promise<void> {
    if (this.readOnly) return;
    try {
      faultPoint('fsync', this.path);
      await this.#fh.datasync();
    } catch (err) {
      throw systemFailure(err, this.path, 'flush');
    }
  }

  async close(): Promise<void> {
    await this.#fh.close();
  }
}

/** A Disk in memory; `growable` lets writes past the end extend it (for building images). */
export class MemoryDisk implements Disk {
  #bytes: Uint8Array;
  #size: number;
  readonly readOnly: boolean;

  constructor(bytesOrSize: Uint8Array | number, options: { readOnly?: boolean } = {}) {
    this.#bytes = typeof bytesOrSize === 'number' ? new Uint8Array(bytesOrSize) : bytesOrSize;
    this.#size = this.#bytes.byteLength;
    this.readOnly = options.readOnly ?? false;
  }

  get size(): number {
    return this.#size;
  }

  /** The backing bytes (a view, not a copy). */
  get bytes(): Uint8Array {
    return this.#bytes.subarray(0, this.#size);
  }

  async read(buf: Uint8Array, offset: number): Promise<void> {
    checkRange(this, offset, buf.byteLength, 'read');
    buf.set(this.#bytes.subarray(offset, offset + buf.byteLength));
  }

  async write(buf: Uint8Array, offset: number): Promise<void> {
    if (this.readOnly) throw new ReadOnlyError();
    checkRange(this, offset, buf.byteLength, 'write');
    this.#bytes.set(buf, offset);
  }

  async resize(size: number): Promise<void> {
    if (this.readOnly) throw new ReadOnlyError();
    if (size > this.#bytes.byteLength) {
      const grown = new Uint8Array(Math.max(size, this.#bytes.byteLength * 2));
      grown.set(this.#bytes.subarray(0, this.#size));
      this.#bytes = grown;
    } else if (size < this.#size) {
      this.#bytes.fill(0, size, this.#size);
    }
    this.#size = size;
  }

  async flush(): Promise<void> {}
  async close(): Promise<void> {}
}

/** A byte range [offset, offset + size) of another Disk (a partition, a file region, a LUKS payload). */
export class SliceDisk implements Disk {
  readonly inner: Disk;
  readonly start: number;
  readonly size: number;
  readonly readOnly: boolean;

  constructor(inner: Disk, start: number, size: number, options: { readOnly?: boolean } = {}) {
    checkRange(inner, start, size, 'slice');
    this.inner = inner;
    this.start = start;
    this.size = size;
    this.readOnly = (options.readOnly ?? false) || inner.readOnly;
  }

  async read(buf: Uint8Array, offset: number): Promise<void> {
    checkRange(this, offset, buf.byteLength, 'read');
    await this.inner.read(buf, this.start + offset);
  }

  async write(buf: Uint8Array, offset: number): Promise<void> {
    if (this.readOnly) throw new ReadOnlyError();
    checkRange(this, offset, buf.byteLength, 'write');
    await this.inner.write(buf, this.start + offset);
  }

  flush(): Promise<void> {
    return this.inner.flush();
  }

  /** Closing a slice leaves the inner Disk open: its owner closes it. */
  async close(): Promise<void> {}
}

/** Refuses writes; reads pass through. */
export class ReadOnlyDisk implements Disk {
  readonly inner: Disk;
  readonly readOnly = true;

  constructor(inner: Disk) {
    this.inner = inner;
  }

  get size(): number {
    return this.inner.size;
  }

  read(buf: Uint8Array, offset: number): Promise<void> {
    return this.inner.read(buf, offset);
  }

  async write(): Promise<void> {
    throw new ReadOnlyError();
  }

  async flush(): Promise<void> {}

  close(): Promise<void> {
    return this.inner.close();
  }
}

/** Streams a Disk range in pieces of `pieceSize` bytes (the last may be shorter). */
export async function* readPieces(disk: Disk, pieceSize: number, start = 0, end = disk.size): AsyncGenerator<Uint8Array> {
  for (let at = start; at < end; at += pieceSize) {
    yield await readAt(disk, at, Math.min(pieceSize, end - at));
  }
}
