/**
 * The jbd2 journal's on-disk structures (all fields big-endian), one decode/encode pair each:
 * the journal superblock (v1/v2), descriptor blocks with their block tags, commit blocks and revoke
 * blocks, plus the checksums that protect them (crc32c seeded with the journal UUID, as jbd2 does
 * for csum v2/v3).
 *
 * Design notes
 * - Tags: with csum v3 a tag is 16 bytes (block, flags, block high, 32-bit data checksum); otherwise
 *   8 bytes (block, 16-bit checksum, 16-bit flags), plus 4 for the high block word with 64bit, plus 2
 *   with csum v2. A tag without SAME_UUID is followed by the 16-byte journal UUID; LAST_TAG ends the
 *   list. A journaled block whose first word is the jbd2 magic is stored with that word zeroed and
 *   the ESCAPE flag set.
 * - Block checksums are computed over the block as it is stored in the journal (escaped), seeded with
 *   the big-endian transaction sequence: that is what recovery verifies.
 * - Decoders throw CorruptImageError for malformed structures and UnsupportedFeatureError (naming
 *   the feature) for incompat features we do not implement (fast commit, unknown bits). Checksum
 *   mismatches of log blocks are reported by the `*Valid` helpers, since recovery treats them as the
 *   end of the log, not as damage.
 */
import { CorruptImageError, UnsupportedFeatureError } from '../../../errors.ts';
import { toSafeNumber, view } from '../../../io/bytes.ts';
import { crc32cUpdate } from '../crc.ts';

export const JBD2_FORMAT = 'jbd2';
export const JBD2_MAGIC = 0xc03b3998;
export const JOURNAL_SB_SIZE = 1024;
const HEADER_SIZE = 12;
const TAIL_SIZE = 4;
const UUID_SIZE = 16;

export const BlockType = { descriptor: 1, commit: 2, superblockV1: 3, superblockV2: 4, revoke: 5 } as const;

export const JournalCompat = { checksum: 0x1 } as const;
export const JournalIncompat = { revoke: 0x1, bit64: 0x2, asyncCommit: 0x4, csumV2: 0x8, csumV3: 0x10, fastCommit: 0x20 } as const;
const INCOMPAT_NAMES: Record<number, string> = { 0x1: 'revoke', 0x2: '64bit', 0x4: 'async_commit', 0x8: 'csum_v2', 0x10: 'csum_v3', 0x20: 'fast_commit' };
const SUPPORTED_INCOMPAT = JournalIncompat.revoke | JournalIncompat.bit64 | JournalIncompat.asyncCommit | JournalIncompat.csumV2 | JournalIncompat.csumV3;
/** s_checksum_type for crc32c, the only one v2/v3 checksums use. */
export const CHECKSUM_CRC32C = 4;

export const TagFlags = { escape: 0x1, sameUuid: 0x2, deleted: 0x4, lastTag: 0x8 } as const;

export interface JournalSuperblock {
  readonly blockType: 3 | 4;
  readonly blockSize: number;
  /** Blocks in the journal, this superblock included. */
  readonly maxLen: number;
  /** First block of the log area. */
  readonly first: number;
  /** First transaction expected in the log (the next one to write when it is empty). */
  readonly sequence: number;
  /** Block where the log starts; 0 = the journal is empty. */
  readonly start: number;
  readonly errno: number;
  readonly featureCompat: number;
  readonly featureIncompat: number;
  readonly featureRoCompat: number;
  readonly uuid: Uint8Array;
  readonly nrUsers: number;
  readonly checksumType: number;
  readonly checksum: number;
  /** The raw bytes (fields not modelled here round-trip through encode). */
  readonly raw: Uint8Array;
}

function corrupt(structure: string, field: string, message: string, offset?: number): CorruptImageError {
  return new CorruptImageError(JBD2_FORMAT, `${structure}.${field}`, message, offset);
}

/** The features a journal's block formats depend on. */
export interface JournalFeatures {
  readonly featureIncompat: number;
  readonly uuid: Uint8Array;
}

export const hasCsumV2or3 = (j: JournalFeatures): boolean => (j.featureIncompat & (JournalIncompat.csumV2 | JournalIncompat.csumV3)) !== 0;
export const hasCsumV3 = (j: JournalFeatures): boolean => (j.featureIncompat & JournalIncompat.csumV3) !== 0;
export const has64bit = (j: JournalFeatures): boolean => (j.featureIncompat & JournalIncompat.bit64) !== 0;

