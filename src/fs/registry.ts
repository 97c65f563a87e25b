/**
 * Which filesystem a Disk holds, and opening it as the common FileSystem. Each filesystem folder
 * contributes one entry: the signature names (io/signature.ts) it answers to and an opener; the
 * locator never names a filesystem itself.
 */
import type { Disk } from '../io/disk.ts';
import type { FileSystem } from './filesystem.ts';

export interface OpenFsOptions {
  /** Open for writing (a WritableFileSystem) where the format's folder supports it; read-only otherwise. */
  readonly write?: boolean;
}

interface FsEntryPoint {
  /** Matches a signature name from probeSignatures ("ext4", "squashfs", "vfat (FAT32)", …). */
  readonly matches: (signature: string) => boolean;
  readonly open: (disk: Disk, options: OpenFsOptions) => Promise<FileSystem>;
}

const FILESYSTEMS: readonly FsEntryPoint[] = [
  {
    matches: (s) => /^ext[234]$/.test(s),
    open: async (disk, o) => {
      if (o.write) return (await import('./ext4/writable.ts')).Ext4WritableFileSystem.open(disk);
      const [{ Ext4 }, { Ext4FileSystem }] = await Promise.all([import('./ext4/fs.ts'), import('./ext4/filesystem.ts')]);
      return new Ext4FileSystem(await Ext4.open(disk));
    },
  },
  {
    matches: (s) => s === 'squashfs',
    open: async (disk) => {
      const [{ SquashfsReader }, { SquashfsFileSystem }] = await Promise.all([import('./squashfs/reader.ts'), import('./squashfs/filesystem.ts')]);
      return new SquashfsFileSystem(await SquashfsReader.open(disk), disk.size);
    },
  },
  {
    matches: (s) => s === 'erofs',
    open: async (disk) => {
      const [{ ErofsReader }, { ErofsFileSystem }] = await Promise.all([import('./erofs/reader.ts'), import('./erofs/filesystem.ts')]);
      return new ErofsFileSystem(await ErofsReader.open(disk));
    },
  },
  {
    matches: (s) => s.startsWith('vfat'),
    open: async (disk, o) => (await import('./fat/index.ts')).FatFs.open(disk, { readOnly: !o.write }),
  },
  {
    matches: (s) => s === 'iso9660',
    open: async (disk) => (await import('./iso9660/index.ts')).Iso9660Fs.open(disk),
  },
  {
    matches: (s) => s === 'exfat',
    open: async (disk, o) => (await import('./exfat/index.ts')).ExfatFs.open(disk, { readOnly: !o.write }),
  },
];

/** Whether a FileSystem can be written (the writable formats' classes implement WritableFileSystem). */
export function isWritable(fs: FileSystem): fs is import('./filesystem.ts').WritableFileSystem {
  return !fs.readOnly && typeof (fs as { rename?: unknown }).rename === 'function';
}

/** Opens the first filesystem one of the signatures names, or undefined when none is supported. */
export async function openFileSystem(disk: Disk, signatures: readonly string[], options: OpenFsOptions = {}): Promise<{ fs: FileSystem; signature: string } | undefined> {
  for (const signature of signatures) {
    const entry = FILESYSTEMS.find((f) => f.matches(signature));
    if (entry) return { fs: await entry.open(disk, options), signature };
  }
  return undefined;
}
