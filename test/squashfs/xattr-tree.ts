/**
 * A small tree carrying what a live root carries: user.*, trusted.* and security.* xattrs on files,
 * directories and symlinks (user.* cannot exist on a symlink), a v2 file capability as setcap writes
 * it, SELinux labels, a hard link and an empty value; and getfattr dumps to compare trees by.
 */
import { chownSync, linkSync, mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { run } from '../helpers/tools.ts';

/** cap_net_raw+ep, VFS_CAP_REVISION_2: magic|effective, permitted[0], inheritable[0], permitted[1], inheritable[1]. */
export const CAP_NET_RAW_EP = '0x0100000200200000000000000000000000000000';

const label = (type: string) => `0x${Buffer.from(`system_u:object_r:${type}:s0\0`).toString('hex')}`;

/** Needs root (trusted.*, security.*, owners). */
export function makeXattrTree(root: string): void {
  mkdirSync(join(root, 'usr/bin'), { recursive: true });
  mkdirSync(join(root, 'home/liveuser'), { recursive: true });
  const set = (path: string, name: string, value?: string) => run('setfattr', ['-h', '-n', name, ...(value === undefined ? [] : ['-v', value]), join(root, path)]);
  set('', 'security.selinux', label('root_t'));
  set('usr', 'security.selinux', label('usr_t'));
  set('usr/bin', 'security.selinux', label('bin_t'));
  const ping = new Uint8Array(20000).map((_, i) => (i * 7 + (i >> 9)) & 0xff);
  writeFileSync(join(root, 'usr/bin/ping'), ping, { mode: 0o755 });
  set('usr/bin/ping', 'security.capability', CAP_NET_RAW_EP);
  set('usr/bin/ping', 'security.selinux', label('ping_exec_t'));
  linkSync(join(root, 'usr/bin/ping'), join(root, 'usr/bin/ping6'));
  writeFileSync(join(root, 'usr/bin/su'), 'su\n', { mode: 0o4755 });
  set('usr/bin/su', 'security.selinux', label('su_exec_t'));
  symlinkSync('ping', join(root, 'usr/bin/arping'));
  set('usr/bin/arping', 'security.selinux', label('bin_t'));
  set('usr/bin/arping', 'trusted.link', 'on the link itself');
  writeFileSync(join(root, 'home/liveuser/notes.txt'), 'notes\n');
  set('home/liveuser/notes.txt', 'user.comment', 'a comment');
  set('home/liveuser/notes.txt', 'user.binary', '0x00ff10ee00');
  set('home/liveuser/notes.txt', 'user.empty');
  set('home/liveuser/notes.txt', 'trusted.md5', '0x0123456789abcdef');
  set('home/liveuser/notes.txt', 'security.selinux', label('user_home_t'));
  writeFileSync(join(root, 'home/liveuser/big'), 'big xattr\n');
  set('home/liveuser/big', 'user.big', `0x${'5a'.repeat(3000)}`);
  writeFileSync(join(root, 'home/liveuser/plain'), 'no xattrs\n');
  set('home/liveuser', 'user.dirnote', 'a directory note');
  set('home/liveuser', 'trusted.overlay.opaque', 'y');
  set('home/liveuser', 'security.selinux', label('user_home_dir_t'));
  symlinkSync('/nonexistent', join(root, 'home/liveuser/dangling'));
  for (const p of ['home/liveuser', 'home/liveuser/notes.txt', 'home/liveuser/big', 'home/liveuser/plain']) chownSync(join(root, p), 1000, 1000);
}

/** Every xattr under root (symlinks' own, not followed), path relative to root -> sorted "name=0xhex" list. */
export function xattrDump(root: string): Map<string, string> {
  const out = run('getfattr', ['-R', '-P', '-h', '-d', '-m', '-', '-e', 'hex', '--absolute-names', root]).stdout;
  const map = new Map<string, string>();
  let cur: string | undefined;
  let acc: string[] = [];
  const flush = () => {
    if (cur !== undefined && acc.length > 0) map.set(cur, acc.sort().join(' '));
    acc = [];
  };
  for (const line of out.split('\n')) {
    if (line.startsWith('# file: ')) {
      flush();
      const abs = line.slice(8);
      cur = abs === root ? '' : abs.slice(root.length + 1);
    } else if (line.includes('=')) {
      // getfattr prints an empty value as name= with no 0x; the reader side prints 0x.
      acc.push(line.trim().replace(/=$/, '=0x'));
    } else if (line.trim() !== '' && cur !== undefined) {
      acc.push(`${line.trim()}=0x`);
    }
  }
  flush();
  return map;
}

/** The same map from name/value lists (as our readers return them). */
export function dumpOf(entries: Iterable<[string, ReadonlyArray<{ name: string; value: Uint8Array }>]>): Map<string, string> {
  const map = new Map<string, string>();
  for (const [path, xattrs] of entries) {
    if (xattrs.length > 0) map.set(path, xattrs.map((x) => `${x.name}=0x${Buffer.from(x.value).toString('hex')}`).sort().join(' '));
  }
  return map;
}
