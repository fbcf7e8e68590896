// The in-memory affinity table: the shared AffinityStore contract, plus what is specific to the
// columnar layout (LRU order, slot reuse, id interning, counters) and a randomized comparison
// against a plain-Map reference model. Time comes from a FakeClock; nothing sleeps.
import t from 'tap'
import { AffinityTable } from '../src/affinity/table.js'
import type { AffinityEntry } from '../src/affinity/store.js'
import { FakeClock } from './fixtures/clock.js'
import { conformance } from './fixtures/affinity-store-conformance.js'
import { mulberry32 as prng } from './fixtures/random.js'

const MIN = 60_000
const HOUR = 60 * MIN


t.test('AffinityTable meets the AffinityStore contract', async (t) => {
  conformance(t, (options) => new AffinityTable(options))
})

t.test('invalid limits are rejected with a precise message', async (t) => {
  const cases: [string, ConstructorParameters<typeof AffinityTable>[0], RegExp][] = [
    ['zero maxEntries', { maxEntries: 0, idleTimeout: 1000 }, /maxEntries must be an integer/],
    ['fractional maxEntries', { maxEntries: 1.5, idleTimeout: 1000 }, /maxEntries must be an integer/],
    ['maxEntries beyond Int32 links', { maxEntries: 2 ** 31, idleTimeout: 1000 }, /maxEntries must be an integer/],
    ['zero idleTimeout', { maxEntries: 10, idleTimeout: 0 }, /idleTimeout must be > 0/],
    ['negative absoluteTimeout', { maxEntries: 10, idleTimeout: 1000, absoluteTimeout: -1 }, /absoluteTimeout must be > 0/],
  ]
  for (const [name, options, message] of cases) t.throws(() => new AffinityTable(options), { message }, name)
  const table = new AffinityTable({ maxEntries: 10, idleTimeout: 1000 })
  t.throws(() => table.set('k', 'app-0', -1, 0), { message: /epoch must be a uint32/ })
  t.throws(() => table.set('k', 'app-0', 2 ** 32, 0), { message: /epoch must be a uint32/ })
})

t.test('eviction follows least-recent use, where get counts as use and peek does not', async (t) => {
  const clock = new FakeClock()
  const table = new AffinityTable({ maxEntries: 4, idleTimeout: HOUR })
  for (const k of ['a', 'b', 'c', 'd']) table.set(k, 'app-0', 0, clock.advance(1))
  table.get('a', clock.advance(1)) // order, least recent first: b c d a
  table.peek('b', clock.advance(1)) // unchanged
  table.set('c', 'app-1', 1, clock.advance(1)) // b d a c
  const evicted: string[] = []
  for (const k of ['e', 'f', 'g']) {
    const before = new Set(['a', 'b', 'c', 'd', 'e', 'f'].filter((x) => table.peek(x, clock.now()) !== null))
    table.set(k, 'app-0', 0, clock.advance(1))
    for (const x of before) if (table.peek(x, clock.now()) === null) evicted.push(x)
  }
  t.same(evicted, ['b', 'd', 'a'])
  t.equal(table.evictions, 3)
  t.equal(table.expirations, 0)
})

t.test('making room counts an expired tail as an expiration, a live one as an eviction', async (t) => {
  const clock = new FakeClock()
  const table = new AffinityTable({ maxEntries: 2, idleTimeout: HOUR })
  table.set('old', 'app-0', 0, clock.now())
  clock.advance(HOUR + 1)
  table.set('a', 'app-0', 0, clock.now())
  table.set('b', 'app-0', 0, clock.now()) // drops the expired 'old'
  table.set('c', 'app-0', 0, clock.now()) // drops the live 'a'
  t.equal(table.expirations, 1)
  t.equal(table.evictions, 1)
  t.equal(table.size, 2)
})

