/**
 * The public programmatic API: `import { … } from 'livestick'`.
 *
 * Design notes. This file is the whole published surface; nothing else is reachable through the
 * package's `exports`. It names every export on purpose (no `export *`), so adding a helper to a
 * module never silently widens the API, and a rename inside a layer breaks the typecheck here rather
 * than a user's code. It is grouped by layer, bottom up: errors, Disks, the stackable Disks (dm-snapshot
 * overlay, LUKS), the filesystems (SquashFS, ext4), then the medium-level operations the CLI runs.
 * Names that two layers share (OpenOptions, Inode, Xattr, WriteOptions…) are exported with a layer
 * prefix. docs/API.md describes the surface; test/api/pack.slow.test.ts installs the packed tarball
 * into a fresh project and uses it.
 */

// Errors: every failure a caller should handle is a LivestickError with a stable `code`.
export {
  ExitCode,
  LivestickError,
  CorruptImageError,
  UnsupportedFeatureError,
  UsageError,
  NotFoundError,
  AlreadyExistsError,
  IoError,
  PermissionError,
  OutOfRangeError,
  ReadOnlyError,
  type ErrorCode,
} from './errors.ts';
export { OverlayFullError, SnapshotInvalidError, BaseMismatchError } from './xform/dmsnap/errors.ts';
export { WrongPassphraseError } from './xform/luks/volume.ts';
export { NoSpaceError } from './fs/ext4/errors.ts';

// io: the Disk contract and its plain implementations.
export { FileDisk, MemoryDisk, SliceDisk, ReadOnlyDisk, readAt, readPieces, type Disk, type FileDiskOptions } from './io/disk.ts';
export { formatSize, parseSize } from './io/bytes.ts';

// xform/dmsnap: the kernel-compatible persistent snapshot (COW overlay) and the combined device.
export { ExceptionStore, type StoreState, type StoreStatus } from './xform/dmsnap/store.ts';
export { SnapshotDisk, type OverflowMode, type SnapshotDiskOptions } from './xform/dmsnap/snapshot-disk.ts';
export { decodeBinding, encodeBinding, sameBase, type BaseBinding, type BindingState } from './xform/dmsnap/binding.ts';
export { fingerprintBase } from './xform/dmsnap/fingerprint.ts';
export { DEFAULT_CHUNK_SECTORS, MAX_CHUNK_SECTORS, SECTOR } from './xform/dmsnap/format.ts';

// xform/luks: LUKS1/LUKS2 volumes and the decrypted payload as a Disk.
export {
  LuksVolume,
  LUKS2_DEFAULT_DATA_OFFSET,
  type KdfChoice,
  type Luks2FormatOptions,
  type LuksInfo,
  type LuksKeyslotInfo,
  type OpenOptions as LuksOpenOptions,
  type RandomSource,
  type UnlockResult,
} from './xform/luks/volume.ts';
export { CryptDisk, type CryptDiskOptions } from './xform/luks/crypt-disk.ts';
export { defaultKdfLimits, useArgon2Backend, type KdfLimits, type KdfParams } from './xform/luks/kdf.ts';

// fs/squashfs: reader, writer and its input tree, extraction.
export { SquashfsReader, type Entry as SquashfsEntry, type WalkEntry as SquashfsWalkEntry, type ReaderOptions as SquashfsReaderOptions } from './fs/squashfs/reader.ts';
export { writeSquashfs, type WriteOptions as SquashfsWriteOptions, type WriteResult as SquashfsWriteResult } from './fs/squashfs/writer.ts';
export { extractSquashfs, type ExtractOptions as SquashfsExtractOptions, type ExtractResult as SquashfsExtractResult } from './fs/squashfs/extract.ts';
export { dirNode, fileNode, treeFromDirectory, type TreeNode, type DirNode, type FileNode, type FileContent, type StoredBlock, type NodeMeta } from './fs/squashfs/tree.ts';
export type { CompressorName, CompressorSettings } from './fs/squashfs/comp/types.ts';
export type { Inode as SquashfsInode, FileInode as SquashfsFileInode, DirInode as SquashfsDirInode } from './fs/squashfs/inode.ts';
export type { Xattr as SquashfsXattr } from './fs/squashfs/xattr.ts';

