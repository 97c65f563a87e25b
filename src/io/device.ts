/**
 * Block devices as Disks: a whole stick (/dev/sdX, /dev/mmcblkN, /dev/loopN; macOS /dev/rdiskN;
 * Windows \\.\PhysicalDriveN), opened with the right access mode, with its size and logical sector size,
 * and refused for writing while any of its partitions is mounted or it holds this host's own system.
 *
 * Design notes
 * - Size: a block device's stat size is 0. On Linux it comes from sysfs (/sys/dev/block/MAJ:MIN/size,
 *   in 512-byte units, and queue/logical_block_size); elsewhere by probing sector-aligned reads (a read
 *   at or past the end returns nothing): doubling, then a binary search, about 80 reads.
 * - In use (Linux): /proc/self/mountinfo names each mount's device as MAJ:MIN; the device and every
 *   partition under it in sysfs are compared with it, and with /proc/swaps. A mount at /, /boot,
 *   /boot/efi or /usr, or an active swap, means "this host's own system": refused even for a stick
 *   whose other partitions are free. macOS and Windows: the caller must unmount (diskutil unmountDisk,
 *   or taking the volume offline); the path rules are checked here, the OS refuses the rest.
 * - The parsers of /proc files are pure functions (tested on sample text).
 */
import { readFileSync, readSync, readdirSync, readlinkSync, statSync, existsSync } from 'node:fs';
import { basename, join } from 'node:path';
import { LivestickError, ExitCode, UsageError } from '../errors.ts';

export type DevicePathKind = 'linux-block' | 'macos-disk' | 'macos-rdisk' | 'windows-physical' | 'other';

/** What a path names by its form alone (the OS is not asked). */
export function classifyDevicePath(path: string, platform: NodeJS.Platform = process.platform): { kind: DevicePathKind; hint?: string } {
  if (platform === 'win32' || /^\\\\\.\\/.test(path)) {
    if (/^\\\\\.\\PhysicalDrive\d+$/i.test(path)) return { kind: 'windows-physical', hint: 'writes to a physical drive need every volume on it locked or offline, and sector-aligned I/O' };
    if (/^\\\\\.\\[A-Z]:$/i.test(path)) return { kind: 'other', hint: `${path} is a volume, not the whole stick: use \\\\.\\PhysicalDriveN (see Disk Management)` };
    return { kind: 'other' };
  }
  if (platform === 'darwin') {
    if (/^\/dev\/rdisk\d+$/.test(path)) return { kind: 'macos-rdisk' };
    if (/^\/dev\/disk\d+$/.test(path)) return { kind: 'macos-disk', hint: `${path.replace('/dev/disk', '/dev/rdisk')} (the raw device) is much faster` };
    if (/^\/dev\/r?disk\d+s\d+$/.test(path)) return { kind: 'other', hint: `${path} is a partition; the whole stick is ${path.replace(/s\d+$/, '')}` };
    return { kind: 'other' };
  }
  if (/^\/dev\/(sd[a-z]+|vd[a-z]+|nvme\d+n\d+|mmcblk\d+|loop\d+)$/.test(path)) return { kind: 'linux-block' };
  if (/^\/dev\/(sd[a-z]+\d+|vd[a-z]+\d+|nvme\d+n\d+p\d+|mmcblk\d+p\d+|loop\d+p\d+)$/.test(path)) {
    return { kind: 'linux-block', hint: `${path} is a partition; the whole stick is ${path.replace(/p?\d+$/, '')}` };
  }
  return { kind: 'other' };
}

export interface MountEntry {
  readonly majorMinor: string;
  readonly mountPoint: string;
  readonly fsType: string;
  readonly source: string;
}

/** Parses /proc/self/mountinfo (proc(5)): fields 3 (MAJ:MIN) and 5 (mount point), and after " - ": type and source. */
export function parseMountinfo(text: string): MountEntry[] {
  const out: MountEntry[] = [];
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    const [left, right] = line.split(' - ');
    const f = (left ?? '').split(' ');
    const r = (right ?? '').split(' ');
    if (f.length < 5 || !/^\d+:\d+$/.test(f[2] ?? '')) continue;
    out.push({ majorMinor: f[2] as string, mountPoint: unescapeMount(f[4] as string), fsType: r[0] ?? '', source: unescapeMount(r[1] ?? '') });
  }
  return out;
}

/** /proc/swaps: the device or file of each active swap area. */
export function parseSwaps(text: string): string[] {
  return text
    .split('\n')
    .slice(1)
    .map((l) => l.trim().split(/\s+/)[0] ?? '')
    .filter((p) => p !== '')
    .map(unescapeMount);
}

