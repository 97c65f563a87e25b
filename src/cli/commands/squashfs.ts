/** `livestick squashfs …`: create, ls, cat, extract, info. A thin frontend over src/fs/squashfs. */
import type { Command } from 'commander';
import { UsageError } from '../../errors.ts';
import { formatSize } from '../../io/bytes.ts';
import { FileDisk } from '../../io/disk.ts';
import { COMPRESSOR_NAMES, extractSquashfs, SquashfsReader, writeSquashfs, type CompressorName } from '../../fs/squashfs/index.ts';
import { decodeDev } from '../../fs/squashfs/inode.ts';
import { Flags } from '../../fs/squashfs/superblock.ts';
import { parseIntegerOption, parseSizeOption, Progress, quoteName, runCommand, writeOutput } from '../common.ts';

async function withReader<T>(image: string, body: (r: SquashfsReader) => Promise<T>): Promise<T> {
  const disk = await FileDisk.open(image, { readOnly: true });
  try {
    const reader = await SquashfsReader.open(disk).catch((err) => {
      throw err?.withFile ? err.withFile(image) : err;
    });
    return await body(reader);
  } finally {
    await disk.close();
  }
}

const TYPE_CHAR: Record<string, string> = { file: '-', dir: 'd', symlink: 'l', chardev: 'c', blockdev: 'b', fifo: 'p', socket: 's' };

function permString(mode: number): string {
  const rwx = (bits: number, special: boolean, ch: string) => `${bits & 4 ? 'r' : '-'}${bits & 2 ? 'w' : '-'}${special ? (bits & 1 ? ch : ch.toUpperCase()) : bits & 1 ? 'x' : '-'}`;
  return rwx(mode >> 6, (mode & 0o4000) !== 0, 's') + rwx(mode >> 3, (mode & 0o2000) !== 0, 's') + rwx(mode, (mode & 0o1000) !== 0, 't');
}

