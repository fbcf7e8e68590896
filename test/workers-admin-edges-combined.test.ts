// What the primary's admin listener answers for its workers (`workers: 2`), as one process would:
// /upstreams, /status and /metrics combined over the workers (GET, HEAD, a percent-encoded path),
// /readyz before any worker is up, the metrics of workers gone and replaced kept in the sums
// without a fall; and a reload that unsets affinity.cookie.secret warned of as at a start. Split
// from workers-admin-edges.test.ts (shared helpers in test/fixtures/workers-admin-edges.ts), with
// workers-admin-edges-listener.test.ts and workers-admin-edges-start.test.ts.
import t from 'tap'
import http from 'node:http'
import { writeFileSync } from 'node:fs'
import { tempFile } from './fixtures/cli.js'
import { freePort, freePorts } from './fixtures/ports.js'
import { startPrimary, workersYaml } from './fixtures/primary-process.js'
import { startUpstream } from './fixtures/upstream.js'
import { waitFor } from './fixtures/wait.js'
import { failoverLedger, total } from './fixtures/workers-admin-edges.js'

t.test("the primary's /upstreams: in-flight counts added up, a draining upstream's remaining sessions the most any worker counts, in the admin API's own form", async (t) => {
  const { startAdminFront } = await import('../src/workers/admin-front.js')
  const { createLogger } = await import('../src/observability/logger.js')
  const row = (inFlight: number, remaining: number | null) => ({ id: 'b', draining: true, in_flight: inFlight, websockets: 1, sessions_remaining: remaining })
  const asked: number[] = []
  const worker = async (rows: unknown[], status = 200): Promise<string> => {
    const s = http.createServer((req, res) => {
      asked.push(status)
      const body = `${JSON.stringify(rows, null, 2)}\n`
      res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store', 'x-content-type-options': 'nosniff' })
      res.end(body)
    })
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', r))
    t.teardown(() => new Promise((r) => s.close(r)))
    return `http://127.0.0.1:${(s.address() as { port: number }).port}`
  }
  // the lead's users all moved; the other worker still counts two users it answered
  const admins = [await worker([row(1, 0)]), await worker([row(2, 2)])]
  const front = await startAdminFront('127.0.0.1', 0, { admins: () => admins, metrics: () => Promise.resolve([]), stopping: () => false }, createLogger('silent'), [])
  t.teardown(() => front.close())
  const r = await new Promise<{ headers: http.IncomingHttpHeaders; body: string }>((resolve, reject) => {
    http.get(`${front.url}/upstreams`, { agent: false }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (c) => (body += c))
      res.on('end', () => resolve({ headers: res.headers, body }))
    }).on('error', reject)
  })
  t.same(JSON.parse(r.body), [{ id: 'b', draining: true, in_flight: 3, websockets: 2, sessions_remaining: 2 }], 'in flight and WebSockets added up; sessions remaining: the most any worker counts (0 only when none does)')
  t.equal(r.body, `${JSON.stringify(JSON.parse(r.body), null, 2)}\n`, 'indented JSON with a final newline, as one process writes it')
  t.equal(r.headers['content-length'], String(Buffer.byteLength(r.body)), 'with its length, not chunked')
  t.equal(r.headers['cache-control'], 'no-store')
  t.equal(r.headers['x-content-type-options'], 'nosniff')
  const head = (method: string) => new Promise<string | undefined>((resolve, reject) => http.request(`${front.url}/sessions/abc`, { method, agent: false }, (res) => { res.resume(); resolve(res.headers['content-length']) }).on('error', reject).end())
  t.equal(await head('HEAD'), await head('GET'), "a HEAD's length is the GET's")
  // a request the lead refuses (a wrong token) is not passed to the others: refused and logged once
  const refusing = [await worker([], 401), await worker([row(0, 0)])]
  const guarded = await startAdminFront('127.0.0.1', 0, { admins: () => refusing, metrics: () => Promise.resolve([]), stopping: () => false }, createLogger('silent'), [])
  t.teardown(() => guarded.close())
  asked.length = 0
  const refused = await new Promise<number>((resolve, reject) => http.get(`${guarded.url}/upstreams`, { agent: false }, (res) => { res.resume(); resolve(res.statusCode!) }).on('error', reject))
  t.equal(refused, 401, "the lead's refusal")
  t.same(asked, [401], 'the other worker was not asked')
  // a worker whose admin listener has closed (it is exiting) refuses the connection: the next answers
  const closed = await freePort()
  const exiting = await startAdminFront('127.0.0.1', 0, { admins: () => [`http://127.0.0.1:${closed}`, admins[1]!], metrics: () => Promise.resolve([]), stopping: () => false }, createLogger('silent'), [])
  t.teardown(() => exiting.close())
  const get = (path: string) => new Promise<number>((resolve, reject) => http.get(`${exiting.url}${path}`, { agent: false }, (res) => { res.resume(); resolve(res.statusCode!) }).on('error', reject))
  t.equal(await get('/upstreams'), 200, '/upstreams from the next worker')
  t.equal(await get('/healthz'), 200, 'a passed route too')
  // the end of a shutdown: every worker's admin listener has closed, the primary's not yet
  let stopping = false
  const ending = await startAdminFront('127.0.0.1', 0, { admins: () => [`http://127.0.0.1:${closed}`], metrics: () => Promise.resolve([]), stopping: () => stopping }, createLogger('silent'), [])
  t.teardown(() => ending.close())
  const probe = (path: string) => new Promise<{ status: number; body: string }>((resolve, reject) => http.get(`${ending.url}${path}`, { agent: false }, (res) => {
    let body = ''
    res.on('data', (c) => (body += c))
    res.on('end', () => resolve({ status: res.statusCode!, body }))
  }).on('error', reject))
  t.equal((await probe('/healthz')).status, 502, 'not stopping: a worker that refuses is a failure')
  stopping = true
  t.same(await probe('/healthz'), { status: 200, body: 'ok\n' }, 'stopping: /healthz as one process answers while it stops')
  const ready = await probe('/readyz')
  t.equal(ready.status, 503)
  t.same(JSON.parse(ready.body), { ready: false, reasons: ['shutting down'], degraded: [] }, "/readyz: one process's answer while it stops")
  t.equal((await probe('/upstreams')).status, 502, 'any other route still fails')
})

