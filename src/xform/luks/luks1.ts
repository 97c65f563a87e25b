/** The LUKS1 header (592 bytes used of the first sector, big-endian); decode validates every field. */
import { CorruptImageError, UnsupportedFeatureError } from '../../errors.ts';
import { asciiz, view } from '../../io/bytes.ts';

const FORMAT = 'luks1';
export const LUKS1_HEADER_SIZE = 592;
export const LUKS1_KEYSLOTS = 8;
export const LUKS1_KEY_ENABLED = 0x00ac71f3;
export const LUKS1_KEY_DISABLED = 0x0000dead;

export interface Luks1Keyslot {
  readonly id: number;
  readonly active: boolean;
  readonly iterations: number;
  readonly salt: Uint8Array;
  /** In 512-byte sectors. */
  readonly keyMaterialOffset: number;
  readonly stripes: number;
}

export interface Luks1Header {
  readonly version: 1;
  readonly cipherName: string;
  readonly cipherMode: string;
  readonly hashSpec: string;
  /** In 512-byte sectors. */
  readonly payloadOffset: number;
  readonly keyBytes: number;
  readonly mkDigest: Uint8Array;
  readonly mkDigestSalt: Uint8Array;
  readonly mkDigestIterations: number;
  readonly uuid: string;
  readonly keyslots: readonly Luks1Keyslot[];
}

function text(bytes: Uint8Array, at: number, len: number, name: string): string {
  const raw = bytes.subarray(at, at + len);
  if (raw.indexOf(0) < 0) throw new CorruptImageError(FORMAT, name, 'string is not NUL-terminated', at);
  const s = asciiz(raw);
  if (!/^[\x20-\x7e]*$/.test(s)) throw new CorruptImageError(FORMAT, name, 'string has non-printable characters', at);
  return s;
}

/** Decodes and validates a LUKS1 header; `deviceSize` bounds the offsets. */
export function decodeLuks1(bytes: Uint8Array, deviceSize: number): Luks1Header {
  if (bytes.byteLength < LUKS1_HEADER_SIZE) throw new CorruptImageError(FORMAT, 'header', 'truncated header', 0);
  const dv = view(bytes);
  const magic = [0x4c, 0x55, 0x4b, 0x53, 0xba, 0xbe];
  if (!magic.every((b, i) => bytes[i] === b)) throw new CorruptImageError(FORMAT, 'magic', 'not a LUKS header', 0);
  const version = dv.getUint16(6, false);
  if (version !== 1) throw new UnsupportedFeatureError(FORMAT, 'version', String(version));
  const keyBytes = dv.getUint32(108, false);
  if (keyBytes < 1 || keyBytes > 1024) throw new CorruptImageError(FORMAT, 'keyBytes', `key size ${keyBytes}`, 108);
  const payloadOffset = dv.getUint32(104, false);
  if (payloadOffset * 512 > deviceSize) throw new CorruptImageError(FORMAT, 'payloadOffset', `payload at sector ${payloadOffset} is past the end of the device`, 104);
  const mkDigestIterations = dv.getUint32(164, false);
  if (mkDigestIterations < 1) throw new CorruptImageError(FORMAT, 'mkDigestIterations', 'zero iterations', 164);
  const keyslots: Luks1Keyslot[] = [];
  const materialSectors = Math.ceil((keyBytes * 4000) / 512);
  for (let i = 0; i < LUKS1_KEYSLOTS; i++) {
    const at = 208 + i * 48;
    const state = dv.getUint32(at, false);
    if (state !== LUKS1_KEY_ENABLED && state !== LUKS1_KEY_DISABLED) {
      throw new CorruptImageError(FORMAT, `keyslot ${i}.active`, `invalid state 0x${state.toString(16)}`, at);
    }
    const slot: Luks1Keyslot = {
      id: i,
      active: state === LUKS1_KEY_ENABLED,
      iterations: dv.getUint32(at + 4, false),
      salt: bytes.slice(at + 8, at + 40),
      keyMaterialOffset: dv.getUint32(at + 40, false),
      stripes: dv.getUint32(at + 44, false),
    };
    if (slot.active) {
      if (slot.stripes !== 4000) throw new CorruptImageError(FORMAT, `keyslot ${i}.stripes`, `${slot.stripes} stripes (LUKS uses 4000)`, at + 44);
      if (slot.iterations < 1) throw new CorruptImageError(FORMAT, `keyslot ${i}.iterations`, 'zero iterations', at + 4);
      const sectors = Math.ceil((keyBytes * slot.stripes) / 512);
      if (slot.keyMaterialOffset < 1 || (slot.keyMaterialOffset + sectors) * 512 > deviceSize) {
        throw new CorruptImageError(FORMAT, `keyslot ${i}.keyMaterialOffset`, `key material at sector ${slot.keyMaterialOffset} is outside the device`, at + 40);
      }
      if (payloadOffset !== 0 && slot.keyMaterialOffset + materialSectors > payloadOffset) {
        throw new CorruptImageError(FORMAT, `keyslot ${i}.keyMaterialOffset`, 'key material overlaps the payload', at + 40);
      }
    }
    keyslots.push(slot);
  }
  return {
    version: 1,
    cipherName: text(bytes, 8, 32, 'cipherName'),
    cipherMode: text(bytes, 40, 32, 'cipherMode'),
    hashSpec: text(bytes, 72, 32, 'hashSpec'),
    payloadOffset,
    keyBytes,
    mkDigest: bytes.slice(112, 132),
    mkDigestSalt: bytes.slice(132, 164),
    mkDigestIterations,
    uuid: text(bytes, 168, 40, 'uuid'),
    keyslots,
  };
}
