/**
 * quickNode (the one-pass record builder) against the general path (decodeRecord, decodeEntries,
 * rockRidge, nodeOf): on records of every shape, and on randomly mutated copies of them, whatever
 * quickNode accepts the general path must turn into the same node; what it declines is left to the
 * general path (which then decodes it or throws its typed error).
 */
import '../helpers/setup.ts';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Buffer } from 'node:buffer';
import fc from 'fast-check';
import type { Disk } from '../../src/io/disk.ts';
import { MemoryDisk } from '../../src/io/disk.ts';
import { CorruptImageError, UnsupportedFeatureError } from '../../src/errors.ts';
import { SECTOR, encodeShortDate } from '../../src/fs/iso9660/format.ts';
import { FLAG_ASSOCIATED, FLAG_DIRECTORY, FLAG_MULTI_EXTENT, decodeRecord, encodeRecord, splitRecords } from '../../src/fs/iso9660/record.ts';
import { NM_CONTINUE, decodeEntries, encodeCE, encodeEntry, encodeLink, encodeNM, encodePN, encodePX, encodeSL, encodeTF, rockRidge } from '../../src/fs/iso9660/susp.ts';
import { TimeMemo, extentOf, nameOf, nodeOf, quickNode, type IsoNode, type Namespace, type QuickContext } from '../../src/fs/iso9660/node.ts';
import { SAMPLE, buildIso } from './build.ts';

const DISK_SIZE = 4 * 1024 * 1024;
const disk: Disk = new MemoryDisk(DISK_SIZE, { readOnly: true });
const enc = new TextEncoder();
const t = (sec: number) => ({ sec, nsec: 0 });

type Outcome = { readonly kind: 'node'; readonly node: IsoNode } | { readonly kind: 'elsewhere' } | { readonly kind: 'error' };

/** What fs.ts's general path makes of a record alone (CE areas and relocations need the disk: 'elsewhere'). */
function general(b: Uint8Array, ctx: QuickContext): Outcome {
  try {
    const record = decodeRecord(b.subarray(0, b[0]!), 0);
    if (record.flags & FLAG_ASSOCIATED || record.multiExtent) return { kind: 'elsewhere' };
    extentOf(disk, record, ctx.blockSize, 0);
    if (ctx.namespace !== 'rockridge') return { kind: 'node', node: nodeOf(disk, ctx.blockSize, nameOf(record, ctx.namespace, undefined), record, undefined) };
    const su = record.systemUse;
    const inline = ctx.skip <= su.byteLength ? decodeEntries(su.subarray(ctx.skip), 0) : [];
    if (inline.some((e) => e.sig === 'CE')) return { kind: 'elsewhere' };
    const rr = rockRidge(inline);
    if (rr.childLink !== undefined || rr.relocated) return { kind: 'elsewhere' };
    return { kind: 'node', node: nodeOf(disk, ctx.blockSize, nameOf(record, 'rockridge', rr), record, rr) };
  } catch (e) {
    if (e instanceof CorruptImageError || e instanceof UnsupportedFeatureError) return { kind: 'error' };
    throw e;
  }
}

function context(namespace: Namespace, skip = 0): QuickContext {
  return { namespace, skip, blockSize: SECTOR, diskSize: DISK_SIZE, times: new TimeMemo() };
}

/** A record at offset 0 of a sector-sized buffer (quickNode's precondition: it lies inside b). */
function inSector(record: Uint8Array): Buffer {
  const b = Buffer.alloc(SECTOR);
  b.set(record.subarray(0, SECTOR));
  return b;
}

function rec(name: Uint8Array, su: Uint8Array, flags = 0, extra: { extent?: number; dataLength?: number; fileUnitSize?: number } = {}): Uint8Array {
  return encodeRecord({
    extAttrLength: 0,
    extent: extra.extent ?? 100,
    dataLength: extra.dataLength ?? (flags & FLAG_DIRECTORY ? SECTOR : 1234),
    recorded: t(1_700_000_000),
    flags,
    fileUnitSize: extra.fileUnitSize ?? 0,
    interleaveGap: 0,
    volumeSequence: 1,
    name,
    systemUse: su,
  });
}

const cat = (...parts: Uint8Array[]) => Uint8Array.from(parts.flatMap((p) => [...p]));
const px = (mode: number, ino?: number) => encodePX({ mode, nlink: 2, uid: 1000, gid: 100, ino });
const tf = (long: boolean, kinds: ('creation' | 'modify' | 'access' | 'attributes' | 'backup')[]) => encodeTF({ long, ...Object.fromEntries(kinds.map((k, i) => [k, t(1_600_000_000 + i * 61)])) });
const nm = (name: string, flags = 0) => encodeNM({ flags, name: enc.encode(name) });
const isoName = enc.encode('AN_EMPTY.TXT;1');

