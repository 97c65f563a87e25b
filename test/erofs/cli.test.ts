/** `livestick erofs info|ls|cat|extract` on an image made by mkfs.erofs, and typed errors. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { lstatSync, mkdirSync, readFileSync, readlinkSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runCli } from '../helpers/cli.ts';
import { tempDir } from '../helpers/tmp.ts';
import { missingTools, run } from '../helpers/tools.ts';

test('erofs CLI: info --json, ls -l, cat, extract (safe into DEST), typed errors', { skip: missingTools('mkfs.erofs') }, () => {
  const t = tempDir('erofs-cli-');
  try {
    const src = join(t.dir, 'src');
    mkdirSync(join(src, 'etc'), { recursive: true });
    writeFileSync(join(src, 'etc/hostname'), 'live\n');
    writeFileSync(join(src, 'big'), Buffer.from('words and more words '.repeat(20000)));
    symlinkSync('etc/hostname', join(src, 'link'));
    const img = join(t.dir, 'out.erofs');
    run('mkfs.erofs', ['--quiet', '-zlz4hc', '-T1000', '--all-root', img, src]);

    const info = runCli(['erofs', 'info', img, '--json']);
    assert.equal(info.status, 0, info.stderr);
    assert.equal(info.json.blockSize, 4096);
    assert.deepEqual(info.json.algorithms, ['LZ4']);
    assert.ok(info.json.incompatFeatures.includes('lz4ZeroPadding'));

    const ls = runCli(['erofs', 'ls', img, '/', '-l']);
    assert.equal(ls.status, 0, ls.stderr);
    assert.match(ls.stdout, /^-rw-r--r-- +1 +0 +0 +420000 1970-01-01 00:16 big$/m);
    assert.match(ls.stdout, /^l.* link -> etc\/hostname$/m);
    const lsJson = runCli(['erofs', 'ls', img, '/etc', '--json']);
    assert.deepEqual(lsJson.json.entries.map((e: { name: string }) => e.name), ['hostname']);

    const cat = runCli(['erofs', 'cat', img, 'big']);
    assert.equal(cat.status, 0, cat.stderr);
    assert.equal(cat.stdout, 'words and more words '.repeat(20000));

    const dest = join(t.dir, 'dest');
    // A symlink already in DEST is replaced, never followed.
    mkdirSync(dest);
    symlinkSync(t.dir, join(dest, 'etc'));
    const ex = runCli(['erofs', 'extract', img, dest, '--json']);
    assert.equal(ex.status, 0, ex.stderr);
    assert.equal(ex.json.files, 2);
    assert.ok(lstatSync(join(dest, 'etc')).isDirectory());
    assert.equal(readFileSync(join(dest, 'etc/hostname'), 'utf8'), 'live\n');
    assert.equal(readlinkSync(join(dest, 'link')), 'etc/hostname');
    assert.equal(lstatSync(join(dest, 'big')).mtimeMs, 1_000_000);

    const sub = runCli(['erofs', 'extract', img, join(t.dir, 'sub'), '/etc', '--json']);
    assert.equal(sub.status, 0, sub.stderr);
    assert.equal(readFileSync(join(t.dir, 'sub/hostname'), 'utf8'), 'live\n');

    const missing = runCli(['erofs', 'cat', img, '/nope', '--quiet']);
    assert.equal(missing.status, 66);
    assert.equal(runCli(['erofs', 'cat', img, '/etc']).status, 64);
    writeFileSync(join(t.dir, 'bad.img'), Buffer.alloc(8192));
    const bad = runCli(['erofs', 'info', join(t.dir, 'bad.img'), '--json']);
    assert.equal(bad.status, 65);
    assert.equal(bad.json.error.code, 'CORRUPT_IMAGE');
    assert.match(bad.json.error.message, /superblock\.magic/);
  } finally {
    t.cleanup();
  }
});

test('erofs create: writes an image our info/ls/cat read back; same options give the same bytes; usage errors', () => {
  const t = tempDir('erofs-cli-create-');
  try {
    const src = join(t.dir, 'src');
    mkdirSync(join(src, 'etc'), { recursive: true });
    writeFileSync(join(src, 'etc/hostname'), 'live\n');
    writeFileSync(join(src, 'big'), Buffer.from('words and more words '.repeat(20000)));
    symlinkSync('etc/hostname', join(src, 'link'));
    const img = join(t.dir, 'out.erofs');
    const args = ['--block-size', '1K', '--mkfs-time', '1000', '--uuid', '00112233-4455-6677-8899-aabbccddeeff'];
    const made = runCli(['erofs', 'create', src, img, ...args, '--json']);
    assert.equal(made.status, 0, made.stderr);
    assert.equal(made.json.blockSize, 1024);
    assert.equal(made.json.inodes, 5);
    const info = runCli(['erofs', 'info', img, '--json']);
    assert.equal(info.status, 0, info.stderr);
    assert.equal(info.json.blockSize, 1024);
    assert.equal(info.json.uuid, '00112233-4455-6677-8899-aabbccddeeff');
    const cat = runCli(['erofs', 'cat', img, '/etc/hostname']);
    assert.equal(cat.stdout, 'live\n');
    const ls = runCli(['erofs', 'ls', img, '/', '-l']);
    assert.match(ls.stdout, /^l.* link -> etc\/hostname$/m);
    const again = join(t.dir, 'again.erofs');
    assert.equal(runCli(['erofs', 'create', src, again, ...args]).status, 0);
    assert.deepEqual(readFileSync(again), readFileSync(img));
    const bad = runCli(['erofs', 'create', src, join(t.dir, 'x'), '--block-size', '8K', '--json']);
    assert.notEqual(bad.status, 0);
    assert.match(JSON.stringify(bad.json), /block-size/);
    assert.notEqual(runCli(['erofs', 'create', src, join(t.dir, 'x'), '--uuid', 'nope']).status, 0);
    assert.notEqual(runCli(['erofs', 'create', src, join(t.dir, 'x'), '--chunk-size', '3000']).status, 0);
    const chunked = join(t.dir, 'chunked.erofs');
    const c = runCli(['erofs', 'create', src, chunked, '--chunk-size', '8K', '--json']);
    assert.equal(c.status, 0, c.stderr);
    assert.equal(c.json.chunkSize, 8192);
    const ci = runCli(['erofs', 'info', chunked, '--json']);
    assert.ok(ci.json.incompatFeatures.includes('chunkedFile'), JSON.stringify(ci.json));
    assert.deepEqual(Buffer.from(runCli(['erofs', 'cat', chunked, '/big']).stdout), readFileSync(join(src, 'big')));
  } finally {
    t.cleanup();
  }
});

test('erofs create -z: lzma with 1M pclusters and fragments, zstd with all fragments; info shows the compression; cat reads back; --help names the options; usage errors', () => {
  const t = tempDir('erofs-cli-z-');
  try {
    const src = join(t.dir, 'src');
    mkdirSync(join(src, 'etc'), { recursive: true });
    writeFileSync(join(src, 'etc/hostname'), 'live\n');
    writeFileSync(join(src, 'big'), Buffer.from('words and more words '.repeat(200000)));
    const img = join(t.dir, 'z.erofs');
    const made = runCli(['erofs', 'create', src, img, '-z', 'lzma,level=6', '-C', '1048576', '--fragments', '--mkfs-time', '1000', '--json']);
    assert.equal(made.status, 0, made.stderr);
    assert.equal(made.json.compression, 'lzma,level=6');
    assert.equal(made.json.pclusterSize, 1 << 20);
    assert.ok(made.json.size < 200_000, `compressed: ${made.json.size}`);
    const info = runCli(['erofs', 'info', img, '--json']);
    assert.equal(info.status, 0, info.stderr);
    assert.deepEqual(info.json.algorithms, ['LZMA']);
    assert.ok(info.json.incompatFeatures.includes('fragments'), JSON.stringify(info.json));
    assert.notEqual(info.json.packedNid, null);
    assert.equal(runCli(['erofs', 'cat', img, '/big']).stdout, 'words and more words '.repeat(200000));
    assert.equal(runCli(['erofs', 'cat', img, '/etc/hostname']).stdout, 'live\n');
    const zs = join(t.dir, 'zs.erofs');
    const z2 = runCli(['erofs', 'create', src, zs, '--compress', 'zstd,level=9', '--pcluster-size', '64K', '--all-fragments', '--dedupe', '--threads', '0', '--json']);
    assert.equal(z2.status, 0, z2.stderr);
    assert.deepEqual(runCli(['erofs', 'info', zs, '--json']).json.algorithms, ['ZSTD']);
    assert.equal(runCli(['erofs', 'cat', zs, '/big']).stdout, 'words and more words '.repeat(200000));
    const help = runCli(['erofs', 'create', '--help']);
    for (const o of ['-z, --compress', '-C, --pcluster-size', '--fragments', '--all-fragments', '--dedupe', '--threads']) assert.ok(help.stdout.includes(o), o);
    const x = join(t.dir, 'x');
    assert.equal(runCli(['erofs', 'create', src, x, '-z', 'brotli']).status, 64);
    assert.equal(runCli(['erofs', 'create', src, x, '-z', 'lzma', '-C', '3000']).status, 64);
    assert.equal(runCli(['erofs', 'create', src, x, '-C', '64K']).status, 64);
    assert.equal(runCli(['erofs', 'create', src, x, '--fragments']).status, 64);
    assert.equal(runCli(['erofs', 'create', src, x, '--dedupe']).status, 64);
    assert.equal(runCli(['erofs', 'create', src, x, '-z', 'lzma', '--chunk-size', '8K']).status, 64);
  } finally {
    t.cleanup();
  }
});
