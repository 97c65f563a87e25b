/**
 * What a Disk already holds: the filesystem, LUKS, swap and partition-table signatures that
 * blkid/wipefs look for, found by their magic bytes at fixed offsets. Used before anything is
 * formatted (so a command can refuse to destroy data without being told to), and by tools that must
 * recognise a whole stick.
 *
 * Design notes
 * - Only fixed-offset magics are checked: a handful of small reads, no parsing beyond the few fields
 *   that tell variants apart (ext2/3/4 by feature flags, FAT12/16 vs FAT32 by its type string).
 * - A region past the end of the Disk is simply not checked; a short Disk yields no signatures.
 * - LUKS2 keeps a second header copy at one of the offsets cryptsetup tries; a volume whose primary
 *   was wiped still counts (cryptsetup would restore it).
 * - An MBR is reported only when it is not a FAT/NTFS/exFAT boot sector (those share the 0x55AA mark)
 *   and has at least one plausible partition entry; a GPT's protective MBR is then part of the GPT.
 */
import type { Disk } from './disk.ts';

export interface Signature {
  /** What was found: "ext4", "LUKS2", "squashfs", "vfat (FAT32)", "gpt", … */
  name: string;
  /** Byte offset of the magic on the Disk. */
  offset: number;
}

const LUKS2_SECONDARY_OFFSETS = [0x4000, 0x8000, 0x10000, 0x20000, 0x40000, 0x80000, 0x100000, 0x200000, 0x400000];
const SWAP_PAGE_SIZES = [4096, 8192, 16384, 65536];
const ascii = (s: string): Uint8Array => new TextEncoder().encode(s);

class Probe {
  readonly #cache = new Map<number, Uint8Array | undefined>();
  constructor(readonly disk: Disk) {}

  /** `length` bytes at `offset`, or undefined when the Disk is too short. */
  async bytes(offset: number, length: number): Promise<Uint8Array | undefined> {
    const key = offset * 65536 + length;
    if (this.#cache.has(key)) return this.#cache.get(key);
    const out = offset + length <= this.disk.size ? new Uint8Array(length) : undefined;
    if (out) await this.disk.read(out, offset);
    this.#cache.set(key, out);
    return out;
  }

  async has(offset: number, magic: Uint8Array): Promise<boolean> {
    const b = await this.bytes(offset, magic.byteLength);
    return b !== undefined && b.every((v, i) => v === magic[i]);
  }
}

const LUKS_PRIMARY = new Uint8Array([0x4c, 0x55, 0x4b, 0x53, 0xba, 0xbe]);
const LUKS_SECONDARY = new Uint8Array([0x53, 0x4b, 0x55, 0x4c, 0xba, 0xbe]);

async function luks(p: Probe, out: Signature[]): Promise<void> {
  if (await p.has(0, LUKS_PRIMARY)) {
    const v = await p.bytes(6, 2);
    const version = v === undefined ? 0 : (v[0]! << 8) | v[1]!;
    out.push({ name: version === 1 || version === 2 ? `LUKS${version}` : 'LUKS', offset: 0 });
  }
  for (const at of LUKS2_SECONDARY_OFFSETS) {
    if (await p.has(at, LUKS_SECONDARY)) {
      out.push({ name: 'LUKS2 (secondary header)', offset: at });
      break;
    }
  }
}

async function ext(p: Probe, out: Signature[]): Promise<void> {
  const sb = await p.bytes(1024, 104);
  if (sb === undefined || sb[56] !== 0x53 || sb[57] !== 0xef) return;
  const dv = new DataView(sb.buffer, sb.byteOffset, sb.byteLength);
  const compat = dv.getUint32(92, true);
  const incompat = dv.getUint32(96, true);
  const roCompat = dv.getUint32(100, true);
  // extents, 64bit, flex_bg, huge_file/dir_nlink/extra_isize/metadata_csum: ext4; a journal: ext3.
  const ext4 = (incompat & (0x40 | 0x80 | 0x200)) !== 0 || (roCompat & (0x8 | 0x20 | 0x40 | 0x400)) !== 0;
  out.push({ name: ext4 ? 'ext4' : compat & 0x4 ? 'ext3' : 'ext2', offset: 1080 });
}

async function bootSector(p: Probe, out: Signature[]): Promise<void> {
  const marked = await p.has(510, new Uint8Array([0x55, 0xaa]));
  if (await p.has(3, ascii('EXFAT   '))) return void out.push({ name: 'exfat', offset: 3 });
  if (await p.has(3, ascii('NTFS    '))) return void out.push({ name: 'ntfs', offset: 3 });
  if (marked && (await p.has(82, ascii('FAT32   ')))) return void out.push({ name: 'vfat (FAT32)', offset: 82 });
  if (marked && (await p.has(54, ascii('FAT')))) {
    const kind = new TextDecoder().decode((await p.bytes(54, 8))!).trim();
    return void out.push({ name: `vfat (${kind})`, offset: 54 });
  }
  const gptAt = (await p.has(512, ascii('EFI PART'))) ? 512 : (await p.has(4096, ascii('EFI PART'))) ? 4096 : undefined;
  if (gptAt !== undefined) return void out.push({ name: 'gpt partition table', offset: gptAt });
  if (!marked) return;
  const table = (await p.bytes(446, 64))!;
  for (let i = 0; i < 4; i++) {
    const entry = table.subarray(i * 16, i * 16 + 16);
    if ((entry[0] === 0x00 || entry[0] === 0x80) && entry[4] !== 0) return void out.push({ name: 'dos partition table', offset: 510 });
  }
}

/** Every known signature on `disk`, in offset order. */
export async function probeSignatures(disk: Disk): Promise<Signature[]> {
  const p = new Probe(disk);
  const out: Signature[] = [];
  await luks(p, out);
  if (await p.has(0, ascii('hsqs'))) out.push({ name: 'squashfs', offset: 0 });
  if (await p.has(0, ascii('XFSB'))) out.push({ name: 'xfs', offset: 0 });
  await bootSector(p, out);
  await ext(p, out);
  if (await p.has(1024, new Uint8Array([0xe2, 0xe1, 0xf5, 0xe0]))) out.push({ name: 'erofs', offset: 1024 });
  if (await p.has(536, ascii('LVM2 001'))) out.push({ name: 'LVM2 physical volume', offset: 536 });
  for (const page of SWAP_PAGE_SIZES) {
    if ((await p.has(page - 10, ascii('SWAPSPACE2'))) || (await p.has(page - 10, ascii('SWAP-SPACE')))) {
      out.push({ name: 'swap', offset: page - 10 });
      break;
    }
  }
  if (await p.has(32769, ascii('CD001'))) out.push({ name: 'iso9660', offset: 32769 });
  if (await p.has(0x10040, ascii('_BHRfS_M'))) out.push({ name: 'btrfs', offset: 0x10040 });
  return out.sort((a, b) => a.offset - b.offset);
}

/** "ext4 (at byte 1080), LUKS2 (at byte 0)" for messages. */
export function describeSignatures(found: readonly Signature[]): string {
  return found.map((s) => `${s.name} (signature at byte ${s.offset})`).join(', ');
}
