/** Shared by the LUKS tests: a seeded random source, an independent dm-crypt reference, cryptsetup calls. */
import { createCipheriv, createDecipheriv, createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { run } from '../helpers/tools.ts';

/** A deterministic byte stream (AES-256-CTR keystream of a seed), for pinned-hash tests. */
export function seededRandom(seed: string): (n: number) => Uint8Array {
  const key = createHash('sha256').update(seed).digest();
  const c = createCipheriv('aes-256-ctr', key, Buffer.alloc(16));
  return (n) => new Uint8Array(c.update(Buffer.alloc(n)));
}

/**
 * dm-crypt's aes-xts-plain64 computed the plain way, independently of src/xform/luks/xts.ts: one
 * node:crypto (OpenSSL) aes-xts context per encryption sector, IV = little-endian 64-bit number of the
 * sector's first 512-byte unit counted from the segment start, zero-padded to 16 bytes.
 */
export function referenceXts(key: Uint8Array, data: Uint8Array, sectorSize: number, firstByte: number, encrypt: boolean): Uint8Array {
  const algo = key.byteLength === 32 ? 'aes-128-xts' : 'aes-256-xts';
  const out = new Uint8Array(data.byteLength);
  for (let at = 0; at < data.byteLength; at += sectorSize) {
    const iv = Buffer.alloc(16);
    iv.writeBigUInt64LE(BigInt((firstByte + at) / 512));
    const c = encrypt ? createCipheriv(algo, key, iv) : createDecipheriv(algo, key, iv);
    out.set(c.update(data.subarray(at, at + sectorSize)), at);
    c.final();
  }
  return out;
}


export function passFile(dir: string, name: string, pass: string | Uint8Array): string {
  const p = join(dir, name);
  writeFileSync(p, pass);
  return p;
}

/** The volume key cryptsetup recovers with this key file (`luksDump --dump-volume-key`). */
export function cryptsetupVolumeKey(image: string, keyFile: string): Uint8Array {
  const out = run('cryptsetup', ['luksDump', '--dump-volume-key', '--batch-mode', '--key-file', keyFile, image]).stdout;
  const m = /MK dump:\s*((?:[0-9a-f]{2}\s+)+)/.exec(out);
  if (!m) throw new Error(`no MK dump in cryptsetup output:\n${out}`);
  return new Uint8Array(Buffer.from(m[1]!.replace(/\s+/g, ''), 'hex'));
}

export function cryptsetupTestPassphrase(image: string, keyFile: string): number {
  return run('cryptsetup', ['open', '--test-passphrase', '--key-file', keyFile, image], { allowFail: true }).status;
}

export function cryptsetupJson(image: string): Record<string, any> {
  return JSON.parse(run('cryptsetup', ['luksDump', '--dump-json-metadata', image]).stdout);
}

export const enc = (s: string): Uint8Array => new TextEncoder().encode(s);

/** dm-crypt's aes-cbc-essiv:sha256, written out independently: IV = AES-256-ECB_{sha256(key)}(LE64 sector ‖ 0^8). */
export function referenceCbcEssiv(key: Uint8Array, data: Uint8Array, firstByte: number): Uint8Array {
  const salt = createHash('sha256').update(key).digest();
  const out = new Uint8Array(data.byteLength);
  for (let at = 0; at < data.byteLength; at += 512) {
    const block = Buffer.alloc(16);
    block.writeBigUInt64LE(BigInt((firstByte + at) / 512));
    const e = createCipheriv('aes-256-ecb', salt, null).setAutoPadding(false);
    const iv = e.update(block);
    const c = createCipheriv(`aes-${key.byteLength * 8}-cbc`, key, iv).setAutoPadding(false);
    out.set(c.update(data.subarray(at, at + 512)), at);
  }
  return out;
}
