/** EROFS on-disk structures: decode(encode(x)) = x for each, and typed errors naming the bad field. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import '../helpers/setup.ts';
import { CorruptImageError, UnsupportedFeatureError } from '../../src/errors.ts';
import { checksumSpan, decodeSuperblock, encodeSuperblock, superblockChecksum, Compat, type Superblock } from '../../src/fs/erofs/superblock.ts';
import { decodeInode, describeInode, encodeInode, type RawInode } from '../../src/fs/erofs/inode.ts';
import { decodeDirentBlock, encodeDirentBlock, type Dirent } from '../../src/fs/erofs/dirent.ts';
import { decodeIbodyHeader, decodeLongPrefix, decodeXattrEntry, encodeIbodyHeader, encodeLongPrefix, encodeXattrEntry, xattrName } from '../../src/fs/erofs/xattr.ts';
import { decodeBlockMapEntry, decodeChunkIndex, encodeBlockMapEntry, encodeChunkIndex } from '../../src/fs/erofs/chunk.ts';
import { decodeComprCfgs, decodeCompactPack, decodeLclusterIndex, decodeMapHeader, encodeComprCfgs, encodeCompactPack, encodeLclusterIndex, encodeMapHeader, type MapHeader } from '../../src/fs/erofs/zmap.ts';
import { lz4DecodePrefix } from '../../src/fs/erofs/lz4partial.ts';
import { lz4Encode } from '../../src/fs/squashfs/comp/liblz4.ts';

/** fast-check records have a null prototype: a deep copy with ordinary objects, for deepEqual. */
function plain<T>(x: T): T {
  if (Array.isArray(x)) return x.map(plain) as T;
  if (x !== null && typeof x === 'object' && !(x instanceof Uint8Array)) return Object.fromEntries(Object.entries(x).map(([k, v]) => [k, plain(v)])) as T;
  return x;
}
const u8 = (n: number) => fc.uint8Array({ minLength: n, maxLength: n });
const IMAGE = 1 << 30;

const superblockArb: fc.Arbitrary<Superblock> = fc.record({
  checksum: fc.constant(0),
  featureCompat: fc.constantFrom(0, Compat.mtime, Compat.xattrFilter),
  blkszbits: fc.integer({ min: 9, max: 16 }),
  extSlots: fc.integer({ min: 0, max: 4 }),
  rootNid: fc.integer({ min: 0, max: 0xffff }),
  inos: fc.integer({ min: 0, max: 2 ** 40 }),
  epoch: fc.integer({ min: 0, max: 2 ** 40 }),
  fixedNsec: fc.integer({ min: 0, max: 999_999_999 }),
  blocks: fc.nat({ max: 1 << 14 }),
  metaBlkaddr: fc.integer({ min: 0, max: 1000 }),
  xattrBlkaddr: fc.integer({ min: 0, max: 1000 }),
  uuid: u8(16),
  volumeName: u8(16),
  featureIncompat: fc.integer({ min: 0, max: 0x3f }),
  u1: fc.integer({ min: 0, max: 0xffff }),
  extraDevices: fc.integer({ min: 0, max: 0xffff }),
  devtSlotoff: fc.integer({ min: 0, max: 0xffff }),
  dirblkbits: fc.constant(0),
  xattrPrefixCount: fc.constant(0),
  xattrPrefixStart: fc.nat(),
  packedNid: fc.integer({ min: 0, max: 100000 }),
  xattrFilterReserved: fc.integer({ min: 0, max: 255 }),
  buildTime: fc.nat(),
});

test('superblock: decode(encode(x)) = x', () => {
  fc.assert(fc.property(superblockArb, (sb) => assert.deepEqual(decodeSuperblock(encodeSuperblock(sb), IMAGE), plain(sb))));
});

test('superblock: the crc32c checksum is verified when COMPAT_SB_CHKSUM is set', () => {
  const sb: Superblock = { ...fc.sample(superblockArb, { seed: 1, numRuns: 1 })[0]!, blkszbits: 12, featureCompat: Compat.sbChecksum, extSlots: 0 };
  const span = new Uint8Array(checksumSpan(12));
  span.set(encodeSuperblock(sb));
  new DataView(span.buffer).setUint32(4, superblockChecksum(span), true);
  assert.equal(decodeSuperblock(span, IMAGE).checksum, superblockChecksum(span));
  span[200] = 1;
  assert.throws(() => decodeSuperblock(span, IMAGE), (e: unknown) => e instanceof CorruptImageError && e.field === 'superblock.checksum');
});

