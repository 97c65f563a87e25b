/**
 * Ext4WritableFileSystem through the WritableFileSystem interface, with e2fsprogs as the oracle:
 * after every operation e2fsck -fn finds nothing and debugfs (rdump) reads exactly the model, on
 * mke2fs images with and without metadata_csum/64bit/flex_bg, 1 KiB and 4 KiB blocks, with and
 * without a journal, and on one of livestick's own mkfs. Also: a SquashFS written by writeSquashfs
 * into a file on the image reads back with unsquashfs after `debugfs dump`, the registry's write
 * option, replay of a journal that needs recovery at open, and the refusals.
 */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, lstatSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { FileDisk } from '../../src/io/disk.ts';
import { SimulatedCrash, withFaultPlan } from '../../src/io/faults.ts';
import { openFileSystem, isWritable } from '../../src/fs/registry.ts';
import { Ext4WritableFileSystem } from '../../src/fs/ext4/writable.ts';
import { Ext4 } from '../../src/fs/ext4/fs.ts';
import { mkfs } from '../../src/fs/ext4/mkfs.ts';
import { parseUuid } from '../../src/fs/ext4/superblock.ts';
import { writeSquashfs } from '../../src/fs/squashfs/writer.ts';
import { dirNode, fileNode } from '../../src/fs/squashfs/tree.ts';
import { AlreadyExistsError, NotFoundError, UnsupportedFeatureError, UsageError } from '../../src/errors.ts';
import type { WritableFileSystem } from '../../src/fs/filesystem.ts';
import { missingTools, run } from '../helpers/tools.ts';
import { tempDir } from '../helpers/tmp.ts';
import { randomBytes } from './fixtures.ts';
import { type Model, assertClean, assertTreeMatches, debugfsDump, debugfsExtents, debugfsTree, dumpe2fsFreeBlocks, readerTree } from './writable-helpers.ts';

const skip = missingTools('e2fsck', 'debugfs', 'mke2fs', 'dumpe2fs', 'unsquashfs');
const MiB = 1 << 20;
const isRoot = process.getuid?.() === 0;

interface Variant {
  name: string;
  /** mke2fs arguments, or 'livestick' for our own mkfs. */
  args: string[] | 'livestick';
  journaled: boolean;
}

const VARIANTS: Variant[] = [
  { name: 'ext4 4 KiB (mke2fs defaults: metadata_csum, 64bit, flex_bg, journal)', args: ['-t', 'ext4', '-b', '4096'], journaled: true },
  { name: 'ext4 1 KiB, 32-bit, no flex_bg, gdt_csum instead of metadata_csum', args: ['-t', 'ext4', '-b', '1024', '-O', '^flex_bg,^metadata_csum,^64bit,uninit_bg'], journaled: true },
  { name: 'ext4 without a journal', args: ['-t', 'ext4', '-b', '4096', '-O', '^has_journal'], journaled: false },
  { name: "livestick's mkfs", args: 'livestick', journaled: true },
];

function sourceTree(dir: string): void {
  mkdirSync(join(dir, 'dir/sub'), { recursive: true });
  writeFileSync(join(dir, 'large.bin'), randomBytes(3 * MiB + 77, 11));
  writeFileSync(join(dir, 'dir/sub/leaf'), 'leaf\n');
  writeFileSync(join(dir, 'dir/one'), 'one\n');
  mkdirSync(join(dir, 'empty-dir'));
  for (let i = 0; i < 300; i++) writeFileSync(join(dir, 'dir', `many-${String(i).padStart(4, '0')}-${'y'.repeat(i % 50)}`), `${i}\n`);
  // A sparse file: data, a 2 MiB hole, data, a hole to the end.
  writeFileSync(join(dir, 'sparse.bin'), new Uint8Array(0));
  run('sh', ['-c', `printf 'head' | dd of=${join(dir, 'sparse.bin')} bs=1 conv=notrunc status=none && printf 'tail' | dd of=${join(dir, 'sparse.bin')} bs=1 seek=2097152 conv=notrunc status=none && truncate -s 5000000 ${join(dir, 'sparse.bin')}`]);
}

