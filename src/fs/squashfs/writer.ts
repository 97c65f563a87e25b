/**
 * SquashFS 4.0 writer.
 *
 * Design notes:
 * - One depth-first walk over a tree held in memory or listed on demand (LazyDirNode): each sorted
 *   directory numbers its entries as it meets them, a subdirectory's subtree right after its number
 *   (the root is 1; a hard link keeps its first number). A directory is listed when the walk reaches
 *   it and dropped once written, so memory follows the queue and the walk's depth, not the tree.
 * - File data streams in walk order. Reading and block splitting happen on the main thread; each full
 *   block goes to the compression pool (worker_threads) and into an ordered queue, which is drained
 *   from the head only, so positions and bytes are assigned in input order: the output is the same
 *   whatever the thread count. At most `window` compression jobs are in flight and the queue holds a
 *   bounded number of bytes.
 * - The queue also carries each entry's inode, behind the entry's data, and each directory's listing
 *   behind its last entry: when an item reaches the head, everything it refers to is written, so
 *   inodes come out in post-order (children first, root last) with their final block positions.
 * - All-zero blocks become sparse (size word 0). Files smaller than the block size (or every tail with
 *   alwaysFragments) are packed into fragment blocks, which join the same ordered queue.
 * - Dedup: a file whose content hash and size equal an earlier file's reuses its blocks and fragment;
 *   so does one whose content names the same `sameAs` identity (files carried from one stored copy
 *   in an old image), without being read. Records of written files live in a compact index
 *   (dedupe.ts), those still in the queue in a small map. A large file's duplicate is known only once
 *   read, so any of its blocks already written are rolled back (nothing else is written in between:
 *   the queue is ordered and a large file's blocks are contiguous in it).
 * - nlink: a tree held in memory is counted before the walk. A lazy tree cannot be (its later names
 *   come after the first inode is written), so the walk takes each node's own `nlink` and checks it;
 *   when the tree proves one wrong, the names are counted in a second listing and the image written
 *   again.
 * - Last come the fragment, export, id and xattr tables, in the order the kernel's mount checks expect.
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
import { DedupeIndex, KEY_BYTES, type StoredData } from './dedupe.ts';
import { encodeMetadataBlock, MetadataWriter, posToRefNumber, refToPos } from './metadata.ts';
import { encodeSuperblock, Flags, METADATA_SIZE, SUPERBLOCK_SIZE } from './superblock.ts';
import { encodeFragmentTable, encodeLookupTable, type FragmentEntry } from './tables.ts';
import { contentPieces, entriesOf, isSourceDir, lazyTreeFromDirectory, storedBlockSize, type DirNode, type FileNode, type NodeMeta, type ScanOptions, type SourceDir, type SourceNode, type StoredBlock, type TreeNode } from './tree.ts';
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
  /**
   * A lazy tree named some node more often than its nlink said: the writer counts names and writes
   * the image again (its tree is listed a second time). Called with what was found.
   */
  onRestart?: (why: string) => void;
  /** How a source directory is scanned (xattr reader; default the host's xattrs). */
  scan?: ScanOptions;
}

export interface WriteResult {
  readonly bytesUsed: number;
  readonly size: number;
  readonly inodes: number;
  readonly fragments: number;
  readonly dataBytes: number;
  /** Regular files whose stored blocks came from an old image (content with `verbatim`), and the others. */
  readonly files: { readonly carried: number; readonly rebuilt: number };
}

interface DataResult {
  start: number;
  words: number[];
  fragment: number;
  fragmentOffset: number;
  sparse: number;
}

/** A name in a directory whose listing is still to be written: its inode's number, then its reference. */
interface Slot {
  readonly name: string;
  number: number;
  /** The inode's reference (posToRefNumber) and type, once written; a later name of a hard link reads its LinkState's. */
  ref: number;
  type: number;
  link?: LinkState;
}

interface DirRecord {
  readonly slots: Slot[];
  subdirs: number;
}

/** A node with more than one name: its inode is written at its first name, listed under all. */
interface LinkState {
  readonly number: number;
  readonly nlink: number;
  seen: number;
  ref: number;
  type: number;
}

interface FileState {
  readonly node: FileNode;
  readonly slot: Slot;
  readonly link: LinkState | undefined;
  readonly nlink: number;
  result: DataResult;
  /** Its dedupe keys (content, carried identity), recorded once its data is written. */
  keys?: Array<Uint8Array | undefined>;
  skip: boolean;
  startPos: number | undefined;
}

