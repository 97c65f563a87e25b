/**
 * Commands on overlayfs media whose upper was written by the host kernel: a directory medium laid out
 * as dracut's flat layout (LiveOS/squashfs.img holding the root tree, LiveOS/overlay-LABEL-UUID/ and
 * LiveOS/ovlwork/), changed through a real `mount -t overlay` (root, overlay in /proc/filesystems).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmodSync, cpSync, existsSync, linkSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from '../helpers/tmp.ts';
import { runCli } from '../helpers/cli.ts';
import { missingTools } from '../helpers/tools.ts';
import { writeSquashfs } from '../../src/fs/squashfs/writer.ts';
import { SquashfsReader } from '../../src/fs/squashfs/reader.ts';
import { FileDisk } from '../../src/io/disk.ts';
import { readerSnapshot, snapshot } from '../squashfs/fixture.ts';
import { fatOn, gptStick, put } from '../live/build.ts';
import { noisy } from '../helpers/random.ts';

const canMount = process.getuid?.() === 0 && readFileSync('/proc/filesystems', 'utf8').includes('overlay');
const OVERLAY = 'overlay-LIVE-1234-ABCD';
const STICK_OVERLAY = 'overlay-LIVE-2026-1201';
const MiB = 2 ** 20;

/** A root tree on the host: what the base holds. */
function makeRoot(dir: string): void {
  mkdirSync(join(dir, 'usr/bin'), { recursive: true });
  mkdirSync(join(dir, 'usr/share/doc/pkg'), { recursive: true });
  mkdirSync(join(dir, 'etc'), { recursive: true });
  mkdirSync(join(dir, 'proc'), { recursive: true });
  writeFileSync(join(dir, 'usr/bin/tool'), noisy(200_000, 1));
  chmodSync(join(dir, 'usr/bin/tool'), 0o755);
  writeFileSync(join(dir, 'usr/bin/old'), noisy(50_000, 2));
  writeFileSync(join(dir, 'usr/share/doc/pkg/README'), noisy(30_000, 3));
  writeFileSync(join(dir, 'usr/share/doc/pkg/NEWS'), noisy(10_000, 4));
  writeFileSync(join(dir, 'etc/os-release'), 'ID=test\n');
  writeFileSync(join(dir, 'etc/hosts'), '127.0.0.1 localhost\n');
  mkdirSync(join(dir, 'usr/lib'), { recursive: true });
  writeFileSync(join(dir, 'usr/lib/libuntouched.so'), noisy(300_000, 6));
}

/** Partition `index` of a stick image as a file of its own (dd). */
function extractPartition(stick: string, table: { partitions: readonly { startBytes: number; sizeBytes: number }[] }, index: number, out: string): string {
  const p = table.partitions[index]!;
  execFileSync('dd', [`if=${stick}`, `of=${out}`, 'bs=1M', `skip=${p.startBytes / MiB}`, `count=${Math.floor(p.sizeBytes / MiB)}`, 'status=none']);
  return out;
}

