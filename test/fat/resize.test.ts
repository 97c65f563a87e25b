/**
 * Resizable FAT files (WritableFile.resize) and createFile's `uninitialized`: growth stays contiguous
 * where the clusters after the file are free and goes elsewhere when they are not, new bytes read as
 * zeros even over clusters a deleted file left its bytes in (and keep them when the file was created
 * `uninitialized`), shrinking frees the tail, the free count stays exact (also after reopening), the
 * 4 GiB − 1 limit holds, and a file renamed away while open is not resized behind the new name's back.
 */
import '../helpers/setup.ts';
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { MemoryDisk, readAt } from '../../src/io/disk.ts';
import { NotFoundError, UnsupportedFeatureError } from '../../src/errors.ts';
import { FatFs, mkfsFat, FAT_MAX_FILE_SIZE } from '../../src/fs/fat/index.ts';

const MiB = 2 ** 20;
const NOW = 1_750_000_000_000;

async function fresh(size: number, type?: 'fat12' | 'fat16' | 'fat32'): Promise<{ disk: MemoryDisk; fs: FatFs }> {
  const disk = new MemoryDisk(size);
  await mkfsFat(disk, { type, serial: 0x5eed, now: NOW });
  return { disk, fs: await FatFs.open(disk, { now: () => NOW }) };
}

const pattern = (n: number, seed: number): Uint8Array => new Uint8Array(n).map((_, i) => (i * seed + (i >> 9) + 1) & 0xff);

/**
 * A FAT16 volume whose first 40 clusters hold a deleted file's 0xA5 bytes; reopened, so allocation
 * starts at cluster 2 again (FAT16 has no FSInfo hint) and reuses them.
 */
async function dirtyVolume(): Promise<{ disk: MemoryDisk; fs: FatFs; cs: number }> {
  const { disk, fs } = await fresh(24 * MiB, 'fat16');
  const cs = fs.layout.clusterSize;
  await fs.writeFile('/junk.bin', new Uint8Array(40 * cs).fill(0xa5));
  await fs.unlink('/junk.bin');
  await fs.close();
  return { disk, fs: await FatFs.open(disk, { now: () => NOW }), cs };
}

/** The first cluster and the cluster list of a file, read from the FAT the way fsck would (raw bytes). */
function chainOf(disk: MemoryDisk, fs: FatFs, first: number): number[] {
  const { fatOffset, type } = fs.layout;
  const dv = new DataView(disk.bytes.buffer, disk.bytes.byteOffset);
  const out: number[] = [];
  for (let c = first; c >= 2 && c < 0x0ffffff0 && out.length < 1e6; ) {
    out.push(c);
    c = type === 'fat32' ? dv.getUint32(fatOffset + c * 4, true) & 0x0fffffff : type === 'fat16' ? dv.getUint16(fatOffset + c * 2, true) : (c & 1 ? dv.getUint16(fatOffset + c + (c >> 1), true) >> 4 : dv.getUint16(fatOffset + c + (c >> 1), true) & 0xfff);
    if ((type === 'fat16' && c >= 0xfff8) || (type === 'fat12' && c >= 0xff8)) break;
  }
  return out;
}

/** The short entry's first cluster of a root-directory file with a plain 8.3 name (NAME    EXT). */
function firstClusterOf(disk: MemoryDisk, fs: FatFs, shortName: string): number {
  const b = Buffer.from(disk.bytes);
  const at = b.indexOf(Buffer.from(shortName, 'latin1'), fs.layout.rootOffset || fs.layout.dataOffset);
  assert.ok(at > 0, shortName);
  return (b.readUInt16LE(at + 20) << 16) | b.readUInt16LE(at + 26);
}

const isContiguous = (clusters: number[]): boolean => clusters.every((c, i) => i === 0 || c === clusters[i - 1]! + 1);

