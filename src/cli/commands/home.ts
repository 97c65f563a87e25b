/**
 * `livestick home …`: the persistent /home image (LiveOS/home.img), plain or LUKS-encrypted. A thin
 * frontend over src/ops/home.ts. Passphrases come from a prompt without echo or --passphrase-file
 * (`-` = stdin), as for `livestick luks`; they are asked only when the image is encrypted.
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
} from '../../ops/home.ts';
import { Progress, parseIntegerOption, parseSizeOption, runCommand } from '../common.ts';
import { kdfChoice, readSecret, type KdfOpts } from './luks.ts';

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

function secretFrom(file: string | undefined, prompt = 'Passphrase for the home image: '): PassphraseSource {
  return () => readSecret(file, prompt);
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
  if (!long) return entries.map((e) => e.name).join('\n');
  return entries
    .map((e) => {
      const when = new Date(e.mtime * 1000).toISOString().slice(0, 16).replace('T', ' ');
      return `${modeString(e)} ${String(e.nlink).padStart(3)} ${String(e.uid).padStart(5)} ${String(e.gid).padStart(5)} ${String(e.size).padStart(12)} ${when} ${e.name}${e.target !== undefined ? ` -> ${e.target}` : ''}`;
    })
    .join('\n');
}

export function registerHome(program: Command): void {
  const home = program.command('home').description('The persistent /home image (LiveOS/home.img): create, inspect, fill, back up, re-key, grow');
  const MEDIUM = 'directory holding LiveOS/ (a mounted stick), or a home image file';

  addKdfOptions(
    home
      .command('create')
      .description('create LiveOS/home.img: ext4, or ext4 inside LUKS2 with --encrypt (sparse where the host allows)')
      .argument('<medium>', 'directory holding LiveOS/, or the path of the image to create')
      .requiredOption('--size <size>', 'image size (bytes, or 512M, 4G, …)')
      .option('--encrypt', 'LUKS2 (aes-xts-plain64, argon2id) around the filesystem')
      .option('--passphrase-file <file>', 'read the passphrase from this file (- for stdin) instead of prompting')
      .option('--label <label>', 'filesystem label (default "home")')
      .option('--force', 'replace an existing home image (its contents are lost)'),
  )
    .option('--json', 'print one JSON document')
    .action(async (medium: string, opts: KdfOpts & { size: string; encrypt?: boolean; passphraseFile?: string; label?: string; force?: boolean; json?: boolean }) => {
      await runCommand(
        opts,
        async () => {
          const size = parseSizeOption(opts.size, '--size');
          const kdf = kdfChoice(opts);
          if (!opts.encrypt && (kdf !== undefined || opts.passphraseFile !== undefined)) throw new UsageError('KDF and passphrase options need --encrypt');
          return createHome(medium, {
            size,
            encrypt: opts.encrypt ?? false,
            ...(opts.label !== undefined ? { label: opts.label } : {}),
            force: opts.force ?? false,
            ...(kdf ? { kdf } : {}),
            ...(opts.encrypt ? { passphrase: () => readSecret(opts.passphraseFile, 'New passphrase for the home image: ', { confirm: true }) } : {}),
          });
        },
        (r) => `created ${r.path}: ${r.encrypted ? `LUKS2 (${r.kdf}) holding ` : ''}ext4 "${r.label}", ${formatSize(r.size)}, UUID ${r.fsUuid}${r.replaced ? ' (replaced the old home)' : ''}`,
      );
    });

  home
    .command('info')
    .description('describe the home image: encryption, size, used and free space, label, UUID')
    .argument('<medium>', MEDIUM)
    .option('--unlock', 'ask for the passphrase of an encrypted home to show the filesystem too')
    .option('--passphrase-file <file>', 'read the passphrase from this file (- for stdin); implies --unlock')
    .option('--json', 'print one JSON document')
    .action(async (medium: string, opts: { unlock?: boolean; passphraseFile?: string; json?: boolean }) => {
      await runCommand(opts, async () => homeInfo(medium, opts.unlock || opts.passphraseFile !== undefined ? { passphrase: secretFrom(opts.passphraseFile) } : {}), renderInfo);
    });

  home
    .command('ls')
    .description('list a directory of the home image')
    .argument('<medium>', MEDIUM)
    .argument('[path]', 'directory inside the image', '/')
    .option('-l, --long', 'long listing (mode, links, owner, size, time)')
    .option('--passphrase-file <file>', 'read the passphrase from this file (- for stdin)')
    .option('--json', 'print one JSON document')
    .action(async (medium: string, path: string, opts: { long?: boolean; passphraseFile?: string; json?: boolean }) => {
      await runCommand(opts, () => homeList(medium, path, { passphrase: secretFrom(opts.passphraseFile) }), (r) => renderLs(r.entries, opts.long ?? false));
    });

  home
    .command('cat')
    .description('write a file of the home image to stdout')
    .argument('<medium>', MEDIUM)
    .argument('<path>', 'file inside the image')
    .option('--passphrase-file <file>', 'read the passphrase from this file (- for stdin)')
    .action(async (medium: string, path: string, opts: { passphraseFile?: string }) => {
      await runCommand(
        {},
        async () => {
          await homeCat(medium, path, async (piece) => {
            if (!process.stdout.write(piece)) await new Promise((resolve) => process.stdout.once('drain', resolve));
          }, { passphrase: secretFrom(opts.passphraseFile) });
          return {};
        },
        () => undefined,
      );
    });

  home
    .command('import')
    .description('copy a host file or tree into the home image (modes and times kept; owner 1000:1000, the live user, by default); all or nothing')
    .argument('<medium>', MEDIUM)
    .argument('<src>', 'host file or directory (SRC/. copies the contents)')
    .argument('[dest]', 'path in the image (an existing directory receives SRC under its own name)', '/')
    .option('--keep-owner', 'keep the host owners instead of 1000:1000')
    .option('--owner <uid:gid>', 'owner of the imported files')
    .option('--passphrase-file <file>', 'read the passphrase from this file (- for stdin)')
    .option('--json', 'print one JSON document')
    .action(async (medium: string, src: string, dest: string, opts: { keepOwner?: boolean; owner?: string; passphraseFile?: string; json?: boolean }) => {
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
          progress = new Progress('import', process.stderr.isTTY ? await hostTreeBytes(src) : 0, opts);
          try {
            return await homeImport(medium, src, dest, { owner, passphrase: secretFrom(opts.passphraseFile), onBytes: (n) => progress?.add(n) });
          } finally {
            progress.finish();
          }
        },
        (r) => `${r.warnings.map((w) => `warning: ${w}\n`).join('')}imported ${r.files} files, ${r.directories} directories, ${r.symlinks} symlinks, ${r.hardLinks} hard links (${formatSize(r.bytes)}) into ${r.image}:${r.dest}${r.skipped ? `; skipped ${r.skipped} special files` : ''}`,
      );
    });

  home
    .command('export')
    .description('back up every user file of the home image into a new (or empty) host directory')
    .argument('<medium>', MEDIUM)
    .argument('<dest>', 'host directory (created if missing; must be empty)')
    .option('--passphrase-file <file>', 'read the passphrase from this file (- for stdin)')
    .option('--json', 'print one JSON document')
    .action(async (medium: string, dest: string, opts: { passphraseFile?: string; json?: boolean }) => {
      await runCommand(
        opts,
        () => homeExport(medium, dest, { passphrase: secretFrom(opts.passphraseFile) }),
        (r) => `exported ${r.files} files, ${r.directories} directories, ${r.symlinks} symlinks, ${r.hardLinks} hard links (${formatSize(r.bytes)}) to ${r.dest}${r.skipped ? `; skipped ${r.skipped} special files or unsafe names` : ''}`,
      );
    });

  addKdfOptions(
    home
      .command('passwd')
      .description('change the passphrase of an encrypted home (the old or the new one works at every moment)')
      .argument('<medium>', MEDIUM)
      .option('--passphrase-file <file>', 'the current passphrase, from this file (- for stdin)')
      .option('--new-passphrase-file <file>', 'the new passphrase, from this file (- for stdin)'),
  )
    .option('--json', 'print one JSON document')
    .action(async (medium: string, opts: KdfOpts & { passphraseFile?: string; newPassphraseFile?: string; json?: boolean }) => {
      await runCommand(
        opts,
        async () => {
          const kdf = kdfChoice(opts);
          const oldPass = await readSecret(opts.passphraseFile, 'Current passphrase: ');
          try {
            const newPass = await readSecret(opts.newPassphraseFile, 'New passphrase: ', { confirm: true });
            try {
              return await homePasswd(medium, oldPass, newPass, kdf ? { kdf } : {});
            } finally {
              newPass.fill(0);
            }
          } finally {
            oldPass.fill(0);
          }
        },
        (r) => `changed the passphrase of ${r.image} (keyslot ${r.keyslot})`,
      );
    });

  home
    .command('resize')
    .description('grow the home image, its LUKS payload and its ext4 filesystem, keeping the data (all or nothing)')
    .argument('<medium>', MEDIUM)
    .requiredOption('--size <size>', 'new image size (bytes, or 2G, …)')
    .option('--passphrase-file <file>', 'read the passphrase from this file (- for stdin)')
    .option('--json', 'print one JSON document')
    .action(async (medium: string, opts: { size: string; passphraseFile?: string; json?: boolean }) => {
      await runCommand(
        opts,
        async () => {
          exitHonestlyOnInterrupt();
          return homeResize(medium, parseSizeOption(opts.size, '--size'), { passphrase: secretFrom(opts.passphraseFile) });
        },
        (r) => `grew ${r.image}: ${formatSize(r.oldSize)} → ${formatSize(r.newSize)}, filesystem ${r.oldBlocks} → ${r.newBlocks} blocks, ${formatSize(r.free)} free`,
      );
    });
}
