// What `GET /readyz` makes of having no healthy upstream (`admin.readiness.require_upstream`):
// a fresh Tether is not ready until it has seen a healthy upstream (discovery and checks found
// the app); once it has, losing every upstream is `degraded` with 200, and clients get
// Tether's own 503 with Retry-After instead of a load balancer's connection error. With
// `always`, no healthy upstream is 503 at any time (the behaviour before `startup`). Real
// Tether, real upstreams on loopback, a real DNS server; the upstream dies by closing its server.
import t from 'tap'
import { request, startProxy, startUpstream, testConfig } from './fixtures/upstream.js'
import { TestDnsServer } from './fixtures/dns-server.js'
import { FakeTimers } from './fixtures/timers.js'
import { healthState } from './fixtures/wait.js'
import { startTether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'

interface Readyz { ready: boolean; reasons: string[]; degraded: string[] }
const readyz = async (adminUrl: string): Promise<{ status: number; body: Readyz }> => {
  const r = await request(`${adminUrl}/readyz`)
  return { status: r.status, body: JSON.parse(r.body) as Readyz }
}
const NO_UPSTREAM_DEGRADED = 'no healthy upstream: requests get 503 with Retry-After until one is healthy again'
/** Active checks every 50 ms, one failure takes the upstream out. */
const CHECKS = { health: { active: { path: '/', interval: 50, timeout: 200, unhealthy_threshold: 1 } } }

t.test('once an upstream was healthy, losing every upstream keeps /readyz 200 and says so under degraded; clients get 503 with Retry-After', async (t) => {
  const app = await startUpstream('a')
  const tether = await startProxy([app], CHECKS)
  t.teardown(() => tether.close(0))
  t.same(await readyz(tether.adminUrl), { status: 200, body: { ready: true, reasons: [], degraded: [] } }, 'ready with its upstream')
  t.equal((await request(tether.url)).body, 'a\n')

  const down = healthState(tether.health, 'a', 'unhealthy')
  await app.close() // the app's only replica is gone
  await down
  t.same(await readyz(tether.adminUrl), { status: 200, body: { ready: true, reasons: [], degraded: [NO_UPSTREAM_DEGRADED] } },
    'still ready: the app is down, not this replica')
  const r = await request(tether.url)
  t.equal(r.status, 503, 'Tether answers the client itself')
  t.equal(r.headers['retry-after'], '1')
  t.equal(r.body, 'Service Unavailable: no upstream available\n')
  const status = await request(`${tether.adminUrl}/status`)
  t.match(JSON.parse(status.body), { ready: true, reasons: [], degraded: [NO_UPSTREAM_DEGRADED] }, 'the status page says the same')
})

t.test('with admin.readiness.require_upstream: always, no healthy upstream is 503 at any time', async (t) => {
  const app = await startUpstream('a')
  const tether = await startProxy([app], { ...CHECKS, admin: { readiness: { require_upstream: 'always' } } })
  t.teardown(() => tether.close(0))
  t.equal((await readyz(tether.adminUrl)).status, 200)
  const down = healthState(tether.health, 'a', 'unhealthy')
  await app.close()
  await down
  t.same(await readyz(tether.adminUrl), { status: 503, body: { ready: false, reasons: ['no healthy upstream'], degraded: [] } })
})

t.test('a fresh Tether that has never seen a healthy upstream answers 503 until discovery finds one', async (t) => {
  const NAME = 'app.tether.test'
  const INTERVAL = 100
  const app = await startUpstream('a')
  t.teardown(() => app.close())
  const dns = new TestDnsServer()
  const { port: dnsPort } = await dns.start()
  t.teardown(() => dns.close())
  dns.set(NAME, { a: [], aaaa: [] }) // no ready pod yet
  const timers = new FakeTimers()
  const tether = await startTether(testConfig([], {
    discovery: { dns: { name: NAME, port: app.port, srv: false, interval: INTERVAL, family: 'ipv4', servers: [`127.0.0.1:${dnsPort}`] } },
  }), { logger: createLogger('silent'), timers })
  t.teardown(() => tether.close(0))

  const before = await readyz(tether.adminUrl)
  t.same([before.status, before.body.ready, before.body.reasons], [503, false, ['no healthy upstream']], 'not ready: no upstream seen yet')
  t.equal((await request(tether.url)).status, 503)

  dns.set(NAME, { a: ['127.0.0.1'], aaaa: [] })
  timers.advance(INTERVAL)
  await timers.scheduled(INTERVAL) // the resolution ends by setting the next refresh
  t.same(await readyz(tether.adminUrl), { status: 200, body: { ready: true, reasons: [], degraded: [] } }, 'ready once one is healthy')
  t.equal((await request(tether.url)).body, 'a\n')
})
