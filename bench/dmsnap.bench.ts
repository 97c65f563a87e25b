/**
 * Overlay engine benchmark: the combined device against raw file I/O on the same machine, same run.
 *   node --import tsx bench/dmsnap.bench.ts [--base-mib 256] [--writes 20000] [--share 0.25]
 * Prints a Markdown table of throughputs and ratios (higher ratio = closer to raw).
 */
import { closeSync, fdatasyncSync, ftruncateSync, mkdtempSync, openSync, readSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { FileDisk } from '../src/io/disk.ts';
import { ExceptionStore, SnapshotDisk } from '../src/xform/dmsnap/index.ts';

const arg = (name: string, def: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : def;
};
const baseMiB = arg('base-mib', 256);
const writes = arg('writes', 20000);
const share = arg('share', 0.25);
const dir = mkdtempSync(join(tmpdir(), 'livestick-bench-'));

async function time(fn: () => Promise<void>): Promise<number> {
  const t = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t) / 1e9;
}

function lcg(seed: number) {
  let x = seed >>> 0;
  return () => (x = (x * 1664525 + 1013904223) >>> 0) / 2 ** 32;
}

async function main() {
  const baseSize = baseMiB * 2 ** 20;
  const basePath = join(dir, 'base.img');
  writeFileSync(basePath, randomBytes(baseSize));
  const piece = new Uint8Array(2 ** 20);
  const chunks = baseSize / 4096;

  // Prepare an overlay where `share` of the chunks (scattered 16-chunk runs) are remapped.
  const ovPath = join(dir, 'overlay');
  {
    const ov = await FileDisk.open(ovPath, { create: { size: baseSize } });
    const dev = new SnapshotDisk(await FileDisk.open(basePath, { readOnly: true }), await ExceptionStore.format(ov, 8));
    const rnd = lcg(1);
    const data = randomBytes(16 * 4096);
    for (let i = 0; i < (chunks * share) / 16; i++) await dev.write(data, Math.floor(rnd() * (chunks - 16)) * 4096);
    await dev.flush();
    await ov.close();
  }

  // Raw = plain positional reads on the file descriptor, no Disk layer at all.
  const rawFd = openSync(basePath, 'r');
  const readRaw = async () => {
    for (let at = 0; at < baseSize; at += piece.byteLength) readSync(rawFd, piece, 0, piece.byteLength, at);
  };
  const raw = await FileDisk.open(basePath, { readOnly: true });
  const ov = await FileDisk.open(ovPath, { readOnly: true });
  const combined = new SnapshotDisk(raw, await ExceptionStore.open(ov), { readOnly: true });
  const readCombined = async () => {
    for (let at = 0; at < baseSize; at += piece.byteLength) await combined.read(piece, at);
  };
  await readRaw(); // warm the page cache for both sides
  await readCombined();
  const tRaw = Math.min(await time(readRaw), await time(readRaw));
  const tComb = Math.min(await time(readCombined), await time(readCombined));

  // Random 4 KiB writes: raw file vs through a fresh overlay (every write allocates a chunk), one flush at the end.
  const offsets = Array.from({ length: writes }, ((rnd) => () => Math.floor(rnd() * chunks) * 4096)(lcg(2)));
  const block = randomBytes(4096);
  const rawW = openSync(join(dir, 'raw-target'), 'w+');
  ftruncateSync(rawW, baseSize);
  const tRawW = await time(async () => {
    for (const o of offsets) writeSync(rawW, block, 0, 4096, o);
    fdatasyncSync(rawW);
  });
  const ov2 = await FileDisk.open(join(dir, 'overlay2'), { create: { size: baseSize } });
  const dev2 = new SnapshotDisk(raw, await ExceptionStore.format(ov2, 8));
  const tCowW = await time(async () => {
    for (const o of offsets) await dev2.write(block, o);
    await dev2.flush();
  });

  const mb = (bytes: number, s: number) => (bytes / 2 ** 20 / s).toFixed(0);
  console.log(`| dm-snapshot overlay (${baseMiB} MiB base, 4 KiB chunks) | livestick | raw file | ratio |`);
  console.log('|---|---|---|---|');
  console.log(`| sequential read, ${Math.round(share * 100)}% of chunks in the overlay in 64 KiB runs (MiB/s) | ${mb(baseSize, tComb)} | ${mb(baseSize, tRaw)} | ${(tRaw / tComb).toFixed(2)}x |`);
  console.log(`| random 4 KiB writes, ${writes} new chunks, flush at end (MiB/s) | ${mb(writes * 4096, tCowW)} | ${mb(writes * 4096, tRawW)} | ${(tRawW / tCowW).toFixed(2)}x |`);
  closeSync(rawFd);
  closeSync(rawW);
  await Promise.all([raw.close(), ov.close(), ov2.close()]);
}

try {
  await main();
} finally {
  rmSync(dir, { recursive: true, force: true });
}
