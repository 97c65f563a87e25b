/** Mutation fuzzing of the luks1 read path (harness.ts, targets.ts): every case ends in success or a typed error. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fuzz, report } from './harness.ts';

test('luks1: mutated images give success or a typed error, within the caps', { timeout: 30 * 60_000 }, async () => {
  const result = await fuzz('luks1');
  const text = report(result, 'test/fuzz/luks1.fuzz');
  console.log(text);
  assert.equal(result.findings.length, 0, text);
});
