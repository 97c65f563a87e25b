/**
 * The persistent /home image: MEDIUM/LiveOS/home.img, which Fedora's live initramfs mounts at /home
 * (plain ext4, or LUKS holding ext4, as livecd-iso-to-disk --home-size-mb [--unencrypted-home] makes
 * it). Create, describe, list, read, import, export (backup), re-key and grow it without root.
 *
 * Design notes
 * - Where: the target is what the medium commands take (a directory holding LiveOS/, a stick image,
 *   a device: ops/root.ts MediumRoot, whose filesystem holds LiveOS/home.img), or the home image file
 *   itself — told apart by content: a file starting with an ext4 or LUKS header and holding no
 *   LiveOS/ (or one holding no partition table and no filesystem at all) is the home image. Every
 *   file is reached through the root's FileSystem: on a FAT/exFAT stick the image is a Disk of its
 *   clusters (openMediumFile), the undo log and the temporary image are files beside it. A stick is
 *   opened read-only for info/ls/cat/export and read-write for the rest, or when a reading command
 *   finds an interrupted change to undo (a dirty volume, an undo log, a journal to replay).
 * - Stack: the image file (→ UndoDisk while changing) → LuksVolume payload (CryptDisk) when encrypted →
 *   Ext4. The passphrase is asked for (a callback) only when the image is encrypted and the command
 *   needs the filesystem; `info` without one shows what the LUKS header tells.
 * - Create builds home.img.livestick-new and renames it into place: a crash leaves either no home or
 *   the old one, never half an image. Where renames are not atomic (FAT, exFAT) a crash inside the
 *   rename leaves both names on the new image; the next home command drops the temporary name (the
 *   format frees nothing the other name holds). Space is checked on the medium's filesystem: FAT's
 *   4 GiB − 1 limit, and on a stick the full size (files are allocated in full, beside the old one).
 *   Plain images are sparse (the file reads as zeros, so mkfs skips the inode tables); encrypted
 *   ones are sparse too except for what mkfs writes, since zeros on disk decrypt to noise the
 *   filesystem must not trust. 4 KiB blocks (LUKS2 uses 4096-byte sectors),
 *   default mount options user_xattr,acl (what livecd-iso-to-disk sets with tune2fs), no reserved
 *   blocks (one user's home). livecd-iso-to-disk runs `mkfs.ext4 -j` without a label and the live
 *   system finds the image by its path (LiveOS/home.img, mounted at /home), so the label is
 *   cosmetic: livestick's default is "home".
 * - Import is one jbd2 transaction (fs/ext4/jbd2, JournaledDisk): after a crash the kernel, e2fsck
 *   or the next livestick home command (every one replays a journal that needs recovery first) sees
 *   the old or the new tree. The undo log beside the image (home-undo.ts) is then an empty lock; it
 *   carries the change only when the journal cannot (too much metadata, an unusable journal), and
 *   always for resize (the file and the LUKS payload grow first, which only truncation undoes): a
 *   crash then leaves the old filesystem once the next livestick home command has rolled it back. Passwd relies on the LUKS layer's ordering (new keyslot area,
 *   metadata swap, then wipe): the old or the new passphrase always opens the volume.
 * - Ownership: live users are uid/gid 1000 on Fedora (liveuser), so imported files are owned by
 *   1000:1000 unless the caller keeps the host owners or names others.
 * - Export is a backup to a new (or empty) host directory: names are checked (no '/', '.', '..'),
 *   every node is created with O_EXCL / mkdir in directories export itself made, symlinks are
 *   created but never followed, so nothing is written outside DEST. Device nodes, FIFOs and sockets
 *   are skipped (counted); setuid/setgid bits are dropped; hard links are kept.
 */
import { chmod, lchown, link as hostLink, lstat, lutimes, mkdir, open, readdir, readlink, stat, symlink, utimes } from 'node:fs/promises';
import { basename, dirname, join, posix } from 'node:path';
import { FAT_MAX_FILE_BYTES, hostSpace, newImageVerdict, type HostSpace } from '../io/host.ts';
import { AlreadyExistsError, ExitCode, LivestickError, NotFoundError, UsageError, fromSystemError } from '../errors.ts';
import { formatSize } from '../io/bytes.ts';
import { NoSpaceError as Ext4NoSpaceError } from '../fs/ext4/errors.ts';
import { FileDisk, type Disk } from '../io/disk.ts';
import { SimulatedCrash } from '../io/faults.ts';
import { probeSignatures } from '../io/signature.ts';
import { HostXattrWriter } from '../io/xattr.ts';
import type { FileSystem, WritableFile, WritableFileSystem } from '../fs/filesystem.ts';
import { readPartitionTable } from '../fs/ptable/index.ts';
import { Ext4, Ext4Writer, growFs, listDirectory, mkfs, type LsEntry } from '../fs/ext4/index.ts';
import { copyHostXattrs, hostFileChunks, timestampFromNs } from '../fs/ext4/copyin.ts';
import type { Timestamp } from '../fs/ext4/inode.ts';
import { formatUuid as formatExt4Uuid } from '../fs/ext4/superblock.ts';
import { BgFlags, hasGroupChecksums } from '../fs/ext4/group.ts';
import { JournaledDisk, replayJournal, type CommitStep, type ReplayResult } from '../fs/ext4/jbd2/index.ts';
import { LUKS2_DEFAULT_DATA_OFFSET, LuksVolume, WrongPassphraseError, type KdfChoice, type KdfLimits } from '../xform/luks/index.ts';
import { imageKind, liveosDir, openMediumFile, TEMP_MARK } from './medium.ts';
import { directoryRoot, fsJoin, openMediumRoot, type MediumRoot } from './root.ts';
import { fileExists, removeIfExists } from './files.ts';
import type { MediumOptions } from './merge.ts';
import { UndoDisk, rollbackUndoLog, type UndoPlace } from './home-undo.ts';

export const HOME_NAME = 'home.img';
export const HOME_LABEL = 'home';
export const LIVE_UID = 1000;
export const LIVE_GID = 1000;
const MiB = 2 ** 20;
const MIN_PLAIN = 8 * MiB;
const MIN_ENCRYPTED = LUKS2_DEFAULT_DATA_OFFSET + MIN_PLAIN;

export type PassphraseSource = () => Promise<Uint8Array>;

/**
 * How to reach the home: the passphrase of an encrypted one, and for a stick image or device the
 * partition holding LiveOS/ (when several do) and whether a device in use may be written.
 */
export interface HomeAccess extends MediumOptions {
  /** Called when the image is encrypted and the filesystem is needed; the caller wipes the bytes. */
  readonly passphrase?: PassphraseSource;
  /** How many times a wrong passphrase is asked again (a prompt: 3); 1 by default. */
  readonly tries?: number;
  /** Told after each wrong passphrase that will be asked again. */
  readonly onWrongPassphrase?: (attempt: number) => void;
  readonly limits?: KdfLimits;
}

