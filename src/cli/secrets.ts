/**
 * Passphrases and key files for every command that needs one (luks *, home *), and the terminal
 * questions that go with them.
 *
 * Design notes
 * - Secrets come from a prompt without echo, `--passphrase-file F` or `--key-file F` (`-` = stdin),
 *   never from argv or the environment.
 * - `--passphrase-file` means what a person types: one trailing "\n" is dropped, so a file made with
 *   `echo pass > f` holds the passphrase "pass", the same one typed at a prompt (ours, cryptsetup's
 *   or the boot prompt). A "\r" before it stays (cryptsetup's terminal and stdin reads stop at "\n"
 *   only), with a warning; a file of more than one line is refused, since nobody types a newline.
 * - `--key-file` is cryptsetup's: the whole file, byte for byte (newlines included), up to 8 MiB.
 * - At a terminal an unlock gets three tries; a new passphrase is asked twice, and one shorter than
 *   8 characters draws a warning (stderr). Without a terminal and without a file: a usage error.
 * - Buffers holding secrets are wiped by whoever ends up owning them (`withTries` wipes its own).
 */
import type { Command } from 'commander';
import { open } from 'node:fs/promises';
import { ExitCode, LivestickError, UsageError, fromSystemError } from '../errors.ts';
import { WrongPassphraseError } from '../xform/luks/index.ts';
import { promptLine } from './common.ts';

/** cryptsetup's default key file size limit. */
const MAX_KEY_FILE = 8 * 1024 * 1024;
export const SHORT_PASSPHRASE = 8;
export const UNLOCK_TRIES = 3;

export interface SecretOptions {
  passphraseFile?: string;
  keyFile?: string;
}

export interface NewSecretOptions {
  newPassphraseFile?: string;
  newKeyFile?: string;
}

let stdinTaken = false;

async function readWholeFile(path: string): Promise<Buffer> {
  // Not only regular files: <(…) gives a pipe. Read in pieces and stop past the limit (/dev/zero ends here).
  const fh = await open(path, 'r');
  const buf = Buffer.alloc(MAX_KEY_FILE + 1);
  let len = 0;
  try {
    for (;;) {
      const { bytesRead } = await fh.read(buf, len, buf.length - len, null);
      if (bytesRead === 0) break;
      len += bytesRead;
      if (len > MAX_KEY_FILE) throw new UsageError(`${path}: the key file is larger than 8 MiB (cryptsetup's limit)`);
    }
    return Buffer.from(buf.subarray(0, len));
  } finally {
    buf.fill(0);
    await fh.close();
  }
}

async function readAllStdin(): Promise<Buffer> {
  if (stdinTaken) throw new UsageError('only one passphrase or key can come from stdin (-)');
  stdinTaken = true;
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of process.stdin) {
    chunks.push(chunk as Buffer);
    total += (chunk as Buffer).length;
    if (total > MAX_KEY_FILE) {
      for (const c of chunks) c.fill(0);
      throw new UsageError('the key on stdin is larger than 8 MiB (cryptsetup\'s limit)');
    }
  }
  const all = Buffer.concat(chunks);
  for (const c of chunks) c.fill(0);
  return all;
}

async function readSource(file: string, what: string): Promise<Buffer> {
  try {
    return file === '-' ? await readAllStdin() : await readWholeFile(file);
  } catch (err) {
    throw err instanceof LivestickError ? err : fromSystemError(err, file, `read the ${what}`);
  }
}

function warn(text: string): void {
  process.stderr.write(`livestick: warning: ${text}\n`);
}

/** The passphrase a --passphrase-file holds: its one line, without the trailing "\n". */
export function passphraseFromFile(bytes: Buffer, name: string): Buffer {
  const end = bytes.length > 0 && bytes[bytes.length - 1] === 0x0a ? bytes.length - 1 : bytes.length;
  const line = bytes.subarray(0, end);
  if (line.includes(0x0a)) {
    bytes.fill(0);
    throw new UsageError(`${name}: the passphrase file holds more than one line (use --key-file for a key of exact bytes)`);
  }
  if (line.length > 0 && line[line.length - 1] === 0x0d) warn(`${name}: the passphrase ends with a carriage return (Windows line end?), which is kept as part of it`);
  const out = Buffer.from(line);
  bytes.fill(0);
  return out;
}

