import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { missingTools, run } from '../helpers/tools.ts';
import { tempDir } from '../helpers/tmp.ts';
import { runCli } from '../helpers/cli.ts';
import { writeSquashfs } from '../../src/fs/squashfs/writer.ts';
import { extractSquashfs } from '../../src/fs/squashfs/extract.ts';
import { SquashfsReader } from '../../src/fs/squashfs/reader.ts';
import { dirNode, fileNode } from '../../src/fs/squashfs/tree.ts';
import { FileDisk } from '../../src/io/disk.ts';
import { captureXattrWarnings, readHostXattrs } from '../../src/io/xattr.ts';
import { diffSnapshots, snapshot } from './fixture.ts';
import { CAP_NET_RAW_EP, dumpOf, makeXattrTree, xattrDump } from './xattr-tree.ts';

const root = process.getuid?.() === 0;
const skip = missingTools('mksquashfs', 'unsquashfs', 'setfattr', 'getfattr', 'getcap') || (root ? false : 'needs root (trusted.* and security.* xattrs)');
const tmp = tempDir('sqfs-xattr-');
const src = join(tmp.dir, 'src');
let want = new Map<string, string>();

before(() => {
  if (skip) return;
  makeXattrTree(src);
  want = xattrDump(src);
});
after(() => tmp.cleanup());

async function imageXattrs(img: string): Promise<Map<string, string>> {
  const disk = await FileDisk.open(img, { readOnly: true });
  try {
    const reader = await SquashfsReader.open(disk);
    const entries: Array<[string, Awaited<ReturnType<typeof reader.xattrs>>]> = [];
    for await (const e of reader.walk()) entries.push([e.path, await reader.xattrs(e.inode)]);
    return dumpOf(entries);
  } finally {
    await disk.close();
  }
}

test('host xattrs are read from the path itself: a symlink gives its own, not its target\'s', { skip }, () => {
  const link = readHostXattrs(join(src, 'usr/bin/arping')).map((x) => x.name).sort();
  assert.deepEqual(link, ['security.selinux', 'trusted.link']);
  const ping = readHostXattrs(join(src, 'usr/bin/ping'));
  assert.equal(Buffer.from(ping.find((x) => x.name === 'security.capability')?.value ?? []).toString('hex'), CAP_NET_RAW_EP.slice(2));
});

test('squashfs create keeps user, trusted and security xattrs: unsquashfs, the kernel and our reader see the source\'s', { skip }, async () => {
  assert.ok(want.size >= 9, 'the fixture carries xattrs');
  const img = join(tmp.dir, 'ours.sqfs');
  await writeSquashfs(src, img, { threads: 0, blockSize: 4096 });
  assert.deepEqual(diffSnapshots(want, await imageXattrs(img)), []);

  const u = join(tmp.dir, 'u');
  run('unsquashfs', ['-q', '-n', '-d', u, img]);
  assert.deepEqual(diffSnapshots(want, xattrDump(u)), []);
  assert.match(run('getcap', [join(u, 'usr/bin/ping')]).stdout, /cap_net_raw[=+]ep/);

  const m = join(tmp.dir, 'm');
  mkdirSync(m);
  const mounted = run('mount', ['-o', 'loop,ro', '-t', 'squashfs', img, m], { allowFail: true });
  assert.equal(mounted.status, 0, `kernel refused the image: ${mounted.stderr}`);
  try {
    assert.deepEqual(diffSnapshots(want, xattrDump(m)), []);
  } finally {
    run('umount', [m]);
  }
});

