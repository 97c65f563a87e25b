/**
 * EROFS writer (uncompressed images) over the SquashFS writer's tree type.
 *
 * Extended attributes are inline in each inode, except those (name and value) that several inodes
 * carry: those are stored once in the shared xattr area (after the inodes) and named by id. Names
 * under a long prefix (default `trusted.overlay.`) store only their rest; the prefix records follow.
 *
 * Design notes
 * - Layout: block 0 holds the superblock at byte 1024; the metadata area (inodes, their inline
 *   xattrs and inline tails, each record 32-byte aligned) starts at the first block after the
 *   superblock; file, directory and symlink data blocks follow it.
 * - Inodes are numbered in a fixed order: depth-first, each directory's entries sorted by name bytes,
 *   the root first (nid 1; nid 0 is left unused). A node object reachable under several names is one inode (hard link).
 * - Every inode record is placed before any data is read: the sizes of all records are known from the
 *   tree (a directory's size depends only on its names), so nids and block addresses are fixed first.
 *   File data is then streamed block by block; a file's tail (less than a block) is kept in memory
 *   when it is stored inline and written with the metadata area last.
 * - Compact inodes carry no mtime of their own on older kernels (those use the build time), so a
 *   compact inode is used only when its mtime equals the build time (stored as epoch, i_mtime 0) and
 *   uid, gid, nlink and size fit; otherwise the inode is extended.
 * - FLAT_INLINE is used when the tail fits after the inode inside its block (the record moves to a
 *   fresh block when that makes it fit), FLAT_PLAIN otherwise. Holes are written as zero blocks,
 *   unless `chunkSize` makes files chunk-based: then an all-zero chunk is EROFS_NULL_ADDR in the
 *   file's block map, and data blocks are handed out as chunks are written (one chunk is buffered).
 * - Carried files (compressed): a file whose content names its EROFS source (`erofs`: reader and
 *   inode) is planned before any data is written, in nid order: its extents are read from the source's
 *   indexes, and the leading run that can be carried (settingsFit for the image, `carriable` per
 *   extent, and the compact indexes they would get checked by encoding them) is copied pcluster by
 *   pcluster from the source Disk into the output, at the next free blocks; the lcluster layout is
 *   the source's (lclusters of one block), so the new indexes describe the same extents. The rest of
 *   the file, from the first extent that cannot be carried, is read through the source (decoded) and
 *   compressed as any file's, in segments that still end at multiples of SEGMENT_SIZE; with fragments
 *   its tail goes to the new packed inode. A source with interlaced plain pclusters keeps INTERLACED,
 *   and the file's new plain pclusters are rotated to match. The plan is a function of the source
 *   image and the tree alone, so the image still does not depend on the thread count.
 * - Carried files with the same source extents (the old image stored them once) are stored once, by
 *   that identity and without reading them, whatever `dedupe` says; other files as `dedupe` says.
 * - Shared pclusters: each pcluster written is indexed by its stored bytes (with its decoded length,
 *   and a plain one's shift in its block). A later pcluster with the same key references the first,
 *   as mkfs.erofs 1.8 does under -Efragments: a file that extends or patches the end of another keeps
 *   one copy of their common leading pclusters. Compact indexes give the heads of one pack their
 *   pclusters one after another, so only a head alone in its pack (compactPackOf) may point back.
 *   Carried pclusters are always looked up (pclusters the old image shared stay shared), new ones
 *   when `dedupe` is on. Decisions are made in write order, so the image still does not depend on
 *   the thread count.
 */
import { createHash } from 'node:crypto';
import { availableParallelism } from 'node:os';
import type { Disk } from '../../io/disk.ts';
import { ImageOutput } from '../../io/image-output.ts';
import { contentPieces, fileNode, treeFromDirectory, type DirNode, type ScanOptions, type TreeNode } from '../squashfs/tree.ts';
import { DIRENT_SIZE, encodeDirentBlock, FILE_TYPE_KINDS, NAME_MAX, type Dirent } from './dirent.ts';
import { COMPACT_INODE_SIZE, DataLayout, encodeInode, EXTENDED_INODE_SIZE, type Inode, type RawInode } from './inode.ts';
import { BLOCK_MAP_ENTRY_SIZE, encodeBlockMapEntry } from './chunk.ts';
import { isAllZero } from '../../io/bytes.ts';
import { checksumSpan, Compat, encodeSuperblock, Incompat, SUPER_OFFSET, SUPERBLOCK_BASE_SIZE, superblockChecksum, type Superblock } from './superblock.ts';
import { bigPclusters, compactMetaSize, compactPackOf, comprCfgsFor, encodeCompactIndexes, parseCompression, SEGMENT_SIZE, zipConfig, type CompressedSegment, type ZExtent, type ZipConfig } from './compress.ts';
import { Algorithm, encodeComprCfgs, MAP_HEADER_SIZE, type Extent } from './zmap.ts';
import type { ErofsReader } from './reader.ts';
import { ByteSpool } from './spool.ts';
import { DedupeIndex, KEY_BYTES } from '../squashfs/dedupe.ts';
import { createSegmentCompressor, type SegmentCompressor } from '../squashfs/comp/pool.ts';
import { encodeIbodyHeader, encodeLongPrefix, encodeXattrEntry, LONG_PREFIX_BIT, NAME_PREFIXES, type XattrEntry } from './xattr.ts';

export interface ErofsWriteOptions {
  /** 512 .. 4096, a power of two (default 4096). */
  blockSize?: number;
  /** Build time (seconds since 1970): default SOURCE_DATE_EPOCH, else now. */
  mkfsTime?: number;
  /** 16 bytes or the usual 8-4-4-4-12 hex text (default: derived from the image's metadata). */
  uuid?: Uint8Array | string;
  /** Up to 16 bytes of UTF-8. */
  volumeName?: string;
  /**
   * Store regular files as chunks of this size (a power of two, blockSize .. 256 MiB) with a block map;
   * an all-zero chunk is a hole (EROFS_NULL_ADDR) and takes no blocks. Without it, files are flat and
   * holes are zero blocks.
   */
  chunkSize?: number;
  /**
   * Long xattr name prefixes (INCOMPAT_XATTR_PREFIXES) stored once in the image when some attribute
   * uses them, so entries keep only the rest of their name (default ['trusted.overlay.'], common in
   * overlay layers; [] for none). Each must start with a short prefix (user., trusted., security.).
   */
  longPrefixes?: readonly string[];
  /** How a source directory is scanned (xattr reader; default the host's xattrs). */
  scan?: ScanOptions;
  /**
   * Compress regular files larger than a block, as mkfs.erofs -z takes it: `ALG[,level=N]` with
   * lzma (default level 6), lz4, lz4hc, deflate, zstd. See compress.ts.
   */
  compression?: string;
  /** The largest pcluster in bytes (a multiple of blockSize, at most 1 MiB; default one block), as mkfs.erofs -C. */
  pclusterSize?: number;
  /** Compression worker threads (default: available parallelism, at most 8); 0 compresses on the main thread. */
  threads?: number;
  /**
   * With compression, every regular file's tail (its input left once it fits one pcluster) goes to the
   * packed inode (INCOMPAT_FRAGMENTS, mkfs.erofs -Efragments); files that fit one pcluster go there whole.
   */
  fragments?: boolean;
  /** With compression, whole files go to the packed inode (mkfs.erofs -Eall-fragments). */
  allFragments?: boolean;
  /**
   * With compression, a file whose content equals an earlier one's (same size, same sha-256; files
   * that share a size are read once more to hash them) shares its pclusters and fragment, and a
   * pcluster whose stored bytes equal an earlier one's is stored once (see the design notes). Default:
   * on with fragments, as mkfs.erofs 1.8 deduplicates fragment data of identical files unless told
   * -E^fragdedupe (Fedora's -Efragments images store each duplicated file once).
   */
  dedupe?: boolean;
  /**
   * With fragments and carried files: the old image's packed inode is carried as the start of the new
   * one (its pclusters copied, its fragments kept at their offsets, new fragments after them) when
   * the fragments the new image still uses cover at least this share of it (default 0.8; 0 always,
   * above 1 never). Otherwise every carried file's fragment is compressed anew.
   */
  carryPackedMinLive?: number;
}

