/**
 * Injected failures at every file operation of a merge and a reset on an overlayfs medium (a
 * directory in dracut's flat layout whose upper the host kernel wrote; root and overlayfs needed).
 * A counting run lists the fault points; then each point fails once with an errno (EPERM, ENOSPC,
 * EIO, EROFS in turn; every one of them from the journal on) and once with a crash (that operation and everything after it never happen).
 * After each case:
 *   - what a boot finds right away is safe: a SquashFS base, and an upper only over a base whose
 *     merged tree is the user's tree (no upper only while a journal exists);
 *   - an errno comes back as a typed error;
 *   - the next command (status) leaves no journal and no leftovers, and base + upper show exactly
 *     the tree from before the merge (a reset: that tree or the bare base).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from '../helpers/tmp.ts';
import { fsManifest } from '../helpers/fs-manifest.ts';
import { SimulatedCrash, tracePoints, withFaultPlan } from '../../src/io/faults.ts';
import { LivestickError } from '../../src/errors.ts';
import { FileDisk } from '../../src/io/disk.ts';
import type { FileSystem } from '../../src/fs/filesystem.ts';
import { HostFileSystem } from '../../src/fs/host/index.ts';
import { OverlayFileSystem } from '../../src/fs/overlay/index.ts';
import { SquashfsReader } from '../../src/fs/squashfs/reader.ts';
import { SquashfsFileSystem } from '../../src/fs/squashfs/filesystem.ts';
import { writeSquashfs } from '../../src/fs/squashfs/writer.ts';
import { mergeOverlayfs } from '../../src/ops/overlayfs/merge.ts';
import { resetOverlayfs } from '../../src/ops/overlayfs/reset.ts';
import { overlayfsStatus } from '../../src/ops/overlayfs/status.ts';

const canMount = process.getuid?.() === 0 && readFileSync('/proc/filesystems', 'utf8').includes('overlay');
const ERRNOS = ['EPERM', 'ENOSPC', 'EIO', 'EROFS'];
const OVERLAY = 'overlay-LIVE-1234-ABCD';

const manifest = fsManifest;

/** What a boot would see: undefined when there is no upper (allowed only with a journal). */
async function bootView(dir: string, withUpper = true): Promise<string[] | undefined> {
  const liveos = join(dir, 'LiveOS');
  const disk = await FileDisk.open(join(liveos, 'squashfs.img'));
  try {
    const base = new SquashfsFileSystem(await SquashfsReader.open(disk), disk.size);
    const upper = join(liveos, OVERLAY);
    if (!withUpper) return await manifest(base);
    if (!existsSync(upper) || !existsSync(join(liveos, 'ovlwork'))) return undefined;
    return await manifest(new OverlayFileSystem({ upper: { fs: new HostFileSystem(upper), root: '/' }, lowers: [{ fs: base, root: '/' }] }));
  } finally {
    await disk.close();
  }
}

function leftovers(dir: string): string[] {
  return readdirSync(join(dir, 'LiveOS')).filter((n) => n.includes('.livestick-') || n.includes('journal'));
}

