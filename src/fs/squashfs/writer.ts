/**
 * SquashFS 4.0 writer.
 *
 * Design notes:
 * - Pass 1 numbers the inodes: each sorted directory numbers its entries, then recurses (a hard link
 *   keeps its first number); the root gets the last number, as mksquashfs does.
 * - Pass 2 streams file data in the same depth-first order. Reading and block splitting happen on the
 *   main thread; each full block goes to the compression pool (worker_threads) and into an ordered
 *   queue. The queue is drained from the head only, so positions and bytes are assigned in input order:
 *   the output is the same whatever the thread count. At most `window` compression jobs are in flight
 *   and the queue holds a bounded number of bytes, which bounds memory whatever the input size.
 * - All-zero blocks become sparse (size word 0). Files smaller than the block size (or every tail with
 *   alwaysFragments) are packed into fragment blocks, which join the same ordered queue.
 * - Dedup: a file whose content hash and size equal an earlier file's reuses its blocks and fragment;
 *   so does one whose content names the same `sameAs` identity (files carried from one stored copy
 *   in an old image), without being read.
 *   Small files are hashed before queueing; for large files the decision comes after reading, so
 *   any blocks of it already written are rolled back (nothing else is written in between, because
 *   the queue is ordered and a large file's blocks are contiguous in it).
 * - Pass 3 writes inodes in post-order (children first, root last) and directory listings, then the
 *   fragment, export, id and xattr tables in the order the kernel's mount checks expect.
 */
import { createHash } from 'node:crypto';
import { availableParallelism } from 'node:os';
import type { Disk } from '../../io/disk.ts';
import { BufferPool, isAllZero, view } from '../../io/bytes.ts';
import { ImageOutput } from '../../io/image-output.ts';
import { compressorForWriting } from './comp/index.ts';
import { createBlockCompressor, type BlockCompressor, type InPlaceResult } from './comp/pool.ts';
import type { CompressorName, CompressorSettings } from './comp/types.ts';
import { encodeListing, type ListingChild } from './directory.ts';
import { encodeDev, encodeInode, InodeType, NO_FRAGMENT, type Inode } from './inode.ts';
import { encodeMetadataBlock, MetadataWriter, posToRef, posToRefNumber } from './metadata.ts';
import { encodeSuperblock, Flags, METADATA_SIZE, SUPERBLOCK_SIZE } from './superblock.ts';
import { encodeFragmentTable, encodeLookupTable, type FragmentEntry } from './tables.ts';
import { contentPieces, storedBlockSize, treeFromDirectory, type DirNode, type FileNode, type ScanOptions, type StoredBlock, type TreeNode } from './tree.ts';
import { XattrWriter } from './xattr.ts';

export interface WriteOptions {
  compressor?: CompressorName;
  compressorSettings?: CompressorSettings;
  /** 4 KiB .. 1 MiB, a power of two (default 128 KiB). */
  blockSize?: number;
  /** Compression worker threads (default: available parallelism); 0 compresses on the main thread. */
  threads?: number;
  /** Every inode's mtime (and the image time), like SOURCE_DATE_EPOCH. */
  mtime?: number;
  /** Image creation time (default: mtime, else SOURCE_DATE_EPOCH, else now). */
  mkfsTime?: number;
  allRoot?: boolean;
  noFragments?: boolean;
  alwaysFragments?: boolean;
  noXattrs?: boolean;
  noDedup?: boolean;
  exportable?: boolean;
  /** Store inode and directory tables uncompressed (mksquashfs -noI -noD). */
  uncompressedMetadata?: boolean;
  /** Pad the image to a multiple of 4 KiB (default true). */
  pad?: boolean;
  onProgress?: (bytesRead: number) => void;
  /** How a source directory is scanned (xattr reader; default the host's xattrs). */
  scan?: ScanOptions;
}

export interface WriteResult {
  readonly bytesUsed: number;
  readonly size: number;
  readonly inodes: number;
  readonly fragments: number;
  readonly dataBytes: number;
}

interface DataResult {
  start: number;
  words: number[];
  fragment: number;
  fragmentOffset: number;
  sparse: number;
}

interface FileState {
  node: FileNode;
  result: DataResult;
  skip: boolean;
  startPos: number | undefined;
}

type QueueItem =
  | { kind: 'block'; file: FileState; length: number; job: Promise<InPlaceResult> | undefined; verbatim?: StoredBlock }
  | { kind: 'frag'; index: number; length: number; job: Promise<InPlaceResult> }
  | { kind: 'done'; file: FileState; dupOf: DataResult | undefined };

