// The in-process checkpoint store: a bounded Map with TTL expiry on read and least-recently-used
// eviction, for a single Tether process and the demo. Layer 3 adapter with no I/O and no timers:
// time comes from the injected Clock, and expired entries go when read or evicted. Checkpoints
// live only as long as the process; several replicas need the Redis store.
import type { Clock } from '../clock.js'
import type {
  Checkpoint,
  CheckpointStore,
  CheckpointStoreStatus,
  GetResult,
  PutResult,
} from './checkpoint-store.js'

/** Limits of a {@link MemoryCheckpointStore}. */
export interface MemoryCheckpointStoreOptions {
  /** Most checkpoints kept (an integer >= 1); the least recently used one is evicted to make room. */
  readonly maxEntries: number
  /** Largest `value.length` accepted (an integer >= 0); larger ones are `'too_large'`. Default 64 KiB. */
  readonly maxBytes?: number
  /** Where "now" comes from (the system clock in production, a FakeClock in tests). */
  readonly clock: Clock
}

/** 64 KiB: the default `maxBytes` of every checkpoint store. */
export const DEFAULT_CHECKPOINT_MAX_BYTES = 64 * 1024

interface Entry {
  readonly checkpoint: Checkpoint
  /** The checkpoint is gone once `clock.now() >= expiresAt`. */
  readonly expiresAt: number
}

/**
 * CheckpointStore in a Map. Insertion order is recency: a put or a hit moves the key to the end,
 * and the first key is evicted when a new key would exceed `maxEntries` (LRU). Operations are
 * O(1); the returned promises are already settled. Status is always `'ready'`.
 *
 * Example:
 * ```ts
 * const store = new MemoryCheckpointStore({ maxEntries: 100_000, clock: systemClock })
 * await store.put('k', { value: 'v', version: null, upstream: 'app-0', epoch: 0, writtenAt: systemClock.now() }, 60_000) // 'stored'
 * ```
 */
export class MemoryCheckpointStore implements CheckpointStore {
  readonly #entries = new Map<string, Entry>()
  readonly #maxEntries: number
  readonly #maxBytes: number
  readonly #clock: Clock

  constructor(options: MemoryCheckpointStoreOptions) {
    const { maxEntries, maxBytes = DEFAULT_CHECKPOINT_MAX_BYTES, clock } = options
    if (!Number.isSafeInteger(maxEntries) || maxEntries < 1) {
      throw new RangeError(`MemoryCheckpointStore: maxEntries must be an integer >= 1, got ${maxEntries}`)
    }
    if (!Number.isSafeInteger(maxBytes) || maxBytes < 0) {
      throw new RangeError(`MemoryCheckpointStore: maxBytes must be an integer >= 0, got ${maxBytes}`)
    }
    this.#maxEntries = maxEntries
    this.#maxBytes = maxBytes
    this.#clock = clock
  }

  /** Always `'ready'`: nothing here can be unreachable. */
  get status(): CheckpointStoreStatus {
    return 'ready'
  }

  /** Checkpoints held, including expired ones not yet read or evicted (for tests and metrics). */
  get size(): number {
    return this.#entries.size
  }

  put(sessionKey: string, cp: Checkpoint, ttlMs: number): Promise<PutResult> {
    if (cp.value.length > this.#maxBytes) return Promise.resolve('too_large')
    const now = this.#clock.now()
    const current = this.#live(sessionKey, now)
    if (current && cp.version !== null && current.checkpoint.version !== null && cp.version <= current.checkpoint.version) {
      return Promise.resolve('stale')
    }
    // Delete first so that the key moves to the end of the insertion (recency) order.
    this.#entries.delete(sessionKey)
    if (this.#entries.size >= this.#maxEntries) {
      const oldest = this.#entries.keys().next()
      if (!oldest.done) this.#entries.delete(oldest.value)
    }
    const checkpoint: Checkpoint = Object.freeze({
      value: cp.value,
      version: cp.version,
      upstream: cp.upstream,
      epoch: cp.epoch,
      writtenAt: cp.writtenAt,
    })
    this.#entries.set(sessionKey, { checkpoint, expiresAt: now + Math.max(1, ttlMs) })
    return Promise.resolve('stored')
  }

  get(sessionKey: string): Promise<GetResult> {
    const entry = this.#live(sessionKey, this.#clock.now())
    if (!entry) return Promise.resolve({ status: 'missing' })
    // A hit is use: most recently used. The TTL is not extended (as in Redis).
    this.#entries.delete(sessionKey)
    this.#entries.set(sessionKey, entry)
    return Promise.resolve({ status: 'found', checkpoint: entry.checkpoint })
  }

  delete(sessionKey: string): Promise<void> {
    this.#entries.delete(sessionKey)
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

  /** The entry of `key` when it has not expired; an expired one is removed. */
  #live(key: string, now: number): Entry | undefined {
    const entry = this.#entries.get(key)
    if (entry && now >= entry.expiresAt) {
      this.#entries.delete(key)
      return undefined
    }
    return entry
  }
}
