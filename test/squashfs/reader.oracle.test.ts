import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { missingTools, run } from '../helpers/tools.ts';
import { tempDir } from '../helpers/tmp.ts';
import { SquashfsReader } from '../../src/fs/squashfs/reader.ts';
import { extractSquashfs } from '../../src/fs/squashfs/extract.ts';
import { FileDisk } from '../../src/io/disk.ts';
import { UnsupportedFeatureError } from '../../src/errors.ts';
import { diffSnapshots, makeVariedTree, readerSnapshot, snapshot } from './fixture.ts';

const skip = missingTools('mksquashfs', 'unsquashfs', 'setfattr', 'getfattr', 'mknod', 'mkfifo');
const tmp = tempDir('sqfs-reader-');
const src = join(tmp.dir, 'src');
before(() => {
  if (!skip) makeVariedTree(src, { bigDir: 600 });
});
after(() => tmp.cleanup());

const variants: Array<[string, string[]]> = [
  ['gzip', ['-comp', 'gzip']],
  ['gzip -Xcompression-level 1 (options stored)', ['-comp', 'gzip', '-Xcompression-level', '1']],
  ['xz', ['-comp', 'xz']],
  ['xz -Xbcj x86', ['-comp', 'xz', '-Xbcj', 'x86']],
  ['zstd', ['-comp', 'zstd']],
  ['lz4', ['-comp', 'lz4']],
  ['lz4 -Xhc', ['-comp', 'lz4', '-Xhc']],
  ['-no-fragments', ['-no-fragments']],
  ['-always-use-fragments', ['-always-use-fragments']],
  ['-no-xattrs', ['-no-xattrs']],
  ['-b 4K', ['-b', '4K']],
  ['-b 1M', ['-b', '1M']],
  ['-noI -noD -noF -noX (uncompressed)', ['-noI', '-noD', '-noF', '-noX']],
  ['-no-exports -no-sparse', ['-no-exports', '-no-sparse']],
];

for (const [name, args] of variants) {
  test(`reader: mksquashfs ${name}: our reader sees the source; extract equals unsquashfs`, { skip }, async () => {
    const slug = name.replace(/[^a-z0-9]+/gi, '_');
    const img = join(tmp.dir, `${slug}.sqfs`);
    run('mksquashfs', [src, img, '-noappend', '-quiet', '-no-progress', '-processors', '2', ...args]);
    const disk = await FileDisk.open(img, { readOnly: true });
    try {
      const reader = await SquashfsReader.open(disk);
      const want = snapshot(src, { xattrs: !args.includes('-no-xattrs') });
      assert.deepEqual(diffSnapshots(want, await readerSnapshot(reader)), []);

      const ours = join(tmp.dir, `ours-${slug}`);
      const theirs = join(tmp.dir, `theirs-${slug}`);
      // Codec variants decompress on worker threads (as large images do); the rest inline.
      const threads = /^(gzip|xz|zstd|lz4)/.test(name) ? 2 : 0;
      const res = await extractSquashfs(reader, ours, '', { threads });
      run('unsquashfs', ['-q', '-n', '-d', theirs, img]);
      // Node has no mknod: compare regular files, dirs, links (with times, owners, link groups, xattrs).
      const opts = { specials: false } as const;
      assert.deepEqual(diffSnapshots(snapshot(theirs, opts), snapshot(ours, opts)), []);
      assert.equal(res.skipped.filter((s) => s.reason.startsWith('chardev') || s.reason.startsWith('blockdev') || s.reason.startsWith('fifo')).length, 3);

      // A file read through openFileDisk at odd offsets equals the file.
      const f = await reader.lookup('3bs+17');
      assert.equal(f.kind, 'file');
      const whole = await reader.readFile('3bs+17');
      const fd = await reader.openFileDisk('3bs+17');
      for (const [off, len] of [[0, 1], [131071, 3], [200000, 100000], [whole.byteLength - 5, 5]] as const) {
        if (off + len > fd.size) continue;
        const buf = new Uint8Array(len);
        await fd.read(buf, off);
        assert.deepEqual(buf, whole.subarray(off, off + len));
      }
    } finally {
      await disk.close();
    }
  });
}

test('reader: an lzo image gives a clear UnsupportedFeatureError', { skip }, async () => {
  const img = join(tmp.dir, 'lzo.sqfs');
  const made = run('mksquashfs', [join(src, 'sub'), img, '-noappend', '-quiet', '-no-progress', '-comp', 'lzo'], { allowFail: true });
  if (made.status !== 0) return; // this mksquashfs was built without lzo
  const disk = await FileDisk.open(img, { readOnly: true });
  try {
    await assert.rejects(SquashfsReader.open(disk), (err: unknown) => err instanceof UnsupportedFeatureError && /lzo/.test(err.message));
  } finally {
    await disk.close();
  }
});
