// The affinity store interface: where "affinity key -> upstream id" bindings live. Layer 0
// vocabulary: types only, no implementation and no I/O. The in-memory AffinityTable
// (table.ts) implements it; test/fixtures/affinity-store-conformance.ts specifies it.

// A shared (Redis) store for several Tether replicas will layer on without changing this
// synchronous contract on the request path: an in-memory AffinityTable stays in front as the
// local cache and answers every lookup; a miss is resolved by one async Redis GET before
// placement (and the answer is written into the local table), while sets, refreshes and
// deletes are written through asynchronously and batched. The Redis adapter therefore wraps
// an AffinityStore (composition, not inheritance) and adds `load(key): Promise<...>` and
// start()/stop() for its connection; it never makes a round trip when the local entry is fresh.

/** One binding, as returned by a lookup. Times are ms since the epoch. */
export interface AffinityEntry {
  /** The configured upstream id (never an address), e.g. `"app-0"`. */
  readonly upstream: string
  /** Binding generation, bumped when the key fails over to another upstream. */
  readonly epoch: number
  /** When the binding was first created (kept when it is re-bound or refreshed). */
  readonly createdAt: number
  /** Last time the binding was used (set, or read with get). */
  readonly lastSeen: number
}

/** Limits applied by a store, from the `affinity:` config (durations in ms). */
export interface AffinityStoreOptions {
  /** Most bindings kept; the least recently used one is evicted to make room. */
  readonly maxEntries: number
  /** A binding unused for longer than this is gone (sliding expiry). */
  readonly idleTimeout: number
  /** A binding created longer ago than this is gone, however busy; null: no limit. */
  readonly absoluteTimeout?: number | null
}

/**
 * Key -> upstream bindings with bounded size and expiry. Synchronous: the request path asks
 * it before placement and tells it after. Every method takes `now` (ms) from the caller's
 * Clock; an implementation never reads the time itself.
 *
 * Example:
 * ```ts
 * store.set('9f86d081884c7d659a2feaa0c55ad015', 'app-2', 0, now)
 * store.get('9f86d081884c7d659a2feaa0c55ad015', now + 1000)  // -> { upstream: 'app-2', epoch: 0, ... }
 * ```
 */
export interface AffinityStore {
  /**
   * The live binding for `key`, or null. A hit counts as use: lastSeen becomes `now` (sliding
   * idle expiry) and the entry becomes most recently used. An expired entry is removed and
   * null returned.
   */
  get(key: string, now: number): AffinityEntry | null
  /** Like get, but without refreshing lastSeen or recency (for admin views and tests). */
  peek(key: string, now: number): AffinityEntry | null
  /**
   * Binds `key` to `upstream` with `epoch`, as most recently used, lastSeen = now. A live
   * binding keeps its createdAt; a new (or expired) one starts at now. May evict the least
   * recently used binding to stay within maxEntries.
   */
  set(key: string, upstream: string, epoch: number, now: number): void
  /** Removes the binding; true when there was one (expired or not). */
  delete(key: string): boolean
  /** Removes up to `budget` expired bindings, oldest first; returns how many were removed. */
  sweep(now: number, budget: number): number
  /** Bindings held, including expired ones not yet removed. */
  readonly size: number
  /** Bindings held for `upstream` (O(1)); counts expired ones not yet removed. */
  countByUpstream(upstream: string): number
}
