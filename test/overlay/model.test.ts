/**
 * The userspace overlay view against a plain model of overlayfs semantics: random lower stacks and
 * uppers (files, dirs, symlinks, both whiteout forms, opaque y/x, redirects, metacopy, hard links,
 * user and escaped xattrs) built as in-memory filesystems; every merged path's readdir, stat,
 * readlink, content and xattrs must equal the model's, and the analysis figures the model's.
 *
 * The model merges whole trees top-down (one recursive pass over plain objects) where the view
 * resolves one path at a time through the FileSystem interface.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import '../helpers/setup.ts';
import { CorruptImageError, NotFoundError } from '../../src/errors.ts';
import { readAt } from '../../src/io/disk.ts';
import { OverlayFileSystem } from '../../src/fs/overlay/index.ts';
import { MemoryFileSystem, type MemNode } from '../helpers/memfs.ts';
import { NAMES, build, opArb } from './gen.ts';

const P = 'trusted.overlay.';
const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array | undefined) => (b === undefined ? undefined : new TextDecoder().decode(b));

// ---- the model ---------------------------------------------------------------------------------

interface Layered {
  readonly layer: 'upper' | number;
  readonly node: MemNode;
}

interface Expect {
  readonly kind: string;
  /** The node stat/xattrs come from, and the node holding the bytes (files). */
  readonly meta: MemNode;
  readonly data: MemNode | undefined;
  readonly error: boolean;
  readonly children: Map<string, Expect> | undefined;
  readonly names: string[];
}

const isWhiteout = (n: MemNode, parent: MemNode) =>
  (n.kind === 'chardev' && n.rdev?.major === 0 && n.rdev.minor === 0) || (dec(parent.xattrs.get(P + 'opaque')) === 'x' && n.kind === 'file' && n.data.byteLength === 0 && n.xattrs.has(P + 'whiteout'));
const opaqueY = (n: MemNode) => n.kind === 'dir' && dec(n.xattrs.get(P + 'opaque')) === 'y';

/** Walks an absolute path in one lower layer: the node, and whether the search stops after this layer. */
function walkAbsolute(root: MemNode, parts: string[], wantDir: boolean): { node?: MemNode; stop: boolean } {
  let dir = root;
  let stop = false;
  for (let i = 0; i < parts.length; i++) {
    const c = dir.children!.get(parts[i]!);
    if (c === undefined) return { stop };
    if (isWhiteout(c, dir)) return { stop: true };
    const last = i === parts.length - 1;
    if (!last) {
      if (c.kind !== 'dir') return { stop: true };
      if (opaqueY(c)) stop = true;
      dir = c;
      continue;
    }
    if (c.kind !== 'dir' && wantDir) return { stop: true };
    return { node: c, stop: stop || c.kind !== 'dir' || opaqueY(c) };
  }
  return { stop };
}

/** The merged child `name` of a dir whose layers are `upper` (maybe) and `lowers` (top-down). */
function lookup(upper: MemNode | undefined, lowers: Layered[], lowerRoots: Layered[], name: string): Expect | undefined {
  let u = upper?.children!.get(name);
  if (u && isWhiteout(u, upper!)) return undefined;
  let absolute: string[] | undefined;
  let rel = name;
  let stop = false;
  if (u) {
    const redirect = dec(u.xattrs.get(P + 'redirect'));
    const metacopy = u.kind === 'file' && u.xattrs.has(P + 'metacopy');
    if (u.kind !== 'dir' && !metacopy) return leaf(u, u);
    if (opaqueY(u)) stop = true;
    else if (redirect?.startsWith('/')) absolute = redirect.slice(1).split('/');
    else if (redirect !== undefined) rel = redirect;
  }
  const found: MemNode[] = [];
  const wantDir = u?.kind === 'dir';
  const stack = absolute ? lowerRoots : lowers;
  for (const l of stack) {
    if (stop) break;
    let n: MemNode | undefined;
    if (absolute) {
      const r = walkAbsolute(l.node, absolute, wantDir || found[0]?.kind === 'dir');
      n = r.node;
      stop = r.stop;
    } else {
      n = l.node.children!.get(rel);
      if (n && isWhiteout(n, l.node)) break;
      if (n && n.kind !== 'dir' && (wantDir || found[0]?.kind === 'dir')) break;
      if (n) stop = n.kind !== 'dir' || opaqueY(n);
    }
    if (n) found.push(n);
  }
  if (u === undefined && found.length === 0) return undefined;
  const top = u ?? found[0]!;
  if (top.kind !== 'dir') {
    if (u === undefined) return leaf(top, top);
    const data = found[0];
    return data?.kind === 'file' ? leaf(u, data) : { kind: 'file', meta: u, data: undefined, error: true, children: undefined, names: [] };
  }
  return dir(top, u ? [{ layer: 'upper', node: u }, ...found.map((node, i) => ({ layer: i, node }))] : found.map((node, i) => ({ layer: i, node })), lowerRoots);
}

