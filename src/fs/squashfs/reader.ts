/**
 * SquashFS 4.0 reader over a Disk.
 *
 * Design notes:
 * - Nothing is read up front except the superblock, compressor options, id, fragment and xattr-id
 *   tables (all bounded by the image size). Inodes and listings are decoded on demand through
 *   MetadataReaders with small LRUs.
 * - File data: a block's position is the file's start plus the sum of the earlier stored lengths;
 *   the prefix sums are computed once per inode (kept in a WeakMap). Decompressed data and
 *   fragment blocks share one LRU bounded in bytes, so random reads through `openFileDisk` (a
 *   multi-GB rootfs.img served as a Disk) decompress each block once while it is hot.
 * - Corrupt input gives CorruptImageError / UnsupportedFeatureError: every count and length is checked
 *   against the image before allocating, table walks only move forward, and `walk` refuses a
 *   directory that appears twice (cycles).
 */
import { CorruptImageError, NotFoundError, ReadOnlyError } from '../../errors.ts';
import { checkRange, FileDisk, type Disk } from '../../io/disk.ts';
import { BufferPool, view } from '../../io/bytes.ts';
import { compressorForImage } from './comp/index.ts';
import { createBlockDecompressor, createBlockExtractor, type BlockDecompressor, type BlockExtractor } from './comp/pool.ts';
import type { Compressor } from './comp/types.ts';
import { readListing, type DirEntry } from './directory.ts';
import { kindOfType, NO_FRAGMENT, readInode, type DirInode, type FileInode, type Inode, type InodeContext } from './inode.ts';
import { MetadataReader, readMetadataBlockAt, posToRefNumber, refToPos } from './metadata.ts';
import { LruCache, WeightedLru } from '../../io/lru.ts';
import { decodeSuperblock, Flags, METADATA_SIZE, SUPERBLOCK_SIZE, type Superblock } from './superblock.ts';
import { decodeFragmentTable, readLookupTable, type FragmentEntry } from './tables.ts';
import { XattrTable, type Xattr } from './xattr.ts';

export interface ReaderOptions {
  /** Bytes of decompressed data blocks to keep (default 64 MiB). */
  cacheBytes?: number;
}

export interface Entry {
  readonly name: string;
  readonly nameBytes: Uint8Array;
  readonly inode: Inode;
}

export interface WalkEntry {
  /** Path relative to the root, "" for the root, components joined with "/". */
  readonly path: string;
  readonly inode: Inode;
}

export const S_IFMT = { dir: 0o040000, file: 0o100000, symlink: 0o120000, blockdev: 0o060000, chardev: 0o020000, fifo: 0o010000, socket: 0o140000 } as const;

/** File-data workers and the image descriptor they read (see SquashfsReader.fileExtractor). */
export interface FileExtractor {
  extractor: BlockExtractor;
  imageFd: number;
}

export class SquashfsReader {
  readonly disk: Disk;
  readonly superblock: Superblock;
  readonly compressor: Compressor;
  readonly ids: Uint32Array;
  readonly fragmentTable: readonly FragmentEntry[];
  readonly #inodes: MetadataReader;
  readonly #dirs: MetadataReader;
  readonly #xattrs: XattrTable | undefined;
  readonly #ctx: InodeContext;
  readonly #data: WeightedLru<number, Uint8Array>;
  readonly #scratch: BufferPool;
  readonly #offsets = new WeakMap<FileInode, Float64Array>();
  readonly #compressorOptions: Uint8Array | undefined;
  readonly #fragmentLoads = new Map<number, Promise<Uint8Array>>();
  readonly #dirsByPath = new LruCache<string, DirInode>(4096);
  readonly #inodeCache = new LruCache<number, Inode>(4096);
  /** Per directory: each name (its bytes as a latin1 string) → its inode reference as a number (posToRefNumber). */
  readonly #listings = new WeightedLru<string, Map<string, number>>(1 << 14);
  #decoder: BlockDecompressor | undefined;

