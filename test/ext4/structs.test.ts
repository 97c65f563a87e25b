/** Unit and property tests of the ext4 structures and a write → read round trip, all in memory (no tools). */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import '../helpers/setup.ts';
import { MemoryDisk } from '../../src/io/disk.ts';
import { CorruptImageError } from '../../src/errors.ts';
import { crc32c, crc16Update } from '../../src/fs/ext4/crc.ts';
import { decodeGroupDesc, encodeGroupDesc, type GroupDesc } from '../../src/fs/ext4/group.ts';
import { decodeExtentNode, encodeExtentHeader, encodeExtentLeaf, encodeExtentIndex } from '../../src/fs/ext4/extent.ts';
import { decodeDirBlock } from '../../src/fs/ext4/dir.ts';
import { buildDirBlocks, buildExtentTree, BlockAllocator, extentTreeBlocks, runsToExtents } from '../../src/fs/ext4/build.ts';
import { decodeSuperblock, encodeSuperblock, SUPERBLOCK_OFFSET, parseUuid, formatUuid } from '../../src/fs/ext4/superblock.ts';
import { decodeInode, encodeInode, inodeChecksum, setInodeChecksum, storedInodeChecksum } from '../../src/fs/ext4/inode.ts';
import { Ext4 } from '../../src/fs/ext4/fs.ts';
import { Ext4Writer } from '../../src/fs/ext4/writer.ts';
import { mkfs } from '../../src/fs/ext4/mkfs.ts';
import { buildBlockMap, BlockKind } from '../../src/fs/ext4/blockmap.ts';

const FIXED = { uuid: parseUuid('0a5b8e5e-1c1e-4a5e-9f0e-3f1a2b3c4d5e'), hashSeed: parseUuid('11111111-2222-4333-8444-555555555555'), time: 1_700_000_000 };