function unescapeMount(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

const HOST_SYSTEM_MOUNTS = new Set(['/', '/boot', '/boot/efi', '/efi', '/usr']);

export interface DeviceInfo {
  readonly path: string;
  readonly size: number;
  readonly logicalSectorSize: number;
  readonly model: string | undefined;
  /** Mounted partitions (or the device itself): which, and where. */
  readonly mounted: readonly { device: string; mountPoint: string }[];
  /** Why this device holds the running system (a mount at / or /boot, an active swap), if it does. */
  readonly hostSystem: readonly string[];
}

function majorMinorOf(rdev: number): string {
  const major = Math.floor(rdev / 256) & 0xfff;
  const minor = (rdev & 0xff) | (Math.floor(rdev / 4096) & ~0xff & 0xfffff);
  return `${major}:${minor}`;
}

const readText = (p: string): string | undefined => {
  try {
    return readFileSync(p, 'utf8').trim();
  } catch {
    return undefined;
  }
};

/** A Linux block device's sysfs directory, its partitions' MAJ:MIN and names. */
function sysfsOf(majorMinor: string): { dir: string; partitions: { majorMinor: string; name: string }[] } | undefined {
  const link = `/sys/dev/block/${majorMinor}`;
  if (!existsSync(link)) return undefined;
  const dir = join('/sys/dev/block', readlinkSync(link));
  const partitions: { majorMinor: string; name: string }[] = [];
  for (const name of readdirSync(dir)) {
    const sub = join(dir, name);
    if (existsSync(join(sub, 'partition'))) {
      const dev = readText(join(sub, 'dev'));
      if (dev) partitions.push({ majorMinor: dev, name });
    }
  }
  return { dir, partitions };
}

/** Size by probing aligned reads: the first offset that reads nothing is the end. */
export function probeSize(fd: number, sector = 512): number {
  const buf = Buffer.alloc(sector);
  const readable = (index: number): boolean => {
    try {
      return readSync(fd, buf, 0, sector, index * sector) > 0;
    } catch {
      return false;
    }
  };
  if (!readable(0)) return 0;
  let lo = 0;
  let hi = 1;
  while (readable(hi)) {
    lo = hi;
    hi *= 2;
    if (hi * sector > Number.MAX_SAFE_INTEGER) break;
  }
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    if (readable(mid)) lo = mid;
    else hi = mid;
  }
  return (lo + 1) * sector;
}

/** What is known about a block device, and whether it is in use (Linux; elsewhere sizes only). */
export function inspectDevice(path: string, fd?: number): DeviceInfo {
  const st = statSync(path);
  if (!st.isBlockDevice() && !st.isCharacterDevice()) throw new UsageError(`${path} is not a device`);
  const mm = majorMinorOf(st.rdev);
  const sys = process.platform === 'linux' ? sysfsOf(mm) : undefined;
  let size = 0;
  let logicalSectorSize = 512;
  let model: string | undefined;
  if (sys) {
    size = Number(readText(join(sys.dir, 'size')) ?? '0') * 512;
    const queue = existsSync(join(sys.dir, 'queue')) ? join(sys.dir, 'queue') : join(sys.dir, '..', 'queue');
    logicalSectorSize = Number(readText(join(queue, 'logical_block_size')) ?? '512') || 512;
    model = readText(join(sys.dir, 'device', 'model'));
  } else if (fd !== undefined) {
    size = probeSize(fd);
  }
  const mounted: { device: string; mountPoint: string }[] = [];
  const hostSystem: string[] = [];
  if (process.platform === 'linux') {
    const mine = new Map<string, string>([[mm, basename(path)], ...(sys?.partitions ?? []).map((p) => [p.majorMinor, p.name] as [string, string])]);
    for (const m of parseMountinfo(readText('/proc/self/mountinfo') ?? '')) {
      const dev = mine.get(m.majorMinor);
      if (dev === undefined) continue;
      mounted.push({ device: `/dev/${dev}`, mountPoint: m.mountPoint });
      if (HOST_SYSTEM_MOUNTS.has(m.mountPoint)) hostSystem.push(`/dev/${dev} is mounted at ${m.mountPoint}`);
    }
    for (const swap of parseSwaps(readText('/proc/swaps') ?? '')) {
      try {
        const s = statSync(swap);
        if (s.isBlockDevice() && mine.has(majorMinorOf(s.rdev))) hostSystem.push(`${swap} is an active swap area`);
      } catch {
        // A swap file on another device: not ours.
      }
    }
  }
  return { path, size, logicalSectorSize, model, mounted, hostSystem };
}

export class DeviceInUseError extends LivestickError {
  constructor(message: string, file: string) {
    super('DEVICE_IN_USE', ExitCode.failure, message, { file });
  }
}

/** Refuses to write a device that is mounted or holds this host's system, unless forced. */
export function checkWritableDevice(info: DeviceInfo, force = false): void {
  if (info.hostSystem.length > 0 && !force) {
    throw new DeviceInUseError(`${info.path} holds this computer's own system (${info.hostSystem.join('; ')}): writing it would break the running system; pass --force only if you are certain`, info.path);
  }
  if (info.mounted.length > 0 && !force) {
    throw new DeviceInUseError(`${info.path} has mounted partitions (${info.mounted.map((m) => `${m.device} at ${m.mountPoint}`).join(', ')}): unmount them first, or pass --force if you know better`, info.path);
  }
}
