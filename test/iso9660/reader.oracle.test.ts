/**
 * Iso9660Fs against xorriso: ISOs built here with xorriso (Rock Ridge + Joliet, Joliet only, plain,
 * deep-directory relocation, El Torito BIOS + EFI, a hybrid with an appended EFI partition) must list
 * exactly as `xorriso -find / -exec lsdl` does, read the bytes `osirrox -extract` writes, and report
 * the boot catalog entries `-report_el_torito plain` prints.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { chmodSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { FileDisk, readAt } from '../../src/io/disk.ts';
import { Iso9660Fs, type BootInfo } from '../../src/fs/iso9660/index.ts';
import { missingTools, run } from '../helpers/tools.ts';
import { tempDir } from '../helpers/tmp.ts';

const skip = missingTools('xorriso', 'osirrox');

function pseudo(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

function makeTree(root: string): void {
  const deep = join(root, 'a/b/c/d/e/f/g/h/i/j/k');
  mkdirSync(deep, { recursive: true });
  writeFileSync(join(deep, 'deep.txt'), 'deep\n');
  writeFileSync(join(root, 'a/b/c/d/e/f/g/h/beside-the-moved-one'), 'x');
  writeFileSync(join(root, 'a name long enough to be cut by Joliet at sixty-four characters, and then some.txt'), 'long\n');
  writeFileSync(join(root, 'Ünïcødé 日本語 ✓.txt'), 'unicode\n');
  writeFileSync(join(root, 'secret'), 'mode 600\n');
  chmodSync(join(root, 'secret'), 0o600);
  writeFileSync(join(root, 'setuid-tool'), 'mode 4755\n');
  chmodSync(join(root, 'setuid-tool'), 0o4755);
  mkdirSync(join(root, 'private'));
  chmodSync(join(root, 'private'), 0o700);
  writeFileSync(join(root, 'empty'), '');
  writeFileSync(join(root, 'random.bin'), pseudo(1_500_000, 7));
  writeFileSync(join(root, 'boot.bin'), pseudo(4096, 8));
  writeFileSync(join(root, 'efi.img'), pseudo(300 * 1024, 9));
  symlinkSync('../a/b', join(root, 'relative-link'));
  symlinkSync('/etc/some/absolute/target', join(root, 'absolute-link'));
  symlinkSync('a/b/c/d/e/f/g/h/i/j/k/deep.txt', join(root, 'deep-link'));
}

const PERM = 'rwxrwxrwx';
function permString(mode: number): string {
  let s = '';
  for (let i = 0; i < 9; i++) s += mode & (0o400 >> i) ? PERM[i] : '-';
  const set = (i: number, bit: number, lower: string, upper: string) => {
    if (mode & bit) s = s.slice(0, i) + (s[i] === '-' ? upper : lower) + s.slice(i + 1);
  };
  set(2, 0o4000, 's', 'S');
  set(5, 0o2000, 's', 'S');
  set(8, 0o1000, 't', 'T');
  return s;
}

interface Line {
  kind: string;
  perm: string;
  uid: string;
  gid: string;
  size: string;
  path: string;
  target: string;
}

function xorrisoListing(iso: string): Line[] {
  const out = run('xorriso', ['-indev', iso, '-find', '/', '-exec', 'lsdl']).stdout;
  return out
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => {
      const m = /^(\S)(\S{9})\s+\d+\s+(\d+)\s+(\d+)\s+(\d+)\s+\S+\s+\d+\s+\S+\s+'(.*?)'(?: -> '(.*)')?$/.exec(l);
      assert.ok(m, `unparsed lsdl line: ${l}`);
      const kind = m[1] === 'd' ? 'dir' : m[1] === 'l' ? 'symlink' : 'file'; // 'e': the El Torito catalog file
      return { kind, perm: m[2]!, uid: m[3]!, gid: m[4]!, size: kind === 'file' ? m[5]! : '-', path: m[6]!, target: m[7] ?? '' };
    })
    .filter((l) => l.path !== '/');
}

async function ourListing(fs: Iso9660Fs, path = ''): Promise<Line[]> {
  const out: Line[] = [];
  for (const e of await fs.readdir(path || '/')) {
    const p = `${path}/${e.name}`;
    const st = await fs.stat(p);
    out.push({ kind: st.kind, perm: permString(st.mode), uid: String(st.uid), gid: String(st.gid), size: st.kind === 'file' ? String(st.size) : '-', path: p, target: st.kind === 'symlink' ? await fs.readlink(p) : '' });
    if (st.kind === 'dir') out.push(...(await ourListing(fs, p)));
  }
  return out;
}

const sortByPath = (lines: Line[]) => [...lines].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
const withoutModes = (lines: Line[]) => lines.map((l) => ({ ...l, perm: '', uid: '', gid: '' }));

/** Our file bytes against what osirrox extracts, for every regular file. */
async function checkContents(fs: Iso9660Fs, iso: string, dir: string, lines: Line[]): Promise<number> {
  const out = join(dir, `extract-${Math.random().toString(36).slice(2)}`);
  run('osirrox', ['-indev', iso, '-extract', '/', out]);
  let n = 0;
  for (const l of lines) {
    if (l.kind !== 'file') continue;
    const disk = await fs.openFile(l.path);
    const ours = createHash('sha256').update(await readAt(disk, 0, disk.size)).digest('hex');
    const theirs = createHash('sha256').update(readFileSync(join(out, l.path))).digest('hex');
    assert.equal(ours, theirs, l.path);
    n++;
  }
  return n;
}

