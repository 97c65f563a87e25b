// Resizable exFAT files (WritableFile.resize) and createFile's `uninitialized`: a NoFatChain file that
// grows into free clusters after it stays NoFatChain (no FAT written), one that must go around another
// file gets its whole chain written and the flag cleared; new bytes read as zeros over clusters a
// deleted file left its bytes in (eager and lazy ValidDataLength), unless the file was created
// `uninitialized`; shrinking frees the tail; verify() and fsck.exfat -n find the allocation exact.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import '../helpers/setup.ts';
import { NotFoundError, UsageError } from '../../src/errors.ts';
import { MemoryDisk, readAt } from '../../src/io/disk.ts';
import { ExfatFs, mkfsExfat } from '../../src/fs/exfat/index.ts';
import { hasTool, run } from '../helpers/tools.ts';
import { tempDir } from '../helpers/tmp.ts';

const FIXED = Date.UTC(2026, 0, 2, 3, 4, 5, 670);

async function fresh(options: { lazy?: boolean } = {}): Promise<{ disk: MemoryDisk; fs: ExfatFs }> {
  const disk = new MemoryDisk(16 << 20);
  await mkfsExfat(disk, { label: 'RESIZE', serial: 0x0badcafe });
  return { disk, fs: await ExfatFs.open(disk, { now: () => FIXED, lazyValidDataLength: options.lazy }) };
}

/** The stream extension entry of the (only) file named `name`: flags, ValidDataLength, FirstCluster, DataLength. */
function stream(disk: MemoryDisk, name: string): { flags: number; valid: number; first: number; length: number } {
  const raw = Buffer.from(disk.bytes);
  const at = raw.indexOf(Buffer.from(name, 'utf16le')) - 34;
  assert.ok(at > 0 && raw[at] === 0xc0, `stream entry of ${name}`);
  return { flags: raw[at + 1]!, valid: Number(raw.readBigUInt64LE(at + 8)), first: raw.readUInt32LE(at + 20), length: Number(raw.readBigUInt64LE(at + 24)) };
}

const NO_FAT_CHAIN = 0x02;
const pattern = (n: number, seed: number): Uint8Array => new Uint8Array(n).map((_, i) => (i * seed + (i >> 9) + 1) & 0xff);

function fsckClean(disk: MemoryDisk, what: string): void {
  if (!hasTool('fsck.exfat')) return;
  const tmp = tempDir('livestick-exfat-resize-');
  try {
    const img = join(tmp.dir, 'v.img');
    writeFileSync(img, disk.bytes);
    const r = run('fsck.exfat', ['-n', img], { allowFail: true });
    assert.equal(r.status, 0, `fsck.exfat -n after ${what}:\n${r.stdout}${r.stderr}`);
  } finally {
    tmp.cleanup();
  }
}

