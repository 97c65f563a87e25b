/** Worker thread of the fuzz harness: builds the target's seeds and runs its cases (see harness.ts). */
import { parentPort, workerData } from 'node:worker_threads';
import { runCases } from './harness.ts';
import { TARGETS } from './targets.ts';

const { target, seed, from, to, verbose } = workerData as { target: string; seed: number; from: number; to: number; verbose: boolean };
const t = TARGETS[target] ?? (target.startsWith('selftest-') ? (await import('./selftest-targets.ts')).SELFTEST[target] : undefined);
if (!t) throw new Error(`no fuzz target ${target}`);
await runCases(t, seed, from, to, (m) => parentPort!.postMessage(m), verbose);
