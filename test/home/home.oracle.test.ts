/**
 * cryptsetup as the oracle for encrypted homes: luksDump reads livestick's volume (LUKS2, the KDF
 * asked for, aes-xts-plain64, 4096-byte sectors), `open --test-passphrase` accepts the passphrase,
 * the volume key cryptsetup recovers decrypts the payload to an ext4 that e2fsck finds clean, and
 * after `home passwd` cryptsetup refuses the old passphrase and accepts the new one. The reverse:
 * volumes made by `cryptsetup luksFormat` (LUKS2 argon2id, LUKS2 pbkdf2, LUKS1) hold an ext4
 * written by livestick's own mkfs through the library… and cryptsetup-made volumes are read by home.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createHome, homeExport, homeImport, homeInfo, homeList, homePasswd } from '../../src/ops/home.ts';
import { FileDisk } from '../../src/io/disk.ts';
import { mkfs } from '../../src/fs/ext4/index.ts';
import { LuksVolume } from '../../src/xform/luks/index.ts';
import { tempDir } from '../helpers/tmp.ts';
import { missingTools, run } from '../helpers/tools.ts';
import { access, describeTree, e2fsckHome, enc, makeTree } from './helpers.ts';

const MiB = 1 << 20;

function dumpJson(image: string): Record<string, any> {
  return JSON.parse(run('cryptsetup', ['luksDump', '--dump-json-metadata', image]).stdout);
}

function testPass(image: string, keyFile: string): number {
  return run('cryptsetup', ['open', '--test-passphrase', '--key-file', keyFile, image], { allowFail: true }).status;
}

for (const kdf of [{ type: 'argon2id', memory: 32 * 1024, time: 4, cpus: 1 } as const, { type: 'pbkdf2', iterations: 1000 } as const]) {
  test(`cryptsetup reads livestick's encrypted home (${kdf.type}) and follows home passwd`, { skip: missingTools('cryptsetup', 'e2fsck') }, async () => {
    const { dir, cleanup } = tempDir();
    try {
      const image = join(dir, 'home.img');
      const oldFile = join(dir, 'old');
      const newFile = join(dir, 'new');
      writeFileSync(oldFile, 'old secret');
      writeFileSync(newFile, 'new secret');
      await createHome(image, { size: 48 * MiB, encrypt: true, kdf, ...access('old secret') });
      const src = join(dir, 'src');
      makeTree(src, { files: 3, bigBytes: 300_000 });
      await homeImport(image, src, '/', access('old secret'));

      const dump = run('cryptsetup', ['luksDump', image]).stdout;
      assert.match(dump, /^Version:\s+2$/m);
      assert.match(dump, /cipher:\s+aes-xts-plain64/);
      assert.match(dump, /sector:\s+4096 \[bytes\]/);
      assert.match(dump, new RegExp(`PBKDF:\\s+${kdf.type}`));
      const json = dumpJson(image);
      assert.equal(json.segments['0'].size, 'dynamic');
      assert.equal(json.keyslots['0'].kdf.type, kdf.type);
      assert.equal(testPass(image, oldFile), 0, 'cryptsetup accepts the passphrase');
      assert.notEqual(testPass(image, newFile), 0);

      await homePasswd(image, enc('old secret'), enc('new secret'), { kdf });
      assert.notEqual(testPass(image, oldFile), 0, 'cryptsetup refuses the old passphrase after passwd');
      assert.equal(testPass(image, newFile), 0, 'cryptsetup accepts the new passphrase');
      const fsck = await e2fsckHome(image, join(dir, 'fs.img'), access('new secret'));
      assert.equal(fsck.status, 0, fsck.out);
    } finally {
      cleanup();
    }
  });
}

const FORMATS: { name: string; args: string[] }[] = [
  { name: 'LUKS2 argon2id', args: ['--type', 'luks2', '--pbkdf', 'argon2id', '--pbkdf-memory', '32768', '--pbkdf-force-iterations', '4', '--pbkdf-parallel', '1'] },
  { name: 'LUKS2 pbkdf2', args: ['--type', 'luks2', '--pbkdf', 'pbkdf2', '--pbkdf-force-iterations', '1000'] },
  { name: 'LUKS1', args: ['--type', 'luks1', '--pbkdf-force-iterations', '1000'] },
];

for (const f of FORMATS) {
  test(`home reads a volume made by cryptsetup luksFormat (${f.name})`, { skip: missingTools('cryptsetup') }, async () => {
    const { dir, cleanup } = tempDir();
    try {
      const image = join(dir, 'home.img');
      const keyFile = join(dir, 'key');
      writeFileSync(keyFile, 'from cryptsetup');
      writeFileSync(image, '');
      run('truncate', ['-s', `${40 * MiB}`, image]);
      run('cryptsetup', ['luksFormat', '--batch-mode', '--key-file', keyFile, ...f.args, image]);
      // Fill it through livestick's library (the kernel-filled case is in home.kernel.test.ts).
      const disk = await FileDisk.open(image);
      try {
        const vol = await LuksVolume.open(disk);
        const payload = await vol.openPayload(enc('from cryptsetup'));
        await mkfs(payload, { label: 'home' });
        await payload.close();
      } finally {
        await disk.close();
      }
      const src = join(dir, 'src');
      makeTree(src, { files: 2, bigBytes: 100_000 });
      await homeImport(image, `${src}/.`, '/', access('from cryptsetup'));
      const info = await homeInfo(image, access('from cryptsetup'));
      assert.equal(info.luks?.version, f.name === 'LUKS1' ? 1 : 2);
      assert.equal(info.filesystem?.label, 'home');
      const names = (await homeList(image, '/', access('from cryptsetup'))).entries.map((e) => e.name);
      assert.ok(names.includes('notes.txt'));
      await homeExport(image, join(dir, 'out'), access('from cryptsetup'));
      assert.deepEqual(describeTree(join(dir, 'out')), describeTree(src));
      assert.equal(testPass(image, keyFile), 0, 'the volume still opens in cryptsetup');
    } finally {
      cleanup();
    }
  });
}

test('home export never writes outside DEST, even from a crafted image (duplicate names, "..")', { skip: missingTools('debugfs', 'tune2fs') }, async () => {
  const { dir, cleanup } = tempDir();
  try {
    const image = join(dir, 'home.img');
    await createHome(image, { size: 16 * MiB });
    const outside = join(dir, 'outside');
    // A symlink "esc" to a directory outside DEST, then a directory renamed "esc" too, with a file in
    // it: a naive export would follow the link. And a file renamed "..".
    run('debugfs', ['-w', '-R', `symlink /esc ${outside}`, image]);
    run('debugfs', ['-w', '-R', 'mkdir /esd', image]);
    run('debugfs', ['-w', '-R', `write ${import.meta.filename} /esd/payload`, image]);
    run('debugfs', ['-w', '-R', `write ${import.meta.filename} /zz`, image]);
    run('tune2fs', ['-O', '^metadata_csum', image]);
    const block = Number(run('debugfs', ['-R', 'blocks /', image]).stdout.trim().split(/\s+/)[0]);
    const bytes = readFileSync(image);
    const at = block * 4096;
    const dirBlock = bytes.subarray(at, at + 4096);
    const rename = (from: string, to: string): void => {
      const i = dirBlock.indexOf(Buffer.from(from));
      assert.ok(i > 0, `${from} in the root directory block`);
      dirBlock.write(to, i);
    };
    rename('esd', 'esc');
    rename('zz', '..');
    writeFileSync(image, bytes);
    mkdirSync(outside);
    const out = join(dir, 'out');
    await assert.rejects(homeExport(image, out), (err: { code?: string }) => err.code === 'EXISTS' || err.code === 'IO');
    assert.deepEqual(readdirSync(outside), [], 'nothing was written through the symlink');
    assert.deepEqual(readdirSync(out).sort(), ['esc']);
  } finally {
    cleanup();
  }
});
