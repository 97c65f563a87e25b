/**
 * `livestick merge`: fold the overlay into a new base, drop free space, switch crash-safely.
 *
 * Design notes
 * - The new root image is the combined device (root image inside squashfs.img + overlay) with every
 *   block that is free in the combined ext4 filesystem read as zeros; the writer stores all-zero
 *   blocks sparse, so freed space costs nothing. With a journal that needs recovery the bitmaps are
 *   not trusted and nothing is dropped.
 * - Cost follows the change, not the base: a SquashFS data block of the root image that no overlay
 *   chunk touches and that holds no block freed since the base was made (used in the base's bitmap,
 *   free now) is identical in the new image, so its stored bytes are copied verbatim (same compressor
 *   and block size). Only changed blocks are read through the overlay and compressed.
 * - Every other file of the old squashfs.img is carried over the same way (treeFromImage).
 * - Before the switch the new image is verified: carried blocks by their stored bytes, rebuilt blocks
 *   by decompressing them and comparing with the combined device (free blocks as zeros).
 * - Space: the new base is built beside the old one (or in --work-dir, then copied); the free space
 *   needed is checked first with an estimate and again with the exact size before copying.
 * - The switch itself is ops/switch.ts.
 */
import { stat } from 'node:fs/promises';
import { FAT_MAX_FILE_BYTES, removeFile } from '../io/host.ts';
import { SimulatedCrash } from '../io/faults.ts';
import { join } from 'node:path';
import type { WritableFileSystem } from '../fs/filesystem.ts';
import { ExitCode, LivestickError, UsageError, fromSystemError } from '../errors.ts';
import { equalBytes, formatSize, isAllZero } from '../io/bytes.ts';
import { FileDisk, readAt, type Disk } from '../io/disk.ts';
import { Ext4, buildBlockMap, type BlockMap } from '../fs/ext4/index.ts';
import { SquashfsReader, compressorForWriting, writeSquashfs, type CompressorName, type CompressorSettings, type FileNode } from '../fs/squashfs/index.ts';
import { storedBlock, treeFromImage } from '../fs/squashfs/copy.ts';
import type { FileInode } from '../fs/squashfs/inode.ts';
import { BaseMismatchError, ExceptionStore, SnapshotDisk, SnapshotInvalidError, sameBase } from '../xform/dmsnap/index.ts';
import { BASE_NAME, TEMP_MARK, liveosDir, locateMedium, openMedium, withMediumRoot, type OpenMedium } from './medium.ts';
import { copyDiskInto, fileExists, removeIfExists } from './files.ts';
import { fsBasename, fsJoin, type MediumRoot } from './root.ts';
import { bindingFor } from './overlay.ts';
import { explainErrno, recoverMedium, stepPoint, switchBase, type RecoveryReport } from './switch.ts';

/** Which medium and how to open it: shared by every medium command. */
export interface MediumOptions {
  /** The partition holding LiveOS/, when several of an image's or device's do. */
  partition?: number;
  /** Write a device even while it is mounted or holds this host's system. */
  forceDevice?: boolean;
}

export interface MergeOptions extends MediumOptions {
  overlay?: string;
  compressor?: CompressorName;
  compressorSettings?: CompressorSettings;
  blockSize?: number;
  workDir?: string;
  dryRun?: boolean;
  keepOld?: boolean;
  /** Rebuild the base even when the overlay holds no changes. */
  force?: boolean;
  threads?: number;
  /** Image creation time of the new base (seconds); default now. */
  mkfsTime?: number;
  onProgress?: (phase: string, done: number, total: number) => void;
}

export interface MergeResult {
  medium: string;
  dryRun: boolean;
  recovery: RecoveryReport;
  /** 'would-fail' when a pre-check fails (with --dry-run; otherwise the merge throws the first problem). */
  verdict: 'ok' | 'would-fail';
  problems: { code: string; message: string; file?: string }[];
  /** The overlay held no changes: nothing was built or switched. */
  nothingToMerge: boolean;
  compressor: CompressorName;
  blockSize: number;
  oldBaseBytes: number;
  newBaseBytes: number;
  /** Estimated when dryRun. */
  newBaseEstimated: boolean;
  rootImageBytes: number;
  overlayBytesMerged: number;
  /** Bytes of filesystem blocks that held data in the base or overlay and are free now: not carried into the new base. */
  freeBytesDropped: number;
  freeSpaceDropping: boolean;
  blocks: { total: number; rebuilt: number; carried: number };
  spaceNeeded: number;
  spaceAvailable: number;
  kept: { base: string | null; overlay: string | null };
  seconds: number;
  warnings: string[];
}

