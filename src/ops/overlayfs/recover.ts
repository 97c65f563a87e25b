/**
 * Finishing or undoing an interrupted overlayfs switch (see ./switch.ts), and removing what an
 * interrupted build left: the first thing every writing command on an overlayfs medium does, and
 * what `status` does after reopening the stick for writing when it finds a journal.
 */
import { LivestickError, UsageError } from '../../errors.ts';
import type { FileSystem, WritableFileSystem } from '../../fs/filesystem.ts';
import { Ext4FileSystem } from '../../fs/ext4/filesystem.ts';
import { findLive, type Stick } from '../live/index.ts';
import { fileExists } from '../files.ts';
import { NEW_MARK, journalTemp, pastRetire, readJournal, removeTree, rollBack, rollForward, volumeOf, type SwitchOutcome } from './switch.ts';

interface Place {
  readonly base: string;
  readonly baseFs: () => Promise<WritableFileSystem>;
  readonly read: () => Promise<FileSystem | undefined>;
  readonly uppers: readonly { readonly fs: () => Promise<WritableFileSystem>; readonly read: () => Promise<FileSystem | undefined>; readonly upper: string; readonly work: string | undefined }[];
}

async function places(stick: Stick): Promise<Place[]> {
  const found = await findLive(stick);
  const out: Place[] = [];
  for (const s of found.systems) {
    const lower = s.lowers[0];
    if (lower === undefined) continue;
    out.push({
      base: lower.path,
      baseFs: () => lower.volume.writable(),
      read: () => lower.volume.open(),
      uppers: s.persistence.filter((p) => p.kind === 'overlayfs' && p.target === '/').map((p) => ({ fs: () => p.volume.writable(), read: () => p.volume.open(), upper: p.upper, work: p.work })),
    });
  }
  return out;
}

/**
 * A volume a stop left mid-change: FAT's dirty bit, or an ext4 journal holding transactions to replay
 * (read as it is, an ext4 shows the tree from before them, without what an interrupted build made).
 * Opening it for writing repairs or replays it, as a mount would.
 */
async function leftMidChange(fs: FileSystem): Promise<boolean> {
  if (fs.dirty === true) return true;
  return fs instanceof Ext4FileSystem && (await fs.fs.state()).needsRecovery;
}

/** Whether an interrupted switch or build left anything to recover, or a volume to repair (read-only check). */
export async function overlayfsNeedsRecovery(stick: Stick): Promise<boolean> {
  for (const p of await places(stick)) {
    const fs = await p.read();
    if (!fs) continue;
    try {
      if (await leftMidChange(fs)) return true;
      if ((await readJournal(fs, p.base)) !== undefined || (await fileExists(fs, p.base + NEW_MARK)) || (await fileExists(fs, journalTemp(p.base)))) return true;
      for (const u of p.uppers) {
        const ur = await u.read();
        if (ur && (await leftMidChange(ur))) return true;
        for (const dir of [u.upper, u.work]) if (ur && dir !== undefined && (await fileExists(ur, dir + NEW_MARK))) return true;
      }
    } catch (err) {
      if (err instanceof LivestickError) return true;
      throw err;
    }
  }
  return false;
}

/** Completes or rolls back an interrupted switch; removes build leftovers. The stick must be open for writing. */
export async function recoverOverlayfs(stick: Stick): Promise<SwitchOutcome> {
  let outcome: SwitchOutcome = { action: 'none', warnings: [], kept: {} };
  for (const p of await places(stick)) {
    const read = await p.read();
    if (!read) continue;
    const journal = await readJournal(read, p.base);
    if (journal !== undefined) {
      const upperVolume = await volumeOf(stick, journal.upperVolume);
      if (upperVolume === undefined) throw new UsageError(`an interrupted merge left its journal beside ${p.base}, but the volume of its upper (${journal.upperVolume.id}) is not on this stick; reattach it and run the command again`);
      const f = { baseFs: await p.baseFs(), upperFs: await upperVolume.writable() };
      outcome = (await pastRetire(journal, f.upperFs)) ? await rollForward(journal, f) : await rollBack(journal, f);
      continue;
    }
    // No journal: a build that never reached its switch. Its pieces hold nothing a boot uses.
    for (const leftover of [p.base + NEW_MARK, journalTemp(p.base)]) {
      if (!(await fileExists(read, leftover))) continue;
      const fs = await p.baseFs();
      await fs.unlink(leftover);
      await fs.flush();
      outcome = { action: 'rolled-back', warnings: outcome.warnings, kept: {} };
    }
    for (const u of p.uppers) {
      const ur = await u.read();
      if (!ur) continue;
      for (const dir of [u.upper, u.work]) {
        if (dir !== undefined && (await fileExists(ur, dir + NEW_MARK))) {
          const ufs = await u.fs();
          await removeTree(ufs, dir + NEW_MARK);
          await ufs.flush();
          outcome = { action: 'rolled-back', warnings: outcome.warnings, kept: {} };
        }
      }
    }
  }
  return outcome;
}
