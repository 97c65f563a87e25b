/**
 * Findings of the mutation campaigns (issue 11 §6 and test/fuzz/*.fuzz.slow.test.ts), each kept as a
 * hand-made case: the corrupt field must give a typed error naming it, never an endless stream, an
 * untyped crash or a silent wait.
 */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CorruptImageError } from '../../src/errors.ts';
import { MemoryDisk } from '../../src/io/disk.ts';
import { Ext4, Ext4Writer, mkfs } from '../../src/fs/ext4/index.ts';
import { maxFileSize } from '../../src/fs/ext4/superblock.ts';
import { LuksVolume } from '../../src/xform/luks/volume.ts';
import { fieldsOf, readLuks2Pair, writeLuks2Pair } from '../../src/xform/luks/luks2-header.ts';
import { checkKdfCost, defaultKdfLimits, deriveKey, observeSlowKdf, pbkdf2Rate } from '../../src/xform/luks/kdf.ts';
import { runCli } from '../helpers/cli.ts';
import { slowKdfProgress } from '../../src/cli/common.ts';
import { PASSPHRASE, makeLuks1 } from './seeds.ts';
import { tempDir } from '../helpers/tmp.ts';

async function ext4Image(): Promise<{ bytes: Uint8Array; sizeAt: (path: string) => Promise<number> }> {
  const disk = new MemoryDisk(new Uint8Array(8 << 20));
  await mkfs(disk, { label: 'fuzz', uuid: new Uint8Array(16).fill(7), hashSeed: new Uint8Array(16).fill(9), time: 1_700_000_000, journalBlocks: 0 });
  const w = await Ext4Writer.open(await Ext4.open(disk));
  await w.writeFile('/small', new TextEncoder().encode('hello\n'));
  await w.writeFile('/big', new Uint8Array(3 << 20).fill(5)); // streamed in 1 MiB pieces
  await w.writeFile('/mid', new Uint8Array(300_000).fill(6)); // one piece
  await w.mkdir('/dir');
  await w.close();
  const bytes = new Uint8Array(disk.size);
  await disk.read(bytes, 0);
  const fs = await Ext4.open(new MemoryDisk(bytes.slice(), { readOnly: true }));
  return { bytes, sizeAt: async (path) => fs.inodeLocation(await fs.lookup(path)) + 4 };
}

describe('ext4: i_size beyond the maximum file size', () => {
  let image: Awaited<ReturnType<typeof ext4Image>>;
  before(async () => {
    image = await ext4Image();
  });

  test('the bound follows block size, extents vs block maps, and huge_file', () => {
    assert.equal(maxFileSize({ blockSize: 4096, featureRoCompat: 0x8 }, true), (2 ** 32 - 1) * 4096);
    assert.equal(maxFileSize({ blockSize: 4096, featureRoCompat: 0 }, true), Math.floor((2 ** 32 - 1) / 8) * 4096);
    assert.equal(maxFileSize({ blockSize: 1024, featureRoCompat: 0x8 }, false), (12 + 256 + 256 ** 2 + 256 ** 3) * 1024);
  });

  for (const [what, path, high] of [
    ['a file with size_high 0xffffffff', '/big', 0xffffffff],
    ['a directory with size_high 0x10000', '/dir', 0x10000],
  ] as const) {
    test(`${what} is a CorruptImageError naming the inode and i_size`, async () => {
      const bytes = image.bytes.slice();
      const at = await image.sizeAt(path);
      new DataView(bytes.buffer).setUint32(at + 104, high, true); // i_size_high is at +108
      const fs = await Ext4.open(new MemoryDisk(bytes, { readOnly: true }), { skipChecksums: true });
      const inode = await fs.readInode(await fs.lookup(path));
      const expect = (err: unknown) => err instanceof CorruptImageError && /^inode\[\d+\]\.i_size$/.test(err.field);
      if (path === '/dir') {
        await assert.rejects(fs.readdir(path), expect);
      } else {
        await assert.rejects(fs.readFile(path), expect);
        await assert.rejects(fs.readInodeData(inode, 2 ** 62), expect);
        await assert.rejects(async () => {
          for await (const _ of fs.stream(path)) void _;
        }, expect);
      }
    });
  }

  test('appending to such a file is refused the same way (the writer trusts i_size too)', async () => {
    const bytes = image.bytes.slice();
    new DataView(bytes.buffer).setUint32((await image.sizeAt('/big')) + 104, 0xffffffff, true);
    const w = await Ext4Writer.open(await Ext4.open(new MemoryDisk(bytes), { skipChecksums: true }));
    await assert.rejects(w.appendFile('/big', new Uint8Array(10)), (e: unknown) => e instanceof CorruptImageError && /\.i_size$/.test(e.field));
  });

  test('a size at the bound is still accepted', async () => {
    const bytes = image.bytes.slice();
    const at = await image.sizeAt('/big');
    const fs0 = await Ext4.open(new MemoryDisk(bytes, { readOnly: true }), { skipChecksums: true });
    const limit = maxFileSize(fs0.sb, true);
    const dv = new DataView(bytes.buffer);
    dv.setUint32(at, limit % 2 ** 32, true);
    dv.setUint32(at + 104, Math.floor(limit / 2 ** 32), true);
    const fs = await Ext4.open(new MemoryDisk(bytes, { readOnly: true }), { skipChecksums: true });
    assert.equal(fs.sizeOf(await fs.readInode(await fs.lookup('/big'))), limit);
  });
});

