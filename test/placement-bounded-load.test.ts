// Specification of consistent hashing with bounded loads (src/placement/bounded-load.ts):
// capacity ceil(factor * (total + 1) / n) from Mirrokni, Thorup, Zadimoghaddam (2017), and the
// walk to the next candidate in hash order when the preferred upstream is full.
import t from 'tap'
import { pickBounded } from '../src/placement/bounded-load.js'
import { buildPlacement } from '../src/placement/rendezvous.js'
import { mulberry32, sessionHashes, upstreams } from './fixtures/placement/keys.js'

const all = (): boolean => true
const hashes = sessionHashes(20_000, 4242)

/** A hash whose preference order starts with `first`, found among the seeded keys. */
function hashPreferring(table: ReturnType<typeof buildPlacement>, first: number): number {
  const h = hashes.find((x) => table.pick(x) === first)
  if (h === undefined) throw new Error(`no key prefers ${first}`)
  return h
}

t.test('the worked example: a key whose first choice is full goes to its second choice', async (t) => {
  const table = buildPlacement(upstreams(4))
  const load = Int32Array.of(5, 1, 1, 1) // total 8; capacity ceil(1.25 * 9 / 4) = 3
  const order = new Int32Array(4)
  const toFull = hashPreferring(table, 0)
  table.order(toFull, order)
  t.equal(pickBounded(table, toFull, all, load, 8, 1.25), order[1], 'upstream 0 (load 5 > 3) is skipped')
  const toFree = hashPreferring(table, 1)
  t.equal(pickBounded(table, toFree, all, load, 8, 1.25), 1, 'upstream 1 (load 1 + 1 <= 3) keeps its key')
})

t.test('the capacity is ceil(factor * (total + 1) / accepted upstreams)', async (t) => {
  const table = buildPlacement(upstreams(4))
  const h = hashPreferring(table, 2)
  const cases: { name: string; load: number[]; total: number; factor: number; accept?: (i: number) => boolean; placedOn2: boolean }[] = [
    // ceil(1.25 * 10 / 4) = 4: load 3 + 1 = 4 fits, load 4 + 1 does not.
    { name: 'load 3 fits under capacity 4', load: [2, 2, 3, 2], total: 9, factor: 1.25, placedOn2: true },
    { name: 'load 4 does not fit under capacity 4', load: [2, 1, 4, 2], total: 9, factor: 1.25, placedOn2: false },
    // One upstream rejected: ceil(1.25 * 10 / 3) = 5, so load 4 now fits.
    { name: 'a rejected upstream is not a bin: capacity 5 over 3', load: [2, 1, 4, 2], total: 9, factor: 1.25, accept: (i) => i !== 0, placedOn2: true },
    // factor 1: ceil(10 / 4) = 3.
    { name: 'factor 1 gives the strict ceiling of the mean', load: [3, 2, 3, 1], total: 9, factor: 1, placedOn2: false },
    { name: 'a large factor never diverts', load: [0, 0, 9, 0], total: 9, factor: 100, placedOn2: true },
  ]
  for (const c of cases) {
    const got = pickBounded(table, h, c.accept ?? all, Int32Array.from(c.load), c.total, c.factor)
    t.equal(got === 2, c.placedOn2, c.name)
  }
})

t.test('a new session is never placed on an upstream whose load would exceed its capacity', async (t) => {
  const cases = [
    { name: '10 equal upstreams, factor 1.25, uniform keys', n: 10, factor: 1.25, hot: 0 },
    { name: '10 equal upstreams, factor 1.1, half the sessions on 5 hot keys', n: 10, factor: 1.1, hot: 0.5 },
    { name: '5 equal upstreams, factor 1.0, every session on one key', n: 5, factor: 1.0, hot: 1 },
  ]
  for (const c of cases) {
    const table = buildPlacement(upstreams(c.n))
    const load = new Int32Array(c.n)
    const next = mulberry32(1)
    const live: number[] = []
    let total = 0
    let violations = 0
    for (let s = 0; s < 20_000; s++) {
      // Sessions end too: one in three steps closes a random live session.
      if (live.length > 0 && next() < 1 / 3) {
        const j = Math.floor(next() * live.length)
        load[live[j]!]!--
        live[j] = live[live.length - 1]!
        live.pop()
        total--
      }
      const h = next() < c.hot ? hashes[Math.floor(next() * 5)]! : hashes[s]!
      const capacity = Math.ceil((c.factor * (total + 1)) / c.n)
      const i = pickBounded(table, h, all, load, total, c.factor)
      if (load[i]! + 1 > capacity) violations++
      load[i]!++
      total++
      live.push(i)
    }
    const max = Math.max(...load)
    t.equal(violations, 0, `${c.name}: no placement exceeded capacity`)
    t.ok(max <= Math.ceil((c.factor * total) / c.n), `${c.name}: busiest holds ${max} of ${total}`)
  }
})

