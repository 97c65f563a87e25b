/*
 * Prestarted codec workers (comp/pool.ts prestartWorkers): pools adopt them and get the same results as
 * from workers started with their setup, jobs sent while they load their codec are not lost, unused
 * ones do not keep a process alive, and the CLI starts as many as `squashfs extract` will use.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import '../helpers/setup.ts';
import { tempDir } from '../helpers/tmp.ts';
import { sample } from '../helpers/codec-images.ts';
import { createBlockCompressor, prestartWorkers, spareWorkers, stopSpareWorkers } from '../../src/fs/squashfs/comp/pool.ts';
import { compressorForWriting } from '../../src/fs/squashfs/comp/index.ts';
import { writeSquashfs } from '../../src/fs/squashfs/writer.ts';
import { SquashfsReader } from '../../src/fs/squashfs/reader.ts';
import { extractSquashfs } from '../../src/fs/squashfs/extract.ts';
import { dirNode, fileNode } from '../../src/fs/squashfs/tree.ts';
import { FileDisk } from '../../src/io/disk.ts';
import { extractWorkers } from '../../src/cli/commands/index.ts';

test('a pool adopts prestarted workers, whose results equal inline coding', async () => {
  prestartWorkers(2);
  assert.equal(spareWorkers(), 2);
  const pool = await createBlockCompressor('xz', {}, 131072, 2);
  assert.equal(spareWorkers(), 0);
  const inline = await compressorForWriting('xz', {}, 131072);
  try {
    const blocks = [sample(131072, 1), sample(131072, 2), sample(5000, 3)];
    const outs = await Promise.all(blocks.map((b) => pool.compress(b)));
    blocks.forEach((b, i) => assert.deepEqual(outs[i], inline.compress(b), `block ${i}`));
  } finally {
    await pool.close();
  }
});

test('extraction on prestarted workers: jobs queued while they load their codec all run', async () => {
  const t = tempDir('sqfs-prestart-');
  try {
    const files: Record<string, ReturnType<typeof fileNode>> = {};
    for (let i = 0; i < 12; i++) files[`f${i}`] = fileNode(sample(200_000 + i * 50_000, i));
    const img = join(t.dir, 'img.sqfs');
    await writeSquashfs(dirNode({}, files), img, { compressor: 'zstd', mkfsTime: 0 });
    prestartWorkers(2);
    const disk = await FileDisk.open(img, { readOnly: true });
    try {
      const res = await extractSquashfs(await SquashfsReader.open(disk), join(t.dir, 'out'), '', { threads: 2 });
      assert.equal(res.files, 12);
      assert.equal(spareWorkers(), 0);
    } finally {
      await disk.close();
    }
    for (let i = 0; i < 12; i++) assert.deepEqual(new Uint8Array(readFileSync(join(t.dir, 'out', `f${i}`))), sample(200_000 + i * 50_000, i));
  } finally {
    await stopSpareWorkers();
    t.cleanup();
  }
});

test('workers no pool adopts do not keep the process alive', () => {
  const script = `import { prestartWorkers, spareWorkers } from ${JSON.stringify(new URL('../../src/fs/squashfs/comp/pool.ts', import.meta.url).href)}; prestartWorkers(2); console.log(spareWorkers());`;
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env['NODE_TEST_CONTEXT'];
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { env, encoding: 'utf8', timeout: 30_000 });
  assert.equal(r.error, undefined, 'exited on its own');
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout.trim(), '2');
});

test('the CLI starts as many workers as squashfs extract will use', async () => {
  const t = tempDir('sqfs-workers-');
  try {
    const big = join(t.dir, 'big.img');
    const small = join(t.dir, 'small.img');
    writeFileSync(big, new Uint8Array(9 << 20));
    writeFileSync(small, new Uint8Array(4096));
    assert.equal(await extractWorkers(['squashfs', 'extract', big, 'dest']), availableParallelism());
    assert.equal(await extractWorkers(['squashfs', 'extract', small, 'dest']), 0, 'small images extract on the main thread');
    assert.equal(await extractWorkers(['squashfs', 'extract', '--threads', '3', small, 'dest']), 3);
    assert.equal(await extractWorkers(['squashfs', 'extract', big, 'dest', '--threads=0']), 0);
    assert.equal(await extractWorkers(['squashfs', 'extract', '--json', join(t.dir, 'missing'), 'dest']), 0);
    assert.equal(await extractWorkers(['squashfs', 'extract', big, 'dest', '--threads', 'many']), 0);
    assert.equal(await extractWorkers(['squashfs', 'create', big, 'out']), 0);
  } finally {
    t.cleanup();
  }
});
