// The repair an exFAT volume left dirty gets when it is opened for writing, on damage made by hand:
//   - a lost bitmap bit, an in-use secondary without a primary and a FAT chain running past its file's
//     DataLength (with its tail marked) are repaired; a second name of one file in another directory (a
//     cut move) and the clusters a vendor allocation entry records are kept; every file reads back as
//     before, verify() is clean and fsck.exfat -n too;
//   - a cross-link, a chain into a free cluster and a directory inside itself are refused with
//     ExfatRepairError and not one byte is written;
//   - a repair cut after any of its writes is finished by the next open;
//   - a write that fails during a session leaves VolumeDirty set at close; the next open for writing
//     repairs what it left.
import '../helpers/setup.ts';
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { MemoryDisk, type Disk } from '../../src/io/disk.ts';
import { ExfatFs, ExfatRepairError, decodeFileEntrySet, encodeFileEntrySet, mkfsExfat } from '../../src/fs/exfat/index.ts';
import { missingTools, run } from '../helpers/tools.ts';
import { tempDir } from '../helpers/tmp.ts';
import { fsListing, sorted } from '../fat/fixtures.ts';

const FIXED = Date.UTC(2026, 0, 2, 3, 4, 5, 670);
const bytes = (n: number, seed: number): Uint8Array => new Uint8Array(n).map((_, i) => (i * seed + (i >> 9) + 1) & 0xff);

interface Image {
  readonly disk: MemoryDisk;
  readonly fs: ExfatFs;
}

const runsOf = async (fs: ExfatFs, path: string): Promise<{ start: number; length: number }[]> => [...((await fs.openFile(path)) as unknown as { runs: { start: number; length: number }[] }).runs];

/** /a (three clusters, contiguous), /c (a FAT chain around its neighbour), /d holding /d/e. */
async function image(): Promise<Image> {
  const disk = new MemoryDisk(8 << 20);
  await mkfsExfat(disk, { label: 'REPAIR', serial: 0x0badf00d });
  const fs = await ExfatFs.open(disk, { now: () => FIXED });
  const cs = fs.clusterSize;
  await fs.writeFile('/a', bytes(3 * cs, 3));
  const c = await fs.createFile('/c', { size: 2 * cs });
  await c.write(bytes(2 * cs, 5), 0);
  await c.close();
  await fs.writeFile('/c.after', bytes(100, 7));
  const grown = await fs.openFileForWriting('/c');
  await grown.resize(4 * cs);
  await grown.write(bytes(2 * cs, 9), 2 * cs);
  await grown.close();
  await fs.mkdir('/d');
  await fs.writeFile('/d/e', bytes(700, 11));
  await fs.close();
  return { disk, fs };
}

const dv = (img: Image): DataView => new DataView(img.disk.bytes.buffer, img.disk.bytes.byteOffset, img.disk.bytes.byteLength);
const clusterAt = (img: Image, c: number): number => img.fs.boot.clusterHeapOffset * img.fs.sectorSize + (c - 2) * img.fs.clusterSize;
const setFat = (img: Image, c: number, v: number): void => dv(img).setUint32(img.fs.boot.fatOffset * img.fs.sectorSize + c * 4, v >>> 0, true);
const bitmapAt = (img: Image): number => clusterAt(img, 2); // mkfs puts the bitmap first in the heap
const mark = (img: Image, c: number): void => {
  img.disk.bytes[bitmapAt(img) + ((c - 2) >>> 3)]! |= 1 << ((c - 2) & 7);
};
const setDirty = (img: Image): void => {
  img.disk.bytes[106]! |= 2;
};
const isDirty = (b: Uint8Array): boolean => (b[106]! & 2) !== 0;

/** The byte offset of the first entry of type `type` in a directory cluster, and of its first 0x00 entry. */
function findEntry(img: Image, dirCluster: number, type: number): number {
  const base = clusterAt(img, dirCluster);
  for (let at = base; at < base + img.fs.clusterSize; at += 32) if (img.disk.bytes[at] === type) return at;
  throw new Error(`no entry of type ${type.toString(16)}`);
}

