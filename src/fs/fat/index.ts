/**
 * FAT12/16/32 with VFAT long names: `FatFs.open(disk)` reads and writes a volume as a
 * WritableFileSystem (fs/filesystem.ts); `mkfsFat(disk)` formats one with mkfs.fat's choices.
 * Errors are typed (src/errors.ts): CorruptImageError for damaged structures, UnsupportedFeatureError for
 * names or sizes FAT cannot hold (files are limited to 4 GiB − 1), NotFoundError / AlreadyExistsError for
 * paths, a NO_SPACE LivestickError (FatNoSpaceError) when the volume is full, FatRepairError (a
 * CorruptImageError) when a volume left dirty holds what the repair on open cannot judge.
 */
export { FatFs, type FatOpenOptions } from './fs.ts';
export { mkfsFat, chooseGeometry as fatGeometry, type MkfsFatOptions, type MkfsFatResult } from './mkfs.ts';
export { FatNoSpaceError } from './table.ts';
export { FatRepairError, type FatRepairReport } from './repair.ts';
export { MAX_FILE_SIZE as FAT_MAX_FILE_SIZE } from './dirent.ts';
export type { FatType } from './boot.ts';
