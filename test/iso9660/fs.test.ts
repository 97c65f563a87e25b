/** Iso9660Fs over images from test/iso9660/build.ts, checked against the tree they were built from. */
import '../helpers/setup.ts';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { MemoryDisk, readAt } from '../../src/io/disk.ts';
import { CorruptImageError, NotFoundError, UnsupportedFeatureError } from '../../src/errors.ts';
import { Iso9660Fs } from '../../src/fs/iso9660/index.ts';
import { encodeCE, encodeEntry } from '../../src/fs/iso9660/susp.ts';
import { SECTOR } from '../../src/fs/iso9660/format.ts';
import { SAMPLE, buildIso, type TestNode } from './build.ts';

async function listTree(fs: Iso9660Fs, path = ''): Promise<string[]> {
  const out: string[] = [];
  for (const e of await fs.readdir(path || '/')) {
    const p = `${path}/${e.name}`;
    const st = await fs.stat(p);
    let extra = '';
    if (st.kind === 'symlink') extra = await fs.readlink(p);
    if (st.kind === 'file') {
      const d = await fs.openFile(p);
      extra = createHash('sha256').update(await readAt(d, 0, d.size)).digest('hex').slice(0, 16);
    }
    out.push(`${st.kind} ${st.mode.toString(8)} ${st.kind === 'symlink' ? '' : st.size} ${p} ${extra}`);
    if (st.kind === 'dir') out.push(...(await listTree(fs, p)));
  }
  return out;
}

function modelTree(node: TestNode & { kind: 'dir' }, path = ''): string[] {
  const out: string[] = [];
  for (const c of node.children) {
    const p = `${path}/${c.name}`;
    if (c.kind === 'file') out.push(`file ${(c.mode ?? 0o644).toString(8)} ${c.data.byteLength} ${p} ${createHash('sha256').update(c.data).digest('hex').slice(0, 16)}`);
    else if (c.kind === 'symlink') out.push(`symlink 777  ${p} ${c.target}`);
    else {
      out.push(`dir ${(c.mode ?? 0o755).toString(8)} ${'?'} ${p} `);
      out.push(...modelTree(c, p));
    }
  }
  return out;
}

const sameIgnoringDirSize = (actual: string[], model: string[]) =>
  assert.deepEqual(actual.map((l) => (l.startsWith('dir ') ? l.replace(/^(dir \S+) \d+/, '$1 ?') : l)), model);

for (const [label, options] of [
  ['inline Rock Ridge', {}],
  ['Rock Ridge in CE continuation areas, NM and SL split', { continuation: true, splitAt: 7 }],
] as const) {
  test(`iso9660 fs: ${label}: names, modes, symlinks, multi-extent file contents`, async () => {
    const image = buildIso(SAMPLE, options);
    const fs = await Iso9660Fs.open(new MemoryDisk(image, { readOnly: true }));
    assert.equal(fs.namespace, 'rockridge');
    sameIgnoringDirSize(await listTree(fs), modelTree(SAMPLE));
    assert.equal((await fs.extents('/multi-extent.bin')).length, 3);
    const st = await fs.stat('/sub');
    assert.equal(st.uid, 1000);
    assert.equal(st.mtime.sec, 1_700_000_000);
    const multi = await fs.openFile('/multi-extent.bin');
    const mid = await readAt(multi, 2 * SECTOR - 5, 2 * SECTOR + 10); // across two extent boundaries
    assert.deepEqual(mid, (SAMPLE.children[2] as { data: Uint8Array }).data.subarray(2 * SECTOR - 5, 4 * SECTOR + 5));
    await assert.rejects(fs.stat('/nope'), NotFoundError);
    await assert.rejects(fs.readdir('/empty'), NotFoundError);
    await assert.rejects(fs.stat('/sub/../empty'), NotFoundError);
    assert.equal(fs.label, 'TESTISO');
  });
}

test('iso9660 fs: the builder is deterministic (pinned hash)', () => {
  const h = createHash('sha256').update(buildIso(SAMPLE, { boot: true, continuation: true, splitAt: 7 })).digest('hex');
  assert.equal(h.slice(0, 16), PINNED);
});
const PINNED = '37752250bc545797';

