import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import fc from 'fast-check';
import '../helpers/setup.ts';
import { FileDisk, MemoryDisk } from '../../src/io/disk.ts';
import { CorruptImageError, LivestickError } from '../../src/errors.ts';
import { writeSquashfs } from '../../src/fs/squashfs/writer.ts';
import { SquashfsReader } from '../../src/fs/squashfs/reader.ts';
import { dirNode, fileNode, type DirNode } from '../../src/fs/squashfs/tree.ts';
import { lz4FromSettings } from '../../src/fs/squashfs/comp/lz4.ts';
import { posToRef, posToRefNumber, refToPos } from '../../src/fs/squashfs/metadata.ts';

function sampleTree(): DirNode {
  const shared = fileNode('shared content\n', { mode: 0o600, uid: 1000, gid: 1000, mtime: 5 });
  const big = new Uint8Array(300_000);
  for (let i = 0; i < big.length; i++) big[i] = (i * 31) % 251;
  big.fill(0, 131072, 262144);
  return dirNode({ mtime: 9 }, {
    'a.txt': fileNode('alpha\n', { xattrs: [{ name: 'user.k', value: Buffer.from('v') }] }),
    big: fileNode(big),
    link1: shared,
    sub: dirNode({ mode: 0o750 }, {
      link2: shared,
      sym: { type: 'symlink', target: '../a.txt', mode: 0o777, uid: 0, gid: 0, mtime: 1 },
      tty: { type: 'chardev', major: 4, minor: 300, mode: 0o620, uid: 0, gid: 5, mtime: 1 },
      sock: { type: 'socket', mode: 0o755, uid: 0, gid: 0, mtime: 1 },
      streamed: { type: 'file', size: 10, content: { kind: 'stream', open: async function* () { yield Buffer.from('01234'); yield Buffer.from('56789'); } }, mode: 0o644, uid: 0, gid: 0, mtime: 1 },
    }),
  });
}

async function build(threads: number, compressor: 'gzip' | 'zstd' | 'lz4' | 'xz' = 'gzip'): Promise<Uint8Array> {
  const disk = new MemoryDisk(0);
  await writeSquashfs(sampleTree(), disk, { compressor, threads, mtime: undefined, mkfsTime: 1_700_000_000 });
  return disk.bytes.slice();
}

test('writer is deterministic whatever the thread count, and the bytes are pinned', async () => {
  const a = await build(0);
  const b = await build(1);
  const c = await build(2);
  assert.deepEqual(b, a);
  assert.deepEqual(c, a);
  // Pinned: a change here is a format change; check it with the oracle suites before updating.
  assert.equal(createHash('sha256').update(a).digest('hex'), PINNED_GZIP);
});

test('in-memory tree round-trips through the reader (hard links, sparse, xattrs, devices, sockets, streams)', async () => {
  for (const comp of ['gzip', 'zstd', 'lz4', 'xz'] as const) {
    const disk = new MemoryDisk(await build(0, comp), { readOnly: true });
    const r = await SquashfsReader.open(disk);
    assert.equal(Buffer.from(await r.readFile('a.txt')).toString(), 'alpha\n');
    assert.deepEqual((await r.xattrs(await r.lookup('a.txt'))).map((x) => x.name), ['user.k']);
    const l1 = await r.lookup('link1');
    const l2 = await r.lookup('sub/link2');
    assert.equal(l1.inodeNumber, l2.inodeNumber);
    assert.equal(l1.nlink, 2);
    const big = await r.readFile('big');
    assert.equal(big[131072 + 5], 0);
    assert.equal(big[299_999], (299_999 * 31) % 251);
    const bigInode = await r.lookup('big');
    assert.equal(bigInode.kind === 'file' && bigInode.blockSizes[1], 0, 'the all-zero block is sparse');
    assert.equal(Buffer.from(await r.readFile('sub/streamed')).toString(), '0123456789');
    const tty = await r.lookup('sub/tty');
    assert.equal(tty.kind, 'chardev');
    assert.equal((await r.lookup('sub/sock')).kind, 'socket');
    assert.equal(r.gid(tty), 5);
  }
});

