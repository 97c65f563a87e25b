/**
 * What every command shares: one JSON document on stdout with --json (on failure too), human text
 * otherwise, typed errors mapped to exit codes, and byte progress on stderr when it is a terminal.
 */
import type { Command } from 'commander';
import { fstatSync, writeSync } from 'node:fs';
import { ExitCode, LivestickError, UsageError, fromSystemError, isSystemError } from '../errors.ts';
import { formatSize, parseSize } from '../io/bytes.ts';
import type { SlowKdfObserver } from '../xform/luks/kdf.ts';

export const SCHEMA_VERSION = 1;

export interface OutputOptions {
  json?: boolean;
  quiet?: boolean;
}

/** A Node.js system error (anything with an errno code) as the typed error it means; others unchanged. */
export function typedError(err: unknown): unknown {
  if (!isSystemError(err)) return err;
  const action = err.syscall === undefined ? 'complete the operation' : `${err.syscall}`;
  return fromSystemError(err, err.path ?? (err as { dest?: string }).dest ?? '(no file named)', action);
}

/** --json (unless the command has no report) and -q/--quiet, which every command takes. */
export function withOutputOptions(cmd: Command, options: { json?: boolean } = {}): Command {
  if (options.json ?? true) cmd.option('--json', 'print one JSON document on stdout, on failure too');
  return cmd.option('-q, --quiet', 'print nothing but errors and warnings (no progress)');
}

/** What every medium command's MEDIUM argument may be. */
export const MEDIUM_ARGUMENT = 'a directory holding LiveOS/ (a mounted stick or a copy), a stick image file, or a device (/dev/sdX, /dev/rdiskN, \\\\.\\PhysicalDriveN)';

/** --partition and --force-device, for commands that open a medium that may be an image or a device. */
export function withMediumOptions(cmd: Command): Command {
  return cmd
    .option('--partition <n>', 'the partition holding LiveOS/, when several of an image\'s or device\'s do (Linux numbering: 1, 2, …)')
    .option('--force-device', 'write a device even while one of its partitions is mounted or it holds this host\'s system');
}

export function mediumOptions(opts: { partition?: string; forceDevice?: boolean }): { partition?: number; forceDevice?: boolean } {
  return {
    ...(opts.partition === undefined ? {} : { partition: parseIntegerOption(opts.partition, '--partition') }),
    ...(opts.forceDevice ? { forceDevice: true } : {}),
  };
}

export function errorToJson(err: unknown): Record<string, unknown> {
  err = typedError(err);
  if (err instanceof LivestickError) {
    return { code: err.code, message: err.message, ...err.details() };
  }
  return { code: 'FAILURE', message: err instanceof Error ? err.message : String(err) };
}

export function exitCodeOf(err: unknown): number {
  err = typedError(err);
  return err instanceof LivestickError ? err.exitCode : ExitCode.failure;
}

function describe(err: unknown): string {
  if (err instanceof LivestickError) return err.toString();
  if (err instanceof Error) return `${err.message}${process.env.LIVESTICK_DEBUG ? `\n${err.stack}` : ''}`;
  return String(err);
}

/** Prints a failure the way the output mode asks and sets the exit code. */
export function reportFailure(err: unknown, json: boolean): void {
  err = typedError(err);
  if (json) {
    process.stdout.write(`${JSON.stringify({ schemaVersion: SCHEMA_VERSION, ok: false, error: errorToJson(err) }, null, 2)}\n`);
  } else {
    process.stderr.write(`livestick: error: ${describe(err)}\n`);
    if (!(err instanceof LivestickError) && process.env.LIVESTICK_DEBUG === undefined) {
      process.stderr.write('livestick: this is a bug; set LIVESTICK_DEBUG=1 for a stack trace\n');
    }
  }
  process.exitCode = exitCodeOf(err);
}

/**
 * Runs a command body. `result` is the JSON payload; `render` turns it into the human text (return
 * undefined to print nothing).
 */
export async function runCommand<T extends object>(
  options: OutputOptions,
  body: () => Promise<T>,
  render: (result: T) => string | undefined,
): Promise<void> {
  try {
    const result = await body();
    if (options.json) {
      process.stdout.write(`${JSON.stringify({ schemaVersion: SCHEMA_VERSION, ok: true, ...result }, jsonReplacer, 2)}\n`);
    } else if (!options.quiet) {
      const text = render(result);
      if (text !== undefined && text !== '') process.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
    }
  } catch (err) {
    reportFailure(err, options.json ?? false);
  }
}

