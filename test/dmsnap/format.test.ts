import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CorruptImageError, UnsupportedFeatureError } from '../../src/errors.ts';
import { MemoryDisk } from '../../src/io/disk.ts';
import {
  ExceptionStore,
  SNAP_MAGIC,
  areaChunk,
  decodeArea,
  decodeBinding,
  decodeHeader,
  encodeArea,
  encodeBinding,
  encodeHeader,
  geometry,
  isMetadataChunk,
} from '../../src/xform/dmsnap/index.ts';

test('header round-trips and matches the kernel layout', () => {
  const bytes = encodeHeader({ valid: true, chunkSectors: 8 });
  assert.equal(bytes.byteLength, 4096);
  assert.deepEqual([...bytes.subarray(0, 16)], [0x53, 0x6e, 0x41, 0x70, 1, 0, 0, 0, 1, 0, 0, 0, 8, 0, 0, 0]);
  assert.ok(bytes.subarray(16).every((b) => b === 0));
  assert.deepEqual(decodeHeader(bytes), { kind: 'snapshot', valid: true, version: 1, chunkSectors: 8 });
  assert.deepEqual(decodeHeader(encodeHeader({ valid: false, chunkSectors: 16 })), { kind: 'snapshot', valid: false, version: 1, chunkSectors: 16 });
  assert.deepEqual(decodeHeader(new Uint8Array(16)), { kind: 'new' });
});

test('geometry: areas interleave with the data chunks they describe', () => {
  const g = geometry(8);
  assert.equal(g.exceptionsPerArea, 256);
  assert.equal(areaChunk(g, 0), 1);
  assert.equal(areaChunk(g, 1), 258);
  assert.equal(areaChunk(geometry(16), 1), 514);
  assert.ok(isMetadataChunk(g, 0) && isMetadataChunk(g, 1) && isMetadataChunk(g, 258));
  assert.ok(!isMetadataChunk(g, 2) && !isMetadataChunk(g, 257) && !isMetadataChunk(g, 259));
});

test('area round-trips; the table ends at the first zero new_chunk', () => {
  const g = geometry(1);
  const ex = [
    { oldChunk: 7, newChunk: 2 },
    { oldChunk: 0, newChunk: 3 },
    { oldChunk: 2 ** 40, newChunk: 4 },
  ];
  const bytes = encodeArea(ex, g);
  assert.deepEqual(decodeArea(bytes, g), { exceptions: ex, full: false });
  const full = Array.from({ length: g.exceptionsPerArea }, (_, i) => ({ oldChunk: i, newChunk: i + 2 }));
  assert.equal(decodeArea(encodeArea(full, g), g).full, true);
  // Entries after a terminator are ignored, as the kernel ignores them.
  const withJunk = encodeArea(ex, g);
  withJunk.set(encodeArea([{ oldChunk: 9, newChunk: 9 }], g).subarray(0, 16), 16 * 4);
  assert.equal(decodeArea(withJunk, g).exceptions.length, 3);
});

test('binding record round-trips and detects damage', () => {
  const b = { baseSize: 123456789, fingerprintKind: 1, fingerprint: new Uint8Array(32).fill(7), label: 'rootfs.img' };
  const chunk = encodeHeader({ valid: true, chunkSectors: 8 });
  assert.deepEqual(decodeBinding(chunk), { state: 'unbound' });
  chunk.set(encodeBinding(b), 256);
  const got = decodeBinding(chunk);
  assert.equal(got.state, 'bound');
  if (got.state === 'bound') {
    assert.equal(got.binding.baseSize, b.baseSize);
    assert.equal(got.binding.label, 'rootfs.img');
    assert.deepEqual([...got.binding.fingerprint], [...b.fingerprint]);
  }
  chunk[256 + 40] = (chunk[256 + 40] ?? 0) ^ 1;
  assert.equal(decodeBinding(chunk).state, 'damaged');
  // The record fits in the first sector, so the smallest chunk (1 sector) still has room for it.
  assert.ok(256 + encodeBinding(b).byteLength <= 512);
});

function corrupt(fn: () => unknown, field: string) {
  return assert.rejects(async () => fn(), (err: unknown) => {
    assert.ok(err instanceof CorruptImageError, `expected CorruptImageError, got ${String(err)}`);
    assert.equal(err.format, 'dm-snapshot');
    assert.equal(err.field, field);
    return true;
  });
}