export interface ErofsWriteResult {
  readonly size: number;
  readonly blocks: number;
  readonly inodes: number;
  readonly dataBytes: number;
  /**
   * Files given with an EROFS source (FileContent `erofs`) some of whose pclusters were copied as they
   * are: how many, the pcluster bytes copied, and the file bytes those pclusters hold.
   */
  readonly carried: { readonly files: number; readonly pclusterBytes: number; readonly fileBytes: number; readonly packedBytes: number };
  /** Pclusters stored once and referenced again (identical stored bytes; see `dedupe`), and their bytes. */
  readonly shared: { readonly pclusters: number; readonly bytes: number };
}

const IFMT: Record<TreeNode['type'], number> = {
  file: 0o100000, dir: 0o040000, symlink: 0o120000, chardev: 0o020000, blockdev: 0o060000, fifo: 0o010000, socket: 0o140000,
};

interface InodeRec {
  node: TreeNode;
  nid: number;
  ino: number;
  nlink: number;
  extended: boolean;
  xattrBody: Uint8Array;
  xattrIcount: number;
  size: number;
  layout: number;
  /** Bytes stored inline after the inode (the tail), when FLAT_INLINE. */
  inlineLen: number;
  pos: number;
  startBlock: number;
  /** Data blocks (full blocks only when inline). */
  blocks: number;
  /** Chunk-based: the block map (one entry per chunk), filled when the data is written. */
  chunkMap?: (number | undefined)[];
  /** Directory: its sorted children (name bytes, record). */
  children?: { name: Uint8Array; rec: InodeRec }[];
  parent?: InodeRec;
  tail?: Uint8Array;
  /** Compressed: where the map header goes, its and the indexes' size, and the extents once written. */
  z?: { headerPos: number; metaSize: number; extents: ZExtent[]; blocks: number; whole: boolean; fragmentOffset?: number; interlaced?: boolean };
  /**
   * Compressed, with an EROFS source whose settings fit: the source file, the leading extents whose
   * pclusters are copied as they are (emptied once copied), and where the rest, compressed anew, starts.
   */
  carry?: {
    reader: ErofsReader; nid: number; extents: Extent[]; until: number;
    /** The source's fragment, when it directly follows the carried extents (or is the whole file). */
    fragment?: { offset: number; length: number };
    /** Set when the old packed inode is carried: the fragment keeps this offset in the new one. */
    fragmentOffset?: number;
  };
}

/** Rotates a plain pcluster's block so that the extent's first byte sits at `la`'s offset in its block (INTERLACED). */
function interlace(block: Uint8Array, count: number, la: number, bs: number): void {
  const shift = la % bs;
  if (shift === 0) return;
  const data = block.slice(0, count);
  block.fill(0);
  const n = Math.min(bs - shift, count);
  block.set(data.subarray(0, n), shift);
  block.set(data.subarray(n), 0);
}

function cmpBytes(a: Uint8Array, b: Uint8Array): number {
  return Buffer.compare(a, b);
}

/** The name index and remaining name for a full xattr name (the longest short prefix that matches). */
export function splitXattrName(name: string): { nameIndex: number; suffix: string } {
  let best = 0;
  NAME_PREFIXES.forEach((p, i) => {
    if (p !== undefined && name.startsWith(p) && (best === 0 || p.length > (NAME_PREFIXES[best] as string).length)) best = i;
  });
  if (best === 0) throw new RangeError(`xattr ${JSON.stringify(name)} has no EROFS name prefix (user., trusted., security., system.posix_acl_*)`);
  return { nameIndex: best, suffix: name.slice((NAME_PREFIXES[best] as string).length) };
}

/**
 * Whether the compressed pclusters of `from` can be copied as they are into an image written with
 * `options`: the same block size, its algorithm among the old image's (extents of another are
 * recompressed), and a decoder config of the new image that takes the old streams (a ZSTD window, a
 * DEFLATE window no larger; LZ4 with zero padding and pclusters no larger; LZMA streams are checked
 * per extent against the new dictionary). The level does not matter: a decoder does not know it.
 * Each pcluster is checked against the new pcluster limit (the superblock's BIG_PCLUSTER bit is
 * COMPR_CFGS's too, so the old limit is not recorded): larger ones are recompressed.
 */
export function settingsFit(from: Pick<ErofsReader, 'superblock' | 'comprCfgs'>, options: ErofsWriteOptions): boolean {
  if (options.compression === undefined || options.allFragments === true || options.chunkSize !== undefined) return false;
  const bs = options.blockSize ?? 4096;
  return zipFits(from, zipConfig(parseCompression(options.compression), bs, options.pclusterSize ?? bs));
}

function zipFits(from: Pick<ErofsReader, 'superblock' | 'comprCfgs'>, zip: ZipConfig): boolean {
  const sb = from.superblock;
  const cfgs = from.comprCfgs;
  if (2 ** sb.blkszbits !== zip.blockSize || sb.extraDevices !== 0) return false;
  const algorithms = sb.featureIncompat & Incompat.comprCfgs ? sb.u1 : sb.featureIncompat & Incompat.lz4ZeroPadding ? 1 << Algorithm.lz4 : 0;
  if (!(algorithms & (1 << zip.algorithm))) return false;
  const mine = comprCfgsFor(zip);
  switch (zip.algorithm) {
    case Algorithm.lz4:
      return (sb.featureIncompat & Incompat.lz4ZeroPadding) !== 0 && (cfgs.lz4 === undefined || cfgs.lz4.maxPclusterBlocks * zip.blockSize <= zip.pclusterSize);
    case Algorithm.lzma:
      return cfgs.lzma !== undefined;
    case Algorithm.deflate:
      return (cfgs.deflate?.windowBits ?? 15) <= (mine.deflate?.windowBits ?? 15);
    default:
      return cfgs.zstd !== undefined && cfgs.zstd.windowLog <= (mine.zstd?.windowLog ?? 0);
  }
}

/**
 * Whether one extent of a source file can be carried into an image with `zip`: a whole pcluster in
 * blocks (not a fragment, an inline tail or a partial reference), compressed with `zip`'s algorithm
 * or plain (shifted, or interlaced: the file then keeps INTERLACED and its new plain pclusters are
 * written so), no larger than the new pcluster limit; an LZMA stream decodes within the new
 * dictionary (made with one no larger, or decoding to no more).
 */
function carriable(x: Extent, zip: ZipConfig, from: Pick<ErofsReader, 'comprCfgs'>): boolean {
  if (x.source !== 'blocks' || x.partialRef || x.plen % zip.blockSize !== 0 || x.plen < zip.blockSize || x.plen > zip.pclusterSize) return false;
  if (x.algorithm === 'shifted' || x.algorithm === 'interlaced') return x.llen <= x.plen && x.plen === zip.blockSize;
  if (x.algorithm !== zip.algorithm) return false;
  if (zip.algorithm === Algorithm.lzma) return (from.comprCfgs.lzma?.dictSize ?? Infinity) <= zip.dictSize || x.llen <= zip.dictSize;
  return true;
}

const readerTags = new WeakMap<ErofsReader, number>();
let nextReaderTag = 0;

/**
 * The carry plan of a compressed file from its EROFS source: the longest run of carriable extents
 * from the start (the rest, from the first extent that is not, is compressed anew: with fragments,
 * its tail goes to the new packed inode), checked by encoding the indexes it would get; and an
 * identity of the content (files with the same source extents hold the same bytes).
 */
