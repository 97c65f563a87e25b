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
 * What fsck.fat -n may report on a volume after a crash once a livestick command has run on it: the
 * dirty flag (written and not closed), clusters no file names (space, never data), a stale FSInfo free
 * count, a second FAT copy not yet updated. Each line of its report is judged.
 */
const RECOVERED = [
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
  /Free cluster summary wrong/,
  /Auto-correcting/,
  /FATs differ but appear to be intact/,
  /Using first FAT/,
];

/**
 * And right after the crash, what FAT's own write order allows in the middle of one change
 * (fs/filesystem.ts, fs/fat/fs.ts): two names sharing one chain (a cut rename), a chain longer than
 * its file's size (a cut resize), with the lines fsck.fat adds about the files it names.
 */
const CRASHED = [
  ...RECOVERED,
  /^\/\S.*$/,
  /share clusters/,
  /Truncating second to 0 bytes/,
  /File size is \d+ bytes, cluster chain length is/,
  /Truncating file to \d+ bytes/,
];

/**
 * fsck.fat -n on the image's partition (copied out sparsely): clean, or only what a crash may leave
 * (`crashed`: just after it; `recovered`: once the next command has run).
 */
export function fsckFat(img: string, part: Partition, options: { state?: 'clean' | 'crashed' | 'recovered'; where?: string } = {}): void {
  const copy = `${img}.fsck-part`;
  run('dd', [`if=${img}`, `of=${copy}`, 'bs=1M', `skip=${part.startBytes / MiB}`, `count=${part.sizeBytes / MiB}`, 'conv=sparse', 'status=none']);
  const r = run('fsck.fat', ['-n', copy], { allowFail: true });
  rmSync(copy, { force: true });
  const report = `${r.stdout}${r.stderr}`;
  const where = options.where ? `${options.where}: ` : '';
  const state = options.state ?? 'clean';
  if (state === 'clean') {
    assert.equal(r.status, 0, `${where}fsck.fat -n: ${report}`);
    return;
  }
  const allowed = state === 'crashed' ? CRASHED : RECOVERED;
  const unexplained = report.split('\n').filter((line) => line.trim() !== '' && !allowed.some((re) => re.test(line)));
  assert.deepEqual(unexplained, [], `${where}fsck.fat -n reports more than a crash may leave (${state}):\n${report}`);
}
