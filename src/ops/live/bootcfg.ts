/**
 * Kernel arguments written in a medium's boot configuration (GRUB grub.cfg and loopback.cfg,
 * isolinux/syslinux .cfg): what the boot code will be told — casper's `layerfs-path=`, live-boot's
 * `persistence-label=`, dracut's `rd.live.dir=` and `rd.live.overlay=`. Only the lines that load a
 * kernel are read (`linux`, `linuxefi`, `kernel`, `append`); values keep their order of appearance.
 */
import type { FileSystem } from '../../fs/filesystem.ts';
import { listDir, readText } from './model.ts';

const CONFIG_DIRS = ['/boot/grub', '/boot/grub2', '/EFI/BOOT', '/EFI/boot', '/isolinux', '/syslinux', '/boot/isolinux', '/boot/syslinux', '/'];
const KERNEL_LINE = /^\s*(linux|linuxefi|linux16|kernel|append)\s+(.*)$/i;

export interface BootArgs {
  /** Every value given to `key=` on a kernel line, in order, without duplicates. */
  values(key: string): string[];
  /** Whether a bare word (`persistent`, `rd.live.overlay.overlayfs`) appears on a kernel line. */
  has(word: string): boolean;
  /** The config files read. */
  readonly files: readonly string[];
}

export function parseBootArgs(texts: readonly string[], files: readonly string[] = []): BootArgs {
  const tokens: string[] = [];
  for (const text of texts) {
    for (const line of text.split('\n')) {
      const m = KERNEL_LINE.exec(line);
      if (m) tokens.push(...m[2]!.split(/\s+/).filter((t) => t !== ''));
    }
  }
  return {
    files,
    values(key) {
      const out: string[] = [];
      for (const t of tokens) {
        if (!t.startsWith(`${key}=`)) continue;
        const v = t.slice(key.length + 1).replace(/^["']|["']$/g, '');
        if (!out.includes(v)) out.push(v);
      }
      return out;
    },
    has(word) {
      return tokens.includes(word);
    },
  };
}

/** The boot arguments found in the volume's configuration files (none found: an empty set). */
export async function bootArgs(fs: FileSystem): Promise<BootArgs> {
  const texts: string[] = [];
  const files: string[] = [];
  for (const dir of CONFIG_DIRS) {
    for (const e of await listDir(fs, dir)) {
      if (e.kind !== 'file' || !/\.cfg$/i.test(e.name)) continue;
      const path = dir === '/' ? `/${e.name}` : `${dir}/${e.name}`;
      const text = await readText(fs, path, 256 << 10);
      if (text !== undefined) {
        texts.push(text);
        files.push(path);
      }
    }
  }
  return parseBootArgs(texts, files);
}
