/**
 * The fuzz harness: mutated seed images through a parser's full read path, where every case must end
 * in success or a LivestickError subclass.
 *
 * Design notes
 * - Cases run on a worker thread (one per parser suite) so a hang or a heap blow-up is caught too: the
 *   main thread's watchdog terminates a worker whose case outlives CASE_TIMEOUT_MS, the worker's heap is
 *   capped (resourceLimits), and either becomes a finding naming the case; the run then goes on from
 *   the next case in a fresh worker.
 * - Inside the worker every Disk read goes through `BudgetDisk`: beyond an op, byte or deadline budget,
 *   or for one read above READ_CAP, it throws FuzzCapError (not a LivestickError, so a finding): loops
 *   that read end, and huge allocations driven by on-disk sizes show up. After each case the worker
 *   checks how much ArrayBuffer memory is live (ALLOC_CAP).
 * - Seeds: FUZZ_SEED replays; in CI (CI=true) a fixed seed; locally a random one, printed. FUZZ_CASES
 *   sets the count (default DEFAULT_CASES, CI-sized); FUZZ_CASE=i runs that one case and prints its
 *   mutation and stack. A finding's image is saved under FUZZ_FINDINGS (default $TMPDIR/livestick-fuzz).
 */
import { Worker } from 'node:worker_threads';
import { mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LivestickError } from '../../src/errors.ts';
import type { Disk } from '../../src/io/disk.ts';
import { MutantDisk, mutant, rngFor, type Seed } from './mutate.ts';

export const CASE_TIMEOUT_MS = 10_000;
export const CASE_DEADLINE_MS = 8_000;
export const READ_CAP = 256 << 20;
export const ALLOC_CAP = 2 ** 31;
export const MAX_READ_OPS = 400_000;
export const MAX_READ_BYTES = 2 ** 31;
export const HEAP_CAP_MB = 2048;
export const DEFAULT_CASES = 500;

/** A budget was exceeded: a hang, a runaway read loop or a huge read. Deliberately not a LivestickError. */
export class FuzzCapError extends Error {}

export interface Budget {
  ops: number;
  bytes: number;
  readonly deadline: number;
}

export function newBudget(): Budget {
  return { ops: 0, bytes: 0, deadline: Date.now() + CASE_DEADLINE_MS };
}

/** Counts reads against the case's budget; everything else passes through. */
export class BudgetDisk implements Disk {
  readonly inner: Disk;
  readonly budget: Budget;

  constructor(inner: Disk, budget: Budget) {
    this.inner = inner;
    this.budget = budget;
  }

  get size(): number {
    return this.inner.size;
  }

  get readOnly(): boolean {
    return this.inner.readOnly;
  }

  async read(buf: Uint8Array, offset: number): Promise<void> {
    const b = this.budget;
    if (buf.byteLength > READ_CAP) throw new FuzzCapError(`a single read of ${buf.byteLength} bytes (cap ${READ_CAP})`);
    if (++b.ops > MAX_READ_OPS) throw new FuzzCapError(`more than ${MAX_READ_OPS} reads: a loop?`);
    b.bytes += buf.byteLength;
    if (b.bytes > MAX_READ_BYTES) throw new FuzzCapError(`more than ${MAX_READ_BYTES} bytes read`);
    if ((b.ops & 63) === 0 && Date.now() > b.deadline) throw new FuzzCapError(`case still reading after ${CASE_DEADLINE_MS} ms`);
    return this.inner.read(buf, offset);
  }

  write(buf: Uint8Array, offset: number): Promise<void> {
    return this.inner.write(buf, offset);
  }

