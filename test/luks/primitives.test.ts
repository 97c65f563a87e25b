import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, pbkdf2Sync, randomBytes } from 'node:crypto';
import fc from 'fast-check';
import '../helpers/setup.ts';
import { XtsCipher } from '../../src/xform/luks/xts.ts';
import { afMerge, afSplit } from '../../src/xform/luks/af.ts';
import { checkKdfCost, defaultKdfLimits, deriveKey, useArgon2Backend } from '../../src/xform/luks/kdf.ts';
import { LivestickError } from '../../src/errors.ts';
import { referenceXts, seededRandom } from './helpers.ts';

test('batched aes-xts equals per-sector OpenSSL xts (plain64, 512 and 4096 sectors, 256/512-bit keys)', () => {
  fc.assert(
    fc.property(
      fc.constantFrom(32, 64),
      fc.constantFrom(512, 1024, 4096),
      fc.integer({ min: 1, max: 6 }),
      fc.integer({ min: 0, max: 2 ** 40 }),
      fc.integer({ min: 0, max: 3 }),
      (keySize, sectorSize, units, firstUnit, misalign) => {
        const key = randomBytes(keySize);
        const plain = randomBytes(sectorSize * units + misalign).subarray(misalign); // odd byteOffset exercises the copy path
        const firstByte = firstUnit * sectorSize;
        const mine = new Uint8Array(plain);
        const cipher = new XtsCipher(key);
        cipher.encrypt(mine, sectorSize, firstByte / 512);
        assert.deepEqual(Buffer.from(mine), Buffer.from(referenceXts(key, plain, sectorSize, firstByte, true)));
        cipher.decrypt(mine, sectorSize, firstByte / 512);
        assert.deepEqual(Buffer.from(mine), Buffer.from(plain));
      },
    ),
    { numRuns: 60 },
  );
});

test('4096-byte sectors use the 512-byte sector number as IV (not the 4K index)', () => {
  const key = randomBytes(64);
  const data = randomBytes(8192);
  const a = new Uint8Array(data);
  new XtsCipher(key).encrypt(a, 4096, 0);
  // The second 4K unit is encrypted with IV 8, i.e. the same as a 4K unit starting at 512-sector 8 alone.
  const b = new Uint8Array(data.subarray(4096));
  new XtsCipher(key).encrypt(b, 4096, 8);
  assert.deepEqual(a.subarray(4096), b);
  const c = new Uint8Array(data.subarray(4096));
  new XtsCipher(key).encrypt(c, 4096, 1);
  assert.notDeepEqual(a.subarray(4096), c);
});

test('xts keys with equal halves still work (OpenSSL refuses them; the batched path does not)', () => {
  const half = randomBytes(32);
  const key = Buffer.concat([half, half]);
  const data = randomBytes(8192);
  const x = new Uint8Array(data);
  new XtsCipher(key).encrypt(x, 4096, 0);
  new XtsCipher(key).decrypt(x, 4096, 0);
  assert.deepEqual(Buffer.from(x), data);
});

/** The AF splitter written out from the LUKS1 specification, as an independent check. */
function specMerge(material: Uint8Array, bs: number, stripes: number, hash: string): Uint8Array {
  const dsize = createHash(hash).digest().length;
  let d = Buffer.alloc(bs);
  for (let i = 0; i < stripes - 1; i++) {
    const x = Buffer.alloc(bs);
    for (let j = 0; j < bs; j++) x[j] = d[j]! ^ material[i * bs + j]!;
    const parts: Buffer[] = [];
    for (let k = 0; k * dsize < bs; k++) {
      const chunk = x.subarray(k * dsize, Math.min(bs, (k + 1) * dsize));
      const idx = Buffer.alloc(4);
      idx.writeUInt32BE(k);
      parts.push(createHash(hash).update(idx).update(chunk).digest().subarray(0, chunk.length));
    }
    d = Buffer.concat(parts);
  }
  const out = Buffer.alloc(bs);
  for (let j = 0; j < bs; j++) out[j] = d[j]! ^ material[(stripes - 1) * bs + j]!;
  return out;
}

test('AF split/merge round-trips and matches the specification (sha1, sha256, sha512; 32/64-byte keys)', () => {
  for (const hash of ['sha1', 'sha256', 'sha512']) {
    for (const bs of [32, 64, 20]) {
      const key = randomBytes(bs);
      const split = afSplit(key, 50, hash, seededRandom(`${hash}${bs}`));
      assert.equal(split.byteLength, 50 * bs);
      assert.deepEqual(Buffer.from(afMerge(split, bs, 50, hash)), key);
      assert.deepEqual(specMerge(split, bs, 50, hash), key);
      const damaged = new Uint8Array(split);
      damaged[7] = damaged[7]! ^ 1;
      assert.notDeepEqual(Buffer.from(afMerge(damaged, bs, 50, hash)), key);
    }
  }
});

