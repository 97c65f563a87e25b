/**
 * A small ISO9660 + Rock Ridge image writer for tests, built from the codecs' encoders: it lays out
 * what xorriso cannot be made to write cheaply (multi-extent files with small extents, CE continuation
 * areas, NM and SL split over several entries) and gives the property tests and the fuzzer
 * deterministic seeds. Layout: PVD at 16, an optional boot record, the terminator, an optional boot
 * catalog, the directories, the continuation areas, then file data.
 */
import { SECTOR } from '../../src/fs/iso9660/format.ts';
import { encodeDescriptor, type VolumeDescriptor } from '../../src/fs/iso9660/descriptor.ts';
import { FLAG_DIRECTORY, FLAG_MULTI_EXTENT, encodeRecord, type DirRecordInput } from '../../src/fs/iso9660/record.ts';
import { encodeCE, encodeER, encodeNM, encodePX, encodeSL, encodeSP, encodeTF, NM_CONTINUE, SL_CONTINUE, SL_ROOT, SL_PARENT, type SlComponent } from '../../src/fs/iso9660/susp.ts';
import { encodeBootEntry, encodeSectionHeader, encodeValidation, PLATFORM_EFI, PLATFORM_X86 } from '../../src/fs/iso9660/eltorito.ts';

export type TestNode =
  | { readonly kind: 'dir'; readonly name: string; readonly mode?: number; readonly children: readonly TestNode[] }
  | { readonly kind: 'file'; readonly name: string; readonly mode?: number; readonly data: Uint8Array; readonly extentSize?: number }
  | { readonly kind: 'symlink'; readonly name: string; readonly target: string };

export interface BuildOptions {
  /** Rock Ridge entries go into CE continuation areas, the record keeps only the CE. */
  readonly continuation?: boolean;
  /** NM and SL are split into entries of at most this many name bytes. */
  readonly splitAt?: number;
  /** Add an El Torito catalog: a BIOS image and an EFI image (files named boot.bin and efi.img in the root). */
  readonly boot?: boolean;
  readonly time?: number;
}

const enc = new TextEncoder();
const cat = (parts: Uint8Array[]) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  let at = 0;
  for (const p of parts) (out.set(p, at), (at += p.byteLength));
  return out;
};

function nmEntries(name: Uint8Array, split: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let at = 0; at < name.byteLength || out.length === 0; at += split) {
    const piece = name.subarray(at, at + split);
    out.push(encodeNM({ flags: at + split < name.byteLength ? NM_CONTINUE : 0, name: piece }));
  }
  return out;
}

function slEntries(target: string, split: number): Uint8Array[] {
  const comps: SlComponent[] = [];
  const parts = target.split('/');
  parts.forEach((p, i) => {
    if (i === 0 && p === '') return void comps.push({ flags: SL_ROOT, content: new Uint8Array() });
    if (p === '..') return void comps.push({ flags: SL_PARENT, content: new Uint8Array() });
    const bytes = enc.encode(p);
    for (let at = 0; at < bytes.byteLength || at === 0; at += split) {
      comps.push({ flags: at + split < bytes.byteLength ? SL_CONTINUE : 0, content: bytes.subarray(at, at + split) });
      if (bytes.byteLength === 0) break;
    }
  });
  const out: Uint8Array[] = [];
  for (let i = 0; i < comps.length; i += 3) {
    out.push(encodeSL({ flags: i + 3 < comps.length ? SL_CONTINUE : 0, components: comps.slice(i, i + 3) }));
  }
  return out;
}

interface Placed {
  node: TestNode;
  isoName: Uint8Array;
  /** For dirs: the directory's block; for files: one block per extent. */
  blocks: number[];
  rr: Uint8Array;
  ce?: { block: number; offset: number };
}

