/**
 * Boots a test stick under qemu TCG with the distro's kernel and initramfs, runs one job in the booted
 * system and returns what it printed and left behind.
 *
 * Design notes
 * - The media's root has /livestick-job as init= (scripts/media/livestick-job). It finds the job disk
 *   (a second virtio disk starting with JOB_DISK_MAGIC), runs the script that follows the magic line,
 *   prints the BEGIN/END markers of test/kernel/harness.ts around it, writes a tar of $LIVESTICK_OUT at
 *   byte 1 MiB of the job disk, leaves the filesystems read-only and powers off (sysrq o).
 * - Big results (manifests) travel through the job disk, not the serial console: a 16550 under TCG is
 *   slow and a console can interleave kernel messages with them.
 * - The serial console goes straight to a log file; it is deleted after a boot that reported its end and
 *   kept (its path in the error) otherwise. A hard timeout kills qemu.
 * - Only the timeout is timing-dependent; results come from the markers and the job disk.
 */
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readFileSync, readSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { consoleTail, parseJobConsole } from '../kernel/harness.ts';
import { tempDir } from '../helpers/tmp.ts';

export const JOB_DISK_MAGIC = '@@LIVESTICK-JOB-DISK@@';
const JOB_SCRIPT_MAX = 1024 * 1024;

export interface BootOptions {
  /** Raw stick image, attached as the first virtio disk (written in place). */
  stick: string;
  kernel: string;
  initrd: string;
  /** Kernel arguments of the boot code (root=…); console, panic and init= are added. */
  append: string;
  /** Shell script run by /bin/sh in the booted root; $LIVESTICK_OUT is a directory whose files come back. */
  job: string;
  timeoutMs?: number;
  memoryMiB?: number;
  /** Room for the job's output tar (default 64 MiB). */
  outBytes?: number;
  /** A name for the console log file. */
  name?: string;
}

export interface BootMarkers {
  begin: boolean;
  end: boolean;
}

export interface BootResult {
  /** The job's exit status (from the END marker). */
  status: number;
  /** What the job printed between the markers. */
  output: string;
  markers: BootMarkers;
  /** The whole console log, `\r` removed. */
  log: string;
  /** A directory holding the files the job left in $LIVESTICK_OUT; removed by cleanup(). */
  outDir: string;
  /** Wall time of the qemu run. */
  wallMs: number;
  /** Seconds since kernel start when the job began and ended, as the runner printed them. */
  uptimes: number[];
  cleanup(): void;
}

export class BootError extends Error {
  readonly logPath: string;
  constructor(message: string, log: string, logPath: string) {
    super(`${message}\nconsole log kept at ${logPath}\n--- last 40 console lines ---\n${consoleTail(log)}`);
    this.name = 'BootError';
    this.logPath = logPath;
  }
}

export function logDir(): string {
  return process.env.LIVESTICK_BOOT_LOG_DIR ?? join(tmpdir(), 'livestick-boot-logs');
}

function driveArg(path: string): string {
  return `file=${path.replaceAll(',', ',,')},format=raw,if=virtio,cache=unsafe`;
}

function makeJobDisk(path: string, job: string, outBytes: number): void {
  const script = Buffer.from(`${JOB_DISK_MAGIC}\n${job}\n`, 'utf8');
  if (script.includes(0)) throw new Error('bootStick: the job must not contain NUL bytes');
  if (script.length >= JOB_SCRIPT_MAX) throw new Error(`bootStick: the job is ${script.length} bytes; at most ${JOB_SCRIPT_MAX - 1}`);
  writeFileSync(path, script);
  const fd = openSync(path, 'r+');
  try {
    // sparse: the size only
    writeSync(fd, Buffer.alloc(1), 0, 1, JOB_SCRIPT_MAX + outBytes - 1);
  } finally {
    closeSync(fd);
  }
}

