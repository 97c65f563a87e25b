/**
 * Key derivation for LUKS keyslots and digests: PBKDF2 (node:crypto) and Argon2i/Argon2id
 * (@node-rs/argon2, with hash-wasm as a pure-wasm fallback). Costs come from untrusted headers, so
 * `checkKdfCost` refuses absurd ones before anything is allocated or computed.
 *
 * Design notes: implausible costs and slow derivations
 * - A KDF benchmark (cryptsetup's, or ours) sizes a keyslot for ~2 s and a digest for ~125 ms on the
 *   machine that made the volume. A PBKDF2 cost this machine would need more than
 *   `maxKeyslotSeconds` (100 s: 50x the benchmark target) or, for a digest, `maxDigestSeconds`
 *   (10 s: 80x) to compute is not what any benchmark wrote: it is refused as an implausible cost
 *   (CorruptImageError) before anything is computed. `LIVESTICK_ALLOW_SLOW_KDF=1` lifts the bound.
 * - The estimate comes from timing a short PBKDF2 run per hash (a few ms, once per process); under
 *   load it overestimates, which the wide margins absorb.
 * - A derivation estimated above ~1 s (or still running after 1 s) is announced to the observer set
 *   with `observeSlowKdf` (the CLI draws a time-based progress bar with the estimate), so nobody
 *   waits silently.
 */
import { pbkdf2 as pbkdf2Callback, pbkdf2Sync, getHashes } from 'node:crypto';
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
  /** Refuse a keyslot PBKDF2 cost estimated to take longer than this here (default 100 s). */
  readonly maxKeyslotSeconds?: number;
  /** Refuse a digest PBKDF2 cost estimated to take longer than this here (default 10 s). */
  readonly maxDigestSeconds?: number;
}

export const MAX_KEYSLOT_SECONDS = 100;
export const MAX_DIGEST_SECONDS = 10;

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
    ...(process.env.LIVESTICK_ALLOW_SLOW_KDF === '1' ? { maxKeyslotSeconds: Infinity, maxDigestSeconds: Infinity } : {}),
  };
}

const pbkdf2Rates = new Map<string, number>();

/** PBKDF2 iterations per second this machine manages with `hash` (measured once per process). */
export function pbkdf2Rate(hash: string): number {
  const digest = hashName(hash);
  let rate = pbkdf2Rates.get(digest);
  if (rate === undefined) {
    pbkdf2Sync('probe', 'salt', 1, 32, digest); // the first call pays for loading the hash
    let iterations = 4096;
    let best = 0;
    for (let samples = 0; samples < 2; ) {
      const t0 = performance.now();
      pbkdf2Sync('probe', 'salt', iterations, 32, digest);
      const ms = performance.now() - t0;
      if (ms < 4 && iterations < 1 << 20) {
        iterations *= 4;
        continue;
      }
      best = Math.max(best, (iterations * 1000) / Math.max(ms, 0.001));
      samples++;
    }
    rate = best;
    pbkdf2Rates.set(digest, rate);
  }
  return rate;
}

/** Estimated milliseconds of one PBKDF2 derivation on this machine (one output block). */
export function estimatePbkdf2Ms(hash: string, iterations: number): number {
  return (iterations * 1000) / pbkdf2Rate(hash);
}

export interface SlowKdfNotice {
  /** What is derived, e.g. "PBKDF2-sha256, 16000000 iterations". */
  readonly what: string;
  readonly estimatedMs: number;
}

/** Told when a derivation expected to take more than SLOW_KDF_MS starts (or is still running after it); the returned function is called when it ends. */
export type SlowKdfObserver = (notice: SlowKdfNotice) => () => void;

export const SLOW_KDF_MS = 1000;
let slowKdfObserver: SlowKdfObserver | undefined;

/** Sets (or clears) the process-wide observer of slow derivations; returns the previous one. */
export function observeSlowKdf(observer: SlowKdfObserver | undefined): SlowKdfObserver | undefined {
  const previous = slowKdfObserver;
  slowKdfObserver = observer;
  return previous;
}