class NoSpaceError extends LivestickError {
  constructor(message: string, file: string) {
    super('NO_SPACE', ExitCode.ioError, message, { file });
  }
}

/** The merged root image: the combined device with free filesystem blocks read as zeros. */
class MergedDisk implements Disk {
  readonly readOnly = true;
  constructor(
    readonly combined: Disk,
    readonly free: BlockMap | undefined,
  ) {}
  get size(): number {
    return this.combined.size;
  }
  async read(buf: Uint8Array, offset: number): Promise<void> {
    await this.combined.read(buf, offset);
    const map = this.free;
    if (map === undefined) return;
    const bs = map.blockSize;
    const end = offset + buf.byteLength;
    for (let b = Math.floor(offset / bs); b * bs < end && b < map.blocksCount; b++) {
      if (!map.isUsed(b)) buf.fill(0, Math.max(0, b * bs - offset), Math.min(buf.byteLength, (b + 1) * bs - offset));
    }
  }
  async write(): Promise<void> {
    throw new UsageError('read-only');
  }
  async flush(): Promise<void> {}
  async close(): Promise<void> {}
}

export function settingsOf(reader: SquashfsReader): { name: CompressorName; settings: CompressorSettings } {
  const c = reader.compressor;
  const o = c.options;
  const dv = o ? new DataView(o.buffer, o.byteOffset, o.byteLength) : undefined;
  switch (c.name) {
    case 'gzip':
      return { name: 'gzip', settings: dv && o && o.byteLength >= 6 ? { level: dv.getUint32(0, true), window: dv.getUint16(4, true) } : {} };
    case 'zstd':
      return { name: 'zstd', settings: dv && o && o.byteLength >= 4 ? { level: dv.getUint32(0, true) } : {} };
    case 'xz': {
      if (!dv || !o || o.byteLength < 8) return { name: 'xz', settings: {} };
      const bits = dv.getUint32(4, true);
      const names = (['x86', 'powerpc', 'ia64', 'arm', 'armthumb', 'sparc'] as const).filter((_, i) => bits & (1 << i));
      return { name: 'xz', settings: { dictSize: dv.getUint32(0, true), ...(names.length > 0 ? { bcj: names } : {}) } };
    }
    default:
      return { name: c.name, settings: {} };
  }
}

/** Free bytes for this user on the medium's filesystem (unknown hosts: no limit checked). */
async function freeSpace(root: MediumRoot): Promise<number> {
  return (await root.fs.space()).freeBytes;
}

async function isSparse(root: MediumRoot, path: string): Promise<boolean> {
  const st = await root.fs.stat(path);
  return st.allocatedBytes !== undefined && st.allocatedBytes < st.size;
}

interface Analysis {
  changed: Uint8Array;
  rebuilt: number;
  carried: number;
  freeBytesDropped: number;
  dropFree: boolean;
  combinedMap: BlockMap | undefined;
  warnings: string[];
}

