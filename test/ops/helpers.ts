import { createHash } from 'node:crypto';
import assert from 'node:assert/strict';
import { cpSync, existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { Ext4 } from '../../src/fs/ext4/index.ts';
import { readAt } from '../../src/io/disk.ts';
import { locateMedium, openMedium, openMediumFile } from '../../src/ops/medium.ts';
import { openMediumRoot } from '../../src/ops/root.ts';
import { ExceptionStore, SnapshotDisk, sameBase } from '../../src/xform/dmsnap/index.ts';
import { bindingFor } from '../../src/ops/overlay.ts';
import { applyPackageUpdate, buildSampleMedium } from '../../src/ops/sample.ts';

/** path → "kind mode uid gid size sha|target" for every entry of the tree. */
export async function digestTree(fs: Ext4): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const walk = async (dir: string): Promise<void> => {
    for (const e of await fs.readdir(dir)) {
      if (e.name === '.' || e.name === '..') continue;
      const path = dir === '/' ? `/${e.name}` : `${dir}/${e.name}`;
      const st = await fs.stat(path);
      let body = '';
      if (st.kind === 'file') body = createHash('sha256').update(await fs.readFile(path)).digest('hex');
      else if (st.kind === 'symlink') body = await fs.readlink(path);
      out.set(path, `${st.kind} ${st.mode.toString(8)} ${st.uid} ${st.gid} ${st.size} ${st.nlink} ${body}`);
      if (st.kind === 'dir') await walk(path);
    }
  };
  await walk('/');
  return out;
}

/** The tree a boot of the medium would see (base + overlay), or the base alone. */
export async function mediumView(dir: string, options: { overlay?: boolean } = {}): Promise<Map<string, string>> {
  const root = await openMediumRoot(dir);
  const medium = await openMedium(await locateMedium(root)).catch(async (err: unknown) => {
    await root.close();
    throw err;
  });
  try {
    if (options.overlay === false || medium.overlayPath === undefined) return await digestTree(await Ext4.open(medium.rootDisk));
    const ov = await openMediumFile(medium.root, medium.overlayPath, 'read');
    try {
      return await digestTree(await Ext4.open(new SnapshotDisk(medium.rootDisk, await ExceptionStore.open(ov), { readOnly: true })));
    } finally {
      await ov.close();
    }
  } finally {
    await medium.close();
    await root.close();
  }
}

/** Blocks free in the base's filesystem that are not all zero (merge must leave none). */
export async function nonZeroFreeBlocks(dir: string): Promise<number> {
  const medium = await openMedium(await locateMedium(dir));
  try {
    const fs = await Ext4.open(medium.rootDisk);
    const { buildBlockMap } = await import('../../src/fs/ext4/index.ts');
    const map = await buildBlockMap(fs);
    let bad = 0;
    for (let b = map.firstDataBlock; b < map.blocksCount; b++) {
      if (map.isUsed(b)) continue;
      const data = await readAt(medium.rootDisk, b * map.blockSize, map.blockSize);
      if (data.some((x) => x !== 0)) bad++;
    }
    return bad;
  } finally {
    await medium.close();
  }
}

let template: string | undefined;

/** A sample medium after two package updates (built once per process, copied per test). */
export async function updatedSample(into: string): Promise<string> {
  if (template === undefined || !existsSync(template)) {
    const t = join(into, '..', `template-${process.pid}`);
    await buildSampleMedium(t);
    await applyPackageUpdate(t, 1);
    await applyPackageUpdate(t, 2);
    template = t;
  }
  cpSync(template, into, { recursive: true });
  return into;
}

export function liveosFiles(dir: string): string[] {
  return readdirSync(join(dir, 'LiveOS')).sort();
}

/**
 * What a boot would find right now (no recovery run), asserting it is safe: a base always, and an
 * overlay only over the base it belongs to ('pair'); no overlay only mid-switch, with a journal.
 */
export async function bootFinds(dir: string): Promise<'pair' | 'no-overlay'> {
  const root = await openMediumRoot(dir);
  try {
    const names = (await root.fs.readdir('/LiveOS')).map((e) => e.name);
    assert.ok(names.includes('squashfs.img'), 'the base is never missing');
    const overlays = names.filter((n) => n.startsWith('overlay-') && !n.includes('.livestick-'));
    if (overlays.length === 0) {
      assert.ok(names.includes('livestick-journal.json'), 'an overlay is only ever missing mid-switch, with a journal');
      return 'no-overlay';
    }
    const medium = await openMedium(await locateMedium(root));
    const ov = await openMediumFile(medium.root, medium.overlayPath as string, 'read');
    try {
      const store = await ExceptionStore.open(ov);
      assert.equal(store.valid, true, 'the overlay a boot finds is valid');
      assert.equal(store.binding.state, 'bound');
      if (store.binding.state === 'bound') {
        assert.ok(sameBase(store.binding.binding, await bindingFor(medium.rootDisk, medium.rootImage)), 'an overlay is never paired with a base it does not belong to');
      }
      return 'pair';
    } finally {
      await ov.close();
      await medium.close();
    }
  } finally {
    await root.close();
  }
}
