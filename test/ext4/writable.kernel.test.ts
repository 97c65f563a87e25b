/**
 * The kernel mounts what Ext4WritableFileSystem wrote (one qemu boot, two images):
 *  - a LiveOS/ tree where a big squashfs.img was written in 4 MiB growth steps and then replaced by
 *    rename with a new one (written sparsely: unwritten extents where nothing was written), plus
 *    links, modes, a removed directory;
 *  - a copy of it crashed right after the commit record of another rename-replace (the journal
 *    needs recovery), which the kernel's jbd2 must replay to the new state.
 * In the guest every file's size and SHA-256 must equal the host's model, and e2fsck -fn must be
 * clean after the unmount.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { FileDisk } from '../../src/io/disk.ts';
import { withFaultPlan, SimulatedCrash } from '../../src/io/faults.ts';
import { Ext4 } from '../../src/fs/ext4/fs.ts';
import { Ext4WritableFileSystem } from '../../src/fs/ext4/writable.ts';
import { missingTools, run } from '../helpers/tools.ts';
import { tempDir } from '../helpers/tmp.ts';
import { ensureKernel, kernelHarnessStatus, runInKernel } from '../kernel/harness.ts';
import { randomBytes } from './fixtures.ts';

const MiB = 1 << 20;
const sha = (d: Uint8Array) => createHash('sha256').update(d).digest('hex');

describe('the kernel mounts ext4 that Ext4WritableFileSystem wrote', { skip: kernelHarnessStatus() || missingTools('mke2fs', 'e2fsck') }, () => {
  const tmp = tempDir('livestick-ext4w-kernel-');
  before(async () => ensureKernel());
  after(() => tmp.cleanup());

  test('after a rename-replace of a big file, and after a crash that leaves the rename in the journal', { timeout: 300_000 }, async () => {
    const image = join(tmp.dir, 'stick.img');
    run('mke2fs', ['-q', '-F', '-t', 'ext4', '-L', 'LIVE', image, '160M']);
    const model = new Map<string, Uint8Array>();
    const disk = await FileDisk.open(image);
    const fs = await Ext4WritableFileSystem.open(disk);
    await fs.mkdir('/LiveOS');
    const old = randomBytes(40 * MiB + 123, 31);
    {
      const f = await fs.createFile('/LiveOS/squashfs.img', { size: 0, uninitialized: true });
      for (let at = 0; at < old.byteLength; at += 4 * MiB) {
        const piece = old.subarray(at, Math.min(old.byteLength, at + 4 * MiB));
        await f.resize(at + piece.byteLength);
        await f.write(piece, at);
      }
      await f.close();
    }
    const fresh = new Uint8Array(48 * MiB + 5);
    {
      const f = await fs.createFile('/LiveOS/squashfs.img.new', { size: 8 * MiB });
      for (const [at, seed, n] of [[0, 32, 3 * MiB], [7 * MiB + 1, 33, 5 * MiB], [47 * MiB, 34, MiB + 5]] as const) {
        const bytes = randomBytes(n, seed);
        if (at + n > f.size) await f.resize(at + n);
        await f.write(bytes, at);
        fresh.set(bytes, at);
      }
      await f.close();
    }
    await fs.rename('/LiveOS/squashfs.img.new', '/LiveOS/squashfs.img');
    model.set('LiveOS/squashfs.img', fresh);
    const overlay = randomBytes(2 * MiB + 7, 35);
    await fs.writeFile('/LiveOS/overlay-LIVE-1234', overlay, { mode: 0o600 });
    model.set('LiveOS/overlay-LIVE-1234', overlay);
    await fs.link!('/LiveOS/overlay-LIVE-1234', '/LiveOS/overlay.hardlink');
    model.set('LiveOS/overlay.hardlink', overlay);
    await fs.mkdir('/tmpdir');
    await fs.rmdir('/tmpdir');
    await fs.close();
    await disk.close();

    // The copy: another rename-replace, cut after its log is committed and the journal started, before the checkpoint.
    const crashed = join(tmp.dir, 'crashed.img');
    copyFileSync(image, crashed);
    const next = randomBytes(5 * MiB + 11, 36);
    {
      const d = await FileDisk.open(crashed);
      let armed = false;
      let cut = false;
      const cfs = await Ext4WritableFileSystem.open(d, { onCommitStep: (s) => void (cut ||= armed && s === 'started') });
      await cfs.writeFile('/LiveOS/squashfs.img.next', next);
      armed = true;
      const r = await withFaultPlan(() => (cut ? 'crash' : undefined), () => cfs.rename('/LiveOS/squashfs.img.next', '/LiveOS/squashfs.img'));
      assert.ok(r.error instanceof SimulatedCrash);
      await d.close();
      const ro = await FileDisk.open(crashed, { readOnly: true });
      assert.equal((await (await Ext4.open(ro)).state()).needsRecovery, true, 'the rename waits in the journal');
      await ro.close();
    }
    const crashedModel = new Map(model);
    crashedModel.set('LiveOS/squashfs.img', next);

    const job = (dev: string, name: string) => `
mount -t ext4 ${dev} /mnt/${name} || echo "@@ERR ${name} mount"
cd /mnt/${name} && find . -type f | sort | while read -r p; do echo "@@F ${name} $(stat -c '%s %h' "$p") $(sha256sum < "$p" | cut -c1-64) $p"; done; cd /
umount /mnt/${name} || echo "@@ERR ${name} umount"
e2fsck -fn ${dev} > /tmp/fsck.${name} 2>&1; echo "@@FSCK ${name} $?"; tail -3 /tmp/fsck.${name}`;
    const result = await runInKernel({ script: `mkdir -p /mnt/a /mnt/b\n${job('/dev/vdb', 'a')}\n${job('/dev/vdc', 'b')}\n`, disks: [{ path: image }, { path: crashed }], timeoutMs: 240_000 });
    assert.equal(result.status, 0, result.output);
    assert.ok(!result.output.includes('@@ERR'), result.output);
    for (const [name, m] of [['a', model], ['b', crashedModel]] as const) {
      const files = result.output.split('\n').filter((l) => l.startsWith(`@@F ${name} `)).map((l) => l.split(' '));
      const got = new Map(files.map((f) => [f[5]!.replace(/^\.\//, ''), { size: Number(f[2]), hash: f[4] }]));
      assert.deepEqual([...got.keys()].sort(), [...m.keys()].sort(), `${name}: the kernel lists the files of the model`);
      for (const [p, data] of m) {
        assert.equal(got.get(p)!.size, data.byteLength, `${name}: ${p} size`);
        assert.equal(got.get(p)!.hash, sha(data), `${name}: ${p} content`);
      }
      assert.ok(result.output.includes(`@@FSCK ${name} 0`), `${name}: e2fsck -fn in the guest after the kernel's mount:\n${result.output}`);
    }
  });
});
