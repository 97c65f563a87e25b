/** Round trips of every ISO9660 structure codec, and the checks each decoder makes. */
import '../helpers/setup.ts';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { CorruptImageError } from '../../src/errors.ts';
import { decodeDescriptor, encodeDescriptor, type VolumeDescriptor } from '../../src/fs/iso9660/descriptor.ts';
import { decodeRecord, encodeRecord, splitRecords, FLAG_DIRECTORY, FLAG_MULTI_EXTENT } from '../../src/fs/iso9660/record.ts';
import * as susp from '../../src/fs/iso9660/susp.ts';
import * as et from '../../src/fs/iso9660/eltorito.ts';
import { decodeLongDate, decodeShortDate, encodeLongDate, encodeShortDate } from '../../src/fs/iso9660/format.ts';

const u32 = fc.integer({ min: 0, max: 0xffffffff });
const u16 = fc.integer({ min: 0, max: 0xffff });
const u8 = fc.integer({ min: 0, max: 255 });
const time = fc.integer({ min: Date.UTC(1970, 0, 1) / 1000, max: Date.UTC(2155, 11, 31) / 1000 }).map((sec) => ({ sec, nsec: 0 }));
const throwsCorrupt = (fn: () => unknown, field: RegExp) => assert.throws(fn, (e: unknown) => e instanceof CorruptImageError && field.test(e.field));

test('iso9660 codecs: dates round-trip (7-byte, 17-byte with centiseconds) and bad ones are corrupt', () => {
  fc.assert(fc.property(time, fc.integer({ min: -48, max: 52 }), (t, gmt) => assert.deepEqual(decodeShortDate(encodeShortDate(t, gmt), 0, 'd'), t)));
  fc.assert(fc.property(time, fc.integer({ min: 0, max: 99 }), (t, cs) => assert.deepEqual(decodeLongDate(encodeLongDate({ sec: t.sec, nsec: cs * 1e7 }), 0, 'd'), { sec: t.sec, nsec: cs * 1e7 })));
  assert.equal(decodeLongDate(encodeLongDate(undefined), 0, 'd'), undefined);
  throwsCorrupt(() => decodeShortDate(Uint8Array.of(100, 13, 1, 0, 0, 0, 0), 0, 'record.date'), /record.date/);
  throwsCorrupt(() => decodeShortDate(Uint8Array.of(100, 1, 1, 0, 0, 0, 60), 0, 'record.date'), /record.date/);
});

const recordArb = fc.record({
  extAttrLength: u8,
  extent: u32,
  dataLength: u32,
  recorded: time,
  flags: fc.constantFrom(0, FLAG_DIRECTORY, FLAG_MULTI_EXTENT, 1),
  fileUnitSize: u8,
  interleaveGap: u8,
  volumeSequence: u16,
  name: fc.uint8Array({ minLength: 1, maxLength: 60 }),
  systemUse: fc.uint8Array({ maxLength: 150 }),
});

test('iso9660 codecs: directory records round-trip; a length below 34, a name past the record or differing copies are corrupt', () => {
  fc.assert(
    fc.property(recordArb, (r) => {
      const b = encodeRecord(r);
      const d = decodeRecord(b);
      assert.deepEqual({ ...d, systemUse: d.systemUse.subarray(0, r.systemUse.byteLength) }, { ...r, isDirectory: (r.flags & 2) !== 0, multiExtent: (r.flags & 0x80) !== 0 });
      assert.deepEqual(encodeRecord(d), b);
    }),
  );
  const b = encodeRecord({ extAttrLength: 0, extent: 20, dataLength: 2048, recorded: { sec: 0, nsec: 0 }, flags: 0, fileUnitSize: 0, interleaveGap: 0, volumeSequence: 1, name: Uint8Array.of(65), systemUse: new Uint8Array() });
  throwsCorrupt(() => decodeRecord(b.subarray(0, 33)), /record.length/);
  const bad = b.slice();
  bad[9]! ^= 1;
  throwsCorrupt(() => decodeRecord(bad), /record.extent/);
  const long = b.slice();
  long[32] = 200;
  throwsCorrupt(() => decodeRecord(long), /record.nameLength/);
  const big = encodeRecord({ ...decodeRecord(b), systemUse: new Uint8Array(216) });
  assert.equal(big.byteLength, 250);
  const sectors = new Uint8Array(4096);
  for (let i = 0; i < 9; i++) sectors.set(big, i * 250); // the ninth crosses into the second sector
  throwsCorrupt(() => [...splitRecords(sectors, 0, 2048)].length, /record.length/);
  assert.equal([...splitRecords(sectors.slice(0, 4096).fill(0, 2000), 0, 2048)].length, 8); // zero padding ends a sector
  throwsCorrupt(() => [...splitRecords(b.subarray(0, b.byteLength - 2), 0, 2048)].length, /record.length/);
});

