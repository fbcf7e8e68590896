// The checkpoint store interface: where the newest `X-Tether-State` checkpoint of each session
// lives, so a user who moves to another upstream can be rehydrated. Layer 0 vocabulary: types
// only, no code and no I/O. memory-store.ts and redis-store.ts implement it;
// test/fixtures/checkpoint-store-conformance.ts specifies it.

/**
 * One checkpoint, as written by an upstream and stored under the user's session key.
 *
 * Example:
 * ```ts
 * { value: 'eyJjYXJ0IjpbMSwyXX0=', version: 17, upstream: 'app-2', epoch: 3, writtenAt: 1764086400000 }
 * ```
 */
export interface Checkpoint {
  /**
   * The opaque `X-Tether-State` value, stored and returned unchanged. Any header-safe string
   * (base64, JSON, latin1 text) and the empty string round-trip; its size in the store's own
   * encoding ({@link CheckpointStore.valueBytes}) is what `maxBytes` limits.
   */
  readonly value: string
  /**
   * `X-Tether-State-Version` as a safe integer (parsed by the caller), or null when the upstream
   * sent none. Orders writes: see {@link CheckpointStore.put}.
   */
  readonly version: number | null
  /** The id of the upstream that wrote it (never an address), e.g. `"app-2"`. */
  readonly upstream: string
  /** The session epoch when it was written (bumped by every move of the user). */
  readonly epoch: number
  /** When Tether stored it, ms since the Unix epoch (from the caller's Clock). */
  readonly writtenAt: number
  /**
   * When the user's table binding this answer was routed by was placed, ms since the Unix
   * epoch: the pin's creation time, or the routing time of a request that places or moves the
   * key. Null or absent for Tether's cookie and for records written by an older Tether. Orders
   * two upstreams' checkpoints of one epoch: see {@link isStale}.
   */
  readonly placedAt?: number | null
}

/**
 * The outcome of a put. Only `'stored'` means the checkpoint is kept (for Redis: Redis replied
 * OK to the write, so no acknowledged checkpoint is lost by Tether).
 * - `'stale'`: a checkpoint with a newer or equal version is stored; nothing changed.
 * - `'superseded'`: refused by a checkpoint of the same epoch from another upstream (of a later
 *   placement of the key, or written later and this one not of a higher version: see
 *   {@link isStale}); nothing changed. Unlike `'stale'`, what is stored does not hold this
 *   checkpoint's update (the other upstream's state went its own way), so `durability:
 *   confirmed` must not acknowledge it. Counted as `superseded`.
 * - `'too_large'`: `valueBytes(value) > maxBytes` ({@link CheckpointStore.valueBytes}); refused before any I/O, nothing changed.
 * - `'unavailable'`: the store is down or did not answer within its timeout; the write may or
 *   may not have happened.
 */
export type PutResult = 'stored' | 'stale' | 'superseded' | 'too_large' | 'unavailable'

/**
 * The ordering rule of {@link CheckpointStore.put}: is `incoming` refused over `stored`? When
 * both are versioned, versions order them: refused when incoming's is not above stored's
 * (epochs do not order checkpoints: a table key placed again after its pin expired or was
 * evicted starts again at epoch 0). Otherwise, for a `replacing` put (the first of an epoch
 * whose upstream started its state again, over a checkpoint of another epoch: its versions
 * compare with nothing), and for two checkpoints of one epoch from two upstreams (a burst, a
 * hedge or a retry answered on both sides of a move: one of them may have started the state
 * again, so their versions compare with nothing either), the time Tether took the answer
 * orders them: refused when incoming was written before stored (for two upstreams at one
 * epoch, only when its version is not above stored's either: a Tether replica or worker whose
 * clock is ahead must not hold off, for as long as it is ahead, the next versions of the
 * upstream the user goes on with, which were stored before this rule). Of two upstreams at one epoch
 * the later answer wins, as it does for routing (its cookie, or its table binding, is the last
 * one recorded: the user goes on there), so the checkpoints of the upstream the user stays on
 * are stored, and a stale copy from the other is replaced by its next one. Before all that, two
 * upstreams' checkpoints of one epoch that both carry `placedAt` and differ in it are ordered
 * by it: the later placement's is kept whatever the versions and times (a table key placed
 * again at that epoch after its pin expired or was evicted: a late answer of the request
 * routed by the old pin must not replace the new upstream's state). A put that reaches the store late (sent to a Redis that froze, given
 * up on, applied when it resumed; a frozen worker's message) must not replace what a later
 * answer stored. Within a process `writtenAt` never goes back; across Tether replicas this
 * orders by their clocks (NTP keeps them within milliseconds), and a version orders without.
 * Examples: `isStale({ version: 1, ... }, { version: 5, ... }, false)` -> true;
 * `isStale({ version: null, writtenAt: 100, ... }, { version: null, writtenAt: 200, ... }, false)` -> true;
 * `isStale({ version: 1, writtenAt: 300, ... }, { version: 5, writtenAt: 200, ... }, true)` -> false;
 * `isStale({ version: 1, upstream: 'app-1', epoch: 2, writtenAt: 300 }, { version: 6, upstream: 'app-2', epoch: 2, writtenAt: 200 }, false)` -> false.
 */
