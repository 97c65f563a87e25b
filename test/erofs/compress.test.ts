/** Compressed EROFS writer: round trips through ErofsReader (whole files, random ranges), layouts and features, determinism across thread counts, option errors. */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import '../helpers/setup.ts';
import { tempDir } from '../helpers/tmp.ts';
import { MemoryDisk } from '../../src/io/disk.ts';
import { ErofsReader } from '../../src/fs/erofs/reader.ts';
import { DataLayout } from '../../src/fs/erofs/inode.ts';
import { Incompat } from '../../src/fs/erofs/superblock.ts';
import { decodeCompactPack, decodeMapHeader, Advise, Algorithm, LclusterType } from '../../src/fs/erofs/zmap.ts';
import { writeErofs, type ErofsWriteOptions } from '../../src/fs/erofs/writer.ts';
import { compactMetaSize, compactPackOf, encodeCompactIndexes, parseCompression, zipConfig } from '../../src/fs/erofs/compress.ts';
import { UnsupportedFeatureError } from '../../src/errors.ts';
import { dirNode, fileNode, type DirNode } from '../../src/fs/squashfs/tree.ts';
import { content, rng } from './fixture.ts';

const t = tempDir('erofs-compress-');
after(() => t.cleanup());
let n = 0;

async function write(tree: DirNode, options: ErofsWriteOptions): Promise<{ reader: ErofsReader; bytes: Uint8Array }> {
  const img = join(t.dir, `z${n++}.img`);
  await writeErofs(tree, img, { mkfsTime: 1_700_000_000, ...options });
  const bytes = new Uint8Array(readFileSync(img));
  return { reader: await ErofsReader.open(new MemoryDisk(Uint8Array.from(bytes), { readOnly: true })), bytes };
}

const files: Record<string, Uint8Array> = {
  empty: new Uint8Array(0),
  tiny: content(100, 1),
  block: content(4096, 2),
  'block+1': content(4097, 3),
  text: content(300_000, 4, 0),
  random: content(200_000, 5, 1),
  mixed: content(500_000, 6, 0.3),
  zeros: new Uint8Array(3 << 20),
  'segments': Buffer.concat([content(1 << 20, 7, 0), new Uint8Array(16 << 20), content(70_000, 8, 0.5)]),
};

function tree(): DirNode {
  return dirNode({}, { sub: dirNode({}, Object.fromEntries(Object.entries(files).map(([k, v]) => [k, fileNode(v)]))) });
}

for (const [blockSize, pclusterSize] of [[4096, 4096], [4096, 1 << 20], [512, 512], [512, 65536]] as const) {
  test(`round trip: lzma, ${blockSize}-byte blocks, ${pclusterSize}-byte pclusters: every file and random ranges read back`, { timeout: 300_000 }, async () => {
    const { reader } = await write(tree(), { blockSize, compression: 'lzma,level=6', pclusterSize, threads: 2 });
    const sb = reader.superblock;
    assert.ok(sb.featureIncompat & Incompat.lz4ZeroPadding, 'ZERO_PADDING');
    assert.ok(sb.featureIncompat & Incompat.comprCfgs, 'COMPR_CFGS');
    assert.equal(sb.u1, 1 << Algorithm.lzma);
    assert.ok(reader.comprCfgs.lzma !== undefined);
    const random = rng(blockSize + pclusterSize);
    for (const [name, data] of Object.entries(files)) {
      const inode = await reader.lookup(`sub/${name}`);
      assert.equal(inode.size, data.byteLength, name);
      assert.ok(Buffer.from(await reader.readFile(inode)).equals(Buffer.from(data)), `${name} content`);
      if (data.byteLength > blockSize) {
        assert.equal(inode.layout, DataLayout.compressedCompact, `${name} is compressed`);
        const h = decodeMapHeader(await reader.meta(Math.ceil(inode.bodyPos / 8) * 8, 8));
        assert.ok(!h.wholeFileFragment && h.advise & Advise.compacted2B && h.algorithmType === Algorithm.lzma);
        assert.equal(!h.wholeFileFragment && (h.advise & Advise.bigPcluster1) !== 0, pclusterSize > blockSize);
        for (let i = 0; i < 20; i++) {
          const off = Math.floor(random() * data.byteLength);
          const len = Math.min(data.byteLength - off, 1 + Math.floor(random() * 3 * pclusterSize));
          const buf = new Uint8Array(len);
          await reader.readRange(inode, buf, off);
          assert.ok(Buffer.from(buf).equals(Buffer.from(data.subarray(off, off + len))), `${name} [${off}, +${len})`);
        }
      } else if (data.byteLength > 0) {
        assert.notEqual(inode.layout, DataLayout.compressedCompact, `${name} stays flat`);
      }
    }
    const text = await reader.lookup('sub/text');
    assert.ok(text.raw.u * blockSize < 300_000 / 2, `text compresses (${text.raw.u} blocks)`);
  });
}

