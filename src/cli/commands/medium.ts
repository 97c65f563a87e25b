import type { Command } from 'commander';
import { formatSize } from '../../io/bytes.ts';
import { LivestickError, ExitCode, UsageError } from '../../errors.ts';
import { mediumStatus, renderStatus, type StatusReport } from '../../ops/status.ts';
import { mergeMedium, type MergeResult } from '../../ops/merge.ts';
import { resetMedium } from '../../ops/reset.ts';
import type { CompressorName } from '../../fs/squashfs/index.ts';
import { MEDIUM_ARGUMENT, Progress, mediumOptions, parseIntegerOption, parseSizeOption, runCommand, withMediumOptions, withOutputOptions, confirmYes } from '../common.ts';
import { renderOverlayInfo } from './overlay.ts';
import { resetOverlayfs } from '../../ops/overlayfs/reset.ts';
import type { OverlayfsMergeResult } from '../../ops/overlayfs/merge.ts';
import { runBounded } from '../bounded.ts';
import { overlayfsStatus, renderOverlayfsStatus, type OverlayfsStatusReport } from '../../ops/overlayfs/status.ts';

function renderMerge(r: MergeResult): string {
  if (r.nothingToMerge) return [`nothing to merge: the overlay of ${r.medium} holds no changes; the base was left as it is`, ...r.warnings.filter((w) => !w.startsWith('the overlay holds no changes')).map((w) => `warning: ${w}`)].join('\n');
  const lines = [
    r.dryRun ? (r.verdict === 'ok' ? `dry run: the merge would succeed; nothing was changed on ${r.medium}` : `dry run: the merge would fail; nothing was changed on ${r.medium}`) : `merged the overlay of ${r.medium} into a new base`,
    ...r.problems.map((p) => `would fail: ${p.file ? `${p.file}: ` : ''}${p.message}`),
    `  compressor ${r.compressor}, block size ${formatSize(r.blockSize)}`,
    `  old base             ${formatSize(r.oldBaseBytes)}`,
    `  new base             ${formatSize(r.newBaseBytes)}${r.newBaseEstimated ? ' (estimated)' : ''}`,
    `  overlay merged       ${formatSize(r.overlayBytesMerged)}`,
    `  free space dropped   ${formatSize(r.freeBytesDropped)}${r.freeSpaceDropping ? '' : ' (skipped: journal needs recovery)'}`,
    `  blocks               ${r.blocks.rebuilt} rebuilt, ${r.blocks.carried} carried over unchanged (of ${r.blocks.total})`,
    `  space needed         ${formatSize(r.spaceNeeded)} (${Number.isFinite(r.spaceAvailable) ? formatSize(r.spaceAvailable) : 'unknown'} free)`,
  ];
  if (!r.dryRun) {
    lines.push(`  time                 ${r.seconds.toFixed(1)} s`);
    lines.push('  the overlay is now empty and bound to the new base');
    if (r.kept.base) lines.push(`  previous base kept as ${r.kept.base}`);
    if (r.kept.overlay) lines.push(`  previous overlay kept as ${r.kept.overlay}`);
  }
  for (const w of r.warnings) lines.push(`warning: ${w}`);
  return lines.join('\n');
}