describe('overlayfs: fault injection at every file operation', { skip: canMount ? false : 'needs root and overlayfs in the host kernel' }, () => {
  const tmp = tempDir('livestick-ovlfaults-');
  const template = join(tmp.dir, 'template');
  let n = 0;
  let expected: string[];
  let bare: string[];
  let cases = 0;
  const fresh = (): string => {
    const dir = join(tmp.dir, `c${n++}`);
    execFileSync('cp', ['-a', template, dir]);
    return dir;
  };
  const dispose = (dir: string) => rmSync(dir, { recursive: true, force: true });

  before(async () => {
    const lower = join(tmp.dir, 'lower');
    for (const d of ['usr/bin', 'usr/lib', 'etc/skel', 'proc']) mkdirSync(join(lower, d), { recursive: true });
    for (let i = 0; i < 6; i++) writeFileSync(join(lower, 'usr/lib', `lib${i}.so`), Buffer.alloc(40_000 + i, i + 1));
    writeFileSync(join(lower, 'usr/bin/tool'), 'tool v1\n');
    writeFileSync(join(lower, 'etc/skel/.bashrc'), 'rc\n');
    const liveos = join(template, 'LiveOS');
    mkdirSync(join(liveos, OVERLAY), { recursive: true });
    mkdirSync(join(liveos, 'ovlwork'));
    await writeSquashfs(lower, join(liveos, 'squashfs.img'), { compressor: 'gzip', threads: 0, mkfsTime: 1_700_000_000 });
    const mnt = join(tmp.dir, 'mnt');
    mkdirSync(mnt);
    execFileSync('mount', ['-t', 'overlay', 'x', '-o', `lowerdir=${lower},upperdir=${join(liveos, OVERLAY)},workdir=${join(liveos, 'ovlwork')}`, mnt]);
    try {
      writeFileSync(join(mnt, 'usr/bin/tool'), 'tool v2\n');
      writeFileSync(join(mnt, 'usr/bin/new'), Buffer.alloc(70_000, 9));
      rmSync(join(mnt, 'usr/lib/lib0.so'));
      rmSync(join(mnt, 'etc/skel'), { recursive: true });
    } finally {
      execFileSync('umount', [mnt]);
    }
    expected = (await bootView(template))!;
    bare = (await bootView(template, false))!;
  });
  after(() => {
    tmp.cleanup();
    console.log(`# overlayfs fault injection: ${cases} cases`);
  });

  async function safeNowAndCleanAfter(dir: string, accepted: string[][], where: string): Promise<void> {
    const now = await bootView(dir);
    if (now === undefined) assert.ok(leftovers(dir).some((l) => l.includes('journal')), `${where}: no upper only while a journal exists`);
    else assert.ok(accepted.some((e) => JSON.stringify(e) === JSON.stringify(now)), `${where}: a boot right away sees the user's tree`);
    await overlayfsStatus(dir);
    assert.deepEqual(leftovers(dir), [], `${where}: after the next command, no journal and no leftovers`);
    const after = await bootView(dir);
    assert.ok(after !== undefined && accepted.some((e) => JSON.stringify(e) === JSON.stringify(after)), `${where}: after the next command, exactly the tree from before`);
  }

  const runs: [string, (dir: string) => Promise<unknown>, () => string[][]][] = [
    ['merge', (dir: string) => mergeOverlayfs(dir, { threads: 0, mkfsTime: 1_760_000_000 }), () => [expected]],
    ['reset', (dir: string) => resetOverlayfs(dir), () => [expected, bare]],
  ];
  for (const [name, run, accepted] of runs) {
    test(`${name}: an errno or a crash at every point`, async () => {
      const probe = fresh();
      const { points } = await tracePoints(() => run(probe));
      dispose(probe);
      assert.ok(points.length >= 10, `${name} reaches ${points.length} fault points`);
      // The first write of the journal (a read of it, to see whether recovery is needed, may come earlier).
      const journalAt = points.find((p) => p.op === 'create' && p.path.includes('livestick-overlayfs-journal.json'))?.index ?? -1;
      assert.ok(journalAt > 0, `${name} writes a journal`);
      for (const p of points) {
        // Every point gets one errno and a crash; the switch's points (from the journal on) get every errno.
        const errnos = p.index >= journalAt ? ERRNOS : [ERRNOS[p.index % ERRNOS.length]!];
        for (const action of [...errnos, 'crash']) {
          const dir = fresh();
          const r = await withFaultPlan((q) => (q.index === p.index ? action : undefined), () => run(dir));
          cases++;
          const where = `${name}, ${action} at point ${p.index} (${p.op} ${p.path})`;
          if (action !== 'crash' && r.error !== undefined) {
            assert.ok(r.error instanceof LivestickError && !(r.error instanceof SimulatedCrash), `${where}: a typed error, got ${String(r.error)}`);
          }
          await safeNowAndCleanAfter(dir, accepted(), where);
          dispose(dir);
        }
      }
    });
  }
});