/** Seed of every v2/v3 checksum: crc32c of the journal UUID. */
export function checksumSeed(j: JournalFeatures): number {
  return crc32cUpdate(0xffffffff, j.uuid);
}

export function tagBytes(j: JournalFeatures): number {
  if (hasCsumV3(j)) return 16;
  let size = 12;
  if (j.featureIncompat & JournalIncompat.csumV2) size += 2;
  return has64bit(j) ? size : size - 4;
}

export function journalSuperblockChecksum(raw: Uint8Array): number {
  const copy = raw.slice(0, JOURNAL_SB_SIZE);
  view(copy).setUint32(0xfc, 0, false);
  return crc32cUpdate(0xffffffff, copy);
}

/** `offset` is the byte position of the superblock in the filesystem (for error messages). */
export function decodeJournalSuperblock(bytes: Uint8Array, offset?: number): JournalSuperblock {
  const S = 'journal superblock';
  const at = (o: number) => (offset === undefined ? undefined : offset + o);
  if (bytes.byteLength < JOURNAL_SB_SIZE) throw corrupt(S, 'size', `only ${bytes.byteLength} bytes`, at(0));
  const raw = bytes.slice(0, JOURNAL_SB_SIZE);
  const dv = view(raw);
  const u32 = (o: number) => dv.getUint32(o, false);
  if (u32(0) !== JBD2_MAGIC) throw corrupt(S, 'h_magic', `0x${u32(0).toString(16)} is not 0x${JBD2_MAGIC.toString(16)}`, at(0));
  const blockType = u32(4);
  if (blockType !== BlockType.superblockV1 && blockType !== BlockType.superblockV2) throw corrupt(S, 'h_blocktype', `${blockType} is not a superblock type (3 or 4)`, at(4));
  const v2 = blockType === BlockType.superblockV2;
  const blockSize = u32(0xc);
  if (blockSize < 1024 || blockSize > 65536 || (blockSize & (blockSize - 1)) !== 0) throw corrupt(S, 's_blocksize', `${blockSize}`, at(0xc));
  const maxLen = u32(0x10);
  const first = u32(0x14);
  if (first < 1 || first >= maxLen) throw corrupt(S, 's_first', `${first} with s_maxlen ${maxLen}`, at(0x14));
  if (maxLen - first < 2) throw corrupt(S, 's_maxlen', `${maxLen}: no room for a transaction`, at(0x10));
  const start = u32(0x1c);
  if (start !== 0 && (start < first || start >= maxLen)) throw corrupt(S, 's_start', `${start} is outside the log (${first}..${maxLen - 1})`, at(0x1c));
  const featureCompat = v2 ? u32(0x24) : 0;
  const featureIncompat = v2 ? u32(0x28) : 0;
  const featureRoCompat = v2 ? u32(0x2c) : 0;
  const unknown = featureIncompat & ~SUPPORTED_INCOMPAT;
  if (unknown !== 0) {
    const names: string[] = [];
    for (let b = 0; b < 32; b++) if (unknown & (1 << b)) names.push(INCOMPAT_NAMES[1 << b] ?? `incompat bit ${b}`);
    throw new UnsupportedFeatureError(JBD2_FORMAT, 'journal features', names.join(', '));
  }
  if (featureRoCompat !== 0) throw new UnsupportedFeatureError(JBD2_FORMAT, 'journal features', `ro_compat 0x${featureRoCompat.toString(16)}`);
  if ((featureIncompat & JournalIncompat.csumV2) && (featureIncompat & JournalIncompat.csumV3)) throw corrupt(S, 's_feature_incompat', 'csum_v2 and csum_v3 are both set', at(0x28));
  const checksumType = dv.getUint8(0x50);
  const nrUsers = v2 ? u32(0x40) : 1;
  if (nrUsers > 48) throw corrupt(S, 's_nr_users', `${nrUsers} (at most 48)`, at(0x40));
  const sb: JournalSuperblock = {
    blockType,
    blockSize,
    maxLen,
    first,
    sequence: u32(0x18),
    start,
    errno: dv.getInt32(0x20, false),
    featureCompat,
    featureIncompat,
    featureRoCompat,
    uuid: raw.slice(0x30, 0x40),
    nrUsers,
    checksumType,
    checksum: u32(0xfc),
    raw,
  };
  if (hasCsumV2or3(sb)) {
    if (checksumType !== CHECKSUM_CRC32C) throw corrupt(S, 's_checksum_type', `${checksumType} (csum v2/v3 use crc32c = 4)`, at(0x50));
    const computed = journalSuperblockChecksum(raw);
    if (computed !== sb.checksum) throw corrupt(S, 's_checksum', `stored 0x${sb.checksum.toString(16)}, computed 0x${computed.toString(16)}`, at(0xfc));
  }
  return sb;
}

