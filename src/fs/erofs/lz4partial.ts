/**
 * A raw LZ4 block decoder that stops once `outLen` bytes are produced (what EROFS needs for pclusters
 * without LZ4_0PADDING, whose compressed stream is followed by padding, and for partial references).
 * Every copy is bounds-checked against input and output; malformed input throws RangeError.
 */
export function lz4DecodePrefix(src: Uint8Array, outLen: number): Uint8Array {
  const out = new Uint8Array(outLen);
  let ip = 0;
  let op = 0;
  const fail = (what: string): never => {
    throw new RangeError(`malformed LZ4 block: ${what} at input byte ${ip}`);
  };
  while (op < outLen) {
    if (ip >= src.byteLength) fail('truncated token');
    const token = src[ip++] as number;
    let lit = token >>> 4;
    if (lit === 15) {
      for (;;) {
        if (ip >= src.byteLength) fail('truncated literal length');
        const b = src[ip++] as number;
        lit += b;
        if (b !== 255) break;
      }
    }
    const litCopy = Math.min(lit, outLen - op);
    if (ip + litCopy > src.byteLength) fail('literals past the input');
    out.set(src.subarray(ip, ip + litCopy), op);
    op += litCopy;
    ip += litCopy;
    if (op >= outLen) break;
    if (ip + 2 > src.byteLength) fail('truncated match offset');
    const offset = (src[ip] as number) | ((src[ip + 1] as number) << 8);
    ip += 2;
    if (offset === 0 || offset > op) fail(`match offset ${offset}`);
    let len = token & 15;
    if (len === 15) {
      for (;;) {
        if (ip >= src.byteLength) fail('truncated match length');
        const b = src[ip++] as number;
        len += b;
        if (b !== 255) break;
      }
    }
    len = Math.min(len + 4, outLen - op);
    for (let k = 0; k < len; k++, op++) out[op] = out[op - offset] as number;
  }
  return out;
}
