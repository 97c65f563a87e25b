/**
 * The streaming SquashFS writer: a lazy tree (directories listed when the writer reaches them) gives
 * the bytes the same tree held in memory gives; a lazy tree whose nodes declare a wrong nlink is
 * written again with the counted one; the dedupe index against a Map; and a tree of 300k entries
 * written under a 64 MiB heap.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { linkSync, mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import '../helpers/setup.ts';
import { FileDisk, MemoryDisk } from '../../src/io/disk.ts';
import { writeSquashfs } from '../../src/fs/squashfs/writer.ts';
import { SquashfsReader } from '../../src/fs/squashfs/reader.ts';
import { SquashfsFileSystem } from '../../src/fs/squashfs/filesystem.ts';
import { lazyTreeFromFileSystem } from '../../src/fs/squashfs/from-fs.ts';
import { DedupeIndex } from '../../src/fs/squashfs/dedupe.ts';
import { dirNode, fileNode, materialize, treeFromDirectory, type DirNode, type LazyDirNode, type SourceNode, type TreeNode } from '../../src/fs/squashfs/tree.ts';
import { readerSnapshot } from './fixture.ts';
import { noisy } from '../helpers/random.ts';
import { tempDir } from '../helpers/tmp.ts';
import { lazyFileBytes } from './lazy-tree.ts';

/** The same tree, listed on demand; every listing counted in `loads`, nlink declared by `declare`. */
function lazify(dir: DirNode, loads: { n: number }, declare: (node: TreeNode, names: number) => number | undefined): LazyDirNode {
  const names = new Map<TreeNode, number>();
  const count = (d: DirNode): void => {
    for (const c of d.entries.values()) {
      if (c.type === 'dir') count(c);
      else names.set(c, (names.get(c) ?? 0) + 1);
    }
  };
  count(dir);
  for (const [node, n] of names) {
    const d = declare(node, n);
    if (d === undefined) delete node.nlink;
    else node.nlink = d;
  }
  const wrap = (d: DirNode): LazyDirNode => {
    const { entries, type: _t, ...meta } = d;
    return {
      type: 'lazydir',
      ...meta,
      load: async () => {
        loads.n++;
        return new Map<string, SourceNode>([...entries].map(([name, c]) => [name, c.type === 'dir' ? wrap(c) : c]));
      },
    };
  };
  return wrap(dir);
}

function dirCount(d: DirNode): number {
  let n = 1;
  for (const c of d.entries.values()) if (c.type === 'dir') n += dirCount(c);
  return n;
}

async function bytesOf(tree: DirNode | LazyDirNode, onRestart?: (why: string) => void, threads = 0, compressor: 'gzip' | 'zstd' = 'gzip'): Promise<Uint8Array> {
  const disk = new MemoryDisk(0);
  await writeSquashfs(tree, disk, { compressor, threads, mkfsTime: 1_700_000_000, blockSize: 4096, onRestart });
  return disk.bytes.slice();
}

const names = fc.stringMatching(/^[a-zé_.\-0-9]{1,12}$/).filter((n) => n !== '.' && n !== '..');

/** Random trees: files (some duplicates, some larger than a block, some sparse), links to earlier files, symlinks, devices. */
const treeArb = fc
  .array(fc.tuple(fc.nat(30), fc.constantFrom('file', 'dup', 'big', 'sparse', 'hard', 'symlink', 'fifo', 'dir'), names), { maxLength: 60 })
  .map((ops) => {
    const root = dirNode({ mtime: 3 });
    const dirs: DirNode[] = [root];
    const files: TreeNode[] = [];
    ops.forEach(([at, kind, name], i) => {
      const parent = dirs[at % dirs.length]!;
      if (parent.entries.has(name)) return;
      let node: TreeNode;
      switch (kind) {
        case 'dir':
          node = dirNode({ mode: 0o750, mtime: i });
          dirs.push(node);
          break;
        case 'file':
          node = fileNode(`content ${i}\n`, { mtime: i });
          break;
        case 'dup':
          node = fileNode('the same bytes\n', { mtime: i });
          break;
        case 'big':
          node = fileNode(noisy(10_000 + i * 97, i), { mtime: i });
          break;
        case 'sparse': {
          const b = new Uint8Array(20_000);
          b[i] = 1;
          node = fileNode(b, { mtime: i });
          break;
        }
        case 'hard':
          node = files.length > 0 ? files[at % files.length]! : fileNode('first\n');
          break;
        case 'symlink':
          node = { type: 'symlink', target: `t${i}`, mode: 0o777, uid: 0, gid: 0, mtime: i };
          break;
        default:
          node = { type: 'fifo', mode: 0o644, uid: i, gid: 0, mtime: i };
      }
      parent.entries.set(name, node);
      if (node.type !== 'dir') files.push(node);
    });
    return root;
  });