  flush(): Promise<void> {
    return this.inner.flush();
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}

/** A parser's fuzz target: its seeds and its full read path over a (mutated) image. */
export interface Target {
  readonly name: string;
  seeds(): Promise<Seed[]>;
  /** Reads everything reachable from `disk`; `budget` lets in-memory loops check the deadline. */
  exercise(disk: Disk, seed: Seed, budget: Budget): Promise<void>;
}

export interface Finding {
  readonly caseIndex: number;
  readonly seedImage: string;
  readonly kind: 'untyped' | 'cap' | 'slow' | 'memory' | 'hang' | 'heap' | 'crash';
  readonly message: string;
  readonly what: readonly string[];
  readonly saved?: string;
}

export interface RunResult {
  readonly target: string;
  readonly seed: number;
  readonly cases: number;
  readonly ok: number;
  readonly typed: number;
  /** Typed error codes seen, with counts (how deep the mutations got). */
  readonly codes: Record<string, number>;
  readonly findings: Finding[];
  readonly ms: number;
  readonly seeds: readonly { name: string; bytes: number }[];
}

export function runSeed(): number {
  if (process.env.FUZZ_SEED !== undefined) return Number(process.env.FUZZ_SEED) >>> 0;
  if (process.env.CI) return 20261201;
  return (Math.random() * 2 ** 32) >>> 0;
}

export function caseCount(): number {
  const n = Number(process.env.FUZZ_CASES ?? DEFAULT_CASES);
  return Number.isSafeInteger(n) && n > 0 ? n : DEFAULT_CASES;
}

// ---- worker side ------------------------------------------------------------------------------

export type WorkerMessage =
  | { type: 'ready'; seeds: { name: string; bytes: number }[] }
  | { type: 'case'; index: number; what: string[]; seedImage: string }
  | { type: 'result'; index: number; outcome: 'ok' | 'typed'; code?: string }
  | { type: 'finding'; finding: Finding }
  | { type: 'done' };

function describeError(err: unknown): string {
  if (err instanceof Error) return `${err.name}: ${err.message}\n${(err.stack ?? '').split('\n').slice(1, 9).join('\n')}`;
  return String(err);
}

/** Runs cases [from, to) of `target` (on the worker); `post` sends progress to the main thread. */
export async function runCases(target: Target, seed: number, from: number, to: number, post: (m: WorkerMessage) => void, verbose = false): Promise<void> {
  const seeds = await target.seeds();
  post({ type: 'ready', seeds: seeds.map((s) => ({ name: s.name, bytes: s.bytes.byteLength })) });
  for (let index = from; index < to; index++) {
    const rng = rngFor(seed, index);
    const base = seeds[Math.floor(rng() * seeds.length)]!;
    const m = mutant(base, rng);
    post({ type: 'case', index, what: m.what, seedImage: base.name });
    const disk = new MutantDisk(base.bytes, m);
    const budget = newBudget();
    const started = Date.now();
    let finding: Omit<Finding, 'caseIndex' | 'seedImage' | 'what'> | undefined;
    try {
      await target.exercise(new BudgetDisk(disk, budget), base, budget);
      post({ type: 'result', index, outcome: 'ok' });
    } catch (err) {
      if (verbose) console.error(err);
      if (err instanceof LivestickError) post({ type: 'result', index, outcome: 'typed', code: err.code });
      else finding = { kind: err instanceof FuzzCapError ? 'cap' : 'untyped', message: describeError(err) };
    }
    const ms = Date.now() - started;
    if (!finding && ms > CASE_DEADLINE_MS) finding = { kind: 'slow', message: `the case took ${ms} ms` };
    const live = process.memoryUsage().arrayBuffers;
    if (!finding && live > ALLOC_CAP) finding = { kind: 'memory', message: `${live} bytes of ArrayBuffers live after the case` };
    if (finding) {
      let saved: string | undefined;
      try {
        const dir = process.env.FUZZ_FINDINGS ?? join(tmpdir(), 'livestick-fuzz');
        mkdirSync(dir, { recursive: true });
        saved = join(dir, `${target.name}-${seed}-${index}.img`);
        writeFileSync(saved, await disk.bytes());
      } catch {
        saved = undefined;
      }
      post({ type: 'finding', finding: { ...finding, caseIndex: index, seedImage: base.name, what: m.what, ...(saved ? { saved } : {}) } });
    }
  }
  post({ type: 'done' });
}

// ---- main-thread side -------------------------------------------------------------------------

function workerUrl(): URL {
  const url = new URL('./worker.ts', import.meta.url);
  return new URL(`data:text/javascript,${encodeURIComponent(`const { register } = await import(${JSON.stringify(import.meta.resolve('tsx/esm/api'))}); register(); await import(${JSON.stringify(url.href)});`)}`);
}

/** Runs `cases` cases of the named target (see targets.ts) on a worker thread, restarting it after a hang or crash. */
export async function fuzz(targetName: string, options: { seed?: number; cases?: number; only?: number; caseTimeoutMs?: number } = {}): Promise<RunResult> {
  const caseTimeout = options.caseTimeoutMs ?? CASE_TIMEOUT_MS;
  const seed = options.seed ?? runSeed();
  const only = options.only ?? (process.env.FUZZ_CASE !== undefined ? Number(process.env.FUZZ_CASE) : undefined);
  const from = only ?? 0;
  const to = only !== undefined ? only + 1 : (options.cases ?? caseCount());
  const started = Date.now();
  const findings: Finding[] = [];
  const codes: Record<string, number> = {};
  let ok = 0;
  let typed = 0;
  let seeds: { name: string; bytes: number }[] = [];
  let next = from;
  while (next < to) {
    const start = next;
    await new Promise<void>((resolve) => {
      const worker = new Worker(workerUrl(), {
        workerData: { target: targetName, seed, from: start, to, verbose: only !== undefined && process.env.FUZZ_CASE !== undefined },
        resourceLimits: { maxOldGenerationSizeMb: HEAP_CAP_MB },
        stderr: false,
      });
      let current: { index: number; what: string[]; seedImage: string } | undefined;
      let lastBeat = Date.now();
      let settled = false;
      const finish = () => {
        if (settled) return;
        settled = true;
        clearInterval(watchdog);
        resolve();
      };
      const lost = (kind: Finding['kind'], message: string) => {
        if (current) {
          findings.push({ caseIndex: current.index, seedImage: current.seedImage, kind, message, what: current.what });
          next = current.index + 1;
          current = undefined;
        } else {
          findings.push({ caseIndex: next, seedImage: '(setup)', kind, message, what: [] });
          next = to;
        }
      };
      const watchdog = setInterval(() => {
        if (Date.now() - lastBeat > caseTimeout + (current ? 0 : 120_000)) {
          lost('hang', `no progress for ${caseTimeout} ms`);
          void worker.terminate().then(finish);
        }
      }, 250);
      worker.on('message', (m: WorkerMessage) => {
        lastBeat = Date.now();
        if (m.type === 'ready') seeds = m.seeds;
        else if (m.type === 'case') {
          current = m;
          next = m.index + 1;
        } else if (m.type === 'result') {
          if (m.outcome === 'ok') ok++;
          else {
            typed++;
            codes[m.code ?? '?'] = (codes[m.code ?? '?'] ?? 0) + 1;
          }
          current = undefined;
        } else if (m.type === 'finding') {
          findings.push(m.finding);
          current = undefined;
        } else if (m.type === 'done') {
          next = to;
          current = undefined;
        }
      });
      worker.on('error', (err: Error & { code?: string }) => {
        lost(err.code === 'ERR_WORKER_OUT_OF_MEMORY' ? 'heap' : 'crash', describeError(err));
        finish();
      });
      worker.on('exit', () => {
        if (!settled && next < to && current) lost('crash', 'the worker exited mid-case');
        finish();
      });
    });
  }
  return { target: targetName, seed, cases: to - from, ok, typed, codes, findings, ms: Date.now() - started, seeds };
}

/** One line per finding with what to run to replay it. */
export function report(r: RunResult, testFile: string): string {
  const codes = Object.entries(r.codes).sort((a, b) => b[1] - a[1]).map(([c, n]) => `${c} ${n}`).join(', ');
  const head = `${r.target}: ${r.cases} cases (seed ${r.seed}) in ${(r.ms / 1000).toFixed(1)} s: ${r.ok} ok, ${r.typed} typed errors (${codes || 'none'}), ${r.findings.length} findings; seeds: ${r.seeds.map((s) => s.name).join(' | ')}`;
  const lines = r.findings.slice(0, 20).map(
    (f) => `  case ${f.caseIndex} [${f.kind}] on ${f.seedImage}: ${f.what.join('; ')}\n    ${f.message.split('\n').join('\n    ')}\n    replay: FUZZ_SEED=${r.seed} FUZZ_CASE=${f.caseIndex} npm test -- ${testFile}${f.saved ? `\n    image: ${f.saved}` : ''}`,
  );
  return [head, ...lines].join('\n');
}
