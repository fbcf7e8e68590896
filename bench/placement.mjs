// Placement bench: key lookups per second (hash included), build time and table memory of the
// shipped table (dist/placement/*.js), then the same measurements plus balance, disruption and
// failover spread for the candidate schemes, so docs/placement.md can be re-checked on any box.
// Plain ESM, no dependencies; build first (`npx tsc -p tsconfig.json`). Never imported by src/.
//
//   node bench/placement.mjs            # shipped table + comparison of candidates (~1 min)
//   node bench/placement.mjs --quick    # shipped table only (~8 s)
//   node bench/placement.mjs --json     # one JSON object instead of tables

import { buildPlacement } from '../dist/placement/rendezvous.js'
import { hashKey, murmur3, murmur3U32 } from '../dist/placement/hash.js'
import { pickBounded } from '../dist/placement/bounded-load.js'
import { prng } from './lib/prng.mjs'

const args = new Set(process.argv.slice(2))
const QUICK = args.has('--quick')
const JSON_OUT = args.has('--json')
const KEYS = 100_000
const LOOKUPS = 5_000_000

/** Deterministic floats in [0, 1) (lib/prng.mjs's mulberry32) so every run uses the same keys. */
const mulberry32 = (seed) => {
  const next = prng(seed)
  return () => next() / 4294967296
}
const rand = mulberry32(20251125)
/** Session-cookie-like keys: 22 characters of base64url, like a 128-bit random id. */
const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'
const keys = Array.from({ length: KEYS }, () => {
  let s = ''
  for (let i = 0; i < 22; i++) s += ALPHABET[Math.floor(rand() * 64)]
  return s
})
const hashes = Uint32Array.from(keys, hashKey)
const upstreams = (n, weight = () => 1) => Array.from({ length: n }, (_, i) => ({ id: `app-${String(i).padStart(3, '0')}`, weight: weight(i) }))
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]

/** Lookups per second over `keys`, hash included: median of 5 runs of LOOKUPS lookups. */
function lookupsPerSecond(pick, lookups = LOOKUPS, rounds = 6) {
  const runs = []
  let sink = 0
  for (let r = 0; r < rounds; r++) {
    const t0 = process.hrtime.bigint()
    for (let i = 0; i < lookups; i++) sink += pick(hashKey(keys[i % KEYS]))
    const ns = Number(process.hrtime.bigint() - t0)
    if (r > 0) runs.push(lookups / (ns / 1e9)) // run 0 warms up the JIT
  }
  if (sink === -1) console.log('')
  return median(runs)
}

function buildMs(build, ups) {
  const runs = []
  for (let r = 0; r < 5; r++) {
    const t0 = performance.now()
    build(ups)
    runs.push(performance.now() - t0)
  }
  return median(runs)
}

// ---------------------------------------------------------------- shipped table
function shipped() {
  const t100 = buildPlacement(upstreams(100))
  const down = t100.indexOf('app-007')
  const notDown = (i) => i !== down
  const load = new Int32Array(100)
  let total = 0
  const bounded = (h) => {
    const i = pickBounded(t100, h, notDown, load, total, 1.25)
    load[i]++
    total++
    return i
  }
  return {
    lookupsPerSecond100: lookupsPerSecond((h) => t100.pick(h)),
    lookupsPerSecond100OneRejected: lookupsPerSecond((h) => t100.pick(h, notDown)), // 1% of keys fail over
    boundedPerSecond100: lookupsPerSecond(bounded),
    hashesPerSecond: lookupsPerSecond(() => 0),
    buildMs10: buildMs(buildPlacement, upstreams(10)),
    buildMs100: buildMs(buildPlacement, upstreams(100)),
    buildMs100Weighted: buildMs(buildPlacement, upstreams(100, (i) => 1 + (i % 10))),
    tableBytes100: t100.tableBytes,
    ...big(10_000),
  }
}

/**
 * A big set (discovery of a big Service): the build (buckets are computed on first lookup above
 * 256 upstreams), looking up every one of the 2^16 buckets once (the cost the build defers,
 * spread over first lookups), then one upstream removed and one added, derived from that fully
 * computed table (what router.setUpstreams does on a membership change).
 */
