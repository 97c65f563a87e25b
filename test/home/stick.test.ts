/**
 * `livestick home` on a FAT32 stick image (issue 12): every subcommand takes the image file as its
 * target and finds LiveOS/home.img inside its FAT partition. Against the same commands on the
 * unpacked directory: create (plain and LUKS2) gives the same home (byte for byte where nothing is
 * random), import the same tree, ls the same listings, cat the same bytes, export the same backup,
 * resize the same filesystem; fsck.fat is clean after every write and a reading command leaves the
 * image untouched. Then the refusals (FAT's 4 GiB − 1, a missing partition), the CLI, a home image
 * named directly still being the home image, and the same round trip on an exFAT partition.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createHome, homeCat, homeExport, homeImport, homeInfo, homeList, homePasswd, homeResize, type HomeAccess, type HomeInfo } from '../../src/ops/home.ts';
import { LivestickError } from '../../src/errors.ts';
import { FileDisk } from '../../src/io/disk.ts';
import { ExfatFs, mkfsExfat } from '../../src/fs/exfat/index.ts';
import { EMPTY_ENTRY, encodeMbr } from '../../src/fs/ptable/mbr.ts';
import { partitionDisk, readPartitionTable } from '../../src/fs/ptable/index.ts';
import { tempDir } from '../helpers/tmp.ts';
import { missingTools, run } from '../helpers/tools.ts';
import { runCli } from '../helpers/cli.ts';
import { updatedSample } from '../ops/helpers.ts';
import { fatStickFrom } from '../ops/stick.ts';
import { LOW_KDF, access, describeTree, e2fsckHome, enc, makeTree } from './helpers.ts';
import { fsckFat, stickFileSha, stickLiveos, type Partition } from './fat.ts';

const MiB = 2 ** 20;
const T = 1_767_225_600;
const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

async function catAll(target: string, path: string, acc: HomeAccess): Promise<Buffer> {
  const parts: Buffer[] = [];
  await homeCat(target, path, async (p) => void parts.push(Buffer.from(p)), acc);
  return Buffer.concat(parts);
}

/** What an info says that does not depend on where the image is (nor, for LUKS, on its random UUID). */
function infoFigures(i: HomeInfo) {
  const { path: _path, luks, ...rest } = i;
  if (!luks) return rest;
  const { uuid: _uuid, ...header } = luks;
  return { ...rest, luks: header };
}