const undoLogOf = (image: string): string => `${image}${TEMP_MARK}undo`;
const newImageOf = (image: string): string => `${image}${TEMP_MARK}new`;

// ---------------------------------------------------------------------------------------------------
// Where the home is

/**
 * The host directory of a home image named directly, as a medium root whose one file of interest is
 * that image: its name (and its log's) are shown as the user spelled it.
 */
function imageFileRoot(image: string): MediumRoot {
  const dir = directoryRoot(dirname(image), { write: true });
  const own = `/${basename(image)}`;
  return {
    target: image,
    source: 'directory',
    volume: 'directory',
    fs: dir.fs,
    hostDir: dir.hostDir,
    canWrite: true,
    display: (path) => (path === own || path.startsWith(`${own}${TEMP_MARK}`) ? `${image}${path.slice(own.length)}` : dir.display(path)),
    writable: () => dir.writable(),
    close: () => dir.close(),
  };
}

async function ext4HoldsLiveos(disk: Disk): Promise<boolean> {
  try {
    return (await (await Ext4.open(disk)).stat('/LiveOS')).kind === 'dir';
  } catch (err) {
    if (err instanceof LivestickError) return false;
    throw err;
  }
}

/**
 * Whether `target` is the home image itself (or where to create one), by content: a file starting
 * with an ext4 or LUKS header and holding no LiveOS/, or a file livestick recognises nothing in (no
 * partition table, no filesystem: its errors then say what is wrong with it as a home image).
 * Anything else — a directory, a stick image, a device — is a medium holding LiveOS/home.img.
 */
async function namesHomeImage(target: string): Promise<boolean> {
  let st;
  try {
    st = await stat(target);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return true;
    throw fromSystemError(err, target, 'find the home image');
  }
  if (!st.isFile()) return false;
  const disk = await FileDisk.open(target, { readOnly: true });
  try {
    const kind = await imageKind(disk);
    if (kind === 'LUKS') return true;
    if (kind === 'ext4') return !(await ext4HoldsLiveos(disk));
    const table = await readPartitionTable(disk).catch(() => undefined);
    return table?.kind === 'none' && (await probeSignatures(disk)).length === 0;
  } finally {
    await disk.close();
  }
}

/**
 * The home image's place: the filesystem holding it (`root`: a host directory, or the FAT/exFAT
 * partition of a stick image or device) and its path there. A stick is opened read-write only for a
 * command that changes the home, or when a reading one finds an interrupted change to undo.
 */
class HomePlace {
  #write: boolean;
  private constructor(
    readonly target: string,
    public root: MediumRoot,
    readonly path: string,
    write: boolean,
    private readonly options: HomeAccess,
  ) {
    this.#write = write;
  }

  static async open(target: string, options: HomeAccess, write: boolean): Promise<HomePlace> {
    if (await namesHomeImage(target)) {
      if (options.partition !== undefined) throw new UsageError(`--partition is for a stick image or a device; ${target} is a home image`);
      return new HomePlace(target, imageFileRoot(target), `/${basename(target)}`, true, options);
    }
    const root = await HomePlace.#openRoot(target, options, write);
    try {
      return new HomePlace(target, root, fsJoin(await liveosDir(root), HOME_NAME), write || root.source === 'directory', options);
    } catch (err) {
      await root.close().catch(() => {});
      throw err;
    }
  }

  /** A directory is always opened writable (as before: reading commands undo interrupted changes there). */
  static async #openRoot(target: string, options: HomeAccess, write: boolean): Promise<MediumRoot> {
    const isDirectory = await stat(target).then((st) => st.isDirectory(), () => false);
    return openMediumRoot(target, { write: write || isDirectory, force: options.forceDevice, partition: options.partition });
  }

  get shown(): string {
    return this.root.display(this.path);
  }
  get log(): string {
    return undoLogOf(this.path);
  }
  get newImage(): string {
    return newImageOf(this.path);
  }

  /** The filesystem for changes (a clear error where it cannot be written). */
  writable(): WritableFileSystem {
    return this.root.writable();
  }

  undoPlace(): UndoPlace {
    return { fs: this.writable(), image: this.path, log: this.log, display: (p) => this.root.display(p) };
  }

  /** Reopens a stick opened read-only for writing (nothing of it may be open). */
  async ensureWritable(): Promise<void> {
    if (this.#write) return;
    await this.root.close();
    this.root = await openMediumRoot(this.target, { write: true, force: this.options.forceDevice, partition: this.options.partition });
    this.#write = true;
  }

  close(): Promise<void> {
    return this.root.close();
  }
}

/** Opens the home's place, runs `fn`, and closes it (also when `fn` throws). */
async function withPlace<T>(target: string, options: HomeAccess, write: boolean, fn: (place: HomePlace) => Promise<T>): Promise<T> {
  const place = await HomePlace.open(target, options, write);
  let result: T;
  try {
    result = await fn(place);
  } catch (err) {
    await place.close().catch(() => {});
    throw err;
  }
  await place.close();
  return result;
}

/**
 * An error about `path` (or one of `also`, files beside it): a file it names by its path on the
 * medium's filesystem is renamed as the user sees it, and one naming none gets `path`.
 */
function named(err: unknown, root: MediumRoot, path: string, also: readonly string[] = []): unknown {
  if (!(err instanceof LivestickError)) return err;
  for (const p of [path, ...also]) if (err.file === p) err.file = root.display(p);
  return err.withFile(root.display(path));
}

async function isFileOn(fs: FileSystem, path: string): Promise<boolean> {
  return (await fileExists(fs, path)) && (await fs.stat(path)).kind === 'file';
}

/**
 * The home image of a medium (a directory, a stick image or a device), or `target` itself when it is
 * a home image file; for a stick, the name shown is IMAGE:pN/LiveOS/home.img.
 */
export async function homePath(target: string, options: MediumOptions = {}): Promise<string> {
  return withPlace(target, options, false, async (place) => place.shown);
}

/**
 * Checks the image exists and undoes what a dead process left: a dirty stick volume, a change under
 * the undo log, and (where renames are not atomic) the temporary name of a `home create` cut inside
 * its rename, which then names the new image's data too. Stray temporary files of an atomic host
 * are left to the next `home create`, as they always were.
 */
