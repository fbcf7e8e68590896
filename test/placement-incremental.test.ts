// The placement table built fast (lazily per bucket for big sets, and derived from the previous
// table on a membership change) places every bucket exactly as the builder shipped before
// (test/fixtures/placement/reference-rendezvous.ts): users must not move because of a Tether
// upgrade, and replicas of two versions must agree during a rolling one. Random upstream sets
// (ids, weights, uniform or not) and random chains of changes, compared bucket by bucket: the
// first choice, the second, and the rare third-or-later walk under rejecting predicates (drained
// or down upstreams). Small bucket counts keep the reference affordable; the shipped 2^16 is
// covered too.
import t, { type Test } from 'tap'
import { buildPlacement, BUCKET_BITS, type PlacementTable, type UpstreamWeight } from '../src/placement/rendezvous.js'
import { buildPlacement as referenceBuild } from './fixtures/placement/reference-rendezvous.js'
import { roundRobinSchedule } from '../src/placement/round-robin.js'
import { mulberry32 } from './fixtures/placement/keys.js'

const ID_CHARS = ['a', 'b', 'z', '0', '9', '-', '.', 'é', '漢', '😀', 'A']

function randomId(rand: () => number): string {
  let s = rand() < 0.5 ? 'pod-' : ''
  const len = 1 + Math.floor(rand() * 8)
  for (let i = 0; i < len; i++) s += ID_CHARS[Math.floor(rand() * ID_CHARS.length)]!
  return s
}

function randomWeight(rand: () => number, uniform: boolean): number {
  if (uniform) return 1
  return rand() < 0.2 ? 1000 : 1 + Math.floor(rand() * (rand() < 0.5 ? 10 : 1000))
}

function randomSet(rand: () => number, n: number, uniform: boolean): UpstreamWeight[] {
  const ids = new Set<string>()
  while (ids.size < n) ids.add(randomId(rand))
  return [...ids].map((id) => ({ id, weight: randomWeight(rand, uniform) }))
}

/** Every bucket's first and second choice, and a rejecting walk, agree with the reference (by id). */
function sameAsReference(t: Test, table: PlacementTable, set: readonly UpstreamWeight[], bucketBits: number, rand: () => number, what: string): void {
  const ref = referenceBuild(set, { bucketBits })
  t.same(table.ids, ref.ids, `${what}: ids`)
  const shift = 32 - bucketBits
  const n = set.length
  // a "drain": a random third of the upstreams rejected (same ids in both tables)
  const rejected = new Set<string>()
  for (const u of set) if (rand() < 0.34) rejected.add(u.id)
  let bad = 0
  for (let b = 0; b < 2 ** bucketBits; b++) {
    const h = ((b << shift) | Math.floor(rand() * 2 ** shift)) >>> 0
    const p = table.pick(h)
    const rp = ref.pick(h)
    const q = n > 1 ? table.pick(h, (i) => i !== p) : -1
    const rq = n > 1 ? ref.pick(h, (i) => i !== rp) : -1
    const d = table.pick(h, (i) => !rejected.has(table.ids[i]!))
    const rd = ref.pick(h, (i) => !rejected.has(ref.ids[i]!))
    if (table.ids[p] !== ref.ids[rp] || table.ids[q] !== ref.ids[rq] || table.ids[d] !== ref.ids[rd]) bad++
  }
  t.equal(bad, 0, `${what}: every bucket places as the reference (${n} upstreams, 2^${bucketBits} buckets)`)
}

t.test('a fresh table equals the reference over random upstream sets', async (t) => {
  const rand = mulberry32(4101)
  for (let round = 0; round < 40; round++) {
    const n = 1 + Math.floor(rand() * 60)
    const uniform = rand() < 0.4
    const bits = 6 + Math.floor(rand() * 5)
    const set = randomSet(rand, n, uniform)
    sameAsReference(t, buildPlacement(set, { bucketBits: bits }), set, bits, rand, `round ${round}`)
  }
  // the order() walk (admin views) too
  const set = randomSet(rand, 25, false)
  const table = buildPlacement(set, { bucketBits: 8 })
  const ref = referenceBuild(set, { bucketBits: 8 })
  for (let k = 0; k < 50; k++) {
    const h = Math.floor(rand() * 2 ** 32)
    const a: number[] = []
    const b: number[] = []
    table.order(h, a)
    ref.order(h, b)
    t.same(a, b, 'order() as the reference')
  }
})