t.test('a full upstream sends the key to the next candidate in hash order', async (t) => {
  const table = buildPlacement(upstreams(8))
  const order = new Int32Array(8)
  const next = mulberry32(5)
  for (let n = 0; n < 500; n++) {
    const load = Int32Array.from({ length: 8 }, () => Math.floor(next() * 20))
    const total = load.reduce((a, b) => a + b, 0)
    const h = hashes[n]!
    const capacity = Math.ceil((1.25 * (total + 1)) / 8)
    table.order(h, order)
    const expected = order.find((i) => load[i]! + 1 <= capacity) ?? -1
    const got = pickBounded(table, h, all, load, total, 1.25)
    if (got !== expected) {
      t.fail(`loads ${[...load]}: got ${got}, the first under capacity in hash order is ${expected}`)
      return
    }
  }
  t.pass('500 random load vectors: the pick is the first candidate under capacity')
})

t.test('loads may be given as an Int32Array, a plain array or a function', async (t) => {
  const table = buildPlacement(upstreams(6))
  const loads = [9, 0, 4, 7, 1, 3]
  const total = 24
  for (const h of hashes.subarray(0, 300)) {
    const a = pickBounded(table, h, all, Int32Array.from(loads), total, 1.2)
    const b = pickBounded(table, h, all, loads, total, 1.2)
    const c = pickBounded(table, h, all, (i) => loads[i]!, total, 1.2)
    if (a !== b || a !== c) {
      t.fail(`hash ${h}: ${a}, ${b}, ${c}`)
      return
    }
  }
  t.pass('all three forms place identically')
})

t.test('weights scale the capacity: a weight-2 upstream may hold twice as many', async (t) => {
  // Weights 2, 1, 1 (accepted weight 4), total 7, factor 1: capacities ceil(8 / 2) = 4 and ceil(8 / 4) = 2.
  const table = buildPlacement([{ id: 'a', weight: 2 }, { id: 'b', weight: 1 }, { id: 'c', weight: 1 }])
  const toA = hashPreferring(table, 0)
  const toB = hashPreferring(table, 1)
  t.equal(pickBounded(table, toA, all, [3, 2, 2], 7, 1), 0, 'a (weight 2) at load 3 still takes a key: 4 <= 4')
  t.not(pickBounded(table, toB, all, [3, 2, 2], 7, 1), 1, 'b (weight 1) at load 2 does not: 3 > 2')
})

t.test('edge cases: nothing accepted, inconsistent loads, a bad factor', async (t) => {
  const table = buildPlacement(upstreams(3))
  t.equal(pickBounded(table, 1, () => false, [0, 0, 0], 0, 1.25), -1, 'no accepted upstream gives -1')
  t.equal(pickBounded(buildPlacement([]), 1, all, [], 0, 1.25), -1, 'an empty table gives -1')
  t.equal(
    pickBounded(table, hashes[0]!, all, [100, 100, 100], 3, 1.25),
    table.pick(hashes[0]!),
    'loads above the stated total degrade to the plain pick instead of refusing service',
  )
  for (const factor of [0.9, Number.NaN, Number.POSITIVE_INFINITY]) {
    t.throws(() => pickBounded(table, 1, all, [0, 0, 0], 0, factor), RangeError, `factor ${factor} is rejected`)
  }
})

t.test('an accept predicate that itself places a session does not disturb the outer pick', async (t) => {
  const table = buildPlacement(upstreams(4))
  const h = hashPreferring(table, 0)
  const outer = pickBounded(table, h, all, [5, 1, 1, 1], 8, 1.25)
  const reentrant = pickBounded(table, h, (i) => pickBounded(table, h, all, [0, 0, 0, 0], 0, 1.25) >= 0 && i >= 0, [5, 1, 1, 1], 8, 1.25)
  t.equal(reentrant, outer, 'same answer with a nested call inside accept')
})

t.test('a key that does not spill costs one accept and one load read, not a pass over the upstreams', async (t) => {
  // 1,000 upstreams weights 1..3, equal loads: every key stays on its first choice
  const table = buildPlacement(upstreams(1000, (i) => 1 + (i % 3)), { bucketBits: 8 })
  let sum = 0
  for (let i = 0; i < 1000; i++) sum += table.weightOf(i)
  t.equal(table.totalWeight, sum, 'the table knows its total weight')
  const load = Int32Array.from({ length: 1000 }, (_, i) => 10 * (1 + (i % 3)))
  const total = load.reduce((a, b) => a + b, 0)
  let accepts = 0
  let loads = 0
  const counted = (i: number): boolean => i >= 0 && ++accepts > 0
  const loadOf = (i: number): number => (loads++, load[i]!)
  for (const h of hashes.subarray(0, 100)) {
    accepts = 0
    loads = 0
    const i = pickBounded(table, h, counted, loadOf, total, 1.25)
    if (i !== table.pick(h) || accepts !== 1 || loads !== 1) {
      t.fail(`hash ${h}: placed on ${i} (first choice ${table.pick(h)}) after ${accepts} accept calls and ${loads} load reads`)
      return
    }
  }
  t.pass('100 keys: each placed on its first choice after 1 accept call and 1 load read')
  // one upstream refused: keys still pass the bound computed with the total weight unless
  // their first choice is within a rounding step of its capacity
  const spill = hashPreferring(table, 7)
  const full = Int32Array.from(load)
  full[7] = 1000
  accepts = 0
  const j = pickBounded(table, spill, counted, full, total, 1.25)
  t.not(j, 7, 'a full first choice still spills')
  t.ok(accepts > 1000, `a spilling key sums the accepted weights once (${accepts} accept calls)`)
})
