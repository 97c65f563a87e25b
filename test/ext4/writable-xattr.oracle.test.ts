/**
 * Ext4WritableFileSystem.setXattr/removeXattr with e2fsprogs as the oracle: on files, directories,
 * fast and slow symlinks, with values that fit the inode and values that need an EA block, on images
 * with 256-byte inodes (in-inode attributes), 128-byte inodes (block only), with and without
 * metadata_csum and a journal. After each phase e2fsck -fn is clean, debugfs (ea_list, ea_get) and our
 * reader read exactly the model, and a reopened filesystem agrees; removing everything gives every EA
 * block back. The refusals leave the image untouched. A sequence of changes cut at every fault point
 * leaves, after replayJournal and after e2fsck -fy, one of the states between calls, never going back
 * as the point moves on; an I/O error at any point fails the call and the filesystem keeps working.
 */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { FileDisk } from '../../src/io/disk.ts';
import { SimulatedCrash, tracePoints, withFaultPlan } from '../../src/io/faults.ts';
import { Ext4 } from '../../src/fs/ext4/fs.ts';
import { NoSpaceError } from '../../src/fs/ext4/errors.ts';
import { replayJournal } from '../../src/fs/ext4/jbd2/index.ts';
import { Ext4WritableFileSystem } from '../../src/fs/ext4/writable.ts';
import { NotFoundError, PermissionError, UnsupportedFeatureError, UsageError } from '../../src/errors.ts';
import { missingTools, run } from '../helpers/tools.ts';
import { tempDir } from '../helpers/tmp.ts';
import { randomBytes } from './fixtures.ts';
import { assertClean, debugfsDump, fsck } from './writable-helpers.ts';

const skip = missingTools('e2fsck', 'mke2fs', 'debugfs');
const enc = (s: string) => new TextEncoder().encode(s);
const PATHS = ['/f', '/d', '/d/inner', '/l', '/long'];
const LONG_TARGET = `${'a/'.repeat(50)}t`;
const F_DATA = randomBytes(10_000, 31);

/** path → name → value. */
type XModel = Map<string, Map<string, Uint8Array>>;

function emptyModel(): XModel {
  return new Map(PATHS.map((p) => [p, new Map()]));
}

/** A comparable form: "path name hex" lines, sorted. */
function summary(m: XModel): string[] {
  const out: string[] = [];
  for (const [p, attrs] of m) for (const [n, v] of attrs) out.push(`${p} ${n} ${Buffer.from(v).toString('hex')}`);
  return out.sort();
}

/** The source tree for mke2fs -d: a file, a directory with a file, a fast and a slow symlink. */
function makeSource(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(join(dir, 'd'), { recursive: true });
  writeFileSync(join(dir, 'f'), F_DATA);
  writeFileSync(join(dir, 'd', 'inner'), 'inner\n');
  symlinkSync('f', join(dir, 'l'));
  symlinkSync(LONG_TARGET, join(dir, 'long'));
}

/** Every attribute of PATHS as debugfs reads it: names from ea_list, exact values from ea_get -f. */
function debugfsXattrs(image: string, scratch: string): XModel {
  rmSync(scratch, { recursive: true, force: true });
  mkdirSync(scratch, { recursive: true });
  const listCmds = join(scratch, 'list.cmd');
  writeFileSync(listCmds, PATHS.map((p) => `ea_list ${p}\n`).join(''));
  const listed = run('debugfs', ['-f', listCmds, image]).stdout;
  const sections = listed.split(/^debugfs: ea_list /m).slice(1);
  assert.equal(sections.length, PATHS.length, `debugfs ea_list output:\n${listed}`);
  const names: [string, string, number][] = [];
  for (const section of sections) {
    const path = section.slice(0, section.indexOf('\n'));
    for (const m of section.matchAll(/^ {2}(\S+) \((\d+)\)/gm)) names.push([path, m[1]!, Number(m[2])]);
  }
  const getCmds = join(scratch, 'get.cmd');
  writeFileSync(getCmds, names.map(([p, n], i) => `ea_get -f ${join(scratch, `v${i}`)} ${p} ${n}\n`).join(''));
  if (names.length > 0) run('debugfs', ['-f', getCmds, image]);
  const out = emptyModel();
  names.forEach(([p, n, size], i) => {
    const value = new Uint8Array(readFileSync(join(scratch, `v${i}`)));
    assert.equal(value.byteLength, size, `debugfs: ${p} ${n} size`);
    out.get(p)!.set(n, value);
  });
  rmSync(scratch, { recursive: true, force: true });
  return out;
}