t.test('an expired entry is removed lazily by the lookup that finds it', async (t) => {
  const clock = new FakeClock()
  const table = new AffinityTable({ maxEntries: 10, idleTimeout: HOUR })
  table.set('k', 'app-0', 0, clock.now())
  clock.advance(HOUR + 1)
  t.equal(table.size, 1, 'still held until someone looks')
  t.equal(table.peek('k', clock.now()), null, 'peek hides it')
  t.equal(table.size, 1, 'peek does not remove')
  t.equal(table.get('k', clock.now()), null)
  t.equal(table.size, 0, 'get removed it')
  t.equal(table.countByUpstream('app-0'), 0)
  t.equal(table.expirations, 1)
})

t.test('sweep removes absolute-expired entries at the tail and stops at the first live one', async (t) => {
  const clock = new FakeClock()
  const table = new AffinityTable({ maxEntries: 10, idleTimeout: 3 * HOUR, absoluteTimeout: 4 * HOUR })
  table.set('first', 'app-0', 0, clock.now())
  clock.advance(2 * HOUR)
  table.set('second', 'app-0', 0, clock.now())
  table.get('first', clock.advance(1)) // busy, so idle-fresh; order: second first
  clock.advance(2 * HOUR) // first is 4h+1ms old (absolute-expired); second is 2h+1ms idle (live)
  t.equal(table.sweep(clock.now(), 10), 0, 'the live tail stops the sweep: O(budget), not a scan')
  t.equal(table.get('first', clock.now()), null, 'the absolute-expired entry is removed on lookup')
  table.get('second', clock.now())
  clock.advance(4 * HOUR)
  t.equal(table.sweep(clock.now(), 10), 1)
  t.equal(table.size, 0)
  t.equal(table.expirations, 2)
})

t.test('freed slots are reused before the columns grow', async (t) => {
  const clock = new FakeClock()
  const table = new AffinityTable({ maxEntries: 10_000, idleTimeout: HOUR })
  for (let i = 0; i < 3000; i++) table.set(`k${i}`, `app-${i % 3}`, 0, clock.now())
  t.equal(table.slots, 3000)
  for (let i = 0; i < 3000; i += 2) table.delete(`k${i}`)
  for (let i = 0; i < 1500; i++) table.set(`n${i}`, 'app-9', 0, clock.now())
  t.equal(table.slots, 3000, 'no new slots for re-used ones')
  t.equal(table.size, 3000)
  t.equal(table.countByUpstream('app-9'), 1500)
  for (let i = 1; i < 3000; i += 2) t.equal(table.get(`k${i}`, clock.now())?.upstream, `app-${i % 3}`)
  t.equal(table.get('n1499', clock.now())?.upstream, 'app-9')
})

t.test('upstream ids are forgotten when unbound, so discovery churn never exhausts them', async (t) => {
  const clock = new FakeClock()
  const table = new AffinityTable({ maxEntries: 8, idleTimeout: HOUR })
  // 70,000 distinct pod names over time: more than a Uint16 index could hold at once.
  for (let i = 0; i < 70_000; i++) table.set(`k${i % 16}`, `pod-${i}`, 0, clock.now())
  t.equal(table.size, 8)
  t.equal(table.countByUpstream('pod-69999'), 1)
  t.equal(table.countByUpstream('pod-0'), 0)
  t.equal(table.get('k15', clock.now())?.upstream, 'pod-69999')
})

t.test('an id keeps its bindings when the last other holder of the id is evicted to make room', async (t) => {
  const clock = new FakeClock()
  const table = new AffinityTable({ maxEntries: 1, idleTimeout: HOUR })
  table.set('a', 'app-0', 0, clock.now())
  table.set('b', 'app-0', 0, clock.now()) // evicts 'a', the only other app-0 binding
  t.same(table.get('b', clock.now()), { upstream: 'app-0', epoch: 0, createdAt: clock.now(), lastSeen: clock.now() })
  t.equal(table.countByUpstream('app-0'), 1)
})

