import type { Command } from 'commander';
import { createInterface } from 'node:readline/promises';
import { formatSize } from '../../io/bytes.ts';
import { LivestickError, ExitCode, UsageError } from '../../errors.ts';
import { mediumStatus, renderStatus } from '../../ops/status.ts';
import { mergeMedium, type MergeResult } from '../../ops/merge.ts';
import { resetMedium } from '../../ops/reset.ts';
import type { CompressorName } from '../../fs/squashfs/index.ts';
import { Progress, parseIntegerOption, parseSizeOption, runCommand } from '../common.ts';
import { renderOverlayInfo } from './overlay.ts';

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

async function confirm(question: string): Promise<boolean> {
  if (!process.stdin.isTTY) return false;
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  try {
    return /^y(es)?$/i.test((await rl.question(`${question} [y/N] `)).trim());
  } finally {
    rl.close();
  }
}

export function registerMedium(program: Command): void {
  program
    .command('status')
    .description("show a live medium's overlay: how full it is, which files fill it, what a merge would reclaim")
    .argument('<medium>', 'directory holding LiveOS/ (a mounted stick or a copy)')
    .option('--overlay <file>', 'the overlay file, when LiveOS/ holds several')
    .option('--top <n>', 'how many files and directories to list', '10')
    .option('--json', 'print one JSON document')
    .action(async (dir: string, opts: { overlay?: string; top?: string; json?: boolean }) => {
      const top = parseIntegerOption(opts.top ?? '10', '--top');
      let progress: Progress | undefined;
      await runCommand(
        opts,
        async () => {
          const r = await mediumStatus(dir, { overlay: opts.overlay, top, onProgress: (d, t) => (progress ??= new Progress('mapping the filesystem', t, opts)).update(d) });
          progress?.finish();
          return r;
        },
        renderStatus,
      );
    });

  program
    .command('merge')
    .description('fold the overlay into a new compressed base (free space dropped), then start a fresh empty overlay; crash-safe')
    .argument('<medium>', 'directory holding LiveOS/')
    .option('--overlay <file>', 'the overlay file, when LiveOS/ holds several')
    .option('--compressor <name>', 'gzip, xz, zstd or lz4 (default: the old base\'s)')
    .option('--block-size <size>', 'SquashFS block size, 4K..1M (default: the old base\'s)')
    .option('--threads <n>', 'compression threads (default: all cores)')
    .option('--work-dir <dir>', 'build the new base here, then copy it onto the medium')
    .option('--dry-run', 'say what would happen: sizes, reclaimed space, space needed')
    .option('--keep-old', 'keep the previous base and overlay under clear names')
    .option('--force', 'rebuild the base even when the overlay holds no changes')
    .option('--json', 'print one JSON document')
    .action(async (dir: string, opts: { overlay?: string; compressor?: string; blockSize?: string; threads?: string; workDir?: string; dryRun?: boolean; keepOld?: boolean; force?: boolean; json?: boolean }) => {
      const compressor = opts.compressor as CompressorName | undefined;
      if (compressor !== undefined && !['gzip', 'xz', 'zstd', 'lz4'].includes(compressor)) throw new UsageError(`--compressor: "${compressor}" is not one of gzip, xz, zstd, lz4`);
      const blockSize = opts.blockSize === undefined ? undefined : parseSizeOption(opts.blockSize, '--block-size');
      const threads = opts.threads === undefined ? undefined : parseIntegerOption(opts.threads, '--threads');
      const bars = new Map<string, Progress>();
      await runCommand(
        opts,
        async () => {
          const r = await mergeMedium(dir, {
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
                bar = new Progress(phase, t, opts);
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
        renderMerge,
      );
    });

  program
    .command('reset')
    .description("empty a live medium's overlay (all changes are dropped); keeps its size, name and binding")
    .argument('<medium>', 'directory holding LiveOS/')
    .option('--overlay <file>', 'the overlay file, when LiveOS/ holds several')
    .option('-y, --yes', 'do not ask for confirmation')
    .option('--json', 'print one JSON document')
    .action(async (dir: string, opts: { overlay?: string; yes?: boolean; json?: boolean }) => {
      await runCommand(
        opts,
        async () => {
          if (!opts.yes && !(await confirm(`Drop every change kept in the overlay of ${dir}?`))) {
            throw new LivestickError('USAGE', ExitCode.usage, 'not confirmed: pass --yes to reset without asking');
          }
          return resetMedium(dir, { overlay: opts.overlay });
        },
        (r) => `reset: every change was dropped\n${renderOverlayInfo(r.overlay)}`,
      );
    });
}
