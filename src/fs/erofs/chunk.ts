/** Chunk-based files: a 4-byte block map entry or an 8-byte `erofs_inode_chunk_index` per chunk. */
import { CorruptImageError } from '../../errors.ts';
import { view } from '../../io/bytes.ts';

export const CHUNK_INDEX_SIZE = 8;
export const BLOCK_MAP_ENTRY_SIZE = 4;
const NULL_32 = 0xffffffff;

export interface ChunkIndex {
  /** undefined: a hole (EROFS_NULL_ADDR). */
  readonly startBlock: number | undefined;
  readonly deviceId: number;
}

/** An 8-byte chunk index (32-bit addresses: startblk_hi is ignored as the kernel does without 48BIT). */
export function decodeChunkIndex(bytes: Uint8Array, at = 0, pos = 0): ChunkIndex {
  if (at + CHUNK_INDEX_SIZE > bytes.byteLength) throw new CorruptImageError('erofs', 'chunk_index', 'truncated', pos + at);
  const dv = view(bytes);
  const lo = dv.getUint32(at + 4, true);
  const deviceId = dv.getUint16(at + 2, true);
  return { startBlock: lo === NULL_32 ? undefined : lo, deviceId };
}

export function encodeChunkIndex(c: ChunkIndex): Uint8Array {
  const out = new Uint8Array(CHUNK_INDEX_SIZE);
  const dv = view(out);
  dv.setUint16(0, c.startBlock === undefined ? 0xffff : 0, true);
  dv.setUint16(2, c.deviceId, true);
  dv.setUint32(4, c.startBlock ?? NULL_32, true);
  return out;
}

/** A 4-byte block map entry. */
export function decodeBlockMapEntry(bytes: Uint8Array, at = 0, pos = 0): ChunkIndex {
  if (at + BLOCK_MAP_ENTRY_SIZE > bytes.byteLength) throw new CorruptImageError('erofs', 'block_map', 'truncated', pos + at);
  const v = view(bytes).getUint32(at, true);
  return { startBlock: v === NULL_32 ? undefined : v, deviceId: 0 };
}

export function encodeBlockMapEntry(c: ChunkIndex): Uint8Array {
  const out = new Uint8Array(BLOCK_MAP_ENTRY_SIZE);
  view(out).setUint32(0, c.startBlock ?? NULL_32, true);
  return out;
}
