/**
 * `livestick luks …`: inspect, create and re-key LUKS volumes (a thin frontend over src/xform/luks).
 * Secrets come from ../secrets.ts: a prompt without echo (three tries), --passphrase-file F (what a
 * person types: a trailing newline dropped) or --key-file F (exact bytes, as cryptsetup's). `format`
 * refuses a volume holding any filesystem, LUKS or partition signature unless --force (or a typed YES).
 */
import type { Command } from 'commander';
import { AlreadyExistsError, LivestickError, UsageError } from '../../errors.ts';
import { formatSize } from '../../io/bytes.ts';
import { FileDisk } from '../../io/disk.ts';
import { describeSignatures, probeSignatures } from '../../io/signature.ts';
import { LuksVolume, type KdfChoice, type LuksInfo } from '../../xform/luks/index.ts';
import { parseIntegerOption, parseSizeOption, runCommand, withOutputOptions, type OutputOptions } from '../common.ts';
import { addNewSecretOptions, addSecretOptions, confirmDestruction, currentSecret, memoized, newSecret, withTries, type NewSecretOptions, type SecretOptions } from '../secrets.ts';

// ---------------------------------------------------------------------------------------------------
// Options

export interface KdfOpts {
  pbkdf?: string;
  pbkdfMemory?: string;
  pbkdfParallel?: string;
  pbkdfForceIterations?: string;
  iterTime?: string;
}

/** The KDF the --pbkdf* / --iter-time options ask for (shared with the home commands). */
export function kdfChoice(o: KdfOpts): KdfChoice | undefined {
  if (o.pbkdf === undefined && o.pbkdfMemory === undefined && o.pbkdfParallel === undefined && o.pbkdfForceIterations === undefined && o.iterTime === undefined) return undefined;
  const type = o.pbkdf ?? 'argon2id';
  const iterTimeMs = o.iterTime === undefined ? undefined : parseIntegerOption(o.iterTime, '--iter-time');
  const forced = o.pbkdfForceIterations === undefined ? undefined : parseIntegerOption(o.pbkdfForceIterations, '--pbkdf-force-iterations');
  if (type === 'pbkdf2') {
    if (forced !== undefined && forced < 1000) throw new UsageError('--pbkdf-force-iterations: PBKDF2 needs at least 1000 iterations');
    return { type, ...(forced === undefined ? {} : { iterations: forced }), ...(iterTimeMs === undefined ? {} : { iterTimeMs }) };
  }
  if (type !== 'argon2id' && type !== 'argon2i') throw new UsageError(`--pbkdf: "${type}" must be argon2id, argon2i or pbkdf2`);
  if (forced !== undefined && forced < 4) throw new UsageError('--pbkdf-force-iterations: Argon2 needs a time cost of at least 4');
  const memory = o.pbkdfMemory === undefined ? undefined : parseIntegerOption(o.pbkdfMemory, '--pbkdf-memory');
  if (memory !== undefined && (memory < 32 || memory > 4 * 1024 * 1024)) throw new UsageError('--pbkdf-memory: from 32 to 4194304 KiB');
  const cpus = o.pbkdfParallel === undefined ? undefined : parseIntegerOption(o.pbkdfParallel, '--pbkdf-parallel');
  if (cpus !== undefined && (cpus < 1 || cpus > 4)) throw new UsageError('--pbkdf-parallel: from 1 to 4');
  return {
    type,
    ...(forced === undefined ? {} : { time: forced }),
    ...(memory === undefined ? {} : { memory }),
    ...(cpus === undefined ? {} : { cpus }),
    ...(iterTimeMs === undefined ? {} : { iterTimeMs }),
  };
}

function addKdfOptions(cmd: Command): Command {
  return cmd
    .option('--pbkdf <type>', 'argon2id (default), argon2i or pbkdf2')
    .option('--pbkdf-memory <kib>', 'Argon2 memory in KiB (default: 1 GiB, at most half the RAM)')
    .option('--pbkdf-parallel <n>', 'Argon2 threads (default: up to 4)')
    .option('--pbkdf-force-iterations <n>', 'fixed Argon2 time cost or PBKDF2 iterations (skips the benchmark)')
    .option('--iter-time <ms>', 'unlock time the benchmark aims at (default 2000)');
}

async function openVolume(path: string, readOnly: boolean): Promise<{ disk: FileDisk; vol: LuksVolume }> {
  const disk = await FileDisk.open(path, { readOnly });
  try {
    return { disk, vol: await LuksVolume.open(disk) };
  } catch (err) {
    await disk.close();
    throw err instanceof LivestickError ? err.withFile(path) : err;
  }
}

async function onVolume<T>(path: string, readOnly: boolean, body: (vol: LuksVolume) => Promise<T>): Promise<T> {
  const { disk, vol } = await openVolume(path, readOnly);
  try {
    return await body(vol);
  } catch (err) {
    throw err instanceof LivestickError ? err.withFile(path) : err;
  } finally {
    await disk.close();
  }
}

// ---------------------------------------------------------------------------------------------------
// Rendering

