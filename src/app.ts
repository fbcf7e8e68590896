// Composition root: builds every part from a validated Config (through the create-* helpers of
// each folder), wires them together and owns their lifecycle: start, reload, graceful stop.
// Nothing else starts servers or timers, and nothing here decides anything.
import type { Config } from './config/schema.js'
import { CONFIG_WARNING, ConfigError, configWarnings, parseConfig, readConfigText } from './config/index.js'
import { configFiles } from './config/config-files.js'
import { diffConfig, type ReloadResult } from './config/reload.js'
import { ConfigWatcher } from './config/watch.js'
import { systemClock, systemTimers } from './clock.js'
import { createLogger, effectiveLevel, listedIds } from './observability/logger.js'
import { Metrics } from './observability/metrics.js'
import { ProblemLog } from './observability/problem-log.js'
import { teeEvents } from './observability/events.js'
import { RecentTraffic } from './observability/recent-traffic.js'
import { createRouting } from './routing/create-routing.js'
import { createHealth } from './health/create-health.js'
import { Membership } from './upstream/membership.js'
import { isReplacement, type DiscoveredUpstream } from './upstream/upstream-set.js'
import { createDiscovery } from './upstream/discovery.js'
import { createAdmin } from './admin/create-admin.js'
import type { AdminServer } from './admin/admin-server.js'
import { warnOpenAdmin } from './admin/bearer-token.js'
import { createState, redisOf, stateDegraded } from './state/create-state.js'
import { createProxy } from './proxy/create-proxy.js'
import { InFlight } from './proxy/in-flight.js'
import { Listener } from './proxy/listener.js'
import { ListenError } from './listen.js'
import { RedirectListener } from './proxy/redirect-listener.js'
import { ServerCertificates } from './tls/server-certificates.js'
import { unverifiedUpstreams } from './tls/upstream-tls.js'
import type { Tether, TetherOptions } from './tether.js'
import { CLOSE_GOING_AWAY, CLOSE_SERVICE_RESTART } from './proxy/websocket-frames.js'

export type { ReloadResult } from './config/reload.js'
export type { Tether, TetherOptions } from './tether.js'

