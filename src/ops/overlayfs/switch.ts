/**
 * The crash-safe switch of an overlayfs medium: a new base and a fresh empty upper (with a fresh work
 * directory) replace the old pair. The base and the upper usually live on different volumes (a FAT
 * partition holding LiveOS/squashfs.img and an ext4 partition or image holding the upper).
 *
 * Design notes
 * - Invariant: a boot never sees an upper over a base it does not belong to. The old upper is retired
 *   (renamed away) before the base changes, and the fresh upper takes its name only after the new
 *   base is in place; in between there is no upper, and dracut boots with a RAM overlay.
 *   (live-boot and casper create an empty upper when theirs is missing; recovery then adopts it if it
 *   is still empty and keeps it, untouched, if a boot wrote into it.)
 *       0. built: BASE.livestick-ovl-new (verified), UPPER.livestick-ovl-new and WORK.livestick-ovl-new (empty,
 *          the upper root's mode, owner and labels; the binding record in the new work dir)
 *       1. journal written beside the base
 *       2. UPPER → UPPER.livestick-ovl-old, WORK → WORK.livestick-ovl-old      (boot: old base, no upper)
 *       3. BASE.livestick-ovl-new → BASE (replaces it)                     (boot: new base, no upper)
 *       4. UPPER.livestick-ovl-new → UPPER, WORK.livestick-ovl-new → WORK      (boot: new base, empty upper)
 *       5. the old upper and work are deleted (kept with --keep-old), then the journal is removed
 *          (so an interrupted tidy-up is finished by the next command, not mistaken for kept trees)
 * - Recovery reads the journal: before step 2 (the old upper still in place, the new base not yet
 *   moved) it rolls back by deleting what was built; from step 2 on it rolls forward, repeating each
 *   step whose result is not there yet. Renames on FAT may be left half done (both names naming the
 *   same data): repeating them finishes them (fs/filesystem.ts's contract).
 * - The names (`.livestick-ovl-new`, `.livestick-ovl-old`, the journal's) are this engine's own: the
 *   dm-snapshot switch's `squashfs.img.livestick-new` mid-switch is never taken for a leftover here.
 * - The journal names the volumes by their ids on the stick (p1, p2, p1:/LiveOS/overlay-…), so
 *   recovery finds them again without the live-system detection, which would not see an upper that
 *   was renamed away.
 */
import { CorruptImageError, LivestickError, fromSystemError } from '../../errors.ts';
import { SimulatedCrash } from '../../io/faults.ts';
import type { FileSystem, FsXattr, WritableFileSystem } from '../../fs/filesystem.ts';
import { writeBinding, type LowerIdentity } from './binding.ts';
import type { Stick, Volume } from '../live/index.ts';
import { fileExists, isNotFound, readSmallFileOn } from '../files.ts';
import { stepPoint } from '../switch.ts';

export const OVL_JOURNAL = 'livestick-overlayfs-journal.json';
export const NEW_MARK = '.livestick-ovl-new';
export const OLD_MARK = '.livestick-ovl-old';

export interface VolumeRef {
  readonly id: string;
  readonly parent?: string;
  readonly path?: string;
}

export interface OverlayfsJournal {
  readonly schemaVersion: 1;
  readonly kind: 'overlayfs-switch';
  readonly baseVolume: VolumeRef;
  readonly base: string;
  readonly upperVolume: VolumeRef;
  readonly upper: string;
  readonly work: string;
  readonly keepOld: boolean;
}

export function volumeRef(v: Volume): VolumeRef {
  return v.parent !== undefined && v.path !== undefined ? { id: v.id, parent: v.parent.id, path: v.path } : { id: v.id };
}

export async function volumeOf(stick: Stick, ref: VolumeRef): Promise<Volume | undefined> {
  if (ref.parent === undefined || ref.path === undefined) return stick.volume(ref.id);
  const parent = stick.volume(ref.parent);
  return parent === undefined ? undefined : stick.nested(parent, ref.path);
}

const fail = (field: string, message: string): never => {
  throw new CorruptImageError('livestick overlayfs journal', field, message);
};

