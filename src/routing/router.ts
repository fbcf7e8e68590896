// Routing: turns a request's key into a frozen Decision (which upstream, which epoch, whether
// the user moves, which cookie the answer must carry, which binding to record). Layer 2: reads
// the session table and health through injected parts and owns the current placement table
// (swapped whole when membership changes, never built per request). It writes nothing per
// request (but for the move budgets of a gradual rebalance and of spill) and never touches
// sockets: the answer side records the decision's binding.
import type { AffinityConfig } from '../config/schema.js'
import type { DecodedCookie } from '../affinity/cookie-codec.js'
import type { CookieIssuer } from '../affinity/cookie-issuer.js'
import type { RequestKey } from '../affinity/key.js'
import type { SessionTable } from '../affinity/session-table.js'
import { buildPlacement, type PlacementTable } from '../placement/rendezvous.js'
import { pickBounded } from '../placement/bounded-load.js'
import { hashKey, murmur3U32 } from '../placement/hash.js'
import { RoundRobin } from '../placement/round-robin.js'
import type { Binding, Decision, MoveReason, NoRoute, RouteSource } from './decision.js'

export type { Binding, Decision, MoveReason, NoRoute, RouteSource } from './decision.js'

/** What routing needs to know about upstream health (owned by the health table). */
export interface Availability {
  /** May serve its existing users (alive, not ejected, not disabled; draining is fine). */
  ready(id: string): boolean
  /** May take new users (ready and not draining). */
  acceptsNew(id: string): boolean
  /** When draining started (ms), or null when not draining. */
  drainingSince(id: string): number | null
  /**
   * When this process learned of the drain (ms; later than drainingSince for a drain another
   * replica or worker began before this one started); null when not draining. Absent: drainingSince.
   */
  drainKnownSince?(id: string): number | null
  /** Does the drain of `id` migrate (its users move after an idle gap, not only at drain_timeout)? */
  drainMigrates(id: string): boolean
  /** Share of new users an upstream in slow start takes, (0, 1]; 1 when not ramping. */
  slowStartWeight(id: string): number
  /** When it last became ready after not being ready (ms); -Infinity when ready since start-up. */
  readySince(id: string): number
}

/** The upstreams placement is built from (a membership snapshot). */
export interface PlacementMembers {
  readonly list: readonly { readonly id: string; readonly weight: number }[]
}

/** What routing reads about users beyond their pins (owned by the session records). */
export interface SessionHistory {
  /** When the user with this session key was last answered (ms), or null when not known here. */
  lastSeen(key: string, now: number): number | null
  /** When `upstream` last answered the user, if it gave their last answer known here (ms); else null. */
  lastSeenOn(key: string, upstream: string, now: number): number | null
  /**
   * For a user this process moved lately: where, at which epoch and when (ms) it last answered
   * them, and when it made the last move; null for anyone else (O(1), and nothing to look up
   * before any move).
   */
  moved(key: string, now: number): { readonly upstream: string; readonly epoch: number; readonly lastSeen: number; readonly movedAt: number; readonly reason: MoveReason } | null
  /** A move an admin ordered for this key, not yet done: to an upstream, or null (wherever the hash places it). */
  ordered(key: string): { readonly to: string | null } | undefined
}

/** Requests in progress per upstream, averaged over about a second (owned by the request path's in-flight counts), read by spill. */
export interface UpstreamLoad {
  /** Requests in progress on `id` (O(1)). */
  loadOf(id: string): number
  /** Requests in progress on all upstreams (O(1)). */
  readonly totalLoad: number
}

const ALWAYS: Availability = { ready: () => true, acceptsNew: () => true, drainingSince: () => null, drainMigrates: () => false, slowStartWeight: () => 1, readySince: () => -Infinity }
const NO_HISTORY: SessionHistory = { lastSeen: () => null, lastSeenOn: () => null, moved: () => null, ordered: () => undefined }
/** Seed of the per-key draw that lets a share of new keys onto a slow-starting upstream. */
const SEED_SLOW_START = 0x534c4f57
const NOTHING_TRIED: ReadonlySet<string> = new Set()
/** No upstream left because its process is gone (see setUpstreams). */
const NOTHING_GONE: ReadonlySet<string> = NOTHING_TRIED
/**
 * How long after a move this process made (or, with workers, another worker made), a request
 * with the cookie from before it still follows it (`Placing.done`): requests a client sent
 * before the new cookie arrived. Later, such a cookie is one a client keeps ignoring: it is
 * routed by the cookie, as every replica without a record of the move routes it, so all converge.
 */
