// The primary's /metrics with workers, on the compact worker -> primary format: the text is the
// one the ledger and prom-client's AggregatorRegistry wrote before (a reference computation run
// alongside on the same counts), and a big scrape yields the primary's event loop.
import t from 'tap'
import { AggregatorRegistry, Counter, Gauge, Histogram, Registry } from 'prom-client'
import { MetricsLedger } from '../src/workers/metrics-ledger.js'
import { aggregateMetrics } from '../src/observability/metrics.js'
import { toWire, type MetricData } from '../src/observability/metrics-wire.js'
import { ReferenceLedger } from './fixtures/metrics-ledger-reference.js'
import { mulberry32 } from './fixtures/random.js'

/** One worker's metrics: real prom-client metrics of every kind and aggregator Tether uses. */
function worker() {
  const registers = [new Registry()]
  return {
    registry: registers[0]!,
    requests: new Counter({ name: 'tether_http_requests_total', help: 'Requests "answered"\\ by upstream\nand method.', labelNames: ['upstream', 'method', 'status_class'], registers }),
    failovers: new Counter({ name: 'tether_failovers_total', help: 'f', labelNames: ['from', 'reason'], registers }),
    state: new Gauge({ name: 'tether_upstream_state', help: 's', labelNames: ['upstream', 'state'], aggregator: 'first', registers }),
    inFlight: new Gauge({ name: 'tether_upstream_in_flight', help: 'i', labelNames: ['upstream'], registers }),
    redisUp: new Gauge({ name: 'tether_redis_up', help: 'r', aggregator: 'min', registers }),
    evictions: new Counter({ name: 'tether_affinity_evictions_total', help: 'e', aggregator: 'max', registers }),
    duration: new Histogram({ name: 'tether_http_request_duration_seconds', help: 'd', labelNames: ['upstream'], buckets: [0.005, 0.1, 1], registers }),
    reloads: new Counter({ name: 'tether_config_reloads_total', help: 'c', labelNames: ['result'], registers }),
    plain: new Counter({ name: 'tether_plain_total', help: 'p', registers }),
  }
}
type Worker = ReturnType<typeof worker>

/** What the worker sends, through JSON as node:cluster carries it: prom-client's JSON (the reference) and the compact form. */
async function answer(w: Worker): Promise<{ json: unknown; wire: unknown }> {
  const data = await w.registry.getMetricsAsJSON()
  return { json: JSON.parse(JSON.stringify(data)), wire: JSON.parse(JSON.stringify(toWire(data as unknown as MetricData[]))) }
}

