import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { missingTools, run } from '../helpers/tools.ts';
import { tempDir } from '../helpers/tmp.ts';
import { writeSquashfs } from '../../src/fs/squashfs/writer.ts';
import { SquashfsReader } from '../../src/fs/squashfs/reader.ts';
import { FileDisk } from '../../src/io/disk.ts';
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
