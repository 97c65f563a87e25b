/**
 * aes-xts with dm-crypt's plain64 / plain IVs, many sectors per call.
 *
 * Design notes
 * - XTS per data unit (one encryption sector): T0 = AES(K2, IV); block j uses Tj = T0·α^j in GF(2^128)
 *   (little-endian doubling, reduction 0x87); C = AES(K1, P ⊕ Tj) ⊕ Tj. Sectors are whole multiples of 16
 *   bytes, so no ciphertext stealing.
 * - node:crypto's `aes-*-xts` needs one cipher object per sector (its IV is the sector tweak), which costs
 *   more than the AES itself at 512-byte sectors. Instead we batch: one AES-ECB call computes every sector's
 *   T0 under K2, a tight loop builds all block tweaks, and one AES-ECB call under K1 does the bulk. The tests
 *   check this against node:crypto's own aes-xts sector by sector.
 * - IV of a unit = its 512-byte sector number (plain64: u64 little-endian, plain: low 32 bits), then zeros.
 *   For 4096-byte sectors dm-crypt (without iv_large_sectors, as LUKS2 uses it) still counts in 512-byte
 *   sectors, so consecutive units' IVs step by sectorSize / 512.
 * - The key halves live in Buffers we own and wipe in `destroy()`; OpenSSL's per-call contexts are
 *   released by node:crypto after each call. Temporary copies of sector data are not wiped (they hold
 *   data the caller is given anyway, and wiping them costs throughput) unless `wipeTemporaries` is set,
 *   as it is for keyslot areas, whose plaintext is the split volume key.
 */
import { createCipheriv, createDecipheriv } from 'node:crypto';
import { UnsupportedFeatureError } from '../../errors.ts';

export type IvMode = 'plain64' | 'plain';

export class XtsCipher {
  readonly keySize: number;
  readonly ivMode: IvMode;
  readonly #k1: Buffer;
  readonly #k2: Buffer;
  readonly #algo: string;
  readonly #key: Buffer;
  readonly #xtsAlgo: string;
  readonly #halvesDiffer: boolean;

  readonly #wipe: boolean;

  /** `wipeTemporaries`: zero every intermediate buffer (for key material, e.g. keyslot areas). */
  constructor(key: Uint8Array, ivMode: IvMode = 'plain64', options: { wipeTemporaries?: boolean } = {}) {
    this.#wipe = options.wipeTemporaries ?? false;
    if (key.byteLength !== 32 && key.byteLength !== 64) {
      throw new UnsupportedFeatureError('luks', 'key size', `aes-xts needs a 256- or 512-bit key, not ${key.byteLength * 8} bits`);
    }
    this.keySize = key.byteLength;
    this.ivMode = ivMode;
    const half = key.byteLength / 2;
    this.#k1 = Buffer.from(key.subarray(0, half));
    this.#k2 = Buffer.from(key.subarray(half));
    this.#algo = half === 16 ? 'aes-128-ecb' : 'aes-256-ecb';
    this.#key = Buffer.from(key);
    this.#xtsAlgo = half === 16 ? 'aes-128-xts' : 'aes-256-xts';
    this.#halvesDiffer = !this.#k1.equals(this.#k2);
  }

  /**
   * Encrypts `data` in place (or into `out`, leaving `data` alone): units of `sectorSize` bytes, the first with IV sector `firstIvSector`, the
   * next ones stepping by sectorSize / 512.
   */
  encrypt(data: Uint8Array, sectorSize: number, firstIvSector: number | bigint, out: Uint8Array = data): void {
    if (out !== data) {
      if (out.byteLength !== data.byteLength) throw new RangeError('xts: output length differs from input');
      if (sectorSize >= 4096 && this.#halvesDiffer) {
        this.#perUnit(data, sectorSize, data.byteLength / sectorSize, firstIvSector, true, out);
        return;
      }
      out.set(data);
    }
    this.#run(out, sectorSize, firstIvSector, true);
  }

  decrypt(data: Uint8Array, sectorSize: number, firstIvSector: number | bigint): void {
    this.#run(data, sectorSize, firstIvSector, false);
  }

  destroy(): void {
    this.#k1.fill(0);
    this.#k2.fill(0);
    this.#key.fill(0);
  }

