// Power loss inside rename, unlink and resize on exFAT, at every fault point (src/io/faults.ts: each
// write and fsync FileDisk issues, the volume's flush on close included), on an image in a host file.
// For each point the operation runs on a fresh copy of the image and crashes there; then:
//   - the volume opens and every file reads;
//   - the tree is exactly the old one or the new one, or — inside a rename — the new one plus the old
//     name still naming the same data;
//   - verify() reports at most lost clusters (and, in the both-names state, the two names' clusters
//     used twice), so no file's clusters were freed while named;
//   - fsck.exfat -n is clean, or reports only the two names sharing clusters (both-names state) or, inside
//     a resize of a chained file, a chain longer than the size ("more clusters are allocated");
//   - the volume, dirty after the cut, opened for writing (which repairs it) and closed on a copy: the
//     same tree with the same bytes, VolumeDirty clear, verify() clean but for the two names of the
//     both-names state, fsck.exfat -n clean or reporting only those two names;
//   - the same operation repeated (rename/unlink while the old name is there; resize always; a new file
//     while it is missing; otherwise the volume opened for writing and closed, as the next command does
//     with a dirty one) leaves exactly the new tree, verify() clean (no lost clusters either), and
//     fsck.exfat -n clean.
// One case starts from two names sharing clusters (a rename cut in the middle) and unlinks one: the other
// keeps its data. Two cut a large file: a createFile of most of the volume, and its growth in place.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, openSync, readFileSync, readSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import '../helpers/setup.ts';
import { FileDisk } from '../../src/io/disk.ts';
import { SimulatedCrash, tracePoints, withFaultPlan } from '../../src/io/faults.ts';
import { ExfatFs, mkfsExfat } from '../../src/fs/exfat/index.ts';
import { missingTools, run } from '../helpers/tools.ts';
import { tempDir } from '../helpers/tmp.ts';
import { dataBlocks, fsListing, sha, sorted, writeSparse } from '../fat/fixtures.ts';

const FIXED = Date.UTC(2026, 0, 2, 3, 4, 5, 670);
const bytes = (n: number, seed: number): Uint8Array => new Uint8Array(n).map((_, i) => (i * seed + (i >> 9) + 1) & 0xff);

type Listing = Map<string, string>;

interface Case {
  readonly name: string;
  readonly setup?: (fs: ExfatFs) => Promise<void>;
  readonly op: (fs: ExfatFs) => Promise<void>;
  /**
   * 'create': a new file (createFile, then written): the old tree, the new one, or the new name written
   * in part (createFile zeroed it and gave it its size first); repeated (after removing a part-written
   * one) while not done.
   */
  readonly kind: 'rename' | 'unlink' | 'resize' | 'create';
  readonly from?: string;
  readonly startsShared?: boolean;
  /** Some cut must leave a chain longer than the size (the FAT written, the entry not yet, or back). */
  readonly overlong?: boolean;
  /** What the repair of some cut must have had to do. */
  readonly repairs?: readonly ('lostClusters' | 'chainsEnded')[];
  /** create: the contents the new file may hold after a cut (its hashes). */
  readonly partial?: () => string[];
}

async function resizeTo(fs: ExfatFs, path: string, size: number): Promise<void> {
  const f = await fs.openFileForWriting(path);
  await f.resize(size);
  await f.close();
}

const CS = 4096;

/** A file created and written whole in 1 MiB writes. */
async function createWritten(fs: ExfatFs, path: string, size: number, seed: number): Promise<void> {
  const f = await fs.createFile(path, { size });
  const data = bytes(size, seed);
  for (let at = 0; at < size; at += 1 << 20) await f.write(data.subarray(at, Math.min(size, at + (1 << 20))), at);
  await f.close();
}

