// Mutation fuzzing of the exFAT read path (and, on a third of the cases, of writes onto the mutated
// image): every case ends in success or a LivestickError, within the read budget of the project's fuzz
// harness (test/fuzz/harness.ts BudgetDisk; mutations from test/fuzz/mutate.ts). Structure-aware
// mutations re-seal what they change (boot checksum, set checksum), so they reach the checks behind.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LivestickError } from '../../src/errors.ts';
import { MemoryDisk, readAt, type Disk } from '../../src/io/disk.ts';
import { bootChecksum } from '../../src/fs/exfat/boot.ts';
import { setChecksum } from '../../src/fs/exfat/entries.ts';
import { ExfatFs, mkfsExfat } from '../../src/fs/exfat/index.ts';
import { BudgetDisk, FuzzCapError, newBudget, runSeed } from '../fuzz/harness.ts';
import { MutantDisk, int, mutant, pick, rngFor, type Field, type Mutation, type Rng, type Seed } from '../fuzz/mutate.ts';

const CASES = Number(process.env.FUZZ_CASES ?? 400);
const MAX_FILE_READ = 1 << 20;

async function seedImage(): Promise<{ bytes: Uint8Array; sets: number[]; hot: [number, number][]; rootFields: Field[] }> {
  const disk = new MemoryDisk(4 << 20);
  await mkfsExfat(disk, { label: 'FUZZ', serial: 1 });
  const fs = await ExfatFs.open(disk, { now: () => Date.UTC(2026, 0, 1) });
  await fs.mkdir('/LiveOS');
  await fs.writeFile('/LiveOS/squashfs.img', new Uint8Array(3 * fs.clusterSize + 5).fill(7));
  await fs.writeFile('/Ünïcode name that is long enough for two name entries', new Uint8Array(10));
  await fs.mkdir('/a');
  await fs.mkdir('/a/b');
  await fs.writeFile('/a/b/empty', new Uint8Array(0));
  for (let i = 0; i < 8; i++) await fs.writeFile(`/a/f${i}`, new Uint8Array(fs.clusterSize).fill(i));
  for (let i = 0; i < 8; i += 2) await fs.unlink(`/a/f${i}`);
  await fs.writeFile('/a/chained', new Uint8Array(4 * fs.clusterSize).fill(9)); // through the holes: a FAT chain
  await fs.close();
  const bytes = disk.bytes.slice();
  const b = fs.boot;
  const heap = b.clusterHeapOffset * 512;
  const sets: number[] = [];
  for (let at = heap; at < heap + 64 * fs.clusterSize; at += 32) if (bytes[at] === 0x85) sets.push(at);
  const root = heap + (b.rootCluster - 2) * fs.clusterSize;
  const rootFields: Field[] = [
    { name: 'label CharacterCount', offset: root + 1, width: 1 },
    { name: 'bitmap FirstCluster', offset: root + 32 + 20, width: 4 },
    { name: 'bitmap DataLength', offset: root + 32 + 24, width: 8 },
    { name: 'up-case TableChecksum', offset: root + 64 + 4, width: 4 },
    { name: 'up-case FirstCluster', offset: root + 64 + 20, width: 4 },
    { name: 'up-case DataLength', offset: root + 64 + 24, width: 8 },
    { name: 'FAT[root]', offset: b.fatOffset * 512 + b.rootCluster * 4, width: 4 },
    { name: 'FAT[bitmap]', offset: b.fatOffset * 512 + 8, width: 4 },
  ];
  return { rootFields, bytes, sets, hot: [[0, 24 * 512], [b.fatOffset * 512, b.fatOffset * 512 + 512], [heap, heap + 16 * fs.clusterSize]] };
}

const BOOT_FIELDS: Field[] = [
  { name: 'PartitionOffset', offset: 64, width: 8 },
  { name: 'VolumeLength', offset: 72, width: 8 },
  { name: 'FatOffset', offset: 80, width: 4 },
  { name: 'FatLength', offset: 84, width: 4 },
  { name: 'ClusterHeapOffset', offset: 88, width: 4 },
  { name: 'ClusterCount', offset: 92, width: 4 },
  { name: 'FirstClusterOfRootDirectory', offset: 96, width: 4 },
  { name: 'FileSystemRevision', offset: 104, width: 2 },
  { name: 'VolumeFlags', offset: 106, width: 2 },
  { name: 'BytesPerSectorShift', offset: 108, width: 1 },
  { name: 'SectorsPerClusterShift', offset: 109, width: 1 },
  { name: 'NumberOfFats', offset: 110, width: 1 },
];
const SET_FIELDS: [string, number, 1 | 2 | 4 | 8][] = [
  ['SecondaryCount', 1, 1], ['FileAttributes', 4, 2], ['GeneralSecondaryFlags', 33, 1], ['NameLength', 35, 1],
  ['ValidDataLength', 40, 8], ['FirstCluster', 52, 4], ['DataLength', 56, 8], ['name entry type', 64, 1],
];

