/**
 * Hostile overlayfs uppers: random upper trees over 1–3 random lowers (in-memory filesystems) whose
 * private xattrs (trusted.overlay.* and user.overlay.*) hold valid, truncated, oversized, non-UTF-8
 * and nonsensical values — redirects at missing paths, at themselves, at ancestors, at files, with
 * "." / ".." / empty components and NULs, chains and cycles across layers; metacopy on dirs and
 * symlinks; whiteout devices with other numbers; opaque on files. For every case the whole view is
 * walked, the upper analysed, and the view written as SquashFS and read back.
 *
 * What must hold: every failure is a LivestickError naming a path or a structure (never a
 * TypeError, RangeError or stack overflow); each case ends within its deadline; one lookup touches the
 * layers a bounded number of times whatever the xattr values; and a view that reads without error is
 * consistent (listed names resolve, no duplicates, no whiteouts, stat size = file size) and comes back
 * from its SquashFS image unchanged. A second property runs every xattr value decoder on arbitrary
 * bytes.
 *
 * The layers count their calls and yield to the event loop now and then, so a lookup that loops on
 * resolved promises still lets the deadline timer fire, and a hard call budget stops it regardless.
 * Each case draws a hostility (0–3): how often a private value is anything rather than a value its
 * decoder accepts, so clean cases (which must merge unchanged) stay common. The property also checks
 * that the generator reaches metacopy, both redirect forms, opaque y/x and merged dirs in cases that
 * merge. `FUZZ_CASES=n` runs more cases; `FUZZ_STATS=1` prints the outcomes and typed errors met.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import '../helpers/setup.ts';
import { CorruptImageError, LivestickError, NotFoundError } from '../../src/errors.ts';
import { MemoryDisk, readAt } from '../../src/io/disk.ts';
import type { FileSystem, FsEntry, FsStat, FsXattr } from '../../src/fs/filesystem.ts';
import {
  OverlayFileSystem,
  analyzeUpper,
  decodeImpure,
  decodeMetacopy,
  decodeNlink,
  decodeOpaque,
  decodeOvlFb,
  decodeProtattr,
  decodeRedirect,
  decodeUuid,
  encodeMetacopy,
  encodeNlink,
  encodeOpaque,
  encodeOvlFb,
  encodeProtattr,
  encodeRedirect,
  privateSuffix,
  visibleXattrName,
} from '../../src/fs/overlay/index.ts';
import { treeFromFileSystem } from '../../src/fs/squashfs/from-fs.ts';
import { SquashfsFileSystem } from '../../src/fs/squashfs/filesystem.ts';
import { SquashfsReader, writeSquashfs } from '../../src/fs/squashfs/index.ts';
import { MemoryFileSystem, type MemNode } from '../helpers/memfs.ts';

const seedFor = (pinned: number) => (process.env.FC_SEED !== undefined ? Number(process.env.FC_SEED) : pinned);
const enc = (s: string) => new TextEncoder().encode(s);
const DEADLINE_MS = 2000;
/** Layer calls one case may make at most: far above any real case (a few thousand), so only a loop reaches it. */
const CALL_BUDGET = 200_000;
const MAX_TREE_DEPTH = 4;

// ---- layers that count their calls ------------------------------------------------------------

class BudgetExceeded extends Error {}

class Counter {
  calls = 0;
  constructor(readonly budget = CALL_BUDGET) {}
  async tick(): Promise<void> {
    if (++this.calls > this.budget) throw new BudgetExceeded(`more than ${this.budget} layer calls in one case`);
    if (this.calls % 256 === 0) await new Promise((r) => setImmediate(r));
  }
}

/** A MemoryFileSystem whose every call is counted against the case's budget. */
function counted(fs: MemoryFileSystem, c: Counter): FileSystem {
  return {
    type: fs.type,
    label: undefined,
    uuid: undefined,
    readOnly: true,
    stat: async (p) => (await c.tick(), fs.stat(p)),
    readdir: async (p) => (await c.tick(), fs.readdir(p)),
    readlink: async (p) => (await c.tick(), fs.readlink(p)),
    xattrs: async (p) => (await c.tick(), fs.xattrs(p)),
    openFile: async (p) => (await c.tick(), fs.openFile(p)),
    space: () => fs.space(),
    close: () => fs.close(),
  };
}

// ---- hostile values ---------------------------------------------------------------------------

const NAMES = ['a', 'b', 'c'] as const;
const SUFFIXES = ['redirect', 'metacopy', 'opaque', 'whiteout', 'origin', 'impure', 'nlink', 'uuid', 'protattr', 'upper'] as const;

type ValueSpec =
  | { v: 'bytes'; bytes: Uint8Array }
  | { v: 'text'; s: string }
  | { v: 'abs'; parts: string[] }
  | { v: 'rel'; name: string }
  | { v: 'self' }
  | { v: 'ancestor'; k: number }
  | { v: 'big'; len: number; head: string; fill: number }
  | { v: 'deep'; n: number }
  | { v: 'metacopy'; version: number; lenDelta: number; flags: number; algo: number; digest: number }
  | { v: 'fb'; magic: number; lenDelta: number; flags: number; fid: number }
  | { v: 'uuid'; len: number }
  | { v: 'nonutf8'; at: string }
  | { v: 'nul'; at: string }
  | { v: 'valid'; pick: number };

