/**
 * The repair a dirty FAT volume gets when it is opened for writing (src/fs/fat/repair.ts), on FAT16 and
 * FAT32 images whose damage is made by hand:
 *   - `dirty` is the boot sector's bit as found at open; a read-only open repairs nothing and writes
 *     nothing;
 *   - lost chains (in both FATs, and in the first only: the FATs differ), an orphaned long-name slot, a
 *     wrong FSInfo free count and a second name for one chain are repaired as fsck.fat -a would, except
 *     the second name, which is kept: every file reads back as before and fsck.fat -n then reports
 *     only the two names sharing a chain;
 *   - what it cannot judge is refused with FatRepairError and not one byte written: a loop, a chain
 *     running into another directory's file, a chain into a free cluster, a file longer than its chain,
 *     a directory inside itself, a file and a directory naming one cluster, an entry after the end marker;
 *   - a write or an fsync that fails during a session leaves the dirty bit set at close, and the next
 *     open for writing repairs what the failure left;
 *   - a repair cut at any of its writes is finished by the next open.
 */
import '../helpers/setup.ts';
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { FileDisk, MemoryDisk } from '../../src/io/disk.ts';
import { SimulatedCrash, tracePoints, withFaultPlan } from '../../src/io/faults.ts';
import { FatFs, FatRepairError, mkfsFat, type FatType } from '../../src/fs/fat/index.ts';
import { missingTools, run } from '../helpers/tools.ts';
import { tempDir } from '../helpers/tmp.ts';
import { fsListing, sorted } from './fixtures.ts';

const MiB = 2 ** 20;
const NOW = 1_750_000_000_000;
const bytes = (n: number, seed: number): Uint8Array => new Uint8Array(n).map((_, i) => (i * seed + (i >> 9) + 1) & 0xff);
const SIZES: Record<'fat16' | 'fat32', number> = { fat16: 16 * MiB, fat32: 34 * MiB };

interface Image {
  readonly disk: MemoryDisk;
  readonly type: FatType;
  readonly layout: FatFs['layout'];
}

/** A volume with a small tree, closed cleanly. */
async function image(type: 'fat16' | 'fat32'): Promise<Image> {
  const disk = new MemoryDisk(SIZES[type]);
  await mkfsFat(disk, { type, serial: 0x12345678, now: NOW });
  const fs = await FatFs.open(disk, { now: () => NOW });
  await fs.mkdir('/LiveOS');
  await fs.mkdir('/docs');
  const cs = fs.layout.clusterSize;
  await fs.writeFile('/LiveOS/BASE.IMG', bytes(5 * cs - 3, 3));
  await fs.writeFile('/LiveOS/a long name for the overlay', bytes(2 * cs, 5));
  await fs.writeFile('/docs/X.TXT', bytes(3 * cs, 7));
  await fs.close();
  return { disk, type, layout: fs.layout };
}

const view = (img: Image): DataView => new DataView(img.disk.bytes.buffer, img.disk.bytes.byteOffset, img.disk.bytes.byteLength);

function setFat(img: Image, cluster: number, value: number, copies: readonly number[] = [0, 1]): void {
  const { fatOffset, fatBytes } = img.layout;
  for (const k of copies) {
    if (img.type === 'fat32') view(img).setUint32(fatOffset + k * fatBytes + cluster * 4, value, true);
    else view(img).setUint16(fatOffset + k * fatBytes + cluster * 2, value, true);
  }
}

function getFat(img: Image, cluster: number): number {
  const { fatOffset } = img.layout;
  return img.type === 'fat32' ? view(img).getUint32(fatOffset + cluster * 4, true) & 0x0fffffff : view(img).getUint16(fatOffset + cluster * 2, true);
}

const eoc = (img: Image): number => (img.type === 'fat32' ? 0x0fffffff : 0xffff);

/** Where the short entry with these 11 name bytes is (searching the metadata and the data area). */
function entryAt(img: Image, name11: string): number {
  const at = Buffer.from(img.disk.bytes).indexOf(Buffer.from(name11, 'latin1'), img.layout.rootOffset || img.layout.dataOffset);
  assert.ok(at > 0, name11);
  return at;
}

const firstCluster = (img: Image, name11: string): number => {
  const at = entryAt(img, name11);
  return ((view(img).getUint16(at + 20, true) << 16) | view(img).getUint16(at + 26, true)) >>> 0;
};

