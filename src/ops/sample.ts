/**
 * A sample live medium built entirely in userspace (no mkfs, mksquashfs or root): an ext4 root image
 * with real-looking files, wrapped as LiveOS/rootfs.img in LiveOS/squashfs.img, plus a bound overlay.
 * `applyPackageUpdate` then changes the filesystem through the overlay engine the way a package
 * upgrade does: new files, rewritten files, deleted files. Used by `livestick demo` and the tests.
 */
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { FileDisk, MemoryDisk } from '../io/disk.ts';
import { Ext4 } from '../fs/ext4/index.ts';
import { Ext4Writer } from '../fs/ext4/writer.ts';
import { mkfs } from '../fs/ext4/mkfs.ts';
import { dirNode, writeSquashfs, type FileNode } from '../fs/squashfs/index.ts';
import type { CompressorName, CompressorSettings } from '../fs/squashfs/index.ts';
import { ExceptionStore, SnapshotDisk } from '../xform/dmsnap/index.ts';
import { BASE_NAME, LIVEOS, locateMedium, openMedium, openMediumFile } from './medium.ts';
import { bindingFor } from './overlay.ts';

const MiB = 2 ** 20;
const TIME = 1_750_000_000;
const NOW = () => ({ sec: TIME, nsec: 0 });

export interface SampleOptions {
  rootfsBytes?: number;
  overlayBytes?: number;
  compressor?: CompressorName;
  compressorSettings?: CompressorSettings;
  blockSize?: number;
  label?: string;
}

export interface SampleMedium {
  dir: string;
  overlayPath: string;
  label: string;
}

/** Deterministic, compressible "binary" content: repeated structure with varying words. */
export function pseudoBinary(seed: number, size: number): Uint8Array {
  const out = new Uint8Array(size);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < size; i += 4) {
    if ((i & 63) === 0) {
      x ^= x << 13;
      x >>>= 0;
      x ^= x >>> 17;
      x ^= x << 5;
      x >>>= 0;
    }
    const word = (i & 255) < 96 ? x : (i * 2654435761) >>> 7;
    out[i] = word & 0xff;
    if (i + 1 < size) out[i + 1] = (word >>> 8) & 0x3f;
    if (i + 2 < size) out[i + 2] = 0;
    if (i + 3 < size) out[i + 3] = (i >>> 12) & 0xff;
  }
  return out;
}

const text = (s: string) => new TextEncoder().encode(s);

const UUID = new Uint8Array([0x5a, 0x1e, 0x57, 0x1c, 0x4b, 0x0a, 0x4e, 0x11, 0x9e, 0x0f, 0x11, 0x7e, 0x57, 0x1c, 0x4d, 0x01]);
const SEED = new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]);

/** The root filesystem's content before the update. */
async function populate(w: Ext4Writer): Promise<void> {
  for (const d of ['/etc', '/usr', '/usr/bin', '/usr/lib', '/usr/lib/modules', '/usr/lib/modules/6.8.5', '/usr/share', '/usr/share/doc', '/var', '/var/log', '/home', '/root', '/boot']) {
    await w.mkdir(d, { mode: 0o755, mtime: NOW() });
  }
  await w.writeFile('/etc/os-release', text('NAME="Sample Live"\nVERSION_ID=40\nID=samplelive\n'), { mode: 0o644, mtime: NOW() });
  await w.writeFile('/etc/hostname', text('livestick-sample\n'), { mode: 0o644 });
  await w.writeFile('/usr/lib/modules/6.8.5/vmlinuz', pseudoBinary(1, 6 * MiB), { mode: 0o755 });
  await w.writeFile('/usr/lib/modules/6.8.5/modules.dep', text('kernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko\n'.repeat(2000)), { mode: 0o644 });
  for (let i = 0; i < 24; i++) {
    await w.writeFile(`/usr/lib/libsample${i}.so.1`, pseudoBinary(100 + i, 64 * 1024 + i * 7919), { mode: 0o755 });
    await w.writeFile(`/usr/bin/tool${i}`, pseudoBinary(200 + i, 24 * 1024 + i * 313), { mode: 0o755 });
  }
  for (let i = 0; i < 12; i++) {
    await w.mkdir(`/usr/share/doc/package${i}`, { mode: 0o755 });
    await w.writeFile(`/usr/share/doc/package${i}/README`, text(`Package ${i}\n${'documentation line\n'.repeat(400 + i * 50)}`), { mode: 0o644 });
  }
  await w.symlink('/boot/vmlinuz', '../usr/lib/modules/6.8.5/vmlinuz');
}

