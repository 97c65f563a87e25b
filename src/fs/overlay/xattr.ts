/**
 * The values of overlayfs's private xattrs (`trusted.overlay.*`, or `user.overlay.*` in userxattr
 * mode): one decode/encode pair per value, each decoder checking every byte and throwing
 * CorruptImageError('overlayfs', field) naming the path it came from.
 *
 * Design notes
 * - Names: `PREFIX.overlay.X` is private to overlayfs and never shown through the merged view;
 *   `PREFIX.overlay.overlay.X` is the nesting escape and shows as `PREFIX.overlay.X`.
 * - redirect: an absolute path from the overlay root ("/a/b", no empty component) or one relative
 *   name (no '/'); bounded to PATH_MAX bytes. metacopy: empty, or `struct ovl_metacopy` {u8 version
 *   (0), u8 len (= the value's length), u8 flags, u8 digest_algo, u8 digest[0..64]}. origin: empty
 *   ("copied up, origin unknown") or `struct ovl_fb` {u8 version (0), u8 magic 0xfb, u8 len (= the
 *   value's length), u8 flags (big-endian 1 | any-endian 2 | path-upper 4), u8 type, uuid[16],
 *   fid bytes}. opaque: "y" (opaque) or "x" (holds xattr whiteouts). impure: "y". protattr: a set of
 *   'a' (append-only) and 'i' (immutable). nlink: "U+n"/"L-n" style union link-count bookkeeping.
 *   uuid: 16 bytes.
 */
import { CorruptImageError } from '../../errors.ts';

export type XattrPrefix = 'trusted' | 'user';

export const PATH_MAX = 4096;
const NAME_MAX = 255;

