// Prometheus metrics: the ONE module that declares every `tether_*` metric and the only file
// that imports prom-client. Each Metrics instance owns its own Registry (never the global one),
// so several Tether instances in one process do not clash. Layer 3 adapter: the request path
// and the composition root call its small typed methods (O(1), no I/O); scrapes call render().
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics, type Metric } from 'prom-client'
import type { HealthState, HealthTransition } from '../health/health-table.js'
import type { MoveReason } from '../routing/router.js'
import { BoundedMap } from '../affinity/bounded-map.js'
import { WRITES_REFUSED_REASONS, type WritesRefusedReason } from '../redis/reply-errors.js'
import { monotonicNow, systemClock, type Clock } from '../clock.js'
import type { ClientProtocol, RefusalCause } from './events.js'
import { LOG_DROP_REASONS, logLinesDropped } from './logger.js'
import { REMOVED_SERIES_GRACE_MS, WireWriter, labelValue, type MetricData, type MetricsSnapshot } from './metrics-wire.js'
// defined in metrics-wire.ts, which the workers' primary loads without prom-client
export { REMOVED_SERIES_GRACE_MS, aggregateMetrics } from './metrics-wire.js'

/** Result of a rehydration attempt (the new upstream asked for a moved user's state). */
export type RehydrationResult = 'delivered' | 'no_state' | 'error'
/** Result of a checkpoint (an upstream handing in a user's state). */
export type CheckpointResult = 'stored' | 'stale' | 'superseded' | 'too_large' | 'unavailable'
/** A timed Redis operation. */
export type RedisOp = 'get' | 'put'
/** A discovery source and whether its last answer was good, read at scrape time. */
export interface DiscoveryStatus {
  readonly source: string
  readonly up: boolean
}

/** What the affinity table reports at scrape time; evictions and expirations are monotonic. */
export interface AffinityStats {
  readonly size: number
  readonly evictions: number
  readonly expirations: number
}

/** The `method` label's values: the common methods, anything else is `OTHER` (bounded). */
export const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'OTHER'] as const
/** The `status_class` label's values; `none` when no status was sent (e.g. client abort). */
export const STATUS_CLASSES = ['1xx', '2xx', '3xx', '4xx', '5xx', 'none'] as const
const HEALTH_STATES: readonly HealthState[] = ['healthy', 'unhealthy', 'ejected', 'draining', 'disabled']

/** One documented metric: the README's metrics table is rendered from (and tested against) these. */
export interface MetricDoc {
  readonly name: string
  readonly type: 'counter' | 'gauge' | 'histogram'
  readonly help: string
  readonly labels: readonly string[]
}

/**
 * Every `tether_*` metric, its type, HELP text and labels. The metrics below are built from
 * this table, so it cannot drift from what /metrics exposes. Names follow
 * `tether_<subsystem>_<name>_<unit>`. Label values are bounded: `upstream` / `from` are
 * upstream ids (config or discovery) or `none`; the others are the fixed sets named in the help.
 */
