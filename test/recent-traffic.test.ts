// The status page's recent traffic, on a fake clock: request rate, error rate and p99 over the
// window, moves per minute by reason, the per-second request history, and how old seconds and
// removed upstreams fall out. Also the /status view built from it.
import t from 'tap'
import { HISTORY_SECONDS, RecentTraffic, WINDOW_SECONDS, bucketOf } from '../src/observability/recent-traffic.js'
import { combineStatus, statusView } from '../src/admin/status-view.js'
import type { UpstreamRow } from '../src/admin/upstream-row.js'

const T0 = Date.parse('2025-11-25T16:00:00.000Z')

function traffic(): { recent: RecentTraffic; at: (ms: number) => void } {
  let now = T0
  return { recent: new RecentTraffic(() => now), at: (ms) => { now = T0 + ms } }
}

t.test('the rate counts the requests of the window, divided by the time the window covers', async (t) => {
  const { recent, at } = traffic()
  at(20_000)
  for (let i = 0; i < 30; i++) recent.observeRequest('a', 'GET', 200, 0.01)
  at(20_500)
  // 10 complete seconds plus half of the current one
  t.equal(recent.snapshot(['a']).upstreams['a']!.requests_per_second, Math.round(30 / 10.5 * 100) / 100)
  at(20_000 + (WINDOW_SECONDS + 1) * 1000)
  t.same(recent.snapshot(['a']).upstreams['a'], { requests_per_second: 0, error_rate: null, p99_ms: null }, 'the requests left the window')
})

t.test('a young Tether divides by its age, at least one second', async (t) => {
  const { recent, at } = traffic()
  at(2_000)
  for (let i = 0; i < 10; i++) recent.observeRequest('a', 'GET', 200, 0.01)
  t.equal(recent.snapshot(['a']).upstreams['a']!.requests_per_second, 5)
  const young = traffic()
  young.recent.observeRequest('a', 'GET', 200, 0.01)
  t.equal(young.recent.snapshot(['a']).upstreams['a']!.requests_per_second, 1)
})

t.test('5xx and answers without a status are errors; 4xx are not', async (t) => {
  const { recent, at } = traffic()
  at(30_000)
  for (const status of [200, 404, 500, 503, 0, null, 302, 200]) recent.observeRequest('a', 'GET', status, 0.01)
  t.equal(recent.snapshot(['a']).upstreams['a']!.error_rate, 0.5)
})

t.test('p99 is the upper bound of the bucket of the 99th percentile, at most 25% above it', async (t) => {
  const { recent, at } = traffic()
  at(30_000)
  for (let i = 0; i < 990; i++) recent.observeRequest('a', 'GET', 200, 0.002)
  for (let i = 0; i < 10; i++) recent.observeRequest('a', 'GET', 200, 0.4)
  const p99 = recent.snapshot(['a']).upstreams['a']!.p99_ms!
  t.ok(p99 >= 2 && p99 <= 2.5, `p99 ${p99} ms for 99% at 2 ms`)
  recent.observeRequest('a', 'GET', 200, 0.4)
  const p99b = recent.snapshot(['a']).upstreams['a']!.p99_ms!
  t.ok(p99b >= 400 && p99b <= 500, `p99 ${p99b} ms once more than 1% took 400 ms`)
})

t.test('latency buckets grow by 1.25 from 0.25 ms and clamp at both ends', async (t) => {
  t.equal(bucketOf(-1), 0)
  t.equal(bucketOf(Number.NaN), 0)
  t.equal(bucketOf(0.25), 0)
  t.equal(bucketOf(0.3), 1)
  t.equal(bucketOf(0.3125), 1, 'an exact bound stays in its bucket')
  t.equal(bucketOf(1e9), 63)
})

t.test('moves per minute count the last 60 s by reason', async (t) => {
  const { recent, at } = traffic()
  at(100_000)
  recent.failover('a', 'dead')
  recent.failover('a', 'dead')
  at(130_000)
  recent.failover('b', 'drain')
  t.same(recent.snapshot([]).moves_per_minute, { dead: 2, drain: 1, rebalance: 0, spill: 0, admin: 0, restart: 0 })
  at(160_500)
  t.same(recent.snapshot([]).moves_per_minute, { dead: 0, drain: 1, rebalance: 0, spill: 0, admin: 0, restart: 0 }, 'the dead moves are more than 60 s old')
})

t.test('the history holds the last 60 complete seconds, oldest first, requests without an upstream included', async (t) => {
  const { recent, at } = traffic()
  at(100_200)
  recent.observeRequest('a', 'GET', 200, 0.01)
  recent.observeRequest(null, 'GET', 503, 0.001)
  at(101_300)
  recent.observeRequest('a', 'GET', 200, 0.01)
  const history = recent.snapshot(['a']).requests_per_second
  t.equal(history.length, HISTORY_SECONDS)
  t.same(history.slice(-2), [0, 2], 'the current second is not shown until it is complete')
  at(102_000)
  t.same(recent.snapshot(['a']).requests_per_second.slice(-3), [0, 2, 1])
})

