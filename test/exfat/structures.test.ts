// exFAT structures: one round trip per decode/encode pair, plus the checksums and the name rules.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import '../helpers/setup.ts';
import { CorruptImageError } from '../../src/errors.ts';
import { MemoryDisk } from '../../src/io/disk.ts';
import { bootChecksum, decodeBootSector, encodeBootRegion, encodeBootSector, readBootRegion, type BootSector } from '../../src/fs/exfat/boot.ts';
import {
  decodeBitmapEntry,
  decodeFileEntrySet,
  decodeLabelEntry,
  decodeTimestamp,
  decodeUpcaseEntry,
  encodeBitmapEntry,
  encodeFileEntrySet,
  encodeLabelEntry,
  encodeTimestamp,
  encodeUpcaseEntry,
  invalidNameReason,
  nameHash,
  setChecksum,
  type FileEntrySet,
} from '../../src/fs/exfat/entries.ts';
import { decodeUpcaseTable, defaultUpcaseMappings, encodeUpcaseTable, upcaseChecksum } from '../../src/fs/exfat/upcase.ts';
import { exfatLayout } from '../../src/fs/exfat/mkfs.ts';

const upcase = defaultUpcaseMappings();

const arbBoot: fc.Arbitrary<BootSector> = fc
  .record({ bps: fc.integer({ min: 9, max: 12 }), spc: fc.integer({ min: 0, max: 8 }), clusters: fc.integer({ min: 16, max: 1 << 20 }), serial: fc.nat(0xffffffff), flags: fc.integer({ min: 0, max: 7 }), pct: fc.integer({ min: 0, max: 100 }) })
  .map(({ bps, spc, clusters, serial, flags, pct }) => {
    const ss = 2 ** bps;
    const fatLength = Math.ceil(((clusters + 2) * 4) / ss);
    const heap = 2048 + fatLength;
    const volumeLength = Math.max(heap + clusters * 2 ** spc, Math.ceil(2 ** 20 / ss));
    return { partitionOffset: 0, volumeLength, fatOffset: 2048, fatLength, clusterHeapOffset: heap, clusterCount: clusters, rootCluster: 2 + (serial % clusters), serial, revision: 0x0100, volumeFlags: flags, bytesPerSectorShift: bps, sectorsPerClusterShift: spc, numberOfFats: 1, driveSelect: 0x80, percentInUse: pct };
  });

describe('boot region', () => {
  test('boot sector round trip', () => {
    fc.assert(fc.property(arbBoot, (b) => assert.deepEqual(decodeBootSector(encodeBootSector(b)), b)));
  });
  test('the checksum skips VolumeFlags and PercentInUse and covers every other byte', async () => {
    const b = fc.sample(arbBoot, { numRuns: 1, seed: 7 })[0]!;
    const ss = 2 ** b.bytesPerSectorShift;
    const region = encodeBootRegion(b);
    const sum = bootChecksum(region, ss);
    for (const at of [106, 107, 112]) {
      const copy = region.slice();
      copy[at]! ^= 0x5a;
      assert.equal(bootChecksum(copy, ss), sum);
    }
    for (const at of [100, 120, ss + 3, 9 * ss + 1, 10 * ss]) {
      const copy = region.slice();
      copy[at]! ^= 1;
      assert.notEqual(bootChecksum(copy, ss), sum, `byte ${at}`);
    }
  });
  test('a damaged main region falls back to the backup; both damaged is a typed error', async () => {
    const b = exfatLayout(64 << 20).boot;
    const disk = new MemoryDisk(1 << 20);
    const region = encodeBootRegion(b);
    await disk.write(region, 0);
    await disk.write(region, 12 * 512);
    assert.equal((await readBootRegion(disk)).usedBackup, false);
    await disk.write(Uint8Array.of(0x12), 100);
    const r = await readBootRegion(disk);
    assert.equal(r.usedBackup, true);
    assert.deepEqual(r.boot, b);
    await disk.write(Uint8Array.of(0x12), 12 * 512 + 100);
    await assert.rejects(readBootRegion(disk), (e: unknown) => e instanceof CorruptImageError && e.field === 'BootChecksum');
  });
  test('fields are validated', () => {
    const good = encodeBootSector(exfatLayout(64 << 20).boot);
    const cases: [number, number, string][] = [[108, 8, 'BytesPerSectorShift'], [109, 20, 'SectorsPerClusterShift'], [110, 3, 'NumberOfFats'], [112, 101, 'PercentInUse'], [20, 1, 'MustBeZero'], [0, 0xe9, 'JumpBoot']];
    for (const [at, value, field] of cases) {
      const copy = good.slice();
      copy[at] = value;
      assert.throws(() => decodeBootSector(copy), (e: unknown) => e instanceof CorruptImageError && e.field === field, field);
    }
    const copy = good.slice();
    new DataView(copy.buffer).setUint32(96, 1, true);
    assert.throws(() => decodeBootSector(copy), /FirstClusterOfRootDirectory/);
  });
});

