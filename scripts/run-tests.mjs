#!/usr/bin/env node
// Runs every test file under test/ with node:test (TypeScript through tsx).
//   npm test                 all suites: unit, property, oracle, kernel (qemu), slow
//   npm test -- --fast       unit and property suites only (skips *.oracle, *.kernel, *.slow, *.boot files)
//   npm test -- PATTERN…     only files whose path contains one of the patterns
//   npm test -- --jobs N     files run N at a time (default: 2 on a machine with 2 or more cores; 1 = serial)
//
// Each file runs in its own `node --test` process; its report is printed whole when it ends, so the
// reports of files running side by side never interleave. The longest files start first (qemu boots,
// kernel jobs, fault suites), so the short ones fill the other slot around them. node's own runner
// would run files one at a time on a 2-core machine (its default is cores − 1), and most suites use
// one core: the qemu suites wait on one TCG vCPU, the fault suites on one JS thread.
import { availableParallelism } from 'node:os';
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { spawn } from 'node:child_process';

const args = process.argv.slice(2);
const fast = args.includes('--fast');
const jobsAt = args.indexOf('--jobs');
const jobsArg = jobsAt >= 0 ? Number(args[jobsAt + 1]) : Number(process.env.LIVESTICK_TEST_JOBS ?? NaN);
const jobs = Number.isInteger(jobsArg) && jobsArg >= 1 ? jobsArg : Math.min(2, Math.max(1, availableParallelism()));
const patterns = args.filter((a, i) => !a.startsWith('--') && !(jobsAt >= 0 && i === jobsAt + 1));

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

// Rough expected seconds, for the order only (longest first); measured figures in test/README.md.
function expectedSeconds(file) {
  if (file.endsWith('.boot.test.ts')) return 400;
  if (file.endsWith('.kernel.test.ts')) return file.includes('medium') ? 320 : 120;
  if (file.endsWith('.slow.test.ts')) return 200;
  if (file.endsWith('.oracle.test.ts')) return 60;
  return 10;
}
const queue = [...files].sort((a, b) => expectedSeconds(b) - expectedSeconds(a) || a.localeCompare(b));

const tapDir = mkdtempSync(join(tmpdir(), 'livestick-tap-'));
const nodeOptions = `${process.env.NODE_OPTIONS ?? ''} --max-old-space-size=4096`.trim();
const totals = { pass: 0, fail: 0, cancelled: 0, skipped: 0 };
const failedFiles = [];
const timings = [];
const started = Date.now();

function runFile(file, index) {
  const tap = join(tapDir, `${index}.tap`);
  if (expectedSeconds(file) >= 100) process.stdout.write(`--- started ${file}\n`);
  return new Promise((resolve) => {
    const t0 = Date.now();
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', '--test', '--test-reporter=spec', '--test-reporter-destination=stdout', '--test-reporter=tap', `--test-reporter-destination=${tap}`, file],
      { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NODE_OPTIONS: nodeOptions } },
    );
    children.add(child);
    const out = [];
    child.stdout.on('data', (b) => out.push(b));
    child.stderr.on('data', (b) => out.push(b));
    child.on('close', (code, signal) => {
      children.delete(child);
      const seconds = (Date.now() - t0) / 1000;
      let counts = { pass: 0, fail: 0, cancelled: 0, skipped: 0 };
      try {
        const text = readFileSync(tap, 'utf8');
        const count = (name) => Number(new RegExp(`^# ${name} (\\d+)$`, 'm').exec(text)?.[1] ?? 0);
        counts = { pass: count('pass'), fail: count('fail'), cancelled: count('cancelled'), skipped: count('skipped') };
      } catch {}
      const failed = code !== 0 || counts.fail + counts.cancelled > 0;
      if (failed && counts.fail + counts.cancelled === 0) counts.fail = 1; // the process itself failed
      for (const k of Object.keys(totals)) totals[k] += counts[k];
      if (failed) failedFiles.push(file);
      timings.push({ file, seconds });
      process.stdout.write(`\n=== ${file} (${seconds.toFixed(1)} s${failed ? `, FAILED${signal ? ` by ${signal}` : code ? `, exit ${code}` : ''}` : ''})\n`);
      process.stdout.write(Buffer.concat(out));
      resolve();
    });
  });
}

const children = new Set();
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    for (const child of children) child.kill(sig);
    process.exit(1);
  });
}

let next = 0;
async function lane() {
  while (next < queue.length) {
    const index = next++;
    await runFile(queue[index], index);
  }
}
console.log(`run-tests: ${queue.length} files, ${jobs} at a time`);
await Promise.all(Array.from({ length: Math.min(jobs, queue.length) }, lane));
rmSync(tapDir, { recursive: true, force: true });

const slowest = timings.sort((a, b) => b.seconds - a.seconds).slice(0, 12);
console.log(`\nslowest files:\n${slowest.map((t) => `  ${t.seconds.toFixed(0).padStart(5)} s  ${t.file}`).join('\n')}`);
if (failedFiles.length > 0) console.log(`\nfailed files:\n${failedFiles.map((f) => `  ${f}`).join('\n')}`);
console.log(`\ntests: ${totals.pass} passed, ${totals.fail + totals.cancelled} failed, ${totals.skipped} skipped (${((Date.now() - started) / 60000).toFixed(1)} min)`);
process.exit(failedFiles.length > 0 ? 1 : 0);
