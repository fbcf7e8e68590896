// The routing decision: which upstream serves this request, and what the response must carry
// for the user to come back (a cookie to issue, an application cookie to learn). Layer 2: owns
// the affinity table and the current placement table, reads time from the injected Clock, and
// never touches sockets or writes responses itself: the forwarder applies `decorate()`.
import { randomBytes } from 'node:crypto'
import type { IncomingHttpHeaders } from 'node:http'
import type { AffinityConfig, UpstreamConfig } from '../config/schema.js'
import type { Clock } from '../clock.js'
import { CookieCodec, setCookieSerializer, shouldRefresh } from '../affinity/cookie-codec.js'
import { parseTrustedProxies, clientIp, type TrustedProxies } from '../affinity/client-ip.js'
import { extractAffinityKey, keyOptions, type KeyOptions } from '../affinity/key.js'
import { AffinityTable } from '../affinity/table.js'
import { buildPlacement, type PlacementTable } from '../placement/rendezvous.js'
import { pickBounded } from '../placement/bounded-load.js'
import { hashKey } from '../placement/hash.js'
import { RoundRobin } from '../placement/round-robin.js'

/** How the request was placed, for logs and metrics (never the key's value). */
export type RouteSource =
  | 'round_robin' // key: none, or a header key that was absent
  | 'cookie' // a valid Tether cookie pinned it
  | 'new_session' // a new Tether cookie is being issued
  | 'table' // an affinity table entry pinned it
  | 'hash' // placed by the key's hash (new or expired entry, or on_scale_up: rebalance)
  | 'fallback' // app_cookie absent: placed by the fallback key

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
  ) {}

  /** Apply the decision to the upstream response's (already filtered) headers. */
  decorate(headers: Record<string, string | string[] | undefined>): void {
    this.router.onResponse(this, headers)
  }
}

export interface RouterOptions {
  readonly clock: Clock
  /** Source of session ids (default crypto.randomBytes). */
  readonly randomBytes?: (size: number) => Uint8Array
  /** Add X-Tether-Upstream to responses. */
  readonly upstreamHeader?: boolean
  /** Called once at construction when no cookie secret is configured. */
  readonly warn?: (message: string) => void
}

