/** `livestick reset MEDIUM`: empty the medium's overlay, keeping its size, name and binding. */
import { locateMedium } from './medium.ts';
import { resetOverlay, type OverlayInfo } from './overlay.ts';
import { recoverMedium, type RecoveryReport } from './switch.ts';
import { UsageError } from '../errors.ts';

export async function resetMedium(dir: string, options: { overlay?: string } = {}): Promise<{ recovery: RecoveryReport; overlay: OverlayInfo }> {
  const located = await locateMedium(dir, { overlay: options.overlay });
  const recovery = await recoverMedium(located.liveos);
  if (located.overlayPath === undefined) throw new UsageError(`no overlay file (LiveOS/overlay-LABEL-UUID) in ${located.liveos}`);
  return { recovery, overlay: await resetOverlay(located.overlayPath) };
}
