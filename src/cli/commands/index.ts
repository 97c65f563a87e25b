import type { Command } from 'commander';

/**
 * Each command family lives in its own module and registers itself. Only the family the arguments
 * name is loaded (each pulls in its own layers: LUKS and Argon2, ext4, the codecs…), which keeps
 * start-up short; help and unknown commands load them all.
 */
const FAMILIES: ReadonlyArray<{ names: readonly string[]; load: () => Promise<(program: Command) => void> }> = [
  { names: ['demo'], load: async () => (await import('./demo.ts')).registerDemo },
  { names: ['status', 'merge', 'reset'], load: async () => (await import('./medium.ts')).registerMedium },
  { names: ['overlay'], load: async () => (await import('./overlay.ts')).registerOverlay },
  { names: ['ext4'], load: async () => (await import('./ext4.ts')).registerExt4 },
  { names: ['luks'], load: async () => (await import('./luks.ts')).registerLuks },
  { names: ['home'], load: async () => (await import('./home.ts')).registerHome },
  { names: ['squashfs'], load: async () => (await import('./squashfs.ts')).registerSquashfs },
];

/** Registers the family the first non-option argument names, or every family (in the order above). */
export async function registerCommands(program: Command, args: readonly string[] = []): Promise<void> {
  const first = args.find((a) => !a.startsWith('-'));
  const named = FAMILIES.filter((f) => first !== undefined && f.names.includes(first));
  const chosen = named.length === 1 ? named : FAMILIES;
  const registers = await Promise.all(chosen.map((f) => f.load()));
  for (const register of registers) register(program);
}
