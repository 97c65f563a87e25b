/**
 * The overlayfs merged view (an upper directory over a stack of read-only lowers) as a read-only
 * FileSystem, computed in userspace by the kernel's own rules (fs/overlayfs/namei.c, readdir.c).
 *
 * Design notes
 * - A merged path is resolved one name at a time from its parent's node, as ovl_lookup does: the
 *   name is looked up in the parent's upper dir, then in each dir of the parent's lower stack, top
 *   down, until something stops the search. A whiteout (char 0/0, or a zero-size regular file with
 *   `overlay.whiteout` inside a dir whose `overlay.opaque` is "x") stops it and hides the name; a
 *   non-directory stops it (unless it is a metacopy file, whose data lies further down), and a
 *   directory below a non-directory (or a non-directory below a directory) is hidden; an opaque
 *   ("y") directory stops it after itself. A directory's (or metacopy file's) `overlay.redirect`
 *   changes the name looked up in the layers below: a single name replaces the last component, an
 *   absolute path restarts from the lower layers' roots (walked component by component, each
 *   component checked as the kernel checks it) and from then on continues in the root's stack from
 *   the layer after the one where it was found.
 * - Metadata and xattrs of a node come from its top-most entry (upper if any); a metacopy file's
 *   size and data come from the lowest entry found that is not itself a metacopy (intermediate metacopy
 *   entries are skipped as the kernel skips them); a metacopy without data is corrupt.
 * - readdir merges the names of the node's upper and lower dirs, upper first, each name once; a
 *   whiteout entry hides the name below and is not listed. Merged dirs report nlink 1 (as
 *   ovl_getattr does).
 * - Private `PREFIX.overlay.*` xattrs are hidden from `xattrs()`; `PREFIX.overlay.overlay.X` shows as
 *   `PREFIX.overlay.X` (nesting). PREFIX is "trusted", or "user" for userxattr mounts; 'auto' looks
 *   at the upper's root and its first entries.
 * - `ino` in stat is the real inode number tagged with its layer (`ino × 64 + slot`, slot 0 the
 *   upper, 1 + i lower i), so hard links inside one layer keep one number and layers never collide.
 *   The kernel's index (hard links across copy-up through `workdir/index`) is not followed. The names
 *   of a hard-linked metacopy inode are looked up one by one and may find different data below, so
 *   they are one inode only where they find the same data: such a file's ino is a number of this
 *   view for its (metadata, data) pair, in slot 63, which no layer uses.
 * - Resolved nodes are kept in a bounded map (most recently used), so a walk resolves each parent
 *   once. Work per lookup is bounded by the number of layers × the components of a redirect
 *   (at most PATH_MAX bytes), so no xattr value can make it loop.
 */
import { CorruptImageError, NotFoundError, UsageError } from '../../errors.ts';
import type { Disk } from '../../io/disk.ts';
import type { FileSystem, FsEntry, FsSpace, FsStat, FsXattr, NodeKind } from '../filesystem.ts';
import { type Metacopy, type Opaque, type Redirect, type XattrPrefix, decodeMetacopy, decodeOpaque, decodeRedirect, privatePrefix, privateSuffix, visibleXattrName } from './xattr.ts';

export interface OverlayLayer {
  readonly fs: FileSystem;
  /** The layer's directory inside `fs` ('/' for the whole filesystem). */
  readonly root: string;
}

export interface OverlayOptions {
  readonly upper?: OverlayLayer;
  /** Top-most first, as in `lowerdir=a:b`. */
  readonly lowers: readonly OverlayLayer[];
  readonly xattrPrefix?: XattrPrefix | 'auto';
}

/** 'upper', or the index of a lower layer (0 = top-most lower). */
export type LayerId = 'upper' | number;

/** One layer's real entry behind a merged node. */
export interface LayerEntry {
  readonly layer: LayerId;
  /** Its path inside that layer's FileSystem (the layer root joined with the layer-relative path). */
  readonly path: string;
  readonly stat: FsStat;
  /** The entry's own xattrs, unfiltered (undefined where the layer's format has none). */
  readonly xattrs: readonly FsXattr[] | undefined;
  readonly opaque?: Opaque;
  readonly redirect?: Redirect;
  readonly metacopy?: Metacopy;
}

