/** mkfs: e2fsck -fn finds nothing, dumpe2fs agrees on the geometry, the kernel mounts it read-write, output is deterministic. */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { FileDisk, MemoryDisk } from '../../src/io/disk.ts';
import { Ext4 } from '../../src/fs/ext4/fs.ts';
import { buildBlockMap } from '../../src/fs/ext4/blockmap.ts';
import { mkfs } from '../../src/fs/ext4/mkfs.ts';
import { parseUuid } from '../../src/fs/ext4/superblock.ts';
import { missingTools, run } from '../helpers/tools.ts';
import { tempDir } from '../helpers/tmp.ts';
import { isRoot } from './fixtures.ts';

const skip = missingTools('e2fsck', 'dumpe2fs', 'debugfs');
const FIXED = { label: 'lsk-home', uuid: parseUuid('0a5b8e5e-1c1e-4a5e-9f0e-3f1a2b3c4d5e'), hashSeed: parseUuid('11111111-2222-4333-8444-555555555555'), time: 1_700_000_000 };

async function makeImage(path: string, size: number): Promise<void> {
  const disk = await FileDisk.open(path, { create: { size } });
  try {
    await mkfs(disk, { ...FIXED, zeroed: true });
  } finally {
    await disk.close();
  }
}

function canLoopMount(): boolean {
  return isRoot && run('sh', ['-c', 'grep -qw ext4 /proc/filesystems && test -e /dev/loop-control'], { allowFail: true }).status === 0;
}

describe('ext4 mkfs', () => {
  let tmp: ReturnType<typeof tempDir>;
  before(() => {
    tmp = tempDir('lsk-mkfs-');
  });
  after(() => tmp.cleanup());

  for (const [name, size] of [
    ['one group', 64 * 2 ** 20],
    ['several groups with a short last one', 300 * 2 ** 20 + 5 * 4096],
    ['a trimmed tail group', 128 * 2 ** 20 + 700 * 4096],
    ['two flex groups', 4200 * 2 ** 20],
  ] as const) {
    test(`${name}: e2fsck -fn clean, dumpe2fs agrees, reader agrees`, { skip }, async () => {
      const image = join(tmp.dir, `${size}.img`);
      await makeImage(image, size);
      const fsck = run('e2fsck', ['-fn', image], { allowFail: true });
      assert.equal(fsck.status, 0, fsck.stdout + fsck.stderr);
      const dump = run('dumpe2fs', ['-h', image]).stdout;
      assert.match(dump, /Filesystem features:\s+has_journal ext_attr dir_index filetype extent 64bit flex_bg sparse_super large_file huge_file dir_nlink extra_isize metadata_csum/);
      assert.match(dump, /Filesystem volume name:\s+lsk-home/);
      assert.match(dump, /Filesystem UUID:\s+0a5b8e5e-1c1e-4a5e-9f0e-3f1a2b3c4d5e/);
      assert.match(dump, /Block size:\s+4096/);
      const disk = await FileDisk.open(image, { readOnly: true });
      try {
        const fs = await Ext4.open(disk, { strict: true });
        assert.deepEqual((await fs.readdir('/')).map((e) => e.name), ['lost+found']);
        const state = await fs.state();
        assert.equal(state.clean, true);
        const map = await buildBlockMap(fs);
        assert.equal(map.freeCount(), Number(/^Free blocks:\s+(\d+)$/m.exec(dump)![1]));
        assert.equal(map.freeCount(), fs.sb.freeBlocksCount);
        assert.equal(map.multiplyClaimed, 0);
        assert.equal(map.claimedButFree, 0);
      } finally {
        await disk.close();
      }
    });
  }

  test('is deterministic (pinned hash) and works on any Disk', async () => {
    const a = new MemoryDisk(32 * 2 ** 20);
    const b = new MemoryDisk(32 * 2 ** 20);
    b.bytes.fill(0xa5);
    await mkfs(a, FIXED);
    await mkfs(b, FIXED);
    const fsB = await Ext4.open(b, { strict: true });
    assert.equal((await fsB.state()).clean, true);
    const hash = createHash('sha256').update(a.bytes).digest('hex');
    assert.equal(hash, '076595da442273e743b69aa75dc20af1809081ac0facb77c3f8fccd6020d5c8a');
    if (!skip) {
      // Formatting over garbage (no `zeroed`) must still give a clean filesystem.
      const garbage = join(tmp.dir, 'garbage.img');
      writeFileSync(garbage, b.bytes);
      const fsck = run('e2fsck', ['-fn', garbage], { allowFail: true });
      assert.equal(fsck.status, 0, fsck.stdout);
    }
  });

  test('the kernel mounts it read-write; e2fsck and the reader agree afterwards', { skip: skip || (canLoopMount() ? false : 'needs root and loop devices') }, async () => {
    const image = join(tmp.dir, 'mount.img');
    await makeImage(image, 96 * 2 ** 20);
    const mnt = join(tmp.dir, 'mnt');
    mkdirSync(mnt);
    run('mount', ['-o', 'loop', '-t', 'ext4', image, mnt]);
    try {
      mkdirSync(join(mnt, 'd'));
      writeFileSync(join(mnt, 'd', 'f.txt'), 'written by the kernel\n');
    } finally {
      run('umount', [mnt]);
    }
    const fsck = run('e2fsck', ['-fn', image], { allowFail: true });
    assert.equal(fsck.status, 0, fsck.stdout);
    const disk = await FileDisk.open(image, { readOnly: true });
    try {
      const fs = await Ext4.open(disk, { strict: true });
      assert.equal(new TextDecoder().decode(await fs.readFile('/d/f.txt')), 'written by the kernel\n');
    } finally {
      await disk.close();
    }
  });
});