async function existingHome(place: HomePlace): Promise<{ recovered: boolean }> {
  if (!(await isFileOn(place.root.fs, place.path))) throw new NotFoundError(`no home image: ${place.shown} does not exist (create it with "livestick home create")`, { file: place.shown });
  // A volume a crash left dirty is opened for writing: that open repairs what the crash left.
  if (place.root.fs.dirty === true) await place.ensureWritable();
  let recovered = false;
  if (await fileExists(place.root.fs, place.log)) {
    await place.ensureWritable();
    recovered = await rollbackUndoLog(place.undoPlace());
  }
  if ((place.root.fs as Partial<WritableFileSystem>).renameIsAtomic === false && (await fileExists(place.root.fs, place.newImage))) {
    await place.ensureWritable();
    const fs = place.writable();
    try {
      // The contract of non-atomic renames: unlinking either name never frees data the other still names.
      await removeIfExists(fs, place.newImage);
      await fs.flush();
    } catch (err) {
      throw named(err, place.root, place.path, [place.newImage]);
    }
  }
  return { recovered };
}

// ---------------------------------------------------------------------------------------------------
// Opening

interface Session {
  readonly place: HomePlace;
  /** The image's name for results and messages. */
  readonly path: string;
  readonly recovered: boolean;
  /** The image file (writable in place for a change). */
  readonly file: Disk;
  readonly undo: UndoDisk | undefined;
  /** The journaled write path of a change (absent when the undo log carries it from the start). */
  readonly journal: JournaledDisk | undefined;
  readonly warnings: string[];
  readonly luks: LuksVolume | undefined;
  readonly fs: Ext4;
  /** The LUKS volume key while the session is open (wiped by close unless keepKey). */
  readonly volumeKey: Uint8Array | undefined;
  close(options?: { keepKey?: boolean }): Promise<void>;
}

/**
 * What a SIGINT/SIGTERM would interrupt, for the CLI's message: a journaled change before its commit
 * block (nothing changed), after it (the journal completes it), or a change under the undo log.
 */
let activeChange: { mode: 'journal' | 'undo'; committed: boolean } | undefined;

export function interruptedMessage(): string {
  if (!activeChange) return 'interrupted: nothing was changed';
  if (activeChange.mode === 'undo') return 'interrupted; run any livestick command to roll back';
  if (!activeChange.committed) return 'interrupted: nothing was changed';
  return 'interrupted: the change is committed to the journal of the home image; the next livestick home command (or mounting it) completes it';
}

/** For the crash tests: LIVESTICK_TEST_JOURNAL_CRASH=<step> kills the process at that commit step. */
function commitStepHook(step: CommitStep): void {
  if (step === 'committed' && activeChange) activeChange.committed = true;
  if (process.env.LIVESTICK_TEST_JOURNAL_CRASH === step) process.kill(process.pid, 'SIGKILL');
}

/**
 * Replays the journal of the home's filesystem when it needs recovery (a crash of the kernel or of a
 * journaled change), as the kernel would at mount: the only write a reading command makes.
 */
async function replayHomeJournal(place: HomePlace, access: HomeAccess, volumeKey: Uint8Array | undefined): Promise<ReplayResult> {
  await place.ensureWritable();
  const file = await openMediumFile(place.root, place.path, 'write');
  let payload: Disk | undefined;
  try {
    if (volumeKey !== undefined) payload = await (await LuksVolume.open(file, { limits: access.limits })).openPayload({ volumeKey }, { readOnly: false });
    const disk = payload ?? file;
    const r = await replayJournal(await Ext4.open(disk), disk);
    await disk.flush();
    return r;
  } finally {
    if (payload) await payload.close().catch(() => {});
    await file.close();
  }
}

async function needsReplay(fs: Ext4): Promise<boolean> {
  const st = await fs.state().catch(() => undefined);
  return st?.needsRecovery ?? false;
}

/** The volume key, trying the passphrase source up to `access.tries` times. The caller wipes the key. */
async function unlockKey(vol: LuksVolume, access: HomeAccess): Promise<Uint8Array> {
  if (!access.passphrase) throw new UsageError('the home image is encrypted: a passphrase is needed');
  const tries = Math.max(1, access.tries ?? 1);
  for (let attempt = 1; ; attempt++) {
    const pass = await access.passphrase();
    try {
      return (await vol.unlock(pass)).volumeKey;
    } catch (err) {
      if (!(err instanceof WrongPassphraseError) || attempt >= tries) throw err;
      access.onWrongPassphrase?.(attempt);
    } finally {
      pass.fill(0);
    }
  }
}

async function openSession(place: HomePlace, access: HomeAccess, mode: 'read' | 'change' | 'journaled-change'): Promise<Session> {
  const { recovered: rolledBack } = await existingHome(place);
  // The key is proven on a read-only descriptor, before the undo log exists: a wrong passphrase
  // leaves the image untouched (not even its mtime changes).
  let volumeKey: Uint8Array | undefined;
  const probe = await openMediumFile(place.root, place.path, 'read');
  try {
    if ((await LuksVolume.probe(probe)) !== undefined) volumeKey = await unlockKey(await LuksVolume.open(probe, { limits: access.limits }), access);
  } finally {
    await probe.close();
  }
  let recovered = rolledBack;
  try {
    for (let attempt = 0; ; attempt++) {
      const s = await openStack(place, access, mode, recovered, volumeKey);
      if (attempt > 0 || !(await needsReplay(s.fs))) return s;
      await s.close({ keepKey: true });
      if (s.undo) await rollbackUndoLog(place.undoPlace());
      await replayHomeJournal(place, access, volumeKey);
      recovered = true;
    }
  } catch (err) {
    volumeKey?.fill(0);
    throw err;
  }
}

async function openStack(place: HomePlace, access: HomeAccess, mode: 'read' | 'change' | 'journaled-change', recovered: boolean, volumeKey: Uint8Array | undefined): Promise<Session> {
  const path = place.shown;
  const file: Disk = mode === 'read' ? await openMediumFile(place.root, place.path, 'read') : await openMediumFile(place.root, place.path, 'write');
  let undo: UndoDisk | undefined;
  let payload: Disk | undefined;
  const warnings: string[] = [];
  try {
    if (mode !== 'read') undo = await UndoDisk.begin(file as WritableFile, place.undoPlace());
    const base: Disk = undo ?? file;
    let luks: LuksVolume | undefined;
    if (volumeKey !== undefined) {
      luks = await LuksVolume.open(base, { limits: access.limits });
      payload = await luks.openPayload({ volumeKey }, { readOnly: mode === 'read' });
    }
    let fs = await Ext4.open(payload ?? base);
    let journal: JournaledDisk | undefined;
    if (undo) {
      const offset = luks ? luks.payloadGeometry().offset : 0;
      const isFree = await freeFsBlocks(fs);
      const unlogged = fileBlocksFree(fs, isFree, offset);
      if (mode === 'journaled-change' && !(await needsReplay(fs))) {
        // The journal carries the change; the undo log stays empty unless the change outgrows it.
        const u = undo;
        try {
          journal = await JournaledDisk.open(payload ?? base, fs, {
            isFreeAtStart: isFree,
            onStep: commitStepHook,
            onOverflow: async (reason) => {
              u.setUnlogged(unlogged);
              if (activeChange) activeChange.mode = 'undo';
              warnings.push(`the change does not fit one journal transaction (${reason}): it went through the undo log instead, so a boot before the next livestick command may see it half done`);
            },
          });
        } catch (err) {
          if (!(err instanceof LivestickError) || err.code === 'USAGE') throw err;
          warnings.push(`the journal cannot carry the change (${err.message}): it goes through the undo log instead`);
        }
      }
      if (journal) {
        undo.setUnlogged(() => true);
        fs = await Ext4.open(journal);
      } else {
        undo.setUnlogged(unlogged);
      }
      activeChange = { mode: journal ? 'journal' : 'undo', committed: false };
    }
    const p = payload;
    const f = file;
    const key = volumeKey;
    return {
      place,
      path,
      recovered,
      file: f,
      undo,
      journal,
      warnings,
      luks,
      fs,
      volumeKey: key,
      close: async (options = {}) => {
        if (!options.keepKey) key?.fill(0);
        if (p && p !== base) await p.close().catch(() => {});
        await undo?.close();
        await f.close();
      },
    };
  } catch (err) {
    activeChange = undefined;
    if (payload) await payload.close().catch(() => {});
    if (undo) await undo.abort().catch(() => {});
    else await file.close().catch(() => {});
    throw err instanceof LivestickError ? err.withFile(path) : err;
  }
}

