import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { runCli } from '../helpers/cli.ts';
import { tempDir } from '../helpers/tmp.ts';

test('livestick demo builds a sample medium, verifies it, and reports each step', () => {
  const { dir, cleanup } = tempDir();
  try {
    const r = runCli(['demo', dir, '--json']);
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.equal(r.json.ok, true);
    assert.equal(r.json.verified, true);
    assert.ok(r.json.steps.length >= 5);
    assert.ok(r.json.before.overlay.exceptions > 0);
    assert.ok(r.json.before.usage.reclaimable > 0, 'the second update frees chunks the first one copied');
    assert.ok(r.json.merge.blocks.carried > 0 && r.json.merge.blocks.rebuilt > 0);
    assert.ok(r.json.merge.freeBytesDropped > 0);
    assert.equal(r.json.after.overlay.exceptions, 0);
    assert.equal(r.json.after.overlay.baseMatches, true);
    assert.ok(existsSync(join(dir, 'LiveOS', 'squashfs.img')));
    assert.ok(!existsSync(join(dir, 'LiveOS', 'livestick-journal.json')));
    const human = runCli(['demo', join(dir, 'again')]);
    assert.equal(human.status, 0, human.stderr);
    assert.match(human.stdout, /All checks passed/);
  } finally {
    cleanup();
  }
});
