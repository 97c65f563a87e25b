import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { heapBoundMiB, runBounded, WorkerTaskError } from '../../src/cli/bounded.ts';
import { LivestickError, UsageError } from '../../src/errors.ts';

test('LIVESTICK_HEAP_MIB: default, 0 (inline), a bound, and refused values', () => {
  assert.equal(heapBoundMiB({}), 112);
  assert.equal(heapBoundMiB({ LIVESTICK_HEAP_MIB: '0' }), 0);
  assert.equal(heapBoundMiB({ LIVESTICK_HEAP_MIB: '200' }), 200);
  for (const bad of ['-1', '12', 'lots', '1.5']) assert.throws(() => heapBoundMiB({ LIVESTICK_HEAP_MIB: bad }), UsageError);
});

test('a typed error inside the bounded worker comes back with its name, code, exit code and file', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'livestick-bounded-'));
  try {
    const inline = await runInline(() => runBounded('mergeOverlayfs', join(dir, 'missing'), {}));
    const bounded = await runBounded('mergeOverlayfs', join(dir, 'missing'), {}).then(
      () => assert.fail('a missing medium must fail'),
      (e: unknown) => e,
    );
    assert.ok(bounded instanceof WorkerTaskError && bounded instanceof LivestickError);
    assert.ok(inline instanceof LivestickError);
    assert.equal(bounded.name, inline.name);
    assert.equal(bounded.code, inline.code);
    assert.equal(bounded.exitCode, inline.exitCode);
    assert.equal(bounded.message, inline.message);
    assert.deepEqual(bounded.details(), inline.details());
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a medium without persistence: the bounded worker returns the same result as the main thread', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'livestick-bounded-'));
  try {
    const a = await runBounded('mergeOverlayfs', dir, {}).catch((e: unknown) => e);
    const b = await runInline(() => runBounded('mergeOverlayfs', dir, {}));
    assert.deepEqual(a instanceof Error ? [a.name, a.message] : a, b instanceof Error ? [b.name, b.message] : b);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

async function runInline(f: () => Promise<unknown>): Promise<unknown> {
  const old = process.env.LIVESTICK_HEAP_MIB;
  process.env.LIVESTICK_HEAP_MIB = '0';
  try {
    return await f().catch((e: unknown) => e);
  } finally {
    if (old === undefined) delete process.env.LIVESTICK_HEAP_MIB;
    else process.env.LIVESTICK_HEAP_MIB = old;
  }
}