/**
 * Decides placement per request from the configured affinity key:
 * - `none`: weighted round robin.
 * - `cookie`: a valid signed cookie names its upstream; otherwise a new session id is placed
 *   by its hash and a cookie issued. The cookie is re-issued when its idle clock needs sliding.
 * - `app_cookie`, `client_ip`, `header`: the affinity table pins the key; a miss is placed by
 *   the key's hash and recorded. For `app_cookie`, a new value set by an upstream is bound to
 *   that upstream (learning), so the user returns to the replica that created the session.
 * With `on_scale_up: rebalance` the hash decides even when a pin exists (users move to a new
 * upstream by the minimal 1/N); with `persistent` pins hold until they expire.
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
  /** Bindings for table-based keys (and new-session load accounting when bounded). */
  readonly table: AffinityTable
  #placement!: PlacementTable
  #roundRobin!: RoundRobin
  #rrIds!: readonly string[]
  #accept = (_i: number): boolean => true
  #load = (i: number): number => this.table.countByUpstream(this.#placement.ids[i]!)

  constructor(cfg: AffinityConfig, upstreams: readonly UpstreamConfig[], options: RouterOptions) {
    this.#cfg = cfg
    this.#clock = options.clock
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
    this.#placement = buildPlacement(upstreams)
    this.#roundRobin = new RoundRobin(upstreams)
    this.#rrIds = upstreams.map((u) => u.id)
  }

  /** Upstream ids of the current placement table (sorted). */
  get ids(): readonly string[] {
    return this.#placement.ids
  }

  /** Decide where the request with these headers, from this peer, goes. */
  route(headers: IncomingHttpHeaders, peer: string): Route | null {
    const opts = this.#keyOptions
    if (opts === null) return this.#roundRobinRoute()
    const now = this.#clock.now()
    const key = extractAffinityKey(headers, peer, opts, now)
    switch (key.kind) {
      case 'cookie': {
        const s = key.session
        if (key.status === 'ok' && s !== null) {
          const pinned = this.#placement.indexOf(s.upstream)
          const hashed = this.#cfg.on_scale_up === 'rebalance' || pinned < 0 ? this.#placement.pick(hashKey(s.sessionId)) : pinned
          if (hashed < 0) return null
          const id = this.#placement.ids[hashed]!
          if (this.#cfg.balance_factor !== null) this.table.set(s.sessionId, id, s.epoch, now)
          if (hashed !== pinned) {
            // the pinned upstream is gone (or rebalanced away): move the user, bump the epoch
            return new Route(id, 'hash', this.#serialize!(this.#codec!.refresh(s, now, { upstream: id, epoch: s.epoch + 1 })), false, this)
          }
          const refresh = shouldRefresh(s, now, this.#cfg.idle_timeout) ? this.#serialize!(this.#codec!.refresh(s, now)) : null
          return new Route(id, 'cookie', refresh, false, this)
        }
        return this.#newSession(now)
      }
      case 'app_cookie':
        if (key.value !== null) return this.#pinned(key.value, now, false)
        if (this.#cfg.app_cookie.fallback === 'client_ip') {
          const r = this.#pinned(clientIp(peer, headers['x-forwarded-for'], this.#trusted), now, true)
          return r === null ? null : new Route(r.id, 'fallback', null, true, this)
        }
        return this.#roundRobinRoute(true)
      case 'client_ip':
        return this.#pinned(key.value, now, false)
      case 'header':
        return key.value === null ? this.#roundRobinRoute() : this.#pinned(key.value, now, false)
    }
  }

  /** Response side of a decision: issue/refresh the cookie, learn the app cookie, debug header. */
  onResponse(route: Route, headers: Record<string, string | string[] | undefined>): void {
    if (route.setCookie !== null) appendSetCookie(headers, route.setCookie)
    if (route.learn || this.#cfg.key === 'app_cookie') this.#learn(route.id, headers['set-cookie'])
    if (this.#upstreamHeader) headers['x-tether-upstream'] = route.id
  }

  /** Remove up to `budget` expired table entries (called by a background sweeper). */
  sweep(budget: number): number {
    return this.table.sweep(this.#clock.now(), budget)
  }

  #roundRobinRoute(learn = false): Route | null {
    const i = this.#roundRobin.next()
    return i < 0 ? null : new Route(this.#rrIds[i]!, 'round_robin', null, learn, this)
  }

  #newSession(now: number): Route | null {
    const sessionId = Buffer.from(this.#random(16)).toString('hex')
    const index = this.#place(hashKey(sessionId))
    if (index < 0) return null
    const id = this.#placement.ids[index]!
    if (this.#cfg.balance_factor !== null) this.table.set(sessionId, id, 0, now)
    const value = this.#codec!.encode({ sessionId, upstream: id, epoch: 0, issuedAt: now, lastSeen: now })
    return new Route(id, 'new_session', this.#serialize!(value), false, this)
  }

  /** A table-pinned key: the live entry wins (persistent), else the hash; the result is recorded. */
  #pinned(key: string, now: number, learn: boolean): Route | null {
    const entry = this.table.get(key, now)
    if (entry !== null && this.#cfg.on_scale_up === 'persistent' && this.#placement.indexOf(entry.upstream) >= 0) {
      return new Route(entry.upstream, 'table', null, learn, this)
    }
    const index = entry === null ? this.#place(hashKey(key)) : this.#placement.pick(hashKey(key))
    if (index < 0) return null
    const id = this.#placement.ids[index]!
    const epoch = entry === null ? 0 : entry.upstream === id ? entry.epoch : entry.epoch + 1
    this.table.set(key, id, epoch, now)
    return new Route(id, 'hash', null, learn, this)
  }

  /** Place a new key: bounded loads when configured, else the plain hash. */
  #place(hash: number): number {
    const factor = this.#cfg.balance_factor
    if (factor === null) return this.#placement.pick(hash)
    return pickBounded(this.#placement, hash, this.#accept, this.#load, this.table.size, factor)
  }

  /** Bind application cookie values set by upstream `id` to it; a deleted one is forgotten. */
  #learn(id: string, setCookie: string | string[] | undefined): void {
    if (setCookie === undefined) return
    const name = this.#cfg.app_cookie.name
    if (name === null) return
    const now = this.#clock.now()
    for (const line of Array.isArray(setCookie) ? setCookie : [setCookie]) {
      const value = appCookieValue(line, name, now)
      if (value === null) continue
      if (value.deleted) this.table.delete(value.value)
      else this.table.set(value.value, id, 0, now)
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
