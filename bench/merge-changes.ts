/** Helper of merge.bench.ts: an overlay on MEDIUM holding about MIB MiB of changes (new, rewritten, deleted). */
import { join } from 'node:path';

import { FileDisk } from '../src/io/disk.ts';
import { Ext4 } from '../src/fs/ext4/index.ts';
import { Ext4Writer } from '../src/fs/ext4/writer.ts';
import { ExceptionStore, SnapshotDisk } from '../src/xform/dmsnap/index.ts';
import { locateMedium, openMedium } from '../src/ops/medium.ts';
import { bindingFor } from '../src/ops/overlay.ts';
import { pseudoBinary } from '../src/ops/sample.ts';

const [dir, mibText, churnText] = process.argv.slice(2) as [string, string, string | undefined];
const mib = Number(mibText);
// Updates that rewrite the same files several times (as repeated package upgrades do) leave the earlier
// copies behind as copied-but-free chunks.
const churn = Math.max(1, Number(churnText ?? 1));
const medium = await openMedium(await locateMedium(dir));
const overlayPath = join(medium.liveos, 'overlay-BENCH-0000-0001');
const ov = await FileDisk.open(overlayPath, { create: { size: Math.max(64, Math.ceil(mib * churn * 1.6) + 64) * 2 ** 20 } });
const store = await ExceptionStore.format(ov, 8, await bindingFor(medium.rootDisk, medium.rootImage));
const combined = new SnapshotDisk(medium.rootDisk, store);
const fs = await Ext4.open(combined);
const w = await Ext4Writer.open(fs);
await w.mkdir('/bench-new', { mode: 0o755 });
// Two thirds stay, one third is written then deleted (copied chunks that end up free).
const files = Math.max(3, Math.round(mib / 8));
// Like rpm: the new version is written beside the old one, then the old one goes.
for (let round = 0; round < churn; round++) {
  for (let i = 0; i < files; i++) {
    await w.writeFile(`/bench-new/f${i}.${round}`, pseudoBinary(i + 1 + round * 100_003, 8 * 2 ** 20), { mode: 0o644 });
    if (round > 0) await w.unlink(`/bench-new/f${i}.${round - 1}`);
  }
}
for (let i = 0; i < files; i += 3) await w.unlink(`/bench-new/f${i}.${churn - 1}`);
// Delete some of the base's files too (their space is dropped by the merge).
let deleted = 0;
const walk = async (d: string): Promise<void> => {
  for (const e of await fs.readdir(d)) {
    if (deleted >= mib * 2 ** 19 || e.name === '.' || e.name === '..') continue;
    const p = `${d}/${e.name}`;
    const st = await fs.stat(p);
    if (st.kind === 'dir') await walk(p);
    else if (st.kind === 'file' && st.size > 65536) {
      await w.unlink(p);
      deleted += st.size;
    }
  }
};
await walk('/usr/share');
await w.close();
await combined.flush();
await ov.close();
await medium.close();
