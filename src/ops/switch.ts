/**
 * Crash-safe switch from (old base, old overlay) to (new base, fresh overlay), with a journal on the
 * medium so that any later livestick command finishes or undoes an interrupted switch — and an
 * immediate rollback when a step fails, so a failed switch never costs data.
 *
 * Design notes
 * - dracut boots LiveOS/squashfs.img with LiveOS/overlay-LABEL-UUID. Two files cannot be replaced in
 *   one atomic step, so the order is chosen so that no instant pairs an overlay with a base it does
 *   not belong to and no instant lacks a base:
 *     0. the new base and the new overlay are complete, verified and durable beside the old ones
 *        (*.livestick-new);
 *     1. the journal is written: the names, and an identity (size + sampled SHA-256) of each of the
 *        four files, so recovery can tell which file is which whatever their names are now;
 *     2. the old base gets a second name (hard link), so it can come back at any later step;
 *     3. overlay → overlay.livestick-old          (boot: old base, no overlay: dracut uses a RAM one)
 *     4. squashfs.img.livestick-new → squashfs.img (atomic replace; boot: new base, no overlay)
 *     5. overlay.livestick-new → overlay           (boot: new base, fresh overlay)
 *     6. the old names are removed (kept with --keep-old), then the journal.
 * - A step that fails (EPERM, EIO, ENOSPC, a rename the host refuses) turns the journal around
 *   ("back") and undoes the steps at once: the old base and overlay return under their own names and
 *   the new files are removed. Where the host has no hard links (FAT), step 4 is the point of no
 *   return: the new base, verified and holding every change, stays, and the old overlay is kept.
 * - Recovery identifies every file present by its identity, never by name alone, then completes the
 *   journal's direction, or the other one when that is impossible. It deletes a file only when the
 *   target pair is in place under the live names (checked by identity): the new base and fresh
 *   overlay going forward, the old base and old overlay going back. When neither pair can be made it
 *   keeps everything and says what it found.
 * - Steps after the pair is in place (removing old names, the journal) only tidy up: their failure is
 *   a warning, and the next command retries them.
 * - Every file operation passes a fault point (io/faults.ts); LIVESTICK_FAULT_AT=step[,step…] also
 *   kills the process at the named step boundaries below.
 */
import { CorruptImageError, ExitCode, LivestickError, fromSystemError, type ErrorCode } from '../errors.ts';
import { SimulatedCrash } from '../io/faults.ts';
import { sampleDigest } from '../io/identity.ts';
import { TEMP_MARK } from './medium.ts';
import { copyWithin, fileExists, readSmallFile, removeIfExists } from './files.ts';
import { fsJoin, type MediumRoot } from './root.ts';

export const JOURNAL_NAME = 'livestick-journal.json';

export interface SwitchPlan {
  /** Names inside the LiveOS directory. */
  readonly base: string;
  readonly overlay: string;
  readonly newBase: string;
  readonly newOverlay: string;
  /** Where the old overlay waits during the switch (and stays with --keep-old). */
  readonly oldOverlay: string;
  /** Where the old base waits during the switch (and stays with --keep-old). */
  readonly oldBase: string;
  /** Keep the old base and overlay under their old-names afterwards (--keep-old). */
  readonly keepOld: boolean;
}

export interface FileIdentity {
  readonly size: number;
  readonly digest: string;
}

type Role = 'oldBase' | 'newBase' | 'oldOverlay' | 'newOverlay';
type Direction = 'forward' | 'back';

interface Journal {
  version: 2;
  op: 'switch';
  direction: Direction;
  plan: SwitchPlan;
  files: Record<Role, FileIdentity>;
}

/** Kills the process at a named step boundary when LIVESTICK_FAULT_AT names it (fault-injection tests). */
export function stepPoint(step: string): void {
  const at = process.env.LIVESTICK_FAULT_AT;
  if (at && at.split(',').includes(step)) process.kill(process.pid, 'SIGKILL');
}

/** The LiveOS directory of a medium being switched: its filesystem (writable) and where LiveOS/ is. */
export interface SwitchPlace {
  readonly root: MediumRoot;
  readonly liveos: string;
}

