/** The home tests on a FAT32 stick image: reading its LiveOS/ through livestick, and fsck.fat on its partition. */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { rmSync } from 'node:fs';
import { openMediumRoot } from '../../src/ops/root.ts';
import { run } from '../helpers/tools.ts';

const MiB = 2 ** 20;

export interface Partition {
  readonly startBytes: number;
  readonly sizeBytes: number;
}

/** The names in the image's LiveOS/, sorted. */
export async function stickLiveos(img: string): Promise<string[]> {
  const root = await openMediumRoot(img);
  try {
    return (await root.fs.readdir('/LiveOS')).map((e) => e.name).sort();
  } finally {
    await root.close();
  }
}

/** sha256 of a file of the image's medium filesystem. */
export async function stickFileSha(img: string, path: string): Promise<string> {
  const root = await openMediumRoot(img);
  try {
    const disk = await root.fs.openFile(path);
    const h = createHash('sha256');
    const piece = new Uint8Array(MiB);
    for (let at = 0; at < disk.size; at += piece.byteLength) {
      const part = piece.subarray(0, Math.min(piece.byteLength, disk.size - at));
      await disk.read(part, at);
      h.update(part);
    }
    await disk.close();
    return h.digest('hex');
  } finally {
    await root.close();
  }
}

/**
 * Whether fsck.fat -n reports only what a crash may leave on FAT: the dirty flag (a volume written and
 * not closed) and clusters no file names (space, never data). Each line of its report is judged.
 */
const AFTER_CRASH = [
  /^fsck\.fat \d/,
  /^Leaving filesystem unchanged\.?$/,
  /: \d+ files, \d+\/\d+ clusters$/,
  /Dirty bit is set/,
  /[Rr]emoving dirty bit/,
  /boot sector and its backup/,
  /mostly harmless/,
  /^ +65:0?1\/0?0$/,
  /Not automatically fixing this/,
  /lost clusters|unused clusters|[Rr]eclaimed|[Oo]rphaned/,
];

/** fsck.fat -n on the image's partition (copied out sparsely): clean, or with `afterCrash` only crash leftovers. */
export function fsckFat(img: string, part: Partition, options: { afterCrash?: boolean; where?: string } = {}): void {
  const copy = `${img}.fsck-part`;
  run('dd', [`if=${img}`, `of=${copy}`, 'bs=1M', `skip=${part.startBytes / MiB}`, `count=${part.sizeBytes / MiB}`, 'conv=sparse', 'status=none']);
  const r = run('fsck.fat', ['-n', copy], { allowFail: true });
  rmSync(copy, { force: true });
  const report = `${r.stdout}${r.stderr}`;
  const where = options.where ? `${options.where}: ` : '';
  if (!options.afterCrash) {
    assert.equal(r.status, 0, `${where}fsck.fat -n: ${report}`);
    return;
  }
  const unexplained = report.split('\n').filter((line) => line.trim() !== '' && !AFTER_CRASH.some((re) => re.test(line)));
  assert.deepEqual(unexplained, [], `${where}fsck.fat -n reports more than a crash may leave:\n${report}`);
}