/** The names in a directory of an ext4 image, as debugfs lists them. */
function ext4Names(image: string, dir: string): string[] {
  const ls = execFileSync('debugfs', ['-R', `ls -p ${dir}`, image], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  return ls.trim().split('\n').map((l) => l.split('/')[5]!).filter((n) => n !== '.' && n !== '..').sort();
}

/** The tree of a SquashFS image copied out of a FAT volume image by mtools. */
async function squashfsFromFat(fat: string, path: string, out: string): Promise<Map<string, string>> {
  execFileSync('mcopy', ['-n', '-i', fat, `::${path}`, out]);
  const disk = await FileDisk.open(out);
  try {
    return await readerSnapshot(await SquashfsReader.open(disk));
  } finally {
    await disk.close();
  }
}

describe('overlayfs media changed by the kernel', { skip: canMount ? false : 'needs root and overlayfs in the host kernel' }, () => {
  const tmp = tempDir('livestick-ovlfs-');
  const medium = join(tmp.dir, 'medium');
  const lowerDir = join(tmp.dir, 'lower');
  const upper = join(medium, 'LiveOS', OVERLAY);
  const work = join(medium, 'LiveOS', 'ovlwork');
  const mnt = join(tmp.dir, 'mnt');

  before(async () => {
    makeRoot(lowerDir);
    mkdirSync(upper, { recursive: true });
    mkdirSync(work, { recursive: true });
    mkdirSync(mnt);
    await writeSquashfs(lowerDir, join(medium, 'LiveOS', 'squashfs.img'), { compressor: 'gzip', threads: 0, mkfsTime: 1_700_000_000 });
    execFileSync('mount', ['-t', 'overlay', 'lsovl', '-o', `lowerdir=${lowerDir},upperdir=${upper},workdir=${work}`, mnt]);
    try {
      writeFileSync(join(mnt, 'usr/bin/new'), noisy(100_000, 5)); // new
      cpSync(join(lowerDir, 'etc/os-release'), join(mnt, 'etc/os-release')); // rewritten, identical
      writeFileSync(join(mnt, 'etc/hosts'), '127.0.0.1 localhost changed\n'); // changed
      rmSync(join(mnt, 'usr/bin/old')); // whiteout hiding 50,000 bytes
      rmSync(join(mnt, 'usr/share/doc/pkg'), { recursive: true }); // directory replaced: opaque
      mkdirSync(join(mnt, 'usr/share/doc/pkg'));
      writeFileSync(join(mnt, 'usr/share/doc/pkg/README'), 'short\n');
      chmodSync(join(mnt, 'usr/bin/tool'), 0o700); // metadata only
    } finally {
      execFileSync('umount', [mnt]);
    }
    merged = mountedSnapshot();
    // A copy of the same base and upper for the stick below (cp -a keeps whiteouts and trusted.* as root).
    mkdirSync(join(stage, 'LiveOS'), { recursive: true });
    execFileSync('cp', ['-a', upper, join(stage, 'LiveOS', STICK_OVERLAY)]);
    execFileSync('cp', ['-a', work, join(stage, 'LiveOS', 'ovlwork')]);
    mkdirSync(liveBootStage);
    execFileSync('cp', ['-a', upper, join(liveBootStage, 'rw')]);
    execFileSync('cp', ['-a', work, join(liveBootStage, 'work')]);
    writeFileSync(join(liveBootStage, 'persistence.conf'), '/ union\n');
    mkdirSync(imageStage);
    execFileSync('cp', ['-a', upper, join(imageStage, 'overlayfs')]);
    execFileSync('cp', ['-a', work, join(imageStage, 'ovlwork')]);
    cpSync(join(medium, 'LiveOS', 'squashfs.img'), join(tmp.dir, 'base.img'));
    // Timestamps kept: the rootfs.img case compares its merged tree, mtimes included, with the kernel's view over lowerDir.
    execFileSync('cp', ['-a', lowerDir, join(tmp.dir, 'lower-copy')]);
  });
  let merged: Map<string, string>;
  const stage = join(tmp.dir, 'stage');
  const imageStage = join(tmp.dir, 'image-stage');
  const liveBootStage = join(tmp.dir, 'live-boot-stage');

  /** The tree the kernel shows for the base and upper as they are now. */
  function mountedSnapshot(): Map<string, string> {
    execFileSync('mount', ['-t', 'overlay', 'lsovl', '-o', `lowerdir=${lowerDir},upperdir=${upper},workdir=${work}`, mnt]);
    try {
      return snapshot(mnt);
    } finally {
      execFileSync('umount', [mnt]);
    }
  }
  after(() => tmp.cleanup());

  test('status explains the upper: each change in its class, the base bytes it hides, unbound, healthy', () => {
    const r = runCli(['status', medium, '--json']);
    assert.equal(r.status, 0, r.stdout + r.stderr);
    const st = r.json;
    assert.equal(st.kind, 'overlayfs');
    assert.equal(st.scheme, 'dracut');
    assert.match(st.persistence.upper, new RegExp(`LiveOS/${OVERLAY}$`));
    const c = st.upper.classes;
    assert.equal(c.new.count, 2, 'usr/bin/new, and the README in the replaced directory');
    assert.equal(c['copied-up-identical'].count, 1);
    assert.equal(c['copied-up-changed'].count, 1);
    assert.equal(c.whiteout.count, 1);
    assert.equal(c.whiteout.hiddenBytes, 50_000);
    assert.equal(c['opaque-dir'].count, 1);
    assert.equal(c['opaque-dir'].hiddenBytes, 40_000);
    assert.equal(c['metadata-only'].count, 1);
    assert.equal(st.upper.hiddenBaseBytes, 90_000);
    assert.equal(st.binding.state, 'unbound');
    assert.equal(st.healthy, true);
    assert.equal(st.topFiles[0].path, '/usr/bin/tool', 'a chmod copies the whole file up');
    assert.ok(!st.topFiles.some((f: { path: string }) => f.path === '/usr/lib/libuntouched.so'));
    const human = runCli(['status', medium]);
    assert.equal(human.status, 0, human.stderr);
    assert.match(human.stdout, /deletions \(whiteouts\)\s+1/);
    assert.match(human.stdout, /copies identical to the base\s+1/);
    assert.ok(existsSync(upper));
  });

  test('merge: the new base is the tree the kernel showed; the upper is empty and bound to it; a second merge has nothing to do', async () => {
    const dry = runCli(['merge', medium, '--dry-run', '--json']);
    assert.equal(dry.status, 0, dry.stdout + dry.stderr);
    assert.equal(dry.json.verdict, 'ok');
    assert.equal(readFileSync(join(medium, 'LiveOS', 'squashfs.img')).length > 0, true);
    const r = runCli(['merge', medium, '--json']);
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.equal(r.json.kind, 'overlayfs');
    assert.equal(r.json.files.rebuilt, 3, 'the files the upper holds with new data');
    assert.equal(r.json.files.carried, 3, 'the untouched base file, and the two the upper holds unchanged (a chmod copies usr/bin/tool up; one copy is identical) keep their stored blocks');
    const disk = await FileDisk.open(join(medium, 'LiveOS', 'squashfs.img'));
    try {
      assert.deepEqual(await readerSnapshot(await SquashfsReader.open(disk)), merged);
    } finally {
      await disk.close();
    }
    assert.deepEqual(readdirSync(upper), [], 'a fresh empty upper');
    assert.deepEqual(readdirSync(join(medium, 'LiveOS')).sort(), ['ovlwork', OVERLAY, 'squashfs.img'].sort(), 'no leftovers');
    const st = runCli(['status', medium, '--json']).json;
    assert.equal(st.upper.entries, 0);
    assert.equal(st.binding.state, 'bound');
    assert.equal(st.binding.matches, true);
    // The kernel mounts the new pair and shows the same tree.
    rmSync(lowerDir, { recursive: true });
    execFileSync('unsquashfs', ['-q', '-no-progress', '-d', lowerDir, join(medium, 'LiveOS', 'squashfs.img')]);
    assert.deepEqual(mountedSnapshot(), merged);
    const again = runCli(['merge', medium, '--json']);
    assert.equal(again.status, 0, again.stderr);
    assert.equal(again.json.nothingToMerge, true);
  });

  test('reset asks, names what it drops, then leaves an empty upper bound to the base; a foreign binding is flagged, refused by merge and cured by bind', () => {
    execFileSync('mount', ['-t', 'overlay', 'lsovl', '-o', `lowerdir=${lowerDir},upperdir=${upper},workdir=${work}`, mnt]);
    try {
      writeFileSync(join(mnt, 'etc/after-merge'), noisy(20_000, 9));
    } finally {
      execFileSync('umount', [mnt]);
    }
    const asked = runCli(['reset', medium]);
    assert.notEqual(asked.status, 0, 'no terminal to confirm on: nothing is done');
    assert.match(asked.stderr + asked.stdout, /19\.5 KiB|20\.0 KB|after-merge/);
    assert.ok(existsSync(join(upper, 'etc', 'after-merge')));
    const r = runCli(['reset', medium, '--yes', '--json']);
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.equal(r.json.kind, 'overlayfs');
    assert.deepEqual(readdirSync(upper), []);
    assert.ok(readdirSync(work).includes('livestick-base.json'));
    let st = runCli(['status', medium, '--json']);
    assert.equal(st.status, 0);
    assert.equal(st.json.binding.matches, true);
    // A binding naming another base.
    const rec = join(work, 'livestick-base.json');
    const b = JSON.parse(readFileSync(rec, 'utf8'));
    b.lowers[0].digest = 'f'.repeat(64);
    writeFileSync(rec, JSON.stringify(b));
    writeFileSync(join(upper, 'x'), 'x');
    st = runCli(['status', medium, '--json']);
    assert.equal(st.status, 3, 'needs attention');
    assert.equal(st.json.binding.matches, false);
    const m = runCli(['merge', medium, '--json']);
    assert.notEqual(m.status, 0);
    assert.equal(m.json.error.code, 'BASE_MISMATCH');
    const bind = runCli(['overlay', 'bind', medium, '--json']);
    assert.equal(bind.status, 0, bind.stdout + bind.stderr);
    st = runCli(['status', medium, '--json']);
    assert.equal(st.status, 0);
    assert.equal(st.json.binding.matches, true);
  });

  test('the same on a GPT stick image, without mounting anything: squashfs.img on FAT32 (p1), the upper on ext4 made by mke2fs (p2)', async () => {
    const stick = join(tmp.dir, 'stick.img');
    const p2 = join(tmp.dir, 'p2.img');
    execFileSync('mke2fs', ['-q', '-t', 'ext4', '-L', 'persist', '-d', stage, p2, '32M']);
    const base = readFileSync(join(tmp.dir, 'base.img'));
    const table = await gptStick(stick, 80, [
      { sizeMiB: 40, type: 'efi-system', fill: (d) => fatOn(d, { label: 'LIVE', serial: 0x2026_1201 }, (fs) => put(fs, '/LiveOS/squashfs.img', base)) },
      { sizeMiB: 32, type: 'linux-filesystem', fill: async (d) => void (await d.write(readFileSync(p2), 0)) },
    ]);
    const st = runCli(['status', stick, '--json']);
    assert.equal(st.status, 0, st.stdout + st.stderr);
    assert.equal(st.json.kind, 'overlayfs');
    assert.match(st.json.persistence.upper, new RegExp(`stick.img:p2/LiveOS/${STICK_OVERLAY}$`));
    assert.equal(st.json.upper.classes.whiteout.hiddenBytes, 50_000);
    assert.equal(st.json.upper.classes['opaque-dir'].count, 1);
    const r = runCli(['merge', stick, '--json']);
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.equal(r.json.files.carried, 3, 'the untouched file and the two unchanged copies');
    // The oracles: fsck.fat and e2fsck clean, mtools' copy of the new base is the kernel's tree, debugfs sees an empty upper.
    const fat = extractPartition(stick, table, 0, join(tmp.dir, 'part1.img'));
    const ext = extractPartition(stick, table, 1, join(tmp.dir, 'part2.img'));
    execFileSync('fsck.fat', ['-n', fat]);
    execFileSync('e2fsck', ['-fn', ext]);
    assert.deepEqual(await squashfsFromFat(fat, 'LiveOS/squashfs.img', join(tmp.dir, 'new-base.img')), merged);
    assert.deepEqual(ext4Names(ext, `/LiveOS/${STICK_OVERLAY}`), [], 'the upper on the stick is empty');
    assert.deepEqual(ext4Names(ext, '/LiveOS'), [STICK_OVERLAY, 'ovlwork'].sort(), 'no leftovers on p2');
    const after = runCli(['status', stick, '--json']).json;
    assert.equal(after.upper.entries, 0);
    assert.equal(after.binding.matches, true);
  });

  test('Debian live-boot: live/filesystem.squashfs on FAT32, a `persistence` ext4 partition with persistence.conf "/ union", rw/ and work/', async () => {
    const stick = join(tmp.dir, 'live-boot.img');
    const p2 = join(tmp.dir, 'persistence.ext4');
    execFileSync('mke2fs', ['-q', '-t', 'ext4', '-L', 'persistence', '-d', liveBootStage, p2, '32M']);
    const base = readFileSync(join(tmp.dir, 'base.img'));
    const table = await gptStick(stick, 80, [
      { sizeMiB: 40, type: 'efi-system', fill: (d) => fatOn(d, { label: 'DEBLIVE', serial: 0x1111_2222 }, (fs) => put(fs, '/live/filesystem.squashfs', base)) },
      { sizeMiB: 32, type: 'linux-filesystem', fill: async (d) => void (await d.write(readFileSync(p2), 0)) },
    ]);
    const st = runCli(['status', stick, '--json']);
    assert.equal(st.status, 0, st.stdout + st.stderr);
    assert.equal(st.json.scheme, 'live-boot');
    assert.match(st.json.persistence.upper, /p2\/rw$/);
    assert.equal(st.json.upper.classes.whiteout.hiddenBytes, 50_000);
    const r = runCli(['merge', stick, '--json']);
    assert.equal(r.status, 0, r.stdout + r.stderr);
    const ext = extractPartition(stick, table, 1, join(tmp.dir, 'live-boot-p2.img'));
    execFileSync('e2fsck', ['-fn', ext]);
    assert.deepEqual(ext4Names(ext, '/rw'), []);
    assert.deepEqual(ext4Names(ext, '/'), ['lost+found', 'persistence.conf', 'rw', 'work']);
    assert.deepEqual(ext4Names(ext, '/work'), ['livestick-base.json']);
    const fat = extractPartition(stick, table, 0, join(tmp.dir, 'live-boot-p1.img'));
    execFileSync('fsck.fat', ['-n', fat]);
    assert.deepEqual(await squashfsFromFat(fat, 'live/filesystem.squashfs', join(tmp.dir, 'live-boot-base.img')), merged);
  });

  test('the vfat-stick form: an ext4 image file LiveOS/overlay-LIVE-… holding overlayfs/ + ovlwork/ on the FAT32 partition beside squashfs.img', async () => {
    const stick = join(tmp.dir, 'vfat.img');
    const img = join(tmp.dir, 'overlay.ext4');
    execFileSync('mke2fs', ['-q', '-t', 'ext4', '-L', 'OVERLAY', '-d', imageStage, img, '24M']);
    const base = readFileSync(join(tmp.dir, 'base.img'));
    const table = await gptStick(stick, 80, [
      {
        sizeMiB: 70,
        type: 'efi-system',
        fill: (d) =>
          fatOn(d, { label: 'LIVE', serial: 0x2026_1201 }, async (fs) => {
            await put(fs, '/LiveOS/squashfs.img', base);
            await put(fs, `/LiveOS/${STICK_OVERLAY}`, readFileSync(img));
          }),
      },
    ]);
    const st = runCli(['status', stick, '--json']);
    assert.equal(st.status, 0, st.stdout + st.stderr);
    assert.equal(st.json.kind, 'overlayfs');
    assert.match(st.json.persistence.upper, /overlayfs$/);
    assert.ok(st.json.space.host, 'the FAT volume holding the image is reported too');
    assert.equal(st.json.upper.classes.whiteout.hiddenBytes, 50_000);
    const r = runCli(['merge', stick, '--json']);
    assert.equal(r.status, 0, r.stdout + r.stderr);
    const fat = extractPartition(stick, table, 0, join(tmp.dir, 'vfat-p1.img'));
    execFileSync('fsck.fat', ['-n', fat]);
    const out = join(tmp.dir, 'vfat-overlay.ext4');
    execFileSync('mcopy', ['-n', '-i', fat, `::LiveOS/${STICK_OVERLAY}`, out]);
    execFileSync('e2fsck', ['-fn', out]);
    assert.deepEqual(ext4Names(out, '/overlayfs'), []);
    assert.deepEqual(ext4Names(out, '/'), ['lost+found', 'overlayfs', 'ovlwork']);
    assert.deepEqual(await squashfsFromFat(fat, 'LiveOS/squashfs.img', join(tmp.dir, 'vfat-base.img')), merged);
  });

  test('an EROFS base (Fedora 42+): status explains the upper over it as over SquashFS; merge gives a new EROFS base the kernel mounts as the merged tree (ACLs kept), or with --format squashfs a SquashFS one (refused over an ACL unless --drop-acls)', { skip: missingTools('mkfs.erofs', 'setfattr') }, async () => {
    const m = join(tmp.dir, 'erofs-medium');
    mkdirSync(join(m, 'LiveOS'), { recursive: true });
    // Each file's own mtime kept (no -T), as the merged tree the kernel showed has them. A POSIX ACL on
    // a file the upper leaves alone (as Debian's /var/log/journal has): EROFS stores it, SquashFS cannot.
    const lower = join(tmp.dir, 'erofs-lower');
    execFileSync('cp', ['-a', join(tmp.dir, 'lower-copy'), lower]);
    const acl = join(lower, 'usr/lib/libuntouched.so');
    execFileSync('setfattr', ['-n', 'system.posix_acl_access', '-v', '0sAgAAAAEABwD/////BAAFAP////8IAAUABAAAABAABQD/////IAAFAP////8=', acl]);
    execFileSync('chmod', ['0644', acl]);
    execFileSync('mkfs.erofs', ['-zlz4hc', '--quiet', join(m, 'LiveOS', 'squashfs.img'), lower]);
    execFileSync('cp', ['-a', join(stage, 'LiveOS', STICK_OVERLAY), join(m, 'LiveOS', OVERLAY)]);
    execFileSync('cp', ['-a', join(stage, 'LiveOS', 'ovlwork'), join(m, 'LiveOS', 'ovlwork')]);
    const st = runCli(['status', m, '--json']);
    assert.equal(st.status, 0, st.stdout + st.stderr);
    assert.equal(st.json.kind, 'overlayfs');
    assert.equal(st.json.scheme, 'dracut');
    const c = st.json.upper.classes;
    assert.equal(c.new.count, 2);
    assert.equal(c['copied-up-identical'].count, 1, 'compared with the file in the EROFS base');
    assert.equal(c['copied-up-changed'].count, 1);
    assert.equal(c.whiteout.hiddenBytes, 50_000);
    assert.equal(c['opaque-dir'].hiddenBytes, 40_000);
    assert.equal(st.json.upper.hiddenBaseBytes, 90_000);
    const before = readdirSync(join(m, 'LiveOS', OVERLAY)).sort();
    const dry = runCli(['merge', m, '--dry-run', '--json']);
    assert.equal(dry.status, 0, dry.stdout + dry.stderr);
    assert.equal(dry.json.verdict, 'ok');
    assert.equal(dry.json.format, 'erofs', "the old base's format by default");
    assert.deepEqual(readdirSync(join(m, 'LiveOS', OVERLAY)).sort(), before, 'a dry run changes nothing');
    const refused = runCli(['merge', m, '--format', 'squashfs', '--json']);
    assert.equal(refused.json.error?.code, 'UNSUPPORTED', refused.stdout + refused.stderr);
    assert.match(refused.json.error.message, /system\.posix_acl_access \(\/usr\/lib\/libuntouched\.so\).*--drop-acls/);
    assert.deepEqual(readdirSync(join(m, 'LiveOS')).sort(), ['ovlwork', OVERLAY, 'squashfs.img'].sort(), 'nothing written');
    assert.deepEqual(readdirSync(join(m, 'LiveOS', OVERLAY)).sort(), before);
    const m2 = join(tmp.dir, 'erofs-medium-2');
    execFileSync('cp', ['-a', m, m2]);

    // The default: a new EROFS base with the old one's compressor, ACLs kept. What the kernel shows
    // mounting it is the merged tree it showed, with the lower file's ACL.
    const ok = runCli(['merge', m, '--json']);
    assert.equal(ok.status, 0, ok.stdout + ok.stderr);
    assert.equal(ok.json.format, 'erofs');
    assert.equal(ok.json.compressor, 'lz4hc');
    assert.ok(ok.json.files.rebuilt > 0);
    assert.ok(ok.json.files.carried > 0, 'untouched files keep their pclusters');
    const emnt = join(tmp.dir, 'erofs-new-mnt');
    mkdirSync(emnt, { recursive: true });
    execFileSync('mount', ['-t', 'erofs', '-o', 'loop,ro', join(m, 'LiveOS', 'squashfs.img'), emnt]);
    try {
      const got = snapshot(emnt);
      const aclFile = got.get('usr/lib/libuntouched.so') ?? '';
      assert.match(aclFile, / xattrs=system\.posix_acl_access=\S+$/, 'the ACL is kept');
      got.set('usr/lib/libuntouched.so', aclFile.replace(/ xattrs=\S+$/, ''));
      assert.deepEqual(got, merged);
    } finally {
      execFileSync('umount', [emnt]);
    }
    assert.deepEqual(readdirSync(join(m, 'LiveOS', OVERLAY)), [], 'a fresh empty upper');
    const after = runCli(['status', m, '--json']);
    assert.equal(after.status, 0, after.stdout + after.stderr);
    assert.equal(after.json.binding.matches, true, 'the fresh upper is bound to the new base');
    assert.equal(after.json.upper.classes.new.count, 0);

    // --format squashfs: SquashFS cannot hold the ACL; with --drop-acls it is left out, said in a warning.
    const sq = runCli(['merge', m2, '--format', 'squashfs', '--drop-acls', '--json']);
    assert.equal(sq.status, 0, sq.stdout + sq.stderr);
    assert.ok(sq.json.warnings.some((w: string) => /left out.*system\.posix_acl_access/.test(w)), sq.json.warnings.join('\n'));
    assert.equal(sq.json.format, 'squashfs');
    assert.equal(sq.json.compressor, 'lz4', "LZ4's nearest SquashFS compressor");
    assert.equal(sq.json.files.carried, 0, 'nothing can be carried from an EROFS image');
    assert.ok(sq.json.warnings.some((w: string) => /EROFS.*SquashFS/.test(w)), sq.json.warnings.join('\n'));
    const disk = await FileDisk.open(join(m2, 'LiveOS', 'squashfs.img'));
    try {
      assert.deepEqual(await readerSnapshot(await SquashfsReader.open(disk)), merged);
    } finally {
      await disk.close();
    }
  });

  test('an upper over a rootfs.img base (rd.live.overlay.overlayfs on a Fedora ≤ 40 stick): the new base is a flat SquashFS of the merged tree', async () => {
    const m = join(tmp.dir, 'rootfs-medium');
    const inner = join(tmp.dir, 'rootfs-outer');
    mkdirSync(join(inner, 'LiveOS'), { recursive: true });
    execFileSync('mke2fs', ['-q', '-t', 'ext4', '-L', 'Anaconda', '-d', join(tmp.dir, 'lower-copy'), join(inner, 'LiveOS', 'rootfs.img'), '16M']);
    mkdirSync(join(m, 'LiveOS'), { recursive: true });
    await writeSquashfs(inner, join(m, 'LiveOS', 'squashfs.img'), { compressor: 'xz', threads: 0, mkfsTime: 1_700_000_000 });
    execFileSync('cp', ['-a', join(stage, 'LiveOS', STICK_OVERLAY), join(m, 'LiveOS', OVERLAY)]);
    execFileSync('cp', ['-a', join(stage, 'LiveOS', 'ovlwork'), join(m, 'LiveOS', 'ovlwork')]);
    const st = runCli(['status', m, '--json']);
    assert.equal(st.status, 0, st.stdout + st.stderr);
    assert.equal(st.json.kind, 'overlayfs');
    assert.match(st.json.base.lowers[0], /squashfs\.img \(LiveOS\/rootfs\.img inside\)$/);
    assert.equal(st.json.upper.classes.whiteout.hiddenBytes, 50_000);
    const r = runCli(['merge', m, '--json']);
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.equal(r.json.compressor, 'xz', "the outer image's compressor");
    assert.equal(r.json.files.carried, 0, 'nothing can be carried from an ext4 image');
    assert.ok(r.json.warnings.some((w: string) => /flat SquashFS/.test(w)), r.json.warnings.join('\n'));
    const disk = await FileDisk.open(join(m, 'LiveOS', 'squashfs.img'));
    try {
      const got = await readerSnapshot(await SquashfsReader.open(disk));
      got.delete('lost+found');
      assert.deepEqual(got, merged);
    } finally {
      await disk.close();
    }
    assert.deepEqual(readdirSync(join(m, 'LiveOS', OVERLAY)), []);
    const after = runCli(['status', m, '--json']).json;
    assert.equal(after.base.lowers[0].includes('inside'), false, 'the base is flat now');
    assert.equal(after.binding.matches, true);
  });

  test('hard links the upper splits (one name deleted, one kept; a pair kept whole): the new base lists each node with the names it has left, its stored blocks carried once', async () => {
    const m = join(tmp.dir, 'links-medium');
    const low = join(tmp.dir, 'links-lower');
    const up = join(m, 'LiveOS', OVERLAY);
    const wk = join(m, 'LiveOS', 'ovlwork');
    const mp = join(tmp.dir, 'links-mnt');
    for (const d of [join(low, 'bin'), join(low, 'sbin'), up, wk, mp]) mkdirSync(d, { recursive: true });
    writeFileSync(join(low, 'bin/split'), noisy(150_000, 7));
    linkSync(join(low, 'bin/split'), join(low, 'sbin/split'));
    writeFileSync(join(low, 'bin/pair'), noisy(90_000, 8));
    linkSync(join(low, 'bin/pair'), join(low, 'sbin/pair'));
    await writeSquashfs(low, join(m, 'LiveOS', 'squashfs.img'), { compressor: 'gzip', threads: 0, mkfsTime: 1_700_000_000 });
    const mount = () => execFileSync('mount', ['-t', 'overlay', 'lnovl', '-o', `lowerdir=${low},upperdir=${up},workdir=${wk}`, mp]);
    mount();
    let shown: Map<string, string>;
    try {
      rmSync(join(mp, 'sbin/split'));
      writeFileSync(join(mp, 'bin/added'), 'new\n');
      // The kernel still shows the lower's link count for the name left.
      assert.equal(statSync(join(mp, 'bin/split')).nlink, 2);
      shown = snapshot(mp, { links: false });
    } finally {
      execFileSync('umount', [mp]);
    }
    const r = runCli(['merge', m, '--json']);
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.equal(r.json.files.carried, 2, 'one per node, counted once although the writer listed the tree twice (the view\'s nlink was wrong)');
    assert.equal(r.json.files.rebuilt, 1);
    const disk = await FileDisk.open(join(m, 'LiveOS', 'squashfs.img'));
    try {
      const reader = await SquashfsReader.open(disk);
      assert.deepEqual(await readerSnapshot(reader, { links: false }), shown);
      assert.equal((await reader.lookup('bin/split')).nlink, 1, 'the names left, not the count the kernel showed');
      const pair = await reader.lookup('bin/pair');
      assert.equal(pair.nlink, 2);
      assert.equal((await reader.lookup('sbin/pair')).inodeNumber, pair.inodeNumber);
    } finally {
      await disk.close();
    }
    // The kernel agrees.
    rmSync(low, { recursive: true });
    execFileSync('unsquashfs', ['-q', '-no-progress', '-d', low, join(m, 'LiveOS', 'squashfs.img')]);
    assert.equal(statSync(join(low, 'bin/split')).nlink, 1);
    assert.equal(statSync(join(low, 'sbin/pair')).ino, statSync(join(low, 'bin/pair')).ino);
  });
});