const JOURNAL_TMP = `${JOURNAL_NAME}${TEMP_MARK}tmp`;

/** Written under a temporary name and durable, then renamed over the journal (atomic where renames are; on FAT the repeat of an interrupted rename finishes it). */
async function writeJournal(place: SwitchPlace, journal: Journal): Promise<void> {
  const fs = place.root.writable();
  const tmp = fsJoin(place.liveos, JOURNAL_TMP);
  await removeIfExists(fs, tmp);
  await fs.writeFile(tmp, new TextEncoder().encode(`${JSON.stringify(journal, null, 2)}\n`));
  await fs.flush();
  await fs.rename(tmp, fsJoin(place.liveos, JOURNAL_NAME));
  await fs.flush();
}

const isName = (n: unknown): n is string => typeof n === 'string' && n !== '' && !n.includes('/') && !n.includes('\\') && !n.startsWith('.') && n !== '..';
const isIdentity = (x: unknown): x is FileIdentity => typeof x === 'object' && x !== null && Number.isSafeInteger((x as FileIdentity).size) && /^[0-9a-f]{64}$/.test(String((x as FileIdentity).digest));

export async function readJournal(place: SwitchPlace): Promise<Journal | undefined> {
  const path = place.root.display(fsJoin(place.liveos, JOURNAL_NAME));
  const bytes = await readSmallFile(place.root, fsJoin(place.liveos, JOURNAL_NAME), 1 << 20, 'the switch journal');
  if (bytes === undefined) return undefined;
  const text = new TextDecoder().decode(bytes);
  let j: Journal;
  try {
    j = JSON.parse(text) as Journal;
  } catch {
    throw new CorruptImageError('livestick journal', 'json', 'not valid JSON; nothing was changed. Inspect the LiveOS directory by hand', undefined, { file: path });
  }
  if ((j as { version?: unknown })?.version === 1) {
    throw new CorruptImageError('livestick journal', 'version', 'an interrupted switch from an older livestick (journal version 1); nothing was changed. Compare squashfs.img, the overlay and their *.livestick-* copies by hand', undefined, { file: path });
  }
  const p = j?.plan;
  const ok =
    j?.version === 2 &&
    j.op === 'switch' &&
    (j.direction === 'forward' || j.direction === 'back') &&
    p !== undefined &&
    [p.base, p.overlay, p.newBase, p.newOverlay, p.oldOverlay, p.oldBase].every(isName) &&
    typeof p.keepOld === 'boolean' &&
    (['oldBase', 'newBase', 'oldOverlay', 'newOverlay'] as const).every((r) => isIdentity(j.files?.[r]));
  if (!ok) throw new CorruptImageError('livestick journal', 'plan', 'unexpected content; nothing was changed. Inspect the LiveOS directory by hand', undefined, { file: path });
  return j;
}

/** Which of the four files each name of the plan holds right now (undefined: missing or unknown). */
class Scene {
  private readonly cache = new Map<string, Role | 'other' | undefined>();
  constructor(
    readonly place: SwitchPlace,
    readonly journal: Journal,
  ) {}

  path(name: string): string {
    return fsJoin(this.place.liveos, name);
  }

  get fs() {
    return this.place.root.writable();
  }

  forget(...names: string[]): void {
    for (const n of names) this.cache.delete(n);
  }

  async at(name: string): Promise<Role | 'other' | undefined> {
    if (this.cache.has(name)) return this.cache.get(name);
    const path = this.path(name);
    let role: Role | 'other' | undefined;
    if (await fileExists(this.place.root.fs, path)) {
      const id = await identityOf(this.place.root, path);
      role = 'other';
      for (const [r, want] of Object.entries(this.journal.files) as [Role, FileIdentity][]) {
        if (want.size === id.size && want.digest === id.digest) role = r;
      }
    }
    this.cache.set(name, role);
    return role;
  }

  async has(name: string, role: Role): Promise<boolean> {
    return (await this.at(name)) === role;
  }