async function withIso<T>(iso: string, fn: (fs: Iso9660Fs) => Promise<T>, prefer?: 'rockridge' | 'joliet' | 'iso'): Promise<T> {
  const disk = await FileDisk.open(iso, { readOnly: true });
  try {
    return await fn(await Iso9660Fs.open(disk, prefer ? { prefer } : {}));
  } finally {
    await disk.close();
  }
}

interface ReportedImage {
  pltf: string;
  bootable: string;
  emul: string;
  ldSeg: string;
  hdpt: string;
  ldsiz: string;
  lba: string;
  path: string | undefined;
}

function reportElTorito(iso: string): { catalog: string; images: ReportedImage[] } {
  const text = run('xorriso', ['-indev', iso, '-report_el_torito', 'plain']).stdout;
  const catalog = /^El Torito catalog\s*:\s*(\d+)/m.exec(text)?.[1] ?? '';
  const images: ReportedImage[] = [];
  for (const m of text.matchAll(/^El Torito boot img :\s+(\d+)\s+(\S+)\s+(\S)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\d+)\s+(\d+)$/gm)) {
    images[Number(m[1]) - 1] = { pltf: m[2]!, bootable: m[3]!, emul: m[4]!, ldSeg: m[5]!, hdpt: m[6]!, ldsiz: m[7]!, lba: m[8]!, path: undefined };
  }
  for (const m of text.matchAll(/^El Torito img path :\s+(\d+)\s+(.*)$/gm)) images[Number(m[1]) - 1]!.path = m[2]!;
  return { catalog, images };
}

function ourReport(boot: BootInfo): { catalog: string; images: ReportedImage[] } {
  const emul = { 'no-emulation': 'none', 'floppy-1.2M': 'fd1.2', 'floppy-1.44M': 'fd1.4', 'floppy-2.88M': 'fd2.8', 'hard-disk': 'hd' } as const;
  return {
    catalog: String(boot.catalogSector),
    images: boot.images.map((i) => ({
      pltf: i.platform === 'x86' ? 'BIOS' : i.platform === 'efi' ? 'UEFI' : i.platform,
      bootable: i.bootable ? 'y' : 'n',
      emul: emul[i.media],
      ldSeg: `0x${i.platform === 'x86' || i.platform === 'efi' ? (0).toString(16).padStart(4, '0') : ''}`,
      hdpt: '0x00',
      ldsiz: String(i.sectorCount),
      lba: String(i.loadRba),
      path: i.path,
    })),
  };
}

test('iso9660 oracle: -R -J with El Torito BIOS + EFI: listing, contents and boot catalog match xorriso', { skip }, async () => {
  const { dir, cleanup } = tempDir('livestick-iso-');
  try {
    makeTree(join(dir, 'src'));
    const iso = join(dir, 'rr.iso');
    run('xorriso', ['-as', 'mkisofs', '-R', '-J', '-V', 'LIVE_TEST', '-o', iso, '-b', 'boot.bin', '-c', 'boot.cat', '-no-emul-boot', '-boot-load-size', '4', '-eltorito-alt-boot', '-e', 'efi.img', '-no-emul-boot', join(dir, 'src')]);
    const theirs = xorrisoListing(iso);
    await withIso(iso, async (fs) => {
      assert.equal(fs.namespace, 'rockridge');
      assert.equal(fs.label, 'LIVE_TEST');
      const ours = await ourListing(fs);
      assert.deepEqual(sortByPath(ours), sortByPath(theirs));
      assert.ok(ours.some((l) => l.perm === 'rwsr-xr-x') && ours.some((l) => l.path.endsWith('/k/deep.txt')), 'setuid and deep files listed');
      assert.ok((await checkContents(fs, iso, dir, ours)) >= 9, 'contents checked');
      const boot = (await fs.bootCatalog())!;
      assert.deepEqual(ourReport(boot), reportElTorito(iso));
      const efi = boot.images.find((i) => i.platform === 'efi')!;
      assert.deepEqual(efi.range, { offset: (await fs.extents('/efi.img'))[0]!.offset, length: 300 * 1024 });
    });
    // The Joliet tree of the same image: same files, names cut near 64 UCS-2 characters.
    await withIso(iso, async (fs) => {
      assert.equal(fs.namespace, 'joliet');
      const names = (await fs.readdir('/')).map((e) => e.name);
      assert.ok(names.includes('Ünïcødé 日本語 ✓.txt'), names.join('|'));
      assert.ok(names.some((n) => n.length <= 65 && n.length > 60 && n.startsWith('a name long enough') && n.endsWith('.txt')), names.join('|')); // libisofs: 64 characters + the ';1' it drops, extension kept
      assert.ok(!names.includes('relative-link'), 'Joliet has no symlinks: xorriso leaves them out');
    }, 'joliet');
  } finally {
    cleanup();
  }
});