/** Start the proxy described by `config`; resolves once it listens. */
export async function startTether(config: Config, options: TetherOptions = {}): Promise<Tether> {
  const env = options.env ?? process.env
  const logger = options.logger ?? createLogger(effectiveLevel(config.log.level, env['LOG_LEVEL']))
  const clock = options.clock ?? systemClock
  const timers = options.timers ?? systemTimers
  const metrics = new Metrics({ clock })
  const traffic = new RecentTraffic(() => clock.now())
  let draining = false
  let closing: Promise<void> | null = null
  let current = config

  // the Redis modules (ioredis) are loaded only when the config uses Redis: ~11 MB of RSS less a process
  const redis = await redisOf(config, timers)
  const inFlight = new InFlight(undefined, config.affinity.spill !== null) // the averages feed spill only
  // workers share through Redis when it is configured (as replicas do), else through their primary
  const link = options.worker ?? null
  const channel = redis !== null && config.health.shared === 'redis' ? new (await import('./redis/peer-channel.js')).RedisPeerChannel(redis) : link?.channel ?? null
  // a request waiting too long (or a client giving up) gets its upstream probed now, by the
  // worker running the checks
  const suspect = (id: string): void => (link === null || link.lead ? health.checker?.probeSoon(id) : link.suspect(id))
  const health = createHealth(config, clock, timers, logger, (id) => inFlight.longestWait(id), channel, suspect, link === null ? null : (...r) => link.probed(...r),
    (id) => membership.current().get(id), // a peer's `down` names the url it found down and the pod's other addresses
    // the workers apply their lead's probe results: its active verdicts are news to none of them
    // (on the workers' own channel only they hear: one group, also with an older primary)
    link === null ? null : channel === link.channel ? link.group ?? 'workers' : link.group,
    // another replica's active verdicts reach the workers in their lead's order, with its probe results
    link === null || channel === link.channel || link.group === null ? null : { channel: link.channel, lead: () => link.lead, markers: link.markers, marked: (node, marker) => link.markerWritten(node, marker) })
  const redisBindings = redis !== null && config.affinity.shared === 'redis' ? new (await import('./redis/binding-store.js')).RedisBindings(redis, config.affinity.idle_timeout, {
    now: () => clock.now(),
    // a binding's key ends at its absolute timeout in Redis too, however often it is renewed
    absoluteTimeoutMs: config.affinity.absolute_timeout,
    // an ACL grant that allows the bindings but not their placement times: shared without them
    onPlacementTimes: (err, forMs) => {
      const key = `${redis.keyPrefix}ap:{…}`
      if (err === null) logger.info({ key, for_ms: forMs }, 'redis accepts the placement-time keys again: bindings are shared with their placement times')
      else logger.warn({ key, err, effect: "each replica counts a binding's placement from when it adopted it: after two replicas placed one key at once, the settled upstream's checkpoints can be refused as superseded until one is stored through a replica that adopted it", hint: 'grant the key pattern named in err; placement times are stored again within a minute of it' }, "redis refused the placement-time keys (the ACL user's key patterns leave them out): bindings are shared without their placement times")
    },
  }) : null
  const shared = redisBindings ?? link?.bindings ?? null
  // a binding Redis kept another one over: the key is reconciled at its user's next request
  const kept = (key: string): void => sessions.resync(key)
  const { sessions, records, keys, router } = createRouting(config, health.table, (redisBindings === null ? shared?.sink() : redisBindings.sink(kept)) ?? null, inFlight, (m) => logger.warn(m))
  // a Redis that lost its keys gets this replica's bindings, admin drains and recorded ejections
  // back; with workers each writes back its own bindings (with Redis each holds its own) and the
  // ejections it recorded (found and told by it), the lead alone the drains (every worker holds
  // every drain; the admin API's changes are made on the lead, so its view of them is never
  // behind a sibling's) and its siblings' ejections, as their finder recorded them (it may have
  // exited since: crashed and restarted, or replaced in a rolling restart). `link.lead` is read
  // at the loss: a worker that handled it as a sibling and leads before its lead said it wrote
  // its part records the lead's part then (the lead before it may have gone before it noticed,
  // frozen until the primary's watchdog killed it, say: SharedHealth.becameLead)
  const recordsDrains = config.health.shared === 'redis'
  // with Tether's own cookie the table only counts sessions (bounded loads), shared with nobody
  const writesBack = config.affinity.key === 'cookie' || config.affinity.key === 'none' ? null : redisBindings
  const watch = redis === null || (redisBindings === null && !recordsDrains) ? null : await import('./redis/keyspace-watch.js')
  const keyspace = redis === null || watch === null ? null : new watch.KeyspaceWatch({
    redis, bindings: writesBack, held: () => { const slots = sessions.table.slotsByRecency(clock.now()); return { length: slots.length, at: (i) => sessions.table.bindingAt(slots[i]!, clock.now()) } }, idleTimeout: config.affinity.idle_timeout, now: () => clock.now(), timers,
    // a worker's first check compares with its group's last marker (a worker started after a
    // loss its lead had not noticed, the lead replaced before it did: else nobody wrote its part)
    known: (node) => (recordsDrains ? health.peers?.leadPartMarker(node) : undefined),
    onBaseline: (node, marker) => { if (recordsDrains) health.peers?.baseline(node, marker, link === null || link.lead) },
    onLost: (node, marker) => {
      metrics.redisKeyspaceLost(node)
      const again = recordsDrains ? health.peers?.recordAgain(link === null || link.lead, { node, marker }) : undefined
      logger.warn({ node, bindings: writesBack === null ? 0 : sessions.size, drains: again?.drains ?? 0, ejections: again?.ejections ?? 0 }, 'redis keyspace lost')
    },
    onWritten: (n) => metrics.affinityWrittenBack(n),
    onDone: (r) => logger.info({ node: r.node, written: r.written, kept: r.kept, ms: r.ms }, 'bindings written back to redis'),
    // a check that threw: one warn a spell (then at most one per 30 s), an info once one completes
    onCheck: watch.logChecks(new ProblemLog(logger, clock)),
  })
  // with workers, an admin's order is held by every worker: one that does it tells the others
  if (link !== null) records.onOrderDone((key, at) => link.orderDone(key, at))
  const { store, state, stop: stopState } = await createState(config, redis, clock, timers, metrics, logger, link?.store ?? null)
  const proxy = createProxy(config, {
    clock, timers, logger, keys, router, sessions, records, upstreams: () => membership.current(), state, shared, inFlight, events: teeEvents(metrics, traffic),
    observe: (id, signal) => health.table.reportPassive(id, signal), suspect, draining: () => draining,
    // with workers, a drain's min_idle counts a user's answers from every worker
    shareAnswers: link === null ? null : {
      migrating: (id) => health.table.drainingSince(id) !== null && health.table.drainMigrates(id),
      send: (k, table, d) => link.answered(k, table, d),
    },
    writes: link,
  })
  let path = proxy.pathFor(config)
  const warnUnverified = (c: Config): void => {
    const ids = unverifiedUpstreams(c.upstreams)
    if (ids.length > 0) logger.warn({ upstreams: ids }, 'INSECURE: TLS certificates of these https:// upstreams are NOT verified (tls.verify: false); anyone on the network path can impersonate them')
  }
  warnUnverified(config)
  if (link === null) warnOpenAdmin(config, logger)
  // the listener's certificates: a renewed file is read again, new handshakes use it
  const certificates = config.listen.tls === null ? undefined : new ServerCertificates(config.listen.tls, {
    logger, timers, clock, onDefault: (o) => listener.setSecureContext(o),
  })
  const listener = new Listener(config, { current: () => path, clientErrors: proxy.clientErrors, logger, timers, clock, certificates })

  health.table.onTransition((e) => {
    metrics.onHealthTransition(e)
    // an upstream lost to failures is a warning (as HAProxy's "Server ... is DOWN"); the rest is news
    const level = e.to === 'unhealthy' || e.to === 'ejected' ? 'warn' : 'info'
    logger[level]({ upstream: e.id, from: e.from, to: e.to, reason: e.reason, detail: e.detail }, 'upstream health changed')
    if (e.to === 'unhealthy' || e.to === 'ejected' || e.to === 'disabled' || e.to === null) {
      // its WebSockets close (1012) so clients reconnect elsewhere; requests waiting on its
      // answer move now, unless it only left the upstream set (a reload, a discovery list after
      // its drain): those finish there, as a reload promises (its pool closes once they have)
      proxy.upgrades.closeUpstream(e.id, CLOSE_SERVICE_RESTART)
      if (e.to !== null) inFlight.stopWaiting(e.id, 'TETHER_UPSTREAM_UNAVAILABLE')
    }
  })
  metrics.setWebSocketCount(() => proxy.upgrades.established)
  metrics.setUpstreamQueued(() => proxy.http.queued())
  metrics.setAffinityStats(() => sessions.table)
  if (config.affinity.on_scale_up === 'gradual') metrics.setRebalancePending(() => router.rebalancePending(records.users(clock.now())))
  let before = new Map<string, { readonly url: string; readonly uid?: string }>()
  const membership = new Membership(config.upstreams, config.affinity.drain_timeout, {
    onChange: (set, gone) => {
      // an id kept with another url is another replica (a static one given a new address by a
      // reload, a StatefulSet pod re-created at a new IP): its users get their state there, as
      // after a restart in place, and its WebSockets (still on the old address) close, so they
      // reconnect where HTTP goes. Discovery keeps a pod's url while its address is still listed
      // (dual-stack, reordered addresses), so this is a new process, not another family. So is
      // a pod with the same name and url but another uid (re-created at the same IP); with the
      // same uid at another url it is the same pod (isReplacement: the uids decide when known)
      const replaced = set.list.filter((u) => { const b = before.get(u.id); return b !== undefined && isReplacement(b, u) }).map((u) => u.id)
      const previous = before
      // a uid listed for a moment without one is still the last one known (as the pool and the
      // active check keep it): another uid after the gap is another pod
      before = new Map(set.list.map((u) => {
        const uid = u.uid ?? (replaced.includes(u.id) ? undefined : before.get(u.id)?.uid)
        return [u.id, { url: u.url, ...(uid === undefined ? {} : { uid }) }]
      }))
      router.setUpstreams(set, clock.now(), gone) // first: it notes which leaving upstreams were draining, which gone
      health.table.setUpstreams(set.ids)
      proxy.http.setUpstreams(set.list)
      health.checker?.setUpstreams(set.list)
      const added = set.ids.filter((id) => !previous.has(id))
      const removed = [...previous.keys()].filter((id) => !before.has(id))
      logger.info({ upstreams: listedIds(set.ids), count: set.ids.length, added: listedIds(added), removed: listedIds(removed) }, 'upstreams updated')
      for (const id of replaced) {
        health.table.replaced(id)
        proxy.upgrades.closeUpstream(id, CLOSE_SERVICE_RESTART)
      }
      if (replaced.length > 0) logger.info({ upstreams: listedIds(replaced) }, 'upstreams replaced (a new address or a new pod): their users get their state there, their WebSockets are closed')
    },
    drain: (id, since) => health.table.drain(id, config.affinity.drain.migrate, since, 'discovery'),
    undrain: (id) => health.table.undrain(id, 'discovery'),
  }, timers)
  // with workers, one (the lead) runs discovery and tells the others every list it applies
  const discovered = link === null ? membership : {
    setDiscovered: (found: readonly DiscoveredUpstream[], source: string) => {
      membership.setDiscovered(found, source)
      link.discovered(source, found)
    },
    current: () => membership.current(), // a new lead keeps the urls its predecessor reported
    listedBy: (source: string) => membership.listedBy(source),
  }
  const discovery = createDiscovery(config.discovery, { membership: discovered, logger, metrics, env, timers, clock, drainTimeout: config.affinity.drain_timeout })
  membership.setStatic(config.upstreams)

  const redirect = config.listen.redirect === null ? null : new RedirectListener(config, { current: () => path, clientErrors: proxy.clientErrors, logger, clock }, () => listener.port)
  // a worker takes its siblings' bindings and health before it takes connections; the checks run where the primary says
  await link?.attach({
    sessions, records, applyProbe: health.applyProbe, now: () => clock.now(), metrics: (compact) => compact ? metrics.snapshot() : metrics.json(),
    health: { copies: health.copies, copy: health.copy },
    probeSoon: (id) => health.checker?.probeSoon(id),
    becomeLead: () => {
      if (closing !== null) return
      health.peers?.becameLead() // before its first probe result: the other replicas' verdicts no lead relayed
      health.checker?.start()
      // its first list in (or failed): every worker's /readyz stops waiting for it; a lead
      // stopped first (a rolling replacement, a scale-down) listed nothing: the next lead tells
      discovery.start().catch((err: unknown) => logger.error({ err: (err as Error).message }, 'discovery did not start')).finally(() => {
        if (closing === null) link.listedDiscovery()
      })
    },
    discovered: (source, found, leaving) => membership.setDiscovered(found, source,
      leaving.map(({ since, ...upstream }) => ({ upstream, since, remaining: since + config.affinity.drain_timeout - clock.now() }))),
  })
  // What was started, closed when the start fails (each part takes a close of what never started).
  let startedAdmin: AdminServer | null = null
  const stopStarted = async (): Promise<void> => {
    health.peers?.stop()
    stopState()
    health.watch?.stop()
    certificates?.stop()
    membership.stop()
    await Promise.all([health.checker?.stop(), discovery.stop(), listener.close(0, () => undefined), redirect?.listening === true ? redirect.close() : undefined, startedAdmin?.close()])
    await Promise.all([proxy.http.destroy(), store?.stop(), redis?.stop()])
  }
  const listenFailed = async (err: unknown): Promise<never> => {
    await stopStarted()
    // the key to change is in the config file: name it too
    throw err instanceof ListenError && options.configPath !== undefined ? err.inFile(options.configPath) : err
  }
  // What the start waits for now (null: it has ended): /readyz says 503 `starting` with it.
  let waiting: string | null = 'the start'
  // A worker's start does not wait for discovery (the lead runs it, once a worker has started):
  // its /readyz says `starting` all the same until the lead's first list is in or failed, as one
  // process's does while its start waits for it (else `no healthy upstream`, an empty set's)
  const discovers = config.discovery.dns !== null || config.discovery.kubernetes !== null
  const awaitsLead = (): boolean => link !== null && discovers && !link.discoveryListed
  // With `health.shared: redis` the proxy (and redirect) port listens once the drains other
  // replicas recorded in Redis are read (after discovery's first lists: a drain of a discovered
  // upstream applies only to an id in the set), so the first request is placed with them, as
  // Envoy adds no listener before its init targets are done. Without it nothing read at the
  // start decides routing: the port listens at once and answers 503 until upstreams are listed.
  const proxyWaits = recordsDrains
  const listenProxy = (): Promise<void> => listener.listen().then(() => redirect?.listen())
  if (!proxyWaits) await listenProxy().catch(listenFailed)
  // the admin port listens before the waits (discovery's first lists, Redis): /healthz (liveness)
  // answers at once, whatever the outside dependencies do; /readyz says 503 `starting` until the
  // start has ended (with workers, this worker's private one, which its primary learns of then)
  const admin = await createAdmin(config, {
    logger, health: health.table, peers: health.peers, metrics, traffic, upstreams: () => membership.current(), draining: () => draining,
    starting: () => waiting ?? (awaitsLead() ? "discovery's first list" : null),
    inFlight: (id) => inFlight.count(id), queued: (id) => proxy.http.queuedFor(id), websockets: (id) => proxy.upgrades.countByUpstream(id), sessions, records, shared,
    ...(link === null ? {} : { ordered: (key: string, to: string | null, at: number) => (link.ordered(key, to, at), link.flushed()) }), store: state?.store ?? null, now: () => clock.now(),
    degraded: () => [...stateDegraded(store, redis)(), ...discovery.degraded()],
    ...(link === null ? {} : { upstreamSeen: { known: () => link.upstreamSeen, saw: () => link.sawUpstream() } }),
  }, link === null ? null : { host: '127.0.0.1', port: 0 }).catch(listenFailed)
  startedAdmin = admin
  if (link === null) health.checker?.start()
  health.watch?.start() // every worker watches its own requests
  certificates?.watch()
  if (link === null) {
    waiting = "discovery's first list"
    await discovery.start()
  }
  // The waits for Redis at the start. They run at once: the connection's first ready check, the
  // store's (its own connection, if any) and the shared health's subscriptions, each bounded by
  // connectTimeout (2 s): with Redis frozen, the start waits about one of them, not their sum.
  // redis.start() makes its client before its first await (so it is called first: the
  // subscriptions are made on it); only the shared health's read of the recorded drains needs
  // the connection's start settled (it waits for it; the read is bounded by connectTimeout too,
  // and one that failed is logged and retried: Tether serves without the drains until they are read).
  // Each resolves even when Redis is down (degraded, reconnecting); one that rejects is thrown
  // once the others settled (none is left pending), the first in this order, after what was
  // started is closed.
  if (redis !== null || health.peers !== null) waiting = redis === null ? 'the drains and ejections recorded by the other workers' : recordsDrains ? 'Redis and the drains and ejections recorded in it' : 'Redis'
  const connected = redis?.start()
  const starts = await Promise.allSettled([connected, store?.start(), health.peers?.start(connected)])
  const failed = starts.find((s): s is PromiseRejectedResult => s.status === 'rejected')
  if (failed !== undefined) {
    await stopStarted()
    throw failed.reason
  }
  if (proxyWaits) await listenProxy().catch(listenFailed)
  waiting = null
  keyspace?.start()
  // background upkeep: expired affinity entries (also dropped lazily on lookup) and ended ejections
  let upkeep = timers.setTimeout(function sweep() {
    sessions.sweep(clock.now(), 10_000)
    records.sweep(clock.now(), 10_000)
    inFlight.sweep()
    health.table.tick()
    traffic.sweep(membership.current().ids)
    closeDrainedTunnels()
    upkeep = timers.setTimeout(sweep, 1_000)
  }, 1_000)
  logger.info({ url: listener.url, admin: admin.url, upstreams: listedIds(membership.current().ids) }, 'tether listening')

  /**
   * Past `drain_timeout` a draining upstream's users move at their next request; its
   * WebSockets, which make none, are closed then (1012, within the upkeep's second), so their
   * clients reconnect elsewhere too instead of staying for as long as the tunnel lasts.
   */
  function closeDrainedTunnels(): void {
    if (proxy.upgrades.size === 0) return
    const now = clock.now()
    const ids = membership.current().ids
    for (const id of ids) {
      const since = health.table.drainingSince(id)
      // only when its users have somewhere to go: with every upstream draining, the router
      // keeps placing users on them, and a closed WebSocket would come straight back
      if (since !== null && now - since >= current.affinity.drain_timeout && proxy.upgrades.countByUpstream(id) > 0 &&
        ids.some((other) => other !== id && health.table.acceptsNew(other))) {
        logger.info({ upstream: id, websockets: proxy.upgrades.countByUpstream(id) }, 'drain_timeout passed: closing the WebSockets of the draining upstream')
        proxy.upgrades.closeUpstream(id, CLOSE_SERVICE_RESTART)
      }
    }
  }

  const reload = (next: Config): ReloadResult => {
    const { applied, needsRestart, restartKeys, effective } = diffConfig(current, next)
    if (applied.includes('upstreams')) {
      membership.setStatic(next.upstreams) // an id given another url is replaced (see onChange)
      warnUnverified(next)
    }
    current = effective
    path = proxy.pathFor(effective)
    listener.setIdleBound(effective) // an upstream bound added or removed (see queueWait)
    metrics.configReload(true)
    logger.info({ applied }, 'config reloaded')
    // a worker's: the primary replaces the workers for them (its own log says so); `workers`
    // itself is the primary's to judge (`auto` may give the same count: nothing to replace)
    const forNewWorkers = link === null ? [] : needsRestart.filter((s) => s !== 'workers')
    if (forNewWorkers.length > 0) logger.info({ sections: forNewWorkers }, 'config reloaded: these changes need new workers; the primary replaces them one at a time')
    else if (needsRestart.length > 0 && link === null) logger.warn({ sections: needsRestart, keys: restartKeys }, 'config reloaded: these changes need a restart and were not applied')
    return { applied, needsRestart, restartKeys }
  }
  /** The issues of the last refused reload, joined: the watch's retries of it log them once. */
  let refused: string | null = null
  /** `retry`: the watch offers again a content refused before (a file it names may be there now). */
  const reloadFrom = (retry: boolean): ReloadResult | ConfigError => {
    const file = options.configPath
    if (file === undefined) return new ConfigError(['no config file to reload'])
    // a SIGHUP during the shutdown: a stopping proxy gets no new upstreams, pools or log lines
    if (closing !== null) {
      logger.info('config not reloaded: tether is shutting down')
      return new ConfigError(['tether is shutting down: the config is not reloaded'])
    }
    let text: string | null = null
    try {
      // the files it names read as by `tether check` and start-up (a kubeconfig that the
      // restart a reload asks for would fail on is refused now)
      text = readConfigText(file)
      const read = parseConfig(text, file, env, configFiles)
      for (const w of configWarnings(read)) logger.warn({ warning: w }, CONFIG_WARNING)
      const result = reload(options.worker?.adjust(read) ?? read)
      refused = null
      watcher?.accept(text) // read here (a SIGHUP): the watch does not reload it once more
      return result
    } catch (err) {
      const e = err instanceof ConfigError ? err : new ConfigError([`${file}: ${(err as Error).message}`])
      // the watch offers it again later: a file it names (a Secret updated after the
      // ConfigMap) may be there then; the same refusal again is logged once
      if (text !== null) watcher?.accept(text, true)
      const issues = e.issues.join('\n')
      if (retry && issues === refused) return e
      refused = issues
      metrics.configReload(false)
      logger.error({ issues: e.issues }, 'config reload rejected; the running config stays')
      return e
    }
  }
  const reloadFile = (): ReloadResult | ConfigError => reloadFrom(false)
  // a worker reloads when its primary says (all workers at once), not on its own watch
  const watcher = options.configPath === undefined || link !== null ? null : new ConfigWatcher(options.configPath, (retry) => !(reloadFrom(retry) instanceof ConfigError), timers, { baseline: options.configText })
  watcher?.start()

  const close = (graceMs = config.shutdown.grace_period): Promise<void> => {
    closing ??= (async () => {
      draining = true
      logger.info({ grace_ms: graceMs }, 'tether shutting down')
      timers.clearTimeout(upkeep)
      keyspace?.stop()
      health.peers?.stop()
      stopState()
      health.watch?.stop()
      watcher?.stop()
      certificates?.stop()
      membership.stop()
      await Promise.all([health.checker?.stop(), discovery.stop()])
      await Promise.all([
        // WebSockets get the whole grace period, then 1001; answers still open are cut by Tether
        // then (when every connection closed before, a request still on its way is its client's)
        listener.close(graceMs, (forced) => {
          if (forced) proxy.http.cutOff()
          proxy.upgrades.closeAll(CLOSE_GOING_AWAY)
        }),
        redirect?.close(),
      ])
      const [, , , unanswered] = await Promise.all([proxy.http.destroy(), admin.close(), store?.stop(), redis?.stop()])
      if (unanswered !== undefined && unanswered > 0) logger.warn({ unanswered }, 'redis did not answer before the stop: writes among these commands may not be stored')
      logger.info('tether stopped')
    })()
    return closing
  }
  return {
    get config() { return current },
    url: listener.url, port: listener.port, redirectUrl: redirect === null ? null : `http://${config.listen.redirect!.host.includes(':') ? `[${config.listen.redirect!.host}]` : config.listen.redirect!.host}:${redirect.port}`, adminUrl: admin.url, logger, router, sessions, health: health.table, metrics, listener, upgrades: proxy.upgrades, forwarder: proxy.http, inFlight,
    reload, reloadFile, close,
  }
}