/**
 * A predicate over 4 KiB blocks of the image file: true when every filesystem block it holds is free
 * in the block bitmaps now (before the change). Groups without an initialised bitmap (BLOCK_UNINIT,
 * common in mke2fs-made filesystems) are free except for their fixed metadata, as the writer treats
 * them; with a bad descriptor checksum they count as used (simply logged).
 */
async function freeFsBlocks(fs: Ext4): Promise<(block: number) => boolean> {
  const bs = fs.blockSize;
  const free = new Uint8Array(Math.ceil(fs.sb.blocksCount / 8));
  const layout = fs.layout;
  const csums = hasGroupChecksums(fs.sb);
  const setFree = (b: number, on: boolean): void => {
    if (on) free[b >>> 3]! |= 1 << (b & 7);
    else free[b >>> 3]! &= ~(1 << (b & 7));
  };
  for (let g = 0; g < fs.groups.length; g++) {
    const gd = fs.groups[g]!;
    const first = layout.groupFirstBlock(g);
    const count = layout.groupBlocks(g);
    if (csums && gd.flags & BgFlags.blockUninit) {
      // No bitmap on disk: everything but the group's fixed metadata is free (as the writer sees it).
      if (!fs.groupChecksumValid(g)) continue;
      for (let i = 0; i < count; i++) setFree(first + i, true);
      for (const [, start, n] of layout.fixedMetadata(g)) for (let i = 0; i < n; i++) setFree(start + i, false);
      continue;
    }
    const bitmap = await fs.readBlocks(gd.blockBitmap, 1);
    for (let i = 0; i < count; i++) if (!((bitmap[i >>> 3]! >>> (i & 7)) & 1)) setFree(first + i, true);
  }
  // Every group's bitmaps and inode table are in use wherever they lie.
  const itb = Math.ceil((fs.sb.inodesPerGroup * fs.sb.inodeSize) / bs);
  for (const gd of fs.groups) {
    for (const [start, n] of [[gd.blockBitmap, 1], [gd.inodeBitmap, 1], [gd.inodeTable, itb]] as const) {
      for (let i = 0; i < n; i++) if (start + i < fs.sb.blocksCount) setFree(start + i, false);
    }
  }
  return (b: number): boolean => b >= 0 && b < fs.sb.blocksCount && ((free[b >>> 3]! >>> (b & 7)) & 1) === 1;
}

/** The same over 4 KiB blocks of the image file (the payload starting at `payloadOffset`). */
function fileBlocksFree(fs: Ext4, isFree: (block: number) => boolean, payloadOffset: number): (block: number) => boolean {
  const bs = fs.blockSize;
  return (fileBlock: number): boolean => {
    const start = fileBlock * 4096 - payloadOffset;
    if (start < 0) return false;
    const firstFs = Math.floor(start / bs);
    const lastFs = Math.floor((start + 4095) / bs);
    for (let b = firstFs; b <= lastFs; b++) if (!isFree(b)) return false;
    return true;
  };
}

async function withSession<T>(place: HomePlace, access: HomeAccess, body: (s: Session) => Promise<T>): Promise<T> {
  const s = await openSession(place, access, 'read');
  try {
    return await body(s);
  } finally {
    await s.close();
  }
}

/**
 * Runs a change: through the journal (`journaled`, falling back to the undo log when the journal
 * cannot carry it) or under the undo log; committed when `body` returns, undone when it throws.
 */
async function withChange<T>(place: HomePlace, access: HomeAccess, body: (s: Session) => Promise<T>, journaled = false): Promise<T> {
  const s = await openSession(place, access, journaled ? 'journaled-change' : 'change');
  let result: T;
  try {
    try {
      result = await body(s);
    } catch (err) {
      await s.close().catch(() => {});
      await s.undo!.abort();
      throw err instanceof LivestickError ? err.withFile(s.path) : err;
    }
    try {
      await s.journal?.commit();
      await s.undo!.commit();
    } finally {
      await s.close();
    }
  } finally {
    activeChange = undefined;
  }
  return result;
}

// ---------------------------------------------------------------------------------------------------
// Create

export interface CreateHomeOptions extends HomeAccess {
  readonly size: number;
  readonly encrypt?: boolean;
  readonly label?: string;
  readonly force?: boolean;
  readonly kdf?: KdfChoice;
  /** For tests: fixed UUID, hash seed and time give a reproducible filesystem. */
  readonly fsUuid?: Uint8Array;
  readonly time?: number;
}

export interface CreateHomeResult {
  path: string;
  size: number;
  encrypted: boolean;
  label: string;
  fsUuid: string;
  blockSize: number;
  blocks: number;
  luksUuid?: string;
  kdf?: string;
  replaced: boolean;
  warnings: string[];
}

export async function createHome(target: string, options: CreateHomeOptions): Promise<CreateHomeResult> {
  const encrypt = options.encrypt ?? false;
  const label = options.label ?? HOME_LABEL;
  if (new TextEncoder().encode(label).byteLength > 16) throw new UsageError('--label: at most 16 bytes');
  const min = encrypt ? MIN_ENCRYPTED : MIN_PLAIN;
  if (!Number.isSafeInteger(options.size) || options.size < min) throw new UsageError(`--size: a${encrypt ? 'n encrypted' : ''} home image needs at least ${min / 2 ** 20} MiB`);
  const size = options.size - (options.size % 4096);
  return withPlace(target, options, true, (place) => createOn(place, size, encrypt, label, options));
}

