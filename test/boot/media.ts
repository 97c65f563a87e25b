/**
 * The cached live media (scripts/media/build.sh) and the test sticks assembled from them as raw image
 * files with the real tools (sfdisk, mkfs.vfat, mtools, mke2fs -d), plus offline looks into a stick's
 * persistence with debugfs and mtools.
 *
 * Design notes
 * - Three layouts, one per boot scenario:
 *   (a) dracut, upper directory on ext4: p1 ISO9660 "LIVE" (UUID 2026-12-01-00-00-00-00) with
 *       LiveOS/squashfs.img (flat), p2 ext4 "LSPERSIST" with LiveOS/overlay-LIVE-2026-12-01-00-00-00-00/
 *       (the upper) and LiveOS/ovlwork/;
 *   (b) dracut, image file on FAT: one FAT32 "LIVE" partition with LiveOS/squashfs.img and an ext4
 *       image LiveOS/overlay-LIVE-1A2B-3C4D holding overlayfs/ (the upper) and ovlwork/;
 *   (c) Debian live-boot: p1 ISO9660 "LIVE" with live/filesystem.squashfs, p2 ext4 "persistence" with
 *       persistence.conf = "/ union" (live-boot makes rw/ (the upper) and work/ at the first boot);
 *   (d) as (b), from the Debian 13 medium (scripts/media/trixie.sh): dracut 106, LiveOS/squashfs.img an
 *       EROFS image made with Fedora 43's options (LZMA, 1 MiB pclusters, fragments).
 *   MBR tables, partitions at 1 MiB boundaries; images are sparse where the format allows.
 * - dracut 059 names the default overlay path after blkid's LABEL and UUID of the root=live: device
 *   (FAT: the serial; ISO9660: the modification date, fixed here with --modification-date).
 * - The live partition of (a) and (c) is ISO9660 as on real media: on FAT, Linux walks a file's cluster
 *   chain for each random read, which made the guest's first walk of the root ~3x slower under TCG.
 * - Every fixture id (FAT serial, ext4 UUIDs and hash seeds) is fixed, so sticks are reproducible.
 * - mediaStatus() is the skip reason for tests when the media are not built (and an error in CI, which
 *   builds them in .ci/run).
 */
