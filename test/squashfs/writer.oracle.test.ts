import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { missingTools, run } from '../helpers/tools.ts';
import { tempDir } from '../helpers/tmp.ts';
import { writeSquashfs } from '../../src/fs/squashfs/writer.ts';
import { SquashfsReader } from '../../src/fs/squashfs/reader.ts';
import { FileDisk, MemoryDisk } from '../../src/io/disk.ts';
import { dirNode } from '../../src/fs/squashfs/tree.ts';
import { diffSnapshots, makeVariedTree, readerSnapshot, snapshot, xattrReaderFor } from './fixture.ts';

const skip = missingTools('unsquashfs', 'sqfs2tar', 'rdsquashfs', 'setfattr', 'getfattr', 'mknod', 'mkfifo');
const tmp = tempDir('sqfs-writer-');
const trees = { big: join(tmp.dir, 'src-big'), small: join(tmp.dir, 'src-small') };
const sources = new Map<string, Map<string, string>>();

before(() => {
  if (skip) return;
  // 10k entries (for one codec: directories do not depend on it): many listing headers, 8 KiB
  // index crossings, an ldir with a directory index. 600 entries for the others.
  makeVariedTree(trees.big, { bigDir: 10000 });
  makeVariedTree(trees.small, { bigDir: 600 });
  sources.set(trees.big, snapshot(trees.big));
  sources.set(trees.small, snapshot(trees.small));
});
after(() => tmp.cleanup());

for (const comp of ['gzip', 'xz', 'zstd', 'lz4'] as const) {
  const src = comp === 'gzip' ? trees.big : trees.small;
  test(`writer ${comp}${comp === 'gzip' ? ' (10k-entry directory)' : ''}: unsquashfs, sqfs2tar, rdsquashfs, kernel mount and our reader see exactly the source`, { skip }, async () => {
    const source = sources.get(src) as Map<string, string>;
    const img = join(tmp.dir, `${comp}.sqfs`);
    await writeSquashfs(src, img, { compressor: comp, threads: 2, scan: { readXattrs: xattrReaderFor(src) } });

    const u = join(tmp.dir, `u-${comp}`);
    run('unsquashfs', ['-q', '-n', '-d', u, img]);
    assert.deepEqual(diffSnapshots(source, snapshot(u)), []);

    const t = join(tmp.dir, `t-${comp}`);
    mkdirSync(t);
    run('sh', ['-c', `sqfs2tar ${img} | tar --xattrs --xattrs-include='*' --numeric-owner -xpf - -C ${t}`]);
    // sqfs2tar puts everything under the tar root; it has the same tree.
    assert.deepEqual(diffSnapshots(source, snapshot(t)), []);

    const r = join(tmp.dir, `r-${comp}`);
    mkdirSync(r);
    run('rdsquashfs', ['-q', '-u', '/', '-p', r, '-X', '-T', '-C', '-O', img]);
    // rdsquashfs unpacks each hard link as a separate file: compare without link groups.
    assert.deepEqual(diffSnapshots(snapshot(src, { links: false }), snapshot(r, { links: false })), []);

    const disk = await FileDisk.open(img, { readOnly: true });
    try {
      const reader = await SquashfsReader.open(disk);
      assert.deepEqual(diffSnapshots(source, await readerSnapshot(reader)), []);
    } finally {
      await disk.close();
    }

    if (process.getuid?.() === 0) {
      const m = join(tmp.dir, `m-${comp}`);
      mkdirSync(m);
      const mounted = run('mount', ['-o', 'loop,ro', '-t', 'squashfs', img, m], { allowFail: true });
      assert.equal(mounted.status, 0, `kernel refused the image: ${mounted.stderr}`);
      try {
        assert.deepEqual(diffSnapshots(source, snapshot(m)), []);
      } finally {
        run('umount', [m]);
      }
    }
  });
}

