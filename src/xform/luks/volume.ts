/**
 * LUKS volumes: format (LUKS2), open (LUKS2 and LUKS1), unlock, keyslot add / remove / change, info,
 * and the decrypted payload as a Disk.
 *
 * Design notes
 * - Unlock (both versions): KDF(passphrase, salt) → key-encryption key; decrypt the keyslot's
 *   anti-forensic material (512-byte sectors, IVs from 0 at the area start); AF-merge → candidate volume
 *   key; accept it only if PBKDF2(volume key) equals the stored digest (compared in constant time).
 *   LUKS2 keyslots are tried by priority (2 before 1; 0 only when asked for by number).
 * - Every KDF cost read from a header is checked against KdfLimits before any memory is allocated.
 * - Crash safety of keyslot changes (LUKS2 only; LUKS1 volumes are opened, not modified). The header
 *   pair (see luks2-header.ts) makes each metadata change atomic: after an interruption the volume has
 *   either the old or the new metadata. So each change is ordered as:
 *     0. if the two header copies differ (an earlier interruption), rewrite only the stale copy first;
 *     1. add / change: write the new keyslot material into an area no current keyslot uses, flush;
 *     2. write the new metadata (primary, flush, secondary, flush);
 *     3. change / remove: only now overwrite the old, no longer referenced area with random bytes, flush.
 *   A change of passphrase keeps the keyslot number and swaps the keyslot's area and KDF in one metadata
 *   write, so at every instant either the old or the new passphrase opens the volume. Removing the last
 *   keyslot is refused unless explicitly allowed.
 * - For ops/home: `format(disk, passphrase, …)` on a Disk of the final size (payload = size − 16 MiB, with
 *   size "dynamic" as cryptsetup writes it, so growing the file grows the payload: after a resize, open the
 *   volume again to get a larger CryptDisk); `open(disk)` + `openPayload(passphrase)` gives the Disk the
 *   ext4 layer runs on (4096-byte sectors by default: the filesystem block size must be ≥ 4096);
 *   `addKeyslot` / `changePassphrase` / `removeKeyslot` / `killKeyslot`; `info()`; `warnings`.
 * - Secrets: passphrases are taken as bytes and never copied into strings; derived keys, merged keys and
 *   decrypted material are zeroed when no longer needed. Volume keys handed to the caller are the
 *   caller's to wipe (CryptDisk wipes its copy on close).
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { CorruptImageError, ExitCode, LivestickError, UnsupportedFeatureError } from '../../errors.ts';
import { readAt, type Disk } from '../../io/disk.ts';
import { LUKS_STRIPES, afMerge, afSplit, digestSize } from './af.ts';
import { CryptDisk, createSectorCipher } from './crypt-disk.ts';
import {
  benchmarkArgon2,
  benchmarkKdf,
  checkKdfCost,
  defaultArgon2Resources,
  defaultKdfLimits,
  deriveKey,
  pbkdf2,
  type KdfLimits,
  type KdfParams,
} from './kdf.ts';
import { LUKS2_BIN_SIZE, LUKS2_HDR_SIZES, luksMagic } from './luks2-binary.ts';
import { fieldsOf, readLuks2Pair, repairLuks2Pair, writeLuks2Pair, type Luks2HeaderPair } from './luks2-header.ts';
import {
  LUKS2_KEYSLOTS_MAX,
  b64,
  cloneJson,
  decodeLuks2Metadata,
  kdfToJson,
  type JsonObject,
  type Luks2Keyslot,
  type Luks2Metadata,
  type Luks2Segment,
} from './luks2-metadata.ts';
import { LUKS1_HEADER_SIZE, decodeLuks1, type Luks1Header } from './luks1.ts';
import { view } from '../../io/bytes.ts';

export class WrongPassphraseError extends LivestickError {
  constructor(message = 'no keyslot accepts this passphrase') {
    super('WRONG_PASSPHRASE', ExitCode.permission, message);
  }
}

export type RandomSource = (n: number) => Uint8Array;

/** What the caller may ask of a new keyslot's KDF; missing costs are benchmarked (or inherited). */
export type KdfChoice =
  | { readonly type: 'argon2id' | 'argon2i'; readonly time?: number; readonly memory?: number; readonly cpus?: number; readonly iterTimeMs?: number }
  | { readonly type: 'pbkdf2'; readonly hash?: string; readonly iterations?: number; readonly iterTimeMs?: number };

