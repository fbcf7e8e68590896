// Gradual rebalance end to end: users of 3 app replicas (real child processes speaking the state
// protocol) when a 4th is added by a config reload, with on_scale_up: gradual. Users move to it
// only at a new visit, with their state, at a bounded rate; no request fails, no update is
// lost; tether_rebalance_pending_users goes to 0. Tether runs on a FakeClock: idle gaps are clock steps.
import t from 'tap'
import { CounterUsers, startCounter, type Counter } from './fixtures/counter-upstream.js'
import { proxyFor, testConfig } from './fixtures/upstream.js'
import { agentFor, runPool } from './fixtures/users.js'
import { FakeClock } from './fixtures/clock.js'
import { startAll } from './fixtures/children.js'
import { DEFAULTS, type Config } from '../src/config/schema.js'

const USERS = 300
const MIN_IDLE = 5 * 60_000
const RATE = 50

t.test(`3 -> 4 replicas under ${USERS} users with on_scale_up: gradual: moves at new visits only, with state, 0 failed, 0 lost`, async (t) => {
  const counters: Counter[] = await startAll(['app-0', 'app-1', 'app-2', 'app-3'].map((id) => startCounter(id)))
  t.teardown(() => Promise.all(counters.map((c) => c.kill())))
  const clock = new FakeClock()
  const over = {
    affinity: { key: 'cookie' as const, cookie: { ...DEFAULTS.affinity.cookie, secure: false }, on_scale_up: 'gradual' as const, rebalance: { min_idle: MIN_IDLE, max_moves_per_second: RATE } },
    state: { store: 'memory' as const },
  }
  const tt = await proxyFor(t, counters.slice(0, 3), over, clock)
  const agent = agentFor(t, 50)
  const users = new CounterUsers(USERS)
  const home = new Array<string>(USERS).fill('')
  let midVisit = 0
  let moved = 0
  let rehydrated = 0
  /** One visit of every user: `requests` requests 10 ms apart (by the clock), 50 users at a time. */
  const visit = (requests: number): Promise<unknown> => runPool(USERS, 50, async (i) => {
    for (let r = 0; r < requests; r++) {
      const a = await users.request(i, tt.url, agent)
      if (a === null) continue
      if (a.moved !== null) {
        moved++
        if (r > 0) midVisit++
        if (a.rehydrated) rehydrated++
      }
      home[i] = a.id
    }
  })
  const pending = async (): Promise<number> => Number(/^tether_rebalance_pending_users (\d+)$/m.exec(await tt.metrics.render())![1])

  await visit(2)
  clock.advance(1_000)
  const next: Config = testConfig(counters, over)
  t.same(tt.reload(next).applied, ['upstreams'], 'app-3 added by a reload')
  const before = await pending()
  t.ok(before > USERS * 0.15 && before < USERS * 0.35, `tether_rebalance_pending_users: ${before} users' hash now prefers app-3`)
  clock.advance(1_000)
  await visit(3)
  t.equal(moved, 0, 'mid-visit: nobody moves')
  let visits = 0
  for (; visits < 5 && (await pending()) > 0; visits++) {
    clock.advance(MIN_IDLE)
    await visit(2)
    t.ok(moved <= (visits + 1) * RATE, `at most ${RATE} moves a second of the clock: ${moved} after ${visits + 1} visits`)
  }
  const share = home.filter((id) => id === 'app-3').length
  t.equal(await pending(), 0, 'nothing pending')
  t.equal(moved, before, 'exactly the pending users moved, once each')
  t.equal(rehydrated, moved, 'each with their checkpoint')
  t.equal(midVisit, 0, 'none mid-visit')
  t.equal(users.failed, 0, 'no request failed')
  t.equal(users.lost, 0, 'no update was lost')
  // the share itself is the hash's (random session ids: 25% give or take a binomial spread, checked above)
  t.equal(share, before, `app-3 holds exactly the users whose hash prefers it (${share} of ${USERS})`)
  t.comment(`gradual rebalance e2e: ${USERS} users, 3 -> 4 replicas; pending at scale-up ${before}; moved ${moved} (rehydrated ${rehydrated}) over ${visits} new visits at <= ${RATE}/s; ` +
    `app-3's share ${((share / USERS) * 100).toFixed(1)}%; moved mid-visit ${midVisit}; failed ${users.failed}; lost updates ${users.lost}`)
})