async function carryPlan(rec: InodeRec, zip: ZipConfig, fits: (r: ErofsReader) => boolean): Promise<{ carry: NonNullable<InodeRec['carry']>; key: string; interlaced: boolean } | undefined> {
  const n = rec.node;
  if (n.type !== 'file' || rec.z === undefined) return undefined;
  let content = n.content;
  if (content.kind === 'deferred') content = await content.resolve();
  if (content.kind !== 'disk' || content.erofs === undefined) return undefined;
  const { reader, inode } = content.erofs;
  if (inode.kind !== 'file' || inode.size !== rec.size || !fits(reader)) return undefined;
  let tag = readerTags.get(reader);
  if (tag === undefined) readerTags.set(reader, (tag = nextReaderTag++));
  const bs = zip.blockSize;
  if (inode.layout !== DataLayout.compressedFull && inode.layout !== DataLayout.compressedCompact) {
    return { carry: { reader, nid: inode.nid, extents: [], until: 0 }, key: `${tag}:nid:${inode.nid}`, interlaced: false };
  }
  const { lclusterBits, extents } = await reader.compressedExtents(inode);
  const h = createHash('sha256').update(`${tag}:${rec.size}`);
  for (const x of extents) h.update(`;${x.source}:${x.pa}:${x.plen}:${x.la}:${x.llen}:${x.algorithm}:${x.partialRef ? 1 : 0}`);
  let keep: Extent[] = [];
  if (2 ** lclusterBits === bs) {
    for (const x of extents) {
      if (!carriable(x, zip, reader)) break;
      keep.push(x);
    }
  }
  const interlaced = keep.some((x) => x.algorithm === 'interlaced');
  const until = keep.length > 0 ? (keep[keep.length - 1] as Extent).la + (keep[keep.length - 1] as Extent).llen : 0;
  if (keep.length > 0) {
    // The indexes the carried extents get (their pclusters one after another), the rest as one
    // fragment in their place: an extent the compact indexes cannot describe carries nothing.
    let pblk = 1 << 20;
    const trial: ZExtent[] = keep.map((x) => {
      const e = { la: x.la, length: x.llen, pblk, blocks: x.plen / bs, plain: typeof x.algorithm !== 'number' };
      pblk += e.blocks;
      return e;
    });
    if (until < rec.size) trial.push({ la: until, length: rec.size - until, pblk: 0, blocks: 0, plain: false, fragment: true });
    try {
      encodeCompactIndexes(trial, rec.size, bs, rec.z.headerPos, zip.algorithm, bigPclusters(zip), until < rec.size ? 0 : undefined, interlaced);
    } catch (err) {
      if (!(err instanceof RangeError)) throw err;
      keep = [];
    }
  }
  const carriedTo = keep.length > 0 ? until : 0;
  const last = extents[extents.length - 1];
  const fragment = last !== undefined && last.source === 'fragment' && !last.partialRef && last.la === carriedTo && last.la + last.llen === rec.size ? { offset: last.pa, length: last.llen } : undefined;
  return { carry: { reader, nid: inode.nid, extents: keep, until: carriedTo, ...(fragment !== undefined ? { fragment } : {}) }, key: h.digest('hex'), interlaced: keep.length > 0 && interlaced };
}

/**
 * Whether the old image's packed inode is carried as the start of the new one: the source of the
 * carried files that have a fragment right after their carried extents, a packed inode of the
 * image's lcluster size whose leading run of carriable extents is not empty (less its last when that
 * one's head shares an lcluster with the end, where new data will start), and fragments still used
 * covering at least `minLive` of it. When it is, those files keep their fragment offsets.
 */
async function packedCarryPlan(recs: readonly InodeRec[], zip: ZipConfig, minLive: number): Promise<{ reader: ErofsReader; inode: Inode; extents: Extent[]; size: number; interlaced: boolean } | undefined> {
  const users = recs.filter((r) => r.carry?.fragment !== undefined);
  if (users.length === 0 || minLive > 1) return undefined;
  const reader = (users[0]?.carry as NonNullable<InodeRec['carry']>).reader;
  const nid = reader.superblock.packedNid;
  if (nid === 0) return undefined;
  const inode = await reader.inode(nid);
  if (inode.kind !== 'file' || (inode.layout !== DataLayout.compressedFull && inode.layout !== DataLayout.compressedCompact)) return undefined;
  const bs = zip.blockSize;
  const { lclusterBits, extents } = await reader.compressedExtents(inode);
  if (2 ** lclusterBits !== bs) return undefined;
  const keep: Extent[] = [];
  for (const x of extents) {
    if (!carriable(x, zip, reader)) break;
    keep.push(x);
  }
  const last = keep[keep.length - 1];
  if (last !== undefined && (last.la + last.llen) % bs !== 0 && Math.floor(last.la / bs) === Math.floor((last.la + last.llen) / bs)) keep.pop();
  if (keep.length === 0) return undefined;
  const end = (keep[keep.length - 1] as Extent).la + (keep[keep.length - 1] as Extent).llen;
  let pblk = 1 << 20;
  const trial: ZExtent[] = keep.map((x) => {
    const e = { la: x.la, length: x.llen, pblk, blocks: x.plen / bs, plain: typeof x.algorithm !== 'number' };
    pblk += e.blocks;
    return e;
  });
  const interlaced = keep.some((x) => x.algorithm === 'interlaced');
  try {
    encodeCompactIndexes(trial, end, bs, 4096 + 32, zip.algorithm, bigPclusters(zip), undefined, interlaced);
  } catch (err) {
    if (!(err instanceof RangeError)) throw err;
    return undefined;
  }
  const mine = users.filter((r) => r.carry?.reader === reader);
  const spans = mine.map((r) => (r.carry as NonNullable<InodeRec['carry']>).fragment as { offset: number; length: number }).sort((a, b) => a.offset - b.offset);
  let live = 0;
  let reach = 0;
  for (const f of spans) {
    const from = Math.max(reach, f.offset);
    const to = f.offset + f.length;
    if (to > inode.size) return undefined;
    if (to > from) live += to - from;
    reach = Math.max(reach, to);
  }
  if (live < minLive * inode.size) return undefined;
  for (const r of mine) {
    const c = r.carry as NonNullable<InodeRec['carry']>;
    c.fragmentOffset = (c.fragment as { offset: number }).offset;
    c.until = r.size;
  }
  return { reader, inode, extents: keep, size: inode.size, interlaced };
}

function xattrEntries(node: TreeNode, long: readonly string[] = []): { key: string; entry: XattrEntry }[] {
  const out = (node.xattrs ?? []).map((x) => {
    let { nameIndex, suffix } = splitXattrName(x.name);
    const li = long.findIndex((p) => x.name.startsWith(p) && x.name.length > p.length);
    if (li >= 0) {
      nameIndex = LONG_PREFIX_BIT | li;
      suffix = x.name.slice((long[li] as string).length);
    }
    const entry: XattrEntry = { nameIndex, name: Buffer.from(suffix, 'utf8'), value: x.value };
    return { key: `${x.name}\0${Buffer.from(x.value).toString('hex')}`, entry };
  });
  return out.sort((a, b) => a.entry.nameIndex - b.entry.nameIndex || cmpBytes(a.entry.name, b.entry.name));
}

/**
 * The inline xattr body of a node: header, the ids of its shared entries (at most 255), then its own
 * entries; and its i_xattr_icount.
 */
function xattrBody(node: TreeNode, sharedIds: ReadonlyMap<string, number>, long: readonly string[]): { body: Uint8Array; icount: number } {
  const xs = xattrEntries(node, long);
  if (xs.length === 0) return { body: new Uint8Array(0), icount: 0 };
  const ids: number[] = [];
  const own: XattrEntry[] = [];
  for (const x of xs) {
    const id = sharedIds.get(x.key);
    if (id !== undefined && ids.length < 255) ids.push(id);
    else own.push(x.entry);
  }
  const idBytes = new Uint8Array(ids.length * 4);
  ids.forEach((id, i) => new DataView(idBytes.buffer).setUint32(i * 4, id, true));
  const body = Buffer.concat([encodeIbodyHeader({ nameFilter: 0, sharedCount: ids.length }), idBytes, ...own.map(encodeXattrEntry)]);
  if ((body.byteLength - 12) / 4 + 1 > 0xffff) throw new RangeError(`${body.byteLength} bytes of xattrs do not fit one inode's i_xattr_icount`);
  return { body, icount: (body.byteLength - 12) / 4 + 1 };
}

/** Packs directory entries into blocks: each block takes as many sorted entries as fit. */
function dirLayout(names: readonly Uint8Array[], bs: number): { blocks: number[][]; size: number } {
  const blocks: number[][] = [];
  let cur: number[] = [];
  let used = 0;
  let lastUsed = 0;
  names.forEach((n, i) => {
    const need = DIRENT_SIZE + n.byteLength;
    if (used + need > bs) {
      blocks.push(cur);
      cur = [];
      used = 0;
    }
    cur.push(i);
    used += need;
    lastUsed = used;
  });
  blocks.push(cur);
  return { blocks, size: (blocks.length - 1) * bs + lastUsed };
}

