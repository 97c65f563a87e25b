/**
 * The crash-safe switch on a FAT32 stick image (issue 12): FAT has no atomic rename and no hard links,
 * so the switch runs on FAT's directory-entry semantics (filesystem.ts: an interrupted rename can leave
 * two entries naming the same data; repeating it finishes it). A merge on the image is crashed at its
 * fault points — every one, the build's included — and EIO, ENOSPC and EPERM each fail every one in
 * turn; after each, a boot finds a base and an overlay only over its own base, the
 * next command leaves the medium clean with exactly the old or the new tree, and fsck.fat finds no
 * cross-linked or damaged file (lost clusters — space, never data — are allowed after a crash).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from '../helpers/tmp.ts';
import { missingTools, run } from '../helpers/tools.ts';
import { SimulatedCrash, tracePoints, withFaultPlan } from '../../src/io/faults.ts';
import { LivestickError } from '../../src/errors.ts';
import { mergeMedium } from '../../src/ops/merge.ts';
import { mediumStatus } from '../../src/ops/status.ts';
import { openMediumRoot } from '../../src/ops/root.ts';
import { applyPackageUpdate, buildSampleMedium } from '../../src/ops/sample.ts';
import { bootFinds, mediumView } from './helpers.ts';
import { fatStickFrom } from './stick.ts';

const MiB = 2 ** 20;

describe('fault injection on a FAT32 stick image', { skip: missingTools('fsck.fat') }, () => {
  const tmp = tempDir('livestick-faults-fat-');
  const template = join(tmp.dir, 'template.img');
  let part: { startBytes: number; sizeBytes: number };
  let original: Map<string, string>;
  let n = 0;
  let cases = 0;
  const fresh = (): string => {
    const img = join(tmp.dir, `c${n++}.img`);
    // A sparse copy: the image is mostly holes.
    run('cp', ['--sparse=always', template, img]);
    return img;
  };
  const merge = (img: string) => mergeMedium(img, { threads: 0, mkfsTime: 1_760_000_000 });

  before(async () => {
    const dir = join(tmp.dir, 'dir');
    await buildSampleMedium(dir, { rootfsBytes: 24 * MiB, overlayBytes: 24 * MiB });
    await applyPackageUpdate(dir, 1);
    part = await fatStickFrom(dir, template, 96);
    original = await mediumView(template);
  });
  after(() => {
    tmp.cleanup();
    console.log(`# fault injection on FAT: ${cases} cases`);
  });

  /**
   * fsck.fat -n on the partition. Right after a crash it may report only what a cut write leaves —
   * the dirty flag (byte 65 of the primary boot sector), FAT copies that differ, lost clusters and the
   * free count, long-name slots without their entry, and the two names of a cut rename sharing one
   * chain; after the next command (which repairs a dirty volume and finishes the switch) nothing.
   */
  function fsckSound(img: string, where: string, state: 'crashed' | 'recovered'): void {
    const p = `${img}.part`;
    run('dd', [`if=${img}`, `of=${p}`, 'bs=1M', `skip=${part.startBytes / MiB}`, `count=${part.sizeBytes / MiB}`, 'conv=sparse', 'status=none']);
    const r = run('fsck.fat', ['-n', p], { allowFail: true });
    rmSync(p, { force: true });
    const report = `${r.stdout}${r.stderr}`;
    if (state === 'recovered') {
      assert.equal(r.status, 0, `${where}: after the next command fsck.fat -n finds nothing:\n${report}`);
      return;
    }
    const allowed = [
      /^fsck\.fat /, /^Leaving filesystem unchanged/, /: \d+ files, \d+\/\d+ clusters$/,
      /differences between boot sector and its backup/, /mostly harmless\. Differences/, /^ {2}65:01\/00$/, /Not automatically fixing this/, /Dirty bit is set/, /removing dirty bit/,
      /FATs differ but appear to be intact/, /Using first FAT/, /Reclaimed \d+ unused clusters/, /Free cluster summary wrong/, /Auto-correcting/,
      /Orphaned long file name part/, /Auto-deleting/,
      /^\/LiveOS\/\S+ {2}and$/, /^\/LiveOS\/\S+$/, /share clusters\./, /Truncating second to \d+ bytes/, /File size is \d+ bytes, cluster chain length is (> )?\d+ bytes/, /Truncating file to \d+ bytes/,
    ];
    const lines = report.split('\n').filter((l) => l.trim() !== '' && !allowed.some((re) => re.test(l)));
    assert.deepEqual(lines, [], `${where}: fsck.fat finds only what a cut write leaves:\n${report}`);
  }

  async function nextCommandLeavesItClean(img: string, where: string): Promise<void> {
    await mediumStatus(img);
    const root = await openMediumRoot(img);
    const names = (await root.fs.readdir('/LiveOS')).map((e) => e.name);
    await root.close();
    assert.ok(!names.includes('livestick-journal.json'), `${where}: no journal left`);
    assert.deepEqual(names.filter((x) => x.includes('.livestick-')), [], `${where}: no leftovers`);
    assert.equal(await bootFinds(img), 'pair', where);
    // Either the old pair (base + its overlay) or the new one (the merged base, an empty overlay): the same tree.
    const view = await mediumView(img);
    assert.ok(JSON.stringify([...view]) === JSON.stringify([...original]), `${where}: a boot sees exactly the tree before the merge`);
    fsckSound(img, where, 'recovered');
  }

  test('merge on the image: a crash at every point, then recovery', async () => {
    const probe = fresh();
    const { points } = await tracePoints(() => merge(probe));
    rmSync(probe, { force: true });
    assert.ok(points.length >= 20, `merge reaches ${points.length} fault points`);
    for (const p of points) {
      const img = fresh();
      const where = `crash at ${p.index}/${points.length} (${p.op})`;
      const r = await withFaultPlan((q) => (q.index === p.index ? 'crash' : undefined), () => merge(img));
      assert.ok(r.crashed !== undefined, `${where}: the crash happened`);
      cases++;
      await bootFinds(img);
      fsckSound(img, `${where}, before recovery`, 'crashed');
      await nextCommandLeavesItClean(img, where);
      rmSync(img, { force: true });
    }
  });

  test('merge on the image: EIO, ENOSPC and EPERM at every point are typed errors, rolled back or safe', async () => {
    const probe = fresh();
    const { points } = await tracePoints(() => merge(probe));
    rmSync(probe, { force: true });
    for (const p of points) {
      for (const errno of ['EIO', 'ENOSPC', 'EPERM']) {
        const img = fresh();
        const where = `${errno} at ${p.index}/${points.length} (${p.op})`;
        const r = await withFaultPlan((q) => (q.index === p.index ? errno : undefined), () => merge(img));
        cases++;
        if (r.error !== undefined) {
          assert.ok(r.error instanceof LivestickError && !(r.error instanceof SimulatedCrash), `${where}: a typed error, got ${String(r.error)}`);
          assert.doesNotMatch((r.error as Error).message, /bug/);
        }
        await bootFinds(img);
        await nextCommandLeavesItClean(img, where);
        rmSync(img, { force: true });
      }
    }
  });
});

