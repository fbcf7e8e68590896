// Key slots: the one index from affinity keys to the slot numbers that affinity tables address
// their columns by, shared by tables that hold the same users (the session table and the
// session records), so each user's key string and index entry exist once per process. Layer 2
// state owner: no I/O, no clock; knows nothing of what the tables keep per slot.

/** A table's membership bit in a {@link KeySlots} (one of at most 8). */
export type SlotOwner = number

const MAX_OWNERS = 8
const INITIAL_CAPACITY = 1024
/** V8 makes a substring at least this long a slice of its parent (SlicedString::kMinLength). */
const SLICE_MIN = 13

/**
 * Key -> slot, where a slot is held by one or more owners (tables); a slot no owner holds is
 * freed and reused for the next new key. Slot numbers are dense from 0, so owners keep their
 * per-slot data in typed arrays indexed by slot and grow them with {@link growCapacity}.
 *
 * Layout: a `Map<string, number>`, the key of each slot (for removing it from the Map when its
 * last owner lets go), a Uint8Array of owner bits per slot and a stack of freed slots. A new key
 * is stored as its own flat copy: a key cut out of a request header (an application cookie's
 * value) is a V8 slice that would otherwise keep the whole Cookie header alive for as long as
 * the user is held (measured: 1,750 instead of 375 bytes a key for a 308-character cookie).
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
  readonly #index = new Map<string, number>()
  readonly #keys: (string | undefined)[] = []
  #owners = new Uint8Array(INITIAL_CAPACITY)
  readonly #free: number[] = []
  #used = 0
  #registered = 0

  /** A new owner's bit. Throws a `RangeError` past 8 owners. */
  owner(): SlotOwner {
    if (this.#registered >= MAX_OWNERS) throw new RangeError(`key slots: at most ${MAX_OWNERS} owners`)
    return 1 << this.#registered++
  }

  /** Keys held by any owner. */
  get size(): number {
    return this.#index.size
  }

  /** Slots ever handed out (high-water mark); freed slots are reused before this grows. */
  get used(): number {
    return this.#used
  }

  /** The slot of `key`, held by some owner, or undefined. */
  slotOf(key: string): number | undefined {
    return this.#index.get(key)
  }

  /** Does `owner` hold `slot`? */
  holds(slot: number, owner: SlotOwner): boolean {
    return (this.#owners[slot]! & owner) !== 0
  }

  /** The key of a held slot. */
  keyAt(slot: number): string {
    return this.#keys[slot]!
  }

  /** The slot of `key`, now held by `owner` too (a free or new slot when no owner held the key). */
  claim(key: string, owner: SlotOwner): number {
    let slot = this.#index.get(key)
    if (slot === undefined) {
      slot = this.#free.pop()
      if (slot === undefined) {
        slot = this.#used++
        if (slot === this.#owners.length) {
          const grown = new Uint8Array(growCapacity(this.#owners.length, slot, Infinity))
          grown.set(this.#owners)
          this.#owners = grown
        }
      }
      const own = ownCopy(key)
      this.#index.set(own, slot)
      this.#keys[slot] = own
    }
    this.#owners[slot]! |= owner
    return slot
  }

  /**
   * The index's own copy of `key` when some owner holds it, else a flat copy: what a side map
   * keyed by the same users should hold (never the caller's string, which may be a slice of a
   * request header). Example: `slots.stored(header.slice(16))` -> the string the index keeps.
   */
  stored(key: string): string {
    const slot = this.#index.get(key)
    return slot === undefined ? ownCopy(key) : this.#keys[slot]!
  }

  /** `owner` lets go of `slot`; the last owner's release frees the slot and forgets its key. */
  release(slot: number, owner: SlotOwner): void {
    const left = this.#owners[slot]! & ~owner
    this.#owners[slot] = left
    if (left !== 0) return
    this.#index.delete(this.#keys[slot]!)
    this.#keys[slot] = undefined
    this.#free.push(slot)
  }

  /** Every slot `owner` holds, with its key, in no particular order (O(size)). */
  *held(owner: SlotOwner): IterableIterator<[string, number]> {
    for (const entry of this.#index) if ((this.#owners[entry[1]]! & owner) !== 0) yield entry
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
