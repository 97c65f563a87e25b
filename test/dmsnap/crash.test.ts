/**
 * Crash consistency: record every write and flush the engine sends to the overlay, then rebuild the
 * overlay as it could be after a power cut at each point — everything before the last completed flush,
 * plus any subset of the writes since — and check the kernel's loader would accept it: the table loads,
 * every exception it holds points at data that was really written for that chunk, and every exception
 * committed by a completed flush is still there.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fc from 'fast-check';
import '../helpers/setup.ts';
import { MemoryDisk, readAt, type Disk } from '../../src/io/disk.ts';
import { ExceptionStore, SnapshotDisk, geometry } from '../../src/xform/dmsnap/index.ts';

type Event = { kind: 'write'; offset: number; data: Uint8Array } | { kind: 'flush' };

class RecordingDisk implements Disk {
  readonly inner: MemoryDisk;
  readonly events: Event[] = [];
  readonly readOnly = false;
  constructor(size: number) {
    this.inner = new MemoryDisk(size);
  }
  get size() {
    return this.inner.size;
  }
  read(buf: Uint8Array, offset: number) {
    return this.inner.read(buf, offset);
  }
  async write(buf: Uint8Array, offset: number) {
    this.events.push({ kind: 'write', offset, data: buf.slice() });
    await this.inner.write(buf, offset);
  }
  async flush() {
    this.events.push({ kind: 'flush' });
  }
  async close() {}
}

const hex = (b: Uint8Array) => createHash('sha1').update(b).digest('hex');

test('a crash at any point leaves an overlay the loader accepts, with no exception pointing at unwritten data', async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.record({ chunk: fc.integer({ min: 0, max: 90 }), len: fc.integer({ min: 1, max: 3 }), partial: fc.boolean(), flush: fc.boolean(), fill: fc.integer({ min: 1, max: 255 }) }), { minLength: 1, maxLength: 30 }),
      fc.integer(),
      async (ops, seed) => {
        const g = geometry(1); // 512-byte chunks, 32 exceptions per area: areas fill quickly
        const cb = g.chunkBytes;
        const baseBytes = new Uint8Array(100 * cb).map((_, i) => (i * 7) & 0xff);
        const base = new MemoryDisk(baseBytes, { readOnly: true });
        const overlay = new RecordingDisk(400 * cb);
        const dev = new SnapshotDisk(base, await ExceptionStore.format(overlay, 1));
        // Every content each origin chunk has had through the combined device (its base content included).
        const versions = new Map<number, Set<string>>();
        const model = baseBytes.slice();
        const committedAt: { events: number; exceptions: Set<number> }[] = [];
        for (const op of ops) {
          const len = Math.min(op.len * cb - (op.partial ? 100 : 0), model.byteLength - op.chunk * cb - (op.partial ? 37 : 0));
          const at = op.chunk * cb + (op.partial ? 37 : 0);
          const data = new Uint8Array(len).fill(op.fill);
          await dev.write(data, at);
          model.set(data, at);
          for (let c = Math.floor(at / cb); c <= Math.floor((at + len - 1) / cb); c++) {
            const set = versions.get(c) ?? new Set([hex(baseBytes.subarray(c * cb, (c + 1) * cb))]);
            set.add(hex(model.subarray(c * cb, (c + 1) * cb)));
            versions.set(c, set);
          }
          if (op.flush) {
            await dev.flush();
            committedAt.push({ events: overlay.events.length, exceptions: new Set([...dev.store.exceptions()].map((e) => e.oldChunk)) });
          }
        }
        await dev.flush();
        committedAt.push({ events: overlay.events.length, exceptions: new Set([...dev.store.exceptions()].map((e) => e.oldChunk)) });

        let rnd = seed >>> 0 || 1;
        const random = () => ((rnd = (rnd * 1103515245 + 12345) >>> 0) >>> 16) & 1;
        const initial = new Uint8Array(overlay.size);
        for (let p = 0; p <= overlay.events.length; p++) {
          const lastFlush = overlay.events.slice(0, p).map((e) => e.kind).lastIndexOf('flush');
          const image = initial.slice();
          overlay.events.slice(0, p).forEach((e, i) => {
            if (e.kind === 'write' && (i < lastFlush || random() === 1)) image.set(e.data, e.offset);
          });
          const store = await ExceptionStore.open(new MemoryDisk(image));
          assert.equal(store.valid, true);
          const crashed = new SnapshotDisk(base, store);
          for (const e of store.exceptions()) {
            const content = hex(await readAt(crashed, e.oldChunk * cb, cb));
            assert.ok(versions.get(e.oldChunk)?.has(content), `crash at event ${p}: chunk ${e.oldChunk} holds data never written to it`);
          }
          const durable = committedAt.filter((c) => c.events <= lastFlush + 1).at(-1);
          for (const old of durable?.exceptions ?? []) {
            assert.notEqual(store.lookup(old), undefined, `crash at event ${p}: committed exception for chunk ${old} lost`);
          }
        }
      },
    ),
    { numRuns: 25 },
  );
});
