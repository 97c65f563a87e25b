/**
 * `livestick reset MEDIUM`: empty the medium's overlay, keeping its size and name, and bind it to the
 * base the medium holds now (an empty overlay belongs to whatever base it is next booted with).
 */
import { liveosDir, locateMedium, openMedium } from './medium.ts';
import { bindingFor, resetOverlay, type OverlayInfo } from './overlay.ts';
import { recoverMedium, type RecoveryReport } from './switch.ts';
import { UsageError } from '../errors.ts';

export async function resetMedium(dir: string, options: { overlay?: string; wipe?: boolean } = {}): Promise<{ recovery: RecoveryReport; overlay: OverlayInfo & { wipedBytes: number } }> {
  // An interrupted merge is finished (or rolled back) before anything else looks at the medium.
  const recovery = await recoverMedium(await liveosDir(dir));
  const located = await locateMedium(dir, { overlay: options.overlay });
  if (located.overlayPath === undefined) throw new UsageError(`no overlay file (LiveOS/overlay-LABEL-UUID) in ${located.liveos}`);
  const medium = await openMedium(located);
  let binding;
  try {
    binding = await bindingFor(medium.rootDisk, medium.rootImage);
  } finally {
    await medium.close();
  }
  return { recovery, overlay: await resetOverlay(located.overlayPath, { binding, wipe: options.wipe }) };
}