for (const [blockSize, pclusterSize, mode] of [[4096, 1 << 20, 'fragments'], [4096, 4096, 'fragments'], [512, 65536, 'fragments'], [4096, 1 << 20, 'allFragments'], [512, 4096, 'allFragments']] as const) {
  test(`round trip: lzma with ${mode}, ${blockSize}-byte blocks, ${pclusterSize}-byte pclusters: files, ranges and long-prefix xattrs read back; tails in the packed inode`, { timeout: 300_000 }, async () => {
    const xattrs = [{ name: 'trusted.overlay.opaque', value: Buffer.from('y') }, { name: 'user.one', value: Buffer.from('1') }];
    const tr = tree();
    (tr.entries.get('sub') as DirNode).entries.set('x', fileNode(content(10_000, 21), { xattrs }));
    const { reader } = await write(tr, { blockSize, compression: 'lzma,level=6', pclusterSize, threads: 2, [mode]: true });
    const sb = reader.superblock;
    assert.ok(sb.featureIncompat & Incompat.fragments, 'FRAGMENTS');
    assert.notEqual(sb.packedNid, 0);
    const packed = await reader.inode(sb.packedNid);
    assert.equal(packed.layout, DataLayout.compressedCompact, 'the packed inode is compressed');
    const random = rng(blockSize + pclusterSize + 1);
    for (const [name, data] of Object.entries({ ...files, x: content(10_000, 21) })) {
      const inode = await reader.lookup(`sub/${name}`);
      assert.ok(Buffer.from(await reader.readFile(inode)).equals(Buffer.from(data)), `${name} content`);
      if (data.byteLength === 0) continue;
      const h = decodeMapHeader(await reader.meta(Math.ceil(inode.bodyPos / 8) * 8, 8));
      if (mode === 'allFragments' || data.byteLength <= pclusterSize) assert.ok(h.wholeFileFragment, `${name} is a whole-file fragment`);
      else assert.ok(h.wholeFileFragment || h.advise & Advise.fragmentPcluster, `${name} has its tail in the packed inode`);
      for (let i = 0; i < 10; i++) {
        const off = Math.floor(random() * data.byteLength);
        const len = Math.min(data.byteLength - off, 1 + Math.floor(random() * 2 * pclusterSize));
        const buf = new Uint8Array(len);
        await reader.readRange(inode, buf, off);
        assert.ok(Buffer.from(buf).equals(Buffer.from(data.subarray(off, off + len))), `${name} [${off}, +${len})`);
      }
    }
    assert.deepEqual((await reader.xattrs('sub/x')).map((x) => x.name).sort(), ['trusted.overlay.opaque', 'user.one']);
    assert.ok(sb.xattrPrefixCount > 0, 'trusted.overlay. is a long prefix, stored in the packed inode');
  });
}

test('fragments: the same bytes with 0 and 3 threads', { timeout: 300_000 }, async () => {
  const small = dirNode({}, { a: fileNode(content(900_000, 11, 0.1)), c: fileNode(content(5000, 12)), d: fileNode(content(40_000, 13, 1)) });
  const a = await write(small, { compression: 'lzma', pclusterSize: 65536, fragments: true, threads: 0 });
  const b = await write(small, { compression: 'lzma', pclusterSize: 65536, fragments: true, threads: 3 });
  assert.ok(Buffer.from(a.bytes).equals(Buffer.from(b.bytes)));
});

