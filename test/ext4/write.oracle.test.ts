/**
 * The writer: after creating directories, streamed files, symlinks, hard links, device nodes,
 * attribute changes, appends and deletes, e2fsck -fn finds nothing, and debugfs, the kernel (loop
 * mount) and our reader all read back exactly the model of what was written.
 */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { lstatSync, mkdirSync, readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { FileDisk, MemoryDisk, type Disk } from '../../src/io/disk.ts';
import { Ext4 } from '../../src/fs/ext4/fs.ts';
import { Ext4Writer } from '../../src/fs/ext4/writer.ts';
import { mkfs } from '../../src/fs/ext4/mkfs.ts';
import { parseUuid } from '../../src/fs/ext4/superblock.ts';
import { buildBlockMap } from '../../src/fs/ext4/blockmap.ts';
import { missingTools, run } from '../helpers/tools.ts';
import { tempDir } from '../helpers/tmp.ts';
import { VARIANTS, isRoot, makeImage, makeTree, randomBytes } from './fixtures.ts';

const skip = missingTools('e2fsck', 'debugfs', 'mke2fs');
const FIXED = { label: 'lsk-w', uuid: parseUuid('3e0c9f4a-5b1d-4c2e-8f7a-6d5c4b3a2918'), hashSeed: parseUuid('99999999-8888-4777-8666-555555555555'), time: 1_700_000_000 };
const NOW = () => ({ sec: 1_700_000_100, nsec: 250 });
const enc = (s: string) => new TextEncoder().encode(s);

type Model = Map<string, { kind: 'dir' } | { kind: 'file'; data: Uint8Array; mode?: number } | { kind: 'symlink'; target: string } | { kind: 'chardev'; major: number; minor: number }>;

async function* pieces(data: Uint8Array, size: number): AsyncGenerator<Uint8Array> {
  for (let at = 0; at < data.byteLength; at += size) yield data.slice(at, at + size);
}

/** A fixed sequence of writer operations; returns the model of the resulting tree under /t. */
async function scenario(disk: Disk): Promise<Model> {
  const w = await Ext4Writer.open(await Ext4.open(disk), { now: NOW });
  const m: Model = new Map();
  await w.mkdir('/t');
  m.set('/t', { kind: 'dir' });
  await w.mkdir('/t/home', { mode: 0o700, uid: 1000, gid: 1000 });
  m.set('/t/home', { kind: 'dir' });
  const big = randomBytes(9_000_000, 42);
  await w.writeFile('/t/home/big.bin', pieces(big, 100_003));
  m.set('/t/home/big.bin', { kind: 'file', data: big });
  await w.writeFile('/t/empty', new Uint8Array(0));
  m.set('/t/empty', { kind: 'file', data: new Uint8Array(0) });
  await w.writeFile('/t/hello.txt', enc('hello\n'), { mode: 0o640, uid: 5, gid: 6, mtime: { sec: 1_234_567_890, nsec: 123 } });
  await w.appendFile('/t/hello.txt', enc('world\n'));
  m.set('/t/hello.txt', { kind: 'file', data: enc('hello\nworld\n'), mode: 0o640 });
  const grown = randomBytes(10_000, 7);
  await w.writeFile('/t/grow.bin', grown.subarray(0, 5000));
  await w.appendFile('/t/grow.bin', grown.subarray(5000));
  m.set('/t/grow.bin', { kind: 'file', data: grown });
  await w.symlink('/t/fast', 'hello.txt');
  m.set('/t/fast', { kind: 'symlink', target: 'hello.txt' });
  const longTarget = '../'.repeat(40) + 'target';
  await w.symlink('/t/slow', longTarget);
  m.set('/t/slow', { kind: 'symlink', target: longTarget });
  await w.link('/t/hello.txt', '/t/home/hard');
  m.set('/t/home/hard', { kind: 'file', data: enc('hello\nworld\n'), mode: 0o640 });
  await w.mknod('/t/whiteout', 'chardev', { major: 0, minor: 0 });
  m.set('/t/whiteout', { kind: 'chardev', major: 0, minor: 0 });
  await w.mknod('/t/dev', 'chardev', { major: 300, minor: 70000 });
  m.set('/t/dev', { kind: 'chardev', major: 300, minor: 70000 });
  await w.mkdir('/t/many');
  m.set('/t/many', { kind: 'dir' });
  for (let i = 0; i < 250; i++) {
    const data = enc(`file number ${i}\n`.repeat(i % 5));
    await w.writeFile(`/t/many/name-${String(i).padStart(4, '0')}-${'x'.repeat(i % 40)}`, data);
    m.set(`/t/many/name-${String(i).padStart(4, '0')}-${'x'.repeat(i % 40)}`, { kind: 'file', data });
  }
  for (let i = 0; i < 250; i += 3) {
    const p = `/t/many/name-${String(i).padStart(4, '0')}-${'x'.repeat(i % 40)}`;
    await w.unlink(p);
    m.delete(p);
  }
  await w.writeFile('/t/gone', randomBytes(200_000, 3));
  await w.unlink('/t/gone');
  await w.mkdir('/t/gone-dir');
  await w.unlink('/t/gone-dir');
  await w.writeFile('/t/replaced', enc('one'));
  await w.writeFile('/t/replaced', enc('two, longer'));
  m.set('/t/replaced', { kind: 'file', data: enc('two, longer') });
  await w.setAttrs('/t/home/big.bin', { mode: 0o600, uid: 1000, gid: 1000 });
  m.set('/t/home/big.bin', { kind: 'file', data: big, mode: 0o600 });
  await w.close();
  return m;
}

/** Reads a host directory tree into a model (for the kernel-mounted result). */
function hostModel(root: string, rel = '/t', out: Model = new Map()): Model {
  out.set(rel, { kind: 'dir' });
  for (const name of readdirSync(join(root, rel))) {
    const p = `${rel}/${name}`;
    const st = lstatSync(join(root, p));
    if (st.isDirectory()) hostModel(root, p, out);
    else if (st.isSymbolicLink()) out.set(p, { kind: 'symlink', target: readlinkSync(join(root, p)) });
    else if (st.isCharacterDevice()) out.set(p, { kind: 'chardev', major: Math.floor(st.rdev / 256) & 0xfff, minor: (st.rdev & 0xff) | ((st.rdev >>> 12) & 0xfff00) });
    else out.set(p, { kind: 'file', data: new Uint8Array(readFileSync(join(root, p))), mode: st.mode & 0o7777 });
  }
  return out;
}

async function ourModel(fs: Ext4, path = '/t', out: Model = new Map()): Promise<Model> {
  out.set(path, { kind: 'dir' });
  for (const e of await fs.readdir(path)) {
    const p = `${path}/${e.name}`;
    const st = await fs.statInode(e.ino);
    if (st.kind === 'dir') await ourModel(fs, p, out);
    else if (st.kind === 'symlink') out.set(p, { kind: 'symlink', target: await fs.readlink(p) });
    else if (st.kind === 'chardev') out.set(p, { kind: 'chardev', ...st.rdev! });
    else out.set(p, { kind: 'file', data: await fs.readFile(p), mode: st.mode & 0o7777 });
  }
  return out;
}

function assertModel(actual: Model, expected: Model, what: string): void {
  assert.deepEqual([...actual.keys()].sort(), [...expected.keys()].sort(), `${what}: names`);
  for (const [p, e] of expected) {
    const a = actual.get(p)!;
    assert.equal(a.kind, e.kind, `${what}: kind of ${p}`);
    if (e.kind === 'file' && a.kind === 'file') {
      assert.ok(Buffer.from(a.data).equals(Buffer.from(e.data)), `${what}: contents of ${p}`);
      if (e.mode !== undefined) assert.equal(a.mode, e.mode, `${what}: mode of ${p}`);
    } else assert.deepEqual(a, e, `${what}: ${p}`);
  }
}

function fsckClean(image: string): void {
  const r = run('e2fsck', ['-fn', image], { allowFail: true });
  assert.equal(r.status, 0, `e2fsck -fn:\n${r.stdout}${r.stderr}`);
}

function canLoopMount(): boolean {
  return isRoot && run('sh', ['-c', 'grep -qw ext4 /proc/filesystems && test -e /dev/loop-control'], { allowFail: true }).status === 0;
}

describe('ext4 writer', { skip }, () => {
  let tmp: ReturnType<typeof tempDir>;
  before(() => {
    tmp = tempDir('lsk-ext4-w-');
  });
  after(() => tmp.cleanup());

  test('on our own mkfs: e2fsck clean; debugfs, the kernel and the reader read back the model', async () => {
    const image = join(tmp.dir, 'own.img');
    const disk = await FileDisk.open(image, { create: { size: 128 * 2 ** 20 } });
    let model: Model;
    try {
      await mkfs(disk, { ...FIXED, zeroed: true });
      model = await scenario(disk);
    } finally {
      await disk.close();
    }
    fsckClean(image);
    const ro = await FileDisk.open(image, { readOnly: true });
    try {
      const fs = await Ext4.open(ro, { strict: true });
      assertModel(await ourModel(fs), model, 'reader');
      const st = await fs.stat('/t/hello.txt');
      assert.deepEqual([st.uid, st.gid, st.nlink, st.mtime.sec, st.mtime.nsec], [5, 6, 2, 1_700_000_100, 250]);
      const map = await buildBlockMap(fs);
      assert.equal(map.freeCount(), fs.sb.freeBlocksCount);
      assert.equal(map.claimedButFree, 0);
      assert.equal(map.multiplyClaimed, 0);
    } finally {
      await ro.close();
    }
    // debugfs reads the same bytes.
    const out = join(tmp.dir, 'big.out');
    run('debugfs', ['-R', `dump /t/home/big.bin ${out}`, image]);
    assert.ok(Buffer.from(readFileSync(out)).equals(Buffer.from((model.get('/t/home/big.bin') as { data: Uint8Array }).data)));
    assert.match(run('debugfs', ['-R', 'stat /t/dev', image]).stdout, /Device major\/minor number: 300:70000/);
    if (canLoopMount()) {
      const mnt = join(tmp.dir, 'mnt');
      mkdirSync(mnt);
      run('mount', ['-o', 'loop,ro', '-t', 'ext4', image, mnt]);
      try {
        assertModel(hostModel(mnt), model, 'kernel');
      } finally {
        run('umount', [mnt]);
      }
    }
  });

  test('on a mke2fs image with htree directories (e2fsck -D): edits keep it clean', async () => {
    const src = join(tmp.dir, 'src');
    makeTree(src, { manyFiles: 600 });
    const image = join(tmp.dir, 'mke2fs.img');
    run('mke2fs', ['-q', '-F', '-t', 'ext4', '-b', '1024', '-d', src, image, '64M']);
    run('e2fsck', ['-fyD', image], { allowFail: true });
    assert.match(run('debugfs', ['-R', 'stat /big-dir', image]).stdout, /Flags: 0x81000/, 'big-dir is an htree directory');
    const disk = await FileDisk.open(image);
    try {
      const w = await Ext4Writer.open(await Ext4.open(disk), { now: NOW });
      await w.writeFile('/big-dir/added', enc('added\n'));
      await w.unlink('/big-dir/file-with-a-longish-name-00100');
      await w.unlink('/large.bin');
      await w.writeFile('/small.txt', enc('replaced\n'));
      await w.mkdir('/dir/sub/new');
      await w.close();
    } finally {
      await disk.close();
    }
    fsckClean(image);
    const ro = await FileDisk.open(image, { readOnly: true });
    try {
      const fs = await Ext4.open(ro, { strict: true });
      const names = (await fs.readdir('/big-dir')).map((e) => e.name);
      assert.equal(names.length, 600);
      assert.ok(names.includes('added') && !names.includes('file-with-a-longish-name-00100'));
      assert.equal(new TextDecoder().decode(await fs.readFile('/small.txt')), 'replaced\n');
      assert.equal(new TextDecoder().decode(await fs.readFile('/dir/hardlink')), 'hello, ext4\n', 'the old inode lives on through its other link');
    } finally {
      await ro.close();
    }
    assert.equal(run('debugfs', ['-R', 'cat /big-dir/added', image]).stdout, 'added\n');
  });

  test('edits stay e2fsck-clean on every mke2fs feature combination with extents', async () => {
    const src = join(tmp.dir, 'variants-src');
    makeTree(src, { manyFiles: 150 });
    for (const variant of VARIANTS.filter((v) => v.args.join(' ').includes('ext4') && !v.args.join(' ').includes('^extent'))) {
      const image = join(tmp.dir, `w-${variant.name}.img`);
      makeImage(image, src, variant, 48);
      const disk = await FileDisk.open(image);
      if (variant.args.join(' ').includes('casefold')) {
        await assert.rejects(Ext4Writer.open(await Ext4.open(disk)), /incompat 0x20000/, 'casefold is refused');
        await disk.close();
        continue;
      }
      try {
        const w = await Ext4Writer.open(await Ext4.open(disk), { now: NOW });
        await w.mkdir('/new');
        await w.writeFile('/new/data', randomBytes(700_000, 5));
        await w.writeFile('/big-dir/extra', enc('x'));
        await w.unlink('/medium.bin');
        await w.unlink('/big-dir/file-with-a-longish-name-00007');
        await w.symlink('/new/link', 'data');
        await w.setXattr('/new/data', 'user.k', enc('v'));
        await w.close();
      } finally {
        await disk.close();
      }
      fsckClean(image);
      const ro = await FileDisk.open(image, { readOnly: true });
      try {
        const fs = await Ext4.open(ro, { strict: true });
        assert.ok(Buffer.from(await fs.readFile('/new/data')).equals(Buffer.from(randomBytes(700_000, 5))), variant.name);
        assert.equal((await fs.readdir('/big-dir')).length, 150);
      } finally {
        await ro.close();
      }
    }
  });

  test('a fragmented file gets extent tree blocks that e2fsck and debugfs accept', async () => {
    const image = join(tmp.dir, 'frag.img');
    const disk = await FileDisk.open(image, { create: { size: 48 * 2 ** 20 } });
    const big = randomBytes(7 * 2 ** 20, 77);
    try {
      await mkfs(disk, { ...FIXED, zeroed: true });
      const w = await Ext4Writer.open(await Ext4.open(disk), { now: NOW });
      for (let i = 0; i < 1400; i++) await w.writeFile(`/f${i}`, new Uint8Array(4096).fill(i & 0xff));
      for (let i = 0; i < 1400; i += 2) await w.unlink(`/f${i}`);
      await w.writeFile('/big', big);
      await w.appendFile('/big', big.subarray(0, 5000));
      await w.close();
    } finally {
      await disk.close();
    }
    fsckClean(image);
    const stat = run('debugfs', ['-R', 'stat /big', image]).stdout;
    assert.ok((stat.match(/\(ETB0\)/g) ?? []).length >= 2, 'a depth-1 extent tree with several leaves');
    const out = join(tmp.dir, 'frag.out');
    run('debugfs', ['-R', `dump /big ${out}`, image]);
    assert.ok(readFileSync(out).equals(Buffer.concat([big, big.subarray(0, 5000)])));
  });

  test('writing is deterministic (pinned hash)', async () => {
    const hashes: string[] = [];
    for (let i = 0; i < 2; i++) {
      const disk = new MemoryDisk(64 * 2 ** 20);
      await mkfs(disk, FIXED);
      await scenario(disk);
      hashes.push(createHash('sha256').update(disk.bytes).digest('hex'));
    }
    assert.equal(hashes[0], hashes[1]);
    assert.equal(hashes[0], '63873674e4adb300280a92489d654f4e75871b34ca3f8df6f18669472b931081');
  });

  test('extended attributes (in the inode and in an EA block) and whiteouts: e2fsck, debugfs, the kernel', async () => {
    const image = join(tmp.dir, 'xattr.img');
    const disk = await FileDisk.open(image, { create: { size: 32 * 2 ** 20 } });
    const big = enc('v'.repeat(300));
    try {
      await mkfs(disk, { ...FIXED, zeroed: true });
      const w = await Ext4Writer.open(await Ext4.open(disk), { now: NOW });
      await w.mkdir('/upper');
      await w.mkdir('/upper/opaque');
      await w.setXattr('/upper/opaque', 'trusted.overlay.opaque', enc('y'));
      await w.mknod('/upper/deleted', 'chardev', { major: 0, minor: 0 });
      await w.writeFile('/upper/f', enc('x'));
      await w.setXattr('/upper/f', 'user.a', enc('1'));
      await w.setXattr('/upper/f', 'user.b', big);
      await w.setXattr('/upper/f', 'security.selinux', enc('system_u:object_r:user_home_t:s0\0'));
      await w.writeFile('/upper/g', enc('y'));
      await w.setXattr('/upper/g', 'user.gone', big);
      await w.setXattr('/upper/g', 'user.gone', undefined);
      await w.setXattr('/upper/g', 'trusted.overlay.redirect', enc('/lower/x'));
      await w.close();
    } finally {
      await disk.close();
    }
    fsckClean(image);
    const ro = await FileDisk.open(image, { readOnly: true });
    try {
      const fs = await Ext4.open(ro, { strict: true });
      const names = async (p: string) => (await fs.getXattrs(p)).map((x) => `${x.name}=${new TextDecoder().decode(x.value).slice(0, 8)}`).sort();
      assert.deepEqual(await names('/upper/opaque'), ['trusted.overlay.opaque=y']);
      assert.deepEqual(await names('/upper/f'), ['security.selinux=system_u', 'user.a=1', 'user.b=vvvvvvvv']);
      assert.deepEqual(await names('/upper/g'), ['trusted.overlay.redirect=/lower/x']);
      assert.equal((await fs.statInode(await fs.lookup('/upper/g'))).blocks512, 8, 'the EA block of user.gone was released');
    } finally {
      await ro.close();
    }
    const out = join(tmp.dir, 'ea.out');
    run('debugfs', ['-R', `ea_get -f ${out} /upper/f user.b`, image]);
    assert.ok(Buffer.from(readFileSync(out)).equals(Buffer.from(big)));
    if (canLoopMount() && !missingTools('python3')) {
      const mnt = join(tmp.dir, 'mnt-x');
      mkdirSync(mnt);
      run('mount', ['-o', 'loop,ro', '-t', 'ext4', image, mnt]);
      try {
        const py = "import os,sys,json; print(json.dumps({p: sorted(k + '=' + os.getxattr(p, k).decode()[:8] for k in os.listxattr(p)) for p in sys.argv[1:]}))";
        const got = JSON.parse(run('python3', ['-c', py, join(mnt, 'upper/opaque'), join(mnt, 'upper/f'), join(mnt, 'upper/g')]).stdout);
        assert.deepEqual(got[join(mnt, 'upper/f')], ['security.selinux=system_u', 'user.a=1', 'user.b=vvvvvvvv']);
        assert.deepEqual(got[join(mnt, 'upper/opaque')], ['trusted.overlay.opaque=y']);
        assert.deepEqual(got[join(mnt, 'upper/g')], ['trusted.overlay.redirect=/lower/x']);
        assert.ok(lstatSync(join(mnt, 'upper/deleted')).isCharacterDevice());
      } finally {
        run('umount', [mnt]);
      }
    }
  });

  test('refuses a filesystem whose journal needs recovery, and ext3', async () => {
    const image = join(tmp.dir, 'dirty.img');
    run('mke2fs', ['-q', '-F', '-t', 'ext4', image, '16M']);
    run('debugfs', ['-w', '-R', 'feature needs_recovery', image]);
    const disk = await FileDisk.open(image);
    try {
      await assert.rejects(Ext4Writer.open(await Ext4.open(disk)), /journal needs recovery/);
    } finally {
      await disk.close();
    }
    const ext3 = join(tmp.dir, 'ext3.img');
    run('mke2fs', ['-q', '-F', '-t', 'ext3', ext3, '16M']);
    const d3 = await FileDisk.open(ext3);
    try {
      await assert.rejects(Ext4Writer.open(await Ext4.open(d3)), /without extents/);
    } finally {
      await d3.close();
    }
  });
});