/** Reads one line from the terminal without echo. Ctrl-C aborts; Ctrl-D or Enter ends; Backspace edits. */
export async function promptHidden(prompt: string): Promise<Buffer> {
  const stdin = process.stdin;
  if (!stdin.isTTY) throw new UsageError('no terminal to ask for the passphrase: use --passphrase-file FILE or --key-file FILE (- for stdin)');
  // Echo goes off before the prompt shows, so that nothing typed as soon as it appears is echoed.
  stdin.setRawMode(true);
  process.stderr.write(prompt);
  stdin.resume();
  const buf = Buffer.alloc(1024);
  let len = 0;
  try {
    return await new Promise<Buffer>((resolve, reject) => {
      const onData = (chunk: Buffer): void => {
        for (const byte of chunk) {
          if (byte === 0x0d || byte === 0x0a || byte === 0x04) {
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


/** Is there a person to ask (a terminal on stdin and stderr)? */
export function atTerminal(): boolean {
  return Boolean(process.stdin.isTTY) && Boolean(process.stderr.isTTY);
}

/** Where a secret comes from; `read` returns fresh bytes the caller wipes. */
export interface SecretSource {
  /** A prompt: a wrong passphrase may be asked again. */
  readonly interactive: boolean;
  read(): Promise<Buffer>;
}

function fileOrKey(passphraseFile: string | undefined, keyFile: string | undefined, names: [string, string]): { kind: 'passphrase' | 'key'; file: string } | undefined {
  if (passphraseFile !== undefined && keyFile !== undefined) throw new UsageError(`${names[0]} and ${names[1]}: give one of them`);
  if (passphraseFile !== undefined) return { kind: 'passphrase', file: passphraseFile };
  if (keyFile !== undefined) return { kind: 'key', file: keyFile };
  return undefined;
}

async function fromFile(src: { kind: 'passphrase' | 'key'; file: string }): Promise<Buffer> {
  const name = src.file === '-' ? '(stdin)' : src.file;
  const raw = await readSource(src.file, src.kind === 'key' ? 'key file' : 'passphrase file');
  const bytes = src.kind === 'key' ? raw : passphraseFromFile(raw, name);
  if (bytes.length === 0) throw new UsageError(`${name}: the ${src.kind === 'key' ? 'key file' : 'passphrase'} is empty`);
  return bytes;
}

/** An existing passphrase or key: --passphrase-file, --key-file, or the prompt. */
export function currentSecret(opts: SecretOptions, prompt: string): SecretSource {
  const src = fileOrKey(opts.passphraseFile, opts.keyFile, ['--passphrase-file', '--key-file']);
  if (src) return { interactive: false, read: () => fromFile(src) };
  return {
    interactive: true,
    read: async () => {
      const pass = await promptHidden(prompt);
      if (pass.length === 0) throw new UsageError('empty passphrase');
      return pass;
    },
  };
}

function warnIfShort(pass: Buffer): void {
  const chars = [...pass.toString('utf8')].length;
  if (chars < SHORT_PASSPHRASE) warn(`the new passphrase has only ${chars} character${chars === 1 ? '' : 's'}; one of at least ${SHORT_PASSPHRASE} is much harder to guess`);
}

/** A new passphrase or key: from a file, or asked twice at the prompt. A short passphrase is warned about. */
export function newSecret(opts: SecretOptions | NewSecretOptions, prompt: string, names: [string, string] = ['--new-passphrase-file', '--new-key-file']): SecretSource {
  const o = opts as SecretOptions & NewSecretOptions;
  const src = 'newPassphraseFile' in o || 'newKeyFile' in o ? fileOrKey(o.newPassphraseFile, o.newKeyFile, names) : fileOrKey(o.passphraseFile, o.keyFile, ['--passphrase-file', '--key-file']);
  if (src) {
    return {
      interactive: false,
      read: async () => {
        const bytes = await fromFile(src);
        if (src.kind === 'passphrase') warnIfShort(bytes);
        return bytes;
      },
    };
  }
  return {
    interactive: true,
    read: async () => {
      const first = await promptHidden(prompt);
      const again = await promptHidden('Verify passphrase: ');
      const same = first.equals(again);
      again.fill(0);
      if (!same) {
        first.fill(0);
        throw new UsageError('the passphrases do not match');
      }
      if (first.length === 0) throw new UsageError('empty passphrase');
      warnIfShort(first);
      return first;
    },
  };
}

/**
 * Runs `attempt` with a secret from `source`: at a prompt a wrong passphrase is asked again, up to
 * three tries in all; from a file there is one try. The secret is wiped afterwards.
 */
export async function withTries<T>(source: SecretSource, attempt: (secret: Buffer) => Promise<T>): Promise<T> {
  const tries = source.interactive ? UNLOCK_TRIES : 1;
  for (let n = 1; ; n++) {
    const secret = await source.read();
    try {
      return await attempt(secret);
    } catch (err) {
      if (!(err instanceof WrongPassphraseError) || n >= tries) throw err;
      process.stderr.write('No key available with this passphrase. Try again.\n');
    } finally {
      secret.fill(0);
    }
  }
}

/** A source that reads once and hands out copies (for a secret needed more than once). */
export function memoized(source: SecretSource): SecretSource & { wipe(): void } {
  let kept: Buffer | undefined;
  return {
    interactive: source.interactive,
    read: async () => Buffer.from((kept ??= await source.read())),
    wipe: () => kept?.fill(0),
  };
}


/** At a terminal, asks for a typed YES (in capitals, as cryptsetup does); elsewhere refuses with `refusal`. */
export async function confirmDestruction(question: string, refusal: () => LivestickError): Promise<void> {
  if (!atTerminal()) throw refusal();
  process.stderr.write(`WARNING!\n========\n${question}\n`);
  const answer = await promptLine('Are you sure? (Type YES in capital letters): ');
  if (answer.trim() !== 'YES') throw new LivestickError('FAILURE', ExitCode.failure, 'not confirmed: nothing was changed');
}

/** --passphrase-file and --key-file for the passphrase a command needs. */
export function addSecretOptions(cmd: Command, which = 'the passphrase'): Command {
  return cmd
    .option('--passphrase-file <file>', `read ${which} from this file as typed: one line, a trailing newline dropped (- for stdin)`)
    .option('--key-file <file>', `use this file's exact bytes, newlines included, as ${which} (cryptsetup's --key-file; - for stdin)`);
}

/** --new-passphrase-file and --new-key-file, for commands that set a second, new passphrase. */
export function addNewSecretOptions(cmd: Command): Command {
  return cmd
    .option('--new-passphrase-file <file>', 'read the new passphrase from this file as typed: one line, a trailing newline dropped (- for stdin)')
    .option('--new-key-file <file>', "use this file's exact bytes, newlines included, as the new passphrase (- for stdin)");
}
