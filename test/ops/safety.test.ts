/**
 * The medium commands' safety edges: pre-checks that fail a doomed merge in a second (an immutable
 * base, as root with chattr), the dry-run verdict and its size estimate, an empty overlay that is not
 * merged, modes and owners carried to the new files, reset binding and wiping, status degrading on a
 * damaged filesystem, kept files listed, and --overlay NAME.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, chownSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { tempDir } from '../helpers/tmp.ts';
import { runCli } from '../helpers/cli.ts';
import { hasTool } from '../helpers/tools.ts';
import { FileDisk } from '../../src/io/disk.ts';
import { mergeMedium } from '../../src/ops/merge.ts';
import { mediumStatus } from '../../src/ops/status.ts';
import { resetMedium } from '../../src/ops/reset.ts';
import { ExceptionStore } from '../../src/xform/dmsnap/index.ts';
import { mediumView, updatedSample } from './helpers.ts';

const isRoot = process.getuid?.() === 0;
const overlayOf = (dir: string) => join(dir, 'LiveOS', readdirSync(join(dir, 'LiveOS')).find((n) => n.startsWith('overlay-') && !n.includes('.livestick-')) as string);

describe('medium safety edges', () => {
  const tmp = tempDir('livestick-safety-');
  let n = 0;
  const fresh = () => updatedSample(join(tmp.dir, `s${n++}`));
  after(() => tmp.cleanup());

  test('an immutable base (chattr +i): merge fails in the pre-check, exit 77, nothing changed; --dry-run says it would fail', { skip: !isRoot || !hasTool('chattr') ? 'needs root and chattr' : false }, async () => {
    const dir = await fresh();
    const base = join(dir, 'LiveOS', 'squashfs.img');
    const before = readdirSync(join(dir, 'LiveOS')).sort();
    const view = await mediumView(dir);
    const set = spawnSync('chattr', ['+i', base]);
    if (set.status !== 0) return assert.fail(`chattr +i failed: ${set.stderr}`);
    try {
      let r = runCli(['merge', dir, '--dry-run', '--json']);
      assert.equal(r.status, 77, r.stdout);
      assert.equal(r.json.verdict, 'would-fail');
      assert.match(r.json.problems[0].message, /immutable or append-only/);
      const started = Date.now();
      r = runCli(['merge', dir, '--json']);
      assert.equal(r.status, 77, r.stdout);
      assert.equal(r.json.error.code, 'PERMISSION');
      assert.match(r.json.error.message, /cannot replace .*squashfs\.img.*immutable/);
      assert.ok(Date.now() - started < 15_000, 'a doomed merge fails before building');
      r = runCli(['status', dir, '--json']);
      assert.equal(r.status, 0, r.stdout);
      assert.deepEqual(readdirSync(join(dir, 'LiveOS')).sort(), before, 'nothing added or removed');
      assert.deepEqual(await mediumView(dir), view, 'the old pair is intact');
    } finally {
      spawnSync('chattr', ['-i', base]);
    }
  });

  test('--dry-run: a verdict, and a new-base estimate within 15% of the real size', async () => {
    for (const compressor of ['gzip', 'xz'] as const) {
      const dir = await fresh();
      const dry = await mergeMedium(dir, { dryRun: true, compressor, threads: 0 });
      assert.equal(dry.verdict, 'ok');
      assert.deepEqual(dry.problems, []);
      const real = await mergeMedium(dir, { compressor, threads: 0 });
      const ratio = dry.newBaseBytes / real.newBaseBytes;
      assert.ok(ratio > 0.85 && ratio < 1.15, `${compressor}: estimate ${dry.newBaseBytes} vs real ${real.newBaseBytes} (${ratio.toFixed(3)})`);
    }
  });

  test('an empty overlay is not merged (the base stays byte for byte) unless --force', async () => {
    const dir = await fresh();
    await mergeMedium(dir, { threads: 0 });
    const base = join(dir, 'LiveOS', 'squashfs.img');
    const bytes = readFileSync(base);
    const r = runCli(['merge', dir, '--json']);
    assert.equal(r.status, 0, r.stdout);
    assert.equal(r.json.nothingToMerge, true);
    assert.ok(readFileSync(base).equals(bytes), 'the base was not rewritten');
    const forced = await mergeMedium(dir, { force: true, threads: 0, mkfsTime: 1 });
    assert.equal(forced.nothingToMerge, false);
    assert.ok(!readFileSync(base).equals(bytes), '--force rebuilds it');
  });

  test('the new base and overlay keep the old files\' modes and owners', async () => {
    const dir = await fresh();
    const base = join(dir, 'LiveOS', 'squashfs.img');
    const overlay = overlayOf(dir);
    chmodSync(base, 0o640);
    chmodSync(overlay, 0o600);
    if (isRoot) {
      chownSync(base, 1234, 2345);
      chownSync(overlay, 1234, 2345);
    }
    await mergeMedium(dir, { threads: 0 });
    for (const f of [base, overlay]) {
      const st = statSync(f);
      assert.equal(st.mode & 0o7777, f === base ? 0o640 : 0o600, f);
      if (isRoot) assert.deepEqual([st.uid, st.gid], [1234, 2345], f);
    }
  });

  test('reset binds the emptied overlay to the current base; --wipe zeroes the old data', async () => {
    const dir = await fresh();
    const overlay = overlayOf(dir);
    const usedBefore = (await mediumStatus(dir)).overlay.usedBytes;
    // Unbind it by hand (as another tool would leave it), then reset.
    const disk = await FileDisk.open(overlay);
    const nextFree = (await ExceptionStore.open(disk)).nextFree;
    await disk.close();
    const chunk = 4096;
    const sample = readFileSync(overlay).subarray(2 * chunk, nextFree * chunk);
    assert.ok(sample.some((b) => b !== 0), 'the overlay held data');
    const r = await resetMedium(dir, { wipe: true });
    assert.equal(r.overlay.exceptions, 0);
    assert.equal(r.overlay.bound, true);
    assert.equal(r.overlay.baseMatches, true);
    assert.ok(r.overlay.wipedBytes >= usedBefore - 2 * chunk, `wiped ${r.overlay.wipedBytes} of ${usedBefore}`);
    const after = readFileSync(overlay).subarray(2 * chunk, nextFree * chunk);
    assert.ok(after.every((b) => b === 0), 'the old data is gone from the file');
    const st = await mediumStatus(dir);
    assert.equal(st.healthy, true);
    assert.deepEqual(st.warnings, []);
  });

  test('reset without --yes off a terminal aborts (exit 1), naming what would be lost', async () => {
    const dir = await fresh();
    const r = runCli(['reset', dir, '--json']);
    assert.equal(r.status, 1);
    assert.match(r.json.error.message, /^aborted: nothing was changed\. A reset would drop [\d.]+ MiB of changes kept in .*\(largest: \/usr\/lib\/modules\/6\.9\.2\/vmlinuz 7\.00 MiB/);
    assert.equal(runCli(['reset', dir, '--yes', '--json']).status, 0);
  });

  test('status degrades on a damaged filesystem: overlay figures, then the damage, exit 3', async () => {
    const dir = await fresh();
    const overlay = overlayOf(dir);
    // Overwrite the copied superblock chunk's data in the overlay: the combined ext4 is now garbage.
    const disk = await FileDisk.open(overlay);
    const store = await ExceptionStore.open(disk);
    const at = store.lookup(0);
    assert.ok(at !== undefined, 'the sample overlay holds chunk 0');
    await disk.write(new Uint8Array(4096).fill(0x5a), (at as number) * 4096);
    await disk.close();
    const r = runCli(['status', dir, '--json']);
    assert.equal(r.status, 3, r.stdout);
    assert.equal(r.json.ok, true);
    assert.equal(r.json.healthy, false);
    assert.ok(r.json.overlay.usedBytes > 0 && r.json.overlay.valid === true, 'the overlay figures are there');
    assert.match(r.json.warnings.join('\n'), /is damaged: ext4/);
    const human = runCli(['status', dir]);
    assert.match(human.stdout, /NEEDS ATTENTION/);
  });

  test('status lists kept files and their size; --overlay takes a bare name inside LiveOS/', async () => {
    const dir = await fresh();
    await mergeMedium(dir, { threads: 0, keepOld: true });
    const st = await mediumStatus(dir, { overlay: overlayOf(dir).split('/').pop() });
    assert.equal(st.kept.length, 2);
    assert.ok(st.kept.every((k) => k.bytes > 0 && k.name.includes('.livestick-old-')));
    assert.match(st.warnings.join(' '), /kept from earlier merges: .*remove them/);
  });

  test('status: host free space and the sparse overlay\'s real headroom', async () => {
    const dir = await fresh();
    const st = await mediumStatus(dir);
    assert.ok(st.host.freeBytes !== null && st.host.freeBytes > 0);
    assert.ok(st.host.overlayAllocatedBytes <= statSync(overlayOf(dir)).size);
    assert.ok(st.host.overlayHeadroomBytes <= st.overlay.freeBytes);
  });
});
