/**
 * The internal journal of an ext4 filesystem (inode 8): where its blocks are, scanning its log, and
 * replaying committed transactions as the kernel and e2fsck do.
 *
 * Design notes
 * - `Journal.locate(fs)` maps the journal's logical blocks to filesystem blocks through the journal
 *   inode's extents and decodes the journal superblock. I/O goes through a Disk the caller names,
 *   so a change path can write the log below its own write-collecting layer.
 * - `scanLog` walks from s_start with the expected sequence s_sequence, wrapping from s_maxlen to
 *   s_first, and stops at the first block that is not the next valid one (wrong magic or sequence,
 *   bad descriptor/revoke/commit checksum, malformed tags): what follows the last valid commit block
 *   is an unfinished transaction and is never replayed. It visits at most s_maxlen blocks.
 * - `replayJournal`: revoke records of committed transactions hide tagged blocks of transactions up
 *   to their own sequence; blocks whose tag checksum fails are skipped (the kernel does the same) and
 *   counted. Then: flush, mark the journal empty (s_start = 0, s_sequence past the end of the scan so
 *   stale blocks can never pass as the next transaction), flush, clear needs_recovery, flush.
 *   Replaying twice is harmless, so a crash during replay is repaired by the next one.
 * - Like the kernel, a journal whose filesystem does not say needs_recovery is not replayed (the
 *   kernel discards such a log at mount); it is only marked empty.
 */
import { CorruptImageError, LivestickError, UnsupportedFeatureError } from '../../../errors.ts';
import type { Disk } from '../../../io/disk.ts';
import type { Ext4 } from '../fs.ts';
import { Compat, Incompat, SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE, decodeSuperblock, encodeSuperblock } from '../superblock.ts';
import {
  BlockType,
  JBD2_FORMAT,
  type BlockTag,
  type JournalSuperblock,
  blockTagValid,
  blockTailValid,
  commitBlockValid,
  decodeBlockHeader,
  decodeCommitBlock,
  decodeDescriptorBlock,
  decodeJournalSuperblock,
  decodeRevokeBlock,
  encodeJournalSuperblock,
  unescapeBlock,
} from './format.ts';

export class Journal {
  #sb: JournalSuperblock;
  readonly blockSize: number;
  readonly #map: Float64Array;

  private constructor(sb: JournalSuperblock, map: Float64Array) {
    this.#sb = sb;
    this.blockSize = sb.blockSize;
    this.#map = map;
  }

  /** The filesystem's journal, or undefined when it has none. */
  static async locate(fs: Ext4): Promise<Journal | undefined> {
    const sb = fs.sb;
    if (!(sb.featureCompat & Compat.hasJournal) || sb.journalInum === 0) return undefined;
    const inode = await fs.readInode(sb.journalInum);
    const bs = fs.blockSize;
    const blocks = Math.floor(inode.size / bs);
    if (blocks < 3 || blocks > 2 ** 26) throw new CorruptImageError(JBD2_FORMAT, 'journal inode.i_size', `${inode.size} bytes is not a usable journal`);
    const map = new Float64Array(blocks);
    await fs.walkBlocks(inode, {
      data: (logical, physical, length) => {
        for (let i = 0; i < length && logical + i < blocks; i++) map[logical + i] = physical + i;
      },
      tree: () => {},
    });
    for (let i = 0; i < blocks; i++) if (map[i] === 0) throw new CorruptImageError(JBD2_FORMAT, 'journal inode', `logical block ${i} of the journal is not mapped`);
    const raw = await fs.readBlocks(map[0]!, 1);
    const jsb = decodeJournalSuperblock(raw, map[0]! * bs);
    if (jsb.blockSize !== bs) throw new CorruptImageError(JBD2_FORMAT, 'journal superblock.s_blocksize', `${jsb.blockSize} differs from the filesystem's ${bs}`, map[0]! * bs + 0xc);
    if (jsb.maxLen > blocks) throw new CorruptImageError(JBD2_FORMAT, 'journal superblock.s_maxlen', `${jsb.maxLen} blocks but the journal inode holds ${blocks}`, map[0]! * bs + 0x10);
    return new Journal(jsb, map);
  }

  get sb(): JournalSuperblock {
    return this.#sb;
  }

  /** Filesystem block of journal block `logical`. */
  physical(logical: number): number {
    const p = this.#map[logical];
    if (p === undefined || logical >= this.sb.maxLen) throw new RangeError(`journal block ${logical} is outside the journal`);
    return p;
  }

  /** The log position after `logical`, wrapping at s_maxlen. */
  next(logical: number): number {
    const n = logical + 1;
    return n >= this.sb.maxLen ? this.sb.first : n;
  }

  async readBlock(disk: Disk, logical: number): Promise<Uint8Array> {
    const buf = new Uint8Array(this.blockSize);
    await disk.read(buf, this.physical(logical) * this.blockSize);
    return buf;
  }

  async writeBlock(disk: Disk, logical: number, data: Uint8Array): Promise<void> {
    await disk.write(data, this.physical(logical) * this.blockSize);
  }

  /** Rewrites the journal superblock (and remembers it). */
  async writeSuperblock(disk: Disk, fields: Partial<Pick<JournalSuperblock, 'sequence' | 'start'>>): Promise<JournalSuperblock> {
    const sb: JournalSuperblock = { ...this.sb, ...fields };
    const out = new Uint8Array(this.blockSize);
    out.set(encodeJournalSuperblock(sb));
    const old = await this.readBlock(disk, 0);
    out.set(old.subarray(1024), 1024);
    await this.writeBlock(disk, 0, out);
    this.#sb = decodeJournalSuperblock(out);
    return this.#sb;
  }
}