/** Rock Ridge records of many shapes: the quick ones and every kind it must leave to the general path. */
function rockRidgeSeeds(): Uint8Array[] {
  const file = 0o100644;
  const dir = 0o040755;
  return [
    rec(isoName, cat(px(file), tf(false, ['modify', 'access', 'attributes']), nm('an-empty-file-with-a-longish-name-1.txt'))),
    rec(enc.encode('D1'), cat(px(dir, 77), tf(false, ['modify']), nm('a directory')), FLAG_DIRECTORY),
    rec(isoName, cat(nm('Ünïcødé 日本語 ✓.txt'), px(0o104755), tf(false, ['creation', 'modify', 'access', 'attributes', 'backup']))),
    rec(isoName, cat(px(file), tf(true, ['modify', 'access']), nm('long-form times'))),
    rec(isoName, cat(px(file), tf(false, []), nm('TF without times'))),
    rec(isoName, cat(px(file))), // no NM: the ISO name
    rec(isoName, new Uint8Array()),
    rec(isoName, cat(px(file), nm('split-', NM_CONTINUE), nm('name'))),
    rec(isoName, cat(px(file), nm('', 0x02))), // NM '.'
    rec(isoName, cat(px(file), nm('first'), nm('second'))),
    rec(isoName, cat(px(file), encodeEntry('ZF', new Uint8Array(12)), nm('unknown entry skipped'))),
    rec(isoName, cat(px(file), nm('stops at ST'), encodeEntry('ST', new Uint8Array()), Uint8Array.of(0x50, 0x58, 2, 1))),
    rec(isoName, cat(px(file), nm('padded'), new Uint8Array(6))),
    rec(isoName, cat(px(0o120777), encodeSL({ flags: 0, components: [{ flags: 0, content: enc.encode('target') }] }), nm('link'))),
    rec(isoName, cat(px(0o020644), encodePN({ high: 0, low: 0x0801 }), nm('char device'))),
    rec(isoName, cat(px(0o010644), nm('fifo'))),
    rec(isoName, cat(px(0o140644), nm('socket'))),
    rec(isoName, cat(encodeCE({ block: 30, offset: 0, length: 100 }))),
    rec(enc.encode('D2'), cat(px(dir), nm('moved'), encodeLink('CL', 40)), 0),
    rec(enc.encode('D3'), cat(px(dir), nm('relocated'), encodeEntry('RE', new Uint8Array())), FLAG_DIRECTORY),
    rec(isoName, cat(px(file), encodeEntry('SF', new Uint8Array(17)), nm('sparse'))),
    rec(isoName, cat(px(file), nm('multi')), FLAG_MULTI_EXTENT),
    rec(isoName, cat(px(file), nm('associated')), FLAG_ASSOCIATED),
    rec(isoName, cat(px(file), nm('interleaved')), 0, { fileUnitSize: 4 }),
    rec(isoName, cat(px(file), nm('past the disk')), 0, { extent: DISK_SIZE / SECTOR, dataLength: 1 }),
    rec(isoName, cat(px(file), nm('empty at the end')), 0, { extent: DISK_SIZE / SECTOR + 5, dataLength: 0 }),
    rec(isoName, cat(px(dir), nm('PX says dir, record says file'))),
    rec(isoName, cat(px(file), nm('truncated TF'), encodeEntry('TF', cat(Uint8Array.of(0x0e), encodeShortDate(t(1e9)), encodeShortDate(t(1e9)))))),
    rec(isoName, cat(nm('truncated PX'), encodeEntry('PX', new Uint8Array(24)))),
  ];
}

/** Records of images from test/iso9660/build.ts (the directories, past each '.' and '..'). */
function builtSeeds(): Uint8Array[] {
  const out: Uint8Array[] = [];
  const image = buildIso(SAMPLE, { boot: true });
  for (let block = 18; block < 30; block++) {
    const sector = image.subarray(block * SECTOR, (block + 1) * SECTOR);
    try {
      for (const [r, at] of splitRecords(sector, 0, SECTOR)) if (r.name[0]! > 1 || r.name.byteLength > 1) out.push(sector.slice(at, at + sector[at]!));
    } catch {
      // not a directory sector
    }
  }
  assert.ok(out.length >= 5, `records found in the built image: ${out.length}`);
  return out;
}