export interface Luks2FormatOptions {
  /** Volume key size in bytes: 64 (aes-xts 512-bit, the default) or 32. */
  readonly keySize?: 32 | 64;
  /** Encryption sector size (default 4096, as cryptsetup picks for image files). */
  readonly sectorSize?: 512 | 1024 | 2048 | 4096;
  /** Default: argon2id, memory ≤ 1 GiB (≤ half the RAM), ≤ 4 lanes, time benchmarked for 2 s. */
  readonly kdf?: KdfChoice;
  /** AF and digest hash (default sha256). */
  readonly hash?: string;
  /** Volume key digest iterations (default: benchmarked for 125 ms, at least 1000). */
  readonly digestIterations?: number;
  readonly label?: string;
  readonly subsystem?: string;
  readonly uuid?: string;
  /** Metadata size per copy (default 16 KiB). */
  readonly metadataSize?: number;
  /** Data segment offset (default 16 MiB). */
  readonly dataOffset?: number;
  /** For tests: a fixed volume key. */
  readonly volumeKey?: Uint8Array;
  readonly random?: RandomSource;
  readonly limits?: KdfLimits;
}

export interface OpenOptions {
  readonly limits?: KdfLimits;
  readonly random?: RandomSource;
}

export interface LuksKeyslotInfo {
  readonly id: number;
  readonly type: string;
  readonly priority: number;
  readonly keySize: number;
  readonly cipher?: string;
  readonly afHash?: string;
  readonly kdf?: { type: string; hash?: string; iterations?: number; time?: number; memory?: number; cpus?: number };
  readonly areaOffset: number;
  readonly areaSize: number;
}

export interface LuksInfo {
  readonly version: 1 | 2;
  readonly uuid: string;
  readonly label: string;
  readonly subsystem: string;
  readonly cipher: string;
  /** Volume key size in bytes. */
  readonly keySize: number;
  readonly sectorSize: number;
  readonly payloadOffset: number;
  readonly payloadSize: number;
  readonly metadataSize: number;
  readonly keyslotsSize: number;
  readonly seqid?: string;
  /** Which header copy is in use. */
  readonly header: 'primary' | 'secondary' | 'luks1';
  readonly keyslots: readonly LuksKeyslotInfo[];
  readonly digest: { readonly hash: string; readonly iterations: number };
  readonly requirements: readonly string[];
  readonly warnings: readonly string[];
}

export interface UnlockResult {
  readonly volumeKey: Uint8Array;
  readonly keyslot: number;
}

type State = { readonly kind: 'luks1'; readonly header: Luks1Header } | { readonly kind: 'luks2'; readonly pair: Luks2HeaderPair };

const DEFAULT_METADATA_SIZE = 0x4000;
/** Where format puts the data (cryptsetup's default): the payload of a volume of N bytes is N − 16 MiB. */
export const LUKS2_DEFAULT_DATA_OFFSET = 16 * 1024 * 1024;
const DEFAULT_DATA_OFFSET = LUKS2_DEFAULT_DATA_OFFSET;

function afSectorsBytes(keySize: number, stripes: number): number {
  return Math.ceil((keySize * stripes) / 512) * 512;
}

function keyslotAreaSize(keySize: number): number {
  return Math.ceil((keySize * LUKS_STRIPES) / 4096) * 4096;
}