/** Which blocks of the root image must be rebuilt, and what free space goes away. */
async function analyse(medium: OpenMedium, store: ExceptionStore, combined: Disk, rootInode: FileInode, blockSize: number, reuse: boolean, onProgress?: MergeOptions['onProgress']): Promise<Analysis> {
  const warnings: string[] = [];
  const size = medium.rootDisk.size;
  const nBlocks = Math.ceil(size / blockSize);
  const changed = new Uint8Array(nBlocks);
  const cb = store.geometry.chunkBytes;
  for (const e of store.exceptions()) {
    const first = Math.floor((e.oldChunk * cb) / blockSize);
    const last = Math.floor((Math.min(size, (e.oldChunk + 1) * cb) - 1) / blockSize);
    for (let i = first; i <= last; i++) changed[i] = 1;
  }
  const fs = await Ext4.open(combined);
  const state = await fs.state();
  let combinedMap: BlockMap | undefined;
  let freeBytesDropped = 0;
  const dropFree = !state.needsRecovery;
  if (!dropFree) {
    warnings.push('the filesystem was not cleanly unmounted (its journal needs recovery): free space is not dropped this time, only the overlay is folded in');
  } else {
    combinedMap = await buildBlockMap(fs, { onProgress: (d, t) => onProgress?.('mapping', d, t) });
    const baseMap = await buildBlockMap(await Ext4.open(medium.rootDisk), { onProgress: (d, t) => onProgress?.('mapping base', d, t) });
    const bs = combinedMap.blockSize;
    for (let b = combinedMap.firstDataBlock; b < combinedMap.blocksCount; b++) {
      if (combinedMap.isUsed(b)) continue;
      const inOverlay = store.lookup(Math.floor((b * bs) / cb)) !== undefined;
      if (baseMap.isUsed(b) || inOverlay) {
        freeBytesDropped += bs;
        changed[Math.floor((b * bs) / blockSize)] = 1;
      }
    }
  }
  // The tail kept in a fragment is always rebuilt (it is small); without reuse everything is.
  for (let i = rootInode.blockSizes.length; i < nBlocks; i++) changed[i] = 1;
  if (!reuse) changed.fill(1);
  let rebuilt = 0;
  for (const c of changed) rebuilt += c;
  return { changed, rebuilt, carried: nBlocks - rebuilt, freeBytesDropped, dropFree, combinedMap, warnings };
}

/** What would stop a switch on this host, found before anything is built. */
export interface Preflight {
  problems: LivestickError[];
  /** The host makes hard links in LiveOS/ (not on FAT): a kept old base then costs nothing. */
  hardLinks: boolean;
}

/**
 * Checks that LiveOS/ takes new files and that the base and overlay can be replaced: an immutable or
 * append-only file, a read-only mount or a missing permission shows up here, in a second, instead of
 * after the build. Creates and removes one probe file.
 */
export async function preflight(root: MediumRoot, liveos: string, files: readonly string[]): Promise<Preflight> {
  const problems: LivestickError[] = [];
  if (root.fs.readOnly && root.hostDir === undefined) {
    // An image or device opened only for reading (a dry run): what can be told without writing.
    if (!root.canWrite) problems.push(new LivestickError('UNSUPPORTED', ExitCode.failure, `cannot write ${root.display(liveos)}: ${root.fs.type} is read-only to livestick`, { file: root.display(liveos) }));
    return { problems, hardLinks: typeof (root.fs as { link?: unknown }).link === 'function' };
  }
  const probe = fsJoin(liveos, `${BASE_NAME}${TEMP_MARK}probe`);
  let hardLinks = false;
  let fs: WritableFileSystem | undefined;
  try {
    fs = root.writable();
    await removeIfExists(fs, probe);
    const d = await fs.createFile(probe, { size: 0 });
    await d.close();
    if (fs.link) {
      try {
        await fs.link(probe, `${probe}-link`);
        hardLinks = true;
      } catch (err) {
        if (err instanceof SimulatedCrash) throw err;
      }
    }
  } catch (err) {
    if (err instanceof SimulatedCrash) throw err;
    problems.push(explainHostProblem(err, root.display(liveos), 'create files in'));
  } finally {
    // Best effort: a probe left behind is removed by the next command's recovery.
    for (const f of [`${probe}-link`, probe]) {
      if (fs) {
        await removeIfExists(fs, f).catch((err: unknown) => {
          if (err instanceof SimulatedCrash) throw err;
        });
      }
    }
  }
  for (const f of files) {
    try {
      // Opening for writing fails exactly where a rename or replace would: immutable, append-only, read-only.
      const d = await root.writable().openFileForWriting(f);
      await d.close();
    } catch (err) {
      if (err instanceof SimulatedCrash) throw err;
      problems.push(explainHostProblem(err, root.display(f), 'replace'));
    }
  }
  return { problems, hardLinks };
}

