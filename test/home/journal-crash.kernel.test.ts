/**
 * `home import` through the jbd2 journal, killed (SIGKILL) at every commit step, for a plain and a
 * LUKS2 home. Each crashed image is then judged WITHOUT livestick's recovery:
 *  - on the host: the filesystem (the LUKS payload decrypted to a file) gets `e2fsck -fy` (which
 *    replays the journal and must repair nothing else), then `e2fsck -fn` must be clean, and the
 *    tree read by our reader must be exactly the tree before or exactly the tree after the import;
 *  - in ONE qemu boot, Debian's kernel mounts every crashed image (dm-crypt for the LUKS ones), so
 *    jbd2 replays what it finds; the listing (mode, owner, size, content hash of every node) must
 *    equal the listing of the untouched image or of the finished import; then e2fsck -fn in the
 *    guest must find it clean.
 * livestick's own recovery (any home command, on another copy) must reach the tree e2fsck reached.
 */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, openSync, closeSync, writeSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createHome, homeImport, homeList } from '../../src/ops/home.ts';
import { FileDisk } from '../../src/io/disk.ts';
import { LuksVolume } from '../../src/xform/luks/index.ts';
import { Ext4 } from '../../src/fs/ext4/fs.ts';
import { COMMIT_STEPS, type CommitStep } from '../../src/fs/ext4/jbd2/index.ts';
import { tempDir } from '../helpers/tmp.ts';
import { missingTools, run } from '../helpers/tools.ts';
import { ensureKernel, kernelHarnessStatus, runInKernel } from '../kernel/harness.ts';
import { guestClose, guestOpen, parseGuestResults, RESULT_PREFIX } from '../luks/kernel-job.ts';
import { access, enc, makeTree } from './helpers.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const MiB = 1 << 20;
const KDF = { type: 'pbkdf2', iterations: 1000 } as const;
const PASS = 'crash pass';
const LUKS_STEPS: CommitStep[] = ['logging', 'committed', 'flagged', 'started', 'checkpointing', 'emptied'];

function importKilledAt(image: string, src: string, step: CommitStep | undefined, passFile: string | undefined): void {
  const env = { ...process.env, LIVESTICK_TEST_JOURNAL_CRASH: step ?? '' };
  const args = ['--import', 'tsx', join(root, 'src/cli/main.ts'), 'home', 'import', image, src, '/new', ...(passFile ? ['--passphrase-file', passFile] : [])];
  const r = spawnSync(process.execPath, args, { cwd: root, env, encoding: 'utf8' });
  if (step === undefined) assert.equal(r.status, 0, r.stderr);
  else assert.equal(r.signal, 'SIGKILL', `killed at ${step}: ${r.stderr}`);
}

/** The filesystem of a home image as a plain file, decrypted when needed, with no recovery of any kind. */
async function rawFilesystem(image: string, out: string, encrypted: boolean): Promise<void> {
  if (!encrypted) {
    copyFileSync(image, out);
    return;
  }
  const file = await FileDisk.open(image, { readOnly: true });
  const payload = await (await LuksVolume.open(file)).openPayload(enc(PASS), { readOnly: true });
  const fd = openSync(out, 'w');
  try {
    const buf = new Uint8Array(MiB);
    for (let at = 0; at < payload.size; at += MiB) {
      const n = Math.min(MiB, payload.size - at);
      await payload.read(buf.subarray(0, n), at);
      writeSync(fd, buf, 0, n, at);
    }
  } finally {
    closeSync(fd);
    await payload.close();
    await file.close();
  }
}

