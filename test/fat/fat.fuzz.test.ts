/**
 * Mutation fuzz of the FAT read path with the project's mutator (test/fuzz/mutate.ts) and read budget
 * (BudgetDisk): mutated FAT12/16/32 images are opened and walked (readdir, stat, every file read whole,
 * space); each case must end in success or a LivestickError, within the read budget (no loops, no huge
 * reads). FUZZ_SEED replays, FUZZ_CASES sets the count per seed image.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { LivestickError } from '../../src/errors.ts';
import { MemoryDisk, readAt, type Disk } from '../../src/io/disk.ts';
import { FatFs, mkfsFat } from '../../src/fs/fat/index.ts';
import type { FatType } from '../../src/fs/fat/boot.ts';
import { BudgetDisk, FuzzCapError, newBudget, runSeed } from '../fuzz/harness.ts';
import { MutantDisk, mutant, rngFor, type Field, type Seed } from '../fuzz/mutate.ts';
import { randomTree } from './fixtures.ts';

const MiB = 2 ** 20;
const CASES = Number(process.env.FUZZ_CASES ?? 150);

const BPB_FIELDS: Field[] = [
  { name: 'bytes per sector', offset: 11, width: 2 },
  { name: 'sectors per cluster', offset: 13, width: 1 },
  { name: 'reserved sectors', offset: 14, width: 2 },
  { name: 'number of FATs', offset: 16, width: 1 },
  { name: 'root entries', offset: 17, width: 2 },
  { name: 'total sectors 16', offset: 19, width: 2 },
  { name: 'media', offset: 21, width: 1 },
  { name: 'sectors per FAT 16', offset: 22, width: 2 },
  { name: 'total sectors 32', offset: 32, width: 4 },
  { name: 'sectors per FAT 32', offset: 36, width: 4 },
  { name: 'ext flags', offset: 40, width: 2 },
  { name: 'root cluster', offset: 44, width: 4 },
  { name: 'FSInfo sector', offset: 48, width: 2 },
];

async function seedImage(type: FatType, size: number): Promise<Seed> {
  const disk = new MemoryDisk(size);
  await mkfsFat(disk, { type, serial: 7, now: 1_750_000_000_000, label: 'FUZZ' });
  const fs = await FatFs.open(disk, { now: () => 1_750_000_000_000 });
  for (const [p, n] of [...randomTree(99, { files: 25, maxSize: 6000 })].sort(([a], [b]) => a.length - b.length)) {
    if (n.kind === 'dir') await fs.mkdir(p);
    else await fs.writeFile(p, n.data);
  }
  await fs.close();
  const { fatOffset, fatBytes, numFats, dataOffset, clusterSize } = fs.layout;
  return {
    name: `livestick ${type}`,
    bytes: disk.bytes,
    fields: BPB_FIELDS,
    hot: [
      [0, 1024],
      [fatOffset, Math.min(fatOffset + 2048, fatOffset + numFats * fatBytes)],
      [fatOffset + fatBytes, fatOffset + fatBytes + 512],
      [fs.layout.rootOffset || dataOffset, (fs.layout.rootOffset || dataOffset) + 4096],
      [dataOffset, dataOffset + 40 * clusterSize],
    ],
  };
}

async function walk(fs: FatFs, path: string, depth: number, seen: { n: number }): Promise<void> {
  if (depth > 12 || seen.n > 3000) return;
  for (const e of await fs.readdir(path)) {
    seen.n++;
    const child = `${path === '/' ? '' : path}/${e.name}`;
    await fs.stat(child).catch(rethrowUntyped);
    if (e.kind === 'dir') await walk(fs, child, depth + 1, seen).catch(rethrowUntyped);
    else {
      const f = await fs.openFile(child).catch(rethrowUntyped);
      if (f) await readAt(f, 0, Math.min(f.size, 4 * MiB));
    }
  }
}

function rethrowUntyped(err: unknown): undefined {
  if (err instanceof LivestickError) return undefined;
  throw err;
}

async function exercise(disk: Disk): Promise<void> {
  const fs = await FatFs.open(disk, { readOnly: true });
  void fs.label;
  void fs.uuid;
  await walk(fs, '/', 0, { n: 0 });
  await fs.space();
}

describe('FAT fuzz: mutated images end in success or a typed error', () => {
  for (const [type, size] of [['fat12', 2 * MiB], ['fat16', 16 * MiB], ['fat32', 40 * MiB]] as const) {
    test(`${type}: ${CASES} mutated images`, async () => {
      const seed = await seedImage(type, size);
      const runSeedValue = runSeed();
      const findings: string[] = [];
      let typed = 0;
      let ok = 0;
      for (let i = 0; i < CASES; i++) {
        const m = mutant(seed, rngFor(runSeedValue, i));
        const budget = newBudget();
        try {
          await exercise(new BudgetDisk(new MutantDisk(seed.bytes, m), budget));
          ok++;
        } catch (err) {
          if (err instanceof LivestickError && !(err instanceof FuzzCapError)) typed++;
          else findings.push(`case ${i} (${m.what.join('; ')}): ${err instanceof Error ? `${err.name}: ${err.message}\n${err.stack?.split('\n').slice(1, 5).join('\n')}` : String(err)}`);
        }
      }
      assert.deepEqual(findings, [], `FUZZ_SEED=${runSeedValue}`);
      assert.ok(typed > 0, 'some mutations must be caught as typed errors');
      assert.ok(ok > CASES / 10, `most mutations must get past the boot sector into the tree (${ok} did)`);
    });
  }
});