/** Where a merged node comes from (`resolve`). */
export interface OverlayNode {
  /** The merged path ('/' for the root). */
  readonly path: string;
  readonly kind: NodeKind;
  readonly upper: LayerEntry | undefined;
  /** Dirs: the lower dirs merged under it, top-down. Non-dirs: the lower entries found by lookup (top-most, then the data entry of a metacopy). */
  readonly lowers: readonly LayerEntry[];
  /** Where stat and xattrs come from: the upper if present, else the top-most lower. */
  readonly meta: LayerEntry;
  /** Files: where the bytes come from (differs from `meta` for a metacopy file). */
  readonly data: LayerEntry | undefined;
  /** The upper holds its metadata only (`overlay.metacopy`). */
  readonly metacopy: boolean;
  /** Dirs: opaque in the upper (`overlay.opaque=y`); lower dirs of this name are hidden. */
  readonly opaque: boolean;
  /** Dirs: the upper's `overlay.redirect`, the lower path its lower content comes from. */
  readonly redirect: Redirect | undefined;
  /** Dirs: more than one layer contributes (upper + lower, or several lowers). */
  readonly merged: boolean;
}

const LAYER_SLOTS = 64;
const NODE_CACHE = 8192;

function joinPath(base: string, name: string): string {
  return base === '/' || base === '' ? `/${name}` : `${base}/${name}`;
}

function splitPath(path: string): string[] {
  const parts = path.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.includes('..')) throw new UsageError(`overlay: ".." is not allowed in ${path}`);
  return parts;
}

function normalizeRoot(root: string): string {
  const parts = splitPath(root);
  return parts.length === 0 ? '/' : `/${parts.join('/')}`;
}

function corrupt(field: string, path: string, message: string): CorruptImageError {
  return new CorruptImageError('overlayfs', field, message).withFile(path);
}

/** The lookup state of one name (ovl_lookup_data). */
interface LookupState {
  name: string | readonly string[];
  isDir: boolean;
  stop: boolean;
  opaque: boolean;
  metacopy: boolean;
}

interface Base {
  readonly layer: LayerId;
  readonly path: string;
  /** The dir's `overlay.opaque` is "x": regular entries may be xattr whiteouts. */
  readonly xwhiteouts: boolean;
}

export class OverlayFileSystem implements FileSystem {
  readonly type = 'overlay';
  readonly label = undefined;
  readonly uuid = undefined;
  readonly readOnly = true;
  readonly upper: OverlayLayer | undefined;
  readonly lowers: readonly OverlayLayer[];
  readonly #prefixOption: XattrPrefix | 'auto';
  #prefix: XattrPrefix | undefined;
  #root: Promise<OverlayNode> | undefined;
  readonly #nodes = new Map<string, OverlayNode>();
  readonly #metacopyInos = new Map<string, number>();

  constructor(options: OverlayOptions) {
    if (options.lowers.length === 0 && options.upper === undefined) throw new UsageError('overlay: at least one layer is needed');
    if (options.lowers.length >= LAYER_SLOTS - 1) throw new UsageError(`overlay: at most ${LAYER_SLOTS - 2} lower layers`);
    this.upper = options.upper === undefined ? undefined : { fs: options.upper.fs, root: normalizeRoot(options.upper.root) };
    this.lowers = options.lowers.map((l) => ({ fs: l.fs, root: normalizeRoot(l.root) }));
    this.#prefixOption = options.xattrPrefix ?? 'auto';
  }

