/**
 * The rough edges a first real user hits with /home: a wrong passphrase leaves the image untouched
 * (mtime included), export as root keeps owners, skipped special files are warned about, and a full
 * filesystem says how much more room the import needs and which resize gives it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createHome, homeExport, homeImport, homeList, homeResize } from '../../src/ops/home.ts';
import { FileDisk } from '../../src/io/disk.ts';
import { Ext4, Ext4Writer } from '../../src/fs/ext4/index.ts';
import { runCli } from '../helpers/cli.ts';
import { tempDir } from '../helpers/tmp.ts';
import { LOW_KDF, access, bytes, enc } from './helpers.ts';

const MiB = 1 << 20;

test('a wrong passphrase changes nothing, not even the mtime (import, resize); a prompt gets three tries', async () => {
  const { dir, cleanup } = tempDir();
  try {
    const image = join(dir, 'home.img');
    await createHome(image, { size: 24 * MiB, encrypt: true, kdf: LOW_KDF, ...access('right') });
    const past = new Date('2020-01-01T00:00:00Z');
    utimesSync(image, past, past);
    const src = join(dir, 'f.txt');
    writeFileSync(src, 'x');
    await assert.rejects(homeImport(image, src, '/', access('wrong')), { code: 'WRONG_PASSPHRASE' });
    await assert.rejects(homeResize(image, 32 * MiB, access('wrong')), { code: 'WRONG_PASSPHRASE' });
    assert.equal(statSync(image).mtimeMs, past.getTime());
    assert.equal(statSync(image).size, 24 * MiB);
    assert.ok(!existsSync(`${image}.livestick-undo`));

    const answers = ['wrong', 'also wrong', 'right'];
    const told: number[] = [];
    const prompt = { passphrase: async () => enc(answers.shift()!), tries: 3, onWrongPassphrase: (n: number) => void told.push(n) };
    const r = await homeImport(image, src, '/', prompt);
    assert.equal(r.files, 1);
    assert.deepEqual(told, [1, 2]);
    const three = ['1', '2', '3', 'right'];
    await assert.rejects(homeList(image, '/', { passphrase: async () => enc(three.shift()!), tries: 3 }), { code: 'WRONG_PASSPHRASE' });
    assert.deepEqual(three, ['right'], 'no fourth try');
  } finally {
    cleanup();
  }
});

test('export as root keeps the image owners (files, directories, symlinks)', { skip: process.getuid?.() === 0 ? false : 'needs root to set other owners' }, async () => {
  const { dir, cleanup } = tempDir();
  try {
    const image = join(dir, 'home.img');
    await createHome(image, { size: 16 * MiB });
    const src = join(dir, 'src');
    mkdirSync(join(src, 'sub'), { recursive: true });
    writeFileSync(join(src, 'sub', 'a'), 'a');
    spawnSync('ln', ['-s', 'sub/a', join(src, 'link')]);
    await homeImport(image, `${src}/.`, '/', { owner: { uid: 1234, gid: 5678 } });
    const out = join(dir, 'out');
    await homeExport(image, out);
    for (const p of ['sub', 'sub/a', 'link']) {
      const st = lstatSync(join(out, p));
      assert.deepEqual([st.uid, st.gid], [1234, 5678], p);
    }
  } finally {
    cleanup();
  }
});

test('skipped special files are warnings: import (a FIFO) and export (a device node), human and JSON', async () => {
  const { dir, cleanup } = tempDir();
  try {
    const image = join(dir, 'home.img');
    await createHome(image, { size: 16 * MiB });
    const src = join(dir, 'src');
    mkdirSync(src);
    writeFileSync(join(src, 'plain'), 'p');
    const fifo = spawnSync('mkfifo', [join(src, 'pipe')]).status === 0;
    if (fifo) {
      const r = runCli(['home', 'import', image, `${src}/.`, '/']);
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stderr, /warning: skipped .*src\/pipe: FIFO: not copied/);
      assert.match(r.stdout, /skipped 1 special files/);
    }
    const disk = await FileDisk.open(image);
    const w = await Ext4Writer.open(await Ext4.open(disk));
    await w.mknod('/tty0', 'chardev', { major: 4, minor: 0 });
    await w.close();
    await disk.close();
    let r = runCli(['home', 'export', image, join(dir, 'out1')]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /warning: skipped .*out1\/tty0: character device: not exported/);
    r = runCli(['home', 'export', image, join(dir, 'out2'), '--json']);
    assert.equal(r.status, 0, r.stdout);
    assert.deepEqual(r.json.skippedNodes, [{ path: join(dir, 'out2', 'tty0'), reason: 'character device: not exported' }]);
    assert.equal(r.stderr, '', 'JSON mode: the warning is in the document');
  } finally {
    cleanup();
  }
});

test('an import that does not fit says how much more it needs; the resize it suggests makes it fit', async () => {
  const { dir, cleanup } = tempDir();
  try {
    const m = join(dir, 'stick');
    mkdirSync(join(m, 'LiveOS'), { recursive: true });
    writeFileSync(join(m, 'LiveOS', 'squashfs.img'), '');
    await createHome(m, { size: 16 * MiB });
    const src = join(dir, 'big.bin');
    writeFileSync(src, bytes('big', 24 * MiB));
    let r = runCli(['home', 'import', m, src]);
    assert.equal(r.status, 74, r.stderr);
    const said = /needs about ([\d.]+) MiB more than the ([\d.]+) MiB free \(nothing was changed\); run `livestick home resize (\S+) --size (\d+M)` first/.exec(r.stderr);
    assert.ok(said, r.stderr);
    assert.ok(Number(said[1]) >= 24 - Number(said[2]) && Number(said[1]) < 24, `needs ${said[1]} MiB more`);
    assert.equal(said[3], m);
    assert.doesNotMatch(r.stderr, /\d{7,}/, 'no raw byte counts');
    assert.equal(runCli(['home', 'resize', m, '--size', said[4]!]).status, 0);
    r = runCli(['home', 'import', m, src, '--json']);
    assert.equal(r.status, 0, r.stdout);
  } finally {
    cleanup();
  }
});