test('a lazy tree is written as the same tree held in memory, each directory listed once, when nlink is declared right', async () => {
  await fc.assert(
    fc.asyncProperty(treeArb, async (tree) => {
      const eager = await bytesOf(tree);
      const loads = { n: 0 };
      let restarts = 0;
      const lazy = await bytesOf(lazify(tree, loads, (_n, names) => (names > 1 ? names : undefined)), () => restarts++);
      assert.deepEqual(lazy, eager);
      assert.equal(restarts, 0);
      assert.equal(loads.n, dirCount(tree), 'each directory listed once');
    }),
    { numRuns: 40 },
  );
});

test('a lazy tree whose nodes declare a wrong nlink (too many, too few, none) is counted and written again: the same bytes, the true nlink', async () => {
  await fc.assert(
    fc.asyncProperty(treeArb, fc.constantFrom('more', 'fewer', 'none', 'one'), async (tree, how) => {
      const eager = await bytesOf(tree);
      const wrong = (_n: TreeNode, names: number): number | undefined => (how === 'more' ? names + 1 : how === 'fewer' ? (names > 1 ? names - 1 : undefined) : how === 'one' ? 1 : undefined);
      const all = collect(tree);
      const linked = new Set(all).size !== all.length;
      const why: string[] = [];
      const lazy = await bytesOf(lazify(tree, { n: 0 }, wrong), (w) => why.push(w));
      assert.deepEqual(lazy, eager);
      // Declaring one name more is wrong for every node; declaring fewer or none only for linked ones.
      assert.equal(why.length, (how === 'more' && all.length > 0) || linked ? 1 : 0, why.join('; '));
    }),
    { numRuns: 40 },
  );
  // The reader sees the counted nlink.
  const shared = fileNode('two names\n');
  const tree = dirNode({}, { a: shared, sub: dirNode({}, { b: shared, c: shared }) });
  const reader = await SquashfsReader.open(new MemoryDisk(await bytesOf(lazify(tree, { n: 0 }, () => 7), () => {})));
  assert.equal((await reader.lookup('sub/c')).nlink, 3);
});

function collect(d: DirNode): TreeNode[] {
  return [...d.entries.values()].flatMap((c) => (c.type === 'dir' ? collect(c) : [c]));
}

test('lazyTreeFromFileSystem: the streamed image equals the one from the tree held whole (treeFromFileSystem → materialize)', async () => {
  const shared = fileNode('two names\n', { mode: 0o600, uid: 7, gid: 8, mtime: 5 });
  const first = new MemoryDisk(0);
  const tree = dirNode({ mtime: 9 }, {
    big: fileNode(noisy(300_000, 4)),
    a: shared,
    sub: dirNode({ mode: 0o750 }, { b: shared, s: { type: 'symlink', target: '../a', mode: 0o777, uid: 0, gid: 0, mtime: 1 }, dup: fileNode(noisy(300_000, 4)) }),
  });
  await writeSquashfs(tree, first, { threads: 0, mkfsTime: 1 });
  const reader = await SquashfsReader.open(first);
  const fs = new SquashfsFileSystem(reader, first.size);
  const lazy = await lazyTreeFromFileSystem(fs);
  const streamed = new MemoryDisk(0);
  await writeSquashfs(lazy, streamed, { threads: 2, mkfsTime: 1, onRestart: (w) => assert.fail(`no restart expected: ${w}`) });
  const whole = new MemoryDisk(0);
  await writeSquashfs(await materialize(await lazyTreeFromFileSystem(fs)), whole, { threads: 2, mkfsTime: 1 });
  assert.deepEqual(streamed.bytes, whole.bytes);
  assert.deepEqual(streamed.bytes, first.bytes, 'and the image it was read from');
  assert.deepEqual(await readerSnapshot(await SquashfsReader.open(streamed), { times: true }), await readerSnapshot(reader, { times: true }));
});

