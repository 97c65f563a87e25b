/**
 * The LUKS anti-forensic splitter: a key of `blockSize` bytes is spread over `stripes` blocks so that
 * losing any one block (a wiped sector) loses the key. diffuse() hashes the block in digest-sized
 * chunks, each prefixed with its big-endian 32-bit index; a short last chunk keeps only its length.
 */
import * as nodeCrypto from 'node:crypto';
import { createHash } from 'node:crypto';
import { UnsupportedFeatureError } from '../../errors.ts';

export const LUKS_STRIPES = 4000;

const DIGEST_SIZES: Record<string, number> = { sha1: 20, sha224: 28, sha256: 32, sha384: 48, sha512: 64, ripemd160: 20, 'sha3-256': 32, 'sha3-512': 64 };

export function digestSize(hash: string): number {
  const size = DIGEST_SIZES[hash];
  if (size === undefined) throw new UnsupportedFeatureError('luks', 'hash', hash);
  return size;
}

function diffuse(block: Uint8Array, hash: string, dsize: number): void {
  // One-shot hashing of (BE32 index ‖ chunk): crypto.hash avoids a Hash object per chunk (8000 per keyslot).
  const input = Buffer.alloc(4 + dsize);
  for (let i = 0, at = 0; at < block.byteLength; i++, at += dsize) {
    const len = Math.min(dsize, block.byteLength - at);
    input.writeUInt32BE(i, 0);
    input.set(block.subarray(at, at + len), 4);
    const d = oneShot(hash, input.subarray(0, 4 + len));
    block.set(d.subarray(0, len), at);
    d.fill(0);
  }
  input.fill(0);
}

const hasOneShot = typeof (nodeCrypto as { hash?: unknown }).hash === 'function';
function oneShot(hash: string, data: Uint8Array): Buffer {
  if (hasOneShot) return (nodeCrypto as unknown as { hash(a: string, d: Uint8Array, e: 'buffer'): Buffer }).hash(hash, data, 'buffer');
  return createHash(hash).update(data).digest();
}

function xorInto(target: Uint8Array, a: Uint8Array): void {
  for (let i = 0; i < target.byteLength; i++) target[i] = target[i]! ^ a[i]!;
}

/** Splits `key` into stripes × key.length bytes; `random(n)` supplies the random stripes. */
export function afSplit(key: Uint8Array, stripes: number, hash: string, random: (n: number) => Uint8Array): Uint8Array {
  const bs = key.byteLength;
  const dsize = digestSize(hash);
  const out = new Uint8Array(bs * stripes);
  out.set(random(bs * (stripes - 1)));
  const d = new Uint8Array(bs);
  for (let i = 0; i < stripes - 1; i++) {
    xorInto(d, out.subarray(i * bs, (i + 1) * bs));
    diffuse(d, hash, dsize);
  }
  const last = out.subarray((stripes - 1) * bs);
  for (let i = 0; i < bs; i++) last[i] = key[i]! ^ d[i]!;
  d.fill(0);
  return out;
}

/** Recovers the key of `blockSize` bytes from split material (at least stripes × blockSize bytes). */
export function afMerge(material: Uint8Array, blockSize: number, stripes: number, hash: string): Uint8Array {
  const dsize = digestSize(hash);
  if (material.byteLength < blockSize * stripes) throw new RangeError('af: material is shorter than stripes × key size');
  const d = new Uint8Array(blockSize);
  for (let i = 0; i < stripes - 1; i++) {
    xorInto(d, material.subarray(i * blockSize, (i + 1) * blockSize));
    diffuse(d, hash, dsize);
  }
  xorInto(d, material.subarray((stripes - 1) * blockSize, stripes * blockSize));
  return d;
}
