// Drains that migrate, decided without any network: a Router on a real HealthTable and real
// SessionRecords, on a FakeClock. A user of a migrating drain moves at their first request
// after an idle gap of drain.min_idle (never inside a burst), with reason=drain and a new
// epoch; a plain drain keeps them until drain_timeout; active users move at drain_timeout.
import t from 'tap'
import { world } from './fixtures/routing-world.js'
import type { Decision } from '../src/routing/router.js'

const S = 1_000

for (const kind of ['header', 'cookie'] as const) {
  t.test(`${kind}: a user of a migrating drain stays through a burst and moves at the first request after an idle gap`, async (t) => {
    const w = world(kind)
    const home = w.go('acme').upstream
    w.health.drain(home, true)
    w.clock.advance(500)
    t.equal(w.go('acme').upstream, home, 'a request 0.5 s after the last one (a burst): stays')
    w.clock.advance(1_999)
    t.equal(w.go('acme').upstream, home, 'still under min_idle since the last answer: stays')
    w.clock.advance(2 * S)
    const moved = w.go('acme')
    t.not(moved.upstream, home, 'after an idle gap of min_idle: moved')
    t.same(moved.moved, { from: home, reason: 'drain' })
    t.equal(moved.epoch, 1, 'with a new epoch')
    w.clock.advance(100)
    const after = w.go('acme')
    t.same([after.upstream, after.moved], [moved.upstream, null], 'and stays on its new upstream')
    t.match(w.records.lastMove(kind === 'header' ? 'acme' : moved.sessionKey!), { from: home, to: moved.upstream, reason: 'drain' })
  })

  t.test(`${kind}: the requests of a burst decided before any answer all move together, to one upstream`, async (t) => {
    const w = world(kind)
    const home = w.go('acme').upstream
    w.health.drain(home, true)
    w.clock.advance(5 * S)
    const burst = [w.decide('acme'), w.decide('acme'), w.decide('acme')]
    t.same(new Set(burst.map((r) => r.d.upstream)).size, 1, 'one upstream for the whole burst')
    t.ok(burst.every((r) => r.d.moved?.reason === 'drain' && r.d.upstream !== home), 'every request of it moved')
    for (const r of burst) w.answer('acme', r)
  })
}

t.test('a plain drain keeps an idle user until drain_timeout; a migrating one moves a busy user at drain_timeout', async (t) => {
  const plain = world('header')
  const home = plain.go('acme').upstream
  plain.health.drain(home)
  plain.clock.advance(30 * S)
  t.equal(plain.go('acme').upstream, home, 'plain drain: back after 30 s idle, still home')
  plain.clock.advance(30 * S)
  t.same(plain.go('acme').moved, { from: home, reason: 'drain' }, 'plain drain: moved at drain_timeout')

  const busy = world('header')
  const start = busy.go('acme').upstream
  busy.health.drain(start, true)
  let moved: Decision | null = null
  for (let i = 0; i < 70 && moved === null; i++) {
    busy.clock.advance(S) // never idle for min_idle
    const d = busy.go('acme')
    if (d.moved !== null) moved = d
  }
  t.ok(moved !== null, 'a user who never pauses still moves')
  t.equal(busy.clock.now() - busy.health.drainingSince(start)!, 60 * S, 'exactly at drain_timeout')
})

t.test('a pinned user this process never answered counts as idle once the drain is min_idle old; an undrain ends the migration', async (t) => {
  const w = world('header')
  w.sessions.pin('acme', 'b', 0, w.clock.now()) // as another replica's shared binding: never answered here
  w.sessions.pin('initech', 'b', 0, w.clock.now())
  w.health.drain('b', true)
  w.clock.advance(1_999)
  t.same([w.go('initech').upstream, w.go('initech').moved], ['b', null], "in the drain's first min_idle nobody moves (every worker learns of the drain meanwhile)")
  w.clock.advance(1)
  t.same(w.go('acme').moved, { from: 'b', reason: 'drain' }, 'then moved at its first request here')
  const home = w.go('globex').upstream
  w.health.drain(home, true)
  t.equal(w.health.snapshot().find((e) => e.id === home)!.migrating, true, 'the snapshot shows a migrating drain')
  w.health.undrain(home)
  t.equal(w.health.drainMigrates(home), false, 'an undrain ends it')
  w.clock.advance(5 * S)
  t.equal(w.go('globex').upstream, home, 'undrained: the user stays')
})
