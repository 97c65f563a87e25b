/**
 * Partition tables: round trips per structure, both GPT copies and their CRCs, the EBR chain's bounds
 * and cycles, writers' determinism, crash order and the never-inside-a-partition rule, and a property
 * test of addPartition against a list of what was added.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { crc32 } from 'node:zlib';
import fc from 'fast-check';
import '../helpers/setup.ts';
import { MemoryDisk, type Disk } from '../../src/io/disk.ts';
import { CorruptImageError, UsageError } from '../../src/errors.ts';
import { decodeGuid, encodeGuid } from '../../src/fs/ptable/types.ts';
import { decodeMbr, encodeMbr, mbrEntry, lbaToChs, type MbrEntry } from '../../src/fs/ptable/mbr.ts';
import { decodeGptEntries, decodeGptHeader, encodeGptEntries, encodeGptHeader, GPT_REVISION, type GptEntry, type GptHeader } from '../../src/fs/ptable/gpt.ts';
import { addPartition, createGpt, moveBackupToEnd, partitionDisk, readPartitionTable } from '../../src/fs/ptable/index.ts';
import { DISK_GUID, gptDisk, mbrDisk, mbrOf } from './fixture.ts';

const guidArb = fc.uint8Array({ minLength: 16, maxLength: 16 }).map(decodeGuid);

test('GUIDs: the mixed-endian on-disk form', () => {
  const efi = Uint8Array.from([0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9, 0x3b]);
  assert.equal(decodeGuid(efi), 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B');
  assert.deepEqual(encodeGuid('c12a7328-f81f-11d2-ba4b-00a0c93ec93b'), efi);
  fc.assert(fc.property(fc.uint8Array({ minLength: 16, maxLength: 16 }), (b) => assert.deepEqual(encodeGuid(decodeGuid(b)), b)));
  assert.throws(() => encodeGuid('not-a-guid'), UsageError);
});

const chsArb = fc.tuple(fc.integer({ min: 0, max: 255 }), fc.integer({ min: 0, max: 255 }), fc.integer({ min: 0, max: 255 }));
const mbrEntryArb: fc.Arbitrary<MbrEntry> = fc.record({
  status: fc.integer({ min: 0, max: 255 }),
  startChs: chsArb,
  type: fc.integer({ min: 0, max: 255 }),
  endChs: chsArb,
  startLba: fc.nat({ max: 0xffffffff }),
  sectors: fc.nat({ max: 0xffffffff }),
}, { noNullPrototype: true });

test('MBR: decode(encode(x)) is x, encode(decode(bytes)) is bytes', () => {
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 440, maxLength: 440 }), fc.nat({ max: 0xffffffff }), fc.nat({ max: 0xffff }), fc.array(mbrEntryArb, { minLength: 4, maxLength: 4 }), (bootCode, diskSignature, reserved, entries) => {
        const mbr = { bootCode, diskSignature, reserved, entries: entries as [MbrEntry, MbrEntry, MbrEntry, MbrEntry] };
        const bytes = encodeMbr(mbr);
        assert.deepEqual(decodeMbr(bytes), mbr);
        assert.deepEqual(encodeMbr(decodeMbr(bytes)), bytes);
      }),
  );
  assert.throws(() => decodeMbr(new Uint8Array(512)), CorruptImageError);
  assert.deepEqual(lbaToChs(2048), [32, 33, 0]);
  assert.deepEqual(lbaToChs(2 ** 31), [0xfe, 0xff, 0xff]);
});

const headerArb = (diskSectors: number): fc.Arbitrary<GptHeader> =>
  fc.record({
    revision: fc.constant(GPT_REVISION),
    headerSize: fc.constant(92),
    myLba: fc.integer({ min: 1, max: diskSectors - 1 }),
    alternateLba: fc.integer({ min: 1, max: diskSectors - 1 }),
    firstUsableLba: fc.integer({ min: 34, max: 1000 }),
    lastUsableLba: fc.integer({ min: 1000, max: diskSectors - 1 }),
    diskGuid: guidArb,
    entriesLba: fc.constant(2),
    entryCount: fc.integer({ min: 1, max: 256 }),
    entrySize: fc.constantFrom(128, 256),
    entriesCrc: fc.nat({ max: 0xffffffff }),
    extra: fc.constant(new Uint8Array(0)),
  }, { noNullPrototype: true }).filter((h) => h.myLba !== 2 && (h.myLba < 2 || h.myLba >= 2 + Math.ceil((h.entryCount * h.entrySize) / 512)));

test('GPT header: round trip with its CRC; a flipped byte is a typed error (the CRC, or the size field it depends on)', () => {
  const diskSectors = 1 << 20;
  fc.assert(
    fc.property(headerArb(diskSectors), fc.nat({ max: 91 }), (h, flip) => {
      const bytes = encodeGptHeader(h, 512);
      assert.deepEqual(decodeGptHeader(bytes, 512, diskSectors), h);
      assert.deepEqual(encodeGptHeader(decodeGptHeader(bytes, 512, diskSectors), 512), bytes);
      bytes[flip] = bytes[flip]! ^ 0x01;
      assert.throws(() => decodeGptHeader(bytes, 512, diskSectors), CorruptImageError);
    }),
  );
});

const entryArb: fc.Arbitrary<GptEntry> = fc.record({
  typeGuid: guidArb.filter((g) => g !== '00000000-0000-0000-0000-000000000000'),
  uniqueGuid: guidArb,
  firstLba: fc.nat({ max: 2 ** 40 }),
  lastLba: fc.nat({ max: 2 ** 40 }),
  attributes: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
  name: fc.string({ maxLength: 36, unit: fc.integer({ min: 1, max: 0xd7ff }).map((c) => String.fromCharCode(c)) }),
}, { noNullPrototype: true });

test('GPT entry array: round trip and its CRC', () => {
  fc.assert(
    fc.property(fc.array(entryArb, { minLength: 1, maxLength: 8 }), fc.constantFrom(128, 256), (entries, entrySize) => {
      const array = encodeGptEntries(entries, entrySize);
      const header = { entryCount: entries.length, entrySize, entriesCrc: 0 };
      const crc = crc32(array);
      assert.deepEqual(decodeGptEntries(array, { ...header, entriesCrc: crc }), entries);
      array[array.length - 1] = array[array.length - 1]! ^ 1;
      assert.throws(() => decodeGptEntries(array, { ...header, entriesCrc: crc }), CorruptImageError);
    }),
  );
});

function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

test('a GPT livestick writes reads back, and the same input gives the same bytes (pinned)', async () => {
  for (const ss of [512, 4096] as const) {
    const disk = await gptDisk(ss);
    const t = await readPartitionTable(disk);
    assert.equal(t.kind, 'gpt');
    assert.equal(t.sectorSize, ss);
    assert.deepEqual(t.problems, []);
    assert.equal(t.mbr!.role, 'protective');
    assert.deepEqual(t.partitions.map((p) => [p.index, p.startBytes, p.sizeBytes, p.typeName, p.name]), [
      [1, 1 << 20, 2 << 20, 'EFI System', 'EFI'],
      [2, 3 << 20, 4 << 20, 'Linux filesystem', 'root'],
      [3, 7 << 20, 1 << 20, 'Linux swap', 'swäp'],
    ]);
    assert.equal(sha256(disk.bytes), sha256((await gptDisk(ss)).bytes));
  }
  assert.equal(sha256((await gptDisk(512)).bytes), PINNED_GPT_512);
});
const PINNED_GPT_512 = '65f5563d1f2d0763089de374abe6f54fbfb384148aaa2c2d5e99bd34d179799e';

test('4096-byte GPT detected without being told; a 512 reading of it is not attempted as MBR', async () => {
  const disk = await gptDisk(4096);
  const t = await readPartitionTable(disk);
  assert.equal(t.sectorSize, 4096);
  const told = await readPartitionTable(disk, { sectorSize: 4096 });
  assert.deepEqual(told.partitions, t.partitions);
});

test('a bad CRC in one copy: the other copy is used and the problem reported; both bad: a typed error', async () => {
  const ss = 512;
  const corruptPrimaryHeader = await gptDisk();
  corruptPrimaryHeader.bytes[ss + 40] = corruptPrimaryHeader.bytes[ss + 40]! ^ 0xff;
  let t = await readPartitionTable(corruptPrimaryHeader);
  assert.equal(t.gpt!.used, 'backup');
  assert.equal(t.partitions.length, 3);
  assert.ok(t.problems.some((p) => /primary GPT is unusable.*header_crc32/.test(p)), t.problems.join('\n'));

  const corruptBackupEntries = await gptDisk();
  const last = corruptBackupEntries.size / ss - 1;
  corruptBackupEntries.bytes[(last - 32) * ss + 60] = corruptBackupEntries.bytes[(last - 32) * ss + 60]! ^ 0xff;
  t = await readPartitionTable(corruptBackupEntries);
  assert.equal(t.gpt!.used, 'primary');
  assert.ok(t.problems.some((p) => /backup GPT is unusable.*array_crc32/.test(p)), t.problems.join('\n'));

  const wipedPrimary = await gptDisk();
  wipedPrimary.bytes.fill(0, ss, 34 * ss);
  t = await readPartitionTable(wipedPrimary);
  assert.equal(t.gpt!.used, 'backup');
  assert.equal(t.partitions.length, 3);

  const both = await gptDisk();
  both.bytes[ss + 40] = both.bytes[ss + 40]! ^ 0xff;
  both.bytes[(last - 32) * ss + 60] = both.bytes[(last - 32) * ss + 60]! ^ 0xff;
  await assert.rejects(readPartitionTable(both), CorruptImageError);
});

test('addPartition repairs from the usable copy: both copies valid afterwards', async () => {
  const disk = await gptDisk();
  disk.bytes[512 + 40] = disk.bytes[512 + 40]! ^ 0xff;
  const t = await addPartition(disk, await readPartitionTable(disk), { type: 'linux-home' });
  assert.equal(t.gpt!.primaryValid && t.gpt!.backupValid, true);
  assert.deepEqual(t.problems, []);
  assert.equal(t.partitions.length, 4);
});

test('MBR: primaries 1-4 by slot, logicals 5+ in chain order; partitionDisk gives their bytes', async () => {
  const disk = await mbrDisk(3);
  const t = await readPartitionTable(disk);
  assert.equal(t.kind, 'mbr');
  assert.deepEqual(t.problems, []);
  assert.deepEqual(t.partitions.map((p) => [p.index, p.startBytes >> 20, p.sizeBytes >> 20, p.type]), [
    [1, 1, 1, 0x0c], [2, 2, 6, 0x0f], [3, 8, 1, 0x83], [5, 3, 1, 0x83], [6, 5, 1, 0x82], [7, 7, 1, 0x83],
  ]);
  assert.equal(t.partitions[0]!.bootable, true);
  await disk.write(new Uint8Array([1, 2, 3]), 5 << 20);
  const p6 = partitionDisk(disk, t.partitions.find((p) => p.index === 6)!);
  const got = new Uint8Array(3);
  await p6.read(got, 0);
  assert.deepEqual(got, new Uint8Array([1, 2, 3]));
  const t4k = await readPartitionTable(await mbrDisk(2, 4096), { sectorSize: 4096 });
  assert.deepEqual(t4k.partitions.map((p) => [p.index, p.startBytes >> 20]), [[1, 1], [2, 2], [3, 6], [5, 3], [6, 5]]);
});

test('EBR chain: a loop, a link out of the extended partition and a bad signature end the walk with a problem', async () => {
  const mib = 2048;
  const loop = await mbrDisk(3);
  // The third EBR links back to the first.
  await loop.write(encodeMbr({ ...mbrOf([mbrEntry(0x83, mib, mib), mbrEntry(0x05, 0, 2 * mib)], 0) }), 6 * mib * 512);
  let t = await readPartitionTable(loop);
  assert.deepEqual(t.partitions.filter((p) => p.logical).map((p) => p.index), [5, 6, 7]);
  assert.ok(t.problems.some((p) => /loops back/.test(p)), t.problems.join('\n'));

  const outside = await mbrDisk(2);
  await outside.write(encodeMbr(mbrOf([mbrEntry(0x83, mib, mib), mbrEntry(0x05, 100 * mib, 2 * mib)], 0)), 2 * mib * 512);
  t = await readPartitionTable(outside);
  assert.equal(t.partitions.filter((p) => p.logical).length, 1);
  assert.ok(t.problems.some((p) => /outside the extended partition/.test(p)), t.problems.join('\n'));

  const unsigned = await mbrDisk(2);
  unsigned.bytes[4 * mib * 512 + 510] = 0;
  t = await readPartitionTable(unsigned);
  assert.equal(t.partitions.filter((p) => p.logical).length, 1);
  assert.ok(t.problems.some((p) => /no 0x55aa signature/.test(p)));
});

test('problems: overlapping partitions and partitions past the end are reported, not thrown', async () => {
  const disk = new MemoryDisk(8 << 20);
  await disk.write(encodeMbr(mbrOf([mbrEntry(0x83, 2048, 4096), mbrEntry(0x83, 4096, 4096), mbrEntry(0x07, 12000, 8000)])), 0);
  const t = await readPartitionTable(disk);
  assert.equal(t.partitions.length, 3);
  assert.ok(t.problems.some((p) => /partitions 1 and 2 overlap/.test(p)));
  assert.ok(t.problems.some((p) => /partition 3 .* runs past the disk's end/.test(p)));
  assert.throws(() => partitionDisk(disk, t.partitions[2]!), CorruptImageError);
});

test('no table: an empty disk, a FAT superfloppy, a tiny disk', async () => {
  assert.equal((await readPartitionTable(new MemoryDisk(1 << 20))).kind, 'none');
  assert.equal((await readPartitionTable(new MemoryDisk(100))).kind, 'none');
  const fat = new MemoryDisk(1 << 20);
  fat.bytes.set([0xeb, 0x58, 0x90], 0);
  fat.bytes.set(new TextEncoder().encode('FAT32   '), 82);
  fat.bytes.set(new TextEncoder().encode('This is not a bootable disk'), 446);
  fat.bytes.set([0x55, 0xaa], 510);
  assert.equal((await readPartitionTable(fat)).kind, 'none');
});

test('moveBackupToEnd on a grown disk: the backup moves, the usable range grows, the primary entries are untouched', async () => {
  const disk = await gptDisk();
  const entriesBefore = disk.bytes.slice(1024, 34 * 512);
  await disk.resize(32 << 20);
  const before = await readPartitionTable(disk);
  assert.equal(before.gpt!.backupAtEnd, false);
  assert.ok(before.problems.some((p) => /not at the disk's last sector/.test(p)));
  const moved = await moveBackupToEnd(disk, before);
  assert.deepEqual(moved.problems, []);
  assert.equal(moved.gpt!.backupLba, (32 << 11) - 1);
  assert.equal(moved.gpt!.lastUsableLba, (32 << 11) - 34);
  assert.equal(moved.mbr!.value.entries[0].sectors, (32 << 11) - 1);
  assert.deepEqual(disk.bytes.slice(1024, 34 * 512), entriesBefore);
  const added = await addPartition(disk, moved, { type: 'linux-filesystem' });
  assert.equal(added.partitions[3]!.startBytes, 8 << 20);
  assert.equal(added.partitions[3]!.startLba + added.partitions[3]!.sectors - 1, (32 << 11) - 34);
});

/** Records writes so a crash after any prefix of them can be replayed. */
class RecordingDisk extends MemoryDisk {
  readonly writes: { bytes: Uint8Array; offset: number }[] = [];
  override async write(buf: Uint8Array, offset: number): Promise<void> {
    this.writes.push({ bytes: buf.slice(), offset });
    await super.write(buf, offset);
  }
}

