/**
 * Directory blocks: `erofs_dirent {u64 nid, u16 nameoff, u8 file_type, u8 reserved}` × n, then the
 * names. nameoff of the first entry / 12 is the entry count; a name runs to the next entry's nameoff,
 * the last one to the end of the block (or of the directory) less any trailing NUL padding.
 */
import { CorruptImageError, UnsupportedFeatureError } from '../../errors.ts';
import { view } from '../../io/bytes.ts';
import type { NodeKind } from '../filesystem.ts';

export const DIRENT_SIZE = 12;
export const NAME_MAX = 255;
const NID_METABOX_BIT = 1n << 63n;

export const FILE_TYPE_KINDS: readonly (NodeKind | undefined)[] = [undefined, 'file', 'dir', 'chardev', 'blockdev', 'fifo', 'socket', 'symlink'];

export interface Dirent {
  readonly nid: number;
  readonly fileType: number;
  readonly name: Uint8Array;
}

function corrupt(field: string, message: string, offset: number): CorruptImageError {
  return new CorruptImageError('erofs', `dirent.${field}`, message, offset);
}

/** The entries of one directory block; `block` is the block's used part, `pos` its image offset (for errors). */
export function decodeDirentBlock(block: Uint8Array, pos = 0): Dirent[] {
  const size = block.byteLength;
  if (size < DIRENT_SIZE) throw corrupt('size', `a ${size}-byte directory block cannot hold an entry`, pos);
  const dv = view(block);
  const first = dv.getUint16(8, true);
  if (first < DIRENT_SIZE || first % DIRENT_SIZE !== 0 || first >= size) throw corrupt('nameoff', `first nameoff ${first} is not a multiple of 12 inside the ${size}-byte block`, pos + 8);
  const count = first / DIRENT_SIZE;
  const out: Dirent[] = [];
  for (let i = 0; i < count; i++) {
    const at = i * DIRENT_SIZE;
    const rawNid = dv.getBigUint64(at, true);
    if (rawNid & NID_METABOX_BIT) throw new UnsupportedFeatureError('erofs', 'METABOX', 'a directory entry names an inode in the metabox');
    if (rawNid > BigInt(Number.MAX_SAFE_INTEGER)) throw corrupt('nid', `${rawNid} is out of range`, pos + at);
    const nameoff = dv.getUint16(at + 8, true);
    const fileType = dv.getUint8(at + 10);
    if (fileType >= FILE_TYPE_KINDS.length) throw corrupt('file_type', `${fileType} is not a file type`, pos + at + 10);
    if (nameoff < first || nameoff >= size) throw corrupt('nameoff', `${nameoff} is outside the names [${first}, ${size})`, pos + at + 8);
    let end: number;
    if (i + 1 < count) {
      end = dv.getUint16(at + DIRENT_SIZE + 8, true);
      if (end <= nameoff || end > size) throw corrupt('nameoff', `entry ${i + 1}'s nameoff ${end} does not follow ${nameoff}`, pos + at + DIRENT_SIZE + 8);
    } else {
      end = block.indexOf(0, nameoff);
      if (end < 0) end = size;
      if (end === nameoff) throw corrupt('name', 'the last name is empty', pos + nameoff);
    }
    if (end - nameoff > NAME_MAX) throw corrupt('name', `a ${end - nameoff}-byte name is longer than ${NAME_MAX}`, pos + nameoff);
    out.push({ nid: Number(rawNid), fileType, name: block.slice(nameoff, end) });
  }
  return out;
}

/** One directory block of `blockSize` bytes holding `entries` (in the given order), NUL-padded. */
export function encodeDirentBlock(entries: readonly Dirent[], blockSize: number): Uint8Array {
  const out = new Uint8Array(blockSize);
  const dv = view(out);
  let nameAt = entries.length * DIRENT_SIZE;
  entries.forEach((e, i) => {
    if (nameAt + e.name.byteLength > blockSize) throw new RangeError(`entries do not fit in a ${blockSize}-byte block`);
    dv.setBigUint64(i * DIRENT_SIZE, BigInt(e.nid), true);
    dv.setUint16(i * DIRENT_SIZE + 8, nameAt, true);
    dv.setUint8(i * DIRENT_SIZE + 10, e.fileType);
    out.set(e.name, nameAt);
    nameAt += e.name.byteLength;
  });
  return out;
}
