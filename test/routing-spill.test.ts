// Spill under overload (affinity.spill), decided without any network: a Router on a real
// HealthTable, SessionTable and SessionRecords on a FakeClock, with in-flight counts set by the
// test. A user of an upstream over factor x its share moves at a new visit (after min_idle),
// never mid-visit, to the next upstream in their hash order under the bound, with reason spill,
// within the move budget; nothing moves while no upstream is over the bound.
import t from 'tap'
import { world, Loads, type World } from './fixtures/routing-world.js'
import { hashKey } from '../src/placement/hash.js'
import type { RequestKey } from '../src/affinity/key.js'
import type { AffinityConfig } from '../src/config/schema.js'

const MIN_IDLE = 30_000
const KINDS = ['header', 'cookie', 'client_ip'] as const
const spill = (over: Partial<NonNullable<AffinityConfig['spill']>> = {}): Partial<AffinityConfig> =>
  ({ spill: { factor: 1.5, min_idle: MIN_IDLE, max_moves_per_second: 1_000, ...over } })

/** `n` users of `kind` (IPs for client_ip), each answered once: their upstream by user. */
function populate(w: World, kind: (typeof KINDS)[number], n: number): Map<string, string> {
  const home = new Map<string, string>()
  for (let i = 0; i < n; i++) {
    const user = kind === 'client_ip' ? `10.1.${i >> 8}.${i & 255}` : `user-${i}`
    home.set(user, w.go(user).upstream)
  }
  return home
}

/** The string the router hashes for this request's key. */
function hashed(key: RequestKey): string {
  if (key.kind === 'cookie') return key.session!.sessionId
  if (key.kind === 'table') return key.value
  throw new Error('no key')
}

/** The first upstream in the key's hash order that `ok` accepts. */
function firstIn(w: World, key: RequestKey, ok: (id: string) => boolean): string {
  const table = w.router.placement
  return table.ids[table.pick(hashKey(hashed(key)), (i) => ok(table.ids[i]!))]!
}

for (const kind of KINDS) {
  t.test(`${kind}: a user of an upstream over factor x the mean who returns after min_idle moves to the next upstream in their hash order, with reason spill`, async (t) => {
    const load = new Loads()
    const w = world(kind, spill(), undefined, load)
    const home = populate(w, kind, 60)
    const onA = [...home].filter(([, id]) => id === 'a').map(([u]) => u)
    t.ok(onA.length >= 5, `${onA.length} users pinned to a`)
    // a holds 10 of 12 in flight: the bound is 1.5 x 12 / 3 = 6; b and c (1 each) are under it
    load.set({ a: 10, b: 1, c: 1 })
    w.clock.advance(MIN_IDLE)
    for (const user of onA) {
      const r = w.decide(user)
      t.same(r.d.moved, { from: 'a', reason: 'spill' }, `${user} moved with reason spill`)
      t.equal(r.d.upstream, firstIn(w, r.key, (id) => id !== 'a'), `${user} went to the next upstream in their hash order`)
      t.equal(r.d.epoch, 1, 'the epoch is bumped')
      w.answer(user, r)
    }
    // the slow upstream has recovered: the moved users stay where they went (no flapping back)
    load.set({ a: 0, b: 1, c: 1 })
    w.clock.advance(MIN_IDLE)
    for (const user of onA) {
      const d = w.go(user)
      t.equal(d.moved, null, `${user} stays after the move`)
      t.not(d.upstream, 'a')
    }
    // users of b and c were never moved
    for (const [user, id] of home) if (id !== 'a') t.equal(w.go(user).upstream, id)
  })

  t.test(`${kind}: a user who was answered within min_idle stays on the overloaded upstream (no move in the middle of a visit)`, async (t) => {
    const load = new Loads()
    const w = world(kind, spill(), undefined, load)
    const onA = [...populate(w, kind, 60)].filter(([, id]) => id === 'a').map(([u]) => u)
    load.set({ a: 10, b: 1, c: 1 })
    w.clock.advance(MIN_IDLE - 1)
    for (const user of onA) t.equal(w.go(user).moved, null, `${user} stays mid-visit`)
    // each request restarts the idle gap: still mid-visit
    w.clock.advance(MIN_IDLE - 1)
    for (const user of onA) t.equal(w.go(user).upstream, 'a')
    w.clock.advance(MIN_IDLE)
    t.same(w.go(onA[0]!).moved, { from: 'a', reason: 'spill' }, 'after a full idle gap it moves')
  })
}