  async describe(): Promise<string> {
    const p = this.journal.plan;
    const parts: string[] = [];
    for (const n of new Set([p.base, p.overlay, p.newBase, p.newOverlay, p.oldBase, p.oldOverlay])) {
      const r = await this.at(n);
      if (r !== undefined) parts.push(`${n} (${r === 'other' ? 'unknown content' : ROLE_TEXT[r]})`);
    }
    return parts.length > 0 ? parts.join(', ') : 'none of the files';
  }
}

const ROLE_TEXT: Record<Role, string> = { oldBase: 'the old base', newBase: 'the new base', oldOverlay: 'the old overlay', newOverlay: 'the fresh overlay' };

async function renameIn(scene: Scene, from: string, to: string): Promise<void> {
  await scene.fs.rename(scene.path(from), scene.path(to));
  await scene.fs.flush();
  scene.forget(from, to);
}

/**
 * Can the pair of a direction be put under the live names with the files present? Never when a live
 * name holds a file of unknown content (the medium was booted and its overlay changed since, or a
 * file was replaced by hand): that file is the user's newest data and nothing may be moved onto it.
 */
async function possible(scene: Scene, dir: Direction): Promise<boolean> {
  const p = scene.journal.plan;
  const base = await scene.at(p.base);
  const overlay = await scene.at(p.overlay);
  if (dir === 'forward') {
    if (base === 'other' || overlay === 'other') return false;
    const newBase = base === 'newBase' || (await scene.has(p.newBase, 'newBase'));
    const newOverlay = overlay === 'newOverlay' || (await scene.has(p.newOverlay, 'newOverlay'));
    const oldOverlayAccounted = overlay === 'newOverlay' || overlay === 'oldOverlay' || (await scene.has(p.oldOverlay, 'oldOverlay'));
    return newBase && newOverlay && oldOverlayAccounted;
  }
  if (base === 'other') return false;
  const oldBase = base === 'oldBase' || (await scene.has(p.oldBase, 'oldBase'));
  const oldOverlayAside = await scene.has(p.oldOverlay, 'oldOverlay');
  const overlayOk = overlay === 'oldOverlay' || (overlay === 'other' && !oldOverlayAside) || ((overlay === undefined || overlay === 'newOverlay') && oldOverlayAside);
  return oldBase && overlayOk;
}

/** Steps 2–5: puts the new pair under the live names. Every step is idempotent. */
async function pairForward(scene: Scene): Promise<void> {
  const p = scene.journal.plan;
  const fs = scene.fs;
  if ((await scene.has(p.base, 'oldBase')) && (await scene.at(p.oldBase)) === undefined) {
    let linked = false;
    if (fs.link) {
      try {
        await fs.link(scene.path(p.base), scene.path(p.oldBase));
        await fs.flush();
        linked = true;
      } catch (err) {
        // No hard links here after all (a FAT mount): the base replace below becomes the point of no return.
        rethrowCrash(err);
        await removeIfExists(fs, scene.path(p.oldBase)).catch(rethrowCrash);
      }
    }
    if (!linked && p.keepOld) {
      const tmp = `${p.oldBase}${TEMP_MARK}copy`;
      await removeIfExists(fs, scene.path(tmp));
      await copyWithin(fs, scene.path(p.base), scene.path(tmp));
      await renameIn(scene, tmp, p.oldBase);
    }
    scene.forget(p.oldBase);
  }
  stepPoint('old-base-kept');
  // Where renames are not atomic, both names can hold the old overlay after a crash: repeating the rename finishes it.
  const oldOverlayAside = await scene.at(p.oldOverlay);
  if ((await scene.has(p.overlay, 'oldOverlay')) && (oldOverlayAside === undefined || (!fs.renameIsAtomic && oldOverlayAside === 'oldOverlay'))) await renameIn(scene, p.overlay, p.oldOverlay);
  stepPoint('old-overlay-moved');
  if (await scene.has(p.newBase, 'newBase')) await renameIn(scene, p.newBase, p.base);
  stepPoint('base-replaced');
  if ((await scene.has(p.newOverlay, 'newOverlay')) && (await scene.at(p.overlay)) !== 'oldOverlay') await renameIn(scene, p.newOverlay, p.overlay);
  stepPoint('overlay-replaced');
  if (!(await scene.has(p.base, 'newBase')) || !(await scene.has(p.overlay, 'newOverlay'))) {
    throw new LivestickError('FAILURE', ExitCode.failure, `the new pair is not in place after the switch steps (found ${await scene.describe()})`, { file: scene.place.root.display(scene.place.liveos) });
  }
}

