/** Lookup tables (§2.6): id, fragment, export and xattr-id entries in metadata blocks plus a u64 index. */
import { CorruptImageError } from '../../errors.ts';
import type { Disk } from '../../io/disk.ts';
import { readU64, toSafeNumber, view } from '../../io/bytes.ts';
import type { Compressor } from './comp/types.ts';
import { encodeMetadataBlock, readMetadataBlockAt } from './metadata.ts';
import { METADATA_SIZE } from './superblock.ts';

/** Reads `count` entries of `entrySize` bytes from a lookup table whose index array is at `indexAt`. */
export async function readLookupTable(disk: Disk, comp: Compressor, indexAt: number, count: number, entrySize: number, bytesUsed: number, what: string): Promise<Uint8Array> {
  const total = count * entrySize;
  const blocks = Math.ceil(total / METADATA_SIZE);
  if (indexAt + blocks * 8 > bytesUsed) throw new CorruptImageError('squashfs', `${what} table`, `index of ${blocks} blocks runs past the image end`, indexAt);
  const idx = new Uint8Array(blocks * 8);
  await disk.read(idx, indexAt);
  const dv = view(idx);
  const out = new Uint8Array(total);
  for (let i = 0; i < blocks; i++) {
    const at = readU64(dv, i * 8, 'squashfs', `${what} table index`);
    if (at >= indexAt) throw new CorruptImageError('squashfs', `${what} table index`, `block ${i} at ${at} is not before its index`, indexAt + i * 8);
    const b = await readMetadataBlockAt(disk, comp, at, indexAt, what);
    const want = Math.min(METADATA_SIZE, total - i * METADATA_SIZE);
    if (b.data.byteLength < want) throw new CorruptImageError('squashfs', `${what} table`, `block ${i} holds ${b.data.byteLength} bytes, expected ${want}`, at);
    out.set(b.data.subarray(0, want), i * METADATA_SIZE);
  }
  return out;
}

/** Encodes a lookup table written at absolute position `at`: the blocks, then the index array. */
export function encodeLookupTable(comp: Compressor, entries: Uint8Array, at: number, uncompressed = false): { bytes: Uint8Array; indexStart: number } {
  const parts: Uint8Array[] = [];
  const positions: number[] = [];
  let pos = at;
  for (let off = 0; off < entries.byteLength; off += METADATA_SIZE) {
    const block = encodeMetadataBlock(comp, entries.subarray(off, off + METADATA_SIZE), uncompressed);
    positions.push(pos);
    parts.push(block);
    pos += block.byteLength;
  }
  const index = new Uint8Array(positions.length * 8);
  positions.forEach((p, i) => view(index).setBigUint64(i * 8, BigInt(p), true));
  parts.push(index);
  return { bytes: Buffer.concat(parts), indexStart: pos };
}

export interface FragmentEntry {
  readonly start: number;
  readonly size: number;
}

export function decodeFragmentTable(bytes: Uint8Array, bytesUsed: number, blockSize: number): FragmentEntry[] {
  const dv = view(bytes);
  const out: FragmentEntry[] = [];
  for (let i = 0; i < bytes.byteLength / 16; i++) {
    const start = toSafeNumber(dv.getBigUint64(i * 16, true), 'squashfs', 'fragment entry.start');
    const size = dv.getUint32(i * 16 + 8, true);
    if (size & ~0x1ffffff) throw new CorruptImageError('squashfs', 'fragment entry.size', `fragment ${i} size word 0x${size.toString(16)} has bits above 24`);
    const len = size & 0xffffff;
    if (len === 0 || len > blockSize) throw new CorruptImageError('squashfs', 'fragment entry.size', `fragment ${i} stores ${len} bytes (block size ${blockSize})`);
    if (start + len > bytesUsed) throw new CorruptImageError('squashfs', 'fragment entry.start', `fragment ${i} at ${start}+${len} is past the image end`);
    out.push({ start, size });
  }
  return out;
}

export function encodeFragmentTable(entries: readonly FragmentEntry[]): Uint8Array {
  const out = new Uint8Array(entries.length * 16);
  const dv = view(out);
  entries.forEach((e, i) => {
    dv.setBigUint64(i * 16, BigInt(e.start), true);
    dv.setUint32(i * 16 + 8, e.size, true);
  });
  return out;
}
