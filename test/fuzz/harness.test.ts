/** The fuzz harness itself: typed errors pass; untyped errors, read loops and hangs are findings naming the case. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fuzz, report } from './harness.ts';

test('typed errors are not findings', async () => {
  const r = await fuzz('selftest-typed', { seed: 1, cases: 5 });
  assert.deepEqual([r.typed, r.findings.length, r.codes], [5, 0, { CORRUPT_IMAGE: 5 }]);
});

test('an untyped error and a runaway read loop are findings with a replay line', async () => {
  const untyped = await fuzz('selftest-untyped', { seed: 7, cases: 3 });
  assert.deepEqual(untyped.findings.map((f) => [f.caseIndex, f.kind]), [[0, 'untyped'], [1, 'untyped'], [2, 'untyped']]);
  assert.match(untyped.findings[0]!.message, /^TypeError: /);
  assert.match(report(untyped, 'test/fuzz/x.fuzz'), /replay: FUZZ_SEED=7 FUZZ_CASE=0 npm test -- test\/fuzz\/x\.fuzz/);
  const loop = await fuzz('selftest-read-loop', { seed: 7, cases: 1 });
  assert.deepEqual(loop.findings.map((f) => [f.caseIndex, f.kind]), [[0, 'cap']]);
  assert.match(loop.findings[0]!.message, /more than \d+ reads/);
});

test('a synchronous hang is caught by the watchdog, and the run goes on with the next case', async () => {
  const r = await fuzz('selftest-hang', { seed: 3, cases: 2, caseTimeoutMs: 1500 });
  assert.deepEqual(r.findings.map((f) => [f.caseIndex, f.kind]), [[0, 'hang'], [1, 'hang']]);
});
