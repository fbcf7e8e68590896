// Specification of the placement table (src/placement/rendezvous.ts), measured over 100,000
// seeded random session keys: balance, weights, disruption on membership change, determinism,
// and the failover preference order.
import t from 'tap'
import { buildPlacement, type PlacementTable, type UpstreamWeight } from '../src/placement/rendezvous.js'
import { sessionHashes, shuffled, upstreams } from './fixtures/placement/keys.js'

const KEYS = 100_000
const hashes = sessionHashes(KEYS)

/** The upstream id each key lands on (no predicate). */
function placements(table: PlacementTable): string[] {
  const out: string[] = []
  for (const h of hashes) out.push(table.ids[table.pick(h)]!)
  return out
}

function countsById(ids: readonly string[]): Map<string, number> {
  const m = new Map<string, number>()
  for (const id of ids) m.set(id, (m.get(id) ?? 0) + 1)
  return m
}

t.test('with 10 equal upstreams the busiest gets at most 1.10x the mean', async (t) => {
  const counts = countsById(placements(buildPlacement(upstreams(10))))
  const max = Math.max(...counts.values())
  t.equal(counts.size, 10, 'every upstream gets keys')
  t.ok(max <= 1.1 * (KEYS / 10), `busiest has ${max} keys, ${(max / (KEYS / 10)).toFixed(3)}x the mean`)
})

t.test('weights are honoured: each upstream gets keys in proportion to its weight', async (t) => {
  const cases: { name: string; weights: number[] }[] = [
    { name: 'weight 2 gets about twice weight 1', weights: [1, 2, 1, 2, 1, 2, 1, 2, 1, 2] },
    { name: 'weights 1, 3 and 6', weights: [1, 3, 6] },
    { name: 'large weights keep their ratio', weights: [1000, 500, 250, 250] },
  ]
  for (const c of cases) {
    const set = upstreams(c.weights.length, (i) => c.weights[i]!)
    const counts = countsById(placements(buildPlacement(set)))
    const total = c.weights.reduce((a, b) => a + b, 0)
    for (const [i, u] of set.entries()) {
      const expected = (KEYS * c.weights[i]!) / total
      const got = counts.get(u.id) ?? 0
      t.ok(Math.abs(got / expected - 1) <= 0.1, `${c.name}: ${u.id} (weight ${u.weight}) got ${got}, expected ~${expected.toFixed(0)}`)
    }
  }
})

const sizes = [3, 5, 10]

t.test('removing an upstream moves only its own keys', async (t) => {
  for (const n of sizes) {
    const set = upstreams(n)
    const before = placements(buildPlacement(set))
    for (const removed of [set[0]!.id, set[n - 1]!.id]) {
      const after = placements(buildPlacement(set.filter((u) => u.id !== removed)))
      let moved = 0
      let others = 0
      let othersMoved = 0
      for (let k = 0; k < KEYS; k++) {
        if (before[k] !== after[k]) moved++
        if (before[k] !== removed) {
          others++
          if (before[k] !== after[k]) othersMoved++
        }
      }
      t.ok(moved / KEYS <= 1 / n + 0.02, `N=${n}, remove ${removed}: ${(100 * moved / KEYS).toFixed(2)}% of keys moved (limit ${(100 / n + 2).toFixed(2)}%)`)
      t.ok(othersMoved / others <= 0.02, `N=${n}, remove ${removed}: ${(100 * othersMoved / others).toFixed(2)}% of the other upstreams' keys moved (limit 2%)`)
    }
  }
})

t.test('adding an upstream moves only the keys it takes', async (t) => {
  for (const n of sizes) {
    const set = upstreams(n)
    const before = placements(buildPlacement(set))
    const added = { id: 'app-new', weight: 1 }
    const after = placements(buildPlacement([...set, added]))
    let moved = 0
    let movedElsewhere = 0
    for (let k = 0; k < KEYS; k++) {
      if (before[k] !== after[k]) {
        moved++
        if (after[k] !== added.id) movedElsewhere++
      }
    }
    t.ok(moved / KEYS <= 1 / (n + 1) + 0.02, `N=${n} -> ${n + 1}: ${(100 * moved / KEYS).toFixed(2)}% of keys moved (limit ${(100 / (n + 1) + 2).toFixed(2)}%)`)
    t.equal(movedElsewhere, 0, `N=${n} -> ${n + 1}: every key that moved went to the new upstream`)
  }
})

t.test('changing one weight moves keys only to or from that upstream', async (t) => {
  const set = upstreams(10)
  const before = placements(buildPlacement(set))
  const after = placements(buildPlacement(set.map((u) => (u.id === 'app-004' ? { ...u, weight: 3 } : u))))
  let between = 0
  for (let k = 0; k < KEYS; k++) if (before[k] !== after[k] && after[k] !== 'app-004' && before[k] !== 'app-004') between++
  t.equal(between, 0, 'no key moved between two other upstreams')
})

t.test('scaling every weight by the same factor places identically', async (t) => {
  const base = upstreams(6, (i) => 1 + i)
  const reference = placements(buildPlacement(base))
  for (const factor of [2, 3, 7]) {
    t.same(placements(buildPlacement(base.map((u) => ({ ...u, weight: u.weight * factor })))), reference, `weights x${factor}`)
  }
  t.same(placements(buildPlacement(upstreams(6, () => 40))), placements(buildPlacement(upstreams(6))), 'equal weights of 40 place like equal weights of 1')
})

