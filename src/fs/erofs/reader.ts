/**
 * EROFS reader over a Disk.
 *
 * Design notes
 * - Only the superblock (plus compressor configs and long xattr prefixes) is read at open. Inodes,
 *   directory listings and data are read on demand through three bounded LRUs: metadata blocks,
 *   decoded inodes, and decoded data extents (decompressed pclusters), the first and last bounded in
 *   bytes by `cacheBytes` (a few MiB by default).
 * - Metadata (inodes, xattrs, indexes) is addressed by image byte offset; reads spanning blocks are
 *   assembled from cached blocks, and every offset is checked against the image before reading.
 * - File data is read by range: flat files map straight to blocks (the inline tail after the inode),
 *   chunk-based files through their block map / chunk indexes, compressed files through zmap.ts,
 *   one logical extent at a time.
 * - Untrusted sizes never allocate beyond the image: directories are read block by block, names
 *   and counts are bounded by the block, and `walk` refuses a directory seen twice (cycles).
 */
import { CorruptImageError, NotFoundError, OutOfRangeError, ReadOnlyError, UnsupportedFeatureError } from '../../errors.ts';
import { checkRange, type Disk } from '../../io/disk.ts';
import { view } from '../../io/bytes.ts';
import type { FsXattr, NodeKind } from '../filesystem.ts';
import { BLOCK_MAP_ENTRY_SIZE, CHUNK_INDEX_SIZE, decodeBlockMapEntry, decodeChunkIndex } from './chunk.ts';
import { decodeDirentBlock, FILE_TYPE_KINDS, type Dirent } from './dirent.ts';
import { ChunkFormat, COMPACT_INODE_SIZE, DataLayout, decodeInode, describeInode, EXTENDED_INODE_SIZE, type Inode, type InodeContext } from './inode.ts';
import { WeightedLru } from '../../io/lru.ts';
import { checksumSpan, Compat, decodeSuperblock, Incompat, SUPER_OFFSET, superblockSize, type Superblock } from './superblock.ts';
import { decodeIbodyHeader, decodeLongPrefix, decodeXattrEntry, IBODY_HEADER_SIZE, xattrName, type LongPrefix } from './xattr.ts';
import { decodeComprCfgs, ZMapper, type ComprCfgs, type Extent } from './zmap.ts';

export interface ErofsReaderOptions {
  /** Bytes of metadata blocks and of decoded data to keep, each (default 4 MiB). */
  cacheBytes?: number;
}

export interface ErofsEntry {
  readonly name: string;
  readonly nameBytes: Uint8Array;
  readonly nid: number;
  readonly kind: NodeKind;
}

export interface ErofsWalkEntry {
  readonly path: string;
  readonly inode: Inode;
}

const MAX_SYMLINK = 4096;

export class ErofsReader {
  readonly disk: Disk;
  readonly superblock: Superblock;
  readonly blockSize: number;
  readonly comprCfgs: ComprCfgs;
  #prefixes: readonly LongPrefix[] = [];
  readonly #ctx: InodeContext;
  readonly #blocks: WeightedLru<number, Uint8Array>;
  readonly #inodes = new WeightedLru<number, Inode>(16384);
  readonly #listings = new WeightedLru<number, Map<string, Dirent>>(1 << 17);
  readonly #zmap: ZMapper;

