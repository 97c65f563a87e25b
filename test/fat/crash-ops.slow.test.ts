/**
 * Power loss inside rename, unlink and resize, at every fault point (src/io/faults.ts: each write and
 * fsync FileDisk issues, the volume's close included), on FAT12, FAT16 and FAT32 images in host files. For each
 * point the operation runs on a fresh copy of the image and crashes there (that write and everything
 * after it never happen); then:
 *   - the image opens and every file reads (a chain freed while named would link to a free cluster);
 *   - the tree is exactly the old one or the new one, or — inside a rename — the new one plus the old
 *     name still naming the same data;
 *   - fsck.fat -n reports nothing but the dirty bit, FATs differing, the free count and lost clusters;
 *     in the both-names state of a rename also the two names sharing a chain (and, for a directory
 *     moved to another parent, its '..' naming one of the two), inside a resize a chain longer than
 *     the size (the clusters past it are lost space; fsck.fat truncates the chain);
 *   - the volume, dirty after the cut, opened for writing (which repairs it: repair.ts) and closed on a
 *     copy: every named file reads back exactly as before, the dirty bit is clear, and fsck.fat -n finds
 *     nothing it would repair (no lost clusters, FAT copies alike, free count right, no orphaned long
 *     name, no dirty bit) — only the states repeating the operation finishes (two names sharing a
 *     chain, a '..' naming the other parent of a moved directory, a chain longer than the size);
 *   - the same operation repeated on the cut image (rename/unlink while the old name is still there;
 *     resize always; a new name while it is missing; otherwise the volume opened for writing and closed,
 *     as the next command does with a dirty one) leaves exactly the new tree, and fsck.fat -n then exits
 *     0 with nothing to report.
 * One case starts from two names sharing a chain (a rename cut in the middle) and unlinks one of them:
 * the other keeps its data. One creates a file (deferred clearing), writes part of it and closes it: a
 * cut leaves no file, the finished file, or the new name empty (its clusters lost) — never another
 * file's old bytes; removing the empty file and creating it again completes it. FAT32 cases with large
 * files cross the FAT's 64 KiB chunks (a createFile written whole, a grow and a shrink), and a new long
 * name and its unlink straddle two directory clusters (cuts leave orphaned long-name slots). Each case
 * names the repairs some cut must need. The suite counts the crash points it covered.
 */
import '../helpers/setup.ts';
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, openSync, readFileSync, readSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { FileDisk } from '../../src/io/disk.ts';
import { SimulatedCrash, tracePoints, withFaultPlan } from '../../src/io/faults.ts';
import { FatFs, mkfsFat, type FatRepairReport, type FatType } from '../../src/fs/fat/index.ts';
import { missingTools, run } from '../helpers/tools.ts';
import { tempDir } from '../helpers/tmp.ts';
import { dataBlocks, fsListing, sha, sorted, writeSparse } from './fixtures.ts';

const MiB = 2 ** 20;
const NOW = 1_750_000_000_000;
const bytes = (n: number, seed: number): Uint8Array => new Uint8Array(n).map((_, i) => (i * seed + (i >> 9) + 1) & 0xff);

type Listing = Map<string, string>;

interface Case {
  readonly name: string;
  /** Extra preparation on the base image (may use fault points itself). */
  readonly setup?: (fs: FatFs) => Promise<void>;
  readonly op: (fs: FatFs) => Promise<void>;
  /** 'add': a new name written in one go (writeFile): the old tree or the new one; repeated while missing. */
  readonly kind: 'rename' | 'unlink' | 'resize' | 'create' | 'add';
  /** rename: the source path (for the "both names" state and the repeat); unlink, create, add: the path. */
  readonly from?: string;
  /** Only on these types (default both). */
  readonly types?: readonly FatType[];
  /** What the repair of some cut must have had to do. */
  readonly repairs?: readonly (keyof Omit<FatRepairReport, 'secondNames'>)[];
  /** The starting tree already has two names for one chain (the old tree may show them sharing). */
  readonly startsShared?: boolean;
  /** Some cut must leave a chain longer than the size (the FAT written, the entry not yet, or back). */
  readonly overlong?: boolean;
}

