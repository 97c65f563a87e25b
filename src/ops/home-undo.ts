/**
 * An undo log that makes a multi-write change to an image file all-or-nothing (home import, resize).
 *
 * Design notes
 * - `UndoDisk.begin(file, logPath)` creates LOG (exclusive) with a header holding the file's original
 *   size, and makes it durable (file + directory) before anything else happens.
 * - Writes are collected in memory by 4 KiB block. At a checkpoint (every ~32 MiB of changes, on
 *   `flush()`, and at `commit()`), the original contents of every block that has not been logged yet
 *   are appended to LOG as CRC-protected records and LOG is fsync'ed; only then are the new blocks
 *   written to the file. So any block of the file that differs from the original has its original
 *   in LOG. Blocks past the original size are not logged: rollback truncates them away. Nor are
 *   blocks the caller declares unread after a rollback (the filesystem's free blocks when the change
 *   began), so importing N bytes into free space logs metadata only, not N bytes.
 * - `commit()` makes the file durable and then deletes LOG (and syncs the directory): that is the
 *   instant the change happens. `rollback(path, logPath)` (run by every home command before it opens
 *   the image) puts every complete record back, truncates to the original size, syncs, deletes LOG.
 *   A torn record at the end of LOG (killed while appending) is ignored: its blocks were never
 *   written to the file. Rollback is idempotent, so a kill during rollback is repaired by the next.
 * - LOG names the process making the change (pid and a hash of the host name): while that process
 *   is alive on this host, other commands refuse to roll its change back (LOG doubles as a lock;
 *   creating it is exclusive, so two changes never run at once).
 * - For an encrypted home the log sits below LUKS: it holds ciphertext only.
 */
import { constants as fsConstants } from 'node:fs';
import { open, rm, stat, type FileHandle } from 'node:fs/promises';
import { hostname } from 'node:os';
import { dirname } from 'node:path';
import { crc32 } from 'node:zlib';
import { CorruptImageError, ExitCode, LivestickError, UsageError, fromSystemError } from '../errors.ts';
import { checkRange, type Disk, type FileDisk } from '../io/disk.ts';
import { view } from '../io/bytes.ts';

const MAGIC = 'LSUNDO01';
const HEADER_SIZE = 32;
const RECORD_HEAD = 16;
const BLOCK = 4096;
/** Changes held in memory before they go to the file; LIVESTICK_TEST_UNDO_CHECKPOINT (bytes) is for tests only. */
const CHECKPOINT_BYTES = Number(process.env.LIVESTICK_TEST_UNDO_CHECKPOINT) > 0 ? Number(process.env.LIVESTICK_TEST_UNDO_CHECKPOINT) : 32 << 20;
const MAX_RECORD = 1 << 20;