t.test("the primary combines /upstreams, /status and /metrics for HEAD and for a percent-encoded path too, as for GET", async (t) => {
  const { startAdminFront } = await import('../src/workers/admin-front.js')
  const { createLogger } = await import('../src/observability/logger.js')
  const { statusView } = await import('../src/admin/status-view.js')
  // each worker answers its own figures (9 + 1 in flight: the combined answer is a byte longer than either)
  const worker = async (inFlight: number): Promise<string> => {
    const s = http.createServer((req, res) => {
      const row = { id: 'b', in_flight: inFlight, websockets: 0, sessions_remaining: null }
      const status = statusView({ now: 0, notReady: [], degraded: [], rows: [row as never], traffic: { window_seconds: 10, upstreams: {}, moves_per_minute: { dead: 0, drain: 0, rebalance: 0, spill: 0, admin: 0, restart: 0 }, requests_per_second: new Array<number>(60).fill(0) }, sessionLookup: false })
      const body = `${JSON.stringify(req.url === '/status' ? status : [row], null, 2)}\n`
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
      res.end(req.method === 'HEAD' ? undefined : body)
    })
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', r))
    t.teardown(() => new Promise((r) => s.close(r)))
    return `http://127.0.0.1:${(s.address() as { port: number }).port}`
  }
  const admins = [await worker(9), await worker(1)]
  const front = await startAdminFront('127.0.0.1', 0, { admins: () => admins, metrics: () => Promise.resolve([]), stopping: () => false }, createLogger('silent'), [])
  t.teardown(() => front.close())
  const ask = (method: string, path: string) => new Promise<{ length: string | undefined; body: string }>((resolve, reject) => http.request(`${front.url}${path}`, { method, agent: false }, (res) => {
    let body = ''
    res.on('data', (c) => (body += c))
    res.on('end', () => resolve({ length: res.headers['content-length'], body }))
  }).on('error', reject).end())
  const upstreams = await ask('GET', '/upstreams')
  t.same((JSON.parse(upstreams.body) as { in_flight: number }[]).map((r) => r.in_flight), [10], 'GET: added up')
  t.equal((await ask('GET', '/%75pstreams')).body, upstreams.body, 'a percent-encoded path names the same route (as a worker reads it): added up too')
  for (const path of ['/upstreams', '/status', '/metrics']) {
    const get = await ask('GET', path)
    const head = await ask('HEAD', path)
    t.same([head.length, head.body], [String(Buffer.byteLength(get.body)), ''], `HEAD ${path}: the combined GET's length, no body`)
  }
})

