// Builds the proxy's transports and the request path of each config: what every answer's head
// gets, the HTTP transport (undici pools), the upgrade transport (WebSocket tunnels), the
// parser-error handler and the in-flight registry. Layer 5 wiring helper of the composition
// root: constructs, starts nothing.
import type { Config, HstsConfig } from '../config/schema.js'
import { ProblemLog } from '../observability/problem-log.js'
import type { UpstreamSet } from '../upstream/upstream-set.js'
import { AnswerHead, type AnswerSharing, type PendingWrites } from './answer-head.js'
import { ClientErrors } from './client-error.js'
import { Forwarder, type TrailersDropped } from './forward.js'
import { headerPolicy } from './headers.js'
import { RequestPath, type RequestPathDeps } from './request-path.js'
import { Upgrades } from './upgrade-transport.js'

/** What the proxy is built from: the request path's parts that outlive a reload (the rest it builds). */
export type ProxyParts = Pick<RequestPathDeps,
  'clock' | 'timers' | 'logger' | 'keys' | 'router' | 'sessions' | 'records' | 'upstreams' | 'state' |
  'shared' | 'inFlight' | 'events' | 'observe' | 'draining'> & {
  readonly suspect: (id: string) => void
  /** With workers: the answers every worker records (see AnswerHeadOptions.shareAnswers). */
  readonly shareAnswers?: AnswerSharing | null
  /** With workers: the writes not yet at every other worker (see AnswerHeadOptions.writes). */
  readonly writes?: PendingWrites | null
}

export interface Proxy {
  readonly http: Forwarder
  readonly upgrades: Upgrades
  readonly clientErrors: ClientErrors
  /** The request path serving `config` (a reload builds a new one; the transports stay). */
  pathFor(config: Config): RequestPath
}

/**
 * The Strict-Transport-Security value of `listen.tls.hsts`, or null.
 * Example: { max_age: 31536000000, include_subdomains: true, preload: false } -> 'max-age=31536000; includeSubDomains'.
 */
export function hstsValue(hsts: HstsConfig | null): string | null {
  if (hsts === null) return null
  return `max-age=${Math.floor(hsts.max_age / 1000)}${hsts.include_subdomains ? '; includeSubDomains' : ''}${hsts.preload ? '; preload' : ''}`
}

/**
 * The warning for an answer delivered without its trailer section (Content-Length in it): an
 * upstream that does it on every answer would write a warn line each, so per upstream the first
 * is warned (its upstream, request id, method and path), then at most one per 30 s with how many
 * answers it stands for (`repeated`, `for_ms`), as Tether's other repeating problems
 * ({@link ProblemLog}). The keys of upstreams no longer in the set are forgotten when it changes.
 */
function trailersDroppedLog(p: ProxyParts): (dropped: TrailersDropped) => void {
  const problems = new ProblemLog(p.logger, p.clock)
  let seen: UpstreamSet | null = null
  return (dropped) => {
    const set = p.upstreams()
    if (set !== seen) {
      seen = set
      problems.retain((id) => set.get(id) !== undefined)
    }
    problems.report(dropped.upstream, 'trailer content-length', { ...dropped }, "the upstream's chunked answer had Content-Length in its trailer section (RFC 9110 section 6.5.1: no framing there): delivered whole, its trailer fields dropped and its connection closed")
  }
}

export function createProxy(config: Config, p: ProxyParts): Proxy {
  const a = config.affinity
  const t = config.timeouts
  const answer = new AnswerHead({
    sessions: p.sessions, records: p.records, appCookie: a.key === 'app_cookie' ? a.app_cookie.name : null, ownCookie: a.key === 'cookie' ? a.cookie.name : null, state: p.state,
    reserved: headerPolicy(config).reserved, upstreamHeader: config.forwarding.upstream_header, clock: p.clock,
    hsts: hstsValue(config.listen.tls?.hsts ?? null), shareAnswers: p.shareAnswers ?? null, writes: p.writes ?? null,
    serving: (id) => p.router.health.ready(id) && p.router.health.drainingSince(id) === null,
  })
  // an oversize checkpoint must still arrive (to be refused), so room for twice the limit
  const http = new Forwarder([], { connect: t.connect, responseHeaders: t.response_headers, bodyIdle: t.body_idle, maxResponseHeaderBytes: 65_536 + 2 * config.state.max_bytes,
    maxConnections: config.limits.max_upstream_connections, queue: t.queue }, answer, p.draining, (upstream, change) => {
    if (change.kind === 'reloaded') p.logger.info({ upstream }, 'upstream TLS files changed: new connections to it use them')
    else p.logger.warn({ upstream, err: change.error.message }, 'upstream TLS files changed but cannot be used: new connections to it keep the previous ones')
  }, trailersDroppedLog(p))
  const upgrades = new Upgrades(p.logger, answer, {
    maxConnections: config.websocket.max_connections, idleTimeout: config.websocket.idle_timeout, connect: t.connect, responseHeaders: t.response_headers, bodyIdle: t.body_idle, timers: p.timers,
  })
  let access = config.log.access // the serving config's (pathFor is called with each reloaded one)
  const clientErrors = new ClientErrors(p.logger, p.events, () => access)
  const pathFor = (cfg: Config): RequestPath => {
    access = cfg.log.access
    return new RequestPath({ ...p, config: cfg, headerPolicy: headerPolicy(cfg), http, upgrades, clientErrors })
  }
  return { http, upgrades, clientErrors, pathFor }
}
