/**
 * `livestick status` on overlayfs persistence: what the upper holds against the base it covers.
 *
 * Design notes
 * - The medium is read, never written. The merged view (fs/overlay) is built from the system's lower
 *   stack and the upper; fs/overlay/analyze.ts classifies every upper entry (new, copied up and
 *   changed, copied up but identical — reclaimable, metadata only, whiteouts and opaque dirs with
 *   the base bytes they hide) and this module turns it into the report, the warnings and the
 *   verdict, as status does for dm-snapshot media.
 * - Space: the filesystem holding the upper (a partition, or an image file such as a FAT stick's
 *   LiveOS/overlay-LABEL-UUID), and for an image also the volume the image lives on.
 * - On a mounted directory as a user other than root, trusted.* xattrs cannot be read: opaque
 *   directories, redirects and xattr whiteouts are then invisible, and the report says so.
 */
import { formatSize } from '../../io/bytes.ts';
import type { FileSystem } from '../../fs/filesystem.ts';
import { OverlayFileSystem } from '../../fs/overlay/index.ts';
import { analyzeUpper, UPPER_CLASSES, type ClassTotal, type UpperClass, type UpperFlags, type WorkdirReport } from '../../fs/overlay/analyze.ts';
import { withStick, type Persistence, type Stick } from '../live/index.ts';
import type { SwitchOutcome } from './switch.ts';
import { bindingState, lowerIdentities, type BindingState } from './binding.ts';
import { overlayfsNeedsRecovery, recoverOverlayfs } from './recover.ts';
import { selectOverlayfsOrNone, type OverlayfsChoice } from './select.ts';
import { RepairRefusedError, UsageError } from '../../errors.ts';
import { DeviceInUseError } from '../../io/device.ts';

export interface OverlayfsStatusReport {
  readonly kind: 'overlayfs';
  readonly medium: string;
  readonly scheme: string;
  readonly base: { readonly volume: string; readonly lowers: readonly string[] };
  readonly persistence: { readonly upper: string; readonly work: string | undefined; readonly volume: string; readonly mode: string; readonly encrypted: boolean; readonly legacy: boolean };
  /** The filesystem holding the upper; `host` is the volume an upper image file lives on. */
  readonly space: { readonly totalBytes: number; readonly freeBytes: number; readonly usedBytes: number; readonly fill: number; readonly host?: { readonly volume: string; readonly freeBytes: number } };
  readonly upper: {
    readonly bytes: number;
    readonly entries: number;
    readonly classes: Readonly<Record<UpperClass, ClassTotal>>;
    /** Upper bytes a merge gives back without changing the tree: copies identical to the base. */
    readonly reclaimableBytes: number;
    /** Base bytes hidden by whiteouts, opaque directories and replaced files: what a merge drops from the base. */
    readonly hiddenBaseBytes: number;
  };
  readonly topFiles: readonly { readonly path: string; readonly bytes: number; readonly class: UpperClass }[];
  readonly topDirectories: readonly { readonly path: string; readonly bytes: number }[];
  readonly flags: UpperFlags;
  readonly workdir: WorkdirReport | undefined;
  readonly binding: { readonly state: BindingState['state']; readonly matches?: boolean; readonly boundAt?: string; readonly message?: string };
  /** Other persistence of the same system (live-boot bind/link lines …), reported only. */
  readonly others: readonly { readonly kind: string; readonly target: string; readonly path: string; readonly mode: string }[];
  readonly warnings: string[];
  readonly problems: string[];
  readonly healthy: boolean;
  readonly recommendation: string;
}

export interface OverlayfsStatusOptions {
  partition?: number;
  forceDevice?: boolean;
  top?: number;
  warnAt?: number;
}

const trustedInvisible = (fs: FileSystem): boolean => fs.type === 'host' && typeof process.getuid === 'function' && process.getuid() !== 0;

/** The status of an overlayfs medium, or undefined when `target` is not one (a dm-snapshot medium). */
export async function overlayfsStatus(target: string, options: OverlayfsStatusOptions = {}): Promise<OverlayfsStatusReport | undefined> {
  const statusOn = async (stick: Stick, recovery?: SwitchOutcome): Promise<OverlayfsStatusReport | undefined> => {
    const choice = await selectOverlayfsOrNone(stick, options.partition);
    if (choice === undefined) return undefined;
    const r = await statusOf(stick.target, choice, options);
    if (recovery !== undefined && recovery.action !== 'none') r.warnings.unshift(recovery.action === 'completed' ? 'an interrupted merge was completed first' : 'the leftovers of an interrupted merge were removed first (nothing had been switched)', ...recovery.warnings);
    return r;
  };
  // One read-only open when nothing needs recovery; an interrupted merge is finished (or undone) first, on a reopen for writing.
  const first = await withStick(target, { force: options.forceDevice }, async (stick) => ((await overlayfsNeedsRecovery(stick).catch(() => false)) ? undefined : { report: await statusOn(stick) }));
  if (first !== undefined) return first.report;
  try {
    return await withStick(target, { write: true, force: options.forceDevice }, async (stick) => statusOn(stick, await recoverOverlayfs(stick)));
  } catch (err) {
    // A volume whose repair is refused (damage a crash cannot explain), or a device in use (mounted:
    // its FAT dirty bit and ext4 journal say so while it is), is still reported, read as it is.
    if (!(err instanceof RepairRefusedError) && !(err instanceof DeviceInUseError)) throw err;
    const warning =
      err instanceof DeviceInUseError
        ? `the stick could not be opened for writing to finish an interrupted change or replay a journal (${err.message}); it is read as it is, which may not show its last changes`
        : `a volume was not closed cleanly and livestick will not repair it (${err.message}); it is read as it is — check it with fsck`;
    return withStick(target, { force: options.forceDevice }, async (stick) => {
      const r = await statusOn(stick);
      r?.warnings.unshift(warning);
      return r;
    });
  }
}