export function isStale(incoming: Ordered, stored: Ordered, replacing: boolean): boolean {
  return refusal(incoming, stored, replacing) !== null
}

/**
 * Why {@link isStale} refuses `incoming` over `stored`: null when it does not; `'superseded'`
 * when `stored` is of the same epoch from another upstream (a rival of one move: what it holds
 * went its own way from `incoming`'s state, so it does not hold `incoming`'s update); else
 * `'stale'` (the store holds the same state's newer checkpoint, or one written later).
 *
 * Example: `refusal({ version: 2, upstream: 'app-0', epoch: 0, writtenAt: 100 }, { version: 5, upstream: 'app-1', epoch: 0, writtenAt: 200 }, false)` -> `'superseded'`.
 */
export function refusal(incoming: Ordered, stored: Ordered, replacing: boolean): 'stale' | 'superseded' | null {
  if (!refused(incoming, stored, replacing)) return null
  return incoming.epoch === stored.epoch && incoming.upstream !== stored.upstream ? 'superseded' : 'stale'
}

/** What {@link isStale} reads of a checkpoint. */
export type Ordered = Pick<Checkpoint, 'version' | 'writtenAt' | 'upstream' | 'epoch' | 'placedAt'>

function refused(incoming: Ordered, stored: Ordered, replacing: boolean): boolean {
  const rival = incoming.epoch === stored.epoch && incoming.upstream !== stored.upstream
  // two placements of the key at one epoch (placed again after its pin expired or was evicted):
  // the later placement's state is the user's, whatever answered last
  const a = incoming.placedAt, b = stored.placedAt
  if (rival && a != null && b != null && a !== b) return a < b
  const versioned = incoming.version !== null && stored.version !== null
  if (!replacing && !rival && versioned) return incoming.version! <= stored.version!
  // two upstreams at one epoch: a later answer, or a higher version (as before this rule: a
  // replica whose clock is ahead must not hold off the other upstream's next versions)
  if (rival && !replacing && versioned && incoming.version! > stored.version!) return false
  return incoming.writtenAt < stored.writtenAt
}

/** The outcome of a get: the newest live checkpoint, none, or the store could not answer. */
export type GetResult =
  | { readonly status: 'found'; readonly checkpoint: Checkpoint }
  | { readonly status: 'missing' }
  | { readonly status: 'unavailable' }

/** `'ready'`: the store answers; `'degraded'`: it cannot (Redis unreachable, not started, stopped). */
export type CheckpointStoreStatus = 'ready' | 'degraded'

/**
 * Session key -> newest checkpoint, with a TTL per write.
 *
 * Every method resolves and never rejects: errors and timeouts become `'unavailable'`, so the
 * request path never turns a store problem into an error response. Implementations own their
 * background work (connections, reconnects) from `start()` to `stop()`; nothing starts itself.
 *
 * Example:
 * ```ts
 * await store.start()
 * await store.put('9f86d0...', { value: 'abc', version: 2, upstream: 'app-0', epoch: 0, writtenAt: now }, 3_600_000) // 'stored'
 * await store.put('9f86d0...', { value: 'old', version: 1, upstream: 'app-0', epoch: 0, writtenAt: now }, 3_600_000) // 'stale'
 * await store.get('9f86d0...')  // { status: 'found', checkpoint: { value: 'abc', version: 2, ... } }
 * ```
 */
