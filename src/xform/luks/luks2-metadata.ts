/**
 * LUKS2 JSON metadata: parse + validate the way cryptsetup's validators do (luks2_json_metadata.c and the
 * keyslot/digest handlers), into typed values, while keeping the parsed document (`json`) so that
 * livestick rewrites a cryptsetup-made header without dropping fields it does not model (tokens,
 * flags, requirements). Every 64-bit quantity is a decimal string; object keys are decimal ids.
 *
 * Mutations (add/remove/replace keyslot) work on a copy of `json` and go through `decodeLuks2Metadata`
 * again before being written, as cryptsetup validates before each header write.
 */
import { CorruptImageError, UnsupportedFeatureError } from '../../errors.ts';
import type { KdfParams } from './kdf.ts';

const FORMAT = 'luks2';
export const LUKS2_KEYSLOTS_MAX = 32;
export const LUKS2_TOKENS_MAX = 32;
const U64_MAX = (1n << 64n) - 1n;
const HASH_SIZES: Record<string, number> = { sha1: 20, sha224: 28, sha256: 32, sha384: 48, sha512: 64, ripemd160: 20, whirlpool: 64, 'sha3-256': 32, 'sha3-512': 64 };

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
export type JsonObject = { [key: string]: Json };

export interface Luks2Area {
  readonly type: 'raw';
  readonly offset: number;
  readonly size: number;
  readonly encryption: string;
  readonly keySize: number;
}

export interface Luks2Keyslot {
  readonly id: number;
  readonly type: string;
  readonly keySize: number;
  readonly priority: number;
  /** Present for type "luks2" (the only type that unlocks). */
  readonly af?: { readonly type: 'luks1'; readonly stripes: number; readonly hash: string };
  readonly area: { readonly offset: number; readonly size: number } & Partial<Luks2Area>;
  readonly kdf?: KdfParams;
}

export interface Luks2Segment {
  readonly id: number;
  readonly type: string;
  readonly offset: number;
  /** Bytes, or 'dynamic' (to the end of the device). */
  readonly size: number | 'dynamic';
  readonly ivTweak: bigint;
  readonly encryption: string;
  readonly sectorSize: number;
  readonly flags: readonly string[];
  readonly integrity: boolean;
}

export interface Luks2Digest {
  readonly id: number;
  readonly type: string;
  readonly keyslots: readonly number[];
  readonly segments: readonly number[];
  readonly hash: string;
  readonly iterations: number;
  readonly salt: Uint8Array;
  readonly digest: Uint8Array;
}

export interface Luks2Metadata {
  readonly json: JsonObject;
  readonly keyslots: ReadonlyMap<number, Luks2Keyslot>;
  readonly segments: ReadonlyMap<number, Luks2Segment>;
  readonly digests: ReadonlyMap<number, Luks2Digest>;
  readonly tokens: ReadonlyMap<number, { readonly type: string; readonly keyslots: readonly number[] }>;
  readonly config: {
    readonly jsonSize: number;
    readonly keyslotsSize: number;
    readonly flags: readonly string[];
    readonly requirements: readonly string[];
  };
}

function bad(field: string, message: string): CorruptImageError {
  return new CorruptImageError(FORMAT, field, message);
}

function isObject(v: Json | undefined): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function obj(parent: JsonObject, key: string, where: string): JsonObject {
  const v = parent[key];
  if (!isObject(v)) throw bad(`${where}.${key}`, 'missing or not an object');
  return v;
}

function str(parent: JsonObject, key: string, where: string): string {
  const v = parent[key];
  if (typeof v !== 'string') throw bad(`${where}.${key}`, 'missing or not a string');
  return v;
}

function int(parent: JsonObject, key: string, where: string, min = 0, max = 0xffffffff): number {
  const v = parent[key];
  if (typeof v !== 'number' || !Number.isInteger(v)) throw bad(`${where}.${key}`, 'missing or not an integer');
  if (v < min || v > max) throw bad(`${where}.${key}`, `value ${v} is out of range [${min}, ${max}]`);
  return v;
}