function others(choice: OverlayfsChoice): OverlayfsStatusReport['others'] {
  return choice.others.map((p: Persistence) => ({ kind: p.kind, target: p.target, path: p.volume.displayPath(p.upper), mode: p.mode }));
}

export async function statusOf(medium: string, choice: OverlayfsChoice, options: OverlayfsStatusOptions): Promise<OverlayfsStatusReport> {
  const { system, persistence } = choice;
  const warnings: string[] = [];
  const problems: string[] = [];
  if (!persistence.present) throw new UsageError(`${persistence.volume.displayPath(persistence.upper)} is not in use: ${persistence.mode}`);
  const open = await persistence.open();
  const lowers = await system.openLowers();
  const view = new OverlayFileSystem({ upper: { fs: open.fs, root: open.upperRoot }, lowers });
  const report = await analyzeUpper(view, { workdir: open.workRoot !== undefined ? { fs: open.fs, root: open.workRoot } : undefined, top: options.top ?? 10 });

  const space = await open.fs.space();
  const used = Math.max(0, space.totalBytes - space.freeBytes);
  const fill = space.totalBytes > 0 ? used / space.totalBytes : 0;
  let host: OverlayfsStatusReport['space']['host'];
  const parent = persistence.volume.parent;
  if (parent !== undefined) {
    const pfs = await parent.open();
    if (pfs) host = { volume: parent.display, freeBytes: (await pfs.space()).freeBytes };
  }

  const binding = await bindingState(open.fs, open.workRoot, await lowerIdentities(system));
  const t = report.totals;
  const reclaimableBytes = t['copied-up-identical'].upperBytes;
  const hiddenBaseBytes = UPPER_CLASSES.reduce((n, c) => n + t[c].hiddenBytes, 0);

  const warnAt = options.warnAt ?? 0.8;
  if (fill >= warnAt) {
    warnings.push(`the filesystem holding the upper is ${(fill * 100).toFixed(1)}% full (${formatSize(space.freeBytes)} free): when it fills, writes in the live system fail`);
    problems.push('the upper is nearly full');
  }
  if (binding.state === 'bound' && !binding.matches) {
    warnings.push('the upper is bound to another base: it was made over a different squashfs.img, and booting it over this one can show a broken tree; reset it, or bind it if you know it belongs here');
    problems.push('the upper belongs to another base');
  }
  if (binding.state === 'damaged') warnings.push(`the binding record is damaged (${binding.message}); \`livestick overlay bind\` writes a new one`);
  if (report.flags.volatile) {
    warnings.push('the work directory holds work/incompat/volatile: a volatile mount was not unmounted cleanly, and the kernel refuses to mount this upper until the work directory is emptied');
    problems.push('volatile work directory');
  }
  if (report.flags.offlineLowerChangesUnsafe) {
    const used = [report.flags.index ? 'index' : '', report.flags.metacopy ? 'metacopy' : '', report.flags.redirect ? 'redirect_dir' : ''].filter(Boolean).join(', ');
    warnings.push(`the upper uses ${used}: it refers to the base's own files, so it must not be kept over a changed base — a merge folds it in and starts a fresh upper`);
  }
  if (report.workdir && report.workdir.leftovers.length > 0) warnings.push(`the work directory holds ${report.workdir.leftovers.length} leftover entr${report.workdir.leftovers.length === 1 ? 'y' : 'ies'} of an interrupted copy-up (the kernel clears them at the next mount)`);
  if (trustedInvisible(open.fs) && report.flags.userxattr === false) {
    warnings.push('not running as root: trusted.overlay.* attributes of a mounted upper cannot be read, so opaque directories, renamed directories and attribute whiteouts are invisible to this report; run as root, or give livestick the image or device itself');
  }
  if (persistence.legacy) warnings.push('the upper is in the old casper layout (the filesystem root); casper moves it into upper/ at the next boot');
  for (const p of report.problems) warnings.push(p);

  const reclaimPct = report.upperBytes > 0 ? reclaimableBytes / report.upperBytes : 0;
  let recommendation: string;
  if (report.entries.length === 0) recommendation = 'the upper is empty: nothing to merge';
  else if (problems.length > 0 && binding.state === 'bound' && !binding.matches) recommendation = 'do not merge this upper into this base; `livestick reset` starts a fresh one';
  else if (fill >= warnAt || reclaimPct >= 0.2 || hiddenBaseBytes > 0) recommendation = `\`livestick merge\` folds the upper into a new base: the upper becomes empty (${formatSize(report.upperBytes)} back), ${formatSize(hiddenBaseBytes)} of deleted base data leaves the base`;
  else recommendation = 'no action needed; `livestick merge` folds the upper into a new base when you want the room back';

  return {
    kind: 'overlayfs',
    medium,
    scheme: system.scheme,
    base: { volume: system.volume.display, lowers: system.lowers.map((l) => l.volume.displayPath(l.path) + (l.inner ? ` (${l.inner.path} inside)` : '')) },
    persistence: { upper: persistence.volume.displayPath(persistence.upper), work: persistence.work !== undefined ? persistence.volume.displayPath(persistence.work) : undefined, volume: persistence.volume.display, mode: persistence.mode, encrypted: persistence.encrypted, legacy: persistence.legacy },
    space: { totalBytes: space.totalBytes, freeBytes: space.freeBytes, usedBytes: used, fill, ...(host ? { host } : {}) },
    upper: { bytes: report.upperBytes, entries: report.entries.length, classes: report.totals, reclaimableBytes, hiddenBaseBytes },
    topFiles: report.topFiles.map((e) => ({ path: e.path, bytes: e.upperBytes, class: e.class })),
    topDirectories: report.topDirs.map((d) => ({ path: d.path, bytes: d.upperBytes })),
    flags: report.flags,
    workdir: report.workdir,
    binding: binding.state === 'bound' ? { state: 'bound', matches: binding.matches, boundAt: binding.binding.boundAt } : binding.state === 'damaged' ? { state: 'damaged', message: binding.message } : { state: 'unbound' },
    others: others(choice),
    warnings,
    problems,
    healthy: problems.length === 0,
    recommendation,
  };
}