test('iso9660 fs: plain ISO names when Rock Ridge is not preferred', async () => {
  const fs = await Iso9660Fs.open(new MemoryDisk(buildIso(SAMPLE)), { prefer: 'iso' });
  assert.equal(fs.namespace, 'iso');
  const names = (await fs.readdir('/')).map((e) => e.name);
  assert.deepEqual(names, SAMPLE.children.map((c, i) => (c.kind === 'dir' ? `D${i}` : `F${i}`)));
  assert.equal((await fs.stat('/F2')).size, 5 * SECTOR + 123);
});

test('iso9660 fs: boot catalog names the BIOS and EFI images and their files', async () => {
  const fs = await Iso9660Fs.open(new MemoryDisk(buildIso(SAMPLE, { boot: true })));
  const boot = await fs.bootCatalog();
  assert.ok(boot);
  const [bios, efi] = boot.images;
  assert.equal(bios!.platform, 'x86');
  assert.equal(bios!.path, '/boot.bin');
  assert.equal(efi!.platform, 'efi');
  assert.equal(efi!.path, '/efi.img');
  assert.deepEqual(efi!.range, { offset: (await fs.extents('/efi.img'))[0]!.offset, length: 10_000 });
  assert.equal(efi!.sectorCount, Math.ceil(10_000 / 512));
  assert.equal(await (await Iso9660Fs.open(new MemoryDisk(buildIso(SAMPLE)))).bootCatalog(), undefined);
});

