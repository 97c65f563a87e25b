/**
 * A Disk over the decrypted payload of a LUKS volume, as dm-crypt maps it: byte p of the payload is in
 * encryption sector floor(p / sectorSize), whose IV is its 512-byte sector number counted from the
 * segment start (+ iv_tweak). Reads and writes may have any alignment: partial sectors are read,
 * decrypted, patched and re-encrypted (writes touching partial sectors are serialised so two of them
 * cannot interleave on one sector). Large requests are processed in 1 MiB pieces so memory stays bounded.
 */
import { OutOfRangeError, ReadOnlyError, UnsupportedFeatureError } from '../../errors.ts';
import { checkRange, type Disk } from '../../io/disk.ts';
import { XtsCipher, type IvMode } from './xts.ts';
import { CbcCipher, type CbcIvMode } from './cbc.ts';

const PIECE = 1 << 20;

export interface SectorCipher {
  /** In place, or into `out` (same length) leaving `data` unchanged. */
  encrypt(data: Uint8Array, sectorSize: number, firstIvSector: number | bigint, out?: Uint8Array): void;
  decrypt(data: Uint8Array, sectorSize: number, firstIvSector: number | bigint): void;
  destroy(): void;
}

/** A dm-crypt cipher spec ("aes-xts-plain64") with its key; other specs are UnsupportedFeatureError. */
export function createSectorCipher(spec: string, key: Uint8Array, options: { wipeTemporaries?: boolean } = {}): SectorCipher {
  const xts = /^aes-xts-(plain64|plain)$/.exec(spec);
  if (xts) return new XtsCipher(key, xts[1] as IvMode, options);
  const cbc = /^aes-cbc-(essiv:sha256|plain64|plain)$/.exec(spec);
  if (cbc) return new CbcCipher(key, cbc[1] as CbcIvMode);
  throw new UnsupportedFeatureError('luks', 'cipher', `${spec} (livestick supports aes-xts-plain64/plain and aes-cbc-essiv:sha256/plain64/plain)`);
}

export interface CryptDiskOptions {
  readonly offset: number;
  readonly size: number;
  readonly sectorSize: number;
  readonly ivTweak?: bigint;
  readonly readOnly?: boolean;
  /** Close `inner` when this Disk is closed. */
  readonly closeInner?: boolean;
}

export class CryptDisk implements Disk {
  readonly inner: Disk;
  readonly size: number;
  readonly readOnly: boolean;
  readonly sectorSize: number;
  readonly #offset: number;
  readonly #ivTweak: bigint;
  readonly #cipher: SectorCipher;
  readonly #closeInner: boolean;
  #closed = false;
  #rmw: Promise<void> = Promise.resolve();
  readonly #scratch: Uint8Array[] = [];

  constructor(inner: Disk, cipher: SectorCipher, options: CryptDiskOptions) {
    const { offset, size, sectorSize } = options;
    if (sectorSize < 512 || sectorSize > 4096 || (sectorSize & (sectorSize - 1)) !== 0) {
      throw new UnsupportedFeatureError('luks', 'sector size', `${sectorSize}`);
    }
    if (offset % 512 !== 0 || size % sectorSize !== 0) throw new RangeError('crypt disk: offset/size misaligned');
    checkRange(inner, offset, size, 'encrypted payload');
    this.inner = inner;
    this.#cipher = cipher;
    this.#offset = offset;
    this.size = size;
    this.sectorSize = sectorSize;
    this.#ivTweak = options.ivTweak ?? 0n;
    this.readOnly = (options.readOnly ?? false) || inner.readOnly;
    this.#closeInner = options.closeInner ?? false;
  }

  #check(): void {
    if (this.#closed) throw new OutOfRangeError('the encrypted volume is closed');
  }

  #iv(at: number): bigint {
    return this.#ivTweak + BigInt(at / 512);
  }

  /** Reads and decrypts whole sectors [at, at + out.length) of the payload into `out`. */
  async #readSectors(out: Uint8Array, at: number): Promise<void> {
    await this.inner.read(out, this.#offset + at);
    this.#cipher.decrypt(out, this.sectorSize, this.#iv(at));
  }

  async read(buf: Uint8Array, offset: number): Promise<void> {
    this.#check();
    checkRange(this, offset, buf.byteLength, 'read');
    const ss = this.sectorSize;
    let pos = offset;
    const end = offset + buf.byteLength;
    while (pos < end) {
      const start = pos - (pos % ss);
      const stop = Math.min(Math.ceil(end / ss) * ss, start + PIECE);
      const take = Math.min(end, stop) - pos;
      const into = buf.subarray(pos - offset, pos - offset + take);
      if (start === pos && take === stop - start) {
        await this.#readSectors(into, start);
      } else {
        const tmp = new Uint8Array(stop - start);
        await this.#readSectors(tmp, start);
        into.set(tmp.subarray(pos - start, pos - start + take));
        tmp.fill(0);
      }
      pos += take;
    }
  }

  async write(buf: Uint8Array, offset: number): Promise<void> {
    this.#check();
    if (this.readOnly) throw new ReadOnlyError('the encrypted volume is open read-only');
    checkRange(this, offset, buf.byteLength, 'write');
    const ss = this.sectorSize;
    if (offset % ss === 0 && buf.byteLength % ss === 0) {
      await this.#writeAligned(buf, offset);
      return;
    }
    const run = this.#rmw.then(() => this.#writeUnaligned(buf, offset));
    this.#rmw = run.catch(() => {});
    await run;
  }

  async #writeAligned(buf: Uint8Array, offset: number): Promise<void> {
    // Ciphertext goes to a reused scratch buffer: a fresh 1 MiB allocation per write costs more in garbage
    // collection than the copy. Concurrent writes each take their own buffer from the pool.
    const scratch = this.#scratch.pop() ?? new Uint8Array(PIECE);
    try {
      for (let done = 0; done < buf.byteLength; done += PIECE) {
        const piece = buf.subarray(done, Math.min(buf.byteLength, done + PIECE));
        const tmp = scratch.subarray(0, piece.byteLength);
        this.#cipher.encrypt(piece, this.sectorSize, this.#iv(offset + done), tmp);
        await this.inner.write(tmp, this.#offset + offset + done);
      }
    } finally {
      if (this.#scratch.length < 4) this.#scratch.push(scratch);
    }
  }

  async #writeUnaligned(buf: Uint8Array, offset: number): Promise<void> {
    const ss = this.sectorSize;
    let pos = offset;
    const end = offset + buf.byteLength;
    while (pos < end) {
      const start = pos - (pos % ss);
      const stop = Math.min(Math.ceil(end / ss) * ss, start + PIECE);
      const take = Math.min(end, stop) - pos;
      const tmp = new Uint8Array(stop - start);
      const headPartial = pos !== start;
      const tailPartial = pos + take < stop;
      if (headPartial) await this.#readSectors(tmp.subarray(0, ss), start);
      if (tailPartial && (!headPartial || stop - start > ss)) await this.#readSectors(tmp.subarray(stop - start - ss), stop - ss);
      tmp.set(buf.subarray(pos - offset, pos - offset + take), pos - start);
      this.#cipher.encrypt(tmp, ss, this.#iv(start));
      await this.inner.write(tmp, this.#offset + start);
      pos += take;
    }
  }

  flush(): Promise<void> {
    return this.inner.flush();
  }

  /** Wipes the key (and closes the inner Disk when this Disk owns it). */
  async close(): Promise<void> {
    if (this.#closed) return;
    await this.#rmw;
    this.#closed = true;
    this.#cipher.destroy();
    if (this.#closeInner) await this.inner.close();
  }
}
