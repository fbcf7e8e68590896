// The in-memory affinity table: key -> (upstream id, epoch, createdAt, lastSeen), bounded by
// maxEntries with LRU eviction, sliding idle expiry and optional absolute expiry. Layer 2
// state owner: no I/O, no timers and no Date.now (every call takes `now`); background sweeping
// is someone else's owned, stoppable loop calling sweep(). Data-oriented for 1M+ entries.
import type { AffinityEntry, AffinityStore, AffinityStoreOptions } from './store.js'
import { KeySlots, growCapacity, type SlotOwner } from './key-slots.js'

const NONE = -1
/** What #set did: took a slot for a new key, updated a held one, or refused (a later epoch held). */
const TOOK_SLOT = 1
const UPDATED = 0
const REFUSED = -1
/**
 * Column slots allocated up front (at most maxEntries). Typed arrays are zero-filled by calloc,
 * so pages no slot has touched cost address space, not RSS; growing by copying leaves the
 * freed smaller columns in malloc's heap (measured: ~16 MB more RSS at 1M entries when the
 * columns grew by quarters from 256k slots; about even with plain doubling).
 */
const PREALLOCATED = 1 << 22
/** Upstream ids are interned into a Uint16Array column. */
const MAX_UPSTREAMS = 0x1_0000
/** Times are whole ms after the table's base, in Uint32 columns: a window of 2^32 ms (49.7 days). */
export const TIME_MAX = 0xffff_ffff
/** A new base lies this far before the time that moved it (24.8 days), leaving as much after it. */
export const TIME_SLACK = 2 ** 31

export interface AffinityTableOptions extends AffinityStoreOptions {
  /**
   * The key index to share with other tables holding the same users (each key string and index
   * entry then exists once); default: a private one.
   */
  readonly slots?: KeySlots
}

/**
 * The default {@link AffinityStore}: all bindings in memory, in columns.
 *
 * Layout: a {@link KeySlots} index from key to slot (private, or shared with another table
 * holding the same users: the session records share the session table's); per slot,
 * typed-array columns for the upstream (a Uint16 index into an intern table of upstream ids),
 * epoch (Uint32), createdAt and lastSeen (Uint32 ms after a base, see #time) and a doubly linked
 * LRU list (Int32 prev/next), 22 bytes a slot, allocated up front for min(maxEntries, 4M) slots.
 * Measured at 1M entries (bench/session-memory.mjs, Node 20): 76 heap bytes an entry with
 * 32-character keys (KeySlots ~54: key bytes 32, slot columns 13, index 8; columns 22), 60 with
 * IPv4 keys; the process grows by ~84 and ~67 bytes an entry of RSS. Nothing per entry is on
 * the V8 heap (before: a key string and a Map entry, 119 heap and ~165 RSS bytes an entry).
 * A second table on the same KeySlots adds only its columns (22 bytes a slot).
 *
 * Upstream ids are interned by name, so bindings survive config reloads and discovery changes
 * as long as the id is the same; an id whose last binding goes away is forgotten (pod names
 * from discovery come and go). Per-upstream counts are kept incrementally for bounded loads.
 *
 * Recency: `get` is a use (refreshes lastSeen and moves the entry to the head); `peek` is not.
 * Because lastSeen follows recency, the least recently used entry is also the most idle one,
 * so `sweep` only has to look at the tail.
 *
 * Example:
 * ```ts
 * const table = new AffinityTable({ maxEntries: 1_000_000, idleTimeout: 3 * 3_600_000 })
 * table.set('9f86d081884c7d659a2feaa0c55ad015', 'app-0', 0, clock.now())
 * table.get('9f86d081884c7d659a2feaa0c55ad015', clock.now())  // -> { upstream: 'app-0', epoch: 0, ... }
 * table.countByUpstream('app-0')  // -> 1
 * ```
 */
export class AffinityTable implements AffinityStore {
  readonly #maxEntries: number
  readonly #idleTimeout: number
  readonly #absoluteTimeout: number
  readonly #slots: KeySlots
  readonly #owner: SlotOwner
  #size = 0
  #capacity: number
  #upstream: Uint16Array
  #epoch: Uint32Array
  /** ms after #base (Uint32: see {@link #time}). */
  #createdAt: Uint32Array
  #lastSeen: Uint32Array
  /** The time (ms) the time columns count from; NaN until the first write. */
  #base = NaN
  #prev: Int32Array
  #next: Int32Array
  #head = NONE // most recently used
  #tail = NONE // least recently used
  readonly #ids: (string | undefined)[] = []
  readonly #idIndex = new Map<string, number>()
  readonly #counts: number[] = []
  readonly #freeIds: number[] = []
  #evictions = 0
  #expirations = 0