describe('up-case table', () => {
  test('compressed round trip, every unit mapped, and 0x10000 units in total', () => {
    const bytes = encodeUpcaseTable(upcase);
    assert.ok(bytes.byteLength < 4000, `compressed to ${bytes.byteLength} bytes`);
    assert.deepEqual(decodeUpcaseTable(bytes, upcaseChecksum(bytes)), upcase);
    assert.equal(upcase['a'.charCodeAt(0)], 'A'.charCodeAt(0));
    assert.equal(upcase[0xe9], 0xc9);
    assert.equal(upcase[0x3c9], 0x3a9);
    assert.equal(upcase[0x131], 0x131, 'dotless i does not map into ASCII');
    assert.equal(upcase[0x4e00], 0x4e00);
  });
  test('any table round-trips through the compressed form', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.nat(0xffff), fc.nat(0xfffe)), { maxLength: 64 }), (pairs) => {
        const t = new Uint16Array(0x10000).map((_, i) => i);
        for (const [k, v] of pairs) t[k] = v;
        const bytes = encodeUpcaseTable(t);
        assert.deepEqual(decodeUpcaseTable(bytes, upcaseChecksum(bytes)), t);
      }),
      { numRuns: 30 },
    );
    const t = new Uint16Array(0x10000).map((_, i) => i);
    t[0xffff] = 0;
    const bytes = encodeUpcaseTable(t);
    assert.deepEqual(decodeUpcaseTable(bytes, upcaseChecksum(bytes)), t);
    t[0x41] = 0xffff;
    assert.throws(() => encodeUpcaseTable(t), /run marker/);
  });
  test('the plain form (as mkfs.exfat writes) decodes; a wrong checksum is refused', () => {
    const plain = new Uint8Array(0x20000);
    const dv = new DataView(plain.buffer);
    for (let i = 0; i < 0x10000; i++) dv.setUint16(i * 2, upcase[i]!, true);
    assert.deepEqual(decodeUpcaseTable(plain, upcaseChecksum(plain)), upcase);
    assert.throws(() => decodeUpcaseTable(plain, upcaseChecksum(plain) ^ 1), (e: unknown) => e instanceof CorruptImageError && /TableChecksum/.test(e.field));
  });
});

const arbName = fc
  .array(fc.oneof(fc.constantFrom(...'abcXYZ09 ._-éßЖ𝄞中'.split('')), fc.string({ minLength: 1, maxLength: 3 })), { minLength: 1, maxLength: 60 })
  .map((parts) => parts.join('').slice(0, 255))
  .filter((n) => invalidNameReason(n) === undefined);

const arbSet: fc.Arbitrary<FileEntrySet> = fc
  .record({
    name: arbName,
    attributes: fc.constantFrom(0x10, 0x20, 0x21),
    t: fc.integer({ min: Date.UTC(1980, 0, 1), max: Date.UTC(2100, 0, 1) }),
    noFat: fc.boolean(),
    len: fc.nat(Number.MAX_SAFE_INTEGER),
    vdlFrac: fc.double({ min: 0, max: 1, noNaN: true }),
    cluster: fc.integer({ min: 2, max: 0xfffffff6 }),
    extra: fc.boolean(),
  })
  .map(({ name, attributes, t, noFat, len, vdlFrac, cluster, extra }) => {
    const ts = encodeTimestamp(t);
    return {
      name,
      attributes,
      created: ts,
      modified: encodeTimestamp(t + 1230),
      accessed: { ...ts, increment10ms: 0 },
      secondaryFlags: 1 | (noFat ? 2 : 0),
      nameHash: nameHash(name, upcase),
      validDataLength: Math.floor(len * vdlFrac),
      firstCluster: len === 0 ? 0 : cluster,
      dataLength: len,
      extra: extra ? [Uint8Array.from({ length: 32 }, (_, i) => (i === 0 ? 0xe0 : i))] : [],
    };
  });

