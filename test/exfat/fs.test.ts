// ExfatFs against a simple in-memory model: random operation sequences, then the same tree (names,
// kinds, bytes) from the live volume and from a fresh open; plus the write rules (contiguous files,
// fragmented chains, directory growth, VolumeDirty, ValidDataLength) and a pinned image hash.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fc from 'fast-check';
import '../helpers/setup.ts';
import { AlreadyExistsError, CorruptImageError, NotFoundError, ReadOnlyError, UnsupportedFeatureError, UsageError } from '../../src/errors.ts';
import { MemoryDisk, readAt } from '../../src/io/disk.ts';
import { ExfatFs, ExfatRepairError, mkfsExfat } from '../../src/fs/exfat/index.ts';

const FIXED = Date.UTC(2026, 0, 2, 3, 4, 5, 670);
const now = () => FIXED;

async function fresh(size = 16 << 20, label = 'TEST'): Promise<{ disk: MemoryDisk; fs: ExfatFs }> {
  const disk = new MemoryDisk(size);
  await mkfsExfat(disk, { label, serial: 0x1234abcd });
  return { disk, fs: await ExfatFs.open(disk, { now }) };
}

type Model = Map<string, Uint8Array | 'dir'>;

/** Every path in the volume with its bytes (or 'dir'), walked through readdir/stat/openFile. */
export async function snapshot(fs: ExfatFs, dir = '/', out: Model = new Map()): Promise<Model> {
  for (const e of await fs.readdir(dir)) {
    const path = dir === '/' ? `/${e.name}` : `${dir}/${e.name}`;
    if (e.kind === 'dir') {
      out.set(path, 'dir');
      await snapshot(fs, path, out);
    } else {
      const st = await fs.stat(path);
      const d = await fs.openFile(path);
      assert.equal(d.size, st.size);
      out.set(path, await readAt(d, 0, d.size));
    }
  }
  return out;
}

function sorted(m: Model): [string, string][] {
  return [...m].map(([k, v]): [string, string] => [k, v === 'dir' ? 'dir' : createHash('sha1').update(v).digest('hex')]).sort();
}

const nameArb = fc.constantFrom('a', 'B', 'dir', 'Ünïcode', 'a long name that needs more than one name entry', '中文', 'x.txt', 'X.TXT');

type Op =
  | { op: 'mkdir' | 'rmdir' | 'unlink'; path: string[] }
  | { op: 'write'; path: string[]; size: number; fill: number }
  | { op: 'create'; path: string[]; size: number; at: number; len: number }
  | { op: 'rename'; path: string[]; to: string[] };

const pathArb = fc.array(nameArb, { minLength: 1, maxLength: 3 });
const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ op: fc.constantFrom('mkdir' as const, 'rmdir' as const, 'unlink' as const), path: pathArb }),
  fc.record({ op: fc.constant('write' as const), path: pathArb, size: fc.oneof(fc.constant(0), fc.nat(300), fc.integer({ min: 4000, max: 20000 })), fill: fc.nat(255) }),
  fc.record({ op: fc.constant('create' as const), path: pathArb, size: fc.integer({ min: 1, max: 30000 }), at: fc.nat(30000), len: fc.nat(5000) }),
  fc.record({ op: fc.constant('rename' as const), path: pathArb, to: pathArb }),
);

const key = (parts: string[]) => '/' + parts.join('/');
const upper = (p: string) => p.toUpperCase();

/** The model's view of exFAT semantics: case-insensitive names that keep the case they were made with. */
class TreeModel {
  readonly m: Model = new Map();
  find(path: string): string | undefined {
    for (const k of this.m.keys()) if (upper(k) === upper(path)) return k;
    return undefined;
  }
  parentOk(parts: string[]): boolean {
    if (parts.length === 1) return true;
    const p = this.find(key(parts.slice(0, -1)));
    return p !== undefined && this.m.get(p) === 'dir';
  }
  children(dir: string): string[] {
    return [...this.m.keys()].filter((k) => upper(k).startsWith(upper(dir) + '/'));
  }
  actualPath(parts: string[]): string {
    const parent = parts.length === 1 ? '' : this.find(key(parts.slice(0, -1)))!;
    return `${parent}/${parts[parts.length - 1]}`;
  }
}

