/**
 * Kernel oracle: runs a shell script inside a real Linux kernel (Debian's, with device-mapper) under
 * qemu TCG, with raw image files attached as virtio disks.
 *
 * Design notes
 * - scripts/kernel/build.sh makes `.cache/kernel/{vmlinuz,initramfs.cpio.gz}`; its /init loads the
 *   modules, reads the job script from the first virtio disk (/dev/vda, NUL padding stripped), runs it
 *   with `sh` (stdout and stderr both go to the serial console), prints BEGIN/END markers around it with
 *   the exit status, syncs and powers off. Data disks are /dev/vdb, /dev/vdc, … in the order given.
 * - The guest has busybox plus the host's dmsetup, cryptsetup, e2fsck and mke2fs (in /usr/sbin). Busybox
 *   sh prefers its applets to PATH, so the job shell defines functions for those four; a nested `sh -c`
 *   must call /usr/sbin/mke2fs by path. Raw disks only (format=raw); sizes must be multiples of 512.
 * - One boot per runInKernel call (~10 s under TCG): batch checks into one script where possible.
 * - Only the timeout is timing-dependent; the job's result comes from the markers, never from sleeps.
 * - build.sh runs at most once per process, from kernelHarnessStatus (synchronously, so a failed build
 *   becomes a visible skip locally and an error in CI) or from ensureKernel; it is idempotent and takes
 *   ~0.3 s when its stamp is current. Without root/apt, existing artifacts are used as they are.
 * - Failures throw KernelHarnessError with the last console lines, so a boot problem is diagnosable.
 */
import { execFile, spawn, spawnSync } from 'node:child_process';
import { existsSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { hasTool } from '../helpers/tools.ts';
import { tempDir } from '../helpers/tmp.ts';

const repoRoot = fileURLToPath(new URL('../../', import.meta.url));
const buildScript = join(repoRoot, 'scripts', 'kernel', 'build.sh');

export const JOB_BEGIN_MARKER = '@@LIVESTICK-JOB-BEGIN@@';
export const JOB_END_MARKER_PREFIX = '@@LIVESTICK-JOB-END status=';
const CONSOLE_TAIL_LINES = 40;
const JOB_DISK_MIN_BYTES = 64 * 1024;
const MAX_LOG_BYTES = 256 * 1024 * 1024;

export interface KernelDisk {
  path: string;
  readOnly?: boolean;
}

export interface KernelJob {
  /** Shell script run by busybox `sh` in the guest; its stdout and stderr are both captured. */
  script: string;
  /** Attached in order as /dev/vdb, /dev/vdc, …; raw images whose size is a multiple of 512. */
  disks: KernelDisk[];
  memoryMiB?: number;
  timeoutMs?: number;
}

export interface KernelJobResult {
  /** What the job printed (stdout + stderr, `\r` removed), between the markers. */
  output: string;
  /** The job script's exit status. */
  status: number;
  /** The whole serial console log, `\r` removed. */
  log: string;
}

export class KernelHarnessError extends Error {
  readonly log: string;
  constructor(message: string, log: string) {
    super(`${message}\n--- last ${CONSOLE_TAIL_LINES} console lines ---\n${consoleTail(log)}`);
    this.name = 'KernelHarnessError';
    this.log = log;
  }
}

export function kernelDir(): string {
  return process.env.LIVESTICK_KERNEL_DIR ?? join(repoRoot, '.cache', 'kernel');
}

export function kernelArtifacts(): { vmlinuz: string; initramfs: string } {
  const dir = kernelDir();
  return { vmlinuz: join(dir, 'vmlinuz'), initramfs: join(dir, 'initramfs.cpio.gz') };
}

function artifactsPresent(): boolean {
  const { vmlinuz, initramfs } = kernelArtifacts();
  return existsSync(vmlinuz) && existsSync(initramfs);
}

/** build.sh can run here: Linux, root, apt and dpkg available (it installs any missing tools itself). */
function canBuild(): boolean {
  return (
    process.platform === 'linux' &&
    process.getuid?.() === 0 &&
    hasTool('apt-get') &&
    hasTool('apt-cache') &&
    hasTool('dpkg-deb') &&
    hasTool('bash') &&
    existsSync(buildScript)
  );
}

let harnessState: false | string | undefined;
let ensured: Promise<void> | undefined;

function buildFailure(exit: number | null, stderr: string): string {
  return `scripts/kernel/build.sh failed (exit ${exit}):\n${consoleTail(stderr, 15)}`;
}

function stateAfterBuild(): false | string {
  if (!artifactsPresent()) {
    return `kernel oracle not built (${kernelDir()}) and cannot be built here: run scripts/kernel/build.sh as root on Debian 12`;
  }
  if (!hasTool('qemu-system-x86_64')) return 'kernel oracle needs qemu-system-x86_64 (apt-get install qemu-system-x86)';
  return false;
}

function checked(state: false | string): false | string {
  if (state && process.env.CI) throw new Error(`CI must have the kernel oracle: ${state}`);
  return state;
}

/**
 * For `describe(name, { skip: kernelHarnessStatus() }, …)`: false when the kernel oracle is usable; otherwise
 * a reason to skip locally. In CI (CI set) an unusable harness throws. Where build.sh can run (Linux, root,
 * apt) the first call runs it synchronously (a no-op in ~0.3 s when the stamp is current, minutes otherwise).
 */
export function kernelHarnessStatus(): false | string {
  if (harnessState === undefined) {
    if (canBuild()) {
      const r = spawnSync('bash', [buildScript], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024, env: buildEnv() });
      harnessState = r.status === 0 ? stateAfterBuild() : buildFailure(r.status, `${r.stderr ?? ''}${r.error?.message ?? ''}`);
    } else {
      harnessState = stateAfterBuild();
    }
    ensured ??= harnessState === false ? Promise.resolve() : Promise.reject(new Error(harnessState));
    ensured.catch(() => {});
  }
  return checked(harnessState);
}

