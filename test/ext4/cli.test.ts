/** The ext4 command family end to end: mkfs, put, info, ls, cat, usage, grow (own code only, no tools). */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from '../helpers/tmp.ts';

function cli(...args: string[]): { stdout: string; stderr: string; status: number } {
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'ext4', ...args], { encoding: 'utf8' });
  return { stdout: r.stdout, stderr: r.stderr, status: r.status ?? -1 };
}

describe('livestick ext4 CLI', () => {
  let tmp: ReturnType<typeof tempDir>;
  let image: string;
  before(() => {
    tmp = tempDir('lsk-ext4-cli-');
    image = join(tmp.dir, 'home.img');
    const src = join(tmp.dir, 'src');
    mkdirSync(join(src, 'docs'), { recursive: true });
    writeFileSync(join(src, 'docs', 'readme.txt'), 'read me\n');
    writeFileSync(join(src, 'big.bin'), new Uint8Array(200_000).fill(7));
    symlinkSync('docs/readme.txt', join(src, 'link'));
    assert.equal(cli('mkfs', image, '--size', '32M', '--label', 'home', '--uuid', '2f1e0d3c-4b5a-4697-8877-665544332211').status, 0);
    assert.equal(cli('put', image, src, '/user').status, 0);
  });
  after(() => tmp.cleanup());

  test('info --json', () => {
    const r = cli('info', image, '--json');
    assert.equal(r.status, 0, r.stderr);
    const j = JSON.parse(r.stdout);
    assert.equal(j.ok, true);
    assert.equal(j.label, 'home');
    assert.equal(j.uuid, '2f1e0d3c-4b5a-4697-8877-665544332211');
    assert.equal(j.state, 'clean');
    assert.equal(j.blockSize, 4096);
    assert.ok(j.features.includes('metadata_csum'));
  });

  test('ls, ls -l and cat', () => {
    assert.equal(cli('ls', image, '/user').stdout, 'big.bin\ndocs\nlink\n');
    assert.match(cli('ls', image, '/user', '-l').stdout, /^l.* link -> docs\/readme.txt$/m);
    assert.equal(cli('cat', image, '/user/docs/readme.txt').stdout, 'read me\n');
    const missing = cli('cat', image, '/nope');
    assert.equal(missing.status, 66);
  });

  test('usage names the owner of a file block', () => {
    const ls = JSON.parse(cli('ls', image, '/user', '--json').stdout);
    assert.ok(ls.entries.find((e: { name: string }) => e.name === 'big.bin'));
    const r = cli('usage', image, '--range', '0:8192', '--json');
    assert.equal(r.status, 0, r.stderr);
    const j = JSON.parse(r.stdout);
    const owners = j.ranges[0].owners as { paths: string[]; blocks: number }[];
    const big = owners.find((o) => o.paths.includes('/user/big.bin'));
    assert.ok(big);
    assert.equal(big.blocks, Math.ceil(200_000 / 4096));
    assert.ok(j.ranges[0].free > 0);
    assert.equal(cli('usage', image).status, 64);
  });

  test('grow then read back', () => {
    assert.equal(cli('grow', image, '--size', '300M').status, 0);
    const j = JSON.parse(cli('info', image, '--json').stdout);
    assert.equal(j.blocks, 300 * 256);
    assert.equal(cli('cat', image, '/user/docs/readme.txt').stdout, 'read me\n');
  });
});
