/**
 * Compressed EROFS files: the map header, lcluster indexes (8-byte full ones and the compact 4B/2B
 * packs), compressor config records, and ZMapper, which maps a file offset to its logical extent and
 * decodes that extent.
 *
 * Design notes
 * - A file is cut into logical clusters (lclusters, 2^lclusterbits bytes). Each has an index: HEAD1 /
 *   HEAD2 / PLAIN start a new extent at `clusterofs` inside the lcluster and name the pcluster's
 *   first block; NONHEAD ones carry delta[0] (back to their head) and delta[1] (on to the next head),
 *   and the first NONHEAD after a head may carry CBLKCNT, the pcluster's block count (big pclusters).
 * - Compact indexes pack 2 (4B) or 16 (2B) lclusters into 8 or 32 bytes: per lcluster a `lo` value
 *   and a 2-bit type in `encodebits` bits, then a u32 base block address. A head's block is the base
 *   plus the blocks of the heads before it in the pack (counted via their CBLKCNT or one each); the
 *   last NONHEAD in a pack stores delta[1] rather than delta[0]. Packs start 4B, switch to 2B at a
 *   32-byte boundary when COMPACTED_2B is advised, and end 4B for the remainder not filling 16.
 * - An extent here is always taken whole: from its head to the next head (or EOF), so a pcluster is
 *   decoded once to exactly its extent's length; only PARTIAL_REF extents (dedupe: the pcluster
 *   decodes to more than the extent) are decoded with room and cut.
 * - The tail extent may live inline after the indexes (ztailpacking: h_idata_size bytes, never crossing
 *   a block) or in the packed inode (fragments: at h_fragmentoff; the whole file when bit 7 of
 *   h_clusterbits is set). PLAIN pclusters are stored as is, or rotated by the extent start's
 *   offset inside its block (INTERLACED).
 * - Every lookback / lookahead walk is bounded by the lcluster count; every length by the format's
 *   limits (1 MiB encoded, 12 MiB decoded per pcluster) and the image.
 */
import { constants as zlibConstants, inflateRawSync } from 'node:zlib';
import { CorruptImageError, UnsupportedFeatureError } from '../../errors.ts';
import { view } from '../../io/bytes.ts';
import { lz4Decode } from '../squashfs/comp/liblz4.ts';
import { zstdDecode } from '../squashfs/comp/libzstd.ts';
import { microLzmaDecode } from '../squashfs/comp/liblzma.ts';
import { DataLayout, type Inode } from './inode.ts';
import { WeightedLru } from '../../io/lru.ts';
import { lz4DecodePrefix } from './lz4partial.ts';
import { Incompat, type Superblock } from './superblock.ts';

export const MAP_HEADER_SIZE = 8;
export const LCLUSTER_INDEX_SIZE = 8;
export const PCLUSTER_MAX_SIZE = 1 << 20;
export const PCLUSTER_MAX_DSIZE = 12 << 20;

export const Algorithm = { lz4: 0, lzma: 1, deflate: 2, zstd: 3 } as const;
export const ALGORITHM_NAMES = ['LZ4', 'LZMA', 'DEFLATE', 'ZSTD'] as const;

/** The compressors an image may use: the config bitmap with COMPR_CFGS, else LZ4 where 0PADDING says compressed data may be present. */
export function imageAlgorithms(sb: Superblock): Array<(typeof ALGORITHM_NAMES)[number]> {
  if (sb.featureIncompat & Incompat.comprCfgs) return ALGORITHM_NAMES.filter((_, i) => sb.u1 & (1 << i));
  return sb.featureIncompat & Incompat.lz4ZeroPadding ? ['LZ4'] : [];
}

export const Advise = {
  compacted2B: 0x1,
  extents: 0x1,
  bigPcluster1: 0x2,
  bigPcluster2: 0x4,
  inlinePcluster: 0x8,
  interlacedPcluster: 0x10,
  fragmentPcluster: 0x20,
} as const;

export const LclusterType = { plain: 0, head1: 1, nonhead: 2, head2: 3 } as const;
export const PARTIAL_REF = 1 << 15;
export const D0_CBLKCNT = 1 << 11;
const FRAGMENT_INODE_BIT = 0x80;

// ---- map header ----

export type MapHeader =
  | { readonly wholeFileFragment: true; readonly fragmentOffset: number }
  | {
      readonly wholeFileFragment: false;
      /** h_fragmentoff, or (h_reserved1 | h_idata_size << 16). */
      readonly word0: number;
      readonly advise: number;
      readonly algorithmType: number;
      readonly clusterBits: number;
    };