t.test('the aggregated text equals the reference (old ledger and AggregatorRegistry) through restarts, late answers and removed upstreams', async (t) => {
  const random = mulberry32(53)
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)]!
  let upstreams = ['a', 'b', 'odd"id\\x\ny', 'none-like', 'u-4']
  const count = (w: Worker): void => {
    for (let i = 0; i < 20; i++) {
      const u = pick(upstreams)
      w.requests.inc({ upstream: u, method: pick(['GET', 'POST']), status_class: pick(['2xx', '5xx']) }, Math.ceil(random() * 3))
      w.duration.observe({ upstream: u }, random() * 1.5 + 1e-9 * random()) // sums in floating point
      if (random() < 0.3) w.failovers.inc({ from: u, reason: pick(['dead', 'drain']) })
      w.inFlight.set({ upstream: u }, Math.floor(random() * 4))
      if (random() < 0.2) w.inFlight.set({ upstream: u }, Number.NaN) // JSON carries it as null
    }
    w.requests.inc({ upstream: 'none', method: 'OTHER', status_class: 'none' })
    for (const u of upstreams) for (const s of ['healthy', 'draining']) w.state.set({ upstream: u, state: s }, s === 'healthy' ? 1 : 0)
    w.redisUp.set(random() < 0.8 ? 1 : 0)
    w.evictions.inc(Math.floor(random() * 5))
    if (random() < 0.2) w.plain.inc()
  }
  const dropUpstream = (w: Worker, u: string): void => {
    for (const m of [w.requests, w.failovers, w.state, w.inFlight, w.duration] as const) {
      const data = (m as unknown as { hashMap: Record<string, { labels: Record<string, string> }> }).hashMap
      for (const v of Object.values(data)) if (v.labels['upstream'] === u || v.labels['from'] === u) (m as Counter).remove(v.labels)
    }
  }
  const grace = 300_000
  const reference = new ReferenceLedger(grace)
  const ledger = new MetricsLedger(grace)
  const workers = new Map<number, Worker>([[1, worker()], [2, worker()]])
  let next = 3
  let now = 0
  const scrape = async (what: string, late: ReadonlySet<number> = new Set(), goneDuring: number | null = null): Promise<string> => {
    const answers = new Map<number, { json: unknown; wire: unknown }>()
    for (const [id, w] of workers) if (!late.has(id)) answers.set(id, await answer(w))
    for (const [id, a] of answers) {
      reference.seen(id, a.json)
      ledger.seen(id, a.wire)
    }
    if (goneDuring !== null) {
      reference.gone(goneDuring, now)
      ledger.gone(goneDuring, now)
      workers.delete(goneDuring)
    }
    const ids = [...answers.keys(), ...late]
    const expected = await AggregatorRegistry.aggregate(reference.snapshots(ids.map((id) => [id, answers.get(id)?.json ?? null]), now) as Parameters<typeof AggregatorRegistry.aggregate>[0]).metrics()
    const got = (await aggregateMetrics(ledger.snapshots(ids.map((id) => [id, answers.get(id)?.wire ?? null]), now))).text
    t.equal(got, expected, what)
    return got
  }
  const restart = (id: number): void => {
    reference.gone(id, now)
    ledger.gone(id, now)
    workers.delete(id)
    workers.set(next++, worker())
  }
  for (let round = 0; round < 6; round++) {
    for (const w of workers.values()) count(w)
    const text = await scrape(`round ${round}: both live`)
    if (round === 0) {
      t.match(text, /^tether_http_requests_total\{upstream="odd\\"id\\\\x\\ny",method="(GET|POST)",status_class="(2|5)xx"\} \d+$/m, 'label values escaped as prom-client escapes them')
      t.match(text, /^# HELP tether_http_requests_total Requests "answered"\\\\ by upstream\\nand method\.$/m)
      t.match(text, /^tether_http_request_duration_seconds_bucket\{le="\+Inf",upstream="a"\} \d+$/m)
    }
    reference.reloaded(round % 2 === 0)
    ledger.reloaded(round % 2 === 0)
    for (const w of workers.values()) count(w)
    const [first] = workers.keys()
    await scrape(`round ${round}: worker ${first!} did not answer in time (its last answer counts)`, new Set([first!]))
    restart([...workers.keys()].at(-1)!) // a crash or a roll: its replacement counts from 0, its counts stay
    for (const w of workers.values()) count(w)
    await scrape(`round ${round}: after a restart`)
    // a removed upstream: one worker drops its series (its grace over), the other still shows them
    const removed = upstreams.at(-1)!
    upstreams = upstreams.slice(0, -1).concat(`pod-${round}`)
    dropUpstream(workers.get(first!)!, removed)
    await scrape(`round ${round}: ${removed} dropped by one worker`)
    for (const [id, w] of workers) if (id !== first) w.requests.inc({ upstream: removed, method: 'GET', status_class: '2xx' }, 2) // a late answer
    await scrape(`round ${round}: ${removed} counted on by another`)
    for (const w of workers.values()) dropUpstream(w, removed)
    for (const w of workers.values()) count(w)
    await scrape(`round ${round}: ${removed} dropped by every worker`)
    // a worker that exits during the scrape (it answered): counted once
    workers.set(next++, worker())
    for (const w of workers.values()) count(w)
    await scrape(`round ${round}: one exits during the scrape`, new Set(), [...workers.keys()].at(-1)!)
    now += round % 2 === 0 ? 1_000 : grace + 1 // a gone worker's counts of removed upstreams go after the grace
    await scrape(`round ${round}: later`)
  }
})

t.test('a scrape of many series lets the primary serve between its parts: timers run before it ends', async (t) => {
  const w = worker()
  for (let i = 0; i < 6_000; i++) w.duration.observe({ upstream: `app-${i}` }, 0.01) // 36,000 series
  const a = await answer(w)
  const b = await answer(w)
  const ledger = new MetricsLedger(300_000)
  ledger.seen(1, a.wire)
  ledger.seen(2, b.wire)
  let ran = false
  setImmediate(() => (ran = true))
  const text = (await aggregateMetrics(ledger.snapshots([[1, a.wire], [2, b.wire]], 0))).text
  t.ok(ran, 'the event loop ran during the aggregation (an admin connection is accepted, a worker supervised)')
  t.match(text, /^tether_http_request_duration_seconds_count\{upstream="app-5999"\} 2$/m)
})

t.test('one worker\'s snapshot aggregated alone is its own /metrics text, byte for byte (every Tether metric, escaping, NaN)', async (t) => {
  const { Metrics } = await import('../src/observability/metrics.js')
  const m = new Metrics({ defaultMetrics: false })
  const ids = ['app-0', 'app-1', 'odd"id\\x\ny']
  m.syncHealth(ids.map((id, i) => ({ id, state: i === 1 ? 'draining' : 'healthy' })))
  for (const [i, id] of ids.entries()) {
    m.observeRequest(id, i === 0 ? 'GET' : 'BREW', 200 + i * 150, 0.003 * (i + 1))
    m.observeRequest(id, 'POST', null, Number.NaN)
    m.failover(id, 'drain')
    m.retry(id)
  }
  m.observeRequest(null, 'GET', 503, 0.001)
  m.requestStarted('app-1')
  m.redisUp(true)
  m.redisNodeUp('127.0.0.1:6379', false)
  m.redisOp('get', 0.002)
  m.wsOpened()
  m.clientProtocol('h2')
  m.configReload(true)
  m.discoveryError('dns')
  m.setAffinityStats(() => ({ size: 3, evictions: 1, expirations: 2 }))
  const text = await m.render()
  m.setAffinityStats(() => ({ size: 3, evictions: 1, expirations: 2 })) // the same counts again: no increase at the next read
  const alone = (await aggregateMetrics([JSON.parse(JSON.stringify(await m.snapshot()))])).text
  t.equal(alone, text)
  t.match(alone, /^tether_http_request_duration_seconds_bucket\{le="0.005",upstream="app-0"\} 1$/m)
})

t.test('a worker left out of a scrape and back with the same series: its sums are kept from falling again, as the reference keeps them', async (t) => {
  /** x null: no series of upstream x (worker 2 never answered for it). */
  const json = (x: number | null, y: number) => [
    { name: 'tether_retries_total', help: 'r', type: 'counter', aggregator: 'sum', values: [...x === null ? [] : [{ value: x, labels: { upstream: 'x' } }], { value: y, labels: { upstream: 'y' } }] },
  ]
  const wire = (x: number | null, y: number): unknown => JSON.parse(JSON.stringify(toWire(json(x, y))))
  const reference = new ReferenceLedger(300_000)
  const ledger = new MetricsLedger(300_000)
  const scrape = async (live: readonly (readonly [number, number | null, number])[]): Promise<string> => {
    const answers = live.map(([id, x, y]) => [id, json(x, y), wire(x, y)] as const)
    for (const [id, j, w] of answers) {
      reference.seen(id, j)
      ledger.seen(id, w)
    }
    const expected = await AggregatorRegistry.aggregate(reference.snapshots(answers.map(([id, j]) => [id, j]), 0) as Parameters<typeof AggregatorRegistry.aggregate>[0]).metrics()
    const got = (await aggregateMetrics(ledger.snapshots(answers.map(([id, , w]) => [id, w]), 0))).text
    t.equal(got, expected)
    return got
  }
  await scrape([[1, 5, 1], [2, null, 1]])
  await scrape([[2, null, 1]]) // worker 1 not asked (no admin listener yet, disconnected): x forgotten
  await scrape([[1, 5, 1], [2, null, 1]]) // back with the same series as its last answer
  t.match(await scrape([[1, 3, 1], [2, null, 1]]), /^tether_retries_total\{upstream="x"\} 5$/m, 'a fall is lifted')
})

t.test("a worker answers a primary of an older build (no form asked) with prom-client's JSON, which that primary's ledger reads; a new primary gets the compact form", async (t) => {
  const { Metrics } = await import('../src/observability/metrics.js')
  const { WorkerLink } = await import('../src/workers/worker-link.js')
  const { SessionTable } = await import('../src/affinity/session-table.js')
  const { SessionRecords } = await import('../src/affinity/session-records.js')
  const m = new Metrics({ defaultMetrics: false })
  m.syncHealth([{ id: 'app-0', state: 'healthy' }])
  m.observeRequest('app-0', 'GET', 200, 0.003)
  m.observeRequest('app-0', 'GET', 200, 0.004)
  const text = await m.render()
  const sent: { tether: string; call?: number; op?: string; value?: unknown }[] = []
  let deliver: (msg: unknown) => void = () => undefined
  // through JSON, as node:cluster carries it
  const link = new WorkerLink({ send: (msg) => void sent.push(JSON.parse(JSON.stringify(msg))), onMessage: (fn) => { deliver = fn } })
  const sessions = new SessionTable({ maxEntries: 10, idleTimeout: 60_000, absoluteTimeout: null })
  const records = new SessionRecords({ maxEntries: 10, idleTimeout: 60_000, secret: null })
  const attached = link.attach({ sessions, records, applyProbe: () => undefined, becomeLead: () => undefined, discovered: () => undefined, probeSoon: () => undefined, now: () => 0, metrics: (compact) => compact ? m.snapshot() : m.json() })
  deliver({ tether: 'reply', call: sent.find((s) => s.op === 'snapshot')!.call, value: null })
  await attached
  const ask = async (call: number, form?: 'compact'): Promise<unknown> => {
    deliver({ tether: 'ask', call, op: 'metrics', ...(form === undefined ? {} : { form }) })
    let answer: { value?: unknown } | undefined
    await t.resolves(new Promise<void>((resolve) => {
      const poll = (): void => {
        answer = sent.find((s) => s.tether === 'answer' && s.call === call)
        if (answer === undefined) setImmediate(poll)
        else resolve()
      }
      poll()
    }))
    return answer!.value
  }
  const old = await ask(901)
  t.ok(Array.isArray(old), "an older primary's ask: prom-client's array (its ledger skips anything else)")
  const reference = new ReferenceLedger(60_000)
  reference.seen(1, old)
  const counted = /^tether_http_requests_total\{upstream="app-0",method="GET",status_class="2xx"\} 2$/m
  t.match(text, counted)
  t.match(await AggregatorRegistry.aggregate(reference.snapshots([[1, old]], 0) as never).metrics(), counted, "the older primary's /metrics holds this worker's counts")
  const compact = await ask(902, 'compact')
  t.match(compact, { tether: 'metrics' }, "a new primary's ask: the compact form")
  const ledger = new MetricsLedger(60_000)
  ledger.seen(1, compact)
  t.match((await aggregateMetrics(ledger.snapshots([[1, compact]], 0))).text, counted)
})

t.test('the primary\'s own dropped log lines are added to the workers\' tether_log_lines_dropped_total, one series per reason', async (t) => {
  const dropped = (writeError: number): unknown => JSON.parse(JSON.stringify(toWire([{
    name: 'tether_log_lines_dropped_total', help: 'Log lines dropped.', type: 'counter', aggregator: 'sum',
    values: [{ value: 0, labels: { reason: 'backlog' } }, { value: writeError, labels: { reason: 'write_error' } }, { value: 0, labels: { reason: 'reader_gone' } }],
  }])))
  let own = { backlog: 0, write_error: 4, reader_gone: 1 }
  const ledger = new MetricsLedger(60_000, undefined, () => own)
  const text = (await aggregateMetrics(ledger.snapshots([[1, dropped(2)], [2, dropped(3)]], 0))).text
  const lines = text.split('\n').filter((l) => l.startsWith('tether_log_lines_dropped_total'))
  t.same(lines.sort(), [
    'tether_log_lines_dropped_total{reason="backlog"} 0',
    'tether_log_lines_dropped_total{reason="reader_gone"} 1',
    'tether_log_lines_dropped_total{reason="write_error"} 9',
  ], 'the workers\' 2 + 3 and the primary\'s 4 write errors, the primary\'s reader_gone')
  t.equal(text.split('\n').filter((l) => l === '# HELP tether_log_lines_dropped_total Log lines dropped.').length, 1, 'one metric')
  own = { backlog: 0, write_error: 6, reader_gone: 1 }
  t.match((await aggregateMetrics(ledger.snapshots([[1, dropped(2)], [2, dropped(3)]], 0))).text, /^tether_log_lines_dropped_total\{reason="write_error"\} 11$/m, 'read again at each scrape')
  const workersOnly = new MetricsLedger(60_000)
  t.match((await aggregateMetrics(workersOnly.snapshots([[1, dropped(2)], [2, dropped(3)]], 0))).text, /^tether_log_lines_dropped_total\{reason="write_error"\} 5$/m, 'without the primary\'s counts, the workers\' alone')
})
