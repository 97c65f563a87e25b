/** Tables built with livestick's own encoders, for unit, property and fuzz tests. */
import { MemoryDisk } from '../../src/io/disk.ts';
import { encodeMbr, mbrEntry, EMPTY_ENTRY, type Mbr, type MbrEntry } from '../../src/fs/ptable/mbr.ts';
import { addPartition, createGpt } from '../../src/fs/ptable/index.ts';

export const DISK_GUID = '5EC00A7A-0000-4000-8000-00000000CAFE';

export function mbrOf(entries: MbrEntry[], diskSignature = 0xdeadbeef): Mbr {
  const e = [...entries, EMPTY_ENTRY, EMPTY_ENTRY, EMPTY_ENTRY, EMPTY_ENTRY].slice(0, 4) as unknown as Mbr['entries'];
  return { bootCode: new Uint8Array(440).fill(0x90), diskSignature, reserved: 0, entries: e };
}

/** A GPT disk with three partitions. */
export async function gptDisk(sectorSize: 512 | 4096 = 512, sizeMiB = 16): Promise<MemoryDisk> {
  const disk = new MemoryDisk(sizeMiB << 20);
  let t = await createGpt(disk, { diskGuid: DISK_GUID, sectorSize });
  t = await addPartition(disk, t, { sizeBytes: 2 << 20, type: 'efi-system', name: 'EFI' });
  t = await addPartition(disk, t, { sizeBytes: 4 << 20, type: 'linux-filesystem', name: 'root' });
  await addPartition(disk, t, { sizeBytes: 1 << 20, type: 'linux-swap', name: 'swäp' });
  return disk;
}

/**
 * An MBR disk: a FAT32 primary, an extended partition with `logicals` logical partitions of 1 MiB
 * (one EBR each, 1 MiB apart), and a Linux primary.
 */
export async function mbrDisk(logicals = 3, sectorSize: 512 | 4096 = 512): Promise<MemoryDisk> {
  const mib = (1 << 20) / sectorSize;
  const disk = new MemoryDisk((8 + 2 * logicals) << 20);
  const extStart = 2 * mib;
  const extSectors = 2 * logicals * mib;
  await disk.write(encodeMbr(mbrOf([mbrEntry(0x0c, mib, mib, true), mbrEntry(0x0f, extStart, extSectors), mbrEntry(0x83, extStart + extSectors, mib)])), 0);
  for (let i = 0; i < logicals; i++) {
    const ebr = extStart + 2 * i * mib;
    const next = i + 1 < logicals ? [mbrEntry(0x05, 2 * (i + 1) * mib, 2 * mib)] : [];
    const sector = encodeMbr({ ...mbrOf([mbrEntry(i % 2 ? 0x82 : 0x83, mib, mib), ...next], 0), bootCode: new Uint8Array(440) });
    await disk.write(sector, ebr * sectorSize);
  }
  return disk;
}