/** Free space where the image goes: the host's (statfs: FAT and exFAT mounts are known) or the stick filesystem's. */
async function imageSpace(place: HomePlace): Promise<HostSpace> {
  if (place.root.hostDir !== undefined) return hostSpace(dirname(place.shown));
  const s = await place.root.fs.space();
  const type = place.root.fs.type;
  return { freeBytes: s.freeBytes, totalBytes: s.totalBytes, kind: type.startsWith('fat') ? 'fat' : type === 'exfat' ? 'exfat' : 'other' };
}

/**
 * Whether an image of `size` bytes, `more` of them new, fits: FAT's 4 GiB − 1 file limit on the
 * whole (`what`), the free space on what is new (`whatMore`).
 */
function imageVerdict(space: HostSpace, size: number, more: number, what: string, whatMore = what): { refuse?: string; warning?: string } {
  if (space.kind === 'fat' && size > FAT_MAX_FILE_BYTES) return newImageVerdict(space, size, what, formatSize);
  return newImageVerdict(space, more, whatMore, formatSize);
}

async function createOn(place: HomePlace, size: number, encrypt: boolean, label: string, options: CreateHomeOptions): Promise<CreateHomeResult> {
  const { root } = place;
  const path = place.shown;
  const fs = place.writable();
  const replaced = await isFileOn(root.fs, place.path);
  if (replaced && !options.force) throw new AlreadyExistsError(`${path} already exists (use --force to replace it and lose its contents)`, { file: path });
  // A host file may be sparse and replaces the old one in place; on a stick the new image is
  // allocated in full beside the old one until the rename.
  const old = replaced && root.hostDir !== undefined ? (await root.fs.stat(place.path)).size : 0;
  const besideOld = replaced && root.hostDir === undefined ? 'the new home image (built beside the old one, which it then replaces)' : 'the home image';
  const verdict = imageVerdict(await imageSpace(place), size, size - old, 'the home image', besideOld);
  if (verdict.refuse) throw new UsageError(verdict.refuse);
  const tmp = place.newImage;
  let disk: WritableFile | undefined;
  let payload: Disk | undefined;
  try {
    await removeIfExists(fs, tmp);
    disk = await fs.createFile(tmp, { size });
    let luksUuid: string | undefined;
    let kdf: string | undefined;
    if (encrypt) {
      if (!options.passphrase) throw new UsageError('an encrypted home needs a passphrase');
      const pass = await options.passphrase();
      try {
        const vol = await LuksVolume.format(disk, pass, { kdf: options.kdf, limits: options.limits });
        payload = await vol.openPayload(pass);
        const info = vol.info();
        luksUuid = info.uuid;
        kdf = info.keyslots[0]?.kdf?.type;
      } finally {
        pass.fill(0);
      }
    }
    const r = await mkfs(payload ?? disk, {
      label,
      reservedPercent: 0,
      zeroed: !encrypt,
      ...(options.fsUuid ? { uuid: options.fsUuid, hashSeed: options.fsUuid } : {}),
      ...(options.time !== undefined ? { time: options.time } : {}),
    });
    await (payload ?? disk).flush();
    if (payload) await payload.close();
    payload = undefined;
    await disk.close();
    disk = undefined;
    // An interrupted change of the old home is undone first, so a crash before the rename below
    // leaves a consistent old home, never a half-changed one without its log.
    // A log without its image (deleted by hand) must not be applied to the new one.
    if (replaced) await rollbackUndoLog(place.undoPlace()).catch(() => removeIfExists(fs, place.log));
    else await removeIfExists(fs, place.log);
    try {
      // Replaces the old image; where renames are not atomic a crash inside it leaves both names on
      // the new image, and the next home command removes the temporary one (existingHome).
      await fs.rename(tmp, place.path);
      await fs.flush();
    } catch (err) {
      throw err instanceof SimulatedCrash ? err : fromSystemError(named(err, root, place.path, [tmp]), path, 'move the new home image into place');
    }
    return { path, size, encrypted: encrypt, label, fsUuid: formatExt4Uuid(r.uuid), blockSize: r.blockSize, blocks: r.blocks, ...(luksUuid ? { luksUuid, kdf } : {}), replaced, warnings: verdict.warning ? [verdict.warning] : [] };
  } catch (err) {
    if (payload) await payload.close().catch(() => {});
    if (disk) await disk.close().catch(() => {});
    await removeIfExists(fs, tmp).catch(() => {});
    throw named(err, root, place.path, [tmp, place.log]);
  }
}

// ---------------------------------------------------------------------------------------------------
// Info

export interface HomeInfo {
  path: string;
  fileSize: number;
  recovered: boolean;
  encrypted: boolean;
  luks?: {
    version: 1 | 2;
    uuid: string;
    cipher: string;
    keyBits: number;
    sectorSize: number;
    payloadOffset: number;
    payloadSize: number;
    keyslots: { id: number; kdf: string; hash?: string; memoryKiB?: number; time?: number; iterations?: number }[];
    header: string;
    warnings: string[];
  };
  /** Absent when the image is encrypted and no passphrase was given. */
  filesystem?: { label: string; uuid: string; blockSize: number; size: number; used: number; free: number; inodes: number; freeInodes: number; state: string };
}

export async function homeInfo(target: string, access: HomeAccess = {}): Promise<HomeInfo> {
  return withPlace(target, access, false, (place) => infoOf(place, access));
}

