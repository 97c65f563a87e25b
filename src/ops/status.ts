/**
 * `livestick status`: where the overlay's space went.
 *
 * Design notes
 * - The combined device (root image inside squashfs.img + overlay) is opened read-only and its ext4
 *   block map built once. Every copied chunk is then attributed, byte for byte, to the filesystem
 *   blocks it covers: a file or directory (data, extent/indirect tree and xattr blocks count for their
 *   inode), the journal, other filesystem metadata (superblocks, descriptors, bitmaps, inode tables),
 *   or free space. Copied chunks whose blocks are free now are what a merge gives back (reclaimable).
 * - Bytes of chunks beyond the filesystem's end (an image larger than its filesystem) count as
 *   metadata-free "outside the filesystem".
 * - A filesystem that was not cleanly unmounted is reported: its bitmaps may lag behind the journal.
 */
import { formatSize } from '../io/bytes.ts';
import { Ext4, buildBlockMap, BlockKind } from '../fs/ext4/index.ts';
import { SnapshotDisk, ExceptionStore } from '../xform/dmsnap/index.ts';
import { LivestickError, UsageError } from '../errors.ts';
import { bindingFor, describeStore, type OverlayInfo } from './overlay.ts';
import { sameBase } from '../xform/dmsnap/binding.ts';
import { locateMedium, openMedium, TEMP_MARK, withRecoveredMedium, type Medium } from './medium.ts';
import { fsJoin, type MediumRoot } from './root.ts';
import type { RecoveryReport } from './switch.ts';
import type { MediumOptions } from './merge.ts';

export interface PathUsage {
  path: string;
  bytes: number;
}

export interface StatusReport {
  kind: 'dm-snapshot';
  medium: string;
  base: string;
  rootImage: string;
  recovery: RecoveryReport;
  overlay: OverlayInfo;
  filesystem: {
    type: 'ext4';
    label: string;
    blockSize: number;
    blocks: number;
    freeBlocks: number;
    clean: boolean;
    needsRecovery: boolean;
  };
  /** Overlay bytes by what they hold now. */
  usage: {
    files: number;
    journal: number;
    metadata: number;
    reclaimable: number;
    outside: number;
  };
  reclaimableBytes: number;
  topFiles: PathUsage[];
  topDirectories: PathUsage[];
  afterMerge: { overlayUsedBytes: number; overlayFill: number; reclaimedBytes: number };
  warnings: string[];
  recommendation: string;
  /** false when the medium needs attention (foreign or invalid overlay, damaged filesystem, nearly full); the CLI then exits 3. */
  healthy: boolean;
  problems: string[];
  /** Space on the host filesystem holding LiveOS/, and what the overlay can still really grow by. */
  host: { freeBytes: number | null; overlayAllocatedBytes: number; overlayHeadroomBytes: number };
  /** Previous bases and overlays kept by `merge --keep-old` (or left by an interrupted tidy-up). */
  kept: { name: string; bytes: number }[];
}

export interface StatusOptions extends MediumOptions {
  overlay?: string;
  top?: number;
  /** Fill ratio above which a warning is given (default 0.8). */
  warnAt?: number;
  onProgress?: (done: number, total: number) => void;
}

/** The overlay's figures for the medium at `target` (a directory holding LiveOS/, an image file or a device). */
export async function mediumStatus(target: string, options: StatusOptions = {}): Promise<StatusReport> {
  // An interrupted merge is finished (or rolled back) before anything else looks at the medium.
  return withRecoveredMedium(target, { partition: options.partition, force: options.forceDevice }, (root, recovery) => statusOn(root, recovery, options));
}

