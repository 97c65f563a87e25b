/** The 4096-byte LUKS2 binary header (big-endian), one per copy; decode validates, encode writes it back. */
import { createHash } from 'node:crypto';
import { CorruptImageError, UnsupportedFeatureError } from '../../errors.ts';
import { asciiz, view } from '../../io/bytes.ts';

export const LUKS2_BIN_SIZE = 4096;
export const LUKS2_MAGIC_PRIMARY = Uint8Array.of(0x4c, 0x55, 0x4b, 0x53, 0xba, 0xbe);
export const LUKS2_MAGIC_SECONDARY = Uint8Array.of(0x53, 0x4b, 0x55, 0x4c, 0xba, 0xbe);
/** Allowed metadata (binary + JSON) sizes; also where a lost primary's secondary copy may be. */
export const LUKS2_HDR_SIZES = [0x4000, 0x8000, 0x10000, 0x20000, 0x40000, 0x80000, 0x100000, 0x200000, 0x400000] as const;

const FORMAT = 'luks2';
const CHECKSUM_ALGS: Record<string, number> = { sha1: 20, sha256: 32, sha512: 64 };

export interface Luks2BinaryHeader {
  readonly copy: 'primary' | 'secondary';
  readonly version: 2;
  readonly hdrSize: number;
  readonly seqid: bigint;
  readonly label: string;
  readonly checksumAlg: string;
  readonly salt: Uint8Array;
  readonly uuid: string;
  readonly subsystem: string;
  readonly hdrOffset: number;
  readonly csum: Uint8Array;
}

function field(bytes: Uint8Array, at: number, len: number, name: string, base: number): string {
  const raw = bytes.subarray(at, at + len);
  if (raw.indexOf(0) < 0) throw new CorruptImageError(FORMAT, name, 'string is not NUL-terminated', base + at);
  return asciiz(raw);
}

/** Returns true when the 6 bytes at 0 are a LUKS magic of either copy (and says which). */
export function luksMagic(bytes: Uint8Array): 'primary' | 'secondary' | undefined {
  const m = bytes.subarray(0, 6);
  if (m.every((b, i) => b === LUKS2_MAGIC_PRIMARY[i])) return 'primary';
  if (m.every((b, i) => b === LUKS2_MAGIC_SECONDARY[i])) return 'secondary';
  return undefined;
}

/** Decodes the binary header found at byte `offset` of the device, validating every field. */
export function decodeLuks2Binary(bytes: Uint8Array, offset: number): Luks2BinaryHeader {
  if (bytes.byteLength < LUKS2_BIN_SIZE) throw new CorruptImageError(FORMAT, 'header', 'truncated binary header', offset);
  const dv = view(bytes);
  const copy = luksMagic(bytes);
  if (copy === undefined) throw new CorruptImageError(FORMAT, 'magic', 'not a LUKS header', offset);
  if (copy !== (offset === 0 ? 'primary' : 'secondary')) {
    throw new CorruptImageError(FORMAT, 'magic', `${copy} magic found where the ${offset === 0 ? 'primary' : 'secondary'} header belongs`, offset);
  }
  const version = dv.getUint16(6, false);
  if (version !== 2) throw new UnsupportedFeatureError(FORMAT, 'version', `header version ${version} in a LUKS2 header slot`);
  const hdrSizeBig = dv.getBigUint64(8, false);
  const hdrSize = Number(hdrSizeBig);
  if (!LUKS2_HDR_SIZES.includes(hdrSize as (typeof LUKS2_HDR_SIZES)[number]) || BigInt(hdrSize) !== hdrSizeBig) {
    throw new CorruptImageError(FORMAT, 'hdr_size', `invalid metadata size ${hdrSizeBig}`, offset + 8);
  }
  const hdrOffsetBig = dv.getBigUint64(256, false);
  if (hdrOffsetBig !== BigInt(offset)) {
    throw new CorruptImageError(FORMAT, 'hdr_offset', `header says it is at ${hdrOffsetBig}, found at ${offset}`, offset + 256);
  }
  if (copy === 'secondary' && offset !== hdrSize) {
    throw new CorruptImageError(FORMAT, 'hdr_size', `secondary header at ${offset} but metadata size is ${hdrSize}`, offset + 8);
  }
  const checksumAlg = field(bytes, 72, 32, 'checksum_alg', offset);
  if (CHECKSUM_ALGS[checksumAlg] === undefined) throw new UnsupportedFeatureError(FORMAT, 'checksum algorithm', checksumAlg);
  return {
    copy,
    version: 2,
    hdrSize,
    seqid: dv.getBigUint64(16, false),
    label: field(bytes, 24, 48, 'label', offset),
    checksumAlg,
    salt: bytes.slice(104, 168),
    uuid: field(bytes, 168, 40, 'uuid', offset),
    subsystem: field(bytes, 208, 48, 'subsystem', offset),
    hdrOffset: offset,
    csum: bytes.slice(448, 512),
  };
}

function putString(bytes: Uint8Array, at: number, len: number, text: string, name: string): void {
  const enc = new TextEncoder().encode(text);
  if (enc.byteLength >= len) throw new RangeError(`luks2: ${name} "${text}" is longer than ${len - 1} bytes`);
  bytes.set(enc, at);
}

/** Encodes a binary header; `csum` is written as given (zeros while the checksum is computed). */
export function encodeLuks2Binary(h: Omit<Luks2BinaryHeader, 'version'>): Uint8Array {
  const bytes = new Uint8Array(LUKS2_BIN_SIZE);
  const dv = view(bytes);
  bytes.set(h.copy === 'primary' ? LUKS2_MAGIC_PRIMARY : LUKS2_MAGIC_SECONDARY, 0);
  dv.setUint16(6, 2, false);
  dv.setBigUint64(8, BigInt(h.hdrSize), false);
  dv.setBigUint64(16, h.seqid, false);
  putString(bytes, 24, 48, h.label, 'label');
  putString(bytes, 72, 32, h.checksumAlg, 'checksum_alg');
  if (h.salt.byteLength !== 64) throw new RangeError('luks2: salt must be 64 bytes');
  bytes.set(h.salt, 104);
  putString(bytes, 168, 40, h.uuid, 'uuid');
  putString(bytes, 208, 48, h.subsystem, 'subsystem');
  dv.setBigUint64(256, BigInt(h.hdrOffset), false);
  bytes.set(h.csum.subarray(0, 64), 448);
  return bytes;
}

/** hash(binary header with csum zeroed ‖ whole JSON area), zero-padded to 64 bytes. */
export function luks2Checksum(alg: string, binary: Uint8Array, jsonArea: Uint8Array): Uint8Array {
  const zeroed = new Uint8Array(binary.subarray(0, LUKS2_BIN_SIZE));
  zeroed.fill(0, 448, 512);
  const out = new Uint8Array(64);
  out.set(createHash(alg).update(zeroed).update(jsonArea).digest());
  return out;
}

export function checksumLength(alg: string): number {
  return CHECKSUM_ALGS[alg] ?? 0;
}