function explainHostProblem(err: unknown, file: string, action: string): LivestickError {
  const e = err instanceof LivestickError ? err : fromSystemError(err, file, action);
  const code = ((e.cause ?? err) as NodeJS.ErrnoException | undefined)?.code;
  const why = (code === undefined ? undefined : explainErrno(code)) ?? e.message;
  return new LivestickError(e.code, e.exitCode, `cannot ${action} ${file}: ${why}`, { file, cause: err });
}

/** New-base size from the stored sizes of carried blocks and a compressed sample of rebuilt ones. */
async function estimateNewBase(
  medium: OpenMedium,
  rootInode: FileInode,
  a: Analysis,
  merged: Disk,
  compressor: CompressorName,
  settings: CompressorSettings,
  blockSize: number,
  reuse: boolean,
  oldBaseBytes: number,
): Promise<number> {
  const oldBlockBytes = rootInode.blockSizes.reduce((s, w) => s + (w & 0xffffff), 0);
  let carried = 0;
  const rebuilt: number[] = [];
  for (let i = 0; i < a.changed.length; i++) {
    if (reuse && a.changed[i] === 0 && i < rootInode.blockSizes.length) carried += (rootInode.blockSizes[i] as number) & 0xffffff;
    else rebuilt.push(i);
  }
  let perBlock = 0;
  if (rebuilt.length > 0) {
    const comp = await compressorForWriting(compressor, settings, blockSize);
    const samples = Math.min(rebuilt.length, 24);
    let total = 0;
    for (let k = 0; k < samples; k++) {
      const i = rebuilt[Math.floor(((k + 0.5) * rebuilt.length) / samples)] as number;
      const len = Math.min(blockSize, merged.size - i * blockSize);
      const data = await readAt(merged, i * blockSize, len);
      total += isAllZero(data) ? 0 : Math.min(len, comp.compress(data).byteLength);
    }
    perBlock = total / samples;
  }
  // Everything else in the old image (other files, tables) is carried over at about its size.
  const rest = Math.max(0, oldBaseBytes - oldBlockBytes);
  return Math.ceil(carried + perBlock * rebuilt.length + rest);
}

/** Merges the overlay of the medium at `target`: a directory holding LiveOS/, an image file or a device. */
export async function mergeMedium(target: string, options: MergeOptions = {}): Promise<MergeResult> {
  // A dry run on a directory still probes that LiveOS/ takes new files; an image or device is then only read.
  const isDirectory = await stat(target).then((st) => st.isDirectory(), () => false);
  return withMediumRoot(target, { write: !options.dryRun || isDirectory, force: options.forceDevice, partition: options.partition }, (root) => mergeOn(root, options));
}

