/**
 * The LUKS2 header pair on a Disk: reading (primary, else secondary; the higher valid seqid wins) and
 * writing (seqid bumped once; each copy written as cryptsetup does: binary header with a zero checksum,
 * then the JSON area, then the binary header with its checksum, then a flush; primary before secondary).
 *
 * Design notes (crash safety)
 * - While a copy is being written its checksum does not match (the zero-checksum binary header goes
 *   first), so a torn copy is ignored and the other copy, still complete, is used.
 * - That only holds if the other copy is current. `repairPair` therefore brings a stale or damaged copy up
 *   to date by rewriting only that copy, before any change; a change then always starts from two equal
 *   copies, and an interruption leaves either the old or the new header.
 */
import { randomBytes } from 'node:crypto';
import { CorruptImageError, LivestickError } from '../../errors.ts';
import { checkRange, readAt, type Disk } from '../../io/disk.ts';
import { equalBytes } from '../../io/bytes.ts';
import {
  LUKS2_BIN_SIZE,
  LUKS2_HDR_SIZES,
  checksumLength,
  decodeLuks2Binary,
  encodeLuks2Binary,
  luks2Checksum,
  type Luks2BinaryHeader,
} from './luks2-binary.ts';
import { encodeLuks2JsonArea, parseLuks2JsonArea, type JsonObject, type Luks2Metadata } from './luks2-metadata.ts';

export interface Luks2HeaderCopy {
  readonly binary: Luks2BinaryHeader;
  readonly metadata: Luks2Metadata;
}

export interface Luks2HeaderPair {
  /** The copy in use (the valid one with the higher seqid; the primary on a tie). */
  readonly active: Luks2HeaderCopy;
  readonly primary: Luks2HeaderCopy | undefined;
  readonly secondary: Luks2HeaderCopy | undefined;
  /** Why a copy was rejected, for the user. */
  readonly primaryError: LivestickError | undefined;
  readonly secondaryError: LivestickError | undefined;
  /** Both copies are valid and carry the same seqid. */
  readonly inSync: boolean;
}

async function readCopy(disk: Disk, offset: number): Promise<Luks2HeaderCopy> {
  if (offset + LUKS2_BIN_SIZE > disk.size) throw new CorruptImageError('luks2', 'header', `device too small for a header at ${offset}`, offset);
  const bin = await readAt(disk, offset, LUKS2_BIN_SIZE);
  const binary = decodeLuks2Binary(bin, offset);
  const jsonSize = binary.hdrSize - LUKS2_BIN_SIZE;
  if (offset + binary.hdrSize > disk.size) throw new CorruptImageError('luks2', 'json', 'device is truncated inside the JSON area', offset + LUKS2_BIN_SIZE);
  const area = await readAt(disk, offset + LUKS2_BIN_SIZE, jsonSize);
  const sum = luks2Checksum(binary.checksumAlg, bin, area);
  const n = checksumLength(binary.checksumAlg);
  if (!equalBytes(sum.subarray(0, n), binary.csum.subarray(0, n))) {
    throw new CorruptImageError('luks2', 'csum', `${binary.copy} header checksum mismatch`, offset + 448);
  }
  return { binary, metadata: parseLuks2JsonArea(area, jsonSize, offset + LUKS2_BIN_SIZE) };
}

function asLivestick(err: unknown): LivestickError {
  if (err instanceof LivestickError) return err;
  throw err;
}

