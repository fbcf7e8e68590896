// Composition root: builds every part from a validated Config, wires them together and
// owns their lifecycle (start, graceful stop). Nothing else starts servers or timers.
import http from 'node:http'
import { randomUUID } from 'node:crypto'
import type { AddressInfo, Socket } from 'node:net'
import type { Config, UpstreamConfig } from './config/schema.js'
import { ConfigError, loadConfigFile } from './config/index.js'
import { ConfigWatcher } from './config/watch.js'
import { ERRORS, type ErrorCode } from './errors.js'
import { createLogger, effectiveLevel, type Logger } from './observability/logger.js'
import { systemClock, type Clock } from './clock.js'
import { Router } from './routing/router.js'
import { HealthTable } from './health/health-table.js'
import { ActiveChecker } from './health/active-checker.js'
import { Membership } from './upstream/membership.js'
import { DnsDiscovery } from './upstream/dns-discovery.js'
import { startAdmin, type AdminServer } from './admin/admin-server.js'
import { Metrics } from './observability/metrics.js'
import { createUpgradeHandler, CLOSE_GOING_AWAY, CLOSE_SERVICE_RESTART } from './proxy/upgrade.js'
import type { MoveReason } from './routing/router.js'
import type { CheckpointStore } from './state/checkpoint-store.js'
import { MemoryCheckpointStore } from './state/memory-store.js'
import { RedisCheckpointStore } from './state/redis-store.js'
import { StateProtocol } from './state/protocol.js'
import { Forwarder } from './proxy/forward.js'
import { createRequestHandler } from './proxy/request-path.js'
import { onePerConnection } from './proxy/pipelining.js'

export interface TetherOptions {
  /** Logger to use; default: pino on stdout at config/LOG_LEVEL level. */
  readonly logger?: Logger
  /** Environment for LOG_LEVEL; default process.env. */
  readonly env?: Readonly<Record<string, string | undefined>>
  /** Time source for affinity expiry and health; default the system clock (tests inject a fake one). */
  readonly clock?: Clock
  /** The config file: watched for changes (hot reload) and re-read by `reloadFile()`. */
  readonly configPath?: string
}

export interface Tether {
  /** http://host:port the proxy listens on (the real port when configured with 0). */
  readonly url: string
  readonly port: number
  /** http://host:port of the admin listener. */
  readonly adminUrl: string
  readonly logger: Logger
  /** The routing decision maker (affinity table, placement), for tests and the admin API. */
  readonly router: Router
  /** Upstream health (active checks, ejection, draining). */
  readonly health: HealthTable
  /** Prometheus metrics (also served on the admin port at /metrics). */
  readonly metrics: Metrics
  /** The proxy's HTTP server (for the upgrade path and tests). */
  readonly server: http.Server
  /**
   * Replace the static upstream set at runtime (reload): pools, placement and health follow;
   * users keep their upstream by id where it still exists (see affinity.on_scale_up).
   */
  setUpstreams(upstreams: Config['upstreams']): void
  /** Apply a new validated config (hot reload); says what was applied and what needs a restart. */
  reload(next: Config): ReloadResult
  /**
   * Re-read `configPath` (SIGHUP, file change): a valid file is applied; an invalid one is
   * rejected with the same located errors as `tether check`, and the running config stays.
   */
  reloadFile(): ReloadResult | ConfigError
  /**
   * Graceful stop: readiness turns false, stop accepting, let in-flight requests finish
   * (their answers carry `Connection: close`), then force-close what is left after `graceMs`
   * (default `shutdown.grace_period`).
   */
  close(graceMs?: number): Promise<void>
}

/** What a reload applied, and which sections changed but need a restart. */
export interface ReloadResult {
  readonly applied: string[]
  readonly needsRestart: string[]
}

