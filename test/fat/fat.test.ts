/**
 * FAT structures round-trip (boot sector, FSInfo, short and long-name entries, timestamps), the name
 * rules (validation, 8.3 aliases, case folding), a fast-check model test of FatFs on FAT12 and FAT16,
 * and a pinned image hash for a fixed tree (the writer is deterministic).
 */
import '../helpers/setup.ts';
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { MemoryDisk, readAt } from '../../src/io/disk.ts';
import { AlreadyExistsError, CorruptImageError, NotFoundError, UnsupportedFeatureError } from '../../src/errors.ts';
import { FatFs, FatNoSpaceError, mkfsFat } from '../../src/fs/fat/index.ts';
import { decodeBootSector, decodeFsInfo, encodeBootSector, encodeFsInfo } from '../../src/fs/fat/boot.ts';
import {
  decodeLfnEntry,
  decodeShortEntry,
  encodeLfnEntry,
  encodeShortEntry,
  foldName,
  fromFatStamp,
  joinLfn,
  lfnChecksum,
  lfnEntriesFor,
  makeAlias,
  plainShortName,
  shortNameText,
  toFatStamp,
  validateName,
} from '../../src/fs/fat/dirent.ts';
import { fsListing, randomTree, sha, sorted, treeListing } from './fixtures.ts';

const MiB = 2 ** 20;
const NOW = 1_750_000_000_000;
const ascii = (s: string): Uint8Array => Uint8Array.from(s, (c) => c.charCodeAt(0));

async function freshFs(size: number, type?: 'fat12' | 'fat16' | 'fat32'): Promise<{ disk: MemoryDisk; fs: FatFs }> {
  const disk = new MemoryDisk(size);
  await mkfsFat(disk, { type, serial: 0xdeadbeef, now: NOW, label: 'TEST' });
  return { disk, fs: await FatFs.open(disk, { now: () => NOW }) };
}

