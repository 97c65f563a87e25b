#!/usr/bin/env node
// Runs every test file under test/ with node:test (TypeScript through tsx).
//   npm test                 all suites: unit, property, oracle, kernel (qemu), slow
//   npm test -- --fast       unit and property suites only (skips *.oracle, *.kernel, *.slow, *.boot files)
//   npm test -- PATTERN…     only files whose path contains one of the patterns
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { spawnSync } from 'node:child_process';

const args = process.argv.slice(2);
const fast = args.includes('--fast');
const patterns = args.filter((a) => !a.startsWith('--'));

function walk(dir) {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? walk(path) : [path];
  });
}

let files = walk('test').filter((f) => f.endsWith('.test.ts')).map((f) => relative('.', f)).sort();
if (fast) files = files.filter((f) => !/\.(oracle|kernel|slow|boot)\.test\.ts$/.test(f));
if (patterns.length > 0) files = files.filter((f) => patterns.some((p) => f.includes(p)));
if (files.length === 0) {
  console.error('run-tests: no test files matched');
  process.exit(1);
}

// Human output on the terminal; a TAP copy for the closing summary line.
const tapDir = mkdtempSync(join(tmpdir(), 'livestick-tap-'));
const tap = join(tapDir, 'results.tap');
const result = spawnSync(
  process.execPath,
  ['--import', 'tsx', '--test', '--test-reporter=spec', '--test-reporter-destination=stdout', '--test-reporter=tap', `--test-reporter-destination=${tap}`, ...files],
  { stdio: 'inherit', env: { ...process.env, NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --max-old-space-size=4096`.trim() } },
);
let summary = '';
try {
  const text = readFileSync(tap, 'utf8');
  const count = (name) => Number(new RegExp(`^# ${name} (\\d+)$`, 'm').exec(text)?.[1] ?? 0);
  summary = `tests: ${count('pass')} passed, ${count('fail') + count('cancelled')} failed, ${count('skipped')} skipped`;
} catch {}
rmSync(tapDir, { recursive: true, force: true });
if (summary) console.log(`\n${summary}`);
process.exit(result.status ?? 1);
