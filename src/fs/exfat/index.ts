/**
 * exFAT (src/fs/exfat/): read and write an exFAT volume over any Disk, and make one.
 *
 *   const fs = await ExfatFs.open(disk);            // WritableFileSystem (src/fs/filesystem.ts)
 *   await mkfsExfat(disk, { label: 'VENTOY' });     // mkfs.exfat's layout; fsck.exfat-clean
 *
 * The structure codecs (boot region, entries, up-case table) are exported for tools and tests.
 */
export { ExfatFs, type ExfatOpenOptions } from './fs.ts';
export { mkfsExfat, exfatLayout, defaultClusterSize, type MkfsExfatOptions, type ExfatLayout } from './mkfs.ts';
export { decodeBootSector, encodeBootSector, encodeBootRegion, bootChecksum, readBootRegion, type BootSector } from './boot.ts';
export { decodeFileEntrySet, encodeFileEntrySet, nameHash, setChecksum, decodeTimestamp, encodeTimestamp, type FileEntrySet, type ExfatTimestamp } from './entries.ts';
export { decodeUpcaseTable, encodeUpcaseTable, defaultUpcaseMappings, upcaseChecksum } from './upcase.ts';
