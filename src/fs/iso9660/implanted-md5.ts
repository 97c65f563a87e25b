/**
 * The implanted MD5 of a live ISO (isomd5sum's implantisomd5 writes it, checkisomd5 and dracut's
 * rd.live.check verify it): text in the primary volume descriptor's application-use field.
 *
 * Design notes
 * - The field is 512 bytes at byte 883 of the primary volume descriptor. implantisomd5 fills it with
 *   spaces and then "ISO MD5SUM = <32 hex>;SKIPSECTORS = <n>;RHLISOSTATUS=<0|1>;FRAGMENT SUMS =
 *   <60 chars>;FRAGMENT COUNT = <n>;THIS IS NOT THE SAME AS RUNNING MD5SUM ON THIS ISO!!". A reader
 *   needs the sum and the skip count; the fragment count defaults to 20.
 * - The sum covers the volume (the descriptor's volume space size, in 2048-byte sectors) less its
 *   last SKIPSECTORS sectors, with the application-use field read as 512 spaces.
 * - Fragment sums let a check stop early: the covered bytes are cut into count + 1 parts of
 *   floor(covered / (count + 1)) bytes. The data is hashed in 32 KiB pieces; after the first piece
 *   that starts in part k (k >= 1), the MD5 of everything hashed so far gives 60 / count characters
 *   at position (k - 1) * (60 / count): for each of its first digest bytes, the first character of
 *   that byte printed in hex without a leading zero (so 0x0a gives "a", 0xab gives "a" too). The
 *   piece size is part of the format: another one moves the points where sums are taken.
 */
import { createHash, type Hash } from 'node:crypto';
import type { Disk } from '../../io/disk.ts';
import { readAt } from '../../io/disk.ts';
import { CorruptImageError } from '../../errors.ts';
import { SECTOR, SYSTEM_AREA_SECTORS } from './format.ts';

export const APPDATA_OFFSET = 883;
export const APPDATA_SIZE = 512;
const PIECE = 16 * SECTOR;
const FRAGMENT_SUM_CHARS = 60;
const FORMAT = 'iso9660 implanted md5';

export interface ImplantedMd5 {
  /** 32 lowercase hex digits. */
  readonly md5: string;
  readonly skipSectors: number;
  /** RHLISOSTATUS, when recorded. */
  readonly supported?: number;
  /** FRAGMENT SUMS (60 characters), when recorded. */
  readonly fragmentSums?: string;
  readonly fragmentCount: number;
}

const corrupt = (field: string, message: string, offset?: number) => new CorruptImageError(FORMAT, field, message, offset);

/**
 * The implanted MD5 in an application-use field, or undefined when there is none (no "ISO MD5SUM = "
 * and "SKIPSECTORS = "). `base` is the field's byte offset, for errors.
 */
export function decodeImplantedMd5(appdata: Uint8Array, base = 0): ImplantedMd5 | undefined {
  if (appdata.byteLength !== APPDATA_SIZE) throw new RangeError(`an application-use field is ${APPDATA_SIZE} bytes, not ${appdata.byteLength}`);
  const text = Buffer.from(appdata).toString('latin1');
  const fields = new Map<string, { value: string; at: number }>();
  let at = 0;
  for (const part of text.split(';')) {
    const m = /^(ISO MD5SUM|SKIPSECTORS|FRAGMENT SUMS|FRAGMENT COUNT) = (.*)$|^(RHLISOSTATUS)=(.*)$/s.exec(part);
    if (m !== null) {
      const key = (m[1] ?? m[3]) as string;
      if (!fields.has(key)) fields.set(key, { value: (m[2] ?? m[4]) as string, at: base + at });
    }
    at += part.length + 1;
  }
  const sum = fields.get('ISO MD5SUM');
  const skip = fields.get('SKIPSECTORS');
  if (sum === undefined && skip === undefined) return undefined;
  if (sum === undefined) throw corrupt('ISO MD5SUM', 'SKIPSECTORS is recorded without a sum', skip?.at);
  if (!/^[0-9a-f]{32}$/.test(sum.value)) throw corrupt('ISO MD5SUM', `${JSON.stringify(sum.value.slice(0, 40))} is not 32 lowercase hex digits`, sum.at);
  if (skip === undefined) throw corrupt('SKIPSECTORS', 'the sum is recorded without SKIPSECTORS', sum.at);
  const number = (f: { value: string; at: number }, name: string, max: number): number => {
    if (!/^\d{1,10}$/.test(f.value) || Number(f.value) > max) throw corrupt(name, `${JSON.stringify(f.value.slice(0, 40))} is not a whole number up to ${max}`, f.at);
    return Number(f.value);
  };
  const skipSectors = number(skip, 'SKIPSECTORS', 0xffffffff);
  const status = fields.get('RHLISOSTATUS');
  const count = fields.get('FRAGMENT COUNT');
  const fragmentCount = count !== undefined ? number(count, 'FRAGMENT COUNT', FRAGMENT_SUM_CHARS) : 20;
  const sums = fields.get('FRAGMENT SUMS');
  if (sums !== undefined && fragmentCount > 0) {
    if (!/^[0-9a-f]{60}$/.test(sums.value)) throw corrupt('FRAGMENT SUMS', `${JSON.stringify(sums.value.slice(0, 70))} is not 60 lowercase hex digits`, sums.at);
    if (FRAGMENT_SUM_CHARS % fragmentCount !== 0) throw corrupt('FRAGMENT COUNT', `${fragmentCount} does not divide the 60 fragment sum characters`, count?.at);
  }
  return {
    md5: sum.value,
    skipSectors,
    ...(status !== undefined ? { supported: number(status, 'RHLISOSTATUS', 0xffffffff) } : {}),
    ...(sums !== undefined ? { fragmentSums: sums.value } : {}),
    fragmentCount,
  };
}

