/**
 * Ext4WritableFileSystem against a simple in-memory model (fast-check): random sequences of
 * createFile (zeroed or uninitialized), writes at any offset, resizes both ways, reads through the
 * open file, flush, close, reopening for writing, rename (also over an existing file), unlink and
 * writeFile, with and without a journal. Every read through an open file matches the model; after
 * the filesystem is closed and opened again, our reader (strict checksums) reads every file as the
 * model has it and the free space is what it was before the files minus their blocks. Bytes of an
 * uninitialized file that were never written are not compared (the contract lets them hold anything).
 * And a change too big for the journal fails before anything in use is written.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { MemoryDisk } from '../../src/io/disk.ts';
import { Ext4 } from '../../src/fs/ext4/fs.ts';
import { buildBlockMap } from '../../src/fs/ext4/blockmap.ts';
import { mkfs } from '../../src/fs/ext4/mkfs.ts';
import { parseUuid } from '../../src/fs/ext4/superblock.ts';
import { Ext4WritableFileSystem } from '../../src/fs/ext4/writable.ts';
import { UnsupportedFeatureError } from '../../src/errors.ts';
import type { WritableFile } from '../../src/fs/filesystem.ts';
import { randomBytes } from './fixtures.ts';

const NAMES = ['a', 'b', 'c', 'd'];
const MAX = 600_000;

type Op =
  | { op: 'create'; name: number; size: number; uninit: boolean }
  | { op: 'write'; h: number; at: number; len: number; seed: number }
  | { op: 'resize'; h: number; size: number }
  | { op: 'read'; h: number; at: number; len: number }
  | { op: 'flush'; h: number }
  | { op: 'close'; h: number }
  | { op: 'open'; name: number }
  | { op: 'rename'; from: number; to: number }
  | { op: 'unlink'; name: number }
  | { op: 'writeFile'; name: number; len: number; seed: number }
  | { op: 'fsflush' };

const createArb: fc.Arbitrary<Op> = fc.record({ op: fc.constant('create' as const), name: fc.nat(3), size: fc.oneof(fc.nat(MAX), fc.constantFrom(0, 4096, 8192, 4095)), uninit: fc.boolean() });
const opArb: fc.Arbitrary<Op> = fc.oneof(
  createArb,
  { arbitrary: fc.record({ op: fc.constant('write' as const), h: fc.nat(7), at: fc.nat(MAX), len: fc.integer({ min: 1, max: 70_000 }), seed: fc.integer() }), weight: 4 },
  { arbitrary: fc.record({ op: fc.constant('resize' as const), h: fc.nat(7), size: fc.oneof(fc.nat(MAX), fc.nat(MAX * 4)) }), weight: 2 },
  { arbitrary: fc.record({ op: fc.constant('read' as const), h: fc.nat(7), at: fc.nat(MAX), len: fc.integer({ min: 1, max: 70_000 }) }), weight: 2 },
  fc.record({ op: fc.constant('flush' as const), h: fc.nat(7) }),
  fc.record({ op: fc.constant('close' as const), h: fc.nat(7) }),
  fc.record({ op: fc.constant('open' as const), name: fc.nat(3) }),
  fc.record({ op: fc.constant('rename' as const), from: fc.nat(3), to: fc.nat(3) }),
  fc.record({ op: fc.constant('unlink' as const), name: fc.nat(3) }),
  fc.record({ op: fc.constant('writeFile' as const), name: fc.nat(3), len: fc.nat(100_000), seed: fc.integer() }),
  fc.constant({ op: 'fsflush' as const }),
);

interface ModelFile {
  data: Uint8Array;
  /** Per byte: 1 when its content is defined (always, unless the file was created uninitialized). */
  defined: Uint8Array;
}

function resized(f: ModelFile, size: number, zeroed: boolean): ModelFile {
  const data = new Uint8Array(size);
  const defined = new Uint8Array(size).fill(zeroed ? 1 : 0);
  data.set(f.data.subarray(0, Math.min(size, f.data.byteLength)));
  defined.set(f.defined.subarray(0, Math.min(size, f.defined.byteLength)));
  return { data, defined };
}

