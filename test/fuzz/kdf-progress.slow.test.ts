/** `luks open-test` on volumes whose keyslot takes seconds: the wait is announced, benchmarked costs are not refused (issue 11 §6). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pbkdf2Rate } from '../../src/xform/luks/kdf.ts';
import { runCli } from '../helpers/cli.ts';
import { tempDir } from '../helpers/tmp.ts';
import { missingTools, run } from '../helpers/tools.ts';
import { PASSPHRASE, makeLuks1 } from './seeds.ts';

test('luks open-test tells a non-terminal stderr about a long derivation', () => {
  const tmp = tempDir('lsk-fuzz-kdf-');
  try {
    const image = join(tmp.dir, 'v1.img');
    writeFileSync(image, makeLuks1({ slotIterations: Math.ceil(pbkdf2Rate('sha256') * 4) }));
    const r = runCli(['luks', 'open-test', image, '--passphrase-file', '-'], { input: PASSPHRASE });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /^livestick: deriving the key \(PBKDF2-sha256, \d+ iterations, about \d+ s\)$/m);
  } finally {
    tmp.cleanup();
  }
});

test('a cryptsetup LUKS1 volume with its benchmarked costs (2 s keyslot, 125 ms digest) still opens', { skip: missingTools('cryptsetup') }, () => {
  const tmp = tempDir('lsk-fuzz-kdf-');
  try {
    const image = join(tmp.dir, 'cs.img');
    writeFileSync(image, new Uint8Array(3 << 20));
    const key = join(tmp.dir, 'key');
    writeFileSync(key, PASSPHRASE);
    run('cryptsetup', ['luksFormat', '--batch-mode', '--type', 'luks1', '--key-file', key, image]);
    const r = runCli(['luks', 'open-test', image, '--passphrase-file', key]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /keyslot 0 accepts the passphrase/);
  } finally {
    tmp.cleanup();
  }
});