/** Every attribute of PATHS as our reader reads it (strict checksums). */
async function readerXattrs(image: string): Promise<XModel> {
  const disk = await FileDisk.open(image, { readOnly: true });
  try {
    const fs = await Ext4.open(disk, { strict: true });
    const out = emptyModel();
    for (const p of PATHS) for (const x of await fs.getXattrs(p)) out.get(p)!.set(x.name, x.value);
    return out;
  } finally {
    await disk.close();
  }
}

/** e2fsck clean, debugfs and our reader (closed image), and a reopened writable filesystem agree with the model. */
async function assertImage(image: string, model: XModel, scratch: string, what: string): Promise<void> {
  assertClean(image, what);
  assert.deepEqual(summary(debugfsXattrs(image, scratch)), summary(model), `${what}: debugfs`);
  assert.deepEqual(summary(await readerXattrs(image)), summary(model), `${what}: our reader`);
  const disk = await FileDisk.open(image);
  try {
    const fs = await Ext4WritableFileSystem.open(disk);
    const got = emptyModel();
    for (const p of PATHS) for (const x of await fs.xattrs(p)) got.get(p)!.set(x.name, x.value);
    await fs.close();
    assert.deepEqual(summary(got), summary(model), `${what}: reopened`);
  } finally {
    await disk.close();
  }
  // The nodes themselves are untouched: the symlinks still name their targets, the file its data.
  const data = debugfsDump(image, '/f', join(scratch, '..', 'f.dump'));
  assert.ok(Buffer.from(data).equals(Buffer.from(F_DATA)), `${what}: /f content`);
  const stat = (p: string) => run('debugfs', ['-R', `stat ${p}`, image]).stdout;
  assert.match(stat('/l'), /Fast link dest: "f"/, `${what}: /l target`);
  assert.doesNotMatch(stat('/long'), /Fast link dest/, `${what}: /long is a slow symlink`);
}

