import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import '../helpers/setup.ts';
import { ByteSpool } from '../../src/fs/erofs/spool.ts';
import { writeErofs } from '../../src/fs/erofs/writer.ts';
import { dirNode, fileNode } from '../../src/fs/squashfs/tree.ts';
import { MemoryDisk } from '../../src/io/disk.ts';
import { ErofsReader } from '../../src/fs/erofs/reader.ts';

const spoolFiles = () => readdirSync(tmpdir()).filter((n) => n.startsWith('livestick-erofs-packed-'));

test('ByteSpool reads back any range of what was appended, in memory and after spilling to a file (a concatenation model)', () => {
  fc.assert(fc.property(fc.array(fc.uint8Array({ maxLength: 300 }), { maxLength: 20 }), fc.integer({ min: 0, max: 2000 }), fc.array(fc.tuple(fc.nat(), fc.nat()), { maxLength: 10 }), (parts, limit, ranges) => {
    const model = Buffer.concat(parts);
    const spool = new ByteSpool(limit);
    try {
      for (const p of parts) {
        spool.append(p);
        p.fill(0xee); // the spool keeps its own copy
      }
      assert.equal(spool.length, model.byteLength);
      assert.equal(spool.spilled, model.byteLength > limit && parts.some((p) => p.byteLength > 0));
      for (const [a, b] of ranges) {
        const at = model.byteLength === 0 ? 0 : a % (model.byteLength + 1);
        const len = (model.byteLength - at === 0) ? 0 : b % (model.byteLength - at + 1);
        assert.deepEqual(Buffer.from(spool.read(at, len)), model.subarray(at, at + len));
      }
      assert.throws(() => spool.read(0, model.byteLength + 1), RangeError);
    } finally {
      spool.close();
    }
  }), { numRuns: 200 });
  assert.deepEqual(spoolFiles(), [], 'close removes the temporary file');
});

test('a packed inode larger than the spool limit (70 MiB of whole-file fragments) reads back file by file, and its temporary file is gone', { timeout: 180_000 }, async () => {
  const entries: Record<string, ReturnType<typeof fileNode>> = {};
  const data: Uint8Array[] = [];
  for (let i = 0; i < 70; i++) {
    const b = new Uint8Array((1 << 20) - 1 - i);
    for (let j = 0; j < b.length; j += 64) b[j] = (i * 7 + j / 64) & 0xff;
    data.push(b);
    entries[`f${i}`] = fileNode(b);
  }
  const dir = mkdtempSync(join(tmpdir(), 'livestick-spool-test-'));
  try {
    const img = join(dir, 'packed.img');
    await writeErofs(dirNode({}, entries), img, { compression: 'lz4', pclusterSize: 1 << 20, allFragments: true, dedupe: false, threads: 1, mkfsTime: 1_700_000_000 });
    const reader = await ErofsReader.open(new MemoryDisk(new Uint8Array(readFileSync(img)), { readOnly: true }));
    assert.ok(reader.superblock.packedNid !== 0);
    for (let i = 0; i < 70; i++) assert.ok(Buffer.from(await reader.readFile(`f${i}`)).equals(Buffer.from(data[i]!)), `f${i}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  assert.deepEqual(spoolFiles(), []);
});
