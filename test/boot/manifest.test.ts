// The guest manifest (shell, run here on a host tree) and manifestOfFileSystem agree on the same tree.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, linkSync, lstatSync, mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { HostFileSystem } from '../../src/fs/host/index.ts';
import type { FileSystem, FsStat } from '../../src/fs/filesystem.ts';
import { readHostXattrs } from '../../src/io/xattr.ts';
import { tempDir } from '../helpers/tmp.ts';
import { missingTools } from '../helpers/tools.ts';
import { diffManifests, formatManifest, GUEST_MANIFEST_SH, manifestOfFileSystem, readGuestManifest } from './manifest.ts';

function makeTree(root: string): void {
  mkdirSync(join(root, 'etc', 'sub'), { recursive: true });
  mkdirSync(join(root, 'proc'));
  writeFileSync(join(root, 'proc', 'ignored'), 'x');
  mkdirSync(join(root, 'tmp'));
  writeFileSync(join(root, 'etc', 'a'), 'alpha\n');
  writeFileSync(join(root, 'etc', 'tab\there'), 'odd name\n');
  writeFileSync(join(root, 'etc', 'empty'), '');
  writeFileSync(join(root, 'etc', 'sub', 'big'), Buffer.alloc(3 << 20, 7));
  chmodSync(join(root, 'etc', 'a'), 0o4755);
  linkSync(join(root, 'etc', 'a'), join(root, 'etc', 'sub', 'a-link'));
  symlinkSync('../a', join(root, 'etc', 'sub', 'rel'));
  spawnSync('mkfifo', [join(root, 'etc', 'fifo')]);
  spawnSync('setfattr', ['-n', 'user.note', '-v', 'hello', join(root, 'etc', 'a')]);
  spawnSync('setfattr', ['-n', 'user.bin', '-v', '0x00ff10', join(root, 'etc', 'sub')]);
}

function guestManifestOf(root: string, outDir: string) {
  const r = spawnSync('sh', ['-c', `${GUEST_MANIFEST_SH}\nlivestick_manifest t "$1"`, 'sh', root], { env: { ...process.env, LIVESTICK_OUT: outDir, LC_ALL: 'C' }, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return readGuestManifest(outDir, 't');
}

/** HostFileSystem plus the optional ino and xattrs another helper is adding to the FileSystem interface. */
function withInoAndXattrs(fs: HostFileSystem) {
  return Object.assign(Object.create(fs) as HostFileSystem, {
    stat: async (p: string): Promise<FsStat> => ({ ...(await fs.stat(p)), ino: lstatSync(fs.hostPath(p)).ino } as FsStat),
    xattrs: async (p: string) => readHostXattrs(fs.hostPath(p)).map((x) => [x.name, x.value] as const),
  });
}

/** The same tree through a FileSystem without inode numbers and xattrs (formats that have neither). */
function withoutInoAndXattrs(fs: HostFileSystem): FileSystem {
  return {
    type: fs.type,
    label: undefined,
    uuid: undefined,
    readOnly: true,
    stat: async (p: string): Promise<FsStat> => {
      const { ino: _ino, ...rest } = await fs.stat(p);
      return rest;
    },
    readdir: (p: string) => fs.readdir(p),
    readlink: (p: string) => fs.readlink(p),
    openFile: (p: string) => fs.openFile(p),
    space: () => fs.space(),
    close: async () => {},
  };
}

describe('boot manifest: guest shell and FileSystem agree', { skip: missingTools('getfattr', 'setfattr', 'md5sum', 'find', 'mkfifo') }, () => {
  test('same entries, link groups and xattrs; excluded roots left out', async () => {
    const t = tempDir('livestick-manifest-');
    try {
      const root = join(t.dir, 'root');
      makeTree(root);
      mkdirSync(join(t.dir, 'out'));
      const guest = guestManifestOf(root, join(t.dir, 'out'));
      const fs = new HostFileSystem(root);
      const full = await manifestOfFileSystem(withInoAndXattrs(fs));
      assert.deepEqual(full.missing, []);
      assert.deepEqual(diffManifests(guest, full), []);
      assert.equal(formatManifest(guest), formatManifest(full));
      const byPath = new Map(guest.entries.map((e) => [e.path, e]));
      assert.equal(byPath.get('/proc'), undefined);
      assert.equal(byPath.get('/tmp'), undefined);
      assert.equal(byPath.get('/etc/a')?.mode, 0o4755);
      assert.equal(byPath.get('/etc/sub/a-link')?.link, '/etc/a');
      assert.equal(byPath.get('/etc/sub/rel')?.target, '../a');
      assert.equal(byPath.get('/etc/fifo')?.kind, 'p');
      assert.deepEqual(byPath.get('/etc/a')?.xattrs, [['user.note', Buffer.from('hello').toString('hex')]]);
      assert.deepEqual(byPath.get('/etc/sub')?.xattrs, [['user.bin', '00ff10']]);
      assert.match(formatManifest(guest), /^\/etc\/tab\\x09here\tf\t/m);

      const own = await manifestOfFileSystem(fs);
      assert.deepEqual(own.missing, [], 'HostFileSystem has inode numbers and xattrs of its own');
      assert.equal(formatManifest(own), formatManifest(guest));
      const plain = await manifestOfFileSystem(withoutInoAndXattrs(fs));
      assert.deepEqual([...plain.missing].sort(), ['link', 'xattrs']);
      assert.deepEqual(diffManifests(guest, plain), []);

      writeFileSync(join(root, 'etc', 'sub', 'big'), Buffer.alloc(3 << 20, 8));
      const changed = await manifestOfFileSystem(withInoAndXattrs(fs));
      const diff = diffManifests(guest, changed);
      assert.equal(diff.length, 2);
      assert.match(diff[0]!, /^- \/etc\/sub\/big\t/);
    } finally {
      t.cleanup();
    }
  });
});
