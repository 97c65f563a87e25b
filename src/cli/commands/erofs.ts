/** `livestick erofs …`: create, info, ls, cat, extract. A thin frontend over src/fs/erofs. */
import type { Command } from 'commander';
import { UsageError } from '../../errors.ts';
import { formatSize } from '../../io/bytes.ts';
import { FileDisk } from '../../io/disk.ts';
import { ErofsReader } from '../../fs/erofs/reader.ts';
import { extractErofs } from '../../fs/erofs/extract.ts';
import { writeErofs } from '../../fs/erofs/writer.ts';
import { parseCompression, zipConfig } from '../../fs/erofs/compress.ts';
import { Compat, Incompat, uuidText, volumeLabel } from '../../fs/erofs/superblock.ts';
import { imageAlgorithms } from '../../fs/erofs/zmap.ts';
import { parseIntegerOption, parseSizeOption, quoteName, runCommand, writeOutput } from '../common.ts';

async function withReader<T>(image: string, body: (r: ErofsReader) => Promise<T>): Promise<T> {
  const disk = await FileDisk.open(image, { readOnly: true });
  try {
    const reader = await ErofsReader.open(disk).catch((err) => {
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

const names = (bits: number, table: Record<string, number>): string[] => {
  const seen = new Set<number>();
  return Object.entries(table).filter(([, bit]) => bits & bit && !seen.has(bit) && seen.add(bit)).map(([n]) => n);
};

export function registerErofs(program: Command): void {
  const ero = program.command('erofs').description('read and write EROFS images (the base of Fedora 42+ live media)');

  ero.command('create')
    .description('create an image from a directory, uncompressed or compressed (-z)')
    .argument('<source>', 'source directory')
    .argument('<out>', 'image to write')
    .option('--block-size <size>', 'block size, 512..4K', '4K')
    .option('--mkfs-time <epoch>', 'build time, and the mtime compact inodes share (default SOURCE_DATE_EPOCH, else now)')
    .option('--uuid <uuid>', 'volume UUID (default derived from the contents)')
    .option('--chunk-size <size>', 'chunk-based files with chunks of this size (all-zero chunks become holes)')
    .option('-z, --compress <alg>', 'compress files larger than a block: lzma, lz4, lz4hc, deflate or zstd, with ",level=N" (as mkfs.erofs -z)')
    .option('-C, --pcluster-size <size>', 'largest pcluster with -z, a multiple of the block size up to 1M (default one block; Fedora uses 1M)')
    .option('--fragments', 'with -z, file tails go to the packed inode (mkfs.erofs -Efragments)')
    .option('--all-fragments', 'with -z, whole files go to the packed inode (mkfs.erofs -Eall-fragments)')
    .option('--dedupe', 'with -z, identical files share their compressed data (the default with fragments)')
    .option('--no-dedupe', 'with fragments, store identical files each on their own (mkfs.erofs -E^fragdedupe)')
    .option('--threads <n>', 'compression threads (default: cores, at most 8; 0 = none)')
    .option('--json', 'print one JSON document on stdout, on failure too')
    .option('-q, --quiet', 'print nothing but errors and warnings')
    .action(async (source: string, out: string, opts: {
      blockSize: string; mkfsTime?: string; uuid?: string; chunkSize?: string; compress?: string; pclusterSize?: string; fragments?: boolean; allFragments?: boolean; dedupe?: boolean; threads?: string; json?: boolean;
    }) => {
      await runCommand(opts, async () => {
        const blockSize = parseSizeOption(opts.blockSize, '--block-size');
        if (blockSize < 512 || blockSize > 4096 || (blockSize & (blockSize - 1)) !== 0) throw new UsageError('--block-size: must be a power of two from 512 to 4K');
        if (opts.uuid !== undefined && !/^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$/.test(opts.uuid)) {
          throw new UsageError(`--uuid: "${opts.uuid}" is not a UUID`);
        }
        const chunkSize = opts.chunkSize !== undefined ? parseSizeOption(opts.chunkSize, '--chunk-size') : undefined;
        if (chunkSize !== undefined && (chunkSize < blockSize || chunkSize > 1 << 28 || (chunkSize & (chunkSize - 1)) !== 0)) {
          throw new UsageError('--chunk-size: must be a power of two from the block size to 256M');
        }
        const pclusterSize = opts.pclusterSize !== undefined ? parseSizeOption(opts.pclusterSize, '--pcluster-size') : undefined;
        if (opts.compress === undefined && (pclusterSize !== undefined || opts.fragments || opts.allFragments || opts.dedupe === true)) throw new UsageError('--pcluster-size, --fragments, --all-fragments and --dedupe need -z');
        if (opts.compress !== undefined && chunkSize !== undefined) throw new UsageError('-z and --chunk-size do not mix');
        if (opts.compress !== undefined) {
          try {
            zipConfig(parseCompression(opts.compress), blockSize, pclusterSize ?? blockSize);
          } catch (err) {
            if (err instanceof RangeError) throw new UsageError(`${pclusterSize !== undefined && /pcluster/.test(err.message) ? '--pcluster-size' : '-z'}: ${err.message}`);
            throw err;
          }
        }
        const threads = opts.threads !== undefined ? parseIntegerOption(opts.threads, '--threads') : undefined;
        if (threads !== undefined && threads < 0) throw new UsageError('--threads: must be 0 or more');
        const started = Date.now();
        const r = await writeErofs(source, out, {
          blockSize,
          ...(chunkSize !== undefined ? { chunkSize } : {}),
          ...(opts.compress !== undefined ? { compression: opts.compress } : {}),
          ...(pclusterSize !== undefined ? { pclusterSize } : {}),
          ...(opts.fragments ? { fragments: true } : {}),
          ...(opts.allFragments ? { allFragments: true } : {}),
          ...(opts.dedupe !== undefined ? { dedupe: opts.dedupe } : {}),
          ...(threads !== undefined ? { threads } : {}),
          ...(opts.mkfsTime !== undefined ? { mkfsTime: parseIntegerOption(opts.mkfsTime, '--mkfs-time') } : {}),
          ...(opts.uuid !== undefined ? { uuid: opts.uuid } : {}),
        });
        return {
          image: out, blockSize, chunkSize: chunkSize ?? null, compression: opts.compress ?? null, pclusterSize: opts.compress !== undefined ? (pclusterSize ?? blockSize) : null,
          fragments: opts.fragments === true || opts.allFragments === true, allFragments: opts.allFragments === true,
          inodes: r.inodes, blocks: r.blocks, size: r.size, dataBytes: r.dataBytes, seconds: (Date.now() - started) / 1000,
        };
      }, (r) => `${r.image}: ${r.inodes} inodes, ${formatSize(r.size)} (${r.compression === null ? 'uncompressed' : `${r.compression}, ${formatSize(r.pclusterSize ?? 0)} pclusters${r.allFragments ? ', all fragments' : r.fragments ? ', fragments' : ''}`}, ${formatSize(r.blockSize)} blocks) in ${r.seconds.toFixed(1)} s`);
    });

  ero.command('info')
    .description('show the superblock of an image')
    .argument('<image>', 'EROFS image file')
    .option('--json', 'print one JSON document on stdout, on failure too')
    .option('-q, --quiet', 'print nothing but errors and warnings (no progress)')
    .action(async (image: string, opts: { json?: boolean }) => {
      await runCommand(opts, () => withReader(image, async (r) => {
        const sb = r.superblock;
        const algorithms = imageAlgorithms(sb);
        return {
          blockSize: r.blockSize, blocks: sb.blocks, inodes: sb.inos, rootNid: sb.rootNid, packedNid: sb.packedNid || null,
          label: volumeLabel(sb) ?? null, uuid: uuidText(sb) ?? null, buildTime: sb.epoch + sb.buildTime,
          algorithms: [...algorithms], compatFeatures: names(sb.featureCompat, Compat), incompatFeatures: names(sb.featureIncompat, Incompat),
          longXattrPrefixes: r.longPrefixes.length,
        };
      }), (i) => [
        `block size:  ${formatSize(i.blockSize)}`,
        `blocks:      ${i.blocks} (${formatSize(i.blocks * i.blockSize)})`,
        `inodes:      ${i.inodes}`,
        `label:       ${i.label ?? '(none)'}`,
        `uuid:        ${i.uuid ?? '(none)'}`,
        `created:     ${new Date(i.buildTime * 1000).toISOString()}`,
        `compression: ${i.algorithms.join(' ') || '(none)'}`,
        `features:    ${[...i.compatFeatures, ...i.incompatFeatures].join(' ') || '(none)'}`,
      ].join('\n'));
    });

  ero.command('ls')
    .description('list a directory inside an image')
    .argument('<image>', 'EROFS image file')
    .argument('[path]', 'directory inside the image', '/')
    .option('-l, --long', 'long listing')
    .option('--json', 'print one JSON document on stdout, on failure too')
    .option('-q, --quiet', 'print nothing but errors and warnings (no progress)')
    .action(async (image: string, path: string, opts: { long?: boolean; json?: boolean }) => {
      await runCommand(opts, () => withReader(image, async (r) => {
        const node = await r.lookup(path);
        const list = node.kind === 'dir' ? await Promise.all((await r.readdir(node)).map(async (e) => ({ name: e.name, inode: await r.inode(e.nid) }))) : [{ name: path.split('/').filter(Boolean).pop() ?? '/', inode: node }];
        const entries = await Promise.all(list.map(async ({ name, inode }) => ({
          name, kind: inode.kind, mode: inode.mode, uid: inode.uid, gid: inode.gid, mtime: inode.mtime.sec, nlink: inode.nlink, size: inode.size, nid: inode.nid,
          ...(inode.kind === 'symlink' ? { target: await r.readlink(inode) } : {}),
          ...(inode.rdev !== undefined ? { rdev: inode.rdev } : {}),
        })));
        return { path, entries };
      }), (res) => res.entries.map((e) => {
        if (!opts.long) return quoteName(e.name);
        const size = e.rdev ? `${e.rdev.major}, ${e.rdev.minor}` : String(e.size);
        const when = new Date(e.mtime * 1000).toISOString().slice(0, 16).replace('T', ' ');
        return `${TYPE_CHAR[e.kind] ?? '?'}${permString(e.mode)} ${String(e.nlink).padStart(3)} ${String(e.uid).padStart(5)} ${String(e.gid).padStart(5)} ${size.padStart(10)} ${when} ${quoteName(e.name)}${e.target !== undefined ? ` -> ${quoteName(e.target)}` : ''}`;
      }).join('\n'));
    });

  ero.command('cat')
    .description('write a file inside an image to stdout')
    .argument('<image>', 'EROFS image file')
    .argument('<path>', 'file inside the image')
    .option('-q, --quiet', 'print nothing but errors and warnings (no progress)')
    .action(async (image: string, path: string) => {
      await runCommand({}, () => withReader(image, async (r) => {
        const node = await r.lookup(path);
        if (node.kind !== 'file') throw new UsageError(`${path} is not a regular file`);
        const piece = new Uint8Array(Math.min(node.size, 1 << 20));
        for (let at = 0; at < node.size; at += piece.byteLength) {
          const part = piece.subarray(0, Math.min(piece.byteLength, node.size - at));
          await r.readRange(node, part, at);
          await writeOutput(Uint8Array.from(part));
        }
        return {};
      }), () => undefined);
    });

  ero.command('extract')
    .description('extract an image (or a subtree) into a directory; never writes outside DEST')
    .argument('<image>', 'EROFS image file')
    .argument('<dest>', 'host directory to extract into')
    .argument('[path]', 'subtree inside the image', '/')
    .option('--json', 'print one JSON document on stdout, on failure too')
    .option('-q, --quiet', 'print nothing but errors and warnings (no progress)')
    .action(async (image: string, dest: string, path: string, opts: { json?: boolean }) => {
      await runCommand(opts, () => withReader(image, async (r) => ({ dest, ...(await extractErofs(r, dest, path)) })), (r) =>
        `${r.dest}: ${r.files} files, ${r.dirs} directories, ${r.symlinks} symlinks, ${r.hardlinks} hard links, ${formatSize(r.bytes)}` +
        (r.skipped.length > 0 ? `\nskipped ${r.skipped.length} (special files; see --json)` : ''));
    });
}