describe('ext4 structures', () => {
  test('crc32c and crc16 match the standard check values', () => {
    assert.equal(crc32c(new TextEncoder().encode('123456789')), 0xe3069283);
    // CRC-16/ARC (poly 0x8005 reflected, init 0) check value; ext4 starts from ~0 but the table is the same.
    assert.equal(crc16Update(0, new TextEncoder().encode('123456789')), 0xbb3d);
  });

  test('UUID text round trip', () => {
    assert.equal(formatUuid(parseUuid('0A5B8E5E-1c1e-4a5e-9f0e-3f1a2b3c4d5e')), '0a5b8e5e-1c1e-4a5e-9f0e-3f1a2b3c4d5e');
    assert.throws(() => parseUuid('nope'), RangeError);
  });

  test('superblock decode(encode(x)) keeps every field and the checksum verifies', async () => {
    const disk = new MemoryDisk(16 * 2 ** 20);
    await mkfs(disk, { ...FIXED, label: 'round-trip' });
    const raw = disk.bytes.slice(SUPERBLOCK_OFFSET, SUPERBLOCK_OFFSET + 1024);
    const sb = decodeSuperblock(raw);
    assert.equal(sb.volumeName, 'round-trip');
    const again = decodeSuperblock(encodeSuperblock(sb));
    assert.deepEqual({ ...again, raw: undefined }, { ...sb, raw: undefined });
    assert.deepEqual(encodeSuperblock(sb), raw);
    const bad = raw.slice();
    bad[56] = 0;
    assert.throws(() => decodeSuperblock(bad), CorruptImageError);
  });

  test('group descriptors round trip (32 and 64 bytes)', () => {
    const u16 = fc.integer({ min: 0, max: 0xffff });
    const arb = (wide: boolean) =>
      fc.record({
        blockBitmap: fc.integer({ min: 0, max: wide ? 2 ** 48 - 1 : 2 ** 32 - 1 }),
        inodeBitmap: fc.integer({ min: 0, max: wide ? 2 ** 48 - 1 : 2 ** 32 - 1 }),
        inodeTable: fc.integer({ min: 0, max: wide ? 2 ** 48 - 1 : 2 ** 32 - 1 }),
        freeBlocks: fc.integer({ min: 0, max: wide ? 2 ** 32 - 1 : 0xffff }),
        freeInodes: fc.integer({ min: 0, max: wide ? 2 ** 32 - 1 : 0xffff }),
        usedDirs: fc.integer({ min: 0, max: wide ? 2 ** 32 - 1 : 0xffff }),
        flags: u16,
        excludeBitmap: fc.integer({ min: 0, max: wide ? 2 ** 48 - 1 : 2 ** 32 - 1 }),
        blockBitmapCsum: fc.integer({ min: 0, max: wide ? 2 ** 32 - 1 : 0xffff }),
        inodeBitmapCsum: fc.integer({ min: 0, max: wide ? 2 ** 32 - 1 : 0xffff }),
        itableUnused: fc.integer({ min: 0, max: wide ? 2 ** 32 - 1 : 0xffff }),
        checksum: u16,
      });
    for (const size of [32, 64]) {
      fc.assert(fc.property(arb(size === 64), (gd: GroupDesc) => {
        assert.deepEqual(decodeGroupDesc(encodeGroupDesc(gd, size), size, 0, 0), { ...gd });
      }));
    }
  });

  test('extent nodes round trip, and bad nodes are refused', () => {
    fc.assert(
      fc.property(fc.array(fc.record({ len: fc.integer({ min: 1, max: 32768 }), gap: fc.integer({ min: 0, max: 1000 }), physical: fc.integer({ min: 1, max: 2 ** 47 }), unwritten: fc.boolean() }), { minLength: 0, maxLength: 4 }), (specs) => {
        let logical = 0;
        const leaves = specs.map((s) => {
          logical += s.gap;
          const leaf = { logical, length: s.unwritten ? Math.min(s.len, 32767) : s.len, physical: s.physical, unwritten: s.unwritten };
          logical += leaf.length;
          return leaf;
        });
        const node = new Uint8Array(60);
        node.set(encodeExtentHeader({ entries: leaves.length, max: 4, depth: 0, generation: 0 }));
        leaves.forEach((l, i) => node.set(encodeExtentLeaf(l), 12 + 12 * i));
        assert.deepEqual(decodeExtentNode(node, 'x', 0).leaves, leaves.map((l) => ({ ...l })));
      }),
    );
    const idx = new Uint8Array(60);
    idx.set(encodeExtentHeader({ entries: 2, max: 4, depth: 1, generation: 0 }));
    idx.set(encodeExtentIndex({ logical: 10, child: 5 }), 12);
    idx.set(encodeExtentIndex({ logical: 3, child: 6 }), 24);
    assert.throws(() => decodeExtentNode(idx, 'x', 0), CorruptImageError, 'out of order');
    const deep = new Uint8Array(60);
    deep.set(encodeExtentHeader({ entries: 0, max: 4, depth: 9, generation: 0 }));
    assert.throws(() => decodeExtentNode(deep, 'x', 0), CorruptImageError);
    const tooMany = new Uint8Array(60);
    tooMany.set(encodeExtentHeader({ entries: 5, max: 4, depth: 0, generation: 0 }));
    assert.throws(() => decodeExtentNode(tooMany, 'x', 0), CorruptImageError);
  });

  test('extent trees of any size decode back to the same runs', () => {
    const bs = 1024;
    for (const n of [1, 4, 5, 84, 85, 200, 8000]) {
      const runs: [number, number][] = [];
      for (let i = 0; i < n; i++) runs.push([1000 + i * 3, 2]);
      const extents = runsToExtents(runs);
      let next = 10;
      const tree = buildExtentTree(extents, bs, () => next++, undefined);
      assert.equal(tree.treeBlocks.length, extentTreeBlocks(n, bs));
      const blocks = new Map(tree.treeBlocks);
      const collect = (node: Uint8Array): number[][] => {
        const d = decodeExtentNode(node, 'x', 0);
        if (d.header.depth === 0) return d.leaves.map((l) => [l.physical, l.length]);
        return d.indexes.flatMap((i) => collect(blocks.get(i.child)!));
      };
      assert.deepEqual(collect(tree.iBlock), runs);
    }
  });

  test('directory blocks round trip any names', () => {
    const name = fc.uint8Array({ minLength: 1, maxLength: 255 }).filter((b) => !b.includes(0) && !b.includes(47));
    fc.assert(
      fc.property(fc.array(fc.record({ ino: fc.integer({ min: 1, max: 2 ** 32 - 1 }), name, fileType: fc.integer({ min: 1, max: 7 }) }), { maxLength: 60 }), fc.boolean(), (entries, csum) => {
        const blocks = buildDirBlocks(entries, 4096, csum ? { seed: 1, ino: 2, generation: 3 } : undefined);
        const out = blocks.flatMap((b) => decodeDirBlock(b, true, 'd', 0));
        assert.deepEqual(out.map((e) => [e.inode, Buffer.from(e.nameBytes).toString('hex'), e.fileType]), entries.map((e) => [e.ino, Buffer.from(e.name).toString('hex'), e.fileType]));
      }),
    );
    const bad = new Uint8Array(1024);
    new DataView(bad.buffer).setUint16(4, 3, true);
    new DataView(bad.buffer).setUint32(0, 5, true);
    assert.throws(() => decodeDirBlock(bad, true, 'd', 0), CorruptImageError);
  });

  test('inodes round trip times (with epochs) and checksums', () => {
    const raw = encodeInode({ mode: 0o100644, linksCount: 1, size: 2 ** 40 + 5, blocks512: 2 ** 33, uid: 70000, gid: 80000, time: { sec: 2 ** 33 + 7, nsec: 999_999_999 }, atime: { sec: -5, nsec: 1 } }, 256);
    setInodeChecksum(7, 12, raw);
    const ino = decodeInode(raw, 12, 4096, true, 0);
    assert.deepEqual([ino.size, ino.uid, ino.gid, ino.mtime, ino.atime, ino.blocks512], [2 ** 40 + 5, 70000, 80000, { sec: 2 ** 33 + 7, nsec: 999_999_999 }, { sec: -5, nsec: 1 }, 2 ** 33]);
    assert.equal(storedInodeChecksum(raw), inodeChecksum(7, 12, raw).value);
  });

  test('the allocator finds runs, wraps, and reports no space', () => {
    const a = new BlockAllocator(100);
    a.mark(0, 10);
    a.mark(20, 5);
    assert.deepEqual(a.alloc(15, 0), [[10, 10], [25, 5]]);
    assert.deepEqual(a.alloc(5, 98), [[98, 2], [30, 3]]);
    assert.throws(() => a.alloc(1000), /no space/);
  });
});