  /** Throws a `RangeError` when maxEntries is not an integer in 1..2^31-1 or a timeout is not > 0. */
  constructor(options: AffinityTableOptions) {
    const { maxEntries, idleTimeout } = options
    const absolute = options.absoluteTimeout ?? null
    if (!Number.isInteger(maxEntries) || maxEntries < 1 || maxEntries > 0x7fff_ffff) {
      throw new RangeError(`affinity table: maxEntries must be an integer in 1..${0x7fff_ffff}, got ${maxEntries}`)
    }
    if (!(idleTimeout > 0)) throw new RangeError(`affinity table: idleTimeout must be > 0 ms, got ${idleTimeout}`)
    if (absolute !== null && !(absolute > 0)) {
      throw new RangeError(`affinity table: absoluteTimeout must be > 0 ms, got ${absolute}`)
    }
    this.#maxEntries = maxEntries
    this.#idleTimeout = idleTimeout
    this.#absoluteTimeout = absolute ?? Infinity
    this.#slots = options.slots ?? new KeySlots({ capacity: maxEntries })
    this.#owner = this.#slots.owner()
    this.#capacity = Math.min(maxEntries, PREALLOCATED)
    this.#upstream = new Uint16Array(this.#capacity)
    this.#epoch = new Uint32Array(this.#capacity)
    this.#createdAt = new Uint32Array(this.#capacity)
    this.#lastSeen = new Uint32Array(this.#capacity)
    this.#prev = new Int32Array(this.#capacity)
    this.#next = new Int32Array(this.#capacity)
  }

  /** Bindings held, including expired ones not yet removed. */
  get size(): number {
    return this.#size
  }

  /** Slots ever allocated in the key index (high-water mark); freed slots are reused before this grows. */
  get slots(): number {
    return this.#slots.used
  }

  /** Live bindings dropped to make room for new ones (LRU), since construction. */
  get evictions(): number {
    return this.#evictions
  }

  /** Expired bindings removed (on lookup, by sweep, or found at the tail when making room). */
  get expirations(): number {
    return this.#expirations
  }

  get(key: string, now: number): AffinityEntry | null {
    const slot = this.#slotOf(key)
    if (slot === undefined) return null
    if (this.#isExpired(slot, now)) {
      this.#remove(slot)
      this.#expirations++
      return null
    }
    this.#lastSeen[slot] = this.#time(now)
    this.#toHead(slot)
    return this.#entry(slot)
  }

