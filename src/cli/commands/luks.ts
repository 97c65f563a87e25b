/**
 * `livestick luks …`: inspect, create and re-key LUKS volumes (a thin frontend over src/xform/luks).
 * Secrets come only from an interactive prompt without echo, or from --passphrase-file F (`-` = stdin),
 * never from argv or the environment. A passphrase file is used byte for byte, as cryptsetup's
 * --key-file is (a trailing newline is part of the passphrase; we warn about it).
 */
import type { Command } from 'commander';
import { open } from 'node:fs/promises';
import { ExitCode, LivestickError, UsageError, fromSystemError } from '../../errors.ts';
import { formatSize } from '../../io/bytes.ts';
import { FileDisk } from '../../io/disk.ts';
import { LuksVolume, type KdfChoice, type LuksInfo } from '../../xform/luks/index.ts';
import { parseIntegerOption, parseSizeOption, runCommand } from '../common.ts';

// ---------------------------------------------------------------------------------------------------
// Secrets

let stdinTaken = false;
/** cryptsetup's default key file size limit. */
const MAX_KEY_FILE = 8 * 1024 * 1024;

async function readKeyFile(path: string): Promise<Buffer> {
  // Not only regular files: <(…) gives a pipe. Read in pieces and stop past the limit (/dev/zero ends here).
  const fh = await open(path, 'r');
  const buf = Buffer.alloc(MAX_KEY_FILE + 1);
  let len = 0;
  try {
    for (;;) {
      const { bytesRead } = await fh.read(buf, len, buf.length - len, null);
      if (bytesRead === 0) break;
      len += bytesRead;
      if (len > MAX_KEY_FILE) throw new UsageError(`the passphrase file ${path} is larger than ${MAX_KEY_FILE} bytes`);
    }
    return Buffer.from(buf.subarray(0, len));
  } finally {
    buf.fill(0);
    await fh.close();
  }
}

async function readAllStdin(): Promise<Buffer> {
  if (stdinTaken) throw new UsageError('only one passphrase can come from stdin (-)');
  stdinTaken = true;
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of process.stdin) {
    chunks.push(chunk as Buffer);
    total += (chunk as Buffer).length;
    if (total > MAX_KEY_FILE) {
      for (const c of chunks) c.fill(0);
      throw new UsageError(`the passphrase on stdin is longer than ${MAX_KEY_FILE} bytes`);
    }
  }
  const all = Buffer.concat(chunks);
  for (const c of chunks) c.fill(0);
  return all;
}

/** Reads a line from the terminal without echo. Ctrl-C aborts; Backspace edits. */
async function promptNoEcho(prompt: string): Promise<Buffer> {
  const stdin = process.stdin;
  if (!stdin.isTTY) throw new UsageError('no terminal to ask for the passphrase: use --passphrase-file FILE (or - for stdin)');
  process.stderr.write(prompt);
  stdin.setRawMode(true);
  stdin.resume();
  const buf = Buffer.alloc(1024);
  let len = 0;
  try {
    return await new Promise<Buffer>((resolve, reject) => {
      const onData = (chunk: Buffer): void => {
        for (const byte of chunk) {
          if (byte === 0x0d || byte === 0x0a) {
            stdin.off('data', onData);
            resolve(Buffer.from(buf.subarray(0, len)));
            return;
          }
          if (byte === 0x03) {
            stdin.off('data', onData);
            reject(new LivestickError('INTERRUPTED', ExitCode.interrupted, 'interrupted'));
            return;
          }
          if (byte === 0x7f || byte === 0x08) len = Math.max(0, len - 1);
          else if (len < buf.length) buf[len++] = byte;
        }
        chunk.fill(0);
      };
      stdin.on('data', onData);
    });
  } finally {
    buf.fill(0);
    stdin.setRawMode(false);
    stdin.pause();
    process.stderr.write('\n');
  }
}

/** A passphrase from `file` (a path or - for stdin) or the prompt. The caller wipes it. */
export async function readSecret(file: string | undefined, prompt: string, options: { confirm?: boolean } = {}): Promise<Buffer> {
  if (file !== undefined) {
    let bytes: Buffer;
    try {
      bytes = file === '-' ? await readAllStdin() : await readKeyFile(file);
    } catch (err) {
      throw err instanceof LivestickError ? err : fromSystemError(err, file, 'read the passphrase file');
    }
    if (bytes.length === 0) throw new UsageError(`the passphrase file ${file === '-' ? '(stdin)' : file} is empty`);
    if (bytes[bytes.length - 1] === 0x0a) {
      process.stderr.write(`livestick: warning: the passphrase from ${file === '-' ? 'stdin' : file} ends with a newline, which is part of the passphrase (as with cryptsetup --key-file)\n`);
    }
    return bytes;
  }
  const first = await promptNoEcho(prompt);
  if (options.confirm) {
    const again = await promptNoEcho('Verify passphrase: ');
    const same = first.equals(again);
    again.fill(0);
    if (!same) {
      first.fill(0);
      throw new UsageError('the passphrases do not match');
    }
  }
  if (first.length === 0) throw new UsageError('empty passphrase');
  return first;
}

