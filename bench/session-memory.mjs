// Memory per user for 1M users, as one worker process holds them: the affinity table alone,
// and the session table plus the session records as the request path fills them (pin, then
// records.answered), for 32-hex-character session ids and IPv4 client addresses. Each case runs
// in a fresh `node --expose-gc` child; figures are deltas after gc (RSS, and heapUsed +
// arrayBuffers). Bench only: reads the built code from dist/, writes nothing.
// Run: npx tsc -p tsconfig.json && node bench/session-memory.mjs [users]   (about 30 s on an idle
// 2-core machine). BENCH_NODE_FLAGS adds node flags to the measured processes, e.g.
// BENCH_NODE_FLAGS=--max-semi-space-size=2 (a smaller young generation: ~25 MB less RSS).
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { fileURLToPath } from 'node:url'
import v8 from 'node:v8'
import { prng } from './lib/prng.mjs'

const USERS = Number(process.env.BENCH_USERS ?? (process.argv[2] === '--child' ? undefined : process.argv[2]) ?? 1_000_000)
const UPSTREAMS = 20
const HOUR = 3_600_000
const START = 1_764_086_400_000
const CASES = [
  ['table', 'hex', 'AffinityTable alone'],
  ['table', 'ip', 'AffinityTable alone'],
  ['path', 'hex', 'SessionTable + SessionRecords (table key)'],
  ['path', 'ip', 'SessionTable + SessionRecords (table key)'],
  ['cookie', 'hex', 'SessionRecords only (Tether cookie key)'],
  // 1/10 of the users: each key is a 340-character application cookie value cut out of a
  // 700-byte Cookie header, as key.ts reads it (a V8 slice of the header unless copied)
  ['path', 'app', 'SessionTable + SessionRecords (app cookie, 1/10 users)'],
]

/** Flat (sequential) key strings, as a parsed header or socket address gives them. */
function keyMaker(shape) {
  if (shape === 'hex') {
    const next = prng(1)
    const buf = Buffer.alloc(16)
    return () => {
      for (let i = 0; i < 16; i += 4) buf.writeUInt32LE(next(), i)
      return buf.toString('hex')
    }
  }
  if (shape === 'app') {
    const next = prng(3)
    const b64 = (n) => Buffer.from(Array.from({ length: n }, next)).toString('base64url').slice(0, n)
    return () => {
      const value = `eyJpdiI6${b64(332)}`
      const header = Buffer.from(`XSRF-TOKEN=eyJpdiI6${b64(332)}; laravel_session=${value}`, 'latin1').toString('latin1')
      const start = header.indexOf('laravel_session=') + 16
      return header.slice(start)
    }
  }
  let i = 0
  return () => {
    const n = i++
    return Buffer.from(`10.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`, 'latin1').toString('latin1')
  }
}

function measure() {
  globalThis.gc()
  globalThis.gc()
  const m = process.memoryUsage()
  const young = v8.getHeapSpaceStatistics().find((s) => s.space_name === 'new_space').physical_space_size
  return { rss: m.rss, heap: m.heapUsed + m.arrayBuffers, young }
}

/** A worker's RSS before any user: node with the libraries Tether loads, after gc. */
async function baseline() {
  // ioredis is loaded only when the config uses Redis (app.ts)
  for (const lib of ['undici', 'pino', 'prom-client', 'yaml']) await import(lib)
  await import('../dist/app.js')
  const m = measure()
  process.stdout.write(JSON.stringify({ rss: m.rss }))
}