/** The byte offset of a directory's first cluster. */
const clusterOffset = (img: Image, cluster: number): number => img.layout.dataOffset + (cluster - 2) * img.layout.clusterSize;

/** The first free slot (0x00) of the directory at `cluster`, as a byte offset. */
function endSlot(img: Image, cluster: number): number {
  const base = clusterOffset(img, cluster);
  for (let at = base; at < base + img.layout.clusterSize; at += 32) if (img.disk.bytes[at] === 0) return at;
  throw new Error('no free slot');
}

function setDirty(img: Image): void {
  img.disk.bytes[img.type === 'fat32' ? 65 : 37]! |= 1;
}

const dirtyBit = (b: Uint8Array, type: FatType): boolean => (b[type === 'fat32' ? 65 : 37]! & 1) !== 0;

async function listingOf(b: Uint8Array): Promise<[string, string][]> {
  return sorted(await fsListing(await FatFs.open(new MemoryDisk(b.slice()), { readOnly: true })));
}

const tmp = tempDir('livestick-fat-repair-');
after(() => tmp.cleanup());
const noFsck = missingTools('fsck.fat');

function fsck(b: Uint8Array): { status: number; out: string } {
  const path = join(tmp.dir, 'check.img');
  writeFileSync(path, b);
  const r = run('fsck.fat', ['-n', path], { allowFail: true });
  return { status: r.status, out: r.stdout };
}

/** A dirty volume with something of every kind to repair (and a second name to keep). */
async function damaged(type: 'fat16' | 'fat32'): Promise<Image> {
  const img = await image(type);
  const max = img.layout.clusterCount + 1;
  // A lost chain in both FATs, and one in the first FAT only (so the FATs differ too).
  setFat(img, max - 10, max - 9);
  setFat(img, max - 9, max - 8);
  setFat(img, max - 8, eoc(img));
  setFat(img, max - 20, eoc(img), [0]);
  // An orphaned long-name slot: the last piece of a name, followed by the end of /docs.
  const docs = firstCluster(img, 'DOCS       ');
  const slot = endSlot(img, docs);
  img.disk.bytes.set([0x41, 0x6f, 0, 0x72, 0, 0x70, 0, 0x68, 0, 0x61, 0, 0x0f, 0, 0x33], slot);
  // A second name for BASE.IMG's chain in /LiveOS (what a cut rename leaves).
  const base = entryAt(img, 'BASE    IMG');
  const liveos = firstCluster(img, 'LIVEOS     ');
  const copy = endSlot(img, liveos);
  img.disk.bytes.copyWithin(copy, base, base + 32);
  img.disk.bytes.set(Buffer.from('COPY    IMG', 'latin1'), copy);
  if (type === 'fat32') view(img).setUint32(512 + 488, 12345, true); // FSInfo's free count
  setDirty(img);
  return img;
}