async function infoOf(place: HomePlace, access: HomeAccess): Promise<HomeInfo> {
  const { recovered } = await existingHome(place);
  const path = place.shown;
  let file: Disk | undefined = await openMediumFile(place.root, place.path, 'read');
  let payload: Disk | undefined;
  let volumeKey: Uint8Array | undefined;
  try {
    const out: HomeInfo = { path, fileSize: file.size, recovered, encrypted: false };
    if ((await LuksVolume.probe(file)) !== undefined) {
      const vol = await LuksVolume.open(file, { limits: access.limits });
      const i = vol.info();
      out.encrypted = true;
      out.luks = {
        version: i.version,
        uuid: i.uuid,
        cipher: i.cipher,
        keyBits: i.keySize * 8,
        sectorSize: i.sectorSize,
        payloadOffset: i.payloadOffset,
        payloadSize: i.payloadSize,
        keyslots: i.keyslots.map((k) => ({
          id: k.id,
          kdf: k.kdf?.type ?? 'unknown',
          ...(k.kdf?.hash ? { hash: k.kdf.hash } : {}),
          ...(k.kdf?.memory !== undefined ? { memoryKiB: k.kdf.memory } : {}),
          ...(k.kdf?.time !== undefined ? { time: k.kdf.time } : {}),
          ...(k.kdf?.iterations !== undefined ? { iterations: k.kdf.iterations } : {}),
        })),
        header: i.header,
        warnings: [...i.warnings],
      };
      if (!access.passphrase) return out;
      volumeKey = await unlockKey(vol, access);
      payload = await vol.openPayload({ volumeKey }, { readOnly: true });
    }
    let fs = await Ext4.open(payload ?? file);
    if (await needsReplay(fs)) {
      // The replay writes: a stick opened read-only is reopened for it, so nothing of it may stay open.
      if (payload) await payload.close();
      payload = undefined;
      await file.close();
      file = undefined;
      await replayHomeJournal(place, access, volumeKey);
      out.recovered = true;
      file = await openMediumFile(place.root, place.path, 'read');
      if (volumeKey !== undefined) payload = await (await LuksVolume.open(file, { limits: access.limits })).openPayload({ volumeKey }, { readOnly: true });
      fs = await Ext4.open(payload ?? file);
    }
    const sb = fs.sb;
    const st = await fs.state();
    out.filesystem = {
      label: sb.volumeName,
      uuid: formatExt4Uuid(sb.uuid),
      blockSize: sb.blockSize,
      size: sb.blocksCount * sb.blockSize,
      used: (sb.blocksCount - sb.freeBlocksCount) * sb.blockSize,
      free: sb.freeBlocksCount * sb.blockSize,
      inodes: sb.inodesCount,
      freeInodes: sb.freeInodesCount,
      state: st.needsRecovery ? 'needs journal recovery' : st.clean ? 'clean' : 'not clean',
    };
    return out;
  } catch (err) {
    throw err instanceof LivestickError ? err.withFile(path) : err;
  } finally {
    volumeKey?.fill(0);
    if (payload) await payload.close().catch(() => {});
    await file?.close();
  }
}

// ---------------------------------------------------------------------------------------------------
// Reading

function imagePath(p: string | undefined): string {
  const norm = posix.normalize(`/${p ?? '/'}`);
  return norm.length > 1 && norm.endsWith('/') ? norm.slice(0, -1) : norm;
}

/** Runs a reading command on the home of `target`. */
function withHomeRead<T>(target: string, access: HomeAccess, body: (s: Session) => Promise<T>): Promise<T> {
  return withPlace(target, access, false, (place) => withSession(place, access, body));
}

export async function homeList(target: string, path: string | undefined, access: HomeAccess = {}): Promise<{ path: string; image: string; entries: LsEntry[] }> {
  return withHomeRead(target, access, async (s) => {
    const p = imagePath(path);
    const st = await s.fs.stat(p).catch(() => undefined);
    if (st && st.kind !== 'dir' && !(st.kind === 'symlink')) {
      const parent = posix.dirname(p);
      const entries = (await listDirectory(s.fs, parent)).filter((e) => e.name === posix.basename(p));
      return { path: p, image: s.path, entries };
    }
    return { path: p, image: s.path, entries: await listDirectory(s.fs, p) };
  });
}

export async function homeCat(target: string, path: string, sink: (piece: Uint8Array) => Promise<void>, access: HomeAccess = {}): Promise<{ bytes: number }> {
  return withHomeRead(target, access, async (s) => {
    let bytes = 0;
    for await (const piece of s.fs.stream(imagePath(path))) {
      await sink(piece);
      bytes += piece.byteLength;
    }
    return { bytes };
  });
}

// ---------------------------------------------------------------------------------------------------
// Import

export interface ImportOptions extends HomeAccess {
  /** Owner of the imported nodes: "live" (1000:1000, the default), "keep" (host owners) or explicit ids. */
  readonly owner?: 'live' | 'keep' | { uid: number; gid: number };
  readonly onBytes?: (n: number) => void;
}

/** What an import or export moved: the image, the other side's path, and counts. */
export interface TransferResult {
  image: string;
  dest: string;
  files: number;
  directories: number;
  symlinks: number;
  hardLinks: number;
  skipped: number;
  /** What was skipped and why (device nodes, FIFOs, sockets, unsafe names): shown as warnings. */
  skippedNodes: { path: string; reason: string }[];
  bytes: number;
}

export interface ImportResult extends TransferResult {
  recovered: boolean;
  /** How the import was made atomic: one jbd2 transaction, or the undo log (when the journal could not carry it). */
  safety: 'journal' | 'undo-log';
  /** Original contents saved in the undo log while the import ran (metadata, not the free space filled). */
  undoLogBytes: number;
  warnings: string[];
}

/** Bytes of regular files under a host path (for progress), without following symlinks. */
export async function hostTreeBytes(path: string): Promise<number> {
  const st = await lstat(path).catch(() => undefined);
  if (!st) return 0;
  if (st.isFile()) return st.size;
  if (!st.isDirectory()) return 0;
  let total = 0;
  for (const name of await readdir(path).catch(() => [] as string[])) total += await hostTreeBytes(join(path, name));
  return total;
}