describe('FAT structures', () => {
  test('boot sectors from mkfsFat decode and re-encode to the same bytes (12, 16, 32)', async () => {
    for (const [size, type] of [[2 * MiB, 'fat12'], [32 * MiB, 'fat16'], [600 * MiB, 'fat32']] as const) {
      const disk = new MemoryDisk(size);
      await mkfsFat(disk, { serial: 0x01020304, now: NOW });
      const raw = disk.bytes.slice(0, 512);
      const bs = decodeBootSector(raw, size);
      assert.equal(bs.type, type);
      assert.equal(bs.serial, 0x01020304);
      assert.deepEqual(encodeBootSector(bs), raw);
      assert.deepEqual(decodeBootSector(encodeBootSector({ ...bs, dirty: true }), size).dirty, true);
    }
  });

  test('every boot sector field is checked: typed errors, never a crash', async () => {
    const disk = new MemoryDisk(32 * MiB);
    await mkfsFat(disk, { now: NOW });
    const good = disk.bytes.slice(0, 512);
    const cases: [string, (b: Uint8Array, dv: DataView) => void][] = [
      ['signature', (b) => (b[511] = 0)],
      ['jump', (b) => (b[0] = 0)],
      ['bytes per sector', (_b, dv) => dv.setUint16(11, 500, true)],
      ['sectors per cluster', (b) => (b[13] = 3)],
      ['reserved sectors', (_b, dv) => dv.setUint16(14, 0, true)],
      ['number of FATs', (b) => (b[16] = 0)],
      ['media', (b) => (b[21] = 0x12)],
      ['total sectors', (_b, dv) => dv.setUint32(32, 0xffffffff, true)],
      ['sectors per FAT', (_b, dv) => dv.setUint16(22, 1, true)],
      ['root entries', (_b, dv) => dv.setUint16(17, 0, true)],
    ];
    for (const [field, mutate] of cases) {
      const b = good.slice();
      mutate(b, new DataView(b.buffer));
      assert.throws(() => decodeBootSector(b, disk.size), (err: unknown) => err instanceof CorruptImageError && err.field === field, field);
    }
    assert.throws(() => decodeBootSector(good, 1024 * 1024), CorruptImageError, 'a volume larger than its device');
  });

  test('FSInfo round-trips and checks its signatures', () => {
    const bytes = encodeFsInfo({ freeCount: 12345, nextFree: 77 });
    assert.deepEqual(decodeFsInfo(bytes), { freeCount: 12345, nextFree: 77 });
    bytes[0] = 0;
    assert.throws(() => decodeFsInfo(bytes), CorruptImageError);
  });

  test('short entries round-trip, with the FAT32 high cluster word only on FAT32', () => {
    const e = { name: ascii('README  TXT'), attr: 0x20, ntCase: 0x18, createTenths: 150, createTime: 0x7bcf, createDate: 0x5ac1, accessDate: 0x5ac1, firstCluster: 0x00123456, writeTime: 0x7bce, writeDate: 0x5ac1, size: 0xfffffffe };
    assert.deepEqual(decodeShortEntry(encodeShortEntry(e), true), e);
    assert.equal(decodeShortEntry(encodeShortEntry(e), false).firstCluster, 0x3456);
    assert.equal(shortNameText(e.name, e.ntCase), 'readme.txt');
    assert.equal(shortNameText(ascii('README  TXT'), 0), 'README.TXT');
    assert.equal(shortNameText(Uint8Array.from([0x90, ...ascii('TE     ')]), 0), 'ÉTE', 'code page 850');
  });

  test('LFN entries: checksum, round trip, any valid name up to 255 units', () => {
    assert.equal(lfnChecksum(ascii('README  TXT')), lfnChecksum(ascii('README  TXT')));
    const piece = { sequence: 3, last: true, checksum: 0xab, units: Array.from({ length: 13 }, (_, i) => 0x41 + i) };
    assert.deepEqual(decodeLfnEntry(encodeLfnEntry(piece)), piece);
    const bad = encodeLfnEntry(piece);
    bad[0] = 0x40;
    assert.throws(() => decodeLfnEntry(bad), CorruptImageError);
    const nameArb = fc.string({ unit: fc.constantFrom(...'abcXYZ09 ._-+éü日本Ωж😀'.split('')), minLength: 1, maxLength: 120 }).filter((s) => s.length <= 255 && !/[ .]$/.test(s) && s !== '.' && s !== '..');
    fc.assert(
      fc.property(nameArb, (name) => {
        validateName(name);
        const alias = makeAlias(name, () => false);
        const entries = lfnEntriesFor(name, alias).map(decodeLfnEntry);
        assert.equal(joinLfn(entries, alias), name);
        const other = alias.slice();
        other[0] = other[0] === 0x41 ? 0x42 : 0x41;
        assert.equal(joinLfn(entries, other), undefined, 'a checksum mismatch drops the long name');
      }),
    );
  });

  test('8.3 aliases as Windows makes them, and plain 8.3 names with the NT case bits', () => {
    const taken = new Set<string>();
    const alias = (n: string): string => {
      const a = String.fromCharCode(...makeAlias(n, (k) => taken.has(k)));
      taken.add(a);
      return a;
    };
    assert.equal(alias('Long File Name.txt'), 'LONGFI~1TXT');
    assert.equal(alias('Long File Name 2.txt'), 'LONGFI~2TXT');
    assert.equal(alias('longfilename3.txt'), 'LONGFI~3TXT');
    assert.equal(alias('LongFileName4.txt'), 'LONGFI~4TXT');
    assert.match(alias('LongFileName5.txt'), /^LO[0-9A-F]{4}~1TXT$/);
    assert.equal(alias('.bashrc'), 'BASHRC~1   ');
    assert.equal(alias('a+b.c'), 'A_B~1   C  ');
    assert.equal(alias('résumé.doc'), 'R_SUM_~1DOC');
    assert.equal(alias('archive.tar.gz'), 'ARCHIV~1GZ ');
    assert.deepEqual(plainShortName('readme.txt'), { name: ascii('README  TXT'), ntCase: 0x18 });
    assert.deepEqual(plainShortName('README.txt'), { name: ascii('README  TXT'), ntCase: 0x10 });
    assert.equal(plainShortName('ReadMe.txt'), undefined);
    assert.equal(plainShortName('a.b.c'), undefined);
    assert.equal(foldName('Straße Ωmega'), foldName('STRAßE ωMEGA'));
  });

  test('names FAT cannot hold are refused with a typed error', () => {
    for (const bad of ['a/b', 'a:b', 'a*', 'q?', '<x>', 'pipe|', 'tab\t', 'x'.repeat(256), 'trailing.', 'trailing ', '', '.', '..']) {
      assert.throws(() => validateName(bad), UnsupportedFeatureError, JSON.stringify(bad));
    }
    validateName('x'.repeat(255));
  });

  test('timestamps: local time with an offset, 2-second resolution, clamped to 1980..2107', () => {
    const ms = Date.UTC(2024, 1, 29, 23, 59, 58, 0);
    for (const offset of [0, 120, -300]) {
      const t = toFatStamp(ms, offset);
      assert.equal(fromFatStamp(t.date, t.time, 0, offset), ms);
    }
    const t = toFatStamp(ms, 60);
    assert.equal(t.date, ((2024 - 1980) << 9) | (3 << 5) | 1, 'local date moved past midnight');
    assert.equal(fromFatStamp(toFatStamp(0, 0).date, 0, 0, 0), Date.UTC(1980, 0, 1));
    assert.equal(fromFatStamp(0, 0xffff, 0, 0), Date.UTC(1980, 0, 1, 23, 59, 58), 'impossible fields clamp');
  });
});

