/**
 * Block devices: path rules for Linux, macOS and Windows, the /proc parsers, size probing, and (as root
 * on Linux, with a loop device) the real thing: size and sector size from sysfs, and a write refused
 * while a partition is mounted, naming where, unless forced.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { closeSync, mkdirSync, openSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from '../helpers/tmp.ts';
import { hasTool } from '../helpers/tools.ts';
import { FileDisk, readAt } from '../../src/io/disk.ts';
import { checkWritableDevice, classifyDevicePath, inspectDevice, parseMountinfo, parseSwaps, probeSize } from '../../src/io/device.ts';

const MiB = 2 ** 20;

describe('block devices', () => {
  const tmp = tempDir('livestick-device-');
  after(() => tmp.cleanup());

  test('path rules: Linux disks and partitions, macOS disk/rdisk, Windows physical drives and volumes', () => {
    assert.deepEqual(classifyDevicePath('/dev/sdb', 'linux'), { kind: 'linux-block' });
    assert.deepEqual(classifyDevicePath('/dev/mmcblk0', 'linux'), { kind: 'linux-block' });
    assert.match(classifyDevicePath('/dev/sdb1', 'linux').hint ?? '', /partition; the whole stick is \/dev\/sdb$/);
    assert.match(classifyDevicePath('/dev/mmcblk0p2', 'linux').hint ?? '', /whole stick is \/dev\/mmcblk0$/);
    assert.match(classifyDevicePath('/dev/nvme0n1p1', 'linux').hint ?? '', /whole stick is \/dev\/nvme0n1$/);
    assert.deepEqual(classifyDevicePath('/dev/rdisk4', 'darwin'), { kind: 'macos-rdisk' });
    assert.match(classifyDevicePath('/dev/disk4', 'darwin').hint ?? '', /\/dev\/rdisk4/);
    assert.match(classifyDevicePath('/dev/disk4s1', 'darwin').hint ?? '', /whole stick is \/dev\/disk4$/);
    assert.equal(classifyDevicePath('\\\\.\\PhysicalDrive2', 'win32').kind, 'windows-physical');
    assert.match(classifyDevicePath('\\\\.\\E:', 'win32').hint ?? '', /PhysicalDriveN/);
    assert.equal(classifyDevicePath('/home/me/stick.img', 'linux').kind, 'other');
  });

  test('mountinfo and swaps parsers (escaped names, optional fields)', () => {
    const text = [
      '22 1 8:2 / / rw,relatime shared:1 - ext4 /dev/sda2 rw',
      '30 22 8:17 / /run/media/me/LIVE\\040STICK rw,nosuid master:3 - vfat /dev/sdb1 rw,fmask=0022',
      '31 22 0:25 / /proc rw - proc proc rw',
    ].join('\n');
    assert.deepEqual(parseMountinfo(text), [
      { majorMinor: '8:2', mountPoint: '/', fsType: 'ext4', source: '/dev/sda2' },
      { majorMinor: '8:17', mountPoint: '/run/media/me/LIVE STICK', fsType: 'vfat', source: '/dev/sdb1' },
      { majorMinor: '0:25', mountPoint: '/proc', fsType: 'proc', source: 'proc' },
    ]);
    assert.deepEqual(parseSwaps('Filename\tType\tSize\tUsed\tPriority\n/dev/sda3 partition 8388604 0 -2\n/swap\\040file file 1024 0 -3\n'), ['/dev/sda3', '/swap file']);
  });

  test('refusal rules: mounted partitions and the host system, --force overrides', () => {
    const base = { path: '/dev/sdz', size: 8 * MiB, logicalSectorSize: 512, model: undefined };
    assert.doesNotThrow(() => checkWritableDevice({ ...base, mounted: [], hostSystem: [] }));
    assert.throws(() => checkWritableDevice({ ...base, mounted: [{ device: '/dev/sdz1', mountPoint: '/media/LIVE' }], hostSystem: [] }), /\/dev\/sdz1 at \/media\/LIVE.*unmount/);
    assert.throws(() => checkWritableDevice({ ...base, mounted: [{ device: '/dev/sdz2', mountPoint: '/' }], hostSystem: ['/dev/sdz2 is mounted at /'] }), (e: Error & { code?: string }) => e.code === 'DEVICE_IN_USE' && /own system/.test(e.message));
    assert.doesNotThrow(() => checkWritableDevice({ ...base, mounted: [{ device: '/dev/sdz1', mountPoint: '/media/LIVE' }], hostSystem: [] }, true));
  });

  test('size by probing aligned reads equals the real size', () => {
    for (const size of [512, 4096, 3 * MiB + 512, 77 * 512]) {
      const f = join(tmp.dir, `p${size}`);
      writeFileSync(f, Buffer.alloc(size, 1));
      const fd = openSync(f, 'r');
      try {
        assert.equal(probeSize(fd), size);
      } finally {
        closeSync(fd);
      }
    }
  });

  const canLoop = process.platform === 'linux' && process.getuid?.() === 0 && hasTool('losetup') && hasTool('mke2fs') && hasTool('mount');
  test('a loop device: size from sysfs, a mounted one refused for writing (naming the mount), read-only allowed, --force allowed', { skip: canLoop ? false : 'needs root, losetup, mke2fs and mount' }, async () => {
    const img = join(tmp.dir, 'stick.img');
    writeFileSync(img, Buffer.alloc(0));
    spawnSync('truncate', ['-s', '16M', img]);
    assert.equal(spawnSync('mke2fs', ['-q', '-t', 'ext4', '-F', img]).status, 0);
    const lo = spawnSync('losetup', ['--find', '--show', img], { encoding: 'utf8' });
    if (lo.status !== 0) return assert.fail(`losetup: ${lo.stderr}`);
    const dev = lo.stdout.trim();
    const mnt = join(tmp.dir, 'mnt');
    mkdirSync(mnt);
    try {
      const info = inspectDevice(dev);
      assert.equal(info.size, 16 * MiB);
      assert.equal(info.logicalSectorSize, 512);
      assert.deepEqual(info.mounted, []);
      const w = await FileDisk.open(dev);
      assert.equal(w.size, 16 * MiB);
      assert.equal((await readAt(w, 1080, 2)).join(','), '83,239', 'the ext4 magic through the device');
      await w.close();
      assert.equal(spawnSync('mount', ['-o', 'ro', dev, mnt]).status, 0);
      try {
        await assert.rejects(FileDisk.open(dev), (e: Error & { code?: string }) => e.code === 'DEVICE_IN_USE' && e.message.includes(mnt));
        const r = await FileDisk.open(dev, { readOnly: true });
        await r.close();
        const f = await FileDisk.open(dev, { force: true });
        await f.close();
      } finally {
        spawnSync('umount', [mnt]);
      }
    } finally {
      spawnSync('losetup', ['-d', dev]);
    }
  });
});
