/**
 * The whole story against the real kernel: a medium built from a real root tree (host files, with
 * xattrs, hard links and symlinks, made into ext4 by mke2fs -d and into squashfs.img by mksquashfs);
 * the kernel boots it the way dracut does (squashfs → loop rootfs.img → dm-snapshot PO 8 → ext4) and
 * changes it like a package upgrade; livestick's status must name what changed, merge must produce a
 * base the kernel mounts with exactly the tree it saw before (content, modes, owners, links; xattrs
 * checked through the host kernel), e2fsck-clean, and a fresh overlay dm-snapshot accepts.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdirSync, readdirSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from '../helpers/tmp.ts';
import { missingTools, run } from '../helpers/tools.ts';
import { runCli } from '../helpers/cli.ts';
import { Ext4 } from '../../src/fs/ext4/index.ts';
import { FileDisk } from '../../src/io/disk.ts';
import { locateMedium, openMedium } from '../../src/ops/medium.ts';
import { bindingFor } from '../../src/ops/overlay.ts';
import { ExceptionStore, SnapshotDisk } from '../../src/xform/dmsnap/index.ts';
import { kernelHarnessStatus, runInKernel } from './harness.ts';

const MiB = 2 ** 20;

const MANIFEST = `manifest() {
  cd "$1" && find . -xdev | sort | while read -r p; do
    if [ -L "$p" ]; then echo "M|$p|$(stat -c '%f|%u|%g|%h' "$p")|L|$(readlink "$p")";
    elif [ -f "$p" ]; then echo "M|$p|$(stat -c '%f|%u|%g|%s|%h' "$p")|$(sha256sum < "$p" | cut -c1-64)";
    else echo "M|$p|$(stat -c '%f|%u|%g|%h' "$p")"; fi
  done
  cd /
}`;

const BOOT = `mkdir -p /mnt/sq /mnt/root
mount -t squashfs -o ro /dev/vdb /mnt/sq || exit 11
LOOP=$(losetup -f)
losetup -r $LOOP /mnt/sq/LiveOS/rootfs.img || exit 12
SZ=$(blockdev --getsz $LOOP)
R=/mnt/root`;

function manifestOf(output: string): string[] {
  return output.split('\n').filter((l) => l.startsWith('M|'));
}

/** Host-side xattr dump of a mounted tree: "path name=hex" lines. */
function hostXattrs(mountpoint: string): string[] {
  const py = `
import os, sys
root = sys.argv[1]
out = []
for d, dirs, files in os.walk(root):
    for n in dirs + files:
        p = os.path.join(d, n)
        if os.path.islink(p): continue
        for a in sorted(os.listxattr(p, follow_symlinks=False)):
            out.append("%s %s=%s" % (os.path.relpath(p, root), a, os.getxattr(p, a, follow_symlinks=False).hex()))
print("\\n".join(sorted(out)))
`;
  return run('python3', ['-c', py, mountpoint]).stdout.split('\n').filter(Boolean);
}

