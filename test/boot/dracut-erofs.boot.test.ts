// Scenario (d): Debian 13's dracut 106 dmsquash-live over an EROFS base made with Fedora 43's options
// (mkfs.erofs -zlzma,level=6 -C1048576 -Efragments; scripts/media/trixie.sh), laid out as (b): one FAT32
// partition with LiveOS/squashfs.img and the ext4 image file LiveOS/overlay-LIVE-1A2B-3C4D holding
// overlayfs/ (the upper) and ovlwork/.
import { buildStickD } from './media.ts';
import { persistenceScenario } from './scenario.ts';

persistenceScenario({
  title: 'boot (d): dracut 106, EROFS base (Fedora 43 options), overlayfs upper in an ext4 image file on FAT',
  variant: 'dracut-erofs',
  build: buildStickD,
  baseFsType: 'erofs',
  // The merge writes a new EROFS base with the old one's settings (LZMA, 1 MiB pclusters, fragments),
  // POSIX ACLs (/var/log/journal) kept; boot 3 boots it. Files with pclusters of their own keep them,
  // and the old packed inode (the many small files mkfs.erofs stored whole there) leads the new one:
  // most files are carried (3572 of 3785 on the test medium).
  mergeable: true,
  mergeCarries: 'most',
});