test('lz4 block codec round-trips arbitrary data, fast and HC', () => {
  const codecs = [lz4FromSettings({}), lz4FromSettings({ hc: true })];
  fc.assert(fc.property(fc.uint8Array({ maxLength: 5000 }), fc.integer({ min: 0, max: 3 }), fc.boolean(), (data, rep, hc) => {
    const src = new Uint8Array(Buffer.concat(Array.from({ length: rep + 1 }, () => data)));
    const codec = codecs[hc ? 1 : 0] as (typeof codecs)[number];
    const c = codec.compress(src);
    if (c.byteLength < src.byteLength) assert.deepEqual(new Uint8Array(codec.decompress(c, src.byteLength)), src);
  }), { numRuns: 200 });
});

async function readAll(bytes: Uint8Array): Promise<void> {
  const r = await SquashfsReader.open(new MemoryDisk(bytes, { readOnly: true }), { cacheBytes: 1 << 20 });
  for await (const e of r.walk()) {
    if (e.inode.kind === 'file') await r.readFile(e.inode);
    await r.xattrs(e.inode);
  }
}

test('truncated images give typed errors', async () => {
  for (const comp of ['gzip', 'zstd', 'lz4', 'xz'] as const) {
    const good = await build(0, comp);
    const used = new DataView(good.buffer).getUint32(40, true);
    await readAll(good.slice(0, used));
    for (let len = 0; len < used; len += 97) {
      await assert.rejects(readAll(good.slice(0, len)), (err) => err instanceof LivestickError, `length ${len}`);
    }
  }
});

test('fuzzed images give typed errors or read cleanly, in bounded time', async () => {
  const good = await build(0, 'gzip');
  const used = new DataView(good.buffer).getUint32(40, true);
  await fc.assert(fc.asyncProperty(fc.array(fc.tuple(fc.integer({ min: 0, max: used - 1 }), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 8 }), async (edits) => {
    const bad = good.slice();
    for (const [at, v] of edits) bad[at] = v;
    const started = Date.now();
    try {
      await readAll(bad);
    } catch (err) {
      if (!(err instanceof LivestickError)) throw err;
    }
    assert.ok(Date.now() - started < 5000);
  }), { numRuns: 250 });
});

const PINNED_GZIP = '5a079119ca7beb1ee53f64308f8dded41877b5ef7546ecd845dc5485d6b958e9';

test('merge hook: a file re-written from a Disk with verbatim stored blocks keeps their bytes and reads back equal', async () => {
  const first = new MemoryDisk(await build(0, 'zstd'), { readOnly: true });
  const r1 = await SquashfsReader.open(first);
  const big = await r1.lookup('big');
  assert.equal(big.kind, 'file');
  if (big.kind !== 'file') return;
  const src = await r1.openFileDisk(big);
  let copied = 0;
  const tree = dirNode({}, {
    'rootfs.img': {
      type: 'file', size: src.size, mode: 0o644, uid: 0, gid: 0, mtime: 1,
      content: {
        kind: 'disk', disk: src,
        // Block 0 is "unchanged": hand over its stored bytes; the rest is read and compressed.
        verbatim: async (i) => {
          if (i !== 0) return undefined;
          copied++;
          return r1.storedBlock(big, 0);
        },
      },
    },
  });
  const out = new MemoryDisk(0);
  await writeSquashfs(tree, out, { compressor: 'zstd', threads: 0, mkfsTime: 0 });
  assert.equal(copied, 1);
  const r2 = await SquashfsReader.open(new MemoryDisk(out.bytes, { readOnly: true }));
  assert.deepEqual(await r2.readFile('rootfs.img'), await r1.readFile(big));
  const f2 = await r2.lookup('rootfs.img');
  assert.ok(f2.kind === 'file');
  if (f2.kind === 'file') assert.deepEqual(await r2.storedBlock(f2, 0), await r1.storedBlock(big, 0));
});

async function craft(tree: DirNode): Promise<Uint8Array> {
  const disk = new MemoryDisk(0);
  await writeSquashfs(tree, disk, { threads: 0, mkfsTime: 0, uncompressedMetadata: true });
  return disk.bytes.slice();
}

