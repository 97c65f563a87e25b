/**
 * `livestick reset` and `livestick overlay bind` on overlayfs media.
 *
 * - reset: the upper and work dirs are replaced by fresh empty ones (the old roots' mode, owner and
 *   labels, as the boot code expects them), bound to the base the medium holds now, through the same
 *   journaled switch as a merge with the base left as it is; the old trees are then deleted.
 * - bind: the binding record in the work dir names the base the medium holds now.
 */
import { UsageError } from '../../errors.ts';
import type { WritableFileSystem } from '../../fs/filesystem.ts';
import { withStick } from '../live/index.ts';
import { lowerIdentities, writeBinding } from './binding.ts';
import { recoverOverlayfs } from './recover.ts';
import { selectOverlayfsOrNone } from './select.ts';
import { discardBuild, prepareFreshUpper, runSwitch, volumeRef, writeJournal, type OverlayfsJournal } from './switch.ts';
import { SimulatedCrash } from '../../io/faults.ts';
import { stepPoint } from '../switch.ts';

export interface OverlayfsResetResult {
  readonly kind: 'overlayfs';
  readonly medium: string;
  readonly upper: string;
  readonly work: string;
  readonly droppedEntries: number;
  readonly warnings: string[];
}

export interface OverlayfsMediumOptions {
  partition?: number;
  forceDevice?: boolean;
}

/** Empties the upper of the overlayfs medium at `target`; undefined when it is not one. */
export async function resetOverlayfs(target: string, options: OverlayfsMediumOptions = {}): Promise<OverlayfsResetResult | undefined> {
  return withStick(target, { write: true, force: options.forceDevice }, async (stick) => {
    const recovery = await recoverOverlayfs(stick);
    const choice = await selectOverlayfsOrNone(stick, options.partition);
    if (choice === undefined) return undefined;
    const { system, persistence } = choice;
    if (!persistence.present) throw new UsageError(`${persistence.volume.displayPath(persistence.upper)} is not in use (nothing to reset): ${persistence.mode}`);
    if (persistence.work === undefined) throw new UsageError(`${persistence.volume.displayPath(persistence.upper)} has no work directory beside it`);
    if (persistence.legacy || persistence.upper === '/') throw new UsageError(`${persistence.volume.displayPath(persistence.upper)} is casper's old layout (the upper is the filesystem root): boot the stick once so casper moves it into upper/, then run this again`);
    const lower = system.lowers[0]!;
    const warnings = [...recovery.warnings];
    const open = await persistence.open({ write: true });
    const fs = open.fs as WritableFileSystem;
    const dropped = (await fs.readdir(persistence.upper)).length;
    const baseFs = await lower.volume.writable();
    const journal: OverlayfsJournal = { schemaVersion: 1, kind: 'overlayfs-switch', baseVolume: volumeRef(lower.volume), base: lower.path, upperVolume: volumeRef(persistence.volume), upper: persistence.upper, work: persistence.work, keepOld: false };
    try {
      await prepareFreshUpper(fs, persistence.upper, persistence.work, await lowerIdentities(system), warnings);
      stepPoint('ovl-fresh-upper');
      await writeJournal(baseFs, journal);
    } catch (err) {
      if (!(err instanceof SimulatedCrash)) await discardBuild({ baseFs, upperFs: fs }, lower.path, persistence.upper, persistence.work);
      throw err;
    }
    stepPoint('ovl-journal-written');
    const outcome = await runSwitch(journal, { baseFs, upperFs: fs });
    warnings.push(...outcome.warnings);
    return { kind: 'overlayfs', medium: stick.target, upper: persistence.volume.displayPath(persistence.upper), work: persistence.volume.displayPath(persistence.work), droppedEntries: dropped, warnings };
  });
}

/** Records the base the medium holds now as the upper's; undefined when it is not an overlayfs medium. */
export async function bindOverlayfs(target: string, options: OverlayfsMediumOptions = {}): Promise<{ kind: 'overlayfs'; medium: string; upper: string; base: string[] } | undefined> {
  return withStick(target, { write: true, force: options.forceDevice }, async (stick) => {
    await recoverOverlayfs(stick);
    const choice = await selectOverlayfsOrNone(stick, options.partition);
    if (choice === undefined) return undefined;
    const { system, persistence } = choice;
    if (persistence.work === undefined || !persistence.present) throw new UsageError(`${persistence.volume.displayPath(persistence.upper)} has no work directory to hold the binding`);
    const open = await persistence.open({ write: true });
    const fs = open.fs as WritableFileSystem;
    await writeBinding(fs, persistence.work, await lowerIdentities(system));
    await fs.flush();
    return { kind: 'overlayfs', medium: stick.target, upper: persistence.volume.displayPath(persistence.upper), base: system.lowers.map((l) => l.volume.displayPath(l.path)) };
  });
}
