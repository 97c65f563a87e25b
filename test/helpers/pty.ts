/**
 * Runs the livestick CLI on a pseudo-terminal (python3's pty module), answering prompts: each step
 * waits for its pattern in the output (after the previous answer) and then types its text.
 */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { hasTool } from './tools.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const tsx = import.meta.resolve('tsx');

const DRIVER = `
import json, os, pty, re, select, sys, time
argv, steps = json.loads(sys.argv[1]), json.loads(sys.argv[2])
pid, fd = pty.fork()
if pid == 0:
    os.execv(argv[0], argv)
out, seen, step, deadline = b'', 0, 0, time.time() + 120
while time.time() < deadline:
    r, _, _ = select.select([fd], [], [], 0.05)
    if r:
        try:
            data = os.read(fd, 4096)
        except OSError:
            break
        if not data:
            break
        out += data
    if step < len(steps) and re.search(steps[step][0].encode(), out[seen:]):
        seen = len(out)
        os.write(fd, steps[step][1].encode())
        step += 1
else:
    os.kill(pid, 9)
_, status = os.waitpid(pid, 0)
print(json.dumps({'status': os.waitstatus_to_exitcode(status), 'output': out.decode('utf8', 'replace'), 'answered': step}))
`;

export interface PtyResult {
  status: number;
  /** Everything the terminal showed (stdout and stderr together). */
  output: string;
  /** How many steps got their answer. */
  answered: number;
}

export function ptySkip(): false | string {
  if (hasTool('python3')) return false;
  const reason = 'python3 (for its pty module) is not installed';
  if (process.env.CI) throw new Error(`CI must have every oracle: ${reason}`);
  return reason;
}

export function runCliOnTerminal(args: string[], steps: [pattern: string, answer: string][]): PtyResult {
  const argv = [process.execPath, '--import', tsx, `${root}src/cli/main.ts`, ...args];
  const r = spawnSync('python3', ['-c', DRIVER, JSON.stringify(argv), JSON.stringify(steps)], { encoding: 'utf8', maxBuffer: 1 << 26 });
  if (r.status !== 0) throw new Error(`pty driver failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as PtyResult;
}