t.test("before any worker is up, or while every worker restarts, the primary's /readyz and /status answer 503 in /readyz's JSON shape with the reason, /healthz 200", async (t) => {
  const { startAdminFront } = await import('../src/workers/admin-front.js')
  const { createLogger } = await import('../src/observability/logger.js')
  const front = await startAdminFront('127.0.0.1', 0, { admins: () => [], metrics: () => Promise.resolve([]), stopping: () => false }, createLogger('silent'), [])
  t.teardown(() => front.close())
  const probe = (path: string, method = 'GET') => new Promise<{ status: number; type: string | undefined; body: string }>((resolve, reject) => http.request(`${front.url}${path}`, { method, agent: false }, (res) => {
    let body = ''
    res.on('data', (c) => (body += c))
    res.on('end', () => resolve({ status: res.statusCode!, type: res.headers['content-type'], body }))
  }).on('error', reject).end())
  const notReady = { ready: false, reasons: ['no worker started yet'], degraded: [] }
  for (const path of ['/readyz', '/status', '/readyz?verbose=1']) {
    const r = await probe(path)
    t.same([r.status, r.type], [503, 'application/json'], `${path}: 503 JSON`)
    t.same(JSON.parse(r.body), notReady, `${path}: ready false with the reason, as /readyz writes it`)
  }
  t.same((await probe('/readyz', 'HEAD')).status, 503, 'HEAD /readyz too')
  const live = await probe('/healthz')
  t.same([live.status, live.body], [200, 'ok\n'], '/healthz: 200, the primary is alive (liveness does not wait on a worker start)')
  t.same((await probe('/healthz', 'HEAD')).status, 200, 'HEAD /healthz too')
  const other = await probe('/upstreams')
  t.same([other.status, other.body], [503, 'Service Unavailable: no worker started yet\n'], 'any other route: a plain 503 (the workers know the routes and the token)')
})