export async function homeImport(target: string, src: string, dest: string | undefined, options: ImportOptions = {}): Promise<ImportResult> {
  try {
    await lstat(src);
  } catch (err) {
    throw fromSystemError(err, src, 'read the source');
  }
  let freeBefore = 0;
  let blockSize = 4096;
  let image = target;
  let imageBytes = 0;
  return withPlace(target, options, true, (place) => withChange(place, options, async (s) => {
    image = s.path;
    imageBytes = s.file.size;
    const w = await Ext4Writer.open(s.fs);
    freeBefore = s.fs.sb.freeBlocksCount * s.fs.blockSize;
    blockSize = s.fs.blockSize;
    const stats: ImportResult = { image: s.path, dest: '', files: 0, directories: 0, symlinks: 0, hardLinks: 0, skipped: 0, skippedNodes: [], bytes: 0, recovered: s.recovered, safety: 'journal', undoLogBytes: 0, warnings: s.warnings };
    const onBytes = options.onBytes ?? (() => {});
    const owner = options.owner ?? 'live';
    const kindAt = async (p: string): Promise<string | undefined> => {
      try {
        return (await w.fs.statInode(await w.fs.lookup(p))).kind;
      } catch (err) {
        if (err instanceof NotFoundError) return undefined;
        throw err;
      }
    };
    let top = imagePath(dest);
    const name = basename(src);
    if (name !== '.' && name !== '' && (await kindAt(top)) === 'dir') top = top === '/' ? `/${name}` : `${top}/${name}`;
    stats.dest = top;
    const seen = new Map<string, string>();
    const visit = async (host: string, at: string): Promise<void> => {
      let st;
      try {
        st = await lstat(host, { bigint: true });
      } catch (err) {
        throw fromSystemError(err, host, 'stat');
      }
      const ids = owner === 'keep' ? { uid: Number(st.uid), gid: Number(st.gid) } : owner === 'live' ? { uid: LIVE_UID, gid: LIVE_GID } : owner;
      const attrs = { mode: Number(st.mode & 0o7777n), ...ids, atime: timestampFromNs(st.atimeNs), mtime: timestampFromNs(st.mtimeNs) };
      const existing = at === '/' ? 'dir' : await kindAt(at);
      if (st.isDirectory()) {
        if (existing !== undefined && existing !== 'dir') await w.unlink(at);
        if (existing !== 'dir') await w.mkdir(at, attrs);
        if (at !== '/') await copyHostXattrs(w, host, at);
        stats.directories++;
        let names: string[];
        try {
          names = (await readdir(host)).sort();
        } catch (err) {
          throw fromSystemError(err, host, 'list the directory');
        }
        for (const n of names) await visit(join(host, n), at === '/' ? `/${n}` : `${at}/${n}`);
        if (at !== '/') await w.setAttrs(at, attrs);
        return;
      }
      if (existing === 'dir') throw new UsageError(`${at} is a directory in the home image; ${host} is not`);
      if (st.nlink > 1n) {
        const key = `${st.dev}:${st.ino}`;
        const first = seen.get(key);
        if (first !== undefined) {
          if (existing !== undefined) await w.unlink(at);
          await w.link(first, at);
          stats.hardLinks++;
          return;
        }
        seen.set(key, at);
      }
      if (st.isFile()) {
        if (existing !== undefined && existing !== 'file') await w.unlink(at);
        await w.writeFile(at, hostFileChunks(host, (n) => {
          stats.bytes += n;
          onBytes(n);
        }), attrs);
        await copyHostXattrs(w, host, at);
        stats.files++;
      } else if (st.isSymbolicLink()) {
        if (existing !== undefined) await w.unlink(at);
        let targetText: string;
        try {
          targetText = await readlink(host);
        } catch (err) {
          throw fromSystemError(err, host, 'read the link');
        }
        await w.symlink(at, targetText, attrs);
        await copyHostXattrs(w, host, at);
        stats.symlinks++;
      } else {
        stats.skipped++;
        stats.skippedNodes.push({ path: host, reason: `${hostKind(st)}: not copied` });
      }
    };
    await visit(src, top);
    await w.close();
    await s.undo!.flush();
    stats.undoLogBytes = s.undo!.loggedBytes;
    stats.safety = s.journal?.journaling ? 'journal' : 'undo-log';
    return stats;
  }, true)).catch(async (err: unknown) => {
    if (!(err instanceof Ext4NoSpaceError)) throw err;
    throw await outOfSpace(err, target, src, freeBefore, blockSize, image, imageBytes);
  });
}

function hostKind(st: { isBlockDevice(): boolean; isCharacterDevice(): boolean; isFIFO(): boolean; isSocket(): boolean }): string {
  return st.isBlockDevice() ? 'block device' : st.isCharacterDevice() ? 'character device' : st.isFIFO() ? 'FIFO' : st.isSocket() ? 'socket' : 'special file';
}

/** Blocks a host tree takes in ext4, roughly: its files' blocks, a block per directory, 2% for extent and directory growth. */
async function hostTreeBlocks(path: string, blockSize: number): Promise<number> {
  const st = await lstat(path).catch(() => undefined);
  if (!st) return 0;
  if (st.isFile()) return Math.ceil(st.size / blockSize);
  if (!st.isDirectory()) return st.isSymbolicLink() && st.size > 59 ? 1 : 0;
  let total = 1;
  for (const name of await readdir(path).catch(() => [] as string[])) total += await hostTreeBlocks(join(path, name), blockSize);
  return total;
}

/** The import did not fit: say how much more room it needs and the `home resize` that makes it. */
async function outOfSpace(err: LivestickError, target: string, src: string, free: number, blockSize: number, image: string, current: number): Promise<LivestickError> {
  const needed = Math.ceil((await hostTreeBlocks(src, blockSize)) * 1.02 + 16) * blockSize;
  const more = Math.max(needed - free, 4 * MiB);
  const suggested = Math.ceil((current + more * 1.1) / (64 * MiB)) * 64;
  const sizeText = suggested % 1024 === 0 ? `${suggested / 1024}G` : `${suggested}M`;
  return new LivestickError(
    'NO_SPACE',
    ExitCode.ioError,
    `the home filesystem is full: the import needs about ${formatSize(more)} more than the ${formatSize(free)} free (nothing was changed); run \`livestick home resize ${target} --size ${sizeText}\` first (${err.message})`,
    { file: image, cause: err },
  );
}

// ---------------------------------------------------------------------------------------------------
// Export

export type ExportResult = TransferResult;

function safeName(name: string): boolean {
  return name !== '' && name !== '.' && name !== '..' && !name.includes('/') && !name.includes('\0') && (process.platform !== 'win32' || !/[\\:*?"<>|]/.test(name));
}

const runningAsRoot = typeof process.getuid === 'function' && process.getuid() === 0;

/**
 * The image's owner on an exported node: all of it as root; otherwise what this user may set (the
 * group, when the node is this user's and the user is in that group), silently keeping the rest.
 */
async function keepOwner(host: string, st: { uid: number; gid: number }): Promise<void> {
  if (typeof process.getuid !== 'function') return;
  if (runningAsRoot) return lchown(host, st.uid, st.gid);
  if (st.uid !== process.getuid()) return;
  await lchown(host, st.uid, st.gid).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'EPERM' && err.code !== 'EINVAL') throw err;
  });
}

function toDate(t: Timestamp): Date {
  return new Date(t.sec * 1000 + Math.floor(t.nsec / 1e6));
}