test('round trip: random files of compressible and random runs, lzma at 4 KiB and 64 KiB pclusters', { timeout: 300_000 }, async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.tuple(fc.integer({ min: 0, max: 150_000 }), fc.integer(), fc.double({ min: 0, max: 1, noNaN: true })), { minLength: 1, maxLength: 6 }),
      fc.constantFrom(4096, 65536),
      async (specs, pclusterSize) => {
        const data = specs.map(([size, seed, share]) => content(size, seed, share));
        const { reader } = await write(dirNode({}, Object.fromEntries(data.map((d, i) => [`f${i}`, fileNode(d)]))), { compression: 'lzma,level=1', pclusterSize, threads: 0 });
        for (let i = 0; i < data.length; i++) assert.ok(Buffer.from(await reader.readFile(`f${i}`)).equals(Buffer.from(data[i] as Uint8Array)), `f${i}`);
      },
    ),
    { numRuns: 12, seed: 14 },
  );
});

test('determinism: the same bytes with 0, 1 and 3 threads; a pinned sha-256 (lzma level 6, 1 MiB pclusters)', { timeout: 300_000 }, async () => {
  const small = dirNode({}, { a: fileNode(content(900_000, 11, 0.1)), b: fileNode(new Uint8Array(2 << 20)), c: fileNode(content(5000, 12)), d: fileNode(content(40_000, 13, 1)) });
  const hashes = new Set<string>();
  for (const threads of [0, 1, 3]) {
    const { bytes } = await write(small, { compression: 'lzma,level=6', pclusterSize: 1 << 20, threads, uuid: '01234567-89ab-cdef-0123-456789abcdef' });
    hashes.add(createHash('sha256').update(bytes).digest('hex'));
  }
  assert.equal(hashes.size, 1);
  assert.equal([...hashes][0], PINNED);
});
const PINNED = '63a10dadb6984467b109855d1d4b1ad2ad0203abd7b22051a0346b11306eb728';

test('a Disk full of garbage ends up with the same bytes as a fresh file (lzma with fragments, and all-fragments); a file shorter than its size is refused', async () => {
  for (const extra of [{}, { fragments: true }, { allFragments: true }]) {
    const opts: ErofsWriteOptions = { compression: 'lzma', pclusterSize: 65536, threads: 1, ...extra };
    const withXattrs = (): DirNode => {
      const tr = tree();
      (tr.entries.get('sub') as DirNode).entries.set('x', fileNode(content(10_000, 21), { xattrs: [{ name: 'user.a', value: Buffer.from('1') }] }));
      return tr;
    };
    const { bytes } = await write(withXattrs(), opts);
    const disk = new MemoryDisk(new Uint8Array(bytes.byteLength + 8192).fill(0xee));
    const r = await writeErofs(withXattrs(), disk, { mkfsTime: 1_700_000_000, ...opts });
    const d = new Uint8Array(r.size);
    await disk.read(d, 0);
    assert.ok(Buffer.from(d).equals(Buffer.from(bytes)), JSON.stringify(extra));
  }
  const liar = fileNode(content(10_000, 1));
  liar.size = 20_000;
  await assert.rejects(write(dirNode({}, { liar }), { compression: 'lzma', threads: 0 }), RangeError);
  await assert.rejects(write(dirNode({}, { liar }), { compression: 'lzma', threads: 2, allFragments: true }), RangeError);
});

test('dedupe: identical files share their pclusters and fragment (plain, fragments, all-fragments, zstd); every copy reads back; the image shrinks', { timeout: 300_000 }, async () => {
  const text = content(400_000, 31, 0.05);
  const small = content(3000, 32);
  const dupTree = (): DirNode => dirNode({}, {
    a: fileNode(text), b: fileNode(Uint8Array.from(text)), c: dirNode({}, { d: fileNode(Uint8Array.from(text)) }),
    s1: fileNode(small), s2: fileNode(Uint8Array.from(small)), other: fileNode(content(400_000, 33, 0.05)),
  });
  for (const extra of [{}, { fragments: true }, { allFragments: true }, { compression: 'zstd' }]) {
    const opts: ErofsWriteOptions = { compression: 'lzma', pclusterSize: 65536, threads: 1, ...extra };
    const plain = await write(dupTree(), { ...opts, dedupe: false });
    const { reader, bytes } = await write(dupTree(), { ...opts, dedupe: true });
    const what = JSON.stringify(extra);
    const byDefault = await write(dupTree(), opts);
    // With fragments, dedupe is the default (as mkfs.erofs's fragdedupe); without them it is asked for.
    assert.ok(Buffer.from(byDefault.bytes).equals(Buffer.from('fragments' in extra || 'allFragments' in extra ? bytes : plain.bytes)), `${what}: the default`);
    for (const [p, data] of [['a', text], ['b', text], ['c/d', text], ['s1', small], ['s2', small], ['other', content(400_000, 33, 0.05)]] as const) {
      assert.ok(Buffer.from(await reader.readFile(p)).equals(Buffer.from(data)), `${what} ${p}`);
    }
    const [a, b] = [await reader.lookup('a'), await reader.lookup('b')];
    assert.notEqual(a.nid, b.nid, 'copies, not hard links');
    if (!('allFragments' in extra)) assert.ok(bytes.byteLength <= plain.bytes.byteLength - 2 * a.raw.u * 4096 + 4096, `${what}: ${bytes.byteLength} vs ${plain.bytes.byteLength}`);
    else assert.ok(bytes.byteLength < plain.bytes.byteLength, `${what}: ${bytes.byteLength} vs ${plain.bytes.byteLength}`);
  }
  await assert.rejects(write(dupTree(), { dedupe: true }), RangeError);
});

