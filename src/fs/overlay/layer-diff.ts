/**
 * One layer that replaces the top two of a stack: an upper over lowers [T, D1…Dn] becomes a layer T'
 * such that T' over D1…Dn shows exactly what the upper over T, D1…Dn showed. This is how a layered
 * base (casper's `minimal.standard.live` chain) takes in its upper without touching the layers below
 * its top one: T' replaces T, and D1…Dn stay as they are.
 *
 * Design notes
 * - T' is a read-only FileSystem computed from the merged view V (upper over T, D…) and the deeper
 *   view Dv (D… alone), one directory at a time, so it can be walked by treeFromFileSystem like any
 *   tree. Nodes keep V's metadata, xattrs and bytes.
 * - A name of V is left out of T' when D alone shows the very same node there: V found nothing for it
 *   in the upper or in T, and every entry behind it lies in D at that same path (a redirect that
 *   points elsewhere makes it explicit). Its whole subtree then comes from D as it is. Everything else
 *   is in T'.
 * - A directory of T' where Dv has a directory too is either opaque (when nothing of it comes from D
 *   at its own path: an opaque dir of the upper or of T, a dir that replaced a file, a redirected dir),
 *   then every name of V is in it, or it is transparent, and each name of Dv's directory that V does
 *   not show gets a whiteout (char 0/0, mode 0, owner root, as the kernel makes them). The root is
 *   never opaque.
 * - Visible xattrs named PREFIX.overlay.X (a nested overlay's) are stored escaped as
 *   PREFIX.overlay.overlay.X, as a layer must hold them. No redirect, metacopy or origin is written:
 *   T' holds whole files.
 * - Hard links: members of one link group in V are linked in T' where they all are in T'; a group
 *   split between T' and D (only possible behind a redirect of D) ends as separate files.
 */
import { NotFoundError, UsageError } from '../../errors.ts';
import type { Disk } from '../../io/disk.ts';
import type { FileSystem, FsEntry, FsSpace, FsStat, FsXattr } from '../filesystem.ts';
import type { LayerEntry, OverlayNode } from './view.ts';
import { OverlayFileSystem } from './view.ts';
import type { XattrPrefix } from './xattr.ts';

interface DirPlan {
  readonly opaque: boolean;
  readonly entries: readonly FsEntry[];
  readonly whiteouts: ReadonlySet<string>;
  readonly mtime: FsStat['mtime'];
}

const PLAN_CACHE = 4096;

function joinPath(base: string, name: string): string {
  return base === '/' ? `/${name}` : `${base}/${name}`;
}

function parentAndName(path: string): [string, string] {
  const parts = path.split('/').filter((p) => p !== '');
  if (parts.length === 0) return ['/', ''];
  return [`/${parts.slice(0, -1).join('/')}`, parts[parts.length - 1]!];
}

export class LayerDiffFileSystem implements FileSystem {
  readonly type = 'overlay-layer';
  readonly label = undefined;
  readonly uuid = undefined;
  readonly readOnly = true;
  readonly #view: OverlayFileSystem;
  readonly #deeper: OverlayFileSystem;
  readonly #prefix: XattrPrefix;
  readonly #plans = new Map<string, DirPlan>();

  private constructor(view: OverlayFileSystem, deeper: OverlayFileSystem, prefix: XattrPrefix) {
    this.#view = view;
    this.#deeper = deeper;
    this.#prefix = prefix;
  }

  /** T' for `view` (an upper over at least two lowers): it replaces the view's upper and its top lower. */
  static async of(view: OverlayFileSystem): Promise<LayerDiffFileSystem> {
    if (view.lowers.length < 2) throw new UsageError('overlay layer diff: the view needs at least two lowers (the top one and the layers it lies on)');
    const prefix = await view.xattrPrefix();
    return new LayerDiffFileSystem(view, new OverlayFileSystem({ lowers: view.lowers.slice(1), xattrPrefix: prefix }), prefix);
  }

  /** The merged view T' is computed from. */
  get view(): OverlayFileSystem {
    return this.#view;
  }