async function apply(fs: ExfatFs, model: TreeModel, o: Op): Promise<void> {
  const path = key(o.path);
  const existing = model.find(path);
  const parentOk = model.parentOk(o.path);
  const attempt = async (fn: () => Promise<void>, ok: boolean, onOk: () => void) => {
    if (ok) {
      await fn();
      onOk();
    } else {
      await assert.rejects(fn(), (e: unknown) => e instanceof NotFoundError || e instanceof AlreadyExistsError || (e as Error).name === 'UsageError', `${o.op} ${path}`);
    }
  };
  switch (o.op) {
    case 'mkdir':
      return attempt(() => fs.mkdir(path), parentOk && !existing, () => model.m.set(model.actualPath(o.path), 'dir'));
    case 'rmdir':
      return attempt(() => fs.rmdir(path), !!existing && model.m.get(existing) === 'dir' && model.children(existing).length === 0, () => model.m.delete(existing!));
    case 'unlink':
      return attempt(() => fs.unlink(path), !!existing && model.m.get(existing) !== 'dir', () => model.m.delete(existing!));
    case 'write': {
      const data = new Uint8Array(o.size).fill(o.fill);
      for (let i = 0; i < data.length; i += 97) data[i] = i & 0xff;
      return attempt(() => fs.writeFile(path, data), parentOk && (!existing || model.m.get(existing) !== 'dir'), () => model.m.set(existing ?? model.actualPath(o.path), data));
    }
    case 'create': {
      const data = new Uint8Array(o.size);
      const at = Math.min(o.at, o.size);
      const len = Math.min(o.len, o.size - at);
      const piece = new Uint8Array(len).map((_, i) => (i * 31 + 7) & 0xff);
      data.set(piece, at);
      return attempt(
        async () => {
          const d = await fs.createFile(path, { size: o.size });
          await d.write(piece, at);
          await d.close();
        },
        parentOk && !existing,
        () => model.m.set(model.actualPath(o.path), data),
      );
    }
    case 'rename': {
      const to = key(o.to);
      const target = model.find(to);
      const src = existing;
      const srcIsDir = src !== undefined && model.m.get(src) === 'dir';
      const same = src !== undefined && target !== undefined && upper(src) === upper(target);
      const intoSelf = srcIsDir && upper(to).startsWith(upper(src!) + '/');
      let ok = !!src && model.parentOk(o.to) && !intoSelf;
      if (ok && target && !same) {
        const tIsDir = model.m.get(target) === 'dir';
        ok = tIsDir === srcIsDir && (!tIsDir || model.children(target).length === 0);
      }
      return attempt(() => fs.rename(path, to), ok, () => {
        const dest = model.actualPath(o.to);
        const moved = [src!, ...(srcIsDir ? model.children(src!) : [])].map((k) => [k, model.m.get(k)!] as const);
        if (target && !same) model.m.delete(target);
        for (const [k] of moved) model.m.delete(k);
        for (const [k, v] of moved) model.m.set(dest + k.slice(src!.length), v);
      });
    }
  }
}

describe('ExfatFs against a model', () => {
  test('random operation sequences leave the tree the model describes, also after reopening', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 25 }), async (ops) => {
        const { disk, fs } = await fresh(8 << 20);
        const model = new TreeModel();
        for (const o of ops) await apply(fs, model, o);
        assert.deepEqual(sorted(await snapshot(fs)), sorted(model.m));
        await fs.close();
        const again = await ExfatFs.open(disk);
        assert.deepEqual(sorted(await snapshot(again)), sorted(model.m));
        // Allocation: every cluster is either free or reachable exactly once.
        assert.deepEqual(await again.verify(), []);
      }),
      { numRuns: 25 },
    );
  });
});

