/**
 * LUKS benchmark, all figures from the same run on the same machine:
 *  - sequential write and read through the opened volume (CryptDisk over a FileDisk, 1 MiB requests, into and
 *    from the page cache; the fdatasync that follows the writes is timed separately, it measures the disk)
 *    against node:crypto's raw aes-xts (one OpenSSL context per sector, in memory, no I/O);
 *  - unlock time of livestick's library against `cryptsetup open --test-passphrase` at the same KDF cost.
 *   node --import tsx bench/luks.bench.ts [--payload-mib 256] [--reps 3] [--argon-mib 1024] [--skip-unlock]
 * Prints Markdown tables (ratio: throughput ours/raw, higher is better; time ours/cryptsetup, lower is better).
 */
import { createCipheriv, randomBytes } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileDisk } from '../src/io/disk.ts';
import { LuksVolume, XtsCipher, type KdfChoice } from '../src/xform/luks/index.ts';

const arg = (name: string, def: number): number => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : def;
};
const payloadMiB = arg('payload-mib', 256);
const reps = arg('reps', 3);
const argonMiB = arg('argon-mib', 1024);
const MiB = 1 << 20;
const dir = mkdtempSync(join(tmpdir(), 'livestick-bench-luks-'));

function best(samples: number[]): number {
  return Math.min(...samples);
}

async function time(fn: () => Promise<unknown> | unknown): Promise<number> {
  const t = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t) / 1e9;
}

function rawXts(key: Buffer, data: Buffer, sectorSize: number): void {
  const algo = key.length === 32 ? 'aes-128-xts' : 'aes-256-xts';
  const iv = Buffer.alloc(16);
  for (let at = 0; at < data.length; at += sectorSize) {
    iv.writeBigUInt64LE(BigInt(at / 512));
    const c = createCipheriv(algo, key, iv);
    c.update(data.subarray(at, at + sectorSize));
    c.final();
  }
}

async function throughput(): Promise<string[]> {
  const rows = [
    '| sector | raw node:crypto xts (MiB/s) | livestick xts in memory | write through volume | read through volume | write / raw | read / raw | then fdatasync (s) |',
    '|---|---|---|---|---|---|---|---|',
  ];
  const pass = new TextEncoder().encode('bench');
  const piece = randomBytes(MiB);
  const key = randomBytes(64);
  for (const sectorSize of [512, 4096] as const) {
    const buf = randomBytes(64 * MiB);
    const path = join(dir, `vol${sectorSize}.img`);
    rmSync(path, { force: true });
    const disk = await FileDisk.open(path, { create: { size: 16 * MiB + payloadMiB * MiB } });
    const vol = await LuksVolume.format(disk, pass, { sectorSize, kdf: { type: 'pbkdf2', iterations: 1000 }, digestIterations: 1000 });
    const payload = await vol.openPayload(pass);
    const x = new XtsCipher(key);
    const out = new Uint8Array(MiB);
    const s = { raw: [] as number[], mem: [] as number[], write: [] as number[], read: [] as number[], sync: [] as number[] };
    // Interleaved, so that a shared machine's load affects every measurement alike; best of `reps`.
    for (let r = 0; r < reps; r++) {
      s.raw.push((await time(() => rawXts(key, buf, sectorSize))) / 64);
      s.mem.push(
        (await time(() => {
          for (let at = 0; at < buf.length; at += MiB) x.encrypt(buf.subarray(at, at + MiB), sectorSize, at / 512);
        })) / 64,
      );
      s.write.push(
        (await time(async () => {
          for (let at = 0; at < payload.size; at += MiB) await payload.write(piece, at);
        })) / payloadMiB,
      );
      s.sync.push(await time(() => payload.flush()));
      s.read.push(
        (await time(async () => {
          for (let at = 0; at < payload.size; at += MiB) await payload.read(out, at);
        })) / payloadMiB,
      );
    }
    await payload.close();
    await disk.close();
    const [raw, mem, w, rd] = [s.raw, s.mem, s.write, s.read].map((v) => 1 / best(v)) as [number, number, number, number];
    rows.push(`| ${sectorSize} | ${raw.toFixed(0)} | ${mem.toFixed(0)} | ${w.toFixed(0)} | ${rd.toFixed(0)} | ${(w / raw).toFixed(2)} | ${(rd / raw).toFixed(2)} | ${best(s.sync).toFixed(2)} |`);
  }
  return rows;
}

async function unlock(): Promise<string[]> {
  const rows = ['| KDF | livestick unlock (s) | cryptsetup --test-passphrase (s) | ours / cryptsetup |', '|---|---|---|---|'];
  const cpus = Math.min(4, availableParallelism());
  const kdfs: [string, KdfChoice][] = [
    [`argon2id m=${argonMiB} MiB t=4 p=${cpus}`, { type: 'argon2id', time: 4, memory: argonMiB * 1024, cpus }],
    ['argon2i m=256 MiB t=4 p=' + cpus, { type: 'argon2i', time: 4, memory: 256 * 1024, cpus }],
    ['pbkdf2-sha256 1000000 iterations', { type: 'pbkdf2', hash: 'sha256', iterations: 1_000_000 }],
  ];
  const keyFile = join(dir, 'pw');
  writeFileSync(keyFile, 'bench pass');
  for (const [label, kdf] of kdfs) {
    const path = join(dir, 'unlock.img');
    rmSync(path, { force: true });
    const disk = await FileDisk.open(path, { create: { size: 17 * MiB } });
    const vol = await LuksVolume.format(disk, new TextEncoder().encode('bench pass'), { kdf, digestIterations: 1000 });
    const ours: number[] = [];
    const theirs: number[] = [];
    for (let r = 0; r < reps; r++) {
      ours.push(await time(async () => (await vol.unlock(new TextEncoder().encode('bench pass'))).volumeKey.fill(0)));
      theirs.push(
        await time(() => {
          const p = spawnSync('cryptsetup', ['open', '--test-passphrase', '--key-file', keyFile, path]);
          if (p.status !== 0) throw new Error(`cryptsetup failed: ${p.stderr}`);
        }),
      );
    }
    await disk.close();
    rows.push(`| ${label} | ${best(ours).toFixed(2)} | ${best(theirs).toFixed(2)} | ${(best(ours) / best(theirs)).toFixed(2)} |`);
  }
  return rows;
}

try {
  console.log(`LUKS benchmark: ${payloadMiB} MiB payload, best of ${reps}, ${availableParallelism()} CPUs, node ${process.version}\n`);
  console.log((await throughput()).join('\n'));
  if (!process.argv.includes('--skip-unlock')) {
    console.log('');
    console.log((await unlock()).join('\n'));
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
