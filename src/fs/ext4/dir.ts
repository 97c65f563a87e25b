/** Linear directory entries, the metadata_csum leaf tail, and htree (dx) node checksums. */
import { CorruptImageError } from '../../errors.ts';
import { view } from '../../io/bytes.ts';
import { crc32cU32, crc32cUpdate } from './crc.ts';
import { FORMAT } from './superblock.ts';

export const DirFileType = { unknown: 0, reg: 1, dir: 2, chr: 3, blk: 4, fifo: 5, sock: 6, symlink: 7 } as const;
export const DIR_TAIL_SIZE = 12;
const DIR_TAIL_FT = 0xde;

export interface DirEntry {
  readonly inode: number;
  readonly name: string;
  readonly nameBytes: Uint8Array;
  readonly fileType: number;
}

const utf8 = new TextDecoder('utf-8');

/**
 * Parses the linear entries of one directory block (or the inline area); unused entries (inode 0)
 * and the checksum tail are skipped. `hasFileType` follows incompat filetype.
 */
export function decodeDirBlock(bytes: Uint8Array, hasFileType: boolean, where: string, offset: number, out: DirEntry[] = []): DirEntry[] {
  const dv = view(bytes);
  const size = bytes.byteLength;
  let at = 0;
  while (at < size) {
    if (at + 8 > size) throw new CorruptImageError(FORMAT, `${where}.rec_len`, `entry header at ${at} crosses the block end`, offset + at);
    const inode = dv.getUint32(at, true);
    let recLen = dv.getUint16(at + 4, true);
    if (size >= 65536 && (recLen === 65535 || recLen === 0)) recLen = 65536;
    const nameLen = dv.getUint8(at + 6);
    const fileType = hasFileType ? dv.getUint8(at + 7) : 0;
    const nameLenFull = hasFileType ? nameLen : dv.getUint16(at + 6, true);
    if (recLen < 8 || recLen % 4 !== 0 || at + recLen > size) {
      throw new CorruptImageError(FORMAT, `${where}.rec_len`, `${recLen} at ${at} in a ${size}-byte block`, offset + at + 4);
    }
    if (inode !== 0) {
      if (8 + nameLenFull > recLen || nameLenFull === 0) throw new CorruptImageError(FORMAT, `${where}.name_len`, `${nameLenFull} with rec_len ${recLen}`, offset + at + 6);
      const nameBytes = bytes.slice(at + 8, at + 8 + nameLenFull);
      out.push({ inode, name: utf8.decode(nameBytes), nameBytes, fileType });
    }
    at += recLen;
  }
  return out;
}

export function encodeDirEntry(inode: number, nameBytes: Uint8Array, fileType: number, recLen: number): Uint8Array {
  const out = new Uint8Array(recLen);
  const dv = view(out);
  dv.setUint32(0, inode, true);
  dv.setUint16(4, recLen === 65536 ? 65535 : recLen, true);
  dv.setUint8(6, nameBytes.byteLength);
  dv.setUint8(7, fileType);
  out.set(nameBytes, 8);
  return out;
}

export function dirEntrySize(nameLen: number): number {
  return (8 + nameLen + 3) & ~3;
}

/** True when the block ends in a metadata_csum leaf tail. */
export function hasDirTail(block: Uint8Array): boolean {
  const dv = view(block);
  const t = block.byteLength - DIR_TAIL_SIZE;
  return dv.getUint32(t, true) === 0 && dv.getUint16(t + 4, true) === DIR_TAIL_SIZE && dv.getUint8(t + 6) === 0 && dv.getUint8(t + 7) === DIR_TAIL_FT;
}

export function dirLeafChecksum(seed: number, ino: number, generation: number, block: Uint8Array): number {
  let crc = crc32cU32(seed, ino);
  crc = crc32cU32(crc, generation);
  return crc32cUpdate(crc, block, 0, block.byteLength - DIR_TAIL_SIZE);
}

export function writeDirTail(seed: number, ino: number, generation: number, block: Uint8Array): void {
  const dv = view(block);
  const t = block.byteLength - DIR_TAIL_SIZE;
  dv.setUint32(t, 0, true);
  dv.setUint16(t + 4, DIR_TAIL_SIZE, true);
  dv.setUint8(t + 6, 0);
  dv.setUint8(t + 7, DIR_TAIL_FT);
  dv.setUint32(t + 8, dirLeafChecksum(seed, ino, generation, block), true);
}

/**
 * If `block` is an htree node (root when `isFirst` of an INDEX_FL dir, or an interior node: a fake
 * entry with inode 0 spanning the block), returns where its count/limit sits; otherwise undefined.
 */
export function dxCountOffset(block: Uint8Array, isFirst: boolean): number | undefined {
  const dv = view(block);
  const bs = block.byteLength;
  if (isFirst) {
    if (dv.getUint16(4, true) !== 12 || dv.getUint16(12 + 4, true) !== bs - 12) return undefined;
    const infoLength = dv.getUint8(24 + 5);
    return 24 + infoLength;
  }
  const recLen = dv.getUint16(4, true);
  if (dv.getUint32(0, true) === 0 && (recLen === bs || (bs >= 65536 && (recLen === 0 || recLen === 65535)))) return 8;
  return undefined;
}

/** Verifies/computes an htree node checksum; returns [stored, computed] or undefined if no room for a tail. */
export function dxNodeChecksum(seed: number, ino: number, generation: number, block: Uint8Array, countOffset: number): [number, number] | undefined {
  const dv = view(block);
  if (countOffset + 4 > block.byteLength) return undefined;
  const limit = dv.getUint16(countOffset, true);
  const count = dv.getUint16(countOffset + 2, true);
  const tailAt = countOffset + limit * 8;
  if (tailAt + 8 > block.byteLength || count > limit) return undefined;
  let crc = crc32cU32(seed, ino);
  crc = crc32cU32(crc, generation);
  crc = crc32cUpdate(crc, block, 0, countOffset + count * 8);
  const tail = block.slice(tailAt, tailAt + 8);
  tail.fill(0, 4, 8);
  crc = crc32cUpdate(crc, tail);
  return [dv.getUint32(tailAt + 4, true), crc];
}