/** Undo: puts the old pair back under the live names (an overlay changed since is left as it is). */
async function pairBack(scene: Scene): Promise<void> {
  const p = scene.journal.plan;
  if (!(await scene.has(p.base, 'oldBase')) && (await scene.has(p.oldBase, 'oldBase'))) await renameIn(scene, p.oldBase, p.base);
  const overlay = await scene.at(p.overlay);
  if ((overlay === undefined || overlay === 'newOverlay') && (await scene.has(p.oldOverlay, 'oldOverlay'))) await renameIn(scene, p.oldOverlay, p.overlay);
  const now = await scene.at(p.overlay);
  if (!(await scene.has(p.base, 'oldBase')) || !(now === 'oldOverlay' || now === 'other')) {
    throw new LivestickError('FAILURE', ExitCode.failure, `the old pair could not be put back (found ${await scene.describe()})`, { file: scene.place.root.display(scene.place.liveos) });
  }
}

/** Step 6: removes what the direction no longer needs, then the journal. Failures are warnings. */
async function tidy(scene: Scene, dir: Direction, warnings: string[]): Promise<void> {
  const p = scene.journal.plan;
  const fs = scene.fs;
  const shown = (name: string) => scene.place.root.display(scene.path(name));
  let failed = false;
  const remove = async (name: string, role: Role): Promise<void> => {
    try {
      if (!(await scene.has(name, role))) return;
      // A name left by an interrupted non-atomic rename shares its data with the live name: finishing the rename removes it.
      const live = role === 'oldBase' || role === 'newBase' ? p.base : p.overlay;
      if (!fs.renameIsAtomic && name !== live && (await scene.has(live, role))) await fs.rename(scene.path(name), scene.path(live));
      else await fs.unlink(scene.path(name));
      scene.forget(name, live);
    } catch (err) {
      if (err instanceof SimulatedCrash) throw err;
      failed = true;
      warnings.push(`could not remove ${shown(name)} (${fromSystemError(err, name, 'remove it').message}); the journal stays, and the next livestick command retries`);
    }
  };
  // Only with the target pair in place (checked by the callers) is anything deleted.
  if (dir === 'forward') {
    if (!p.keepOld) {
      await remove(p.oldOverlay, 'oldOverlay');
      await remove(p.oldBase, 'oldBase');
    }
  } else {
    await remove(p.newBase, 'newBase');
    await remove(p.newOverlay, 'newOverlay');
    await remove(p.oldBase, 'oldBase');
    // Only a second name of the restored overlay (an interrupted non-atomic rename back): finished, never deleted alone.
    if (await scene.has(p.overlay, 'oldOverlay')) await remove(p.oldOverlay, 'oldOverlay');
  }
  await removeIfExists(fs, scene.path(`${p.oldBase}${TEMP_MARK}copy`)).catch(rethrowCrash);
  if (failed) return;
  try {
    await fs.flush();
    await removeIfExists(fs, scene.path(JOURNAL_TMP));
    await fs.unlink(scene.path(JOURNAL_NAME));
    await fs.flush();
  } catch (err) {
    if (err instanceof SimulatedCrash) throw err;
    warnings.push(`could not remove the journal ${shown(JOURNAL_NAME)} (${fromSystemError(err, JOURNAL_NAME, 'remove it').message}); the next livestick command retries`);
  }
}

function rethrowCrash(err: unknown): void {
  if (err instanceof SimulatedCrash) throw err;
}

/** A switch that failed: rolled back (nothing changed), or stopped where the files are safe. */
export class SwitchFailedError extends LivestickError {
  constructor(
    code: ErrorCode,
    exitCode: number,
    message: string,
    readonly rolledBack: boolean,
    options: { file?: string; cause?: unknown },
  ) {
    super(code, exitCode, message, options);
  }
  override details(): Record<string, unknown> {
    return { ...super.details(), rolledBack: this.rolledBack };
  }
}