  #atOwnPath(e: LayerEntry, path: string): boolean {
    if (e.layer === 'upper' || e.layer < 1) return false;
    const root = this.#view.lowers[e.layer]!.root;
    return e.path === (root === '/' ? path : path === '/' ? root : `${root}${path}`);
  }

  /** D alone shows this node at its path exactly as V does. */
  #inherited(n: OverlayNode): boolean {
    if (n.upper !== undefined) return false;
    if (n.kind === 'dir') return n.lowers.length > 0 && n.lowers.every((e) => this.#atOwnPath(e, n.path));
    return this.#atOwnPath(n.meta, n.path) && (n.data === undefined || n.data === n.meta || this.#atOwnPath(n.data, n.path)) && n.lowers.every((e) => this.#atOwnPath(e, n.path));
  }

  async #deeperDir(path: string): Promise<OverlayNode | undefined> {
    try {
      const n = await this.#deeper.resolve(path);
      return n.kind === 'dir' ? n : undefined;
    } catch (err) {
      if (err instanceof NotFoundError) return undefined;
      throw err;
    }
  }

  async #plan(path: string): Promise<DirPlan> {
    const hit = this.#plans.get(path);
    if (hit) return hit;
    const n = await this.#view.resolve(path);
    if (n.kind !== 'dir') throw new NotFoundError(`overlay layer: ${path}: not a directory`);
    const below = await this.#deeperDir(n.path);
    const opaque = below !== undefined && n.path !== '/' && !n.lowers.some((e) => this.#atOwnPath(e, n.path));
    const entries: FsEntry[] = [];
    const shown = new Set<string>();
    for (const e of await this.#view.readdirOf(n)) {
      shown.add(e.name);
      const child = await this.#view.resolve(joinPath(n.path, e.name));
      if (!opaque && below !== undefined && this.#inherited(child)) continue;
      entries.push(e);
    }
    const whiteouts = new Set<string>();
    if (below !== undefined && !opaque) {
      for (const e of await this.#deeper.readdirOf(below)) {
        if (shown.has(e.name)) continue;
        whiteouts.add(e.name);
        entries.push({ name: e.name, kind: 'chardev' });
      }
    }
    const plan: DirPlan = { opaque, entries, whiteouts, mtime: n.meta.stat.mtime };
    this.#plans.set(path, plan);
    if (this.#plans.size > PLAN_CACHE) this.#plans.delete(this.#plans.keys().next().value!);
    return plan;
  }

  /** 'node' for a name T' holds from V, 'whiteout' for one of its whiteouts. */
  async #member(path: string): Promise<{ what: 'node' } | { what: 'whiteout'; mtime: FsStat['mtime'] }> {
    const [parent, name] = parentAndName(path);
    if (name === '') return { what: 'node' };
    const plan = await this.#plan(parent);
    if (plan.whiteouts.has(name)) return { what: 'whiteout', mtime: plan.mtime };
    if (!plan.entries.some((e) => e.name === name)) throw new NotFoundError(`overlay layer: ${path}: not in the new layer`);
    return { what: 'node' };
  }

  async stat(path: string): Promise<FsStat> {
    const m = await this.#member(path);
    if (m.what === 'whiteout') return { kind: 'chardev', size: 0, mode: 0, uid: 0, gid: 0, nlink: 1, mtime: m.mtime, rdev: { major: 0, minor: 0 } };
    return this.#view.stat(path);
  }

  async readdir(path: string): Promise<FsEntry[]> {
    if ((await this.#member(path)).what === 'whiteout') throw new NotFoundError(`overlay layer: ${path}: not a directory`);
    return [...(await this.#plan(path)).entries];
  }

  async readlink(path: string): Promise<string> {
    await this.#member(path);
    return this.#view.readlink(path);
  }

  async xattrs(path: string): Promise<readonly FsXattr[]> {
    if ((await this.#member(path)).what === 'whiteout') return [];
    const own = `${this.#prefix}.overlay.`;
    const out: FsXattr[] = (await this.#view.xattrs(path)).map((x) => (x.name.startsWith(own) ? { name: `${own}overlay.${x.name.slice(own.length)}`, value: x.value } : x));
    const n = await this.#view.resolve(path);
    if (n.kind === 'dir' && (await this.#plan(n.path)).opaque) out.push({ name: `${own}opaque`, value: new TextEncoder().encode('y') });
    return out;
  }

  /** Whether T' holds `path` as an opaque directory (tests, reports). */
  async isOpaque(path: string): Promise<boolean> {
    return (await this.#plan((await this.#view.resolve(path)).path)).opaque;
  }

  async openFile(path: string): Promise<Disk> {
    await this.#member(path);
    return this.#view.openFile(path);
  }

  async space(): Promise<FsSpace> {
    return this.#view.space();
  }

  async close(): Promise<void> {}
}
