/**
 * Where a live medium's files are: the one filesystem holding LiveOS/, found from what the user
 * named — a mounted directory, an image file made with dd, or a block device. Every medium operation
 * (status, merge, reset, overlay bind, home) is written once against the `MediumRoot` this returns.
 *
 * Design notes
 * - A directory is a HostFileSystem rooted there. An image or device is opened read-only, or
 *   read-write for the commands that change the medium (a device in use is refused by FileDisk
 *   unless forced); its partition table is read and each partition (or the whole disk when it has
 *   none) is probed and opened through fs/registry.ts, so a filesystem added there is found here
 *   without a change. The volume holding LiveOS/ is the medium; `partition` picks one when several
 *   do.
 * - Paths are the filesystem's own ('/LiveOS/squashfs.img'). `display` names a file for messages
 *   and JSON: the host path for a directory, `IMAGE:pN/LiveOS/…` (or `IMAGE:/LiveOS/…` for a disk
 *   without a partition table) otherwise.
 * - Closing the root closes the filesystem (FAT clears its dirty bit then) and the device.
 */
import { stat } from 'node:fs/promises';
import { isAbsolute, relative, sep } from 'node:path';
import { LivestickError, NotFoundError, ReadOnlyError, UsageError, fromSystemError } from '../errors.ts';
import { FileDisk, type Disk } from '../io/disk.ts';
import { inspectDevice } from '../io/device.ts';
import { probeSignatures } from '../io/signature.ts';
import type { FileSystem, WritableFileSystem } from '../fs/filesystem.ts';
import { HostFileSystem } from '../fs/host/index.ts';
import { isWritable, openFileSystem } from '../fs/registry.ts';
import { partitionDisk, readPartitionTable } from '../fs/ptable/index.ts';

export interface MediumRoot {
  /** What the user named. */
  readonly target: string;
  readonly source: 'directory' | 'image' | 'device';
  /** 'directory', 'disk' (no partition table) or 'partition N'. */
  readonly volume: string;
  readonly fs: FileSystem;
  /** The host directory behind a directory medium (undefined for an image or device). */
  readonly hostDir: string | undefined;
  /** A file's name for messages and reports. */
  display(path: string): string;
  /** Whether livestick can write this filesystem when the medium is opened for writing. */
  readonly canWrite: boolean;
  /** The filesystem for changes; a clear error when it was opened read-only or cannot be written. */
  writable(): WritableFileSystem;
  close(): Promise<void>;
}

export interface OpenRootOptions {
  /** The command changes the medium: open the image or device read-write. */
  readonly write?: boolean;
  /** Write a device even while it is mounted or holds this host's system. */
  readonly force?: boolean;
  /** The partition (Linux numbering) holding LiveOS/ when several do. */
  readonly partition?: number;
}

/** Joins filesystem paths ('/LiveOS' + 'x' → '/LiveOS/x'). */
export function fsJoin(dir: string, name: string): string {
  return dir === '/' ? `/${name}` : `${dir}/${name}`;
}

export function fsBasename(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1);
}

export function fsDirname(path: string): string {
  const i = path.lastIndexOf('/');
  return i <= 0 ? '/' : path.slice(0, i);
}

class DirectoryRoot implements MediumRoot {
  readonly source = 'directory';
  readonly canWrite = true;
  readonly volume = 'directory';
  readonly fs: HostFileSystem;
  constructor(
    readonly target: string,
    write: boolean,
  ) {
    this.fs = new HostFileSystem(target, { writable: write });
  }
  get hostDir(): string {
    return this.target;
  }
  display(path: string): string {
    return this.fs.hostPath(path);
  }
  writable(): WritableFileSystem {
    if (this.fs.readOnly) throw new ReadOnlyError(`${this.target} was opened read-only`);
    return this.fs;
  }
  async close(): Promise<void> {}
}

class VolumeRoot implements MediumRoot {
  readonly hostDir = undefined;
  constructor(
    readonly target: string,
    readonly source: 'image' | 'device',
    readonly volume: string,
    readonly fs: FileSystem,
    private readonly disk: Disk,
    private readonly others: readonly FileSystem[],
  ) {}
  get canWrite(): boolean {
    return typeof (this.fs as { rename?: unknown }).rename === 'function';
  }
  display(path: string): string {
    return `${this.target}:${this.volume.startsWith('partition ') ? `p${this.volume.slice(10)}` : ''}${path}`;
  }
  writable(): WritableFileSystem {
    if (isWritable(this.fs)) return this.fs;
    throw new ReadOnlyError(
      this.disk.readOnly || this.fs.readOnly
        ? `${this.target} (${this.volume}, ${this.fs.type}) was opened read-only`
        : `${this.target} (${this.volume}) holds ${this.fs.type}, which livestick reads but cannot write yet; mount it and run the command on the mounted directory`,
    );
  }
  async close(): Promise<void> {
    let first: unknown;
    for (const fs of [this.fs, ...this.others]) {
      try {
        await fs.close();
      } catch (err) {
        first ??= err;
      }
    }
    await this.disk.close();
    if (first !== undefined) throw first;
  }
}

