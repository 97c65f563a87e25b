import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync, existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { runCli } from '../helpers/cli.ts';
import { tempDir } from '../helpers/tmp.ts';

test('overlay create / write / info / export / bind / reset through the CLI', () => {
  const { dir, cleanup } = tempDir();
  try {
    const base = join(dir, 'base.img');
    const ov = join(dir, 'overlay-LIVE-1234');
    const baseBytes = randomBytes(3 * 2 ** 20 + 1536);
    writeFileSync(base, baseBytes);

    let r = runCli(['overlay', 'create', ov, '--size', '2M', '--base', base, '--json']);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.json.ok, true);
    assert.equal(r.json.chunkSize, 4096);
    assert.equal(r.json.dmStatus, '16/4096 16');
    assert.equal(statSync(ov).size, 2 * 2 ** 20);
    assert.equal(runCli(['overlay', 'create', ov, '--size', '2M', '--json']).json.error.code, 'EXISTS');

    const data = randomBytes(70_000);
    r = runCli(['overlay', 'write', base, ov, '--offset', '12345', '--json'], { input: data });
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.equal(r.json.bytesWritten, 70_000);
    assert.equal(r.json.newChunks, 18);

    r = runCli(['overlay', 'info', ov, '--base', base, '--json']);
    assert.equal(r.json.exceptions, 18);
    assert.equal(r.json.allocatedSectors, (2 + 18) * 8);
    assert.equal(r.json.totalSectors, 4096);
    assert.equal(r.json.metadataSectors, 16);
    assert.equal(r.json.valid, true);
    assert.equal(r.json.bound, true);
    assert.equal(r.json.baseMatches, true);
    assert.ok(r.json.fill > 0 && r.json.fill < 1);

    const out = join(dir, 'combined.img');
    r = runCli(['overlay', 'export', base, ov, out, '--json']);
    assert.equal(r.status, 0, r.stdout);
    const expected = Buffer.from(baseBytes);
    data.copy(expected, 12345);
    assert.ok(readFileSync(out).equals(expected));

    // Another base of the same size is refused, unless forced.
    const other = join(dir, 'other.img');
    writeFileSync(other, randomBytes(baseBytes.length));
    r = runCli(['overlay', 'export', other, ov, join(dir, 'x.img'), '--json']);
    assert.equal(r.status, 1);
    assert.equal(r.json.error.code, 'BASE_MISMATCH');
    assert.ok(!existsSync(join(dir, 'x.img')));
    assert.equal(runCli(['overlay', 'info', ov, '--base', other, '--json']).json.baseMatches, false);
    assert.equal(runCli(['overlay', 'export', other, ov, join(dir, 'x.img'), '--force', '--json']).status, 0);

    r = runCli(['overlay', 'bind', other, ov, '--json']);
    assert.equal(r.status, 0, r.stdout);
    assert.equal(runCli(['overlay', 'info', ov, '--base', other, '--json']).json.baseMatches, true);

    r = runCli(['overlay', 'reset', ov, '--json']);
    assert.equal(r.status, 1, 'without --yes (and no terminal) reset refuses');
    assert.match(r.json.error.message, /aborted: nothing was changed.*would drop [\d.]+ (KiB|MiB) of changes/);
    r = runCli(['overlay', 'reset', ov, '--yes', '--json']);
    assert.equal(r.json.exceptions, 0);
    assert.equal(r.json.bound, true);
    r = runCli(['overlay', 'info', ov]);
    assert.match(r.stdout, /exceptions:\s+0 chunks/);
  } finally {
    cleanup();
  }
});

test('an all-zero overlay (livecd-iso-to-disk) reads as new and unbound, and can be bound', () => {
  const { dir, cleanup } = tempDir();
  try {
    const base = join(dir, 'base.img');
    const ov = join(dir, 'overlay');
    writeFileSync(base, randomBytes(1 << 20));
    writeFileSync(ov, Buffer.alloc(1 << 20));
    let r = runCli(['overlay', 'info', ov, '--json']);
    assert.equal(r.json.state, 'new');
    assert.equal(r.json.bound, false);
    r = runCli(['overlay', 'bind', base, ov, '--json']);
    assert.equal(r.json.state, 'active');
    assert.equal(runCli(['overlay', 'info', ov, '--base', base, '--json']).json.baseMatches, true);
  } finally {
    cleanup();
  }
});

test('errors: exit codes and JSON error documents', () => {
  const { dir, cleanup } = tempDir();
  try {
    let r = runCli(['overlay', 'info', join(dir, 'missing'), '--json']);
    assert.equal(r.status, 66);
    assert.equal(r.json.ok, false);
    assert.equal(r.json.error.code, 'NOT_FOUND');
    assert.match(r.json.error.file, /missing$/);

    const bad = join(dir, 'bad');
    writeFileSync(bad, Buffer.concat([Buffer.from('NOPE'), Buffer.alloc(8192)]));
    r = runCli(['overlay', 'info', bad, '--json']);
    assert.equal(r.status, 65);
    assert.equal(r.json.error.code, 'CORRUPT_IMAGE');
    assert.equal(r.json.error.field, 'magic');
    r = runCli(['overlay', 'info', bad]);
    assert.equal(r.status, 65);
    assert.match(r.stderr, /bad: dm-snapshot: magic/);

    r = runCli(['overlay', 'create', join(dir, 'o'), '--json']);
    assert.equal(r.status, 64);
    assert.equal(r.json.error.code, 'USAGE');
    assert.equal(runCli(['overlay', 'create', join(dir, 'o'), '--size', 'lots']).status, 64);
    assert.equal(runCli(['overlay', 'create', join(dir, 'o'), '--size', '1M', '--chunk-size', '3K']).status, 64);
    assert.equal(runCli(['nonsense']).status, 64);
    r = runCli(['--help']);
    assert.equal(r.status, 0);
    assert.match(r.stdout, /overlay/);
    assert.match(runCli(['overlay', 'write', '--help']).stdout, /--offset/);

    // Overflow: PO refuses and says so; the overlay stays valid.
    const base = join(dir, 'base.img');
    const ov = join(dir, 'small');
    writeFileSync(base, randomBytes(1 << 20));
    assert.equal(runCli(['overlay', 'create', ov, '--size', '32K']).status, 0);
    r = runCli(['overlay', 'write', base, ov, '--offset', '0', '--json'], { input: randomBytes(100_000) });
    assert.equal(r.status, 1);
    assert.equal(r.json.error.code, 'OVERLAY_FULL');
    assert.equal(runCli(['overlay', 'info', ov, '--json']).json.valid, true);
    r = runCli(['overlay', 'write', base, ov, '--offset', '0', '--mode', 'P', '--json'], { input: randomBytes(100_000) });
    assert.equal(r.json.error.code, 'SNAPSHOT_INVALID');
    assert.equal(runCli(['overlay', 'info', ov, '--json']).json.valid, false);
    r = runCli(['overlay', 'export', base, ov, join(dir, 'e.img'), '--json']);
    assert.equal(r.json.error.code, 'SNAPSHOT_INVALID');
  } finally {
    cleanup();
  }
});
