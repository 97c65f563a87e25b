/**
 * Power loss at every write: a scenario (new multi-cluster file, a directory grown past one cluster,
 * an overwrite, a delete, renames across directories, rmdir) is recorded write by write, and the image
 * after every prefix of those writes must open and walk cleanly, every visible file holding either its
 * old or its new content (never garbage, never a broken chain). fsck.fat -n on sampled prefixes reports
 * at most the dirty bit, lost clusters, FAT copies differing (between the two copy writes), a wrong free
 * count and — only inside a rename — two names
 * sharing a chain.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { MemoryDisk, type Disk } from '../../src/io/disk.ts';
import { FatFs, mkfsFat } from '../../src/fs/fat/index.ts';
import { missingTools, run } from '../helpers/tools.ts';
import { tempDir } from '../helpers/tmp.ts';
import { fsListing, sha } from './fixtures.ts';

const MiB = 2 ** 20;
const NOW = 1_750_000_000_000;

class RecordingDisk implements Disk {
  readonly inner: MemoryDisk;
  readonly writes: { offset: number; bytes: Uint8Array }[] = [];
  readonly readOnly = false;
  constructor(inner: MemoryDisk) {
    this.inner = inner;
  }
  get size(): number {
    return this.inner.size;
  }
  read(buf: Uint8Array, offset: number): Promise<void> {
    return this.inner.read(buf, offset);
  }
  async write(buf: Uint8Array, offset: number): Promise<void> {
    this.writes.push({ offset, bytes: buf.slice() });
    await this.inner.write(buf, offset);
  }
  async flush(): Promise<void> {}
  async close(): Promise<void> {}
}

const bytes = (n: number, seed: number): Uint8Array => new Uint8Array(n).map((_, i) => (i * seed + (i >> 9)) & 0xff);

async function baseImage(): Promise<Uint8Array> {
  const disk = new MemoryDisk(16 * MiB);
  await mkfsFat(disk, { type: 'fat16', serial: 3, now: NOW });
  const fs = await FatFs.open(disk, { now: () => NOW });
  await fs.mkdir('/docs');
  await fs.mkdir('/empty dir');
  await fs.writeFile('/docs/old report.txt', bytes(7000, 3));
  await fs.writeFile('/keep.bin', bytes(3000, 5));
  await fs.writeFile('/to delete.bin', bytes(9000, 7));
  await fs.writeFile('/overwrite me.bin', bytes(5000, 11));
  await fs.close();
  return disk.bytes.slice();
}

async function scenario(fs: FatFs): Promise<void> {
  await fs.writeFile('/new big file.bin', bytes(40_000, 13));
  await fs.mkdir('/many');
  for (let i = 0; i < 40; i++) await fs.writeFile(`/many/a file with a long name ${i}.txt`, bytes(100 + i, 17));
  await fs.writeFile('/overwrite me.bin', bytes(12_000, 19));
  await fs.unlink('/to delete.bin');
  await fs.rename('/docs/old report.txt', '/many/moved report.txt');
  await fs.rename('/keep.bin', '/kept.bin');
  await fs.rmdir('/empty dir');
}

describe('FAT write order under power loss', () => {
  test('every prefix of the writes leaves a readable tree with old or new contents', async () => {
    const base = await baseImage();
    const before = await fsListing(await FatFs.open(new MemoryDisk(base.slice()), { readOnly: true }));
    const rec = new RecordingDisk(new MemoryDisk(base.slice()));
    const fs = await FatFs.open(rec, { now: () => NOW });
    await scenario(fs);
    await fs.close();
    const after = await fsListing(await FatFs.open(new MemoryDisk(rec.inner.bytes.slice()), { readOnly: true }));
    const allowed = new Map<string, Set<string>>();
    for (const m of [before, after]) for (const [p, h] of m) (allowed.get(p.toUpperCase()) ?? allowed.set(p.toUpperCase(), new Set()).get(p.toUpperCase())!).add(h);
    const image = base.slice();
    const tmp = tempDir('livestick-fat-crash-');
    const fsckable = !missingTools('fsck.fat');
    try {
      for (let k = 0; k <= rec.writes.length; k++) {
        if (k > 0) image.set(rec.writes[k - 1]!.bytes, rec.writes[k - 1]!.offset);
        const seen = await fsListing(await FatFs.open(new MemoryDisk(image.slice()), { readOnly: true }));
        for (const [p, h] of seen) {
          assert.ok(allowed.get(p.toUpperCase())?.has(h), `after ${k} of ${rec.writes.length} writes: ${p} is neither old nor new`);
        }
        for (const p of ['/keep.bin', '/kept.bin']) void p;
        assert.ok(seen.has('/keep.bin') || seen.has('/kept.bin'), `after ${k} writes a renamed file has no name`);
        assert.ok(seen.has('/docs/old report.txt') || seen.has('/many/moved report.txt'), `after ${k} writes a moved file has no name`);
        if (fsckable && (k % 7 === 0 || k === rec.writes.length)) {
          const path = join(tmp.dir, 'prefix.img');
          writeFileSync(path, image);
          const r = run('fsck.fat', ['-n', path], { allowFail: true });
          const complaints = r.stdout
            .split('\n')
            .filter((l) => l && !/^fsck\.fat |^Leaving filesystem unchanged|: \d+ files, |^ *Automatically removing dirty bit|^Dirty bit is set|^Reclaimed \d+ unused clusters? |^FATs differ but appear to be intact|^ +Using first FAT|^Free cluster summary wrong|^ *Auto-correcting|^ *\d+\) |^\?|^Checking|^ +Not auto|^ +Auto-/.test(l));
          const sharing = complaints.filter((l) => /share clusters|Truncating second to|File size is .* cluster chain length/.test(l));
          assert.deepEqual(complaints.filter((l) => !sharing.includes(l) && !/^\/|^ +First |^ +Second |^  Size |^ +Truncating|^ +Renamed/.test(l)), [], `after ${k} writes: ${r.stdout}`);
          if (sharing.length > 0) assert.ok(seen.has('/kept.bin') || seen.has('/many/moved report.txt'), `two names outside a rename after ${k} writes: ${r.stdout}`);
        }
      }
    } finally {
      tmp.cleanup();
    }
    assert.ok(rec.writes.length > 60, `${rec.writes.length} writes recorded`);
  });
});
