// Routing: turns a request's key into a frozen Decision (which upstream, which epoch, whether
// the user moves, which cookie the answer must carry, which binding to record). Layer 2: reads
// the session table and health through injected parts and owns the current placement table
// (swapped whole when membership changes, never built per request). It writes nothing per
// request and never touches sockets: the answer side records the decision's binding.
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
  /** Share of new users an upstream in slow start takes, (0, 1]; 1 when not ramping. */
  slowStartWeight(id: string): number
}

/** The upstreams placement is built from (a membership snapshot). */
export interface PlacementMembers {
  readonly list: readonly { readonly id: string; readonly weight: number }[]
}

const ALWAYS: Availability = { ready: () => true, acceptsNew: () => true, drainingSince: () => null, slowStartWeight: () => 1 }
/** Seed of the per-key draw that lets a share of new keys onto a slow-starting upstream. */
const SEED_SLOW_START = 0x534c4f57
const NOTHING_TRIED: ReadonlySet<string> = new Set()

export interface RouterOptions {
  readonly sessions: SessionTable
  /** Tether's cookie (key: cookie); null for other keys. */
  readonly cookies: CookieIssuer | null
  /** Upstream health; default: every upstream available. */
  readonly availability?: Availability
}

/** One decision's view of the world: the request's tried set and key hash (never stored on the router). */
class Placing {
  constructor(readonly router: Router, readonly tried: ReadonlySet<string>, readonly hash: number, readonly now: number) {}
  /**
   * May a new key go to upstream i? It must accept new users and not be tried yet; an
   * upstream in slow start takes a key only if the key's own draw (a second hash, the same on
   * every replica) falls under its current weight, so it receives a growing share of new keys.
   */
  readonly acceptNew = (i: number): boolean => {
    const id = this.router.placement.ids[i]!
    const health = this.router.health
    if (!health.acceptsNew(id) || this.tried.has(id)) return false
    const w = health.slowStartWeight(id)
    return w >= 1 || murmur3U32(this.hash, SEED_SLOW_START) / 4294967296 < w
  }
  readonly acceptReady = (i: number): boolean => {
    const id = this.router.placement.ids[i]!
    return this.router.health.ready(id) && !this.tried.has(id)
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
 * the hash decides even when a pin exists; with `persistent` pins hold until they expire.
 *
 * Example: `router.decide({ kind: 'table', value: '10.0.0.5', ... }, new Set(), now)`
 * -> `{ upstream: 'app-1', source: 'hash', epoch: 0, moved: null, ... }`.
 */
export class Router {
  readonly #cfg: AffinityConfig
  readonly #sessions: SessionTable
  readonly #cookies: CookieIssuer | null
  /** Upstream health, read by the accept predicates. */
  readonly health: Availability
  /** The current placement table (replaced whole by setUpstreams). */
  placement: PlacementTable = buildPlacement([])
  #roundRobin = new RoundRobin([])
  #rrIds: readonly string[] = []
  #first = true
  /** When each upstream joined (ms); those present at start count as always there. */
  readonly #joinedAt = new Map<string, number>()
  /** Upstreams that left the set while draining (bounded): their users move with reason=drain. */
  readonly #leftDraining = new Set<string>()
  #load = (i: number): number => this.#sessions.loadOf(this.placement.ids[i]!)

  constructor(cfg: AffinityConfig, options: RouterOptions) {
    this.#cfg = cfg
    this.#sessions = options.sessions
    this.#cookies = options.cookies
    this.health = options.availability ?? ALWAYS
  }

  /** Replace the upstream set (reload, discovery) at time `now`: rebuilds placement; pins survive by id. */
  setUpstreams(members: PlacementMembers, now: number): void {
    const upstreams = members.list
    for (const u of upstreams) if (!this.#joinedAt.has(u.id)) this.#joinedAt.set(u.id, this.#first ? -Infinity : now)
    this.#first = false
    for (const id of this.#joinedAt.keys()) {
      if (upstreams.some((u) => u.id === id)) continue
      this.#joinedAt.delete(id)
      if (this.health.drainingSince(id) !== null) this.#leftDraining.add(id)
    }
    for (const u of upstreams) this.#leftDraining.delete(u.id)
    for (const id of this.#leftDraining) {
      if (this.#leftDraining.size <= 1024) break
      this.#leftDraining.delete(id) // oldest first
    }
    this.placement = buildPlacement(upstreams)
    this.#roundRobin = new RoundRobin(upstreams)
    this.#rrIds = upstreams.map((u) => u.id)
  }

  /** Upstream ids of the current placement table (sorted). */
  get ids(): readonly string[] {
    return this.placement.ids
  }

  /**
   * Decide where a request with this key goes. `tried` holds the upstreams this request
   * already failed on (a retry routes around them).
   */
  decide(key: RequestKey, tried: ReadonlySet<string> = NOTHING_TRIED, now: number): Decision | NoRoute {
    const d = this.#decide(key, tried, now)
    // with bounded loads, a placement counts as load from now (its pin is recorded when the
    // upstream answers); the request path settles it when the attempt ends
    if (typeof d !== 'string' && d.bind !== null && this.#cfg.balance_factor !== null) this.#sessions.reserve(d.bind)
    return d
  }

  /** The request path is done with `d` (its pin recorded or its attempt over). */
  settle(d: Decision): void {
    if (d.bind !== null) this.#sessions.settle(d.bind)
  }

  #decide(key: RequestKey, tried: ReadonlySet<string>, now: number): Decision | NoRoute {
    switch (key.kind) {
      case 'none':
        return this.#roundRobinRoute(key.learn, tried)
      case 'cookie':
        return key.session !== null ? this.#cookieUser(key.session, tried, now) : this.#newSession(tried, now)
      case 'table':
        return this.#pinned(key, tried, now)
    }
  }

  /**
   * A new user's WebSocket upgrade (no cookie yet): a cookie set on a 101 is unreliable, so
   * the client IP places it, with the rules of a new session and no table write; with
   * `key: cookie` the decision carries a new cookie. Anyone else is decided as a request.
   */
  decideUpgrade(key: RequestKey, clientIp: string, tried: ReadonlySet<string> = NOTHING_TRIED, now: number): Decision | NoRoute {
    if (key.kind !== 'cookie' || key.session !== null) return this.decide(key, tried, now)
    const index = this.#place(new Placing(this, tried, hashKey(clientIp), now))
    if (index < 0) return 'none'
    const id = this.placement.ids[index]!
    const setCookie = this.#cookies === null ? null : this.#cookies.issue(this.#cookies.newSessionId(), id, 0, now)
    return decision(id, 'fallback', 0, null, setCookie, false, null, null)
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
   * Returns the index and why the user moves (null: stays).
   */
  #resolve(pinned: string, p: Placing, pinnedAt: number, rebalance: boolean): { index: number; reason: MoveReason | null } | NoRoute {
    const table = this.placement
    const pinnedIndex = table.indexOf(pinned)
    const available = pinnedIndex >= 0 && this.#available(pinned, p)
    if (rebalance && this.#cfg.on_scale_up === 'rebalance' && available) {
      const index = table.pick(p.hash, p.acceptNew)
      if (index >= 0 && index !== pinnedIndex && this.#joinedAt.get(table.ids[index]!)! > pinnedAt) return { index, reason: 'rebalance' }
    }
    if (available) return { index: pinnedIndex, reason: null }
    if (this.#cfg.strict) return 'strict'
    const draining = pinnedIndex >= 0 ? this.health.ready(pinned) && !p.tried.has(pinned) : this.#leftDraining.has(pinned)
    let index = table.pick(p.hash, p.acceptNew)
    if (index < 0) index = table.pick(p.hash, p.acceptReady) // every other one drains: better than nothing
    return index < 0 ? 'none' : { index, reason: draining ? 'drain' : 'dead' }
  }

  /** A pinned upstream keeps its users while ready, untried, and not drained past drain_timeout. */
  #available(id: string, p: Placing): boolean {
    if (!this.health.ready(id) || p.tried.has(id)) return false
    const since = this.health.drainingSince(id)
    return since === null || p.now - since < this.#cfg.drain_timeout
  }

  #cookieUser(s: DecodedCookie, tried: ReadonlySet<string>, now: number): Decision | NoRoute {
    const r = this.#resolve(s.upstream, new Placing(this, tried, hashKey(s.sessionId), now), s.issuedAt, true)
    if (typeof r === 'string') return r
    const id = this.placement.ids[r.index]!
    const cookies = this.#cookies!
    const epoch = r.reason === null ? s.epoch : s.epoch + 1
    const bind = this.#cfg.balance_factor !== null ? binding(s.sessionId, id, epoch, false) : null
    if (r.reason !== null) {
      return decision(id, 'failover', epoch, { from: s.upstream, reason: r.reason }, cookies.rebind(s, id, epoch, now), false, null, s.sessionId, bind)
    }
    return decision(id, 'cookie', epoch, null, cookies.refresh(s, now), false, null, s.sessionId, bind)
  }

  #newSession(tried: ReadonlySet<string>, now: number): Decision | NoRoute {
    const cookies = this.#cookies!
    const sessionId = cookies.newSessionId()
    const index = this.#place(new Placing(this, tried, hashKey(sessionId), now))
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
  #pinned(key: Extract<RequestKey, { kind: 'table' }>, tried: ReadonlySet<string>, now: number): Decision | NoRoute {
    const { value, learned, learn } = key
    const sessions = this.#sessions
    const entry = sessions.get(value, now)
    const p = new Placing(this, tried, hashKey(value), now)
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
      return decision(id, key.checkpoints ? 'hash' : 'fallback', 0, null, null, learn, appKey, sessionKey, learned ? null : binding(value, id, 0, true))
    }
    const r = this.#resolve(entry.upstream, p, entry.createdAt, !learned)
    if (typeof r === 'string') return r
    const id = this.placement.ids[r.index]!
    if (r.reason === null) return decision(id, settled, entry.epoch, null, null, learn, appKey, sessionKey)
    const epoch = entry.epoch + 1
    return decision(id, 'failover', epoch, { from: entry.upstream, reason: r.reason }, null, learn, appKey, sessionKey, binding(value, id, epoch, true))
  }

  /** Place a new key: bounded loads when configured, else the plain hash; only upstreams that accept new users. */
  #place(p: Placing): number {
    const factor = this.#cfg.balance_factor
    if (factor === null) return this.placement.pick(p.hash, p.acceptNew)
    return pickBounded(this.placement, p.hash, p.acceptNew, this.#load, this.#sessions.load, factor)
  }
}

function decision(
  upstream: string, source: RouteSource, epoch: number, moved: Decision['moved'], setCookie: string | null,
  learn: boolean, appKey: string | null, sessionKey: string | null, bind: Binding | null = null,
): Decision {
  return Object.freeze({ upstream, source, epoch, moved, setCookie, learn, appKey, sessionKey, bind })
}

function binding(key: string, upstream: string, epoch: number, publish: boolean): Binding {
  return Object.freeze({ key, upstream, epoch, publish })
}
