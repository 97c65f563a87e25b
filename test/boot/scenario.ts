/**
 * The pieces of a persistence-across-boots scenario, shared by the three test/boot/*.boot.test.ts files
 * and exported so offline steps (livestick status, merge) can run between the boots.
 *
 * Design notes
 * - Boot 1 runs CHANGE_JOB (an upgrade-like set of changes to the root) and takes the manifest; boot 2
 *   only takes the manifest. Equal manifests mean the upper carried the whole change across the reboot.
 * - CHANGES lists what the job did, path by path, so status figures can be checked against it later and
 *   the upper on the stick can be checked offline (expectedUpperNodes).
 * - Paths are chosen to exist in the Debian 12 minbase roots of scripts/media/build.sh; the job fails
 *   (set -e) if one does not, so a changed base cannot silently weaken the test.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { tempDir } from '../helpers/tmp.ts';
import { runCli } from '../helpers/cli.ts';
import { bootStick, type BootResult } from './qemu.ts';
import { diffManifests, GUEST_MANIFEST_SH, guestManifestSeconds, readGuestManifest, type Manifest, type ManifestOptions } from './manifest.ts';
import { inspectUpper, mediaStatus, type MediaVariant, type TestStick, type UpperNode } from './media.ts';

/** What CHANGE_JOB does, by kind of change (absolute paths in the root). */
export const CHANGES = {
  /** dpkg -i of the hello .deb kept in the base at /opt/livestick/: new files, and dpkg's database rewritten. */
  installedPackage: 'hello',
  installedFiles: ['/usr/bin/hello'],
  dpkgDatabase: ['/var/lib/dpkg/status', '/var/lib/dpkg/info/hello.list', '/var/lib/dpkg/info/hello.md5sums'],
  /** Copied up with identical content: cp -p through a temp file + rename, and an in-place rewrite. */
  rewrittenIdentical: ['/etc/login.defs', '/etc/nsswitch.conf'],
  deletedFiles: ['/usr/bin/pr', '/etc/issue.net'],
  deletedDirs: ['/usr/share/common-licenses'],
  chmod: [['/etc/motd', 0o600], ['/usr/bin/tac', 0o4755]] as [string, number][],
  chown: [['/etc/debian_version', 1234, 5678]] as [string, number, number][],
  dirReplacedByFile: ['/etc/skel'],
  fileReplacedByDir: ['/etc/host.conf'],
  /** [existing name, new name]: a base file, and a new file given a second name. */
  hardLinks: [['/etc/hostname', '/etc/hostname.link'], ['/var/lib/livestick/linked', '/var/lib/livestick/linked.2']] as [string, string][],
  /**
   * A hard link to a base (lower) file: in the boot that makes it, overlayfs (no index=on) still reports
   * the two names as different inodes (the copied-up name keeps its origin's inode number); from the
   * next mount on they are one inode with two links. Measured on Debian's 6.1 kernel (dracut and
   * live-boot), so boot 1's link column is not compared for these paths; boot 2's must show the group.
   */
  lowerHardLinkPaths: ['/etc/hostname', '/etc/hostname.link'],
  xattrs: [['/etc/fstab', 'user.livestick', 'boot1'], ['/var/lib/livestick/linked', 'user.note', 'new file']] as [string, string, string][],
  newFiles: ['/var/lib/livestick/linked', '/var/lib/livestick/deep/a/b/file', '/usr/local/bin/hi'],
  /** Written (64 MiB) then deleted in the same boot: must leave nothing in the upper. */
  largeWrittenThenDeleted: '/var/tmp/livestick-big',
  renamedDirs: [['/usr/share/bash-completion', '/usr/share/bash-completion.moved']] as [string, string][],
} as const;

