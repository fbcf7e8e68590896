// The routing decision: a frozen value saying which upstream serves one request and what its
// answer must carry for the user to come back. Layer 0 vocabulary: types only, no code. A
// decision never calls back into the router: the response side reads it and acts.

/** How the request was placed, for logs and metrics (never the key's value). */
export type RouteSource =
  | 'round_robin' // key: none, or a header key that was absent
  | 'cookie' // a valid Tether cookie pinned it
  | 'new_session' // a new Tether cookie is being issued
  | 'table' // an affinity table entry pinned it
  | 'hash' // placed by the key's hash (new or expired entry, or on_scale_up: rebalance)
  | 'fallback' // app_cookie absent: placed by the fallback key; or a new user's upgrade by client IP
  | 'failover' // the user's upstream was unavailable: moved to the next in hash order

/**
 * Why a user was moved (sent upstream in X-Tether-Moved): to another upstream because theirs is
 * dead, drained or rebalanced away, overloaded (`spill`: its in-flight load above
 * `affinity.spill.factor` x its share), or an operator ordered it (`admin`); or `restart`: their upstream was not ready at some point
 * since their last request (restarted in place, e.g. a StatefulSet pod, or ejected), so it may
 * have lost their in-memory state and gets it back, as a move's new upstream does; also a
 * return there on an out-of-date cookie, from the upstream that answered the user since.
 */
export type MoveReason = 'dead' | 'drain' | 'rebalance' | 'spill' | 'admin' | 'restart'

/** No route: no upstream can take the request, or `strict` forbids moving the user. */
export type NoRoute = 'none' | 'strict'

/**
 * A binding the answer records when it arrives: a new or moved user is pinned only once the
 * upstream chosen for them answered (a failed attempt, or a hedge that lost, changes nothing).
 */
export interface Binding {
  readonly key: string
  readonly upstream: string
  readonly epoch: number
  /** Pin for every Tether replica (table keys), or only count locally (cookie sessions, for bounded loads). */
  readonly publish: boolean
}

/**
 * Where one request goes. Example: a returning user whose upstream died ->
 * `{ upstream: 'app-2', source: 'failover', epoch: 1, moved: { from: 'app-0', reason: 'dead' },
 *    setCookie: 'tether=AX3k...; Path=/; ...', learn: false, appKey: null, sessionKey: '9f86...', bind: null }`.
 */
export interface Decision {
  /** The upstream id. */
  readonly upstream: string
  readonly source: RouteSource
  /** The user's session epoch (bumped by every move). */
  readonly epoch: number
  /** Set when this request moves the user away from `from`. */
  readonly moved: { readonly from: string; readonly reason: MoveReason } | null
  /** A Set-Cookie line for Tether's cookie (new, refreshed or re-bound), or null. */
  readonly setCookie: string | null
  /** Learn an application cookie the answer sets (bind it to `upstream`). */
  readonly learn: boolean
  /** The application cookie value the request carried (re-bound when the answer rotates it). */
  readonly appKey: string | null
  /** The user's session key for checkpoints, or null (no per-user state: round robin, an IP fallback). */
  readonly sessionKey: string | null
  /** What to record in the session table once this upstream answers, or null. */
  readonly bind: Binding | null
  /**
   * When the table binding this request follows was placed (its pin's creation time; for a
   * request that places or moves the key, now), ms; null or absent for Tether's cookie and
   * round robin. Stored with the answer's checkpoint, to order two placements of one epoch.
   */
  readonly placedAt?: number | null
}