export const METRIC_DOCS = [
  { name: 'tether_http_requests_total', type: 'counter', labels: ['upstream', 'method', 'status_class'],
    help: 'Client requests answered, by final upstream (none if no upstream was chosen), method (GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, OTHER) and status class (1xx..5xx, none if no status was sent).' },
  { name: 'tether_http_request_duration_seconds', type: 'histogram', labels: ['upstream'],
    help: 'Time from receiving a client request to finishing its answer, retries included, by final upstream.' },
  { name: 'tether_upstream_state', type: 'gauge', labels: ['upstream', 'state'],
    help: 'Health state of each upstream: 1 for its current state (healthy, unhealthy, ejected, draining, disabled), 0 for the others.' },
  { name: 'tether_upstream_in_flight', type: 'gauge', labels: ['upstream'],
    help: 'Requests currently being forwarded to each upstream.' },
  { name: 'tether_upstream_queued_requests', type: 'gauge', labels: ['upstream'],
    help: 'Requests waiting in the Tether queue for a connection to each upstream because its bound (its max_connections, else limits.max_upstream_connections) is reached (counted in tether_upstream_in_flight too; 0 without a bound).' },
  { name: 'tether_failovers_total', type: 'counter', labels: ['from', 'reason'],
    help: 'Users moved away from their upstream, by the upstream they left and why (dead, drain, rebalance, spill, admin; restart: rehydrated on their own upstream after it restarted in place).' },
  { name: 'tether_retries_total', type: 'counter', labels: ['upstream'],
    help: 'Requests retried on another upstream, by the upstream whose attempt failed.' },
  { name: 'tether_hedges_total', type: 'counter', labels: ['result'],
    help: 'Hedges sent (retries.hedge_after: a request with no answer head yet sent to the user\'s next upstream as well), counted when the request\'s attempts end, by result (won: the hedge answered, the user moved; lost: the first attempt answered, or neither did).' },
  { name: 'tether_rehydrations_total', type: 'counter', labels: ['result'],
    help: 'State rehydrations of moved users, counted once per answer from the upstream the state was for (not per fetch: a hedge not sent, that lost or whose upstream refused the state in its head, a failed attempt, counts nothing), by result (delivered; no_state: none stored; error: not fetched, refused by the hook, or too large for a header).' },
  { name: 'tether_checkpoints_total', type: 'counter', labels: ['result'],
    help: 'State checkpoints handed in by upstreams, by result (stored, stale, superseded: refused for another upstream\'s checkpoint of the same epoch, too_large, unavailable).' },
  { name: 'tether_affinity_entries', type: 'gauge', labels: [],
    help: 'Entries in the affinity table.' },
  { name: 'tether_affinity_evictions_total', type: 'counter', labels: [],
    help: 'Live affinity entries evicted because the table was full.' },
  { name: 'tether_affinity_expirations_total', type: 'counter', labels: [],
    help: 'Affinity entries removed after their idle or absolute timeout.' },
  { name: 'tether_redis_up', type: 'gauge', labels: [],
    help: '1 while the Redis state store is connected and every Redis node (every Cluster shard) answers, 0 otherwise (also 0 when no Redis is configured).' },
  { name: 'tether_redis_node_up', type: 'gauge', labels: ['node'],
    help: 'Per Redis node (host:port of each Cluster master or of the standalone server, the master name with Sentinel): 1 while it answers, 0 while it is unreachable or failing (see docs/redis.md, Redis node health).' },
  { name: 'tether_redis_node_full_state', type: 'gauge', labels: ['node'],
    help: 'Per Redis node (as in tether_redis_node_up): 1 while it is full, refusing writes with OOM (maxmemory reached under maxmemory-policy noeviction): new checkpoints and shared bindings are not stored, while reads, TTL renewals and routing go on and the node stays up; 0 while it takes writes or refuses them for another reason (see docs/redis.md, A full Redis). The same as tether_redis_node_writes_refused_state{reason="oom"}.' },
  { name: 'tether_redis_node_writes_refused_state', type: 'gauge', labels: ['node', 'reason'],
    help: 'Per Redis node (as in tether_redis_node_up) and reason it refuses every write while it answers reads (oom: full, maxmemory reached under maxmemory-policy noeviction; misconf: it cannot persist, an RDB save failed under stop-writes-on-bgsave-error yes or an append-only file write failed; noreplicas: fewer good replicas than min-replicas-to-write): 1 for the reason it refuses writes for now (while several hold at once, the one that refuses more: misconf, then noreplicas, then oom), 0 for the others (all 0 while it takes writes). The node stays up, reads (rehydration) and routing go on; new checkpoints and shared bindings are not stored, nor, but for oom, renewed (see docs/redis.md, A Redis that refuses writes).' },
  { name: 'tether_redis_keyspace_losses_total', type: 'counter', labels: ['node'],
    help: 'Times a Redis node was found to have lost its keys (restarted without persistence, failed over to a replica that had not synced, flushed), by node (as in tether_redis_node_up): its marker key was gone or replaced; this replica then wrote its bindings and admin drains back (see docs/redis.md, A Redis that lost its keys). A node that left the topology keeps its series 5 minutes after that (or after its last loss), then it goes.' },
  { name: 'tether_affinity_written_back_total', type: 'counter', labels: [],
    help: 'Affinity bindings this replica wrote back to Redis after a node lost its keys (those Redis already held with a newer epoch are not counted).' },
  { name: 'tether_redis_operation_duration_seconds', type: 'histogram', labels: ['op'],
    help: 'Duration of Redis state store operations, by operation (get, put).' },
  { name: 'tether_websocket_connections', type: 'gauge', labels: [],
    help: 'Established proxied WebSocket connections: tunnels open after the upstream answered 101 (handshakes still waiting for it are not counted).' },
  { name: 'tether_rebalance_pending_users', type: 'gauge', labels: [],
    help: 'With on_scale_up: gradual, users answered by this process within the idle timeout whose hash now prefers an upstream added after they were pinned: the moves the rebalance still has to make (0 otherwise).' },
  { name: 'tether_config_reloads_total', type: 'counter', labels: ['result'],
    help: 'Configuration reloads, by result (ok: the file was accepted, its changes applied or logged as needing a restart; failed: refused, the running config stays).' },
  { name: 'tether_config_last_reload_successful', type: 'gauge', labels: [],
    help: 'Whether the last configuration reload was accepted (1) or refused (0, the running config stays); 1 from the start, as Prometheus\'s own prometheus_config_last_reload_successful. With workers, the primary\'s.' },
  { name: 'tether_config_last_reload_success_timestamp_seconds', type: 'gauge', labels: [],
    help: 'When the configuration was last accepted (the start, or the last reload accepted), seconds since the Unix epoch. With workers, the primary\'s.' },
  { name: 'tether_client_requests_total', type: 'counter', labels: ['protocol'],
    help: 'Client requests finished, by the protocol the client spoke (http/1.0, http/1.1, h2, websocket; none: refused before its head was read whole, or HTTP/2.0 in an HTTP/1 request line), TLS or not; refusals before the request path included, as in tether_http_requests_total.' },
  { name: 'tether_proxy_protocol_refused_total', type: 'counter', labels: ['reason'],
    help: 'Connections closed without an answer because they did not begin with a valid PROXY protocol header (listen.proxy_protocol), by reason (missing: no header; malformed; too_long: a v1 line past 107 bytes or a v2 header past 4096; timeout: not complete within timeouts.client_headers; a connection that sent nothing is not counted). With workers, summed over the workers.' },
  { name: 'tether_discovery_up', type: 'gauge', labels: ['source'],
    help: 'Per discovery source (dns, kubernetes): 1 while its last answer was good, 0 while it keeps the last known upstreams because its server is unreachable or failing or the answer was empty, and while part of a DNS resolution fails (a family or an SRV target keeps its last known addresses).' },
  { name: 'tether_discovery_errors_total', type: 'counter', labels: ['source'],
    help: 'Discovery failures (unreachable or failing server, empty answer), by source (dns, kubernetes).' },
  { name: 'tether_log_lines_dropped_total', type: 'counter', labels: ['reason'],
    help: 'Log lines this process\'s stdout dropped, by reason (backlog: over the 16 MiB held for a reader that stalled; write_error: a write failed, as ENOSPC on a full disk, and the lines logged until one worked again; reader_gone: logged after stdout\'s reader went away, EPIPE). With workers, summed over the workers and the primary (its own lines go to the same stdout).' },
] as const satisfies readonly MetricDoc[]

