/**
 * The volumes of a stick: what the user named (a host directory, an image file, a block device)
 * as a list of volumes, each opened through fs/registry.ts only when something asks for it.
 *
 * Design notes
 * - A directory is one volume ('directory', a HostFileSystem). An image or device is read through
 *   fs/ptable: one volume per partition ('p1', 'p2', …, Linux numbering) or, without a table, the
 *   whole disk ('disk').
 * - A file inside a volume that holds a filesystem (an ext4 LiveOS/overlay-L-U on FAT, casper's
 *   `writable` file, a Ventoy .dat, an ISO on the Ventoy partition) becomes a nested volume, id
 *   `p1:/LiveOS/overlay-LIVE-1234-ABCD` — `stick.nested(volume, path)`, asked for by the schemes that
 *   recognise such files, never found by walking every file.
 * - LUKS (a partition or a nested file) is reported with its version; its payload is opened only when
 *   the stick was opened with a passphrase callback (xform/luks, as ops/home.ts uses it).
 * - Read-only unless the stick is opened with `write`: then every supported filesystem is opened
 *   writable (a FAT left dirty is repaired by that open, as root.ts always did), nested files are
 *   opened for writing in place, and LUKS payloads are writable.
 * - A volume that cannot be opened records `problem` and is reported, not thrown, by `tryOpen`;
 *   `open` throws the typed error (root.ts needs it to explain a medium it cannot read).
 * - The stick owns every Disk and FileSystem it opened; `close()` closes filesystems first (FAT then
 *   clears its dirty bit), nested ones before their parents, then the disks.
 */
import { stat } from 'node:fs/promises';
import { LivestickError, NotFoundError, ReadOnlyError, UsageError, fromSystemError } from '../../errors.ts';
import { FileDisk, type Disk } from '../../io/disk.ts';
import { inspectDevice, type DeviceInfo } from '../../io/device.ts';
import { probeSignatures } from '../../io/signature.ts';
import type { FileSystem, WritableFileSystem } from '../../fs/filesystem.ts';
import { HostFileSystem } from '../../fs/host/index.ts';
import { isWritable, openFileSystem } from '../../fs/registry.ts';
import { partitionDisk, readPartitionTable, type PartitionTable } from '../../fs/ptable/index.ts';
import { LuksVolume } from '../../xform/luks/index.ts';

export interface PartitionInfo {
  /** Linux numbering (GPT entry + 1; MBR primaries 1-4, logicals 5+). */
  readonly index: number;
  readonly startBytes: number;
  readonly sizeBytes: number;
  /** A GPT type GUID or an MBR type byte. */
  readonly type: string | number;
  readonly typeName: string;
  readonly name?: string;
  readonly uuid?: string;
}

export interface VolumeFilesystem {
  readonly type: string;
  readonly label?: string;
  readonly uuid?: string;
}

export interface OpenStickOptions {
  /** Open the image or device, and every filesystem on it, for writing. */
  readonly write?: boolean;
  /** Write a device even while it is mounted or holds this host's system. */
  readonly force?: boolean;
  /** Asked for the passphrase of a LUKS volume; without it LUKS volumes are reported, not opened. */
  readonly passphrase?: (volume: Volume) => Promise<Uint8Array | undefined>;
}

export class Volume {
  /** Filled by the first open: the filesystem's type, label and uuid. */
  filesystem: VolumeFilesystem | undefined;
  /** Why the volume could not be opened (or why it was not: LUKS without a passphrase). */
  problem: string | undefined;
  /** LUKS version when the volume is encrypted. */
  encryption: { readonly kind: 'LUKS'; readonly version: 1 | 2 } | undefined;
  #fs: FileSystem | undefined;
  #opened = false;
  #openError: unknown;
  #signatures: string[] | undefined;
  #payload: Disk | undefined;

  constructor(
    readonly stick: Stick,
    /** 'directory', 'disk', 'p1', or `PARENT:/path` for a nested volume. */
    readonly id: string,
    readonly disk: Disk | undefined,
    readonly info: { readonly partition?: PartitionInfo; readonly parent?: Volume; readonly path?: string; readonly host?: HostFileSystem },
  ) {}