async function mergeOn(root: MediumRoot, options: MergeOptions): Promise<MergeResult> {
  const started = Date.now();
  const dir = root.target;
  const recovery: RecoveryReport = options.dryRun ? { action: 'none', files: [], warnings: [] } : await recoverMedium({ root, liveos: await liveosDir(root) });
  const located = await locateMedium(root, { overlay: options.overlay });
  if (located.overlayPath === undefined) throw new UsageError(`no overlay file (LiveOS/overlay-LABEL-UUID) in ${root.display(located.liveos)}: nothing to merge`);
  const overlayPath = located.overlayPath;
  const shownOverlay = root.display(overlayPath);
  const medium = await openMedium(located);
  const ovDisk = await root.fs.openFile(overlayPath);
  const liveos = located.liveos;
  const newBaseName = `${BASE_NAME}${TEMP_MARK}new`;
  const newOverlayName = `${fsBasename(overlayPath)}${TEMP_MARK}new`;
  // Files to remove if the merge stops before the switch owns them: on the medium, and on the host (--work-dir).
  const cleanup: string[] = [];
  const hostCleanup: string[] = [];
  try {
    const store = await ExceptionStore.open(ovDisk).catch((err: unknown) => {
      throw err instanceof LivestickError ? err.withFile(shownOverlay) : err;
    });
    const problems: LivestickError[] = [];
    if (!store.valid) problems.push(new SnapshotInvalidError('the overlay is an invalidated snapshot: its changes are lost and cannot be merged (`livestick reset` makes the medium usable again)', { file: shownOverlay }));
    const warnings: string[] = [...recovery.warnings];
    const b = store.binding;
    if (b.state === 'bound') {
      if (!sameBase(b.binding, await bindingFor(medium.rootDisk, b.binding.label))) {
        problems.push(new BaseMismatchError(`the overlay belongs to a different base (bound to "${b.binding.label}"); merging would write a corrupt filesystem`, { file: shownOverlay }));
      }
    } else {
      warnings.push('the overlay was not bound to its base (made by another tool); it is merged as it stands');
    }
    if (problems.length > 0 && !options.dryRun) throw problems[0];
    const rootInode = await medium.squashfs.lookup(medium.rootImage);
    if (rootInode.kind !== 'file') throw new UsageError(`${medium.rootImage} in ${root.display(medium.basePath)} is not a regular file`);
    const old = settingsOf(medium.squashfs);
    const compressor = options.compressor ?? old.name;
    const blockSize = options.blockSize ?? medium.squashfs.superblock.blockSize;
    const settings = options.compressorSettings ?? (compressor === old.name ? old.settings : {});
    const reuse = compressor === old.name && blockSize === medium.squashfs.superblock.blockSize && options.compressorSettings === undefined;
    const oldBaseBytes = (await root.fs.stat(medium.basePath)).size;
    const rootBytes = medium.rootDisk.size;
    const overlayBytesMerged = store.exceptionCount * store.geometry.chunkBytes;
    // The result when nothing is built: an empty overlay, or a dry run stopped by a problem.
    const unbuilt = async (r: Pick<MergeResult, 'dryRun' | 'verdict' | 'problems' | 'nothingToMerge' | 'newBaseBytes' | 'newBaseEstimated' | 'overlayBytesMerged' | 'warnings'>): Promise<MergeResult> => ({
      medium: dir, recovery, compressor, blockSize, oldBaseBytes, rootImageBytes: rootBytes, freeBytesDropped: 0, freeSpaceDropping: false,
      blocks: { total: 0, rebuilt: 0, carried: 0 }, spaceNeeded: 0, spaceAvailable: await freeSpace(root), kept: { base: null, overlay: null }, seconds: (Date.now() - started) / 1000, ...r,
    });
    if (problems.length === 0 && store.exceptionCount === 0 && !options.force && reuse) {
      return unbuilt({
        dryRun: Boolean(options.dryRun), verdict: 'ok', problems: [], nothingToMerge: true, newBaseBytes: oldBaseBytes, newBaseEstimated: false, overlayBytesMerged: 0,
        warnings: [...warnings, 'the overlay holds no changes: nothing to merge, the base was left as it is (--force rebuilds it anyway)'],
      });
    }
    if (!reuse) warnings.push(`compressor or block size changes (${old.name}/${formatSize(medium.squashfs.superblock.blockSize)} → ${compressor}/${formatSize(blockSize)}): every block is recompressed`);

    const pre = await preflight(root, liveos, [medium.basePath, overlayPath]);
    problems.push(...pre.problems);
    if (problems.length > 0 && !options.dryRun) throw problems[0];

    const combined = new SnapshotDisk(medium.rootDisk, store, { readOnly: true });
    const a = problems.length > 0 ? undefined : await analyse(medium, store, combined, rootInode, blockSize, reuse, options.onProgress);
    if (a === undefined) return unbuilt({ dryRun: true, verdict: 'would-fail', problems: problems.map(problemJson), nothingToMerge: false, newBaseBytes: 0, newBaseEstimated: true, overlayBytesMerged, warnings });
    warnings.push(...a.warnings);
    const merged = new MergedDisk(combined, a.combinedMap);

    const estimate = await estimateNewBase(medium, rootInode, a, merged, compressor, settings, blockSize, reuse, oldBaseBytes);
    const overlaySize = ovDisk.size;
    const overlayCost = (await isSparse(root, overlayPath)) ? 2 * store.geometry.chunkBytes : overlaySize;
    const spaceAvailable = await freeSpace(root);
    // Keeping the old base is free where hard links exist; elsewhere (FAT) it is a copy.
    const keepCost = options.keepOld && !pre.hardLinks ? oldBaseBytes : 0;
    // A margin for the estimate: 10% of the new base and 16 MiB.
    const spaceNeeded = Math.ceil(estimate * 1.1) + (16 << 20) + overlayCost + keepCost;
    if (spaceNeeded > spaceAvailable) {
      problems.push(
        new NoSpaceError(
          `not enough free space on the medium: the new base (about ${formatSize(estimate)}) and a fresh overlay (${formatSize(overlayCost)})${keepCost > 0 ? ` and a copy of the old base (${formatSize(keepCost)}, no hard links here)` : ''} must fit beside the old ones: ${formatSize(spaceNeeded)} needed with a margin, ${formatSize(spaceAvailable)} free. Free some space, or build with --work-dir on another disk (the new base still has to be copied onto the medium)`,
          root.display(liveos),
        ),
      );
    }
    const result: Omit<MergeResult, 'newBaseBytes' | 'newBaseEstimated' | 'seconds' | 'kept'> = {
      medium: dir,
      dryRun: Boolean(options.dryRun),
      recovery,
      verdict: problems.length > 0 ? 'would-fail' : 'ok',
      problems: problems.map(problemJson),
      nothingToMerge: false,
      compressor,
      blockSize,
      oldBaseBytes,
      rootImageBytes: rootBytes,
      overlayBytesMerged,
      freeBytesDropped: a.freeBytesDropped,
      freeSpaceDropping: a.dropFree,
      blocks: { total: a.changed.length, rebuilt: a.rebuilt, carried: a.carried },
      spaceNeeded,
      spaceAvailable,
      warnings,
    };
    if (options.dryRun) {
      return { ...result, newBaseBytes: estimate, newBaseEstimated: true, kept: { base: null, overlay: null }, seconds: (Date.now() - started) / 1000 };
    }
    if (problems.length > 0) throw problems[0];

    // Build the new base: in place beside the old one, or on the host (--work-dir) and then copied.
    const fs = root.writable();
    const newBasePath = fsJoin(liveos, newBaseName);
    const hostTarget = options.workDir ? join(options.workDir, `${BASE_NAME}${TEMP_MARK}partial-${process.pid}`) : undefined;
    const offsets = medium.squashfs.blockOffsets(rootInode);
    const tree = await treeFromImage(medium.squashfs, {
      override: (path, inode, meta) => {
        if (path !== medium.rootImage || inode.kind !== 'file') return undefined;
        const node: FileNode = {
          ...meta,
          type: 'file',
          size: rootBytes,
          content: {
            kind: 'disk',
            disk: merged,
            verbatim: (i) => (a.changed[i] === 0 && reuse ? storedBlock(medium.squashfs, inode, offsets, i) : undefined),
          },
        };
        return node;
      },
    });
    if (!reuse) {
      // Carried-over files in the rest of the tree cannot reuse blocks either.
      const strip = (n: typeof tree): void => {
        for (const child of n.entries.values()) {
          if (child.type === 'dir') strip(child);
          else if (child.type === 'file' && child.content.kind === 'disk' && child.content.disk !== merged) Object.assign(child, { content: { kind: 'disk', disk: child.content.disk } });
        }
      };
      strip(tree);
    }
    const squashOptions = {
      compressor,
      compressorSettings: settings,
      blockSize,
      threads: options.threads,
      mkfsTime: options.mkfsTime ?? Math.floor(Date.now() / 1000),
      onProgress: (done: number) => options.onProgress?.('writing', done, rootBytes),
    };
    let written;
    try {
      if (hostTarget) {
        hostCleanup.push(hostTarget);
        await removeFile(hostTarget);
        written = await writeSquashfs(tree, hostTarget, squashOptions);
      } else {
        cleanup.push(newBasePath);
        await removeIfExists(fs, newBasePath);
        // Made at the estimated size (every byte is written before it is read) and trimmed to the real one by the writer.
        const out = await fs.createFile(newBasePath, { size: Math.min(estimate, maxFileBytes(fs)), uninitialized: true });
        try {
          written = await writeSquashfs(tree, out, squashOptions);
          await out.flush();
        } finally {
          await out.close();
        }
        await fs.flush();
      }
    } catch (err) {
      if ((err as { code?: string }).code === 'NO_SPACE' || (err as NodeJS.ErrnoException).code === 'ENOSPC') {
        const where = hostTarget ? `the work directory ${options.workDir}` : `the medium (${formatSize(spaceAvailable)} were free)`;
        throw new NoSpaceError(`${where} ran out of space while the new base was written; nothing was changed`, hostTarget ?? root.display(newBasePath));
      }
      throw err;
    }
    stepPoint('built');

    await verify(hostTarget ? { host: hostTarget } : { root, path: newBasePath }, medium, rootInode, a, merged, reuse, options.onProgress);
    stepPoint('verified');

    if (hostTarget) {
      const size = written.size;
      const avail = await freeSpace(root);
      if (size + overlayCost > avail) throw new NoSpaceError(`the new base (${formatSize(size)}) and a fresh overlay (${formatSize(overlayCost)}) do not fit on the medium (${formatSize(avail)} free); nothing was changed`, root.display(liveos));
      cleanup.push(newBasePath);
      await removeIfExists(fs, newBasePath);
      await copyFromHost(hostTarget, fs, newBasePath, (n) => options.onProgress?.('copying', n, size));
      await removeFile(hostTarget);
    }
    await copyOwnership(root, medium.basePath, newBasePath, warnings);

    // The fresh overlay: same name, size, chunk size, mode and owner, bound to the new base.
    const newOverlayPath = fsJoin(liveos, newOverlayName);
    cleanup.push(newOverlayPath);
    await removeIfExists(fs, newOverlayPath);
    const newBaseFile = await fs.openFile(newBasePath);
    let binding;
    try {
      const reader = await SquashfsReader.open(newBaseFile);
      binding = await bindingFor(await reader.openFileDisk(medium.rootImage), medium.rootImage);
    } finally {
      await newBaseFile.close();
    }
    // Uninitialized: a store is read from its header sector and first metadata area, which format writes; the kernel (and ExceptionStore) zero each later area before using it.
    const ov = await fs.createFile(newOverlayPath, { size: overlaySize, uninitialized: true });
    try {
      await ExceptionStore.format(ov, store.geometry.chunkSectors, binding);
      await ov.flush();
    } finally {
      await ov.close();
    }
    await fs.flush();
    await copyOwnership(root, overlayPath, newOverlayPath, warnings);
    stepPoint('overlay-created');

    await ovDisk.close();
    await medium.close();
    const stamp = new Date().toISOString().replace(/[-:]/g, '').replace(/\..*/, '').replace('T', '-');
    const overlayName = fsBasename(overlayPath);
    const oldOverlayName = options.keepOld ? `${overlayName}${TEMP_MARK}old-${stamp}` : `${overlayName}${TEMP_MARK}old`;
    const oldBaseName = options.keepOld ? `${BASE_NAME}${TEMP_MARK}old-${stamp}` : `${BASE_NAME}${TEMP_MARK}old`;
    // From here the switch owns the new files: it removes them itself when it rolls back.
    cleanup.length = 0;
    warnings.push(
      ...(await switchBase(
        { root, liveos },
        {
          base: BASE_NAME,
          overlay: overlayName,
          newBase: newBaseName,
          newOverlay: newOverlayName,
          oldOverlay: oldOverlayName,
          oldBase: oldBaseName,
          keepOld: Boolean(options.keepOld),
        },
      )),
    );
    const keptBase = options.keepOld && (await fileExists(root.fs, fsJoin(liveos, oldBaseName))) ? root.display(fsJoin(liveos, oldBaseName)) : null;
    return {
      ...result,
      newBaseBytes: written.size,
      newBaseEstimated: false,
      kept: { base: keptBase, overlay: options.keepOld ? root.display(fsJoin(liveos, oldOverlayName)) : null },
      seconds: (Date.now() - started) / 1000,
    };
  } finally {
    for (const f of cleanup) await removeIfExists(root.writable(), f).catch(() => {});
    for (const f of hostCleanup) await removeFile(f).catch(() => {});
    await ovDisk.close().catch(() => {});
    await medium.close().catch(() => {});
  }
}