function readJobOutput(jobPath: string, outDir: string): void {
  const size = statSync(jobPath).size - JOB_SCRIPT_MAX;
  const fd = openSync(jobPath, 'r');
  const buf = Buffer.alloc(size);
  try {
    readSync(fd, buf, 0, size, JOB_SCRIPT_MAX);
  } finally {
    closeSync(fd);
  }
  // The tar's end is two zero blocks; an untouched region is all zeros (an empty archive).
  const r = spawnSync('tar', ['-x', '-C', outDir, '-f', '-'], { input: buf, maxBuffer: 1 << 20 });
  if (r.status !== 0) throw new Error(`bootStick: the job disk's output is not a tar: ${r.stderr.toString().trim()}`);
}

const liveQemus = new Set<ReturnType<typeof spawn>>();
process.once('exit', () => {
  for (const child of liveQemus) child.kill('SIGKILL');
});

/** Boots once: qemu TCG, -nographic -no-reboot, the stick and a job disk as virtio disks. */
export async function bootStick(opts: BootOptions): Promise<BootResult> {
  const timeoutMs = opts.timeoutMs ?? 10 * 60_000;
  const outBytes = opts.outBytes ?? 64 * 1024 * 1024;
  const tmp = tempDir('livestick-boot-');
  const jobPath = join(tmp.dir, 'job.img');
  makeJobDisk(jobPath, opts.job, outBytes);
  mkdirSync(logDir(), { recursive: true });
  const logPath = join(logDir(), `${opts.name ?? 'boot'}-${new Date().toISOString().replaceAll(':', '-')}-${process.pid}.log`);
  const args = [
    '-accel', 'tcg',
    '-nographic',
    '-no-reboot',
    '-nic', 'none',
    '-m', String(opts.memoryMiB ?? 1536),
    '-kernel', opts.kernel,
    '-initrd', opts.initrd,
    '-append', `console=ttyS0 panic=-1 init=/livestick-job ${opts.append}`,
    '-drive', driveArg(opts.stick),
    '-drive', driveArg(jobPath),
  ];
  const started = Date.now();
  const logFd = openSync(logPath, 'w');
  let timedOut = false;
  let code: number | null;
  let qemuErr = '';
  try {
    code = await new Promise<number | null>((resolve, reject) => {
      const child = spawn('qemu-system-x86_64', args, { stdio: ['ignore', logFd, 'pipe'] });
      liveQemus.add(child);
      const err: Buffer[] = [];
      child.stderr?.on('data', (c: Buffer) => err.push(c));
      const timer = setTimeout(() => {
        timedOut = true;
        child.kill('SIGKILL');
      }, timeoutMs);
      child.on('error', (e) => {
        clearTimeout(timer);
        liveQemus.delete(child);
        reject(new Error(`cannot start qemu-system-x86_64: ${e.message}`));
      });
      child.on('close', (c) => {
        clearTimeout(timer);
        liveQemus.delete(child);
        qemuErr = Buffer.concat(err).toString('utf8').trim();
        resolve(c);
      });
    });
  } finally {
    closeSync(logFd);
  }
  const wallMs = Date.now() - started;
  const log = readFileSync(logPath, 'utf8').replaceAll('\r', '');
  const fail = (why: string): never => {
    tmp.cleanup();
    throw new BootError(`${opts.name ?? 'boot'}: ${why} after ${(wallMs / 1000).toFixed(0)} s; qemu exit ${code}${qemuErr ? `, stderr: ${qemuErr}` : ''}`, log, logPath);
  };
  if (timedOut) fail(`timed out (qemu killed at ${timeoutMs} ms)`);
  const parsed = parseJobConsole(log);
  const markers = { begin: log.includes('\n@@LIVESTICK-JOB-BEGIN@@\n'), end: parsed !== null };
  if (parsed === null) fail(markers.begin ? 'the job started but never reported its end' : 'the job never started (boot failure?)');
  const outDir = join(tmp.dir, 'out');
  mkdirSync(outDir);
  try {
    readJobOutput(jobPath, outDir);
  } catch (e) {
    fail((e as Error).message);
  }
  rmSync(jobPath);
  rmSync(logPath);
  const uptimes = [...log.matchAll(/^livestick-job: uptime ([0-9.]+) s$/gm)].map((m) => Number(m[1]));
  return { status: parsed!.status, output: parsed!.output, markers, log, outDir, wallMs, uptimes, cleanup: tmp.cleanup };
}
