// An upstream ejected because its connections were refused (nothing listened: the process
// crashed, a pod restarting) is back as soon as its active probes pass again, `healthy_threshold`
// of them in a row, not at the end of the ejection time (which grows with each ejection, up to
// `max_ejection`): as Envoy's `successful_active_health_check_uneject_host`. Without active
// checks the ejection runs its course. End to end through Tether with a real upstream that
// stops listening and listens again on the same port; active checks on the real clock with a
// short interval (the test waits on health transitions, with deadlines), the timed case on a
// FakeClock.
import t, { type Test } from 'tap'
import type http from 'node:http'
import { proxyFor, startUpstream, type Upstream } from './fixtures/upstream.js'
import { healthState } from './fixtures/wait.js'
import { CookieJar, agentFor, get } from './fixtures/users.js'
import { FakeClock } from './fixtures/clock.js'
import type { HealthTransition } from '../src/health/health-table.js'

const EJECTION = 60_000 // far longer than any of these tests may run

async function upstreams(t: Test, ids: readonly string[]): Promise<Upstream[]> {
  const ups = await Promise.all(ids.map((id) => startUpstream(id)))
  t.teardown(async () => { await Promise.all(ups.map((u) => u.close())) })
  return ups
}

/** A cookie user pinned to `id` (new users until one lands there). */
async function userOn(url: string, a: http.Agent, id: string): Promise<CookieJar> {
  for (let i = 0; i < 200; i++) {
    const jar = new CookieJar()
    if ((await get(url, a, {}, jar)).body.trim() === id) return jar
  }
  throw new Error(`no new user landed on ${id}`)
}

/** Listen again on the port `up` had (the same server object: the same address for Tether). */
function listenAgain(up: Upstream): Promise<void> {
  return new Promise((resolve, reject) => {
    up.server.once('error', reject)
    up.server.listen(up.port, '127.0.0.1', () => { up.server.off('error', reject); resolve() })
  })
}

/** Closes `up`'s listener and waits until it is closed (a connection to its port is refused). */
function stopListening(up: Upstream): Promise<void> {
  return new Promise((resolve) => { up.server.closeAllConnections(); up.server.close(() => resolve()) })
}

t.test('an upstream ejected for refused connections serves again once its active probes pass, long before the ejection time', async (t) => {
  const ups = await upstreams(t, ['a', 'b'])
  const b = ups[1]!
  const tt = await proxyFor(t, ups, {
    health: {
      // probes of one upstream come a second apart (a quarter of that after a failure): the
      // refused request below ejects b well before 5 failed probes could make it unhealthy
      // (then it would get no request to be refused), also on a loaded host
      active: { enabled: true, path: '/healthz', interval: 1_000, timeout: 500, healthy_threshold: 2, unhealthy_threshold: 5 },
      passive: { base_ejection: EJECTION, max_ejection: 5 * EJECTION, max_ejection_percent: 50 },
    },
  })
  const seen: HealthTransition[] = []
  tt.health.onTransition((e) => { if (e.id === 'b') seen.push(e) })
  const agent = agentFor(t)
  const jar = await userOn(tt.url, agent, 'b')

  await stopListening(b)
  const moved = await get(tt.url, agent, {}, jar)
  t.same([moved.status, moved.body.trim()], [200, 'a'], "b's user is served by a at once (a refused connection is retried)")
  t.equal(tt.health.state('b'), 'ejected', 'b is ejected by the refused connection')
  const ejectedUntil = tt.health.snapshot().find((u) => u.id === 'b')!.ejectedUntil!
  t.ok(ejectedUntil - Date.now() > EJECTION - 10_000, 'for the ejection time (60 s)')

  await listenAgain(b) // the process is back (a restarted pod, the same address)
  const back = Date.now()
  await healthState(tt.health, 'b', 'healthy', 10_000)
  t.ok(Date.now() - back < 10_000, `healthy again ${Date.now() - back} ms after it listened again, not after ${EJECTION} ms`)
  const ended = seen.find((e) => e.from !== null && e.to === 'healthy')!
  t.match(ended, { reason: 'ejection_expired', detail: /passed 2 active checks in a row/ }, 'the log says why it ended early')
  t.equal(tt.health.snapshot().find((u) => u.id === 'b')!.timesEjected, 1, 'the ejection still counts toward the next one (back-off)')

  // it serves again: new users land on it
  const before = b.seen.filter((r) => r.url !== '/healthz').length
  for (let i = 0; i < 200 && b.seen.filter((r) => r.url !== '/healthz').length === before; i++) await get(tt.url, agent)
  t.ok(b.seen.filter((r) => r.url !== '/healthz').length > before, 'new users reach b again')
})

t.test('without active checks an ejection for refused connections runs its course, also once the upstream listens again', async (t) => {
  const ups = await upstreams(t, ['a', 'b'])
  const b = ups[1]!
  const clock = new FakeClock()
  const tt = await proxyFor(t, ups, { health: { passive: { base_ejection: EJECTION, max_ejection: 5 * EJECTION, max_ejection_percent: 50 } } }, clock)
  const agent = agentFor(t)
  const jar = await userOn(tt.url, agent, 'b')
  await stopListening(b)
  t.equal((await get(tt.url, agent, {}, jar)).status, 200, "b's user is served by a")
  t.equal(tt.health.state('b'), 'ejected')
  await listenAgain(b)
  const before = b.seen.length
  for (let i = 0; i < 30; i++) await get(tt.url, agent)
  t.equal(b.seen.length, before, 'listening again, b gets no request while ejected')
  clock.advance(EJECTION - 1)
  t.equal(tt.health.state('b'), 'ejected', 'still ejected just before the ejection time')
  clock.advance(1)
  t.equal(tt.health.state('b'), 'healthy', 'back at the ejection time')
  for (let i = 0; i < 200 && b.seen.length === before; i++) await get(tt.url, agent)
  t.ok(b.seen.length > before, 'new users reach b again')
})