function le(value: bigint, width: number): Uint8Array {
  const out = new Uint8Array(width);
  for (let i = 0; i < width; i++) out[i] = Number((value >> BigInt(8 * i)) & 0xffn);
  return out;
}

function pickValue(rng: Rng, width: number, size: number): bigint {
  const max = (1n << BigInt(width * 8)) - 1n;
  return pick(rng, [0n, 1n, 2n, 3n, max, max - 1n, BigInt(size), BigInt(size / 512), BigInt(size / 4096), BigInt(int(rng, 2 ** 31))]) & max;
}

/** A patched copy of [from, from + length) with the patch applied, for re-sealing. */
function patched(bytes: Uint8Array, from: number, length: number, at: number, value: Uint8Array): Uint8Array {
  const copy = bytes.slice(from, from + length);
  copy.set(value, at - from);
  return copy;
}

function sealedMutations(image: { bytes: Uint8Array; sets: number[] }): (rng: Rng) => Mutation | undefined {
  const bytes = image.bytes;
  return (rng) => {
    if (rng() < 0.4) {
      const f = pick(rng, BOOT_FIELDS);
      const value = le(pickValue(rng, f.width, bytes.byteLength), f.width);
      const region = patched(bytes, 0, 12 * 512, f.offset, value);
      const sum = bootChecksum(region, 512);
      const sector = new Uint8Array(512);
      for (let i = 0; i < 512; i += 4) sector.set(le(BigInt(sum), 4), i);
      const both = rng() < 0.5;
      const patches = [{ offset: f.offset, bytes: value }, { offset: 11 * 512, bytes: sector }];
      if (both) patches.push({ offset: 12 * 512 + f.offset, bytes: value }, { offset: 23 * 512, bytes: sector });
      return { patches, what: `boot ${f.name} = ${value.join(',')} (checksum re-sealed${both ? ', both regions' : ''})` };
    }
    if (image.sets.length === 0) return undefined;
    const at = pick(rng, image.sets);
    const count = bytes[at + 1]! + 1;
    const [name, off, width] = pick(rng, SET_FIELDS);
    const value = le(pickValue(rng, width, bytes.byteLength), width);
    const set = patched(bytes, at, count * 32, at + off, value);
    const sum = setChecksum(set);
    return { patches: [{ offset: at + off, bytes: value }, { offset: at + 2, bytes: Uint8Array.of(sum & 0xff, sum >> 8) }], what: `set at ${at}: ${name} = ${value.join(',')} (checksum re-sealed)` };
  };
}

async function walk(fs: ExfatFs, dir: string, depth: number): Promise<void> {
  if (depth > 16) return;
  for (const e of await fs.readdir(dir)) {
    const path = dir === '/' ? `/${e.name}` : `${dir}/${e.name}`;
    await fs.stat(path);
    if (e.kind === 'dir') await walk(fs, path, depth + 1);
    else {
      const d = await fs.openFile(path);
      await readAt(d, 0, Math.min(d.size, MAX_FILE_READ));
    }
  }
}

async function exercise(disk: Disk, writable: boolean): Promise<void> {
  const fs = await ExfatFs.open(disk, { readOnly: !writable });
  await walk(fs, '/', 0);
  await fs.verify();
  if (writable) {
    await fs.writeFile('/new file', new Uint8Array(5000).fill(1));
    await fs.mkdir('/a/new dir');
    await fs.rename('/LiveOS/squashfs.img', '/a/moved');
    await fs.unlink('/a/f1');
    await fs.close();
    await walk(await ExfatFs.open(disk, { readOnly: true }), '/', 0);
  }
}

test(`exFAT: mutated images give success or a typed error (${CASES} cases)`, { timeout: 10 * 60_000 }, async () => {
  const image = await seedImage();
  const seed: Seed = { name: 'livestick mkfsExfat, filled', bytes: image.bytes, fields: [...BOOT_FIELDS, ...image.rootFields], hot: image.hot, extra: sealedMutations(image) };
  const runSeedValue = runSeed();
  const findings: string[] = [];
  const codes: Record<string, number> = {};
  let ok = 0;
  for (let i = 0; i < CASES; i++) {
    const rng = rngFor(runSeedValue, i);
    const m = mutant(seed, rng);
    const writable = rng() < 0.33;
    const base = new MutantDisk(seed.bytes, m);
    const disk: Disk = writable ? new MemoryDisk(await base.bytes()) : base;
    try {
      await exercise(new BudgetDisk(disk, newBudget()), writable);
      ok++;
    } catch (err) {
      if (err instanceof LivestickError) codes[err.code] = (codes[err.code] ?? 0) + 1;
      else findings.push(`case ${i} (${m.what.join('; ')}${writable ? '; writes' : ''}): ${err instanceof FuzzCapError ? 'cap: ' : ''}${(err as Error).stack?.split('\n').slice(0, 4).join(' | ')}`);
    }
  }
  console.log(`exfat fuzz: seed ${runSeedValue}, ${CASES} cases: ${ok} ok, typed ${JSON.stringify(codes)}, ${findings.length} findings`);
  assert.deepEqual(findings, [], `FUZZ_SEED=${runSeedValue}`);
});
