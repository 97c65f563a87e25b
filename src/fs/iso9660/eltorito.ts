/**
 * El Torito boot catalog: 32-byte entries in the sector the boot record names. A validation entry
 * (header 1, platform, id string, a checksum making the 16 little-endian words sum to 0, key 55 AA),
 * the initial/default entry, then section headers (0x90, or 0x91 for the last) each followed by their
 * entries; extension entries (0x44) after an entry whose media byte has bit 5 are skipped. The catalog
 * is read up to MAX_CATALOG_SECTORS; a section count running past it is corrupt.
 */
import type { Disk } from '../../io/disk.ts';
import { readAt } from '../../io/disk.ts';
import { SECTOR, corrupt, u16le, u32le } from './format.ts';

export const MAX_CATALOG_SECTORS = 4;
export const PLATFORM_X86 = 0x00;
export const PLATFORM_PPC = 0x01;
export const PLATFORM_MAC = 0x02;
export const PLATFORM_EFI = 0xef;

export type MediaType = 'no-emulation' | 'floppy-1.2M' | 'floppy-1.44M' | 'floppy-2.88M' | 'hard-disk';
const MEDIA: readonly MediaType[] = ['no-emulation', 'floppy-1.2M', 'floppy-1.44M', 'floppy-2.88M', 'hard-disk'];

export interface ValidationEntry {
  readonly platform: number;
  readonly idString: string;
}

export interface BootEntry {
  readonly bootable: boolean;
  readonly media: MediaType;
  readonly loadSegment: number;
  readonly systemType: number;
  /** In 512-byte virtual sectors. */
  readonly sectorCount: number;
  /** In 2048-byte sectors of the ISO. */
  readonly loadRba: number;
  /** Section entries only: selection criteria type (0 none). */
  readonly criteriaType: number;
  /** Media byte bit 5: extension entries follow. */
  readonly hasExtensions: boolean;
}

export interface SectionHeader {
  readonly last: boolean;
  readonly platform: number;
  readonly count: number;
  readonly idString: string;
}

const latin1 = new TextDecoder('latin1');

export function decodeValidation(b: Uint8Array, base = 0): ValidationEntry {
  if (b.byteLength !== 32) throw corrupt('eltorito.validation', `is ${b.byteLength} bytes, not 32`, base);
  if (b[0] !== 1) throw corrupt('eltorito.validation.headerId', `is ${b[0]}, not 1`, base);
  if (b[30] !== 0x55 || b[31] !== 0xaa) throw corrupt('eltorito.validation.key', 'is not 55 AA', base + 30);
  let sum = 0;
  for (let i = 0; i < 32; i += 2) sum = (sum + u16le(b, i)) & 0xffff;
  if (sum !== 0) throw corrupt('eltorito.validation.checksum', `words sum to 0x${sum.toString(16)}, not 0`, base + 28);
  return { platform: b[1]!, idString: latin1.decode(b.subarray(4, 28)).replace(/[\0 ]+$/, '') };
}

export function encodeValidation(v: ValidationEntry): Uint8Array {
  const b = new Uint8Array(32);
  b[0] = 1;
  b[1] = v.platform;
  for (let i = 0; i < Math.min(24, v.idString.length); i++) b[4 + i] = v.idString.charCodeAt(i) & 0xff;
  b[30] = 0x55;
  b[31] = 0xaa;
  let sum = 0;
  for (let i = 0; i < 32; i += 2) sum = (sum + u16le(b, i)) & 0xffff;
  const check = (0x10000 - sum) & 0xffff;
  b[28] = check & 0xff;
  b[29] = check >> 8;
  return b;
}

export function decodeBootEntry(b: Uint8Array, base = 0): BootEntry {
  if (b.byteLength !== 32) throw corrupt('eltorito.entry', `is ${b.byteLength} bytes, not 32`, base);
  if (b[0] !== 0x88 && b[0] !== 0x00) throw corrupt('eltorito.entry.bootIndicator', `is 0x${b[0]!.toString(16)}, not 0x88 or 0`, base);
  const media = MEDIA[b[1]! & 0x0f];
  if (media === undefined) throw corrupt('eltorito.entry.mediaType', `is ${b[1]! & 0x0f}, not 0-4`, base + 1);
  return {
    bootable: b[0] === 0x88,
    media,
    loadSegment: u16le(b, 2),
    systemType: b[4]!,
    sectorCount: u16le(b, 6),
    loadRba: u32le(b, 8),
    criteriaType: b[12]!,
    hasExtensions: (b[1]! & 0x20) !== 0,
  };
}

