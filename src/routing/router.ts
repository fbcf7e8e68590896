// The routing decision: which upstream serves this request, and what the response must carry
// for the user to come back (a cookie to issue, an application cookie to learn). Layer 2: owns
// the affinity table and the current placement table, reads time from the injected Clock, and
// never touches sockets or writes responses itself: the forwarder applies inspect()/decorate().
import { randomBytes } from 'node:crypto'
import type { IncomingHttpHeaders } from 'node:http'
import type { AffinityConfig, UpstreamConfig } from '../config/schema.js'
import type { Clock } from '../clock.js'
import { CookieCodec, setCookieSerializer, shouldRefresh, type DecodedCookie } from '../affinity/cookie-codec.js'
import { parseTrustedProxies, clientIp, type TrustedProxies } from '../affinity/client-ip.js'
import { extractAffinityKey, keyOptions, type KeyOptions } from '../affinity/key.js'
import { AffinityTable } from '../affinity/table.js'
import { buildPlacement, type PlacementTable } from '../placement/rendezvous.js'
import { pickBounded } from '../placement/bounded-load.js'
import { hashKey, murmur3U32 } from '../placement/hash.js'
import { RoundRobin } from '../placement/round-robin.js'

/** How the request was placed, for logs and metrics (never the key's value). */
export type RouteSource =
  | 'round_robin' // key: none, or a header key that was absent
  | 'cookie' // a valid Tether cookie pinned it
  | 'new_session' // a new Tether cookie is being issued
  | 'table' // an affinity table entry pinned it
  | 'hash' // placed by the key's hash (new or expired entry, or on_scale_up: rebalance)
  | 'fallback' // app_cookie absent: placed by the fallback key
  | 'failover' // the user's upstream was unavailable: moved to the next in hash order

/** Why a user was moved to another upstream (sent upstream in X-Tether-Moved). */
export type MoveReason = 'dead' | 'drain' | 'rebalance'

/** One request's routing decision. `decorate` adds what the response must carry. */
export class Route {
  constructor(
    readonly id: string,
    readonly source: RouteSource,
    /** Set-Cookie value to add (Tether's cookie), or null. */
    readonly setCookie: string | null,
    /** Learn the application cookie from the response's Set-Cookie. */
    readonly learn: boolean,
    readonly router: Router,
    /** The user's session epoch (bumped by every move). */
    readonly epoch: number,
    /** Set when this request moves the user away from `from`. */
    readonly moved: { readonly from: string; readonly reason: MoveReason } | null,
    /** The application cookie value the request carried (app_cookie), for re-binding. */
    readonly appKey: string | null = null,
    /** The user's session key for checkpoints (cookie session id or table key); null: none. */
    readonly sessionKey: string | null = appKey,
  ) {}

  /** An application cookie value the upstream set on this answer (learned), if any. */
  learnedKey: string | null = null
  /**
   * The application cookie value this answer replaced by `learnedKey` (a rotation), else
   * null: the request path carries the user's newest checkpoint over from it (StateProtocol.rekey).
   */
  rekeyedFrom: string | null = null
  #learned = false

  /** Read the upstream answer's headers (before filtering): learn an application cookie. */
  inspect(headers: Record<string, string | string[] | undefined>): void {
    this.#learned = true
    this.router.learnFrom(this, headers['set-cookie'])
  }