/** Reads both copies. Throws the primary's error when neither is usable. */
export async function readLuks2Pair(disk: Disk): Promise<Luks2HeaderPair> {
  let primary: Luks2HeaderCopy | undefined;
  let secondary: Luks2HeaderCopy | undefined;
  let primaryError: LivestickError | undefined;
  let secondaryError: LivestickError | undefined;
  try {
    primary = await readCopy(disk, 0);
  } catch (err) {
    primaryError = asLivestick(err);
  }
  // The secondary sits at the primary's metadata size; with no usable primary, try each legal size.
  const candidates = primary ? [primary.binary.hdrSize] : [...LUKS2_HDR_SIZES];
  for (const at of candidates) {
    try {
      secondary = await readCopy(disk, at);
      secondaryError = undefined;
      break;
    } catch (err) {
      secondaryError ??= asLivestick(err);
    }
  }
  if (primary && secondary && primary.binary.hdrSize !== secondary.binary.hdrSize) {
    secondaryError = new CorruptImageError('luks2', 'hdr_size', 'the two header copies disagree on the metadata size');
    secondary = undefined;
  }
  if (primary && secondary && primary.binary.uuid !== secondary.binary.uuid) {
    secondaryError = new CorruptImageError('luks2', 'uuid', 'the two header copies carry different UUIDs');
    secondary = undefined;
  }
  const active = primary && secondary ? (secondary.binary.seqid > primary.binary.seqid ? secondary : primary) : (primary ?? secondary);
  if (!active) throw primaryError ?? secondaryError ?? new CorruptImageError('luks2', 'header', 'no LUKS2 header');
  const inSync = primary !== undefined && secondary !== undefined && primary.binary.seqid === secondary.binary.seqid;
  return { active, primary, secondary, primaryError, secondaryError, inSync };
}

export interface Luks2HeaderFields {
  readonly hdrSize: number;
  readonly seqid: bigint;
  readonly label: string;
  readonly subsystem: string;
  readonly uuid: string;
  readonly checksumAlg: string;
}

/** Writes one copy the way cryptsetup's hdr_write_disk does, then flushes. */
export async function writeLuks2Copy(disk: Disk, which: 'primary' | 'secondary', fields: Luks2HeaderFields, json: JsonObject, salt: Uint8Array = randomBytes(64)): Promise<void> {
  const offset = which === 'primary' ? 0 : fields.hdrSize;
  checkRange(disk, offset, fields.hdrSize, 'LUKS2 header write');
  const area = encodeLuks2JsonArea(json, fields.hdrSize - LUKS2_BIN_SIZE);
  const header = { ...fields, copy: which, salt, hdrOffset: offset, csum: new Uint8Array(64) } as const;
  await disk.write(encodeLuks2Binary(header), offset);
  await disk.write(area, offset + LUKS2_BIN_SIZE);
  const bin = encodeLuks2Binary(header);
  const withSum = encodeLuks2Binary({ ...header, csum: luks2Checksum(fields.checksumAlg, bin, area) });
  await disk.write(withSum, offset);
  await disk.flush();
}

/** Writes both copies with `fields.seqid` (the caller bumps it once): primary, then secondary. */
export async function writeLuks2Pair(disk: Disk, fields: Luks2HeaderFields, json: JsonObject, random: (n: number) => Uint8Array = randomBytes): Promise<void> {
  await writeLuks2Copy(disk, 'primary', fields, json, random(64));
  await writeLuks2Copy(disk, 'secondary', fields, json, random(64));
}

export function fieldsOf(b: Luks2BinaryHeader): Luks2HeaderFields {
  return { hdrSize: b.hdrSize, seqid: b.seqid, label: b.label, subsystem: b.subsystem, uuid: b.uuid, checksumAlg: b.checksumAlg };
}

/**
 * Makes both copies equal to the active one by rewriting only the copy that is damaged or stale (same
 * seqid), as cryptsetup's auto-repair does. Returns which copy was rewritten.
 */
export async function repairLuks2Pair(disk: Disk, pair: Luks2HeaderPair, random: (n: number) => Uint8Array = randomBytes): Promise<'primary' | 'secondary' | undefined> {
  if (pair.inSync) return undefined;
  const stale = pair.active === pair.primary ? 'secondary' : 'primary';
  await writeLuks2Copy(disk, stale, fieldsOf(pair.active.binary), pair.active.metadata.json, random(64));
  return stale;
}