function findEntry(img: Uint8Array, type: number, name: string): number {
  const pat = Buffer.concat([Buffer.from([type, 0, name.length - 1, 0]), Buffer.from(name, 'latin1')]);
  const at = Buffer.from(img).indexOf(pat, 96);
  assert.ok(at > 0, `entry ${name} not found`);
  return at - 4; // the entry starts with u16 offset, s16 delta
}

test('crafted: a directory entry pointing back at the root is a typed cycle error', async () => {
  const img = await craft(dirNode({}, { a: dirNode({}, { f: fileNode('x') }), b: fileNode('y') }));
  const r0 = await SquashfsReader.open(new MemoryDisk(img.slice(), { readOnly: true }));
  const rootRef = r0.superblock.rootInode;
  const root = await r0.root();
  const a = await r0.lookup('a');
  const e = findEntry(img, 1, 'a');
  const dv = new DataView(img.buffer, img.byteOffset);
  const base = a.inodeNumber - dv.getInt16(e + 2, true);
  dv.setUint16(e, Number(rootRef & 0xffffn), true);
  dv.setInt16(e + 2, root.inodeNumber - base, true);
  assert.equal(Number(rootRef >> 16n), 0, 'tiny image: the root inode is in the first inode block');
  const r = await SquashfsReader.open(new MemoryDisk(img, { readOnly: true }));
  await assert.rejects(async () => {
    for await (const _ of r.walk());
  }, (err: unknown) => err instanceof LivestickError && err.code === 'CORRUPT_IMAGE' && /appears twice/.test(err.message));
});

test('crafted: ".." as an entry name is refused', async () => {
  const img = await craft(dirNode({}, { ab: fileNode('x') }));
  const e = findEntry(img, 2, 'ab');
  img[e + 8] = 0x2e;
  img[e + 9] = 0x2e;
  const r = await SquashfsReader.open(new MemoryDisk(img, { readOnly: true }));
  await assert.rejects(r.readdir('/'), (err: unknown) => err instanceof LivestickError && /"\.\."/.test(err.message));
});

test('crafted: a duplicate name (symlink out, then a directory of the same name) cannot write outside DEST', async () => {
  const { tempDir } = await import('../helpers/tmp.ts');
  const { existsSync, mkdirSync } = await import('node:fs');
  const { join } = await import('node:path');
  const { extractSquashfs } = await import('../../src/fs/squashfs/extract.ts');
  const t = tempDir('sqfs-dup-');
  try {
    const outside = join(t.dir, 'outside');
    mkdirSync(outside);
    const img = await craft(dirNode({}, {
      x: { type: 'symlink', target: outside, mode: 0o777, uid: 0, gid: 0, mtime: 0 },
      y: dirNode({}, { f: fileNode('pwned') }),
    }));
    const e = findEntry(img, 1, 'y');
    img[e + 8] = 0x78; // "y" -> "x"
    const r = await SquashfsReader.open(new MemoryDisk(img, { readOnly: true }));
    await assert.rejects(extractSquashfs(r, join(t.dir, 'dest')), (err: unknown) => err instanceof LivestickError && /duplicate name/.test(err.message));
    assert.equal(existsSync(join(outside, 'f')), false);
  } finally {
    t.cleanup();
  }
});

test('export table maps every inode number to that inode', async () => {
  const { readLookupTable } = await import('../../src/fs/squashfs/tables.ts');
  const disk = new MemoryDisk(await build(0, 'gzip'), { readOnly: true });
  const r = await SquashfsReader.open(disk);
  const sb = r.superblock;
  assert.ok(sb.lookupTableStart !== undefined);
  const raw = await readLookupTable(disk, r.compressor, sb.lookupTableStart as number, sb.inodes, 8, sb.bytesUsed, 'export');
  const dv = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  let checked = 0;
  for await (const e of r.walk()) {
    const ref = dv.getBigUint64((e.inode.inodeNumber - 1) * 8, true);
    const inode = await r.inodeAt(Number(ref >> 16n), Number(ref & 0xffffn));
    assert.equal(inode.inodeNumber, e.inode.inodeNumber);
    checked++;
  }
  assert.ok(checked >= sb.inodes);
});