export function encodeBootEntry(e: BootEntry): Uint8Array {
  const b = new Uint8Array(32);
  const v = new DataView(b.buffer);
  b[0] = e.bootable ? 0x88 : 0;
  b[1] = MEDIA.indexOf(e.media) | (e.hasExtensions ? 0x20 : 0);
  v.setUint16(2, e.loadSegment, true);
  b[4] = e.systemType;
  v.setUint16(6, e.sectorCount, true);
  v.setUint32(8, e.loadRba, true);
  b[12] = e.criteriaType;
  return b;
}

export function decodeSectionHeader(b: Uint8Array, base = 0): SectionHeader {
  if (b.byteLength !== 32) throw corrupt('eltorito.section', `is ${b.byteLength} bytes, not 32`, base);
  if (b[0] !== 0x90 && b[0] !== 0x91) throw corrupt('eltorito.section.headerIndicator', `is 0x${b[0]!.toString(16)}, not 0x90 or 0x91`, base);
  return { last: b[0] === 0x91, platform: b[1]!, count: u16le(b, 2), idString: latin1.decode(b.subarray(4, 32)).replace(/[\0 ]+$/, '') };
}

export function encodeSectionHeader(h: SectionHeader): Uint8Array {
  const b = new Uint8Array(32);
  b[0] = h.last ? 0x91 : 0x90;
  b[1] = h.platform;
  b[2] = h.count & 0xff;
  b[3] = h.count >> 8;
  for (let i = 0; i < Math.min(28, h.idString.length); i++) b[4 + i] = h.idString.charCodeAt(i) & 0xff;
  return b;
}

/** One bootable image the catalog names, with the platform of its section. */
export interface CatalogImage extends BootEntry {
  readonly platform: number;
  /** 'default' for the initial entry, else the section's index (0-based). */
  readonly section: 'default' | number;
}

export interface BootCatalog {
  readonly sector: number;
  readonly validation: ValidationEntry;
  readonly images: readonly CatalogImage[];
}

/** Decodes a catalog from its bytes (whole sectors); `sector` is where it lies. */
export function decodeCatalog(b: Uint8Array, sector: number): BootCatalog {
  const base = sector * SECTOR;
  const entry = (i: number) => {
    if ((i + 1) * 32 > b.byteLength) throw corrupt('eltorito.catalog', `runs past ${b.byteLength} bytes`, base + i * 32);
    return b.subarray(i * 32, i * 32 + 32);
  };
  const validation = decodeValidation(entry(0), base);
  const images: CatalogImage[] = [{ ...decodeBootEntry(entry(1), base + 32), platform: validation.platform, section: 'default' }];
  let i = 2;
  for (let section = 0; (i + 1) * 32 <= b.byteLength; section++) {
    const head = entry(i);
    if (head[0] !== 0x90 && head[0] !== 0x91) break; // the catalog ends (zeros)
    const h = decodeSectionHeader(head, base + i * 32);
    i++;
    for (let n = 0; n < h.count; n++) {
      const e = decodeBootEntry(entry(i), base + i * 32);
      images.push({ ...e, platform: h.platform, section });
      i++;
      let more = e.hasExtensions;
      while (more) {
        const ext = entry(i);
        if (ext[0] !== 0x44) throw corrupt('eltorito.extension.indicator', `is 0x${ext[0]!.toString(16)}, not 0x44`, base + i * 32);
        more = (ext[1]! & 0x20) !== 0;
        i++;
      }
    }
    if (h.last) break;
  }
  return { sector, validation, images };
}

export async function readCatalog(disk: Disk, sector: number): Promise<BootCatalog> {
  const at = sector * SECTOR;
  if (at + SECTOR > disk.size) throw corrupt('eltorito.catalogSector', `sector ${sector} is outside the image (${disk.size} bytes)`);
  const length = Math.min(MAX_CATALOG_SECTORS * SECTOR, disk.size - at);
  return decodeCatalog(await readAt(disk, at, length - (length % SECTOR)), sector);
}
