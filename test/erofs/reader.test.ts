/** ErofsReader on small mkfs.erofs images: lookups, typed errors on damaged images (cycles, truncation, foreign devices), small caches. */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import '../helpers/setup.ts';
import { missingTools, run } from '../helpers/tools.ts';
import { tempDir } from '../helpers/tmp.ts';
import { MemoryDisk } from '../../src/io/disk.ts';
import { CorruptImageError, LivestickError, NotFoundError, UnsupportedFeatureError } from '../../src/errors.ts';
import { ErofsReader } from '../../src/fs/erofs/reader.ts';
import { ErofsFileSystem } from '../../src/fs/erofs/filesystem.ts';
import { decodeDirentBlock, DIRENT_SIZE } from '../../src/fs/erofs/dirent.ts';
import { checksumSpan, superblockChecksum } from '../../src/fs/erofs/superblock.ts';
import { content } from './fixture.ts';

const skip = missingTools('mkfs.erofs');
const t = tempDir('erofs-reader-');
const src = join(t.dir, 'src');
const images: Record<string, Uint8Array> = {};
const texts = content(700_000, 1, 0.1);

before(() => {
  if (skip) return;
  mkdirSync(join(src, 'a/b/c'), { recursive: true });
  writeFileSync(join(src, 'a/b/c/file'), texts);
  writeFileSync(join(src, 'naïve'), 'x');
  symlinkSync('a/b', join(src, 'ab'));
  for (const [name, args] of [['plain', []], ['lz4', ['-zlz4hc']], ['blob', ['--chunksize=4096', `--blobdev=${join(t.dir, 'blob.img')}`]]] as const) {
    const img = join(t.dir, `${name}.img`);
    run('mkfs.erofs', ['--quiet', '-T1000', ...args, img, src]);
    images[name] = new Uint8Array(readFileSync(img));
  }
});
after(() => t.cleanup());

const open = (bytes: Uint8Array, cacheBytes?: number) => ErofsReader.open(new MemoryDisk(Uint8Array.from(bytes), { readOnly: true }), cacheBytes === undefined ? {} : { cacheBytes });

test('lookups: nested, Unicode, symlinks not followed; missing, ".." and file-as-dir give NotFoundError', { skip }, async () => {
  for (const name of ['plain', 'lz4']) {
    const fs = new ErofsFileSystem(await open(images[name]!));
    assert.equal((await fs.stat('/a/b/c/file')).size, texts.byteLength);
    assert.equal((await fs.stat('/naïve')).kind, 'file');
    assert.equal((await fs.stat('/ab')).kind, 'symlink');
    assert.equal(await fs.readlink('/ab'), 'a/b');
    assert.deepEqual((await fs.readdir('/a')).map((e) => e.name), ['b']);
    for (const p of ['/nope', '/a/..', '/naïve/x', '/ab/c']) await assert.rejects(fs.stat(p), NotFoundError, p);
  }
});

test('a tiny cache (4 KiB) reads the same bytes, by any ranges', { skip }, async () => {
  for (const name of ['plain', 'lz4']) {
    const r = await open(images[name]!, 4096);
    const f = await r.openFileDisk('/a/b/c/file');
    const got = new Uint8Array(f.size);
    for (let at = 0; at < f.size; at += 9999) await f.read(got.subarray(at, Math.min(f.size, at + 9999)), at);
    assert.ok(Buffer.from(got).equals(texts));
    await assert.rejects(f.read(new Uint8Array(10), f.size - 5), LivestickError);
  }
});

test('a directory entry pointing back up is a cycle: CorruptImageError, not an endless walk', { skip }, async () => {
  const bytes = Uint8Array.from(images.plain!);
  const r = await open(bytes);
  const root = await r.root();
  const b = await r.lookup('/a/b');
  // A small directory is stored inline after its inode (FLAT_INLINE), else in its first block.
  const at = b.size < r.blockSize && b.layout === 2 ? b.bodyPos : (b.startBlock as number) * r.blockSize;
  const entries = decodeDirentBlock(bytes.subarray(at, at + Math.min(r.blockSize, b.size)));
  const i = entries.findIndex((e) => Buffer.from(e.name).toString() === 'c');
  new DataView(bytes.buffer).setBigUint64(at + i * DIRENT_SIZE, BigInt(root.nid), true);
  // The checksum covers the rest of block 0, where small directories may live: reseal it.
  const span = bytes.subarray(1024, 1024 + checksumSpan(r.superblock.blkszbits));
  new DataView(span.buffer, span.byteOffset).setUint32(4, superblockChecksum(span), true);
  const damaged = await open(bytes);
  await assert.rejects((async () => {
    for await (const _ of damaged.walk()) void _;
  })(), (e: unknown) => e instanceof CorruptImageError && /cycle/.test(e.message));
});

test('truncated and zeroed images give typed errors', { skip }, async () => {
  const img = images.lz4!;
  for (const cut of [100, 1100, 4096, Math.floor(img.byteLength / 2)]) {
    await assert.rejects((async () => {
      const r = await open(img.subarray(0, cut));
      for await (const e of r.walk()) if (e.inode.kind === 'file') await r.readFile(e.inode);
    })(), LivestickError, `cut at ${cut}`);
  }
});

test('chunks on an extra device (--blobdev) are refused by name', { skip }, async () => {
  const r = await open(images.blob!);
  assert.equal(r.superblock.extraDevices, 1);
  await assert.rejects(r.readFile('/a/b/c/file'), (e: unknown) => e instanceof UnsupportedFeatureError && e.feature === 'EXTRA_DEVICES');
});

test('the registry opens an EROFS volume by its signature as the common FileSystem', { skip }, async () => {
  const { probeSignatures } = await import('../../src/io/signature.ts');
  const { openFileSystem } = await import('../../src/fs/registry.ts');
  const disk = new MemoryDisk(Uint8Array.from(images.lz4!), { readOnly: true });
  const names = (await probeSignatures(disk)).map((s: { name: string }) => s.name);
  assert.ok(names.includes('erofs'), names.join(','));
  const opened = await openFileSystem(disk, names);
  assert.equal(opened?.fs.type, 'erofs');
  assert.equal((await opened!.fs.stat('/a/b/c/file')).size, texts.byteLength);
});