function parseUuid(u: Uint8Array | string): Uint8Array {
  if (typeof u !== 'string') {
    if (u.byteLength !== 16) throw new RangeError('a UUID has 16 bytes');
    return Uint8Array.from(u);
  }
  const hex = u.replace(/-/g, '');
  if (!/^[0-9a-fA-F]{32}$/.test(hex)) throw new RangeError(`${JSON.stringify(u)} is not a UUID`);
  return Uint8Array.from(Buffer.from(hex, 'hex'));
}

/** Writes an uncompressed EROFS image from a tree (or a host directory path) to a host path or a Disk. */
export async function writeErofs(source: DirNode | string, out: Disk | string, options: ErofsWriteOptions = {}): Promise<ErofsWriteResult> {
  const tree = typeof source === 'string' ? await treeFromDirectory(source, options.scan) : source;
  const bs = options.blockSize ?? 4096;
  if (!Number.isInteger(bs) || bs < 512 || bs > 4096 || (bs & (bs - 1)) !== 0) throw new RangeError(`block size ${bs} is not a power of two in 512..4096`);
  const envEpoch = process.env.SOURCE_DATE_EPOCH !== undefined && /^\d+$/.test(process.env.SOURCE_DATE_EPOCH) ? Number(process.env.SOURCE_DATE_EPOCH) : undefined;
  const mkfsTime = options.mkfsTime ?? envEpoch ?? Math.floor(Date.now() / 1000);
  if (!Number.isSafeInteger(mkfsTime) || mkfsTime < 0) throw new RangeError(`build time ${mkfsTime} is not a non-negative integer`);
  const volumeName = Buffer.from(options.volumeName ?? '', 'utf8');
  if (volumeName.byteLength > 16) throw new RangeError('a volume name has at most 16 bytes');
  const chunkSize = options.chunkSize;
  if (chunkSize !== undefined && (!Number.isInteger(chunkSize) || chunkSize < bs || chunkSize > 1 << 28 || (chunkSize & (chunkSize - 1)) !== 0)) {
    throw new RangeError(`chunk size ${chunkSize} is not a power of two in ${bs}..256 MiB`);
  }
  const zip: ZipConfig | undefined = options.compression !== undefined ? zipConfig(parseCompression(options.compression), bs, options.pclusterSize ?? bs) : undefined;
  if (zip === undefined && options.pclusterSize !== undefined) throw new RangeError('a pcluster size needs compression');
  if (zip !== undefined && chunkSize !== undefined) throw new RangeError('chunked files and compression do not mix');
  const threads = options.threads ?? Math.max(1, Math.min(8, availableParallelism()));
  if (!Number.isInteger(threads) || threads < 0) throw new RangeError(`thread count ${threads} is not a non-negative integer`);
  const allFrag = options.allFragments === true;
  const frag = options.fragments === true || allFrag;
  if (frag && zip === undefined) throw new RangeError('fragments need compression');
  if (options.dedupe === true && zip === undefined) throw new RangeError('dedupe needs compression');
  const dedupe = options.dedupe ?? frag;
  const cfgBytes = zip !== undefined ? encodeComprCfgs(comprCfgsFor(zip)) : new Uint8Array(0);

  // Pass 1: inode records in a fixed order.
  const recs: InodeRec[] = [];
  const byNode = new Map<TreeNode, InodeRec>();
  const visit = (node: TreeNode, parent: InodeRec | undefined): InodeRec => {
    const known = byNode.get(node);
    if (known !== undefined) {
      if (node.type === 'dir') throw new RangeError('a directory is reachable under two names');
      known.nlink++;
      return known;
    }
    if (!Number.isSafeInteger(node.mtime) || node.mtime < 0) throw new RangeError(`mtime ${node.mtime} is not a whole number of seconds since 1970`);
    for (const [what, id] of [['uid', node.uid], ['gid', node.gid]] as const) {
      if (!Number.isInteger(id) || id < 0 || id > 0xffffffff) throw new RangeError(`${what} ${id} does not fit 32 bits`);
    }
    const rec: InodeRec = {
      node, nid: -1, ino: recs.length + 1, nlink: node.type === 'dir' ? 2 : 1, extended: false, xattrBody: new Uint8Array(0), xattrIcount: 0,
      size: 0, layout: DataLayout.flatPlain, inlineLen: 0, pos: 0, startBlock: 0, blocks: 0,
    };
    rec.parent = parent ?? rec;
    recs.push(rec);
    byNode.set(node, rec);
    if (node.type === 'dir') {
      const kids = [...node.entries].map(([name, child]) => ({ name: Buffer.from(name, 'utf8'), child }));
      for (const k of kids) {
        if (k.name.byteLength === 0 || k.name.byteLength > NAME_MAX || k.name.includes(0x2f) || k.name.includes(0) || k.name.equals(Buffer.from('.')) || k.name.equals(Buffer.from('..'))) {
          throw new RangeError(`${JSON.stringify(k.name.toString('utf8'))} is not a valid entry name`);
        }
      }
      kids.sort((a, b) => cmpBytes(a.name, b.name));
      rec.children = kids.map((k) => ({ name: k.name, rec: visit(k.child, rec) }));
      rec.nlink += rec.children.filter((c) => c.rec.node.type === 'dir').length;
    }
    return rec;
  };
  visit(tree, undefined);

  // Shared xattrs: an attribute (name and value) that several inodes carry is stored once, in order of first use.
  // Long prefixes: those some attribute uses, in the order given.
  const wanted = options.longPrefixes ?? ['trusted.overlay.'];
  for (const p of wanted) {
    const base = splitXattrName(p);
    if (base.suffix === '' || Buffer.byteLength(base.suffix) > 255) throw new RangeError(`long prefix ${JSON.stringify(p)} adds nothing to a short prefix or is too long`);
  }
  const names = new Set(recs.flatMap((r) => (r.node.xattrs ?? []).map((x) => x.name)));
  const long = wanted.filter((p) => [...names].some((n) => n.startsWith(p) && n.length > p.length)).slice(0, 128);
  const uses = new Map<string, { entry: XattrEntry; count: number }>();
  for (const rec of recs) {
    for (const x of xattrEntries(rec.node, long)) {
      const u = uses.get(x.key);
      if (u === undefined) uses.set(x.key, { entry: x.entry, count: 1 });
      else u.count++;
    }
  }
  const sharedIds = new Map<string, number>();
  const sharedParts: Uint8Array[] = [];
  let sharedLen = 0;
  for (const [key, u] of uses) {
    if (u.count < 2) continue;
    const bytes = encodeXattrEntry(u.entry);
    sharedIds.set(key, sharedLen / 4);
    sharedParts.push(bytes);
    sharedLen += bytes.byteLength;
  }
  for (const rec of recs) {
    const { body, icount } = xattrBody(rec.node, sharedIds, long);
    rec.xattrBody = body;
    rec.xattrIcount = icount;
  }

  const dot = Buffer.from('.');
  const dotdot = Buffer.from('..');
  const dirNames = new Map<InodeRec, { names: Uint8Array[]; recsOf: InodeRec[]; layout: number[][] }>();
  for (const rec of recs) {
    const n = rec.node;
    if (n.type === 'file') rec.size = n.size;
    else if (n.type === 'symlink') rec.size = Buffer.byteLength(n.target, 'utf8');
    else if (n.type === 'dir') {
      const all = [{ name: dot, rec }, { name: dotdot, rec: rec.parent as InodeRec }, ...(rec.children ?? [])].sort((a, b) => cmpBytes(a.name, b.name));
      const lay = dirLayout(all.map((e) => e.name), bs);
      rec.size = lay.size;
      dirNames.set(rec, { names: all.map((e) => e.name), recsOf: all.map((e) => e.rec), layout: lay.blocks });
    }
    rec.extended = n.uid > 0xffff || n.gid > 0xffff || rec.size > 0xffffffff || rec.nlink > 0xffff || n.mtime !== mkfsTime;
  }

  // Pass 2: metadata placement (nids), inline decisions, data block addresses.
  const metaBlk = Math.ceil((SUPER_OFFSET + SUPERBLOCK_BASE_SIZE + cfgBytes.byteLength) / bs);
  const metaStart = metaBlk * bs;
  // nid 0 stays unused: readdir reports an entry's nid as its inode number, and C libraries skip
  // entries whose inode number is 0 (the root's "." and every ".." naming it would vanish).
  let pos = metaStart + 32;
  for (const rec of recs) {
    let head = (rec.extended ? EXTENDED_INODE_SIZE : COMPACT_INODE_SIZE) + rec.xattrBody.byteLength;
    if (chunkSize !== undefined && rec.node.type === 'file' && rec.size > 0) {
      rec.layout = DataLayout.chunkBased;
      const chunks = Math.ceil(rec.size / chunkSize);
      rec.chunkMap = new Array<number | undefined>(chunks);
      if ((pos % bs) + Math.min(head, bs) > bs) pos = Math.ceil(pos / bs) * bs;
      rec.pos = pos;
      rec.nid = (pos - metaStart) / 32;
      pos = Math.ceil((pos + head + chunks * BLOCK_MAP_ENTRY_SIZE) / 32) * 32;
      continue;
    }
    if (zip !== undefined && rec.node.type === 'file' && (rec.size > bs || (frag && rec.size > 0))) {
      rec.layout = DataLayout.compressedCompact;
      if ((pos % bs) + Math.min(head, bs) > bs) pos = Math.ceil(pos / bs) * bs;
      rec.pos = pos;
      rec.nid = (pos - metaStart) / 32;
      const headerPos = Math.ceil((pos + head) / 8) * 8;
      rec.z = { headerPos, metaSize: allFrag ? MAP_HEADER_SIZE : compactMetaSize(rec.size, bs, headerPos), extents: [], blocks: 0, whole: allFrag };
      pos = Math.ceil((headerPos + rec.z.metaSize) / 32) * 32;
      continue;
    }
    const hasData = rec.node.type === 'file' || rec.node.type === 'dir' || rec.node.type === 'symlink';
    const tail = hasData ? rec.size % bs : 0;
    // The inode itself must not straddle a block when it can help it.
    if ((pos % bs) + Math.min(head, bs) > bs) pos = Math.ceil(pos / bs) * bs;
    if (hasData && tail > 0) {
      if ((pos % bs) + head + tail <= bs) {
        rec.layout = DataLayout.flatInline;
      } else if (head + tail <= bs) {
        // A fresh block keeps the tail inline (the rest of this one stays unused), as mkfs.erofs does.
        pos = Math.ceil(pos / bs) * bs;
        rec.layout = DataLayout.flatInline;
      }
    }
    if (rec.layout === DataLayout.flatInline) {
      rec.inlineLen = tail;
      rec.blocks = Math.floor(rec.size / bs);
    } else {
      rec.blocks = hasData ? Math.ceil(rec.size / bs) : 0;
    }
    rec.pos = pos;
    rec.nid = (pos - metaStart) / 32;
    pos += head + rec.inlineLen;
    pos = Math.ceil(pos / 32) * 32;
  }
  const root = recs[0] as InodeRec;
  if (root.nid > 0xffff) throw new RangeError('the root nid does not fit 16 bits');
  // The shared xattr area follows the inodes; data blocks are handed out as the data is written (a
  // hole chunk takes none), in nid order.
  const xattrBlk = sharedLen > 0 ? Math.ceil(pos / bs) : 0;
  let block = sharedLen > 0 ? Math.ceil((xattrBlk * bs + sharedLen) / bs) : Math.ceil(pos / bs);
  // The long prefix records follow, 4-byte aligned, in blocks of their own.
  const prefixBytes = Buffer.concat(long.map((p) => {
    const base = splitXattrName(p);
    return encodeLongPrefix({ baseIndex: base.nameIndex, infix: Buffer.from(base.suffix, 'utf8') });
  }));
  // With a packed inode, the long prefixes lead its content (as the kernel looks for them there).
  const packedUsed = frag && recs.some((r) => r.z !== undefined);
  const prefixBlk = block;
  if (prefixBytes.byteLength > 0 && !packedUsed) block += Math.ceil(prefixBytes.byteLength / bs);
  // The packed inode's content, in memory up to 64 MiB and then in a temporary file.
  const packed = new ByteSpool();

  // Carried files: each compressed file with an EROFS source whose settings fit gets its plan, in nid order.
  const carryKeys = new Map<InodeRec, string>();
  if (zip !== undefined && !allFrag) {
    const fitOf = new Map<ErofsReader, boolean>();
    const fits = (r: ErofsReader): boolean => {
      let f = fitOf.get(r);
      if (f === undefined) fitOf.set(r, (f = zipFits(r, zip)));
      return f;
    };
    for (const rec of recs) {
      if (rec.z === undefined || rec.z.whole) continue;
      const plan = await carryPlan(rec, zip, fits);
      if (plan === undefined) continue;
      rec.carry = plan.carry;
      if (plan.interlaced) rec.z.interlaced = true;
      carryKeys.set(rec, plan.key);
    }
  }
  const packedFrom = packedUsed && zip !== undefined ? await packedCarryPlan(recs, zip, options.carryPackedMinLive ?? 0.8) : undefined;
  // The new packed inode's content: the old one's (when carried), the long prefixes (4-byte aligned), then new fragments.
  const packedBase = packedFrom?.size ?? 0;
  let prefixOffset = 0;
  if (packedUsed) {
    if (packedBase % 4 !== 0) packed.append(new Uint8Array(4 - (packedBase % 4)));
    prefixOffset = packedBase + packed.length;
    packed.append(prefixBytes);
  }
  // Files with the same source extents are stored once whatever `dedupe` says (the old image stored
  // them once); with dedupe, so are files of equal content.
  const dupOf = zip !== undefined ? await duplicates(recs.filter((r) => r.z !== undefined), carryKeys, dedupe) : new Map<InodeRec, InodeRec>();
  carryKeys.clear();
  const carried = { files: 0, pclusterBytes: 0, fileBytes: 0, packedBytes: 0 };
  // Pclusters written so far, by stored bytes, for sharing (see placePcluster).
  const pclusters = zip !== undefined && !allFrag ? new DedupeIndex() : undefined;
  const shared = { pclusters: 0, bytes: 0 };
  const carryBuffer = new Uint8Array(zip?.pclusterSize ?? 0);
  // Files whose pclusters were carried (their duplicates count as carried too; they share them).
  const carriedRecs = new Set<InodeRec>();
  const output = typeof out === 'string' ? await ImageOutput.toPath(out) : ImageOutput.toDisk(out);
  const zrecs = recs.filter((r) => r.z !== undefined && !r.z.whole && !dupOf.has(r));
  const pool: SegmentCompressor | undefined = zip !== undefined && (zrecs.length > 0 || packedUsed) ? createSegmentCompressor(zip, threads) : undefined;
  let packedRec: InodeRec | undefined;
  try {
    const segments = pool !== undefined ? segmentQueue(zrecs, pool, Math.max(4, threads * 2), frag) : undefined;
    // Pass 3: data, in nid order.
    let dataBytes = 0;
    for (const rec of recs) {
      const n = rec.node;
      if (rec.blocks > 0) {
        rec.startBlock = block;
        block += rec.blocks;
      }
      const dataPos = rec.startBlock * bs;
      const orig = dupOf.get(rec);
      if (orig !== undefined && rec.z !== undefined && orig.z !== undefined) {
        rec.startBlock = orig.startBlock;
        rec.z.extents = orig.z.extents;
        rec.z.blocks = orig.z.blocks;
        if (orig.z.fragmentOffset !== undefined) rec.z.fragmentOffset = orig.z.fragmentOffset;
        if (orig.z.interlaced === true) rec.z.interlaced = true;
        else delete rec.z.interlaced;
        if (carriedRecs.has(orig)) {
          carried.files++;
          carried.fileBytes += rec.size;
        }
        dataBytes += rec.size;
      } else if (rec.z?.whole === true && n.type === 'file') {
        const z = rec.z;
        z.fragmentOffset = packedBase + packed.length;
        let at = 0;
        for await (const piece of contentPieces(n.content, rec.size, 1 << 20)) {
          if (at + piece.byteLength > rec.size) throw new RangeError(`a file's content is longer than its size ${rec.size}`);
          packed.append(piece);
          at += piece.byteLength;
        }
        if (at !== rec.size) throw new RangeError(`a file's content has ${at} bytes, its size says ${rec.size}`);
        z.extents.push({ la: 0, length: rec.size, pblk: 0, blocks: 0, plain: false, fragment: true });
        dataBytes += rec.size;
      } else if (rec.z !== undefined && segments !== undefined) {
        const z = rec.z;
        rec.startBlock = block;
        let la = 0;
        const carry = rec.carry;
        if (carry !== undefined && (carry.extents.length > 0 || carry.fragmentOffset !== undefined)) {
          // Carried pclusters: read from the source image and written (or shared) one after another.
          const from = carry.reader.disk;
          for (const x of carry.extents) {
            if (x.la !== la) throw new RangeError(`a carried extent at ${x.la} does not follow the one ending at ${la}`);
            const bytes = carryBuffer.subarray(0, x.plen);
            await from.read(bytes, x.pa);
            const plain = typeof x.algorithm !== 'number';
            const pblk = await placePcluster(rec, bytes, la, x.llen, plain, true);
            z.extents.push({ la, length: x.llen, pblk, blocks: x.plen / bs, plain });
            la += x.llen;
            carried.pclusterBytes += x.plen;
          }
          if (carry.fragmentOffset !== undefined) {
            // The fragment stays where it was: the old packed inode leads the new one.
            if (rec.size - la !== carry.fragment?.length) throw new RangeError(`a carried fragment of ${carry.fragment?.length} bytes after ${la} of ${rec.size}`);
            z.fragmentOffset = carry.fragmentOffset;
            z.extents.push({ la, length: rec.size - la, pblk: 0, blocks: 0, plain: false, fragment: true });
            la = rec.size;
          }
          carried.files++;
          carried.fileBytes += la;
          carry.extents = [];
          carriedRecs.add(rec);
        }
        while (la < rec.size) {
          const seg = await segments.next(rec);
          const stored = seg.data.byteLength - seg.tail;
          const e = seg.extents;
          if (z.interlaced === true) {
            // A carried file with interlaced plain pclusters: so are its new ones.
            for (let i = 0, at = 0, l = la; i < e.length; i += 3) {
              if (e[i + 2] === 1) interlace(seg.data.subarray(at, at + bs), e[i] as number, l, bs);
              at += (e[i + 1] as number) * bs;
              l += e[i] as number;
            }
          }
          let at = 0;
          for (let i = 0; i < e.length; i += 3) {
            const length = e[i] as number;
            const blocks = e[i + 1] as number;
            const plain = e[i + 2] === 1;
            const pblk = await placePcluster(rec, seg.data.subarray(at, at + blocks * bs), la, length, plain, false);
            z.extents.push({ la, length, pblk, blocks, plain });
            la += length;
            at += blocks * bs;
          }
          if (at !== stored) throw new RangeError('a compressed segment\'s data does not match its extents');
          if (seg.tail > 0) {
            z.fragmentOffset = packedBase + packed.length;
            packed.append(seg.data.subarray(stored));
            z.extents.push({ la, length: seg.tail, pblk: 0, blocks: 0, plain: false, fragment: true });
            la += seg.tail;
          }
        }
        z.blocks = z.extents.reduce((n, x) => n + x.blocks, 0);
        if (la !== rec.size) throw new RangeError(`a file's compressed extents cover ${la} bytes, its size says ${rec.size}`);
        dataBytes += rec.size;
      } else if (rec.chunkMap !== undefined && n.type === 'file') {
        const map = rec.chunkMap;
        const cs = chunkSize as number;
        let at = 0;
        let chunk = new Uint8Array(Math.min(cs, rec.size));
        let fill = 0;
        const endChunk = async () => {
          const idx = Math.floor((at - fill) / cs);
          const data = chunk.subarray(0, fill);
          if (isAllZero(data)) {
            map[idx] = undefined;
          } else {
            map[idx] = block;
            const blocks = Math.ceil(fill / bs);
            await output.write(data, block * bs);
            if (fill % bs !== 0) await output.write(new Uint8Array(bs - (fill % bs)), block * bs + fill);
            block += blocks;
          }
          fill = 0;
          if (at < rec.size) chunk = chunk.byteLength <= rec.size - at ? chunk : new Uint8Array(rec.size - at);
        };
        for await (const piece of contentPieces(n.content, rec.size, 1 << 20)) {
          if (at + piece.byteLength > rec.size) throw new RangeError(`a file's content is longer than its size ${rec.size}`);
          let off = 0;
          while (off < piece.byteLength) {
            const take = Math.min(piece.byteLength - off, chunk.byteLength - fill);
            chunk.set(piece.subarray(off, off + take), fill);
            fill += take;
            off += take;
            at += take;
            if (fill === chunk.byteLength) await endChunk();
          }
        }
        if (at !== rec.size) throw new RangeError(`a file's content has ${at} bytes, its size says ${rec.size}`);
        dataBytes += rec.size;
      } else if (n.type === 'dir') {
        const d = dirNames.get(rec) as { names: Uint8Array[]; recsOf: InodeRec[]; layout: number[][] };
        const blocks = d.layout.map((idx) =>
          encodeDirentBlock(idx.map((i): Dirent => ({ nid: (d.recsOf[i] as InodeRec).nid, fileType: FILE_TYPE_KINDS.indexOf((d.recsOf[i] as InodeRec).node.type), name: d.names[i] as Uint8Array })), bs));
        const full = Buffer.concat(blocks).subarray(0, rec.size);
        await emit(rec, full, dataPos);
      } else if (n.type === 'symlink') {
        await emit(rec, Buffer.from(n.target, 'utf8'), dataPos);
      } else if (n.type === 'file' && rec.size > 0) {
        let at = 0;
        const fullLen = rec.blocks * bs;
        const tailBuf = rec.inlineLen > 0 ? new Uint8Array(rec.inlineLen) : undefined;
        for await (const piece of contentPieces(n.content, rec.size, 1 << 20)) {
          if (at + piece.byteLength > rec.size) throw new RangeError(`a file's content is longer than its size ${rec.size}`);
          const inFull = Math.max(0, Math.min(piece.byteLength, fullLen - at));
          if (inFull > 0) await output.write(piece.subarray(0, inFull), dataPos + at);
          if (tailBuf && inFull < piece.byteLength) tailBuf.set(piece.subarray(inFull), at + inFull - fullLen);
          at += piece.byteLength;
        }
        if (at !== rec.size) throw new RangeError(`a file's content has ${at} bytes, its size says ${rec.size}`);
        if (!tailBuf && rec.size % bs !== 0) await output.write(new Uint8Array(bs - (rec.size % bs)), dataPos + rec.size);
        rec.tail = tailBuf;
        dataBytes += rec.size;
      }
    }

    const packedLen = packedBase + packed.length;
    if (packedLen > 0 && pool !== undefined && zip !== undefined) {
      // The packed inode: compressed like any file, its data then its inode (in a block of its own) after all other data.
      const node = fileNode(new Uint8Array(0), { mode: 0o600, mtime: mkfsTime });
      const prec: InodeRec = {
        node, nid: -1, ino: recs.length + 1, nlink: 1, extended: packedLen > 0xffffffff, xattrBody: new Uint8Array(0), xattrIcount: 0,
        size: packedLen, layout: DataLayout.compressedCompact, inlineLen: 0, pos: 0, startBlock: block, blocks: 0,
      };
      const extents: ZExtent[] = [];
      let la = 0;
      if (packedFrom !== undefined) {
        // The old packed inode's pclusters, copied as they are.
        for (const x of packedFrom.extents) {
          const bytes = carryBuffer.subarray(0, x.plen);
          await packedFrom.reader.disk.read(bytes, x.pa);
          await output.write(bytes, block * bs);
          extents.push({ la, length: x.llen, pblk: block, blocks: x.plen / bs, plain: typeof x.algorithm !== 'number' });
          la += x.llen;
          block += x.plen / bs;
          carried.pclusterBytes += x.plen;
        }
        carried.packedBytes = la;
      }
      const oldPacked = packedFrom !== undefined && la < packedBase ? await packedFrom.reader.openFileDisk(packedFrom.inode) : undefined;
      const contentAt = async (at: number, n: number): Promise<Uint8Array> => {
        const outBytes = new Uint8Array(n);
        const fromOld = Math.max(0, Math.min(n, packedBase - at));
        if (fromOld > 0) await (oldPacked as Disk).read(outBytes.subarray(0, fromOld), at);
        if (fromOld < n) outBytes.set(packed.read(at + fromOld - packedBase, n - fromOld), fromOld);
        return outBytes;
      };
      // The rest is read back and compressed a few segments at a time (bounded memory), written in
      // order; segments end at multiples of SEGMENT_SIZE.
      const inFlight: Promise<CompressedSegment>[] = [];
      let nextAt = la;
      const submit = (): void => {
        if (nextAt >= packedLen) return;
        const n = Math.min(SEGMENT_SIZE - (nextAt % SEGMENT_SIZE), packedLen - nextAt);
        inFlight.push(contentAt(nextAt, n).then((d) => pool.compress(d, false)));
        nextAt += n;
      };
      for (let i = 0; i < Math.max(2, threads); i++) submit();
      const interlaced = packedFrom?.interlaced === true;
      while (inFlight.length > 0) {
        const seg = await (inFlight.shift() as Promise<CompressedSegment>);
        submit();
        if (interlaced) {
          for (let i = 0, at = 0, l = la; i < seg.extents.length; i += 3) {
            if (seg.extents[i + 2] === 1) interlace(seg.data.subarray(at, at + bs), seg.extents[i] as number, l, bs);
            at += (seg.extents[i + 1] as number) * bs;
            l += seg.extents[i] as number;
          }
        }
        await output.write(seg.data, block * bs);
        for (let i = 0; i < seg.extents.length; i += 3) {
          extents.push({ la, length: seg.extents[i] as number, pblk: block, blocks: seg.extents[i + 1] as number, plain: seg.extents[i + 2] === 1 });
          la += seg.extents[i] as number;
          block += seg.extents[i + 1] as number;
        }
      }
      await oldPacked?.close();
      prec.pos = block * bs;
      prec.nid = (prec.pos - metaStart) / 32;
      const headerPos = prec.pos + (prec.extended ? EXTENDED_INODE_SIZE : COMPACT_INODE_SIZE);
      prec.z = { headerPos, metaSize: compactMetaSize(packedLen, bs, headerPos), extents, blocks: block - prec.startBlock, whole: false, ...(interlaced ? { interlaced } : {}) };
      const recordBlocks = Math.ceil((headerPos + prec.z.metaSize - prec.pos) / bs);
      await output.write(new Uint8Array(recordBlocks * bs), prec.pos);
      block += recordBlocks;
      packedRec = prec;
    }

    const totalBlocks = block;
    if (totalBlocks > 0xffffffff) throw new RangeError('the image needs more than 2^32 blocks');

    // Metadata area.
    for (const rec of packedRec !== undefined ? [...recs, packedRec] : recs) {
      const n = rec.node;
      let u = 0;
      if (n.type === 'chardev' || n.type === 'blockdev') u = ((n.minor & 0xff) | ((n.major & 0xfff) << 8) | ((n.minor & ~0xff) << 12)) >>> 0;
      else if (rec.chunkMap !== undefined) u = Math.log2((chunkSize as number) / bs);
      else if (rec.z !== undefined) u = rec.z.blocks;
      else if (rec.blocks > 0) u = rec.startBlock;
      const raw: RawInode = {
        extended: rec.extended, format: rec.layout << 1, xattrIcount: rec.xattrIcount, mode: IFMT[n.type] | (n.mode & 0o7777),
        nb: rec.extended ? 0 : rec.nlink, size: rec.size, u, ino: rec.ino, uid: n.uid, gid: n.gid,
        mtime: rec.extended ? n.mtime : 0, mtimeNsec: 0, nlink: rec.extended ? rec.nlink : 0,
      };
      await output.write(encodeInode(raw), rec.pos);
      if (rec.xattrBody.byteLength > 0) await output.write(rec.xattrBody, rec.pos + (rec.extended ? EXTENDED_INODE_SIZE : COMPACT_INODE_SIZE));
      if (rec.tail) await output.write(rec.tail, rec.pos + (rec.extended ? EXTENDED_INODE_SIZE : COMPACT_INODE_SIZE) + rec.xattrBody.byteLength);
      if (rec.z !== undefined && zip !== undefined) {
        // A whole-file fragment is its map header alone: the rest of the space kept for indexes is zeroed.
        const from = rec.pos + (rec.extended ? EXTENDED_INODE_SIZE : COMPACT_INODE_SIZE) + rec.xattrBody.byteLength;
        const meta = new Uint8Array(rec.z.headerPos + rec.z.metaSize - from);
        meta.set(encodeCompactIndexes(rec.z.extents, rec.size, bs, rec.z.headerPos, zip.algorithm, bigPclusters(zip), rec.z.fragmentOffset, rec.z.interlaced === true), rec.z.headerPos - from);
        await output.write(meta, from);
      }
      if (rec.chunkMap) {
        await output.write(Buffer.concat(Array.from(rec.chunkMap, (b) => encodeBlockMapEntry({ startBlock: b, deviceId: 0 }))), rec.pos + (rec.extended ? EXTENDED_INODE_SIZE : COMPACT_INODE_SIZE) + rec.xattrBody.byteLength);
      }
    }
    if (prefixBytes.byteLength > 0 && !packedUsed) {
      const area = new Uint8Array(Math.ceil(prefixBytes.byteLength / bs) * bs);
      area.set(prefixBytes);
      await output.write(area, prefixBlk * bs);
    }
    if (sharedLen > 0) {
      const area = new Uint8Array(Math.ceil(sharedLen / bs) * bs);
      area.set(Buffer.concat(sharedParts));
      await output.write(area, xattrBlk * bs);
    }
    // Zero the gaps of the metadata area up to the first data block (a file on a fresh path is already zero, a Disk may not be).
    if (typeof out !== 'string') await zeroGaps(output, recs, metaStart, Math.ceil(pos / bs) * bs);

    // Superblock.
    const uuid = options.uuid !== undefined ? parseUuid(options.uuid) : defaultUuid(recs, mkfsTime, bs);
    const sb: Superblock = {
      checksum: 0, featureCompat: Compat.sbChecksum | Compat.mtime, blkszbits: Math.log2(bs), extSlots: 0, rootNid: root.nid,
      inos: recs.length, epoch: mkfsTime, fixedNsec: 0, blocks: totalBlocks, metaBlkaddr: metaBlk, xattrBlkaddr: xattrBlk, uuid,
      volumeName: Uint8Array.from([...volumeName, ...new Uint8Array(16 - volumeName.byteLength)]),
      featureIncompat: (recs.some((r) => r.chunkMap !== undefined) ? Incompat.chunkedFile : 0) | (long.length > 0 ? Incompat.xattrPrefixes : 0)
        | (zip !== undefined ? Incompat.lz4ZeroPadding | Incompat.comprCfgs | (bigPclusters(zip) ? Incompat.bigPcluster : 0) : 0)
        | (packedRec !== undefined ? Incompat.fragments : 0),
      u1: zip !== undefined ? (comprCfgsFor(zip).algorithms ?? 0) : 0,
      extraDevices: 0, devtSlotoff: 0, dirblkbits: 0, xattrPrefixCount: long.length, xattrPrefixStart: long.length > 0 ? (packedUsed ? prefixOffset : prefixBlk * bs) / 4 : 0, packedNid: packedRec?.nid ?? 0, xattrFilterReserved: 0, buildTime: 0,
    };
    const span = new Uint8Array(checksumSpan(Math.log2(bs)));
    span.set(encodeSuperblock(sb));
    span.set(cfgBytes, SUPERBLOCK_BASE_SIZE);
    const sum = superblockChecksum(span);
    span.set(encodeSuperblock({ ...sb, checksum: sum }));
    span.set(cfgBytes, SUPERBLOCK_BASE_SIZE);
    await output.write(new Uint8Array(SUPER_OFFSET), 0);
    await output.write(span, SUPER_OFFSET);
    if (metaStart > SUPER_OFFSET + span.byteLength) await output.write(new Uint8Array(metaStart - SUPER_OFFSET - span.byteLength), SUPER_OFFSET + span.byteLength);
    const size = totalBlocks * bs;
    await output.finish(size);
    if (typeof out !== 'string') await out.flush();
    return { size, blocks: totalBlocks, inodes: recs.length, dataBytes, carried, shared };
  } catch (err) {
    await output.abort();
    throw err;
  } finally {
    packed.close();
    await pool?.close();
  }

  /**
   * Writes one pcluster of `rec` at the next free blocks and returns its first block; or, when the
   * same stored bytes (for the same decoded length, and a plain pcluster's shift) were written before
   * and the head is alone in its compact pack, returns theirs. Carried pclusters are always looked up
   * (the old image may have shared them); new ones when `dedupe` is on.
   */
  async function placePcluster(rec: InodeRec, bytes: Uint8Array, la: number, llen: number, plain: boolean, carriedFrom: boolean): Promise<number> {
    const blocks = bytes.byteLength / bs;
    let key: Uint8Array | undefined;
    if (pclusters !== undefined && (dedupe || carriedFrom)) {
      key = createHash('sha256').update(bytes).update(`:${blocks}:${plain ? la % bs : -1}`).digest().subarray(0, KEY_BYTES);
      const hit = pclusters.get(key, llen);
      if (hit !== undefined && aloneInPack(rec, la, llen)) {
        shared.pclusters++;
        shared.bytes += bytes.byteLength;
        return hit.start;
      }
      if (hit !== undefined) key = undefined;
    }
    const pblk = block;
    await output.write(bytes, pblk * bs);
    block += blocks;
    if (key !== undefined) pclusters?.set(key, llen, { start: pblk, words: [], fragment: 0, fragmentOffset: 0, sparse: 0 });
    return pblk;
  }

  /** Whether the extent at `la` would be the only head of its compact pack (the previous extent is `rec`'s last so far). */
  function aloneInPack(rec: InodeRec, la: number, llen: number): boolean {
    const z = rec.z as NonNullable<InodeRec['z']>;
    const total = Math.ceil(rec.size / bs);
    const mine = compactPackOf(Math.floor(la / bs), total, z.headerPos);
    const prev = z.extents[z.extents.length - 1];
    if (prev !== undefined && compactPackOf(Math.floor(prev.la / bs), total, z.headerPos) === mine) return false;
    const end = la + llen;
    return end >= rec.size || compactPackOf(Math.floor(end / bs), total, z.headerPos) !== mine;
  }

  async function emit(rec: InodeRec, data: Uint8Array, dataPos: number): Promise<void> {
    const fullLen = rec.blocks * bs;
    if (rec.layout === DataLayout.flatInline) {
      if (fullLen > 0) await output.write(data.subarray(0, fullLen), dataPos);
      rec.tail = data.subarray(fullLen);
    } else if (fullLen > 0) {
      const padded = new Uint8Array(fullLen);
      padded.set(data);
      await output.write(padded, dataPos);
    }
  }
}