/** path → kind, mode, owner, size, content, read by our reader (strict checksums). */
async function treeOf(fsImage: string): Promise<string[]> {
  const disk = await FileDisk.open(fsImage, { readOnly: true });
  try {
    const fs = await Ext4.open(disk, { strict: true });
    const out: string[] = [];
    const walk = async (path: string): Promise<void> => {
      for (const e of (await fs.readdir(path)).sort((a, b) => (a.name < b.name ? -1 : 1))) {
        if (e.name === '.' || e.name === '..') continue;
        const p = `${path === '/' ? '' : path}/${e.name}`;
        const st = await fs.stat(p);
        let content = '';
        if (st.kind === 'file') {
          const parts: Buffer[] = [];
          for await (const piece of fs.stream(p)) parts.push(Buffer.from(piece));
          content = Buffer.concat(parts).toString('base64').slice(0, 24);
        } else if (st.kind === 'symlink') content = await fs.readlink(p);
        out.push(`${p} ${st.kind} ${(st.mode & 0o7777).toString(8)} ${st.uid}:${st.gid} ${st.kind === 'dir' ? '' : st.size} ${content}`);
        if (st.kind === 'dir') await walk(p);
      }
    };
    await walk('/');
    return out;
  } finally {
    await disk.close();
  }
}

function guestListing(dev: string, name: string): string {
  return [
    `mount -t ext4 ${dev} /mnt/h; echo "${RESULT_PREFIX}${name} mount $?"`,
    `cd /mnt/h && find . ! -name . | sort | while read f; do if [ -f "$f" ] && [ ! -L "$f" ]; then h=$(sha256sum "$f" | cut -c1-16); else h=-; fi; if [ -d "$f" ] && [ ! -L "$f" ]; then s=-; else s=$(stat -c '%s' "$f"); fi; echo "@@T ${name} $(stat -c '%A %u:%g' "$f") $s $h $f"; done; cd /`,
    `umount /mnt/h; echo "${RESULT_PREFIX}${name} umount $?"`,
    `e2fsck -fn ${dev} > /tmp/fsck.${name} 2>&1; echo "${RESULT_PREFIX}${name} fsck $?"; grep -v '^Pass\\|^e2fsck\\|files' /tmp/fsck.${name} | head -5`,
  ].join('\n');
}

