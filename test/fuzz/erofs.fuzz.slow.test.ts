/** Mutation fuzzing of the EROFS read path (harness.ts, targets.ts): every case ends in success or a typed error. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fuzz, report } from './harness.ts';

test('erofs: mutated images give success or a typed error, within the caps', { timeout: 30 * 60_000 }, async () => {
  const result = await fuzz('erofs');
  const text = report(result, 'test/fuzz/erofs.fuzz');
  console.log(text);
  assert.equal(result.findings.length, 0, text);
});