async function withSecrets<T>(secrets: Buffer[], body: () => Promise<T>): Promise<T> {
  try {
    return await body();
  } finally {
    for (const s of secrets) s.fill(0);
  }
}

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

export function registerLuks(program: Command): void {
  const luks = program.command('luks').description('Inspect, create and re-key LUKS volumes (cryptsetup-compatible, no root needed)');

  luks
    .command('info')
    .description('show a LUKS1/LUKS2 volume: cipher, KDFs, keyslots, UUID, label, header state')
    .argument('<volume>', 'the LUKS image file')
    .option('--json', 'print one JSON document')
    .action(async (path: string, opts: { json?: boolean }) => {
      await runCommand(opts, async () => onVolume(path, true, async (vol) => ({ volume: path, ...vol.info() })), renderLuksInfo);
    });

  addKdfOptions(
    luks
      .command('format')
      .description('create a LUKS2 volume (aes-xts-plain64, argon2id by default) in a file')
      .argument('<volume>', 'the image file (created with --size, else it must exist)')
      .option('--size <size>', 'create the file with this size (sparse where the host allows)')
      .option('--passphrase-file <file>', 'read the passphrase from this file (- for stdin) instead of prompting')
      .option('--sector-size <bytes>', 'encryption sector size: 512 or 4096 (default 4096)')
      .option('--key-size <bits>', 'volume key size: 512 (default) or 256')
      .option('--label <label>', 'LUKS2 label')
      .option('--force', 'overwrite an existing LUKS volume'),
  )
    .option('--json', 'print one JSON document')
    .action(async (path: string, opts: KdfOpts & { size?: string; passphraseFile?: string; sectorSize?: string; keySize?: string; label?: string; force?: boolean; json?: boolean }) => {
      await runCommand(
        opts,
        async () => {
          const sectorSize = opts.sectorSize === undefined ? 4096 : parseIntegerOption(opts.sectorSize, '--sector-size');
          if (sectorSize !== 512 && sectorSize !== 4096) throw new UsageError('--sector-size: 512 or 4096');
          const keyBits = opts.keySize === undefined ? 512 : parseIntegerOption(opts.keySize, '--key-size');
          if (keyBits !== 256 && keyBits !== 512) throw new UsageError('--key-size: 256 or 512');
          const kdf = kdfChoice(opts);
          const size = opts.size === undefined ? undefined : parseSizeOption(opts.size, '--size');
          const disk = await FileDisk.open(path, size === undefined ? {} : { create: { size } });
          try {
            if (!opts.force && (await LuksVolume.probe(disk)) !== undefined) {
              throw new LivestickError('EXISTS', ExitCode.cantCreate, 'already holds a LUKS volume (use --force to overwrite it and lose its data)', { file: path });
            }
            const pass = await readSecret(opts.passphraseFile, 'Enter passphrase for the new volume: ', { confirm: true });
            return await withSecrets([pass], async () => {
              const vol = await LuksVolume.format(disk, pass, { sectorSize, keySize: keyBits === 256 ? 32 : 64, ...(kdf ? { kdf } : {}), ...(opts.label ? { label: opts.label } : {}) });
              return { volume: path, ...vol.info() };
            });
          } catch (err) {
            throw err instanceof LivestickError ? err.withFile(path) : err;
          } finally {
            await disk.close();
          }
        },
        (info) => `formatted ${path}\n${renderLuksInfo(info)}`,
      );
    });

  luks
    .command('open-test')
    .description('check a passphrase (like cryptsetup open --test-passphrase); exit code 77 if it is wrong')
    .argument('<volume>', 'the LUKS image file')
    .option('--passphrase-file <file>', 'read the passphrase from this file (- for stdin)')
    .option('--key-slot <n>', 'only try this keyslot')
    .option('--json', 'print one JSON document')
    .action(async (path: string, opts: { passphraseFile?: string; keySlot?: string; json?: boolean }) => {
      await runCommand(
        opts,
        async () => {
          const keyslot = opts.keySlot === undefined ? undefined : parseIntegerOption(opts.keySlot, '--key-slot');
          return onVolume(path, true, async (vol) => {
            const pass = await readSecret(opts.passphraseFile, `Enter passphrase for ${path}: `);
            return withSecrets([pass], async () => {
              const r = await vol.unlock(pass, keyslot === undefined ? {} : { keyslot });
              r.volumeKey.fill(0);
              return { volume: path, keyslot: r.keyslot, warnings: vol.warnings };
            });
          });
        },
        (r) => `keyslot ${r.keyslot} accepts the passphrase${r.warnings.map((w) => `\nwarning: ${w}`).join('')}`,
      );
    });

  addKdfOptions(
    luks
      .command('add-key')
      .description('add a keyslot with a new passphrase (authorised by an existing one)')
      .argument('<volume>', 'the LUKS2 image file')
      .option('--passphrase-file <file>', 'an existing passphrase, from this file (- for stdin)')
      .option('--new-passphrase-file <file>', 'the new passphrase, from this file (- for stdin)')
      .option('--key-slot <n>', 'use this keyslot number'),
  )
    .option('--json', 'print one JSON document')
    .action(async (path: string, opts: KdfOpts & { passphraseFile?: string; newPassphraseFile?: string; keySlot?: string; json?: boolean }) => {
      await runCommand(
        opts,
        async () => {
          const keyslot = opts.keySlot === undefined ? undefined : parseIntegerOption(opts.keySlot, '--key-slot');
          const kdf = kdfChoice(opts);
          return onVolume(path, false, async (vol) => {
            const pass = await readSecret(opts.passphraseFile, `Enter an existing passphrase for ${path}: `);
            return withSecrets([pass], async () => {
              const fresh = await readSecret(opts.newPassphraseFile, 'Enter the new passphrase: ', { confirm: true });
              return withSecrets([fresh], async () => {
                const id = await vol.addKeyslot(pass, fresh, { ...(keyslot === undefined ? {} : { keyslot }), ...(kdf ? { kdf } : {}) });
                return { volume: path, keyslot: id };
              });
            });
          });
        },
        (r) => `added keyslot ${r.keyslot}`,
      );
    });

  luks
    .command('remove-key')
    .description('remove the keyslot that a passphrase opens (refuses the last one unless --allow-last)')
    .argument('<volume>', 'the LUKS2 image file')
    .option('--passphrase-file <file>', 'the passphrase to remove, from this file (- for stdin)')
    .option('--allow-last', 'allow removing the last keyslot (the data becomes unrecoverable)')
    .option('--json', 'print one JSON document')
    .action(async (path: string, opts: { passphraseFile?: string; allowLast?: boolean; json?: boolean }) => {
      await runCommand(
        opts,
        async () =>
          onVolume(path, false, async (vol) => {
            const pass = await readSecret(opts.passphraseFile, `Enter the passphrase to remove from ${path}: `);
            return withSecrets([pass], async () => ({ volume: path, keyslot: await vol.removeKeyslot(pass, { allowLast: opts.allowLast ?? false }) }));
          }),
        (r) => `removed keyslot ${r.keyslot}`,
      );
    });

  addKdfOptions(
    luks
      .command('passwd')
      .description('change a passphrase, crash-safely (the keyslot keeps its number)')
      .argument('<volume>', 'the LUKS2 image file')
      .option('--passphrase-file <file>', 'the current passphrase, from this file (- for stdin)')
      .option('--new-passphrase-file <file>', 'the new passphrase, from this file (- for stdin)'),
  )
    .option('--json', 'print one JSON document')
    .action(async (path: string, opts: KdfOpts & { passphraseFile?: string; newPassphraseFile?: string; json?: boolean }) => {
      await runCommand(
        opts,
        async () => {
          const kdf = kdfChoice(opts);
          return onVolume(path, false, async (vol) => {
            const pass = await readSecret(opts.passphraseFile, `Enter the current passphrase for ${path}: `);
            return withSecrets([pass], async () => {
              const fresh = await readSecret(opts.newPassphraseFile, 'Enter the new passphrase: ', { confirm: true });
              return withSecrets([fresh], async () => ({ volume: path, keyslot: await vol.changePassphrase(pass, fresh, kdf ? { kdf } : {}) }));
            });
          });
        },
        (r) => `changed the passphrase of keyslot ${r.keyslot}`,
      );
    });
}
