import { test } from 'node:test';
import assert from 'node:assert/strict';
import '../helpers/setup.ts';
import { MemoryDisk } from '../../src/io/disk.ts';
import { writeSquashfs } from '../../src/fs/squashfs/writer.ts';
import { SquashfsReader } from '../../src/fs/squashfs/reader.ts';
import { SquashfsFileSystem } from '../../src/fs/squashfs/filesystem.ts';
import { treeFromFileSystem } from '../../src/fs/squashfs/from-fs.ts';
import { dirNode, fileNode, type DirNode } from '../../src/fs/squashfs/tree.ts';
import { readerSnapshot } from './fixture.ts';
import { noisy } from '../helpers/random.ts';

function sample(): DirNode {
  const shared = fileNode('two names\n', { mode: 0o600, uid: 7, gid: 8, mtime: 5 });
  return dirNode({ mtime: 9, mode: 0o711 }, {
    big: fileNode(noisy(700_000, 1), { mtime: 3 }),
    'x.txt': fileNode('x\n', { xattrs: [{ name: 'user.k', value: Buffer.from('v') }, { name: 'security.selinux', value: Buffer.from('system_u:object_r:etc_t:s0\0') }] }),
    a: shared,
    sub: dirNode({ mode: 0o750, uid: 1000 }, {
      b: shared,
      s: { type: 'symlink', target: '../x.txt', mode: 0o777, uid: 0, gid: 0, mtime: 1 },
      null: { type: 'chardev', major: 1, minor: 3, mode: 0o666, uid: 0, gid: 0, mtime: 1 },
      fifo: { type: 'fifo', mode: 0o644, uid: 0, gid: 0, mtime: 1 },
    }),
  });
}

async function image(tree: DirNode, compressor: 'gzip' | 'zstd' = 'gzip'): Promise<{ disk: MemoryDisk; reader: SquashfsReader }> {
  const disk = new MemoryDisk(0);
  await writeSquashfs(tree, disk, { compressor, threads: 0, mkfsTime: 1_700_000_000 });
  return { disk, reader: await SquashfsReader.open(disk) };
}

test('a FileSystem becomes the same image: modes, owners, xattrs, hard links, devices, symlinks', async () => {
  const first = await image(sample());
  const fs = new SquashfsFileSystem(first.reader, first.disk.size);
  const again = await image(await treeFromFileSystem(fs));
  assert.deepEqual(await readerSnapshot(again.reader, { times: true }), await readerSnapshot(first.reader, { times: true }));
  assert.deepEqual(again.disk.bytes, first.disk.bytes, 'same tree, same writer settings: byte-identical');
});

test('blocksFrom: stored blocks are carried verbatim, and only the files it names', async () => {
  const first = await image(sample(), 'zstd');
  const fs = new SquashfsFileSystem(first.reader, first.disk.size);
  const asked: string[] = [];
  const tree = await treeFromFileSystem(fs, '/', {
    blocksFrom: (path) => {
      asked.push(path);
      return path === '/big' ? { reader: first.reader, path: 'big' } : undefined;
    },
  });
  const bigNode = tree.entries.get('big');
  assert.ok(bigNode?.type === 'file' && bigNode.content.kind === 'deferred', 'a carried file is looked up in the image when the writer reaches it');
  const big = { content: await bigNode.content.resolve() };
  assert.ok(big.content.kind === 'disk' && big.content.verbatim !== undefined);
  const x = tree.entries.get('x.txt');
  assert.ok(x?.type === 'file' && x.content.kind === 'stream', 'files not named are read lazily');
  assert.deepEqual(asked.sort(), ['/a', '/big', '/x.txt'], 'asked once per file; a second name of a hard link is the same node');
  // A verbatim block is handed over as stored: the same bytes as in the first image.
  const block0 = await big.content.verbatim(0);
  const inode = await first.reader.lookup('big');
  assert.ok(inode.kind === 'file');
  assert.equal(block0?.word, inode.blockSizes[0]);
  const again = await image(tree, 'zstd');
  assert.deepEqual(await readerSnapshot(again.reader), await readerSnapshot(first.reader));
});

test('a file whose size differs from the named source is not carried verbatim', async () => {
  const first = await image(sample());
  const fs = new SquashfsFileSystem(first.reader, first.disk.size);
  const tree = await treeFromFileSystem(fs, '/', { blocksFrom: (path) => (path === '/big' ? { reader: first.reader, path: 'x.txt' } : undefined) });
  const big = tree.entries.get('big');
  assert.ok(big?.type === 'file' && big.content.kind === 'deferred');
  assert.equal((await big.content.resolve()).kind, 'stream');
});

test('files the old image stored once stay stored once when carried verbatim; same-size files that differ do not share', async () => {
  const bs = 128 * 1024;
  const x = noisy(bs, 7);
  const zeros = new Uint8Array(bs);
  const cat = (...parts: Uint8Array[]) => Buffer.concat(parts);
  const tree0 = dirNode({ mtime: 1 }, {
    one: fileNode(cat(x, x.subarray(0, 1000)), { mtime: 2 }),
    two: fileNode(cat(x, x.subarray(0, 1000)), { mtime: 3 }),
    other: fileNode(cat(noisy(bs, 8), x.subarray(0, 1000)), { mtime: 4 }),
    front: fileNode(cat(x, zeros), { mtime: 5 }),
    back: fileNode(cat(zeros, x), { mtime: 6 }),
  });
  const first = await image(tree0, 'zstd');
  const fs = new SquashfsFileSystem(first.reader, first.disk.size);
  const tree = await treeFromFileSystem(fs, '/', { blocksFrom: (path) => ({ reader: first.reader, path: path.slice(1) }) });
  const again = await image(tree, 'zstd');
  assert.deepEqual(await readerSnapshot(again.reader), await readerSnapshot(first.reader));
  const start = async (name: string) => {
    const i = await again.reader.lookup(name);
    assert.ok(i.kind === 'file');
    return `${i.blocksStart}:${i.fragment}:${i.fragmentOffset}`;
  };
  assert.equal(await start('one'), await start('two'), 'one stored copy, as in the old image');
  assert.notEqual(await start('one'), await start('other'));
  assert.notEqual(await start('front'), await start('back'));
  assert.equal(again.disk.size, first.disk.size, 'no block is stored twice');
});
