/**
 * Round trips of the home image through the library and the CLI: create, import a tree, ls/cat,
 * export equals the source, passwd, resize keeps data and adds free space, e2fsck -fn clean
 * (on the plain image, or on the decrypted payload dumped through the library).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, readdirSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { spawn } from 'node:child_process';
import { crc32 } from 'node:zlib';
import { join } from 'node:path';
import {
  createHome,
  homeCat,
  homeExport,
  homeImport,
  homeInfo,
  homeList,
  homePasswd,
  homeResize,
} from '../../src/ops/home.ts';
import { UndoDisk } from '../../src/ops/home-undo.ts';
import { FileDisk } from '../../src/io/disk.ts';
import { LivestickError } from '../../src/errors.ts';
import { LuksVolume } from '../../src/xform/luks/index.ts';
import { tempDir } from '../helpers/tmp.ts';
import { missingTools } from '../helpers/tools.ts';
import { runCli } from '../helpers/cli.ts';
import { LOW_KDF, access, describeTree, e2fsckHome, enc, makeTree } from './helpers.ts';

const MiB = 1 << 20;

function medium(dir: string): string {
  const m = join(dir, 'stick');
  mkdirSync(join(m, 'LiveOS'), { recursive: true });
  writeFileSync(join(m, 'LiveOS', 'squashfs.img'), '');
  return m;
}

async function catAll(image: string, path: string, acc = {}): Promise<Buffer> {
  const parts: Buffer[] = [];
  await homeCat(image, path, async (p) => void parts.push(Buffer.from(p)), acc);
  return Buffer.concat(parts);
}

for (const encrypted of [false, true]) {
  test(`home round trip (${encrypted ? 'LUKS2' : 'plain'}): create, import, ls, cat, export, resize, e2fsck`, { skip: missingTools('e2fsck') }, async () => {
    const { dir, cleanup } = tempDir();
    try {
      const m = medium(dir);
      const src = join(dir, 'src');
      makeTree(src);
      const acc = encrypted ? access('correct horse') : {};
      const created = await createHome(m, { size: 64 * MiB, encrypt: encrypted, kdf: LOW_KDF, ...acc });
      const image = join(m, 'LiveOS', 'home.img');
      assert.equal(created.path, image);
      assert.equal(created.label, 'home');
      assert.equal(created.blockSize, 4096);
      assert.equal(statSync(image).size, 64 * MiB);
      assert.ok(!existsSync(`${image}.livestick-new`));

      const info0 = await homeInfo(m, acc);
      assert.equal(info0.encrypted, encrypted);
      assert.equal(info0.filesystem?.label, 'home');
      assert.equal(info0.filesystem?.uuid, created.fsUuid);
      if (encrypted) {
        assert.equal(info0.luks?.version, 2);
        assert.equal(info0.luks?.cipher, 'aes-xts-plain64');
        assert.equal(info0.luks?.sectorSize, 4096);
        assert.equal(info0.luks?.keyslots[0]?.kdf, 'pbkdf2');
        const locked = await homeInfo(m);
        assert.equal(locked.filesystem, undefined, 'no passphrase: only the header');
        assert.equal(locked.luks?.uuid, info0.luks?.uuid);
      } else {
        assert.equal(info0.luks, undefined);
      }

      const imp = await homeImport(m, `${src}/.`, '/liveuser', acc);
      assert.equal(imp.dest, '/liveuser');
      assert.equal(imp.files, 25);
      assert.equal(imp.hardLinks, 1);
      assert.equal(imp.symlinks, 1);
      assert.ok(!existsSync(`${image}.livestick-undo`), 'the undo log is gone after commit');
      assert.ok(imp.bytes > 3 * MiB, `${imp.bytes} imported`);
      // One jbd2 transaction carries the import: the undo log saves nothing (not even metadata).
      assert.equal(imp.safety, 'journal');
      assert.equal(imp.undoLogBytes, 0, `undo log of ${imp.undoLogBytes} bytes for ${imp.bytes} imported`);
      assert.deepEqual(imp.warnings, []);

      const ls = await homeList(m, '/liveuser', acc);
      assert.deepEqual(ls.entries.map((e) => e.name), ['.config', 'Documents', 'empty', 'link-to-big', 'notes.txt']);
      for (const e of ls.entries) assert.deepEqual([e.uid, e.gid], [1000, 1000], `${e.name} owned by the live user`);
      assert.equal(ls.entries.find((e) => e.name === 'link-to-big')?.target, 'Documents/big.bin');
      assert.equal((await catAll(m, '/liveuser/notes.txt', acc)).toString(), 'hello home\n');
      assert.deepEqual(await catAll(m, '/liveuser/Documents/big.bin', acc), readFileSync(join(src, 'Documents', 'big.bin')));

      // Importing a single file into an existing directory puts it under its own name.
      await homeImport(m, join(src, 'notes.txt'), '/', acc);
      assert.equal((await catAll(m, '/notes.txt', acc)).toString(), 'hello home\n');

      const out = join(dir, 'backup');
      const ex = await homeExport(m, out, acc);
      assert.equal(ex.hardLinks, 1);
      assert.deepEqual(describeTree(join(out, 'liveuser')), describeTree(src));
      assert.equal(statSync(join(out, 'liveuser', 'notes.txt')).ino, statSync(join(out, 'liveuser', 'Documents', 'notes-hardlink.txt')).ino);
      assert.ok(!existsSync(join(out, 'lost+found')));
      await assert.rejects(homeExport(m, out, acc), { code: 'EXISTS' }, 'export refuses a non-empty destination');

      const scratch = join(dir, 'fs.img');
      const fsck1 = await e2fsckHome(image, scratch, acc);
      assert.equal(fsck1.status, 0, fsck1.out);

      const before = (await homeInfo(m, acc)).filesystem!;
      const r = await homeResize(m, 160 * MiB, acc);
      assert.equal(statSync(image).size, 160 * MiB);
      assert.ok(r.newBlocks > r.oldBlocks);
      const after = (await homeInfo(m, acc)).filesystem!;
      assert.equal(after.size - before.size, 96 * MiB);
      assert.ok(after.free > before.free + 90 * MiB, `free ${before.free} → ${after.free}`);
      assert.equal(after.used, before.used + (after.size - before.size) - (after.free - before.free));
      const out2 = join(dir, 'backup2');
      await homeExport(m, out2, acc);
      assert.deepEqual(describeTree(join(out2, 'liveuser')), describeTree(src));
      const fsck2 = await e2fsckHome(image, scratch, acc);
      assert.equal(fsck2.status, 0, fsck2.out);
    } finally {
      cleanup();
    }
  });
}

test('home passwd: the new passphrase works, the old one is refused with WRONG_PASSPHRASE; plain homes have none', async () => {
  const { dir, cleanup } = tempDir();
  try {
    const image = join(dir, 'home.img');
    await createHome(image, { size: 32 * MiB, encrypt: true, kdf: LOW_KDF, ...access('old pass') });
    await homeImport(image, join(import.meta.dirname, 'helpers.ts'), '/', access('old pass'));
    await assert.rejects(homePasswd(image, enc('nope'), enc('new pass'), { kdf: LOW_KDF }), { code: 'WRONG_PASSPHRASE' });
    await homePasswd(image, enc('old pass'), enc('new pass'), { kdf: LOW_KDF });
    await assert.rejects(homeList(image, '/', access('old pass')), { code: 'WRONG_PASSPHRASE' });
    const names = (await homeList(image, '/', access('new pass'))).entries.map((e) => e.name);
    assert.deepEqual(names, ['helpers.ts', 'lost+found']);
    const disk = await FileDisk.open(image, { readOnly: true });
    try {
      const vol = await LuksVolume.open(disk);
      assert.equal(vol.info().keyslots.length, 1, 'the old keyslot is gone');
    } finally {
      await disk.close();
    }
    const plain = join(dir, 'plain.img');
    await createHome(plain, { size: 16 * MiB });
    await assert.rejects(homePasswd(plain, enc('a'), enc('b')), { code: 'USAGE' });
    await assert.rejects(homeList(image, '/'), { code: 'USAGE' }, 'encrypted without a passphrase source');
  } finally {
    cleanup();
  }
});

test('home create refuses to replace a home without force and leaves no temporary file', async () => {
  const { dir, cleanup } = tempDir();
  try {
    const m = medium(dir);
    await createHome(m, { size: 16 * MiB, label: 'mine' });
    const image = join(m, 'LiveOS', 'home.img');
    await homeImport(m, join(import.meta.dirname, 'helpers.ts'), '/', {});
    await assert.rejects(createHome(m, { size: 16 * MiB }), { code: 'EXISTS' });
    assert.deepEqual((await homeList(m, '/')).entries.map((e) => e.name), ['helpers.ts', 'lost+found']);
    assert.equal((await homeInfo(m)).filesystem?.label, 'mine');
    await createHome(m, { size: 24 * MiB, force: true });
    assert.equal(statSync(image).size, 24 * MiB);
    assert.deepEqual((await homeList(m, '/')).entries.map((e) => e.name), ['lost+found']);
    assert.deepEqual(readdirSync(join(m, 'LiveOS')).sort(), ['home.img', 'squashfs.img']);
    await assert.rejects(createHome(join(dir, 'x.img'), { size: 20 * MiB, encrypt: true, kdf: LOW_KDF, ...access('p') }), { code: 'USAGE' }, 'too small for LUKS2 + ext4');
    await assert.rejects(homeInfo(join(dir, 'nowhere')), { code: 'NOT_FOUND' });
  } finally {
    cleanup();
  }
});

test('an interrupted change (undo log left behind) is rolled back by the next command, byte for byte', async () => {
  const { dir, cleanup } = tempDir();
  try {
    const image = join(dir, 'home.img');
    await createHome(image, { size: 16 * MiB });
    await homeImport(image, join(import.meta.dirname, 'helpers.ts'), '/', {});
    const hash = (): string => createHash('sha256').update(readFileSync(image)).digest('hex');
    const original = hash();
    const file = await FileDisk.open(image);
    const undo = await UndoDisk.begin(file, `${image}.livestick-undo`);
    await undo.resize(20 * MiB);
    await undo.write(new Uint8Array(3 * 4096 + 100).fill(0xaa), 1000);
    await undo.write(new Uint8Array(4096).fill(0xbb), 17 * MiB);
    await undo.flush();
    await undo.write(new Uint8Array(70).fill(0xcc), 0);
    await undo.flush();
    await undo.close();
    await file.close();
    assert.notEqual(hash(), original);
    // A torn record at the end of the log must be ignored.
    writeFileSync(`${image}.livestick-undo`, new Uint8Array(9).fill(7), { flag: 'a' });
    const listed = await homeList(image, '/');
    assert.deepEqual(listed.entries.map((e) => e.name), ['helpers.ts', 'lost+found']);
    assert.equal(hash(), original);
    assert.equal(statSync(image).size, 16 * MiB);
    assert.ok(!existsSync(`${image}.livestick-undo`));
  } finally {
    cleanup();
  }
});

test('home import that runs out of space (after writing more than one checkpoint) changes nothing', { skip: missingTools('e2fsck') }, async () => {
  const { dir, cleanup } = tempDir();
  try {
    const image = join(dir, 'home.img');
    await createHome(image, { size: 48 * MiB });
    await homeImport(image, join(import.meta.dirname, 'helpers.ts'), '/', {});
    const src = join(dir, 'src');
    makeTree(src, { bigBytes: 70 * MiB });
    const before = await homeInfo(image);
    await assert.rejects(homeImport(image, src, '/', {}), { code: 'NO_SPACE' });
    assert.ok(!existsSync(`${image}.livestick-undo`));
    assert.deepEqual(await homeInfo(image), before);
    assert.deepEqual((await homeList(image, '/')).entries.map((e) => e.name), ['helpers.ts', 'lost+found']);
    const fsck = await e2fsckHome(image, join(dir, 'fs.img'));
    assert.equal(fsck.status, 0, fsck.out);
  } finally {
    cleanup();
  }
});

test('home CLI: JSON documents, exit codes, passphrase from a file', () => {
  const { dir, cleanup } = tempDir();
  try {
    const m = medium(dir);
    const pf = join(dir, 'pass');
    writeFileSync(pf, 'cli pass');
    const bad = join(dir, 'bad');
    writeFileSync(bad, 'wrong');
    const c = runCli(['home', 'create', m, '--size', '40M', '--encrypt', '--passphrase-file', pf, '--pbkdf', 'pbkdf2', '--pbkdf-force-iterations', '1000', '--json']);
    assert.equal(c.status, 0, c.stderr);
    assert.equal(c.json.ok, true);
    assert.equal(c.json.encrypted, true);
    const again = runCli(['home', 'create', m, '--size', '40M', '--json']);
    assert.equal(again.status, 73);
    assert.equal(again.json.error.code, 'EXISTS');
    const info = runCli(['home', 'info', m, '--json']);
    assert.equal(info.status, 0, info.stderr);
    assert.equal(info.json.luks.cipher, 'aes-xts-plain64');
    assert.equal(info.json.filesystem, undefined);
    const wrong = runCli(['home', 'ls', m, '--passphrase-file', bad, '--json']);
    assert.equal(wrong.json.error.code, 'WRONG_PASSPHRASE');
    assert.equal(wrong.status, 77);
    const imp = runCli(['home', 'import', m, join(import.meta.dirname, 'helpers.ts'), '--passphrase-file', pf, '--json']);
    assert.equal(imp.status, 0, imp.stderr);
    assert.equal(imp.json.files, 1);
    const cat = runCli(['home', 'cat', m, '/helpers.ts', '--passphrase-file', pf]);
    assert.equal(cat.stdout, readFileSync(join(import.meta.dirname, 'helpers.ts'), 'utf8'));
    const ls = runCli(['home', 'ls', m, '/', '-l', '--passphrase-file', pf]);
    assert.match(ls.stdout, /^-rw-r--r-- +1 +1000 +1000 .* helpers\.ts$/m);
    const unlocked = runCli(['home', 'info', m, '--passphrase-file', pf, '--json']);
    assert.equal(unlocked.json.filesystem.label, 'home');
    const noTty = runCli(['home', 'ls', m], { input: '' });
    assert.equal(noTty.status, 64, 'no terminal and no --passphrase-file is a usage error');
  } finally {
    cleanup();
  }
});

test('bad home images give typed errors: truncated LUKS volume, garbage, truncated ext4', async () => {
  const { dir, cleanup } = tempDir();
  try {
    const enc1 = join(dir, 'enc.img');
    await createHome(enc1, { size: 32 * MiB, encrypt: true, kdf: LOW_KDF, ...access('p') });
    truncateSync(enc1, 1 * MiB);
    await assert.rejects(homeInfo(enc1, access('p')), { code: 'CORRUPT_IMAGE' });
    const junk = join(dir, 'junk.img');
    writeFileSync(junk, Buffer.alloc(4 * MiB, 0x5a));
    await assert.rejects(homeInfo(junk), { code: 'CORRUPT_IMAGE' });
    const plain = join(dir, 'plain.img');
    await createHome(plain, { size: 32 * MiB });
    truncateSync(plain, 2 * MiB);
    await assert.rejects(homeList(plain, '/'), (err: { code?: string }) => ['CORRUPT_IMAGE', 'OUT_OF_RANGE', 'IO'].includes(err.code ?? ''));
    await assert.rejects(homeImport(plain, join(import.meta.dirname, 'helpers.ts'), '/', {}), (err) => err instanceof LivestickError && err.code !== 'FAILURE');
    assert.ok(!existsSync(`${plain}.livestick-undo`));
  } finally {
    cleanup();
  }
});

test('a change in progress in another live process is not rolled back under it', async () => {
  const { dir, cleanup } = tempDir();
  try {
    const image = join(dir, 'home.img');
    await createHome(image, { size: 16 * MiB });
    const log = `${image}.livestick-undo`;
    const file = await FileDisk.open(image);
    const undo = await UndoDisk.begin(file, log);
    await undo.write(new Uint8Array(4096).fill(0xee), 0);
    await undo.flush();
    await undo.close();
    await file.close();
    const other = spawn('sleep', ['30'], { stdio: 'ignore' });
    try {
      const head = readFileSync(log);
      head.writeUInt32LE(other.pid!, 16);
      head.writeUInt32LE(crc32(head.subarray(0, 24)), 24);
      writeFileSync(log, head);
      await assert.rejects(homeList(image, '/'), /another livestick process/);
      assert.ok(existsSync(log), 'the log of a live change stays');
    } finally {
      other.kill('SIGKILL');
      await new Promise((resolve) => other.once('exit', resolve));
    }
    assert.deepEqual((await homeList(image, '/')).entries.map((e) => e.name), ['lost+found'], 'once that process is gone, its change is rolled back');
    assert.ok(!existsSync(log));
  } finally {
    cleanup();
  }
});

test('home import owners (live user, host owners, explicit), ls of a file, cat of a directory', async () => {
  const { dir, cleanup } = tempDir();
  try {
    const image = join(dir, 'home.img');
    await createHome(image, { size: 16 * MiB });
    const f = join(import.meta.dirname, 'helpers.ts');
    await homeImport(image, f, '/a', {});
    await homeImport(image, f, '/b', { owner: 'keep' });
    await homeImport(image, f, '/c', { owner: { uid: 4242, gid: 77 } });
    const st = statSync(f);
    const ids = (name: string): Promise<number[]> => homeList(image, `/${name}`).then((r) => [r.entries[0]!.uid, r.entries[0]!.gid]);
    assert.deepEqual(await ids('a'), [1000, 1000]);
    assert.deepEqual(await ids('b'), [st.uid, st.gid]);
    assert.deepEqual(await ids('c'), [4242, 77]);
    assert.deepEqual((await homeList(image, '/a')).entries.map((e) => e.name), ['a']);
    await assert.rejects(homeCat(image, '/lost+found', async () => {}), { code: 'USAGE' });
    await assert.rejects(homeCat(image, '/missing', async () => {}), { code: 'NOT_FOUND' });
  } finally {
    cleanup();
  }
});