export function renderLuksInfo(info: LuksInfo & { volume?: string }): string {
  const lines: string[] = [];
  if (info.volume) lines.push(`volume:      ${info.volume}`);
  lines.push(`version:     LUKS${info.version}${info.version === 2 ? ` (metadata ${formatSize(info.metadataSize)} ×2, seqid ${info.seqid}, using the ${info.header} header)` : ''}`);
  lines.push(`uuid:        ${info.uuid}`);
  if (info.version === 2) lines.push(`label:       ${info.label || '(none)'}`);
  lines.push(`cipher:      ${info.cipher}, ${info.keySize * 8}-bit key, ${info.sectorSize}-byte sectors`);
  lines.push(`data:        ${formatSize(info.payloadSize)} at offset ${info.payloadOffset}`);
  lines.push(`digest:      pbkdf2-${info.digest.hash}, ${info.digest.iterations} iterations`);
  lines.push(info.keyslots.length === 0 ? 'keyslots:    none (the volume cannot be opened)' : 'keyslots:');
  for (const k of info.keyslots) {
    const kdf = k.kdf === undefined ? k.type : k.kdf.type === 'pbkdf2' ? `pbkdf2-${k.kdf.hash}, ${k.kdf.iterations} iterations` : `${k.kdf.type}, time ${k.kdf.time}, memory ${formatSize((k.kdf.memory ?? 0) * 1024)}, ${k.kdf.cpus} threads`;
    lines.push(`  ${k.id}: ${kdf}${k.priority === 2 ? ', preferred' : k.priority === 0 ? ', ignored unless named' : ''}`);
  }
  if (info.requirements.length > 0) lines.push(`requires:    ${info.requirements.join(', ')} (livestick will not modify or open the data)`);
  for (const w of info.warnings) lines.push(`warning:     ${w}`);
  return lines.join('\n');
}

// ---------------------------------------------------------------------------------------------------
// Commands

/** Refuses to format over data unless --force or, at a terminal, a typed YES. */
async function checkNothingToDestroy(disk: FileDisk, path: string, force: boolean): Promise<void> {
  if (force) return;
  const found = await probeSignatures(disk);
  if (found.length === 0) return;
  const what = describeSignatures(found);
  await confirmDestruction(
    `This will overwrite data on ${path} irrevocably: it holds ${what}.`,
    () => new AlreadyExistsError(`holds ${what}; formatting destroys it: use --force to overwrite`, { file: path }),
  );
}