test('superblock: bad fields give typed errors naming them', () => {
  const good = fc.sample(superblockArb, { seed: 2, numRuns: 1 })[0]!;
  const field = (over: Partial<Superblock>, deviceSize = IMAGE) => {
    try {
      decodeSuperblock(encodeSuperblock({ ...good, ...over }), deviceSize);
      return 'ok';
    } catch (e) {
      if (e instanceof CorruptImageError) return e.field;
      if (e instanceof UnsupportedFeatureError) return e.feature;
      throw e;
    }
  };
  const bytes = encodeSuperblock(good);
  bytes[0] = 0;
  assert.throws(() => decodeSuperblock(bytes, IMAGE), (e: unknown) => e instanceof CorruptImageError && e.field === 'superblock.magic' && e.offset === 1024);
  assert.equal(field({ blkszbits: 8 }), 'superblock.blkszbits');
  assert.equal(field({ blkszbits: 17 }), 'superblock.blkszbits');
  assert.equal(field({ featureIncompat: 0x80 }), '48BIT');
  assert.equal(field({ featureIncompat: 0x100 }), 'METABOX');
  assert.equal(field({ featureIncompat: 0x400 }), 'INCOMPAT_0x400');
  assert.equal(field({ fixedNsec: 1e9 }), 'superblock.fixed_nsec');
  assert.equal(field({ metaBlkaddr: 10, blkszbits: 12, blocks: 5 }, 4096 * 10), 'superblock.meta_blkaddr');
  assert.equal(field({ dirblkbits: 1 }), 'DIRBLKBITS');
  assert.equal(field({ blocks: 11, blkszbits: 12, metaBlkaddr: 0, xattrBlkaddr: 0, rootNid: 0, packedNid: 0 }, 4096 * 10), 'superblock.blocks');
  assert.equal(field({ xattrPrefixCount: 3, featureIncompat: 0 }), 'superblock.xattr_prefix_count');
  assert.throws(() => decodeSuperblock(encodeSuperblock({ ...good, extSlots: 200 }).subarray(0, 128), IMAGE), (e: unknown) => e instanceof CorruptImageError && e.field === 'superblock.sb_extslots');
});

const modes = [0o100644, 0o040755, 0o120777, 0o020620, 0o060660, 0o010644, 0o140755];
const rawInodeArb: fc.Arbitrary<RawInode> = fc.oneof(
  fc.record({
    extended: fc.constant(false),
    format: fc.integer({ min: 0, max: 4 }).chain((layout) => fc.constantFrom(layout << 1, (layout << 1) | 0x10)),
    xattrIcount: fc.integer({ min: 0, max: 0xffff }),
    mode: fc.constantFrom(...modes),
    nb: fc.integer({ min: 0, max: 0xffff }),
    size: fc.nat(),
    u: fc.nat(),
    ino: fc.nat(),
    uid: fc.integer({ min: 0, max: 0xffff }),
    gid: fc.integer({ min: 0, max: 0xffff }),
    mtime: fc.nat(),
    mtimeNsec: fc.constant(0),
    nlink: fc.constant(0),
  }),
  fc.record({
    extended: fc.constant(true),
    format: fc.integer({ min: 0, max: 4 }).chain((layout) => fc.constantFrom((layout << 1) | 1, (layout << 1) | 0x11)),
    xattrIcount: fc.integer({ min: 0, max: 0xffff }),
    mode: fc.constantFrom(...modes),
    nb: fc.integer({ min: 0, max: 0xffff }),
    size: fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
    u: fc.nat(),
    ino: fc.nat(),
    uid: fc.nat(),
    gid: fc.nat(),
    mtime: fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
    mtimeNsec: fc.integer({ min: 0, max: 999_999_999 }),
    nlink: fc.nat(),
  }),
);

test('inode: decode(encode(x)) = x for compact and extended inodes', () => {
  fc.assert(fc.property(rawInodeArb, (i) => assert.deepEqual(decodeInode(encodeInode(i), 7), plain(i))));
});