/** Xattrs are written as unsquashfs does (io/xattr.ts): user.*, and as root trusted.* and security.*, after a file's data. */
export async function homeExport(target: string, dest: string, options: HomeAccess & { onBytes?: (n: number) => void } = {}): Promise<ExportResult> {
  try {
    const names = await readdir(dest);
    if (names.length > 0) throw new AlreadyExistsError(`${dest} is not empty: export writes into a new or empty directory`, { file: dest });
  } catch (err) {
    if (err instanceof LivestickError) throw err;
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw fromSystemError(err, dest, 'list the directory');
    try {
      await mkdir(dest, { mode: 0o700 });
    } catch (e) {
      throw fromSystemError(e, dest, 'create the directory');
    }
  }
  const onBytes = options.onBytes ?? (() => {});
  return withHomeRead(target, options, async (s) => {
    const stats: ExportResult = { image: s.path, dest, files: 0, directories: 0, symlinks: 0, hardLinks: 0, skipped: 0, skippedNodes: [], bytes: 0 };
    const linked = new Map<number, string>();
    const onPath = new Set<number>();
    const xattrs = new HostXattrWriter();
    const visitDir = async (ino: number, hostDir: string, depth: number): Promise<void> => {
      if (onPath.has(ino) || depth > 4096) throw new LivestickError('CORRUPT_IMAGE', 65, `directory inode ${ino} is its own ancestor (or the tree is absurdly deep)`);
      onPath.add(ino);
      const entries = await s.fs.readDirInode(await s.fs.readInode(ino));
      for (const e of entries) {
        if (depth === 0 && e.name === 'lost+found') continue;
        if (!safeName(e.name)) {
          stats.skipped++;
          stats.skippedNodes.push({ path: join(hostDir, JSON.stringify(e.name)), reason: 'unsafe name: not exported' });
          continue;
        }
        const host = join(hostDir, e.name);
        const inode = await s.fs.readInode(e.ino);
        const st = await s.fs.statInode(e.ino);
        const mode = st.mode & 0o1777;
        try {
          if (st.kind === 'dir') {
            await mkdir(host, { mode: 0o700 });
            xattrs.write(host, await s.fs.xattrs(inode));
            await visitDir(e.ino, host, depth + 1);
            await keepOwner(host, st);
            await chmod(host, mode);
            await utimes(host, toDate(st.atime), toDate(st.mtime));
            stats.directories++;
          } else if (st.kind === 'file') {
            const first = st.nlink > 1 ? linked.get(e.ino) : undefined;
            if (first !== undefined) {
              await hostLink(first, host);
              stats.hardLinks++;
              continue;
            }
            const fh = await open(host, 'wx', 0o600);
            try {
              for await (const piece of s.fs.streamInode(inode, 1 << 20, { reuse: true })) {
                await fh.write(piece, 0, piece.byteLength);
                stats.bytes += piece.byteLength;
                onBytes(piece.byteLength);
              }
            } finally {
              await fh.close();
            }
            await keepOwner(host, st);
            // After the owner: a chown drops security.capability.
            xattrs.write(host, await s.fs.xattrs(inode));
            await chmod(host, mode);
            await utimes(host, toDate(st.atime), toDate(st.mtime));
            if (st.nlink > 1) linked.set(e.ino, host);
            stats.files++;
          } else if (st.kind === 'symlink') {
            const text = new TextDecoder().decode(await s.fs.readInodeData(inode, 65536));
            try {
              await symlink(text, host);
            } catch (err) {
              // Hosts that do not let this user make symlinks (Windows without developer mode): skip.
              if ((err as NodeJS.ErrnoException).code !== 'EPERM') throw err;
              stats.skipped++;
              stats.skippedNodes.push({ path: host, reason: 'symbolic link: this host does not let this user create one' });
              continue;
            }
            xattrs.write(host, await s.fs.xattrs(inode));
            await lutimes(host, toDate(st.atime), toDate(st.mtime)).catch(() => {});
            await keepOwner(host, st);
            stats.symlinks++;
          } else {
            stats.skipped++;
            stats.skippedNodes.push({ path: host, reason: `${st.kind === 'chardev' ? 'character device' : st.kind === 'blockdev' ? 'block device' : st.kind === 'fifo' ? 'FIFO' : st.kind}: not exported` });
          }
        } catch (err) {
          throw err instanceof LivestickError ? err : fromSystemError(err, host, 'write the backup');
        }
      }
      onPath.delete(ino);
    };
    await visitDir(2, dest, 0);
    return stats;
  });
}

// ---------------------------------------------------------------------------------------------------
// Passwd and resize

export async function homePasswd(target: string, oldPassphrase: Uint8Array, newPassphrase: Uint8Array, options: MediumOptions & { kdf?: KdfChoice; limits?: KdfLimits } = {}): Promise<{ image: string; keyslot: number; recovered: boolean }> {
  return withPlace(target, options, true, async (place) => {
    const { recovered } = await existingHome(place);
    const path = place.shown;
    const file = await openMediumFile(place.root, place.path, 'write');
    try {
      if ((await LuksVolume.probe(file)) === undefined) throw new UsageError('this home image is not encrypted: there is no passphrase to change');
      const vol = await LuksVolume.open(file, { limits: options.limits });
      const keyslot = await vol.changePassphrase(oldPassphrase, newPassphrase, { kdf: options.kdf });
      await file.flush();
      return { image: path, keyslot, recovered };
    } catch (err) {
      throw err instanceof LivestickError ? err.withFile(path) : err;
    } finally {
      await file.close();
    }
  });
}

export interface ResizeResult {
  image: string;
  oldSize: number;
  newSize: number;
  oldBlocks: number;
  newBlocks: number;
  free: number;
  recovered: boolean;
}

export async function homeResize(target: string, newSize: number, access: HomeAccess = {}): Promise<ResizeResult> {
  const size = newSize - (newSize % 4096);
  return withPlace(target, access, true, async (place) => {
    await existingHome(place);
    const before = (await place.root.fs.stat(place.path)).size;
    if (size <= before) throw new UsageError(`--size: the image is ${formatSize(before)} already; it can only grow (shrinking is not supported)`);
    if (place.root.hostDir === undefined) {
      // On a stick the file is allocated in full, so the growth must fit now (and FAT caps the file).
      const verdict = imageVerdict(await imageSpace(place), size, size - before, 'the grown home image', "the home image's growth");
      if (verdict.refuse) throw new UsageError(verdict.refuse);
    }
    return resizeOnce(place, size, before, access);
  });
}

async function resizeOnce(place: HomePlace, size: number, before: number, access: HomeAccess): Promise<ResizeResult> {
  return withChange(place, access, async (s) => {
    const undo = s.undo!;
    await undo.resize(size);
    let fsDisk: Disk = undo;
    let payload: Disk | undefined;
    if (s.luks) {
      const vol = await LuksVolume.open(undo, { limits: access.limits });
      payload = await vol.openPayload({ volumeKey: s.volumeKey! });
      fsDisk = payload;
    }
    try {
      const fs = await Ext4.open(fsDisk);
      const r = await growFs(fs, fsDisk.size, { zeroed: !s.luks });
      await fsDisk.flush();
      const after = await Ext4.open(fsDisk);
      return { image: s.path, oldSize: before, newSize: size, oldBlocks: r.oldBlocks, newBlocks: r.newBlocks, free: after.sb.freeBlocksCount * after.blockSize, recovered: s.recovered };
    } finally {
      if (payload) await payload.close();
    }
  });
}

/** For tests and tools: the decrypted filesystem image (or the plain one) copied to a host file. */
export async function dumpHomeFilesystem(target: string, out: string, access: HomeAccess = {}): Promise<{ bytes: number }> {
  return withHomeRead(target, access, async (s) => {
    const disk = s.fs.disk;
    const fh = await open(out, 'wx', 0o600);
    const buf = new Uint8Array(1 << 20);
    try {
      for (let at = 0; at < disk.size; at += buf.byteLength) {
        const n = Math.min(buf.byteLength, disk.size - at);
        await disk.read(buf.subarray(0, n), at);
        await fh.write(buf, 0, n, at);
      }
    } finally {
      await fh.close();
    }
    return { bytes: disk.size };
  });
}