function assertSame(got: Uint8Array, f: ModelFile, at: number, what: string): void {
  for (let i = 0; i < got.byteLength; i++) {
    if (f.defined[at + i] && got[i] !== f.data[at + i]) assert.fail(`${what}: byte ${at + i} is ${got[i]}, the model has ${f.data[at + i]}`);
  }
}

async function runOps(ops: Op[], journal: boolean): Promise<void> {
  const mem = new MemoryDisk(24 << 20);
  await mkfs(mem, { label: 'm', uuid: parseUuid('2f6c1a4e-8b3d-4c5e-9f0a-1b2c3d4e5f60'), hashSeed: parseUuid('12345678-9abc-4def-8123-456789abcdef'), time: 1_700_000_000, ...(journal ? {} : { journalBlocks: 0 }) });
  let fs = await Ext4WritableFileSystem.open(mem, { preallocStep: 64 * 1024 });
  assert.equal(fs.renameIsAtomic, journal);
  const freeAtStart = (await fs.space()).freeBytes;
  const model = new Map<string, ModelFile>();
  /** Open handles: file, its name at open, whether it was created uninitialized. */
  const handles: { file: WritableFile; name: string; zeroGrowth: boolean }[] = [];
  const isOpen = (name: string) => handles.some((h) => h.name === name);
  for (const o of ops) {
    const h = 'h' in o ? handles[o.h % Math.max(1, handles.length)] : undefined;
    switch (o.op) {
      case 'create': {
        const name = `/${NAMES[o.name]}`;
        if (model.has(name)) {
          await assert.rejects(fs.createFile(name, { size: o.size }));
          break;
        }
        const file = await fs.createFile(name, { size: o.size, uninitialized: o.uninit });
        model.set(name, { data: new Uint8Array(o.size), defined: new Uint8Array(o.size).fill(o.uninit ? 0 : 1) });
        handles.push({ file, name, zeroGrowth: !o.uninit });
        break;
      }
      case 'write': {
        if (!h) break;
        const f = model.get(h.name)!;
        if (f.data.byteLength === 0) break;
        const at = o.at % f.data.byteLength;
        const len = Math.min(o.len, f.data.byteLength - at);
        const bytes = randomBytes(len, o.seed);
        await h.file.write(bytes, at);
        f.data.set(bytes, at);
        f.defined.fill(1, at, at + len);
        break;
      }
      case 'resize': {
        if (!h) break;
        await h.file.resize(o.size);
        model.set(h.name, resized(model.get(h.name)!, o.size, h.zeroGrowth));
        assert.equal(h.file.size, o.size);
        break;
      }
      case 'read': {
        if (!h) break;
        const f = model.get(h.name)!;
        if (f.data.byteLength === 0) break;
        const at = o.at % f.data.byteLength;
        const buf = new Uint8Array(Math.min(o.len, f.data.byteLength - at));
        await h.file.read(buf, at);
        assertSame(buf, f, at, `read of ${h.name}`);
        break;
      }
      case 'flush':
        if (h) await h.file.flush();
        break;
      case 'close':
        if (h) {
          await h.file.close();
          handles.splice(handles.indexOf(h), 1);
        }
        break;
      case 'open': {
        const name = `/${NAMES[o.name]}`;
        if (!model.has(name)) {
          await assert.rejects(fs.openFileForWriting(name));
          break;
        }
        const shared = handles.find((x) => x.name === name);
        handles.push({ file: await fs.openFileForWriting(name), name, zeroGrowth: shared?.zeroGrowth ?? true });
        break;
      }
      case 'rename': {
        const from = `/${NAMES[o.from]}`;
        const to = `/${NAMES[o.to]}`;
        if (!model.has(from)) {
          await assert.rejects(fs.rename(from, to));
          break;
        }
        if (from !== to && model.has(to) && isOpen(to)) {
          await assert.rejects(fs.rename(from, to), /EBUSY/);
          break;
        }
        await fs.rename(from, to);
        if (from !== to) {
          model.set(to, model.get(from)!);
          model.delete(from);
          for (const x of handles) if (x.name === from) x.name = to;
        }
        break;
      }
      case 'unlink': {
        const name = `/${NAMES[o.name]}`;
        if (!model.has(name) || isOpen(name)) {
          await assert.rejects(fs.unlink(name));
          break;
        }
        await fs.unlink(name);
        model.delete(name);
        break;
      }
      case 'writeFile': {
        const name = `/${NAMES[o.name]}`;
        if (isOpen(name)) {
          await assert.rejects(fs.writeFile(name, new Uint8Array(1)), /EBUSY/);
          break;
        }
        const data = randomBytes(o.len, o.seed);
        await fs.writeFile(name, data);
        model.set(name, { data, defined: new Uint8Array(o.len).fill(1) });
        break;
      }
      case 'fsflush':
        await fs.flush();
        break;
    }
  }
  // Reading through openFile sees open files as written so far.
  for (const [name, f] of model) {
    const d = await fs.openFile(name);
    assert.equal(d.size, f.data.byteLength, `${name}: size through openFile`);
    const buf = new Uint8Array(d.size);
    await d.read(buf, 0);
    assertSame(buf, f, 0, `${name} through openFile`);
    await d.close();
  }
  await fs.close();
  // What is on the disk now.
  const reader = await Ext4.open(mem, { strict: true });
  const names = (await reader.readdir('/')).map((e) => e.name).filter((n) => n !== '.' && n !== '..' && n !== 'lost+found').map((n) => `/${n}`).sort();
  assert.deepEqual(names, [...model.keys()].sort());
  let blocks = 0;
  for (const [name, f] of model) {
    const got = await reader.readFile(name, 1 << 30);
    assert.equal(got.byteLength, f.data.byteLength, `${name}: size after reopening`);
    assertSame(got, f, 0, `${name} after reopening`);
    const st = await reader.stat(name);
    const dataBlocks = Math.ceil(f.data.byteLength / 4096);
    blocks += st.blocks512 / 8;
    assert.ok(st.blocks512 / 8 >= dataBlocks && st.blocks512 / 8 <= dataBlocks + 2, `${name}: ${st.blocks512 / 8} blocks for ${f.data.byteLength} bytes (no preallocation left behind)`);
  }
  fs = await Ext4WritableFileSystem.open(mem);
  assert.equal((await fs.space()).freeBytes, freeAtStart - blocks * 4096, 'every block freed or counted');
  await fs.close();
}