function formatUuid(b: Uint8Array): string {
  const r = new Uint8Array(b.subarray(0, 16));
  r[6] = (r[6]! & 0x0f) | 0x40;
  r[8] = (r[8]! & 0x3f) | 0x80;
  const h = Buffer.from(r).toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

function wipe(...bufs: (Uint8Array | undefined)[]): void {
  for (const b of bufs) b?.fill(0);
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.byteLength === b.byteLength && timingSafeEqual(a, b);
}

export class LuksVolume {
  readonly disk: Disk;
  readonly #limits: KdfLimits;
  readonly #random: RandomSource;
  #state: State;
  #warnings: string[] = [];

  private constructor(disk: Disk, state: State, options: OpenOptions) {
    this.disk = disk;
    this.#state = state;
    this.#limits = options.limits ?? defaultKdfLimits();
    this.#random = options.random ?? randomBytes;
    this.#noteHeaderState();
  }

  /** Is there a LUKS header (either version, either LUKS2 copy) at the start of this Disk? */
  static async probe(disk: Disk): Promise<1 | 2 | undefined> {
    if (disk.size < 8) return undefined;
    const head = await readAt(disk, 0, 8);
    if (luksMagic(head) !== 'primary') return undefined;
    const v = view(head).getUint16(6, false);
    return v === 1 || v === 2 ? v : undefined;
  }

  /** Reads and validates the header(s). A damaged LUKS2 primary falls back to the secondary (see `warnings`). */
  static async open(disk: Disk, options: OpenOptions = {}): Promise<LuksVolume> {
    if (disk.size < LUKS1_HEADER_SIZE) throw new CorruptImageError('luks', 'header', `device of ${disk.size} bytes is too small for a LUKS header`, 0);
    const head = await readAt(disk, 0, LUKS1_HEADER_SIZE);
    if (luksMagic(head) === 'primary' && view(head).getUint16(6, false) === 1) {
      return new LuksVolume(disk, { kind: 'luks1', header: decodeLuks1(head, disk.size) }, options);
    }
    const pair = await readLuks2Pair(disk);
    const volume = new LuksVolume(disk, { kind: 'luks2', pair }, options);
    volume.#checkDeviceSize();
    return volume;
  }

  /** Creates a LUKS2 volume on `disk` with one keyslot (0) for `passphrase`. Overwrites the start of the disk. */
  static async format(disk: Disk, passphrase: Uint8Array, options: Luks2FormatOptions = {}): Promise<LuksVolume> {
    const random = options.random ?? randomBytes;
    const limits = options.limits ?? defaultKdfLimits();
    const keySize = options.keySize ?? 64;
    const sectorSize = options.sectorSize ?? 4096;
    const hash = options.hash ?? 'sha256';
    const hdrSize = options.metadataSize ?? DEFAULT_METADATA_SIZE;
    const dataOffset = options.dataOffset ?? DEFAULT_DATA_OFFSET;
    if (keySize !== 32 && keySize !== 64) throw new UnsupportedFeatureError('luks2', 'key size', `${keySize * 8} bits`);
    if (![512, 1024, 2048, 4096].includes(sectorSize)) throw new UnsupportedFeatureError('luks2', 'sector size', String(sectorSize));
    if (!LUKS2_HDR_SIZES.includes(hdrSize as (typeof LUKS2_HDR_SIZES)[number])) throw new UnsupportedFeatureError('luks2', 'metadata size', String(hdrSize));
    const keyslotsSize = dataOffset - 2 * hdrSize;
    const area = keyslotAreaSize(keySize);
    if (dataOffset % 4096 !== 0 || keyslotsSize < area || keyslotsSize > 128 * 1024 * 1024) {
      throw new UnsupportedFeatureError('luks2', 'data offset', `${dataOffset} leaves no valid keyslots area`);
    }
    if (disk.size < dataOffset + sectorSize) {
      throw new LivestickError('NO_SPACE', ExitCode.failure, `a LUKS2 volume needs more than ${dataOffset} bytes (the device has ${disk.size})`);
    }
    if (options.volumeKey !== undefined && options.volumeKey.byteLength !== keySize) throw new RangeError('volumeKey has the wrong size');
    const volumeKey = options.volumeKey ? new Uint8Array(options.volumeKey) : new Uint8Array(random(keySize));
    try {
      const kdf = await resolveKdf(options.kdf ?? { type: 'argon2id' }, keySize, random, limits);
      const digestSalt = new Uint8Array(random(32));
      const digestIterations = options.digestIterations ?? (await benchmarkKdf({ type: 'pbkdf2', hash, iterations: 1000, salt: digestSalt }, keySize, 125));
      // cryptsetup stores (and requires) a digest as long as the hash's output.
      const digest = await pbkdf2(volumeKey, digestSalt, digestIterations, digestSize(hash), hash);
      const json: JsonObject = {
        keyslots: {},
        tokens: {},
        segments: {
          '0': { type: 'crypt', offset: String(dataOffset), size: 'dynamic', iv_tweak: '0', encryption: 'aes-xts-plain64', sector_size: sectorSize },
        },
        digests: {
          '0': { type: 'pbkdf2', keyslots: ['0'], segments: ['0'], hash, iterations: digestIterations, salt: b64(digestSalt), digest: b64(digest) },
        },
        config: { json_size: String(hdrSize - LUKS2_BIN_SIZE), keyslots_size: String(keyslotsSize) },
      };
      const slot = await sealKeyslot(volumeKey, passphrase, kdf, { offset: 2 * hdrSize, hash, random, limits });
      (json.keyslots as JsonObject)['0'] = slot.json;
      decodeLuks2Metadata(json, hdrSize - LUKS2_BIN_SIZE);

      // Wipe as cryptsetup does: zeros over both metadata copies, random bytes over the keyslots area.
      await disk.write(new Uint8Array(2 * hdrSize), 0);
      for (let at = 2 * hdrSize; at < dataOffset; at += 1 << 20) {
        await disk.write(new Uint8Array(random(Math.min(1 << 20, dataOffset - at))), at);
      }
      await disk.write(slot.material, 2 * hdrSize);
      wipe(slot.material);
      await disk.flush();
      const uuid = options.uuid ?? formatUuid(random(16));
      await writeLuks2Pair(disk, { hdrSize, seqid: 1n, label: options.label ?? '', subsystem: options.subsystem ?? '', uuid, checksumAlg: 'sha256' }, json, random);
      return await LuksVolume.open(disk, { limits, random });
    } finally {
      wipe(volumeKey);
    }
  }

  get version(): 1 | 2 {
    return this.#state.kind === 'luks1' ? 1 : 2;
  }

  /** Notes about the headers (a damaged copy, a repair) for the user. */
  get warnings(): readonly string[] {
    return this.#warnings;
  }

  #noteHeaderState(): void {
    this.#warnings = [];
    if (this.#state.kind !== 'luks2') return;
    const p = this.#state.pair;
    if (!p.primary) this.#warnings.push(`the primary LUKS2 header is damaged (${p.primaryError?.message ?? 'unreadable'}); using the secondary copy`);
    else if (!p.secondary) this.#warnings.push(`the secondary LUKS2 header is damaged (${p.secondaryError?.message ?? 'unreadable'}); using the primary copy`);
    else if (!p.inSync) this.#warnings.push(`the LUKS2 header copies differ (seqid ${p.primary.binary.seqid} / ${p.secondary.binary.seqid}); using the ${p.active === p.primary ? 'primary' : 'secondary'}`);
  }

  #meta(): Luks2Metadata {
    if (this.#state.kind !== 'luks2') throw new UnsupportedFeatureError('luks1', 'keyslot changes', 'livestick only reads LUKS1 volumes; convert them to LUKS2 with cryptsetup convert');
    return this.#state.pair.active.metadata;
  }

  #segment(): Luks2Segment {
    const meta = this.#meta();
    const crypt = [...meta.segments.values()].filter((s) => s.type === 'crypt');
    if (meta.config.requirements.length > 0) {
      throw new UnsupportedFeatureError('luks2', 'requirements', `${meta.config.requirements.join(', ')} (finish it with cryptsetup)`);
    }
    if (crypt.length !== 1 || meta.segments.size !== 1) throw new UnsupportedFeatureError('luks2', 'segments', 'more than one data segment (reencryption in progress?)');
    const seg = crypt[0]!;
    if (seg.integrity) throw new UnsupportedFeatureError('luks2', 'authenticated encryption (dm-integrity)');
    return seg;
  }

  #checkDeviceSize(): void {
    const meta = this.#meta();
    const hdrSize = meta.config.jsonSize + LUKS2_BIN_SIZE;
    const need = 2 * hdrSize + meta.config.keyslotsSize;
    if (this.disk.size < need) {
      throw new CorruptImageError('luks2', 'device', `the device (${this.disk.size} bytes) is smaller than its header and keyslots area (${need} bytes): truncated?`);
    }
  }

  /** Payload offset and size in bytes and its sector size. */
  payloadGeometry(): { offset: number; size: number; sectorSize: number; cipher: string; ivTweak: bigint } {
    if (this.#state.kind === 'luks1') {
      const h = this.#state.header;
      const offset = h.payloadOffset * 512;
      if (this.disk.size - offset < 512) throw new CorruptImageError('luks1', 'payloadOffset', `no room for data after ${offset} bytes of header (device: ${this.disk.size} bytes): truncated?`);
      return { offset, size: this.disk.size - offset - ((this.disk.size - offset) % 512), sectorSize: 512, cipher: `${h.cipherName}-${h.cipherMode}`, ivTweak: 0n }; // a partial last sector is not data (dm-crypt maps whole sectors)
    }
    const seg = this.#segment();
    let size: number;
    if (seg.size === 'dynamic') {
      if (this.disk.size <= seg.offset) throw new CorruptImageError('luks2', 'segments.0.offset', `the data starts at ${seg.offset}, past the end of the device (${this.disk.size} bytes): truncated?`);
      size = this.disk.size - seg.offset;
      size -= size % seg.sectorSize;
    } else {
      if (seg.offset + seg.size > this.disk.size) throw new CorruptImageError('luks2', 'segments.0.size', `the data segment ends at ${seg.offset + seg.size}, past the end of the device (${this.disk.size} bytes): truncated?`);
      size = seg.size;
    }
    if (size < seg.sectorSize) throw new CorruptImageError('luks2', 'segments.0', `no room for data after ${seg.offset} bytes of header (device: ${this.disk.size} bytes): truncated?`);
    return { offset: seg.offset, size, sectorSize: seg.sectorSize, cipher: seg.encryption, ivTweak: seg.ivTweak };
  }

  info(): LuksInfo {
    if (this.#state.kind === 'luks1') {
      const h = this.#state.header;
      const g = { offset: h.payloadOffset * 512, size: Math.max(0, this.disk.size - h.payloadOffset * 512), cipher: `${h.cipherName}-${h.cipherMode}` };
      return {
        version: 1,
        uuid: h.uuid,
        label: '',
        subsystem: '',
        cipher: g.cipher,
        keySize: h.keyBytes,
        sectorSize: 512,
        payloadOffset: g.offset,
        payloadSize: g.size,
        metadataSize: 4096,
        keyslotsSize: g.offset,
        header: 'luks1',
        keyslots: h.keyslots
          .filter((k) => k.active)
          .map((k) => ({
            id: k.id,
            type: 'luks1',
            priority: 1,
            keySize: h.keyBytes,
            cipher: g.cipher,
            afHash: h.hashSpec,
            kdf: { type: 'pbkdf2', hash: h.hashSpec, iterations: k.iterations },
            areaOffset: k.keyMaterialOffset * 512,
            areaSize: afSectorsBytes(h.keyBytes, k.stripes),
          })),
        digest: { hash: h.hashSpec, iterations: h.mkDigestIterations },
        requirements: [],
        warnings: this.#warnings,
      };
    }
    const { pair } = this.#state;
    const meta = pair.active.metadata;
    const seg = [...meta.segments.values()].find((s) => s.type === 'crypt') ?? [...meta.segments.values()][0]!;
    let payloadSize = 0;
    try {
      payloadSize = this.payloadGeometry().size;
    } catch {
      // Reported by openPayload; info still shows what the header says.
    }
    const digest = [...meta.digests.values()].find((d) => d.segments.includes(seg.id));
    const keySizeOfSegment = [...meta.keyslots.values()].find((k) => digest?.keyslots.includes(k.id))?.keySize ?? 0;
    return {
      version: 2,
      uuid: pair.active.binary.uuid,
      label: pair.active.binary.label,
      subsystem: pair.active.binary.subsystem,
      cipher: seg.encryption,
      keySize: keySizeOfSegment,
      sectorSize: seg.sectorSize,
      payloadOffset: seg.offset,
      payloadSize,
      metadataSize: pair.active.binary.hdrSize,
      keyslotsSize: meta.config.keyslotsSize,
      seqid: pair.active.binary.seqid.toString(),
      header: pair.active === pair.primary ? 'primary' : 'secondary',
      keyslots: [...meta.keyslots.values()].map((k) => ({
        id: k.id,
        type: k.type,
        priority: k.priority,
        keySize: k.keySize,
        ...(k.area.encryption === undefined ? {} : { cipher: k.area.encryption }),
        ...(k.af === undefined ? {} : { afHash: k.af.hash }),
        ...(k.kdf === undefined
          ? {}
          : {
              kdf:
                k.kdf.type === 'pbkdf2'
                  ? { type: k.kdf.type, hash: k.kdf.hash, iterations: k.kdf.iterations }
                  : { type: k.kdf.type, time: k.kdf.time, memory: k.kdf.memory, cpus: k.kdf.cpus },
            }),
        areaOffset: k.area.offset,
        areaSize: k.area.size,
      })),
      digest: { hash: digest?.hash ?? '', iterations: digest?.iterations ?? 0 },
      requirements: meta.config.requirements,
      warnings: this.#warnings,
    };
  }

  /** Finds the keyslot this passphrase opens and returns the volume key (the caller wipes it). */
  async unlock(passphrase: Uint8Array, options: { keyslot?: number } = {}): Promise<UnlockResult> {
    return this.#state.kind === 'luks1' ? this.#unlockLuks1(this.#state.header, passphrase, options.keyslot) : this.#unlockLuks2(passphrase, options.keyslot);
  }

  async #unlockLuks1(h: Luks1Header, passphrase: Uint8Array, only?: number): Promise<UnlockResult> {
    const cipher = `${h.cipherName}-${h.cipherMode}`;
    createSectorCipher(cipher, new Uint8Array(h.keyBytes)).destroy(); // unsupported cipher or key size: say so before any KDF
    checkKdfCost({ type: 'pbkdf2', hash: h.hashSpec, iterations: h.mkDigestIterations, salt: h.mkDigestSalt }, this.#limits, 'mkDigestIterations');
    const slots = h.keyslots.filter((k) => k.active && (only === undefined || k.id === only));
    for (const slot of slots) {
      const kdf: KdfParams = { type: 'pbkdf2', hash: h.hashSpec, iterations: slot.iterations, salt: slot.salt };
      const volumeKey = await this.#openArea(passphrase, kdf, h.keyBytes, cipher, h.keyBytes, slot.keyMaterialOffset * 512, slot.stripes, h.hashSpec);
      const check = await pbkdf2(volumeKey, h.mkDigestSalt, h.mkDigestIterations, 20, h.hashSpec);
      const ok = sameBytes(check, h.mkDigest);
      wipe(check);
      if (ok) return { volumeKey, keyslot: slot.id };
      wipe(volumeKey);
    }
    throw new WrongPassphraseError(only === undefined ? undefined : `keyslot ${only} does not accept this passphrase`);
  }

  async #unlockLuks2(passphrase: Uint8Array, only?: number): Promise<UnlockResult> {
    const meta = this.#meta();
    const seg = this.#segment();
    const digest = [...meta.digests.values()].find((d) => d.segments.includes(seg.id));
    if (!digest) throw new CorruptImageError('luks2', 'digests', 'no digest for the data segment');
    checkKdfCost({ type: 'pbkdf2', hash: digest.hash, iterations: digest.iterations, salt: digest.salt }, this.#limits, `digests.${digest.id}`);
    const candidates = [...meta.keyslots.values()]
      .filter((k) => k.type === 'luks2' && digest.keyslots.includes(k.id))
      .filter((k) => (only === undefined ? k.priority > 0 : k.id === only))
      .sort((a, b) => b.priority - a.priority || a.id - b.id);
    if (only !== undefined && candidates.length === 0) throw new WrongPassphraseError(`keyslot ${only} is not a usable keyslot`);
    // Like cryptsetup, a keyslot livestick cannot use (unsupported cipher, refused KDF cost) does not stop
    // the others from being tried; it is reported only if no keyslot could be tried at all.
    const skipped: LivestickError[] = [];
    for (const k of candidates) {
      let volumeKey: Uint8Array;
      try {
        volumeKey = await this.#openArea(passphrase, k.kdf!, k.area.keySize!, k.area.encryption!, k.keySize, k.area.offset, k.af!.stripes, k.af!.hash);
      } catch (err) {
        if (!(err instanceof UnsupportedFeatureError || err instanceof CorruptImageError)) throw err;
        skipped.push(err);
        continue;
      }
      const check = await pbkdf2(volumeKey, digest.salt, digest.iterations, digest.digest.byteLength, digest.hash);
      const ok = sameBytes(check, digest.digest);
      wipe(check);
      if (ok) return { volumeKey, keyslot: k.id };
      wipe(volumeKey);
    }
    if (skipped.length > 0 && skipped.length === candidates.length) throw skipped[0]!;
    const note = skipped.length > 0 ? ` (${skipped.length} keyslot(s) could not be tried: ${skipped[0]!.message})` : '';
    throw new WrongPassphraseError(only === undefined ? `no keyslot accepts this passphrase${note}` : `keyslot ${only} does not accept this passphrase${note}`);
  }

  async #openArea(passphrase: Uint8Array, kdf: KdfParams, kekSize: number, cipherSpec: string, keySize: number, areaOffset: number, stripes: number, afHash: string): Promise<Uint8Array> {
    const length = afSectorsBytes(keySize, stripes);
    if (areaOffset + length > this.disk.size) {
      throw new CorruptImageError('luks', 'keyslot area', `key material [${areaOffset}, ${areaOffset + length}) is past the end of the device: truncated?`, areaOffset);
    }
    checkKdfCost(kdf, this.#limits);
    createSectorCipher(cipherSpec, new Uint8Array(kekSize)).destroy(); // unsupported cipher or key size: before the KDF
    const material = await readAt(this.disk, areaOffset, length);
    const kek = await deriveKey(kdf, passphrase, kekSize, this.#limits);
    const cipher = createSectorCipher(cipherSpec, kek, { wipeTemporaries: true });
    try {
      cipher.decrypt(material, 512, 0);
      return afMerge(material, keySize, stripes, afHash);
    } finally {
      cipher.destroy();
      wipe(kek, material);
    }
  }

  /** The decrypted payload as a Disk (dm-crypt's mapping). Opens with a passphrase or a known volume key. */
  async openPayload(secret: Uint8Array | { volumeKey: Uint8Array }, options: { readOnly?: boolean } = {}): Promise<CryptDisk> {
    const g = this.payloadGeometry();
    let key: Uint8Array;
    if (secret instanceof Uint8Array) key = (await this.unlock(secret)).volumeKey;
    else key = new Uint8Array(secret.volumeKey);
    try {
      return new CryptDisk(this.disk, createSectorCipher(g.cipher, key), { offset: g.offset, size: g.size, sectorSize: g.sectorSize, ivTweak: g.ivTweak, readOnly: options.readOnly ?? false });
    } finally {
      wipe(key);
    }
  }

  /** Rewrites a damaged or stale header copy from the one in use. Returns which copy was rewritten. */
  async repair(): Promise<'primary' | 'secondary' | undefined> {
    if (this.#state.kind !== 'luks2') return undefined;
    const fixed = await repairLuks2Pair(this.disk, this.#state.pair, this.#random);
    if (fixed) await this.#reload();
    return fixed;
  }

  async #reload(): Promise<void> {
    this.#state = { kind: 'luks2', pair: await readLuks2Pair(this.disk) };
    this.#noteHeaderState();
  }

  async #commit(json: JsonObject): Promise<void> {
    if (this.#state.kind !== 'luks2') throw new Error('unreachable');
    const active = this.#state.pair.active;
    decodeLuks2Metadata(json, active.binary.hdrSize - LUKS2_BIN_SIZE);
    await writeLuks2Pair(this.disk, { ...fieldsOf(active.binary), seqid: active.binary.seqid + 1n }, json, this.#random);
    await this.#reload();
  }

  #freeArea(size: number): number {
    const meta = this.#meta();
    const hdrSize = meta.config.jsonSize + LUKS2_BIN_SIZE;
    const end = 2 * hdrSize + meta.config.keyslotsSize;
    const used = [...meta.keyslots.values()].map((k) => k.area).sort((a, b) => a.offset - b.offset);
    let at = 2 * hdrSize;
    for (const a of used) {
      if (at + size <= a.offset) break;
      at = Math.max(at, Math.ceil((a.offset + a.size) / 4096) * 4096);
    }
    if (at + size > end) throw new LivestickError('NO_SPACE', ExitCode.failure, 'no free space left in the LUKS2 keyslots area');
    return at;
  }

  async #wipeArea(offset: number, size: number): Promise<void> {
    await this.disk.write(new Uint8Array(this.#random(size)), offset);
    await this.disk.flush();
  }

  async #prepareChange(): Promise<void> {
    this.#segment();
    if (this.#state.kind === 'luks2' && !this.#state.pair.inSync) await this.repair();
  }

  async #newKdf(choice: KdfChoice | undefined, like: Luks2Keyslot | undefined, keySize: number): Promise<KdfParams> {
    if (choice === undefined && like?.kdf !== undefined) {
      return { ...like.kdf, salt: new Uint8Array(this.#random(32)) };
    }
    return resolveKdf(choice ?? { type: 'argon2id' }, keySize, this.#random, this.#limits);
  }

  /** Adds a keyslot for `newPassphrase`, authorised by `passphrase`. Returns its number. */
  async addKeyslot(passphrase: Uint8Array, newPassphrase: Uint8Array, options: { keyslot?: number; kdf?: KdfChoice } = {}): Promise<number> {
    this.#meta();
    await this.#prepareChange();
    const { volumeKey, keyslot: authSlot } = await this.unlock(passphrase);
    try {
      const meta = this.#meta();
      const id = options.keyslot ?? [...Array(LUKS2_KEYSLOTS_MAX).keys()].find((i) => !meta.keyslots.has(i));
      if (id === undefined) throw new LivestickError('NO_SPACE', ExitCode.failure, 'all 32 LUKS2 keyslots are in use');
      if (!Number.isInteger(id) || id < 0 || id >= LUKS2_KEYSLOTS_MAX) throw new RangeError(`keyslot ${id} is out of range`);
      if (meta.keyslots.has(id)) throw new LivestickError('EXISTS', ExitCode.cantCreate, `keyslot ${id} is in use`);
      const like = meta.keyslots.get(authSlot)!;
      const kdf = await this.#newKdf(options.kdf, like, like.area.keySize!);
      const offset = this.#freeArea(keyslotAreaSize(volumeKey.byteLength));
      const slot = await sealKeyslot(volumeKey, newPassphrase, kdf, { offset, hash: like.af!.hash, random: this.#random, limits: this.#limits, cipher: like.area.encryption! });
      await this.disk.write(slot.material, offset);
      wipe(slot.material);
      await this.disk.flush();
      const json = cloneJson(meta.json);
      (json.keyslots as JsonObject)[String(id)] = slot.json;
      for (const d of Object.values(json.digests as JsonObject) as JsonObject[]) {
        if ((d.keyslots as string[]).includes(String(authSlot))) (d.keyslots as string[]).push(String(id));
      }
      await this.#commit(json);
      return id;
    } finally {
      wipe(volumeKey);
    }
  }

  /**
   * Replaces the passphrase of the keyslot `oldPassphrase` opens, keeping its number; the new material goes
   * to a free area and the metadata switches over in one header write. Returns the keyslot number.
   */
  async changePassphrase(oldPassphrase: Uint8Array, newPassphrase: Uint8Array, options: { kdf?: KdfChoice } = {}): Promise<number> {
    this.#meta();
    await this.#prepareChange();
    const { volumeKey, keyslot: id } = await this.unlock(oldPassphrase);
    try {
      const meta = this.#meta();
      const old = meta.keyslots.get(id)!;
      const kdf = await this.#newKdf(options.kdf, old, old.area.keySize!);
      const offset = this.#freeArea(keyslotAreaSize(volumeKey.byteLength));
      const slot = await sealKeyslot(volumeKey, newPassphrase, kdf, { offset, hash: old.af!.hash, random: this.#random, limits: this.#limits, cipher: old.area.encryption! });
      await this.disk.write(slot.material, offset);
      wipe(slot.material);
      await this.disk.flush();
      const json = cloneJson(meta.json);
      const priority = (json.keyslots as JsonObject)[String(id)] as JsonObject;
      if (priority.priority !== undefined) slot.json.priority = priority.priority;
      (json.keyslots as JsonObject)[String(id)] = slot.json;
      await this.#commit(json);
      await this.#wipeArea(old.area.offset, old.area.size);
      return id;
    } finally {
      wipe(volumeKey);
    }
  }

  /** Removes the keyslot this passphrase opens. Refuses to remove the last keyslot unless `allowLast`. */
  async removeKeyslot(passphrase: Uint8Array, options: { allowLast?: boolean } = {}): Promise<number> {
    this.#meta();
    await this.#prepareChange();
    const { volumeKey, keyslot } = await this.unlock(passphrase);
    wipe(volumeKey);
    await this.#remove(keyslot, options.allowLast ?? false);
    return keyslot;
  }

  /** Removes keyslot `id`, authorised by any passphrase that opens the volume. */
  async killKeyslot(id: number, passphrase: Uint8Array, options: { allowLast?: boolean } = {}): Promise<void> {
    this.#meta();
    await this.#prepareChange();
    const { volumeKey } = await this.unlock(passphrase);
    wipe(volumeKey);
    if (!this.#meta().keyslots.has(id)) throw new LivestickError('NOT_FOUND', ExitCode.noInput, `keyslot ${id} is not in use`);
    await this.#remove(id, options.allowLast ?? false);
  }

  async #remove(id: number, allowLast: boolean): Promise<void> {
    const meta = this.#meta();
    const ks = meta.keyslots.get(id)!;
    const others = [...meta.keyslots.values()].filter((k) => k.id !== id && k.type === 'luks2');
    if (others.length === 0 && !allowLast) {
      throw new LivestickError('FAILURE', ExitCode.failure, `refusing to remove keyslot ${id}: it is the last one, and the data could never be decrypted again`);
    }
    const json = cloneJson(meta.json);
    delete (json.keyslots as JsonObject)[String(id)];
    for (const section of ['digests', 'tokens'] as const) {
      for (const d of Object.values(json[section] as JsonObject) as JsonObject[]) {
        if (Array.isArray(d.keyslots)) d.keyslots = d.keyslots.filter((k) => k !== String(id));
      }
    }
    await this.#commit(json);
    await this.#wipeArea(ks.area.offset, ks.area.size);
  }
}

/** Fills in a KDF choice: salt from `random`, missing costs benchmarked like cryptsetup (2 s). */
export async function resolveKdf(choice: KdfChoice, keySize: number, random: RandomSource, limits?: KdfLimits): Promise<KdfParams> {
  const salt = new Uint8Array(random(32));
  let kdf: KdfParams;
  if (choice.type === 'pbkdf2') {
    const base = { type: 'pbkdf2' as const, hash: choice.hash ?? 'sha256', iterations: choice.iterations ?? 1000, salt };
    kdf = choice.iterations === undefined ? { ...base, iterations: await benchmarkKdf(base, keySize, choice.iterTimeMs ?? 2000) } : base;
  } else {
    const res = defaultArgon2Resources();
    const base = { type: choice.type, time: choice.time ?? 4, memory: choice.memory ?? res.memory, cpus: choice.cpus ?? res.cpus, salt };
    kdf = choice.time === undefined ? { ...base, ...(await benchmarkArgon2(base, keySize, choice.iterTimeMs ?? 2000, choice.memory === undefined)) } : base;
  }
  checkKdfCost(kdf, limits);
  return kdf;
}

/** Encrypts the AF-split volume key for a new luks2 keyslot at `offset`; returns its JSON and material. */
async function sealKeyslot(
  volumeKey: Uint8Array,
  passphrase: Uint8Array,
  kdf: KdfParams,
  o: { offset: number; hash: string; random: RandomSource; limits: KdfLimits; cipher?: string },
): Promise<{ json: JsonObject; material: Uint8Array }> {
  const keySize = volumeKey.byteLength;
  const cipherSpec = o.cipher ?? 'aes-xts-plain64';
  const areaSize = keyslotAreaSize(keySize);
  const kek = await deriveKey(kdf, passphrase, keySize, o.limits);
  const cipher = createSectorCipher(cipherSpec, kek, { wipeTemporaries: true });
  const split = afSplit(volumeKey, LUKS_STRIPES, o.hash, (n) => new Uint8Array(o.random(n)));
  const material = new Uint8Array(afSectorsBytes(keySize, LUKS_STRIPES));
  material.set(split);
  wipe(split);
  try {
    cipher.encrypt(material, 512, 0);
  } finally {
    cipher.destroy();
    wipe(kek);
  }
  return {
    json: {
      type: 'luks2',
      key_size: keySize,
      af: { type: 'luks1', stripes: LUKS_STRIPES, hash: o.hash },
      area: { type: 'raw', offset: String(o.offset), size: String(areaSize), encryption: cipherSpec, key_size: keySize },
      kdf: kdfToJson(kdf),
    },
    material,
  };
}