const CLASS_LABEL: Record<UpperClass, string> = {
  new: 'new files',
  'copied-up-changed': 'changed base files',
  'copied-up-identical': 'copies identical to the base',
  'metadata-only': 'metadata-only changes',
  whiteout: 'deletions (whiteouts)',
  'opaque-dir': 'replaced directories',
  'redirect-dir': 'renamed directories',
  'merged-dir': 'directories',
};

export function renderOverlayfsStatus(r: OverlayfsStatusReport): string {
  const pct = (x: number) => `${(x * 100).toFixed(1)}%`;
  const lines = [
    `medium:      ${r.medium}`,
    `system:      ${r.scheme}, base ${r.base.lowers.join(' + ')}`,
    `upper:       ${r.persistence.upper}${r.persistence.work ? ` (work ${r.persistence.work})` : ''}`,
    `             ${r.persistence.mode}`,
    `space:       ${formatSize(r.space.usedBytes)} used of ${formatSize(r.space.totalBytes)} (${pct(r.space.fill)}), ${formatSize(r.space.freeBytes)} free${r.space.host ? `; ${formatSize(r.space.host.freeBytes)} free on ${r.space.host.volume}` : ''}`,
    `binding:     ${r.binding.state === 'bound' ? (r.binding.matches ? 'bound to this base' : 'bound to ANOTHER base') : r.binding.state === 'damaged' ? 'record damaged' : 'unbound'}`,
    '',
    `where the upper went (${formatSize(r.upper.bytes)} in ${r.upper.entries} entries):`,
  ];
  for (const c of UPPER_CLASSES) {
    const t = r.upper.classes[c];
    if (t.count === 0) continue;
    lines.push(`  ${CLASS_LABEL[c].padEnd(30)} ${String(t.count).padStart(7)}  ${formatSize(t.upperBytes).padStart(10)}${t.hiddenBytes > 0 ? `  hiding ${formatSize(t.hiddenBytes)} of the base` : ''}`);
  }
  lines.push(`  reclaimable by a merge         ${formatSize(r.upper.reclaimableBytes)} (identical copies)`);
  lines.push(`  base bytes a merge drops       ${formatSize(r.upper.hiddenBaseBytes)}`);
  if (r.topFiles.length > 0) {
    lines.push('', 'largest files in the upper:');
    for (const f of r.topFiles) lines.push(`  ${formatSize(f.bytes).padStart(10)}  ${f.path}  (${CLASS_LABEL[f.class]})`);
  }
  if (r.topDirectories.length > 0) {
    lines.push('', 'largest directories in the upper:');
    for (const d of r.topDirectories) lines.push(`  ${formatSize(d.bytes).padStart(10)}  ${d.path}`);
  }
  for (const o of r.others) lines.push(`other:       ${o.kind} ${o.target} at ${o.path} (${o.mode})`);
  for (const w of r.warnings) lines.push('', `warning: ${w}`);
  lines.push('', r.recommendation);
  lines.push(r.healthy ? 'health:      ok' : `health:      NEEDS ATTENTION (${r.problems.join('; ')})`);
  return lines.join('\n');
}
