/**
 * Extended attributes: the inline body (`erofs_xattr_ibody_header`, shared ids, entries), entries
 * (`{u8 name_len, u8 name_index, u16 value_size, name, value}` padded to 4) and long name prefix
 * records (`{u16 len, u8 base_index, infix}` padded to 4).
 */
import { CorruptImageError } from '../../errors.ts';
import { view } from '../../io/bytes.ts';

export const IBODY_HEADER_SIZE = 12;
export const ENTRY_HEADER_SIZE = 4;
export const LONG_PREFIX_BIT = 0x80;

/** Short prefixes by name index (1..6). */
export const NAME_PREFIXES: readonly (string | undefined)[] = [undefined, 'user.', 'system.posix_acl_access', 'system.posix_acl_default', 'trusted.', 'lustre.', 'security.'];

export interface IbodyHeader {
  readonly nameFilter: number;
  readonly sharedCount: number;
}

export interface XattrEntry {
  readonly nameIndex: number;
  readonly name: Uint8Array;
  readonly value: Uint8Array;
}

export interface LongPrefix {
  readonly baseIndex: number;
  readonly infix: Uint8Array;
}

export function decodeIbodyHeader(bytes: Uint8Array, pos = 0): IbodyHeader {
  if (bytes.byteLength < IBODY_HEADER_SIZE) throw new CorruptImageError('erofs', 'xattr_ibody_header', `${bytes.byteLength} bytes, less than 12`, pos);
  const dv = view(bytes);
  return { nameFilter: dv.getUint32(0, true), sharedCount: dv.getUint8(4) };
}

export function encodeIbodyHeader(h: IbodyHeader): Uint8Array {
  const out = new Uint8Array(IBODY_HEADER_SIZE);
  view(out).setUint32(0, h.nameFilter >>> 0, true);
  out[4] = h.sharedCount;
  return out;
}

export function entrySize(nameLen: number, valueSize: number): number {
  return (ENTRY_HEADER_SIZE + nameLen + valueSize + 3) & ~3;
}

/** The entry at `at` of `bytes` and its padded size; `pos` is the image offset of `bytes` (for errors). */
export function decodeXattrEntry(bytes: Uint8Array, at = 0, pos = 0): { entry: XattrEntry; size: number } {
  if (at + ENTRY_HEADER_SIZE > bytes.byteLength) throw new CorruptImageError('erofs', 'xattr_entry', 'the entry header runs past its area', pos + at);
  const dv = view(bytes);
  const nameLen = dv.getUint8(at);
  const nameIndex = dv.getUint8(at + 1);
  const valueSize = dv.getUint16(at + 2, true);
  if (nameIndex === 0 || (!(nameIndex & LONG_PREFIX_BIT) && nameIndex >= NAME_PREFIXES.length)) {
    throw new CorruptImageError('erofs', 'xattr_entry.e_name_index', `${nameIndex} is no name index`, pos + at + 1);
  }
  const end = at + ENTRY_HEADER_SIZE + nameLen + valueSize;
  if (end > bytes.byteLength) throw new CorruptImageError('erofs', 'xattr_entry.e_value_size', `name ${nameLen} + value ${valueSize} bytes run past the area`, pos + at + 2);
  const nameAt = at + ENTRY_HEADER_SIZE;
  return {
    entry: { nameIndex, name: bytes.slice(nameAt, nameAt + nameLen), value: bytes.slice(nameAt + nameLen, end) },
    size: entrySize(nameLen, valueSize),
  };
}

export function encodeXattrEntry(e: XattrEntry): Uint8Array {
  if (e.name.byteLength > 255 || e.value.byteLength > 0xffff) throw new RangeError('xattr name or value too long');
  const out = new Uint8Array(entrySize(e.name.byteLength, e.value.byteLength));
  const dv = view(out);
  dv.setUint8(0, e.name.byteLength);
  dv.setUint8(1, e.nameIndex);
  dv.setUint16(2, e.value.byteLength, true);
  out.set(e.name, ENTRY_HEADER_SIZE);
  out.set(e.value, ENTRY_HEADER_SIZE + e.name.byteLength);
  return out;
}

/** A long-prefix record's body (after its u16 length): base index then the infix. */
export function decodeLongPrefix(body: Uint8Array, pos = 0): LongPrefix {
  if (body.byteLength < 1 || body.byteLength > 256) throw new CorruptImageError('erofs', 'xattr_long_prefix.len', `${body.byteLength} is outside 1..256`, pos);
  const baseIndex = body[0] as number;
  if (baseIndex === 0 || baseIndex >= NAME_PREFIXES.length) throw new CorruptImageError('erofs', 'xattr_long_prefix.base_index', `${baseIndex} is no name index`, pos);
  return { baseIndex, infix: body.slice(1) };
}

/** The whole record: u16 length, base index, infix, zero padding to 4 bytes. */
export function encodeLongPrefix(p: LongPrefix): Uint8Array {
  const len = 1 + p.infix.byteLength;
  const out = new Uint8Array((2 + len + 3) & ~3);
  view(out).setUint16(0, len, true);
  out[2] = p.baseIndex;
  out.set(p.infix, 3);
  return out;
}

/** The full attribute name of an entry ("trusted.overlay.opaque"), resolving long prefixes. */
export function xattrName(e: XattrEntry, prefixes: readonly LongPrefix[], pos = 0): string {
  let prefix: string;
  if (e.nameIndex & LONG_PREFIX_BIT) {
    const p = prefixes[e.nameIndex & 0x7f];
    if (p === undefined) throw new CorruptImageError('erofs', 'xattr_entry.e_name_index', `long prefix ${e.nameIndex & 0x7f} is past the ${prefixes.length} the image has`, pos);
    prefix = (NAME_PREFIXES[p.baseIndex] as string) + Buffer.from(p.infix).toString('utf8');
  } else {
    prefix = NAME_PREFIXES[e.nameIndex] as string;
  }
  return prefix + Buffer.from(e.name).toString('utf8');
}
