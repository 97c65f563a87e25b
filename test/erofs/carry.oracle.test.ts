/**
 * Oracle for carried pclusters: an old image of a varied tree, made by mkfs.erofs 1.8.6 with Fedora's
 * options (-zlzma,level=6 -C1048576 -Efragments) or by our writer with the same settings, is
 * rewritten by our writer from a tree naming the old image as every file's source. The host kernel
 * mounts the new image and fsck.erofs 1.8.6 checks and extracts it; both show the source tree. The
 * carried pclusters are the old image's bytes. The old packed inode leads the new one (the tree's small
 * files and tails keep their fragments; the long xattr prefixes follow it).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { basename, join } from 'node:path';
import '../helpers/setup.ts';
import { missingTools, run } from '../helpers/tools.ts';
import { FileDisk } from '../../src/io/disk.ts';
import { ErofsReader } from '../../src/fs/erofs/reader.ts';
import { ErofsFileSystem } from '../../src/fs/erofs/filesystem.ts';
import { settingsFit, writeErofs, type ErofsWriteOptions } from '../../src/fs/erofs/writer.ts';
import { treeFromFileSystem } from '../../src/fs/squashfs/from-fs.ts';
import { diffSnapshots, snapshot, xattrReaderFor } from '../squashfs/fixture.ts';
import { content, makeErofsTree, missingTrixie, mountedSnapshot, TRIXIE } from './fixture.ts';
import { writeFileSync } from 'node:fs';

const skip = missingTools('mount', 'umount', 'setfattr', 'getfattr', 'mknod', 'mkfifo', 'python3') || missingTrixie();
let dir = '';
let src = '';
let want = new Map<string, string>();
before(() => {
  if (skip !== false) return;
  dir = mkdtempSync(join(TRIXIE, 'tmp', 'erofs-carry-oracle-'));
  src = join(dir, 'src');
  makeErofsTree(src, 12);
  // Files of several pclusters (1 MiB each), compressible and not, beside the fixture's.
  writeFileSync(join(src, 'big-mixed'), content(6 * (1 << 20) + 4321, 21, 0.0005));
  writeFileSync(join(src, 'big-random'), content(3 * (1 << 20) + 17, 22, 1));
  writeFileSync(join(src, 'big-copy'), content(6 * (1 << 20) + 4321, 21, 0.0005));
  // big-mixed with 8 bytes more (a changed copy): its leading pclusters are big-mixed's, which
  // mkfs.erofs 1.8.6 stores once (its extent dedupe under -Efragments) and so do we.
  writeFileSync(join(src, 'big-extended'), Buffer.concat([content(6 * (1 << 20) + 4321, 21, 0.0005), Buffer.from('changed\n')]));
  want = snapshot(src);
});
after(() => {
  if (dir !== '' && !process.env.LIVESTICK_KEEP_TMP) rmSync(dir, { recursive: true, force: true });
});

const inside = (p: string) => `/tmp/${basename(dir)}/${p.slice(dir.length + 1)}`;
const FEDORA: ErofsWriteOptions = { compression: 'lzma,level=6', pclusterSize: 1 << 20, fragments: true, mkfsTime: 1_700_000_000 };

for (const maker of ['mkfs.erofs 1.8.6', 'livestick'] as const) {
  test(`carry oracle (old image by ${maker}, Fedora's options): the rewritten image with carried pclusters is the source tree to the kernel and to fsck.erofs 1.8.6; carried pclusters are the old bytes`, { skip, timeout: 600_000 }, async () => {
    const tag = maker === 'livestick' ? 'ours' : 'mkfs';
    const old = join(dir, `old-${tag}.img`);
    if (maker === 'livestick') await writeErofs(src, old, { ...FEDORA, scan: { readXattrs: xattrReaderFor(src) } });
    else run('chroot', [TRIXIE, 'mkfs.erofs', '-zlzma,level=6', '-C1048576', '-Efragments', '--workers=2', inside(old), inside(src)]);
    assert.deepEqual(diffSnapshots(want, mountedSnapshot(old, join(dir, `mnt-old-${tag}`))), [], 'the old image');
    const neu = join(dir, `new-${tag}.img`);
    const disk = await FileDisk.open(old, { readOnly: true });
    try {
      const reader = await ErofsReader.open(disk);
      assert.equal(settingsFit(reader, FEDORA), true);
      const tree = await treeFromFileSystem(new ErofsFileSystem(reader), '/', { blocksFrom: (path) => ({ erofs: reader, path }) });
      const result = await writeErofs(tree, neu, { ...FEDORA, threads: 2 });
      assert.ok(result.carried.files >= 3, `${result.carried.files} files carried`);
      assert.ok(result.carried.pclusterBytes >= 3 << 20, `${result.carried.pclusterBytes} pcluster bytes carried`);
      // The small files are whole in the old packed inode: it is carried, and they keep their fragments there.
      assert.ok(result.carried.packedBytes > 0, `${result.carried.packedBytes} packed bytes carried`);
      // The carried pclusters of big-mixed are the old image's bytes.
      const bytesOld = readFileSync(old);
      const bytesNew = readFileSync(neu);
      const nr = await ErofsReader.open(await FileDisk.open(neu, { readOnly: true }));
      const a = (await reader.compressedExtents(await reader.lookup('big-mixed'))).extents.filter((x) => x.source === 'blocks' && typeof x.algorithm === 'number');
      const b = (await nr.compressedExtents(await nr.lookup('big-mixed'))).extents;
      assert.ok(a.length >= 2);
      for (const x of a) {
        const y = b.find((e) => e.la === x.la);
        assert.ok(y !== undefined && y.llen === x.llen && y.plen === x.plen, `big-mixed at ${x.la}`);
        assert.ok(bytesNew.subarray(y.pa, y.pa + y.plen).equals(bytesOld.subarray(x.pa, x.pa + x.plen)), `big-mixed at ${x.la}: the pcluster's bytes`);
      }
      // big-extended shares big-mixed's leading pclusters in the old image and in the new one.
      const sharedIn = async (r: ErofsReader): Promise<number> => {
        const starts = async (p: string) => new Set((await r.compressedExtents(await r.lookup(p))).extents.filter((x) => x.source === 'blocks').map((x) => x.pa));
        const [m, e] = [await starts('big-mixed'), await starts('big-extended')];
        return [...e].filter((pa) => m.has(pa)).length;
      };
      const oldShared = await sharedIn(reader);
      assert.ok(oldShared >= 2, `the old image shares ${oldShared} pclusters`);
      assert.equal(await sharedIn(nr), oldShared, 'the new image shares as many');
      assert.ok(result.shared.pclusters >= oldShared, `${result.shared.pclusters} pclusters shared`);
      await nr.disk.close();
    } finally {
      await disk.close();
    }
    assert.deepEqual(diffSnapshots(want, mountedSnapshot(neu, join(dir, `mnt-new-${tag}`))), [], 'the kernel');
    const out = join(dir, `extracted-${tag}`);
    run('chroot', [TRIXIE, 'fsck.erofs', `--extract=${inside(out)}`, '--xattrs', inside(neu)]);
    assert.deepEqual(diffSnapshots(want, snapshot(out)), [], 'fsck.erofs --extract');
  });
}
