import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fromSystemError } from '../../src/errors.ts';
import { quoteName, reportFailure } from '../../src/cli/common.ts';
import { runCli } from '../helpers/cli.ts';
import { tempDir } from '../helpers/tmp.ts';

function systemError(fn: () => unknown): NodeJS.ErrnoException {
  try {
    fn();
  } catch (err) {
    return err as NodeJS.ErrnoException;
  }
  throw new Error('expected a system error');
}

test('fromSystemError names ENOTDIR, EISDIR and ENAMETOOLONG instead of a generic "not found"', () => {
  const { dir, cleanup } = tempDir();
  try {
    const file = join(dir, 'f');
    writeFileSync(file, 'x');
    mkdirSync(join(dir, 'd'));
    const cases: [NodeJS.ErrnoException, RegExp][] = [
      [systemError(() => readFileSync(join(file, 'below'))), /not a directory.*\(ENOTDIR\)/],
      [systemError(() => readFileSync(join(dir, 'd'))), /is a directory \(EISDIR\)/],
      [systemError(() => readFileSync(join(dir, 'n'.repeat(300)))), /file name too long \(ENAMETOOLONG\)/],
      [systemError(() => mkdirSync(join(dir, 'd'))), /already exists \(EEXIST\)/],
    ];
    for (const [err, words] of cases) {
      const typed = fromSystemError(err, 'some/file', 'open the file');
      assert.match(typed.message, words);
      assert.doesNotMatch(typed.message, /no such file/);
      assert.equal(typed.file, 'some/file');
    }
  } finally {
    cleanup();
  }
});

test('a raw Node system error reaching the CLI is reported as a typed error, not as "a bug"', () => {
  const err = systemError(() => readFileSync('/nonexistent-livestick-dir/x'));
  const written: string[] = [];
  const original = process.stderr.write.bind(process.stderr);
  const exitBefore = process.exitCode;
  process.stderr.write = ((chunk: string) => {
    written.push(String(chunk));
    return true;
  }) as typeof process.stderr.write;
  let exit: number | string | undefined;
  try {
    reportFailure(err, false);
    exit = process.exitCode;
  } finally {
    process.stderr.write = original;
    process.exitCode = exitBefore;
  }
  const text = written.join('');
  assert.doesNotMatch(text, /this is a bug/);
  assert.match(text, /\/nonexistent-livestick-dir\/x: cannot open: no such file or directory \(ENOENT\)/);
  assert.equal(exit, 66);
});

test('the CLI names a too-long file name (ENAMETOOLONG) rather than a generic failure', () => {
  const r = runCli(['squashfs', 'info', `/tmp/${'x'.repeat(300)}`]);
  assert.equal(r.status, 66, r.stderr);
  assert.match(r.stderr, /file name too long \(ENAMETOOLONG\)/);
  assert.doesNotMatch(r.stderr, /this is a bug/);
});

test('quoteName quotes as GNU ls shell-escape does', () => {
  assert.equal(quoteName('plain-name.txt'), 'plain-name.txt');
  assert.equal(quoteName('-leading'), '-leading');
  assert.equal(quoteName('a b'), "'a b'");
  assert.equal(quoteName("it's"), '"it\'s"');
  assert.equal(quoteName('a\nb'), "'a'$'\\n''b'");
  assert.equal(quoteName('\tx'), "$'\\t''x'");
  assert.equal(quoteName('a\x01'), "'a'$'\\001'");
  assert.equal(quoteName("it's\n"), "'it'\\''s'$'\\n'");
  assert.equal(quoteName('$HOME'), "'$HOME'");
  assert.equal(quoteName(''), "''");
});

test('ls-style output quotes a name holding a newline (squashfs ls)', () => {
  const { dir, cleanup } = tempDir();
  try {
    const src = join(dir, 'src');
    mkdirSync(src);
    writeFileSync(join(src, 'two\nlines'), 'x');
    writeFileSync(join(src, 'plain'), 'y');
    const img = join(dir, 'x.sqfs');
    assert.equal(runCli(['squashfs', 'create', src, img, '--compressor', 'gzip']).status, 0);
    const r = runCli(['squashfs', 'ls', img]);
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(r.stdout.trimEnd().split('\n'), ['plain', "'two'$'\\n''lines'"]);
    const j = runCli(['squashfs', 'ls', img, '--json']);
    assert.deepEqual(j.json.entries.map((e: { name: string }) => e.name), ['plain', 'two\nlines'], 'JSON keeps the exact name');
  } finally {
    cleanup();
  }
});