function arr(parent: JsonObject, key: string, where: string): Json[] {
  const v = parent[key];
  if (!Array.isArray(v)) throw bad(`${where}.${key}`, 'missing or not an array');
  return v;
}

function strings(parent: JsonObject, key: string, where: string): string[] {
  return arr(parent, key, where).map((e, i) => {
    if (typeof e !== 'string') throw bad(`${where}.${key}[${i}]`, 'not a string');
    return e;
  });
}

function u64(text: string, where: string): bigint {
  if (!/^[0-9]{1,20}$/.test(text)) throw bad(where, `"${text}" is not a decimal 64-bit number`);
  const v = BigInt(text);
  if (v > U64_MAX) throw bad(where, `${text} exceeds 64 bits`);
  return v;
}

function u64Number(text: string, where: string): number {
  const v = u64(text, where);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw bad(where, `${text} is too large for this implementation`);
  return Number(v);
}

function id(key: string, where: string, max = Number.MAX_SAFE_INTEGER): number {
  if (!/^[0-9]{1,9}$/.test(key)) throw bad(where, `"${key}" is not in numbered form`);
  const n = Number(key);
  if (n >= max) throw bad(where, `id ${n} is out of range (max ${max - 1})`);
  return n;
}

function base64(text: string, where: string): Uint8Array {
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(text) || text.length % 4 !== 0) throw bad(where, 'not valid base64');
  return new Uint8Array(Buffer.from(text, 'base64'));
}

function idList(values: string[], known: ReadonlyMap<number, unknown> | Set<number>, where: string): number[] {
  return values.map((s) => {
    const n = id(s, where);
    if (!known.has(n)) throw bad(where, `refers to missing id ${s}`);
    return n;
  });
}

function exactKeys(o: JsonObject, keys: readonly string[], where: string): void {
  const have = Object.keys(o);
  const extra = have.filter((k) => !keys.includes(k));
  if (extra.length > 0) throw bad(where, `unexpected field(s) ${extra.join(', ')}`);
}

function decodeKdf(kdf: JsonObject, where: string): KdfParams {
  const type = str(kdf, 'type', where);
  const salt = base64(str(kdf, 'salt', where), `${where}.salt`);
  if (salt.byteLength !== 32) throw bad(`${where}.salt`, `salt is ${salt.byteLength} bytes, not 32`);
  if (type === 'pbkdf2') {
    exactKeys(kdf, ['type', 'salt', 'hash', 'iterations'], where);
    return { type, salt, hash: str(kdf, 'hash', where), iterations: int(kdf, 'iterations', where, 1) };
  }
  if (type === 'argon2i' || type === 'argon2id') {
    exactKeys(kdf, ['type', 'salt', 'time', 'memory', 'cpus'], where);
    return { type, salt, time: int(kdf, 'time', where, 1), memory: int(kdf, 'memory', where, 1), cpus: int(kdf, 'cpus', where, 1) };
  }
  throw new UnsupportedFeatureError(FORMAT, 'KDF', `${type} (${where})`);
}

/** Parses the JSON area (NUL-terminated text, all zeros after it) and validates it. */
export function parseLuks2JsonArea(area: Uint8Array, jsonAreaSize: number, areaOffset = 0): Luks2Metadata {
  if (area[0] !== 0x7b) throw new CorruptImageError(FORMAT, 'json', 'JSON area does not start with "{"', areaOffset);
  const nul = area.indexOf(0);
  if (nul < 0) throw new CorruptImageError(FORMAT, 'json', 'JSON area is not NUL-terminated', areaOffset);
  for (let i = nul; i < area.byteLength; i++) {
    if (area[i] !== 0) throw new CorruptImageError(FORMAT, 'json', 'non-zero bytes after the JSON text', areaOffset + i);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(area.subarray(0, nul)));
  } catch (err) {
    throw new CorruptImageError(FORMAT, 'json', `JSON does not parse: ${(err as Error).message}`, areaOffset);
  }
  if (!isObject(parsed as Json)) throw new CorruptImageError(FORMAT, 'json', 'top level is not an object', areaOffset);
  return decodeLuks2Metadata(parsed as JsonObject, jsonAreaSize);
}

