// bin/livestick.js in a fresh checkout: `npm install` builds nothing, so the bin must run the sources.
// (The packaged case, dist/ without src/, is test/api/pack.slow.test.ts.)
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../..', import.meta.url));

test('a checkout without dist/ runs the CLI from src/ through tsx', (t) => {
  const checkout = mkdtempSync(join(tmpdir(), 'livestick-checkout-'));
  t.after(() => rmSync(checkout, { recursive: true, force: true }));
  cpSync(join(root, 'bin'), join(checkout, 'bin'), { recursive: true });
  cpSync(join(root, 'package.json'), join(checkout, 'package.json'));
  for (const dir of ['src', 'node_modules', 'native']) symlinkSync(join(root, dir), join(checkout, dir));
  const version = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).version;

  const r = spawnSync(process.execPath, [join(checkout, 'bin/livestick.js'), '--version'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout.trim(), version);
});
