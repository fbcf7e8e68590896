// Health end to end through Tether: passive outlier ejection on live traffic (and its limits),
// active checks taking an upstream out and back, and slow start of a recovered upstream.
// Ejection expiry and slow start run on a FakeClock (no sleeping); active checks run on the
// real clock with a short interval, and the test waits on health transitions (with deadlines).
import t, { type Test } from 'tap'
import type http from 'node:http'
import { proxyFor, startUpstream, type Handler, type Upstream } from './fixtures/upstream.js'
import { healthState } from './fixtures/wait.js'
import { CookieJar, agentFor, get, runPool, tally } from './fixtures/users.js'
import { FakeClock } from './fixtures/clock.js'
import type { HealthState } from '../src/health/health-table.js'

const failing: Handler = (_req, res) => { res.statusCode = 500; res.end('broken\n') }

async function upstreams(t: Test, spec: Record<string, Handler | undefined>): Promise<Upstream[]> {
  const ups = await Promise.all(Object.entries(spec).map(([id, h]) => startUpstream(id, h)))
  t.teardown(async () => { await Promise.all(ups.map((u) => u.close())) })
  return ups
}



/** `n` new users (no cookie) make one request each; returns the upstream that answered each. */
async function newUsers(url: string, a: http.Agent, n: number): Promise<string[]> {
  return runPool(n, 20, async () => {
    const r = await get(url, a)
    return r.status === 200 ? r.body.trim() : r.status === 500 ? 'bad' : `status ${r.status}`
  })
}

/** A cookie user pinned to `id` (new users until one lands there). */
async function userOn(url: string, a: http.Agent, id: string, answer: string): Promise<CookieJar> {
  for (let i = 0; i < 200; i++) {
    const jar = new CookieJar()
    const r = await get(url, a, {}, jar)
    if (r.body.trim() === answer) return jar
  }
  throw new Error(`no new user landed on ${id}`)
}

const PASSIVE = { consecutive_failures: 3, base_ejection: 300, max_ejection: 10_000 }

t.test('passive: an upstream answering 500 is ejected after 3 failures, avoided, and back after base_ejection', async (t) => {
  const ups = await upstreams(t, { a: undefined, b: undefined, bad: failing })
  const clock = new FakeClock()
  const tt = await proxyFor(t, ups, { health: { passive: PASSIVE } }, clock)
  const a = agentFor(t)
  const jar = await userOn(tt.url, a, 'bad', 'broken')
  const bad = ups[2]!
  t.equal(tt.health.state('bad'), 'healthy', 'one failure does not eject')
  for (let i = 0; i < 2; i++) t.equal((await get(tt.url, a, {}, jar)).status, 500, 'the 500 is passed through')
  t.equal(tt.health.state('bad'), 'ejected', 'ejected after 3 consecutive 5xx')
  t.equal(tt.health.ready('bad'), false)
  const seen = bad.seen.length
  const placed = tally(await newUsers(tt.url, a, 90))
  t.equal(placed.get('bad') ?? 0, 0, `no new user lands on it while ejected (${JSON.stringify(Object.fromEntries(placed))})`)
  const moved = await get(tt.url, a, {}, jar)
  t.equal(moved.status, 200, 'its pinned user is served elsewhere')
  t.equal(bad.seen.length, seen, 'no request reached the ejected upstream')

  clock.advance(PASSIVE.base_ejection - 1)
  t.equal(tt.health.state('bad'), 'ejected', 'still ejected just before base_ejection')
  clock.advance(1)
  t.equal(tt.health.state('bad'), 'healthy', 'back at base_ejection')
  const again = tally(await newUsers(tt.url, a, 90))
  t.ok((again.get('bad') ?? 0) > 0, `new users land on it again (${JSON.stringify(Object.fromEntries(again))})`)
  t.equal(tt.health.state('bad'), 'ejected', 'and, still failing, it is ejected again')
  clock.advance(PASSIVE.base_ejection)
  t.equal(tt.health.state('bad'), 'ejected', 'the second ejection lasts longer (2 x base_ejection)')
  clock.advance(PASSIVE.base_ejection)
  t.equal(tt.health.state('bad'), 'healthy')
})

t.test('passive: with count_5xx false a 500-answering upstream stays in', async (t) => {
  const ups = await upstreams(t, { a: undefined, b: undefined, bad: failing })
  const tt = await proxyFor(t, ups, { health: { passive: { ...PASSIVE, count_5xx: false } } }, new FakeClock())
  const a = agentFor(t)
  const jar = await userOn(tt.url, a, 'bad', 'broken')
  for (let i = 0; i < 10; i++) t.equal((await get(tt.url, a, {}, jar)).status, 500)
  t.equal(tt.health.state('bad'), 'healthy', 'not ejected after 11 answers of 500')
  t.equal(ups[2]!.seen.length >= 11, true, 'its user kept reaching it')
})

