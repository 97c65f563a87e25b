import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fc from 'fast-check';
import '../helpers/setup.ts';
import { MemoryDisk, type Disk } from '../../src/io/disk.ts';
import { CorruptImageError, LivestickError, UnsupportedFeatureError } from '../../src/errors.ts';
import { LuksVolume, WrongPassphraseError, type Luks2FormatOptions } from '../../src/xform/luks/index.ts';
import { readLuks2Pair, writeLuks2Pair, fieldsOf } from '../../src/xform/luks/luks2-header.ts';
import { decodeLuks2Binary, encodeLuks2Binary } from '../../src/xform/luks/luks2-binary.ts';
import type { JsonObject } from '../../src/xform/luks/luks2-metadata.ts';
import { enc, seededRandom } from './helpers.ts';

const MiB = 1 << 20;
/** Small and fast: pbkdf2 with the minimum cost, a 1 MiB data offset. */
export const FAST: Luks2FormatOptions = { kdf: { type: 'pbkdf2', iterations: 1000 }, digestIterations: 1000, dataOffset: MiB };

async function fresh(options: Luks2FormatOptions = {}, size = 2 * MiB): Promise<{ disk: MemoryDisk; vol: LuksVolume }> {
  const disk = new MemoryDisk(size);
  const vol = await LuksVolume.format(disk, enc('pw'), { ...FAST, random: seededRandom('fresh'), ...options });
  return { disk, vol };
}

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

test('format → open → payload round trip at any alignment; info reports the volume', async () => {
  const { disk, vol } = await fresh({ label: 'home', sectorSize: 4096 });
  const info = vol.info();
  assert.equal(info.version, 2);
  assert.equal(info.cipher, 'aes-xts-plain64');
  assert.equal(info.keySize, 64);
  assert.equal(info.sectorSize, 4096);
  assert.equal(info.label, 'home');
  assert.equal(info.payloadOffset, MiB);
  assert.equal(info.payloadSize, MiB);
  assert.equal(info.header, 'primary');
  assert.deepEqual(info.keyslots.map((k) => [k.id, k.kdf?.type, k.areaOffset, k.areaSize]), [[0, 'pbkdf2', 32768, 258048]]);
  assert.match(info.uuid, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);

  const reopened = await LuksVolume.open(disk);
  const payload = await reopened.openPayload(enc('pw'));
  const model = new Uint8Array(MiB);
  await payload.read(model, 0); // never-written sectors decrypt to noise
  const rnd = seededRandom('data');
  for (const [off, len] of [[0, 4096], [5000, 10000], [4095, 2], [MiB - 3, 3], [123, 70000]] as const) {
    const data = rnd(len);
    await payload.write(data, off);
    model.set(data, off);
  }
  const back = new Uint8Array(MiB);
  await payload.read(back, 0);
  assert.equal(sha(back), sha(model));
  const part = new Uint8Array(777);
  await payload.read(part, 4000);
  assert.deepEqual(part, model.subarray(4000, 4777));
  // Ciphertext: no plaintext block survives in the raw payload area.
  assert.notDeepEqual(disk.bytes.subarray(MiB, MiB + 4096), model.subarray(0, 4096));
  await assert.rejects(payload.read(new Uint8Array(2), MiB - 1), LivestickError);
  await payload.close();
  await assert.rejects(payload.read(new Uint8Array(1), 0), LivestickError);
});

test('format output is deterministic for a given random source and costs (pinned)', async () => {
  const a = await fresh({ random: seededRandom('pin'), sectorSize: 512 });
  const b = await fresh({ random: seededRandom('pin'), sectorSize: 512 });
  assert.equal(sha(a.disk.bytes), sha(b.disk.bytes));
  assert.equal(sha(a.disk.bytes), 'c0d55f0b5b5234d31b43f5c6125d6c491bd1c5e3db63e769612ff26e81619a5d');
  const c = await fresh({ random: seededRandom('pin2'), sectorSize: 512 });
  assert.notEqual(sha(a.disk.bytes), sha(c.disk.bytes));
});

