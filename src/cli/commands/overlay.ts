import type { Command } from 'commander';
import { ExitCode, LivestickError, UsageError } from '../../errors.ts';
import { formatSize } from '../../io/bytes.ts';
import { stat } from 'node:fs/promises';
import { bindOverlayfs } from '../../ops/overlayfs/reset.ts';
import { bindMediumOverlay, createOverlay, exportCombined, inspectOverlay, resetOverlay, bindOverlay, writeThrough, type OverlayInfo } from '../../ops/overlay.ts';
import { DEFAULT_CHUNK_SECTORS, SECTOR } from '../../xform/dmsnap/index.ts';
import { MEDIUM_ARGUMENT, Progress, confirmYes, mediumOptions, parseIntegerOption, parseSizeOption, runCommand, withOutputOptions } from '../common.ts';

function chunkSectors(text: string | undefined): number {
  if (text === undefined) return DEFAULT_CHUNK_SECTORS;
  const bytes = parseSizeOption(text, '--chunk-size');
  if (bytes < SECTOR || bytes % SECTOR !== 0 || ((bytes / SECTOR) & (bytes / SECTOR - 1)) !== 0 || bytes > 2 * 2 ** 20) {
    throw new UsageError(`--chunk-size: ${text} must be a power of two from 512 bytes to 2M (dracut uses 4K)`);
  }
  return bytes / SECTOR;
}

function mode(text: string | undefined): 'P' | 'PO' {
  const m = (text ?? 'PO').toUpperCase();
  if (m !== 'P' && m !== 'PO') throw new UsageError(`--mode: "${text}" must be P or PO`);
  return m;
}

export function renderOverlayInfo(info: OverlayInfo): string {
  const lines = [`overlay:     ${info.overlay}`];
  if (!info.valid) {
    lines.push('state:       INVALID (the kernel invalidated this snapshot: it overflowed or hit an I/O error; its data is lost)');
  } else {
    lines.push(`state:       ${info.state === 'new' ? 'new (all zero; the kernel initialises it on first use)' : 'valid'}`);
  }
  lines.push(`size:        ${formatSize(info.sizeBytes)} (${info.totalSectors} sectors)`);
  lines.push(`chunk size:  ${formatSize(info.chunkSize)} (${info.chunkSectors} sectors, ${info.exceptionsPerArea} exceptions per metadata area)`);
  if (info.valid) {
    lines.push(`exceptions:  ${info.exceptions} chunks copied`);
    lines.push(`used:        ${formatSize(info.usedBytes)} of ${formatSize(info.sizeBytes)} (${(info.fill * 100).toFixed(1)}%), ${formatSize(info.freeBytes)} free`);
    lines.push(`dm status:   ${info.dmStatus}`);
  }
  if (info.bound && info.binding) {
    const match = info.baseMatches === undefined ? '' : info.baseMatches ? ' — matches the given base' : ' — DOES NOT match the given base';
    lines.push(`base:        bound to "${info.binding.label}" (${formatSize(info.binding.baseSize)})${match}`);
  } else if (info.bindingProblem) {
    lines.push(`base:        binding record damaged (${info.bindingProblem}); rebind with \`livestick overlay bind\``);
  } else {
    lines.push('base:        unbound (made by another tool); `livestick overlay bind BASE OVERLAY` (or `overlay bind MEDIUM`) records its base');
  }
  if (info.valid && info.fill >= 0.9) lines.push(`warning:     the overlay is ${(info.fill * 100).toFixed(0)}% full; when it fills, writes fail`);
  return lines.join('\n');
}

async function* stdinChunks(): AsyncGenerator<Uint8Array> {
  for await (const chunk of process.stdin) yield chunk as Uint8Array;
}

