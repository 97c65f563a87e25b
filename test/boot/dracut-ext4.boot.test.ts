// Scenario (a): dracut 059 dmsquash-live, flat squashfs.img on FAT32, persistence = the upper directory
// LiveOS/overlay-LIVE-1A2B-3C4D/ (+ LiveOS/ovlwork/) on an ext4 partition labelled LSPERSIST.
import { buildStickA } from './media.ts';
import { persistenceScenario } from './scenario.ts';

persistenceScenario({ title: 'boot (a): dracut, overlayfs upper directory on an ext4 partition', variant: 'dracut', build: buildStickA });
