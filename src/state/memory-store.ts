// The in-process checkpoint store: bounded by bytes and by entry count, with TTL expiry on read
// and segmented-LRU eviction that a flood of one-request visitors cannot use to push out the
// checkpoints of returning users. Layer 3 adapter with no I/O and no timers: time comes from the
// injected Clock. Checkpoints live only as long as the process; several replicas need Redis.
import type { Clock } from '../clock.js'
import type {
  Checkpoint,
  CheckpointStore,
  CheckpointStoreStatus,
  GetResult,
  PutResult,
} from './checkpoint-store.js'
import { refusal } from './checkpoint-store.js'

/** Limits of a {@link MemoryCheckpointStore}. */
export interface MemoryCheckpointStoreOptions {
  /** Most checkpoints kept (an integer >= 1). */
  readonly maxEntries: number
  /** Largest value accepted in bytes as held ({@link valueBytes}; an integer >= 0); larger ones are `'too_large'`. Default 64 KiB. */
  readonly maxBytes?: number
  /**
   * Most bytes all held checkpoints may cost together (an integer >= 1), each counted by
   * {@link checkpointCost}. Default {@link DEFAULT_MEMORY_MAX_BYTES} (64 MiB).
   */
  readonly maxTotalBytes?: number
  /** Where "now" comes from (the system clock in production, a FakeClock in tests). */
  readonly clock: Clock
}

/** 64 KiB: the default `maxBytes` of every checkpoint store. */
export const DEFAULT_CHECKPOINT_MAX_BYTES = 64 * 1024

/** 64 MiB: the default `maxTotalBytes` of the memory store (`state.memory.max_bytes`). */
export const DEFAULT_MEMORY_MAX_BYTES = 64 * 1024 * 1024

/**
 * What one held checkpoint costs besides its key and value: the Map slot, the entry record, the
 * frozen Checkpoint object, the boxed numbers and the two string headers. Measured on Node 20
 * (x64, no pointer compression) with `node --expose-gc bench/checkpoint-memory.mjs`: 348-376
 * heap bytes per entry beyond its key and value (64 B to 32 KB values, 32-character keys, two
 * runs); rounded up, so the bound errs on the safe side.
 */
export const CHECKPOINT_ENTRY_OVERHEAD_BYTES = 384

/** Share of the byte and entry bounds the protected segment may hold; probation has the rest. */
const PROTECTED_SHARE = 0.8

/**
 * The bytes a value is held in: V8 keeps a string with only latin1 characters, as every header
 * value is, at one byte a character, any other at two. What the memory store's `maxBytes`
 * (`state.max_bytes`) limits. Example: `valueBytes('\xe9\xe9')` -> 2, `valueBytes('\u20ac')` -> 2.
 */
export function valueBytes(value: string): number {
  return /[^\x00-\xff]/.test(value) ? value.length * 2 : value.length
}

/**
 * The bytes a checkpoint held under `sessionKey` is counted as: the value ({@link valueBytes}),
 * the key, and {@link CHECKPOINT_ENTRY_OVERHEAD_BYTES}.
 *
 * Example: `checkpointCost('9f86d081884c7d659a2feaa0c55ad015', 'x'.repeat(32_768))` -> 33184
 */
export function checkpointCost(sessionKey: string, value: string): number {
  return CHECKPOINT_ENTRY_OVERHEAD_BYTES + sessionKey.length + valueBytes(value)
}

interface Entry {
  readonly checkpoint: Checkpoint
  /** The checkpoint is gone once `clock.now() >= expiresAt` (a refused put may extend it). */
  expiresAt: number
  /** {@link checkpointCost} of this key and value. */
  readonly cost: number
  /** The segment holding it. */
  segment: Segment
}

/** One LRU list: a Map whose insertion order is recency (first key = least recently used). */
class Segment {
  readonly entries = new Map<string, Entry>()
  bytes = 0

  /** Adds `entry` as the most recently used. */
  add(key: string, entry: Entry): void {
    entry.segment = this
    this.entries.set(key, entry)
    this.bytes += entry.cost
  }

  remove(key: string, entry: Entry): void {
    this.entries.delete(key)
    this.bytes -= entry.cost
  }

  /** The least recently used key and entry, if any. */
  oldest(): [string, Entry] | undefined {
    const first = this.entries.entries().next()
    return first.done ? undefined : first.value
  }
}