test('crash order: after every prefix of the writes, one GPT copy is valid and shows the old or the new table', async () => {
  for (const op of ['add', 'move'] as const) {
    const base = await gptDisk();
    const size = op === 'move' ? 24 << 20 : base.size;
    const original = new Uint8Array(size);
    original.set(base.bytes);
    const disk = new RecordingDisk(original.slice());
    const before = await readPartitionTable(disk);
    const after = op === 'add' ? await addPartition(disk, before, { type: 'linux-home' }) : await moveBackupToEnd(disk, before);
    assert.ok(disk.writes.length >= 4);
    for (let k = 0; k <= disk.writes.length; k++) {
      const replay = new MemoryDisk(original.slice());
      for (const w of disk.writes.slice(0, k)) await replay.write(w.bytes, w.offset);
      const t = await readPartitionTable(replay);
      const shown = JSON.stringify(t.partitions, (_k, v) => (typeof v === 'bigint' ? String(v) : v));
      const options = [before, after].map((x) => JSON.stringify(x.partitions, (_k, v) => (typeof v === 'bigint' ? String(v) : v)));
      assert.ok(options.includes(shown), `${op}: after ${k} writes`);
    }
  }
});

test('never a byte inside a partition: a partition over the backup area makes writes refuse', async () => {
  const disk = await gptDisk();
  const t = await readPartitionTable(disk);
  const gpt = t.gpt!;
  const entries = gpt.entries.map((e, i) => (i === 2 ? { ...e, firstLba: gpt.backupLba - 32, lastLba: gpt.backupLba } : e));
  const array = encodeGptEntries(entries);
  const crc = crc32(array);
  for (const lba of [1, gpt.backupLba]) {
    const h = decodeGptHeader(disk.bytes.slice(lba * 512, lba * 512 + 512), 512, t.diskSectors);
    await disk.write(array, h.entriesLba * 512);
    await disk.write(encodeGptHeader({ ...h, entriesCrc: crc }, 512), lba * 512);
  }
  const bad = await readPartitionTable(disk);
  assert.ok(bad.problems.some((p) => /outside the usable range/.test(p)));
  const snapshot = disk.bytes.slice();
  await assert.rejects(addPartition(disk, bad, { sizeBytes: 1 << 20, type: 'linux-filesystem' }), UsageError);
  assert.ok(Buffer.from(disk.bytes).equals(snapshot));
});

