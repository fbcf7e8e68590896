// pickBounded (src/placement/bounded-load.ts) picks exactly as the version shipped before it
// stopped summing the accepted weights on every call (test/fixtures/placement/reference-bounded-load.ts):
// a new session must land where it landed before an upgrade, and on every replica of either
// version. Random upstream sets (sizes 1..40 and big lazy ones, equal or mixed weights), random
// accept predicates (all, most, few, none: health, tried, slow start), random loads (consistent,
// clustered at each upstream's capacity, where a rounding slip would show, and inconsistent),
// random totals, factors and keys; loads as an array, a short array or a function.
import t from 'tap'
import { pickBounded, type LoadSource } from '../src/placement/bounded-load.js'
import { pickBounded as referencePickBounded } from './fixtures/placement/reference-bounded-load.js'
import { buildPlacement, type PlacementTable, type UpstreamWeight } from '../src/placement/rendezvous.js'
import { mulberry32 } from './fixtures/placement/keys.js'

function randomSet(rand: () => number, n: number): UpstreamWeight[] {
  const kind = rand()
  // equal weights (1, or all the same k), small mixed, wide mixed
  const same = 1 + Math.floor(rand() * 5)
  const weight = (): number => (kind < 0.3 ? 1 : kind < 0.45 ? same : kind < 0.75 ? 1 + Math.floor(rand() * 3) : 1 + Math.floor(rand() * 1000))
  return Array.from({ length: n }, (_, i) => ({ id: `u${i}-${Math.floor(rand() * 1e6)}`, weight: weight() }))
}

const FACTORS = [1, 1.1, 1.2, 1.25, 1.5, 2, 3.7, 1e6]

interface Outcome { readonly cases: number; readonly bad: string[] }

/** Compares both over `keys` random keys for one table and many accept/load/factor draws. */
function compare(table: PlacementTable, rand: () => number, draws: number, keys: number): Outcome {
  const n = table.ids.length
  const bad: string[] = []
  let cases = 0
  for (let d = 0; d < draws; d++) {
    // accept: all, each with probability p, or none
    const mode = rand()
    const p = mode < 0.2 ? 1 : mode < 0.9 ? [0.95, 0.7, 0.3, 0.05][Math.floor(rand() * 4)]! : 0
    const accepted = Array.from({ length: n }, () => rand() < p)
    const accept = (i: number): boolean => accepted[i]!
    const factor = rand() < 0.7 ? FACTORS[Math.floor(rand() * FACTORS.length)]! : 1 + rand() * 0.6
    let acceptedWeight = 0
    for (let i = 0; i < n; i++) if (accepted[i]) acceptedWeight += table.weightOf(i)
    // loads: consistent random; at capacity (each upstream at its capacity - 2 .. capacity + 1,
    // computed with the accepted weight: the boundary an upper bound on it must not misjudge);
    // or inconsistent (loads above the stated total, a negative total)
    const style = rand()
    const loads = new Array<number>(n).fill(0)
    let total: number
    if (style < 0.35) {
      for (let i = 0; i < n; i++) loads[i] = Math.floor(rand() * (rand() < 0.5 ? 4 : 200))
      total = loads.reduce((a, b) => a + b, 0)
    } else if (style < 0.9) {
      total = Math.floor(rand() * (rand() < 0.5 ? 50 : 100_000))
      for (let i = 0; i < n; i++) {
        const bins = acceptedWeight > 0 ? acceptedWeight / table.weightOf(i) : 1
        const capacity = Math.ceil((factor * (total + 1)) / bins)
        loads[i] = Math.max(0, capacity - 2 + Math.floor(rand() * 4))
      }
    } else {
      for (let i = 0; i < n; i++) loads[i] = Math.floor(rand() * 1000)
      total = rand() < 0.5 ? -Math.floor(rand() * 10) : Math.floor(rand() * 100)
    }
    const shape = rand()
    const load: LoadSource = shape < 0.5 ? Int32Array.from(loads) : shape < 0.75 ? loads.slice(0, Math.floor(rand() * (n + 1))) : (i) => loads[i]!
    for (let k = 0; k < keys; k++) {
      const h = Math.floor(rand() * 2 ** 32)
      cases++
      const got = pickBounded(table, h, accept, load, total, factor)
      const want = referencePickBounded(table, h, accept, load, total, factor)
      if (got !== want && bad.length < 5) {
        bad.push(`n ${n}, hash ${h}, factor ${factor}, total ${total}, accepted weight ${acceptedWeight}: got ${got}, reference ${want}`)
      }
    }
  }
  return { cases, bad }
}

t.test('small sets (1..40 upstreams): identical picks for random weights, health, loads and keys', async (t) => {
  const rand = mulberry32(6061)
  let cases = 0
  const bad: string[] = []
  for (let round = 0; round < 150; round++) {
    const n = 1 + Math.floor(rand() * (round < 50 ? 6 : 40))
    const table = buildPlacement(randomSet(rand, n), { bucketBits: 8 })
    const r = compare(table, rand, 30, 20)
    cases += r.cases
    bad.push(...r.bad)
  }
  t.same(bad.slice(0, 5), [], `${cases} picks agree with the reference`)
})

t.test('big sets (300 and 3,000 upstreams, buckets computed on first lookup): identical picks', async (t) => {
  const rand = mulberry32(6062)
  for (const n of [300, 3000]) {
    const table = buildPlacement(randomSet(rand, n), { bucketBits: 10 })
    const r = compare(table, rand, 12, 25)
    t.same(r.bad, [], `${n} upstreams: ${r.cases} picks agree with the reference`)
  }
})

t.test('a stream of placements that fill the upstreams (loads follow the picks): identical picks', async (t) => {
  // the state bounded loads lives in: every upstream near its capacity, keys spilling
  const rand = mulberry32(6063)
  let cases = 0
  const bad: string[] = []
  for (let round = 0; round < 12; round++) {
    const n = 2 + Math.floor(rand() * 60)
    const table = buildPlacement(randomSet(rand, n), { bucketBits: 12 })
    const down = new Set<number>()
    for (let i = 0; i < n; i++) if (rand() < 0.1) down.add(i)
    const accept = (i: number): boolean => !down.has(i)
    const load = new Int32Array(n)
    let total = 0
    const factor = [1, 1.05, 1.25, 2][round % 4]!
    for (let s = 0; s < 3000; s++) {
      const h = Math.floor(rand() * 2 ** 32)
      const got = pickBounded(table, h, accept, load, total, factor)
      const want = referencePickBounded(table, h, accept, load, total, factor)
      cases++
      if (got !== want && bad.length < 5) bad.push(`round ${round}, session ${s}: got ${got}, reference ${want}`)
      if (want >= 0) {
        load[want]!++
        total++
      }
    }
  }
  t.same(bad, [], `${cases} placements agree with the reference`)
})