async function zeroGaps(output: ImageOutput, recs: readonly InodeRec[], start: number, end: number): Promise<void> {
  const used = recs.map((r) => [r.pos, r.z !== undefined ? r.z.headerPos + r.z.metaSize : r.pos + (r.extended ? EXTENDED_INODE_SIZE : COMPACT_INODE_SIZE) + r.xattrBody.byteLength + r.inlineLen + (r.chunkMap?.length ?? 0) * BLOCK_MAP_ENTRY_SIZE] as const).sort((a, b) => a[0] - b[0]);
  let at = start;
  for (const [s, e] of used) {
    if (s > at) await output.write(new Uint8Array(s - at), at);
    at = Math.max(at, e);
  }
  if (end > at) await output.write(new Uint8Array(end - at), at);
}

/** A UUID derived from the metadata (deterministic; version-4 style bits set). */
function defaultUuid(recs: readonly InodeRec[], mkfsTime: number, bs: number): Uint8Array {
  const h = createHash('sha256');
  h.update(`${mkfsTime}:${bs}:${recs.length}`);
  for (const r of recs) h.update(`${r.nid}:${r.size}:${r.node.type}:${r.node.mode}:${r.node.uid}:${r.node.gid}:${r.node.mtime};`);
  const u = Uint8Array.from(h.digest().subarray(0, 16));
  u[6] = ((u[6] as number) & 0x0f) | 0x40;
  u[8] = ((u[8] as number) & 0x3f) | 0x80;
  return u;
}

