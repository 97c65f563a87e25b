import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync, truncateSync, renameSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from '../helpers/tmp.ts';
import { runCli } from '../helpers/cli.ts';
import { mediumStatus } from '../../src/ops/status.ts';
import { mergeMedium } from '../../src/ops/merge.ts';
import { liveosFiles, mediumView, nonZeroFreeBlocks, updatedSample } from './helpers.ts';

const sha = (p: string) => createHash('sha256').update(readFileSync(p)).digest('hex');

describe('status and merge of a live medium', () => {
  const tmp = tempDir('livestick-merge-');
  let n = 0;
  const fresh = () => updatedSample(join(tmp.dir, `m${n++}`));
  before(async () => {
    await fresh();
  });
  after(() => tmp.cleanup());

  test('status attributes every copied chunk and finds the reclaimable ones', async () => {
    const dir = await fresh();
    const r = await mediumStatus(dir, { top: 5 });
    const u = r.usage;
    assert.equal(u.files + u.metadata + u.journal + u.reclaimable + u.outside, r.overlay.exceptions * r.overlay.chunkSize);
    assert.equal(r.topFiles[0]?.path, '/usr/lib/modules/6.9.2/vmlinuz');
    assert.equal(r.topFiles[0]?.bytes, 7 * 2 ** 20);
    // The kernel installed by the first update and removed by the second: copied, now free.
    assert.ok(u.reclaimable >= 7 * 2 ** 20 && u.reclaimable < 8 * 2 ** 20, `reclaimable ${u.reclaimable}`);
    assert.equal(r.topDirectories[0]?.path, '/usr');
    assert.equal(r.overlay.baseMatches, true);
    assert.equal(r.filesystem.clean, true);
    assert.deepEqual(r.warnings, []);
  });

  test('merge: the new base holds exactly what the boot saw, free space is zero, the overlay starts empty', async () => {
    const dir = await fresh();
    const seen = await mediumView(dir);
    const overlayName = liveosFiles(dir).find((f) => f.startsWith('overlay-')) as string;
    const overlaySize = readFileSync(join(dir, 'LiveOS', overlayName)).byteLength;
    const r = await mergeMedium(dir, {});
    assert.equal(r.dryRun, false);
    assert.ok(r.blocks.carried > r.blocks.rebuilt, 'most blocks are carried over');
    assert.ok(r.freeBytesDropped >= 7 * 2 ** 20, `dropped ${r.freeBytesDropped}`); // the 6.9.1 kernel, copied then deleted
    assert.deepEqual(liveosFiles(dir), [overlayName, 'squashfs.img']);
    assert.deepEqual(await mediumView(dir, { overlay: false }), seen, 'the new base alone is the old base + overlay');
    assert.deepEqual(await mediumView(dir), seen);
    assert.equal(await nonZeroFreeBlocks(dir), 0);
    const st = await mediumStatus(dir);
    assert.equal(st.overlay.exceptions, 0);
    assert.equal(st.overlay.sizeBytes, overlaySize);
    assert.equal(st.overlay.baseMatches, true);
    assert.equal(st.overlay.chunkSize, 4096);
    // A second merge of an empty overlay rebuilds nothing and changes nothing a boot sees.
    const again = await mergeMedium(dir, {});
    assert.equal(again.blocks.rebuilt, 0);
    assert.deepEqual(await mediumView(dir), seen);
  });

  test('--dry-run changes nothing and predicts the reclaimed space', async () => {
    const dir = await fresh();
    const before = liveosFiles(dir).map((f) => sha(join(dir, 'LiveOS', f)));
    const r = await mergeMedium(dir, { dryRun: true });
    assert.equal(r.dryRun, true);
    assert.ok(r.freeBytesDropped > 0 && r.spaceNeeded > 0 && r.newBaseEstimated);
    assert.deepEqual(liveosFiles(dir).map((f) => sha(join(dir, 'LiveOS', f))), before);
  });

  test('--keep-old keeps the previous pair, still consistent', async () => {
    const dir = await fresh();
    const seen = await mediumView(dir);
    const r = await mergeMedium(dir, { keepOld: true });
    assert.ok(r.kept.base && r.kept.overlay && existsSync(r.kept.base) && existsSync(r.kept.overlay));
    // Put the old pair back in place in a copy: it still boots to the same tree.
    const old = join(tmp.dir, `old-${n++}`, 'LiveOS');
    const { mkdirSync, copyFileSync } = await import('node:fs');
    mkdirSync(old, { recursive: true });
    copyFileSync(r.kept.base, join(old, 'squashfs.img'));
    copyFileSync(r.kept.overlay, join(old, 'overlay-X-1'));
    assert.deepEqual(await mediumView(join(old, '..')), seen);
  });

  test('a different compressor and block size rebuild everything, same tree', async () => {
    const dir = await fresh();
    const seen = await mediumView(dir);
    const r = await mergeMedium(dir, { compressor: 'gzip', blockSize: 65536 });
    assert.equal(r.blocks.carried, 0);
    assert.deepEqual(await mediumView(dir), seen);
  });

  test('bad input: each a clear error and no change to the medium', async () => {
    // A foreign overlay: bound to another base.
    const a = await fresh();
    const b = await fresh();
    await mergeMedium(b, {}); // b's base differs now
    const overlayName = liveosFiles(a).find((f) => f.startsWith('overlay-')) as string;
    writeFileSync(join(b, 'LiveOS', overlayName), readFileSync(join(a, 'LiveOS', overlayName)));
    const snap = liveosFiles(b).map((f) => sha(join(b, 'LiveOS', f)));
    let r = runCli(['merge', b, '--json']);
    assert.equal(r.json?.error?.code, 'BASE_MISMATCH', r.stdout + r.stderr);
    assert.deepEqual(liveosFiles(b).map((f) => sha(join(b, 'LiveOS', f))), snap);
    r = runCli(['status', b, '--json']);
    assert.equal(r.status, 3, 'an unhealthy medium exits 3');
    assert.equal(r.json.healthy, false);
    assert.equal(r.json.overlay.baseMatches, false);
    assert.match(r.json.warnings.join(' '), /DIFFERENT BASE/);
    // The hint it gives works: after `overlay bind MEDIUM`, the warning is gone.
    const hint = /`livestick (overlay bind [^`]+)`/.exec(r.json.warnings.join(' '));
    assert.ok(hint, 'status names the bind command');
    const bound = await fresh();
    await mergeMedium(bound, {});
    writeFileSync(join(bound, 'LiveOS', overlayName), readFileSync(join(a, 'LiveOS', overlayName)));
    assert.equal(runCli(['overlay', 'bind', bound, '--json']).status, 0);
    r = runCli(['status', bound, '--json']);
    assert.doesNotMatch(r.json.warnings.join(' '), /DIFFERENT BASE/, 'after the hint, the warning is gone');
    assert.equal(r.json.overlay.baseMatches, true);

    // An invalidated snapshot.
    const c = await fresh();
    const ov = join(c, 'LiveOS', overlayName);
    const bytes = readFileSync(ov);
    bytes.writeUInt32LE(0, 4);
    writeFileSync(ov, bytes);
    r = runCli(['merge', c, '--json']);
    assert.equal(r.json?.error?.code, 'SNAPSHOT_INVALID');
    assert.equal(r.status, 65);

    // A truncated base.
    const d = await fresh();
    truncateSync(join(d, 'LiveOS', 'squashfs.img'), 200_000);
    r = runCli(['merge', d, '--json']);
    assert.equal(r.json?.error?.code, 'CORRUPT_IMAGE', r.stdout);
    assert.match(r.json.error.file ?? '', /squashfs\.img/);

    // No overlay, no medium.
    const e = await fresh();
    renameSync(join(e, 'LiveOS', overlayName), join(e, 'LiveOS', 'keep-aside'));
    r = runCli(['merge', e, '--json']);
    assert.equal(r.status, 64);
    assert.match(r.json.error.message, /no overlay/);
    r = runCli(['status', join(tmp.dir, 'nowhere'), '--json']);
    assert.equal(r.status, 66);
  });
});