/** Validates a metadata document (as cryptsetup does before writing or after reading) and types it. */
export function decodeLuks2Metadata(json: JsonObject, jsonAreaSize: number): Luks2Metadata {
  const jKeyslots = obj(json, 'keyslots', 'json');
  const jTokens = obj(json, 'tokens', 'json');
  const jSegments = obj(json, 'segments', 'json');
  const jDigests = obj(json, 'digests', 'json');
  const jConfig = obj(json, 'config', 'json');

  // config
  const jsonSize = u64Number(str(jConfig, 'json_size', 'config'), 'config.json_size');
  const keyslotsSize = u64Number(str(jConfig, 'keyslots_size', 'config'), 'config.keyslots_size');
  if (jsonSize !== jsonAreaSize) throw bad('config.json_size', `${jsonSize} does not match the binary header's JSON area (${jsonAreaSize})`);
  const metadataSize = jsonSize + 4096;
  if (keyslotsSize % 4096 !== 0 || keyslotsSize > 128 * 1024 * 1024) throw bad('config.keyslots_size', `invalid keyslots area size ${keyslotsSize}`);
  const configFlags = jConfig.flags === undefined ? [] : strings(jConfig, 'flags', 'config');
  let requirements: string[] = [];
  if (jConfig.requirements !== undefined) {
    const req = obj(jConfig, 'requirements', 'config');
    if (req.mandatory !== undefined) requirements = strings(req, 'mandatory', 'config.requirements');
  }

  // keyslots (generic part)
  const keyslotIds = new Set<number>();
  for (const key of Object.keys(jKeyslots)) keyslotIds.add(id(key, 'keyslots', LUKS2_KEYSLOTS_MAX));

  // tokens
  const tokens = new Map<number, { type: string; keyslots: number[] }>();
  for (const [key, v] of Object.entries(jTokens)) {
    const where = `tokens.${key}`;
    const n = id(key, 'tokens', LUKS2_TOKENS_MAX);
    if (!isObject(v)) throw bad(where, 'not an object');
    tokens.set(n, { type: str(v, 'type', where), keyslots: idList(strings(v, 'keyslots', where), keyslotIds, `${where}.keyslots`) });
  }

  // segments (need digests ids for the "each crypt segment has a digest" rule, checked below)
  const segments = new Map<number, Luks2Segment>();
  const segmentKeys = Object.keys(jSegments);
  if (segmentKeys.length < 1) throw bad('segments', 'empty segments section');
  for (const key of segmentKeys) {
    const where = `segments.${key}`;
    const n = id(key, 'segments');
    const v = jSegments[key];
    if (!isObject(v)) throw bad(where, 'not an object');
    const type = str(v, 'type', where);
    const offset = u64Number(str(v, 'offset', where), `${where}.offset`);
    const sizeText = str(v, 'size', where);
    const size = sizeText === 'dynamic' ? 'dynamic' : u64Number(sizeText, `${where}.size`);
    if (size === 0) throw bad(`${where}.size`, 'size is zero');
    if (offset % 512 !== 0) throw bad(`${where}.offset`, `${offset} is not aligned to 512 bytes`);
    if (size !== 'dynamic' && size % 512 !== 0) throw bad(`${where}.size`, `${size} is not aligned to 512 bytes`);
    const flags = v.flags === undefined ? [] : strings(v, 'flags', where);
    let ivTweak = 0n;
    let encryption = '';
    let sectorSize = 512;
    let integrity = false;
    if (type === 'crypt') {
      ivTweak = u64(str(v, 'iv_tweak', where), `${where}.iv_tweak`);
      encryption = str(v, 'encryption', where);
      sectorSize = int(v, 'sector_size', where);
      if (sectorSize === 0 || sectorSize % 512 !== 0) throw bad(`${where}.sector_size`, `illegal sector size ${sectorSize}`);
      if (size !== 'dynamic' && size % sectorSize !== 0) throw bad(`${where}.size`, `size is not aligned to the ${sectorSize}-byte sector size`);
      if (v.integrity !== undefined) {
        const integ = obj(v, 'integrity', where);
        for (const k of ['type', 'journal_encryption', 'journal_integrity']) str(integ, k, `${where}.integrity`);
        integrity = true;
      }
    }
    segments.set(n, { id: n, type, offset, size, ivTweak, encryption, sectorSize, flags, integrity });
  }

  // digests
  const digests = new Map<number, Luks2Digest>();
  for (const [key, v] of Object.entries(jDigests)) {
    const where = `digests.${key}`;
    const n = id(key, 'digests');
    if (!isObject(v)) throw bad(where, 'not an object');
    const type = str(v, 'type', where);
    const keyslots = idList(strings(v, 'keyslots', where), keyslotIds, `${where}.keyslots`);
    const segs = idList(strings(v, 'segments', where), segments, `${where}.segments`);
    if (type !== 'pbkdf2') throw new UnsupportedFeatureError(FORMAT, 'digest type', type);
    exactKeys(v, ['type', 'keyslots', 'segments', 'hash', 'iterations', 'salt', 'digest'], where);
    const salt = base64(str(v, 'salt', where), `${where}.salt`);
    const digest = base64(str(v, 'digest', where), `${where}.digest`);
    const hash = str(v, 'hash', where);
    if (salt.byteLength !== 32) throw bad(`${where}.salt`, `salt of ${salt.byteLength} bytes (must be 32)`);
    // As cryptsetup: 20 bytes (LUKS1 heritage) or the hash's output size.
    if (digest.byteLength !== 20 && digest.byteLength !== HASH_SIZES[hash]) throw bad(`${where}.digest`, `digest of ${digest.byteLength} bytes for ${hash}`);
    digests.set(n, { id: n, type, keyslots, segments: segs, hash, iterations: int(v, 'iterations', where, 1), salt, digest });
  }
  for (const s of segments.values()) {
    if (s.type === 'crypt' && ![...digests.values()].some((d) => d.segments.includes(s.id))) {
      throw bad(`segments.${s.id}`, 'crypt segment is not referenced by any digest');
    }
  }

  // keyslots (typed) and areas
  const areasEnd = 2 * metadataSize + keyslotsSize;
  const keyslots = new Map<number, Luks2Keyslot>();
  for (const [key, v] of Object.entries(jKeyslots)) {
    const where = `keyslots.${key}`;
    const n = id(key, 'keyslots', LUKS2_KEYSLOTS_MAX);
    if (!isObject(v)) throw bad(where, 'not an object');
    const type = str(v, 'type', where);
    const keySize = int(v, 'key_size', where);
    const priority = v.priority === undefined ? 1 : int(v, 'priority', where, 0, 2);
    const jArea = obj(v, 'area', where);
    const area = {
      offset: u64Number(str(jArea, 'offset', `${where}.area`), `${where}.area.offset`),
      size: u64Number(str(jArea, 'size', `${where}.area`), `${where}.area.size`),
    };
    if (area.offset < 2 * metadataSize) throw bad(`${where}.area.offset`, `area at ${area.offset} overlaps the metadata`);
    if (area.size === 0) throw bad(`${where}.area.size`, 'area is empty');
    if (area.offset + area.size > areasEnd) throw bad(`${where}.area`, `area [${area.offset}, ${area.offset + area.size}) overflows the keyslots area (ends at ${areasEnd})`);
    for (const other of keyslots.values()) {
      if (area.offset < other.area.offset + other.area.size && other.area.offset < area.offset + area.size) {
        throw bad(`${where}.area`, `overlaps the area of keyslot ${other.id}`);
      }
    }
    if (type !== 'luks2') {
      keyslots.set(n, { id: n, type, keySize, priority, area });
      continue;
    }
    // luks2 keyslot handler validation
    const jAf = obj(v, 'af', where);
    if (str(jAf, 'type', `${where}.af`) !== 'luks1') throw new UnsupportedFeatureError(FORMAT, 'AF type', str(jAf, 'type', `${where}.af`));
    const af = { type: 'luks1' as const, stripes: int(jAf, 'stripes', `${where}.af`, 1), hash: str(jAf, 'hash', `${where}.af`) };
    if (af.stripes !== 4000) throw bad(`${where}.af.stripes`, `${af.stripes} stripes (LUKS uses 4000)`);
    if (str(jArea, 'type', `${where}.area`) !== 'raw') throw new UnsupportedFeatureError(FORMAT, 'keyslot area type', str(jArea, 'type', `${where}.area`));
    const areaKeySize = int(jArea, 'key_size', `${where}.area`, 1, 1024);
    if (keySize < 1 || keySize > 1024) throw bad(`${where}.key_size`, `key size ${keySize}`);
    if (area.size < Math.ceil((keySize * af.stripes) / 512) * 512) throw bad(`${where}.area.size`, `area of ${area.size} bytes cannot hold ${af.stripes} stripes of ${keySize} bytes`);
    if (area.offset % 512 !== 0) throw bad(`${where}.area.offset`, 'area is not 512-byte aligned');
    const kdf = decodeKdf(obj(v, 'kdf', where), `${where}.kdf`);
    if (!digestsOf(digests, n)) throw bad(where, 'keyslot is not assigned to any digest');
    keyslots.set(n, {
      id: n,
      type,
      keySize,
      priority,
      af,
      area: { ...area, type: 'raw', encryption: str(jArea, 'encryption', `${where}.area`), keySize: areaKeySize },
      kdf,
    });
  }
  for (const ks of keyslots.values()) {
    const count = [...digests.values()].filter((d) => d.keyslots.includes(ks.id)).length;
    if (ks.type === 'luks2' && count !== 1) throw bad(`keyslots.${ks.id}`, `keyslot is in ${count} digests (must be exactly one)`);
  }

  // keyslots_size must fit between the metadata and the first data segment
  const cryptOffsets = [...segments.values()].filter((s) => s.type === 'crypt').map((s) => s.offset);
  const firstData = cryptOffsets.length === 0 ? 0 : Math.min(...cryptOffsets);
  if (firstData !== 0 && (firstData < keyslotsSize || firstData - keyslotsSize < 2 * metadataSize)) {
    throw bad('config.keyslots_size', `keyslots area (${keyslotsSize} bytes) does not fit before the data at ${firstData}`);
  }

  let text: string;
  try {
    text = JSON.stringify(json);
  } catch (err) {
    throw bad('json', `cannot be re-serialised: ${(err as Error).message}`); // e.g. absurdly deep nesting
  }
  if (Buffer.byteLength(text) >= jsonAreaSize) throw bad('json', `JSON (${Buffer.byteLength(text)} bytes) does not fit in the ${jsonAreaSize}-byte area`);

  return { json, keyslots, segments, digests, tokens, config: { jsonSize, keyslotsSize, flags: configFlags, requirements } };
}

function digestsOf(digests: ReadonlyMap<number, Luks2Digest>, keyslot: number): boolean {
  for (const d of digests.values()) if (d.keyslots.includes(keyslot)) return true;
  return false;
}

/** The JSON area bytes: json-c "plain" text (no whitespace), then zeros to `jsonAreaSize`. */
export function encodeLuks2JsonArea(json: JsonObject, jsonAreaSize: number): Uint8Array {
  const text = new TextEncoder().encode(JSON.stringify(json));
  if (text.byteLength >= jsonAreaSize) throw new RangeError(`luks2: JSON metadata (${text.byteLength} bytes) does not fit in ${jsonAreaSize} bytes`);
  const area = new Uint8Array(jsonAreaSize);
  area.set(text);
  return area;
}

export function b64(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64');
}

export function kdfToJson(kdf: KdfParams): JsonObject {
  return kdf.type === 'pbkdf2'
    ? { type: 'pbkdf2', hash: kdf.hash, iterations: kdf.iterations, salt: b64(kdf.salt) }
    : { type: kdf.type, time: kdf.time, memory: kdf.memory, cpus: kdf.cpus, salt: b64(kdf.salt) };
}

export function cloneJson<T extends Json>(v: T): T {
  return structuredClone(v);
}
