/**
 * `livestick home …`: the persistent /home image (LiveOS/home.img), plain or LUKS-encrypted. A thin
 * frontend over src/ops/home.ts. Passphrases come from ../secrets.ts as for `livestick luks` (prompt
 * with three tries, --passphrase-file as typed, --key-file exact bytes); asked only when encrypted.
 * Every subcommand takes what the medium commands take (a directory, a stick image, a device, with
 * --partition and --force-device) or the home image file itself.
 */
import type { Command } from 'commander';
import { UsageError } from '../../errors.ts';
import { formatSize } from '../../io/bytes.ts';
import type { LsEntry } from '../../fs/ext4/index.ts';
import {
  createHome,
  homeCat,
  homeExport,
  homeImport,
  homeInfo,
  homeList,
  homePasswd,
  homeResize,
  hostTreeBytes,
  interruptedMessage,
  type HomeInfo,
  type PassphraseSource,
  type TransferResult,
} from '../../ops/home.ts';
import { MEDIUM_ARGUMENT, mediumOptions, parseIntegerOption, parseSizeOption, Progress, quoteName, runCommand, withMediumOptions, withOutputOptions, writeOutput, type OutputOptions } from '../common.ts';
import { kdfChoice, type KdfOpts } from './luks.ts';
import { addNewSecretOptions, addSecretOptions, currentSecret, memoized, newSecret, withTries, type NewSecretOptions, type SecretOptions } from '../secrets.ts';

function addKdfOptions(cmd: Command): Command {
  return cmd
    .option('--pbkdf <type>', 'argon2id (default), argon2i or pbkdf2')
    .option('--pbkdf-memory <kib>', 'Argon2 memory in KiB (default: 1 GiB, at most half the RAM)')
    .option('--pbkdf-force-iterations <n>', 'fixed Argon2 time cost or PBKDF2 iterations (skips the benchmark; low values are for tests only)')
    .option('--iter-time <ms>', 'unlock time the benchmark aims at (default 2000)');
}

