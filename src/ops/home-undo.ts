/**
 * An undo log that makes a multi-write change to an image file all-or-nothing (home import, resize).
 *
 * Design notes
 * - `UndoDisk.begin(file, place)` creates LOG (exclusive) with a header holding the file's original
 *   size, and makes it durable (file + directory) before anything else happens.
 * - Writes are collected in memory by 4 KiB block. At a checkpoint (every ~32 MiB of changes, on
 *   `flush()`, and at `commit()`), the original contents of every block that has not been logged yet
 *   are appended to LOG as CRC-protected records and LOG is fsync'ed; only then are the new blocks
 *   written to the file. So any block of the file that differs from the original has its original
 *   in LOG. Blocks past the original size are not logged: rollback truncates them away. Nor are
 *   blocks the caller declares unread after a rollback (the filesystem's free blocks when the change
 *   began), so importing N bytes into free space logs metadata only, not N bytes.
 * - `commit()` makes the file durable and then deletes LOG (and syncs the directory): that is the
 *   instant the change happens. `rollbackUndoLog(place)` (run by every home command before it opens
 *   the image) puts every complete record back, truncates to the original size, syncs, deletes LOG.
 *   A torn record at the end of LOG (killed while appending) is ignored: its blocks were never
 *   written to the file. Rollback is idempotent, so a kill during rollback is repaired by the next.
 * - LOG names the process making the change (pid and a hash of the host name): while that process
 *   is alive on this host, other commands refuse to roll its change back (LOG doubles as a lock;
 *   creating it is exclusive, so two changes never run at once).
 * - For an encrypted home the log sits below LUKS: it holds ciphertext only.
 * - LOG sits beside the image on the filesystem holding both (`UndoPlace`): a host directory, or a
 *   stick image's FAT/exFAT partition, through the WritableFileSystem only (createFile,
 *   openFileForWriting, resize, unlink, flush), so the same crash semantics hold there. LOG grows once
 *   per checkpoint (a resize, which reads as zeros: a record of length 0 ends the log), and the
 *   filesystem is flushed after LOG and after the image (FAT keeps a file's size in its directory entry).
 */
import { basename, dirname, resolve } from 'node:path';
import { hostname } from 'node:os';
import { crc32 } from 'node:zlib';
import { CorruptImageError, ExitCode, LivestickError, UsageError, fromSystemError } from '../errors.ts';
import { FileDisk, checkRange, type Disk } from '../io/disk.ts';
import { SimulatedCrash } from '../io/faults.ts';
import { view } from '../io/bytes.ts';
import type { WritableFile, WritableFileSystem } from '../fs/filesystem.ts';
import { HostFileSystem } from '../fs/host/index.ts';
import { fileExists, removeIfExists } from './files.ts';

const MAGIC = 'LSUNDO01';
const HEADER_SIZE = 32;
const RECORD_HEAD = 16;
const BLOCK = 4096;
/** Changes held in memory before they go to the file; LIVESTICK_TEST_UNDO_CHECKPOINT (bytes) is for tests only. */
const CHECKPOINT_BYTES = Number(process.env.LIVESTICK_TEST_UNDO_CHECKPOINT) > 0 ? Number(process.env.LIVESTICK_TEST_UNDO_CHECKPOINT) : 32 << 20;
const MAX_RECORD = 1 << 20;

/**
 * Where a change's undo log lives: beside its image, on the filesystem holding both (a host
 * directory, or a stick's FAT/exFAT partition). Paths are the filesystem's own.
 */
export interface UndoPlace {
  readonly fs: WritableFileSystem;
  readonly image: string;
  readonly log: string;
  /** A file's name for messages. */
  display(path: string): string;
}

/** The place of a host image file and its log, which sit in one host directory. */
export function hostUndoPlace(imagePath: string, logPath: string): UndoPlace {
  const dir = dirname(logPath);
  if (resolve(dirname(imagePath)) !== resolve(dir)) throw new UsageError(`the undo log ${logPath} must sit beside its image ${imagePath}`);
  const fs = new HostFileSystem(dir, { writable: true });
  const image = `/${basename(imagePath)}`;
  const log = `/${basename(logPath)}`;
  return { fs, image, log, display: (p) => (p === image ? imagePath : p === log ? logPath : fs.hostPath(p)) };
}