test('iso9660 codecs: volume descriptors round-trip (primary, Joliet levels 1-3, boot record, terminator)', () => {
  const root = decodeRecord(encodeRecord({ extAttrLength: 0, extent: 20, dataLength: 2048, recorded: { sec: 1e9, nsec: 0 }, flags: FLAG_DIRECTORY, fileUnitSize: 0, interleaveGap: 0, volumeSequence: 1, name: Uint8Array.of(0), systemUse: new Uint8Array() }));
  const text = (n: number) => fc.string({ unit: fc.constantFrom('A', 'Z', '_', '1'), maxLength: n });
  fc.assert(
    fc.property(fc.constantFrom(0, 1, 2, 3), text(32), text(32), u32, fc.constantFrom(512, 1024, 2048), time, (joliet, systemId, volumeId, blocks, blockSize, t) => {
      const d: VolumeDescriptor = { type: joliet ? 'supplementary' : 'primary', jolietLevel: joliet, systemId, volumeId, volumeBlocks: blocks, blockSize, pathTableSize: 10, pathTableL: 19, pathTableM: 21, root, volumeSetId: 'SET', publisherId: 'P', preparerId: 'Q', applicationId: 'R', created: t, modified: t, dateDigits: undefined };
      const back = decodeDescriptor(encodeDescriptor(d));
      assert.deepEqual({ ...back, dateDigits: undefined }, d);
    }),
  );
  assert.deepEqual(decodeDescriptor(encodeDescriptor({ type: 'boot', systemId: 'EL TORITO SPECIFICATION', catalogSector: 33 })), { type: 'boot', systemId: 'EL TORITO SPECIFICATION', catalogSector: 33 });
  assert.deepEqual(decodeDescriptor(encodeDescriptor({ type: 'terminator' })), { type: 'terminator' });
  const pvd = encodeDescriptor({ type: 'terminator' });
  pvd[3] = 0x58;
  throwsCorrupt(() => decodeDescriptor(pvd), /standardId/);
});

test('iso9660 codecs: SUSP and Rock Ridge entries round-trip', () => {
  const entry = (b: Uint8Array) => {
    const all = susp.decodeEntries(b);
    assert.equal(all.length, 1);
    return all[0]!;
  };
  fc.assert(
    fc.property(u32, u32, u32, u32, fc.option(u32, { nil: undefined }), (mode, nlink, uid, gid, ino) => {
      assert.deepEqual(susp.decodePX(entry(susp.encodePX({ mode, nlink, uid, gid, ino }))), { mode, nlink, uid, gid, ino });
    }),
  );
  fc.assert(fc.property(u32, u32, u32, (block, offset, length) => assert.deepEqual(susp.decodeCE(entry(susp.encodeCE({ block, offset, length }))), { block, offset, length })));
  fc.assert(fc.property(u32, u32, (high, low) => assert.deepEqual(susp.decodePN(entry(susp.encodePN({ high, low }))), { high, low })));
  fc.assert(fc.property(u8, (skip) => assert.deepEqual(susp.decodeSP(entry(susp.encodeSP({ skip }))), { skip })));
  fc.assert(fc.property(fc.constantFrom(0, 1, 2, 4), fc.uint8Array({ maxLength: 200 }), (flags, name) => assert.deepEqual(susp.decodeNM(entry(susp.encodeNM({ flags, name }))), { flags, name })));
  fc.assert(fc.property(u32, (block) => assert.equal(susp.decodeLink(entry(susp.encodeLink('CL', block))), block)));
  const comp = fc.oneof(fc.record({ flags: fc.constantFrom(0, 1), content: fc.uint8Array({ maxLength: 30 }) }), fc.record({ flags: fc.constantFrom(2, 4, 8), content: fc.constant(new Uint8Array()) }));
  fc.assert(fc.property(fc.constantFrom(0, 1), fc.array(comp, { maxLength: 6 }), (flags, components) => assert.deepEqual(susp.decodeSL(entry(susp.encodeSL({ flags, components }))), { flags, components: components.map((c) => ({ ...c })) })));
  fc.assert(
    fc.property(fc.boolean(), fc.option(time, { nil: undefined }), fc.option(time, { nil: undefined }), fc.option(time, { nil: undefined }), (long, modify, access, attributes) => {
      const tf = { long, ...(modify && { modify }), ...(access && { access }), ...(attributes && { attributes }) };
      assert.deepEqual(susp.decodeTF(entry(susp.encodeTF(tf))), tf);
    }),
  );
  const er = { id: 'RRIP_1991A', descriptor: 'THE ROCK RIDGE INTERCHANGE PROTOCOL', source: 'SEE IEEE P1282', extensionVersion: 1 };
  assert.deepEqual(susp.decodeER(entry(susp.encodeER(er))), er);
  throwsCorrupt(() => susp.decodeSP(entry(susp.encodeEntry('SP', Uint8Array.of(0xbe, 0xee, 0)))), /SP.check/);
  throwsCorrupt(() => susp.decodePX(entry(susp.encodeEntry('PX', new Uint8Array(10)))), /PX/);
  throwsCorrupt(() => susp.decodeEntries(Uint8Array.of(0x50, 0x58, 40, 1, 0, 0)), /PX.length/);
  throwsCorrupt(() => susp.decodeSL(entry(susp.encodeEntry('SL', Uint8Array.of(0, 8, 3, 1, 2, 3)))), /SL.component/);
});

