/** EROFS writer: random trees read back by ErofsReader equal the tree; determinism; compact/extended and inline/plain choices. */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import '../helpers/setup.ts';
import { tempDir } from '../helpers/tmp.ts';
import { MemoryDisk } from '../../src/io/disk.ts';
import { ErofsReader } from '../../src/fs/erofs/reader.ts';
import { DataLayout } from '../../src/fs/erofs/inode.ts';
import { decodeIbodyHeader } from '../../src/fs/erofs/xattr.ts';
import { writeErofs } from '../../src/fs/erofs/writer.ts';
import { ErofsFileSystem } from '../../src/fs/erofs/filesystem.ts';
import { treeFromFileSystem } from '../../src/fs/squashfs/from-fs.ts';
import { dirNode, fileNode, type DirNode, type TreeNode } from '../../src/fs/squashfs/tree.ts';

const t = tempDir('erofs-writer-');
after(() => t.cleanup());
let n = 0;

async function roundTrip(tree: DirNode, options: Parameters<typeof writeErofs>[2] = {}): Promise<{ reader: ErofsReader; bytes: Uint8Array }> {
  const img = join(t.dir, `t${n++}.img`);
  await writeErofs(tree, img, options);
  const bytes = new Uint8Array(readFileSync(img));
  return { reader: await ErofsReader.open(new MemoryDisk(Uint8Array.from(bytes), { readOnly: true })), bytes };
}

/** Compares what the reader shows under `path` with the tree node, recursively; hard links share a nid. */
async function assertSame(reader: ErofsReader, node: TreeNode, path: string, nids: Map<TreeNode, number>, counts: Map<TreeNode, number>): Promise<void> {
  const inode = path === '' ? await reader.root() : await reader.lookup(path);
  const where = path || '/';
  assert.equal(inode.kind, node.type, where);
  assert.equal(inode.mode, node.mode, `${where} mode`);
  assert.equal(inode.uid, node.uid, `${where} uid`);
  assert.equal(inode.gid, node.gid, `${where} gid`);
  assert.equal(inode.mtime.sec, node.mtime, `${where} mtime`);
  const xs = (await reader.xattrs(inode)).map((x) => `${x.name}=${Buffer.from(x.value).toString('hex')}`).sort();
  assert.deepEqual(xs, (node.xattrs ?? []).map((x) => `${x.name}=${Buffer.from(x.value).toString('hex')}`).sort(), `${where} xattrs`);
  const seen = nids.get(node);
  if (seen !== undefined) assert.equal(inode.nid, seen, `${where} is a hard link`);
  nids.set(node, inode.nid);
  switch (node.type) {
    case 'dir': {
      const names = (await reader.readdir(inode)).map((e) => e.name);
      assert.deepEqual(names.sort(), [...node.entries.keys()].sort(), `${where} entries`);
      const subdirs = [...node.entries.values()].filter((c) => c.type === 'dir').length;
      assert.equal(inode.nlink, 2 + subdirs, `${where} nlink`);
      for (const [name, child] of node.entries) await assertSame(reader, child, path === '' ? name : `${path}/${name}`, nids, counts);
      break;
    }
    case 'file': {
      assert.equal(inode.size, node.size, `${where} size`);
      assert.equal(inode.nlink, counts.get(node), `${where} nlink`);
      const content = node.content.kind === 'bytes' ? node.content.bytes : new Uint8Array(0);
      assert.deepEqual(Buffer.from(await reader.readFile(inode)), Buffer.from(content), `${where} content`);
      break;
    }
    case 'symlink':
      assert.equal(await reader.readlink(inode), node.target, `${where} target`);
      break;
    case 'chardev':
    case 'blockdev':
      assert.deepEqual(inode.rdev, { major: node.major, minor: node.minor }, `${where} rdev`);
      break;
    default:
      assert.equal(inode.size, 0);
  }
}

function linkCounts(tree: DirNode): Map<TreeNode, number> {
  const counts = new Map<TreeNode, number>();
  const seen = new Set<TreeNode>();
  const walk = (d: DirNode) => {
    for (const c of d.entries.values()) {
      counts.set(c, (counts.get(c) ?? 0) + 1);
      if (c.type === 'dir' && !seen.has(c)) {
        seen.add(c);
        walk(c);
      }
    }
  };
  walk(tree);
  return counts;
}

