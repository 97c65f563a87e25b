/**
 * `livestick inspect`: a mounted directory and a whole stick image (GPT, an ext4 partition holding
 * LiveOS/ with squashfs.img, its overlay and a LUKS home, plus an unformatted partition), read through
 * the partition table, the ext4 FileSystem adapter and the SquashFS inside — no mount, no root.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from '../helpers/tmp.ts';
import { runCli } from '../helpers/cli.ts';
import { missingTools, run } from '../helpers/tools.ts';
import { FileDisk } from '../../src/io/disk.ts';
import { addPartition, createGpt, partitionDisk, readPartitionTable } from '../../src/fs/ptable/index.ts';
import { inspectMedium } from '../../src/ops/inspect.ts';
import { ExfatFs, mkfsExfat } from '../../src/fs/exfat/index.ts';
import { FatFs, mkfsFat } from '../../src/fs/fat/index.ts';
import { createHome } from '../../src/ops/home.ts';
import { updatedSample } from './helpers.ts';

const MiB = 2 ** 20;

describe('inspect', () => {
  const tmp = tempDir('livestick-inspect-');
  after(() => tmp.cleanup());

  test('a mounted directory: the dracut LiveOS system, its dm-snapshot overlay and home', async () => {
    const dir = await updatedSample(join(tmp.dir, 'dir'));
    await createHome(dir, { size: 24 * MiB, encrypt: true, kdf: { type: 'pbkdf2', iterations: 1000 }, passphrase: async () => new TextEncoder().encode('pass') });
    const r = await inspectMedium(dir);
    assert.equal(r.source.kind, 'directory');
    assert.equal(r.liveSystems.length, 1);
    const s = r.liveSystems[0]!;
    assert.equal(s.layout, 'dracut LiveOS');
    assert.deepEqual([s.base.format, s.base.rootImage], ['squashfs', 'LiveOS/rootfs.img']);
    assert.equal(s.persistence.length, 1);
    assert.equal(s.persistence[0]!.kind, 'dm-snapshot file');
    assert.equal(s.home?.encrypted, true);
  });

  test('a stick image: GPT, an ext4 partition with LiveOS/ (found without mounting), an empty partition', { skip: missingTools('mke2fs') }, async () => {
    const dir = await updatedSample(join(tmp.dir, 'tree'));
    const img = join(tmp.dir, 'stick.img');
    const disk = await FileDisk.open(img, { create: { size: 160 * MiB } });
    let table = await createGpt(disk, { diskGuid: '3F1C9E2A-6B7D-4E8F-9A0B-1C2D3E4F5A6B' });
    table = await addPartition(disk, table, { sizeBytes: 120 * MiB, type: 'linux-filesystem', name: 'LIVE' });
    table = await addPartition(disk, table, { type: 'linux-filesystem', name: 'spare' });
    await disk.close();
    const p1 = table.partitions[0]!;
    // mke2fs writes the tree into the partition's byte range of the stick image (offset= and a size in KiB).
    run('mke2fs', ['-q', '-t', 'ext4', '-L', 'LIVE', '-d', dir, '-E', `offset=${p1.startBytes}`, img, `${p1.sizeBytes / 1024}k`]);
    const r = await inspectMedium(img);
    assert.equal(r.source.kind, 'image');
    assert.equal(r.partitionTable?.kind, 'gpt');
    assert.equal(r.partitionTable?.partitions, 2);
    const v1 = r.volumes.find((v) => v.id === 'partition 1');
    assert.equal(v1?.filesystem?.type, 'ext4');
    assert.equal(v1?.filesystem?.label, 'LIVE');
    assert.equal(v1?.partitionName, 'LIVE');
    const v2 = r.volumes.find((v) => v.id === 'partition 2');
    assert.deepEqual(v2?.signatures, []);
    assert.equal(r.liveSystems.length, 1);
    const s = r.liveSystems[0]!;
    assert.equal(s.volume, 'partition 1');
    assert.equal(s.base.rootImage, 'LiveOS/rootfs.img');
    assert.equal(s.persistence[0]?.kind, 'dm-snapshot file');
    // The partition read back through the table is the ext4 mke2fs wrote.
    const again = await FileDisk.open(img, { readOnly: true });
    const t = await readPartitionTable(again);
    assert.equal(partitionDisk(again, t.partitions[0]!).size, p1.sizeBytes);
    await again.close();
    const cli = runCli(['inspect', img]);
    assert.equal(cli.status, 0, cli.stderr);
    assert.match(cli.stdout, /partition table: GPT \(512-byte sectors\), 2 partitions/);
    assert.match(cli.stdout, /dracut LiveOS on partition 1: \/LiveOS\/squashfs\.img \(squashfs, LiveOS\/rootfs\.img inside/);
    assert.match(cli.stdout, /persistence: \/LiveOS\/overlay-\S+ \(dm-snapshot file, 48\.0 MiB\)/);
  });

  test('an exFAT stick without a partition table (a superfloppy, as Ventoy data partitions are): LiveOS/ found through ExfatFs', async () => {
    const dir = await updatedSample(join(tmp.dir, 'ex'));
    const img = join(tmp.dir, 'exfat.img');
    const disk = await FileDisk.open(img, { create: { size: 96 * MiB } });
    await mkfsExfat(disk, { label: 'VENTOY' });
    const fs = await ExfatFs.open(disk);
    await fs.mkdir('/LiveOS');
    for (const name of readdirSync(join(dir, 'LiveOS'))) await fs.writeFile(`/LiveOS/${name}`, readFileSync(join(dir, 'LiveOS', name)));
    await fs.close();
    await disk.close();
    const r = await inspectMedium(img);
    assert.equal(r.partitionTable, null);
    assert.equal(r.volumes[0]?.filesystem?.type, 'exfat');
    assert.equal(r.volumes[0]?.filesystem?.label, 'VENTOY');
    assert.equal(r.liveSystems[0]?.base.rootImage, 'LiveOS/rootfs.img');
    assert.equal(r.liveSystems[0]?.persistence[0]?.kind, 'dm-snapshot file');
  });

  test('a FAT32 ESP partition holding LiveOS/ (the extract layout of a stick): found through FatFs', async () => {
    const dir = await updatedSample(join(tmp.dir, 'fat'));
    const img = join(tmp.dir, 'fat-stick.img');
    const disk = await FileDisk.open(img, { create: { size: 300 * MiB } });
    let table = await createGpt(disk, { diskGuid: '5A4B3C2D-1E0F-4A9B-8C7D-6E5F4A3B2C1D' });
    table = await addPartition(disk, table, { type: 'efi-system', name: 'LIVE' });
    const part = partitionDisk(disk, table.partitions[0]!);
    await mkfsFat(part, { label: 'LIVE', type: 'fat32' });
    const fs = await FatFs.open(part);
    await fs.mkdir('/LiveOS');
    for (const name of readdirSync(join(dir, 'LiveOS'))) await fs.writeFile(`/LiveOS/${name}`, readFileSync(join(dir, 'LiveOS', name)));
    await fs.close();
    await disk.close();
    const r = await inspectMedium(img);
    const v = r.volumes[0];
    assert.equal(v?.filesystem?.type, 'fat32');
    assert.equal(v?.filesystem?.label, 'LIVE');
    assert.equal(v?.partitionType, 'EFI System');
    assert.equal(r.liveSystems[0]?.volume, 'partition 1');
    assert.equal(r.liveSystems[0]?.base.rootImage, 'LiveOS/rootfs.img');
  });

  test('a live ISO (xorriso, Rock Ridge + Joliet): LiveOS/squashfs.img with rootfs.img inside, found through Iso9660Fs', { skip: missingTools('xorriso') }, async () => {
    const dir = await updatedSample(join(tmp.dir, 'iso'));
    const iso = join(tmp.dir, 'live.iso');
    run('xorriso', ['-as', 'mkisofs', '-quiet', '-R', '-J', '-V', 'Fedora-WS-Live-42', '-o', iso, dir]);
    const r = await inspectMedium(iso);
    assert.equal(r.volumes[0]?.filesystem?.type, 'iso9660');
    assert.equal(r.volumes[0]?.filesystem?.label, 'Fedora-WS-Live-42');
    assert.equal(r.liveSystems[0]?.layout, 'dracut LiveOS');
    assert.equal(r.liveSystems[0]?.base.rootImage, 'LiveOS/rootfs.img');
  });

  test('the live model in the report: scheme, lower stack, upper/work/mode/belongs-to; a persistence volume without its base is unmatched, never a system with an empty base', async () => {
    const { gptStick, ext4On, fatOn, put, mkdirs, rootTree, squashfsBytes } = await import('../live/build.ts');
    const img = join(tmp.dir, 'model.img');
    const base = await squashfsBytes(rootTree('f'), join(tmp.dir, 'm.sqfs'));
    await gptStick(img, 48, [
      { sizeMiB: 20, type: 'efi-system', fill: (d) => fatOn(d, { label: 'LIVE', serial: 0x2026_1201 }, (fs) => put(fs, '/LiveOS/squashfs.img', base)) },
      { sizeMiB: 12, type: 'linux-filesystem', fill: (d) => ext4On(d, { label: 'persist' }, (fs) => mkdirs(fs, '/LiveOS/overlay-LIVE-2026-1201', '/LiveOS/ovlwork')) },
      { type: 'linux-filesystem', fill: (d) => ext4On(d, { label: 'persistence' }, (fs) => put(fs, '/persistence.conf', '/ union\n')) },
    ]);
    const r = await inspectMedium(img);
    assert.equal(r.liveSystems.length, 1);
    const s = r.liveSystems[0]!;
    assert.deepEqual([s.scheme, s.layout, s.base.path, s.base.flat], ['dracut', 'dracut LiveOS', '/LiveOS/squashfs.img', true]);
    assert.deepEqual(s.lowers, [{ volume: 'partition 1', path: '/LiveOS/squashfs.img', format: 'squashfs' }]);
    const p = s.persistence[0]!;
    assert.deepEqual([p.kind, p.volume, p.upper, p.work, p.belongsTo], ['overlayfs directory', 'partition 2', '/LiveOS/overlay-LIVE-2026-1201', '/LiveOS/ovlwork', 'partition 1:/LiveOS/squashfs.img']);
    assert.match(p.mode, /rd\.live\.overlay=LABEL=persist/);
    assert.equal(r.unmatchedPersistence.length, 1);
    assert.deepEqual([r.unmatchedPersistence[0]!.scheme, r.unmatchedPersistence[0]!.volume, r.unmatchedPersistence[0]!.upper], ['live-boot', 'partition 3', '/rw']);
    assert.match(r.unmatchedPersistence[0]!.unmatched!, /no live-boot base/);
    const cli = runCli(['inspect', img]);
    assert.equal(cli.status, 0, cli.stderr);
    assert.match(cli.stdout, /dracut LiveOS on partition 1: \/LiveOS\/squashfs\.img \(squashfs, a flat root tree/);
    assert.match(cli.stdout, /persistence: \/LiveOS\/overlay-LIVE-2026-1201 \(overlayfs directory, on partition 2\)/);
    assert.match(cli.stdout, /unmatched persistence on partition 3: \/rw \(persistence volume, live-boot\) — no live-boot base/);
  });

  test('bad targets: typed errors', async () => {
    const r = runCli(['inspect', join(tmp.dir, 'nowhere'), '--json']);
    assert.equal(r.status, 66);
    assert.equal(r.json.error.code, 'NOT_FOUND');
  });
});