describe('home on a FAT32 stick image', { skip: missingTools('fsck.fat', 'e2fsck') }, () => {
  const tmp = tempDir('livestick-home-stick-');
  let dir: string;
  let img: string;
  let part: Partition;
  let src: string;
  const shown = () => `${img}:p1/LiveOS/home.img`;
  const stickSha = () => sha(readFileSync(img));

  before(async () => {
    dir = await updatedSample(join(tmp.dir, 'dir'));
    img = join(tmp.dir, 'stick.img');
    part = await fatStickFrom(dir, img);
    src = join(tmp.dir, 'src');
    makeTree(src, { files: 8, bigBytes: 700_000 });
  });
  after(() => tmp.cleanup());

  for (const encrypted of [false, true]) {
    const kind = encrypted ? 'LUKS2' : 'plain';
    test(`${kind}: create, import, ls, cat, export on the image give what they give on the directory; fsck.fat clean after each write`, async () => {
      const acc = encrypted ? access('stick pass') : {};
      // The LUKS2 round replaces the plain home of the first: a rename over an existing file on FAT.
      const opts = { size: 40 * MiB, encrypt: encrypted, kdf: LOW_KDF, force: true, fsUuid: new Uint8Array(16).fill(0x5a), time: T, ...acc };
      const onDir = await createHome(dir, opts);
      const onImg = await createHome(img, opts);
      assert.equal(onImg.path, shown());
      assert.equal(onDir.path, join(dir, 'LiveOS', 'home.img'));
      assert.equal(onImg.replaced, encrypted);
      const { path: _p1, luksUuid: _u1, ...a } = onDir;
      const { path: _p2, luksUuid: _u2, ...b } = onImg;
      assert.deepEqual(b, a);
      if (!encrypted) assert.equal(await stickFileSha(img, '/LiveOS/home.img'), sha(readFileSync(join(dir, 'LiveOS', 'home.img'))), 'the same image, byte for byte');
      assert.deepEqual(await stickLiveos(img), [...(await stickLiveos(dir))], 'no temporary file or log left on the stick');
      fsckFat(img, part, { where: 'after create' });
      assert.deepEqual(infoFigures(await homeInfo(img, acc)), infoFigures(await homeInfo(dir, acc)));

      const impDir = await homeImport(dir, `${src}/.`, '/liveuser', acc);
      const impImg = await homeImport(img, `${src}/.`, '/liveuser', acc);
      assert.equal(impImg.image, shown());
      assert.deepEqual({ ...impImg, image: '' }, { ...impDir, image: '' });
      assert.equal(impImg.safety, 'journal');
      assert.deepEqual(await stickLiveos(img), await stickLiveos(dir), 'the undo log is gone after commit');
      fsckFat(img, part, { where: 'after import' });

      // Reading commands open the stick read-only: not a byte of it changes.
      const before = stickSha();
      for (const p of ['/', '/liveuser', '/liveuser/Documents', '/liveuser/notes.txt']) {
        const l = await homeList(img, p, acc);
        assert.equal(l.image, shown());
        assert.deepEqual(l.entries, (await homeList(dir, p, acc)).entries, `ls ${p}`);
      }
      for (const f of ['/liveuser/notes.txt', '/liveuser/Documents/big.bin', '/liveuser/Documents/deep/f7.dat']) {
        const got = await catAll(img, f, acc);
        assert.deepEqual(got, await catAll(dir, f, acc), `cat ${f}`);
        assert.deepEqual(got, readFileSync(join(src, f.slice('/liveuser/'.length))));
      }
      const outImg = join(tmp.dir, `export-img-${kind}`);
      const outDir = join(tmp.dir, `export-dir-${kind}`);
      const exImg = await homeExport(img, outImg, acc);
      const exDir = await homeExport(dir, outDir, acc);
      assert.deepEqual({ ...exImg, image: '', dest: '' }, { ...exDir, image: '', dest: '' });
      assert.deepEqual(describeTree(outImg), describeTree(outDir));
      assert.deepEqual(describeTree(join(outImg, 'liveuser')), describeTree(src));
      assert.deepEqual(infoFigures(await homeInfo(img, acc)), infoFigures(await homeInfo(dir, acc)));
      assert.equal(stickSha(), before, 'info, ls, cat and export wrote nothing');

      const fsck = await e2fsckHome(img, join(tmp.dir, 'fs.img'), acc);
      assert.equal(fsck.status, 0, fsck.out);
    });
  }

  test('resize on the image grows the file on FAT as on the directory; passwd re-keys it in place', async () => {
    const acc = access('stick pass');
    const rDir = await homeResize(dir, 72 * MiB, acc);
    const rImg = await homeResize(img, 72 * MiB, acc);
    assert.equal(rImg.image, shown());
    assert.deepEqual({ ...rImg, image: '' }, { ...rDir, image: '' });
    assert.equal(rImg.newSize, 72 * MiB);
    const root = (await import('../../src/ops/root.ts')).openMediumRoot;
    const r = await root(img);
    assert.equal((await r.fs.stat('/LiveOS/home.img')).size, 72 * MiB);
    await r.close();
    fsckFat(img, part, { where: 'after resize' });
    assert.deepEqual(infoFigures(await homeInfo(img, acc)), infoFigures(await homeInfo(dir, acc)));
    const out = join(tmp.dir, 'export-after-resize');
    await homeExport(img, out, acc);
    assert.deepEqual(describeTree(join(out, 'liveuser')), describeTree(src));
    const fsck = await e2fsckHome(img, join(tmp.dir, 'fs.img'), acc);
    assert.equal(fsck.status, 0, fsck.out);

    const pw = await homePasswd(img, enc('stick pass'), enc('new stick pass'), { kdf: LOW_KDF });
    assert.equal(pw.image, shown());
    await assert.rejects(homeList(img, '/', acc), { code: 'WRONG_PASSPHRASE' });
    assert.deepEqual((await homeList(img, '/liveuser', access('new stick pass'))).entries, (await homeList(dir, '/liveuser', acc)).entries);
    fsckFat(img, part, { where: 'after passwd' });
    await homePasswd(img, enc('new stick pass'), enc('stick pass'), { kdf: LOW_KDF });
  });

  test('refusals on the image: FAT\'s 4 GiB − 1 for create and resize, a partition it does not have; nothing written', async () => {
    const acc = access('stick pass');
    const before = stickSha();
    await assert.rejects(createHome(img, { size: 5 * 1024 * MiB, force: true }), (err: Error & { code?: string }) => err.code === 'USAGE' && /cannot live on FAT: a FAT32 file holds at most 4 GiB − 1 byte/.test(err.message));
    await assert.rejects(homeResize(img, 5 * 1024 * MiB, acc), (err: Error & { code?: string }) => err.code === 'USAGE' && /cannot live on FAT/.test(err.message));
    await assert.rejects(createHome(img, { size: 400 * MiB, force: true }), (err: Error & { code?: string }) => err.code === 'USAGE' && /does not fit: FAT allocates files in full/.test(err.message));
    await assert.rejects(homeList(img, '/', { ...acc, partition: 2 }), { code: 'USAGE', message: /has no partition 2/ });
    await assert.rejects(homeInfo(join(tmp.dir, 'dir', 'LiveOS', 'home.img'), { partition: 1 }), { code: 'USAGE', message: /--partition is for a stick image or a device/ });
    assert.equal(stickSha(), before, 'refused before anything was written');
    assert.deepEqual((await homeList(img, '/', { ...acc, partition: 1 })).entries.map((e) => e.name), ['liveuser', 'lost+found']);
  });

  test('the CLI takes the image: ls, cat, info, import and --partition; names as IMAGE:p1/LiveOS/home.img', () => {
    const pf = join(tmp.dir, 'pass');
    writeFileSync(pf, 'stick pass');
    const ls = runCli(['home', 'ls', img, '/liveuser', '--passphrase-file', pf, '--json']);
    assert.equal(ls.status, 0, ls.stderr);
    assert.equal(ls.json.image, shown());
    assert.deepEqual(ls.json.entries.map((e: { name: string }) => e.name), ['.config', 'Documents', 'empty', 'link-to-big', 'notes.txt']);
    const long = runCli(['home', 'ls', img, '/liveuser', '-l', '--partition', '1', '--passphrase-file', pf]);
    assert.equal(long.status, 0, long.stderr);
    assert.match(long.stdout, /^-rw-r--r-- +2 +1000 +1000 .* notes\.txt$/m);
    const cat = runCli(['home', 'cat', img, '/liveuser/notes.txt', '--passphrase-file', pf]);
    assert.equal(cat.stdout, 'hello home\n');
    const info = runCli(['home', 'info', img, '--json']);
    assert.equal(info.status, 0, info.stderr);
    assert.equal(info.json.path, shown());
    assert.equal(info.json.luks.cipher, 'aes-xts-plain64');
    const text = runCli(['home', 'info', img]);
    assert.match(text.stdout, new RegExp(`^${shown().replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: encrypted \\(LUKS2\\)`));
    const imp = runCli(['home', 'import', img, join(import.meta.dirname, 'helpers.ts'), '/liveuser', '--passphrase-file', pf, '--json']);
    assert.equal(imp.status, 0, imp.stderr);
    assert.equal(imp.json.files, 1);
    assert.equal(runCli(['home', 'cat', img, '/liveuser/helpers.ts', '--passphrase-file', pf]).stdout, readFileSync(join(import.meta.dirname, 'helpers.ts'), 'utf8'));
    fsckFat(img, part, { where: 'after the CLI import' });
    const bad = runCli(['home', 'ls', img, '--partition', '3', '--passphrase-file', pf, '--json']);
    assert.equal(bad.status, 64);
    assert.equal(bad.json.error.code, 'USAGE');
    const missing = runCli(['home', 'cat', img, '/liveuser/nope', '--passphrase-file', pf]);
    assert.notEqual(missing.status, 0);
  });

  test('a home image file named directly (also the one copied off the stick) is still the home image', async () => {
    const plain = join(tmp.dir, 'direct.img');
    await createHome(plain, { size: 16 * MiB });
    await homeImport(plain, join(import.meta.dirname, 'helpers.ts'), '/', {});
    const l = await homeList(plain, '/');
    assert.equal(l.image, plain);
    assert.deepEqual(l.entries.map((e) => e.name), ['helpers.ts', 'lost+found']);
    // The stick's own home.img copied out is a home image (ext4 inside LUKS, no LiveOS/).
    const copy = join(tmp.dir, 'copied-home.img');
    const { openMediumRoot } = await import('../../src/ops/root.ts');
    const root = await openMediumRoot(img);
    const disk = await root.fs.openFile('/LiveOS/home.img');
    const bytes = new Uint8Array(disk.size);
    await disk.read(bytes, 0);
    await disk.close();
    await root.close();
    writeFileSync(copy, bytes);
    assert.equal((await homeInfo(copy)).path, copy);
    assert.deepEqual((await homeList(copy, '/liveuser', access('stick pass'))).entries, (await homeList(img, '/liveuser', access('stick pass'))).entries);
  });
});

