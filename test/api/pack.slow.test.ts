// The package as a user gets it: `npm pack`, installed into a fresh project, imported and used there,
// its types checked by tsc, its bin run. The install is offline when it can be: the project gets a
// lockfile made from ours (the registry dependencies `npm ci` already put in npm's cache).
import { strict as assert } from 'node:assert';
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../..', import.meta.url));
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
const tmp = mkdtempSync(join(tmpdir(), 'livestick-pack-'));
const project = join(tmp, 'project');
let tarball = '';
let packedFiles: string[] = [];
let installLog = '';
let installedBy = 'npm ci --offline';

// The nested npm keeps the user's npm config (cache, registry, CA) but not what the `npm test` running
// us exports about our own project (its local prefix, package and lifecycle).
const ownProject = /^npm_(package_|lifecycle_|command$|execpath$|node_execpath$|config_(local_prefix|call|yes)$)/i;
const env: NodeJS.ProcessEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !ownProject.test(k)));

function run(cmd: string, args: string[], cwd: string): SpawnSyncReturns<string> {
  return spawnSync(cmd, args, { cwd, env, encoding: 'utf8', timeout: 120_000 });
}

function ok(r: SpawnSyncReturns<string>, what: string): string {
  assert.equal(r.status, 0, `${what} failed (status ${r.status}, ${r.error?.message ?? ''}):\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

interface LockEntry {
  dev?: boolean;
  [key: string]: unknown;
}

/** The lockfile npm would write for a project depending only on the tarball, from our own lockfile. */
function projectLock(pkg: { name: string; version: string; dependencies?: Record<string, string>; bin?: unknown; engines?: unknown; license?: string }, spec: string, integrity: string): object {
  const ours = JSON.parse(readFileSync(join(root, 'package-lock.json'), 'utf8')) as { packages: Record<string, LockEntry> };
  const packages: Record<string, unknown> = {
    '': { name: 'api-user', version: '1.0.0', dependencies: { livestick: spec } },
    'node_modules/livestick': { version: pkg.version, resolved: spec, integrity, license: pkg.license, dependencies: pkg.dependencies, bin: pkg.bin, engines: pkg.engines },
  };
  for (const [path, entry] of Object.entries(ours.packages)) {
    if (path !== '' && !entry.dev) packages[path] = entry;
  }
  return { name: 'api-user', version: '1.0.0', lockfileVersion: 3, requires: true, packages };
}

before(() => {
  const packed = ok(run(npm, ['pack', '--json', '--pack-destination', tmp], root), 'npm pack');
  const info = (JSON.parse(packed.slice(packed.indexOf('['))) as { filename: string; files: { path: string }[] }[])[0]!;
  packedFiles = info.files.map((f) => f.path);
  mkdirSync(project);
  tarball = join(tmp, info.filename);
  const spec = `file:../${info.filename}`;
  writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'api-user', version: '1.0.0', private: true, type: 'module', dependencies: { livestick: spec } }, null, 2));
  const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
  const integrity = `sha512-${createHash('sha512').update(readFileSync(tarball)).digest('base64')}`;
  writeFileSync(join(project, 'package-lock.json'), JSON.stringify(projectLock(pkg, spec, integrity), null, 2));
  const offline = run(npm, ['ci', '--offline', '--no-audit', '--no-fund'], project);
  installLog = `${offline.stdout}\n${offline.stderr}`;
  if (offline.status !== 0) {
    // Not everything is in the cache (a fresh machine that never ran `npm ci` here): go online.
    installedBy = 'npm install (online)';
    const online = run(npm, ['install', '--no-audit', '--no-fund'], project);
    installLog = `${online.stdout}\n${online.stderr}`;
    ok(online, `npm install (offline attempt failed: ${offline.stderr.split('\n').find((l) => l.includes('error')) ?? ''})`);
  }
});

after(() => rmSync(tmp, { recursive: true, force: true }));

test('the tarball holds the build, the bin and the native addon, and no sources or tests', () => {
  for (const f of ['package.json', 'bin/livestick.js', 'dist/index.js', 'dist/index.d.ts', 'dist/cli/main.js', 'dist/fs/squashfs/comp/worker.js']) {
    assert.ok(packedFiles.includes(f), `${f} is missing from the tarball`);
  }
  assert.ok(packedFiles.some((f) => f.startsWith('native/prebuilt/')), 'native/prebuilt is missing');
  const stray = packedFiles.filter((f) => /^(src|test|bench|scripts|wasm)\//.test(f) || f.endsWith('.map') || f.endsWith('.tgz'));
  assert.deepEqual(stray, []);
});

test('the installed package has no install script, so npm has no allowScripts warning to give', (t) => {
  t.diagnostic(`installed by ${installedBy}`);
  const pkg = JSON.parse(readFileSync(join(project, 'node_modules/livestick/package.json'), 'utf8'));
  const installScripts = ['preinstall', 'install', 'postinstall', 'prepare'].filter((s) => pkg.scripts?.[s] !== undefined);
  assert.deepEqual(installScripts, []);
  assert.doesNotMatch(installLog, /install-scripts|allowScripts|not yet covered/i);
});

const USE = `
import {
  writeSquashfs, SquashfsReader, dirNode, fileNode, FileDisk, MemoryDisk, mkfs, Ext4, Ext4Writer, buildBlockMap,
  ExceptionStore, SnapshotDisk, LuksVolume, WrongPassphraseError, CorruptImageError, LivestickError,
  buildSampleMedium, applyPackageUpdate, mediumStatus, resetMedium, formatSize, readAt,
} from 'livestick';
import { join } from 'node:path';
const dir = process.argv[2];
const out = {};
const MiB = 1024 * 1024;
const text = (b) => Buffer.from(b).toString('utf8');

// SquashFS, compressed by worker threads (dist/…/worker.js) and read back.
const tree = dirNode({}, { etc: dirNode({}, { hostname: fileNode('stick\\n') }), big: fileNode(new Uint8Array(300000).fill(7)) });
const image = join(dir, 'tree.sqfs');
await writeSquashfs(tree, image, { compressor: 'zstd', threads: 2 });
const sq = await SquashfsReader.open(await FileDisk.open(image, { readOnly: true }));
out.squashfs = { hostname: text(await sq.readFile('/etc/hostname')), big: (await sq.readFile('/big')).every((b) => b === 7), root: (await sq.readdir('/')).map((e) => e.name) };
await sq.disk.close();

// ext4: mkfs, write a file, read it back, ask who owns its blocks.
const disk = new MemoryDisk(16 * MiB);
await mkfs(disk, { label: 'api' });
const w = await Ext4Writer.open(await Ext4.open(disk));
await w.writeFile('/notes.txt', Buffer.from('kept'));
await w.close();
const fs = await Ext4.open(disk);
const map = await buildBlockMap(fs);
out.ext4 = { notes: text(await fs.readFile('/notes.txt')), label: fs.sb.volumeName, mapped: map !== undefined };

// dm-snapshot: writes land in the overlay, the base is untouched.
const base = new MemoryDisk(new Uint8Array(1 * MiB).fill(1));
const store = await ExceptionStore.format(new MemoryDisk(1 * MiB), 8);
const snap = new SnapshotDisk(base, store);
await snap.write(new Uint8Array(4096).fill(2), 8192);
await snap.flush();
out.dmsnap = { combined: (await readAt(snap, 8192, 4096)).every((b) => b === 2), base: (await readAt(base, 8192, 4096)).every((b) => b === 1), exceptions: store.exceptionCount };

// LUKS2 with ext4 on its payload.
const luksDisk = new MemoryDisk(12 * MiB);
const pw = Buffer.from('secret');
const fast = { kdf: { type: 'pbkdf2', iterations: 1000 }, digestIterations: 1000, dataOffset: 2 * MiB };
const vol = await LuksVolume.format(luksDisk, pw, fast);
const payload = await vol.openPayload(pw);
await mkfs(payload, { label: 'secret-home' });
const hw = await Ext4Writer.open(await Ext4.open(payload));
await hw.writeFile('/diary', Buffer.from('dear diary'));
await hw.close();
const again = await (await LuksVolume.open(luksDisk)).openPayload(pw);
out.luks = { diary: text(await (await Ext4.open(again)).readFile('/diary')), version: vol.info().version };
try { await vol.unlock(Buffer.from('wrong')); out.luks.wrong = 'accepted'; } catch (e) { out.luks.wrong = e instanceof WrongPassphraseError ? e.code : String(e); }

// Typed errors cross the package boundary.
try { await SquashfsReader.open(new MemoryDisk(new Uint8Array(8192))); out.corrupt = 'accepted'; }
catch (e) { out.corrupt = { corrupt: e instanceof CorruptImageError, livestick: e instanceof LivestickError, code: e.code }; }

// A medium: status before and after an update through the overlay, then reset.
const medium = join(dir, 'medium');
await buildSampleMedium(medium);
const before = await mediumStatus(medium);
await applyPackageUpdate(medium);
const status = await mediumStatus(medium);
await resetMedium(medium);
const reset = await mediumStatus(medium);
out.medium = { before: before.overlay.usedBytes, after: status.overlay.usedBytes, top: status.topFiles.map((f) => f.path), reset: reset.overlay.usedBytes, human: formatSize(status.overlay.usedBytes) };
console.log(JSON.stringify(out));
`;

test('the installed package imports and works: SquashFS, ext4, dm-snapshot, LUKS, a medium', () => {
  writeFileSync(join(project, 'use.mjs'), USE);
  const work = join(tmp, 'work');
  mkdirSync(work);
  const out = JSON.parse(ok(run(process.execPath, ['use.mjs', work], project), 'use.mjs'));
  assert.deepEqual(out.squashfs, { hostname: 'stick\n', big: true, root: ['big', 'etc'] });
  assert.equal(out.ext4.notes, 'kept');
  assert.equal(out.ext4.mapped, true);
  assert.equal(out.ext4.label, 'api');
  assert.deepEqual(out.dmsnap, { combined: true, base: true, exceptions: 1 });
  assert.deepEqual(out.luks, { diary: 'dear diary', version: 2, wrong: 'WRONG_PASSPHRASE' });
  assert.deepEqual(out.corrupt, { corrupt: true, livestick: true, code: 'CORRUPT_IMAGE' });
  assert.ok(out.medium.after > out.medium.before, `the update filled the overlay: ${JSON.stringify(out.medium)}`);
  assert.ok(out.medium.top.some((p: string) => p.endsWith('/vmlinuz')), `the new kernel is among the top files: ${out.medium.top}`);
  assert.ok(out.medium.reset < out.medium.after);
  assert.match(out.medium.human, /iB$/);
});

test('only the entry point and package.json are exported; the package has no default export', () => {
  const probe = `
    const r = {};
    const api = await import('livestick');
    r.default = 'default' in api;
    r.version = (await import('livestick/package.json', { with: { type: 'json' } })).default.version;
    try { await import('livestick/dist/io/disk.js'); r.deep = 'allowed'; } catch (e) { r.deep = e.code; }
    console.log(JSON.stringify(r));`;
  writeFileSync(join(project, 'probe.mjs'), probe);
  const r = JSON.parse(ok(run(process.execPath, ['probe.mjs'], project), 'probe.mjs'));
  const ours = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
  assert.deepEqual(r, { default: false, version: ours.version, deep: 'ERR_PACKAGE_PATH_NOT_EXPORTED' });
});

const TYPED = `
import { Ext4, MemoryDisk, mkfs, SquashfsReader, LuksVolume, mediumStatus, LivestickError, type Disk, type StatusReport, type MkfsResult } from 'livestick';

const disk: Disk = new MemoryDisk(8 << 20);
const made: MkfsResult = await mkfs(disk, { label: 'typed' });
const fs: Ext4 = await Ext4.open(disk);
const data: Uint8Array = await fs.readFile('/lost+found');
const reader: Promise<SquashfsReader> = SquashfsReader.open(disk);
const version: 1 | 2 = (await LuksVolume.open(disk)).version;
const report: StatusReport = await mediumStatus('/media/stick');
const fill: number = report.overlay.fill;
const code: string = new LivestickError('IO', 74, 'x').code;
// @ts-expect-error mkfs takes a Disk, not a path
await mkfs('/tmp/image');
// @ts-expect-error the status report has no such field
report.nonsense;
// @ts-expect-error nor its overlay part (a type another declaration file of the package holds)
report.overlay.nonsense;
export { made, data, reader, version, fill, code };
`;

/** The README's API example, so the documented usage keeps compiling against the published types. */
function readmeExample(): string {
  const readme = readFileSync(join(root, 'README.md'), 'utf8');
  const block = /^## API\n[^]*?^```ts\n([^]*?)^```$/m.exec(readme);
  assert.ok(block, 'README.md has an API section with a ts example');
  return block[1]!;
}

test('the published types resolve and type-check a consumer and the README example (tsc, NodeNext, strict)', () => {
  writeFileSync(join(project, 'typed.ts'), TYPED);
  writeFileSync(join(project, 'readme.ts'), readmeExample());
  const tsconfig = {
    compilerOptions: {
      target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, noEmit: true,
      skipLibCheck: true, types: ['node'], typeRoots: [join(root, 'node_modules/@types')],
    },
    files: ['typed.ts', 'readme.ts'],
  };
  writeFileSync(join(project, 'tsconfig.json'), JSON.stringify(tsconfig, null, 2));
  ok(run(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.json'], project), 'tsc in the consumer project');
});

test('the installed bin runs the packaged build', () => {
  const ours = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
  assert.ok(!existsSync(join(project, 'node_modules/livestick/src')));
  const version = ok(run(npm, ['exec', '--offline', '--no', '--', 'livestick', '--version'], project), 'npx livestick --version');
  assert.equal(version.trim(), ours.version);
  const source = join(tmp, 'bin-source');
  mkdirSync(join(source, 'etc'), { recursive: true });
  writeFileSync(join(source, 'etc/hostname'), 'stick\n');
  const image = join(tmp, 'bin.sqfs');
  const bin = join(project, 'node_modules/.bin/livestick');
  ok(run(bin, ['squashfs', 'create', source, image, '--threads', '1'], project), 'livestick squashfs create');
  const cat = ok(run(bin, ['squashfs', 'cat', image, '/etc/hostname'], project), 'livestick squashfs cat');
  assert.equal(cat, 'stick\n');
});
