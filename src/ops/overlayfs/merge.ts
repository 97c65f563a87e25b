/**
 * `livestick merge` on overlayfs media: the lower stack and the upper become one new SquashFS base,
 * and a fresh empty upper bound to it takes the old one's place.
 *
 * Design notes
 * - The new base is the merged view (fs/overlay) written by the SquashFS writer from
 *   treeFromFileSystem: whiteouts and opaque directories drop what they hide, copied-up files
 *   replace the base's, metacopy files take their data from the lower, xattrs (security.selinux,
 *   security.capability, user.*) are kept and overlay.* ones dropped, hard links stay links.
 * - Cost follows the change: a file whose data still lives in the SquashFS base (untouched, or a
 *   metacopy stub) hands its stored blocks to the writer verbatim — same compressor, block size and
 *   settings as the old base, so they are valid as they are; only files the upper holds are read and
 *   compressed. An EROFS base written as EROFS does the same with pclusters: the writer copies the
 *   compressed pclusters of such a file where the new settings fit the old image's (writer.ts
 *   settingsFit); its fragment tail, and files stored whole in the old packed inode, are compressed
 *   anew (into the new packed inode).
 * - Verified before the switch: every node of the new image against the view (kind, mode, owner,
 *   mtime, size, target, device, xattrs); content in full for the files that were compressed anew,
 *   for carried SquashFS files their stored block words and tail, for carried EROFS files their
 *   leading pclusters (same extents, same stored bytes as the old file's) and the rest as content.
 * - A layered base (casper's chain `minimal` < `minimal.standard` < `minimal.standard.live`): only
 *   its top layer is replaced, by the top layer and the upper as one layer over the layers below
 *   (fs/overlay/layer-diff.ts: what they show unchanged is left out, deletions are whiteouts), so the
 *   layers below and the boot configuration naming them stay as they are. Blocks are carried from
 *   any layer whose compressor and block size the new layer can hold (xz: a dictionary no larger).
 *   Verified as the stack the boot will mount: the new top layer over the layers below, against the
 *   view; content the layers below still supply is theirs by construction and not compared.
 * - Built beside the old base (BASE.livestick-ovl-new, made at an estimate and trimmed by the writer);
 *   the switch is ./switch.ts. Refused: a top layer that is neither SquashFS nor EROFS, an EROFS layer
 *   of a layer chain, a
 *   base volume that cannot be written (ISO9660), a volatile work dir, an upper bound to another base
 *   (unless --force).
 * - An upper over a rootfs.img inside squashfs.img (rd.live.overlay.overlayfs on a Fedora ≤ 40 stick)
 *   gives a flat base: the merged root tree, compressed anew, with the outer image's settings.
 */
import { ExitCode, LivestickError, UnsupportedFeatureError, UsageError } from '../../errors.ts';
import { equalBytes, formatSize } from '../../io/bytes.ts';
import type { FileSystem, FsStat, FsXattr, WritableFileSystem } from '../../fs/filesystem.ts';
import { OverlayFileSystem, analyzeUpper, type OverlayLayer, type UpperReport } from '../../fs/overlay/index.ts';
import { LayerDiffFileSystem } from '../../fs/overlay/layer-diff.ts';
import { SquashfsReader, writeSquashfs, type CompressorName } from '../../fs/squashfs/index.ts';
import type { CompressorSettings } from '../../fs/squashfs/comp/types.ts';
import { splitXattrName as splitSquashfsXattr } from '../../fs/squashfs/xattr.ts';
import { ErofsFileSystem } from '../../fs/erofs/filesystem.ts';
import { ErofsReader } from '../../fs/erofs/reader.ts';
import { settingsFit, splitXattrName as splitErofsXattr, writeErofs, type ErofsWriteOptions } from '../../fs/erofs/writer.ts';
import { Incompat } from '../../fs/erofs/superblock.ts';
import { imageAlgorithms, type Extent } from '../../fs/erofs/zmap.ts';
import { DataLayout, type Inode } from '../../fs/erofs/inode.ts';
import { SquashfsFileSystem } from '../../fs/squashfs/filesystem.ts';
import { lazyTreeFromFileSystem, treeFromFileSystem, type BlocksSource, type TreeFromFsOptions } from '../../fs/squashfs/from-fs.ts';
import { settingsOf } from '../merge.ts';
import { fileExists } from '../files.ts';
import { withStick, type Stick } from '../live/index.ts';
import { bindingState, fileIdentity, lowerIdentities } from './binding.ts';
import { selectOverlayfsOrNone, type OverlayfsChoice } from './select.ts';
import { NEW_MARK, OLD_MARK, discardBuild, prepareFreshUpper, readJournal, runSwitch, volumeRef, writeJournal, type OverlayfsJournal, type SwitchOutcome } from './switch.ts';
import { recoverOverlayfs } from './recover.ts';
import { stepPoint } from '../switch.ts';
import { SimulatedCrash } from '../../io/faults.ts';

