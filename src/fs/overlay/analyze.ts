/**
 * What an overlayfs upper holds, entry by entry, for `status`: each upper entry's class against the
 * lower stack it covers, the bytes it occupies in the upper and the lower bytes it hides, totals,
 * the largest files and directories, and the features that make offline changes to the lower unsafe.
 *
 * Design notes
 * - The upper tree is walked as it is on disk (its paths are the merged paths); each name is
 *   resolved twice through the view: as the merged node and as what the lower stack alone has under
 *   the same parent (`childOf(…, { lowerOnly })`, so renamed dirs are compared with their redirect
 *   target, not with a same-named lower path).
 * - Classes: `whiteout` (hides the lower node; hiddenBytes its file bytes), `opaque-dir`
 *   (overlay.opaque=y; hides the lower dir of that name), `redirect-dir` (a renamed lower dir),
 *   `merged-dir` (the upper copy of a lower dir), `new` (no lower counterpart), `metadata-only`
 *   (a metacopy stub, or the lower's data with other mode/owner/xattrs), `copied-up-identical` (same
 *   data and metadata as the lower: reclaimable), `copied-up-changed` (data differs, or the kind
 *   changed — then hiddenBytes is what it covers).
 * - Data comparison: sizes first, then both files streamed in 1 MiB pieces (bounded memory).
 * - Bytes: `allocatedBytes` where the upper's format reports it, else the size; a hard-linked upper
 *   inode counts once (its other names occupy 0). Hidden bytes count each lower inode once.
 * - xino leaves nothing on disk, so it cannot be detected offline; `xinoDetectable` says so.
 */
import { LivestickError } from '../../errors.ts';
import { BufferPool, equalBytes } from '../../io/bytes.ts';
import type { FileSystem, FsStat, FsXattr, NodeKind } from '../filesystem.ts';
import { type OverlayLayer, type OverlayFileSystem, type OverlayNode, type LayerEntry } from './view.ts';
import { decodeOvlFb, decodeProtattr, privateSuffix } from './xattr.ts';

export type UpperClass = 'new' | 'copied-up-changed' | 'copied-up-identical' | 'metadata-only' | 'whiteout' | 'opaque-dir' | 'redirect-dir' | 'merged-dir';
export const UPPER_CLASSES: readonly UpperClass[] = ['new', 'copied-up-changed', 'copied-up-identical', 'metadata-only', 'whiteout', 'opaque-dir', 'redirect-dir', 'merged-dir'];

export interface UpperEntry {
  /** The merged path (= the path inside the upper). */
  readonly path: string;
  readonly kind: NodeKind;
  readonly class: UpperClass;
  /** Bytes the entry occupies in the upper (0 for a further name of a hard-linked inode). */
  readonly upperBytes: number;
  /** Lower file bytes it hides (whiteouts, opaque dirs, a kind change). */
  readonly hiddenBytes: number;
  /** Files whose bytes equal a lower file's (copied up unchanged): that lower entry. */
  readonly sameDataAs?: { readonly layer: number; readonly path: string };
}

export interface ClassTotal {
  readonly count: number;
  readonly upperBytes: number;
  readonly hiddenBytes: number;
}

export interface UpperFlags {
  /** `index/` in the workdir, or an origin on the upper root (index=on binds the lower root). */
  readonly index: boolean;
  readonly metacopy: boolean;
  readonly redirect: boolean;
  /** `work/incompat/volatile`: a volatile mount that was not cleanly unmounted; the kernel refuses to mount it. */
  readonly volatile: boolean;
  /** Always false: xino records nothing on disk, so its use cannot be seen offline. */
  readonly xinoDetectable: false;
  /** Entries holding a real lower file handle (`overlay.origin`): they name lower inodes. */
  readonly originHandles: number;
  readonly userxattr: boolean;
  /** Offline changes to the lower are safe only without index, metacopy and redirects (and xino, unknowable). */
  readonly offlineLowerChangesUnsafe: boolean;
}

export interface WorkdirReport {
  /** Names left under `work/work` (an interrupted copy-up or rename leaves them). */
  readonly leftovers: readonly string[];
  readonly indexEntries: number;
  readonly volatile: boolean;
}

export interface UpperReport {
  readonly entries: readonly UpperEntry[];
  readonly totals: Readonly<Record<UpperClass, ClassTotal>>;
  readonly upperBytes: number;
  readonly topFiles: readonly UpperEntry[];
  readonly topDirs: readonly { readonly path: string; readonly upperBytes: number }[];
  readonly flags: UpperFlags;
  readonly workdir: WorkdirReport | undefined;
  /** Paths with `overlay.protattr` (append-only / immutable kept as an xattr). */
  readonly protattr: readonly { readonly path: string; readonly appendOnly: boolean; readonly immutable: boolean }[];
  /** Private xattr values that did not decode (origin, protattr): path and reason. */
  readonly problems: readonly string[];
}

