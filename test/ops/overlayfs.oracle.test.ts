/**
 * Commands on overlayfs media whose upper was written by the host kernel: a directory medium laid out
 * as dracut's flat layout (LiveOS/squashfs.img holding the root tree, LiveOS/overlay-LABEL-UUID/ and
 * LiveOS/ovlwork/), changed through a real `mount -t overlay` (root, overlay in /proc/filesystems).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmodSync, cpSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from '../helpers/tmp.ts';
import { runCli } from '../helpers/cli.ts';
import { writeSquashfs } from '../../src/fs/squashfs/writer.ts';
import { SquashfsReader } from '../../src/fs/squashfs/reader.ts';
import { FileDisk } from '../../src/io/disk.ts';
import { readerSnapshot, snapshot } from '../squashfs/fixture.ts';

const canMount = process.getuid?.() === 0 && readFileSync('/proc/filesystems', 'utf8').includes('overlay');
const OVERLAY = 'overlay-LIVE-1234-ABCD';

function noisy(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  let x = seed;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}

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
  });
  let merged: Map<string, string>;

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
    assert.equal(r.json.files.rebuilt, 5, 'the files the upper holds (usr/bin/tool counts: a chmod copies the data up)');
    assert.equal(r.json.files.carried, 1, 'the untouched base file is carried over');
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
});
