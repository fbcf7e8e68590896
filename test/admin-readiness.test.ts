// What `GET /readyz` makes of having no healthy upstream (`admin.readiness.require_upstream`):
// a fresh Tether is not ready until it has seen a healthy upstream (discovery and checks found
// the app); once it has, losing every upstream is `degraded` with 200, and clients get
// Tether's own 503 with Retry-After instead of a load balancer's connection error. With
// `always`, no healthy upstream is 503 at any time (the behaviour before `startup`). Real
// Tether, real upstreams on loopback, a real DNS server; the upstream dies by closing its server.
// With workers, a worker started after the app died (a crashed one's replacement) knows from
// its setup that the group saw one (a real primary; workers killed with SIGKILL), and one whose
// setup came just before that news learns it from the primary's `upstream-seen` later.
import t from 'tap'
import { request, startProxy, startUpstream, testConfig } from './fixtures/upstream.js'
import { TestDnsServer } from './fixtures/dns-server.js'
import { FakeTimers } from './fixtures/timers.js'
import { healthState, waitFor } from './fixtures/wait.js'
import { tempFile } from './fixtures/cli.js'
import { freePorts } from './fixtures/ports.js'
import { request as primaryRequest, slotOf, startPrimary, workerAdmins, workerPids, workersYaml } from './fixtures/primary-process.js'
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
  await waitFor(async () => (await readyz(tether.adminUrl)).status === 200, 5000, 'ready once the upstream passed its first probe')
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

t.test('with workers, workers started after the app died (crash replacements) keep /readyz 200 with the degraded line', async (t) => {
  const app = await startUpstream('app-0')
  const [port, adminPort] = await freePorts(2)
  const admin = `http://127.0.0.1:${adminPort}`
  const file = tempFile('admin-readiness-workers.yaml', workersYaml({
    listen: port!, adminPort: adminPort!, workers: 2, upstreams: [{ id: 'app-0', url: app.url }],
    extra: ['health: { active: { path: /, interval: 100ms, timeout: 200ms, unhealthy_threshold: 1 } }'],
  }))
  const { proc, out } = await startPrimary(t, file)
  const readyzOf = async (): Promise<{ status: number; body: Readyz }> => {
    const r = await primaryRequest(`${admin}/readyz`, null)
    return { status: r.status, body: JSON.parse(r.body) as Readyz }
  }
  await waitFor(async () => (await readyzOf()).status === 200, 10_000, 'ready once the lead\'s first probe passed')
  t.same(await readyzOf(), { status: 200, body: { ready: true, reasons: [], degraded: [] } })

  await app.close()
  await waitFor(async () => (await readyzOf()).body.degraded.includes(NO_UPSTREAM_DEGRADED), 10_000, 'the upstream to be found down')
  // replace both workers, one after the other: then every worker started after the app died
  const listening = (): number => out().split('"tether listening"').length - 1
  for (const slot of [0, 1]) {
    const victim = workerPids(proc).find((pid) => slotOf(pid) === slot)!
    const before = listening()
    process.kill(victim, 'SIGKILL')
    await waitFor(() => workerPids(proc).length === 2 && !workerPids(proc).includes(victim) && listening() > before, 20_000, `worker ${slot} to be replaced`)
  }
  // the new leading worker runs the checks: the app is still down in its table
  await waitFor(async () => {
    const rows = JSON.parse((await primaryRequest(`${admin}/upstreams`, null)).body) as { id: string; state: string }[]
    return rows.some((r) => r.id === 'app-0' && r.state === 'unhealthy')
  }, 10_000, 'the new workers to see the app down')
  t.same(await readyzOf(), { status: 200, body: { ready: true, reasons: [], degraded: [NO_UPSTREAM_DEGRADED] } },
    'ready: the group saw a healthy upstream before these workers started')
  const r = await primaryRequest(`http://127.0.0.1:${port}/`, null)
  t.equal(r.status, 503, 'clients get Tether\'s 503')
})

t.test("with workers, the primary passes the group's first upstream-seen on once, to the worker that did not send it", async (t) => {
  // the primary's side of the news (the worker's side is the next test): a preload in each
  // worker (NODE_OPTIONS, which the workers inherit) writes a line for each `upstream-seen` the
  // primary sends it. Both workers start before any upstream is seen (their setups say not yet);
  // the first worker whose news reaches the primary is not told back, the other is told once.
  // The app fails its probes until both workers are up (their hellos answered before the news)
  let up = false
  const app = await startUpstream('app-0', (_req, res) => {
    res.statusCode = up ? 200 : 503
    res.end()
  })
  t.teardown(() => app.close())
  const [port, adminPort] = await freePorts(2)
  const spy = tempFile('upstream-seen-spy.cjs', [
    "if (process.env.TETHER_WORKER !== undefined) process.on('message', (m) => {",
    "  if (m !== null && typeof m === 'object' && m.tether === 'upstream-seen') process.stderr.write('SPY upstream-seen to worker ' + process.env.TETHER_WORKER + '\\n')",
    '})',
    '',
  ].join('\n'))
  const file = tempFile('admin-readiness-broadcast.yaml', workersYaml({
    listen: port!, adminPort: adminPort!, workers: 2, upstreams: [{ id: 'app-0', url: app.url }],
    // no outlier detection: a failed probe's ejection (10 s) would hold back the first pass
    extra: ['health: { active: { path: /, interval: 100ms, timeout: 200ms, unhealthy_threshold: 1 }, passive: { enabled: false } }'],
  }))
  const { out } = await startPrimary(t, file, { NODE_OPTIONS: `${process.env['NODE_OPTIONS'] ?? ''} --require ${spy}`.trim() })
  const told = (): string[] => out().split('\n').filter((l) => l.includes('SPY upstream-seen'))
  t.equal((await primaryRequest(`http://127.0.0.1:${adminPort}/readyz`, null)).status, 503, 'not ready: the app has not passed a probe')
  up = true
  await waitFor(async () => (await primaryRequest(`http://127.0.0.1:${adminPort}/readyz`, null)).status === 200, 10_000, 'ready once the lead\'s first probe passed')
  await waitFor(() => told().length > 0, 10_000, 'the primary to pass the news on')
  // every worker has told the primary by now or soon (each applies the passed probe); a second
  // pass of the news, or one to its sender, would show here by the end of the test
  await waitFor(() => workerAdmins(out()).size === 2, 10_000, 'both workers\' admin listeners')
  for (const url of workerAdmins(out()).values()) await waitFor(async () => (await request(`${url}/readyz`)).status === 200, 10_000, 'every worker ready')
  t.equal(told().length, 1, `told once, to one worker: ${told().join('; ')}`)
})