/**
 * CheckpointStore in memory, bounded by `maxTotalBytes` (every checkpoint counted by
 * {@link checkpointCost}) and by `maxEntries`, with segmented LRU eviction (SLRU: Karedla, Love
 * and Wherry, "Caching strategies to improve disk system performance", IEEE Computer 27(3),
 * 1994):
 * - a new session's checkpoint enters the **probation** segment;
 * - a session seen again (a get: a rehydration, or a put over its live checkpoint: the next
 *   answer of a returning user) moves to the most recently used end of the **protected**
 *   segment;
 * - protected holds at most 80% of the bytes and of the entries; beyond that its least recently
 *   used checkpoint is demoted to the most recently used end of probation (nothing is dropped);
 * - to make room, the least recently used checkpoint of probation goes first, and protected is
 *   touched only when probation is empty.
 * So probation always has at least 20% of the bounds and sessions seen once (a flood of
 * cookieless one-request visitors) only ever evict each other, never a checkpoint of a returning
 * user while those fit in protected and no one checkpoint costs more than 20% of the bound
 * (config validation keeps `state.memory.max_bytes` >= 5 x `state.max_bytes`). Every operation is O(1) in the number of checkpoints held
 * (Map operations; the cost scans the value once); the returned promises are already settled.
 * Status is always `'ready'`.
 *
 * Example:
 * ```ts
 * const store = new MemoryCheckpointStore({ maxEntries: 100_000, maxTotalBytes: 64 * 1024 * 1024, clock: systemClock })
 * await store.put('k', { value: 'v', version: null, upstream: 'app-0', epoch: 0, writtenAt: systemClock.now() }, 60_000) // 'stored' (probation)
 * await store.get('k') // found; 'k' is now protected
 * ```
 */
export class MemoryCheckpointStore implements CheckpointStore {
  readonly #probation = new Segment()
  readonly #protected = new Segment()
  #maxEntries: number
  #maxBytes: number
  #maxTotalBytes: number
  #protectedEntries: number
  #protectedBytes: number
  readonly #clock: Clock

  constructor(options: MemoryCheckpointStoreOptions) {
    const { maxEntries, maxBytes = DEFAULT_CHECKPOINT_MAX_BYTES, maxTotalBytes = DEFAULT_MEMORY_MAX_BYTES, clock } = options
    if (!Number.isSafeInteger(maxEntries) || maxEntries < 1) {
      throw new RangeError(`MemoryCheckpointStore: maxEntries must be an integer >= 1, got ${maxEntries}`)
    }
    if (!Number.isSafeInteger(maxBytes) || maxBytes < 0) {
      throw new RangeError(`MemoryCheckpointStore: maxBytes must be an integer >= 0, got ${maxBytes}`)
    }
    if (!Number.isSafeInteger(maxTotalBytes) || maxTotalBytes < 1) {
      throw new RangeError(`MemoryCheckpointStore: maxTotalBytes must be an integer >= 1, got ${maxTotalBytes}`)
    }
    this.#maxEntries = maxEntries
    this.#maxBytes = maxBytes
    this.#maxTotalBytes = maxTotalBytes
    this.#protectedEntries = Math.floor(maxEntries * PROTECTED_SHARE)
    this.#protectedBytes = Math.floor(maxTotalBytes * PROTECTED_SHARE)
    this.#clock = clock
  }

