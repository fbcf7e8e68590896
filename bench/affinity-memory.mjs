// Affinity table memory and speed at 1M entries: the budget is 256 MB for 1,000,000 bindings
// with realistic keys (32-hex-character session ids). Bench only: reads the built table from
// dist/ and writes nothing. Run: npx tsc -p tsconfig.json && node --expose-gc bench/affinity-memory.mjs [entries]
import { AffinityTable } from '../dist/affinity/table.js'
import { prng } from './lib/prng.mjs'

const ENTRIES = Number(process.argv[2] ?? 1_000_000)
const UPSTREAMS = 20
const BUDGET_MB = 256
const HOUR = 3_600_000

if (typeof globalThis.gc !== 'function') {
  console.error('run with: node --expose-gc bench/affinity-memory.mjs')
  process.exit(2)
}

/** A generator of flat 32-character hex session ids, like the ones Tether's cookie carries. */
function keys(seed) {
  const next = prng(seed)
  const buf = Buffer.alloc(16)
  return () => {
    buf.writeUInt32LE(next(), 0)
    buf.writeUInt32LE(next(), 4)
    buf.writeUInt32LE(next(), 8)
    buf.writeUInt32LE(next(), 12)
    return buf.toString('hex')
  }
}

function used() {
  globalThis.gc()
  globalThis.gc()
  const m = process.memoryUsage()
  return m.heapUsed + m.arrayBuffers
}

const mb = (bytes) => (bytes / 1024 / 1024).toFixed(1)
const ids = Array.from({ length: UPSTREAMS }, (_, i) => `app-${i}`)
const start = 1_764_086_400_000

// 1. Memory: keys are made on the fly, so the table is the only thing holding them.
const before = used()
const table = new AffinityTable({ maxEntries: ENTRIES, idleTimeout: 3 * HOUR, absoluteTimeout: 24 * HOUR })
let key = keys(1)
let t0 = process.hrtime.bigint()
for (let i = 0; i < ENTRIES; i++) table.set(key(), ids[i % UPSTREAMS], 0, start + i)
const fillNs = Number(process.hrtime.bigint() - t0)
const after = used()
const bytes = after - before

// 2. Speed: the same keys again, made up front so only table work is timed.
key = keys(1)
const list = Array.from({ length: ENTRIES }, key)
const misses = Array.from({ length: ENTRIES }, keys(2))
const timed = (fn) => {
  const t = process.hrtime.bigint()
  fn()
  return ENTRIES / (Number(process.hrtime.bigint() - t) / 1e9)
}
const now = start + ENTRIES + 1000
let hits = 0
const getHit = timed(() => {
  for (let i = 0; i < ENTRIES; i++) if (table.get(list[i], now) !== null) hits++
})
const getMiss = timed(() => {
  for (let i = 0; i < ENTRIES; i++) if (table.get(misses[i], now) !== null) hits++
})
const update = timed(() => {
  for (let i = 0; i < ENTRIES; i++) table.set(list[i], ids[(i + 1) % UPSTREAMS], 1, now)
})
const evicting = timed(() => {
  for (let i = 0; i < ENTRIES; i++) table.set(misses[i], ids[i % UPSTREAMS], 0, now)
})
const fresh = new AffinityTable({ maxEntries: ENTRIES, idleTimeout: 3 * HOUR })
const insert = timed(() => {
  for (let i = 0; i < ENTRIES; i++) fresh.set(list[i], ids[i % UPSTREAMS], 0, now)
})
t0 = process.hrtime.bigint()
const swept = table.sweep(now + 4 * HOUR, ENTRIES)
const sweepMs = Number(process.hrtime.bigint() - t0) / 1e6

const ops = (n) => `${(n / 1e6).toFixed(2)}M ops/s`
console.log(`affinity table, ${ENTRIES.toLocaleString('en')} entries, 32-char keys, ${UPSTREAMS} upstreams (node ${process.version})`)
console.log(`  memory      ${mb(bytes)} MB (heapUsed + arrayBuffers delta; ${(bytes / ENTRIES).toFixed(0)} bytes/entry; budget ${BUDGET_MB} MB for 1M)`)
console.log(`  fill        ${ops(ENTRIES / (fillNs / 1e9))} (including key generation)`)
console.log(`  insert      ${ops(insert)} (new keys into an empty table)`)
console.log(`  get, hit    ${ops(getHit)}`)
console.log(`  get, miss   ${ops(getMiss)}`)
console.log(`  set, update ${ops(update)} (re-bind existing keys)`)
console.log(`  set, evict  ${ops(evicting)} (new keys into a full table: one LRU eviction each)`)
console.log(`  sweep       ${swept.toLocaleString('en')} expired entries in ${sweepMs.toFixed(0)} ms`)
if (hits !== ENTRIES) throw new Error(`expected ${ENTRIES} hits, got ${hits}`)
if (ENTRIES === 1_000_000 && bytes > BUDGET_MB * 1024 * 1024) {
  console.error(`over budget: ${mb(bytes)} MB > ${BUDGET_MB} MB`)
  process.exitCode = 1
}