  private constructor(disk: Disk, sb: Superblock, comp: Compressor, compOptions: Uint8Array | undefined, ids: Uint32Array, frags: FragmentEntry[], xattrs: XattrTable | undefined, dirEnd: number, options: ReaderOptions) {
    this.disk = disk;
    this.superblock = sb;
    this.compressor = comp;
    this.#compressorOptions = compOptions;
    this.ids = ids;
    this.fragmentTable = frags;
    this.#xattrs = xattrs;
    this.#inodes = new MetadataReader(disk, comp, sb.inodeTableStart, sb.directoryTableStart, 'inode', 256);
    this.#dirs = new MetadataReader(disk, comp, sb.directoryTableStart, dirEnd, 'directory', 256);
    this.#ctx = { blockSize: sb.blockSize, idCount: sb.idCount, inodes: sb.inodes, bytesUsed: sb.bytesUsed, fragments: sb.fragments, xattrIds: xattrs?.count ?? 0 };
    this.#data = new WeightedLru<number, Uint8Array>(options.cacheBytes ?? 64 << 20);
    this.#scratch = new BufferPool(this.superblock.blockSize, 4);
  }

  static async open(disk: Disk, options: ReaderOptions = {}): Promise<SquashfsReader> {
    const head = new Uint8Array(Math.min(SUPERBLOCK_SIZE, disk.size));
    await disk.read(head, 0);
    const sb = decodeSuperblock(head, disk.size);
    let optionBytes: Uint8Array | undefined;
    if (sb.flags & Flags.compressorOptions) {
      // Options are stored uncompressed; a compressed header here is corrupt (no codec is known yet).
      const hdr = new Uint8Array(2);
      await disk.read(hdr, SUPERBLOCK_SIZE);
      const h = view(hdr).getUint16(0, true);
      if (!(h & 0x8000)) throw new CorruptImageError('squashfs', 'compressor options', 'the options block is marked compressed', SUPERBLOCK_SIZE);
      const len = h & 0x7fff;
      if (len === 0 || len > 64 || SUPERBLOCK_SIZE + 2 + len > sb.inodeTableStart) throw new CorruptImageError('squashfs', 'compressor options', `length ${len} is invalid`, SUPERBLOCK_SIZE);
      optionBytes = new Uint8Array(len);
      await disk.read(optionBytes, SUPERBLOCK_SIZE + 2);
    }
    const comp = await compressorForImage(sb.compression, optionBytes, sb.blockSize);
    const idBytes = await readLookupTable(disk, comp, sb.idTableStart, sb.idCount, 4, sb.bytesUsed, 'id');
    const ids = new Uint32Array(sb.idCount);
    for (let i = 0; i < sb.idCount; i++) ids[i] = view(idBytes).getUint32(i * 4, true);
    let frags: FragmentEntry[] = [];
    let dirEnd = sb.bytesUsed;
    if (sb.fragments > 0) {
      const raw = await readLookupTable(disk, comp, sb.fragmentTableStart, sb.fragments, 16, sb.bytesUsed, 'fragment');
      frags = decodeFragmentTable(raw, sb.bytesUsed, sb.blockSize);
      const first = new Uint8Array(8);
      await disk.read(first, sb.fragmentTableStart);
      dirEnd = Math.min(dirEnd, Number(view(first).getBigUint64(0, true)));
    } else {
      dirEnd = Math.min(dirEnd, sb.fragmentTableStart);
    }
    if (sb.lookupTableStart !== undefined) dirEnd = Math.min(dirEnd, sb.lookupTableStart);
    dirEnd = Math.min(dirEnd, sb.idTableStart);
    if (dirEnd < sb.directoryTableStart) throw new CorruptImageError('squashfs', 'superblock.directory_table_start', 'the directory table overlaps a later table', 72);
    let xattrs: XattrTable | undefined;
    if (sb.xattrIdTableStart !== undefined) xattrs = await XattrTable.open(disk, comp, sb.xattrIdTableStart, sb.bytesUsed);
    return new SquashfsReader(disk, sb, comp, optionBytes, ids, frags, xattrs, dirEnd, options);
  }

  // ---- inodes and directories ----

