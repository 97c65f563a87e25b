/**
 * Iso9660Fs: a read-only FileSystem over an ISO9660 image (any Disk: an .iso file, a whole hybrid
 * stick whose first sectors hold an MBR/GPT, a partition).
 *
 * Design notes
 * - Three namespaces can describe the same files: Rock Ridge (POSIX names, modes, owners, symlinks,
 *   device numbers, times; on the primary tree), Joliet (UCS-2 names on a supplementary tree) and the
 *   plain ISO names. `open` picks the first available of the preferred order (default Rock Ridge,
 *   Joliet, ISO). Rock Ridge is in use when the root's '.' record starts with an SP entry.
 * - Directories are read on demand in bounded pieces (never a whole image, never a whole huge
 *   directory in one allocation) and kept in a small LRU of listings, bounded in listings and in
 *   entries. A file made of several records with the multi-extent flag is one node with several
 *   extents, served as one Disk.
 * - Records are turned into nodes by node.ts: plain ones (PX, short TF, one NM) in one pass over the
 *   piece's bytes (quickNode), any other through the record and SUSP decoders (the general path, which
 *   also throws the typed error of a record the quick pass declines).
 * - Rock Ridge deep-directory relocation: a CL record is listed as the directory at its target block
 *   (its size read from that directory's '.' record); the moved directory (RE) is hidden where it sits.
 * - Every extent is checked against the disk size when its record is decoded; a path is resolved
 *   component by component, so a directory cycle cannot loop.
 * - The directory resolved last (by readdir, or as the parent of a resolved path) is remembered with
 *   the path prefix that named it, so the stat of each entry after a readdir is one lookup.
 */
import { Buffer } from 'node:buffer';
import type { Disk } from '../../io/disk.ts';
import { MemoryDisk, SliceDisk, readAt, checkRange } from '../../io/disk.ts';
import { NotFoundError, ReadOnlyError, UnsupportedFeatureError } from '../../errors.ts';
import type { FileSystem, FsEntry, FsSpace, FsStat } from '../filesystem.ts';
import { FORMAT, SECTOR, corrupt } from './format.ts';
import { readDescriptorSet, type DescriptorSet, type VolumeDescriptor } from './descriptor.ts';
import { FLAG_ASSOCIATED, decodeRecord, type DirRecord } from './record.ts';
import { decodeEntries, rockRidge, systemUseEntries, type RockRidge } from './susp.ts';
import { PLATFORM_EFI, PLATFORM_X86, readCatalog, type BootCatalog, type CatalogImage } from './eltorito.ts';
import { TimeMemo, extentOf, extentsOf, nameOf, nodeOf, quickNode, renamed, withExtents, type Extent, type IsoNode, type Namespace, type QuickContext } from './node.ts';

export type { Extent, Namespace } from './node.ts';

export interface Iso9660OpenOptions {
  /** The namespace tried first; the others follow in the order rockridge, joliet, iso. */
  readonly prefer?: Namespace;
  /** Directory listings kept in memory (default 256). */
  readonly cachedDirectories?: number;
  /** Entries of those listings kept in memory, all listings together (default 131072, about 32 MiB); the listing in use is kept whatever its size. */
  readonly cachedEntries?: number;
}

interface Listing {
  readonly entries: readonly IsoNode[];
  readonly byName: ReadonlyMap<string, IsoNode>;
}

export interface BootImage {
  readonly platform: 'x86' | 'efi' | 'ppc' | 'mac' | `0x${string}`;
  readonly platformId: number;
  readonly bootable: boolean;
  readonly media: CatalogImage['media'];
  readonly loadRba: number;
  readonly sectorCount: number;
  /** The image's bytes in the ISO: the matching file's size, else sectorCount × 512. */
  readonly range: Extent;
  /** The file whose extent starts at loadRba, if one does (else the image is a bare sector range). */
  readonly path: string | undefined;
}

export interface BootInfo {
  readonly catalogSector: number;
  readonly validationPlatformId: number;
  readonly idString: string;
  readonly images: readonly BootImage[];
}

const DIR_PIECE = 64 * 1024;
/** Entries walked when looking for the file behind a boot image. */
const BOOT_SEARCH_LIMIT = 1_000_000;

