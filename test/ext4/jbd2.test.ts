/**
 * The jbd2 layer in memory: every structure's decode(encode(x)) round trip and its corruption errors;
 * then JournaledDisk changes cut after every single write the commit issues, each prefix replayed by
 * our reader, which must give exactly the old tree or exactly the new one.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import '../helpers/setup.ts';
import { CorruptImageError, UnsupportedFeatureError } from '../../src/errors.ts';
import { MemoryDisk, type Disk } from '../../src/io/disk.ts';
import { Ext4 } from '../../src/fs/ext4/fs.ts';
import { Ext4Writer } from '../../src/fs/ext4/writer.ts';
import { mkfs } from '../../src/fs/ext4/mkfs.ts';
import { buildBlockMap } from '../../src/fs/ext4/blockmap.ts';
import { Incompat, parseUuid } from '../../src/fs/ext4/superblock.ts';
import {
  BlockType,
  JBD2_MAGIC,
  JournalIncompat,
  Journal,
  JournaledDisk,
  TagFlags,
  blockTagChecksum,
  blockTagValid,
  blockTailValid,
  commitBlockValid,
  decodeCommitBlock,
  decodeDescriptorBlock,
  decodeJournalSuperblock,
  decodeRevokeBlock,
  encodeCommitBlock,
  encodeDescriptorBlock,
  encodeJournalSuperblock,
  encodeRevokeBlock,
  escapeBlock,
  replayJournal,
  scanLog,
  tagBytes,
  tagsPerDescriptor,
  unescapeBlock,
  type JournalSuperblock,
} from '../../src/fs/ext4/jbd2/index.ts';

const FIXED = { uuid: parseUuid('0a5b8e5e-1c1e-4a5e-9f0e-3f1a2b3c4d5e'), hashSeed: parseUuid('11111111-2222-4333-8444-555555555555'), time: 1_700_000_000 };
const FEATURE_SETS = [0, JournalIncompat.bit64, JournalIncompat.csumV2, JournalIncompat.csumV2 | JournalIncompat.bit64, JournalIncompat.csumV3, JournalIncompat.csumV3 | JournalIncompat.bit64 | JournalIncompat.revoke];

function journalSb(featureIncompat: number, blockSize = 4096): JournalSuperblock {
  const raw = new Uint8Array(1024);
  const dv = new DataView(raw.buffer);
  dv.setUint32(0, JBD2_MAGIC, false);
  dv.setUint32(4, BlockType.superblockV2, false);
  const csum = (featureIncompat & (JournalIncompat.csumV2 | JournalIncompat.csumV3)) !== 0;
  return decodeJournalSuperblock(
    encodeJournalSuperblock({
      blockType: 4, blockSize, maxLen: 1024, first: 1, sequence: 7, start: 0, errno: 0, featureCompat: 0, featureIncompat, featureRoCompat: 0,
      uuid: FIXED.uuid, nrUsers: 1, checksumType: csum ? 4 : 0, checksum: 0, raw,
    }),
  );
}

describe('jbd2 structures', () => {
  test('journal superblock round trip (property) and its checksum', () => {
    fc.assert(
      fc.property(fc.constantFrom(...FEATURE_SETS), fc.integer({ min: 1024, max: 2 ** 20 }), fc.nat(2 ** 32 - 1), fc.boolean(), (features, maxLen, sequence, busy) => {
        const base = journalSb(features);
        const sb = { ...base, maxLen, sequence, start: busy ? Math.min(maxLen - 1, 5) : 0 };
        const again = decodeJournalSuperblock(encodeJournalSuperblock(sb));
        assert.deepEqual({ ...again, raw: undefined, checksum: undefined }, { ...sb, raw: undefined, checksum: undefined });
        assert.deepEqual(encodeJournalSuperblock(again), encodeJournalSuperblock(sb));
      }),
    );
  });

  test('journal superblock errors name the field or the feature', () => {
    const good = encodeJournalSuperblock(journalSb(JournalIncompat.csumV3));
    const poke = (at: number, value: number, fix = false): Uint8Array => {
      const b = good.slice();
      new DataView(b.buffer).setUint32(at, value, false);
      if (fix) return encodeJournalSuperblock({ ...decodeJournalSuperblock(good), raw: b, featureIncompat: value });
      return b;
    };
    const field = (bytes: Uint8Array) => {
      try {
        decodeJournalSuperblock(bytes, 4096);
      } catch (err) {
        if (err instanceof CorruptImageError) return err.field;
        if (err instanceof UnsupportedFeatureError) return err.message;
        throw err;
      }
      return 'accepted';
    };
    assert.equal(field(poke(0, 0x1234)), 'journal superblock.h_magic');
    assert.equal(field(poke(4, 2)), 'journal superblock.h_blocktype');
    assert.equal(field(poke(0x14, 5000)), 'journal superblock.s_first');
    assert.equal(field(poke(0x1c, 4000)), 'journal superblock.s_start');
    assert.equal(field(poke(0x18, 99)), 'journal superblock.s_checksum');
    assert.match(field(poke(0x28, JournalIncompat.csumV3 | JournalIncompat.fastCommit, true)), /unsupported journal features: fast_commit/);
    assert.match(field(poke(0x28, JournalIncompat.csumV3 | 0x400, true)), /incompat bit 10/);
    assert.equal(field(poke(0x28, JournalIncompat.csumV3 | JournalIncompat.csumV2, true)), 'journal superblock.s_feature_incompat');
    assert.equal(field(good.subarray(0, 100)), 'journal superblock.size');
  });

  test('descriptor blocks round trip for every tag format (property), with tail and tag checksums', () => {
    for (const features of FEATURE_SETS) {
      const j = journalSb(features);
      const per = tagsPerDescriptor(j, 4096);
      assert.equal(per, Math.floor((4096 - 12 - (features & 0x18 ? 4 : 0) - 16) / tagBytes(j)));
      const maxBlock = features & JournalIncompat.bit64 ? 2 ** 48 : 2 ** 32 - 1;
      fc.assert(
        fc.property(fc.array(fc.record({ block: fc.integer({ min: 0, max: maxBlock }), escape: fc.boolean(), data: fc.nat(0xffffffff) }), { minLength: 1, maxLength: per }), fc.nat(2 ** 32 - 1), (specs, sequence) => {
          const tags = specs.map((s) => ({ block: s.block, flags: s.escape ? TagFlags.escape : 0, checksum: features & JournalIncompat.csumV3 ? s.data : features & JournalIncompat.csumV2 ? s.data & 0xffff : 0 }));
          const bytes = encodeDescriptorBlock({ sequence, tags }, j, 4096);
          assert.ok(blockTailValid(j, bytes));
          assert.deepEqual(decodeDescriptorBlock(bytes, j), { sequence, tags });
          if (features & 0x18) {
            bytes[100]! ^= 1;
            assert.ok(!blockTailValid(j, bytes), 'a flipped bit breaks the descriptor checksum');
          }
        }),
        { numRuns: 30 },
      );
    }
    const j = journalSb(0);
    const unterminated = encodeDescriptorBlock({ sequence: 1, tags: [{ block: 5, flags: 0, checksum: 0 }] }, j, 4096);
    new DataView(unterminated.buffer).setUint16(12 + 6, 0, false);
    assert.throws(() => decodeDescriptorBlock(unterminated, j), (e: unknown) => e instanceof CorruptImageError && e.field === 'descriptor block.tags');
    assert.throws(() => encodeDescriptorBlock({ sequence: 1, tags: [{ block: 2 ** 33, flags: 0, checksum: 0 }] }, j, 4096), RangeError);
  });

  test('block tag checksums cover the sequence and the stored block', () => {
    for (const features of [JournalIncompat.csumV2, JournalIncompat.csumV3]) {
      const j = journalSb(features);
      const data = new Uint8Array(4096).fill(7);
      const tag = { block: 9, flags: 0, checksum: blockTagChecksum(j, 3, data) };
      assert.ok(blockTagValid(j, 3, tag, data));
      assert.ok(!blockTagValid(j, 4, tag, data), 'another sequence');
      data[4095] = 8;
      assert.ok(!blockTagValid(j, 3, tag, data), 'other contents');
    }
    assert.ok(blockTagValid(journalSb(0), 3, { block: 1, flags: 0, checksum: 0 }, new Uint8Array(4096)), 'no checksums without csum v2/v3');
  });

  test('escaping: a block starting with the jbd2 magic is stored with that word zeroed', () => {
    const data = new Uint8Array(4096).fill(0x55);
    new DataView(data.buffer).setUint32(0, JBD2_MAGIC, false);
    const { stored, escaped } = escapeBlock(data);
    assert.ok(escaped);
    assert.deepEqual([...stored.subarray(0, 4)], [0, 0, 0, 0]);
    assert.deepEqual(unescapeBlock(stored, true), data);
    const plain = new Uint8Array(4096).fill(1);
    assert.equal(escapeBlock(plain).escaped, false);
  });

  test('commit and revoke blocks round trip; bad fields are named', () => {
    for (const features of FEATURE_SETS) {
      const j = journalSb(features);
      fc.assert(
        fc.property(fc.nat(2 ** 32 - 1), fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }), fc.nat(999_999_999), (sequence, commitSec, commitNsec) => {
          const bytes = encodeCommitBlock({ sequence, commitSec, commitNsec }, j, 4096);
          assert.ok(commitBlockValid(j, bytes));
          const c = decodeCommitBlock(bytes);
          assert.deepEqual([c.sequence, c.commitSec, c.commitNsec], [sequence, commitSec, commitNsec]);
        }),
        { numRuns: 20 },
      );
      const maxRecords = Math.floor((4096 - 16 - (features & 0x18 ? 4 : 0)) / (features & JournalIncompat.bit64 ? 8 : 4));
      fc.assert(
        fc.property(fc.array(fc.integer({ min: 0, max: features & JournalIncompat.bit64 ? 2 ** 48 : 2 ** 32 - 1 }), { maxLength: maxRecords }), (blocks) => {
          const bytes = encodeRevokeBlock({ sequence: 5, blocks }, j, 4096);
          assert.ok(blockTailValid(j, bytes));
          assert.deepEqual(decodeRevokeBlock(bytes, j), { sequence: 5, blocks });
        }),
        { numRuns: 20 },
      );
      assert.throws(() => encodeRevokeBlock({ sequence: 1, blocks: new Array(maxRecords + 1).fill(1) }, j, 4096), RangeError);
    }
    const j = journalSb(JournalIncompat.csumV3);
    const commit = encodeCommitBlock({ sequence: 1, commitSec: 1n, commitNsec: 0 }, j, 4096);
    new DataView(commit.buffer).setUint32(56, 2e9, false);
    assert.ok(!commitBlockValid(j, commit), 'any changed byte breaks the commit checksum');
    new DataView(commit.buffer).setUint32(4, BlockType.revoke, false);
    assert.throws(() => decodeCommitBlock(commit), (e: unknown) => e instanceof CorruptImageError && e.field === 'commit block.header');
    const revoke = encodeRevokeBlock({ sequence: 1, blocks: [1, 2] }, j, 4096);
    for (const count of [4096, 18, 8]) {
      new DataView(revoke.buffer).setUint32(12, count, false);
      assert.throws(() => decodeRevokeBlock(revoke, j), (e: unknown) => e instanceof CorruptImageError && e.field === 'revoke block.r_count', `r_count ${count}`);
    }
  });
});

// ---- journaled changes cut at every write ------------------------------------------------------

/** Records a copy of the device after every write, so a crash can be cut at any of them. */
class RecordingDisk implements Disk {
  readonly readOnly = false;
  readonly inner: MemoryDisk;
  snapshots: Uint8Array[] | undefined;
  constructor(inner: MemoryDisk) {
    this.inner = inner;
  }
  get size(): number {
    return this.inner.size;
  }
  read(buf: Uint8Array, offset: number): Promise<void> {
    return this.inner.read(buf, offset);
  }
  async write(buf: Uint8Array, offset: number): Promise<void> {
    await this.inner.write(buf, offset);
    this.snapshots?.push(this.inner.bytes.slice());
  }
  flush(): Promise<void> {
    return this.inner.flush();
  }
  async close(): Promise<void> {}
}

