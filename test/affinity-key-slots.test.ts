// The key index the session table and the session records share: a slot lives while any owner
// holds it and is reused once none does; two tables on one index keep their own lifetimes
// (LRU, expiry, size, counts), checked against two independent private tables over a random
// run. Time comes from a FakeClock; nothing sleeps.
import t from 'tap'
import { KeySlots, growCapacity, ownCopy } from '../src/affinity/key-slots.js'
import { AffinityTable } from '../src/affinity/table.js'
import { FakeClock } from './fixtures/clock.js'
import { mulberry32 as prng } from './fixtures/random.js'

const MIN = 60_000

t.test('a slot is shared by its owners and freed for reuse when the last one lets go', async (t) => {
  const slots = new KeySlots()
  const a = slots.owner()
  const b = slots.owner()
  const s = slots.claim('10.0.0.5', a)
  t.equal(slots.claim('10.0.0.5', b), s)
  t.equal(slots.keyAt(s), '10.0.0.5')
  slots.release(s, a)
  t.equal(slots.slotOf('10.0.0.5'), s, 'b still holds it')
  t.equal(slots.holds(s, a), false)
  t.equal(slots.holds(s, b), true)
  t.same([...slots.held(b)], [['10.0.0.5', s]])
  t.same([...slots.held(a)], [])
  t.equal(slots.taken(s), true, 'taken while any owner holds it')
  slots.release(s, b)
  t.equal(slots.taken(s), false, 'free once the last owner let go')
  t.equal(slots.slotOf('10.0.0.5'), undefined)
  t.equal(slots.size, 0)
  t.equal(slots.claim('10.0.0.6', a), s, 'the freed slot is reused')
  t.equal(slots.used, 1)
})

t.test('an index grows past its first thousand slots and keeps every key', async (t) => {
  const slots = new KeySlots()
  const a = slots.owner()
  for (let i = 0; i < 3000; i++) slots.claim(`k${i}`, a)
  t.equal(slots.used, 3000)
  t.equal(slots.slotOf('k2999'), 2999)
  t.equal(slots.holds(2999, a), true)
  t.equal([...slots.held(a)].length, 3000)
})

t.test('side maps get the index’s own copy of a held key, and an equal flat copy of any other', async (t) => {
  const slots = new KeySlots()
  const a = slots.owner()
  const header = 'XSRF-TOKEN=abc; laravel_session=eyJpdiI6IjEyMzQ1Njc4OTAifQ; theme=dark'
  const value = header.slice(32, 58)
  const s = slots.claim(value, a)
  t.equal(slots.keyAt(s), value)
  t.equal(slots.stored(value), slots.keyAt(s))
  t.equal(slots.stored('not-held-0123456789'), 'not-held-0123456789')
  t.equal(ownCopy('\ud800 lone surrogate and "quotes" \\ kept'), '\ud800 lone surrogate and "quotes" \\ kept')
  t.equal(ownCopy('10.0.0.5'), '10.0.0.5')
})

t.test('an index takes at most 8 owners', async (t) => {
  const slots = new KeySlots()
  for (let i = 0; i < 8; i++) slots.owner()
  t.throws(() => slots.owner(), RangeError)
})

t.test('columns double while small, then grow by a quarter, up to the limit unless a slot needs more', async (t) => {
  t.equal(growCapacity(1024, 1024, 1e6), 2048)
  t.equal(growCapacity(524_288, 524_288, 1e6), 655_360)
  t.equal(growCapacity(800_000, 800_000, 1e6), 1_000_000)
  t.equal(growCapacity(1_000_000, 1_000_000, 1e6), 1_250_000, 'a shared index hands out slots past one table’s maxEntries')
  t.equal(growCapacity(1, 5000, 10_000), 5001)
})

t.test('two tables on one index behave like two tables on their own over a random run', async (t) => {
  const clock = new FakeClock()
  const slots = new KeySlots()
  const limits = [{ maxEntries: 80, idleTimeout: 10 * MIN, absoluteTimeout: 30 * MIN }, { maxEntries: 120, idleTimeout: 20 * MIN }]
  const shared = limits.map((o) => new AffinityTable({ ...o, slots }))
  const alone = limits.map((o) => new AffinityTable(o))
  const next = prng(11)
  const pick = (n: number): number => Math.floor(next() * n)
  let evicted = 0
  for (let i = 0; i < 10_000; i++) {
    const w = pick(2)
    const key = `k${pick(600)}`
    const op = next()
    const now = clock.advance(pick(3) * 100)
    if (op < 0.45) {
      const upstream = `app-${pick(4)}`
      const epoch = pick(3)
      shared[w]!.set(key, upstream, epoch, now)
      alone[w]!.set(key, upstream, epoch, now)
    } else if (op < 0.75) {
      t.same(shared[w]!.get(key, now), alone[w]!.get(key, now), `get ${key} from table ${w}`)
    } else if (op < 0.85) {
      t.same(shared[w]!.peek(key, now), alone[w]!.peek(key, now), `peek ${key} in table ${w}`)
    } else if (op < 0.93) {
      t.equal(shared[w]!.delete(key), alone[w]!.delete(key), `delete ${key} from table ${w}`)
    } else if (op < 0.995) {
      const budget = pick(20)
      t.equal(shared[w]!.sweep(now, budget), alone[w]!.sweep(now, budget), `sweep table ${w}`)
    } else {
      clock.advance(pick(15) * MIN)
    }
    t.equal(shared[w]!.size, alone[w]!.size)
    t.equal(shared[w]!.countByUpstream('app-1'), alone[w]!.countByUpstream('app-1'))
  }
  const now = clock.now()
  const sorted = (tab: AffinityTable): unknown[] => [...tab.entries(now)].map(({ slot: _, ...e }) => e).sort((x, y) => (x.key < y.key ? -1 : 1)) // slots differ between indexes
  const keys = new Set<string>()
  for (let w = 0; w < 2; w++) {
    t.same(sorted(shared[w]!), sorted(alone[w]!))
    t.equal(shared[w]!.evictions, alone[w]!.evictions)
    t.equal(shared[w]!.expirations, alone[w]!.expirations)
    evicted += shared[w]!.evictions
    for (const [key] of slots.held(1 << w)) keys.add(key)
  }
  t.equal(slots.size, keys.size, 'a key neither table holds is gone from the index')
  t.ok(evicted > 100, `the run exercised eviction (${evicted})`)
  t.ok(slots.used <= 200, `slots are reused (${slots.used} for at most 200 held keys)`)
})