const meta = fc.record({
  mode: fc.integer({ min: 0, max: 0o7777 }),
  uid: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 0xffff }), fc.integer({ min: 0x10000, max: 0xffffffff })),
  gid: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 0xffffffff })),
  mtime: fc.oneof(fc.constant(1_000_000), fc.integer({ min: 0, max: 2 ** 33 })),
  xattrs: fc.uniqueArray(
    fc.record({
      name: fc.tuple(fc.constantFrom('user.', 'trusted.', 'security.', 'trusted.overlay.'), fc.stringMatching(/^[a-z0-9._-]{1,20}$/)).map(([p, s]) => p + s),
      value: fc.uint8Array({ maxLength: 300 }),
    }),
    { selector: (x) => x.name, maxLength: 4 },
  ),
});
const name = fc.oneof(fc.stringMatching(/^[a-zA-Z0-9._-]{1,30}$/), fc.string({ unit: 'grapheme', minLength: 1, maxLength: 20 }), fc.constant('L'.repeat(255)))
  .filter((s) => s !== '.' && s !== '..' && !s.includes('/') && !s.includes('\0') && Buffer.byteLength(s) <= 255);
const fileSize = fc.oneof(fc.integer({ min: 0, max: 100 }), fc.integer({ min: 4000, max: 4200 }), fc.integer({ min: 0, max: 40_000 }));
const leaf: fc.Arbitrary<TreeNode> = fc.oneof(
  fc.tuple(meta, fileSize, fc.integer()).map(([m, size, seed]) => fileNode(Uint8Array.from({ length: size }, (_, i) => (seed + i * (i % 13 === 0 ? 0 : 31)) & 0xff), m)),
  fc.tuple(meta, fc.string({ minLength: 1, maxLength: 600 })).map(([m, target]) => ({ ...m, type: 'symlink' as const, target })),
  fc.tuple(meta, fc.constantFrom('chardev' as const, 'blockdev' as const), fc.integer({ min: 0, max: 0xfff }), fc.integer({ min: 0, max: 0xfffff })).map(([m, type, major, minor]) => ({ ...m, type, major, minor })),
  fc.tuple(meta, fc.constantFrom('fifo' as const, 'socket' as const)).map(([m, type]) => ({ ...m, type })),
);
const treeArb: fc.Arbitrary<DirNode> = fc.letrec<{ dir: DirNode }>((tie) => ({
  dir: fc.tuple(meta, fc.uniqueArray(fc.tuple(name, fc.oneof({ depthSize: 'small', maxDepth: 3 }, leaf, leaf, tie('dir'))), { selector: ([k]) => k, maxLength: 12 }))
    .map(([m, entries]) => dirNode(m, Object.fromEntries(entries))),
})).dir;

test('round trip: random trees (every kind, owners, mtimes, xattrs, Unicode names) read back equal, with hard links; 512..4096-byte blocks, flat or chunked', async () => {
  await fc.assert(
    fc.asyncProperty(treeArb, fc.constantFrom(4096, 512, 1024), fc.constantFrom(undefined, 1, 4), fc.nat(), async (tree, blockSize, chunkBlocks, pick) => {
      // Hard links: a file reachable under a second name in the root.
      const files = [...tree.entries.values()].filter((c) => c.type === 'file');
      if (files.length > 0 && !tree.entries.has('hardlink')) tree.entries.set('hardlink', files[pick % files.length] as TreeNode);
      const { reader } = await roundTrip(tree, { blockSize, mkfsTime: 1_000_000, ...(chunkBlocks !== undefined ? { chunkSize: chunkBlocks * blockSize } : {}) });
      await assertSame(reader, tree, '', new Map(), linkCounts(tree));
    }),
    { numRuns: 60 },
  );
});

test('a 3000-entry directory spans blocks; "." and ".." name the right inodes; every name reads back', async () => {
  const entries: Record<string, TreeNode> = {};
  for (let i = 0; i < 3000; i++) entries[`entry-${i.toString().padStart(5, '0')}-${'n'.repeat(i % 40)}`] = fileNode(i % 7 === 0 ? `c${i}` : '');
  const sub = dirNode({}, entries);
  const tree = dirNode({}, { sub });
  const { reader } = await roundTrip(tree, { mkfsTime: 0 });
  const d = await reader.lookup('sub');
  assert.ok(d.size > 20 * 4096);
  const raw = await reader.rawEntries(d);
  const root = await reader.root();
  assert.equal(raw.find((e) => Buffer.from(e.name).toString() === '.')?.nid, d.nid);
  assert.equal(raw.find((e) => Buffer.from(e.name).toString() === '..')?.nid, root.nid);
  assert.notEqual(root.nid, 0, 'nid 0 is never used (readdir would hide it)');
  await assertSame(reader, tree, '', new Map(), linkCounts(tree));
});