async function makeImage(image: string, v: Variant, src: string): Promise<void> {
  if (v.args === 'livestick') {
    writeFileSync(image, new Uint8Array(0));
    run('truncate', ['-s', `${64 * MiB}`, image]);
    const disk = await FileDisk.open(image);
    await mkfs(disk, { label: 'lsk', uuid: parseUuid('0b7a6e2c-4d3f-4a1b-9c8d-7e6f5a4b3c2d'), hashSeed: parseUuid('11111111-2222-4333-8444-555555555555'), time: 1_700_000_000 });
    await disk.close();
    // Our mkfs makes an empty filesystem: the source goes in through the interface itself.
    const d = await FileDisk.open(image);
    const fs = await Ext4WritableFileSystem.open(d);
    await copyHostTree(fs, src, '');
    await fs.close();
    await d.close();
    return;
  }
  run('mke2fs', ['-q', '-F', '-L', 'lsk', '-E', 'lazy_itable_init=1', ...v.args, '-d', src, image, '64M']);
}

async function copyHostTree(fs: WritableFileSystem, host: string, at: string): Promise<void> {
  for (const name of readdirSync(host).sort()) {
    const h = join(host, name);
    const p = `${at}/${name}`;
    const st = lstatSync(h);
    if (st.isDirectory()) {
      await fs.mkdir(p, { mode: st.mode & 0o7777 });
      await copyHostTree(fs, h, p);
    } else {
      const data = readFileSync(h);
      await fs.writeFile(p, data, { mode: st.mode & 0o7777 });
    }
  }
}

function hostModel(src: string): Model {
  const m: Model = new Map();
  const walk = (host: string, at: string) => {
    for (const name of readdirSync(host).sort()) {
      const h = join(host, name);
      const p = `${at}/${name}`;
      const st = lstatSync(h);
      if (st.isDirectory()) {
        m.set(p, { kind: 'dir' });
        walk(h, p);
      } else m.set(p, { kind: 'file', data: new Uint8Array(readFileSync(h)) });
    }
  };
  walk(src, '');
  return m;
}

function file(m: Model, p: string): Uint8Array {
  const n = m.get(p);
  assert.ok(n && n.kind === 'file', `${p} is a file in the model`);
  return n.data;
}

function patch(data: Uint8Array, at: number, bytes: Uint8Array): Uint8Array {
  const size = Math.max(data.byteLength, at + bytes.byteLength);
  const out = new Uint8Array(size);
  out.set(data);
  out.set(bytes, at);
  return out;
}

function sized(data: Uint8Array, size: number): Uint8Array {
  const out = new Uint8Array(size);
  out.set(data.subarray(0, Math.min(size, data.byteLength)));
  return out;
}

