import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from '../helpers/tmp.ts';
import { runCli } from '../helpers/cli.ts';
import { dirNode, fileNode, writeSquashfs } from '../../src/fs/squashfs/index.ts';

test('unsupported layouts are recognised and named, not mistaken', async () => {
  const { dir, cleanup } = tempDir();
  try {
    const mk = (name: string) => {
      const d = join(dir, name);
      mkdirSync(join(d, 'LiveOS'), { recursive: true });
      return d;
    };
    // Fedora 41+: the root tree directly in squashfs.img.
    const flat = mk('flat');
    await writeSquashfs(dirNode({}, { usr: dirNode({}, { bin: dirNode() }), etc: dirNode({}, { 'os-release': fileNode('ID=fedora\n') }) }), join(flat, 'LiveOS', 'squashfs.img'), { compressor: 'gzip', threads: 0 });
    let r = runCli(['status', flat, '--json']);
    assert.equal(r.json.error.code, 'UNSUPPORTED');
    assert.match(r.json.error.message, /flat/);

    // Fedora 42+ kiwi: EROFS named squashfs.img.
    const erofs = mk('erofs');
    const img = Buffer.alloc(8192);
    img.writeUInt32LE(0xe0f5e1e2, 1024);
    writeFileSync(join(erofs, 'LiveOS', 'squashfs.img'), img);
    r = runCli(['merge', erofs, '--json']);
    assert.equal(r.json.error.code, 'UNSUPPORTED');
    assert.match(r.json.error.message, /EROFS/);
    assert.equal(r.status, 65);

    // An overlayfs persistence directory beside a block-layout base, without LiveOS/ovlwork: dracut
    // does not use it (it boots with a temporary overlay), and status says so.
    const ovfs = mk('ovfs');
    await writeSquashfs(dirNode({}, { LiveOS: dirNode({}, { 'rootfs.img': fileNode(new Uint8Array(8192)) }) }), join(ovfs, 'LiveOS', 'squashfs.img'), { compressor: 'gzip', threads: 0 });
    mkdirSync(join(ovfs, 'LiveOS', 'overlay-LIVE-1234', 'overlayfs'), { recursive: true });
    r = runCli(['status', ovfs, '--json']);
    assert.equal(r.json.error.code, 'USAGE');
    assert.match(r.json.error.message, /overlay-LIVE-1234 is not in use: dracut does not use it: \/LiveOS\/ovlwork is missing/);

    // An uncompressed live root.
    const raw = mk('raw');
    writeFileSync(join(raw, 'LiveOS', 'rootfs.img'), Buffer.alloc(4096));
    r = runCli(['status', raw, '--json']);
    assert.equal(r.json.error.code, 'UNSUPPORTED');

    // Not a medium at all; a squashfs without a root image.
    r = runCli(['status', join(dir, 'none'), '--json']);
    assert.equal(r.json.error.code, 'NOT_FOUND');
    const empty = mk('empty');
    await writeSquashfs(dirNode({}, { boot: dirNode() }), join(empty, 'LiveOS', 'squashfs.img'), { compressor: 'gzip', threads: 0 });
    r = runCli(['status', empty, '--json']);
    assert.equal(r.json.error.code, 'UNSUPPORTED');
    assert.match(r.json.error.message, /neither/);
  } finally {
    cleanup();
  }
});
