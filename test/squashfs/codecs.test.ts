/*
 * The wasm block codecs (liblzma, libzstd, libdeflate's compressor): round trips, BCJ chains, pinned encoder output, the
 * bounds the decoders enforce, and the native command-line tools (xz-utils, zstd) as oracles for
 * both directions.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import '../helpers/setup.ts';
import { CorruptImageError } from '../../src/errors.ts';
import { xzFromSettings } from '../../src/fs/squashfs/comp/xz.ts';
import { zstdFromSettings } from '../../src/fs/squashfs/comp/zstd.ts';
import { gzipFromSettings } from '../../src/fs/squashfs/comp/gzip.ts';
import { lz4FromSettings } from '../../src/fs/squashfs/comp/lz4.ts';
import { inflateSync } from 'node:zlib';
import type { Compressor } from '../../src/fs/squashfs/comp/types.ts';
import { missingTools } from '../helpers/tools.ts';

const BLOCK = 131072;

/** Text-like, compressible bytes with some x86-looking call instructions. */
function sample(size: number, seed: number): Uint8Array {
  const out = new Uint8Array(size);
  let s = seed >>> 0;
  for (let i = 0; i < size; i++) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    out[i] = i % 61 === 0 ? 0xe8 : 97 + ((s >>> 16) % 7);
  }
  return out;
}

test('xz codec: round trips, with and without BCJ filters, and keeps the smallest chain', () => {
  const plain = xzFromSettings({}, BLOCK);
  const bcj = xzFromSettings({ bcj: ['x86', 'arm'] }, BLOCK);
  assert.equal(plain.options, undefined, 'defaults store no options, as mksquashfs');
  assert.deepEqual([...(bcj.options ?? [])], [0, 0, 2, 0, 1 | 8, 0, 0, 0]);
  const data = sample(BLOCK, 1);
  const a = plain.compress(data);
  const b = bcj.compress(data);
  assert.ok(a.byteLength < data.byteLength / 2);
  assert.ok(b.byteLength <= a.byteLength, 'a BCJ chain is only kept when smaller');
  assert.deepEqual(plain.decompress(a, BLOCK), data);
  assert.deepEqual(bcj.decompress(b, BLOCK), data);
});

const pinned: Array<[string, Compressor, string]> = [
  ['xz', xzFromSettings({}, BLOCK), '7980d9078a63c47068d6e391f895f4068e985a670748c50c3fa3de2f23d85360'],
  ['gzip', gzipFromSettings({}), 'e515abe6aa05cea2bf0a1f4918f1f27f36be2787e8aece5f1ea38db16da969fd'],
  ['zstd', zstdFromSettings({}), '882b5bc14003d1eb873ce85ed528d44a299f65f9aed671c7eafd23add2586b32'],
];
for (const [name, c, hash] of pinned) {
  test(`${name} codec: the encoder output is pinned, and incompressible input is handed back for storing raw`, () => {
    // A change means a different library build (wasm/build-*.sh); check the oracle suites first.
    assert.equal(createHash('sha256').update(c.compress(sample(BLOCK, 7))).digest('hex'), hash);
    const noise = new Uint8Array(BLOCK);
    for (let i = 0; i < noise.length; i += 64) noise.set(createHash('sha512').update(String(i)).digest(), i);
    assert.equal(c.compress(noise).byteLength >= noise.byteLength, true);
  });
}

test('xz and zstd codecs: property: any bytes round trip at any level and a 4K..1M block size', () => {
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 0, maxLength: 20000 }), fc.boolean(), fc.integer({ min: 0, max: 9 }), fc.integer({ min: 12, max: 20 }), (data, xz, level, log) => {
      const c = xz ? xzFromSettings({ level }, 2 ** log) : zstdFromSettings({ level: level * 2 + 1 });
      const block = data.subarray(0, 2 ** log);
      const out = c.compress(block);
      if (out.byteLength < block.byteLength) assert.deepEqual(c.decompress(out, block.byteLength), block);
    }),
    { numRuns: 80 },
  );
});

test('xz codec: corrupt, truncated, padded or oversized streams are typed errors', () => {
  const c = xzFromSettings({}, BLOCK);
  const data = sample(BLOCK, 3);
  const good = c.compress(data);
  const flip = good.slice();
  const mid = Math.floor(flip.length / 2);
  flip[mid] = (flip[mid] as number) ^ 0x40;
  const cases: Array<[string, Uint8Array, number]> = [
    ['truncated', good.subarray(0, good.length - 5), BLOCK],
    ['trailing byte', Buffer.concat([good, Buffer.from([0])]), BLOCK],
    ['bit flip', flip, BLOCK],
    ['output past the limit', good, BLOCK - 1],
    ['not xz', Buffer.from('definitely not an xz stream'), BLOCK],
    ['empty', new Uint8Array(0), BLOCK],
  ];
  for (const [what, bytes, max] of cases) {
    assert.throws(() => c.decompress(bytes, max), (e: unknown) => e instanceof CorruptImageError && /xz/.test(e.message), what);
  }
  // A stream that declares a 64 MiB dictionary needs more decoder memory than a 128 KiB block allows.
  const big = xzFromSettings({ dictSize: 64 << 20 }, 128 << 20).compress(data);
  assert.throws(() => c.decompress(big, BLOCK), /memory limit/);
});

