/**
 * A Disk between the ext4 layer and its device that makes one change atomic through the jbd2
 * journal, with data=ordered semantics: a kernel or e2fsck that finds the filesystem after a crash
 * sees the old state or, after replaying the journal, the new one.
 *
 * Design notes
 * - Writes to blocks that were free when the change began (new file data, new directory and extent
 *   blocks) go straight to their place: the old bitmaps still call them free, so the old state does
 *   not see them. Writes to blocks in use (bitmaps, descriptors, inode tables, existing directories,
 *   superblocks) are collected in memory, whole blocks, and reads see them.
 * - `commit()`, each step flushed before the next:
 *     1. journal superblock gets s_sequence T (one past the last), the direct writes are flushed;
 *     2. descriptor block(s) and the collected blocks (escaped where they begin with the magic) from
 *        s_first, then the commit block of T;
 *     3. needs_recovery in the primary superblock (as it is on disk: the old one), then s_start in
 *        the journal superblock. In this order a crash leaves either a flagged filesystem with an
 *        empty journal (the kernel mounts the old state) or a committed, flagged log (replayed). The
 *        kernel discards a non-empty log when needs_recovery is clear, so the flag must come first;
 *     4. checkpoint: the collected blocks to their homes (the primary superblock still flagged);
 *     5. journal empty (s_start 0, s_sequence T + 1), then needs_recovery cleared.
 *   A fresh sequence per attempt means blocks of an attempt that died before its commit can never
 *   complete a later transaction of the same number.
 * - When the collected blocks outgrow the journal (or the memory limit), the disk calls `onOverflow`
 *   once, writes what it holds through and is a plain pass-through from then on: the caller's
 *   fallback (an undo log below) takes over. `journaling` tells which mode it is in.
 * - Requires an empty journal with formats it can write (csum v1-only journals and unknown features
 *   are refused by `JournaledDisk.open` with UnsupportedFeatureError).
 */
import { UnsupportedFeatureError, UsageError } from '../../../errors.ts';
import { checkRange, type Disk } from '../../../io/disk.ts';
import type { Ext4 } from '../fs.ts';
import { Incompat, SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE, decodeSuperblock, encodeSuperblock } from '../superblock.ts';
import { JournalCompat, JournalIncompat, blockTagChecksum, encodeCommitBlock, encodeDescriptorBlock, escapeBlock, hasCsumV2or3, tagsPerDescriptor, type BlockTag } from './format.ts';
import { Journal, setNeedsRecovery } from './journal.ts';

/** Where a commit can be interrupted (for crash tests). */
export const COMMIT_STEPS = ['begin', 'sequenced', 'logging', 'logged', 'committed', 'flagged', 'started', 'checkpointing', 'checkpointed', 'emptied', 'done'] as const;
export type CommitStep = (typeof COMMIT_STEPS)[number];

export interface JournaledDiskOptions {
  /** Whether filesystem block `b` was free when the change began. */
  readonly isFreeAtStart: (block: number) => boolean;
  /** Bytes of collected blocks held in memory at most (default 64 MiB). */
  readonly memoryLimit?: number;
  /** Called once when the change no longer fits the journal, before anything collected is written. */
  readonly onOverflow?: (reason: string) => Promise<void>;
  /** Called at each commit step (crash tests). */
  readonly onStep?: (step: CommitStep) => void | Promise<void>;
  readonly now?: () => number;
}

export class JournaledDisk implements Disk {
  readonly readOnly = false;
  readonly #lower: Disk;
  readonly #journal: Journal;
  readonly #bs: number;
  readonly #options: JournaledDiskOptions;
  readonly #collected = new Map<number, Uint8Array>();
  readonly #capacity: number;
  #journaling = true;
  #overflowReason: string | undefined;