  /** The same lower stack without the upper (what the base alone shows). */
  lowerOnly(): OverlayFileSystem {
    return new OverlayFileSystem({ lowers: this.lowers, xattrPrefix: this.#prefix ?? this.#prefixOption });
  }

  layer(id: LayerId): OverlayLayer {
    const l = id === 'upper' ? this.upper : this.lowers[id];
    if (l === undefined) throw new UsageError(`overlay: no layer ${id}`);
    return l;
  }

  /** The private-xattr namespace in use ('trusted' or, for userxattr mounts, 'user'). */
  async xattrPrefix(): Promise<XattrPrefix> {
    if (this.#prefix !== undefined) return this.#prefix;
    this.#prefix = this.#prefixOption !== 'auto' ? this.#prefixOption : await this.#detectPrefix();
    return this.#prefix;
  }

  async #detectPrefix(): Promise<XattrPrefix> {
    const layers = this.upper ? [this.upper] : [];
    for (const l of layers) {
      if (l.fs.xattrs === undefined) continue;
      const verdict = (xs: readonly FsXattr[]): XattrPrefix | undefined => {
        const t = xs.some((x) => x.name.startsWith('trusted.overlay.'));
        const u = xs.some((x) => x.name.startsWith('user.overlay.'));
        return t ? 'trusted' : u ? 'user' : undefined;
      };
      const atRoot = verdict(await l.fs.xattrs(l.root));
      if (atRoot) return atRoot;
      let n = 0;
      for (const e of await l.fs.readdir(l.root)) {
        if (++n > 256) break;
        if (e.kind !== 'dir' && e.kind !== 'file') continue;
        const v = verdict(await l.fs.xattrs(joinPath(l.root, e.name)));
        if (v) return v;
      }
    }
    return 'trusted';
  }

  // ---- layer entries ---------------------------------------------------------------------------

  async #entry(layer: LayerId, path: string, known?: FsStat): Promise<LayerEntry | undefined> {
    const fs = this.layer(layer).fs;
    let stat = known;
    if (stat === undefined) {
      try {
        stat = await fs.stat(path);
      } catch (err) {
        if (err instanceof NotFoundError) return undefined;
        throw err;
      }
    }
    if (fs.xattrs === undefined) return { layer, path, stat, xattrs: undefined };
    const xattrs = await fs.xattrs(path);
    const prefix = await this.xattrPrefix();
    let opaque: Opaque | undefined, redirect: Redirect | undefined, metacopy: Metacopy | undefined;
    for (const x of xattrs) {
      const suffix = privateSuffix(x.name, prefix);
      if (suffix === 'opaque' && stat.kind === 'dir') opaque = decodeOpaque(x.value, path);
      else if (suffix === 'redirect') redirect = decodeRedirect(x.value, path);
      else if (suffix === 'metacopy') {
        if (stat.kind !== 'file') throw corrupt('metacopy', path, `is set on a ${stat.kind}, not a regular file`);
        metacopy = decodeMetacopy(x.value, path);
      }
    }
    return { layer, path, stat, xattrs, ...(opaque ? { opaque } : {}), ...(redirect ? { redirect } : {}), ...(metacopy ? { metacopy } : {}) };
  }

  async #isXattrWhiteout(e: LayerEntry): Promise<boolean> {
    if (e.stat.kind !== 'file' || e.stat.size !== 0) return false;
    const prefix = await this.xattrPrefix();
    const xs = e.xattrs ?? (await this.layer(e.layer).fs.xattrs?.(e.path)) ?? [];
    return xs.some((x) => privateSuffix(x.name, prefix) === 'whiteout');
  }

  static isDeviceWhiteout(stat: FsStat): boolean {
    return stat.kind === 'chardev' && stat.rdev !== undefined && stat.rdev.major === 0 && stat.rdev.minor === 0;
  }