async function syncDir(path: string): Promise<void> {
  let fh: FileHandle | undefined;
  try {
    fh = await open(dirname(path), 'r');
    await fh.sync();
  } catch {
    // Not every host lets a directory be opened or synced (Windows); the rename/unlink still happened.
  } finally {
    await fh?.close();
  }
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
  readonly #file: FileDisk;
  readonly #log: FileHandle;
  readonly #logPath: string;
  readonly #origSize: number;
  #logEnd = HEADER_SIZE;
  readonly #pending = new Map<number, Uint8Array>();
  readonly #logged = new Set<number>();
  #unlogged: (block: number) => boolean = () => false;
  #done = false;

  private constructor(file: FileDisk, log: FileHandle, logPath: string, origSize: number) {
    this.#file = file;
    this.#log = log;
    this.#logPath = logPath;
    this.#origSize = origSize;
  }

  static async begin(file: FileDisk, logPath: string): Promise<UndoDisk> {
    let log: FileHandle;
    try {
      log = await open(logPath, fsConstants.O_RDWR | fsConstants.O_CREAT | fsConstants.O_EXCL, 0o600);
    } catch (err) {
      throw fromSystemError(err, logPath, 'create the undo log');
    }
    const head = new Uint8Array(HEADER_SIZE);
    head.set(new TextEncoder().encode(MAGIC), 0);
    view(head).setBigUint64(8, BigInt(file.size), true);
    view(head).setUint32(16, process.pid, true);
    view(head).setUint32(20, hostTag(), true);
    view(head).setUint32(24, crc32(head.subarray(0, 24)), true);
    try {
      await log.write(head, 0, HEADER_SIZE, 0);
      await log.sync();
    } catch (err) {
      await log.close();
      throw fromSystemError(err, logPath, 'write the undo log');
    }
    await syncDir(logPath);
    return new UndoDisk(file, log, logPath, file.size);
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
    await this.#file.resize(size);
  }

  async #appendRecord(offset: number, data: Uint8Array): Promise<void> {
    const head = new Uint8Array(RECORD_HEAD);
    const dv = view(head);
    dv.setBigUint64(0, BigInt(offset), true);
    dv.setUint32(8, data.byteLength, true);
    dv.setUint32(12, recordCrc(offset, data), true);
    try {
      await this.#log.write(head, 0, RECORD_HEAD, this.#logEnd);
      await this.#log.write(data, 0, data.byteLength, this.#logEnd + RECORD_HEAD);
    } catch (err) {
      throw fromSystemError(err, this.#logPath, 'write the undo log');
    }
    this.#logEnd += RECORD_HEAD + data.byteLength;
  }

  async #checkpoint(): Promise<void> {
    if (this.#pending.size === 0) return;
    const blocks = [...this.#pending.keys()].sort((a, b) => a - b);
    const origBlocks = Math.ceil(this.#origSize / BLOCK);
    // 1. Originals of blocks not yet logged, in runs of contiguous blocks.
    const toLog = blocks.filter((b) => b < origBlocks && !this.#logged.has(b) && !this.#unlogged(b));
    for (let i = 0; i < toLog.length; ) {
      let j = i + 1;
      while (j < toLog.length && toLog[j] === toLog[j - 1]! + 1 && (j - i) * BLOCK < MAX_RECORD) j++;
      const start = toLog[i]! * BLOCK;
      const len = Math.min((j - i) * BLOCK, this.#origSize - start);
      const orig = new Uint8Array(len);
      await this.#file.read(orig, start);
      await this.#appendRecord(start, orig);
      for (let k = i; k < j; k++) this.#logged.add(toLog[k]!);
      i = j;
    }
    if (toLog.length > 0) {
      try {
        await this.#log.sync();
      } catch (err) {
        throw fromSystemError(err, this.#logPath, 'flush the undo log');
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
  }

  /** Makes the change durable and final. */
  async commit(): Promise<void> {
    await this.flush();
    this.#done = true;
    await this.#log.close();
    await rm(this.#logPath, { force: true });
    await syncDir(this.#logPath);
  }

  /** Abandons the change: nothing pending is written, and what was written is undone. */
  async abort(imagePath: string): Promise<void> {
    this.#pending.clear();
    this.#done = true;
    await this.#log.close().catch(() => {});
    await this.#file.close().catch(() => {});
    await rollbackUndoLog(imagePath, this.#logPath);
  }

  /** Closes the log without committing (the next rollback undoes the change). */
  async close(): Promise<void> {
    if (!this.#done) {
      this.#done = true;
      await this.#log.close();
    }
  }
}

/** Undoes an interrupted change if `logPath` exists. Returns whether there was one. */
export async function rollbackUndoLog(imagePath: string, logPath: string): Promise<boolean> {
  try {
    await stat(logPath);
  } catch {
    return false;
  }
  let log: FileHandle;
  try {
    log = await open(logPath, 'r');
  } catch (err) {
    throw fromSystemError(err, logPath, 'open the undo log');
  }
  let image: FileHandle | undefined;
  try {
    const logSize = (await log.stat()).size;
    const head = new Uint8Array(HEADER_SIZE);
    const { bytesRead } = await log.read(head, 0, HEADER_SIZE, 0);
    const dv = view(head);
    const valid = bytesRead === HEADER_SIZE && new TextDecoder().decode(head.subarray(0, 8)) === MAGIC && dv.getUint32(24, true) === crc32(head.subarray(0, 24));
    const pid = valid ? dv.getUint32(16, true) : 0;
    if (valid && pid !== process.pid && dv.getUint32(20, true) === hostTag() && processAlive(pid)) {
      throw new LivestickError('FAILURE', ExitCode.failure, `another livestick process (pid ${pid}) is changing this home image; try again when it has finished`, { file: imagePath });
    }
    if (!valid) {
      // Killed before the header was durable: nothing was written to the image yet.
      await log.close();
      await rm(logPath, { force: true });
      await syncDir(logPath);
      return true;
    }
    const origSize = Number(dv.getBigUint64(8, true));
    try {
      image = await open(imagePath, 'r+');
    } catch (err) {
      throw fromSystemError(err, imagePath, 'open the image to undo an interrupted change');
    }
    let at = HEADER_SIZE;
    const rh = new Uint8Array(RECORD_HEAD);
    while (at + RECORD_HEAD <= logSize) {
      await log.read(rh, 0, RECORD_HEAD, at);
      const rdv = view(rh);
      const offset = Number(rdv.getBigUint64(0, true));
      const len = rdv.getUint32(8, true);
      if (len === 0 || len > MAX_RECORD || at + RECORD_HEAD + len > logSize || offset + len > origSize) break;
      const data = new Uint8Array(len);
      await log.read(data, 0, len, at + RECORD_HEAD);
      if (recordCrc(offset, data) !== rdv.getUint32(12, true)) break;
      await image.write(data, 0, len, offset);
      at += RECORD_HEAD + len;
    }
    if ((await image.stat()).size < origSize) {
      throw new CorruptImageError('undo-log', 'size', `the image is smaller (${(await image.stat()).size} bytes) than before the interrupted change (${origSize})`);
    }
    await image.truncate(origSize);
    await image.sync();
  } finally {
    await image?.close();
    await log.close().catch(() => {});
  }
  await rm(logPath, { force: true });
  await syncDir(logPath);
  return true;
}
