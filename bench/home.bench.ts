/**
 * Home image benchmark, all figures from the same run on the same machine (page cache, best of N):
 *  - `home import` of a tree (one big file + many small ones) into a plain and an encrypted (LUKS2,
 *    aes-xts 512-bit, 4096-byte sectors) home, through the undo log, against `mke2fs -d` populating a
 *    plain ext4 image from the same tree (e2fsprogs, the usual userspace way; no encryption);
 *  - `home export` of that tree back to the host, plain and encrypted, against `cp -a` of the source;
 *  - `home resize` of the encrypted home (grow ×4);
 *  - the size of the undo log an import needed (free blocks are not saved).
 *   node --import tsx bench/home.bench.ts [--big-mib 128] [--small 500] [--reps 3]
 * Prints a Markdown table.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHome, homeExport, homeImport, homeResize } from '../src/ops/home.ts';

const arg = (name: string, def: number): number => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : def;
};
const bigMiB = arg('big-mib', 128);
const small = arg('small', 500);
const reps = arg('reps', 3);
const MiB = 1 << 20;
const dir = mkdtempSync(join(tmpdir(), 'livestick-bench-home-'));
const pass = async (): Promise<Uint8Array> => new TextEncoder().encode('bench pass');
const kdf = { type: 'pbkdf2', iterations: 1000 } as const;

async function time(fn: () => Promise<unknown> | unknown): Promise<number> {
  const t = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t) / 1e9;
}

async function best(fn: () => Promise<number>): Promise<number> {
  const s: number[] = [];
  for (let i = 0; i < reps; i++) s.push(await fn());
  return Math.min(...s);
}

function sh(cmd: string, args: string[]): void {
  const r = spawnSync(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  if (r.status !== 0) throw new Error(`${cmd} failed: ${r.stderr}`);
}

async function main(): Promise<void> {
  const src = join(dir, 'src');
  mkdirSync(join(src, 'many'), { recursive: true });
  writeFileSync(join(src, 'big.bin'), randomBytes(bigMiB * MiB));
  let bytes = bigMiB * MiB;
  for (let i = 0; i < small; i++) {
    const n = 1000 + ((i * 7919) % 60000);
    writeFileSync(join(src, 'many', `f${i}`), randomBytes(n));
    bytes += n;
  }
  const imageSize = Math.ceil((bytes * 1.3) / MiB + 64) * MiB;
  const rows: string[][] = [];
  const mbps = (s: number): string => `${(bytes / MiB / s).toFixed(0)} MiB/s`;
  let undoBytes = 0;

  for (const encrypt of [false, true]) {
    const label = encrypt ? 'encrypted (LUKS2)' : 'plain';
    const image = join(dir, `home-${encrypt}.img`);
    const imp = await best(async () => {
      rmSync(image, { force: true });
      await createHome(image, { size: imageSize, encrypt, kdf, passphrase: pass });
      return time(async () => {
        const r = await homeImport(image, src, '/', { passphrase: pass });
        undoBytes = r.undoLogBytes;
      });
    });
    rows.push([`home import, ${label}`, `${imp.toFixed(2)} s`, mbps(imp), `undo log ${(undoBytes / 1024).toFixed(0)} KiB`]);
    const exp = await best(async () => {
      const out = join(dir, `out-${encrypt}`);
      rmSync(out, { recursive: true, force: true });
      return time(() => homeExport(image, out, { passphrase: pass }));
    });
    rows.push([`home export, ${label}`, `${exp.toFixed(2)} s`, mbps(exp), '']);
  }
  const ref = await best(async () => {
    const image = join(dir, 'mke2fs.img');
    rmSync(image, { force: true });
    return time(() => sh('mke2fs', ['-q', '-t', 'ext4', '-F', '-d', src, image, `${imageSize / 1024}k`]));
  });
  rows.push(['mke2fs -d (plain, reference)', `${ref.toFixed(2)} s`, mbps(ref), 'includes mkfs']);
  const cp = await best(async () => {
    const out = join(dir, 'cp-out');
    rmSync(out, { recursive: true, force: true });
    return time(() => sh('cp', ['-a', src, out]));
  });
  rows.push(['cp -a (host copy, reference)', `${cp.toFixed(2)} s`, mbps(cp), '']);
  const image = join(dir, 'home-true.img');
  const grow = await time(() => homeResize(image, imageSize * 4, { passphrase: pass }));
  rows.push([`home resize ×4, encrypted (${(imageSize / MiB).toFixed(0)} → ${((imageSize * 4) / MiB).toFixed(0)} MiB)`, `${grow.toFixed(2)} s`, '', '']);

  console.log(`Tree: ${bigMiB} MiB file + ${small} small files (${(bytes / MiB).toFixed(0)} MiB), image ${(imageSize / MiB).toFixed(0)} MiB, best of ${reps}\n`);
  console.log('| operation | time | throughput | note |');
  console.log('|---|---|---|---|');
  for (const r of rows) console.log(`| ${r.join(' | ')} |`);
}

try {
  await main();
} finally {
  rmSync(dir, { recursive: true, force: true });
}