export function registerLuks(program: Command): void {
  const luks = program.command('luks').description('inspect, create and re-key LUKS volumes (cryptsetup-compatible, no root needed)');

  withOutputOptions(
    luks
      .command('info')
      .description('show a LUKS1/LUKS2 volume: cipher, KDFs, keyslots, UUID, label, header state')
      .argument('<volume>', 'the LUKS image file'),
  ).action(async (path: string, opts: OutputOptions) => {
    await runCommand(opts, async () => onVolume(path, true, async (vol) => ({ volume: path, ...vol.info() })), renderLuksInfo);
  });

  withOutputOptions(
    addSecretOptions(
      addKdfOptions(
        luks
          .command('format')
          .description('create a LUKS2 volume (aes-xts-plain64, argon2id by default) in a file')
          .argument('<volume>', 'the image file (created with --size, else it must exist)')
          .option('--size <size>', 'create the file with this size (sparse where the host allows)')
          .option('--sector-size <bytes>', 'encryption sector size: 512 or 4096 (default 4096)')
          .option('--key-size <bits>', 'volume key size: 512 (default) or 256')
          .option('--label <label>', 'LUKS2 label')
          .option('--force', 'overwrite a volume that holds a filesystem, LUKS or partition table signature'),
      ),
      'the new passphrase',
    ),
  ).action(async (path: string, opts: KdfOpts & SecretOptions & OutputOptions & { size?: string; sectorSize?: string; keySize?: string; label?: string; force?: boolean }) => {
    await runCommand(
      opts,
      async () => {
        const sectorSize = opts.sectorSize === undefined ? 4096 : parseIntegerOption(opts.sectorSize, '--sector-size');
        if (sectorSize !== 512 && sectorSize !== 4096) throw new UsageError('--sector-size: 512 or 4096');
        const keyBits = opts.keySize === undefined ? 512 : parseIntegerOption(opts.keySize, '--key-size');
        if (keyBits !== 256 && keyBits !== 512) throw new UsageError('--key-size: 256 or 512');
        const kdf = kdfChoice(opts);
        const size = opts.size === undefined ? undefined : parseSizeOption(opts.size, '--size');
        const secret = newSecret(opts, 'Enter passphrase for the new volume: ', ['--passphrase-file', '--key-file']);
        const disk = await FileDisk.open(path, size === undefined ? {} : { create: { size } });
        try {
          await checkNothingToDestroy(disk, path, opts.force ?? false);
          const pass = await secret.read();
          try {
            const vol = await LuksVolume.format(disk, pass, { sectorSize, keySize: keyBits === 256 ? 32 : 64, ...(kdf ? { kdf } : {}), ...(opts.label ? { label: opts.label } : {}) });
            return { volume: path, ...vol.info() };
          } finally {
            pass.fill(0);
          }
        } catch (err) {
          throw err instanceof LivestickError ? err.withFile(path) : err;
        } finally {
          await disk.close();
        }
      },
      (info) => `formatted ${path}\n${renderLuksInfo(info)}`,
    );
  });

  withOutputOptions(
    addSecretOptions(
      luks
        .command('open-test')
        .description('check a passphrase (like cryptsetup open --test-passphrase); exit code 77 if it is wrong')
        .argument('<volume>', 'the LUKS image file')
        .option('--key-slot <n>', 'only try this keyslot'),
    ),
  ).action(async (path: string, opts: SecretOptions & OutputOptions & { keySlot?: string }) => {
    await runCommand(
      opts,
      async () => {
        const keyslot = opts.keySlot === undefined ? undefined : parseIntegerOption(opts.keySlot, '--key-slot');
        const secret = currentSecret(opts, `Enter passphrase for ${path}: `);
        return onVolume(path, true, async (vol) =>
          withTries(secret, async (pass) => {
            const r = await vol.unlock(pass, keyslot === undefined ? {} : { keyslot });
            r.volumeKey.fill(0);
            return { volume: path, keyslot: r.keyslot, warnings: vol.warnings };
          }),
        );
      },
      (r) => `keyslot ${r.keyslot} accepts the passphrase${r.warnings.map((w) => `\nwarning: ${w}`).join('')}`,
    );
  });

  withOutputOptions(
    addNewSecretOptions(
      addSecretOptions(
        addKdfOptions(
          luks
            .command('add-key')
            .description('add a keyslot with a new passphrase (authorised by an existing one)')
            .argument('<volume>', 'the LUKS2 image file')
            .option('--key-slot <n>', 'use this keyslot number'),
        ),
        'an existing passphrase',
      ),
    ),
  ).action(async (path: string, opts: KdfOpts & SecretOptions & NewSecretOptions & OutputOptions & { keySlot?: string }) => {
    await runCommand(
      opts,
      async () => {
        const keyslot = opts.keySlot === undefined ? undefined : parseIntegerOption(opts.keySlot, '--key-slot');
        const kdf = kdfChoice(opts);
        const fresh = memoized(newSecret(opts, 'Enter the new passphrase: '));
        try {
          return await onVolume(path, false, async (vol) =>
            withTries(currentSecret(opts, `Enter an existing passphrase for ${path}: `), async (pass) => {
              const next = await fresh.read();
              try {
                const id = await vol.addKeyslot(pass, next, { ...(keyslot === undefined ? {} : { keyslot }), ...(kdf ? { kdf } : {}) });
                return { volume: path, keyslot: id };
              } finally {
                next.fill(0);
              }
            }),
          );
        } finally {
          fresh.wipe();
        }
      },
      (r) => `added keyslot ${r.keyslot}`,
    );
  });

  withOutputOptions(
    addSecretOptions(
      luks
        .command('remove-key')
        .description('remove the keyslot that a passphrase opens (refuses the last one unless --allow-last)')
        .argument('<volume>', 'the LUKS2 image file')
        .option('--allow-last', 'allow removing the last keyslot (the data becomes unrecoverable)'),
      'the passphrase to remove',
    ),
  ).action(async (path: string, opts: SecretOptions & OutputOptions & { allowLast?: boolean }) => {
    await runCommand(
      opts,
      async () =>
        onVolume(path, false, async (vol) =>
          withTries(currentSecret(opts, `Enter the passphrase to remove from ${path}: `), async (pass) => ({
            volume: path,
            keyslot: await vol.removeKeyslot(pass, { allowLast: opts.allowLast ?? false }),
          })),
        ),
      (r) => `removed keyslot ${r.keyslot}`,
    );
  });

  withOutputOptions(
    addNewSecretOptions(
      addSecretOptions(
        addKdfOptions(
          luks
            .command('passwd')
            .description('change a passphrase, crash-safely (the keyslot keeps its number)')
            .argument('<volume>', 'the LUKS2 image file'),
        ),
        'the current passphrase',
      ),
    ),
  ).action(async (path: string, opts: KdfOpts & SecretOptions & NewSecretOptions & OutputOptions) => {
    await runCommand(
      opts,
      async () => {
        const kdf = kdfChoice(opts);
        const fresh = memoized(newSecret(opts, 'Enter the new passphrase: '));
        try {
          return await onVolume(path, false, async (vol) =>
            withTries(currentSecret(opts, `Enter the current passphrase for ${path}: `), async (pass) => {
              const next = await fresh.read();
              try {
                return { volume: path, keyslot: await vol.changePassphrase(pass, next, kdf ? { kdf } : {}) };
              } finally {
                next.fill(0);
              }
            }),
          );
        } finally {
          fresh.wipe();
        }
      },
      (r) => `changed the passphrase of keyslot ${r.keyslot}`,
    );
  });
}
