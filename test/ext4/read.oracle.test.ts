/**
 * Oracle tests of the ext4 read side and the block map against e2fsprogs: images made by mke2fs -d
 * in several feature combinations; listings, stat fields, contents, symlinks, devices and xattrs
 * compared with debugfs and the source tree; block ownership with debugfs icheck/ncheck/testb; free
 * blocks with dumpe2fs.
 */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { lstatSync, readFileSync, readdirSync, readlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { FileDisk } from '../../src/io/disk.ts';
import { Ext4 } from '../../src/fs/ext4/fs.ts';
import { buildBlockMap, BlockKind } from '../../src/fs/ext4/blockmap.ts';
import { missingTools, run } from '../helpers/tools.ts';
import { tempDir } from '../helpers/tmp.ts';
import { VARIANTS, addXattrs, isRoot, makeImage, makeTree } from './fixtures.ts';

const skip = missingTools('mke2fs', 'debugfs', 'dumpe2fs');

/** Runs a batch of debugfs requests; returns each request's output, in order. */
function debugfsBatch(image: string, dir: string, requests: string[]): string[] {
  const cmdFile = join(dir, `cmds-${process.hrtime.bigint()}`);
  writeFileSync(cmdFile, requests.join('\n') + '\n');
  const { stdout } = run('debugfs', ['-f', cmdFile, image]);
  const sections = stdout.split(/^debugfs: .*$/m);
  assert.equal(sections.length, requests.length + 1, 'one output section per request');
  return sections.slice(1).map((s) => s.replace(/^\n/, ''));
}

function hostTree(root: string, rel = ''): string[] {
  const out: string[] = [];
  for (const name of readdirSync(join(root, rel))) {
    const p = `${rel}/${name}`;
    out.push(p);
    if (lstatSync(join(root, p)).isDirectory()) out.push(...hostTree(root, p));
  }
  return out;
}

describe('ext4 read side vs e2fsprogs', { skip }, () => {
  let tmp: ReturnType<typeof tempDir>;
  let src: string;
  let xattrs: [string, string, string][];
  before(() => {
    tmp = tempDir('lsk-ext4-');
    src = join(tmp.dir, 'src');
    ({ xattrs } = makeTree(src));
  });
  after(() => tmp.cleanup());

  for (const variant of VARIANTS) {
    test(variant.name, async () => {
      const image = join(tmp.dir, `${variant.name}.img`);
      makeImage(image, src, variant);
      addXattrs(image, xattrs);
      const disk = await FileDisk.open(image, { readOnly: true });
      try {
        const fs = await Ext4.open(disk);
        assert.equal(fs.blockSize, variant.blockSize);
        assert.equal(fs.sb.volumeName, 'lsk-test');

        // Listings: every directory, against debugfs ls -p (inode, mode, uid, gid, name, size).
        const paths = hostTree(src);
        const dirs = ['/', ...paths.filter((p) => lstatSync(join(src, p)).isDirectory())];
        const lsOut = debugfsBatch(image, tmp.dir, dirs.map((d) => `ls -p "${d}"`));
        for (const [i, dir] of dirs.entries()) {
          const expected = lsOut[i]!.split('\n').filter((l) => l.startsWith('/')).map((l) => {
            const m = /^\/(\d+)\/(\d+)\/(\d+)\/(\d+)\/(.*)\/(\d*)\/$/.exec(l);
            assert.ok(m, `parse ${l}`);
            return { ino: Number(m[1]), mode: parseInt(m[2]!, 8), uid: Number(m[3]), gid: Number(m[4]), name: m[5]!, size: m[6] === '' ? undefined : Number(m[6]) };
          }).filter((e) => e.name !== '.' && e.name !== '..');
          const ours = await fs.readdir(dir);
          const got = [];
          for (const e of ours) {
            const st = await fs.statInode(e.ino);
            got.push({ ino: e.ino, mode: st.mode, uid: st.uid, gid: st.gid, name: e.name, size: st.kind === 'dir' ? undefined : st.kind === 'chardev' || st.kind === 'blockdev' || st.kind === 'fifo' ? 0 : st.size });
          }
          const byName = (a: { name: string }, b: { name: string }) => (a.name < b.name ? -1 : 1);
          assert.deepEqual(got.sort(byName), expected.sort(byName), `listing of ${dir}`);
        }

        // Contents, symlinks, devices, stat fields against the source tree (contents also against debugfs dump).
        const dumps: [string, Buffer][] = [];
        for (const p of paths) {
          const host = lstatSync(join(src, p));
          const st = await fs.stat(p);
          assert.equal(st.nlink, host.nlink, `links of ${p}`);
          assert.equal(st.mtime.sec, Math.floor(host.mtimeMs / 1000), `mtime of ${p}`);
          if (host.isFile()) {
            const ours = Buffer.from(await fs.readFile(p));
            // mke2fs -d 1.47.0 drops the trailing hole of sparse files on inline_data filesystems (debugfs agrees with us).
            const quirk = p === '/sparse.bin' && variant.args.join(',').includes('inline_data');
            if (!quirk) assert.ok(ours.equals(readFileSync(join(src, p))), `contents of ${p}`);
            dumps.push([p, ours]);
          }
          if (host.isSymbolicLink()) assert.equal(await fs.readlink(p), readlinkSync(join(src, p)), `target of ${p}`);
          if (host.isCharacterDevice() || host.isBlockDevice()) {
            assert.deepEqual(st.rdev, { major: Math.floor(host.rdev / 256) & 0xfff, minor: (host.rdev & 0xff) | ((host.rdev >>> 12) & 0xfff00) }, `rdev of ${p}`);
          }
        }
        const dumpOut = debugfsBatch(image, tmp.dir, dumps.map(([p], i) => `dump "${p}" ${join(tmp.dir, `dump-${i}`)}`));
        assert.equal(dumpOut.length, dumps.length);
        dumps.forEach(([p, ours], i) => {
          const dumped = readFileSync(join(tmp.dir, `dump-${i}`));
          // debugfs 1.47.0 dumps inline-data files padded to the 60-byte i_block with zeros.
          const padded = ours.length < 60 && dumped.length === 60 && dumped.subarray(ours.length).every((x) => x === 0);
          assert.ok(padded ? dumped.subarray(0, ours.length).equals(ours) : dumped.equals(ours), `debugfs dump of ${p}`);
        });
        assert.equal(new TextDecoder().decode(await fs.readFile('/subdir-link/deeper/leaf')), 'leaf\n');
        if (isRoot) assert.deepEqual((await fs.stat('/whiteout')).rdev, { major: 0, minor: 0 });

        // Streaming gives the same bytes in pieces.
        const pieces: Uint8Array[] = [];
        for await (const piece of fs.stream('/sparse.bin', 65536)) pieces.push(piece);
        assert.ok(pieces.length > 1 && pieces.every((x) => x.byteLength <= 65536));
        assert.ok(Buffer.concat(pieces).equals(await fs.readFile('/sparse.bin')), 'streamed /sparse.bin');

        // Xattrs against debugfs ea_get.
        for (const [path, name, value] of xattrs) {
          const ours = (await fs.getXattrs(path)).find((x) => x.name === name);
          assert.ok(ours, `xattr ${name} of ${path}`);
          assert.equal(new TextDecoder().decode(ours.value), value);
          const out = join(tmp.dir, 'ea.out');
          run('debugfs', ['-R', `ea_get -f ${out} ${path} ${name}`, image]);
          assert.ok(Buffer.from(ours.value).equals(readFileSync(out)));
        }

        // State and journal.
        const state = await fs.state();
        assert.equal(state.clean, true);
        assert.equal(state.needsRecovery, false);
        assert.equal(state.journal === undefined, variant.name.startsWith('ext2'));
        assert.equal(fs.checksumErrorCount, 0);

        // Block map vs icheck (every block), ncheck (every owner), testb and dumpe2fs.
        const map = await buildBlockMap(fs);
        assert.equal(map.multiplyClaimed, 0);
        assert.equal(map.claimedButFree, 0);
        const all: number[] = [];
        for (let b = fs.sb.firstDataBlock === 0 ? 1 : fs.sb.firstDataBlock; b < fs.sb.blocksCount; b++) all.push(b);
        const icheckReqs: string[] = [];
        for (let i = 0; i < all.length; i += 600) icheckReqs.push(`icheck ${all.slice(i, i + 600).join(' ')}`);
        const icheckOut = debugfsBatch(image, tmp.dir, icheckReqs).join('\n');
        let compared = 0;
        for (const line of icheckOut.split('\n')) {
          const m = /^(\d+)\t(\d+|<block not found>)$/.exec(line);
          if (!m) continue;
          const b = Number(m[1]);
          const expected = m[2] === '<block not found>' ? 0 : Number(m[2]);
          assert.equal(map.ownerOf(b), expected, `owner of block ${b} (kind ${map.kindOf(b)})`);
          compared++;
        }
        assert.equal(compared, all.length);
        const owners = [...new Set(map.owner)].filter((o) => o !== 0).sort((a, b) => a - b);
        const ours = await map.paths(owners);
        const ncheck = debugfsBatch(image, tmp.dir, [`ncheck ${owners.join(' ')}`])[0]!;
        const expectedPaths = new Map<number, string[]>();
        for (const line of ncheck.split('\n')) {
          const m = /^(\d+)\t(.+)$/.exec(line);
          if (!m) continue;
          const list = expectedPaths.get(Number(m[1])) ?? [];
          list.push(m[2]!.replace(/^\/\//, '/'));
          expectedPaths.set(Number(m[1]), list);
        }
        for (const ino of owners) {
          if (ino < fs.sb.firstIno) continue; // reserved inodes (root, journal, resize) have no ncheck name
          assert.deepEqual((ours.get(ino) ?? []).sort(), (expectedPaths.get(ino) ?? []).sort(), `paths of inode ${ino}`);
        }
        // The journal's blocks are owned by inode 8, with kind journal.
        if (state.journal) {
          for (const [start, len] of state.journal.extents) {
            assert.equal(map.ownerOf(start), 8);
            assert.equal(map.kind[start + len - 1], BlockKind.journal);
          }
        }
        // Free blocks: dumpe2fs per-group free ranges and the superblock count.
        const dump = run('dumpe2fs', [image]).stdout;
        const freeBlocks = new Set<number>();
        for (const m of dump.matchAll(/^\s+Free blocks: (.*)$/gm)) {
          for (const part of m[1]!.split(', ').filter((x) => x !== '')) {
            const [a, b] = part.split('-').map(Number) as [number, number | undefined];
            for (let x = a; x <= (b ?? a); x++) freeBlocks.add(x);
          }
        }
        const ourFree: number[] = [];
        for (const [start, len] of map.freeRuns()) for (let x = start; x < start + len; x++) ourFree.push(x);
        assert.deepEqual(ourFree, [...freeBlocks].sort((a, b) => a - b));
        assert.equal(map.freeCount(), Number(/^Free blocks:\s+(\d+)$/m.exec(dump)![1]));
        // testb on a sample of blocks.
        const sample = all.filter((_b, i) => i % 97 === 0);
        const testb = debugfsBatch(image, tmp.dir, sample.map((b) => `testb ${b}`));
        sample.forEach((b, i) => assert.equal(map.isUsed(b), /marked in use/.test(testb[i]!), `testb ${b}`));
        // A range query adds up.
        const q = map.queryBytes(0, fs.sb.blocksCount * fs.blockSize);
        assert.equal(q.free, map.freeCount() + (fs.sb.firstDataBlock === 1 ? 0 : 0));
        assert.equal([...q.owners.values()].reduce((a, b) => a + b, 0), map.owner.filter((o) => o !== 0).length);
      } finally {
        await disk.close();
      }
    });
  }

  test('a journal with transactions to replay (s_start ≠ 0) makes the state dirty', async () => {
    const image = join(tmp.dir, 'jdirty.img');
    makeImage(image, src, VARIANTS[2]!);
    const disk = await FileDisk.open(image);
    try {
      const fs = await Ext4.open(disk);
      const before = await fs.state();
      assert.equal(before.clean, true);
      const jsb = before.journal!.extents[0]![0] * fs.blockSize;
      const start = new Uint8Array(4);
      new DataView(start.buffer).setUint32(0, 1, false);
      await disk.write(start, jsb + 28);
      const after = await (await Ext4.open(disk)).state();
      assert.equal(after.needsRecovery, true);
      assert.equal(after.clean, false);
      assert.equal(after.journal!.start, 1);
    } finally {
      await disk.close();
    }
  });

  test('a filesystem flagged needs_recovery reports it', async () => {
    const image = join(tmp.dir, 'dirty.img');
    makeImage(image, src, VARIANTS[2]!);
    run('debugfs', ['-w', '-R', 'feature needs_recovery', image]);
    const disk = await FileDisk.open(image, { readOnly: true });
    try {
      const state = await (await Ext4.open(disk)).state();
      assert.equal(state.needsRecovery, true);
      assert.equal(state.clean, false);
    } finally {
      await disk.close();
    }
  });
});