test('compact inodes where the fields fit, extended ones for large ids, other mtimes, big nlink; tails inline, whole blocks plain', async () => {
  const shared = fileNode('x', { mtime: 500 });
  const many: Record<string, TreeNode> = {};
  for (let i = 0; i < 70_000; i++) many[`l${i}`] = shared;
  const tree = dirNode({ mtime: 500 }, {
    compact: fileNode('small tail', { mtime: 500 }),
    bigid: fileNode('x', { mtime: 500, uid: 65536 }),
    othertime: fileNode('x', { mtime: 501 }),
    block: fileNode(new Uint8Array(4096).fill(7), { mtime: 500 }),
    tail: fileNode(new Uint8Array(4096 + 100).fill(9), { mtime: 500 }),
    links: dirNode({ mtime: 500 }, many),
  });
  const { reader } = await roundTrip(tree, { mkfsTime: 500 });
  const ext = async (p: string) => (await reader.lookup(p)).raw.extended;
  assert.equal(await ext('compact'), false);
  assert.equal(await ext('bigid'), true);
  assert.equal(await ext('othertime'), true);
  assert.equal(await ext('links/l0'), true);
  assert.equal((await reader.lookup('links/l0')).nlink, 70_000);
  assert.equal((await reader.lookup('compact')).layout, DataLayout.flatInline);
  assert.equal((await reader.lookup('block')).layout, DataLayout.flatPlain);
  assert.equal((await reader.lookup('tail')).layout, DataLayout.flatInline);
  assert.deepEqual(Buffer.from(await reader.readFile('tail')), Buffer.alloc(4196, 9));
});

const fixed = (): DirNode => dirNode({ mtime: 1000 }, {
  'a.txt': fileNode('hello\n', { mtime: 1000, xattrs: [{ name: 'user.k', value: Buffer.from('v') }] }),
  big: fileNode(Uint8Array.from({ length: 10_000 }, (_, i) => i & 0xff), { mtime: 2000, uid: 1000, gid: 1000 }),
  sub: dirNode({ mode: 0o700, mtime: 1000 }, { link: { type: 'symlink', target: '../a.txt', mode: 0o777, uid: 0, gid: 0, mtime: 1000 } }),
  null: { type: 'chardev', major: 1, minor: 3, mode: 0o666, uid: 0, gid: 0, mtime: 1000 },
});

test('determinism: two writes give identical bytes, to a file and to a Disk; a pinned sha-256 for a small fixed tree', async () => {
  const opts = { mkfsTime: 1000, uuid: '00112233-4455-6677-8899-aabbccddeeff' };
  const a = (await roundTrip(fixed(), opts)).bytes;
  const b = (await roundTrip(fixed(), opts)).bytes;
  assert.deepEqual(Buffer.from(a), Buffer.from(b));
  const disk = new MemoryDisk(new Uint8Array(a.byteLength).fill(0xee));
  const r = await writeErofs(fixed(), disk, opts);
  const d = new Uint8Array(r.size);
  await disk.read(d, 0);
  assert.deepEqual(Buffer.from(d), Buffer.from(a), 'a Disk full of garbage ends up with the same bytes');
  assert.equal(createHash('sha256').update(a).digest('hex'), PINNED);
});
const PINNED = '2abd43da1c04c8e63af465529de9d4ba222b191af2b330ea51d00c7378b26556';

test('invalid input is refused (block size, names, xattr prefixes, content shorter than its size) and no image is left behind', async () => {
  await assert.rejects(writeErofs(fixed(), join(t.dir, 'bad.img'), { blockSize: 8192 }), RangeError);
  await assert.rejects(writeErofs(dirNode({}, { 'a/b': fileNode('') }), join(t.dir, 'bad.img')), RangeError);
  await assert.rejects(writeErofs(dirNode({}, { a: fileNode('', { xattrs: [{ name: 'foo.bar', value: new Uint8Array(1) }] }) }), join(t.dir, 'bad.img')), RangeError);
  await assert.rejects(writeErofs(dirNode({}, { a: fileNode('', { mtime: -1 }) }), join(t.dir, 'bad.img')), RangeError);
  await assert.rejects(writeErofs(dirNode({}, { a: fileNode('', { uid: 2 ** 32 }) }), join(t.dir, 'bad.img')), RangeError);
  const liar = fileNode('abc');
  liar.size = 10;
  await assert.rejects(writeErofs(dirNode({}, { liar }), join(t.dir, 'bad.img')), RangeError);
  assert.equal(existsSync(join(t.dir, 'bad.img')), false);
});