function plainCause(err: unknown, liveos: string): LivestickError {
  const e = err instanceof LivestickError ? err : fromSystemError(err, liveos, 'switch');
  const sys = (e.cause ?? err) as NodeJS.ErrnoException;
  if (sys?.code && sys.path) e.message = `${sys.syscall ?? 'an operation'} on ${sys.path} failed: ${explainErrno(sys.code) ?? sys.code}`;
  return e;
}

/** A plain-words reason for the errnos a switch or its pre-checks meet (undefined: no better words than the code). */
export function explainErrno(code: string): string | undefined {
  switch (code) {
    case 'EPERM':
      return 'operation not permitted — an immutable or append-only attribute (see `lsattr`), or a host that refuses it';
    case 'EACCES':
      return 'permission denied';
    case 'EROFS':
      return 'the filesystem is mounted read-only';
    case 'ENOSPC':
      return 'no space left on the medium';
    case 'EIO':
      return 'an I/O error (a failing or pulled stick?)';
    case 'EBUSY':
      return 'the file is busy (in use by a running system?)';
    default:
      return undefined;
  }
}

async function identityOf(root: MediumRoot, path: string): Promise<FileIdentity> {
  const disk = await root.fs.openFile(path);
  try {
    return await sampleDigest(disk);
  } finally {
    await disk.close();
  }
}

/** Identities of the four files; computed before the switch (the new ones are verified by then). */
async function identify(place: SwitchPlace, plan: SwitchPlan): Promise<Record<Role, FileIdentity>> {
  const id = (n: string) => identityOf(place.root, fsJoin(place.liveos, n));
  return { oldBase: await id(plan.base), newBase: await id(plan.newBase), oldOverlay: await id(plan.overlay), newOverlay: await id(plan.newOverlay) };
}

/**
 * Switches to the new base and overlay (both complete, verified and durable beside the old ones).
 * Returns warnings from tidying up; throws SwitchFailedError after rolling back when a step fails.
 */
export async function switchBase(place: SwitchPlace, plan: SwitchPlan): Promise<string[]> {
  const liveos = place.root.display(place.liveos);
  const fs = place.root.writable();
  const warnings: string[] = [];
  let journal: Journal;
  try {
    journal = { version: 2, op: 'switch', direction: 'forward', plan, files: await identify(place, plan) };
    await writeJournal(place, journal);
  } catch (err) {
    if (err instanceof SimulatedCrash) throw err;
    // Nothing was switched: the new files are only an unfinished build.
    for (const n of [JOURNAL_TMP, JOURNAL_NAME, plan.newBase, plan.newOverlay]) await removeIfExists(fs, fsJoin(place.liveos, n)).catch(rethrowCrash);
    const cause = plainCause(err, liveos);
    throw new SwitchFailedError(cause.code, cause.exitCode, `rolled back: nothing changed. The switch journal could not be written: ${cause.message}`, true, { file: liveos, cause: err });
  }
  stepPoint('journal-written');
  const scene = new Scene(place, journal);
  try {
    await pairForward(scene);
  } catch (err) {
    if (err instanceof SimulatedCrash) throw err;
    const cause = plainCause(err, liveos);
    try {
      journal.direction = 'back';
      await writeJournal(place, journal).catch((e: unknown) => rethrowCrash(e));
      scene.forget(...Object.values(plan).filter((v): v is string => typeof v === 'string'));
      if (!(await possible(scene, 'back'))) {
        const baseIsNew = await scene.has(plan.base, 'newBase');
        throw new SwitchFailedError(
          cause.code,
          cause.exitCode,
          baseIsNew
            ? `the switch stopped after the new base was put in place (this host keeps no second name for the old base, so it cannot come back): ${cause.message}. Nothing is lost: the new base holds every change, and the old overlay is kept. Found: ${await scene.describe()}. Run any livestick command on the medium to finish`
            : `the switch failed (${cause.message}) and cannot be undone with the files present: ${await scene.describe()}. Nothing was deleted; run any livestick command on the medium once the cause is fixed`,
          false,
          { file: liveos, cause: err },
        );
      }
      await pairBack(scene);
      await tidy(scene, 'back', warnings);
    } catch (rollbackErr) {
      if (rollbackErr instanceof SimulatedCrash || rollbackErr instanceof SwitchFailedError) throw rollbackErr;
      throw new SwitchFailedError(
        cause.code,
        cause.exitCode,
        `the switch failed (${cause.message}) and so did rolling it back (${plainCause(rollbackErr, liveos).message}). Nothing was deleted; found: ${await scene.describe().catch(() => 'unknown')}. The journal ${JOURNAL_NAME} records the files; run any livestick command on the medium once the cause is fixed`,
        false,
        { file: liveos, cause: err },
      );
    }
    throw new SwitchFailedError(cause.code, cause.exitCode, `rolled back: nothing changed. The switch failed: ${cause.message}`, true, { file: liveos, cause: err });
  }
  await tidy(scene, 'forward', warnings);
  stepPoint('switch-done');
  return warnings;
}