function splitPath(path: string): string[] {
  if (!path.startsWith('/')) throw new NotFoundError(`not an absolute path: ${JSON.stringify(path)}`);
  const parts = path.split('/').filter((p) => p !== '');
  for (const p of parts) if (p === '.' || p === '..') throw new NotFoundError(`'.' and '..' are not resolved: ${path}`);
  return parts;
}

export class Iso9660Fs implements FileSystem {
  readonly type = 'iso9660';
  readonly readOnly = true;
  readonly label: string | undefined;
  readonly uuid: string | undefined;
  readonly namespace: Namespace;
  readonly descriptors: DescriptorSet;
  readonly #disk: Disk;
  readonly #vd: VolumeDescriptor;
  readonly #suspSkip: number;
  readonly #root: IsoNode;
  readonly #cache = new Map<number, Listing>();
  readonly #cacheLimit: number;
  readonly #entryLimit: number;
  #cachedEntries = 0;
  /** The most recently used listing (already last in #cache's order). */
  #newest: Listing | undefined;
  /** The directory resolved last: a path prefix (no trailing '/'; '' for the root) and its listing. */
  #lastDir: { readonly prefix: string; readonly listing: Listing } | undefined;
  readonly #quick: QuickContext;

  private constructor(disk: Disk, set: DescriptorSet, namespace: Namespace, suspSkip: number, root: IsoNode, cacheLimit: number, entryLimit: number) {
    this.#disk = disk;
    this.descriptors = set;
    this.namespace = namespace;
    this.#vd = namespace === 'joliet' ? set.joliet! : set.primary;
    this.#suspSkip = suspSkip;
    this.#root = root;
    this.#cacheLimit = cacheLimit;
    this.#entryLimit = entryLimit;
    this.#quick = { namespace, skip: suspSkip, blockSize: this.#vd.blockSize, diskSize: disk.size, times: new TimeMemo() };
    this.label = set.primary.volumeId || undefined;
    const d = set.primary.dateDigits;
    this.uuid = d && `${d.slice(0, 4)}-${d.slice(4, 6)}-${d.slice(6, 8)}-${d.slice(8, 10)}-${d.slice(10, 12)}-${d.slice(12, 14)}-${d.slice(14, 16)}`;
  }

  static async open(disk: Disk, options: Iso9660OpenOptions = {}): Promise<Iso9660Fs> {
    const set = await readDescriptorSet(disk);
    const rootSelf = await readSelfRecord(disk, set.primary, set.primary.root.extent);
    const sp = rootSelf.systemUse.byteLength >= 7 ? decodeEntries(rootSelf.systemUse).find((e) => e.sig === 'SP') : undefined;
    let rr: RockRidge | undefined;
    if (sp) {
      rr = rockRidge(await systemUseEntries(disk, rootSelf.systemUse, 0, 0, set.primary.blockSize));
      const rrExtension = rr.extensions.some((e) => /^(RRIP_1991A|IEEE_P1282|IEEE_1282)$/.test(e.id));
      if (!rrExtension && !rr.any) rr = undefined;
    }
    const available: Record<Namespace, boolean> = { rockridge: rr !== undefined, joliet: set.joliet !== undefined, iso: true };
    const order: Namespace[] = ['rockridge', 'joliet', 'iso'];
    if (options.prefer) order.sort((a, b) => (a === options.prefer ? -1 : b === options.prefer ? 1 : 0));
    const namespace = order.find((n) => available[n])!;
    const vd = namespace === 'joliet' ? set.joliet! : set.primary;
    const skip = namespace === 'rockridge' ? rr!.sp!.skip : 0;
    const self = namespace === 'joliet' ? await readSelfRecord(disk, vd, vd.root.extent) : rootSelf;
    const root = nodeOf(disk, vd.blockSize, '', self, namespace === 'rockridge' ? rr : undefined);
    return new Iso9660Fs(disk, set, namespace, skip, root, options.cachedDirectories ?? 256, options.cachedEntries ?? 131_072);
  }