describe('exFAT file resize', () => {
  test('grow in place (NoFatChain kept), around another file (chain written), shrink, to zero and back', async () => {
    const { disk, fs } = await fresh();
    const cs = fs.clusterSize;
    const free0 = (await fs.space()).freeBytes / cs;
    const f = await fs.createFile('/grow.img', { size: 2 * cs + 3 });
    const head = pattern(2 * cs + 3, 7);
    await f.write(head, 0);
    await f.resize(5 * cs);
    assert.equal(f.size, 5 * cs);
    assert.equal((await fs.stat('/grow.img')).size, 5 * cs);
    let st = stream(disk, 'grow.img');
    assert.equal(st.flags & NO_FAT_CHAIN, NO_FAT_CHAIN, 'still one contiguous run: NoFatChain');
    assert.equal(st.valid, 5 * cs);
    let all = await readAt(f, 0, f.size);
    assert.deepEqual(all.subarray(0, head.byteLength), head);
    assert.ok(all.subarray(head.byteLength).every((b) => b === 0));
    await fs.writeFile('/blocker', pattern(cs, 3)); // takes the cluster right after the file
    await f.write(pattern(cs, 9), 4 * cs);
    await f.resize(9 * cs + 1);
    st = stream(disk, 'grow.img');
    assert.equal(st.flags & NO_FAT_CHAIN, 0, 'around the blocker: a FAT chain');
    all = await readAt(f, 0, f.size);
    assert.deepEqual(all.subarray(0, head.byteLength), head);
    assert.deepEqual(all.subarray(4 * cs, 5 * cs), pattern(cs, 9));
    assert.ok(all.subarray(5 * cs).every((b) => b === 0));
    assert.deepEqual(await readAt(await fs.openFile('/blocker'), 0, cs), pattern(cs, 3));
    assert.equal((await fs.space()).freeBytes / cs, free0 - 10 - 1);
    await fs.flush();
    assert.deepEqual(await fs.verify(), []);
    fsckClean(disk, 'growth');
    await f.resize(3 * cs);
    assert.equal((await fs.space()).freeBytes / cs, free0 - 3 - 1);
    const shrunk = new Uint8Array(3 * cs);
    shrunk.set(head);
    assert.deepEqual(await readAt(f, 0, f.size), shrunk);
    await f.resize(0);
    st = stream(disk, 'grow.img');
    assert.deepEqual([st.first, st.length, st.valid], [0, 0, 0]);
    await f.resize(cs + 7);
    assert.ok((await readAt(f, 0, f.size)).every((b) => b === 0));
    await f.close();
    await fs.close();
    const again = await ExfatFs.open(disk);
    assert.equal((await again.stat('/grow.img')).size, cs + 7);
    assert.deepEqual(await again.verify(), []);
    fsckClean(disk, 'shrinking and regrowing');
    const w = await again.openFileForWriting('/grow.img');
    await w.resize(4 * cs);
    await w.write(pattern(10, 1), 4 * cs - 10);
    await w.close();
    const expect = new Uint8Array(4 * cs);
    expect.set(pattern(10, 1), 4 * cs - 10);
    assert.deepEqual(await readAt(await again.openFile('/grow.img'), 0, 4 * cs), expect);
    await again.close();
    assert.deepEqual(await (await ExfatFs.open(disk)).verify(), []);
  });

  for (const lazy of [false, true]) {
    test(`grown bytes are zeros over a deleted file's clusters (${lazy ? 'lazy' : 'eager'} ValidDataLength); uninitialized keeps them`, async () => {
      const { disk, fs } = await fresh({ lazy });
      const cs = fs.clusterSize;
      await fs.writeFile('/junk', new Uint8Array(30 * cs).fill(0xa5));
      await fs.unlink('/junk');
      const f = await fs.createFile('/x.img', { size: 10 });
      await f.write(new Uint8Array(10).fill(0x11), 0);
      await f.resize(cs); // a shrink later leaves the bytes after the size as they are
      await f.write(new Uint8Array(cs).fill(0x22), 0);
      await f.resize(10);
      await f.resize(12 * cs);
      const all = await readAt(f, 0, f.size);
      assert.ok(all.subarray(0, 10).every((b) => b === 0x22));
      assert.ok(all.subarray(10).every((b) => b === 0), 'no old byte shows through');
      await f.close();
      const again = await ExfatFs.open(disk);
      const back = await readAt(await again.openFile('/x.img'), 0, 12 * cs);
      assert.ok(back.subarray(10).every((b) => b === 0), 'zeros after reopening too');
      assert.equal(stream(disk, 'x.img').valid, lazy ? 10 : 12 * cs);
      if (!lazy) {
        const u = await again.createFile('/u.img', { size: 8 * cs, uninitialized: true });
        assert.ok((await readAt(u, 0, u.size)).some((b) => b === 0xa5), 'uninitialized: old bytes are left where they were');
        await u.resize(20 * cs);
        assert.ok((await readAt(u, 8 * cs, 12 * cs)).some((b) => b === 0xa5), 'growth does not clear either');
        await u.close();
      }
      await again.close();
    });
  }

  test('bad sizes are refused; a file renamed away while open is not resized', async () => {
    const { fs } = await fresh();
    const f = await fs.createFile('/a.img', { size: 100 });
    await assert.rejects(f.resize(-1), UsageError);
    await assert.rejects(f.resize(1.5), UsageError);
    await fs.rename('/a.img', '/b.img');
    await assert.rejects(f.resize(200), NotFoundError);
    assert.equal((await fs.stat('/b.img')).size, 100);
    await fs.close();
  });
});

test('lazy ValidDataLength: a file renamed or unlinked while open keeps the volume consistent, and the renamed one its bytes', async () => {
  const { disk, fs } = await fresh({ lazy: true });
  const cs = fs.clusterSize;
  const a = await fs.createFile('/a.img', { size: 4 * cs });
  await a.write(pattern(3 * cs, 5), 0);
  await fs.rename('/a.img', '/renamed.img');
  await fs.writeFile('/filler', pattern(100, 1)); // may take the slot the old set had
  const b = await fs.createFile('/b.img', { size: 2 * cs });
  await b.write(pattern(cs, 7), 0);
  await fs.unlink('/b.img');
  await a.close();
  await b.close();
  await fs.close();
  const again = await ExfatFs.open(disk);
  const expect = new Uint8Array(4 * cs);
  expect.set(pattern(3 * cs, 5));
  assert.deepEqual(await readAt(await again.openFile('/renamed.img'), 0, 4 * cs), expect);
  assert.deepEqual((await again.readdir('/')).map((e) => e.name).sort(), ['filler', 'renamed.img']);
  assert.deepEqual(await again.verify(), []);
});