/** The set of the name `name` in the directory at `dirCluster`: its offset and entry count. */
function setOf(img: Image, dirCluster: number, name: string): { at: number; count: number } {
  const base = clusterAt(img, dirCluster);
  for (let at = base; at < base + img.fs.clusterSize; at += 32) {
    if (img.disk.bytes[at] !== 0x85) continue;
    const count = img.disk.bytes[at + 1]! + 1;
    const raw = img.disk.bytes.subarray(at, at + count * 32);
    let n = '';
    for (let k = 0; k < raw[35]!; k++) n += String.fromCharCode(raw[64 + 2 + k * 2]! | (raw[64 + 3 + k * 2]! << 8));
    if (n === name) return { at, count };
  }
  throw new Error(`no set named ${name}`);
}

async function listing(b: Uint8Array): Promise<[string, string][]> {
  return sorted(await fsListing(await ExfatFs.open(new MemoryDisk(b.slice()), { readOnly: true })));
}

const tmp = tempDir('livestick-exfat-repair-');
after(() => tmp.cleanup());

function fsckClean(b: Uint8Array): void {
  if (missingTools('fsck.exfat')) return;
  const path = join(tmp.dir, 'check.img');
  writeFileSync(path, b);
  const r = run('fsck.exfat', ['-n', path], { allowFail: true });
  assert.equal(r.status, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /clean/);
}

