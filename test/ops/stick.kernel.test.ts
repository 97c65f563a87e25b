/**
 * A whole FAT32 stick image as the medium (issue 12): status and merge run on the image file give the
 * same results as on the unpacked directory — the same figures and byte-identical new files — with
 * no mount and no root; status leaves a healthy image untouched; mtools, fsck.fat and sfdisk read the
 * result; and the kernel in qemu mounts the FAT partition, finds the switched files and boots the new
 * pair (squashfs.img → rootfs.img + the fresh overlay as a dm-snapshot) to the same tree.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { closeSync, openSync, readFileSync, readSync, readdirSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from '../helpers/tmp.ts';
import { missingTools, run } from '../helpers/tools.ts';
import { runCli } from '../helpers/cli.ts';
import { kernelHarnessStatus, runInKernel } from '../kernel/harness.ts';
import { mediumStatus, type StatusReport } from '../../src/ops/status.ts';
import { mergeMedium, type MergeResult } from '../../src/ops/merge.ts';
import { resetMedium } from '../../src/ops/reset.ts';
import { openMediumRoot } from '../../src/ops/root.ts';
import { updatedSample } from './helpers.ts';
import { fatStickFrom } from './stick.ts';

const T = 1_767_225_600;
const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/** name → sha256 of every file in the image's LiveOS/, read through livestick. */
async function imageLiveos(img: string): Promise<Map<string, string>> {
  const root = await openMediumRoot(img);
  try {
    const out = new Map<string, string>();
    for (const e of (await root.fs.readdir('/LiveOS')).sort((a, b) => a.name.localeCompare(b.name))) {
      const d = await root.fs.openFile(`/LiveOS/${e.name}`);
      const h = createHash('sha256');
      const piece = new Uint8Array(4 << 20);
      for (let at = 0; at < d.size; at += piece.byteLength) {
        const p = piece.subarray(0, Math.min(piece.byteLength, d.size - at));
        await d.read(p, at);
        h.update(p);
      }
      await d.close();
      out.set(e.name, h.digest('hex'));
    }
    return out;
  } finally {
    await root.close();
  }
}

function dirLiveos(dir: string): Map<string, string> {
  return new Map(readdirSync(join(dir, 'LiveOS')).sort().map((n) => [n, sha(readFileSync(join(dir, 'LiveOS', n)))]));
}

/** The figures of a status that do not depend on where the medium is. */
function figures(s: StatusReport) {
  const { overlay: o } = s;
  return {
    overlay: [o.sizeBytes, o.usedBytes, o.freeBytes, o.exceptions, o.chunkSize, o.valid, o.bound, o.baseMatches],
    filesystem: s.filesystem,
    usage: s.usage,
    topFiles: s.topFiles,
    topDirectories: s.topDirectories,
    healthy: s.healthy,
    problems: s.problems,
  };
}

function mergeFigures(m: MergeResult) {
  return [m.oldBaseBytes, m.newBaseBytes, m.rootImageBytes, m.overlayBytesMerged, m.freeBytesDropped, m.blocks, m.compressor, m.blockSize];
}

