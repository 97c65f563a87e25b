/**
 * The sha-256 of small SquashFS images written with the codecs the native addon accelerates, for
 * comparing writers across processes (native.test.ts runs this file with LIVESTICK_NATIVE=0). Run
 * directly, it prints the hashes for `threads` (argv[2]).
 */
import { createHash } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { MemoryDisk } from '../../src/io/disk.ts';
import { writeSquashfs } from '../../src/fs/squashfs/writer.ts';
import { dirNode, fileNode } from '../../src/fs/squashfs/tree.ts';
import type { CompressorName, CompressorSettings } from '../../src/fs/squashfs/comp/types.ts';
import { nativeStatus } from '../../src/fs/squashfs/comp/native.ts';

/** Bytes that compress about 2:1, with runs zstd and xz find at every level; the same for a seed. */
export function sample(size: number, seed: number): Uint8Array {
  const out = new Uint8Array(size);
  let s = seed >>> 0;
  for (let i = 0; i < size; i++) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    out[i] = i % 97 < 40 ? (i * 7) & 0xff : 97 + ((s >>> 16) % 13);
  }
  return out;
}

export const VARIANTS: ReadonlyArray<[CompressorName, CompressorSettings]> = [
  ['zstd', {}],
  ['zstd', { level: 6 }],
  ['xz', {}],
  ['xz', { bcj: ['x86'], level: 2 }],
  ['gzip', {}],
  ['gzip', { level: 4 }],
];

export async function imageHash(compressor: CompressorName, settings: CompressorSettings, threads: number): Promise<string> {
  const tree = dirNode({ mtime: 1 }, { big: fileNode(sample(700_000, 9)), small: fileNode('tail\n'), other: fileNode(sample(140_000, 10)) });
  const disk = new MemoryDisk(0);
  await writeSquashfs(tree, disk, { compressor, compressorSettings: settings, threads, mkfsTime: 0 });
  return createHash('sha256').update(disk.bytes).digest('hex');
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const hashes = [];
  for (const [compressor, settings] of VARIANTS) hashes.push(await imageHash(compressor, settings, Number(process.argv[2] ?? 0)));
  console.log(JSON.stringify({ native: nativeStatus().active, hashes }));
}
