/** Builders shared by mkfs and the writer: extent trees, directory blocks, the block allocator. */
import { NoSpaceError } from './errors.ts';
import { view } from '../../io/bytes.ts';
import { crc32cU32, crc32cUpdate } from './crc.ts';
import { dirEntrySize, encodeDirEntry, writeDirTail, DIR_TAIL_SIZE } from './dir.ts';
import { type ExtentLeaf, encodeExtentHeader, encodeExtentIndex, encodeExtentLeaf } from './extent.ts';

export const MAX_EXTENT_LEN = 32768;

export interface CsumContext {
  seed: number;
  ino: number;
  generation: number;
}

/**
 * Builds an extent tree over `extents` (sorted, each ≤ 32768 blocks): the 60-byte i_block and the
 * tree blocks to write. `alloc` hands out a block for each tree node.
 */
export function buildExtentTree(extents: readonly ExtentLeaf[], blockSize: number, alloc: () => number, csum: CsumContext | undefined): { iBlock: Uint8Array; treeBlocks: [number, Uint8Array][] } {
  const perBlock = Math.floor((blockSize - 12) / 12);
  const treeBlocks: [number, Uint8Array][] = [];
  const iBlock = new Uint8Array(60);
  let level: { logical: number; bytes: Uint8Array }[] = extents.map((e) => ({ logical: e.logical, bytes: encodeExtentLeaf(e) }));
  let depth = 0;
  while (level.length > 4) {
    const next: { logical: number; bytes: Uint8Array }[] = [];
    for (let i = 0; i < level.length; i += perBlock) {
      const chunk = level.slice(i, i + perBlock);
      const block = new Uint8Array(blockSize);
      block.set(encodeExtentHeader({ entries: chunk.length, max: perBlock, depth, generation: 0 }), 0);
      chunk.forEach((e, k) => block.set(e.bytes, 12 + 12 * k));
      const tailAt = 12 + perBlock * 12;
      if (csum && tailAt + 4 <= blockSize) {
        let crc = crc32cU32(csum.seed, csum.ino);
        crc = crc32cU32(crc, csum.generation);
        view(block).setUint32(tailAt, crc32cUpdate(crc, block, 0, tailAt), true);
      }
      const nr = alloc();
      treeBlocks.push([nr, block]);
      next.push({ logical: chunk[0]!.logical, bytes: encodeExtentIndex({ logical: chunk[0]!.logical, child: nr }) });
    }
    level = next;
    depth++;
  }
  iBlock.set(encodeExtentHeader({ entries: level.length, max: 4, depth, generation: 0 }), 0);
  level.forEach((e, k) => iBlock.set(e.bytes, 12 + 12 * k));
  return { iBlock, treeBlocks };
}

/** Splits physical runs into extents of at most 32768 blocks starting at logical `first`. */
export function runsToExtents(runs: readonly (readonly [number, number])[], first = 0): ExtentLeaf[] {
  const out: ExtentLeaf[] = [];
  let logical = first;
  for (const [start, len] of runs) {
    for (let done = 0; done < len; done += MAX_EXTENT_LEN) {
      const n = Math.min(MAX_EXTENT_LEN, len - done);
      out.push({ logical, physical: start + done, length: n, unwritten: false });
      logical += n;
    }
  }
  return out;
}

/** Number of tree blocks buildExtentTree needs for `n` extents. */
export function extentTreeBlocks(n: number, blockSize: number): number {
  const perBlock = Math.floor((blockSize - 12) / 12);
  let total = 0;
  let level = n;
  while (level > 4) {
    level = Math.ceil(level / perBlock);
    total += level;
  }
  return total;
}

export interface NewDirEntry {
  ino: number;
  name: Uint8Array;
  fileType: number;
}

/** Lays entries out in directory blocks (with checksum tails when `csum` is given). */
export function buildDirBlocks(entries: readonly NewDirEntry[], blockSize: number, csum: CsumContext | undefined): Uint8Array[] {
  const limit = blockSize - (csum ? DIR_TAIL_SIZE : 0);
  const blocks: Uint8Array[] = [];
  let block = new Uint8Array(blockSize);
  let at = 0;
  let lastAt = -1;
  const finish = () => {
    if (lastAt >= 0) view(block).setUint16(lastAt + 4, limit - lastAt, true);
    else view(block).setUint16(4, limit, true);
    if (csum) writeDirTail(csum.seed, csum.ino, csum.generation, block);
    blocks.push(block);
  };
  for (const e of entries) {
    const size = dirEntrySize(e.name.byteLength);
    if (at + size > limit) {
      finish();
      block = new Uint8Array(blockSize);
      at = 0;
      lastAt = -1;
    }
    block.set(encodeDirEntry(e.ino, e.name, e.fileType, size), at);
    lastAt = at;
    at += size;
  }
  finish();
  return blocks;
}

