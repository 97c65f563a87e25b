/**
 * Crash safety of `home` on a FAT32 stick image (issue 12), in process with io/faults.ts: a command
 * on the image is crashed (SimulatedCrash: that write and every later one never happen) at its fault
 * points — every point of an import and of a resize on a plain home, every third on a LUKS2 home (each
 * LUKS2 unlock costs its 125 ms digest), a sample of a create over an existing home with every point
 * of its rename and after — and then the next home command runs. It must find exactly the old home or
 * the new one (an import cut before its journal commit block is the old tree, after it the new tree
 * once replayed; a resize cut before its undo log is gone is rolled back to the old size and tree),
 * leave no undo log or temporary image on the stick, and fsck.fat may then report only what a crash
 * leaves on FAT (the dirty flag, lost clusters, a stale free count), never a cross-linked or damaged file.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import { SimulatedCrash, tracePoints, withFaultPlan, type FaultPointInfo } from '../../src/io/faults.ts';
import { createHome, homeExport, homeImport, homeInfo, homeList, homeResize, type HomeAccess } from '../../src/ops/home.ts';
import { tempDir } from '../helpers/tmp.ts';
import { missingTools, run } from '../helpers/tools.ts';
import { fatStickFrom } from '../ops/stick.ts';
import { LOW_KDF, access, describeTree, e2fsckHome, makeTree, type Node } from './helpers.ts';
import { fsckFat, stickLiveos, type Partition } from './fat.ts';

const MiB = 2 ** 20;

describe('home on a FAT32 stick image, crashed at its fault points', { skip: missingTools('fsck.fat', 'e2fsck') }, () => {
  const tmp = tempDir('livestick-home-stick-crash-');
  const src = join(tmp.dir, 'src');
  let part: Partition;
  const kinds = {
    plain: { template: join(tmp.dir, 'plain.img'), acc: {} as HomeAccess, oldTree: new Map<string, Node>() },
    LUKS2: { template: join(tmp.dir, 'luks.img'), acc: access('crash pass'), oldTree: new Map<string, Node>() },
  };
  let n = 0;

  /** A sparse copy of a template stick. */
  const fresh = (template: string): string => {
    const img = join(tmp.dir, `case-${n++}.img`);
    run('cp', ['--sparse=always', template, img]);
    return img;
  };

  async function tree(img: string, acc: HomeAccess): Promise<Map<string, Node>> {
    const out = join(tmp.dir, `export-${n++}`);
    await homeExport(img, out, acc);
    const t = describeTree(out);
    rmSync(out, { recursive: true, force: true });
    return t;
  }

  before(async () => {
    // Small sticks: a FAT32 partition whose LiveOS/ holds a base stand-in and a home (plain or LUKS2) with a few files.
    const medium = join(tmp.dir, 'medium');
    mkdirSync(join(medium, 'LiveOS'), { recursive: true });
    writeFileSync(join(medium, 'LiveOS', 'squashfs.img'), new Uint8Array(64 * 1024).fill(0x73));
    const seed = join(tmp.dir, 'seed');
    makeTree(seed, { files: 2, bigBytes: 5000 });
    makeTree(src, { files: 6, bigBytes: 600_000 });
    for (const [kind, k] of Object.entries(kinds)) {
      part = await fatStickFrom(medium, k.template, 96);
      await createHome(k.template, { size: 24 * MiB, encrypt: kind === 'LUKS2', kdf: LOW_KDF, ...k.acc });
      await homeImport(k.template, seed, '/', k.acc);
      k.oldTree = await tree(k.template, k.acc);
      fsckFat(k.template, part, { where: `the ${kind} template` });
    }
  });
  after(() => tmp.cleanup());

  /** Crashes `command` on a fresh copy at `p`, then checks what the next home command finds; returns it. */
  async function crashAt(template: string, p: FaultPointInfo, total: number, command: (img: string) => Promise<unknown>, judge: (img: string, where: string) => Promise<string>): Promise<string> {
    const img = fresh(template);
    const where = `crash at point ${p.index}/${total} (${p.op} ${p.path.replace(tmp.dir, '')})`;
    const r = await withFaultPlan((q) => (q.index === p.index ? 'crash' : undefined), () => command(img));
    assert.ok(r.crashed !== undefined && r.error instanceof SimulatedCrash, `${where}: the command was cut (${String(r.error)})`);
    fsckFat(img, part, { state: 'crashed', where: `${where}, before the next command` });
    const outcome = await judge(img, where);
    assert.deepEqual((await stickLiveos(img)).filter((name) => name.includes('.livestick-')), [], `${where}: no undo log or temporary image left`);
    fsckFat(img, part, { state: 'recovered', where: `${where}, after the next command` });
    rmSync(img, { force: true });
    return outcome;
  }

  /** Runs `command` once (checked by `first`) for its fault points, then crashes it at the chosen ones; counts the outcomes. */
  async function crashSeries(
    what: string,
    template: string,
    command: (img: string) => Promise<unknown>,
    choose: (i: number, all: FaultPointInfo[]) => boolean,
    judge: (img: string, where: string) => Promise<string>,
    first?: (img: string) => Promise<void>,
  ): Promise<Map<string, number>> {
    const probe = fresh(template);
    const { points } = await tracePoints(() => command(probe));
    await first?.(probe);
    rmSync(probe, { force: true });
    assert.ok(points.length > 20, `${what} reaches ${points.length} fault points`);
    const chosen = points.filter((_, i) => choose(i, points));
    const outcomes = new Map<string, number>();
    const started = Date.now();
    for (const p of chosen) {
      const outcome = await crashAt(template, p, points.length, command, judge);
      outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
    }
    console.log(`# ${what}: ${chosen.length} of ${points.length} crash points in ${((Date.now() - started) / 1000).toFixed(1)} s: ${JSON.stringify(Object.fromEntries(outcomes))}`);
    return outcomes;
  }

  const every = (k: number): string => (k === 1 ? 'every point' : `every ${k === 3 ? 'third' : `${k}th`} point`);

  for (const [kind, step] of [['plain', 1], ['LUKS2', 3]] as const) {
    test(`import into a ${kind} home: ${every(step)} gives the old tree or the new one`, async () => {
      const k = kinds[kind];
      let newTree = new Map<string, Node>();
      const outcomes = await crashSeries(
        `import (${kind})`,
        k.template,
        (img) => homeImport(img, src, '/new', k.acc),
        (i) => i % step === 0,
        async (img, where) => {
          // The next command undoes or completes the import (undo log, journal replay), then the tree is read.
          await homeList(img, '/', k.acc);
          const t = await tree(img, k.acc);
          const which = isDeepStrictEqual(t, k.oldTree) ? 'old' : isDeepStrictEqual(t, newTree) ? 'new' : undefined;
          assert.ok(which, `${where}: neither the old tree nor the new one: ${[...t.keys()].join(' ')}`);
          return which;
        },
        async (img) => {
          newTree = await tree(img, k.acc);
          const imported = new Map([...newTree].filter(([p]) => p.startsWith('new/')).map(([p, v]) => [p.slice(4), v] as const));
          assert.deepEqual(imported, describeTree(src), 'the import itself');
          assert.deepEqual(new Map([...newTree].filter(([p]) => p !== 'new' && !p.startsWith('new/'))), k.oldTree);
        },
      );
      assert.deepEqual([...outcomes.keys()].sort(), ['new', 'old'], 'crashes landed before and after the commit');
    });
  }

  for (const [kind, step] of [['plain', 1], ['LUKS2', 3]] as const) {
    test(`resize of a ${kind} home (under the undo log, the file grown on FAT): ${every(step)} gives the old size and tree, or the new size and the same tree`, async () => {
      const k = kinds[kind];
      const outcomes = await crashSeries(`resize (${kind})`, k.template, (img) => homeResize(img, 40 * MiB, k.acc), (i) => i % step === 0, async (img, where) => {
        const info = await homeInfo(img, k.acc);
        assert.ok(info.fileSize === 24 * MiB || info.fileSize === 40 * MiB, `${where}: size ${info.fileSize}`);
        assert.equal(info.filesystem?.size, info.fileSize - (info.luks?.payloadOffset ?? 0), `${where}: the filesystem fills the payload`);
        assert.ok(isDeepStrictEqual(await tree(img, k.acc), k.oldTree), `${where}: the tree is untouched`);
        const fsck = await e2fsckHome(img, `${img}.fs`, k.acc);
        assert.equal(fsck.status, 0, `${where}: ${fsck.out}`);
        return info.fileSize === 24 * MiB ? 'old' : 'new';
      });
      assert.deepEqual([...outcomes.keys()].sort(), ['new', 'old']);
    });
  }

  test('create --force over a plain home (a rename onto it, not atomic on FAT): a sample of points and all of the rename give the old home or the new empty one', async () => {
    const k = kinds.plain;
    const outcomes = await crashSeries(
      'create --force',
      k.template,
      (img) => createHome(img, { size: 24 * MiB, force: true }),
      // Building the new image is many writes to a temporary file: a sample; the rename and what follows it: every point.
      (i, all) => i % 10 === 0 || i >= all.length - 30,
      async (img, where) => {
        const names = (await homeList(img, '/', k.acc)).entries.map((e) => e.name);
        if (isDeepStrictEqual(names, ['lost+found'])) return 'new';
        assert.ok(isDeepStrictEqual(await tree(img, k.acc), k.oldTree), `${where}: neither the old home nor the new one`);
        return 'old';
      },
    );
    assert.deepEqual([...outcomes.keys()].sort(), ['new', 'old']);
  });
});
