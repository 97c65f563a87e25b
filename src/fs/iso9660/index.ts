/**
 * ISO9660 (read-only): Iso9660Fs over any Disk with Rock Ridge, Joliet and plain ISO names,
 * multi-extent files, deep-directory relocation, and the El Torito boot catalog (bootCatalog()).
 *
 *   const iso = await Iso9660Fs.open(disk, { prefer: 'rockridge' });
 *   await iso.readdir('/'); const efi = (await iso.bootCatalog())?.images.find((i) => i.platform === 'efi');
 *
 * The structure codecs (descriptor, record, susp, eltorito) are internal; the locator needs only this.
 */
export { Iso9660Fs, type Iso9660OpenOptions, type Namespace, type Extent, type BootImage, type BootInfo } from './fs.ts';
export type { MediaType } from './eltorito.ts';