t.test('times stay exact to the ms over weeks: the time base moves and only bindings older than 24.8 days show a later createdAt', async (t) => {
  const DAY = 24 * HOUR
  const clock = new FakeClock()
  const table = new AffinityTable({ maxEntries: 100, idleTimeout: 60 * DAY })
  const short = new AffinityTable({ maxEntries: 100, idleTimeout: HOUR, absoluteTimeout: 2 * HOUR })
  const t0 = clock.now()
  table.set('old', 'app-0', 0, t0)
  short.set('idle', 'app-0', 0, t0)
  short.set('aging', 'app-0', 0, t0)
  clock.advance(20 * DAY + 7)
  table.set('new', 'app-1', 2, clock.now())
  const created = clock.now()
  for (let i = 0; i < 20; i++) {
    clock.advance(DAY)
    t.equal(table.get('new', clock.now())!.lastSeen, clock.now())
    short.get('aging', clock.now()) // renewed too late: expired by its idle timeout
  }
  t.same(table.peek('new', clock.now()), { upstream: 'app-1', epoch: 2, createdAt: created, lastSeen: clock.now() }, 'exact after the base moved')
  // the window is 2^32 ms from t0 - 2^31: the first write past it (at t0 + 25 days + 7 ms) moved the base
  t.equal(table.peek('old', clock.now())!.createdAt, t0 + 25 * DAY + 7 - 2 ** 31, 'clamped to the new base, 2^31 ms before the write that moved it')
  t.equal(short.get('idle', clock.now()), null, 'an idle binding is still expired after the base moved')
  t.equal(short.size, 0)
  short.set('idle', 'app-2', 0, clock.now())
  t.same(short.get('idle', clock.now() + 1), { upstream: 'app-2', epoch: 0, createdAt: clock.now(), lastSeen: clock.now() + 1 })
  t.not(short.get('idle', clock.now() + HOUR), null)
  t.not(short.get('idle', clock.now() + 2 * HOUR), null)
  t.equal(short.get('idle', clock.now() + 2 * HOUR + 1), null, 'the absolute timeout counts from the new createdAt, to the ms')
})

t.test('100k random operations agree with a plain-Map reference model', async (t) => {
  const IDLE = 10 * MIN
  const ABSOLUTE = 30 * MIN
  const MAX = 2_000
  const clock = new FakeClock()
  const table = new AffinityTable({ maxEntries: MAX, idleTimeout: IDLE, absoluteTimeout: ABSOLUTE })
  // Reference: Map iteration order is the LRU order (oldest first).
  const model = new Map<string, { upstream: string; epoch: number; createdAt: number; lastSeen: number }>()
  const expired = (e: AffinityEntry, now: number): boolean => now - e.lastSeen > IDLE || now - e.createdAt > ABSOLUTE
  const random = prng(42)
  const keyOf = (): string => `session-${Math.floor(random() * 20_000).toString(16).padStart(24, '0')}`
  let mismatches = 0
  const check = (what: string, got: unknown, want: unknown): void => {
    if (JSON.stringify(got) !== JSON.stringify(want)) {
      if (mismatches++ < 5) t.fail(`${what}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`)
    }
  }
  for (let op = 0; op < 100_000; op++) {
    // mostly small steps (eviction pressure), now and then a long pause (expiry)
    const now = clock.advance(Math.floor(random() < 0.0001 ? random() * 20 * MIN : random() * 100))
    const r = random()
    const key = keyOf()
    if (r < 0.45) {
      const upstream = `app-${Math.floor(random() * 7)}`
      const epoch = Math.floor(random() * 3)
      const old = model.get(key)
      const createdAt = old !== undefined && !expired(old, now) ? old.createdAt : now
      model.delete(key)
      if (model.size >= MAX) model.delete(model.keys().next().value!)
      model.set(key, { upstream, epoch, createdAt, lastSeen: now })
      table.set(key, upstream, epoch, now)
    } else if (r < 0.85) {
      let want = model.get(key) ?? null
      model.delete(key)
      if (want !== null && !expired(want, now)) {
        want = { ...want, lastSeen: now }
        model.set(key, want)
      } else want = null
      check(`get ${key}`, table.get(key, now), want)
    } else if (r < 0.95) {
      check(`delete ${key}`, table.delete(key), model.delete(key))
    } else {
      const budget = Math.floor(random() * 50)
      let removed = 0
      for (const [k, e] of model) {
        if (removed >= budget || !expired(e, now)) break
        model.delete(k)
        removed++
      }
      check('sweep', table.sweep(now, budget), removed)
    }
    if (op % 1000 === 0) {
      check(`size at op ${op}`, table.size, model.size)
      for (let u = 0; u < 7; u++) {
        let n = 0
        for (const e of model.values()) if (e.upstream === `app-${u}`) n++
        check(`countByUpstream(app-${u}) at op ${op}`, table.countByUpstream(`app-${u}`), n)
      }
    }
  }
  const now = clock.now()
  for (const [k, e] of model) check(`final peek ${k}`, table.peek(k, now), expired(e, now) ? null : e)
  t.equal(mismatches, 0, 'no mismatches')
  t.equal(table.size, model.size)
  t.ok(table.evictions > 1000, `the run exercised eviction (${table.evictions})`)
  t.ok(table.expirations > 1000, `the run exercised expiry (${table.expirations})`)
})