const component = fc.constantFrom('a', 'b', 'c', 'zz', '.', '..', '', 'a\0');
const valueArb: fc.Arbitrary<ValueSpec> = fc.oneof(
  { weight: 2, arbitrary: fc.record({ v: fc.constant('bytes' as const), bytes: fc.uint8Array({ maxLength: 24 }) }) },
  { weight: 5, arbitrary: fc.record({ v: fc.constant('text' as const), s: fc.constantFrom('y', 'x', 'n', '', 'Y', 'yy', 'a', 'i', 'ai', 'ia', 'aa', 'U+1', 'L-3', 'U-0', 'U+', 'X+1', '/a') }) },
  { weight: 5, arbitrary: fc.record({ v: fc.constant('abs' as const), parts: fc.array(fc.oneof({ weight: 6, arbitrary: fc.constantFrom(...NAMES) }, { weight: 1, arbitrary: component }), { minLength: 0, maxLength: 5 }) }) },
  { weight: 3, arbitrary: fc.record({ v: fc.constant('rel' as const), name: fc.constantFrom('a', 'b', 'c', 'zz', '..', '.', 'a/b', '') }) },
  { weight: 2, arbitrary: fc.constant({ v: 'self' as const }) },
  { weight: 2, arbitrary: fc.record({ v: fc.constant('ancestor' as const), k: fc.nat(3) }) },
  { weight: 1, arbitrary: fc.record({ v: fc.constant('big' as const), len: fc.integer({ min: 200, max: 5000 }), head: fc.constantFrom('', '/', '/a/', 'a'), fill: fc.constantFrom(0x61, 0x2f, 0x00, 0xff, 0x79) }) },
  { weight: 1, arbitrary: fc.record({ v: fc.constant('deep' as const), n: fc.integer({ min: 1, max: 2100 }) }) },
  { weight: 3, arbitrary: fc.record({ v: fc.constant('metacopy' as const), version: fc.constantFrom(0, 0, 0, 1), lenDelta: fc.constantFrom(0, 0, 0, -1, 1), flags: fc.nat(255), algo: fc.constantFrom(0, 0, 1, 2), digest: fc.constantFrom(0, 0, 32, 64, 65) }) },
  { weight: 2, arbitrary: fc.record({ v: fc.constant('fb' as const), magic: fc.constantFrom(0xfb, 0xfb, 0xfa), lenDelta: fc.constantFrom(0, 0, -1, 1), flags: fc.nat(8), fid: fc.constantFrom(0, 8, 128, 129) }) },
  { weight: 1, arbitrary: fc.record({ v: fc.constant('uuid' as const), len: fc.constantFrom(15, 16, 17) }) },
  { weight: 1, arbitrary: fc.record({ v: fc.constant('nonutf8' as const), at: fc.constantFrom('/a', 'a', '') }) },
  { weight: 1, arbitrary: fc.record({ v: fc.constant('nul' as const), at: fc.constantFrom('/a', 'a', '') }) },
);

/** A value the suffix's decoder accepts (which does not make it sensible: a redirect may still point anywhere). */
function validValue(suffix: string, pick: number, path: readonly string[]): Uint8Array {
  const name = NAMES[pick % NAMES.length]!;
  switch (suffix) {
    case 'redirect':
      return [enc(`/${name}`), enc(name), enc(`/${NAMES[(pick >> 2) % 3]}/${name}`), valueOf({ v: 'self' }, path), enc(`/${path.slice(0, Math.max(1, path.length - 1)).join('/') || name}`), enc('/a'.repeat(1 + (pick % 5)))][pick % 6]!;
    case 'metacopy':
      return [new Uint8Array(0), new Uint8Array(0), Uint8Array.from([0, 4, 0, 0]), Uint8Array.from([0, 36, 1, 1, ...new Array(32).fill(pick)])][pick % 4]!;
    case 'opaque':
      return enc(pick % 2 === 0 ? 'y' : 'x');
    case 'origin':
    case 'upper':
      return pick % 3 === 0 ? new Uint8Array(0) : valueOf({ v: 'fb', magic: 0xfb, lenDelta: 0, flags: pick % 8, fid: 8 }, path);
    case 'impure':
      return enc('y');
    case 'nlink':
      return enc(['U+1', 'L-3', 'U+0'][pick % 3]!);
    case 'uuid':
      return new Uint8Array(16).fill(pick);
    case 'protattr':
      return enc(['a', 'i', 'ai', ''][pick % 4]!);
    default:
      return new Uint8Array(0);
  }
}