export function registerOverlay(program: Command): void {
  const overlay = program.command('overlay').description('create, inspect and use dm-snapshot overlay files (LiveOS/overlay-LABEL-UUID)');

  withOutputOptions(
    overlay
      .command('create')
      .description('create a new empty overlay file, optionally bound to its base image')
      .argument('<overlay>', 'the overlay file to create (must not exist)')
      .requiredOption('--size <size>', 'overlay size (bytes, or 512M, 4G, …)')
      .option('--chunk-size <size>', 'chunk size (dracut uses 4K)', '4K')
      .option('--base <base>', 'bind the overlay to this base image')
  )
    .action(async (path: string, opts: { size: string; chunkSize?: string; base?: string; json?: boolean }) => {
      await runCommand(
        opts,
        async () => createOverlay(path, { size: parseSizeOption(opts.size, '--size'), chunkSectors: chunkSectors(opts.chunkSize), basePath: opts.base }),
        (info) => `${(info.warnings ?? []).map((w) => `warning: ${w}\n`).join('')}created ${info.overlay}\n${renderOverlayInfo(info)}`,
      );
    });

  withOutputOptions(
    overlay
      .command('info')
      .description('show an overlay: fill, chunk size, exceptions, dmsetup status figures, base binding')
      .argument('<overlay>', 'overlay file')
      .option('--base <base>', 'check that the overlay belongs to this base image')
      .option('--chunk-size <size>', 'chunk size to assume for an all-zero (not yet initialised) overlay', '4K')
  )
    .action(async (path: string, opts: { base?: string; chunkSize?: string; json?: boolean }) => {
      await runCommand(opts, async () => inspectOverlay(path, { basePath: opts.base, chunkSectorsIfNew: chunkSectors(opts.chunkSize) }), renderOverlayInfo);
    });

  withOutputOptions(
    overlay
      .command('write')
      .description('write standard input at a byte offset of the combined device (base + overlay), copy-on-write')
      .argument('<base>', 'base image')
      .argument('<overlay>', 'overlay file')
      .requiredOption('--offset <bytes>', 'byte offset in the combined device')
      .option('--mode <mode>', 'when the overlay is full: PO refuses the write (dracut), P invalidates the snapshot (the kernel with P)', 'PO')
      .option('--chunk-size <size>', 'chunk size for an all-zero (not yet initialised) overlay', '4K')
      .option('--force', 'use the overlay even if it is bound to a different base')
  )
    .action(async (base: string, path: string, opts: { offset: string; mode?: string; chunkSize?: string; force?: boolean; json?: boolean }) => {
      const offset = parseIntegerOption(opts.offset, '--offset');
      await runCommand(
        opts,
        async () => writeThrough(base, path, offset, stdinChunks(), { mode: mode(opts.mode), force: opts.force, chunkSectorsIfNew: chunkSectors(opts.chunkSize) }),
        (r) => `wrote ${r.bytesWritten} bytes at offset ${offset} (${r.newChunks} new chunks)\n${renderOverlayInfo(r.overlay)}`,
      );
    });

  withOutputOptions(
    overlay
      .command('export')
      .description('write the whole combined device (base + overlay) to a new file')
      .argument('<base>', 'base image')
      .argument('<overlay>', 'overlay file')
      .argument('<out>', 'output file (replaced when complete)')
      .option('--chunk-size <size>', 'chunk size for an all-zero (not yet initialised) overlay', '4K')
      .option('--force', 'use the overlay even if it is bound to a different base')
  )
    .action(async (base: string, path: string, out: string, opts: { chunkSize?: string; force?: boolean; json?: boolean }) => {
      let progress: Progress | undefined;
      await runCommand(
        opts,
        async () => {
          const r = await exportCombined(base, path, out, {
            force: opts.force,
            chunkSectorsIfNew: chunkSectors(opts.chunkSize),
            onProgress: (done, total) => {
              progress ??= new Progress('export', total, opts);
              progress.update(done);
            },
          });
          progress?.finish();
          return r;
        },
        (r) => `exported ${formatSize(r.bytes)} to ${r.out}`,
      );
    });

  withOutputOptions(
    overlay
      .command('bind')
      .description('record in the overlay which base it belongs to: a base image and an overlay file, or a medium (its overlay and the root image inside its squashfs.img)')
      .argument('<base-or-medium>', `base image, or a medium: ${MEDIUM_ARGUMENT}`)
      .argument('[overlay]', 'overlay file (with a medium: when LiveOS/ holds several; a bare name is looked up in LiveOS/)'),
  )
    .option('--partition <n>', 'with a medium: the partition holding LiveOS/, when several do')
    .option('--force-device', 'with a medium: write a device even while it is in use')
    .action(async (base: string, path: string | undefined, opts: { partition?: string; forceDevice?: boolean; json?: boolean; quiet?: boolean }) => {
      await runCommand(
        opts,
        async () => {
          // One argument is always a medium (a directory, a stick image or a device); two are a medium only when the first is a directory.
          if (path === undefined) {
            const ovl = await bindOverlayfs(base, mediumOptions(opts));
            if (ovl !== undefined) return ovl;
          }
          if (path === undefined || (await stat(base).catch(() => undefined))?.isDirectory()) return bindMediumOverlay(base, { ...mediumOptions(opts), overlay: path });
          return bindOverlay(base, path);
        },
        (info) => ('kind' in info && info.kind === 'overlayfs' ? `bound the overlayfs upper ${info.upper} to the base ${info.base.join(' + ')}` : `bound ${(info as OverlayInfo).overlay} to ${base}\n${renderOverlayInfo(info as OverlayInfo)}`),
      );
    });

  withOutputOptions(
    overlay
      .command('reset')
      .description('empty the overlay (all changes are dropped); keeps its size, chunk size and binding')
      .argument('<overlay>', 'overlay file')
      .option('-y, --yes', 'do not ask for confirmation')
      .option('--wipe', 'also overwrite the old data with zeros (otherwise it stays in the file until overwritten)')
  )
    .action(async (path: string, opts: { yes?: boolean; wipe?: boolean; json?: boolean; quiet?: boolean }) => {
      await runCommand(
        opts,
        async () => {
          if (!opts.yes) {
            const info = await inspectOverlay(path);
            const loss = `${formatSize(info.usedBytes)} of changes (${info.exceptions} chunks) in ${path}`;
            if (!(await confirmYes(`Reset drops ${loss}. Continue?`))) {
              throw new LivestickError('FAILURE', ExitCode.failure, `aborted: nothing was changed. A reset would drop ${loss}; pass --yes to reset without asking`);
            }
          }
          return resetOverlay(path, { wipe: opts.wipe });
        },
        (info) => `reset ${info.overlay}${info.wipedBytes > 0 ? ` (${formatSize(info.wipedBytes)} of old data overwritten)` : ''}\n${renderOverlayInfo(info)}`,
      );
    });
}