  /** Whether a layer entry is a whiteout (in a dir whose opaque is "x" when `xwhiteouts`). */
  async isWhiteout(e: LayerEntry, xwhiteouts: boolean): Promise<boolean> {
    return OverlayFileSystem.isDeviceWhiteout(e.stat) || (xwhiteouts && (await this.#isXattrWhiteout(e)));
  }

  /** ovl_lookup_single: component `i` of `parts` (the current name) in one layer dir. */
  async #single(base: Base, parts: readonly string[], i: number, d: LookupState): Promise<LayerEntry | undefined> {
    const name = parts[i]!;
    const last = i === parts.length - 1;
    const e = await this.#entry(base.layer, joinPath(base.path, name));
    if (e === undefined) return undefined;
    if (await this.isWhiteout(e, base.xwhiteouts)) {
      d.stop = d.opaque = true;
      return undefined;
    }
    if (e.stat.kind !== 'dir') {
      if (d.isDir || !last) {
        d.stop = true;
        return undefined;
      }
      d.metacopy = e.metacopy !== undefined;
      d.stop = !d.metacopy;
      if (!d.metacopy) return e;
    } else {
      if (last) d.isDir = true;
      if (e.opaque === 'y') {
        d.stop = true;
        if (last) d.opaque = true;
        return e;
      }
    }
    const r = e.redirect;
    if (r !== undefined) {
      // The name looked up in the layers below changes; the rest of this walk keeps its components.
      const post = parts.slice(i + 1);
      if (typeof d.name === 'string' && !r.absolute) d.name = r.name;
      else d.name = r.absolute ? [...r.parts, ...post] : [...parts.slice(0, i), r.name, ...post];
      if (r.absolute) d.stop = false;
    }
    return e;
  }

  /** ovl_lookup_layer: the current name in one layer (one name in `base`, or an absolute path from the layer's root). */
  async #inLayer(base: Base, d: LookupState): Promise<LayerEntry | undefined> {
    if (typeof d.name === 'string') return this.#single(base, [d.name], 0, d);
    const parts = d.name;
    const root = this.layer(base.layer).root;
    const rootEntry = await this.#entry(base.layer, root);
    if (rootEntry === undefined || rootEntry.stat.kind !== 'dir') return undefined;
    let b: Base = { layer: base.layer, path: root, xwhiteouts: rootEntry.opaque === 'x' };
    for (let i = 0; i < parts.length; i++) {
      const e = await this.#single(b, parts, i, d);
      if (i === parts.length - 1 || e === undefined || e.stat.kind !== 'dir') return i === parts.length - 1 ? e : undefined;
      b = { layer: base.layer, path: e.path, xwhiteouts: e.opaque === 'x' };
    }
    return undefined;
  }

  // ---- nodes -----------------------------------------------------------------------------------