  #run(data: Uint8Array, sectorSize: number, firstIvSector: number | bigint, encrypt: boolean): void {
    const len = data.byteLength;
    if (len === 0) return;
    if (sectorSize < 512 || sectorSize % 16 !== 0 || len % sectorSize !== 0) {
      throw new RangeError(`xts: ${len} bytes is not a whole number of ${sectorSize}-byte sectors`);
    }
    const units = len / sectorSize;
    if (sectorSize >= 4096 && this.#halvesDiffer) {
      this.#perUnit(data, sectorSize, units, firstIvSector, encrypt);
      return;
    }
    const step = BigInt(sectorSize / 512);
    const ivs = Buffer.alloc(units * 16);
    const ivView = new DataView(ivs.buffer, ivs.byteOffset, ivs.byteLength);
    let sector = BigInt(firstIvSector);
    for (let u = 0; u < units; u++, sector += step) {
      if (this.ivMode === 'plain64') ivView.setBigUint64(u * 16, BigInt.asUintN(64, sector), true);
      else ivView.setUint32(u * 16, Number(BigInt.asUintN(32, sector)), true);
    }
    const t0 = ecb(this.#algo, this.#k2, ivs, true);
    // Word views need 4-byte alignment; copy through an aligned scratch buffer when the caller's is not.
    const aligned = data.byteOffset % 4 === 0;
    const work = aligned ? data : new Uint8Array(data);
    const words = new Uint32Array(work.buffer, work.byteOffset, len >>> 2);
    const tweaks = new Uint32Array(len >>> 2);
    const t0w = new Uint32Array(t0.buffer, t0.byteOffset, t0.byteLength >>> 2);
    const blocksPerUnit = sectorSize >>> 4;
    let w = 0;
    for (let u = 0; u < units; u++) {
      let a = t0w[u * 4]!;
      let b = t0w[u * 4 + 1]!;
      let c = t0w[u * 4 + 2]!;
      let d = t0w[u * 4 + 3]!;
      for (let j = 0; j < blocksPerUnit; j++) {
        tweaks[w] = a;
        tweaks[w + 1] = b;
        tweaks[w + 2] = c;
        tweaks[w + 3] = d;
        words[w] = words[w]! ^ a;
        words[w + 1] = words[w + 1]! ^ b;
        words[w + 2] = words[w + 2]! ^ c;
        words[w + 3] = words[w + 3]! ^ d;
        w += 4;
        const carry = d >>> 31;
        d = (d << 1) | (c >>> 31);
        c = (c << 1) | (b >>> 31);
        b = (b << 1) | (a >>> 31);
        a = (a << 1) ^ (carry * 0x87);
      }
    }
    const mid = ecb(this.#algo, this.#k1, Buffer.from(work.buffer, work.byteOffset, len), encrypt);
    const midWords = new Uint32Array(mid.buffer, mid.byteOffset, len >>> 2);
    for (let i = 0; i < words.length; i++) words[i] = midWords[i]! ^ tweaks[i]!;
    if (this.#wipe) {
      mid.fill(0);
      tweaks.fill(0);
    }
    if (!aligned) {
      data.set(work);
      work.fill(0);
    }
  }

  // For large sectors OpenSSL's own XTS (one context per unit) is faster than the batched path; it refuses
  // keys whose halves are equal, which the batched path handles.
  #perUnit(data: Uint8Array, sectorSize: number, units: number, firstIvSector: number | bigint, encrypt: boolean, into: Uint8Array = data): void {
    const iv = Buffer.alloc(16);
    const step = BigInt(sectorSize / 512);
    let sector = BigInt(firstIvSector);
    for (let u = 0; u < units; u++, sector += step) {
      iv.fill(0);
      if (this.ivMode === 'plain64') iv.writeBigUInt64LE(BigInt.asUintN(64, sector));
      else iv.writeUInt32LE(Number(BigInt.asUintN(32, sector)));
      const c = encrypt ? createCipheriv(this.#xtsAlgo, this.#key, iv) : createDecipheriv(this.#xtsAlgo, this.#key, iv);
      const out = c.update(data.subarray(u * sectorSize, (u + 1) * sectorSize));
      c.final();
      into.set(out, u * sectorSize);
      if (this.#wipe) out.fill(0);
    }
  }
}

function ecb(algo: string, key: Buffer, input: Buffer, encrypt: boolean): Buffer {
  const c = encrypt ? createCipheriv(algo, key, null) : createDecipheriv(algo, key, null);
  c.setAutoPadding(false);
  const out = c.update(input);
  const tail = c.final();
  // update() returns a fresh Buffer; Node may hand back a pooled slice, so make sure it is 4-byte aligned.
  if (tail.byteLength !== 0) throw new Error('xts: unexpected ECB tail');
  return out.byteOffset % 4 === 0 ? out : Buffer.from(out);
}
