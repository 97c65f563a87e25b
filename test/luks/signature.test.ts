/** probeSignatures: each magic at its place, the variants it tells apart, and what must not count. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MemoryDisk } from '../../src/io/disk.ts';
import { probeSignatures } from '../../src/io/signature.ts';
import { mkfs } from '../../src/fs/ext4/index.ts';
import { LuksVolume } from '../../src/xform/luks/index.ts';

const MiB = 1 << 20;
const put = (d: Uint8Array, at: number, bytes: string | number[]): void => d.set(typeof bytes === 'string' ? new TextEncoder().encode(bytes) : bytes, at);

function diskWith(size: number, fill: (d: Uint8Array) => void): MemoryDisk {
  const d = new Uint8Array(size);
  fill(d);
  return new MemoryDisk(d);
}

test('every signature is found at its offset, by name', async () => {
  const cases: [string, (d: Uint8Array) => void, { name: string; offset: number }[]][] = [
    ['squashfs', (d) => put(d, 0, 'hsqs'), [{ name: 'squashfs', offset: 0 }]],
    ['xfs', (d) => put(d, 0, 'XFSB'), [{ name: 'xfs', offset: 0 }]],
    ['erofs', (d) => put(d, 1024, [0xe2, 0xe1, 0xf5, 0xe0]), [{ name: 'erofs', offset: 1024 }]],
    ['ext2', (d) => put(d, 1080, [0x53, 0xef]), [{ name: 'ext2', offset: 1080 }]],
    ['ext3', (d) => (put(d, 1080, [0x53, 0xef]), put(d, 1024 + 92, [4])), [{ name: 'ext3', offset: 1080 }]],
    ['FAT32', (d) => (put(d, 510, [0x55, 0xaa]), put(d, 82, 'FAT32   ')), [{ name: 'vfat (FAT32)', offset: 82 }]],
    ['FAT16', (d) => (put(d, 510, [0x55, 0xaa]), put(d, 54, 'FAT16   ')), [{ name: 'vfat (FAT16)', offset: 54 }]],
    ['exfat', (d) => put(d, 3, 'EXFAT   '), [{ name: 'exfat', offset: 3 }]],
    ['iso9660', (d) => put(d, 32769, 'CD001'), [{ name: 'iso9660', offset: 32769 }]],
    ['swap', (d) => put(d, 4096 - 10, 'SWAPSPACE2'), [{ name: 'swap', offset: 4086 }]],
    ['swap, 64 KiB pages', (d) => put(d, 65536 - 10, 'SWAPSPACE2'), [{ name: 'swap', offset: 65526 }]],
    ['gpt', (d) => (put(d, 510, [0x55, 0xaa]), put(d, 446 + 4, [0xee]), put(d, 512, 'EFI PART')), [{ name: 'gpt partition table', offset: 512 }]],
    ['mbr', (d) => (put(d, 510, [0x55, 0xaa]), put(d, 446 + 16 + 4, [0x83])), [{ name: 'dos partition table', offset: 510 }]],
    ['btrfs', (d) => put(d, 0x10040, '_BHRfS_M'), [{ name: 'btrfs', offset: 0x10040 }]],
    ['LUKS1', (d) => put(d, 0, [0x4c, 0x55, 0x4b, 0x53, 0xba, 0xbe, 0, 1]), [{ name: 'LUKS1', offset: 0 }]],
    ['LUKS2 secondary only', (d) => put(d, 0x4000, [0x53, 0x4b, 0x55, 0x4c, 0xba, 0xbe, 0, 2]), [{ name: 'LUKS2 (secondary header)', offset: 0x4000 }]],
    ['iso + mbr (hybrid)', (d) => (put(d, 510, [0x55, 0xaa]), put(d, 446 + 4, [0x17]), put(d, 32769, 'CD001')), [{ name: 'dos partition table', offset: 510 }, { name: 'iso9660', offset: 32769 }]],
  ];
  for (const [what, fill, expected] of cases) assert.deepEqual(await probeSignatures(diskWith(MiB, fill)), expected, what);
});

test('no signature on zeros, a boot mark without partitions, or a Disk too short to hold the magic', async () => {
  assert.deepEqual(await probeSignatures(new MemoryDisk(MiB)), []);
  assert.deepEqual(await probeSignatures(diskWith(MiB, (d) => put(d, 510, [0x55, 0xaa]))), []);
  assert.deepEqual(await probeSignatures(new MemoryDisk(0)), []);
  assert.deepEqual(await probeSignatures(diskWith(1082, (d) => put(d, 1080, [0x53, 0xef]))), [], 'the superblock it would read runs past the end');
  assert.deepEqual(await probeSignatures(diskWith(1200, (d) => put(d, 0, 'hsqs'))), [{ name: 'squashfs', offset: 0 }]);
});

test('real volumes: livestick ext4 and LUKS2 (both header copies)', async () => {
  const fs = new MemoryDisk(16 * MiB);
  await mkfs(fs);
  assert.deepEqual(await probeSignatures(fs), [{ name: 'ext4', offset: 1080 }]);
  const luks = new MemoryDisk(20 * MiB);
  await LuksVolume.format(luks, new TextEncoder().encode('pw'), { kdf: { type: 'pbkdf2', iterations: 1000 } });
  assert.deepEqual(await probeSignatures(luks), [{ name: 'LUKS2', offset: 0 }, { name: 'LUKS2 (secondary header)', offset: 0x4000 }]);
});