function corrupt(field: string, path: string, message: string): CorruptImageError {
  return new CorruptImageError('overlayfs', field, message).withFile(path);
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

function text(value: Uint8Array, field: string, path: string): string {
  try {
    return utf8.decode(value);
  } catch {
    throw corrupt(field, path, 'is not valid UTF-8');
  }
}

/** The private-name prefix of a mode: "trusted.overlay." or "user.overlay.". */
export function privatePrefix(prefix: XattrPrefix): string {
  return `${prefix}.overlay.`;
}

/**
 * How a layer's xattr name shows through the overlay: private names are hidden (undefined), escaped
 * names lose one "overlay." level, everything else is unchanged.
 */
export function visibleXattrName(name: string, prefix: XattrPrefix): string | undefined {
  const p = privatePrefix(prefix);
  if (!name.startsWith(p)) return name;
  const escaped = `${p}overlay.`;
  if (name.startsWith(escaped) && name.length > escaped.length) return p + name.slice(escaped.length);
  return undefined;
}

/** The suffix of a private overlay name ("opaque" for "trusted.overlay.opaque"), else undefined. */
export function privateSuffix(name: string, prefix: XattrPrefix): string | undefined {
  const p = privatePrefix(prefix);
  if (!name.startsWith(p)) return undefined;
  const rest = name.slice(p.length);
  return rest === '' || rest.startsWith('overlay.') ? undefined : rest;
}

// ---- redirect --------------------------------------------------------------------------------

export type Redirect = { readonly absolute: true; readonly path: string; readonly parts: readonly string[] } | { readonly absolute: false; readonly name: string };

export function decodeRedirect(value: Uint8Array, path: string): Redirect {
  if (value.byteLength === 0) throw corrupt('redirect', path, 'is empty');
  if (value.byteLength > PATH_MAX) throw corrupt('redirect', path, `is ${value.byteLength} bytes (more than PATH_MAX, ${PATH_MAX})`);
  if (value.includes(0)) throw corrupt('redirect', path, 'contains a NUL byte');
  const s = text(value, 'redirect', path);
  if (s.startsWith('/')) {
    const parts = s.slice(1).split('/');
    if (parts.some((p) => p === '')) throw corrupt('redirect', path, `"${s}" has an empty component`);
    if (parts.some((p) => p === '.' || p === '..')) throw corrupt('redirect', path, `"${s}" has a "." or ".." component`);
    if (parts.some((p) => Buffer.byteLength(p) > NAME_MAX)) throw corrupt('redirect', path, `"${s}" has a component longer than ${NAME_MAX} bytes`);
    return { absolute: true, path: s, parts };
  }
  if (s.includes('/')) throw corrupt('redirect', path, `"${s}" is neither absolute nor a single name`);
  if (s === '.' || s === '..') throw corrupt('redirect', path, `"${s}" is not a name`);
  if (value.byteLength > NAME_MAX) throw corrupt('redirect', path, `the name is longer than ${NAME_MAX} bytes`);
  return { absolute: false, name: s };
}

export function encodeRedirect(r: Redirect): Uint8Array {
  return new TextEncoder().encode(r.absolute ? r.path : r.name);
}

// ---- metacopy --------------------------------------------------------------------------------

export interface Metacopy {
  /** Empty value: no digest recorded. */
  readonly flags: number;
  readonly digestAlgo: number;
  readonly digest: Uint8Array;
}

export const METACOPY_HEADER = 4;
export const METACOPY_MAX_DIGEST = 64;

export function decodeMetacopy(value: Uint8Array, path: string): Metacopy {
  if (value.byteLength === 0) return { flags: 0, digestAlgo: 0, digest: new Uint8Array(0) };
  if (value.byteLength < METACOPY_HEADER || value.byteLength > METACOPY_HEADER + METACOPY_MAX_DIGEST) throw corrupt('metacopy', path, `is ${value.byteLength} bytes (0 or ${METACOPY_HEADER}..${METACOPY_HEADER + METACOPY_MAX_DIGEST})`);
  if (value[0] !== 0) throw corrupt('metacopy', path, `version ${value[0]} is not 0`);
  if (value[1] !== value.byteLength) throw corrupt('metacopy', path, `len ${value[1]} is not the value's length ${value.byteLength}`);
  const digestAlgo = value[3]!;
  const digest = value.slice(METACOPY_HEADER);
  if (digestAlgo === 0 && digest.byteLength !== 0) throw corrupt('metacopy', path, 'has a digest but no digest algorithm');
  if (digestAlgo !== 0 && digest.byteLength === 0) throw corrupt('metacopy', path, `names digest algorithm ${digestAlgo} but holds no digest`);
  return { flags: value[2]!, digestAlgo, digest };
}

export function encodeMetacopy(m: Metacopy): Uint8Array {
  if (m.digestAlgo === 0 && m.digest.byteLength === 0 && m.flags === 0) return new Uint8Array(0);
  if (m.digest.byteLength > METACOPY_MAX_DIGEST) throw new RangeError(`a metacopy digest is at most ${METACOPY_MAX_DIGEST} bytes`);
  const out = new Uint8Array(METACOPY_HEADER + m.digest.byteLength);
  out[0] = 0;
  out[1] = out.byteLength;
  out[2] = m.flags;
  out[3] = m.digestAlgo;
  out.set(m.digest, METACOPY_HEADER);
  return out;
}

// ---- origin (struct ovl_fb) ------------------------------------------------------------------

export const OVL_FB_MAGIC = 0xfb;
export const OVL_FB_HEADER = 21;
export const OvlFhFlag = { bigEndian: 1, anyEndian: 2, pathUpper: 4 } as const;
const OVL_FH_FLAG_ALL = 7;
/** MAX_HANDLE_SZ (128) plus the header. */
const OVL_FB_MAX = 128 + OVL_FB_HEADER;

export interface OvlFileHandle {
  readonly flags: number;
  readonly type: number;
  /** The lower filesystem's UUID (all zero when it has none). */
  readonly uuid: Uint8Array;
  readonly fid: Uint8Array;
}

/** `overlay.origin` / `overlay.upper`: undefined for the empty value ("origin unknown"). */
export function decodeOvlFb(value: Uint8Array, path: string, field = 'origin'): OvlFileHandle | undefined {
  if (value.byteLength === 0) return undefined;
  if (value.byteLength < OVL_FB_HEADER) throw corrupt(field, path, `is ${value.byteLength} bytes, less than the ${OVL_FB_HEADER}-byte ovl_fb header`);
  if (value.byteLength > OVL_FB_MAX) throw corrupt(field, path, `is ${value.byteLength} bytes, more than ${OVL_FB_MAX}`);
  if (value[0] !== 0) throw corrupt(field, path, `ovl_fb version ${value[0]} is not 0`);
  if (value[1] !== OVL_FB_MAGIC) throw corrupt(field, path, `ovl_fb magic 0x${value[1]!.toString(16)} is not 0xfb`);
  if (value[2] !== value.byteLength) throw corrupt(field, path, `ovl_fb len ${value[2]} is not the value's length ${value.byteLength}`);
  if ((value[3]! & ~OVL_FH_FLAG_ALL) !== 0) throw corrupt(field, path, `ovl_fb flags 0x${value[3]!.toString(16)} has unknown bits`);
  return { flags: value[3]!, type: value[4]!, uuid: value.slice(5, 21), fid: value.slice(OVL_FB_HEADER) };
}

export function encodeOvlFb(fh: OvlFileHandle): Uint8Array {
  if (fh.uuid.byteLength !== 16) throw new RangeError('an ovl_fb uuid is 16 bytes');
  const len = OVL_FB_HEADER + fh.fid.byteLength;
  if (len > OVL_FB_MAX) throw new RangeError(`an ovl_fb is at most ${OVL_FB_MAX} bytes`);
  const out = new Uint8Array(len);
  out[1] = OVL_FB_MAGIC;
  out[2] = len;
  out[3] = fh.flags;
  out[4] = fh.type;
  out.set(fh.uuid, 5);
  out.set(fh.fid, OVL_FB_HEADER);
  return out;
}

// ---- single-character and small values ------------------------------------------------------

export type Opaque = 'y' | 'x';

export function decodeOpaque(value: Uint8Array, path: string): Opaque {
  if (value.byteLength === 1 && (value[0] === 0x79 || value[0] === 0x78)) return value[0] === 0x79 ? 'y' : 'x';
  throw corrupt('opaque', path, `value ${JSON.stringify(Buffer.from(value).toString('latin1'))} is not "y" or "x"`);
}

export function encodeOpaque(o: Opaque): Uint8Array {
  return new TextEncoder().encode(o);
}

export function decodeImpure(value: Uint8Array, path: string): true {
  if (value.byteLength === 1 && value[0] === 0x79) return true;
  throw corrupt('impure', path, 'is not "y"');
}

export interface Protattr {
  readonly appendOnly: boolean;
  readonly immutable: boolean;
}

export function decodeProtattr(value: Uint8Array, path: string): Protattr {
  if (value.byteLength > 2) throw corrupt('protattr', path, `is ${value.byteLength} bytes (at most "ai")`);
  let appendOnly = false;
  let immutable = false;
  for (const b of value) {
    if (b === 0x61 && !appendOnly) appendOnly = true;
    else if (b === 0x69 && !immutable) immutable = true;
    else throw corrupt('protattr', path, `has character 0x${b.toString(16)} (only "a" and "i", once each)`);
  }
  return { appendOnly, immutable };
}

export function encodeProtattr(p: Protattr): Uint8Array {
  return new TextEncoder().encode(`${p.appendOnly ? 'a' : ''}${p.immutable ? 'i' : ''}`);
}

export interface UnionNlink {
  /** 'U': relative to the upper inode's nlink; 'L': relative to the lower's. */
  readonly base: 'U' | 'L';
  readonly delta: number;
}

export function decodeNlink(value: Uint8Array, path: string): UnionNlink {
  const s = value.byteLength <= 16 ? Buffer.from(value).toString('latin1') : '';
  const m = /^([UL])([+-]\d{1,10})$/.exec(s);
  if (!m) throw corrupt('nlink', path, `value ${JSON.stringify(s)} is not "U+n" or "L-n"`);
  // "U-0" is a delta of 0, not -0 (which would not survive encode → decode).
  const delta = Number(m[2]) || 0;
  if (!Number.isSafeInteger(delta) || Math.abs(delta) > 0xffffffff) throw corrupt('nlink', path, `delta ${m[2]} is out of range`);
  return { base: m[1] as 'U' | 'L', delta };
}

export function encodeNlink(n: UnionNlink): Uint8Array {
  return new TextEncoder().encode(`${n.base}${n.delta < 0 ? '' : '+'}${n.delta}`);
}

export function decodeUuid(value: Uint8Array, path: string): Uint8Array {
  if (value.byteLength !== 16) throw corrupt('uuid', path, `is ${value.byteLength} bytes, not 16`);
  return value.slice();
}