t.test('slotBoundTo: the slot only for a live binding to that upstream at that epoch', async (t) => {
  const table = new AffinityTable({ maxEntries: 10, idleTimeout: 1000 })
  table.set('k', 'app-1', 2, 0)
  const slot = table.slotOf('k')
  t.type(slot, 'number')
  t.equal(table.slotBoundTo('k', 'app-1', 2, 500), slot, 'bound there: its slot')
  t.equal(table.slotBoundTo('k', 'app-2', 2, 500), undefined, 'another upstream')
  t.equal(table.slotBoundTo('k', 'app-1', 3, 500), undefined, 'another epoch')
  t.equal(table.slotBoundTo('other', 'app-1', 2, 500), undefined, 'a key not held')
  t.equal(table.slotBoundTo('k', 'app-1', 2, 1500), undefined, 'expired (idle past the timeout)')
})

t.test('setUnlessNewer: keeps a live binding at a later epoch, else sets', async (t) => {
  const table = new AffinityTable({ maxEntries: 10, idleTimeout: 1000 })
  t.equal(table.setUnlessNewer('k', 'app-1', 2, 0), true, 'a new key: set')
  t.equal(table.setUnlessNewer('k', 'app-0', 1, 100), false, 'an older epoch: refused')
  t.match(table.peek('k', 100), { upstream: 'app-1', epoch: 2, lastSeen: 0 }, 'and nothing changed')
  t.equal(table.setUnlessNewer('k', 'app-2', 2, 200), true, 'the same epoch: set')
  t.equal(table.peek('k', 200)?.upstream, 'app-2')
  t.equal(table.setUnlessNewer('k', 'app-0', 1, 1500), true, 'an older epoch over an expired binding: set')
  t.match(table.peek('k', 1500), { upstream: 'app-0', epoch: 1 })
})

