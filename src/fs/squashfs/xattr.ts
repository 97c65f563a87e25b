/** Extended attributes (§2.6): key/value records in their own metadata stream, found via the xattr-id table. */
import { CorruptImageError } from '../../errors.ts';
import type { Disk } from '../../io/disk.ts';
import { readU64, toSafeNumber, view } from '../../io/bytes.ts';
import type { Compressor } from './comp/types.ts';
import { MetadataReader, MetadataWriter, posToRef, refToPos } from './metadata.ts';
import { readLookupTable } from './tables.ts';

export const XATTR_PREFIXES = ['user.', 'trusted.', 'security.'] as const;

export interface Xattr {
  /** Full name with its prefix, e.g. "user.comment". */
  readonly name: string;
  readonly value: Uint8Array;
}

interface XattrId {
  readonly ref: bigint;
  readonly count: number;
  readonly size: number;
}

export class XattrTable {
  readonly #kv: MetadataReader;
  readonly #ids: XattrId[];

  private constructor(kv: MetadataReader, ids: XattrId[]) {
    this.#kv = kv;
    this.#ids = ids;
  }

  get count(): number {
    return this.#ids.length;
  }

  static async open(disk: Disk, comp: Compressor, at: number, bytesUsed: number): Promise<XattrTable> {
    if (at + 16 > bytesUsed) throw new CorruptImageError('squashfs', 'xattr table header', 'runs past the image end', at);
    const hdr = new Uint8Array(16);
    await disk.read(hdr, at);
    const hv = view(hdr);
    const kvStart = readU64(hv, 0, 'squashfs', 'xattr table.kv_start');
    const count = hv.getUint32(8, true);
    if (kvStart >= at) throw new CorruptImageError('squashfs', 'xattr table.kv_start', `${kvStart} is not before the table`, at);
    if (count * 16 > bytesUsed) throw new CorruptImageError('squashfs', 'xattr table.ids', `${count} ids cannot fit in the image`, at + 8);
    const raw = await readLookupTable(disk, comp, at + 16, count, 16, bytesUsed, 'xattr id');
    const dv = view(raw);
    const ids: XattrId[] = [];
    for (let i = 0; i < count; i++) {
      ids.push({ ref: dv.getBigUint64(i * 16, true), count: dv.getUint32(i * 16 + 8, true), size: dv.getUint32(i * 16 + 12, true) });
    }
    const firstIndex = count > 0 ? readU64(view(await readBytes(disk, at + 16, 8)), 0, 'squashfs', 'xattr id index') : at;
    return new XattrTable(new MetadataReader(disk, comp, kvStart, Math.min(firstIndex, at), 'xattr', 16), ids);
  }

  async get(index: number): Promise<Xattr[]> {
    const id = this.#ids[index];
    if (id === undefined) throw new CorruptImageError('squashfs', 'xattr index', `${index} is past the xattr-id table`);
    if (id.count > id.size / 8) throw new CorruptImageError('squashfs', 'xattr id.count', `${id.count} pairs cannot fit in ${id.size} bytes`);
    const pos = refToPos(id.ref);
    const out: Xattr[] = [];
    for (let i = 0; i < id.count; i++) {
      const kh = view(await this.#kv.read(pos, 4));
      const type = kh.getUint16(0, true);
      const nameSize = kh.getUint16(2, true);
      const prefix = XATTR_PREFIXES[type & 0xff];
      if (prefix === undefined || type & ~0x1ff) throw new CorruptImageError('squashfs', 'xattr key.type', `${type} is not user/trusted/security`);
      const name = prefix + Buffer.from(await this.#kv.read(pos, nameSize)).toString('utf8');
      const size = view(await this.#kv.read(pos, 4)).getUint32(0, true);
      let value: Uint8Array;
      if (type & 0x100) {
        if (size !== 8) throw new CorruptImageError('squashfs', 'xattr value', `out-of-line reference has size ${size}, not 8`);
        const ref = view(await this.#kv.read(pos, 8)).getBigUint64(0, true);
        const vpos = refToPos(ref);
        const vsize = view(await this.#kv.read(vpos, 4)).getUint32(0, true);
        if (vsize > this.#kv.length * 2731) throw new CorruptImageError('squashfs', 'xattr value.size', `${vsize} cannot fit in the xattr table`);
        value = await this.#kv.read(vpos, vsize);
      } else {
        if (size > this.#kv.length * 2731) throw new CorruptImageError('squashfs', 'xattr value.size', `${size} cannot fit in the xattr table`);
        value = await this.#kv.read(pos, size);
      }
      out.push({ name, value });
    }
    return out;
  }
}

async function readBytes(disk: Disk, at: number, n: number): Promise<Uint8Array> {
  const b = new Uint8Array(n);
  await disk.read(b, at);
  return b;
}

/** Splits "user.foo" into the on-disk type and the name without prefix; undefined for other namespaces. */
export function splitXattrName(name: string): { type: number; key: Uint8Array } | undefined {
  for (let t = 0; t < XATTR_PREFIXES.length; t++) {
    const p = XATTR_PREFIXES[t] as string;
    if (name.startsWith(p) && name.length > p.length) return { type: t, key: Buffer.from(name.slice(p.length), 'utf8') };
  }
  return undefined;
}

/** Collects distinct xattr sets for the writer; identical sets share one id. */
export class XattrWriter {
  readonly #kv: MetadataWriter;
  readonly #ids: Array<{ ref: bigint; count: number; size: number }> = [];
  readonly #byKey = new Map<string, number>();

  constructor(comp: Compressor) {
    this.#kv = new MetadataWriter(comp);
  }

  get count(): number {
    return this.#ids.length;
  }

  /** Returns the xattr index for a set, or undefined when it is empty (or holds only unsupported namespaces). */
  add(xattrs: readonly Xattr[]): number | undefined {
    const items = xattrs
      .map((x) => ({ split: splitXattrName(x.name), value: x.value, name: x.name }))
      .filter((x): x is { split: { type: number; key: Uint8Array }; value: Uint8Array; name: string } => x.split !== undefined)
      .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    if (items.length === 0) return undefined;
    const key = items.map((x) => `${x.name}\0${Buffer.from(x.value).toString('base64')}`).join('\0');
    const known = this.#byKey.get(key);
    if (known !== undefined) return known;
    const pos = this.#kv.position;
    let size = 0;
    for (const x of items) {
      const rec = new Uint8Array(4 + x.split.key.byteLength + 4 + x.value.byteLength);
      const dv = view(rec);
      dv.setUint16(0, x.split.type, true);
      dv.setUint16(2, x.split.key.byteLength, true);
      rec.set(x.split.key, 4);
      dv.setUint32(4 + x.split.key.byteLength, x.value.byteLength, true);
      rec.set(x.value, 8 + x.split.key.byteLength);
      this.#kv.write(rec);
      size += rec.byteLength;
    }
    const id = this.#ids.length;
    this.#ids.push({ ref: posToRef(pos.block, pos.offset), count: items.length, size });
    this.#byKey.set(key, id);
    return id;
  }

  finish(): { kv: Uint8Array; ids: Uint8Array } {
    const { bytes } = this.#kv.finish();
    const ids = new Uint8Array(this.#ids.length * 16);
    const dv = view(ids);
    this.#ids.forEach((e, i) => {
      dv.setBigUint64(i * 16, e.ref, true);
      dv.setUint32(i * 16 + 8, e.count, true);
      dv.setUint32(i * 16 + 12, e.size, true);
    });
    return { kv: bytes, ids };
  }
}

export { toSafeNumber };
