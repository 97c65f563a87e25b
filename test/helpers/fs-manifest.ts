/** One line per path of a FileSystem (kind, mode, owner, content digest, link target, xattrs), depth first in name order: what two trees are compared by. */
import { createHash } from 'node:crypto';
import type { FileSystem } from '../../src/fs/filesystem.ts';

export async function fsManifest(fs: FileSystem): Promise<string[]> {
  const out: string[] = [];
  const walk = async (p: string): Promise<void> => {
    const st = await fs.stat(p);
    let line = `${p} ${st.kind} ${st.mode.toString(8)} ${st.uid}:${st.gid}`;
    if (st.kind === 'file') {
      const d = await fs.openFile(p);
      const b = new Uint8Array(d.size);
      if (b.byteLength > 0) await d.read(b, 0);
      await d.close();
      line += ` ${createHash('sha256').update(b).digest('hex').slice(0, 16)}`;
    }
    if (st.kind === 'symlink') line += ` -> ${await fs.readlink(p)}`;
    const x = ((await fs.xattrs?.(p)) ?? []).map((a) => `${a.name}=${Buffer.from(a.value).toString('hex')}`).sort();
    if (x.length > 0) line += ` ${x.join(',')}`;
    out.push(line);
    if (st.kind === 'dir') for (const e of (await fs.readdir(p)).sort((a, b) => (a.name < b.name ? -1 : 1))) await walk(p === '/' ? `/${e.name}` : `${p}/${e.name}`);
  };
  await walk('/');
  return out;
}
