import type { Command } from 'commander';
import { readFile } from 'node:fs/promises';
import { LivestickError, UsageError, fromSystemError } from '../../errors.ts';
import { formatSize } from '../../io/bytes.ts';
import { type BlockRangeUsage, type Ext4Info, type LsEntry, blockUsage, ext4Info, listDirectory, openExt4File } from '../../fs/ext4/index.ts';
import { parseIntegerOption, parseSizeOption, Progress, quoteName, runCommand, writeOutput } from '../common.ts';
import { FileDisk } from '../../io/disk.ts';
import { mkfs } from '../../fs/ext4/mkfs.ts';
import { Ext4Writer } from '../../fs/ext4/writer.ts';
import { copyIn } from '../../fs/ext4/copyin.ts';
import { growFs } from '../../fs/ext4/grow.ts';
import { Ext4 } from '../../fs/ext4/fs.ts';
import { rm, stat } from 'node:fs/promises';
import { formatUuid, parseUuid } from '../../fs/ext4/superblock.ts';

function renderInfo(info: Ext4Info): string {
  const lines = [
    `label:        ${info.label || '(none)'}`,
    `uuid:         ${info.uuid}`,
    `block size:   ${info.blockSize}`,
    `blocks:       ${info.blocks} (${formatSize(info.blocks * info.blockSize)})`,
    `free blocks:  ${info.freeBlocks} (${formatSize(info.freeBlocks * info.blockSize)}), ${info.reservedBlocks} reserved`,
    `inodes:       ${info.inodes} (${info.freeInodes} free, ${info.inodeSize} bytes each)`,
    `groups:       ${info.groups}`,
    `state:        ${info.state}${info.needsRecovery ? ' — the journal needs recovery: bitmaps and free counts are not trustworthy until it is replayed' : ''}${info.hasErrors ? ' — errors recorded: run e2fsck' : ''}`,
    `journal:      ${info.journal ? `inode ${info.journal.inode}, ${info.journal.blocks} blocks at ${info.journal.extents.map(([s, n]) => `${s}+${n}`).join(', ')}` : 'none'}`,
    `features:     ${info.features.join(' ')}`,
  ];
  if (info.orphansPending) lines.push('orphans:      pending (the kernel will finish deleting them at the next mount)');
  if (info.checksumErrors > 0) lines.push(`checksums:    ${info.checksumErrors} mismatches while reading — the image is damaged`);
  return lines.join('\n');
}

const TYPE_CHAR: Record<string, string> = { file: '-', dir: 'd', symlink: 'l', chardev: 'c', blockdev: 'b', fifo: 'p', socket: 's', unknown: '?' };

function permString(mode: number): string {
  const rwx = (bits: number, special: boolean, ch: string) => `${bits & 4 ? 'r' : '-'}${bits & 2 ? 'w' : '-'}${special ? (bits & 1 ? ch : ch.toUpperCase()) : bits & 1 ? 'x' : '-'}`;
  return rwx(mode >> 6, (mode & 0o4000) !== 0, 's') + rwx(mode >> 3, (mode & 0o2000) !== 0, 's') + rwx(mode, (mode & 0o1000) !== 0, 't');
}

function renderLs(entries: LsEntry[], long: boolean): string {
  if (!long) return entries.map((e) => quoteName(e.name)).join('\n');
  return entries
    .map((e) => {
      const size = e.rdev ? `${e.rdev.major}, ${e.rdev.minor}` : String(e.size);
      const when = new Date(e.mtime * 1000).toISOString().slice(0, 16).replace('T', ' ');
      return `${TYPE_CHAR[e.kind] ?? '?'}${permString(e.mode)} ${String(e.nlink).padStart(3)} ${String(e.uid).padStart(5)} ${String(e.gid).padStart(5)} ${size.padStart(10)} ${when} ${quoteName(e.name)}${e.target !== undefined ? ` -> ${quoteName(e.target)}` : ''}`;
    })
    .join('\n');
}

function parseRange(text: string, what: string): [number, number] {
  const m = /^\s*(\d+)\s*(?:[:-]\s*(\d+))?\s*$/.exec(text);
  if (!m) throw new UsageError(`${what}: "${text}" is not a block number or START:END`);
  const start = parseIntegerOption(m[1]!, what);
  const end = m[2] === undefined ? start + 1 : parseIntegerOption(m[2], what);
  if (end <= start) throw new UsageError(`${what}: "${text}": END must be above START (END is exclusive)`);
  return [start, end];
}

