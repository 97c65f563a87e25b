/**
 * Synthetic lazy trees for the streaming writer: any number of entries, listed on demand, so a test
 * can write a tree far larger than the heap it allows itself.
 *
 *   node --max-old-space-size=N --import tsx test/squashfs/lazy-tree.ts ENTRIES OUT.img
 * writes such a tree and prints the result and the peak heap used, as JSON.
 */
import { fileURLToPath } from 'node:url';
import { getHeapStatistics } from 'node:v8';
import type { FileNode, LazyDirNode, NodeMeta, SourceNode } from '../../src/fs/squashfs/tree.ts';

const META: NodeMeta = { mode: 0o755, uid: 0, gid: 0, mtime: 1_700_000_000 };

/** File `i`'s bytes: a few dozen bytes that differ from file to file (so none is a duplicate). */
export function lazyFileBytes(i: number): Uint8Array {
  return Buffer.from(`file ${i} ${'x'.repeat(i % 37)}\n`);
}

/**
 * A tree of `entries` entries, as shallow as a real root: each directory holds up to `perDir` entries
 * (files, a symlink in ten), and the rest of its share in up to `fan` subdirectories, split evenly.
 * Every 1000th file also has a second name (a hard link) in its directory, declaring
 * `nlinkOf(i)` names (default 2, the truth; undefined declares none).
 */
export function lazyTree(entries: number, perDir = 200, fan = 16, nlinkOf: (i: number) => number | undefined = () => 2): LazyDirNode {
  let fileNo = 0;
  const dir = (budget: number): LazyDirNode => ({
    type: 'lazydir',
    ...META,
    load: async () => {
      const m = new Map<string, SourceNode>();
      let left = budget;
      for (let k = 0; k < perDir && left > 0; k++, left--) {
        const i = fileNo++;
        if (k % 10 === 9) {
          m.set(`link-${i}`, { type: 'symlink', target: `file-${i - 1}`, mode: 0o777, uid: 0, gid: 0, mtime: 1 });
          continue;
        }
        const bytes = lazyFileBytes(i);
        const f: FileNode = { type: 'file', size: bytes.byteLength, content: { kind: 'bytes', bytes }, mode: 0o644, uid: 1000, gid: 1000, mtime: 2 };
        m.set(`file-${i}`, f);
        if (i % 1000 === 0 && left > 1) {
          const n = nlinkOf(i);
          if (n !== undefined) f.nlink = n;
          m.set(`hard-${i}`, f);
          left--;
        }
      }
      const subdirs = Math.min(fan, left);
      for (let d = 0; d < subdirs; d++) {
        const share = Math.floor(left / (subdirs - d));
        left -= share;
        m.set(`d-${d}`, dir(share - 1));
      }
      return m;
    },
  });
  return dir(entries - 1);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { writeSquashfs } = await import('../../src/fs/squashfs/writer.ts');
  const entries = Number(process.argv[2]);
  let peak = 0;
  const timer = setInterval(() => (peak = Math.max(peak, getHeapStatistics().used_heap_size)), 20);
  const r = await writeSquashfs(lazyTree(entries), process.argv[3] as string, { threads: 2, mkfsTime: 1 });
  clearInterval(timer);
  peak = Math.max(peak, getHeapStatistics().used_heap_size);
  console.log(JSON.stringify({ ...r, peakHeapMiB: Math.round(peak / 2 ** 20), rssMiB: Math.round(process.memoryUsage().rss / 2 ** 20) }));
}
