/**
 * Compressed EROFS files for the writer: fixed-output pclusters cut from file segments, and the map
 * header with compact lcluster indexes that describe them.
 *
 * Design notes
 * - lclusters are one block (lclusterbits = blkszbits), so a file's index count, and with it its
 *   inode record, follows from its size alone: the writer places every record before any data is read.
 * - A file is cut into segments of SEGMENT_SIZE bytes, each compressed on its own (a pool job); no
 *   pcluster crosses a segment, so the image is the same whatever the thread count.
 * - Inside a segment, MicroLZMA fills a fixed output of up to pclusterSize bytes with as much input as
 *   fits (at most maxExtentInput). LZ4, DEFLATE and ZSTD have no such encoder here: the longest input
 *   prefix whose whole-buffer output fits is searched for, as erofs-utils does for ZSTD (estimate from
 *   the ratio so far, else bisect); DEFLATE is libdeflate's zlib stream without its header and
 *   trailer, i.e. raw deflate. The stream sits at the end of its blocks with zeros in front
 *   (ZERO_PADDING). When its blocks are not fewer than the bytes it took (rounded as erofs-utils
 *   does), that input is stored as plain one-block pclusters instead; so is input of at most a block
 *   at a segment's end. A file is kept compressed even when nothing in it compressed: its blocks are
 *   then no more than stored flat.
 * - Indexes: an lcluster in which an extent starts is its head (HEAD1 for compressed, PLAIN), with the
 *   extent start's offset inside it; the others are NONHEAD with delta[0] back to the head and
 *   delta[1] on to the next head. With big pclusters the first NONHEAD after a head carries CBLKCNT,
 *   its pcluster's block count. These are packed compact, 4B then 2B from a 32-byte boundary, as
 *   erofs-utils lays them out; each pack's base address is chosen so that the kernel's count of the
 *   heads before a head yields that head's block, and every head is checked against it.
 * - An extent's delta[0] must stay below CBLKCNT (2048), so an extent spans at most 2046 lclusters.
 * - Fragments: with them on, a file's last segment stops once the input left fits one pcluster (or
 *   one pcluster would take it whole); that tail goes to the packed inode and is the file's last
 *   extent, a HEAD1 without a pcluster (CBLKCNT 0 after it with big pclusters, as erofs-utils writes
 *   it), named by h_fragmentoff. A file that is all tail is a whole-file fragment: its map header
 *   alone (the index space the writer reserved stays zero). The packed inode, compressed the same
 *   way, follows all other data, its inode in a block of its own after its data; the long xattr
 *   prefixes lead its content, where the kernel looks for them when there is a packed inode.
 * - Dedupe (whole files): a file whose content equals an earlier one's takes that file's extents,
 *   pclusters and fragment as they are; only its own indexes are written (EROFS pclusters carry no
 *   owner, so several inodes may name them).
 * - When the last extent starts before the lcluster that holds EOF, that lcluster gets a PLAIN head
 *   at EOF, as erofs-utils writes it: the kernel maps a NONHEAD to its lcluster's end, so a NONHEAD
 *   there would make the last extent longer than the file (and than a plain pcluster).
 */
import { microLzmaEncode } from '../squashfs/comp/liblzma.ts';
import { lz4Encode } from '../squashfs/comp/liblz4.ts';
import { zlibEncode } from '../squashfs/comp/libdeflate.ts';
import { zstdEncode } from '../squashfs/comp/libzstd.ts';
import { UnsupportedFeatureError } from '../../errors.ts';
import {
  Advise, Algorithm, D0_CBLKCNT, encodeCompactPack, encodeMapHeader, LclusterType, MAP_HEADER_SIZE, PCLUSTER_MAX_SIZE, type CompactEntry, type ComprCfgs,
} from './zmap.ts';

export const SEGMENT_SIZE = 16 << 20;

/** What the pool needs to compress a segment: a plain object (it crosses to workers). */
export interface ZipConfig {
  readonly algorithm: number;
  readonly level: number;
  readonly blockSize: number;
  readonly pclusterSize: number;
  readonly dictSize: number;
}

export interface ZipSpec {
  readonly algorithm: number;
  readonly level: number;
}

const LZMA_MAX_DICT = 8 << 20;

/**
 * `ALG[,level=N]` as mkfs.erofs -z takes it: lzma (0..9, 100..109 for extreme presets; default 6),
 * lz4, lz4hc (12 only), deflate (1..12, default 9), zstd (1..22, default 3).
 */
