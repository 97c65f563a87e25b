// Scenario (c): Debian live-boot, live/filesystem.squashfs on ISO9660, an ext4 partition labelled
// `persistence` whose persistence.conf says `/ union` (upper rw/, work work/).
import { buildStickC } from './media.ts';
import { persistenceScenario } from './scenario.ts';

persistenceScenario({
  title: 'boot (c): Debian live-boot, / union on a persistence partition',
  variant: 'live-boot',
  build: buildStickC,
  // live-boot rewrites /var/log/live/boot.log on every boot (same bytes, new mtime: measured), so it is
  // boot noise, not persisted state.
  exclude: ['/var/log/live'],
});
