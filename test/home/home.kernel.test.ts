/**
 * The home image against the real kernel (cryptsetup + dm-crypt + ext4 in Debian's kernel under qemu),
 * one boot:
 *  (a) livestick creates an encrypted home (LUKS2 argon2id), imports a tree and grows the image; the
 *      guest opens it with cryptsetup, mounts the ext4 and prints sha256, owner and mode of every file,
 *      which must match the source; e2fsck -fn in the guest finds it clean;
 *  (b) volumes made by `cryptsetup luksFormat` on the host (LUKS2 argon2id, LUKS2 pbkdf2, LUKS1) get an
 *      ext4 from mke2fs and files written by the kernel through dm-crypt; home ls / cat / export read
 *      them back identically.
 */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { lstatSync, readFileSync, readlinkSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createHome, homeCat, homeExport, homeImport, homeList, homeResize } from '../../src/ops/home.ts';
import { run } from '../helpers/tools.ts';
import { tempDir } from '../helpers/tmp.ts';
import { ensureKernel, kernelHarnessStatus, runInKernel } from '../kernel/harness.ts';
import { guestClose, guestOpen, parseGuestResults, RESULT_PREFIX } from '../luks/kernel-job.ts';
import { access, makeTree } from './helpers.ts';

const MiB = 1 << 20;
const FILL = 256 * 1024;

function hostFiles(root: string, rel = ''): string[] {
  const out: string[] = [];
  for (const name of readdirSync(join(root, rel)).sort()) {
    const r = rel === '' ? name : `${rel}/${name}`;
    const st = lstatSync(join(root, r));
    if (st.isDirectory()) out.push(...hostFiles(root, r));
    else if (st.isFile()) out.push(`${createHash('sha256').update(readFileSync(join(root, r))).digest('hex')} ${r}`);
  }
  return out;
}

