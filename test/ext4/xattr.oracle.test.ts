/**
 * ext4 put copies the host's user/trusted/security xattrs (files, directories, symlinks' own): e2fsck
 * -fn finds nothing, debugfs lists them, our reader and the kernel (loop mount) read them back.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { FileDisk } from '../../src/io/disk.ts';
import { Ext4 } from '../../src/fs/ext4/fs.ts';
import { Ext4Writer } from '../../src/fs/ext4/writer.ts';
import { mkfs } from '../../src/fs/ext4/mkfs.ts';
import { copyIn } from '../../src/fs/ext4/copyin.ts';
import { missingTools, run } from '../helpers/tools.ts';
import { tempDir } from '../helpers/tmp.ts';
import { dumpOf, makeXattrTree, xattrDump } from '../squashfs/xattr-tree.ts';
import { isRoot } from './fixtures.ts';

const skip = missingTools('e2fsck', 'debugfs', 'setfattr', 'getfattr') || (isRoot ? false : 'needs root (trusted.* and security.* xattrs)');
const tmp = tempDir('ext4-xattr-');
after(() => tmp.cleanup());

/** Every node's xattrs under `top` in the image, keyed by path relative to `top`. */
async function ext4XattrDump(fs: Ext4, top: string): Promise<Map<string, string>> {
  const entries: Array<[string, Awaited<ReturnType<Ext4['xattrs']>>]> = [];
  const walk = async (path: string, rel: string): Promise<void> => {
    const ino = await fs.lookup(path);
    const inode = await fs.readInode(ino);
    entries.push([rel, await fs.xattrs(inode)]);
    if ((await fs.statInode(ino)).kind !== 'dir') return;
    for (const e of await fs.readDirInode(inode)) {
      if (e.name === '.' || e.name === '..') continue;
      await walk(`${path}/${e.name}`, rel === '' ? e.name : `${rel}/${e.name}`);
    }
  };
  await walk(top, '');
  return dumpOf(entries);
}

test('ext4 put copies user, trusted and security xattrs: e2fsck clean, debugfs, our reader and the kernel see the source\'s', { skip }, async () => {
  const src = join(tmp.dir, 'src');
  makeXattrTree(src);
  const want = xattrDump(src);
  const image = join(tmp.dir, 'fs.img');
  const disk = await FileDisk.open(image, { create: { size: 32 << 20 } });
  try {
    await mkfs(disk, { time: 1_700_000_000 });
    const w = await Ext4Writer.open(await Ext4.open(disk));
    await copyIn(w, src, '/t');
    await w.close();
  } finally {
    await disk.close();
  }
  const fsck = run('e2fsck', ['-fn', image], { allowFail: true });
  assert.equal(fsck.status, 0, `e2fsck -fn:\n${fsck.stdout}${fsck.stderr}`);
  const ea = (path: string) => run('debugfs', ['-R', `ea_list ${path}`, image]).stdout;
  assert.match(ea('/t/usr/bin/ping'), /security\.capability \(20\) = 01 00 00 02 00 20 00 00 00 00 00 00 00 00 00 00 00 00 00 00/);
  assert.match(ea('/t/usr/bin/arping'), /trusted\.link \(18\) = "on the link itself"/);
  assert.match(ea('/t/home/liveuser'), /user\.dirnote \(16\) = "a directory note"/);

  const ro = await FileDisk.open(image, { readOnly: true });
  try {
    const got = await ext4XattrDump(await Ext4.open(ro), '/t');
    assert.deepEqual([...got].sort(), [...want].sort());
  } finally {
    await ro.close();
  }

  if (run('sh', ['-c', 'grep -qw ext4 /proc/filesystems && test -e /dev/loop-control'], { allowFail: true }).status === 0) {
    const m = join(tmp.dir, 'm');
    mkdirSync(m);
    run('mount', ['-o', 'loop,ro', '-t', 'ext4', image, m]);
    try {
      const mounted = xattrDump(join(m, 't'));
      assert.deepEqual([...mounted].sort(), [...want].sort());
    } finally {
      run('umount', [m]);
    }
  }
});
