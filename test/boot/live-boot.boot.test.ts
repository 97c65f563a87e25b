// Scenario (c): Debian live-boot, live/filesystem.squashfs on FAT32, an ext4 partition labelled
// `persistence` whose persistence.conf says `/ union` (upper rw/, work work/).
import { buildStickC } from './media.ts';
import { persistenceScenario } from './scenario.ts';

persistenceScenario({ title: 'boot (c): Debian live-boot, / union on a persistence partition', variant: 'live-boot', build: buildStickC });