export interface OverlayfsMergeOptions {
  partition?: number;
  forceDevice?: boolean;
  dryRun?: boolean;
  keepOld?: boolean;
  /** Merge even an empty upper, or one bound to another base. */
  force?: boolean;
  threads?: number;
  mkfsTime?: number;
  /**
   * The new base's format: by default the old base's. 'squashfs' over an EROFS base writes the merged
   * tree as a SquashFS image (dracut boots either from squashfs.img), every file compressed anew.
   */
  format?: 'squashfs' | 'erofs';
  /**
   * Merge even where files carry xattrs SquashFS cannot store (POSIX ACLs, system.*): they are left
   * out of the new base (named in a warning). Without it such a merge is refused before anything is written.
   */
  dropAcls?: boolean;
  onProgress?: (phase: string, done: number, total: number) => void;
}

export interface OverlayfsMergeResult {
  readonly kind: 'overlayfs';
  readonly medium: string;
  readonly dryRun: boolean;
  readonly verdict: 'ok' | 'would-fail';
  readonly problems: { code: string; message: string; file?: string }[];
  readonly nothingToMerge: boolean;
  readonly recovery: SwitchOutcome['action'];
  /** The new base's format (the old base's unless --format said otherwise). */
  readonly format: 'squashfs' | 'erofs';
  /** SquashFS: gzip, xz, zstd, lz4; EROFS: lzma, lz4hc, deflate, zstd or none. */
  readonly compressor: string;
  readonly blockSize: number;
  /** Layers of the base: 1 for a flat base; more for a layered one, whose top layer alone is replaced. */
  readonly layers: number;
  readonly oldBaseBytes: number;
  readonly newBaseBytes: number;
  readonly newBaseEstimated: boolean;
  readonly upperBytesMerged: number;
  readonly baseBytesDropped: number;
  readonly files: { readonly carried: number; readonly rebuilt: number };
  readonly spaceNeeded: number;
  readonly spaceAvailable: number;
  readonly seconds: number;
  readonly kept: { readonly upper?: string; readonly work?: string };
  readonly warnings: string[];
}

class MergeRefused extends LivestickError {
  constructor(code: import('../../errors.ts').ErrorCode, exit: number, message: string, file?: string) {
    super(code, exit, message, file !== undefined ? { file } : {});
  }
}

const strip = (p: string): string => p.replace(/^\/+/, '');

/** Merges the overlayfs medium at `target`, or returns undefined when it is not one. */
export async function mergeOverlayfs(target: string, options: OverlayfsMergeOptions = {}): Promise<OverlayfsMergeResult | undefined> {
  const write = options.dryRun !== true;
  return withStick(target, { write, force: options.forceDevice }, async (stick) => {
    const recovery = write ? await recoverOverlayfs(stick) : { action: 'none' as const, warnings: [], kept: {} };
    const choice = await selectOverlayfsOrNone(stick, options.partition);
    if (choice === undefined) return undefined;
    return mergeOn(stick, choice, options, recovery);
  });
}