test('extract on decode threads: a corrupt data block is a typed error naming the block, for every codec', async () => {
  const { tempDir } = await import('../helpers/tmp.ts');
  const { existsSync } = await import('node:fs');
  const { join } = await import('node:path');
  const { extractSquashfs } = await import('../../src/fs/squashfs/extract.ts');
  const t = tempDir('sqfs-threads-');
  try {
    for (const comp of ['xz', 'zstd', 'lz4', 'gzip'] as const) {
      const img = await build(0, comp);
      const r0 = await SquashfsReader.open(new MemoryDisk(img, { readOnly: true }));
      const ok = join(t.dir, `ok-${comp}`);
      await extractSquashfs(r0, ok, '', { threads: 2 });
      assert.deepEqual(new Uint8Array(readFileSync(join(ok, 'big'))), await r0.readFile('big'));
      const big = await r0.lookup('big');
      assert.ok(big.kind === 'file');
      const r1 = await SquashfsReader.open(new MemoryDisk(img, { readOnly: true }));
      assert.equal(r1.startDecodeThreads(2), comp === 'xz', 'xz decodes on workers; zstd and lz4 are faster inline, gzip has its own async decoder');
      assert.deepEqual(await r1.readFile('big'), await r0.readFile('big'));
      await r1.stopDecodeThreads();
      const bad = img.slice();
      for (let i = 0; i < 40; i++) bad[big.blocksStart + i] = (bad[big.blocksStart + i] as number) ^ 0x5a;
      const badPath = join(t.dir, `bad-${comp}.sqfs`);
      writeFileSync(badPath, bad);
      const fileDisk = await FileDisk.open(badPath, { readOnly: true });
      try {
        // In memory: read-ahead on this thread; in a file: workers read, decode and write.
        for (const [how, disk] of [['memory', new MemoryDisk(bad, { readOnly: true })], ['file', fileDisk]] as const) {
          const r = await SquashfsReader.open(disk);
          assert.equal(r.fileExtractor(0), undefined);
          const out = join(t.dir, `bad-${comp}-${how}`);
          await assert.rejects(extractSquashfs(r, out, '', { threads: 2 }), (err: unknown) => err instanceof CorruptImageError && new RegExp(`block at ${big.blocksStart}.*${comp === 'gzip' ? '' : comp}`).test(err.message), `${comp} ${how}`);
          // Read-ahead stops at the bad file; workers may have written later files by the time it fails.
          if (how === 'memory') assert.equal(existsSync(join(out, 'sub', 'streamed')), false, 'extraction stopped at the bad file');
        }
        const good = join(t.dir, `good-${comp}.sqfs`);
        writeFileSync(good, img);
        const gd = await FileDisk.open(good, { readOnly: true });
        try {
          const out = join(t.dir, `good-${comp}-file`);
          const res = await extractSquashfs(await SquashfsReader.open(gd), out, '', { threads: 2 });
          assert.deepEqual(new Uint8Array(readFileSync(join(out, 'big'))), await r0.readFile('big'));
          assert.equal(readFileSync(join(out, 'sub', 'streamed'), 'utf8'), '0123456789');
          assert.equal(res.hardlinks, 1);
        } finally {
          await gd.close();
        }
      } finally {
        await fileDisk.close();
      }
    }
  } finally {
    t.cleanup();
  }
});

