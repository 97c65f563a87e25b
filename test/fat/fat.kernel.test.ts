/**
 * Linux's vfat against livestick, one boot: the guest mounts a FAT32 image FatFs wrote (a random tree,
 * files resized in place and around another file, one written in part after createFile, a rename onto
 * an existing file), lists and hashes every file (must equal ours), then writes new files, a directory and a rename, and unmounts; FatFs
 * reads the guest's changes identically and fsck.fat -n finds the volume clean.
 * A second boot mounts a volume FatFs repaired on open after an unclean stop (lost chains in both FATs
 * and in the first only, an orphaned long-name slot, a wrong FSInfo count, the dirty bit): the guest
 * reads every file as before the repair, fills most of the free space (the freed clusters among it)
 * and unmounts; fsck.fat -n exits 0.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { FileDisk, readAt } from '../../src/io/disk.ts';
import { FatFs, mkfsFat } from '../../src/fs/fat/index.ts';
import { missingTools, run } from '../helpers/tools.ts';
import { tempDir } from '../helpers/tmp.ts';
import { kernelHarnessStatus, runInKernel } from '../kernel/harness.ts';
import { fsListing, randomTree, sha, sorted, treeListing } from './fixtures.ts';

const MiB = 2 ** 20;
const NOW = 1_750_000_000_000;

const SCRIPT = `mkdir -p /mnt/fat
mount -t vfat -o iocharset=utf8 /dev/vdb /mnt/fat || exit 11
cd /mnt/fat
find . -mindepth 1 | while read -r p; do
  if [ -d "$p" ]; then echo "D|\${p#.}"; else echo "F|\${p#.}|$(sha256sum < "$p" | cut -c1-64)"; fi
done
echo "written by the guest" > "/mnt/fat/Guest Note.txt" || exit 12
mkdir "/mnt/fat/guest dir" || exit 13
dd if=/dev/zero of="/mnt/fat/guest dir/zeros.bin" bs=1024 count=300 2>/dev/null || exit 14
mv "/mnt/fat/big file.bin" "/mnt/fat/guest dir/renamed by the guest.bin" || exit 15
cd /
umount /mnt/fat || exit 16
echo DONE`;

describe('FAT in the kernel', { skip: kernelHarnessStatus() || missingTools('fsck.fat') }, () => {
  const tmp = tempDir('livestick-fat-kernel-');
  after(() => tmp.cleanup());

  test('Linux vfat reads what FatFs wrote; FatFs reads what Linux wrote; fsck.fat clean', async () => {
    const img = join(tmp.dir, 'fat32.img');
    run('truncate', ['-s', String(80 * MiB), img]);
    const disk = await FileDisk.open(img);
    await mkfsFat(disk, { type: 'fat32', label: 'LIVE', serial: 0x2026c0de, now: NOW });
    const tree = randomTree(4242, { files: 40 });
    const big = new Uint8Array(3 * MiB + 77).map((_, i) => (i * 31 + (i >> 12)) & 0xff);
    tree.set('/big file.bin', { kind: 'file', data: big });
    let fs = await FatFs.open(disk, { now: () => NOW });
    for (const [p, n] of [...tree].sort(([a], [b]) => a.length - b.length)) {
      if (n.kind === 'dir') await fs.mkdir(p);
      else await fs.writeFile(p, n.data);
    }
    // Resized files (grown in place, grown around another file, shrunk), a file written in part after
    // createFile (the rest zeros), and a rename onto an existing file.
    const cs = fs.layout.clusterSize;
    const fill = (n: number, v: number): Uint8Array => new Uint8Array(n).fill(v);
    const grown = await fs.createFile('/grown in place.img', { size: 2 * cs });
    await grown.write(fill(2 * cs, 0x31), 0);
    await grown.resize(6 * cs + 5);
    tree.set('/grown in place.img', { kind: 'file', data: Uint8Array.from([...fill(2 * cs, 0x31), ...fill(4 * cs + 5, 0)]) });
    const around = await fs.createFile('/grown around.img', { size: 2 * cs + 1 });
    await around.write(fill(2 * cs + 1, 0x32), 0);
    await fs.writeFile('/blocker', fill(cs, 0x33));
    tree.set('/blocker', { kind: 'file', data: fill(cs, 0x33) });
    await around.resize(9 * cs);
    await around.write(fill(cs, 0x34), 8 * cs);
    tree.set('/grown around.img', { kind: 'file', data: Uint8Array.from([...fill(2 * cs + 1, 0x32), ...fill(6 * cs - 1, 0), ...fill(cs, 0x34)]) });
    const shrunk = await fs.createFile('/shrunk.img', { size: 10 * cs });
    const counting = new Uint8Array(10 * cs).map((_, k) => k & 0xff);
    await shrunk.write(counting, 0);
    await shrunk.resize(3 * cs + 1);
    await fs.writeFile('/replaced.bin', fill(5 * cs, 0x35));
    await fs.rename('/shrunk.img', '/replaced.bin');
    tree.set('/replaced.bin', { kind: 'file', data: counting.slice(0, 3 * cs + 1) });
    const partial = await fs.createFile('/partly written.img', { size: 20 * cs });
    await partial.write(fill(1000, 0xab), 3 * cs + 7);
    const partialData = new Uint8Array(20 * cs);
    partialData.set(fill(1000, 0xab), 3 * cs + 7);
    tree.set('/partly written.img', { kind: 'file', data: partialData });
    await fs.close();
    await disk.close();

    const result = await runInKernel({ script: SCRIPT, disks: [{ path: img }] });
    assert.equal(result.status, 0, result.output);
    assert.match(result.output, /DONE/);
    const guest = new Map<string, string>();
    for (const line of result.output.split('\n')) {
      const [kind, path, hash] = line.split('|');
      if (kind === 'D' && path) guest.set(path, 'dir');
      else if (kind === 'F' && path) guest.set(path, hash!);
    }
    assert.deepEqual(sorted(guest), sorted(treeListing(tree)), 'the guest sees our tree');

    run('fsck.fat', ['-n', img]);
    const again = await FileDisk.open(img, { readOnly: true });
    fs = await FatFs.open(again);
    const expected = treeListing(tree);
    expected.delete('/big file.bin');
    expected.set('/guest dir', 'dir');
    expected.set('/guest dir/renamed by the guest.bin', sha(big));
    expected.set('/guest dir/zeros.bin', sha(new Uint8Array(300 * 1024)));
    expected.set('/Guest Note.txt', sha(new TextEncoder().encode('written by the guest\n')));
    assert.deepEqual(sorted(await fsListing(fs)), sorted(expected), 'we see the guest\'s changes');
    const note = await fs.openFile('/guest note.TXT');
    assert.equal(new TextDecoder().decode(await readAt(note, 0, note.size)), 'written by the guest\n');
    assert.equal(fs.dirtyBit, false, 'the guest cleared the dirty bit on umount');
    await again.close();
  });

  test('Linux vfat reads a volume FatFs repaired after an unclean stop, and writes into the freed space', async () => {
    const img = join(tmp.dir, 'repaired.img');
    run('truncate', ['-s', String(48 * MiB), img]);
    let disk = await FileDisk.open(img);
    await mkfsFat(disk, { type: 'fat32', label: 'LIVE', serial: 0x2026beef, now: NOW });
    const tree = randomTree(777, { files: 25 });
    let fs = await FatFs.open(disk, { now: () => NOW });
    for (const [p, n] of [...tree].sort(([a], [b]) => a.length - b.length)) {
      if (n.kind === 'dir') await fs.mkdir(p);
      else await fs.writeFile(p, n.data);
    }
    await fs.mkdir('/LiveOS');
    const layout = fs.layout;
    await fs.close();
    await disk.close();
    // The damage an unclean stop leaves, by hand: 8 MiB of lost chains in both FATs (a half-written
    // base), one in the first FAT only, an orphaned long-name slot in /LiveOS, FSInfo's count, the bit.
    const b = readFileSync(img);
    const { fatOffset, fatBytes, clusterCount, clusterSize, dataOffset } = layout;
    const setFat = (c: number, v: number, copies = [0, 1]): void => {
      for (const k of copies) b.writeUInt32LE(v, fatOffset + k * fatBytes + c * 4);
    };
    const lostFrom = clusterCount - 8 * 2048; // 512-byte clusters: 8 MiB
    for (let c = lostFrom; c < lostFrom + 8 * 2048; c++) setFat(c, c + 1 === lostFrom + 8 * 2048 ? 0x0fffffff : c + 1);
    setFat(lostFrom - 100, 0x0fffffff, [0]);
    const liveos = b.indexOf(Buffer.from('LIVEOS     ', 'latin1'), dataOffset);
    const dirAt = dataOffset + (((b.readUInt16LE(liveos + 20) << 16) | b.readUInt16LE(liveos + 26)) - 2) * clusterSize;
    b.set([0x41, 0x6f, 0, 0x72, 0, 0x70, 0, 0x68, 0, 0x61, 0, 0x0f, 0, 0x33], dirAt + 64);
    b.writeUInt32LE(1, 512 + 488);
    b[65]! |= 1;
    writeFileSync(img, b);
    disk = await FileDisk.open(img);
    fs = await FatFs.open(disk, { now: () => NOW });
    assert.equal(fs.dirty, true);
    assert.deepEqual(fs.repaired, { lostClusters: 8 * 2048 + 1, fatSectorsCopied: 1, orphanSlots: 1, secondNames: 0 });
    await fs.close();
    await disk.close();
    const script = `mkdir -p /mnt/fat
mount -t vfat -o iocharset=utf8 /dev/vdb /mnt/fat || exit 11
cd /mnt/fat
find . -mindepth 1 | while read -r p; do
  if [ -d "$p" ]; then echo "D|\${p#.}"; else echo "F|\${p#.}|$(sha256sum < "$p" | cut -c1-64)"; fi
done
dd if=/dev/zero of=/mnt/fat/LiveOS/fill.bin bs=1M count=44 2>/dev/null || exit 12
echo "after the repair" > "/mnt/fat/LiveOS/a note written by the guest.txt" || exit 13
cd /
umount /mnt/fat || exit 14
echo DONE`;
    const result = await runInKernel({ script, disks: [{ path: img }] });
    assert.equal(result.status, 0, result.output);
    assert.match(result.output, /DONE/);
    const guest = new Map<string, string>();
    for (const line of result.output.split('\n')) {
      const [kind, path, hash] = line.split('|');
      if (kind === 'D' && path) guest.set(path, 'dir');
      else if (kind === 'F' && path) guest.set(path, hash!);
    }
    const expected = treeListing(tree);
    expected.set('/LiveOS', 'dir');
    assert.deepEqual(sorted(guest), sorted(expected), 'the guest reads every file as before the repair');
    const r = run('fsck.fat', ['-n', img], { allowFail: true });
    assert.equal(r.status, 0, r.stdout);
    const again = await FileDisk.open(img, { readOnly: true });
    fs = await FatFs.open(again);
    const seen = await fsListing(fs);
    assert.equal(seen.get('/LiveOS/fill.bin'), sha(new Uint8Array(44 * MiB)));
    await again.close();
  });
});
