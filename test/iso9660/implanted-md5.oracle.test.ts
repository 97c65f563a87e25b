/**
 * The implanted MD5 against isomd5sum: on ISOs made by xorriso, what implantisomd5 writes we check
 * with checkisomd5's verdict (also after changing a byte in several places), and what we implant is
 * byte for byte the field implantisomd5 writes, which checkisomd5 passes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { FileDisk } from '../../src/io/disk.ts';
import { APPDATA_OFFSET, APPDATA_SIZE, checkImplantedMd5, implantMd5 } from '../../src/fs/iso9660/implanted-md5.ts';
import { missingTools, run } from '../helpers/tools.ts';
import { tempDir } from '../helpers/tmp.ts';

const skip = missingTools('xorriso', 'implantisomd5', 'checkisomd5');

function verdict(iso: string): 'passed' | 'failed' | 'absent' {
  const r = run('checkisomd5', [iso], { allowFail: true });
  const out = r.stdout + r.stderr;
  const m = /the result is: (PASS|FAIL|NA)/.exec(out);
  assert.ok(m !== null, out);
  return m[1] === 'PASS' ? 'passed' : m[1] === 'FAIL' ? 'failed' : 'absent';
}

async function ours(iso: string): Promise<string> {
  const disk = await FileDisk.open(iso, { readOnly: true });
  try {
    return (await checkImplantedMd5(disk)).status;
  } finally {
    await disk.close();
  }
}

test('implanted md5 oracle: our check agrees with checkisomd5, our implant writes implantisomd5\'s bytes', { skip }, async () => {
  const t = tempDir('implanted-md5-');
  try {
    for (const size of [1_000_000, 5_432_100]) {
      const src = join(t.dir, `src-${size}`);
      mkdirSync(src);
      const data = new Uint8Array(size);
      for (let i = 0; i < size; i++) data[i] = (i * 2654435761) >>> 24;
      writeFileSync(join(src, 'payload'), data);
      writeFileSync(join(src, 'small'), 'a small file\n');
      const plain = join(t.dir, `plain-${size}.iso`);
      run('xorriso', ['-as', 'mkisofs', '-quiet', '-V', 'LIVE_TEST', '-o', plain, src]);
      assert.equal(await ours(plain), 'absent');
      assert.equal(verdict(plain), 'absent');
      const theirs = join(t.dir, `theirs-${size}.iso`);
      copyFileSync(plain, theirs);
      run('implantisomd5', [theirs]);
      assert.equal(verdict(theirs), 'passed');
      assert.equal(await ours(theirs), 'passed');
      const mine = join(t.dir, `mine-${size}.iso`);
      copyFileSync(plain, mine);
      const disk = await FileDisk.open(mine);
      await implantMd5(disk);
      await disk.close();
      const at = 16 * 2048 + APPDATA_OFFSET;
      assert.ok(readFileSync(mine).subarray(at, at + APPDATA_SIZE).equals(readFileSync(theirs).subarray(at, at + APPDATA_SIZE)), 'the same field as implantisomd5');
      assert.equal(verdict(mine), 'passed');
      // A byte changed: the same verdict from both (inside the covered bytes: failed; in the skipped tail: passed).
      const bytes = readFileSync(theirs);
      for (const where of [100, 40_000, Math.floor(bytes.byteLength / 2), bytes.byteLength - 15 * 2048 - 1, bytes.byteLength - 100]) {
        const bad = join(t.dir, `bad-${size}-${where}.iso`);
        const b = Buffer.from(bytes);
        b[where] = (b[where] as number) ^ 0x40;
        writeFileSync(bad, b);
        assert.equal(await ours(bad), verdict(bad), `byte ${where} of ${b.byteLength}`);
      }
    }
  } finally {
    t.cleanup();
  }
});
