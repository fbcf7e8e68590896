// Spill under overload, measured end to end: three app replicas (real child processes speaking
// the state protocol), the busiest made 5x slower than the others; users with checkpointed state
// visit in rounds through a real Tether with `affinity.spill` at its documented defaults. The
// slow replica's in-flight requests (sampled from Tether's own counts at every request start)
// come from over factor x the mean to within it; the users moved carry `X-Tether-Moved:
// reason=spill`, get their state back (0 lost updates) and never move mid-visit; 0 failed.
// Tether runs on a FakeClock: the idle gap between visits is a clock step, not a sleep.
import t from 'tap'
import { CounterUsers, slowDown, startCounter, type Counter, type CounterAnswer } from './fixtures/counter-upstream.js'
import { proxyFor, request } from './fixtures/upstream.js'
import { agentFor, runPool, tally } from './fixtures/users.js'
import { FakeClock } from './fixtures/clock.js'
import { startAll } from './fixtures/children.js'
import { DEFAULTS } from '../src/config/schema.js'

const USERS = 60
const CONCURRENCY = 12
const VISIT = 2 // requests per visit
const IDS = ['app-0', 'app-1', 'app-2']
const FAST_MS = 50
const SLOW_MS = 5 * FAST_MS
const SPILL_ROUNDS = 6 // visits per user with spill at work, at least
const MAX_SPILL_ROUNDS = 24 // and at most, while the slow upstream is still over the bound (a busy machine converges slower)
const SPILL = DEFAULTS.spill // factor 1.5, min_idle 30 s, 10 moves a second

/** In-flight samples over a round: the slow upstream's and all upstreams'. */
interface Window { slow: number; total: number; samples: number }

t.test('with one upstream 5x slower, spill brings its in-flight requests within factor x the mean; moved users keep their state, 0 failed, 0 lost', async (t) => {
  const counters: Counter[] = await startAll(IDS.map((id) => startCounter(id)))
  t.teardown(() => Promise.all(counters.map((c) => c.kill())))
  const clock = new FakeClock()
  const tt = await proxyFor(t, counters, {
    affinity: { key: 'cookie', cookie: { ...DEFAULTS.affinity.cookie, secure: false }, spill: SPILL },
    state: { store: 'memory' },
  }, clock)
  const agent = agentFor(t, CONCURRENCY)
  const users = new CounterUsers(USERS)

  let slowId = ''
  let window: Window = { slow: 0, total: 0, samples: 0 }
  const home = new Map<number, string>()
  const moves: string[] = []
  const moved = new Set<number>()
  const rehydrated = new Set<number>()
  let midVisit = 0
  let otherMoves = 0
  /** One visit of every user (CONCURRENCY at a time), VISIT requests in a row each, sampling the in-flight counts. */
  const round = async (): Promise<Window> => {
    window = { slow: 0, total: 0, samples: 0 }
    await runPool(USERS, CONCURRENCY, async (i) => {
      for (let r = 0; r < VISIT; r++) {
        window.slow += slowId === '' ? 0 : tt.inFlight.count(slowId)
        window.total += IDS.reduce((n, id) => n + tt.inFlight.count(id), 0)
        window.samples++
        const a: CounterAnswer | null = await users.request(i, tt.url, agent)
        if (a === null) continue
        if (a.moved !== null) {
          moves.push(`u${i}: ${a.moved} -> ${a.id}`)
          if (!a.moved.includes('reason=spill')) otherMoves++
          if (r > 0) midVisit++
          moved.add(i)
          if (a.rehydrated) rehydrated.add(i)
        }
        home.set(i, a.id)
      }
    })
    return window
  }
  const onSlow = (): number => [...home.values()].filter((id) => id === slowId).length

  await round() // every user's first visit, placed by the hash of their new session id
  // the busiest replica becomes 5x slower than the others
  slowId = [...tally(home.values())].sort((a, b) => b[1] - a[1])[0]![0]
  await slowDown(counters.find((c) => c.id === slowId)!, SLOW_MS)
  await Promise.all(counters.filter((c) => c.id !== slowId).map((c) => slowDown(c, FAST_MS)))
  const slowAtStart = onSlow()
  const before = await round() // a second request in the same visit: nobody is idle, nobody moves
  t.equal(moves.length, 0, 'nobody moves while nobody is idle')
  let after = before
  let spillRounds = 0
  const excess = (w: Window, tolerance: number): number => w.slow / w.samples - tolerance * SPILL.factor * (w.total / w.samples / 3)
  while (spillRounds < MAX_SPILL_ROUNDS && (spillRounds < SPILL_ROUNDS || excess(after, 1.1) > 0)) {
    clock.advance(SPILL.min_idle) // the users come back: a new visit each
    after = await round()
    spillRounds++
  }
  t.comment(`${spillRounds} visits with spill at work`)
  const slowAtEnd = onSlow()
  const fmt = (w: Window): string => {
    const mean = w.total / w.samples / 3
    return `${(w.slow / w.samples).toFixed(1)} (mean ${mean.toFixed(1)}, bound ${(SPILL.factor * mean).toFixed(1)})`
  }

  t.ok(excess(before, 1) > 0, `before: ${slowId}'s in-flight ${fmt(before)} is over factor x the mean`)
  // spill stops once the slow upstream's (time-averaged) load is under the bound, so it ends
  // near it: 10% allows for sampling at request starts and for the other tests' CPU use
  t.ok(excess(after, 1.1) <= 0, `after: ${fmt(after)} is within factor x the mean (+10% for sampling)`)
  t.ok(slowAtEnd < slowAtStart, `users on the slow upstream: ${slowAtStart} -> ${slowAtEnd}`)
  t.equal(otherMoves, 0, 'every move has reason=spill')
  t.equal(midVisit, 0, 'nobody moved in the middle of a visit')
  const fromSlow = moves.filter((m) => m.includes(`from=${slowId};`)).length
  t.ok(fromSlow > moves.length / 2, `most moves leave the slow upstream: ${fromSlow} of ${moves.length}`)
  if (fromSlow < moves.length) t.comment(`moves: ${moves.join(', ')}`)
  t.equal(rehydrated.size, moved.size, 'every moved user was rehydrated on their new upstream')
  t.equal(users.failed, 0, '0 failed requests')
  t.equal(users.lost, 0, '0 lost updates')
  const metrics = (await request(`${tt.adminUrl}/metrics`)).body
  const spilled = [...metrics.matchAll(/^tether_failovers_total\{[^}]*reason="spill"[^}]*\} (\d+)/gm)].reduce((n, m) => n + Number(m[1]), 0)
  t.equal(spilled, moves.length, 'tether_failovers_total{reason="spill"} counts the moves')
  const figure = `# spill: slow upstream in-flight before ${fmt(before)} after ${fmt(after)}; users on it ${slowAtStart} -> ${slowAtEnd} of ${USERS}; ` +
    `${moved.size} users moved (${fromSlow} of ${moves.length} moves from it), ${rehydrated.size} rehydrated, ${users.failed} failed, ${users.lost} lost`
  t.comment(figure)
  process.stderr.write(`${figure}\n`)
})
