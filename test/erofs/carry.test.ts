/**
 * EROFS writer, carried pclusters: a file given with its EROFS source (a tree made by
 * treeFromFileSystem over an EROFS image, blocksFrom naming that image) keeps its compressed
 * pclusters byte for byte where the settings fit; the rest (fragment tails, unfit extents) is
 * compressed anew. The new image reads back as the tree; carried files sharing their source
 * extents are stored once; the output does not depend on the thread count.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import '../helpers/setup.ts';
import { tempDir } from '../helpers/tmp.ts';
import { MemoryDisk } from '../../src/io/disk.ts';
import { ErofsReader } from '../../src/fs/erofs/reader.ts';
import { ErofsFileSystem } from '../../src/fs/erofs/filesystem.ts';
import { settingsFit, writeErofs, type ErofsWriteOptions, type ErofsWriteResult } from '../../src/fs/erofs/writer.ts';
import { treeFromFileSystem } from '../../src/fs/squashfs/from-fs.ts';
import { dirNode, fileNode, type DirNode, type TreeNode } from '../../src/fs/squashfs/tree.ts';
import type { Extent } from '../../src/fs/erofs/zmap.ts';
import { content } from './fixture.ts';

const t = tempDir('erofs-carry-');
after(() => t.cleanup());
let n = 0;

// Fedora's settings but 64 KiB pclusters (1 MiB ones in the oracle): a few MiB of data then make many pclusters.
const FEDORA: ErofsWriteOptions = { compression: 'lzma,level=6', pclusterSize: 65536, fragments: true, mkfsTime: 1_700_000_000 };
const BIG = ['text-600k', 'mixed-700k', 'random-300k', 'aligned-512k', 'sub/dup-a'];

/** Files of every kind of extent: compressible and incompressible runs, a fragment tail, whole-file fragments, duplicates. */
function sourceTree(): { tree: DirNode; files: Map<string, Uint8Array> } {
  const files = new Map<string, Uint8Array>([
    ['text-600k', content(600_777, 1, 0.05)],
    ['mixed-700k', content(700_000 + 4096 * 3, 2, 0.3)],
    ['random-300k', content(300_100, 3, 1)],
    ['aligned-512k', content(512 << 10, 4, 0.2)],
    ['sub/dup-a', content(400_000 + 12345, 5, 0.2)],
    ['sub/dup-b', content(400_000 + 12345, 5, 0.2)],
    ['small', content(30_000, 6, 0.1)],
    ['tiny', content(100, 7, 0)],
    ['empty', new Uint8Array(0)],
  ]);
  const tree = dirNode({ mtime: 1_700_000_000 });
  const sub = dirNode({ mtime: 1_700_000_000 });
  tree.entries.set('sub', sub);
  for (const [p, bytes] of files) (p.startsWith('sub/') ? sub : tree).entries.set(p.replace(/^sub\//, ''), fileNode(bytes, { mtime: 1_700_000_000 }));
  return { tree, files };
}

async function image(tree: DirNode, options: ErofsWriteOptions): Promise<{ reader: ErofsReader; bytes: Uint8Array; result: ErofsWriteResult }> {
  const img = join(t.dir, `c${n++}.img`);
  const result = await writeErofs(tree, img, options);
  const bytes = new Uint8Array(readFileSync(img));
  return { reader: await ErofsReader.open(new MemoryDisk(Uint8Array.from(bytes), { readOnly: true })), bytes, result };
}

/** The writer tree of an EROFS image, each file naming its inode there as its source. */
function carriedTree(reader: ErofsReader): Promise<DirNode> {
  return treeFromFileSystem(new ErofsFileSystem(reader), '/', { blocksFrom: (path) => ({ erofs: reader, path }) });
}

async function extentsOf(reader: ErofsReader, path: string): Promise<Extent[]> {
  return (await reader.compressedExtents(await reader.lookup(path))).extents;
}

const raw = (bytes: Uint8Array, x: Extent) => Buffer.from(bytes.subarray(x.pa, x.pa + x.plen));

test('carry: a carried file reads back identical, and its pclusters are the old image\'s bytes at new addresses; the fragment tail goes to the new packed inode', async () => {
  const { tree, files } = sourceTree();
  const old = await image(tree, FEDORA);
  assert.equal(settingsFit(old.reader, FEDORA), true);
  const neu = await image(await carriedTree(old.reader), { ...FEDORA, threads: 0 });
  for (const [p, bytes] of files) assert.ok(Buffer.from(await neu.reader.readFile(p)).equals(Buffer.from(bytes)), `${p} content`);
  let copied = 0;
  for (const p of BIG) {
    const a = await extentsOf(old.reader, p);
    const b = await extentsOf(neu.reader, p);
    const blocksA = a.filter((x) => x.source === 'blocks');
    assert.ok(blocksA.length > 0, `${p} has pclusters in the old image`);
    // Every old pcluster is there, same extent, same bytes, at its new address.
    for (const x of blocksA) {
      const y = b.find((e) => e.la === x.la);
      assert.ok(y !== undefined, `${p}: an extent at ${x.la} in the new image`);
      assert.equal(y.llen, x.llen, `${p} at ${x.la}: length`);
      assert.equal(y.source, 'blocks');
      assert.equal(y.algorithm, x.algorithm);
      assert.ok(raw(neu.bytes, y).equals(raw(old.bytes, x)), `${p} at ${x.la}: the pcluster's bytes`);
      copied += x.plen;
    }
    // The tail is a fragment in both, read back from the new packed inode.
    const ta = a[a.length - 1] as Extent;
    const tb = b[b.length - 1] as Extent;
    if (ta.source === 'fragment') assert.deepEqual([tb.source, tb.la, tb.llen], ['fragment', ta.la, ta.llen], `${p}: its tail`);
  }
  assert.ok(neu.result.carried.files >= 5, `carried ${neu.result.carried.files} files`);
  assert.ok(neu.result.carried.pclusterBytes >= copied - (await extentsOf(old.reader, 'sub/dup-a')).filter((x) => x.source === 'blocks').reduce((s, x) => s + x.plen, 0));
  // Whole-file fragments (small, tiny) are compressed anew into the packed inode: nothing to carry.
  assert.equal((await extentsOf(neu.reader, 'small'))[0]?.source, 'fragment');
  // The new image is no larger than the old one by more than its metadata's slack.
  assert.ok(neu.bytes.byteLength <= old.bytes.byteLength + 64 * 1024, `${neu.bytes.byteLength} vs ${old.bytes.byteLength}`);
});

test('carry: files sharing their source extents are stored once (dedupe on or off); the copy names the same pclusters and fragment', async () => {
  const { tree } = sourceTree();
  const old = await image(tree, FEDORA);
  const a0 = await extentsOf(old.reader, 'sub/dup-a');
  const b0 = await extentsOf(old.reader, 'sub/dup-b');
  assert.deepEqual(b0, a0, 'the old image stored the duplicate once');
  for (const dedupe of [true, false]) {
    const neu = await image(await carriedTree(old.reader), { ...FEDORA, dedupe, threads: 0 });
    const a = await extentsOf(neu.reader, 'sub/dup-a');
    const b = await extentsOf(neu.reader, 'sub/dup-b');
    assert.deepEqual(b, a, `dedupe ${dedupe}: the same extents`);
    assert.ok(Buffer.from(await neu.reader.readFile('sub/dup-b')).equals(Buffer.from(await old.reader.readFile('sub/dup-a'))));
  }
  // Without dedupe in the old image, the two are stored twice there and carried twice.
  const twice = await image(tree, { ...FEDORA, dedupe: false });
  const neu = await image(await carriedTree(twice.reader), { ...FEDORA, dedupe: false, threads: 0 });
  assert.notDeepEqual((await extentsOf(neu.reader, 'sub/dup-b'))[0]?.pa, (await extentsOf(neu.reader, 'sub/dup-a'))[0]?.pa);
});

test('carry: the image does not depend on the thread count (threads 0, 1 and 2 write the same bytes)', async () => {
  const { tree } = sourceTree();
  const old = await image(tree, FEDORA);
  const a = await image(await carriedTree(old.reader), { ...FEDORA, threads: 0 });
  const b = await image(await carriedTree(old.reader), { ...FEDORA, threads: 2 });
  assert.ok(Buffer.from(a.bytes).equals(Buffer.from(b.bytes)));
  const one = createHash('sha256').update(a.bytes).digest('hex');
  assert.equal(one, createHash('sha256').update((await image(await carriedTree(old.reader), { ...FEDORA, threads: 1 })).bytes).digest('hex'));
});

test('carry: settings that do not fit (another algorithm, another block size, all-fragments) recompress every file, smaller pclusters the larger ones; the image reads back identical', async () => {
  const { tree, files } = sourceTree();
  const old = await image(tree, FEDORA);
  // One-block pclusters: only the old one-block pclusters are carried.
  const one = await image(await carriedTree(old.reader), { ...FEDORA, pclusterSize: 4096, threads: 0 });
  for (const [p, bytes] of files) assert.ok(Buffer.from(await one.reader.readFile(p)).equals(Buffer.from(bytes)), `one-block pclusters: ${p}`);
  for (const p of BIG) for (const x of await extentsOf(one.reader, p)) if (x.source === 'blocks') assert.equal(x.plen, 4096, `${p} at ${x.la}`);
  const cases: ErofsWriteOptions[] = [
    { ...FEDORA, compression: 'lz4hc' },
    { ...FEDORA, compression: 'zstd' },
    { ...FEDORA, blockSize: 1024 },
    { ...FEDORA, allFragments: true },
  ];
  for (const options of cases) {
    assert.equal(settingsFit(old.reader, options), false, JSON.stringify(options));
    const neu = await image(await carriedTree(old.reader), { ...options, threads: 0 });
    assert.equal(neu.result.carried.files, 0, JSON.stringify(options));
    for (const [p, bytes] of files) assert.ok(Buffer.from(await neu.reader.readFile(p)).equals(Buffer.from(bytes)), `${JSON.stringify(options)}: ${p}`);
  }
  // The level is not the decoder's business: level 9 carries level 6's pclusters; so do larger pclusters from a one-block old image.
  assert.equal(settingsFit(old.reader, { ...FEDORA, compression: 'lzma,level=9' }), true);
  const small = await image(tree, { ...FEDORA, pclusterSize: 4096 });
  assert.equal(settingsFit(small.reader, { ...FEDORA, pclusterSize: 4096 }), true);
  assert.equal(settingsFit(small.reader, FEDORA), true);
  const neu = await image(await carriedTree(small.reader), { ...FEDORA, threads: 0 });
  assert.ok(neu.result.carried.files >= 5);
  for (const [p, bytes] of files) assert.ok(Buffer.from(await neu.reader.readFile(p)).equals(Buffer.from(bytes)), `from one-block pclusters: ${p}`);
});

test('carry: without fragments in the new image, a carried file\'s old fragment tail is compressed into pclusters of its own', async () => {
  const { tree, files } = sourceTree();
  const old = await image(tree, FEDORA);
  const options: ErofsWriteOptions = { compression: 'lzma,level=6', pclusterSize: 65536, mkfsTime: 1_700_000_000, threads: 0 };
  assert.equal(settingsFit(old.reader, options), true);
  const neu = await image(await carriedTree(old.reader), options);
  assert.ok(neu.result.carried.files >= 5);
  for (const [p, bytes] of files) assert.ok(Buffer.from(await neu.reader.readFile(p)).equals(Buffer.from(bytes)), p);
  const x = await extentsOf(neu.reader, 'text-600k');
  assert.ok(x.every((e) => e.source === 'blocks'));
  assert.equal(neu.reader.superblock.packedNid, 0);
});

test('carry: a source file that is not what the tree says (another size) is read and compressed, not carried', async () => {
  const { tree } = sourceTree();
  const old = await image(tree, FEDORA);
  const other = content(600_000, 9, 0);
  const t2 = dirNode({ mtime: 1_700_000_000 });
  const disk = new MemoryDisk(other, { readOnly: true });
  t2.entries.set('f', { type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: 1_700_000_000, size: other.byteLength, content: { kind: 'disk', disk, erofs: { reader: old.reader, inode: await old.reader.lookup('text-600k') } } });
  const neu = await image(t2, { ...FEDORA, threads: 0 });
  assert.equal(neu.result.carried.files, 0);
  assert.ok(Buffer.from(await neu.reader.readFile('f')).equals(Buffer.from(other)));
});

/** Many small files (whole-file fragments), tails of larger ones, a long-prefix xattr: most data in the packed inode. */
function smallFilesTree(count: number, seed: number): DirNode {
  const tree = dirNode({ mtime: 1_700_000_000 });
  for (let i = 0; i < count; i++) {
    const xattrs = i % 7 === 0 ? [{ name: 'trusted.overlay.origin', value: Buffer.from(`origin-${i}`) }] : undefined;
    tree.entries.set(`f${i}`, fileNode(content(500 + ((i * 7919) % 40_000), seed + i, 0.05), { mtime: 1_700_000_000, ...(xattrs !== undefined ? { xattrs } : {}) }));
  }
  tree.entries.set('tailed', fileNode(content(300_000, seed - 1, 0.1), { mtime: 1_700_000_000 }));
  return tree;
}

async function fragmentOf(reader: ErofsReader, path: string): Promise<Extent | undefined> {
  const xs = await extentsOf(reader, path);
  const last = xs[xs.length - 1];
  return last?.source === 'fragment' ? last : undefined;
}

test('carry: the old packed inode leads the new one; files keep their fragment offsets, new fragments and the long prefixes follow it; everything reads back', async () => {
  const old = await image(smallFilesTree(120, 100), FEDORA);
  const oldPacked = await old.reader.inode(old.reader.superblock.packedNid);
  const tree = await carriedTree(old.reader);
  tree.entries.set('new-file', fileNode(content(20_000, 999, 0.05), { mtime: 1_700_000_000, xattrs: [{ name: 'trusted.overlay.redirect', value: Buffer.from('/x') }] }));
  const neu = await image(tree, { ...FEDORA, threads: 2 });
  assert.ok(neu.result.carried.packedBytes > 0 && neu.result.carried.packedBytes <= oldPacked.size, `${neu.result.carried.packedBytes} of ${oldPacked.size} packed bytes carried`);
  assert.equal(neu.result.carried.files, 121, 'every old file is carried');
  const newPacked = await neu.reader.inode(neu.reader.superblock.packedNid);
  const a = (await old.reader.compressedExtents(oldPacked)).extents.filter((x) => x.la + x.llen <= neu.result.carried.packedBytes);
  const b = (await neu.reader.compressedExtents(newPacked)).extents;
  a.forEach((x, i) => assert.ok(raw(neu.bytes, b[i] as Extent).equals(raw(old.bytes, x)), `packed pcluster ${i}`));
  for (const p of [...Array.from({ length: 120 }, (_, i) => `f${i}`), 'tailed']) {
    assert.ok(Buffer.from(await neu.reader.readFile(p)).equals(Buffer.from(await old.reader.readFile(p))), `${p} content`);
    assert.deepEqual(await fragmentOf(neu.reader, p), await fragmentOf(old.reader, p), `${p}: the same fragment`);
  }
  assert.deepEqual((await neu.reader.xattrs('f7')).map((x) => [x.name, Buffer.from(x.value).toString()]), [['trusted.overlay.origin', 'origin-7']]);
  assert.deepEqual((await neu.reader.xattrs('new-file')).map((x) => [x.name, Buffer.from(x.value).toString()]), [['trusted.overlay.redirect', '/x']]);
  assert.ok(Buffer.from(await neu.reader.readFile('new-file')).equals(Buffer.from(content(20_000, 999, 0.05))));
  assert.ok(((await fragmentOf(neu.reader, 'new-file')) as Extent).pa >= oldPacked.size, 'a new fragment follows the old packed content');
  assert.ok(neu.bytes.byteLength <= old.bytes.byteLength + 64 * 1024, `${neu.bytes.byteLength} vs ${old.bytes.byteLength}`);
  // The same bytes whatever the thread count.
  assert.ok(Buffer.from((await image(await carriedTree(old.reader).then((t2) => (t2.entries.set('new-file', tree.entries.get('new-file') as TreeNode), t2)), { ...FEDORA, threads: 0 })).bytes).equals(Buffer.from(neu.bytes)));
});

test('carry: the old packed inode is carried only while the fragments still used cover carryPackedMinLive of it; otherwise they are compressed anew', async () => {
  const old = await image(smallFilesTree(120, 300), FEDORA);
  const half = async () => {
    const tree = await carriedTree(old.reader);
    for (let i = 0; i < 120; i += 2) tree.entries.delete(`f${i}`);
    return tree;
  };
  const byDefault = await image(await half(), FEDORA);
  assert.equal(byDefault.result.carried.packedBytes, 0, 'half of it is dead: not carried');
  const forced = await image(await half(), { ...FEDORA, carryPackedMinLive: 0 });
  assert.ok(forced.result.carried.packedBytes > 0, 'carried when asked');
  const never = await image(await carriedTree(old.reader), { ...FEDORA, carryPackedMinLive: 2 });
  assert.equal(never.result.carried.packedBytes, 0);
  for (let i = 1; i < 120; i += 2) {
    const want = Buffer.from(await old.reader.readFile(`f${i}`));
    for (const got of [byDefault, forced, never]) assert.ok(Buffer.from(await got.reader.readFile(`f${i}`)).equals(want), `f${i}`);
  }
  for (const got of [byDefault, forced]) await assert.rejects(got.reader.lookup('f0'));
});

test('merge verification: a kept fragment counts as carried only inside the new packed inode\'s prefix of old pclusters with the same bytes', async () => {
  const { carriedPrefix, packedPrefixOf } = await import('../../src/ops/overlayfs/merge.ts');
  const old = await image(smallFilesTree(60, 500), FEDORA);
  const kept = await image(await carriedTree(old.reader), FEDORA);
  const pieces = [new Uint8Array(1 << 20), new Uint8Array(1 << 20)] as const;
  const prefixOf = async (r: ErofsReader) => {
    const n = await packedPrefixOf(old.reader, r, pieces);
    return () => Promise.resolve(n);
  };
  const f = 'f3';
  const size = (await old.reader.lookup(f)).size;
  assert.ok((await packedPrefixOf(old.reader, kept.reader, pieces)) >= kept.result.carried.packedBytes);
  assert.equal(await carriedPrefix(old.reader, await old.reader.lookup(f), kept.reader, await kept.reader.lookup(f), pieces, await prefixOf(kept.reader)), size, 'kept: all of it');
  assert.ok((await carriedPrefix(old.reader, await old.reader.lookup(f), kept.reader, await kept.reader.lookup(f), pieces)) < size, 'without the packed prefix, the fragment is not counted');
  // One byte changed in the new packed inode's first pcluster: nothing of it counts, the content is compared instead.
  const packedNew = (await kept.reader.compressedExtents(await kept.reader.inode(kept.reader.superblock.packedNid))).extents[0] as Extent;
  const bad = Uint8Array.from(kept.bytes);
  bad[packedNew.pa + packedNew.plen - 1] = (bad[packedNew.pa + packedNew.plen - 1] as number) ^ 0xff;
  const badReader = await ErofsReader.open(new MemoryDisk(bad, { readOnly: true }));
  assert.equal(await packedPrefixOf(old.reader, badReader, pieces), 0);
  assert.equal(await carriedPrefix(old.reader, await old.reader.lookup(f), badReader, await badReader.lookup(f), pieces, await prefixOf(badReader)), 0);
});
