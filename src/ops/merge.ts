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
import { copyFile, link, rm, stat, statfs } from 'node:fs/promises';
import { fsyncFile } from '../io/host.ts';
import { basename, join } from 'node:path';
import { ExitCode, LivestickError, UsageError } from '../errors.ts';
import { equalBytes } from '../io/bytes.ts';
import { FileDisk, readAt, type Disk } from '../io/disk.ts';
import { Ext4, buildBlockMap, type BlockMap } from '../fs/ext4/index.ts';
import { SquashfsReader, writeSquashfs, type CompressorName, type CompressorSettings, type FileNode } from '../fs/squashfs/index.ts';
import { storedBlock, treeFromImage } from '../fs/squashfs/copy.ts';
import type { FileInode } from '../fs/squashfs/inode.ts';
import { BaseMismatchError, ExceptionStore, SnapshotDisk, SnapshotInvalidError, sameBase } from '../xform/dmsnap/index.ts';
import { BASE_NAME, TEMP_MARK, liveosDir, locateMedium, openMedium, type OpenMedium } from './medium.ts';
import { bindingFor } from './overlay.ts';
import { faultPoint, recoverMedium, switchBase, type RecoveryReport } from './switch.ts';

export interface MergeOptions {
  overlay?: string;
  compressor?: CompressorName;
  compressorSettings?: CompressorSettings;
  blockSize?: number;
  workDir?: string;
  dryRun?: boolean;
  keepOld?: boolean;
  threads?: number;
  /** Image creation time of the new base (seconds); default now. */
  mkfsTime?: number;
  onProgress?: (phase: string, done: number, total: number) => void;
}