t.test('the metrics of a worker that exits stay in the sums (counters and histograms, not gauges); reloads are the primary\'s count', async (t) => {
  const { MetricsLedger } = await import('../src/workers/metrics-ledger.js')
  const { aggregateMetrics } = await import('../src/observability/metrics.js')
  const snap = (requests: number, open: number, reloads: number) => [
    { name: 'tether_http_requests_total', help: 'h', type: 'counter', aggregator: 'sum', values: [{ value: requests, labels: { upstream: 'a' } }] },
    { name: 'tether_websocket_connections', help: 'w', type: 'gauge', aggregator: 'sum', values: [{ value: open, labels: {} }] },
    { name: 'tether_upstream_duration_seconds', help: 'd', type: 'histogram', aggregator: 'sum', values: [
      { value: requests, labels: { le: 0.1, upstream: 'a' }, metricName: 'tether_upstream_duration_seconds_bucket' },
      { value: requests, labels: { upstream: 'a' }, metricName: 'tether_upstream_duration_seconds_count' },
    ] },
    { name: 'tether_config_reloads_total', help: 'r', type: 'counter', aggregator: 'sum', values: reloads === 0 ? [] : [{ value: reloads, labels: { result: 'ok' } }] },
  ]
  const ledger = new MetricsLedger(300_000)
  ledger.seen(1, snap(10, 3, 1))
  ledger.seen(2, snap(5, 1, 1))
  ledger.reloaded(true)
  ledger.gone(2, 0) // exits; its replacement starts from 0
  ledger.seen(3, snap(1, 0, 0))
  const text = (await aggregateMetrics(ledger.snapshots([[1, snap(12, 4, 1)], [3, snap(1, 0, 0)]], 0))).text
  t.equal(total(text, 'tether_http_requests_total'), 18, 'a counter: the live workers plus the last count of the one gone (12 + 1 + 5)')
  t.equal(total(text, 'tether_upstream_duration_seconds_count'), 18, 'a histogram the same')
  t.equal(total(text, 'tether_websocket_connections'), 4, 'a gauge: the live workers only')
  t.equal(total(text, 'tether_config_reloads_total', 'result="ok"'), 1, 'one reload of the primary, not one per worker')
  ledger.seen(1, snap(12, 4, 1))
  t.equal(total((await aggregateMetrics(ledger.snapshots([[1, null], [3, snap(1, 0, 0)]], 0))).text, 'tether_http_requests_total'), 18, 'a worker that did not answer in time counts with its last answer')
  ledger.seen(1, [])
  t.equal(total((await aggregateMetrics(ledger.snapshots([[1, []], [3, snap(1, 0, 0)]], 0))).text, 'tether_http_requests_total'), 18, 'so does one whose metrics failed (an empty answer)')
  // a worker that answers this scrape, then exits before the others have answered
  ledger.seen(5, snap(7, 0, 0))
  ledger.gone(5, 0)
  t.equal(total((await aggregateMetrics(ledger.snapshots([[1, snap(12, 4, 1)], [3, snap(1, 0, 0)], [5, snap(7, 0, 0)]], 0))).text, 'tether_http_requests_total'), 25, 'one that exits during a scrape is counted once (12 + 1 + 5 + 7)')
  ledger.seen(5, snap(9, 0, 0))
  t.equal(total((await aggregateMetrics(ledger.snapshots([[1, snap(12, 4, 1)], [3, snap(1, 0, 0)]], 0))).text, 'tether_http_requests_total'), 25, 'and a late answer of one gone is not kept')
  ledger.gone(4, 0) // never scraped: nothing to keep
  t.equal(total((await aggregateMetrics(ledger.snapshots([[1, snap(12, 4, 1)], [3, snap(1, 0, 0)]], 0))).text, 'tether_http_requests_total'), 25)
})

t.test("a summed series never falls when a worker's counts move from the live sums to the gone ones (floating-point order): Prometheus would read a reset", async (t) => {
  const { MetricsLedger } = await import('../src/workers/metrics-ledger.js')
  const { aggregateMetrics } = await import('../src/observability/metrics.js')
  // a histogram's _sum (seconds) and a counter: (a + b) + d, then b + (d + a) once the worker
  // counting a has gone, is one unit in the last place lower with these values
  const [a, b, d] = [57.91524546564242, 0.29697739533007955, 9.1299083312647]
  const snap = (seconds: number) => [
    { name: 'tether_http_request_duration_seconds', help: 'd', type: 'histogram', aggregator: 'sum', values: [
      { value: seconds, labels: { upstream: 'a' }, metricName: 'tether_http_request_duration_seconds_sum' },
      { value: 3, labels: { upstream: 'a' }, metricName: 'tether_http_request_duration_seconds_count' },
    ] },
    { name: 'tether_upstream_busy_seconds_total', help: 'c', type: 'counter', aggregator: 'sum', values: [{ value: seconds, labels: { upstream: 'a' } }] },
  ]
  /** The exact values of the series in an exposition (the fixture's total() reads no exponent; these have none). */
  const value = (text: string, series: string): number => Number(new RegExp(`^${series}\\{upstream="a"\\} (\\S+)$`, 'm').exec(text)![1])
  const ledger = new MetricsLedger(300_000)
  ledger.seen(3, snap(d))
  ledger.gone(3, 0) // a worker gone before: its counts are the gone sums
  ledger.seen(1, snap(a))
  ledger.seen(2, snap(b))
  const before = (await aggregateMetrics(ledger.snapshots([[1, snap(a)], [2, snap(b)]], 0))).text
  ledger.gone(1, 0) // worker 1 exits (a roll, a crash); no count changed
  const after = (await aggregateMetrics(ledger.snapshots([[2, snap(b)]], 0))).text
  for (const series of ['tether_http_request_duration_seconds_sum', 'tether_upstream_busy_seconds_total']) {
    t.ok(value(after, series) >= value(before, series), `${series}: ${value(before, series)} -> ${value(after, series)}, not lower`)
    t.ok(value(after, series) - value(before, series) < 1e-9, `${series}: and not higher either (the counts did not change)`)
  }
  t.equal(value(after, 'tether_http_request_duration_seconds_count'), 9, 'the counts are whole: 3 + 3 + 3')
  // and it goes on rising with the live worker's counts
  const later = (await aggregateMetrics(ledger.snapshots([[2, snap(b + 1)]], 0))).text
  t.ok(Math.abs(value(later, 'tether_http_request_duration_seconds_sum') - (a + b + d + 1)) < 1e-9, 'a later count adds to it')
})