function renderUsage(result: { blockSize: number; ranges: BlockRangeUsage[] }): string {
  const lines: string[] = [];
  for (const r of result.ranges) {
    const kinds = Object.entries(r.kinds).map(([k, n]) => `${k} ${n}`).join(', ');
    lines.push(`blocks ${r.start}..${r.end - 1}: ${kinds}`);
    for (const o of r.owners) lines.push(`  inode ${o.inode} (${o.blocks} blocks): ${o.paths.length > 0 ? o.paths.join(', ') : '<no path>'}`);
  }
  return lines.join('\n');
}

export function registerExt4(program: Command): void {
  const ext4 = program.command('ext4').description('inspect ext2/3/4 filesystem images in userspace');

  ext4
    .command('info')
    .description('label, UUID, sizes, clean/dirty state, journal and features of an ext2/3/4 image')
    .argument('<image>', 'filesystem image')
    .option('--json', 'print one JSON document on stdout, on failure too')
    .option('-q, --quiet', 'print nothing but errors and warnings (no progress)')
    .action(async (image: string, opts: { json?: boolean }) => {
      await runCommand(
        opts,
        async () => {
          const { fs, disk } = await openExt4File(image);
          try {
            return { image, ...(await ext4Info(fs)) };
          } finally {
            await disk.close();
          }
        },
        renderInfo,
      );
    });

  ext4
    .command('ls')
    .description('list a directory of an ext2/3/4 image')
    .argument('<image>', 'filesystem image')
    .argument('[path]', 'directory inside the image', '/')
    .option('-l, --long', 'long listing (mode, links, owner, size, time)')
    .option('--json', 'print one JSON document on stdout, on failure too')
    .option('-q, --quiet', 'print nothing but errors and warnings (no progress)')
    .action(async (image: string, path: string, opts: { long?: boolean; json?: boolean }) => {
      await runCommand(
        opts,
        async () => {
          const { fs, disk } = await openExt4File(image);
          try {
            return { image, path, entries: await listDirectory(fs, path) };
          } finally {
            await disk.close();
          }
        },
        (r) => renderLs(r.entries, opts.long ?? false),
      );
    });

  ext4
    .command('cat')
    .description('write a file of an ext2/3/4 image to stdout')
    .argument('<image>', 'filesystem image')
    .argument('<path>', 'file inside the image')
    .option('-q, --quiet', 'print nothing but errors and warnings (no progress)')
    .action(async (image: string, path: string) => {
      await runCommand(
        {},
        async () => {
          const { fs, disk } = await openExt4File(image);
          try {
            for await (const piece of fs.stream(path)) await writeOutput(piece);
          } catch (err) {
            throw err instanceof LivestickError ? err.withFile(image) : err;
          } finally {
            await disk.close();
          }
          return {};
        },
        () => undefined,
      );
    });

  ext4
    .command('usage')
    .description('which files own the given blocks, and which of them are free or metadata')
    .argument('<image>', 'filesystem image')
    .option('--blocks <file>', 'file with one block number or START:END range (END exclusive) per line')
    .option('--range <start:end>', 'block range, END exclusive (repeatable)', (v: string, prev: string[] = []) => [...prev, v])
    .option('--json', 'print one JSON document on stdout, on failure too')
    .option('-q, --quiet', 'print nothing but errors and warnings (no progress)')
    .action(async (image: string, opts: { blocks?: string; range?: string[]; json?: boolean }) => {
      await runCommand(
        opts,
        async () => {
          const ranges: [number, number][] = (opts.range ?? []).map((r) => parseRange(r, '--range'));
          if (opts.blocks !== undefined) {
            let text: string;
            try {
              text = await readFile(opts.blocks, 'utf8');
            } catch (err) {
              throw fromSystemError(err, opts.blocks, 'read the block list');
            }
            for (const line of text.split('\n')) if (line.trim() !== '' && !line.startsWith('#')) ranges.push(parseRange(line, '--blocks'));
          }
          if (ranges.length === 0) throw new UsageError('give --blocks FILE or --range START:END');
          const { fs, disk } = await openExt4File(image);
          try {
            return { image, ...(await blockUsage(fs, ranges)) };
          } finally {
            await disk.close();
          }
        },
        renderUsage,
      );
    });

  ext4
    .command('mkfs')
    .description('create a new image file holding an empty ext4 filesystem (no e2fsprogs needed)')
    .argument('<image>', 'image file to create (must not exist)')
    .requiredOption('--size <size>', 'filesystem size (bytes, or 512M, 4G, …; at least 8M)')
    .option('--label <label>', 'volume label (up to 16 bytes)')
    .option('--uuid <uuid>', 'filesystem UUID (random by default)')
    .option('--json', 'print one JSON document on stdout, on failure too')
    .option('-q, --quiet', 'print nothing but errors and warnings (no progress)')
    .action(async (image: string, opts: { size: string; label?: string; uuid?: string; json?: boolean }) => {
      await runCommand(
        opts,
        async () => {
          const size = parseSizeOption(opts.size, '--size');
          let uuid: Uint8Array | undefined;
          if (opts.uuid !== undefined) {
            try {
              uuid = parseUuid(opts.uuid);
            } catch (err) {
              throw new UsageError(`--uuid: ${(err as Error).message}`);
            }
          }
          if (opts.label !== undefined && new TextEncoder().encode(opts.label).byteLength > 16) throw new UsageError('--label: at most 16 bytes');
          if (size < 8 * 2 ** 20) throw new UsageError('--size: an ext4 filesystem needs at least 8M');
          const disk = await FileDisk.open(image, { create: { size } });
          try {
            const r = await mkfs(disk, { label: opts.label, uuid, zeroed: true });
            return { image, blockSize: r.blockSize, blocks: r.blocks, groups: r.groups, inodes: r.inodes, journalBlocks: r.journalBlocks, uuid: formatUuid(r.uuid), label: opts.label ?? '' };
          } catch (err) {
            await rm(image, { force: true });
            throw err;
          } finally {
            await disk.close();
          }
        },
        (r) => `created ${r.image}: ext4, ${r.blocks} blocks of ${r.blockSize} bytes, ${r.inodes} inodes, journal ${r.journalBlocks} blocks, UUID ${r.uuid}`,
      );
    });

  ext4
    .command('put')
    .description('copy a host file or directory tree into an ext4 image (modes, owners, times, links, devices)')
    .argument('<image>', 'filesystem image (modified in place)')
    .argument('<src>', 'host file or directory')
    .argument('<dest>', 'path inside the image (a directory tree is copied to this path; "/" copies into the root)')
    .option('--json', 'print one JSON document on stdout, on failure too')
    .option('-q, --quiet', 'print nothing but errors and warnings (no progress)')
    .action(async (image: string, src: string, dest: string, opts: { json?: boolean }) => {
      await runCommand(
        opts,
        async () => {
          let total = 0;
          try {
            total = Number((await stat(src)).size);
          } catch (err) {
            throw fromSystemError(err, src, 'stat');
          }
          const { fs, disk } = await openExt4File(image, { write: true });
          const progress = new Progress('put', total, opts);
          try {
            const writer = await Ext4Writer.open(fs);
            const stats = await copyIn(writer, src, dest, (n) => progress.add(n));
            await writer.close();
            return { image, src, dest, ...stats };
          } finally {
            progress.finish();
            await disk.close();
          }
        },
        (r) => `copied ${r.files} files, ${r.directories} directories, ${r.symlinks} symlinks, ${r.hardLinks} hard links, ${r.others} other nodes (${formatSize(r.bytes)}) into ${r.image}:${r.dest}`,
      );
    });

  ext4
    .command('grow')
    .description('enlarge an ext4 image file and grow its filesystem to fill it (offline)')
    .argument('<image>', 'filesystem image file')
    .requiredOption('--size <size>', 'new image size (bytes, or 2G, …)')
    .option('--json', 'print one JSON document on stdout, on failure too')
    .option('-q, --quiet', 'print nothing but errors and warnings (no progress)')
    .action(async (image: string, opts: { size: string; json?: boolean }) => {
      await runCommand(
        opts,
        async () => {
          const size = parseSizeOption(opts.size, '--size');
          const disk = await FileDisk.open(image);
          try {
            if (size < disk.size) throw new UsageError(`--size: ${size} is smaller than the image (${disk.size} bytes); shrinking is not supported`);
            const fs = await Ext4.open(disk);
            const grewFile = size > disk.size;
            await disk.resize(size);
            const r = await growFs(fs, size, { zeroed: grewFile });
            return { image, ...r, blockSize: fs.blockSize };
          } finally {
            await disk.close();
          }
        },
        (r) => `grew ${r.image}: ${r.oldBlocks} → ${r.newBlocks} blocks (${formatSize(r.newBlocks * r.blockSize)}), ${r.oldGroups} → ${r.newGroups} groups${r.metaBgEnabled ? ', switched to meta_bg' : ''}`,
      );
    });
}