async function resizeTo(fs: FatFs, path: string, size: number): Promise<void> {
  const f = await fs.openFileForWriting(path);
  await f.resize(size);
}

/** A file created and written whole in `piece`-byte writes (deferred clearing: nothing to clear). */
async function createWritten(fs: FatFs, path: string, size: number, seed: number, piece = MiB): Promise<void> {
  const f = await fs.createFile(path, { size });
  const data = bytes(size, seed);
  for (let at = 0; at < size; at += piece) await f.write(data.subarray(at, Math.min(size, at + piece)), at);
  await f.close();
}

/** Setup: a large file, closed cleanly. */
const withLarge = (size: number) => async (fs: FatFs): Promise<void> => {
  await createWritten(fs, '/LiveOS/large.img', size, 41, 3 * MiB);
  await fs.close();
};

/**
 * Setup: /docs filled with plain 8.3 names until one slot is left in its first cluster, so a new entry
 * of four slots (three long-name slots and the short one) straddles the end of that cluster.
 */
const STRADDLER = '/docs/a long name straddling clusters.txt';
const fillDocs = (andStraddler: boolean) => async (fs: FatFs): Promise<void> => {
  const perCluster = fs.layout.clusterSize / 32;
  // '.', '..', 'read me.txt' (one long-name slot and the short one) and 'notes' take five slots.
  for (let i = 0; i < perCluster - 1 - 5; i++) await fs.writeFile(`/docs/F${i}`, bytes(1, i));
  if (andStraddler) await fs.writeFile(STRADDLER, bytes(1500, 43));
  await fs.close();
};