async function treeOf(disk: Disk): Promise<string[]> {
  const fs = await Ext4.open(disk, { strict: true });
  const out: string[] = [];
  const walk = async (path: string): Promise<void> => {
    for (const e of await fs.readdir(path)) {
      if (e.name === '.' || e.name === '..' || e.name === 'lost+found') continue;
      const p = `${path === '/' ? '' : path}/${e.name}`;
      const st = await fs.stat(p);
      if (st.kind === 'dir') {
        out.push(`${p}/`);
        await walk(p);
      } else {
        const parts: Uint8Array[] = [];
        for await (const piece of fs.stream(p)) parts.push(piece.slice());
        out.push(`${p} ${Buffer.concat(parts).toString('base64').slice(0, 40)} ${st.size}`);
      }
    }
  };
  await walk('/');
  return out;
}

async function withJournalFeatures(disk: MemoryDisk, featureIncompat: number): Promise<void> {
  const fs = await Ext4.open(disk);
  const journal = (await Journal.locate(fs))!;
  const csum = (featureIncompat & 0x18) !== 0;
  await journal.writeSuperblock(disk, {});
  const raw = (await journal.readBlock(disk, 0)).slice(0, 1024);
  const sb = decodeJournalSuperblock(raw);
  await journal.writeBlock(disk, 0, encodeJournalSuperblock({ ...sb, featureIncompat, checksumType: csum ? 4 : 0 }));
}

