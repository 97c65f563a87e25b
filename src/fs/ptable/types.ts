/**
 * GUIDs (the mixed-endian on-disk form) and the well-known partition types: GPT type GUIDs and MBR
 * type bytes, by name.
 */
import { CorruptImageError, UsageError } from '../../errors.ts';

const GUID_TEXT = /^[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}$/i;

function hex(bytes: Uint8Array, order: readonly number[]): string {
  return order.map((i) => bytes[i]!.toString(16).padStart(2, '0')).join('');
}

/** 16 on-disk bytes as the usual text form: the first three groups little-endian, the rest as stored. */
export function decodeGuid(bytes: Uint8Array): string {
  if (bytes.byteLength !== 16) throw new CorruptImageError('gpt', 'guid', `a GUID is 16 bytes, not ${bytes.byteLength}`);
  return `${hex(bytes, [3, 2, 1, 0])}-${hex(bytes, [5, 4])}-${hex(bytes, [7, 6])}-${hex(bytes, [8, 9])}-${hex(bytes, [10, 11, 12, 13, 14, 15])}`.toUpperCase();
}

export function isGuid(text: string): boolean {
  return GUID_TEXT.test(text);
}

export function encodeGuid(text: string): Uint8Array {
  if (!isGuid(text)) throw new UsageError(`not a GUID: "${text}"`);
  const h = text.replace(/-/g, '');
  const b = (i: number) => parseInt(h.slice(i * 2, i * 2 + 2), 16);
  const order = [3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15];
  const out = new Uint8Array(16);
  order.forEach((src, dst) => (out[dst] = b(src)));
  return out;
}

export const ZERO_GUID = '00000000-0000-0000-0000-000000000000';