async function child(what, shape, USERS_ALL = USERS) {
  const { AffinityTable } = await import('../dist/affinity/table.js')
  const { SessionTable } = await import('../dist/affinity/session-table.js')
  const { SessionRecords } = await import('../dist/affinity/session-records.js')
  // shared as createRouting shares it (absent in builds before it existed, for a before/after run)
  const { KeySlots } = await import('../dist/affinity/key-slots.js').catch(() => ({ KeySlots: null }))
  const ids = Array.from({ length: UPSTREAMS }, (_, i) => `app-${i}`)
  const key = keyMaker(shape)
  const USERS = shape === 'app' ? Math.ceil(USERS_ALL / 10) : USERS_ALL
  const options = { maxEntries: USERS, idleTimeout: 3 * HOUR, absoluteTimeout: null }
  const before = measure()
  let held
  if (what === 'table') {
    const table = new AffinityTable(options)
    for (let i = 0; i < USERS; i++) table.set(key(), ids[i % UPSTREAMS], 0, START + i)
    held = [table]
  } else {
    const slots = KeySlots === null ? undefined : new KeySlots()
    const sessions = new SessionTable({ ...options, slots })
    // as createRouting wires them: the records read table keys' pins from the session table
    const records = new SessionRecords({ maxEntries: USERS, idleTimeout: 3 * HOUR, secret: 'bench-secret-0123456789', slots, pins: sessions.table })
    for (let i = 0; i < USERS; i++) {
      const k = key()
      const upstream = ids[i % UPSTREAMS]
      const now = START + i
      // what answer-head.ts does once the upstream answered a new user
      const d = { upstream, source: 'hash', epoch: 0, moved: null, setCookie: null, learn: false, appKey: null, sessionKey: k, bind: null }
      if (what === 'path') {
        sessions.pin(k, upstream, 0, now)
        records.answered({ kind: 'table', value: k, learned: false, checkpoints: true, learn: false }, d, now)
      } else {
        records.answered({ kind: 'cookie', session: null }, d, now)
      }
    }
    held = [sessions, records]
  }
  const after = measure()
  if (held.length === 0) throw new Error('unreachable')
  process.stdout.write(JSON.stringify({ rss: after.rss - before.rss, heap: after.heap - before.heap, young: after.young - before.young, total: after.rss, users: USERS }))
}

if (process.argv[2] === '--child') {
  await (process.argv[3] === 'baseline' ? baseline() : child(process.argv[3], process.argv[4]))
} else {
  const self = fileURLToPath(import.meta.url)
  const mb = (b) => (b / 1024 / 1024).toFixed(1).padStart(6)
  const per = (b, users) => (b / users).toFixed(0).padStart(4)
  console.log(`memory per user, ${USERS.toLocaleString('en')} users, ${UPSTREAMS} upstreams (node ${process.version}); deltas after gc in a fresh process`)
  // BENCH_NODE_FLAGS: extra node flags for the measured processes, e.g. '--max-semi-space-size=1'
  const flags = (process.env.BENCH_NODE_FLAGS ?? '').split(' ').filter((f) => f !== '')
  const run = async (...args) => {
    const env = { ...process.env, BENCH_USERS: String(USERS) }
    const r = await promisify(execFile)(process.execPath, ['--expose-gc', ...flags, self, '--child', ...args], { encoding: 'utf8', env })
    return JSON.parse(r.stdout)
  }
  // two at a time (the machine has 2 cores); memory figures do not depend on it
  const results = []
  const queue = [['baseline'], ...CASES.map(([what, shape]) => [what, shape])].map((args, i) => async () => { results[i] = await run(...args) })
  await Promise.all([0, 1].map(async () => { while (queue.length > 0) await queue.shift()() }))
  console.log(`  a worker before any user (node + undici, pino, prom-client, yaml, dist/app.js; no ioredis): ${mb(results[0].rss).trim()} MB RSS${flags.length > 0 ? `; node flags: ${flags.join(' ')}` : ''}`)
  console.log('  case                                                    keys   RSS MB  B/user   heap MB  B/user   young MB   process RSS MB')
  for (const [i, [, shape, label]] of CASES.entries()) {
    const m = results[i + 1]
    console.log(`  ${label.padEnd(54)}  ${shape.padEnd(4)} ${mb(m.rss)}  ${per(m.rss, m.users)}    ${mb(m.heap)}  ${per(m.heap, m.users)}    ${mb(m.young)}    ${mb(m.total)}`)
  }
  console.log('  RSS: resident set delta (includes "young": the new space V8 grew to while filling, a busy worker has it anyway);')
  console.log('  heap: heapUsed + arrayBuffers delta (typed-array columns count in full; untouched pages are not resident)')
}
