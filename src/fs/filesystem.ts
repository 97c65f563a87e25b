/**
 * The one filesystem interface the medium model is written against (round 2: whole sticks). A host
 * directory, FAT, exFAT, ext4, ISO9660, SquashFS and EROFS each implement it in their own folder, so
 * the locator and the medium operations are written once.
 *
 * Design notes
 * - Paths are absolute within the filesystem, '/'-separated, already split on '/' by the callers'
 *   conventions; no '.' or '..' resolution is done by implementations beyond rejecting them.
 * - `stat` never follows a final symlink (lstat semantics); filesystems without symlinks never return
 *   one. Times are seconds + nanoseconds; a filesystem without a field reports what it has (FAT: local
 *   time as written, 2-second mtime resolution; ISO9660: the recording time).
 * - Files are read as Disks (`openFile`): every layer above (SquashFS inside FAT, ext4 inside an
 *   image file on FAT, LUKS) runs on them unchanged.
 * - Writable filesystems order their writes so a power loss leaves at worst lost space, never a
 *   corrupt tree (FAT: data, then both FAT copies, then the directory entry; deletes in reverse).
 *   `rename` replaces an existing target as POSIX does where the format allows; `renameIsAtomic`
 *   says whether a crash can leave both names or neither.
 */
import type { Disk } from '../io/disk.ts';

export type NodeKind = 'file' | 'dir' | 'symlink' | 'chardev' | 'blockdev' | 'fifo' | 'socket';

export interface FsTime {
  readonly sec: number;
  readonly nsec: number;
}

export interface FsStat {
  readonly kind: NodeKind;
  readonly size: number;
  /** Bytes the file really occupies where the format can tell (host: st_blocks × 512; a sparse file has fewer than its size). */
  readonly allocatedBytes?: number;
  /** Permission bits (and setuid/setgid/sticky); filesystems without them report 0o755 for dirs, 0o644 for files. */
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  readonly nlink: number;
  readonly mtime: FsTime;
  readonly atime?: FsTime;
  readonly ctime?: FsTime;
  /** Inode number, unique within this filesystem (two names with one `ino` are hard links), where the format has one. */
  readonly ino?: number;
  /** Device number of a char or block device (an overlayfs whiteout is char 0/0). */
  readonly rdev?: { readonly major: number; readonly minor: number };
}

/** One extended attribute: the full name with its namespace ("trusted.overlay.opaque") and the raw value. */
export interface FsXattr {
  readonly name: string;
  readonly value: Uint8Array;
}

export interface FsEntry {
  readonly name: string;
  readonly kind: NodeKind;
}

export interface FsSpace {
  readonly totalBytes: number;
  readonly freeBytes: number;
}

export interface FileSystem {
  /** 'fat12' | 'fat16' | 'fat32' | 'exfat' | 'iso9660' | 'ext4' | 'squashfs' | 'erofs' | 'host' … */
  readonly type: string;
  readonly label: string | undefined;
  /** The volume's id as blkid prints it (FAT: "ABCD-1234"; ext4: a UUID). */
  readonly uuid: string | undefined;
  readonly readOnly: boolean;
  /**
   * The volume was not closed cleanly (a crash or a pulled stick while it was written: FAT's dirty
   * flag). Opening it for writing repairs what such a stop can leave (lost space, unequal FAT copies,
   * orphaned name entries) before the first change.
   */
  readonly dirty?: boolean;
  stat(path: string): Promise<FsStat>;
  readdir(path: string): Promise<FsEntry[]>;
  readlink(path: string): Promise<string>;
  /** Extended attributes of the node itself (a symlink's own), where the format has them (absent: FAT, exFAT, ISO9660). */
  xattrs?(path: string): Promise<readonly FsXattr[]>;
  /** A file's content as a read-only Disk. */
  openFile(path: string): Promise<Disk>;
  space(): Promise<FsSpace>;
  close(): Promise<void>;
}

/** A file opened for writing: a Disk whose size can change (grow or shrink; growth stays contiguous where it can). */
export interface WritableFile extends Disk {
  resize(size: number): Promise<void>;
}

export interface CreateFileOptions {
  size: number;
  mode?: number;
  /**
   * The caller writes every byte before anything reads it (an image being built): reused space need
   * not be cleared first. A crash may then leave old bytes in the file, so use it only for files that
   * are temporary until renamed into place.
   */
  uninitialized?: boolean;
}

export interface WritableFileSystem extends FileSystem {
  /**
   * Whether a crash during `rename` leaves exactly one of the two names (POSIX: yes; FAT, exFAT: no —
   * both names can be left naming the same data; repeating the rename then finishes it, and `unlink`
   * of either name never frees data another entry of the same directory still names).
   */
  readonly renameIsAtomic: boolean;
  mkdir(path: string, options?: { mode?: number }): Promise<void>;
  /** Creates a file of `size` bytes (contiguous where the format allows; fails if it exists) and returns it writable. */
  createFile(path: string, options: CreateFileOptions): Promise<WritableFile>;
  /** Opens an existing file for writing in place. */
  openFileForWriting(path: string): Promise<WritableFile>;
  writeFile(path: string, data: Uint8Array, options?: { mode?: number }): Promise<void>;
  /** Renames, replacing an existing file at `to` in one step where the format allows it. */
  rename(from: string, to: string): Promise<void>;
  unlink(path: string): Promise<void>;
  rmdir(path: string): Promise<void>;
  /** A second name for a file, where the format has hard links (host, ext4); absent elsewhere. */
  link?(existing: string, path: string): Promise<void>;
  /** Permission bits and owner, where the format keeps them; absent elsewhere. */
  setMode?(path: string, mode: number): Promise<void>;
  setOwner?(path: string, uid: number, gid: number): Promise<void>;
  /**
   * Creates or replaces one extended attribute of the node itself (a symlink's own, never its
   * target's), by its full name ("trusted.overlay.opaque", "security.selinux", "user.x"), where the
   * format has them (absent: FAT, exFAT). Fails with the typed error of what the host or format refuses:
   * PermissionError for trusted.* without privilege (host) and for user.* on anything but a file or
   * a directory (Linux's rule; ext4 keeps it too), UnsupportedFeatureError where the host filesystem
   * has no xattrs.
   */
  setXattr?(path: string, name: string, value: Uint8Array): Promise<void>;
  /** Removes one extended attribute of the node itself; NotFoundError when it has none of that name. */
  removeXattr?(path: string, name: string): Promise<void>;
  /** Makes every completed change durable (files written, directories changed). */
  flush(): Promise<void>;
  /**
   * Removes a directory tree (or one non-directory) in as few durable steps as the format allows
   * (ext4: a few hundred names per journal transaction); nothing when the path is missing. A crash
   * leaves part of the tree. Absent: the caller removes it name by name.
   */
  removeTree?(path: string): Promise<void>;
}
