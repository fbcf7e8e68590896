// Composition root: builds every part from a validated Config, wires them together and owns
// their lifecycle (start, reload, graceful stop). Nothing else starts servers or timers, and
// nothing here decides anything: each rule lives in the module named after it.
import type { Config } from './config/schema.js'
import { ConfigError, loadConfigFile } from './config/index.js'
import { diffConfig, type ReloadResult } from './config/reload.js'
import { ConfigWatcher } from './config/watch.js'
import { systemClock, systemTimers, type Clock, type Timers } from './clock.js'
import { createLogger, effectiveLevel, type Logger } from './observability/logger.js'
import { Metrics } from './observability/metrics.js'
import { CookieIssuer } from './affinity/cookie-issuer.js'
import { KeyReader, keyOptions } from './affinity/key.js'
import { parseTrustedProxies } from './affinity/client-ip.js'
import { SessionTable } from './affinity/session-table.js'
import { Router } from './routing/router.js'
import { HealthTable } from './health/health-table.js'
import { ActiveChecker } from './health/active-checker.js'
import { SharedHealth } from './health/shared-health.js'
import { Membership } from './upstream/membership.js'
import { createDiscovery } from './upstream/discovery.js'
import type { UpstreamSet } from './upstream/upstream-set.js'
import { startAdmin } from './admin/admin-server.js'
import { sessionsCounted, upstreamRow } from './admin/upstream-row.js'
import { RedisBindings } from './redis/binding-store.js'
import { RedisPeerChannel } from './redis/peer-channel.js'
import { createState, redisOf } from './state/create-state.js'
import { AnswerHead } from './proxy/answer-head.js'
import { ClientErrors } from './proxy/client-error.js'
import { Forwarder } from './proxy/forward.js'
import { headerPolicy } from './proxy/headers.js'
import { InFlight } from './proxy/in-flight.js'
import { Listener } from './proxy/listener.js'
import { RequestPath } from './proxy/request-path.js'
import { Upgrades } from './proxy/upgrade-transport.js'
import { CLOSE_GOING_AWAY, CLOSE_SERVICE_RESTART } from './proxy/websocket-frames.js'

export type { ReloadResult } from './config/reload.js'

export interface TetherOptions {
  /** Logger to use; default: pino on stdout at config/LOG_LEVEL level. */
  readonly logger?: Logger
  /** Environment for LOG_LEVEL; default process.env. */
  readonly env?: Readonly<Record<string, string | undefined>>
  /** Time source for affinity expiry, health and retries; default the system clock (tests inject a fake one). */
  readonly clock?: Clock
  /** Timers for background work; default the global ones (unref'd). */
  readonly timers?: Timers
  /** The config file: watched for changes (hot reload) and re-read by `reloadFile()`. */
  readonly configPath?: string
}

export interface Tether {
  /** The running config (a reload replaces what it applied). */
  readonly config: Config
  /** http://host:port the proxy listens on (the real port when configured with 0). */
  readonly url: string
  readonly port: number
  /** http://host:port of the admin listener. */
  readonly adminUrl: string
  readonly logger: Logger
  /** Routing (placement table, decisions), for tests and the admin API. */
  readonly router: Router
  /** The session table (pins of table-keyed users). */
  readonly sessions: SessionTable
  /** Upstream health (active checks, ejection, draining). */
  readonly health: HealthTable
  readonly metrics: Metrics
  /** The proxy's listener (its HTTP server is `listener.server`). */
  readonly listener: Listener
  /** Open WebSocket tunnels. */
  readonly upgrades: Upgrades
  /** Apply a new validated config (hot reload); says what was applied and what needs a restart. */
  reload(next: Config): ReloadResult
  /** Re-read `configPath` (SIGHUP, file change): a valid file is applied, an invalid one rejected with located errors. */
  reloadFile(): ReloadResult | ConfigError
  /** Graceful stop: readiness false, stop accepting, in-flight requests finish (Connection: close), the rest is cut after `graceMs`. */
  close(graceMs?: number): Promise<void>
}

