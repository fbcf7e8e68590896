// Key slots: the one index from affinity keys to the slot numbers that affinity tables address
// their columns by, shared by tables that hold the same users (the session table and the
// session records), so each user's key and index entry exist once per process, as bytes off the
// V8 heap. Layer 2 state owner: no I/O, no clock; knows nothing of what the tables keep per slot.
import { randomFillSync } from 'node:crypto'
import { KeyArena } from './key-arena.js'
import { halfSipHash } from './key-hash.js'

/** A table's membership bit in a {@link KeySlots} (one of at most 8). */
export type SlotOwner = number

const MAX_OWNERS = 8
const INITIAL_CAPACITY = 1024
/**
 * Most slots allocated up front for an expected number of keys (saves the copies of growing;
 * typed arrays are zero-filled by calloc, so pages no slot has touched cost no RSS). Measured at
 * 1M keys: no RSS difference against growing from 1024, unlike the tables' wider columns.
 */
const PREALLOCATED = 1 << 22
/** Buckets of a new index (a power of two). */
const INITIAL_BUCKETS = 2048
/** The index doubles before more than this share of its buckets is taken (linear probing stays short). */
const MAX_LOAD = 0.7
/** V8 makes a substring at least this long a slice of its parent (SlicedString::kMinLength). */
const SLICE_MIN = 13

export interface KeySlotsOptions {
  /** The hash key (two uint32s); default: random per index. Tests pin it to be repeatable. */
  readonly seed?: readonly [number, number]
  /** Keys expected at most (`affinity.max_entries`): slot columns for up to 4M of them are allocated up front. */
  readonly capacity?: number
}

/**
 * Key -> slot, where a slot is held by one or more owners (tables); a slot no owner holds is
 * freed and reused for the next new key. Slot numbers are dense from 0, so owners keep their
 * per-slot data in typed arrays indexed by slot and grow them with {@link growCapacity}.
 *
 * Layout, all off the V8 heap (no string or object per key): the key's bytes in a
 * {@link KeyArena} (size-classed pages, Latin-1 or UTF-16), and per slot its key's hash (Int32),
 * shape (length and width, Uint32), arena location (Uint32, and the free-slot list's link while
 * free) and owner bits (Uint8); an open-addressing index of slot + 1 (Int32Array, power-of-two
 * buckets, linear probing, load <= 0.7, backward-shift deletion, so no tombstones) over the
 * keys' hashes. A lookup hashes the string's code units, probes, and compares bytes only where
 * the 32-bit hash matches: it allocates nothing. Measured at 1M 32-character keys
 * (bench/session-memory.mjs, Node 20): ~54 bytes a key (32 of key bytes, 13 of slot columns, 8
 * of index at 2^21 buckets), where a `Map<string, number>` with flat key strings took ~86 heap
 * bytes (string 48, entry ~30, slot->key 8) and grew the young generation by ~25 MB while filling;
 * lookups and claims were also about twice as fast (bench/key-slots-speed.mjs).
 *
 * Hash flooding: keys come from clients (headers, cookies, addresses). The bucket is the low
 * bits of {@link halfSipHash} under a 64-bit key drawn at random per index and never exposed
 * (listings walk slots, not buckets), so a client cannot choose keys that share buckets: probe
 * sequences stay as short as for random keys, whatever the keys look like.
 *
 * Keys are stored as their own bytes, so a key cut out of a request header (an application
 * cookie's value, a V8 slice of the whole Cookie header) never keeps that header alive, and
 * {@link keyAt} and {@link stored} return new flat strings.
 *
 * Example:
 * ```ts
 * const slots = new KeySlots()
 * const a = slots.owner(), b = slots.owner()
 * const s = slots.claim('10.0.0.5', a)  // -> 0
 * slots.claim('10.0.0.5', b)            // -> 0, the same slot
 * slots.release(s, a); slots.slotOf('10.0.0.5')  // -> 0 (b still holds it)
 * slots.release(s, b); slots.slotOf('10.0.0.5')  // -> undefined, slot 0 is free again
 * ```
 */
export class KeySlots {
  readonly #arena = new KeyArena()
  readonly #k0: number
  readonly #k1: number
  /** slot + 1 per bucket; 0: empty. */
  #buckets = new Int32Array(INITIAL_BUCKETS)
  #mask = INITIAL_BUCKETS - 1
  #maxSize = Math.floor(INITIAL_BUCKETS * MAX_LOAD)
  #capacity: number
  #hash: Int32Array
  #shape: Uint32Array
  /** A held slot's arena location; a free slot's next free slot + 1 (0: none). */
  #loc: Uint32Array
  #owners: Uint8Array
  /** The last freed slot + 1 (0: none); freed slots are reused last in, first out. */
  #freeSlot = 0
  #size = 0
  #used = 0
  #registered = 0
  /** Told each slot the last owner let go of, before it can be taken anew (see {@link onFree}). */
  readonly #freed: ((slot: number) => void)[] = []

