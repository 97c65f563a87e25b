/**
 * HostFileSystem.setXattr/removeXattr (io/xattr.ts setHostXattr/removeHostXattr) on a temporary
 * directory, with getfattr as the oracle: user.*, trusted.* and security.* set, replaced and removed on
 * a file and a directory, trusted.* and security.* on a symlink's own inode (as root); what Linux
 * refuses comes back typed — user.* on a symlink (EPERM: PermissionError, the target untouched, so the
 * call did not follow the link), trusted.* for a non-root user (PermissionError), a filesystem without
 * xattrs (UnsupportedFeatureError), a missing attribute or path (NotFoundError), a read-only
 * HostFileSystem. Each change passes exactly one fault point; an injected error or crash there
 * changes nothing.
 */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, chownSync, mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { HostFileSystem } from '../../src/fs/host/index.ts';
import { SimulatedCrash, tracePoints, withFaultPlan } from '../../src/io/faults.ts';
import { hostXattrsAvailable } from '../../src/io/xattr.ts';
import { LivestickError, NotFoundError, PermissionError, UnsupportedFeatureError } from '../../src/errors.ts';
import { missingTools, run } from '../helpers/tools.ts';
import { tempDir } from '../helpers/tmp.ts';

const isRoot = process.getuid?.() === 0;
const skip = missingTools('getfattr') || (isRoot ? false : 'needs root (trusted.* and security.* xattrs)') || (hostXattrsAvailable() ? false : 'the @napi-rs/xattr binding does not load here');
const enc = (s: string) => new TextEncoder().encode(s);