function buildEnv(): NodeJS.ProcessEnv {
  return { ...process.env, LIVESTICK_KERNEL_DIR: kernelDir() };
}

/** Builds (or checks the stamp of) the kernel artifacts, at most once per process; throws if unusable. */
export function ensureKernel(): Promise<void> {
  ensured ??= ensureKernelOnce();
  return ensured;
}

async function ensureKernelOnce(): Promise<void> {
  let state: false | string;
  if (canBuild()) {
    state = await new Promise<false | string>((resolve) => {
      execFile('bash', [buildScript], { maxBuffer: 64 * 1024 * 1024, env: buildEnv() }, (error, _stdout, stderr) => {
        resolve(error ? buildFailure(typeof error.code === 'number' ? error.code : null, `${stderr}${error.message}`) : stateAfterBuild());
      });
    });
  } else {
    state = stateAfterBuild();
  }
  harnessState ??= state;
  if (state) throw new Error(`kernel oracle unusable: ${state}`);
}

/** Splits a console log into the job's output and status; null when the END marker never appeared. */
export function parseJobConsole(log: string): { output: string; status: number } | null {
  const beginLine = `${JOB_BEGIN_MARKER}\n`;
  const begin = log.indexOf(beginLine);
  if (begin < 0) return null;
  const bodyStart = begin + beginLine.length;
  // The marker's own line break can land after a kernel message printed at power-off (serial
  // console interleaving: "@@LIVESTICK-JOB-END status=0@@[    7.22] reboot: Power down"), so
  // nothing is required after its closing @@.
  const endRe = /\n@@LIVESTICK-JOB-END status=(\d+)@@/g;
  endRe.lastIndex = bodyStart - 1;
  let last: RegExpExecArray | null = null;
  for (let m = endRe.exec(log); m !== null; m = endRe.exec(log)) last = m;
  if (last === null || last[1] === undefined) return null;
  return { output: log.slice(bodyStart, last.index), status: Number(last[1]) };
}