  #rootNode(): Promise<OverlayNode> {
    this.#root ??= (async () => {
      const entries: LayerEntry[] = [];
      let upper: LayerEntry | undefined;
      if (this.upper) {
        upper = await this.#entry('upper', this.upper.root);
        if (upper === undefined || upper.stat.kind !== 'dir') throw new NotFoundError(`overlay: the upper directory ${this.upper.root} is missing or not a directory`);
      }
      for (let i = 0; i < this.lowers.length; i++) {
        const e = await this.#entry(i, this.lowers[i]!.root);
        if (e === undefined || e.stat.kind !== 'dir') throw new NotFoundError(`overlay: lower layer ${i} (${this.lowers[i]!.root}) is missing or not a directory`);
        entries.push(e);
      }
      const meta = upper ?? entries[0]!;
      return { path: '/', kind: 'dir', upper, lowers: entries, meta, data: undefined, metacopy: false, opaque: false, redirect: undefined, merged: (upper ? 1 : 0) + entries.length > 1 };
    })();
    return this.#root;
  }

  #rootBases(): Base[] {
    return this.lowers.map((l, i) => ({ layer: i, path: l.root, xwhiteouts: false }));
  }

  /**
   * The merged child `name` of a dir node, or undefined when there is none (ovl_lookup). With
   * `lowerOnly`, the parent's upper is ignored: what the lower stack alone has under that name.
   */
  async childOf(parent: OverlayNode, name: string, options: { lowerOnly?: boolean } = {}): Promise<OverlayNode | undefined> {
    if (parent.kind !== 'dir') return undefined;
    if (name === '' || name === '.' || name === '..' || name.includes('/')) throw new UsageError(`overlay: "${name}" is not a name`);
    const path = joinPath(parent.path, name);
    const d: LookupState = { name, isDir: false, stop: false, opaque: false, metacopy: false };
    let upper: LayerEntry | undefined;
    if (parent.upper && !options.lowerOnly) upper = await this.#single({ layer: 'upper', path: parent.upper.path, xwhiteouts: parent.upper.opaque === 'x' }, [name], 0, d);
    const upperMetacopy = upper !== undefined && upper.metacopy !== undefined;
    const rootBases = this.#rootBases();
    let bases: Base[] = typeof d.name !== 'string' ? rootBases : parent.lowers.map((e) => ({ layer: e.layer, path: e.path, xwhiteouts: e.opaque === 'x' }));
    const found: LayerEntry[] = [];
    for (let i = 0; !d.stop && i < bases.length; i++) {
      const base = bases[i]!;
      const e = await this.#inLayer(base, d);
      if (e === undefined) continue;
      if (!(d.metacopy && found.length > 0)) found.push(e);
      if (typeof d.name !== 'string' && bases !== rootBases) {
        bases = rootBases;
        i = base.layer as number;
      }
    }
    if (upper === undefined && found.length === 0) return undefined;
    const meta = upper ?? found[0]!;
    const kind = meta.stat.kind;
    if (kind === 'dir') {
      const lowers = found.filter((e) => e.stat.kind === 'dir');
      return { path, kind, upper, lowers, meta, data: undefined, metacopy: false, opaque: upper?.opaque === 'y', redirect: upper?.redirect, merged: (upper ? 1 : 0) + lowers.length > 1 };
    }
    let data: LayerEntry | undefined = meta;
    if (upperMetacopy || meta.metacopy) {
      data = [...found].reverse().find((e) => e.metacopy === undefined && e !== meta);
      if (data === undefined || d.metacopy) throw corrupt('metacopy', this.#describe(meta), 'no lower file holds its data');
      if (data.stat.kind !== 'file') throw corrupt('metacopy', this.#describe(meta), `its lower data ${data.path} is a ${data.stat.kind}, not a regular file`);
    } else if (kind !== 'file') data = undefined;
    return { path, kind, upper, lowers: found, meta, data, metacopy: meta.metacopy !== undefined, opaque: false, redirect: upper?.redirect, merged: false };
  }

  #describe(e: LayerEntry): string {
    return `${e.layer === 'upper' ? 'upper' : `lower ${e.layer}`}:${e.path}`;
  }

  /** Where the merged node at `path` comes from; NotFoundError when the view has nothing there. */
  async resolve(path: string): Promise<OverlayNode> {
    const parts = splitPath(path);
    const key = `/${parts.join('/')}`;
    const hit = this.#nodes.get(key);
    if (hit) {
      this.#nodes.delete(key);
      this.#nodes.set(key, hit);
      return hit;
    }
    let node = await this.#rootNode();
    if (parts.length === 0) return node;
    const parent = await this.resolve(`/${parts.slice(0, -1).join('/')}`);
    if (parent.kind !== 'dir') throw new NotFoundError(`overlay: ${key}: not a directory: ${parent.path}`);
    const child = await this.childOf(parent, parts[parts.length - 1]!);
    if (child === undefined) throw new NotFoundError(`overlay: ${key}: no such file or directory`);
    node = child;
    this.#nodes.set(key, node);
    if (this.#nodes.size > NODE_CACHE) this.#nodes.delete(this.#nodes.keys().next().value!);
    return node;
  }

  /** The merged listing of a dir node: names from the upper first, then each lower dir; whiteouts hide and are not listed. */
  async readdirOf(node: OverlayNode): Promise<FsEntry[]> {
    if (node.kind !== 'dir') throw new NotFoundError(`overlay: ${node.path}: not a directory`);
    const seen = new Set<string>();
    const out: FsEntry[] = [];
    for (const dir of node.upper ? [node.upper, ...node.lowers] : node.lowers) {
      const fs = this.layer(dir.layer).fs;
      const xw = dir.opaque === 'x';
      for (const e of await fs.readdir(dir.path)) {
        if (seen.has(e.name)) continue;
        seen.add(e.name);
        if (e.kind === 'chardev' || (xw && e.kind === 'file')) {
          const entry = await this.#entry(dir.layer, joinPath(dir.path, e.name));
          if (entry && (await this.isWhiteout(entry, xw))) continue;
        }
        out.push({ name: e.name, kind: e.kind });
      }
    }
    return out;
  }

  /** The ino of a layer's inode in this view (layer-tagged, so hard links inside a layer share it). */
  viewIno(e: LayerEntry): number | undefined {
    if (e.stat.ino === undefined) return undefined;
    const slot = e.layer === 'upper' ? 0 : e.layer + 1;
    return e.stat.ino * LAYER_SLOTS + slot;
  }

  /** The ino a node shows (see the design notes for a hard-linked metacopy file). */
  #nodeIno(n: OverlayNode): number | undefined {
    const ino = this.viewIno(n.meta);
    if (ino === undefined || !n.metacopy || n.meta.stat.nlink <= 1 || n.data === undefined) return ino;
    const key = `${ino}:${this.viewIno(n.data) ?? `${n.data.layer}:${n.data.path}`}`;
    let pair = this.#metacopyInos.get(key);
    if (pair === undefined) {
      pair = (this.#metacopyInos.size + 1) * LAYER_SLOTS + LAYER_SLOTS - 1;
      this.#metacopyInos.set(key, pair);
    }
    return pair;
  }

  // ---- FileSystem ------------------------------------------------------------------------------

  async stat(path: string): Promise<FsStat> {
    const n = await this.resolve(path);
    const s = n.meta.stat;
    const ino = this.#nodeIno(n);
    const allocated = n.metacopy ? n.data?.stat.allocatedBytes : s.allocatedBytes;
    // A metacopy file reads its data layer's bytes, so its size is theirs (copy-up makes them equal).
    const size = n.metacopy && n.data !== undefined ? n.data.stat.size : s.size;
    const { allocatedBytes: _a, ino: _i, ...rest } = s;
    return { ...rest, size, ...(allocated === undefined ? {} : { allocatedBytes: allocated }), ...(ino === undefined ? {} : { ino }), nlink: n.kind === 'dir' && n.merged ? 1 : s.nlink };
  }

  async readdir(path: string): Promise<FsEntry[]> {
    return this.readdirOf(await this.resolve(path));
  }

  async readlink(path: string): Promise<string> {
    const n = await this.resolve(path);
    if (n.kind !== 'symlink') throw new UsageError(`overlay: ${n.path} is not a symbolic link`);
    return this.layer(n.meta.layer).fs.readlink(n.meta.path);
  }

  async xattrs(path: string): Promise<readonly FsXattr[]> {
    return this.visibleXattrs(await this.resolve(path));
  }

  /** A node's xattrs as the merged view shows them (private names hidden, escaped names unescaped). */
  async visibleXattrs(n: OverlayNode): Promise<FsXattr[]> {
    const fs = this.layer(n.meta.layer).fs;
    const raw = n.meta.xattrs ?? (fs.xattrs ? await fs.xattrs(n.meta.path) : []);
    const prefix = await this.xattrPrefix();
    const out: FsXattr[] = [];
    for (const x of raw) {
      const name = visibleXattrName(x.name, prefix);
      if (name !== undefined) out.push({ name, value: x.value });
    }
    return out;
  }

  async openFile(path: string): Promise<Disk> {
    const n = await this.resolve(path);
    if (n.kind !== 'file' || n.data === undefined) throw new UsageError(`overlay: ${n.path} is not a regular file`);
    return this.layer(n.data.layer).fs.openFile(n.data.path);
  }

  async space(): Promise<FsSpace> {
    return this.upper ? this.upper.fs.space() : { totalBytes: 0, freeBytes: 0 };
  }

  /** The layers belong to the caller and stay open. */
  async close(): Promise<void> {
    this.#nodes.clear();
  }

  static privatePrefix = privatePrefix;
}