/** Start the proxy described by `config`; resolves once it listens. */
export async function startTether(config: Config, options: TetherOptions = {}): Promise<Tether> {
  const env = options.env ?? process.env
  const logger = options.logger ?? createLogger(effectiveLevel(config.log.level, env['LOG_LEVEL']))
  const clock = options.clock ?? systemClock
  const t = config.timeouts
  let draining = false

  const h = config.health
  const health = new HealthTable({
    active: { healthy_threshold: h.active.healthy_threshold, unhealthy_threshold: h.active.unhealthy_threshold },
    passive: h.passive.enabled ? h.passive : null,
    slow_start: h.slow_start,
  }, clock)
  const metrics = new Metrics()
  health.onTransition((e) => {
    metrics.onHealthTransition(e)
    logger.info({ upstream: e.id, from: e.from, to: e.to, reason: e.reason, detail: e.detail }, 'upstream health changed')
  })
  const forwarder = new Forwarder([], {
    connect: t.connect,
    responseHeaders: t.response_headers,
    bodyIdle: t.body_idle,
    // an oversize checkpoint must still arrive (to be refused), so room for twice the limit
    maxResponseHeaderBytes: 65_536 + 2 * config.state.max_bytes,
  }, () => draining)
  const checker = h.active.path === null ? null : new ActiveChecker(
    { path: h.active.path, interval: h.active.interval, timeout: h.active.timeout, jitter: 0.1, expected_status: h.active.expected_status },
    health,
    { clock },
  )
  const router = new Router(config.affinity, [], {
    clock,
    availability: {
      ready: (id) => health.ready(id),
      acceptsNew: (id) => health.acceptsNew(id),
      drainingSince: (id) => health.drainingSince(id),
      slowStartWeight: (id) => health.slowStartWeight(id),
    },
    upstreamHeader: config.forwarding.upstream_header,
    warn: (message) => logger.warn(message),
    bindings: {
      bound: (key, upstream, epoch) => void sharedStore?.setBinding(key, upstream, epoch, config.affinity.idle_timeout),
      unbound: (key) => void sharedStore?.deleteBinding(key),
    },
  })
  let sharedStore: RedisCheckpointStore | null = null
  const upgrades = createUpgradeHandler({
    router,
    logger,
    forwarding: config.forwarding,
    trustedProxies: config.affinity.client_ip.trusted_proxies,
    draining: () => draining,
    observe: (id, signal) => health.reportPassive(id, signal),
    placeKey: (key, tried) => router.placeKey(key, tried),
    options: {
      maxConnections: config.websocket.max_connections,
      idleTimeout: config.websocket.idle_timeout,
      connect: t.connect,
      responseHeaders: t.response_headers,
      retries: config.retries.attempts,
    },
  })
  // an upstream that dies or is taken out: close its WebSockets (1012) so clients reconnect elsewhere
  health.onTransition((e) => {
    if (e.to === 'unhealthy' || e.to === 'ejected' || e.to === 'disabled' || e.to === null) upgrades.closeUpstream(e.id, CLOSE_SERVICE_RESTART)
  })
  metrics.setWebSocketCount(() => upgrades.size)
  let hosts: ReadonlyMap<string, string> = new Map()
  const apply = (upstreams: readonly UpstreamConfig[]): void => {
    router.setUpstreams(upstreams) // first: it notes which leaving upstreams were draining
    upgrades.setUpstreams(upstreams)
    health.setUpstreams(upstreams.map((u) => u.id))
    forwarder.setUpstreams(upstreams)
    checker?.setUpstreams(upstreams)
    hosts = new Map(upstreams.map((u) => [u.id, new URL(u.url).host]))
    logger.info({ upstreams: upstreams.map((u) => u.id) }, 'upstreams updated')
  }
  let membership = new Membership(config.upstreams, config.affinity.drain_timeout, {
    onChange: apply,
    drain: (id) => health.drain(id),
    undrain: (id) => health.undrain(id),
  })
  apply(membership.current())
  const dns = config.discovery.dns
  const discovery = dns === null ? null : new DnsDiscovery(
    { name: dns.name, port: dns.port, interval: dns.interval, family: dns.family, servers: dns.servers },
    {
      onChange: (found) => membership.setDiscovered(found),
      onError: (err, failures) => logger.warn({ err: err.message, code: err.code, failures }, 'DNS discovery failed; keeping the last known upstreams'),
    },
  )

  const { store, state } = stateOf(config, clock, metrics, logger)
  if (config.affinity.shared === 'redis' && store instanceof RedisCheckpointStore) sharedStore = store
  const peers = config.health.shared === 'redis' && store instanceof RedisCheckpointStore ? shareHealth(store, health, logger) : null
  const handlerFor = (cfg: Config): ReturnType<typeof createRequestHandler> => createRequestHandler({
    config: cfg,
    forwarder,
    router,
    hosts: () => hosts,
    logger,
    draining: () => draining,
    observe: (id, signal) => health.reportPassive(id, signal),
    state,
    shared: sharedStore === null ? null : { lookup: (key) => sharedStore!.getBinding(key) },
    events: {
      retry: (id) => metrics.retry(id),
      failover: (from, reason) => metrics.failover(from, reason as MoveReason),
      request: (id, method, status, seconds) => metrics.observeRequest(id, method, status, seconds),
      attempt: (id, delta) => {
        inFlight.set(id, (inFlight.get(id) ?? 0) + delta)
        if (delta > 0) metrics.requestStarted(id)
        else metrics.requestEnded(id)
      },
    },
  })
  /** Requests being forwarded, by upstream (for GET /upstreams). */
  const inFlight = new Map<string, number>()
  // the live request handler: a reload swaps it; requests in flight keep the one they started with
  let current = config
  let handler = onePerConnection(handlerFor(config))
  metrics.setAffinityStats(() => router.table)

  const server = http.createServer(
    {
      maxHeaderSize: config.limits.max_header_bytes,
      headersTimeout: t.client_headers,
      requestTimeout: 0, // long uploads and streams are bounded by idle timeouts instead
      keepAliveTimeout: t.client_keep_alive,
      noDelay: true,
    },
    (req, res) => handler(req, res),
  )
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => answerClientError(err, socket, logger))
  // Expect: 100-continue: refuse a declared oversized body before the client sends it
  server.on('checkContinue', (req: http.IncomingMessage, res: http.ServerResponse) => {
    const max = config.limits.max_body_bytes
    if (max === null || !(Number(req.headers['content-length']) > max)) res.writeContinue()
    handler(req, res)
  })
  upgrades.attach(server)
  // a client that stalls mid-request or stops reading an answer for body_idle is cut off
  if (t.body_idle > 0) server.setTimeout(t.body_idle)

  let admin: AdminServer
  try {
    await listen(server, config.listen.host, config.listen.port).catch((err: NodeJS.ErrnoException) => {
      throw Object.assign(new Error(`cannot listen on ${config.listen.host}:${config.listen.port}: ${err.code ?? err.message}`), { code: err.code })
    })
    admin = await startAdmin(config.admin.listen.host, config.admin.listen.port, {
      token: config.admin.token,
      notReady: () => notReady(),
      upstreams: () => {
        const byId = new Map(membership.current().map((u) => [u.id, u]))
        return health.snapshot().map((e) => ({
          ...e,
          url: byId.get(e.id)?.url ?? null,
          weight: byId.get(e.id)?.weight ?? null,
          in_flight: inFlight.get(e.id) ?? 0,
          websockets: upgrades.countByUpstream(e.id),
          sessions: router.table.countByUpstream(e.id),
        }))
      },
      degraded: () => (store !== null && store.status === 'degraded' ? [`state store (${config.state.store}) unreachable: checkpoints paused, routing unaffected`] : []),
      metrics: () => metrics.render(),
      metricsContentType: metrics.contentType,
      drain: (id) => health.drain(id) && (peers?.tell('drain', id), true),
      undrain: (id) => health.undrain(id) && (peers?.tell('undrain', id), true),
    }).catch((err: NodeJS.ErrnoException) => {
      throw Object.assign(new Error(`cannot listen on ${config.admin.listen.host}:${config.admin.listen.port} (admin): ${err.code ?? err.message}`), { code: err.code })
    })
  } catch (err) {
    server.close()
    await forwarder.destroy()
    throw err
  }
  const notReady = (): string[] => {
    const reasons: string[] = []
    if (draining) reasons.push('shutting down')
    if (!membership.current().some((u) => health.ready(u.id))) reasons.push('no healthy upstream')
    return reasons
  }
  checker?.start()
  if (discovery !== null) await discovery.start()
  await store?.start() // resolves even when Redis is down (degraded, reconnecting)
  peers?.start()
  // background upkeep: expired affinity entries (also dropped lazily on lookup) and ended ejections
  const upkeep = setInterval(() => {
    router.sweep(10_000)
    health.tick()
  }, 1_000)
  upkeep.unref()
  server.on('error', (err) => logger.error({ err }, 'proxy listener error'))
  const port = (server.address() as AddressInfo).port
  const host = config.listen.host.includes(':') ? `[${config.listen.host}]` : config.listen.host
  const url = `http://${host}:${port}`
  logger.info({ url, admin: admin.url, upstreams: membership.current().map((u) => u.id) }, 'tether listening')

  let closing: Promise<void> | null = null
  const close = (graceMs = config.shutdown.grace_period): Promise<void> => {
    closing ??= (async () => {
      draining = true
      logger.info({ grace_ms: graceMs }, 'tether shutting down')
      clearInterval(upkeep)
      watcher?.stop()
      membership.stop()
      await Promise.all([checker?.stop(), discovery?.stop()])
      const closed = new Promise<void>((resolve) => server.close(() => resolve()))
      // connections that finish their request while draining become idle: close them too
      const sweep = setInterval(() => server.closeIdleConnections(), 50)
      server.closeIdleConnections()
      let timer: NodeJS.Timeout | undefined
      const deadline = new Promise<void>((resolve) => { timer = setTimeout(resolve, graceMs) })
      await Promise.race([closed, deadline])
      upgrades.closeAll(CLOSE_GOING_AWAY) // WebSockets get the whole grace period, then 1001
      clearInterval(sweep)
      clearTimeout(timer)
      server.closeAllConnections()
      await closed
      await Promise.all([forwarder.destroy(), admin.close(), store?.stop()])
      logger.info('tether stopped')
    })()
    return closing
  }

  /**
   * Apply a new, validated config without touching the listener or requests in flight. Live:
   * upstreams (minimal disruption, affinity kept), forwarding (but upstream_header),
   * limits.max_body_bytes, retries, log.access. Any other change is reported as needing a
   * restart and the running value is kept.
   */
  const reload = (next: Config): ReloadResult => {
    const live: string[] = []
    const restart: string[] = []
    const differs = (a: unknown, b: unknown): boolean => JSON.stringify(a) !== JSON.stringify(b)
    for (const key of Object.keys(next) as (keyof Config)[]) {
      if (!differs(current[key], next[key])) continue
      if (key === 'upstreams' || key === 'retries') live.push(key)
      else if (key === 'forwarding' && !differs(current.forwarding.upstream_header, next.forwarding.upstream_header)) live.push(key)
      else if (key === 'limits' && !differs({ ...current.limits, max_body_bytes: 0 }, { ...next.limits, max_body_bytes: 0 })) live.push(key)
      else if (key === 'log' && current.log.level === next.log.level) live.push(key)
      else restart.push(key)
    }
    const effective: Config = {
      ...current,
      upstreams: next.upstreams,
      retries: next.retries,
      forwarding: live.includes('forwarding') ? next.forwarding : current.forwarding,
      limits: live.includes('limits') ? next.limits : current.limits,
      log: live.includes('log') ? next.log : current.log,
    }
    if (live.includes('upstreams')) setUpstreams(next.upstreams)
    current = effective
    handler = onePerConnection(handlerFor(effective))
    metrics.configReload(true)
    logger.info({ applied: live }, 'config reloaded')
    if (restart.length > 0) logger.warn({ sections: restart }, 'config reloaded: these changes need a restart and were not applied')
    return { applied: live, needsRestart: restart }
  }

  const reloadFile = (): ReloadResult | ConfigError => {
    const path = options.configPath
    if (path === undefined) return new ConfigError(['no config file to reload'])
    try {
      return reload(loadConfigFile(path, env))
    } catch (err) {
      const e = err instanceof ConfigError ? err : new ConfigError([`${path}: ${(err as Error).message}`])
      metrics.configReload(false)
      logger.error({ issues: e.issues }, 'config reload rejected; the running config stays')
      return e
    }
  }
  const watcher = options.configPath === undefined ? null : new ConfigWatcher(options.configPath, () => void reloadFile())
  watcher?.start()

  const setUpstreams = (upstreams: Config['upstreams']): void => {
    const discovered = membership.current().filter((u) => !current.upstreams.some((s) => s.id === u.id))
    membership.stop()
    membership = new Membership(upstreams, config.affinity.drain_timeout, {
      onChange: apply,
      drain: (id) => health.drain(id),
      undrain: (id) => health.undrain(id),
    })
    if (discovered.length > 0) membership.setDiscovered(discovered)
    else apply(membership.current())
  }

  return { url, port, adminUrl: admin.url, logger, router, health, metrics, server, setUpstreams, reload, reloadFile, close }
}