test('wrong passphrase: typed WRONG_PASSPHRASE error', async () => {
  const { vol } = await fresh();
  await assert.rejects(vol.unlock(enc('pW')), (e: unknown) => e instanceof WrongPassphraseError && e.code === 'WRONG_PASSPHRASE' && e.exitCode === 77);
  await assert.rejects(vol.openPayload(enc('')), WrongPassphraseError);
  await assert.rejects(vol.unlock(enc('pw'), { keyslot: 3 }), WrongPassphraseError);
});

test('keyslots: add, change, remove; the last keyslot is not removed unless allowed', async () => {
  const { disk, vol } = await fresh({ dataOffset: 2 * MiB }, 3 * MiB);
  const { volumeKey } = await vol.unlock(enc('pw'));
  assert.equal(await vol.addKeyslot(enc('pw'), enc('two')), 1);
  assert.equal(await vol.addKeyslot(enc('two'), enc('three'), { kdf: { type: 'argon2id', time: 4, memory: 64, cpus: 1 } }), 2);
  assert.equal(vol.info().keyslots.find((k) => k.id === 2)?.kdf?.type, 'argon2id');
  assert.equal(await vol.changePassphrase(enc('pw'), enc('one')), 0);
  await assert.rejects(vol.unlock(enc('pw')), WrongPassphraseError);
  for (const [p, slot] of [['one', 0], ['two', 1], ['three', 2]] as const) {
    const r = await (await LuksVolume.open(disk)).unlock(enc(p));
    assert.equal(r.keyslot, slot);
    assert.deepEqual(r.volumeKey, volumeKey);
  }
  // Areas never overlap and the changed slot moved to a fresh area.
  const areas = vol.info().keyslots.map((k) => [k.areaOffset, k.areaOffset + k.areaSize] as const).sort((x, y) => x[0] - y[0]);
  for (let i = 1; i < areas.length; i++) assert.ok(areas[i]![0] >= areas[i - 1]![1]);
  assert.equal(await vol.removeKeyslot(enc('two')), 1);
  await assert.rejects(vol.unlock(enc('two')), WrongPassphraseError);
  await vol.killKeyslot(2, enc('one'));
  await assert.rejects(vol.removeKeyslot(enc('one')), /last one/);
  assert.equal((await vol.unlock(enc('one'))).keyslot, 0);
  assert.equal(await vol.removeKeyslot(enc('one'), { allowLast: true }), 0);
  assert.equal(vol.info().keyslots.length, 0);
  assert.equal(Number(vol.info().seqid), 7);
});

test('a damaged primary header falls back to the secondary, says so, and repairs', async () => {
  const { disk } = await fresh();
  for (const spot of [0, 100, 448, 5000, 16383]) {
    const bytes = new Uint8Array(disk.bytes);
    bytes[spot] = bytes[spot]! ^ 0x55;
    const d = new MemoryDisk(bytes);
    const vol = await LuksVolume.open(d);
    assert.equal(vol.info().header, 'secondary', `spot ${spot}`);
    assert.match(vol.warnings[0] ?? '', /primary LUKS2 header is damaged/);
    await vol.unlock(enc('pw'));
    assert.equal(await vol.repair(), 'primary');
    assert.deepEqual(vol.warnings, []);
    const again = await LuksVolume.open(d);
    assert.equal(again.info().header, 'primary');
  }
  // Both copies destroyed: a typed error.
  const bytes = new Uint8Array(disk.bytes);
  bytes[5000] = bytes[5000]! ^ 1;
  bytes[16384 + 5000] = bytes[16384 + 5000]! ^ 1;
  await assert.rejects(LuksVolume.open(new MemoryDisk(bytes)), CorruptImageError);
});

