// exFAT content oracle: the Linux kernel (one qemu boot). The guest (1) mounts a mkfs.exfat image,
// writes a randomized tree into it (long and Unicode names, deep and wide directories, empty and
// multi-cluster files) and lists and hashes it; (2) mounts an image livestick made and filled (with a
// rename, a delete, a partly written file, files grown in place, grown around another file into a FAT
// chain and shrunk, and a rename onto an existing file), and lists and hashes every file. Afterwards ExfatFs reads (1) exactly as the guest wrote it, the guest's
// listing of (2) equals ours, and fsck.exfat -n and verify() are clean on both.
import { mulberry32 } from '../fuzz/mutate.ts';
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { missingTools, run } from '../helpers/tools.ts';
import { tempDir } from '../helpers/tmp.ts';
import { kernelHarnessStatus, runInKernel } from '../kernel/harness.ts';
import { FileDisk, readAt } from '../../src/io/disk.ts';
import { ExfatFs, mkfsExfat } from '../../src/fs/exfat/index.ts';

const MiB = 1 << 20;
const seed = process.env.FC_SEED !== undefined ? Number(process.env.FC_SEED) : process.env.CI ? 20261201 : (Math.random() * 2 ** 32) >>> 0;

const rng = mulberry32;

const NAME_PARTS = ['readme', 'Grüße', '日本語のファイル', 'Ελληνικά', 'emoji 🎉 party', 'ÆØÅ æøå', 'space name', 'x', 'dots.in.name', 'Кириллица'];

interface Tree {
  dirs: string[];
  files: { path: string; size: number }[];
}

/** A random tree: names unique case-insensitively per directory, one long name, deep and wide dirs. */
function randomTree(r: () => number, clusterSize: number): Tree {
  const dirs: string[] = [];
  const files: { path: string; size: number }[] = [];
  const taken = new Set<string>();
  const name = (dir: string, i: number): string => {
    let n = `${NAME_PARTS[Math.floor(r() * NAME_PARTS.length)]} ${i}`;
    if (r() < 0.1) n = `${n} ${'long'.repeat(50)}`.slice(0, 250);
    const key = `${dir}/${n}`.toUpperCase();
    if (taken.has(key)) return name(dir, i + 1000);
    taken.add(key);
    return n;
  };
  const sizes = () => [0, 1, 100, clusterSize - 1, clusterSize, 3 * clusterSize + 17, 40 * clusterSize + 5][Math.floor(r() * 7)]!;
  let deep = '';
  for (let i = 0; i < 9; i++) {
    deep += `/${name(deep, i)}`;
    dirs.push(deep);
    files.push({ path: `${deep}/${name(deep, 100 + i)}`, size: sizes() });
  }
  const wide = `/${name('', 50)}`;
  dirs.push(wide);
  for (let i = 0; i < 90; i++) files.push({ path: `${wide}/${name(wide, i)}`, size: sizes() });
  for (let i = 0; i < 10; i++) files.push({ path: `/${name('', 200 + i)}`, size: sizes() });
  return { dirs, files };
}

const q = (s: string) => `'${s.replaceAll("'", "'\\''")}'`;

/** Host-side listing in the guest's format: "D|./path" and "F|./path|size|sha256". */
async function listing(fs: ExfatFs, dir = '/', out: string[] = []): Promise<string[]> {
  for (const e of await fs.readdir(dir)) {
    const path = dir === '/' ? `/${e.name}` : `${dir}/${e.name}`;
    if (e.kind === 'dir') {
      out.push(`D|.${path}`);
      await listing(fs, path, out);
    } else {
      const d = await fs.openFile(path);
      const h = createHash('sha256');
      for (let at = 0; at < d.size; at += MiB) h.update(await readAt(d, at, Math.min(MiB, d.size - at)));
      out.push(`F|.${path}|${d.size}|${h.digest('hex')}`);
    }
  }
  return out;
}

const LIST = (mnt: string, tag: string) =>
  `cd ${mnt} && find . | sort | while read -r p; do [ "$p" = . ] && continue; if [ -d "$p" ]; then echo "${tag}D|$p"; else echo "${tag}F|$p|$(stat -c %s "$p")|$(sha256sum < "$p" | cut -c1-64)"; fi; done; cd /`;

