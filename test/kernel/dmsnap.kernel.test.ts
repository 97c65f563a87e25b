/**
 * dm-snapshot against the real kernel (Debian's, under qemu). Both directions, several metadata areas,
 * 4 KiB and 8 KiB chunks, P and PO:
 *  (a) the kernel writes through `dmsetup create … snapshot BASE OVERLAY P|PO N`; after a fresh reload
 *      its combined device and `dmsetup status` equal livestick's reading of the same overlay file;
 *  (b) livestick writes; the kernel loads the overlay and reads the identical combined device, with
 *      identical status figures, and can go on writing to it.
 * Overflow: the kernel's PO overflow and P invalidation are read back by livestick, and livestick's own
 * P invalidation is seen as "Invalid" by the kernel.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { FileDisk, readAt } from '../../src/io/disk.ts';
import { ExceptionStore, OverlayFullError, SnapshotDisk, SnapshotInvalidError } from '../../src/xform/dmsnap/index.ts';
import { tempDir } from '../helpers/tmp.ts';
import { ensureKernel, kernelHarnessStatus, runInKernel } from './harness.ts';
import { xorshift } from '../helpers/random.ts';

const MiB = 2 ** 20;
const BASE_SIZE = 12 * MiB + 3 * 512; // not a multiple of any chunk size
const PAYLOAD_SIZE = 2 * MiB;

function prng(seed: number): () => number {
  return xorshift(seed);
}

function bytes(seed: number, n: number): Buffer {
  const r = prng(seed);
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i += 4) b.writeUInt32LE(Math.floor(r() * 2 ** 32), i);
  return b;
}

interface Op {
  /** all in 512-byte sectors */
  seek: number;
  count: number;
  skip: number;
}

/** Writes covering most of the base: single sectors (partial chunks), pages, runs across chunks, the end. */
function plan(seed: number, n: number): Op[] {
  const r = prng(seed);
  const sectors = BASE_SIZE / 512;
  const ops: Op[] = [];
  for (let i = 0; i < n; i++) {
    const kind = r();
    const count = kind < 0.3 ? 1 : kind < 0.6 ? 8 : kind < 0.9 ? 64 + Math.floor(r() * 64) : 256;
    const seek = Math.floor(r() * (sectors - count));
    ops.push({ seek, count, skip: Math.floor(r() * (PAYLOAD_SIZE / 512 - count)) });
  }
  // Ten 1 MiB sweeps, so that even 8 KiB chunks fill more than two metadata areas.
  for (let i = 0; i < 10; i++) ops.splice(Math.floor(r() * ops.length), 0, { seek: i * 2400, count: 2048, skip: Math.floor(r() * 1024) });
  ops.push({ seek: sectors - 3, count: 3, skip: 17 }); // the partial last chunk
  return ops;
}

function applyPlan(target: Buffer, payload: Buffer, ops: Op[]): void {
  for (const o of ops) payload.copy(target, o.seek * 512, o.skip * 512, (o.skip + o.count) * 512);
}

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

async function livestickView(basePath: string, overlayPath: string, chunkSectorsIfNew = 8) {
  const base = await FileDisk.open(basePath, { readOnly: true });
  const ov = await FileDisk.open(overlayPath, { readOnly: true });
  try {
    const store = await ExceptionStore.open(ov, { chunkSectorsIfNew });
    if (!store.valid) return { valid: false as const, status: 'Invalid', sha: '' };
    const st = store.status();
    const dev = new SnapshotDisk(base, store, { readOnly: true });
    return { valid: true as const, status: `${st.allocatedSectors}/${st.totalSectors} ${st.metadataSectors}`, sha: sha(await readAt(dev, 0, dev.size)), exceptions: store.exceptionCount };
  } finally {
    await ov.close();
    await base.close();
  }
}

interface Scenario {
  name: string;
  overlaySize: number;
  type: 'P' | 'PO';
  chunk: number;
  ops: Op[];
}

/** Guest script: for each scenario on its own disk, create, run the dd plan, reload, report status and hash. */
function guestScript(scenarios: Scenario[], firstOverlayDisk: number, kernelWrites: boolean): string {
  const lines = ['B=/dev/vdb', 'P=/dev/vdc', 'SZ=$(blockdev --getsz $B)'];
  scenarios.forEach((s, i) => {
    const ov = `/dev/vd${String.fromCharCode('a'.charCodeAt(0) + firstOverlayDisk + i)}`;
    const table = `0 $SZ snapshot $B ${ov} ${s.type} ${s.chunk}`;
    lines.push(`echo "${table}" | dmsetup create s || echo "@@${s.name} create-failed"`);
    if (kernelWrites) {
      for (const o of s.ops) lines.push(`dd if=$P of=/dev/mapper/s bs=512 skip=${o.skip} seek=${o.seek} count=${o.count} 2>/dev/null`);
      lines.push('sync', `echo "@@${s.name} live $(dmsetup status s)"`, 'dmsetup remove s', `echo "${table}" | dmsetup create s`);
    }
    lines.push(`echo "@@${s.name} loaded $(dmsetup status s)"`);
    lines.push(`if dmsetup status s | grep -q Invalid; then echo "@@${s.name} sha -"; else echo "@@${s.name} sha $(sha256sum /dev/mapper/s | cut -d' ' -f1)"; fi`);
    lines.push('dmsetup remove s');
  });
  lines.push('sync');
  return lines.join('\n');
}