/**
 * Health shared between Tether replicas through Redis pub/sub (`health.shared: redis`): an
 * upstream this replica finds down (unhealthy or ejected) is ejected by the others at once,
 * and a drain or undrain made through one replica's admin API applies to all. Events a
 * replica applies because a peer sent them are not sent again.
 */
function shareHealth(store: RedisCheckpointStore, health: HealthTable, logger: Logger): { start(): void; tell(kind: 'drain' | 'undrain', id: string): void } {
  const self = randomUUID()
  let applyingPeer = false
  const tell = (kind: 'down' | 'drain' | 'undrain', id: string): void => {
    void store.publish(JSON.stringify({ from: self, kind, id }))
  }
  health.onTransition((e) => {
    if (!applyingPeer && (e.to === 'unhealthy' || e.to === 'ejected')) tell('down', e.id)
  })
  const receive = (message: string): void => {
    let m: { from?: unknown; kind?: unknown; id?: unknown }
    try {
      m = JSON.parse(message) as typeof m
    } catch {
      return
    }
    if (m.from === self || typeof m.id !== 'string') return
    applyingPeer = true
    try {
      if (m.kind === 'down') health.reportPassive(m.id, 'connect_refused')
      else if (m.kind === 'drain') health.drain(m.id)
      else if (m.kind === 'undrain') health.undrain(m.id)
      else return
      logger.info({ upstream: m.id, event: m.kind }, 'health event from another Tether replica')
    } finally {
      applyingPeer = false
    }
  }
  return { start: () => store.subscribe(receive), tell }
}