t.test("a gone worker's series of an upstream no live worker has any more are dropped, as one process drops a removed upstream's", async (t) => {
  const { MetricsLedger } = await import('../src/workers/metrics-ledger.js')
  const { aggregateMetrics } = await import('../src/observability/metrics.js')
  const snap = (ups: readonly string[], requests: number) => [
    { name: 'tether_upstream_state', help: 's', type: 'gauge', aggregator: 'first', values: ups.map((u) => ({ value: 1, labels: { upstream: u, state: 'healthy' } })) },
    { name: 'tether_http_requests_total', help: 'h', type: 'counter', aggregator: 'sum', values: [...ups, 'none'].map((u) => ({ value: requests, labels: { upstream: u, method: 'GET', status_class: '2xx' } })) },
    { name: 'tether_failovers_total', help: 'f', type: 'counter', aggregator: 'sum', values: ups.map((u) => ({ value: 1, labels: { from: u, reason: 'dead' } })) },
  ]
  const ledger = new MetricsLedger(300_000)
  ledger.seen(1, snap(['a', 'pod-1'], 5))
  ledger.gone(1, 0) // crashed while pod-1 was there
  let text = (await aggregateMetrics(ledger.snapshots([[2, snap(['a', 'pod-1'], 2)]], 0))).text
  t.equal(total(text, 'tether_http_requests_total', 'upstream="pod-1"'), 7, 'while pod-1 is current, its gone count stays in the sum')
  text = (await aggregateMetrics(ledger.snapshots([[2, snap(['a'], 2)]], 0))).text
  t.notMatch(text, /pod-1/, 'once no live worker has pod-1: none of its series')
  t.equal(total(text, 'tether_http_requests_total', 'upstream="a"'), 7, "the current upstream's sum is kept")
  t.equal(total(text, 'tether_failovers_total', 'from="a"'), 2)
  t.equal(total(text, 'tether_http_requests_total', 'upstream="none"'), 7, 'requests no upstream answered are always kept')

  // a removal: the live worker keeps the removed upstream's series for their grace, so does the sum
  ledger.seen(3, snap(['a', 'pod-2'], 4))
  ledger.gone(3, 0) // crashed while pod-2 was there
  const removed = snap(['a'], 2).map((m) => m.name !== 'tether_failovers_total' ? m
    : { ...m, values: [...m.values, { value: 3, labels: { from: 'pod-2', reason: 'drain' } }] }) // its users moved after the removal
  text = (await aggregateMetrics(ledger.snapshots([[2, removed]], 0))).text
  t.equal(total(text, 'tether_failovers_total', 'from="pod-2"'), 4, 'while a live worker still shows pod-2 (its grace), the gone count stays in the sum: no fall')
  text = (await aggregateMetrics(ledger.snapshots([[2, snap(['a'], 2)]], 0))).text
  t.notMatch(text, /pod-2/, 'once no live worker shows pod-2 any more: none of its series')
})