test('a host directory is streamed (listed as the writer goes) with the bytes of its tree held whole; a hard link with a name outside it has the names inside', async () => {
  const tmp = tempDir('livestick-stream-host-');
  try {
    const root = join(tmp.dir, 'root');
    mkdirSync(join(root, 'a/b'), { recursive: true });
    writeFileSync(join(root, 'a/one'), noisy(200_000, 3));
    linkSync(join(root, 'a/one'), join(root, 'a/b/two'));
    writeFileSync(join(root, 'half'), 'half of a pair\n');
    linkSync(join(root, 'half'), join(tmp.dir, 'outside'));
    symlinkSync('a/one', join(root, 's'));
    const streamed = new MemoryDisk(0);
    await writeSquashfs(root, streamed, { threads: 2, mkfsTime: 1, onRestart: (w) => assert.fail(`a host directory is counted first: ${w}`) });
    const whole = new MemoryDisk(0);
    await writeSquashfs(await treeFromDirectory(root), whole, { threads: 2, mkfsTime: 1 });
    assert.deepEqual(streamed.bytes, whole.bytes);
    const r = await SquashfsReader.open(streamed);
    assert.equal((await r.lookup('half')).nlink, 1);
    assert.equal((await r.lookup('a/b/two')).nlink, 2);
  } finally {
    tmp.cleanup();
  }
});

test('DedupeIndex keeps what a Map of keys keeps (first record wins), across growth', () => {
  fc.assert(
    fc.property(fc.array(fc.tuple(fc.nat(300), fc.nat(3), fc.array(fc.nat(1 << 25), { maxLength: 5 })), { maxLength: 3000 }), (ops) => {
      const index = new DedupeIndex();
      const model = new Map<string, { start: number; words: number[] }>();
      ops.forEach(([k, size, words], i) => {
        const key = createHash('sha256').update(String(k)).digest();
        const id = `${k}:${size}`;
        const data = { start: i * 4096, words, fragment: i % 7, fragmentOffset: i, sparse: i % 3 };
        index.set(key, size, data);
        if (!model.has(id)) model.set(id, data);
        const got = index.get(key, size);
        const want = model.get(id)!;
        assert.equal(got?.start, want.start);
        assert.deepEqual(got?.words, want.words);
        assert.equal(index.get(key, size + 10), undefined, 'the size is part of the key');
      });
      assert.equal(index.count, model.size);
    }),
    { numRuns: 30 },
  );
});

test('a lazy tree of 300k entries is written under a 64 MiB heap (the writer holds its queue, not the tree), and reads back', async () => {
  const tmp = tempDir('livestick-stream-');
  const out = join(tmp.dir, 'big.img');
  const script = new URL('./lazy-tree.ts', import.meta.url).pathname;
  const r = spawnSync(process.execPath, ['--max-old-space-size=64', '--import', 'tsx', script, '300000', out], { encoding: 'utf8' });
  try {
    assert.equal(r.status, 0, r.stderr.slice(-2000));
    const result = JSON.parse(r.stdout.trim().split('\n').pop() as string);
    assert.ok(result.inodes > 299_000, `inodes ${result.inodes}`);
    const reader = await SquashfsReader.open(await FileDisk.open(out, { readOnly: true }));
    assert.equal(reader.superblock.inodes, result.inodes);
    // Spot checks: a file deep in the tree, a hard link's nlink.
    let files = 0;
    let linked = 0;
    for await (const e of reader.walk()) {
      if (e.inode.kind !== 'file') continue;
      files++;
      if (e.path.endsWith('/hard-1000')) {
        linked++;
        assert.equal(e.inode.nlink, 2);
        assert.deepEqual(Buffer.from(await reader.readFile(e.path)), Buffer.from(lazyFileBytes(1000)));
      }
    }
    assert.equal(linked, 1);
    assert.ok(files > 250_000, `${files} files`);
  } finally {
    tmp.cleanup();
  }
});

