/** The overlay xattr value decoders: round trips and bad input, each a typed error naming the field. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import '../helpers/setup.ts';
import { CorruptImageError } from '../../src/errors.ts';
import { decodeMetacopy, decodeNlink, decodeOpaque, decodeOvlFb, decodeProtattr, decodeRedirect, encodeMetacopy, encodeNlink, encodeOpaque, encodeOvlFb, encodeProtattr, encodeRedirect, visibleXattrName } from '../../src/fs/overlay/index.ts';

const enc = (s: string) => new TextEncoder().encode(s);
const bad = (field: string) => (err: unknown) => err instanceof CorruptImageError && err.format === 'overlayfs' && err.field === field && err.file === '/p';

test('redirect round trip, absolute and relative', () => {
  const name = fc.stringMatching(/^[a-zA-Z0-9._-]{1,20}$/).filter((s) => s !== '.' && s !== '..');
  fc.assert(fc.property(fc.array(name, { minLength: 1, maxLength: 8 }), fc.boolean(), (parts, abs) => {
    const r = abs ? { absolute: true as const, path: `/${parts.join('/')}`, parts } : { absolute: false as const, name: parts[0]! };
    assert.deepEqual(decodeRedirect(encodeRedirect(r), '/p'), r);
  }));
  for (const v of ['', 'a/b', '/a//b', '/a/', '/', '/a/../b', '..', 'a\0b']) assert.throws(() => decodeRedirect(enc(v), '/p'), bad('redirect'), v);
  assert.throws(() => decodeRedirect(enc(`/${'a/'.repeat(2100)}a`), '/p'), bad('redirect'));
  assert.throws(() => decodeRedirect(new Uint8Array([0xff, 0xfe]), '/p'), bad('redirect'));
});

test('metacopy round trip and bad input', () => {
  fc.assert(fc.property(fc.nat(255), fc.integer({ min: 1, max: 255 }), fc.uint8Array({ minLength: 1, maxLength: 64 }), (flags, algo, digest) => {
    const m = { flags, digestAlgo: algo, digest };
    assert.deepEqual(decodeMetacopy(encodeMetacopy(m), '/p'), m);
  }));
  assert.deepEqual(decodeMetacopy(new Uint8Array(0), '/p').digest.byteLength, 0);
  for (const v of [[0, 4, 0], [1, 4, 0, 0], [0, 5, 0, 0], [0, 4, 0, 1], [0, 5, 0, 0, 9], [0, 69, 0, 1, ...new Array(65).fill(1)]]) assert.throws(() => decodeMetacopy(new Uint8Array(v), '/p'), bad('metacopy'), String(v));
});

test('origin file handle (ovl_fb) round trip and bad input', () => {
  fc.assert(fc.property(fc.nat(7), fc.nat(255), fc.uint8Array({ minLength: 16, maxLength: 16 }), fc.uint8Array({ maxLength: 128 }), (flags, type, uuid, fid) => {
    const fh = { flags, type, uuid, fid };
    assert.deepEqual(decodeOvlFb(encodeOvlFb(fh), '/p'), fh);
  }));
  assert.equal(decodeOvlFb(new Uint8Array(0), '/p'), undefined);
  const good = encodeOvlFb({ flags: 2, type: 1, uuid: new Uint8Array(16), fid: new Uint8Array(8) });
  const mutate = (i: number, v: number) => Object.assign(good.slice(), { [i]: v });
  for (const v of [good.slice(0, 20), mutate(0, 1), mutate(1, 0xfa), mutate(2, 28), mutate(3, 8), new Uint8Array(200)]) assert.throws(() => decodeOvlFb(v, '/p'), bad('origin'));
});

test('opaque, protattr, nlink values and xattr name visibility', () => {
  for (const o of ['y', 'x'] as const) assert.equal(decodeOpaque(encodeOpaque(o), '/p'), o);
  for (const v of ['', 'n', 'yy', 'Y']) assert.throws(() => decodeOpaque(enc(v), '/p'), bad('opaque'), v);
  for (const p of [{ appendOnly: true, immutable: false }, { appendOnly: true, immutable: true }, { appendOnly: false, immutable: false }]) assert.deepEqual(decodeProtattr(encodeProtattr(p), '/p'), p);
  for (const v of ['aa', 'x', 'aix']) assert.throws(() => decodeProtattr(enc(v), '/p'), bad('protattr'), v);
  for (const n of [{ base: 'U' as const, delta: 1 }, { base: 'L' as const, delta: -3 }, { base: 'U' as const, delta: 0 }]) assert.deepEqual(decodeNlink(encodeNlink(n), '/p'), n);
  for (const v of ['U1', 'X+1', 'U+', '']) assert.throws(() => decodeNlink(enc(v), '/p'), bad('nlink'), v);
  assert.equal(visibleXattrName('trusted.overlay.opaque', 'trusted'), undefined);
  assert.equal(visibleXattrName('trusted.overlay.overlay.opaque', 'trusted'), 'trusted.overlay.opaque');
  assert.equal(visibleXattrName('user.overlay.opaque', 'trusted'), 'user.overlay.opaque');
  assert.equal(visibleXattrName('user.overlay.opaque', 'user'), undefined);
  assert.equal(visibleXattrName('security.selinux', 'trusted'), 'security.selinux');
});
