/** SquashFS 4.0: reader (random access, streaming, openFileDisk), writer, extract. */
export { SquashfsReader, type Entry, type WalkEntry, type ReaderOptions } from './reader.ts';
export { writeSquashfs, type WriteOptions, type WriteResult } from './writer.ts';
export { extractSquashfs, type ExtractOptions, type ExtractResult } from './extract.ts';
export { dirNode, fileNode, treeFromDirectory, type TreeNode, type DirNode, type FileNode, type FileContent, type StoredBlock, type NodeMeta } from './tree.ts';
export { COMPRESSOR_NAMES, compressorForWriting } from './comp/index.ts';
export type { CompressorName, CompressorSettings } from './comp/types.ts';
export type { Inode, FileInode, DirInode } from './inode.ts';
export type { Xattr } from './xattr.ts';