describe('a live medium through the kernel: upgrade, status, merge, boot the new base', { skip: kernelHarnessStatus() || missingTools('mke2fs', 'mksquashfs', 'e2fsck', 'python3') }, () => {
  const tmp = tempDir('livestick-kernel-medium-');
  const medium = join(tmp.dir, 'medium');
  const liveos = join(medium, 'LiveOS');
  const overlayPath = join(liveos, 'overlay-LIVE-1234-abcd');
  before(async () => {
    // A real root tree from the host's own files, with xattrs, hard links and symlinks.
    const tree = join(tmp.dir, 'tree');
    mkdirSync(join(tree, 'usr', 'share'), { recursive: true });
    mkdirSync(join(tree, 'usr', 'bin'), { recursive: true });
    cpSync('/etc', join(tree, 'etc'), { recursive: true, verbatimSymlinks: true, filter: (s) => !s.startsWith('/etc/ssl/private') });
    cpSync('/usr/share/perl', join(tree, 'usr', 'share', 'perl'), { recursive: true, verbatimSymlinks: true });
    const docs = readdirSync('/usr/share/doc').sort().slice(0, 150);
    for (const d of docs) cpSync(join('/usr/share/doc', d), join(tree, 'usr', 'share', 'doc', d), { recursive: true, verbatimSymlinks: true });
    for (const b of readdirSync('/usr/bin').sort().slice(0, 80)) cpSync(join('/usr/bin', b), join(tree, 'usr', 'bin', b), { verbatimSymlinks: true });
    run('python3', ['-c', `
import os, sys
t = sys.argv[1]
os.setxattr(os.path.join(t, 'etc/hostname'), 'user.livestick.origin', b'host')
os.setxattr(os.path.join(t, 'usr/share/perl'), 'user.livestick.dir', b'\\x00\\x01binary')
os.setxattr(os.path.join(t, 'etc/passwd'), 'trusted.livestick.t', b'x' * 300)
os.link(os.path.join(t, 'etc/hostname'), os.path.join(t, 'etc/hostname.link'))
os.symlink('../share/perl', os.path.join(t, 'usr/bin/perl-lib'))
`, tree]);
    const rootSrc = join(tmp.dir, 'sqsrc', 'LiveOS');
    mkdirSync(rootSrc, { recursive: true });
    run('mke2fs', ['-q', '-t', 'ext4', '-b', '4096', '-L', 'Live-root', '-E', 'root_owner=0:0', '-d', tree, join(rootSrc, 'rootfs.img'), '384M']);
    mkdirSync(liveos, { recursive: true });
    run('mksquashfs', [join(tmp.dir, 'sqsrc'), join(liveos, 'squashfs.img'), '-comp', 'zstd', '-Xcompression-level', '3', '-b', '128K', '-processors', '2', '-noappend', '-quiet']);
    // The overlay, bound to its base, as `livestick overlay create --base` would make it.
    const m = await openMedium(await locateMedium(medium));
    try {
      const ov = await FileDisk.open(overlayPath, { create: { size: 128 * MiB } });
      await ExceptionStore.format(ov, 8, await bindingFor(m.rootDisk, m.rootImage));
      await ov.close();
    } finally {
      await m.close();
    }
  });
  after(() => tmp.cleanup());

  test('upgrade in the kernel, status, merge, and the kernel boots the new base to the same tree', async () => {
    const upgrade = `${MANIFEST}
${BOOT}
echo "0 $SZ snapshot $LOOP /dev/vdc PO 8" | dmsetup create live-rw || exit 13
mount -t ext4 /dev/mapper/live-rw $R || exit 14
mkdir -p $R/usr/lib/newpkg $R/opt
dd if=/dev/urandom of=$R/usr/lib/newpkg/blob bs=1M count=20 2>/dev/null
chown 1234:5678 $R/usr/lib/newpkg/blob; chmod 640 $R/usr/lib/newpkg/blob
cp -a $R/usr/share/perl $R/opt/perl-copy
dd if=/dev/urandom of=$R/scratch bs=1M count=12 2>/dev/null; sync; rm $R/scratch
for f in $(find $R/usr/bin -type f | sort | head -40); do cp -p "$f" "$f.new" && mv -f "$f.new" "$f"; done
rm -rf $R/usr/share/doc/a* $R/usr/share/doc/b*
ln $R/etc/hostname $R/etc/hostname.link2
ln -s /usr/lib/newpkg/blob $R/usr/bin/blob-link
sync; umount $R || exit 15
dmsetup remove live-rw
echo "0 $SZ snapshot $LOOP /dev/vdc PO 8" | dmsetup create live-rw || exit 16
echo "@@status $(dmsetup status live-rw)"
mount -t ext4 -o ro /dev/mapper/live-rw $R || exit 17
manifest $R
umount $R; dmsetup remove live-rw; losetup -d $LOOP; umount /mnt/sq`;
    const r1 = await runInKernel({ script: upgrade, disks: [{ path: join(liveos, 'squashfs.img'), readOnly: true }, { path: overlayPath }], memoryMiB: 1024, timeoutMs: 900_000 });
    assert.equal(r1.status, 0, r1.output.slice(-3000));
    const before = manifestOf(r1.output);
    assert.ok(before.length > 1000, `manifest has ${before.length} entries`);
    assert.ok(before.some((l) => l.startsWith('M|./usr/lib/newpkg/blob|81a0|1234|5678|20971520|')));

    // livestick status: the per-path figures name what changed.
    const st = runCli(['status', medium, '--json', '--top', '20']);
    assert.equal(st.status, 0, st.stdout + st.stderr);
    const s = st.json;
    assert.equal(s.overlay.baseMatches, true);
    assert.equal(s.filesystem.clean, true);
    const blob = s.topFiles.find((f: { path: string }) => f.path === '/usr/lib/newpkg/blob');
    assert.ok(blob && blob.bytes === 20 * MiB, `blob: ${JSON.stringify(s.topFiles.slice(0, 5))}`);
    assert.ok(s.topDirectories.some((d: { path: string }) => d.path === '/opt/perl-copy'));
    assert.ok(s.usage.reclaimable >= 12 * MiB - 64 * 1024, `reclaimable ${s.usage.reclaimable}: the deleted scratch file`);
    assert.match(r1.output, new RegExp(`@@status 0 \\d+ snapshot ${s.overlay.allocatedSectors}/${s.overlay.totalSectors} ${s.overlay.metadataSectors}`));

    // xattrs the kernel sees before the merge, read by livestick from base + overlay.
    const xBefore: string[] = [];
    {
      const m = await openMedium(await locateMedium(medium));
      const ov = await FileDisk.open(overlayPath, { readOnly: true });
      const fs = await Ext4.open(new SnapshotDisk(m.rootDisk, await ExceptionStore.open(ov), { readOnly: true }));
      for (const p of ['etc/hostname', 'usr/share/perl', 'etc/passwd', 'opt/perl-copy']) {
        for (const x of await fs.getXattrs(`/${p}`)) xBefore.push(`${p} ${x.name}=${Buffer.from(x.value).toString('hex')}`);
      }
      await ov.close();
      await m.close();
    }
    assert.ok(xBefore.length >= 3, xBefore.join('\n'));

    const mg = runCli(['merge', medium, '--json']);
    assert.equal(mg.status, 0, mg.stdout + mg.stderr);
    assert.ok(mg.json.blocks.carried > 0 && mg.json.blocks.rebuilt > 0);
    assert.ok(mg.json.freeBytesDropped >= 12 * MiB);
    assert.ok(!existsSync(join(liveos, 'livestick-journal.json')));

    const boot = `${MANIFEST}
${BOOT}
e2fsck -fn $LOOP > /tmp/fsck.log 2>&1; echo "@@fsck $?"
echo "0 $SZ snapshot $LOOP /dev/vdc PO 8" | dmsetup create live-rw || exit 13
echo "@@status $(dmsetup status live-rw)"
mount -t ext4 -o ro /dev/mapper/live-rw $R || exit 14
manifest $R
umount $R; dmsetup remove live-rw; losetup -d $LOOP; umount /mnt/sq`;
    const r2 = await runInKernel({ script: boot, disks: [{ path: join(liveos, 'squashfs.img'), readOnly: true }, { path: overlayPath }], memoryMiB: 1024, timeoutMs: 900_000 });
    assert.equal(r2.status, 0, r2.output.slice(-3000));
    assert.match(r2.output, /@@fsck 0/, 'e2fsck -fn finds nothing to fix in the new base');
    assert.match(r2.output, /@@status 0 \d+ snapshot 16\/262144 16/, 'dm-snapshot accepts the fresh overlay, empty');
    const afterM = manifestOf(r2.output);
    assert.equal(afterM.length, before.length);
    assert.deepEqual(afterM, before, 'the kernel sees exactly the tree it saw before the merge');

    // xattrs of the new base, through the host kernel (squashfs + ext4 loop mounts).
    if (process.getuid?.() === 0) {
      const sq = join(tmp.dir, 'mnt-sq');
      const root = join(tmp.dir, 'mnt-root');
      mkdirSync(sq);
      mkdirSync(root);
      run('mount', ['-o', 'loop,ro', '-t', 'squashfs', join(liveos, 'squashfs.img'), sq]);
      try {
        run('mount', ['-o', 'loop,ro,noload', '-t', 'ext4', join(sq, 'LiveOS', 'rootfs.img'), root]);
        try {
          const xAfter = hostXattrs(root).filter((l) => ['etc/hostname ', 'usr/share/perl ', 'etc/passwd ', 'opt/perl-copy '].some((p) => l.startsWith(p)));
          assert.deepEqual(xAfter.sort(), xBefore.sort());
        } finally {
          run('umount', [root]);
        }
      } finally {
        run('umount', [sq]);
      }
    }
    writeFileSync(join(tmp.dir, 'done'), '');
  });
});
