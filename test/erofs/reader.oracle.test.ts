/**
 * Oracle: images made by mkfs.erofs (the host's 1.5, and 1.8.6 in the lead's trixie chroot when it is
 * there) read by ErofsReader must show exactly what the host kernel shows when it mounts them: every
 * path's type, mode, owner, mtime (seconds and nanoseconds), size, content, link target, rdev, xattrs,
 * inode number (= nid) and link count. Random-range reads through ErofsFileSystem.openFile are checked
 * against the mounted files.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { lstatSync, mkdirSync, mkdtempSync, openSync, readSync, closeSync, readdirSync, rmSync } from 'node:fs';
import { basename, join } from 'node:path';
import { tmpdir } from 'node:os';
import '../helpers/setup.ts';
import { missingTools, run } from '../helpers/tools.ts';
import { FileDisk } from '../../src/io/disk.ts';
import { ErofsReader } from '../../src/fs/erofs/reader.ts';
import { ErofsFileSystem } from '../../src/fs/erofs/filesystem.ts';
import { diffSnapshots, snapshot } from '../squashfs/fixture.ts';
import { erofsSnapshot, makeErofsTree, missingTrixie, rng, TRIXIE } from './fixture.ts';

const CHROOT = TRIXIE;
const skipHost = missingTools('mkfs.erofs', 'mount', 'umount', 'setfattr', 'getfattr', 'mknod', 'mkfifo', 'python3');
const skipNew = skipHost || missingTrixie();
const hasChroot = skipNew === false;

// Under the chroot's /tmp when it exists, so both mkfs.erofs versions see the same tree.
const base = hasChroot ? join(CHROOT, 'tmp') : tmpdir();
let dir = '';
let src = '';
before(() => {
  if (skipHost) return;
  dir = mkdtempSync(join(base, 'erofs-oracle-'));
  src = join(dir, 'src');
  makeErofsTree(src, 7);
});
after(() => {
  if (dir !== '' && !process.env.LIVESTICK_KEEP_TMP) rmSync(dir, { recursive: true, force: true });
});

function mkfs(tool: 'host' | 'new', img: string, args: string[]): void {
  // mkfs.erofs 1.5 fails on a 255-byte name ("Could not format the device: ENOENT"): it leaves that one out.
  if (tool === 'host') run('mkfs.erofs', ['--quiet', `--exclude-path=${'L'.repeat(255)}`, ...args, img, src]);
  else {
    const inside = (p: string) => `/tmp/${basename(dir)}/${p.slice(dir.length + 1)}`;
    run('chroot', [CHROOT, 'mkfs.erofs', '--quiet', ...args, inside(img), inside(src)]);
  }
}

/** The mounted view: snapshot() plus ino / mtime nsec / nlink per path. */
function kernelView(img: string): { desc: Map<string, string>; ids: Map<string, string>; mnt: string; unmount: () => void } {
  const mnt = join(dir, `mnt-${basename(img)}`);
  mkdirSync(mnt, { recursive: true });
  run('mount', ['-t', 'erofs', '-o', 'loop,ro', img, mnt]);
  const desc = snapshot(mnt);
  const ids = new Map<string, string>();
  const walk = (rel: string) => {
    const st = lstatSync(rel === '' ? mnt : join(mnt, rel), { bigint: true });
    ids.set(rel, `ino=${st.ino} nsec=${st.mtimeNs % 1_000_000_000n} nlink=${st.nlink}`);
    if (st.isDirectory()) for (const n of readdirSync(rel === '' ? mnt : join(mnt, rel))) walk(rel === '' ? n : `${rel}/${n}`);
  };
  walk('');
  return { desc, ids, mnt, unmount: () => run('umount', [mnt]) };
}

async function compareWithKernel(img: string): Promise<void> {
  const k = kernelView(img);
  try {
    const disk = await FileDisk.open(img, { readOnly: true });
    try {
      const reader = await ErofsReader.open(disk, { cacheBytes: 1 << 20 });
      const ours = await erofsSnapshot(reader);
      assert.deepEqual(diffSnapshots(k.desc, ours.desc), []);
      assert.deepEqual(diffSnapshots(k.ids, ours.ids), []);
      // Random ranges through the FileSystem interface equal the mounted files.
      const fs = new ErofsFileSystem(reader);
      const r = rng(11);
      for (const p of ['mixed-3m', 'text-1m', 'sparse', 'size-200000', 'random-64k', 'dup-b']) {
        const f = await fs.openFile(`/${p}`);
        const st = await fs.stat(`/${p}`);
        assert.equal(f.size, st.size);
        const fd = openSync(join(k.mnt, p), 'r');
        try {
          for (let i = 0; i < 25; i++) {
            const at = Math.floor(r() * f.size);
            const len = Math.min(f.size - at, 1 + Math.floor(r() * 300_000));
            const ours = new Uint8Array(len);
            await f.read(ours, at);
            const theirs = Buffer.alloc(len);
            readSync(fd, theirs, 0, len, at);
            assert.ok(theirs.equals(ours), `${p} [${at}, ${at + len}) differs`);
          }
        } finally {
          closeSync(fd);
        }
      }
      assert.deepEqual((await fs.readdir('/links')).map((e) => e.name).sort(), readdirSync(join(k.mnt, 'links')).sort());
      assert.equal(await fs.readlink('/links/rel'), '../one');
      const x = await fs.xattrs('/opaque');
      assert.ok(x.some((a) => a.name === 'trusted.overlay.opaque' && Buffer.from(a.value).toString() === 'y'));
      const space = await fs.space();
      assert.ok(space.totalBytes > 0 && space.totalBytes <= disk.size);
    } finally {
      await disk.close();
    }
  } finally {
    k.unmount();
  }
}

