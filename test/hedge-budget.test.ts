// Hedges within the retry budget: a hedge is an extra attempt, so it counts against
// `retries.attempts` and starts only within `retries.try_duration` of the request's arrival, as
// Envoy's hedge on a per-try timeout is a retry that counts toward its retry limits. Raw
// upstreams on 127.0.0.1 (exact bytes, fresh connections so no kept-alive resend comes in
// between); the test fires the hedge itself (HedgeTimers) once the home holds the request.
import t, { type Test } from 'tap'
import { startTether, type Tether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { hashKey as hashOf } from '../src/placement/hash.js'
import { FakeClock } from './fixtures/clock.js'
import { HEDGE_AFTER, HedgeTimers } from './fixtures/hedge-timers.js'
import { LogCapture } from './fixtures/log-capture.js'
import { ok, startRawUpstream, type RawUpstream, type RawUpstreamConnection } from './fixtures/raw-upstream.js'
import { request, testConfig } from './fixtures/upstream.js'
import { waitFor } from './fixtures/wait.js'

/** A key the hash places on `id` (header affinity). */
function userOn(px: Tether, id: string): string {
  for (let i = 0; ; i++) if (px.router.placement.ids[px.router.placement.pick(hashOf(`u${i}`))] === id) return `u${i}`
}

const NO_HEDGE = /^no answer head yet, but no hedge/

interface World {
  readonly px: Tether
  readonly ups: RawUpstream[]
  readonly logs: LogCapture
  readonly timers: HedgeTimers
  readonly clock: FakeClock
  readonly user: string
  /** The home's connections holding a request to /x (it never answers them itself). */
  readonly held: RawUpstreamConnection[]
}

/**
 * Three raw upstreams a, b, c and Tether (header affinity, `retries` as given, hedges fired by
 * the test) with a user whose home is a. Every answer to /setup closes its connection; a request
 * to /x is held by a, and reset (no byte of an answer) by b and c.
 */
async function world(t: Test, retries: { attempts?: number; try_duration?: number }): Promise<World> {
  const held: RawUpstreamConnection[] = []
  const ups: RawUpstream[] = []
  for (const id of ['a', 'b', 'c']) {
    ups.push(await startRawUpstream(id, (req, conn) => {
      if (req.target === '/setup') return conn.end(ok(id, 'connection: close\r\n'))
      if (id === 'a') return void held.push(conn)
      conn.destroy()
    }))
  }
  const logs = new LogCapture()
  const timers = new HedgeTimers()
  const clock = new FakeClock(Date.now())
  const px = await startTether(testConfig(ups.map((u) => ({ id: u.id, url: u.url })), {
    affinity: { key: 'header', header: { name: 'x-user' } },
    retries: { ...retries, hedge_after: HEDGE_AFTER },
    health: { active: { enabled: false } },
    log: { level: 'debug', access: true },
  }), { logger: createLogger('debug', logs), timers, clock })
  t.teardown(async () => {
    for (const c of held) c.destroy()
    await px.close(0)
    await Promise.all(ups.map((u) => u.close()))
  })
  const user = userOn(px, 'a')
  t.equal((await request(`${px.url}/setup`, { headers: { 'x-user': user } })).body, 'a', "the user's home is a")
  return { px, ups, logs, timers, clock, user, held }
}

/** Requests to /x the upstreams other than a received. */
function elsewhere(w: World): number {
  return w.ups.filter((u) => u.id !== 'a').reduce((n, u) => n + u.requests.filter((q) => q.target === '/x').length, 0)
}

t.test('with retries.attempts 0 a slow request is not hedged: the budget has no attempt for it', async (t) => {
  const w = await world(t, { attempts: 0 })
  const pending = request(`${w.px.url}/x`, { headers: { 'x-user': w.user } })
  await waitFor(() => w.held.length === 1, 10_000, 'a holding the request')
  await w.timers.hedge()
  await waitFor(() => w.logs.records.some((r) => NO_HEDGE.test(String(r['msg']))), 10_000, 'the hedge withheld')
  w.held[0]!.write(ok('a-late'))
  const r = await pending
  t.equal(r.status, 200)
  t.equal(r.body, 'a-late', "the home's answer")
  t.equal(elsewhere(w), 0, 'no other upstream got the request')
  t.match(w.logs.records.find((r) => NO_HEDGE.test(String(r['msg']))), { upstream: 'a', attempts: 0 })
})

t.test('with retries.attempts 1 a hedge uses the one extra attempt: when the hedge and the first attempt both fail, no third upstream is tried (502)', async (t) => {
  const w = await world(t, { attempts: 1 })
  const pending = request(`${w.px.url}/x`, { headers: { 'x-user': w.user } })
  await waitFor(() => w.held.length === 1, 10_000, 'a holding the request')
  await w.timers.hedge()
  await waitFor(() => elsewhere(w) === 1, 10_000, 'the hedge sent to the next upstream (which resets it)')
  w.held[0]!.destroy()
  const r = await pending
  t.equal(r.status, 502, 'the first attempt\'s failure is the answer')
  t.equal(elsewhere(w), 1, 'no third attempt: the hedge was the extra one')
  t.equal(w.ups[0]!.requests.filter((q) => q.target === '/x').length, 1, 'the home got it once')
})

t.test('with retries.attempts 2 the same request gets its third attempt after the hedged pair failed (the budget left for it)', async (t) => {
  const w = await world(t, { attempts: 2 })
  const pending = request(`${w.px.url}/x`, { headers: { 'x-user': w.user } })
  await waitFor(() => w.held.length === 1, 10_000, 'a holding the request')
  await w.timers.hedge()
  await waitFor(() => elsewhere(w) === 1, 10_000, 'the hedge sent to the next upstream (which resets it)')
  w.held[0]!.destroy()
  const r = await pending
  t.equal(r.status, 502, 'every upstream failed')
  t.equal(elsewhere(w), 2, 'the retry went to the third upstream')
})

t.test('a hedge is not sent once retries.try_duration has passed since the request arrived', async (t) => {
  const w = await world(t, { attempts: 2, try_duration: 1000 })
  const pending = request(`${w.px.url}/x`, { headers: { 'x-user': w.user } })
  await waitFor(() => w.held.length === 1, 10_000, 'a holding the request')
  w.clock.advance(1000)
  await w.timers.hedge()
  await waitFor(() => w.logs.records.some((r) => NO_HEDGE.test(String(r['msg']))), 10_000, 'the hedge withheld')
  w.held[0]!.write(ok('a-late'))
  const r = await pending
  t.equal(r.status, 200)
  t.equal(r.body, 'a-late', "the home's answer")
  t.equal(elsewhere(w), 0, 'no other upstream got the request')
})
