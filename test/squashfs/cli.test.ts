import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, symlinkSync, writeFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { runCli } from '../helpers/cli.ts';
import { tempDir } from '../helpers/tmp.ts';

test('squashfs CLI: create, info --json, ls -l, cat, extract, and a typed error for a bad image', () => {
  const t = tempDir('sqfs-cli-');
  try {
    const src = join(t.dir, 'src');
    mkdirSync(join(src, 'etc'), { recursive: true });
    writeFileSync(join(src, 'etc/hostname'), 'live\n');
    writeFileSync(join(src, 'big'), Buffer.alloc(300_000, 7));
    symlinkSync('etc/hostname', join(src, 'link'));
    const img = join(t.dir, 'out.sqfs');

    const created = runCli(['squashfs', 'create', src, img, '--compressor', 'zstd', '--block-size', '64K', '--threads', '1', '--all-root', '--mtime', '1000', '--json']);
    assert.equal(created.status, 0, created.stderr);
    assert.equal(created.json.ok, true);

    const info = runCli(['squashfs', 'info', img, '--json']);
    assert.equal(info.status, 0, info.stderr);
    assert.equal(info.json.compressor, 'zstd');
    assert.equal(info.json.blockSize, 65536);
    assert.equal(info.json.inodes, 5);
    assert.equal(typeof info.json.bytesUsed, 'number');
    assert.equal(info.json.fragments, 1);

    const ls = runCli(['squashfs', 'ls', img, '/', '-l']);
    assert.equal(ls.status, 0, ls.stderr);
    assert.match(ls.stdout, /^-rw-r--r-- +1 +0 +0 +300000 1970-01-01 00:16 big$/m);
    assert.match(ls.stdout, /^l.* link -> etc\/hostname$/m);

    const cat = runCli(['squashfs', 'cat', img, 'etc/hostname']);
    assert.equal(cat.status, 0, cat.stderr);
    assert.equal(cat.stdout, 'live\n');

    const dest = join(t.dir, 'dest');
    const ex = runCli(['squashfs', 'extract', img, dest, '--json']);
    assert.equal(ex.status, 0, ex.stderr);
    assert.equal(ex.json.files, 2);
    assert.deepEqual(readFileSync(join(dest, 'big')), Buffer.alloc(300_000, 7));
    assert.equal(readlinkSync(join(dest, 'link')), 'etc/hostname');
    // The same through extraction workers (the image is small, so the default is the main thread).
    const dest2 = join(t.dir, 'dest2');
    const ex2 = runCli(['squashfs', 'extract', img, dest2, '--threads', '2', '--json']);
    assert.equal(ex2.status, 0, ex2.stderr);
    assert.deepEqual(readFileSync(join(dest2, 'big')), Buffer.alloc(300_000, 7));
    assert.equal(runCli(['squashfs', 'extract', img, dest2, '--threads', 'x']).status, 64);

    writeFileSync(join(t.dir, 'bad'), Buffer.alloc(4096, 1));
    const bad = runCli(['squashfs', 'info', join(t.dir, 'bad'), '--json']);
    assert.equal(bad.status, 65);
    assert.equal(bad.json.ok, false);
    assert.equal(bad.json.error.code, 'CORRUPT_IMAGE');

    const usage = runCli(['squashfs', 'create', src, img, '--compressor', 'brotli', '--json']);
    assert.equal(usage.status, 64);
  } finally {
    t.cleanup();
  }
});
