/**
 * A base image's fingerprint, cheap enough to check on every open of a multi-GB base (which may itself
 * be a file inside a compressed SquashFS): sha-256 over the size, the first and last MiB and 62 evenly
 * spaced 64 KiB samples, or over everything for bases up to 16 MiB. The first MiB of an ext4 base holds
 * its superblock and group descriptors, which change whenever the filesystem was mounted read-write, so
 * a merged base never shares the fingerprint of the base it replaced.
 */
import { createHash } from 'node:crypto';
import { readAt, type Disk } from '../../io/disk.ts';
import { FINGERPRINT_SAMPLED_SHA256 } from './binding.ts';

const WHOLE_LIMIT = 16 * 2 ** 20;
const EDGE = 2 ** 20;
const SAMPLE = 64 * 1024;
const SAMPLES = 62;

export async function fingerprintBase(base: Disk): Promise<{ kind: number; digest: Uint8Array }> {
  const hash = createHash('sha256');
  const sizeBytes = new Uint8Array(8);
  new DataView(sizeBytes.buffer).setBigUint64(0, BigInt(base.size), true);
  hash.update('livestick-base-fingerprint-v1');
  hash.update(sizeBytes);
  const ranges: [number, number][] = [];
  if (base.size <= WHOLE_LIMIT) {
    ranges.push([0, base.size]);
  } else {
    ranges.push([0, EDGE]);
    for (let i = 1; i <= SAMPLES; i++) {
      const at = Math.floor((i * (base.size - SAMPLE)) / (SAMPLES + 1));
      ranges.push([at, SAMPLE]);
    }
    ranges.push([base.size - EDGE, EDGE]);
  }
  for (const [at, len] of ranges) {
    for (let done = 0; done < len; done += 4 * 2 ** 20) {
      hash.update(await readAt(base, at + done, Math.min(4 * 2 ** 20, len - done)));
    }
  }
  return { kind: FINGERPRINT_SAMPLED_SHA256, digest: new Uint8Array(hash.digest()) };
}