const CASES: Case[] = [
  { name: 'rename to a new long name in one directory', kind: 'rename', from: '/LiveOS/old name with a long name.img', op: (fs) => fs.rename('/LiveOS/old name with a long name.img', '/LiveOS/new name, also a long one.img') },
  { name: 'rename onto another file (the image switch)', kind: 'rename', from: '/LiveOS/squashfs.new', op: (fs) => fs.rename('/LiveOS/squashfs.new', '/LiveOS/squashfs.img') },
  { name: 'rename changing only the case', kind: 'rename', from: '/LiveOS/overlay-LIVE-1234', op: (fs) => fs.rename('/LiveOS/overlay-LIVE-1234', '/LiveOS/OVERLAY-live-1234') },
  { name: 'rename into another directory', kind: 'rename', from: '/docs/read me.txt', op: (fs) => fs.rename('/docs/read me.txt', '/LiveOS/README') },
  { name: 'rename a directory into another one', kind: 'rename', from: '/docs', op: (fs) => fs.rename('/docs', '/LiveOS/docs') },
  { name: 'unlink', kind: 'unlink', from: '/LiveOS/old name with a long name.img', op: (fs) => fs.unlink('/LiveOS/old name with a long name.img') },
  {
    name: 'unlink one of two names a cut rename left for one chain',
    kind: 'unlink',
    from: '/LiveOS/squashfs.img',
    startsShared: true,
    setup: async (fs) => {
      // Crash the rename right after its new entry (points: dirty bit, new entry, old entry deleted …).
      const r = await withFaultPlan((p) => (p.index === 3 ? 'crash' : undefined), () => fs.rename('/LiveOS/squashfs.img', '/LiveOS/squashfs copy.img'));
      assert.ok(r.error instanceof SimulatedCrash, String(r.error));
    },
    op: (fs) => fs.unlink('/LiveOS/squashfs.img'),
  },
  { name: 'grow in place', kind: 'resize', overlong: true, op: (fs) => resizeTo(fs, '/grow.img', 40_000) },
  { name: 'grow around another file', kind: 'resize', overlong: true, op: (fs) => resizeTo(fs, '/blocked.img', 30_000) },
  { name: 'shrink', kind: 'resize', overlong: true, op: (fs) => resizeTo(fs, '/grow.img', 1500) },
  {
    name: 'createFile written in part, then closed (deferred clearing)',
    kind: 'create',
    from: '/LiveOS/overlay-NEW',
    op: async (fs) => {
      const f = await fs.createFile('/LiveOS/overlay-NEW', { size: 12_000 });
      await f.write(bytes(3000, 37), 4000);
      await f.close();
    },
  },
  { name: 'shrink to nothing', kind: 'resize', op: (fs) => resizeTo(fs, '/blocked.img', 0) },
  {
    name: 'createFile of a large file across FAT chunks, written whole',
    kind: 'create',
    types: ['fat32'],
    from: '/LiveOS/large.img',
    repairs: ['lostClusters', 'fatSectorsCopied'],
    op: (fs) => createWritten(fs, '/LiveOS/large.img', 9 * MiB, 41, 3 * MiB),
  },
  { name: 'grow a large file across FAT chunks', kind: 'resize', overlong: true, types: ['fat32'], repairs: ['lostClusters', 'fatSectorsCopied'], setup: withLarge(6 * MiB), op: (fs) => resizeTo(fs, '/LiveOS/large.img', 12 * MiB + 5) },
  { name: 'shrink a large file across FAT chunks', kind: 'resize', overlong: true, types: ['fat32'], repairs: ['lostClusters', 'fatSectorsCopied'], setup: withLarge(12 * MiB), op: (fs) => resizeTo(fs, '/LiveOS/large.img', 3 * MiB - 7) },
  { name: 'a new long name straddling two directory clusters', kind: 'add', from: STRADDLER, repairs: ['orphanSlots', 'lostClusters', 'fatSectorsCopied'], setup: fillDocs(false), op: (fs) => fs.writeFile(STRADDLER, bytes(1500, 43)) },
  { name: 'unlink a long name straddling two directory clusters', kind: 'unlink', from: STRADDLER, repairs: ['orphanSlots', 'lostClusters', 'fatSectorsCopied'], setup: fillDocs(true), op: (fs) => fs.unlink(STRADDLER) },
];

async function baseImage(type: FatType, size: number): Promise<Uint8Array> {
  const tmp = tempDir('livestick-fat-crashops-base-');
  try {
    const path = join(tmp.dir, 'base.img');
    const disk = await FileDisk.open(path, { create: { size } });
    await mkfsFat(disk, { type, serial: 0x0c0ffee0, now: NOW });
    const fs = await FatFs.open(disk, { now: () => NOW });
    await fs.mkdir('/LiveOS');
    await fs.mkdir('/docs');
    await fs.writeFile('/LiveOS/squashfs.img', bytes(20_000, 3));
    await fs.writeFile('/LiveOS/squashfs.new', bytes(26_000, 5));
    await fs.writeFile('/LiveOS/overlay-LIVE-1234', bytes(3000, 7));
    await fs.writeFile('/LiveOS/old name with a long name.img', bytes(9000, 11));
    await fs.writeFile('/docs/read me.txt', bytes(700, 13));
    await fs.writeFile('/docs/notes', bytes(5, 17));
    const grow = await fs.createFile('/grow.img', { size: 5000 });
    await grow.write(bytes(5000, 19), 0);
    const blocked = await fs.createFile('/blocked.img', { size: 3000 });
    await blocked.write(bytes(3000, 23), 0);
    await fs.writeFile('/blocker', bytes(100, 29)); // right after /blocked.img: its growth must go around
    await fs.close();
    await disk.close();
    return readFileSync(path);
  } finally {
    tmp.cleanup();
  }
}