async function statusOn(root: MediumRoot, recovery: RecoveryReport, options: StatusOptions): Promise<StatusReport> {
  const dir = root.target;
  const top = options.top ?? 10;
  const found = await locateMedium(root, { overlay: options.overlay });
  if (found.overlayPath === undefined) throw new UsageError(`no overlay file (LiveOS/overlay-LABEL-UUID) in ${root.display(found.liveos)}; this medium has no persistence yet`);
  const overlayPath = found.overlayPath;
  const shownOverlay = root.display(overlayPath);
  const located = { ...found, basePath: root.display(found.basePath) };
  const medium = await openMedium(found);
  const ovDisk = await root.fs.openFile(overlayPath);
  try {
    const store = await ExceptionStore.open(ovDisk).catch((err: unknown) => {
      throw err instanceof LivestickError ? err.withFile(shownOverlay) : err;
    });
    const overlay = describeStore(shownOverlay, store);
    const warnings: string[] = [...recovery.warnings];
    const problems: string[] = [];
    const extra = { host: await overlayHeadroom(root, overlayPath, overlay), kept: await keptFiles(root, found) };
    if (extra.kept.length > 0) {
      warnings.push(`kept from earlier merges: ${extra.kept.map((k) => `${k.name} (${formatSize(k.bytes)})`).join(', ')}; once the medium boots fine, remove them${root.hostDir !== undefined ? ` with \`rm\` in ${root.display(found.liveos)}` : ` from ${root.display(found.liveos)}`}`);
    }
    if (extra.host.freeBytes !== null && extra.host.overlayHeadroomBytes < overlay.freeBytes) {
      warnings.push(`the overlay file is sparse and the medium has only ${formatSize(extra.host.freeBytes)} free: the overlay can grow by ${formatSize(extra.host.overlayHeadroomBytes)}, not the ${formatSize(overlay.freeBytes)} its size promises — writes beyond that fail on the live system`);
      problems.push('the medium cannot back the overlay\'s free space');
    }
    const b = store.binding;
    const bindHint = `if this overlay does belong to this base, \`livestick overlay bind ${dir}\` records it; \`livestick reset ${dir}\` drops its changes`;
    if (b.state === 'bound') {
      overlay.baseMatches = sameBase(b.binding, await bindingFor(medium.rootDisk, b.binding.label));
      if (!overlay.baseMatches) {
        warnings.push(`THE OVERLAY BELONGS TO A DIFFERENT BASE (bound to "${b.binding.label}", ${formatSize(b.binding.baseSize)}): booting this medium combines them into a corrupt filesystem. Put back the squashfs.img it was made on; or, ${bindHint}`);
        problems.push('the overlay belongs to a different base');
      }
    } else {
      warnings.push(`the overlay is not bound to a base (made by another tool): \`livestick overlay bind ${dir}\` records that it belongs to this one`);
    }
    if (!store.valid) {
      warnings.push('the overlay is an INVALIDATED snapshot (it overflowed or hit an I/O error): the kernel refuses it and its changes are lost; `livestick reset` makes it usable again');
      problems.push('the overlay is an invalidated snapshot');
      return { ...emptyReport(dir, located, recovery, overlay, warnings), ...extra, healthy: false, problems };
    }
    if (overlay.baseMatches === false) return { ...emptyReport(dir, located, recovery, overlay, warnings), ...extra, healthy: false, problems };
    const warnAt = options.warnAt ?? 0.8;
    if (overlay.fill >= warnAt) {
      warnings.push(`the overlay is ${(overlay.fill * 100).toFixed(0)}% full; when it fills up, writes fail (PO) or the snapshot is invalidated (P) — merge it now`);
      problems.push(`the overlay is ${(overlay.fill * 100).toFixed(0)}% full`);
    }

    const combined = new SnapshotDisk(medium.rootDisk, store, { readOnly: true });
    let fs: Ext4;
    let map: Awaited<ReturnType<typeof buildBlockMap>>;
    let state: Awaited<ReturnType<Ext4['state']>>;
    try {
      fs = await Ext4.open(combined);
      state = await fs.state();
      map = await buildBlockMap(fs, { onProgress: options.onProgress });
    } catch (err) {
      if (!(err instanceof LivestickError)) throw err;
      // The overlay's own figures stand; the damage is reported, not thrown.
      warnings.push(`the filesystem the medium boots (${located.rootImage} + overlay) is damaged: ${err.message}${b.state === 'bound' ? '' : '. The overlay is not bound to a base: if it was made for another squashfs.img, that explains it'}`);
      problems.push('the filesystem inside the combined device is damaged');
      return { ...emptyReport(dir, located, recovery, overlay, warnings), ...extra, healthy: false, problems, recommendation: 'the overlay figures above are right, but the files in it cannot be attributed; check that squashfs.img is the base this overlay was made on' };
    }
    if (state.needsRecovery) warnings.push('the filesystem on the medium was not cleanly unmounted (its journal needs recovery): these figures come from bitmaps that may lag behind');
    const cb = store.geometry.chunkBytes;
    const bs = map.blockSize;
    const fsBytes = map.blocksCount * bs;
    const usage = { files: 0, journal: 0, metadata: 0, reclaimable: 0, outside: 0 };
    const byInode = new Map<number, number>();
    for (const e of store.exceptions()) {
      const start = e.oldChunk * cb;
      const end = Math.min(start + cb, medium.rootDisk.size);
      if (start >= fsBytes) {
        usage.outside += end - start;
        continue;
      }
      if (end > fsBytes) usage.outside += end - fsBytes;
      for (let blk = Math.floor(start / bs); blk * bs < Math.min(end, fsBytes); blk++) {
        const overlap = Math.min(end, (blk + 1) * bs, fsBytes) - Math.max(start, blk * bs);
        if (!map.isUsed(blk)) {
          usage.reclaimable += overlap;
          continue;
        }
        const kind = map.kind[blk];
        const owner = map.owner[blk] ?? 0;
        if (kind === BlockKind.journal) usage.journal += overlap;
        else if (owner !== 0 && owner >= fs.sb.firstIno) {
          usage.files += overlap;
          byInode.set(owner, (byInode.get(owner) ?? 0) + overlap);
        } else usage.metadata += overlap;
      }
    }
    const topInodes = [...byInode.entries()].sort((a, b2) => b2[1] - a[1] || a[0] - b2[0]);
    const paths = await map.paths(byInode.keys());
    const pathOf = (ino: number) => paths.get(ino)?.[0] ?? `<inode ${ino}, no name>`;
    // Largest files: regular files only (a directory's own blocks count for the directory totals).
    const files: PathUsage[] = [];
    for (const [ino, bytes] of topInodes) {
      if (files.length >= top) break;
      if ((await fs.statInode(ino).catch(() => undefined))?.kind === 'dir') continue;
      files.push({ path: pathOf(ino), bytes });
    }
    const dirTotals = new Map<string, number>();
    for (const [ino, bytes] of topInodes) {
      const parts = pathOf(ino).split('/').filter(Boolean);
      for (let i = 0; i < parts.length - 1; i++) {
        const d = `/${parts.slice(0, i + 1).join('/')}`;
        dirTotals.set(d, (dirTotals.get(d) ?? 0) + bytes);
      }
    }
    // A directory whose bytes are all in one subdirectory says nothing more than it: keep the deepest.
    for (const [d, bytes] of dirTotals) {
      const parent = d.slice(0, d.lastIndexOf('/')) || undefined;
      if (parent !== undefined && dirTotals.get(parent) === bytes) dirTotals.delete(parent);
    }
    const topDirectories = [...dirTotals.entries()]
      .sort((a, b2) => b2[1] - a[1] || a[0].localeCompare(b2[0]))
      .slice(0, top)
      .map(([path, bytes]) => ({ path, bytes }));
    const usedData = store.exceptionCount * cb;
    const recommendation =
      store.exceptionCount === 0
        ? 'the overlay is empty: nothing to merge'
        : `\`livestick merge\` would fold ${formatSize(usedData)} of changes into a new base, give back ${formatSize(usage.reclaimable)} of copied-but-now-free chunks, and leave the overlay empty (0% full)`;
    return {
      kind: 'dm-snapshot',
      medium: dir,
      base: located.basePath,
      rootImage: located.rootImage,
      recovery,
      overlay,
      filesystem: { type: 'ext4', label: fs.sb.volumeName, blockSize: bs, blocks: map.blocksCount, freeBlocks: map.freeCount(), clean: state.clean, needsRecovery: state.needsRecovery },
      usage,
      reclaimableBytes: usage.reclaimable,
      topFiles: files.slice(0, top),
      topDirectories,
      afterMerge: { overlayUsedBytes: 2 * cb, overlayFill: (2 * cb) / Math.max(1, overlay.sizeBytes), reclaimedBytes: usage.reclaimable },
      warnings,
      recommendation,
      ...extra,
      healthy: problems.length === 0,
      problems,
    };
  } finally {
    await ovDisk.close();
    await medium.close();
  }
}

/** Free space on the medium and the overlay's real headroom: a sparse file can only grow into what the medium has. */
async function overlayHeadroom(root: MediumRoot, overlayPath: string, overlay: OverlayInfo): Promise<StatusReport['host']> {
  const st = await root.fs.stat(overlayPath);
  const allocated = Math.min(st.size, st.allocatedBytes ?? st.size);
  const free = (await root.fs.space()).freeBytes;
  const freeBytes = Number.isFinite(free) ? free : null;
  // Bytes of the overlay's free chunks that are already allocated on the host need no new space.
  const unbacked = Math.max(0, st.size - allocated);
  const backedFree = Math.max(0, overlay.freeBytes - unbacked);
  const headroom = freeBytes === null ? overlay.freeBytes : Math.min(overlay.freeBytes, backedFree + freeBytes);
  return { freeBytes, overlayAllocatedBytes: allocated, overlayHeadroomBytes: headroom };
}

async function keptFiles(root: MediumRoot, medium: Medium): Promise<{ name: string; bytes: number }[]> {
  const out: { name: string; bytes: number }[] = [];
  for (const name of (await root.fs.readdir(medium.liveos)).map((e) => e.name).sort()) {
    if (!name.includes(`${TEMP_MARK}old`)) continue;
    out.push({ name, bytes: (await root.fs.stat(fsJoin(medium.liveos, name))).size });
  }
  return out;
}

function emptyReport(dir: string, located: { basePath: string; rootImage: string }, recovery: RecoveryReport, overlay: OverlayInfo, warnings: string[]): Omit<StatusReport, 'healthy' | 'problems' | 'host' | 'kept'> {
  return {
    kind: 'dm-snapshot',
    medium: dir,
    base: located.basePath,
    rootImage: located.rootImage,
    recovery,
    overlay,
    filesystem: { type: 'ext4', label: '', blockSize: 0, blocks: 0, freeBlocks: 0, clean: false, needsRecovery: false },
    usage: { files: 0, journal: 0, metadata: 0, reclaimable: 0, outside: 0 },
    reclaimableBytes: 0,
    topFiles: [],
    topDirectories: [],
    afterMerge: { overlayUsedBytes: 0, overlayFill: 0, reclaimedBytes: 0 },
    warnings,
    recommendation: overlay.valid ? 'fix the base/overlay mismatch before anything else' : '`livestick reset` empties the overlay so the medium boots with persistence again',
  };
}

export function renderStatus(r: StatusReport): string {
  const pct = (x: number) => `${(x * 100).toFixed(1)}%`;
  const o = r.overlay;
  const lines = [
    `medium:      ${r.medium}`,
    `base:        ${r.base} (${r.rootImage} inside)`,
    `overlay:     ${o.overlay}`,
    `             ${formatSize(o.usedBytes)} used of ${formatSize(o.sizeBytes)} (${pct(o.fill)}), ${formatSize(o.freeBytes)} free, ${formatSize(o.chunkSize)} chunks, ${o.valid ? 'valid' : 'INVALID'}, ${o.bound ? (o.baseMatches === false ? 'bound to ANOTHER base' : 'bound to this base') : 'unbound'}`,
  ];
  if (r.recovery.action === 'completed') lines.push('recovered:   an interrupted merge was completed first');
  if (r.recovery.action === 'rolled-back') lines.push('recovered:   an interrupted merge was undone first (the previous base and overlay are back)');
  for (const w of r.recovery.warnings) lines.push(`recovery:    ${w}`);
  if (r.recovery.action === 'cleaned') lines.push(`recovered:   leftovers of an interrupted merge were removed (${r.recovery.files.join(', ')})`);
  if (r.filesystem.blocks > 0) {
    const u = r.usage;
    lines.push(`filesystem:  ext4 "${r.filesystem.label}", ${formatSize(r.filesystem.blocks * r.filesystem.blockSize)}, ${formatSize(r.filesystem.freeBlocks * r.filesystem.blockSize)} free, ${r.filesystem.needsRecovery ? 'NOT cleanly unmounted' : 'clean'}`);
    lines.push('', 'where the overlay went:');
    lines.push(`  files and directories   ${formatSize(u.files)}`);
    lines.push(`  filesystem metadata     ${formatSize(u.metadata)}`);
    lines.push(`  journal                 ${formatSize(u.journal)}`);
    lines.push(`  reclaimable (now free)  ${formatSize(u.reclaimable)}`);
    if (u.outside > 0) lines.push(`  outside the filesystem  ${formatSize(u.outside)}`);
    if (r.topFiles.length > 0) {
      lines.push('', 'largest files in the overlay:');
      for (const f of r.topFiles) lines.push(`  ${formatSize(f.bytes).padStart(10)}  ${f.path}`);
      lines.push('', 'largest directories in the overlay:');
      for (const d of r.topDirectories) lines.push(`  ${formatSize(d.bytes).padStart(10)}  ${d.path}`);
    }
  }
  if (r.host.freeBytes !== null) lines.push(`host:        ${formatSize(r.host.freeBytes)} free on the medium; the overlay can really grow by ${formatSize(r.host.overlayHeadroomBytes)}`);
  for (const w of r.warnings) lines.push('', `warning: ${w}`);
  lines.push('', r.recommendation);
  lines.push(r.healthy ? 'health:      ok' : `health:      NEEDS ATTENTION (${r.problems.join('; ')})`);
  return lines.join('\n');
}