describe('JournaledDisk: a change cut after any write replays to the old or the new tree', () => {
  for (const [name, features] of [['no checksums', 0], ['csum v3 + 64bit', JournalIncompat.csumV3 | JournalIncompat.bit64], ['csum v2', JournalIncompat.csumV2]] as const) {
    const blockSize = 4096;
    test(name, async () => {
      const mem = new MemoryDisk(24 * 2 ** 20);
      await mkfs(mem, { ...FIXED, label: 'j' });
      {
        const w = await Ext4Writer.open(await Ext4.open(mem));
        await w.mkdir('/old');
        await w.writeFile('/old/a', new Uint8Array(10_000).fill(1));
        await w.close();
      }
      await withJournalFeatures(mem, features);
      const before = await treeOf(mem);
      const rec = new RecordingDisk(mem);
      const base = await Ext4.open(rec);
      const map = await buildBlockMap(base);
      const steps: string[] = [];
      const jd = await JournaledDisk.open(rec, base, { isFreeAtStart: (b) => b < base.sb.blocksCount && !map.isUsed(b), onStep: (s) => void steps.push(s), now: () => 1_700_000_000_000 });
      const w = await Ext4Writer.open(await Ext4.open(jd));
      await w.mkdir('/new');
      for (let i = 0; i < 12; i++) await w.writeFile(`/new/f${i}`, new Uint8Array(3000 * i + 1).fill(i + 2));
      const magic = new Uint8Array(blockSize).fill(9);
      new DataView(magic.buffer).setUint32(0, JBD2_MAGIC, false);
      await w.appendFile('/old/a', magic);
      await w.unlink('/old/a');
      await w.writeFile('/old/b', magic);
      await w.close();
      rec.snapshots = [mem.bytes.slice()];
      const { journaledBlocks } = await jd.commit();
      assert.ok(journaledBlocks > 3, `${journaledBlocks} blocks journaled`);
      assert.deepEqual(steps, ['begin', 'sequenced', 'logging', 'logged', 'committed', 'flagged', 'started', 'checkpointing', 'checkpointed', 'emptied', 'done']);
      const after = await treeOf(mem);
      assert.notDeepEqual(after, before);
      const finalBytes = mem.bytes.slice();
      let sawOld = 0;
      let sawNew = 0;
      let replayed = 0;
      for (const snap of rec.snapshots) {
        const disk = new MemoryDisk(snap.slice());
        const r = await replayJournal(await Ext4.open(disk));
        if (r.blocks > 0) replayed++;
        const fs = await Ext4.open(disk);
        assert.equal(fs.sb.featureIncompat & Incompat.recover, 0, 'recovery flag cleared');
        assert.equal((await fs.state()).journal?.start, 0, 'journal empty after replay');
        const tree = await treeOf(disk);
        if (JSON.stringify(tree) === JSON.stringify(before)) sawOld++;
        else {
          assert.deepEqual(tree, after, 'neither the old tree nor the new one');
          sawNew++;
        }
        // A second replay finds nothing to do.
        assert.equal((await replayJournal(await Ext4.open(disk))).recovered, false);
      }
      assert.ok(sawOld > 0 && sawNew > 0 && replayed > 0, `old ${sawOld}, new ${sawNew}, replayed ${replayed}`);
      // The log really held the change: replaying the committed state on a copy reproduces the end state's blocks.
      const scanDisk = new MemoryDisk(finalBytes.slice());
      const journal = (await Journal.locate(await Ext4.open(scanDisk)))!;
      assert.equal((await scanLog(journal, scanDisk)).committed.length, 0, 'the final journal is empty');
    });
  }

  test('a change larger than the journal falls back before writing anything collected', async () => {
    const mem = new MemoryDisk(24 * 2 ** 20);
    await mkfs(mem, { ...FIXED, label: 'j' });
    const base = await Ext4.open(mem);
    const map = await buildBlockMap(base);
    const reasons: string[] = [];
    const jd = await JournaledDisk.open(mem, base, { isFreeAtStart: (b) => !map.isUsed(b), memoryLimit: 3 * 4096, onOverflow: async (r) => void reasons.push(r) });
    assert.equal(jd.capacity, 3);
    const w = await Ext4Writer.open(await Ext4.open(jd));
    for (let i = 0; i < 40; i++) await w.writeFile(`/f${i}`, new Uint8Array(100).fill(i));
    await w.close();
    assert.equal(jd.journaling, false);
    assert.equal(reasons.length, 1);
    assert.deepEqual(await jd.commit(), { journaledBlocks: 0 });
    assert.equal((await treeOf(mem)).length, 40);
  });

  test('refuses a journal that needs replay, and v1-checksum journals', async () => {
    const mem = new MemoryDisk(24 * 2 ** 20);
    await mkfs(mem, { ...FIXED, label: 'j' });
    const fs = await Ext4.open(mem);
    const journal = (await Journal.locate(fs))!;
    await journal.writeSuperblock(mem, { start: 1 });
    await assert.rejects(JournaledDisk.open(mem, await Ext4.open(mem), { isFreeAtStart: () => false }), /replayed/);
    await journal.writeSuperblock(mem, { start: 0 });
    const raw = (await journal.readBlock(mem, 0)).slice(0, 1024);
    await journal.writeBlock(mem, 0, encodeJournalSuperblock({ ...decodeJournalSuperblock(raw), featureCompat: 1 }));
    await assert.rejects(JournaledDisk.open(mem, await Ext4.open(mem), { isFreeAtStart: () => false }), UnsupportedFeatureError);
  });
});