function valueOf(spec: ValueSpec, path: readonly string[], suffix = ''): Uint8Array {
  switch (spec.v) {
    case 'valid':
      return validValue(suffix, spec.pick, path);
    case 'bytes':
      return spec.bytes;
    case 'text':
      return enc(spec.s);
    case 'abs':
      return enc(`/${spec.parts.join('/')}`);
    case 'rel':
      return enc(spec.name);
    case 'self':
      return enc(`/${path.join('/')}`);
    case 'ancestor':
      return enc(`/${path.slice(0, Math.min(spec.k, Math.max(0, path.length - 1))).join('/')}`);
    case 'big': {
      const out = new Uint8Array(spec.len).fill(spec.fill);
      out.set(enc(spec.head).subarray(0, spec.len));
      return out;
    }
    case 'deep':
      return enc('/a'.repeat(spec.n));
    case 'metacopy': {
      const n = Math.max(0, 4 + spec.digest + spec.lenDelta);
      const out = new Uint8Array(n);
      out.set([spec.version, (4 + spec.digest) & 0xff, spec.flags, spec.algo].slice(0, n));
      for (let i = 4; i < n; i++) out[i] = i;
      return out;
    }
    case 'fb': {
      const len = 21 + spec.fid;
      const n = Math.max(0, len + spec.lenDelta);
      const out = new Uint8Array(n);
      out.set([0, spec.magic, len & 0xff, spec.flags, 1].slice(0, n));
      for (let i = 5; i < n; i++) out[i] = (i * 7) & 0xff;
      return out;
    }
    case 'uuid':
      return new Uint8Array(spec.len).fill(0x42);
    case 'nonutf8':
      return Uint8Array.from([...enc(spec.at), 0xff, 0xfe, 0x80]);
    case 'nul':
      return Uint8Array.from([...enc(spec.at), 0, 0x62]);
  }
}

// ---- random layers ----------------------------------------------------------------------------

type Act =
  | { t: 'node'; kind: 'file' | 'dir' | 'symlink' | 'chardev' | 'blockdev' | 'fifo'; n: number; major: number; minor: number }
  | { t: 'link'; other: string[] }
  /** A metadata-only copy-up, as the kernel makes it: a stub over a file of a layer below, at its path. */
  | { t: 'stub'; mode: number }
  | { t: 'private'; ns: 'trusted' | 'user'; suffix: string; value: ValueSpec }
  | { t: 'plain'; name: string; value: Uint8Array };

interface Op {
  /** Where a node goes; xattrs go on an existing node instead, the `pick`-th in walk order. */
  readonly path: string[];
  readonly pick: number;
  readonly act: Act;
}

function existingPaths(fs: MemoryFileSystem): string[][] {
  const out: string[][] = [];
  const visit = (n: MemNode, path: string[]) => {
    out.push(path);
    for (const [name, c] of n.children ?? []) visit(c, [...path, name]);
  };
  visit(fs.root, []);
  return out;
}

/** Shallow paths are likelier, so layers overlap often. */
const pathArb = (min: number) => fc.integer({ min: 0, max: 5 }).chain((d) => fc.array(fc.constantFrom(...NAMES), { minLength: Math.max(min, [0, 1, 1, 1, 2, 3][d]!), maxLength: Math.max(min, [0, 1, 1, 1, 2, 3][d]!) }));
/** The actions on one layer; `hostile` (0–3) is how often a private value is drawn from anything rather than from its valid shapes. */
const actArb = (hostile: number): fc.Arbitrary<Act> => fc.oneof(
  { weight: 6, arbitrary: fc.record({ t: fc.constant('node' as const), kind: fc.constantFrom('file', 'file', 'dir', 'dir', 'symlink', 'chardev', 'chardev', 'blockdev', 'fifo'), n: fc.nat(255), major: fc.constantFrom(0, 0, 0, 1, 255), minor: fc.constantFrom(0, 0, 0, 1, 3) }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('link' as const), other: pathArb(1) }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('stub' as const), mode: fc.constantFrom(0o600, 0o640, 0o755) }) },
  { weight: 8, arbitrary: fc.record({ t: fc.constant('private' as const), ns: fc.constantFrom('trusted', 'trusted', 'user'), suffix: fc.oneof({ weight: 10, arbitrary: fc.constantFrom(...SUFFIXES, 'redirect', 'redirect', 'opaque', 'opaque', 'metacopy', 'metacopy', 'metacopy', 'whiteout') }, { weight: hostile, arbitrary: fc.constantFrom('', 'overlay.opaque', 'overlay.', 'bogus') }), value: fc.oneof({ weight: 12 - 3 * hostile, arbitrary: fc.record({ v: fc.constant('valid' as const), pick: fc.nat(255) }) }, { weight: 3 * hostile, arbitrary: valueArb }) }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('plain' as const), name: fc.constantFrom('user.k', 'security.selinux', 'trusted.k', 'user.overlay.overlay.opaque', 'trusted.overlay.overlay.redirect'), value: fc.uint8Array({ maxLength: 40 }) }) },
);
const opArb = (hostile: number): fc.Arbitrary<Op> => fc.record({ path: pathArb(1), pick: fc.nat(63), act: actArb(hostile) });