export function consoleTail(log: string, lines = CONSOLE_TAIL_LINES): string {
  const all = log.replace(/\n+$/, '').split('\n');
  return all.slice(-lines).join('\n');
}

function driveArg(path: string, readOnly: boolean): string {
  const file = path.replaceAll(',', ',,');
  return `file=${file},format=raw,if=virtio${readOnly ? ',readonly=on' : ''}`;
}

/** Boots the kernel once, runs `script` with `disks` attached, and returns what it printed. */
export async function runInKernel(opts: KernelJob): Promise<KernelJobResult> {
  const memoryMiB = opts.memoryMiB ?? 512;
  const timeoutMs = opts.timeoutMs ?? 120_000;
  if (opts.script.includes('\0')) throw new Error('runInKernel: the job script must not contain NUL bytes');
  for (const disk of opts.disks) {
    const size = statSync(disk.path).size;
    if (size === 0 || size % 512 !== 0) {
      throw new Error(`runInKernel: disk ${disk.path} is ${size} bytes; raw disks must be a non-zero multiple of 512`);
    }
  }
  await ensureKernel();
  const { vmlinuz, initramfs } = kernelArtifacts();
  const tmp = tempDir('livestick-kernel-');
  try {
    const scriptBytes = Buffer.from(opts.script, 'utf8');
    const jobSize = Math.max(JOB_DISK_MIN_BYTES, Math.ceil((scriptBytes.length + 1) / 512) * 512);
    const job = Buffer.alloc(jobSize);
    scriptBytes.copy(job);
    const jobPath = join(tmp.dir, 'job.img');
    writeFileSync(jobPath, job);

    const args = [
      '-accel', 'tcg',
      '-nographic',
      '-no-reboot',
      '-nic', 'none',
      '-m', String(memoryMiB),
      '-kernel', vmlinuz,
      '-initrd', initramfs,
      '-append', 'console=ttyS0 panic=-1 loglevel=1 quiet',
      '-drive', driveArg(jobPath, true),
      ...opts.disks.flatMap((d) => ['-drive', driveArg(d.path, d.readOnly === true)]),
    ];
    const { stdout, stderr, code, timedOut } = await runQemu(args, timeoutMs);
    const log = stdout.replaceAll('\r', '');
    const qemuErr = stderr.trim() ? `\nqemu stderr: ${stderr.trim()}` : '';
    if (timedOut) {
      throw new KernelHarnessError(`kernel job timed out after ${timeoutMs} ms (qemu killed)${qemuErr}`, log);
    }
    const parsed = parseJobConsole(log);
    if (parsed === null) {
      const what = log.includes(JOB_BEGIN_MARKER) ? 'the job started but never reported its end' : 'the job never started (boot failure?)';
      throw new KernelHarnessError(`kernel job failed: ${what}; qemu exit code ${code}${qemuErr}`, log);
    }
    return { ...parsed, log };
  } finally {
    tmp.cleanup();
  }
}

const liveQemus = new Set<ReturnType<typeof spawn>>();
process.once('exit', () => {
  for (const child of liveQemus) child.kill('SIGKILL');
});

function runQemu(args: string[], timeoutMs: number): Promise<{ stdout: string; stderr: string; code: number | null; timedOut: boolean }> {
  return new Promise((resolve, reject) => {
    const child = spawn('qemu-system-x86_64', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    liveQemus.add(child);
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let outBytes = 0;
    let timedOut = false;
    child.stdout.on('data', (chunk: Buffer) => {
      if (outBytes < MAX_LOG_BYTES) out.push(chunk);
      outBytes += chunk.length;
    });
    child.stderr.on('data', (chunk: Buffer) => err.push(chunk));
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      liveQemus.delete(child);
      reject(new Error(`cannot start qemu-system-x86_64: ${e.message}`));
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      liveQemus.delete(child);
      resolve({ stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8'), code, timedOut });
    });
  });
}
