/*
 * The prebuilt native addon (native/): it loads where we ship a binary; its libzstd, liblzma and
 * libdeflate write the same bytes as their wasm builds and read each other's output; its zlib decoder
 * reads what zlib reads; bad input and bad arguments are errors, never a crash; LIVESTICK_NATIVE=0 switches it off.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fc from 'fast-check';
import '../helpers/setup.ts';
import { CorruptImageError } from '../../src/errors.ts';
import { nativeCodecs, nativeStatus } from '../../src/fs/squashfs/comp/native.ts';
import { nativeZstdDecode, nativeZstdEncode, wasmZstdDecode, wasmZstdEncode, ZstdError } from '../../src/fs/squashfs/comp/libzstd.ts';
import { zstdFromSettings } from '../../src/fs/squashfs/comp/zstd.ts';
import { LzmaError, microLzmaDecode, microLzmaEncode, nativeXzDecode, nativeXzEncode, wasmMicroLzmaDecode, wasmMicroLzmaEncode, wasmXzDecode, wasmXzEncode } from '../../src/fs/squashfs/comp/liblzma.ts';
import { nativeInflate } from '../../src/fs/squashfs/comp/gzip.ts';
import { nativeZlibEncode, wasmZlibEncode, zlibEncode } from '../../src/fs/squashfs/comp/libdeflate.ts';
import { deflateSync, inflateSync } from 'node:zlib';
import { fileURLToPath } from 'node:url';
import { imageHash, sample, VARIANTS } from '../helpers/codec-images.ts';

const shipped = process.platform === 'linux' && process.arch === 'x64';
const native = nativeCodecs();

test('the native addon loads where a prebuilt binary ships (linux-x64), unless LIVESTICK_NATIVE=0', () => {
  if (process.env['LIVESTICK_NATIVE'] === '0') assert.equal(native, undefined);
  else if (shipped) assert.ok(native, `native codecs inactive: ${nativeStatus().why}`);
  else assert.equal(native, undefined, 'no binary for this platform');
});

test('native and wasm libzstd: the same bytes at every level, and each decodes the other', { skip: native === undefined && 'no native addon here' }, () => {
  const n = native!;
  fc.assert(
    fc.property(fc.oneof(fc.integer({ min: 0, max: 2000 }), fc.integer({ min: 0, max: 200_000 })), fc.integer({ min: 1, max: 22 }), fc.integer({ min: 0, max: 1000 }), (size, level, seed) => {
      const data = sample(size, seed);
      const a = nativeZstdEncode(n, data, level);
      const b = wasmZstdEncode(data, level);
      assert.deepEqual(a, b);
      if (a === undefined) return;
      assert.deepEqual(nativeZstdDecode(n, a, size), data);
      assert.deepEqual(wasmZstdDecode(a, size), data);
      assert.deepEqual(nativeZstdDecode(n, a, size, true), data);
    }),
    { numRuns: 60 },
  );
  // Every level over sizes from a metadata fragment to past a block; 360 bytes at levels 13+ once
  // found a 32/64-bit difference near a tight output limit.
  for (let size = 16; size < 300_000; size += size < 8192 ? Math.ceil(size / 16) : Math.ceil(size / 4)) {
    const data = sample(size, size);
    for (let level = 1; level <= 22; level += size > 50_000 ? 3 : 1) assert.deepEqual(nativeZstdEncode(n, data, level), wasmZstdEncode(data, level), `${size} bytes, level ${level}`);
  }
  // Incompressible input is handed back; the output buffer bounds the frame.
  const noise = new Uint8Array(131072);
  for (let i = 0; i < noise.length; i += 64) noise.set(createHash('sha512').update(String(i)).digest(), i);
  assert.equal(nativeZstdEncode(n, noise, 15), undefined);
  assert.equal(nativeZstdEncode(n, new Uint8Array(1), 15), undefined);
});

test('native libzstd: bad frames are errors, and wrong arguments are TypeErrors, never a crash', { skip: native === undefined && 'no native addon here' }, () => {
  const n = native!;
  const data = sample(131072, 3);
  const good = nativeZstdEncode(n, data, 15)!;
  for (const [what, bytes, max] of [
    ['truncated', good.subarray(0, good.length - 3), 131072],
    ['trailing byte', Buffer.concat([good, Buffer.from([0])]), 131072],
    ['two frames', Buffer.concat([good, good]), 262144],
    ['output past the limit', good, 131071],
    ['not zstd', Buffer.from('not a zstd frame at all'), 131072],
    ['empty', new Uint8Array(0), 131072],
  ] as const) {
    assert.throws(() => nativeZstdDecode(n, bytes, max), ZstdError, what);
    assert.throws(() => zstdFromSettings({}).decompress(bytes, max), CorruptImageError, what);
  }
  assert.throws(() => n.zstdEncode(15, 'text' as unknown as Uint8Array, new Uint8Array(10)), TypeError);
  assert.throws(() => n.zstdDecode(new Uint8Array(4), new Uint16Array(4) as unknown as Uint8Array), TypeError);
  assert.throws(() => (n.zstdEncode as unknown as (l: unknown) => number)('x'), TypeError);
  assert.match(n.zstdError(70), /\w/);
});

test('native and wasm libdeflate: the same zlib streams at every level, which zlib reads', { skip: native === undefined && 'no native addon here' }, () => {
  const n = native!;
  fc.assert(
    fc.property(fc.oneof(fc.integer({ min: 0, max: 3000 }), fc.integer({ min: 0, max: 200_000 })), fc.integer({ min: 0, max: 12 }), fc.integer({ min: 0, max: 1000 }), (size, level, seed) => {
      const data = sample(size, seed);
      const a = nativeZlibEncode(n, data, level);
      assert.deepEqual(a, wasmZlibEncode(data, level));
      if (a !== undefined) assert.deepEqual(new Uint8Array(inflateSync(a)), data);
    }),
    { numRuns: 60 },
  );
  for (let size = 16; size < 300_000; size += size < 8192 ? Math.ceil(size / 16) : Math.ceil(size / 4)) {
    const data = sample(size, size);
    for (let level = 1; level <= 12; level += size > 50_000 ? 4 : 1) assert.deepEqual(nativeZlibEncode(n, data, level), wasmZlibEncode(data, level), `${size} bytes, level ${level}`);
  }
  const noise = new Uint8Array(131072);
  for (let i = 0; i < noise.length; i += 64) noise.set(createHash('sha512').update(String(i)).digest(), i);
  assert.equal(nativeZlibEncode(n, noise, 9), undefined, 'incompressible input is handed back');
  assert.equal(n.zlibEncode(13, noise, new Uint8Array(10)), -1, 'a level past 12');
  assert.throws(() => n.zlibEncode(9, 'text' as unknown as Uint8Array, new Uint8Array(10)), TypeError);
  assert.equal(n.deflateVersion(), 1025);
});

const BCJ = [0, 4, 5, 6, 7, 8, 9]; // none, x86, powerpc, ia64, arm, armthumb, sparc (liblzma filter ids)

test('native and wasm liblzma: the same bytes at every preset and filter, and each decodes the other', { skip: native === undefined && 'no native addon here' }, () => {
  const n = native!;
  fc.assert(
    fc.property(fc.oneof(fc.integer({ min: 0, max: 3000 }), fc.integer({ min: 0, max: 140_000 })), fc.integer({ min: 0, max: 9 }), fc.constantFrom(...BCJ), fc.integer({ min: 0, max: 1000 }), (size, preset, bcj, seed) => {
      const data = sample(size, seed);
      const dict = Math.max(8192, 2 ** Math.ceil(Math.log2(Math.max(size, 1))));
      const a = nativeXzEncode(n, data, preset, dict, bcj);
      assert.deepEqual(a, wasmXzEncode(data, preset, dict, bcj));
      if (a === undefined) return;
      assert.deepEqual(nativeXzDecode(n, a, size, 1 << 24), data);
      assert.deepEqual(wasmXzDecode(a, size, 1 << 24), data);
      assert.deepEqual(nativeXzDecode(n, a, size, 1 << 24, true), data);
    }),
    { numRuns: 40 },
  );
  const good = nativeXzEncode(n, sample(131072, 4), 6, 131072, 4)!;
  for (const [what, bytes, max] of [
    ['truncated', good.subarray(0, good.length - 5), 131072],
    ['trailing byte', Buffer.concat([good, Buffer.from([0])]), 131072],
    ['output past the limit', good, 131071],
    ['not xz', Buffer.from('not an xz stream at all'), 131072],
    ['empty', new Uint8Array(0), 131072],
  ] as const) {
    assert.throws(() => nativeXzDecode(n, bytes, max, 1 << 24), LzmaError, what);
  }
  const bigDict = nativeXzEncode(n, sample(131072, 4), 6, 64 << 20, 0)!;
  assert.throws(() => nativeXzDecode(n, bigDict, 131072, 1 << 20), /memory limit/);
  assert.throws(() => n.xzDecode('x' as unknown as number, good, new Uint8Array(10)), TypeError);
  assert.throws(() => n.xzEncode(6, 131072, 0, good, 'x' as unknown as Uint8Array), TypeError);
});

test('MicroLZMA (EROFS): native and wasm fill a fixed output with the same stream, and each decodes the other', { skip: native === undefined && 'no native addon here' }, () => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 300_000 }), fc.constantFrom(4096, 16384, 65536), fc.integer({ min: 0, max: 9 }), fc.integer({ min: 0, max: 1000 }), (size, cap, preset, seed) => {
      const data = sample(size, seed);
      const a = microLzmaEncode(data, preset, 1 << 20, cap);
      const b = wasmMicroLzmaEncode(data, preset, 1 << 20, cap);
      assert.deepEqual(a, b);
      assert.ok(a.out.byteLength <= cap && a.consumed <= size);
      if (size > 0) assert.ok(a.consumed > 0, 'some input always fits');
      const want = data.subarray(0, a.consumed);
      assert.deepEqual(microLzmaDecode(a.out, a.consumed, 1 << 20), want);
      assert.deepEqual(wasmMicroLzmaDecode(a.out, a.consumed, 1 << 20), want);
      if (a.consumed > 10) assert.deepEqual(microLzmaDecode(a.out, a.consumed - 10, 1 << 20, false), want.subarray(0, a.consumed - 10), 'a prefix');
    }),
    { numRuns: 40 },
  );
  const { out, consumed } = microLzmaEncode(sample(200_000, 5), 6, 1 << 20, 8192);
  assert.equal(out[0] !== 0, true, 'the first byte holds the negated properties, never 0');
  for (const [what, bytes, n] of [
    ['truncated', out.subarray(0, out.length - 40), consumed],
    ['longer output than the stream holds', out, consumed + 100],
    ['not MicroLZMA', new Uint8Array(64), 100],
  ] as const) {
    assert.throws(() => microLzmaDecode(bytes, n, 1 << 20), LzmaError, what);
    assert.throws(() => wasmMicroLzmaDecode(bytes, n, 1 << 20), LzmaError, what);
  }
  assert.throws(() => microLzmaDecode(out, consumed, 1 << 30), LzmaError, 'a dictionary past the limit');
});

test('native zlib decoding reads what zlib reads, and fails where zlib fails', { skip: native === undefined && 'no native addon here' }, () => {
  const n = native!;
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 140_000 }), fc.integer({ min: 1, max: 9 }), fc.integer({ min: 8, max: 15 }), fc.boolean(), fc.integer({ min: 0, max: 1000 }), (size, level, windowBits, ours, seed) => {
      const data = sample(size, seed);
      const stream = ours ? zlibEncode(data, level) ?? deflateSync(data) : deflateSync(data, { level, windowBits: Math.max(9, windowBits) });
      assert.deepEqual(nativeInflate(n, stream, size), data);
      assert.deepEqual(nativeInflate(n, stream, size, true), data);
      if (size > 0) assert.throws(() => nativeInflate(n, stream, size - 1), /more output than the block holds/);
    }),
    { numRuns: 40 },
  );
  const data = sample(131072, 8);
  const good = deflateSync(data, { level: 9 });
  const flip = Buffer.from(good);
  const mid = Math.floor(flip.length / 2);
  flip[mid] = (flip[mid] as number) ^ 0x10;
  for (const [what, bytes] of [
    ['truncated', good.subarray(0, good.length - 6)],
    ['bad checksum', Buffer.concat([good.subarray(0, good.length - 1), Buffer.from([good[good.length - 1]! ^ 1])])],
    ['bit flip', flip],
    ['not zlib', Buffer.from('not a zlib stream')],
    ['empty', new Uint8Array(0)],
  ] as const) {
    let zlibFails = false;
    try {
      inflateSync(bytes, { maxOutputLength: 131072 });
    } catch {
      zlibFails = true;
    }
    if (zlibFails) assert.throws(() => nativeInflate(n, bytes, 131072), CorruptImageError, what);
    else assert.deepEqual(nativeInflate(n, bytes, 131072), new Uint8Array(inflateSync(bytes)), what);
  }
  // Bytes after the stream are ignored by both.
  assert.deepEqual(nativeInflate(n, Buffer.concat([good, Buffer.from('tail')]), 131072), data);
  assert.deepEqual(new Uint8Array(inflateSync(Buffer.concat([good, Buffer.from('tail')]))), data);
});

test('zstd, xz and gzip images are the same with or without the addon, on the main thread or on workers', async () => {
  const here: string[] = [];
  for (const [compressor, settings] of VARIANTS) {
    const inline = await imageHash(compressor, settings, 0);
    assert.equal(await imageHash(compressor, settings, 2), inline, `${compressor} ${JSON.stringify(settings)}`);
    here.push(inline);
  }
  const env: NodeJS.ProcessEnv = { ...process.env, LIVESTICK_NATIVE: '0' };
  delete env['NODE_TEST_CONTEXT'];
  const child = spawnSync(process.execPath, ['--import', 'tsx', fileURLToPath(new URL('../helpers/codec-images.ts', import.meta.url)), '2'], { env, encoding: 'utf8' });
  assert.equal(child.status, 0, child.stderr);
  assert.deepEqual(JSON.parse(child.stdout), { native: false, hashes: here });
});