interface Fsck {
  /** What is left after the benign reports are taken out (must be empty). */
  rest: string;
  shared: boolean;
  overlong: boolean;
  /** A directory's '..' naming another parent (a directory moved: both names, one parent). */
  dotdot: boolean;
  /** The benign reports the repair on open must leave nothing of. */
  repairable: string[];
  status: number;
}

/** fsck.fat -n, its benign reports (dirty bit and its missing copy in the backup boot sector, FATs differing, the free count, lost clusters, orphaned long-name slots) taken out and listed. */
function fsck(img: string): Fsck {
  const r = run('fsck.fat', ['-n', img], { allowFail: true });
  let out = r.stdout;
  const take = (re: RegExp): boolean => {
    const had = re.test(out);
    out = out.replace(re, '');
    return had;
  };
  const repairable: string[] = [];
  const benign = (name: string, re: RegExp): void => {
    if (take(re)) repairable.push(name);
  };
  take(/^fsck\.fat .*\n/m);
  benign('backup boot sector', /^There are differences between boot sector and its backup\.\nThis is mostly harmless\. Differences: \(offset:original\/backup\)\n {2}65:01\/00\n {2}Not automatically fixing this\.\n/m);
  benign('dirty bit', /^Dirty bit is set\. .*\n Automatically removing dirty bit\.\n/m);
  benign('FATs differ', /^FATs differ but appear to be intact\.\n {2}Using first FAT\.\n/m);
  benign('free count', /^Free cluster summary wrong .*\n {2}Auto-correcting\.\n/m);
  benign('lost clusters', /^Reclaimed \d+ unused clusters? \(\d+ bytes\)( in \d+ chains?)?\.\n/m);
  benign('orphaned long name', /^Orphaned long file name part ".*"\n {2}Auto-deleting\.\n/gm);
  take(/^Leaving filesystem unchanged\.\n/m);
  take(/^.*: \d+ files, \d+\/\d+ clusters\n/m);
  const overlong = take(/^\/.*\n {2}File size is (\d+) bytes, cluster chain length is > \d+ bytes\.\n {2}Truncating file to \1 bytes\.\n/gm);
  const shared = take(/^\/.* {2}and\n\/.*\n {2}share clusters\.\n {2}Truncating second to \d+ bytes\.\n(\/.*\n {2}File size is \d+ bytes, cluster chain length is \d+ bytes\.\n {2}Truncating file to \d+ bytes\.\n)?/gm);
  const dotdot = take(/^\/.*\n {2}Invalid '\.\.' entry in the second slot\. Fixing\.\n/gm);
  return { rest: out.replace(/^\s*$/gm, '').trim(), shared, overlong, dotdot, repairable, status: r.status };
}

const CLEAN: Fsck = { rest: '', shared: false, overlong: false, dotdot: false, repairable: [], status: 0 };

/** `length` bytes of a file at `offset`. */
function readPart(path: string, offset: number, length: number): Buffer {
  const fd = openSync(path, 'r');
  try {
    const b = Buffer.alloc(length);
    readSync(fd, b, 0, length, offset);
    return b;
  } finally {
    closeSync(fd);
  }
}

/** The boot sector's dirty bit, read from the image. */
function dirtyBit(img: string, type: FatType): boolean {
  return (readPart(img, 0, 512)[type === 'fat32' ? 65 : 37]! & 1) !== 0;
}

/** Whether every FAT copy equals the first, read from the image. */
function fatCopiesEqual(img: string, fs: FatFs): boolean {
  const { fatOffset, fatBytes, numFats } = fs.layout;
  const b = readPart(img, fatOffset, numFats * fatBytes);
  const first = b.subarray(0, fatBytes);
  for (let k = 1; k < numFats; k++) if (!first.equals(b.subarray(k * fatBytes, (k + 1) * fatBytes))) return false;
  return true;
}

const same = (a: Listing, b: Listing): boolean => JSON.stringify(sorted(a)) === JSON.stringify(sorted(b));