describe('FAT file resize', () => {
  for (const type of ['fat12', 'fat16', 'fat32'] as const) {
    test(`${type}: grow (contiguous, then fragmented around a blocker), shrink, to zero and back; bytes and free count`, async () => {
      const { disk, fs } = await fresh(type === 'fat12' ? 3 * MiB : type === 'fat16' ? 24 * MiB : 80 * MiB, type);
      const cs = fs.layout.clusterSize;
      const free0 = await fs.freeClusters();
      const f = await fs.createFile('/GROW.BIN', { size: 3 * cs + 10 });
      const head = pattern(3 * cs + 10, 7);
      await f.write(head, 0);
      await f.resize(6 * cs + 1);
      assert.equal(f.size, 6 * cs + 1);
      assert.equal((await fs.stat('/grow.bin')).size, 6 * cs + 1);
      let all = await readAt(f, 0, f.size);
      assert.deepEqual(all.subarray(0, head.byteLength), head);
      assert.ok(all.subarray(head.byteLength).every((b) => b === 0), 'grown bytes read as zeros');
      assert.ok(isContiguous(chainOf(disk, fs, firstClusterOf(disk, fs, 'GROW    BIN'))), 'contiguous while the next clusters are free');
      assert.equal(await fs.freeClusters(), free0 - 7);
      // A file right after it: the next growth must go around it.
      await fs.writeFile('/BLOCK.BIN', pattern(cs, 3));
      const tail = pattern(cs, 11);
      await f.write(tail, 6 * cs + 1 - cs);
      await f.resize(10 * cs);
      const clusters = chainOf(disk, fs, firstClusterOf(disk, fs, 'GROW    BIN'));
      assert.equal(clusters.length, 10);
      assert.ok(!isContiguous(clusters), 'fragmented around the blocker');
      all = await readAt(f, 0, f.size);
      assert.deepEqual(all.subarray(6 * cs + 1 - cs, 6 * cs + 1), tail);
      assert.ok(all.subarray(6 * cs + 1).every((b) => b === 0));
      assert.deepEqual(await readAt(await fs.openFile('/block.bin'), 0, cs), pattern(cs, 3), 'the blocker is untouched');
      // Shrink, then to zero, then back up.
      await f.resize(2 * cs + 5);
      assert.equal(await fs.freeClusters(), free0 - 3 - 1);
      assert.deepEqual(await readAt(f, 0, f.size), head.subarray(0, 2 * cs + 5));
      await f.resize(0);
      assert.equal((await fs.stat('/grow.bin')).size, 0);
      assert.equal(await fs.freeClusters(), free0 - 1);
      await f.resize(cs + 1);
      assert.ok((await readAt(f, 0, f.size)).every((b) => b === 0), 'regrown from zero: zeros');
      await fs.close();
      const again = await FatFs.open(disk);
      assert.equal(await again.freeClusters(), free0 - 3, 'exact free count after reopening');
      assert.equal((await again.stat('/grow.bin')).size, cs + 1);
      // Through openFileForWriting as well.
      const w = await again.openFileForWriting('/grow.bin');
      await w.write(pattern(40, 5), cs - 39);
      await w.resize(3 * cs);
      const back = await readAt(await again.openFile('/grow.bin'), 0, 3 * cs);
      const expect = new Uint8Array(3 * cs);
      expect.set(pattern(40, 5), cs - 39);
      assert.deepEqual(back, expect);
      await again.close();
    });
  }

  test('grown bytes are zeros over clusters a deleted file left its bytes in, also inside the last cluster', async () => {
    const { fs, cs } = await dirtyVolume();
    const f = await fs.createFile('/x.img', { size: 10 });
    await f.write(new Uint8Array(cs).fill(0x11).subarray(0, 10), 0);
    // Bytes past the size inside the first cluster: a shrink leaves them as they were.
    await f.resize(cs);
    await f.write(new Uint8Array(cs).fill(0x22), 0);
    await f.resize(10);
    await f.resize(30 * cs);
    const all = await readAt(f, 0, f.size);
    assert.ok(all.subarray(0, 10).every((b) => b === 0x22));
    assert.ok(all.subarray(10).every((b) => b === 0), 'no old byte shows through');
    await fs.close();
  });

  test('uninitialized: createFile and growth skip the clearing (the caller writes every byte)', async () => {
    const { fs, cs } = await dirtyVolume();
    const f = await fs.createFile('/build.tmp', { size: 8 * cs, uninitialized: true });
    assert.ok((await readAt(f, 0, f.size)).some((b) => b === 0xa5), 'old bytes are left where they were');
    await f.resize(20 * cs);
    assert.ok((await readAt(f, 8 * cs, 12 * cs)).some((b) => b === 0xa5), 'growth does not clear either');
    const z = await fs.createFile('/zeroed', { size: 8 * cs });
    assert.ok((await readAt(z, 0, z.size)).every((b) => b === 0));
    await fs.close();
  });

  test('sizes past 4 GiB − 1 are refused; a file renamed away while open is not resized', async () => {
    const { fs } = await fresh(80 * MiB, 'fat32');
    const f = await fs.createFile('/a.img', { size: 100 });
    await assert.rejects(f.resize(FAT_MAX_FILE_SIZE + 1), (err: unknown) => err instanceof UnsupportedFeatureError && /limited to 4 GiB − 1/.test(err.message));
    await assert.rejects(f.resize(-1), UnsupportedFeatureError);
    assert.equal(f.size, 100);
    await fs.rename('/a.img', '/b.img');
    await assert.rejects(f.resize(200), NotFoundError);
    assert.equal((await fs.stat('/b.img')).size, 100);
    const ro = await fs.openFile('/b.img');
    await assert.rejects((ro as unknown as { resize(n: number): Promise<void> }).resize(10));
    await fs.close();
  });
});
