/**
 * Metadata blocks (§2.2): 8 KiB pieces of a table stream, each `u16 header + payload`. The reader
 * decompresses blocks on demand through a small LRU and walks records that span blocks; positions
 * are bounded by the table's extent so a corrupt header cannot send it outside. The writer packs a
 * stream into blocks and reports each record's reference.
 */
import { CorruptImageError } from '../../errors.ts';
import type { Disk } from '../../io/disk.ts';
import { view } from '../../io/bytes.ts';
import type { Compressor } from './comp/types.ts';
import { METADATA_SIZE } from './superblock.ts';
import { LruCache } from '../../io/lru.ts';

export interface MetadataBlock {
  readonly data: Uint8Array;
  /** Position (relative to the table start) of the next block. */
  readonly next: number;
}

/** Position inside a metadata table: block position relative to the table start, offset inside it. */
export interface MetaPos {
  block: number;
  offset: number;
}

export function refToPos(ref: bigint | number): MetaPos {
  if (typeof ref === 'number' && Number.isSafeInteger(ref) && ref >= 0) return { block: Math.floor(ref / 65536), offset: ref % 65536 };
  const r = BigInt(ref);
  return { block: Number(r >> 16n), offset: Number(r & 0xffffn) };
}

export function posToRef(block: number, offset: number): bigint {
  return (BigInt(block) << 16n) | BigInt(offset);
}

/** The same reference as a Number, for tables of many of them (exact: block positions stay far below 2^37). */
export function posToRefNumber(block: number, offset: number): number {
  return block * 65536 + offset;
}

/** Reads one metadata block at an absolute position, bounded by `end`. */
export async function readMetadataBlockAt(disk: Disk, comp: Compressor, at: number, end: number, what: string): Promise<MetadataBlock & { stored: number }> {
  if (at + 2 > end) throw new CorruptImageError('squashfs', `${what} metadata block`, `header at ${at} is past the table end ${end}`, at);
  const hdr = new Uint8Array(2);
  await disk.read(hdr, at);
  const h = view(hdr).getUint16(0, true);
  const len = h & 0x7fff;
  const uncompressed = (h & 0x8000) !== 0;
  if (len === 0 || len > METADATA_SIZE) throw new CorruptImageError('squashfs', `${what} metadata block`, `length ${len} is not 1..8192`, at);
  if (at + 2 + len > end) throw new CorruptImageError('squashfs', `${what} metadata block`, `length ${len} runs past the table end ${end}`, at);
  const payload = new Uint8Array(len);
  await disk.read(payload, at + 2);
  const data = uncompressed ? payload : comp.decompress(payload, METADATA_SIZE);
  return { data, next: at + 2 + len, stored: len + 2 };
}

export class MetadataReader {
  readonly #disk: Disk;
  readonly #comp: Compressor;
  readonly #start: number;
  readonly #end: number;
  readonly #what: string;
  readonly #cache: LruCache<number, MetadataBlock>;

  constructor(disk: Disk, comp: Compressor, start: number, end: number, what: string, cacheBlocks = 64) {
    this.#disk = disk;
    this.#comp = comp;
    this.#start = start;
    this.#end = end;
    this.#what = what;
    this.#cache = new LruCache(cacheBlocks);
  }

  get start(): number {
    return this.#start;
  }

  get length(): number {
    return this.#end - this.#start;
  }

  async block(rel: number): Promise<MetadataBlock> {
    let b = this.#cache.get(rel);
    if (b === undefined) {
      if (!Number.isSafeInteger(rel) || rel < 0) throw new CorruptImageError('squashfs', `${this.#what} reference`, `block ${rel} is invalid`);
      const raw = await readMetadataBlockAt(this.#disk, this.#comp, this.#start + rel, this.#end, this.#what);
      b = { data: raw.data, next: raw.next - this.#start };
      this.#cache.set(rel, b);
    }
    return b;
  }

  /** Reads `length` bytes from `pos` (advancing it), following into later blocks as needed. */
  async read(pos: MetaPos, length: number): Promise<Uint8Array> {
    const out = new Uint8Array(length);
    let done = 0;
    while (done < length) {
      const b = await this.block(pos.block);
      if (pos.offset > b.data.byteLength) {
        throw new CorruptImageError('squashfs', `${this.#what} reference`, `offset ${pos.offset} is past the end of its block (${b.data.byteLength} bytes)`, this.#start + pos.block);
      }
      if (pos.offset === b.data.byteLength) {
        // Positions only move forward, and block() refuses anything past the table end.
        pos.block = b.next;
        pos.offset = 0;
        continue;
      }
      const n = Math.min(length - done, b.data.byteLength - pos.offset);
      out.set(b.data.subarray(pos.offset, pos.offset + n), done);
      done += n;
      pos.offset += n;
    }
    return out;
  }
}

/** Packs a metadata stream into blocks (compressed when that is smaller, like mksquashfs). */
export class MetadataWriter {
  readonly #comp: Compressor;
  readonly #uncompressed: boolean;
  readonly #blocks: Uint8Array[] = [];
  readonly #blockStarts: number[] = [];
  #stored = 0;
  #pending = new Uint8Array(METADATA_SIZE * 2);
  #pendingLen = 0;

  constructor(comp: Compressor, uncompressed = false) {
    this.#comp = comp;
    this.#uncompressed = uncompressed;
  }

  /** Reference (block position relative to the table start, offset) of the next byte written. */
  get position(): MetaPos {
    return { block: this.#stored, offset: this.#pendingLen };
  }

  /** Uncompressed bytes written so far. */
  get streamOffset(): number {
    return this.#blockStarts.length * METADATA_SIZE + this.#pendingLen;
  }

  /** Stored position (relative) of the block holding stream byte `offset` (already written or pending). */
  blockPositionAt(offset: number): number {
    return this.#blockStarts[Math.floor(offset / METADATA_SIZE)] ?? this.#stored;
  }

  write(bytes: Uint8Array): void {
    let at = 0;
    while (at < bytes.byteLength) {
      const n = Math.min(bytes.byteLength - at, METADATA_SIZE - this.#pendingLen);
      this.#pending.set(bytes.subarray(at, at + n), this.#pendingLen);
      this.#pendingLen += n;
      at += n;
      if (this.#pendingLen === METADATA_SIZE) this.#flushBlock();
    }
  }

  #flushBlock(): void {
    if (this.#pendingLen === 0) return;
    const raw = this.#pending.subarray(0, this.#pendingLen);
    const block = encodeMetadataBlock(this.#comp, raw, this.#uncompressed);
    this.#blocks.push(block);
    this.#blockStarts.push(this.#stored);
    this.#stored += block.byteLength;
    this.#pendingLen = 0;
  }

  /** Finishes the stream; returns the stored blocks and the relative position of each. */
  finish(): { bytes: Uint8Array; blockPositions: number[] } {
    this.#flushBlock();
    const positions: number[] = [];
    let at = 0;
    for (const b of this.#blocks) {
      positions.push(at);
      at += b.byteLength;
    }
    return { bytes: Buffer.concat(this.#blocks), blockPositions: positions };
  }
}

export function encodeMetadataBlock(comp: Compressor, raw: Uint8Array, forceUncompressed = false): Uint8Array {
  const c = forceUncompressed ? raw : comp.compress(raw);
  const stored = c.byteLength < raw.byteLength ? c : raw;
  const out = new Uint8Array(2 + stored.byteLength);
  view(out).setUint16(0, stored.byteLength | (stored === raw ? 0x8000 : 0), true);
  out.set(stored, 2);
  return out;
}