function leaf(meta: MemNode, data: MemNode): Expect {
  return { kind: meta.kind, meta, data: meta.kind === 'file' ? data : undefined, error: false, children: undefined, names: [] };
}

function dir(meta: MemNode, layers: Layered[], lowerRoots: Layered[]): Expect {
  const upper = layers[0]?.layer === 'upper' ? layers[0].node : undefined;
  const lowers = upper ? layers.slice(1) : layers;
  const names: string[] = [];
  const seen = new Set<string>();
  for (const l of layers) {
    for (const [name, c] of l.node.children!) {
      if (seen.has(name)) continue;
      seen.add(name);
      if (!isWhiteout(c, l.node)) names.push(name);
    }
  }
  const children = new Map<string, Expect>();
  for (const name of names) {
    const e = lookup(upper, lowers, lowerRoots, name);
    if (e) children.set(name, e);
  }
  return { kind: 'dir', meta, data: undefined, error: false, children, names };
}

function model(upper: MemoryFileSystem, lowers: MemoryFileSystem[]): Expect {
  const roots = lowers.map((fs, i) => ({ layer: i, node: fs.root }));
  return dir(upper.root, [{ layer: 'upper', node: upper.root }, ...roots], roots);
}

// ---- random layers -----------------------------------------------------------------------------

// ---- comparison --------------------------------------------------------------------------------

interface Inos {
  readonly byIno: Map<number, MemNode>;
  readonly byNode: Map<MemNode, number>;
}

async function compare(view: OverlayFileSystem, e: Expect, path: string, inos: Inos): Promise<void> {
  if (e.error) {
    await assert.rejects(view.stat(path), CorruptImageError, `${path}: a metacopy without data is corrupt`);
    return;
  }
  const st = await view.stat(path);
  assert.equal(st.kind, e.kind, `${path}: kind`);
  assert.equal(st.mode, e.meta.mode, `${path}: mode`);
  assert.equal(st.uid, e.meta.uid, `${path}: uid`);
  assert.equal(st.gid, e.meta.gid, `${path}: gid`);
  const want = [...e.meta.xattrs].flatMap(([name, value]) => (name.startsWith(P) ? (name.startsWith(`${P}overlay.`) ? [[P + name.slice(P.length + 8), dec(value)]] : []) : [[name, dec(value)]]));
  assert.deepEqual((await view.xattrs(path)).map((x) => [x.name, dec(x.value)]), want, `${path}: xattrs`);
  // One view ino per model node: hard links share it, different nodes never do.
  assert.notEqual(st.ino, undefined, `${path}: ino`);
  assert.equal(inos.byIno.get(st.ino!) ?? e.meta, e.meta, `${path}: ino ${st.ino} names two nodes`);
  assert.equal(inos.byNode.get(e.meta) ?? st.ino, st.ino, `${path}: one node with two inos`);
  inos.byIno.set(st.ino!, e.meta);
  inos.byNode.set(e.meta, st.ino!);
  const node = await view.resolve(path);
  assert.equal(node.metacopy, e.meta.xattrs.has(P + 'metacopy') && e.kind === 'file', `${path}: resolve().metacopy`);
  assert.equal(node.opaque, path !== '/' && node.upper !== undefined && opaqueY(e.meta), `${path}: resolve().opaque`);
  if (e.kind === 'file') assert.equal(node.data?.layer === 'upper', e.data === e.meta && node.upper !== undefined, `${path}: resolve().data layer`);
  if (e.kind === 'symlink') assert.equal(await view.readlink(path), e.meta.target, `${path}: target`);
  if (e.kind === 'chardev') assert.deepEqual(st.rdev, e.meta.rdev, `${path}: rdev`);
  if (e.kind === 'file') {
    const disk = await view.openFile(path);
    assert.deepEqual(await readAt(disk, 0, disk.size), e.data!.data, `${path}: content`);
  }
  if (e.kind === 'dir') {
    assert.deepEqual((await view.readdir(path)).map((x) => x.name), e.names, `${path}: names`);
    for (const name of NAMES) {
      const child = e.children!.get(name);
      const p = `${path === '/' ? '' : path}/${name}`;
      if (child) await compare(view, child, p, inos);
      else await assert.rejects(view.stat(p), NotFoundError, `${p}: absent`);
    }
  }
}