const NEEDS_QUOTES = /[\s!"$&'()*;<=>?[\\\]^`{|}]|^[~#]/;
// eslint-disable-next-line no-control-regex
const CONTROL = /[\x00-\x1f\x7f]/;
const NAMED_ESCAPES: Record<string, string> = { '\n': '\\n', '\t': '\\t', '\r': '\\r', '\b': '\\b', '\f': '\\f', '\v': '\\v', '\x07': '\\a' };

/**
 * A file name for human output, quoted as GNU ls's shell-escape style does when it holds spaces,
 * quotes, shell metacharacters or control characters: `a b` → 'a b', `it's` → "it's", a newline →
 * 'a'$'\n''b'. Plain names are unchanged; the result pasted into a shell names the same file.
 */
export function quoteName(name: string): string {
  if (name !== '' && !NEEDS_QUOTES.test(name) && !CONTROL.test(name)) return name;
  if (!CONTROL.test(name)) {
    if (!name.includes("'")) return `'${name}'`;
    if (!/["$`\\!]/.test(name)) return `"${name}"`;
  }
  let out = '';
  let run = '';
  const flush = (): void => {
    if (run !== '') out += `'${run}'`;
    run = '';
  };
  for (const ch of name) {
    if (ch === "'") {
      flush();
      out += "\\'";
    } else if (CONTROL.test(ch)) {
      flush();
      out += `$'${NAMED_ESCAPES[ch] ?? `\\${ch.charCodeAt(0).toString(8).padStart(3, '0')}`}'`;
    } else run += ch;
  }
  flush();
  return out === '' ? "''" : out;
}

function jsonReplacer(_key: string, value: unknown): unknown {
  if (typeof value === 'bigint') return value.toString();
  if (value instanceof Uint8Array) return Buffer.from(value).toString('hex');
  return value;
}

export function parseSizeOption(text: string, what: string): number {
  try {
    return parseSize(text);
  } catch (err) {
    throw new UsageError(`${what}: ${(err as Error).message}`);
  }
}

export function parseIntegerOption(text: string, what: string): number {
  if (!/^\d+$/.test(text.trim())) throw new UsageError(`${what}: "${text}" is not a non-negative whole number`);
  const value = Number(text);
  if (!Number.isSafeInteger(value)) throw new UsageError(`${what}: "${text}" is too large`);
  return value;
}

/**
 * Progress on stderr. On a terminal: a bar redrawn at most ~10 times a second, then a closing line
 * for a phase that took more than a second. Off a terminal or with TERM=dumb: plain lines only (one
 * every 10 s for a long phase, and the closing line). Nothing with --json or --quiet.
 */
export class Progress {
  readonly #label: string;
  readonly #total: number;
  readonly #mode: 'bar' | 'plain' | 'off';
  readonly #unit: 'bytes' | 'count';
  readonly #started = Date.now();
  #lastDraw = 0;
  #done = 0;
  #finished = false;

  constructor(label: string, total: number, options: OutputOptions & { unit?: 'bytes' | 'count' } = {}) {
    this.#label = label;
    this.#total = total;
    this.#unit = options.unit ?? 'bytes';
    this.#mode = options.json || options.quiet ? 'off' : process.stderr.isTTY && process.env.TERM !== 'dumb' ? 'bar' : 'plain';
    this.#lastDraw = this.#mode === 'plain' ? Date.now() : 0;
  }

  #amount(n: number): string {
    return this.#unit === 'bytes' ? formatSize(n) : String(Math.round(n));
  }

  #rate(elapsed: number, done: number): string {
    const r = elapsed > 0 ? done / elapsed : 0;
    return this.#unit === 'bytes' ? `${formatSize(Math.round(r / 2 ** 20) * 2 ** 20 || Math.round(r))}/s` : `${Math.round(r)}/s`;
  }

  update(done: number): void {
    this.#done = done;
    if (this.#mode === 'off') return;
    const now = Date.now();
    const elapsed = (now - this.#started) / 1000;
    const pct = this.#total > 0 ? Math.min(100, (100 * done) / this.#total) : 100;
    if (this.#mode === 'plain') {
      if (now - this.#lastDraw < 10_000) return;
      this.#lastDraw = now;
      process.stderr.write(`${this.#label}: ${pct.toFixed(0)}% (${this.#amount(done)} of ${this.#amount(this.#total)})\n`);
      return;
    }
    if (now - this.#lastDraw < 100 && done < this.#total) return;
    this.#lastDraw = now;
    const rate = elapsed > 0 ? done / elapsed : 0;
    const eta = rate > 0 && this.#total > done ? ` ETA ${Math.ceil((this.#total - done) / rate)}s` : '';
    process.stderr.write(`\r\x1b[K${this.#label}: ${pct.toFixed(1)}% ${this.#amount(done)}/${this.#amount(this.#total)} ${this.#rate(elapsed, done)}${eta}`);
  }

  add(amount: number): void {
    this.update(this.#done + amount);
  }

  finish(): void {
    if (this.#finished || this.#mode === 'off') return;
    this.#finished = true;
    if (this.#mode === 'bar') process.stderr.write('\r\x1b[K');
    const elapsed = (Date.now() - this.#started) / 1000;
    if (elapsed >= 1) process.stderr.write(`${this.#label}: done, ${this.#amount(this.#done)} in ${elapsed.toFixed(1)} s\n`);
  }
}

/**
 * Slow key derivations (a LUKS keyslot or digest whose cost says seconds): on a terminal a bar that
 * advances with the estimate, elsewhere one line on stderr when it will take 3 s or more (or is still running after 2 s).
 */
export const slowKdfProgress: SlowKdfObserver = ({ what, estimatedMs }) => {
  const label = `deriving the key (${what}, about ${Math.max(1, Math.round(estimatedMs / 1000))} s)`;
  if (!process.stderr.isTTY) {
    const tell = () => process.stderr.write(`livestick: ${label}\n`);
    if (estimatedMs >= 3000) {
      tell();
      return () => {};
    }
    const later = setTimeout(tell, 2000);
    later.unref();
    return () => clearTimeout(later);
  }
  const started = Date.now();
  const draw = () => {
    const elapsed = Date.now() - started;
    const pct = Math.min(99, (100 * elapsed) / estimatedMs);
    process.stderr.write(`\r\x1b[K${label}: ${pct.toFixed(0)}%${elapsed < estimatedMs ? ` ETA ${Math.ceil((estimatedMs - elapsed) / 1000)}s` : ''}`);
  };
  draw();
  const timer = setInterval(draw, 250);
  timer.unref();
  return () => {
    clearInterval(timer);
    process.stderr.write('\r\x1b[K');
  };
};

let stdoutIsFile: boolean | undefined;

/**
 * Writes a piece of command output (`cat`) to stdout. Into a file or device, with a loop of write
 * calls: Node's stdout for files drops the rest of a short write (a full disk, a file size limit), so
 * output could end truncated without an error. Otherwise through the stream, with back-pressure.
 * Errors are typed (exit 74).
 */
export async function writeOutput(piece: Uint8Array): Promise<void> {
  if (stdoutIsFile === undefined) {
    try {
      const st = fstatSync(1);
      stdoutIsFile = st.isFile() || (st.isCharacterDevice() && !process.stdout.isTTY);
    } catch {
      stdoutIsFile = false;
    }
  }
  if (!stdoutIsFile) {
    if (!process.stdout.write(piece)) await new Promise((resolve) => process.stdout.once('drain', resolve));
    return;
  }
  for (let done = 0; done < piece.byteLength; ) {
    try {
      done += writeSync(1, piece, done, piece.byteLength - done);
    } catch (err) {
      throw fromSystemError(err, 'standard output', 'write the output');
    }
  }
}

/** Reads one visible line from the terminal (for confirmations). */
export async function promptLine(prompt: string): Promise<string> {
  const { createInterface } = await import('node:readline/promises');
  const rl = createInterface({ input: process.stdin, output: process.stderr, terminal: true });
  try {
    return await rl.question(prompt);
  } finally {
    rl.close();
    process.stdin.pause();
  }
}

/** At a terminal, asks a yes/no question (no by default); without a terminal on stdin the answer is no. */
export async function confirmYes(question: string): Promise<boolean> {
  if (!process.stdin.isTTY) return false;
  return /^y(es)?$/i.test((await promptLine(`${question} [y/N] `)).trim());
}
