/**
 * findLive on sticks made by the real tools (sfdisk, mkfs.vfat + mcopy, mke2fs -d, mksquashfs,
 * mkfs.exfat, xorriso): dracut directory on ext4, dracut image on FAT, a live-boot partition, a
 * casper writable file on vfat and a Ventoy-like stick.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from '../helpers/tmp.ts';
import { missingTools, run } from '../helpers/tools.ts';
import { findLive, withStick, type LiveFindings } from '../../src/ops/live/index.ts';

const MiB = 2 ** 20;

function tree(root: string, files: Record<string, string>, dirs: string[] = []): string {
  for (const d of dirs) mkdirSync(join(root, d), { recursive: true });
  for (const [p, text] of Object.entries(files)) {
    mkdirSync(join(root, p, '..'), { recursive: true });
    writeFileSync(join(root, p), text);
  }
  mkdirSync(root, { recursive: true });
  return root;
}

/** A stick image: sfdisk's script for the table, then each partition's bytes from `parts` copied to its start. */
function stick(img: string, sizeMiB: number, label: 'gpt' | 'dos', parts: { sizeMiB?: number; type: string; name?: string; image: string }[]): void {
  run('truncate', ['-s', `${sizeMiB}M`, img]);
  let at = 1;
  const lines = [`label: ${label}`];
  for (const p of parts) {
    lines.push(`start=${at * 2048}, ${p.sizeMiB ? `size=${p.sizeMiB * 2048}, ` : ''}type=${p.type}${p.name ? `, name="${p.name}"` : ''}`);
    at += p.sizeMiB ?? 0;
  }
  run('sfdisk', ['-q', img], { input: `${lines.join('\n')}\n` });
  at = 1;
  for (const p of parts) {
    run('dd', [`if=${p.image}`, `of=${img}`, 'bs=1M', `seek=${at}`, 'conv=notrunc', 'status=none']);
    at += p.sizeMiB ?? 0;
  }
}

function vfat(img: string, sizeMiB: number, label: string, serial: string, src: string): string {
  run('mkfs.vfat', ['-C', '-F', '32', '-n', label, '-i', serial, img, String(sizeMiB * 1024)]);
  run('mcopy', ['-s', '-i', img, ...run('ls', ['-A', src]).stdout.trim().split('\n').filter(Boolean).map((n) => join(src, n)), '::/']);
  return img;
}

function ext4(img: string, sizeMiB: number, label: string, src: string): string {
  run('mke2fs', ['-q', '-F', '-t', 'ext4', '-L', label, '-d', src, img, `${sizeMiB}M`]);
  return img;
}

function squashfs(out: string, src: string): string {
  run('mksquashfs', [src, out, '-quiet', '-no-progress', '-noappend', '-comp', 'gzip']);
  return out;
}

async function find(img: string, fn: (f: LiveFindings) => Promise<void>): Promise<void> {
  await withStick(img, {}, async (s) => fn(await findLive(s)));
}