describe('home import killed at every journal commit step: e2fsck and the kernel see the old or the new tree', { skip: kernelHarnessStatus() || missingTools('e2fsck') }, () => {
  const tmp = tempDir('livestick-jcrash-');
  const src = join(tmp.dir, 'src');
  const passFile = join(tmp.dir, 'pass');
  before(async () => {
    await ensureKernel();
    writeFileSync(passFile, PASS);
    makeTree(src, { files: 6, bigBytes: 300_000 });
  });
  after(() => tmp.cleanup());

  test('plain and LUKS2 homes', { timeout: 240_000 }, async () => {
    const seed = join(tmp.dir, 'seed');
    makeTree(seed, { files: 2, bigBytes: 5000 });
    const kinds = [
      { name: 'p', encrypted: false, steps: [...COMMIT_STEPS] as CommitStep[], size: 12 * MiB },
      { name: 'e', encrypted: true, steps: LUKS_STEPS, size: 24 * MiB },
    ];
    const disks: { path: string }[] = [];
    const guest: string[] = ['mkdir -p /mnt/h'];
    const expected = new Map<string, 'old' | 'new' | 'either'>();
    const hostCrashTrees: { label: string; tree: string[] }[] = [];
    const treesByKind: Record<string, { old: string[]; new: string[] }> = {};
    const dev = () => `/dev/vd${String.fromCharCode('b'.charCodeAt(0) + disks.length)}`;

    for (const k of kinds) {
      const template = join(tmp.dir, `${k.name}-template.img`);
      await createHome(template, { size: k.size, ...(k.encrypted ? { encrypt: true, kdf: KDF } : {}), ...access(PASS) });
      await homeImport(template, seed, '/', access(PASS));
      const done = join(tmp.dir, `${k.name}-done.img`);
      copyFileSync(template, done);
      importKilledAt(done, src, undefined, k.encrypted ? passFile : undefined);
      const oldFs = join(tmp.dir, `${k.name}-old.fs`);
      const newFs = join(tmp.dir, `${k.name}-new.fs`);
      await rawFilesystem(template, oldFs, k.encrypted);
      await rawFilesystem(done, newFs, k.encrypted);
      treesByKind[k.name] = { old: await treeOf(oldFs), new: await treeOf(newFs) };
      assert.notDeepEqual(treesByKind[k.name]!.old, treesByKind[k.name]!.new);
      if (!k.encrypted) {
        for (const [label, path] of [['p-ref-old', oldFs], ['p-ref-new', newFs]] as const) {
          guest.push(guestListing(dev(), label));
          disks.push({ path });
        }
      }
      for (const step of k.steps) {
        const label = `${k.name}-${step}`;
        const image = join(tmp.dir, `${label}.img`);
        copyFileSync(template, image);
        importKilledAt(image, src, step, k.encrypted ? passFile : undefined);
        const before = COMMIT_STEPS.indexOf(step) < COMMIT_STEPS.indexOf('committed');
        expected.set(label, before ? 'old' : COMMIT_STEPS.indexOf(step) > COMMIT_STEPS.indexOf('flagged') ? 'new' : 'either');

        // Host: e2fsck replays, repairs nothing else; then it is clean, and the tree is old or new.
        const fsCopy = join(tmp.dir, `${label}.fs`);
        await rawFilesystem(image, fsCopy, k.encrypted);
        const fix = run('e2fsck', ['-fy', fsCopy], { allowFail: true });
        assert.equal(fix.status, 0, `${label}: e2fsck -fy had to repair more than the journal:\n${fix.stdout}${fix.stderr}`);
        const check = run('e2fsck', ['-fn', fsCopy], { allowFail: true });
        assert.equal(check.status, 0, `${label}: e2fsck -fn after the replay:\n${check.stdout}`);
        const tree = await treeOf(fsCopy);
        hostCrashTrees.push({ label, tree });
        // livestick's own recovery (the next home command, on another copy) reaches the same tree.
        const mine = join(tmp.dir, `${label}.livestick.img`);
        copyFileSync(image, mine);
        await homeList(mine, '/', access(PASS));
        const mineFs = join(tmp.dir, `${label}.livestick.fs`);
        await rawFilesystem(mine, mineFs, k.encrypted);
        assert.deepEqual(await treeOf(mineFs), tree, `${label}: livestick's replay differs from e2fsck's`);

        if (k.encrypted) {
          guest.push(guestOpen(dev(), label.replace(/-/g, '_'), PASS), guestListing(`/dev/mapper/${label.replace(/-/g, '_')}`, label), guestClose(label.replace(/-/g, '_')));
        } else {
          guest.push(guestListing(dev(), label));
        }
        disks.push({ path: image });
      }
    }

    for (const c of hostCrashTrees) {
      const t = treesByKind[c.label[0]!]!;
      const which = JSON.stringify(c.tree) === JSON.stringify(t.old) ? 'old' : JSON.stringify(c.tree) === JSON.stringify(t.new) ? 'new' : 'neither';
      const want = expected.get(c.label)!;
      assert.ok(which === want || (want === 'either' && which !== 'neither'), `${c.label}: after e2fsck the tree is ${which}, expected ${want}`);
    }

    const r = await runInKernel({ script: guest.join('\n'), disks, memoryMiB: 512, timeoutMs: 180_000 });
    const res = parseGuestResults(r.output);
    const listing = (label: string) => r.output.split('\n').filter((l) => l.startsWith(`@@T ${label} `)).map((l) => l.slice(`@@T ${label} `.length));
    const refOld = listing('p-ref-old');
    const refNew = listing('p-ref-new');
    assert.ok(refOld.length > 5 && refNew.length > refOld.length, `reference listings:\n${r.output.slice(0, 3000)}`);
    for (const [label, want] of expected) {
      assert.equal(res[label]?.mount, '0', `${label}: the kernel did not mount it:\n${r.output}`);
      assert.equal(res[label]?.fsck, '0', `${label}: e2fsck -fn in the guest after the kernel's replay:\n${r.output}`);
      const got = JSON.stringify(listing(label));
      const which = got === JSON.stringify(refOld) ? 'old' : got === JSON.stringify(refNew) ? 'new' : 'neither';
      assert.ok(which === want || (want === 'either' && which !== 'neither'), `${label}: the kernel sees the ${which} tree, expected ${want}:\n${listing(label).join('\n')}`);
    }

  });
});