test('chunk-based files: all-zero chunks are holes (EROFS_NULL_ADDR) that take no blocks; data reads back', async () => {
  const size = 5 * 65536 + 123;
  const bytes = new Uint8Array(size);
  bytes.fill(1, 65536 + 10, 65536 + 20);
  bytes.fill(2, size - 50);
  const tree = dirNode({}, { sparse: fileNode(bytes), holes: fileNode(new Uint8Array(1 << 20)), tiny: fileNode('abc') });
  const flat = await roundTrip(tree, { mkfsTime: 0 });
  const { reader, bytes: img } = await roundTrip(tree, { mkfsTime: 0, chunkSize: 65536 });
  const f = await reader.lookup('sparse');
  assert.equal(f.layout, DataLayout.chunkBased);
  assert.equal(f.chunkBits, 16);
  assert.deepEqual(Buffer.from(await reader.readFile(f)), Buffer.from(bytes));
  assert.deepEqual(Buffer.from(await reader.readFile('holes')), Buffer.alloc(1 << 20));
  assert.equal(Buffer.from(await reader.readFile('tiny')).toString(), 'abc');
  // Two data chunks of 64 KiB (one partial) are stored; the flat image holds every zero block.
  assert.ok(img.byteLength < 3 * 65536, `${img.byteLength}`);
  assert.ok(flat.bytes.byteLength > 5 * 65536 + (1 << 20), `${flat.bytes.byteLength}`);
  await assert.rejects(writeErofs(tree, join(t.dir, 'bad.img'), { chunkSize: 3000 }), RangeError);
});

test('xattrs several inodes carry are stored once (shared, by id); the rest inline; every name index; trusted.overlay. as a long prefix or not', async () => {
  const big = new Uint8Array(900).fill(0x5a);
  const x = (own: string) => [
    { name: 'user.shared', value: big },
    { name: 'trusted.overlay.opaque', value: Buffer.from('y') },
    { name: 'security.own', value: Buffer.from(own) },
    { name: 'system.posix_acl_access', value: Buffer.from([2, 0, 0, 0]) },
  ];
  const tree = dirNode({ xattrs: x('root') }, { a: fileNode('a', { xattrs: x('a') }), b: dirNode({ xattrs: x('b') }), c: { type: 'symlink', target: 'a', mode: 0o777, uid: 0, gid: 0, mtime: 0, xattrs: x('c') } });
  const { reader, bytes } = await roundTrip(tree, { mkfsTime: 0 });
  assert.notEqual(reader.superblock.xattrBlkaddr, 0);
  assert.equal(reader.superblock.xattrPrefixCount, 1, 'trusted.overlay. is a long prefix');
  const none = await roundTrip(tree, { mkfsTime: 0, longPrefixes: [] });
  assert.equal(none.reader.superblock.xattrPrefixCount, 0);
  await assertSame(none.reader, tree, '', new Map(), linkCounts(tree));
  await assertSame(reader, tree, '', new Map(), linkCounts(tree));
  for (const p of ['a', 'b', 'c']) {
    const inode = await reader.lookup(p);
    const header = decodeIbodyHeader(bytes.subarray(inode.pos + inode.inodeSize, inode.pos + inode.inodeSize + 12));
    assert.equal(header.sharedCount, 3, `${p}: three shared entries`);
    assert.ok(inode.xattrSize < 100, `${p}: the 900-byte value is not inline (${inode.xattrSize})`);
  }
});

test('a file of 4 GiB and more gets an extended inode: streamed through 1 MiB holes into a small chunked image, its tail reads back', async () => {
  const size = 2 ** 32 + 3 * 4096 + 5;
  const zero = new Uint8Array(1 << 22);
  const end = Buffer.from('the end');
  const huge: TreeNode = {
    type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: 0, size,
    content: {
      kind: 'stream',
      open: async function* () {
        let left = size - end.byteLength;
        while (left > 0) {
          const n = Math.min(left, zero.byteLength);
          left -= n;
          yield zero.subarray(0, n);
        }
        yield end;
      },
    },
  };
  const { reader, bytes } = await roundTrip(dirNode({}, { huge }), { mkfsTime: 0, chunkSize: 1 << 20 });
  assert.ok(bytes.byteLength < 1 << 20, `${bytes.byteLength}`);
  const inode = await reader.lookup('huge');
  assert.equal(inode.raw.extended, true);
  assert.equal(inode.size, size);
  const tail = new Uint8Array(4096 + end.byteLength);
  await reader.readRange(inode, tail, size - tail.byteLength);
  assert.deepEqual(Buffer.from(tail), Buffer.concat([Buffer.alloc(4096), end]));
});

test('the same tree type: an image read back as a FileSystem (treeFromFileSystem) writes the byte-identical image again', async () => {
  const tree = fixed();
  const shared = fileNode('linked', { mtime: 1000, xattrs: [{ name: 'user.s', value: Buffer.from('v') }] });
  tree.entries.set('h1', shared);
  (tree.entries.get('sub') as DirNode).entries.set('h2', shared);
  tree.entries.set('p', { type: 'fifo', mode: 0o600, uid: 5, gid: 6, mtime: 1000, xattrs: [{ name: 'user.s', value: Buffer.from('v') }] });
  const opts = { mkfsTime: 1000, uuid: '00112233-4455-6677-8899-aabbccddeeff' };
  const first = await roundTrip(tree, opts);
  const again = await roundTrip(await treeFromFileSystem(new ErofsFileSystem(first.reader)), opts);
  assert.deepEqual(Buffer.from(again.bytes), Buffer.from(first.bytes));
});