async function listing(path: string): Promise<Listing> {
  const disk = await FileDisk.open(path, { readOnly: true });
  try {
    return await fsListing(await FatFs.open(disk));
  } finally {
    await disk.close();
  }
}

describe('FAT rename, unlink and resize cut at every write', { skip: missingTools('fsck.fat') }, () => {
  const tmp = tempDir('livestick-fat-crashops-');
  after(() => tmp.cleanup());
  let covered = 0;
  after(() => console.log(`# FAT crash points covered: ${covered}`));

  // (An 8 MiB volume made 'fat16' has too few clusters for FAT16: every reader takes it for FAT12, and
  // the FAT16 header's fourth byte reads as an allocated cluster 2. So FAT12 there, FAT16 at 16 MiB.)
  for (const [type, size] of [['fat12', 8 * MiB], ['fat16', 16 * MiB], ['fat32', 34 * MiB]] as const) {
    for (const c of CASES.filter((x) => !x.types || x.types.includes(type))) {
      test(`${type}: ${c.name}`, async () => {
        const img = join(tmp.dir, `${type}.img`);
        let base = await baseImage(type, size);
        if (c.setup) {
          writeSparse(img, base);
          const disk = await FileDisk.open(img);
          await c.setup(await FatFs.open(disk, { now: () => NOW }));
          await disk.close();
          base = readFileSync(img);
        }
        const blocks = dataBlocks(base);
        writeSparse(img, base, blocks);
        const before = await listing(img);
        if (c.startsShared) assert.ok(before.has('/LiveOS/squashfs.img') && before.get('/LiveOS/squashfs copy.img') === before.get('/LiveOS/squashfs.img'), 'two names for one chain to start with');
        // The new tree, and the points the operation reaches (its writes, fsyncs and the close).
        const runOp = async (): Promise<void> => {
          const disk = await FileDisk.open(img);
          try {
            const fs = await FatFs.open(disk, { now: () => NOW + 4000 });
            await c.op(fs);
            await fs.close();
          } finally {
            await disk.close();
          }
        };
        const { points } = await tracePoints(runOp);
        const afterTree = await listing(img);
        assert.ok(!same(before, afterTree), 'the operation changes the tree');
        assert.deepEqual(fsck(img), CLEAN, 'uncut: clean');
        const from = c.from;
        const both = new Map(afterTree);
        if (c.kind === 'rename') for (const [p, h] of before) if (p === from || p.startsWith(`${from}/`)) both.set(p, h);
        // A cut createFile leaves the new name empty (its clusters lost), never a deleted file's bytes.
        const empty = new Map(before);
        if (c.kind === 'create') empty.set(from!, sha(new Uint8Array(0)));
        assert.ok(points.length >= 3, `${points.length} points`);
        let sawBoth = 0;
        let sawOverlong = 0;
        const needed = { lostClusters: 0, fatSectorsCopied: 0, orphanSlots: 0 };
        const copy = join(tmp.dir, `${type}.repaired.img`);
        for (let k = 1; k <= points.length; k++) {
          const where = `crash at point ${k} of ${points.length} (${points[k - 1]!.op})`;
          writeSparse(img, base, blocks);
          const r = await withFaultPlan((p) => (p.index === k ? 'crash' : undefined), runOp);
          assert.ok(r.error instanceof SimulatedCrash, `${where}: ${String(r.error)}`);
          covered++;
          const seen = await listing(img);
          const isBoth = c.kind === 'rename' && same(seen, both);
          const isEmpty = c.kind === 'create' && same(seen, empty);
          assert.ok(same(seen, before) || same(seen, afterTree) || isBoth || isEmpty, `${where}: neither the old tree, nor the new one, nor both names:\n${JSON.stringify(sorted(seen))}`);
          const cut = fsck(img);
          assert.equal(cut.rest, '', `${where}: fsck.fat -n`);
          if (cut.shared) assert.ok(isBoth || (c.startsShared && same(seen, before)), `${where}: two entries share a chain outside the both-names state`);
          if (cut.dotdot) assert.ok(isBoth, `${where}: a wrong '..' outside the both-names state of a directory move`);
          if (cut.overlong) assert.equal(c.kind, 'resize', `${where}: an overlong chain outside a resize`);
          if (isBoth || isEmpty) sawBoth++;
          if (cut.overlong) sawOverlong++;
          // The repair: a copy of the cut image opened for writing (the cut left it dirty) and closed.
          if (dirtyBit(img, type)) {
            run('cp', ['--sparse=always', img, copy]);
            const disk = await FileDisk.open(copy);
            const fs = await FatFs.open(disk, { now: () => NOW + 8000 });
            assert.ok(fs.dirty, `${where}: the cut volume is dirty`);
            const report = fs.repaired;
            assert.ok(report, `${where}: the open repaired it`);
            await fs.close();
            await disk.close();
            for (const key of Object.keys(needed) as (keyof typeof needed)[]) needed[key] += report[key];
            assert.deepEqual(sorted(await listing(copy)), sorted(seen), `${where}: every file reads back as before the repair`);
            assert.equal(dirtyBit(copy, type), false, `${where}: clean after the repair`);
            assert.ok(fatCopiesEqual(copy, fs), `${where}: the FAT copies are equal after the repair`);
            const fixed = fsck(copy);
            assert.equal(fixed.rest, '', `${where}: fsck.fat -n after the repair`);
            // (fsck.fat's truncation of a shared or overlong chain frees clusters in its own count: the free
            // count it then expects differs from the volume's, which counts them used, as they are.)
            const consequent = fixed.shared || fixed.overlong ? ['free count'] : [];
            assert.deepEqual(fixed.repairable.filter((x) => !consequent.includes(x)), [], `${where}: fsck.fat -n finds nothing the repair should have done`);
            assert.ok(!fixed.shared || cut.shared, `${where}: shared chains after the repair only where the cut left them`);
            assert.ok(!fixed.overlong || cut.overlong, `${where}: an overlong chain after the repair only where the cut left it`);
            if (!fixed.shared && !fixed.overlong && !fixed.dotdot) assert.equal(fixed.status, 0, `${where}: fsck.fat -n exits 0 after the repair`);
            rmSync(copy, { force: true });
          }
          // Repeat the operation where it is not visibly done.
          const pending = c.kind === 'resize' || (c.kind === 'create' || c.kind === 'add' ? !same(seen, afterTree) : from !== undefined && seen.has(from));
          if (isEmpty) {
            // What a caller does with a half-created file: remove it and create it again.
            const disk = await FileDisk.open(img);
            const fs = await FatFs.open(disk, { now: () => NOW + 4000 });
            await fs.unlink(from!);
            await fs.close();
            await disk.close();
          }
          if (pending) await runOp();
          else if (dirtyBit(img, type)) {
            // Done already, but the cut left the volume dirty: the next command opens it for writing (as
            // the medium layer does with a dirty volume), and that open repairs it.
            const disk = await FileDisk.open(img);
            await (await FatFs.open(disk, { now: () => NOW + 4000 })).close();
            await disk.close();
          }
          assert.deepEqual(sorted(await listing(img)), sorted(afterTree), `${where}: repeating the operation completes it`);
          const done = fsck(img);
          assert.deepEqual(done, CLEAN, `${where}: fsck.fat -n after the repeat`);
        }
        if (c.kind === 'rename' || c.kind === 'create') assert.ok(sawBoth > 0, 'some cut leaves the in-between state (both names; an empty new file)');
        if (c.overlong) assert.ok(sawOverlong > 0, 'some cut leaves a chain longer than the size');
        for (const key of c.repairs ?? []) assert.ok(needed[key] > 0, `some cut needs the repair's ${key}: ${JSON.stringify(needed)}`);
      });
    }
  }
});
