/** Extended attributes: the in-inode area (after i_extra_isize) and EA blocks. */
import { CorruptImageError, UnsupportedFeatureError } from '../../errors.ts';
import { view } from '../../io/bytes.ts';
import { crc32cU64, crc32cUpdate } from './crc.ts';
import { FORMAT } from './superblock.ts';

export const XATTR_MAGIC = 0xea020000;
export const XATTR_BLOCK_HEADER = 32;

const PREFIXES: Record<number, string> = {
  1: 'user.',
  2: 'system.posix_acl_access',
  3: 'system.posix_acl_default',
  4: 'trusted.',
  6: 'security.',
  7: 'system.',
  8: 'system.richacl',
};

export interface Xattr {
  readonly name: string;
  readonly value: Uint8Array;
}

export function xattrPrefixIndex(name: string): { index: number; suffix: string } {
  let best = { index: 0, suffix: name };
  for (const [idx, prefix] of Object.entries(PREFIXES)) {
    if (name.startsWith(prefix) && prefix.length > name.length - best.suffix.length) best = { index: Number(idx), suffix: name.slice(prefix.length) };
  }
  return best;
}

/**
 * Parses entries starting at `entriesAt` in `area`; value offsets are relative to `valueBase`.
 * In-inode: area = the bytes after the 4-byte magic, valueBase = 0. Block: area = block, entries at 32, valueBase 0.
 */
function decodeEntries(area: Uint8Array, entriesAt: number, valueBase: number, where: string, offset: number, valuesEnd: number): Xattr[] {
  const dv = view(area);
  const out: Xattr[] = [];
  let at = entriesAt;
  const latin = new TextDecoder('utf-8');
  while (at + 4 <= area.byteLength && dv.getUint32(at, true) !== 0) {
    if (at + 16 > area.byteLength) throw new CorruptImageError(FORMAT, `${where}.entry`, 'entry crosses the end', offset + at);
    const nameLen = dv.getUint8(at);
    const nameIndex = dv.getUint8(at + 1);
    const valueOffs = dv.getUint16(at + 2, true);
    const valueInum = dv.getUint32(at + 4, true);
    const valueSize = dv.getUint32(at + 8, true);
    if (at + 16 + nameLen > area.byteLength) throw new CorruptImageError(FORMAT, `${where}.e_name_len`, `${nameLen}`, offset + at);
    const suffix = latin.decode(area.subarray(at + 16, at + 16 + nameLen));
    const prefix = PREFIXES[nameIndex] ?? '';
    if (valueInum !== 0) throw new UnsupportedFeatureError(FORMAT, 'ea_inode', `xattr "${prefix}${suffix}" stored in inode ${valueInum}`);
    const vStart = valueBase + valueOffs;
    if (valueSize > 0 && (vStart + valueSize > valuesEnd || vStart < 0)) {
      throw new CorruptImageError(FORMAT, `${where}.e_value_offs`, `value of ${valueSize} bytes at ${valueOffs} is outside the area`, offset + at + 2);
    }
    out.push({ name: prefix + suffix, value: area.slice(vStart, vStart + valueSize) });
    at += (16 + nameLen + 3) & ~3;
  }
  return out;
}

/** In-inode xattrs of a raw inode, or [] when there is no area / no magic. */
export function decodeInodeXattrs(raw: Uint8Array, extraIsize: number, ino: number, offset: number): Xattr[] {
  const start = 128 + extraIsize;
  if (raw.byteLength <= 128 || start + 4 > raw.byteLength) return [];
  const dv = view(raw);
  if (dv.getUint32(start, true) !== XATTR_MAGIC) return [];
  const area = raw.subarray(start + 4);
  return decodeEntries(area, 0, 0, `inode[${ino}].xattr`, offset + start + 4, area.byteLength);
}

export interface XattrBlockHeader {
  readonly refcount: number;
  readonly blocks: number;
  readonly hash: number;
  readonly checksum: number;
}

export function decodeXattrBlock(block: Uint8Array, blockNr: number, offset: number): { header: XattrBlockHeader; attrs: Xattr[] } {
  const dv = view(block);
  const magic = dv.getUint32(0, true);
  if (magic !== XATTR_MAGIC) throw new CorruptImageError(FORMAT, `xattr_block[${blockNr}].h_magic`, `0x${magic.toString(16)}`, offset);
  const blocks = dv.getUint32(8, true);
  if (blocks !== 1) throw new CorruptImageError(FORMAT, `xattr_block[${blockNr}].h_blocks`, `${blocks}`, offset + 8);
  const header = { refcount: dv.getUint32(4, true), blocks, hash: dv.getUint32(12, true), checksum: dv.getUint32(16, true) };
  return { header, attrs: decodeEntries(block, XATTR_BLOCK_HEADER, 0, `xattr_block[${blockNr}]`, offset, block.byteLength) };
}

export function xattrBlockChecksum(seed: number, blockNr: number, block: Uint8Array): number {
  const copy = block.slice();
  copy.fill(0, 16, 20);
  return crc32cUpdate(crc32cU64(seed, blockNr), copy);
}
