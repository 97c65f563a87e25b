import { statSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import type { Command } from 'commander';

/**
 * Each command family lives in its own module and registers itself. Only the family the arguments
 * name is loaded (each pulls in its own layers: LUKS and Argon2, ext4, the codecs…), which keeps
 * start-up short; help and unknown commands load them all.
 */
interface Family {
  names: readonly string[];
  load: () => Promise<(program: Command) => void>;
  /** How many codec worker threads the arguments will want: started before the family loads. */
  workers?: (args: readonly string[]) => number;
}

const FAMILIES: readonly Family[] = [
  { names: ['demo'], load: async () => (await import('./demo.ts')).registerDemo },
  { names: ['status', 'merge', 'reset'], load: async () => (await import('./medium.ts')).registerMedium },
  { names: ['overlay'], load: async () => (await import('./overlay.ts')).registerOverlay },
  { names: ['ext4'], load: async () => (await import('./ext4.ts')).registerExt4 },
  { names: ['luks'], load: async () => (await import('./luks.ts')).registerLuks },
  { names: ['home'], load: async () => (await import('./home.ts')).registerHome },
  { names: ['squashfs'], load: async () => (await import('./squashfs.ts')).registerSquashfs, workers: extractWorkers },
];

/**
 * `squashfs extract IMAGE DEST [--threads N]`: the worker threads extractSquashfs will start (all cores
 * for an image over 8 MiB, by default). Starting them first overlaps their start-up with loading the
 * layers; a wrong guess costs an idle thread, never a wrong result.
 */
export function extractWorkers(args: readonly string[]): number {
  if (args[1] !== 'extract') return 0;
  const positional: string[] = [];
  let threads: string | undefined;
  for (let i = 2; i < args.length; i++) {
    const a = args[i] as string;
    if (a === '--threads') threads = args[++i];
    else if (a.startsWith('--threads=')) threads = a.slice('--threads='.length);
    else if (!a.startsWith('-')) positional.push(a);
  }
  if (threads !== undefined) return /^\d{1,2}$/.test(threads) ? Number(threads) : 0;
  try {
    return positional[0] !== undefined && statSync(positional[0]).size > 8 << 20 ? availableParallelism() : 0;
  } catch {
    return 0;
  }
}

/** Registers the family the first non-option argument names, or every family (in the order above). */
export async function registerCommands(program: Command, args: readonly string[] = []): Promise<void> {
  const first = args.find((a) => !a.startsWith('-'));
  const named = FAMILIES.filter((f) => first !== undefined && f.names.includes(first));
  const chosen = named.length === 1 ? named : FAMILIES;
  const workers = named.length === 1 ? (named[0]?.workers?.(args) ?? 0) : 0;
  if (workers > 0) (await import('../../fs/squashfs/comp/pool.ts')).prestartWorkers(workers);
  const registers = await Promise.all(chosen.map((f) => f.load()));
  for (const register of registers) register(program);
}
