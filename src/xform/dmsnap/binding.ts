/**
 * The base binding: which base image an overlay belongs to. The kernel reads only the first 16 bytes
 * of the header chunk and writes the chunk (zero-filled) only when it initialises a new snapshot or
 * invalidates one, so a record at byte 256 of chunk 0 travels with the overlay file, unseen by the
 * kernel. It fits in the first sector, so every chunk size has room for it.
 *
 * Record (128 bytes, little-endian): 0 "LSTKBIND"; 8 u16 version (1); 10 u16 record length (128);
 * 12 u32 crc32 of the record with this field zero; 16 u64 base size in bytes; 24 u8 fingerprint kind
 * (1 = sampled sha-256, see fingerprint.ts); 25..31 zero; 32 fingerprint[32]; 64 u8 label length;
 * 65 label (UTF-8, at most 63 bytes); rest zero.
 */
import { crc32 } from 'node:zlib';
import { view } from '../../io/bytes.ts';

export const BINDING_OFFSET = 256;
export const BINDING_BYTES = 128;
const MAGIC = new TextEncoder().encode('LSTKBIND');
const VERSION = 1;
export const FINGERPRINT_SAMPLED_SHA256 = 1;
const MAX_LABEL = 63;

export interface BaseBinding {
  readonly baseSize: number;
  readonly fingerprintKind: number;
  readonly fingerprint: Uint8Array;
  /** A human hint only (e.g. the base's file name); never used for matching. */
  readonly label: string;
}

export type BindingState =
  | { readonly state: 'unbound' }
  | { readonly state: 'bound'; readonly binding: BaseBinding }
  | { readonly state: 'damaged'; readonly reason: string };

export function decodeBinding(headerChunk: Uint8Array): BindingState {
  if (headerChunk.byteLength < BINDING_OFFSET + BINDING_BYTES) return { state: 'unbound' };
  const rec = headerChunk.subarray(BINDING_OFFSET, BINDING_OFFSET + BINDING_BYTES);
  if (!MAGIC.every((b, i) => rec[i] === b)) {
    return rec.every((b) => b === 0) ? { state: 'unbound' } : { state: 'damaged', reason: 'unknown bytes where the binding record belongs' };
  }
  const dv = view(rec);
  const version = dv.getUint16(8, true);
  const length = dv.getUint16(10, true);
  if (version !== VERSION || length !== BINDING_BYTES) return { state: 'damaged', reason: `binding record version ${version}, length ${length} not understood` };
  const stored = dv.getUint32(12, true);
  const copy = rec.slice();
  view(copy).setUint32(12, 0, true);
  if (crc32(copy) !== stored) return { state: 'damaged', reason: 'binding record checksum mismatch' };
  const baseSize = dv.getBigUint64(16, true);
  const labelLength = rec[64] ?? 0;
  if (baseSize > BigInt(Number.MAX_SAFE_INTEGER) || labelLength > MAX_LABEL) return { state: 'damaged', reason: 'binding record fields out of range' };
  return {
    state: 'bound',
    binding: {
      baseSize: Number(baseSize),
      fingerprintKind: rec[24] ?? 0,
      fingerprint: rec.slice(32, 64),
      label: new TextDecoder().decode(rec.subarray(65, 65 + labelLength)),
    },
  };
}

export function encodeBinding(b: BaseBinding): Uint8Array {
  const rec = new Uint8Array(BINDING_BYTES);
  const dv = view(rec);
  rec.set(MAGIC, 0);
  dv.setUint16(8, VERSION, true);
  dv.setUint16(10, BINDING_BYTES, true);
  dv.setBigUint64(16, BigInt(b.baseSize), true);
  rec[24] = b.fingerprintKind;
  if (b.fingerprint.byteLength !== 32) throw new RangeError('fingerprint must be 32 bytes');
  rec.set(b.fingerprint, 32);
  let label: Uint8Array = new TextEncoder().encode(b.label);
  if (label.byteLength > MAX_LABEL) label = truncateUtf8(label, MAX_LABEL);
  rec[64] = label.byteLength;
  rec.set(label, 65);
  dv.setUint32(12, crc32(rec), true);
  return rec;
}

function truncateUtf8(bytes: Uint8Array, max: number): Uint8Array {
  let end = max;
  while (end > 0 && ((bytes[end] ?? 0) & 0xc0) === 0x80) end--;
  return bytes.subarray(0, end);
}

export function sameBase(a: BaseBinding, b: BaseBinding): boolean {
  return a.baseSize === b.baseSize && a.fingerprintKind === b.fingerprintKind && Buffer.from(a.fingerprint).equals(Buffer.from(b.fingerprint));
}
