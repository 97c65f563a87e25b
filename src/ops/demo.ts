/**
 * The demo: a sample live medium built in userspace, changed through the overlay the way package
 * updates change it, then `status`, `merge` and `status` again — what a newcomer needs to see.
 */
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { formatSize } from '../io/bytes.ts';
import { Ext4 } from '../fs/ext4/index.ts';
import { ExceptionStore, SnapshotDisk } from '../xform/dmsnap/index.ts';
import { applyPackageUpdate, buildSampleMedium } from './sample.ts';
import { mediumStatus, type StatusReport } from './status.ts';
import { mergeMedium, type MergeResult } from './merge.ts';
import { locateMedium, openMedium, openMediumFile } from './medium.ts';

export interface DemoStep {
  title: string;
  detail: string;
}

export interface DemoResult {
  dir: string;
  steps: DemoStep[];
  before: StatusReport;
  merge: MergeResult;
  after: StatusReport;
  verified: boolean;
}

/** Reads a file through base + overlay (what the booted system sees). */
async function readThroughOverlay(dir: string, path: string): Promise<Uint8Array> {
  const medium = await openMedium(await locateMedium(dir));
  const ov = await openMediumFile(medium.root, medium.overlayPath as string, 'read');
  try {
    const fs = await Ext4.open(new SnapshotDisk(medium.rootDisk, await ExceptionStore.open(ov), { readOnly: true }));
    return await fs.readFile(path);
  } finally {
    await ov.close();
    await medium.close();
  }
}

export async function runDemo(options: { dir?: string; log?: (step: DemoStep) => void } = {}): Promise<DemoResult> {
  const dir = options.dir ?? (await mkdtemp(join(tmpdir(), 'livestick-demo-')));
  const steps: DemoStep[] = [];
  const say = (title: string, detail: string) => {
    const step = { title, detail };
    steps.push(step);
    options.log?.(step);
  };
  const sample = await buildSampleMedium(dir);
  say('a sample live medium', `${dir}/LiveOS/squashfs.img holds LiveOS/rootfs.img (a 96 MiB ext4 root filesystem), and ${sample.overlayPath} is its persistence overlay (48 MiB, 4 KiB chunks, as dracut uses) — all made in userspace`);

  const u1 = await applyPackageUpdate(dir, 1);
  const u2 = await applyPackageUpdate(dir, 2);
  say('two package updates, through the overlay', `installed ${u1.added[0]} then ${u2.added[0]} (removing the kernel before each), rewrote ${u1.rewritten.length + u2.rewritten.length} files, deleted ${u1.deleted.length + u2.deleted.length}; every changed block was copied into the overlay first, as the kernel's dm-snapshot does`);

  const before = await mediumStatus(dir, { top: 5 });
  const o = before.overlay;
  say(
    'livestick status',
    `overlay ${formatSize(o.usedBytes)} used of ${formatSize(o.sizeBytes)} (${(o.fill * 100).toFixed(1)}%). Where it went: files ${formatSize(before.usage.files)} (largest: ${before.topFiles
      .slice(0, 3)
      .map((f) => `${f.path} ${formatSize(f.bytes)}`)
      .join(', ')}), metadata ${formatSize(before.usage.metadata)}, and ${formatSize(before.usage.reclaimable)} reclaimable — chunks copied for files that were deleted since, which the overlay can never give back by itself`,
  );

  const osRelease = new TextDecoder().decode(await readThroughOverlay(dir, '/etc/os-release'));
  const merge = await mergeMedium(dir, {});
  say(
    'livestick merge',
    `new base ${formatSize(merge.newBaseBytes)} (was ${formatSize(merge.oldBaseBytes)}): ${formatSize(merge.overlayBytesMerged)} of overlay folded in, ${formatSize(merge.freeBytesDropped)} of deleted data dropped, ${merge.blocks.carried} of ${merge.blocks.total} compressed blocks carried over without recompressing; verified, then switched crash-safely (journal on the medium)`,
  );

  const after = await mediumStatus(dir, { top: 5 });
  const verified = after.overlay.exceptions === 0 && after.overlay.baseMatches === true && new TextDecoder().decode(await readThroughOverlay(dir, '/etc/os-release')) === osRelease;
  say('livestick status, again', `overlay ${formatSize(after.overlay.usedBytes)} used (${(after.overlay.fill * 100).toFixed(1)}%), bound to the new base; the updates live in the base now (/etc/os-release reads the same: ${verified ? 'yes' : 'NO'})`);
  return { dir, steps, before, merge, after, verified };
}
