// What the request path costs a plain request in clock reads: a read of Date.now cost about
// 0.2% of a proxied request's CPU in issue 14's profile, and a plain request read it 8 times
// (its key, its decision, health's ready and passive report, each on its own). Now one read
// when it arrives serves every step up to its decision, one the answer's head, one the status
// page's recent traffic. Counted through the injected clock: deterministic, no timing.
import t from 'tap'
import type { Clock } from '../src/clock.js'
import { boundCookieUser } from './fixtures/plain-requests.js'

// with on_scale_up gradual/rebalance a staying user's request asked the placement whether an
// upstream that joined after their pin now prefers them, hashing their key and reading the clock
// for slow start (off) for every candidate, though nothing joined since start (review r1)
for (const on_scale_up of ['persistent', 'gradual', 'rebalance'] as const) {
  t.test(`a plain GET of a user bound to a ready upstream (3 upstreams, on_scale_up ${on_scale_up}) reads the wall clock at most 3 times`, async (t) => {
    let counting = false
    let reads = 0
    const clock: Clock = {
      now: () => {
        if (counting) reads++
        return Date.now()
      },
      monotonic: () => performance.now(),
    }
    const user = await boundCookieUser(t, clock, { upstreams: 3, affinity: { on_scale_up } })
    const requests = 100
    counting = true
    await user.send(requests)
    counting = false
    // (background work, a health tick or a sweep, may read it too meanwhile: well under one a request)
    t.ok(reads / requests <= 3.5, `wall-clock reads a request: ${reads / requests} (3: arrival, answer head, recent traffic)`)
  })
}
