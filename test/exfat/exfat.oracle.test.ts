// exFAT against exfatprogs: images mkfs.exfat makes are read by ExfatFs (empty, and after livestick
// fills them); images livestick makes and fills pass `fsck.exfat -n` after every write scenario,
// including a file beyond 4 GiB on a sparse image.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { statSync, writeFileSync, truncateSync } from 'node:fs';
import { join } from 'node:path';
import { missingTools, run } from '../helpers/tools.ts';
import { tempDir } from '../helpers/tmp.ts';
import { FileDisk, readAt } from '../../src/io/disk.ts';
import { ExfatFs, decodeBootSector, exfatLayout, mkfsExfat } from '../../src/fs/exfat/index.ts';

const MiB = 1 << 20;
const GiB = 2 ** 30;
const tmp = tempDir('livestick-exfat-oracle-');
after(() => tmp.cleanup());

function sparseFile(path: string, size: number): void {
  writeFileSync(path, '');
  truncateSync(path, size);
}

function fsckClean(path: string, what: string): void {
  const r = run('fsck.exfat', ['-n', path], { allowFail: true });
  assert.equal(r.status, 0, `fsck.exfat -n after ${what}:\n${r.stdout}${r.stderr}`);
  assert.match(r.stdout, /clean/, `fsck.exfat -n after ${what}:\n${r.stdout}`);
}

function pattern(n: number, seed: number): Uint8Array {
  return new Uint8Array(n).map((_, i) => (i * 13 + seed + (i >> 10)) & 0xff);
}

async function scenarios(fs: ExfatFs, path: string): Promise<Map<string, Uint8Array>> {
  const expect = new Map<string, Uint8Array>();
  const cs = fs.clusterSize;
  // creates: empty, small, multi-cluster, long and Unicode names, deep and wide directories
  await fs.mkdir('/LiveOS');
  for (const [name, size] of [['empty', 0], ['small.txt', 17], ['multi.bin', 5 * cs + 3], ['Ünïcödé 名前 — a name long enough for several name entries.dat', 1000]] as const) {
    const data = pattern(size, name.length);
    await fs.writeFile(`/LiveOS/${name}`, data);
    expect.set(`/LiveOS/${name}`, data);
  }
  let deep = '';
  for (let i = 0; i < 8; i++) {
    deep += `/level${i}`;
    await fs.mkdir(deep);
  }
  await fs.writeFile(`${deep}/leaf`, pattern(100, 1));
  expect.set(`${deep}/leaf`, pattern(100, 1));
  await fs.mkdir('/wide');
  for (let i = 0; i < 150; i++) {
    const p = `/wide/file number ${i} with a longer name`;
    await fs.writeFile(p, pattern(i * 7, i));
    expect.set(p, pattern(i * 7, i));
  }
  await fs.flush();
  fsckClean(path, 'creates');
  // deletes (leaving holes), then a file that must chain through them
  for (let i = 0; i < 150; i += 3) {
    await fs.unlink(`/wide/file number ${i} with a longer name`);
    expect.delete(`/wide/file number ${i} with a longer name`);
  }
  await fs.mkdir('/gone');
  await fs.rmdir('/gone');
  await fs.flush();
  fsckClean(path, 'deletes');
  // renames: within a directory, across directories, replacing a file, a directory with contents
  await fs.rename('/LiveOS/small.txt', '/LiveOS/SMALL renamed.txt');
  expect.set('/LiveOS/SMALL renamed.txt', expect.get('/LiveOS/small.txt')!);
  expect.delete('/LiveOS/small.txt');
  await fs.rename('/LiveOS/multi.bin', '/wide/file number 1 with a longer name');
  expect.set('/wide/file number 1 with a longer name', expect.get('/LiveOS/multi.bin')!);
  expect.delete('/LiveOS/multi.bin');
  await fs.rename('/level0', '/LiveOS/moved');
  for (const k of [...expect.keys()].filter((k) => k.startsWith('/level0/'))) {
    expect.set(k.replace('/level0/', '/LiveOS/moved/'), expect.get(k)!);
    expect.delete(k);
  }
  await fs.flush();
  fsckClean(path, 'renames');
  // overwrite in place, and a created file written through its Disk
  await fs.writeFile('/LiveOS/empty', pattern(3 * cs, 9));
  expect.set('/LiveOS/empty', pattern(3 * cs, 9));
  const d = await fs.createFile('/LiveOS/overlay-LIVE-0001', { size: 10 * cs });
  await d.write(pattern(cs, 4), 2 * cs);
  await d.close();
  const overlay = new Uint8Array(10 * cs);
  overlay.set(pattern(cs, 4), 2 * cs);
  expect.set('/LiveOS/overlay-LIVE-0001', overlay);
  await fs.close();
  fsckClean(path, 'overwrite and createFile');
  return expect;
}

async function checkContents(path: string, expect: Map<string, Uint8Array>): Promise<void> {
  const disk = await FileDisk.open(path, { readOnly: true });
  try {
    const fs = await ExfatFs.open(disk);
    assert.deepEqual(await fs.verify(), []);
    for (const [p, data] of expect) assert.deepEqual(await readAt(await fs.openFile(p), 0, data.byteLength), data, p);
    assert.equal((await fs.readdir('/wide')).length, 100);
  } finally {
    await disk.close();
  }
}

