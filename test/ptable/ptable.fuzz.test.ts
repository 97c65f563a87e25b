/**
 * Mutation fuzz of the partition-table decoders through readPartitionTable (the project's mutator and
 * read budget from test/fuzz/, run in-process: the reads here are a few sectors per case). Every case
 * must end in a table or a LivestickError. FUZZ_SEED / FUZZ_CASES as for test/fuzz.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LivestickError } from '../../src/errors.ts';
import { encodeMbr, mbrEntry } from '../../src/fs/ptable/mbr.ts';
import { partitionDisk, readPartitionTable } from '../../src/fs/ptable/index.ts';
import { BudgetDisk, newBudget, runSeed } from '../fuzz/harness.ts';
import { MutantDisk, mutant, rngFor, type Field, type Seed } from '../fuzz/mutate.ts';
import { gptDisk, mbrDisk, mbrOf } from './fixture.ts';

const CASES = Number(process.env.FUZZ_CASES ?? 3000);

function mbrFields(base: number, prefix: string): Field[] {
  return [0, 1, 2, 3].flatMap((i) => [
    { name: `${prefix}${i}.status`, offset: base + 446 + i * 16, width: 1 as const },
    { name: `${prefix}${i}.type`, offset: base + 450 + i * 16, width: 1 as const },
    { name: `${prefix}${i}.start_lba`, offset: base + 454 + i * 16, width: 4 as const },
    { name: `${prefix}${i}.sectors`, offset: base + 458 + i * 16, width: 4 as const },
  ]);
}

function gptFields(at: number, prefix: string): Field[] {
  const f = (name: string, offset: number, width: 4 | 8): Field => ({ name: `${prefix}.${name}`, offset: at + offset, width });
  return [f('revision', 8, 4), f('header_size', 12, 4), f('my_lba', 24, 8), f('alternate_lba', 32, 8), f('first_usable', 40, 8), f('last_usable', 48, 8), f('entries_lba', 72, 8), f('entry_count', 80, 4), f('entry_size', 84, 4)];
}

function entryFields(at: number, count: number): Field[] {
  return Array.from({ length: count }, (_, i) => [
    { name: `entry${i}.first_lba`, offset: at + i * 128 + 32, width: 8 as const },
    { name: `entry${i}.last_lba`, offset: at + i * 128 + 40, width: 8 as const },
  ]).flat();
}

async function seeds(): Promise<Seed[]> {
  const out: Seed[] = [];
  for (const ss of [512, 4096] as const) {
    const bytes = (await gptDisk(ss, 12)).bytes;
    const last = bytes.byteLength - ss;
    const arrayBytes = Math.ceil(16384 / ss) * ss;
    out.push({
      name: `gpt ${ss}`,
      bytes,
      fields: [...mbrFields(0, 'pmbr'), ...gptFields(ss, 'primary'), ...gptFields(last, 'backup'), ...entryFields(2 * ss, 4), ...entryFields(last - arrayBytes, 4)],
      hot: [[0, 512], [ss, 2 * ss + arrayBytes], [last - arrayBytes, bytes.byteLength]],
    });
  }
  const hybrid = (await gptDisk(512, 12)).bytes;
  hybrid.set(encodeMbr(mbrOf([mbrEntry(0xee, 1, 2047), mbrEntry(0xef, 2048, 4096), mbrEntry(0x83, 6144, 8192)])), 0);
  out.push({ name: 'gpt hybrid', bytes: hybrid, fields: mbrFields(0, 'hmbr'), hot: [[0, 512], [512, 34 * 512]] });
  const mbr = (await mbrDisk(4)).bytes;
  const ebrs = [2, 4, 6, 8].map((mib) => mib << 20);
  out.push({ name: 'mbr + 4 logicals', bytes: mbr, fields: [...mbrFields(0, 'mbr'), ...ebrs.flatMap((at, i) => mbrFields(at, `ebr${i}.`))], hot: [[0, 512], ...ebrs.map((at) => [at, at + 512] as const)] });
  return out;
}

test('partition tables: mutated tables give a table or a typed error, within the read budget', { timeout: 120_000 }, async () => {
  const seed = runSeed();
  const all = await seeds();
  const findings: string[] = [];
  const codes: Record<string, number> = {};
  let ok = 0;
  for (let index = 0; index < CASES; index++) {
    const rng = rngFor(seed, index);
    const base = all[Math.floor(rng() * all.length)]!;
    const m = mutant(base, rng);
    const disk = new BudgetDisk(new MutantDisk(base.bytes, m), newBudget());
    try {
      for (const sectorSize of [undefined, 4096] as const) {
        const t = await readPartitionTable(disk, sectorSize ? { sectorSize } : {});
        for (const p of t.partitions) {
          try {
            partitionDisk(disk, p);
          } catch (err) {
            if (!(err instanceof LivestickError)) throw err;
          }
        }
      }
      ok++;
    } catch (err) {
      if (err instanceof LivestickError) codes[err.code] = (codes[err.code] ?? 0) + 1;
      else findings.push(`case ${index} (${base.name}: ${m.what.join(', ')}): ${err instanceof Error ? err.stack : String(err)}`);
    }
  }
  console.log(`ptable fuzz: seed ${seed}, ${CASES} cases, ${ok} read, typed ${JSON.stringify(codes)}`);
  assert.deepEqual(findings.slice(0, 5), [], `seed ${seed}: ${findings.length} findings`);
  assert.ok(ok > CASES / 10 && Object.keys(codes).length > 0, 'the mutations reach both outcomes');
});
