/**
 * Partition tables: MBR (with extended/logical partitions) and GPT (both copies, CRC32s, protective and
 * hybrid MBRs), for 512- and 4096-byte logical sectors.
 *
 * - `readPartitionTable(disk, { sectorSize? })`: kind 'gpt' | 'mbr' | 'none', the detected sector size,
 *   the partitions (Linux numbering), the MBR seen beside a GPT, where the backup GPT is, and
 *   `problems` (human strings) for what is wrong but still readable. Throws CorruptImageError only when
 *   a GPT is there and no copy of it is usable.
 * - `partitionDisk(disk, partition)`: the partition as a Disk (a SliceDisk), for the layers above.
 * - `addPartition(disk, table, { sizeBytes?, type, name? })`, `moveBackupToEnd(disk, table)`,
 *   `createGpt(disk, { diskGuid })`: writers that never touch a byte inside an existing partition and
 *   keep one valid GPT copy at every instant; each returns the table as it reads afterwards.
 * - Types are GUID strings or MBR bytes; `PARTITION_TYPES` names the common ones ('efi-system',
 *   'microsoft-basic-data', 'linux-filesystem', …).
 */
export { readPartitionTable, partitionDisk, type PartitionTable, type Partition, type GptInfo, type MbrInfo, type ReadOptions, type SectorSize } from './table.ts';
export { addPartition, moveBackupToEnd, createGpt, NoSpaceForPartitionError, type NewPartition, type CreateGptOptions } from './write.ts';
export { PARTITION_TYPES, gptTypeName, mbrTypeName, type PartitionTypeName } from './types.ts';
export type { GptHeader, GptEntry } from './gpt.ts';
export type { Mbr, MbrEntry, LogicalPartition } from './mbr.ts';