export function decodeMapHeader(bytes: Uint8Array, pos = 0): MapHeader {
  if (bytes.byteLength < MAP_HEADER_SIZE) throw new CorruptImageError('erofs', 'z_erofs_map_header', 'truncated', pos);
  const dv = view(bytes);
  const clusterBits = dv.getUint8(7);
  if (clusterBits & FRAGMENT_INODE_BIT) {
    const v = dv.getBigUint64(0, true) & ~(1n << 63n);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new CorruptImageError('erofs', 'z_erofs_map_header.h_fragmentoff', `${v} is out of range`, pos);
    return { wholeFileFragment: true, fragmentOffset: Number(v) };
  }
  return { wholeFileFragment: false, word0: dv.getUint32(0, true), advise: dv.getUint16(4, true), algorithmType: dv.getUint8(6), clusterBits };
}

export function encodeMapHeader(h: MapHeader): Uint8Array {
  const out = new Uint8Array(MAP_HEADER_SIZE);
  const dv = view(out);
  if (h.wholeFileFragment) {
    dv.setBigUint64(0, BigInt(h.fragmentOffset) | (1n << 63n), true);
    return out;
  }
  dv.setUint32(0, h.word0 >>> 0, true);
  dv.setUint16(4, h.advise, true);
  dv.setUint8(6, h.algorithmType);
  dv.setUint8(7, h.clusterBits);
  return out;
}

// ---- full lcluster index ----

export interface LclusterIndex {
  readonly advise: number;
  readonly clusterOfs: number;
  /** blkaddr for heads; delta[0] | delta[1] << 16 for NONHEAD. */
  readonly u: number;
}

export function decodeLclusterIndex(bytes: Uint8Array, at = 0, pos = 0): LclusterIndex {
  if (at + LCLUSTER_INDEX_SIZE > bytes.byteLength) throw new CorruptImageError('erofs', 'z_erofs_lcluster_index', 'truncated', pos + at);
  const dv = view(bytes);
  return { advise: dv.getUint16(at, true), clusterOfs: dv.getUint16(at + 2, true), u: dv.getUint32(at + 4, true) };
}

export function encodeLclusterIndex(i: LclusterIndex): Uint8Array {
  const out = new Uint8Array(LCLUSTER_INDEX_SIZE);
  const dv = view(out);
  dv.setUint16(0, i.advise, true);
  dv.setUint16(2, i.clusterOfs, true);
  dv.setUint32(4, i.u >>> 0, true);
  return out;
}

// ---- compact packs ----

export interface CompactEntry {
  readonly type: number;
  readonly lo: number;
}

export interface CompactPack {
  readonly entries: readonly CompactEntry[];
  readonly blkaddr: number;
}

/** Pack geometry: 4B packs hold 2 lclusters in 8 bytes, 2B packs 16 in 32 bytes. */
export function packGeometry(twoByte: boolean, lclusterBits: number): { vcnt: number; size: number; encodeBits: number; loBits: number } {
  const vcnt = twoByte ? 16 : 2;
  const size = twoByte ? 32 : 8;
  return { vcnt, size, encodeBits: ((size - 4) * 8) / vcnt, loBits: Math.max(lclusterBits, 12) };
}

export function decodeCompactPack(bytes: Uint8Array, twoByte: boolean, lclusterBits: number, pos = 0): CompactPack {
  const g = packGeometry(twoByte, lclusterBits);
  if (bytes.byteLength < g.size) throw new CorruptImageError('erofs', 'compact index pack', 'truncated', pos);
  if (g.loBits + 2 > g.encodeBits) throw new UnsupportedFeatureError('erofs', 'LCLUSTERBITS', `${lclusterBits}-bit lclusters in ${twoByte ? '2B' : '4B'} compact indexes`);
  const dv = view(bytes);
  const entries: CompactEntry[] = [];
  for (let i = 0; i < g.vcnt; i++) {
    const bit = g.encodeBits * i;
    const byte = bit >> 3;
    const v = (byte + 4 <= g.size ? dv.getUint32(byte, true) : dv.getUint16(byte, true)) >>> (bit & 7);
    entries.push({ lo: v & ((1 << g.loBits) - 1), type: (v >>> g.loBits) & 3 });
  }
  return { entries, blkaddr: dv.getUint32(g.size - 4, true) };
}

export function encodeCompactPack(p: CompactPack, twoByte: boolean, lclusterBits: number): Uint8Array {
  const g = packGeometry(twoByte, lclusterBits);
  const out = new Uint8Array(g.size);
  p.entries.forEach((e, i) => {
    const value = (e.lo & ((1 << g.loBits) - 1)) | ((e.type & 3) << g.loBits);
    for (let b = 0; b < g.loBits + 2; b++) {
      if ((value >>> b) & 1) {
        const bit = g.encodeBits * i + b;
        out[bit >> 3] = (out[bit >> 3] as number) | (1 << (bit & 7));
      }
    }
  });
  view(out).setUint32(g.size - 4, p.blkaddr >>> 0, true);
  return out;
}

// ---- compressor configs ----