t.test('not over factor x the mean: nobody moves, however idle', async (t) => {
  const load = new Loads()
  const w = world('header', spill(), undefined, load)
  const home = populate(w, 'header', 60)
  // a: 6 of 12, bound 1.5 x 12 / 3 = 6: busy but within the factor
  load.set({ a: 6, b: 3, c: 3 })
  w.clock.advance(10 * MIN_IDLE)
  for (const [user, id] of home) t.equal(w.go(user).upstream, id)
  // a nearly idle proxy does not spill: one request in flight, on a (over its bound of 0.5, but not over 1)
  load.set({ a: 1 })
  w.clock.advance(10 * MIN_IDLE)
  for (const [user, id] of home) t.equal(w.go(user).upstream, id)
})

t.test('spill is off by default: an overloaded upstream keeps its users', async (t) => {
  const load = new Loads()
  const w = world('header', {}, undefined, load)
  const home = populate(w, 'header', 30)
  load.set({ a: 100 })
  w.clock.advance(10 * MIN_IDLE)
  for (const [user, id] of home) t.equal(w.go(user).upstream, id)
})

t.test('the move budget is honoured: at most max_moves_per_second users spill a second, one second\'s worth at a time', async (t) => {
  const load = new Loads()
  const w = world('header', spill({ max_moves_per_second: 3 }), undefined, load)
  const onA = [...populate(w, 'header', 120)].filter(([, id]) => id === 'a').map(([u]) => u)
  t.ok(onA.length >= 12, `${onA.length} users on a`)
  load.set({ a: 30, b: 1, c: 1 })
  w.clock.advance(MIN_IDLE)
  const movesNow = (users: string[]): string[] => users.filter((u) => w.go(u).moved !== null)
  const first = movesNow(onA)
  t.equal(first.length, 3, 'three users moved at once, the others stayed')
  w.clock.advance(MIN_IDLE) // the bucket refills to one second's worth, no more
  const left = onA.filter((u) => !first.includes(u))
  t.equal(movesNow(left).length, 3, 'after a long pause: three more, not a pause\'s worth')
  w.clock.advance(MIN_IDLE)
  const start = w.clock.now()
  let moved = 0
  // every user of a comes back once, 10 a second (all after min_idle): about 3 moves a second
  for (const [i, u] of onA.entries()) {
    w.clock.set(start + i * 100)
    const d = w.go(u)
    if (d.moved !== null) moved++
  }
  const seconds = (onA.length - 1) / 10
  t.ok(moved <= 3 + Math.ceil(seconds * 3), `${moved} moves over ${seconds.toFixed(1)} s: within the burst plus 3 a second`)
})

t.test('the user goes to the first upstream in their hash order that is under the bound, skipping one that is over it; a draining upstream is neither a target nor in the mean', async (t) => {
  const load = new Loads()
  // factor 1: a and b hold 6 each of 12, the bound is 12 / 3 = 4, so both are over it
  const w = world('header', spill({ factor: 1 }), undefined, load)
  const home = populate(w, 'header', 90)
  const onA = [...home].filter(([, id]) => id === 'a').map(([u]) => u)
  load.set({ a: 6, b: 6 })
  w.clock.advance(MIN_IDLE)
  for (const user of onA) {
    const d = w.go(user)
    t.same([d.upstream, d.moved?.reason], ['c', 'spill'], `${user}: to c, the only one under the bound`)
  }
  // c drains: it takes no new users, and the mean is over a and b (12 / 2 = 6): b is not over it
  const onB = [...home].filter(([, id]) => id === 'b').map(([u]) => u)
  w.health.drain('c', false)
  w.clock.advance(MIN_IDLE)
  for (const user of onB) t.equal(w.go(user).upstream, 'b', `${user} stays: b is within factor x the mean of the upstreams taking new users`)
  // with c's own load in the total, b is over the bound (1 x 18 / 2 = 9) but a is the only target
  load.set({ a: 6, b: 10, c: 2 })
  w.clock.advance(MIN_IDLE)
  for (const user of onB) t.same([w.go(user).upstream], ['a'], `${user}: to a, never to the draining c`)
})