export interface RecoveryReport {
  /**
   * 'none': nothing to do; 'completed': an interrupted switch was finished; 'rolled-back': it was
   * undone (the old pair is back); 'cleaned': an unfinished build was removed.
   */
  readonly action: 'none' | 'completed' | 'rolled-back' | 'cleaned';
  readonly files: readonly string[];
  readonly warnings: readonly string[];
}

/** Leftovers of an unfinished build: removed only when no journal exists (nothing was switched). */
const BUILD_LEFTOVER = [`${TEMP_MARK}new`, `${TEMP_MARK}partial`, `${TEMP_MARK}copy`, `${TEMP_MARK}tmp`, `${TEMP_MARK}probe`, `${TEMP_MARK}linkprobe`];
const isBuildLeftover = (name: string): boolean => name !== JOURNAL_NAME && BUILD_LEFTOVER.some((m) => name.includes(m));

/** Whether `recoverMedium` has anything to do: a journal, or leftovers of an unfinished build. */
export async function recoveryNeeded(place: SwitchPlace): Promise<boolean> {
  const names = (await place.root.fs.readdir(place.liveos)).map((e) => e.name);
  return names.includes(JOURNAL_NAME) || names.some(isBuildLeftover);
}

/** Finishes or undoes an interrupted switch, or removes the leftovers of an unfinished build. */
export async function recoverMedium(place: SwitchPlace): Promise<RecoveryReport> {
  const journal = await readJournal(place);
  const liveos = place.liveos;
  const warnings: string[] = [];
  if (journal !== undefined) {
    const scene = new Scene(place, journal);
    const order: Direction[] = journal.direction === 'forward' ? ['forward', 'back'] : ['back', 'forward'];
    for (const dir of order) {
      if (!(await possible(scene, dir))) continue;
      if (dir === 'forward') await pairForward(scene);
      else await pairBack(scene);
      await tidy(scene, dir, warnings);
      return { action: dir === 'forward' ? 'completed' : 'rolled-back', files: [journal.plan.base, journal.plan.overlay], warnings };
    }
    throw new LivestickError(
      'FAILURE',
      ExitCode.failure,
      `an interrupted switch cannot be finished or undone with the files present: ${await scene.describe()}. Nothing was changed or deleted; keep these files and inspect them by hand`,
      { file: place.root.display(fsJoin(liveos, JOURNAL_NAME)) },
    );
  }
  const names = (await place.root.fs.readdir(liveos)).map((e) => e.name);
  const leftovers = names.filter(isBuildLeftover);
  if (leftovers.length === 0) return { action: 'none', files: [], warnings };
  const fs = place.root.writable();
  const removed: string[] = [];
  for (const n of leftovers) {
    // A new file is only ever a copy of something regenerable while its live counterpart exists.
    const live = n.slice(0, n.indexOf(TEMP_MARK));
    if (n.endsWith(`${TEMP_MARK}new`) && live !== '' && !names.includes(live)) {
      warnings.push(`${place.root.display(fsJoin(liveos, n))} has no ${live} beside it; kept`);
      continue;
    }
    if (await removeIfExists(fs, fsJoin(liveos, n))) removed.push(n);
  }
  if (removed.length > 0) await fs.flush();
  return { action: removed.length > 0 ? 'cleaned' : 'none', files: removed, warnings };
}