/** An exFAT stick image: an MBR with one exFAT partition (type 0x07) from 1 MiB holding an empty LiveOS/. */
async function exfatStick(img: string, sizeMiB: number): Promise<Partition> {
  const disk = await FileDisk.open(img, { create: { size: sizeMiB * MiB } });
  try {
    const sectors = (sizeMiB * MiB) / 512;
    const entry = { status: 0x80, startChs: [0xfe, 0xff, 0xff] as [number, number, number], type: 0x07, endChs: [0xfe, 0xff, 0xff] as [number, number, number], startLba: 2048, sectors: sectors - 2048 };
    await disk.write(encodeMbr({ bootCode: new Uint8Array(440), diskSignature: 0x0e8f_a7a7, reserved: 0, entries: [entry, EMPTY_ENTRY, EMPTY_ENTRY, EMPTY_ENTRY] }), 0);
    const p = (await readPartitionTable(disk)).partitions[0]!;
    const volume = partitionDisk(disk, p);
    await mkfsExfat(volume, { label: 'LIVE', serial: 0x2026_1202 });
    const fs = await ExfatFs.open(volume);
    await fs.mkdir('/LiveOS');
    await fs.close();
    return { startBytes: p.startBytes, sizeBytes: p.sizeBytes };
  } finally {
    await disk.close();
  }
}