t.test("a roll that replaces every worker within a removed upstream's grace keeps the gone workers' counts of it for that grace, as one process would", async (t) => {
  const { ledger, snap, scrape } = await failoverLedger()
  // pod-3 removed at t=0; both workers count its users' moves and keep its series for their grace
  t.equal(total(await scrape([[1, snap({ a: 1, 'pod-3': 5 })], [2, snap({ a: 1, 'pod-3': 3 })]], 1_000), 'tether_failovers_total', 'from="pod-3"'), 8)
  // a reload that needs new workers replaces both at t=10 s; the new ones never saw pod-3
  ledger.gone(1, 10_000)
  ledger.gone(2, 11_000)
  let text = await scrape([[3, snap({ a: 0 })], [4, snap({ a: 0 })]], 12_000)
  t.equal(total(text, 'tether_failovers_total', 'from="pod-3"'), 8, "the moves pod-3's removal caused are still scraped after the roll")
  t.equal(total(text, 'tether_failovers_total', 'from="a"'), 2)
  text = await scrape([[3, snap({ a: 0 })], [4, snap({ a: 0 })]], 310_000)
  t.equal(total(text, 'tether_failovers_total', 'from="pod-3"'), 8, 'until the grace from the last exit')
  text = await scrape([[3, snap({ a: 0 })], [4, snap({ a: 0 })]], 311_000)
  t.notMatch(text, /pod-3/, 'then its series go')
  t.equal(total(text, 'tether_failovers_total', 'from="a"'), 2, "the current upstream's sum is unchanged")

  // a roll one worker at a time (as Tether rolls): the one still running shows pod-5 when the first has gone
  t.equal(total(await scrape([[3, snap({ a: 0, 'pod-5': 2 })], [4, snap({ a: 0, 'pod-5': 1 })]], 400_000), 'tether_failovers_total', 'from="pod-5"'), 3)
  ledger.gone(3, 401_000)
  t.equal(total(await scrape([[4, snap({ a: 0, 'pod-5': 1 })], [5, snap({ a: 0 })]], 402_000), 'tether_failovers_total', 'from="pod-5"'), 3)
  ledger.gone(4, 403_000)
  text = await scrape([[5, snap({ a: 0 })], [6, snap({ a: 0 })]], 404_000)
  t.equal(total(text, 'tether_failovers_total', 'from="pod-5"'), 3, 'kept after a roll of one worker at a time too')
  text = await scrape([[5, snap({ a: 0 })], [6, snap({ a: 0 })]], 703_000)
  t.notMatch(text, /pod-5/, 'for the grace from the last exit')
})

t.test("a removed upstream's series that one live worker drops at the end of its grace, while another still shows them, stay in the sum: no fall", async (t) => {
  const { snap, scrape: at } = await failoverLedger()
  const scrape = (answers: Parameters<typeof at>[0]): Promise<string> => at(answers, 0)
  // pod-3 removed: both workers keep its series for a grace from their own last count of it
  t.equal(total(await scrape([[1, snap({ a: 1, 'pod-3': 5 })], [2, snap({ a: 1, 'pod-3': 3 })]]), 'tether_failovers_total', 'from="pod-3"'), 8)
  // worker 2's grace ended first (worker 1 counted a move from pod-3 later)
  let text = await scrape([[1, snap({ a: 1, 'pod-3': 6 })], [2, snap({ a: 1 })]])
  t.equal(total(text, 'tether_failovers_total', 'from="pod-3"'), 9, "worker 2's count stays in the sum while worker 1 still shows pod-3 (8 -> 6 read as a reset)")
  text = await scrape([[1, snap({ a: 1, 'pod-3': 6 })], [2, snap({ a: 1, 'pod-3': 1 })]])
  t.equal(total(text, 'tether_failovers_total', 'from="pod-3"'), 10, 'a late move worker 2 counts after it dropped the series adds to it')
  text = await scrape([[1, snap({ a: 1, 'pod-3': 6 })], [2, snap({ a: 1, 'pod-3': 1 })]])
  t.equal(total(text, 'tether_failovers_total', 'from="pod-3"'), 10, 'the same answers again: counted once')
  text = await scrape([[1, snap({ a: 1 })], [2, snap({ a: 1 })]])
  t.notMatch(text, /pod-3/, 'once no live worker shows pod-3: none of its series')
  t.equal(total(text, 'tether_failovers_total', 'from="a"'), 2, "the current upstream's sum is unchanged")
})