function decodeRef(v: unknown, field: string): VolumeRef {
  if (typeof v !== 'object' || v === null) return fail(field, 'not an object');
  const r = v as Record<string, unknown>;
  if (typeof r.id !== 'string' || r.id.length === 0) fail(`${field}.id`, 'not a volume id');
  if (r.parent !== undefined && typeof r.parent !== 'string') fail(`${field}.parent`, 'not a volume id');
  if (r.path !== undefined && (typeof r.path !== 'string' || !r.path.startsWith('/'))) fail(`${field}.path`, 'not an absolute path');
  return { id: r.id as string, ...(r.parent !== undefined ? { parent: r.parent as string, path: r.path as string } : {}) };
}

const absolute = (v: unknown, field: string): string => (typeof v === 'string' && v.startsWith('/') && v.length > 1 && !v.split('/').includes('..') ? v : fail(field, 'not an absolute path'));

export function decodeOverlayfsJournal(bytes: Uint8Array): OverlayfsJournal {
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch (err) {
    return fail('json', `not valid UTF-8 JSON (${(err as Error).message})`);
  }
  if (typeof value !== 'object' || value === null) return fail('json', 'not an object');
  const j = value as Record<string, unknown>;
  if (j.schemaVersion !== 1) fail('schemaVersion', `unknown version ${JSON.stringify(j.schemaVersion)}`);
  if (j.kind !== 'overlayfs-switch') fail('kind', `unknown kind ${JSON.stringify(j.kind)}`);
  if (typeof j.keepOld !== 'boolean') fail('keepOld', 'not a boolean');
  return {
    schemaVersion: 1,
    kind: 'overlayfs-switch',
    baseVolume: decodeRef(j.baseVolume, 'baseVolume'),
    base: absolute(j.base, 'base'),
    upperVolume: decodeRef(j.upperVolume, 'upperVolume'),
    upper: absolute(j.upper, 'upper'),
    work: absolute(j.work, 'work'),
    keepOld: j.keepOld as boolean,
  };
}

export function encodeOverlayfsJournal(j: OverlayfsJournal): Uint8Array {
  return new TextEncoder().encode(`${JSON.stringify(j, null, 1)}\n`);
}

export function dirOf(path: string): string {
  const i = path.lastIndexOf('/');
  return i <= 0 ? '/' : path.slice(0, i);
}

export function journalPath(base: string): string {
  const d = dirOf(base);
  return d === '/' ? `/${OVL_JOURNAL}` : `${d}/${OVL_JOURNAL}`;
}

/** Removes a directory tree (files, links, devices, directories), deepest first. */
export async function removeTree(fs: WritableFileSystem, path: string): Promise<void> {
  if (fs.removeTree !== undefined) return fs.removeTree(path);
  let st;
  try {
    st = await fs.stat(path);
  } catch (err) {
    if (isNotFound(err)) return;
    throw err;
  }
  if (st.kind !== 'dir') return fs.unlink(path);
  for (const e of await fs.readdir(path)) await removeTree(fs, `${path}/${e.name}`);
  await fs.rmdir(path);
}

async function isEmptyDir(fs: WritableFileSystem, path: string): Promise<boolean> {
  const st = await fs.stat(path);
  return st.kind === 'dir' && (await fs.readdir(path)).length === 0;
}

export interface SwitchFilesystems {
  readonly baseFs: WritableFileSystem;
  readonly upperFs: WritableFileSystem;
}

export interface SwitchOutcome {
  readonly action: 'none' | 'completed' | 'rolled-back';
  readonly warnings: string[];
  readonly kept: { readonly upper?: string; readonly work?: string };
}