export const CHANGE_JOB_SH = String.raw`
set -e
dpkg -i /opt/livestick/hello_*.deb >/dev/null
cp -p /etc/login.defs /etc/login.defs.livestick-tmp
mv /etc/login.defs.livestick-tmp /etc/login.defs
cat /etc/nsswitch.conf >/tmp/nsswitch.conf
cat /tmp/nsswitch.conf >/etc/nsswitch.conf
rm /usr/bin/pr /etc/issue.net
rm -r /usr/share/common-licenses
chmod 0600 /etc/motd
chmod 4755 /usr/bin/tac
chown 1234:5678 /etc/debian_version
rm -r /etc/skel
echo 'a file where a directory was' >/etc/skel
rm /etc/host.conf
mkdir /etc/host.conf
echo 'inside a directory where a file was' >/etc/host.conf/inside
mkdir -p /var/lib/livestick/deep/a/b
echo 'deep' >/var/lib/livestick/deep/a/b/file
echo 'linked data' >/var/lib/livestick/linked
ln /var/lib/livestick/linked /var/lib/livestick/linked.2
ln /etc/hostname /etc/hostname.link
setfattr -n user.livestick -v boot1 /etc/fstab
setfattr -n user.note -v 'new file' /var/lib/livestick/linked
ln -s /usr/bin/hello /usr/local/bin/hi
dd if=/dev/urandom of=/var/tmp/livestick-big bs=1M count=64 2>/dev/null
sync
rm /var/tmp/livestick-big
mv /usr/share/bash-completion /usr/share/bash-completion.moved
sync
hello
`;

export function changeJob(manifestName = 'boot1'): string {
  return `${GUEST_MANIFEST_SH}\n${CHANGE_JOB_SH}\nlivestick_manifest ${manifestName}\n`;
}

export function manifestJob(manifestName: string): string {
  return `${GUEST_MANIFEST_SH}\nset -e\nlivestick_manifest ${manifestName}\n`;
}

export interface BootRecord {
  manifest: Manifest;
  wallMs: number;
  /** Seconds the guest spent computing the manifest. */
  manifestSeconds: number;
  /** Kernel uptime when the job began. */
  jobStartUptime: number | undefined;
  output: string;
}

/** Boots `stick` with `job` (which must call livestick_manifest NAME), checks the exit status, reads the manifest. */
export async function bootForManifest(stick: TestStick, job: string, name: string, options: ManifestOptions & { timeoutMs?: number } = {}): Promise<BootRecord> {
  let r: BootResult | undefined;
  try {
    r = await bootStick({ stick: stick.path, kernel: stick.kernel, initrd: stick.initrd, append: stick.append, job, timeoutMs: options.timeoutMs ?? 12 * 60_000, name: `${stick.layout}-${name}` });
    if (r.status !== 0) throw new Error(`${stick.layout}/${name}: the job exited ${r.status}:\n${r.output.slice(-4000)}`);
    return {
      manifest: readGuestManifest(r.outDir, name, options),
      wallMs: r.wallMs,
      manifestSeconds: guestManifestSeconds(r.outDir, name),
      jobStartUptime: r.uptimes[0],
      output: r.output,
    };
  } finally {
    r?.cleanup();
  }
}

/** What must be in the upper after CHANGE_JOB (relative to the upper dir), and what must not. */
export function expectedUpperNodes(): { present: { path: string; kind: UpperNode['kind'] }[]; absent: string[] } {
  return {
    present: [
      { path: '/usr/bin/hello', kind: 'f' },
      { path: '/var/lib/dpkg/status', kind: 'f' },
      { path: '/etc/login.defs', kind: 'f' },
      { path: '/etc/nsswitch.conf', kind: 'f' },
      { path: '/usr/bin/pr', kind: 'c' },
      { path: '/etc/issue.net', kind: 'c' },
      { path: '/usr/share/common-licenses', kind: 'c' },
      { path: '/etc/motd', kind: 'f' },
      { path: '/etc/debian_version', kind: 'f' },
      { path: '/etc/skel', kind: 'f' },
      { path: '/etc/host.conf', kind: 'd' },
      { path: '/etc/host.conf/inside', kind: 'f' },
      { path: '/etc/hostname.link', kind: 'f' },
      { path: '/var/lib/livestick/linked.2', kind: 'f' },
      { path: '/usr/local/bin/hi', kind: 'l' },
      { path: '/usr/share/bash-completion.moved', kind: 'd' },
    ],
    absent: ['/var/tmp/livestick-big'],
  };
}