async function overlayWith(chunkSectors: number, sizeChunks: number, areas: { oldChunk: number; newChunk: number }[][]): Promise<MemoryDisk> {
  const g = geometry(chunkSectors);
  const disk = new MemoryDisk(sizeChunks * g.chunkBytes);
  await disk.write(encodeHeader({ valid: true, chunkSectors }), 0);
  for (const [i, entries] of areas.entries()) await disk.write(encodeArea(entries, g), areaChunk(g, i) * g.chunkBytes);
  return disk;
}

test('bad overlays give typed errors', async () => {
  await corrupt(() => ExceptionStore.open(new MemoryDisk(0)), 'header');
  await corrupt(() => ExceptionStore.open(new MemoryDisk(10)), 'header');
  const wrongMagic = new MemoryDisk(65536);
  await wrongMagic.write(new Uint8Array([1, 2, 3, 4]), 0);
  await corrupt(() => ExceptionStore.open(wrongMagic), 'magic');
  const truncated = new MemoryDisk(4096 + 100);
  await truncated.write(encodeHeader({ valid: true, chunkSectors: 8 }).subarray(0, 16), 0);
  await corrupt(() => ExceptionStore.open(truncated), 'size');

  const version = await overlayWith(8, 16, []);
  const v = new Uint8Array(4);
  new DataView(v.buffer).setUint32(0, 2, true);
  await version.write(v, 8);
  await assert.rejects(ExceptionStore.open(version), UnsupportedFeatureError);

  for (const badChunk of [0, 3, 12, 0x40000000]) {
    const d = new MemoryDisk(65536);
    const h = new Uint8Array(16);
    const dv = new DataView(h.buffer);
    dv.setUint32(0, SNAP_MAGIC, true);
    dv.setUint32(4, 1, true);
    dv.setUint32(8, 1, true);
    dv.setUint32(12, badChunk, true);
    await d.write(h, 0);
    await corrupt(() => ExceptionStore.open(d), 'chunk_size');
  }
  const huge = new MemoryDisk(65536);
  const h = encodeHeader({ valid: true, chunkSectors: 8 }).subarray(0, 16);
  new DataView(h.buffer).setUint32(12, 1 << 20, true);
  await huge.write(h, 0);
  await assert.rejects(ExceptionStore.open(huge), UnsupportedFeatureError);

  await corrupt(async () => ExceptionStore.open(await overlayWith(8, 8, [[{ oldChunk: 1, newChunk: 8 }]])), 'new_chunk');
  await corrupt(async () => ExceptionStore.open(await overlayWith(8, 8, [[{ oldChunk: 1, newChunk: 1 }]])), 'new_chunk');
  await corrupt(async () => ExceptionStore.open(await overlayWith(8, 8, [[{ oldChunk: 1, newChunk: 2 }, { oldChunk: 1, newChunk: 3 }]])), 'old_chunk');
  await corrupt(async () => ExceptionStore.open(await overlayWith(8, 8, [[{ oldChunk: 1, newChunk: 2 }, { oldChunk: 2, newChunk: 2 }]])), 'new_chunk');
  // A full area whose successor lies past the end of the file.
  const g = geometry(1);
  const fullArea = Array.from({ length: g.exceptionsPerArea }, (_, i) => ({ oldChunk: i, newChunk: i + 2 }));
  await corrupt(async () => ExceptionStore.open(await overlayWith(1, 2 + g.exceptionsPerArea, [fullArea])), 'area');
});

test('an exception with a 64-bit origin chunk beyond 2^53 is reported, not truncated', async () => {
  const g = geometry(8);
  const disk = await overlayWith(8, 8, []);
  const area = new Uint8Array(g.chunkBytes);
  const dv = new DataView(area.buffer);
  dv.setBigUint64(0, 2n ** 60n, true);
  dv.setBigUint64(8, 2n, true);
  await disk.write(area, g.chunkBytes);
  await corrupt(() => ExceptionStore.open(disk), 'old_chunk');
});

test('an invalidated snapshot is reported as such, without reading its table', async () => {
  const disk = new MemoryDisk(65536);
  await disk.write(encodeHeader({ valid: false, chunkSectors: 8 }), 0);
  await disk.write(new Uint8Array(4096).fill(0xff), 4096); // garbage that would be corrupt if read
  const store = await ExceptionStore.open(disk);
  assert.equal(store.state, 'invalid');
  assert.equal(store.valid, false);
});