test('iso9660 codecs: Rock Ridge folding: NM continuation, SL components across entries, RE, CL', () => {
  const e = (...parts: Uint8Array[]) => susp.decodeEntries(Uint8Array.from(parts.flatMap((p) => [...p])));
  const enc = (s: string) => new TextEncoder().encode(s);
  const rr = susp.rockRidge(e(susp.encodeNM({ flags: 1, name: enc('long') }), susp.encodeNM({ flags: 0, name: enc('name') }), susp.encodeSL({ flags: 1, components: [{ flags: 8, content: new Uint8Array() }, { flags: 1, content: enc('us') }] }), susp.encodeSL({ flags: 0, components: [{ flags: 0, content: enc('r') }, { flags: 4, content: new Uint8Array() }] })));
  assert.equal(new TextDecoder().decode(rr.name), 'longname');
  assert.equal(rr.symlink, '/usr/..');
  assert.equal(susp.rockRidge(e(susp.encodeSL({ flags: 0, components: [{ flags: 8, content: new Uint8Array() }] }))).symlink, '/');
  assert.equal(susp.rockRidge(e(susp.encodeEntry('RE', new Uint8Array()))).relocated, true);
  assert.equal(susp.rockRidge(e(susp.encodeLink('CL', 99))).childLink, 99);
  assert.equal(susp.rockRidge(e(susp.encodeNM({ flags: 2, name: new Uint8Array() }))).name, undefined);
});

test('iso9660 codecs: El Torito entries round-trip; the validation checksum and key are checked', () => {
  fc.assert(fc.property(u8, fc.string({ unit: fc.constantFrom('A', 'b', '1'), maxLength: 24 }), (platform, idString) => assert.deepEqual(et.decodeValidation(et.encodeValidation({ platform, idString })), { platform, idString })));
  const media = fc.constantFrom<et.MediaType>('no-emulation', 'floppy-1.2M', 'floppy-1.44M', 'floppy-2.88M', 'hard-disk');
  fc.assert(
    fc.property(fc.record({ bootable: fc.boolean(), media, loadSegment: u16, systemType: u8, sectorCount: u16, loadRba: u32, criteriaType: u8, hasExtensions: fc.boolean() }), (entry) => assert.deepEqual(et.decodeBootEntry(et.encodeBootEntry(entry)), { ...entry })),
  );
  fc.assert(fc.property(fc.boolean(), u8, u16, fc.string({ unit: fc.constantFrom('X', '2'), maxLength: 28 }), (last, platform, count, idString) => assert.deepEqual(et.decodeSectionHeader(et.encodeSectionHeader({ last, platform, count, idString })), { last, platform, count, idString })));
  const v = et.encodeValidation({ platform: 0, idString: 'X' });
  v[5]! ^= 1;
  throwsCorrupt(() => et.decodeValidation(v), /checksum/);
  const k = et.encodeValidation({ platform: 0, idString: 'X' });
  k[31] = 0;
  throwsCorrupt(() => et.decodeValidation(k), /key/);
  const m = et.encodeBootEntry({ bootable: true, media: 'hard-disk', loadSegment: 0, systemType: 0, sectorCount: 1, loadRba: 1, criteriaType: 0, hasExtensions: false });
  m[1] = 7;
  throwsCorrupt(() => et.decodeBootEntry(m), /mediaType/);
  // A section count that runs past the catalog read.
  const cat = new Uint8Array(2048);
  cat.set(et.encodeValidation({ platform: 0, idString: '' }));
  cat.set(et.encodeBootEntry({ bootable: true, media: 'no-emulation', loadSegment: 0, systemType: 0, sectorCount: 4, loadRba: 30, criteriaType: 0, hasExtensions: false }), 32);
  cat.set(et.encodeSectionHeader({ last: true, platform: 0xef, count: 0xffff, idString: '' }), 64);
  cat.set(et.encodeBootEntry({ bootable: true, media: 'no-emulation', loadSegment: 0, systemType: 0, sectorCount: 4, loadRba: 30, criteriaType: 0, hasExtensions: false }).fill(0x88, 0, 1), 96);
  for (let i = 128; i < 2048; i += 32) cat[i] = 0x88;
  throwsCorrupt(() => et.decodeCatalog(cat, 20), /eltorito.catalog/);
  cat.set(et.encodeSectionHeader({ last: true, platform: 0xef, count: 1, idString: '' }), 64);
  const parsed = et.decodeCatalog(cat, 20);
  assert.deepEqual(parsed.images.map((i) => [i.platform, i.section, i.loadRba]), [[0, 'default', 30], [0xef, 0, 30]]);
});
