import { createHash } from 'node:crypto';
import type { Disk } from './disk.ts';

/**
 * A cheap identity of a large file: its size and a SHA-256 over sampled ranges (the first and last
 * MiB and 62 4-KiB pieces between). Distinguishes the files of one switch (their headers differ), and
 * costs a few MiB of reads whatever the file's size.
 */
export async function sampleDigest(disk: Disk): Promise<{ size: number; digest: string }> {
  const size = disk.size;
  const h = createHash('sha256');
  h.update(String(size));
  const piece = async (at: number, len: number): Promise<void> => {
    const n = Math.max(0, Math.min(len, size - at));
    if (n === 0) return;
    const buf = new Uint8Array(n);
    await disk.read(buf, at);
    h.update(buf);
  };
  const MiB = 1 << 20;
  await piece(0, MiB);
  if (size > 2 * MiB) {
    for (let i = 1; i <= 62; i++) await piece(Math.floor(((size - 4096) * i) / 63), 4096);
  }
  await piece(Math.max(MiB, size - MiB), MiB);
  return { size, digest: h.digest('hex') };
}