export interface AnalyzeOptions {
  readonly workdir?: OverlayLayer;
  /** How many top files and dirs (default 20). */
  readonly top?: number;
}

const PIECE = 1 << 20;
/** A comparison takes two. */
const comparePieces = new BufferPool(PIECE, 4);

function join(base: string, name: string): string {
  return base === '/' ? `/${name}` : `${base}/${name}`;
}

async function sameData(a: FileSystem, ap: string, b: FileSystem, bp: string): Promise<boolean> {
  const da = await a.openFile(ap);
  try {
    const db = await b.openFile(bp);
    try {
      if (da.size !== db.size) return false;
      const x = comparePieces.take();
      const y = comparePieces.take();
      try {
        for (let at = 0; at < da.size; at += PIECE) {
          const n = Math.min(PIECE, da.size - at);
          await da.read(x.subarray(0, n), at);
          await db.read(y.subarray(0, n), at);
          if (!equalBytes(x.subarray(0, n), y.subarray(0, n))) return false;
        }
        return true;
      } finally {
        comparePieces.give(x);
        comparePieces.give(y);
      }
    } finally {
      await db.close();
    }
  } finally {
    await da.close();
  }
}

function sameXattrs(a: readonly FsXattr[], b: readonly FsXattr[]): boolean {
  const key = (xs: readonly FsXattr[]) => [...xs].map((x) => `${x.name}=${Buffer.from(x.value).toString('hex')}`).sort().join('\n');
  return key(a) === key(b);
}

async function tryList(fs: FileSystem, path: string): Promise<string[] | undefined> {
  try {
    return (await fs.readdir(path)).map((e) => e.name);
  } catch (err) {
    if (err instanceof LivestickError && err.code === 'NOT_FOUND') return undefined;
    throw err;
  }
}

export async function analyzeWorkdir(work: OverlayLayer): Promise<WorkdirReport> {
  const w = await tryList(work.fs, join(work.root, 'work'));
  const index = await tryList(work.fs, join(work.root, 'index'));
  const incompat = await tryList(work.fs, join(join(work.root, 'work'), 'incompat'));
  return { leftovers: (w ?? []).filter((n) => n !== 'incompat').sort(), indexEntries: index?.length ?? 0, volatile: incompat?.includes('volatile') ?? false, ...(index !== undefined ? { hasIndexDir: true } : {}) };
}

