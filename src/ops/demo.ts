/**
 * The demo: a generated sample showing the overlay engine end to end, printed as a newcomer would want
 * to read it. (Later rounds grow it into the whole live-medium story: status, merge, reset.)
 */
import { mkdir, mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { FileDisk, readAt } from '../io/disk.ts';
import { formatSize } from '../io/bytes.ts';
import { createOverlay, exportCombined, inspectOverlay, openCombined, resetOverlay, type OverlayInfo } from './overlay.ts';

export interface DemoStep {
  title: string;
  detail: string;
}

export interface DemoResult {
  dir: string;
  steps: DemoStep[];
  overlay: OverlayInfo;
  verified: boolean;
}

const MiB = 2 ** 20;

function sampleBase(size: number): Uint8Array {
  // Text-like, compressible, recognisable content: numbered lines.
  const enc = new TextEncoder();
  const out = new Uint8Array(size);
  let at = 0;
  for (let line = 0; at < size; line++) {
    const bytes = enc.encode(`base image line ${line.toString().padStart(8, '0')}: the read-only live system\n`);
    out.set(bytes.subarray(0, Math.min(bytes.byteLength, size - at)), at);
    at += bytes.byteLength;
  }
  return out;
}

export async function runDemo(options: { dir?: string; log?: (step: DemoStep) => void } = {}): Promise<DemoResult> {
  const dir = options.dir ?? (await mkdtemp(join(tmpdir(), 'livestick-demo-')));
  await mkdir(join(dir, 'LiveOS'), { recursive: true });
  const steps: DemoStep[] = [];
  const say = (title: string, detail: string) => {
    const step = { title, detail };
    steps.push(step);
    options.log?.(step);
  };
  const basePath = join(dir, 'LiveOS', 'rootfs.img');
  const overlayPath = join(dir, 'LiveOS', 'overlay-DEMO-1234-5678');
  const base = sampleBase(32 * MiB);
  await writeFile(basePath, base);
  say('sample base image', `${basePath} (${formatSize(base.byteLength)}), read-only, like LiveOS/rootfs.img inside squashfs.img`);

  let info = await createOverlay(overlayPath, { size: 8 * MiB, chunkSectors: 8, basePath });
  say('new overlay', `${overlayPath}: ${formatSize(info.sizeBytes)}, ${formatSize(info.chunkSize)} chunks (as dracut makes them), bound to its base; dmsetup would report ${info.dmStatus}`);

  const expected = base.slice();
  const combined = await openCombined(basePath, overlayPath, { writable: true });
  try {
    const enc = new TextEncoder();
    const writes: [number, Uint8Array][] = [
      [5 * MiB + 100, enc.encode('a package update rewrote this line\n'.repeat(300))],
      [20 * MiB, new Uint8Array(2 * MiB).fill(0x55)],
      [31 * MiB + 4000, enc.encode('a new file near the end of the device\n'.repeat(50))],
    ];
    for (const [at, data] of writes) {
      await combined.device.write(data, at);
      expected.set(data, at);
    }
    await combined.device.flush();
    info = combined.info();
    say('writes through the overlay', `${writes.length} writes (${formatSize(writes.reduce((n, [, d]) => n + d.byteLength, 0))}) copied ${info.exceptions} chunks into the overlay, each on first touch; the base is untouched`);
  } finally {
    await combined.close();
  }

  info = await inspectOverlay(overlayPath, { basePath });
  say('overlay info', `${info.exceptions} exceptions, ${formatSize(info.usedBytes)} used of ${formatSize(info.sizeBytes)} (${(info.fill * 100).toFixed(1)}%), dmsetup status figures ${info.dmStatus}, base ${info.baseMatches ? 'matches' : 'DOES NOT match'}`);

  const outPath = join(dir, 'combined.img');
  await exportCombined(basePath, overlayPath, outPath);
  const out = await FileDisk.open(outPath, { readOnly: true });
  const got = await readAt(out, 0, out.size);
  await out.close();
  const digest = (b: Uint8Array) => createHash('sha256').update(b).digest('hex').slice(0, 16);
  const verified = digest(got) === digest(expected);
  say('export', `the combined device (base + overlay) written to ${outPath}: sha256 ${digest(got)}…, ${verified ? 'identical to' : 'DIFFERENT from'} the base with the writes applied`);

  const reset = await resetOverlay(overlayPath);
  say('reset', `overlay emptied: ${reset.exceptions} exceptions, binding kept (${reset.bound ? 'bound' : 'unbound'}); size and chunk size unchanged`);
  return { dir, steps, overlay: info, verified };
}
