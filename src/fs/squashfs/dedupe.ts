/**
 * The writer's dedupe index: what an image has stored for each file's content, by a 16-byte key
 * (the first half of a SHA-256) and the file's size, in typed arrays.
 *
 * Design notes
 * - A writer that streams a tree of any size keeps one record per distinct file, so a record must be
 *   small: about 60 bytes (key, size, start, sparse, fragment, its block-size words in one shared
 *   arena) against several hundred for a Map of strings to objects.
 * - Open addressing with linear probing over a power-of-two table kept at most half full; the slot
 *   comes from the key's first bytes (a SHA-256, so uniform). 128 bits make an accidental match as
 *   likely as a SHA-256 collision within a birthday bound of 2^64 files; the size is compared too.
 */
export interface StoredData {
  readonly start: number;
  readonly words: readonly number[];
  readonly fragment: number;
  readonly fragmentOffset: number;
  readonly sparse: number;
}

export const KEY_BYTES = 16;

export class DedupeIndex {
  #slots = new Int32Array(1024).fill(-1);
  #keys = new Uint8Array(512 * KEY_BYTES);
  #size = new Float64Array(512);
  #start = new Float64Array(512);
  #sparse = new Float64Array(512);
  #fragment = new Uint32Array(512);
  #fragmentOffset = new Uint32Array(512);
  #wordsAt = new Float64Array(512);
  #wordsLen = new Uint32Array(512);
  #words = new Uint32Array(4096);
  #wordsUsed = 0;
  #count = 0;

  get count(): number {
    return this.#count;
  }

  get(key: Uint8Array, size: number): StoredData | undefined {
    const r = this.#find(key, size);
    if (r < 0) return undefined;
    const at = this.#wordsAt[r] as number;
    return {
      start: this.#start[r] as number,
      words: Array.from(this.#words.subarray(at, at + (this.#wordsLen[r] as number))),
      fragment: this.#fragment[r] as number,
      fragmentOffset: this.#fragmentOffset[r] as number,
      sparse: this.#sparse[r] as number,
    };
  }

  /** Records a file's stored data under its key (a key already present keeps its first record). */
  set(key: Uint8Array, size: number, data: StoredData): void {
    if (key.byteLength < KEY_BYTES) throw new RangeError(`a dedupe key has ${KEY_BYTES} bytes, not ${key.byteLength}`);
    if (this.#find(key, size) >= 0) return;
    if ((this.#count + 1) * 2 > this.#slots.length) this.#rehash(this.#slots.length * 2);
    const r = this.#count++;
    if (r === this.#size.length) this.#growRecords();
    this.#keys.set(key.subarray(0, KEY_BYTES), r * KEY_BYTES);
    this.#size[r] = size;
    this.#start[r] = data.start;
    this.#sparse[r] = data.sparse;
    this.#fragment[r] = data.fragment;
    this.#fragmentOffset[r] = data.fragmentOffset;
    while (this.#wordsUsed + data.words.length > this.#words.length) this.#words = grown(this.#words, this.#words.length * 2);
    this.#words.set(data.words, this.#wordsUsed);
    this.#wordsAt[r] = this.#wordsUsed;
    this.#wordsLen[r] = data.words.length;
    this.#wordsUsed += data.words.length;
    this.#place(r);
  }

  #hashOf(key: Uint8Array, mask: number): number {
    return (key[0]! | (key[1]! << 8) | (key[2]! << 16) | (key[3]! << 24)) & mask;
  }

  #find(key: Uint8Array, size: number): number {
    const mask = this.#slots.length - 1;
    for (let s = this.#hashOf(key, mask); ; s = (s + 1) & mask) {
      const r = this.#slots[s] as number;
      if (r < 0) return -1;
      if (this.#size[r] === size && this.#keyEquals(r, key)) return r;
    }
  }

  #keyEquals(r: number, key: Uint8Array): boolean {
    const at = r * KEY_BYTES;
    for (let i = 0; i < KEY_BYTES; i++) if (this.#keys[at + i] !== key[i]) return false;
    return true;
  }

  #place(r: number): void {
    const mask = this.#slots.length - 1;
    const key = this.#keys.subarray(r * KEY_BYTES, (r + 1) * KEY_BYTES);
    let s = this.#hashOf(key, mask);
    while ((this.#slots[s] as number) >= 0) s = (s + 1) & mask;
    this.#slots[s] = r;
  }

  #rehash(slots: number): void {
    this.#slots = new Int32Array(slots).fill(-1);
    for (let r = 0; r < this.#count; r++) this.#place(r);
  }

  #growRecords(): void {
    const n = this.#size.length * 2;
    this.#keys = grown(this.#keys, n * KEY_BYTES);
    this.#size = grown(this.#size, n);
    this.#start = grown(this.#start, n);
    this.#sparse = grown(this.#sparse, n);
    this.#fragment = grown(this.#fragment, n);
    this.#fragmentOffset = grown(this.#fragmentOffset, n);
    this.#wordsAt = grown(this.#wordsAt, n);
    this.#wordsLen = grown(this.#wordsLen, n);
  }
}

function grown<T extends Uint8Array | Uint32Array | Float64Array>(a: T, length: number): T {
  const b = new (a.constructor as new (n: number) => T)(length);
  b.set(a);
  return b;
}
