// The metrics module as a specification: what each API call shows in the exposition text,
// bounded labels, health state series, lazily collected affinity numbers, per-instance
// registries and the naming rule. Parses render() output; nothing listens, nothing sleeps.
import t from 'tap'
import { METHODS, METRIC_DOCS, Metrics, REMOVED_SERIES_GRACE_MS, STATUS_CLASSES, aggregateMetrics, type AffinityStats } from '../src/observability/metrics.js'
import { FakeClock } from './fixtures/clock.js'

interface Sample { name: string; labels: Record<string, string>; value: number }

/** A small parser for the Prometheus text format: one Sample per `name{labels} value` line. */
function parse(text: string): Sample[] {
  const samples: Sample[] = []
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (!m) throw new Error(`unparsable exposition line: ${line}`)
    const labels: Record<string, string> = {}
    for (const [, k, v] of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[k!] = v!.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c))
    samples.push({ name: m[1]!, labels, value: Number(m[3]) })
  }
  return samples
}

/** The samples of `name` whose labels include `labels`. */
function find(samples: Sample[], name: string, labels: Record<string, string> = {}): Sample[] {
  return samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
}

/** The value of the one sample of `name` with exactly `labels`; undefined when absent. */
function value(samples: Sample[], name: string, labels: Record<string, string> = {}): number | undefined {
  const hits = samples.filter((s) => s.name === name && sameLabels(s.labels, labels))
  if (hits.length > 1) throw new Error(`${hits.length} samples of ${name} ${JSON.stringify(labels)}`)
  return hits[0]?.value
}

function sameLabels(a: Record<string, string>, b: Record<string, string>): boolean {
  const ka = Object.keys(a)
  return ka.length === Object.keys(b).length && ka.every((k) => a[k] === b[k])
}

async function scrape(m: Metrics): Promise<Sample[]> {
  return parse(await m.render())
}

const light = (clock?: FakeClock) => new Metrics({ defaultMetrics: false, ...(clock === undefined ? {} : { clock }) })