/** Problems found offline in the stick's upper after boot 1 (empty when every expected node is there). */
export function checkUpperAfterChange(stick: TestStick): { problems: string[]; nodes: UpperNode[]; fsckClean: boolean } {
  const { nodes, fsckClean, fsckOutput } = inspectUpper(stick);
  const byPath = new Map(nodes.map((n) => [n.path, n]));
  const problems: string[] = [];
  const want = expectedUpperNodes();
  for (const p of want.present) {
    const n = byPath.get(p.path);
    if (!n) problems.push(`missing in the upper: ${p.path}`);
    else if (n.kind !== p.kind) problems.push(`${p.path} in the upper is ${n.kind}, expected ${p.kind}`);
  }
  for (const p of want.absent) if (byPath.has(p)) problems.push(`should not be in the upper: ${p}`);
  if (!fsckClean) problems.push(`e2fsck -fn of the persistence filesystem is not clean:\n${fsckOutput}`);
  return { problems, nodes, fsckClean };
}

/** The manifest with the link column cleared for `paths` (see CHANGES.lowerHardLinkPaths). */
export function withoutLinks(m: Manifest, paths: readonly string[]): Manifest {
  const set = new Set(paths);
  return { ...m, entries: m.entries.map((e) => (set.has(e.path) ? { ...e, link: undefined } : e)) };
}

export interface ScenarioState {
  stick: TestStick;
  boot1?: BootRecord;
  boot2?: BootRecord;
  status?: { kind: string };
}

/**
 * Defines the node:test suite of one scenario: stick built once, boot 1 (change job + manifest), an
 * offline look at the upper, boot 2 (manifest, equal to boot 1's), livestick status offline, and where
 * the base's volume can be written a merge and boot 3 (equal to boot 2's, empty upper). `ignoreBootNoise` names paths the boot code itself rewrites on every
 * boot (left out of the comparison, with the reason in the test name).
 */