/** Steps 2–5 from wherever a switch stands (recovery and the merge itself). */
export async function rollForward(j: OverlayfsJournal, f: SwitchFilesystems, tidy = true): Promise<SwitchOutcome> {
  const { baseFs, upperFs } = f;
  const warnings: string[] = [];
  for (const dir of [j.upper, j.work]) {
    if ((await fileExists(upperFs, dir)) && !(await fileExists(upperFs, dir + OLD_MARK)) && (await fileExists(upperFs, dir + NEW_MARK))) {
      await upperFs.rename(dir, dir + OLD_MARK);
    }
  }
  await upperFs.flush();
  stepPoint('ovl-retired');
  if (await fileExists(baseFs, j.base + NEW_MARK)) await baseFs.rename(j.base + NEW_MARK, j.base);
  await baseFs.flush();
  stepPoint('ovl-base-replaced');
  for (const dir of [j.upper, j.work]) {
    if (!(await fileExists(upperFs, dir + NEW_MARK))) continue;
    if (await fileExists(upperFs, dir)) {
      // A boot after an interruption may have made an empty one (live-boot, casper): adopt the fresh
      // one in its place; one a boot wrote into is kept as it is.
      if (await isEmptyDir(upperFs, dir)) await upperFs.rmdir(dir);
      else {
        warnings.push(`${dir} was created and written by a boot after the interrupted switch; it was kept as it is, and the fresh one is left as ${dir}${NEW_MARK}`);
        continue;
      }
    }
    await upperFs.rename(dir + NEW_MARK, dir);
  }
  await upperFs.flush();
  stepPoint('ovl-upper-replaced');
  const kept: { upper?: string; work?: string } = {};
  let tidyFailed = false;
  if (tidy) {
    for (const [dir, key] of [[j.upper, 'upper'], [j.work, 'work']] as const) {
      if (!(await fileExists(upperFs, dir + OLD_MARK))) continue;
      if (j.keepOld) kept[key] = dir + OLD_MARK;
      else {
        try {
          await removeTree(upperFs, dir + OLD_MARK);
        } catch (err) {
          if (!(err instanceof LivestickError)) throw err;
          warnings.push(`the previous ${key} ${dir}${OLD_MARK} could not be removed yet (${err.message}); it holds nothing a boot uses, and the next livestick command tries again`);
          tidyFailed = true;
        }
      }
    }
    await upperFs.flush();
  }
  // A tidy-up that failed keeps the journal, so the next command finishes it.
  if (!tidyFailed) await removeJournal(baseFs, j.base);
  stepPoint('ovl-switch-done');
  return { action: 'completed', warnings, kept };
}