export interface MergeResult {
  medium: string;
  dryRun: boolean;
  recovery: RecoveryReport;
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

function settingsOf(reader: SquashfsReader): { name: CompressorName; settings: CompressorSettings } {
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

async function freeSpace(dir: string): Promise<number> {
  try {
    const s = await statfs(dir);
    return s.bavail * s.bsize;
  } catch {
    return Number.POSITIVE_INFINITY;
  }
}

async function isSparse(path: string): Promise<boolean> {
  const st = await stat(path);
  return st.blocks * 512 < st.size;
}

async function canHardLink(path: string): Promise<boolean> {
  const probe = `${path}${TEMP_MARK}linkprobe`;
  try {
    await rm(probe, { force: true });
    await link(path, probe);
    await rm(probe, { force: true });
    return true;
  } catch {
    return false;
  }
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

export async function mergeMedium(dir: string, options: MergeOptions = {}): Promise<MergeResult> {
  const started = Date.now();
  const recovery = options.dryRun ? { action: 'none' as const, files: [] } : await recoverMedium(await liveosDir(dir));
  const located = await locateMedium(dir, { overlay: options.overlay });
  if (located.overlayPath === undefined) throw new UsageError(`no overlay file (LiveOS/overlay-LABEL-UUID) in ${located.liveos}: nothing to merge`);
  const overlayPath = located.overlayPath;
  const medium = await openMedium(located);
  const ovDisk = await FileDisk.open(overlayPath, { readOnly: true });
  const liveos = located.liveos;
  const newBaseName = `${BASE_NAME}${TEMP_MARK}new`;
  const newOverlayName = `${basename(overlayPath)}${TEMP_MARK}new`;
  const cleanup: string[] = [];
  try {
    const store = await ExceptionStore.open(ovDisk).catch((err: unknown) => {
      throw err instanceof LivestickError ? err.withFile(overlayPath) : err;
    });
    if (!store.valid) throw new SnapshotInvalidError('the overlay is an invalidated snapshot: its changes are lost and cannot be merged (`livestick reset` makes the medium usable again)', { file: overlayPath });
    const warnings: string[] = [];
    const b = store.binding;
    if (b.state === 'bound') {
      if (!sameBase(b.binding, await bindingFor(medium.rootDisk, b.binding.label))) {
        throw new BaseMismatchError(`the overlay belongs to a different base (bound to "${b.binding.label}"); merging would write a corrupt filesystem`, { file: overlayPath });
      }
    } else {
      warnings.push('the overlay was not bound to its base (made by another tool); it is merged as it stands');
    }
    const rootInode = await medium.squashfs.lookup(medium.rootImage);
    if (rootInode.kind !== 'file') throw new UsageError(`${medium.rootImage} in ${medium.basePath} is not a regular file`);
    const old = settingsOf(medium.squashfs);
    const compressor = options.compressor ?? old.name;
    const blockSize = options.blockSize ?? medium.squashfs.superblock.blockSize;
    const settings = options.compressorSettings ?? (compressor === old.name ? old.settings : {});
    const reuse = compressor === old.name && blockSize === medium.squashfs.superblock.blockSize && options.compressorSettings === undefined;
    if (!reuse) warnings.push(`compressor or block size changes (${old.name}/${medium.squashfs.superblock.blockSize} → ${compressor}/${blockSize}): every block is recompressed`);

    const combined = new SnapshotDisk(medium.rootDisk, store, { readOnly: true });
    const a = await analyse(medium, store, combined, rootInode, blockSize, reuse, options.onProgress);
    warnings.push(...a.warnings);
    const merged = new MergedDisk(combined, a.combinedMap);

    const oldBaseBytes = (await stat(medium.basePath)).size;
    const rootBytes = medium.rootDisk.size;
    const overlayBytesMerged = store.exceptionCount * store.geometry.chunkBytes;
    const changedShare = a.rebuilt / Math.max(1, a.changed.length);
    const estimate = Math.ceil(oldBaseBytes * (1 - changedShare) + oldBaseBytes * changedShare * 1.1 + overlayBytesMerged * 0.1) + (16 << 20);
    const overlaySize = ovDisk.size;
    const overlayCost = (await isSparse(overlayPath)) ? 2 * store.geometry.chunkBytes : overlaySize;
    const buildDir = options.workDir ?? liveos;
    const spaceAvailable = await freeSpace(liveos);
    // Keeping the old base is free where hard links exist; elsewhere (FAT) it is a copy.
    const keepCost = options.keepOld && !(await canHardLink(medium.basePath)) ? oldBaseBytes : 0;
    const spaceNeeded = estimate + overlayCost + keepCost;
    const base: Omit<MergeResult, 'newBaseBytes' | 'newBaseEstimated' | 'seconds' | 'kept'> = {
      medium: dir,
      dryRun: Boolean(options.dryRun),
      recovery,
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
      return { ...base, newBaseBytes: estimate - (16 << 20), newBaseEstimated: true, kept: { base: null, overlay: null }, seconds: (Date.now() - started) / 1000 };
    }
    if (spaceNeeded > spaceAvailable) {
      throw new NoSpaceError(`not enough free space on the medium for the switch: the new base (about ${estimate} bytes) and a fresh overlay (${overlayCost} bytes) must fit beside the old ones, but only ${spaceAvailable} bytes are free. Free some space, or build with --work-dir on another disk (the new base still has to be copied onto the medium)`, liveos);
    }

    // Build the new base.
    const target = join(buildDir, options.workDir ? `${BASE_NAME}${TEMP_MARK}partial-${process.pid}` : newBaseName);
    cleanup.push(target);
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
    await rm(target, { force: true });
    let written;
    try {
      written = await writeSquashfs(tree, target, {
        compressor,
        compressorSettings: settings,
        blockSize,
        threads: options.threads,
        mkfsTime: options.mkfsTime ?? Math.floor(Date.now() / 1000),
        onProgress: (done) => options.onProgress?.('writing', done, rootBytes),
      });
    } catch (err) {
      if ((err as { code?: string }).code === 'NO_SPACE' || (err as NodeJS.ErrnoException).code === 'ENOSPC') {
        throw new NoSpaceError('the medium ran out of space while the new base was written; nothing was changed', target);
      }
      throw err;
    }
    await fsyncFile(target);
    faultPoint('built');

    await verify(target, medium, rootInode, a, merged, reuse, options.onProgress);
    faultPoint('verified');

    let newBasePath = target;
    if (options.workDir) {
      const size = (await stat(target)).size;
      const avail = await freeSpace(liveos);
      if (size + overlayCost > avail) throw new NoSpaceError(`the new base (${size} bytes) and a fresh overlay (${overlayCost} bytes) do not fit on the medium (${avail} bytes free)`, liveos);
      newBasePath = join(liveos, newBaseName);
      cleanup.push(newBasePath);
      await copyFile(target, newBasePath);
      await fsyncFile(newBasePath);
      await rm(target, { force: true });
    }

    // The fresh overlay: same name, size and chunk size, bound to the new base.
    const newOverlayPath = join(liveos, newOverlayName);
    cleanup.push(newOverlayPath);
    await rm(newOverlayPath, { force: true });
    const newBaseFile = await FileDisk.open(newBasePath, { readOnly: true });
    let binding;
    try {
      const reader = await SquashfsReader.open(newBaseFile);
      binding = await bindingFor(await reader.openFileDisk(medium.rootImage), medium.rootImage);
    } finally {
      await newBaseFile.close();
    }
    const ov = await FileDisk.open(newOverlayPath, { create: { size: overlaySize } });
    try {
      await ExceptionStore.format(ov, store.geometry.chunkSectors, binding);
    } finally {
      await ov.close();
    }
    faultPoint('overlay-created');

    await ovDisk.close();
    await medium.close();
    const stamp = new Date().toISOString().replace(/[-:]/g, '').replace(/\..*/, '').replace('T', '-');
    const kept = options.keepOld ? { base: `${BASE_NAME}${TEMP_MARK}old-${stamp}`, overlay: `${basename(overlayPath)}${TEMP_MARK}old-${stamp}` } : { base: null, overlay: null };
    await switchBase(liveos, {
      base: BASE_NAME,
      overlay: basename(overlayPath),
      newBase: newBaseName,
      newOverlay: newOverlayName,
      oldOverlay: kept.overlay ?? `${basename(overlayPath)}${TEMP_MARK}old`,
      oldBase: kept.base,
    });
    cleanup.length = 0;
    return {
      ...base,
      newBaseBytes: written.size,
      newBaseEstimated: false,
      kept: { base: kept.base && join(liveos, kept.base), overlay: kept.overlay && join(liveos, kept.overlay) },
      seconds: (Date.now() - started) / 1000,
    };
  } finally {
    for (const f of cleanup) await rm(f, { force: true });
    await ovDisk.close().catch(() => {});
    await medium.close().catch(() => {});
  }
}

/** Checks the new image before it is used: carried blocks byte for byte, rebuilt blocks by content. */
async function verify(path: string, medium: OpenMedium, oldRoot: FileInode, a: Analysis, merged: Disk, reuse: boolean, onProgress?: MergeOptions['onProgress']): Promise<void> {
  const file = await FileDisk.open(path, { readOnly: true });
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