/** The names of all `tether_*` metrics. */
export type MetricName = (typeof METRIC_DOCS)[number]['name']

/** Request duration buckets, seconds: 1 ms .. 30 s, dense where proxied requests usually are. */
export const REQUEST_BUCKETS: readonly number[] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]
/** Redis operation buckets, seconds: 0.1 ms .. 1 s. */
export const REDIS_BUCKETS: readonly number[] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1]

const NONE = 'none'
const HEDGE_WON = { result: 'won' } as const
const HEDGE_LOST = { result: 'lost' } as const
const STATUS_SLOTS = STATUS_CLASSES.length
/** Slots of an upstream's column: request counts, then duration buckets, sum and count. */
const COUNT_SLOTS = METHODS.length * STATUS_SLOTS
const SUM_SLOT = COUNT_SLOTS + REQUEST_BUCKETS.length
const COLUMN_SLOTS = SUM_SLOT + 2
/** The `protocol` label's values of tether_client_requests_total. */
const CLIENT_PROTOCOLS: readonly ClientProtocol[] = ['http/1.0', 'http/1.1', 'h2', 'websocket', 'none']

/** Options of {@link Metrics}. */
export interface MetricsOptions {
  /** Also expose prom-client's standard Node process metrics (process_*, nodejs_*). Default true. */
  readonly defaultMetrics?: boolean
  /** Time for the grace of a removed upstream's series (its monotonic time). Default the system clock. */
  readonly clock?: Clock
}


/**
 * The metrics of one Tether instance.
 *
 * Hot-path calls are O(1) and allocate nothing: `requestStarted`, `requestEnded`,
 * `clientProtocol` and `observeRequest` (its count and its duration's bucket, sum and count,
 * in one column per upstream: a Map lookup and array increments) touch plain counters kept
 * here, copied into prom-client when scraped (the duration histogram through a
 * {@link ColumnHistogram} in prom-client's histogram shape). Rare events go to prom-client
 * directly. Affinity numbers are read at scrape time from the callback given to
 * `setAffinityStats` (no polling).
 *
 * When an upstream is removed (health transition to null) its state series go at once; its
 * traffic series (requests, duration, in-flight, retries, failovers from it) stay until
 * {@link REMOVED_SERIES_GRACE_MS} has passed since its last count with none of its requests in
 * flight, so the moves its removal caused (counted then, or as its users come back) are scraped
 * before they go; they are dropped at the next scrape or removal after that (no timer). An
 * upstream added again with the same id within the grace keeps its series and counts on. A
 * retry or failover recorded later for an upstream health does not list is kept and dropped the
 * same way (so an upstream never known to health, as in a Metrics not subscribed to it, shows
 * it for the grace only), and so is a request recorded for a removed upstream after its series
 * were purged (a late answer of a deleted pod; the last 4,096 purged ids are remembered).
 *
 * Example:
 * ```ts
 * const metrics = new Metrics()
 * health.onTransition((e) => metrics.onHealthTransition(e))
 * metrics.setAffinityStats(() => affinity)   // AffinityTable has size, evictions, expirations
 * metrics.observeRequest('app-0', 'GET', 200, 0.012)
 * res.setHeader('content-type', metrics.contentType); res.end(await metrics.render())
 * ```
 */
export class Metrics {
  readonly #registry = new Registry()
  readonly #state: Gauge<string>
  readonly #failovers: Counter<string>
  readonly #retries: Counter<string>
  readonly #rehydrations: Counter<string>
  readonly #hedges: Counter<string>
  readonly #checkpoints: Counter<string>
  readonly #redisUp: Gauge<string>
  readonly #redisNodeUp: Gauge<string>
  readonly #redisNodeFull: Gauge<string>
  readonly #redisNodeWritesRefused: Gauge<string>
  readonly #redisOps: Histogram<string>
  readonly #websockets: Gauge<string>
  readonly #reloads: Counter<string>
  readonly #proxyHeaderRefusals: Counter<string>
  readonly #reloadOk: Gauge<string>
  readonly #reloadAt: Gauge<string>
  readonly #discoveryErrors: Counter<string>
  readonly #keyspaceLosses: Counter<string>
  readonly #writtenBack: Counter<string>
  #discoveryStatus: () => readonly DiscoveryStatus[] = () => []
  #rebalancePending: () => number = () => 0
  /** The requests waiting for a connection, by upstream (see setUpstreamQueued). */
  #queued: () => Iterable<[string, number]> = () => []