/** Removes the journal and its temporary name (which a cut rename on FAT leaves naming the journal's data too). */
async function removeJournal(fs: WritableFileSystem, base: string): Promise<void> {
  for (const path of [journalTemp(base), journalPath(base)]) {
    try {
      await fs.unlink(path);
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
  }
  await fs.flush();
}

/** Undoes a switch that had not retired the old upper yet: what was built goes. */
export async function rollBack(j: OverlayfsJournal, f: SwitchFilesystems): Promise<SwitchOutcome> {
  await removeTree(f.upperFs, j.upper + NEW_MARK);
  await removeTree(f.upperFs, j.work + NEW_MARK);
  await f.upperFs.flush();
  if (await fileExists(f.baseFs, j.base + NEW_MARK)) await f.baseFs.unlink(j.base + NEW_MARK);
  await removeJournal(f.baseFs, j.base);
  return { action: 'rolled-back', warnings: [], kept: {} };
}

/**
 * Whether the switch had passed its point of no return: anything but "the old upper and work still in
 * place, the fresh ones still waiting beside them" (then a roll-back loses nothing).
 */
export async function pastRetire(j: OverlayfsJournal, upperFs: WritableFileSystem): Promise<boolean> {
  const untouched = (await fileExists(upperFs, j.upper)) && (await fileExists(upperFs, j.upper + NEW_MARK)) && !(await fileExists(upperFs, j.upper + OLD_MARK)) && !(await fileExists(upperFs, j.work + OLD_MARK));
  return !untouched;
}

export function journalTemp(base: string): string {
  return `${journalPath(base)}.livestick-tmp`;
}

export async function writeJournal(fs: WritableFileSystem, j: OverlayfsJournal): Promise<void> {
  const path = journalPath(j.base);
  const temp = journalTemp(j.base);
  await fs.writeFile(temp, encodeOverlayfsJournal(j));
  await fs.rename(temp, path);
  await fs.flush();
}

export async function readJournal(fs: FileSystem, base: string): Promise<OverlayfsJournal | undefined> {
  const bytes = await readSmallFileOn(fs, journalPath(base), 64 << 10, 'livestick overlayfs journal');
  return bytes === undefined ? undefined : decodeOverlayfsJournal(bytes);
}

type XattrFs = WritableFileSystem & { setXattr?: (path: string, name: string, value: Uint8Array) => Promise<void> };

export async function copyRootAttributes(fs: WritableFileSystem, from: string, to: string, warnings: string[]): Promise<void> {
  const st = await fs.stat(from);
  try {
    await fs.setMode?.(to, st.mode);
    await fs.setOwner?.(to, st.uid, st.gid);
  } catch (err) {
    if (!(err instanceof LivestickError)) throw err;
    warnings.push(`the fresh ${to} could not take the owner or mode of the old one (${err.message})`);
  }
  const set = (fs as XattrFs).setXattr;
  const xattrs: readonly FsXattr[] = (await fs.xattrs?.(from)) ?? [];
  for (const x of xattrs) {
    if (x.name.startsWith('trusted.overlay.') || x.name.startsWith('user.overlay.')) continue;
    if (set === undefined) {
      warnings.push(`the fresh ${to} does not carry ${x.name} of the old one (this filesystem's writer cannot set attributes)`);
      continue;
    }
    try {
      await set.call(fs, to, x.name, x.value);
    } catch (err) {
      if (!(err instanceof LivestickError)) throw err;
      warnings.push(`the fresh ${to} does not carry ${x.name} (${err.message})`);
    }
  }
}


/** Step 0's fresh pair: empty UPPER.livestick-ovl-new and WORK.livestick-ovl-new like the old roots, bound to `lowers`. */
export async function prepareFreshUpper(fs: WritableFileSystem, upper: string, work: string, lowers: readonly LowerIdentity[], warnings: string[]): Promise<void> {
  for (const dir of [upper, work]) {
    await removeTree(fs, dir + NEW_MARK);
    await fs.mkdir(dir + NEW_MARK, { mode: (await fs.stat(dir)).mode });
    await copyRootAttributes(fs, dir, dir + NEW_MARK, warnings);
  }
  await writeBinding(fs, work + NEW_MARK, lowers);
  await fs.flush();
}

function typed(err: unknown): LivestickError {
  return err instanceof LivestickError ? err : fromSystemError(err, '', 'switch');
}

/**
 * Steps 2–5 with the journal written. A failure before the old upper is retired is rolled back at
 * once (nothing changed); after it, the journal stays and the next command completes the switch.
 */
export async function runSwitch(j: OverlayfsJournal, f: SwitchFilesystems): Promise<SwitchOutcome> {
  try {
    return await rollForward(j, f);
  } catch (err) {
    if (err instanceof SimulatedCrash) throw err;
    const e = typed(err);
    let retired = true;
    try {
      retired = await pastRetire(j, f.upperFs);
      if (!retired) await rollBack(j, f);
    } catch (again) {
      if (again instanceof SimulatedCrash) throw again;
      e.message = `${e.message}; the switch could not be undone either (${typed(again).message}): the next livestick command finishes it`;
      throw e;
    }
    e.message = retired
      ? `${e.message}; the switch stopped half way (the old upper is set aside, so a boot now runs without persistence): the next livestick command on this medium completes it`
      : `${e.message}; rolled back: nothing changed`;
    throw e;
  }
}

/** Removes what a build made before its journal existed (best effort; a failure is left for the next command's recovery). */
export async function discardBuild(f: SwitchFilesystems, base: string, upper: string, work: string): Promise<void> {
  const steps: (() => Promise<unknown>)[] = [
    async () => (await fileExists(f.baseFs, base + NEW_MARK)) && f.baseFs.unlink(base + NEW_MARK),
    async () => (await fileExists(f.baseFs, journalTemp(base))) && f.baseFs.unlink(journalTemp(base)),
    () => removeTree(f.upperFs, upper + NEW_MARK),
    () => removeTree(f.upperFs, work + NEW_MARK),
    () => f.baseFs.flush(),
    () => f.upperFs.flush(),
  ];
  for (const step of steps) {
    try {
      await step();
    } catch (err) {
      if (err instanceof SimulatedCrash) throw err;
    }
  }
}
