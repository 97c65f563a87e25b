/**
 * FAT benchmark: a 1 GiB file written into a FAT32 image through FatFs (createFile + sequential
 * writes, the overlay-image path) against a raw sequential write of the same bytes to a plain file,
 * and reading it back against a raw read, same machine, same run.
 *   node --import tsx bench/fat.bench.ts [--file-mib 1024] [--chunk-kib 1024] [--rounds 3]
 * Page-cache figures: neither side syncs, so they compare the code paths, not the disk.
 */
import { closeSync, mkdtempSync, openSync, readSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileDisk, type Disk } from '../src/io/disk.ts';
import { FatFs, mkfsFat } from '../src/fs/fat/index.ts';

const arg = (name: string, def: number): number => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : def;
};
const fileBytes = arg('file-mib', 1024) * 2 ** 20;
const chunk = arg('chunk-kib', 1024) * 1024;
const ROUNDS = arg('rounds', 3);
const dir = mkdtempSync(join(tmpdir(), 'livestick-bench-fat-'));

async function time(fn: () => Promise<void> | void): Promise<number> {
  const t = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t) / 1e9;
}

const buf = new Uint8Array(chunk);
for (let i = 0; i < chunk; i++) buf[i] = (i * 7 + (i >> 10)) & 0xff;

async function rawRound(): Promise<[number, number]> {
  const raw = join(dir, 'raw.bin');
  const w = await time(() => {
    const fd = openSync(raw, 'w');
    for (let at = 0; at < fileBytes; at += chunk) writeSync(fd, buf, 0, Math.min(chunk, fileBytes - at), at);
    closeSync(fd);
  });
  const r = await time(() => {
    const fd = openSync(raw, 'r');
    const into = new Uint8Array(chunk);
    for (let at = 0; at < fileBytes; at += chunk) readSync(fd, into, 0, Math.min(chunk, fileBytes - at), at);
    closeSync(fd);
  });
  rmSync(raw);
  return [w, r];
}

/** Skips fsync (FatFs.close flushes), so write figures measure the code path, not the disk. */
class NoSyncDisk implements Disk {
  readonly inner: FileDisk;
  constructor(inner: FileDisk) {
    this.inner = inner;
  }
  get size(): number {
    return this.inner.size;
  }
  get readOnly(): boolean {
    return this.inner.readOnly;
  }
  read(buf: Uint8Array, offset: number): Promise<void> {
    return this.inner.read(buf, offset);
  }
  write(buf: Uint8Array, offset: number): Promise<void> {
    return this.inner.write(buf, offset);
  }
  async flush(): Promise<void> {}
  close(): Promise<void> {
    return this.inner.close();
  }
}

async function fatRound(): Promise<[number, number, number]> {
  const img = join(dir, 'fat32.img');
  const disk = new NoSyncDisk(await FileDisk.open(img, { create: { size: fileBytes + 256 * 2 ** 20 } }));
  const m = await time(async () => {
    await mkfsFat(disk, { serial: 1, now: 0 });
  });
  let fs = await FatFs.open(disk);
  const w = await time(async () => {
    const file = await fs.createFile('/overlay.img', { size: fileBytes });
    for (let at = 0; at < fileBytes; at += chunk) await file.write(Math.min(chunk, fileBytes - at) === chunk ? buf : buf.subarray(0, fileBytes - at), at);
    await fs.close();
  });
  fs = await FatFs.open(disk, { readOnly: true });
  const r = await time(async () => {
    const file = await fs.openFile('/overlay.img');
    const into = new Uint8Array(chunk);
    for (let at = 0; at < fileBytes; at += chunk) await file.read(Math.min(chunk, fileBytes - at) === chunk ? into : into.subarray(0, fileBytes - at), at);
  });
  await disk.close();
  rmSync(img);
  return [w, r, m];
}

try {
  // Alternating rounds, best of each: the page cache and writeback of the other side's file skew a
  // single run either way.
  let rawWrite = Infinity, rawRead = Infinity, fatWrite = Infinity, fatRead = Infinity, mkfs = Infinity;
  for (let round = 0; round < ROUNDS; round++) {
    const [rw, rr] = await rawRound();
    const [fw, fr, m] = await fatRound();
    rawWrite = Math.min(rawWrite, rw);
    rawRead = Math.min(rawRead, rr);
    fatWrite = Math.min(fatWrite, fw);
    fatRead = Math.min(fatRead, fr);
    mkfs = Math.min(mkfs, m);
  }
  const mibs = (s: number): string => `${(fileBytes / 2 ** 20 / s).toFixed(0)} MiB/s`;
  console.log(`| ${fileBytes / 2 ** 20} MiB file, ${chunk / 1024} KiB chunks | raw | FatFs (FAT32) | FatFs / raw time |`);
  console.log('|---|---|---|---|');
  console.log(`| write | ${rawWrite.toFixed(2)} s (${mibs(rawWrite)}) | ${fatWrite.toFixed(2)} s (${mibs(fatWrite)}) | ${(fatWrite / rawWrite).toFixed(2)} |`);
  console.log(`| read | ${rawRead.toFixed(2)} s (${mibs(rawRead)}) | ${fatRead.toFixed(2)} s (${mibs(fatRead)}) | ${(fatRead / rawRead).toFixed(2)} |`);
  console.log(`\nmkfsFat of the ${((fileBytes + 256 * 2 ** 20) / 2 ** 30).toFixed(2)} GiB image: ${mkfs.toFixed(2)} s`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