/** getfattr -h -d -m - -e hex of one path (the node itself): "name hex" lines, sorted. */
function getfattr(path: string): string[] {
  const text = run('getfattr', ['-h', '-d', '-m', '-', '-e', 'hex', '--absolute-names', path]).stdout;
  return [...text.matchAll(/^([^#=\s][^=]*)(?:=0x([0-9a-f]*))?$/gm)].map((m) => `${m[1]} ${m[2] ?? ''}`).sort();
}

function lines(attrs: Record<string, Uint8Array | string>): string[] {
  return Object.entries(attrs)
    .map(([n, v]) => `${n} ${Buffer.from(typeof v === 'string' ? enc(v) : v).toString('hex')}`)
    .sort();
}

describe('HostFileSystem extended attributes', { skip }, () => {
  const tmp = tempDir('livestick-host-xattr-');
  const root = join(tmp.dir, 'root');
  let fs: HostFileSystem;
  before(() => {
    mkdirSync(join(root, 'd'), { recursive: true });
    writeFileSync(join(root, 'f'), 'file\n');
    symlinkSync('f', join(root, 'l'));
    fs = new HostFileSystem(root, { writable: true });
  });
  after(() => tmp.cleanup());

  test('set, replace and remove on a file, a directory and (trusted.*, security.*) a symlink; getfattr and xattrs() agree', async () => {
    const big = new Uint8Array(3000).map((_, i) => (i * 7) & 0xff);
    await fs.setXattr('/f', 'user.a', enc('x'));
    await fs.setXattr('/f', 'user.big', big);
    await fs.setXattr('/f', 'trusted.test.opaque', enc('y'));
    await fs.setXattr('/f', 'security.test', enc('label\0'));
    await fs.setXattr('/d', 'trusted.test.opaque', enc('y'));
    await fs.setXattr('/d', 'user.empty', new Uint8Array(0));
    await fs.setXattr('/l', 'trusted.test.redirect', enc('/f'));
    await fs.setXattr('/l', 'security.test', Uint8Array.from([0, 1, 0xff]));
    await fs.setXattr('/f', 'user.a', enc('a longer value'));
    const want = {
      f: lines({ 'user.a': 'a longer value', 'user.big': big, 'trusted.test.opaque': 'y', 'security.test': 'label\0' }),
      d: lines({ 'trusted.test.opaque': 'y', 'user.empty': '' }),
      l: lines({ 'trusted.test.redirect': '/f', 'security.test': Uint8Array.from([0, 1, 0xff]) }),
    };
    for (const [name, expected] of Object.entries(want)) {
      assert.deepEqual(getfattr(join(root, name)), expected, `getfattr ${name}`);
      assert.deepEqual(lines(Object.fromEntries((await fs.xattrs(`/${name}`)).map((x) => [x.name, x.value]))), expected, `xattrs(/${name})`);
    }

    await fs.removeXattr('/f', 'user.big');
    await fs.removeXattr('/d', 'trusted.test.opaque');
    await fs.removeXattr('/l', 'trusted.test.redirect');
    assert.deepEqual(getfattr(join(root, 'f')), lines({ 'user.a': 'a longer value', 'trusted.test.opaque': 'y', 'security.test': 'label\0' }));
    assert.deepEqual(getfattr(join(root, 'd')), lines({ 'user.empty': '' }));
    assert.deepEqual(getfattr(join(root, 'l')), lines({ 'security.test': Uint8Array.from([0, 1, 0xff]) }));
    await assert.rejects(fs.removeXattr('/f', 'user.big'), NotFoundError, 'removed twice');
    await fs.flush();
  });

  test('user.* on a symlink: Linux refuses it (EPERM → PermissionError), and the target is not touched', async () => {
    const before = getfattr(join(root, 'f'));
    await assert.rejects(fs.setXattr('/l', 'user.x', enc('1')), (err: unknown) => err instanceof PermissionError && /EPERM/.test(err.message));
    assert.deepEqual(getfattr(join(root, 'f')), before, 'the link was not followed');
    assert.ok(!getfattr(join(root, 'l')).some((l) => l.startsWith('user.x ')));
  });

  test('a missing path, a missing attribute, a read-only filesystem, a filesystem without xattrs', async () => {
    await assert.rejects(fs.setXattr('/nope', 'user.a', enc('1')), NotFoundError);
    await assert.rejects(fs.removeXattr('/nope', 'user.a'), NotFoundError);
    await assert.rejects(fs.removeXattr('/d', 'user.never'), NotFoundError);
    const ro = new HostFileSystem(root);
    await assert.rejects(ro.setXattr('/f', 'user.ro', enc('1')), PermissionError);
    await assert.rejects(ro.removeXattr('/f', 'user.a'), PermissionError);
    assert.ok(!getfattr(join(root, 'f')).some((l) => l.startsWith('user.ro ')));
    // procfs has no xattr handlers: every name is EOPNOTSUPP there.
    const proc = new HostFileSystem('/proc/self', { writable: true });
    await assert.rejects(proc.setXattr('/comm', 'user.x', enc('1')), UnsupportedFeatureError);
  });

  test('each change is one fault point; an error or a crash there changes nothing', async () => {
    const set = await tracePoints(() => fs.setXattr('/d', 'user.traced', enc('1')));
    assert.deepEqual(
      set.points.map((p) => [p.op, p.path]),
      [['write', `setxattr user.traced ${join(root, 'd')}`]],
    );
    const removed = await tracePoints(() => fs.removeXattr('/d', 'user.traced'));
    assert.deepEqual(
      removed.points.map((p) => [p.op, p.path]),
      [['write', `removexattr user.traced ${join(root, 'd')}`]],
    );
    const eio = await withFaultPlan((p) => (p.index === 1 ? 'EIO' : undefined), () => fs.setXattr('/d', 'user.failed', enc('1')));
    assert.ok(eio.error instanceof LivestickError && /EIO/.test(eio.error.message), String(eio.error));
    const crash = await withFaultPlan((p) => (p.index === 1 ? 'crash' : undefined), () => fs.setXattr('/d', 'user.crashed', enc('1')));
    assert.ok(crash.error instanceof SimulatedCrash, String(crash.error));
    assert.deepEqual(getfattr(join(root, 'd')), lines({ 'user.empty': '' }));
    await fs.setXattr('/d', 'user.kept', enc('k'));
    const eioRemove = await withFaultPlan((p) => (p.index === 1 ? 'EIO' : undefined), () => fs.removeXattr('/d', 'user.kept'));
    assert.ok(eioRemove.error instanceof LivestickError, String(eioRemove.error));
    assert.deepEqual(getfattr(join(root, 'd')), lines({ 'user.empty': '', 'user.kept': 'k' }));
  });

  test('not root: trusted.* is refused (PermissionError), user.* on an own file works', () => {
    const own = join(tmp.dir, 'nobody');
    mkdirSync(own);
    writeFileSync(join(own, 'f'), '');
    chownSync(own, 65534, 65534);
    chownSync(join(own, 'f'), 65534, 65534);
    chmodSync(tmp.dir, 0o755);
    const script = `
      import { HostFileSystem } from ${JSON.stringify(join(import.meta.dirname, '../../src/fs/host/index.ts'))};
      const fs = new HostFileSystem(${JSON.stringify(own)}, { writable: true });
      const out = {};
      try { await fs.setXattr('/f', 'trusted.test.x', new Uint8Array([1])); out.trusted = 'set'; } catch (e) { out.trusted = e.constructor.name; }
      try { await fs.setXattr('/f', 'user.mine', new Uint8Array([2])); out.user = 'set'; } catch (e) { out.user = e.constructor.name + ' ' + e.message; }
      process.stdout.write(JSON.stringify(out));
    `;
    const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { uid: 65534, gid: 65534, cwd: join(import.meta.dirname, '../..'), encoding: 'utf8', env: { ...process.env, HOME: own } });
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), { trusted: 'PermissionError', user: 'set' });
    assert.deepEqual(getfattr(join(own, 'f')), lines({ 'user.mine': Uint8Array.from([2]) }));
  });
});