  get partition(): PartitionInfo | undefined {
    return this.info.partition;
  }
  get parent(): Volume | undefined {
    return this.info.parent;
  }
  /** The file inside the parent volume a nested volume lives in. */
  get path(): string | undefined {
    return this.info.path;
  }
  get startBytes(): number {
    return this.info.partition?.startBytes ?? 0;
  }
  get sizeBytes(): number {
    return this.disk?.size ?? 0;
  }
  /** How people see this volume: `stick.img:p1`, `stick.img:p1:/LiveOS/x`, or the host directory. */
  get display(): string {
    return this.id === 'directory' ? this.stick.target : `${this.stick.target}:${this.id}`;
  }
  /** A file of this volume for messages: `stick.img:p1/LiveOS/x` (root.ts's form), a host path for a directory. */
  displayPath(path: string): string {
    if (this.info.host) return this.info.host.hostPath(path);
    return this.parent ? `${this.display}:${path}` : `${this.display}${path}`;
  }

  /** The signatures on the volume's bytes (LUKS, filesystems), probed once. */
  async signatures(): Promise<string[]> {
    if (this.#signatures) return this.#signatures;
    this.#signatures = this.disk ? (await probeSignatures(this.disk)).map((s) => s.name) : [];
    return this.#signatures;
  }

  /** The filesystem (writable when the stick was opened for writing and the format allows), or undefined when none is supported. Throws what the open threw. */
  async open(): Promise<FileSystem | undefined> {
    if (!this.#opened) {
      this.#opened = true;
      try {
        this.#fs = await this.#open();
        if (this.#fs) this.filesystem = { type: this.#fs.type, ...(this.#fs.label ? { label: this.#fs.label } : {}), ...(this.#fs.uuid ? { uuid: this.#fs.uuid } : {}) };
      } catch (err) {
        this.#openError = err;
        this.problem = err instanceof Error ? err.message : String(err);
      }
    }
    if (this.#openError !== undefined) throw this.#openError;
    return this.#fs;
  }

  /** As `open`, but a volume that cannot be opened gives undefined (its `problem` says why). */
  async tryOpen(): Promise<FileSystem | undefined> {
    try {
      return await this.open();
    } catch (err) {
      if (err instanceof LivestickError) return undefined;
      throw err;
    }
  }

  /** The filesystem for changes: a clear error when the stick was opened read-only or the format cannot be written. */
  async writable(): Promise<WritableFileSystem> {
    const fs = await this.open();
    if (!fs) throw new UsageError(`${this.display} holds no filesystem livestick can open`);
    if (isWritable(fs)) return fs;
    throw new ReadOnlyError(
      this.stick.write ? `${this.display} holds ${fs.type}, which livestick reads but cannot write yet` : `${this.display} was opened read-only`,
    );
  }

  async #open(): Promise<FileSystem | undefined> {
    if (this.info.host) return this.info.host;
    if (!this.disk) return undefined;
    const signatures = await this.signatures();
    const luks = signatures.find((s) => s === 'LUKS1' || s === 'LUKS2');
    let disk = this.disk;
    if (luks) {
      this.encryption = { kind: 'LUKS', version: luks === 'LUKS1' ? 1 : 2 };
      const ask = this.stick.options.passphrase;
      const pass = ask ? await ask(this) : undefined;
      if (!pass) {
        this.problem = `${luks}-encrypted; not opened (no passphrase given)`;
        return undefined;
      }
      try {
        this.#payload = await (await LuksVolume.open(disk)).openPayload(pass, { readOnly: !this.stick.write });
      } finally {
        pass.fill(0);
      }
      disk = this.#payload;
      this.stick.adopt(this.#payload);
      const inner = (await probeSignatures(disk)).map((s) => s.name);
      return this.#register(await openFileSystem(disk, inner, { write: this.stick.write }));
    }
    return this.#register(await openFileSystem(disk, signatures, { write: this.stick.write }));
  }

  #register(opened: { fs: FileSystem } | undefined): FileSystem | undefined {
    if (opened) this.stick.adoptFs(opened.fs);
    return opened?.fs;
  }

  /** Whether the volume is a LUKS volume whose payload was not opened. */
  get locked(): boolean {
    return this.encryption !== undefined && this.#payload === undefined;
  }
}

export class Stick {
  readonly volumes: Volume[] = [];
  /** The image's or device's size (0 for a directory). */
  sizeBytes = 0;
  readonly problems: string[] = [];
  readonly #disks: Disk[] = [];
  readonly #filesystems: FileSystem[] = [];
  readonly #nested = new Map<string, Promise<Volume | undefined>>();
  #closed = false;

  constructor(
    readonly target: string,
    readonly source: 'directory' | 'image' | 'device',
    readonly table: PartitionTable | undefined,
    readonly device: DeviceInfo | undefined,
    readonly options: OpenStickOptions,
  ) {}

  get write(): boolean {
    return Boolean(this.options.write);
  }

  /** The top-level volumes (partitions, the whole disk, or the directory). */
  get topLevel(): Volume[] {
    return this.volumes.filter((v) => v.parent === undefined);
  }

  /** A volume by id. */
  volume(id: string): Volume | undefined {
    return this.volumes.find((v) => v.id === id);
  }

  /** @internal */
  adopt(disk: Disk): void {
    this.#disks.push(disk);
  }
  /** @internal */
  adoptFs(fs: FileSystem): void {
    this.#filesystems.push(fs);
  }

  /**
   * A file inside `parent` as a nested volume (opened once; the same object for the same path), or
   * undefined when the parent has no filesystem or the path is not a regular file.
   */
  nested(parent: Volume, path: string): Promise<Volume | undefined> {
    const id = `${parent.id === 'directory' ? '' : parent.id}:${path}`;
    let v = this.#nested.get(id);
    if (!v) {
      v = this.#openNested(parent, path, id);
      this.#nested.set(id, v);
    }
    return v;
  }

  async #openNested(parent: Volume, path: string, id: string): Promise<Volume | undefined> {
    const fs = await parent.tryOpen();
    if (!fs) return undefined;
    try {
      if ((await fs.stat(path)).kind !== 'file') return undefined;
    } catch (err) {
      if (err instanceof LivestickError) return undefined;
      throw err;
    }
    let disk: Disk;
    try {
      disk = this.write && isWritable(fs) ? await fs.openFileForWriting(path) : await fs.openFile(path);
    } catch (err) {
      if (!(err instanceof LivestickError)) throw err;
      this.problems.push(`${parent.displayPath(path)}: ${err.message}`);
      return undefined;
    }
    this.#disks.push(disk);
    const v = new Volume(this, id, disk, { parent, path });
    this.volumes.push(v);
    return v;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    let first: unknown;
    // Nested filesystems were opened after their parents: close in reverse order, then the disks likewise.
    for (const fs of [...this.#filesystems].reverse()) {
      try {
        await fs.close();
      } catch (err) {
        first ??= err;
      }
    }
    for (const disk of [...this.#disks].reverse()) {
      try {
        await disk.close();
      } catch (err) {
        first ??= err;
      }
    }
    if (first !== undefined) throw first;
  }
}

/** Opens what the user named as a stick: its volumes, nothing mounted, nothing written unless `write`. */
export async function openStick(target: string, options: OpenStickOptions = {}): Promise<Stick> {
  let st;
  try {
    st = await stat(target);
  } catch (err) {
    throw fromSystemError(err, target, 'open it');
  }
  if (st.isDirectory()) {
    const stick = new Stick(target, 'directory', undefined, undefined, options);
    const host = new HostFileSystem(target, { writable: Boolean(options.write) });
    stick.volumes.push(new Volume(stick, 'directory', undefined, { host }));
    return stick;
  }
  if (!st.isFile() && !st.isBlockDevice()) throw new NotFoundError(`${target} is neither a directory, an image file nor a block device`, { file: target });
  const disk = await FileDisk.open(target, { readOnly: !options.write, force: options.force });
  try {
    const device = st.isBlockDevice() ? inspectDevice(target, disk.fd) : undefined;
    const table = await readPartitionTable(disk, device?.logicalSectorSize === 4096 ? { sectorSize: 4096 } : {});
    const stick = new Stick(target, device ? 'device' : 'image', table.kind === 'none' ? undefined : table, device, options);
    stick.adopt(disk);
    stick.sizeBytes = disk.size;
    stick.problems.push(...table.problems);
    if (table.kind === 'none') stick.volumes.push(new Volume(stick, 'disk', disk, {}));
    for (const p of table.partitions) {
      const partition: PartitionInfo = { index: p.index, startBytes: p.startBytes, sizeBytes: p.sizeBytes, type: p.type, typeName: p.typeName, ...(p.name ? { name: p.name } : {}), ...(p.uuid ? { uuid: p.uuid } : {}) };
      stick.volumes.push(new Volume(stick, `p${p.index}`, partitionDisk(disk, p, { readOnly: disk.readOnly }), { partition }));
    }
    return stick;
  } catch (err) {
    await disk.close();
    throw err;
  }
}

/** Runs `fn` on an opened stick and closes it (also when `fn` throws). */
export async function withStick<T>(target: string, options: OpenStickOptions, fn: (stick: Stick) => Promise<T>): Promise<T> {
  const stick = await openStick(target, options);
  let result: T;
  try {
    result = await fn(stick);
  } catch (err) {
    await stick.close().catch(() => {});
    throw err;
  }
  await stick.close();
  return result;
}