const CASES: Case[] = [
  { name: 'rename to a new long name in one directory', kind: 'rename', from: '/LiveOS/old name with a long name.img', op: (fs) => fs.rename('/LiveOS/old name with a long name.img', '/LiveOS/new name, also a long one.img') },
  { name: 'rename onto another file (the image switch)', kind: 'rename', from: '/LiveOS/squashfs.new', op: (fs) => fs.rename('/LiveOS/squashfs.new', '/LiveOS/squashfs.img') },
  { name: 'rename changing only the case', kind: 'rename', from: '/LiveOS/overlay-LIVE-1234', op: (fs) => fs.rename('/LiveOS/overlay-LIVE-1234', '/LiveOS/OVERLAY-live-1234') },
  { name: 'rename into another directory', kind: 'rename', from: '/docs/read me.txt', op: (fs) => fs.rename('/docs/read me.txt', '/LiveOS/README') },
  { name: 'rename a directory into another one', kind: 'rename', from: '/docs', op: (fs) => fs.rename('/docs', '/LiveOS/docs') },
  { name: 'unlink', kind: 'unlink', from: '/LiveOS/old name with a long name.img', op: (fs) => fs.unlink('/LiveOS/old name with a long name.img') },
  {
    name: 'unlink one of two names a cut rename left for one file',
    kind: 'unlink',
    from: '/LiveOS/squashfs.img',
    startsShared: true,
    setup: async (fs) => {
      // Points: VolumeDirty (two writes, fsync), the new set, the old set deleted: cut before the last.
      const r = await withFaultPlan((p) => (p.index === 5 ? 'crash' : undefined), () => fs.rename('/LiveOS/squashfs.img', '/LiveOS/squashfs copy.img'));
      assert.ok(r.error instanceof SimulatedCrash, String(r.error));
    },
    op: (fs) => fs.unlink('/LiveOS/squashfs.img'),
  },
  { name: 'grow in place (NoFatChain)', kind: 'resize', op: (fs) => resizeTo(fs, '/grow.img', 9 * CS + 5) },
  { name: 'grow around another file (NoFatChain to a chain)', kind: 'resize', op: (fs) => resizeTo(fs, '/blocked.img', 6 * CS) },
  { name: 'grow a chained file', kind: 'resize', overlong: true, repairs: ['lostClusters', 'chainsEnded'], op: (fs) => resizeTo(fs, '/chained.img', 9 * CS) },
  { name: 'shrink a chained file', kind: 'resize', overlong: true, repairs: ['lostClusters', 'chainsEnded'], op: (fs) => resizeTo(fs, '/chained.img', CS + 1) },
  { name: 'shrink to nothing', kind: 'resize', repairs: ['lostClusters'], op: (fs) => resizeTo(fs, '/grow.img', 0) },
  {
    name: 'createFile of a large file, written whole',
    kind: 'create',
    from: '/LiveOS/large.img',
    repairs: ['lostClusters'],
    partial: () => {
      const data = bytes(5 << 20, 41);
      return Array.from({ length: 5 }, (_, k) => sha(Buffer.concat([data.subarray(0, k << 20), new Uint8Array((5 - k) << 20)])));
    },
    op: (fs) => createWritten(fs, '/LiveOS/large.img', 5 << 20, 41),
  },
  {
    name: 'grow a large file in place',
    kind: 'resize',
    repairs: ['lostClusters'],
    setup: async (fs) => {
      await resizeTo(fs, '/grow.img', 2 << 20); // the last file: room after it
      await fs.close();
    },
    op: (fs) => resizeTo(fs, '/grow.img', (5 << 20) + 3),
  },
];

async function baseImage(): Promise<Uint8Array> {
  const tmp = tempDir('livestick-exfat-crashops-base-');
  try {
    const path = join(tmp.dir, 'base.img');
    const disk = await FileDisk.open(path, { create: { size: 8 << 20 } });
    await mkfsExfat(disk, { label: 'CRASH', serial: 0x0c0ffee0 });
    const fs = await ExfatFs.open(disk, { now: () => FIXED });
    assert.equal(fs.clusterSize, CS);
    await fs.mkdir('/LiveOS');
    await fs.mkdir('/docs');
    await fs.writeFile('/LiveOS/squashfs.img', bytes(20_000, 3));
    await fs.writeFile('/LiveOS/squashfs.new', bytes(26_000, 5));
    await fs.writeFile('/LiveOS/overlay-LIVE-1234', bytes(3000, 7));
    await fs.writeFile('/LiveOS/old name with a long name.img', bytes(9000, 11));
    await fs.writeFile('/docs/read me.txt', bytes(700, 13));
    await fs.writeFile('/docs/notes', bytes(5, 17));
    const create = async (name: string, size: number, seed: number): Promise<void> => {
      const f = await fs.createFile(name, { size });
      await f.write(bytes(size, seed), 0);
      await f.close();
    };
    await create('/blocked.img', 2 * CS + 100, 23);
    await fs.writeFile('/blocked.img.after', bytes(100, 24)); // right after it: its growth must go around
    await create('/chained.img', 2 * CS, 31);
    await fs.writeFile('/chained.img.after', bytes(100, 32));
    await resizeTo(fs, '/chained.img', 4 * CS); // around its neighbour: a FAT chain
    await create('/grow.img', 3 * CS + 7, 19); // last: free clusters after it
    await fs.close();
    await disk.close();
    return readFileSync(path);
  } finally {
    tmp.cleanup();
  }
}