describe('exFAT oracle: exfatprogs', { skip: missingTools('mkfs.exfat', 'fsck.exfat') }, () => {
  test('mkfs.exfat images open: label, serial, empty root, space, its plain up-case table', async () => {
    for (const [size, label] of [[8 * MiB, 'STICK'], [300 * MiB, ''], [6 * GiB, 'Ventoy']] as const) {
      const path = join(tmp.dir, `mkfs-${size}.img`);
      sparseFile(path, size);
      run('mkfs.exfat', label ? ['-L', label, path] : [path]);
      const disk = await FileDisk.open(path, { readOnly: true });
      const fs = await ExfatFs.open(disk);
      assert.equal(fs.label, label || undefined);
      assert.match(fs.uuid, /^[0-9A-F]{4}-[0-9A-F]{4}$/);
      assert.deepEqual(await fs.readdir('/'), []);
      const space = await fs.space();
      assert.equal(space.totalBytes, fs.boot.clusterCount * fs.clusterSize);
      assert.ok(space.freeBytes < space.totalBytes && space.freeBytes > space.totalBytes * 0.99);
      await disk.close();
    }
  });

  test('mkfsExfat lays volumes out as mkfs.exfat does (all boot fields but serial, root cluster, PercentInUse)', async () => {
    for (const size of [8 * MiB, 64 * MiB, 300 * MiB, 6 * GiB, 40 * GiB, 40 * GiB + 12345 * 512]) {
      const path = join(tmp.dir, `layout.img`);
      sparseFile(path, size);
      run('mkfs.exfat', [path]);
      const disk = await FileDisk.open(path, { readOnly: true });
      const theirs = decodeBootSector(await readAt(disk, 0, 512));
      await disk.close();
      const ours = exfatLayout(size).boot;
      const strip = (b: typeof ours) => ({ ...b, serial: 0, rootCluster: 0, percentInUse: 0 });
      assert.deepEqual(strip(ours), strip(theirs), `size ${size}`);
    }
  });

  test('livestick fills a mkfs.exfat image: fsck.exfat -n clean after each scenario; contents read back', async () => {
    const path = join(tmp.dir, 'theirs.img');
    sparseFile(path, 64 * MiB);
    run('mkfs.exfat', ['-L', 'THEIRS', path]);
    const disk = await FileDisk.open(path);
    const expect = await scenarios(await ExfatFs.open(disk), path);
    await disk.close();
    await checkContents(path, expect);
  });

  test('mkfsExfat images are clean, empty and filled (4 KiB and 32 KiB clusters)', async () => {
    for (const size of [8 * MiB, 300 * MiB]) {
      const path = join(tmp.dir, `ours-${size}.img`);
      const disk = await FileDisk.open(path, { create: { size } });
      await mkfsExfat(disk, { label: 'OURS' });
      fsckClean(path, `mkfsExfat ${size}`);
      const fs = await ExfatFs.open(disk);
      assert.equal(fs.label, 'OURS');
      const expect = await scenarios(fs, path);
      await disk.close();
      await checkContents(path, expect);
    }
  });

  test('a 5 GiB file on a sparse 6 GiB image (DataLength beyond 4 GiB, few clusters written)', async () => {
    const path = join(tmp.dir, 'large.img');
    const disk = await FileDisk.open(path, { create: { size: 6 * GiB } });
    await mkfsExfat(disk);
    const fs = await ExfatFs.open(disk, { lazyValidDataLength: true });
    const size = 5 * GiB + 12345;
    const f = await fs.createFile('/LiveOS-overlay.img', { size });
    const head = pattern(3 * fs.clusterSize, 5);
    await f.write(head, 0);
    await f.close();
    await fs.writeFile('/after.txt', pattern(100, 2));
    await fs.close();
    fsckClean(path, 'a 5 GiB file');
    assert.ok(statSync(path).blocks * 512 < 64 * MiB, 'the image stays sparse');
    const again = await ExfatFs.open(disk, { readOnly: true });
    assert.equal((await again.stat('/LiveOS-overlay.img')).size, size);
    const big = await again.openFile('/LiveOS-overlay.img');
    assert.deepEqual(await readAt(big, 0, head.byteLength), head);
    assert.deepEqual(await readAt(big, size - 4096, 4096), new Uint8Array(4096));
    assert.deepEqual(await readAt(await again.openFile('/after.txt'), 0, 100), pattern(100, 2));
    await again.unlink('/LiveOS-overlay.img').catch((e: unknown) => assert.equal((e as Error).name, 'ReadOnlyError'));
    await disk.close();
    const rw = await FileDisk.open(path);
    const fs3 = await ExfatFs.open(rw);
    await fs3.unlink('/LiveOS-overlay.img');
    await fs3.close();
    await rw.close();
    fsckClean(path, 'deleting the 5 GiB file');
    const check = await FileDisk.open(path, { readOnly: true });
    assert.deepEqual(await (await ExfatFs.open(check)).verify(), []);
    await check.close();
  });
});