export interface ComprCfgs {
  readonly lz4?: { readonly maxDistance: number; readonly maxPclusterBlocks: number };
  readonly lzma?: { readonly dictSize: number; readonly format: number };
  readonly deflate?: { readonly windowBits: number };
  readonly zstd?: { readonly format: number; readonly windowLog: number };
  /** The algorithms bitmap (available_compr_algs). */
  readonly algorithms?: number;
}

const CFG_SIZES = [14, 14, 6, 6];

/** The records after the superblock, one per algorithm in `algorithms` (bit order), each `u16 len` + body, 4-aligned. */
export function decodeComprCfgs(bytes: Uint8Array, algorithms: number, pos = 0): ComprCfgs {
  if (algorithms & ~0xf) throw new UnsupportedFeatureError('erofs', 'COMPRESSION_ALGORITHM', `available_compr_algs 0x${algorithms.toString(16)} names an unknown algorithm`);
  const out: { -readonly [K in keyof ComprCfgs]: ComprCfgs[K] } = { algorithms };
  let at = 0;
  for (let alg = 0; alg < 4; alg++) {
    if (!(algorithms & (1 << alg))) continue;
    at = (at + 3) & ~3;
    if (at + 2 > bytes.byteLength) throw new CorruptImageError('erofs', 'compr_cfgs', `the ${ALGORITHM_NAMES[alg]} record runs past the superblock block`, pos + at);
    const len = view(bytes).getUint16(at, true);
    const body = bytes.subarray(at + 2, at + 2 + len);
    if (len < (CFG_SIZES[alg] as number) || len > 256 || body.byteLength !== len) {
      throw new CorruptImageError('erofs', 'compr_cfgs.len', `the ${ALGORITHM_NAMES[alg]} record is ${len} bytes, expected ${CFG_SIZES[alg]}`, pos + at);
    }
    const dv = view(body);
    const where = pos + at + 2;
    if (alg === Algorithm.lz4) out.lz4 = { maxDistance: dv.getUint16(0, true), maxPclusterBlocks: dv.getUint16(2, true) };
    else if (alg === Algorithm.lzma) {
      const dictSize = dv.getUint32(0, true);
      const format = dv.getUint16(4, true);
      if (dictSize < 4096 || dictSize > 8 * PCLUSTER_MAX_SIZE) throw new CorruptImageError('erofs', 'lzma_cfgs.dict_size', `${dictSize} is outside 4 KiB .. 8 MiB`, where);
      if (format !== 0) throw new UnsupportedFeatureError('erofs', 'LZMA_FORMAT', `format ${format}`);
      out.lzma = { dictSize, format };
    } else if (alg === Algorithm.deflate) {
      const windowBits = dv.getUint8(0);
      if (windowBits < 8 || windowBits > 15) throw new CorruptImageError('erofs', 'deflate_cfgs.windowbits', `${windowBits} is outside 8..15`, where);
      out.deflate = { windowBits };
    } else {
      const format = dv.getUint8(0);
      const windowLog = dv.getUint8(1);
      if (format !== 0) throw new UnsupportedFeatureError('erofs', 'ZSTD_FORMAT', `format ${format}`);
      if (windowLog + 10 > 27) throw new CorruptImageError('erofs', 'zstd_cfgs.windowlog', `window 2^${windowLog + 10} is too large`, where + 1);
      out.zstd = { format, windowLog };
    }
    at += 2 + len;
  }
  return out;
}

export function encodeComprCfgs(c: ComprCfgs): Uint8Array {
  const parts: number[] = [];
  const algorithms = c.algorithms ?? 0;
  for (let alg = 0; alg < 4; alg++) {
    if (!(algorithms & (1 << alg))) continue;
    while (parts.length % 4 !== 0) parts.push(0);
    const body = new Uint8Array(CFG_SIZES[alg] as number);
    const dv = view(body);
    if (alg === Algorithm.lz4) {
      dv.setUint16(0, c.lz4?.maxDistance ?? 0, true);
      dv.setUint16(2, c.lz4?.maxPclusterBlocks ?? 0, true);
    } else if (alg === Algorithm.lzma) {
      dv.setUint32(0, c.lzma?.dictSize ?? 0, true);
      dv.setUint16(4, c.lzma?.format ?? 0, true);
    } else if (alg === Algorithm.deflate) dv.setUint8(0, c.deflate?.windowBits ?? 15);
    else {
      dv.setUint8(0, c.zstd?.format ?? 0);
      dv.setUint8(1, c.zstd?.windowLog ?? 0);
    }
    parts.push(body.byteLength & 0xff, body.byteLength >> 8, ...body);
  }
  return Uint8Array.from(parts);
}

// ---- mapping ----