test('the header copy with the higher seqid wins', async () => {
  const { disk } = await fresh();
  const pair = await readLuks2Pair(disk);
  // Rewrite only the secondary with seqid+1 and a label change.
  const { writeLuks2Copy } = await import('../../src/xform/luks/luks2-header.ts');
  await writeLuks2Copy(disk, 'secondary', { ...fieldsOf(pair.active.binary), seqid: pair.active.binary.seqid + 1n, label: 'newer' }, pair.active.metadata.json);
  const vol = await LuksVolume.open(disk);
  assert.equal(vol.info().label, 'newer');
  assert.equal(vol.info().header, 'secondary');
  assert.match(vol.warnings.join(), /copies differ/);
});

async function withJson(mutate: (json: JsonObject) => void): Promise<MemoryDisk> {
  const { disk } = await fresh();
  const pair = await readLuks2Pair(disk);
  const json = structuredClone(pair.active.metadata.json);
  mutate(json);
  await writeLuks2Pair(disk, { ...fieldsOf(pair.active.binary), seqid: 9n }, json);
  return disk;
}

test('absurd KDF costs in a header are refused at unlock, before allocating', async () => {
  const cases: [string, (kdf: JsonObject) => void][] = [
    ['argon2 memory 4 TiB', (k) => Object.assign(k, { type: 'argon2id', time: 4, memory: 0xffffffff, cpus: 4, hash: undefined, iterations: undefined })],
    ['argon2 time 2^32-1', (k) => Object.assign(k, { type: 'argon2i', time: 0xffffffff, memory: 1048576, cpus: 4, hash: undefined, iterations: undefined })],
    ['pbkdf2 2^32-1 iterations', (k) => Object.assign(k, { iterations: 0xffffffff })],
  ];
  for (const [name, mutate] of cases) {
    const disk = await withJson((json) => {
      const kdf = ((json.keyslots as JsonObject)['0'] as JsonObject).kdf as JsonObject;
      mutate(kdf);
      for (const k of Object.keys(kdf)) if (kdf[k] === undefined) delete kdf[k];
    });
    const vol = await LuksVolume.open(disk);
    const t0 = performance.now();
    await assert.rejects(vol.unlock(enc('pw')), UnsupportedFeatureError, name);
    assert.ok(performance.now() - t0 < 200, name);
  }
  const digestCost = await withJson((json) => {
    ((json.digests as JsonObject)['0'] as JsonObject).iterations = 0xffffffff;
  });
  await assert.rejects((await LuksVolume.open(digestCost)).unlock(enc('pw')), UnsupportedFeatureError);
});

test('JSON that cryptsetup would reject is refused with a typed error naming the field', async () => {
  const cases: [RegExp, (json: JsonObject) => void][] = [
    [/keyslots\.0\.kdf/, (j) => { (((j.keyslots as JsonObject)['0'] as JsonObject).kdf as JsonObject).extra = 1; }],
    [/segments\.0\.offset/, (j) => { ((j.segments as JsonObject)['0'] as JsonObject).offset = '1000'; }],
    [/segments\.0\.size/, (j) => { ((j.segments as JsonObject)['0'] as JsonObject).size = '4096x'; }],
    [/sector_size/, (j) => { ((j.segments as JsonObject)['0'] as JsonObject).sector_size = 100; }],
    [/config\.json_size/, (j) => { (j.config as JsonObject).json_size = '4096'; }],
    [/keyslots_size/, (j) => { (j.config as JsonObject).keyslots_size = '999999999'; }],
    [/digests\.0\.keyslots/, (j) => { ((j.digests as JsonObject)['0'] as JsonObject).keyslots = ['5']; }],
    [/keyslots\.0\.area/, (j) => { (((j.keyslots as JsonObject)['0'] as JsonObject).area as JsonObject).offset = '4096'; }],
    [/keyslots\.0/, (j) => { ((j.digests as JsonObject)['0'] as JsonObject).keyslots = []; }],
    [/json\.tokens/, (j) => { delete j.tokens; }],
    [/keyslots/, (j) => { (j.keyslots as JsonObject)['x1'] = {}; }],
    [/area\.offset/, (j) => { (((j.keyslots as JsonObject)['0'] as JsonObject).area as JsonObject).offset = '18446744073709551616'; }],
  ];
  for (const [field, mutate] of cases) {
    const disk = await withJson(mutate).catch((e: unknown) => e);
    if (disk instanceof Error) {
      assert.fail(`writer refused before the test: ${disk.message}`);
    }
    await assert.rejects(LuksVolume.open(disk as Disk), (e: unknown) => e instanceof CorruptImageError && field.test(e.message), String(field));
  }
});

