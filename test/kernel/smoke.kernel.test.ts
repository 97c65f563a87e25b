// Smoke test of the kernel oracle: one boot exercising job I/O, dm-snapshot, dm-crypt (LUKS2) and ext4,
// checked afterwards on the host. Plus fast checks of the console parsing that need no qemu.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, openSync, readFileSync, readSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { missingTools, run } from '../helpers/tools.ts';
import { tempDir } from '../helpers/tmp.ts';
import { consoleTail, kernelHarnessStatus, parseJobConsole, runInKernel, ensureKernel, KernelHarnessError } from './harness.ts';
import type { KernelJobResult } from './harness.ts';

const MiB = 1024 * 1024;
const ROUNDTRIP = 'alpha\n  beta\tgamma $HOME \\n "quoted"\nünïcödé';
const CRYPT_TEXT = 'livestick through dm-crypt';
const EXT4_TEXT = 'written by the guest ext4';

function readAt(path: string, offset: number, length: number): Buffer {
  const fd = openSync(path, 'r');
  try {
    const buf = Buffer.alloc(length);
    assert.equal(readSync(fd, buf, 0, length, offset), length);
    return buf;
  } finally {
    closeSync(fd);
  }
}

function basePattern(size: number): Buffer {
  const buf = Buffer.alloc(size);
  for (let i = 0; i < size; i++) buf[i] = (i * 7 + (i >> 9)) & 0xff;
  return buf;
}

describe('console parsing (no qemu)', () => {
  test('extracts output and status between the markers', () => {
    const log = 'SeaBIOS\n[ 1.0] boot\n@@LIVESTICK-JOB-BEGIN@@\nhello\nworld\n\n@@LIVESTICK-JOB-END status=3@@\n[ 4.7] reboot: Power down\n';
    assert.deepEqual(parseJobConsole(log), { output: 'hello\nworld\n', status: 3 });
  });
  test('output without a trailing newline and empty output', () => {
    assert.deepEqual(parseJobConsole('@@LIVESTICK-JOB-BEGIN@@\nabc\n@@LIVESTICK-JOB-END status=0@@\n'), { output: 'abc', status: 0 });
    assert.deepEqual(parseJobConsole('@@LIVESTICK-JOB-BEGIN@@\nDONE\n\n@@LIVESTICK-JOB-END status=0@@[    7.221209] reboot: Power down\n'), { output: 'DONE\n', status: 0 }, 'a kernel message on the marker line (seen in CI)');
    assert.deepEqual(parseJobConsole('\x1b[2J@@LIVESTICK-JOB-BEGIN@@\n\n@@LIVESTICK-JOB-END status=0@@'), { output: '', status: 0 });
  });
  test('missing markers mean failure', () => {
    assert.equal(parseJobConsole('Kernel panic - not syncing\n'), null);
    assert.equal(parseJobConsole('@@LIVESTICK-JOB-BEGIN@@\nstill running\n'), null);
    assert.equal(parseJobConsole('@@LIVESTICK-JOB-END status=0@@\n@@LIVESTICK-JOB-BEGIN@@\nlate\n'), null);
  });
  test('the error carries the last 40 console lines', () => {
    const log = Array.from({ length: 100 }, (_, i) => `line ${i}`).join('\n');
    const err = new KernelHarnessError('boom', log);
    assert.match(err.message, /^boom\n/);
    assert.ok(err.message.includes('line 60\n') && err.message.endsWith('line 99'));
    assert.ok(!err.message.includes('line 59\n'));
    assert.equal(consoleTail('a\nb\nc\n\n', 2), 'b\nc');
  });
});