export function parseCompression(spec: string): ZipSpec {
  const [name = '', ...opts] = spec.split(',');
  let level: number | undefined;
  for (const o of opts) {
    const m = /^level=(\d+)$/.exec(o);
    if (m === null) throw new RangeError(`compression option ${JSON.stringify(o)} is not level=N`);
    level = Number(m[1]);
  }
  switch (name.toLowerCase()) {
    case 'lzma': {
      const l = level ?? 6;
      if (!(l <= 9 || (l >= 100 && l <= 109))) throw new RangeError(`LZMA level ${l} is not 0..9 or 100..109`);
      return { algorithm: Algorithm.lzma, level: l };
    }
    case 'lz4':
      if (level !== undefined) throw new RangeError('lz4 takes no level (lz4hc does)');
      return { algorithm: Algorithm.lz4, level: 0 };
    case 'lz4hc':
      if (level !== undefined && level !== 12) throw new UnsupportedFeatureError('erofs', 'compression', `lz4hc level ${level} (the writer's LZ4HC runs at level 12 only)`);
      return { algorithm: Algorithm.lz4, level: 12 };
    case 'deflate': {
      const l = level ?? 9;
      if (l < 1 || l > 12) throw new RangeError(`DEFLATE level ${l} is not 1..12`);
      return { algorithm: Algorithm.deflate, level: l };
    }
    case 'zstd': {
      const l = level ?? 3;
      if (l < 1 || l > 22) throw new RangeError(`ZSTD level ${l} is not 1..22`);
      return { algorithm: Algorithm.zstd, level: l };
    }
    default:
      throw new RangeError(`${JSON.stringify(name)} is not an EROFS compression algorithm (lzma, lz4, lz4hc, deflate, zstd)`);
  }
}

/** The pool config for a spec at `blockSize` with pclusters up to `pclusterSize` bytes. */
export function zipConfig(spec: ZipSpec, blockSize: number, pclusterSize: number): ZipConfig {
  if (!Number.isInteger(pclusterSize) || pclusterSize < blockSize || pclusterSize > PCLUSTER_MAX_SIZE || pclusterSize % blockSize !== 0) {
    throw new RangeError(`pcluster size ${pclusterSize} is not a multiple of the block size in ${blockSize}..1 MiB`);
  }
  const dictSize = Math.max(32768, Math.min(LZMA_MAX_DICT, pclusterSize * 4));
  return { algorithm: spec.algorithm, level: spec.level, blockSize, pclusterSize, dictSize };
}

/** The compressor config records and the superblock's available_compr_algs for images using `c`. */
export function comprCfgsFor(c: ZipConfig): ComprCfgs {
  const algorithms = 1 << c.algorithm;
  switch (c.algorithm) {
    case Algorithm.lzma:
      return { algorithms, lzma: { dictSize: c.dictSize, format: 0 } };
    case Algorithm.lz4:
      return { algorithms, lz4: { maxDistance: 65535, maxPclusterBlocks: c.pclusterSize / c.blockSize } };
    case Algorithm.deflate:
      return { algorithms, deflate: { windowBits: 15 } };
    default:
      return { algorithms, zstd: { format: 0, windowLog: Math.ceil(Math.log2(maxExtentInput(c))) - 10 } };
  }
}

/** The longest prefix of `src` whose output from `encode` fits `cap` bytes; `out` undefined when a prefix of at most `cap` bytes does not compress at all. */
function fitPrefix(src: Uint8Array, cap: number, encode: (p: Uint8Array) => Uint8Array | undefined): { consumed: number; out: Uint8Array | undefined } {
  let l = 0;
  let lOut: Uint8Array | undefined;
  let r = src.byteLength + 1;
  let m = cap * 4;
  for (;;) {
    m = Math.min(Math.max(m, l + 1), r - 1);
    const out = encode(src.subarray(0, m));
    if (out !== undefined && out.byteLength > 0 && out.byteLength <= cap) {
      l = m;
      lOut = out;
      if (r <= l + 1 || out.byteLength + 1 >= cap) break;
      m = Math.floor((cap * m) / out.byteLength);
    } else {
      if (out === undefined && l === 0 && m <= cap) return { consumed: m, out: undefined };
      r = m;
      if (r <= l + 1) break;
      m = Math.floor((l + r) / 2);
    }
  }
  return { consumed: l, out: lOut };
}

