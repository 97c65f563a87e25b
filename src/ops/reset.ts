/**
 * `livestick reset MEDIUM`: empty the medium's overlay, keeping its size and name, and bind it to the
 * base the medium holds now (an empty overlay belongs to whatever base it is next booted with).
 */
import { LivestickError, UsageError } from '../errors.ts';
import { locateMedium, openMedium, openMediumFile, withRecoveredMedium } from './medium.ts';
import type { MediumOptions } from './merge.ts';
import { bindingFor, resetStore, type OverlayInfo } from './overlay.ts';
import type { RecoveryReport } from './switch.ts';

export async function resetMedium(target: string, options: MediumOptions & { overlay?: string; wipe?: boolean } = {}): Promise<{ recovery: RecoveryReport; overlay: OverlayInfo & { wipedBytes: number } }> {
  // An interrupted merge is finished (or rolled back) before anything else looks at the medium.
  return withRecoveredMedium(target, { write: true, partition: options.partition, force: options.forceDevice }, async (root, recovery) => {
    const located = await locateMedium(root, { overlay: options.overlay });
    if (located.overlayPath === undefined) throw new UsageError(`no overlay file (LiveOS/overlay-LABEL-UUID) in ${root.display(located.liveos)}`);
    const shown = root.display(located.overlayPath);
    const medium = await openMedium(located);
    let binding;
    try {
      binding = await bindingFor(medium.rootDisk, medium.rootImage);
    } finally {
      await medium.close();
    }
    const disk = await openMediumFile(root, located.overlayPath, 'write');
    try {
      return { recovery, overlay: await resetStore(disk, shown, { binding, wipe: options.wipe }) };
    } catch (err) {
      throw err instanceof LivestickError ? err.withFile(shown) : err;
    } finally {
      await disk.close();
    }
  });
}