function big(n) {
  const ups = upstreams(n).map((u, i) => ({ id: `pod-${i}`, weight: u.weight }))
  let t0 = performance.now()
  const table = buildPlacement(ups)
  const build = performance.now() - t0
  t0 = performance.now()
  for (let b = 0; b < 65536; b++) table.pick((b << 16) >>> 0)
  const allBuckets = performance.now() - t0
  t0 = performance.now()
  const minus = buildPlacement(ups.slice(1), { previous: table })
  const removeOne = performance.now() - t0
  t0 = performance.now()
  buildPlacement(ups, { previous: minus })
  const addOne = performance.now() - t0
  return { bigUpstreams: n, bigBuildMs: build, bigAllBucketsMs: allBuckets, bigRemoveOneMs: removeOne, bigAddOneMs: addOne }
}

// ---------------------------------------------------------------- candidates
// Each candidate: build(ups) -> { pick(hash, accept?) -> index into ups sorted by id, bytes }.

/** The shipped scheme: weighted rendezvous over 2^16 buckets (src/placement/rendezvous.ts). */
const bucketedRendezvous = {
  name: 'rendezvous, 2^16 buckets (shipped)',
  build: (ups) => {
    const t = buildPlacement(ups)
    return { pick: (h, a) => t.pick(h, a), bytes: t.tableBytes }
  },
}

/** Plain rendezvous (HRW), no table: O(upstreams) per lookup. Thaler & Ravishankar 1998. */
const plainRendezvous = {
  name: 'rendezvous, no table (O(N) lookup)',
  build: (ups) => {
    const n = ups.length
    const sorted = sortById(ups)
    const seeds = Int32Array.from(sorted, (u) => murmur3(u.id, 0x54455448))
    const inv = Float64Array.from(sorted, (u) => 1 / u.weight)
    return {
      bytes: seeds.byteLength + inv.byteLength,
      pick(h, accept) {
        let best = -1
        let bestS = -Infinity
        for (let i = 0; i < n; i++) {
          const s = Math.log((murmur3U32(h, seeds[i]) + 0.5) / 4294967296) * inv[i]
          if (s > bestS && (accept === undefined || accept(i))) {
            best = i
            bestS = s
          }
        }
        return best
      },
    }
  },
}

/** Ketama-style ring (Karger et al. 1997; libketama; Pingora): V points per weight unit. */
const ring = (vnodes) => ({
  name: `ring, ${vnodes} points/upstream`,
  build: (ups) => {
    const sorted = sortById(ups)
    const total = sorted.reduce((s, u) => s + u.weight * vnodes, 0)
    const packed = new Float64Array(total)
    let p = 0
    sorted.forEach((u, i) => {
      for (let j = 0; j < u.weight * vnodes; j++) packed[p++] = murmur3(`${u.id}-${j}`, 0) * 65536 + i
    })
    packed.sort()
    const points = new Uint32Array(total)
    const owner = new Uint16Array(total)
    for (let k = 0; k < total; k++) {
      points[k] = Math.floor(packed[k] / 65536)
      owner[k] = packed[k] % 65536
    }
    return {
      bytes: points.byteLength + owner.byteLength,
      pick(h, accept) {
        let lo = 0
        let hi = total
        while (lo < hi) {
          const mid = (lo + hi) >>> 1
          if (points[mid] < h) lo = mid + 1
          else hi = mid
        }
        for (let s = 0; s < total; s++) {
          const o = owner[(lo + s) % total]
          if (accept === undefined || accept(o)) return o
        }
        return -1
      },
    }
  },
})

/**
 * Maglev (Eisenbud et al., NSDI 2016, section 3.4, Pseudocode 1), M = 65537; weights by
 * turns (an upstream of weight w takes a turn in w of every max-weight rounds, as Envoy does);
 * failover walks the table from the key's slot.
 */