test('dedupe: a file that extends another shares its leading pclusters (not the one holding the difference) only with dedupe; both read back', { timeout: 300_000 }, async () => {
  const base = content(6 << 20, 41, 0.002);
  const near = Buffer.concat([base, Buffer.from('changed\n')]);
  for (const fragments of [false, true]) {
    const starts = async (r: ErofsReader, p: string) => (await r.compressedExtents(await r.lookup(p))).extents.filter((x) => x.source === 'blocks').map((x) => x.pa);
    const sizes: number[] = [];
    for (const dedupe of [false, true]) {
      const img = join(t.dir, `near-${fragments}-${dedupe}.img`);
      const result = await writeErofs(dirNode({}, { a: fileNode(base), b: fileNode(near) }), img, { compression: 'lzma', pclusterSize: 1 << 20, fragments, dedupe, threads: 2, mkfsTime: 1_700_000_000 });
      const r = await ErofsReader.open(new MemoryDisk(new Uint8Array(readFileSync(img)), { readOnly: true }));
      assert.ok(Buffer.from(await r.readFile('b')).equals(near) && Buffer.from(await r.readFile('a')).equals(Buffer.from(base)));
      const [a, b] = [await starts(r, 'a'), await starts(r, 'b')];
      const common = b.filter((pa) => a.includes(pa)).length;
      const what = `fragments ${fragments}, dedupe ${dedupe}`;
      if (dedupe) {
        assert.ok(common >= 3 && common === result.shared.pclusters, `${what}: ${common} shared, result says ${result.shared.pclusters}`);
        assert.ok(b.length > common || fragments, `${what}: the last pcluster holds the difference`);
      } else assert.equal(common + result.shared.pclusters, 0, what);
      sizes.push(result.size);
    }
    assert.ok((sizes[1] as number) <= (sizes[0] as number) - (3 << 20), `fragments ${fragments}: ${sizes.join(' vs ')}`);
  }
});

test('options: compression names, levels and pcluster sizes are checked', () => {
  assert.deepEqual(parseCompression('lzma'), { algorithm: Algorithm.lzma, level: 6 });
  assert.deepEqual(parseCompression('lzma,level=109'), { algorithm: Algorithm.lzma, level: 109 });
  assert.throws(() => parseCompression('lzma,level=10'), RangeError);
  assert.throws(() => parseCompression('lzma,dict=1'), RangeError);
  assert.throws(() => parseCompression('brotli'), RangeError);
  assert.throws(() => parseCompression('lzma,level=x'), RangeError);
  assert.throws(() => zipConfig(parseCompression('lzma'), 4096, 6000), RangeError);
  assert.throws(() => zipConfig(parseCompression('lzma'), 4096, 2 << 20), RangeError);
  assert.throws(() => zipConfig(parseCompression('lzma'), 4096, 2048), RangeError);
  assert.equal(zipConfig(parseCompression('lzma'), 4096, 1 << 20).dictSize, 4 << 20);
});

test('options: writeErofs rejects a pcluster size without compression and compression with chunks', async () => {
  await assert.rejects(write(tree(), { pclusterSize: 8192 }), RangeError);
  await assert.rejects(write(tree(), { compression: 'lzma', chunkSize: 8192 }), RangeError);
  await assert.rejects(write(tree(), { compression: 'lzma', pclusterSize: 12345 }), RangeError);
  await assert.rejects(write(tree(), { fragments: true }), RangeError);
  await assert.rejects(write(tree(), { allFragments: true }), RangeError);
});