/**
 * The compressed files' segments, read in nid order and compressed up to `window` ahead of the one
 * asked for; `next(rec)` hands them back in order.
 */
function segmentQueue(zrecs: readonly InodeRec[], pool: SegmentCompressor, window: number, fragments: boolean): { next(rec: InodeRec): Promise<CompressedSegment> } {
  async function* read(): AsyncGenerator<{ rec: InodeRec; data: Uint8Array; last: boolean }> {
    for (const rec of zrecs) {
      const n = rec.node;
      if (n.type !== 'file') continue;
      // A carried file: only what follows its carried extents, read from the source file; segments
      // still end at multiples of SEGMENT_SIZE, so no two extents start in one lcluster.
      const carry = rec.carry;
      let at = carry?.until ?? 0;
      if (at >= rec.size) continue;
      let seg = new Uint8Array(Math.min(SEGMENT_SIZE - (at % SEGMENT_SIZE), rec.size - at));
      let fill = 0;
      const pieces = carry !== undefined ? rangePieces(await carry.reader.openFileDisk(await carry.reader.inode(carry.nid)), at, rec.size) : contentPieces(n.content, rec.size, 1 << 20);
      for await (const piece of pieces) {
        if (at + piece.byteLength > rec.size) throw new RangeError(`a file's content is longer than its size ${rec.size}`);
        let off = 0;
        while (off < piece.byteLength) {
          const take = Math.min(piece.byteLength - off, seg.byteLength - fill);
          seg.set(piece.subarray(off, off + take), fill);
          fill += take;
          off += take;
          at += take;
          if (fill === seg.byteLength) {
            yield { rec, data: seg, last: at === rec.size };
            seg = new Uint8Array(Math.min(SEGMENT_SIZE, rec.size - at));
            fill = 0;
          }
        }
      }
      if (at !== rec.size) throw new RangeError(`a file's content has ${at} bytes, its size says ${rec.size}`);
    }
  }
  const source = read();
  const ahead: { rec: InodeRec; result: Promise<CompressedSegment> }[] = [];
  let done = false;
  return {
    async next(rec) {
      while (!done && ahead.length < window) {
        const r = await source.next();
        if (r.done === true) done = true;
        else {
          const result = pool.compress(r.value.data, fragments && r.value.last);
          result.catch(() => {});
          ahead.push({ rec: r.value.rec, result });
        }
      }
      const first = ahead.shift();
      if (first === undefined || first.rec !== rec) throw new RangeError('compressed segments came out of order');
      return first.result;
    },
  };
}

