/**
 * For an ext4 filesystem without a journal: a Disk between the ext4 layer and its device that holds
 * one change's metadata writes and puts them down in an order that limits what a crash can do.
 *
 * Design notes
 * - As in JournaledDisk, writes to blocks the change allocated (free in the committed state) go
 *   straight down; writes to blocks in use are collected, whole blocks, and reads see them.
 * - `commit()`, each phase flushed before the next:
 *     0. the direct writes (new file data, new directory and extent blocks);
 *     1. every collected bitmap block as the union of what is on disk and what is new: blocks and
 *        inodes the change takes are marked before anything points at them, and what it frees is
 *        still marked;
 *     2. inode table blocks;
 *     3. the other blocks in use (directory blocks, extended attribute blocks);
 *     4. descriptors, the superblock and the final bitmaps (frees now visible).
 *   A crash therefore leaves at worst blocks or inodes marked in use that nothing names, link counts
 *   off by one, an unattached inode (e2fsck moves it to lost+found) or an entry naming a freed inode
 *   (e2fsck clears it) — never a block two files share. It is not atomic: the caller clears the
 *   superblock's "cleanly unmounted" bit for as long as it writes, so the next boot checks.
 */
import { checkRange, type Disk } from '../../io/disk.ts';
import type { Ext4 } from './fs.ts';
import { SUPERBLOCK_OFFSET } from './superblock.ts';

type Kind = 'bitmap' | 'inodes' | 'other' | 'descriptors';

export class OrderedDisk implements Disk {
  readonly readOnly = false;
  readonly #lower: Disk;
  readonly #bs: number;
  readonly #isFreeAtStart: (block: number) => boolean;
  readonly #collected = new Map<number, Uint8Array>();
  readonly #kinds = new Map<number, Kind>();
  /** Sorted [start, end) block ranges of the inode tables. */
  readonly #tables: [number, number][];

  constructor(lower: Disk, fs: Ext4, isFreeAtStart: (block: number) => boolean) {
    this.#lower = lower;
    this.#bs = fs.blockSize;
    this.#isFreeAtStart = isFreeAtStart;
    const sb = fs.sb;
    const itb = Math.ceil((sb.inodesPerGroup * sb.inodeSize) / fs.blockSize);
    for (const gd of fs.groups) {
      this.#kinds.set(gd.blockBitmap, 'bitmap');
      this.#kinds.set(gd.inodeBitmap, 'bitmap');
    }
    const layout = fs.layout;
    for (let d = 0; d < layout.descBlocks; d++) this.#kinds.set(layout.descriptorBlock(d), 'descriptors');
    this.#kinds.set(Math.floor(SUPERBLOCK_OFFSET / fs.blockSize), 'descriptors');
    this.#tables = fs.groups.map((gd) => [gd.inodeTable, gd.inodeTable + itb] as [number, number]).sort((a, b) => a[0] - b[0]);
  }

  get size(): number {
    return this.#lower.size;
  }

  #kind(b: number): Kind {
    const k = this.#kinds.get(b);
    if (k) return k;
    let lo = 0;
    let hi = this.#tables.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const [s, e] = this.#tables[mid]!;
      if (b < s) hi = mid - 1;
      else if (b >= e) lo = mid + 1;
      else return 'inodes';
    }
    return 'other';
  }

  async read(buf: Uint8Array, offset: number): Promise<void> {
    checkRange(this, offset, buf.byteLength, 'read');
    await this.#lower.read(buf, offset);
    if (this.#collected.size === 0) return;
    const bs = this.#bs;
    const end = offset + buf.byteLength;
    for (let b = Math.floor(offset / bs); b * bs < end; b++) {
      const data = this.#collected.get(b);
      if (!data) continue;
      const from = Math.max(offset, b * bs);
      const to = Math.min(end, (b + 1) * bs);
      buf.set(data.subarray(from - b * bs, to - b * bs), from - offset);
    }
  }

  async write(buf: Uint8Array, offset: number): Promise<void> {
    checkRange(this, offset, buf.byteLength, 'write');
    const bs = this.#bs;
    const end = offset + buf.byteLength;
    let b = Math.floor(offset / bs);
    while (b * bs < end) {
      if (this.#isFreeAtStart(b) && !this.#collected.has(b)) {
        let e = b + 1;
        while (e * bs < end && this.#isFreeAtStart(e) && !this.#collected.has(e)) e++;
        const from = Math.max(offset, b * bs);
        const to = Math.min(end, e * bs);
        await this.#lower.write(buf.subarray(from - offset, to - offset), from);
        b = e;
        continue;
      }
      const from = Math.max(offset, b * bs);
      const to = Math.min(end, (b + 1) * bs);
      let data = this.#collected.get(b);
      if (!data) {
        data = new Uint8Array(bs);
        const have = Math.min(bs, this.size - b * bs);
        if (from > b * bs || to < b * bs + have) await this.#lower.read(data.subarray(0, have), b * bs);
        this.#collected.set(b, data);
      }
      data.set(buf.subarray(from - offset, to - offset), from - b * bs);
      b++;
    }
  }

  async flush(): Promise<void> {
    await this.#lower.flush();
  }

  async #put(b: number, data: Uint8Array): Promise<void> {
    await this.#lower.write(data.subarray(0, Math.min(this.#bs, this.size - b * this.#bs)), b * this.#bs);
  }

  /** Writes the collected blocks in the order of the design notes. */
  async commit(): Promise<void> {
    const lower = this.#lower;
    await lower.flush();
    const blocks = [...this.#collected.keys()].sort((x, y) => x - y);
    const of = (k: Kind) => blocks.filter((b) => this.#kind(b) === k);
    const bitmaps = of('bitmap');
    if (bitmaps.length > 0) {
      for (const b of bitmaps) {
        const now = new Uint8Array(this.#bs);
        await lower.read(now, b * this.#bs);
        const next = this.#collected.get(b)!;
        for (let i = 0; i < now.byteLength; i++) now[i]! |= next[i]!;
        await this.#put(b, now);
      }
      await lower.flush();
    }
    for (const kind of ['inodes', 'other'] as const) {
      const list = of(kind);
      if (list.length === 0) continue;
      for (const b of list) await this.#put(b, this.#collected.get(b)!);
      await lower.flush();
    }
    const last = [...of('descriptors'), ...bitmaps];
    if (last.length > 0) {
      for (const b of last) await this.#put(b, this.#collected.get(b)!);
      await lower.flush();
    }
    this.#collected.clear();
  }

  /** Drops what was collected (nothing of it reached the disk). */
  async close(): Promise<void> {
    this.#collected.clear();
  }
}