/** The checkpoint store and state protocol of `state.store` (none: both null). */
function stateOf(config: Config, clock: Clock, metrics: Metrics, logger: Logger): { store: CheckpointStore | null; state: StateProtocol | null } {
  const st = config.state
  if (st.store === 'none') return { store: null, state: null }
  const address = (hp: string): { host: string; port: number } => {
    const i = hp.lastIndexOf(':')
    return { host: hp.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(hp.slice(i + 1)) }
  }
  const r = st.redis
  const store: CheckpointStore = st.store === 'memory'
    ? new MemoryCheckpointStore({ maxEntries: config.affinity.max_entries, maxBytes: st.max_bytes, maxTotalBytes: st.memory.max_bytes, clock })
    : new RedisCheckpointStore({
        ...(r.url !== null ? { url: r.url } : {}),
        ...(r.password !== null ? { password: r.password } : {}),
        ...(r.sentinels.length > 0 ? { sentinels: r.sentinels.map(address), name: r.name ?? undefined } : {}),
        ...(r.nodes.length > 0 ? { nodes: r.nodes.map(address) } : {}),
        keyPrefix: r.key_prefix,
        timeout: st.timeout,
        maxBytes: st.max_bytes,
      })
  metrics.redisUp(st.store === 'redis' && store.status === 'ready')
  store.onStatus((status, detail) => {
    if (st.store === 'redis') metrics.redisUp(status === 'ready')
    if (detail === 'stopped') return // our own shutdown
    if (status === 'ready') logger.info({ store: st.store, detail }, 'state store ready')
    else logger.warn({ store: st.store, detail }, 'state store degraded: checkpoints paused, routing unaffected')
  })
  const state = new StateProtocol(store, { header: st.header, maxBytes: st.max_bytes, timeout: st.timeout, ttl: config.affinity.idle_timeout }, clock, {
    checkpoint: (result, _key, bytes) => {
      metrics.checkpoint(result)
      if (result === 'too_large') logger.warn({ bytes, max_bytes: st.max_bytes }, 'checkpoint refused: larger than state.max_bytes')
    },
    rehydration: (result) => metrics.rehydration(result),
    operation: (op, seconds) => { if (st.store === 'redis') metrics.redisOp(op, seconds) },
  })
  return { store, state }
}