export async function buildSampleMedium(dir: string, options: SampleOptions = {}): Promise<SampleMedium> {
  const label = options.label ?? 'SAMPLE-LIVE';
  const liveos = join(dir, LIVEOS);
  await mkdir(liveos, { recursive: true });
  const rootfs = new MemoryDisk(options.rootfsBytes ?? 96 * MiB);
  await mkfs(rootfs, { label: 'sample-root', uuid: UUID, hashSeed: SEED, time: TIME, zeroed: true });
  const w = await Ext4Writer.open(await Ext4.open(rootfs), { now: NOW });
  await populate(w);
  await w.close();

  const rootFile: FileNode = { type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: TIME, size: rootfs.size, content: { kind: 'disk', disk: rootfs } };
  const tree = dirNode({ mtime: TIME }, { LiveOS: dirNode({ mtime: TIME }, { 'rootfs.img': rootFile }) });
  const basePath = join(liveos, BASE_NAME);
  await rm(basePath, { force: true });
  await writeSquashfs(tree, basePath, { compressor: options.compressor ?? 'zstd', compressorSettings: options.compressorSettings ?? { level: 3 }, blockSize: options.blockSize ?? 128 * 1024, mtime: TIME, allRoot: true });

  const overlayPath = join(liveos, `overlay-${label}-5a1e-571c`);
  const medium = await openMedium(await locateMedium(dir));
  try {
    const binding = await bindingFor(medium.rootDisk, medium.rootImage);
    const ov = await FileDisk.open(overlayPath, { create: { size: options.overlayBytes ?? 48 * MiB } });
    await ExceptionStore.format(ov, 8, binding);
    await ov.close();
  } finally {
    await medium.close();
  }
  return { dir, overlayPath, label };
}

/** What a package upgrade does to the root filesystem, written through the overlay. */
export async function applyPackageUpdate(dir: string, round = 1): Promise<{ added: string[]; rewritten: string[]; deleted: string[] }> {
  const medium = await openMedium(await locateMedium(dir));
  const ov = await openMediumFile(medium.root, medium.overlayPath as string, 'write');
  try {
    const combined = new SnapshotDisk(medium.rootDisk, await ExceptionStore.open(ov));
    const w = await Ext4Writer.open(await Ext4.open(combined), { now: () => ({ sec: TIME + round * 86400, nsec: 0 }) });
    const kernel = `/usr/lib/modules/6.9.${round}`;
    await w.mkdir(kernel, { mode: 0o755 });
    await w.writeFile(`${kernel}/vmlinuz`, pseudoBinary(1000 + round, 7 * MiB), { mode: 0o755 });
    await w.writeFile(`${kernel}/modules.dep`, text('kernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko\n'.repeat(2500)), { mode: 0o644 });
    const rewritten: string[] = [];
    for (let i = round % 3; i < 24; i += 3) {
      const p = `/usr/lib/libsample${i}.so.1`;
      await w.unlink(p);
      await w.writeFile(p, pseudoBinary(5000 + i + round, 64 * 1024 + i * 7919 + 4096), { mode: 0o755 });
      rewritten.push(p);
    }
    const deleted: string[] = [];
    for (let i = (round - 1) * 2; i < round * 2 && i < 12; i++) {
      const p = `/usr/share/doc/package${i}/README`;
      await w.unlink(p);
      deleted.push(p);
    }
    // The previous kernel goes away once the new one is in: the base's, or the one the last update put
    // in the overlay (then its chunks are copied but free: what a merge reclaims).
    const previous = round === 1 ? '/usr/lib/modules/6.8.5' : `/usr/lib/modules/6.9.${round - 1}`;
    for (const f of ['vmlinuz', 'modules.dep']) {
      await w.unlink(`${previous}/${f}`);
      deleted.push(`${previous}/${f}`);
    }
    await w.writeFile('/etc/os-release', text(`NAME="Sample Live"\nVERSION_ID=40\nID=samplelive\nUPDATED=${round}\n`), { mode: 0o644 });
    rewritten.push('/etc/os-release');
    await w.close();
    await combined.flush();
    return { added: [`${kernel}/vmlinuz`, `${kernel}/modules.dep`], rewritten, deleted };
  } finally {
    await ov.close();
    await medium.close();
  }
}
