/** Directory listings (§2.5): runs of a 12-byte header and 8-byte + name entries; plus the ldir index. */
import { CorruptImageError } from '../../errors.ts';
import { view } from '../../io/bytes.ts';
import type { DirIndexEntry } from './inode.ts';
import type { MetadataReader, MetaPos } from './metadata.ts';
import { METADATA_SIZE } from './superblock.ts';

export interface DirEntry {
  readonly name: Uint8Array;
  /** Basic inode type 1..7. */
  readonly type: number;
  /** Inode position (relative block, offset) in the inode table. */
  readonly inodeBlock: number;
  readonly inodeOffset: number;
  readonly inodeNumber: number;
}

/** Validates a name for use as one path component. */
export function checkEntryName(name: Uint8Array, at: number): void {
  const bad = (why: string): never => {
    throw new CorruptImageError('squashfs', 'directory entry.name', `${JSON.stringify(Buffer.from(name).toString('latin1'))} ${why}`, at);
  };
  if (name.byteLength === 0) bad('is empty');
  if (name.includes(0x2f)) bad('contains "/"');
  if (name.includes(0)) bad('contains NUL');
  if ((name.byteLength === 1 && name[0] === 0x2e) || (name.byteLength === 2 && name[0] === 0x2e && name[1] === 0x2e)) bad('is "." or ".."');
}

/** Reads a listing of `listingSize` bytes (the inode's file_size - 3) starting at `pos`. */
export async function readListing(table: MetadataReader, pos: MetaPos, listingSize: number, inodeCount: number): Promise<DirEntry[]> {
  const where = table.start + pos.block;
  if (listingSize <= 0) return [];
  if (listingSize > (table.length / 3 + 1) * METADATA_SIZE) {
    throw new CorruptImageError('squashfs', 'directory.file_size', `listing of ${listingSize} bytes cannot fit in the directory table`, where);
  }
  const out: DirEntry[] = [];
  let left = listingSize;
  while (left > 0) {
    if (left < 12) throw new CorruptImageError('squashfs', 'directory header', `${left} bytes left, too few for a header`, where);
    const h = view(await table.read(pos, 12));
    left -= 12;
    const count = h.getUint32(0, true) + 1;
    const startBlock = h.getUint32(4, true);
    const base = h.getUint32(8, true);
    if (count > 256) throw new CorruptImageError('squashfs', 'directory header.count', `${count} entries is more than 256`, where);
    for (let i = 0; i < count; i++) {
      if (left < 8) throw new CorruptImageError('squashfs', 'directory entry', 'the listing ends inside an entry', where);
      const e = view(await table.read(pos, 8));
      left -= 8;
      const offset = e.getUint16(0, true);
      const delta = e.getInt16(2, true);
      const type = e.getUint16(4, true);
      const nameSize = e.getUint16(6, true) + 1;
      if (type < 1 || type > 7) throw new CorruptImageError('squashfs', 'directory entry.type', `${type} is not a basic type 1..7`, where);
      if (nameSize > 256) throw new CorruptImageError('squashfs', 'directory entry.name_size', `${nameSize} is more than 256`, where);
      if (nameSize > left) throw new CorruptImageError('squashfs', 'directory entry.name_size', 'the name runs past the listing', where);
      const name = await table.read(pos, nameSize);
      left -= nameSize;
      checkEntryName(name, where);
      const inodeNumber = base + delta;
      if (inodeNumber < 1 || inodeNumber > inodeCount) throw new CorruptImageError('squashfs', 'directory entry.inode_number', `${inodeNumber} is not 1..${inodeCount}`, where);
      if (offset >= METADATA_SIZE) throw new CorruptImageError('squashfs', 'directory entry.offset', `${offset} is past a metadata block`, where);
      out.push({ name, type, inodeBlock: startBlock, inodeOffset: offset, inodeNumber });
    }
  }
  return out;
}

export interface ListingChild {
  readonly name: Uint8Array;
  readonly type: number;
  readonly inodeBlock: number;
  readonly inodeOffset: number;
  readonly inodeNumber: number;
}

/**
 * Encodes a listing from children sorted by name bytes. Returns the bytes and, for the directory
 * index, the listing offset and first name of each header that starts a new 8 KiB segment.
 */
export function encodeListing(children: readonly ListingChild[]): { bytes: Uint8Array; index: Array<{ offset: number; name: Uint8Array }> } {
  let size = 0;
  for (const c of children) size += 8 + c.name.byteLength;
  const buf = new Uint8Array(size + 12 * (Math.ceil(children.length / 1) || 0) + 12);
  const dv = view(buf);
  let p = 0;
  let headerAt = -1;
  let count = 0;
  let hBlock = 0;
  let hBase = 0;
  const index: Array<{ offset: number; name: Uint8Array }> = [];
  const closeHeader = (): void => {
    if (headerAt >= 0) dv.setUint32(headerAt, count - 1, true);
  };
  for (const c of children) {
    const entrySize = 8 + c.name.byteLength;
    const delta = c.inodeNumber - hBase;
    const crosses = headerAt >= 0 && Math.floor(headerAt / METADATA_SIZE) !== Math.floor((p + entrySize - 1) / METADATA_SIZE);
    if (headerAt < 0 || count === 256 || c.inodeBlock !== hBlock || delta < -32768 || delta > 32767 || crosses) {
      closeHeader();
      if (p > 0 && Math.floor(p / METADATA_SIZE) !== Math.floor((index.at(-1)?.offset ?? 0) / METADATA_SIZE)) index.push({ offset: p, name: c.name });
      headerAt = p;
      count = 0;
      hBlock = c.inodeBlock;
      hBase = c.inodeNumber;
      dv.setUint32(p + 4, hBlock, true);
      dv.setUint32(p + 8, hBase, true);
      p += 12;
    }
    dv.setUint16(p, c.inodeOffset, true);
    dv.setInt16(p + 2, c.inodeNumber - hBase, true);
    dv.setUint16(p + 4, c.type, true);
    dv.setUint16(p + 6, c.name.byteLength - 1, true);
    buf.set(c.name, p + 8);
    p += entrySize;
    count++;
  }
  closeHeader();
  return { bytes: buf.subarray(0, p), index };
}

export type { DirIndexEntry };