const MOVE_BURST = 5_000
/** Entries per generation of the cookie users' shared decisions (see Router's #stay). */
const STAY_CACHE = 8192

export interface RouterOptions {
  readonly sessions: SessionTable
  /** Tether's cookie (key: cookie); null for other keys. */
  readonly cookies: CookieIssuer | null
  /** Upstream health; default: every upstream available. */
  readonly availability?: Availability
  /** Last answers and ordered moves; default: nothing known. */
  readonly history?: SessionHistory
  /** In-flight requests per upstream, for `affinity.spill`; default: none (spill never moves anyone). */
  readonly load?: UpstreamLoad
}

/**
 * The user stays on upstream i (most requests): one frozen result per index, made once and
 * shared by every Router (it holds nothing but the index); callers only read it.
 */
const STAYS: { readonly index: number; readonly reason: null }[] = []
function stay(index: number): { readonly index: number; readonly reason: null } {
  return STAYS[index] ??= Object.freeze({ index, reason: null })
}

/**
 * One decision's view of the world: the request's key, its tried set and the key's hash. A
 * router has one, set again for each decision ({@link Placing.for}): a decision is synchronous
 * and never nested, and nothing keeps the placing or its predicates past the decision (the
 * predicates read its fields when they are called). One object a router, not one a request
 * (bench/README.md, "Bytes allocated per request"), and the predicates made once.
 */
class Placing {
  key = ''
  tried: ReadonlySet<string> = NOTHING_TRIED
  now = 0
  /**
   * For a cookie user whose cookie is out of date, the upstream this process moved them to (and
   * answered them from) less than MOVE_BURST ago by a deliberate move (an admin's order, a
   * rebalance, spill, a drain; not a failover or a rehydration in place), which stands while the
   * cookie's upstream is available (null: none).
   */
  done: string | null = null
  /** For a cookie user whose cookie is out of date, where this process last answered them (at a later epoch); else null. */
  answeredOn: string | null = null
  /** No move by choice (an admin's order, rebalance, spill, a migrating drain before its timeout): see Router.decide's `hold`. */
  hold = false

  constructor(readonly router: Router) {}

  /** This placing, set for the decision of `key` (see the fields). */
  for(key: string, tried: ReadonlySet<string>, now: number, done: string | null = null, answeredOn: string | null = null, hold = false): this {
    this.key = key
    this.tried = tried
    this.now = now
    this.done = done
    this.answeredOn = answeredOn
    this.hold = hold
    this.#hash = null
    return this
  }

  #hash: number | null = null
  /**
   * The key's placement hash (hashKey), made at first use: a pinned user who stays (most
   * requests) is placed by nothing (~0.3% of a proxied request's CPU in issue 14's profile).
   */
  get hash(): number {
    return this.#hash ??= hashKey(this.key)
  }
  #acceptNew: ((i: number) => boolean) | null = null
  #acceptReady: ((i: number) => boolean) | null = null
  /**
   * May a new key go to upstream i? It must accept new users and not be tried yet; an
   * upstream in slow start takes a key only if the key's own draw (a second hash, the same on
   * every replica) falls under its current weight, so it receives a growing share of new keys.
   * (Made at first use: a pinned user who stays, most requests, needs neither predicate.)
   */
  get acceptNew(): (i: number) => boolean {
    return this.#acceptNew ??= (i) => {
      const id = this.router.placement.ids[i]!
      const health = this.router.health
      if (!health.acceptsNew(id) || this.tried.has(id)) return false
      const w = health.slowStartWeight(id)
      return w >= 1 || murmur3U32(this.hash, SEED_SLOW_START) / 4294967296 < w
    }
  }
  #acceptNewAtAll: ((i: number) => boolean) | null = null
  /**
   * May a new key go to upstream i, slow start aside? When slow start turned the key away from
   * every upstream that takes new users (those ramping are all there is: the first back after an
   * outage of all, or the only one), the ramp is a share among them, not a refusal: the key goes
   * to the first of them in its hash order rather than to none (a 503) or a draining one.
   */
  get acceptNewAtAll(): (i: number) => boolean {
    return this.#acceptNewAtAll ??= (i) => {
      const id = this.router.placement.ids[i]!
      return this.router.health.acceptsNew(id) && !this.tried.has(id)
    }
  }
  get acceptReady(): (i: number) => boolean {
    return this.#acceptReady ??= (i) => {
      const id = this.router.placement.ids[i]!
      return this.router.health.ready(id) && !this.tried.has(id)
    }
  }
}

