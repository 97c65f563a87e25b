/**
 * Oracle tools (mksquashfs, e2fsck, cryptsetup, qemu, …) are test dependencies. Locally a missing tool
 * skips the test with a visible reason; in CI (CI=true) it fails, so a broken install cannot pass quietly.
 */
import { spawnSync } from 'node:child_process';

const found = new Map<string, boolean>();

export function hasTool(name: string): boolean {
  let ok = found.get(name);
  if (ok === undefined) {
    ok = spawnSync('sh', ['-c', `command -v ${name}`], { stdio: 'ignore' }).status === 0;
    found.set(name, ok);
  }
  return ok;
}

/**
 * For `test(name, { skip: missingTools('mksquashfs') }, …)`: false when every tool is there; a
 * reason string (skip) when one is missing locally; throws when one is missing in CI.
 */
export function missingTools(...names: string[]): false | string {
  const missing = names.filter((n) => !hasTool(n));
  if (missing.length === 0) return false;
  const reason = `oracle tool(s) not installed: ${missing.join(', ')} (run .ci/run or apt-get install them)`;
  if (process.env.CI) throw new Error(`CI must have every oracle: ${reason}`);
  return reason;
}

/** Runs a tool and returns stdout; throws with stderr on a non-zero exit. */
export function run(cmd: string, args: string[], options: { input?: Uint8Array | string; cwd?: string; allowFail?: boolean } = {}): { stdout: string; stderr: string; status: number } {
  const r = spawnSync(cmd, args, { input: options.input, cwd: options.cwd, maxBuffer: 1 << 30, encoding: 'utf8' });
  const status = r.status ?? -1;
  if (status !== 0 && !options.allowFail) {
    throw new Error(`${cmd} ${args.join(' ')} exited ${status}: ${r.stderr || r.error?.message}`);
  }
  return { stdout: r.stdout ?? '', stderr: r.stderr ?? '', status };
}
