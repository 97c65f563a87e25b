/**
 * aes-cbc with dm-crypt's essiv:sha256, plain64 or plain IVs (older LUKS1 volumes, e.g. cryptsetup < 1.6
 * defaults). Each 512-byte-numbered sector is its own CBC chain. ESSIV: IV = AES-ECB(key = sha256(volume
 * key), block = little-endian 64-bit sector number ‖ 8 zero bytes).
 */
import { createCipheriv, createDecipheriv, createHash } from 'node:crypto';
import { UnsupportedFeatureError } from '../../errors.ts';

export type CbcIvMode = 'essiv:sha256' | 'plain64' | 'plain';

export class CbcCipher {
  readonly #key: Buffer;
  readonly #algo: string;
  readonly #essivKey: Buffer | undefined;
  readonly #ivMode: CbcIvMode;

  constructor(key: Uint8Array, ivMode: CbcIvMode) {
    if (key.byteLength !== 16 && key.byteLength !== 24 && key.byteLength !== 32) {
      throw new UnsupportedFeatureError('luks', 'key size', `aes-cbc needs a 128-, 192- or 256-bit key, not ${key.byteLength * 8} bits`);
    }
    this.#key = Buffer.from(key);
    this.#algo = `aes-${key.byteLength * 8}-cbc`;
    this.#ivMode = ivMode;
    this.#essivKey = ivMode === 'essiv:sha256' ? createHash('sha256').update(key).digest() : undefined;
  }

  #iv(sector: bigint): Buffer {
    const iv = Buffer.alloc(16);
    if (this.#ivMode === 'plain') iv.writeUInt32LE(Number(BigInt.asUintN(32, sector)));
    else iv.writeBigUInt64LE(BigInt.asUintN(64, sector));
    if (this.#essivKey === undefined) return iv;
    const c = createCipheriv('aes-256-ecb', this.#essivKey, null);
    c.setAutoPadding(false);
    return c.update(iv);
  }

  encrypt(data: Uint8Array, sectorSize: number, firstIvSector: number | bigint, out: Uint8Array = data): void {
    if (out !== data) out.set(data);
    this.#run(out, sectorSize, firstIvSector, true);
  }

  decrypt(data: Uint8Array, sectorSize: number, firstIvSector: number | bigint): void {
    this.#run(data, sectorSize, firstIvSector, false);
  }

  #run(data: Uint8Array, sectorSize: number, firstIvSector: number | bigint, encrypt: boolean): void {
    if (data.byteLength % sectorSize !== 0) throw new RangeError(`cbc: ${data.byteLength} bytes is not a whole number of ${sectorSize}-byte sectors`);
    const step = BigInt(sectorSize / 512);
    let sector = BigInt(firstIvSector);
    for (let at = 0; at < data.byteLength; at += sectorSize, sector += step) {
      const iv = this.#iv(sector);
      const c = encrypt ? createCipheriv(this.#algo, this.#key, iv) : createDecipheriv(this.#algo, this.#key, iv);
      c.setAutoPadding(false);
      const unit = data.subarray(at, at + sectorSize);
      const out = c.update(unit);
      c.final();
      unit.set(out);
      out.fill(0);
    }
  }

  destroy(): void {
    this.#key.fill(0);
    this.#essivKey?.fill(0);
  }
}