describe('ext4 cat: output errors', () => {
  let tmp: ReturnType<typeof tempDir>;
  let good: string;
  let corrupt: string;
  before(async () => {
    tmp = tempDir('lsk-fuzz-cat-');
    const image = await ext4Image();
    good = join(tmp.dir, 'good.img');
    writeFileSync(good, image.bytes);
    const bytes = image.bytes.slice();
    new DataView(bytes.buffer).setUint32((await image.sizeAt('/big')) + 104, 0xffffffff, true);
    corrupt = join(tmp.dir, 'corrupt.img');
    writeFileSync(corrupt, bytes);
  });
  after(() => tmp.cleanup());

  test('a corrupt size_high ends at once with exit 65 naming i_size (no endless stream)', () => {
    const r = runCli(['ext4', 'cat', corrupt, '/big']);
    assert.equal(r.status, 65, r.stderr);
    assert.match(r.stderr, /corrupt\.img: ext4: inode\[\d+\]\.i_size: .* beyond the filesystem's maximum file size/);
    assert.equal(r.stdout, '');
  });

  const catTo = (redirect: string, limitKiB?: number, path = '/big') => {
    const ulimit = limitKiB === undefined ? '' : `ulimit -f ${limitKiB}; `;
    const tsx = import.meta.resolve('tsx');
    const main = new URL('../../src/cli/main.ts', import.meta.url).pathname;
    return spawnSync('bash', ['-c', `${ulimit}exec "$0" --import "$1" "$2" ext4 cat "$3" "$4" > ${redirect}`, process.execPath, tsx, main, good, path], { encoding: 'utf8' });
  };

  test('a full disk (ENOSPC) is a typed error, exit 74', { skip: process.platform !== 'linux' && 'needs /dev/full' }, () => {
    const r = catTo('/dev/full');
    assert.equal(r.status, 74, r.stderr);
    assert.match(r.stderr, /^livestick: error: standard output: cannot write the output: no space left on device \(ENOSPC\)\n$/);
  });

  test('a file size limit (EFBIG) is a typed I/O error, exit 74', { skip: process.platform === 'win32' && 'needs ulimit' }, () => {
    const r = catTo(JSON.stringify(join(tmp.dir, 'out.bin')), 64);
    assert.equal(r.status, 74, r.stderr);
    assert.match(r.stderr, /^livestick: error: standard output: cannot write the output: file too large for this filesystem \(EFBIG\)\n$/);
    assert.doesNotMatch(r.stderr, /this is a bug/);
  });

  test('a short write into a file is not silent truncation: the rest is written or the error told', { skip: process.platform === 'win32' && 'needs ulimit' }, () => {
    const r = catTo(JSON.stringify(join(tmp.dir, 'out-mid.bin')), 64, '/mid');
    assert.equal(r.status, 74, r.stderr);
    assert.match(r.stderr, /^livestick: error: standard output: cannot write the output: file too large for this filesystem \(EFBIG\)\n$/);
    const ok = catTo(JSON.stringify(join(tmp.dir, 'out-ok.bin')), undefined, '/mid');
    assert.equal(ok.status, 0, ok.stderr);
    assert.equal(readFileSync(join(tmp.dir, 'out-ok.bin')).length, 300_000);
  });

  test('a closed pipe (EPIPE) still exits quietly', () => {
    const tsx = import.meta.resolve('tsx');
    const main = new URL('../../src/cli/main.ts', import.meta.url).pathname;
    const r = spawnSync('bash', ['-c', 'set -o pipefail; "$0" --import "$1" "$2" ext4 cat "$3" /big | head -c 10 > /dev/null', process.execPath, tsx, main, good], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stderr, '');
  });
});


describe('LUKS: implausible KDF costs are refused, slow ones announced', () => {
  const rate = pbkdf2Rate('sha256');

  test('a LUKS1 mkDigestIterations far beyond a benchmark is refused before any derivation', async () => {
    const digestIterations = Math.min(0xffffffff, Math.ceil(rate * 40)); // ~40 s here: 300x a 125 ms benchmark
    const bytes = makeLuks1({ digestIterations: 1000 });
    new DataView(bytes.buffer).setUint32(164, digestIterations, false);
    const vol = await LuksVolume.open(new MemoryDisk(bytes, { readOnly: true }));
    const t0 = performance.now();
    await assert.rejects(vol.unlock(PASSPHRASE), (e: unknown) => e instanceof CorruptImageError && e.field === 'mkDigestIterations' && /implausible KDF cost/.test(e.message));
    assert.ok(performance.now() - t0 < 1000, 'refused without computing');
  });

  test('a keyslot cost far beyond a benchmark is refused; LIVESTICK_ALLOW_SLOW_KDF-style limits lift the bound', async () => {
    const huge = { type: 'pbkdf2' as const, hash: 'sha256', iterations: Math.min(1 << 30, Math.ceil(rate * 400)), salt: new Uint8Array(32) };
    assert.throws(() => checkKdfCost(huge, defaultKdfLimits()), (e: unknown) => e instanceof CorruptImageError && /implausible KDF cost/.test(e.message));
    assert.doesNotThrow(() => checkKdfCost(huge, { ...defaultKdfLimits(), maxKeyslotSeconds: Infinity }));
    const out = spawnSync(process.execPath, ['--import', import.meta.resolve('tsx'), '-e', "import('./src/xform/luks/kdf.ts').then((m) => console.log(m.defaultKdfLimits().maxKeyslotSeconds))"], { encoding: 'utf8', env: { ...process.env, LIVESTICK_ALLOW_SLOW_KDF: '1' } });
    assert.equal(out.stdout.trim(), 'Infinity', out.stderr);
  });

  test('a LUKS2 digest cost far beyond a benchmark is refused, naming the digest', async () => {
    const disk = new MemoryDisk(new Uint8Array((1 << 20) + (64 << 10)));
    await LuksVolume.format(disk, PASSPHRASE, { kdf: { type: 'pbkdf2', iterations: 1000 }, digestIterations: 1000, dataOffset: 1 << 20 });
    const pair = await readLuks2Pair(disk);
    const json = structuredClone(pair.active.metadata.json) as Record<string, any>;
    json.digests['0'].iterations = Math.min(1 << 30, Math.ceil(rate * 40));
    await writeLuks2Pair(disk, { ...fieldsOf(pair.active.binary), seqid: pair.active.binary.seqid + 1n }, json);
    const vol = await LuksVolume.open(disk);
    await assert.rejects(vol.unlock(PASSPHRASE), (e: unknown) => e instanceof CorruptImageError && e.field === 'digests.0.iterations' && /implausible KDF cost/.test(e.message));
  });

  test('benchmark-sized costs pass (a cryptsetup 2 s keyslot, 125 ms digest)', () => {
    const salt = new Uint8Array(32);
    assert.doesNotThrow(() => checkKdfCost({ type: 'pbkdf2', hash: 'sha256', iterations: Math.ceil(rate * 2), salt }));
    assert.doesNotThrow(() => checkKdfCost({ type: 'pbkdf2', hash: 'sha256', iterations: Math.ceil(rate * 0.5), salt }, defaultKdfLimits(), 'mkDigestIterations'));
  });

  test('a slow but plausible derivation is announced with its estimate, then ended', async () => {
    const seen: string[] = [];
    const previous = observeSlowKdf(({ what, estimatedMs }) => {
      seen.push(`start ${what} ${estimatedMs >= 1000}`);
      return () => seen.push('end');
    });
    try {
      const iterations = Math.ceil(rate * 1.3);
      await deriveKey({ type: 'pbkdf2', hash: 'sha256', iterations, salt: new Uint8Array(32) }, PASSPHRASE, 32);
      await deriveKey({ type: 'pbkdf2', hash: 'sha256', iterations: 1000, salt: new Uint8Array(32) }, PASSPHRASE, 32);
    } finally {
      observeSlowKdf(previous);
    }
    assert.deepEqual(seen, [`start PBKDF2-sha256, ${Math.ceil(rate * 1.3)} iterations true`, 'end']);
  });

  test('the CLI renderer: one line off a terminal for long waits, a bar that is cleared on a terminal', () => {
    const writes: string[] = [];
    const write = process.stderr.write;
    const tty = Object.getOwnPropertyDescriptor(process.stderr, 'isTTY');
    process.stderr.write = ((chunk: string) => writes.push(chunk) > 0) as typeof process.stderr.write;
    try {
      Object.defineProperty(process.stderr, 'isTTY', { value: false, configurable: true });
      slowKdfProgress({ what: 'PBKDF2-sha256, 9 iterations', estimatedMs: 2900 })();
      slowKdfProgress({ what: 'PBKDF2-sha256, 99 iterations', estimatedMs: 7400 })();
      Object.defineProperty(process.stderr, 'isTTY', { value: true, configurable: true });
      slowKdfProgress({ what: 'argon2id, 4 passes over 1024 MiB', estimatedMs: 3000 })();
    } finally {
      process.stderr.write = write;
      if (tty) Object.defineProperty(process.stderr, 'isTTY', tty);
      else delete (process.stderr as { isTTY?: boolean }).isTTY;
    }
    assert.deepEqual(writes, [
      'livestick: deriving the key (PBKDF2-sha256, 99 iterations, about 7 s)\n',
      '\r\x1b[Kderiving the key (argon2id, 4 passes over 1024 MiB, about 3 s): 0% ETA 3s',
      '\r\x1b[K',
    ]);
  });
});

describe('fuzz findings', () => {
  test('luks1: a device whose size is not whole sectors opens (the partial last sector is not data)', async () => {
    const seed = makeLuks1();
    const bytes = new Uint8Array(seed.byteLength + 300);
    bytes.set(seed);
    const vol = await LuksVolume.open(new MemoryDisk(bytes, { readOnly: true }));
    const payload = await vol.openPayload(PASSPHRASE, { readOnly: true });
    assert.equal(payload.size, seed.byteLength - vol.payloadGeometry().offset);
    const last = new Uint8Array(512);
    await payload.read(last, payload.size - 512);
    assert.equal(new DataView(last.buffer).getUint32(0, true), payload.size / 512 - 1);
  });
});