t.test('an upstream not asked for is forgotten once its requests left the window', async (t) => {
  const { recent, at } = traffic()
  at(50_000)
  recent.observeRequest('gone', 'GET', 200, 0.01)
  at(50_000 + WINDOW_SECONDS * 1000)
  recent.snapshot([])
  t.equal(recent.snapshot(['gone']).upstreams['gone']!.requests_per_second > 0, true, 'still within the window: kept')
  at(50_000 + (WINDOW_SECONDS + 1) * 1000)
  recent.snapshot([])
  recent.observeRequest('other', 'GET', 200, 0.01)
  t.same(recent.snapshot(['gone']).upstreams['gone'], { requests_per_second: 0, error_rate: null, p99_ms: null })
})

t.test('sweep: removed upstreams are forgotten once their requests left the window, without anyone asking for a snapshot', async (t) => {
  const { recent, at } = traffic()
  at(50_000)
  for (let i = 0; i < 50; i++) recent.observeRequest(`pod-${i}`, 'GET', 200, 0.01) // a rollout's pods, each once
  recent.observeRequest('app-0', 'GET', 200, 0.01)
  recent.sweep(['app-0'])
  t.equal(recent.held, 51, 'within the window: all kept')
  at(50_000 + (WINDOW_SECONDS + 1) * 1000)
  recent.sweep(['app-0'])
  t.equal(recent.held, 1, 'past it: only the current upstream is held')
})

t.test('the /status view joins rows and traffic and turns times into countdowns', async (t) => {
  const row = { id: 'a', ejected_until: '2025-11-25T16:00:30.000Z', draining_since: null } as unknown as UpstreamRow
  const drained = { id: 'b', ejected_until: null, draining_since: '2025-11-25T15:59:00.000Z' } as unknown as UpstreamRow
  const { recent, at } = traffic()
  at(20_000)
  recent.observeRequest('b', 'GET', 200, 0.01)
  const view = statusView({ now: T0 + 20_000, notReady: [], degraded: ['redis'], rows: [row, drained], traffic: recent.snapshot(['a', 'b']), sessionLookup: true })
  t.equal(view.time, '2025-11-25T16:00:20.000Z')
  t.equal(view.ready, true)
  t.same(view.upstreams.map((u) => [u.id, u.ejection_remaining_ms, u.draining_for_ms, u.requests_per_second]), [['a', 10_000, null, 0], ['b', null, 80_000, 0.1]])
  t.equal(view.window_seconds, WINDOW_SECONDS)
})

t.test('views of several workers combine: traffic adds up, error rates weigh by requests, p99 is the largest', async (t) => {
  const at = (n: number): RecentTraffic => {
    const r = new RecentTraffic(() => T0 + 20_000)
    for (let i = 0; i < n; i++) r.observeRequest('a', 'GET', i < n / 5 && n === 100 ? 500 : 200, n === 100 ? 0.1 : 0.002)
    r.failover('a', 'dead')
    return r
  }
  const row = { id: 'a', ejected_until: null, draining_since: null, in_flight: 2, queued: 1, websockets: 1, sessions: 7 } as unknown as UpstreamRow
  const view = (r: RecentTraffic) => statusView({ now: T0 + 20_000, notReady: [], degraded: [], rows: [row], traffic: r.snapshot(['a']), sessionLookup: true })
  const [lead, other] = [view(at(100)), view(at(300))]
  const both = combineStatus([lead, other])
  const a = both.upstreams[0]!
  t.equal(a.requests_per_second, lead.upstreams[0]!.requests_per_second + other.upstreams[0]!.requests_per_second)
  t.equal(a.error_rate, 0.05, '20 errors in 400 requests')
  t.equal(a.p99_ms, lead.upstreams[0]!.p99_ms, 'the slower worker decides')
  t.same([a.in_flight, a.queued, a.websockets, a.sessions], [4, 2, 2, 7], 'sessions are the shared table, not summed')
  t.equal(both.moves_per_minute.dead, 2)
  t.equal(both.requests_per_second.length, 60)
  t.same(combineStatus([lead]), lead, 'one view is itself')
  // a drain's remaining users: the most any worker counts (the lead may have served none of them)
  const draining = (n: number | null) => ({ ...lead, upstreams: lead.upstreams.map((u) => ({ ...u, sessions_remaining: n })) })
  t.equal(combineStatus([draining(1), draining(13)]).upstreams[0]!.sessions_remaining, 13)
  t.equal(combineStatus([draining(null), draining(null)]).upstreams[0]!.sessions_remaining, null)
})
