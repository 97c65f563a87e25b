/**
 * Extracts an image (or a subtree) into a host directory.
 *
 * Safety: the reader refuses names that are empty, ".", "..", or contain "/" or NUL; here duplicate
 * names in one directory are refused, every directory on the way is either one this run created or
 * checked with lstat to be a real directory (never a symlink, even one that was already in DEST), and
 * existing non-directories are replaced, never written through (files open with O_EXCL). Hard links
 * are only made to files extracted in this run.
 * Node has no mknod or mkfifo: devices, fifos and sockets are reported as skipped.
 * Xattrs are restored as unsquashfs does (io/xattr.ts): user.* always, trusted.* and security.* as
 * root, after the owner is set (a chown drops security.capability) and before the mode; a failure
 * is a warning. An image without an xattr table costs nothing here.
 * Host calls are synchronous: per small file they cost far less than thread-pool round trips. Inside
 * directories this run created there is nothing to check first, and a file's owner, mode and times
 * are set through its descriptor.
 * File data, for an image in a plain file: worker threads read, decode and write runs of a file's
 * blocks themselves (descriptors are shared by the process's threads); the main thread creates each
 * file, writes its fragment tail, queues its runs and walks on, so small files are made while the
 * workers decode; a file's size, owner, mode and times are set once every run on it is done, oldest
 * first. A descriptor is closed only after all its runs settle. Queued blocks and open files are bounded.
 * For an image inside another Disk, the main thread does the I/O, with read-ahead across files: up to
 * `depth` pieces (blocks or fragment tails) of the files coming next are read and decoded (xz on worker
 * threads) while the current one is written. Memory either way: a bounded number of blocks.
 */
import { chmodSync, closeSync, fchmodSync, fchownSync, ftruncateSync, futimesSync, lchownSync, linkSync, lutimesSync, mkdirSync, openSync, symlinkSync, utimesSync } from 'node:fs';
import { join } from 'node:path';
import { AlreadyExistsError, CorruptImageError, fromSystemError, LivestickError } from '../../errors.ts';
import { clearForNonDir, host, lstatOrUndefined, writePiece } from '../extract-host.ts';
import { defaultExtractThreads } from './comp/pool.ts';
import type { ExtractBlock } from './comp/worker.ts';
import { NO_FRAGMENT, type FileInode, type Inode } from './inode.ts';
import type { FileExtractor, SquashfsReader } from './reader.ts';
import type { Xattr } from './xattr.ts';
import { HostXattrWriter, type XattrNamespace } from '../../io/xattr.ts';

export interface ExtractOptions {
  /** Set ownership from the image (default: when running as root). */
  owners?: boolean;
  /** Xattr namespaces to restore (default: user, plus trusted and security as root); false: none. */
  xattrs?: readonly XattrNamespace[] | false;
  /** Worker threads for file data (default: the host's parallelism for images over 8 MiB, else 0: all on this thread). */
  threads?: number;
  onFile?: (path: string, bytes: number) => void;
}

export interface ExtractResult {
  files: number;
  dirs: number;
  symlinks: number;
  hardlinks: number;
  bytes: number;
  skipped: Array<{ path: string; reason: string }>;
}

interface Entry {
  path: string;
  inode: Inode;
  /** The file whose pieces are read (undefined: not a file, or a later name of a hard link). */
  data: FileInode | undefined;
  count: number;
  loads: Array<Promise<Uint8Array> | undefined>;
}

/** Walk entries in order, with the pieces of upcoming files read ahead (see the notes at the top). */
class ReadAhead {
  readonly #reader: SquashfsReader;
  readonly #walk: AsyncIterator<{ path: string; inode: Inode }>;
  readonly #depth: number;
  readonly #entries: Entry[] = [];
  readonly #firstNames = new Set<number>();
  #inFlight = 0;
  #done = false;

  constructor(reader: SquashfsReader, prefix: string, depth: number) {
    this.#reader = reader;
    this.#walk = reader.walk(prefix)[Symbol.asyncIterator]();
    this.#depth = depth;
  }