describe('errors', () => {
  test('not exFAT, too small, read-only, bad names, no symlinks, non-empty rmdir', async () => {
    await assert.rejects(ExfatFs.open(new MemoryDisk(1 << 20)), CorruptImageError);
    await assert.rejects(mkfsExfat(new MemoryDisk(2 << 20)), UsageError);
    await assert.rejects(mkfsExfat(new MemoryDisk(8 << 20), { label: 'TWELVE CHARS' }), UsageError);
    const { disk, fs } = await fresh();
    await fs.mkdir('/d');
    await fs.writeFile('/d/f', new Uint8Array(1));
    for (const bad of ['/a:b', '/x?', '/d/' + 'n'.repeat(256), '/back\\slash']) await assert.rejects(fs.writeFile(bad, new Uint8Array(1)), UsageError, bad);
    await assert.rejects(fs.readlink('/d/f'), UnsupportedFeatureError);
    await assert.rejects(fs.rmdir('/d'), (e: unknown) => e instanceof AlreadyExistsError && /ENOTEMPTY/.test(e.message));
    await assert.rejects(fs.unlink('/d'), NotFoundError);
    await assert.rejects(fs.rename('/d', '/d/inside'), UsageError);
    await assert.rejects(fs.stat('/d/f/g'), (e: unknown) => e instanceof NotFoundError && /ENOTDIR/.test(e.message));
    await fs.close();
    const ro = await ExfatFs.open(disk, { readOnly: true });
    await assert.rejects(ro.writeFile('/x', new Uint8Array(1)), ReadOnlyError);
    await assert.rejects((await ro.openFile('/d/f')).write(new Uint8Array(1), 0), ReadOnlyError);
  });

  test('a volume opened dirty is repaired by an open for writing, then clean; read-only, it stays dirty; what the repair cannot judge keeps it dirty', async () => {
    const { disk, fs } = await fresh();
    await fs.writeFile('/a', new Uint8Array(3 * fs.clusterSize).fill(1));
    await fs.close();
    disk.bytes[106]! |= 2;
    const ro = await ExfatFs.open(disk, { readOnly: true });
    assert.equal(ro.dirty, true);
    assert.equal(ro.repaired, undefined);
    const again = await ExfatFs.open(disk);
    assert.equal(again.wasDirty, true);
    assert.equal(again.dirty, true);
    assert.deepEqual(again.repaired, { lostClusters: 0, orphanEntries: 0, chainsEnded: 0, secondNames: 0 });
    await again.writeFile('/x', new Uint8Array(1));
    await again.close();
    assert.equal(disk.bytes[106]! & 2, 0, 'the earlier stop is repaired: clean');
    // A cluster of /a cleared in the bitmap: named but free, which no cut leaves. Refused, nothing written.
    const bitmapAt = fs.boot.clusterHeapOffset * 512;
    disk.bytes[bitmapAt]! &= ~0x20;
    disk.bytes[106]! |= 2;
    const before = disk.bytes.slice();
    await assert.rejects(ExfatFs.open(disk), (e: unknown) => e instanceof ExfatRepairError && /cluster 7 is in use but free/.test(e.message));
    assert.ok(Buffer.from(disk.bytes).equals(before), 'not one byte written');
    assert.equal((await ExfatFs.open(disk, { readOnly: true })).dirty, true);
  });

  test('a damaged main boot region: read from the backup, writes refused', async () => {
    const { disk, fs } = await fresh();
    await fs.writeFile('/kept', new Uint8Array([4, 2]));
    await fs.close();
    disk.bytes[80]! ^= 1; // FatOffset, covered by the main checksum
    const again = await ExfatFs.open(disk);
    assert.equal(again.usedBackupBootRegion, true);
    assert.deepEqual(await readAt(await again.openFile('/kept'), 0, 2), Uint8Array.of(4, 2));
    await assert.rejects(again.writeFile('/x', new Uint8Array(1)), (e: unknown) => e instanceof CorruptImageError && /backup/.test(e.message));
  });
});

