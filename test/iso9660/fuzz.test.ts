/**
 * Mutation fuzzing of the ISO9660 read path with the project's harness (test/fuzz/): mutated images
 * (ours with boot catalog, CE areas and multi-extent files; one made by xorriso when installed) must
 * open, list, read and report their boot catalog, or fail with a typed error, within the read caps.
 * Cases run in this process (runCases), so the harness's per-read budget catches loops and huge reads.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Disk } from '../../src/io/disk.ts';
import { readAt } from '../../src/io/disk.ts';
import { Iso9660Fs } from '../../src/fs/iso9660/index.ts';
import { SECTOR } from '../../src/fs/iso9660/format.ts';
import { runCases, runSeed, type Budget, type Target, type WorkerMessage, FuzzCapError } from '../fuzz/harness.ts';
import type { Field, Seed } from '../fuzz/mutate.ts';
import { hasTool, run } from '../helpers/tools.ts';
import { tempDir } from '../helpers/tmp.ts';
import { SAMPLE, buildIso } from './build.ts';

const CASES = Number(process.env.FUZZ_CASES ?? 2000);

function fields(bootRecord: boolean): Field[] {
  const pvd = 16 * SECTOR;
  const f: Field[] = [
    { name: 'pvd.volumeSpaceSize', offset: pvd + 80, width: 4 },
    { name: 'pvd.blockSize', offset: pvd + 128, width: 2 },
    { name: 'pvd.root.extent', offset: pvd + 158, width: 4 },
    { name: 'pvd.root.dataLength', offset: pvd + 166, width: 4 },
    { name: 'pvd.root.length', offset: pvd + 156, width: 1 },
  ];
  if (bootRecord) f.push({ name: 'boot.catalogSector', offset: 17 * SECTOR + 71, width: 4 });
  return f;
}

async function seeds(): Promise<Seed[]> {
  const ours = [
    { name: 'livestick rr+boot', bytes: buildIso(SAMPLE, { boot: true }), boot: true },
    { name: 'livestick rr in CE, split NM/SL', bytes: buildIso(SAMPLE, { continuation: true, splitAt: 9 }), boot: false },
  ].map((s) => ({ name: s.name, bytes: s.bytes, fields: fields(s.boot), hot: [[16 * SECTOR, Math.min(s.bytes.byteLength, 40 * SECTOR)]] as [number, number][] }));
  if (hasTool('xorriso')) {
    const { dir, cleanup } = tempDir('livestick-isofuzz-');
    try {
      const src = join(dir, 'src');
      mkdirSync(join(src, 'a/b'), { recursive: true });
      writeFileSync(join(src, 'a/b/file.txt'), 'x'.repeat(3000));
      writeFileSync(join(src, 'boot.bin'), new Uint8Array(2048).fill(7));
      writeFileSync(join(src, 'efi.img'), new Uint8Array(8192).fill(9));
      const iso = join(dir, 'x.iso');
      run('xorriso', ['-as', 'mkisofs', '-R', '-J', '-o', iso, '-b', 'boot.bin', '-c', 'boot.cat', '-no-emul-boot', '-eltorito-alt-boot', '-e', 'efi.img', '-no-emul-boot', src]);
      const bytes = new Uint8Array(readFileSync(iso));
      ours.push({ name: 'xorriso -R -J El Torito', bytes, fields: fields(true), hot: [[16 * SECTOR, Math.min(bytes.byteLength, 60 * SECTOR)]] });
    } finally {
      cleanup();
    }
  }
  return ours;
}

async function walk(fs: Iso9660Fs, budget: Budget): Promise<void> {
  const queue = [''];
  let entries = 0;
  while (queue.length > 0) {
    const dir = queue.shift()!;
    if (dir.split('/').length > 40) continue;
    for (const e of await fs.readdir(dir || '/')) {
      if (++entries > 5000) return;
      if (Date.now() > budget.deadline) throw new FuzzCapError('case past its deadline');
      const p = `${dir}/${e.name}`;
      const st = await fs.stat(p);
      if (st.kind === 'dir') queue.push(p);
      else if (st.kind === 'symlink') await fs.readlink(p);
      else if (st.kind === 'file') {
        const d: Disk = await fs.openFile(p);
        const n = Math.min(d.size, 4096);
        await readAt(d, 0, n);
        await readAt(d, d.size - n, n);
      }
    }
  }
}

const target: Target = {
  name: 'iso9660',
  seeds,
  async exercise(disk, _seed, budget) {
    for (const prefer of ['rockridge', 'joliet', 'iso'] as const) {
      const fs = await Iso9660Fs.open(disk, { prefer });
      await walk(fs, budget);
      await fs.bootCatalog();
    }
  },
};

test('iso9660 fuzz: mutated images give success or a typed error, within the caps', { timeout: 120_000 }, async () => {
  const seed = runSeed();
  const findings: string[] = [];
  const codes: Record<string, number> = {};
  let ok = 0;
  const post = (m: WorkerMessage) => {
    if (m.type === 'finding') findings.push(`case ${m.finding.caseIndex} [${m.finding.kind}] on ${m.finding.seedImage}: ${m.finding.what.join('; ')}\n  ${m.finding.message}`);
    else if (m.type === 'result') m.outcome === 'ok' ? ok++ : (codes[m.code ?? '?'] = (codes[m.code ?? '?'] ?? 0) + 1);
  };
  const started = Date.now();
  await runCases(target, seed, 0, CASES, post);
  console.log(`iso9660 fuzz: ${CASES} cases (seed ${seed}) in ${((Date.now() - started) / 1000).toFixed(1)} s: ${ok} ok, typed ${JSON.stringify(codes)}; replay: FUZZ_SEED=${seed} npm test -- test/iso9660/fuzz`);
  assert.equal(findings.length, 0, findings.slice(0, 10).join('\n'));
  assert.ok(ok > 0 && Object.keys(codes).length > 0, 'mutations both pass and fail');
});
