// Bounded-load placement bench: the cost of one new-session placement with bounded loads
// (`pickBounded`, affinity.balance_factor) against the plain pick (no balance_factor), at 10 and
// 10,000 upstreams, and the cost of a bucket's first lookup in a big set. Plain ESM, no
// dependencies; build first (`npx tsc -p tsconfig.json`). Never imported by src/.
//
//   node bench/placement-bounded.mjs                    # dist/ (~30 s)
//   node bench/placement-bounded.mjs --base /tmp/old/dist   # also a second build, interleaved
//   node bench/placement-bounded.mjs --json
//
// The state measured is the one bounded loads lives in: every upstream holding sessions placed
// by pickBounded itself (19.5 per upstream on average, factor 1.25), so some keys spill; keys
// that stay on their first choice and keys that spill are timed apart (percent: their share). The
// predicates are shaped like the router's: `accept` reads a Set by upstream id (health, tried),
// `load` a Map by id (the session table). Loads stay frozen while a round runs, so every round
// asks the same questions. Each figure is the median of 5 rounds (a sixth, first, warms the JIT up).

import { pathToFileURL } from 'node:url'
import { resolve } from 'node:path'
import { prng } from './lib/prng.mjs'

const argv = process.argv.slice(2)
const JSON_OUT = argv.includes('--json')
const baseAt = argv.indexOf('--base')
const builds = [{ name: 'dist', dir: resolve('dist') }]
if (baseAt >= 0) builds.push({ name: 'base', dir: resolve(argv[baseAt + 1] ?? '') })

for (const b of builds) {
  b.placement = await import(pathToFileURL(`${b.dir}/placement/rendezvous.js`).href)
  b.bounded = await import(pathToFileURL(`${b.dir}/placement/bounded-load.js`).href)
}
const { hashKey } = await import(pathToFileURL(`${builds[0].dir}/placement/hash.js`).href)

/** Deterministic floats in [0, 1) (lib/prng.mjs's mulberry32) so every run uses the same keys. */
const mulberry32 = (seed) => {
  const next = prng(seed)
  return () => next() / 4294967296
}
const rand = mulberry32(20261204)
const KEYS = 1 << 16
const hashes = Uint32Array.from({ length: KEYS }, () => Math.floor(rand() * 2 ** 32))
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]

/** Nanoseconds per call of `fn(hash)` over `calls` calls cycling through `keys` (median of rounds, first dropped). */
function nsPerCall(fn, keys, calls, rounds = 6) {
  const runs = []
  let sink = 0
  const m = keys.length
  for (let r = 0; r < rounds; r++) {
    const t0 = process.hrtime.bigint()
    for (let i = 0, k = 0; i < calls; i++, k = k + 1 === m ? 0 : k + 1) sink += fn(keys[k])
    const ns = Number(process.hrtime.bigint() - t0)
    if (r > 0) runs.push(ns / calls)
  }
  if (sink === 0.5) console.log('')
  return median(runs)
}

/**
 * One set: n upstreams, each build's table warmed (every bucket computed, timed), loads filled
 * by 19.5 sessions per upstream placed with factor 1.25 (so the capacity, 25, binds: with a
 * round 20 per upstream it would have just gone up to 26 and nobody would spill), then the
 * keys split into those that stay on their first accepted choice and those that spill.
 */
function scenario(n, weighted) {
  const ups = Array.from({ length: n }, (_, i) => ({ id: `pod-${i}`, weight: weighted ? 1 + (i % 7) : 1 }))
  const tables = builds.map((b) => b.placement.buildPlacement(ups))
  const ids = tables[0].ids
  // the first lookup of every bucket (computed lazily above 256 upstreams), timed per build
  const firstLookupUs = tables.map((t) => {
    const t0 = performance.now()
    for (let b = 0; b < 65536; b++) t.pick((b << 16) >>> 0)
    return ((performance.now() - t0) * 1000) / 65536
  })
  const down = new Set()
  const accept = (i) => !down.has(ids[i]) // like health.acceptsNew(id) && !tried.has(id)
  const loadById = new Map(ids.map((id) => [id, 0]))
  const load = (i) => loadById.get(ids[i]) // like sessions.loadOf(id)
  let total = 0
  const sessions = Math.floor(19.5 * n) + 7
  for (let s = 0; s < sessions; s++) {
    const i = builds[0].bounded.pickBounded(tables[0], hashKey(`s${s}`), accept, load, total, 1.25)
    loadById.set(ids[i], loadById.get(ids[i]) + 1)
    total++
  }
  const row = { upstreams: n, weighted, sessions: total, builds: [] }
  const measureAll = (key) => {
    const stay = []
    const spill = []
    for (const h of hashes) (builds[0].bounded.pickBounded(tables[0], h, accept, load, total, 1.25) === tables[0].pick(h, accept) ? stay : spill).push(h)
    row[`${key}SpillShare`] = spill.length / hashes.length
    const big = n > 100
    for (let b = 0; b < builds.length; b++) {
      const table = tables[b]
      const { pickBounded } = builds[b].bounded
      const r = (row.builds[b] ??= { build: builds[b].name, firstLookupUs: firstLookupUs[b] })
      const bounded = (h) => pickBounded(table, h, accept, load, total, 1.25)
      if (key === 'all') r.plainNs = nsPerCall((h) => table.pick(h, accept), hashes, 2_000_000)
      r[`${key}StayNs`] = nsPerCall(bounded, stay, big ? 5_000 : 1_000_000)
      r[`${key}SpillNs`] = spill.length === 0 ? null : nsPerCall(bounded, spill, big ? 1_000 : 200_000)
    }
  }
  measureAll('all')
  down.add(ids[0]) // one upstream down: its weight no longer counts
  measureAll('oneDown')
  down.clear()
  return row
}

const rows = [scenario(10, false), scenario(10, true), scenario(10_000, false), scenario(10_000, true)]
if (JSON_OUT) {
  console.log(JSON.stringify({ node: process.version, rows }, null, 2))
} else {
  console.log(`bounded-load placement bench, node ${process.version}; ns per call, median of 5 rounds`)
  const ns = (x) => (x === null ? '-' : x >= 10_000 ? `${(x / 1000).toFixed(1)} us` : `${x.toFixed(0)} ns`)
  const pct = (x) => `${(x * 100).toFixed(1)}%`
  console.table(
    rows.flatMap((r) =>
      r.builds.map((b) => ({
        upstreams: r.upstreams,
        weights: r.weighted ? '1..7' : 'equal',
        build: b.build,
        'pick, no balance_factor': ns(b.plainNs),
        'bounded: stays': ns(b.allStayNs),
        [`spills`]: `${ns(b.allSpillNs)} (${pct(r.allSpillShare)})`,
        'one down: stays': ns(b.oneDownStayNs),
        'one down: spills': `${ns(b.oneDownSpillNs)} (${pct(r.oneDownSpillShare)})`,
        'bucket 1st lookup': `${b.firstLookupUs.toFixed(1)} us`,
      })),
    ),
  )
}