const maglev = {
  name: 'maglev, M=65537',
  build: (ups) => {
    const M = 65537
    const sorted = sortById(ups)
    const n = sorted.length
    const offset = sorted.map((u) => murmur3(u.id, 1) % M)
    const skip = sorted.map((u) => (murmur3(u.id, 2) % (M - 1)) + 1)
    const next = new Array(n).fill(0)
    const entry = new Int32Array(M).fill(-1)
    const maxWeight = Math.max(...sorted.map((u) => u.weight))
    let filled = 0
    for (let round = 0; ; round++) {
      for (let i = 0; i < n; i++) {
        const w = sorted[i].weight
        if (Math.floor(((round + 1) * w) / maxWeight) === Math.floor((round * w) / maxWeight)) continue
        let c = (offset[i] + next[i] * skip[i]) % M
        while (entry[c] >= 0) {
          next[i]++
          c = (offset[i] + next[i] * skip[i]) % M
        }
        entry[c] = i
        next[i]++
        if (++filled === M) break
      }
      if (filled === M) break
    }
    const table = Uint16Array.from(entry)
    return {
      bytes: table.byteLength,
      pick(h, accept) {
        const start = h % M
        for (let s = 0; s < M; s++) {
          const o = table[(start + s) % M]
          if (accept === undefined || accept(o)) return o
        }
        return -1
      },
    }
  },
}

function sortById(ups) {
  return [...ups].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
}

/** Keys per upstream (by index) for `pick`, and max/mean. */
function balance(table, n, accept) {
  const counts = new Array(n).fill(0)
  for (let k = 0; k < KEYS; k++) counts[table.pick(hashes[k], accept)]++
  return { counts, maxOverMean: Math.max(...counts) / (KEYS / n) }
}

/** max/mean over 2^20 uniformly random hashes: the table's own balance, little sampling noise. */
const manyHashes = (() => {
  const r = mulberry32(7)
  return Uint32Array.from({ length: 1 << 20 }, () => Math.floor(r() * 4294967296))
})()
function balanceOfTable(table, n) {
  const counts = new Array(n).fill(0)
  for (let k = 0; k < manyHashes.length; k++) counts[table.pick(manyHashes[k])]++
  return Math.max(...counts) / (manyHashes.length / n)
}

function measure(candidate) {
  const ten = upstreams(10)
  const a = candidate.build(ten)
  const idsA = sortById(ten).map((u) => u.id)
  const removed = 'app-003'
  const xA = idsA.indexOf(removed)
  const without = ten.filter((u) => u.id !== removed)
  const b = candidate.build(without)
  const idsB = sortById(without).map((u) => u.id)
  const eleven = [...ten, { id: 'app-010', weight: 1 }]
  const c = candidate.build(eleven)
  const idsC = sortById(eleven).map((u) => u.id)
  let moved = 0
  let otherKeys = 0
  let otherMoved = 0
  let addMoved = 0
  let failoverAgreesWithRebuild = 0
  let onX = 0
  const fallbackCounts = new Array(10).fill(0)
  const notX = (i) => i !== xA
  for (let k = 0; k < KEYS; k++) {
    const h = hashes[k]
    const before = idsA[a.pick(h)]
    const after = idsB[b.pick(h)]
    if (before !== after) moved++
    if (before !== removed) {
      otherKeys++
      if (before !== after) otherMoved++
    } else {
      onX++
      const fb = a.pick(h, notX)
      fallbackCounts[fb]++
      if (idsA[fb] === after) failoverAgreesWithRebuild++
    }
    if (idsC[c.pick(h)] !== before) addMoved++
  }
  // Reweight app-003 from 1 to 2: ideally only keys moving onto app-003 move.
  const reweighted = candidate.build(ten.map((u) => (u.id === removed ? { ...u, weight: 2 } : u)))
  let reweightOthersMoved = 0
  for (let k = 0; k < KEYS; k++) {
    const before = idsA[a.pick(hashes[k])]
    const after = idsA[reweighted.pick(hashes[k])]
    if (before !== after && after !== removed) reweightOthersMoved++
  }
  const weighted = upstreams(10, (i) => (i < 5 ? 1 : 2))
  const w = balance(candidate.build(weighted), 10)
  const light = w.counts.slice(0, 5).reduce((s, x) => s + x, 0)
  const heavy = w.counts.slice(5).reduce((s, x) => s + x, 0)
  const t100 = candidate.build(upstreams(100))
  return {
    name: candidate.name,
    balance10: balance(a, 10).maxOverMean,
    balance100: balanceOfTable(t100, 100),
    weight2Over1: heavy / light,
    removeMoved: moved / KEYS,
    removeOtherMoved: otherMoved / otherKeys,
    addMoved: addMoved / KEYS,
    reweightOthersMoved: reweightOthersMoved / KEYS,
    failoverTargets: fallbackCounts.filter((x) => x > 0).length,
    failoverMaxShare: Math.max(...fallbackCounts) / onX,
    failoverAgreesWithRebuild: failoverAgreesWithRebuild / onX,
    lookupsPerSecond100: lookupsPerSecond((h) => t100.pick(h), 1_000_000, 4),
    buildMs100: buildMs(candidate.build, upstreams(100)),
    bytes100: t100.bytes,
  }
}

