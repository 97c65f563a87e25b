/**
 * Where passphrases come from: --passphrase-file is what a person types (one trailing newline
 * dropped), --key-file is exact bytes; at a terminal three tries, a new passphrase asked twice, a short
 * one warned about. luks format refuses a volume holding a signature without --force or a typed YES.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runCli } from '../helpers/cli.ts';
import { ptySkip, runCliOnTerminal } from '../helpers/pty.ts';
import { tempDir } from '../helpers/tmp.ts';

const FAST = ['--pbkdf', 'pbkdf2', '--pbkdf-force-iterations', '1000'];
const hashOf = (p: string): string => createHash('sha256').update(readFileSync(p)).digest('hex');

test('a passphrase file made with echo unlocks what was typed; --key-file keeps the newline as a different key', () => {
  const { dir, cleanup } = tempDir();
  try {
    const img = join(dir, 'v.img');
    const typed = join(dir, 'typed');
    writeFileSync(typed, 'pass'); // exactly what a person typing "pass" gives
    const echoed = join(dir, 'echoed');
    writeFileSync(echoed, 'pass\n'); // echo pass > echoed
    let r = runCli(['luks', 'format', img, '--size', '20M', '--key-file', typed, ...FAST, '--json']);
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.equal(runCli(['luks', 'open-test', img, '--passphrase-file', echoed]).status, 0, 'the echoed file is the typed passphrase');
    assert.equal(runCli(['luks', 'open-test', img, '--passphrase-file', typed]).status, 0, 'a file without the newline too');
    r = runCli(['luks', 'open-test', img, '--key-file', echoed, '--json']);
    assert.equal(r.status, 77, 'as a key file, the newline is part of the key');
    assert.equal(r.json.error.code, 'WRONG_PASSPHRASE');
    // Only one newline goes: a file with an empty second line, or two lines, is not a typed passphrase.
    writeFileSync(echoed, 'pass\n\n');
    r = runCli(['luks', 'open-test', img, '--passphrase-file', echoed, '--json']);
    assert.equal(r.status, 64);
    assert.match(r.json.error.message, /more than one line.*--key-file/);
    // A Windows line end keeps its \r (as cryptsetup's stdin read does), with a warning.
    writeFileSync(echoed, 'pass\r\n');
    r = runCli(['luks', 'open-test', img, '--passphrase-file', echoed]);
    assert.equal(r.status, 77);
    assert.match(r.stderr, /carriage return/);
    r = runCli(['luks', 'open-test', img, '--passphrase-file', typed, '--key-file', typed]);
    assert.equal(r.status, 64);
    assert.match(r.stderr, /--passphrase-file and --key-file: give one of them/);
  } finally {
    cleanup();
  }
});

test('luks format refuses a volume holding a filesystem (names it and where), --force overrides', () => {
  const { dir, cleanup } = tempDir();
  try {
    const img = join(dir, 'fs.img');
    const pw = join(dir, 'pw');
    writeFileSync(pw, 'a good passphrase\n');
    assert.equal(runCli(['ext4', 'mkfs', img, '--size', '20M']).status, 0);
    const before = hashOf(img);
    let r = runCli(['luks', 'format', img, '--passphrase-file', pw, ...FAST]);
    assert.equal(r.status, 73, r.stderr);
    assert.match(r.stderr, /fs\.img: holds ext4 \(signature at byte 1080\); formatting destroys it: use --force/);
    r = runCli(['luks', 'format', img, '--passphrase-file', pw, ...FAST, '--json']);
    assert.equal(r.json.error.code, 'EXISTS');
    assert.equal(hashOf(img), before, 'nothing was written');
    r = runCli(['luks', 'format', img, '--passphrase-file', pw, ...FAST, '--force', '--json']);
    assert.equal(r.status, 0, r.stdout + r.stderr);
    r = runCli(['luks', 'format', img, '--passphrase-file', pw, ...FAST]);
    assert.equal(r.status, 73);
    assert.match(r.stderr, /holds LUKS2 \(signature at byte 0\), LUKS2 \(secondary header\) \(signature at byte 16384\)/);
  } finally {
    cleanup();
  }
});

test('at a terminal: format asks for a typed YES, a new passphrase twice (short one warned about), unlock gets three tries', { skip: ptySkip() }, () => {
  const { dir, cleanup } = tempDir();
  try {
    const img = join(dir, 'fs.img');
    assert.equal(runCli(['ext4', 'mkfs', img, '--size', '20M']).status, 0);
    const before = hashOf(img);
    let t = runCliOnTerminal(['luks', 'format', img, ...FAST], [['Type YES', 'yes\r']]);
    assert.equal(t.status, 1, t.output);
    assert.match(t.output, /holds ext4 \(signature at byte 1080\)/);
    assert.match(t.output, /not confirmed: nothing was changed/);
    assert.equal(hashOf(img), before);

    t = runCliOnTerminal(['luks', 'format', img, ...FAST], [['Type YES', 'YES\r'], ['Enter passphrase', 'abc\r'], ['Verify', 'abc\r']]);
    assert.equal(t.status, 0, t.output);
    assert.match(t.output, /warning: the new passphrase has only 3 characters/);
    assert.doesNotMatch(t.output, /abc/, 'no echo');
    const key = join(dir, 'key');
    writeFileSync(key, 'abc');
    assert.equal(runCli(['luks', 'open-test', img, '--key-file', key]).status, 0, 'the typed passphrase is the exact bytes');

    t = runCliOnTerminal(['luks', 'open-test', img], [['Enter passphrase', 'abd\r'], ['Enter passphrase', 'xyz\r'], ['Enter passphrase', 'abc\r']]);
    assert.equal(t.status, 0, t.output);
    assert.equal(t.output.match(/Try again/g)?.length, 2);
    assert.match(t.output, /keyslot 0 accepts the passphrase/);

    t = runCliOnTerminal(['luks', 'open-test', img], [['Enter passphrase', '1\r'], ['Enter passphrase', '2\r'], ['Enter passphrase', '3\r'], ['Enter passphrase', 'abc\r']]);
    assert.equal(t.status, 77, t.output);
    assert.equal(t.answered, 3, 'no fourth prompt');
  } finally {
    cleanup();
  }
});
