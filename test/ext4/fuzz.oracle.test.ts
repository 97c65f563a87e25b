/**
 * Bad input: truncated images, random corruption of metadata, and hand-made traps (extent loops,
 * directory loops, huge counts, bad descriptors) must give typed errors in bounded time, never a
 * crash, a hang or a huge allocation. Base images come from mke2fs -d (hence "oracle").
 */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { LivestickError, CorruptImageError } from '../../src/errors.ts';
import { MemoryDisk } from '../../src/io/disk.ts';
import { Ext4, ROOT_INO } from '../../src/fs/ext4/fs.ts';
import { buildBlockMap } from '../../src/fs/ext4/blockmap.ts';
import { kindOfMode } from '../../src/fs/ext4/inode.ts';
import { missingTools, run } from '../helpers/tools.ts';
import { tempDir } from '../helpers/tmp.ts';
import { prng, randomBytes } from './fixtures.ts';
import { mkdirSync, writeFileSync, symlinkSync } from 'node:fs';

const skip = missingTools('mke2fs', 'debugfs');

/** Reads everything reachable: tree, contents, links, xattrs, state, block map. */
async function exercise(bytes: Uint8Array): Promise<void> {
  const fs = await Ext4.open(new MemoryDisk(bytes, { readOnly: true }));
  await fs.state();
  const seen = new Set<number>([ROOT_INO]);
  const queue = [ROOT_INO];
  let budget = 2000;
  while (queue.length > 0 && budget-- > 0) {
    const dir = await fs.readInode(queue.shift()!);
    for (const e of await fs.readDirInode(dir)) {
      const inode = await fs.readInode(e.ino);
      await fs.xattrs(inode);
      const kind = kindOfMode(inode.mode);
      if (kind === 'dir' && !seen.has(e.ino)) {
        seen.add(e.ino);
        queue.push(e.ino);
      } else if (kind === 'file' || kind === 'symlink') {
        await fs.readInodeData(inode, 1 << 24);
      }
    }
  }
  const map = await buildBlockMap(fs);
  await map.paths([...new Set(map.owner)].slice(0, 50));
}

async function expectTypedOrOk(bytes: Uint8Array, what: string): Promise<void> {
  const started = Date.now();
  try {
    await exercise(bytes);
  } catch (err) {
    if (!(err instanceof LivestickError)) {
      throw new Error(`${what}: untyped error ${(err as Error)?.stack ?? err}`);
    }
  }
  assert.ok(Date.now() - started < 5000, `${what}: took ${Date.now() - started} ms`);
}