async function mergeOn(stick: Stick, choice: OverlayfsChoice, options: OverlayfsMergeOptions, recovery: SwitchOutcome): Promise<OverlayfsMergeResult> {
  const started = Date.now();
  const { system, persistence } = choice;
  const warnings = [...recovery.warnings];
  const problems: LivestickError[] = [];
  const dryRun = options.dryRun === true;

  const lower = system.lowers[0]!;
  const layered = system.lowers.length > 1;
  const baseShown = lower.volume.displayPath(lower.path);
  const fromErofs = lower.format === 'erofs';
  const toErofs = fromErofs && options.format !== 'squashfs';
  if (!fromErofs && lower.format !== 'squashfs') throw new UnsupportedFeatureError('live base', lower.format, `${baseShown} is a ${lower.format} image; only SquashFS and EROFS bases can be merged`, { file: baseShown });
  if (!fromErofs && options.format === 'erofs') throw new UnsupportedFeatureError('new base', 'erofs', `${baseShown} is a SquashFS image: its merge writes SquashFS (turning a SquashFS base into EROFS is not offered)`, { file: baseShown });
  if (fromErofs && layered) throw new UnsupportedFeatureError('live base', 'erofs', `${baseShown} is an EROFS layer of a layer chain: only SquashFS chains (casper) can be merged`, { file: baseShown });
  if (layered) for (const l of system.lowers) if (l.inner !== undefined) throw new UnsupportedFeatureError('live base', 'rootfs.img', `${l.volume.displayPath(l.path)} holds ${l.inner.path}: a layer chain with a root image inside a layer cannot be merged`, { file: l.volume.displayPath(l.path) });
  if (!persistence.present) throw new UsageError(`${persistence.volume.displayPath(persistence.upper)} is not in use (nothing to merge): ${persistence.mode}`);
  if (persistence.work === undefined) throw new UsageError(`${persistence.volume.displayPath(persistence.upper)} has no work directory beside it`);
  if (persistence.legacy || persistence.upper === '/') throw new UsageError(`${persistence.volume.displayPath(persistence.upper)} is casper's old layout (the upper is the filesystem root): boot the stick once so casper moves it into upper/, then run this again`);

  const open = await persistence.open({ write: !dryRun });
  const lowerLayers = await system.openLowers();
  // A rootfs.img inside squashfs.img: the new base is flat (the merged root tree itself, as Fedora 41
  // and later ship it, which dracut 059 and later boot with rd.live.overlay.overlayfs); its
  // compressor is the outer image's, and nothing can be carried from the ext4 image.
  const inner = lower.inner !== undefined;
  const top = inner ? lowerLayers[0]!.container : lowerLayers[0]!.fs;
  const erofsTop = top instanceof ErofsFileSystem ? top : undefined;
  if (!(top instanceof SquashfsFileSystem) && erofsTop === undefined) throw new UnsupportedFeatureError('live base', 'format', `${baseShown} is not a SquashFS or EROFS image`);
  const reader: SquashfsReader | undefined = top instanceof SquashfsFileSystem ? top.reader : undefined;
  if (inner) warnings.push(`${baseShown} held ${lower.inner!.path}; the new base is a flat SquashFS of the merged root tree (dracut 059 and later boot it with rd.live.overlay.overlayfs, as Fedora 41 and later do); every file is compressed anew`);
  const view = new OverlayFileSystem({ upper: { fs: open.fs, root: open.upperRoot }, lowers: lowerLayers });
  const report = await upperSummary(view, { fs: open.fs, root: persistence.work });
  const baseBytesDropped = report.baseBytesDropped;
  const { name: squashfsCompressor, settings } = reader !== undefined ? settingsOf(reader) : squashfsFromErofs(erofsTop!);
  if (erofsTop !== undefined && !toErofs) warnings.push(`${baseShown} was an EROFS image; the new base is SquashFS (--format squashfs, ${squashfsCompressor}), every file compressed anew; dracut boots it from squashfs.img as it booted the EROFS one`);
  const erofsOut = toErofs ? erofsSettingsOf(erofsTop!) : undefined;
  const compressor: string = erofsOut?.name ?? squashfsCompressor;
  const blockSize = erofsOut?.options.blockSize ?? reader?.superblock.blockSize ?? ERO_TO_SQUASHFS_BLOCK;
  if (erofsOut !== undefined) warnings.push(`the new EROFS base is written with ${erofsOut.described} (the old image's compressor and features; its compression level is not recorded in the image)`);
  const storable = toErofs ? storableInErofs : storableInSquashfs;
  const oldBaseBytes = reader?.disk.size ?? erofsTop!.reader.disk.size;

  const baseFsAny: FileSystem | undefined = await lower.volume.open();
  const spaceAvailable = baseFsAny ? (await baseFsAny.space()).freeBytes : 0;
  const estimate = oldBaseBytes + report.upperBytes + (4 << 20);
  const spaceNeeded = Math.min(estimate, oldBaseBytes + report.upperBytes);
  const base = (extra: Partial<OverlayfsMergeResult>): OverlayfsMergeResult => ({
    kind: 'overlayfs',
    medium: stick.target,
    dryRun,
    verdict: problems.length === 0 ? 'ok' : 'would-fail',
    problems: problems.map((p) => ({ code: p.code, message: p.message, ...(p.file ? { file: p.file } : {}) })),
    nothingToMerge: false,
    recovery: recovery.action,
    format: toErofs ? 'erofs' : 'squashfs',
    compressor,
    blockSize,
    layers: system.lowers.length,
    oldBaseBytes,
    newBaseBytes: estimate,
    newBaseEstimated: true,
    upperBytesMerged: report.upperBytes,
    baseBytesDropped,
    files: { carried: 0, rebuilt: 0 },
    spaceNeeded,
    spaceAvailable,
    seconds: (Date.now() - started) / 1000,
    kept: {},
    warnings,
    ...extra,
  });

  if (report.entries === 0 && !options.force) {
    warnings.push('the upper holds no changes; the base was left as it is (--force rebuilds it anyway)');
    return base({ nothingToMerge: true });
  }
  if (report.volatile) problems.push(new MergeRefused('FAILURE', ExitCode.failure, 'the work directory holds work/incompat/volatile (a volatile mount not cleanly unmounted): the upper may be incomplete; boot it once or reset it', persistence.volume.displayPath(persistence.work)));
  const binding = await bindingState(open.fs, persistence.work, await lowerIdentities(system));
  if (binding.state === 'bound' && !binding.matches && !options.force) problems.push(new MergeRefused('BASE_MISMATCH', ExitCode.dataError, `the upper is bound to another base than ${baseShown}: merging it would build a tree nobody booted; \`livestick overlay bind\` if it does belong here, or --force`, persistence.volume.displayPath(persistence.upper)));
  if (baseFsAny?.type === 'iso9660' || baseFsAny?.type === 'squashfs') problems.push(new MergeRefused('READ_ONLY', ExitCode.failure, `${baseShown} is on a read-only ${baseFsAny.type} volume: the new base cannot replace it`, baseShown));
  if (spaceNeeded > spaceAvailable) problems.push(new MergeRefused('NO_SPACE', ExitCode.ioError, `the new base (up to ${formatSize(spaceNeeded)}) does not fit beside the old one on ${lower.volume.display} (${formatSize(spaceAvailable)} free)`, baseShown));
  for (const dir of [persistence.upper, persistence.work]) {
    if (await fileExists(open.fs, dir + OLD_MARK)) problems.push(new MergeRefused('FAILURE', ExitCode.failure, `a previous upper is kept as ${persistence.volume.displayPath(dir + OLD_MARK)} (merge --keep-old); delete or move it first`, persistence.volume.displayPath(dir + OLD_MARK)));
  }
  if (dryRun || problems.length > 0) {
    if (!dryRun) throw problems[0]!;
    return base({});
  }

  const baseFs = await lower.volume.writable();
  const upperFs = open.fs as WritableFileSystem;
  const newBase = lower.path + NEW_MARK;
  const files = { carried: 0, rebuilt: 0 };
  const journal: OverlayfsJournal = { schemaVersion: 1, kind: 'overlayfs-switch', baseVolume: volumeRef(lower.volume), base: lower.path, upperVolume: volumeRef(persistence.volume), upper: persistence.upper, work: persistence.work, keepOld: options.keepOld === true };
  // Where each carried file's stored blocks come from: the lower file behind it, or for a file copied
  // up unchanged (dnf and apt rewrite files as they were), the lower file it equals — in any layer
  // whose stored blocks the new image can hold as they are.
  const readers = lowerLayers.map((l) => (reader !== undefined && l.fs instanceof SquashfsFileSystem && blocksFit(l.fs.reader, reader) ? l.fs.reader : undefined));
  // An EROFS base into EROFS: the pclusters of such files are carried where the new settings fit the old image's.
  const erofsReaders = lowerLayers.map((l) => (erofsOut !== undefined && l.fs instanceof ErofsFileSystem && settingsFit(l.fs.reader, erofsOut.options) ? l.fs.reader : undefined));
  const unchangedCopies = report.unchangedCopies;
  const carriedFrom = async (path: string): Promise<BlocksSource | undefined> => {
    const node = await view.resolve(path);
    const from = node.data === undefined ? undefined : node.data.layer === 'upper' ? unchangedCopies.get(path) : { layer: node.data.layer, path: node.data.path };
    if (from === undefined) return undefined;
    // The walk's own path string where it is the same (no second copy per file in the tree); the
    // reader's lookup takes a leading slash.
    const fromPath = from.path === path ? path : from.path;
    const fromReader = readers[from.layer];
    if (fromReader !== undefined) return { reader: fromReader, path: fromPath };
    const fromErofs = erofsReaders[from.layer];
    return fromErofs === undefined ? undefined : { erofs: fromErofs, path: fromPath };
  };
  const source = layered ? await LayerDiffFileSystem.of(view) : view;
  const dropped = new Map<string, string[]>();
  const droppedSeen = new Set<string>();
  const unstorable = (path: string, name: string): UnsupportedFeatureError =>
    new UnsupportedFeatureError('new base', 'xattrs', `the merged tree holds xattrs ${toErofs ? 'an EROFS base cannot store (it holds user., trusted., security. and POSIX ACLs)' : 'a SquashFS base cannot store (it holds only user., trusted. and security. ones)'}, the first found: ${name} (${path}); nothing was written. --drop-acls merges without them (systemd-tmpfiles sets its own ACLs again at boot)`, { file: baseShown });
  // The SquashFS writer streams the tree, listing each directory when it gets there; the EROFS writer
  // lays out every inode first, so it takes the tree whole.
  const treeOptions: TreeFromFsOptions = {
    keepXattr: storable,
    onXattrDropped: (path, name) => {
      if (!options.dropAcls) throw unstorable(path, name);
      // The streaming writer may list the tree twice (to count hard links when the view's nlink is wrong).
      const seen = `${name}\0${path}`;
      if (droppedSeen.has(seen)) return;
      droppedSeen.add(seen);
      const paths = dropped.get(name) ?? [];
      if (paths.length < 3) paths.push(path);
      dropped.set(name, paths);
    },
    linkKey: (_p, st) => (st.ino !== undefined ? String(st.ino) : undefined),
    blocksFrom: async (path) => {
      const blocks = await carriedFrom(path);
      if (blocks === undefined) files.rebuilt++;
      else files.carried++;
      return blocks;
    },
  };
  let written: { size: number; carried?: { files: number; packedBytes: number } };
  try {
    if (await fileExists(baseFs, newBase)) await baseFs.unlink(newBase);
    const out = await baseFs.createFile(newBase, { size: estimate, uninitialized: true });
    try {
      if (erofsOut !== undefined) written = await writeErofs(await treeFromFileSystem(source, '/', treeOptions), out, { ...erofsOut.options, threads: options.threads, mkfsTime: options.mkfsTime ?? Math.floor(Date.now() / 1000) });
      else {
        const r = await writeSquashfs(await lazyTreeFromFileSystem(source, '/', treeOptions), out, { compressor: squashfsCompressor, compressorSettings: settings, blockSize, threads: options.threads, mkfsTime: options.mkfsTime ?? Math.floor(Date.now() / 1000), onProgress: (done: number) => options.onProgress?.('writing', done, report.upperBytes) });
        // The writer's own count: it may list the tree twice (hard links), and it knows which carried
        // files really kept their stored blocks.
        Object.assign(files, r.files);
        written = r;
      }
      await out.flush();
    } finally {
      await out.close();
    }
    if (dropped.size > 0) {
      const what = [...dropped].map(([name, paths]) => `${name} (${paths.join(', ')}${paths.length === 3 ? ', …' : ''})`).join('; ');
      warnings.push(`left out of the new base, which cannot store them: ${droppedSeen.size} xattrs: ${what}`);
    }
    await baseFs.flush();
    stepPoint('ovl-built');
    // EROFS: a file counts as carried when some of its pclusters were, or its fragment stayed in the
    // old packed inode carried as the start of the new one.
    if (written.carried !== undefined) {
      const total = files.carried + files.rebuilt;
      files.carried = written.carried.files;
      files.rebuilt = total - files.carried;
      const packed = written.carried.packedBytes > 0
        ? `; the old packed inode (${formatSize(written.carried.packedBytes)} of small files and tails) leads the new one`
        : '; the old packed inode was compressed anew (too little of it is still used, or none of the fragments follow carried pclusters)';
      warnings.push(`${files.carried} files kept their pclusters as they were; ${files.rebuilt} were compressed anew (changed or new)${packed}`);
    }

    await verifyNewBase(baseFs, newBase, view, carriedFrom, baseShown, layered ? lowerLayers.slice(1) : undefined, storable, toErofs ? 'erofs' : 'squashfs');
    stepPoint('ovl-verified');

    const newIdentity = await fileIdentity(baseFs, newBase, lower.path);
    const below = layered ? (await lowerIdentities(system)).slice(1) : [];
    await prepareFreshUpper(upperFs, persistence.upper, persistence.work, [newIdentity, ...below], warnings);
    stepPoint('ovl-fresh-upper');
    // A journal that fails to be written is undone with the build (a journal that did land but
    // whose flush failed names a switch nothing was done for yet: the next command rolls it back).
    await writeJournal(baseFs, journal);
  } catch (err) {
    if (!(err instanceof SimulatedCrash)) await discardBuild({ baseFs, upperFs }, lower.path, persistence.upper, persistence.work);
    throw err;
  }
  stepPoint('ovl-journal-written');
  const outcome = await runSwitch(journal, { baseFs, upperFs });
  warnings.push(...outcome.warnings);
  return base({ newBaseBytes: written.size, newBaseEstimated: false, files, kept: outcome.kept, seconds: (Date.now() - started) / 1000 });
}