describe('home image against dm-crypt and ext4 in the Linux kernel', { skip: kernelHarnessStatus() }, () => {
  let tmp: { dir: string; cleanup: () => void };
  before(async () => {
    tmp = tempDir();
    await ensureKernel();
  });
  after(() => tmp.cleanup());

  test('the kernel reads what home import wrote; home reads what the kernel wrote', { timeout: 170_000 }, async () => {
    const { dir } = tmp;
    const fill = randomBytes(FILL);
    const fillPath = join(dir, 'fill.bin');
    writeFileSync(fillPath, fill);
    const lines: string[] = ['mkdir -p /mnt/h'];

    // (a) livestick's home, opened and mounted by the kernel.
    const ours = join(dir, 'home.img');
    const src = join(dir, 'src');
    makeTree(src, { files: 4, bigBytes: 700_000 });
    await createHome(ours, { size: 40 * MiB, encrypt: true, kdf: { type: 'argon2id', memory: 32768, time: 4, cpus: 1 }, ...access('home pass') });
    await homeImport(ours, `${src}/.`, '/liveuser', access('home pass'));
    await homeResize(ours, 72 * MiB, access('home pass'));
    lines.push(
      guestOpen('/dev/vdc', 'lh', 'home pass'),
      `mount -t ext4 -o ro /dev/mapper/lh /mnt/h && echo "${RESULT_PREFIX}lh mount 0"`,
      `cd /mnt/h/liveuser && find . -type f | sed 's|^\\./||' | sort | while read f; do echo "@@FILE $(sha256sum "$f" | cut -d' ' -f1) $f"; done; cd /`,
      `echo "${RESULT_PREFIX}lh owner $(stat -c '%u:%g' /mnt/h/liveuser/notes.txt)"`,
      `echo "${RESULT_PREFIX}lh mode $(stat -c '%a' /mnt/h/liveuser/Documents/deep/er/script.sh)"`,
      `echo "${RESULT_PREFIX}lh link $(readlink /mnt/h/liveuser/link-to-big)"`,
      `echo "${RESULT_PREFIX}lh kib $(df -k /mnt/h | tail -1 | awk '{print $2}')"`,
      'umount /mnt/h',
      `e2fsck -fn /dev/mapper/lh > /tmp/fsck.out 2>&1; echo "${RESULT_PREFIX}lh fsck $?"`,
      guestClose('lh'),
    );

    // (b) cryptsetup's volumes, filled by the kernel.
    const theirs: [string, string[]][] = [
      ['cs_argon', ['--type', 'luks2', '--pbkdf', 'argon2id', '--pbkdf-memory', '32768', '--pbkdf-force-iterations', '4', '--pbkdf-parallel', '1']],
      ['cs_pbkdf2', ['--type', 'luks2', '--pbkdf', 'pbkdf2', '--pbkdf-force-iterations', '1000']],
      ['cs_luks1', ['--type', 'luks1', '--pbkdf-force-iterations', '1000', '--hash', 'sha256']],
    ];
    const disks = [{ path: fillPath }, { path: ours }];
    let dev = 'd';
    for (const [name, args] of theirs) {
      const path = join(dir, `${name}.img`);
      run('truncate', ['-s', String(40 * MiB), path]);
      const key = join(dir, `${name}.key`);
      writeFileSync(key, `pw ${name}`);
      run('cryptsetup', ['luksFormat', '--batch-mode', '--key-file', key, ...args, path]);
      disks.push({ path });
      lines.push(
        guestOpen(`/dev/vd${dev}`, name, `pw ${name}`),
        `mke2fs -q -t ext4 -L home /dev/mapper/${name}; echo "${RESULT_PREFIX}${name} mkfs $?"`,
        `mount -t ext4 /dev/mapper/${name} /mnt/h`,
        `mkdir -p /mnt/h/liveuser/sub && echo "hello from the kernel ${name}" > /mnt/h/liveuser/hello.txt`,
        `dd if=/dev/vdb of=/mnt/h/liveuser/sub/data.bin bs=4096 count=${FILL / 4096} 2>/dev/null`,
        'ln -s sub/data.bin /mnt/h/liveuser/link && chmod 640 /mnt/h/liveuser/hello.txt && chown -R 1000:1000 /mnt/h/liveuser',
        `umount /mnt/h; echo "${RESULT_PREFIX}${name} umount $?"`,
        guestClose(name),
      );
      dev = String.fromCharCode(dev.charCodeAt(0) + 1);
    }

    const r = await runInKernel({ script: lines.join('\n'), disks, memoryMiB: 512, timeoutMs: 150_000 });
    const res = parseGuestResults(r.output);
    assert.equal(res.lh?.open, '0', `livestick's home did not open:\n${r.output}`);
    assert.equal(res.lh?.mount, '0', `the kernel did not mount the ext4:\n${r.output}`);
    const guestFiles = r.output.split('\n').filter((l) => l.startsWith('@@FILE ')).map((l) => l.slice(7).trim());
    assert.deepEqual(guestFiles, hostFiles(src), 'the kernel reads exactly the imported files');
    assert.equal(res.lh?.owner, '1000:1000');
    assert.equal(res.lh?.mode, '750');
    assert.equal(res.lh?.link, 'Documents/big.bin');
    assert.ok(Number(res.lh?.kib) > 50 * 1024, `the kernel sees the grown filesystem (${res.lh?.kib} KiB)`);
    assert.equal(res.lh?.fsck, '0', `e2fsck in the guest:\n${r.output}`);

    for (const [name] of theirs) {
      assert.equal(res[name]?.open, '0', `${name} did not open:\n${r.output}`);
      assert.equal(res[name]?.mkfs, '0');
      assert.equal(res[name]?.umount, '0');
      const image = join(dir, `${name}.img`);
      const acc = access(`pw ${name}`);
      const ls = await homeList(image, '/liveuser', acc);
      assert.deepEqual(ls.entries.map((e) => [e.name, e.uid]), [['hello.txt', 1000], ['link', 1000], ['sub', 1000]]);
      const parts: Buffer[] = [];
      await homeCat(image, '/liveuser/hello.txt', async (p) => void parts.push(Buffer.from(p)), acc);
      assert.equal(Buffer.concat(parts).toString(), `hello from the kernel ${name}\n`);
      const out = join(dir, `${name}-export`);
      await homeExport(image, out, acc);
      assert.ok(readFileSync(join(out, 'liveuser', 'sub', 'data.bin')).equals(fill), `${name}: export differs from what the kernel wrote`);
      assert.equal(readlinkSync(join(out, 'liveuser', 'link')), 'sub/data.bin');
      assert.equal(statSync(join(out, 'liveuser', 'hello.txt')).mode & 0o777, 0o640);
    }
  });
});