const noXz = missingTools('xz');
test('xz codec: xz-utils decodes our blocks and we decode its streams', { skip: noXz }, () => {
  const c = xzFromSettings({ bcj: ['x86'] }, BLOCK);
  const data = sample(BLOCK, 11);
  const ours = c.compress(data);
  const d = spawnSync('xz', ['-dc', '--single-stream'], { input: ours });
  assert.equal(d.status, 0, d.stderr.toString());
  assert.deepEqual(new Uint8Array(d.stdout), data);
  const theirs = spawnSync('xz', ['-zc', '--check=crc32', '--lzma2=preset=6,dict=128KiB'], { input: data });
  assert.equal(theirs.status, 0, theirs.stderr.toString());
  assert.deepEqual(c.decompress(new Uint8Array(theirs.stdout), BLOCK), data);
});

test('zstd codec: corrupt, truncated, padded or oversized frames are typed errors', () => {
  const c = zstdFromSettings({});
  const data = sample(BLOCK, 5);
  const good = c.compress(data);
  assert.deepEqual(c.decompress(good, BLOCK), data);
  const flip = good.slice();
  const mid = Math.floor(flip.length / 2);
  flip[mid] = (flip[mid] as number) ^ 0x40;
  const cases: Array<[string, Uint8Array, number]> = [
    ['truncated', good.subarray(0, good.length - 3), BLOCK],
    ['trailing byte', Buffer.concat([good, Buffer.from([0])]), BLOCK],
    ['two frames', Buffer.concat([good, good]), 2 * BLOCK],
    ['output past the limit', good, BLOCK - 1],
    ['not zstd', Buffer.from('definitely not a zstd frame'), BLOCK],
    ['empty', new Uint8Array(0), BLOCK],
  ];
  for (const [what, bytes, max] of cases) {
    assert.throws(() => c.decompress(bytes, max), (e: unknown) => e instanceof CorruptImageError && /zstd/.test(e.message), what);
  }
  // A bit flip either fails the frame's checks or changes the content; it never goes unbounded.
  try {
    assert.ok(c.decompress(flip, BLOCK).byteLength <= BLOCK);
  } catch (e) {
    assert.ok(e instanceof CorruptImageError);
  }
});

const noZstd = missingTools('zstd');
test('zstd codec: the zstd tool decodes our frames, and we decode its frames with and without a content size', { skip: noZstd }, () => {
  const c = zstdFromSettings({});
  const data = sample(BLOCK, 13);
  const d = spawnSync('zstd', ['-dc'], { input: c.compress(data) });
  assert.equal(d.status, 0, d.stderr.toString());
  assert.deepEqual(new Uint8Array(d.stdout), data);
  const dir = mkdtempSync(join(tmpdir(), 'livestick-zstd-'));
  try {
    writeFileSync(join(dir, 'block'), data);
    const sized = spawnSync('zstd', ['-15', '-c', join(dir, 'block')]);
    const unsized = spawnSync('zstd', ['-15', '-c'], { input: data });
    const declaresSize = (frame: Buffer): boolean => ((frame[4] as number) & 0xe0) !== 0;
    assert.equal(declaresSize(sized.stdout), true);
    assert.equal(declaresSize(unsized.stdout), false);
    for (const r of [sized, unsized]) {
      assert.equal(r.status, 0, r.stderr.toString());
      assert.deepEqual(c.decompress(new Uint8Array(r.stdout), BLOCK), data);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('gzip codec: libdeflate streams inflate with zlib at every level; a non-default window goes through zlib', () => {
  const data = sample(BLOCK, 17);
  let previous = Infinity;
  for (const level of [1, 5, 9]) {
    const c = gzipFromSettings({ level });
    const out = c.compress(data);
    assert.deepEqual(new Uint8Array(inflateSync(out)), data, `level ${level}`);
    assert.deepEqual(new Uint8Array(c.decompress(out, BLOCK)), data);
    assert.ok(out.byteLength <= previous * 1.01, 'higher levels are not meaningfully larger');
    previous = out.byteLength;
  }
  const narrow = gzipFromSettings({ window: 10 });
  const out = narrow.compress(data);
  assert.equal(out[0] === undefined ? -1 : (out[0] >> 4) + 8, 10, 'the zlib header records the 1 KiB window');
  assert.deepEqual(new Uint8Array(narrow.decompress(out, BLOCK)), data);
});

test('transient decoding (worker extraction) returns the same bytes as decompress, for every codec', () => {
  const data = sample(BLOCK, 19);
  const codecs: Compressor[] = [xzFromSettings({}, BLOCK), zstdFromSettings({}), lz4FromSettings({}), gzipFromSettings({})];
  for (const c of codecs) {
    const packed = c.compress(data);
    const other = c.compress(sample(BLOCK, 23));
    assert.ok(c.decompressTransient !== undefined, c.name);
    assert.deepEqual(new Uint8Array(c.decompressTransient(packed, BLOCK)), data, c.name);
    const view = c.decompressTransient(other, BLOCK);
    assert.deepEqual(new Uint8Array(view), sample(BLOCK, 23), `${c.name}: a second block reuses the memory`);
    assert.throws(() => c.decompressTransient?.(packed.subarray(0, packed.length - 4), BLOCK), CorruptImageError, c.name);
  }
});
