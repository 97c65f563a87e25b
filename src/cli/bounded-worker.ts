// Entry of the bounded worker (./bounded.ts): runs one task and posts its result or its error.
import { parentPort, workerData } from 'node:worker_threads';
import { LivestickError } from '../errors.ts';
import { TASKS, type TaskName } from './bounded-tasks.ts';
import { typedError } from './common.ts';
import type { SerializedError } from './bounded.ts';

const { task, args } = workerData as { task: TaskName; args: unknown[] };

function serialize(err: unknown): SerializedError {
  const e = typedError(err);
  if (e instanceof LivestickError) return { typed: true, name: e.name, code: e.code, exitCode: e.exitCode, message: e.message, file: e.file, details: e.details() };
  if (e instanceof Error) return { typed: false, name: e.name, message: e.message, stack: e.stack };
  return { typed: false, name: 'Error', message: String(e) };
}

try {
  const result = await (TASKS[task] as (...a: unknown[]) => Promise<unknown>)(...args);
  parentPort!.postMessage({ ok: true, result });
} catch (err) {
  parentPort!.postMessage({ ok: false, error: serialize(err) });
}