  async #list(dir: IsoNode): Promise<Listing> {
    const extent = { offset: dir.offset, length: dir.dataLength };
    const cached = this.#cache.get(extent.offset);
    if (cached) {
      if (this.#newest !== cached) {
        this.#cache.delete(extent.offset);
        this.#cache.set(extent.offset, cached);
        this.#newest = cached;
      }
      return cached;
    }
    const entries: IsoNode[] = [];
    const byName = new Map<string, IsoNode>();
    const bs = this.#vd.blockSize;
    const quick = this.#quick;
    let pending: { record: DirRecord; extents: Extent[]; at: number } | undefined;
    let index = 0;
    for (let done = 0; done < extent.length; ) {
      const n = Math.min(DIR_PIECE, extent.length - done);
      const base = extent.offset + done;
      const piece = await readAt(this.#disk, base, n);
      const b = Buffer.from(piece.buffer, piece.byteOffset, piece.byteLength);
      // The records of the piece, as record.ts's splitRecords splits them.
      for (let at = 0; at < n; ) {
        const length = b[at]!;
        if (length === 0) {
          at = (Math.floor(at / SECTOR) + 1) * SECTOR;
          continue;
        }
        const where = base + at;
        if (at + length > Math.min((Math.floor(at / SECTOR) + 1) * SECTOR, n)) throw corrupt('record.length', `a ${length}-byte record crosses a sector boundary`, where);
        if (index >= 2 && pending === undefined) {
          const node = quickNode(b, at, quick);
          if (node !== undefined) {
            index++;
            at += length;
            entries.push(node);
            if (!byName.has(node.name)) byName.set(node.name, node);
            continue;
          }
        }
        const record = decodeRecord(piece.subarray(at, at + length), where);
        at += length;
        if (index++ < 2) {
          if (record.name.byteLength !== 1 || record.name[0] !== index - 1) throw corrupt('record.name', `record ${index - 1} of a directory is not '${index === 1 ? '.' : '..'}'`, where);
          continue;
        }
        if (record.flags & FLAG_ASSOCIATED) continue;
        const ext = extentOf(this.#disk, record, bs, where);
        if (pending) {
          if (!sameBytes(pending.record.name, record.name)) throw corrupt('record.flags', 'a multi-extent file ends without its final extent', pending.at);
          pending.extents.push(ext);
        }
        if (record.multiExtent) {
          if (record.isDirectory) throw corrupt('record.flags', 'a directory with the multi-extent flag', where);
          pending ??= { record, extents: [ext], at: where };
          continue;
        }
        const extents = pending ? pending.extents : [ext];
        const first = pending ? pending.record : record;
        pending = undefined;
        const made = this.#node(first, extents, where);
        const node = made instanceof Promise ? await made : made;
        if (node === undefined) continue;
        entries.push(node);
        if (!byName.has(node.name)) byName.set(node.name, node);
      }
      done += n;
    }
    if (pending) throw corrupt('record.flags', 'a multi-extent file ends without its final extent', pending.at);
    const listing = { entries, byName };
    this.#cache.set(extent.offset, listing);
    this.#newest = listing;
    this.#cachedEntries += entries.length;
    for (const [key, old] of this.#cache) {
      if (old === listing || (this.#cache.size <= this.#cacheLimit && this.#cachedEntries <= this.#entryLimit)) break;
      this.#cache.delete(key);
      this.#cachedEntries -= old.entries.length;
    }
    return listing;
  }

  /** Synchronous unless the record's System Use continues in CE areas or it is a relocation link. */
  #node(record: DirRecord, extents: Extent[], at: number): IsoNode | undefined | Promise<IsoNode | undefined> {
    if (this.namespace !== 'rockridge') return this.#finish(record, extents, undefined);
    const su = record.systemUse;
    const inline = this.#suspSkip <= su.byteLength ? decodeEntries(su.subarray(this.#suspSkip), at + 33 + record.name.byteLength + this.#suspSkip) : [];
    if (!inline.some((e) => e.sig === 'CE')) {
      const rr = rockRidge(inline);
      return rr.childLink === undefined ? this.#finish(record, extents, rr) : this.#relocated(record, rr);
    }
    return systemUseEntries(this.#disk, su, at + 33 + record.name.byteLength, this.#suspSkip, this.#vd.blockSize).then((entries) => {
      const rr = rockRidge(entries);
      return rr.childLink === undefined ? this.#finish(record, extents, rr) : this.#relocated(record, rr);
    });
  }

  #finish(record: DirRecord, extents: Extent[], rr: RockRidge | undefined): IsoNode | undefined {
    if (rr?.relocated) return undefined;
    const node = nodeOf(this.#disk, this.#vd.blockSize, nameOf(record, this.namespace, rr), record, rr);
    if (extents.length > 1) return withExtents(node, extents);
    return node;
  }

  async #relocated(record: DirRecord, rr: RockRidge): Promise<IsoNode> {
    const moved = await readSelfRecord(this.#disk, this.#vd, rr.childLink!);
    const node = nodeOf(this.#disk, this.#vd.blockSize, '', moved, rr);
    return renamed(node, nameOf(record, this.namespace, rr), 'dir');
  }

  /**
   * The entry `path` names directly inside the directory resolved last (the usual readdir-then-stat
   * walk), without walking from the root; undefined when that does not apply (the full walk decides).
   */
  #inLastDirectory(path: string): IsoNode | undefined {
    const last = this.#lastDir;
    if (last === undefined) return undefined;
    const slash = path.lastIndexOf('/');
    if (slash !== last.prefix.length || !path.startsWith(last.prefix)) return undefined;
    const name = path.slice(slash + 1);
    if (name === '' || name === '.' || name === '..') return undefined;
    return last.listing.byName.get(name);
  }

  async #resolve(path: string): Promise<IsoNode> {
    const hit = this.#inLastDirectory(path);
    if (hit !== undefined) return hit;
    const parts = splitPath(path);
    let node = this.#root;
    let walked = '';
    for (let i = 0; i < parts.length; i++) {
      const part = parts[i]!;
      if (node.kind !== 'dir') throw new NotFoundError(`${walked || '/'} is not a directory`, { file: path });
      const listing = await this.#list(node);
      // path without its last component names this directory (no trailing '/').
      if (i === parts.length - 1 && !path.endsWith('/')) this.#lastDir = { prefix: path.slice(0, path.lastIndexOf('/')), listing };
      const next = listing.byName.get(part);
      walked += `/${part}`;
      if (!next) throw new NotFoundError(`no such file or directory: ${walked}`, { file: path });
      node = next;
    }
    return node;
  }

