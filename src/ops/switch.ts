/**
 * Crash-safe switch from (old base, old overlay) to (new base, fresh overlay), with a journal on the
 * medium so that any later livestick command finishes an interrupted switch.
 *
 * Design notes
 * - dracut boots LiveOS/squashfs.img with LiveOS/overlay-LABEL-UUID. Two files cannot be replaced in
 *   one atomic step, so the order is chosen so that no instant pairs the old overlay with the new base
 *   and no instant lacks a base:
 *     1. the new base and the new overlay are complete and durable beside the old ones (*.livestick-new);
 *     2. the journal is written (from here on, recovery rolls forward);
 *     3. with --keep-old, the old base is preserved (hard link, or a copy where links do not exist);
 *     4. overlay → overlay.livestick-old   (boot: old base, no overlay: dracut uses a RAM overlay)
 *     5. squashfs.img.livestick-new → squashfs.img (atomic replace; boot: new base, no overlay)
 *     6. overlay.livestick-new → overlay   (boot: new base, fresh overlay)
 *     7. the old overlay is removed (unless kept), then the journal.
 *   In steps 4–5 a boot finds no persistent overlay, so dracut runs with a temporary one: nothing is
 *   mixed and nothing is lost (the user's changes are in the new base, and in the kept old overlay).
 * - Every step is idempotent and decided by which files exist, so recovery simply runs the remaining
 *   steps. Without a journal, leftover *.livestick-new files are an unfinished build: removed.
 * - Renames are followed by an fsync of the directory where the host allows it.
 * - LIVESTICK_FAULT_AT=step[,step…] kills the process at those points (used by the fault-injection tests).
 */
import { copyFile, link, readdir, readFile, rename, rm, unlink, writeFile } from 'node:fs/promises';
import { fsyncDir, fsyncFile, pathExists } from '../io/host.ts';
import { join } from 'node:path';
import { CorruptImageError, fromSystemError } from '../errors.ts';
import { TEMP_MARK } from './medium.ts';

export const JOURNAL_NAME = 'livestick-journal.json';

export interface SwitchPlan {
  /** Names inside the LiveOS directory. */
  readonly base: string;
  readonly overlay: string;
  readonly newBase: string;
  readonly newOverlay: string;
  readonly oldOverlay: string;
  /** Where the old base is kept with --keep-old, else null. */
  readonly oldBase: string | null;
}

interface Journal {
  version: 1;
  op: 'switch';
  plan: SwitchPlan;
}

export function faultPoint(step: string): void {
  const at = process.env.LIVESTICK_FAULT_AT;
  if (at && at.split(',').includes(step)) process.kill(process.pid, 'SIGKILL');
}

async function writeJournal(liveos: string, plan: SwitchPlan): Promise<void> {
  const path = join(liveos, JOURNAL_NAME);
  const tmp = `${path}${TEMP_MARK}tmp`;
  const journal: Journal = { version: 1, op: 'switch', plan };
  await writeFile(tmp, `${JSON.stringify(journal, null, 2)}\n`);
  await fsyncFile(tmp);
  await rename(tmp, path);
  await fsyncDir(liveos);
}

export async function readJournal(liveos: string): Promise<SwitchPlan | undefined> {
  const path = join(liveos, JOURNAL_NAME);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw fromSystemError(err, path, 'read the journal');
  }
  let j: Journal;
  try {
    j = JSON.parse(text) as Journal;
  } catch {
    throw new CorruptImageError('livestick journal', 'json', 'not valid JSON; inspect the LiveOS directory by hand', undefined, { file: path });
  }
  const p = j?.plan;
  const names = p && [p.base, p.overlay, p.newBase, p.newOverlay, p.oldOverlay];
  if (j?.version !== 1 || j.op !== 'switch' || !names || names.some((n) => typeof n !== 'string' || n.includes('/') || n.includes('\\') || n === '' || n.startsWith('.')) || (p.oldBase !== null && typeof p.oldBase !== 'string')) {
    throw new CorruptImageError('livestick journal', 'plan', 'unexpected content; inspect the LiveOS directory by hand', undefined, { file: path });
  }
  return p;
}

async function preserveOldBase(liveos: string, plan: SwitchPlan): Promise<void> {
  if (plan.oldBase === null) return;
  const kept = join(liveos, plan.oldBase);
  const newBase = join(liveos, plan.newBase);
  // Once the new base has replaced the old one there is nothing left to keep.
  if ((await pathExists(kept)) || !(await pathExists(newBase))) return;
  const base = join(liveos, plan.base);
  try {
    await link(base, kept);
  } catch {
    const tmp = `${kept}${TEMP_MARK}copy`;
    await copyFile(base, tmp);
    faultPoint('keep-old-copied');
    await fsyncFile(tmp);
    await rename(tmp, kept);
  }
  await fsyncDir(liveos);
}

/** Runs (or resumes) every remaining step of the switch. */
async function runSteps(liveos: string, plan: SwitchPlan): Promise<void> {
  const at = (name: string) => join(liveos, name);
  await preserveOldBase(liveos, plan);
  faultPoint('old-base-kept');
  if ((await pathExists(at(plan.newOverlay))) && (await pathExists(at(plan.overlay)))) {
    await rename(at(plan.overlay), at(plan.oldOverlay));
    await fsyncDir(liveos);
  }
  faultPoint('old-overlay-moved');
  if (await pathExists(at(plan.newBase))) {
    await rename(at(plan.newBase), at(plan.base));
    await fsyncDir(liveos);
  }
  faultPoint('base-replaced');
  if (await pathExists(at(plan.newOverlay))) {
    await rename(at(plan.newOverlay), at(plan.overlay));
    await fsyncDir(liveos);
  }
  faultPoint('overlay-replaced');
  if (plan.oldBase === null) await rm(at(plan.oldOverlay), { force: true });
  await unlink(at(JOURNAL_NAME));
  await fsyncDir(liveos);
  faultPoint('switch-done');
}

/** Switches to the new base and overlay (both complete and durable beside the old ones). */
export async function switchBase(liveos: string, plan: SwitchPlan): Promise<void> {
  await writeJournal(liveos, plan);
  faultPoint('journal-written');
  await runSteps(liveos, plan);
}

export interface RecoveryReport {
  /** 'none': nothing to do; 'completed': an interrupted switch was finished; 'cleaned': an unfinished build was removed. */
  readonly action: 'none' | 'completed' | 'cleaned';
  readonly files: readonly string[];
}

/** Finishes an interrupted switch, or removes the leftovers of an unfinished build. */
export async function recoverMedium(liveos: string): Promise<RecoveryReport> {
  const plan = await readJournal(liveos);
  if (plan !== undefined) {
    await runSteps(liveos, plan);
    return { action: 'completed', files: [plan.base, plan.overlay] };
  }
  const leftovers = (await readdir(liveos)).filter((n) => n.includes(`${TEMP_MARK}new`) || n.includes(`${TEMP_MARK}partial`) || n.includes(`${TEMP_MARK}copy`) || n.includes(`${TEMP_MARK}tmp`));
  for (const n of leftovers) await rm(join(liveos, n), { force: true });
  if (leftovers.length > 0) await fsyncDir(liveos);
  return { action: leftovers.length > 0 ? 'cleaned' : 'none', files: leftovers };
}
