import { statSync } from 'node:fs';
import type { Command } from 'commander';

/**
 * Each command family lives in its own module and registers itself. Only the family the arguments
 * name is loaded (each pulls in its own layers: LUKS and Argon2, ext4, the codecs…), which keeps
 * start-up short; help and unknown commands load them all.
 */
interface Family {
  names: readonly string[];
  load: () => Promise<(program: Command) => void>;
  /** Starts the codec worker threads the arguments will want, before the family loads. */
  prestart?: (args: readonly string[]) => Promise<void>;
}

const FAMILIES: readonly Family[] = [
  { names: ['demo'], load: async () => (await import('./demo.ts')).registerDemo },
  { names: ['inspect'], load: async () => (await import('./inspect.ts')).registerInspect },
  { names: ['status', 'merge', 'reset'], load: async () => (await import('./medium.ts')).registerMedium },
  { names: ['overlay'], load: async () => (await import('./overlay.ts')).registerOverlay },
  { names: ['ext4'], load: async () => (await import('./ext4.ts')).registerExt4 },
  { names: ['luks'], load: async () => (await import('./luks.ts')).registerLuks },
  { names: ['home'], load: async () => (await import('./home.ts')).registerHome },
  { names: ['squashfs'], load: async () => (await import('./squashfs.ts')).registerSquashfs, prestart: prestartExtractWorkers },
  { names: ['erofs'], load: async () => (await import('./erofs.ts')).registerErofs },
  { names: ['iso'], load: async () => (await import('./iso.ts')).registerIso },
];

/**
 * `squashfs extract IMAGE DEST [--threads N]`: the worker threads extractSquashfs will start (all cores
 * for an image over 8 MiB, by default). Starting them first overlaps their start-up with loading the
 * layers; a wrong guess costs an idle thread, never a wrong result.
 */
export async function extractWorkers(args: readonly string[]): Promise<number> {
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
  let bytes: number;
  try {
    bytes = positional[0] === undefined ? 0 : statSync(positional[0]).size;
  } catch {
    return 0;
  }
  return (await import('../../fs/squashfs/comp/pool.ts')).defaultExtractThreads(bytes);
}

async function prestartExtractWorkers(args: readonly string[]): Promise<void> {
  const n = await extractWorkers(args);
  if (n > 0) (await import('../../fs/squashfs/comp/pool.ts')).prestartWorkers(n);
}

/** Registers the family the first non-option argument names, or every family (in the order above). */
export async function registerCommands(program: Command, args: readonly string[] = []): Promise<void> {
  const first = args.find((a) => !a.startsWith('-'));
  const named = FAMILIES.filter((f) => first !== undefined && f.names.includes(first));
  const chosen = named.length === 1 ? named : FAMILIES;
  if (named.length === 1) await named[0]?.prestart?.(args);
  const registers = await Promise.all(chosen.map((f) => f.load()));
  for (const register of registers) register(program);
}