test('truncated volumes give typed errors', async () => {
  const { disk } = await fresh();
  for (const size of [0, 10, 600, 4096, 16384 + 100, 32768, 32768 + 1000, MiB - 1, MiB + 100]) {
    const d = new MemoryDisk(new Uint8Array(disk.bytes.subarray(0, size)));
    const attempt = async (): Promise<void> => {
      const vol = await LuksVolume.open(d);
      await (await vol.openPayload(enc('pw'))).close();
    };
    await assert.rejects(attempt(), (e: unknown) => e instanceof LivestickError && !(e instanceof WrongPassphraseError), `size ${size}`);
  }
});

async function neverCrashes(disk: Disk): Promise<void> {
  try {
    const vol = await LuksVolume.open(disk);
    vol.info();
    const p = await vol.openPayload(enc('pw'));
    await p.read(new Uint8Array(4096), 0);
    await p.close();
  } catch (e) {
    if (!(e instanceof LivestickError)) throw e;
  }
}

test('fuzz: random byte damage in both header copies never crashes', async () => {
  const { disk } = await fresh();
  const base = disk.bytes.slice(0, 2 * MiB);
  await fc.assert(
    fc.asyncProperty(fc.array(fc.tuple(fc.integer({ min: 0, max: 32767 }), fc.integer({ min: 1, max: 255 })), { minLength: 1, maxLength: 8 }), async (flips) => {
      const bytes = new Uint8Array(base);
      for (const [at, x] of flips) {
        bytes[at] = bytes[at]! ^ x;
        const mirror = at < 16384 ? at + 16384 : at - 16384; // damage the other copy the same way, so JSON errors are reached
        bytes[mirror] = bytes[mirror]! ^ x;
      }
      await neverCrashes(new MemoryDisk(bytes));
    }),
    { numRuns: 150 },
  );
});

const jsonValue = fc.oneof(
  fc.constant(null),
  fc.boolean(),
  fc.integer({ min: -5, max: 5000 }),
  fc.constantFrom(0xffffffff, 2 ** 53, -1, 1.5, 1e300),
  fc.constantFrom('', '0', '512', '4096', 'dynamic', '18446744073709551615', '99999999999999999999', 'AAAA', 'sha256', 'aes-xts-plain64', 'argon2id', 'pbkdf2'),
  fc.constant([]),
  fc.constant(['0']),
  fc.constant({}),
);

test('fuzz: validly check-summed headers with mutated JSON never crash', async () => {
  const { disk } = await fresh();
  const pair = await readLuks2Pair(disk);
  const baseJson = pair.active.metadata.json;
  const paths: string[][] = [];
  const walk = (v: unknown, path: string[]): void => {
    paths.push(path);
    if (v && typeof v === 'object') for (const [k, c] of Object.entries(v)) walk(c, [...path, k]);
  };
  walk(baseJson, []);
  await fc.assert(
    fc.asyncProperty(fc.array(fc.tuple(fc.constantFrom(...paths.filter((p) => p.length > 0)), jsonValue, fc.boolean()), { minLength: 1, maxLength: 4 }), async (edits) => {
      const json = structuredClone(baseJson) as Record<string, any>;
      for (const [path, value, del] of edits) {
        let o = json;
        for (const k of path.slice(0, -1)) o = o?.[k];
        if (o && typeof o === 'object') {
          if (del) delete o[path.at(-1)!];
          // A copy: fc.constant hands out one shared object, and assigning it twice would build a cycle
          // (and mutate the constant for later runs) — something JSON text can never hold.
          else o[path.at(-1)!] = structuredClone(value);
        }
      }
      const d = new MemoryDisk(new Uint8Array(disk.bytes));
      await writeLuks2Pair(d, { ...fieldsOf(pair.active.binary), seqid: 5n }, json as JsonObject);
      await neverCrashes(d);
    }),
    { numRuns: 150 },
  );
});

