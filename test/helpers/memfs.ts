/** A small in-memory FileSystem for tests: a tree of nodes (hard links share one node), with xattrs, devices and symlinks. */
import { NotFoundError, UsageError } from '../../src/errors.ts';
import { MemoryDisk, type Disk } from '../../src/io/disk.ts';
import type { FileSystem, FsEntry, FsSpace, FsStat, FsXattr, NodeKind } from '../../src/fs/filesystem.ts';

export interface MemNode {
  readonly kind: NodeKind;
  readonly ino: number;
  mode: number;
  uid: number;
  gid: number;
  links: number;
  readonly xattrs: Map<string, Uint8Array>;
  data: Uint8Array;
  target: string;
  rdev: { major: number; minor: number } | undefined;
  readonly children: Map<string, MemNode> | undefined;
}

export class MemoryFileSystem implements FileSystem {
  readonly type = 'memory';
  readonly label = undefined;
  readonly uuid = undefined;
  readonly readOnly = true;
  #nextIno = 1;
  readonly root: MemNode;

  constructor() {
    this.root = this.node('dir', {});
  }

  node(kind: NodeKind, o: { mode?: number; uid?: number; gid?: number; data?: Uint8Array; target?: string; rdev?: { major: number; minor: number } }): MemNode {
    return {
      kind,
      ino: this.#nextIno++,
      mode: o.mode ?? (kind === 'dir' ? 0o755 : 0o644),
      uid: o.uid ?? 0,
      gid: o.gid ?? 0,
      links: 1,
      xattrs: new Map(),
      data: o.data ?? new Uint8Array(0),
      target: o.target ?? '',
      rdev: o.rdev,
      children: kind === 'dir' ? new Map() : undefined,
    };
  }

  /** The node at a path, or undefined. */
  get(path: string): MemNode | undefined {
    let n: MemNode | undefined = this.root;
    for (const p of path.split('/').filter((x) => x !== '')) {
      if (n?.children === undefined) return undefined;
      n = n.children.get(p);
    }
    return n;
  }

  /** Puts a node at `path`; parents must be dirs (created when missing). Returns false when a parent is a non-dir or the name exists. */
  put(path: string, node: MemNode): boolean {
    const parts = path.split('/').filter((x) => x !== '');
    let dir = this.root;
    for (const p of parts.slice(0, -1)) {
      let next = dir.children!.get(p);
      if (next === undefined) {
        next = this.node('dir', {});
        dir.children!.set(p, next);
      }
      if (next.children === undefined) return false;
      dir = next;
    }
    const name = parts[parts.length - 1]!;
    if (dir.children!.has(name)) return false;
    dir.children!.set(name, node);
    return true;
  }

  #must(path: string): MemNode {
    const n = this.get(path);
    if (n === undefined) throw new NotFoundError(`memory: ${path}: no such file or directory`);
    return n;
  }

  async stat(path: string): Promise<FsStat> {
    const n = this.#must(path);
    const size = n.kind === 'file' ? n.data.byteLength : n.kind === 'symlink' ? Buffer.byteLength(n.target) : n.kind === 'dir' ? 4096 : 0;
    return { kind: n.kind, size, mode: n.mode, uid: n.uid, gid: n.gid, nlink: n.kind === 'dir' ? 2 : n.links, mtime: { sec: 0, nsec: 0 }, ino: n.ino, ...(n.rdev ? { rdev: n.rdev } : {}) };
  }
  async readdir(path: string): Promise<FsEntry[]> {
    const n = this.#must(path);
    if (n.children === undefined) throw new NotFoundError(`memory: ${path}: not a directory`);
    return [...n.children].map(([name, c]) => ({ name, kind: c.kind }));
  }
  async readlink(path: string): Promise<string> {
    const n = this.#must(path);
    if (n.kind !== 'symlink') throw new UsageError(`memory: ${path} is not a symbolic link`);
    return n.target;
  }
  async xattrs(path: string): Promise<readonly FsXattr[]> {
    return [...this.#must(path).xattrs].map(([name, value]) => ({ name, value }));
  }
  async openFile(path: string): Promise<Disk> {
    const n = this.#must(path);
    if (n.kind !== 'file') throw new UsageError(`memory: ${path} is not a file`);
    return new MemoryDisk(n.data.slice(), { readOnly: true });
  }
  async space(): Promise<FsSpace> {
    return { totalBytes: 0, freeBytes: 0 };
  }
  async close(): Promise<void> {}
}