  private constructor(lower: Disk, journal: Journal, options: JournaledDiskOptions) {
    this.#lower = lower;
    this.#journal = journal;
    this.#bs = journal.blockSize;
    this.#options = options;
    const j = journal.sb;
    const logBlocks = j.maxLen - j.first;
    const perDesc = tagsPerDescriptor(j, this.#bs);
    // n blocks need ceil(n / perDesc) descriptors and one commit block.
    let n = logBlocks - 2;
    while (n > 0 && n + Math.ceil(n / perDesc) + 1 > logBlocks) n--;
    this.#capacity = Math.min(n, Math.floor((options.memoryLimit ?? 64 << 20) / this.#bs));
  }

  /** A journaled view of `lower`, the device `fs` was opened on. */
  static async open(lower: Disk, fs: Ext4, options: JournaledDiskOptions): Promise<JournaledDisk> {
    const journal = await Journal.locate(fs);
    if (!journal) throw new UnsupportedFeatureError('ext4', 'journaled writes', 'the filesystem has no journal');
    const j = journal.sb;
    if (fs.sb.featureIncompat & Incompat.recover || j.start !== 0) throw new UsageError('the journal must be replayed before a change');
    if (j.featureCompat & JournalCompat.checksum && !hasCsumV2or3(j)) throw new UnsupportedFeatureError('jbd2', 'journaled writes', 'v1 journal checksums');
    if (j.errno !== 0) throw new UnsupportedFeatureError('jbd2', 'journaled writes', `the journal was aborted (errno ${j.errno})`);
    if (!(j.featureIncompat & JournalIncompat.bit64) && fs.sb.blocksCount > 2 ** 32) throw new UnsupportedFeatureError('jbd2', 'journaled writes', 'a 32-bit journal on a filesystem beyond 2^32 blocks');
    return new JournaledDisk(lower, journal, options);
  }

  get size(): number {
    return this.#lower.size;
  }

  /** True while changes go to the journal; false after an overflow made this a pass-through. */
  get journaling(): boolean {
    return this.#journaling;
  }

  /** Why the change left the journal (undefined while journaling). */
  get overflowReason(): string | undefined {
    return this.#overflowReason;
  }

  /** Blocks a transaction may hold. */
  get capacity(): number {
    return this.#capacity;
  }

  get collectedBlocks(): number {
    return this.#collected.size;
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
    if (!this.#journaling) return this.#lower.write(buf, offset);
    const bs = this.#bs;
    const end = offset + buf.byteLength;
    let b = Math.floor(offset / bs);
    while (b * bs < end) {
      // A run of blocks free at the start goes down in one write.
      if (this.#options.isFreeAtStart(b) && !this.#collected.has(b)) {
        let e = b + 1;
        while (e * bs < end && this.#options.isFreeAtStart(e) && !this.#collected.has(e)) e++;
        const from = Math.max(offset, b * bs);
        const to = Math.min(end, e * bs);
        await this.#lower.write(buf.subarray(from - offset, to - offset), from);
        b = e;
        continue;
      }
      let data = this.#collected.get(b);
      const from = Math.max(offset, b * bs);
      const to = Math.min(end, (b + 1) * bs);
      if (!data) {
        if (this.#collected.size >= this.#capacity) {
          await this.#overflow(this.#capacity * bs >= (this.#options.memoryLimit ?? 64 << 20) ? 'its metadata exceeds the memory set aside for it' : `its metadata exceeds the journal (${this.#capacity} blocks)`);
          return this.write(buf.subarray(from - offset), from);
        }
        data = new Uint8Array(bs);
        const have = Math.min(bs, this.size - b * bs);
        if (from > b * bs || to < b * bs + have) await this.#lower.read(data.subarray(0, have), b * bs);
        this.#collected.set(b, data);
      }
      data.set(buf.subarray(from - offset, to - offset), from - b * bs);
      b++;
    }
  }

  async #overflow(reason: string): Promise<void> {
    this.#journaling = false;
    this.#overflowReason = reason;
    await this.#options.onOverflow?.(reason);
    for (const b of [...this.#collected.keys()].sort((x, y) => x - y)) await this.#lower.write(this.#collected.get(b)!.subarray(0, Math.min(this.#bs, this.size - b * this.#bs)), b * this.#bs);
    this.#collected.clear();
  }

  /** Flushes the direct writes; collected blocks stay in memory until `commit()`. */
  async flush(): Promise<void> {
    await this.#lower.flush();
  }

  async #step(step: CommitStep): Promise<void> {
    await this.#options.onStep?.(step);
  }

  /** Makes the change durable and final (see the design notes for the order). */
  async commit(): Promise<{ journaledBlocks: number }> {
    if (!this.#journaling) {
      await this.#lower.flush();
      return { journaledBlocks: 0 };
    }
    const lower = this.#lower;
    const journal = this.#journal;
    const j = journal.sb;
    const bs = this.#bs;
    const homes = [...this.#collected.keys()].sort((x, y) => x - y);
    await this.#step('begin');
    if (homes.length === 0) {
      await lower.flush();
      return { journaledBlocks: 0 };
    }
    const sequence = (j.sequence + 1) >>> 0;
    await journal.writeSuperblock(lower, { sequence, start: 0 });
    await lower.flush();
    await this.#step('sequenced');

    // The primary superblock's block goes into the log and home flagged needs_recovery.
    const sbBlock = Math.floor(SUPERBLOCK_OFFSET / bs);
    const content = (b: number): Uint8Array => {
      const data = this.#collected.get(b)!;
      if (b !== sbBlock) return data;
      const at = SUPERBLOCK_OFFSET - b * bs;
      const sb = decodeSuperblock(data.subarray(at, at + SUPERBLOCK_SIZE));
      const out = data.slice();
      out.set(encodeSuperblock({ ...sb, featureIncompat: sb.featureIncompat | Incompat.recover }), at);
      return out;
    };

    const perDesc = tagsPerDescriptor(j, bs);
    let at = j.first;
    let written = 0;
    const total = homes.length;
    for (let i = 0; i < homes.length; i += perDesc) {
      const group = homes.slice(i, i + perDesc);
      const stored = group.map((b) => escapeBlock(content(b)));
      const tags: BlockTag[] = group.map((b, k) => ({ block: b, flags: stored[k]!.escaped ? 1 : 0, checksum: blockTagChecksum(j, sequence, stored[k]!.stored) }));
      await journal.writeBlock(lower, at, encodeDescriptorBlock({ sequence, tags }, j, bs));
      at = journal.next(at);
      for (const s of stored) {
        await journal.writeBlock(lower, at, s.stored);
        at = journal.next(at);
        if (++written === Math.ceil(total / 2)) await this.#step('logging');
      }
    }
    await lower.flush();
    await this.#step('logged');
    const ms = (this.#options.now ?? Date.now)();
    await journal.writeBlock(lower, at, encodeCommitBlock({ sequence, commitSec: BigInt(Math.floor(ms / 1000)), commitNsec: (ms % 1000) * 1e6 }, j, bs));
    await lower.flush();
    await this.#step('committed');
    await setNeedsRecovery(lower, true);
    await this.#step('flagged');
    await journal.writeSuperblock(lower, { sequence, start: j.first });
    await lower.flush();
    await this.#step('started');

    written = 0;
    for (const b of homes) {
      await lower.write(content(b).subarray(0, Math.min(bs, this.size - b * bs)), b * bs);
      if (++written === Math.ceil(total / 2)) await this.#step('checkpointing');
    }
    await lower.flush();
    await this.#step('checkpointed');
    await journal.writeSuperblock(lower, { sequence: (sequence + 1) >>> 0, start: 0 });
    await lower.flush();
    await this.#step('emptied');
    await setNeedsRecovery(lower, false);
    this.#collected.clear();
    await this.#step('done');
    return { journaledBlocks: total };
  }

  /** Drops what was collected (nothing of it reached the disk). */
  async close(): Promise<void> {
    this.#collected.clear();
  }
}
