/**
 * home import copies the host's user/trusted/security xattrs into the image (e2fsck clean, debugfs
 * and our reader see them) and home export writes them back out (getfattr sees the source's).
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { createHome, homeExport, homeImport } from '../../src/ops/home.ts';
import { FileDisk } from '../../src/io/disk.ts';
import { Ext4 } from '../../src/fs/ext4/fs.ts';
import { captureXattrWarnings } from '../../src/io/xattr.ts';
import { tempDir } from '../helpers/tmp.ts';
import { missingTools, run } from '../helpers/tools.ts';
import { makeXattrTree, xattrDump } from '../squashfs/xattr-tree.ts';
import { e2fsckHome } from './helpers.ts';

const isRoot = process.getuid?.() === 0;
const skip = missingTools('e2fsck', 'debugfs', 'setfattr', 'getfattr', 'getcap') || (isRoot ? false : 'needs root (trusted.* and security.* xattrs)');
const tmp = tempDir('home-xattr-');
after(() => tmp.cleanup());

test('home import keeps user, trusted and security xattrs, and home export writes them back', { skip }, async () => {
  const src = join(tmp.dir, 'src');
  makeXattrTree(src);
  const want = xattrDump(src);
  const image = join(tmp.dir, 'home.img');
  await createHome(image, { size: 16 << 20 });
  const warnings: string[] = [];
  const restore = captureXattrWarnings((w) => warnings.push(w));
  try {
    await homeImport(image, src, '/', { owner: 'keep' });
    const fsck = await e2fsckHome(image, join(tmp.dir, 'fs.img'));
    assert.equal(fsck.status, 0, fsck.out);
    assert.match(run('debugfs', ['-R', 'ea_list /src/home/liveuser/notes.txt', image]).stdout, /user\.comment \(9\) = "a comment"/);
    const disk = await FileDisk.open(image, { readOnly: true });
    try {
      const fs = await Ext4.open(disk);
      const ping = await fs.xattrs(await fs.readInode(await fs.lookup('/src/usr/bin/ping')));
      assert.deepEqual(ping.map((x) => x.name).sort(), ['security.capability', 'security.selinux']);
      const link = await fs.xattrs(await fs.readInode(await fs.lookup('/src/usr/bin/arping')));
      assert.deepEqual(link.map((x) => x.name).sort(), ['security.selinux', 'trusted.link']);
    } finally {
      await disk.close();
    }

    const out = join(tmp.dir, 'out');
    await homeExport(image, out);
    assert.deepEqual([...xattrDump(join(out, 'src'))].sort(), [...want].sort());
    assert.match(run('getcap', [join(out, 'src/usr/bin/ping')]).stdout, /cap_net_raw[=+]ep/);
  } finally {
    restore();
  }
  assert.deepEqual(warnings, []);
});