type QueueItem =
  | { kind: 'block'; file: FileState; length: number; job: Promise<InPlaceResult> | undefined; verbatim?: StoredBlock }
  | { kind: 'frag'; index: number; length: number; job: Promise<InPlaceResult> }
  | { kind: 'done'; file: FileState; dupOf: StoredData | DataResult | undefined }
  | { kind: 'inode'; node: Exclude<TreeNode, DirNode | FileNode>; slot: Slot; link: LinkState | undefined; nlink: number }
  | { kind: 'dir'; node: SourceDir; record: DirRecord; slot: Slot | undefined; number: number; parentNumber: number };

function defaultThreads(): number {
  return Math.max(1, Math.min(8, availableParallelism()));
}

function cmpBytes(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

/** A streamed lazy tree named a node more often than its declared nlink said: written again, counted. */
class NamesMiscounted extends Error {}

/** Writes an image from a tree (or a host directory path) to a host path or a Disk. */
export async function writeSquashfs(source: SourceDir | string, out: Disk | string, options: WriteOptions = {}): Promise<WriteResult> {
  const tree = typeof source === 'string' ? await lazyTreeFromDirectory(source, options.noXattrs ? { ...options.scan, readXattrs: false } : options.scan) : source;
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
    const o = { ...options, blockSize, mkfsTime, threads };
    // A tree held in memory is counted first (cheap), and so is a host directory (a second listing costs
    // little beside compression, and the host's nlink counts names outside it); any other lazy tree is
    // streamed trusting its nodes' nlink.
    let counts = tree.type === 'dir' || typeof source === 'string' ? await countNames(tree) : undefined;
    try {
      return await writeImage(tree, output, pool, comp, o, counts);
    } catch (err) {
      if (!(err instanceof NamesMiscounted)) throw err;
      options.onRestart?.(err.message);
      counts = await countNames(tree);
      return await writeImage(tree, output, pool, comp, o, counts);
    }
  } catch (err) {
    await output.abort();
    throw err;
  } finally {
    await pool?.close();
  }
}

/** The number of names of each node met more than once (nodes are held weakly until met again). */
async function countNames(root: SourceDir): Promise<Map<SourceNode, number>> {
  const met = new WeakSet<SourceNode>();
  const counts = new Map<SourceNode, number>();
  const walk = async (dir: SourceDir, depth: number): Promise<void> => {
    if (depth > 4096) throw new RangeError('the tree is nested more than 4096 levels deep');
    const entries = await entriesOf(dir);
    for (const child of entries.values()) {
      if (isSourceDir(child)) await walk(child, depth + 1);
      else if (met.has(child)) counts.set(child, (counts.get(child) ?? 1) + 1);
      else met.add(child);
    }
  };
  await walk(root, 0);
  return counts;
}