describe('Ext4WritableFileSystem against e2fsck and debugfs', { skip }, () => {
  const tmp = tempDir('livestick-ext4w-');
  const src = join(tmp.dir, 'src');
  before(() => sourceTree(src));
  after(() => tmp.cleanup());

  for (const v of VARIANTS) {
    test(v.name, { timeout: 300_000 }, async () => {
      const image = join(tmp.dir, `${VARIANTS.indexOf(v)}.img`);
      await makeImage(image, v, src);
      const scratch = join(tmp.dir, 'rdump');
      const model: Model = hostModel(src);
      const check = async (what: string) => {
        assertClean(image, what);
        assertTreeMatches(debugfsTree(image, scratch), model, `${v.name}: debugfs after ${what}`);
      };
      await check('making the image');

      const disk = await FileDisk.open(image);
      const opened = await openFileSystem(disk, ['ext4'], { write: true });
      assert.ok(opened && isWritable(opened.fs), 'the registry opens ext4 for writing');
      const fs = opened.fs as Ext4WritableFileSystem;
      assert.equal(fs.renameIsAtomic, v.journaled);
      assert.equal(fs.journaled, v.journaled);
      assert.equal(fs.type, 'ext4');

      await fs.mkdir('/LiveOS', { mode: 0o750 });
      model.set('/LiveOS', { kind: 'dir', mode: 0o750 });
      await check('mkdir');

      const small = new TextEncoder().encode('small file\n');
      await fs.writeFile('/LiveOS/small.txt', small, { mode: 0o600 });
      model.set('/LiveOS/small.txt', { kind: 'file', data: small, mode: 0o600 });
      await check('writeFile');

      // createFile: reads zeros, partial writes keep zeros around them, a shrink then a growth reads zeros past the cut.
      const zsize = 5_000_123;
      const zf = await fs.createFile('/LiveOS/zeros.bin', { size: zsize, mode: 0o640 });
      assert.equal(zf.size, zsize);
      const probe = new Uint8Array(zsize);
      probe.fill(0xee);
      await zf.read(probe, 0);
      assert.ok(probe.every((b) => b === 0), 'a new file reads as zeros');
      let zdata: Uint8Array = new Uint8Array(zsize);
      for (const [at, n, seed] of [[1, 10, 1], [4095, 2, 2], [10_000, 100_000, 3], [zsize - 7, 7, 4], [2 * MiB, MiB, 5]] as const) {
        const bytes = randomBytes(n, seed);
        await zf.write(bytes, at);
        zdata = patch(zdata, at, bytes);
      }
      const back = new Uint8Array(zsize);
      await zf.read(back, 0);
      assert.ok(Buffer.from(back).equals(Buffer.from(zdata)), 'the open file reads what was written, zeros elsewhere');
      await zf.flush();
      model.set('/LiveOS/zeros.bin', { kind: 'file', data: zdata, mode: 0o640 });
      await check('createFile + partial writes + flush');

      await zf.resize(3_000_001);
      zdata = sized(zdata, 3_000_001);
      await zf.resize(7_500_000);
      zdata = sized(zdata, 7_500_000);
      const tailProbe = new Uint8Array(100);
      await zf.read(tailProbe, 3_000_001);
      assert.ok(tailProbe.every((b) => b === 0), 'bytes past a shrink read as zeros after growing again');
      await zf.write(randomBytes(5000, 6), 7_495_000);
      zdata = patch(zdata, 7_495_000, randomBytes(5000, 6));
      assert.equal((await fs.stat('/LiveOS/zeros.bin')).size, 7_500_000, 'stat sees the open file size');
      await zf.flush();
      model.set('/LiveOS/zeros.bin', { kind: 'file', data: zdata, mode: 0o640 });
      await check('shrink, grow, write, flush');
      await zf.close();
      await check('close');

      // Streaming growth in small steps (as the SquashFS writer grows its output), then a shrink at the end.
      const sf = await fs.createFile('/LiveOS/stream.bin', { size: 0, uninitialized: true });
      const piece = randomBytes(MiB + 3, 7);
      let sdata: Uint8Array = new Uint8Array(0);
      for (let i = 0; i < 12; i++) {
        const at = sf.size;
        await sf.resize(at + piece.byteLength);
        await sf.write(piece, at);
        sdata = patch(sdata, at, piece);
      }
      await sf.resize(sf.size - 1000);
      sdata = sized(sdata, sdata.byteLength - 1000);
      await sf.close();
      model.set('/LiveOS/stream.bin', { kind: 'file', data: sdata });
      await check('streamed growth + close');
      // Contiguous except where group metadata (1 KiB blocks, no flex_bg: every 8 MiB) is in the way.
      const ext = debugfsExtents(image, '/LiveOS/stream.bin');
      const spans = v.args !== 'livestick' && v.args.includes('1024') ? Math.ceil(sdata.byteLength / (8 * MiB)) + 2 : 2;
      assert.ok(ext.leaves <= spans, `streamed file is contiguous: ${ext.text}`);

      // In place: an existing (mke2fs-written) file, and a sparse one with writes into its holes.
      const lf = await fs.openFileForWriting('/large.bin');
      const patchBytes = randomBytes(300_000, 8);
      await lf.write(patchBytes, 1_000_000);
      let ldata = patch(file(model, '/large.bin'), 1_000_000, patchBytes);
      await lf.resize(ldata.byteLength + 2 * MiB);
      ldata = sized(ldata, ldata.byteLength + 2 * MiB);
      await lf.write(patchBytes, ldata.byteLength - 300_000);
      ldata = patch(ldata, ldata.byteLength - 300_000, patchBytes);
      await lf.close();
      model.set('/large.bin', { kind: 'file', data: ldata });
      await check('writing an existing file in place and growing it');

      const pf = await fs.openFileForWriting('/sparse.bin');
      let pdata = file(model, '/sparse.bin');
      for (const [at, n, seed] of [[1 * MiB + 5, 9000, 9], [4_900_000, 100_000, 10], [3, 1, 11]] as const) {
        const bytes = randomBytes(n, seed);
        await pf.write(bytes, at);
        pdata = patch(pdata, at, bytes);
      }
      const pback = new Uint8Array(pdata.byteLength);
      await pf.read(pback, 0);
      assert.ok(Buffer.from(pback).equals(Buffer.from(pdata)), 'holes read as zeros, written parts as written');
      await pf.close();
      model.set('/sparse.bin', { kind: 'file', data: pdata });
      await check('writing into the holes of a sparse file');

      // A SquashFS image into a file on ext4, then switched in by rename over the old one.
      await fs.writeFile('/LiveOS/squashfs.img', new TextEncoder().encode('the old image'));
      model.set('/LiveOS/squashfs.img', { kind: 'file', data: new TextEncoder().encode('the old image') });
      const tree = dirNode({}, {
        LiveOS: dirNode({}, { 'rootfs.img': fileNode(randomBytes(6 * MiB, 12)), 'zero.img': fileNode(new Uint8Array(2 * MiB)) }),
        etc: dirNode({}, { hostname: fileNode('live\n') }),
      });
      const out = await fs.createFile('/LiveOS/squashfs.img.new', { size: 0, uninitialized: true });
      const result = await writeSquashfs(tree, out, { compressor: 'gzip', threads: 1, mtime: 1_700_000_000 });
      await out.close();
      assert.equal((await fs.stat('/LiveOS/squashfs.img.new')).size, result.size);
      await fs.rename('/LiveOS/squashfs.img.new', '/LiveOS/squashfs.img');
      const sq = debugfsDump(image, '/LiveOS/squashfs.img', join(tmp.dir, 'sq.img'));
      model.set('/LiveOS/squashfs.img', { kind: 'file', data: sq });
      await check('writeSquashfs + rename over the old image');
      assert.ok(debugfsExtents(image, '/LiveOS/squashfs.img').leaves <= 2, 'the image is contiguous');
      writeFileSync(join(tmp.dir, 'sq.img'), sq);
      const extracted = join(tmp.dir, 'sq-out');
      run('unsquashfs', ['-q', '-n', '-d', extracted, join(tmp.dir, 'sq.img')]);
      assert.ok(readFileSync(join(extracted, 'LiveOS/rootfs.img')).equals(Buffer.from(randomBytes(6 * MiB, 12))), 'unsquashfs reads the root image back');
      assert.equal(readFileSync(join(extracted, 'etc/hostname'), 'utf8'), 'live\n');
      run('rm', ['-rf', extracted, join(tmp.dir, 'sq.img')]);

      // Links, modes, owners.
      await fs.link!('/LiveOS/small.txt', '/hard');
      model.set('/hard', { kind: 'file', data: small, mode: 0o600 });
      await fs.setMode!('/hard', 0o751);
      await fs.setOwner!('/LiveOS/small.txt', 1234, 5678);
      model.set('/hard', { kind: 'file', data: small, mode: 0o751, ...(isRoot ? { uid: 1234, gid: 5678 } : {}) });
      model.set('/LiveOS/small.txt', { kind: 'file', data: small, mode: 0o751, ...(isRoot ? { uid: 1234, gid: 5678 } : {}) });
      await check('link, setMode, setOwner');
      assert.equal((await fs.stat('/hard')).nlink, 2);
      await fs.rename('/hard', '/LiveOS/small.txt');
      if (v.journaled) {
        assert.equal((await fs.stat('/hard')).nlink, 2, 'renaming one hard link onto the other changes nothing (POSIX)');
        await fs.unlink('/hard');
      } else {
        // Without a journal two names of one inode are what a cut rename leaves: repeating it finishes.
        await assert.rejects(fs.stat('/hard'), NotFoundError);
      }
      model.delete('/hard');
      assert.equal((await fs.stat('/LiveOS/small.txt')).nlink, 1);
      await check('rename onto another name of the same file');

      // Renames: a file to a new name, a file over a file in another directory, a directory across
      // directories (".." and link counts), a directory over an empty directory.
      await fs.rename('/LiveOS/zeros.bin', '/LiveOS/zeros.moved');
      model.set('/LiveOS/zeros.moved', model.get('/LiveOS/zeros.bin')!);
      model.delete('/LiveOS/zeros.bin');
      await fs.rename('/dir/one', '/LiveOS/stream.bin');
      model.set('/LiveOS/stream.bin', model.get('/dir/one')!);
      model.delete('/dir/one');
      await check('file renames');
      await fs.rename('/dir', '/LiveOS/dir');
      for (const [p, n] of [...model]) {
        if (p === '/dir' || p.startsWith('/dir/')) {
          model.delete(p);
          model.set(`/LiveOS${p}`, n);
        }
      }
      await check('a directory moved into another');
      await fs.rename('/LiveOS/dir/sub', '/empty-dir');
      model.set('/empty-dir', model.get('/LiveOS/dir/sub')!);
      model.set('/empty-dir/leaf', model.get('/LiveOS/dir/sub/leaf')!);
      model.delete('/LiveOS/dir/sub');
      model.delete('/LiveOS/dir/sub/leaf');
      await check('a directory over an empty directory');

      // Refusals leave everything as it was.
      await assert.rejects(fs.rename('/LiveOS', '/LiveOS/dir/inside'), UsageError);
      await assert.rejects(fs.rename('/LiveOS/small.txt', '/LiveOS/dir'), UsageError);
      await assert.rejects(fs.rename('/empty-dir', '/LiveOS/small.txt'), UsageError);
      await assert.rejects(fs.rename('/LiveOS/dir', '/empty-dir'), AlreadyExistsError);
      await assert.rejects(fs.rmdir('/LiveOS/dir'), AlreadyExistsError);
      await assert.rejects(fs.rmdir('/LiveOS/small.txt'), UsageError);
      await assert.rejects(fs.unlink('/LiveOS'), UsageError);
      await assert.rejects(fs.unlink('/nothing'), NotFoundError);
      await assert.rejects(fs.createFile('/LiveOS/small.txt', { size: 1 }), AlreadyExistsError);
      await assert.rejects(fs.openFileForWriting('/LiveOS'), UsageError);
      const busy = await fs.openFileForWriting('/LiveOS/squashfs.img');
      await assert.rejects(fs.unlink('/LiveOS/squashfs.img'), UsageError);
      await assert.rejects(fs.rename('/LiveOS/stream.bin', '/LiveOS/squashfs.img'), UsageError);
      await busy.close();
      await assert.rejects(fs.createFile('/LiveOS/huge', { size: 1 << 30 }), (e: unknown) => (e as { code?: string }).code === 'NO_SPACE');
      await check('refused operations');

      await fs.unlink('/LiveOS/small.txt');
      model.delete('/LiveOS/small.txt');
      await fs.unlink('/LiveOS/dir/many-0007-yyyyyyy');
      model.delete('/LiveOS/dir/many-0007-yyyyyyy');
      await fs.unlink('/empty-dir/leaf');
      model.delete('/empty-dir/leaf');
      await fs.rmdir('/empty-dir');
      model.delete('/empty-dir');
      await check('unlink and rmdir');

      // removeTree: a tree of more names than one transaction takes (299 files, nested dirs, a hard
      // link), an open file refused first, a missing path a no-op.
      await fs.mkdir('/LiveOS/dir/a');
      await fs.mkdir('/LiveOS/dir/a/b');
      await fs.writeFile('/LiveOS/dir/a/b/deep', new TextEncoder().encode('deep\n'));
      await fs.link('/LiveOS/dir/many-0003-yyy', '/LiveOS/dir/a/again');
      const open = await fs.openFileForWriting('/LiveOS/dir/a/b/deep');
      await assert.rejects(fs.removeTree('/LiveOS/dir'), UsageError);
      await open.close();
      await fs.removeTree('/LiveOS/dir');
      await fs.removeTree('/LiveOS/nothing');
      for (const p of [...model.keys()]) if (p === '/LiveOS/dir' || p.startsWith('/LiveOS/dir/')) model.delete(p);
      await check('removeTree');

      const space = await fs.space();
      await fs.flush();
      await fs.close();
      await disk.close();
      await check('close');
      const roDisk = await FileDisk.open(image, { readOnly: true });
      const bs = (await Ext4.open(roDisk)).blockSize;
      await roDisk.close();
      assert.equal(space.freeBytes, dumpe2fsFreeBlocks(image) * bs, 'space() agrees with the superblock');
      assertTreeMatches(await readerTree(image), model, `${v.name}: our reader`);
    });
  }

  test('open for writing replays a journal that needs recovery; without write the registry stays read-only', async () => {
    const image = join(tmp.dir, 'replay.img');
    run('mke2fs', ['-q', '-F', '-t', 'ext4', image, '32M']);
    const disk = await FileDisk.open(image);
    let crash = false;
    const fs = await Ext4WritableFileSystem.open(disk, { onCommitStep: (step) => void (crash ||= step === 'started') });
    const r = await withFaultPlan(() => (crash ? 'crash' : undefined), () => fs.mkdir('/committed'));
    assert.ok(r.error instanceof SimulatedCrash, 'the process "died" during the checkpoint');
    await assert.rejects(fs.stat('/'), SimulatedCrash, 'a filesystem that could not recover refuses every later call');
    await disk.close();
    const ro = await FileDisk.open(image, { readOnly: true });
    assert.equal((await (await Ext4.open(ro)).state()).needsRecovery, true, 'the journal holds the mkdir');
    const opened = await openFileSystem(ro, ['ext4']);
    assert.ok(opened && opened.fs.readOnly && !isWritable(opened.fs));
    await ro.close();
    const copy = join(tmp.dir, 'replay-e2fsck.img');
    copyFileSync(image, copy);
    const again = await FileDisk.open(image);
    const fs2 = await Ext4WritableFileSystem.open(again);
    assert.equal((await fs2.stat('/committed')).kind, 'dir', 'replayed at open');
    await fs2.close();
    await again.close();
    assertClean(image, 'replay at open');
    run('e2fsck', ['-fy', copy], { allowFail: true });
    assert.deepEqual([...(await readerTree(copy)).keys()], [...(await readerTree(image)).keys()], 'e2fsck replays to the same tree');
  });

  test('refuses what it cannot keep consistent', async () => {
    const ext3 = join(tmp.dir, 'ext3.img');
    run('mke2fs', ['-q', '-F', '-t', 'ext3', ext3, '16M']);
    const d3 = await FileDisk.open(ext3);
    await assert.rejects(Ext4WritableFileSystem.open(d3), UnsupportedFeatureError);
    await d3.close();
    const orphans = join(tmp.dir, 'orphans.img');
    run('mke2fs', ['-q', '-F', '-t', 'ext4', orphans, '16M']);
    run('debugfs', ['-w', '-R', 'ssv last_orphan 12', orphans]);
    const d4 = await FileDisk.open(orphans);
    await assert.rejects(Ext4WritableFileSystem.open(d4), /orphan/);
    await d4.close();
  });
});