for (const type of ['fat16', 'fat32'] as const) {
  describe(`FAT repair on open (${type})`, () => {
    test('dirty is the bit as found at open; a read-only open of a dirty volume changes nothing', async () => {
      const clean = await image(type);
      const fs = await FatFs.open(clean.disk);
      assert.equal(fs.dirty, false);
      assert.equal(fs.repaired, undefined);
      await fs.writeFile('/n', bytes(10, 1));
      assert.equal(fs.dirty, false, 'a change in this session does not make it "not closed cleanly"');
      await fs.close();
      const img = await damaged(type);
      const before = img.disk.bytes.slice();
      const ro = await FatFs.open(img.disk, { readOnly: true });
      assert.equal(ro.dirty, true);
      assert.equal(ro.repaired, undefined);
      await ro.close();
      assert.ok(Buffer.from(img.disk.bytes).equals(before), 'nothing written');
    });

    test('lost chains, FATs that differ, an orphaned long name and FSInfo are repaired; a second name is kept', async () => {
      const img = await damaged(type);
      const before = await listingOf(img.disk.bytes);
      assert.ok(before.some(([p]) => p === '/LiveOS/COPY.IMG'));
      if (!noFsck) {
        const cut = fsck(img.disk.bytes).out;
        for (const re of [/Reclaimed 4 unused clusters/, /FATs differ/, /Orphaned long file name part "orpha"/, /Dirty bit is set/, /share clusters/]) assert.match(cut, re);
        if (type === 'fat32') assert.match(cut, /Free cluster summary wrong \(12345 vs\. really/);
      }
      const fs = await FatFs.open(img.disk, { now: () => NOW });
      assert.equal(fs.dirty, true);
      assert.deepEqual(fs.repaired, { lostClusters: 4, fatSectorsCopied: 1, orphanSlots: 1, secondNames: 1 });
      await fs.close();
      const b = img.disk.bytes;
      assert.equal(dirtyBit(b, type), false, 'clean once closed');
      assert.deepEqual(await listingOf(b), before, 'every file reads back as before');
      const max = img.layout.clusterCount + 1;
      for (const c of [max - 10, max - 9, max - 8, max - 20]) assert.equal(getFat(img, c), 0, `cluster ${c} freed`);
      if (!noFsck) {
        const r = fsck(b);
        const rest = r.out
          .replace(/^fsck\.fat .*\n/m, '')
          .replace(/^\/LiveOS\/BASE\.IMG {2}and\n\/LiveOS\/COPY\.IMG\n {2}share clusters\.\n {2}Truncating second to 0 bytes\.\n\/LiveOS\/COPY\.IMG\n {2}File size is \d+ bytes, cluster chain length is 0 bytes\.\n {2}Truncating file to 0 bytes\.\n/m, '')
          .replace(/^Leaving filesystem unchanged\.\n/m, '')
          .replace(/^.*: \d+ files, \d+\/\d+ clusters\n/m, '');
        assert.equal(rest.trim(), '', r.out);
      }
      // Opened again for writing: clean, so nothing to repair.
      const again = await FatFs.open(img.disk);
      assert.equal(again.dirty, false);
      assert.equal(again.repaired, undefined);
      await again.close();
    });

    const refusals: [string, RegExp, (img: Image) => void][] = [
      [
        'a chain that loops',
        /BASE\.IMG: its cluster chain loops back to cluster \d+/,
        (img) => {
          const c = firstCluster(img, 'BASE    IMG');
          setFat(img, c + 4, c + 1);
        },
      ],
      [
        "a chain running into another directory's file (cross-linked)",
        /X\.TXT: cluster \d+ of its chain belongs to another chain too \(cross-linked\)/,
        (img) => {
          setFat(img, firstCluster(img, 'X       TXT') + 2, firstCluster(img, 'BASE    IMG') + 2);
        },
      ],
      [
        'a chain into a free cluster',
        /X\.TXT: cluster \d+ of its chain links to a free cluster/,
        (img) => {
          setFat(img, firstCluster(img, 'X       TXT') + 2, img.layout.clusterCount - 5);
        },
      ],
      [
        'a file longer than its chain',
        /BASE\.IMG: its chain of 2 clusters is shorter than its \d+ bytes/,
        (img) => {
          setFat(img, firstCluster(img, 'BASE    IMG') + 1, eoc(img));
          setFat(img, firstCluster(img, 'BASE    IMG') + 2, 0);
          setFat(img, firstCluster(img, 'BASE    IMG') + 3, 0);
          setFat(img, firstCluster(img, 'BASE    IMG') + 4, 0);
        },
      ],
      [
        'a directory inside itself',
        /directory \/docs\/loop is inside itself/,
        (img) => {
          const docs = firstCluster(img, 'DOCS       ');
          const at = endSlot(img, docs);
          img.disk.bytes.copyWithin(at, entryAt(img, 'DOCS       '), entryAt(img, 'DOCS       ') + 32);
          img.disk.bytes.set(Buffer.from('LOOP       ', 'latin1'), at);
        },
      ],
      [
        'a file and a directory naming one cluster',
        /Y\.TXT: a file and a directory name cluster \d+/,
        (img) => {
          const at = endSlot(img, firstCluster(img, 'DOCS       '));
          img.disk.bytes.copyWithin(at, entryAt(img, 'X       TXT'), entryAt(img, 'X       TXT') + 32);
          img.disk.bytes.set(Buffer.from('Y       TXT', 'latin1'), at);
          view(img).setUint16(at + 26, firstCluster(img, 'LIVEOS     ') & 0xffff, true);
          view(img).setUint16(at + 20, firstCluster(img, 'LIVEOS     ') >>> 16, true);
          view(img).setUint32(at + 28, 0, true);
        },
      ],
      [
        'an entry after the end marker',
        /directory \/docs: slot \d+ is in use after the end marker/,
        (img) => {
          const at = endSlot(img, firstCluster(img, 'DOCS       '));
          img.disk.bytes.copyWithin(at + 64, entryAt(img, 'X       TXT'), entryAt(img, 'X       TXT') + 32);
          img.disk.bytes.set(Buffer.from('HIDDEN  TXT', 'latin1'), at + 64);
        },
      ],
    ];
    for (const [name, reason, poke] of refusals) {
      test(`refused, nothing written: ${name}`, async () => {
        const img = await damaged(type);
        poke(img);
        const before = img.disk.bytes.slice();
        await assert.rejects(FatFs.open(img.disk), (err: unknown) => err instanceof FatRepairError && err.code === 'CORRUPT_IMAGE' && reason.test(err.message) && /nothing was changed/.test(err.message));
        assert.ok(Buffer.from(img.disk.bytes).equals(before), 'not one byte written');
        const ro = await FatFs.open(img.disk, { readOnly: true });
        assert.equal(ro.dirty, true, 'still dirty');
      });
    }
  });
}

describe('FAT: a failed write keeps the volume dirty', { skip: noFsck }, () => {
  for (const [what, errno, at] of [['a write (EIO)', 'EIO', 2], ['an fsync (EIO)', 'EIO', 0]] as const) {
    test(`${what} during a session: the dirty bit stays at close; the next open for writing repairs the rest`, async () => {
      const path = join(tmp.dir, `failed-${at}.img`);
      const img = await image('fat32');
      writeFileSync(path, img.disk.bytes);
      const disk = await FileDisk.open(path);
      const fs = await FatFs.open(disk, { now: () => NOW });
      const before = sorted(await fsListing(fs));
      if (at > 0) {
        // Points: the dirty bit (1), the new file's data (2), …
        const r = await withFaultPlan((p) => (p.index === at ? errno : undefined), () => fs.writeFile('/LiveOS/new.img', bytes(40_000, 9)));
        assert.ok(r.error !== undefined && !(r.error instanceof SimulatedCrash), String(r.error));
      } else {
        await fs.writeFile('/LiveOS/new.img', bytes(40_000, 9));
        const r = await withFaultPlan((p) => (p.op === 'fsync' ? errno : undefined), () => fs.flush());
        assert.ok(r.error !== undefined, 'the flush failed');
      }
      await fs.close();
      await disk.close();
      assert.equal(dirtyBit(readFileSync(path), 'fat32'), true, 'the dirty bit stays set');
      const reopened = await FileDisk.open(path);
      const again = await FatFs.open(reopened, { now: () => NOW });
      assert.equal(again.dirty, true);
      if (at > 0) assert.ok(again.repaired!.lostClusters > 0, 'the failed writeFile left lost clusters');
      await again.close();
      await reopened.close();
      const b = readFileSync(path);
      assert.equal(dirtyBit(b, 'fat32'), false);
      const after = await listingOf(b);
      if (at > 0) assert.deepEqual(after, before);
      else assert.deepEqual(after.filter(([p]) => p !== '/LiveOS/new.img'), before);
      const r = fsck(b);
      assert.equal(r.status, 0, r.out);
    });
  }
});

describe('FAT: a repair cut at any of its writes', { skip: noFsck }, () => {
  for (const type of ['fat16', 'fat32'] as const) {
    test(`${type}: is finished by the next open`, async () => {
      const path = join(tmp.dir, `cut-repair-${type}.img`);
      const img = await damaged(type);
      const start = img.disk.bytes.slice();
      const before = await listingOf(start);
      const repair = async (): Promise<void> => {
        const disk = await FileDisk.open(path);
        try {
          await (await FatFs.open(disk, { now: () => NOW })).close();
        } finally {
          await disk.close();
        }
      };
      writeFileSync(path, start);
      const { points } = await tracePoints(repair);
      assert.ok(points.length >= 6, `${points.length} points`);
      for (let k = 1; k <= points.length; k++) {
        const where = `crash at point ${k} of ${points.length} (${points[k - 1]!.op})`;
        writeFileSync(path, start);
        const r = await withFaultPlan((p) => (p.index === k ? 'crash' : undefined), repair);
        assert.ok(r.error instanceof SimulatedCrash, `${where}: ${String(r.error)}`);
        assert.deepEqual(await listingOf(readFileSync(path)), before, `${where}: files unchanged`);
        await repair();
        const b = readFileSync(path);
        assert.equal(dirtyBit(b, type), false, where);
        assert.deepEqual(await listingOf(b), before, `${where}: files unchanged after the second repair`);
        const out = fsck(b).out;
        assert.doesNotMatch(out, /Reclaimed|FATs differ|Orphaned|Dirty bit|differences between boot sector/, `${where}: ${out}`);
      }
    });
  }
});
