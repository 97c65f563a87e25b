import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runCli } from '../helpers/cli.ts';
import { tempDir } from '../helpers/tmp.ts';

const FAST = ['--pbkdf', 'pbkdf2', '--pbkdf-force-iterations', '1000'];

test('luks format / info / open-test / add-key / passwd / remove-key through the CLI', () => {
  const { dir, cleanup } = tempDir();
  try {
    const img = join(dir, 'home.img');
    const pw = (name: string, text: string): string => {
      const p = join(dir, name);
      writeFileSync(p, text);
      return p;
    };
    const first = pw('first', 'first secret');
    let r = runCli(['luks', 'format', img, '--size', '20M', '--passphrase-file', first, '--sector-size', '512', '--label', 'home', ...FAST, '--json']);
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.equal(r.json.version, 2);
    assert.equal(r.json.sectorSize, 512);
    assert.equal(r.json.keyslots[0].kdf.type, 'pbkdf2');
    assert.equal(r.json.keyslots[0].kdf.iterations, 1000);

    r = runCli(['luks', 'format', img, '--passphrase-file', first, '--json']);
    assert.equal(r.status, 73);
    assert.equal(r.json.error.code, 'EXISTS');

    r = runCli(['luks', 'info', img]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /LUKS2/);
    assert.match(r.stdout, /aes-xts-plain64, 512-bit key, 512-byte sectors/);
    assert.match(r.stdout, /label:\s+home/);
    assert.match(r.stdout, /0: pbkdf2-sha256, 1000 iterations/);

    r = runCli(['luks', 'open-test', img, '--passphrase-file', '-', '--json'], { input: 'first secret' });
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.equal(r.json.keyslot, 0);

    r = runCli(['luks', 'open-test', img, '--passphrase-file', '-', '--json'], { input: 'first secreT' });
    assert.equal(r.status, 77);
    assert.equal(r.json.ok, false);
    assert.equal(r.json.error.code, 'WRONG_PASSPHRASE');
    // --passphrase-file is what a person types: one trailing newline is dropped. --key-file is exact
    // bytes (cryptsetup's meaning), so there the newline makes a different, wrong key.
    r = runCli(['luks', 'open-test', img, '--passphrase-file', '-', '--json'], { input: 'first secret\n' });
    assert.equal(r.status, 0, r.stdout + r.stderr);
    r = runCli(['luks', 'open-test', img, '--key-file', '-'], { input: 'first secret\n' });
    assert.equal(r.status, 77);
    assert.match(r.stderr, /no keyslot accepts this passphrase/);
    const outputs = [r.stdout, r.stderr];

    r = runCli(['luks', 'add-key', img, '--passphrase-file', first, '--new-passphrase-file', '-', ...FAST, '--json'], { input: 'second secret' });
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.equal(r.json.keyslot, 1);

    r = runCli(['luks', 'passwd', img, '--passphrase-file', first, '--new-passphrase-file', pw('third', 'third secret'), '--json']);
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.equal(r.json.keyslot, 0);
    assert.equal(runCli(['luks', 'open-test', img, '--passphrase-file', first]).status, 77);
    assert.equal(runCli(['luks', 'open-test', img, '--passphrase-file', join(dir, 'third'), '--json']).json.keyslot, 0);

    r = runCli(['luks', 'remove-key', img, '--passphrase-file', '-', '--json'], { input: 'second secret' });
    assert.equal(r.json.keyslot, 1);
    r = runCli(['luks', 'remove-key', img, '--passphrase-file', join(dir, 'third'), '--json']);
    assert.equal(r.status, 1);
    assert.match(r.json.error.message, /last one/);

    // No secrets in any output; no terminal → a usage error pointing at --passphrase-file.
    r = runCli(['luks', 'open-test', img], { input: '' });
    assert.equal(r.status, 64);
    assert.match(r.stderr, /--passphrase-file/);
    for (const out of [r.stdout, r.stderr, ...outputs]) assert.doesNotMatch(out, /secret/);

    r = runCli(['luks', 'info', join(dir, 'first'), '--json']);
    assert.equal(r.json.error.code, 'CORRUPT_IMAGE');
    assert.equal(r.status, 65);
  } finally {
    cleanup();
  }
});
