/**
 * Injected failures during a merge and a reset of overlayfs persistence on stick IMAGES (root and
 * overlayfs needed: the upper is written by the host kernel through `mount -t overlay`):
 *   - gpt:  p1 FAT32 holding LiveOS/squashfs.img, p2 ext4 (mke2fs -d) holding LiveOS/overlay-LIVE-…/
 *           and LiveOS/ovlwork/;
 *   - vfat: one FAT32 partition holding LiveOS/squashfs.img and an ext4 image file LiveOS/overlay-LIVE-…
 *           whose overlayfs/ and ovlwork/ are the upper and the work dir.
 * On an image every write and fsync of the image file is a fault point and every point names the
 * image, so the counting run records the call stack that reached each point: the switch starts at the
 * first point reached from inside the journal's write (writeJournal; the journal is read earlier, but
 * reads are no points), and a switch point belongs to the base's FAT (its file operations: the
 * journal's write and removal, the base's rename, and their flushes) or to the upper's ext4.
 *
 * Sampling. A run has ~700-760 points (every block write: each ext4 change is one jbd2 transaction
 * of ~13 points, and the switch makes ~40 of them), and one case costs ~0.5 s on 2 shared cores, so
 * every point with a crash and an errno (LIVESTICK_OVLFAULTS_FULL=1) takes well over an hour. By
 * default, within ~4 minutes for the file:
 *   - the build (before the journal): PRE_SAMPLES points evenly spread, always the first and the last;
 *   - the switch's points on the base's FAT: every one;
 *   - the switch's points in the upper's ext4: SWITCH_SAMPLES points evenly spread, first and last
 *     included (their spacing is no multiple of a transaction's length, so they fall at different
 *     places inside the transactions);
 *   - each chosen point fails once with a crash (that operation and everything after it never happen)
 *     and once with an errno (EPERM, ENOSPC, EIO, EROFS in turn); the first point of each file
 *     operation the switch does on FAT (the journal's write and rename, the base's rename, the
 *     journal's unlink) fails with every one of the four.
 * After each case, reading the image only through livestick's readers (no mounting; an ext4 journal
 * that needs recovery is replayed on a copy in memory, as a boot's mount would):
 *   - right away: a SquashFS base that opens, and an upper whose merged view is exactly the user's
 *     tree (no upper only while the journal exists);
 *   - an errno comes back as a typed LivestickError (not SimulatedCrash, no "bug");
 *   - after the next command (status, which recovers), no journal and no `.livestick-` leftovers on
 *     either filesystem, and the merged view is the tree from before (reset: that tree or the bare base);
 *   - every ORACLE_EVERY-th case and every crash from the journal on: fsck.fat -n on the FAT partition
 *     and e2fsck -fn on the ext4 partition or image (where installed) report clean.
 * The coverage (points seen, cases run, oracle runs, per command and medium) is printed at the end.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { closeSync, ftruncateSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, statfsSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from '../helpers/tmp.ts';
import { fsManifest } from '../helpers/fs-manifest.ts';
import { hasTool } from '../helpers/tools.ts';
import { fatOn, gptStick, put } from '../live/build.ts';
import { SimulatedCrash, withFaultPlan } from '../../src/io/faults.ts';
import { LivestickError } from '../../src/errors.ts';
import { MemoryDisk, type Disk } from '../../src/io/disk.ts';
import type { FileSystem } from '../../src/fs/filesystem.ts';
import { Ext4 } from '../../src/fs/ext4/fs.ts';
import { Ext4FileSystem } from '../../src/fs/ext4/filesystem.ts';
import { replayJournal } from '../../src/fs/ext4/jbd2/journal.ts';
import { OverlayFileSystem } from '../../src/fs/overlay/index.ts';
import { SquashfsReader } from '../../src/fs/squashfs/reader.ts';
import { SquashfsFileSystem } from '../../src/fs/squashfs/filesystem.ts';
import { writeSquashfs } from '../../src/fs/squashfs/writer.ts';
import { withStick, type Stick } from '../../src/ops/live/volumes.ts';
import { mergeOverlayfs } from '../../src/ops/overlayfs/merge.ts';
import { resetOverlayfs } from '../../src/ops/overlayfs/reset.ts';
import { overlayfsStatus } from '../../src/ops/overlayfs/status.ts';

const canMount = process.getuid?.() === 0 && readFileSync('/proc/filesystems', 'utf8').includes('overlay');
const ERRNOS = ['EPERM', 'ENOSPC', 'EIO', 'EROFS'];
const OVERLAY = 'overlay-LIVE-2026-1201';
/** LIVESTICK_OVLFAULTS_FULL=1: every point of the build and of the switch (an hour or more). */
const FULL = process.env.LIVESTICK_OVLFAULTS_FULL === '1';
const PRE_SAMPLES = 8;
const SWITCH_SAMPLES = 12;
const ORACLE_EVERY = 10;