interface Lcluster {
  readonly lcn: number;
  readonly type: number;
  readonly clusterOfs: number;
  readonly pblk: number;
  readonly delta0: number;
  readonly delta1: number;
  /** From CBLKCNT (0 when absent). */
  readonly compressedBlocks: number;
  readonly partialRef: boolean;
  /** First byte after this index's pack (where an inline tail pcluster follows the last one). */
  readonly nextPackOff: number;
}

interface ZInfo {
  readonly wholeFragment: boolean;
  readonly advise: number;
  readonly algorithms: readonly [number, number];
  readonly lclusterBits: number;
  readonly idataSize: number;
  fragmentOffset: number;
  tailHeadLcn: number;
  tailPos: number;
  /** The map header's position. */
  readonly headerPos: number;
}

export interface Extent {
  readonly la: number;
  readonly llen: number;
  readonly source: 'fragment' | 'inline' | 'blocks';
  /** Image offset (blocks, inline) or packed-inode offset (fragment). */
  readonly pa: number;
  readonly plen: number;
  /** 0..3, or 'shifted' / 'interlaced' for PLAIN pclusters. */
  readonly algorithm: number | 'shifted' | 'interlaced';
  readonly partialRef: boolean;
}

export interface ZMapperHost {
  readonly superblock: Superblock;
  readonly cfgs: ComprCfgs;
  readonly imageSize: number;
  readonly cacheBytes: number;
  meta(pos: number, len: number): Promise<Uint8Array>;
  raw(pos: number, len: number): Promise<Uint8Array>;
  packed(buf: Uint8Array, offset: number): Promise<void>;
}

export class ZMapper {
  readonly #host: ZMapperHost;
  readonly #bs: number;
  readonly #infos = new WeakMap<Inode, ZInfo>();
  readonly #data: WeightedLru<string, Uint8Array>;
  /**
   * The packed inode's decoded extents, apart: fragments are read between other files' extents, which
   * would otherwise evict the extent the next fragment is in (an extent decodes to several MiB).
   * Bounded, like the other caches, whatever the image.
   */
  readonly #packedData: WeightedLru<string, Uint8Array>;

  constructor(host: ZMapperHost) {
    this.#host = host;
    this.#bs = 2 ** host.superblock.blkszbits;
    this.#data = new WeightedLru(host.cacheBytes);
    // Room for a few of the largest extents, so a fragment that crosses from one to the next does not
    // decode each again.
    this.#packedData = new WeightedLru(Math.max(host.cacheBytes, 3 * PCLUSTER_MAX_DSIZE));
  }