describe('ext4 write → read round trip (in memory)', () => {
  test('random trees written by the writer read back identically; the block map accounts for every block', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.record({ dir: fc.integer({ min: 0, max: 3 }), name: fc.stringMatching(/^[a-z0-9._-]{1,40}$/), size: fc.oneof(fc.integer({ min: 0, max: 100 }), fc.integer({ min: 0, max: 300_000 })), seed: fc.integer() }), { maxLength: 25 }),
        async (files) => {
          const disk = new MemoryDisk(24 * 2 ** 20);
          await mkfs(disk, FIXED);
          const w = await Ext4Writer.open(await Ext4.open(disk), { now: () => ({ sec: 1, nsec: 0 }) });
          const dirs = ['/', '/a', '/a/b', '/c'];
          await w.mkdir('/a');
          await w.mkdir('/a/b');
          await w.mkdir('/c');
          const expected = new Map<string, Uint8Array>();
          for (const f of files) {
            const path = `${dirs[f.dir] === '/' ? '' : dirs[f.dir]}/${f.name}`;
            if (f.name === '.' || f.name === '..' || ['a', 'c'].includes(f.name)) continue;
            const data = new Uint8Array(f.size);
            for (let i = 0; i < data.length; i += 97) data[i] = (f.seed + i) & 0xff;
            await w.writeFile(path, data);
            expected.set(path, data);
          }
          await w.close();
          const fs = await Ext4.open(disk, { strict: true });
          for (const [path, data] of expected) assert.ok(Buffer.from(await fs.readFile(path)).equals(Buffer.from(data)), path);
          const map = await buildBlockMap(fs);
          assert.equal(map.freeCount(), fs.sb.freeBlocksCount);
          assert.equal(map.claimedButFree, 0);
          assert.equal(map.multiplyClaimed, 0);
          let unowned = 0;
          for (let b = 0; b < map.blocksCount; b++) if (map.kind[b] === BlockKind.unowned) unowned++;
          assert.equal(unowned, 0);
        },
      ),
      { numRuns: 15 },
    );
  });
});