interface Medium {
  readonly name: string;
  /** The volume holding the ext4 upper, and the ext4 image inside it (vfat form). */
  readonly upperVolume: string;
  readonly upperImage?: string;
  readonly upper: string;
  readonly work: string;
}

const MEDIA: readonly Medium[] = [
  { name: 'gpt stick (FAT32 p1 + ext4 p2)', upperVolume: 'p2', upper: `/LiveOS/${OVERLAY}`, work: '/LiveOS/ovlwork' },
  { name: 'vfat stick (ext4 image on FAT32)', upperVolume: 'p1', upperImage: `/LiveOS/${OVERLAY}`, upper: '/overlayfs', work: '/ovlwork' },
];

const manifest = fsManifest;

async function bytesOf(disk: Disk): Promise<Uint8Array> {
  const b = new Uint8Array(disk.size);
  await disk.read(b, 0);
  return b;
}

/** ext4 as a mount would see it: a copy in memory, its journal replayed when it needs recovery. */
async function ext4AsMounted(bytes: Uint8Array): Promise<Ext4FileSystem> {
  const mem = new MemoryDisk(bytes);
  let fs = await Ext4.open(mem);
  if ((await fs.state()).needsRecovery) {
    await replayJournal(fs, mem);
    fs = await Ext4.open(mem);
  }
  return new Ext4FileSystem(fs);
}

const isLeftover = (name: string): boolean => name.includes('.livestick-') || name.includes('journal');

interface Seen {
  /** The merged view a boot finds (undefined: no upper). */
  readonly view: string[] | undefined;
  /** The base alone (asked for with `withBare`). */
  readonly bare: string[] | undefined;
  readonly journal: boolean;
  readonly leftovers: string[];
  /** The raw bytes of the FAT partition and of the ext4 holding the upper, for the oracles. */
  readonly fat: () => Promise<Uint8Array>;
  readonly ext4: () => Promise<Uint8Array>;
}

/** What a boot finds on the stick image, read-only and through livestick's own readers. */
async function look<T>(image: string, m: Medium, then?: (s: Seen) => Promise<T>, withBare = false): Promise<{ seen: Seen; extra: T | undefined }> {
  return withStick(image, {}, async (stick: Stick) => {
    const p1 = stick.volume('p1')!;
    const fat = (await p1.open())!;
    const baseDisk = await fat.openFile('/LiveOS/squashfs.img');
    const base = new SquashfsFileSystem(await SquashfsReader.open(baseDisk), baseDisk.size);
    const upperDisk = m.upperImage !== undefined ? await fat.openFile(m.upperImage) : stick.volume(m.upperVolume)!.disk!;
    const ext4Bytes = await bytesOf(upperDisk);
    // The replay works on a copy: the oracle gets the bytes as they are on the stick.
    const ext = await ext4AsMounted(ext4Bytes.slice());
    const exists = async (fs: FileSystem, p: string) => (await fs.stat(p).catch(() => undefined))?.kind === 'dir';
    const upperHere = (await exists(ext, m.upper)) && (await exists(ext, m.work));
    const view = upperHere ? await manifest(new OverlayFileSystem({ upper: { fs: ext, root: m.upper }, lowers: [{ fs: base, root: '/' }] })) : undefined;
    const fatNames = (await fat.readdir('/LiveOS')).map((e) => e.name);
    const upperParent = m.upper.slice(0, m.upper.lastIndexOf('/')) || '/';
    const extNames = (await ext.readdir(upperParent)).map((e) => e.name);
    const seen: Seen = {
      view,
      bare: withBare ? await manifest(base) : undefined,
      journal: fatNames.includes('livestick-overlayfs-journal.json'),
      leftovers: [...fatNames.filter(isLeftover).map((n) => `p1:/LiveOS/${n}`), ...extNames.filter(isLeftover).map((n) => `ext4:${upperParent}/${n}`)],
      fat: () => bytesOf(p1.disk!),
      ext4: async () => ext4Bytes,
    };
    await baseDisk.close();
    return { seen, extra: then ? await then(seen) : undefined };
  });
}