export function encodeJournalSuperblock(sb: JournalSuperblock): Uint8Array {
  const out = sb.raw.slice();
  const dv = view(out);
  dv.setUint32(0, JBD2_MAGIC, false);
  dv.setUint32(4, sb.blockType, false);
  dv.setUint32(0xc, sb.blockSize, false);
  dv.setUint32(0x10, sb.maxLen, false);
  dv.setUint32(0x14, sb.first, false);
  dv.setUint32(0x18, sb.sequence >>> 0, false);
  dv.setUint32(0x1c, sb.start, false);
  dv.setInt32(0x20, sb.errno, false);
  if (sb.blockType === BlockType.superblockV2) {
    dv.setUint32(0x24, sb.featureCompat, false);
    dv.setUint32(0x28, sb.featureIncompat, false);
    dv.setUint32(0x2c, sb.featureRoCompat, false);
    out.set(sb.uuid.subarray(0, UUID_SIZE), 0x30);
    dv.setUint32(0x40, sb.nrUsers, false);
  }
  dv.setUint8(0x50, sb.checksumType);
  if (hasCsumV2or3(sb)) dv.setUint32(0xfc, journalSuperblockChecksum(out), false);
  return out;
}

// ---- log blocks -------------------------------------------------------------------------------

export interface BlockHeader {
  readonly blockType: number;
  readonly sequence: number;
}

/** The 12-byte header of a log block, or undefined when the block does not start with the magic. */
export function decodeBlockHeader(bytes: Uint8Array): BlockHeader | undefined {
  if (bytes.byteLength < HEADER_SIZE) return undefined;
  const dv = view(bytes);
  if (dv.getUint32(0, false) !== JBD2_MAGIC) return undefined;
  return { blockType: dv.getUint32(4, false), sequence: dv.getUint32(8, false) };
}

function writeHeader(out: Uint8Array, blockType: number, sequence: number): void {
  const dv = view(out);
  dv.setUint32(0, JBD2_MAGIC, false);
  dv.setUint32(4, blockType, false);
  dv.setUint32(8, sequence >>> 0, false);
}

/** crc32c over a descriptor or revoke block with its 4-byte tail zeroed. */
function tailChecksum(j: JournalFeatures, block: Uint8Array): number {
  const copy = block.slice();
  copy.fill(0, copy.byteLength - TAIL_SIZE);
  return crc32cUpdate(checksumSeed(j), copy);
}

/** Whether a descriptor or revoke block's tail checksum holds (always true without csum v2/v3). */
export function blockTailValid(j: JournalFeatures, block: Uint8Array): boolean {
  if (!hasCsumV2or3(j)) return true;
  return view(block).getUint32(block.byteLength - TAIL_SIZE, false) === tailChecksum(j, block);
}

export interface BlockTag {
  /** Filesystem block the journaled block belongs to. */
  readonly block: number;
  /** TagFlags (ESCAPE, DELETED; SAME_UUID and LAST_TAG are managed by the encoder). */
  readonly flags: number;
  /** Data checksum (32 bits with csum v3, the low 16 with v2, 0 otherwise). */
  readonly checksum: number;
}

export interface DescriptorBlock {
  readonly sequence: number;
  readonly tags: readonly BlockTag[];
}

/** How many tags fit in one descriptor block (the first carries the UUID). */
export function tagsPerDescriptor(j: JournalFeatures, blockSize: number): number {
  const room = blockSize - HEADER_SIZE - (hasCsumV2or3(j) ? TAIL_SIZE : 0) - UUID_SIZE;
  return Math.floor(room / tagBytes(j));
}