test('argon2: the native and wasm backends agree (argon2i, argon2id)', async () => {
  const salt = randomBytes(32);
  const pw = Buffer.from('correct horse');
  for (const type of ['argon2i', 'argon2id'] as const) {
    const kdf = { type, time: 4, memory: 1024, cpus: 2, salt };
    useArgon2Backend('native');
    const a = await deriveKey(kdf, pw, 64);
    useArgon2Backend('wasm');
    const b = await deriveKey(kdf, pw, 64);
    useArgon2Backend('native');
    assert.deepEqual(Buffer.from(a), Buffer.from(b));
    assert.equal(a.byteLength, 64);
  }
});

test('pbkdf2 matches node:crypto (sha1/sha256/sha512)', async () => {
  for (const hash of ['sha1', 'sha256', 'sha512']) {
    const salt = randomBytes(32);
    const got = await deriveKey({ type: 'pbkdf2', hash, iterations: 1000, salt }, Buffer.from('pw'), 32);
    assert.deepEqual(Buffer.from(got), pbkdf2Sync('pw', salt, 1000, 32, hash));
  }
});

test('absurd KDF costs are refused before computing', async () => {
  const salt = new Uint8Array(32);
  const limits = defaultKdfLimits();
  const absurd = [
    { type: 'argon2id' as const, time: 4, memory: 0xffffffff, cpus: 4, salt },
    { type: 'argon2id' as const, time: 0xffffffff, memory: 1024, cpus: 4, salt },
    { type: 'argon2i' as const, time: 4, memory: 1024, cpus: 100000, salt },
    { type: 'argon2i' as const, time: 0, memory: 1024, cpus: 1, salt },
    { type: 'argon2i' as const, time: 1, memory: 8, cpus: 4, salt },
    { type: 'pbkdf2' as const, hash: 'sha256', iterations: 0xffffffff, salt },
    { type: 'pbkdf2' as const, hash: 'nohash', iterations: 1000, salt },
  ];
  for (const kdf of absurd) {
    const t0 = performance.now();
    await assert.rejects(deriveKey(kdf, new Uint8Array(1), 32), (e) => e instanceof LivestickError, JSON.stringify({ ...kdf, salt: undefined }));
    assert.ok(performance.now() - t0 < 100);
    assert.throws(() => checkKdfCost(kdf, limits), LivestickError);
  }
});

test('aes-cbc-essiv:sha256 equals the written-out dm-crypt reference and round-trips', async () => {
  const { CbcCipher } = await import('../../src/xform/luks/cbc.ts');
  const { referenceCbcEssiv } = await import('./helpers.ts');
  for (const keySize of [16, 32]) {
    const key = randomBytes(keySize);
    const plain = randomBytes(4 * 512);
    const mine = new Uint8Array(plain);
    const c = new CbcCipher(key, 'essiv:sha256');
    c.encrypt(mine, 512, 10);
    assert.deepEqual(Buffer.from(mine), Buffer.from(referenceCbcEssiv(key, plain, 10 * 512)));
    c.decrypt(mine, 512, 10);
    assert.deepEqual(Buffer.from(mine), plain);
  }
});

test('KDF benchmark picks cryptsetup-like costs within bounds', async () => {
  const { resolveKdf } = await import('../../src/xform/luks/index.ts');
  const { benchmarkArgon2 } = await import('../../src/xform/luks/kdf.ts');
  const rnd = (n: number): Uint8Array => new Uint8Array(n);
  const a = await resolveKdf({ type: 'argon2id', memory: 4096, cpus: 1, iterTimeMs: 100 }, 64, rnd);
  assert.ok(a.type === 'argon2id' && a.time >= 4 && a.memory === 4096 && a.cpus === 1);
  const p = await resolveKdf({ type: 'pbkdf2', iterTimeMs: 50 }, 64, rnd);
  assert.ok(p.type === 'pbkdf2' && p.iterations >= 1000 && p.hash === 'sha256');
  // An impossible target lowers the memory (never below 32 MiB) and keeps 4 passes.
  const low = await benchmarkArgon2({ type: 'argon2id', time: 4, memory: 64 * 1024, cpus: 1, salt: new Uint8Array(32) }, 64, 1, true);
  assert.deepEqual(low, { time: 4, memory: 32 * 1024 });
});

test('encrypting into a separate buffer leaves the input alone and gives the same ciphertext', () => {
  for (const sectorSize of [512, 4096]) {
    const key = randomBytes(64);
    const plain = randomBytes(3 * 4096);
    const keep = Buffer.from(plain);
    const out = new Uint8Array(plain.length);
    new XtsCipher(key).encrypt(plain, sectorSize, 8, out);
    assert.deepEqual(plain, keep);
    assert.deepEqual(Buffer.from(out), Buffer.from(referenceXts(key, plain, sectorSize, 8 * 512, true)));
  }
});