function renderOverlayfsMerge(r: OverlayfsMergeResult): string {
  if (r.nothingToMerge) return [`nothing to merge: the upper of ${r.medium} holds no changes; the base was left as it is`, ...r.warnings.filter((w) => !w.startsWith('the upper holds no changes')).map((w) => `warning: ${w}`)].join('\n');
  const lines = [
    r.dryRun ? (r.verdict === 'ok' ? `dry run: the merge would succeed; nothing was changed on ${r.medium}` : `dry run: the merge would fail; nothing was changed on ${r.medium}`) : `merged the overlayfs upper of ${r.medium} into a new base`,
    ...r.problems.map((p) => `would fail: ${p.file ? `${p.file}: ` : ''}${p.message}`),
    ...(r.layers > 1 ? [`  layered base (${r.layers} layers): ${r.dryRun ? 'its top layer would be' : 'its top layer was'} replaced by the top layer and the upper as one; the layers below stay as they are`] : []),
    `  compressor ${r.compressor}, block size ${formatSize(r.blockSize)}`,
    `  old ${r.layers > 1 ? 'top layer' : 'base     '}        ${formatSize(r.oldBaseBytes)}`,
    `  new ${r.layers > 1 ? 'top layer' : 'base     '}        ${formatSize(r.newBaseBytes)}${r.newBaseEstimated ? ' (at most; estimated)' : ''}`,
    `  upper merged         ${formatSize(r.upperBytesMerged)}`,
    `  base data dropped    ${formatSize(r.baseBytesDropped)} (deleted or replaced in the upper)`,
  ];
  if (!r.dryRun) {
    lines.push(`  files                ${r.files.rebuilt} compressed anew, ${r.files.carried} carried over unchanged`);
    lines.push(`  time                 ${r.seconds.toFixed(1)} s`);
    lines.push('  the upper is now empty and bound to the new base');
    if (r.kept.upper) lines.push(`  previous upper kept as ${r.kept.upper}`);
  } else lines.push(`  space needed         ${formatSize(r.spaceNeeded)} (${formatSize(r.spaceAvailable)} free)`);
  for (const w of r.warnings) lines.push(`warning: ${w}`);
  return lines.join('\n');
}

function exitCodeForProblem(code: string | undefined): number {
  switch (code) {
    case 'PERMISSION':
      return ExitCode.permission;
    case 'NO_SPACE':
    case 'IO':
      return ExitCode.ioError;
    case 'SNAPSHOT_INVALID':
      return ExitCode.dataError;
    default:
      return ExitCode.failure;
  }
}


