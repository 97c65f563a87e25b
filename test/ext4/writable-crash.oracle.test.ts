/**
 * Ext4WritableFileSystem cut at every fault point (src/io/faults.ts: every write and fsync of the
 * FileDisk under it): a rename replacing a big file, an unlink, and createFile with writes, growth,
 * flush, shrink and close. After each crash, on one copy livestick's replayJournal runs and e2fsck
 * -fn must be clean; on another e2fsck -fy (which replays the journal itself) must exit 0, repairing
 * nothing; both must read the same tree, and that tree is a state the operation passes through as a
 * whole: the old one or the new one (for the sequence: one of the states durable after some call,
 * never going back as the crash point moves on). Without a journal (renameIsAtomic false) a crashed
 * rename leaves, after e2fsck -fy, the old or the new content under the target name, never neither,
 * and repeating the rename on the crashed image finishes it. An I/O error (EIO) at any point instead
 * of a crash fails the call, and the same filesystem object reloads and keeps working.
 */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { FileDisk } from '../../src/io/disk.ts';
import { SimulatedCrash, tracePoints, withFaultPlan } from '../../src/io/faults.ts';
import { Ext4 } from '../../src/fs/ext4/fs.ts';
import { replayJournal } from '../../src/fs/ext4/jbd2/index.ts';
import { Ext4WritableFileSystem } from '../../src/fs/ext4/writable.ts';
import { missingTools, run } from '../helpers/tools.ts';
import { tempDir } from '../helpers/tmp.ts';
import { randomBytes } from './fixtures.ts';
import { type Model, fsck, readerTree } from './writable-helpers.ts';

const skip = missingTools('e2fsck', 'mke2fs');
const MiB = 1 << 20;
const OLD = randomBytes(3 * MiB + 5, 21);
const NEW = randomBytes(4 * MiB + 9, 22);
const KEEP = new TextEncoder().encode('an unrelated file\n');

/** A short, comparable form of a tree. */
function summary(m: Model): string[] {
  return [...m].map(([p, n]) => `${p} ${n.kind === 'file' ? `${n.data.byteLength}:${Buffer.from(n.data.subarray(0, 8)).toString('hex')}:${hashOf(n.data)}` : n.kind}`).sort();
}

function hashOf(data: Uint8Array): string {
  let h = 2166136261;
  for (let i = 0; i < data.byteLength; i += 97) h = Math.imul(h ^ data[i]!, 16777619) >>> 0;
  return h.toString(16);
}

async function base(image: string, mkfsArgs: string[]): Promise<void> {
  run('mke2fs', ['-q', '-F', ...mkfsArgs, image, '32M']);
  const disk = await FileDisk.open(image);
  const fs = await Ext4WritableFileSystem.open(disk);
  await fs.mkdir('/LiveOS');
  await fs.writeFile('/LiveOS/squashfs.img', OLD);
  const f = await fs.createFile('/LiveOS/squashfs.img.new', { size: NEW.byteLength, uninitialized: true });
  await f.write(NEW, 0);
  await f.close();
  await fs.writeFile('/keep', KEEP);
  await fs.close();
  await disk.close();
}

interface CrashResult {
  point: number;
  ours: string[];
  e2fsck: string[];
}

/**
 * Runs `op` on a fresh copy of `template` once per fault point, crashing at that point, and judges
 * each crashed image with both recoveries. Returns the trees they read, in point order.
 */
