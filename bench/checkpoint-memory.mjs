// Checkpoint memory store: (1) what one held checkpoint really costs on the heap, the figure
// behind CHECKPOINT_ENTRY_OVERHEAD_BYTES; (2) the flood of issue 10 defect 5 end to end: a
// built Tether (child process, state.store: memory) takes N cookieless requests whose answers
// each carry a 32 KB X-Tether-State, and its RSS is read before and after, once with the
// default state.memory.max_bytes and once with a bound so large it never bites (the old
// behaviour). Bench only, loopback only; reads dist/.
// Run: npx tsc -p tsconfig.json && node --expose-gc bench/checkpoint-memory.mjs [requests]
// (the flood sends `requests` (default 3,000) cookieless requests, then 3 x as many more)
import http from 'node:http'
import net from 'node:net'
import { spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { MemoryCheckpointStore, CHECKPOINT_ENTRY_OVERHEAD_BYTES, checkpointCost } from '../dist/state/memory-store.js'

const REQUESTS = Number(process.argv[2] ?? 3_000)
const STATE_BYTES = 32 * 1024
const CLI = fileURLToPath(new URL('../dist/cli.js', import.meta.url))

if (typeof globalThis.gc !== 'function') {
  console.error('run with: node --expose-gc bench/checkpoint-memory.mjs')
  process.exit(2)
}

const mb = (bytes) => (bytes / 1024 / 1024).toFixed(1)
function heap() {
  globalThis.gc()
  globalThis.gc()
  return process.memoryUsage().heapUsed
}

// 1. Per-entry heap cost, from a store holding only fresh strings (nothing else refers to them).
const clock = { now: () => 1_764_086_400_000 }
const hex = (i) => i.toString(16).padStart(32, '0')
/** Heap bytes per held checkpoint with `valueLength`-byte values, and what the store counts. */
async function entryCost(valueLength, entries) {
  const before = heap()
  const store = new MemoryCheckpointStore({ maxEntries: 10_000_000, maxBytes: 1 << 20, maxTotalBytes: 2 ** 40, clock })
  for (let i = 0; i < entries; i++) {
    const key = hex(i)
    // a fresh flat one-byte string, as undici makes of a header value (Buffer -> latin1)
    const value = Buffer.from(`${key}${'v'.repeat(valueLength - 32)}`, 'latin1').toString('latin1')
    await store.put(key, { value, version: null, upstream: 'app-0', epoch: 0, writtenAt: clock.now() }, 3_600_000)
  }
  const used = heap() - before
  if (store.size !== entries) throw new Error('store lost entries')
  return { perEntry: used / entries, counted: store.bytes / entries }
}
for (const [valueLength, entries] of [[64, 200_000], [1024, 50_000], [STATE_BYTES, 2_000]]) {
  const { perEntry, counted } = await entryCost(valueLength, entries)
  console.log(`entry cost, ${valueLength}-byte values, 32-char keys: ${perEntry.toFixed(0)} heap bytes/entry, counted ${counted.toFixed(0)}; beyond key + value: ${(perEntry - valueLength - 32).toFixed(0)} measured, ${CHECKPOINT_ENTRY_OVERHEAD_BYTES} counted`)
}

// 2. The flood through a real Tether.
async function freePort() {
  const s = net.createServer()
  await new Promise((r) => s.listen(0, '127.0.0.1', r))
  const { port } = s.address()
  await new Promise((r) => s.close(r))
  return port
}

const upstream = http.createServer((req, res) => {
  req.resume()
  // a distinct 32 KB checkpoint per answer, as a visitor's own state would be
  const head = `${Date.now()}-${Math.random()}-`
  res.writeHead(200, { 'content-type': 'text/plain', 'x-tether-state': head + 's'.repeat(STATE_BYTES - head.length) })
  res.end('ok\n')
})
await new Promise((r) => upstream.listen(0, '127.0.0.1', r))
const upstreamUrl = `http://127.0.0.1:${upstream.address().port}`

function rssOf(pid) {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  return Number(m[1]) * 1024
}

function get(url, agent) {
  return new Promise((resolve, reject) => {
    http.get(url, { agent }, (res) => {
      res.resume()
      res.on('end', () => resolve(res.statusCode))
    }).on('error', reject)
  })
}

// In the child: on SIGUSR2, two full GCs, then process.memoryUsage() as one JSON line on stderr.
const GC_HOOK = 'data:text/javascript,' + encodeURIComponent(
  'process.on("SIGUSR2", () => { gc(); gc(); process.stderr.write("MEMORY " + JSON.stringify(process.memoryUsage()) + "\\n") })',
)

/** The child's memory after a full GC: heapUsed and RSS. */
function afterGc(child) {
  return new Promise((resolve) => {
    let text = ''
    const onData = (chunk) => {
      text += chunk
      const m = /MEMORY (\{.*\})\n/.exec(text)
      if (m === null) return
      child.stderr.off('data', onData)
      resolve(JSON.parse(m[1]))
    }
    child.stderr.on('data', onData)
    child.kill('SIGUSR2')
  })
}

async function flood(label, memoryMaxBytes) {
  const port = await freePort()
  const admin = await freePort()
  const dir = mkdtempSync(join(tmpdir(), 'tether-bench-'))
  const config = join(dir, 'proxy.yaml')
  writeFileSync(config, [
    `listen: { host: 127.0.0.1, port: ${port} }`,
    `admin: { listen: { host: 127.0.0.1, port: ${admin} } }`,
    `upstreams: [{ id: app-0, url: "${upstreamUrl}" }]`,
    'affinity: { cookie: { secret: bench-secret-0123456789abcdef, secure: false } }',
    'log: { level: warn, access: false }',
    `state: { store: memory${memoryMaxBytes === null ? '' : `, memory: { max_bytes: ${memoryMaxBytes} }`} }`,
    '',
  ].join('\n'))
  const child = spawn(process.execPath, ['--expose-gc', '--import', GC_HOOK, CLI, '--config', config], { stdio: ['ignore', 'ignore', 'pipe'] })
  const deadline = Date.now() + 10_000
  for (;;) {
    try {
      await get(`http://127.0.0.1:${admin}/readyz`, false)
      break
    } catch (err) {
      if (Date.now() > deadline) throw err
      await new Promise((r) => setTimeout(r, 20))
    }
  }
  const agent = new http.Agent({ keepAlive: true, maxSockets: 20 })
  // warm up so code is compiled and connections are open before the first figure
  for (let i = 0; i < 20; i++) await get(`http://127.0.0.1:${port}/`, agent)
  const before = rssOf(child.pid)
  const gc0 = await afterGc(child)
  let sent = 0
  let ok = 0
  const send = async (total) => {
    const worker = async () => {
      while (sent < total) {
        sent++
        if ((await get(`http://127.0.0.1:${port}/`, agent)) === 200) ok++
      }
    }
    await Promise.all(Array.from({ length: 20 }, worker))
  }
  console.log(`flood, ${label}:`)
  console.log(`  before:                RSS ${mb(before)} MB; after a full GC: RSS ${mb(gc0.rss)} MB, heap used ${mb(gc0.heapUsed)} MB`)
  for (const total of [REQUESTS, 4 * REQUESTS]) {
    await send(total)
    const rss = rssOf(child.pid)
    const gc = await afterGc(child)
    console.log(`  after ${String(total).padStart(6)} requests: RSS ${mb(rss)} MB (+${mb(rss - before)}); after a full GC: RSS ${mb(gc.rss)} MB, heap used ${mb(gc.heapUsed)} MB (+${mb(gc.heapUsed - gc0.heapUsed)})`)
  }
  if (ok !== sent) throw new Error(`${sent - ok} requests failed`)
  agent.destroy()
  child.kill('SIGKILL')
}

await flood('default state.memory.max_bytes (64 MiB)', null)
await flood('state.memory.max_bytes 1 GiB (never bites: the old behaviour)', 2 ** 30)
await flood('state.memory.max_bytes 16 MiB', 16 * 1024 * 1024)
upstream.close()
console.log(`(a ${STATE_BYTES}-byte checkpoint under a 32-character key counts ${checkpointCost(hex(0), 's'.repeat(STATE_BYTES))} bytes)`)