export function registerMedium(program: Command): void {
  const status = program
    .command('status')
    .description("show a live medium's persistence (a dm-snapshot overlay file or an overlayfs upper): how full it is, what fills it, what a merge would reclaim")
    .argument('<medium>', MEDIUM_ARGUMENT)
    .option('--overlay <file>', 'the overlay file, when LiveOS/ holds several (a bare name is looked up in LiveOS/)')
    .option('--top <n>', 'how many files and directories to list', '10')
    .addHelpText('after', '\nExits 3 when the medium needs attention (a foreign or invalid overlay, a damaged filesystem, an overlay\nabove 80% full, or more promised than the medium can back); --json carries the same verdict ("healthy").');
  withOutputOptions(withMediumOptions(status)).action(async (dir: string, opts: { overlay?: string; top?: string; partition?: string; forceDevice?: boolean; json?: boolean; quiet?: boolean }) => {
    const top = parseIntegerOption(opts.top ?? '10', '--top');
    let progress: Progress | undefined;
    await runCommand(
      opts,
      async () => {
        const medium = mediumOptions(opts);
        const r: StatusReport | OverlayfsStatusReport =
          (opts.overlay === undefined ? await overlayfsStatus(dir, { ...medium, top }) : undefined) ??
          (await mediumStatus(dir, { ...medium, overlay: opts.overlay, top, onProgress: (d, t) => (progress ??= new Progress('mapping the filesystem', t, { ...opts, unit: 'count' })).update(d) }));
        progress?.finish();
        if (!r.healthy) process.exitCode = ExitCode.unhealthy;
        return r;
      },
      (r) => (r.kind === 'overlayfs' ? renderOverlayfsStatus(r) : renderStatus(r)),
    );
  });

  const merge = program
    .command('merge')
    .description('fold the overlay into a new compressed base (free space dropped), then start a fresh empty overlay; crash-safe')
    .argument('<medium>', MEDIUM_ARGUMENT)
    .option('--overlay <file>', 'the overlay file, when LiveOS/ holds several (a bare name is looked up in LiveOS/)')
    .option('--compressor <name>', 'gzip, xz, zstd or lz4 (default: the old base\'s)')
    .option('--block-size <size>', 'SquashFS block size, 4K..1M (default: the old base\'s)')
    .option('--drop-acls', 'overlayfs media: merge even where files carry POSIX ACLs (system.*), which a SquashFS base cannot store; they are left out')
    .option('--format <format>', 'overlayfs media: the new base\'s format, squashfs or erofs (default: the old base\'s; an EROFS base needs squashfs for now)')
    .option('--threads <n>', 'compression threads (default: all cores)')
    .option('--work-dir <dir>', 'build the new base here, then copy it onto the medium')
    .option('--dry-run', 'say what would happen: sizes, reclaimed space, space needed')
    .option('--keep-old', 'keep the previous base and overlay under clear names')
    .option('--force', 'rebuild the base even when the overlay holds no changes');
  withOutputOptions(withMediumOptions(merge)).action(async (dir: string, opts: { partition?: string; forceDevice?: boolean; overlay?: string; compressor?: string; blockSize?: string; format?: string; dropAcls?: boolean; threads?: string; workDir?: string; dryRun?: boolean; keepOld?: boolean; force?: boolean; json?: boolean; quiet?: boolean }) => {
    const compressor = opts.compressor as CompressorName | undefined;
    if (compressor !== undefined && !['gzip', 'xz', 'zstd', 'lz4'].includes(compressor)) throw new UsageError(`--compressor: "${compressor}" is not one of gzip, xz, zstd, lz4`);
    const blockSize = opts.blockSize === undefined ? undefined : parseSizeOption(opts.blockSize, '--block-size');
    const threads = opts.threads === undefined ? undefined : parseIntegerOption(opts.threads, '--threads');
    const format = opts.format as 'squashfs' | 'erofs' | undefined;
    if (format !== undefined && format !== 'squashfs' && format !== 'erofs') throw new UsageError(`--format: "${format}" is not squashfs or erofs`);
    const bars = new Map<string, Progress>();
    await runCommand(
      opts,
      async () => {
        const engineNeutral = opts.overlay === undefined && opts.workDir === undefined && compressor === undefined && blockSize === undefined;
        const ovl = engineNeutral ? await runBounded('mergeOverlayfs', dir, { ...mediumOptions(opts), threads, dryRun: opts.dryRun, keepOld: opts.keepOld, force: opts.force, format, dropAcls: opts.dropAcls }) : undefined;
        if (ovl !== undefined) {
          if (ovl.verdict === 'would-fail') process.exitCode = exitCodeForProblem(ovl.problems[0]?.code);
          return ovl;
        }
        if (format !== undefined) throw new UsageError(`--format applies to overlayfs media (an upper directory); ${dir} ${engineNeutral ? 'has a dm-snapshot overlay, whose base is always SquashFS' : 'is merged with --overlay/--work-dir/--compressor/--block-size, options of dm-snapshot media'}`);
        const r = await mergeMedium(dir, {
          ...mediumOptions(opts),
          overlay: opts.overlay,
          compressor,
          blockSize,
          threads,
          workDir: opts.workDir,
          dryRun: opts.dryRun,
          keepOld: opts.keepOld,
          force: opts.force,
          onProgress: (phase, d, t) => {
            let bar = bars.get(phase);
            if (!bar) {
              for (const b of bars.values()) b.finish();
              bar = new Progress(phase, t, { ...opts, unit: phase.startsWith('mapping') ? 'count' : 'bytes' });
              bars.set(phase, bar);
            }
            bar.update(d);
          },
        });
        for (const b of bars.values()) b.finish();
        // A dry run that finds a problem reports it and exits with that problem's code.
        if (r.verdict === 'would-fail') process.exitCode = exitCodeForProblem(r.problems[0]?.code);
        return r;
      },
      (r: MergeResult | OverlayfsMergeResult) => ('kind' in r && r.kind === 'overlayfs' ? renderOverlayfsMerge(r) : renderMerge(r as MergeResult)),
    );
  });

  const reset = program
    .command('reset')
    .description("empty a live medium's overlay: every change in it is dropped; keeps its size and name, binds it to the current base")
    .argument('<medium>', MEDIUM_ARGUMENT)
    .option('--overlay <file>', 'the overlay file, when LiveOS/ holds several (a bare name is looked up in LiveOS/)')
    .option('-y, --yes', 'do not ask for confirmation')
    .option('--wipe', 'also overwrite the old data with zeros (otherwise it stays in the overlay file until overwritten)')
    .addHelpText('after', '\nWithout --wipe the dropped changes are gone for every boot, but their bytes stay in the overlay file until\nthe live system writes over them; --wipe zeroes them (it takes as long as writing the used part).');
  withOutputOptions(withMediumOptions(reset)).action(async (dir: string, opts: { partition?: string; forceDevice?: boolean; overlay?: string; yes?: boolean; wipe?: boolean; json?: boolean; quiet?: boolean }) => {
    await runCommand(
      opts,
      async () => {
        if (opts.overlay === undefined && !opts.wipe) {
          // The figures are read only to ask; with --yes the overlayfs engine is tried straight away.
          const ovlStatus = opts.yes ? undefined : await overlayfsStatus(dir, { ...mediumOptions(opts), top: 3 });
          if (ovlStatus !== undefined) {
            const files = ovlStatus.topFiles.map((f) => `${f.path} ${formatSize(f.bytes)}`);
            const loss = `${formatSize(ovlStatus.upper.bytes)} of changes in ${ovlStatus.upper.entries} entries kept in ${ovlStatus.persistence.upper}${files.length > 0 ? ` (largest: ${files.join(', ')})` : ''}`;
            if (!(await confirmYes(`Reset drops ${loss}. Continue?`))) {
              throw new LivestickError('FAILURE', ExitCode.failure, `aborted: nothing was changed. A reset would drop ${loss}; pass --yes to reset without asking`);
            }
          }
          if (opts.yes || ovlStatus !== undefined) {
            const done = await resetOverlayfs(dir, mediumOptions(opts));
            if (done !== undefined) return done;
          }
        }
        if (!opts.yes) {
          const loss = await describeLoss(dir, opts.overlay, mediumOptions(opts));
          if (!(await confirmYes(`Reset drops ${loss}. Continue?`))) {
            throw new LivestickError('FAILURE', ExitCode.failure, `aborted: nothing was changed. A reset would drop ${loss}; pass --yes to reset without asking`);
          }
        }
        return resetMedium(dir, { ...mediumOptions(opts), overlay: opts.overlay, wipe: opts.wipe });
      },
      (r) =>
        'kind' in r
          ? [`reset: every change was dropped; ${r.upper} is empty (${r.droppedEntries} top-level entries removed) and bound to the current base`, ...r.warnings.map((w) => `warning: ${w}`)].join('\n')
          : `reset: every change was dropped${r.overlay.wipedBytes > 0 ? `, ${formatSize(r.overlay.wipedBytes)} of old data overwritten` : ''}\n${renderOverlayInfo(r.overlay)}`,
    );
  });
}

/** "1.2 GiB of changes (largest: /usr/lib/x, /var/cache/y, …)", or just the bytes when the files cannot be told. */
async function describeLoss(dir: string, overlay: string | undefined, medium: { partition?: number; forceDevice?: boolean }): Promise<string> {
  let r: StatusReport;
  try {
    r = await mediumStatus(dir, { ...medium, overlay, top: 3 });
  } catch {
    return 'every change kept in the overlay';
  }
  const files = r.topFiles.map((f) => `${f.path} ${formatSize(f.bytes)}`);
  return `${formatSize(r.overlay.usedBytes)} of changes kept in ${r.overlay.overlay}${files.length > 0 ? ` (largest: ${files.join(', ')})` : ''}`;
}