async function writeImage(
  tree: SourceDir,
  output: ImageOutput,
  pool: BlockCompressor,
  comp: Awaited<ReturnType<typeof compressorForWriting>>,
  o: WriteOptions & { blockSize: number; mkfsTime: number; threads: number },
  counts: Map<SourceNode, number> | undefined,
): Promise<WriteResult> {
  const bs = o.blockSize;
  const useFragments = !o.noFragments;

  let pos = SUPERBLOCK_SIZE;
  if (comp.options) {
    const block = encodeMetadataBlock(comp, comp.options, true);
    await output.write(block, pos);
    pos += block.byteLength;
  }
  const dataStart = pos;
  const fragments: FragmentEntry[] = [];
  // What earlier files stored, by content: written ones in the compact index, ones still in the queue
  // by their live result (filled in by the time a duplicate's turn comes, the queue being ordered).
  const stored = new DedupeIndex();
  const pending = new Map<string, DataResult>();
  const pendingKey = (key: Uint8Array, size: number): string => `${size}:${Buffer.from(key.buffer, key.byteOffset, KEY_BYTES).toString('latin1')}`;
  const lookup = (key: Uint8Array, size: number): StoredData | DataResult | undefined => stored.get(key, size) ?? pending.get(pendingKey(key, size));

  // ---- the inode and directory tables, written as the queue's head passes each entry ----
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
  /** Each inode's reference (posToRefNumber), by inode number, for the export table. */
  let exportRefs = new Float64Array(1024);
  const mtimeOf = (n: NodeMeta): number => (o.mtime ?? n.mtime) >>> 0;
  let rootRef = -1;

  const writeInode = (inode: Inode, slot: Slot | undefined, link: LinkState | undefined): void => {
    const p = inodeTable.position;
    inodeTable.write(encodeInode(inode));
    const ref = posToRefNumber(p.block, p.offset);
    if (slot) {
      slot.ref = ref;
      slot.type = inode.type;
    } else rootRef = ref;
    if (link) {
      link.ref = ref;
      link.type = inode.type;
    }
    while (inode.inodeNumber > exportRefs.length) {
      const grown = new Float64Array(exportRefs.length * 2);
      grown.set(exportRefs);
      exportRefs = grown;
    }
    exportRefs[inode.inodeNumber - 1] = ref;
  };
  const common = (node: NodeMeta, inodeNumber: number) => ({
    mode: node.mode & 0o7777,
    uidIndex: idOf(node.uid),
    gidIndex: idOf(node.gid),
    mtime: mtimeOf(node),
    inodeNumber,
  });
  const xattrOf = (node: NodeMeta): number | undefined => (o.noXattrs || !node.xattrs ? undefined : xw.add(node.xattrs));

  const writeFileInode = (f: FileState, r: DataResult | StoredData): void => {
    const node = f.node;
    const xattr = xattrOf(node);
    const long = f.nlink > 1 || node.size >= 2 ** 32 || r.start >= 2 ** 32 || r.sparse > 0 || xattr !== undefined;
    writeInode({
      ...common(node, f.slot.number), kind: 'file', type: long ? InodeType.lfile : InodeType.file, nlink: f.nlink, xattr,
      blocksStart: r.start, fileSize: node.size, sparse: Math.min(r.sparse, Math.max(0, node.size - 1)),
      fragment: r.fragment, fragmentOffset: r.fragmentOffset, blockSizes: Uint32Array.from(r.words),
    }, f.slot, f.link);
  };
  const writeOtherInode = (item: Extract<QueueItem, { kind: 'inode' }>): void => {
    const { node, slot, link, nlink } = item;
    const xattr = xattrOf(node);
    const base = common(node, slot.number);
    switch (node.type) {
      case 'symlink': {
        const target = Buffer.from(node.target, 'utf8');
        if (target.byteLength > 4096) throw new RangeError(`symlink target longer than 4096 bytes: ${node.target.slice(0, 40)}…`);
        writeInode({ ...base, kind: 'symlink', type: xattr !== undefined ? InodeType.lsymlink : InodeType.symlink, nlink, xattr, target }, slot, link);
        break;
      }
      case 'blockdev':
      case 'chardev': {
        const t = node.type === 'blockdev' ? InodeType.blockDev : InodeType.charDev;
        writeInode({ ...base, kind: node.type, type: xattr !== undefined ? t + 7 : t, nlink, xattr, rdev: encodeDev(node.major, node.minor) }, slot, link);
        break;
      }
      default: {
        const t = node.type === 'fifo' ? InodeType.fifo : InodeType.socket;
        writeInode({ ...base, kind: node.type, type: xattr !== undefined ? t + 7 : t, nlink, xattr }, slot, link);
      }
    }
  };
  /** A directory's listing, then its inode: every entry of it has been written by now. */
  const writeDir = (item: Extract<QueueItem, { kind: 'dir' }>): void => {
    const children: ListingChild[] = item.record.slots.map((s) => {
      const from = s.ref >= 0 ? s : (s.link as LinkState);
      if (from.ref < 0) throw new Error(`internal: ${s.name} is listed before its inode was written`);
      const p = refToPos(from.ref);
      return { name: Buffer.from(s.name, 'utf8'), type: from.type > 7 ? from.type - 7 : from.type, inodeBlock: p.block, inodeOffset: p.offset, inodeNumber: s.number };
    });
    const listing = encodeListing(children);
    const start = dirTable.position;
    const startStream = dirTable.streamOffset;
    dirTable.write(listing.bytes);
    const index = listing.index.map((e) => ({ index: e.offset, startBlock: dirTable.blockPositionAt(startStream + e.offset), name: e.name }));
    const fileSize = listing.bytes.byteLength + 3;
    const xattr = xattrOf(item.node);
    const long = xattr !== undefined || index.length > 0 || fileSize > 0xffff;
    writeInode({
      ...common(item.node, item.number), kind: 'dir', type: long ? InodeType.ldir : InodeType.dir, nlink: item.record.subdirs + 2, xattr,
      startBlock: start.block, offset: start.offset, fileSize, parentInode: item.parentNumber, index,
    }, item.slot, undefined);
  };

  // ---- the ordered queue: data blocks and fragments, then each entry's inode, in walk order ----
  const queue: QueueItem[] = [];
  // The queue is bounded by compression jobs in flight (so small files, whose items carry no job,
  // never starve the workers), by the bytes it holds, and by its length.
  const window = Math.max(8, o.threads * 8);
  const maxHeld = 2 * window * bs;
  const maxQueue = 8192;
  let jobs = 0;
  let held = 0;
  const hasJob = (item: QueueItem): boolean => (item.kind === 'block' || item.kind === 'frag') && item.job !== undefined;
  const heldBy = (item: QueueItem): number => (item.kind === 'block' ? (item.verbatim !== undefined ? ('bytes' in item.verbatim ? item.verbatim.bytes.byteLength : 0) : item.job !== undefined ? bs : 0) : item.kind === 'frag' ? bs : 0);
  // Block buffers (bs bytes each) go to a compression job and come back holding its result; once
  // written they are used for the next block, so a long run allocates a window's worth of them.
  const spare = new BufferPool(bs, window * 2 + 4);
  let fragBuf = spare.take();
  let fragLen = 0;
  let readBytes = 0;
  let carriedFiles = 0;
  let rebuiltFiles = 0;

  const writeHead = async (): Promise<void> => {
    const item = queue.shift() as QueueItem;
    if (hasJob(item)) jobs--;
    held -= heldBy(item);
    switch (item.kind) {
      case 'block': {
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
          const bytes = r.buffer.subarray(0, r.compressed ?? item.length);
          await output.write(bytes, pos);
          pos += bytes.byteLength;
          f.result.words.push(bytes.byteLength | (r.compressed === undefined ? 1 << 24 : 0));
          spare.give(r.buffer);
        }
        return;
      }
      case 'frag': {
        const r = await item.job;
        const bytes = r.buffer.subarray(0, r.compressed ?? item.length);
        fragments[item.index] = { start: pos, size: bytes.byteLength | (r.compressed === undefined ? 1 << 24 : 0) };
        await output.write(bytes, pos);
        pos += bytes.byteLength;
        spare.give(r.buffer);
        return;
      }
      case 'done': {
        const f = item.file;
        if (item.dupOf) {
          if (f.startPos !== undefined) pos = f.startPos;
          writeFileInode(f, item.dupOf);
        } else {
          f.result.start = f.startPos ?? pos;
          writeFileInode(f, f.result);
          for (const k of f.keys ?? []) {
            if (k === undefined) continue;
            stored.set(k, f.node.size, f.result);
            pending.delete(pendingKey(k, f.node.size));
          }
        }
        return;
      }
      case 'inode':
        writeOtherInode(item);
        return;
      case 'dir':
        writeDir(item);
    }
  };
  const push = async (item: QueueItem): Promise<void> => {
    queue.push(item);
    if (hasJob(item)) jobs++;
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

  const writeFileData = async (node: FileNode, slot: Slot, link: LinkState | undefined, nlink: number): Promise<void> => {
    const state: FileState = { node, slot, link, nlink, result: { start: 0, words: [], fragment: NO_FRAGMENT, fragmentOffset: 0, sparse: 0 }, skip: false, startPos: undefined };
    const size = node.size;
    const tailToFragment = useFragments && size % bs !== 0 && (size < bs || o.alwaysFragments === true);
    const fullBlocks = tailToFragment ? Math.floor(size / bs) : Math.ceil(size / bs);
    const content = node.content.kind === 'deferred' ? await node.content.resolve() : node.content;
    const verbatim = content.kind === 'disk' ? content.verbatim : undefined;
    if (verbatim) carriedFiles++;
    else rebuiltFiles++;
    const sameKey = !o.noDedup && content.kind === 'disk' && content.sameAs !== undefined ? createHash('sha256').update(`same:${size}:${content.sameAs}`).digest() : undefined;
    const same = sameKey === undefined ? undefined : lookup(sameKey, size);
    if (same) {
      state.skip = true;
      await push({ kind: 'done', file: state, dupOf: same });
      return;
    }
    // Every file read is hashed (a streamed tree's sizes are not known ahead); carried blocks are not read.
    const hash = o.noDedup || verbatim ? undefined : createHash('sha256');
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
    const key = hash?.digest();
    const dup = key === undefined ? undefined : lookup(key, size);
    if (dup) {
      spare.give(cur);
      state.skip = true;
      await push({ kind: 'done', file: state, dupOf: dup });
      return;
    }
    if (tail && tail.byteLength > 0) {
      if (fragLen + tail.byteLength > bs) await closeFragment();
      state.result.fragment = fragments.length;
      state.result.fragmentOffset = fragLen;
      fragBuf.set(tail, fragLen);
      fragLen += tail.byteLength;
    }
    spare.give(cur);
    if (key !== undefined || sameKey !== undefined) {
      state.keys = [key, sameKey];
      for (const k of state.keys) if (k !== undefined) pending.set(pendingKey(k, size), state.result);
    }
    await push({ kind: 'done', file: state, dupOf: undefined });
  };

  // ---- the walk: numbers in depth-first order (root 1, each directory's entries sorted by name
  // bytes, a directory's subtree right after its own number), data as files are met ----
  const nlinkOf = (node: SourceNode): number => (counts !== undefined ? (counts.get(node) ?? 1) : (node.nlink ?? 1));
  const links = new Map<SourceNode, LinkState>();
  /** Nodes met once and written as one name (a streamed tree only: held weakly, to catch a second name). */
  const metOnce = counts === undefined ? new WeakSet<SourceNode>() : undefined;
  const dirsMet = new WeakSet<SourceDir>();
  const miscounted = (what: string): never => {
    if (counts === undefined) throw new NamesMiscounted(what);
    throw new RangeError(`the tree changed while it was written: ${what}`);
  };
  let next = 2;
  const walk = async (dir: SourceDir, number: number, record: DirRecord, depth: number): Promise<void> => {
    if (depth > 4096) throw new RangeError('the tree is nested more than 4096 levels deep');
    const entries = await entriesOf(dir);
    const names = [...entries.keys()].sort(cmpBytes);
    for (const name of names) {
      const nb = Buffer.byteLength(name, 'utf8');
      if (nb === 0 || nb > 256 || name.includes('/') || name.includes('\0') || name === '.' || name === '..') throw new RangeError(`invalid entry name ${JSON.stringify(name)}`);
    }
    for (const name of names) {
      const child = entries.get(name) as SourceNode;
      const slot: Slot = { name, number: 0, ref: -1, type: 0 };
      record.slots.push(slot);
      if (isSourceDir(child)) {
        if (dirsMet.has(child)) throw new RangeError('a directory appears twice in the tree');
        dirsMet.add(child);
        slot.number = next++;
        record.subdirs++;
        const sub: DirRecord = { slots: [], subdirs: 0 };
        await walk(child, slot.number, sub, depth + 1);
        await push({ kind: 'dir', node: child, record: sub, slot, number: slot.number, parentNumber: number });
        continue;
      }
      const known = links.get(child);
      if (known !== undefined) {
        if (++known.seen > known.nlink) miscounted(`${name} is a name more of a node said to have ${known.nlink}`);
        slot.number = known.number;
        slot.link = known;
        continue;
      }
      if (metOnce?.has(child)) miscounted(`${name} is a second name of a node said to have one`);
      const nlink = nlinkOf(child);
      slot.number = next++;
      let link: LinkState | undefined;
      if (nlink > 1) links.set(child, (link = { number: slot.number, nlink, seen: 1, ref: -1, type: 0 }));
      else metOnce?.add(child);
      if (child.type === 'file') await writeFileData(child, slot, link, nlink);
      else await push({ kind: 'inode', node: child, slot, link, nlink });
    }
  };
  const rootRecord: DirRecord = { slots: [], subdirs: 0 };
  try {
    await walk(tree, 1, rootRecord, 0);
    for (const l of links.values()) if (l.seen !== l.nlink) miscounted(`a node said to have ${l.nlink} names has ${l.seen}`);
    await closeFragment();
    await push({ kind: 'dir', node: tree, record: rootRecord, slot: undefined, number: 1, parentNumber: next });
    while (queue.length > 0) await writeHead();
  } catch (err) {
    // Jobs still in flight finish before their buffers are dropped (the pool may write again).
    await Promise.allSettled(queue.map((q) => (q.kind === 'block' || q.kind === 'frag' ? q.job : undefined)));
    throw err;
  }
  const inodeCount = next - 1;
  const dataBytes = pos - dataStart;

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
    const dv = view(raw);
    for (let i = 0; i < inodeCount; i++) dv.setBigUint64(i * 8, BigInt(exportRefs[i] as number), true);
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
    blockLog: Math.log2(bs), flags, idCount: ids.length, rootInode: BigInt(rootRef), bytesUsed,
    idTableStart, xattrIdTableStart, inodeTableStart, directoryTableStart, fragmentTableStart, lookupTableStart,
  });
  const padded = o.pad === false ? bytesUsed : Math.ceil(bytesUsed / 4096) * 4096;
  if (padded > bytesUsed) await output.write(new Uint8Array(padded - bytesUsed), bytesUsed);
  await output.flushBuffer();
  await output.write(sb, 0);
  await output.finish(padded);
  return { bytesUsed, size: padded, inodes: inodeCount, fragments: fragments.length, dataBytes, files: { carried: carriedFiles, rebuilt: rebuiltFiles } };
}
