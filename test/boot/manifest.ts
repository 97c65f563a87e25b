/**
 * A manifest of a whole root tree, computed the same way inside a booted live system and from a
 * livestick FileSystem, so a test can compare the tree two boots saw, or what a boot saw with
 * livestick's offline view of base + upper.
 *
 * Design notes
 * - One line per path, sorted by path (JS string order), tab-separated:
 *   `path kind mode uid gid size mtime target link xattrs md5`. kind is f d l c b p s; mode is the
 *   permission bits with setuid/setgid/sticky in octal; size and mtime (whole seconds) are empty for
 *   directories (their size is filesystem-specific and their mtime changes with every entry written);
 *   target is a symlink's target; link names the hard-link group (the smallest path of the group, for a
 *   non-directory whose other names are in the manifest too); xattrs is `name=hex` joined by `,`, sorted,
 *   without trusted.overlay.* (overlayfs' own, hidden in the merged view); md5 is a regular file's
 *   content hash. Paths and targets escape backslash, tab, newline and other control bytes as \xHH.
 * - Excluded: /proc /sys /dev /run /tmp (the directories themselves too) and, in the guest, every other
 *   mount point (the live media sit under /run on both dracut and live-boot; others are reported).
 * - The guest side is a shell function (`GUEST_MANIFEST_SH`) run by the job: GNU find -printf with NUL
 *   separators, `md5sum -z` and `getfattr -e hex` through xargs (a few processes, not one per file, which
 *   matters under TCG). It leaves raw lists in $LIVESTICK_OUT/manifest-NAME/, and `readGuestManifest`
 *   turns them into the same entries `manifestOfFileSystem` builds.
 * - FileSystem side: stat/readdir/readlink/openFile; hard-link groups need `ino` on FsStat and xattrs
 *   need an `xattrs(path)` method — both are feature-tested; without them those columns are left out of
 *   the comparison (`ManifestOptions.ignore`).
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { FileSystem, FsStat, NodeKind } from '../../src/fs/filesystem.ts';

export const EXCLUDED_ROOTS: readonly string[] = ['/proc', '/sys', '/dev', '/run', '/tmp'];

export type ManifestKind = 'f' | 'd' | 'l' | 'c' | 'b' | 'p' | 's';
export type ManifestField = 'mode' | 'owner' | 'size' | 'mtime' | 'target' | 'link' | 'xattrs' | 'md5';

export interface ManifestEntry {
  readonly path: string;
  readonly kind: ManifestKind;
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  /** Undefined for directories. */
  readonly size: number | undefined;
  /** Whole seconds; undefined for directories. */
  readonly mtime: number | undefined;
  readonly target: string | undefined;
  /** Smallest path of the hard-link group; undefined when the node has no other name in the manifest. */
  readonly link: string | undefined;
  /** Sorted `[name, hex]` pairs. */
  readonly xattrs: readonly (readonly [string, string])[];
  readonly md5: string | undefined;
}

export interface Manifest {
  readonly entries: readonly ManifestEntry[];
  /** Mount points the guest pruned besides EXCLUDED_ROOTS (empty for a FileSystem). */
  readonly extraMountPoints: readonly string[];
  /** Columns this manifest cannot fill (e.g. 'link' or 'xattrs' for a FileSystem without ino/xattrs). */
  readonly missing: readonly ManifestField[];
}

export interface ManifestOptions {
  /** Paths (and everything below them) left out besides EXCLUDED_ROOTS. */
  exclude?: readonly string[];
  /** xattr names left out besides trusted.overlay.*. */
  ignoreXattr?: (name: string) => boolean;
}

const KIND_OF: Record<NodeKind, ManifestKind> = { file: 'f', dir: 'd', symlink: 'l', chardev: 'c', blockdev: 'b', fifo: 'p', socket: 's' };

