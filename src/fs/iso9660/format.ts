/**
 * ISO9660 (ECMA-119) basics shared by the structure codecs: sector size, both-endian fields (a value
 * stored little-endian then big-endian; the two copies must agree), the 7- and 17-byte dates, and the
 * typed error every decoder throws.
 */
import { CorruptImageError } from '../../errors.ts';

export const FORMAT = 'iso9660';
export const SECTOR = 2048;
export const SYSTEM_AREA_SECTORS = 16;

export function corrupt(field: string, message: string, offset?: number): CorruptImageError {
  return new CorruptImageError(FORMAT, field, message, offset);
}

function dv(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

/** Bytes [at, at + n) must exist in `b`; `base` is b's offset in the image, for the error. */
export function need(b: Uint8Array, at: number, n: number, field: string, base = 0): void {
  if (at < 0 || at + n > b.byteLength) throw corrupt(field, `needs ${n} bytes at ${at} of a ${b.byteLength}-byte structure`, base + at);
}

export function both16(b: Uint8Array, at: number, field: string, base = 0): number {
  need(b, at, 4, field, base);
  const le = b[at]! | (b[at + 1]! << 8);
  const be = (b[at + 2]! << 8) | b[at + 3]!;
  if (le !== be) throw corrupt(field, `little-endian ${le} and big-endian ${be} copies differ`, base + at);
  return le;
}

export function both32(b: Uint8Array, at: number, field: string, base = 0): number {
  need(b, at, 8, field, base);
  const le = (b[at]! | (b[at + 1]! << 8) | (b[at + 2]! << 16) | (b[at + 3]! << 24)) >>> 0;
  const be = ((b[at + 4]! << 24) | (b[at + 5]! << 16) | (b[at + 6]! << 8) | b[at + 7]!) >>> 0;
  if (le !== be) throw corrupt(field, `little-endian ${le} and big-endian ${be} copies differ`, base + at);
  return le;
}

export function putBoth16(b: Uint8Array, at: number, value: number): void {
  const v = dv(b);
  v.setUint16(at, value, true);
  v.setUint16(at + 2, value, false);
}

export function putBoth32(b: Uint8Array, at: number, value: number): void {
  const v = dv(b);
  v.setUint32(at, value, true);
  v.setUint32(at + 4, value, false);
}

export function u16le(b: Uint8Array, at: number): number {
  return b[at]! | (b[at + 1]! << 8);
}

export function u32le(b: Uint8Array, at: number): number {
  return dv(b).getUint32(at, true);
}

/** A point in time as seconds since the epoch (UTC) and nanoseconds. */
export interface IsoTime {
  readonly sec: number;
  readonly nsec: number;
}

function checkedOffset(raw: number, field: string, offset: number): number {
  const signed = raw > 127 ? raw - 256 : raw;
  if (signed < -48 || signed > 52) throw corrupt(field, `GMT offset ${signed} quarter hours is outside -48..52`, offset);
  return signed;
}

/** Days since 1970-01-01 of a proleptic Gregorian date (Date.UTC without the Date; this runs per record). */
export function daysFromCivil(y: number, m: number, d: number): number {
  const yy = m <= 2 ? y - 1 : y;
  const era = Math.floor(yy / 400);
  const yoe = yy - era * 400;
  const doy = Math.floor((153 * (m + (m > 2 ? -3 : 9)) + 2) / 5) + d - 1;
  const doe = yoe * 365 + Math.floor(yoe / 4) - Math.floor(yoe / 100) + doy;
  return era * 146097 + doe - 719468;
}

/** The 7-byte directory-record date (years since 1900 … seconds, GMT offset in 15-minute units). */
export function decodeShortDate(b: Uint8Array, at: number, field: string, base = 0): IsoTime {
  need(b, at, 7, field, base);
  const [y, mo, d, h, mi, s] = [b[at]!, b[at + 1]!, b[at + 2]!, b[at + 3]!, b[at + 4]!, b[at + 5]!];
  const gmt = checkedOffset(b[at + 6]!, field, base + at + 6);
  if (mo === 0 && d === 0) return { sec: 0, nsec: 0 };
  if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || s > 60) {
    throw corrupt(field, `not a date: ${1900 + y}-${mo}-${d} ${h}:${mi}:${s}`, base + at);
  }
  return { sec: daysFromCivil(1900 + y, mo, d) * 86400 + h * 3600 + mi * 60 + s - gmt * 900, nsec: 0 };
}

