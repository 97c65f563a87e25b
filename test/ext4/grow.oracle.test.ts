/** Growing a filesystem: e2fsck -fn clean, contents kept, free counts right, the kernel mounts and writes. */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { FileDisk } from '../../src/io/disk.ts';
import { Ext4 } from '../../src/fs/ext4/fs.ts';
import { Ext4Writer } from '../../src/fs/ext4/writer.ts';
import { growFs } from '../../src/fs/ext4/grow.ts';
import { mkfs } from '../../src/fs/ext4/mkfs.ts';
import { buildBlockMap } from '../../src/fs/ext4/blockmap.ts';
import { UnsupportedFeatureError } from '../../src/errors.ts';
import { missingTools, run } from '../helpers/tools.ts';
import { tempDir } from '../helpers/tmp.ts';
import { isRoot, randomBytes } from './fixtures.ts';

const skip = missingTools('e2fsck', 'dumpe2fs', 'mke2fs');
const MiB = 2 ** 20;

function fsckClean(image: string): void {
  const r = run('e2fsck', ['-fn', image], { allowFail: true });
  assert.equal(r.status, 0, `e2fsck -fn:\n${r.stdout}${r.stderr}`);
}

describe('ext4 grow', { skip }, () => {
  let tmp: ReturnType<typeof tempDir>;
  before(() => {
    tmp = tempDir('lsk-ext4-grow-');
  });
  after(() => tmp.cleanup());

  for (const [name, from, to, metaBg] of [
    ['within the descriptor table', 100 * MiB, 1100 * MiB, false],
    ['past it (switches to meta_bg)', 100 * MiB, 8400 * MiB, true],
  ] as const) {
    test(`${name}: clean, contents kept, free counts right`, async () => {
      const image = join(tmp.dir, `${to}.img`);
      const data = randomBytes(3 * MiB, 11);
      const disk = await FileDisk.open(image, { create: { size: from } });
      try {
        await mkfs(disk, { zeroed: true, time: 1_700_000_000 });
        const w = await Ext4Writer.open(await Ext4.open(disk));
        await w.mkdir('/d');
        await w.writeFile('/d/data.bin', data);
        await w.close();
        await disk.resize(to);
        const r = await growFs(await Ext4.open(disk), to, { zeroed: true });
        assert.equal(r.metaBgEnabled, metaBg);
        assert.ok(r.newGroups > r.oldGroups);
      } finally {
        await disk.close();
      }
      fsckClean(image);
      const dump = run('dumpe2fs', ['-h', image]).stdout;
      if (metaBg) assert.match(dump, /Filesystem features:.*meta_bg/);
      const ro = await FileDisk.open(image, { readOnly: true });
      try {
        const fs = await Ext4.open(ro, { strict: true });
        assert.equal(fs.sb.blocksCount, Math.floor(to / 4096));
        assert.ok(Buffer.from(await fs.readFile('/d/data.bin')).equals(Buffer.from(data)));
        const map = await buildBlockMap(fs);
        assert.equal(map.freeCount(), Number(/^Free blocks:\s+(\d+)$/m.exec(dump)![1]));
        assert.equal(map.claimedButFree, 0);
      } finally {
        await ro.close();
      }
      if (isRoot && metaBg) {
        const mnt = join(tmp.dir, 'mnt');
        mkdirSync(mnt, { recursive: true });
        run('mount', ['-o', 'loop', '-t', 'ext4', image, mnt]);
        try {
          run('dd', ['if=/dev/zero', `of=${join(mnt, 'fill')}`, 'bs=1M', 'count=200', 'status=none']);
        } finally {
          run('umount', [mnt]);
        }
        fsckClean(image);
      }
    });
  }

  test('refuses to move past a resize inode it cannot rebuild', async () => {
    const image = join(tmp.dir, 'mke2fs.img');
    run('mke2fs', ['-q', '-F', '-t', 'ext4', '-b', '4096', image, '64M']);
    const disk = await FileDisk.open(image);
    try {
      await disk.resize(2048 * MiB);
      await assert.rejects(growFs(await Ext4.open(disk), 2048 * MiB), UnsupportedFeatureError);
    } finally {
      await disk.close();
    }
  });
});
