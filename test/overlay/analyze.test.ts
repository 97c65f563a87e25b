/** analyzeUpper on hand-built layers: each class, the bytes a whiteout or opaque dir hides, hard links counted once, flags. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { OverlayFileSystem, analyzeUpper } from '../../src/fs/overlay/index.ts';
import { MemoryFileSystem } from '../helpers/memfs.ts';

const P = 'trusted.overlay.';
const bytes = (n: number, fill = 1) => new Uint8Array(n).fill(fill);

test('classes and figures of an upper', async () => {
  const lower = new MemoryFileSystem();
  lower.put('same', lower.node('file', { data: bytes(100) }));
  lower.put('chmodded', lower.node('file', { data: bytes(50) }));
  lower.put('changed', lower.node('file', { data: bytes(70) }));
  lower.put('gone/x', lower.node('file', { data: bytes(300) }));
  lower.put('gone/y/z', lower.node('file', { data: bytes(200) }));
  lower.put('opq/old', lower.node('file', { data: bytes(40) }));
  lower.put('meta', lower.node('file', { data: bytes(999) }));
  lower.put('old', lower.node('dir', {}));
  lower.put('old/kept', lower.node('file', { data: bytes(5) }));
  const upper = new MemoryFileSystem();
  upper.put('same', upper.node('file', { data: bytes(100) }));
  upper.put('chmodded', upper.node('file', { data: bytes(50), mode: 0o600 }));
  upper.put('changed', upper.node('file', { data: bytes(70, 2) }));
  upper.put('gone', upper.node('chardev', { rdev: { major: 0, minor: 0 } }));
  const opq = upper.node('dir', {});
  opq.xattrs.set(P + 'opaque', new TextEncoder().encode('y'));
  upper.put('opq', opq);
  const stub = upper.node('file', { mode: 0o600 });
  stub.xattrs.set(P + 'metacopy', new Uint8Array(0));
  upper.put('meta', stub);
  const moved = upper.node('dir', {});
  moved.xattrs.set(P + 'redirect', new TextEncoder().encode('/old'));
  upper.put('moved', moved);
  upper.put('old', upper.node('chardev', { rdev: { major: 0, minor: 0 } }));
  const big = upper.node('file', { data: bytes(1000) });
  upper.put('fresh', big);
  upper.put('opq/link', big);
  big.links = 2;
  const view = new OverlayFileSystem({ upper: { fs: upper, root: '/' }, lowers: [{ fs: lower, root: '/' }], xattrPrefix: 'trusted' });
  const r = await analyzeUpper(view, { top: 2 });
  const cls = Object.fromEntries(r.entries.map((e) => [e.path, [e.class, e.upperBytes, e.hiddenBytes]]));
  assert.deepEqual(cls['/same'], ['copied-up-identical', 100, 0]);
  assert.deepEqual(cls['/chmodded'], ['metadata-only', 50, 0]);
  assert.deepEqual(cls['/changed'], ['copied-up-changed', 70, 0]);
  assert.deepEqual(cls['/gone'], ['whiteout', 0, 500]);
  assert.equal(cls['/opq']![0], 'opaque-dir');
  assert.equal(cls['/opq']![2], 40);
  assert.deepEqual(cls['/meta'], ['metadata-only', 0, 0]);
  assert.equal(cls['/moved']![0], 'redirect-dir');
  assert.deepEqual(cls['/old'], ['whiteout', 0, 5]);
  // One inode under two names: the first name walked holds its bytes, the other occupies nothing more.
  assert.deepEqual([cls['/opq/link'], cls['/fresh']], [['new', 1000, 0], ['new', 0, 0]]);
  assert.equal(r.totals.whiteout.hiddenBytes, 505);
  assert.deepEqual(r.topFiles.map((e) => e.path), ['/opq/link', '/same']);
  assert.deepEqual(r.topDirs[0], { path: '/opq', upperBytes: 4096 + 1000 });
  assert.equal(r.flags.metacopy, true);
  assert.equal(r.flags.redirect, true);
  assert.equal(r.flags.offlineLowerChangesUnsafe, true);
  assert.equal((await view.readdir('/moved')).map((e) => e.name).join(), 'kept');
});

test('an upper without features is safe for offline lower changes; a bad origin is a problem, not a crash', async () => {
  const lower = new MemoryFileSystem();
  lower.put('a', lower.node('file', { data: bytes(3) }));
  const upper = new MemoryFileSystem();
  const a = upper.node('file', { data: bytes(4) });
  a.xattrs.set(P + 'origin', new Uint8Array([0, 0xfb, 9]));
  upper.put('a', a);
  const r = await analyzeUpper(new OverlayFileSystem({ upper: { fs: upper, root: '/' }, lowers: [{ fs: lower, root: '/' }], xattrPrefix: 'trusted' }));
  assert.equal(r.flags.offlineLowerChangesUnsafe, false);
  assert.equal(r.problems.length, 1);
  assert.match(r.problems[0]!, /origin/);
});
