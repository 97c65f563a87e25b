/**
 * Fault injection: the merge is killed (SIGKILL) at every step boundary and at random moments. Right
 * after the kill, a boot must find the old base with the old overlay, the new base with a fresh overlay,
 * or (mid-switch, journal present) a base with no overlay — never an overlay over a base it does not
 * belong to, never a missing base. The next livestick command completes or rolls back the switch, and
 * the tree a boot sees is exactly the one before the merge.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { tempDir } from '../helpers/tmp.ts';
import { runCli } from '../helpers/cli.ts';
import { bootFinds, mediumView, updatedSample } from './helpers.ts';

const STEPS = ['built', 'verified', 'overlay-created', 'journal-written', 'old-base-kept', 'old-overlay-moved', 'base-replaced', 'overlay-replaced', 'switch-done'];
const root = fileURLToPath(new URL('../..', import.meta.url));

function mergeKilledAfter(dir: string, ms: number): Promise<number | null> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', join(root, 'src/cli/main.ts'), 'merge', dir, '--json'], { cwd: root, stdio: 'ignore' });
    const timer = setTimeout(() => child.kill('SIGKILL'), ms);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve(code);
    });
  });
}

describe('merge fault injection', () => {
  const tmp = tempDir('livestick-fault-');
  let n = 0;
  let expected: Map<string, string>;
  before(async () => {
    expected = await mediumView(await updatedSample(join(tmp.dir, 'reference')));
  });
  after(() => tmp.cleanup());

  async function afterCrash(dir: string): Promise<void> {
    await bootFinds(dir);
    const r = runCli(['status', dir, '--json']);
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.ok(!existsSync(join(dir, 'LiveOS', 'livestick-journal.json')), 'the journal is gone after recovery');
    assert.deepEqual(readdirSync(join(dir, 'LiveOS')).filter((f) => f.includes('.livestick-') && !f.includes('-old-')), [], 'no leftovers');
    assert.equal(await bootFinds(dir), 'pair');
    assert.deepEqual(await mediumView(dir), expected, 'not a byte of user data lost');
  }

  for (const step of STEPS) {
    for (const keepOld of step === 'old-base-kept' || step === 'switch-done' ? [false, true] : [false]) {
      test(`killed at "${step}"${keepOld ? ' with --keep-old' : ''}`, async () => {
        const dir = await updatedSample(join(tmp.dir, `s${n++}`));
        const r = runCli(['merge', dir, '--json', ...(keepOld ? ['--keep-old'] : [])], { env: { LIVESTICK_FAULT_AT: step } });
        assert.notEqual(r.status, 0, `the merge should have been killed at ${step}`);
        await afterCrash(dir);
        const st = runCli(['status', dir, '--json']).json;
        const switched = STEPS.indexOf(step) >= STEPS.indexOf('journal-written');
        assert.equal(st.overlay.exceptions === 0, switched, switched ? 'rolled forward to the new base' : 'rolled back to the old pair');
      });
    }
  }

  for (const ms of [700, 1500, 2500, 3500, 5000]) {
    test(`killed at a random moment (${ms} ms)`, async () => {
      const dir = await updatedSample(join(tmp.dir, `r${n++}`));
      await mergeKilledAfter(dir, ms);
      await afterCrash(dir);
    });
  }
});