test('extract into a fresh or an occupied DEST: things in the way are replaced, never followed; sizes, modes and times hold', async () => {
  const { tempDir } = await import('../helpers/tmp.ts');
  const { mkdirSync, readdirSync, statSync, lstatSync, symlinkSync } = await import('node:fs');
  const { join } = await import('node:path');
  const { extractSquashfs } = await import('../../src/fs/squashfs/extract.ts');
  const zeroTail = new Uint8Array(300_000);
  zeroTail.set([1, 2, 3]);
  const withHole = new Uint8Array(400_000).fill(7);
  withHole.fill(0, 262_144);
  const tree = dirNode({ mode: 0o755, mtime: 50 }, {
    d: dirNode({ mode: 0o750, mtime: 100 }, {
      big: fileNode(withHole, { mode: 0o600, mtime: 300 }),
      small: fileNode('small\n', { mode: 0o640, mtime: 200 }),
      tailzero: fileNode(zeroTail, { mode: 0o444, mtime: 400 }),
      empty: fileNode(new Uint8Array(0), { mode: 0o604, mtime: 500 }),
    }),
    e: dirNode({ mode: 0o700, mtime: 110 }, { g: fileNode('g\n', { mtime: 120 }) }),
    l: { type: 'symlink', target: 'd/small', mode: 0o777, uid: 0, gid: 0, mtime: 1 },
  });
  const t = tempDir('sqfs-dest-');
  try {
    const imgPath = join(t.dir, 'img.sqfs');
    await writeSquashfs(tree, imgPath, { compressor: 'zstd', blockSize: 65536, mkfsTime: 0 });
    const outside = join(t.dir, 'outside');
    mkdirSync(outside);
    const check = (dest: string, what: string): void => {
      assert.deepEqual(readdirSync(outside), [], `${what}: nothing written through a symlink`);
      assert.ok(lstatSync(join(dest, 'd')).isDirectory(), what);
      assert.ok(lstatSync(join(dest, 'e')).isDirectory(), what);
      assert.equal(lstatSync(join(dest, 'l')).isSymbolicLink(), true, what);
      const expect: Array<[string, Uint8Array, number, number]> = [
        ['d/big', withHole, 0o600, 300],
        ['d/small', Buffer.from('small\n'), 0o640, 200],
        ['d/tailzero', zeroTail, 0o444, 400],
        ['d/empty', new Uint8Array(0), 0o604, 500],
      ];
      for (const [p, bytes, mode, mtime] of expect) {
        const st = statSync(join(dest, p));
        assert.equal(st.size, bytes.byteLength, `${what} ${p} size`);
        assert.deepEqual(new Uint8Array(readFileSync(join(dest, p))), new Uint8Array(bytes), `${what} ${p}`);
        assert.equal(st.mode & 0o7777, mode, `${what} ${p} mode`);
        assert.equal(st.mtimeMs, mtime * 1000, `${what} ${p} mtime`);
      }
      assert.equal(statSync(join(dest, 'd')).mode & 0o7777, 0o750, what);
      assert.equal(statSync(join(dest, 'd')).mtimeMs, 100_000, what);
      assert.equal(readFileSync(join(dest, 'e', 'g'), 'utf8'), 'g\n', what);
    };
    const disk = await FileDisk.open(imgPath, { readOnly: true });
    try {
      for (const [how, threads, d] of [['workers', 2, disk], ['read-ahead', 2, new MemoryDisk(readFileSync(imgPath), { readOnly: true })], ['one thread', 0, disk]] as const) {
        const fresh = join(t.dir, `fresh-${how}`);
        await extractSquashfs(await SquashfsReader.open(d), fresh, '', { threads });
        check(fresh, `${how}, fresh`);
        const busy = join(t.dir, `busy-${how}`);
        mkdirSync(busy);
        symlinkSync(outside, join(busy, 'd'));
        writeFileSync(join(busy, 'e'), 'a file where a directory goes');
        writeFileSync(join(busy, 'l'), 'a file where a symlink goes');
        await extractSquashfs(await SquashfsReader.open(d), busy, '', { threads });
        check(busy, `${how}, occupied`);
        // Extracting again over the result replaces every file in place.
        await extractSquashfs(await SquashfsReader.open(d), busy, '', { threads });
        check(busy, `${how}, again`);
      }
    } finally {
      await disk.close();
    }
  } finally {
    t.cleanup();
  }
});