/** `size` bytes of a Disk from `from` to `to`, in 1 MiB pieces. */
async function* rangePieces(disk: Disk, from: number, to: number): AsyncGenerator<Uint8Array> {
  for (let at = from; at < to; ) {
    const buf = new Uint8Array(Math.min(1 << 20, to - at));
    await disk.read(buf, at);
    at += buf.byteLength;
    yield buf;
  }
}

/**
 * Each file whose content equals an earlier one's (in nid order), mapped to that earlier one: by the
 * identity in `known` where a file has one (it is not read), else, with `hashing`, by its sha-256.
 */
async function duplicates(candidates: readonly InodeRec[], known: ReadonlyMap<InodeRec, string>, hashing: boolean): Promise<Map<InodeRec, InodeRec>> {
  const bySize = new Map<number, InodeRec[]>();
  for (const r of candidates) {
    if (!hashing && !known.has(r)) continue;
    const group = bySize.get(r.size);
    if (group === undefined) bySize.set(r.size, [r]);
    else group.push(r);
  }
  const out = new Map<InodeRec, InodeRec>();
  for (const group of bySize.values()) {
    if (group.length < 2) continue;
    const first = new Map<string, InodeRec>();
    for (const r of group) {
      if (r.node.type !== 'file') continue;
      const id = known.get(r);
      if (id !== undefined) {
        const seen = first.get(`c:${id}`);
        if (seen === undefined) first.set(`c:${id}`, r);
        else out.set(r, seen);
        continue;
      }
      const h = createHash('sha256');
      let at = 0;
      for await (const piece of contentPieces(r.node.content, r.size, 1 << 20)) {
        h.update(piece);
        at += piece.byteLength;
      }
      if (at !== r.size) throw new RangeError(`a file's content has ${at} bytes, its size says ${r.size}`);
      const key = h.digest('hex');
      const seen = first.get(key);
      if (seen === undefined) first.set(key, r);
      else out.set(r, seen);
    }
  }
  return out;
}