function problemJson(e: LivestickError): { code: string; message: string; file?: string } {
  return { code: e.code, message: e.message, ...(e.file === undefined ? {} : { file: e.file }) };
}

/** The new file gets the old one's mode, and its owner where this process may set it (formats without either: nothing to do). */
async function copyOwnership(root: MediumRoot, from: string, to: string, warnings: string[]): Promise<void> {
  const fs = root.writable();
  const st = await fs.stat(from);
  if (fs.setMode) await fs.setMode(to, st.mode & 0o7777);
  if (!fs.setOwner) return;
  const now = await fs.stat(to);
  if (now.uid === st.uid && now.gid === st.gid) return;
  try {
    await fs.setOwner(to, st.uid, st.gid);
  } catch (err) {
    if (err instanceof SimulatedCrash) throw err;
    warnings.push(`${root.display(to)} could not be given the owner of ${fsBasename(from)} (uid ${st.uid}, gid ${st.gid}): ${(err as Error).message}`);
  }
}

/** The largest file the medium's filesystem holds (FAT: 4 GiB − 1); a larger estimate is capped and the writer grows the file if it must. */
function maxFileBytes(fs: WritableFileSystem): number {
  return fs.type.startsWith('fat') ? FAT_MAX_FILE_BYTES : Number.MAX_SAFE_INTEGER;
}