  async stat(path: string): Promise<FsStat> {
    const n = this.#inLastDirectory(path) ?? (await this.#resolve(path));
    const st: { -readonly [K in keyof FsStat]: FsStat[K] } = { kind: n.kind, size: n.size, mode: n.mode, uid: n.uid, gid: n.gid, nlink: n.nlink, mtime: n.mtime };
    if (n.atime) st.atime = n.atime;
    if (n.ctime) st.ctime = n.ctime;
    return st;
  }

  async readdir(path: string): Promise<FsEntry[]> {
    const n = await this.#resolve(path);
    if (n.kind !== 'dir') throw new NotFoundError(`not a directory: ${path}`, { file: path });
    const listing = await this.#list(n);
    this.#lastDir = { prefix: path.endsWith('/') ? path.slice(0, -1) : path, listing };
    return listing.entries.map((e) => ({ name: e.name, kind: e.kind }));
  }

  async readlink(path: string): Promise<string> {
    const n = await this.#resolve(path);
    if (n.kind !== 'symlink' || n.symlink === undefined) throw new NotFoundError(`not a symbolic link: ${path}`, { file: path });
    return n.symlink;
  }

  /** The byte ranges of the image holding a file's data, in order. */
  async extents(path: string): Promise<readonly Extent[]> {
    const n = await this.#resolve(path);
    if (n.kind !== 'file') throw new NotFoundError(`not a regular file: ${path}`, { file: path });
    return extentsOf(n);
  }

