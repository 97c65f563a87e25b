/** Extended attributes: the in-inode area (after i_extra_isize) and EA blocks. */
import { CorruptImageError, UnsupportedFeatureError, UsageError } from '../../errors.ts';
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
 * Refuses a name ext4 cannot hold as an ordinary attribute: user.*, trusted.* and security.* with a
 * suffix of 1 to 255 bytes. system.* (POSIX ACLs, inline data) has layouts of its own.
 */
export function checkXattrName(name: string): void {
  const { index, suffix } = xattrPrefixIndex(name);
  if (index === 2 || index === 3 || index === 7 || index === 8) throw new UnsupportedFeatureError(FORMAT, 'extended attribute', `${name}: system.* attributes (POSIX ACLs, inline data) are not written`);
  if ((index !== 1 && index !== 4 && index !== 6) || suffix === '') throw new UsageError(`ext4: "${name}" is not a user., trusted. or security. attribute name (EOPNOTSUPP)`);
  if (new TextEncoder().encode(suffix).byteLength > 255) throw new UsageError(`ext4: the attribute name "${name.slice(0, 40)}…" is longer than 255 bytes after its prefix (ERANGE)`);
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

/** e_hash of an entry (name bytes then value words), as the kernel and e2fsprogs compute it. */
export function xattrEntryHash(nameSuffix: Uint8Array, value: Uint8Array): number {
  let hash = 0;
  for (const c of nameSuffix) hash = ((hash << 5) ^ (hash >>> 27) ^ c) >>> 0;
  if (value.byteLength > 0) {
    const padded = new Uint8Array((value.byteLength + 3) & ~3);
    padded.set(value);
    const dv = view(padded);
    for (let i = 0; i < padded.byteLength; i += 4) hash = ((hash << 16) ^ (hash >>> 16) ^ dv.getUint32(i, true)) >>> 0;
  }
  return hash;
}

interface EncodedEntry {
  index: number;
  suffix: Uint8Array;
  value: Uint8Array;
}

function prepare(attrs: readonly Xattr[]): EncodedEntry[] {
  return attrs
    .map((a) => {
      const { index, suffix } = xattrPrefixIndex(a.name);
      return { index, suffix: new TextEncoder().encode(suffix), value: a.value };
    })
    .sort((a, b) => a.index - b.index || a.suffix.byteLength - b.suffix.byteLength || Buffer.compare(a.suffix, b.suffix));
}

function entriesSize(entries: readonly EncodedEntry[]): number {
  return entries.reduce((n, e) => n + ((16 + e.suffix.byteLength + 3) & ~3) + ((e.value.byteLength + 3) & ~3), 0) + 4;
}

/** Lays entries and values into `area` (entries from `entriesAt`, values from the end down); returns the entry hashes. */
function layout(area: Uint8Array, entriesAt: number, valueBase: number, entries: readonly EncodedEntry[], withHash: boolean): number[] {
  const dv = view(area);
  let at = entriesAt;
  let valueEnd = area.byteLength;
  const hashes: number[] = [];
  for (const e of entries) {
    const vSize = (e.value.byteLength + 3) & ~3;
    valueEnd -= vSize;
    area.set(e.value, valueEnd);
    const hash = withHash ? xattrEntryHash(e.suffix, e.value) : 0;
    dv.setUint8(at, e.suffix.byteLength);
    dv.setUint8(at + 1, e.index);
    dv.setUint16(at + 2, e.value.byteLength === 0 ? 0 : valueEnd - valueBase, true);
    dv.setUint32(at + 4, 0, true);
    dv.setUint32(at + 8, e.value.byteLength, true);
    dv.setUint32(at + 12, hash, true);
    area.set(e.suffix, at + 16);
    hashes.push(hash);
    at += (16 + e.suffix.byteLength + 3) & ~3;
  }
  return hashes;
}

/** Writes attrs into the in-inode area of `raw`; false if they do not fit (the area is then left empty). */
export function encodeInodeXattrs(raw: Uint8Array, extraIsize: number, attrs: readonly Xattr[]): boolean {
  const start = 128 + extraIsize;
  if (raw.byteLength <= start + 4) return attrs.length === 0;
  raw.fill(0, start);
  if (attrs.length === 0) return true;
  const entries = prepare(attrs);
  const area = raw.subarray(start + 4);
  if (entriesSize(entries) > area.byteLength) return false;
  view(raw).setUint32(start, XATTR_MAGIC, true);
  layout(area, 0, 0, entries, false);
  return true;
}

/** An EA block holding attrs (refcount 1), with hashes and, when `seed` is given, the checksum. */
export function encodeXattrBlock(attrs: readonly Xattr[], blockSize: number, blockNr: number, seed: number | undefined): Uint8Array | undefined {
  const entries = prepare(attrs);
  if (XATTR_BLOCK_HEADER + entriesSize(entries) > blockSize) return undefined;
  const block = new Uint8Array(blockSize);
  const dv = view(block);
  dv.setUint32(0, XATTR_MAGIC, true);
  dv.setUint32(4, 1, true);
  dv.setUint32(8, 1, true);
  const hashes = layout(block, XATTR_BLOCK_HEADER, 0, entries, true);
  let h = 0;
  for (const eh of hashes) h = ((h << 16) ^ (h >>> 16) ^ eh) >>> 0;
  dv.setUint32(12, h, true);
  if (seed !== undefined) dv.setUint32(16, xattrBlockChecksum(seed, blockNr, block), true);
  return block;
}
