/** The implanted MD5 field (isomd5sum's format): round trips, a property over its values, typed errors for malformed text, and check/implant on ISOs built here. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { MemoryDisk } from '../../src/io/disk.ts';
import { APPDATA_OFFSET, APPDATA_SIZE, checkImplantedMd5, decodeImplantedMd5, encodeImplantedMd5, implantMd5, type ImplantedMd5 } from '../../src/fs/iso9660/implanted-md5.ts';
import { CorruptImageError } from '../../src/errors.ts';
import { buildIso } from './build.ts';

const field = (text: string) => {
  const b = new Uint8Array(APPDATA_SIZE).fill(0x20);
  b.set(Buffer.from(text, 'latin1'));
  return b;
};

test('implanted md5: the field implantisomd5 writes decodes, and encodes back to the same bytes', () => {
  const text = 'ISO MD5SUM = 80beb877504b1f113cb5a3cbc9d957c7;SKIPSECTORS = 15;RHLISOSTATUS=0;FRAGMENT SUMS = 3bb22e37e8db8ee8a3bed71f677985e61213f5df33f56b3d5dea27f71abd;FRAGMENT COUNT = 20;THIS IS NOT THE SAME AS RUNNING MD5SUM ON THIS ISO!!';
  const v = decodeImplantedMd5(field(text));
  assert.deepEqual(v, { md5: '80beb877504b1f113cb5a3cbc9d957c7', skipSectors: 15, supported: 0, fragmentSums: '3bb22e37e8db8ee8a3bed71f677985e61213f5df33f56b3d5dea27f71abd', fragmentCount: 20 });
  assert.ok(Buffer.from(encodeImplantedMd5(v as ImplantedMd5)).equals(Buffer.from(field(text))));
  assert.equal(decodeImplantedMd5(new Uint8Array(APPDATA_SIZE).fill(0x20)), undefined, 'blank: none');
  assert.equal(decodeImplantedMd5(field('MKISOFS something else')), undefined, 'another use: none');
  // Older images: no fragments, no status.
  assert.deepEqual(decodeImplantedMd5(field('ISO MD5SUM = 0123456789abcdef0123456789abcdef;SKIPSECTORS = 150;')), { md5: '0123456789abcdef0123456789abcdef', skipSectors: 150, fragmentCount: 20 });
});

test('implanted md5 (property): decode(encode(v)) is v', () => {
  const hex = (n: number) => fc.array(fc.constantFrom(...'0123456789abcdef'), { minLength: n, maxLength: n }).map((a) => a.join(''));
  fc.assert(fc.property(hex(32), fc.nat(1_000_000), fc.option(fc.nat(1), { nil: undefined }), fc.option(hex(60), { nil: undefined }), fc.constantFrom(1, 2, 3, 5, 6, 10, 12, 15, 20, 30, 60), (md5, skipSectors, supported, fragmentSums, fragmentCount) => {
    const v: ImplantedMd5 = { md5, skipSectors, fragmentCount, ...(supported !== undefined ? { supported } : {}), ...(fragmentSums !== undefined ? { fragmentSums } : {}) };
    assert.deepEqual(decodeImplantedMd5(encodeImplantedMd5(v)), v);
  }));
});

test('implanted md5: malformed fields are CorruptImageError naming the field and its byte', () => {
  const cases: [string, string][] = [
    ['ISO MD5SUM = 80BEB877504B1F113CB5A3CBC9D957C7;SKIPSECTORS = 15;', 'ISO MD5SUM'],
    ['ISO MD5SUM = 80beb8;SKIPSECTORS = 15;', 'ISO MD5SUM'],
    ['ISO MD5SUM = 80beb877504b1f113cb5a3cbc9d957c7;', 'SKIPSECTORS'],
    ['SKIPSECTORS = 15;', 'ISO MD5SUM'],
    ['ISO MD5SUM = 80beb877504b1f113cb5a3cbc9d957c7;SKIPSECTORS = -3;', 'SKIPSECTORS'],
    ['ISO MD5SUM = 80beb877504b1f113cb5a3cbc9d957c7;SKIPSECTORS = 99999999999;', 'SKIPSECTORS'],
    ['ISO MD5SUM = 80beb877504b1f113cb5a3cbc9d957c7;SKIPSECTORS = 15;FRAGMENT SUMS = 3bb2;', 'FRAGMENT SUMS'],
    ['ISO MD5SUM = 80beb877504b1f113cb5a3cbc9d957c7;SKIPSECTORS = 15;FRAGMENT SUMS = 3bb22e37e8db8ee8a3bed71f677985e61213f5df33f56b3d5dea27f71abd;FRAGMENT COUNT = 7;', 'FRAGMENT COUNT'],
  ];
  for (const [text, name] of cases) {
    assert.throws(() => decodeImplantedMd5(field(text), 32768 + APPDATA_OFFSET), (e: unknown) => e instanceof CorruptImageError && e.field === name && (e.offset ?? 0) >= 32768 + APPDATA_OFFSET, text);
  }
  assert.throws(() => decodeImplantedMd5(new Uint8Array(10)), RangeError);
});

test('implanted md5 (fuzz): any 512 bytes, and mutations of a real field, decode or give CorruptImageError', () => {
  const real = encodeImplantedMd5({ md5: '80beb877504b1f113cb5a3cbc9d957c7', skipSectors: 15, supported: 0, fragmentSums: '3bb22e37e8db8ee8a3bed71f677985e61213f5df33f56b3d5dea27f71abd', fragmentCount: 20 });
  const ok = (b: Uint8Array) => {
    try {
      decodeImplantedMd5(b);
    } catch (e) {
      if (!(e instanceof CorruptImageError)) throw e;
    }
  };
  fc.assert(fc.property(fc.uint8Array({ minLength: APPDATA_SIZE, maxLength: APPDATA_SIZE }), ok), { numRuns: 300 });
  fc.assert(fc.property(fc.array(fc.tuple(fc.nat(APPDATA_SIZE - 1), fc.constantFrom(0x3b, 0x20, 0x30, 0x39, 0x3d, 0x2d, 0x41, 0x00, 0xff)), { minLength: 1, maxLength: 8 }), (edits) => {
    const b = Uint8Array.from(real);
    for (const [at, v] of edits) b[at] = v;
    ok(b);
  }), { numRuns: 1000 });
});

function iso(bytes: number, seed: number): Uint8Array {
  const data = new Uint8Array(bytes);
  let x = seed;
  for (let i = 0; i < bytes; i++) data[i] = (x = (x * 1103515245 + 12345) >>> 0) >>> 24;
  const out = buildIso({ kind: 'dir', name: '', children: [{ kind: 'file', name: 'payload.bin', data }] });
  // The application-use field blank, as mkisofs and xorriso leave it.
  out.fill(0x20, 16 * 2048 + APPDATA_OFFSET, 16 * 2048 + APPDATA_OFFSET + APPDATA_SIZE);
  return out;
}

test('implanted md5: implant then check passes; a changed byte anywhere in the covered bytes fails (the fragment or the whole sum names it); the skipped tail and the field itself do not count', async () => {
  const image = iso(1_500_000, 7);
  const disk = new MemoryDisk(Uint8Array.from(image));
  assert.deepEqual(await checkImplantedMd5(disk), { status: 'absent' });
  const v = await implantMd5(disk);
  assert.equal(v.fragmentSums?.length, 60);
  const good = await checkImplantedMd5(disk);
  assert.equal(good.status, 'passed');
  await assert.rejects(implantMd5(disk), CorruptImageError, 'the field is in use');
  assert.deepEqual(await implantMd5(disk, { force: true }), v, 'forced: the same sums');
  const whole = new Uint8Array(disk.size);
  await disk.read(whole, 0);
  const covered = whole.byteLength - 15 * 2048;
  for (const at of [0, 40_000, 700_123, covered - 1]) {
    const bad = Uint8Array.from(whole);
    bad[at] = (bad[at] as number) ^ 1;
    const r = await checkImplantedMd5(new MemoryDisk(bad));
    assert.equal(r.status, 'failed', `byte ${at}`);
  }
  const tail = Uint8Array.from(whole);
  tail[covered + 10] = (tail[covered + 10] as number) ^ 1;
  assert.equal((await checkImplantedMd5(new MemoryDisk(tail))).status, 'passed', 'the skipped sectors are not covered');
  await assert.rejects(implantMd5(new MemoryDisk(Uint8Array.from(iso(100_000, 3)))), RangeError, 'too small for fragment sums');
});

test('livestick iso check: passed (exit 0), absent (exit 0, said), failed (exit 65, a typed error naming the image and the fragment); --json', async () => {
  const { runCli } = await import('../helpers/cli.ts');
  const { tempDir } = await import('../helpers/tmp.ts');
  const { writeFileSync } = await import('node:fs');
  const { join } = await import('node:path');
  const t = tempDir('iso-check-');
  try {
    const plain = iso(1_500_000, 11);
    writeFileSync(join(t.dir, 'plain.iso'), plain);
    const disk = new MemoryDisk(Uint8Array.from(plain));
    await implantMd5(disk);
    const good = new Uint8Array(disk.size);
    await disk.read(good, 0);
    writeFileSync(join(t.dir, 'good.iso'), good);
    const bad = Uint8Array.from(good);
    bad[300_000] = (bad[300_000] as number) ^ 1;
    writeFileSync(join(t.dir, 'bad.iso'), bad);
    const ok = runCli(['iso', 'check', join(t.dir, 'good.iso'), '--json']);
    assert.equal(ok.status, 0, ok.stderr);
    assert.equal(JSON.parse(ok.stdout).status, 'passed');
    const none = runCli(['iso', 'check', join(t.dir, 'plain.iso')]);
    assert.equal(none.status, 0);
    assert.match(none.stdout, /no implanted checksum/);
    const fail = runCli(['iso', 'check', join(t.dir, 'bad.iso'), '--json']);
    assert.equal(fail.status, 65);
    const j = JSON.parse(fail.stdout);
    assert.equal(j.ok, false);
    assert.match(JSON.stringify(j), /bad\.iso/);
    assert.match(JSON.stringify(j), /fragment \d+ of 20/);
  } finally {
    t.cleanup();
  }
});