function defaultThreads(): number {
  return Math.max(1, Math.min(8, availableParallelism()));
}

function cmpBytes(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

/** Writes an image from a tree (or a host directory path) to a host path or a Disk. */
export async function writeSquashfs(source: DirNode | string, out: Disk | string, options: WriteOptions = {}): Promise<WriteResult> {
  const tree = typeof source === 'string' ? await treeFromDirectory(source, options.noXattrs ? { ...options.scan, readXattrs: false } : options.scan) : source;
  const blockSize = options.blockSize ?? 128 * 1024;
  if (!Number.isInteger(blockSize) || blockSize < 4096 || blockSize > 1 << 20 || (blockSize & (blockSize - 1)) !== 0) {
    throw new RangeError(`block size ${blockSize} is not a power of two in 4 KiB..1 MiB`);
  }
  const compName = options.compressor ?? 'gzip';
  const settings = options.compressorSettings ?? {};
  const comp = await compressorForWriting(compName, settings, blockSize);
  const threads = options.threads ?? defaultThreads();
  const envEpoch = process.env.SOURCE_DATE_EPOCH !== undefined && /^\d+$/.test(process.env.SOURCE_DATE_EPOCH) ? Number(process.env.SOURCE_DATE_EPOCH) : undefined;
  const mkfsTime = options.mkfsTime ?? options.mtime ?? envEpoch ?? Math.floor(Date.now() / 1000);
  const output = typeof out === 'string' ? await ImageOutput.toPath(out) : ImageOutput.toDisk(out);
  let pool: BlockCompressor | undefined;
  try {
    pool = await createBlockCompressor(compName, settings, blockSize, threads);
    const result = await writeImage(tree, output, pool, comp, { ...options, blockSize, mkfsTime, threads });
    return result;
  } catch (err) {
    await output.abort();
    throw err;
  } finally {
    await pool?.close();
  }
}

async function writeImage(
  tree: DirNode,
  output: ImageOutput,
  pool: BlockCompressor,
  comp: Awaited<ReturnType<typeof compressorForWriting>>,
  o: WriteOptions & { blockSize: number; mkfsTime: number; threads: number },
): Promise<WriteResult> {
  const bs = o.blockSize;
  const useFragments = !o.noFragments;

  // ---- pass 1: inode numbers, link counts, ordered file list ----
  // Per-entry state is kept small (a tree of a few hundred thousand entries is a large Fedora root):
  // names, not [name, node] pairs, per directory; link counts only for nodes met more than once; an
  // entry's number and inode position are dropped once its directory's listing is written.
  const numbers = new Map<TreeNode, number>();
  const links = new Map<TreeNode, number>();
  const sortedNames = new Map<DirNode, string[]>();
  const files: FileNode[] = [];
  let next = 1;
  const number = (dir: DirNode, depth: number): void => {
    if (depth > 4096) throw new RangeError('the tree is nested more than 4096 levels deep');
    const names = [...dir.entries.keys()].sort(cmpBytes);
    for (const name of names) {
      const nb = Buffer.byteLength(name, 'utf8');
      if (nb === 0 || nb > 256 || name.includes('/') || name.includes('\0') || name === '.' || name === '..') throw new RangeError(`invalid entry name ${JSON.stringify(name)}`);
    }
    sortedNames.set(dir, names);
    for (const name of names) {
      const child = dir.entries.get(name) as TreeNode;
      if (child.type === 'dir' && numbers.has(child)) throw new RangeError('a directory appears twice in the tree');
      if (numbers.has(child)) {
        links.set(child, (links.get(child) ?? 1) + 1);
        continue;
      }
      numbers.set(child, next++);
      if (child.type === 'dir') number(child, depth + 1);
      else if (child.type === 'file') files.push(child);
    }
  };
  number(tree, 0);
  numbers.set(tree, next);
  const inodeCount = next;

  // ---- pass 2: data blocks and fragments, in order ----
  let pos = SUPERBLOCK_SIZE;
  if (comp.options) {
    const block = encodeMetadataBlock(comp, comp.options, true);
    await output.write(block, pos);
    pos += block.byteLength;
  }
  const dataStart = pos;
  const results = new Map<FileNode, DataResult>();
  const fragments: FragmentEntry[] = [];
  const byHash = new Map<string, DataResult>();
  const queue: QueueItem[] = [];
  // The queue is bounded by compression jobs in flight (so small files, whose items carry no job,
  // never starve the workers), by the bytes it holds, and by its length.
  const window = Math.max(8, o.threads * 8);
  const maxHeld = 2 * window * bs;
  const maxQueue = 8192;
  let jobs = 0;
  let held = 0;
  const heldBy = (item: QueueItem): number => (item.kind === 'block' ? (item.verbatim !== undefined ? ('bytes' in item.verbatim ? item.verbatim.bytes.byteLength : 0) : item.job !== undefined ? bs : 0) : item.kind === 'frag' ? bs : 0);
  // Block buffers (bs bytes each) go to a compression job and come back holding its result; once
  // written they are used for the next block, so a long run allocates a window's worth of them.
  const spare = new BufferPool(bs, window * 2 + 4);
  let fragBuf = spare.take();
  let fragLen = 0;
  let readBytes = 0;

  const writeHead = async (): Promise<void> => {
    const item = queue.shift() as QueueItem;
    if (item.kind !== 'done' && item.job !== undefined) jobs--;
    held -= heldBy(item);
    if (item.kind === 'block') {
      const f = item.file;
      if (f.skip) return;
      f.startPos ??= pos;
      if (item.verbatim) {
        const v = item.verbatim;
        const n = storedBlockSize(v);
        if ('bytes' in v) await output.write(v.bytes, pos);
        else if (n > 0) await output.writeFrom(n, pos, (dst) => v.readInto(dst));
        pos += n;
        f.result.words.push(v.word);
      } else if (item.job === undefined) {
        f.result.words.push(0);
      } else {
        const r = await item.job;
        const stored = r.buffer.subarray(0, r.compressed ?? item.length);
        await output.write(stored, pos);
        pos += stored.byteLength;
        f.result.words.push(stored.byteLength | (r.compressed === undefined ? 1 << 24 : 0));
        spare.give(r.buffer);
      }
    } else if (item.kind === 'frag') {
      const r = await item.job;
      const stored = r.buffer.subarray(0, r.compressed ?? item.length);
      fragments[item.index] = { start: pos, size: stored.byteLength | (r.compressed === undefined ? 1 << 24 : 0) };
      await output.write(stored, pos);
      pos += stored.byteLength;
      spare.give(r.buffer);
    } else {
      const f = item.file;
      if (item.dupOf) {
        if (f.startPos !== undefined) pos = f.startPos;
        results.set(f.node, item.dupOf);
      } else {
        f.result.start = f.startPos ?? pos;
        results.set(f.node, f.result);
      }
    }
  };
  const push = async (item: QueueItem): Promise<void> => {
    queue.push(item);
    if (item.kind !== 'done' && item.job !== undefined) jobs++;
    held += heldBy(item);
    while (jobs > window || held > maxHeld || queue.length > maxQueue) await writeHead();
  };
  const closeFragment = async (): Promise<void> => {
    if (fragLen === 0) return;
    const index = fragments.length;
    fragments.push({ start: 0, size: 0 });
    const job = pool.compressInPlace(fragBuf, fragLen);
    const length = fragLen;
    fragBuf = spare.take();
    fragLen = 0;
    await push({ kind: 'frag', index, length, job });
  };

  // Only a file whose size another file shares can be a duplicate: no other file is hashed.
  const sizeCounts = new Map<number, number>();
  for (const node of files) sizeCounts.set(node.size, (sizeCounts.get(node.size) ?? 0) + 1);

  for (const node of files) {
    const state: FileState = { node, result: { start: 0, words: [], fragment: NO_FRAGMENT, fragmentOffset: 0, sparse: 0 }, skip: false, startPos: undefined };
    const size = node.size;
    const tailToFragment = useFragments && size % bs !== 0 && (size < bs || o.alwaysFragments === true);
    const fullBlocks = tailToFragment ? Math.floor(size / bs) : Math.ceil(size / bs);
    const content = node.content.kind === 'deferred' ? await node.content.resolve() : node.content;
    const verbatim = content.kind === 'disk' ? content.verbatim : undefined;
    const sameKey = !o.noDedup && content.kind === 'disk' && content.sameAs !== undefined ? `same:${size}:${content.sameAs}` : undefined;
    const same = sameKey === undefined ? undefined : byHash.get(sameKey);
    if (same) {
      state.skip = true;
      await push({ kind: 'done', file: state, dupOf: same });
      continue;
    }
    const hash = o.noDedup || verbatim || (sizeCounts.get(size) ?? 0) < 2 ? undefined : createHash('sha256');
    let blockIndex = 0;
    // The block being filled: a bs-byte buffer of which the first curCap bytes are this block.
    let cur = spare.take();
    let curCap = Math.min(bs, size);
    let curLen = 0;
    let total = 0;
    /** Pushes the first `len` bytes of `cur` as a block; `cur` is then a fresh buffer when it went to a job. */
    const emitBlock = async (len: number): Promise<void> => {
      const block = cur.subarray(0, len);
      if (isAllZero(block)) {
        state.result.sparse += len;
        await push({ kind: 'block', file: state, length: len, job: undefined });
      } else {
        const job = pool.compressInPlace(cur, len);
        cur = spare.take();
        await push({ kind: 'block', file: state, length: len, job });
      }
      blockIndex++;
    };
    if (verbatim && content.kind === 'disk') {
      // Merge path: unchanged blocks are copied as stored, without reading or recompressing them.
      const disk = content.disk;
      if (disk.size < size) throw new RangeError(`file content disk has ${disk.size} bytes, its declared size is ${size}`);
      for (let i = 0; i < fullBlocks; i++) {
        const v = await verbatim(i);
        const len = Math.min(bs, size - i * bs);
        if (v !== undefined) {
          if ((v.word & 0xffffff) !== storedBlockSize(v) || v.word & ~0x1ffffff) throw new RangeError(`verbatim block ${i}: size word does not match its ${storedBlockSize(v)} bytes`);
          if (v.word === 0) state.result.sparse += len;
          await push({ kind: 'block', file: state, length: len, job: undefined, verbatim: v });
        } else {
          await disk.read(cur.subarray(0, len), i * bs);
          await emitBlock(len);
        }
        total += len;
        readBytes += len;
        o.onProgress?.(readBytes);
      }
      if (fullBlocks * bs < size) {
        curLen = size - fullBlocks * bs;
        await disk.read(cur.subarray(0, curLen), fullBlocks * bs);
        total = size;
      }
    } else for await (const piece of contentPieces(content, size, bs)) {
      let at = 0;
      while (at < piece.byteLength) {
        if (total + (piece.byteLength - at) > size) throw new RangeError(`file content is longer than its declared size ${size}`);
        const n = Math.min(piece.byteLength - at, curCap - curLen);
        cur.set(piece.subarray(at, at + n), curLen);
        curLen += n;
        at += n;
        total += n;
        if (curLen === curCap && blockIndex < fullBlocks) {
          hash?.update(cur.subarray(0, curCap));
          await emitBlock(curCap);
          curCap = Math.min(bs, size - total);
          curLen = 0;
        }
      }
      readBytes += piece.byteLength;
      o.onProgress?.(readBytes);
    }
    if (total !== size) throw new RangeError(`file content has ${total} bytes, its declared size is ${size}`);
    const tail = tailToFragment ? cur.subarray(0, curLen) : undefined;
    if (tail) hash?.update(tail);
    const key = hash === undefined ? undefined : `${size}:${hash.digest().toString('latin1')}`;
    const dup = key === undefined ? undefined : byHash.get(key);
    if (dup) {
      spare.give(cur);
      state.skip = true;
      await push({ kind: 'done', file: state, dupOf: dup });
      continue;
    }
    if (tail && tail.byteLength > 0) {
      if (fragLen + tail.byteLength > bs) await closeFragment();
      state.result.fragment = fragments.length;
      state.result.fragmentOffset = fragLen;
      fragBuf.set(tail, fragLen);
      fragLen += tail.byteLength;
    }
    spare.give(cur);
    if (key !== undefined) byHash.set(key, state.result);
    if (sameKey !== undefined) byHash.set(sameKey, state.result);
    await push({ kind: 'done', file: state, dupOf: undefined });
  }
  await closeFragment();
  while (queue.length > 0) await writeHead();
  const dataBytes = pos - dataStart;

  // ---- pass 3: inodes, directories, tables ----
  const ids: number[] = [];
  const idIndex = new Map<number, number>();
  const idOf = (v: number): number => {
    const id = o.allRoot ? 0 : v >>> 0;
    let i = idIndex.get(id);
    if (i === undefined) {
      if (ids.length === 65536) throw new RangeError('more than 65536 distinct uids/gids');
      i = ids.length;
      ids.push(id);
      idIndex.set(id, i);
    }
    return i;
  };
  const xw = new XattrWriter(comp);
  const inodeTable = new MetadataWriter(comp, o.uncompressedMetadata === true);
  const dirTable = new MetadataWriter(comp, o.uncompressedMetadata === true);
  const refs = new Map<TreeNode, { block: number; offset: number; type: number }>();
  /** Each inode's reference (posToRefNumber), by inode number, for the export table. */
  const exportRefs = new Float64Array(inodeCount);
  const mtimeOf = (n: TreeNode): number => (o.mtime ?? n.mtime) >>> 0;

  const writeInode = (node: TreeNode, inode: Inode): void => {
    const p = inodeTable.position;
    inodeTable.write(encodeInode(inode));
    refs.set(node, { block: p.block, offset: p.offset, type: inode.type });
    exportRefs[inode.inodeNumber - 1] = posToRefNumber(p.block, p.offset);
  };
  const common = (node: TreeNode) => ({
    mode: node.mode & 0o7777,
    uidIndex: idOf(node.uid),
    gidIndex: idOf(node.gid),
    mtime: mtimeOf(node),
    inodeNumber: numbers.get(node) as number,
  });
  const xattrOf = (node: TreeNode): number | undefined => (o.noXattrs || !node.xattrs ? undefined : xw.add(node.xattrs));

  const visit = (dir: DirNode, parentNumber: number): void => {
    const names = sortedNames.get(dir) as string[];
    sortedNames.delete(dir);
    const entries = names.map((name): [string, TreeNode] => [name, dir.entries.get(name) as TreeNode]);
    let subdirs = 0;
    for (const [, child] of entries) {
      if (refs.has(child)) continue;
      const nlink = links.get(child) ?? 1;
      const xattr = xattrOf(child);
      const base = common(child);
      switch (child.type) {
        case 'dir':
          visit(child, base.inodeNumber);
          break;
        case 'file': {
          const r = results.get(child) as DataResult;
          results.delete(child);
          const long = nlink > 1 || child.size >= 2 ** 32 || r.start >= 2 ** 32 || r.sparse > 0 || xattr !== undefined;
          writeInode(child, {
            ...base, kind: 'file', type: long ? InodeType.lfile : InodeType.file, nlink, xattr,
            blocksStart: r.start, fileSize: child.size, sparse: Math.min(r.sparse, Math.max(0, child.size - 1)),
            fragment: r.fragment, fragmentOffset: r.fragmentOffset, blockSizes: Uint32Array.from(r.words),
          });
          break;
        }
        case 'symlink': {
          const target = Buffer.from(child.target, 'utf8');
          if (target.byteLength > 4096) throw new RangeError(`symlink target longer than 4096 bytes: ${child.target.slice(0, 40)}…`);
          writeInode(child, { ...base, kind: 'symlink', type: xattr !== undefined ? InodeType.lsymlink : InodeType.symlink, nlink, xattr, target });
          break;
        }
        case 'blockdev':
        case 'chardev': {
          const t = child.type === 'blockdev' ? InodeType.blockDev : InodeType.charDev;
          writeInode(child, { ...base, kind: child.type, type: xattr !== undefined ? t + 7 : t, nlink, xattr, rdev: encodeDev(child.major, child.minor) });
          break;
        }
        default: {
          const t = child.type === 'fifo' ? InodeType.fifo : InodeType.socket;
          writeInode(child, { ...base, kind: child.type, type: xattr !== undefined ? t + 7 : t, nlink, xattr });
        }
      }
    }
    for (const [, child] of entries) if (child.type === 'dir') subdirs++;
    // The listing, then this directory's inode.
    const children: ListingChild[] = entries.map(([name, child]) => {
      const r = refs.get(child) as { block: number; offset: number; type: number };
      return { name: Buffer.from(name, 'utf8'), type: r.type > 7 ? r.type - 7 : r.type, inodeBlock: r.block, inodeOffset: r.offset, inodeNumber: numbers.get(child) as number };
    });
    const listing = encodeListing(children);
    for (const [, child] of entries) {
      if (links.has(child)) continue; // another name may still list it
      refs.delete(child);
      numbers.delete(child);
    }
    const start = dirTable.position;
    const startStream = dirTable.streamOffset;
    dirTable.write(listing.bytes);
    const index = listing.index.map((e) => ({ index: e.offset, startBlock: dirTable.blockPositionAt(startStream + e.offset), name: e.name }));
    const fileSize = listing.bytes.byteLength + 3;
    const xattr = xattrOf(dir);
    const long = xattr !== undefined || index.length > 0 || fileSize > 0xffff;
    writeInode(dir, {
      ...common(dir), kind: 'dir', type: long ? InodeType.ldir : InodeType.dir, nlink: subdirs + 2, xattr,
      startBlock: start.block, offset: start.offset, fileSize, parentInode: parentNumber, index,
    });
  };
  visit(tree, inodeCount + 1);
  const rootRef = refs.get(tree) as { block: number; offset: number };

  const inodeBytes = inodeTable.finish().bytes;
  const dirBytes = dirTable.finish().bytes;
  const inodeTableStart = pos;
  await output.write(inodeBytes, pos);
  pos += inodeBytes.byteLength;
  const directoryTableStart = pos;
  await output.write(dirBytes, pos);
  pos += dirBytes.byteLength;

  const fragTable = encodeLookupTable(comp, encodeFragmentTable(fragments), pos);
  await output.write(fragTable.bytes, pos);
  pos += fragTable.bytes.byteLength;
  const fragmentTableStart = fragTable.indexStart;

  let lookupTableStart: number | undefined;
  if (o.exportable !== false) {
    const raw = new Uint8Array(inodeCount * 8);
    exportRefs.forEach((r, i) => view(raw).setBigUint64(i * 8, BigInt(r), true));
    const t = encodeLookupTable(comp, raw, pos);
    await output.write(t.bytes, pos);
    pos += t.bytes.byteLength;
    lookupTableStart = t.indexStart;
  }

  const idRaw = new Uint8Array(ids.length * 4);
  ids.forEach((id, i) => view(idRaw).setUint32(i * 4, id, true));
  const idTable = encodeLookupTable(comp, idRaw, pos);
  await output.write(idTable.bytes, pos);
  pos += idTable.bytes.byteLength;
  const idTableStart = idTable.indexStart;

  let xattrIdTableStart: number | undefined;
  if (xw.count > 0) {
    const { kv, ids: xids } = xw.finish();
    const kvStart = pos;
    await output.write(kv, pos);
    pos += kv.byteLength;
    // The xattr-id blocks, then the 16-byte header, then the index array.
    const blocks = encodeLookupTable(comp, xids, pos);
    const indexLen = Math.ceil(xids.byteLength / METADATA_SIZE) * 8;
    const blockBytes = blocks.bytes.subarray(0, blocks.bytes.byteLength - indexLen);
    await output.write(blockBytes, pos);
    pos += blockBytes.byteLength;
    const hdr = new Uint8Array(16);
    view(hdr).setBigUint64(0, BigInt(kvStart), true);
    view(hdr).setUint32(8, xw.count, true);
    xattrIdTableStart = pos;
    await output.write(hdr, pos);
    pos += 16;
    await output.write(blocks.bytes.subarray(blocks.bytes.byteLength - indexLen), pos);
    pos += indexLen;
  }

  const bytesUsed = pos;
  let flags = Flags.duplicates;
  if (o.noFragments) flags |= Flags.noFragments;
  if (o.alwaysFragments) flags |= Flags.alwaysFragments;
  if (lookupTableStart !== undefined) flags |= Flags.exportable;
  if (o.noXattrs) flags |= Flags.noXattrs;
  if (comp.options) flags |= Flags.compressorOptions;
  if (o.noDedup) flags &= ~Flags.duplicates;
  if (o.uncompressedMetadata) flags |= Flags.inodesUncompressed;
  const sb = encodeSuperblock({
    inodes: inodeCount, mkfsTime: o.mkfsTime >>> 0, blockSize: bs, fragments: fragments.length, compression: comp.id,
    blockLog: Math.log2(bs), flags, idCount: ids.length, rootInode: posToRef(rootRef.block, rootRef.offset), bytesUsed,
    idTableStart, xattrIdTableStart, inodeTableStart, directoryTableStart, fragmentTableStart, lookupTableStart,
  });
  const padded = o.pad === false ? bytesUsed : Math.ceil(bytesUsed / 4096) * 4096;
  if (padded > bytesUsed) await output.write(new Uint8Array(padded - bytesUsed), bytesUsed);
  await output.flushBuffer();
  await output.write(sb, 0);
  await output.finish(padded);
  return { bytesUsed, size: padded, inodes: inodeCount, fragments: fragments.length, dataBytes };
}