  /**
   * New bounds (a config reload), checked as the constructor's: the checkpoints held are kept,
   * down to the new bounds (the least recently used of probation go first, then protected's);
   * a checkpoint over the new `maxBytes` stays until it is replaced or expires.
   */
  resize(bounds: Omit<MemoryCheckpointStoreOptions, 'clock'>): void {
    const fresh = new MemoryCheckpointStore({ ...bounds, clock: this.#clock }) // checks them
    this.#maxEntries = fresh.#maxEntries
    this.#maxBytes = fresh.#maxBytes
    this.#maxTotalBytes = fresh.#maxTotalBytes
    this.#protectedEntries = fresh.#protectedEntries
    this.#protectedBytes = fresh.#protectedBytes
    while (this.size > this.#maxEntries || this.bytes > this.#maxTotalBytes) {
      const [key, victim] = (this.#probation.oldest() ?? this.#protected.oldest())!
      victim.segment.remove(key, victim)
    }
    const p = this.#protected
    while (p.entries.size > this.#protectedEntries || p.bytes > this.#protectedBytes) {
      const [oldKey, old] = p.oldest()!
      p.remove(oldKey, old)
      this.#probation.add(oldKey, old)
    }
  }

  /** Always `'ready'`: nothing here can be unreachable. */
  get status(): CheckpointStoreStatus {
    return 'ready'
  }

  answers(_sessionKey: string): boolean {
    return true
  }

  /** Checkpoints held, including expired ones not yet read or evicted (for tests and metrics). */
  get size(): number {
    return this.#probation.entries.size + this.#protected.entries.size
  }

  /** What the held checkpoints cost together ({@link checkpointCost}); never above `maxTotalBytes`. */
  get bytes(): number {
    return this.#probation.bytes + this.#protected.bytes
  }

  /**
   * Stored, stale or too large as the CheckpointStore contract says; also `'too_large'` when
   * the checkpoint alone would cost more than `maxTotalBytes`. A stored put over a live
   * checkpoint promotes the session to protected; a put of a new one enters probation. A
   * refused one (stale, superseded) extends the stored checkpoint's TTL to `ttlMs` from now
   * when that is later, and changes nothing else.
   */
  put(sessionKey: string, cp: Checkpoint, ttlMs: number, _timeoutMs?: number, replace = false): Promise<PutResult> {
    if (valueBytes(cp.value) > this.#maxBytes) return Promise.resolve('too_large')
    const cost = checkpointCost(sessionKey, cp.value)
    if (cost > this.#maxTotalBytes) return Promise.resolve('too_large')
    const now = this.#clock.now()
    const current = this.#live(sessionKey, now)
    const refused = current ? refusal(cp, current.checkpoint, replace && current.checkpoint.epoch !== cp.epoch) : null
    if (refused !== null) {
      // the user is active (an answer of theirs carried it): the stored checkpoint lives on, as
      // their affinity does (never shortened)
      current!.expiresAt = Math.max(current!.expiresAt, now + Math.max(1, ttlMs))
      return Promise.resolve(refused)
    }
    if (current) current.segment.remove(sessionKey, current)
    // Ends at the latest with the store empty: cost <= maxTotalBytes and maxEntries >= 1.
    while (this.size + 1 > this.#maxEntries || this.bytes + cost > this.#maxTotalBytes) {
      const [key, victim] = (this.#probation.oldest() ?? this.#protected.oldest())!
      victim.segment.remove(key, victim)
    }
    const base = { value: cp.value, version: cp.version, upstream: cp.upstream, epoch: cp.epoch, writtenAt: cp.writtenAt }
    const checkpoint: Checkpoint = Object.freeze(cp.placedAt == null ? base : { ...base, placedAt: cp.placedAt })
    const entry: Entry = { checkpoint, expiresAt: now + Math.max(1, ttlMs), cost, segment: this.#probation }
    if (current) this.#promote(sessionKey, entry)
    else this.#probation.add(sessionKey, entry)
    return Promise.resolve('stored')
  }

  /** The bytes `value` is held in ({@link valueBytes}: a header value's latin1 characters one byte each). */
  valueBytes(value: string): number {
    return valueBytes(value)
  }

  /** The live checkpoint; a hit promotes the session to protected (most recently used). */
  get(sessionKey: string): Promise<GetResult> {
    const entry = this.#live(sessionKey, this.#clock.now())
    if (!entry) return Promise.resolve({ status: 'missing' })
    // A hit is use. The TTL is not extended (as in Redis).
    entry.segment.remove(sessionKey, entry)
    this.#promote(sessionKey, entry)
    return Promise.resolve({ status: 'found', checkpoint: entry.checkpoint })
  }

  delete(sessionKey: string): Promise<void> {
    const entry = this.#probation.entries.get(sessionKey) ?? this.#protected.entries.get(sessionKey)
    if (entry) entry.segment.remove(sessionKey, entry)
    return Promise.resolve()
  }

  /** Status never changes; the listener is never called. */
  onStatus(_fn: (status: CheckpointStoreStatus, detail: string) => void): () => void {
    return () => {}
  }

  /** Nothing to start. */
  start(): Promise<void> {
    return Promise.resolve()
  }

  /** Nothing to stop; checkpoints stay readable (the composition root drops the store). */
  stop(): Promise<void> {
    return Promise.resolve()
  }

  /**
   * Adds a detached `entry` as the most recently used of protected, then demotes protected's
   * least recently used checkpoints to probation while protected is over its share. Moves
   * only: the byte and entry totals do not change, so nothing is evicted here.
   */
  #promote(key: string, entry: Entry): void {
    const p = this.#protected
    p.add(key, entry)
    while (p.entries.size > this.#protectedEntries || p.bytes > this.#protectedBytes) {
      const [oldKey, old] = p.oldest()!
      p.remove(oldKey, old)
      this.#probation.add(oldKey, old)
    }
  }

  /** The entry of `key` when it has not expired; an expired one is removed. */
  #live(key: string, now: number): Entry | undefined {
    const entry = this.#probation.entries.get(key) ?? this.#protected.entries.get(key)
    if (entry && now >= entry.expiresAt) {
      entry.segment.remove(key, entry)
      return undefined
    }
    return entry
  }
}