  /** The inode at a table position (decoded inodes are kept in a bounded LRU: they are immutable). */
  async inodeAt(block: number, offset: number): Promise<Inode> {
    if (offset >= METADATA_SIZE) throw new CorruptImageError('squashfs', 'inode reference', `offset ${offset} is past a metadata block`);
    const key = block * METADATA_SIZE + offset;
    const known = this.#inodeCache.get(key);
    if (known !== undefined) return known;
    const inode = await readInode(this.#inodes, { block, offset }, this.#ctx);
    this.#inodeCache.set(key, inode);
    return inode;
  }

  root(): Promise<Inode> {
    const pos = refToPos(this.superblock.rootInode);
    return this.inodeAt(pos.block, pos.offset);
  }

  async rawEntries(dir: DirInode): Promise<DirEntry[]> {
    if (dir.fileSize < 3) throw new CorruptImageError('squashfs', 'directory.file_size', `${dir.fileSize} is less than 3`);
    return readListing(this.#dirs, { block: dir.startBlock, offset: dir.offset }, dir.fileSize - 3, this.superblock.inodes);
  }

  async readdir(dirOrPath: DirInode | string): Promise<Entry[]> {
    const dir = typeof dirOrPath === 'string' ? await this.lookup(dirOrPath) : dirOrPath;
    if (dir.kind !== 'dir') throw new NotFoundError(`not a directory: ${typeof dirOrPath === 'string' ? dirOrPath : dir.inodeNumber}`);
    const out: Entry[] = [];
    for (const e of await this.rawEntries(dir)) {
      const inode = await this.inodeAt(e.inodeBlock, e.inodeOffset);
      if (kindOfType(inode.type) !== kindOfType(e.type)) throw new CorruptImageError('squashfs', 'directory entry.type', `entry type ${e.type} does not match its inode type ${inode.type}`);
      if (inode.inodeNumber !== e.inodeNumber) throw new CorruptImageError('squashfs', 'directory entry.inode_number', `entry says ${e.inodeNumber}, its inode says ${inode.inodeNumber}`);
      out.push({ name: Buffer.from(e.name).toString('utf8'), nameBytes: e.name, inode });
    }
    return out;
  }

  /**
   * Resolves a path inside the image ("/" or "" is the root); symlinks are not followed. Directory
   * inodes by path and directory listings by name are kept in bounded LRUs, so a walk that looks
   * up every path of a large tree costs one hash lookup per name, not a scan from the root.
   */
  async lookup(path: string): Promise<Inode> {
    const parts = path.split('/').filter((p) => p !== '' && p !== '.');
    if (parts.length === 0) return this.root();
    const parent = await this.#dirAt(parts, parts.length - 1);
    const hit = (await this.#names(parent)).get(Buffer.from(parts[parts.length - 1] as string, 'utf8').toString('latin1'));
    if (hit === undefined) throw new NotFoundError(`no such file or directory in the image: /${parts.join('/')}`);
    const at = refToPos(hit);
    return this.inodeAt(at.block, at.offset);
  }

  /** The directory inode at the first `n` components of `parts`. */
  async #dirAt(parts: readonly string[], n: number): Promise<DirInode> {
    const key = parts.slice(0, n).join('/');
    const known = this.#dirsByPath.get(key);
    if (known !== undefined) return known;
    let node: Inode;
    if (n === 0) node = await this.root();
    else {
      const parent = await this.#dirAt(parts, n - 1);
      const hit = (await this.#names(parent)).get(Buffer.from(parts[n - 1] as string, 'utf8').toString('latin1'));
      if (hit === undefined) throw new NotFoundError(`no such file or directory in the image: /${key}`);
      const at = refToPos(hit);
      node = await this.inodeAt(at.block, at.offset);
    }
    if (node.kind !== 'dir') throw new NotFoundError(`not a directory: /${key}`);
    this.#dirsByPath.set(key, node);
    return node;
  }

  /** A directory's entries by name (the name's bytes as a latin1 string, so any bytes are a distinct key). */
  async #names(dir: DirInode): Promise<Map<string, number>> {
    // An empty directory's listing starts where the next one's does: the size is part of the key.
    const key = `${dir.startBlock}:${dir.offset}:${dir.fileSize}`;
    const known = this.#listings.get(key);
    if (known !== undefined) return known;
    const map = new Map<string, number>();
    for (const e of await this.rawEntries(dir)) {
      const name = Buffer.from(e.name).toString('latin1');
      if (!map.has(name)) map.set(name, posToRefNumber(e.inodeBlock, e.inodeOffset));
    }
    this.#listings.set(key, map, map.size + 1);
    return map;
  }

  /** Depth-first walk in listing order; each directory is visited once (a repeat is a corrupt cycle). */
  async *walk(start = ''): AsyncGenerator<WalkEntry> {
    const root = await this.lookup(start);
    const seen = new Set<number>();
    const key = (d: DirInode): number => d.inodeNumber;
    const base = start.split('/').filter((p) => p !== '' && p !== '.').join('/');
    yield { path: base, inode: root };
    if (root.kind !== 'dir') return;
    seen.add(key(root));
    const stack: Array<{ path: string; entries: Entry[]; i: number }> = [{ path: base, entries: await this.readdir(root), i: 0 }];
    while (stack.length > 0) {
      const top = stack[stack.length - 1] as { path: string; entries: Entry[]; i: number };
      const e = top.entries[top.i++];
      if (e === undefined) {
        stack.pop();
        continue;
      }
      const path = top.path === '' ? e.name : `${top.path}/${e.name}`;
      yield { path, inode: e.inode };
      if (e.inode.kind === 'dir') {
        if (seen.has(key(e.inode))) throw new CorruptImageError('squashfs', 'directory', `directory inode ${e.inode.inodeNumber} appears twice (a cycle) at /${path}`);
        seen.add(key(e.inode));
        stack.push({ path, entries: await this.readdir(e.inode), i: 0 });
      }
    }
  }

  uid(inode: Inode): number {
    return this.ids[inode.uidIndex] as number;
  }

  gid(inode: Inode): number {
    return this.ids[inode.gidIndex] as number;
  }

  /** Full st_mode (type bits + permissions). */
  static modeOf(inode: Inode): number {
    return S_IFMT[inode.kind] | inode.mode;
  }

  async xattrs(inode: Inode): Promise<Xattr[]> {
    if (inode.xattr === undefined || this.#xattrs === undefined) return [];
    return this.#xattrs.get(inode.xattr);
  }

  // ---- file data ----

  /**
   * From now on, data blocks are decompressed on `threads` worker threads, so read-ahead runs in
   * parallel, for codecs slow enough to gain from it (xz; gzip has its own async decoder). Undo with
   * stopDecodeThreads. Returns whether threads were started.
   */
  startDecodeThreads(threads: number): boolean {
    if (this.#decoder !== undefined || threads <= 0 || this.compressor.decodeOnWorkers !== true) return false;
    this.#decoder = createBlockDecompressor(this.superblock.compression, this.#compressorOptions, this.superblock.blockSize, threads);
    return true;
  }

  /**
   * Workers that read, decode and write this image's file blocks themselves, for an image in a plain
   * file (undefined otherwise, or for 0 threads). The caller closes the extractor.
   */
  fileExtractor(threads: number): FileExtractor | undefined {
    if (threads <= 0 || !(this.disk instanceof FileDisk)) return undefined;
    return { extractor: createBlockExtractor(this.superblock.compression, this.#compressorOptions, this.superblock.blockSize, threads), imageFd: this.disk.fd };
  }

  async stopDecodeThreads(): Promise<void> {
    const d = this.#decoder;
    this.#decoder = undefined;
    await d?.close();
  }

  /** Where each of a file's blocks starts, plus the end of the last (checked against the image end). */
  blockOffsets(f: FileInode): Float64Array {
    let offs = this.#offsets.get(f);
    if (offs === undefined) {
      offs = new Float64Array(f.blockSizes.length + 1);
      let at = f.blocksStart;
      for (let i = 0; i < f.blockSizes.length; i++) {
        offs[i] = at;
        at += (f.blockSizes[i] as number) & 0xffffff;
      }
      offs[f.blockSizes.length] = at;
      if (at > this.superblock.bytesUsed) throw new CorruptImageError('squashfs', 'file blocks', `inode ${f.inodeNumber}'s data runs to ${at}, past the image end`);
      this.#offsets.set(f, offs);
    }
    return offs;
  }

  /**
   * The stored bytes at `at` (size word `word`), decoded. With `into` (exactly `expect` bytes), decoded
   * there instead, the stored bytes going through a reused buffer: nothing is allocated.
   */
  async #readStored(at: number, word: number, expect: number, what: string, into?: Uint8Array): Promise<Uint8Array> {
    const len = word & 0xffffff;
    const bs = this.superblock.blockSize;
    if (into !== undefined && len > bs) throw new CorruptImageError('squashfs', `${what} at ${at}`, `stored in ${len} bytes, more than the block size ${bs}`, at);
    const scratch = into === undefined ? undefined : this.#scratch.take();
    try {
      const raw = scratch?.subarray(0, len) ?? new Uint8Array(len);
      await this.disk.read(raw, at);
      let data: Uint8Array;
      if (word & (1 << 24)) {
        if (len !== expect && what === 'block') throw new CorruptImageError('squashfs', 'data block', `uncompressed block of ${len} bytes, expected ${expect}`, at);
        data = raw;
      } else {
        try {
          if (into !== undefined) data = this.compressor.decompressTransient ? this.compressor.decompressTransient(raw, bs) : this.compressor.decompress(raw, bs);
          else if (this.compressor.decompressAsync) data = await this.compressor.decompressAsync(raw, bs);
          else if (this.#decoder) data = await this.#decoder.decompress(raw, bs);
          else data = this.compressor.decompress(raw, bs);
        } catch (err) {
          if (err instanceof CorruptImageError) throw new CorruptImageError('squashfs', `${what} at ${at}`, err.message, at, { cause: err });
          throw err;
        }
      }
      if (into === undefined) return data;
      if (data.byteLength !== expect) throw new CorruptImageError('squashfs', 'data block', `${what} at ${at} holds ${data.byteLength} bytes, expected ${expect}`, at);
      into.set(data);
      return into;
    } finally {
      if (scratch !== undefined) this.#scratch.give(scratch);
    }
  }

  /** Decompressed block `i` of a file (a full block, or the short last block without fragment). */
  async fileBlock(f: FileInode, i: number, cache = true): Promise<Uint8Array> {
    const bs = this.superblock.blockSize;
    const expect = Math.min(bs, f.fileSize - i * bs);
    const word = f.blockSizes[i] as number;
    if ((word & 0xffffff) === 0) return new Uint8Array(expect);
    const at = (this.blockOffsets(f)[i] as number);
    let data = this.#data.get(at);
    if (data === undefined) {
      data = await this.#readStored(at, word, expect, 'block');
      if (cache) this.#data.set(at, data, data.byteLength);
    }
    if (data.byteLength !== expect) throw new CorruptImageError('squashfs', 'data block', `block ${i} of inode ${f.inodeNumber} holds ${data.byteLength} bytes, expected ${expect}`, at);
    return data;
  }

  /**
   * Block `i` of a file as stored (compressed bytes and its size word), for carrying unchanged
   * blocks into a new image without recompressing; undefined for a sparse block.
   */
  async storedBlock(f: FileInode, i: number): Promise<{ bytes: Uint8Array; word: number } | undefined> {
    const word = f.blockSizes[i];
    if (word === undefined) throw new RangeError(`block ${i} is past the file's ${f.blockSizes.length} blocks`);
    if ((word & 0xffffff) === 0) return undefined;
    const bytes = new Uint8Array(word & 0xffffff);
    await this.disk.read(bytes, this.blockOffsets(f)[i] as number);
    return { bytes, word };
  }

  async fragmentBlock(index: number): Promise<Uint8Array> {
    const e = this.fragmentTable[index];
    if (e === undefined) throw new CorruptImageError('squashfs', 'fragment index', `${index} is past the fragment table`);
    const data = this.#data.get(e.start);
    if (data !== undefined) return data;
    // Concurrent readers of one fragment block (read-ahead over small files) share one load.
    let load = this.#fragmentLoads.get(e.start);
    if (load === undefined) {
      load = this.#readStored(e.start, e.size, 0, 'fragment').then((d) => {
        this.#data.set(e.start, d, d.byteLength);
        return d;
      });
      this.#fragmentLoads.set(e.start, load);
      load.then(
        () => this.#fragmentLoads.delete(e.start),
        () => this.#fragmentLoads.delete(e.start),
      );
    }
    return load;
  }

  async #tail(f: FileInode): Promise<Uint8Array> {
    const tail = f.fileSize % this.superblock.blockSize;
    const frag = await this.fragmentBlock(f.fragment);
    if (f.fragmentOffset + tail > frag.byteLength) throw new CorruptImageError('squashfs', 'inode.fragment offset', `tail ${f.fragmentOffset}+${tail} is past fragment ${f.fragment} (${frag.byteLength} bytes)`);
    return frag.subarray(f.fragmentOffset, f.fragmentOffset + tail);
  }

  /** Piece `i` of the file: block i, or the fragment tail after the last block (blocks are not cached). */
  async piece(f: FileInode, i: number, cache = false): Promise<Uint8Array> {
    if (i < f.blockSizes.length) return this.fileBlock(f, i, cache);
    return this.#tail(f);
  }

  /** How many pieces `piece` serves for the file: its blocks, plus one for a fragment tail. */
  pieceCount(f: FileInode): number {
    return f.blockSizes.length + (f.fragment !== NO_FRAGMENT ? 1 : 0);
  }

  /**
   * Streams a file's content piece by piece, keeping up to `readAhead` pieces in flight (codecs with
   * an async decoder then decompress in parallel on the thread pool).
   */
  async *stream(f: FileInode, readAhead = 4): AsyncGenerator<Uint8Array> {
    this.blockOffsets(f);
    const n = this.pieceCount(f);
    const inFlight: Array<Promise<Uint8Array>> = [];
    let next = 0;
    const fill = (): void => {
      while (next < n && inFlight.length < Math.max(1, readAhead)) {
        const p = this.piece(f, next++, false);
        p.catch(() => {});
        inFlight.push(p);
      }
    };
    for (let i = 0; i < n; i++) {
      fill();
      const cur = inFlight.shift() as Promise<Uint8Array>;
      yield await cur;
    }
  }

  async readFile(fileOrPath: FileInode | string): Promise<Uint8Array> {
    const f = typeof fileOrPath === 'string' ? await this.lookup(fileOrPath) : fileOrPath;
    if (f.kind !== 'file') throw new NotFoundError(`not a regular file: ${typeof fileOrPath === 'string' ? fileOrPath : f.inodeNumber}`);
    const out = new Uint8Array(f.fileSize);
    let at = 0;
    for await (const piece of this.stream(f)) {
      out.set(piece, at);
      at += piece.byteLength;
    }
    return out;
  }

  /** Fills `buf` with file bytes from `offset` (must lie inside the file). */
  async readRange(f: FileInode, buf: Uint8Array, offset: number): Promise<void> {
    checkRange({ size: f.fileSize }, offset, buf.byteLength, 'read');
    const bs = this.superblock.blockSize;
    let done = 0;
    while (done < buf.byteLength) {
      const pos = offset + done;
      const i = Math.floor(pos / bs);
      const blockLen = Math.min(bs, f.fileSize - i * bs);
      // A whole block read in one go (sequential reads in large pieces) is decoded straight into the
      // caller's buffer, without caching it: nothing is allocated per block.
      const at = i < f.blockSizes.length ? (this.blockOffsets(f)[i] as number) : undefined;
      if (at !== undefined && pos === i * bs && buf.byteLength - done >= blockLen && !this.#data.has(at)) {
        const word = f.blockSizes[i] as number;
        const dst = buf.subarray(done, done + blockLen);
        if ((word & 0xffffff) === 0) dst.fill(0);
        else await this.#readStored(at, word, blockLen, 'block', dst);
        done += blockLen;
        continue;
      }
      const piece = await this.piece(f, i, true);
      const inPiece = pos - i * bs;
      const n = Math.min(buf.byteLength - done, piece.byteLength - inPiece);
      if (n <= 0) throw new CorruptImageError('squashfs', 'file data', `inode ${f.inodeNumber} is shorter than its size`);
      buf.set(piece.subarray(inPiece, inPiece + n), done);
      done += n;
    }
  }

  /** A read-only Disk over a regular file's content (random access, block cache shared with the reader). */
  async openFileDisk(fileOrPath: FileInode | string): Promise<Disk> {
    const f = typeof fileOrPath === 'string' ? await this.lookup(fileOrPath) : fileOrPath;
    if (f.kind !== 'file') throw new NotFoundError(`not a regular file: ${typeof fileOrPath === 'string' ? fileOrPath : f.inodeNumber}`);
    this.blockOffsets(f);
    return new SquashfsFileDisk(this, f);
  }
}

class SquashfsFileDisk implements Disk {
  readonly readOnly = true;
  readonly #reader: SquashfsReader;
  readonly #file: FileInode;
  constructor(reader: SquashfsReader, file: FileInode) {
    this.#reader = reader;
    this.#file = file;
  }
  get size(): number {
    return this.#file.fileSize;
  }
  read(buf: Uint8Array, offset: number): Promise<void> {
    return this.#reader.readRange(this.#file, buf, offset);
  }
  async write(): Promise<void> {
    throw new ReadOnlyError('a file inside a SquashFS image is read-only');
  }
  async flush(): Promise<void> {}
  async close(): Promise<void> {}
}

export { readMetadataBlockAt, LruCache };