export function decodeDescriptorBlock(bytes: Uint8Array, j: JournalFeatures, offset?: number): DescriptorBlock {
  const S = 'descriptor block';
  const header = decodeBlockHeader(bytes);
  if (!header || header.blockType !== BlockType.descriptor) throw corrupt(S, 'header', 'not a descriptor block', offset);
  const dv = view(bytes);
  const size = tagBytes(j);
  const end = bytes.byteLength - (hasCsumV2or3(j) ? TAIL_SIZE : 0);
  const v3 = hasCsumV3(j);
  const tags: BlockTag[] = [];
  let at = HEADER_SIZE;
  for (;;) {
    if (at + size > end) throw corrupt(S, 'tags', 'the tag list runs past the block without LAST_TAG', offset === undefined ? undefined : offset + at);
    const low = dv.getUint32(at, false);
    const flags = v3 ? dv.getUint32(at + 4, false) : dv.getUint16(at + 6, false);
    const high = has64bit(j) ? dv.getUint32(at + 8, false) : 0;
    const checksum = v3 ? dv.getUint32(at + 12, false) : j.featureIncompat & JournalIncompat.csumV2 ? dv.getUint16(at + 4, false) : 0;
    tags.push({ block: high * 2 ** 32 + low, flags: flags & (TagFlags.escape | TagFlags.deleted), checksum });
    at += size;
    if (!(flags & TagFlags.sameUuid)) at += UUID_SIZE;
    if (flags & TagFlags.lastTag) break;
  }
  return { sequence: header.sequence, tags };
}

export function encodeDescriptorBlock(desc: DescriptorBlock, j: JournalFeatures, blockSize: number): Uint8Array {
  if (desc.tags.length === 0 || desc.tags.length > tagsPerDescriptor(j, blockSize)) throw new RangeError(`${desc.tags.length} tags do not fit one descriptor block`);
  const out = new Uint8Array(blockSize);
  writeHeader(out, BlockType.descriptor, desc.sequence);
  const dv = view(out);
  const size = tagBytes(j);
  const v3 = hasCsumV3(j);
  let at = HEADER_SIZE;
  desc.tags.forEach((tag, i) => {
    if (!has64bit(j) && tag.block >= 2 ** 32) throw new RangeError(`block ${tag.block} needs a 64bit journal`);
    const flags = (tag.flags & (TagFlags.escape | TagFlags.deleted)) | (i > 0 ? TagFlags.sameUuid : 0) | (i === desc.tags.length - 1 ? TagFlags.lastTag : 0);
    dv.setUint32(at, tag.block % 2 ** 32, false);
    if (v3) {
      dv.setUint32(at + 4, flags, false);
      dv.setUint32(at + 12, tag.checksum >>> 0, false);
    } else {
      dv.setUint16(at + 4, j.featureIncompat & JournalIncompat.csumV2 ? tag.checksum & 0xffff : 0, false);
      dv.setUint16(at + 6, flags, false);
    }
    if (has64bit(j)) dv.setUint32(at + 8, Math.floor(tag.block / 2 ** 32), false);
    at += size;
    if (i === 0) {
      out.set(j.uuid.subarray(0, UUID_SIZE), at);
      at += UUID_SIZE;
    }
  });
  if (hasCsumV2or3(j)) dv.setUint32(blockSize - TAIL_SIZE, tailChecksum(j, out), false);
  return out;
}

/** The data checksum a tag carries for `stored` (the block as written in the journal). */
export function blockTagChecksum(j: JournalFeatures, sequence: number, stored: Uint8Array): number {
  if (!hasCsumV2or3(j)) return 0;
  const seq = new Uint8Array(4);
  view(seq).setUint32(0, sequence >>> 0, false);
  const csum = crc32cUpdate(crc32cUpdate(checksumSeed(j), seq), stored);
  return hasCsumV3(j) ? csum : csum & 0xffff;
}

/** Whether a journaled block matches its tag's checksum (always true without csum v2/v3). */
export function blockTagValid(j: JournalFeatures, sequence: number, tag: BlockTag, stored: Uint8Array): boolean {
  return !hasCsumV2or3(j) || blockTagChecksum(j, sequence, stored) === tag.checksum;
}

/** The form of a block in the journal: a leading magic word is zeroed (and ESCAPE flagged). */
export function escapeBlock(data: Uint8Array): { stored: Uint8Array; escaped: boolean } {
  if (data.byteLength < 4 || view(data).getUint32(0, false) !== JBD2_MAGIC) return { stored: data, escaped: false };
  const stored = data.slice();
  stored.fill(0, 0, 4);
  return { stored, escaped: true };
}

export function unescapeBlock(stored: Uint8Array, escaped: boolean): Uint8Array {
  if (!escaped) return stored;
  const data = stored.slice();
  view(data).setUint32(0, JBD2_MAGIC, false);
  return data;
}

