/**
 * cryptsetup agrees on what a passphrase is: its --key-file is exact bytes (a newline included), and
 * a passphrase it reads from stdin without --key-file stops at the newline, like our --passphrase-file.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runCli } from '../helpers/cli.ts';
import { missingTools, run } from '../helpers/tools.ts';
import { tempDir } from '../helpers/tmp.ts';

const skip = missingTools('cryptsetup');
const FAST = ['--pbkdf', 'pbkdf2', '--pbkdf-force-iterations', '1000'];

test('cryptsetup and livestick mean the same by a passphrase file, a key file and a typed line', { skip }, () => {
  const { dir, cleanup } = tempDir();
  try {
    const echoed = join(dir, 'echoed');
    writeFileSync(echoed, 'pass\n');
    const exact = join(dir, 'exact');
    writeFileSync(exact, 'pass');
    const testPass = (img: string, args: string[], input?: string): number =>
      run('cryptsetup', ['open', '--test-passphrase', ...args, img], { allowFail: true, ...(input === undefined ? {} : { input }) }).status;

    // Ours, formatted with --passphrase-file (newline dropped): the passphrase is "pass".
    const ours = join(dir, 'ours.img');
    assert.equal(runCli(['luks', 'format', ours, '--size', '20M', '--passphrase-file', echoed, ...FAST]).status, 0);
    assert.equal(testPass(ours, ['--key-file', exact]), 0);
    assert.notEqual(testPass(ours, ['--key-file', echoed]), 0, "cryptsetup's --key-file keeps the newline");
    assert.equal(testPass(ours, [], 'pass\n'), 0, 'a passphrase on stdin without --key-file stops at the newline');

    // cryptsetup's, formatted with --key-file holding the newline: only our --key-file opens it.
    const theirs = join(dir, 'theirs.img');
    run('truncate', ['-s', '20M', theirs]);
    run('cryptsetup', ['luksFormat', '--batch-mode', '--type', 'luks2', '--pbkdf', 'pbkdf2', '--pbkdf-force-iterations', '1000', '--key-file', echoed, theirs]);
    assert.equal(runCli(['luks', 'open-test', theirs, '--key-file', echoed]).status, 0);
    assert.equal(runCli(['luks', 'open-test', theirs, '--passphrase-file', echoed]).status, 77);
  } finally {
    cleanup();
  }
});