function escapeText(s: string): string {
  return s.replace(/[\\\x00-\x1f\x7f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

export function formatEntry(e: ManifestEntry): string {
  return [
    escapeText(e.path),
    e.kind,
    e.mode.toString(8).padStart(4, '0'),
    String(e.uid),
    String(e.gid),
    e.size === undefined ? '' : String(e.size),
    e.mtime === undefined ? '' : String(e.mtime),
    e.target === undefined ? '' : escapeText(e.target),
    e.link === undefined ? '' : escapeText(e.link),
    e.xattrs.map(([n, v]) => `${escapeText(n)}=${v}`).join(','),
    e.md5 ?? '',
  ].join('\t');
}

export function formatManifest(m: Manifest): string {
  return m.entries.map((e) => `${formatEntry(e)}\n`).join('');
}

function blank(e: ManifestEntry, ignore: ReadonlySet<ManifestField>): ManifestEntry {
  return {
    ...e,
    mode: ignore.has('mode') ? 0 : e.mode,
    uid: ignore.has('owner') ? 0 : e.uid,
    gid: ignore.has('owner') ? 0 : e.gid,
    size: ignore.has('size') ? undefined : e.size,
    mtime: ignore.has('mtime') ? undefined : e.mtime,
    target: ignore.has('target') ? undefined : e.target,
    link: ignore.has('link') ? undefined : e.link,
    xattrs: ignore.has('xattrs') ? [] : e.xattrs,
    md5: ignore.has('md5') ? undefined : e.md5,
  };
}

/**
 * The differences between two manifests as readable lines (`- line` only in a, `+ line` only in b),
 * empty when equal. Columns either side cannot fill, and those in `ignore`, are not compared.
 */
export function diffManifests(a: Manifest, b: Manifest, options: { ignore?: readonly ManifestField[]; limit?: number } = {}): string[] {
  const ignore = new Set<ManifestField>([...(options.ignore ?? []), ...a.missing, ...b.missing]);
  const limit = options.limit ?? 50;
  const mapOf = (m: Manifest) => new Map(m.entries.map((e) => [e.path, formatEntry(blank(e, ignore))]));
  const am = mapOf(a);
  const bm = mapOf(b);
  const out: string[] = [];
  const paths = [...new Set([...am.keys(), ...bm.keys()])].sort(comparePaths);
  let count = 0;
  for (const p of paths) {
    const x = am.get(p);
    const y = bm.get(p);
    if (x === y) continue;
    count++;
    if (out.length < limit * 2) {
      if (x !== undefined) out.push(`- ${x}`);
      if (y !== undefined) out.push(`+ ${y}`);
    }
  }
  if (count * 2 > out.length) out.push(`… ${count} paths differ in all`);
  return out;
}

function comparePaths(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function isExcluded(path: string, excluded: readonly string[]): boolean {
  return excluded.some((x) => path === x || path.startsWith(`${x}/`));
}

function defaultIgnoreXattr(name: string): boolean {
  return name.startsWith('trusted.overlay.');
}

/** Hard-link groups: entries of non-directories sharing a key get the group's smallest path. */
function withLinkGroups<T extends { path: string; kind: ManifestKind }>(entries: T[], keyOf: (e: T) => string | undefined): Map<string, string> {
  const groups = new Map<string, string[]>();
  for (const e of entries) {
    if (e.kind === 'd') continue;
    const k = keyOf(e);
    if (k === undefined) continue;
    const g = groups.get(k);
    if (g) g.push(e.path);
    else groups.set(k, [e.path]);
  }
  const linkOf = new Map<string, string>();
  for (const g of groups.values()) {
    if (g.length < 2) continue;
    const first = g.reduce((m, p) => (comparePaths(p, m) < 0 ? p : m));
    for (const p of g) linkOf.set(p, first);
  }
  return linkOf;
}

// --- the guest side -----------------------------------------------------------------------------------

/**
 * Shell (POSIX sh, Debian's GNU tools) defining `livestick_manifest NAME [ROOT]`: writes the raw lists of
 * the tree at ROOT (absolute, no trailing slash; default /, the whole root; mount points pruned only then) to
 * $LIVESTICK_OUT/manifest-NAME/ and prints one summary line. Include it in a job script.
 */
export const GUEST_MANIFEST_SH = String.raw`
livestick_manifest() {
  lm_dir="$LIVESTICK_OUT/manifest-$1"
  lm_root=$2
  lm_pre=$2
  [ -n "$lm_root" ] || lm_root=/
  [ "$lm_root" != / ] || lm_pre=''
  mkdir -p "$lm_dir"
  lm_t0=$(cut -d' ' -f1 /proc/uptime)
  echo "$lm_root" >"$lm_dir/root"
  if [ "$lm_root" = / ]; then awk '$5 != "/" { print $5 }' /proc/self/mountinfo | sort -u >"$lm_dir/mounts"; else : >"$lm_dir/mounts"; fi
  set -- -path "$lm_pre/proc"
  for lm_p in /sys /dev /run /tmp; do set -- "$@" -o -path "$lm_pre$lm_p"; done
  for lm_p in $(cat "$lm_dir/mounts"); do set -- "$@" -o -path "$lm_p"; done
  find "$lm_root" \( "$@" \) -prune -o -printf '%y\0%m\0%U\0%G\0%s\0%T@\0%D:%i\0%n\0%l\0%p\0' >"$lm_dir/find"
  find "$lm_root" \( "$@" \) -prune -o -type f -print0 | xargs -0 -r md5sum -z >"$lm_dir/md5" 2>"$lm_dir/md5.err" || true
  find "$lm_root" \( "$@" \) -prune -o -print0 | xargs -0 -r getfattr -h -d -m - -e hex --absolute-names >"$lm_dir/xattr" 2>"$lm_dir/xattr.err" || true
  lm_t1=$(cut -d' ' -f1 /proc/uptime)
  echo "$lm_t0 $lm_t1" >"$lm_dir/time"
  echo "livestick_manifest $lm_dir: $(tr -cd '\0' <"$lm_dir/find" | wc -c | awk '{ print int($1 / 10) }') entries in $(awk -v a="$lm_t0" -v b="$lm_t1" 'BEGIN { printf "%.1f", b - a }') s"
}
`;

const FIND_KIND: Record<string, ManifestKind> = { f: 'f', d: 'd', l: 'l', c: 'c', b: 'b', p: 'p', s: 's' };

/** getfattr escapes unusual bytes in names as backslash-octal. */
function unescapeGetfattr(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
}

function parseGetfattr(text: string): Map<string, [string, string][]> {
  const out = new Map<string, [string, string][]>();
  let current: [string, string][] | undefined;
  for (const line of text.split('\n')) {
    if (line.startsWith('# file: ')) {
      current = [];
      out.set(unescapeGetfattr(line.slice('# file: '.length)), current);
    } else if (line !== '' && current) {
      const eq = line.indexOf('=');
      const name = unescapeGetfattr(eq < 0 ? line : line.slice(0, eq));
      const raw = eq < 0 ? '' : line.slice(eq + 1);
      if (raw !== '' && !raw.startsWith('0x')) throw new Error(`getfattr output: value of ${name} is not hex: ${raw.slice(0, 40)}`);
      current.push([name, raw.slice(2).toLowerCase()]);
    }
  }
  return out;
}

/** Reads what `livestick_manifest NAME` left in the job's output directory. */
export function readGuestManifest(outDir: string, name: string, options: ManifestOptions = {}): Manifest {
  const dir = join(outDir, `manifest-${name}`);
  if (!existsSync(join(dir, 'find'))) throw new Error(`no guest manifest ${name} in ${outDir} (did the job call livestick_manifest ${name}?)`);
  const ignoreXattr = options.ignoreXattr ?? (() => false);
  const excluded = [...EXCLUDED_ROOTS, ...(options.exclude ?? [])];
  const fields = readFileSync(join(dir, 'find'), 'utf8').split('\0');
  if (fields.length % 10 !== 1 || fields[fields.length - 1] !== '') throw new Error(`guest manifest ${name}: find output has ${fields.length - 1} fields, not a multiple of 10`);
  const root = existsSync(join(dir, 'root')) ? readFileSync(join(dir, 'root'), 'utf8').replace(/\n$/, '') : '/';
  const rel = (p: string): string => {
    if (root === '/') return p;
    if (p !== root && !p.startsWith(`${root}/`)) throw new Error(`guest manifest ${name}: path ${p} is outside ${root}`);
    return p.slice(root.length) || '/';
  };
  for (const err of ['md5.err', 'xattr.err']) {
    const f = join(dir, err);
    // listxattr on a symlink of a squashfs without an xattr table (through overlayfs): EOPNOTSUPP, i.e. none.
    const text = (existsSync(f) ? readFileSync(f, 'utf8') : '').split('\n').filter((l) => l !== '' && !/: Operation not supported$/.test(l)).join('\n');
    if (text !== '') throw new Error(`guest manifest ${name}: ${err === 'md5.err' ? 'md5sum' : 'getfattr'} failed in the guest:\n${text.slice(0, 4000)}`);
  }
  const md5 = new Map<string, string>();
  for (const rec of readFileSync(join(dir, 'md5'), 'utf8').split('\0')) {
    if (rec === '') continue;
    const m = /^([0-9a-f]{32}) [ *](.*)$/s.exec(rec);
    if (!m) throw new Error(`guest manifest ${name}: bad md5sum record ${JSON.stringify(rec.slice(0, 80))}`);
    md5.set(rel(m[2]!), m[1]!);
  }
  const xattrs = new Map([...parseGetfattr(readFileSync(join(dir, 'xattr'), 'utf8'))].map(([p, v]) => [rel(p), v]));
  type Raw = { path: string; kind: ManifestKind; mode: number; uid: number; gid: number; size: number; mtime: number; key: string; nlink: number; target: string };
  const raws: Raw[] = [];
  for (let i = 0; i + 10 <= fields.length; i += 10) {
    const [y, m, u, g, s, t, key, n, l, abs] = fields.slice(i, i + 10) as [string, string, string, string, string, string, string, string, string, string];
    const p = rel(abs);
    const kind = FIND_KIND[y];
    if (kind === undefined) throw new Error(`guest manifest ${name}: unknown kind ${y} of ${p}`);
    if (isExcluded(p, excluded)) continue;
    raws.push({ path: p, kind, mode: parseInt(m, 8), uid: Number(u), gid: Number(g), size: Number(s), mtime: Math.floor(Number(t)), key, nlink: Number(n), target: l });
  }
  const linkOf = withLinkGroups(raws, (r) => (r.nlink > 1 ? r.key : undefined));
  const entries: ManifestEntry[] = raws.map((r) => ({
    path: r.path,
    kind: r.kind,
    mode: r.mode,
    uid: r.uid,
    gid: r.gid,
    size: r.kind === 'd' ? undefined : r.size,
    mtime: r.kind === 'd' ? undefined : r.mtime,
    target: r.kind === 'l' ? r.target : undefined,
    link: linkOf.get(r.path),
    xattrs: (xattrs.get(r.path) ?? []).filter(([n]) => !defaultIgnoreXattr(n) && !ignoreXattr(n)).sort((a, b) => comparePaths(a[0], b[0])),
    md5: r.kind === 'f' ? md5.get(r.path) ?? 'missing' : undefined,
  }));
  entries.sort((a, b) => comparePaths(a.path, b.path));
  const mounts = readFileSync(join(dir, 'mounts'), 'utf8').split('\n').filter((x) => x !== '' && !isExcluded(x, EXCLUDED_ROOTS));
  return { entries, extraMountPoints: mounts, missing: [] };
}

/** Seconds the guest spent in livestick_manifest NAME (from /proc/uptime). */
export function guestManifestSeconds(outDir: string, name: string): number {
  const [a, b] = readFileSync(join(outDir, `manifest-${name}`, 'time'), 'utf8').trim().split(' ').map(Number);
  return (b ?? 0) - (a ?? 0);
}

// --- the FileSystem side --------------------------------------------------------------------------------

type XattrValue = Uint8Array | string;
type XattrResult = Map<string, XattrValue> | Record<string, XattrValue> | readonly (readonly [string, XattrValue])[] | readonly { name: string; value: XattrValue }[];

function normaliseXattrs(r: XattrResult | undefined): [string, string][] {
  if (r === undefined) return [];
  const hex = (v: XattrValue) => (typeof v === 'string' ? Buffer.from(v, 'utf8') : Buffer.from(v.buffer, v.byteOffset, v.byteLength)).toString('hex');
  let pairs: [string, XattrValue][];
  if (r instanceof Map) pairs = [...r.entries()];
  else if (Array.isArray(r)) pairs = r.map((x: unknown) => (Array.isArray(x) ? [x[0] as string, x[1] as XattrValue] : [(x as { name: string }).name, (x as { value: XattrValue }).value]));
  else pairs = Object.entries(r as Record<string, XattrValue>);
  return pairs.map(([n, v]) => [n, hex(v)]);
}

async function md5OfFile(fs: FileSystem, path: string): Promise<string> {
  const disk = await fs.openFile(path);
  try {
    const h = createHash('md5');
    const chunk = Buffer.alloc(1 << 20);
    for (let off = 0; off < disk.size; off += chunk.length) {
      const n = Math.min(chunk.length, disk.size - off);
      const view = chunk.subarray(0, n);
      await disk.read(view, off);
      h.update(view);
    }
    return h.digest('hex');
  } finally {
    await disk.close();
  }
}

/** The manifest of a livestick FileSystem's whole tree, in the guest's format. */
export async function manifestOfFileSystem(fs: FileSystem, options: ManifestOptions = {}): Promise<Manifest> {
  const excluded = [...EXCLUDED_ROOTS, ...(options.exclude ?? [])];
  const ignoreXattr = options.ignoreXattr ?? (() => false);
  const withXattrs = fs as FileSystem & { xattrs?: (path: string) => Promise<XattrResult | undefined> };
  const hasXattrs = typeof withXattrs.xattrs === 'function';
  let hasIno = true;
  type Raw = { path: string; kind: ManifestKind; st: FsStat; ino: number | bigint | undefined };
  const raws: Raw[] = [];
  const walk = async (path: string): Promise<void> => {
    const st = await fs.stat(path);
    const ino = (st as FsStat & { ino?: number | bigint }).ino;
    if (ino === undefined && st.kind !== 'dir') hasIno = false;
    raws.push({ path, kind: KIND_OF[st.kind], st, ino });
    if (st.kind !== 'dir') return;
    const names = (await fs.readdir(path)).map((e) => e.name).sort(comparePaths);
    for (const n of names) {
      const child = path === '/' ? `/${n}` : `${path}/${n}`;
      if (!isExcluded(child, excluded)) await walk(child);
    }
  };
  await walk('/');
  const linkOf = hasIno ? withLinkGroups(raws, (r) => (r.st.nlink > 1 && r.ino !== undefined ? String(r.ino) : undefined)) : new Map<string, string>();
  const entries: ManifestEntry[] = [];
  for (const r of raws) {
    const xattrs = hasXattrs ? normaliseXattrs(await withXattrs.xattrs!(r.path)) : [];
    const target = r.kind === 'l' ? await fs.readlink(r.path) : undefined;
    entries.push({
      path: r.path,
      kind: r.kind,
      mode: r.st.mode & 0o7777,
      uid: r.st.uid,
      gid: r.st.gid,
      size: r.kind === 'd' ? undefined : r.kind === 'l' ? Buffer.byteLength(target!, 'utf8') : r.kind === 'f' ? r.st.size : 0,
      mtime: r.kind === 'd' ? undefined : r.st.mtime.sec,
      target,
      link: linkOf.get(r.path),
      xattrs: xattrs.filter(([n]) => !defaultIgnoreXattr(n) && !ignoreXattr(n)).sort((a, b) => comparePaths(a[0], b[0])),
      md5: r.kind === 'f' ? await md5OfFile(fs, r.path) : undefined,
    });
  }
  entries.sort((a, b) => comparePaths(a.path, b.path));
  const missing: ManifestField[] = [];
  if (!hasIno) missing.push('link');
  if (!hasXattrs) missing.push('xattrs');
  return { entries, extraMountPoints: [], missing };
}