/** Announces a derivation expected to be slow at its start, and any other one still running after SLOW_KDF_MS. */
async function announced<T>(what: string, estimatedMs: number, work: () => Promise<T>): Promise<T> {
  let done: (() => void) | undefined;
  const started = performance.now();
  const announce = () => {
    done = slowKdfObserver?.({ what, estimatedMs: Math.max(estimatedMs, performance.now() - started) });
  };
  let timer: NodeJS.Timeout | undefined;
  if (estimatedMs >= SLOW_KDF_MS) announce();
  else {
    timer = setTimeout(announce, SLOW_KDF_MS);
    timer.unref();
  }
  try {
    return await work();
  } finally {
    clearTimeout(timer);
    done?.();
  }
}

const FORMAT = 'luks';

/**
 * Refuses a cost livestick will not compute. `where` names the field; a digest's (volume.ts passes
 * "mkDigestIterations" or "digests.N") is held to the digest bound, anything else to the keyslot one.
 */
export function checkKdfCost(kdf: KdfParams, limits: KdfLimits = defaultKdfLimits(), where = 'kdf'): void {
  if (kdf.type === 'pbkdf2') {
    if (!Number.isSafeInteger(kdf.iterations) || kdf.iterations < 1) {
      throw new CorruptImageError(FORMAT, `${where}.iterations`, `invalid PBKDF2 iteration count ${kdf.iterations}`);
    }
    if (kdf.iterations > limits.maxPbkdf2Iterations) {
      throw new UnsupportedFeatureError(FORMAT, 'KDF cost', `PBKDF2 with ${kdf.iterations} iterations exceeds the limit of ${limits.maxPbkdf2Iterations}`);
    }
    hashName(kdf.hash);
    const digest = /digest/i.test(where);
    const maxSeconds = digest ? (limits.maxDigestSeconds ?? MAX_DIGEST_SECONDS) : (limits.maxKeyslotSeconds ?? MAX_KEYSLOT_SECONDS);
    if (Number.isFinite(maxSeconds)) {
      const seconds = estimatePbkdf2Ms(kdf.hash, kdf.iterations) / 1000;
      if (seconds > maxSeconds) {
        const field = where === 'mkDigestIterations' ? where : `${where}.iterations`;
        throw new CorruptImageError(
          FORMAT,
          field,
          `implausible KDF cost: PBKDF2-${kdf.hash} with ${kdf.iterations} iterations would take about ${Math.round(seconds)} s here, far beyond what a KDF benchmark sets for a ${digest ? 'digest (~0.1 s)' : 'keyslot (~2 s)'}; set LIVESTICK_ALLOW_SLOW_KDF=1 to compute it anyway`,
        );
      }
    }
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
  const blocks = Math.ceil(length / hashLength(digest));
  const run = () =>
    new Promise<Uint8Array>((resolve, reject) => {
      pbkdf2Callback(password, salt, iterations, length, digest, (err, key) => (err ? reject(err) : resolve(new Uint8Array(key.buffer, key.byteOffset, key.byteLength))));
    });
  if (slowKdfObserver === undefined) return run();
  return announced(`PBKDF2-${digest}, ${iterations} iterations`, blocks * estimatePbkdf2Ms(digest, iterations), run);
}

function hashLength(digest: string): number {
  return { sha1: 20, sha224: 28, sha256: 32, sha384: 48, sha512: 64, ripemd160: 20, 'sha3-256': 32, 'sha3-512': 64 }[digest] ?? 32;
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
  const impl = await argon2();
  if (slowKdfObserver === undefined) return impl(kdf, password, length);
  return announced(`${kdf.type}, ${kdf.time} passes over ${Math.round(kdf.memory / 1024)} MiB`, estimateArgon2Ms(kdf), () => impl(kdf, password, length));
}

/** Rough Argon2 time on this machine: ~1 GiB-pass per second per lane the machine can run at once. */
export function estimateArgon2Ms(kdf: Argon2Params): number {
  const lanes = Math.max(1, Math.min(kdf.cpus, availableParallelism()));
  return (kdf.time * kdf.memory) / (1024 * 1024) / lanes * 1000;
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