function encodeFit(src: Uint8Array, c: ZipConfig): { consumed: number; out: Uint8Array | undefined } {
  switch (c.algorithm) {
    case Algorithm.lzma:
      return microLzmaEncode(src, lzmaPreset(c.level), c.dictSize, c.pclusterSize);
    case Algorithm.lz4:
      return fitPrefix(src, c.pclusterSize, (p) => lz4Encode(p, c.level > 0));
    case Algorithm.deflate:
      return fitPrefix(src, c.pclusterSize, (p) => {
        const z = zlibEncode(p, c.level);
        return z === undefined || z.byteLength <= 6 ? undefined : z.subarray(2, z.byteLength - 4);
      });
    default:
      return fitPrefix(src, c.pclusterSize, (p) => zstdEncode(p, c.level));
  }
}

export function bigPclusters(c: ZipConfig): boolean {
  return c.pclusterSize > c.blockSize;
}

function lzmaPreset(level: number): number {
  return level >= 100 ? (level - 100) | 0x80000000 : level;
}

/** The most input one extent takes (see the notes: delta[0] < CBLKCNT); ZSTD at most 1 MiB, the largest window the kernel accepts. */
export function maxExtentInput(c: ZipConfig): number {
  return Math.min(2046 * c.blockSize, 8000 * 1024, c.algorithm === Algorithm.zstd ? ZSTD_MAX_WINDOW : Infinity);
}

const ZSTD_MAX_WINDOW = 1 << 20;

/**
 * A compressed segment: `extents` as (length, blocks, plain 0/1) triples in file order, `data` the
 * pclusters' blocks one after another, then the `tail` bytes left for the packed inode.
 */
export interface CompressedSegment {
  readonly extents: number[];
  readonly data: Uint8Array;
  readonly tail: number;
}

/**
 * With `fragment` (a file's last segment, fragments on), the input left once it fits one pcluster, or
 * that one pcluster would take whole, is not compressed here but left as the tail.
 */
export function compressSegment(src: Uint8Array, c: ZipConfig, fragment = false): CompressedSegment {
  const bs = c.blockSize;
  if (c.algorithm > Algorithm.zstd) throw new UnsupportedFeatureError('erofs', 'compression', `algorithm ${c.algorithm} in the writer`);
  const extents: number[] = [];
  const parts: Uint8Array[] = [];
  const maxIn = maxExtentInput(c);
  const plain = (at: number, count: number): void => {
    const block = new Uint8Array(bs);
    block.set(src.subarray(at, at + count));
    extents.push(count, 1, 1);
    parts.push(block);
  };
  let pos = 0;
  let tail = 0;
  while (pos < src.byteLength) {
    const rest = src.byteLength - pos;
    if (fragment && rest <= c.pclusterSize) {
      tail = rest;
      break;
    }
    if (rest <= bs) {
      plain(pos, rest);
      break;
    }
    const { consumed, out } = encodeFit(src.subarray(pos, pos + Math.min(rest, maxIn)), c);
    const blocks = out === undefined ? Infinity : Math.ceil(out.byteLength / bs);
    if (fragment && consumed === rest && out !== undefined && out.byteLength < c.pclusterSize) {
      tail = rest;
      break;
    }
    if (out === undefined || consumed <= 0 || blocks * bs >= consumed) {
      const n = Math.max(1, Math.floor(Math.max(consumed, 0) / bs));
      for (let i = 0; i < n && pos < src.byteLength; i++) {
        const count = Math.min(bs, src.byteLength - pos);
        plain(pos, count);
        pos += count;
      }
      continue;
    }
    const pcluster = new Uint8Array(blocks * bs);
    pcluster.set(out, pcluster.byteLength - out.byteLength);
    extents.push(consumed, blocks, 0);
    parts.push(pcluster);
    pos += consumed;
  }
  parts.push(src.subarray(src.byteLength - tail));
  const data = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  let at = 0;
  for (const p of parts) {
    data.set(p, at);
    at += p.byteLength;
  }
  return { extents, data, tail };
}

// ---- indexes ----

/** One extent of a compressed file: where it starts in the file, its length, its pcluster (none for the fragment, the last extent, in the packed inode). */
export interface ZExtent {
  readonly la: number;
  readonly length: number;
  readonly pblk: number;
  readonly blocks: number;
  readonly plain: boolean;
  readonly fragment?: boolean;
}

interface PackPlan {
  readonly initial4B: number;
  readonly twoB: number;
  readonly end4B: number;
}

function packPlan(total: number, ebase: number): PackPlan {
  let initial4B = ((32 - (ebase % 32)) / 4) & 7;
  if (initial4B > total) return { initial4B: 0, twoB: 0, end4B: total };
  const twoB = Math.floor((total - initial4B) / 16) * 16;
  return { initial4B, twoB, end4B: total - initial4B - twoB };
}

