/**
 * The volume descriptor set: 2048-byte descriptors from sector 16 up to the set terminator. Primary
 * (type 1) and supplementary (type 2; Joliet when its escape sequences name UCS-2 level 1-3) carry
 * the volume's size, block size and root directory record; a boot record (type 0) named
 * "EL TORITO SPECIFICATION" points at the boot catalog. Unknown types (partition descriptors, the
 * UDF bridge's BEA01/NSR02/TEA01 which use other identifiers) are skipped.
 */
import type { Disk } from '../../io/disk.ts';
import { readAt } from '../../io/disk.ts';
import { UnsupportedFeatureError } from '../../errors.ts';
import { FORMAT, SECTOR, SYSTEM_AREA_SECTORS, both16, both32, corrupt, decodeLongDate, decodeText, encodeLongDate, encodeText, putBoth16, putBoth32, u32le, type IsoTime } from './format.ts';
import { decodeRecord, encodeRecord, type DirRecord } from './record.ts';

export const STANDARD_ID = 'CD001';
export const EL_TORITO_ID = 'EL TORITO SPECIFICATION';
/** More descriptors than this before a terminator: a corrupt or hostile image. */
export const MAX_DESCRIPTORS = 64;

export interface VolumeDescriptor {
  readonly type: 'primary' | 'supplementary';
  /** 1, 2 or 3 for a Joliet supplementary descriptor (UCS-2 level), else 0. */
  readonly jolietLevel: number;
  readonly systemId: string;
  readonly volumeId: string;
  readonly volumeBlocks: number;
  readonly blockSize: number;
  readonly pathTableSize: number;
  readonly pathTableL: number;
  readonly pathTableM: number;
  readonly root: DirRecord;
  readonly volumeSetId: string;
  readonly publisherId: string;
  readonly preparerId: string;
  readonly applicationId: string;
  readonly created: IsoTime | undefined;
  readonly modified: IsoTime | undefined;
  /** The modification (else creation) date's 16 digits as recorded, local time: blkid's UUID. */
  readonly dateDigits: string | undefined;
}

export interface BootRecord {
  readonly type: 'boot';
  readonly systemId: string;
  /** Sector of the El Torito boot catalog when systemId is EL TORITO SPECIFICATION. */
  readonly catalogSector: number;
}

export type Descriptor = VolumeDescriptor | BootRecord | { readonly type: 'terminator' } | { readonly type: 'other'; readonly code: number };

const JOLIET_ESCAPES: Record<string, number> = { '%/@': 1, '%/C': 2, '%/E': 3 };

function jolietLevelOf(esc: Uint8Array): number {
  const text = new TextDecoder('latin1').decode(esc).replace(/\0+$/, '');
  for (let i = 0; i + 3 <= text.length; i++) {
    const level = JOLIET_ESCAPES[text.slice(i, i + 3)];
    if (level !== undefined) return level;
  }
  return 0;
}

function dateDigits(b: Uint8Array, at: number): string | undefined {
  const text = new TextDecoder('latin1').decode(b.subarray(at, at + 16));
  return /^\d{16}$/.test(text) && !/^0+$/.test(text) ? text : undefined;
}

/** Decodes one 2048-byte descriptor found at byte `base` of the image. */
export function decodeDescriptor(b: Uint8Array, base = 0): Descriptor {
  if (b.byteLength !== SECTOR) throw corrupt('descriptor', `is ${b.byteLength} bytes, not ${SECTOR}`, base);
  const id = new TextDecoder('latin1').decode(b.subarray(1, 6));
  if (id !== STANDARD_ID) throw corrupt('descriptor.standardId', `is ${JSON.stringify(id)}, not CD001`, base + 1);
  if (b[6] !== 1 && !(b[0] === 2 && b[6] === 2)) throw corrupt('descriptor.version', `is ${b[6]}, not 1`, base + 6);
  const code = b[0]!;
  if (code === 255) return { type: 'terminator' };
  if (code === 0) {
    return { type: 'boot', systemId: decodeText(b.subarray(7, 39), false), catalogSector: u32le(b, 71) };
  }
  if (code !== 1 && code !== 2) return { type: 'other', code };
  const jolietLevel = code === 2 ? jolietLevelOf(b.subarray(88, 120)) : 0;
  const ucs2 = jolietLevel > 0;
  const blockSize = both16(b, 128, 'descriptor.logicalBlockSize', base);
  if (blockSize !== 512 && blockSize !== 1024 && blockSize !== 2048) {
    throw new UnsupportedFeatureError(FORMAT, 'logical block size', `${blockSize} bytes (512, 1024 or 2048 are read)`);
  }
  both16(b, 120, 'descriptor.volumeSetSize', base);
  both16(b, 124, 'descriptor.volumeSequenceNumber', base);
  const pathTableSize = both32(b, 132, 'descriptor.pathTableSize', base);
  const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  if (b[156] !== 34) throw corrupt('descriptor.rootRecord', `length is ${b[156]}, not 34`, base + 156);
  const root = decodeRecord(b.subarray(156, 190), base + 156);
  if (!root.isDirectory) throw corrupt('descriptor.rootRecord', 'is not a directory', base + 156);
  return {
    type: code === 1 ? 'primary' : 'supplementary',
    jolietLevel,
    systemId: decodeText(b.subarray(8, 40), ucs2),
    volumeId: decodeText(b.subarray(40, 72), ucs2),
    volumeBlocks: both32(b, 80, 'descriptor.volumeSpaceSize', base),
    blockSize,
    pathTableSize,
    pathTableL: view.getUint32(140, true),
    pathTableM: view.getUint32(148, false),
    root,
    volumeSetId: decodeText(b.subarray(190, 318), ucs2),
    publisherId: decodeText(b.subarray(318, 446), ucs2),
    preparerId: decodeText(b.subarray(446, 574), ucs2),
    applicationId: decodeText(b.subarray(574, 702), ucs2),
    created: decodeLongDate(b, 813, 'descriptor.creationDate', base),
    modified: decodeLongDate(b, 830, 'descriptor.modificationDate', base),
    dateDigits: dateDigits(b, 830) ?? dateDigits(b, 813),
  };
}