test('inode: bad fields give typed errors; the description follows the format', () => {
  const base: RawInode = { extended: false, format: 2 << 1, xattrIcount: 0, mode: 0o100644, nb: 3, size: 5000, u: 10, ino: 1, uid: 1, gid: 2, mtime: 100, mtimeNsec: 0, nlink: 0 };
  const bytes = encodeInode(base);
  bytes[0] = 0x40;
  assert.throws(() => decodeInode(bytes, 1), (e: unknown) => e instanceof UnsupportedFeatureError && e.feature === 'INODE_FORMAT');
  assert.throws(() => decodeInode(encodeInode({ ...base, format: 5 << 1 }), 1), (e: unknown) => e instanceof UnsupportedFeatureError && e.feature === 'DATALAYOUT');
  assert.throws(() => decodeInode(encodeInode({ ...base, mode: 0o644 }), 1, 64), (e: unknown) => e instanceof CorruptImageError && e.field === 'inode.i_mode' && e.offset === 68);
  const ext = encodeInode({ ...base, extended: true, format: (2 << 1) | 1, nlink: 1 });
  new DataView(ext.buffer).setBigUint64(8, 1n << 60n, true);
  assert.throws(() => decodeInode(ext, 1), (e: unknown) => e instanceof CorruptImageError && e.field === 'inode.i_size');
  const ctx = { blkszbits: 12, epoch: 1_000_000, fixedNsec: 5, imageSize: 1 << 20 };
  const d = describeInode(base, 9, 4096, ctx);
  assert.deepEqual([d.kind, d.nlink, d.mtime.sec, d.mtime.nsec, d.startBlock, d.bodyPos], ['file', 3, 1_000_100, 5, 10, 4096 + 32]);
  assert.equal(describeInode({ ...base, format: (2 << 1) | 0x10 }, 9, 4096, ctx).nlink, 1);
  assert.throws(() => describeInode({ ...base, u: 300 }, 9, 4096, ctx), (e: unknown) => e instanceof CorruptImageError && e.field === 'inode.i_u.startblk');
  assert.throws(() => describeInode({ ...base, size: 4096 + 4090 }, 9, 4096, ctx), (e: unknown) => e instanceof CorruptImageError && e.field === 'inode.i_size');
  const dev = describeInode({ ...base, mode: 0o020620, format: 0, size: 0, u: (4 << 8) | (300 & 0xff) | ((300 & ~0xff) << 12) }, 9, 4096, ctx);
  assert.deepEqual(dev.rdev, { major: 4, minor: 300 });
});

const nameArb = fc.uint8Array({ minLength: 1, maxLength: 40 }).map((b) => b.map((x) => (x % 250) + 1));
test('dirent block: decode(encode(entries)) = entries', () => {
  fc.assert(fc.property(fc.array(fc.record({ nid: fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }), fileType: fc.integer({ min: 0, max: 7 }), name: nameArb }), { minLength: 1, maxLength: 60 }), fc.constantFrom(4096, 8192), (entries: Dirent[], bs) => {
    assert.deepEqual(decodeDirentBlock(encodeDirentBlock(entries, bs)), plain(entries));
  }));
});

test('dirent block: bad nameoff, file type and names give typed errors', () => {
  const good = encodeDirentBlock([{ nid: 5, fileType: 1, name: Buffer.from('a') }, { nid: 6, fileType: 2, name: Buffer.from('b') }], 4096);
  const bad = (mutate: (b: Uint8Array, dv: DataView) => void) => {
    const b = Uint8Array.from(good);
    mutate(b, new DataView(b.buffer));
    try {
      decodeDirentBlock(b, 8192);
      return 'ok';
    } catch (e) {
      if (e instanceof CorruptImageError || e instanceof UnsupportedFeatureError) return e instanceof CorruptImageError ? e.field : e.feature;
      throw e;
    }
  };
  assert.equal(bad((_b, dv) => dv.setUint16(8, 13, true)), 'dirent.nameoff');
  assert.equal(bad((_b, dv) => dv.setUint16(8, 4096, true)), 'dirent.nameoff');
  assert.equal(bad((_b, dv) => dv.setUint16(20, 24, true)), 'dirent.nameoff');
  assert.equal(bad((b) => (b[10] = 9)), 'dirent.file_type');
  assert.equal(bad((_b, dv) => dv.setBigUint64(0, 1n << 63n, true)), 'METABOX');
  assert.equal(bad((b) => (b[25] = 0)), 'dirent.name');
  const long = encodeDirentBlock([{ nid: 1, fileType: 1, name: new Uint8Array(300).fill(65) }], 4096);
  assert.throws(() => decodeDirentBlock(long), (e: unknown) => e instanceof CorruptImageError && e.field === 'dirent.name');
});

