/**
 * LUKS against the real kernel (cryptsetup + dm-crypt in Debian's kernel under qemu), one boot:
 *  (a) volumes livestick formatted and filled (argon2id / pbkdf2, 4096 / 512-byte sectors, 512 / 256-bit keys)
 *      are opened by cryptsetup and their payload, read through dm-crypt, hashes to what livestick wrote;
 *      — also after livestick re-keyed one (add, change, remove keyslots);
 *  (b) volumes cryptsetup formatted (LUKS2 argon2id 4096, LUKS2 pbkdf2 512, LUKS1) are filled by the
 *      kernel through dm-crypt and livestick reads back exactly the bytes the kernel wrote.
 */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { FileDisk } from '../../src/io/disk.ts';
import { LuksVolume, type Luks2FormatOptions } from '../../src/xform/luks/index.ts';
import { run } from '../helpers/tools.ts';
import { tempDir } from '../helpers/tmp.ts';
import { ensureKernel, kernelHarnessStatus, runInKernel } from '../kernel/harness.ts';
import { enc, passFile } from './helpers.ts';
import { guestClose, guestFillPayload, guestHashPayload, guestOpen, guestTable, parseGuestResults } from './kernel-job.ts';

const MiB = 1 << 20;
const DATA = 2 * MiB;

describe('LUKS against dm-crypt in the Linux kernel', { skip: kernelHarnessStatus() }, () => {
  let tmp: { dir: string; cleanup: () => void };
  before(async () => {
    tmp = tempDir();
    await ensureKernel();
  });
  after(() => tmp.cleanup());

  test('cryptsetup/dm-crypt open livestick volumes; livestick reads what dm-crypt wrote', { timeout: 300_000 }, async () => {
    const { dir } = tmp;
    const plain = randomBytes(DATA);
    const fill = randomBytes(DATA);
    const fillPath = join(dir, 'fill.bin');
    writeFileSync(fillPath, fill);

    const ours: [string, Luks2FormatOptions][] = [
      ['ls_argon_4k', { kdf: { type: 'argon2id', time: 4, memory: 32768, cpus: 2 }, sectorSize: 4096, keySize: 64 }],
      ['ls_pbkdf2_512', { kdf: { type: 'pbkdf2', iterations: 1000 }, sectorSize: 512, keySize: 32 }],
    ];
    const theirs: [string, string[]][] = [
      ['cs_argon_4k', ['--type', 'luks2', '--pbkdf', 'argon2id', '--pbkdf-memory', '32768', '--pbkdf-force-iterations', '4', '--pbkdf-parallel', '2', '--sector-size', '4096']],
      ['cs_pbkdf2_512', ['--type', 'luks2', '--pbkdf', 'pbkdf2', '--pbkdf-force-iterations', '1000', '--sector-size', '512']],
      ['cs_luks1', ['--type', 'luks1', '--pbkdf-force-iterations', '1000', '--hash', 'sha256']],
    ];
    const disks: { path: string }[] = [{ path: fillPath }];
    const lines: string[] = [];
    let dev = 'c'; // vdb = fill data
    for (const [name, options] of ours) {
      const path = join(dir, `${name}.img`);
      const disk = await FileDisk.open(path, { create: { size: 16 * MiB + DATA } });
      const vol = await LuksVolume.format(disk, enc(`pw ${name}`), { ...options, digestIterations: 1000 });
      const payload = await vol.openPayload(enc(`pw ${name}`));
      await payload.write(plain, 0);
      await payload.flush();
      await payload.close();
      await disk.close();
      disks.push({ path });
      lines.push(guestOpen(`/dev/vd${dev}`, name, `pw ${name}`), guestTable(name), guestHashPayload(name, DATA), guestClose(name));
      dev = String.fromCharCode(dev.charCodeAt(0) + 1);
    }
    // A volume re-keyed by livestick (add, change, remove): dm-crypt opens it with the final passphrase.
    {
      const name = 'ls_rekeyed';
      const path = join(dir, `${name}.img`);
      const disk = await FileDisk.open(path, { create: { size: 16 * MiB + DATA } });
      const vol = await LuksVolume.format(disk, enc('first'), { kdf: { type: 'pbkdf2', iterations: 1000 }, digestIterations: 1000, sectorSize: 4096 });
      const payload = await vol.openPayload(enc('first'));
      await payload.write(plain, 0);
      await payload.close();
      await vol.addKeyslot(enc('first'), enc('second'));
      await vol.changePassphrase(enc('second'), enc(`pw ${name}`), { kdf: { type: 'argon2id', time: 4, memory: 32768, cpus: 2 } });
      await vol.removeKeyslot(enc('first'));
      await disk.close();
      disks.push({ path });
      lines.push(guestOpen(`/dev/vd${dev}`, `${name}_old`, 'first'), guestOpen(`/dev/vd${dev}`, name, `pw ${name}`), guestHashPayload(name, DATA), guestClose(name));
      dev = String.fromCharCode(dev.charCodeAt(0) + 1);
    }
    for (const [name, args] of theirs) {
      const path = join(dir, `${name}.img`);
      run('truncate', ['-s', String(16 * MiB + DATA), path]);
      run('cryptsetup', ['luksFormat', '--batch-mode', '--key-file', passFile(dir, `${name}.pw`, `pw ${name}`), ...args, path]);
      disks.push({ path });
      lines.push(guestOpen(`/dev/vd${dev}`, name, `pw ${name}`), guestFillPayload(name, '/dev/vdb', 0, DATA), guestClose(name));
      dev = String.fromCharCode(dev.charCodeAt(0) + 1);
    }

    const r = await runInKernel({ script: lines.join('\n'), disks, memoryMiB: 512, timeoutMs: 240_000 });
    const res = parseGuestResults(r.output);
    const want = createHash('sha256').update(plain).digest('hex');
    for (const [name, options] of ours) {
      assert.equal(res[name]?.open, '0', `${name} did not open:\n${r.output}`);
      assert.equal(res[name]?.sha256, want, `${name}: dm-crypt reads different data`);
      assert.match(res[name]?.table ?? '', /crypt aes-xts-plain64 KEY 0 /);
      if (options.sectorSize === 4096) assert.match(res[name]?.table ?? '', /sector_size:4096/);
    }
    assert.notEqual(res.ls_rekeyed_old?.open, '0', 'the removed passphrase still opens the volume');
    assert.equal(res.ls_rekeyed?.open, '0', `re-keyed volume did not open:\n${r.output}`);
    assert.equal(res.ls_rekeyed?.sha256, want);
    for (const [name] of theirs) {
      assert.equal(res[name]?.open, '0', `${name} did not open:\n${r.output}`);
      assert.equal(res[name]?.fill, '0', `${name}: fill failed:\n${r.output}`);
      const disk = await FileDisk.open(join(dir, `${name}.img`), { readOnly: true });
      const vol = await LuksVolume.open(disk);
      const payload = await vol.openPayload(enc(`pw ${name}`), { readOnly: true });
      const got = new Uint8Array(DATA);
      await payload.read(got, 0);
      await payload.close();
      await disk.close();
      assert.ok(Buffer.from(got).equals(fill), `${name}: livestick reads different data than dm-crypt wrote`);
    }
  });
});
