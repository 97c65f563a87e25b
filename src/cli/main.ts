/** The livestick command line: a thin frontend that parses arguments and calls ops/ and the layers. */
import { Command, CommanderError } from 'commander';
import { UsageError, fromSystemError } from '../errors.ts';
import { reportFailure, slowKdfProgress } from './common.ts';
import { observeSlowKdf } from '../xform/luks/kdf.ts';
import { registerCommands } from './commands/index.ts';

export const VERSION = '0.1.0';

/** The program with the command family `args` (the arguments after node and the script) names, or all of them. */
export async function buildProgram(args: readonly string[] = []): Promise<Command> {
  const program = new Command();
  program
    .name('livestick')
    .description('persistence for live Linux USB media: inspect, merge and reset overlays, persistent /home images')
    .version(VERSION)
    .showHelpAfterError('(add --help for usage)')
    .exitOverride()
    .addHelpText(
      'after',
      `
Exit codes: 0 ok, 1 failure, 3 (status) the medium needs attention, 64 usage error, 65 corrupt or
            unsupported input, 66 missing input, 73 cannot create output, 74 I/O error, 77 permission denied,
            130 interrupted.
Every command that reports something takes --json: one JSON document on stdout, on failure too.`,
    );
  await registerCommands(program, args);
  return program;
}

export async function main(argv: string[]): Promise<void> {
  // `livestick … | head` closes the pipe early: that is not an error. Any other output error (a full
  // disk, EFBIG past a file size limit) is a typed I/O error, told on stderr since stdout is gone.
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    reportFailure(fromSystemError(err, 'standard output', 'write the output'), false);
    process.exit(process.exitCode);
  });
  // Ctrl-C: a line that says so (a command with a more precise message installs its own handler).
  process.on('SIGINT', () => {
    if (process.listenerCount('SIGINT') > 1) return;
    process.stderr.write('\nlivestick: interrupted; a medium left mid-change is finished or undone by the next livestick command\n');
    process.exit(130);
  });
  observeSlowKdf(slowKdfProgress);
  const program = await buildProgram(argv.slice(2));
  const json = argv.includes('--json');
  // Commander prints its own usage messages, prefixed like ours; with --json we print ours instead.
  const output = json ? { writeErr: () => {} } : { outputError: (text: string, write: (s: string) => void) => write(`livestick: ${text}`) };
  program.configureOutput(output);
  for (const cmd of allCommands(program)) {
    cmd.exitOverride();
    cmd.configureOutput(output);
  }
  if (argv.length <= 2) {
    // No command at all: the overview, on stderr, as a usage error.
    program.outputHelp({ error: true });
    process.exitCode = new UsageError('').exitCode;
    return;
  }
  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || (err.code === 'commander.help' && err.exitCode === 0)) {
        process.exitCode = 0;
        return;
      }
      // Commander has already printed its message unless --json silenced it.
      if (json) reportFailure(new UsageError(err.message.replace(/^error: /, '')), true);
      process.exitCode = new UsageError('').exitCode;
      return;
    }
    reportFailure(err, json);
  }
}

function allCommands(cmd: Command): Command[] {
  return cmd.commands.flatMap((c) => [c, ...allCommands(c)]);
}

const invokedDirectly = process.argv[1] !== undefined && import.meta.url === new URL(`file://${process.argv[1]}`).href;
if (invokedDirectly) await main(process.argv);