test('xattrs: header, entry and long prefix round-trip; names resolve', () => {
  fc.assert(fc.property(fc.record({ nameFilter: fc.nat({ max: 0xffffffff }), sharedCount: fc.integer({ min: 0, max: 255 }) }), (h) => assert.deepEqual(decodeIbodyHeader(encodeIbodyHeader(h)), plain(h))));
  fc.assert(fc.property(fc.record({ nameIndex: fc.oneof(fc.integer({ min: 1, max: 6 }), fc.integer({ min: 0x80, max: 0xff })), name: fc.uint8Array({ maxLength: 255 }), value: fc.uint8Array({ maxLength: 3000 }) }), (e) => {
    const bytes = encodeXattrEntry(e);
    const d = decodeXattrEntry(bytes);
    assert.deepEqual(d.entry, plain(e));
    assert.equal(d.size, bytes.byteLength);
    assert.equal(d.size % 4, 0);
  }));
  fc.assert(fc.property(fc.record({ baseIndex: fc.integer({ min: 1, max: 6 }), infix: fc.uint8Array({ maxLength: 200 }) }), (p) => {
    const rec = encodeLongPrefix(p);
    const len = new DataView(rec.buffer).getUint16(0, true);
    assert.deepEqual(decodeLongPrefix(rec.subarray(2, 2 + len)), plain(p));
  }));
  const prefixes = [{ baseIndex: 4, infix: Buffer.from('overlay.') }];
  assert.equal(xattrName({ nameIndex: 0x80, name: Buffer.from('opaque'), value: new Uint8Array() }, prefixes), 'trusted.overlay.opaque');
  assert.equal(xattrName({ nameIndex: 6, name: Buffer.from('selinux'), value: new Uint8Array() }, prefixes), 'security.selinux');
  assert.equal(xattrName({ nameIndex: 2, name: new Uint8Array(), value: new Uint8Array() }, prefixes), 'system.posix_acl_access');
  assert.throws(() => xattrName({ nameIndex: 0x81, name: Buffer.from('x'), value: new Uint8Array() }, prefixes), (e: unknown) => e instanceof CorruptImageError && e.field === 'xattr_entry.e_name_index');
  assert.throws(() => decodeXattrEntry(Uint8Array.of(1, 9, 0, 0, 65)), (e: unknown) => e instanceof CorruptImageError && e.field === 'xattr_entry.e_name_index');
  assert.throws(() => decodeXattrEntry(Uint8Array.of(1, 1, 200, 0, 65)), (e: unknown) => e instanceof CorruptImageError && e.field === 'xattr_entry.e_value_size');
  assert.throws(() => decodeLongPrefix(Uint8Array.of(7, 65)), (e: unknown) => e instanceof CorruptImageError && e.field === 'xattr_long_prefix.base_index');
});

test('chunk indexes and block map entries round-trip; EROFS_NULL_ADDR is a hole', () => {
  const c = fc.record({ startBlock: fc.option(fc.integer({ min: 0, max: 0xfffffffe }), { nil: undefined }), deviceId: fc.integer({ min: 0, max: 0xffff }) });
  fc.assert(fc.property(c, (x) => assert.deepEqual(decodeChunkIndex(encodeChunkIndex(x)), plain(x))));
  fc.assert(fc.property(c, (x) => assert.deepEqual(decodeBlockMapEntry(encodeBlockMapEntry(x)), plain({ ...x, deviceId: 0 }))));
  assert.equal(decodeBlockMapEntry(Uint8Array.of(255, 255, 255, 255)).startBlock, undefined);
  assert.throws(() => decodeChunkIndex(new Uint8Array(4)), CorruptImageError);
});