describe('ext4 bad input', { skip }, () => {
  let tmp: ReturnType<typeof tempDir>;
  const images: Record<string, Uint8Array> = {};
  before(() => {
    tmp = tempDir('lsk-ext4-fuzz-');
    const src = join(tmp.dir, 'src');
    mkdirSync(join(src, 'a/b'), { recursive: true });
    for (let i = 0; i < 60; i++) writeFileSync(join(src, 'a', `f${i}`), randomBytes(i * 700, i));
    writeFileSync(join(src, 'a/b/big'), randomBytes(200_000, 99));
    symlinkSync('a/b/big', join(src, 'link'));
    symlinkSync('/'.padEnd(100, 'x'), join(src, 'slow'));
    for (const [name, args] of [
      ['csum-1k', ['-t', 'ext4', '-b', '1024']],
      ['indirect-4k', ['-t', 'ext3', '-b', '4096']],
      ['inline-4k', ['-t', 'ext4', '-b', '4096', '-O', 'inline_data']],
    ] as const) {
      const image = join(tmp.dir, `${name}.img`);
      run('mke2fs', ['-q', '-F', '-E', 'lazy_itable_init=1', ...args, '-d', src, image, '4M']);
      run('debugfs', ['-w', '-R', 'ea_set /a/f1 user.x 1234567890', image]);
      images[name] = new Uint8Array(readFileSync(image));
    }
  });
  after(() => tmp.cleanup());

  test('the base images read cleanly', async () => {
    for (const bytes of Object.values(images)) await exercise(bytes.slice());
  });

  test('truncated images give typed errors', async () => {
    for (const [name, bytes] of Object.entries(images)) {
      for (const cut of [0, 512, 1024, 1500, 2047, 2048, 4096, 8192, 20000, 65536, 300_000, 1_000_000, bytes.length - 4096, bytes.length - 1]) {
        await expectTypedOrOk(bytes.slice(0, Math.max(0, cut)), `${name} cut at ${cut}`);
      }
    }
  });

  test('random corruption of metadata blocks gives typed errors', async () => {
    const next = prng(20261125);
    for (const [name, bytes] of Object.entries(images)) {
      const fs = await Ext4.open(new MemoryDisk(bytes.slice(), { readOnly: true }));
      const map = await buildBlockMap(fs);
      // Metadata blocks: everything not data and not free.
      const targets: number[] = [];
      for (let b = 0; b < map.blocksCount; b++) {
        const k = map.kindOf(b);
        if (k !== 'data' && k !== 'free' && k !== 'journal' && k !== 'unowned') targets.push(b);
      }
      for (let round = 0; round < Number(process.env.LSK_FUZZ_ROUNDS ?? 150); round++) {
        const copy = bytes.slice();
        const flips = 1 + (next() % 8);
        for (let i = 0; i < flips; i++) {
          const blk = targets[next() % targets.length]!;
          const at = blk * fs.blockSize + (next() % fs.blockSize);
          copy[at] = next() & 0xff;
        }
        // Half the rounds also hit the superblock / first descriptor block.
        if (round % 2 === 0) copy[1024 + (next() % 1024)] = next() & 0xff;
        if (round % 3 === 0) copy[(fs.sb.firstDataBlock + 1) * fs.blockSize + (next() % 64)] = next() & 0xff;
        await expectTypedOrOk(copy, `${name} round ${round}`);
      }
    }
  });

  test('an extent tree whose index points at itself is refused', async () => {
    const bytes = images['csum-1k']!.slice();
    const fs = await Ext4.open(new MemoryDisk(bytes, { readOnly: true }));
    const ino = await fs.lookup('/a/b/big');
    const inode = await fs.readInode(ino);
    // Turn the in-inode root into an index node pointing at a block that is itself an index node to itself.
    const loopBlock = (await fs.runs(inode))[0]!.physical;
    const at = fs.inodeLocation(ino) + 40;
    const dv = new DataView(bytes.buffer);
    dv.setUint16(at + 2, 1, true);
    dv.setUint16(at + 6, 1, true);
    dv.setUint32(at + 12, 0, true);
    dv.setUint32(at + 16, loopBlock, true);
    dv.setUint16(at + 20, 0, true);
    const blk = loopBlock * fs.blockSize;
    dv.setUint16(blk, 0xf30a, true);
    dv.setUint16(blk + 2, 1, true);
    dv.setUint16(blk + 4, (fs.blockSize - 12) / 12, true);
    dv.setUint16(blk + 6, 1, true);
    dv.setUint32(blk + 12, 0, true);
    dv.setUint32(blk + 16, loopBlock, true);
    dv.setUint16(blk + 20, 0, true);
    const broken = await Ext4.open(new MemoryDisk(bytes, { readOnly: true }), { skipChecksums: true });
    await assert.rejects(broken.readFile('/a/b/big'), CorruptImageError);
  });

  test('a directory entry pointing back at an ancestor does not loop', async () => {
    const bytes = images['indirect-4k']!.slice();
    const fs = await Ext4.open(new MemoryDisk(bytes, { readOnly: true }));
    const bIno = await fs.lookup('/a/b');
    const big = await fs.lookup('/a/b/big');
    // Re-point /a/b/big at the root directory, making a cycle root → a → b → root.
    const runs = await fs.runs(await fs.readInode(bIno));
    const block = await fs.readBlocks(runs[0]!.physical, 1);
    const dv = new DataView(block.buffer);
    for (let at = 0; at < block.length; ) {
      if (dv.getUint32(at, true) === big) {
        dv.setUint32(at, ROOT_INO, true);
        dv.setUint8(at + 7, 2);
      }
      at += dv.getUint16(at + 4, true);
    }
    bytes.set(block, runs[0]!.physical * fs.blockSize);
    const looped = await Ext4.open(new MemoryDisk(bytes, { readOnly: true }));
    const map = await buildBlockMap(looped);
    const paths = await map.paths([ROOT_INO, bIno]);
    assert.deepEqual(paths.get(bIno), ['/a/b']);
    await assert.rejects(looped.readFile('/a/b/big/a/b/big'), LivestickError);
  });

  test('huge counts and bad descriptors are refused before allocating', async () => {
    const base = images['csum-1k']!;
    const cases: [string, (dv: DataView) => void][] = [
      ['blocks_count beyond the device', (dv) => dv.setUint32(1024 + 4, 0xfffffff0, true)],
      ['inodes_per_group huge', (dv) => dv.setUint32(1024 + 40, 0x7ffffff8, true)],
      ['block size 2^40', (dv) => dv.setUint32(1024 + 24, 30, true)],
      ['desc_size odd', (dv) => dv.setUint16(1024 + 254, 65, true)],
      ['inode table past the end', (dv) => dv.setUint32(2 * 1024 + 8, 0xfffff000, true)],
      ['bad magic', (dv) => dv.setUint16(1024 + 56, 0x1234, true)],
    ];
    for (const [name, mutate] of cases) {
      const bytes = base.slice();
      mutate(new DataView(bytes.buffer));
      await assert.rejects(Ext4.open(new MemoryDisk(bytes, { readOnly: true }), { skipChecksums: true }), LivestickError, name);
    }
  });

  test('checksum mismatches are reported, or thrown in strict mode', async () => {
    const bytes = images['csum-1k']!.slice();
    const fs = await Ext4.open(new MemoryDisk(bytes, { readOnly: true }));
    const at = fs.inodeLocation(await fs.lookup('/a/f3'));
    bytes[at + 8]! ^= 1; // atime
    const lax = await Ext4.open(new MemoryDisk(bytes, { readOnly: true }));
    await lax.stat('/a/f3');
    assert.equal(lax.checksumErrors.length, 1);
    assert.match(lax.checksumErrors[0]!.structure, /^inode\[\d+\]$/);
    const strict = await Ext4.open(new MemoryDisk(bytes, { readOnly: true }), { strict: true });
    await assert.rejects(strict.stat('/a/f3'), CorruptImageError);
  });
});
