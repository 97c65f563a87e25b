/**
 * `livestick inspect TARGET`: what a stick holds, in one view — the partition table, each volume's
 * signatures and filesystem (label, UUID, size, free space), and the live systems found on them with
 * their base and persistence. TARGET is a mounted directory, an image file made with dd, or a device.
 *
 * Design notes
 * - The stick is read, never written: every Disk is opened read-only.
 * - Volumes: each partition of the table, or the whole Disk when it has none (a superfloppy, or an
 *   image of one filesystem). Filesystems are opened through fs/registry.ts, so a filesystem added
 *   there is found here without a change; a volume whose filesystem is not supported yet is listed
 *   with its signatures.
 * - Live layouts are recognised by content, as the boot code does: LiveOS/squashfs.img (SquashFS or
 *   EROFS; SquashFS holding LiveOS/rootfs.img, or a flat root), LiveOS/overlay-* (a dm-snapshot file,
 *   an overlayfs directory, or an image holding a filesystem), LiveOS/home.img; live/*.squashfs
 *   (Debian live-boot); casper/*.squashfs (Ubuntu). Volumes labelled persistence, writable, casper-rw
 *   or vtoycow are reported as persistence.
 */
import { stat } from 'node:fs/promises';
import { LivestickError, NotFoundError, fromSystemError } from '../errors.ts';
import { FileDisk, type Disk } from '../io/disk.ts';
import { inspectDevice } from '../io/device.ts';
import { probeSignatures } from '../io/signature.ts';
import type { FileSystem } from '../fs/filesystem.ts';
import { HostFileSystem } from '../fs/host/index.ts';
import { openFileSystem } from '../fs/registry.ts';
import { partitionDisk, readPartitionTable, type PartitionTable } from '../fs/ptable/index.ts';
import { imageKind } from './medium.ts';

export interface InspectedVolume {
  /** "disk" (no partition table), "partition N", or "directory". */
  readonly id: string;
  readonly startBytes: number;
  readonly sizeBytes: number;
  readonly partitionType?: string;
  readonly partitionName?: string;
  readonly signatures: string[];
  readonly filesystem?: { type: string; label?: string; uuid?: string; totalBytes: number; freeBytes: number };
  readonly problem?: string;
}

export interface LivePersistence {
  readonly path: string;
  readonly kind: 'dm-snapshot file' | 'overlayfs directory' | 'overlay image' | 'persistence volume';
  readonly bytes: number;
}

export interface LiveSystem {
  readonly volume: string;
  readonly layout: 'dracut LiveOS' | 'Debian live-boot' | 'Ubuntu casper';
  readonly base: { path: string; format: string; rootImage?: string; flat?: boolean; bytes: number };
  readonly persistence: LivePersistence[];
  readonly home?: { path: string; bytes: number; encrypted: boolean };
}

export interface InspectReport {
  readonly target: string;
  readonly source: { kind: 'directory' | 'image' | 'device'; sizeBytes: number; sectorSize?: number; model?: string; mounted?: string[] };
  readonly partitionTable: { kind: string; sectorSize: number; partitions: number; problems: string[] } | null;
  readonly volumes: InspectedVolume[];
  readonly liveSystems: LiveSystem[];
  readonly warnings: string[];
}

const PERSISTENCE_LABELS = new Set(['persistence', 'writable', 'casper-rw', 'vtoycow']);


/** Runs `fn` on a file of the filesystem as a Disk, closing it after. */
async function withFile<T>(fs: FileSystem, path: string, fn: (disk: Disk) => Promise<T>): Promise<T> {
  const disk = await fs.openFile(path);
  try {
    return await fn(disk);
  } finally {
    await disk.close();
  }
}

async function entries(fs: FileSystem, path: string): Promise<{ name: string; kind: string }[]> {
  try {
    return await fs.readdir(path);
  } catch (err) {
    if (err instanceof LivestickError) return [];
    throw err;
  }
}

/** The live systems on one filesystem. */
async function liveSystemsOn(fs: FileSystem, volume: string, warnings: string[]): Promise<LiveSystem[]> {
  const out: LiveSystem[] = [];
  const liveos = await entries(fs, '/LiveOS');
  const base = liveos.find((e) => e.name === 'squashfs.img' && e.kind === 'file');
  if (base) {
    const { format, rootImage, flat, bytes } = await withFile(fs, '/LiveOS/squashfs.img', async (disk) => {
      const format = await imageKind(disk);
      let rootImage: string | undefined;
      let flat: boolean | undefined;
      if (format === 'squashfs') {
        try {
          const { SquashfsReader } = await import('../fs/squashfs/reader.ts');
          const sq = await SquashfsReader.open(disk);
          for (const candidate of ['LiveOS/rootfs.img', 'LiveOS/ext3fs.img']) {
            try {
              if ((await sq.lookup(candidate)).kind === 'file') rootImage = candidate;
            } catch {
              // not this one
            }
            if (rootImage) break;
          }
          flat = rootImage === undefined;
        } catch (err) {
          if (!(err instanceof LivestickError)) throw err;
          warnings.push(`${volume}: /LiveOS/squashfs.img looks like SquashFS but cannot be read: ${err.message}`);
        }
      }
      return { format, rootImage, flat, bytes: disk.size };
    });
    const persistence: LivePersistence[] = [];
    for (const e of liveos.filter((x) => x.name.startsWith('overlay-') && !x.name.includes('.livestick-'))) {
      const path = `/LiveOS/${e.name}`;
      const st = await fs.stat(path);
      if (e.kind === 'dir') persistence.push({ path, kind: 'overlayfs directory', bytes: 0 });
      else {
        const inner = await withFile(fs, path, imageKind);
        persistence.push({ path, kind: inner === 'ext4' ? 'overlay image' : 'dm-snapshot file', bytes: st.size });
      }
    }
    let home: LiveSystem['home'];
    if (liveos.some((e) => e.name === 'home.img' && e.kind === 'file')) {
      home = { path: '/LiveOS/home.img', bytes: (await fs.stat('/LiveOS/home.img')).size, encrypted: (await withFile(fs, '/LiveOS/home.img', imageKind)) === 'LUKS' };
    }
    out.push({
      volume,
      layout: 'dracut LiveOS',
      base: { path: '/LiveOS/squashfs.img', format, bytes, ...(rootImage ? { rootImage } : {}), ...(flat !== undefined ? { flat } : {}) },
      persistence,
      ...(home ? { home } : {}),
    });
  }
  for (const [dir, layout] of [['/live', 'Debian live-boot'], ['/casper', 'Ubuntu casper']] as const) {
    for (const e of (await entries(fs, dir)).filter((x) => x.kind === 'file' && x.name.endsWith('.squashfs')).sort((a, b) => a.name.localeCompare(b.name))) {
      const path = `${dir}/${e.name}`;
      const { format, bytes } = await withFile(fs, path, async (disk) => ({ format: await imageKind(disk), bytes: disk.size }));
      out.push({ volume, layout, base: { path, format, bytes }, persistence: [] });
      if (layout === 'Debian live-boot') break;
    }
  }
  return out;
}

