/** Copies a host file or directory tree into an ext4 filesystem (modes, owners, times, xattrs, hard links, devices). */
import { createReadStream } from 'node:fs';
import { lstat, readFile, readdir, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { fromSystemError } from '../../errors.ts';
import { readHostXattrs } from '../../io/xattr.ts';
import type { Timestamp } from './inode.ts';
import type { Ext4Writer } from './writer.ts';

export interface CopyStats {
  files: number;
  directories: number;
  symlinks: number;
  hardLinks: number;
  others: number;
  bytes: number;
}

/** A host stat time (nanoseconds, as `stat(…, { bigint: true })` gives it) as an ext4 timestamp. */
export function timestampFromNs(ns: bigint): Timestamp {
  const sec = ns / 1_000_000_000n;
  return { sec: Number(sec), nsec: Number(ns - sec * 1_000_000_000n) };
}

/** A host file's content in 1 MiB pieces, counting bytes as they are read. */
export async function* hostFileChunks(path: string, onBytes: (n: number) => void): AsyncGenerator<Uint8Array> {
  const stream = createReadStream(path, { highWaterMark: 1 << 20 });
  try {
    for await (const chunk of stream) {
      onBytes((chunk as Buffer).byteLength);
      yield chunk as Uint8Array;
    }
  } catch (err) {
    throw fromSystemError(err, path, 'read');
  }
}

const SMALL_FILE = 4n << 20n;

/** Gives the node at fsPath the host path's own user/trusted/security xattrs (io/xattr.ts; a symlink's are its own). */
export async function copyHostXattrs(w: Ext4Writer, hostPath: string, fsPath: string): Promise<void> {
  for (const x of readHostXattrs(hostPath)) await w.setXattr(fsPath, x.name, x.value);
}

export async function copyIn(w: Ext4Writer, src: string, dest: string, onBytes: (n: number) => void = () => {}): Promise<CopyStats> {
  const stats: CopyStats = { files: 0, directories: 0, symlinks: 0, hardLinks: 0, others: 0, bytes: 0 };
  const seen = new Map<string, string>();
  const visit = async (hostPath: string, fsPath: string): Promise<void> => {
    let st;
    try {
      st = await lstat(hostPath, { bigint: true });
    } catch (err) {
      throw fromSystemError(err, hostPath, 'stat');
    }
    const attrs = { mode: Number(st.mode & 0o7777n), uid: Number(st.uid), gid: Number(st.gid), atime: timestampFromNs(st.atimeNs), mtime: timestampFromNs(st.mtimeNs) };
    if (!st.isDirectory() && st.nlink > 1n) {
      const key = `${st.dev}:${st.ino}`;
      const first = seen.get(key);
      if (first !== undefined) {
        await w.link(first, fsPath);
        stats.hardLinks++;
        return;
      }
      seen.set(key, fsPath);
    }
    if (st.isDirectory()) {
      if (fsPath !== '/') {
        await w.mkdir(fsPath, attrs);
        await copyHostXattrs(w, hostPath, fsPath);
      }
      stats.directories++;
      let names: string[];
      try {
        names = (await readdir(hostPath)).sort();
      } catch (err) {
        throw fromSystemError(err, hostPath, 'list the directory');
      }
      for (const name of names) await visit(join(hostPath, name), fsPath === '/' ? `/${name}` : `${fsPath}/${name}`);
      if (fsPath !== '/') await w.setAttrs(fsPath, { mode: attrs.mode, atime: attrs.atime, mtime: attrs.mtime });
    } else if (st.isFile()) {
      const count = (n: number) => {
        stats.bytes += n;
        onBytes(n);
      };
      if (st.size <= SMALL_FILE) {
        // Small files in one read: a stream would allocate a full-size buffer per file.
        let data: Uint8Array;
        try {
          data = await readFile(hostPath);
        } catch (err) {
          throw fromSystemError(err, hostPath, 'read');
        }
        count(data.byteLength);
        await w.writeFile(fsPath, data, attrs);
      } else {
        await w.writeFile(fsPath, hostFileChunks(hostPath, count), attrs);
      }
      await copyHostXattrs(w, hostPath, fsPath);
      stats.files++;
    } else if (st.isSymbolicLink()) {
      await w.symlink(fsPath, await readlink(hostPath), attrs);
      await copyHostXattrs(w, hostPath, fsPath);
      stats.symlinks++;
    } else {
      const kind = st.isCharacterDevice() ? 'chardev' : st.isBlockDevice() ? 'blockdev' : st.isFIFO() ? 'fifo' : 'socket';
      const rdev = Number(st.rdev);
      await w.mknod(fsPath, kind, { major: Math.floor(rdev / 256) & 0xfff, minor: (rdev & 0xff) | ((rdev >>> 12) & 0xfff00) }, attrs);
      await copyHostXattrs(w, hostPath, fsPath);
      stats.others++;
    }
  };
  await visit(src, dest === '' ? '/' : dest);
  return stats;
}