/** getfattr -h -d -m - -e hex of one host path: name → value. */
export function getfattr(path: string): Map<string, Uint8Array> {
  const out = new Map<string, Uint8Array>();
  const text = run('getfattr', ['-h', '-d', '-m', '-', '-e', 'hex', '--absolute-names', path]).stdout;
  for (const m of text.matchAll(/^([^#=\s][^=]*)(?:=0x([0-9a-f]*))?$/gm)) out.set(m[1]!, Uint8Array.from(Buffer.from(m[2] ?? '', 'hex')));
  return out;
}

const canLoopMount = !skip && process.getuid?.() === 0 && run('sh', ['-c', 'grep -qw ext4 /proc/filesystems && test -e /dev/loop-control && command -v getfattr'], { allowFail: true }).status === 0;

/** What the kernel reads from the image (loop mount, read-only), where it can be mounted here. */
function kernelXattrs(image: string, mountPoint: string): XModel {
  mkdirSync(mountPoint, { recursive: true });
  run('mount', ['-o', 'loop,ro', '-t', 'ext4', image, mountPoint]);
  try {
    return new Map(PATHS.map((p) => [p, getfattr(join(mountPoint, p))]));
  } finally {
    run('umount', [mountPoint]);
  }
}

type Op = readonly ['set', string, string, Uint8Array] | readonly ['remove', string, string];

function apply(model: XModel, op: Op): void {
  if (op[0] === 'set') model.get(op[1])!.set(op[2], op[3]);
  else model.get(op[1])!.delete(op[2]);
}

async function runOp(fs: Ext4WritableFileSystem, op: Op): Promise<void> {
  if (op[0] === 'set') await fs.setXattr(op[1], op[2], op[3]);
  else await fs.removeXattr(op[1], op[2]);
}

const SELINUX = enc('system_u:object_r:etc_t:s0\0');
const BIG_A = randomBytes(600, 32);
const BIG_B = randomBytes(700, 33);
const BIG_L = randomBytes(450, 34);

/** Small values first (in the inode where it has room), then values that need a block, then replacements. */
const SETS: Op[] = [
  ['set', '/f', 'user.a', enc('x')],
  ['set', '/f', 'trusted.overlay.opaque', enc('y')],
  ['set', '/f', 'security.selinux', SELINUX],
  ['set', '/d', 'trusted.overlay.opaque', enc('y')],
  ['set', '/d', 'user.empty', new Uint8Array(0)],
  ['set', '/d/inner', 'security.capability', Uint8Array.from([1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])],
  ['set', '/l', 'trusted.overlay.redirect', enc('/f')],
  ['set', '/long', 'trusted.overlay.origin', randomBytes(29, 35)],
  ['set', '/f', 'user.a', enc('a longer value than before')],
  // (the values up to here are small)
  ['set', '/f', 'user.big', BIG_A],
  ['set', '/l', 'trusted.big', BIG_L],
  ['set', '/f', 'user.big', BIG_B],
  ['set', '/d', 'user.empty', enc('now with a value')],
];

const SMALL_SETS = 9;

const REMOVES: Op[] = [
  ['remove', '/f', 'user.a'],
  ['remove', '/f', 'user.big'],
  ['remove', '/l', 'trusted.big'],
  ['remove', '/d', 'trusted.overlay.opaque'],
];

interface Variant {
  readonly name: string;
  readonly args: readonly string[];
  readonly journaled: boolean;
}

const VARIANTS: Variant[] = [
  { name: '4 KiB blocks, 256-byte inodes, metadata_csum', args: ['-b', '4096', '-I', '256'], journaled: true },
  { name: '1 KiB blocks, 128-byte inodes (no in-inode room), no metadata_csum, 32-bit', args: ['-b', '1024', '-I', '128', '-O', '^metadata_csum,^64bit'], journaled: true },
  { name: '4 KiB blocks, no journal', args: ['-b', '4096', '-I', '256', '-O', '^has_journal'], journaled: false },
];

function makeImage(image: string, source: string, args: readonly string[]): void {
  run('mke2fs', ['-q', '-F', '-t', 'ext4', ...args, '-d', source, image, '16M']);
}

describe('Ext4WritableFileSystem extended attributes', { skip }, () => {
  const tmp = tempDir('livestick-ext4-wxattr-');
  const source = join(tmp.dir, 'src');
  const scratch = join(tmp.dir, 'scratch');
  before(() => makeSource(source));
  after(() => tmp.cleanup());

  for (const v of VARIANTS) {
    describe(v.name, () => {
      const template = join(tmp.dir, `${v.name.replace(/\W+/g, '-')}.img`);
      before(() => makeImage(template, source, v.args));

      test('set, replace and remove on files, directories and symlinks; inline and block values; every EA block given back', async () => {
        const image = join(tmp.dir, 'sets.img');
        copyFileSync(template, image);
        const blockSize = Number(v.args[v.args.indexOf('-b') + 1]);
        const inodeRoom = v.args[v.args.indexOf('-I') + 1] === '256';
        const model = emptyModel();
        await assertImage(image, model, scratch, 'the fresh image');
        let disk = await FileDisk.open(image);
        let fs = await Ext4WritableFileSystem.open(disk);
        assert.equal(fs.journaled, v.journaled);
        const freeAtStart = (await fs.space()).freeBytes;
        for (const [i, op] of SETS.entries()) {
          await runOp(fs, op);
          apply(model, op);
          const blocksUsed = (freeAtStart - (await fs.space()).freeBytes) / blockSize;
          if (inodeRoom && i === 1) assert.equal(blocksUsed, 0, 'two small values of /f fit in its inode');
          if (inodeRoom && i === 2) assert.equal(blocksUsed, 1, 'a third one does not: all of /f goes to one EA block');
          // Small values on the other nodes fit their inodes; without in-inode room each node takes a block.
          if (i === SMALL_SETS - 1) assert.equal(blocksUsed, inodeRoom ? 1 : 5, 'EA blocks after the small values');
        }
        assert.ok((await fs.space()).freeBytes < freeAtStart, 'the big values took EA blocks');
        await fs.close();
        await disk.close();
        await assertImage(image, model, scratch, 'after the sets');
        if (canLoopMount) assert.deepEqual(summary(kernelXattrs(image, join(tmp.dir, 'mnt'))), summary(model), 'the kernel reads what was set');

        disk = await FileDisk.open(image);
        fs = await Ext4WritableFileSystem.open(disk);
        for (const op of REMOVES) {
          await runOp(fs, op);
          apply(model, op);
          const got = new Map((await fs.xattrs(op[1])).map((x) => [x.name, x.value]));
          assert.deepEqual(summary(new Map([[op[1], got]])), summary(new Map([[op[1], model.get(op[1])!]])), `${op.join(' ')}: read back at once`);
        }
        await fs.close();
        await disk.close();
        await assertImage(image, model, scratch, 'after the removes');

        disk = await FileDisk.open(image);
        fs = await Ext4WritableFileSystem.open(disk);
        for (const [p, attrs] of model) {
          for (const name of [...attrs.keys()]) {
            await fs.removeXattr(p, name);
            attrs.delete(name);
          }
        }
        assert.equal((await fs.space()).freeBytes, freeAtStart, 'no EA block is left behind');
        await fs.close();
        await disk.close();
        await assertImage(image, model, scratch, 'after removing everything');
      });

      test('refusals change nothing: a missing attribute or path, bad names, user.* on a symlink, a value larger than a block', async () => {
        const work = join(tmp.dir, 'refusals.img');
        copyFileSync(template, work);
        const disk = await FileDisk.open(work);
        const fs = await Ext4WritableFileSystem.open(disk);
        const model = emptyModel();
        for (const op of SETS.slice(0, 4)) {
          await runOp(fs, op);
          apply(model, op);
        }
        await assert.rejects(fs.removeXattr('/f', 'user.never'), NotFoundError);
        await assert.rejects(fs.removeXattr('/nope', 'user.a'), NotFoundError);
        await assert.rejects(fs.setXattr('/nope', 'user.a', enc('1')), NotFoundError);
        await assert.rejects(fs.setXattr('/f', 'bogus.a', enc('1')), UsageError);
        await assert.rejects(fs.setXattr('/f', 'user.', enc('1')), UsageError);
        await assert.rejects(fs.setXattr('/f', `user.${'n'.repeat(256)}`, enc('1')), UsageError);
        await assert.rejects(fs.setXattr('/f', 'system.posix_acl_access', enc('1')), UnsupportedFeatureError);
        await assert.rejects(fs.setXattr('/l', 'user.a', enc('1')), PermissionError);
        await assert.rejects(fs.setXattr('/long', 'user.a', enc('1')), PermissionError);
        const blockSize = Number(v.args[v.args.indexOf('-b') + 1]);
        await assert.rejects(fs.setXattr('/f', 'user.huge', new Uint8Array(blockSize)), NoSpaceError);
        // The filesystem goes on working after each refusal.
        const op: Op = ['set', '/d/inner', 'user.after', enc('still works')];
        await runOp(fs, op);
        apply(model, op);
        await fs.close();
        await disk.close();
        await assertImage(work, model, scratch, 'after the refusals');
      });

      test('an attribute set on a file open for writing: its data, size and the attribute all land', async () => {
        const work = join(tmp.dir, 'open.img');
        copyFileSync(template, work);
        const disk = await FileDisk.open(work);
        const fs = await Ext4WritableFileSystem.open(disk);
        const A = randomBytes(200_000, 36);
        const B = randomBytes(50_000, 37);
        const f = await fs.createFile('/g', { size: 100_000 });
        await f.write(A.subarray(0, 100_000), 0);
        await fs.setXattr('/g', 'user.big', BIG_A);
        await f.resize(A.byteLength);
        await f.write(A.subarray(100_000), 100_000);
        await fs.setXattr('/g', 'trusted.overlay.opaque', enc('y'));
        await f.resize(A.byteLength + B.byteLength);
        await f.write(B, A.byteLength);
        await f.close();
        await fs.close();
        await disk.close();
        assertClean(work, 'the open file');
        const data = debugfsDump(work, '/g', join(tmp.dir, 'g.dump'));
        assert.ok(Buffer.from(data).equals(Buffer.concat([A, B])), 'content');
        const listed = run('debugfs', ['-R', 'ea_list /g', work]).stdout;
        assert.match(listed, /user\.big \(600\)/);
        assert.match(listed, /trusted\.overlay\.opaque \(1\) = "y"/);
      });
    });
  }

  for (const v of VARIANTS.filter((x) => x.journaled)) {
    describe(`cut at every fault point: ${v.name}`, () => {
      const template = join(tmp.dir, `crash-${v.name.replace(/\W+/g, '-')}.img`);
      const SEQUENCE: Op[] = [
        ['set', '/f', 'user.a', enc('x')],
        ['set', '/f', 'user.big', BIG_A],
        ['set', '/l', 'trusted.overlay.redirect', enc('/f')],
        ['set', '/f', 'user.big', BIG_B],
        ['remove', '/f', 'user.big'],
        ['remove', '/f', 'user.a'],
      ];
      const states: string[][] = [];
      before(() => {
        makeImage(template, source, v.args);
        const m = emptyModel();
        states.push(summary(m));
        for (const op of SEQUENCE) {
          apply(m, op);
          states.push(summary(m));
        }
      });

      test('each call whole or not at all, after replayJournal and after e2fsck -fy', { timeout: 300_000 }, async () => {
        const work = join(tmp.dir, 'work.img');
        copyFileSync(template, work);
        let disk = await FileDisk.open(work);
        let fs = await Ext4WritableFileSystem.open(disk);
        const traced = await tracePoints(async () => {
          for (const op of SEQUENCE) await runOp(fs, op);
        });
        await fs.close();
        await disk.close();
        assert.deepEqual(summary(await readerXattrs(work)), states[states.length - 1], 'the uncut sequence');
        const points = traced.points.length;
        assert.ok(points >= SEQUENCE.length * 3, `${points} fault points`);
        const seen = new Set<number>();
        let last = 0;
        for (let i = 1; i <= points; i++) {
          copyFileSync(template, work);
          disk = await FileDisk.open(work);
          fs = await Ext4WritableFileSystem.open(disk);
          const r = await withFaultPlan(
            (p) => (p.index === i ? 'crash' : undefined),
            async () => {
              for (const op of SEQUENCE) await runOp(fs, op);
            },
          );
          assert.ok(r.error instanceof SimulatedCrash, `point ${i}: crashed (${String(r.error)})`);
          await disk.close();
          const copy = join(tmp.dir, 'e2fsck.img');
          copyFileSync(work, copy);
          const fixed = run('e2fsck', ['-fy', copy], { allowFail: true });
          assert.equal(fixed.status, 0, `point ${i}: e2fsck -fy had to repair more than the journal:\n${fixed.stdout}`);
          assertClean(copy, `point ${i}: e2fsck -fy`);
          const byE2fsck = summary(await readerXattrs(copy));
          const d = await FileDisk.open(work);
          await replayJournal(await Ext4.open(d), d);
          await d.close();
          assertClean(work, `point ${i}: replayJournal`);
          const ours = summary(await readerXattrs(work));
          assert.deepEqual(ours, byE2fsck, `point ${i}: replayJournal and e2fsck reach the same state`);
          const k = states.findIndex((s) => JSON.stringify(s) === JSON.stringify(ours));
          assert.ok(k >= 0, `point ${i}: a state between no two calls:\n${ours.join('\n')}`);
          assert.ok(k >= last, `point ${i}: state ${k} after an earlier point left state ${last}`);
          last = k;
          seen.add(k);
        }
        for (let k = 0; k < states.length - 1; k++) assert.ok(seen.has(k), `some crash leaves state ${k}`);
      });

      test('an I/O error at any point of a set fails it; the filesystem reloads, keeps working, and the image is clean', { timeout: 300_000 }, async () => {
        const work = join(tmp.dir, 'eio.img');
        copyFileSync(template, work);
        let disk = await FileDisk.open(work);
        let fs = await Ext4WritableFileSystem.open(disk);
        await fs.setXattr('/f', 'user.a', enc('x'));
        await fs.close();
        await disk.close();
        const start = join(tmp.dir, 'eio-start.img');
        copyFileSync(work, start);
        disk = await FileDisk.open(work);
        fs = await Ext4WritableFileSystem.open(disk);
        const points = (await tracePoints(() => fs.setXattr('/f', 'user.big', BIG_A))).points.length;
        await fs.close();
        await disk.close();
        const outcomes = new Set<string>();
        for (let i = 1; i <= points; i++) {
          copyFileSync(start, work);
          disk = await FileDisk.open(work);
          fs = await Ext4WritableFileSystem.open(disk);
          const r = await withFaultPlan((p) => (p.index === i ? 'EIO' : undefined), () => fs.setXattr('/f', 'user.big', BIG_A));
          assert.ok(r.error !== undefined, `point ${i}: the error reaches the caller`);
          await fs.setXattr('/d', 'user.after', enc('1'));
          await fs.close();
          await disk.close();
          const r2 = fsck(work);
          assert.equal(r2.status, 0, `point ${i}: e2fsck -fn:\n${r2.out}`);
          const got = await readerXattrs(work);
          assert.deepEqual(summary(new Map([['/d', got.get('/d')!]])), [`/d user.after ${Buffer.from('1').toString('hex')}`], `point ${i}: the later change`);
          const f = got.get('/f')!;
          assert.ok(f.get('user.a') !== undefined && Buffer.from(f.get('user.a')!).toString() === 'x', `point ${i}: user.a kept`);
          const big = f.get('user.big');
          assert.ok(big === undefined || Buffer.from(big).equals(Buffer.from(BIG_A)), `point ${i}: user.big old or new`);
          outcomes.add(big === undefined ? 'old' : 'new');
        }
        assert.deepEqual([...outcomes].sort(), ['new', 'old'], 'errors before the commit undo it, errors after it are completed by the replay');
      });
    });
  }
});