export function registerSquashfs(program: Command): void {
  const sq = program.command('squashfs').description('read and write SquashFS 4.0 images (the base of a live medium)');

  sq.command('create')
    .description('create an image from a directory')
    .argument('<source>', 'source directory')
    .argument('<out>', 'image to write')
    .option('--compressor <name>', 'gzip, xz, zstd or lz4', 'gzip')
    .option('--block-size <size>', 'data block size, 4K..1M', '128K')
    .option('--threads <n>', 'compression threads (0 = main thread)')
    .option('--all-root', 'store every file as owned by root')
    .option('--mtime <epoch>', 'every inode mtime and the image time (like SOURCE_DATE_EPOCH)')
    .option('--json', 'print one JSON document on stdout, on failure too')
    .option('-q, --quiet', 'print nothing but errors and warnings (no progress)')
    .action(async (source: string, out: string, opts: { compressor: string; blockSize: string; threads?: string; allRoot?: boolean; mtime?: string; json?: boolean }) => {
      await runCommand(opts, async () => {
        if (!['gzip', 'xz', 'zstd', 'lz4'].includes(opts.compressor)) throw new UsageError(`--compressor: "${opts.compressor}" is not gzip, xz, zstd or lz4`);
        const blockSize = parseSizeOption(opts.blockSize, '--block-size');
        if (blockSize < 4096 || blockSize > 1 << 20 || (blockSize & (blockSize - 1)) !== 0) throw new UsageError('--block-size: must be a power of two from 4K to 1M');
        const progress = new Progress('create', 0, opts);
        const started = Date.now();
        const r = await writeSquashfs(source, out, {
          compressor: opts.compressor as CompressorName,
          blockSize,
          ...(opts.threads !== undefined ? { threads: parseIntegerOption(opts.threads, '--threads') } : {}),
          ...(opts.mtime !== undefined ? { mtime: parseIntegerOption(opts.mtime, '--mtime') } : {}),
          allRoot: opts.allRoot === true,
          onProgress: (n) => progress.update(n),
        });
        progress.finish();
        return { image: out, compressor: opts.compressor, blockSize, inodes: r.inodes, fragments: r.fragments, bytesUsed: r.bytesUsed, size: r.size, seconds: (Date.now() - started) / 1000 };
      }, (r) => `${r.image}: ${r.inodes} inodes, ${formatSize(r.bytesUsed)} (${r.compressor}, ${formatSize(r.blockSize)} blocks) in ${r.seconds.toFixed(1)} s`);
    });

  sq.command('info')
    .description('show the superblock of an image')
    .argument('<image>', 'SquashFS image file')
    .option('--json', 'print one JSON document on stdout, on failure too')
    .option('-q, --quiet', 'print nothing but errors and warnings (no progress)')
    .action(async (image: string, opts: { json?: boolean }) => {
      await runCommand(opts, () => withReader(image, async (r) => {
        const sb = r.superblock;
        const flagNames = Object.entries(Flags).filter(([, bit]) => sb.flags & bit).map(([n]) => n);
        return {
          compressor: COMPRESSOR_NAMES[sb.compression] ?? `id ${sb.compression}`,
          compressorOptions: r.compressor.options ? Buffer.from(r.compressor.options).toString('hex') : null,
          blockSize: sb.blockSize, inodes: sb.inodes, bytesUsed: sb.bytesUsed, fragments: sb.fragments, ids: sb.idCount,
          mkfsTime: sb.mkfsTime, exportable: sb.lookupTableStart !== undefined, xattrs: sb.xattrIdTableStart !== undefined, flags: flagNames,
        };
      }), (i) => [
        `compressor:  ${i.compressor}${i.compressorOptions ? ` (options ${i.compressorOptions})` : ''}`,
        `block size:  ${formatSize(i.blockSize)}`,
        `inodes:      ${i.inodes}`,
        `bytes used:  ${i.bytesUsed} (${formatSize(i.bytesUsed)})`,
        `fragments:   ${i.fragments}`,
        `ids:         ${i.ids}`,
        `created:     ${new Date(i.mkfsTime * 1000).toISOString()}`,
        `flags:       ${i.flags.join(' ') || '(none)'}`,
      ].join('\n'));
    });

  sq.command('ls')
    .description('list a directory inside an image')
    .argument('<image>', 'SquashFS image file')
    .argument('[path]', 'directory inside the image', '/')
    .option('-l, --long', 'long listing')
    .option('--json', 'print one JSON document on stdout, on failure too')
    .option('-q, --quiet', 'print nothing but errors and warnings (no progress)')
    .action(async (image: string, path: string, opts: { long?: boolean; json?: boolean }) => {
      await runCommand(opts, () => withReader(image, async (r) => {
        const node = await r.lookup(path);
        const list = node.kind === 'dir' ? await r.readdir(node) : [{ name: path.split('/').filter(Boolean).pop() ?? '/', nameBytes: new Uint8Array(), inode: node }];
        const entries = list.map(({ name, inode }) => ({
          name, kind: inode.kind, mode: inode.mode, uid: r.uid(inode), gid: r.gid(inode), mtime: inode.mtime, nlink: inode.nlink,
          size: inode.kind === 'file' ? inode.fileSize : inode.kind === 'dir' ? Math.max(0, inode.fileSize - 3) : inode.kind === 'symlink' ? inode.target.byteLength : 0,
          ...(inode.kind === 'symlink' ? { target: Buffer.from(inode.target).toString('utf8') } : {}),
          ...(inode.kind === 'chardev' || inode.kind === 'blockdev' ? { rdev: decodeDev(inode.rdev) } : {}),
        }));
        return { path, entries };
      }), (res) => res.entries.map((e) => {
        if (!opts.long) return quoteName(e.name);
        const size = e.rdev ? `${e.rdev.major}, ${e.rdev.minor}` : String(e.size);
        const when = new Date(e.mtime * 1000).toISOString().slice(0, 16).replace('T', ' ');
        return `${TYPE_CHAR[e.kind] ?? '?'}${permString(e.mode)} ${String(e.nlink).padStart(3)} ${String(e.uid).padStart(5)} ${String(e.gid).padStart(5)} ${size.padStart(10)} ${when} ${quoteName(e.name)}${e.target !== undefined ? ` -> ${quoteName(e.target)}` : ''}`;
      }).join('\n'));
    });

  sq.command('cat')
    .description('write a file inside an image to stdout')
    .argument('<image>', 'SquashFS image file')
    .argument('<path>', 'file inside the image')
    .option('-q, --quiet', 'print nothing but errors and warnings (no progress)')
    .action(async (image: string, path: string) => {
      await runCommand({}, () => withReader(image, async (r) => {
        const node = await r.lookup(path);
        if (node.kind !== 'file') throw new UsageError(`${path} is not a regular file`);
        for await (const piece of r.stream(node)) {
          await writeOutput(piece);
        }
        return {};
      }), () => undefined);
    });

  sq.command('extract')
    .description('extract an image (or a subtree) into a directory; never writes outside DEST')
    .argument('<image>', 'SquashFS image file')
    .argument('<dest>', 'host directory to extract into')
    .argument('[path]', 'subtree inside the image', '/')
    .option('--threads <n>', 'decompression threads (default: all cores for images over 8 MiB; 0 = main thread)')
    .option('--json', 'print one JSON document on stdout, on failure too')
    .option('-q, --quiet', 'print nothing but errors and warnings (no progress)')
    .action(async (image: string, dest: string, path: string, opts: { threads?: string; json?: boolean }) => {
      await runCommand(opts, () => withReader(image, async (r) => {
        const res = await extractSquashfs(r, dest, path, opts.threads !== undefined ? { threads: parseIntegerOption(opts.threads, '--threads') } : {});
        return { dest, ...res };
      }), (r) => `${r.dest}: ${r.files} files, ${r.dirs} directories, ${r.symlinks} symlinks, ${r.hardlinks} hard links, ${formatSize(r.bytes)}` +
        (r.skipped.length > 0 ? `\nskipped ${r.skipped.length} (special files; see --json)` : ''));
    });
}
