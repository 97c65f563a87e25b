/**
 * A small zstd SquashFS image's sha-256, for comparing writers across processes (native.test.ts runs
 * this file with LIVESTICK_NATIVE=0). Run directly, it prints the hash for `threads` (argv[2]).
 */
import { createHash } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { MemoryDisk } from '../../src/io/disk.ts';
import { writeSquashfs } from '../../src/fs/squashfs/writer.ts';
import { dirNode, fileNode } from '../../src/fs/squashfs/tree.ts';
import { nativeStatus } from '../../src/fs/squashfs/comp/native.ts';

function sample(size: number, seed: number): Uint8Array {
  const out = new Uint8Array(size);
  let s = seed >>> 0;
  for (let i = 0; i < size; i++) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    out[i] = i % 97 < 40 ? (i * 7) & 0xff : 97 + ((s >>> 16) % 13);
  }
  return out;
}

export async function zstdImageHash(threads: number, level?: number): Promise<string> {
  const tree = dirNode({ mtime: 1 }, { big: fileNode(sample(700_000, 9)), small: fileNode('tail\n'), other: fileNode(sample(140_000, 10)) });
  const disk = new MemoryDisk(0);
  await writeSquashfs(tree, disk, { compressor: 'zstd', compressorSettings: level === undefined ? undefined : { level }, threads, mkfsTime: 0 });
  return createHash('sha256').update(disk.bytes).digest('hex');
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const hashes = [];
  for (const level of [undefined, 6]) hashes.push(await zstdImageHash(Number(process.argv[2] ?? 0), level));
  console.log(JSON.stringify({ native: nativeStatus().active, hashes }));
}