t.test("a counter every worker counts alike (read with max) never falls, even when every worker is replaced", async (t) => {
  const { MetricsLedger } = await import('../src/workers/metrics-ledger.js')
  const { aggregateMetrics } = await import('../src/observability/metrics.js')
  const snap = (evictions: number, entries: number) => [
    { name: 'tether_affinity_evictions_total', help: 'e', type: 'counter', aggregator: 'max', values: evictions < 0 ? [] : [{ value: evictions, labels: {} }] },
    { name: 'tether_affinity_entries', help: 'n', type: 'gauge', aggregator: 'max', values: [{ value: entries, labels: {} }] },
  ]
  const ledger = new MetricsLedger(300_000)
  const scrape = async (live: [number, unknown][]): Promise<[number, number]> => {
    for (const [id, s] of live) ledger.seen(id, s)
    const text = (await aggregateMetrics(ledger.snapshots(live, 0))).text
    return [total(text, 'tether_affinity_evictions_total'), total(text, 'tether_affinity_entries')]
  }
  t.same(await scrape([[1, snap(100, 50)], [2, snap(98, 50)]]), [100, 50], 'the highest count of the live workers')
  ledger.gone(1, 0) // a roll replaces worker 1: its replacement counts from 0
  t.same(await scrape([[2, snap(104, 50)], [3, snap(3, 50)]]), [104, 50], 'worker 2 still counts the most')
  ledger.gone(2, 0) // then worker 2: no live worker counted the first 104
  t.same(await scrape([[3, snap(6, 48)], [4, snap(0, 49)]]), [104, 49], 'the counter stays where it was, not 6 (a fall reads as a reset); a gauge is the live value')
  t.same(await scrape([[3, snap(10, 50)], [4, snap(8, 50)]]), [108, 50], 'and goes on by what the workers count since')
  t.same(await scrape([[3, snap(-1, 50)], [4, snap(-1, 50)]]), [108, 50], 'a series no live worker has yet keeps its value')
})

t.test('with two workers, a reload that leaves affinity.cookie.secret unset where it was set is warned of, as at a start', async (t) => {
  const app = await startUpstream('app-0')
  t.teardown(() => app.close())
  const [port, adminPort] = await freePorts(2)
  const yaml = (secret: string): string => workersYaml({ listen: port, adminPort, workers: 2, upstreams: [{ id: 'app-0', url: app.url }], extra: [`affinity: { cookie: { secret: ${secret} } }`] })
  const file = tempFile('workers-secret.yaml', yaml('["a-secret-of-at-least-32-characters-long"]'))
  const { proc, out } = await startPrimary(t, file)
  t.notOk(out().includes('affinity.cookie.secret is not set'), 'set: no warning')
  // `workers` alone is the primary's to judge: no worker announces new workers for it
  writeFileSync(file, yaml('["a-secret-of-at-least-32-characters-long"]').replace('workers: 2', 'workers: 3'))
  proc.kill('SIGHUP')
  await waitFor(() => out().includes('"workers replaced"'), 40_000, 'the scale-up to end')
  t.notOk(out().includes('need new workers; the primary replaces them'), 'the workers leave a change of `workers` to the primary')
  writeFileSync(file, yaml('null'))
  proc.kill('SIGHUP')
  await waitFor(() => out().includes('affinity.cookie.secret is not set'), 60_000, 'the warning')
  await waitFor(() => (out().match(/"workers replaced"/g) ?? []).length >= 2, 40_000, 'the roll to end')
  proc.kill('SIGTERM')
  await waitFor(() => proc.exitCode !== null, 60_000, 'the primary to stop')
})
