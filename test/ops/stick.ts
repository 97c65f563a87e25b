/**
 * A FAT32 stick image holding a medium directory's LiveOS/ — the layout livecd-iso-to-disk makes:
 * an MBR with one bootable FAT32 partition (type 0x0c) from sector 2048, LiveOS/squashfs.img, the
 * dm-snapshot overlay and whatever else LiveOS/ holds. Written with livestick's own ptable and FAT
 * code (the oracle tests read it back with sfdisk, mtools, fsck.fat and the kernel).
 */
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { FileDisk } from '../../src/io/disk.ts';
import { FatFs, mkfsFat } from '../../src/fs/fat/index.ts';
import { EMPTY_ENTRY, encodeMbr } from '../../src/fs/ptable/mbr.ts';
import { partitionDisk, readPartitionTable } from '../../src/fs/ptable/index.ts';

const MiB = 2 ** 20;
export const STICK_NOW = 1_767_225_600_000;

/** Writes `img` (sizeMiB) with one FAT32 partition holding `dir`'s LiveOS/; returns the partition's byte range. */
export async function fatStickFrom(dir: string, img: string, sizeMiB = 320): Promise<{ startBytes: number; sizeBytes: number }> {
  const disk = await FileDisk.open(img, { create: { size: sizeMiB * MiB } });
  try {
    const sectors = (sizeMiB * MiB) / 512;
    await disk.write(
      encodeMbr({
        bootCode: new Uint8Array(440),
        diskSignature: 0x1ce5_7a1c,
        reserved: 0,
        entries: [{ status: 0x80, startChs: [0xfe, 0xff, 0xff], type: 0x0c, endChs: [0xfe, 0xff, 0xff], startLba: 2048, sectors: sectors - 2048 }, EMPTY_ENTRY, EMPTY_ENTRY, EMPTY_ENTRY],
      }),
      0,
    );
    const table = await readPartitionTable(disk);
    const p = table.partitions[0]!;
    const part = partitionDisk(disk, p);
    await mkfsFat(part, { type: 'fat32', label: 'LIVE', serial: 0x2026_1201, now: STICK_NOW });
    const fs = await FatFs.open(part, { now: () => STICK_NOW });
    await fs.mkdir('/LiveOS');
    for (const name of readdirSync(join(dir, 'LiveOS')).sort()) {
      const host = join(dir, 'LiveOS', name);
      if (!statSync(host).isFile()) continue;
      const src = await FileDisk.open(host, { readOnly: true });
      const dst = await fs.createFile(`/LiveOS/${name}`, { size: src.size });
      const piece = new Uint8Array(4 * MiB);
      for (let at = 0; at < src.size; at += piece.byteLength) {
        const part2 = piece.subarray(0, Math.min(piece.byteLength, src.size - at));
        await src.read(part2, at);
        await dst.write(part2, at);
      }
      await dst.close();
      await src.close();
    }
    await fs.close();
    return { startBytes: p.startBytes, sizeBytes: p.sizeBytes };
  } finally {
    await disk.close();
  }
}
