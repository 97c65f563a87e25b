/**
 * cryptsetup as the oracle, on plain image files (no device-mapper needed): it must accept livestick's
 * volumes exactly as its own, and livestick must open cryptsetup's. Payload encryption is checked
 * against an independent dm-crypt reference (helpers.ts referenceXts) keyed with cryptsetup's volume key.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, openSync, readSync, writeSync, copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { FileDisk } from '../../src/io/disk.ts';
import { LuksVolume, WrongPassphraseError, type KdfChoice } from '../../src/xform/luks/index.ts';
import { missingTools, run } from '../helpers/tools.ts';
import { tempDir } from '../helpers/tmp.ts';
import { cryptsetupJson, cryptsetupTestPassphrase, cryptsetupVolumeKey, enc, passFile, referenceCbcEssiv, referenceXts } from './helpers.ts';

const skip = missingTools('cryptsetup');
const MiB = 1 << 20;

function rawRead(path: string, offset: number, length: number): Buffer {
  const fd = openSync(path, 'r');
  try {
    const b = Buffer.alloc(length);
    readSync(fd, b, 0, length, offset);
    return b;
  } finally {
    closeSync(fd);
  }
}

function rawWrite(path: string, offset: number, data: Uint8Array): void {
  const fd = openSync(path, 'r+');
  try {
    writeSync(fd, data, 0, data.byteLength, offset);
  } finally {
    closeSync(fd);
  }
}

async function makeOurs(path: string, pass: string, kdf: KdfChoice, keySize: 32 | 64, sectorSize: 512 | 4096, hash = 'sha256'): Promise<Uint8Array> {
  const disk = await FileDisk.open(path, { create: { size: 24 * MiB } });
  try {
    const vol = await LuksVolume.format(disk, enc(pass), { kdf, keySize, sectorSize, hash, digestIterations: 1000, label: 'home' });
    return (await vol.unlock(enc(pass))).volumeKey;
  } finally {
    await disk.close();
  }
}

const ours: { name: string; kdf: KdfChoice; keySize: 32 | 64; sectorSize: 512 | 4096; hash?: string }[] = [
  { name: 'argon2id, 512-bit key, 4096-byte sectors', kdf: { type: 'argon2id', time: 4, memory: 32768, cpus: 2 }, keySize: 64, sectorSize: 4096 },
  { name: 'argon2i, 256-bit key, 512-byte sectors', kdf: { type: 'argon2i', time: 4, memory: 32768, cpus: 1 }, keySize: 32, sectorSize: 512 },
  { name: 'pbkdf2-sha512, 512-bit key, 512-byte sectors', kdf: { type: 'pbkdf2', hash: 'sha512', iterations: 1000 }, keySize: 64, sectorSize: 512, hash: 'sha512' },
  { name: 'pbkdf2-sha1, 256-bit key, 4096-byte sectors', kdf: { type: 'pbkdf2', hash: 'sha1', iterations: 1000 }, keySize: 32, sectorSize: 4096, hash: 'sha1' },
];

for (const c of ours) {
  test(`cryptsetup accepts a livestick LUKS2 volume: ${c.name}`, { skip }, async () => {
    const { dir, cleanup } = tempDir();
    try {
      const img = join(dir, 'home.img');
      const key = await makeOurs(img, 'secret pass', c.kdf, c.keySize, c.sectorSize, c.hash);
      const dump = run('cryptsetup', ['luksDump', img]).stdout;
      assert.match(dump, /Version:\s+2/);
      assert.match(dump, /cipher: aes-xts-plain64/);
      assert.match(dump, new RegExp(`sector: ${c.sectorSize} \\[bytes\\]`));
      assert.match(dump, new RegExp(`PBKDF:\\s+${c.kdf.type}`));
      assert.match(dump, new RegExp(`Key:\\s+${c.keySize * 8} bits`));
      assert.match(dump, /Label:\s+home/);
      const json = cryptsetupJson(img);
      assert.equal(json.keyslots['0'].kdf.type, c.kdf.type);
      assert.equal(json.segments['0'].sector_size, c.sectorSize);
      assert.equal(cryptsetupTestPassphrase(img, passFile(dir, 'pw', 'secret pass')), 0);
      assert.notEqual(cryptsetupTestPassphrase(img, passFile(dir, 'bad', 'secret pasS')), 0);
      assert.deepEqual(Buffer.from(cryptsetupVolumeKey(img, join(dir, 'pw'))), Buffer.from(key));
    } finally {
      cleanup();
    }
  });
}

test('livestick payload writes are dm-crypt ciphertext (reference xts with cryptsetup\'s volume key)', { skip }, async () => {
  const { dir, cleanup } = tempDir();
  try {
    for (const sectorSize of [512, 4096] as const) {
      const img = join(dir, `p${sectorSize}.img`);
      await makeOurs(img, 'pw', { type: 'pbkdf2', iterations: 1000 }, 64, sectorSize);
      const key = cryptsetupVolumeKey(img, passFile(dir, 'pw', 'pw'));
      const disk = await FileDisk.open(img);
      const vol = await LuksVolume.open(disk);
      const payload = await vol.openPayload(enc('pw'));
      const plain = randomBytes(3 * 4096);
      await payload.write(plain, 8192);
      await payload.close();
      await disk.close();
      const offset = 16 * MiB;
      const cipherText = rawRead(img, offset + 8192, plain.length);
      assert.deepEqual(cipherText, Buffer.from(referenceXts(key, plain, sectorSize, 8192, true)));
    }
  } finally {
    cleanup();
  }
});

test('keyslot changes by livestick are seen by cryptsetup; cryptsetup\'s by livestick', { skip }, async () => {
  const { dir, cleanup } = tempDir();
  try {
    const img = join(dir, 'k.img');
    const key = await makeOurs(img, 'first', { type: 'pbkdf2', iterations: 1000 }, 64, 4096);
    const disk = await FileDisk.open(img);
    let vol = await LuksVolume.open(disk);
    assert.equal(await vol.addKeyslot(enc('first'), enc('second')), 1);
    assert.equal(await vol.changePassphrase(enc('first'), enc('third')), 0);
    for (const [p, ok] of [['first', false], ['second', true], ['third', true]] as const) {
      assert.equal(cryptsetupTestPassphrase(img, passFile(dir, 'p', p)) === 0, ok, p);
    }
    assert.equal(await vol.removeKeyslot(enc('second')), 1);
    assert.notEqual(cryptsetupTestPassphrase(img, passFile(dir, 'p', 'second')), 0);
    assert.deepEqual(Buffer.from(cryptsetupVolumeKey(img, passFile(dir, 'p', 'third'))), Buffer.from(key));
    // cryptsetup adds a key to our volume; livestick opens with it.
    run('cryptsetup', ['luksAddKey', '--batch-mode', '--pbkdf', 'pbkdf2', '--pbkdf-force-iterations', '1000', '--key-file', passFile(dir, 'p', 'third'), img, passFile(dir, 'n', 'fourth')]);
    vol = await LuksVolume.open(disk);
    assert.deepEqual(Buffer.from((await vol.unlock(enc('fourth'))).volumeKey), Buffer.from(key));
    run('cryptsetup', ['luksDump', img]);
    await disk.close();
  } finally {
    cleanup();
  }
});

interface Theirs {
  name: string;
  args: string[];
  sectorSize: number;
  keyBits: number;
  cipher?: string;
}
const theirs: Theirs[] = [
  { name: 'LUKS2 argon2id 512-byte sectors', args: ['--type', 'luks2', '--pbkdf', 'argon2id', '--pbkdf-memory', '32768', '--pbkdf-force-iterations', '4', '--pbkdf-parallel', '2', '--sector-size', '512'], sectorSize: 512, keyBits: 512 },
  { name: 'LUKS2 argon2i 4096-byte sectors 256-bit key', args: ['--type', 'luks2', '--pbkdf', 'argon2i', '--pbkdf-memory', '32768', '--pbkdf-force-iterations', '4', '--pbkdf-parallel', '1', '--sector-size', '4096', '--key-size', '256'], sectorSize: 4096, keyBits: 256 },
  { name: 'LUKS2 pbkdf2-sha512 4096-byte sectors', args: ['--type', 'luks2', '--pbkdf', 'pbkdf2', '--pbkdf-force-iterations', '1000', '--hash', 'sha512', '--sector-size', '4096'], sectorSize: 4096, keyBits: 512 },
  { name: 'LUKS2 pbkdf2-sha1 512-byte sectors', args: ['--type', 'luks2', '--pbkdf', 'pbkdf2', '--pbkdf-force-iterations', '1000', '--hash', 'sha1', '--sector-size', '512'], sectorSize: 512, keyBits: 512 },
  { name: 'LUKS1 sha256 512-bit key', args: ['--type', 'luks1', '--pbkdf-force-iterations', '1000', '--hash', 'sha256', '--key-size', '512'], sectorSize: 512, keyBits: 512 },
  { name: 'LUKS1 sha1 256-bit key', args: ['--type', 'luks1', '--pbkdf-force-iterations', '1000', '--hash', 'sha1', '--key-size', '256'], sectorSize: 512, keyBits: 256 },
  { name: 'LUKS1 sha512 512-bit key', args: ['--type', 'luks1', '--pbkdf-force-iterations', '1000', '--hash', 'sha512', '--key-size', '512'], sectorSize: 512, keyBits: 512 },
  { name: 'LUKS1 aes-cbc-essiv:sha256 (old default)', args: ['--type', 'luks1', '--cipher', 'aes-cbc-essiv:sha256', '--key-size', '256', '--pbkdf-force-iterations', '1000', '--hash', 'sha1'], sectorSize: 512, keyBits: 256, cipher: 'aes-cbc-essiv:sha256' },
  { name: 'LUKS2 aes-cbc-essiv:sha256 128-bit key', args: ['--type', 'luks2', '--cipher', 'aes-cbc-essiv:sha256', '--key-size', '128', '--pbkdf', 'pbkdf2', '--pbkdf-force-iterations', '1000', '--sector-size', '512'], sectorSize: 512, keyBits: 128, cipher: 'aes-cbc-essiv:sha256' },
];

for (const c of theirs) {
  test(`livestick opens a cryptsetup volume: ${c.name}`, { skip }, async () => {
    const { dir, cleanup } = tempDir();
    try {
      const img = join(dir, 'c.img');
      run('truncate', ['-s', '20M', img]);
      const pw = passFile(dir, 'pw', 'their pass');
      run('cryptsetup', ['luksFormat', '--batch-mode', '--key-file', pw, ...c.args, img]);
      const key = cryptsetupVolumeKey(img, pw);
      assert.equal(key.byteLength * 8, c.keyBits);
      const disk = await FileDisk.open(img);
      const vol = await LuksVolume.open(disk);
      const info = vol.info();
      assert.equal(info.sectorSize, c.sectorSize);
      assert.equal(info.keySize * 8, c.keyBits);
      assert.equal(info.cipher, c.cipher ?? 'aes-xts-plain64');
      await assert.rejects(vol.unlock(enc('their pasS')), WrongPassphraseError);
      const { volumeKey } = await vol.unlock(enc('their pass'));
      assert.deepEqual(Buffer.from(volumeKey), Buffer.from(key));

      // Data as dm-crypt would have written it reads back as plaintext through the payload Disk.
      const plain = randomBytes(2 * 4096);
      const at = 4096;
      rawWrite(img, info.payloadOffset + at, c.cipher ? referenceCbcEssiv(key, plain, at) : referenceXts(key, plain, c.sectorSize, at, true));
      const payload = await vol.openPayload(enc('their pass'), { readOnly: true });
      const got = new Uint8Array(plain.length);
      await payload.read(got, at);
      assert.deepEqual(Buffer.from(got), plain);
      const odd = new Uint8Array(1000);
      await payload.read(odd, at + 77);
      assert.deepEqual(Buffer.from(odd), plain.subarray(77, 1077));
      await payload.close();
      if (info.version === 2) {
        // A keyslot added by livestick works in cryptsetup.
        await vol.addKeyslot(enc('their pass'), enc('our pass'), { kdf: { type: 'pbkdf2', iterations: 1000 } });
        assert.equal(cryptsetupTestPassphrase(img, passFile(dir, 'o', 'our pass')), 0);
        run('cryptsetup', ['luksDump', img]);
      }
      await disk.close();
    } finally {
      cleanup();
    }
  });
}

test('damaged primary header: livestick uses the secondary and says so; cryptsetup agrees', { skip }, async () => {
  const { dir, cleanup } = tempDir();
  try {
    const img = join(dir, 'd.img');
    run('truncate', ['-s', '20M', img]);
    const pw = passFile(dir, 'pw', 'pw');
    run('cryptsetup', ['luksFormat', '--batch-mode', '--type', 'luks2', '--pbkdf', 'pbkdf2', '--pbkdf-force-iterations', '1000', '--key-file', pw, img]);
    const key = cryptsetupVolumeKey(img, pw);
    rawWrite(img, 4096 + 10, Buffer.from('garbage'));
    const copy = join(dir, 'copy.img');
    copyFileSync(img, copy);
    const disk = await FileDisk.open(img);
    const vol = await LuksVolume.open(disk);
    assert.equal(vol.info().header, 'secondary');
    assert.match(vol.warnings.join('\n'), /primary LUKS2 header is damaged.*secondary/);
    assert.deepEqual(Buffer.from((await vol.unlock(enc('pw'))).volumeKey), Buffer.from(key));
    assert.equal(await vol.repair(), 'primary');
    assert.equal(vol.info().header, 'primary');
    assert.deepEqual(vol.warnings, []);
    await disk.close();
    run('cryptsetup', ['luksDump', img]);
    assert.equal(cryptsetupTestPassphrase(copy, pw), 0);
  } finally {
    cleanup();
  }
});

test('fields livestick does not model (tokens, config flags) survive its keyslot changes', { skip }, async () => {
  const { dir, cleanup } = tempDir();
  try {
    const img = join(dir, 't.img');
    run('truncate', ['-s', '20M', img]);
    const pw = passFile(dir, 'pw', 'pw');
    run('cryptsetup', ['luksFormat', '--batch-mode', '--type', 'luks2', '--pbkdf', 'pbkdf2', '--pbkdf-force-iterations', '1000', '--key-file', pw, img]);
    run('cryptsetup', ['token', 'add', '--key-description', 'livestick:test', '--key-slot', '0', img]);
    run('cryptsetup', ['config', '--priority', 'prefer', '--key-slot', '0', img]);
    const disk = await FileDisk.open(img);
    const vol = await LuksVolume.open(disk);
    assert.equal(await vol.addKeyslot(enc('pw'), enc('two')), 1);
    let json = cryptsetupJson(img);
    assert.deepEqual(json.tokens['0'], { type: 'luks2-keyring', keyslots: ['0'], key_description: 'livestick:test' });
    assert.equal(json.keyslots['0'].priority, 2);
    assert.equal(await vol.changePassphrase(enc('pw'), enc('one')), 0);
    json = cryptsetupJson(img);
    assert.equal(json.keyslots['0'].priority, 2, 'the keyslot keeps its priority across a passphrase change');
    assert.equal(await vol.removeKeyslot(enc('one')), 0);
    json = cryptsetupJson(img);
    assert.deepEqual(json.tokens['0'].keyslots, [], 'the removed keyslot is unassigned from the token');
    assert.equal(cryptsetupTestPassphrase(img, passFile(dir, 'two', 'two')), 0);
    await disk.close();
  } finally {
    cleanup();
  }
});