/**
 * Decides placement from the request's key:
 * - `none`: weighted round robin over the upstreams that accept new users.
 * - `cookie`: a valid signed cookie names its upstream; otherwise a new session id is placed
 *   by its hash and a cookie issued. The cookie is re-issued when its idle clock needs sliding.
 * - `table` (app_cookie, client_ip, header): the session table pins the key; a miss is placed
 *   by the key's hash and pinned (application cookies only by learning from an answer).
 * A pinned user whose upstream is unavailable (not ready, already tried by this request, or
 * draining for longer than `drain_timeout`) moves to the next upstream in the key's hash order
 * (the same on every Tether replica), with its epoch bumped, and stays there once that upstream
 * answered (cookie re-issued, or the decision's binding recorded); with `strict` the answer is
 * 'strict' instead. With `on_scale_up: rebalance`
 * the hash decides even when a pin exists; with `gradual` it does at a user's new visit, at a
 * bounded rate; with `persistent` pins hold until they expire. With `spill`, a user of an
 * upstream whose in-flight requests are over `spill.factor` x its share moves at a new visit
 * to the next upstream in their hash order under that bound, at a bounded rate.
 *
 * Example: `router.decide({ kind: 'table', value: '10.0.0.5', ... }, new Set(), now)`
 * -> `{ upstream: 'app-1', source: 'hash', epoch: 0, moved: null, ... }`.
 */
export class Router {
  readonly #cfg: AffinityConfig
  readonly #sessions: SessionTable
  readonly #cookies: CookieIssuer | null
  readonly #history: SessionHistory
  readonly #inFlight: UpstreamLoad | null
  /** Upstream health, read by the accept predicates. */
  readonly health: Availability
  /** The current placement table (replaced whole by setUpstreams). */
  placement: PlacementTable = buildPlacement([])
  #roundRobin = new RoundRobin([])
  #rrIds: readonly string[] = []
  #first = true
  /** The decisions of cookie users who stay, by their verified cookie (see #stay). */
  #stays = new Map<DecodedCookie, Decision>()
  #staysOld = new Map<DecodedCookie, Decision>()
  /** Each decision's view of the world (see Placing: one a router, set again for each decision). */
  readonly #placing = new Placing(this)
  /** When each upstream joined (ms); those present at start count as always there. */
  readonly #joinedAt = new Map<string, number>()
  /** The latest of #joinedAt's values (-Infinity: none joined after start): a user pinned after it rebalances nowhere. */
  #lastJoin = -Infinity
  /**
   * Upstreams that left the set while ready, draining or serving (bounded): a planned removal (a
   * reload, discovery), whose users move with reason=drain; one that left while down (also a
   * draining one), dead.
   */
  readonly #leftPlanned = new Set<string>()
  #load = (i: number): number => this.#sessions.loadOf(this.placement.ids[i]!)
  /** `on_scale_up: gradual`: moves left in the token bucket (one second's worth at most), and when it was filled. */
  #budget: MoveBudget = { moves: 0, at: -Infinity }
  /** `spill`: its own move budget. */
  #spillBudget: MoveBudget = { moves: 0, at: -Infinity }
  /** Sum of the placement table's weights (the cheap first test of spill). */
  #totalWeight = 0

  constructor(cfg: AffinityConfig, options: RouterOptions) {
    this.#cfg = cfg
    this.#sessions = options.sessions
    this.#cookies = options.cookies
    this.health = options.availability ?? ALWAYS
    this.#history = options.history ?? NO_HISTORY
    this.#inFlight = options.load ?? null
  }