/**
 * What the merge needs of the upper's analysis: its totals, and the files copied up unchanged (the
 * report's entry list, one per upper entry, is not kept).
 */
async function upperSummary(view: OverlayFileSystem, workdir: OverlayLayer) {
  const report: UpperReport = await analyzeUpper(view, { workdir, top: 0 });
  const unchangedCopies = new Map<string, { layer: number; path: string }>();
  for (const e of report.entries) if (e.sameDataAs !== undefined) unchangedCopies.set(e.path, e.sameDataAs);
  return {
    upperBytes: report.upperBytes,
    baseBytesDropped: Object.values(report.totals).reduce((n, t) => n + t.hiddenBytes, 0),
    entries: report.entries.length,
    volatile: report.flags.volatile,
    unchangedCopies,
  };
}

function sameXattrs(a: readonly FsXattr[], b: readonly FsXattr[]): boolean {
  const norm = (x: readonly FsXattr[]) => [...x].sort((p, q) => (p.name < q.name ? -1 : p.name > q.name ? 1 : 0));
  const na = norm(a);
  const nb = norm(b);
  return na.length === nb.length && na.every((x, i) => x.name === nb[i]!.name && equalBytes(x.value, nb[i]!.value));
}

/** Whether a SquashFS image can hold an xattr of this name (its three namespaces; not system.*, so no POSIX ACLs). */
function storableInSquashfs(name: string): boolean {
  return splitSquashfsXattr(name) !== undefined;
}