describe('directory entries', () => {
  test('file entry set round trip (name, hash, checksum, lengths, flags, timestamps, vendor entries)', () => {
    fc.assert(fc.property(arbSet, (s) => assert.deepEqual(decodeFileEntrySet(encodeFileEntrySet(s), upcase), s)));
  });
  test('a changed byte anywhere in the set fails the set checksum', () => {
    fc.assert(
      fc.property(arbSet, fc.nat(), (s, pick) => {
        const bytes = encodeFileEntrySet(s);
        let at = pick % bytes.byteLength;
        if (at === 2 || at === 3) at = 4;
        bytes[at]! ^= 0x40;
        assert.throws(() => decodeFileEntrySet(bytes, upcase), (e: unknown) => e instanceof CorruptImageError);
      }),
    );
  });
  test('set checksum and name hash values, case-insensitive hash', () => {
    const set = encodeFileEntrySet(fc.sample(arbSet, { numRuns: 1, seed: 3 })[0]!);
    assert.equal(new DataView(set.buffer).getUint16(2, true), setChecksum(set));
    assert.equal(nameHash('Readme.TXT', upcase), nameHash('README.txt', upcase));
    assert.notEqual(nameHash('README.txt', upcase), nameHash('README.txu', upcase));
  });
  test('a wrong name hash and a ValidDataLength above DataLength are refused', () => {
    const s = fc.sample(arbSet, { numRuns: 1, seed: 4 })[0]!;
    assert.throws(() => decodeFileEntrySet(encodeFileEntrySet({ ...s, nameHash: s.nameHash ^ 1 }), upcase), /NameHash/);
    assert.throws(() => decodeFileEntrySet(encodeFileEntrySet({ ...s, dataLength: 100, firstCluster: 5, validDataLength: 101 }), upcase), /ValidDataLength/);
  });
  test('timestamps keep 10 ms resolution and read UTC offsets', () => {
    fc.assert(
      fc.property(fc.integer({ min: Date.UTC(1980, 0, 1), max: Date.UTC(2107, 11, 31) }), (ms) => {
        const t = decodeTimestamp(encodeTimestamp(ms));
        assert.equal(t.sec * 1000 + t.nsec / 1e6, Math.floor(ms / 10) * 10);
      }),
    );
    const t = encodeTimestamp(Date.UTC(2024, 5, 1, 12, 0, 0));
    // The same wall-clock time written at UTC+02:00 (8 × 15 min) is two hours earlier.
    assert.equal(decodeTimestamp({ ...t, utcOffset: 0x80 | 8 }).sec, Date.UTC(2024, 5, 1, 10, 0, 0) / 1000);
    assert.equal(decodeTimestamp({ ...t, utcOffset: 0x80 | 0x7c }).sec, Date.UTC(2024, 5, 1, 13, 0, 0) / 1000);
  });
  test('bitmap, up-case and label entries round trip', () => {
    const b = { flags: 0, firstCluster: 2, dataLength: 12345 };
    assert.deepEqual(decodeBitmapEntry(encodeBitmapEntry(b)), b);
    const u = { checksum: 0xe619d30d, firstCluster: 3, dataLength: 5836 };
    assert.deepEqual(decodeUpcaseEntry(encodeUpcaseEntry(u)), u);
    for (const l of ['', 'LIVE', 'Ventoy', 'ÜNÏ中文LABEL'.slice(0, 11)]) assert.equal(decodeLabelEntry(encodeLabelEntry(l)), l);
    const bad = encodeLabelEntry('X');
    bad[1] = 12;
    assert.throws(() => decodeLabelEntry(bad), /CharacterCount/);
  });
  test('name rules', () => {
    for (const n of ['a/b', 'a:b', 'a*', 'x\u0001', '', '.', '..', 'x'.repeat(256)]) assert.ok(invalidNameReason(n), n);
    for (const n of ['a b', 'ü', 'x'.repeat(255), 'name.with.dots']) assert.equal(invalidNameReason(n), undefined, n);
  });
});

describe('mkfs layout (mkfs.exfat figures)', () => {
  test('cluster size, FAT, heap and cluster count as exfatprogs 1.2 chooses them', () => {
    // Figures read from images mkfs.exfat 1.2.0 made of these sizes.
    const expect: [number, number, number, number, number][] = [
      [8 << 20, 3, 16, 4096, 1536],
      [64 << 20, 3, 128, 4096, 15872],
      [300 << 20, 6, 128, 4096, 9536],
      [6 * 2 ** 30, 6, 1536, 4096, 196544],
      [40 * 2 ** 30, 8, 2560, 6144, 327656],
    ];
    for (const [size, spc, fatLength, heap, clusters] of expect) {
      const { boot } = exfatLayout(size);
      assert.deepEqual([boot.sectorsPerClusterShift, boot.fatOffset, boot.fatLength, boot.clusterHeapOffset, boot.clusterCount], [spc, 2048, fatLength, heap, clusters], `size ${size}`);
    }
  });
});