/** Finds the first CE entry's offset in the image (the first continued record). */
function findBytes(hay: Uint8Array, needle: Uint8Array, from = 0): number {
  outer: for (let i = from; i + needle.byteLength <= hay.byteLength; i++) {
    for (let j = 0; j < needle.byteLength; j++) if (hay[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

test('iso9660 fs: a CE chain pointing at itself is a typed cycle error; past the image, a typed range error', async () => {
  const image = buildIso(SAMPLE, { continuation: true });
  const fs0 = await Iso9660Fs.open(new MemoryDisk(image.slice()));
  assert.ok((await fs0.readdir('/')).length > 0);
  // Rewrite the first continuation area so it starts with a CE to itself.
  const ce = findBytes(image, Uint8Array.of(0x43, 0x45, 28, 1), 18 * SECTOR);
  const dv = new DataView(image.buffer);
  const block = dv.getUint32(ce + 4, true);
  const offset = dv.getUint32(ce + 12, true);
  const loop = image.slice();
  loop.set([...encodeCE({ block, offset, length: 32 }), ...encodeEntry('ST', new Uint8Array())], block * SECTOR + offset);
  const fs1 = await Iso9660Fs.open(new MemoryDisk(loop));
  await assert.rejects(fs1.readdir('/'), (e: unknown) => e instanceof CorruptImageError && /cycle/.test(e.message));
  const far = image.slice();
  far.set(encodeCE({ block: 1_000_000, offset: 0, length: 28 }), ce);
  const fs2 = await Iso9660Fs.open(new MemoryDisk(far));
  await assert.rejects(fs2.readdir('/'), (e: unknown) => e instanceof CorruptImageError && e.field === 'susp.CE');
  const sf = image.slice();
  sf.set([...encodeEntry('SF', new Uint8Array(17)), ...encodeEntry('ST', new Uint8Array())], block * SECTOR + offset);
  const fs3 = await Iso9660Fs.open(new MemoryDisk(sf));
  await assert.rejects(fs3.readdir('/'), UnsupportedFeatureError);
});

test('iso9660 fs: a directory listed twice reads identically (cached, and re-read after eviction)', async () => {
  for (const options of [{}, { continuation: true, splitAt: 7 }]) {
    const image = buildIso(SAMPLE, options);
    for (const prefer of ['rockridge', 'joliet', 'iso'] as const) {
      const fresh = async (cachedDirectories?: number, cachedEntries?: number) => Iso9660Fs.open(new MemoryDisk(image, { readOnly: true }), { prefer, cachedDirectories, cachedEntries });
      const cached = await fresh();
      const first = await listTree(cached);
      assert.deepEqual(await listTree(cached), first); // every listing from the cache
      const evicting = await fresh(1); // each directory evicts the other
      assert.deepEqual(await listTree(evicting), first);
      assert.deepEqual(await listTree(evicting), first);
      assert.deepEqual(await evicting.readdir('/'), await cached.readdir('/'));
      const few = await fresh(undefined, 3); // the root alone has more entries: nothing but the listing in use stays
      assert.deepEqual(await listTree(few), first);
      assert.deepEqual(await listTree(few), first);
    }
  }
});

test('iso9660 fs: a path resolves the same whether or not its directory was resolved last', async () => {
  const image = buildIso(SAMPLE);
  const paths = ['/sub/inner.txt', '//sub//inner.txt', '/sub/inner.txt/', '/sub/.', '/sub/..', '/sub/./inner.txt', '/sub/nope', 'sub/inner.txt', '/sub', '/sub/', '/empty', '/empty/x', '//empty', '/', '//', '/abs', '/multi-extent.bin', '/abs/inner.txt', '/nop/inner.txt', '/sub/inner.txt/..'];
  const outcome = async (fs: Iso9660Fs, p: string) => {
    try {
      return { stat: await fs.stat(p) };
    } catch (e) {
      return { error: `${(e as Error).constructor.name}: ${(e as Error).message}` };
    }
  };
  const expected = new Map<string, unknown>();
  for (const p of paths) expected.set(p, await outcome(await Iso9660Fs.open(new MemoryDisk(image)), p)); // a fresh fs each: nothing resolved before
  const fs = await Iso9660Fs.open(new MemoryDisk(image));
  for (const before of ['/sub', '/sub/', '//sub', '/', '//', '/sub/inner.txt', '/empty', '/nope/x']) {
    for (const p of paths) {
      await fs.readdir(before).catch(() => fs.stat(before).catch(() => undefined));
      assert.deepEqual(await outcome(fs, p), expected.get(p), `${p} after ${before}`);
    }
  }
  assert.equal(await fs.readlink('/rel'), '../x/y');
  assert.equal((await fs.extents('/multi-extent.bin')).length, 3);
});

test('iso9660 fs: both-endian fields that disagree are corrupt', async () => {
  const image = buildIso(SAMPLE);
  image[16 * SECTOR + 84]! ^= 1; // volume space size, big-endian copy
  await assert.rejects(Iso9660Fs.open(new MemoryDisk(image)), (e: unknown) => e instanceof CorruptImageError && e.field === 'descriptor.volumeSpaceSize');
});

const nameArb = fc.string({ unit: fc.constantFrom('a', 'b', 'Z', '0', '-', '.', ' ', 'é', '日'), minLength: 1, maxLength: 40 }).filter((s) => s !== '.' && s !== '..');
const treeArb: fc.Arbitrary<TestNode & { kind: 'dir' }> = fc.letrec<{ dir: TestNode & { kind: 'dir' }; node: TestNode }>((tie) => ({
  dir: fc.record({
    kind: fc.constant('dir' as const),
    name: nameArb,
    mode: fc.constantFrom(0o755, 0o700, 0o1777),
    children: fc.uniqueArray(tie('node'), { maxLength: 6, selector: (n) => n.name }),
  }),
  node: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    fc.record({ kind: fc.constant('file' as const), name: nameArb, mode: fc.constantFrom(0o644, 0o600, 0o4755), data: fc.uint8Array({ maxLength: 9000 }), extentSize: fc.constantFrom(undefined, SECTOR, 2 * SECTOR) }),
    fc.record({ kind: fc.constant('symlink' as const), name: nameArb, target: fc.constantFrom('/', '/a/b', '../c', 'd/e/f', 'x') }),
    tie('dir'),
  ),
})).dir;

test('iso9660 fs: property: any tree reads back as built (inline and continued Rock Ridge)', async () => {
  await fc.assert(
    fc.asyncProperty(treeArb, fc.boolean(), fc.integer({ min: 1, max: 40 }), async (tree, continuation, splitAt) => {
      const fs = await Iso9660Fs.open(new MemoryDisk(buildIso(tree, { continuation, splitAt })));
      sameIgnoringDirSize(await listTree(fs), modelTree(tree));
    }),
    { numRuns: 60 },
  );
});
