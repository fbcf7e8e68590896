// Slow start when the ramping upstreams are all that take new users: after an outage of every
// upstream (or of the only one), the first to come back ramps under `health.slow_start`, but
// the ramp is a share among the upstreams that take new users, not a refusal: with nowhere
// else to go, every new user is placed there (as Envoy's weights are relative, and HAProxy's
// lone slow-starting server takes all). End to end through Tether with real upstreams on
// loopback; health changes are made on the table and slow start runs on a FakeClock.
import t, { type Test } from 'tap'
import { proxyFor, startUpstream, type Upstream } from './fixtures/upstream.js'
import { agentFor, get, runPool, tally, CookieJar } from './fixtures/users.js'
import { FakeClock } from './fixtures/clock.js'

const WINDOW = 60_000

async function upstreams(t: Test, ids: string[]): Promise<Upstream[]> {
  const ups = await Promise.all(ids.map((id) => startUpstream(id)))
  t.teardown(async () => { await Promise.all(ups.map((u) => u.close())) })
  return ups
}

t.test('every upstream was out, one is back and ramping: every new user is answered there, none gets 503', async (t) => {
  const ups = await upstreams(t, ['a', 'b', 'c'])
  const clock = new FakeClock()
  const tt = await proxyFor(t, ups, { health: { slow_start: WINDOW } }, clock)
  const agent = agentFor(t)
  for (const id of ['a', 'b', 'c']) tt.health.disable(id)
  tt.health.enable('b')
  t.equal(tt.health.slowStartWeight('b'), 0.1, 'b ramps from the 10% floor')
  const answers = tally(await runPool(60, 10, async () => {
    const r = await get(tt.url, agent)
    return r.status === 200 ? r.body.trim() : `status ${r.status}`
  }))
  t.same(Object.fromEntries(answers), { b: 60 }, 'all 60 new users on b')
  // a user of a dead upstream (a, still out) goes there too
  tt.health.enable('a')
  let jar = new CookieJar()
  for (let i = 0; i < 200 && (await get(tt.url, agent, {}, jar)).body.trim() !== 'a'; i++) jar = new CookieJar()
  t.equal((await get(tt.url, agent, {}, jar)).body.trim(), 'a', 'a user pinned to a')
  tt.health.disable('a')
  const moved = await get(tt.url, agent, {}, jar)
  t.same([moved.status, moved.body.trim()], [200, 'b'], 'and a user of an upstream that is out again')
})

t.test('one upstream, back from an outage under slow start: new users are answered', async (t) => {
  const ups = await upstreams(t, ['solo'])
  const clock = new FakeClock()
  const tt = await proxyFor(t, ups, { health: { slow_start: WINDOW } }, clock)
  const agent = agentFor(t)
  tt.health.disable('solo')
  tt.health.enable('solo')
  const statuses = tally(await runPool(40, 10, async () => String((await get(tt.url, agent)).status)))
  t.same(Object.fromEntries(statuses), { 200: 40 }, 'all 40 answered 200')
})