t.test('passive: max_ejection_percent 50 with 2 upstreams both failing ejects at most one', async (t) => {
  const ups = await upstreams(t, { x: failing, y: failing })
  const tt = await proxyFor(t, ups, { health: { passive: { ...PASSIVE, max_ejection_percent: 50 } } }, new FakeClock())
  const ejected = new Set<string>()
  let most = 0
  tt.health.onTransition((e) => {
    if (e.to === 'ejected') ejected.add(e.id)
    else ejected.delete(e.id)
    most = Math.max(most, ejected.size)
  })
  const statuses = tally((await newUsers(tt.url, agentFor(t), 60)).map(String))
  t.equal(statuses.get('bad'), 60, 'every answer is the upstreams\' own 500 (never a 503 for lack of upstreams)')
  t.equal(most, 1, 'exactly one was ejected at a time')
  const states = ['x', 'y'].map((id) => tt.health.state(id))
  t.same(states.filter((s) => s === 'ejected').length, 1, `one ejected, one kept (${states.join(', ')})`)
})

t.test('active: /healthz 503 makes an upstream unhealthy with no traffic; 200 again brings it back', async (t) => {
  let sick = false
  const probe = (id: string): Handler => (req, res) => {
    if (req.url === '/healthz') { res.statusCode = id === 'sick' && sick ? 503 : 200; res.end(); return }
    res.end(`${id}\n`)
  }
  const ups = await upstreams(t, { a: probe('a'), b: probe('b'), sick: probe('sick') })
  const tt = await proxyFor(t, ups, { health: { active: { path: '/healthz', interval: 100, timeout: 200 } } })
  const a = agentFor(t)
  const states: HealthState[] = []
  const details: string[] = []
  tt.health.onTransition((e) => { if (e.id === 'sick' && e.to !== null) (states.push(e.to), details.push(e.detail)) })
  const jar = await userOn(tt.url, a, 'sick', 'sick')
  sick = true
  await healthState(tt.health, 'sick', 'unhealthy', 3_000)
  t.pass('unhealthy after failing probes')
  const before = ups[2]!.seen.filter((r) => r.url !== '/healthz').length
  const placed = tally(await newUsers(tt.url, a, 60))
  t.equal(placed.get('sick') ?? 0, 0, 'no new user lands on it')
  const moved = await get(tt.url, a, {}, jar)
  t.equal(moved.status, 200)
  t.not(moved.body.trim(), 'sick', 'its pinned user is served elsewhere')
  t.equal(ups[2]!.seen.filter((r) => r.url !== '/healthz').length, before, 'it got no traffic')
  sick = false
  await healthState(tt.health, 'sick', 'healthy', 3_000)
  t.same(states, ['unhealthy', 'healthy'], 'one transition each way')
  t.same(details, ['failed 2 active checks in a row, last: status 503', 'passed 2 active checks in a row'], 'the logged detail says why the last check failed')
  const back = tally(await newUsers(tt.url, a, 60))
  t.ok((back.get('sick') ?? 0) > 0, `new users land on it again (${JSON.stringify(Object.fromEntries(back))})`)
})

t.test('slow start: a recovered upstream gets a small share of new users at first, its full share later', async (t) => {
  const ups = await upstreams(t, { a: undefined, b: undefined, c: undefined })
  const clock = new FakeClock()
  const WINDOW = 2_000
  const tt = await proxyFor(t, ups, { health: { slow_start: WINDOW } }, clock)
  const a = agentFor(t)
  const N = 300
  const fair = N / 3
  const share = async (): Promise<number> => (tally(await newUsers(tt.url, a, N)).get('c') ?? 0)
  const start = await share()
  t.ok(start > fair * 0.6, `all equal at start-up: c took ${start} of ${N}`)
  tt.health.disable('c')
  tt.health.enable('c')
  t.equal(tt.health.slowStartWeight('c'), 0.1, 'ramp starts at the 10% floor')
  const early = await share()
  t.ok(early < fair * 0.3, `just recovered: c took ${early} of ${N} (< 30% of its fair ${fair})`)
  clock.advance(WINDOW / 2)
  const mid = await share()
  t.ok(mid > early && mid < fair * 0.8, `half-way: c took ${mid} of ${N}`)
  clock.advance(WINDOW / 2)
  t.equal(tt.health.slowStartWeight('c'), 1)
  const late = await share()
  t.ok(late > fair * 0.6, `after the window: c took ${late} of ${N} (> 60% of its fair ${fair})`)
  t.comment(`slow start shares of c (fair ${fair}): start ${start}, just recovered ${early}, half-way ${mid}, after ${late}`)
})