/** A block allocator over an in-memory bitmap of the whole filesystem (bit b = block b). */
export class BlockAllocator {
  readonly bits: Uint8Array;
  readonly blocks: number;
  #cursor = 0;

  constructor(blocks: number, bits?: Uint8Array) {
    this.blocks = blocks;
    this.bits = bits ?? new Uint8Array(Math.ceil(blocks / 8));
  }

  isUsed(b: number): boolean {
    return ((this.bits[b >>> 3]! >>> (b & 7)) & 1) === 1;
  }

  mark(start: number, count: number): void {
    for (let b = start; b < start + count; b++) this.bits[b >>> 3]! |= 1 << (b & 7);
  }

  unmark(start: number, count: number): void {
    for (let b = start; b < start + count; b++) this.bits[b >>> 3]! &= ~(1 << (b & 7));
  }

  /** One block at or after `goal` (wrapping), marked used. */
  allocOne(goal = this.#cursor): number {
    const runs = this.alloc(1, goal);
    return runs[0]![0];
  }

  /** Length of the free run starting at `b` (0 when `b` is used), counted up to `max`. */
  freeRunAt(b: number, max: number): number {
    let n = 0;
    while (n < max && b + n < this.blocks) {
      const at = b + n;
      if ((at & 7) === 0 && this.bits[at >>> 3] === 0 && at + 8 <= this.blocks && n + 8 <= max) {
        n += 8;
        continue;
      }
      if (this.isUsed(at)) break;
      n++;
    }
    return n;
  }

  /** The first free block at or after `b` (no wrap), or `blocks` when there is none. */
  nextFree(b: number): number {
    while (b < this.blocks) {
      if ((b & 7) === 0 && this.bits[b >>> 3] === 0xff) {
        b += 8;
        continue;
      }
      if (!this.isUsed(b)) return b;
      b++;
    }
    return this.blocks;
  }

  /**
   * `count` blocks in as few runs as it can find, marked used; runs are not split at 32768. With
   * `extend`, the free blocks right at `goal` are taken first (a file growing in place). Then the
   * first free run from `goal` (wrapping) that holds the rest; failing that, runs of at least
   * min(rest, 2048) blocks in address order from `goal`, then any. Throws NoSpaceError (nothing
   * marked) when fewer than `count` blocks are free.
   */
  allocRuns(count: number, goal: number, extend = false): [number, number][] {
    const runs: [number, number][] = [];
    if (count <= 0) return runs;
    const take = (start: number, n: number) => {
      this.mark(start, n);
      const last = runs[runs.length - 1];
      if (last && last[0] + last[1] === start) last[1] += n;
      else runs.push([start, n]);
    };
    let left = count;
    goal = Math.max(0, Math.min(this.blocks - 1, goal));
    if (extend) {
      const n = this.freeRunAt(goal, left);
      if (n > 0) take(goal, n);
      left -= n;
    }
    // Free runs in address order starting at `from`, wrapping once.
    const scan = (from: number, visit: (start: number, len: number) => boolean): void => {
      for (const [lo, hi] of [[from, this.blocks], [0, from]] as const) {
        let b = lo;
        while (b < hi) {
          b = this.nextFree(b);
          if (b >= hi) break;
          const len = this.freeRunAt(b, hi - b);
          if (visit(b, len)) return;
          b += len;
        }
      }
    };
    if (left > 0) {
      scan(goal, (start, len) => {
        if (len < left) return false;
        take(start, left);
        left = 0;
        return true;
      });
    }
    for (const minRun of [Math.min(left, 2048), 1]) {
      if (left === 0) break;
      scan(goal, (start, len) => {
        if (len < minRun) return false;
        const n = Math.min(len, left);
        take(start, n);
        left -= n;
        return left === 0;
      });
    }
    if (left > 0) {
      for (const [s, n] of runs) this.unmark(s, n);
      throw new NoSpaceError(`no space left for ${count} blocks`);
    }
    return runs;
  }

  /** `count` blocks as few runs as possible, first fit from `goal` (wrapping), marked used. */
  alloc(count: number, goal = this.#cursor): [number, number][] {
    const runs: [number, number][] = [];
    let left = count;
    let b = goal % this.blocks;
    let scanned = 0;
    while (left > 0) {
      if (scanned >= this.blocks) {
        for (const [s, n] of runs) this.unmark(s, n);
        throw new NoSpaceError(`no space left for ${count} blocks`);
      }
      if ((b & 7) === 0 && this.bits[b >>> 3] === 0xff && b + 8 <= this.blocks) {
        b += 8;
        scanned += 8;
      } else if (this.isUsed(b)) {
        b++;
        scanned++;
      } else {
        const start = b;
        while (left > 0 && b < this.blocks && !this.isUsed(b) && b - start < MAX_EXTENT_LEN) {
          b++;
          left--;
        }
        this.mark(start, b - start);
        runs.push([start, b - start]);
        scanned += b - start;
      }
      if (b >= this.blocks) b = 0;
    }
    this.#cursor = b;
    return runs;
  }
}