test('a stale table is refused', async () => {
  const disk = await gptDisk();
  const t = await readPartitionTable(disk);
  await addPartition(disk, t, { sizeBytes: 1 << 20, type: 'linux-filesystem' });
  await assert.rejects(addPartition(disk, t, { sizeBytes: 1 << 20, type: 'linux-filesystem' }), UsageError);
});

test('property: added partitions never overlap, are 1 MiB aligned, inside the usable range, and read back as added', async () => {
  await fc.assert(
    fc.asyncProperty(fc.constantFrom(512, 4096), fc.array(fc.option(fc.integer({ min: 1, max: 6 << 20 }), { nil: undefined }), { minLength: 1, maxLength: 6 }), async (ss, sizes) => {
      const disk: Disk = new MemoryDisk(24 << 20);
      let t = await createGpt(disk, { diskGuid: DISK_GUID, sectorSize: ss as 512 | 4096 });
      const model: { sectors: number | undefined }[] = [];
      for (const size of sizes) {
        try {
          t = await addPartition(disk, t, { sizeBytes: size, type: 'linux-filesystem', name: `p${model.length}` });
          model.push({ sectors: size === undefined ? undefined : Math.ceil(size / ss) });
        } catch (err) {
          assert.equal((err as { code?: string }).code, 'NO_SPACE');
        }
      }
      assert.deepEqual(t.problems, []);
      assert.equal(t.partitions.length, model.length);
      t.partitions.forEach((p, i) => {
        assert.equal(p.name, `p${i}`);
        assert.equal(p.startBytes % (1 << 20), 0);
        if (model[i]!.sectors !== undefined) assert.equal(p.sectors, model[i]!.sectors);
        assert.ok(p.startLba >= t.gpt!.firstUsableLba && p.startLba + p.sectors - 1 <= t.gpt!.lastUsableLba);
      });
      const sorted = [...t.partitions].sort((a, b) => a.startLba - b.startLba);
      for (let i = 1; i < sorted.length; i++) assert.ok(sorted[i - 1]!.startLba + sorted[i - 1]!.sectors <= sorted[i]!.startLba);
    }),
    { numRuns: 40 },
  );
});