async function crashAtEveryPoint(dir: string, template: string, op: (fs: Ext4WritableFileSystem) => Promise<void>, journaled = true, keep?: Map<number, string>): Promise<{ results: CrashResult[]; points: number }> {
  const work = join(dir, 'work.img');
  copyFileSync(template, work);
  let disk = await FileDisk.open(work);
  let fs = await Ext4WritableFileSystem.open(disk);
  const traced = await tracePoints(() => op(fs));
  await fs.close();
  await disk.close();
  const points = traced.points.length;
  assert.ok(points > 10, `${points} fault points`);
  const results: CrashResult[] = [];
  for (let i = 1; i <= points; i++) {
    copyFileSync(template, work);
    disk = await FileDisk.open(work);
    fs = await Ext4WritableFileSystem.open(disk);
    const r = await withFaultPlan((p) => (p.index === i ? 'crash' : undefined), () => op(fs));
    assert.ok(r.error instanceof SimulatedCrash, `point ${i}: crashed (${String(r.error)})`);
    await disk.close();
    if (keep) {
      const kept = join(dir, `crashed-${i}.img`);
      copyFileSync(work, kept);
      keep.set(i, kept);
    }
    // e2fsck's own recovery on a copy.
    const copy = join(dir, 'e2fsck.img');
    copyFileSync(work, copy);
    const fixed = run('e2fsck', ['-fy', copy], { allowFail: true });
    if (journaled) assert.equal(fixed.status, 0, `point ${i}: e2fsck -fy had to repair more than the journal:\n${fixed.stdout}`);
    else assert.ok(fixed.status <= 1, `point ${i}: e2fsck -fy could not repair:\n${fixed.stdout}`);
    const after = fsck(copy);
    assert.equal(after.status, 0, `point ${i}: e2fsck -fn after e2fsck -fy:\n${after.out}`);
    const e2 = summary(await readerTree(copy));
    // livestick's recovery.
    let ours = e2;
    if (journaled) {
      const d = await FileDisk.open(work);
      await replayJournal(await Ext4.open(d), d);
      await d.close();
      const clean = fsck(work);
      assert.equal(clean.status, 0, `point ${i}: e2fsck -fn after replayJournal:\n${clean.out}`);
      ours = summary(await readerTree(work));
      assert.deepEqual(ours, e2, `point ${i}: replayJournal and e2fsck reach the same tree`);
    }
    results.push({ point: i, ours, e2fsck: e2 });
  }
  return { results, points };
}

/** Checks every result is one of `states` (in order) and that the index never goes back. */
function assertMonotone(results: CrashResult[], states: string[][], what: string): number[] {
  const seen: number[] = [];
  let last = 0;
  for (const r of results) {
    const k = states.findIndex((s) => JSON.stringify(s) === JSON.stringify(r.ours));
    assert.ok(k >= 0, `${what}: crash at point ${r.point} left a state the operation never passes through:\n${r.ours.join('\n')}\nstates:\n${states.map((s) => s.join('\n')).join('\n--\n')}`);
    assert.ok(k >= last, `${what}: crash at point ${r.point} shows state ${k} after a crash at an earlier point showed ${last}`);
    last = k;
    seen.push(k);
  }
  return seen;
}

