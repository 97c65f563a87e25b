/**
 * Small stick images for the live-system tests, made with livestick's own writers: GPT or MBR
 * tables, FAT32, ext4 (mkfs + the writable filesystem), SquashFS from an in-memory tree. A few MiB
 * each, so every test file stays fast.
 */
import { readFileSync, rmSync } from 'node:fs';
import { FileDisk, MemoryDisk, type Disk } from '../../src/io/disk.ts';
import { addPartition, createGpt, partitionDisk, readPartitionTable, type PartitionTable } from '../../src/fs/ptable/index.ts';
import { EMPTY_ENTRY, encodeMbr } from '../../src/fs/ptable/mbr.ts';
import { FatFs, mkfsFat } from '../../src/fs/fat/index.ts';
import { mkfs } from '../../src/fs/ext4/mkfs.ts';
import { Ext4WritableFileSystem } from '../../src/fs/ext4/writable.ts';
import { dirNode, fileNode, writeSquashfs, type DirNode } from '../../src/fs/squashfs/index.ts';
import type { WritableFileSystem } from '../../src/fs/filesystem.ts';

export const MiB = 2 ** 20;
export const NOW = 1_767_225_600_000;

/** A tiny root tree: /usr/bin/sh, /etc/os-release (a flat live root). */
export function rootTree(marker = 'base'): DirNode {
  return dirNode({}, {
    usr: dirNode({}, { bin: dirNode({}, { sh: fileNode(`#!${marker}\n`, { mode: 0o755 }) }) }),
    etc: dirNode({}, { 'os-release': fileNode(`ID=${marker}\n`) }),
  });
}

/** SquashFS bytes of a tree (written through a temporary file). */
export async function squashfsBytes(tree: DirNode, tmp: string): Promise<Uint8Array> {
  await writeSquashfs(tree, tmp, { threads: 0, mtime: 0, compressor: 'gzip' });
  const bytes = readFileSync(tmp);
  rmSync(tmp);
  return new Uint8Array(bytes);
}

/** ext4 image bytes in memory, filled by `fill`. */
/** (ext4 needs at least 8 MiB: smaller sizes are raised to it.) */
export async function ext4Bytes(sizeMiB: number, options: { label?: string; uuid?: string }, fill: (fs: WritableFileSystem) => Promise<void>): Promise<Uint8Array> {
  const disk = new MemoryDisk(Math.max(8, sizeMiB) * MiB);
  await ext4On(disk, options, fill);
  const out = new Uint8Array(disk.size);
  await disk.read(out, 0);
  return out;
}

function uuidBytes(text: string): Uint8Array {
  const h = text.replace(/-/g, '');
  return Uint8Array.from({ length: 16 }, (_, i) => parseInt(h.slice(i * 2, i * 2 + 2), 16));
}

export async function ext4On(disk: Disk, options: { label?: string; uuid?: string }, fill: (fs: WritableFileSystem) => Promise<void>): Promise<void> {
  await mkfs(disk, { label: options.label, time: NOW / 1000, journalBlocks: 0, hashSeed: new Uint8Array(16).fill(7), uuid: uuidBytes(options.uuid ?? '11111111-2222-3333-4444-555555555555'), zeroed: true });
  const fs = await Ext4WritableFileSystem.open(disk);
  await fill(fs);
  await fs.close();
}

export async function fatOn(disk: Disk, options: { label: string; serial: number }, fill: (fs: WritableFileSystem) => Promise<void>): Promise<void> {
  await mkfsFat(disk, { label: options.label, serial: options.serial, type: 'fat32', now: NOW });
  const fs = await FatFs.open(disk, { now: () => NOW });
  await fill(fs);
  await fs.close();
}

/** Writes `path` (creating parents) in a writable filesystem. */
export async function put(fs: WritableFileSystem, path: string, data: Uint8Array | string): Promise<void> {
  const parts = path.split('/').filter(Boolean);
  let dir = '';
  for (const p of parts.slice(0, -1)) {
    dir += `/${p}`;
    try {
      await fs.mkdir(dir);
    } catch (err) {
      if (!(err instanceof Error && 'code' in err && (err as { code: string }).code === 'EXISTS')) throw err;
    }
  }
  await fs.writeFile(path, typeof data === 'string' ? new TextEncoder().encode(data) : data);
}

export async function mkdirs(fs: WritableFileSystem, ...paths: string[]): Promise<void> {
  for (const path of paths) {
    const parts = path.split('/').filter(Boolean);
    let dir = '';
    for (const p of parts) {
      dir += `/${p}`;
      try {
        await fs.mkdir(dir);
      } catch (err) {
        if (!(err instanceof Error && 'code' in err && (err as { code: string }).code === 'EXISTS')) throw err;
      }
    }
  }
}

export interface PartSpec {
  readonly sizeMiB?: number;
  readonly type: 'efi-system' | 'linux-filesystem' | 'microsoft-basic-data';
  readonly name?: string;
  readonly fill: (disk: Disk) => Promise<void>;
}

/** A GPT stick image with the given partitions, each filled by its callback. */
export async function gptStick(img: string, sizeMiB: number, parts: readonly PartSpec[]): Promise<PartitionTable> {
  const disk = await FileDisk.open(img, { create: { size: sizeMiB * MiB } });
  try {
    let table = await createGpt(disk, { diskGuid: '3F1C9E2A-6B7D-4E8F-9A0B-1C2D3E4F5A6B' });
    for (const p of parts) table = await addPartition(disk, table, { ...(p.sizeMiB ? { sizeBytes: p.sizeMiB * MiB } : {}), type: p.type, ...(p.name ? { name: p.name } : {}) });
    for (const [i, p] of parts.entries()) await p.fill(partitionDisk(disk, table.partitions[i]!));
    return table;
  } finally {
    await disk.close();
  }
}

/** An MBR stick image with one partition of `type` from sector 2048 over the whole image. */
export async function mbrStick(img: string, sizeMiB: number, type: number, fill: (disk: Disk) => Promise<void>): Promise<void> {
  const disk = await FileDisk.open(img, { create: { size: sizeMiB * MiB } });
  try {
    const sectors = (sizeMiB * MiB) / 512;
    await disk.write(
      encodeMbr({ bootCode: new Uint8Array(440), diskSignature: 0x1ce5_7a1c, reserved: 0, entries: [{ status: 0x80, startChs: [0xfe, 0xff, 0xff], type, endChs: [0xfe, 0xff, 0xff], startLba: 2048, sectors: sectors - 2048 }, EMPTY_ENTRY, EMPTY_ENTRY, EMPTY_ENTRY] }),
      0,
    );
    const table = await readPartitionTable(disk);
    await fill(partitionDisk(disk, table.partitions[0]!));
  } finally {
    await disk.close();
  }
}