async function holdsLiveos(fs: FileSystem): Promise<boolean> {
  try {
    return (await fs.stat('/LiveOS')).kind === 'dir';
  } catch (err) {
    if (err instanceof LivestickError) return false;
    throw err;
  }
}

/** A directory medium's root (nothing to close). */
export function directoryRoot(dir: string, options: { write?: boolean } = {}): MediumRoot {
  return new DirectoryRoot(dir, Boolean(options.write));
}

/** Opens the filesystem holding the medium's LiveOS/ directory. */
export async function openMediumRoot(target: string, options: OpenRootOptions = {}): Promise<MediumRoot> {
  let st;
  try {
    st = await stat(target);
  } catch (err) {
    throw fromSystemError(err, target, 'open the medium');
  }
  if (st.isDirectory()) {
    if (options.partition !== undefined) throw new UsageError(`--partition is for an image file or a device; ${target} is a directory`);
    return new DirectoryRoot(target, Boolean(options.write));
  }
  if (!st.isFile() && !st.isBlockDevice()) throw new NotFoundError(`${target} is neither a directory, an image file nor a block device`, { file: target });
  const disk = await FileDisk.open(target, { readOnly: !options.write, force: options.force });
  const opened: { volume: string; fs: FileSystem; live: boolean }[] = [];
  const failures: LivestickError[] = [];
  try {
    const device = st.isBlockDevice() ? inspectDevice(target, disk.fd) : undefined;
    const table = await readPartitionTable(disk, device?.logicalSectorSize === 4096 ? { sectorSize: 4096 } : {});
    const volumes: { volume: string; disk: Disk; index?: number }[] =
      table.kind === 'none' ? [{ volume: 'disk', disk }] : table.partitions.map((p) => ({ volume: `partition ${p.index}`, disk: partitionDisk(disk, p, { readOnly: disk.readOnly }), index: p.index }));
    if (options.partition !== undefined && !volumes.some((v) => v.index === options.partition)) {
      throw new UsageError(`${target} has no partition ${options.partition} (${volumes.map((v) => v.volume).join(', ') || 'no partitions'})`);
    }
    for (const v of volumes) {
      if (options.partition !== undefined && v.index !== options.partition) continue;
      const signatures = (await probeSignatures(v.disk)).map((s) => s.name);
      let fs: FileSystem | undefined;
      try {
        fs = (await openFileSystem(v.disk, signatures, { write: options.write }))?.fs;
      } catch (err) {
        if (!(err instanceof LivestickError) || options.partition !== undefined) throw err;
        failures.push(err);
      }
      if (fs) opened.push({ volume: v.volume, fs, live: await holdsLiveos(fs) });
    }
    const live = opened.filter((o) => o.live);
    // A volume that could not be opened may be the one holding LiveOS/: its error says more than "not found".
    if (live.length === 0 && failures.length > 0) throw failures[0];
    if (live.length === 0) {
      const seen = opened.map((o) => `${o.volume} (${o.fs.type}${o.fs.label ? ` "${o.fs.label}"` : ''})`).join(', ');
      throw new NotFoundError(`no LiveOS/ directory on ${target}: not a live medium${seen ? ` (looked in ${seen})` : ''}; \`livestick inspect ${target}\` shows what it holds`, { file: target });
    }
    if (live.length > 1) throw new UsageError(`several volumes of ${target} hold LiveOS/ (${live.map((l) => l.volume).join(', ')}); choose one with --partition N`);
    const chosen = live[0]!;
    const others = opened.filter((o) => o !== chosen).map((o) => o.fs);
    return new VolumeRoot(target, device ? 'device' : 'image', chosen.volume, chosen.fs, disk, others);
  } catch (err) {
    for (const o of opened) await o.fs.close().catch(() => {});
    await disk.close();
    throw err;
  }
}

/**
 * A path on the medium for a user's --overlay value: a bare name is a file in LiveOS/; a path is
 * taken inside the medium (for a directory medium, a host path below it).
 */
export function mediumPath(root: MediumRoot, liveos: string, value: string): string {
  if (!/[\\/]/.test(value)) return fsJoin(liveos, value);
  if (root.hostDir !== undefined && isAbsolute(value)) {
    const rel = relative(root.hostDir, value);
    if (rel.startsWith('..') || isAbsolute(rel)) throw new UsageError(`${value} is not on the medium ${root.hostDir}`);
    return `/${rel.split(sep).join('/')}`;
  }
  return value.startsWith('/') ? value : `/${value}`;
}
