/**
 * What status and the progress lines tell a user: largest files are files, directory chains with the
 * same bytes collapse to the deepest; new images on FAT and sparse hosts are refused or warned about;
 * progress off a terminal is plain lines only.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { tempDir } from '../helpers/tmp.ts';
import { formatSize } from '../../src/io/bytes.ts';
import { FAT_MAX_FILE_BYTES, newImageVerdict } from '../../src/io/host.ts';
import { mediumStatus } from '../../src/ops/status.ts';
import { Progress } from '../../src/cli/common.ts';
import { mediumView, updatedSample } from './helpers.ts';

const GiB = 2 ** 30;

describe('status and progress reporting', () => {
  const tmp = tempDir('livestick-reporting-');
  after(() => tmp.cleanup());

  test('largest files are regular files; no directory is listed beside a subdirectory holding all its bytes', async () => {
    const dir = await updatedSample(join(tmp.dir, 'm'));
    const st = await mediumStatus(dir, { top: 50 });
    const view = await mediumView(dir);
    assert.ok(st.topFiles.length > 3);
    for (const f of st.topFiles) assert.match(view.get(f.path) ?? '', /^file /, `${f.path} is a regular file`);
    const bytes = new Map(st.topDirectories.map((d) => [d.path, d.bytes]));
    for (const [path, b] of bytes) {
      const parent = path.slice(0, path.lastIndexOf('/'));
      if (parent) assert.notEqual(bytes.get(parent), b, `${parent} says nothing more than ${path}`);
    }
    const u = st.usage;
    assert.equal(u.files + u.metadata + u.journal + u.reclaimable + u.outside, st.overlay.exceptions * st.overlay.chunkSize, 'every copied byte is still attributed once');
  });

  test('new images: FAT refuses more than 4 GiB − 1 and what it cannot allocate; a sparse image larger than the free space is a warning', () => {
    assert.match(newImageVerdict({ kind: 'fat', freeBytes: 64 * GiB }, FAT_MAX_FILE_BYTES + 1, 'the overlay', formatSize).refuse ?? '', /4 GiB − 1/);
    assert.deepEqual(newImageVerdict({ kind: 'fat', freeBytes: 64 * GiB }, FAT_MAX_FILE_BYTES, 'the overlay', formatSize), {});
    assert.match(newImageVerdict({ kind: 'exfat', freeBytes: GiB }, 2 * GiB, 'the home image', formatSize).refuse ?? '', /allocates files in full and only 1\.00 GiB is free/);
    const sparse = newImageVerdict({ kind: 'other', freeBytes: GiB }, 8 * GiB, 'the overlay', formatSize);
    assert.equal(sparse.refuse, undefined);
    assert.match(sparse.warning ?? '', /8\.00 GiB but the host has only 1\.00 GiB free/);
    assert.deepEqual(newImageVerdict({ kind: 'other', freeBytes: null }, 8 * GiB, 'the overlay', formatSize), {});
  });

  test('progress off a terminal: plain lines, a closing line for a phase over a second, nothing with --quiet', async () => {
    const written: string[] = [];
    const original = process.stderr.write.bind(process.stderr);
    const wasTTY = process.stderr.isTTY;
    Object.defineProperty(process.stderr, 'isTTY', { value: false, configurable: true });
    process.stderr.write = ((chunk: string | Uint8Array) => {
      written.push(String(chunk));
      return true;
    }) as typeof process.stderr.write;
    try {
      const p = new Progress('verifying', 100 * 2 ** 20);
      const q = new Progress('mapping', 500, { quiet: true, unit: 'count' });
      p.update(50 * 2 ** 20);
      q.update(250);
      await new Promise((r) => setTimeout(r, 1100));
      p.update(100 * 2 ** 20);
      p.finish();
      q.finish();
    } finally {
      process.stderr.write = original;
      Object.defineProperty(process.stderr, 'isTTY', { value: wasTTY, configurable: true });
    }
    const text = written.join('');
    assert.doesNotMatch(text, /[\r\x1b]/, 'no control characters');
    assert.match(text, /^verifying: done, 100 MiB in 1\.\d s\n$/);
  });
});