  /** Apply the decision to the upstream response's (filtered) headers. */
  decorate(headers: Record<string, string | string[] | undefined>): void {
    if (!this.#learned) this.inspect(headers)
    this.router.decorate(this, headers)
  }
}

/** No route: no upstream can take the request, or `strict` forbids moving the user. */
export type NoRoute = 'none' | 'strict'

/** What the router needs to know about upstream health (owned by the health module). */
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

/** How long an application cookie value replaced by a new one still routes (ms), and how many such values are kept. */
const ROTATION_GRACE = 60_000
const ROTATED_MAX = 10_000

const ALWAYS: Availability = { ready: () => true, acceptsNew: () => true, drainingSince: () => null, slowStartWeight: () => 1 }
/** Seed of the per-key draw that lets a share of new keys onto a slow-starting upstream. */
const SEED_SLOW_START = 0x534c4f57
const NOTHING_TRIED: ReadonlySet<string> = new Set()

export interface RouterOptions {
  readonly clock: Clock
  /** Upstream health; default: every upstream available. */
  readonly availability?: Availability
  /** Source of session ids (default crypto.randomBytes). */
  readonly randomBytes?: (size: number) => Uint8Array
  /** Add X-Tether-Upstream to responses. */
  readonly upstreamHeader?: boolean
  /** Called once at construction when no cookie secret is configured. */
  readonly warn?: (message: string) => void
  /** Told of every binding the table makes or drops (shared affinity writes them through). */
  readonly bindings?: {
    bound(key: string, upstream: string, epoch: number): void
    unbound(key: string): void
  }
}

/**
 * Decides placement per request from the configured affinity key:
 * - `none`: weighted round robin over the upstreams that accept new users.
 * - `cookie`: a valid signed cookie names its upstream; otherwise a new session id is placed
 *   by its hash and a cookie issued. The cookie is re-issued when its idle clock needs sliding.
 * - `app_cookie`, `client_ip`, `header`: the affinity table pins the key; a miss is placed by
 *   the key's hash and recorded. For `app_cookie`, a new value set by an upstream is bound to
 *   that upstream (learning), so the user returns to the replica that created the session.
 * A pinned user whose upstream is unavailable (not ready, already tried by this request, or
 * draining for longer than `drain_timeout`) moves to the next upstream in the key's hash order
 * (the same on every Tether replica), with its epoch bumped, and stays there (cookie re-issued,
 * table updated); with `strict` the answer is 'strict' instead. With `on_scale_up: rebalance`
 * the hash decides even when a pin exists; with `persistent` pins hold until they expire.
 */
export class Router {
  readonly #cfg: AffinityConfig
  readonly #clock: Clock
  readonly #random: (size: number) => Uint8Array
  readonly #keyOptions: KeyOptions | null
  readonly #codec: CookieCodec | null
  readonly #serialize: ((value: string) => string) | null
  readonly #trusted: TrustedProxies
  readonly #upstreamHeader: boolean
  readonly #health: Availability
  readonly #bindings: RouterOptions['bindings'] | null
  /** Bindings for table-based keys (and new-session load accounting when bounded). */
  readonly table: AffinityTable
  #placement!: PlacementTable
  #roundRobin!: RoundRobin
  #rrIds!: readonly string[]
  /** When each upstream joined (ms); those present at start count as always there. */
  readonly #joinedAt = new Map<string, number>()
  /** Application cookie values replaced by a new one, still routed for ROTATION_GRACE (bounded, oldest first out). */
  readonly #rotated = new Map<string, { id: string; epoch: number; until: number }>()
  /** Upstreams that left the set while draining (bounded): their users move with reason=drain. */
  readonly #leftDraining = new Set<string>()
  // the current request's "already tried" set and key hash, read by the accept predicates
  #tried: ReadonlySet<string> = NOTHING_TRIED
  #hash = 0
  /**
   * May a new key go to upstream i? It must accept new users and not be tried yet; an
   * upstream in slow start takes a key only if the key's own draw (a second hash, the same on
   * every replica) falls under its current weight, so it receives a growing share of new keys.
   */
  #acceptNew = (i: number): boolean => {
    const id = this.#placement.ids[i]!
    if (!this.#health.acceptsNew(id) || this.#tried.has(id)) return false
    const w = this.#health.slowStartWeight(id)
    return w >= 1 || murmur3U32(this.#hash, SEED_SLOW_START) / 4294967296 < w
  }
  #acceptReady = (i: number): boolean => {
    const id = this.#placement.ids[i]!
    return this.#health.ready(id) && !this.#tried.has(id)
  }
  #load = (i: number): number => this.table.countByUpstream(this.#placement.ids[i]!)

