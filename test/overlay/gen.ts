/**
 * Random layers for the overlay property tests (model.test.ts, layer-diff.test.ts): a layer is a list
 * of operations on an in-memory filesystem — files, dirs, symlinks, both whiteout forms, opaque y/x,
 * devices, user and escaped xattrs, and for an upper also redirects (absolute and relative),
 * metacopy stubs and hard links — over the names a–d, up to three deep.
 */
import fc from 'fast-check';
import { MemoryFileSystem } from '../helpers/memfs.ts';

const P = 'trusted.overlay.';
const enc = (s: string) => new TextEncoder().encode(s);

export const NAMES = ['a', 'b', 'c', 'd'];
export const opArb = (upper: boolean) =>
  fc.record({
    path: fc.array(fc.constantFrom(...NAMES), { minLength: 1, maxLength: 3 }),
    op: fc.constantFrom(...(['file', 'file', 'dir', 'symlink', 'whiteout', 'xwhiteout', 'opaque-y', 'opaque-x', 'xattr', 'escaped', 'dev'] as const), ...(upper ? (['redirect-abs', 'redirect-rel', 'metacopy', 'link', 'link'] as const) : [])),
    n: fc.nat(255),
    other: fc.array(fc.constantFrom(...NAMES), { minLength: 1, maxLength: 3 }),
  });

export type Op = { path: string[]; op: string; n: number; other: string[] };

export function build(ops: Op[]): MemoryFileSystem {
  const fs = new MemoryFileSystem();
  for (const { path, op, n, other } of ops) {
    const p = path.join('/');
    const at = fs.get(p);
    switch (op) {
      case 'file':
        fs.put(p, fs.node('file', { data: enc(`${p}:${n}`.repeat(n % 5)), mode: 0o600 + (n % 64), uid: n % 3 }));
        break;
      case 'dir':
        fs.put(p, fs.node('dir', { mode: 0o700 + (n % 64), gid: n % 2 }));
        break;
      case 'symlink':
        fs.put(p, fs.node('symlink', { target: `t${n}` }));
        break;
      case 'whiteout':
        fs.put(p, fs.node('chardev', { rdev: { major: 0, minor: 0 } }));
        break;
      case 'dev':
        fs.put(p, fs.node('chardev', { rdev: { major: 1, minor: n % 4 } }));
        break;
      case 'xwhiteout': {
        const w = fs.node('file', {});
        w.xattrs.set(P + 'whiteout', new Uint8Array(0));
        fs.put(p, w);
        break;
      }
      case 'opaque-y':
      case 'opaque-x':
        if (at?.kind === 'dir' && at !== fs.root) at.xattrs.set(P + 'opaque', enc(op === 'opaque-y' ? 'y' : 'x'));
        break;
      case 'xattr':
        if (at) at.xattrs.set(`user.k${n % 3}`, enc(`v${n}`));
        break;
      case 'escaped':
        if (at) at.xattrs.set(`${P}overlay.e${n % 2}`, enc(`esc${n}`));
        break;
      case 'redirect-abs':
        if (at?.kind === 'dir' && at !== fs.root) at.xattrs.set(P + 'redirect', enc(`/${other.join('/')}`));
        break;
      case 'redirect-rel':
        if (at?.kind === 'dir' && at !== fs.root) at.xattrs.set(P + 'redirect', enc(other[0]!));
        break;
      case 'metacopy': {
        const m = fs.node('file', { mode: 0o640, uid: 7, data: new Uint8Array(0) });
        m.xattrs.set(P + 'metacopy', new Uint8Array(0));
        if (n % 3 === 0) m.xattrs.set(P + 'redirect', enc(`/${other.join('/')}`));
        fs.put(p, m);
        break;
      }
      case 'link': {
        const src = fs.get(other.join('/'));
        if (src && src.kind === 'file' && !src.xattrs.has(P + 'metacopy') && !src.xattrs.has(P + 'whiteout') && fs.put(p, src)) src.links++;
        break;
      }
    }
  }
  return fs;
}

