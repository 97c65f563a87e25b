/**
 * findLive on stick images made by livestick's own writers, one per layout: the systems found, their
 * lower stacks (top first), persistence kinds, volumes, upper/work paths and mode sentences, and the
 * lowers and uppers opened through the model.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { tempDir } from '../helpers/tmp.ts';
import { MemoryDisk } from '../../src/io/disk.ts';
import { dirNode, fileNode } from '../../src/fs/squashfs/index.ts';
import { ExfatFs, mkfsExfat } from '../../src/fs/exfat/index.ts';
import { LuksVolume } from '../../src/xform/luks/index.ts';
import { findLive, withStick, type LiveFindings, type Stick } from '../../src/ops/live/index.ts';
import { MiB, ext4Bytes, ext4On, fatOn, gptStick, mbrStick, mkdirs, put, rootTree, squashfsBytes } from './build.ts';
import { buildIso } from '../iso9660/build.ts';

const SERIAL = 0x2026_1201;
const OVERLAY = 'overlay-LIVE-2026-1201';

async function find(img: string, fn: (f: LiveFindings, stick: Stick) => Promise<void>, options: Parameters<typeof withStick>[1] = {}): Promise<void> {
  await withStick(img, options, async (stick) => fn(await findLive(stick), stick));
}

describe('live systems on sticks made by livestick', () => {
  const tmp = tempDir('livestick-live-');
  after(() => tmp.cleanup());
  const sq = (name: string) => join(tmp.dir, `${name}.sqfs`);

  test('dracut, flat squashfs.img on FAT + overlayfs directory on an ext4 partition; an overlay naming no base is unmatched', async () => {
    const img = join(tmp.dir, 'dracut-dir.img');
    const base = await squashfsBytes(rootTree('fedora'), sq('a'));
    await gptStick(img, 40, [
      { sizeMiB: 20, type: 'efi-system', fill: (d) => fatOn(d, { label: 'LIVE', serial: SERIAL }, (fs) => put(fs, '/LiveOS/squashfs.img', base)) },
      {
        type: 'linux-filesystem',
        fill: (d) =>
          ext4On(d, { label: 'persist' }, async (fs) => {
            await mkdirs(fs, `/LiveOS/${OVERLAY}/etc`, '/LiveOS/ovlwork', '/LiveOS/overlay-OTHER-1234-5678');
            await put(fs, `/LiveOS/${OVERLAY}/etc/motd`, 'changed');
          }),
      },
    ]);
    await find(img, async (f) => {
      assert.deepEqual(f.problems, []);
      assert.equal(f.systems.length, 1);
      const s = f.systems[0]!;
      assert.equal(s.scheme, 'dracut');
      assert.equal(s.flat, true);
      assert.deepEqual(s.lowers.map((l) => [l.volume.id, l.path, l.format]), [['p1', '/LiveOS/squashfs.img', 'squashfs']]);
      assert.equal(s.persistence.length, 1);
      const p = s.persistence[0]!;
      assert.deepEqual([p.kind, p.volume.id, p.upper, p.work, p.target, p.present], ['overlayfs', 'p2', `/LiveOS/${OVERLAY}`, '/LiveOS/ovlwork', '/', true]);
      assert.match(p.mode, /overlayfs upper \(work \/LiveOS\/ovlwork\).*rd\.live\.overlay=LABEL=persist/);
      assert.equal(p.belongsTo, s);
      const [lower] = await s.openLowers();
      assert.equal((await lower!.fs.stat('/usr/bin/sh')).kind, 'file');
      const o = await p.open();
      assert.equal((await o.fs.stat(`${o.upperRoot}/etc/motd`)).size, 7);
      assert.equal(f.unmatched.length, 1);
      assert.equal(f.unmatched[0]!.upper, '/LiveOS/overlay-OTHER-1234-5678');
      assert.match(f.unmatched[0]!.unmatched!, /names no base/);
      assert.match(f.unmatched[0]!.mode, /ovlwork|does not use/);
    });
  });

  test('dracut, rootfs.img in squashfs.img on FAT with an ext4 overlay image (overlayfs/ + ovlwork/), a dm-snapshot file and a home.img', async () => {
    const img = join(tmp.dir, 'dracut-img.img');
    const rootfs = await ext4Bytes(4, { label: 'Anaconda' }, (fs) => put(fs, '/usr/bin/sh', 'sh'));
    const base = await squashfsBytes(dirNode({}, { LiveOS: dirNode({}, { 'rootfs.img': fileNode(rootfs) }) }), sq('b'));
    const overlay = await ext4Bytes(4, { label: 'OVERLAY' }, (fs) => mkdirs(fs, '/overlayfs/etc', '/ovlwork'));
    await mbrStick(img, 40, 0x0c, (d) =>
      fatOn(d, { label: 'LIVE', serial: SERIAL }, async (fs) => {
        await put(fs, '/LiveOS/squashfs.img', base);
        await put(fs, `/LiveOS/${OVERLAY}`, overlay);
        await put(fs, '/LiveOS/overlay-LIVE-9999-0000', new Uint8Array(64 << 10));
        await put(fs, '/LiveOS/home.img', await ext4Bytes(2, { label: 'home' }, async () => {}));
      }),
    );
    await find(img, async (f) => {
      const s = f.systems[0]!;
      assert.equal(s.flat, false);
      assert.deepEqual(s.lowers[0]!.inner, { path: 'LiveOS/rootfs.img', format: 'ext4' });
      const p = s.persistence[0]!;
      assert.equal(s.persistence.length, 2);
      assert.deepEqual([p.kind, p.volume.id, p.upper, p.work], ['overlayfs', `p1:/LiveOS/${OVERLAY}`, '/overlayfs', '/ovlwork']);
      assert.equal(p.volume.filesystem?.label, 'OVERLAY');
      assert.match(p.mode, /loop-mounts the image .* \/overlayfs as the overlayfs upper/);
      assert.equal(s.home?.path, '/LiveOS/home.img');
      assert.equal(s.home?.encrypted, false);
      const [lower] = await s.openLowers();
      assert.equal(lower!.fs.type, 'ext4');
      assert.equal((await lower!.fs.stat('/usr/bin/sh')).size, 2);
      assert.equal((await (await p.open()).fs.stat('/overlayfs/etc')).kind, 'dir');
      // The zero-filled file is a dm-snapshot COW whose name is not this base's default: it still belongs here, with the caveat.
      assert.deepEqual(f.unmatched, []);
      const dm = s.persistence[1]!;
      assert.deepEqual([dm.kind, dm.cow?.path], ['dm-snapshot', '/LiveOS/overlay-LIVE-9999-0000']);
      assert.match(dm.mode, /dm-snapshot COW .*; its name is not overlay-LIVE-2026-1201, the default for this base: dracut uses it only when the boot arguments name it/);
      await assert.rejects(dm.open(), /dm-snapshot COW file/);
    });
  });

  test('dracut-ng rd.overlay partition (/overlay + /ovlwork at its root), and a LUKS overlay image opened only with a passphrase', async () => {
    const img = join(tmp.dir, 'dracut-ng.img');
    const base = await squashfsBytes(rootTree('f43'), sq('c'));
    const inner = await ext4Bytes(3, { label: 'OVL' }, (fs) => mkdirs(fs, '/overlayfs', '/ovlwork'));
    const luksDisk = new MemoryDisk(24 * MiB);
    const vol = await LuksVolume.format(luksDisk, new TextEncoder().encode('secret'), { kdf: { type: 'pbkdf2', iterations: 1000 } });
    const payload = await vol.openPayload(new TextEncoder().encode('secret'));
    await payload.write(inner, 0);
    const luksBytes = new Uint8Array(luksDisk.size);
    await luksDisk.read(luksBytes, 0);
    await gptStick(img, 72, [
      { sizeMiB: 40, type: 'efi-system', fill: (d) => fatOn(d, { label: 'LIVE', serial: SERIAL }, async (fs) => {
        await put(fs, '/LiveOS/squashfs.img', base);
        await put(fs, `/LiveOS/${OVERLAY}`, luksBytes);
      }) },
      { type: 'linux-filesystem', name: 'ovl', fill: (d) => ext4On(d, { label: 'ovl' }, (fs) => mkdirs(fs, '/overlay/usr', '/ovlwork')) },
    ]);
    await find(img, async (f) => {
      const s = f.systems[0]!;
      const kinds = s.persistence.map((p) => [p.volume.id, p.upper, p.encrypted, p.present]);
      assert.deepEqual(kinds, [
        [`p1:/LiveOS/${OVERLAY}`, '/overlayfs', true, false],
        ['p2', '/overlay', false, true],
      ]);
      assert.match(s.persistence[0]!.mode, /LUKS-encrypted/);
      await assert.rejects(s.persistence[0]!.open(), /passphrase/);
      assert.match(s.persistence[1]!.mode, /rd\.overlay=LABEL=ovl/);
    });
    await find(img, async (f) => {
      const p = f.systems[0]!.persistence[0]!;
      assert.deepEqual([p.encrypted, p.present], [true, true]);
      assert.equal((await (await p.open()).fs.stat('/ovlwork')).kind, 'dir');
    }, { passphrase: async () => new TextEncoder().encode('secret') });
  });

  test('live-boot: live/*.squashfs (last sorted on top), a persistence partition with /, bind and link lines; a GPT-named one; a bad persistence.conf is a problem', async () => {
    const img = join(tmp.dir, 'live-boot.img');
    const a = await squashfsBytes(rootTree('debian'), sq('d'));
    const z = await squashfsBytes(dirNode({}, { opt: dirNode() }), sq('e'));
    await gptStick(img, 56, [
      { sizeMiB: 16, type: 'efi-system', fill: (d) => fatOn(d, { label: 'DEBLIVE', serial: 1 }, async (fs) => {
        await put(fs, '/live/filesystem.squashfs', a);
        await put(fs, '/live/zz-extra.squashfs', z);
        await put(fs, '/live/vmlinuz', 'kernel');
      }) },
      { sizeMiB: 12, type: 'linux-filesystem', fill: (d) => ext4On(d, { label: 'persistence' }, async (fs) => {
        await put(fs, '/persistence.conf', '# full persistence\n/ union\n/home bind,source=home\n/opt link\n');
        await mkdirs(fs, '/rw/etc', '/work', '/home');
      }) },
      { sizeMiB: 8, type: 'linux-filesystem', name: 'persistence', fill: (d) => ext4On(d, { label: 'other' }, (fs) => put(fs, '/persistence.conf', '/usr union\n')) },
      { type: 'linux-filesystem', name: 'persistence', fill: (d) => ext4On(d, { label: 'broken' }, (fs) => put(fs, '/persistence.conf', '/ union\nrelative bind\n')) },
    ]);
    await find(img, async (f) => {
      assert.equal(f.systems.length, 1);
      const s = f.systems[0]!;
      assert.equal(s.scheme, 'live-boot');
      assert.deepEqual(s.lowers.map((l) => l.path), ['/live/zz-extra.squashfs', '/live/filesystem.squashfs']);
      const got = s.persistence.map((p) => [p.volume.id, p.kind, p.target, p.upper, p.work ?? null, p.present]);
      assert.deepEqual(got, [
        ['p2', 'overlayfs', '/', '/rw', '/work', true],
        ['p2', 'bind', '/home', '/home', null, true],
        ['p2', 'link', '/opt', '/opt', null, false],
        ['p3', 'overlayfs', '/usr', '/usr/rw', '/usr/work', false],
      ]);
      assert.match(s.persistence[0]!.mode, /uses \/rw as the overlayfs upper of the root \(work \/work, redirect_dir=on\)/);
      assert.match(s.persistence[1]!.mode, /bind-mounts \/home/);
      assert.match(s.persistence[3]!.mode, /created on the first boot/);
      assert.equal(f.problems.length, 1);
      assert.match(f.problems[0]!, /p4\/persistence\.conf: persistence\.conf: line 2: "relative" is not an absolute directory/);
      const [top] = await s.openLowers();
      assert.equal((await top!.fs.stat('/opt')).kind, 'dir');
    });
  });

  test('casper: a writable file on FAT (upper/ + work/), layered bases from the boot config, a legacy casper-rw partition, a home-rw file', async () => {
    const img = join(tmp.dir, 'casper.img');
    const layer = (n: string) => squashfsBytes(dirNode({}, { [n]: dirNode() }), sq(n));
    const writable = await ext4Bytes(4, { label: 'writable' }, (fs) => mkdirs(fs, '/upper/etc', '/work'));
    const home = await ext4Bytes(2, { label: 'home-rw' }, async () => {});
    const files: [string, Uint8Array][] = [];
    for (const n of ['minimal', 'minimal.standard', 'minimal.standard.live', 'minimal.enhanced-secureboot']) files.push([`/casper/${n}.squashfs`, await layer(n.replace(/\./g, '_'))]);
    await gptStick(img, 56, [
      { sizeMiB: 36, type: 'microsoft-basic-data', fill: (d) => fatOn(d, { label: 'UBUNTU', serial: 2 }, async (fs) => {
        for (const [p, b] of files) await put(fs, p, b);
        await put(fs, '/boot/grub/grub.cfg', 'menuentry "Try" {\n\tlinux /casper/vmlinuz layerfs-path=minimal.standard.live.squashfs --- quiet splash\n}\n');
        await put(fs, '/writable', writable);
        await put(fs, '/home-rw', home);
      }) },
      { type: 'linux-filesystem', fill: (d) => ext4On(d, { label: 'casper-rw' }, (fs) => put(fs, '/etc/hostname', 'old')) },
    ]);
    await find(img, async (f) => {
      assert.equal(f.systems.length, 1);
      const s = f.systems[0]!;
      assert.equal(s.scheme, 'casper');
      assert.deepEqual(s.lowers.map((l) => l.path), ['/casper/minimal.standard.live.squashfs', '/casper/minimal.standard.squashfs', '/casper/minimal.squashfs']);
      const got = s.persistence.map((p) => [p.volume.id, p.upper, p.work, p.legacy]);
      assert.deepEqual(got, [
        ['p1:/writable', '/upper', '/work', false],
        ['p2', '/', '/work', true],
      ]);
      assert.match(s.persistence[0]!.mode, /casper mounts the image \/writable at \/cow and uses upper\/ as the overlayfs upper/);
      assert.match(s.persistence[1]!.mode, /casper moves the root entries .* into upper\/ on the next boot/);
      assert.equal(s.home?.volume.id, 'p1:/home-rw');
      const layers = await s.openLowers();
      assert.deepEqual(await Promise.all(layers.map(async (l) => (await l.fs.readdir('/')).map((e) => e.name).join())), ['minimal_standard_live', 'minimal_standard', 'minimal']);
    });
  });

  test('casper without a boot config: the layer chains from the file names, one system per longest chain', async () => {
    const img = join(tmp.dir, 'casper-names.img');
    const layer = (n: string) => squashfsBytes(dirNode({}, { [n]: dirNode() }), sq(`n-${n}`));
    await mbrStick(img, 24, 0x0c, (d) =>
      fatOn(d, { label: 'UBU', serial: 3 }, async (fs) => {
        for (const n of ['minimal', 'minimal.standard', 'minimal.standard.live', 'minimal.live']) await put(fs, `/casper/${n}.squashfs`, await layer(n.replace(/\./g, '_')));
      }),
    );
    await find(img, async (f) => {
      assert.deepEqual(
        f.systems.map((s) => s.lowers.map((l) => l.path.slice(8, -9))),
        [['minimal.live', 'minimal'], ['minimal.standard.live', 'minimal.standard', 'minimal']],
      );
    });
  });

  test('Ventoy: exFAT data partition with ISOs and .dat backends mapped by ventoy.json, VTOYEFI beside it', async () => {
    const img = join(tmp.dir, 'ventoy.img');
    const enc = new TextEncoder();
    const fedoraBase = await squashfsBytes(rootTree('fedora'), sq('vf'));
    const ubuntuBase = await squashfsBytes(rootTree('ubuntu'), sq('vu'));
    const fedoraIso = buildIso({ kind: 'dir', name: '', children: [{ kind: 'dir', name: 'LiveOS', children: [{ kind: 'file', name: 'squashfs.img', data: fedoraBase }] }] });
    const ubuntuIso = buildIso({ kind: 'dir', name: '', children: [{ kind: 'dir', name: 'casper', children: [{ kind: 'file', name: 'filesystem.squashfs', data: ubuntuBase }] }] });
    const fedoraDat = await ext4Bytes(3, { label: 'vtoycow' }, (fs) => mkdirs(fs, '/vtoyoverlayfs/overlayfs/etc', '/vtoyoverlayfs/ovlwork'));
    const ubuntuDat = await ext4Bytes(3, { label: 'casper-rw' }, async () => {});
    const json = JSON.stringify({ control: [{ VTOY_DEFAULT_MENU_MODE: '0' }], persistence: [{ image: '/iso/fedora.iso', backend: '/persist/fedora.dat' }, { image: '/ubuntu.iso', backend: ['/ubuntu.dat', '/missing.dat'], autosel: 1 }] });
    await gptStick(img, 64, [
      { sizeMiB: 48, type: 'microsoft-basic-data', fill: async (d) => {
        await mkfsExfat(d, { label: 'Ventoy' });
        const fs = await ExfatFs.open(d);
        await put(fs, '/ventoy/ventoy.json', json);
        await put(fs, '/iso/fedora.iso', fedoraIso);
        await put(fs, '/ubuntu.iso', ubuntuIso);
        await put(fs, '/persist/fedora.dat', fedoraDat);
        await put(fs, '/ubuntu.dat', ubuntuDat);
        await fs.close();
      } },
      { type: 'efi-system', fill: (d) => fatOn(d, { label: 'VTOYEFI', serial: 4 }, (fs) => put(fs, '/EFI/BOOT/BOOTX64.EFI', enc.encode('efi'))) },
    ]);
    await find(img, async (f) => {
      const by = new Map(f.systems.map((s) => [s.scheme, s]));
      assert.deepEqual([...by.keys()].sort(), ['ventoy-casper', 'ventoy-dracut']);
      const fed = by.get('ventoy-dracut')!;
      assert.equal(fed.volume.id, 'p1:/iso/fedora.iso');
      assert.equal(fed.volume.filesystem?.type, 'iso9660');
      assert.deepEqual(fed.persistence.map((p) => [p.volume.id, p.upper, p.work, p.present]), [['p1:/persist/fedora.dat', '/vtoyoverlayfs/overlayfs', '/vtoyoverlayfs/ovlwork', true]]);
      assert.match(fed.persistence[0]!.mode, /Ventoy maps the backend as a device and dracut mounts \/vtoyoverlayfs\/overlayfs/);
      const ubu = by.get('ventoy-casper')!;
      assert.deepEqual(ubu.persistence.map((p) => [p.volume.id, p.upper, p.present]), [['p1:/ubuntu.dat', '/upper', false]]);
      assert.match(ubu.persistence[0]!.mode, /PERSISTENT=YES/);
      assert.equal(f.problems.length, 1);
      assert.match(f.problems[0]!, /the backend \/missing\.dat of \/ubuntu\.iso is not on/);
      const [lower] = await fed.openLowers();
      assert.equal((await lower!.fs.readdir('/etc')).map((e) => e.name).join(), 'os-release');
    });
  });
});
