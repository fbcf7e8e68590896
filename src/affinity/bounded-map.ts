// A Map bounded by count, oldest entry out: the side maps of the session table and the session
// records. Layer 2 state owner: no I/O, no clock. Eviction costs O(1) amortized: a Map whose
// oldest entry is deleted over and over makes `keys().next()` skip every hole left at its
// front (about 50 µs per insert at 100,000 entries), so one iterator is kept instead.

/**
 * A Map holding at most `max` entries; {@link set} makes an entry the newest and drops the
 * oldest beyond `max`. Iteration is oldest first.
 *
 * Example: `const m = new BoundedMap<string, number>(2); m.set('a', 1); m.set('b', 2); m.set('a', 3); m.set('c', 4)`
 * -> `m.get('b')` is undefined ('b' was the oldest), `[...m]` is `[['a', 3], ['c', 4]]`.
 */
export class BoundedMap<K, V> {
  readonly #map = new Map<K, V>()
  readonly #max: number
  /**
   * Walks the map from its oldest entry: everything behind it was dropped by set, so the next
   * live entry it meets is the oldest one (Map iterators see later insertions and skip deleted entries).
   */
  readonly #oldest: Iterator<K> = this.#map.keys()

  /** Throws a `RangeError` when max is not an integer >= 1. */
  constructor(max: number) {
    if (!Number.isInteger(max) || max < 1) throw new RangeError(`bounded map: max must be an integer >= 1, got ${max}`)
    this.#max = max
  }

  get size(): number {
    return this.#map.size
  }

  get(k: K): V | undefined {
    return this.#map.get(k)
  }

  /** Set `k` to `v` as the newest entry, dropping the oldest one beyond the bound. */
  set(k: K, v: V): void {
    this.#map.delete(k)
    this.#map.set(k, v)
    if (this.#map.size > this.#max) this.#map.delete(this.#oldest.next().value as K)
  }

  delete(k: K): boolean {
    return this.#map.delete(k)
  }

  /** The entries, oldest first. */
  [Symbol.iterator](): IterableIterator<[K, V]> {
    return this.#map.entries()
  }
}
