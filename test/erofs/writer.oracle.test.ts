/**
 * Oracle for the EROFS writer: images written from a varied host tree (every file type, holes, hard
 * links, xattrs, a 3000-entry directory, long, Unicode and deep names, 0 B … 3 MiB files) are mounted
 * by the host kernel, extracted by fsck.erofs 1.8.6 and read by dump.erofs, and each shows the source tree.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import '../helpers/setup.ts';
import { missingTools, run } from '../helpers/tools.ts';
import { FileDisk } from '../../src/io/disk.ts';
import { ErofsReader } from '../../src/fs/erofs/reader.ts';
import { writeErofs, type ErofsWriteOptions } from '../../src/fs/erofs/writer.ts';
import { diffSnapshots, snapshot, xattrReaderFor } from '../squashfs/fixture.ts';
import { content, erofsSnapshot, makeErofsTree, missingTrixie, mountedSnapshot, TRIXIE } from './fixture.ts';

const skipHost = missingTools('mount', 'umount', 'setfattr', 'getfattr', 'mknod', 'mkfifo', 'python3');
const skipTrixie = skipHost || missingTrixie();
const base = skipTrixie === false ? join(TRIXIE, 'tmp') : tmpdir();
let dir = '';
let src = '';
let want = new Map<string, string>();
before(() => {
  if (skipHost) return;
  dir = mkdtempSync(join(base, 'erofs-writer-oracle-'));
  src = join(dir, 'src');
  makeErofsTree(src, 11);
  want = snapshot(src);
});
after(() => {
  if (dir !== '' && !process.env.LIVESTICK_KEEP_TMP) rmSync(dir, { recursive: true, force: true });
});

const inside = (p: string) => `/tmp/${basename(dir)}/${p.slice(dir.length + 1)}`;

for (const [blockSize, chunkSize] of [[4096, undefined], [512, undefined], [4096, 1 << 20], [512, 512]] as const) {
  const what = `${blockSize}-byte blocks, ${chunkSize === undefined ? 'flat files' : `${chunkSize}-byte chunks`}`;
  test(`writer oracle (${what}): the kernel mounts the image and shows the source tree; our reader agrees`, { skip: skipHost, timeout: 300_000 }, async () => {
    const img = join(dir, `w${blockSize}-${chunkSize}.img`);
    await writeErofs(src, img, { blockSize, ...(chunkSize !== undefined ? { chunkSize } : {}), mkfsTime: 1_700_000_000, scan: { readXattrs: xattrReaderFor(src) } });
    const got = mountedSnapshot(img, join(dir, `mnt${blockSize}-${chunkSize}`));
    assert.deepEqual(diffSnapshots(want, got), []);
    assert.equal(got.size, want.size);
    const disk = await FileDisk.open(img, { readOnly: true });
    try {
      const ours = await erofsSnapshot(await ErofsReader.open(disk));
      assert.deepEqual(diffSnapshots(want, ours.desc), []);
    } finally {
      await disk.close();
    }
  });
}

const zcases = [[4096, 1 << 20, ''], [4096, 4096, ''], [512, 65536, ''], [4096, 1 << 20, 'fragments'], [512, 4096, 'fragments'], [4096, 1 << 20, 'allFragments']] as const;
for (const [blockSize, pclusterSize, mode] of zcases) {
  const what = `lzma level 6${mode ? ` with ${mode}` : ''}, ${blockSize}-byte blocks, ${pclusterSize}-byte pclusters`;
  test(`writer oracle (${what}): the kernel mounts the compressed image and shows the source tree; our reader agrees`, { skip: skipHost, timeout: 300_000 }, async () => {
    const img = join(dir, `z${blockSize}-${pclusterSize}${mode}.img`);
    await writeErofs(src, img, { blockSize, compression: 'lzma,level=6', pclusterSize, ...(mode ? { [mode]: true } : {}), mkfsTime: 1_700_000_000, scan: { readXattrs: xattrReaderFor(src) } });
    const got = mountedSnapshot(img, join(dir, `zmnt${blockSize}-${pclusterSize}${mode}`));
    assert.deepEqual(diffSnapshots(want, got), []);
    assert.equal(got.size, want.size);
    const disk = await FileDisk.open(img, { readOnly: true });
    try {
      const ours = await erofsSnapshot(await ErofsReader.open(disk));
      assert.deepEqual(diffSnapshots(want, ours.desc), []);
    } finally {
      await disk.close();
    }
  });
}

// 4096-byte blocks only: fsck.erofs 1.8.6 crashes verifying sb_csum at 512-byte blocks (uncompressed images too) and rejects 1 KiB ones.
test('writer oracle (lzma): fsck.erofs 1.8.6 checks and extracts the identical tree from compressed images (1 MiB and one-block pclusters, fragments, all-fragments); dump.erofs shows LZMA, big pclusters, fragments, compact inodes', { skip: skipTrixie, timeout: 300_000 }, async () => {
  for (const [pclusterSize, mode] of [[1 << 20, ''], [4096, ''], [1 << 20, 'fragments'], [4096, 'allFragments']] as const) {
    const img = join(dir, `fsck-z${pclusterSize}${mode}.img`);
    await writeErofs(src, img, { compression: 'lzma,level=6', pclusterSize, ...(mode ? { [mode]: true } : {}), mkfsTime: 1_700_000_000, scan: { readXattrs: xattrReaderFor(src) } });
    const out = join(dir, `extracted-z${pclusterSize}${mode}`);
    run('chroot', [TRIXIE, 'fsck.erofs', `--extract=${inside(out)}`, '--xattrs', inside(img)]);
    assert.deepEqual(diffSnapshots(want, snapshot(out)), []);
    const sb = run('chroot', [TRIXIE, 'dump.erofs', '-s', inside(img)]).stdout;
    assert.match(sb, /compr_algs:\s+lzma/);
    assert.match(sb, /0padding/);
    if (pclusterSize > 4096) assert.match(sb, /big_pcluster/);
    if (mode) assert.match(sb, /fragments/);
    if (mode) assert.match(sb, /packed nid:\s+[1-9]/);
    const big = run('chroot', [TRIXIE, 'dump.erofs', '--path=/text-1m', inside(img)]).stdout;
    assert.match(big, /Layout: 3/, 'compressed, compact indexes');
  }
});

for (const compression of ['lz4hc', 'deflate,level=9', 'zstd,level=15']) {
  test(`writer oracle (${compression}, 1 MiB pclusters, fragments): the kernel mounts the image and shows the source tree; fsck.erofs 1.8.6 extracts it identically; dump.erofs names the algorithm`, { skip: skipHost, timeout: 300_000 }, async () => {
    const tag = compression.replace(/[^a-z0-9]/g, '');
    const img = join(dir, `a-${tag}.img`);
    await writeErofs(src, img, { compression, pclusterSize: 1 << 20, fragments: true, mkfsTime: 1_700_000_000, scan: { readXattrs: xattrReaderFor(src) } });
    const got = mountedSnapshot(img, join(dir, `amnt-${tag}`));
    assert.deepEqual(diffSnapshots(want, got), []);
    assert.equal(got.size, want.size);
    if (skipTrixie !== false) return;
    const out = join(dir, `aextracted-${tag}`);
    run('chroot', [TRIXIE, 'fsck.erofs', `--extract=${inside(out)}`, '--xattrs', inside(img)]);
    assert.deepEqual(diffSnapshots(want, snapshot(out)), []);
    const sb = run('chroot', [TRIXIE, 'dump.erofs', '-s', inside(img)]).stdout;
    assert.match(sb, new RegExp(`compr_algs:\\s+${compression.startsWith('lz4') ? 'lz4' : compression.split(',')[0]}`));
  });
}

test('writer oracle (dedupe: lzma with and without fragments, lz4 one-block pclusters): identical files sharing pclusters and fragments, and a file sharing another\'s leading pclusters, are mounted by the kernel and extracted by fsck.erofs 1.8.6 as the source', { skip: skipHost, timeout: 300_000 }, async () => {
  const dsrc = join(dir, 'dedupe-src');
  mkdirSync(join(dsrc, 'sub'), { recursive: true });
  // Four 1 MiB pclusters of lzma (and lz4 one-block pclusters of a few KiB, most alone in their compact pack).
  const text = content(6 << 20, 41, 0.002);
  for (const p of ['a', 'b', 'sub/c']) writeFileSync(join(dsrc, p), text);
  // The same leading bytes and a different end: only the leading pclusters can be shared.
  writeFileSync(join(dsrc, 'near'), Buffer.concat([text, Buffer.from('changed\n')]));
  for (const p of ['s1', 's2']) writeFileSync(join(dsrc, p), content(5000, 42));
  writeFileSync(join(dsrc, 'other'), content(700_000, 43, 0.05));
  const dwant = snapshot(dsrc);
  const variants: [string, ErofsWriteOptions][] = [
    ['lzma', { compression: 'lzma,level=6', pclusterSize: 1 << 20 }],
    ['lzma-fragments', { compression: 'lzma,level=6', pclusterSize: 1 << 20, fragments: true }],
    ['lz4-fragments', { compression: 'lz4', pclusterSize: 4096, fragments: true }],
  ];
  for (const [what, opts] of variants) {
    const img = join(dir, `dedupe-${what}.img`);
    const result = await writeErofs(dsrc, img, { ...opts, dedupe: true, mkfsTime: 1_700_000_000, scan: { readXattrs: false } });
    assert.ok(result.shared.pclusters > 0, `${what}: ${result.shared.pclusters} pclusters shared`);
    const r = await ErofsReader.open(await FileDisk.open(img, { readOnly: true }));
    const starts = async (p: string) => (await r.compressedExtents(await r.lookup(p))).extents.filter((x) => x.source === 'blocks').map((x) => x.pa);
    const a = new Set(await starts('a'));
    assert.ok((await starts('near')).some((pa) => a.has(pa)), `${what}: near shares pclusters with a`);
    await r.disk.close();
    const got = mountedSnapshot(img, join(dir, `dmnt-${what}`));
    assert.deepEqual(diffSnapshots(dwant, got), [], what);
    if (skipTrixie !== false) continue;
    const out = join(dir, `dextracted-${what}`);
    run('chroot', [TRIXIE, 'fsck.erofs', `--extract=${inside(out)}`, inside(img)]);
    assert.deepEqual(diffSnapshots(dwant, snapshot(out)), [], what);
  }
});

test('writer oracle: fsck.erofs 1.8.6 extracts the identical tree and checks a chunked image; dump.erofs reads the superblock and inodes', { skip: skipTrixie, timeout: 300_000 }, async () => {
  const img = join(dir, 'fsck.img');
  await writeErofs(src, img, { mkfsTime: 1_700_000_000, uuid: '01234567-89ab-cdef-0123-456789abcdef', scan: { readXattrs: xattrReaderFor(src) } });
  const out = join(dir, 'extracted');
  run('chroot', [TRIXIE, 'fsck.erofs', `--extract=${inside(out)}`, '--xattrs', inside(img)]);
  assert.deepEqual(diffSnapshots(want, snapshot(out)), []);
  const chunked = join(dir, 'fsck-chunked.img');
  await writeErofs(src, chunked, { mkfsTime: 1_700_000_000, chunkSize: 8192, scan: { readXattrs: xattrReaderFor(src) } });
  // Checked, not compared after --extract: fsck.erofs 1.8.6 leaves a chunked file's trailing holes out
  // of what it extracts (it does so for mkfs.erofs --chunksize images too); the kernel mount above shows them.
  run('chroot', [TRIXIE, 'fsck.erofs', inside(chunked)]);
  assert.match(run('chroot', [TRIXIE, 'dump.erofs', '-s', inside(chunked)]).stdout, /chunked_file/);
  const sb = run('chroot', [TRIXIE, 'dump.erofs', '-s', inside(img)]).stdout;
  assert.match(sb, /Filesystem blocksize:\s+4096/);
  assert.match(sb, /Filesystem UUID:\s+01234567-89ab-cdef-0123-456789abcdef/);
  assert.match(sb, /sb_csum/);
  assert.match(sb, /xattr_prefixes/, 'trusted.overlay.* names share a long prefix');
  assert.match(sb, /shared xattr metadata start block:\s+[1-9]/, 'user.shared on several inodes is stored once');
  const owned = run('chroot', [TRIXIE, 'dump.erofs', '--path=/owned', inside(img)]).stdout;
  assert.match(owned, /Uid:\s*100000/);
  const link = run('chroot', [TRIXIE, 'dump.erofs', '--path=/links/target', inside(img)]).stdout;
  assert.match(link, /Links:\s*3/);
});
