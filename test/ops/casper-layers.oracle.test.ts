/**
 * Merge on a layered casper base, against the host kernel: three layers made as Ubuntu makes them
 * (each a kernel overlay upper over the layers below, packed by mksquashfs: whiteouts, opaque dirs and
 * trusted.overlay.* xattrs inside), a `writable` ext4 partition whose upper the kernel changed over
 * the whole chain, and a boot config naming the chain (layerfs-path=minimal.standard.live.squashfs).
 * After `livestick merge`, the kernel mounts the new top layer over the two old ones (loop-mounted
 * SquashFS images, no upper) and must show the tree it showed before; the layers below are
 * byte-identical, the upper is empty and bound to the new chain.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmodSync, cpSync, linkSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from '../helpers/tmp.ts';
import { runCli } from '../helpers/cli.ts';
import { snapshot } from '../squashfs/fixture.ts';
import { fatOn, gptStick, put } from '../live/build.ts';
import { noisy } from '../helpers/random.ts';

const canMount = process.getuid?.() === 0 && readFileSync('/proc/filesystems', 'utf8').includes('overlay');
const MiB = 2 ** 20;

function withOverlay(mnt: string, lowers: readonly string[], upper: string | undefined, work: string | undefined, fn: () => void, extra: readonly string[] = []): void {
  const opts = [`lowerdir=${lowers.join(':')}`, ...(upper ? [`upperdir=${upper}`, `workdir=${work}`] : []), ...extra].join(',');
  execFileSync('mount', ['-t', 'overlay', 'lsovl', '-o', opts, mnt]);
  try {
    fn();
  } finally {
    execFileSync('umount', [mnt]);
  }
}

function extractPartition(stick: string, p: { startBytes: number; sizeBytes: number }, out: string): string {
  execFileSync('dd', [`if=${stick}`, `of=${out}`, 'bs=1M', `skip=${p.startBytes / MiB}`, `count=${Math.floor(p.sizeBytes / MiB)}`, 'status=none']);
  return out;
}

describe('casper layered base: merge replaces the top layer only', { skip: canMount ? false : 'needs root and overlayfs in the host kernel' }, () => {
  const tmp = tempDir('livestick-casper-layers-');
  const at = (...p: string[]) => join(tmp.dir, ...p);
  const mnt = at('mnt');
  const L = ['minimal', 'minimal.standard', 'minimal.standard.live'];
  let want: Map<string, string>;
  let layerBytes: Buffer[];

  before(() => {
    mkdirSync(mnt);
    // minimal: a root tree.
    const l1 = at('minimal');
    for (const d of ['usr/bin', 'usr/lib', 'usr/share/doc/base', 'etc', 'opt/tools']) mkdirSync(join(l1, d), { recursive: true });
    writeFileSync(join(l1, 'usr/bin/sh'), noisy(300_000, 1));
    chmodSync(join(l1, 'usr/bin/sh'), 0o755);
    writeFileSync(join(l1, 'usr/lib/libc.so'), noisy(600_000, 2));
    writeFileSync(join(l1, 'usr/lib/libm.so'), noisy(500_000, 10)); // untouched by every layer above
    writeFileSync(join(l1, 'usr/share/doc/base/README'), noisy(40_000, 3));
    writeFileSync(join(l1, 'etc/hosts'), '127.0.0.1 localhost\n');
    writeFileSync(join(l1, 'etc/os-release'), 'ID=ubuntu\n');
    writeFileSync(join(l1, 'opt/tools/a'), noisy(20_000, 4));
    // minimal.standard: changes over minimal made by the kernel.
    for (const n of ['u2', 'w2', 'u3', 'w3', 'upper', 'work']) mkdirSync(at(n));
    withOverlay(mnt, [l1], at('u2'), at('w2'), () => {
      writeFileSync(join(mnt, 'usr/bin/std'), noisy(200_000, 5));
      rmSync(join(mnt, 'usr/share/doc/base'), { recursive: true }); // opaque once recreated
      mkdirSync(join(mnt, 'usr/share/doc/base'));
      writeFileSync(join(mnt, 'usr/share/doc/base/README'), 'standard\n');
      rmSync(join(mnt, 'opt/tools/a')); // a whiteout in a middle layer
      mkdirSync(join(mnt, 'usr/share/std'), { recursive: true });
      writeFileSync(join(mnt, 'usr/share/std/data'), noisy(150_000, 6));
      writeFileSync(join(mnt, 'usr/share/std/keep'), noisy(70_000, 11)); // reached through the user's redirect
    });
    // minimal.standard.live: the live session's layer.
    withOverlay(mnt, [at('u2'), l1], at('u3'), at('w3'), () => {
      writeFileSync(join(mnt, 'usr/bin/installer'), noisy(250_000, 7));
      writeFileSync(join(mnt, 'etc/hosts'), '127.0.0.1 localhost ubuntu\n');
      rmSync(join(mnt, 'usr/share/std/data'));
    });
    // The user's upper over the whole chain, as casper mounts it (lowerdir top first).
    const chain = [at('u3'), at('u2'), l1];
    withOverlay(mnt, chain, at('upper'), at('work'), () => {
      writeFileSync(join(mnt, 'usr/bin/new'), noisy(100_000, 8)); // new
      cpSync(join(l1, 'etc/os-release'), join(mnt, 'etc/os-release')); // rewritten identical (a bottom-layer file)
      writeFileSync(join(mnt, 'usr/bin/installer'), noisy(250_000, 9)); // a top-layer file changed
      rmSync(join(mnt, 'usr/bin/std')); // a middle-layer file deleted
      rmSync(join(mnt, 'usr/lib/libc.so')); // a bottom-layer file deleted
      rmSync(join(mnt, 'opt/tools'), { recursive: true }); // a directory of the bottom layer replaced
      mkdirSync(join(mnt, 'opt/tools'));
      writeFileSync(join(mnt, 'opt/tools/b'), 'b\n');
      chmodSync(join(mnt, 'usr/bin/sh'), 0o700); // metadata only
      linkSync(join(mnt, 'usr/bin/new'), join(mnt, 'usr/bin/new-link'));
      renameSync(join(mnt, 'usr/share/std'), join(mnt, 'usr/share/std2')); // a merged dir renamed: a redirect
      execFileSync('setfattr', ['-n', 'user.note', '-v', 'kept', join(mnt, 'etc/hosts')]);
    }, ['redirect_dir=on']);
    withOverlay(mnt, chain, at('upper'), at('work'), () => {
      want = snapshot(mnt);
    }, ['redirect_dir=on']);
    // The layers as mksquashfs packs them (the middle one with another compressor, so its blocks cannot be carried).
    const comp = ['xz', 'gzip', 'xz'];
    layerBytes = [l1, at('u2'), at('u3')].map((dir, i) => {
      const out = at(`${L[i]}.squashfs`);
      execFileSync('mksquashfs', [dir, out, '-comp', comp[i]!, '-noappend', '-no-progress', '-quiet', '-mkfs-time', '1700000000']);
      return readFileSync(out);
    });
    const stage = at('writable-stage');
    mkdirSync(stage);
    execFileSync('cp', ['-a', at('upper'), join(stage, 'upper')]);
    execFileSync('cp', ['-a', at('work'), join(stage, 'work')]);
    execFileSync('mke2fs', ['-q', '-t', 'ext4', '-L', 'writable', '-d', stage, at('writable.ext4'), '32M']);
  });
  after(() => tmp.cleanup());

  test('status stacks the three layers; merge writes a new top layer; the kernel mounts the new chain with the same tree', async () => {
    const stick = at('ubuntu.img');
    const table = await gptStick(stick, 80, [
      {
        sizeMiB: 40,
        type: 'microsoft-basic-data',
        fill: (d) =>
          fatOn(d, { label: 'UBUNTU', serial: 0x2404_0001 }, async (fs) => {
            for (const [i, n] of L.entries()) await put(fs, `/casper/${n}.squashfs`, layerBytes[i]!);
            await put(fs, '/boot/grub/grub.cfg', 'menuentry "Try Ubuntu" {\n\tlinux /casper/vmlinuz layerfs-path=minimal.standard.live.squashfs persistent --- quiet splash\n}\n');
          }),
      },
      { sizeMiB: 32, type: 'linux-filesystem', fill: async (d) => void (await d.write(readFileSync(at('writable.ext4')), 0)) },
    ]);
    const st = runCli(['status', stick, '--json']);
    assert.equal(st.status, 0, st.stdout + st.stderr);
    assert.equal(st.json.scheme, 'casper');
    assert.deepEqual(st.json.base.lowers.map((l: string) => l.replace(/^.*\//, '')), ['minimal.standard.live.squashfs', 'minimal.standard.squashfs', 'minimal.squashfs']);

    const dry = runCli(['merge', stick, '--dry-run']);
    assert.equal(dry.status, 0, dry.stdout + dry.stderr);
    assert.match(dry.stdout, /layered base \(3 layers\): its top layer would be replaced/);
    const r = runCli(['merge', stick, '--json']);
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.equal(r.json.layers, 3);
    assert.ok(r.json.files.carried >= 2, `blocks carried from the top and the bottom layer (${JSON.stringify(r.json.files)})`);

    const p1 = extractPartition(stick, table.partitions[0]!, at('p1.img'));
    execFileSync('fsck.fat', ['-n', p1]);
    const got = L.map((n) => {
      const out = at(`got-${n}.squashfs`);
      execFileSync('mcopy', ['-n', '-i', p1, `::casper/${n}.squashfs`, out]);
      return out;
    });
    assert.ok(readFileSync(got[0]!).equals(layerBytes[0]!), 'minimal.squashfs is untouched');
    assert.ok(readFileSync(got[1]!).equals(layerBytes[1]!), 'minimal.standard.squashfs is untouched');
    assert.ok(!readFileSync(got[2]!).equals(layerBytes[2]!), 'the top layer is new');
    const listed = execFileSync('unsquashfs', ['-lls', '-d', '', got[2]!], { encoding: 'utf8' });
    assert.doesNotMatch(listed, /libm\.so/, 'what the layers below show unchanged stays out of the new top layer');
    assert.match(listed, /^c--------- .* \/usr\/lib\/libc\.so$/m, 'a deletion of a bottom-layer file is a whiteout in the new top layer');
    assert.match(listed, /usr\/share\/std2\/keep$/m, 'a renamed directory holds what it reached through its redirect');
    const p2 = extractPartition(stick, table.partitions[1]!, at('p2.img'));
    execFileSync('e2fsck', ['-fn', p2]);

    // The kernel reads the three images (squashfs on loop devices) and stacks them as casper does.
    const dirs = L.map((n) => at(`m-${n}`));
    const mounted: string[] = [];
    try {
      for (const [i, d] of dirs.entries()) {
        mkdirSync(d);
        execFileSync('mount', ['-t', 'squashfs', '-o', 'loop,ro', got[i]!, d]);
        mounted.push(d);
      }
      withOverlay(mnt, [...dirs].reverse(), undefined, undefined, () => {
        assert.deepEqual(snapshot(mnt), want);
      });
    } finally {
      for (const d of mounted.reverse()) execFileSync('umount', [d]);
    }

    const again = runCli(['status', stick, '--json']).json;
    assert.equal(again.upper.entries, 0, 'a fresh empty upper');
    assert.equal(again.binding.state, 'bound');
    assert.equal(again.binding.matches, true, 'bound to the new top layer and the two below');
    const second = runCli(['merge', stick, '--json']);
    assert.equal(second.status, 0, second.stderr);
    assert.equal(second.json.nothingToMerge, true);
  });
});
