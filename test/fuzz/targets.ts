/**
 * Fuzz targets, one per parser: seeds (livestick's writers, plus mksquashfs / mke2fs / cryptsetup when
 * installed) with their fields and metadata regions, and the full read path a case runs.
 *
 * Tool-made seeds carry random salts and UUIDs, so they are cached under $TMPDIR/livestick-fuzz-seeds
 * (keyed by the command): a replay on the same machine sees the same bytes.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Disk } from '../../src/io/disk.ts';
import { MemoryDisk } from '../../src/io/disk.ts';
import { Ext4, ROOT_INO } from '../../src/fs/ext4/fs.ts';
import { buildBlockMap } from '../../src/fs/ext4/blockmap.ts';
import { kindOfMode } from '../../src/fs/ext4/inode.ts';
import { mkfs } from '../../src/fs/ext4/mkfs.ts';
import { Ext4Writer } from '../../src/fs/ext4/writer.ts';
import { copyIn } from '../../src/fs/ext4/copyin.ts';
import { SquashfsReader } from '../../src/fs/squashfs/reader.ts';
import { ErofsReader } from '../../src/fs/erofs/reader.ts';
import { writeErofs, type ErofsWriteOptions } from '../../src/fs/erofs/writer.ts';
import { writeSquashfs } from '../../src/fs/squashfs/writer.ts';
import { dirNode, fileNode } from '../../src/fs/squashfs/tree.ts';
import { LuksVolume } from '../../src/xform/luks/volume.ts';
import { readLuks2Pair, writeLuks2Pair, fieldsOf } from '../../src/xform/luks/luks2-header.ts';
import { cloneJson, type Json, type JsonObject } from '../../src/xform/luks/luks2-metadata.ts';
import type { KdfLimits } from '../../src/xform/luks/kdf.ts';
import { ExceptionStore } from '../../src/xform/dmsnap/store.ts';
import { SnapshotDisk } from '../../src/xform/dmsnap/snapshot-disk.ts';
import { sameBase } from '../../src/xform/dmsnap/binding.ts';
import { bindingFor, describeStore } from '../../src/ops/overlay.ts';
import { type Budget, FuzzCapError, type Target } from './harness.ts';
import { type Field, type Mutation, type Rng, type Seed, int, pick } from './mutate.ts';
import { LUKS1_FIELDS, PASSPHRASE, makeLuks1, writeSourceTree } from './seeds.ts';
import { seededRandom } from '../luks/helpers.ts';

const MAX_ENTRIES = 20_000;
const PIECE = 1 << 20;
const MAX_STREAM = 64 << 20;

function checkDeadline(budget: Budget): void {
  if (Date.now() > budget.deadline) throw new FuzzCapError('case past its deadline (in-memory loop?)');
}

function has(tool: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' }).status === 0;
}

/** Runs `make(dir, out)` once per distinct key and caches the image it writes. */
function cachedToolImage(key: string, make: (dir: string, out: string) => void): Uint8Array | undefined {
  const cacheDir = join(tmpdir(), 'livestick-fuzz-seeds');
  mkdirSync(cacheDir, { recursive: true });
  const file = join(cacheDir, `${createHash('sha256').update(key).digest('hex').slice(0, 20)}.img`);
  if (!existsSync(file)) {
    const work = join(cacheDir, `work-${process.pid}-${Math.random().toString(36).slice(2)}`);
    mkdirSync(work, { recursive: true });
    try {
      const out = join(work, 'out.img');
      make(work, out);
      writeFileSync(`${file}.tmp`, readFileSync(out));
      spawnSync('mv', [`${file}.tmp`, file]);
    } catch {
      return undefined;
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  }
  return new Uint8Array(readFileSync(file));
}

function sh(cmd: string, args: string[], env: Record<string, string> = {}): void {
  const r = spawnSync(cmd, args, { encoding: 'utf8', env: { ...process.env, ...env }, input: '' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr}`);
}

function sourceTree(dir: string): string {
  const src = join(dir, 'src');
  mkdirSync(src);
  writeSourceTree(src);
  spawnSync('setfattr', ['-n', 'user.fuzz', '-v', 'xattr value', join(src, 'a/text')]);
  spawnSync('setfattr', ['-n', 'user.big', '-v', `0x${'cd'.repeat(700)}`, join(src, 'a/b')]);
  return src;
}

const mergeRanges = (ranges: [number, number][]): [number, number][] => {
  ranges.sort((a, b) => a[0] - b[0]);
  const out: [number, number][] = [];
  for (const r of ranges) {
    const last = out[out.length - 1];
    if (last && r[0] <= last[1]) last[1] = Math.max(last[1], r[1]);
    else out.push([r[0], r[1]]);
  }
  return out;
};

// ---- squashfs ---------------------------------------------------------------------------------

const SQUASHFS_SB_FIELDS: Field[] = [
  ['s_magic', 0, 4], ['inodes', 4, 4], ['block_size', 12, 4], ['fragments', 16, 4], ['compression', 20, 2], ['block_log', 22, 2],
  ['flags', 24, 2], ['id_count', 26, 2], ['version_major', 28, 2], ['root_inode', 32, 8], ['bytes_used', 40, 8], ['id_table_start', 48, 8],
  ['xattr_id_table_start', 56, 8], ['inode_table_start', 64, 8], ['directory_table_start', 72, 8], ['fragment_table_start', 80, 8], ['export_table_start', 88, 8],
].map(([name, offset, width]) => ({ name: `superblock.${name}`, offset: offset as number, width: width as 2 | 4 | 8 }));

function squashfsSeed(name: string, bytes: Uint8Array): Seed {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const u64 = (at: number) => Number(dv.getBigUint64(at, true));
  const bytesUsed = u64(40);
  const fields = [...SQUASHFS_SB_FIELDS];
  // The first index entries of each lookup table (pointers to its metadata blocks).
  for (const [table, at] of [['id', 48], ['xattr_id', 56], ['fragment', 80], ['export', 88]] as const) {
    const start = u64(at);
    if (start > 0 && start + 8 <= bytesUsed) {
      fields.push({ name: `${table} table[0]`, offset: start, width: 8 });
      if (table === 'xattr_id') fields.push({ name: 'xattr ids.count', offset: start + 8, width: 4 }, { name: 'xattr ids.table_start', offset: start, width: 8 });
    }
  }
  return { name, bytes, fields, hot: [[0, 96], [u64(64), bytesUsed]] };
}

async function squashfsBytes(tree: Parameters<typeof writeSquashfs>[0], options: Parameters<typeof writeSquashfs>[2]): Promise<Uint8Array> {
  const dir = join(tmpdir(), `lsk-fuzz-sq-${process.pid}-${Math.random().toString(36).slice(2)}`);
  mkdirSync(dir, { recursive: true });
  try {
    const out = join(dir, 'out.sqfs');
    await writeSquashfs(tree, out, { threads: 0, mtime: 1_700_000_000, ...options });
    return new Uint8Array(readFileSync(out));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function squashfsTree() {
  const rnd = seededRandom('squashfs tree');
  const many: Record<string, ReturnType<typeof fileNode>> = {};
  for (let i = 0; i < 80; i++) many[`entry-with-a-long-name-${i}`] = fileNode(rnd(i * 53));
  return dirNode({}, {
    a: dirNode({ xattrs: [{ name: 'user.dir', value: new TextEncoder().encode('d') }] }, {
      text: fileNode('hello fuzz\n'.repeat(40), { xattrs: [{ name: 'user.fuzz', value: new TextEncoder().encode('x'.repeat(300)) }] }),
      big: fileNode(rnd(300_000)),
      empty: fileNode(''),
      b: dirNode({}, { c: dirNode({}, { deep: fileNode(rnd(9000)) }) }),
    }),
    many: dirNode({}, many),
    zeros: fileNode(new Uint8Array(150_000)),
    link: { type: 'symlink', mode: 0o777, uid: 0, gid: 0, mtime: 0, target: 'a/big' },
    dev: { type: 'chardev', mode: 0o600, uid: 5, gid: 6, mtime: 0, major: 1, minor: 3 },
    fifo: { type: 'fifo', mode: 0o600, uid: 100000, gid: 7, mtime: 0 },
  });
}

export const squashfsTarget: Target = {
  name: 'squashfs',
  async seeds() {
    const seeds = [
      squashfsSeed('livestick gzip 128K, uncompressed metadata', await squashfsBytes(squashfsTree(), { compressor: 'gzip', uncompressedMetadata: true, exportable: true })),
      squashfsSeed('livestick zstd 4K', await squashfsBytes(squashfsTree(), { compressor: 'zstd', blockSize: 4096 })),
      // Uncompressed inode and directory tables let byte mutations reach the inode and listing decoders.
      squashfsSeed('livestick zstd 4K, uncompressed metadata, no fragments', await squashfsBytes(squashfsTree(), { compressor: 'zstd', blockSize: 4096, uncompressedMetadata: true, noFragments: true })),
      squashfsSeed('livestick lz4 8K, exportable', await squashfsBytes(squashfsTree(), { compressor: 'lz4', blockSize: 8192, exportable: true })),
    ];
    if (has('mksquashfs')) {
      for (const args of [['-comp', 'gzip', '-b', '4096', '-noI', '-noD'], ['-comp', 'xz', '-b', '16384', '-noI', '-noD', '-noF', '-noX'], ['-comp', 'xz', '-b', '16384'], ['-comp', 'zstd', '-b', '8192', '-no-xattrs']]) {
        const img = cachedToolImage(`mksquashfs ${args.join(' ')}`, (dir, out) => sh('mksquashfs', [sourceTree(dir), out, '-noappend', '-quiet', '-no-progress', '-all-time', '1700000000', '-mkfs-time', '1700000000', ...args]));
        if (img) seeds.push(squashfsSeed(`mksquashfs ${args.join(' ')}`, img));
      }
    }
    return seeds;
  },
  async exercise(disk, _seed, budget) {
    const reader = await SquashfsReader.open(disk, { cacheBytes: 4 << 20 });
    let n = 0;
    let firstFile: Parameters<SquashfsReader['openFileDisk']>[0] | undefined;
    for await (const e of reader.walk()) {
      if (++n > MAX_ENTRIES) break;
      checkDeadline(budget);
      reader.uid(e.inode);
      reader.gid(e.inode);
      SquashfsReader.modeOf(e.inode);
      await reader.xattrs(e.inode);
      if (e.inode.kind === 'file') {
        firstFile ??= e.inode;
        const pieces = reader.pieceCount(e.inode);
        for (let i = 0; i < pieces; i++) {
          await reader.piece(e.inode, i);
          if ((i & 15) === 15) checkDeadline(budget);
        }
      }
    }
    if (firstFile) {
      const fd = await reader.openFileDisk(firstFile);
      if (fd.size > 0) await fd.read(new Uint8Array(Math.min(fd.size, 4096)), Math.max(0, fd.size - 4096));
    }
  },
};

// ---- ext4 -------------------------------------------------------------------------------------

const EXT4_SB_FIELDS: [string, number, 1 | 2 | 4][] = [
  ['s_inodes_count', 0, 4], ['s_blocks_count_lo', 4, 4], ['s_first_data_block', 20, 4], ['s_log_block_size', 24, 4], ['s_log_cluster_size', 28, 4],
  ['s_blocks_per_group', 32, 4], ['s_clusters_per_group', 36, 4], ['s_inodes_per_group', 40, 4], ['s_magic', 56, 2], ['s_state', 58, 2], ['s_rev_level', 76, 4],
  ['s_first_ino', 84, 4], ['s_inode_size', 88, 2], ['s_feature_compat', 92, 4], ['s_feature_incompat', 96, 4], ['s_feature_ro_compat', 100, 4],
  ['s_reserved_gdt_blocks', 206, 2], ['s_journal_inum', 224, 4], ['s_desc_size', 254, 2], ['s_first_meta_bg', 260, 4], ['s_min_extra_isize', 348, 2],
  ['s_log_groups_per_flex', 372, 1], ['s_blocks_count_hi', 336, 4], ['s_backup_bgs[0]', 588, 4], ['s_checksum_type', 375, 1],
];
const EXT4_GD_FIELDS: [string, number, 2 | 4][] = [['bg_block_bitmap', 0, 4], ['bg_inode_bitmap', 4, 4], ['bg_inode_table', 8, 4], ['bg_free_blocks', 12, 2], ['bg_flags', 18, 2], ['bg_itable_unused', 28, 2]];
const EXT4_INODE_FIELDS: [string, number, 1 | 2 | 4][] = [
  ['i_mode', 0, 2], ['i_size_lo', 4, 4], ['i_links_count', 26, 2], ['i_blocks_lo', 28, 4], ['i_flags', 32, 4], ['eh_entries', 42, 2], ['eh_max', 44, 2],
  ['eh_depth', 46, 2], ['i_block[3] (first extent logical / ind)', 52, 4], ['ee_len', 56, 2], ['ee_start_hi', 58, 2], ['ee_start_lo', 60, 4],
  ['i_block[12] (indirect)', 88, 4], ['i_block[13] (double)', 92, 4], ['i_block[14] (triple)', 96, 4], ['i_file_acl_lo', 104, 4], ['i_size_high', 108, 4],
  ['i_blocks_hi', 116, 2], ['i_file_acl_hi', 118, 2], ['i_extra_isize', 128, 2], ['first in-inode xattr magic', 160, 4], ['first in-inode xattr entry', 164, 4],
];

async function ext4Seed(name: string, bytes: Uint8Array): Promise<Seed> {
  const fs = await Ext4.open(new MemoryDisk(bytes, { readOnly: true }));
  const bs = fs.blockSize;
  const fields: Field[] = EXT4_SB_FIELDS.map(([n, o, w]) => ({ name: `superblock.${n}`, offset: 1024 + o, width: w }));
  const gdAt = (fs.sb.firstDataBlock + 1) * bs;
  for (const g of [0, fs.groupCount - 1]) fields.push(...EXT4_GD_FIELDS.map(([n, o, w]) => ({ name: `group[${g}].${n}`, offset: gdAt + g * fs.sb.descSize + o, width: w })));
  const map = await buildBlockMap(fs);
  const inodes = new Set<number>([ROOT_INO]);
  for (const o of map.owner) if (o > 0 && inodes.size < 40) inodes.add(o);
  for (const ino of inodes) {
    const at = fs.inodeLocation(ino);
    fields.push(...EXT4_INODE_FIELDS.filter(([, o]) => o + 4 <= fs.sb.inodeSize).map(([n, o, w]) => ({ name: `inode[${ino}].${n}`, offset: at + o, width: w })));
  }
  const hot: [number, number][] = [[1024, 2048], [gdAt, gdAt + bs]];
  for (let b = 0; b < map.blocksCount; b++) {
    const k = map.kindOf(b);
    if (k !== 'data' && k !== 'free' && k !== 'journal' && k !== 'unowned') hot.push([b * bs, (b + 1) * bs]);
  }
  // Directory data blocks (entries, htree nodes) count as metadata too.
  const dirs = [ROOT_INO];
  for (let i = 0; i < dirs.length && i < 50; i++) {
    const inode = await fs.readInode(dirs[i]!);
    for (const r of await fs.runs(inode)) hot.push([r.physical * bs, (r.physical + r.length) * bs]);
    for (const e of await fs.readDirInode(inode)) if (e.fileType === 2) dirs.push(e.ino);
  }
  return { name, bytes, fields, hot: mergeRanges(hot) };
}

async function livestickExt4(): Promise<Uint8Array> {
  const disk = new MemoryDisk(new Uint8Array(8 << 20));
  await mkfs(disk, { label: 'fuzz', uuid: new Uint8Array(16).fill(3), hashSeed: new Uint8Array(16).fill(4), time: 1_700_000_000, journalBlocks: 256, zeroed: true });
  const w = await Ext4Writer.open(await Ext4.open(disk), { now: () => ({ sec: 1_700_000_000, nsec: 0 }) });
  const rnd = seededRandom('ext4 tree');
  await w.mkdir('/a');
  await w.mkdir('/a/b');
  await w.writeFile('/a/b/big', rnd(300_000));
  await w.writeFile('/a/text', new TextEncoder().encode('hello fuzz\n'.repeat(40)));
  await w.mkdir('/many');
  for (let i = 0; i < 150; i++) await w.writeFile(`/many/entry-with-a-long-name-${i}`, rnd(i * 11));
  await w.symlink('/link', 'a/b/big');
  await w.symlink('/longlink', 'y'.repeat(200));
  await w.mknod('/dev', 'chardev', { major: 4, minor: 5 });
  await w.close();
  const out = new Uint8Array(disk.size);
  await disk.read(out, 0);
  return out;
}

export async function walkExt4(fs: Ext4, budget: Budget): Promise<void> {
  await fs.state();
  const seen = new Set<number>([ROOT_INO]);
  const queue = [ROOT_INO];
  let n = 0;
  while (queue.length > 0 && n < MAX_ENTRIES) {
    const dir = await fs.readInode(queue.shift()!);
    for (const e of await fs.readDirInode(dir, { includeDots: true })) {
      if (++n > MAX_ENTRIES) break;
      checkDeadline(budget);
      const inode = await fs.readInode(e.ino);
      await fs.xattrs(inode);
      const kind = kindOfMode(inode.mode);
      if (kind === 'dir') {
        if (!seen.has(e.ino)) {
          seen.add(e.ino);
          queue.push(e.ino);
        }
      } else if (kind === 'file' || kind === 'symlink') {
        // A sparse file may legitimately be terabytes of holes (up to the maximum file size): read its
        // first MAX_STREAM bytes, which covers every seed file and the extents a mutation points at.
        let k = 0;
        for await (const _ of fs.streamInode(inode, PIECE, { reuse: true })) {
          if (++k * PIECE >= MAX_STREAM) break;
          if ((k & 15) === 0) checkDeadline(budget);
        }
      }
    }
  }
  const map = await buildBlockMap(fs);
  await map.paths([...new Set(map.owner)].slice(0, 64));
}

export const ext4Target: Target = {
  name: 'ext4',
  async seeds() {
    const seeds = [await ext4Seed('livestick mkfs + writer (4K, metadata_csum)', await livestickExt4())];
    if (has('mke2fs')) {
      const env = { E2FSPROGS_FAKE_TIME: '1700000000' };
      for (const [label, args] of [
        ['ext4 1K csum, htree', ['-t', 'ext4', '-b', '1024']],
        ['ext3 4K indirect, htree', ['-t', 'ext3', '-b', '4096']],
        ['ext4 4K inline_data, 64bit', ['-t', 'ext4', '-b', '4096', '-O', 'inline_data,64bit']],
        ['ext2 1K no features', ['-t', 'ext2', '-b', '1024', '-O', '^dir_index']],
      ] as const) {
        const img = cachedToolImage(`mke2fs ${args.join(' ')} v3`, (dir, out) => {
          sh('mke2fs', ['-q', '-F', '-U', '5b1f8a1e-1111-4222-8333-944455566677', '-E', 'hash_seed=6b1f8a1e-1111-4222-8333-944455566677,lazy_itable_init=1', ...args, '-d', sourceTree(dir), out, '3M'], env);
          if (has('debugfs')) sh('debugfs', ['-w', '-R', 'ea_set /a/text user.second 0123456789abcdef', out], env);
          if (has('e2fsck')) spawnSync('e2fsck', ['-fyD', out], { env: { ...process.env, ...env }, stdio: 'ignore' }); // -D builds htree indexes
        });
        if (img) seeds.push(await ext4Seed(`mke2fs ${label}`, img));
      }
    }
    return seeds;
  },
  async exercise(disk, _seed, budget) {
    await walkExt4(await Ext4.open(disk), budget);
  },
};

// ---- LUKS -------------------------------------------------------------------------------------

/** Cheap limits for fuzzing: a mutated cost beyond them is refused (typed) instead of computed. */
export const FUZZ_KDF_LIMITS: KdfLimits = {
  maxArgon2MemoryKiB: 64 * 1024,
  maxArgon2Work: 4 * 64 * 1024,
  maxArgon2Cpus: 4,
  maxPbkdf2Iterations: 200_000,
  maxKeyslotSeconds: 0.2,
  maxDigestSeconds: 0.2,
};

async function exerciseLuks(disk: Disk, then?: (payload: Disk, budget: Budget) => Promise<void>, budget?: Budget): Promise<void> {
  if ((await LuksVolume.probe(disk)) === undefined) return;
  const vol = await LuksVolume.open(disk, { limits: FUZZ_KDF_LIMITS });
  vol.info();
  void vol.warnings;
  const payload = await vol.openPayload(PASSPHRASE, { readOnly: true });
  try {
    if (payload.size > 0) {
      const n = Math.min(payload.size, 8192);
      await payload.read(new Uint8Array(n), 0);
      await payload.read(new Uint8Array(n), payload.size - n);
    }
    if (then && budget) await then(payload, budget);
  } finally {
    await payload.close();
  }
}

export const luks1Target: Target = {
  name: 'luks1',
  async seeds() {
    const seeds: Seed[] = [];
    const v1 = makeLuks1();
    seeds.push({ name: 'livestick-built LUKS1 sha256 xts-256', bytes: v1, fields: LUKS1_FIELDS, hot: [[0, 592], [4096, 4096 + 8 * 512]] });
    const v1b = makeLuks1({ keyBytes: 64, hash: 'sha1' });
    seeds.push({ name: 'livestick-built LUKS1 sha1 xts-512', bytes: v1b, fields: LUKS1_FIELDS, hot: [[0, 592]] });
    if (has('cryptsetup')) {
      for (const args of [['--cipher', 'aes-xts-plain64', '--key-size', '256', '--hash', 'sha256'], ['--cipher', 'aes-cbc-essiv:sha256', '--key-size', '256', '--hash', 'sha1']]) {
        const img = cachedToolImage(`cryptsetup luks1 ${args.join(' ')}`, (dir, out) => {
          writeFileSync(out, new Uint8Array(3 << 20));
          writeFileSync(join(dir, 'key'), PASSPHRASE);
          sh('cryptsetup', ['luksFormat', '--batch-mode', '--type', 'luks1', '--pbkdf-force-iterations', '1000', '--key-file', join(dir, 'key'), ...args, out]);
        });
        if (img) seeds.push({ name: `cryptsetup luks1 ${args[1]}`, bytes: img, fields: LUKS1_FIELDS, hot: [[0, 592]] });
      }
    }
    return seeds;
  },
  exercise: (disk) => exerciseLuks(disk),
};

/** A LUKS2 seed whose extra mutations are JSON edits written back with valid checksums (both copies, or the primary only). */
async function luks2Seed(name: string, bytes: Uint8Array): Promise<Seed> {
  const disk = new MemoryDisk(bytes.slice(), { readOnly: true });
  const pair = await readLuks2Pair(disk);
  const active = pair.active;
  const hdrSize = Number(active.binary.hdrSize);
  const json = active.metadata.json;
  const fields: Field[] = [
    { name: 'bin.version', offset: 6, width: 2, bigEndian: true },
    { name: 'bin.hdr_size', offset: 8, width: 8, bigEndian: true },
    { name: 'bin.seqid', offset: 16, width: 8, bigEndian: true },
    { name: 'bin.hdr_offset', offset: 256, width: 8, bigEndian: true },
    { name: 'secondary bin.hdr_size', offset: hdrSize + 8, width: 8, bigEndian: true },
    { name: 'secondary bin.hdr_offset', offset: hdrSize + 256, width: 8, bigEndian: true },
  ];
  // Precompute a pool of JSON mutants (writeLuks2Pair is async; mutations are synchronous).
  const pool: { what: string; bytes: Uint8Array }[] = [];
  const rng = ((seed) => () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32))(name.length * 7919);
  const leaves: (string | number)[][] = [];
  const walk = (v: Json, path: (string | number)[]) => {
    if (path.length > 0) leaves.push(path);
    if (Array.isArray(v)) v.forEach((x, i) => walk(x, [...path, i]));
    else if (v !== null && typeof v === 'object') for (const k of Object.keys(v)) walk(v[k]!, [...path, k]);
  };
  walk(json, []);
  const values: Json[] = [0, -1, 1, 2 ** 53, 2 ** 64, 0.5, '0', '-1', '18446744073709551615', '9007199254740993', '4294967296', 'dynamic', '', 'x'.repeat(2000), null, true, [], {}, ['0'], { '0': {} }, 'sha256', 'pbkdf2', 'argon2id', 'aes-xts-plain64', '512', '4096', 'raw', 'luks2', 'crypt', '1048576', '16777216'];
  for (const path of leaves) {
    for (let k = 0; k < 4; k++) {
      const copy = cloneJson(json);
      let parent: Json = copy;
      for (const p of path.slice(0, -1)) parent = (parent as Record<string | number, Json>)[p]!;
      const last = path[path.length - 1]!;
      let what: string;
      if (k === 0 && !Array.isArray(parent)) {
        delete (parent as JsonObject)[last as string];
        what = `json delete ${path.join('.')}`;
      } else {
        const v = k === 3 ? String(Math.floor(rng() * 2 ** 31) * (1 + Math.floor(rng() * 4096))) : values[Math.floor(rng() * values.length)]!;
        (parent as Record<string | number, Json>)[last] = v;
        what = `json ${path.join('.')} = ${JSON.stringify(v).slice(0, 40)}`;
      }
      const out = new MemoryDisk(new Uint8Array(2 * hdrSize));
      try {
        await writeLuks2Pair(out, { ...fieldsOf(active.binary), seqid: active.binary.seqid + 1n }, copy, seededRandom(what));
      } catch {
        continue;
      }
      const b = new Uint8Array(out.size);
      await out.read(b, 0);
      pool.push({ what, bytes: b });
    }
  }
  const extra = (r: Rng): Mutation => {
    const m = pick(r, pool);
    const primaryOnly = r() < 0.3;
    return { patches: [{ offset: 0, bytes: primaryOnly ? m.bytes.subarray(0, hdrSize) : m.bytes }], what: `${m.what}${primaryOnly ? ' (primary copy only)' : ''}` };
  };
  return { name, bytes, fields, hot: [[0, 2 * hdrSize]], extra };
}

export const luks2Target: Target = {
  name: 'luks2',
  async seeds() {
    const seeds: Seed[] = [];
    const fast = { kdf: { type: 'pbkdf2', iterations: 1000 }, digestIterations: 1000, dataOffset: 1 << 20, random: seededRandom('luks2 seed') } as const;
    for (const [name, options] of [
      ['livestick LUKS2 pbkdf2', fast],
      ['livestick LUKS2 argon2id 1 MiB, 512-byte sectors, 32-byte key', { ...fast, kdf: { type: 'argon2id', time: 1, memory: 1024, cpus: 1 }, sectorSize: 512, keySize: 32 }],
    ] as const) {
      const disk = new MemoryDisk(new Uint8Array((1 << 20) + (256 << 10)));
      const vol = await LuksVolume.format(disk, PASSPHRASE, options);
      if (name.includes('pbkdf2')) await vol.addKeyslot(PASSPHRASE, new TextEncoder().encode('second'), { kdf: { type: 'pbkdf2', iterations: 1000 } });
      const bytes = new Uint8Array(disk.size);
      await disk.read(bytes, 0);
      seeds.push(await luks2Seed(name, bytes));
    }
    if (has('cryptsetup')) {
      for (const args of [['--pbkdf', 'pbkdf2', '--pbkdf-force-iterations', '1000'], ['--pbkdf', 'argon2id', '--pbkdf-force-iterations', '4', '--pbkdf-memory', '1024', '--pbkdf-parallel', '1', '--sector-size', '512']]) {
        const img = cachedToolImage(`cryptsetup luks2 ${args.join(' ')}`, (dir, out) => {
          writeFileSync(out, new Uint8Array(17 << 20));
          writeFileSync(join(dir, 'key'), PASSPHRASE);
          sh('cryptsetup', ['luksFormat', '--batch-mode', '--type', 'luks2', '--key-file', join(dir, 'key'), ...args, out]);
          sh('truncate', ['-s', String((16 << 20) + (128 << 10)), out]); // keep the seed small: 128 KiB of payload
        });
        if (img) seeds.push(await luks2Seed(`cryptsetup luks2 ${args[1]}`, img));
      }
    }
    return seeds;
  },
  exercise: (disk) => exerciseLuks(disk),
};

/** The home image open path: LUKS2 → CryptDisk → ext4, walked as `home ls`/`home cat` would. */
export const homeTarget: Target = {
  name: 'home',
  async seeds() {
    const size = (1 << 20) + (8 << 20);
    const disk = new MemoryDisk(new Uint8Array(size));
    const vol = await LuksVolume.format(disk, PASSPHRASE, { kdf: { type: 'pbkdf2', iterations: 1000 }, digestIterations: 1000, dataOffset: 1 << 20, random: seededRandom('home seed'), label: 'home' });
    const payload = await vol.openPayload(PASSPHRASE);
    await mkfs(payload, { label: 'home', uuid: new Uint8Array(16).fill(8), hashSeed: new Uint8Array(16).fill(9), time: 1_700_000_000, journalBlocks: 0 });
    const dir = join(tmpdir(), `lsk-fuzz-home-${process.pid}-${Math.random().toString(36).slice(2)}`);
    mkdirSync(join(dir, 'docs/deeper'), { recursive: true });
    try {
      const rnd = seededRandom('home tree');
      writeFileSync(join(dir, 'docs/deeper/notes.txt'), 'notes\n'.repeat(300));
      writeFileSync(join(dir, 'docs/photo.jpg'), rnd(40_000));
      for (let i = 0; i < 60; i++) writeFileSync(join(dir, `docs/file-with-a-longer-name-${i}`), rnd(i * 13));
      symlinkSync('docs/photo.jpg', join(dir, 'link'));
      const w = await Ext4Writer.open(await Ext4.open(payload), { now: () => ({ sec: 1_700_000_000, nsec: 0 }) });
      await copyIn(w, dir, '/user');
      await w.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    await payload.close();
    const bytes = new Uint8Array(size);
    await disk.read(bytes, 0);
    const base = await luks2Seed('livestick encrypted home (LUKS2 pbkdf2 + ext4)', bytes);
    // Payload ext4 metadata sits in the first blocks of the payload: flips there garble whole 4 KiB sectors.
    return [{ ...base, hot: [...base.hot, [1 << 20, (1 << 20) + (64 << 10)]] }];
  },
  async exercise(disk, _seed, budget) {
    await exerciseLuks(disk, async (payload, b) => walkExt4(await Ext4.open(payload), b), budget);
  },
};

// ---- dm-snapshot overlay ----------------------------------------------------------------------

interface OverlaySeed extends Seed {
  readonly base: Uint8Array;
}

async function overlaySeed(name: string, chunkSectors: number, writes: number, bound: boolean): Promise<OverlaySeed> {
  const rnd = seededRandom(`overlay ${name}`);
  const base = rnd(1 << 20);
  const baseDisk = new MemoryDisk(base.slice(), { readOnly: true });
  const overlay = new MemoryDisk(new Uint8Array(1 << 20));
  const store = await ExceptionStore.format(overlay, chunkSectors, bound ? await bindingFor(baseDisk, 'rootfs.img') : undefined);
  const dev = new SnapshotDisk(baseDisk, store);
  const r = seededRandom(`writes ${name}`);
  for (let i = 0; i < writes; i++) {
    const at = (r(4)[0]! | (r(4)[1]! << 8) | (r(4)[2]! << 16)) % (base.byteLength - 6000);
    await dev.write(r(1 + (r(1)[0]! << 4)), at);
  }
  await dev.flush();
  const bytes = new Uint8Array(overlay.size);
  await overlay.read(bytes, 0);
  const cb = chunkSectors * 512;
  const fields: Field[] = [
    { name: 'header.magic', offset: 0, width: 4 },
    { name: 'header.valid', offset: 4, width: 4 },
    { name: 'header.version', offset: 8, width: 4 },
    { name: 'header.chunk_size', offset: 12, width: 4 },
    { name: 'binding.version', offset: 256, width: 2 },
    { name: 'binding.length', offset: 258, width: 2 },
    { name: 'binding.base_size', offset: 264, width: 8 },
  ];
  for (let i = 0; i < 12; i++) {
    fields.push({ name: `area[0].exception[${i}].old_chunk`, offset: cb + 16 * i, width: 8 }, { name: `area[0].exception[${i}].new_chunk`, offset: cb + 16 * i + 8, width: 8 });
  }
  const perArea = cb / 16;
  const secondArea = (perArea + 1) * cb + cb;
  if (secondArea + 32 <= bytes.byteLength) fields.push({ name: 'area[1].exception[0].new_chunk', offset: secondArea + 8, width: 8 }, { name: 'area[1].exception[0].old_chunk', offset: secondArea, width: 8 });
  const hot: [number, number][] = [[0, 512], [cb, 2 * cb]];
  if (secondArea < bytes.byteLength) hot.push([secondArea, secondArea + cb]);
  return { name, bytes, fields, hot, base };
}

export const dmsnapTarget: Target = {
  name: 'dmsnap',
  async seeds() {
    return [
      await overlaySeed('4K chunks, bound, two metadata areas', 8, 300, true),
      await overlaySeed('16K chunks, unbound', 32, 40, false),
      { ...(await overlaySeed('all-zero new overlay', 8, 0, false)), bytes: new Uint8Array(256 << 10), fields: [{ name: 'header.magic', offset: 0, width: 4 }, { name: 'header.chunk_size', offset: 12, width: 4 }] },
    ];
  },
  async exercise(disk, seed, budget) {
    const base = new MemoryDisk((seed as OverlaySeed).base, { readOnly: true });
    const store = await ExceptionStore.open(disk, { chunkSectorsIfNew: 8 });
    describeStore('overlay', store);
    store.status();
    store.freeChunks();
    let n = 0;
    for (const e of store.exceptions()) if (++n % 4096 === 0) checkDeadline(budget);
    if (store.binding.state === 'bound') sameBase(store.binding.binding, await bindingFor(base, 'rootfs.img'));
    if (!store.valid) return;
    const dev = new SnapshotDisk(base, store, { readOnly: true });
    const buf = new Uint8Array(64 << 10);
    for (let at = 0; at < dev.size; at += buf.byteLength) {
      await dev.read(buf.subarray(0, Math.min(buf.byteLength, dev.size - at)), at);
      checkDeadline(budget);
    }
  },
};

// ---- erofs ------------------------------------------------------------------------------------

const EROFS_SB_FIELDS: [string, number, 1 | 2 | 4 | 8][] = [
  ['magic', 0, 4], ['checksum', 4, 4], ['feature_compat', 8, 4], ['blkszbits', 12, 1], ['sb_extslots', 13, 1], ['root_nid', 14, 2],
  ['inos', 16, 8], ['epoch', 24, 8], ['fixed_nsec', 32, 4], ['blocks', 36, 4], ['meta_blkaddr', 40, 4], ['xattr_blkaddr', 44, 4],
  ['feature_incompat', 80, 4], ['available_compr_algs', 84, 2], ['extra_devices', 86, 2], ['dirblkbits', 90, 1], ['xattr_prefix_count', 91, 1],
  ['xattr_prefix_start', 92, 4], ['packed_nid', 96, 8],
];
const EROFS_INODE_FIELDS: [string, number, 1 | 2 | 4][] = [['i_format', 0, 2], ['i_xattr_icount', 2, 2], ['i_mode', 4, 2], ['i_nb', 6, 2], ['i_size', 8, 4], ['i_u', 16, 4]];
const TRIXIE = fileURLToPath(new URL('../../.cache/trixie', import.meta.url));

/** Fields of the superblock and of the first inodes; hot ranges: block 0, every inode with what follows it, directory blocks. */
async function erofsSeed(name: string, bytes: Uint8Array): Promise<Seed> {
  const fields: Field[] = EROFS_SB_FIELDS.map(([n, o, w]) => ({ name: `superblock.${n}`, offset: 1024 + o, width: w === 1 ? 1 : w }) as Field);
  const hot: [number, number][] = [[0, 4096]];
  const reader = await ErofsReader.open(new MemoryDisk(bytes, { readOnly: true }));
  let n = 0;
  for await (const e of reader.walk()) {
    const i = e.inode;
    hot.push([i.pos, Math.min(bytes.byteLength, i.bodyPos + 256)]);
    if (n++ < 12) fields.push(...EROFS_INODE_FIELDS.map(([f, o, w]) => ({ name: `inode[${i.nid}].${f}`, offset: i.pos + o, width: w }) as Field));
    if (i.kind === 'dir' && i.startBlock !== undefined) hot.push([i.startBlock * reader.blockSize, Math.min(bytes.byteLength, i.startBlock * reader.blockSize + i.size)]);
  }
  return { name, bytes, fields, hot: mergeRanges(hot) };
}

function erofsSource(dir: string): string {
  const src = sourceTree(dir);
  writeFileSync(join(src, 'words'), 'alpha beta gamma delta '.repeat(20000));
  spawnSync('setfattr', ['-n', 'trusted.overlay.opaque', '-v', 'y', join(src, 'a')]);
  spawnSync('setfattr', ['-n', 'user.shared', '-v', 'same', join(src, 'a/text')]);
  spawnSync('setfattr', ['-n', 'user.shared', '-v', 'same', join(src, 'zeros')]);
  return src;
}

export const erofsTarget: Target = {
  name: 'erofs',
  async seeds() {
    const seeds: Seed[] = [];
    if (has('mkfs.erofs')) {
      // Without the superblock checksum (-Enosbcrc), mutations of block 0 (where small images keep inodes and directories) reach the decoders.
      for (const args of [[], ['-Enosbcrc'], ['-zlz4hc', '-Enosbcrc'], ['-zlz4', '-Eztailpacking,nosbcrc', '-C16384'], ['--chunksize=4096', '-Enosbcrc'], ['-zlz4hc', '-Elegacy-compress,nosbcrc']]) {
        const img = cachedToolImage(`mkfs.erofs 1.5 ${args.join(' ')}`, (dir, out) => sh('mkfs.erofs', ['--quiet', '-T1700000000', ...args, out, erofsSource(dir)]));
        if (img) seeds.push(await erofsSeed(`mkfs.erofs ${args.join(' ')}`, img));
      }
    }
    if (existsSync(join(TRIXIE, 'usr/bin/mkfs.erofs'))) {
      for (const args of [['-zlzma', '-Efragments,nosbcrc', '-C65536'], ['-zdeflate', '-Eall-fragments,dedupe,nosbcrc'], ['-zzstd', '-Enosbcrc', '--xattr-prefix=trusted.overlay.']]) {
        const img = cachedToolImage(`mkfs.erofs 1.8.6 ${args.join(' ')}`, (_dir, out) => {
          const work = join(TRIXIE, 'tmp', `lsk-fuzz-erofs-${process.pid}-${Math.random().toString(36).slice(2)}`);
          mkdirSync(work, { recursive: true });
          try {
            erofsSource(work);
            const inside = `/tmp/${work.slice(join(TRIXIE, 'tmp').length + 1)}`;
            sh('chroot', [TRIXIE, 'mkfs.erofs', '--quiet', '-T1700000000', ...args, `${inside}/out.img`, `${inside}/src`]);
            writeFileSync(out, readFileSync(join(work, 'out.img')));
          } finally {
            rmSync(work, { recursive: true, force: true });
          }
        });
        if (img) seeds.push(await erofsSeed(`mkfs.erofs 1.8.6 ${args.join(' ')}`, img));
      }
    }
    // Images of livestick's own writer: its compact indexes, big pclusters, fragments (tails and whole
    // files), dedupe and inline layouts. They carry a superblock checksum, so what mutations reach is
    // the metadata and data after block 0.
    const ours: [string, ErofsWriteOptions][] = [
      ['lzma level 6, 1 MiB pclusters, fragments (Fedora 43)', { compression: 'lzma,level=6', pclusterSize: 1 << 20, fragments: true }],
      ['lz4hc, 4 KiB pclusters, all-fragments, dedupe', { compression: 'lz4hc', allFragments: true, dedupe: true }],
      ['zstd, 64 KiB pclusters, no fragments', { compression: 'zstd', pclusterSize: 65536 }],
      ['uncompressed, inline tails', {}],
    ];
    for (const [what, options] of ours) {
      const work = mkdtempSync(join(tmpdir(), 'lsk-fuzz-erofs-ours-'));
      try {
        const out = join(work, 'out.img');
        await writeErofs(erofsSource(work), out, { ...options, threads: 0, mkfsTime: 1_700_000_000 });
        seeds.push(await erofsSeed(`livestick erofs writer: ${what}`, new Uint8Array(readFileSync(out))));
      } finally {
        rmSync(work, { recursive: true, force: true });
      }
    }
    return seeds;
  },
  async exercise(disk, _seed, budget) {
    const reader = await ErofsReader.open(disk, { cacheBytes: 2 << 20 });
    let n = 0;
    let streamed = 0;
    const buf = new Uint8Array(PIECE);
    for await (const e of reader.walk()) {
      if (++n > MAX_ENTRIES) break;
      checkDeadline(budget);
      await reader.xattrs(e.inode);
      if (e.inode.kind === 'symlink') await reader.readlink(e.inode);
      if (e.inode.kind === 'file') {
        const f = await reader.openFileDisk(e.inode);
        for (let at = 0; at < f.size && streamed < MAX_STREAM; at += PIECE) {
          const piece = buf.subarray(0, Math.min(PIECE, f.size - at));
          await f.read(piece, at);
          streamed += piece.byteLength;
          checkDeadline(budget);
        }
        if (f.size > 0) await f.read(buf.subarray(0, Math.min(f.size, 4096)), Math.max(0, f.size - 4096));
      }
    }
  },
};

export const TARGETS: Record<string, Target> = {
  squashfs: squashfsTarget,
  erofs: erofsTarget,
  ext4: ext4Target,
  luks1: luks1Target,
  luks2: luks2Target,
  home: homeTarget,
  dmsnap: dmsnapTarget,
};