  async #pull(): Promise<boolean> {
    if (this.#done) return false;
    const r = await this.#walk.next();
    if (r.done) {
      this.#done = true;
      return false;
    }
    const { path, inode } = r.value;
    let data: FileInode | undefined;
    if (inode.kind === 'file' && (inode.nlink <= 1 || !this.#firstNames.has(inode.inodeNumber))) {
      data = inode;
      if (inode.nlink > 1) this.#firstNames.add(inode.inodeNumber);
    }
    this.#entries.push({ path, inode, data, count: data ? this.#reader.pieceCount(data) : 0, loads: [] });
    return true;
  }

  #start(e: Entry): void {
    const load = this.#reader.piece(e.data as FileInode, e.loads.length);
    load.catch(() => {}); // observed when consumed
    e.loads.push(load);
    this.#inFlight++;
  }

  async #fill(): Promise<void> {
    let i = 0;
    while (this.#inFlight < this.#depth) {
      while (i >= this.#entries.length) if (this.#entries.length >= 4096 || !(await this.#pull())) return;
      const e = this.#entries[i] as Entry;
      if (e.data !== undefined && e.loads.length < e.count) this.#start(e);
      else i++;
    }
  }

  /** The next entry, or undefined at the end. */
  async next(): Promise<Entry | undefined> {
    if (this.#entries.length === 0 && !(await this.#pull())) return undefined;
    await this.#fill();
    return this.#entries[0];
  }

  /** The pieces of the entry `next` returned, in order; the entry is done once they are consumed. */
  async *pieces(e: Entry): AsyncGenerator<Uint8Array> {
    for (let i = 0; i < e.count; i++) {
      if (i >= e.loads.length) this.#start(e);
      const piece = await (e.loads[i] as Promise<Uint8Array>);
      e.loads[i] = undefined;
      this.#inFlight--;
      await this.#fill();
      yield piece;
    }
  }

  /** Drops the entry `next` returned. */
  shift(): void {
    this.#entries.shift();
  }
}

export async function extractSquashfs(reader: SquashfsReader, dest: string, subpath = '', options: ExtractOptions = {}): Promise<ExtractResult> {
  const threads = options.threads ?? defaultExtractThreads(reader.superblock.bytesUsed);
  // An image in a plain file: workers read, decode and write whole runs of file blocks themselves.
  // Otherwise (an image inside another Disk), the main thread does the I/O with read-ahead.
  const files = reader.fileExtractor(threads);
  const started = files === undefined && reader.startDecodeThreads(threads);
  try {
    return await extractEntries(reader, dest, subpath, options, files === undefined ? Math.max(4, threads * 4) : 0, files, Math.max(1, threads));
  } finally {
    if (started) await reader.stopDecodeThreads();
    await files?.extractor.close();
  }
}

/**
 * Blocks per worker job; and how far the walk may run ahead of the workers, in queued blocks per
 * thread and in open files. Queued jobs hold no data (workers read their blocks themselves), so the
 * walk can go on creating small files while the workers catch up.
 */
const JOB_BLOCKS = 16;
const QUEUED_BLOCKS_PER_THREAD = 2048;
const QUEUED_FILES = 256;

interface PendingFile {
  fd: number;
  target: string;
  imagePath: string;
  inode: FileInode;
  xattrs: Xattr[] | undefined;
  blocks: number;
  jobs: Promise<void>[];
}

async function extractEntries(reader: SquashfsReader, dest: string, subpath: string, options: ExtractOptions, depth: number, files: FileExtractor | undefined, threads: number): Promise<ExtractResult> {
  const owners = options.owners ?? (typeof process.getuid === 'function' && process.getuid() === 0);
  const result: ExtractResult = { files: 0, dirs: 0, symlinks: 0, hardlinks: 0, bytes: 0, skipped: [] };
  const linked = new Map<number, string>();
  const dirsToFinish: Array<{ path: string; inode: Inode }> = [];
  const names = new Map<string, Set<string>>();
  const prefix = subpath.split('/').filter((p) => p !== '' && p !== '.').join('/');
  const rel = (p: string): string => (prefix === '' ? p : p === prefix ? '' : p.slice(prefix.length + 1));
  const xw = reader.superblock.xattrIdTableStart !== undefined && options.xattrs !== false ? new HostXattrWriter(options.xattrs === undefined ? {} : { namespaces: options.xattrs }) : undefined;
  // Without an xattr table, xw is undefined and no inode has an xattr index: nothing is awaited.
  const xattrsOf = (inode: Inode): Promise<Xattr[]> | undefined => (xw !== undefined && inode.xattr !== undefined ? reader.xattrs(inode) : undefined);

  // A symlink's owner and times (it has no mode of its own), by path: there is no descriptor to use.
  const applySymlinkMeta = (target: string, inode: Inode, xattrs: Xattr[] | undefined): void => {
    if (owners) host(target, 'set ownership', () => lchownSync(target, reader.uid(inode), reader.gid(inode)));
    if (xattrs !== undefined) xw?.write(target, xattrs);
    try {
      lutimesSync(target, inode.mtime, inode.mtime);
    } catch {
      // not every host can set a symlink's times
    }
  };
  // A regular file's owner, mode and times, through its descriptor (no path lookups), before it closes.
  const applyFileMeta = (fd: number, target: string, inode: Inode, xattrs: Xattr[] | undefined): void => {
    if (owners) host(target, 'set ownership', () => fchownSync(fd, reader.uid(inode), reader.gid(inode)));
    if (xattrs !== undefined) xw?.write(target, xattrs);
    host(target, 'set mode and times', () => {
      fchmodSync(fd, inode.mode);
      futimesSync(fd, inode.mtime, inode.mtime);
    });
  };
  const finished = (imagePath: string, inode: FileInode): void => {
    result.bytes += inode.fileSize;
    result.files++;
    options.onFile?.(imagePath, inode.fileSize);
  };

  // Worker mode: files whose blocks are still being written, oldest first. A descriptor is closed
  // only once every job on it has settled (a reused descriptor number must never receive old writes).
  const pending: PendingFile[] = [];
  let inFlight = 0;
  const finishOldest = async (): Promise<void> => {
    const p = pending.shift() as PendingFile;
    inFlight -= p.blocks;
    const results = await Promise.allSettled(p.jobs);
    const failed = results.find((r) => r.status === 'rejected');
    try {
      if (failed !== undefined) {
        const err = (failed as PromiseRejectedResult).reason as unknown;
        if (err instanceof LivestickError) throw err;
        throw fromSystemError(err, p.target, 'write the file');
      }
      host(p.target, 'write the file', () => ftruncateSync(p.fd, p.inode.fileSize));
      applyFileMeta(p.fd, p.target, p.inode, p.xattrs);
    } finally {
      closeSync(p.fd);
    }
    finished(p.imagePath, p.inode);
  };
  const startFile = (fd: number, target: string, imagePath: string, inode: FileInode, xattrs: Xattr[] | undefined, fx: FileExtractor): void => {
    const bs = reader.superblock.blockSize;
    const offsets = reader.blockOffsets(inode);
    const n = inode.blockSizes.length;
    const jobs: Promise<void>[] = [];
    for (let first = 0; first < n; first += JOB_BLOCKS) {
      const blocks: ExtractBlock[] = [];
      for (let i = first; i < Math.min(n, first + JOB_BLOCKS); i++) {
        blocks.push({ word: inode.blockSizes[i] as number, at: offsets[i] as number, pos: i * bs, expect: Math.min(bs, inode.fileSize - i * bs) });
      }
      const job = fx.extractor.extract(fx.imageFd, fd, blocks);
      job.catch(() => {}); // observed in finishOldest
      jobs.push(job);
    }
    pending.push({ fd, target, imagePath, inode, xattrs, blocks: n, jobs });
    inFlight += n;
  };

  // Directories this run created (image-relative paths): nothing else is in them, so their entries
  // need no check for what is in the way (and opening with O_EXCL would refuse it anyway).
  const fresh = new Set<string>();
  if (host(dest, 'create the destination', () => mkdirSync(dest, { recursive: true })) !== undefined) fresh.add('');
  try {
    return await walkEntries();
  } finally {
    // On failure: let running jobs settle before their descriptors close.
    for (const p of pending.splice(0)) {
      await Promise.allSettled(p.jobs);
      closeSync(p.fd);
    }
  }

  async function walkEntries(): Promise<ExtractResult> {
    const ahead = new ReadAhead(reader, prefix, depth);
    for (let entry = await ahead.next(); entry !== undefined; ahead.shift(), entry = await ahead.next()) {
      const { path: imagePath, inode } = entry;
      const r = rel(imagePath);
      const target = r === '' ? dest : join(dest, ...r.split('/'));
      let inFresh = false;
      if (r !== '') {
        const cut = r.lastIndexOf('/');
        const parent = cut < 0 ? '' : r.slice(0, cut);
        inFresh = fresh.has(parent);
        const name = r.slice(cut + 1);
        let set = names.get(parent);
        if (set === undefined) names.set(parent, (set = new Set()));
        if (set.has(name)) throw new CorruptImageError('squashfs', 'directory', `duplicate name /${imagePath}`);
        set.add(name);
      }
      switch (inode.kind) {
        case 'dir': {
          const st = inFresh ? undefined : lstatOrUndefined(target);
          if (st === undefined || !st.isDirectory()) {
            if (st !== undefined) {
              if (r === '') throw new AlreadyExistsError('the destination is not a directory', { file: target });
              clearForNonDir(target);
            }
            host(target, 'create the directory', () => mkdirSync(target, { mode: 0o700 }));
            if (r !== '') fresh.add(r);
          }
          result.dirs++;
          dirsToFinish.push({ path: target, inode });
          break;
        }
        case 'file': {
          if (!inFresh) clearForNonDir(target);
          if (entry.data === undefined) {
            const first = linked.get(inode.inodeNumber);
            if (first === undefined) throw new Error(`internal: hard link /${imagePath} before its first name`);
            host(target, 'create the hard link', () => linkSync(first, target));
            result.hardlinks++;
            break;
          }
          const xq = xattrsOf(inode);
          const xattrs = xq === undefined ? undefined : await xq;
          const fd = host(target, 'create the file', () => openSync(target, 'wx', 0o600));
          if (files !== undefined && inode.blockSizes.length > 0) {
            linked.set(inode.inodeNumber, target);
            let tail: Uint8Array | undefined;
            try {
              startFile(fd, target, imagePath, inode, xattrs, files);
              if (inode.fragment !== NO_FRAGMENT) tail = await reader.piece(inode, inode.blockSizes.length);
            } catch (err) {
              if (!pending.some((p) => p.fd === fd)) closeSync(fd);
              throw err;
            }
            if (tail !== undefined) writePiece(target, fd, tail, inode.blockSizes.length * reader.superblock.blockSize);
            while (pending.length > 0 && (inFlight > threads * QUEUED_BLOCKS_PER_THREAD || pending.length >= QUEUED_FILES)) await finishOldest();
            break;
          }
          try {
            let at = 0;
            let end = 0;
            for await (const piece of ahead.pieces(entry)) {
              if (writePiece(target, fd, piece, at)) end = at + piece.byteLength;
              at += piece.byteLength;
            }
            if (end !== at) host(target, 'write the file', () => ftruncateSync(fd, at));
            applyFileMeta(fd, target, inode, xattrs);
          } finally {
            closeSync(fd);
          }
          if (inode.nlink > 1) linked.set(inode.inodeNumber, target);
          finished(imagePath, inode);
          break;
        }
        case 'symlink': {
          if (!inFresh) clearForNonDir(target);
          host(target, 'create the symlink', () => symlinkSync(Buffer.from(inode.target) as unknown as string, target));
          const xq = xattrsOf(inode);
          applySymlinkMeta(target, inode, xq === undefined ? undefined : await xq);
          result.symlinks++;
          break;
        }
        default:
          result.skipped.push({ path: imagePath, reason: `${inode.kind} (Node.js cannot create special files)` });
      }
    }
    while (pending.length > 0) await finishOldest();
    for (const d of dirsToFinish.reverse()) {
      const xq = xattrsOf(d.inode);
      const xattrs = xq === undefined ? undefined : await xq;
      host(d.path, 'set mode and times', () => {
        if (owners) lchownSync(d.path, reader.uid(d.inode), reader.gid(d.inode));
        if (xattrs !== undefined) xw?.write(d.path, xattrs);
        chmodSync(d.path, d.inode.mode);
        utimesSync(d.path, d.inode.mtime, d.inode.mtime);
      });
    }
    return result;
  }
}