function parseReport(output: string): Map<string, Record<string, string>> {
  const out = new Map<string, Record<string, string>>();
  for (const m of output.matchAll(/^@@(\S+) (\S+) ?(.*)$/gm)) {
    const rec = out.get(m[1] as string) ?? {};
    rec[m[2] as string] = (m[3] ?? '').trim();
    out.set(m[1] as string, rec);
  }
  return out;
}

/** "0 12291 snapshot 1234/12288 24" → "1234/12288 24" */
const figures = (status: string | undefined) => status?.replace(/^\d+ \d+ snapshot /, '') ?? '(missing)';

describe('dm-snapshot against the Linux kernel', { skip: kernelHarnessStatus() }, () => {
  const tmp = tempDir('livestick-kernel-dmsnap-');
  const basePath = join(tmp.dir, 'base.img');
  const payloadPath = join(tmp.dir, 'payload.img');
  const baseBytes = bytes(11, BASE_SIZE);
  const payload = bytes(12, PAYLOAD_SIZE);

  before(async () => {
    writeFileSync(basePath, baseBytes);
    writeFileSync(payloadPath, payload);
    await ensureKernel();
  });
  after(() => tmp.cleanup());

  test('(a) the kernel writes, livestick reads the identical device and status', async () => {
    const scenarios: Scenario[] = [
      { name: 'c8-P', overlaySize: 16 * MiB, type: 'P', chunk: 8, ops: plan(1, 160) },
      { name: 'c16-PO', overlaySize: 16 * MiB, type: 'PO', chunk: 16, ops: plan(2, 160) },
      { name: 'c8-PO-overflow', overlaySize: 1 * MiB, type: 'PO', chunk: 8, ops: plan(3, 120) },
      { name: 'c8-P-overflow', overlaySize: 1 * MiB, type: 'P', chunk: 8, ops: plan(4, 120) },
    ];
    const paths = scenarios.map((s) => {
      const p = join(tmp.dir, `k-${s.name}.cow`);
      writeFileSync(p, Buffer.alloc(s.overlaySize));
      return p;
    });
    const r = await runInKernel({ script: guestScript(scenarios, 3, true), disks: [{ path: basePath, readOnly: true }, { path: payloadPath, readOnly: true }, ...paths.map((path) => ({ path }))], timeoutMs: 240_000 });
    assert.equal(r.status, 0, r.output);
    const report = parseReport(r.output);
    for (const [i, s] of scenarios.entries()) {
      const k = report.get(s.name);
      assert.ok(k, `no report for ${s.name}:\n${r.output}`);
      const ours = await livestickView(basePath, paths[i] as string);
      if (s.name.endsWith('P-overflow') && s.type === 'P') {
        assert.match(k.loaded ?? '', /Invalid/, `${s.name}: the kernel should have invalidated it`);
        assert.equal(ours.valid, false, `${s.name}: livestick must report the invalidated snapshot`);
        continue;
      }
      assert.equal(ours.status, figures(k.loaded), `${s.name}: status after reload`);
      assert.equal(ours.sha, k.sha, `${s.name}: combined device`);
      if (!s.name.includes('overflow')) {
        const expected = Buffer.from(baseBytes);
        applyPlan(expected, payload, s.ops);
        assert.equal(ours.sha, sha(expected), `${s.name}: the device holds exactly the writes`);
        assert.equal(figures(k.live), ours.status, `${s.name}: live status equals livestick's`);
        const epa = (s.chunk * 512) / 16;
        assert.ok((ours.exceptions ?? 0) > 2 * epa, `${s.name}: should span at least three metadata areas (${ours.exceptions} exceptions)`);
      } else {
        assert.match(k.live ?? '', /Overflow/, `${s.name}: the kernel reports the PO overflow`);
      }
    }
  });

  test('(b) livestick writes, the kernel reads the identical device and status, and goes on writing', async () => {
    const cases = [
      { name: 'l8-P', chunk: 8, type: 'P' as const, size: 16 * MiB, seed: 21, fromZero: false },
      { name: 'l16-PO', chunk: 16, type: 'PO' as const, size: 16 * MiB, seed: 22, fromZero: false },
      { name: 'l8-zero', chunk: 8, type: 'PO' as const, size: 16 * MiB, seed: 23, fromZero: true },
      { name: 'l8-invalid', chunk: 8, type: 'P' as const, size: 1 * MiB, seed: 24, fromZero: false },
    ];
    const expectations = new Map<string, { sha: string; status: string; expected: Buffer }>();
    const paths: string[] = [];
    for (const c of cases) {
      const path = join(tmp.dir, `l-${c.name}.cow`);
      paths.push(path);
      const ovDisk = await FileDisk.open(path, { create: { size: c.size } });
      const base = await FileDisk.open(basePath, { readOnly: true });
      const store = c.fromZero ? await ExceptionStore.open(ovDisk, { chunkSectorsIfNew: c.chunk }) : await ExceptionStore.format(ovDisk, c.chunk);
      const dev = new SnapshotDisk(base, store, { mode: c.type });
      const expected = Buffer.from(baseBytes);
      const ops = plan(c.seed, c.name === 'l8-invalid' ? 200 : 180);
      try {
        for (const [i, o] of ops.entries()) {
          const data = payload.subarray(o.skip * 512, (o.skip + o.count) * 512);
          // Unaligned byte offsets too: shift every third write by a few bytes.
          const shift = i % 3 === 0 ? Math.min(37, BASE_SIZE - (o.seek * 512 + data.length)) : 0;
          await dev.write(data, o.seek * 512 + shift);
          data.copy(expected, o.seek * 512 + shift);
          if (i % 40 === 39) await dev.flush();
        }
        await dev.flush();
      } catch (err) {
        assert.equal(c.name, 'l8-invalid', String(err));
        assert.ok(err instanceof SnapshotInvalidError || err instanceof OverlayFullError);
      }
      await ovDisk.close();
      await base.close();
      const view = await livestickView(basePath, path);
      if (c.name !== 'l8-invalid') {
        assert.equal(view.sha, sha(expected), `${c.name}: livestick reads back its own writes`);
        assert.ok((view.exceptions ?? 0) > (2 * c.chunk * 512) / 16, `${c.name}: should span at least three metadata areas (${view.exceptions})`);
      }
      expectations.set(c.name, { sha: view.sha, status: view.status, expected });
    }
    // The kernel loads each overlay (reporting status and hash), then writes a few more chunks to the
    // first one, which livestick must read back too.
    const scenarios: Scenario[] = cases.map((c) => ({ name: c.name, overlaySize: c.size, type: c.type, chunk: c.chunk, ops: [] }));
    const extra = plan(31, 40);
    let script = guestScript(scenarios, 3, false);
    script += `\necho "0 $SZ snapshot $B /dev/vdd P 8" | dmsetup create t\n`;
    script += extra.map((o) => `dd if=$P of=/dev/mapper/t bs=512 skip=${o.skip} seek=${o.seek} count=${o.count} 2>/dev/null`).join('\n');
    script += '\nsync\necho "@@continued live $(dmsetup status t)"\ndmsetup remove t\nsync\n';
    const before = join(tmp.dir, 'l8-P.before');
    copyFileSync(paths[0] as string, before);
    const r = await runInKernel({ script, disks: [{ path: basePath, readOnly: true }, { path: payloadPath, readOnly: true }, ...paths.map((path) => ({ path }))], timeoutMs: 240_000 });
    assert.equal(r.status, 0, r.output);
    const report = parseReport(r.output);
    for (const c of cases) {
      const k = report.get(c.name);
      const e = expectations.get(c.name);
      assert.ok(k && e, `no report for ${c.name}:\n${r.output}`);
      if (c.name === 'l8-invalid') {
        assert.equal(e.status, 'Invalid');
        assert.match(k.loaded ?? '', /Invalid/, 'the kernel sees livestick\'s invalidation');
        continue;
      }
      assert.equal(figures(k.loaded), e.status, `${c.name}: status`);
      assert.equal(k.sha, e.sha, `${c.name}: combined device`);
    }
    const continued = await livestickView(basePath, paths[0] as string);
    const expected = Buffer.from((expectations.get('l8-P') as { expected: Buffer }).expected);
    applyPlan(expected, payload, extra);
    assert.equal(continued.sha, sha(expected), 'livestick reads what the kernel appended to its overlay');
    assert.equal(continued.status, figures(report.get('continued')?.live));
    assert.notEqual(sha(readFileSync(before)), sha(readFileSync(paths[0] as string)));
  });
});