async function inspectVolume(disk: Disk, id: string, extra: Partial<InspectedVolume>, warnings: string[]): Promise<{ volume: InspectedVolume; fs?: FileSystem }> {
  const signatures = (await probeSignatures(disk)).map((s) => s.name);
  const base = { id, startBytes: extra.startBytes ?? 0, sizeBytes: disk.size, ...extra, signatures };
  try {
    const opened = await openFileSystem(disk, signatures);
    if (!opened) return { volume: base };
    const space = await opened.fs.space();
    return {
      volume: { ...base, filesystem: { type: opened.fs.type, ...(opened.fs.label ? { label: opened.fs.label } : {}), ...(opened.fs.uuid ? { uuid: opened.fs.uuid } : {}), ...space } },
      fs: opened.fs,
    };
  } catch (err) {
    if (!(err instanceof LivestickError)) throw err;
    warnings.push(`${id}: ${err.message}`);
    return { volume: { ...base, problem: err.message } };
  }
}

export async function inspectMedium(target: string): Promise<InspectReport> {
  let st;
  try {
    st = await stat(target);
  } catch (err) {
    throw fromSystemError(err, target, 'open it');
  }
  const warnings: string[] = [];
  const liveSystems: LiveSystem[] = [];
  if (st.isDirectory()) {
    const fs = new HostFileSystem(target);
    const space = await fs.space();
    liveSystems.push(...(await liveSystemsOn(fs, 'directory', warnings)));
    return {
      target,
      source: { kind: 'directory', sizeBytes: space.totalBytes },
      partitionTable: null,
      volumes: [{ id: 'directory', startBytes: 0, sizeBytes: space.totalBytes, signatures: [], filesystem: { type: 'host', ...space } }],
      liveSystems,
      warnings,
    };
  }
  if (!st.isFile() && !st.isBlockDevice()) throw new NotFoundError(`${target} is neither a directory, an image file nor a block device`, { file: target });
  const disk = await FileDisk.open(target, { readOnly: true });
  try {
    const device = st.isBlockDevice() ? inspectDevice(target) : undefined;
    const table: PartitionTable = await readPartitionTable(disk, device && device.logicalSectorSize === 4096 ? { sectorSize: 4096 } : {});
    const volumes: InspectedVolume[] = [];
    const parts = table.kind === 'none' ? [] : table.partitions;
    const visit = async (vdisk: Disk, id: string, extra: Partial<InspectedVolume>): Promise<void> => {
      const { volume, fs } = await inspectVolume(vdisk, id, extra, warnings);
      volumes.push(volume);
      if (!fs) return;
      const label = volume.filesystem?.label?.toLowerCase();
      const found = await liveSystemsOn(fs, id, warnings);
      liveSystems.push(...found);
      if (label && PERSISTENCE_LABELS.has(label)) {
        liveSystems.push({ volume: id, layout: label === 'persistence' ? 'Debian live-boot' : 'Ubuntu casper', base: { path: '', format: 'none', bytes: 0 }, persistence: [{ path: '/', kind: 'persistence volume', bytes: volume.sizeBytes }] });
      }
    };
    if (parts.length === 0) await visit(disk, 'disk', {});
    for (const p of parts) {
      await visit(partitionDisk(disk, p, { readOnly: true }), `partition ${p.index}`, {
        startBytes: p.startBytes,
        partitionType: p.typeName,
        ...(p.name ? { partitionName: p.name } : {}),
      });
    }
    warnings.push(...table.problems);
    return {
      target,
      source: {
        kind: device ? 'device' : 'image',
        sizeBytes: disk.size,
        ...(device ? { sectorSize: device.logicalSectorSize, ...(device.model ? { model: device.model } : {}), mounted: device.mounted.map((m) => `${m.device} at ${m.mountPoint}`) } : {}),
      },
      partitionTable: table.kind === 'none' ? null : { kind: table.kind, sectorSize: table.sectorSize, partitions: table.partitions.length, problems: [...table.problems] },
      volumes,
      liveSystems,
      warnings,
    };
  } finally {
    await disk.close();
  }
}
