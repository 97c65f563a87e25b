// Scenario (b): dracut 059 dmsquash-live, one FAT32 partition with LiveOS/squashfs.img (flat) and the
// ext4 image file LiveOS/overlay-LIVE-1A2B-3C4D holding overlayfs/ (the upper) and ovlwork/.
import { buildStickB } from './media.ts';
import { persistenceScenario } from './scenario.ts';

persistenceScenario({ title: 'boot (b): dracut, overlayfs upper in an ext4 image file on FAT', variant: 'dracut', build: buildStickB, mergeable: true });