/** The application-use field implantisomd5 writes for `v` (512 bytes, space-padded). */
export function encodeImplantedMd5(v: ImplantedMd5): Uint8Array {
  if (!/^[0-9a-f]{32}$/.test(v.md5)) throw new RangeError(`${JSON.stringify(v.md5)} is not 32 lowercase hex digits`);
  if (v.fragmentSums !== undefined && !/^[0-9a-f]{60}$/.test(v.fragmentSums)) throw new RangeError('fragment sums are 60 lowercase hex digits');
  for (const [name, n] of [['skip sectors', v.skipSectors], ['fragment count', v.fragmentCount], ['supported', v.supported ?? 0]] as const) {
    if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw new RangeError(`${name} ${n}`);
  }
  const parts = [`ISO MD5SUM = ${v.md5}`, `SKIPSECTORS = ${v.skipSectors}`];
  if (v.supported !== undefined) parts.push(`RHLISOSTATUS=${v.supported}`);
  if (v.fragmentSums !== undefined) parts.push(`FRAGMENT SUMS = ${v.fragmentSums}`);
  parts.push(`FRAGMENT COUNT = ${v.fragmentCount}`, 'THIS IS NOT THE SAME AS RUNNING MD5SUM ON THIS ISO!!');
  const text = parts.join(';');
  if (text.length >= APPDATA_SIZE) throw new RangeError('the implanted md5 text does not fit the application-use field');
  const out = new Uint8Array(APPDATA_SIZE).fill(0x20);
  out.set(Buffer.from(text, 'latin1'));
  return out;
}

/** Where the primary volume descriptor is, and the volume's size in bytes. */
async function primaryDescriptor(disk: Disk): Promise<{ at: number; volumeBytes: number }> {
  for (let i = 0; i < 64; i++) {
    const at = (SYSTEM_AREA_SECTORS + i) * SECTOR;
    if (at + SECTOR > disk.size) break;
    const d = await readAt(disk, at, SECTOR);
    if (Buffer.from(d.subarray(1, 6)).toString('latin1') !== 'CD001') throw corrupt('volume descriptor', 'no CD001 identifier', at + 1);
    if (d[0] === 1) {
      const sectors = new DataView(d.buffer, d.byteOffset).getUint32(84, false);
      return { at, volumeBytes: sectors * SECTOR };
    }
    if (d[0] === 255) break;
  }
  throw corrupt('volume descriptor', 'no primary volume descriptor', SYSTEM_AREA_SECTORS * SECTOR);
}

/** The first character of each of the first `n` digest bytes in hex without a leading zero. */
function fragmentChars(hash: Hash, n: number): string {
  const digest = hash.copy().digest();
  let s = '';
  for (let i = 0; i < Math.min(n, digest.byteLength); i++) s += (digest[i] as number).toString(16)[0];
  return s;
}

/**
 * Hashes the covered bytes as isomd5sum does (the field blanked), calling `atFragment` with the
 * fragment characters at each fragment point; it may return false to stop.
 */