  constructor(cfg: AffinityConfig, upstreams: readonly UpstreamConfig[], options: RouterOptions) {
    this.#cfg = cfg
    this.#clock = options.clock
    this.#health = options.availability ?? ALWAYS
    this.#bindings = options.bindings ?? null
    this.#random = options.randomBytes ?? randomBytes
    this.#upstreamHeader = options.upstreamHeader ?? false
    this.#trusted = parseTrustedProxies(cfg.client_ip.trusted_proxies)
    this.table = new AffinityTable({ maxEntries: cfg.max_entries, idleTimeout: cfg.idle_timeout, absoluteTimeout: cfg.absolute_timeout })
    this.#codec = null
    this.#serialize = null
    switch (cfg.key) {
      case 'none':
        this.#keyOptions = null
        break
      case 'cookie': {
        let secrets = cfg.cookie.secret
        if (secrets === null) {
          secrets = [Buffer.from(this.#random(32)).toString('base64url')]
          options.warn?.('affinity.cookie.secret is not set: cookies are signed with a random per-process secret, so other Tether replicas (and this one after a restart) will not recognise them; set it for production')
        }
        this.#codec = new CookieCodec({ secrets, idleTimeout: cfg.idle_timeout, absoluteTimeout: cfg.absolute_timeout, randomBytes: this.#random })
        const c = cfg.cookie
        this.#serialize = setCookieSerializer(c.name, { path: c.path, domain: c.domain, maxAge: c.max_age, secure: c.secure, httpOnly: c.http_only, sameSite: c.same_site })
        this.#keyOptions = keyOptions({ kind: 'cookie', cookieName: c.name, codec: this.#codec })
        break
      }
      case 'app_cookie':
        this.#keyOptions = keyOptions({ kind: 'app_cookie', cookieName: cfg.app_cookie.name! })
        break
      case 'client_ip':
        this.#keyOptions = keyOptions({ kind: 'client_ip', trusted: this.#trusted })
        break
      case 'header':
        this.#keyOptions = keyOptions({ kind: 'header', headerName: cfg.header.name! })
        break
    }
    this.setUpstreams(upstreams)
  }

  /** Replace the upstream set (reload, discovery): rebuilds placement; pins survive by id. */
  setUpstreams(upstreams: readonly UpstreamConfig[]): void {
    const first = this.#placement === undefined
    const now = this.#clock.now()
    for (const u of upstreams) if (!this.#joinedAt.has(u.id)) this.#joinedAt.set(u.id, first ? -Infinity : now)
    for (const id of this.#joinedAt.keys()) {
      if (upstreams.some((u) => u.id === id)) continue
      this.#joinedAt.delete(id)
      if (this.#health.drainingSince(id) !== null) this.#leftDraining.add(id)
    }
    for (const u of upstreams) this.#leftDraining.delete(u.id)
    for (const id of this.#leftDraining) {
      if (this.#leftDraining.size <= 1024) break
      this.#leftDraining.delete(id) // oldest first
    }
    this.#placement = buildPlacement(upstreams)
    this.#roundRobin = new RoundRobin(upstreams)
    this.#rrIds = upstreams.map((u) => u.id)
  }

  /** Upstream ids of the current placement table (sorted). */
  get ids(): readonly string[] {
    return this.#placement.ids
  }

  /**
   * Decide where the request with these headers, from this peer, goes. `tried` holds the
   * upstreams this request already failed on (a retry routes around them).
   */
  route(headers: IncomingHttpHeaders, peer: string, tried: ReadonlySet<string> = NOTHING_TRIED): Route | NoRoute {
    this.#tried = tried
    try {
      return this.#route(headers, peer)
    } finally {
      this.#tried = NOTHING_TRIED
    }
  }

  #route(headers: IncomingHttpHeaders, peer: string): Route | NoRoute {
    const opts = this.#keyOptions
    if (opts === null) return this.#roundRobinRoute(false)
    const now = this.#clock.now()
    const key = extractAffinityKey(headers, peer, opts, now)
    switch (key.kind) {
      case 'cookie':
        return key.status === 'ok' && key.session !== null ? this.#cookieUser(key.session, now) : this.#newSession(now)
      case 'app_cookie':
        if (key.value !== null) return this.#pinned(key.value, now, false, true)
        if (this.#cfg.app_cookie.fallback === 'client_ip') {
          const r = this.#pinned(clientIp(peer, headers['x-forwarded-for'], this.#trusted), now, true)
          // the IP only places the user: it must never key a checkpoint (users share an IP)
          return typeof r === 'string' ? r : new Route(r.id, r.moved !== null ? 'failover' : 'fallback', null, true, this, r.epoch, r.moved, null, null)
        }
        return this.#roundRobinRoute(true)
      case 'client_ip':
        return this.#pinned(key.value, now, false)
      case 'header':
        return key.value === null ? this.#roundRobinRoute(false) : this.#pinned(key.value, now, false)
    }
  }

  /** Response side of a decision: issue or refresh Tether's cookie, add the debug header. */
  decorate(route: Route, headers: Record<string, string | string[] | undefined>): void {
    if (route.setCookie !== null) appendSetCookie(headers, route.setCookie)
    if (this.#upstreamHeader) headers['x-tether-upstream'] = route.id
  }

  /** Learn the application cookie from an answer's Set-Cookie (app_cookie key only). */
  learnFrom(route: Route, setCookie: string | string[] | undefined): void {
    if (route.learn || this.#cfg.key === 'app_cookie') this.#learn(route, setCookie)
  }

  /** Remove up to `budget` expired table entries (called by a background sweeper). */
  sweep(budget: number): number {
    return this.table.sweep(this.#clock.now(), budget)
  }

  #roundRobinRoute(learn: boolean): Route | NoRoute {
    for (let n = 0; n < this.#rrIds.length; n++) {
      const i = this.#roundRobin.next()
      if (i < 0) break
      const id = this.#rrIds[i]!
      if (this.#health.acceptsNew(id) && !this.#tried.has(id)) return new Route(id, 'round_robin', null, learn, this, 0, null)
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
  #resolve(pinned: string, hash: number, now: number, pinnedAt: number, rebalance: boolean): { index: number; reason: MoveReason | null } | NoRoute {
    const p = this.#placement
    const pinnedIndex = p.indexOf(pinned)
    if (rebalance && this.#cfg.on_scale_up === 'rebalance' && pinnedIndex >= 0 && this.#available(pinned, now)) {
      const index = p.pick(hash, this.#acceptNew)
      if (index >= 0 && index !== pinnedIndex && this.#joinedAt.get(p.ids[index]!)! > pinnedAt) return { index, reason: 'rebalance' }
    }
    if (pinnedIndex >= 0 && this.#available(pinned, now)) return { index: pinnedIndex, reason: null }
    if (this.#cfg.strict) return 'strict'
    const draining = pinnedIndex >= 0 ? this.#health.ready(pinned) && !this.#tried.has(pinned) : this.#leftDraining.has(pinned)
    let index = p.pick(hash, this.#acceptNew)
    if (index < 0) index = p.pick(hash, this.#acceptReady) // every other one drains: better than nothing
    return index < 0 ? 'none' : { index, reason: draining ? 'drain' : 'dead' }
  }

  /** A pinned upstream keeps its users while ready, untried, and not drained past drain_timeout. */
  #available(id: string, now: number): boolean {
    if (!this.#health.ready(id) || this.#tried.has(id)) return false
    const since = this.#health.drainingSince(id)
    return since === null || now - since < this.#cfg.drain_timeout
  }

  #cookieUser(s: DecodedCookie, now: number): Route | NoRoute {
    const r = this.#resolve(s.upstream, (this.#hash = hashKey(s.sessionId)), now, s.issuedAt, true)
    if (typeof r === 'string') return r
    const id = this.#placement.ids[r.index]!
    const epoch = r.reason === null ? s.epoch : s.epoch + 1
    if (this.#cfg.balance_factor !== null) this.table.set(s.sessionId, id, epoch, now)
    if (r.reason !== null) {
      const value = this.#codec!.refresh(s, now, { upstream: id, epoch })
      return new Route(id, 'failover', this.#serialize!(value), false, this, epoch, { from: s.upstream, reason: r.reason }, null, s.sessionId)
    }
    // slide the idle clock; a cookie Max-Age shorter than the idle timeout must be renewed sooner
    const window = Math.min(this.#cfg.idle_timeout, this.#cfg.cookie.max_age ?? Infinity)
    const refresh = shouldRefresh(s, now, window) ? this.#serialize!(this.#codec!.refresh(s, now)) : null
    return new Route(id, 'cookie', refresh, false, this, epoch, null, null, s.sessionId)
  }

  #newSession(now: number): Route | NoRoute {
    const sessionId = Buffer.from(this.#random(16)).toString('hex')
    const index = this.#place((this.#hash = hashKey(sessionId)))
    if (index < 0) return 'none'
    const id = this.#placement.ids[index]!
    if (this.#cfg.balance_factor !== null) this.table.set(sessionId, id, 0, now)
    const value = this.#codec!.encode({ sessionId, upstream: id, epoch: 0, issuedAt: now, lastSeen: now })
    return new Route(id, 'new_session', this.#serialize!(value), false, this, 0, null, null, sessionId)
  }

  /**
   * A table-pinned key: the live entry holds while available, else the hash. `learned` keys
   * (application cookies) are bound only by what an upstream set, never by their hash, so a
   * client inventing values cannot fill the table; they are never rebalanced either.
   */
  #pinned(key: string, now: number, learn: boolean, learned = false): Route | NoRoute {
    const entry = this.table.get(key, now)
    const hash = (this.#hash = hashKey(key))
    const appKey = learned ? key : null
    const sessionKey = key
    if (entry === null && learned) {
      const old = this.#rotated.get(key)
      if (old !== undefined && old.until > now && this.#available(old.id, now) && this.#placement.indexOf(old.id) >= 0) {
        return new Route(old.id, 'table', null, learn, this, old.epoch, null, appKey, sessionKey)
      }
    }
    if (entry === null) {
      const index = this.#place(hash)
      if (index < 0) return 'none'
      const id = this.#placement.ids[index]!
      if (!learned) this.#bind(key, id, 0, now)
      return new Route(id, 'hash', null, learn, this, 0, null, appKey, sessionKey)
    }
    const r = this.#resolve(entry.upstream, hash, now, entry.createdAt, !learned)
    if (typeof r === 'string') return r
    const id = this.#placement.ids[r.index]!
    if (r.reason === null) return new Route(id, 'table', null, learn, this, entry.epoch, null, appKey, sessionKey)
    const epoch = entry.epoch + 1
    this.#bind(key, id, epoch, now)
    return new Route(id, 'failover', null, learn, this, epoch, { from: entry.upstream, reason: r.reason }, appKey, sessionKey)
  }

  #bind(key: string, id: string, epoch: number, now: number): void {
    this.table.set(key, id, epoch, now)
    this.#bindings?.bound(key, id, epoch)
  }

  #unbind(key: string): void {
    this.table.delete(key)
    this.#bindings?.unbound(key)
  }

  /**
   * With a shared table: the affinity-table key this request will be routed by, when it must
   * be checked against the shared store first: the local table has no live entry for it, or
   * its entry was last used in an earlier sync period (every min(idle_timeout / 10, 5 s) of
   * use, so another replica's move is seen and the shared TTL renewed). Null otherwise, and
   * for cookie or round-robin routing, which need no table.
   */
  keyToSync(headers: IncomingHttpHeaders, peer: string): string | null {
    const opts = this.#keyOptions
    if (opts === null || opts.kind === 'cookie') return null
    const now = this.#clock.now()
    const k = extractAffinityKey(headers, peer, opts, now)
    let key: string | null = null
    if (k.kind === 'app_cookie') {
      key = k.value ?? (this.#cfg.app_cookie.fallback === 'client_ip' ? clientIp(peer, headers['x-forwarded-for'], this.#trusted) : null)
    } else if (k.kind === 'client_ip' || k.kind === 'header') key = k.value
    if (key === null) return null
    const entry = this.table.peek(key, now)
    const period = Math.min(this.#cfg.idle_timeout / 10, 5_000)
    return entry === null || Math.floor(entry.lastSeen / period) < Math.floor(now / period) ? key : null
  }

  /**
   * Reconcile a key with what the shared store holds (`shared`: null when it has nothing):
   * a binding with a higher epoch (another replica moved the user) replaces the local one; a
   * local one that is newer, or missing from the store, is published again (renewing its TTL).
   */
  sync(key: string, shared: { upstream: string; epoch: number } | null): void {
    const now = this.#clock.now()
    const local = this.table.peek(key, now)
    if (shared !== null && (local === null || shared.epoch > local.epoch)) {
      this.table.set(key, shared.upstream, shared.epoch, now)
    } else if (local !== null) {
      this.#bindings?.bound(key, local.upstream, local.epoch)
    }
  }

  /**
   * Place a new user by an arbitrary stable key (a WebSocket upgrade without a cookie: the
   * client IP), with the rules of a new session (accepting upstreams, slow start, bounded
   * loads) and no table write. With `key: cookie`, the route carries a new cookie for it.
   */
  placeKey(key: string, tried: ReadonlySet<string> = NOTHING_TRIED): Route | NoRoute {
    this.#tried = tried
    try {
      const index = this.#place((this.#hash = hashKey(key)))
      if (index < 0) return 'none'
      const id = this.#placement.ids[index]!
      let setCookie: string | null = null
      if (this.#codec !== null) {
        const now = this.#clock.now()
        const sessionId = Buffer.from(this.#random(16)).toString('hex')
        setCookie = this.#serialize!(this.#codec.encode({ sessionId, upstream: id, epoch: 0, issuedAt: now, lastSeen: now }))
      }
      return new Route(id, 'fallback', setCookie, false, this, 0, null, null, null)
    } finally {
      this.#tried = NOTHING_TRIED
    }
  }


  /** Place a new key: bounded loads when configured, else the plain hash; only upstreams that accept new users. */
  #place(hash: number): number {
    const factor = this.#cfg.balance_factor
    if (factor === null) return this.#placement.pick(hash, this.#acceptNew)
    return pickBounded(this.#placement, hash, this.#acceptNew, this.#load, this.table.size, factor)
  }

  /**
   * Bind an application cookie value set by the route's upstream to it (with the user's
   * epoch). The value the request carried, if replaced or deleted, is forgotten, so apps
   * that rotate the cookie on every answer (Laravel) leave one entry per user, not per answer.
   */
  #learn(route: Route, setCookie: string | string[] | undefined): void {
    if (setCookie === undefined) return
    const name = this.#cfg.app_cookie.name
    if (name === null) return
    const now = this.#clock.now()
    for (const line of Array.isArray(setCookie) ? setCookie : [setCookie]) {
      const value = appCookieValue(line, name, now)
      if (value === null) continue
      if (route.appKey !== null && route.appKey !== value.value) {
        // a rotated value (Laravel re-encrypts its cookie on every answer): the old binding
        // goes, but requests already in flight with the old value still reach the same
        // upstream for a short grace (a small bounded map, not the table)
        this.#unbind(route.appKey)
        if (!value.deleted) {
          route.rekeyedFrom = route.appKey
          this.#rotated.set(route.appKey, { id: route.id, epoch: route.epoch, until: now + ROTATION_GRACE })
          if (this.#rotated.size > ROTATED_MAX) this.#rotated.delete(this.#rotated.keys().next().value!)
        }
      }
      if (value.deleted) this.#unbind(value.value)
      else {
        this.#bind(value.value, route.id, route.epoch, now)
        route.learnedKey = value.value
      }
    }
  }
}

function appendSetCookie(headers: Record<string, string | string[] | undefined>, value: string): void {
  const existing = headers['set-cookie']
  if (existing === undefined) headers['set-cookie'] = value
  else if (Array.isArray(existing)) existing.push(value)
  else headers['set-cookie'] = [existing, value]
}

/**
 * The value a Set-Cookie line gives to cookie `name`, and whether the line deletes it
 * (empty value, Max-Age <= 0, or an Expires in the past). Null if the line is for another cookie.
 * Example: appCookieValue('PHPSESSID=abc; path=/', 'PHPSESSID', now) -> { value: 'abc', deleted: false }.
 */
export function appCookieValue(line: string, name: string, now: number): { value: string; deleted: boolean } | null {
  let i = 0
  while (i < line.length && line.charCodeAt(i) === 0x20) i++
  if (!line.startsWith(name, i) || line.charCodeAt(i + name.length) !== 0x3d /* = */) return null
  const start = i + name.length + 1
  let end = line.indexOf(';', start)
  if (end === -1) end = line.length
  let value = line.slice(start, end).trim()
  if (value.length >= 2 && value.startsWith('"') && value.endsWith('"')) value = value.slice(1, -1)
  const attrs = line.slice(end).toLowerCase()
  const maxAge = /;\s*max-age\s*=\s*(-?\d+)/.exec(attrs)
  const expires = /;\s*expires\s*=\s*([^;]+)/.exec(attrs)
  const deleted = value === '' || (maxAge !== null && Number(maxAge[1]) <= 0) ||
    (maxAge === null && expires !== null && Date.parse(expires[1]!) < now)
  return { value, deleted }
}