/** SIGINT/SIGTERM during a change: say what state the home is in (journal or undo log) and exit 130. */
function exitHonestlyOnInterrupt(): void {
  const onSignal = (): void => {
    process.stderr.write(`livestick: ${interruptedMessage()}\n`);
    process.exit(130);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
}

/** How the ops layer gets the passphrase: from the options, or a prompt with three tries. */
function accessFrom(opts: SecretOptions, prompt = 'Passphrase for the home image: '): { passphrase: PassphraseSource; tries: number; onWrongPassphrase: () => void } {
  const source = currentSecret(opts, prompt);
  return {
    passphrase: () => source.read(),
    tries: source.interactive ? 3 : 1,
    onWrongPassphrase: () => void process.stderr.write('No key available with this passphrase. Try again.\n'),
  };
}

/** Skipped nodes as warnings on stderr (JSON output lists them in skippedNodes). */
function warnSkipped(r: TransferResult, json: boolean | undefined): void {
  if (json) return;
  for (const n of r.skippedNodes) process.stderr.write(`livestick: warning: skipped ${quoteName(n.path)}: ${n.reason}\n`);
}

function renderInfo(r: HomeInfo): string {
  const lines = [`${r.path}: ${r.encrypted ? `encrypted (LUKS${r.luks?.version})` : 'plain ext4'}, ${formatSize(r.fileSize)}${r.recovered ? ' (an interrupted change was rolled back)' : ''}`];
  if (r.luks) {
    const l = r.luks;
    lines.push(`  LUKS UUID      ${l.uuid}`);
    lines.push(`  cipher         ${l.cipher}, ${l.keyBits}-bit key, ${l.sectorSize}-byte sectors`);
    lines.push(`  payload        ${formatSize(l.payloadSize)} at offset ${formatSize(l.payloadOffset)}`);
    for (const k of l.keyslots) {
      const cost = k.memoryKiB !== undefined ? `memory ${k.memoryKiB} KiB, time ${k.time}` : `${k.hash ?? ''} ${k.iterations ?? ''} iterations`;
      lines.push(`  keyslot ${k.id}      ${k.kdf} (${cost.trim()})`);
    }
    for (const w of l.warnings) lines.push(`warning: ${w}`);
  }
  const f = r.filesystem;
  if (f) {
    lines.push(`  label          ${f.label}`);
    lines.push(`  ext4 UUID      ${f.uuid}`);
    lines.push(`  size           ${formatSize(f.size)} (${f.blockSize}-byte blocks)`);
    lines.push(`  used           ${formatSize(f.used)}`);
    lines.push(`  free           ${formatSize(f.free)}`);
    lines.push(`  state          ${f.state}`);
  } else if (r.encrypted) {
    lines.push('  (give --unlock to show label, used and free space)');
  }
  return lines.join('\n');
}

const KIND_CHAR: Record<string, string> = { dir: 'd', file: '-', symlink: 'l', chardev: 'c', blockdev: 'b', fifo: 'p', socket: 's' };

function modeString(e: LsEntry): string {
  const m = e.mode;
  const bits = 'rwxrwxrwx'.split('').map((c, i) => (m & (0o400 >> i) ? c : '-'));
  if (m & 0o4000) bits[2] = bits[2] === 'x' ? 's' : 'S';
  if (m & 0o2000) bits[5] = bits[5] === 'x' ? 's' : 'S';
  if (m & 0o1000) bits[8] = bits[8] === 'x' ? 't' : 'T';
  return (KIND_CHAR[e.kind] ?? '?') + bits.join('');
}

function renderLs(entries: LsEntry[], long: boolean): string {
  if (!long) return entries.map((e) => quoteName(e.name)).join('\n');
  return entries
    .map((e) => {
      const when = new Date(e.mtime * 1000).toISOString().slice(0, 16).replace('T', ' ');
      return `${modeString(e)} ${String(e.nlink).padStart(3)} ${String(e.uid).padStart(5)} ${String(e.gid).padStart(5)} ${String(e.size).padStart(12)} ${when} ${quoteName(e.name)}${e.target !== undefined ? ` -> ${quoteName(e.target)}` : ''}`;
    })
    .join('\n');
}

export function registerHome(program: Command): void {
  const home = program.command('home').description('the persistent /home image (LiveOS/home.img): create, inspect, fill, back up, re-key, grow');
  const MEDIUM = `${MEDIUM_ARGUMENT}; or the home image file itself`;
  type Medium = { partition?: string; forceDevice?: boolean };

  withOutputOptions(
    withMediumOptions(addSecretOptions(
      addKdfOptions(
        home
          .command('create')
          .description('create LiveOS/home.img: ext4, or ext4 inside LUKS2 with --encrypt (sparse where the host allows)')
          .argument('<medium>', `${MEDIUM_ARGUMENT} (LiveOS/home.img is created there); or the path of the image file to create`)
          .requiredOption('--size <size>', 'image size (bytes, or 512M, 4G, …)')
          .option('--encrypt', 'LUKS2 (aes-xts-plain64, argon2id) around the filesystem')
          .option('--label <label>', 'filesystem label (default "home")')
          .option('--force', 'replace an existing home image (its contents are lost)'),
      ),
      'the new passphrase',
    )),
  ).action(async (medium: string, opts: KdfOpts & SecretOptions & OutputOptions & Medium & { size: string; encrypt?: boolean; label?: string; force?: boolean }) => {
    await runCommand(
      opts,
      async () => {
        const size = parseSizeOption(opts.size, '--size');
        const kdf = kdfChoice(opts);
        if (!opts.encrypt && (kdf !== undefined || opts.passphraseFile !== undefined || opts.keyFile !== undefined)) throw new UsageError('KDF and passphrase options need --encrypt');
        const secret = newSecret(opts, 'New passphrase for the home image: ', ['--passphrase-file', '--key-file']);
        return createHome(medium, {
          ...mediumOptions(opts),
          size,
          encrypt: opts.encrypt ?? false,
          ...(opts.label !== undefined ? { label: opts.label } : {}),
          force: opts.force ?? false,
          ...(kdf ? { kdf } : {}),
          ...(opts.encrypt ? { passphrase: () => secret.read() } : {}),
        });
      },
      (r) => `${r.warnings.map((w) => `warning: ${w}\n`).join("")}created ${r.path}: ${r.encrypted ? `LUKS2 (${r.kdf}) holding ` : ''}ext4 "${r.label}", ${formatSize(r.size)}, UUID ${r.fsUuid}${r.replaced ? ' (replaced the old home)' : ''}`,
    );
  });

  withOutputOptions(
    withMediumOptions(addSecretOptions(
      home
        .command('info')
        .description('describe the home image: encryption, size, used and free space, label, UUID')
        .argument('<medium>', MEDIUM)
        .option('--unlock', 'ask for the passphrase of an encrypted home to show the filesystem too'),
      'the passphrase (implies --unlock)',
    )),
  ).action(async (medium: string, opts: SecretOptions & OutputOptions & Medium & { unlock?: boolean }) => {
    const unlock = opts.unlock || opts.passphraseFile !== undefined || opts.keyFile !== undefined;
    await runCommand(opts, async () => homeInfo(medium, { ...mediumOptions(opts), ...(unlock ? accessFrom(opts) : {}) }), renderInfo);
  });

  withOutputOptions(
    withMediumOptions(addSecretOptions(
      home
        .command('ls')
        .description('list a directory of the home image')
        .argument('<medium>', MEDIUM)
        .argument('[path]', 'directory inside the image', '/')
        .option('-l, --long', 'long listing (mode, links, owner, size, time)'),
    )),
  ).action(async (medium: string, path: string, opts: SecretOptions & OutputOptions & Medium & { long?: boolean }) => {
    await runCommand(opts, () => homeList(medium, path, { ...mediumOptions(opts), ...accessFrom(opts) }), (r) => renderLs(r.entries, opts.long ?? false));
  });

  withOutputOptions(
    withMediumOptions(addSecretOptions(
      home
        .command('cat')
        .description('write a file of the home image to stdout')
        .argument('<medium>', MEDIUM)
        .argument('<path>', 'file inside the image'),
    )),
    { json: false },
  ).action(async (medium: string, path: string, opts: SecretOptions & Medium) => {
    await runCommand(
      {},
      async () => {
        await homeCat(medium, path, async (piece) => {
          await writeOutput(piece);
        }, { ...mediumOptions(opts), ...accessFrom(opts) });
        return {};
      },
      () => undefined,
    );
  });

  withOutputOptions(
    withMediumOptions(addSecretOptions(
      home
        .command('import')
        .description('copy a host file or tree into the home image (modes and times kept; owner 1000:1000, the live user, by default); all or nothing')
        .argument('<medium>', MEDIUM)
        .argument('<src>', 'host file or directory (SRC/. copies the contents)')
        .argument('[dest]', 'path in the image (an existing directory receives SRC under its own name)', '/')
        .option('--keep-owner', 'keep the host owners instead of 1000:1000')
        .option('--owner <uid:gid>', 'owner of the imported files'),
    )),
  ).action(async (medium: string, src: string, dest: string, opts: SecretOptions & OutputOptions & Medium & { keepOwner?: boolean; owner?: string }) => {
    let progress: Progress | undefined;
    await runCommand(
      opts,
      async () => {
        let owner: 'live' | 'keep' | { uid: number; gid: number } = opts.keepOwner ? 'keep' : 'live';
        if (opts.owner !== undefined) {
          const m = /^(\d+):(\d+)$/.exec(opts.owner);
          if (!m) throw new UsageError('--owner: expected UID:GID');
          owner = { uid: parseIntegerOption(m[1]!, '--owner'), gid: parseIntegerOption(m[2]!, '--owner') };
        }
        exitHonestlyOnInterrupt();
        const showProgress = process.stderr.isTTY && !opts.quiet && !opts.json;
        progress = new Progress('import', showProgress ? await hostTreeBytes(src) : 0, opts);
        try {
          const r = await homeImport(medium, src, dest, { owner, ...mediumOptions(opts), ...accessFrom(opts), onBytes: (n) => progress?.add(n) });
          progress.finish();
          warnSkipped(r, opts.json);
          return r;
        } finally {
          progress.finish();
        }
      },
      (r) => `${r.warnings.map((w) => `warning: ${w}\n`).join('')}imported ${r.files} files, ${r.directories} directories, ${r.symlinks} symlinks, ${r.hardLinks} hard links (${formatSize(r.bytes)}) into ${r.image}:${r.dest}${r.skipped ? `; skipped ${r.skipped} special files` : ''}`,
    );
  });

  withOutputOptions(
    withMediumOptions(addSecretOptions(
      home
        .command('export')
        .description('back up every user file of the home image into a new (or empty) host directory')
        .argument('<medium>', MEDIUM)
        .argument('<dest>', 'host directory (created if missing; must be empty)'),
    )),
  ).action(async (medium: string, dest: string, opts: SecretOptions & OutputOptions & Medium) => {
    await runCommand(
      opts,
      async () => {
        const r = await homeExport(medium, dest, { ...mediumOptions(opts), ...accessFrom(opts) });
        warnSkipped(r, opts.json);
        return r;
      },
      (r) => `exported ${r.files} files, ${r.directories} directories, ${r.symlinks} symlinks, ${r.hardLinks} hard links (${formatSize(r.bytes)}) to ${r.dest}${r.skipped ? `; skipped ${r.skipped} special files or unsafe names` : ''}`,
    );
  });

  withOutputOptions(
    withMediumOptions(addNewSecretOptions(
      addSecretOptions(
        addKdfOptions(
          home
            .command('passwd')
            .description('change the passphrase of an encrypted home (the old or the new one works at every moment)')
            .argument('<medium>', MEDIUM),
        ),
        'the current passphrase',
      ),
    )),
  ).action(async (medium: string, opts: KdfOpts & SecretOptions & NewSecretOptions & OutputOptions & Medium) => {
    await runCommand(
      opts,
      async () => {
        const kdf = kdfChoice(opts);
        const fresh = memoized(newSecret(opts, 'New passphrase: '));
        try {
          return await withTries(currentSecret(opts, 'Current passphrase: '), async (oldPass) => {
            const newPass = await fresh.read();
            try {
              return await homePasswd(medium, oldPass, newPass, { ...mediumOptions(opts), ...(kdf ? { kdf } : {}) });
            } finally {
              newPass.fill(0);
            }
          });
        } finally {
          fresh.wipe();
        }
      },
      (r) => `changed the passphrase of ${r.image} (keyslot ${r.keyslot})`,
    );
  });

  withOutputOptions(
    withMediumOptions(addSecretOptions(
      home
        .command('resize')
        .description('grow the home image, its LUKS payload and its ext4 filesystem, keeping the data (all or nothing)')
        .argument('<medium>', MEDIUM)
        .requiredOption('--size <size>', 'new image size (bytes, or 2G, …)'),
    )),
  ).action(async (medium: string, opts: SecretOptions & OutputOptions & Medium & { size: string }) => {
    await runCommand(
      opts,
      async () => {
        exitHonestlyOnInterrupt();
        return homeResize(medium, parseSizeOption(opts.size, '--size'), { ...mediumOptions(opts), ...accessFrom(opts) });
      },
      (r) => `grew ${r.image}: ${formatSize(r.oldSize)} → ${formatSize(r.newSize)}, filesystem ${r.oldBlocks} → ${r.newBlocks} blocks, ${formatSize(r.free)} free`,
    );
  });
}
