/**
 * exFAT (src/fs/exfat/): read and write an exFAT volume over any Disk, and make one.
 *
 *   const fs = await ExfatFs.open(disk);            // WritableFileSystem (src/fs/filesystem.ts)
 *   await mkfsExfat(disk, { label: 'VENTOY' });     // mkfs.exfat's layout; fsck.exfat-clean
 *
 * - `ExfatFs.open(disk, { readOnly?, now?, lazyValidDataLength? })`: `close()` flushes (clears
 *   VolumeDirty) but leaves the Disk open for its owner. `verify()` lists allocation problems (lost,
 *   doubly used or unmarked clusters), which fsck.exfat -n does not report.
 * - `createFile` makes the file read as zeros (clearing non-zero clusters; `uninitialized` skips
 *   that) and sets ValidDataLength to its size unless `lazyValidDataLength` (then Linux before 6.8
 *   sees the file as long as what was written); its Disk resizes (`resize`).
 * - A volume left dirty (`dirty`: VolumeDirty at open) and opened for writing is repaired by the open
 *   (lost bitmap bits, orphaned secondaries, FAT chains past their size); `repaired` says what was done.
 *   A write or flush that fails keeps VolumeDirty set at close.
 * - Errors: CorruptImageError / UnsupportedFeatureError (TexFAT, revision 2+) from the decoders;
 *   NotFoundError, AlreadyExistsError, UsageError (bad names), ReadOnlyError, and code NO_SPACE;
 *   ExfatRepairError (a CorruptImageError) when a dirty volume holds what the repair cannot judge.
 *
 * The structure codecs (boot region, entries, up-case table) are exported for tools and tests.
 */
export { ExfatFs, ExfatRepairError, type ExfatOpenOptions, type ExfatRepairReport } from './fs.ts';
export { mkfsExfat, exfatLayout, defaultClusterSize, type MkfsExfatOptions, type ExfatLayout } from './mkfs.ts';
export { decodeBootSector, encodeBootSector, encodeBootRegion, bootChecksum, readBootRegion, type BootSector } from './boot.ts';
export { decodeFileEntrySet, encodeFileEntrySet, nameHash, setChecksum, decodeTimestamp, encodeTimestamp, type FileEntrySet, type ExfatTimestamp } from './entries.ts';
export { decodeUpcaseTable, encodeUpcaseTable, defaultUpcaseMappings, upcaseChecksum } from './upcase.ts';