t.test('append adds a copied binding with its times as the least recently used; byRecency lists most recent first', async (t) => {
  const table = new AffinityTable({ maxEntries: 3, idleTimeout: MIN, absoluteTimeout: 10 * MIN })
  const now = 2 * HOUR
  table.set('here', 'app-0', 0, now)
  t.ok(table.append('a', 'app-1', 1, now - 5 * MIN, now - 10_000, now), 'added')
  t.match(table.peek('a', now), { upstream: 'app-1', epoch: 1, createdAt: now - 5 * MIN, lastSeen: now - 10_000 })
  t.notOk(table.append('here', 'app-2', 0, now, now, now), 'a key held is left alone')
  t.notOk(table.append('idle', 'app-1', 0, now - 2 * MIN, now - MIN - 1, now), 'idle past its timeout: not added')
  t.notOk(table.append('old', 'app-1', 0, now - 10 * MIN - 1, now, now), 'past its absolute timeout: not added')
  t.ok(table.append('b', 'app-1', 0, now - MIN, now - 5_000, now), 'out of order (more recent than the last added)')
  t.equal(table.peek('b', now)?.lastSeen, now - 10_000, 'its lastSeen is taken as the one before it, so the LRU list stays in order')
  t.notOk(table.append('c', 'app-1', 0, now, now - 20_000, now), 'full: it would be the first evicted')
  t.same([...table.byRecency(now)].map((e) => e.key), ['here', 'a', 'b'])
  t.equal(table.sweep(now - 10_000 + MIN + 1, 10), 2, "the copies expire first, at their times, from the list's end")
  t.same([...table.byRecency(now + MIN)].map((e) => e.key), ['here'])
  t.equal(table.countByUpstream('app-1'), 0, 'upstream counts follow')
  table.setCreated('here', 'app-0', 0, now + MIN, now - 3 * MIN)
  t.equal(table.peek('here', now + MIN)?.createdAt, now - 3 * MIN, 'setCreated: the creation time of a write from elsewhere')
})

t.test("append: a copy's creation time is at most its last use; setCreated: a write created longer ago than the absolute timeout changes nothing", async (t) => {
  const table = new AffinityTable({ maxEntries: 10, idleTimeout: MIN, absoluteTimeout: 10 * MIN })
  const now = 2 * HOUR
  t.ok(table.append('a', 'app-1', 0, now, now - 10_000, now))
  t.equal(table.peek('a', now)?.createdAt, now - 10_000)
  table.setCreated('late', 'app-1', 0, now, now - 10 * MIN - 1)
  t.equal(table.peek('late', now), null, 'not added')
  t.equal(table.size, 1, 'no dead entry is held either')
  t.equal(table.countByUpstream('app-1'), 1)
  table.set('held', 'app-2', 0, now - MIN)
  table.setCreated('held', 'app-2', 1, now, now - 11 * MIN)
  t.match(table.peek('held', now), { epoch: 0, createdAt: now - MIN }, 'a live binding held is left as it is')
  table.setCreated('nan', 'app-2', 0, now, NaN)
  t.equal(table.peek('nan', now)?.createdAt, now, 'no creation time: now, as set')
})

t.test('slotsByRecency is a snapshot of places; bindingAt reads each as the table holds it now', async (t) => {
  const table = new AffinityTable({ maxEntries: 10, idleTimeout: HOUR })
  const now = 1_000_000
  table.set('a', 'app-1', 0, now)
  table.set('b', 'app-2', 0, now + 1)
  table.set('c', 'app-3', 0, now + 2)
  const slots = table.slotsByRecency(now + 3)
  t.same([...slots].map((s) => table.bindingAt(s, now + 3)?.key), ['c', 'b', 'a'], 'most recently used first')
  // the table goes on changing after the snapshot
  table.delete('b')
  table.set('c', 'app-1', 4, now + 4)
  t.same([...slots].map((s) => table.bindingAt(s, now + 5)), [
    { key: 'c', upstream: 'app-1', epoch: 4, createdAt: now + 2, lastSeen: now + 4 },
    null,
    { key: 'a', upstream: 'app-1', epoch: 0, createdAt: now, lastSeen: now },
  ], 'a deleted binding reads as none, a moved one as it is now')
  t.equal(table.bindingAt(slots[2]!, now + HOUR + 1), null, 'an expired one reads as none')
  t.equal(table.bindingAt(99, now), null, 'a slot never used reads as none')
  t.equal(table.slotsByRecency(now + HOUR + 3).length, 1, 'the snapshot leaves out expired bindings')
})