export interface LoggedBlock {
  readonly tag: BlockTag;
  /** Journal block holding it. */
  readonly at: number;
}

export interface LoggedTransaction {
  readonly sequence: number;
  readonly blocks: readonly LoggedBlock[];
  readonly revoked: readonly number[];
}

export interface LogScan {
  readonly committed: readonly LoggedTransaction[];
  /** The sequence the scan expected when it stopped (first one not committed). */
  readonly endSequence: number;
}

/** Committed transactions of the log from s_start (none when the journal is empty). */
export async function scanLog(journal: Journal, disk: Disk): Promise<LogScan> {
  const j = journal.sb;
  const committed: LoggedTransaction[] = [];
  let sequence = j.sequence;
  if (j.start === 0) return { committed, endSequence: sequence };
  let at = j.start;
  let blocks: LoggedBlock[] = [];
  let revoked: number[] = [];
  let budget = j.maxLen;
  scan: while (budget-- > 0) {
    const block = await journal.readBlock(disk, at);
    const header = decodeBlockHeader(block);
    if (!header || header.sequence !== sequence) break;
    try {
      switch (header.blockType) {
        case BlockType.descriptor: {
          if (!blockTailValid(j, block)) break scan;
          const desc = decodeDescriptorBlock(block, j);
          if (desc.tags.length > budget) break scan;
          for (const tag of desc.tags) {
            at = journal.next(at);
            budget--;
            blocks.push({ tag, at });
          }
          break;
        }
        case BlockType.revoke: {
          if (!blockTailValid(j, block)) break scan;
          revoked.push(...decodeRevokeBlock(block, j).blocks);
          break;
        }
        case BlockType.commit: {
          if (!commitBlockValid(j, block)) break scan;
          decodeCommitBlock(block);
          committed.push({ sequence, blocks, revoked });
          blocks = [];
          revoked = [];
          sequence = (sequence + 1) >>> 0;
          break;
        }
        default:
          break scan;
      }
    } catch (err) {
      if (err instanceof CorruptImageError) break;
      throw err;
    }
    at = journal.next(at);
  }
  return { committed, endSequence: sequence };
}

export interface ReplayResult {
  /** Whether the filesystem needed recovery (and now no longer does). */
  readonly recovered: boolean;
  readonly transactions: number;
  readonly blocks: number;
  readonly revokedHits: number;
  readonly badChecksums: number;
}

const seqAtLeast = (a: number, b: number): boolean => ((a - b) | 0) >= 0;

/** Replays the journal of `fs` (opened on `disk`) when the filesystem needs recovery. Reopen `fs` afterwards. */
export async function replayJournal(fs: Ext4, disk: Disk = fs.disk): Promise<ReplayResult> {
  const none = { recovered: false, transactions: 0, blocks: 0, revokedHits: 0, badChecksums: 0 };
  const needsRecovery = (fs.sb.featureIncompat & Incompat.recover) !== 0;
  let journal: Journal | undefined;
  try {
    journal = await Journal.locate(fs);
  } catch (err) {
    if (err instanceof LivestickError && needsRecovery) throw err;
    if (err instanceof LivestickError) return none;
    throw err;
  }
  if (!journal) {
    if (needsRecovery) throw new UnsupportedFeatureError('ext4', 'journal recovery', 'needs_recovery is set but the filesystem has no internal journal');
    return none;
  }
  if (!needsRecovery && journal.sb.start === 0) return none;
  const bs = fs.blockSize;
  let result = { ...none, recovered: needsRecovery };
  let endSequence = journal.sb.sequence;
  if (needsRecovery) {
    const scan = await scanLog(journal, disk);
    endSequence = scan.endSequence;
    const revokedAt = new Map<number, number>();
    for (const t of scan.committed) {
      for (const b of t.revoked) {
        const prev = revokedAt.get(b);
        if (prev === undefined || seqAtLeast(t.sequence, prev)) revokedAt.set(b, t.sequence);
      }
    }
    let blocks = 0;
    let revokedHits = 0;
    let badChecksums = 0;
    for (const t of scan.committed) {
      for (const { tag, at } of t.blocks) {
        const rev = revokedAt.get(tag.block);
        if (rev !== undefined && seqAtLeast(rev, t.sequence)) {
          revokedHits++;
          continue;
        }
        const stored = await journal.readBlock(disk, at);
        if (!blockTagValid(journal.sb, t.sequence, tag, stored) || tag.block >= fs.sb.blocksCount) {
          badChecksums++;
          continue;
        }
        await disk.write(unescapeBlock(stored, (tag.flags & 1) !== 0), tag.block * bs);
        blocks++;
      }
    }
    result = { recovered: true, transactions: scan.committed.length, blocks, revokedHits, badChecksums };
    await disk.flush();
  }
  // Past every sequence the log may hold, so stale blocks never pass as the next transaction.
  await journal.writeSuperblock(disk, { start: 0, sequence: (endSequence + 1) >>> 0 });
  await disk.flush();
  if (needsRecovery) await setNeedsRecovery(disk, false);
  return result;
}

/** Sets or clears INCOMPAT_RECOVER in the primary superblock as it is on `disk` now, then flushes. */
export async function setNeedsRecovery(disk: Disk, on: boolean): Promise<void> {
  const raw = new Uint8Array(SUPERBLOCK_SIZE);
  await disk.read(raw, SUPERBLOCK_OFFSET);
  const sb = decodeSuperblock(raw);
  const featureIncompat = on ? sb.featureIncompat | Incompat.recover : sb.featureIncompat & ~Incompat.recover;
  await disk.write(encodeSuperblock({ ...sb, featureIncompat }), SUPERBLOCK_OFFSET);
  await disk.flush();
}
