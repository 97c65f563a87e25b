/**
 * The combined device against a plain in-memory model: random sequences of aligned and unaligned
 * writes (crossing chunks and metadata areas, touching the device end, over bases whose size is not a
 * multiple of the chunk), reopening the overlay from its bytes after every step.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import '../helpers/setup.ts';
import { MemoryDisk, readAt } from '../../src/io/disk.ts';
import { ExceptionStore, OverlayFullError, SnapshotDisk, SnapshotInvalidError, areaChunk, geometry } from '../../src/xform/dmsnap/index.ts';

function pattern(seed: number, length: number): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed | 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

const writeArb = (baseSize: number) =>
  fc.oneof(
    // unaligned anywhere
    fc.record({ at: fc.integer({ min: 0, max: baseSize - 1 }), len: fc.integer({ min: 1, max: 9000 }), seed: fc.integer() }),
    // chunk-aligned whole chunks
    fc.record({ at: fc.integer({ min: 0, max: Math.floor(baseSize / 512) - 1 }).map((s) => s * 512), len: fc.constantFrom(512, 1024, 4096, 8192, 12288), seed: fc.integer() }),
    // at the very end of the device
    fc.record({ at: fc.integer({ min: Math.max(0, baseSize - 5000), max: baseSize - 1 }), len: fc.constant(5000), seed: fc.integer() }),
  ).map((w) => ({ ...w, len: Math.min(w.len, baseSize - w.at) }));

test('combined device equals the model after every write and reopen', async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.constantFrom(1, 2, 8, 16),
      fc.integer({ min: 0, max: 1 }),
      fc.integer({ min: 3000, max: 400_000 }).chain((baseSize) =>
        fc.record({ baseSize: fc.constant(baseSize), writes: fc.array(fc.tuple(writeArb(baseSize), fc.boolean()), { minLength: 1, maxLength: 40 }) }),
      ),
      async (chunkSectors, reopenEvery, { baseSize, writes }) => {
        const g = geometry(chunkSectors);
        const base = new MemoryDisk(pattern(baseSize, baseSize), { readOnly: true });
        const model = pattern(baseSize, baseSize).slice();
        // Big enough that most sequences do not overflow; small chunks cross many metadata areas.
        const overlayBytes = Math.ceil(baseSize / g.chunkBytes) * g.chunkBytes * 2 + 8 * g.chunkBytes;
        const overlay = new MemoryDisk(overlayBytes);
        await ExceptionStore.format(overlay, chunkSectors);
        let dev = new SnapshotDisk(base, await ExceptionStore.open(overlay));
        for (const [w, reopen] of writes) {
          const data = pattern(w.seed, w.len);
          await dev.write(data, w.at);
          model.set(data, w.at);
          const probeAt = Math.max(0, w.at - 100);
          const probe = await readAt(dev, probeAt, Math.min(baseSize - probeAt, w.len + 200));
          assert.deepEqual(probe, model.subarray(probeAt, probeAt + probe.byteLength));
          if (reopen || reopenEvery === 1) {
            await dev.flush();
            dev = new SnapshotDisk(base, await ExceptionStore.open(overlay));
          }
        }
        await dev.flush();
        const reopened = new SnapshotDisk(base, await ExceptionStore.open(overlay));
        assert.deepEqual(await readAt(reopened, 0, baseSize), model);
        // The kernel's allocation: k-th exception at chunk 2 + k + floor(k / EPA), recorded in area floor(k / EPA).
        const ex = [...reopened.store.exceptions()];
        ex.forEach((e, k) => assert.equal(e.newChunk, 2 + k + Math.floor(k / g.exceptionsPerArea)));
        const st = reopened.store.status();
        const k = ex.length;
        const nextFree = 2 + k + Math.floor(k / g.exceptionsPerArea) + ((2 + k + Math.floor(k / g.exceptionsPerArea)) % (g.exceptionsPerArea + 1) === 1 ? 1 : 0);
        assert.equal(st.allocatedSectors, nextFree * chunkSectors);
        assert.equal(st.metadataSectors, (Math.floor(k / g.exceptionsPerArea) + 2) * chunkSectors);
        // A full area is always followed by a zeroed one on disk.
        const areas = Math.floor(k / g.exceptionsPerArea);
        const next = await readAt(overlay, areaChunk(g, areas) * g.chunkBytes, 16 * ((k % g.exceptionsPerArea) + 1));
        assert.ok(next.subarray(16 * (k % g.exceptionsPerArea)).every((b) => b === 0));
      },
    ),
    { numRuns: 120 },
  );
});

test('an all-zero overlay is a new snapshot: initialised like the kernel on first write', async () => {
  const base = new MemoryDisk(pattern(3, 100_000));
  const overlay = new MemoryDisk(64 * 1024);
  const store = await ExceptionStore.open(overlay, { chunkSectorsIfNew: 8 });
  assert.equal(store.state, 'new');
  assert.deepEqual(store.status(), { allocatedSectors: 16, totalSectors: 128, metadataSectors: 16 });
  const dev = new SnapshotDisk(base, store);
  await dev.write(new Uint8Array(10).fill(9), 4090);
  await dev.flush();
  const again = await ExceptionStore.open(overlay);
  assert.equal(again.state, 'active');
  assert.equal(again.exceptionCount, 2);
  assert.deepEqual(again.status(), { allocatedSectors: 32, totalSectors: 128, metadataSectors: 16 });
});

test('overflow: PO refuses the write and keeps the overlay valid; P invalidates it', async () => {
  for (const mode of ['PO', 'P'] as const) {
    const base = new MemoryDisk(pattern(5, 200_000));
    const overlay = new MemoryDisk(8 * 4096); // header, area 0, 6 data chunks
    const dev = new SnapshotDisk(base, await ExceptionStore.format(overlay, 8), { mode });
    await dev.write(new Uint8Array(6 * 4096).fill(1), 0);
    await dev.flush();
    const write = dev.write(new Uint8Array(4096).fill(2), 40 * 4096);
    if (mode === 'PO') {
      await assert.rejects(write, OverlayFullError);
      await assert.rejects(dev.write(new Uint8Array(1), 0), OverlayFullError); // like the kernel: all writes fail after overflow
      const reopened = await ExceptionStore.open(overlay);
      assert.equal(reopened.valid, true);
      assert.equal(reopened.exceptionCount, 6);
    } else {
      await assert.rejects(write, SnapshotInvalidError);
      assert.equal((await ExceptionStore.open(overlay)).valid, false);
    }
  }
});

test('livestick stops one chunk early rather than fill an area whose successor does not fit', async () => {
  const g = geometry(1); // 32 exceptions per area
  const chunks = 2 + g.exceptionsPerArea; // header, area 0, 32 data chunks, no room for area 1
  const overlay = new MemoryDisk(chunks * g.chunkBytes);
  const store = await ExceptionStore.format(overlay, 1);
  assert.equal(store.freeChunks(), g.exceptionsPerArea - 1);
  const dev = new SnapshotDisk(new MemoryDisk(100 * 512), store);
  await dev.write(new Uint8Array((g.exceptionsPerArea - 1) * 512).fill(3), 0);
  await assert.rejects(dev.write(new Uint8Array(1), 90 * 512), OverlayFullError);
  await dev.flush();
  assert.equal((await ExceptionStore.open(overlay)).exceptionCount, g.exceptionsPerArea - 1);
});

test('reset empties the table and keeps the binding; stale areas never come back', async () => {
  const base = new MemoryDisk(pattern(9, 600 * 512));
  const overlay = new MemoryDisk(1200 * 512);
  const binding = { baseSize: base.size, fingerprintKind: 1, fingerprint: new Uint8Array(32).fill(1), label: 'b' };
  const dev = new SnapshotDisk(base, await ExceptionStore.format(overlay, 1, binding));
  await dev.write(new Uint8Array(100 * 512).fill(4), 0); // fills areas 0..2
  await dev.flush();
  const store = await ExceptionStore.open(overlay);
  assert.equal(store.exceptionCount, 100);
  await store.reset();
  const fresh = await ExceptionStore.open(overlay);
  assert.equal(fresh.exceptionCount, 0);
  assert.equal(fresh.binding.state, 'bound');
  const dev2 = new SnapshotDisk(base, fresh);
  // Exactly one area's worth: area 0 is full again, and the stale area 1 must have been zeroed.
  await dev2.write(new Uint8Array(32 * 512).fill(5), 200 * 512);
  await dev2.flush();
  const after = await ExceptionStore.open(overlay);
  assert.equal(after.exceptionCount, 32);
  assert.deepEqual(await readAt(new SnapshotDisk(base, after), 0, 512), pattern(9, 512));
});