test('map header, full lcluster index and compact packs round-trip', () => {
  const header: fc.Arbitrary<MapHeader> = fc.oneof(
    fc.record({ wholeFileFragment: fc.constant(true as const), fragmentOffset: fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }) }),
    fc.record({ wholeFileFragment: fc.constant(false as const), word0: fc.nat({ max: 0xffffffff }), advise: fc.integer({ min: 0, max: 0xffff }), algorithmType: fc.integer({ min: 0, max: 255 }), clusterBits: fc.integer({ min: 0, max: 0x7f }) }),
  );
  fc.assert(fc.property(header, (h) => assert.deepEqual(decodeMapHeader(encodeMapHeader(h)), plain(h))));
  fc.assert(fc.property(fc.record({ advise: fc.integer({ min: 0, max: 0xffff }), clusterOfs: fc.integer({ min: 0, max: 0xffff }), u: fc.nat({ max: 0xffffffff }) }), (i) => assert.deepEqual(decodeLclusterIndex(encodeLclusterIndex(i)), plain(i))));
  for (const twoByte of [false, true]) {
    const vcnt = twoByte ? 16 : 2;
    const entry = fc.record({ type: fc.integer({ min: 0, max: 3 }), lo: fc.integer({ min: 0, max: 4095 }) });
    fc.assert(fc.property(fc.array(entry, { minLength: vcnt, maxLength: vcnt }), fc.nat({ max: 0xffffffff }), (entries, blkaddr) => {
      assert.deepEqual(decodeCompactPack(encodeCompactPack({ entries, blkaddr }, twoByte, 12), twoByte, 12), plain({ entries, blkaddr }));
    }));
  }
  assert.throws(() => decodeCompactPack(new Uint8Array(8), true, 12), CorruptImageError);
  assert.throws(() => decodeCompactPack(new Uint8Array(32), true, 13), (e: unknown) => e instanceof UnsupportedFeatureError && e.feature === 'LCLUSTERBITS');
});

test('compressor configs: decode(encode(x)) = x; bad records give typed errors', () => {
  const cfgs = fc.record({
    algorithms: fc.integer({ min: 0, max: 15 }),
    lz4: fc.record({ maxDistance: fc.integer({ min: 0, max: 0xffff }), maxPclusterBlocks: fc.integer({ min: 0, max: 0xffff }) }),
    lzma: fc.record({ dictSize: fc.integer({ min: 4096, max: 8 << 20 }), format: fc.constant(0) }),
    deflate: fc.record({ windowBits: fc.integer({ min: 8, max: 15 }) }),
    zstd: fc.record({ format: fc.constant(0), windowLog: fc.integer({ min: 0, max: 17 }) }),
  });
  fc.assert(fc.property(cfgs, (c) => {
    const names = ['lz4', 'lzma', 'deflate', 'zstd'] as const;
    const expect: Record<string, unknown> = { algorithms: c.algorithms };
    names.forEach((n, i) => {
      if (c.algorithms & (1 << i)) expect[n] = { ...c[n] };
    });
    assert.deepEqual(decodeComprCfgs(encodeComprCfgs(c), c.algorithms), expect);
  }));
  assert.throws(() => decodeComprCfgs(new Uint8Array(16), 0x10), (e: unknown) => e instanceof UnsupportedFeatureError && e.feature === 'COMPRESSION_ALGORITHM');
  assert.throws(() => decodeComprCfgs(Uint8Array.of(3, 0, 1, 2, 3), 1), (e: unknown) => e instanceof CorruptImageError && e.field === 'compr_cfgs.len');
  const deflate = encodeComprCfgs({ algorithms: 4, deflate: { windowBits: 15 } });
  deflate[2] = 20;
  assert.throws(() => decodeComprCfgs(deflate, 4), (e: unknown) => e instanceof CorruptImageError && e.field === 'deflate_cfgs.windowbits');
});

test('lz4 prefix decoder: equals the data for any prefix length, ignores trailing padding, rejects bad offsets', () => {
  fc.assert(fc.property(fc.array(fc.constantFrom('abc', 'defg', 'hello ', 'x'), { minLength: 1, maxLength: 400 }), fc.nat(), (words, cut) => {
    const data = Buffer.from(words.join(''));
    const block = lz4Encode(data, false);
    if (block === undefined) return;
    const padded = new Uint8Array(block.byteLength + 50);
    padded.set(block);
    assert.deepEqual(Buffer.from(lz4DecodePrefix(padded, data.byteLength)), data);
    const n = cut % (data.byteLength + 1);
    assert.deepEqual(Buffer.from(lz4DecodePrefix(block, n)), data.subarray(0, n));
  }));
  assert.throws(() => lz4DecodePrefix(Uint8Array.of(0x14, 65, 5, 0), 100), RangeError);
  assert.throws(() => lz4DecodePrefix(Uint8Array.of(0xf0), 100), RangeError);
});
