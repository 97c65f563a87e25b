/**
 * Key derivation for LUKS keyslots and digests: PBKDF2 (node:crypto) and Argon2i/Argon2id
 * (@node-rs/argon2, with hash-wasm as a pure-wasm fallback). Costs come from untrusted headers, so
 * `checkKdfCost` refuses absurd ones before anything is allocated or computed.
 */
import { pbkdf2 as pbkdf2Callback, getHashes } from 'node:crypto';
import { availableParallelism, totalmem } from 'node:os';
import { CorruptImageError, UnsupportedFeatureError } from '../../errors.ts';

export interface Pbkdf2Params {
  readonly type: 'pbkdf2';
  readonly hash: string;
  readonly iterations: number;
  readonly salt: Uint8Array;
}

export interface Argon2Params {
  readonly type: 'argon2i' | 'argon2id';
  /** Passes (t). */
  readonly time: number;
  /** Memory in KiB (m). */
  readonly memory: number;
  /** Lanes = threads (p). */
  readonly cpus: number;
  readonly salt: Uint8Array;
}

export type KdfParams = Pbkdf2Params | Argon2Params;

/** What livestick agrees to compute when a header asks for it. */
export interface KdfLimits {
  /** Argon2 memory in KiB (cryptsetup's format maximum is 4 GiB). */
  readonly maxArgon2MemoryKiB: number;
  /** Argon2 time × memory, in KiB-passes. */
  readonly maxArgon2Work: number;
  readonly maxArgon2Cpus: number;
  readonly maxPbkdf2Iterations: number;
}

export const ARGON2_MAX_MEMORY_KIB = 4 * 1024 * 1024;

export function defaultKdfLimits(): KdfLimits {
  const ramKiB = Math.floor(totalmem() / 1024);
  return {
    // Never more than 3/4 of the machine's RAM, never more than the format allows.
    maxArgon2MemoryKiB: Math.min(ARGON2_MAX_MEMORY_KIB, Math.floor((ramKiB * 3) / 4)),
    // 64 × cryptsetup's usual 1 GiB × 4 passes: minutes, not days.
    maxArgon2Work: 64 * 4 * 1024 * 1024,
    maxArgon2Cpus: 255,
    // ~10 minutes of sha256 on a slow machine; cryptsetup's 2 s target is a few million.
    maxPbkdf2Iterations: 1 << 30,
  };
}

const FORMAT = 'luks';

export function checkKdfCost(kdf: KdfParams, limits: KdfLimits = defaultKdfLimits(), where = 'kdf'): void {
  if (kdf.type === 'pbkdf2') {
    if (!Number.isSafeInteger(kdf.iterations) || kdf.iterations < 1) {
      throw new CorruptImageError(FORMAT, `${where}.iterations`, `invalid PBKDF2 iteration count ${kdf.iterations}`);
    }
    if (kdf.iterations > limits.maxPbkdf2Iterations) {
      throw new UnsupportedFeatureError(FORMAT, 'KDF cost', `PBKDF2 with ${kdf.iterations} iterations exceeds the limit of ${limits.maxPbkdf2Iterations}`);
    }
    hashName(kdf.hash);
    return;
  }
  const { time, memory, cpus } = kdf;
  for (const [name, v] of [['time', time], ['memory', memory], ['cpus', cpus]] as const) {
    if (!Number.isSafeInteger(v) || v < 1 || v > 0xffffffff) {
      throw new CorruptImageError(FORMAT, `${where}.${name}`, `invalid Argon2 ${name} ${v}`);
    }
  }
  if (memory < 8 * cpus) throw new CorruptImageError(FORMAT, `${where}.memory`, `Argon2 memory ${memory} KiB is below 8 KiB per lane (${cpus} lanes)`);
  if (memory > limits.maxArgon2MemoryKiB) {
    throw new UnsupportedFeatureError(FORMAT, 'KDF cost', `Argon2 memory ${memory} KiB exceeds the limit of ${limits.maxArgon2MemoryKiB} KiB`);
  }
  if (cpus > limits.maxArgon2Cpus) {
    throw new UnsupportedFeatureError(FORMAT, 'KDF cost', `Argon2 with ${cpus} lanes exceeds the limit of ${limits.maxArgon2Cpus}`);
  }
  if (time * memory > limits.maxArgon2Work) {
    throw new UnsupportedFeatureError(FORMAT, 'KDF cost', `Argon2 time ${time} × memory ${memory} KiB exceeds the work limit of ${limits.maxArgon2Work}`);
  }
}

/** The node:crypto name of a LUKS hash spec, or UnsupportedFeatureError. */
export function hashName(hash: string): string {
  const name = hash.toLowerCase();
  if (!LUKS_HASHES.has(name) || !getHashes().includes(name)) throw new UnsupportedFeatureError(FORMAT, 'hash', hash);
  return name;
}

/** Hashes cryptsetup volumes use that node:crypto (OpenSSL 3 default provider) computes. */
const LUKS_HASHES = new Set(['sha1', 'sha224', 'sha256', 'sha384', 'sha512', 'ripemd160', 'sha3-256', 'sha3-512']);