  private constructor(disk: Disk, sb: Superblock, cfgs: ComprCfgs, options: ErofsReaderOptions) {
    this.disk = disk;
    this.superblock = sb;
    this.blockSize = 2 ** sb.blkszbits;
    this.comprCfgs = cfgs;
    this.#ctx = { blkszbits: sb.blkszbits, epoch: sb.epoch, fixedNsec: sb.fixedNsec, imageSize: disk.size };
    const cacheBytes = options.cacheBytes ?? 4 << 20;
    this.#blocks = new WeightedLru(cacheBytes);
    this.#zmap = new ZMapper({
      superblock: sb,
      cfgs,
      imageSize: disk.size,
      cacheBytes,
      meta: (pos, len) => this.meta(pos, len),
      raw: (pos, len) => this.#raw(pos, len),
      packed: (buf, offset) => this.#readPacked(buf, offset),
    });
  }

  static async open(disk: Disk, options: ErofsReaderOptions = {}): Promise<ErofsReader> {
    if (disk.size < SUPER_OFFSET + superblockSize(0)) {
      throw new CorruptImageError('erofs', 'superblock', `the image is ${disk.size} bytes, too small for a superblock at byte 1024`, 0);
    }
    const head = new Uint8Array(Math.min(disk.size - SUPER_OFFSET, (1 << 16) - SUPER_OFFSET));
    await disk.read(head, SUPER_OFFSET);
    const sb = decodeSuperblock(head, disk.size);
    if (sb.featureCompat & Compat.sbChecksum && checksumSpan(sb.blkszbits) > head.byteLength) {
      throw new CorruptImageError('erofs', 'superblock.checksum', 'the image ends inside the checksummed block', SUPER_OFFSET);
    }
    let cfgs: ComprCfgs = {};
    if (sb.featureIncompat & Incompat.comprCfgs) cfgs = decodeComprCfgs(head.subarray(superblockSize(sb.extSlots)), sb.u1, SUPER_OFFSET + superblockSize(sb.extSlots));
    const reader = new ErofsReader(disk, sb, cfgs, options);
    await reader.root();
    await reader.#loadPrefixes();
    return reader;
  }

  // ---- metadata ----

  async #block(n: number): Promise<Uint8Array> {
    let b = this.#blocks.get(n);
    if (b === undefined) {
      const at = n * this.blockSize;
      if (at >= this.disk.size) throw new CorruptImageError('erofs', 'block address', `block ${n} is past the image`, at);
      b = new Uint8Array(Math.min(this.blockSize, this.disk.size - at));
      await this.disk.read(b, at);
      this.#blocks.set(n, b, b.byteLength);
    }
    return b;
  }

  /** `len` bytes of metadata at image offset `pos` (a view into a cached block when it fits in one). */
  async meta(pos: number, len: number): Promise<Uint8Array> {
    if (!Number.isSafeInteger(pos) || pos < 0 || pos + len > this.disk.size) {
      throw new CorruptImageError('erofs', 'metadata', `${len} bytes at ${pos} run past the image (${this.disk.size} bytes)`, pos);
    }
    const first = Math.floor(pos / this.blockSize);
    const off = pos - first * this.blockSize;
    if (off + len <= this.blockSize) return (await this.#block(first)).subarray(off, off + len);
    const out = new Uint8Array(len);
    let done = 0;
    for (let n = first; done < len; n++) {
      const b = await this.#block(n);
      const from = n === first ? off : 0;
      const k = Math.min(len - done, b.byteLength - from);
      out.set(b.subarray(from, from + k), done);
      done += k;
    }
    return out;
  }

  async #raw(pos: number, len: number): Promise<Uint8Array> {
    if (!Number.isSafeInteger(pos) || pos < 0 || pos + len > this.disk.size) {
      throw new CorruptImageError('erofs', 'data address', `${len} bytes at ${pos} run past the image (${this.disk.size} bytes)`, pos);
    }
    const out = new Uint8Array(len);
    await this.disk.read(out, pos);
    return out;
  }

  nidPos(nid: number): number {
    return this.superblock.metaBlkaddr * this.blockSize + nid * 32;
  }

  async inode(nid: number): Promise<Inode> {
    const known = this.#inodes.get(nid);
    if (known !== undefined) return known;
    const pos = this.nidPos(nid);
    if (!Number.isSafeInteger(pos) || pos + COMPACT_INODE_SIZE > this.disk.size) throw new CorruptImageError('erofs', 'nid', `nid ${nid} is past the image`, pos);
    let bytes = await this.meta(pos, COMPACT_INODE_SIZE);
    if ((bytes[0] as number) & 1) {
      if (pos + EXTENDED_INODE_SIZE > this.disk.size) throw new CorruptImageError('erofs', 'nid', `extended inode ${nid} runs past the image`, pos);
      bytes = await this.meta(pos, EXTENDED_INODE_SIZE);
    }
    const inode = describeInode(decodeInode(bytes, nid, pos), nid, pos, this.#ctx);
    if (inode.bodyPos > this.disk.size) throw new CorruptImageError('erofs', 'inode.i_xattr_icount', `nid ${nid}: inline xattrs run past the image`, pos + 2);
    this.#inodes.set(nid, inode, 1);
    return inode;
  }

  async root(): Promise<Inode> {
    const root = await this.inode(this.superblock.rootNid);
    if (root.kind !== 'dir') throw new CorruptImageError('erofs', 'superblock.root_nid', `nid ${root.nid} is a ${root.kind}, not a directory`, SUPER_OFFSET + 14);
    return root;
  }

  // ---- directories ----

  /** Every entry of a directory in on-disk order, "." and ".." included. */
  async rawEntries(dir: Inode): Promise<Dirent[]> {
    if (dir.kind !== 'dir') throw new NotFoundError(`nid ${dir.nid} is not a directory`);
    if (dir.size > this.disk.size * 16) throw new CorruptImageError('erofs', 'inode.i_size', `directory nid ${dir.nid} claims ${dir.size} bytes`, dir.pos + 8);
    const out: Dirent[] = [];
    const bs = this.blockSize;
    let prev: Uint8Array | undefined;
    for (let at = 0; at < dir.size; at += bs) {
      const block = new Uint8Array(Math.min(bs, dir.size - at));
      await this.readRange(dir, block, at);
      for (const e of decodeDirentBlock(block, at)) {
        if (prev !== undefined && Buffer.compare(prev, e.name) >= 0) {
          throw new CorruptImageError('erofs', 'dirent.name', `directory nid ${dir.nid}: "${Buffer.from(e.name).toString('utf8')}" is not sorted after "${Buffer.from(prev).toString('utf8')}"`, at);
        }
        prev = e.name;
        out.push(e);
      }
    }
    return out;
  }

  async #names(dir: Inode): Promise<Map<string, Dirent>> {
    const known = this.#listings.get(dir.nid);
    if (known !== undefined) return known;
    const map = new Map<string, Dirent>();
    for (const e of await this.rawEntries(dir)) map.set(Buffer.from(e.name).toString('latin1'), e);
    this.#listings.set(dir.nid, map, map.size + 1);
    return map;
  }

  /** A directory's entries without "." and "..", each checked against its inode's type. */
  async readdir(dirOrPath: Inode | string): Promise<ErofsEntry[]> {
    const dir = typeof dirOrPath === 'string' ? await this.lookup(dirOrPath) : dirOrPath;
    if (dir.kind !== 'dir') throw new NotFoundError(`not a directory: ${typeof dirOrPath === 'string' ? dirOrPath : `nid ${dir.nid}`}`);
    const out: ErofsEntry[] = [];
    for (const e of (await this.#names(dir)).values()) {
      const name = Buffer.from(e.name).toString('utf8');
      if (name === '.' || name === '..') continue;
      const inode = await this.inode(e.nid);
      const kind = FILE_TYPE_KINDS[e.fileType];
      if (kind !== undefined && kind !== inode.kind) throw new CorruptImageError('erofs', 'dirent.file_type', `"${name}" in directory nid ${dir.nid} says ${kind}, its inode is a ${inode.kind}`);
      out.push({ name, nameBytes: e.name, nid: e.nid, kind: inode.kind });
    }
    return out;
  }

  /** Resolves a path ("/" or "" is the root); symlinks are not followed. */
  async lookup(path: string): Promise<Inode> {
    const parts = path.split('/').filter((p) => p !== '' && p !== '.');
    let node = await this.root();
    for (let i = 0; i < parts.length; i++) {
      if (node.kind !== 'dir') throw new NotFoundError(`not a directory: /${parts.slice(0, i).join('/')}`);
      const hit = (await this.#names(node)).get(Buffer.from(parts[i] as string, 'utf8').toString('latin1'));
      if (hit === undefined || parts[i] === '..') throw new NotFoundError(`no such file or directory in the image: /${parts.slice(0, i + 1).join('/')}`);
      node = await this.inode(hit.nid);
    }
    return node;
  }

  /** Depth-first walk in name order; a directory met twice is a corrupt cycle. */
  async *walk(start = ''): AsyncGenerator<ErofsWalkEntry> {
    const top = await this.lookup(start);
    const base = start.split('/').filter((p) => p !== '' && p !== '.').join('/');
    yield { path: base, inode: top };
    if (top.kind !== 'dir') return;
    const seen = new Set<number>([top.nid]);
    const stack: Array<{ path: string; entries: ErofsEntry[]; i: number }> = [{ path: base, entries: await this.readdir(top), i: 0 }];
    while (stack.length > 0) {
      const frame = stack[stack.length - 1] as { path: string; entries: ErofsEntry[]; i: number };
      const e = frame.entries[frame.i++];
      if (e === undefined) {
        stack.pop();
        continue;
      }
      const path = frame.path === '' ? e.name : `${frame.path}/${e.name}`;
      const inode = await this.inode(e.nid);
      yield { path, inode };
      if (inode.kind === 'dir') {
        if (seen.has(inode.nid)) throw new CorruptImageError('erofs', 'directory', `directory nid ${inode.nid} appears twice (a cycle) at /${path}`);
        seen.add(inode.nid);
        stack.push({ path, entries: await this.readdir(inode), i: 0 });
      }
    }
  }

  async readlink(inodeOrPath: Inode | string): Promise<string> {
    const i = typeof inodeOrPath === 'string' ? await this.lookup(inodeOrPath) : inodeOrPath;
    if (i.kind !== 'symlink') throw new NotFoundError(`not a symbolic link: ${typeof inodeOrPath === 'string' ? inodeOrPath : `nid ${i.nid}`}`);
    if (i.size === 0 || i.size > MAX_SYMLINK) throw new CorruptImageError('erofs', 'inode.i_size', `symlink nid ${i.nid} has a ${i.size}-byte target`, i.pos + 8);
    const buf = new Uint8Array(i.size);
    await this.readRange(i, buf, 0);
    return Buffer.from(buf).toString('utf8');
  }

  // ---- xattrs ----

  async #loadPrefixes(): Promise<void> {
    const sb = this.superblock;
    if (sb.xattrPrefixCount === 0) return;
    const inPacked = sb.packedNid !== 0 && !(sb.featureCompat & Compat.plainXattrPrefix);
    const packed = inPacked ? await this.inode(sb.packedNid) : undefined;
    const limit = packed ? packed.size : this.disk.size;
    const read = async (at: number, len: number): Promise<Uint8Array> => {
      if (at + len > limit) throw new CorruptImageError('erofs', 'xattr_long_prefix', `${len} bytes at ${at} run past the ${packed ? 'packed inode' : 'image'}`, at);
      if (!packed) return this.meta(at, len);
      const buf = new Uint8Array(len);
      await this.readRange(packed, buf, at);
      return buf;
    };
    const out: LongPrefix[] = [];
    let at = sb.xattrPrefixStart * 4;
    for (let i = 0; i < sb.xattrPrefixCount; i++) {
      at = (at + 3) & ~3;
      const len = view(await read(at, 2)).getUint16(0, true);
      out.push(decodeLongPrefix(await read(at + 2, len), at));
      at += 2 + len;
    }
    this.#prefixes = out;
  }

  get longPrefixes(): readonly LongPrefix[] {
    return this.#prefixes;
  }

  /** The node's own xattrs (shared ones first, then inline ones), with full names. */
  async xattrs(inodeOrPath: Inode | string): Promise<FsXattr[]> {
    const i = typeof inodeOrPath === 'string' ? await this.lookup(inodeOrPath) : inodeOrPath;
    if (i.xattrSize === 0) return [];
    const at = i.pos + i.inodeSize;
    const body = Uint8Array.from(await this.meta(at, i.xattrSize));
    const header = decodeIbodyHeader(body, at);
    const sharedEnd = IBODY_HEADER_SIZE + 4 * header.sharedCount;
    if (sharedEnd > body.byteLength) throw new CorruptImageError('erofs', 'xattr_ibody_header.h_shared_count', `nid ${i.nid}: ${header.sharedCount} shared ids do not fit in ${body.byteLength} bytes`, at + 4);
    const out: FsXattr[] = [];
    const dv = view(body);
    for (let k = 0; k < header.sharedCount; k++) {
      const id = dv.getUint32(IBODY_HEADER_SIZE + 4 * k, true);
      const pos = this.superblock.xattrBlkaddr * this.blockSize + 4 * id;
      if (pos + 4 > this.disk.size) throw new CorruptImageError('erofs', 'xattr shared id', `nid ${i.nid}: shared xattr ${id} is past the image`, at + IBODY_HEADER_SIZE + 4 * k);
      const head = await this.meta(pos, 4);
      const len = 4 + (head[0] as number) + view(head).getUint16(2, true);
      const { entry } = decodeXattrEntry(Uint8Array.from(await this.meta(pos, Math.min(len, this.disk.size - pos))), 0, pos);
      out.push({ name: xattrName(entry, this.#prefixes, pos), value: entry.value });
    }
    for (let p = sharedEnd; p < body.byteLength; ) {
      const { entry, size } = decodeXattrEntry(body, p, at);
      out.push({ name: xattrName(entry, this.#prefixes, at + p), value: entry.value });
      p += size;
    }
    return out;
  }

  // ---- file data ----

  /** Fills `buf` with the inode's data from `offset` (inside the data: files, dirs, symlinks). */
  async readRange(inode: Inode, buf: Uint8Array, offset: number): Promise<void> {
    checkRange({ size: inode.size }, offset, buf.byteLength, 'read');
    if (buf.byteLength === 0) return;
    switch (inode.layout) {
      case DataLayout.flatPlain:
      case DataLayout.flatInline:
        return this.#readFlat(inode, buf, offset);
      case DataLayout.chunkBased:
        return this.#readChunked(inode, buf, offset);
      default:
        return this.#zmap.read(inode, buf, offset);
    }
  }

  async #readFlat(inode: Inode, buf: Uint8Array, offset: number): Promise<void> {
    const bs = this.blockSize;
    if (inode.startBlock === undefined) {
      buf.fill(0);
      return;
    }
    const inline = inode.layout === DataLayout.flatInline;
    const blockBytes = inline ? Math.max(0, Math.ceil(inode.size / bs) - 1) * bs : inode.size;
    const end = offset + buf.byteLength;
    if (offset < blockBytes) {
      const n = Math.min(end, blockBytes) - offset;
      const at = inode.startBlock * bs + offset;
      if (at + n > this.disk.size) throw new CorruptImageError('erofs', 'inode.i_u.startblk', `nid ${inode.nid}: data at ${at} runs past the image`, inode.pos + 16);
      await this.disk.read(buf.subarray(0, n), at);
    }
    if (end > blockBytes) {
      const from = Math.max(offset, blockBytes);
      const tail = await this.meta(inode.bodyPos + (from - blockBytes), end - from);
      buf.set(tail, from - offset);
    }
  }

  async #readChunked(inode: Inode, buf: Uint8Array, offset: number): Promise<void> {
    const indexed = (inode.chunkFormat & ChunkFormat.indexes) !== 0;
    const unit = indexed ? CHUNK_INDEX_SIZE : BLOCK_MAP_ENTRY_SIZE;
    const chunkSize = 2 ** inode.chunkBits;
    const base = Math.ceil(inode.bodyPos / unit) * unit;
    const end = offset + buf.byteLength;
    for (let pos = offset; pos < end; ) {
      const n = Math.floor(pos / chunkSize);
      const entryPos = base + n * unit;
      const bytes = await this.meta(entryPos, unit);
      const c = indexed ? decodeChunkIndex(bytes, 0, entryPos) : decodeBlockMapEntry(bytes, 0, entryPos);
      const chunkEnd = Math.min(end, (n + 1) * chunkSize);
      const piece = buf.subarray(pos - offset, chunkEnd - offset);
      if (c.startBlock === undefined) piece.fill(0);
      else {
        if (indexed && c.deviceId !== 0 && this.superblock.extraDevices > 0) throw new UnsupportedFeatureError('erofs', 'EXTRA_DEVICES', `nid ${inode.nid}: chunk ${n} lives on device ${c.deviceId}`);
        const at = c.startBlock * this.blockSize + (pos - n * chunkSize);
        if (at + piece.byteLength > this.disk.size) throw new CorruptImageError('erofs', 'chunk_index.startblk', `nid ${inode.nid}: chunk ${n} at block ${c.startBlock} runs past the image`, entryPos);
        await this.disk.read(piece, at);
      }
      pos = chunkEnd;
    }
  }

  async #readPacked(buf: Uint8Array, offset: number): Promise<void> {
    const nid = this.superblock.packedNid;
    if (nid === 0) throw new CorruptImageError('erofs', 'superblock.packed_nid', 'a fragment needs the packed inode, and the image has none', SUPER_OFFSET + 96);
    const packed = await this.inode(nid);
    if (packed.kind !== 'file') throw new CorruptImageError('erofs', 'superblock.packed_nid', `the packed inode nid ${nid} is a ${packed.kind}`, SUPER_OFFSET + 96);
    if (offset + buf.byteLength > packed.size) throw new CorruptImageError('erofs', 'fragment', `${buf.byteLength} bytes at ${offset} run past the packed inode (${packed.size} bytes)`);
    return this.readRange(packed, buf, offset);
  }

  /**
   * A compressed file's logical extents in file order and the size of its lclusters (in bits): where
   * each extent's pcluster lives and how it is stored, as the kernel maps them.
   */
  async compressedExtents(inode: Inode): Promise<{ lclusterBits: number; extents: Extent[] }> {
    if (inode.kind !== 'file' || (inode.layout !== DataLayout.compressedFull && inode.layout !== DataLayout.compressedCompact)) throw new NotFoundError(`nid ${inode.nid} is not a compressed file`);
    const extents: Extent[] = [];
    for (let at = 0; at < inode.size; ) {
      const x = await this.#zmap.extent(inode, at);
      if (x.la !== at || x.llen <= 0) throw new CorruptImageError('erofs', 'z_erofs_lcluster_index', `nid ${inode.nid}: byte ${at} maps to the extent [${x.la}, ${x.la + x.llen})`);
      extents.push(x);
      at += x.llen;
    }
    return { lclusterBits: await this.#zmap.lclusterBits(inode), extents };
  }

  async readFile(inodeOrPath: Inode | string): Promise<Uint8Array> {
    const i = typeof inodeOrPath === 'string' ? await this.lookup(inodeOrPath) : inodeOrPath;
    if (i.kind !== 'file') throw new NotFoundError(`not a regular file: ${typeof inodeOrPath === 'string' ? inodeOrPath : `nid ${i.nid}`}`);
    if (i.size > 1 << 30) throw new OutOfRangeError(`nid ${i.nid} is ${i.size} bytes: read it through openFileDisk`);
    const out = new Uint8Array(i.size);
    await this.readRange(i, out, 0);
    return out;
  }

  /** A read-only Disk over a regular file's content (random access; caches shared with the reader). */
  async openFileDisk(inodeOrPath: Inode | string): Promise<Disk> {
    const i = typeof inodeOrPath === 'string' ? await this.lookup(inodeOrPath) : inodeOrPath;
    if (i.kind !== 'file') throw new NotFoundError(`not a regular file: ${typeof inodeOrPath === 'string' ? inodeOrPath : `nid ${i.nid}`}`);
    return new ErofsFileDisk(this, i);
  }
}

class ErofsFileDisk implements Disk {
  readonly readOnly = true;
  readonly #reader: ErofsReader;
  readonly #inode: Inode;
  constructor(reader: ErofsReader, inode: Inode) {
    this.#reader = reader;
    this.#inode = inode;
  }
  get size(): number {
    return this.#inode.size;
  }
  read(buf: Uint8Array, offset: number): Promise<void> {
    return this.#reader.readRange(this.#inode, buf, offset);
  }
  async write(): Promise<void> {
    throw new ReadOnlyError('a file inside an EROFS image is read-only');
  }
  async flush(): Promise<void> {}
  async close(): Promise<void> {}
}