test('compact indexes: the encoder checks its extents and sizes itself as compactMetaSize says', () => {
  const bs = 4096;
  const ok = [{ la: 0, length: 10_000, pblk: 10, blocks: 1, plain: false }, { la: 10_000, length: 4096, pblk: 11, blocks: 1, plain: true }, { la: 14_096, length: 1000, pblk: 12, blocks: 1, plain: true }];
  for (const headerPos of [4096 + 40, 4096 + 64, 4096 + 72, 4096 + 80]) {
    assert.equal(encodeCompactIndexes(ok, 15_096, bs, headerPos, Algorithm.lzma, false).byteLength, compactMetaSize(15_096, bs, headerPos));
  }
  assert.throws(() => encodeCompactIndexes(ok.slice(1), 15_096, bs, 4096 + 64, Algorithm.lzma, false), RangeError, 'a gap');
  assert.throws(() => encodeCompactIndexes(ok, 20_000, bs, 4096 + 64, Algorithm.lzma, false), RangeError, 'short of the size');
  assert.throws(() => encodeCompactIndexes([{ ...(ok[0] as (typeof ok)[0]), blocks: 2 }, ...ok.slice(1)], 15_096, bs, 4096 + 64, Algorithm.lzma, false), RangeError, 'big pcluster without the feature');
  assert.throws(() => encodeCompactIndexes([{ la: 0, length: 3000 * bs, pblk: 1, blocks: 2, plain: false }], 3000 * bs, bs, 4096 + 64, Algorithm.lzma, true), RangeError, 'delta past CBLKCNT');
  assert.throws(() => compactMetaSize(100_000, bs, 4100), RangeError);
  // The last extent starts in lcluster 1 and runs into lcluster 2, which holds EOF: lcluster 2 is a PLAIN head at EOF.
  const eof = encodeCompactIndexes([{ la: 0, length: 5000, pblk: 3, blocks: 1, plain: true }, { la: 5000, length: 4000, pblk: 4, blocks: 1, plain: true }], 9000, bs, 4096 + 56, Algorithm.lzma, false);
  const last = decodeCompactPack(eof.subarray(eof.byteLength - 8), false, 12);
  assert.deepEqual(last.entries[0], { type: LclusterType.plain, lo: 9000 % bs });
  assert.throws(() => encodeCompactIndexes([{ la: 0, length: 9000, pblk: 0, blocks: 0, plain: false, fragment: true }], 9000, bs, 4096 + 56, Algorithm.lzma, false), RangeError, 'a fragment needs its offset');
  assert.equal(encodeCompactIndexes([{ la: 0, length: 9000, pblk: 0, blocks: 0, plain: false, fragment: true }], 9000, bs, 4096 + 56, Algorithm.lzma, false, 77).byteLength, 8, 'a whole-file fragment is its header');
});

test('compact indexes (property): a head alone in its pack (compactPackOf) may point at any block, as shared pclusters do; a head sharing its pack may not', () => {
  const bs = 4096;
  fc.assert(
    fc.property(
      fc.array(fc.record({ lclusters: fc.integer({ min: 2, max: 40 }), extra: fc.integer({ min: 0, max: bs - 1 }), blocks: fc.integer({ min: 1, max: 4 }), far: fc.integer({ min: 0, max: 1 << 20 }) }), { minLength: 1, maxLength: 30 }),
      fc.constantFrom(4096 + 40, 4096 + 64, 4096 + 72, 4096 + 80),
      fc.boolean(),
      (specs, headerPos, big) => {
        let la = 0;
        const extents = specs.map((x) => {
          const e = { la, length: x.lclusters * bs + x.extra, pblk: 0, blocks: big ? Math.min(x.blocks, x.lclusters) : 1, plain: false };
          la += e.length;
          return e;
        });
        const size = la;
        const total = Math.ceil(size / bs);
        const packOf = (at: number) => compactPackOf(Math.floor(at / bs), total, headerPos);
        const alone = extents.map((e, i) => (i === 0 || packOf((extents[i - 1] as (typeof extents)[0]).la) !== packOf(e.la)) && (e.la + e.length >= size || packOf(e.la + e.length) !== packOf(e.la)));
        let next = 100;
        extents.forEach((e, i) => {
          if (alone[i] === true && (specs[i] as (typeof specs)[0]).far % 2 === 1) e.pblk = 5000 + (specs[i] as (typeof specs)[0]).far;
          else {
            e.pblk = next;
            next += e.blocks;
          }
        });
        encodeCompactIndexes(extents, size, bs, headerPos, Algorithm.lzma, big);
        // A head that shares its pack, moved away from its neighbours' blocks, cannot be described.
        const i = alone.findIndex((a, k) => !a && k > 0);
        if (i > 0) {
          const moved = extents.map((e, k) => (k === i ? { ...e, pblk: e.pblk + 7919 } : e));
          assert.throws(() => encodeCompactIndexes(moved, size, bs, headerPos, Algorithm.lzma, big), RangeError);
        }
      },
    ),
    { numRuns: 300 },
  );
});

