/**
 * FAT benchmark: a 1 GiB file written into a FAT32 image through FatFs (createFile + sequential
 * writes, the overlay-image path) against a raw sequential write of the same bytes to a plain file,
 * and reading it back against a raw read, same machine, same run.
 *   node --import tsx bench/fat.bench.ts [--file-mib 1024] [--chunk-kib 1024]
 * Page-cache figures: neither side syncs, so they compare the code paths, not the disk.
 */
import { closeSync, mkdtempSync, openSync, readSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileDisk } from '../src/io/disk.ts';
import { FatFs, mkfsFat } from '../src/fs/fat/index.ts';

const arg = (name: string, def: number): number => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : def;
};
const fileBytes = arg('file-mib', 1024) * 2 ** 20;
const chunk = arg('chunk-kib', 1024) * 1024;
const dir = mkdtempSync(join(tmpdir(), 'livestick-bench-fat-'));

async function time(fn: () => Promise<void> | void): Promise<number> {
  const t = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t) / 1e9;
}

const buf = new Uint8Array(chunk);
for (let i = 0; i < chunk; i++) buf[i] = (i * 7 + (i >> 10)) & 0xff;

try {
  const raw = join(dir, 'raw.bin');
  const rawWrite = await time(() => {
    const fd = openSync(raw, 'w');
    for (let at = 0; at < fileBytes; at += chunk) writeSync(fd, buf, 0, Math.min(chunk, fileBytes - at), at);
    closeSync(fd);
  });
  const rawRead = await time(() => {
    const fd = openSync(raw, 'r');
    const into = new Uint8Array(chunk);
    for (let at = 0; at < fileBytes; at += chunk) readSync(fd, into, 0, Math.min(chunk, fileBytes - at), at);
    closeSync(fd);
  });
  rmSync(raw);

  const img = join(dir, 'fat32.img');
  const disk = await FileDisk.open(img, { create: { size: fileBytes + 256 * 2 ** 20 } });
  const mkfs = await time(async () => {
    await mkfsFat(disk, { serial: 1, now: 0 });
  });
  let fs = await FatFs.open(disk);
  const fatWrite = await time(async () => {
    const file = await fs.createFile('/overlay.img', { size: fileBytes });
    for (let at = 0; at < fileBytes; at += chunk) await file.write(Math.min(chunk, fileBytes - at) === chunk ? buf : buf.subarray(0, fileBytes - at), at);
    await fs.close();
  });
  fs = await FatFs.open(disk, { readOnly: true });
  const fatRead = await time(async () => {
    const file = await fs.openFile('/overlay.img');
    const into = new Uint8Array(chunk);
    for (let at = 0; at < fileBytes; at += chunk) await file.read(Math.min(chunk, fileBytes - at) === chunk ? into : into.subarray(0, fileBytes - at), at);
  });
  await disk.close();

  const mibs = (s: number): string => `${(fileBytes / 2 ** 20 / s).toFixed(0)} MiB/s`;
  console.log(`| ${fileBytes / 2 ** 20} MiB file, ${chunk / 1024} KiB chunks | raw | FatFs (FAT32) | FatFs / raw time |`);
  console.log('|---|---|---|---|');
  console.log(`| write | ${rawWrite.toFixed(2)} s (${mibs(rawWrite)}) | ${fatWrite.toFixed(2)} s (${mibs(fatWrite)}) | ${(fatWrite / rawWrite).toFixed(2)} |`);
  console.log(`| read | ${rawRead.toFixed(2)} s (${mibs(rawRead)}) | ${fatRead.toFixed(2)} s (${mibs(fatRead)}) | ${(fatRead / rawRead).toFixed(2)} |`);
  console.log(`\nmkfsFat of the ${((fileBytes + 256 * 2 ** 20) / 2 ** 30).toFixed(2)} GiB image: ${mkfs.toFixed(2)} s`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
