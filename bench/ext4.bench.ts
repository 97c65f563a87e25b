/**
 * ext4 benchmark: the block → inode map of a real image against debugfs icheck, and file
 * read/write throughput against raw file I/O on the same machine, same run.
 *   node --import tsx bench/ext4.bench.ts [--src /usr/share] [--image-mib 1536] [--image PATH] [--file-mib 256] [--icheck-lines 4]
 * (--image reuses an existing ext4 image instead of building one.) Throughputs are page-cache
 * figures: neither side syncs, so they compare the code paths, not the disk.
 * The image is built with mke2fs -d from real files. debugfs takes at most ~600 block numbers per
 * request line (its line buffer), and every line rescans all inodes, so its time for all used
 * blocks is measured on `--icheck-lines` lines and scaled by the number of lines all blocks need.
 */
import { closeSync, mkdtempSync, openSync, readSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { FileDisk, type Disk } from '../src/io/disk.ts';
import { Ext4 } from '../src/fs/ext4/fs.ts';
import { buildBlockMap } from '../src/fs/ext4/blockmap.ts';
import { mkfs } from '../src/fs/ext4/mkfs.ts';
import { Ext4Writer } from '../src/fs/ext4/writer.ts';

const argStr = (name: string, def: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1]! : def;
};
const arg = (name: string, def: number) => Number(argStr(name, String(def)));
const src = argStr('src', '/usr/share');
const imageMiB = arg('image-mib', 1536);
const fileMiB = arg('file-mib', 256);
const icheckLines = arg('icheck-lines', 4);
const dir = mkdtempSync(join(tmpdir(), 'livestick-bench-ext4-'));

async function time(fn: () => Promise<void> | void): Promise<number> {
  const t = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t) / 1e9;
}

function sh(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 1 << 30 });
  if (r.status !== 0) throw new Error(`${cmd} failed: ${r.stderr}`);
  return r.stdout;
}

/** Passes everything through but skips fsync, so write figures measure the code path, not the disk. */
class NoSyncDisk implements Disk {
  readonly inner: FileDisk;
  constructor(inner: FileDisk) {
    this.inner = inner;
  }
  get size() {
    return this.inner.size;
  }
  get readOnly() {
    return this.inner.readOnly;
  }
  read(buf: Uint8Array, offset: number) {
    return this.inner.read(buf, offset);
  }
  write(buf: Uint8Array, offset: number) {
    return this.inner.write(buf, offset);
  }
  async flush() {}
  close() {
    return this.inner.close();
  }
}