/** The oracles' verdicts (empty when clean): fsck.fat -n on the FAT partition, e2fsck -fn on the ext4. */
function oracles(dir: string, fat: Uint8Array, ext4: Uint8Array): string[] {
  const bad: string[] = [];
  if (hasTool('fsck.fat')) {
    writeSparse(join(dir, 'p1.fat'), nonZeroPieces(fat));
    const r = spawnSync('fsck.fat', ['-n', join(dir, 'p1.fat')], { encoding: 'utf8' });
    if (r.status !== 0) bad.push(`fsck.fat -n exit ${r.status}: ${r.stdout}${r.stderr}`);
  }
  if (hasTool('e2fsck')) {
    writeSparse(join(dir, 'upper.ext4'), nonZeroPieces(ext4));
    const r = spawnSync('e2fsck', ['-fn', join(dir, 'upper.ext4')], { encoding: 'utf8' });
    if (r.status !== 0) bad.push(`e2fsck -fn exit ${r.status}: ${r.stdout}${r.stderr}`);
  }
  rmSync(join(dir, 'p1.fat'), { force: true });
  rmSync(join(dir, 'upper.ext4'), { force: true });
  return bad;
}

/** A temporary directory on /dev/shm when it has 512 MiB free (the cases need ~100 MiB), else undefined. */
function shmDir(prefix: string): { dir: string; cleanup: () => void } | undefined {
  try {
    const st = statfsSync('/dev/shm');
    if (st.bavail * st.bsize < 512 * 2 ** 20) return undefined;
  } catch {
    return undefined;
  }
  const dir = mkdtempSync(join('/dev/shm', prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/**
 * The switch step a point of the base's FAT volume belongs to, from the stack that reached it: the
 * journal's write or removal, a rename or an unlink (its entry and FAT writes, or the flush after it);
 * undefined for the rest (the upper's ext4 transactions, whose stacks end at the writer's queue).
 */
function stepOf(stack: string): string | undefined {
  const fat = /\bFatFs\.(writeFile|rename|unlink|rmdir|flush)\b/.exec(stack);
  if (fat === null) return undefined;
  const op = /\b(writeJournal|removeJournal)\b/.exec(stack)?.[1] ?? (/\brollForward\b|\brollBack\b|\bdiscardBuild\b/.test(stack) ? 'switch' : undefined);
  return op === undefined ? undefined : `${op} ${fat[1]}`;
}

/** The 64 KiB pieces of an image that are not all zeros. */
function nonZeroPieces(bytes: Uint8Array): { size: number; pieces: [number, Uint8Array][] } {
  const pieces: [number, Uint8Array][] = [];
  const step = 64 << 10;
  const zeros = Buffer.alloc(step);
  for (let at = 0; at < bytes.byteLength; at += step) {
    const piece = bytes.subarray(at, Math.min(bytes.byteLength, at + step));
    if (Buffer.compare(piece, zeros.subarray(0, piece.byteLength)) !== 0) pieces.push([at, piece]);
  }
  return { size: bytes.byteLength, pieces };
}

/** Writes an image as a sparse file: only its non-zero pieces. */
function writeSparse(file: string, image: { size: number; pieces: readonly [number, Uint8Array][] }): void {
  const fd = openSync(file, 'wx');
  try {
    ftruncateSync(fd, image.size);
    for (const [at, piece] of image.pieces) writeSync(fd, piece, 0, piece.byteLength, at);
  } finally {
    closeSync(fd);
  }
}

/** At most `n` indices of `list`, evenly spread, always the first and the last. */
function spread<T>(list: readonly T[], n: number): T[] {
  if (list.length <= n) return [...list];
  const out: T[] = [];
  for (let i = 0; i < n; i++) out.push(list[Math.round((i * (list.length - 1)) / (n - 1))]!);
  return [...new Set(out)];
}

describe('overlayfs on stick images: fault injection during merge and reset', { skip: canMount ? false : 'needs root and overlayfs in the host kernel' }, () => {
  // The media are built (and the kernel writes the upper) in a plain temporary directory; the cases
  // run on tmpfs where there is room: each case flushes its image a few hundred times, and an fsync
  // on a disk costs milliseconds.
  const tmp = tempDir('livestick-ovlimgfaults-');
  const work = shmDir('livestick-ovlimgfaults-') ?? tmp;
  const images = new Map<string, string>();
  const templates = new Map<string, { size: number; pieces: [number, Uint8Array][] }>();
  let expected: string[];
  let bare: string[];
  let n = 0;
  const coverage: string[] = [];

  before(async () => {
    const lower = join(tmp.dir, 'lower');
    for (const d of ['usr/bin', 'usr/lib', 'etc/skel', 'proc']) mkdirSync(join(lower, d), { recursive: true });
    for (let i = 0; i < 6; i++) writeFileSync(join(lower, 'usr/lib', `lib${i}.so`), Buffer.alloc(40_000 + i, i + 1));
    writeFileSync(join(lower, 'usr/bin/tool'), 'tool v1\n');
    writeFileSync(join(lower, 'etc/skel/.bashrc'), 'rc\n');
    mkdirSync(join(lower, 'usr/share/doc/pkg'), { recursive: true });
    writeFileSync(join(lower, 'usr/share/doc/pkg/README'), 'readme\n');
    const baseImg = join(tmp.dir, 'base.img');
    await writeSquashfs(lower, baseImg, { compressor: 'gzip', threads: 0, mkfsTime: 1_700_000_000 });
    // The kernel writes the upper: a rewrite, a new file, a deletion (whiteout), a removed dir and a replaced one (opaque).
    const stage = join(tmp.dir, 'stage');
    const upper = join(stage, 'LiveOS', OVERLAY);
    const work = join(stage, 'LiveOS', 'ovlwork');
    mkdirSync(upper, { recursive: true });
    mkdirSync(work);
    const mnt = join(tmp.dir, 'mnt');
    mkdirSync(mnt);
    execFileSync('mount', ['-t', 'overlay', 'x', '-o', `lowerdir=${lower},upperdir=${upper},workdir=${work}`, mnt]);
    try {
      writeFileSync(join(mnt, 'usr/bin/tool'), 'tool v2\n');
      writeFileSync(join(mnt, 'usr/bin/new'), Buffer.alloc(70_000, 9));
      rmSync(join(mnt, 'usr/lib/lib0.so'));
      rmSync(join(mnt, 'etc/skel'), { recursive: true });
      rmSync(join(mnt, 'usr/share/doc/pkg'), { recursive: true });
      mkdirSync(join(mnt, 'usr/share/doc/pkg'));
      writeFileSync(join(mnt, 'usr/share/doc/pkg/README'), 'short\n');
    } finally {
      execFileSync('umount', [mnt]);
    }
    const imageStage = join(tmp.dir, 'image-stage');
    mkdirSync(imageStage);
    execFileSync('cp', ['-a', upper, join(imageStage, 'overlayfs')]);
    execFileSync('cp', ['-a', work, join(imageStage, 'ovlwork')]);
    const base = readFileSync(baseImg);

    const p2 = join(tmp.dir, 'p2.ext4');
    execFileSync('mke2fs', ['-q', '-t', 'ext4', '-L', 'persist', '-d', stage, p2, '12M']);
    const gpt = join(tmp.dir, 'gpt.img');
    await gptStick(gpt, 56, [
      { sizeMiB: 40, type: 'efi-system', fill: (d) => fatOn(d, { label: 'LIVE', serial: 0x2026_1201 }, (fs) => put(fs, '/LiveOS/squashfs.img', base)) },
      { sizeMiB: 12, type: 'linux-filesystem', fill: async (d) => void (await d.write(readFileSync(p2), 0)) },
    ]);
    images.set(MEDIA[0]!.name, gpt);

    const img = join(tmp.dir, 'overlay.ext4');
    execFileSync('mke2fs', ['-q', '-t', 'ext4', '-L', 'OVERLAY', '-d', imageStage, img, '8M']);
    const vfat = join(tmp.dir, 'vfat.img');
    await gptStick(vfat, 44, [
      {
        sizeMiB: 40,
        type: 'efi-system',
        fill: (d) =>
          fatOn(d, { label: 'LIVE', serial: 0x2026_1201 }, async (fs) => {
            await put(fs, '/LiveOS/squashfs.img', base);
            await put(fs, `/LiveOS/${OVERLAY}`, readFileSync(img));
          }),
      },
    ]);
    images.set(MEDIA[1]!.name, vfat);

    const g = (await look(gpt, MEDIA[0]!, undefined, true)).seen;
    const v = (await look(vfat, MEDIA[1]!)).seen;
    assert.ok(g.view !== undefined && v.view !== undefined, 'both media have an upper');
    assert.deepEqual(v.view, g.view, 'both media show the same merged tree');
    assert.deepEqual([g.leftovers, v.leftovers], [[], []]);
    expected = g.view;
    bare = g.bare!;
    assert.notDeepEqual(expected, bare, 'the upper changes the tree');
    for (const m of MEDIA) {
      const { extra } = await look(images.get(m.name)!, m, async (s) => oracles(tmp.dir, await s.fat(), await s.ext4()));
      assert.deepEqual(extra, [], `${m.name}: the oracles find the fresh medium clean`);
      templates.set(m.name, nonZeroPieces(readFileSync(images.get(m.name)!)));
    }
  });
  after(() => {
    tmp.cleanup();
    if (work !== tmp) work.cleanup();
    console.log(`# overlayfs fault injection on stick images:\n${coverage.map((c) => `#   ${c}`).join('\n')}`);
  });

  /** A fresh copy of a medium's template: only its non-zero pieces are written (the images are mostly holes). */
  const fresh = (m: Medium): string => {
    const file = join(work.dir, `c${n++}.img`);
    writeSparse(file, templates.get(m.name)!);
    return file;
  };

  const commands: [string, (image: string) => Promise<unknown>, () => string[][]][] = [
    ['merge', (image) => mergeOverlayfs(image, { threads: 0, mkfsTime: 1_760_000_000 }), () => [expected]],
    ['reset', (image) => resetOverlayfs(image), () => [expected, bare]],
  ];

  for (const m of MEDIA) {
    for (const [name, run, accepted] of commands) {
      test(`${m.name}, ${name}: crashes and errnos across the build and the switch`, async () => {
        const started = Date.now();
        // The counting run: every point, and the stack that reached it.
        const probe = fresh(m);
        const stacks = new Map<number, string>();
        const trace = await withFaultPlan((p) => void stacks.set(p.index, new Error().stack ?? ''), () => run(probe));
        if (trace.error !== undefined) throw trace.error;
        rmSync(probe);
        const all = [...stacks.keys()].sort((a, b) => a - b);
        // The switch starts with the journal's first write (it is read earlier, but reads are no points).
        const journalAt = all.find((i) => /\bwriteJournal\b/.test(stacks.get(i)!)) ?? -1;
        assert.ok(journalAt > 1 && all.length >= 50, `${name} writes a journal (${all.length} points, journal at ${journalAt})`);
        const build = all.filter((i) => i < journalAt);
        const key = all.filter((i) => i >= journalAt && stepOf(stacks.get(i)!) !== undefined);
        const rest = all.filter((i) => i >= journalAt && stepOf(stacks.get(i)!) === undefined);
        // The first point of each file operation the switch does on FAT (writing, renaming, unlinking; not the flushes).
        const firsts = key.filter((i) => !/ flush$/.test(stepOf(stacks.get(i)!)!) && stepOf(stacks.get(i - 1) ?? '') !== stepOf(stacks.get(i)!));
        const plan: [number, string][] = [];
        const oneEach = (points: readonly number[]) => {
          for (const [k, i] of points.entries()) plan.push([i, ERRNOS[k % ERRNOS.length]!], [i, 'crash']);
        };
        oneEach(FULL ? build : spread(build, PRE_SAMPLES));
        for (const [k, i] of key.entries()) for (const action of FULL || firsts.includes(i) ? [...ERRNOS, 'crash'] : [ERRNOS[k % ERRNOS.length]!, 'crash']) plan.push([i, action]);
        oneEach(FULL ? rest : spread(rest, SWITCH_SAMPLES));
        plan.sort((a, b) => a[0] - b[0]);
        const steps = new Set(key.map((i) => stepOf(stacks.get(i)!)));
        for (const step of ['writeJournal writeFile', 'writeJournal rename', 'removeJournal unlink', ...(name === 'merge' ? ['switch rename'] : [])]) assert.ok(steps.has(step), `${name}: the switch's "${step}" is found among ${[...steps].join(', ')}`);

        let oracleRuns = 0;
        for (const [k, [index, action]] of plan.entries()) {
          const image = fresh(m);
          const where = `${m.name}, ${name}, ${action} at point ${index} of ${all.length} (${index < journalAt ? 'build' : `switch: ${stepOf(stacks.get(index)!) ?? 'upper'}`})`;
          const r = await withFaultPlan((q) => (q.index === index ? action : undefined), () => run(image));
          assert.ok(r.crashed !== undefined || action !== 'crash', `${where}: the crash happened`);
          if (action !== 'crash' && r.error !== undefined) {
            assert.ok(r.error instanceof LivestickError && !(r.error instanceof SimulatedCrash), `${where}: a typed error, got ${String(r.error)}`);
            assert.doesNotMatch(r.error.message, /\bbug\b/i, `${where}: not a bug`);
          }
          const now = (await look(image, m)).seen;
          if (now.view === undefined) assert.ok(now.journal, `${where}: no upper only while the journal exists`);
          else assert.ok(accepted().some((e) => JSON.stringify(e) === JSON.stringify(now.view)), `${where}: a boot right away sees the user's tree`);
          await overlayfsStatus(image);
          const withOracle = k % ORACLE_EVERY === 0 || (action === 'crash' && index >= journalAt);
          const { seen, extra } = await look(image, m, async (s) => (withOracle ? oracles(work.dir, await s.fat(), await s.ext4()) : []));
          assert.deepEqual(seen.leftovers, [], `${where}: after the next command, no journal and no leftovers`);
          assert.ok(seen.view !== undefined && accepted().some((e) => JSON.stringify(e) === JSON.stringify(seen.view)), `${where}: after the next command, exactly the tree from before`);
          assert.deepEqual(extra, [], `${where}: the oracles find both filesystems clean`);
          if (withOracle) oracleRuns++;
          rmSync(image);
        }
        coverage.push(
          `${m.name}, ${name}: ${all.length} points (build ${build.length}; switch ${key.length} on the base's FAT, ${rest.length} in the upper's ext4), ` +
            `${plan.length} cases (${FULL ? 'every point' : `build ${Math.min(build.length, PRE_SAMPLES)} and ext4 ${Math.min(rest.length, SWITCH_SAMPLES)} sampled, FAT all, ${firsts.length} with every errno`}), ${oracleRuns} with the oracles, ${((Date.now() - started) / 1000).toFixed(1)} s`,
        );
      });
    }
  }
});
