// Drains with nowhere to go: every upstream drains (an operator drained the last one, every pod
// of a Deployment terminates at once, a single replica drained). Past drain_timeout (or after a
// migrating drain's idle gap) a user has no upstream that takes new users: one whose own
// upstream still serves stays there, with no move, no new epoch and no rehydration at each
// request; they move once another upstream takes new users again. Decided on a real
// HealthTable, SessionTable and SessionRecords, on a FakeClock (no network).
import t from 'tap'
import { world, UPS } from './fixtures/routing-world.js'
import type { Decision } from '../src/routing/router.js'

const S = 1_000
const row = (d: Decision): unknown[] => [d.upstream, d.epoch, d.moved?.reason ?? null]

for (const kind of ['header', 'cookie'] as const) {
  t.test(`${kind}: with every upstream drained past drain_timeout, a user stays on their own upstream, never moved to it again at each request`, async (t) => {
    const w = world(kind)
    const home = w.go('acme').upstream
    for (const u of UPS) w.health.drain(u.id)
    w.clock.advance(61 * S)
    for (let i = 0; i < 5; i++) {
      t.same(row(w.go('acme')), [home, 0, null], `request ${i}: stays, epoch 0, no move`)
      w.clock.advance(S)
    }
    t.throws(() => w.decide('newcomer'), /no route: none/, 'a new user meanwhile: no upstream takes them (503)')
    // another upstream takes new users again: the user leaves the drained one, once
    const other = UPS.map((u) => u.id).find((id) => id !== home)!
    w.health.undrain(other)
    const moved = w.go('acme')
    t.same(row(moved), [other, 1, 'drain'], 'an upstream undrained: the user moves there, with a new epoch')
    w.clock.advance(S)
    t.same(row(w.go('acme')), [other, 1, null], 'and stays')
  })

  t.test(`${kind}: a migrating drain of every upstream keeps an idle user where they are, also with strict`, async (t) => {
    const w = world(kind, { drain: { migrate: true, min_idle: 2 * S }, strict: true })
    const home = w.go('acme').upstream
    for (const u of UPS) w.health.drain(u.id, true)
    for (let i = 0; i < 4; i++) {
      w.clock.advance(5 * S) // idle past min_idle each time
      t.same(row(w.go('acme')), [home, 0, null], `request ${i} after an idle gap: stays, no move`)
    }
  })

  t.test(`${kind}: one upstream, drained past drain_timeout: its users keep being served there, with no move`, async (t) => {
    const w = world(kind, {}, [UPS[0]!])
    t.equal(w.go('acme').upstream, 'a')
    w.health.drain('a')
    w.clock.advance(61 * S)
    for (let i = 0; i < 3; i++) {
      t.same(row(w.go('acme')), ['a', 0, null], `request ${i}: no move from a to a`)
      w.clock.advance(S)
    }
  })

  t.test(`${kind}: a dead upstream's user, while every other one drains, moves once to a draining one and stays there`, async (t) => {
    const w = world(kind)
    const home = w.go('acme').upstream
    for (const u of UPS) if (u.id !== home) w.health.drain(u.id)
    w.clock.advance(61 * S)
    w.health.reportActive(home, false) // unhealthy_threshold 1
    const moved = w.go('acme')
    t.not(moved.upstream, home)
    t.same(row(moved).slice(1), [1, 'dead'], 'moved off the dead upstream, epoch 1')
    for (let i = 0; i < 3; i++) {
      w.clock.advance(S)
      t.same(row(w.go('acme')), [moved.upstream, 1, null], `request ${i}: stays on the draining fallback, no further move`)
    }
  })
}