for (const journal of [true, false]) {
  test(`random operations match the model (${journal ? 'journaled' : 'no journal'})`, { timeout: 300_000 }, async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(createArb, { minLength: 1, maxLength: 3 }), fc.array(opArb, { minLength: 10, maxLength: 60, size: 'large' }), (first, ops) => runOps([...first, ...ops], journal)),
      { numRuns: journal ? 50 : 25 },
    );
  });
}

test('a change whose metadata outgrows the journal fails with nothing changed, and the filesystem stays usable', async () => {
  const mem = new MemoryDisk(24 << 20);
  await mkfs(mem, { label: 'j', uuid: parseUuid('2f6c1a4e-8b3d-4c5e-9f0a-1b2c3d4e5f61'), hashSeed: parseUuid('12345678-9abc-4def-8123-456789abcdef'), time: 1_700_000_000, journalBlocks: 8 });
  const before = mem.bytes.slice();
  const fs = await Ext4WritableFileSystem.open(mem);
  await assert.rejects(fs.mkdir('/too-big'), (e: unknown) => e instanceof UnsupportedFeatureError && /does not fit one transaction/.test(e.message));
  const reader = await Ext4.open(mem, { strict: true });
  assert.deepEqual((await reader.readdir('/')).map((e) => e.name), ['lost+found']);
  assert.equal((await reader.state()).needsRecovery, false);
  // Only blocks free in the unchanged bitmaps were written (a new directory block, in place).
  const map = await buildBlockMap(reader);
  for (let b = 0; b < before.byteLength / 4096; b++) {
    const same = Buffer.from(before.subarray(b * 4096, (b + 1) * 4096)).equals(Buffer.from(mem.bytes.subarray(b * 4096, (b + 1) * 4096)));
    assert.ok(same || !map.isUsed(b), `block ${b} is in use and was written`);
  }
  assert.deepEqual((await fs.readdir('/')).map((e) => e.name), ['lost+found'], 'the filesystem object still answers');
  await fs.close();
});