  async openFile(path: string): Promise<Disk> {
    const n = await this.#resolve(path);
    if (n.kind !== 'file') throw new NotFoundError(`not a regular file: ${path}`, { file: path });
    if (n.interleaved) throw new UnsupportedFeatureError(FORMAT, 'interleaved file', path);
    if (n.more === undefined) return n.dataLength === 0 ? new MemoryDisk(0, { readOnly: true }) : new SliceDisk(this.#disk, n.offset, n.dataLength, { readOnly: true });
    return new ExtentsDisk(this.#disk, n.more);
  }

  async space(): Promise<FsSpace> {
    return { totalBytes: this.#vd.volumeBlocks * this.#vd.blockSize, freeBytes: 0 };
  }

  async close(): Promise<void> {
    this.#cache.clear();
    this.#cachedEntries = 0;
    this.#newest = undefined;
    this.#lastDir = undefined;
  }

  /** The El Torito boot catalog, or undefined when the image has no boot record. */
  async bootCatalog(): Promise<BootInfo | undefined> {
    const boot = this.descriptors.boot;
    if (!boot) return undefined;
    const catalog: BootCatalog = await readCatalog(this.#disk, boot.catalogSector);
    const wanted = new Map<number, string | undefined>(catalog.images.map((i) => [i.loadRba * SECTOR, undefined]));
    await this.#findFilesAt(wanted);
    const images: BootImage[] = [];
    for (const i of catalog.images) {
      const offset = i.loadRba * SECTOR;
      const path = wanted.get(offset);
      const length = path === undefined ? i.sectorCount * 512 : (await this.#resolve(path)).size;
      images.push({
        platform: platformName(i.platform),
        platformId: i.platform,
        bootable: i.bootable,
        media: i.media,
        loadRba: i.loadRba,
        sectorCount: i.sectorCount,
        range: { offset, length: Math.max(0, Math.min(length, this.#disk.size - offset)) },
        path,
      });
    }
    return { catalogSector: catalog.sector, validationPlatformId: catalog.validation.platform, idString: catalog.validation.idString, images };
  }

  async #findFilesAt(wanted: Map<number, string | undefined>): Promise<void> {
    const queue: { node: IsoNode; path: string }[] = [{ node: this.#root, path: '' }];
    let left = wanted.size;
    let seen = 0;
    const visited = new Set<number>();
    while (queue.length > 0 && left > 0 && seen < BOOT_SEARCH_LIMIT) {
      const { node, path } = queue.shift()!;
      const key = node.offset;
      if (visited.has(key)) continue;
      visited.add(key);
      for (const e of (await this.#list(node)).entries) {
        seen++;
        const p = `${path}/${e.name}`;
        if (e.kind === 'dir') queue.push({ node: e, path: p });
        else if (e.kind === 'file' && e.size > 0 && wanted.has(e.offset) && wanted.get(e.offset) === undefined) {
          wanted.set(e.offset, p);
          left--;
        }
      }
    }
  }
}

function platformName(id: number): BootImage['platform'] {
  if (id === PLATFORM_X86) return 'x86';
  if (id === PLATFORM_EFI) return 'efi';
  if (id === 1) return 'ppc';
  if (id === 2) return 'mac';
  return `0x${id.toString(16).padStart(2, '0')}`;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.byteLength === b.byteLength && a.every((v, i) => v === b[i]);
}

/** The first record ('.') of the directory at `block`. */
async function readSelfRecord(disk: Disk, vd: VolumeDescriptor, block: number): Promise<DirRecord> {
  const at = block * vd.blockSize;
  if (at + 34 > disk.size) throw corrupt('record.extent', `directory block ${block} is outside the image`, at);
  const head = await readAt(disk, at, 1);
  const length = head[0]!;
  if (length < 34) throw corrupt('record.length', `the '.' record at block ${block} is ${length} bytes`, at);
  checkRange(disk, at, length, 'directory record');
  const record = decodeRecord(await readAt(disk, at, length), at);
  if (!record.isDirectory || record.name.byteLength !== 1 || record.name[0] !== 0) throw corrupt('record.name', `block ${block} does not start with a '.' record`, at);
  return record;
}

/** Several extents of the image as one read-only Disk (a multi-extent file). */
export class ExtentsDisk implements Disk {
  readonly readOnly = true;
  readonly size: number;
  readonly #disk: Disk;
  readonly #extents: readonly Extent[];
  readonly #starts: number[];

  constructor(disk: Disk, extents: readonly Extent[]) {
    this.#disk = disk;
    this.#extents = extents;
    this.#starts = [];
    let at = 0;
    for (const e of extents) {
      this.#starts.push(at);
      at += e.length;
    }
    this.size = at;
  }

  async read(buf: Uint8Array, offset: number): Promise<void> {
    checkRange(this, offset, buf.byteLength, 'read');
    let done = 0;
    let i = this.#starts.findLastIndex((s) => s <= offset);
    while (done < buf.byteLength) {
      const e = this.#extents[i]!;
      const within = offset + done - this.#starts[i]!;
      const n = Math.min(e.length - within, buf.byteLength - done);
      if (n > 0) await this.#disk.read(buf.subarray(done, done + n), e.offset + within);
      done += Math.max(n, 0);
      i++;
    }
  }

  async write(): Promise<void> {
    throw new ReadOnlyError('an ISO9660 file is read-only');
  }

  async flush(): Promise<void> {}
  async close(): Promise<void> {}
}
