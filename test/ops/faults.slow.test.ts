/**
 * Injected failures at every file operation of merge, the switch, reset and recovery.
 *
 * A counting run lists every fault point a command reaches (io/faults.ts: each open, create, write,
 * fsync, truncate, rename, unlink, link and copy on the medium). Then, for each point, the command is
 * run again on a fresh copy of the medium with that one operation failing — with an errno (EPERM,
 * ENOSPC, EIO, EROFS) or a crash (that operation and everything after it never happen, as with
 * SIGKILL or a pulled stick). Crashes inside the switch are followed by recovery crashed at each of
 * its own points. After each case:
 *   - right away, what a boot would find is safe: a base, and an overlay only over the base it
 *     belongs to (no overlay only while a journal exists);
 *   - an errno never escapes as an untyped error or a "bug", and a failed switch has rolled back;
 *   - the next livestick command leaves the medium clean (no journal, no leftovers), and the tree a
 *     boot sees is exactly the one before (or, for reset, before or after).
 * The suite reports how many distinct points and cases it covered.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from '../helpers/tmp.ts';
import { SimulatedCrash, tracePoints, withFaultPlan, type FaultPointInfo } from '../../src/io/faults.ts';
import { LivestickError } from '../../src/errors.ts';
import { mergeMedium } from '../../src/ops/merge.ts';
import { resetMedium } from '../../src/ops/reset.ts';
import { recoverMedium } from '../../src/ops/switch.ts';
import { directoryRoot } from '../../src/ops/root.ts';
import { mediumStatus } from '../../src/ops/status.ts';
import { applyPackageUpdate, buildSampleMedium } from '../../src/ops/sample.ts';
import { bootFinds, mediumView } from './helpers.ts';

const ERRNOS = ['EPERM', 'ENOSPC', 'EIO', 'EROFS'];
const MiB = 2 ** 20;

interface Coverage {
  points: Set<string>;
  cases: number;
}

/** No journal and no leftovers; `removalFailed`: the failed operation was itself a removal, whose file may stay for the next command. */
function assertClean(dir: string, removalFailed = false, where = ''): void {
  const names = readdirSync(join(dir, 'LiveOS'));
  assert.ok(!names.includes('livestick-journal.json'), `${where} no journal is left`);
  const leftovers = names.filter((n) => n.includes('.livestick-') && !n.includes('-old-'));
  if (!removalFailed) assert.deepEqual(leftovers, [], `${where} no leftovers`);
  else assert.ok(leftovers.length <= 2, `at most what could not be removed is left: ${leftovers.join(', ')}`);
}

function assertTyped(err: unknown, where: string): void {
  assert.ok(err instanceof LivestickError, `${where}: a typed error, got ${String(err)}`);
  assert.ok(!(err instanceof SimulatedCrash));
  assert.doesNotMatch((err as Error).message, /bug/);
}

const key = (p: FaultPointInfo, action: string) => `${p.op}:${p.path.replace(/\/tmp\/[^ ]*?\/c\d+/g, '<m>')}#${p.index}:${action}`;