/**
 * Which compact pack holds lcluster `l` of a file of `total` lclusters whose map header is at image
 * offset `headerPos`: heads in one pack must have their pclusters one after another, heads alone in
 * their pack may point anywhere.
 */
export function compactPackOf(l: number, total: number, headerPos: number): number {
  const p = packPlan(total, headerPos + MAP_HEADER_SIZE);
  if (l < p.initial4B) return Math.floor(l / 2);
  if (l < p.initial4B + p.twoB) return p.initial4B / 2 + Math.floor((l - p.initial4B) / 16);
  return p.initial4B / 2 + p.twoB / 16 + Math.floor((l - p.initial4B - p.twoB) / 2);
}

/** Bytes of the map header and compact indexes of a `size`-byte file whose header is at image offset `headerPos` (8-aligned). */
export function compactMetaSize(size: number, blockSize: number, headerPos: number): number {
  if (headerPos % 8 !== 0) throw new RangeError(`a map header at ${headerPos} is not 8-byte aligned`);
  const p = packPlan(Math.ceil(size / blockSize), headerPos + MAP_HEADER_SIZE);
  return MAP_HEADER_SIZE + p.initial4B * 4 + p.twoB * 2 + Math.ceil(p.end4B / 2) * 8;
}

/** How the kernel counts the blocks before the head at `i` of a pack (the pack's base address plus this is the head's block). */
function blocksBefore(e: readonly CompactEntry[], i: number, big: boolean): number {
  let blocks = 0;
  if (!big) {
    blocks = 1;
    for (let k = i; k > 0; ) {
      k--;
      if ((e[k] as CompactEntry).type === LclusterType.nonhead) k -= (e[k] as CompactEntry).lo;
      if (k >= 0) blocks++;
    }
    return blocks;
  }
  for (let k = i; k > 0; ) {
    k--;
    const p = e[k] as CompactEntry;
    if (p.type === LclusterType.nonhead) {
      if (p.lo & D0_CBLKCNT) {
        k--;
        blocks += p.lo & ~D0_CBLKCNT;
      } else k -= p.lo - 2;
      continue;
    }
    blocks++;
  }
  return blocks;
}

/**
 * The map header and compact indexes of a `size`-byte file made of `extents` (in order, covering it),
 * its header at image offset `headerPos`; with `interlaced`, its plain pclusters are INTERLACED (each
 * block rotated by its extent start's offset in its lcluster, as mkfs.erofs 1.8 stores them).
 */