  /**
   * Per upstream, one column: request counts (METHODS.length x STATUS_CLASSES.length slots),
   * then the duration histogram's buckets (REQUEST_BUCKETS.length), its sum and its count.
   */
  readonly #requestCounts = new Map<string, Float64Array>()
  /** Requests counted per client protocol (CLIENT_PROTOCOLS order), published at scrape time. */
  readonly #protocolCounts = new Float64Array(CLIENT_PROTOCOLS.length)
  readonly #inFlight = new Map<string, number>()
  /** Label objects per upstream for the duration histogram (prom-client keeps a reference). */
  readonly #upstreamLabels = new Map<string, { upstream: string }>()
  /** Upstreams with state series (known to health). */
  readonly #upstreams = new Set<string>()
  /** Upstreams whose series were purged, newest last (at most PURGED_REMEMBERED). */
  readonly #purged = new BoundedMap<string, true>(PURGED_REMEMBERED)
  /**
   * Removed upstreams whose traffic series wait to be dropped: id -> when their grace ends
   * (monotonic ms), earliest first (a new count moves the id to the end).
   */
  readonly #removed = new Map<string, number>()
  /** Redis nodes that left the topology: node -> when their loss series goes (monotonic ms), earliest first. */
  readonly #removedNodes = new Map<string, number>()
  /** The Redis nodes whose full and writes-refused series are set (see {@link redisNodeUp}). */
  readonly #refusedSeries = new Set<string>()
  readonly #clock: Clock
  readonly #redisOpLabels = { get: { op: 'get' }, put: { op: 'put' } } as const
  #affinityStats: (() => AffinityStats) | null = null
  /** One read of the affinity stats per scrape, shared by the three affinity metrics. */
  #affinityNow: AffinityStats | null = null
  #affinitySeen = { evictions: 0, expirations: 0 }

