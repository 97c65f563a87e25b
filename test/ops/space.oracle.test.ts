/** Merge on a medium without room for two copies, and on a read-only medium (tmpfs mounts: needs root). */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { cpSync, mkdirSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from '../helpers/tmp.ts';
import { run } from '../helpers/tools.ts';
import { runCli } from '../helpers/cli.ts';
import { updatedSample } from './helpers.ts';

const isRoot = process.getuid?.() === 0;
const skip = isRoot ? false : process.env.CI ? (() => { throw new Error('CI must run as root for the tmpfs tests'); })() : 'needs root (tmpfs mounts)';
const snapshot = (dir: string) => readdirSync(join(dir, 'LiveOS')).sort().map((f) => `${f} ${createHash('sha256').update(readFileSync(join(dir, 'LiveOS', f))).digest('hex')}`);

describe('merge refuses cleanly when the medium cannot take it', { skip }, () => {
  const tmp = tempDir('livestick-space-');
  let sample: string;
  const mounts: string[] = [];
  before(async () => {
    sample = await updatedSample(join(tmp.dir, 'sample'));
  });
  after(() => {
    for (const m of mounts.reverse()) run('umount', [m], { allowFail: true });
    tmp.cleanup();
  });

  function tmpfs(name: string, size: string): string {
    const m = join(tmp.dir, name);
    mkdirSync(m);
    run('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', m]);
    mounts.push(m);
    return m;
  }

  test('not enough space for two copies: refused with the numbers, nothing changed', () => {
    // Room for the medium and 2 MiB more.
    const bytes = readdirSync(join(sample, 'LiveOS')).reduce((n, f) => n + statSync(join(sample, 'LiveOS', f)).size, 0);
    const m = tmpfs('small', `${Math.ceil(bytes / 2 ** 20) + 2}M`);
    cpSync(sample, m, { recursive: true });
    const before = snapshot(m);
    const r = runCli(['merge', m, '--json']);
    assert.equal(r.status, 74, r.stdout + r.stderr);
    assert.equal(r.json.error.code, 'NO_SPACE');
    assert.match(r.json.error.message, /[\d.]+ MiB needed with a margin, [\d.]+ MiB free/);
    assert.deepEqual(snapshot(m), before);
    const dry = runCli(['merge', m, '--dry-run', '--json']);
    assert.equal(dry.status, 74, 'a dry run that would fail says so with the same exit code');
    assert.equal(dry.json.verdict, 'would-fail');
    assert.equal(dry.json.problems[0].code, 'NO_SPACE');
    assert.ok(dry.json.spaceNeeded > dry.json.spaceAvailable);
  });

  test('a read-only medium: a clear permission error, nothing changed', () => {
    const m = tmpfs('ro', '200M');
    cpSync(sample, m, { recursive: true });
    const before = snapshot(m);
    run('mount', ['-o', 'remount,ro', m]);
    const r = runCli(['merge', m, '--json']);
    assert.equal(r.json.error.code, 'PERMISSION', r.stdout + r.stderr);
    assert.equal(r.status, 77);
    assert.match(r.json.error.message, /read-only/);
    assert.deepEqual(snapshot(m), before);
    const s = runCli(['status', m, '--json']);
    assert.equal(s.status, 0, 'status works on a read-only medium');
  });
});