// ---------------------------------------------------------------- report
const result = { node: process.version, keys: KEYS, shipped: shipped(), candidates: [] }
if (!QUICK) {
  for (const c of [bucketedRendezvous, maglev, ring(160), ring(1000), plainRendezvous]) result.candidates.push(measure(c))
}

if (JSON_OUT) {
  console.log(JSON.stringify(result, null, 2))
} else {
  const s = result.shipped
  const m = (x) => `${(x / 1e6).toFixed(2)} M/s`
  console.log(`placement bench, node ${result.node}, ${KEYS} keys of 22 chars`)
  console.log(`  lookups/s, 100 upstreams, hash included:          ${m(s.lookupsPerSecond100)}  (target >= 2 M/s)`)
  console.log(`  lookups/s, 100 upstreams, one rejected:           ${m(s.lookupsPerSecond100OneRejected)}`)
  console.log(`  pickBounded/s, 100 upstreams, factor 1.25:        ${m(s.boundedPerSecond100)}`)
  console.log(`  hashKey alone/s:                                  ${m(s.hashesPerSecond)}`)
  console.log(`  build: 10 upstreams ${s.buildMs10.toFixed(1)} ms, 100 ${s.buildMs100.toFixed(1)} ms, 100 weighted ${s.buildMs100Weighted.toFixed(1)} ms`)
  console.log(`  table memory, 100 upstreams: ${(s.tableBytes100 / 1024).toFixed(0)} KiB`)
  console.log(`  ${s.bigUpstreams} upstreams: build ${s.bigBuildMs.toFixed(1)} ms, every bucket's first lookup ${s.bigAllBucketsMs.toFixed(0)} ms in all, then one removed ${s.bigRemoveOneMs.toFixed(1)} ms, one added ${s.bigAddOneMs.toFixed(1)} ms`)
  if (result.candidates.length > 0) {
    const pct = (x) => `${(x * 100).toFixed(2)}%`
    console.log('\ncandidates (10 equal upstreams unless noted; remove app-003, add app-010):')
    console.table(
      result.candidates.map((r) => ({
        scheme: r.name,
        'max/mean 10': r.balance10.toFixed(3),
        'max/mean 100': r.balance100.toFixed(3),
        'w2/w1': r.weight2Over1.toFixed(3),
        'remove: moved': pct(r.removeMoved),
        'remove: others moved': pct(r.removeOtherMoved),
        'add: moved': pct(r.addMoved),
        'reweight: others moved': pct(r.reweightOthersMoved),
        'failover targets': r.failoverTargets,
        'failover max share': pct(r.failoverMaxShare),
        'failover = rebuild': pct(r.failoverAgreesWithRebuild),
        'lookups/s (100)': m(r.lookupsPerSecond100),
        'build ms (100)': r.buildMs100.toFixed(1),
        'KiB (100)': (r.bytes100 / 1024).toFixed(0),
      })),
    )
  }
}