describe('a FAT32 stick image as the medium', { skip: missingTools('sfdisk', 'mdir', 'mcopy', 'fsck.fat') }, () => {
  const tmp = tempDir('livestick-stick-');
  let dir: string;
  let img: string;
  let part: { startBytes: number; sizeBytes: number };
  before(async () => {
    dir = await updatedSample(join(tmp.dir, 'dir'));
    img = join(tmp.dir, 'stick.img');
    part = await fatStickFrom(dir, img);
  });
  after(() => tmp.cleanup());

  const mtools = (cmd: string, ...args: string[]) => run(cmd, ['-i', `${img}@@${part.startBytes}`, ...args]);
  const fsckClean = () => {
    const p = join(tmp.dir, 'part.img');
    run('dd', [`if=${img}`, `of=${p}`, 'bs=1M', `skip=${part.startBytes / 2 ** 20}`, `count=${part.sizeBytes / 2 ** 20}`, 'status=none']);
    const r = run('fsck.fat', ['-n', p], { allowFail: true });
    assert.equal(r.status, 0, `fsck.fat -n: ${r.stdout}${r.stderr}`);
  };

  test('the image reads as the directory: sfdisk sees the partition, mtools the files, status the same figures, nothing written', async () => {
    const table = JSON.parse(run('sfdisk', ['--json', img]).stdout).partitiontable;
    assert.equal(table.label, 'dos');
    assert.equal(table.partitions[0].type, 'c');
    assert.deepEqual(mtools('mdir', '-b', '::/LiveOS').stdout.split('\n').filter(Boolean).map((l) => l.replace(/^.*\//, '')).sort(), readdirSync(join(dir, 'LiveOS')).sort());
    fsckClean();
    const before = sha(readFileSync(img));
    const onDir = await mediumStatus(dir);
    const onImage = await mediumStatus(img);
    assert.deepEqual(figures(onImage), figures(onDir));
    assert.ok(onImage.usage.files > 0 && onImage.topFiles.length > 0);
    assert.match(onImage.overlay.overlay, /stick\.img:p1\/LiveOS\/overlay-/);
    assert.equal(sha(readFileSync(img)), before, 'status on a healthy image writes nothing');
    const cli = runCli(['status', img, '--json']);
    assert.equal(cli.status, 0, cli.stderr);
    assert.deepEqual(cli.json.usage, onDir.usage);
  });

  test('merge on the image gives the directory merge byte for byte; fsck.fat clean; mtools reads the new base', async () => {
    const mDir = await mergeMedium(dir, { mkfsTime: T });
    const mImg = await mergeMedium(img, { mkfsTime: T });
    assert.deepEqual(mergeFigures(mImg), mergeFigures(mDir));
    assert.deepEqual(await imageLiveos(img), dirLiveos(dir), 'the same files, byte for byte: new base, fresh overlay, no leftovers');
    fsckClean();
    const out = join(tmp.dir, 'base-from-mtools.img');
    mtools('mcopy', '-n', '::/LiveOS/squashfs.img', out);
    assert.equal(sha(readFileSync(out)), sha(readFileSync(join(dir, 'LiveOS', 'squashfs.img'))));
    const after = await mediumStatus(img);
    assert.equal(after.overlay.exceptions, 0);
    assert.equal(after.healthy, true);
    assert.deepEqual(figures(after), figures(await mediumStatus(dir)));
  });

  test('reset and a dry run on the image: the same as on the directory', async () => {
    const d1 = await mergeMedium(dir, { dryRun: true, force: true });
    const d2 = await mergeMedium(img, { dryRun: true, force: true });
    assert.equal(d2.verdict, 'ok', JSON.stringify(d2.problems));
    assert.deepEqual([d2.blocks, d2.oldBaseBytes], [d1.blocks, d1.oldBaseBytes]);
    const r = await resetMedium(img, { wipe: true });
    assert.equal(r.overlay.exceptions, 0);
    await resetMedium(dir, { wipe: true });
    assert.deepEqual(await imageLiveos(img), dirLiveos(dir));
    fsckClean();
  });

  test('a dirty volume whose repair is refused: status still reads it, says so, and writes nothing', async () => {
    const img2 = join(tmp.dir, 'damaged.img');
    const p2 = await fatStickFrom(dir, img2);
    const range = /<(\d+)-(\d+)>/.exec(run('mshowfat', ['-i', `${img2}@@${p2.startBytes}`, '::/LiveOS/squashfs.img']).stdout);
    assert.ok(range, 'mshowfat shows the base as one run');
    const last = Number(range[2]);
    const fd = openSync(img2, 'r+');
    const boot = Buffer.alloc(512);
    readSync(fd, boot, 0, 512, p2.startBytes);
    const fatAt = p2.startBytes + boot.readUInt16LE(14) * 512;
    // The base's last cluster now links on into a free cluster (damage no cut write leaves), and the volume is marked dirty.
    const link = Buffer.alloc(4);
    link.writeUInt32LE(last + 5000);
    writeSync(fd, link, 0, 4, fatAt + 4 * last);
    boot[65] = boot[65]! | 1;
    writeSync(fd, boot, 0, 512, p2.startBytes);
    closeSync(fd);
    const before = sha(readFileSync(img2));
    const r = await mediumStatus(img2);
    assert.ok(r.warnings.some((w) => /not closed cleanly and livestick will not repair it/.test(w)), r.warnings.join('\n'));
    assert.ok(r.overlay.sizeBytes > 0 && r.filesystem.blocks > 0, 'the figures are there');
    assert.equal(sha(readFileSync(img2)), before, 'nothing was written');
    await assert.rejects(mergeMedium(img2, { dryRun: false }), /repair after an unclean stop/);
    assert.equal(sha(readFileSync(img2)), before, 'a refused merge writes nothing either');
  });

  test('the kernel mounts the FAT partition, finds the switched files and boots the new pair', { skip: kernelHarnessStatus() }, async () => {
    const want = dirLiveos(dir);
    const overlay = [...want.keys()].find((n) => n.startsWith('overlay-'))!;
    const script = `mkdir -p /mnt/stick /mnt/sq /mnt/root
mount -t vfat -o ro,iocharset=utf8 /dev/vdb1 /mnt/stick || exit 11
for f in /mnt/stick/LiveOS/*; do echo "F|\${f##*/}|$(sha256sum < "$f" | cut -c1-64)"; done
mount -t squashfs -o ro,loop /mnt/stick/LiveOS/squashfs.img /mnt/sq || exit 12
BASE=$(losetup -f)
losetup -r $BASE /mnt/sq/LiveOS/rootfs.img || exit 13
cp "/mnt/stick/LiveOS/${overlay}" /tmp/cow || exit 14
COW=$(losetup -f)
losetup $COW /tmp/cow || exit 15
SZ=$(blockdev --getsz $BASE)
echo "0 $SZ snapshot $BASE $COW PO 8" | dmsetup create live-rw || exit 16
mount -t ext4 -o ro /dev/mapper/live-rw /mnt/root || exit 17
echo "K|$(sha256sum < /mnt/root/usr/lib/modules/6.9.2/vmlinuz | cut -c1-64)"
echo "@@status $(dmsetup status live-rw)"
umount /mnt/root; dmsetup remove live-rw; umount /mnt/sq; umount /mnt/stick
echo DONE`;
    const r = await runInKernel({ script, disks: [{ path: img, readOnly: true }], memoryMiB: 768, timeoutMs: 600_000 });
    assert.equal(r.status, 0, r.output.slice(-3000));
    const seen = new Map(r.output.split('\n').filter((l) => l.startsWith('F|')).map((l) => l.split('|').slice(1) as [string, string]));
    assert.deepEqual(seen, want, 'Linux vfat reads the switched files as livestick wrote them');
    const root = await openMediumRoot(dir);
    const { Ext4 } = await import('../../src/fs/ext4/index.ts');
    const { locateMedium, openMedium } = await import('../../src/ops/medium.ts');
    const m = await openMedium(await locateMedium(root));
    const kernelFile = sha(await (await Ext4.open(m.rootDisk)).readFile('/usr/lib/modules/6.9.2/vmlinuz'));
    await m.close();
    await root.close();
    assert.match(r.output, new RegExp(`K\\|${kernelFile}`), 'the merged base holds the update the overlay had');
    assert.match(r.output, /@@status 0 \d+ snapshot \d+\/\d+ \d+/);
  });
});

