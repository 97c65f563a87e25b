/**
 * Runs a command's heavy work in a worker thread whose V8 heap is bounded, so the command's peak
 * memory is too.
 *
 * Design notes
 * - V8 sizes a heap by how fast it grows, not by what it keeps: a merge that holds ~50 MiB of live
 *   objects and streams hundreds of MiB through short-lived ones lets its heap reach 140 MiB and more
 *   between collections (measured). A heap's limits can only be set when it is created, and the main
 *   thread's is created before any of our code runs; a worker's are set by `resourceLimits`. So the
 *   task runs in a worker with a bounded old generation (default 112 MiB, LIVESTICK_HEAP_MIB to
 *   change it; 0 runs the task on the main thread, unbounded) and a small young generation, while the
 *   main thread only waits.
 * - Tasks (./bounded-tasks.ts) take and return structured-cloneable values. A typed error comes
 *   back as a LivestickError with the same name, code, exit code, file and details; any other error
 *   as an Error (a bug: the CLI says so).
 * - A task that needs more heap than the bound is stopped by V8 (as a crash would stop it: the
 *   medium's own recovery finishes or rolls back on the next command); that is said as a typed error
 *   naming the bound and how to raise it.
 */
import { Worker } from 'node:worker_threads';
import { ExitCode, LivestickError, UsageError, type ErrorCode } from '../errors.ts';
import { workerEntryUrl } from '../io/worker-url.ts';
import type { TASKS, TaskName } from './bounded-tasks.ts';

export type SerializedError =
  | { typed: true; name: string; code: ErrorCode; exitCode: number; message: string; file: string | undefined; details: Record<string, unknown> }
  | { typed: false; name: string; message: string; stack?: string };

/** A typed error raised inside the bounded worker, as the main thread sees it. */
export class WorkerTaskError extends LivestickError {
  readonly #details: Record<string, unknown>;
  constructor(e: Extract<SerializedError, { typed: true }>) {
    super(e.code, e.exitCode, e.message, e.file === undefined ? undefined : { file: e.file });
    this.name = e.name;
    this.#details = e.details;
  }
  override details(): Record<string, unknown> {
    return { ...super.details(), ...this.#details };
  }
}

export const DEFAULT_HEAP_MIB = 112;
const YOUNG_GENERATION_MIB = 12;

/** The old-generation bound in MiB (0: run on the main thread) from LIVESTICK_HEAP_MIB. */
export function heapBoundMiB(env: NodeJS.ProcessEnv = process.env): number {
  const text = env.LIVESTICK_HEAP_MIB;
  if (text === undefined || text === '') return DEFAULT_HEAP_MIB;
  const n = Number(text);
  if (!Number.isInteger(n) || n < 0 || (n > 0 && n < 32)) throw new UsageError(`LIVESTICK_HEAP_MIB: "${text}" is not 0 (unbounded, on the main thread) or a number of MiB ≥ 32`);
  return n;
}

type Task<K extends TaskName> = (typeof TASKS)[K];

export async function runBounded<K extends TaskName>(task: K, ...args: Parameters<Task<K>>): Promise<Awaited<ReturnType<Task<K>>>> {
  const mib = heapBoundMiB();
  if (mib === 0) {
    const { TASKS: tasks } = await import('./bounded-tasks.ts');
    return (tasks[task] as (...a: unknown[]) => Promise<Awaited<ReturnType<Task<K>>>>)(...args);
  }
  const worker = new Worker(workerEntryUrl(import.meta.url, 'bounded-worker'), {
    workerData: { task, args },
    resourceLimits: { maxOldGenerationSizeMb: mib, maxYoungGenerationSizeMb: YOUNG_GENERATION_MIB },
  });
  return new Promise<Awaited<ReturnType<Task<K>>>>((resolve, reject) => {
    let settled = false;
    worker.on('message', (m: { ok: true; result: Awaited<ReturnType<Task<K>>> } | { ok: false; error: SerializedError }) => {
      settled = true;
      if (m.ok) resolve(m.result);
      else if (m.error.typed) reject(new WorkerTaskError(m.error));
      else reject(Object.assign(new Error(m.error.message), { name: m.error.name, stack: m.error.stack }));
    });
    worker.on('error', (err: Error & { code?: string }) => {
      if (settled) return;
      settled = true;
      if (err.code === 'ERR_WORKER_OUT_OF_MEMORY') {
        reject(new LivestickError('FAILURE', ExitCode.failure, `${task} needed more than its ${mib} MiB of JavaScript heap and was stopped where it was, as a crash would stop it (the next command on the medium finishes or rolls back what it left); LIVESTICK_HEAP_MIB=${mib * 2} allows more`));
      } else reject(err);
    });
    worker.on('exit', (code) => {
      if (settled) return;
      settled = true;
      reject(new Error(`the ${task} worker stopped (exit code ${code}) without a result`));
    });
  });
}