export interface CheckpointStore {
  /**
   * Stores `cp` under `sessionKey` for `ttlMs` (> 0; each stored write restarts the TTL) when
   * the size limit and the version rule allow it. Atomic: concurrent versioned puts of one key
   * leave the one with the highest version.
   *
   * Size rule: `valueBytes(cp.value) > maxBytes` is `'too_large'`, checked before any I/O.
   *
   * Version rule (an expired checkpoint counts as none):
   * - incoming version null: always stored (the upstream opted out of ordering: last writer wins);
   * - nothing stored, or the stored version is null: stored (ordering starts from this write);
   * - both versioned: stored only when incoming > stored; an equal or older one is `'stale'`;
   * - both of one epoch, from two upstreams: stored when written later (`writtenAt`) whatever
   *   the versions (two upstreams answered the user at one move; one may have started the state
   *   again), or when its version is higher (as for any pair: a clock ahead never refuses it);
   * - both of one epoch, from two upstreams, each with a different `placedAt`: stored when its
   *   placement is the later one, refused when the earlier, whatever versions and times;
   * - a refusal over a checkpoint of the same epoch from another upstream is `'superseded'`,
   *   any other `'stale'`;
   * - `replace`: stored whatever the versions over a checkpoint of another epoch (the user's
   *   state started again at this epoch: they moved and the new upstream got none, so its
   *   versions start again too); over one of the same epoch, the version rule as above.
   *
   * A versionless write over a versioned one is stored on purpose: an upstream that stops
   * sending versions (say an older build during a rollout) must still be able to checkpoint,
   * and holding its users to a checkpoint it no longer writes would rehydrate old state.
   * `timeoutMs`: the longest wait for this write, when the caller waits longer than the store's
   * own per-call timeout (`state.durability: confirmed`); absent: the store's timeout.
   */
  put(sessionKey: string, cp: Checkpoint, ttlMs: number, timeoutMs?: number, replace?: boolean): Promise<PutResult>
  /**
   * The bytes `value` takes in this store, in the encoding it is kept in: what `maxBytes`
   * (`state.max_bytes`) limits. A header value is a latin1 string (a character a byte of the
   * header line), but not every store keeps it so: Redis holds it as UTF-8 (ioredis's encoding),
   * where each character from 0x80 to 0xFF takes two bytes. Examples (Redis):
   * `valueBytes('abc')` -> 3, `valueBytes('\xe9\xe9')` -> 4; (memory) `valueBytes('\xe9\xe9')` -> 2.
   */
  valueBytes(value: string): number
  /** The live checkpoint of `sessionKey`. Reading does not extend its TTL. */
  get(sessionKey: string): Promise<GetResult>
  /** Removes the checkpoint of `sessionKey`, if any. Best effort: a down store ignores it. */
  delete(sessionKey: string): Promise<void>
  /** Whether the store can answer now. */
  readonly status: CheckpointStoreStatus
  /**
   * Whether the store can answer for `sessionKey` now: with Redis, whether the node that holds
   * its key is up (a Cluster with one shard down is `degraded` as a whole, and still answers
   * for the other shards' keys); an in-process store always can.
   */
  answers(sessionKey: string): boolean
  /**
   * Calls `fn` on every status change (not for the current status), with a short detail such
   * as `"connect ECONNREFUSED 127.0.0.1:6379"`. Returns the unsubscribe function. The store logs
   * nothing itself: the caller logs on change.
   */
  onStatus(fn: (status: CheckpointStoreStatus, detail: string) => void): () => void
  /** Begins background work (connecting). Resolves even if the backend is down (status degraded). */
  start(): Promise<void>
  /**
   * Ends background work and closes connections; leaves no timers. A store backed by a server
   * answers `'unavailable'` afterwards; the in-process one keeps answering.
   */
  stop(): Promise<void>
}