test('squashfs extract of a mksquashfs image restores what unsquashfs restores, inline and on worker threads, modes and owners intact', { skip }, async () => {
  const img = join(tmp.dir, 'theirs.sqfs');
  run('mksquashfs', [src, img, '-noappend', '-quiet', '-no-progress', '-b', '4K', '-processors', '1']);
  const theirs = join(tmp.dir, 'theirs');
  run('unsquashfs', ['-q', '-n', '-d', theirs, img]);
  assert.deepEqual(diffSnapshots(want, xattrDump(theirs)), []);
  const disk = await FileDisk.open(img, { readOnly: true });
  try {
    const reader = await SquashfsReader.open(disk);
    for (const threads of [0, 2]) {
      const ours = join(tmp.dir, `ours-${threads}`);
      const warnings: string[] = [];
      const restore = captureXattrWarnings((w) => warnings.push(w));
      try {
        await extractSquashfs(reader, ours, '', { threads });
      } finally {
        restore();
      }
      assert.deepEqual(warnings, []);
      assert.deepEqual(diffSnapshots(xattrDump(theirs), xattrDump(ours)), [], `threads ${threads}`);
      assert.deepEqual(diffSnapshots(snapshot(theirs, { xattrs: false }), snapshot(ours, { xattrs: false })), [], `threads ${threads}`);
      assert.match(run('getcap', [join(ours, 'usr/bin/ping')]).stdout, /cap_net_raw[=+]ep/);
    }
    const userOnly = join(tmp.dir, 'user-only');
    await extractSquashfs(reader, userOnly, 'home', { threads: 0, xattrs: ['user'] });
    assert.equal(xattrDump(userOnly).get('liveuser/notes.txt'), 'user.binary=0x00ff10ee00 user.comment=0x6120636f6d6d656e74 user.empty=0x');
  } finally {
    await disk.close();
  }
});

test('squashfs extract where trusted.* cannot be set (a user namespace): one warning, the rest restored, exit 0', { skip: skip || missingTools('unshare') }, async () => {
  const img = join(tmp.dir, 'rootowned.sqfs');
  const x = (name: string, value: string) => ({ name, value: Buffer.from(value) });
  await writeSquashfs(dirNode({}, {
    a: fileNode('a', { xattrs: [x('trusted.a', '1'), x('user.a', '1')] }),
    b: fileNode('b', { xattrs: [x('trusted.b', '2'), x('user.b', '2')] }),
  }), img, { threads: 0 });
  const dest = join(tmp.dir, 'userns');
  const tsx = import.meta.resolve('tsx');
  const r = run('unshare', ['-r', process.execPath, '--import', tsx, join(import.meta.dirname, '../../src/cli/main.ts'), 'squashfs', 'extract', img, dest], { allowFail: true });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stderr.match(/warning/g)?.length, 1, r.stderr);
  assert.match(r.stderr, /cannot set trusted\.\* extended attributes .*permission denied/);
  assert.equal(xattrDump(dest).get('a'), 'user.a=0x31');
  assert.equal(xattrDump(dest).get('b'), 'user.b=0x32');
});

test('without the xattr binding: squashfs create and extract warn once that xattrs are not copied, and succeed', { skip }, async () => {
  const env = { NAPI_RS_NATIVE_LIBRARY_PATH: join(tmp.dir, 'no-such-binding.node') };
  const img = join(tmp.dir, 'nobinding.sqfs');
  const made = runCli(['squashfs', 'create', src, img, '--json'], { env });
  assert.equal(made.status, 0, made.stderr);
  assert.equal(made.stderr.match(/extended attributes are not copied on this platform/g)?.length, 1, made.stderr);
  assert.equal(made.stderr.match(/warning/g)?.length, 1, made.stderr);
  assert.equal((await imageXattrs(img)).size, 0);

  const withXattrs = join(tmp.dir, 'theirs-nb.sqfs');
  run('mksquashfs', [src, withXattrs, '-noappend', '-quiet', '-no-progress']);
  const out = join(tmp.dir, 'nobinding-out');
  const ex = runCli(['squashfs', 'extract', withXattrs, out, '--threads', '0'], { env });
  assert.equal(ex.status, 0, ex.stderr);
  assert.equal(ex.stderr.match(/warning/g)?.length, 1, ex.stderr);
  assert.match(ex.stderr, /extended attributes are not copied on this platform/);
  assert.equal(readFileSync(join(out, 'home/liveuser/notes.txt'), 'utf8'), 'notes\n');
  assert.equal(xattrDump(out).size, 0);
});