export interface CommitBlock {
  readonly sequence: number;
  readonly checksumType: number;
  readonly checksumSize: number;
  /** h_chksum[0]: crc32c of the block (csum v2/v3) or the v1 crc32 of the transaction. */
  readonly checksum: number;
  /** Commit time, kept raw: recovery never trusts it (debugfs even writes it in host byte order). */
  readonly commitSec: bigint;
  readonly commitNsec: number;
}

export function decodeCommitBlock(bytes: Uint8Array, offset?: number): CommitBlock {
  const S = 'commit block';
  const header = decodeBlockHeader(bytes);
  if (!header || header.blockType !== BlockType.commit) throw corrupt(S, 'header', 'not a commit block', offset);
  if (bytes.byteLength < 60) throw corrupt(S, 'size', `only ${bytes.byteLength} bytes`, offset);
  const dv = view(bytes);
  return { sequence: header.sequence, checksumType: dv.getUint8(12), checksumSize: dv.getUint8(13), checksum: dv.getUint32(16, false), commitSec: dv.getBigUint64(48, false), commitNsec: dv.getUint32(56, false) };
}

function commitChecksum(j: JournalFeatures, block: Uint8Array): number {
  const copy = block.slice();
  view(copy).setUint32(16, 0, false);
  return crc32cUpdate(checksumSeed(j), copy);
}

export function encodeCommitBlock(commit: Omit<CommitBlock, 'checksum' | 'checksumType' | 'checksumSize'>, j: JournalFeatures, blockSize: number): Uint8Array {
  const out = new Uint8Array(blockSize);
  writeHeader(out, BlockType.commit, commit.sequence);
  const dv = view(out);
  dv.setBigUint64(48, commit.commitSec, false);
  dv.setUint32(56, commit.commitNsec, false);
  if (hasCsumV2or3(j)) dv.setUint32(16, commitChecksum(j, out), false);
  return out;
}

/** Whether a commit block's v2/v3 checksum holds (always true without them). */
export function commitBlockValid(j: JournalFeatures, block: Uint8Array): boolean {
  return !hasCsumV2or3(j) || view(block).getUint32(16, false) === commitChecksum(j, block);
}

export interface RevokeBlock {
  readonly sequence: number;
  readonly blocks: readonly number[];
}

export function revokeRecordBytes(j: JournalFeatures): number {
  return has64bit(j) ? 8 : 4;
}

export function decodeRevokeBlock(bytes: Uint8Array, j: JournalFeatures, offset?: number): RevokeBlock {
  const S = 'revoke block';
  const header = decodeBlockHeader(bytes);
  if (!header || header.blockType !== BlockType.revoke) throw corrupt(S, 'header', 'not a revoke block', offset);
  const dv = view(bytes);
  const count = dv.getUint32(12, false);
  const limit = bytes.byteLength - (hasCsumV2or3(j) ? TAIL_SIZE : 0);
  const rec = revokeRecordBytes(j);
  if (count < 16 || count > limit || (count - 16) % rec !== 0) throw corrupt(S, 'r_count', `${count} bytes (16..${limit}, whole ${rec}-byte records)`, offset === undefined ? undefined : offset + 12);
  const blocks: number[] = [];
  for (let at = 16; at < count; at += rec) {
    blocks.push(rec === 8 ? toSafeNumber(dv.getBigUint64(at, false), JBD2_FORMAT, `${S}.record`, offset === undefined ? undefined : offset + at) : dv.getUint32(at, false));
  }
  return { sequence: header.sequence, blocks };
}

export function encodeRevokeBlock(revoke: RevokeBlock, j: JournalFeatures, blockSize: number): Uint8Array {
  const rec = revokeRecordBytes(j);
  const count = 16 + revoke.blocks.length * rec;
  if (count > blockSize - (hasCsumV2or3(j) ? TAIL_SIZE : 0)) throw new RangeError(`${revoke.blocks.length} revoke records do not fit one block`);
  const out = new Uint8Array(blockSize);
  writeHeader(out, BlockType.revoke, revoke.sequence);
  const dv = view(out);
  dv.setUint32(12, count, false);
  revoke.blocks.forEach((b, i) => {
    if (rec === 8) dv.setBigUint64(16 + i * 8, BigInt(b), false);
    else dv.setUint32(16 + i * 4, b, false);
  });
  if (hasCsumV2or3(j)) dv.setUint32(blockSize - TAIL_SIZE, tailChecksum(j, out), false);
  return out;
}