  constructor(options: KeySlotsOptions = {}) {
    const seed = options.seed ?? randomFillSync(new Uint32Array(2))
    this.#k0 = seed[0]! | 0
    this.#k1 = seed[1]! | 0
    const capacity = Math.max(INITIAL_CAPACITY, Math.min(options.capacity ?? 0, PREALLOCATED))
    this.#capacity = capacity
    this.#hash = new Int32Array(capacity)
    this.#shape = new Uint32Array(capacity)
    this.#loc = new Uint32Array(capacity)
    this.#owners = new Uint8Array(capacity)
  }

  /** A new owner's bit. Throws a `RangeError` past 8 owners. */
  owner(): SlotOwner {
    if (this.#registered >= MAX_OWNERS) throw new RangeError(`key slots: at most ${MAX_OWNERS} owners`)
    return 1 << this.#registered++
  }

  /**
   * Call `listener` with each slot the last owner lets go of (before another key can take it):
   * for columns kept by slot outside the owners, which must not show a freed key's data to the
   * next key. Example: `slots.onFree((slot) => { answeredAt[slot] = 0 })`.
   */
  onFree(listener: (slot: number) => void): void {
    this.#freed.push(listener)
  }

  /** Keys held by any owner. */
  get size(): number {
    return this.#size
  }

  /** Slots ever handed out (high-water mark); freed slots are reused before this grows. */
  get used(): number {
    return this.#used
  }

  /** The slot of `key`, held by some owner, or undefined. */
  slotOf(key: string): number | undefined {
    const found = this.#find(key, halfSipHash(key, this.#k0, this.#k1))
    return found >= 0 ? found : undefined
  }

  /** Does `owner` hold `slot`? */
  holds(slot: number, owner: SlotOwner): boolean {
    return (this.#owners[slot]! & owner) !== 0
  }

  /** Does any owner hold `slot`? (Slots from 0 to {@link used} are held or free.) */
  taken(slot: number): boolean {
    return this.#owners[slot] !== 0
  }

  /** The key of a held slot, as a new flat string (decoded from the index's bytes: not for the request path). */
  keyAt(slot: number): string {
    return this.#arena.read(this.#loc[slot]!, this.#shape[slot]!)
  }

  /** The slot of `key`, now held by `owner` too (a free or new slot when no owner held the key). */
  claim(key: string, owner: SlotOwner): number {
    const h = halfSipHash(key, this.#k0, this.#k1)
    let slot = this.#find(key, h)
    if (slot < 0) {
      let bucket = ~slot
      if (this.#size >= this.#maxSize) {
        this.#rehash(this.#buckets.length * 2)
        bucket = ~this.#find(key, h)
      }
      slot = this.#freeSlot - 1
      if (slot >= 0) {
        this.#freeSlot = this.#loc[slot]!
      } else {
        slot = this.#used++
        if (slot === this.#capacity) this.#grow(slot)
      }
      const shape = KeyArena.shapeOf(key)
      this.#hash[slot] = h
      this.#shape[slot] = shape
      this.#loc[slot] = this.#arena.put(key, shape)
      this.#buckets[bucket] = slot + 1
      this.#size++
    }
    this.#owners[slot]! |= owner
    return slot
  }

  /**
   * A flat copy of `key` that is no slice of the caller's string: what a side map keyed by the
   * same users should hold (never the caller's string, which may be a slice of a request
   * header). Example: `slots.stored(header.slice(16))` -> the same characters, in a new string.
   */
  stored(key: string): string {
    const slot = this.slotOf(key)
    return slot === undefined ? ownCopy(key) : this.keyAt(slot)
  }

  /** `owner` lets go of `slot`; the last owner's release frees the slot and forgets its key. */
  release(slot: number, owner: SlotOwner): void {
    const left = this.#owners[slot]! & ~owner
    this.#owners[slot] = left
    if (left !== 0) return
    this.#unindex(slot)
    this.#arena.free(this.#loc[slot]!, this.#shape[slot]!)
    this.#loc[slot] = this.#freeSlot
    this.#freeSlot = slot + 1
    this.#size--
    for (const listener of this.#freed) listener(slot)
  }

  /** Every slot `owner` holds, with its key, in slot order (O(slots used)). */
  *held(owner: SlotOwner): IterableIterator<[string, number]> {
    for (let slot = 0; slot < this.#used; slot++) if ((this.#owners[slot]! & owner) !== 0) yield [this.keyAt(slot), slot]
  }

  /**
   * The longest distance of a key from its home bucket, and the mean (a diagnostic for tests
   * and benchmarks; O(buckets)). Example: `slots.probes()` -> `{ longest: 9, mean: 0.6 }`.
   */
  probes(): { readonly longest: number; readonly mean: number } {
    let longest = 0
    let total = 0
    const mask = this.#mask
    for (let i = 0; i <= mask; i++) {
      const e = this.#buckets[i]!
      if (e === 0) continue
      const d = (i - (this.#hash[e - 1]! & mask)) & mask
      total += d
      if (d > longest) longest = d
    }
    return { longest, mean: this.#size === 0 ? 0 : total / this.#size }
  }

  /** The slot of `key` (hash `h`), or `~bucket` of the empty bucket where it would go. */
  #find(key: string, h: number): number {
    const buckets = this.#buckets
    const mask = this.#mask
    const n = key.length
    for (let i = h & mask; ; i = (i + 1) & mask) {
      const e = buckets[i]!
      if (e === 0) return ~i
      const slot = e - 1
      if (this.#hash[slot] === h) {
        const shape = this.#shape[slot]!
        if (shape >>> 1 === n && this.#arena.equals(this.#loc[slot]!, shape, key)) return slot
      }
    }
  }

  /** Takes a held slot out of the index, shifting back the keys after it that may move closer to home. */
  #unindex(slot: number): void {
    const buckets = this.#buckets
    const mask = this.#mask
    let hole = this.#hash[slot]! & mask
    while (buckets[hole] !== slot + 1) hole = (hole + 1) & mask
    for (let j = (hole + 1) & mask; ; j = (j + 1) & mask) {
      const e = buckets[j]!
      if (e === 0) break
      const home = this.#hash[e - 1]! & mask
      // e may fill the hole unless its home lies cyclically in (hole, j]
      if (((j - home) & mask) >= ((j - hole) & mask)) {
        buckets[hole] = e
        hole = j
      }
    }
    buckets[hole] = 0
  }

  /** Rebuilds the index with `size` buckets (a power of two). */
  #rehash(size: number): void {
    const old = this.#buckets
    const buckets = new Int32Array(size)
    const mask = size - 1
    for (let i = 0; i < old.length; i++) {
      const e = old[i]!
      if (e === 0) continue
      let j = this.#hash[e - 1]! & mask
      while (buckets[j] !== 0) j = (j + 1) & mask
      buckets[j] = e
    }
    this.#buckets = buckets
    this.#mask = mask
    this.#maxSize = Math.floor(size * MAX_LOAD)
  }

  /** Grows the per-slot columns to cover `slot`. */
  #grow(slot: number): void {
    const capacity = growCapacity(this.#capacity, slot, Infinity)
    const grow = <T extends Int32Array | Uint32Array | Uint8Array>(a: T, make: (n: number) => T): T => {
      const b = make(capacity)
      b.set(a)
      return b
    }
    this.#hash = grow(this.#hash, (n) => new Int32Array(n))
    this.#shape = grow(this.#shape, (n) => new Uint32Array(n))
    this.#loc = grow(this.#loc, (n) => new Uint32Array(n))
    this.#owners = grow(this.#owners, (n) => new Uint8Array(n))
    this.#capacity = capacity
  }
}

/**
 * `s` as a flat string of its own: a slice keeps its whole parent alive, a concatenation its
 * parts. Example: `ownCopy(cookieHeader.slice(16))` -> the same characters, in a new string.
 */
export function ownCopy(s: string): string {
  return s.length < SLICE_MIN ? s : (JSON.parse(JSON.stringify(s)) as string)
}

/**
 * The capacity of per-slot columns that must now cover `slot`: doubling while small, then
 * growing by a quarter (a doubled column wastes up to half of it at 1M+ users), never past
 * `limit` unless `slot` needs it. Example: `growCapacity(1024, 1024, 1e6)` -> 2048;
 * `growCapacity(524_288, 524_288, 1e6)` -> 655,360; `growCapacity(800_000, 800_000, 1e6)` -> 1,000,000.
 */
export function growCapacity(capacity: number, slot: number, limit: number): number {
  const next = capacity < 0x4_0000 ? capacity * 2 : capacity + (capacity >>> 2)
  return Math.max(slot + 1, slot < limit ? Math.min(next, limit) : next)
}