describe('exFAT repair on open', () => {
  test('lost bits, an orphaned secondary and a chain past its size are repaired; a second name and a vendor allocation are kept', async () => {
    const img = await image();
    const { fs } = img;
    const cs = fs.clusterSize;
    const total = fs.boot.clusterCount;
    const root = fs.boot.rootCluster;
    const ro = await ExfatFs.open(img.disk, { readOnly: true });
    const c = await runsOf(ro, '/c');
    const a = await runsOf(ro, '/a');
    assert.ok(c.length > 1, '/c is a FAT chain');
    assert.equal(a.length, 1, '/a is contiguous');
    const dFirst = dv(img).getUint32(setOf(img, root, 'd').at + 32 + 20, true);
    // A lost bit, far from everything.
    mark(img, total - 3);
    // /c's FAT goes on past its size into a marked cluster (a grow cut before the set).
    const last = c[c.length - 1]!;
    setFat(img, last.start + last.length - 1, total - 10);
    setFat(img, total - 10, 0xffffffff);
    mark(img, total - 10);
    // An in-use stream entry without a primary at the end of the root, naming a marked cluster (a
    // delete cut between two directory runs, the file entry gone first).
    const end = findEntry(img, root, 0x00);
    const stream = img.disk.bytes.slice(setOf(img, root, 'a').at + 32, setOf(img, root, 'a').at + 64);
    new DataView(stream.buffer).setUint32(20, total - 20, true);
    new DataView(stream.buffer).setBigUint64(24, BigInt(cs), true);
    img.disk.bytes.set(stream, end);
    mark(img, total - 20);
    // /d/e gets a vendor allocation entry (type 0xE1, AllocationPossible) recording cluster total-30.
    const eSet = setOf(img, dFirst, 'e');
    const set = decodeFileEntrySet(img.disk.bytes.subarray(eSet.at), new Uint16Array(0x10000).map((_, i) => (i >= 0x61 && i <= 0x7a ? i - 32 : i)));
    const vendor = new Uint8Array(32);
    vendor[0] = 0xe1;
    vendor[1] = 0x01 | 0x02;
    new DataView(vendor.buffer).setUint32(20, total - 30, true);
    new DataView(vendor.buffer).setBigUint64(24, BigInt(cs), true);
    const withVendor = encodeFileEntrySet({ ...set, extra: [vendor] });
    img.disk.bytes.fill(0, eSet.at, eSet.at + eSet.count * 32);
    img.disk.bytes.set(withVendor, eSet.at);
    mark(img, total - 30);
    // /a also named from /d (a cut move into another directory): a byte copy of its set.
    const aSet = setOf(img, root, 'a');
    const dEnd = findEntry(img, dFirst, 0x00);
    img.disk.bytes.copyWithin(dEnd, aSet.at, aSet.at + aSet.count * 32);
    setDirty(img);
    const before = await listing(img.disk.bytes);
    assert.ok(before.some(([p]) => p === '/d/a'), 'two names for /a');
    const problems = await (await ExfatFs.open(img.disk, { readOnly: true })).verify();
    assert.ok(problems.some((p) => new RegExp(`cluster ${total - 3} is marked in the bitmap but unused`).test(p)), problems.join());
    assert.ok(!problems.some((p) => new RegExp(`cluster ${total - 30} `).test(p)), 'verify() counts the vendor allocation');
    const repaired = await ExfatFs.open(img.disk, { now: () => FIXED });
    assert.equal(repaired.dirty, true);
    assert.deepEqual(repaired.repaired, { lostClusters: 3, orphanEntries: 1, chainsEnded: 1, secondNames: 1 });
    await repaired.close();
    const b = img.disk.bytes;
    assert.equal(isDirty(b), false, 'clean once closed');
    assert.deepEqual(await listing(b), before, 'every file reads back as before');
    const after = await ExfatFs.open(img.disk, { readOnly: true });
    assert.deepEqual((await after.verify()).filter((p) => !/used twice \(again by \/d\/a\)/.test(p)), [], 'verify() after the repair: only the second name');
    assert.equal(dv(img).getUint32(fs.boot.fatOffset * fs.sectorSize + (last.start + last.length - 1) * 4, true), 0xffffffff, "/c's chain ends at its size");
    assert.equal(b[end]! & 0x80, 0, 'the orphaned entry is unused');
    assert.ok(b[bitmapAt(img) + ((total - 30 - 2) >>> 3)]! & (1 << ((total - 30 - 2) & 7)), 'the vendor allocation is still marked');
  });

  const refusals: [string, RegExp, (img: Image, c: { start: number; length: number }[], a: { start: number; length: number }[]) => void][] = [
    ['a chain running into another file (cross-linked)', /\/c: cluster \d+ belongs to another chain too \(cross-linked\)/, (img, c, a) => {
      const c0 = c[0]!;
      setFat(img, c0.start + c0.length - 1, a[0]!.start + 1);
      setFat(img, a[0]!.start + 1, c[1]!.start);
    }],
    ['a chain into a free cluster', /"c" FAT chain: cluster \d+ points to 0/, (img, c) => {
      const c0 = c[0]!;
      setFat(img, c0.start + c0.length - 1, img.fs.boot.clusterCount - 5);
      setFat(img, img.fs.boot.clusterCount - 5, 0);
    }],
    ['a directory inside itself', /directory \/d\/d is inside itself/, (img) => {
      const d = setOf(img, img.fs.boot.rootCluster, 'd');
      const dFirst = dv(img).getUint32(d.at + 32 + 20, true);
      const at = findEntry(img, dFirst, 0x00);
      img.disk.bytes.copyWithin(at, d.at, d.at + d.count * 32);
    }],
  ];
  for (const [name, reason, poke] of refusals) {
    test(`refused, nothing written: ${name}`, async () => {
      const img = await image();
      const ro = await ExfatFs.open(img.disk, { readOnly: true });
      poke(img, await runsOf(ro, '/c'), await runsOf(ro, '/a'));
      setDirty(img);
      const before = img.disk.bytes.slice();
      await assert.rejects(ExfatFs.open(img.disk), (e: unknown) => e instanceof ExfatRepairError && e.code === 'CORRUPT_IMAGE' && reason.test(e.message) && /nothing was changed/.test(e.message));
      assert.ok(Buffer.from(img.disk.bytes).equals(before), 'not one byte written');
    });
  }

  test('a repair cut after any of its writes is finished by the next open', async () => {
    const img = await image();
    const total = img.fs.boot.clusterCount;
    const ro = await ExfatFs.open(img.disk, { readOnly: true });
    const c = await runsOf(ro, '/c');
    const last = c[c.length - 1]!;
    for (const k of [3, 40, 41, 600]) mark(img, total - k); // lost bits in different bitmap sectors
    setFat(img, last.start + last.length - 1, total - 10); // /c's chain goes on past its size
    setFat(img, total - 10, 0xffffffff);
    mark(img, total - 10);
    const end = findEntry(img, img.fs.boot.rootCluster, 0x00);
    img.disk.bytes.set(img.disk.bytes.slice(setOf(img, img.fs.boot.rootCluster, 'a').at + 32, setOf(img, img.fs.boot.rootCluster, 'a').at + 64), end);
    new DataView(img.disk.bytes.buffer).setUint32(end + 20, total - 3, true); // the orphan names a lost cluster
    setDirty(img);
    const start = img.disk.bytes.slice();
    const before = await listing(start);
    const cutAfter = (limit: number, mem: MemoryDisk): Disk => {
      let n = 0;
      return {
        size: mem.size,
        readOnly: false,
        read: (buf, offset) => mem.read(buf, offset),
        write: async (buf, offset) => {
          if (n++ >= limit) throw new Error('cut');
          await mem.write(buf, offset);
        },
        flush: async () => {},
        close: async () => {},
      };
    };
    const counted = new MemoryDisk(start.slice());
    let writes = 0;
    const counting: Disk = { ...cutAfter(Infinity, counted), write: async (buf, offset) => { writes++; await counted.write(buf, offset); } };
    await (await ExfatFs.open(counting, { now: () => FIXED })).close();
    assert.ok(writes >= 5, `${writes} writes`);
    for (let k = 0; k < writes; k++) {
      const mem = new MemoryDisk(start.slice());
      await assert.rejects(ExfatFs.open(cutAfter(k, mem), { now: () => FIXED }).then((fs) => fs.close()), /cut/);
      assert.deepEqual(await listing(mem.bytes), before, `cut after write ${k}: files unchanged`);
      await (await ExfatFs.open(mem, { now: () => FIXED })).close();
      assert.equal(isDirty(mem.bytes), false, `cut after write ${k}: clean after the next open`);
      assert.deepEqual(await (await ExfatFs.open(mem, { readOnly: true })).verify(), [], `cut after write ${k}: verify()`);
      assert.deepEqual(await listing(mem.bytes), before);
    }
  });

  test('a write that fails during a session keeps VolumeDirty at close; the next open repairs the rest', async () => {
    const img = await image();
    const before = await listing(img.disk.bytes);
    let failAt = -1;
    let writes = 0;
    const flaky: Disk = {
      size: img.disk.size,
      readOnly: false,
      read: (buf, offset) => img.disk.read(buf, offset),
      write: async (buf, offset) => {
        if (writes++ === failAt) throw Object.assign(new Error('EIO: i/o error, write'), { code: 'EIO' });
        await img.disk.write(buf, offset);
      },
      flush: async () => {},
      close: async () => {},
    };
    const fs = await ExfatFs.open(flaky, { now: () => FIXED });
    // Writes of writeFile: VolumeDirty (two), the bitmap, then the data: the data write fails.
    failAt = writes + 3;
    await assert.rejects(fs.writeFile('/new', bytes(5 * fs.clusterSize, 13)), /EIO/);
    await fs.close();
    assert.equal(isDirty(img.disk.bytes), true, 'VolumeDirty stays');
    const again = await ExfatFs.open(img.disk, { now: () => FIXED });
    assert.equal(again.repaired!.lostClusters, 5, 'the clusters the failed writeFile marked');
    await again.close();
    assert.equal(isDirty(img.disk.bytes), false);
    assert.deepEqual(await listing(img.disk.bytes), before);
    assert.deepEqual(await (await ExfatFs.open(img.disk, { readOnly: true })).verify(), []);
    fsckClean(img.disk.bytes);
  });
});
