/**
 * Fault points: every host file operation that changes a medium (open, write, fsync, rename, unlink,
 * link, copy, truncate) first calls `faultPoint(op, path)`. Normally that is one counter
 * increment. Tests make any one of those operations fail, or the process die, to prove that a failure
 * path is as safe as the success path.
 *
 * Design notes
 * - Points are numbered in the order a command reaches them (1, 2, …), so a counting run lists every
 *   point and a second run can fail exactly one of them. The numbering is deterministic because the
 *   commands issue medium operations in a fixed order (parallel compression never touches the host).
 * - Actions: an errno (`EIO`, `EPERM`, `ENOSPC`, …) makes that operation throw the error Node would
 *   throw; `kill` sends SIGKILL to the process (nothing after it runs, as with a pulled stick);
 *   `crash` is the in-process equivalent for fast tests: that operation and every later one throw
 *   `SimulatedCrash` and do nothing, so the files stay exactly as a kill at that instant leaves them.
 * - In a child process the plan comes from LIVESTICK_FAULT ("N:ACTION[,N:ACTION…]"); with
 *   LIVESTICK_FAULT_LOG=FILE every point reached is appended to FILE as "N op path".
 */
import { appendFileSync } from 'node:fs';

export type FaultOp = 'open' | 'create' | 'write' | 'truncate' | 'fsync' | 'rename' | 'unlink' | 'link' | 'copy';

export interface FaultPointInfo {
  readonly index: number;
  readonly op: FaultOp;
  readonly path: string;
}

/** Returns what to do at a point: an errno name, 'kill', 'crash', or undefined to go on. */
export type FaultPlan = (point: FaultPointInfo) => string | undefined;

/** Thrown by every fault point after a simulated crash: the "process" is gone. */
export class SimulatedCrash extends Error {
  constructor(readonly point: FaultPointInfo) {
    super(`simulated crash at fault point ${point.index} (${point.op} ${point.path})`);
    this.name = 'SimulatedCrash';
  }
}

let plan: FaultPlan | undefined = planFromEnv();
let counter = 0;
let crashedAt: FaultPointInfo | undefined;
const log = process.env.LIVESTICK_FAULT_LOG;

function planFromEnv(): FaultPlan | undefined {
  const spec = process.env.LIVESTICK_FAULT;
  if (!spec) return undefined;
  const actions = new Map<number, string>();
  for (const part of spec.split(',')) {
    const m = /^(\d+):([A-Za-z]+)$/.exec(part.trim());
    if (m) actions.set(Number(m[1]), m[2] as string);
  }
  return (p) => actions.get(p.index);
}

const MESSAGES: Record<string, string> = {
  EIO: 'i/o error',
  EPERM: 'operation not permitted',
  EACCES: 'permission denied',
  ENOSPC: 'no space left on device',
  EROFS: 'read-only file system',
  EBUSY: 'resource busy or locked',
  EDQUOT: 'disk quota exceeded',
};

function systemError(code: string, point: FaultPointInfo): NodeJS.ErrnoException {
  const err = new Error(`${code}: ${MESSAGES[code] ?? 'injected failure'}, ${point.op} '${point.path}'`) as NodeJS.ErrnoException;
  err.code = code;
  err.syscall = point.op;
  err.path = point.path;
  return err;
}

/** Called before every host operation that changes a medium. Throws the injected failure, if any. */
export function faultPoint(op: FaultOp, path: string): void {
  const point: FaultPointInfo = { index: ++counter, op, path };
  if (crashedAt !== undefined) throw new SimulatedCrash(crashedAt);
  if (log) appendFileSync(log, `${point.index} ${op} ${path}\n`);
  const action = plan?.(point);
  if (action === undefined) return;
  if (action === 'kill') process.kill(process.pid, 'SIGKILL');
  if (action === 'crash') {
    crashedAt = point;
    throw new SimulatedCrash(point);
  }
  throw systemError(action, point);
}

/**
 * Runs `fn` with a fault plan (tests). Points are numbered from 1 within the call; a simulated crash
 * ends with every later point failing until the call returns. Returns the points reached.
 */
export async function withFaultPlan<T>(p: FaultPlan | undefined, fn: () => Promise<T>): Promise<{ result?: T; error?: unknown; points: number; crashed: FaultPointInfo | undefined }> {
  const saved = { plan, counter, crashedAt };
  plan = p;
  counter = 0;
  crashedAt = undefined;
  try {
    const result = await fn();
    return { result, points: counter, crashed: crashedAt };
  } catch (error) {
    return { error, points: counter, crashed: crashedAt };
  } finally {
    plan = saved.plan;
    counter = saved.counter;
    crashedAt = saved.crashedAt;
  }
}

/** Lists the points a call reaches (op and path), running it without faults. */
export async function tracePoints<T>(fn: () => Promise<T>): Promise<{ result: T; points: FaultPointInfo[] }> {
  const points: FaultPointInfo[] = [];
  const r = await withFaultPlan((p) => {
    points.push(p);
    return undefined;
  }, fn);
  if (r.error !== undefined) throw r.error;
  return { result: r.result as T, points };
}
