// Least-recently-used caches shared by the image readers (SquashFS, EROFS).

/** An LRU bounded by the sum of its values' weights (bytes, entries); it keeps at least one value. */
export class WeightedLru<K, V> {
  readonly #max: number;
  #total = 0;
  readonly #map = new Map<K, { value: V; weight: number }>();

  constructor(max: number) {
    this.#max = max;
  }

  get(k: K): V | undefined {
    const v = this.#map.get(k);
    if (v === undefined) return undefined;
    this.#map.delete(k);
    this.#map.set(k, v);
    return v.value;
  }

  /** Whether `k` is cached (without making it the most recent). */
  has(k: K): boolean {
    return this.#map.has(k);
  }

  set(k: K, value: V, weight: number): void {
    const old = this.#map.get(k);
    if (old !== undefined) {
      this.#map.delete(k);
      this.#total -= old.weight;
    }
    this.#map.set(k, { value, weight });
    this.#total += weight;
    while (this.#total > this.#max && this.#map.size > 1) {
      const [oldK, oldV] = this.#map.entries().next().value as [K, { value: V; weight: number }];
      this.#map.delete(oldK);
      this.#total -= oldV.weight;
    }
  }
}

/** An LRU of at most `max` entries. */
export class LruCache<K, V> {
  readonly #max: number;
  readonly #map = new Map<K, V>();
  constructor(max: number) {
    this.#max = Math.max(1, max);
  }
  get(key: K): V | undefined {
    const v = this.#map.get(key);
    if (v !== undefined) {
      this.#map.delete(key);
      this.#map.set(key, v);
    }
    return v;
  }
  set(key: K, value: V): void {
    this.#map.delete(key);
    this.#map.set(key, value);
    if (this.#map.size > this.#max) this.#map.delete(this.#map.keys().next().value as K);
  }
}