function jolietSeeds(): Uint8Array[] {
  const ucs2 = (s: string) => Uint8Array.from([...s].flatMap((c) => [c.charCodeAt(0) >> 8, c.charCodeAt(0) & 0xff]));
  return [rec(ucs2('a Joliet name.txt;1'), new Uint8Array()), rec(ucs2('dir'), new Uint8Array(), FLAG_DIRECTORY), rec(ucs2('Ünï ✓;1'), Uint8Array.of(1, 2, 3))];
}

function isoSeeds(): Uint8Array[] {
  return [rec(isoName, new Uint8Array()), rec(enc.encode('DIR'), new Uint8Array(), FLAG_DIRECTORY), rec(Uint8Array.of(0x41, 0x80, 0x9f, 0xe9), new Uint8Array()), rec(enc.encode('A.'), new Uint8Array())];
}

function check(record: Uint8Array, ctx: QuickContext): 'quick' | 'declined' {
  const b = inSector(record);
  const quick = quickNode(b, 0, ctx);
  if (quick === undefined) return 'declined';
  const g = general(b, ctx);
  assert.equal(g.kind, 'node', `quickNode accepted a record the general path ${g.kind === 'error' ? 'refuses' : 'does elsewhere'}: ${Buffer.from(record).toString('hex')}`);
  assert.deepEqual(quick, (g as { node: IsoNode }).node);
  return 'quick';
}

test('iso9660 quick: plain records give the general path node; everything else is declined', () => {
  const rr = rockRidgeSeeds().map((r) => check(r, context('rockridge')));
  // The first three records are the plain shapes; the long-form TF, split or special NM, SL, PN,
  // CE, CL, RE, SF, multi-extent, associated and refused records are declined.
  assert.deepEqual(rr.slice(0, 3), ['quick', 'quick', 'quick']);
  const declined = rockRidgeSeeds().filter((_, i) => rr[i] === 'declined').length;
  assert.ok(declined >= 12, `declined ${declined}`);
  for (const r of builtSeeds()) check(r, context('rockridge'));
  for (const r of jolietSeeds()) assert.equal(check(r, context('joliet')), 'quick');
  for (const r of isoSeeds()) assert.equal(check(r, context('iso')), 'quick');
  // LEN_SKP bytes before the entries.
  assert.equal(check(rec(isoName, cat(Uint8Array.of(0xaa, 0xbb), px(0o100600), nm('skipped two'))), context('rockridge', 2)), 'quick');
  assert.equal(check(rec(isoName, Uint8Array.of(1)), context('rockridge', 7)), 'quick'); // LEN_SKP past the area: no entries
});

test('iso9660 quick: times are shared between nodes, not copied', () => {
  const ctx = context('rockridge');
  const a = quickNode(inSector(rockRidgeSeeds()[0]!), 0, ctx)!;
  const b = quickNode(inSector(rockRidgeSeeds()[0]!), 0, ctx)!;
  assert.equal(a.mtime, b.mtime);
  assert.equal(a.atime, b.atime);
  assert.deepEqual(a, b);
});

test('iso9660 quick: property: on mutated records quickNode gives the general path node or declines', () => {
  const seeds = [
    ...rockRidgeSeeds().map((r) => ({ r, ns: 'rockridge' as const })),
    ...builtSeeds().map((r) => ({ r, ns: 'rockridge' as const })),
    ...jolietSeeds().map((r) => ({ r, ns: 'joliet' as const })),
    ...isoSeeds().map((r) => ({ r, ns: 'iso' as const })),
  ];
  const seen = { quick: 0, declined: 0 };
  fc.assert(
    fc.property(
      fc.nat(seeds.length - 1),
      fc.array(fc.tuple(fc.nat(255), fc.nat(255)), { minLength: 1, maxLength: 4 }),
      fc.constantFrom(0, 0, 0, 1, 4),
      (i, changes, skip) => {
        const { r, ns } = seeds[i]!;
        const m = new Uint8Array(256);
        m.set(r);
        for (const [at, value] of changes) m[at % Math.max(r.byteLength, 34)] = value;
        seen[check(m.subarray(0, Math.max(m[0]!, 1)), context(ns, ns === 'rockridge' ? skip : 0))]++;
      },
    ),
    { numRuns: 20_000 },
  );
  assert.ok(seen.quick > 1000 && seen.declined > 1000, JSON.stringify(seen));
});