  /**
   * Replace the upstream set (reload, discovery) at time `now`: rebuilds placement; pins survive by id.
   * `gone`: ids that leave because their process is gone, ready or not (a pod whose address
   * another pod took, or whose name is listed not ready under another pod uid: membership
   * removes it at once): not a planned removal, their users move with reason=dead.
   */
  setUpstreams(members: PlacementMembers, now: number, gone: ReadonlySet<string> = NOTHING_GONE): void {
    const upstreams = members.list
    for (const u of upstreams) if (!this.#joinedAt.has(u.id)) this.#joinedAt.set(u.id, this.#first ? -Infinity : now)
    this.#first = false
    const present = new Set<string>()
    for (const u of upstreams) present.add(u.id)
    for (const id of this.#joinedAt.keys()) {
      if (present.has(id)) continue
      this.#joinedAt.delete(id)
      // ready: serving or draining; a drained one found down before it left (a crashed pod that
      // discovery dropped) is dead, as its users were while it was still in the set
      if (this.health.ready(id) && !gone.has(id)) this.#leftPlanned.add(id)
    }
    this.#lastJoin = -Infinity
    for (const at of this.#joinedAt.values()) if (at > this.#lastJoin) this.#lastJoin = at
    for (const u of upstreams) this.#leftPlanned.delete(u.id)
    for (const id of this.#leftPlanned) {
      if (this.#leftPlanned.size <= 1024) break
      this.#leftPlanned.delete(id) // oldest first
    }
    // from the previous table: one upstream added or removed recomputes a few buckets, not all
    this.placement = buildPlacement(upstreams, { previous: this.placement })
    this.#roundRobin = new RoundRobin(upstreams)
    this.#rrIds = upstreams.map((u) => u.id)
    this.#totalWeight = upstreams.reduce((sum, u) => sum + u.weight, 0)
  }

  /** Upstream ids of the current placement table (sorted). */
  get ids(): readonly string[] {
    return this.placement.ids
  }

  /**
   * Decide where a request with this key goes. `tried` holds the upstreams this request
   * already failed on (a retry routes around them). `hold`: make no move by choice (an admin's
   * order, rebalance, spill, a drain that migrates, before its `drain_timeout`), only those the
   * user's upstream forces (down, drained past its timeout): the request path asks again so
   * when a chosen move's state could not be fetched (the user would lose it for nothing).
   */
  decide(key: RequestKey, tried: ReadonlySet<string> = NOTHING_TRIED, now: number, hold = false): Decision | NoRoute {
    const d = this.#decide(key, tried, now, hold)
    // with bounded loads, a placement counts as load from now (its pin is recorded when the
    // upstream answers); the request path settles it when the attempt ends
    if (typeof d !== 'string' && d.bind !== null && this.#cfg.balance_factor !== null) this.#sessions.reserve(d.bind)
    return d
  }

  /** The request path is done with `d` (its pin recorded or its attempt over). */
  settle(d: Decision): void {
    if (d.bind !== null) this.#sessions.settle(d.bind)
  }

  #decide(key: RequestKey, tried: ReadonlySet<string>, now: number, hold: boolean): Decision | NoRoute {
    switch (key.kind) {
      case 'none':
        return this.#roundRobinRoute(key.learn, tried)
      case 'cookie':
        return key.session !== null ? this.#cookieUser(key.session, tried, now, hold) : this.#newSession(tried, now)
      case 'table':
        return this.#pinned(key, tried, now, hold)
    }
  }

  /**
   * A new user's WebSocket upgrade (no cookie yet): a cookie set on a 101 is unreliable, so
   * the client IP places it, with the rules of a new session and no table write; with
   * `key: cookie` the decision carries a new cookie. Anyone else is decided as a request.
   */
  decideUpgrade(key: RequestKey, clientIp: string, tried: ReadonlySet<string> = NOTHING_TRIED, now: number, hold = false): Decision | NoRoute {
    if (key.kind !== 'cookie' || key.session !== null) return this.decide(key, tried, now, hold)
    const index = this.#place(this.#placing.for(clientIp, tried, now))
    if (index < 0) return 'none'
    const id = this.placement.ids[index]!
    // the new session is a session from its 101 on: logged, recorded (GET /sessions finds it)
    const sessionId = this.#cookies === null ? null : this.#cookies.newSessionId()
    const setCookie = sessionId === null ? null : this.#cookies!.issue(sessionId, id, 0, now)
    return decision(id, 'fallback', 0, null, setCookie, false, null, sessionId)
  }

  #roundRobinRoute(learn: boolean, tried: ReadonlySet<string>): Decision | NoRoute {
    for (let n = 0; n < this.#rrIds.length; n++) {
      const i = this.#roundRobin.next()
      if (i < 0) break
      const id = this.#rrIds[i]!
      if (this.health.acceptsNew(id) && !tried.has(id)) return decision(id, 'round_robin', 0, null, null, learn, null, null)
    }
    return 'none'
  }

  /**
   * Where a pinned user goes: `pinned` while it is available, else the key's next upstream
   * in hash order. With `rebalance`, a user pinned at `pinnedAt` also moves when its hash now
   * prefers an upstream that joined after that (scale-up), never otherwise (so placements made
   * by bounded loads, and learned bindings, which pass `rebalance: false`, stay put).
   * A user whose upstream was not ready at some point after `lastSeen` (+ `slack`, the
   * precision of that time) stays but is rehydrated there (`restart`): it may have lost their
   * in-memory state. Returns the index and why the user moves (null: stays).
   */
  #resolve(pinned: string, p: Placing, pinnedAt: number, rebalance: boolean, lastSeen: number, slack: number): { readonly index: number; readonly reason: MoveReason | null } | NoRoute {
    const table = this.placement
    const pinnedIndex = table.indexOf(pinned)
    const available = pinnedIndex >= 0 && this.#available(pinned, p)
    const order = p.hold ? undefined : this.#history.ordered(p.key)
    if (order !== undefined && available) {
      const index = order.to === null ? this.#place(p) : table.indexOf(order.to)
      if (index >= 0 && index !== pinnedIndex && (order.to === null || p.acceptReady(index))) return { index, reason: 'admin' }
    }
    // a request sent with the cookie from before a deliberate move made moments ago: where the
    // user is now (while it may keep them), with no new-visit gate or move budget (#cookieUser
    // sees the move done: no second one); after a failover, the cookie's upstream ready again is
    // theirs (as on a replica without the record of the move)
    if (available && p.done !== null) {
      const done = table.indexOf(p.done)
      if (done >= 0 && done !== pinnedIndex && this.#available(p.done, p)) return { index: done, reason: 'restart' }
    }
    if (rebalance && this.#cfg.on_scale_up !== 'persistent' && available && !p.hold) {
      const index = this.#rebalanced(p, pinnedIndex, pinnedAt, lastSeen)
      if (index >= 0) return { index, reason: 'rebalance' }
    }
    if (available && this.#cfg.spill !== null && this.#inFlight !== null && !p.hold) {
      const index = this.#spilled(p, pinnedIndex, lastSeen)
      if (index >= 0) return { index, reason: 'spill' }
    }
    if (available) return this.health.readySince(pinned) > lastSeen + slack ? { index: pinnedIndex, reason: 'restart' } : stay(pinnedIndex)
    const draining = pinnedIndex >= 0 ? this.health.ready(pinned) && !p.tried.has(pinned) : this.#leftPlanned.has(pinned)
    // where this process last answered the user, at a later epoch than their cookie's: their
    // state is there (a spill or an admin's order may have put them off their hash order); no
    // move, so also with `strict`
    const at = p.answeredOn === null ? -1 : table.indexOf(p.answeredOn)
    if (at >= 0 && at !== pinnedIndex && this.#available(p.answeredOn!, p)) return { index: at, reason: draining ? 'drain' : 'dead' }
    let index = table.pick(p.hash, p.acceptNew)
    if (index < 0) index = table.pick(p.hash, p.acceptNewAtAll)
    // no upstream takes this user as a new one (every other drains too): one whose own upstream
    // still serves them stays there, rather than move to another draining one or "move" back to
    // their own (a new epoch and a rehydration at every request); they leave once an upstream
    // takes new users again
    if (index < 0 && draining && pinnedIndex >= 0) return this.health.readySince(pinned) > lastSeen + slack ? { index: pinnedIndex, reason: 'restart' } : stay(pinnedIndex)
    if (this.#cfg.strict) return 'strict'
    if (index < 0) index = table.pick(p.hash, p.acceptReady) // every other one drains: better than nothing
    return index < 0 ? 'none' : { index, reason: draining ? 'drain' : 'dead' }
  }

  /**
   * The upstream a user pinned at `pinnedAt` rebalances to, or -1: the one their hash now
   * prefers, if it joined after the pin; with `gradual` only at a new visit (an idle gap of
   * `rebalance.min_idle` since their last answer, by the latest of this process's record and
   * `lastSeen`, the pin's own last use, which other workers and replicas also update) and while
   * the move budget lasts (a request sent with the cookie from before a move made moments ago
   * follows it before this is asked: #resolve).
   */
  #rebalanced(p: Placing, pinnedIndex: number, pinnedAt: number, lastSeen: number): number {
    // no upstream joined after the pin (most requests): nothing to pick, the key is not hashed
    if (!(this.#lastJoin > pinnedAt)) return -1
    const table = this.placement
    const index = table.pick(p.hash, p.acceptNew)
    if (index < 0 || index === pinnedIndex || !(this.#joinedAt.get(table.ids[index]!)! > pinnedAt)) return -1
    if (this.#cfg.on_scale_up === 'rebalance') return index
    const last = Math.max(this.#history.lastSeen(p.key, p.now) ?? -Infinity, lastSeen)
    if (p.now - last < this.#cfg.rebalance.min_idle) return -1
    return takeMove(this.#budget, this.#cfg.rebalance.max_moves_per_second, p.now) ? index : -1
  }

  /**
   * Spill: the upstream a user of the overloaded upstream `pinnedIndex` moves to, or -1. An
   * upstream's bound is `spill.factor` x its weighted share of all in-flight requests among the
   * upstreams that take new users (with equal weights: factor x the mean); the pinned one is
   * overloaded when its (time-averaged) in-flight requests exceed its bound and 1 (an upstream
   * averaging one request or less is never overloaded). The user moves only at a new visit (no
   * answer for `spill.min_idle`, by the latest of this process's record and `lastSeen`), to the
   * first upstream in their hash order that takes new users and is under its bound, while the
   * move budget lasts (a request sent with the cookie from before a spill made moments ago
   * follows it before this is asked: #resolve).
   * Cost when not overloaded: two O(1) reads; the walk over the upstreams
   * is made only for a returning user of an overloaded upstream.
   */
  #spilled(p: Placing, pinnedIndex: number, lastSeen: number): number {
    const spill = this.#cfg.spill!
    const load = this.#inFlight!
    const table = this.placement
    const count = load.loadOf(table.ids[pinnedIndex]!)
    if (count <= 1) return -1
    const perWeight = spill.factor * load.totalLoad
    const weight = table.weightOf(pinnedIndex)
    // against the share among all upstreams first (never above the share among those taking new users)
    if (count <= (perWeight * weight) / this.#totalWeight) return -1
    const last = Math.max(this.#history.lastSeen(p.key, p.now) ?? -Infinity, lastSeen)
    if (p.now - last < spill.min_idle) return -1
    const n = table.ids.length
    let accepted = weight
    for (let i = 0; i < n; i++) if (i !== pinnedIndex && p.acceptNew(i)) accepted += table.weightOf(i)
    if (count <= (perWeight * weight) / accepted) return -1
    const index = table.pick(p.hash, (i) => i !== pinnedIndex && p.acceptNew(i) && load.loadOf(table.ids[i]!) < (perWeight * table.weightOf(i)) / accepted)
    return index >= 0 && takeMove(this.#spillBudget, spill.max_moves_per_second, p.now) ? index : -1
  }

  /**
   * How many of `users` (key, upstream, when pinned) their hash now sends to an upstream that
   * joined after their pin: the users a rebalance would still move. Example: after 3 -> 4
   * upstreams, about a quarter of the users pinned before, until they have moved.
   */
  rebalancePending(users: Iterable<{ readonly key: string; readonly upstream: string; readonly createdAt: number }>): number {
    let pending = 0
    const table = this.placement
    for (const u of users) {
      const index = table.pick(hashKey(u.key), (i) => this.health.acceptsNew(table.ids[i]!))
      if (index >= 0 && table.ids[index] !== u.upstream && this.#joinedAt.get(table.ids[index]!)! > u.createdAt) pending++
    }
    return pending
  }

  /**
   * A pinned upstream keeps its users while ready, untried, and not drained past drain_timeout;
   * when its drain migrates, a user leaves it at their first request after an idle gap of
   * `drain.min_idle` since that upstream last answered them, or since the drain began if that is
   * later (so a burst is not split). In the drain's first `min_idle` nobody leaves: every worker
   * learns of the drain meanwhile, and shares the answers to its users from then on (see
   * SessionRecords.shared). A user this process has no answer of counts from when it learned
   * of the drain (a replica that started during the drain cannot tell a burst in progress).
   * A user this process answered elsewhere since their cookie was issued has left already:
   * requests sent with the cookie from before follow the move.
   */
  #available(id: string, p: Placing): boolean {
    if (!this.health.ready(id) || p.tried.has(id)) return false
    const since = this.health.drainingSince(id)
    if (since === null) return true
    if (p.now - since >= this.#cfg.drain_timeout) return false
    if (!this.health.drainMigrates(id)) return true
    if (p.answeredOn !== null && p.answeredOn !== id) return false
    if (p.hold) return true
    const last = Math.max(this.#history.lastSeenOn(p.key, id, p.now) ?? this.health.drainKnownSince?.(id) ?? since, since)
    return p.now - last < this.#cfg.drain.min_idle
  }

  #cookieUser(s: DecodedCookie, tried: ReadonlySet<string>, now: number, hold: boolean): Decision | NoRoute {
    // A cookie older than this process's last answer to its user (a later epoch): a client that
    // ignores the re-issued cookie, or a burst sent before it arrived. The user's state is where
    // that answer came from. If that is this upstream and it has been ready since, the move the
    // old cookie asks for is done: an ordinary request (no second rehydration over what the user
    // built since); else a move from there, rehydrated, at the next epoch. The upstream is the
    // cookie's either way, so replicas without such a record route the user the same (but for
    // the burst right after a move, MOVE_BURST: that move stands, as `done`, without a new visit
    // or the move budget; workers share their moves, so every worker of this process does so).
    const seen = this.#history.moved(s.sessionId, now)
    const later = seen !== null && seen.epoch > s.epoch ? seen : null
    // a deliberate move made moments ago stands (see #resolve)
    const done = later !== null && now - later.movedAt < MOVE_BURST && later.reason !== 'dead' && later.reason !== 'restart' ? later.upstream : null
    const p = this.#placing.for(s.sessionId, tried, now, done, later?.upstream ?? null, hold)
    // the cookie stores its times in whole seconds
    const r = this.#resolve(s.upstream, p, s.issuedAt, true, s.lastSeen, 1_000)
    if (typeof r === 'string') return r
    const id = this.placement.ids[r.index]!
    const cookies = this.#cookies!
    const settled = later === null ? r.reason === null : later.upstream === id && this.health.readySince(id) <= later.lastSeen
    const epoch = settled ? (later?.epoch ?? s.epoch) : (later?.epoch ?? s.epoch) + 1
    const bind = this.#cfg.balance_factor !== null ? binding(s.sessionId, id, epoch, false) : null
    if (settled) {
      const source = id === s.upstream ? 'cookie' : 'failover'
      const setCookie = later === null ? cookies.refresh(s, now) : cookies.rebind(s, id, epoch, now)
      // the user stays where their cookie says, nothing to re-issue (most requests): see #stay
      if (source === 'cookie' && epoch === s.epoch && setCookie === null && bind === null) return this.#stay(s)
      return decision(id, source, epoch, null, setCookie, false, null, s.sessionId, bind)
    }
    // from where the user was last answered: restarted in place since, or their state is there
    const moved = later === null ? { from: s.upstream, reason: r.reason! } : { from: later.upstream, reason: later.upstream === id ? 'restart' as const : r.reason ?? 'restart' }
    return decision(id, 'failover', epoch, moved, cookies.rebind(s, id, epoch, now), false, null, s.sessionId, bind)
  }

  /**
   * The decision for the cookie `s` whose user stays on its upstream at its epoch, with no
   * cookie to re-issue and no binding to record: made once per verified cookie (the codec
   * hands out one object per cookie value it verified lately) and shared by its requests
   * (decisions are frozen, and nothing tells them apart by identity), not made again with each
   * request (~0.1 KB: bench/README.md, "Bytes allocated per request"). Two generations of at
   * most STAY_CACHE entries bound the memory (~2 MB), as the codec's own cache.
   */
  #stay(s: DecodedCookie): Decision {
    let d = this.#stays.get(s)
    if (d === undefined) {
      d = this.#staysOld.get(s) ?? decision(s.upstream, 'cookie', s.epoch, null, null, false, null, s.sessionId)
      if (this.#stays.size >= STAY_CACHE) {
        this.#staysOld = this.#stays
        this.#stays = new Map()
      }
      this.#stays.set(s, d)
    }
    return d
  }

  #newSession(tried: ReadonlySet<string>, now: number): Decision | NoRoute {
    const cookies = this.#cookies!
    const sessionId = cookies.newSessionId()
    const index = this.#place(this.#placing.for(sessionId, tried, now))
    if (index < 0) return 'none'
    const id = this.placement.ids[index]!
    const bind = this.#cfg.balance_factor !== null ? binding(sessionId, id, 0, false) : null
    return decision(id, 'new_session', 0, null, cookies.issue(sessionId, id, 0, now), false, null, sessionId, bind)
  }

  /**
   * A table-pinned key: the live entry holds while available, else the hash. `learned` keys
   * (application cookies) are pinned only by what an upstream set, never by their hash, so a
   * client inventing values cannot fill the table; they are never rebalanced either.
   */
  #pinned(key: Extract<RequestKey, { kind: 'table' }>, tried: ReadonlySet<string>, now: number, hold: boolean): Decision | NoRoute {
    const { value, learned, learn } = key
    const sessions = this.#sessions
    const lastSeen = sessions.peek(value, now)?.lastSeen ?? now
    const entry = sessions.get(value, now)
    const p = this.#placing.for(value, tried, now, null, null, hold)
    const appKey = learned ? value : null
    const sessionKey = key.checkpoints ? value : null
    // the IP only places a user without their cookie: a move is logged as failover, else fallback
    const settled: RouteSource = key.checkpoints ? 'table' : 'fallback'
    if (entry === null && learned) {
      const g = sessions.rotated(value, now)
      if (g !== null && this.placement.indexOf(g.upstream) >= 0 && this.#available(g.upstream, p)) {
        return decision(g.upstream, 'table', g.epoch, null, null, learn, appKey, sessionKey)
      }
    }
    if (entry === null) {
      const index = this.#place(p)
      if (index < 0) return 'none'
      const id = this.placement.ids[index]!
      return decision(id, key.checkpoints ? 'hash' : 'fallback', 0, null, null, learn, appKey, sessionKey, learned ? null : binding(value, id, 0, true), now)
    }
    const r = this.#resolve(entry.upstream, p, entry.createdAt, !learned, lastSeen, 0)
    if (typeof r === 'string') return r
    const id = this.placement.ids[r.index]!
    if (r.reason === null) return decision(id, settled, entry.epoch, null, null, learn, appKey, sessionKey, null, entry.createdAt)
    const epoch = entry.epoch + 1
    return decision(id, 'failover', epoch, { from: entry.upstream, reason: r.reason }, null, learn, appKey, sessionKey, binding(value, id, epoch, true), now)
  }

  /** Place a new key: bounded loads when configured, else the plain hash; only upstreams that accept new users. */
  #place(p: Placing): number {
    const factor = this.#cfg.balance_factor
    const index = factor === null ? this.placement.pick(p.hash, p.acceptNew) : pickBounded(this.placement, p.hash, p.acceptNew, this.#load, this.#sessions.load, factor)
    if (index >= 0) return index
    // slow start turned the key away from every upstream taking new users (see acceptNewAtAll)
    return factor === null ? this.placement.pick(p.hash, p.acceptNewAtAll) : pickBounded(this.placement, p.hash, p.acceptNewAtAll, this.#load, this.#sessions.load, factor)
  }
}

/** A token bucket of moves: `moves` left (one second's worth at most), refilled at `at`. */
interface MoveBudget {
  moves: number
  at: number
}

/** Take one move from `b` at `rate` a second, at `now`; false when none is left. */
function takeMove(b: MoveBudget, rate: number, now: number): boolean {
  b.moves = Math.min(rate, b.moves + (Math.max(0, now - b.at) / 1000) * rate) // a clock stepping back refills nothing
  b.at = now
  if (b.moves < 1) return false
  b.moves--
  return true
}

function decision(
  upstream: string, source: RouteSource, epoch: number, moved: Decision['moved'], setCookie: string | null,
  learn: boolean, appKey: string | null, sessionKey: string | null, bind: Binding | null = null, placedAt: number | null = null,
): Decision {
  return Object.freeze({ upstream, source, epoch, moved, setCookie, learn, appKey, sessionKey, bind, placedAt })
}

function binding(key: string, upstream: string, epoch: number, publish: boolean): Binding {
  return Object.freeze({ key, upstream, epoch, publish })
}