export function pbkdf2(password: Uint8Array, salt: Uint8Array, iterations: number, length: number, hash: string): Promise<Uint8Array> {
  const digest = hashName(hash);
  return new Promise((resolve, reject) => {
    pbkdf2Callback(password, salt, iterations, length, digest, (err, key) => (err ? reject(err) : resolve(new Uint8Array(key.buffer, key.byteOffset, key.byteLength))));
  });
}

type Argon2Impl = (kdf: Argon2Params, password: Uint8Array, length: number) => Promise<Uint8Array>;
let argon2Impl: Promise<Argon2Impl> | undefined;

async function nodeRsArgon2(): Promise<Argon2Impl> {
  const m = await import('@node-rs/argon2');
  // Algorithm/Version are const enums in the typings: 1 = Argon2i, 2 = Argon2id; Version 1 = 0x13.
  return async (kdf, password, length) => {
    const out = await m.hashRaw(password, {
      algorithm: (kdf.type === 'argon2id' ? 2 : 1) as never,
      version: 1 as never,
      timeCost: kdf.time,
      memoryCost: kdf.memory,
      parallelism: kdf.cpus,
      outputLen: length,
      salt: kdf.salt,
    });
    return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
  };
}

async function hashWasmArgon2(): Promise<Argon2Impl> {
  const m = await import('hash-wasm');
  return async (kdf, password, length) => {
    const options = {
      password,
      salt: kdf.salt,
      iterations: kdf.time,
      memorySize: kdf.memory,
      parallelism: kdf.cpus,
      hashLength: length,
      outputType: 'binary' as const,
    };
    return kdf.type === 'argon2id' ? m.argon2id(options) : m.argon2i(options);
  };
}

/** Selects the Argon2 backend: 'native' (@node-rs/argon2, the default) or 'wasm' (hash-wasm). */
export function useArgon2Backend(backend: 'native' | 'wasm'): void {
  argon2Impl = backend === 'wasm' ? hashWasmArgon2() : nodeRsArgon2().catch(() => hashWasmArgon2());
}

function argon2(): Promise<Argon2Impl> {
  argon2Impl ??= nodeRsArgon2().catch(() => hashWasmArgon2());
  return argon2Impl;
}

/** Derives `length` bytes from the passphrase. Checks the cost against `limits` first. */
export async function deriveKey(kdf: KdfParams, password: Uint8Array, length: number, limits?: KdfLimits): Promise<Uint8Array> {
  checkKdfCost(kdf, limits);
  if (kdf.type === 'pbkdf2') return pbkdf2(password, kdf.salt, kdf.iterations, length, kdf.hash);
  return (await argon2())(kdf, password, length);
}

/** Default Argon2 lanes and memory the way cryptsetup picks them: ≤ 4 lanes, ≤ 1 GiB, ≤ half the RAM. */
export function defaultArgon2Resources(): { memory: number; cpus: number } {
  const halfRamKiB = Math.floor(totalmem() / 2048);
  return { memory: Math.max(32, Math.min(1024 * 1024, halfRamKiB)), cpus: Math.max(1, Math.min(4, availableParallelism())) };
}

/**
 * Benchmarks like cryptsetup: the Argon2 time cost (≥ 4) or PBKDF2 iteration count (≥ 1000) that makes one
 * derivation take about `targetMs` on this machine.
 */
export async function benchmarkKdf(kdf: KdfParams, keySize: number, targetMs: number): Promise<number> {
  const password = new Uint8Array(16);
  if (kdf.type === 'pbkdf2') {
    const probe = 50_000;
    const t0 = performance.now();
    await pbkdf2(password, kdf.salt, probe, keySize, kdf.hash);
    const ms = Math.max(1, performance.now() - t0);
    return Math.max(1000, Math.min(0xffffffff, Math.round((probe * targetMs) / ms)));
  }
  return (await benchmarkArgon2(kdf, keySize, targetMs, false)).time;
}

/**
 * Argon2 costs for `targetMs`, favouring memory as cryptsetup does: at the given (maximum) memory, the time
 * cost (≥ 4) that fits; when even 4 passes are too slow and `mayLowerMemory`, the memory that fits 4 passes
 * (not below 32 MiB). Each probe runs one pass; a changed memory is probed again (the first probe also
 * pays for page faults, so one sample is not trusted).
 */
export async function benchmarkArgon2(kdf: Argon2Params, keySize: number, targetMs: number, mayLowerMemory: boolean): Promise<{ time: number; memory: number }> {
  const max = kdf.memory;
  const floor = Math.min(max, 32 * 1024);
  let memory = max;
  for (let probe = 0; probe < 4; probe++) {
    const t0 = performance.now();
    await deriveKey({ ...kdf, memory, time: 1 }, new Uint8Array(16), keySize);
    const perPass = Math.max(1, performance.now() - t0);
    if (memory === max && 4 * perPass <= targetMs) return { time: Math.max(4, Math.min(1000, Math.round(targetMs / perPass))), memory };
    if (!mayLowerMemory) return { time: 4, memory };
    const next = Math.max(floor, Math.min(max, Math.floor((memory * targetMs) / (4 * perPass))));
    if (Math.abs(next - memory) <= memory * 0.15) return { time: 4, memory: next };
    memory = next;
  }
  return { time: 4, memory };
}