describe('FatFs', () => {
  test('dirty bit set by the first change and cleared by close; label, serial, space', async () => {
    const { disk, fs } = await freshFs(32 * MiB);
    assert.equal(fs.type, 'fat16');
    assert.equal(fs.label, 'TEST');
    assert.equal(fs.uuid, 'DEAD-BEEF');
    assert.equal(disk.bytes[0x25]! & 1, 0);
    await fs.writeFile('/a.txt', new Uint8Array(5000));
    assert.equal(disk.bytes[0x25]! & 1, 1);
    await fs.close();
    assert.equal(disk.bytes[0x25]! & 1, 0);
    const again = await FatFs.open(disk);
    const space = await again.space();
    assert.equal(space.totalBytes - space.freeBytes, Math.ceil(5000 / again.layout.clusterSize) * again.layout.clusterSize);
  });

  test('typed errors: no symlinks, missing paths, existing names, non-empty rmdir, a full root, a full volume', async () => {
    const { fs } = await freshFs(1 * MiB, 'fat12');
    await fs.mkdir('/d');
    await fs.writeFile('/d/f', new Uint8Array([1]));
    await assert.rejects(fs.readlink('/d/f'), UnsupportedFeatureError);
    await assert.rejects(fs.stat('/nope'), NotFoundError);
    await assert.rejects(fs.mkdir('/D'), AlreadyExistsError);
    await assert.rejects(fs.createFile('/d/F', { size: 1 }), AlreadyExistsError);
    await assert.rejects(fs.rmdir('/d'), AlreadyExistsError);
    await assert.rejects(fs.unlink('/d'), NotFoundError);
    await assert.rejects(fs.rename('/d', '/d/inside'), AlreadyExistsError);
    await assert.rejects(fs.writeFile('/huge', new Uint8Array(2 * MiB)), FatNoSpaceError);
    let n = 0;
    await assert.rejects(async () => {
      for (;;) await fs.writeFile(`/f${n++}`, new Uint8Array(0));
    }, /root directory is full/);
    assert.equal(n, 512 - 1 /* label */ - 1 /* d */ + 1);
  });

  test('a model of mkdir / writeFile / unlink / rename / rmdir agrees with FatFs (FAT12 and FAT16)', async () => {
    const names = ['a', 'B.TXT', 'long name number one.txt', 'Long Name Number Two.txt', 'ünï', 'x.y.z', 'UPPER', 'lower.c'];
    const op = fc.oneof(
      fc.record({ kind: fc.constant('mkdir' as const), dir: fc.nat(3), name: fc.constantFrom(...names) }),
      fc.record({ kind: fc.constant('write' as const), dir: fc.nat(3), name: fc.constantFrom(...names), size: fc.nat(9000), seed: fc.nat(255) }),
      fc.record({ kind: fc.constant('unlink' as const), pick: fc.nat(50) }),
      fc.record({ kind: fc.constant('rmdir' as const), pick: fc.nat(50) }),
      fc.record({ kind: fc.constant('rename' as const), pick: fc.nat(50), dir: fc.nat(3), name: fc.constantFrom(...names) }),
    );
    await fc.assert(
      fc.asyncProperty(fc.constantFrom('fat12', 'fat16'), fc.array(op, { maxLength: 30 }), async (type, ops) => {
        const { disk, fs } = await freshFs(type === 'fat12' ? 2 * MiB : 20 * MiB, type);
        const model = new Map<string, { kind: 'dir' } | { kind: 'file'; data: Uint8Array }>();
        const key = (p: string) => p.toUpperCase();
        const find = (p: string) => [...model.keys()].find((k) => key(k) === key(p));
        const dirs = () => ['', ...[...model].filter(([, n]) => n.kind === 'dir').map(([p]) => p)].sort();
        const all = () => [...model.keys()].sort();
        for (const o of ops) {
          if (o.kind === 'mkdir' || o.kind === 'write') {
            const ds = dirs();
            const path = `${ds[o.dir % ds.length]}/${o.name}`;
            const hit = find(path);
            if (o.kind === 'mkdir') {
              if (hit) await assert.rejects(fs.mkdir(path), AlreadyExistsError);
              else {
                await fs.mkdir(path);
                model.set(path, { kind: 'dir' });
              }
            } else {
              const data = new Uint8Array(o.size).map((_, i) => (i * o.seed) & 0xff);
              if (hit && model.get(hit)!.kind === 'dir') await assert.rejects(fs.writeFile(path, data), AlreadyExistsError);
              else {
                await fs.writeFile(path, data);
                model.set(hit ?? path, { kind: 'file', data });
              }
            }
          } else {
            const paths = all();
            if (paths.length === 0) continue;
            const p = paths[o.pick % paths.length]!;
            const node = model.get(p)!;
            if (o.kind === 'unlink') {
              if (node.kind === 'file') {
                await fs.unlink(p);
                model.delete(p);
              } else await assert.rejects(fs.unlink(p), NotFoundError);
            } else if (o.kind === 'rmdir') {
              const empty = node.kind === 'dir' && !paths.some((q) => q.startsWith(`${p}/`));
              if (node.kind === 'file') await assert.rejects(fs.rmdir(p), NotFoundError);
              else if (!empty) await assert.rejects(fs.rmdir(p), AlreadyExistsError);
              else {
                await fs.rmdir(p);
                model.delete(p);
              }
            } else {
              const ds = dirs();
              const dest = `${ds[o.dir % ds.length]}/${o.name}`;
              const hit = find(dest);
              const into = key(dest).startsWith(`${key(p)}/`);
              const hitNode = hit ? model.get(hit)! : undefined;
              const hitBusy = hit !== undefined && hitNode!.kind === 'dir' && paths.some((q) => q.startsWith(`${hit}/`));
              if (into || (hit && hit !== p && (hitNode!.kind !== node.kind || hitBusy))) {
                await assert.rejects(fs.rename(p, dest));
                continue;
              }
              await fs.rename(p, dest);
              const target = hit && hit !== p ? hit : dest;
              for (const [q, n] of [...model]) {
                if (q === p || q.startsWith(`${p}/`)) {
                  model.delete(q);
                  model.set(target + q.slice(p.length), n);
                }
              }
            }
          }
        }
        assert.deepEqual(sorted(await fsListing(fs)), sorted(treeListing(model)));
        const cs = fs.layout.clusterSize;
        const used = [...model.values()].reduce((sum, n) => sum + (n.kind === 'dir' ? 1 : Math.ceil(n.data.byteLength / cs)), 0);
        const space = await fs.space();
        assert.ok(space.totalBytes - space.freeBytes >= used * cs, 'every file and directory has its clusters');
        await fs.close();
        const reopened = await FatFs.open(disk, { readOnly: true });
        assert.deepEqual(sorted(await fsListing(reopened)), sorted(treeListing(model)));
        assert.equal((await reopened.space()).freeBytes, space.freeBytes, 'the free count survives reopening');
      }),
      { numRuns: 40 },
    );
  });

  test('the same tree gives the same image, byte for byte (pinned hash)', async () => {
    const build = async (): Promise<string> => {
      const { disk, fs } = await freshFs(40 * MiB, 'fat32');
      for (const [p, n] of [...randomTree(7, { files: 40 })].sort(([a], [b]) => a.length - b.length)) {
        if (n.kind === 'dir') await fs.mkdir(p);
        else await fs.writeFile(p, n.data);
      }
      await fs.close();
      return sha(disk.bytes);
    };
    const first = await build();
    assert.equal(await build(), first);
    assert.equal(first, PINNED_IMAGE_SHA256);
  });

  test('a cluster chain that loops or points outside the volume is a CorruptImageError', async () => {
    const { disk, fs } = await freshFs(16 * MiB, 'fat16');
    await fs.writeFile('/chain.bin', new Uint8Array(5 * fs.layout.clusterSize));
    await fs.close();
    const fatAt = fs.layout.fatOffset;
    const view = new DataView(disk.bytes.buffer, disk.bytes.byteOffset);
    const first = 2; // the file's first cluster on a fresh FAT16 volume
    view.setUint16(fatAt + (first + 2) * 2, first, true); // the third cluster links back to the first
    await assert.rejects(async () => (await FatFs.open(disk, { readOnly: true })).openFile('/chain.bin'), CorruptImageError);
    view.setUint16(fatAt + (first + 2) * 2, 0xfff0, true); // a link past the last cluster
    await assert.rejects(async () => (await FatFs.open(disk, { readOnly: true })).openFile('/chain.bin'), CorruptImageError);
    view.setUint16(fatAt + (first + 2) * 2, 0, true); // a link to a free cluster
    await assert.rejects(async () => (await FatFs.open(disk, { readOnly: true })).openFile('/chain.bin'), CorruptImageError);
  });

  test('files read back as Disks; openFileForWriting writes in place', async () => {
    const { disk, fs } = await freshFs(8 * MiB);
    const data = new Uint8Array(10_000).map((_, i) => i & 0xff);
    await fs.writeFile('/dir-less file.bin', data);
    const w = await fs.openFileForWriting('/DIR-LESS FILE.BIN');
    await w.write(new Uint8Array([9, 9, 9]), 4095);
    const r = await fs.openFile('/dir-less file.bin');
    const back = await readAt(r, 0, r.size);
    data.set([9, 9, 9], 4095);
    assert.deepEqual(back, data);
    await fs.close();
    assert.equal((await (await FatFs.open(disk)).stat('/dir-less file.bin')).size, 10_000);
  });
});