/** Names a caller may pass as a partition type, with their GPT GUID and MBR byte. */
export const PARTITION_TYPES = {
  'efi-system': { gpt: 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B', mbr: 0xef, label: 'EFI System' },
  'microsoft-basic-data': { gpt: 'EBD0A0A2-B9E5-4433-87C0-68B6B72699C7', mbr: 0x07, label: 'Microsoft basic data' },
  fat32: { gpt: 'EBD0A0A2-B9E5-4433-87C0-68B6B72699C7', mbr: 0x0c, label: 'Microsoft basic data' },
  exfat: { gpt: 'EBD0A0A2-B9E5-4433-87C0-68B6B72699C7', mbr: 0x07, label: 'Microsoft basic data' },
  'linux-filesystem': { gpt: '0FC63DAF-8483-4772-8E79-3D69D8477DE4', mbr: 0x83, label: 'Linux filesystem' },
  'linux-swap': { gpt: '0657FD6D-A4AB-43C4-84E5-0933C84B4F4F', mbr: 0x82, label: 'Linux swap' },
  'linux-lvm': { gpt: 'E6D6D379-F507-44C2-A23C-238F2A3DF928', mbr: 0x8e, label: 'Linux LVM' },
  'linux-raid': { gpt: 'A19D880F-05FC-4D3B-A006-743F0F84911E', mbr: 0xfd, label: 'Linux RAID' },
  'linux-home': { gpt: '933AC7E1-2EB4-4F13-B844-0E14E2AEF915', mbr: 0x83, label: 'Linux /home' },
  'bios-boot': { gpt: '21686148-6449-6E6F-744E-656564454649', mbr: 0xef, label: 'BIOS boot' },
} as const;

export type PartitionTypeName = keyof typeof PARTITION_TYPES;

const GPT_NAMES: Record<string, string> = {
  [ZERO_GUID]: 'Unused',
  'C12A7328-F81F-11D2-BA4B-00A0C93EC93B': 'EFI System',
  'EBD0A0A2-B9E5-4433-87C0-68B6B72699C7': 'Microsoft basic data',
  'E3C9E316-0B5C-4DB8-817D-F92DF00215AE': 'Microsoft reserved',
  'DE94BBA4-06D1-4D40-A16A-BFD50179D6AC': 'Windows recovery environment',
  '0FC63DAF-8483-4772-8E79-3D69D8477DE4': 'Linux filesystem',
  '0657FD6D-A4AB-43C4-84E5-0933C84B4F4F': 'Linux swap',
  'E6D6D379-F507-44C2-A23C-238F2A3DF928': 'Linux LVM',
  'A19D880F-05FC-4D3B-A006-743F0F84911E': 'Linux RAID',
  '933AC7E1-2EB4-4F13-B844-0E14E2AEF915': 'Linux /home',
  '4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709': 'Linux root (x86-64)',
  'BC13C2FF-59E6-4262-A352-B275FD6F7172': 'Linux extended boot',
  '21686148-6449-6E6F-744E-656564454649': 'BIOS boot',
  '024DEE41-33E7-11D3-9D69-0008C781F39F': 'MBR partition scheme',
  '48465300-0000-11AA-AA11-00306543ECAC': 'Apple HFS/HFS+',
};

const MBR_NAMES: Record<number, string> = {
  0x00: 'Empty',
  0x01: 'FAT12',
  0x04: 'FAT16 <32M',
  0x05: 'Extended',
  0x06: 'FAT16',
  0x07: 'HPFS/NTFS/exFAT',
  0x0b: 'W95 FAT32',
  0x0c: 'W95 FAT32 (LBA)',
  0x0e: 'W95 FAT16 (LBA)',
  0x0f: "W95 Ext'd (LBA)",
  0x11: 'Hidden FAT12',
  0x14: 'Hidden FAT16 <32M',
  0x16: 'Hidden FAT16',
  0x17: 'Hidden HPFS/NTFS',
  0x1b: 'Hidden W95 FAT32',
  0x1c: 'Hidden W95 FAT32 (LBA)',
  0x1e: 'Hidden W95 FAT16 (LBA)',
  0x82: 'Linux swap / Solaris',
  0x83: 'Linux',
  0x85: 'Linux extended',
  0x8e: 'Linux LVM',
  0xcd: 'ISO9660 (hybrid)',
  0xee: 'GPT',
  0xef: 'EFI (FAT-12/16/32)',
  0xfd: 'Linux raid autodetect',
};

export function gptTypeName(guid: string): string {
  return GPT_NAMES[guid.toUpperCase()] ?? 'Unknown';
}

export function mbrTypeName(type: number): string {
  return MBR_NAMES[type] ?? `Unknown (0x${type.toString(16).padStart(2, '0')})`;
}

export const MBR_EXTENDED_TYPES: ReadonlySet<number> = new Set([0x05, 0x0f, 0x85]);
export const MBR_PROTECTIVE_TYPE = 0xee;

/** A caller's type (a name, a GUID, or an MBR byte) as a GPT type GUID. */
export function gptTypeOf(type: PartitionTypeName | string | number): string {
  if (typeof type === 'number') throw new UsageError(`a GPT partition needs a type GUID or name, not the MBR byte ${type}`);
  const known = (PARTITION_TYPES as Record<string, { gpt: string }>)[type];
  if (known) return known.gpt;
  if (isGuid(type)) return type.toUpperCase();
  throw new UsageError(`unknown partition type "${type}" (a GUID or one of ${Object.keys(PARTITION_TYPES).join(', ')})`);
}

/** A caller's type as an MBR type byte. */
export function mbrTypeOf(type: PartitionTypeName | string | number): number {
  if (typeof type === 'number') {
    if (!Number.isInteger(type) || type < 1 || type > 0xff || MBR_EXTENDED_TYPES.has(type)) throw new UsageError(`not a usable MBR partition type: ${type}`);
    return type;
  }
  const known = (PARTITION_TYPES as Record<string, { mbr: number }>)[type];
  if (known) return known.mbr;
  throw new UsageError(`unknown MBR partition type "${type}" (a byte or one of ${Object.keys(PARTITION_TYPES).join(', ')})`);
}