describe('kernel oracle smoke', { skip: kernelHarnessStatus() || missingTools('cryptsetup', 'e2fsck', 'debugfs') }, () => {
  const tmp = tempDir('livestick-kernel-smoke-');
  const base = join(tmp.dir, 'base.img');
  const cow = join(tmp.dir, 'cow.img');
  const luks = join(tmp.dir, 'luks.img');
  const ext = join(tmp.dir, 'ext4.img');
  const odd = join(tmp.dir, 'odd.img');
  let result: KernelJobResult;

  before(async () => {
    await ensureKernel();
    writeFileSync(base, basePattern(MiB));
    writeFileSync(cow, Buffer.alloc(MiB));
    writeFileSync(luks, Buffer.alloc(0));
    run('truncate', ['-s', '20M', luks]);
    writeFileSync(join(tmp.dir, 'key'), 'hunter2');
    run('cryptsetup', ['luksFormat', '-q', '--type', 'luks2', '--pbkdf', 'pbkdf2', '--pbkdf-force-iterations', '1000',
      '--key-file', join(tmp.dir, 'key'), luks]);
    run('truncate', ['-s', '16M', ext]);
    writeFileSync(odd, Buffer.alloc(1000));

    const script = `
printf '%s' '${ROUNDTRIP.replaceAll("'", "'\\''")}'
echo
echo "== snapshot"
sz=$(blockdev --getsz /dev/vdb)
echo "base-sectors=$sz"
echo 0 $sz snapshot /dev/vdb /dev/vdc P 8 | dmsetup create s && echo "snap-create=ok"
head -c 4096 /dev/zero | tr '\\000' 'Z' | dd of=/dev/mapper/s bs=4096 count=1 conv=fsync 2>/dev/null && echo "snap-write=ok"
echo "snap-status=$(dmsetup status s)"
echo "snap-read=$(dd if=/dev/mapper/s bs=4096 count=1 2>/dev/null | tr -d Z | wc -c)"
dmsetup remove s && echo "snap-remove=ok"
echo "== crypt"
cryptsetup --version
printf hunter2 >/tmp/key
cryptsetup open --type luks2 --key-file /tmp/key /dev/vdd c && echo "crypt-open=ok"
echo "crypt-cipher=$(dmsetup table c | cut -d' ' -f4)"
printf '%s' '${CRYPT_TEXT}' | dd of=/dev/mapper/c bs=4096 conv=sync,fsync 2>/dev/null && echo "crypt-write=ok"
cryptsetup close c && echo "crypt-close=ok"
cryptsetup open --type luks2 --key-file /tmp/key /dev/vdd c2 && echo "crypt-reopen=ok"
echo "crypt-read=$(head -c ${CRYPT_TEXT.length} /dev/mapper/c2)"
cryptsetup close c2
echo "== ext4"
mke2fs -q -F -t ext4 -b 4096 /dev/vde && echo "ext4-mkfs=ok"
mount -t ext4 /dev/vde /mnt && echo "ext4-mount=ok"
echo '${EXT4_TEXT}' >/mnt/hello.txt
umount /mnt && echo "ext4-umount=ok"
echo "== end"
exit 7
`;
    result = await runInKernel({
      script,
      disks: [{ path: base, readOnly: true }, { path: cow }, { path: luks }, { path: ext }],
      timeoutMs: 80_000,
    });
  });
  after(() => tmp.cleanup());

  const values = (): Map<string, string> =>
    new Map(result.output.split('\n').flatMap((l) => { const i = l.indexOf('='); return i > 0 ? [[l.slice(0, i), l.slice(i + 1)] as [string, string]] : []; }));
  const explain = (): string => `guest output:\n${result.output}`;

  test('job output and exit status round-trip', () => {
    assert.ok(result.output.startsWith(`${ROUNDTRIP}\n== snapshot\n`), explain());
    assert.equal(result.status, 7);
    assert.ok(result.output.endsWith('== end\n'), explain());
    assert.ok(result.log.includes('@@LIVESTICK-JOB-BEGIN@@'));
  });

  test('dm-snapshot writes a persistent exception store on the COW disk', () => {
    const v = values();
    assert.equal(v.get('base-sectors'), '2048', explain());
    for (const k of ['snap-create', 'snap-write', 'snap-remove']) assert.equal(v.get(k), 'ok', `${k}\n${explain()}`);
    assert.match(v.get('snap-status') ?? '', /^0 2048 snapshot \d+\/2048 16$/, explain());
    assert.equal(v.get('snap-read'), '0', explain());
    const header = readAt(cow, 0, 16);
    assert.equal(header.toString('latin1', 0, 4), 'SnAp');
    assert.equal(header.readUInt32LE(0), 0x70416e53);
    assert.equal(header.readUInt32LE(4), 1, 'valid');
    assert.equal(header.readUInt32LE(8), 1, 'version');
    assert.equal(header.readUInt32LE(12), 8, 'chunk_size');
    // area 0 = chunk 1: one exception origin chunk 0 → COW chunk 2, then the terminator
    const area = readAt(cow, 4096, 32);
    assert.equal(area.readBigUInt64LE(0), 0n);
    assert.equal(area.readBigUInt64LE(8), 2n);
    assert.equal(area.readBigUInt64LE(24), 0n);
    assert.ok(readAt(cow, 8192, 4096).equals(Buffer.alloc(4096, 'Z')));
    assert.ok(readFileSync(base).equals(basePattern(MiB)), 'read-only origin untouched');
  });

  test('dm-crypt opens a LUKS2 volume made on the host', () => {
    const v = values();
    assert.match(result.output, /^cryptsetup 2\.\d+/m, explain());
    for (const k of ['crypt-open', 'crypt-write', 'crypt-close', 'crypt-reopen']) assert.equal(v.get(k), 'ok', `${k}\n${explain()}`);
    assert.equal(v.get('crypt-cipher'), 'aes-xts-plain64', explain());
    assert.equal(v.get('crypt-read'), CRYPT_TEXT, explain());
    assert.ok(!readFileSync(luks).includes(CRYPT_TEXT), 'plaintext must not reach the disk');
    run('cryptsetup', ['isLuks', luks]);
  });

  test('ext4 made and written in the guest passes e2fsck on the host', () => {
    const v = values();
    for (const k of ['ext4-mkfs', 'ext4-mount', 'ext4-umount']) assert.equal(v.get(k), 'ok', `${k}\n${explain()}`);
    run('e2fsck', ['-fn', ext]);
    assert.equal(run('debugfs', ['-R', 'cat /hello.txt', ext]).stdout, `${EXT4_TEXT}\n`);
  });

  test('a job that hangs is killed at the timeout with the console tail in the error', async () => {
    const started = Date.now();
    await assert.rejects(runInKernel({ script: 'echo about-to-hang; sleep 600', disks: [], timeoutMs: 20_000 }), (err: unknown) => {
      assert.ok(err instanceof KernelHarnessError);
      assert.match(err.message, /timed out after 20000 ms/);
      assert.match(err.message, /--- last 40 console lines ---/);
      return true;
    });
    assert.ok(Date.now() - started < 40_000, 'qemu was killed promptly');
  });

  test('disks whose size is not a multiple of 512 are refused before booting', async () => {
    await assert.rejects(runInKernel({ script: 'true', disks: [{ path: odd }] }), /multiple of 512/);
  });
});
