/**
 * Crash safety of keyslot changes: the operation is cut at every write (whole, or torn after some
 * 512-byte sectors, as a power cut leaves it), then the volume is reopened from what reached the disk.
 * It must open, and with the old or the new passphrase give the same volume key.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MemoryDisk, type Disk } from '../../src/io/disk.ts';
import { LuksVolume } from '../../src/xform/luks/index.ts';
import { enc, seededRandom } from './helpers.ts';

const MiB = 1 << 20;

class Crash extends Error {}

/** Passes writes through to `inner` until write number `at`, which lands only its first `keepSectors` sectors. */
class CrashingDisk implements Disk {
  readonly readOnly = false;
  writes = 0;
  constructor(
    readonly inner: MemoryDisk,
    readonly at: number,
    readonly keepSectors: number,
  ) {}
  get size(): number {
    return this.inner.size;
  }
  read(buf: Uint8Array, offset: number): Promise<void> {
    return this.inner.read(buf, offset);
  }
  async write(buf: Uint8Array, offset: number): Promise<void> {
    const n = this.writes++;
    if (n === this.at) {
      const keep = Math.min(buf.byteLength, this.keepSectors * 512);
      if (keep > 0) await this.inner.write(buf.subarray(0, keep), offset);
      throw new Crash(`crash at write ${n}`);
    }
    await this.inner.write(buf, offset);
  }
  async flush(): Promise<void> {}
  async close(): Promise<void> {}
}

type Op = (vol: LuksVolume) => Promise<unknown>;

async function baseVolume(extra?: (vol: LuksVolume) => Promise<void>): Promise<{ bytes: Uint8Array; key: Uint8Array }> {
  const disk = new MemoryDisk(3 * MiB);
  const vol = await LuksVolume.format(disk, enc('old'), { kdf: { type: 'pbkdf2', iterations: 1000 }, digestIterations: 1000, dataOffset: 2 * MiB, random: seededRandom('crash') });
  if (extra) await extra(vol);
  return { bytes: disk.bytes.slice(), key: (await vol.unlock(enc('old'))).volumeKey };
}

/** Runs `op` crashing at every write and tear point; returns how many crash points were checked. */
async function everyCrashPoint(start: Uint8Array, key: Uint8Array, op: Op, mustOpen: string[][]): Promise<number> {
  let checked = 0;
  for (let at = 0; ; at++) {
    let completed = false;
    for (const keep of [0, 1, 9]) {
      const mem = new MemoryDisk(start.slice());
      const disk = new CrashingDisk(mem, at, keep);
      try {
        await op(await LuksVolume.open(disk));
        completed = true;
      } catch (e) {
        if (!(e instanceof Crash)) throw e;
      }
      // After the cut: the volume opens, and one of the allowed passphrase sets fully works.
      const vol = await LuksVolume.open(mem);
      const works = async (p: string): Promise<boolean> => {
        try {
          assert.deepEqual((await vol.unlock(enc(p))).volumeKey, key);
          return true;
        } catch {
          return false;
        }
      };
      const results = new Map<string, boolean>();
      for (const p of new Set(mustOpen.flat())) results.set(p, await works(p));
      assert.ok(
        mustOpen.some((set) => set.every((p) => results.get(p))),
        `crash at write ${at} (kept ${keep} sectors): working passphrases ${[...results].filter(([, ok]) => ok).map(([p]) => p).join(',') || 'none'}`,
      );
      checked++;
      if (completed) break;
    }
    if (completed) return checked;
  }
}

test('changePassphrase: interrupted anywhere, the old or the new passphrase opens the volume', async () => {
  const { bytes, key } = await baseVolume();
  const n = await everyCrashPoint(bytes, key, (v) => v.changePassphrase(enc('old'), enc('new')), [['old'], ['new']]);
  assert.ok(n > 10);
});

test('addKeyslot: interrupted anywhere, the old passphrase still opens the volume', async () => {
  const { bytes, key } = await baseVolume();
  await everyCrashPoint(bytes, key, (v) => v.addKeyslot(enc('old'), enc('new')), [['old']]);
});

test('removeKeyslot: interrupted anywhere, the remaining passphrase opens the volume', async () => {
  const { bytes, key } = await baseVolume((v) => v.addKeyslot(enc('old'), enc('other')).then(() => {}));
  await everyCrashPoint(bytes, key, (v) => v.removeKeyslot(enc('other')), [['old']]);
});

test('a change starting from out-of-sync header copies (an earlier interruption) is still safe', async () => {
  // Leave the primary one generation ahead of the secondary: interrupt a change right after the primary.
  const { bytes, key } = await baseVolume();
  const mem = new MemoryDisk(bytes.slice());
  // Writes of changePassphrase: material, then primary (3 writes), then secondary: cut at the secondary's first.
  const disk = new CrashingDisk(mem, 4, 0);
  await assert.rejects(LuksVolume.open(disk).then((v) => v.changePassphrase(enc('old'), enc('mid'))), Crash);
  const skewed = await LuksVolume.open(mem);
  assert.match(skewed.warnings.join(), /differ/);
  await skewed.unlock(enc('mid'));
  // Now change again, crashing everywhere: 'mid' or 'new' must open it (never neither).
  await everyCrashPoint(mem.bytes.slice(), key, (v) => v.changePassphrase(enc('mid'), enc('new')), [['mid'], ['new']]);
});