t.test('every metric name follows tether_<subsystem>_<name>_<unit> and is documented once', async (t) => {
  // `successful`: a 0/1 gauge named as Prometheus names its own (prometheus_config_last_reload_successful)
  const rule = /^tether_[a-z_]+_(total|seconds|bytes|entries|connections|users|up|state|in_flight|successful|requests)$/
  const names = METRIC_DOCS.map((d) => d.name)
  t.same(new Set(names).size, names.length, 'no name twice')
  for (const d of METRIC_DOCS) {
    t.match(d.name, rule, d.name)
    t.ok(d.help.length > 10, `${d.name} has help`)
    t.equal(d.name.endsWith('_total'), d.type === 'counter', `${d.name}: _total exactly for counters`)
  }
  const text = await light().render()
  const declared = [...text.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((m) => [m[1], m[2]])
  t.same(declared.filter(([n]) => n!.startsWith('tether_')).sort(), METRIC_DOCS.map((d) => [d.name, d.type]).sort(), 'exposed tether_ metrics are exactly METRIC_DOCS')
  for (const d of METRIC_DOCS) t.ok(text.includes(`# HELP ${d.name} ${d.help}\n`), `${d.name} exposes its help`)
})

t.test('default Node process metrics keep their standard names', async (t) => {
  const m = new Metrics()
  const text = await m.render()
  t.match(text, /^process_cpu_seconds_total \d/m)
  t.match(text, /^process_resident_memory_bytes \d/m)
  t.match(text, /^nodejs_heap_size_used_bytes \d/m)
  t.match(text, /^nodejs_eventloop_lag_seconds \d/m)
  t.notMatch(text, /^tether_process_/m)
  t.match(m.contentType, /^text\/plain; version=0\.0\.4/)
})

t.test('observeRequest counts by upstream, bounded method and status class', async (t) => {
  const m = light()
  m.observeRequest('app-0', 'GET', 200, 0.004)
  m.observeRequest('app-0', 'GET', 204, 0.02)
  m.observeRequest('app-0', 'PROPFIND', 207, 0.02)
  m.observeRequest('app-0', undefined, 301, 0.02)
  m.observeRequest('app-1', 'POST', 502, 2)
  m.observeRequest(null, 'DELETE', 503, 0.0001)
  m.observeRequest('app-1', 'PUT', 0, 0.5)
  m.observeRequest('app-1', 'PATCH', null, 0.5)
  m.observeRequest('app-1', 'HEAD', 99, 0.5)
  const s = await scrape(m)
  const req = 'tether_http_requests_total'
  t.equal(value(s, req, { upstream: 'app-0', method: 'GET', status_class: '2xx' }), 2)
  t.equal(value(s, req, { upstream: 'app-0', method: 'OTHER', status_class: '2xx' }), 1, 'unknown method -> OTHER')
  t.equal(value(s, req, { upstream: 'app-0', method: 'OTHER', status_class: '3xx' }), 1, 'missing method -> OTHER')
  t.equal(value(s, req, { upstream: 'app-1', method: 'POST', status_class: '5xx' }), 1)
  t.equal(value(s, req, { upstream: 'none', method: 'DELETE', status_class: '5xx' }), 1, 'no upstream -> none')
  t.equal(value(s, req, { upstream: 'app-1', method: 'PUT', status_class: 'none' }), 1, 'status 0 -> none')
  t.equal(value(s, req, { upstream: 'app-1', method: 'PATCH', status_class: 'none' }), 1, 'status null -> none')
  t.equal(value(s, req, { upstream: 'app-1', method: 'HEAD', status_class: 'none' }), 1, 'out of range -> none')
  t.equal(find(s, req).length, 8, 'only non-zero series')
  for (const x of find(s, req)) {
    t.ok((METHODS as readonly string[]).includes(x.labels.method!))
    t.ok((STATUS_CLASSES as readonly string[]).includes(x.labels.status_class!))
  }

  const h = 'tether_http_request_duration_seconds'
  t.equal(value(s, `${h}_count`, { upstream: 'app-0' }), 4)
  t.equal(value(s, `${h}_bucket`, { upstream: 'app-0', le: '0.005' }), 1)
  t.equal(value(s, `${h}_bucket`, { upstream: 'app-0', le: '0.025' }), 4)
  t.equal(value(s, `${h}_bucket`, { upstream: 'app-1', le: '1' }), 3)
  t.equal(value(s, `${h}_bucket`, { upstream: 'app-1', le: '30' }), 4)
  t.equal(value(s, `${h}_bucket`, { upstream: 'none', le: '0.001' }), 1)
  t.equal(value(s, `${h}_sum`, { upstream: 'app-1' }), 3.5)
  t.same(find(s, `${h}_bucket`, { upstream: 'app-0' }).map((x) => x.labels.le),
    ['0.001', '0.0025', '0.005', '0.01', '0.025', '0.05', '0.1', '0.25', '0.5', '1', '2.5', '5', '10', '30', '+Inf'], 'buckets 1 ms .. 30 s')

  m.observeRequest('app-0', 'GET', 200, 0.004)
  t.equal(value(await scrape(m), req, { upstream: 'app-0', method: 'GET', status_class: '2xx' }), 3, 'counts accumulate across scrapes')
})

t.test('a health transition sets exactly one state to 1; removal deletes the series', async (t) => {
  const clock = new FakeClock()
  const m = light(clock)
  const states = (s: Sample[], id: string) => Object.fromEntries(find(s, 'tether_upstream_state', { upstream: id }).map((x) => [x.labels.state, x.value]))
  m.onHealthTransition({ id: 'app-0', from: null, to: 'healthy' })
  m.onHealthTransition({ id: 'app-1', from: null, to: 'healthy' })
  t.same(states(await scrape(m), 'app-0'), { healthy: 1, unhealthy: 0, ejected: 0, draining: 0, disabled: 0 })

  m.onHealthTransition({ id: 'app-0', from: 'healthy', to: 'ejected' })
  let s = await scrape(m)
  t.same(states(s, 'app-0'), { healthy: 0, unhealthy: 0, ejected: 1, draining: 0, disabled: 0 })
  t.same(states(s, 'app-1'), { healthy: 1, unhealthy: 0, ejected: 0, draining: 0, disabled: 0 }, 'others untouched')
  t.equal(value(s, 'tether_upstream_in_flight', { upstream: 'app-0' }), 0, 'known upstreams show 0 in flight')

  m.onHealthTransition({ id: 'app-0', from: 'ejected', to: 'draining' })
  t.same(states(await scrape(m), 'app-0'), { healthy: 0, unhealthy: 0, ejected: 0, draining: 1, disabled: 0 })

  m.observeRequest('app-0', 'GET', 200, 0.01)
  m.retry('app-0')
  m.failover('app-0', 'drain')
  m.requestStarted('app-0')
  m.onHealthTransition({ id: 'app-0', from: 'draining', to: null })
  s = await scrape(m)
  t.same(states(s, 'app-0'), {}, 'state series removed at once')
  t.equal(value(s, 'tether_upstream_in_flight', { upstream: 'app-0' }), 1, 'traffic series stay while requests are in flight')
  t.equal(value(s, 'tether_http_requests_total', { upstream: 'app-0', method: 'GET', status_class: '2xx' }), 1)

  m.requestEnded('app-0')
  s = await scrape(m)
  t.equal(value(s, 'tether_failovers_total', { from: 'app-0', reason: 'drain' }), 1, 'the traffic series stay for the grace')
  t.equal(value(s, 'tether_retries_total', { upstream: 'app-0' }), 1)
  t.same(find(s, 'tether_upstream_in_flight', { upstream: 'app-0' }), [], 'but nothing is in flight any more')
  clock.advance(REMOVED_SERIES_GRACE_MS)
  s = await scrape(m)
  for (const name of ['tether_upstream_in_flight', 'tether_http_requests_total', 'tether_http_request_duration_seconds_count', 'tether_retries_total']) {
    t.same(find(s, name, { upstream: 'app-0' }), [], `${name} of the removed upstream dropped`)
  }
  t.same(find(s, 'tether_failovers_total', { from: 'app-0' }), [], 'failovers from it dropped')
  t.same(states(s, 'app-1'), { healthy: 1, unhealthy: 0, ejected: 0, draining: 0, disabled: 0 })
})

t.test('a failover or retry from an upstream already removed and purged is shown for the grace, then dropped, not kept forever', async (t) => {
  const clock = new FakeClock()
  const m = light(clock)
  m.onHealthTransition({ id: 'web-3', from: null, to: 'healthy' })
  m.onHealthTransition({ id: 'web-4', from: null, to: 'healthy' })
  m.failover('web-3', 'drain')
  m.retry('web-3')
  m.onHealthTransition({ id: 'web-3', from: 'healthy', to: null }) // its slice deleted, drain_timeout passed
  clock.advance(REMOVED_SERIES_GRACE_MS)
  let s = await scrape(m)
  t.same(find(s, 'tether_failovers_total', { from: 'web-3' }), [], 'purged with the upstream after the grace')

  // later: a user whose cookie still names web-3 is moved, a retry names it
  m.failover('web-3', 'dead')
  m.retry('web-3')
  m.failover('web-4', 'spill')
  s = await scrape(m)
  t.equal(value(s, 'tether_failovers_total', { from: 'web-3', reason: 'dead' }), 1, 'the late failover is scraped')
  t.equal(value(s, 'tether_retries_total', { upstream: 'web-3' }), 1, 'so is the late retry')
  clock.advance(REMOVED_SERIES_GRACE_MS)
  s = await scrape(m)
  t.same(find(s, 'tether_failovers_total', { from: 'web-3' }), [], 'the late failover does not bring web-3 back for good')
  t.same(find(s, 'tether_retries_total', { upstream: 'web-3' }), [], 'nor the late retry')
  t.equal(value(s, 'tether_failovers_total', { from: 'web-4', reason: 'spill' }), 1, 'a current upstream keeps its series')
  m.observeRequest('web-3', 'GET', 502, 0.01) // a late answer naming the purged upstream
  t.equal(value(await scrape(m), 'tether_http_requests_total', { upstream: 'web-3', method: 'GET', status_class: '5xx' }), 1, 'a late request is scraped')
  clock.advance(REMOVED_SERIES_GRACE_MS)
  t.same(find(await scrape(m), 'tether_http_requests_total', { upstream: 'web-3' }), [], 'then dropped')

  m.requestStarted('web-3')
  m.retry('web-3')
  clock.advance(REMOVED_SERIES_GRACE_MS)
  s = await scrape(m)
  t.equal(value(s, 'tether_retries_total', { upstream: 'web-3' }), 1, 'kept while a request to it is in flight, past the grace')
  m.requestEnded('web-3')
  t.same(find(await scrape(m), 'tether_retries_total', { upstream: 'web-3' }), [], 'then dropped')

  m.onHealthTransition({ id: 'web-3', from: null, to: 'healthy' }) // a StatefulSet pod back under its name
  m.failover('web-3', 'rebalance')
  s = await scrape(m)
  t.equal(value(s, 'tether_failovers_total', { from: 'web-3', reason: 'rebalance' }), 1, 'back in health: kept again')
  clock.advance(REMOVED_SERIES_GRACE_MS)
  t.equal(value(await scrape(m), 'tether_failovers_total', { from: 'web-3', reason: 'rebalance' }), 1)
})

t.test("the moves a removal causes are scraped before the removed upstream's series go, by every scraper within the grace; added again within the grace, it counts on", async (t) => {
  const clock = new FakeClock()
  const m = light(clock)
  for (const id of ['a', 'b']) m.onHealthTransition({ id, from: null, to: 'healthy' })
  m.failover('a', 'dead')
  m.onHealthTransition({ id: 'a', from: 'healthy', to: null }) // a reload deleted it
  m.failover('a', 'drain'); m.failover('a', 'drain') // its users move as they come back
  clock.advance(60_000)
  m.failover('a', 'drain')
  let s = await scrape(m)
  t.equal(value(s, 'tether_failovers_total', { from: 'a', reason: 'drain' }), 3, 'the scrape after the removal has the moves it caused')
  t.equal(value(s, 'tether_failovers_total', { from: 'a', reason: 'dead' }), 1, 'and the earlier ones')
  t.same(find(s, 'tether_upstream_state', { upstream: 'a' }), [], 'its state series went at once')
  clock.advance(REMOVED_SERIES_GRACE_MS - 1)
  t.equal(value(await scrape(m), 'tether_failovers_total', { from: 'a', reason: 'drain' }), 3, 'a second scraper within the grace of the last move sees them too')
  clock.advance(1)
  s = await scrape(m)
  t.same(find(s, 'tether_failovers_total', { from: 'a' }), [], 'gone once the grace from its last count is over')

  m.failover('b', 'drain')
  m.onHealthTransition({ id: 'b', from: 'healthy', to: null })
  m.failover('b', 'drain')
  clock.advance(REMOVED_SERIES_GRACE_MS / 2)
  t.equal(value(await scrape(m), 'tether_failovers_total', { from: 'b', reason: 'drain' }), 2)
  m.onHealthTransition({ id: 'b', from: null, to: 'healthy' }) // back under the same id within the grace
  m.failover('b', 'drain')
  clock.advance(REMOVED_SERIES_GRACE_MS)
  s = await scrape(m)
  t.equal(value(s, 'tether_failovers_total', { from: 'b', reason: 'drain' }), 3, 'its series counts on: not reset, not dropped, not doubled')
  t.equal(find(s, 'tether_failovers_total', { from: 'b' }).length, 1, 'one series')
  t.equal(value(s, 'tether_upstream_state', { upstream: 'b', state: 'healthy' }), 1)
})

t.test("the first answer of a removed upstream, ending after the grace its in-flight request held, is scraped before its series go", async (t) => {
  const clock = new FakeClock()
  const m = light(clock)
  m.onHealthTransition({ id: 'pod-1', from: null, to: 'healthy' })
  m.requestStarted('pod-1') // a long poll: pod-1's first request
  m.onHealthTransition({ id: 'pod-1', from: 'healthy', to: null }) // deleted while it is in flight
  clock.advance(REMOVED_SERIES_GRACE_MS + 60_000)
  t.equal(value(await scrape(m), 'tether_upstream_in_flight', { upstream: 'pod-1' }), 1, 'held past the grace while in flight')
  m.requestEnded('pod-1')
  m.observeRequest('pod-1', 'GET', 200, 360)
  t.equal(value(await scrape(m), 'tether_http_requests_total', { upstream: 'pod-1', method: 'GET', status_class: '2xx' }), 1, 'its answer is in the next scrape')
  clock.advance(REMOVED_SERIES_GRACE_MS - 1)
  t.equal(value(await scrape(m), 'tether_http_requests_total', { upstream: 'pod-1', method: 'GET', status_class: '2xx' }), 1, 'and in every scrape within the grace from that count')
  clock.advance(1)
  t.same(find(await scrape(m), 'tether_http_requests_total', { upstream: 'pod-1' }), [], 'then it goes')
})

t.test("churn of discovered pods keeps only the removed upstreams within the grace", async (t) => {
  const clock = new FakeClock()
  const m = light(clock)
  for (let i = 0; i < 1_000; i++) { // one pod replaced every second for 1,000 s
    const id = `pod-${i}`
    m.onHealthTransition({ id, from: null, to: 'healthy' })
    m.observeRequest(id, 'GET', 200, 0.01)
    m.onHealthTransition({ id, from: 'healthy', to: null })
    m.failover(id, 'drain')
    clock.advance(1_000)
  }
  const s = await scrape(m)
  const pods = new Set(find(s, 'tether_failovers_total').map((x) => x.labels.from))
  t.equal(pods.size, REMOVED_SERIES_GRACE_MS / 1_000 - 1, 'the pods removed less than 5 minutes ago, no more')
  t.ok(pods.has('pod-999') && pods.has('pod-701') && !pods.has('pod-700'))
  t.equal(new Set(find(s, 'tether_http_requests_total').map((x) => x.labels.upstream)).size, 299)
})

t.test('syncHealth seeds states from a snapshot and removes the missing', async (t) => {
  const m = light()
  m.onHealthTransition({ id: 'old', from: null, to: 'healthy' })
  m.syncHealth([{ id: 'app-0', state: 'disabled' }, { id: 'app-1', state: 'unhealthy' }])
  const s = await scrape(m)
  t.same(find(s, 'tether_upstream_state', { upstream: 'old' }), [])
  t.equal(value(s, 'tether_upstream_state', { upstream: 'app-0', state: 'disabled' }), 1)
  t.equal(value(s, 'tether_upstream_state', { upstream: 'app-1', state: 'unhealthy' }), 1)
  t.equal(find(s, 'tether_upstream_state').filter((x) => x.value === 1).length, 2)
})

t.test('in-flight requests go up and down per upstream', async (t) => {
  const m = light()
  m.requestStarted('app-0'); m.requestStarted('app-0'); m.requestStarted('app-1')
  let s = await scrape(m)
  t.equal(value(s, 'tether_upstream_in_flight', { upstream: 'app-0' }), 2)
  t.equal(value(s, 'tether_upstream_in_flight', { upstream: 'app-1' }), 1)
  m.requestEnded('app-0'); m.requestEnded('app-1'); m.requestEnded('app-1')
  s = await scrape(m)
  t.equal(value(s, 'tether_upstream_in_flight', { upstream: 'app-0' }), 1)
  t.equal(value(s, 'tether_upstream_in_flight', { upstream: 'app-1' }), undefined, 'never below 0; an unknown upstream at 0 disappears')
})

t.test('event counters, Redis, WebSocket and reload metrics', async (t) => {
  const m = light()
  for (const id of ['app-0', 'app-1', 'app-2']) m.onHealthTransition({ id, from: null, to: 'healthy' })
  m.failover('app-0', 'dead'); m.failover('app-0', 'dead'); m.failover('app-1', 'rebalance')
  m.retry('app-2')
  m.rehydration('delivered'); m.rehydration('no_state'); m.rehydration('delivered')
  m.checkpoint('stored'); m.checkpoint('too_large')
  m.redisUp(true)
  m.redisOp('get', 0.0003); m.redisOp('put', 0.002); m.redisOp('get', 0.5)
  m.wsOpened(); m.wsOpened(); m.wsOpened(); m.wsClosed()
  m.configReload(true); m.configReload(false); m.configReload(true)
  let s = await scrape(m)
  t.equal(value(s, 'tether_failovers_total', { from: 'app-0', reason: 'dead' }), 2)
  t.equal(value(s, 'tether_failovers_total', { from: 'app-1', reason: 'rebalance' }), 1)
  t.equal(value(s, 'tether_retries_total', { upstream: 'app-2' }), 1)
  t.equal(value(s, 'tether_rehydrations_total', { result: 'delivered' }), 2)
  t.equal(value(s, 'tether_rehydrations_total', { result: 'no_state' }), 1)
  t.equal(value(s, 'tether_checkpoints_total', { result: 'stored' }), 1)
  t.equal(value(s, 'tether_checkpoints_total', { result: 'too_large' }), 1)
  t.equal(value(s, 'tether_redis_up'), 1)
  t.equal(value(s, 'tether_redis_operation_duration_seconds_count', { op: 'get' }), 2)
  t.equal(value(s, 'tether_redis_operation_duration_seconds_bucket', { op: 'get', le: '0.0005' }), 1)
  t.equal(value(s, 'tether_redis_operation_duration_seconds_count', { op: 'put' }), 1)
  t.equal(value(s, 'tether_websocket_connections'), 2)
  t.equal(value(s, 'tether_config_reloads_total', { result: 'ok' }), 2)
  t.equal(value(s, 'tether_config_reloads_total', { result: 'failed' }), 1)
  m.redisUp(false)
  s = await scrape(m)
  t.equal(value(s, 'tether_redis_up'), 0)
})

t.test("a Redis node that left: its keyspace-loss series stays for the grace after the removal (or its last loss), then goes; one back within it counts on", async (t) => {
  const clock = new FakeClock()
  const m = light(clock)
  for (const node of ['10.0.0.1:6379', '10.0.0.2:6379', '10.0.0.3:6379']) m.redisNodeUp(node, true)
  m.redisKeyspaceLost('10.0.0.1:6379'); m.redisKeyspaceLost('10.0.0.2:6379'); m.redisKeyspaceLost('10.0.0.3:6379')
  m.redisNodeRemoved('10.0.0.1:6379') // a failover moved its slots away
  m.redisNodeRemoved('10.0.0.3:6379')
  let s = await scrape(m)
  t.same(find(s, 'tether_redis_node_up', { node: '10.0.0.1:6379' }), [], 'its up series goes at once')
  t.equal(value(s, 'tether_redis_keyspace_losses_total', { node: '10.0.0.1:6379' }), 1, 'its losses are still scraped within the grace')
  clock.advance(REMOVED_SERIES_GRACE_MS / 2)
  m.redisNodeUp('10.0.0.3:6379', true) // back (its slots moved back) within the grace: counts on
  m.redisKeyspaceLost('10.0.0.3:6379')
  clock.advance(REMOVED_SERIES_GRACE_MS / 2 - 1)
  s = await scrape(m)
  t.equal(value(s, 'tether_redis_keyspace_losses_total', { node: '10.0.0.1:6379' }), 1, 'not before the grace is over')
  clock.advance(1)
  s = await scrape(m)
  t.same(find(s, 'tether_redis_keyspace_losses_total', { node: '10.0.0.1:6379' }), [], 'gone once the grace after its removal is over')
  t.equal(value(s, 'tether_redis_keyspace_losses_total', { node: '10.0.0.2:6379' }), 1, 'a node still there keeps its series')
  t.equal(value(s, 'tether_redis_keyspace_losses_total', { node: '10.0.0.3:6379' }), 2, 'one back within the grace counts on')
  // a loss told for a node already removed (the check raced the topology refresh): shown for the grace from it, then gone
  m.redisNodeRemoved('10.0.0.2:6379')
  clock.advance(REMOVED_SERIES_GRACE_MS - 1)
  m.redisKeyspaceLost('10.0.0.2:6379')
  clock.advance(1)
  s = await scrape(m)
  t.equal(value(s, 'tether_redis_keyspace_losses_total', { node: '10.0.0.2:6379' }), 2, 'its last loss is scraped within the grace from it')
  clock.advance(REMOVED_SERIES_GRACE_MS)
  s = await scrape(m)
  t.same(find(s, 'tether_redis_keyspace_losses_total', { node: '10.0.0.2:6379' }), [], 'then it goes')
})

t.test('affinity stats are read at scrape time, totals stay monotonic', async (t) => {
  const m = light()
  let s = await scrape(m)
  t.equal(value(s, 'tether_affinity_entries'), 0, 'no source yet: 0')
  let reads = 0
  let stats: AffinityStats = { size: 10, evictions: 3, expirations: 5 }
  m.setAffinityStats(() => { reads++; return stats })
  t.equal(reads, 0, 'not polled')
  s = await scrape(m)
  t.equal(reads, 1, 'read once per scrape')
  t.equal(value(s, 'tether_affinity_entries'), 10)
  t.equal(value(s, 'tether_affinity_evictions_total'), 3)
  t.equal(value(s, 'tether_affinity_expirations_total'), 5)

  stats = { size: 7, evictions: 4, expirations: 9 }
  s = await scrape(m)
  t.equal(value(s, 'tether_affinity_entries'), 7)
  t.equal(value(s, 'tether_affinity_evictions_total'), 4)
  t.equal(value(s, 'tether_affinity_expirations_total'), 9)

  stats = { size: 1, evictions: 1, expirations: 0 } // a new table counting from 0 again
  s = await scrape(m)
  t.equal(value(s, 'tether_affinity_evictions_total'), 5, 'a source that went back counts on')
  t.equal(value(s, 'tether_affinity_expirations_total'), 9)
})

t.test('two instances are independent', async (t) => {
  const a = new Metrics()
  const b = new Metrics()
  a.observeRequest('app-0', 'GET', 200, 0.01)
  a.wsOpened()
  b.configReload(false)
  const sa = await scrape(a)
  const sb = await scrape(b)
  t.equal(value(sa, 'tether_http_requests_total', { upstream: 'app-0', method: 'GET', status_class: '2xx' }), 1)
  t.same(find(sb, 'tether_http_requests_total'), [])
  t.equal(value(sa, 'tether_websocket_connections'), 1)
  t.equal(value(sb, 'tether_websocket_connections'), 0)
  t.same(find(sa, 'tether_config_reloads_total'), [])
  t.equal(value(sb, 'tether_config_reloads_total', { result: 'failed' }), 1)
  t.ok(find(sb, 'process_cpu_seconds_total').length === 1, 'each has its own default metrics')
})

t.test('durations on a bucket bound, past the last bound or not finite; client protocols; both summed over workers', async (t) => {
  const a = light()
  const b = light()
  a.observeRequest('app-0', 'GET', 200, 0.005) // exactly on a bound: counted in it (le = less or equal)
  a.observeRequest('app-0', 'GET', 200, 31) // past 30 s: only +Inf
  a.observeRequest('app-0', 'GET', 200, Number.NaN) // not a duration: counted as a request only
  b.observeRequest('app-0', 'GET', 200, 0.004)
  a.clientProtocol('http/1.1')
  a.clientProtocol('h2')
  b.clientProtocol('http/1.1')
  b.clientProtocol('websocket')
  const h = 'tether_http_request_duration_seconds'
  const sa = await scrape(a)
  t.equal(value(sa, `${h}_bucket`, { upstream: 'app-0', le: '0.0025' }), 0)
  t.equal(value(sa, `${h}_bucket`, { upstream: 'app-0', le: '0.005' }), 1)
  t.equal(value(sa, `${h}_bucket`, { upstream: 'app-0', le: '30' }), 1)
  t.equal(value(sa, `${h}_bucket`, { upstream: 'app-0', le: '+Inf' }), 2)
  t.equal(value(sa, `${h}_count`, { upstream: 'app-0' }), 2)
  t.equal(value(sa, `${h}_sum`, { upstream: 'app-0' }), 31.005)
  t.equal(value(sa, 'tether_http_requests_total', { upstream: 'app-0', method: 'GET', status_class: '2xx' }), 3)
  t.equal(value(sa, 'tether_client_requests_total', { protocol: 'h2' }), 1)
  t.same(find(sa, 'tether_client_requests_total', { protocol: 'http/1.0' }), [], 'only protocols seen')
  t.match(await a.render(), /^tether_http_request_duration_seconds_bucket\{le="0.005",upstream="app-0"\} 1$/m, 'the exposition line as prom-client writes it')

  const all = parse((await aggregateMetrics([await a.snapshot(), await b.snapshot()])).text)
  t.equal(value(all, `${h}_bucket`, { upstream: 'app-0', le: '0.005' }), 2)
  t.equal(value(all, `${h}_count`, { upstream: 'app-0' }), 3)
  t.equal(value(all, 'tether_client_requests_total', { protocol: 'http/1.1' }), 2)
  t.equal(value(all, 'tether_client_requests_total', { protocol: 'websocket' }), 1)
})

t.test('a Redis node that joins (a Cluster failover or scale-out) has its writes-refused and full series at 0 from its first status', async (t) => {
  const m = light()
  m.redisNodeUp('10.0.0.4:6379', true)
  let s = await scrape(m)
  t.equal(value(s, 'tether_redis_node_full_state', { node: '10.0.0.4:6379' }), 0)
  for (const reason of ['oom', 'misconf', 'noreplicas']) t.equal(value(s, 'tether_redis_node_writes_refused_state', { node: '10.0.0.4:6379', reason }), 0, reason)
  m.redisNodeWritesRefused('10.0.0.4:6379', 'misconf')
  m.redisNodeUp('10.0.0.4:6379', false) // a status change later does not reset them
  s = await scrape(m)
  t.equal(value(s, 'tether_redis_node_writes_refused_state', { node: '10.0.0.4:6379', reason: 'misconf' }), 1)
  m.redisNodeRemoved('10.0.0.4:6379')
  m.redisNodeUp('10.0.0.4:6379', true) // back: at 0 again
  s = await scrape(m)
  t.equal(value(s, 'tether_redis_node_writes_refused_state', { node: '10.0.0.4:6379', reason: 'misconf' }), 0)
})