/** Whether an EROFS image can hold an xattr of this name (its name prefixes; POSIX ACLs included). */
function storableInErofs(name: string): boolean {
  try {
    splitErofsXattr(name);
    return true;
  } catch {
    return false;
  }
}

/**
 * The writer's settings for a new EROFS base from the old image: its block size, compressor (at the
 * default level: the level is not recorded), big pclusters as Fedora makes them (1 MiB) where the
 * image has them, fragments where it has a packed inode.
 */
function erofsSettingsOf(fs: ErofsFileSystem): { name: string; described: string; options: ErofsWriteOptions } {
  const sb = fs.reader.superblock;
  const algorithms = imageAlgorithms(sb);
  const name = algorithms.includes('LZMA') ? 'lzma' : algorithms.includes('ZSTD') ? 'zstd' : algorithms.includes('DEFLATE') ? 'deflate' : algorithms.includes('LZ4') ? 'lz4hc' : 'none';
  const blockSize = 1 << sb.blkszbits;
  const big = (sb.featureIncompat & Incompat.bigPcluster) !== 0 && name !== 'none';
  const fragments = name !== 'none' && (sb.featureIncompat & Incompat.fragments) !== 0 && sb.packedNid !== 0;
  const options: ErofsWriteOptions = name === 'none' ? { blockSize } : { blockSize, compression: name === 'lzma' ? 'lzma,level=6' : name, pclusterSize: big ? 1 << 20 : blockSize, fragments };
  const described = name === 'none' ? `no compression, ${formatSize(blockSize)} blocks` : `${options.compression}, ${formatSize(options.pclusterSize!)} pclusters${fragments ? ', fragments' : ''}, ${formatSize(blockSize)} blocks`;
  return { name, described, options };
}