for (const [label, args, expect] of [
  ['Joliet only', ['-rockridge', 'off', '-joliet', 'on'], 'joliet'],
  ['plain ISO names', ['-rockridge', 'off', '-joliet', 'off'], 'iso'],
] as const) {
  test(`iso9660 oracle: ${label}: names, kinds, sizes and contents match xorriso`, { skip }, async () => {
    const { dir, cleanup } = tempDir('livestick-iso-');
    try {
      makeTree(join(dir, 'src'));
      const iso = join(dir, 'x.iso');
      run('xorriso', ['-outdev', iso, ...args, '-map', join(dir, 'src'), '/', '-commit']);
      const theirs = xorrisoListing(iso);
      await withIso(iso, async (fs) => {
        assert.equal(fs.namespace, expect);
        const ours = await ourListing(fs);
        assert.deepEqual(withoutModes(sortByPath(ours)), withoutModes(sortByPath(theirs)));
        assert.ok(ours.every((l) => l.perm === (l.kind === 'dir' ? 'rwxr-xr-x' : 'rw-r--r--')), 'default modes');
        assert.ok((await checkContents(fs, iso, dir, ours)) >= 7, 'contents checked');
      });
    } finally {
      cleanup();
    }
  });
}

test('iso9660 oracle: Rock Ridge deep-directory relocation (CL/RE/PL) lists as xorriso does', { skip }, async () => {
  const { dir, cleanup } = tempDir('livestick-iso-');
  try {
    makeTree(join(dir, 'src'));
    const iso = join(dir, 'reloc.iso');
    run('xorriso', ['-outdev', iso, '-compliance', 'deep_paths_off', '-rr_reloc_dir', 'rr_moved', '-rockridge', 'on', '-map', join(dir, 'src'), '/', '-commit']);
    const theirs = xorrisoListing(iso);
    await withIso(iso, async (fs) => {
      assert.deepEqual(sortByPath(await ourListing(fs)), sortByPath(theirs));
      assert.equal(new TextDecoder().decode(await readAt(await fs.openFile('/a/b/c/d/e/f/g/h/i/j/k/deep.txt'), 0, 5)), 'deep\n');
    });
    // Relocation really happened: the plain tree holds the placeholder file and the moved directory.
    await withIso(iso, async (fs) => {
      assert.equal((await fs.stat('/A/B/C/D/E/F/G/H')).kind, 'file');
      assert.equal((await fs.stat('/RR_MOVED/H/I/J/K/DEEP.TXT')).size, 5);
    }, 'iso');
  } finally {
    cleanup();
  }
});

test('iso9660 oracle: hybrid image with an appended EFI partition: the EFI boot image is that sector range', { skip }, async () => {
  const { dir, cleanup } = tempDir('livestick-iso-');
  try {
    makeTree(join(dir, 'src'));
    const efi = join(dir, 'src', 'efi.img');
    const iso = join(dir, 'hybrid.iso');
    run('xorriso', ['-as', 'mkisofs', '-R', '-J', '-o', iso, '-b', 'boot.bin', '-c', 'boot.cat', '-no-emul-boot', '-boot-load-size', '4', '-append_partition', '2', '0xef', efi, '-eltorito-alt-boot', '-e', '--interval:appended_partition_2:all::', '-no-emul-boot', join(dir, 'src')]);
    const system = run('xorriso', ['-indev', iso, '-report_system_area', 'plain']).stdout;
    const part = /^MBR partition\s*:\s+2\s+\S+\s+0xef\s+(\d+)\s+(\d+)$/m.exec(system);
    assert.ok(part !== null, system);
    await withIso(iso, async (fs) => {
      assert.deepEqual(sortByPath(await ourListing(fs)), sortByPath(xorrisoListing(iso)));
      const boot = (await fs.bootCatalog())!;
      assert.deepEqual(ourReport(boot), reportElTorito(iso));
      const image = boot.images.find((i) => i.platform === 'efi')!;
      assert.equal(image.path, undefined);
      assert.deepEqual(image.range, { offset: Number(part[1]) * 512, length: Number(part[2]) * 512 });
      const disk = await FileDisk.open(iso, { readOnly: true });
      try {
        const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
        assert.equal(sha(await readAt(disk, image.range.offset, image.range.length)), sha(readFileSync(efi)));
      } finally {
        await disk.close();
      }
      assert.ok((await fs.space()).totalBytes <= image.range.offset, 'the EFI partition lies after the ISO volume');
    });
  } finally {
    cleanup();
  }
});