  #corrupt(inode: Inode, field: string, message: string, pos?: number): CorruptImageError {
    return new CorruptImageError('erofs', field, `nid ${inode.nid}: ${message}`, pos);
  }

  async #info(inode: Inode): Promise<ZInfo> {
    const known = this.#infos.get(inode);
    if (known !== undefined) return known;
    const sb = this.#host.superblock;
    const headerPos = Math.ceil(inode.bodyPos / 8) * 8;
    const h = decodeMapHeader(await this.#host.meta(headerPos, MAP_HEADER_SIZE), headerPos);
    let info: ZInfo;
    if (h.wholeFileFragment) {
      info = { wholeFragment: true, advise: Advise.fragmentPcluster, algorithms: [0, 0], lclusterBits: sb.blkszbits, idataSize: 0, fragmentOffset: h.fragmentOffset, tailHeadLcn: 0, tailPos: 0, headerPos };
    } else {
      if (inode.layout === DataLayout.compressedFull && h.advise & Advise.extents) throw new UnsupportedFeatureError('erofs', 'EXTENTS', `nid ${inode.nid}: extent records (erofs-utils 1.9)`);
      const lclusterBits = sb.blkszbits + (h.clusterBits & 15);
      if (h.clusterBits & 0x70) throw this.#corrupt(inode, 'z_erofs_map_header.h_clusterbits', `reserved bits set in 0x${h.clusterBits.toString(16)}`, headerPos + 7);
      if (lclusterBits > 20) throw this.#corrupt(inode, 'z_erofs_map_header.h_clusterbits', `2^${lclusterBits}-byte lclusters`, headerPos + 7);
      const algorithms: [number, number] = [h.algorithmType & 15, h.algorithmType >> 4];
      const fragment = (h.advise & Advise.fragmentPcluster) !== 0;
      const idataSize = !fragment && h.advise & Advise.inlinePcluster ? h.word0 >>> 16 : 0;
      if (fragment && !(sb.featureIncompat & Incompat.fragments)) throw this.#corrupt(inode, 'z_erofs_map_header.h_advise', 'a fragment without the FRAGMENTS feature', headerPos + 4);
      if (idataSize && !(sb.featureIncompat & Incompat.ztailpacking)) throw this.#corrupt(inode, 'z_erofs_map_header.h_advise', 'an inline pcluster without the ZTAILPACKING feature', headerPos + 4);
      if (inode.layout === DataLayout.compressedCompact && !(h.advise & Advise.bigPcluster1) !== !(h.advise & Advise.bigPcluster2)) {
        throw this.#corrupt(inode, 'z_erofs_map_header.h_advise', 'compact indexes need both or neither big-pcluster advice', headerPos + 4);
      }
      if (idataSize > this.#bs) throw this.#corrupt(inode, 'z_erofs_map_header.h_idata_size', `${idataSize} is more than a block`, headerPos + 2);
      info = { wholeFragment: false, advise: h.advise, algorithms, lclusterBits, idataSize, fragmentOffset: fragment ? h.word0 : 0, tailHeadLcn: -1, tailPos: 0, headerPos };
      if (inode.size > 0 && (idataSize > 0 || fragment)) {
        const tail = await this.#locate(inode, info, inode.size - 1, true);
        info.tailHeadLcn = tail.head.lcn;
        info.tailPos = tail.firstNextPackOff;
        if (fragment && inode.layout === DataLayout.compressedFull) info.fragmentOffset += tail.head.pblk * 2 ** 32;
        if (fragment && tail.head.lcn === 0) info = { ...info, wholeFragment: true };
      }
    }
    this.#infos.set(inode, info);
    return info;
  }

  #lclusterCount(inode: Inode, info: ZInfo): number {
    return Math.ceil(inode.size / 2 ** info.lclusterBits);
  }

  async #load(inode: Inode, info: ZInfo, lcn: number, lookahead: boolean): Promise<Lcluster> {
    const bits = info.lclusterBits;
    const big1 = (info.advise & Advise.bigPcluster1) !== 0;
    const big2 = (info.advise & Advise.bigPcluster2) !== 0;
    if (lcn < 0 || lcn >= this.#lclusterCount(inode, info)) throw this.#corrupt(inode, 'z_erofs_lcluster_index', `lcluster ${lcn} is outside the file`);
    let rec: Lcluster;
    if (inode.layout === DataLayout.compressedFull) {
      const pos = info.headerPos + MAP_HEADER_SIZE + 8 + lcn * LCLUSTER_INDEX_SIZE;
      const di = decodeLclusterIndex(await this.#host.meta(pos, LCLUSTER_INDEX_SIZE), 0, pos);
      const type = di.advise & 3;
      if (type === LclusterType.nonhead) {
        let delta0 = di.u & 0xffff;
        let compressedBlocks = 0;
        if (delta0 & D0_CBLKCNT) {
          if (!(big1 || big2)) throw this.#corrupt(inode, 'z_erofs_lcluster_index.delta', `CBLKCNT at lcluster ${lcn} without big pclusters`, pos + 4);
          compressedBlocks = delta0 & ~D0_CBLKCNT;
          delta0 = 1;
        }
        rec = { lcn, type, clusterOfs: 2 ** bits, pblk: 0, delta0, delta1: di.u >>> 16, compressedBlocks, partialRef: false, nextPackOff: pos + 8 };
      } else {
        rec = { lcn, type, clusterOfs: di.clusterOfs, pblk: di.u >>> 0, delta0: 0, delta1: 0, compressedBlocks: 0, partialRef: (di.advise & PARTIAL_REF) !== 0, nextPackOff: pos + 8 };
      }
    } else {
      rec = await this.#loadCompact(inode, info, lcn, lookahead, big1);
    }
    if (rec.type !== LclusterType.nonhead && rec.clusterOfs >= 2 ** bits) throw this.#corrupt(inode, 'z_erofs_lcluster_index.di_clusterofs', `${rec.clusterOfs} at lcluster ${lcn} is past the lcluster`);
    return rec;
  }

  async #loadCompact(inode: Inode, info: ZInfo, lcn: number, lookahead: boolean, big: boolean): Promise<Lcluster> {
    const bits = info.lclusterBits;
    const ebase = info.headerPos + MAP_HEADER_SIZE;
    const total = Math.ceil(inode.size / this.#bs);
    const initial4B = ((32 - (ebase % 32)) / 4) & 7;
    const twoByteCount = info.advise & Advise.compacted2B && initial4B < total ? Math.floor((total - initial4B) / 16) * 16 : 0;
    let pos = ebase;
    let twoByte = false;
    let rel = lcn;
    if (rel >= initial4B) {
      pos += initial4B * 4;
      rel -= initial4B;
      if (rel < twoByteCount) twoByte = true;
      else {
        pos += twoByteCount * 2;
        rel -= twoByteCount;
      }
    }
    pos += rel * (twoByte ? 2 : 4);
    const g = packGeometry(twoByte, bits);
    if (twoByte ? bits > 12 : bits > 14) throw new UnsupportedFeatureError('erofs', 'LCLUSTERBITS', `nid ${inode.nid}: 2^${bits}-byte lclusters with compact indexes`);
    const packStart = pos - (pos % g.size);
    const pack = decodeCompactPack(await this.#host.meta(packStart, g.size), twoByte, bits, packStart);
    const i = (pos - packStart) / (twoByte ? 2 : 4);
    const e = pack.entries;
    const at = (k: number): CompactEntry => e[k] as CompactEntry;
    const cur = at(i);
    const nextPackOff = packStart + g.size;
    if (cur.type === LclusterType.nonhead) {
      let delta1 = 0;
      if (lookahead) {
        let k = i;
        let d1 = 0;
        for (; k < g.vcnt && at(k).type === LclusterType.nonhead; k++) d1++;
        if (k === g.vcnt && !(at(g.vcnt - 1).lo & D0_CBLKCNT)) d1 += at(g.vcnt - 1).lo - 1;
        delta1 = d1;
      }
      if (cur.lo & D0_CBLKCNT) {
        if (!big) throw this.#corrupt(inode, 'compact index', `CBLKCNT at lcluster ${lcn} without big pclusters`, packStart);
        return { lcn, type: cur.type, clusterOfs: 2 ** bits, pblk: 0, delta0: 1, delta1, compressedBlocks: cur.lo & ~D0_CBLKCNT, partialRef: false, nextPackOff };
      }
      if (i + 1 !== g.vcnt) return { lcn, type: cur.type, clusterOfs: 2 ** bits, pblk: 0, delta0: cur.lo, delta1, compressedBlocks: 0, partialRef: false, nextPackOff };
      // The pack's last lcluster stores delta[1]; delta[0] follows from the one before it.
      const prev = at(i - 1);
      const prevLo = prev.type !== LclusterType.nonhead ? 0 : prev.lo & D0_CBLKCNT ? 1 : prev.lo;
      return { lcn, type: cur.type, clusterOfs: 2 ** bits, pblk: 0, delta0: prevLo + 1, delta1, compressedBlocks: 0, partialRef: false, nextPackOff };
    }
    let blocks = 0;
    if (!big) {
      blocks = 1;
      for (let k = i; k > 0; ) {
        k--;
        if (at(k).type === LclusterType.nonhead) k -= at(k).lo;
        if (k >= 0) blocks++;
      }
    } else {
      for (let k = i; k > 0; ) {
        k--;
        const p = at(k);
        if (p.type === LclusterType.nonhead) {
          if (p.lo & D0_CBLKCNT) {
            k--;
            blocks += p.lo & ~D0_CBLKCNT;
            continue;
          }
          if (p.lo <= 1) throw this.#corrupt(inode, 'compact index', `a big-pcluster NONHEAD with delta ${p.lo} at lcluster ${lcn}`, packStart);
          k -= p.lo - 2;
          continue;
        }
        blocks++;
      }
    }
    return { lcn, type: cur.type, clusterOfs: cur.lo, pblk: pack.blkaddr + blocks, delta0: 0, delta1: 0, compressedBlocks: 0, partialRef: false, nextPackOff };
  }

  /** The head lcluster of the extent holding byte `q`, and the end of that extent. */
  async #locate(inode: Inode, info: ZInfo, q: number, findTail: boolean): Promise<{ head: Lcluster; la: number; end: number; firstNextPackOff: number }> {
    const bits = info.lclusterBits;
    // An extent decodes to at most 12 MiB: no walk from its head to its end needs more steps.
    const maxSteps = Math.min(this.#lclusterCount(inode, info), Math.ceil(PCLUSTER_MAX_DSIZE / 2 ** bits) + 2);
    const lcn = Math.floor(q / 2 ** bits);
    const endoff = q - lcn * 2 ** bits;
    const first = await this.#load(inode, info, lcn, false);
    let head = first;
    let distance = -1;
    if (first.type !== LclusterType.nonhead) {
      if (endoff < first.clusterOfs) {
        if (lcn === 0) throw this.#corrupt(inode, 'z_erofs_lcluster_index.di_clusterofs', 'lcluster 0 does not start the file');
        distance = 1;
      }
    } else {
      distance = first.delta0;
    }
    for (let steps = 0; distance >= 0; steps++) {
      if (distance === 0 || head.lcn < distance || steps > maxSteps) throw this.#corrupt(inode, 'z_erofs_lcluster_index.delta', `bogus lookback distance ${distance} at lcluster ${head.lcn}`);
      head = await this.#load(inode, info, head.lcn - distance, false);
      distance = head.type === LclusterType.nonhead ? head.delta0 : -1;
    }
    const la = head.lcn * 2 ** bits + head.clusterOfs;
    let end = inode.size;
    if (!findTail) {
      let k = head.lcn;
      for (let steps = 0; ; steps++) {
        if (k * 2 ** bits >= inode.size) break;
        if (steps > maxSteps) throw this.#corrupt(inode, 'z_erofs_lcluster_index.delta', 'the extent runs on past 12 MiB');
        const rec = await this.#load(inode, info, k, true);
        let step: number;
        if (rec.type === LclusterType.nonhead) step = rec.delta1 || 1;
        else if (k !== head.lcn) {
          end = k * 2 ** bits + rec.clusterOfs;
          break;
        } else step = 1;
        k += step;
      }
      if (end > inode.size) end = inode.size;
      if (end <= la) throw this.#corrupt(inode, 'z_erofs_lcluster_index', `an empty extent at ${la}`);
    }
    return { head, la, end, firstNextPackOff: first.nextPackOff };
  }

  /** The size of the file's lclusters in bits (a whole-file fragment: the block's). */
  async lclusterBits(inode: Inode): Promise<number> {
    return (await this.#info(inode)).lclusterBits;
  }

  /** The extent holding byte `q` of a compressed file. */
  async extent(inode: Inode, q: number): Promise<Extent> {
    const info = await this.#info(inode);
    if (info.wholeFragment) return { la: 0, llen: inode.size, source: 'fragment', pa: info.fragmentOffset, plen: inode.size, algorithm: 'shifted', partialRef: false };
    const { head, la, end } = await this.#locate(inode, info, q, false);
    const llen = end - la;
    const isTail = head.lcn === info.tailHeadLcn;
    if (isTail && info.advise & Advise.fragmentPcluster) return { la, llen, source: 'fragment', pa: info.fragmentOffset, plen: llen, algorithm: 'shifted', partialRef: false };
    let source: Extent['source'] = 'blocks';
    let pa: number;
    let plen: number;
    if (isTail && info.idataSize > 0) {
      source = 'inline';
      pa = info.tailPos;
      plen = info.idataSize;
      if ((pa % this.#bs) + plen > this.#bs) throw this.#corrupt(inode, 'z_erofs_map_header.h_idata_size', `the ${plen}-byte inline pcluster crosses a block`, pa);
    } else {
      pa = head.pblk * this.#bs;
      plen = (await this.#compressedBlocks(inode, info, head)) * this.#bs;
    }
    let algorithm: Extent['algorithm'];
    if (head.type === LclusterType.plain) {
      if (llen > plen) throw this.#corrupt(inode, 'z_erofs_lcluster_index', `a plain extent of ${llen} bytes in a ${plen}-byte pcluster`);
      algorithm = info.advise & Advise.interlacedPcluster ? 'interlaced' : 'shifted';
    } else {
      algorithm = head.type === LclusterType.head2 ? info.algorithms[1] : info.algorithms[0];
      const available = this.#host.superblock.featureIncompat & Incompat.comprCfgs ? (this.#host.cfgs.algorithms ?? 0) : 1 << Algorithm.lz4;
      if (algorithm > 3) throw new UnsupportedFeatureError('erofs', 'COMPRESSION_ALGORITHM', `nid ${inode.nid}: algorithm ${algorithm}`);
      if (!(available & (1 << algorithm))) throw this.#corrupt(inode, 'z_erofs_map_header.h_algorithmtype', `${ALGORITHM_NAMES[algorithm]} is not among the image's algorithms`);
    }
    if (plen > PCLUSTER_MAX_SIZE) throw this.#corrupt(inode, 'pcluster', `${plen} encoded bytes, more than 1 MiB`);
    if (llen > PCLUSTER_MAX_DSIZE) throw this.#corrupt(inode, 'pcluster', `${llen} decoded bytes, more than 12 MiB`);
    if (source === 'blocks' && pa + plen > this.#host.imageSize) throw this.#corrupt(inode, 'z_erofs_lcluster_index.blkaddr', `pcluster at ${pa} runs past the image`, pa);
    return { la, llen, source, pa, plen, algorithm, partialRef: head.partialRef };
  }

  async #compressedBlocks(inode: Inode, info: ZInfo, head: Lcluster): Promise<number> {
    const big1 = (info.advise & Advise.bigPcluster1) !== 0;
    const big2 = (info.advise & Advise.bigPcluster2) !== 0;
    const bits = info.lclusterBits;
    if ((head.type === LclusterType.head1 && !big1) || (head.type !== LclusterType.head1 && !big2) || (head.lcn + 1) * 2 ** bits >= inode.size) return 1;
    const next = await this.#load(inode, info, head.lcn + 1, false);
    if (next.type !== LclusterType.nonhead) return 1;
    if (next.delta0 !== 1 || next.compressedBlocks === 0) throw this.#corrupt(inode, 'z_erofs_lcluster_index.delta', `no CBLKCNT after the big-pcluster head at lcluster ${head.lcn}`);
    return next.compressedBlocks;
  }

  /** The decoded bytes of an extent in blocks or inline (exactly llen). */
  async #decode(inode: Inode, x: Extent): Promise<Uint8Array> {
    const key = `${inode.nid}:${x.la}`;
    const cache = inode.nid === this.#host.superblock.packedNid ? this.#packedData : this.#data;
    const known = cache.get(key);
    if (known !== undefined) return known;
    const raw = x.source === 'inline' ? Uint8Array.from(await this.#host.meta(x.pa, x.plen)) : await this.#host.raw(x.pa, x.plen);
    const out = this.#decodePcluster(inode, x, raw);
    cache.set(key, out, out.byteLength);
    return out;
  }

  #decodePcluster(inode: Inode, x: Extent, raw: Uint8Array): Uint8Array {
    if (x.algorithm === 'shifted') return raw.slice(0, x.llen);
    if (x.algorithm === 'interlaced') {
      if (raw.byteLength > this.#bs && x.source === 'blocks') throw this.#corrupt(inode, 'pcluster', `an interlaced pcluster of ${raw.byteLength} bytes`, x.pa);
      const out = new Uint8Array(x.llen);
      const shift = x.la % this.#bs;
      const n = Math.min(this.#bs - shift, x.llen);
      out.set(raw.subarray(shift, shift + n), 0);
      out.set(raw.subarray(0, x.llen - n), n);
      return out;
    }
    const sb = this.#host.superblock;
    let margin = 0;
    const zeroPadded = x.algorithm !== Algorithm.lz4 || (sb.featureIncompat & Incompat.lz4ZeroPadding) !== 0;
    if (zeroPadded) {
      while (margin < raw.byteLength && raw[margin] === 0) margin++;
      if (margin >= raw.byteLength) throw this.#corrupt(inode, 'pcluster', 'the compressed data is all zeros', x.pa);
    }
    const src = raw.subarray(margin);
    const cap = x.partialRef ? PCLUSTER_MAX_DSIZE : x.llen;
    let out: Uint8Array;
    try {
      switch (x.algorithm) {
        case Algorithm.lz4:
          // Without zero padding the stream is followed by padding: decode up to the extent's end.
          out = zeroPadded && !x.partialRef ? lz4Decode(src, cap) : lz4DecodePrefix(src, x.llen);
          break;
        case Algorithm.zstd:
          out = zstdDecode(src, cap);
          break;
        case Algorithm.deflate:
          out = new Uint8Array(inflateRawSync(src, { maxOutputLength: Math.max(cap, 1), finishFlush: zlibConstants.Z_SYNC_FLUSH }));
          break;
        case Algorithm.lzma: {
          const dict = this.#host.cfgs.lzma?.dictSize;
          if (dict === undefined) throw this.#corrupt(inode, 'compr_cfgs', 'an LZMA pcluster without an LZMA config record');
          out = microLzmaDecode(src, x.llen, dict, !x.partialRef);
          break;
        }
        default:
          throw new UnsupportedFeatureError('erofs', 'COMPRESSION_ALGORITHM', `algorithm ${x.algorithm}`);
      }
    } catch (err) {
      if (err instanceof UnsupportedFeatureError || err instanceof CorruptImageError) throw err;
      throw new CorruptImageError('erofs', 'pcluster', `nid ${inode.nid}: the ${ALGORITHM_NAMES[x.algorithm] ?? x.algorithm} pcluster at ${x.pa} does not decode: ${(err as Error).message}`, x.pa, { cause: err });
    }
    if (x.partialRef ? out.byteLength < x.llen : out.byteLength !== x.llen) {
      throw this.#corrupt(inode, 'pcluster', `the pcluster at ${x.pa} decodes to ${out.byteLength} bytes, the extent is ${x.llen}`, x.pa);
    }
    return out.byteLength === x.llen ? out : out.slice(0, x.llen);
  }

  /** Fills `buf` from `offset` of a compressed file (the range is inside the file). */
  async read(inode: Inode, buf: Uint8Array, offset: number): Promise<void> {
    const end = offset + buf.byteLength;
    for (let pos = offset; pos < end; ) {
      const x = await this.extent(inode, pos);
      if (pos < x.la || pos >= x.la + x.llen) throw this.#corrupt(inode, 'z_erofs_lcluster_index', `byte ${pos} maps to the extent [${x.la}, ${x.la + x.llen})`);
      const n = Math.min(end, x.la + x.llen) - pos;
      if (x.source === 'fragment') {
        // Straight from the packed inode (its own extents are cached): a whole-file fragment is never held at once.
        if (inode.nid === this.#host.superblock.packedNid) throw this.#corrupt(inode, 'z_erofs_map_header.h_advise', 'the packed inode refers to a fragment of itself');
        await this.#host.packed(buf.subarray(pos - offset, pos - offset + n), x.pa + (pos - x.la));
      } else {
        const data = await this.#decode(inode, x);
        buf.set(data.subarray(pos - x.la, pos - x.la + n), pos - offset);
      }
      pos += n;
    }
  }
}