describe('write rules', () => {
  test('verify() finds lost, doubly used and unmarked clusters', async () => {
    const { disk, fs } = await fresh();
    await fs.writeFile('/a', new Uint8Array(3 * fs.clusterSize).fill(1));
    await fs.close();
    assert.deepEqual(await (await ExfatFs.open(disk)).verify(), []);
    const b = fs.boot;
    const bitmapAt = b.clusterHeapOffset * 512;
    const byte0 = disk.bytes[bitmapAt]!;
    disk.bytes[bitmapAt + 100] = 0x01;
    assert.match((await (await ExfatFs.open(disk)).verify()).join(), /cluster 802 is marked in the bitmap but unused/);
    disk.bytes[bitmapAt + 100] = 0;
    disk.bytes[bitmapAt] = byte0 & ~0x20;
    assert.match((await (await ExfatFs.open(disk)).verify()).join(), /cluster 7 is in use but free/);
  });

  test('lookups are case-insensitive through the up-case table; names keep their case', async () => {
    const { fs } = await fresh();
    await fs.writeFile('/Ärger.TXT', new Uint8Array([1, 2, 3]));
    assert.equal((await fs.stat('/äRGER.txt')).size, 3);
    await assert.rejects(fs.writeFile('/ÄRGER.txt', new Uint8Array(1)).then(() => fs.mkdir('/ärger.txt')), AlreadyExistsError);
    assert.deepEqual((await fs.readdir('/')).map((e) => e.name), ['Ärger.TXT']);
  });

  test('VolumeDirty is set during changes and cleared by flush; PercentInUse is kept', async () => {
    const { disk, fs } = await fresh();
    const flags = () => new DataView(disk.bytes.buffer).getUint16(106, true);
    assert.equal(flags() & 2, 0);
    await fs.writeFile('/a', new Uint8Array(5000));
    assert.equal(flags() & 2, 2);
    await fs.flush();
    assert.equal(flags() & 2, 0);
    const reopened = await ExfatFs.open(disk);
    assert.equal(reopened.wasDirty, false);
  });

  test('a new file is one contiguous run when there is room, a FAT chain when the space is fragmented', async () => {
    const { disk, fs } = await fresh(8 << 20);
    const cs = fs.clusterSize;
    for (let i = 0; i < 20; i++) await fs.writeFile(`/f${i}`, new Uint8Array(cs).fill(i));
    for (let i = 0; i < 20; i += 2) await fs.unlink(`/f${i}`);
    const free = (await fs.space()).freeBytes;
    // Fill all but the ten holes, then a file bigger than any hole must be chained through them.
    const rest = await fs.createFile('/rest', { size: free - 10 * cs });
    await rest.close();
    const data = new Uint8Array(5 * cs).map((_, i) => (i >> 8) & 0xff);
    await fs.writeFile('/chained', data);
    assert.deepEqual(await readAt(await fs.openFile('/chained'), 0, data.length), data);
    await fs.close();
    const again = await ExfatFs.open(disk);
    assert.deepEqual(await readAt(await again.openFile('/chained'), 0, data.length), data);
    for (let i = 1; i < 20; i += 2) assert.deepEqual(await readAt(await again.openFile(`/f${i}`), 0, cs), new Uint8Array(cs).fill(i));
    assert.deepEqual(await again.verify(), []);
    await assert.rejects(again.writeFile('/nospace', new Uint8Array(6 * cs)), (e: unknown) => (e as { code?: string }).code === 'NO_SPACE');
  });

  test('directories grow past one cluster (contiguously, then as a FAT chain)', async () => {
    const { disk, fs } = await fresh();
    await fs.mkdir('/d');
    // Each set of a 40-unit name takes 5 entries: 4096/32/5 = 25 per cluster; 80 sets need 4 clusters.
    const names = Array.from({ length: 80 }, (_, i) => `entry ${String(i).padStart(3, '0')} ${'n'.repeat(28)}`);
    for (const [i, n] of names.entries()) {
      await fs.writeFile(`/d/${n}`, new Uint8Array([i]));
      if (i === 30) await fs.writeFile('/blocker', new Uint8Array(fs.clusterSize)); // takes the cluster after /d
    }
    await fs.close();
    const again = await ExfatFs.open(disk);
    assert.deepEqual((await again.readdir('/d')).map((e) => e.name).sort(), names);
    for (const [i, n] of names.entries()) assert.deepEqual(await readAt(await again.openFile(`/d/${n}`), 0, 1), Uint8Array.of(i));
    assert.deepEqual(await again.verify(), []);
  });

  test('ValidDataLength: unwritten tails read as zeros; a write past it zeroes the gap', async () => {
    for (const lazy of [false, true]) {
      const { disk } = await fresh();
      const fs = await ExfatFs.open(disk, { now, lazyValidDataLength: lazy });
      const cs = fs.clusterSize;
      // Dirty clusters first, so zeros can only come from ValidDataLength handling.
      await fs.writeFile('/junk', new Uint8Array(8 * cs).fill(0xee));
      await fs.unlink('/junk');
      const d = await fs.createFile('/sparse', { size: 8 * cs });
      await d.write(Uint8Array.of(1, 2, 3), 100);
      await d.close();
      await fs.close();
      const again = await ExfatFs.open(disk);
      const all = await readAt(await again.openFile('/sparse'), 0, 8 * cs);
      const expect = new Uint8Array(8 * cs);
      expect.set([1, 2, 3], 100);
      assert.deepEqual(all, expect);
      // Eager: ValidDataLength is the size (Linux before 6.8 takes it as the size); lazy: what was written.
      const raw = disk.bytes;
      const at = Buffer.from(raw).indexOf(Buffer.from('s\0p\0a\0r\0s\0e\0', 'latin1')) - 34;
      assert.equal(raw[at], 0xc0);
      assert.equal(Number(new DataView(raw.buffer).getBigUint64(at + 8, true)), lazy ? 103 : 8 * cs);
    }
  });

  test('same tree, same clock -> same image bytes (pinned hash)', async () => {
    const build = async () => {
      const { disk, fs } = await fresh(8 << 20, 'PINNED');
      await fs.mkdir('/LiveOS');
      await fs.writeFile('/LiveOS/squashfs.img', new Uint8Array(20000).map((_, i) => i & 0xff));
      await fs.mkdir('/boot');
      await fs.writeFile('/boot/Grub Config ü.cfg', new TextEncoder().encode('set timeout=5\n'));
      await fs.rename('/boot/Grub Config ü.cfg', '/boot/grub.cfg');
      const img = await fs.createFile('/LiveOS/overlay-LIVE-1234', { size: 50000 });
      await img.write(new Uint8Array(10).fill(9), 4096);
      await img.close();
      await fs.close();
      return createHash('sha256').update(disk.bytes).digest('hex');
    };
    const a = await build();
    assert.equal(await build(), a);
    assert.equal(a, '4ef13bfb339d918dc8d4457939c73115e9a9e7579e08604ee76c0c4ca73aee1a');
  });
});
