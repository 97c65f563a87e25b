/**
 * On-disk structures of the device-mapper persistent snapshot store (drivers/md/dm-snap-persistent.c),
 * plus livestick's base binding record, which lives in the unused tail of the header chunk.
 *
 * Layout (all little-endian): chunk 0 is the header; metadata area i is chunk 1 + i * (EPA + 1), where
 * EPA (exceptions per area) = chunkBytes / 16; each area is followed by the EPA data chunks it describes.
 * An area is an array of {u64 old_chunk, u64 new_chunk}; the table ends at the first new_chunk == 0.
 */
import { CorruptImageError, UnsupportedFeatureError } from '../../errors.ts';
import { toSafeNumber, view } from '../../io/bytes.ts';

export const FORMAT = 'dm-snapshot';
export const SNAP_MAGIC = 0x70416e53; // "SnAp"
export const SNAPSHOT_DISK_VERSION = 1;
export const SECTOR = 512;
export const EXCEPTION_BYTES = 16;
/** The kernel accepts power-of-two chunks up to INT_MAX >> 9 sectors; livestick caps them (one area is held in memory). */
export const KERNEL_MAX_CHUNK_SECTORS = 0x7fffffff >> 9;
export const MAX_CHUNK_SECTORS = 4096; // 2 MiB
export const DEFAULT_CHUNK_SECTORS = 8; // 4 KiB, as dracut and livecd-iso-to-disk use

export type SnapshotHeader =
  | { readonly kind: 'new' }
  | { readonly kind: 'snapshot'; readonly valid: boolean; readonly version: number; readonly chunkSectors: number };

export interface Geometry {
  readonly chunkSectors: number;
  readonly chunkBytes: number;
  readonly exceptionsPerArea: number;
}

export function checkChunkSectors(chunkSectors: number, field = 'chunk_size', offset?: number): void {
  if (!Number.isInteger(chunkSectors) || chunkSectors <= 0 || (chunkSectors & (chunkSectors - 1)) !== 0) {
    throw new CorruptImageError(FORMAT, field, `chunk size ${chunkSectors} sectors is not a power of 2`, offset);
  }
  if (chunkSectors > KERNEL_MAX_CHUNK_SECTORS) {
    throw new CorruptImageError(FORMAT, field, `chunk size ${chunkSectors} sectors is larger than the kernel allows`, offset);
  }
  if (chunkSectors > MAX_CHUNK_SECTORS) {
    throw new UnsupportedFeatureError(FORMAT, 'chunk size', `${chunkSectors} sectors (${chunkSectors * SECTOR} bytes); livestick handles chunks up to ${MAX_CHUNK_SECTORS * SECTOR} bytes`);
  }
}

export function geometry(chunkSectors: number): Geometry {
  checkChunkSectors(chunkSectors);
  const chunkBytes = chunkSectors * SECTOR;
  return { chunkSectors, chunkBytes, exceptionsPerArea: chunkBytes / EXCEPTION_BYTES };
}

/** Chunk index of metadata area `area`. */
export function areaChunk(g: Geometry, area: number): number {
  return 1 + area * (g.exceptionsPerArea + 1);
}

/** True for the header chunk and every metadata-area chunk. */
export function isMetadataChunk(g: Geometry, chunk: number): boolean {
  return chunk === 0 || chunk % (g.exceptionsPerArea + 1) === 1;
}

export function decodeHeader(bytes: Uint8Array): SnapshotHeader {
  if (bytes.byteLength < 16) throw new CorruptImageError(FORMAT, 'header', `needs 16 bytes, got ${bytes.byteLength}`, 0);
  const dv = view(bytes);
  const magic = dv.getUint32(0, true);
  if (magic === 0) return { kind: 'new' };
  if (magic !== SNAP_MAGIC) {
    throw new CorruptImageError(FORMAT, 'magic', `0x${magic.toString(16).padStart(8, '0')} is not a snapshot header ("SnAp") nor zero`, 0);
  }
  const valid = dv.getUint32(4, true);
  const version = dv.getUint32(8, true);
  const chunkSectors = dv.getUint32(12, true);
  if (version !== SNAPSHOT_DISK_VERSION) {
    throw new UnsupportedFeatureError(FORMAT, 'version', `on-disk version ${version} (the kernel only handles ${SNAPSHOT_DISK_VERSION})`);
  }
  checkChunkSectors(chunkSectors, 'chunk_size', 12);
  return { kind: 'snapshot', valid: valid !== 0, version, chunkSectors };
}

/** The whole header chunk as the kernel writes it: fields, then zeros (binding record added by the caller). */
export function encodeHeader(h: { valid: boolean; chunkSectors: number }): Uint8Array {
  const g = geometry(h.chunkSectors);
  const bytes = new Uint8Array(g.chunkBytes);
  const dv = view(bytes);
  dv.setUint32(0, SNAP_MAGIC, true);
  dv.setUint32(4, h.valid ? 1 : 0, true);
  dv.setUint32(8, SNAPSHOT_DISK_VERSION, true);
  dv.setUint32(12, h.chunkSectors, true);
  return bytes;
}

export interface Exception {
  readonly oldChunk: number;
  readonly newChunk: number;
}

export interface DecodedArea {
  readonly exceptions: readonly Exception[];
  /** All EPA slots hold an exception: the table continues in the next area. */
  readonly full: boolean;
}

/** Decodes one metadata area with the kernel's rule: stop at the first entry whose new_chunk is 0. */
export function decodeArea(bytes: Uint8Array, g: Geometry, areaOffset = 0): DecodedArea {
  if (bytes.byteLength !== g.chunkBytes) {
    throw new CorruptImageError(FORMAT, 'area', `expected ${g.chunkBytes} bytes, got ${bytes.byteLength}`, areaOffset);
  }
  const dv = view(bytes);
  const exceptions: Exception[] = [];
  for (let i = 0; i < g.exceptionsPerArea; i++) {
    const at = i * EXCEPTION_BYTES;
    const newRaw = dv.getBigUint64(at + 8, true);
    if (newRaw === 0n) return { exceptions, full: false };
    const oldChunk = toSafeNumber(dv.getBigUint64(at, true), FORMAT, 'old_chunk', areaOffset + at);
    const newChunk = toSafeNumber(newRaw, FORMAT, 'new_chunk', areaOffset + at + 8);
    exceptions.push({ oldChunk, newChunk });
  }
  return { exceptions, full: true };
}

export function encodeArea(exceptions: readonly Exception[], g: Geometry): Uint8Array {
  if (exceptions.length > g.exceptionsPerArea) throw new RangeError('too many exceptions for one area');
  const bytes = new Uint8Array(g.chunkBytes);
  const dv = view(bytes);
  exceptions.forEach((e, i) => {
    dv.setBigUint64(i * EXCEPTION_BYTES, BigInt(e.oldChunk), true);
    dv.setBigUint64(i * EXCEPTION_BYTES + 8, BigInt(e.newChunk), true);
  });
  return bytes;
}