/** A layer from its ops; `below` are the layers under it (a valid metacopy value goes only on a file one of them also has). */
function build(ops: readonly Op[], below: readonly MemoryFileSystem[] = []): MemoryFileSystem {
  const fs = new MemoryFileSystem();
  // Nodes first, then the xattrs, which go on nodes that exist.
  const isXattr = (op: Op) => op.act.t === 'private' || op.act.t === 'plain';
  for (const op of [...ops.filter((o) => !isXattr(o)), ...ops.filter(isXattr)]) {
    const { act } = op;
    let path = op.path;
    if (isXattr(op) && op.pick >= 0) {
      // A valid value goes on a node it means something on; a hostile one on any node.
      const fits = (q: string[]): boolean => {
        if (act.t !== 'private' || act.value.v !== 'valid') return true;
        const n = fs.get(q.join('/'))!;
        if (act.suffix === 'metacopy') return n.kind === 'file' && below.some((l) => l.get(q.join('/'))?.kind === 'file');
        if (act.suffix === 'redirect' || act.suffix === 'opaque') return n.kind === 'dir' && q.length > 0;
        if (act.suffix === 'whiteout') return n.kind === 'file' && n.data.byteLength === 0;
        return true;
      };
      const all = existingPaths(fs).filter(fits);
      if (all.length === 0) continue;
      path = all[op.pick % all.length]!;
    }
    const p = path.join('/');
    const at = fs.get(p);
    switch (act.t) {
      case 'node': {
        if (path.length === 0) break;
        const { kind, n } = act;
        const node =
          kind === 'file'
            ? fs.node('file', { data: enc(`${p}:${n};`.repeat(n % 7)), mode: [0o644, 0o600, 0o4755, 0o7777][n % 4]!, uid: n % 3, gid: n % 5 })
            : kind === 'dir'
              ? fs.node('dir', { mode: [0o755, 0o700, 0o1777][n % 3]! })
              : kind === 'symlink'
                ? fs.node('symlink', { target: `t${n}` })
                : kind === 'fifo'
                  ? fs.node('fifo', {})
                  : fs.node(kind, { rdev: { major: act.major, minor: act.minor } });
        fs.put(p, node);
        break;
      }
      case 'stub': {
        const files = below.flatMap((l) => existingPaths(l).filter((q) => l.get(q.join('/'))?.kind === 'file'));
        if (files.length === 0) break;
        const q = files[op.pick % files.length]!;
        const stub = fs.node('file', { mode: act.mode, uid: 7 });
        stub.xattrs.set('trusted.overlay.metacopy', new Uint8Array(0));
        fs.put(q.join('/'), stub);
        break;
      }
      case 'link': {
        const src = fs.get(act.other.join('/'));
        if (path.length > 0 && src !== undefined && src.kind !== 'dir' && fs.put(p, src)) src.links++;
        break;
      }
      case 'private':
        at?.xattrs.set(`${act.ns}.overlay.${act.suffix}`, valueOf(act.value, path, act.suffix));
        break;
      case 'plain':
        at?.xattrs.set(act.name, act.value);
        break;
    }
  }
  return fs;
}

interface Case {
  readonly hostile: number;
  readonly lowers: readonly (readonly Op[])[];
  readonly upper: readonly Op[];
  readonly prefix: 'trusted' | 'user' | 'auto';
  readonly work: readonly ('work/x' | 'work/incompat/volatile' | 'index/y')[] | undefined;
}

const caseArb: fc.Arbitrary<Case> = fc.nat(3).chain((hostile) =>
  fc.record({
    hostile: fc.constant(hostile),
    lowers: fc.array(fc.array(opArb(hostile), { minLength: 4, maxLength: 18 }), { minLength: 1, maxLength: 3 }),
    upper: fc.array(opArb(hostile), { minLength: 6, maxLength: 30 }),
    prefix: fc.constantFrom('trusted', 'trusted', 'user', 'auto'),
    work: fc.option(fc.subarray(['work/x', 'work/incompat/volatile', 'index/y'] as const), { nil: undefined }),
  }),
);

// ---- running one case -------------------------------------------------------------------------

/** A typed error that says where: a LivestickError whose message or file names a path or a structure. */
function assertTyped(err: unknown, stage: string): asserts err is LivestickError {
  if (err instanceof BudgetExceeded) assert.fail(`${stage}: ${err.message} (a lookup loops)`);
  if (!(err instanceof LivestickError)) assert.fail(`${stage}: untyped ${(err as Error)?.name ?? typeof err}: ${(err as Error)?.stack ?? String(err)}`);
  assert.ok(err.message.length > 0, `${stage}: a ${err.name} without a message`);
  const says = err.file !== undefined || err.message.includes('/') || (err instanceof CorruptImageError && err.field !== '');
  assert.ok(says, `${stage}: ${err.name} names neither a path nor a structure: ${err.message}`);
}

interface Seen {
  readonly kind: string;
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  readonly size?: number;
  readonly data?: string;
  readonly target?: string;
  readonly rdev?: string;
  readonly xattrs: string;
  readonly names?: string;
}

