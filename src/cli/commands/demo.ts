import type { Command } from 'commander';
import { runDemo } from '../../ops/demo.ts';
import { runCommand } from '../common.ts';
import { LivestickError, ExitCode } from '../../errors.ts';

export function registerDemo(program: Command): void {
  program
    .command('demo')
    .description('build a small sample live medium in a temporary (or given) directory and show what livestick does with it')
    .argument('[dir]', 'where to build the sample (default: a new temporary directory)')
    .option('--json', 'print one JSON document on stdout, on failure too')
    .option('-q, --quiet', 'print nothing but errors and warnings (no progress)')
    .action(async (dir: string | undefined, opts: { json?: boolean }) => {
      let n = 0;
      await runCommand(
        opts,
        async () => {
          const r = await runDemo({
            dir,
            log: opts.json ? undefined : (s) => process.stdout.write(`${++n}. ${s.title}\n   ${s.detail}\n`),
          });
          if (!r.verified) throw new LivestickError('FAILURE', ExitCode.failure, 'the demo could not verify its own result');
          return r;
        },
        (r) => `\nAll checks passed. The sample is in ${r.dir}`,
      );
    });
}