/** SquashFS's block size for a base made from an EROFS one (mksquashfs's default). */
const ERO_TO_SQUASHFS_BLOCK = 128 * 1024;

/** The SquashFS compressor nearest to an EROFS image's: LZMA → xz, ZSTD → zstd, DEFLATE → gzip, LZ4 → lz4 (HC); none → gzip. */
function squashfsFromErofs(fs: ErofsFileSystem): { name: CompressorName; settings: CompressorSettings } {
  const algorithms = imageAlgorithms(fs.reader.superblock);
  if (algorithms.includes('LZMA')) return { name: 'xz', settings: {} };
  if (algorithms.includes('ZSTD')) return { name: 'zstd', settings: {} };
  if (algorithms.includes('DEFLATE')) return { name: 'gzip', settings: {} };
  if (algorithms.includes('LZ4')) return { name: 'lz4', settings: { hc: true } };
  return { name: 'gzip', settings: {} };
}

/** Whether stored blocks of `from` are valid as they are in an image with `to`'s compressor settings and block size. */
function blocksFit(from: SquashfsReader, to: SquashfsReader): boolean {
  if (from === to) return true;
  const a = settingsOf(from);
  const b = settingsOf(to);
  if (a.name !== b.name || from.superblock.blockSize !== to.superblock.blockSize) return false;
  if (a.name === 'xz') return ((a.settings as { dictSize?: number }).dictSize ?? from.superblock.blockSize) <= ((b.settings as { dictSize?: number }).dictSize ?? to.superblock.blockSize);
  return true;
}