describe('Ext4WritableFileSystem cut at every fault point', { skip }, () => {
  const tmp = tempDir('livestick-ext4w-crash-');
  after(() => tmp.cleanup());

  for (const [name, args] of [
    ['4 KiB, metadata_csum', ['-t', 'ext4', '-b', '4096']],
    ['1 KiB, no metadata_csum, 32-bit', ['-t', 'ext4', '-b', '1024', '-O', '^metadata_csum,^64bit,uninit_bg']],
  ] as const) {
    describe(name, () => {
      const template = join(tmp.dir, `${name.replace(/\W+/g, '-')}.img`);
      before(async () => base(template, [...args]));

      test('rename over an existing big file: the target names the old or the new content, the source is gone exactly with the new', { timeout: 300_000 }, async () => {
        const { results } = await crashAtEveryPoint(tmp.dir, template, (fs) => fs.rename('/LiveOS/squashfs.img.new', '/LiveOS/squashfs.img'));
        const oldState = summary(new Map([['/LiveOS', { kind: 'dir' }], ['/LiveOS/squashfs.img', { kind: 'file', data: OLD }], ['/LiveOS/squashfs.img.new', { kind: 'file', data: NEW }], ['/keep', { kind: 'file', data: KEEP }]]));
        const newState = summary(new Map([['/LiveOS', { kind: 'dir' }], ['/LiveOS/squashfs.img', { kind: 'file', data: NEW }], ['/keep', { kind: 'file', data: KEEP }]]));
        const seen = assertMonotone(results, [oldState, newState], 'rename');
        assert.ok(seen.includes(0) && seen.includes(1), 'crashes land on both sides of the commit');
      });

      test('an I/O error at any point of a rename fails the call; the filesystem reloads and keeps working', { timeout: 300_000 }, async () => {
        const work = join(tmp.dir, 'eio.img');
        copyFileSync(template, work);
        let disk = await FileDisk.open(work);
        let fs = await Ext4WritableFileSystem.open(disk);
        const points = (await tracePoints(() => fs.rename('/LiveOS/squashfs.img.new', '/LiveOS/squashfs.img'))).points.length;
        await fs.close();
        await disk.close();
        const oldNames = ['/LiveOS', '/LiveOS/after', '/LiveOS/squashfs.img', '/LiveOS/squashfs.img.new', '/keep'];
        const newNames = ['/LiveOS', '/LiveOS/after', '/LiveOS/squashfs.img', '/keep'];
        const outcomes = new Set<string>();
        for (let i = 1; i <= points; i++) {
          copyFileSync(template, work);
          disk = await FileDisk.open(work);
          fs = await Ext4WritableFileSystem.open(disk);
          const r = await withFaultPlan((p) => (p.index === i ? 'EIO' : undefined), () => fs.rename('/LiveOS/squashfs.img.new', '/LiveOS/squashfs.img'));
          assert.ok(r.error !== undefined, `point ${i}: the error reaches the caller`);
          await fs.mkdir('/LiveOS/after');
          await fs.close();
          await disk.close();
          const clean = fsck(work);
          assert.equal(clean.status, 0, `point ${i}: e2fsck -fn:\n${clean.out}`);
          const tree = await readerTree(work);
          const names = [...tree.keys()].sort();
          assert.ok(JSON.stringify(names) === JSON.stringify(oldNames) || JSON.stringify(names) === JSON.stringify(newNames), `point ${i}: ${names.join(' ')}`);
          const img = tree.get('/LiveOS/squashfs.img');
          assert.ok(img?.kind === 'file' && Buffer.from(img.data).equals(Buffer.from(names.length === oldNames.length ? OLD : NEW)), `point ${i}: content`);
          outcomes.add(names.length === oldNames.length ? 'old' : 'new');
        }
        assert.deepEqual([...outcomes].sort(), ['new', 'old'], 'errors before the commit undo it, errors after it are completed by the replay');
      });

      test('unlink of a big file: there or gone, nothing in between', { timeout: 300_000 }, async () => {
        const { results } = await crashAtEveryPoint(tmp.dir, template, (fs) => fs.unlink('/LiveOS/squashfs.img'));
        const there = summary(new Map([['/LiveOS', { kind: 'dir' }], ['/LiveOS/squashfs.img', { kind: 'file', data: OLD }], ['/LiveOS/squashfs.img.new', { kind: 'file', data: NEW }], ['/keep', { kind: 'file', data: KEEP }]]));
        const gone = summary(new Map([['/LiveOS', { kind: 'dir' }], ['/LiveOS/squashfs.img.new', { kind: 'file', data: NEW }], ['/keep', { kind: 'file', data: KEEP }]]));
        const seen = assertMonotone(results, [there, gone], 'unlink');
        assert.ok(seen.includes(0) && seen.includes(1));
      });

      test('removeTree: the files of a directory go in one transaction, then the directory; nothing in between', { timeout: 300_000 }, async () => {
        const { results } = await crashAtEveryPoint(tmp.dir, template, (fs) => fs.removeTree('/LiveOS'));
        const there = summary(new Map([['/LiveOS', { kind: 'dir' }], ['/LiveOS/squashfs.img', { kind: 'file', data: OLD }], ['/LiveOS/squashfs.img.new', { kind: 'file', data: NEW }], ['/keep', { kind: 'file', data: KEEP }]]));
        const emptied = summary(new Map([['/LiveOS', { kind: 'dir' }], ['/keep', { kind: 'file', data: KEEP }]]));
        const gone = summary(new Map([['/keep', { kind: 'file', data: KEEP }]]));
        const seen = assertMonotone(results, [there, emptied, gone], 'removeTree');
        assert.ok(seen.includes(0) && seen.includes(2));
      });

      test('createFile, writes, resize (grow), flush, resize (shrink), close: each call whole or not at all', { timeout: 600_000 }, async () => {
        const A = randomBytes(512 * 1024 + 3, 23);
        const B = randomBytes(300_000, 24);
        const sequence = async (fs: Ext4WritableFileSystem, after?: () => Promise<void>) => {
          const f = await fs.createFile('/LiveOS/home.img', { size: MiB });
          await after?.();
          await f.write(A, 0);
          await f.resize(6 * MiB);
          await after?.();
          await f.write(B, 5 * MiB);
          await f.flush();
          await after?.();
          await f.resize(2 * MiB + 100);
          await after?.();
          await f.close();
          await after?.();
        };
        // The durable states: the image as a fresh reader sees it after each call.
        const states: string[][] = [summary(await readerTree(template))];
        {
          const work = join(tmp.dir, 'states.img');
          copyFileSync(template, work);
          const disk = await FileDisk.open(work);
          const fs = await Ext4WritableFileSystem.open(disk);
          await sequence(fs, async () => {
            const s = summary(await readerTree(work));
            if (JSON.stringify(s) !== JSON.stringify(states[states.length - 1])) states.push(s);
          });
          await fs.close();
          await disk.close();
        }
        assert.equal(states.length, 5, 'absent, zeros, A + zeros, A + B, shrunk');
        const { results } = await crashAtEveryPoint(tmp.dir, template, (fs) => sequence(fs));
        const seen = assertMonotone(results, states, 'createFile sequence');
        for (let k = 0; k < states.length; k++) assert.ok(seen.includes(k), `some crash leaves state ${k}`);
      });
    });
  }

  test('without a journal a crashed rename leaves the target with the old or the new content, never neither; repeating it finishes', { timeout: 300_000 }, async () => {
    const template = join(tmp.dir, 'nojournal.img');
    await base(template, ['-t', 'ext4', '-O', '^has_journal']);
    const crashed = new Map<number, string>();
    const { results } = await crashAtEveryPoint(tmp.dir, template, (fs) => fs.rename('/LiveOS/squashfs.img.new', '/LiveOS/squashfs.img'), false, crashed);
    const newSummary = summary(new Map([['x', { kind: 'file', data: NEW }]]))[0]!.slice(2);
    const oldSummary = summary(new Map([['x', { kind: 'file', data: OLD }]]))[0]!.slice(2);
    for (const r of results) {
      const target = r.e2fsck.find((l) => l.startsWith('/LiveOS/squashfs.img '));
      assert.ok(target, `point ${r.point}: the target name is there`);
      const content = target.slice('/LiveOS/squashfs.img '.length);
      assert.ok(content === newSummary || content === oldSummary, `point ${r.point}: ${content}`);
      const source = r.e2fsck.find((l) => l.startsWith('/LiveOS/squashfs.img.new '));
      if (content === oldSummary) assert.ok(source?.endsWith(newSummary), `point ${r.point}: the new content keeps its old name until the target names it`);
      assert.ok(r.e2fsck.includes(`/keep ${summary(new Map([['x', { kind: 'file', data: KEEP }]]))[0]!.slice(2)}`), `point ${r.point}: other files untouched`);
    }
    // Repeating the rename on the crashed image (no repair in between) finishes it.
    const finished = summary(new Map([['/LiveOS', { kind: 'dir' }], ['/LiveOS/squashfs.img', { kind: 'file', data: NEW }], ['/keep', { kind: 'file', data: KEEP }]]));
    for (const point of [...crashed.keys()]) {
      const work = join(tmp.dir, 'repeat.img');
      copyFileSync(crashed.get(point)!, work);
      const disk = await FileDisk.open(work);
      const fs = await Ext4WritableFileSystem.open(disk);
      if ((await fs.readdir('/LiveOS')).some((e) => e.name === 'squashfs.img.new')) await fs.rename('/LiveOS/squashfs.img.new', '/LiveOS/squashfs.img');
      await fs.close();
      await disk.close();
      const fixed = run('e2fsck', ['-fy', work], { allowFail: true });
      assert.ok(fixed.status <= 1, `point ${point}: e2fsck -fy after the repeated rename:\n${fixed.stdout}`);
      assert.deepEqual(summary(await readerTree(work)), finished, `point ${point}: the repeated rename finished the cut one`);
    }
  });
});