const xattrKey = (xs: readonly FsXattr[]) =>
  xs
    .map((x) => `${x.name}=${Buffer.from(x.value).toString('hex')}`)
    .sort()
    .join(',');
const join = (dir: string, name: string) => (dir === '/' ? `/${name}` : `${dir}/${name}`);

async function readAll(fs: FileSystem, path: string, size: number, what: string): Promise<string> {
  const disk = await fs.openFile(path);
  try {
    assert.equal(disk.size, size, `${what} ${path}: stat says ${size} bytes, the open file has ${disk.size}`);
    return Buffer.from(await readAt(disk, 0, disk.size)).toString('hex');
  } finally {
    await disk.close();
  }
}

/**
 * Every node of `fs` below `/`: what a merge would carry. On the view, `onNode` checks each lookup;
 * a typed CorruptImageError on one node is recorded and its subtree skipped; a listed name that is not
 * found is an inconsistency.
 */
async function snapshot(fs: FileSystem, what: string, onNode?: (path: string) => Promise<void>, errors?: string[]): Promise<Map<string, Seen>> {
  const out = new Map<string, Seen>();
  const visit = async (path: string): Promise<void> => {
    let st: FsStat;
    try {
      await onNode?.(path);
      st = await fs.stat(path);
      const xattrs = xattrKey((await fs.xattrs?.(path)) ?? []);
      const base = { kind: st.kind, mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, xattrs };
      if (st.kind === 'file') out.set(path, { ...base, size: st.size, data: await readAll(fs, path, st.size, what) });
      else if (st.kind === 'symlink') out.set(path, { ...base, target: await fs.readlink(path) });
      else if (st.kind === 'chardev' || st.kind === 'blockdev') {
        assert.ok(st.rdev !== undefined, `${what} ${path}: a device without rdev`);
        assert.ok(!(st.kind === 'chardev' && st.rdev.major === 0 && st.rdev.minor === 0), `${what} ${path}: a whiteout is visible`);
        out.set(path, { ...base, rdev: `${st.rdev.major}:${st.rdev.minor}` });
      } else if (st.kind !== 'dir') out.set(path, base);
      if (st.kind !== 'dir') return;
      const entries: FsEntry[] = await fs.readdir(path);
      const names = entries.map((e) => e.name);
      assert.equal(new Set(names).size, names.length, `${what} ${path}: duplicate names in [${names.join(', ')}]`);
      out.set(path, { ...base, names: [...names].sort().join('/') });
      for (const e of entries) {
        const child = join(path, e.name);
        try {
          await fs.stat(child);
        } catch (err) {
          if (err instanceof NotFoundError) assert.fail(`${what} ${path}: readdir lists ${e.name}, but ${child} is not found: ${err.message}`);
          throw err;
        }
        await visit(child);
      }
    } catch (err) {
      if (errors === undefined || !(err instanceof CorruptImageError)) throw err;
      errors.push(`${path}: ${err.message}`);
    }
  };
  await visit('/');
  return out;
}