interface Fsck {
  rest: string;
  shared: boolean;
  overlong: boolean;
}

const CLEAN: Fsck = { rest: '', shared: false, overlong: false };

function fsck(img: string): Fsck {
  const r = run('fsck.exfat', ['-n', img], { allowFail: true });
  let out = r.stdout + r.stderr;
  const take = (re: RegExp): boolean => {
    const had = re.test(out);
    out = out.replace(re, '');
    return had;
  };
  take(/^exfatprogs version : .*\n/m);
  const shared = take(/^ERROR: \/.*: cluster is already allocated for the other file\. truncated to \d+ bytes at 0x[0-9a-f]+\. Truncate \(y\/N\)\? n\n/gm);
  const overlong = take(/^ERROR: \/.*: more clusters are allocated\. truncate to \d+ bytes at 0x[0-9a-f]+\. Truncate \(y\/N\)\? n\n/gm);
  if (!take(/^.*: clean\. directories \d+, files \d+\n/m) && (shared || overlong)) {
    take(/^.*: corrupted\. directories \d+, files \d+\n.*: files corrupted \d+, files fixed 0\n/m);
  }
  return { rest: out.replace(/^\s*$/gm, '').trim(), shared, overlong };
}

const same = (a: Listing, b: Listing): boolean => JSON.stringify(sorted(a)) === JSON.stringify(sorted(b));

/** VolumeDirty, read from the image's main boot sector. */
function volumeDirty(img: string): boolean {
  const fd = openSync(img, 'r');
  try {
    const b = Buffer.alloc(2);
    readSync(fd, b, 0, 2, 106);
    return (b.readUInt16LE(0) & 2) !== 0;
  } finally {
    closeSync(fd);
  }
}

async function inspect(path: string): Promise<{ tree: Listing; problems: string[] }> {
  const disk = await FileDisk.open(path, { readOnly: true });
  try {
    const fs = await ExfatFs.open(disk);
    return { tree: await fsListing(fs), problems: await fs.verify() };
  } finally {
    await disk.close();
  }
}