t.test("a worker whose setup said no upstream was seen yet (its hello answered just before a sibling's news came) is ready once the primary passes that news on", async (t) => {
  // the race: the lead saw the app and told the primary, which had just answered this worker's
  // hello with upstreamSeen false; the app then died before this worker took its health copy,
  // so its own table never shows a passed probe. The primary passes `upstream-seen` on to every
  // worker running when it comes. A real Tether as a non-leading worker (no probes of its
  // own), its primary played by the test over the worker's message channel.
  const { WorkerLink } = await import('../src/workers/worker-link.js')
  const [dead] = await freePorts(1) // the app is gone: nothing listens
  let deliver: (m: unknown) => void = () => undefined
  const sent: { tether: string; call?: number }[] = []
  const link = new WorkerLink({
    send: (m) => {
      sent.push(m as never)
      // every call answered as by a primary with no other worker: no copy, nothing recorded
      const { tether: kind, call, op } = m as { tether: string; call?: number; op?: string }
      if (kind === 'call' && call !== undefined) setImmediate(() => deliver({ tether: 'reply', call, value: op === 'members' ? {} : op === 'remember' ? false : null }))
    },
    onMessage: (fn) => { deliver = fn },
  })
  const tether = await startTether(testConfig([{ id: 'a', url: `http://127.0.0.1:${dead}` }], CHECKS), { logger: createLogger('silent'), worker: link })
  t.teardown(() => tether.close(0))
  t.same(await readyz(tether.adminUrl), { status: 503, body: { ready: false, reasons: ['no healthy upstream'], degraded: [] } },
    'not ready: nothing here says the group saw the app')
  const before = sent.length
  deliver({ tether: 'upstream-seen' })
  const after = await readyz(tether.adminUrl)
  t.same([after.status, after.body.ready, after.body.reasons], [200, true, []], 'ready: the group had been ready')
  t.notOk(sent.slice(before).some((m) => m.tether === 'upstream-seen'), 'and it does not tell the primary back')
})

t.test('a fresh Tether whose static upstream is down from the start is not ready: with active checks, seen needs a passed probe', async (t) => {
  const [dead] = await freePorts(1) // nothing listens: every probe is refused
  const tether = await startProxy([{ id: 'a', url: `http://127.0.0.1:${dead}` }], CHECKS)
  t.teardown(() => tether.close(0))
  await healthState(tether.health, 'a', 'unhealthy')
  t.same(await readyz(tether.adminUrl), { status: 503, body: { ready: false, reasons: ['no healthy upstream'], degraded: [] } },
    'not ready: the upstream was listed, never found healthy')
})

t.test('with active checks, a fresh Tether is ready once its upstream passed a probe', async (t) => {
  const app = await startUpstream('a')
  t.teardown(() => app.close())
  const tether = await startProxy([app], CHECKS)
  t.teardown(() => tether.close(0))
  await waitFor(async () => (await readyz(tether.adminUrl)).status === 200, 5000, 'ready after the first probe passed')
  t.same(await readyz(tether.adminUrl), { status: 200, body: { ready: true, reasons: [], degraded: [] } })
})

t.test('a reload that replaces every upstream does not start readiness over: 200 with the degraded line while the new one is down', async (t) => {
  const app = await startUpstream('a')
  t.teardown(() => app.close())
  const tether = await startProxy([app], CHECKS)
  t.teardown(() => tether.close(0))
  await waitFor(async () => (await readyz(tether.adminUrl)).status === 200, 5000, 'ready once a passed its first probe')
  const [dead] = await freePorts(1)
  const down = healthState(tether.health, 'b', 'unhealthy')
  t.same(tether.reload(testConfig([{ id: 'b', url: `http://127.0.0.1:${dead}` }], CHECKS)).applied, ['upstreams'])
  await down
  t.same(await readyz(tether.adminUrl), { status: 200, body: { ready: true, reasons: [], degraded: [NO_UPSTREAM_DEGRADED] } },
    'seen since start: the reload reached every replica alike')
})