t.test('two tables built from the same upstreams in a different order place identically', async (t) => {
  const cases: { name: string; set: UpstreamWeight[] }[] = [
    { name: 'equal weights', set: upstreams(10) },
    { name: 'mixed weights', set: upstreams(7, (i) => 1 + i * 3) },
    { name: 'ids that sort differently by locale', set: ['b', 'B', 'a', 'A', 'ä', '_'].map((id) => ({ id, weight: 1 })) },
  ]
  for (const c of cases) {
    const a = buildPlacement(c.set)
    const b = buildPlacement(shuffled(c.set, 99))
    t.same(a.ids, [...c.set.map((u) => u.id)].sort(), `${c.name}: ids are sorted by code unit`)
    t.same(placements(b), placements(a), `${c.name}: identical placements`)
  }
})

t.test('the preference order is a real ordering over all upstreams', async (t) => {
  const set = upstreams(10, (i) => 1 + (i % 3))
  const table = buildPlacement(set)
  const out = new Int32Array(10)
  for (const h of hashes.subarray(0, 2000)) {
    const n = table.order(h, out)
    if (new Set(out).size !== 10 || n !== 10) {
      t.fail(`order of ${h} is not a permutation: ${[...out]}`)
      return
    }
    // pick with the first r candidates rejected returns the (r+1)-th of the order.
    for (let r = 0; r < 10; r++) {
      const rejected = new Set(out.subarray(0, r))
      const got = table.pick(h, (i) => !rejected.has(i))
      if (got !== out[r]) {
        t.fail(`hash ${h}: with the first ${r} rejected, pick gave ${got}, order says ${out[r]}`)
        return
      }
    }
    if (table.pick(h, () => false) !== -1) {
      t.fail(`hash ${h}: pick with every upstream rejected did not return -1`)
      return
    }
  }
  t.pass('for 2000 keys, order() is a permutation and pick() walks it candidate by candidate')
})

t.test("when an upstream is rejected its keys spread over the others", async (t) => {
  const table = buildPlacement(upstreams(10))
  const x = table.indexOf('app-003')
  const fallbacks = new Map<number, number>()
  let onX = 0
  for (const h of hashes) {
    if (table.pick(h) !== x) continue
    onX++
    const f = table.pick(h, (i) => i !== x)
    fallbacks.set(f, (fallbacks.get(f) ?? 0) + 1)
  }
  const maxShare = Math.max(...fallbacks.values()) / onX
  t.ok(fallbacks.size >= 5, `fallbacks land on ${fallbacks.size} upstreams (at least 5)`)
  t.ok(maxShare <= 0.35, `the busiest fallback takes ${(100 * maxShare).toFixed(1)}% (at most 35%)`)
})

t.test('a failover goes where the key will live once the upstream is removed', async (t) => {
  const set = upstreams(10)
  const table = buildPlacement(set)
  const without = buildPlacement(set.filter((u) => u.id !== 'app-003'))
  const x = table.indexOf('app-003')
  let disagree = 0
  for (const h of hashes) {
    if (table.pick(h) !== x) continue
    if (table.ids[table.pick(h, (i) => i !== x)] !== without.ids[without.pick(h)]) disagree++
  }
  t.equal(disagree, 0, 'so a session moves once, not twice, when an upstream fails and is then removed')
})

t.test('failover keeps the order among survivors when several are rejected', async (t) => {
  const set = upstreams(10)
  const table = buildPlacement(set)
  const down = new Set(['app-001', 'app-004', 'app-007'].map((id) => table.indexOf(id)))
  const rebuilt = buildPlacement(set.filter((u) => !down.has(table.indexOf(u.id))))
  let disagree = 0
  for (const h of hashes.subarray(0, 20_000)) {
    if (table.ids[table.pick(h, (i) => !down.has(i))] !== rebuilt.ids[rebuilt.pick(h)]) disagree++
  }
  t.equal(disagree, 0, 'rejecting three upstreams places like a table without them')
})

t.test('edge cases: an empty set, one upstream, unknown ids', async (t) => {
  const empty = buildPlacement([])
  t.equal(empty.pick(123), -1, 'an empty table places nothing')
  t.equal(empty.order(123, new Int32Array(0)), 0, 'an empty table has an empty order')
  const one = buildPlacement([{ id: 'solo', weight: 5 }])
  t.equal(one.pick(123), 0, 'a single upstream takes every key')
  t.equal(one.pick(123, () => false), -1, 'a single rejected upstream gives -1')
  t.equal(one.indexOf('other'), -1, 'an unknown id has index -1')
  t.equal(one.weightOf(0), 5, 'weightOf reads the configured weight')
  t.ok(Object.isFrozen(one) && Object.isFrozen(one.ids), 'the table and its ids are frozen')
})

t.test('invalid upstream sets are rejected when the table is built', async (t) => {
  const cases: { name: string; set: UpstreamWeight[]; message: RegExp }[] = [
    { name: 'a duplicate id', set: [{ id: 'a', weight: 1 }, { id: 'a', weight: 2 }], message: /duplicate upstream id "a"/ },
    { name: 'an empty id', set: [{ id: '', weight: 1 }], message: /non-empty string/ },
    { name: 'weight 0', set: [{ id: 'a', weight: 0 }], message: /integer 1\.\.1000, got 0/ },
    { name: 'weight 1001', set: [{ id: 'a', weight: 1001 }], message: /got 1001/ },
    { name: 'a fractional weight', set: [{ id: 'a', weight: 1.5 }], message: /got 1\.5/ },
  ]
  for (const c of cases) t.throws(() => buildPlacement(c.set), { name: 'RangeError', message: c.message }, c.name)
})
