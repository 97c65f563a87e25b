/** EROFS: a reader over any Disk (flat, inline, chunk-based and compressed files), the FileSystem view, and an uncompressed writer. */
export { ErofsReader, type ErofsReaderOptions, type ErofsEntry, type ErofsWalkEntry } from './reader.ts';
export { ErofsFileSystem } from './filesystem.ts';
export { writeErofs, type ErofsWriteOptions, type ErofsWriteResult } from './writer.ts';
export type { Inode as ErofsInode } from './inode.ts';
export type { Superblock as ErofsSuperblock } from './superblock.ts';