test('duplicate files share their blocks and fragment; same-size files that differ, and noDedup, do not', async () => {
  const body = new Uint8Array(300_000);
  for (let i = 0; i < body.length; i++) body[i] = (i * 13) % 251;
  const differsAtEnd = body.slice();
  differsAtEnd[body.length - 1] = (differsAtEnd[body.length - 1] as number) ^ 1;
  const tree = (): DirNode => dirNode({}, {
    a: fileNode(body),
    b: fileNode(body.slice()),
    c: fileNode(differsAtEnd),
    d: fileNode(body.subarray(0, 299_999)),
  });
  for (const noDedup of [false, true]) {
    const disk = new MemoryDisk(0);
    await writeSquashfs(tree(), disk, { compressor: 'gzip', mkfsTime: 0, noDedup });
    const r = await SquashfsReader.open(new MemoryDisk(disk.bytes.slice(), { readOnly: true }));
    const [a, b, c, d] = await Promise.all(['a', 'b', 'c', 'd'].map((p) => r.lookup(p)));
    assert.ok(a?.kind === 'file' && b?.kind === 'file' && c?.kind === 'file' && d?.kind === 'file');
    assert.equal(a.blocksStart === b.blocksStart && a.fragment === b.fragment && a.fragmentOffset === b.fragmentOffset, !noDedup, `noDedup ${noDedup}`);
    assert.notEqual(c.blocksStart, a.blocksStart);
    assert.notEqual(d.blocksStart, a.blocksStart);
    for (const [p, bytes] of [['a', body], ['b', body], ['c', differsAtEnd], ['d', body.subarray(0, 299_999)]] as const) assert.deepEqual(await r.readFile(p), bytes, p);
  }
});

test('lookups through the caches: an empty directory whose listing position is the next one’s, and any order of lookups, find what the tree holds', async () => {
  const tree = dirNode({ mtime: 1 }, { a: dirNode({ mtime: 1 }, {}), b: dirNode({ mtime: 1 }, { f: fileNode('x', { mtime: 1 }) }) });
  const disk = new MemoryDisk(0);
  await writeSquashfs(tree, disk, { threads: 0, mkfsTime: 1 });
  const r = await SquashfsReader.open(disk);
  const [a, b] = [await r.lookup('a'), await r.lookup('b')];
  assert.ok(a.kind === 'dir' && b.kind === 'dir');
  assert.deepEqual([a.startBlock, a.offset], [b.startBlock, b.offset], 'the two listings start at one position (what the case is about)');
  await assert.rejects(r.lookup('a/f'), /no such file/);
  assert.equal((await r.lookup('b/f')).kind, 'file');

  // Property: random trees (empty dirs included), every path and some missing ones, in random order, twice.
  type T = { [name: string]: T | string };
  const name = fc.constantFrom('a', 'b', 'c', 'd');
  const shape: fc.Arbitrary<T> = fc.letrec<{ t: T }>((tie) => ({ t: fc.dictionary(name, fc.oneof({ depthSize: 'small' }, fc.constant('file'), tie('t')), { maxKeys: 4 }) })).t;
  await fc.assert(
    fc.asyncProperty(shape, fc.integer(), async (t, seed) => {
      const paths = new Map<string, 'dir' | 'file'>();
      const build = (node: T, at: string): DirNode =>
        dirNode({ mtime: 1 }, Object.fromEntries(Object.entries(node).map(([k, v]) => {
          const p = at === '' ? k : `${at}/${k}`;
          paths.set(p, typeof v === 'string' ? 'file' : 'dir');
          return [k, typeof v === 'string' ? fileNode(p, { mtime: 1 }) : build(v, p)];
        })));
      const d = new MemoryDisk(0);
      await writeSquashfs(build(t, ''), d, { threads: 0, mkfsTime: 1 });
      const reader = await SquashfsReader.open(d);
      const asked = [...paths.keys(), ...[...paths.keys()].map((p) => `${p}/zz`), 'zz'];
      let x = seed >>> 0;
      const order = [...asked, ...asked].map((p) => ({ p, k: (x = (x * 1103515245 + 12345) >>> 0) })).sort((l, m) => l.k - m.k);
      for (const { p } of order) {
        const want = paths.get(p);
        const got = await reader.lookup(p).then((i) => i.kind, () => undefined);
        assert.equal(got, want, p);
      }
    }),
    { numRuns: 150, seed: 2026 },
  );
});

test('metadata references: the Number form (posToRefNumber) is the bigint one, and refToPos reads both back', () => {
  fc.assert(fc.property(fc.integer({ min: 0, max: 2 ** 36 }), fc.integer({ min: 0, max: 65535 }), (block, offset) => {
    assert.equal(BigInt(posToRefNumber(block, offset)), posToRef(block, offset));
    assert.deepEqual(refToPos(posToRefNumber(block, offset)), { block, offset });
    assert.deepEqual(refToPos(posToRef(block, offset)), { block, offset });
  }));
});
