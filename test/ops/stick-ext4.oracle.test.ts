/**
 * A stick image whose LiveOS/ sits on an ext4 partition (livecd-iso-to-disk --format ext4; made here
 * by mke2fs -d into a GPT partition): status and merge on the image file give the directory's results
 * and byte-identical files, written through the journaled ext4 writer without a mount; e2fsck -fn is
 * clean afterwards and debugfs reads the new base as livestick wrote it.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from '../helpers/tmp.ts';
import { missingTools, run } from '../helpers/tools.ts';
import { FileDisk } from '../../src/io/disk.ts';
import { addPartition, createGpt } from '../../src/fs/ptable/index.ts';
import { mediumStatus } from '../../src/ops/status.ts';
import { mergeMedium } from '../../src/ops/merge.ts';
import { bootFinds, mediumView, updatedSample } from './helpers.ts';

const MiB = 2 ** 20;
const T = 1_767_225_600;
const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

describe('an ext4 stick image as the medium', { skip: missingTools('mke2fs', 'e2fsck', 'debugfs') }, () => {
  const tmp = tempDir('livestick-stick-ext4-');
  let dir: string;
  let img: string;
  let start = 0;
  let size = 0;
  before(async () => {
    dir = await updatedSample(join(tmp.dir, 'dir'));
    img = join(tmp.dir, 'stick.img');
    const disk = await FileDisk.open(img, { create: { size: 256 * MiB } });
    let table = await createGpt(disk, { diskGuid: '0B5E7A1C-2026-4C01-8A0B-1C2D3E4F5A6B' });
    table = await addPartition(disk, table, { type: 'linux-filesystem', name: 'LIVE' });
    await disk.close();
    start = table.partitions[0]!.startBytes;
    size = table.partitions[0]!.sizeBytes;
    run('mke2fs', ['-q', '-t', 'ext4', '-L', 'LIVE', '-d', dir, '-E', `offset=${start}`, img, `${Math.floor(size / MiB)}M`]);
  });
  after(() => tmp.cleanup());

  const partition = (): string => {
    const p = join(tmp.dir, 'part.img');
    run('dd', [`if=${img}`, `of=${p}`, 'bs=1M', `skip=${start / MiB}`, `count=${Math.floor(size / MiB)}`, 'conv=sparse', 'status=none']);
    return p;
  };

  test('status and merge on the image equal the directory; e2fsck clean; debugfs reads the new files', async () => {
    const s1 = await mediumStatus(dir);
    const s2 = await mediumStatus(img);
    assert.deepEqual([s2.usage, s2.topFiles, s2.topDirectories, s2.overlay.usedBytes], [s1.usage, s1.topFiles, s1.topDirectories, s1.overlay.usedBytes]);
    const view = await mediumView(img);
    const m1 = await mergeMedium(dir, { mkfsTime: T });
    const m2 = await mergeMedium(img, { mkfsTime: T });
    assert.deepEqual([m2.newBaseBytes, m2.blocks, m2.freeBytesDropped], [m1.newBaseBytes, m1.blocks, m1.freeBytesDropped]);
    assert.equal(await bootFinds(img), 'pair');
    assert.deepEqual(await mediumView(img), view, 'a boot of the image sees the tree it saw before the merge');
    const p = partition();
    const fsck = run('e2fsck', ['-fn', p], { allowFail: true });
    assert.equal(fsck.status, 0, fsck.stdout + fsck.stderr);
    const names = run('debugfs', ['-R', 'ls -p /LiveOS', p]).stdout.split('\n').map((l) => l.split('/')[5]).filter((n) => n && n !== '.' && n !== '..').sort();
    assert.deepEqual(names, readdirSync(join(dir, 'LiveOS')).sort(), 'no leftovers, no journal: the same names as the directory');
    for (const name of names) {
      const out = join(tmp.dir, `dump-${name}`);
      run('debugfs', ['-R', `dump /LiveOS/${name} ${out}`, p]);
      assert.equal(sha(readFileSync(out)), sha(readFileSync(join(dir, 'LiveOS', name))), `${name} byte for byte`);
    }
  });
});
