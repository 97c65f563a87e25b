/**
 * writeSquashfs into a file on FAT32: the SquashFS writer grows its output Disk by resize as it writes
 * and shrinks it to the padded image size at the end (Output.toDisk). The volume's free space is first
 * cut into 64 KiB holes, so the image's chain is fragmented; then fsck.fat -n must be clean, mcopy must
 * copy the image out byte for byte as FatFs reads it, and unsquashfs must extract exactly the tree.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readlinkSync, statSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { FileDisk, readAt } from '../../src/io/disk.ts';
import { FatFs, mkfsFat } from '../../src/fs/fat/index.ts';
import { dirNode, fileNode, writeSquashfs, type TreeNode } from '../../src/fs/squashfs/index.ts';
import { missingTools, run } from '../helpers/tools.ts';
import { tempDir } from '../helpers/tmp.ts';
import { hostListing, rng, sha, sorted } from './fixtures.ts';

const MiB = 2 ** 20;
const NOW = 1_750_000_000_000;

describe('SquashFS written into a FAT32 file', { skip: missingTools('fsck.fat', 'mcopy', 'mshowfat', 'unsquashfs') }, () => {
  const tmp = tempDir('livestick-fat-squashfs-');
  after(() => tmp.cleanup());

  test('writeSquashfs(tree, fatFile) grows the file by resize, shrinks it at the end; fsck clean, unsquashfs extracts the tree', async () => {
    const img = join(tmp.dir, 'stick.img');
    run('truncate', ['-s', String(48 * MiB), img]);
    const disk = await FileDisk.open(img);
    await mkfsFat(disk, { type: 'fat32', label: 'LIVE', serial: 0x5a5a0001, now: NOW });
    let fs = await FatFs.open(disk, { now: () => NOW });
    // Fill the volume with 64 KiB files, then delete every other one: only holes are left.
    await fs.mkdir('/filler');
    const piece = new Uint8Array(64 * 1024).fill(0x3c);
    let n = 0;
    while ((await fs.space()).freeBytes > 2 * piece.byteLength) await fs.writeFile(`/filler/f${n++}`, piece);
    for (let i = 0; i < n; i += 2) await fs.unlink(`/filler/f${i}`);
    await fs.mkdir('/LiveOS');

    // Incompressible data (so the image is several MiB and crosses many holes), zeros (sparse blocks),
    // small files (fragments), a symlink, nested directories.
    const r = rng(77);
    const noise = (size: number): Uint8Array => new Uint8Array(size).map(() => Math.floor(r() * 256));
    const files: Record<string, Uint8Array> = {
      'usr/lib/big.bin': noise(13 * MiB + 12345),
      'usr/lib/zeros.bin': new Uint8Array(2 * MiB),
      'usr/share/doc/README': new TextEncoder().encode('a live system\n'),
      'etc/os-release': new TextEncoder().encode('ID=livestick\n'),
      'var/tiny': noise(700),
    };
    const tree = dirNode({ mtime: 1_700_000_000 }, {
      usr: dirNode({}, {
        lib: dirNode({}, { 'big.bin': fileNode(files['usr/lib/big.bin']!), 'zeros.bin': fileNode(files['usr/lib/zeros.bin']!) }),
        share: dirNode({}, { doc: dirNode({}, { README: fileNode(files['usr/share/doc/README']!) }) }),
      }),
      etc: dirNode({}, { 'os-release': fileNode(files['etc/os-release']!) }),
      var: dirNode({}, { tiny: fileNode(files['var/tiny']!) }),
      bin: { type: 'symlink', mode: 0o777, uid: 0, gid: 0, mtime: 0, target: 'usr/bin' } satisfies TreeNode,
    });
    const file = await fs.createFile('/LiveOS/squashfs.img', { size: 0, uninitialized: true });
    let resizes = 0;
    const traced = new Proxy(file, {
      get(target, prop) {
        if (prop === 'resize') return async (size: number) => (resizes++, target.resize(size));
        const v = Reflect.get(target, prop);
        return typeof v === 'function' ? v.bind(target) : v;
      },
    });
    const result = await writeSquashfs(tree, traced, { compressor: 'gzip', threads: 1, mkfsTime: 1_700_000_000 });
    assert.ok(resizes > 3, `the image grew step by step (${resizes} resizes)`);
    assert.equal(file.size, result.size, 'the file ends at the padded image size');
    await fs.close();
    await disk.close();

    run('fsck.fat', ['-n', img]);
    const chain = run('env', ['MTOOLS_SKIP_CHECK=1', 'mshowfat', '-i', img, '::/LiveOS/squashfs.img']).stdout;
    const pieces = chain.match(/<\d+(-\d+)?>/g) ?? [];
    assert.ok(pieces.length > 20, `the image's chain is fragmented (${pieces.length} pieces)`);
    const out = join(tmp.dir, 'squashfs.img');
    run('env', ['MTOOLS_SKIP_CHECK=1', 'mcopy', '-i', img, '::/LiveOS/squashfs.img', out]);
    assert.equal(statSync(out).size, result.size);
    const again = await FileDisk.open(img, { readOnly: true });
    fs = await FatFs.open(again);
    const ours = await fs.openFile('/LiveOS/squashfs.img');
    assert.equal(sha(await readAt(ours, 0, ours.size)), sha(readFileSync(out)), 'mcopy and FatFs read the same bytes');
    await again.close();

    const dest = join(tmp.dir, 'extracted');
    run('unsquashfs', ['-no-xattrs', '-d', dest, out]);
    const expected = new Map<string, string>();
    for (const d of ['/usr', '/usr/lib', '/usr/share', '/usr/share/doc', '/etc', '/var']) expected.set(d, 'dir');
    for (const [p, bytes] of Object.entries(files)) expected.set(`/${p}`, sha(bytes));
    assert.equal(readlinkSync(join(dest, 'bin')), 'usr/bin');
    unlinkSync(join(dest, 'bin'));
    const listed = hostListing(dest);
    assert.deepEqual(sorted(listed), sorted(expected));
  });
});
