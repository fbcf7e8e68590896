// Speed of the key index (src/affinity/key-slots.ts) at 1M keys: ns per claim of a new key
// (growth included) and per slotOf of a held key, and the same through AffinityTable (set of a
// new key, get of a held one). Keys are 31-character header values (as bench/workers-memory.mjs
// sends) or IPv4 addresses; every lookup uses a new string, as each request's parsed header is.
// Bench only: reads the built code, writes nothing.
// Run: npx tsc -p tsconfig.json && node bench/key-slots-speed.mjs [dist dir=dist] [keys=1000000]
// (compare two builds by passing the other one's dist directory; best of 3 rounds, each in-process)
import path from 'node:path'
import { pathToFileURL } from 'node:url'
import { prng } from './lib/prng.mjs'

const dist = path.resolve(process.argv[2] ?? 'dist')
const N = Number(process.argv[3] ?? 1_000_000)
const { KeySlots } = await import(pathToFileURL(path.join(dist, 'affinity/key-slots.js')).href)
const { AffinityTable } = await import(pathToFileURL(path.join(dist, 'affinity/table.js')).href)

/** A flat string of its own (as the HTTP parser gives a header value): not a cons or a slice. */
const fresh = (s) => Buffer.from(s, 'latin1').toString('latin1')
const shapes = {
  header: (i) => `user-${i.toString(36).padStart(8, '0')}-${'x'.repeat(16)}`,
  ipv4: (i) => `10.${(i >>> 16) & 255}.${(i >>> 8) & 255}.${i & 255}`,
}

function round(shape) {
  const make = shapes[shape]
  const next = prng(7)
  const inserts = Array.from({ length: N }, (_, i) => fresh(make(i)))
  const lookups = Array.from({ length: N }, () => fresh(make(next() % N)))
  const slots = new KeySlots()
  const owner = slots.owner()
  let t = process.hrtime.bigint()
  for (let i = 0; i < N; i++) slots.claim(inserts[i], owner)
  const claim = Number(process.hrtime.bigint() - t) / N
  // lookups use new strings again (a string caches its V8 hash after the first use)
  const again = lookups.map(fresh)
  let found = 0
  t = process.hrtime.bigint()
  for (let i = 0; i < N; i++) if (slots.slotOf(again[i]) !== undefined) found++
  const get = Number(process.hrtime.bigint() - t) / N
  if (found !== N) throw new Error(`found ${found} of ${N}`)

  const table = new AffinityTable({ maxEntries: N, idleTimeout: 3_600_000 })
  const inserts2 = inserts.map(fresh)
  t = process.hrtime.bigint()
  for (let i = 0; i < N; i++) table.set(inserts2[i], 'app-1', 0, 1000)
  const set = Number(process.hrtime.bigint() - t) / N
  const again2 = lookups.map(fresh)
  t = process.hrtime.bigint()
  for (let i = 0; i < N; i++) if (table.get(again2[i], 1001) === null) throw new Error('missing')
  const tget = Number(process.hrtime.bigint() - t) / N
  return { claim, get, set, tget }
}

console.log(`key index speed, ${N.toLocaleString('en')} keys, ${path.relative(process.cwd(), dist) || dist} (node ${process.version}); best of 3, ns per operation`)
console.log('  keys      claim new   slotOf held   table.set new   table.get held')
for (const shape of Object.keys(shapes)) {
  const best = { claim: Infinity, get: Infinity, set: Infinity, tget: Infinity }
  for (let r = 0; r < 3; r++) {
    const m = round(shape)
    for (const k of Object.keys(best)) best[k] = Math.min(best[k], m[k])
  }
  const f = (v, w) => v.toFixed(0).padStart(w)
  console.log(`  ${shape.padEnd(8)} ${f(best.claim, 10)} ${f(best.get, 13)} ${f(best.set, 15)} ${f(best.tget, 16)}`)
}