describe('live systems on sticks made by the real tools', () => {
  const tmp = tempDir('livestick-live-oracle-');
  after(() => tmp.cleanup());
  const at = (n: string) => join(tmp.dir, n);
  const root = () => tree(at(`root-${Math.random().toString(36).slice(2)}`), { 'usr/bin/sh': '#!', 'etc/os-release': 'ID=t\n' }, ['proc']);

  test('dracut: flat squashfs.img on a FAT partition, overlayfs directory + ovlwork on an ext4 partition (sfdisk, mkfs.vfat, mke2fs -d)', { skip: missingTools('sfdisk', 'mkfs.vfat', 'mcopy', 'mke2fs', 'mksquashfs') }, async () => {
    const live = tree(at('d1-live'), {}, ['LiveOS']);
    squashfs(join(live, 'LiveOS/squashfs.img'), root());
    const persist = tree(at('d1-persist'), { 'LiveOS/overlay-LIVE-2026-1201/etc/motd': 'hi' }, ['LiveOS/ovlwork']);
    const img = at('d1.img');
    stick(img, 48, 'gpt', [
      { sizeMiB: 34, type: 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B', image: vfat(at('d1-p1'), 34, 'LIVE', '20261201', live) },
      { sizeMiB: 12, type: '0FC63DAF-8483-4772-8E79-3D69D8477DE4', image: ext4(at('d1-p2'), 12, 'persist', persist) },
    ]);
    await find(img, async (f) => {
      assert.deepEqual(f.problems, []);
      const s = f.systems[0]!;
      assert.deepEqual([f.systems.length, s.scheme, s.flat, s.lowers[0]!.volume.id, s.lowers[0]!.path], [1, 'dracut', true, 'p1', '/LiveOS/squashfs.img']);
      assert.deepEqual(s.persistence.map((p) => [p.kind, p.volume.id, p.upper, p.work]), [['overlayfs', 'p2', '/LiveOS/overlay-LIVE-2026-1201', '/LiveOS/ovlwork']]);
      assert.match(s.persistence[0]!.mode, /rd\.live\.overlay=LABEL=persist/);
      assert.equal((await (await s.persistence[0]!.open()).fs.stat('/LiveOS/overlay-LIVE-2026-1201/etc/motd')).size, 2);
    });
  });

  test('dracut: rootfs.img inside squashfs.img and an ext4 overlay image on a FAT superfloppy (mkfs.vfat + mcopy)', { skip: missingTools('mkfs.vfat', 'mcopy', 'mke2fs', 'mksquashfs') }, async () => {
    const inner = tree(at('d2-sq'), {}, ['LiveOS']);
    ext4(join(inner, 'LiveOS/rootfs.img'), 8, 'Anaconda', root());
    const live = tree(at('d2-live'), {}, ['LiveOS']);
    squashfs(join(live, 'LiveOS/squashfs.img'), inner);
    ext4(join(live, 'LiveOS/overlay-LIVE-2026-1201'), 8, 'OVERLAY', tree(at('d2-ovl'), {}, ['overlayfs', 'ovlwork']));
    const img = vfat(at('d2.img'), 40, 'LIVE', '20261201', live);
    await find(img, async (f) => {
      const s = f.systems[0]!;
      assert.deepEqual([s.volume.id, s.flat, s.lowers[0]!.inner?.path], ['disk', false, 'LiveOS/rootfs.img']);
      assert.deepEqual(s.persistence.map((p) => [p.kind, p.volume.id, p.upper, p.work, p.volume.filesystem?.label]), [['overlayfs', 'disk:/LiveOS/overlay-LIVE-2026-1201', '/overlayfs', '/ovlwork', 'OVERLAY']]);
      assert.match(s.persistence[0]!.mode, /loop-mounts the image/);
      const [lower] = await s.openLowers();
      assert.equal((await lower!.fs.stat('/usr/bin/sh')).size, 2);
    });
  });

  test('live-boot: a GPT stick with live/filesystem.squashfs and an ext4 partition labelled persistence (/ union)', { skip: missingTools('sfdisk', 'mkfs.vfat', 'mcopy', 'mke2fs', 'mksquashfs') }, async () => {
    const live = tree(at('lb-live'), {}, ['live']);
    squashfs(join(live, 'live/filesystem.squashfs'), root());
    const persist = tree(at('lb-p'), { 'persistence.conf': '/ union\n', 'rw/etc/hostname': 'x' }, ['work']);
    const img = at('lb.img');
    stick(img, 48, 'gpt', [
      { sizeMiB: 34, type: 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B', image: vfat(at('lb-p1'), 34, 'DEBLIVE', '12345678', live) },
      { sizeMiB: 12, type: '0FC63DAF-8483-4772-8E79-3D69D8477DE4', name: 'persistence', image: ext4(at('lb-p2'), 12, 'persistence', persist) },
    ]);
    await find(img, async (f) => {
      const s = f.systems[0]!;
      assert.equal(s.scheme, 'live-boot');
      assert.deepEqual(s.persistence.map((p) => [p.kind, p.volume.id, p.target, p.upper, p.work, p.present]), [['overlayfs', 'p2', '/', '/rw', '/work', true]]);
      assert.match(s.persistence[0]!.mode, /live-boot mounts the volume .* uses \/rw as the overlayfs upper of the root/);
    });
  });

  test('casper: a writable ext4 file at the root of a vfat stick (mke2fs -d, mcopy)', { skip: missingTools('sfdisk', 'mkfs.vfat', 'mcopy', 'mke2fs', 'mksquashfs') }, async () => {
    const live = tree(at('c-live'), { 'boot/grub/grub.cfg': 'menuentry "Try" {\n linux /casper/vmlinuz --- quiet splash\n}\n' }, ['casper']);
    squashfs(join(live, 'casper/filesystem.squashfs'), root());
    ext4(join(live, 'writable'), 8, 'writable', tree(at('c-w'), { 'upper/etc/hostname': 'u' }, ['work']));
    const img = at('c.img');
    stick(img, 44, 'dos', [{ sizeMiB: 42, type: 'c', image: vfat(at('c-p1'), 42, 'UBUNTU', 'abcd1234', live) }]);
    await find(img, async (f) => {
      const s = f.systems[0]!;
      assert.deepEqual([s.scheme, s.lowers.map((l) => l.path)], ['casper', ['/casper/filesystem.squashfs']]);
      assert.deepEqual(s.persistence.map((p) => [p.volume.id, p.upper, p.work, p.legacy]), [['p1:/writable', '/upper', '/work', false]]);
      assert.match(s.persistence[0]!.mode, /casper mounts the image \/writable at \/cow/);
    });
  });

  test('Ventoy-like: exFAT data partition with a xorriso ISO and a vtoycow .dat named by ventoy.json, VTOYEFI partition', { skip: missingTools('sfdisk', 'mkfs.vfat', 'mcopy', 'mkfs.exfat', 'mke2fs', 'mksquashfs', 'xorriso') }, async () => {
    const isoTree = tree(at('v-iso'), {}, ['LiveOS']);
    squashfs(join(isoTree, 'LiveOS/squashfs.img'), root());
    const data = tree(at('v-data'), { 'ventoy/ventoy.json': JSON.stringify({ persistence: [{ image: '/Fedora.iso', backend: '/persistence_ext4_8MB_vtoycow.dat' }] }) });
    run('xorriso', ['-as', 'mkisofs', '-quiet', '-R', '-J', '-V', 'Fedora-WS-Live', '-o', join(data, 'Fedora.iso'), isoTree]);
    ext4(join(data, 'persistence_ext4_8MB_vtoycow.dat'), 8, 'vtoycow', tree(at('v-dat'), {}, ['vtoyoverlayfs/overlayfs', 'vtoyoverlayfs/ovlwork']));
    const p1 = at('v-p1');
    run('truncate', ['-s', `${36 * MiB}`, p1]);
    run('mkfs.exfat', ['-L', 'Ventoy', p1]);
    const efi = vfat(at('v-p2'), 34, 'VTOYEFI', '1234abcd', tree(at('v-efi'), { 'EFI/BOOT/BOOTX64.EFI': 'efi' }));
    const img = at('v.img');
    stick(img, 72, 'dos', [
      { sizeMiB: 36, type: '7', image: p1 },
      { sizeMiB: 34, type: 'ef', image: efi },
    ]);
    // exFAT has no mtools; livestick's own exFAT writer fills the partition in place.
    const { FileDisk } = await import('../../src/io/disk.ts');
    const { readPartitionTable, partitionDisk } = await import('../../src/fs/ptable/index.ts');
    const { ExfatFs } = await import('../../src/fs/exfat/index.ts');
    const { readFileSync } = await import('node:fs');
    const disk = await FileDisk.open(img);
    const fs = await ExfatFs.open(partitionDisk(disk, (await readPartitionTable(disk)).partitions[0]!));
    await fs.mkdir('/ventoy');
    for (const name of ['ventoy/ventoy.json', 'Fedora.iso', 'persistence_ext4_8MB_vtoycow.dat']) await fs.writeFile(`/${name}`, readFileSync(join(data, name)));
    await fs.close();
    await disk.close();
    await find(img, async (f) => {
      assert.deepEqual(f.problems, []);
      const s = f.systems[0]!;
      assert.deepEqual([f.systems.length, s.scheme, s.volume.id, s.volume.filesystem?.label], [1, 'ventoy-dracut', 'p1:/Fedora.iso', 'Fedora-WS-Live']);
      assert.deepEqual(s.persistence.map((p) => [p.volume.id, p.upper, p.work, p.present]), [['p1:/persistence_ext4_8MB_vtoycow.dat', '/vtoyoverlayfs/overlayfs', '/vtoyoverlayfs/ovlwork', true]]);
    });
  });
});
