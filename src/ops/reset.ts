/** `livestick reset MEDIUM`: empty the medium's overlay, keeping its size, name and binding. */
import { liveosDir, locateMedium } from './medium.ts';
import { resetOverlay, type OverlayInfo } from './overlay.ts';
import { recoverMedium, type RecoveryReport } from './switch.ts';
import { UsageError } from '../errors.ts';

export async function resetMedium(dir: string, options: { overlay?: string } = {}): Promise<{ recovery: RecoveryReport; overlay: OverlayInfo }> {
  // An interrupted merge is finished (or rolled back) before anything else looks at the medium.
  const recovery = await recoverMedium(await liveosDir(dir));
  const located = await locateMedium(dir, { overlay: options.overlay });
  if (located.overlayPath === undefined) throw new UsageError(`no overlay file (LiveOS/overlay-LABEL-UUID) in ${located.liveos}`);
  return { recovery, overlay: await resetOverlay(located.overlayPath) };
}
