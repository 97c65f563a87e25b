/** Block group descriptors (32 bytes, or s_desc_size with 64bit) and their checksums. */
import { CorruptImageError } from '../../errors.ts';
import { view } from '../../io/bytes.ts';
import { crc16Update, crc32cU32, crc32cUpdate } from './crc.ts';
import { FORMAT, Incompat, RoCompat, type Superblock } from './superblock.ts';

export const BgFlags = { inodeUninit: 0x1, blockUninit: 0x2, inodeZeroed: 0x4 } as const;

export interface GroupDesc {
  readonly blockBitmap: number;
  readonly inodeBitmap: number;
  readonly inodeTable: number;
  readonly freeBlocks: number;
  readonly freeInodes: number;
  readonly usedDirs: number;
  readonly flags: number;
  readonly excludeBitmap: number;
  readonly blockBitmapCsum: number;
  readonly inodeBitmapCsum: number;
  readonly itableUnused: number;
  readonly checksum: number;
}

export function decodeGroupDesc(bytes: Uint8Array, descSize: number, group: number, offset: number): GroupDesc {
  if (bytes.byteLength < descSize) throw new CorruptImageError(FORMAT, `group[${group}]`, 'descriptor truncated', offset);
  const dv = view(bytes);
  const u16 = (o: number) => dv.getUint16(o, true);
  const u32 = (o: number) => dv.getUint32(o, true);
  const wide = descSize >= 64;
  const pair32 = (lo: number, hiOff: number) => (wide ? u32(hiOff) : 0) * 2 ** 32 + u32(lo);
  const pair16 = (lo: number, hiOff: number) => (wide ? u16(hiOff) : 0) * 65536 + u16(lo);
  return {
    blockBitmap: pair32(0, 32),
    inodeBitmap: pair32(4, 36),
    inodeTable: pair32(8, 40),
    freeBlocks: pair16(12, 44),
    freeInodes: pair16(14, 46),
    usedDirs: pair16(16, 48),
    flags: u16(18),
    excludeBitmap: pair32(20, 52),
    blockBitmapCsum: (wide ? u16(56) : 0) * 65536 + u16(24),
    inodeBitmapCsum: (wide ? u16(58) : 0) * 65536 + u16(26),
    itableUnused: pair16(28, 50),
    checksum: u16(30),
  };
}

export function encodeGroupDesc(gd: GroupDesc, descSize: number): Uint8Array {
  const out = new Uint8Array(descSize);
  const dv = view(out);
  const wide = descSize >= 64;
  const set32 = (lo: number, hiOff: number, v: number) => {
    dv.setUint32(lo, v % 2 ** 32, true);
    if (wide) dv.setUint32(hiOff, Math.floor(v / 2 ** 32), true);
  };
  const set16 = (lo: number, hiOff: number, v: number) => {
    dv.setUint16(lo, v & 0xffff, true);
    if (wide) dv.setUint16(hiOff, Math.floor(v / 65536) & 0xffff, true);
  };
  set32(0, 32, gd.blockBitmap);
  set32(4, 36, gd.inodeBitmap);
  set32(8, 40, gd.inodeTable);
  set16(12, 44, gd.freeBlocks);
  set16(14, 46, gd.freeInodes);
  set16(16, 48, gd.usedDirs);
  dv.setUint16(18, gd.flags, true);
  set32(20, 52, gd.excludeBitmap);
  set16(24, 56, gd.blockBitmapCsum);
  set16(26, 58, gd.inodeBitmapCsum);
  set16(28, 50, gd.itableUnused);
  dv.setUint16(30, gd.checksum, true);
  return out;
}

/** Either gdt_csum (crc16) or metadata_csum (crc32c low 16 bits); undefined when neither is on. */
export function groupDescChecksum(sb: Superblock, csumSeed: number, group: number, bytes: Uint8Array): number | undefined {
  const desc = bytes.slice(0, sb.descSize);
  desc[30] = 0;
  desc[31] = 0;
  if (sb.featureRoCompat & RoCompat.metadataCsum) {
    return crc32cUpdate(crc32cU32(csumSeed, group), desc) & 0xffff;
  }
  if (sb.featureRoCompat & RoCompat.gdtCsum) {
    let crc = crc16Update(0xffff, sb.uuid);
    const g = new Uint8Array(4);
    view(g).setUint32(0, group, true);
    crc = crc16Update(crc, g);
    crc = crc16Update(crc, desc, 0, 30);
    if (sb.featureIncompat & Incompat.bit64 && sb.descSize > 32) crc = crc16Update(crc, desc, 32, sb.descSize);
    return crc;
  }
  return undefined;
}

export function hasGroupChecksums(sb: Superblock): boolean {
  return (sb.featureRoCompat & (RoCompat.metadataCsum | RoCompat.gdtCsum)) !== 0;
}