/** A failure of a step on the log or the image as a typed error naming the file (a simulated crash passes through). */
function typed(err: unknown, at: UndoPlace, path: string, action: string): Error {
  if (err instanceof SimulatedCrash) return err;
  const shown = at.display(path);
  if (err instanceof LivestickError && err.file === path) err.file = shown;
  return fromSystemError(err, shown, action);
}

function hostTag(): number {
  return crc32(hostname());
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function recordCrc(offset: number, data: Uint8Array): number {
  const head = new Uint8Array(12);
  const dv = view(head);
  dv.setBigUint64(0, BigInt(offset), true);
  dv.setUint32(8, data.byteLength, true);
  return crc32(data, crc32(head));
}

export class UndoDisk implements Disk {
  readonly readOnly = false;
  readonly #file: WritableFile;
  readonly #log: WritableFile;
  readonly #at: UndoPlace;
  readonly #origSize: number;
  #logEnd = HEADER_SIZE;
  readonly #pending = new Map<number, Uint8Array>();
  readonly #logged = new Set<number>();
  #unlogged: (block: number) => boolean = () => false;
  #done = false;

  private constructor(file: WritableFile, log: WritableFile, at: UndoPlace, origSize: number) {
    this.#file = file;
    this.#log = log;
    this.#at = at;
    this.#origSize = origSize;
  }

  /**
   * Starts a change of `file` (the image at `at.image`, open for writing) with a new log at
   * `at.log`; a host path string is a log beside the host image `file` (a FileDisk).
   */
  static async begin(file: WritableFile, at: UndoPlace | string): Promise<UndoDisk> {
    let place: UndoPlace;
    if (typeof at === 'string') {
      if (!(file instanceof FileDisk)) throw new UsageError('a host undo log path needs the image as a host file');
      place = hostUndoPlace(file.path, at);
    } else place = at;
    let log: WritableFile;
    try {
      log = await place.fs.createFile(place.log, { size: HEADER_SIZE, mode: 0o600 });
    } catch (err) {
      throw typed(err, place, place.log, 'create the undo log');
    }
    const head = new Uint8Array(HEADER_SIZE);
    head.set(new TextEncoder().encode(MAGIC), 0);
    view(head).setBigUint64(8, BigInt(file.size), true);
    view(head).setUint32(16, process.pid, true);
    view(head).setUint32(20, hostTag(), true);
    view(head).setUint32(24, crc32(head.subarray(0, 24)), true);
    try {
      await log.write(head, 0);
      await log.flush();
      await place.fs.flush();
    } catch (err) {
      await log.close().catch(() => {});
      throw typed(err, place, place.log, 'write the undo log');
    }
    return new UndoDisk(file, log, place, file.size);
  }

  get size(): number {
    return this.#file.size;
  }

  /** Bytes of original contents saved so far. */
  get loggedBytes(): number {
    return this.#logEnd - HEADER_SIZE;
  }

  /**
   * Tells which 4 KiB blocks of the file need no saving: those whose contents nobody reads after a
   * rollback (blocks the filesystem had free when the change began). Must be decided before any write.
   */
  setUnlogged(predicate: (block: number) => boolean): void {
    this.#unlogged = predicate;
  }

  async read(buf: Uint8Array, offset: number): Promise<void> {
    checkRange(this, offset, buf.byteLength, 'read');
    await this.#file.read(buf, offset);
    if (this.#pending.size === 0) return;
    const end = offset + buf.byteLength;
    for (let b = Math.floor(offset / BLOCK); b * BLOCK < end; b++) {
      const data = this.#pending.get(b);
      if (!data) continue;
      const from = Math.max(offset, b * BLOCK);
      const to = Math.min(end, (b + 1) * BLOCK);
      buf.set(data.subarray(from - b * BLOCK, to - b * BLOCK), from - offset);
    }
  }

  async write(buf: Uint8Array, offset: number): Promise<void> {
    if (this.#done) throw new UsageError('the change is already finished');
    checkRange(this, offset, buf.byteLength, 'write');
    const end = offset + buf.byteLength;
    for (let b = Math.floor(offset / BLOCK); b * BLOCK < end; b++) {
      const start = b * BLOCK;
      const from = Math.max(offset, start);
      const to = Math.min(end, start + BLOCK);
      let data = this.#pending.get(b);
      if (!data) {
        data = new Uint8Array(BLOCK);
        if (from > start || to < start + BLOCK) {
          const have = Math.min(BLOCK, this.size - start);
          await this.read(data.subarray(0, have), start);
        }
        this.#pending.set(b, data);
      }
      data.set(buf.subarray(from - offset, to - offset), from - start);
    }
    if (this.#pending.size * BLOCK >= CHECKPOINT_BYTES) await this.#checkpoint();
  }

  /** Grows the file (the new area is not logged: rollback truncates it away). */
  async resize(size: number): Promise<void> {
    if (size < this.#file.size) throw new UsageError('shrinking is not supported');
    try {
      await this.#file.resize(size);
    } catch (err) {
      throw typed(err, this.#at, this.#at.image, `grow it to ${size} bytes`);
    }
  }

  async #appendRecord(offset: number, data: Uint8Array): Promise<void> {
    const head = new Uint8Array(RECORD_HEAD);
    const dv = view(head);
    dv.setBigUint64(0, BigInt(offset), true);
    dv.setUint32(8, data.byteLength, true);
    dv.setUint32(12, recordCrc(offset, data), true);
    try {
      await this.#log.write(head, this.#logEnd);
      await this.#log.write(data, this.#logEnd + RECORD_HEAD);
    } catch (err) {
      throw typed(err, this.#at, this.#at.log, 'write the undo log');
    }
    this.#logEnd += RECORD_HEAD + data.byteLength;
  }

  async #checkpoint(): Promise<void> {
    if (this.#pending.size === 0) return;
    const blocks = [...this.#pending.keys()].sort((a, b) => a - b);
    const origBlocks = Math.ceil(this.#origSize / BLOCK);
    // 1. Originals of blocks not yet logged, in runs of contiguous blocks.
    const toLog = blocks.filter((b) => b < origBlocks && !this.#logged.has(b) && !this.#unlogged(b));
    const records: { first: number; count: number; start: number; len: number }[] = [];
    for (let i = 0; i < toLog.length; ) {
      let j = i + 1;
      while (j < toLog.length && toLog[j] === toLog[j - 1]! + 1 && (j - i) * BLOCK < MAX_RECORD) j++;
      const start = toLog[i]! * BLOCK;
      records.push({ first: i, count: j - i, start, len: Math.min((j - i) * BLOCK, this.#origSize - start) });
      i = j;
    }
    if (records.length > 0) {
      // The log grows once per checkpoint (one allocation where files are allocated in full), then takes the records.
      const end = records.reduce((at, r) => at + RECORD_HEAD + r.len, this.#logEnd);
      if (end > this.#log.size) {
        try {
          await this.#log.resize(end);
        } catch (err) {
          throw typed(err, this.#at, this.#at.log, 'grow the undo log');
        }
      }
      for (const r of records) {
        const orig = new Uint8Array(r.len);
        await this.#file.read(orig, r.start);
        await this.#appendRecord(r.start, orig);
        for (let k = r.first; k < r.first + r.count; k++) this.#logged.add(toLog[k]!);
      }
      try {
        await this.#log.flush();
        await this.#at.fs.flush();
      } catch (err) {
        throw typed(err, this.#at, this.#at.log, 'flush the undo log');
      }
    }
    // 2. Now the new contents may go to the file.
    for (let i = 0; i < blocks.length; ) {
      let j = i + 1;
      while (j < blocks.length && blocks[j] === blocks[j - 1]! + 1 && (j - i) * BLOCK < MAX_RECORD) j++;
      const start = blocks[i]! * BLOCK;
      const len = Math.min((j - i) * BLOCK, this.size - start);
      const out = new Uint8Array(len);
      for (let k = i; k < j; k++) {
        const data = this.#pending.get(blocks[k]!)!;
        const at = (k - i) * BLOCK;
        out.set(data.subarray(0, Math.min(BLOCK, len - at)), at);
      }
      await this.#file.write(out, start);
      i = j;
    }
    this.#pending.clear();
  }

  async flush(): Promise<void> {
    await this.#checkpoint();
    await this.#file.flush();
    // The image's size lives in its directory entry where the filesystem is FAT or exFAT.
    await this.#at.fs.flush();
  }

  /** Makes the change durable and final. */
  async commit(): Promise<void> {
    await this.flush();
    this.#done = true;
    await this.#log.close();
    try {
      await removeIfExists(this.#at.fs, this.#at.log);
      await this.#at.fs.flush();
    } catch (err) {
      throw typed(err, this.#at, this.#at.log, 'remove the undo log');
    }
  }

  /** Abandons the change: nothing pending is written, and what was written is undone. */
  async abort(): Promise<void> {
    this.#pending.clear();
    this.#done = true;
    await this.#log.close().catch(() => {});
    await this.#file.close().catch(() => {});
    await rollbackUndoLog(this.#at);
  }

  /** Closes the log without committing (the next rollback undoes the change). */
  async close(): Promise<void> {
    if (!this.#done) {
      this.#done = true;
      await this.#log.close();
    }
  }
}

/**
 * Undoes an interrupted change if its log exists: `at` names the image and log on their filesystem,
 * or two host paths are given. Returns whether there was one.
 */
export async function rollbackUndoLog(at: UndoPlace): Promise<boolean>;
export async function rollbackUndoLog(imagePath: string, logPath: string): Promise<boolean>;
export async function rollbackUndoLog(at: UndoPlace | string, logPath?: string): Promise<boolean> {
  const place = typeof at === 'string' ? hostUndoPlace(at, logPath!) : at;
  const { fs } = place;
  if (!(await fileExists(fs, place.log))) return false;
  let log: Disk;
  try {
    log = await fs.openFile(place.log);
  } catch (err) {
    throw typed(err, place, place.log, 'open the undo log');
  }
  let logOpen = true;
  let image: WritableFile | undefined;
  try {
    const logSize = log.size;
    const head = new Uint8Array(HEADER_SIZE);
    const got = Math.min(HEADER_SIZE, logSize);
    await log.read(head.subarray(0, got), 0);
    const dv = view(head);
    const valid = got === HEADER_SIZE && new TextDecoder().decode(head.subarray(0, 8)) === MAGIC && dv.getUint32(24, true) === crc32(head.subarray(0, 24));
    const pid = valid ? dv.getUint32(16, true) : 0;
    if (valid && pid !== process.pid && dv.getUint32(20, true) === hostTag() && processAlive(pid)) {
      throw new LivestickError('FAILURE', ExitCode.failure, `another livestick process (pid ${pid}) is changing this home image; try again when it has finished`, { file: place.display(place.image) });
    }
    if (valid) {
      const origSize = Number(dv.getBigUint64(8, true));
      try {
        image = await fs.openFileForWriting(place.image);
      } catch (err) {
        throw typed(err, place, place.image, 'open the image to undo an interrupted change');
      }
      if (image.size < origSize) {
        throw new CorruptImageError('undo-log', 'size', `the image is smaller (${image.size} bytes) than before the interrupted change (${origSize})`, undefined, { file: place.display(place.image) });
      }
      let at = HEADER_SIZE;
      const rh = new Uint8Array(RECORD_HEAD);
      while (at + RECORD_HEAD <= logSize) {
        await log.read(rh, at);
        const rdv = view(rh);
        const offset = Number(rdv.getBigUint64(0, true));
        const len = rdv.getUint32(8, true);
        if (len === 0 || len > MAX_RECORD || at + RECORD_HEAD + len > logSize || offset + len > origSize) break;
        const data = new Uint8Array(len);
        await log.read(data, at + RECORD_HEAD);
        if (recordCrc(offset, data) !== rdv.getUint32(12, true)) break;
        await image.write(data, offset);
        at += RECORD_HEAD + len;
      }
      // Also at the same size: where the format keeps a file's clusters apart from its size (FAT), a
      // grow cut before the size was written leaves clusters past it, which this gives back.
      await image.resize(origSize);
      await image.flush();
    }
    // Else killed before the header was durable: nothing was written to the image yet.
    await log.close();
    logOpen = false;
    await removeIfExists(fs, place.log);
    await fs.flush();
  } catch (err) {
    throw typed(err, place, place.image, 'undo an interrupted change');
  } finally {
    await image?.close().catch(() => {});
    if (logOpen) await log.close().catch(() => {});
  }
  return true;
}