describe('exFAT rename, unlink and resize cut at every write', { skip: missingTools('fsck.exfat') }, () => {
  const tmp = tempDir('livestick-exfat-crashops-');
  after(() => tmp.cleanup());
  let covered = 0;
  after(() => console.log(`# exFAT crash points covered: ${covered}`));
  let pristine: Uint8Array | undefined;

  for (const c of CASES) {
    test(c.name, async () => {
      const img = join(tmp.dir, 'v.img');
      pristine ??= await baseImage();
      let base = pristine;
      if (c.setup) {
        writeSparse(img, base);
        const disk = await FileDisk.open(img);
        await c.setup(await ExfatFs.open(disk, { now: () => FIXED }));
        await disk.close();
        base = readFileSync(img);
      }
      const blocks = dataBlocks(base);
      writeSparse(img, base, blocks);
      const before = await inspect(img);
      if (c.startsShared) assert.equal(before.tree.get('/LiveOS/squashfs copy.img'), before.tree.get('/LiveOS/squashfs.img'), 'two names for one file to start with');
      const runOp = async (): Promise<void> => {
        const disk = await FileDisk.open(img);
        try {
          const fs = await ExfatFs.open(disk, { now: () => FIXED + 4000 });
          await c.op(fs);
          await fs.close();
        } finally {
          await disk.close();
        }
      };
      const { points } = await tracePoints(runOp);
      const done = await inspect(img);
      assert.ok(!same(before.tree, done.tree), 'the operation changes the tree');
      assert.deepEqual(done.problems, [], 'uncut: verify() is clean');
      assert.deepEqual(fsck(img), CLEAN, 'uncut: fsck.exfat clean');
      const from = c.from;
      const both = new Map(done.tree);
      if (c.kind === 'rename') for (const [p, h] of before.tree) if (p === from || p.startsWith(`${from}/`)) both.set(p, h);
      assert.ok(points.length >= 4, `${points.length} points`);
      let sawBoth = 0;
      let sawOverlong = 0;
      const needed = { lostClusters: 0, chainsEnded: 0 };
      const partial = c.partial?.() ?? [];
      const copy = join(tmp.dir, 'repaired.img');
      for (let k = 1; k <= points.length; k++) {
        const where = `crash at point ${k} of ${points.length} (${points[k - 1]!.op})`;
        writeSparse(img, base, blocks);
        const r = await withFaultPlan((p) => (p.index === k ? 'crash' : undefined), runOp);
        assert.ok(r.error instanceof SimulatedCrash, `${where}: ${String(r.error)}`);
        covered++;
        const seen = await inspect(img);
        const isBoth = c.kind === 'rename' && same(seen.tree, both);
        const isPartial = c.kind === 'create' && seen.tree.has(from!) && partial.includes(seen.tree.get(from!)!) && same(new Map([...seen.tree].filter(([p]) => p !== from)), before.tree);
        const startShared = c.startsShared === true && same(seen.tree, before.tree);
        assert.ok(same(seen.tree, before.tree) || same(seen.tree, done.tree) || isBoth || isPartial, `${where}: neither the old tree, nor the new one, nor both names:\n${JSON.stringify(sorted(seen.tree))}`);
        assert.deepEqual(seen.problems.filter((p) => !/lost/.test(p) && !((isBoth || startShared) && /used twice/.test(p))), [], `${where}: verify()`);
        const cut = fsck(img);
        assert.equal(cut.rest, '', `${where}: fsck.exfat -n`);
        if (cut.shared) assert.ok(isBoth || startShared, `${where}: two names share clusters outside the both-names state`);
        if (cut.overlong) assert.equal(c.kind, 'resize', `${where}: an overlong chain outside a resize`);
        if (isBoth) sawBoth++;
        if (cut.overlong) sawOverlong++;
        // The repair: a copy of the cut image opened for writing and closed.
        if (volumeDirty(img)) {
          run('cp', ['--sparse=always', img, copy]);
          const disk = await FileDisk.open(copy);
          const fs = await ExfatFs.open(disk, { now: () => FIXED + 8000 });
          assert.ok(fs.dirty, `${where}: the cut volume is dirty`);
          const report = fs.repaired;
          assert.ok(report, `${where}: the open repaired it`);
          await fs.close();
          await disk.close();
          for (const key of Object.keys(needed) as (keyof typeof needed)[]) needed[key] += report[key];
          const fixed = await inspect(copy);
          assert.deepEqual(sorted(fixed.tree), sorted(seen.tree), `${where}: every file reads back as before the repair`);
          assert.deepEqual(fixed.problems.filter((p) => !((isBoth || startShared) && /used twice/.test(p))), [], `${where}: verify() after the repair`);
          assert.equal(volumeDirty(copy), false, `${where}: clean after the repair`);
          const after = fsck(copy);
          assert.equal(after.rest, '', `${where}: fsck.exfat -n after the repair`);
          assert.equal(after.overlong, false, `${where}: no chain past its size after the repair`);
          if (after.shared) assert.ok(isBoth || startShared, `${where}: shared clusters after the repair only for two names`);
          rmSync(copy, { force: true });
        }
        const pending = c.kind === 'resize' || (c.kind === 'create' ? !same(seen.tree, done.tree) : from !== undefined && seen.tree.has(from));
        if (isPartial) {
          // What a caller does with a part-written new file: remove it and create it again.
          const disk = await FileDisk.open(img);
          const fs = await ExfatFs.open(disk, { now: () => FIXED + 4000 });
          await fs.unlink(from!);
          await fs.close();
          await disk.close();
        }
        if (pending) await runOp();
        else if (volumeDirty(img)) {
          // Done already, but the cut left the volume dirty: the next command's open repairs it.
          const disk = await FileDisk.open(img);
          await (await ExfatFs.open(disk, { now: () => FIXED + 4000 })).close();
          await disk.close();
        }
        const final = await inspect(img);
        assert.deepEqual(sorted(final.tree), sorted(done.tree), `${where}: repeating the operation completes it`);
        assert.deepEqual(final.problems, [], `${where}: verify() after the repeat (no lost clusters either)`);
        assert.deepEqual(fsck(img), CLEAN, `${where}: fsck.exfat -n after the repeat`);
        assert.equal(volumeDirty(img), false, `${where}: clean after the repeat`);
      }
      if (c.kind === 'rename') assert.ok(sawBoth > 0, 'some cut leaves both names (the test cuts where it matters)');
      if (c.overlong) assert.ok(sawOverlong > 0, 'some cut leaves a chain longer than the size');
      for (const key of c.repairs ?? []) assert.ok(needed[key] > 0, `some cut needs the repair's ${key}: ${JSON.stringify(needed)}`);
    });
  }
});