test('lz4hc at a level other than 12: a typed error; lz4, deflate and zstd levels are checked', async () => {
  assert.throws(() => parseCompression('lz4hc,level=9'), UnsupportedFeatureError);
  await assert.rejects(write(tree(), { compression: 'lz4hc,level=3' }), UnsupportedFeatureError);
  assert.throws(() => parseCompression('lz4,level=1'), RangeError);
  assert.throws(() => parseCompression('deflate,level=13'), RangeError);
  assert.throws(() => parseCompression('zstd,level=0'), RangeError);
  assert.deepEqual(parseCompression('zstd'), { algorithm: Algorithm.zstd, level: 3 });
  assert.deepEqual(parseCompression('deflate'), { algorithm: Algorithm.deflate, level: 9 });
  assert.deepEqual(parseCompression('lz4hc'), { algorithm: Algorithm.lz4, level: 12 });
});

for (const [spec, alg] of [['lz4', Algorithm.lz4], ['lz4hc', Algorithm.lz4], ['deflate,level=6', Algorithm.deflate], ['zstd,level=12', Algorithm.zstd]] as const) {
  for (const [blockSize, pclusterSize, fragments] of [[4096, 65536, false], [512, 4096, true]] as const) {
    test(`round trip: ${spec}, ${blockSize}-byte blocks, ${pclusterSize}-byte pclusters${fragments ? ', fragments' : ''}: files and ranges read back; its config record`, { timeout: 300_000 }, async () => {
      const { reader } = await write(tree(), { blockSize, compression: spec, pclusterSize, fragments, threads: 1 });
      assert.equal(reader.superblock.u1, 1 << alg);
      if (alg === Algorithm.lz4) assert.deepEqual(reader.comprCfgs.lz4, { maxDistance: 65535, maxPclusterBlocks: pclusterSize / blockSize });
      if (alg === Algorithm.deflate) assert.deepEqual(reader.comprCfgs.deflate, { windowBits: 15 });
      if (alg === Algorithm.zstd) assert.deepEqual(reader.comprCfgs.zstd, { format: 0, windowLog: 10 });
      const random = rng(blockSize + alg);
      for (const [name, data] of Object.entries(files)) {
        const inode = await reader.lookup(`sub/${name}`);
        assert.ok(Buffer.from(await reader.readFile(inode)).equals(Buffer.from(data)), `${name} content`);
        for (let i = 0; i < 8 && data.byteLength > 0; i++) {
          const off = Math.floor(random() * data.byteLength);
          const len = Math.min(data.byteLength - off, 1 + Math.floor(random() * 2 * pclusterSize));
          const buf = new Uint8Array(len);
          await reader.readRange(inode, buf, off);
          assert.ok(Buffer.from(buf).equals(Buffer.from(data.subarray(off, off + len))), `${name} [${off}, +${len})`);
        }
      }
      const text = await reader.lookup('sub/text');
      if (!fragments) assert.ok(text.raw.u * blockSize < 300_000 / 2, `text compresses (${text.raw.u} blocks)`);
    });
  }
}

test('determinism: zstd and deflate give the same bytes with 0 and 2 threads', { timeout: 300_000 }, async () => {
  for (const compression of ['zstd', 'deflate']) {
    const small = dirNode({}, { a: fileNode(content(900_000, 11, 0.1)), d: fileNode(content(40_000, 13, 1)) });
    const a = await write(small, { compression, pclusterSize: 65536, threads: 0 });
    const b = await write(small, { compression, pclusterSize: 65536, threads: 2 });
    assert.ok(Buffer.from(a.bytes).equals(Buffer.from(b.bytes)), compression);
  }
});