async function withDeadline<T>(what: string, work: () => Promise<T>, ms = DEADLINE_MS): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not done within ${ms} ms (a hang?)`)), ms);
  });
  try {
    return await Promise.race([work(), deadline]);
  } finally {
    clearTimeout(timer);
  }
}

interface Outcome {
  walkErrors: number;
  typedFailures: number;
  merged: boolean;
  /** Overlay features the walk resolved successfully (to check the generator reaches them). */
  readonly features: Set<string>;
  readonly messages: string[];
}

async function runCase(c: Case): Promise<Outcome> {
  const counter = new Counter();
  const lowerFss: MemoryFileSystem[] = [];
  for (let i = c.lowers.length - 1; i >= 0; i--) lowerFss.unshift(build(c.lowers[i]!, lowerFss));
  const upperFs = build(c.upper, lowerFss);
  const layers = () => ({
    upper: { fs: counted(upperFs, counter), root: '/' },
    lowers: lowerFss.map((fs) => ({ fs: counted(fs, counter), root: '/' })),
    xattrPrefix: c.prefix,
  });
  const outcome: Outcome = { walkErrors: 0, typedFailures: 0, merged: false, features: new Set(), messages: [] };

  // 1. The walk: every node through the FileSystem interface, and each lookup's work bounded by the
  // layers (one name per layer, an absolute redirect walked at most as deep as the layer's tree), not
  // by the xattr values.
  const view = new OverlayFileSystem(layers());
  const perLookup = 4 + (lowerFss.length + 1) * (4 + 2 * (MAX_TREE_DEPTH + 1));
  const walkErrors: string[] = [];
  let walked: Map<string, Seen> | undefined;
  try {
    await view.resolve('/');
    walked = await snapshot(
      view,
      'view',
      async (path) => {
        if (path === '/') return;
        const before = counter.calls;
        try {
          const n = await view.resolve(path);
          if (n.metacopy) outcome.features.add('metacopy');
          if (n.kind === 'dir' && n.redirect !== undefined) outcome.features.add(n.redirect.absolute ? 'absolute redirect' : 'relative redirect');
          if (n.opaque) outcome.features.add('opaque dir');
          if (n.upper?.opaque === 'x') outcome.features.add('opaque x');
          if (n.kind === 'dir' && n.lowers.length > 1) outcome.features.add('dir merged from two lowers');
          if (n.lowers.some((e) => e.redirect !== undefined)) outcome.features.add('redirect in a lower');
        } finally {
          assert.ok(counter.calls - before <= perLookup, `resolve(${path}) made ${counter.calls - before} layer calls (bound ${perLookup})`);
        }
      },
      walkErrors,
    );
  } catch (err) {
    if (err instanceof assert.AssertionError) throw err;
    assertTyped(err, 'walk');
    outcome.typedFailures++;
    outcome.messages.push(err.message);
  }
  outcome.walkErrors = walkErrors.length;
  outcome.messages.push(...walkErrors);

  // 2. The analysis of the upper, on a fresh view.
  try {
    const work = c.work === undefined ? undefined : new MemoryFileSystem();
    for (const p of c.work ?? []) work!.put(p, work!.node('file', {}));
    const r = await analyzeUpper(new OverlayFileSystem(layers()), { top: 5, ...(work ? { workdir: { fs: counted(work, counter), root: '/' } } : {}) });
    const paths = r.entries.map((e) => e.path);
    assert.equal(new Set(paths).size, paths.length, `analyzeUpper: an upper path classified twice in [${paths.join(', ')}]`);
    for (const e of r.entries) assert.ok(Number.isSafeInteger(e.upperBytes) && e.upperBytes >= 0 && Number.isSafeInteger(e.hiddenBytes) && e.hiddenBytes >= 0, `analyzeUpper: ${e.path} bytes ${e.upperBytes}/${e.hiddenBytes}`);
  } catch (err) {
    if (err instanceof assert.AssertionError) throw err;
    assertTyped(err, 'analyzeUpper');
    outcome.typedFailures++;
    outcome.messages.push(err.message);
  }

  // 3. The merge's path: the view as a writer tree, written as SquashFS and read back.
  let image: Map<string, Seen> | undefined;
  try {
    const tree = await treeFromFileSystem(new OverlayFileSystem(layers()));
    const disk = new MemoryDisk(0);
    await writeSquashfs(tree, disk, { compressor: 'gzip', threads: 0, mkfsTime: 1_700_000_000 });
    const reader = await SquashfsReader.open(disk);
    image = await snapshot(new SquashfsFileSystem(reader, disk.size), 'image');
    outcome.merged = true;
  } catch (err) {
    if (err instanceof assert.AssertionError) throw err;
    assertTyped(err, 'treeFromFileSystem + writeSquashfs');
    outcome.typedFailures++;
    outcome.messages.push(err.message);
  }

  if (walked !== undefined && walkErrors.length === 0) {
    assert.ok(image !== undefined, 'the view walks without error, so the merge must succeed');
    assert.deepEqual(image, walked, 'the SquashFS image reads back equal to the view');
  }
  if (walkErrors.length > 0) assert.equal(image, undefined, `the walk met corrupt nodes (${walkErrors[0]}) but the merge wrote an image`);
  return outcome;
}

// ---- regression cases kept by name ------------------------------------------------------------

const node = (path: string[], kind: Extract<Act, { t: 'node' }>['kind'], n = 3, major = 0, minor = 0): Op => ({ path, pick: 0, act: { t: 'node', kind, n, major, minor } });
const priv = (path: string[], suffix: string, value: ValueSpec, ns: 'trusted' | 'user' = 'trusted'): Op => ({ path, pick: -1, act: { t: 'private', ns, suffix, value } });

const REGRESSIONS: Record<string, Case> = {
  'redirect cycle across layers (upper a → /b, lower 0 b → /a, lower 1 a → /b)': {
    upper: [node(['a'], 'dir'), priv(['a'], 'redirect', { v: 'abs', parts: ['b'] })],
    lowers: [
      [node(['b'], 'dir'), priv(['b'], 'redirect', { v: 'abs', parts: ['a'] }), node(['b', 'x'], 'file')],
      [node(['a'], 'dir'), priv(['a'], 'redirect', { v: 'abs', parts: ['b'] }), node(['a', 'y'], 'file')],
      [node(['b'], 'dir'), node(['b', 'z'], 'file')],
    ],
    prefix: 'trusted',
    work: undefined,
    hostile: 3,
  },
  'redirect at an ancestor and at itself in every layer': {
    upper: [node(['a', 'b'], 'dir'), priv(['a', 'b'], 'redirect', { v: 'ancestor', k: 1 }), node(['a', 'c'], 'dir'), priv(['a', 'c'], 'redirect', { v: 'self' })],
    lowers: [
      [node(['a', 'b', 'b'], 'dir'), priv(['a', 'b'], 'redirect', { v: 'ancestor', k: 1 }), priv(['a', 'b', 'b'], 'redirect', { v: 'ancestor', k: 2 })],
      [node(['a', 'b', 'b', 'b'], 'file'), node(['a', 'c', 'c'], 'dir')],
    ],
    prefix: 'trusted',
    work: undefined,
    hostile: 3,
  },
  'a valid 4 KiB redirect /a/a/a/… deeper than any tree': {
    upper: [node(['a'], 'dir'), priv(['a'], 'redirect', { v: 'deep', n: 2040 })],
    lowers: [[node(['a', 'a', 'a'], 'dir'), node(['a', 'a', 'a', 'f'], 'file')]],
    prefix: 'trusted',
    work: undefined,
    hostile: 3,
  },
  'metacopy on a dir and a symlink, opaque on a file, a whiteout device 0/1': {
    upper: [node(['a'], 'dir'), priv(['a'], 'metacopy', { v: 'text', s: '' }), node(['b'], 'symlink'), priv(['b'], 'metacopy', { v: 'text', s: '' }), node(['c'], 'file'), priv(['c'], 'opaque', { v: 'text', s: 'y' }), node(['a', 'w'], 'chardev', 1, 0, 1)],
    lowers: [[node(['a', 'w'], 'file'), node(['c'], 'file')]],
    prefix: 'trusted',
    work: undefined,
    hostile: 3,
  },
  'a metacopy stub whose size is not its data’s': {
    upper: [node(['a'], 'file', 20), priv(['a'], 'metacopy', { v: 'text', s: '' })],
    lowers: [[node(['a'], 'file', 3)]],
    prefix: 'trusted',
    work: undefined,
    hostile: 3,
  },
  // Found by the fuzzer (seed 11): one upper metacopy inode under /b and /a/c; each name finds its own
  // lower data (lower /b is empty, lower /a/c is not), but both showed one ino, so the merge wrote one
  // file for both names.
  'a hard-linked metacopy stub whose names find different data': {
    upper: [
      { path: ['a'], pick: 0, act: { t: 'stub', mode: 0o600 } },
      { path: ['a', 'c'], pick: 0, act: { t: 'link', other: ['b'] } },
      priv(['a'], 'redirect', { v: 'abs', parts: ['a'] }),
    ],
    lowers: [[node(['b'], 'file', 0), node(['a'], 'dir'), priv(['a'], 'redirect', { v: 'abs', parts: ['a'] }), node(['a', 'c'], 'file', 1)]],
    prefix: 'trusted',
    work: undefined,
    hostile: 0,
  },
  'user.overlay.* xattrs on a view detecting its prefix': {
    upper: [node(['a'], 'dir'), priv(['a'], 'opaque', { v: 'text', s: 'x' }, 'user'), node(['a', 'b'], 'file', 0), priv(['a', 'b'], 'whiteout', { v: 'text', s: '' }, 'user'), priv([], 'redirect', { v: 'abs', parts: ['a'] }, 'user')],
    lowers: [[node(['a', 'b'], 'file'), node(['a', 'c'], 'file')]],
    prefix: 'auto',
    work: ['work/incompat/volatile'],
    hostile: 3,
  },
};

describe('overlayfs view on hostile uppers and xattrs', () => {
  test('the harness: a loop on resolved promises ends at the deadline, a loop through the layers at the call budget', async () => {
    let spinning = true;
    await assert.rejects(
      withDeadline('spin', async () => {
        while (spinning) await new Promise((r) => setImmediate(r));
      }, 100),
      /not done within/,
    );
    spinning = false;
    const c = new Counter(1000);
    const fs = counted(new MemoryFileSystem(), c);
    await assert.rejects(
      (async () => {
        for (;;) await fs.stat('/');
      })(),
      BudgetExceeded,
    );
    assert.throws(() => assertTyped(new TypeError('x'), 'stage'), /untyped TypeError/);
    assert.throws(() => assertTyped(new LivestickError('FAILURE', 1, 'vague'), 'stage'), /names neither a path nor a structure/);
  });

  for (const [name, c] of Object.entries(REGRESSIONS)) {
    test(`regression: ${name}`, async () => {
      await withDeadline(name, () => runCase(c));
    });
  }

  test('random uppers over 1–3 lowers: typed errors only, bounded work, a consistent view that merges unchanged', async () => {
    const totals = { cases: 0, merged: 0, typed: 0, walkErrors: 0 };
    const features = new Map<string, number>();
    await fc.assert(
      fc.asyncProperty(caseArb, async (c) => {
        const o = await withDeadline('case', () => runCase(c));
        totals.cases++;
        if (o.merged) totals.merged++;
        if (o.typedFailures > 0) totals.typed++;
        if (o.walkErrors > 0) totals.walkErrors++;
        if (process.env.FUZZ_STATS) for (const m of o.messages) console.log('MSG', m.replace(/"[^"]*"/g, 'S').replace(/\/[\w/]*/g, 'P').slice(0, 90));
        if (o.merged) for (const f of o.features) features.set(f, (features.get(f) ?? 0) + 1);
      }),
      { seed: seedFor(2026), numRuns: Number(process.env.FUZZ_CASES ?? 500) },
    );
    if (process.env.FUZZ_STATS) console.log(JSON.stringify({ ...totals, features: Object.fromEntries(features) }));
    // Guard against a generator that only makes broken (or only trivial) cases.
    assert.ok(totals.merged > totals.cases / 10, `only ${totals.merged} of ${totals.cases} cases merged`);
    assert.ok(totals.typed > totals.cases / 10, `only ${totals.typed} of ${totals.cases} cases met a typed error`);
    for (const f of ['metacopy', 'absolute redirect', 'relative redirect', 'opaque dir', 'opaque x', 'dir merged from two lowers', 'redirect in a lower']) {
      assert.ok((features.get(f) ?? 0) >= 3, `${f}: in only ${features.get(f) ?? 0} merged cases (${JSON.stringify(Object.fromEntries(features))})`);
    }

  });
});

// ---- the xattr value decoders on arbitrary bytes ----------------------------------------------

interface Codec {
  readonly field: string;
  readonly decode: (v: Uint8Array) => unknown;
  readonly encode?: (x: never) => Uint8Array;
  /** Whether the encoding is the only one of its value, so encode(decode(x)) gives back x's bytes. */
  readonly canonical?: boolean;
}

const CODECS: Record<string, Codec> = {
  redirect: { field: 'redirect', decode: (v) => decodeRedirect(v, '/p'), encode: encodeRedirect, canonical: true },
  metacopy: { field: 'metacopy', decode: (v) => decodeMetacopy(v, '/p'), encode: encodeMetacopy },
  origin: { field: 'origin', decode: (v) => decodeOvlFb(v, '/p'), encode: (fh: Parameters<typeof encodeOvlFb>[0] | undefined) => (fh === undefined ? new Uint8Array(0) : encodeOvlFb(fh)), canonical: true },
  upper: { field: 'upper', decode: (v) => decodeOvlFb(v, '/p', 'upper') },
  opaque: { field: 'opaque', decode: (v) => decodeOpaque(v, '/p'), encode: encodeOpaque, canonical: true },
  impure: { field: 'impure', decode: (v) => decodeImpure(v, '/p') },
  protattr: { field: 'protattr', decode: (v) => decodeProtattr(v, '/p'), encode: encodeProtattr },
  nlink: { field: 'nlink', decode: (v) => decodeNlink(v, '/p'), encode: encodeNlink },
  uuid: { field: 'uuid', decode: (v) => decodeUuid(v, '/p') },
};

/** Arbitrary bytes, and bytes near each value's valid shapes (so the valid branch is reached too). */
const bytesArb = fc.oneof(
  fc.uint8Array({ maxLength: 200 }),
  fc.uint8Array({ minLength: 4000, maxLength: 4200 }),
  fc.constantFrom(...['y', 'x', 'ai', 'ia', 'a', 'U+1', 'L-0', 'U-0', 'U+00012', 'L-4294967295', 'U+9999999999', '/a/b', 'name', '/', '//'].map(enc)),
  valueArb.map((s) => valueOf(s, ['a', 'b'])),
);

describe('overlay xattr decoders on arbitrary bytes', () => {
  test('a value or a typed CorruptImageError naming the field and the path; valid values round-trip', () => {
    fc.assert(
      fc.property(bytesArb, fc.constantFrom(...Object.keys(CODECS)), (bytes, which) => {
        const codec = CODECS[which]!;
        let value: unknown;
        try {
          value = codec.decode(bytes);
        } catch (err) {
          assert.ok(err instanceof CorruptImageError, `${which}: untyped ${(err as Error)?.stack}`);
          assert.equal(err.format, 'overlayfs');
          assert.equal(err.field, codec.field);
          assert.equal(err.file, '/p');
          return;
        }
        if (codec.encode === undefined) return;
        const again = codec.encode(value as never);
        if (codec.canonical) assert.deepEqual(again, bytes, `${which}: encode(decode(x)) is x`);
        assert.deepEqual(codec.decode(again), value, `${which}: decode(encode(decode(x))) is decode(x)`);
      }),
      { seed: seedFor(2027), numRuns: 4000 },
    );
  });

  test('xattr names: visibility and private suffixes never throw and agree', () => {
    const part = fc.constantFrom('trusted', 'user', 'security', 'overlay', '', 'x', 'opaque');
    fc.assert(
      fc.property(fc.array(part, { maxLength: 5 }), fc.constantFrom('trusted' as const, 'user' as const), (parts, prefix) => {
        const name = parts.join('.');
        const visible = visibleXattrName(name, prefix);
        const suffix = privateSuffix(name, prefix);
        if (suffix !== undefined) assert.equal(visible, undefined, `${name}: a private name is hidden`);
        if (!name.startsWith(`${prefix}.overlay.`)) assert.equal(visible, name, `${name}: not overlay's, shown as it is`);
      }),
      { seed: seedFor(2028), numRuns: 2000 },
    );
  });
});