t.test('a table derived from the previous one equals a fresh reference, change after change', async (t) => {
  const rand = mulberry32(4102)
  for (let chain = 0; chain < 12; chain++) {
    const uniform = chain % 3 === 0
    const bits = 8 + (chain % 3)
    let set = randomSet(rand, 20 + Math.floor(rand() * 80), uniform)
    let table = buildPlacement(set, { bucketBits: bits })
    for (let step = 0; step < 8; step++) {
      const next = set.map((u) => ({ ...u }))
      const kind = Math.floor(rand() * 5)
      if (kind === 0 && next.length > 2) next.splice(Math.floor(rand() * next.length), 1) // one removed
      else if (kind === 1) next.push(...randomSet(rand, 1, uniform).filter((u) => !next.some((v) => v.id === u.id))) // one added
      else if (kind === 2 && !uniform) next[Math.floor(rand() * next.length)]!.weight = randomWeight(rand, false) // a weight
      else if (kind === 3) {
        // a few at once: two removed, three added
        for (let i = 0; i < 2 && next.length > 3; i++) next.splice(Math.floor(rand() * next.length), 1)
        next.push(...randomSet(rand, 3, uniform).filter((u) => !next.some((v) => v.id === u.id)))
      } else if (next.length > 2) {
        // a removal and an addition in one reload (a pod replaced)
        next.splice(Math.floor(rand() * next.length), 1)
        next.push(...randomSet(rand, 1, uniform).filter((u) => !next.some((v) => v.id === u.id)))
      }
      set = next
      table = buildPlacement(set, { bucketBits: bits, previous: table })
      sameAsReference(t, table, set, bits, rand, `chain ${chain} step ${step} (kind ${kind})`)
    }
  }
})

t.test('a big set is computed per bucket on first lookup, and a change from it equals the reference', async (t) => {
  // 4,200 upstreams x 2^12 buckets is above the eager budget: nothing is scanned up front
  const rand = mulberry32(4103)
  for (const uniform of [true, false]) {
    const bits = 12
    let set = randomSet(rand, 4200, uniform)
    const table = buildPlacement(set, { bucketBits: bits })
    t.equal(table.scannedBuckets, 0, 'no bucket computed at build time')
    const ref = referenceBuild(set, { bucketBits: bits })
    t.equal(table.ids[table.pick(0x12345678)], ref.ids[ref.pick(0x12345678)], 'first lookup as the reference')
    t.equal(table.scannedBuckets, 1, 'one lookup computes one bucket')
    // half the buckets looked up, then one upstream leaves: the derived table keeps the rest lazy
    for (let b = 0; b < 2 ** bits; b += 2) table.pick((b << (32 - bits)) >>> 0)
    set = set.filter((_, i) => i !== 17)
    const derived = buildPlacement(set, { bucketBits: bits, previous: table })
    t.ok(derived.scannedBuckets <= 32, `one removal rescans ${derived.scannedBuckets} of ${2 ** bits} buckets (about 2/n)`)
    sameAsReference(t, derived, set, bits, rand, `${uniform ? 'uniform' : 'weighted'}, one removed`)
    // and one joins
    const plusOne = [...set, { id: 'a-new-pod', weight: uniform ? 1 : 7 }]
    const grown = buildPlacement(plusOne, { bucketBits: bits, previous: derived })
    t.equal(grown.scannedBuckets, 0, 'one addition rescans no bucket (two scores per computed bucket)')
    sameAsReference(t, grown, plusOne, bits, rand, `${uniform ? 'uniform' : 'weighted'}, one added`)
  }
})

t.test('the shipped 2^16 buckets: a lazily computed big set equals the reference', async (t) => {
  const rand = mulberry32(4104)
  const set = randomSet(rand, 300, false)
  const table = buildPlacement(set)
  t.equal(table.scannedBuckets, 0, '300 upstreams x 2^16 buckets: lazy')
  sameAsReference(t, table, set, BUCKET_BITS, rand, 'default buckets')
  const minus = set.slice(1)
  sameAsReference(t, buildPlacement(minus, { previous: table }), minus, BUCKET_BITS, rand, 'default buckets, one removed')
})

t.test('10,000 upstreams: the build scans nothing, one change scans about 2/n of the computed buckets', async (t) => {
  const set = Array.from({ length: 10_000 }, (_, i) => ({ id: `pod-${i}`, weight: 1 }))
  const table = buildPlacement(set)
  t.equal(table.scannedBuckets, 0, 'a worker starts without computing the table')
  const minus = buildPlacement(set.slice(1), { previous: table })
  t.equal(minus.scannedBuckets, 0, 'nothing computed yet, nothing to recompute')
})
/** nginx's smooth weighted round-robin walk, as shipped before (O(total x upstreams)). */
function referenceSchedule(upstreams: readonly { weight: number }[]): number[] {
  const gcd = (a: number, b: number): number => (b === 0 ? a : gcd(b, a % b))
  const g = upstreams.reduce((acc, u) => gcd(acc, u.weight), 0) || 1
  const weights = upstreams.map((u) => u.weight / g)
  const total = weights.reduce((a, b) => a + b, 0)
  const current = new Array<number>(upstreams.length).fill(0)
  const out: number[] = []
  for (let n = 0; n < total; n++) {
    let best = 0
    for (let i = 0; i < weights.length; i++) {
      current[i]! += weights[i]!
      if (current[i]! > current[best]!) best = i
    }
    current[best]! -= total
    out.push(best)
  }
  return out
}

t.test('the round-robin schedule equals the nginx walk over random weights', async (t) => {
  const rand = mulberry32(4105)
  for (let round = 0; round < 60; round++) {
    const n = 1 + Math.floor(rand() * 40)
    const mode = round % 3
    const ups = Array.from({ length: n }, (_, i) => ({ id: `u${i}`, weight: mode === 0 ? 3 : mode === 1 ? 1 + Math.floor(rand() * 4) : 1 + Math.floor(rand() * 60) }))
    t.same([...roundRobinSchedule(ups)], referenceSchedule(ups), `round ${round}: ${n} upstreams`)
  }
})