  constructor(options: MetricsOptions = {}) {
    this.#clock = options.clock ?? systemClock
    const registers = [this.#registry]
    if (options.defaultMetrics ?? true) collectDefaultMetrics({ register: this.#registry })
    const self = this

    new Counter({
      ...config('tether_http_requests_total'), registers,
      collect() { self.#publishRequests(this) },
    })
    this.#registry.registerMetric(new ColumnHistogram(config('tether_http_request_duration_seconds'), () => this.#requestCounts) as unknown as Metric<string>)
    this.#state = new Gauge({ ...config('tether_upstream_state'), registers })
    new Gauge({
      ...config('tether_upstream_in_flight'), registers,
      collect() {
        this.reset()
        for (const [upstream, n] of self.#inFlight) this.set({ upstream }, n)
      },
    })
    new Gauge({
      ...config('tether_upstream_queued_requests'), registers,
      collect() {
        this.reset()
        for (const [upstream, n] of self.#queued()) this.set({ upstream }, n)
      },
    })
    this.#failovers = new Counter({ ...config('tether_failovers_total'), registers })
    this.#retries = new Counter({ ...config('tether_retries_total'), registers })
    this.#rehydrations = new Counter({ ...config('tether_rehydrations_total'), registers })
    this.#hedges = new Counter({ ...config('tether_hedges_total'), registers })
    this.#checkpoints = new Counter({ ...config('tether_checkpoints_total'), registers })
    new Gauge({
      ...config('tether_affinity_entries'), registers,
      collect() { this.set(self.#affinityNow?.size ?? 0) },
    })
    // Monotonic totals owned by the affinity table: a Counter advanced at scrape time by the
    // growth since the last scrape. A source that went backwards (a new table) counts from 0
    // again, so the exposed counter never decreases.
    new Counter({
      ...config('tether_affinity_evictions_total'), registers,
      collect() { this.inc(self.#affinityDelta('evictions')) },
    })
    new Counter({
      ...config('tether_affinity_expirations_total'), registers,
      collect() { this.inc(self.#affinityDelta('expirations')) },
    })
    this.#redisUp = new Gauge({ ...config('tether_redis_up'), registers })
    this.#redisNodeUp = new Gauge({ ...config('tether_redis_node_up'), registers })
    this.#redisNodeFull = new Gauge({ ...config('tether_redis_node_full_state'), registers })
    this.#redisNodeWritesRefused = new Gauge({ ...config('tether_redis_node_writes_refused_state'), registers })
    this.#redisOps = new Histogram({ ...config('tether_redis_operation_duration_seconds'), registers, buckets: [...REDIS_BUCKETS] })
    this.#websockets = new Gauge({ ...config('tether_websocket_connections'), registers })
    this.#reloads = new Counter({ ...config('tether_config_reloads_total'), registers })
    this.#proxyHeaderRefusals = new Counter({ ...config('tether_proxy_protocol_refused_total'), registers })
    this.#reloadOk = new Gauge({ ...config('tether_config_last_reload_successful'), registers })
    this.#reloadOk.set(1) // the config this instance started with was accepted
    this.#reloadAt = new Gauge({ ...config('tether_config_last_reload_success_timestamp_seconds'), registers })
    this.#reloadAt.set(this.#clock.now() / 1000)
    new Gauge({ ...config('tether_rebalance_pending_users'), registers, collect() { this.set(self.#rebalancePending()) } })
    new Counter({
      ...config('tether_client_requests_total'), registers,
      collect() {
        this.reset()
        CLIENT_PROTOCOLS.forEach((protocol, i) => { if (self.#protocolCounts[i]! > 0) this.inc({ protocol }, self.#protocolCounts[i]!) })
      },
    })
    new Gauge({
      ...config('tether_discovery_up'), registers,
      collect() {
        this.reset()
        for (const { source, up } of self.#discoveryStatus()) this.set({ source }, up ? 1 : 0)
      },
    })
    this.#discoveryErrors = new Counter({ ...config('tether_discovery_errors_total'), registers })
    this.#keyspaceLosses = new Counter({ ...config('tether_redis_keyspace_losses_total'), registers })
    this.#writtenBack = new Counter({ ...config('tether_affinity_written_back_total'), registers })
    // the process's stdout (the logger's count since the process started): every reason from 0
    new Counter({
      ...config('tether_log_lines_dropped_total'), registers,
      collect() {
        const dropped = logLinesDropped()
        this.reset()
        for (const reason of LOG_DROP_REASONS) this.inc({ reason }, dropped[reason])
      },
    })
  }

  /** The Content-Type of {@link render}'s output (Prometheus text format 0.0.4). */
  get contentType(): string {
    return this.#registry.contentType
  }

  /** The exposition text for GET /metrics: reads the affinity stats once, drops removed upstreams. */
  render(): Promise<string> {
    return this.#scrape(() => this.#registry.metrics())
  }

  /** The metrics as prom-client's getMetricsAsJSON() gives them: what a primary of an older build reads from a worker. */
  json(): Promise<unknown> {
    return this.#scrape(() => this.#registry.getMetricsAsJSON())
  }

  /** The metrics as data (metrics-wire.ts's compact form), for the primary to combine with the other workers' ({@link aggregateMetrics}). */
  snapshot(): Promise<MetricsSnapshot> {
    // as getMetricsAsJSON() (no default labels here), but the duration histogram's series written
    // from its columns at once: no label object for each of its 15 series an upstream
    return this.#scrape(async () => {
      const metrics = this.#registry.getMetricsAsArray() as unknown as readonly { get(): Promise<unknown> }[]
      const data = await Promise.all(metrics.map((m) => m instanceof ColumnHistogram ? null : m.get()))
      const w = new WireWriter()
      metrics.forEach((m, i) => m instanceof ColumnHistogram ? m.wire(w) : w.add(data[i] as MetricData))
      return w.done()
    })
  }

  /** One scrape: the affinity stats read once for all its metrics, removed upstreams past their grace dropped first. */
  async #scrape<T>(read: () => Promise<T>): Promise<T> {
    this.#affinityNow = this.#affinityStats?.() ?? null
    this.#purgeRemoved()
    try {
      return await read()
    } finally {
      this.#affinityNow = null
    }
  }

  /** A request was sent to `upstream` (each attempt; pair with {@link requestEnded}). O(1). */
  requestStarted(upstream: string): void {
    this.#inFlight.set(upstream, (this.#inFlight.get(upstream) ?? 0) + 1)
  }

  /** The attempt to `upstream` ended (answered, failed or aborted). O(1). */
  requestEnded(upstream: string): void {
    const n = (this.#inFlight.get(upstream) ?? 0) - 1
    if (n > 0) this.#inFlight.set(upstream, n)
    else if (this.#upstreams.has(upstream)) this.#inFlight.set(upstream, 0)
    else this.#inFlight.delete(upstream) // unknown or removed: its series goes with its last request
  }

  /**
   * One client request finished. `upstream` is the final upstream, or null when none was
   * chosen; `status` is the status sent, 0 or null when none was; `seconds` the total duration.
   * Example: `metrics.observeRequest(route?.id ?? null, req.method, r.status, elapsedMs / 1000)`.
   */
  observeRequest(upstream: string | null, method: string | undefined, status: number | null, seconds: number): void {
    const id = upstream ?? NONE
    let counts = this.#requestCounts.get(id)
    const fresh = counts === undefined
    if (counts === undefined) {
      counts = new Float64Array(COLUMN_SLOTS)
      this.#requestCounts.set(id, counts)
    }
    // a removed upstream's late answer (its first one too: a request in flight at the removal
    // that outlasted the grace), or one of an upstream whose series were purged (a deleted
    // pod): shown for the grace from now, then dropped again
    if ((this.#removed.size !== 0 && this.#removed.has(id)) || (fresh && upstream !== null && this.#purged.get(upstream) !== undefined)) this.#keepForGrace(id)
    counts[methodIndex(method) * STATUS_SLOTS + statusIndex(status)]!++
    if (seconds >= 0 && Number.isFinite(seconds)) {
      let b = 0
      while (b < REQUEST_BUCKETS.length && seconds > REQUEST_BUCKETS[b]!) b++
      if (b < REQUEST_BUCKETS.length) counts[COUNT_SLOTS + b]!++
      counts[SUM_SLOT]! += seconds
      counts[SUM_SLOT + 1]!++
    }
  }

  /**
   * Follows a health transition (subscribe with `health.onTransition`): sets exactly the new
   * state's series to 1 and the others to 0; on removal (`to` null) deletes the upstream's
   * state series and schedules its traffic series to be dropped.
   */
  onHealthTransition(e: Pick<HealthTransition, 'id' | 'from' | 'to'>): void {
    if (e.to === null) this.#removeUpstream(e.id)
    else this.#setState(e.id, e.to)
  }

  /**
   * Sets every upstream's state from a health snapshot (e.g. `health.snapshot()`) and removes
   * upstreams not in it; for subscribing after upstreams were added.
   */
  syncHealth(entries: Iterable<{ readonly id: string; readonly state: HealthState }>): void {
    const seen = new Set<string>()
    for (const { id, state } of entries) {
      seen.add(id)
      this.#setState(id, state)
    }
    for (const id of this.#upstreams) if (!seen.has(id)) this.#removeUpstream(id)
  }

  /**
   * A user was moved away from upstream `from` (Route.moved). `from` may be gone already (a
   * user whose cookie names a pod deleted in a rollout): its series then stays for the grace
   * ({@link REMOVED_SERIES_GRACE_MS}) from this count, and goes.
   */
  failover(from: string, reason: MoveReason): void {
    this.#failovers.inc({ from, reason })
    this.#dropUnlessCurrent(from)
  }

  /** The attempt to `upstream` failed and the request is retried on another one (dropped as for failover). */
  retry(upstream: string): void {
    this.#retries.inc(this.#labelsOf(upstream))
    this.#dropUnlessCurrent(upstream)
  }

  /** A hedge sent ended: it answered the request (won) or did not (lost). */
  hedge(won: boolean): void {
    this.#hedges.inc(won ? HEDGE_WON : HEDGE_LOST)
  }

  /** A connection closed without a valid PROXY protocol header (rare: per connection, to prom-client directly). */
  proxyHeaderRefused(cause: RefusalCause): void {
    this.#proxyHeaderRefusals.inc({ reason: cause })
  }

  rehydration(result: RehydrationResult): void {
    this.#rehydrations.inc({ result })
  }

  checkpoint(result: CheckpointResult): void {
    this.#checkpoints.inc({ result })
  }

  /** The Redis store is connected with every node up (true), or not (false). */
  redisUp(up: boolean): void {
    this.#redisUp.set(up ? 1 : 0)
  }

  /**
   * Redis node `node` answers (true) or is unreachable or failing (false). The label set is
   * bounded by the nodes the connection reports; {@link redisNodeRemoved} drops a node's series.
   * Example: `redis.onNode((e) => metrics.redisNodeUp(e.node.address, e.node.status === 'up'))`.
   */
  redisNodeUp(node: string, up: boolean): void {
    this.#redisNodeUp.set({ node }, up ? 1 : 0)
    if (this.#removedNodes.size !== 0) this.#removedNodes.delete(node)
    // a node that joins (a Cluster failover or scale-out) has its writes-refused series at 0 at once
    if (!this.#refusedSeries.has(node)) this.redisNodeWritesRefused(node, null)
  }

  /**
   * Why Redis node `node` refuses writes (see RedisNodeHealth.writesRefused), or null while it
   * takes them: `tether_redis_node_writes_refused_state` (every reason, 1 for this one) and
   * `tether_redis_node_full_state` (1 for 'oom').
   */
  redisNodeWritesRefused(node: string, reason: WritesRefusedReason | null): void {
    this.#refusedSeries.add(node)
    this.#redisNodeFull.set({ node }, reason === 'oom' ? 1 : 0)
    for (const r of WRITES_REFUSED_REASONS) this.#redisNodeWritesRefused.set({ node, reason: r }, r === reason ? 1 : 0)
  }

  /**
   * Redis node `node` left the topology (a failover moved its slots away): its up and full
   * series go at once; its `tether_redis_keyspace_losses_total` series (a counter: the losses it had must
   * be scraped) stays for {@link REMOVED_SERIES_GRACE_MS} after the removal or its last loss,
   * as a removed upstream's traffic series do, then goes (a node back meanwhile keeps it).
   */
  redisNodeRemoved(node: string): void {
    this.#redisNodeUp.remove({ node })
    this.#redisNodeFull.remove({ node })
    this.#refusedSeries.delete(node)
    for (const reason of WRITES_REFUSED_REASONS) this.#redisNodeWritesRefused.remove({ node, reason })
    this.#nodeGoesLater(node)
  }

  /** One Redis operation took `seconds`. */
  redisOp(op: RedisOp, seconds: number): void {
    this.#redisOps.observe(this.#redisOpLabels[op], seconds)
  }

  /** Where `tether_rebalance_pending_users` is read at each scrape (a count over the recorded users). */
  setRebalancePending(fn: () => number): void {
    this.#rebalancePending = fn
  }

  /** Read the requests waiting for a connection, by upstream, at scrape time; e.g. `() => forwarder.queued()`. */
  setUpstreamQueued(fn: () => Iterable<[string, number]>): void {
    this.#queued = fn
  }

  /** Read the established WebSocket count at scrape time (instead of wsOpened/wsClosed); e.g. `() => upgrades.established`. */
  setWebSocketCount(fn: () => number): void {
    const gauge = this.#websockets as unknown as { collect?: () => void }
    gauge.collect = () => this.#websockets.set(fn())
  }

  wsOpened(): void {
    this.#websockets.inc()
  }

  wsClosed(): void {
    this.#websockets.dec()
  }

  /** One finished client request spoke `protocol` (http/1.1, h2, websocket). O(1). Example: `metrics.clientProtocol('h2')`. */
  clientProtocol(protocol: ClientProtocol): void {
    this.#protocolCounts[CLIENT_PROTOCOLS.indexOf(protocol)]!++
  }

  /** A configuration reload was applied (true) or rejected (false): counted, and the last reload's gauges set (its time by the clock). */
  configReload(ok: boolean): void {
    this.#reloads.inc({ result: ok ? 'ok' : 'failed' })
    this.#reloadOk.set(ok ? 1 : 0)
    if (ok) this.#reloadAt.set(this.#clock.now() / 1000)
  }

  /** Where `tether_discovery_up` comes from, read at each scrape; e.g. `() => discovery.statuses()`. */
  setDiscoveryStatus(fn: () => readonly DiscoveryStatus[]): void {
    this.#discoveryStatus = fn
  }

  /** A discovery source failed (unreachable, failing, empty answer). */
  discoveryError(source: string): void {
    this.#discoveryErrors.inc({ source })
  }

  /** Redis node `node` lost its keys (see KeyspaceWatch). */
  redisKeyspaceLost(node: string): void {
    this.#keyspaceLosses.inc({ node })
    // a node removed already (a check that raced the topology change): shown for the grace from this count
    if (this.#removedNodes.has(node)) this.#nodeGoesLater(node)
  }

  /** `n` affinity bindings were written back to Redis after a loss. */
  affinityWrittenBack(n: number): void {
    this.#writtenBack.inc(n)
  }

  /**
   * Where the affinity metrics come from, read once per scrape; e.g. `() => affinityTable`.
   * Replacing the source (a new table) keeps the exposed totals monotonic.
   */
  setAffinityStats(fn: (() => AffinityStats) | null): void {
    this.#affinityStats = fn
  }

  #affinityDelta(key: 'evictions' | 'expirations'): number {
    const now = this.#affinityNow
    if (now === null) return 0
    const current = now[key]
    const last = this.#affinitySeen[key]
    this.#affinitySeen[key] = current
    return current >= last ? current - last : current
  }

  #publishRequests(counter: Counter<string>): void {
    counter.reset()
    for (const [upstream, counts] of this.#requestCounts) {
      for (let i = 0; i < COUNT_SLOTS; i++) {
        const n = counts[i]!
        if (n === 0) continue
        counter.inc({ upstream, method: METHODS[Math.floor(i / STATUS_SLOTS)]!, status_class: STATUS_CLASSES[i % STATUS_SLOTS]! }, n)
      }
    }
  }

  /** Removed Redis node `node`'s loss series goes once the grace from now is over (see redisNodeRemoved). */
  #nodeGoesLater(node: string): void {
    this.#removedNodes.delete(node)
    this.#removedNodes.set(node, monotonicNow(this.#clock) + REMOVED_SERIES_GRACE_MS)
    this.#purgeRemoved()
  }

  /** Drops the series of the removed upstreams whose grace is over and that have nothing in flight, and of removed Redis nodes past theirs. */
  #purgeRemoved(): void {
    const now = monotonicNow(this.#clock)
    for (const [node, until] of this.#removedNodes) {
      if (until > now) break // the rest end later
      this.#removedNodes.delete(node)
      this.#keyspaceLosses.remove({ node })
    }
    for (const [id, until] of this.#removed) {
      if (until > now) break // the rest end later
      if ((this.#inFlight.get(id) ?? 0) > 0) continue // its last answer counts again
      this.#removed.delete(id)
      this.#purged.set(id, true)
      this.#inFlight.delete(id)
      this.#requestCounts.delete(id)
      this.#upstreamLabels.delete(id)
      this.#retries.remove({ upstream: id })
      for (const reason of ['dead', 'drain', 'rebalance', 'spill', 'admin', 'restart'] satisfies MoveReason[]) this.#failovers.remove({ from: id, reason })
    }
  }

  /**
   * `id` was just counted: when health does not list it (removed, its series perhaps purged
   * already), it is dropped as a removed upstream's once the grace from this count is over.
   * Otherwise a late failover or retry re-created it for good: one series per deleted pod,
   * every rollout.
   */
  #dropUnlessCurrent(id: string): void {
    if (!this.#upstreams.has(id)) this.#keepForGrace(id)
  }

  /**
   * The series of removed upstream `id` stay for the grace from now, then go; those whose grace
   * is over go now (so churn of discovered pods is bounded without scrapes as well).
   */
  #keepForGrace(id: string): void {
    this.#removed.delete(id)
    this.#removed.set(id, monotonicNow(this.#clock) + REMOVED_SERIES_GRACE_MS)
    this.#purgeRemoved()
  }

  #labelsOf(upstream: string): { upstream: string } {
    let labels = this.#upstreamLabels.get(upstream)
    if (labels === undefined) {
      labels = { upstream }
      this.#upstreamLabels.set(upstream, labels)
    }
    return labels
  }

  #setState(id: string, to: HealthState): void {
    this.#removed.delete(id)
    this.#purged.delete(id)
    this.#upstreams.add(id)
    // all five each time (O(1)): right even if the subscription missed earlier transitions
    for (const state of HEALTH_STATES) this.#state.set({ upstream: id, state }, state === to ? 1 : 0)
    if (!this.#inFlight.has(id)) this.#inFlight.set(id, 0)
  }

  #removeUpstream(id: string): void {
    if (!this.#upstreams.delete(id)) return
    for (const state of HEALTH_STATES) this.#state.remove({ upstream: id, state })
    this.#keepForGrace(id)
  }
}

/**
 * How a metric is combined over workers (`workers` > 1): summed, but for the views every worker
 * holds whole (the upstream state, the affinity table each worker keeps complete, health of
 * Redis and discovery), which are taken from one worker or as the worst.
 */
const AGGREGATORS: Partial<Record<MetricName, 'first' | 'max' | 'min'>> = {
  tether_upstream_state: 'first',
  tether_affinity_entries: 'max',
  tether_affinity_evictions_total: 'max',
  tether_affinity_expirations_total: 'max',
  tether_rebalance_pending_users: 'max',
  tether_redis_up: 'min',
  tether_redis_node_up: 'min',
  tether_redis_node_full_state: 'max',
  tether_redis_node_writes_refused_state: 'max',
  // every worker watches the same Redis and sees the same loss (each writes back its own bindings: summed)
  tether_redis_keyspace_losses_total: 'max',
  tether_discovery_up: 'min',
}

function config(name: MetricName): { name: string; help: string; labelNames: string[]; aggregator?: 'first' | 'max' | 'min' } {
  const doc: MetricDoc = METRIC_DOCS.find((d) => d.name === name)!
  const aggregator = AGGREGATORS[name]
  return { name: doc.name, help: doc.help, labelNames: [...doc.labels], ...(aggregator === undefined ? {} : { aggregator }) }
}

/** How many purged upstream ids a Metrics remembers to drop a late request's series again. */
const PURGED_REMEMBERED = 4096

function methodIndex(method: string | undefined): number {
  switch (method) {
    case 'GET': return 0
    case 'HEAD': return 1
    case 'POST': return 2
    case 'PUT': return 3
    case 'PATCH': return 4
    case 'DELETE': return 5
    case 'OPTIONS': return 6
    default: return 7
  }
}

function statusIndex(status: number | null): number {
  if (status === null || !(status >= 100 && status < 600)) return 5
  return Math.floor(status / 100) - 1
}

/**
 * The request duration histogram, kept in the upstreams' count columns (no label hashing or
 * allocation per request, unlike prom-client's Histogram.observe) and exposed in the exact
 * shape a prom-client Histogram gives its registry (cumulative `_bucket` series with `le`, then
 * `+Inf`, `_sum` and `_count` per upstream), so rendering and the workers' aggregation (summed)
 * treat it as one. Example: `registry.registerMetric(new ColumnHistogram(config(name), () => columns))`.
 */
class ColumnHistogram {
  readonly name: string
  readonly help: string
  readonly type = 'histogram'
  readonly aggregator = 'sum'
  readonly #columns: () => ReadonlyMap<string, Float64Array>

  constructor(c: { name: string; help: string }, columns: () => ReadonlyMap<string, Float64Array>) {
    this.name = c.name
    this.help = c.help
    this.#columns = columns
  }

  async get(): Promise<{ name: string; help: string; type: string; aggregator: string; values: { labels: Record<string, string | number>; value: number; metricName: string }[] }> {
    const values: { labels: Record<string, string | number>; value: number; metricName: string }[] = []
    const bucket = `${this.name}_bucket`
    for (const [upstream, column] of this.#columns()) {
      const count = column[SUM_SLOT + 1]!
      if (count === 0) continue
      let cumulative = 0
      for (let b = 0; b < REQUEST_BUCKETS.length; b++) {
        cumulative += column[COUNT_SLOTS + b]!
        values.push({ labels: { le: REQUEST_BUCKETS[b]!, upstream }, value: cumulative, metricName: bucket })
      }
      values.push({ labels: { le: '+Inf', upstream }, value: count, metricName: bucket })
      values.push({ labels: { upstream }, value: column[SUM_SLOT]!, metricName: `${this.name}_sum` })
      values.push({ labels: { upstream }, value: count, metricName: `${this.name}_count` })
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values }
  }

  /** The series of {@link get} in the workers' compact form, written from the columns (metrics-wire.ts; each key as the exposition writes it). */
  wire(w: WireWriter): void {
    const keys: string[] = []
    const values: number[] = []
    const owners: number[] = []
    const bounds = [...REQUEST_BUCKETS.map((le) => `_bucket{le="${le}",upstream="`), '_bucket{le="+Inf",upstream="']
    for (const [upstream, column] of this.#columns()) {
      const count = column[SUM_SLOT + 1]!
      if (count === 0) continue
      const owner = w.upstream(upstream)
      const id = labelValue(upstream)
      let cumulative = 0
      for (let b = 0; b < REQUEST_BUCKETS.length; b++) {
        cumulative += column[COUNT_SLOTS + b]!
        keys.push(`${bounds[b]!}${id}"}`)
        values.push(cumulative)
      }
      keys.push(`${bounds[REQUEST_BUCKETS.length]!}${id}"}`, `_sum{upstream="${id}"}`, `_count{upstream="${id}"}`)
      values.push(count, column[SUM_SLOT]!, count)
      for (let b = 0; b < REQUEST_BUCKETS.length + 3; b++) owners.push(owner)
    }
    w.addKeys({ name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, keys, values, ...(owners.length === 0 ? {} : { owners }) })
  }

  /** Nothing to reset: the columns belong to Metrics (prom-client's Registry.resetMetrics calls this). */
  reset(): void {}
}
