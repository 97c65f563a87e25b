/**
 * Seed images for the fuzz suites, made by livestick's own writers (and, where the tools are
 * installed, by mksquashfs / mke2fs / cryptsetup). Every seed is small (≤ a few MiB) and uses cheap
 * KDF costs, so one case of the full read path costs milliseconds.
 */
import { pbkdf2Sync } from 'node:crypto';
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afSplit } from '../../src/xform/luks/af.ts';
import { createSectorCipher } from '../../src/xform/luks/crypt-disk.ts';
import { LUKS1_KEY_DISABLED, LUKS1_KEY_ENABLED } from '../../src/xform/luks/luks1.ts';
import { seededRandom } from '../luks/helpers.ts';
import type { Field } from './mutate.ts';

export const PASSPHRASE = new TextEncoder().encode('fuzz passphrase');

/** A LUKS1 volume (aes-xts-plain64, sha256, one active keyslot) built from the spec, with cheap costs. */
export function makeLuks1(options: { slotIterations?: number; digestIterations?: number; payloadBytes?: number; keyBytes?: 32 | 64; hash?: string } = {}): Uint8Array {
  const random = seededRandom('luks1 seed');
  const keyBytes = options.keyBytes ?? 32;
  const hash = options.hash ?? 'sha256';
  const slotIterations = options.slotIterations ?? 1000;
  const digestIterations = options.digestIterations ?? 1000;
  const materialSectors = Math.ceil((keyBytes * 4000) / 512);
  const slotStride = Math.ceil(materialSectors / 8) * 8;
  const payloadOffset = 8 + 8 * slotStride;
  const bytes = new Uint8Array(payloadOffset * 512 + (options.payloadBytes ?? 64 * 1024));
  const dv = new DataView(bytes.buffer);
  const ascii = (at: number, s: string) => bytes.set(new TextEncoder().encode(s), at);
  bytes.set([0x4c, 0x55, 0x4b, 0x53, 0xba, 0xbe], 0);
  dv.setUint16(6, 1, false);
  ascii(8, 'aes');
  ascii(40, 'xts-plain64');
  ascii(72, hash);
  dv.setUint32(104, payloadOffset, false);
  dv.setUint32(108, keyBytes, false);
  const volumeKey = random(keyBytes);
  const mkSalt = random(32);
  bytes.set(pbkdf2Sync(volumeKey, mkSalt, digestIterations, 20, hash), 112);
  bytes.set(mkSalt, 132);
  dv.setUint32(164, digestIterations, false);
  ascii(168, '0b5e1f1a-2c3d-4e5f-8a9b-0c1d2e3f4a5b');
  for (let i = 0; i < 8; i++) {
    const at = 208 + i * 48;
    const keyMaterialOffset = 8 + i * slotStride;
    dv.setUint32(at + 40, keyMaterialOffset, false);
    dv.setUint32(at + 44, 4000, false);
    if (i !== 0) {
      dv.setUint32(at, LUKS1_KEY_DISABLED, false);
      continue;
    }
    const salt = random(32);
    dv.setUint32(at, LUKS1_KEY_ENABLED, false);
    dv.setUint32(at + 4, slotIterations, false);
    bytes.set(salt, at + 8);
    const kek = pbkdf2Sync(PASSPHRASE, salt, slotIterations, keyBytes, hash);
    const material = new Uint8Array(materialSectors * 512);
    material.set(afSplit(volumeKey, 4000, hash, random));
    createSectorCipher('aes-xts-plain64', new Uint8Array(kek)).encrypt(material, 512, 0);
    bytes.set(material, keyMaterialOffset * 512);
  }
  // Some recognisable payload: sector n holds n, encrypted as dm-crypt would.
  const payload = bytes.subarray(payloadOffset * 512);
  for (let s = 0; s < payload.byteLength / 512; s++) new DataView(payload.buffer, payload.byteOffset).setUint32(s * 512, s, true);
  createSectorCipher('aes-xts-plain64', volumeKey).encrypt(payload, 512, 0);
  return bytes;
}

export const LUKS1_FIELDS: readonly Field[] = [
  { name: 'version', offset: 6, width: 2, bigEndian: true },
  { name: 'payloadOffset', offset: 104, width: 4, bigEndian: true },
  { name: 'keyBytes', offset: 108, width: 4, bigEndian: true },
  { name: 'mkDigestIterations', offset: 164, width: 4, bigEndian: true },
  ...Array.from({ length: 8 }, (_, i) => [
    { name: `keyslot ${i}.active`, offset: 208 + i * 48, width: 4 as const, bigEndian: true },
    { name: `keyslot ${i}.iterations`, offset: 212 + i * 48, width: 4 as const, bigEndian: true },
    { name: `keyslot ${i}.keyMaterialOffset`, offset: 248 + i * 48, width: 4 as const, bigEndian: true },
    { name: `keyslot ${i}.stripes`, offset: 252 + i * 48, width: 4 as const, bigEndian: true },
  ]).flat(),
];

/** A small source tree with the shapes parsers care about: nested dirs, many names, links, sparse and empty files. */
export function writeSourceTree(root: string): void {
  const rnd = (n: number, seed: number) => {
    const out = new Uint8Array(n);
    let x = seed * 2654435761;
    for (let i = 0; i < n; i++) {
      x = (x ^ (x << 13)) >>> 0;
      x = (x ^ (x >>> 17)) >>> 0;
      x = (x ^ (x << 5)) >>> 0;
      out[i] = x & 0xff;
    }
    return out;
  };
  mkdirSync(join(root, 'a/b/c'), { recursive: true });
  mkdirSync(join(root, 'many'), { recursive: true });
  for (let i = 0; i < 70; i++) writeFileSync(join(root, 'many', `entry-with-a-long-name-${i}`), rnd(i * 37, i + 1));
  writeFileSync(join(root, 'a/b/c/big'), rnd(300_000, 7));
  writeFileSync(join(root, 'a/text'), 'hello fuzz\n'.repeat(50));
  writeFileSync(join(root, 'a/empty'), '');
  writeFileSync(join(root, 'zeros'), new Uint8Array(200_000));
  symlinkSync('a/b/c/big', join(root, 'link'));
  symlinkSync('x'.repeat(120), join(root, 'longlink'));
}