const variants: Array<{ name: string; tool: 'host' | 'new'; args: string[] }> = [
  { name: 'uncompressed (inline tails)', tool: 'host', args: [] },
  { name: 'uncompressed, extended inodes', tool: 'host', args: ['-Eforce-inode-extended'] },
  { name: 'uncompressed, no inline data', tool: 'host', args: ['-Enoinline_data'] },
  { name: 'chunk-based, 4 KiB chunks (block map)', tool: 'host', args: ['--chunksize=4096'] },
  { name: 'chunk-based, 64 KiB chunk indexes', tool: 'host', args: ['--chunksize=65536', '-Eforce-chunk-indexes'] },
  { name: 'lz4 (compact indexes)', tool: 'host', args: ['-zlz4'] },
  { name: 'lz4hc, 64 KiB big pclusters', tool: 'host', args: ['-zlz4hc,12', '-C65536'] },
  { name: 'lz4 ztailpacking', tool: 'host', args: ['-zlz4', '-Eztailpacking'] },
  { name: 'lz4 legacy (full indexes, no 0padding)', tool: 'host', args: ['-zlz4hc', '-Elegacy-compress'] },
  { name: 'lz4 with compact inodes forced', tool: 'host', args: ['-zlz4', '-Eforce-inode-compact', '--exclude-path=owned'] },
  { name: 'deflate', tool: 'new', args: ['-zdeflate'] },
  { name: 'lzma (MicroLZMA)', tool: 'new', args: ['-zlzma'] },
  { name: 'lzma level 6, 1 MiB pclusters, fragments (Fedora 43 style)', tool: 'new', args: ['-zlzma,level=6', '-Efragments', '-C1048576'] },
  { name: 'lzma all-fragments, fragdedupe=inode (Fedora 42 style)', tool: 'new', args: ['-zlzma,level=6', '-Eall-fragments,fragdedupe=inode', '-C1048576'] },
  { name: 'zstd, 128 KiB pclusters', tool: 'new', args: ['-zzstd', '-C131072'] },
  { name: 'lz4hc fragments (interlaced plain pclusters), 1 MiB pclusters', tool: 'new', args: ['-zlz4hc', '-Efragments', '-C1048576'] },
  { name: 'lz4hc all-fragments', tool: 'new', args: ['-zlz4hc', '-Eall-fragments'] },
  { name: 'lz4hc dedupe', tool: 'new', args: ['-zlz4hc', '-Ededupe', '-C65536'] },
  { name: 'lz4hc fragments + dedupe + ztailpacking', tool: 'new', args: ['-zlz4hc', '-Efragments,dedupe,ztailpacking'] },
  { name: 'deflate ztailpacking + legacy full indexes', tool: 'new', args: ['-zdeflate', '-Eztailpacking,legacy-compress'] },
  { name: 'long xattr prefixes (in the packed inode)', tool: 'new', args: ['-zlz4', '-Efragments', '--xattr-prefix=trusted.overlay.', '--xattr-prefix=user.sha'] },
  { name: 'long xattr prefixes (metadata area), xattr name filter', tool: 'new', args: ['--xattr-prefix=trusted.overlay.', '-Exattr-name-filter'] },
  { name: '1 KiB blocks', tool: 'new', args: ['-b1024', '-zlz4'] },
  { name: '512-byte blocks, zstd', tool: 'new', args: ['-b512', '-zzstd'] },
  { name: 'chunk-based, 1 MiB chunk indexes', tool: 'new', args: ['--chunksize=1048576', '-Eforce-chunk-indexes'] },
  { name: 'fixed time -T', tool: 'new', args: ['-T1700000000', '-zzstd'] },
];

for (const v of variants) {
  test(`oracle: mkfs.erofs ${v.tool === 'host' ? '1.5' : '1.8.6'} ${v.name}: our reader sees what the kernel mounts`, { skip: v.tool === 'host' ? skipHost : skipNew, timeout: 120_000 }, async () => {
    const img = join(dir, `${v.name.replace(/[^a-z0-9]+/gi, '_')}.img`);
    mkfs(v.tool, img, v.args);
    await compareWithKernel(img);
  });
}