/**
 * The new image against the view: metadata everywhere, content of rebuilt files, stored blocks of
 * carried ones. With `below` (a layered base), the image is checked as the boot mounts it: as the
 * top layer over those layers.
 */
async function verifyNewBase(fs: FileSystem, path: string, view: OverlayFileSystem, carriedFrom: (path: string) => Promise<BlocksSource | undefined>, shown: string, below: readonly OverlayLayer[] | undefined, storable: (name: string) => boolean, format: 'squashfs' | 'erofs'): Promise<void> {
  const disk = await fs.openFile(path);
  try {
    const reader = format === 'squashfs' ? await SquashfsReader.open(disk, { cacheBytes: 4 << 20 }) : undefined;
    const ereader = format === 'erofs' ? await ErofsReader.open(disk, { cacheBytes: 4 << 20 }) : undefined;
    const image: FileSystem = reader !== undefined ? new SquashfsFileSystem(reader, disk.size) : new ErofsFileSystem(ereader!);
    const stack = below === undefined ? undefined : new OverlayFileSystem({ lowers: [{ fs: image, root: '/' }, ...below], xattrPrefix: await view.xattrPrefix() });
    const img: FileSystem = stack ?? image;
    const pieces = [new Uint8Array(PIECE), new Uint8Array(PIECE)] as const;
    // The share of the new packed inode that is the old one's pclusters, per old image (found once).
    const packedPrefixes = new Map<ErofsReader, Promise<number>>();
    const packedPrefix = (from: ErofsReader, to: ErofsReader): Promise<number> => {
      let known = packedPrefixes.get(from);
      if (known === undefined) packedPrefixes.set(from, (known = packedPrefixOf(from, to, pieces)));
      return known;
    };
    const bad = (p: string, what: string): never => {
      throw new LivestickError('VERIFY_FAILED', ExitCode.dataError, `the new base does not match the merged tree at ${p}: ${what}; nothing was switched`, { file: shown });
    };
    const walk = async (p: string): Promise<void> => {
      const a: FsStat = await view.stat(p);
      const b: FsStat = await img.stat(p);
      if (a.kind !== b.kind || a.mode !== b.mode || a.uid !== b.uid || a.gid !== b.gid) bad(p, 'kind, mode or owner');
      if (a.mtime.sec !== b.mtime.sec) bad(p, 'mtime');
      if (!sameXattrs((await view.xattrs(p)).filter((x) => storable(x.name)), (await img.xattrs?.(p)) ?? [])) bad(p, 'xattrs');
      if (a.kind === 'symlink' && (await view.readlink(p)) !== (await img.readlink(p))) bad(p, 'symlink target');
      if ((a.kind === 'chardev' || a.kind === 'blockdev') && (a.rdev?.major !== b.rdev?.major || a.rdev?.minor !== b.rdev?.minor)) bad(p, 'device number');
      if (a.kind === 'file') {
        if (a.size !== b.size) bad(p, 'size');
        if (stack !== undefined) {
          const got = (await stack.resolve(p)).data;
          if (got === undefined) return bad(p, 'no data in the new stack');
          if (got.layer !== 0) {
            const had = (await view.resolve(p)).data;
            if (had?.layer === got.layer && had.path === got.path) return; // the same file of a layer below, by construction
            return sameBytes(p, await view.openFile(p), await img.openFile(p), 0, bad, pieces);
          }
        }
        const source = await carriedFrom(p);
        if (source !== undefined && 'erofs' in source && ereader !== undefined) {
          // Carried pclusters: the same extents as the source file's, the same stored bytes; what
          // follows the last of them (compressed anew) is compared as content.
          const from = await carriedPrefix(source.erofs, await source.erofs.lookup(source.path), ereader, await ereader.lookup(strip(p)), pieces, () => packedPrefix(source.erofs, ereader));
          await sameBytes(p, await view.openFile(p), await img.openFile(p), from, bad, pieces);
        } else if (source !== undefined && 'reader' in source && reader !== undefined) {
          const src = await source.reader.lookup(source.path);
          const dst = await reader.lookup(strip(p));
          if (src.kind !== 'file' || dst.kind !== 'file') return bad(p, 'kind in the images');
          if (src.blockSizes.length !== dst.blockSizes.length || src.blockSizes.some((w, i) => w !== dst.blockSizes[i])) bad(p, 'stored blocks');
          const tail = a.size - src.blockSizes.length * reader.superblock.blockSize;
          if (tail > 0) await sameBytes(p, await view.openFile(p), await img.openFile(p), a.size - tail, bad, pieces);
        } else await sameBytes(p, await view.openFile(p), await img.openFile(p), 0, bad, pieces);
      }
      if (a.kind === 'dir') {
        const names = (await view.readdir(p)).map((e) => e.name).sort();
        const got = (await img.readdir(p)).map((e) => e.name).sort();
        if (names.length !== got.length || names.some((n, i) => n !== got[i])) bad(p, 'directory entries');
        for (const n of names) await walk(p === '/' ? `/${n}` : `${p}/${n}`);
      }
    };
    await walk('/');
  } finally {
    await disk.close();
  }
}