describe('home on an exFAT stick image', { skip: missingTools('fsck.exfat') }, () => {
  const tmp = tempDir('livestick-home-exfat-');
  let img: string;
  let part: Partition;
  let src: string;
  const acc = access('exfat pass');
  const fsckExfat = (where: string): void => {
    const copy = join(tmp.dir, 'part.img');
    run('dd', [`if=${img}`, `of=${copy}`, 'bs=1M', `skip=${part.startBytes / MiB}`, `count=${part.sizeBytes / MiB}`, 'conv=sparse', 'status=none']);
    const r = run('fsck.exfat', ['-n', copy], { allowFail: true });
    assert.equal(r.status, 0, `${where}: fsck.exfat -n: ${r.stdout}${r.stderr}`);
  };

  before(async () => {
    img = join(tmp.dir, 'stick.img');
    part = await exfatStick(img, 96);
    src = join(tmp.dir, 'src');
    makeTree(src, { files: 4, bigBytes: 300_000 });
  });
  after(() => tmp.cleanup());

  test('create (LUKS2), import, ls, cat, export on the exFAT partition; fsck.exfat clean; resize grows it or is refused leaving it as it was', async () => {
    const c = await createHome(img, { size: 32 * MiB, encrypt: true, kdf: LOW_KDF, ...acc });
    assert.equal(c.path, `${img}:p1/LiveOS/home.img`);
    fsckExfat('after create');
    const imp = await homeImport(img, `${src}/.`, '/liveuser', acc);
    assert.equal(imp.safety, 'journal');
    fsckExfat('after import');
    assert.deepEqual(await stickLiveos(img), ['home.img']);
    const before = sha(readFileSync(img));
    assert.deepEqual((await homeList(img, '/liveuser', acc)).entries.map((e) => e.name), ['.config', 'Documents', 'empty', 'link-to-big', 'notes.txt']);
    assert.deepEqual(await catAll(img, '/liveuser/Documents/big.bin', acc), readFileSync(join(src, 'Documents', 'big.bin')));
    const out = join(tmp.dir, 'out');
    await homeExport(img, out, acc);
    assert.deepEqual(describeTree(join(out, 'liveuser')), describeTree(src));
    assert.equal(sha(readFileSync(img)), before, 'reading commands wrote nothing');

    const info = await homeInfo(img, acc);
    const grown = await homeResize(img, 48 * MiB, acc).catch((err: unknown) => err);
    if (grown instanceof LivestickError) {
      // exFAT files that change size in place are not everywhere yet: then nothing changed at all.
      assert.equal(grown.code, 'UNSUPPORTED', grown.message);
      assert.deepEqual(await homeInfo(img, acc), info);
      assert.deepEqual(await stickLiveos(img), ['home.img'], 'the undo log is gone');
    } else {
      assert.ok(!(grown instanceof Error), String(grown));
      assert.equal((await homeInfo(img, acc)).fileSize, 48 * MiB);
    }
    fsckExfat('after resize');
    const out2 = join(tmp.dir, 'out2');
    await homeExport(img, out2, acc);
    assert.deepEqual(describeTree(join(out2, 'liveuser')), describeTree(src));
    const fsck = await e2fsckHome(img, join(tmp.dir, 'fs.img'), acc);
    assert.equal(fsck.status, 0, fsck.out);
  });
});