test('binary header encode/decode round trip; bad fields are typed errors', () => {
  const h = { copy: 'secondary' as const, hdrSize: 0x4000, seqid: 42n, label: 'lbl', checksumAlg: 'sha256', salt: new Uint8Array(64).fill(7), uuid: 'u', subsystem: 's', hdrOffset: 0x4000, csum: new Uint8Array(64).fill(1) };
  const d = decodeLuks2Binary(encodeLuks2Binary(h), 0x4000);
  assert.deepEqual({ ...d, version: undefined }, { ...h, version: undefined });
  assert.throws(() => decodeLuks2Binary(encodeLuks2Binary(h), 0), CorruptImageError);
  assert.throws(() => decodeLuks2Binary(encodeLuks2Binary({ ...h, hdrSize: 0x3000 }), 0x4000), CorruptImageError);
  assert.throws(() => decodeLuks2Binary(encodeLuks2Binary({ ...h, checksumAlg: 'md5' }), 0x4000), UnsupportedFeatureError);
  const noNul = encodeLuks2Binary(h);
  noNul.fill(0x41, 24, 72);
  assert.throws(() => decodeLuks2Binary(noNul, 0x4000), /label/);
});

test('absurdly deep JSON nesting in a large metadata area is a typed error, not a stack overflow', async () => {
  const { luks2Checksum } = await import('../../src/xform/luks/luks2-binary.ts');
  const disk = new MemoryDisk(3 * MiB);
  await LuksVolume.format(disk, enc('pw'), { ...FAST, dataOffset: 2 * MiB, metadataSize: 0x80000, random: seededRandom('deep') });
  const pair = await readLuks2Pair(disk);
  const json = structuredClone(pair.active.metadata.json);
  json.tokens = { '0': { type: 'x', keyslots: [], deep: 'PLACEHOLDER' } };
  const depth = 200_000;
  const text = JSON.stringify(json).replace('"PLACEHOLDER"', '['.repeat(depth) + ']'.repeat(depth));
  const area = new Uint8Array(0x80000 - 4096);
  area.set(new TextEncoder().encode(text));
  for (const [copy, offset] of [['primary', 0], ['secondary', 0x80000]] as const) {
    const h = { ...fieldsOf(pair.active.binary), copy, salt: new Uint8Array(64), hdrOffset: offset, seqid: 3n };
    const bin = encodeLuks2Binary({ ...h, csum: new Uint8Array(64) });
    await disk.write(encodeLuks2Binary({ ...h, csum: luks2Checksum('sha256', bin, area) }), offset);
    await disk.write(area, offset + 4096);
  }
  await assert.rejects(LuksVolume.open(disk), CorruptImageError);
});

test('a keyslot with a refused KDF cost does not block the other keyslots', async () => {
  const { disk, vol } = await fresh();
  await vol.addKeyslot(enc('pw'), enc('two'));
  const pair = await readLuks2Pair(disk);
  const json = structuredClone(pair.active.metadata.json);
  const kdf = ((json.keyslots as JsonObject)['0'] as JsonObject).kdf as JsonObject;
  Object.assign(kdf, { iterations: 0xffffffff });
  await writeLuks2Pair(disk, { ...fieldsOf(pair.active.binary), seqid: 20n }, json);
  const again = await LuksVolume.open(disk);
  assert.equal((await again.unlock(enc('two'))).keyslot, 1);
  await assert.rejects(again.unlock(enc('nope')), (e: unknown) => e instanceof WrongPassphraseError && /could not be tried/.test(e.message));
  await assert.rejects(again.unlock(enc('pw'), { keyslot: 0 }), UnsupportedFeatureError);
});