describe('exFAT kernel oracle', { skip: kernelHarnessStatus() || missingTools('mkfs.exfat', 'fsck.exfat') }, () => {
  const tmp = tempDir('livestick-exfat-kernel-');
  after(() => tmp.cleanup());

  test(`the kernel reads what livestick wrote and livestick reads what the kernel wrote (seed ${seed})`, { timeout: 600_000 }, async () => {
    const theirs = join(tmp.dir, 'kernel-writes.img');
    const ours = join(tmp.dir, 'livestick-writes.img');
    writeFileSync(theirs, '');
    truncateSync(theirs, 64 * MiB);
    run('mkfs.exfat', ['-L', 'KERNEL', theirs]);

    // (2): livestick makes and fills an image, with a rename, a delete and a partly written file.
    const disk = await FileDisk.open(ours, { create: { size: 64 * MiB } });
    await mkfsExfat(disk, { label: 'LIVESTICK' });
    const fs = await ExfatFs.open(disk);
    const r2 = rng(seed ^ 0x5a5a5a5a);
    const tree2 = randomTree(r2, fs.clusterSize);
    for (const d of tree2.dirs) await fs.mkdir(d);
    for (const [i, f] of tree2.files.entries()) await fs.writeFile(f.path, new Uint8Array(f.size).map((_, k) => (k * 7 + i) & 0xff));
    await fs.rename(tree2.files[0]!.path, `${tree2.dirs[0]}/renamed by livestick`);
    await fs.unlink(tree2.files[1]!.path);
    const partial = await fs.createFile('/partly written.img', { size: 20 * fs.clusterSize });
    await partial.write(new Uint8Array(1000).fill(0xab), 3 * fs.clusterSize);
    await partial.close();
    // Resized files: grown in place, grown around another file (NoFatChain to a FAT chain), shrunk; and
    // a rename onto an existing file (the target's set rewritten in place).
    const cs = fs.clusterSize;
    const grown = await fs.createFile('/grown in place.img', { size: 2 * cs });
    await grown.write(new Uint8Array(2 * cs).fill(0x31), 0);
    await grown.resize(6 * cs + 5);
    await grown.close();
    const chained = await fs.createFile('/grown around.img', { size: 2 * cs + 1 });
    await chained.write(new Uint8Array(2 * cs + 1).fill(0x32), 0);
    await fs.writeFile('/blocker', new Uint8Array(cs).fill(0x33));
    await chained.resize(9 * cs);
    await chained.write(new Uint8Array(cs).fill(0x34), 8 * cs);
    await chained.close();
    const shrunk = await fs.createFile('/shrunk.img', { size: 10 * cs });
    await shrunk.write(new Uint8Array(10 * cs).map((_, k) => k & 0xff), 0);
    await shrunk.resize(3 * cs + 1);
    await shrunk.close();
    await fs.writeFile('/replaced', new Uint8Array(5 * cs).fill(0x35));
    await fs.rename('/shrunk.img', '/replaced');
    await fs.close();
    const oursListing = (await listing(await ExfatFs.open(disk, { readOnly: true }))).sort();
    await disk.close();

    // (1): the guest writes a random tree into the mkfs.exfat image.
    const tree1 = randomTree(rng(seed), 4096);
    const script = [
      'mkdir -p /mnt/a /mnt/b',
      'mount -t exfat /dev/vdb /mnt/a || exit 11',
      ...tree1.dirs.map((d) => `mkdir -p ${q('/mnt/a' + d)} || exit 12`),
      ...tree1.files.map((f) => (f.size === 0 ? `: > ${q('/mnt/a' + f.path)} || exit 13` : `head -c ${f.size} /dev/urandom > ${q('/mnt/a' + f.path)} || exit 13`)),
      'sync; umount /mnt/a || exit 14',
      'mount -t exfat -o ro /dev/vdb /mnt/a || exit 15',
      LIST('/mnt/a', 'A'),
      'umount /mnt/a',
      'mount -t exfat -o ro /dev/vdc /mnt/b || exit 16',
      LIST('/mnt/b', 'B'),
      'umount /mnt/b',
    ].join('\n');
    const result = await runInKernel({ script, disks: [{ path: theirs }, { path: ours, readOnly: true }], timeoutMs: 480_000 });
    assert.equal(result.status, 0, result.output.slice(-3000));
    const lines = result.output.split('\n');
    const guestA = lines.filter((l) => l.startsWith('AD|') || l.startsWith('AF|')).map((l) => l.slice(1)).sort();
    const guestB = lines.filter((l) => l.startsWith('BD|') || l.startsWith('BF|')).map((l) => l.slice(1)).sort();

    assert.equal(guestA.length, tree1.dirs.length + tree1.files.length);
    const theirDisk = await FileDisk.open(theirs, { readOnly: true });
    const theirFs = await ExfatFs.open(theirDisk);
    assert.equal(theirFs.label, 'KERNEL');
    assert.deepEqual((await listing(theirFs)).sort(), guestA);
    assert.deepEqual(await theirFs.verify(), []);
    await theirDisk.close();

    assert.deepEqual(guestB, oursListing);
    assert.ok(oursListing.some((l) => l.includes('renamed by livestick')));
    assert.ok(oursListing.some((l) => l.startsWith(`F|./grown around.img|${9 * cs}|`)));
    assert.ok(oursListing.some((l) => l.startsWith('F|./replaced|')) && !oursListing.some((l) => l.includes('shrunk.img')));

    for (const img of [theirs, ours]) {
      const r = run('fsck.exfat', ['-n', img], { allowFail: true });
      assert.equal(r.status, 0, `${img}: ${r.stdout}${r.stderr}`);
    }
  });
});