// fs/iso9660: read-only ISO9660 with Rock Ridge, Joliet and the El Torito boot catalog.
export { Iso9660Fs, type Iso9660OpenOptions, type Namespace as Iso9660Namespace, type Extent as Iso9660Extent, type BootImage as Iso9660BootImage, type BootInfo as Iso9660BootInfo, type MediaType as Iso9660MediaType } from './fs/iso9660/index.ts';

// fs/ext4: reading, block ownership, mkfs, writing, growing.
export {
  Ext4,
  openExt4File,
  ext4Info,
  listDirectory,
  blockUsage,
  buildBlockMap,
  BlockMap,
  BlockKind,
  BLOCK_KIND_NAMES,
  pathsOf,
  mkfs,
  Ext4Writer,
  growFs,
  copyIn,
  type Stat as Ext4Stat,
  type FsState as Ext4State,
  type DirListing as Ext4DirEntry,
  type OpenOptions as Ext4OpenOptions,
  type ChecksumError as Ext4ChecksumError,
  type Ext4Info,
  type LsEntry as Ext4LsEntry,
  type BlockRangeUsage,
  type RangeUsage,
  type MkfsOptions,
  type MkfsResult,
  type NodeAttrs as Ext4NodeAttrs,
  type Data as Ext4Data,
  type GrowResult,
  type CopyStats,
} from './fs/ext4/index.ts';
export { FatFs, mkfsFat, fatGeometry, FatNoSpaceError, FAT_MAX_FILE_SIZE, type FatOpenOptions, type MkfsFatOptions, type MkfsFatResult, type FatType } from './fs/fat/index.ts';

// ops: what the CLI commands do, on a medium (a directory holding LiveOS/, a stick image or a device) or on plain files.
export { locateMedium, openMedium, openMediumFile, withMediumRoot, withRecoveredMedium, type Medium, type OpenMedium } from './ops/medium.ts';
export { openMediumRoot, directoryRoot, type MediumRoot, type OpenRootOptions } from './ops/root.ts';
export { mediumStatus, renderStatus, type StatusReport, type StatusOptions, type PathUsage } from './ops/status.ts';
export { mergeMedium, type MergeOptions, type MergeResult, type MediumOptions } from './ops/merge.ts';
export { resetMedium } from './ops/reset.ts';
export { recoverMedium, type RecoveryReport } from './ops/switch.ts';
export {
  createOverlay,
  inspectOverlay,
  openCombined,
  writeThrough,
  exportCombined,
  bindOverlay,
  resetOverlay,
  bindingFor,
  type OverlayInfo,
  type CreateOverlayOptions,
  type InspectOptions,
  type CombinedOptions,
  type Combined,
} from './ops/overlay.ts';
export {
  homePath,
  createHome,
  homeInfo,
  homeList,
  homeCat,
  homeImport,
  homeExport,
  homePasswd,
  homeResize,
  HOME_NAME,
  type PassphraseSource,
  type HomeAccess,
  type CreateHomeOptions,
  type CreateHomeResult,
  type HomeInfo,
  type ImportOptions as HomeImportOptions,
  type ImportResult as HomeImportResult,
  type ExportResult as HomeExportResult,
  type TransferResult as HomeTransferResult,
  type ResizeResult as HomeResizeResult,
} from './ops/home.ts';
export { buildSampleMedium, applyPackageUpdate, type SampleOptions, type SampleMedium } from './ops/sample.ts';

// Whole sticks: block devices, partition tables, the common FileSystem, inspect.
export { inspectDevice, classifyDevicePath, DeviceInUseError, type DeviceInfo, type DevicePathKind } from './io/device.ts';
export { probeSignatures, type Signature } from './io/signature.ts';
export type { FileSystem, WritableFileSystem, WritableFile, CreateFileOptions, FsStat, FsEntry, FsSpace, NodeKind } from './fs/filesystem.ts';
export { openFileSystem, isWritable, type OpenFsOptions } from './fs/registry.ts';
export { HostFileSystem } from './fs/host/index.ts';
export { Ext4WritableFileSystem } from './fs/ext4/index.ts';
export { readPartitionTable, partitionDisk, addPartition, moveBackupToEnd, createGpt, type PartitionTable, type Partition } from './fs/ptable/index.ts';
export { ExfatFs, mkfsExfat, type MkfsExfatOptions } from './fs/exfat/index.ts';
export { inspectMedium, type InspectReport, type InspectedVolume, type LiveSystem } from './ops/inspect.ts';
export { withFaultPlan, tracePoints, SimulatedCrash, type FaultPlan, type FaultPointInfo } from './io/faults.ts';