  peek(key: string, now: number): AffinityEntry | null {
    const slot = this.#slotOf(key)
    if (slot === undefined || this.#isExpired(slot, now)) return null
    return this.#entry(slot)
  }

  /**
   * Returns true when the key took a slot here (it was not held: new, evicted or deleted before),
   * false when its binding was updated in place. Throws a `RangeError` when 65,536 distinct
   * upstream ids are already bound, or the epoch is not a uint32.
   */
  set(key: string, upstream: string, epoch: number, now: number): boolean {
    return this.#set(key, upstream, epoch, now, false, NaN) === TOOK_SLOT
  }

  /**
   * As {@link set}, for a binding written elsewhere (another worker's pin): its creation time
   * there, `createdAt`, becomes this one's (at most `now`), so an absolute timeout ends it at the
   * same time everywhere, even where it expired and is made again by this write. One created
   * longer than the absolute timeout ago changes nothing (it has expired there too, or does in
   * a moment); a `createdAt` that is not a number counts as none (as {@link set}).
   */
  setCreated(key: string, upstream: string, epoch: number, now: number, createdAt: number): void {
    if (now - createdAt > this.#absoluteTimeout) return
    this.#set(key, upstream, epoch, now, false, Math.min(createdAt, now))
  }

  /**
   * As {@link set}, unless the key holds a live binding at a later epoch: that one is kept (an
   * answer from an epoch the user has left) and false returned; true when set.
   */
  setUnlessNewer(key: string, upstream: string, epoch: number, now: number): boolean {
    return this.#set(key, upstream, epoch, now, true, NaN) !== REFUSED
  }

  /**
   * A binding copied with its times from another table listing them most recently used first
   * ({@link byRecency}: a starting worker's snapshot): added as the least recently used one,
   * its lastSeen at most the one before it (so the LRU list stays in order; sweep and eviction
   * rely on it). Skipped, returning false, when this table holds the key already (a newer write
   * came first), when it has expired, or when the table is full (it would be the first evicted).
   */
  append(key: string, upstream: string, epoch: number, createdAt: number, lastSeen: number, now: number): boolean {
    if (this.#slotOf(key) !== undefined || this.#size >= this.#maxEntries) return false
    const t = this.#time(now)
    const seen = this.#past(Math.min(lastSeen, now), this.#tail === NONE ? t : this.#lastSeen[this.#tail]!)
    const created = this.#past(Math.min(createdAt, lastSeen, now), seen)
    if (t - seen > this.#idleTimeout || t - created > this.#absoluteTimeout) return false
    const u = this.#intern(upstream)
    this.#counts[u]!++
    const slot = this.#take(key, u, epoch, created, seen)
    this.#next[slot] = NONE
    this.#prev[slot] = this.#tail
    if (this.#tail !== NONE) this.#next[this.#tail] = slot
    this.#tail = slot
    if (this.#head === NONE) this.#head = slot
    return true
  }

  #set(key: string, upstream: string, epoch: number, now: number, unlessNewer: boolean, createdAt: number): typeof TOOK_SLOT | typeof UPDATED | typeof REFUSED {
    if (!Number.isInteger(epoch) || epoch < 0 || epoch > 0xffff_ffff) {
      throw new RangeError(`affinity table: epoch must be a uint32, got ${epoch}`)
    }
    let slot = this.#slotOf(key)
    if (unlessNewer && slot !== undefined && this.#epoch[slot]! > epoch && !this.#isExpired(slot, now)) return REFUSED
    const u = this.#intern(upstream)
    this.#counts[u]!++ // acquire first, so an eviction below cannot forget this id
    const t = this.#time(now)
    // the creation time of a write from elsewhere (NaN: none), in the window #time(now) set
    const created = createdAt === createdAt ? this.#past(createdAt, t) : t
    if (slot !== undefined) {
      if (this.#isExpired(slot, now)) {
        this.#expirations++
        this.#createdAt[slot] = created
      } else if (createdAt === createdAt) this.#createdAt[slot] = created
      this.#release(this.#upstream[slot]!)
      this.#upstream[slot] = u
      this.#epoch[slot] = epoch
      this.#lastSeen[slot] = t
      this.#toHead(slot)
      return UPDATED
    }
    if (this.#size >= this.#maxEntries) {
      const victim = this.#tail
      if (this.#isExpired(victim, now)) this.#expirations++
      else this.#evictions++
      this.#remove(victim)
    }
    slot = this.#take(key, u, epoch, created, t)
    this.#prev[slot] = NONE
    this.#next[slot] = this.#head
    if (this.#head !== NONE) this.#prev[this.#head] = slot
    this.#head = slot
    if (this.#tail === NONE) this.#tail = slot
    return TOOK_SLOT
  }

  /** Claims a slot for `key` and fills its columns (`u`: an interned upstream, counted already); the caller links it. */
  #take(key: string, u: number, epoch: number, created: number, seen: number): number {
    const slot = this.#slots.claim(key, this.#owner)
    if (slot >= this.#capacity) this.#grow(slot)
    this.#size++
    this.#upstream[slot] = u
    this.#epoch[slot] = epoch
    this.#createdAt[slot] = created
    this.#lastSeen[slot] = seen
    return slot
  }

  delete(key: string): boolean {
    const slot = this.#slotOf(key)
    if (slot === undefined) return false
    this.#remove(slot)
    return true
  }

  /**
   * Removes up to `budget` expired entries, starting at the least recently used end and
   * stopping at the first live one, so each call costs O(budget) whatever the table size.
   * An entry past its absolute timeout but recently used is removed on its next lookup instead
   * (or by sweep once it is also idle). Returns the number removed.
   * Example: `setInterval(() => table.sweep(clock.now(), 1000), 1000)` from an owned sweeper.
   */
  sweep(now: number, budget: number): number {
    let removed = 0
    while (removed < budget && this.#tail !== NONE && this.#isExpired(this.#tail, now)) {
      this.#remove(this.#tail)
      removed++
    }
    this.#expirations += removed
    return removed
  }

  /** The live bindings with their keys and slots in the key index, in no particular order (for a scrape; O(size)). */
  *entries(now: number): IterableIterator<AffinityEntry & { readonly key: string; readonly slot: number }> {
    for (const [key, slot] of this.#slots.held(this.#owner)) if (!this.#isExpired(slot, now)) yield { key, slot, ...this.#entry(slot) }
  }

  /**
   * The live bindings from the most recently used to the least, with their keys (a starting
   * worker's snapshot: {@link append} them in this order). O(size); nothing may change the
   * table while it is iterated.
   */
  *byRecency(now: number): IterableIterator<AffinityEntry & { readonly key: string }> {
    for (let slot = this.#head; slot !== NONE; slot = this.#next[slot]!) {
      if (!this.#isExpired(slot, now)) yield { key: this.#slots.keyAt(slot), ...this.#entry(slot) }
    }
  }

  /**
   * The slots of the live bindings, from the most recently used to the least: a snapshot at 4
   * bytes a binding, read later with {@link bindingAt} while the table goes on changing (a
   * Redis that lost its keys gets them back in this order). O(size), no allocation per binding.
   */
  slotsByRecency(now: number): Int32Array {
    const slots = new Int32Array(this.#size)
    let n = 0
    for (let slot = this.#head; slot !== NONE; slot = this.#next[slot]!) if (!this.#isExpired(slot, now)) slots[n++] = slot
    return slots.subarray(0, n)
  }

  /**
   * The live binding this table holds at `slot` now, with its key, or null (none there now, or
   * expired). A slot freed since a {@link slotsByRecency} snapshot and taken again holds another
   * key: that binding is returned, as held now.
   */
  bindingAt(slot: number, now: number): (AffinityEntry & { readonly key: string }) | null {
    if (slot < 0 || slot >= this.#slots.used || !this.#slots.holds(slot, this.#owner) || this.#isExpired(slot, now)) return null
    return { key: this.#slots.keyAt(slot), ...this.#entry(slot) }
  }

  countByUpstream(upstream: string): number {
    const u = this.#idIndex.get(upstream)
    return u === undefined ? 0 : this.#counts[u]!
  }

  /**
   * The slot of `key` in the key index when this table holds it (expired or not), for a table
   * sharing the index that keeps more columns by slot. Example: `table.slotOf('10.0.0.5')` -> 0.
   */
  slotOf(key: string): number | undefined {
    return this.#slotOf(key)
  }

  /**
   * The slot of `key` when this table holds a live binding of it to `upstream` at `epoch`, else
   * undefined: one index lookup and no allocation, for the request path. Example: after
   * `table.set('10.0.0.5', 'app-1', 0, now)`, `table.slotBoundTo('10.0.0.5', 'app-1', 0, now)` -> its slot.
   */
  slotBoundTo(key: string, upstream: string, epoch: number, now: number): number | undefined {
    const slot = this.#slotOf(key)
    if (slot === undefined || this.#epoch[slot] !== epoch || this.#ids[this.#upstream[slot]!] !== upstream || this.#isExpired(slot, now)) return undefined
    return slot
  }

  /** Does this table hold `slot` (a slot number of its key index)? */
  holds(slot: number): boolean {
    return this.#slots.holds(slot, this.#owner)
  }

  /** The slot of `key` when this table holds it. */
  #slotOf(key: string): number | undefined {
    const slot = this.#slots.slotOf(key)
    return slot !== undefined && this.#slots.holds(slot, this.#owner) ? slot : undefined
  }

  #isExpired(slot: number, now: number): boolean {
    const t = now - this.#base // exact: integers far below 2^53
    return t - this.#lastSeen[slot]! > this.#idleTimeout || t - this.#createdAt[slot]! > this.#absoluteTimeout
  }

  /**
   * `now` as a time column value (whole ms after #base). A `now` outside the window moves the
   * base to 24.8 days before it and shifts every held time by as much; a time that would fall
   * before the new base (a binding created or last used over 24.8 days before `now`) is kept as
   * the base itself. That changes no expiry (idle_timeout is at most 24 hours; an absolute
   * timeout up to 24.8 days still sees it expired): only the createdAt a listing shows of a
   * user bound for longer, and an absolute timeout over 24.8 days, which then counts from then.
   */
  #time(now: number): number {
    const t = Math.floor(now) - this.#base
    if (t >= 0 && t <= TIME_MAX) return t
    const base = Math.floor(now) - TIME_SLACK
    if (this.#base === this.#base) {
      const shift = base - this.#base
      const move = (a: Uint32Array, slot: number): void => {
        a[slot] = Math.min(TIME_MAX, Math.max(0, a[slot]! - shift))
      }
      for (let slot = this.#head; slot !== NONE; slot = this.#next[slot]!) {
        move(this.#createdAt, slot)
        move(this.#lastSeen, slot)
      }
    }
    this.#base = base
    return TIME_SLACK
  }

  /**
   * A past time `at` (ms) as a time column value, at most `max` (one, such as #time(now)'s, in
   * the current window): one before the base is the base itself (see {@link #time}).
   */
  #past(at: number, max: number): number {
    return Math.max(0, Math.min(max, Math.floor(at) - this.#base))
  }

  #entry(slot: number): AffinityEntry {
    return {
      upstream: this.#ids[this.#upstream[slot]!]!,
      epoch: this.#epoch[slot]!,
      createdAt: this.#base + this.#createdAt[slot]!,
      lastSeen: this.#base + this.#lastSeen[slot]!,
    }
  }

  /** Moves a linked slot to the head (most recently used). */
  #toHead(slot: number): void {
    if (this.#head === slot) return
    const prev = this.#prev[slot]!
    const next = this.#next[slot]!
    // slot is not the head, so prev !== NONE
    this.#next[prev] = next
    if (next !== NONE) this.#prev[next] = prev
    else this.#tail = prev
    this.#prev[slot] = NONE
    this.#next[slot] = this.#head
    this.#prev[this.#head] = slot
    this.#head = slot
  }

  /** Unlinks a slot, drops its upstream reference and lets go of it in the key index. */
  #remove(slot: number): void {
    this.#slots.release(slot, this.#owner)
    this.#size--
    const prev = this.#prev[slot]!
    const next = this.#next[slot]!
    if (prev !== NONE) this.#next[prev] = next
    else this.#head = next
    if (next !== NONE) this.#prev[next] = prev
    else this.#tail = prev
    this.#release(this.#upstream[slot]!)
  }

  /** Grows the columns to cover `slot` (a shared key index can hand out slots past maxEntries). */
  #grow(slot: number): void {
    const capacity = growCapacity(this.#capacity, slot, this.#maxEntries)
    const grow = <T extends Uint16Array | Uint32Array | Int32Array>(a: T, make: (n: number) => T): T => {
      const b = make(capacity)
      b.set(a)
      return b
    }
    this.#upstream = grow(this.#upstream, (n) => new Uint16Array(n))
    this.#epoch = grow(this.#epoch, (n) => new Uint32Array(n))
    this.#createdAt = grow(this.#createdAt, (n) => new Uint32Array(n))
    this.#lastSeen = grow(this.#lastSeen, (n) => new Uint32Array(n))
    this.#prev = grow(this.#prev, (n) => new Int32Array(n))
    this.#next = grow(this.#next, (n) => new Int32Array(n))
    this.#capacity = capacity
  }

  /** The intern index of an upstream id, adding it (with count 0) when new. */
  #intern(upstream: string): number {
    const known = this.#idIndex.get(upstream)
    if (known !== undefined) return known
    let u = this.#freeIds.pop()
    if (u === undefined) {
      if (this.#ids.length >= MAX_UPSTREAMS) {
        throw new RangeError(`affinity table: more than ${MAX_UPSTREAMS} distinct upstream ids are bound`)
      }
      u = this.#ids.length
      this.#ids.push(upstream)
      this.#counts.push(0)
    } else {
      this.#ids[u] = upstream
      this.#counts[u] = 0
    }
    this.#idIndex.set(upstream, u)
    return u
  }

  /** Drops one binding's reference to an upstream id; forgets the id at zero. */
  #release(u: number): void {
    if (--this.#counts[u]! === 0) {
      this.#idIndex.delete(this.#ids[u]!)
      this.#ids[u] = undefined
      this.#freeIds.push(u)
    }
  }
}