export function encodeDescriptor(d: Descriptor): Uint8Array {
  const b = new Uint8Array(SECTOR);
  for (let i = 0; i < 5; i++) b[1 + i] = STANDARD_ID.charCodeAt(i);
  b[6] = 1;
  switch (d.type) {
    case 'terminator':
      b[0] = 255;
      return b;
    case 'other':
      b[0] = d.code;
      return b;
    case 'boot':
      b[0] = 0;
      for (let i = 0; i < Math.min(32, d.systemId.length); i++) b[7 + i] = d.systemId.charCodeAt(i) & 0xff;
      new DataView(b.buffer).setUint32(71, d.catalogSector, true);
      return b;
  }
  const ucs2 = d.jolietLevel > 0;
  b[0] = d.type === 'primary' ? 1 : 2;
  b.set(encodeText(d.systemId, 32, ucs2), 8);
  b.set(encodeText(d.volumeId, 32, ucs2), 40);
  putBoth32(b, 80, d.volumeBlocks);
  if (ucs2) b.set([0x25, 0x2f, [0, 0x40, 0x43, 0x45][d.jolietLevel]!], 88);
  putBoth16(b, 120, 1);
  putBoth16(b, 124, 1);
  putBoth16(b, 128, d.blockSize);
  putBoth32(b, 132, d.pathTableSize);
  const view = new DataView(b.buffer);
  view.setUint32(140, d.pathTableL, true);
  view.setUint32(148, d.pathTableM, false);
  b.set(encodeRecord(d.root), 156);
  b.set(encodeText(d.volumeSetId, 128, ucs2), 190);
  b.set(encodeText(d.publisherId, 128, ucs2), 318);
  b.set(encodeText(d.preparerId, 128, ucs2), 446);
  b.set(encodeText(d.applicationId, 128, ucs2), 574);
  b.set(encodeLongDate(d.created), 813);
  b.set(encodeLongDate(d.modified), 830);
  b.set(encodeLongDate(undefined), 847);
  b.set(encodeLongDate(undefined), 864);
  b[881] = 1;
  return b;
}

export interface DescriptorSet {
  readonly primary: VolumeDescriptor;
  readonly joliet: VolumeDescriptor | undefined;
  readonly boot: BootRecord | undefined;
}

/** Reads descriptors from sector 16 to the terminator (bounded; each inside the disk). */
export async function readDescriptorSet(disk: Disk): Promise<DescriptorSet> {
  let primary: VolumeDescriptor | undefined;
  let joliet: VolumeDescriptor | undefined;
  let boot: BootRecord | undefined;
  for (let i = 0; ; i++) {
    const at = (SYSTEM_AREA_SECTORS + i) * SECTOR;
    if (i >= MAX_DESCRIPTORS) throw corrupt('descriptorSet', `no terminator within ${MAX_DESCRIPTORS} descriptors`, at);
    if (at + SECTOR > disk.size) {
      if (i === 0) throw corrupt('descriptorSet', `the image (${disk.size} bytes) ends before sector 16`, at);
      throw corrupt('descriptorSet', 'the image ends before the set terminator', at);
    }
    const d = decodeDescriptor(await readAt(disk, at, SECTOR), at);
    if (d.type === 'terminator') break;
    if (d.type === 'primary') primary ??= d;
    else if (d.type === 'supplementary' && d.jolietLevel > 0) joliet ??= d;
    else if (d.type === 'boot' && d.systemId === EL_TORITO_ID) boot ??= d;
  }
  if (!primary) throw corrupt('descriptorSet', 'has no primary volume descriptor', SYSTEM_AREA_SECTORS * SECTOR);
  return { primary, joliet, boot };
}