describe('overlay view against the model', () => {
  test('every merged path: names, stat, target, content, xattrs, hard links', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.array(opArb(false), { maxLength: 25 }), { minLength: 1, maxLength: 3 }), fc.array(opArb(true), { maxLength: 30 }), async (lowerOps, upperOps) => {
        const lowers = lowerOps.map(build);
        const upper = build(upperOps);
        const view = new OverlayFileSystem({ upper: { fs: upper, root: '/' }, lowers: lowers.map((fs) => ({ fs, root: '/' })), xattrPrefix: 'trusted' });
        await compare(view, model(upper, lowers), '/', { byIno: new Map(), byNode: new Map() });
      }),
      { numRuns: 300 },
    );
  });

  test('layers under a root directory, userxattr names, auto detection', async () => {
    const lower = new MemoryFileSystem();
    lower.put('base/etc/a', lower.node('file', { data: enc('lower') }));
    lower.put('base/etc/b', lower.node('file', { data: enc('b') }));
    const upper = new MemoryFileSystem();
    const etc = upper.node('dir', {});
    upper.put('up/etc', etc);
    upper.get('up')!.xattrs.set('user.overlay.uuid', new Uint8Array(16));
    upper.put('up/etc/a', upper.node('chardev', { rdev: { major: 0, minor: 0 } }));
    upper.put('up/etc/c', upper.node('file', { data: enc('new') }));
    etc.xattrs.set('user.overlay.overlay.x', enc('1'));
    etc.xattrs.set('trusted.overlay.opaque', enc('y'));
    const view = new OverlayFileSystem({ upper: { fs: upper, root: '/up' }, lowers: [{ fs: lower, root: '/base' }] });
    assert.equal(await view.xattrPrefix(), 'user');
    assert.deepEqual((await view.readdir('/etc')).map((e) => e.name).sort(), ['b', 'c']);
    assert.deepEqual((await view.xattrs('/etc')).map((x) => x.name).sort(), ['trusted.overlay.opaque', 'user.overlay.x']);
  });
});

describe('overlay view: bad xattr values are typed errors', () => {
  const cases: [string, string, Uint8Array, string][] = [
    ['redirect', 'dir', enc('a/b'), 'redirect'],
    ['redirect', 'dir', enc('//b'), 'redirect'],
    ['redirect', 'dir', new Uint8Array(0), 'redirect'],
    ['redirect', 'dir', enc('/' + 'x/'.repeat(3000)), 'redirect'],
    ['opaque', 'dir', enc('n'), 'opaque'],
    ['metacopy', 'symlink', new Uint8Array(0), 'metacopy'],
    ['metacopy', 'file', new Uint8Array([1, 4, 0, 0]), 'metacopy'],
  ];
  for (const [suffix, kind, value, field] of cases) {
    test(`${suffix} ${JSON.stringify(dec(value)?.slice(0, 12))} on a ${kind}`, async () => {
      const lower = new MemoryFileSystem();
      lower.put('x', lower.node('file', { data: enc('data') }));
      const upper = new MemoryFileSystem();
      const n = upper.node(kind as 'dir', {});
      n.xattrs.set(P + suffix, value);
      upper.put('x', n);
      const view = new OverlayFileSystem({ upper: { fs: upper, root: '/' }, lowers: [{ fs: lower, root: '/' }], xattrPrefix: 'trusted' });
      await assert.rejects(view.stat('/x'), (err: unknown) => err instanceof CorruptImageError && err.format === 'overlayfs' && err.field === field);
    });
  }
});