async function hashVolume(disk: Disk, fieldAt: number, covered: number, fragmentCount: number, atFragment: (part: number, chars: string) => boolean, onProgress?: (done: number, total: number) => void): Promise<string | undefined> {
  const hash = createHash('md5');
  const partSize = Math.floor(covered / (fragmentCount + 1));
  const perFragment = fragmentCount > 0 ? Math.floor(FRAGMENT_SUM_CHARS / fragmentCount) : 0;
  const buf = new Uint8Array(PIECE * 128);
  let previous = 0;
  for (let at = 0; at < covered; ) {
    const n = Math.min(buf.byteLength, covered - at);
    const chunk = buf.subarray(0, n);
    await disk.read(chunk, at);
    const from = Math.max(fieldAt - at, 0);
    const to = Math.min(fieldAt + APPDATA_SIZE - at, n);
    if (from < to) chunk.fill(0x20, from, to);
    for (let off = 0; off < n; off += PIECE) {
      const piece = chunk.subarray(off, Math.min(off + PIECE, n));
      hash.update(piece);
      if (fragmentCount > 0 && partSize > 0) {
        const part = Math.floor((at + off) / partSize);
        if (part !== previous) {
          if (!atFragment(part, fragmentChars(hash, perFragment))) return undefined;
          previous = part;
        }
      }
    }
    at += n;
    onProgress?.(at, covered);
  }
  return hash.digest('hex');
}

export type MediaCheck =
  | { readonly status: 'absent' }
  | { readonly status: 'passed'; readonly md5: string; readonly checkedBytes: number }
  | { readonly status: 'failed'; readonly md5: string; readonly checkedBytes: number; readonly where: string };

/** Checks an ISO's implanted MD5 as checkisomd5 does (stopping at the first fragment that differs). */
export async function checkImplantedMd5(disk: Disk, onProgress?: (done: number, total: number) => void): Promise<MediaCheck> {
  const pvd = await primaryDescriptor(disk);
  const fieldAt = pvd.at + APPDATA_OFFSET;
  const v = decodeImplantedMd5(await readAt(disk, fieldAt, APPDATA_SIZE), fieldAt);
  if (v === undefined) return { status: 'absent' };
  const covered = pvd.volumeBytes - v.skipSectors * SECTOR;
  if (covered <= 0 || pvd.volumeBytes > disk.size) {
    return { status: 'failed', md5: v.md5, checkedBytes: 0, where: `the volume of ${pvd.volumeBytes} bytes (less ${v.skipSectors} skipped sectors) does not fit the ${disk.size}-byte image` };
  }
  const perFragment = v.fragmentCount > 0 ? Math.floor(FRAGMENT_SUM_CHARS / v.fragmentCount) : 0;
  let bad: string | undefined;
  const sum = await hashVolume(disk, fieldAt, covered, v.fragmentSums !== undefined ? v.fragmentCount : 0, (part, chars) => {
    const want = (v.fragmentSums as string).slice((part - 1) * perFragment, (part - 1) * perFragment + chars.length);
    if (chars === want) return true;
    bad = `fragment ${part} of ${v.fragmentCount}`;
    return false;
  }, onProgress);
  if (bad !== undefined) return { status: 'failed', md5: v.md5, checkedBytes: covered, where: bad };
  if (sum !== v.md5) return { status: 'failed', md5: v.md5, checkedBytes: covered, where: `the whole volume (MD5 ${sum})` };
  return { status: 'passed', md5: v.md5, checkedBytes: covered };
}

/**
 * Implants an MD5 as implantisomd5 does (SKIPSECTORS 15, 20 fragments): the field must be blank
 * (spaces) unless `force`. Returns what was written.
 */
export async function implantMd5(disk: Disk, options: { supported?: number; force?: boolean } = {}): Promise<ImplantedMd5> {
  const pvd = await primaryDescriptor(disk);
  const fieldAt = pvd.at + APPDATA_OFFSET;
  const field = await readAt(disk, fieldAt, APPDATA_SIZE);
  if (options.force !== true && field.some((b) => b !== 0x20)) throw corrupt('application use', 'the field is in use: not implanting over it (force to replace it)', fieldAt);
  const skipSectors = 15;
  const fragmentCount = 20;
  const covered = pvd.volumeBytes - skipSectors * SECTOR;
  if (pvd.volumeBytes > disk.size) throw corrupt('volume space size', `a volume of ${pvd.volumeBytes} bytes does not fit the ${disk.size}-byte image`, pvd.at + 84);
  // Below this, fragment points would be skipped (parts smaller than a piece) and checkisomd5 would
  // read sums that were never written.
  if (covered < (fragmentCount + 1) * PIECE) throw new RangeError(`a volume of ${pvd.volumeBytes} bytes is too small for fragment sums (at least ${(fragmentCount + 1) * PIECE + skipSectors * SECTOR} bytes)`);
  let fragmentSums = '';
  const md5 = (await hashVolume(disk, fieldAt, covered, fragmentCount, (_part, chars) => {
    fragmentSums += chars;
    return true;
  })) as string;
  const v: ImplantedMd5 = { md5, skipSectors, supported: options.supported ?? 0, fragmentSums: fragmentSums.slice(0, FRAGMENT_SUM_CHARS), fragmentCount };
  await disk.write(encodeImplantedMd5(v), fieldAt);
  await disk.flush();
  return v;
}