/** Start the proxy described by `config`; resolves once it listens. */
export async function startTether(config: Config, options: TetherOptions = {}): Promise<Tether> {
  const env = options.env ?? process.env
  const logger = options.logger ?? createLogger(effectiveLevel(config.log.level, env['LOG_LEVEL']))
  const clock = options.clock ?? systemClock
  const timers = options.timers ?? systemTimers
  const metrics = new Metrics()
  let draining = false
  let current = config

  // upstreams and their health
  const h = config.health
  const health = new HealthTable({ active: h.active, passive: h.passive.enabled ? h.passive : null, slow_start: h.slow_start }, clock)
  const checker = h.active.path === null ? null : new ActiveChecker({ ...h.active, path: h.active.path, jitter: 0.1 }, health, { clock, timers })
  const redis = redisOf(config)
  const peers = redis !== null && h.shared === 'redis' ? new SharedHealth(new RedisPeerChannel(redis), health, logger) : null

  // sessions and routing
  const a = config.affinity
  const shared = redis !== null && a.shared === 'redis' ? new RedisBindings(redis, a.idle_timeout) : null
  const sessions = new SessionTable({ maxEntries: a.max_entries, idleTimeout: a.idle_timeout, absoluteTimeout: a.absolute_timeout, sink: shared?.sink() ?? null })
  const cookies = a.key === 'cookie' ? new CookieIssuer(a, undefined, (m) => logger.warn(m)) : null
  const trusted = parseTrustedProxies(a.client_ip.trusted_proxies)
  const keys = new KeyReader({ options: keyOptionsOf(config, cookies, trusted), fallback: a.app_cookie.fallback, trusted })
  const router = new Router(a, { sessions, cookies, availability: health })
  const { store, state } = createState(config, redis, clock, metrics, logger)

  // transports and the request path
  const policy = headerPolicy(config)
  const answer = new AnswerHead({ sessions, appCookie: a.key === 'app_cookie' ? a.app_cookie.name : null, state, reserved: policy.reserved, upstreamHeader: config.forwarding.upstream_header, clock })
  const t = config.timeouts
  // an oversize checkpoint must still arrive (to be refused), so room for twice the limit
  const http = new Forwarder([], { connect: t.connect, responseHeaders: t.response_headers, bodyIdle: t.body_idle, maxResponseHeaderBytes: 65_536 + 2 * config.state.max_bytes }, answer, () => draining)
  const upgrades = new Upgrades(logger, answer, { maxConnections: config.websocket.max_connections, idleTimeout: config.websocket.idle_timeout, connect: t.connect, responseHeaders: t.response_headers })
  const clientErrors = new ClientErrors(logger)
  const inFlight = new InFlight()
  const pathFor = (cfg: Config): RequestPath => new RequestPath({
    config: cfg, clock, logger, keys, router, sessions, upstreams: () => membership.current(), headerPolicy: headerPolicy(cfg), http, upgrades,
    clientErrors, state, shared, observe: (id, signal) => health.reportPassive(id, signal), inFlight, events: metrics, draining: () => draining,
  })
  let path = pathFor(config)
  const listener = new Listener(config, { current: () => path, clientErrors, logger })

  health.onTransition((e) => {
    metrics.onHealthTransition(e)
    logger.info({ upstream: e.id, from: e.from, to: e.to, reason: e.reason, detail: e.detail }, 'upstream health changed')
    if (e.to === 'unhealthy' || e.to === 'ejected' || e.to === 'disabled' || e.to === null) {
      // its WebSockets close (1012) so clients reconnect elsewhere; requests waiting on its answer move now
      upgrades.closeUpstream(e.id, CLOSE_SERVICE_RESTART)
      inFlight.stopWaiting(e.id, 'TETHER_UPSTREAM_UNAVAILABLE')
    }
  })
  metrics.setWebSocketCount(() => upgrades.size)
  metrics.setAffinityStats(() => sessions.table)
  const apply = (set: UpstreamSet): void => {
    router.setUpstreams(set, clock.now()) // first: it notes which leaving upstreams were draining
    health.setUpstreams(set.ids)
    http.setUpstreams(set.list)
    checker?.setUpstreams(set.list)
    logger.info({ upstreams: set.ids }, 'upstreams updated')
  }
  const membership = new Membership(config.upstreams, a.drain_timeout, { onChange: apply, drain: (id) => health.drain(id), undrain: (id) => health.undrain(id) }, timers)
  apply(membership.current())
  const discovery = createDiscovery(config.discovery, { membership, logger, metrics, env, timers })

  const notReady = (): string[] => [
    ...(draining ? ['shutting down'] : []),
    ...(membership.current().ids.some((id) => health.ready(id)) ? [] : ['no healthy upstream']),
  ]
  try {
    await listener.listen()
  } catch (err) {
    await http.destroy()
    throw err
  }
  const counted = sessionsCounted(a)
  const admin = await startAdmin(config.admin.listen.host, config.admin.listen.port, {
    token: config.admin.token,
    logger,
    notReady,
    upstreams: () => health.snapshot().map((e) => upstreamRow(e, {
      url: membership.current().get(e.id)?.url ?? null,
      weight: membership.current().get(e.id)?.weight ?? null,
      in_flight: inFlight.count(e.id),
      websockets: upgrades.countByUpstream(e.id),
      sessions: counted ? sessions.countByUpstream(e.id) : null,
    })),
    degraded: () => [
      ...(store !== null && store.status === 'degraded' ? [`state store (${config.state.store}) unreachable: checkpoints paused, routing unaffected`] : []),
      ...discovery.degraded(),
    ],
    metrics: () => metrics.render(),
    metricsContentType: metrics.contentType,
    drain: (id) => health.drain(id) && (peers?.tell('drain', id), true),
    undrain: (id) => health.undrain(id) && (peers?.tell('undrain', id), true),
  }).catch(async (err: NodeJS.ErrnoException) => {
    await listener.close(0, () => undefined)
    await http.destroy()
    throw Object.assign(new Error(`cannot listen on ${config.admin.listen.host}:${config.admin.listen.port} (admin): ${err.code ?? err.message}`), { code: err.code })
  })
  checker?.start()
  await discovery.start()
  await redis?.start() // resolves even when Redis is down (degraded, reconnecting)
  await store?.start()
  peers?.start()
  // background upkeep: expired affinity entries (also dropped lazily on lookup) and ended ejections
  let upkeep = timers.setTimeout(function sweep() {
    sessions.sweep(clock.now(), 10_000)
    health.tick()
    upkeep = timers.setTimeout(sweep, 1_000)
  }, 1_000)
  logger.info({ url: listener.url, admin: admin.url, upstreams: membership.current().ids }, 'tether listening')

  const reload = (next: Config): ReloadResult => {
    const { applied, needsRestart, effective } = diffConfig(current, next)
    if (applied.includes('upstreams')) membership.setStatic(next.upstreams)
    current = effective
    path = pathFor(effective)
    metrics.configReload(true)
    logger.info({ applied }, 'config reloaded')
    if (needsRestart.length > 0) logger.warn({ sections: needsRestart }, 'config reloaded: these changes need a restart and were not applied')
    return { applied, needsRestart }
  }
  const reloadFile = (): ReloadResult | ConfigError => {
    const file = options.configPath
    if (file === undefined) return new ConfigError(['no config file to reload'])
    try {
      return reload(loadConfigFile(file, env))
    } catch (err) {
      const e = err instanceof ConfigError ? err : new ConfigError([`${file}: ${(err as Error).message}`])
      metrics.configReload(false)
      logger.error({ issues: e.issues }, 'config reload rejected; the running config stays')
      return e
    }
  }
  const watcher = options.configPath === undefined ? null : new ConfigWatcher(options.configPath, () => void reloadFile(), timers)
  watcher?.start()

  let closing: Promise<void> | null = null
  const close = (graceMs = config.shutdown.grace_period): Promise<void> => {
    closing ??= (async () => {
      draining = true
      logger.info({ grace_ms: graceMs }, 'tether shutting down')
      timers.clearTimeout(upkeep)
      watcher?.stop()
      membership.stop()
      await Promise.all([checker?.stop(), discovery.stop()])
      await listener.close(graceMs, () => upgrades.closeAll(CLOSE_GOING_AWAY)) // WebSockets get the whole grace period, then 1001
      await Promise.all([http.destroy(), admin.close(), store?.stop(), redis?.stop()])
      logger.info('tether stopped')
    })()
    return closing
  }
  return {
    get config() { return current },
    url: listener.url, port: listener.port, adminUrl: admin.url, logger, router, sessions, health, metrics, listener, upgrades, reload, reloadFile, close }
}

/** How keys are read for `affinity.key` (null: round robin). */
function keyOptionsOf(config: Config, cookies: CookieIssuer | null, trusted: ReturnType<typeof parseTrustedProxies>): ReturnType<typeof keyOptions> | null {
  const a = config.affinity
  switch (a.key) {
    case 'none': return null
    case 'cookie': return keyOptions({ kind: 'cookie', cookieName: a.cookie.name, codec: cookies!.codec })
    case 'app_cookie': return keyOptions({ kind: 'app_cookie', cookieName: a.app_cookie.name! })
    case 'client_ip': return keyOptions({ kind: 'client_ip', trusted })
    case 'header': return keyOptions({ kind: 'header', headerName: a.header.name! })
  }
}
