/**
 * Shared by the Ext4WritableFileSystem tests: a model of the tree (path → node) and the oracles that
 * compare an image with it (e2fsck -fn, debugfs rdump, our own reader).
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { lstatSync, mkdirSync, readFileSync, readdirSync, readlinkSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { FileDisk } from '../../src/io/disk.ts';
import { Ext4 } from '../../src/fs/ext4/fs.ts';
import { run } from '../helpers/tools.ts';

export type ModelNode = { kind: 'dir'; mode?: number } | { kind: 'file'; data: Uint8Array; mode?: number; uid?: number; gid?: number } | { kind: 'symlink'; target: string };
export type Model = Map<string, ModelNode>;

/** e2fsck -fn: exit status and what it printed. */
export function fsck(image: string): { status: number; out: string } {
  const r = run('e2fsck', ['-fn', image], { allowFail: true });
  return { status: r.status, out: r.stdout + r.stderr };
}

export function assertClean(image: string, what: string): void {
  const r = fsck(image);
  assert.equal(r.status, 0, `e2fsck -fn after ${what}:\n${r.out}`);
}

/** The tree as debugfs reads it (rdump into a host directory), lost+found left out. */
export function debugfsTree(image: string, scratch: string): Model {
  rmSync(scratch, { recursive: true, force: true });
  mkdirSync(scratch, { recursive: true });
  run('debugfs', ['-R', `rdump / ${scratch}`, image]);
  const out: Model = new Map();
  const walk = (host: string, at: string) => {
    for (const name of readdirSync(host).sort()) {
      if (at === '' && name === 'lost+found') continue;
      const p = `${at}/${name}`;
      const h = join(host, name);
      const st = lstatSync(h);
      if (st.isSymbolicLink()) out.set(p, { kind: 'symlink', target: readlinkSync(h) });
      else if (st.isDirectory()) {
        out.set(p, { kind: 'dir', mode: st.mode & 0o7777 });
        walk(h, p);
      } else out.set(p, { kind: 'file', data: new Uint8Array(readFileSync(h)), mode: st.mode & 0o7777, uid: st.uid, gid: st.gid });
    }
  };
  walk(scratch, '');
  rmSync(scratch, { recursive: true, force: true });
  return out;
}

function digest(n: ModelNode): string {
  if (n.kind === 'file') return `file ${n.data.byteLength} ${Buffer.from(n.data).toString('base64').length > 200 ? hash(n.data) : Buffer.from(n.data).toString('base64')}`;
  if (n.kind === 'symlink') return `symlink ${n.target}`;
  return 'dir';
}

function hash(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex').slice(0, 16);
}

/** Compares a tree with the model: same names, kinds, contents; modes and owners where the model has them. */
export function assertTreeMatches(actual: Model, model: Model, what: string): void {
  const names = (m: Model) => [...m.keys()].sort();
  assert.deepEqual(names(actual), names(model), `${what}: the names differ`);
  for (const [p, want] of model) {
    const got = actual.get(p)!;
    assert.equal(got.kind, want.kind, `${what}: ${p} kind`);
    if (want.kind === 'file' && got.kind === 'file') {
      assert.equal(got.data.byteLength, want.data.byteLength, `${what}: ${p} size`);
      assert.ok(Buffer.from(got.data).equals(Buffer.from(want.data)), `${what}: ${p} content differs (${digest(got)} vs ${digest(want)})`);
      if (want.uid !== undefined) assert.equal(got.uid, want.uid, `${what}: ${p} uid`);
      if (want.gid !== undefined) assert.equal(got.gid, want.gid, `${what}: ${p} gid`);
    }
    if (want.kind === 'symlink' && got.kind === 'symlink') assert.equal(got.target, want.target, `${what}: ${p} target`);
    if (want.kind !== 'symlink' && want.mode !== undefined && got.kind !== 'symlink') assert.equal(got.mode, want.mode, `${what}: ${p} mode`);
  }
}

/** The tree as our reader sees it (strict checksums), lost+found left out. */
export async function readerTree(image: string): Promise<Model> {
  const disk = await FileDisk.open(image, { readOnly: true });
  try {
    const fs = await Ext4.open(disk, { strict: true });
    const out: Model = new Map();
    const walk = async (path: string): Promise<void> => {
      for (const e of (await fs.readdir(path)).sort((a, b) => (a.name < b.name ? -1 : 1))) {
        if (e.name === '.' || e.name === '..' || (path === '/' && e.name === 'lost+found')) continue;
        const p = `${path === '/' ? '' : path}/${e.name}`;
        const st = await fs.stat(p);
        if (st.kind === 'dir') {
          out.set(p, { kind: 'dir', mode: st.mode & 0o7777 });
          await walk(p);
        } else if (st.kind === 'symlink') out.set(p, { kind: 'symlink', target: await fs.readlink(p) });
        else out.set(p, { kind: 'file', data: await fs.readFile(p, 1 << 30), mode: st.mode & 0o7777, uid: st.uid, gid: st.gid });
      }
    };
    await walk('/');
    return out;
  } finally {
    await disk.close();
  }
}

/** Bytes of a file as debugfs dumps it. */
export function debugfsDump(image: string, path: string, out: string): Uint8Array {
  run('debugfs', ['-R', `dump ${path} ${out}`, image]);
  const data = new Uint8Array(readFileSync(out));
  rmSync(out, { force: true });
  return data;
}

/** How many data extents debugfs lists for a file, and its EXTENTS line ("(0-99):1000-1099, ..."). */
export function debugfsExtents(image: string, path: string): { leaves: number; text: string } {
  const text = run('debugfs', ['-R', `stat ${path}`, image]).stdout;
  const m = /EXTENTS:\n([^\n]*)/.exec(text);
  const line = m?.[1] ?? '';
  return { leaves: line.split(',').filter((s) => /\(\d/.test(s) && !/ETB/.test(s)).length, text: line };
}

/** Free blocks of the superblock as dumpe2fs -h prints them. */
export function dumpe2fsFreeBlocks(image: string): number {
  const text = run('dumpe2fs', ['-h', image]).stdout;
  return Number(/^Free blocks:\s+(\d+)/m.exec(text)?.[1]);
}