export function encodeCompactIndexes(extents: readonly ZExtent[], size: number, blockSize: number, headerPos: number, algorithm: number, big: boolean, fragmentOffset?: number, interlaced = false): Uint8Array {
  const bs = blockSize;
  const frag = extents.findIndex((x) => x.fragment === true);
  if (frag >= 0 && (frag !== extents.length - 1 || fragmentOffset === undefined)) throw new RangeError('only the last extent can be the fragment, and it needs its offset');
  if (frag < 0 && fragmentOffset !== undefined) throw new RangeError('a fragment offset without a fragment extent');
  if (fragmentOffset !== undefined && (!Number.isSafeInteger(fragmentOffset) || fragmentOffset < 0)) throw new RangeError(`fragment offset ${fragmentOffset}`);
  if (frag === 0) {
    if ((extents[0] as ZExtent).length !== size) throw new RangeError(`a whole-file fragment of ${(extents[0] as ZExtent).length} bytes for a ${size}-byte file`);
    return encodeMapHeader({ wholeFileFragment: true, fragmentOffset: fragmentOffset as number });
  }
  if (fragmentOffset !== undefined && fragmentOffset > 0xffffffff) throw new RangeError(`fragment offset ${fragmentOffset} does not fit compact indexes' 32 bits`);
  const total = Math.ceil(size / bs);
  const lclusterBits = Math.log2(bs);
  const heads = new Array<ZExtent | undefined>(total);
  let end = 0;
  for (const x of extents) {
    if (x.la !== end || x.length <= 0) throw new RangeError(`extent at ${x.la} does not follow the one ending at ${end}`);
    end += x.length;
    const l = Math.floor(x.la / bs);
    if (heads[l] !== undefined) throw new RangeError(`two extents start in lcluster ${l}`);
    if (x.fragment === true) {
      if (x.blocks !== 0) throw new RangeError('the fragment extent has blocks');
    } else if (x.blocks < 1 || x.blocks * bs > PCLUSTER_MAX_SIZE || (!big && x.blocks !== 1)) throw new RangeError(`a pcluster of ${x.blocks} blocks`);
    heads[l] = x;
  }
  if (end !== size) throw new RangeError(`extents cover ${end} bytes of a ${size}-byte file`);
  const type = new Array<number>(total);
  const d0 = new Array<number>(total).fill(0);
  const d1 = new Array<number>(total).fill(0);
  const ofs = new Array<number>(total).fill(0);
  // The lcluster holding EOF, when no extent starts in it, is a PLAIN head at EOF (no pcluster):
  // the kernel maps a NONHEAD there up to the lcluster's end, past the last extent.
  const eofHead = size % bs !== 0 && heads[total - 1] === undefined ? total - 1 : -1;
  let head = -1;
  for (let l = 0; l < total; l++) {
    const h = heads[l];
    if (l === eofHead) {
      type[l] = LclusterType.plain;
      ofs[l] = size % bs;
      continue;
    }
    if (h !== undefined) {
      head = l;
      type[l] = h.plain && h.fragment !== true ? LclusterType.plain : LclusterType.head1;
      ofs[l] = h.la % bs;
      continue;
    }
    type[l] = LclusterType.nonhead;
    const back = l - head;
    if (back >= D0_CBLKCNT) throw new RangeError(`lcluster ${l} is ${back} lclusters past its head`);
    d0[l] = back;
    if (big && l === head + 1) d0[l] = D0_CBLKCNT | (heads[head] as ZExtent).blocks;
  }
  heads.forEach((h, l) => {
    if (h !== undefined && h.blocks > 1 && type[l + 1] !== LclusterType.nonhead) throw new RangeError(`the ${h.blocks}-block pcluster at lcluster ${l} has no NONHEAD after it for its CBLKCNT`);
  });
  let next = total;
  for (let l = total - 1; l >= 0; l--) {
    if (type[l] !== LclusterType.nonhead) next = l;
    else d1[l] = next - l;
  }
  const lo = (l: number, last: boolean): number => {
    if (type[l] !== LclusterType.nonhead) return ofs[l] as number;
    if ((d0[l] as number) & D0_CBLKCNT) return d0[l] as number;
    return last ? Math.min(d1[l] as number, D0_CBLKCNT - 1) : (d0[l] as number);
  };
  const plan = packPlan(total, headerPos + MAP_HEADER_SIZE);
  const parts: Uint8Array[] = [
    encodeMapHeader({
      wholeFileFragment: false, word0: fragmentOffset ?? 0, algorithmType: algorithm, clusterBits: 0,
      advise: Advise.compacted2B | (big ? Advise.bigPcluster1 | Advise.bigPcluster2 : 0) | (fragmentOffset !== undefined ? Advise.fragmentPcluster : 0) | (interlaced ? Advise.interlacedPcluster : 0),
    }),
  ];
  let running = 0;
  const pack = (first: number, vcnt: number, twoByte: boolean): void => {
    const entries: CompactEntry[] = [];
    for (let i = 0; i < vcnt; i++) {
      const l = first + i;
      entries.push(l < total ? { type: type[l] as number, lo: lo(l, i + 1 === vcnt) } : { type: LclusterType.plain, lo: 0 });
    }
    let blkaddr = running;
    const headAt = (i: number): ZExtent | undefined => {
      const h = first + i < total ? heads[first + i] : undefined;
      return h?.fragment === true ? undefined : h;
    };
    const i0 = entries.findIndex((_, i) => headAt(i) !== undefined);
    if (i0 >= 0) blkaddr = (headAt(i0) as ZExtent).pblk - blocksBefore(entries, i0, big);
    for (let i = 0; i < vcnt; i++) {
      const h = headAt(i);
      if (h !== undefined && blkaddr + blocksBefore(entries, i, big) !== h.pblk) throw new RangeError(`compact pack at lcluster ${first}: head ${i} would map to the wrong block`);
    }
    if (blkaddr < 0 || blkaddr > 0xffffffff) throw new RangeError(`compact pack base block ${blkaddr}`);
    running = blkaddr;
    parts.push(encodeCompactPack({ entries, blkaddr }, twoByte, lclusterBits));
  };
  let l = 0;
  for (; l < plan.initial4B; l += 2) pack(l, 2, false);
  for (; l < plan.initial4B + plan.twoB; l += 16) pack(l, 16, true);
  for (; l < total; l += 2) pack(l, 2, false);
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.byteLength;
  }
  if (out.byteLength !== compactMetaSize(size, bs, headerPos)) throw new RangeError('compact indexes came out at an unexpected size');
  return out;
}
