// affinity.absolute_timeout for bindings and rotation graces that come from elsewhere: a shared
// binding (Redis: SessionTable.sync), a sibling's copy or write (workers: applyCopy, applyRemote,
// copyRotation). Each ends when the user's affinity ends, as a local pin does: none is made again
// with the current time, and a rotation grace copied with its creation time continues it.
// Pure: the session table with explicit `now` values.
import t from 'tap'
import { SessionTable, type BindingSink } from '../src/affinity/session-table.js'
import { learnAppCookie } from '../src/affinity/app-cookie.js'

const IDLE = 60_000
const ABSOLUTE = 120_000

/** A session table with absolute_timeout 120 s whose written-through pins and unpins are recorded in `bound`. */
function table() {
  const bound: (readonly [key: string, upstream: string, epoch: number, renewal: boolean, createdAt: number] | readonly ['unbound', string])[] = []
  const sink: BindingSink = { bound: (...b) => void bound.push(b), unbound: (key) => void bound.push(['unbound', key]) }
  const sessions = new SessionTable({ maxEntries: 10, idleTimeout: IDLE, absoluteTimeout: ABSOLUTE, sink })
  return { sessions, bound }
}

t.test('a shared binding placed longer than absolute_timeout ago is taken as placed just then, as every replica takes it', async (t) => {
  // Refusing it here while another replica (or an older build) takes it would route one user
  // two ways; deleting it from Redis could delete another replica's fresh pin (a review found
  // both): consistency first, the shared binding is the replicas' one truth.
  const { sessions, bound } = table()
  sessions.sync('old', { upstream: 'app-1', epoch: 2, placedAt: 0 }, 130_000)
  t.match(sessions.peek('old', 130_000), { upstream: 'app-1', epoch: 2, createdAt: 130_000 }, 'placed 130 s ago (absolute 120 s): taken, counted from now')
  t.same(bound, [], 'nothing removed from or written to the store')

  sessions.sync('fresh', { upstream: 'app-1', epoch: 2, placedAt: 100_000 }, 130_000)
  t.match(sessions.peek('fresh', 130_000), { upstream: 'app-1', epoch: 2, createdAt: 100_000 }, 'one placed 30 s ago is taken with its placement time')
  sessions.get('fresh', 170_000)
  t.ok(sessions.peek('fresh', 219_999), 'used on: it lives until 120 s after that placement')
  t.equal(sessions.peek('fresh', 220_001), null, '...not longer, however busy')

  sessions.sync('unknown', { upstream: 'app-1', epoch: 1 }, 130_000)
  t.match(sessions.peek('unknown', 130_000), { upstream: 'app-1', createdAt: 130_000 }, 'a binding without a placement time (an older Tether wrote it) counts from now, as before')

  // a live local pin and a binding of a later epoch in the store: the store's wins (as on every replica)
  sessions.pin('k', 'app-0', 0, 125_000)
  bound.length = 0
  sessions.sync('k', { upstream: 'app-1', epoch: 3, placedAt: 1_000 }, 130_000)
  t.match(sessions.peek('k', 130_000), { upstream: 'app-1', epoch: 3 }, 'the later epoch in the store replaces the local pin, whatever its age')
  t.same(bound, [], 'nothing removed from the store')
})

t.test("a sibling's binding past absolute_timeout is neither copied nor applied", async (t) => {
  const { sessions } = table()
  sessions.applyCopy('copied', 'app-1', 0, 0, 125_000, 130_000)
  t.equal(sessions.peek('copied', 130_000), null, 'a copy created 130 s ago (used 5 s ago) is not made')
  sessions.applyCopy('live', 'app-1', 0, 20_000, 125_000, 130_000)
  t.match(sessions.peek('live', 130_000), { createdAt: 20_000 }, 'one created 110 s ago is copied with its time')
  sessions.applyRemote('remote', 'app-1', 4, 130_000, 5_000)
  t.equal(sessions.peek('remote', 130_000), null, "another worker's pin created 125 s ago is not made")
})

t.test('a rotation grace copied with its creation time continues the binding and ends with it', async (t) => {
  const { sessions } = table()
  // the sibling's grace of 'v1' (replaced at 90 s by an answer; the binding was created at 20 s)
  sessions.copyRotation('v1', 'app-1', 0, 150_000, 100_000, true, 20_000)
  t.match(sessions.rotated('v1', 100_000), { upstream: 'app-1', epoch: 0 }, 'it routes during its grace')
  t.equal(sessions.createdAt('v1', 100_000), 20_000, 'with the creation time it had on the sibling')
  t.same([...sessions.rotations(100_000)], [['v1', 'app-1', 0, 150_000, true, 20_000]], 'and passes it on to the next starting worker')

  // a request carrying 'v1', routed by the grace (a decision without a placement time), is
  // answered with a new value: it continues the first binding
  const d = { upstream: 'app-1', epoch: 0, appKey: 'v1', placedAt: null }
  learnAppCookie(sessions, 'sid', d, 'sid=v2; path=/', 100_000)
  t.equal(sessions.peek('v2', 100_000)?.createdAt, 20_000, 'the value set through the copied grace continues the first binding: created at 20 s')
  t.equal(sessions.peek('v2', 140_001), null, 'and ends 120 s after it, not 120 s after the rotation')

  t.equal(sessions.rotated('v1', 140_001), null, 'the grace ends with the affinity it belongs to (absolute_timeout), before its 60 s are up')
  learnAppCookie(sessions, 'sid', d, 'sid=v3; path=/', 140_001)
  t.equal(sessions.peek('v3', 140_001), null, 'an answer to a request still carrying it past that pins nothing (the user is placed afresh)')

  sessions.copyRotation('stale', 'app-1', 0, 200_000, 150_000, true, 10_000)
  t.equal(sessions.rotated('stale', 150_000), null, 'a copied grace of a binding created longer than absolute_timeout ago does not route')
  t.same([...sessions.rotations(150_000)].map((r) => r[0]), [], 'nor is it passed on')
})

t.test('a rotation grace from a worker of an older build (no creation time) routes as before', async (t) => {
  const { sessions } = table()
  sessions.copyRotation('w1', 'app-2', 0, 150_000, 100_000, true)
  t.match(sessions.rotated('w1', 149_999), { upstream: 'app-2' }, 'it routes for its whole grace')
  t.equal(sessions.createdAt('w1', 100_000), null, 'its creation time is unknown')
  t.same([...sessions.rotations(100_000)], [['w1', 'app-2', 0, 150_000, true, null]])
  learnAppCookie(sessions, 'sid', { upstream: 'app-2', epoch: 0, appKey: 'w1', placedAt: null }, 'sid=w2; path=/', 100_000)
  t.equal(sessions.peek('w2', 100_000)?.createdAt, 100_000, 'a value set through it starts a binding afresh, as before')
})

t.test("a local rotation grace ends with its binding's absolute_timeout too", async (t) => {
  const { sessions } = table()
  sessions.pin('p1', 'app-1', 0, 0)
  sessions.get('p1', 55_000)
  sessions.retire('p1', { upstream: 'app-1', epoch: 0 }, 110_000)
  t.match(sessions.rotated('p1', 120_000), { upstream: 'app-1' }, 'the grace routes while the affinity lasts')
  t.equal(sessions.rotated('p1', 120_001), null, 'and not past absolute_timeout (its 60 s would run to 170 s)')
  sessions.retire('unpinned', { upstream: 'app-1', epoch: 0 }, 110_000)
  t.match(sessions.rotated('unpinned', 169_999), { upstream: 'app-1' }, 'a value never pinned (no creation time) keeps its whole grace')
})