export function persistenceScenario(opts: {
  title: string;
  variant: MediaVariant;
  build: (dir: string) => TestStick;
  exclude?: readonly string[];
  /** The base's volume can be written (FAT): merge, then boot 3. Otherwise (ISO9660) merge must refuse. */
  mergeable?: boolean;
  /** Extra arguments of the merge (e.g. --format squashfs over an EROFS base). */
  mergeArgs?: readonly string[];
  /**
   * How many files the merge carries over with their stored blocks: 'most' (default; a SquashFS base),
   * 'some' (an EROFS base with fragments: the files with pclusters of their own keep them, those stored
   * whole in the old packed inode are compressed anew), 'none' (the new base has another format).
   */
  mergeCarries?: 'most' | 'some' | 'none';
  /**
   * Xattrs the new base cannot store and the merge was told to leave out (e.g. POSIX ACLs into SquashFS):
   * boot 2 must have some, boot 3 none, and the trees are compared without them.
   */
  mergeDropsXattrs?: RegExp;
  /**
   * Boot 1 also proves what it booted: / is an overlay and a filesystem of this type (the base, mounted
   * by the boot code) is mounted, read from the guest's /proc/self/mountinfo after the manifest.
   */
  baseFsType?: string;
}): void {
  describe(opts.title, { skip: mediaStatus(opts.variant) }, () => {
    let tmp: ReturnType<typeof tempDir>;
    const state = {} as ScenarioState;
    const mopts = { exclude: opts.exclude ?? [] };
    before(() => {
      tmp = tempDir(`livestick-boot-${opts.variant}-`);
      state.stick = opts.build(tmp.dir);
    });
    after(() => tmp.cleanup());

    test('boot 1 runs the upgrade-like change job on the overlay root', { timeout: 15 * 60_000 }, async () => {
      const job = opts.baseFsType === undefined ? changeJob('boot1') : `${changeJob('boot1')}\necho '@@mountinfo@@'\ncat /proc/self/mountinfo\n`;
      const b = await bootForManifest(state.stick, job, 'boot1', mopts);
      state.boot1 = b;
      if (opts.baseFsType !== undefined) {
        const mounts = b.output.slice(b.output.indexOf('@@mountinfo@@')).split('\n').map((l) => l.split(' - ')).filter((p) => p.length === 2);
        const fsTypes = (mp: string) => mounts.filter(([a]) => a!.split(' ')[4] === mp).map(([, z]) => z!.split(' ')[0]);
        assert.deepEqual(fsTypes('/'), ['overlay'], `the root is an overlay:\n${b.output.slice(-3000)}`);
        const base = mounts.filter(([, z]) => z!.split(' ')[0] === opts.baseFsType);
        assert.ok(base.length > 0, `a ${opts.baseFsType} base is mounted:\n${b.output.slice(-3000)}`);
        console.log(`(${state.stick.layout}) boot 1: / is overlay; ${base.map(([a, z]) => `${z!.split(' ').slice(0, 2).join(' ')} on ${a!.split(' ')[4]}`).join(', ')}`);
      }
      console.log(`(${state.stick.layout}) boot 1: ${(b.wallMs / 1000).toFixed(0)} s wall, job started at uptime ${b.jobStartUptime} s, manifest ${b.manifest.entries.length} entries in ${b.manifestSeconds.toFixed(1)} s`);
      assert.match(b.output, /Hello, world!/);
      const byPath = new Map(b.manifest.entries.map((e) => [e.path, e]));
      assert.equal(byPath.get('/usr/bin/hello')?.kind, 'f');
      assert.equal(byPath.get('/usr/bin/pr'), undefined);
      assert.equal(byPath.get('/etc/skel')?.kind, 'f');
      assert.equal(byPath.get('/etc/host.conf')?.kind, 'd');
      assert.equal(byPath.get('/etc/motd')?.mode, 0o600);
      assert.equal(byPath.get('/usr/bin/tac')?.mode, 0o4755);
      assert.equal(byPath.get('/etc/debian_version')?.uid, 1234);
      assert.equal(byPath.get('/var/lib/livestick/linked.2')?.link, '/var/lib/livestick/linked');
      assert.deepEqual(byPath.get('/etc/fstab')?.xattrs, [['user.livestick', Buffer.from('boot1').toString('hex')]]);
      assert.equal(byPath.get('/var/tmp/livestick-big'), undefined);
      assert.equal(byPath.get('/usr/share/bash-completion.moved')?.kind, 'd');
    });

    test('the upper on the stick holds the changes (offline, debugfs/mtools; e2fsck -fn clean)', () => {
      assert.ok(state.boot1, 'boot 1 did not complete');
      const { problems, nodes } = checkUpperAfterChange(state.stick);
      assert.deepEqual(problems, []);
      assert.ok(nodes.length > 20, `only ${nodes.length} nodes in the upper`);
    });

    test('boot 2 sees the same tree (persistence across boots)', { timeout: 15 * 60_000 }, async () => {
      assert.ok(state.boot1, 'boot 1 did not complete');
      const b = await bootForManifest(state.stick, manifestJob('boot2'), 'boot2', mopts);
      state.boot2 = b;
      console.log(`(${state.stick.layout}) boot 2: ${(b.wallMs / 1000).toFixed(0)} s wall, job started at uptime ${b.jobStartUptime} s, manifest in ${b.manifestSeconds.toFixed(1)} s`);
      assert.equal(b.manifest.entries.find((e) => e.path === '/etc/hostname.link')?.link, '/etc/hostname');
      assert.deepEqual(diffManifests(withoutLinks(state.boot1.manifest, CHANGES.lowerHardLinkPaths), withoutLinks(b.manifest, CHANGES.lowerHardLinkPaths)), []);
    });

    test('livestick status explains the upper, offline and without root on the image', () => {
      assert.ok(state.boot2, 'boot 2 did not complete');
      const r = runCli(['status', state.stick.path, '--json']);
      assert.equal(r.status, 0, r.stdout + r.stderr);
      const st = r.json;
      assert.equal(st.kind, 'overlayfs');
      const c = st.upper.classes;
      assert.ok(c['copied-up-identical'].count >= CHANGES.rewrittenIdentical.length, `identical copies: ${c['copied-up-identical'].count}`);
      assert.ok(c['metadata-only'].count >= CHANGES.chmod.length + CHANGES.chown.length, `metadata-only: ${c['metadata-only'].count}`); // (the fstab xattr: live-boot rewrites fstab at boot, so that one is a changed file there)
      assert.ok(c.whiteout.count >= CHANGES.deletedFiles.length + CHANGES.deletedDirs.length, `whiteouts: ${c.whiteout.count}`);
      assert.ok(c.whiteout.hiddenBytes > 0);
      assert.ok(c.new.count >= CHANGES.newFiles.length + CHANGES.installedFiles.length, `new: ${c.new.count}`);
      assert.ok(c['copied-up-changed'].count >= 1, 'dpkg rewrote its status file');
      assert.ok(st.upper.bytes < 32 * 2 ** 20, `the 64 MiB file written and deleted left nothing (upper ${st.upper.bytes} bytes)`);
      assert.ok(!st.topFiles.some((f: { path: string }) => f.path === CHANGES.largeWrittenThenDeleted));
      state.status = st;
    });

    if (opts.mergeable) {
      test('livestick merge, then boot 3 sees the identical tree over the new base with an empty upper', { timeout: 15 * 60_000 }, async () => {
        assert.ok(state.status, 'status did not complete');
        const r = runCli(['merge', state.stick.path, ...(opts.mergeArgs ?? []), '--json']);
        assert.equal(r.status, 0, r.stdout + r.stderr);
        assert.equal(r.json.kind, 'overlayfs');
        if (opts.mergeCarries === 'none') assert.ok(r.json.files.carried === 0 && r.json.files.rebuilt > 0, `every file compressed anew (${r.json.files.carried} carried, ${r.json.files.rebuilt} compressed)`);
        else if (opts.mergeCarries === 'some') assert.ok(r.json.files.carried > 0 && r.json.files.rebuilt > 0, `some files carried (${r.json.files.carried} carried, ${r.json.files.rebuilt} compressed)`);
        else assert.ok(r.json.files.carried > r.json.files.rebuilt, `most base files carried over (${r.json.files.carried} carried, ${r.json.files.rebuilt} compressed)`);
        console.log(`(${state.stick.layout}) merge: ${r.json.seconds.toFixed(1)} s, ${r.json.compressor}, ${r.json.files.carried} files carried, ${r.json.files.rebuilt} compressed`);
        const empty = inspectUpper(state.stick);
        assert.ok(empty.fsckClean, empty.fsckOutput);
        assert.deepEqual(empty.nodes, [], 'the upper is empty');
        const b = await bootForManifest(state.stick, manifestJob('boot3'), 'boot3', mopts);
        console.log(`(${state.stick.layout}) boot 3: ${(b.wallMs / 1000).toFixed(0)} s wall, manifest in ${b.manifestSeconds.toFixed(1)} s`);
        let before = state.boot2!.manifest;
        const drops = opts.mergeDropsXattrs;
        if (drops !== undefined) {
          const had = before.entries.filter((e) => e.xattrs.some(([n]) => drops.test(n))).map((e) => e.path);
          assert.ok(had.length > 0, `boot 2 shows xattrs matching ${drops}`);
          assert.deepEqual(b.manifest.entries.filter((e) => e.xattrs.some(([n]) => drops.test(n))).map((e) => e.path), [], `boot 3 shows none matching ${drops}`);
          assert.ok(r.json.warnings.some((w: string) => /left out of the new base/.test(w)), 'the merge said what it left out');
          before = { ...before, entries: before.entries.map((e) => ({ ...e, xattrs: e.xattrs.filter(([n]) => !drops.test(n)) })) };
        }
        assert.deepEqual(diffManifests(before, b.manifest), [], 'the tree after the merge is the tree before it');
      });
    } else {
      test('livestick merge --dry-run says why this base cannot be replaced in place', () => {
        const r = runCli(['merge', state.stick.path, '--dry-run', '--json']);
        assert.notEqual(r.status, 0);
        assert.equal(r.json.verdict, 'would-fail');
        assert.match(r.json.problems[0].message, /read-only iso9660 volume/);
      });
    }
  });
}