const PINNED_IMAGE_SHA256 = '042ea59c4b9dc802b4a0cf964ca47e39c80bb6b33cde80f24d5472fd57c1f9c5';

test('createFile reads as zeros even over clusters a deleted file left its bytes in', async () => {
  const disk = new MemoryDisk(64 * 2 ** 20);
  await mkfsFat(disk, { label: 'ZERO' });
  const fs = await FatFs.open(disk);
  await fs.writeFile('/junk.bin', new Uint8Array(3 * 2 ** 20).fill(0xa5));
  await fs.unlink('/junk.bin');
  const f = await fs.createFile('/overlay.img', { size: 3 * 2 ** 20 });
  const back = await readAt(f, 0, f.size);
  assert.ok(back.every((b) => b === 0), 'no byte of the deleted file shows through');
  await fs.close();
});

describe('mkfsFat refusals', () => {
  test('FAT16 asked for on a volume too small for 4085 clusters is refused (every reader would take it for FAT12)', async () => {
    await assert.rejects(mkfsFat(new MemoryDisk(8 * MiB), { type: 'fat16' }), /too few for FAT16/);
    const ok = await mkfsFat(new MemoryDisk(16 * MiB), { type: 'fat16' });
    assert.equal(ok.type, 'fat16');
  });
});