const optionVariants: Array<[string, Parameters<typeof writeSquashfs>[2]]> = [
  ['block size 4K', { blockSize: 4096 }],
  ['block size 1M, zstd', { blockSize: 1 << 20, compressor: 'zstd' }],
  ['no fragments', { noFragments: true }],
  ['always fragments', { alwaysFragments: true, compressor: 'lz4' }],
  ['xz with x86 BCJ, all-root, fixed mtime', { compressor: 'xz', compressorSettings: { bcj: ['x86'] }, allRoot: true, mtime: 1_000_000 }],
];

for (const [name, opts] of optionVariants) {
  test(`writer options (${name}): unsquashfs and the kernel see the source`, { skip }, async () => {
    const src = trees.small;
    const slug = name.replace(/[^a-z0-9]+/gi, '_');
    const img = join(tmp.dir, `opt-${slug}.sqfs`);
    await writeSquashfs(src, img, { threads: 2, ...opts, scan: { readXattrs: xattrReaderFor(src) } });
    const adjust = (m: Map<string, string>): Map<string, string> => {
      if (!opts?.allRoot && opts?.mtime === undefined) return m;
      const out = new Map<string, string>();
      for (const [k, v] of m) {
        let d = v;
        if (opts.allRoot) d = d.replace(/uid=\d+ gid=\d+/, 'uid=0 gid=0');
        if (opts.mtime !== undefined) d = d.replace(/mtime=\d+/, `mtime=${opts.mtime}`);
        out.set(k, d);
      }
      return out;
    };
    const want = adjust(sources.get(src) as Map<string, string>);
    const u = join(tmp.dir, `u-opt-${slug}`);
    run('unsquashfs', ['-q', '-n', '-d', u, img]);
    assert.deepEqual(diffSnapshots(want, snapshot(u)), []);
    if (process.getuid?.() === 0) {
      const m = join(tmp.dir, `m-opt-${slug}`);
      mkdirSync(m);
      const mounted = run('mount', ['-o', 'loop,ro', '-t', 'squashfs', img, m], { allowFail: true });
      assert.equal(mounted.status, 0, `kernel refused the image: ${mounted.stderr}`);
      try {
        assert.deepEqual(diffSnapshots(want, snapshot(m)), []);
      } finally {
        run('umount', [m]);
      }
    }
  });
}

test('writer, one large file from a Disk (the rootfs.img case): sparse runs; unsquashfs and openFileDisk read it back', { skip }, async () => {
  const size = 48 * 1024 * 1024 + 12345;
  const bytes = new Uint8Array(size);
  for (let at = 0; at < size; at += 1 << 20) {
    // Alternate 1 MiB of text-like data and 1 MiB of zeros.
    if ((at >> 20) % 2 === 0) for (let i = at; i < Math.min(size, at + (1 << 20)); i++) bytes[i] = 97 + ((i * 7) % 23);
  }
  const tree = dirNode({}, { LiveOS: dirNode({}, { 'rootfs.img': { type: 'file', size, mode: 0o644, uid: 0, gid: 0, mtime: 1, content: { kind: 'disk', disk: new MemoryDisk(bytes, { readOnly: true }) } } }) });
  const img = join(tmp.dir, 'large.sqfs');
  const r = await writeSquashfs(tree, img, { threads: 2, compressor: 'zstd' });
  assert.ok(r.bytesUsed < size / 4, `sparse and compressed: ${r.bytesUsed}`);
  const x = join(tmp.dir, 'large-x');
  run('unsquashfs', ['-q', '-n', '-d', x, img]);
  assert.ok(Buffer.from(bytes).equals(readFileSync(join(x, 'LiveOS/rootfs.img'))));
  const disk = await FileDisk.open(img, { readOnly: true });
  try {
    const reader = await SquashfsReader.open(disk);
    const fd = await reader.openFileDisk('LiveOS/rootfs.img');
    const buf = new Uint8Array(3 << 20);
    await fd.read(buf, (1 << 20) - 100);
    assert.ok(Buffer.from(buf).equals(Buffer.from(bytes.subarray((1 << 20) - 100, (1 << 20) - 100 + buf.byteLength))));
  } finally {
    await disk.close();
  }
});