export function encodeShortDate(t: IsoTime, gmtQuarters = 0): Uint8Array {
  const out = new Uint8Array(7);
  if (t.sec === 0 && t.nsec === 0) return out;
  const d = new Date((t.sec + gmtQuarters * 900) * 1000);
  out.set([d.getUTCFullYear() - 1900, d.getUTCMonth() + 1, d.getUTCDate(), d.getUTCHours(), d.getUTCMinutes(), d.getUTCSeconds(), gmtQuarters & 0xff]);
  return out;
}

/** The 17-byte volume-descriptor date ("YYYYMMDDHHMMSScc" digits + GMT offset); all zeros/digits '0' = unset. */
export function decodeLongDate(b: Uint8Array, at: number, field: string, base = 0): IsoTime | undefined {
  need(b, at, 17, field, base);
  const digits = new TextDecoder('latin1').decode(b.subarray(at, at + 16));
  if (/^[0\0 ]{16}$/.test(digits) && (b[at + 16] === 0)) return undefined;
  const m = /^(\d{4})(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)$/.exec(digits);
  if (!m) throw corrupt(field, `not a date: ${JSON.stringify(digits)}`, base + at);
  const [y, mo, d, h, mi, s, cs] = m.slice(1).map(Number) as [number, number, number, number, number, number, number];
  if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || s > 60) throw corrupt(field, `not a date: ${digits}`, base + at);
  const gmt = checkedOffset(b[at + 16]!, field, base + at + 16);
  return { sec: Date.UTC(y, mo - 1, d, h, mi, s) / 1000 - gmt * 900, nsec: cs * 10_000_000 };
}

export function encodeLongDate(t: IsoTime | undefined): Uint8Array {
  const out = new Uint8Array(17);
  if (t === undefined) {
    out.fill(0x30, 0, 16);
    return out;
  }
  const d = new Date(t.sec * 1000);
  const p = (n: number, w: number) => String(n).padStart(w, '0');
  const text = `${p(d.getUTCFullYear(), 4)}${p(d.getUTCMonth() + 1, 2)}${p(d.getUTCDate(), 2)}${p(d.getUTCHours(), 2)}${p(d.getUTCMinutes(), 2)}${p(d.getUTCSeconds(), 2)}${p(Math.floor(t.nsec / 10_000_000), 2)}`;
  for (let i = 0; i < 16; i++) out[i] = text.charCodeAt(i);
  return out;
}

/** A fixed-width padded text field (a-/d-characters or, for Joliet, UCS-2 big-endian). */
export function decodeText(b: Uint8Array, ucs2: boolean): string {
  if (ucs2) {
    let s = '';
    for (let i = 0; i + 1 < b.byteLength; i += 2) s += String.fromCharCode((b[i]! << 8) | b[i + 1]!);
    return s.replace(/[\0 ]+$/, '');
  }
  return new TextDecoder('latin1').decode(b).replace(/[\0 ]+$/, '');
}

export function encodeText(text: string, width: number, ucs2: boolean): Uint8Array {
  const out = new Uint8Array(width);
  if (ucs2) {
    for (let i = 0; i + 1 < width; i += 2) {
      const c = i / 2 < text.length ? text.charCodeAt(i / 2) : 0x20;
      out[i] = c >> 8;
      out[i + 1] = c & 0xff;
    }
  } else {
    out.fill(0x20);
    for (let i = 0; i < Math.min(width, text.length); i++) out[i] = text.charCodeAt(i) & 0xff;
  }
  return out;
}