/** Classifies every entry of the view's upper (see the design notes). */
export async function analyzeUpper(view: OverlayFileSystem, options: AnalyzeOptions = {}): Promise<UpperReport> {
  const upper = view.upper;
  if (upper === undefined) throw new LivestickError('USAGE', 64, 'overlay: the view has no upper to analyse');
  const ufs = upper.fs;
  const prefix = await view.xattrPrefix();
  const entries: UpperEntry[] = [];
  const dirBytes = new Map<string, number>();
  const seenUpper = new Set<number>();
  const problems: string[] = [];
  const protattr: { path: string; appendOnly: boolean; immutable: boolean }[] = [];
  let metacopy = false;
  let redirect = false;
  let originHandles = 0;
  let rootOrigin = false;

  const hiddenSeen = new Set<string>();
  const bytesOf = async (n: OverlayNode | undefined): Promise<number> => {
    if (n === undefined) return 0;
    if (n.kind === 'dir') {
      let sum = 0;
      for (const e of await view.readdirOf(n)) sum += await bytesOf(await view.childOf(n, e.name));
      return sum;
    }
    const d = n.data;
    if (d === undefined) return 0;
    const key = `${d.layer}:${d.stat.ino ?? d.path}`;
    if (hiddenSeen.has(key)) return 0;
    hiddenSeen.add(key);
    return d.stat.size;
  };
  const occupied = (st: FsStat): number => {
    if (st.kind !== 'dir' && st.nlink > 1 && st.ino !== undefined) {
      if (seenUpper.has(st.ino)) return 0;
      seenUpper.add(st.ino);
    }
    return st.allocatedBytes ?? st.size;
  };
  const privateAttrs = (path: string, xs: readonly FsXattr[], isRoot: boolean) => {
    for (const x of xs) {
      const s = privateSuffix(x.name, prefix);
      try {
        if (s === 'origin' && decodeOvlFb(x.value, path) !== undefined) {
          originHandles++;
          if (isRoot) rootOrigin = true;
        } else if (s === 'protattr') protattr.push({ path, ...decodeProtattr(x.value, path) });
      } catch (err) {
        problems.push(err instanceof Error ? `${path}: ${err.message}` : String(err));
      }
    }
  };

  const walk = async (dirNode: OverlayNode): Promise<number> => {
    const up = dirNode.upper!;
    let total = 0;
    for (const name of (await ufs.readdir(up.path)).map((e) => e.name)) {
      const path = join(dirNode.path, name);
      const upath = join(up.path, name);
      const st = await ufs.stat(upath);
      const xs = ufs.xattrs ? await ufs.xattrs(upath) : [];
      privateAttrs(path, xs, false);
      const entry: LayerEntry = { layer: 'upper', path: upath, stat: st, xattrs: xs };
      const bytes = occupied(st);
      const counterpart = await view.childOf(dirNode, name, { lowerOnly: true });
      const push = (cls: UpperClass, hiddenBytes = 0, sameDataAs?: UpperEntry['sameDataAs']) => entries.push({ path, kind: st.kind, class: cls, upperBytes: bytes, hiddenBytes, ...(sameDataAs ? { sameDataAs } : {}) });
      if (await view.isWhiteout(entry, up.opaque === 'x')) {
        push('whiteout', await bytesOf(counterpart));
        total += bytes;
        continue;
      }
      const node = await view.childOf(dirNode, name);
      if (node === undefined) continue;
      if (node.kind === 'dir') {
        if (node.redirect) redirect = true;
        if (node.opaque) push('opaque-dir', await bytesOf(counterpart));
        else if (node.redirect) push('redirect-dir');
        else if (counterpart === undefined) push('new');
        else if (counterpart.kind !== 'dir') push('copied-up-changed', await bytesOf(counterpart));
        else push('merged-dir');
        const sub = bytes + (await walk(node));
        dirBytes.set(path, sub);
        total += sub;
        continue;
      }
      total += bytes;
      if (node.metacopy) {
        metacopy = true;
        push('metadata-only');
      } else if (counterpart === undefined) push('new');
      else if (counterpart.kind !== node.kind) push('copied-up-changed', await bytesOf(counterpart));
      else {
        let same: boolean;
        if (node.kind === 'file') same = st.size === counterpart.meta.stat.size && (await sameData(ufs, upath, view.layer(counterpart.data!.layer).fs, counterpart.data!.path));
        else if (node.kind === 'symlink') same = (await ufs.readlink(upath)) === (await view.layer(counterpart.meta.layer).fs.readlink(counterpart.meta.path));
        else same = st.rdev?.major === counterpart.meta.stat.rdev?.major && st.rdev?.minor === counterpart.meta.stat.rdev?.minor;
        if (!same) push('copied-up-changed');
        else {
          const c = counterpart.meta.stat;
          const meta = st.mode === c.mode && st.uid === c.uid && st.gid === c.gid && sameXattrs(await view.visibleXattrs(node), await view.visibleXattrs(counterpart));
          const d = node.kind === 'file' ? counterpart.data : undefined;
          push(meta ? 'copied-up-identical' : 'metadata-only', 0, d !== undefined && d.layer !== 'upper' ? { layer: d.layer, path: d.path } : undefined);
        }
      }
    }
    return total;
  };

  const root = await view.resolve('/');
  privateAttrs('/', root.upper?.xattrs ?? [], true);
  const upperBytes = await walk(root);

  const totals = Object.fromEntries(UPPER_CLASSES.map((c) => [c, { count: 0, upperBytes: 0, hiddenBytes: 0 }])) as Record<UpperClass, { count: number; upperBytes: number; hiddenBytes: number }>;
  for (const e of entries) {
    const t = totals[e.class];
    t.count++;
    if (e.kind !== 'dir') t.upperBytes += e.upperBytes;
    else t.upperBytes += e.upperBytes;
    t.hiddenBytes += e.hiddenBytes;
  }
  const top = options.top ?? 20;
  const byBytes = <T extends { upperBytes: number; path: string }>(a: T, b: T) => b.upperBytes - a.upperBytes || (a.path < b.path ? -1 : 1);
  const workdir = options.workdir ? await analyzeWorkdir(options.workdir) : undefined;
  const index = rootOrigin || (workdir !== undefined && (workdir as { hasIndexDir?: boolean }).hasIndexDir === true);
  return {
    entries,
    totals,
    upperBytes,
    topFiles: entries.filter((e) => e.kind !== 'dir').sort(byBytes).slice(0, top),
    topDirs: [...dirBytes].map(([path, upperBytes]) => ({ path, upperBytes })).sort(byBytes).slice(0, top),
    flags: { index, metacopy, redirect, volatile: workdir?.volatile ?? false, xinoDetectable: false, originHandles, userxattr: prefix === 'user', offlineLowerChangesUnsafe: index || metacopy || redirect },
    workdir,
    protattr,
    problems,
  };
}