/** Copies a host file (a base built in --work-dir) onto the medium; durable when it returns. */
async function copyFromHost(hostPath: string, fs: WritableFileSystem, to: string, onBytes?: (done: number) => void): Promise<void> {
  const src = await FileDisk.open(hostPath, { readOnly: true });
  try {
    await copyDiskInto(src, fs, to, onBytes);
  } finally {
    await src.close();
  }
}

/** Checks the new image before it is used: carried blocks byte for byte, rebuilt blocks by content. */
async function verify(where: { host: string } | { root: MediumRoot; path: string }, medium: OpenMedium, oldRoot: FileInode, a: Analysis, merged: Disk, reuse: boolean, onProgress?: MergeOptions['onProgress']): Promise<void> {
  const path = 'host' in where ? where.host : where.root.display(where.path);
  const file = 'host' in where ? await FileDisk.open(where.host, { readOnly: true }) : await where.root.fs.openFile(where.path);
  try {
    const reader = await SquashfsReader.open(file, { cacheBytes: 8 << 20 });
    const ino = await reader.lookup(medium.rootImage);
    if (ino.kind !== 'file' || ino.fileSize !== merged.size) throw new LivestickError('FAILURE', ExitCode.failure, 'verification failed: the new base does not hold a root image of the right size; nothing was changed', { file: path });
    const bs = reader.superblock.blockSize;
    const newOffsets = reader.blockOffsets(ino);
    const oldOffsets = medium.squashfs.blockOffsets(oldRoot);
    const n = Math.ceil(ino.fileSize / bs);
    for (let i = 0; i < n; i++) {
      let ok: boolean;
      if (reuse && a.changed[i] === 0 && i < ino.blockSizes.length && i < oldRoot.blockSizes.length) {
        const [x, y] = await Promise.all([storedBlock(reader, ino, newOffsets, i), storedBlock(medium.squashfs, oldRoot, oldOffsets, i)]);
        ok = x.word === y.word && equalBytes(x.bytes, y.bytes);
      } else {
        const len = Math.min(bs, ino.fileSize - i * bs);
        const got = new Uint8Array(len);
        await reader.readRange(ino, got, i * bs);
        ok = equalBytes(got, await readAt(merged, i * bs, len));
      }
      if (!ok) throw new LivestickError('FAILURE', ExitCode.failure, `verification failed at block ${i} of ${medium.rootImage} in the new base; nothing was changed`, { file: path });
      if ((i & 63) === 0) onProgress?.('verifying', i * bs, ino.fileSize);
    }
  } finally {
    await file.close();
  }
}