describe('fault injection at every file operation', () => {
  const tmp = tempDir('livestick-faults-');
  const template = join(tmp.dir, 'template');
  let n = 0;
  let original: Map<string, string>;
  let baseOnly: Map<string, string>;
  const coverage: Coverage = { points: new Set(), cases: 0 };
  const fresh = (): string => {
    const dir = join(tmp.dir, `c${n++}`);
    cpSync(template, dir, { recursive: true });
    return dir;
  };
  const dispose = (dir: string) => rmSync(dir, { recursive: true, force: true });
  const merge = (dir: string, keepOld = false) => mergeMedium(dir, { threads: 0, mkfsTime: 1_760_000_000, keepOld });

  before(async () => {
    await buildSampleMedium(template, { rootfsBytes: 24 * MiB, overlayBytes: 24 * MiB });
    await applyPackageUpdate(template, 1);
    original = await mediumView(template);
    baseOnly = await mediumView(template, { overlay: false });
  });
  after(() => {
    tmp.cleanup();
    console.log(`# fault injection: ${coverage.points.size} distinct points, ${coverage.cases} cases`);
  });

  async function nextCommandLeavesItClean(dir: string, expected: Map<string, string>[], where: string): Promise<void> {
    await mediumStatus(dir);
    assertClean(dir, false, `${where}: after the next command,`);
    assert.equal(await bootFinds(dir), 'pair');
    const view = await mediumView(dir);
    assert.ok(
      expected.some((e) => JSON.stringify([...e]) === JSON.stringify([...view])),
      'the tree a boot sees is exactly one of the expected ones',
    );
  }

  for (const keepOld of [false, true]) {
    test(`merge${keepOld ? ' --keep-old' : ''}: an errno or a crash at every point`, async () => {
      const probe = fresh();
      const { points } = await tracePoints(() => merge(probe, keepOld));
      dispose(probe);
      assert.ok(points.length >= 20, `merge reaches ${points.length} fault points`);
      // The first write of the journal (reading it, to see whether recovery is needed, comes earlier).
      const journalAt = points.find((p) => p.op === 'create' && p.path.includes('livestick-journal.json'))?.index ?? -1;
      assert.ok(journalAt > 0, 'the switch writes a journal');
      // --keep-old changes only the switch (before it, only the space check's arithmetic): its build
      // points are the plain merge's, which that run covers, so it starts at the journal.
      for (const p of keepOld ? points.filter((q) => q.index >= journalAt) : points) {
        // Errnos: every point gets one, the switch's points (from the journal on) get all of them.
        const errnos = p.index >= journalAt ? ERRNOS : [ERRNOS[p.index % ERRNOS.length] as string];
        for (const errno of errnos) {
          const dir = fresh();
          const r = await withFaultPlan((q) => (q.index === p.index ? errno : undefined), () => merge(dir, keepOld));
          coverage.points.add(key(p, errno));
          coverage.cases++;
          const where = `merge, ${errno} at point ${p.index} (${p.op} ${p.path})`;
          if (r.error !== undefined) {
            assertTyped(r.error, where);
            assertClean(dir, p.op === 'unlink', where);
            assert.deepEqual(await mediumView(dir), original, `${where}: rolled back, the old pair is intact`);
          }
          await bootFinds(dir);
          await nextCommandLeavesItClean(dir, [original], where);
          dispose(dir);
        }
        const dir = fresh();
        const r = await withFaultPlan((q) => (q.index === p.index ? 'crash' : undefined), () => merge(dir, keepOld));
        assert.ok(r.crashed !== undefined || r.error === undefined, 'the crash happened');
        coverage.points.add(key(p, 'crash'));
        coverage.cases++;
        await bootFinds(dir);
        if (p.index > journalAt && !keepOld) {
          // Recovery itself crashed at each of its points, then run again.
          const { points: rec } = await (async () => {
            const copy = join(tmp.dir, `rec${n++}`);
            cpSync(dir, copy, { recursive: true });
            const t = await tracePoints(() => recoverMedium({ root: directoryRoot(copy, { write: true }), liveos: '/LiveOS' }));
            dispose(copy);
            return t;
          })();
          for (const q of rec) {
            const copy = join(tmp.dir, `rec${n++}`);
            cpSync(dir, copy, { recursive: true });
            await withFaultPlan((x) => (x.index === q.index ? 'crash' : undefined), () => recoverMedium({ root: directoryRoot(copy, { write: true }), liveos: '/LiveOS' }));
            coverage.points.add(`recovery after ${key(p, 'crash')}: ${key(q, 'crash')}`);
            coverage.cases++;
            await bootFinds(copy);
            await nextCommandLeavesItClean(copy, [original], `merge crashed at ${p.index} (${p.op} ${p.path}), recovery crashed at ${q.index} (${q.op} ${q.path})`);
            dispose(copy);
          }
        }
        await nextCommandLeavesItClean(dir, [original], `merge crashed at ${p.index} (${p.op} ${p.path})`);
        dispose(dir);
      }
    });
  }

  test('reset: an errno or a crash at every point leaves the old or the empty overlay, never a broken one', async () => {
    const probe = fresh();
    const { points } = await tracePoints(() => resetMedium(probe));
    dispose(probe);
    assert.ok(points.length >= 3);
    for (const p of points) {
      for (const action of [...ERRNOS, 'crash']) {
        const dir = fresh();
        const r = await withFaultPlan((q) => (q.index === p.index ? action : undefined), () => resetMedium(dir));
        coverage.points.add(`reset ${key(p, action)}`);
        coverage.cases++;
        if (action !== 'crash' && r.error !== undefined) assertTyped(r.error, `reset, ${action} at ${p.op} ${p.path}`);
        assert.equal(await bootFinds(dir), 'pair');
        await nextCommandLeavesItClean(dir, [original, baseOnly], `reset, ${action} at ${p.index} (${p.op} ${p.path})`);
        dispose(dir);
      }
    }
  });
});