function listen(server: http.Server, host: string, port: number): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, host, () => {
      server.off('error', reject)
      resolve()
    })
  })
}


const REASONS: Partial<Record<ErrorCode, string>> = {
  TETHER_BAD_REQUEST: 'Bad Request',
  TETHER_HEADERS_TOO_LARGE: 'Request Header Fields Too Large',
  TETHER_CLIENT_TIMEOUT: 'Request Timeout',
}

/** Malformed request heads are answered here (Node's parser rejected them), then closed. */
function answerClientError(err: NodeJS.ErrnoException, socket: Socket, logger: Logger): void {
  // an answer to an earlier pipelined request is still pending: a 400 now would be read as it
  const pending = (socket as Socket & { _httpMessage?: unknown })._httpMessage
  if (err.code === 'ECONNRESET' || !socket.writable || pending) {
    socket.destroy()
    return
  }
  const code: ErrorCode =
    err.code === 'HPE_HEADER_OVERFLOW' ? 'TETHER_HEADERS_TOO_LARGE'
    : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' || err.code === 'HPE_HEADERS_TIMEOUT' ? 'TETHER_CLIENT_TIMEOUT'
    : 'TETHER_BAD_REQUEST'
  logger.debug({ code: err.code }, 'rejected malformed request')
  const { status, message } = ERRORS[code]
  const body = `${message}\n`
  socket.end(
    `HTTP/1.1 ${status} ${REASONS[code]}\r\nContent-Type: text/plain; charset=utf-8\r\n` +
    `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
  )
}