async function main() {
  const rows: string[][] = [];
  // 1. Block map of a real image.
  const given = argStr('image', '');
  const image = given || join(dir, 'real.img');
  const buildS = given ? 0 : await time(() => void sh('mke2fs', ['-q', '-F', '-t', 'ext4', '-d', src, image, `${imageMiB}M`]));
  let owned: number[] = [];
  let files = 0;
  let mapS = Infinity;
  let pathsS = Infinity;
  let blocks = 0;
  for (let round = 0; round < 3; round++) {
    const disk = await FileDisk.open(image, { readOnly: true });
    let map!: Awaited<ReturnType<typeof buildBlockMap>>;
    mapS = Math.min(mapS, await time(async () => {
      map = await buildBlockMap(await Ext4.open(disk));
    }));
    blocks = map.blocksCount;
    if (round === 0) {
      owned = [];
      for (let b = 0; b < map.blocksCount; b++) if (map.owner[b] !== 0) owned.push(b);
    }
    const inos = new Set(map.owner);
    inos.delete(0);
    files = inos.size;
    pathsS = Math.min(pathsS, await time(async () => void (await map.paths(inos))));
    await disk.close();
  }
  const perLine = 600;
  const lines = Math.ceil(owned.length / perLine);
  const sample: string[] = [];
  for (let l = 0; l < Math.min(icheckLines, lines); l++) {
    const from = Math.floor((l * owned.length) / Math.min(icheckLines, lines));
    sample.push(`icheck ${owned.slice(from, from + perLine).join(' ')}`);
  }
  const cmdFile = join(dir, 'icheck.cmds');
  writeFileSync(cmdFile, sample.join('\n') + '\n');
  const icheckS = await time(() => void sh('debugfs', ['-f', cmdFile, image]));
  const icheckAllS = (icheckS / sample.length) * lines;
  rows.push([`block map, ${(blocks * 4096 / 2 ** 30).toFixed(2)} GiB image of ${src} (${owned.length} used blocks, ${files} inodes owning blocks)`, `${mapS.toFixed(2)} s`, `debugfs icheck, all used blocks: ${icheckAllS.toFixed(0)} s (${sample.length} × 600-block lines took ${icheckS.toFixed(2)} s; ${lines} lines needed)`, `${(icheckAllS / mapS).toFixed(0)}×`]);
  rows.push([`… one 600-block icheck request`, `${mapS.toFixed(2)} s (whole map)`, `${(icheckS / sample.length).toFixed(2)} s`, `${(icheckS / sample.length / mapS).toFixed(1)}×`]);
  rows.push([`inode → path names for all ${files} owning inodes`, `${pathsS.toFixed(2)} s`, '', '']);

  // 2. Write and read throughput of one large file against raw file I/O.
  const size = fileMiB * 2 ** 20;
  const data = new Uint8Array(size);
  for (let i = 0; i < size; i += 4) data[i] = (i * 2654435761) >>> 24;
  const rawPath = join(dir, 'raw.bin');
  // Best of three: the first write into fresh page cache pays for the host's dirty-page throttling.
  let rawWriteS = Infinity;
  for (let round = 0; round < 3; round++) {
    rawWriteS = Math.min(rawWriteS, await time(() => {
      const fd = openSync(rawPath, 'w');
      for (let at = 0; at < size; at += 2 ** 20) writeSync(fd, data, at, 2 ** 20, at);
      closeSync(fd);
    }));
  }
  const fsPath = join(dir, 'fs.img');
  const disk = new NoSyncDisk(await FileDisk.open(fsPath, { create: { size: size * 2 + 256 * 2 ** 20 } }));
  await mkfs(disk, { zeroed: true });
  const fsWriteS = await time(async () => {
    const w = await Ext4Writer.open(await Ext4.open(disk));
    async function* pieces() {
      for (let at = 0; at < size; at += 2 ** 20) yield data.subarray(at, at + 2 ** 20);
    }
    await w.writeFile('/big.bin', pieces());
    await w.close();
  });
  const piece = new Uint8Array(2 ** 20);
  const rawReadS = await time(() => {
    const fd = openSync(rawPath, 'r');
    for (let at = 0; at < size; at += piece.byteLength) readSync(fd, piece, 0, piece.byteLength, at);
    closeSync(fd);
  });
  const fs = await Ext4.open(disk);
  let got = 0;
  const fsReadS = await time(async () => {
    for await (const p of fs.stream('/big.bin', 2 ** 20, { reuse: true })) got += p.byteLength;
  });
  if (got !== size) throw new Error('short read');
  await disk.close();
  const mbs = (s: number) => `${(size / 2 ** 20 / s).toFixed(0)} MB/s`;
  rows.push([`write a ${fileMiB} MiB file (streamed, 1 MiB pieces, metadata included)`, mbs(fsWriteS), `raw writeSync: ${mbs(rawWriteS)}`, `${(rawWriteS / fsWriteS).toFixed(2)}×`]);
  rows.push([`read it back (stream, 1 MiB pieces, reused buffer)`, mbs(fsReadS), `raw readSync: ${mbs(rawReadS)}`, `${(rawReadS / fsReadS).toFixed(2)}×`]);

  if (!given) console.log(`Image built by mke2fs -d in ${buildS.toFixed(1)} s.\n`);
  console.log('| what | livestick | reference | ratio |');
  console.log('|---|---|---|---|');
  for (const r of rows) console.log(`| ${r.join(' | ')} |`);
}

try {
  await main();
} finally {
  rmSync(dir, { recursive: true, force: true });
}