import { copyFileSync, existsSync, mkdirSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { hasTool, run } from '../helpers/tools.ts';
import { tempDir } from '../helpers/tmp.ts';

const repoRoot = fileURLToPath(new URL('../../', import.meta.url));
const MiB = 1024 * 1024;

export const FAT_LABEL = 'LIVE';
export const FAT_SERIAL = '1A2B3C4D';
/** The FAT serial as blkid prints it (the UUID in dracut's overlay-LABEL-UUID). */
export const FAT_UUID = '1A2B-3C4D';
export const DRACUT_OVERLAY_NAME = `overlay-${FAT_LABEL}-${FAT_UUID}`;
export const PERSIST_LABEL = 'LSPERSIST';
const EXT4_UUID = '4c495645-5354-4943-4b00-000000000001';
const EXT4_HASH_SEED = '4c495645-5354-4943-4b00-0000000000ff';

export function mediaDir(): string {
  return process.env.LIVESTICK_MEDIA_DIR ?? join(repoRoot, '.cache', 'media');
}

/** The Debian 13 medium of scripts/media/trixie.sh. */
export function trixieMediaDir(): string {
  return process.env.LIVESTICK_TRIXIE_MEDIA_DIR ?? join(repoRoot, '.cache', 'media-trixie');
}

export interface VariantMedia {
  kernel: string;
  initrd: string;
  /** The flat base (dracut: squashfs.img, SquashFS or for dracut-erofs EROFS; live-boot: filesystem.squashfs). */
  squashfs: string;
  kernelVersion: string;
}

export function dracutMedia(): VariantMedia {
  const d = join(mediaDir(), 'dracut');
  return { kernel: join(d, 'vmlinuz'), initrd: join(d, 'initrd.img'), squashfs: join(d, 'squashfs.img'), kernelVersion: readVersion(d) };
}

export function liveBootMedia(): VariantMedia {
  const d = join(mediaDir(), 'live-boot');
  return { kernel: join(d, 'vmlinuz'), initrd: join(d, 'initrd.img'), squashfs: join(d, 'filesystem.squashfs'), kernelVersion: readVersion(d) };
}

/** Debian 13's dracut 106 with an EROFS squashfs.img (scripts/media/trixie.sh). */
export function dracutErofsMedia(): VariantMedia {
  const d = trixieMediaDir();
  return { kernel: join(d, 'vmlinuz'), initrd: join(d, 'initrd.img'), squashfs: join(d, 'squashfs.img'), kernelVersion: readVersion(d) };
}

export type MediaVariant = 'dracut' | 'live-boot' | 'dracut-erofs';

export function variantMedia(variant: MediaVariant): VariantMedia {
  return variant === 'dracut' ? dracutMedia() : variant === 'live-boot' ? liveBootMedia() : dracutErofsMedia();
}

function readVersion(dir: string): string {
  const f = join(dir, 'kernel-version');
  return existsSync(f) ? readFileSync(f, 'utf8').trim() : '';
}

/**
 * For `describe(name, { skip: mediaStatus('dracut') }, …)`: false when the media and tools are there, a
 * reason to skip otherwise; throws in CI (CI set), where .ci/run builds the media first.
 */
export function mediaStatus(variant: MediaVariant): false | string {
  const m = variantMedia(variant);
  let reason: string | false = false;
  const tools = ['qemu-system-x86_64', 'sfdisk', 'mkfs.vfat', 'mcopy', 'mmd', 'mke2fs', 'debugfs', 'e2fsck', 'tar', 'xorriso'];
  const missing = tools.filter((t) => !hasTool(t));
  if (![m.kernel, m.initrd, m.squashfs].every((f) => existsSync(f))) {
    reason = variant === 'dracut-erofs'
      ? `live media (${variant}) not built in ${trixieMediaDir()}: run scripts/trixie/build.sh, then scripts/media/trixie.sh, as root`
      : `live media (${variant}) not built in ${mediaDir()}: run scripts/media/build.sh as root on Debian 12`;
  } else if (missing.length > 0) {
    reason = `boot tests need ${missing.join(', ')}`;
  }
  if (reason && process.env.CI) throw new Error(`CI must have the live media: ${reason}`);
  return reason;
}

export interface Partition {
  /** Byte offset and length in the stick image. */
  start: number;
  size: number;
}

export interface TestStick {
  layout: 'a' | 'b' | 'c' | 'd';
  /** The raw image (booted in place; copy it to keep a state). */
  path: string;
  partitions: Partition[];
  kernel: string;
  initrd: string;
  /** Kernel arguments for the boot code. */
  append: string;
  /** Where the upper lives: partition index and path on it; for (b) the image file on the FAT partition. */
  persistence: {
    partition: number;
    /** (b) the ext4 image file on the FAT partition; undefined when the ext4 is the partition itself. */
    imageFile?: string;
    /** The upper directory inside that ext4. */
    upper: string;
    work: string;
  };
}

function align(n: number, to = MiB): number {
  return Math.ceil(n / to) * to;
}

/**
 * FAT32 with 32 KiB clusters on at least 4 GiB (sparse): FAT32 needs 65525 clusters, and Linux's vfat
 * reaches a byte of a file by walking its cluster chain from the nearest of a few cached positions, so
 * small clusters make random reads of squashfs.img (and of an overlay image) very slow under TCG
 * (measured: 512-byte clusters 133 s, 16 KiB 55 s for the manifest of the 4782-entry root).
 */
function mkfat(path: string, bytes: number): void {
  rmSync(path, { force: true });
  const size = Math.max(bytes, 4096 * MiB);
  run('mkfs.vfat', ['-F', '32', '-s', '64', '-n', FAT_LABEL, '-i', FAT_SERIAL, '-C', path, String(size / 1024)]);
}

/** The ISO9660 UUID blkid reports for ISO_DATE (xorriso's --modification-date). */
export const ISO_DATE = '2026120100000000';
export const ISO_UUID = '2026-12-01-00-00-00-00';
export const DRACUT_ISO_OVERLAY_NAME = `overlay-${FAT_LABEL}-${ISO_UUID}`;

/** An ISO9660 (+Rock Ridge) live partition: files contiguous, so random reads cost no chain walks. */
function mkiso(path: string, label: string, files: [string, string][]): void {
  rmSync(path, { force: true });
  run('xorriso', ['-as', 'mkisofs', '-quiet', '-V', label, '-R', `--modification-date=${ISO_DATE}`, '-graft-points', '-o', path, ...files.map(([src, dst]) => `${dst}=${src}`)]);
  const size = statSync(path).size;
  if (size % 512 !== 0) truncateSync(path, align(size, 512));
}

function mcopyTo(image: string, dirs: string[], files: [string, string][]): void {
  for (const d of dirs) run('mmd', ['-i', image, `::/${d}`]);
  for (const [src, dst] of files) run('mcopy', ['-i', image, src, `::/${dst}`]);
}

function mkext4(path: string, bytes: number, label: string, rootDir: string, uuidSuffix: string): void {
  rmSync(path, { force: true });
  run('mke2fs', [
    '-q', '-F', '-t', 'ext4', '-L', label, '-U', EXT4_UUID.slice(0, -1) + uuidSuffix,
    '-E', `hash_seed=${EXT4_HASH_SEED},root_owner=0:0,lazy_itable_init=0,lazy_journal_init=0`,
    '-d', rootDir, path, `${bytes / 1024}k`,
  ], {});
}

/** Writes partition images into a fresh MBR stick image. */
function assemble(stick: string, parts: { image: string; type: string }[]): Partition[] {
  const layout: Partition[] = [];
  let at = MiB;
  for (const p of parts) {
    const size = statSync(p.image).size;
    layout.push({ start: at, size });
    at += align(size);
  }
  rmSync(stick, { force: true });
  writeFileSync(stick, '');
  truncateSync(stick, at + MiB);
  const script = ['label: dos', 'label-id: 0x4c495645', ...layout.map((l, i) => `start=${l.start / 512}, size=${l.size / 512}, type=${parts[i]!.type}`)].join('\n');
  run('sfdisk', ['-q', '--no-reread', '--no-tell-kernel', stick], { input: `${script}\n` });
  for (const [i, p] of parts.entries()) {
    run('dd', [`if=${p.image}`, `of=${stick}`, 'bs=1M', `seek=${layout[i]!.start / MiB}`, 'conv=notrunc,sparse', 'status=none']);
  }
  return layout;
}

const DRACUT_ARGS = `root=live:LABEL=${FAT_LABEL} rd.live.image rd.live.overlay.overlayfs rd.shell=0 rd.emergency=poweroff loglevel=4`;

/** (a) dracut, upper directory on an ext4 partition. */
export function buildStickA(dir: string, options: { persistBytes?: number } = {}): TestStick {
  const m = dracutMedia();
  const t = tempDir('livestick-stick-');
  try {
    const iso = join(t.dir, 'p1.iso');
    mkiso(iso, FAT_LABEL, [[m.squashfs, 'LiveOS/squashfs.img']]);
    const tree = join(t.dir, 'p2');
    mkdirSync(join(tree, 'LiveOS', DRACUT_ISO_OVERLAY_NAME), { recursive: true, mode: 0o755 });
    mkdirSync(join(tree, 'LiveOS', 'ovlwork'), { mode: 0o755 });
    const ext = join(t.dir, 'p2.img');
    mkext4(ext, options.persistBytes ?? 384 * MiB, PERSIST_LABEL, tree, '2');
    const path = join(dir, 'stick-a.img');
    const partitions = assemble(path, [{ image: iso, type: 'da' }, { image: ext, type: '83' }]);
    return {
      layout: 'a', path, partitions, kernel: m.kernel, initrd: m.initrd,
      append: `${DRACUT_ARGS} rd.live.overlay=LABEL=${PERSIST_LABEL}`,
      persistence: { partition: 1, upper: `/LiveOS/${DRACUT_ISO_OVERLAY_NAME}`, work: '/LiveOS/ovlwork' },
    };
  } finally {
    t.cleanup();
  }
}

/** (b) dracut, upper inside an ext4 image file on the FAT live partition. */
export function buildStickB(dir: string, options: { overlayBytes?: number } = {}): TestStick {
  return fatImageStick('b', dracutMedia(), dir, options);
}

/** (d) (b)'s layout from the Debian 13 medium: dracut 106, an EROFS LiveOS/squashfs.img. */
export function buildStickD(dir: string, options: { overlayBytes?: number } = {}): TestStick {
  return fatImageStick('d', dracutErofsMedia(), dir, options);
}

function fatImageStick(layout: 'b' | 'd', m: VariantMedia, dir: string, options: { overlayBytes?: number }): TestStick {
  const t = tempDir('livestick-stick-');
  try {
    const overlayBytes = options.overlayBytes ?? 320 * MiB;
    const tree = join(t.dir, 'ovl');
    mkdirSync(join(tree, 'overlayfs'), { recursive: true, mode: 0o755 });
    mkdirSync(join(tree, 'ovlwork'), { mode: 0o755 });
    const img = join(t.dir, DRACUT_OVERLAY_NAME);
    mkext4(img, overlayBytes, 'OVERLAY', tree, '3');
    const fat = join(t.dir, 'p1.img');
    mkfat(fat, align(statSync(m.squashfs).size + overlayBytes + 48 * MiB));
    mcopyTo(fat, ['LiveOS'], [[m.squashfs, 'LiveOS/squashfs.img'], [img, `LiveOS/${DRACUT_OVERLAY_NAME}`]]);
    const path = join(dir, `stick-${layout}.img`);
    const partitions = assemble(path, [{ image: fat, type: 'c' }]);
    return {
      layout, path, partitions, kernel: m.kernel, initrd: m.initrd,
      append: `${DRACUT_ARGS} rd.live.overlay=LABEL=${FAT_LABEL}`,
      persistence: { partition: 0, imageFile: `/LiveOS/${DRACUT_OVERLAY_NAME}`, upper: '/overlayfs', work: '/ovlwork' },
    };
  } finally {
    t.cleanup();
  }
}

/** (c) Debian live-boot with a `persistence` ext4 partition holding `/ union`. */
export function buildStickC(dir: string, options: { persistBytes?: number } = {}): TestStick {
  const m = liveBootMedia();
  const t = tempDir('livestick-stick-');
  try {
    const iso = join(t.dir, 'p1.iso');
    mkiso(iso, FAT_LABEL, [[m.squashfs, 'live/filesystem.squashfs']]);
    const tree = join(t.dir, 'p2');
    mkdirSync(tree);
    writeFileSync(join(tree, 'persistence.conf'), '/ union\n', { mode: 0o644 });
    const ext = join(t.dir, 'p2.img');
    mkext4(ext, options.persistBytes ?? 384 * MiB, 'persistence', tree, '4');
    const path = join(dir, 'stick-c.img');
    const partitions = assemble(path, [{ image: iso, type: 'da' }, { image: ext, type: '83' }]);
    return {
      layout: 'c', path, partitions, kernel: m.kernel, initrd: m.initrd,
      // Measured with Debian 12's live-boot: /livestick-job (a script) as init= straight from
      // initramfs-tools' run-init never started (soft lockups), while /bin/sh as init= running it works,
      // so init=/bin/sh -- /livestick-job (the later init= wins). A bare `persistence` word would then
      // become sh's script argument; live-boot takes its options from LIVE_BOOT_CMDLINE when set, and
      // a name=value parameter reaches init's environment, not its arguments.
      append: 'boot=live LIVE_BOOT_CMDLINE="boot=live persistence" loglevel=4 init=/bin/sh -- /livestick-job',
      persistence: { partition: 1, upper: '/rw', work: '/work' },
    };
  } finally {
    t.cleanup();
  }
}

// --- offline looks -------------------------------------------------------------------------------------

/** Copies the ext4 filesystem holding the stick's upper into `out` (a partition slice, or (b)'s image file). */
export function extractPersistenceFs(stick: TestStick, out: string): string {
  const p = stick.partitions[stick.persistence.partition]!;
  if (stick.persistence.imageFile === undefined) {
    run('dd', [`if=${stick.path}`, `of=${out}`, 'bs=1M', `skip=${p.start / MiB}`, `count=${Math.ceil(p.size / MiB)}`, 'conv=sparse', 'status=none']);
    truncateSync(out, p.size);
  } else {
    rmSync(out, { force: true });
    run('mcopy', ['-n', '-i', `${stick.path}@@${p.start}`, `::${stick.persistence.imageFile}`, out]);
  }
  return out;
}

export interface UpperNode {
  path: string;
  kind: 'f' | 'd' | 'l' | 'c' | 'b' | 'p' | 's';
  mode: number;
  size: number;
}

const KIND_OF_TYPE: Record<number, UpperNode['kind']> = { 0o100000: 'f', 0o040000: 'd', 0o120000: 'l', 0o020000: 'c', 0o060000: 'b', 0o010000: 'p', 0o140000: 's' };

/** Every node under `dir` of an ext4 image, read with debugfs (one run per directory level). */
export function listExt4Tree(image: string, dir: string): UpperNode[] {
  const out: UpperNode[] = [];
  let level = [dir];
  while (level.length > 0) {
    const cmds = level.map((d) => `ls -p "${d}"`).join('\n');
    const r = run('debugfs', ['-f', '-', image], { input: `${cmds}\n` });
    const next: string[] = [];
    let current = '';
    for (const line of r.stdout.split('\n')) {
      const cmd = /^debugfs: ls -p "(.*)"$/.exec(line);
      if (cmd) {
        current = cmd[1]!;
        continue;
      }
      const m = /^\/(\d+)\/(\d+)\/(\d+)\/(\d+)\/(.*)\/(\d*)\/$/.exec(line);
      if (!m) continue;
      const name = m[5]!;
      if (name === '.' || name === '..') continue;
      const mode = parseInt(m[2]!, 8);
      const kind = KIND_OF_TYPE[mode & 0o170000] ?? 'f';
      const path = `${current === '/' ? '' : current}/${name}`;
      out.push({ path, kind, mode: mode & 0o7777, size: Number(m[6] || 0) });
      if (kind === 'd') next.push(path);
    }
    level = next;
  }
  return out.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

/** The stick's upper directory as paths relative to it ("/usr/bin/hello"), with e2fsck -fn's verdict. */
export function inspectUpper(stick: TestStick): { nodes: UpperNode[]; fsckClean: boolean; fsckOutput: string } {
  const t = tempDir('livestick-upper-');
  try {
    const img = extractPersistenceFs(stick, join(t.dir, 'persist.img'));
    const fsck = run('e2fsck', ['-fn', img], { allowFail: true });
    const base = stick.persistence.upper;
    const nodes = listExt4Tree(img, base).map((n) => ({ ...n, path: n.path.slice(base.length) }));
    return { nodes, fsckClean: fsck.status === 0, fsckOutput: fsck.stdout + fsck.stderr };
  } finally {
    t.cleanup();
  }
}

/** A copy of a stick image (to keep the state after a boot, e.g. before an offline merge). */
export function copyStick(stick: TestStick, path: string): TestStick {
  copyFileSync(stick.path, path);
  return { ...stick, path };
}
