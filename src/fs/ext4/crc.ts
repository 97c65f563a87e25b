/** Checksums used by ext4: crc32c (Castagnoli, reflected, slice-by-8, no final inversion) and crc16 (gdt_csum). */

const CRC32C_TABLES: Uint32Array[] = (() => {
  const t0 = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t0[i] = c >>> 0;
  }
  const tables = [t0];
  for (let n = 1; n < 8; n++) {
    const prev = tables[n - 1]!;
    const t = new Uint32Array(256);
    for (let i = 0; i < 256; i++) t[i] = (prev[i]! >>> 8) ^ t0[prev[i]! & 0xff]!;
    tables.push(t);
  }
  return tables;
})();

/** The kernel's `ext4_chksum(seed, data)`: crc32c update with no final inversion. */
export function crc32cUpdate(seed: number, data: Uint8Array, start = 0, end = data.byteLength): number {
  const [t0, t1, t2, t3, t4, t5, t6, t7] = CRC32C_TABLES as [Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array];
  let crc = seed >>> 0;
  let i = start;
  for (; i + 8 <= end; i += 8) {
    const a = crc ^ (data[i]! | (data[i + 1]! << 8) | (data[i + 2]! << 16) | (data[i + 3]! << 24));
    crc =
      t7[a & 0xff]! ^
      t6[(a >>> 8) & 0xff]! ^
      t5[(a >>> 16) & 0xff]! ^
      t4[a >>> 24]! ^
      t3[data[i + 4]!]! ^
      t2[data[i + 5]!]! ^
      t1[data[i + 6]!]! ^
      t0[data[i + 7]!]!;
  }
  for (; i < end; i++) crc = t0[(crc ^ data[i]!) & 0xff]! ^ (crc >>> 8);
  return crc >>> 0;
}

const scratch = new Uint8Array(8);
const scratchView = new DataView(scratch.buffer);

export function crc32cU32(seed: number, value: number): number {
  scratchView.setUint32(0, value >>> 0, true);
  return crc32cUpdate(seed, scratch, 0, 4);
}

export function crc32cU64(seed: number, value: number): number {
  scratchView.setBigUint64(0, BigInt(value), true);
  return crc32cUpdate(seed, scratch, 0, 8);
}

/** Standard crc32c (initial ~0, final inversion). */
export function crc32c(data: Uint8Array): number {
  return ~crc32cUpdate(0xffffffff, data) >>> 0;
}

const CRC16_TABLE = (() => {
  const t = new Uint16Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0xa001 : c >>> 1;
    t[i] = c;
  }
  return t;
})();

/** crc16 (poly 0x8005 reflected) as ext4's gdt_csum uses it. */
export function crc16Update(crc: number, data: Uint8Array, start = 0, end = data.byteLength): number {
  let c = crc & 0xffff;
  for (let i = start; i < end; i++) c = (CRC16_TABLE[(c ^ data[i]!) & 0xff]! ^ (c >>> 8)) & 0xffff;
  return c;
}