const PIECE = 1 << 20;

/**
 * How many leading bytes of `dst` (new image) are held by pclusters that are `src`'s (old image):
 * the same extent (start, length, algorithm, stored size) and the same stored bytes, extent by extent
 * from the start. Those decode as the source file does. A fragment that follows them counts too when
 * it has the same offset and length in both packed inodes and lies within the leading part of the
 * new packed inode held by the old one's pclusters (`packedPrefix`).
 */
export async function carriedPrefix(from: ErofsReader, src: Inode, to: ErofsReader, dst: Inode, pieces: readonly [Uint8Array, Uint8Array], packedPrefix?: () => Promise<number>): Promise<number> {
  const compressed = (i: Inode) => i.kind === 'file' && (i.layout === DataLayout.compressedCompact || i.layout === DataLayout.compressedFull);
  if (!compressed(src) || !compressed(dst) || src.size !== dst.size) return 0;
  const a = (await from.compressedExtents(src)).extents;
  const b = (await to.compressedExtents(dst)).extents;
  const [done, i] = await sameExtents(from, a, to, b, pieces);
  const p = a[i];
  const q = b[i];
  if (packedPrefix !== undefined && p !== undefined && q !== undefined && i === a.length - 1 && i === b.length - 1 && p.source === 'fragment' && q.source === 'fragment'
    && p.la === done && q.la === done && p.llen === q.llen && p.pa === q.pa && q.pa + q.llen <= (await packedPrefix())) return done + q.llen;
  return done;
}

/** The leading extents of `a` (old image) and `b` (new) that are the same pclusters with the same stored bytes: the bytes they cover, and how many. */
async function sameExtents(from: ErofsReader, a: readonly Extent[], to: ErofsReader, b: readonly Extent[], [x, y]: readonly [Uint8Array, Uint8Array]): Promise<[number, number]> {
  let done = 0;
  let i = 0;
  for (; i < a.length && i < b.length; i++) {
    const p = a[i]!;
    const q = b[i]!;
    if (p.source !== 'blocks' || q.source !== 'blocks' || p.la !== q.la || p.llen !== q.llen || p.plen !== q.plen || p.algorithm !== q.algorithm || p.partialRef || q.partialRef || p.plen > x.byteLength) break;
    await from.disk.read(x.subarray(0, p.plen), p.pa);
    await to.disk.read(y.subarray(0, q.plen), q.pa);
    if (!equalBytes(x.subarray(0, p.plen), y.subarray(0, q.plen))) break;
    done = p.la + p.llen;
  }
  return [done, i];
}

/** How many leading bytes of the new image's packed inode are the old one's pclusters (0 when either has none). */
export async function packedPrefixOf(from: ErofsReader, to: ErofsReader, pieces: readonly [Uint8Array, Uint8Array]): Promise<number> {
  if (from.superblock.packedNid === 0 || to.superblock.packedNid === 0) return 0;
  const src = await from.inode(from.superblock.packedNid);
  const dst = await to.inode(to.superblock.packedNid);
  const compressed = (i: Inode) => i.kind === 'file' && (i.layout === DataLayout.compressedCompact || i.layout === DataLayout.compressedFull);
  if (!compressed(src) || !compressed(dst) || dst.size < src.size) return 0;
  return (await sameExtents(from, (await from.compressedExtents(src)).extents, to, (await to.compressedExtents(dst)).extents, pieces))[0];
}

/** Compares two files from byte `from` on, through the two 1 MiB buffers of one verification. */
async function sameBytes(p: string, a: import('../../io/disk.ts').Disk, b: import('../../io/disk.ts').Disk, from: number, bad: (p: string, what: string) => never, [x, y]: readonly [Uint8Array, Uint8Array]): Promise<void> {
  try {
    const size = a.size;
    const piece = PIECE;
    for (let at = from; at < size; at += piece) {
      const n = Math.min(piece, size - at);
      await a.read(x.subarray(0, n), at);
      await b.read(y.subarray(0, n), at);
      if (!equalBytes(x.subarray(0, n), y.subarray(0, n))) bad(p, `content at byte ${at}`);
    }
  } finally {
    await a.close();
    await b.close();
  }
}

export { readJournal };
