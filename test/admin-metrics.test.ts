// /metrics on the admin port after real traffic, a failover and a rehydration; admin routing.
import t from 'tap'
import http from 'node:http'
import { startTether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { REMOVED_SERIES_GRACE_MS } from '../src/observability/metrics.js'
import { FakeClock } from './fixtures/clock.js'
import { startUpstream, testConfig, request } from './fixtures/upstream.js'
import { CookieJar } from './fixtures/users.js'
import { onEvent, when } from './fixtures/wait.js'

function get(url: string, jar: CookieJar): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const cookie = jar.header()
    http.get(url, { agent: false, headers: cookie ? { cookie } : {} }, (res) => {
      jar.apply(res.headers['set-cookie'])
      let body = ''
      res.on('data', (c) => (body += c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
    }).on('error', reject)
  })
}

/** The value of one sample line `name{labels} value` in Prometheus text, or null. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number | null {
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue
    const m = /^([a-z_]+)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (m === null || m[1] !== name) continue
    const have = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1]!, x[2]!]))
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) return Number(m[3])
  }
  return null
}

t.test('metrics count requests, a failover with its rehydration, and upstream states', async (t) => {
  const apps = await Promise.all(['a', 'b'].map((id) => startUpstream(id, (_req, res) => {
    res.writeHead(200, { 'x-tether-state': `${id}-state` })
    res.end(`${id}\n`)
  })))
  const tether = await startTether(testConfig(apps), { logger: createLogger('silent') })
  t.teardown(async () => { await tether.close(0); await Promise.all(apps.map((a) => a.close())) })
  const jar = new CookieJar()
  const first = await get(tether.url, jar)
  for (let i = 0; i < 4; i++) await get(tether.url, jar)
  const home = first.body.trim()
  await apps.find((a) => a.id === home)!.close()
  const moved = await get(tether.url, jar)
  t.not(moved.body.trim(), home)

  const text = await new Promise<string>((resolve, reject) => {
    http.get(`${tether.adminUrl}/metrics`, (res) => {
      t.match(res.headers['content-type'], /^text\/plain/)
      let s = ''
      res.on('data', (c) => (s += c))
      res.on('end', () => resolve(s))
    }).on('error', reject)
  })
  t.equal(sample(text, 'tether_http_requests_total', { upstream: home, method: 'GET', status_class: '2xx' }), 5)
  t.equal(sample(text, 'tether_http_requests_total', { upstream: moved.body.trim(), method: 'GET', status_class: '2xx' }), 1)
  t.equal(sample(text, 'tether_failovers_total', { from: home, reason: 'dead' }), 1)
  t.equal(sample(text, 'tether_retries_total', { upstream: home }), 1, 'the request that found it dead was retried')
  t.equal(sample(text, 'tether_rehydrations_total', { result: 'delivered' }), 1)
  t.equal(sample(text, 'tether_checkpoints_total', { result: 'stored' }), 6)
  t.equal(sample(text, 'tether_upstream_state', { upstream: home, state: 'ejected' }), 1, 'a refused connection ejected it')
  t.equal(sample(text, 'tether_upstream_state', { upstream: moved.body.trim(), state: 'healthy' }), 1)
  t.ok((sample(text, 'tether_http_request_duration_seconds_count', { upstream: home }) ?? 0) >= 5)
  t.ok(sample(text, 'process_cpu_seconds_total') !== null, 'Node process metrics are there')
  t.equal(sample(text, 'tether_config_reloads_total', { result: 'ok' }) ?? 0, 0)
})

t.test("the moves an upstream's removal causes are in the next /metrics, and its series go once the grace after its last count is over", async (t) => {
  const apps = await Promise.all(['a', 'b'].map((id) => startUpstream(id)))
  const clock = new FakeClock()
  const tether = await startTether(testConfig(apps), { logger: createLogger('silent'), clock })
  t.teardown(async () => { await tether.close(0); await Promise.all(apps.map((a) => a.close())) })
  const users = Array.from({ length: 16 }, () => new CookieJar())
  const homes = await Promise.all(users.map(async (jar) => (await get(tether.url, jar)).body.trim()))
  const onA = homes.filter((h) => h === 'a').length
  t.ok(onA > 0 && onA < users.length, `users on both upstreams (${onA} on a)`)
  const scrape = async (): Promise<string> => (await request(`${tether.adminUrl}/metrics`)).body
  t.equal(sample(await scrape(), 'tether_upstream_state', { upstream: 'a', state: 'healthy' }), 1, 'a scrape before the removal')

  t.same(tether.reload(testConfig(apps.filter((a) => a.id === 'b'))).applied, ['upstreams'], 'a reload deletes a')
  const now = await Promise.all(users.map(async (jar) => (await get(tether.url, jar)).body.trim()))
  t.same(now.filter((h) => h === 'a'), [], "a's users moved")
  let text = await scrape()
  t.equal(sample(text, 'tether_failovers_total', { from: 'a', reason: 'drain' }), onA, 'the scrape after the removal has the moves it caused')
  t.equal(sample(text, 'tether_http_requests_total', { upstream: 'a', method: 'GET', status_class: '2xx' }), onA, "and a's requests")
  t.equal(sample(text, 'tether_upstream_state', { upstream: 'a', state: 'healthy' }), null, 'its state series went at once')
  t.equal(sample(await scrape(), 'tether_failovers_total', { from: 'a', reason: 'drain' }), onA, 'so has another scrape within the grace')

  clock.advance(REMOVED_SERIES_GRACE_MS)
  text = await scrape()
  t.notMatch(text, /upstream="a"|from="a"/, 'after the grace: no series of a')
  t.equal(sample(text, 'tether_http_requests_total', { upstream: 'b', method: 'GET', status_class: '2xx' }), 2 * users.length - onA, "b's series stay")
})

t.test('the admin port answers only its own routes', async (t) => {
  const app = await startUpstream('a')
  const tether = await startTether(testConfig([app]), { logger: createLogger('silent') })
  t.teardown(async () => { await tether.close(0); await app.close() })
  t.equal((await request(`${tether.adminUrl}/healthz`)).body, 'ok\n')
  t.equal((await request(`${tether.adminUrl}/nope`)).status, 404)
  t.equal((await request(`${tether.adminUrl}/upstreams/a/drain`)).status, 405, 'GET on a POST route')
  const ready = JSON.parse((await request(`${tether.adminUrl}/readyz`)).body) as unknown
  t.same(ready, { ready: true, reasons: [], degraded: [] })
  t.not(tether.adminUrl, tether.url, 'never the proxy port')
})

t.test('GET /upstreams lists state, weight, in-flight requests and sessions', async (t) => {
  let release: (() => void) | null = null
  const slow = await startUpstream('slow', (_req, res) => { release = () => res.end('done') })
  const tether = await startTether(testConfig([{ id: 'slow', url: slow.url, weight: 3 } as never], { affinity: { key: 'header', header: { name: 'X-Tenant' } } }), { logger: createLogger('silent') })
  t.teardown(async () => { await tether.close(0); await slow.close() })
  const pending = request(tether.url, { headers: { 'x-tenant': 't1' } })
  await when(onEvent(slow.server, 'request'), () => release !== null, 5_000, 'the request to reach the upstream')
  const rows = JSON.parse((await request(`${tether.adminUrl}/upstreams`)).body) as Record<string, unknown>[]
  // a new user is pinned once their upstream answered
  t.match(rows, [{ id: 'slow', state: 'healthy', weight: 3, in_flight: 1, sessions: 0, url: slow.url }])
  release!()
  await pending
  const after = JSON.parse((await request(`${tether.adminUrl}/upstreams`)).body) as Record<string, unknown>[]
  t.equal(after[0]!['in_flight'], 0)
  t.equal(after[0]!['sessions'], 1)
})