export function buildIso(root: TestNode & { kind: 'dir' }, options: BuildOptions = {}): Uint8Array {
  const time = { sec: options.time ?? 1_700_000_000, nsec: 0 };
  const split = options.splitAt ?? 250;
  const dirs: { node: TestNode & { kind: 'dir' }; parent: number; entries: Placed[]; block: number; size: number }[] = [];
  const rrOf = (n: TestNode, self?: boolean): Uint8Array => {
    const mode = n.kind === 'dir' ? 0o040000 | (n.mode ?? 0o755) : n.kind === 'file' ? 0o100000 | (n.mode ?? 0o644) : 0o120777;
    const parts = [encodePX({ mode, nlink: 1, uid: 1000, gid: 100, ino: undefined }), encodeTF({ long: false, modify: time, access: time, attributes: time })];
    if (!self) parts.push(...nmEntries(enc.encode(n.name), split));
    if (n.kind === 'symlink') parts.push(...slEntries(n.target, split));
    return cat(parts);
  };
  const collect = (node: TestNode & { kind: 'dir' }, parent: number) => {
    const index = dirs.length;
    const entry = { node, parent, entries: [] as Placed[], block: 0, size: 0 };
    dirs.push(entry);
    node.children.forEach((c, i) => {
      const isoName = enc.encode(c.kind === 'dir' ? `D${i}` : `F${i}.;1`);
      entry.entries.push({ node: c, isoName, blocks: [], rr: rrOf(c) });
      if (c.kind === 'dir') collect(c, index);
    });
  };
  collect(root, 0);
  const rootSu = cat([encodeSP({ skip: 0 }), rrOf(root, true), encodeER({ id: 'RRIP_1991A', descriptor: 'ROCK RIDGE', source: 'TEST', extensionVersion: 1 })]);
  const suOf = (p: Placed) => (options.continuation ? encodeCE({ block: 0, offset: 0, length: p.rr.byteLength }) : p.rr);
  const extentsOf = (n: TestNode) => {
    if (n.kind !== 'file') return [0];
    const size = n.extentSize ?? Math.max(n.data.byteLength, 1);
    const count = Math.max(1, Math.ceil(n.data.byteLength / size));
    return Array.from({ length: count }, (_, i) => Math.min(size, n.data.byteLength - i * size));
  };
  const recordLen = (name: Uint8Array, su: Uint8Array) => {
    const l = 33 + name.byteLength + (name.byteLength % 2 === 0 ? 1 : 0) + su.byteLength;
    return l + (l % 2);
  };
  // Sizes: sectors per directory.
  const sizeOf = (d: (typeof dirs)[number], i: number) => {
    const lens = [recordLen(Uint8Array.of(0), i === 0 ? rootSu : rrOf(d.node, true)), recordLen(Uint8Array.of(1), new Uint8Array())];
    for (const p of d.entries) for (const _ of extentsOf(p.node)) lens.push(recordLen(p.isoName, suOf(p)));
    let sectors = 1;
    let used = 0;
    for (const l of lens) {
      if (used + l > SECTOR) (sectors++, (used = 0));
      used += l;
    }
    return sectors * SECTOR;
  };
  let next = 18 + (options.boot ? 2 : 0);
  const catalogBlock = options.boot ? 19 : 0;
  dirs.forEach((d, i) => {
    d.size = sizeOf(d, i);
    d.block = next;
    next += d.size / SECTOR;
  });
  if (options.continuation) {
    let used = SECTOR;
    for (const d of dirs)
      for (const p of d.entries) {
        if (used + p.rr.byteLength > SECTOR) (next++, (used = 0));
        p.ce = { block: next - 1, offset: used };
        used += p.rr.byteLength;
      }
  }
  const dirBlock = new Map<TestNode, number>(dirs.map((d) => [d.node, d.block]));
  for (const d of dirs)
    for (const p of d.entries) {
      if (p.node.kind === 'dir') p.blocks = [dirBlock.get(p.node)!];
      else if (p.node.kind === 'file') {
        for (const len of extentsOf(p.node)) {
          p.blocks.push(len === 0 ? 0 : next);
          next += Math.ceil(len / SECTOR);
        }
      } else p.blocks = [0];
    }
  const total = next;
  const image = new Uint8Array(total * SECTOR);
  const rec = (r: Partial<DirRecordInput> & Pick<DirRecordInput, 'name' | 'extent' | 'dataLength' | 'flags'>) =>
    encodeRecord({ extAttrLength: 0, recorded: time, fileUnitSize: 0, interleaveGap: 0, volumeSequence: 1, systemUse: new Uint8Array(), ...r });
  const bootFiles: number[] = [];
  dirs.forEach((d, i) => {
    const recs = [
      rec({ name: Uint8Array.of(0), extent: d.block, dataLength: d.size, flags: FLAG_DIRECTORY, systemUse: i === 0 ? rootSu : rrOf(d.node, true) }),
      rec({ name: Uint8Array.of(1), extent: dirs[d.parent]!.block, dataLength: dirs[d.parent]!.size, flags: FLAG_DIRECTORY }),
    ];
    for (const p of d.entries) {
      const su = options.continuation ? encodeCE({ block: p.ce!.block, offset: p.ce!.offset, length: p.rr.byteLength }) : p.rr;
      if (p.ce) image.set(p.rr, p.ce.block * SECTOR + p.ce.offset);
      if (p.node.kind === 'dir') {
        recs.push(rec({ name: p.isoName, extent: p.blocks[0]!, dataLength: dirs.find((x) => x.node === p.node)!.size, flags: FLAG_DIRECTORY, systemUse: su }));
      } else if (p.node.kind === 'file') {
        const node = p.node;
        const lens = extentsOf(node);
        let off = 0;
        lens.forEach((len, k) => {
          recs.push(rec({ name: p.isoName, extent: p.blocks[k]!, dataLength: len, flags: k < lens.length - 1 ? FLAG_MULTI_EXTENT : 0, systemUse: su }));
          image.set(node.data.subarray(off, off + len), p.blocks[k]! * SECTOR);
          off += len;
        });
        if (i === 0 && (node.name === 'boot.bin' || node.name === 'efi.img')) bootFiles.push(p.blocks[0]!, node.data.byteLength);
      } else {
        recs.push(rec({ name: p.isoName, extent: 0, dataLength: 0, flags: 0, systemUse: su }));
      }
    }
    let at = d.block * SECTOR;
    for (const r of recs) {
      if ((at % SECTOR) + r.byteLength > SECTOR) at = (Math.floor(at / SECTOR) + 1) * SECTOR;
      image.set(r, at);
      at += r.byteLength;
    }
  });
  const pvd: VolumeDescriptor = {
    type: 'primary', jolietLevel: 0, systemId: 'LINUX', volumeId: 'TESTISO', volumeBlocks: total, blockSize: SECTOR,
    pathTableSize: 0, pathTableL: 0, pathTableM: 0,
    root: { extAttrLength: 0, extent: dirs[0]!.block, dataLength: dirs[0]!.size, recorded: time, flags: FLAG_DIRECTORY, fileUnitSize: 0, interleaveGap: 0, volumeSequence: 1, name: Uint8Array.of(0), systemUse: new Uint8Array(), isDirectory: true, multiExtent: false },
    volumeSetId: '', publisherId: '', preparerId: '', applicationId: 'LIVESTICK TEST', created: time, modified: time, dateDigits: undefined,
  };
  image.set(encodeDescriptor(pvd), 16 * SECTOR);
  if (options.boot) {
    image.set(encodeDescriptor({ type: 'boot', systemId: 'EL TORITO SPECIFICATION', catalogSector: catalogBlock }), 17 * SECTOR);
    const [biosRba = 0, biosLen = 0, efiRba = 0, efiLen = 0] = bootFiles;
    const c = catalogBlock * SECTOR;
    image.set(encodeValidation({ platform: PLATFORM_X86, idString: 'TEST' }), c);
    image.set(encodeBootEntry({ bootable: true, media: 'no-emulation', loadSegment: 0, systemType: 0, sectorCount: Math.ceil(biosLen / 512), loadRba: biosRba, criteriaType: 0, hasExtensions: false }), c + 32);
    image.set(encodeSectionHeader({ last: true, platform: PLATFORM_EFI, count: 1, idString: '' }), c + 64);
    image.set(encodeBootEntry({ bootable: true, media: 'no-emulation', loadSegment: 0, systemType: 0, sectorCount: Math.ceil(efiLen / 512), loadRba: efiRba, criteriaType: 0, hasExtensions: false }), c + 96);
  }
  image.set(encodeDescriptor({ type: 'terminator' }), (options.boot ? 18 : 17) * SECTOR);
  return image;
}

const bytes = (n: number, seed: number) => Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed * 7 + (i >> 8)) & 0xff);

/** A tree touching every feature the builder has. */
export const SAMPLE: TestNode & { kind: 'dir' } = {
  kind: 'dir',
  name: '',
  children: [
    { kind: 'file', name: 'boot.bin', data: bytes(4096, 1) },
    { kind: 'file', name: 'efi.img', data: bytes(10_000, 2) },
    { kind: 'file', name: 'multi-extent.bin', data: bytes(5 * SECTOR + 123, 3), extentSize: 2 * SECTOR },
    { kind: 'file', name: 'empty', data: new Uint8Array() },
    { kind: 'file', name: 'a name long enough that its NM entry is split into several pieces ✓.txt', mode: 0o600, data: bytes(10, 4) },
    { kind: 'symlink', name: 'abs', target: '/usr/lib/some/really/long/component-name-that-continues' },
    { kind: 'symlink', name: 'rel', target: '../x/y' },
    { kind: 'dir', name: 'sub', mode: 0o700, children: [{ kind: 'file', name: 'inner.txt', data: bytes(3000, 5) }] },
  ],
};
