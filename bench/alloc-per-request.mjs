// Bytes V8 allocates per proxied request in Tether, and scavenges per 100k requests: measures
// that hold on a loaded machine, unlike req/s (issue 14: GC scavenges are the fixed-rate tail).
//
//   node bench/alloc-per-request.mjs            # needs a built dist/ (npx tsc -p tsconfig.json)
//   ALLOC_SITES=1 node bench/alloc-per-request.mjs   # also the top allocation sites
//
// Setup: two bench/lib/upstream-server.mjs upstreams, Tether (`node --min-semi-space-size=4
// dist/cli.js`, as bench/proxy.mjs starts it) with --trace-gc-nvp and bench/lib/alloc-probe.mjs
// preloaded, and a keep-alive client in this process on raw sockets: ALLOC_CONNECTIONS
// connections, each sending plain GETs one at a time, with the cookies of ALLOC_USERS users (a
// valid Tether cookie each, users alternating between the upstreams: the common path, cookie
// key, existing binding, 200 answer). After ALLOC_WARMUP requests (JIT warm-up, pools filled,
// bindings made) the probe marks the start, ALLOC_REQUESTS more are sent, the probe marks the
// end. Bytes/request = the sum of `allocated=` (bytes allocated since the previous GC) of the
// GCs between the marks, over the requests in the window; the window's first GC also counts
// bytes from just before the mark and the last bytes after the last GC are left out, so the
// error is about one GC's worth (a few MB) against ~1 GB. Scavenges = `gc=s` lines between the
// marks. ALLOC_ROUNDS windows are measured back to back (after one warm-up) and each printed,
// then the median.
//
// Knobs: ALLOC_REQUESTS (100000), ALLOC_WARMUP (30000), ALLOC_ROUNDS (3), ALLOC_USERS (1000),
// ALLOC_CONNECTIONS (20), ALLOC_DIST (dist: another build's dist directory to compare),
// ALLOC_SITES (0; 1: a sampling heap profile of one more window, with the objects GCs freed,
// summarised by function and script: the top ALLOC_TOP (25) sites in bytes/request),
// ALLOC_SITES_INTERVAL (1024 bytes between samples), ALLOC_PROFILE (a path: keep that profile
// there, a .heapprofile that Chrome DevTools' Memory panel opens, with its call stacks).
import { spawn } from 'node:child_process'
import { mkdtempSync, writeFileSync, readFileSync, rmSync } from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'

const benchDir = path.dirname(fileURLToPath(import.meta.url))
const repoRoot = path.resolve(benchDir, '..')
const num = (name, def) => {
  const raw = process.env[name]
  if (raw == null || raw === '') return def
  const n = Number(raw)
  if (!Number.isInteger(n) || n < 0) throw new Error(`${name}=${raw} is not a whole number >= 0`)
  return n
}
const REQUESTS = num('ALLOC_REQUESTS', 100_000)
const WARMUP = num('ALLOC_WARMUP', 30_000)
const ROUNDS = Math.max(1, num('ALLOC_ROUNDS', 3))
const USERS = Math.max(1, num('ALLOC_USERS', 1000))
const CONNECTIONS = Math.max(1, num('ALLOC_CONNECTIONS', 20))
const SITES = num('ALLOC_SITES', 0) === 1
const SITES_INTERVAL = Math.max(16, num('ALLOC_SITES_INTERVAL', 1024))
const TOP = num('ALLOC_TOP', 25)
const DIST = path.resolve(repoRoot, process.env.ALLOC_DIST || 'dist')
const SECRET = 'bench-secret-0123456789abcdef'

const tmp = mkdtempSync(path.join(os.tmpdir(), 'tether-alloc-'))
const children = []
function cleanup() {
  for (const c of children) {
    try {
      process.kill(c.pid, 'SIGKILL')
    } catch {}
  }
  rmSync(tmp, { recursive: true, force: true })
}
process.on('exit', cleanup)
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(130))

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer()
    s.on('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address()
      s.close(() => resolve(port))
    })
  })
}

function startUpstream(id) {
  const child = spawn(process.execPath, [path.join(benchDir, 'lib', 'upstream-server.mjs'), id, '0'], { stdio: ['ignore', 'pipe', 'inherit'] })
  children.push(child)
  return new Promise((resolve, reject) => {
    let out = ''
    child.stdout.on('data', (d) => {
      out += d
      const nl = out.indexOf('\n')
      if (nl >= 0) resolve({ id, url: `http://127.0.0.1:${JSON.parse(out.slice(0, nl)).port}` })
    })
    child.on('exit', (code) => reject(new Error(`upstream ${id} exited (${code})`)))
  })
}

// Tether's stdout carries --trace-gc-nvp's lines; stderr the probe's marks (and any log).
const gcs = [] // { t, scavenge, allocated }
const marks = new Map() // tag -> t
const markWaiters = new Map()
function startTether(port, adminPort, upstreams) {
  const config = path.join(tmp, 'tether.yaml')
  writeFileSync(
    config,
    [
      `listen: { host: 127.0.0.1, port: ${port} }`,
      `admin: { listen: { host: 127.0.0.1, port: ${adminPort} } }`,
      'upstreams:',
      ...upstreams.map((u) => `  - { id: ${u.id}, url: "${u.url}" }`),
      `affinity: { key: cookie, cookie: { secret: "${SECRET}", secure: false } }`,
      'log: { level: warn, access: false }',
      // keep-alive connections that never end (the client does not reconnect): no per-connection cap
      'limits: { max_requests_per_connection: 0 }',
      '',
    ].join('\n'),
  )
  const args = ['--min-semi-space-size=4', '--trace-gc-nvp', '--import', pathToFileURL(path.join(benchDir, 'lib', 'alloc-probe.mjs')).href, path.join(DIST, 'cli.js'), '--config', config]
  const child = spawn(process.execPath, args, { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, LOG_LEVEL: 'warn' } })
  children.push(child)
  let out = ''
  child.stdout.setEncoding('utf8')
  child.stdout.on('data', (d) => {
    out += d
    let nl
    while ((nl = out.indexOf('\n')) >= 0) {
      const line = out.slice(0, nl)
      out = out.slice(nl + 1)
      const m = /\s([\d.]+) ms: .*\bgc=(\w+).*\ballocated=(\d+)/.exec(line)
      if (m) gcs.push({ t: Number(m[1]), scavenge: m[2] === 's', allocated: Number(m[3]) })
    }
  })
  let err = ''
  child.stderr.setEncoding('utf8')
  child.stderr.on('data', (d) => {
    err += d
    let nl
    while ((nl = err.indexOf('\n')) >= 0) {
      const line = err.slice(0, nl)
      err = err.slice(nl + 1)
      if (line.startsWith('ALLOC-PROBE ')) {
        const { mark, t } = JSON.parse(line.slice(12))
        marks.set(mark, t)
        markWaiters.get(mark)?.()
      } else if (line.trim()) process.stderr.write(`tether: ${line}\n`)
    }
  })
  child.on('exit', (code, sig) => {
    if (!stopping) {
      console.error(`tether exited (${code ?? sig})`)
      process.exit(1)
    }
  })
  return child
}
let stopping = false

function probe(tether, cmd, waitFor) {
  const seen = new Promise((resolve) => markWaiters.set(waitFor, resolve))
  tether.stdin.write(cmd + '\n')
  return seen
}

// One keep-alive connection: GET, read the answer (framed by Content-Length), next GET.
function runLoad(port, requests, reqBufs) {
  let sent = 0
  let done = 0
  return new Promise((resolve, reject) => {
    const conns = Math.min(CONNECTIONS, requests)
    let finished = 0
    for (let c = 0; c < conns; c++) {
      const sock = net.connect(port, '127.0.0.1')
      sock.setNoDelay(true)
      let buf = Buffer.alloc(0)
      let user = c
      const next = () => {
        if (sent >= requests) {
          sock.end()
          if (++finished === conns) resolve(done)
          return
        }
        sent++
        sock.write(reqBufs[user % reqBufs.length])
        user += conns
      }
      sock.on('connect', next)
      sock.on('data', (d) => {
        buf = buf.length ? Buffer.concat([buf, d]) : d
        for (;;) {
          const end = buf.indexOf('\r\n\r\n')
          if (end < 0) return
          const head = buf.subarray(0, end).toString('latin1')
          if (!head.startsWith('HTTP/1.1 200')) return reject(new Error(`unexpected answer: ${head.split('\r\n')[0]}`))
          const m = /\r\ncontent-length: *(\d+)/i.exec(head)
          if (!m) return reject(new Error('answer without content-length'))
          const total = end + 4 + Number(m[1])
          if (buf.length < total) return
          buf = buf.subarray(total)
          done++
          next()
        }
      })
      sock.on('error', reject)
    }
  })
}

function windowStats(from, to, requests) {
  const inWindow = gcs.filter((g) => g.t > from && g.t <= to)
  const bytes = inWindow.reduce((s, g) => s + g.allocated, 0)
  const scavenges = inWindow.filter((g) => g.scavenge).length
  return { bytes: bytes / requests, scavenges: (scavenges * 100_000) / requests, fullGcs: inWindow.length - scavenges }
}

// Top allocation sites of a sampling heap profile, per request: self bytes by function+script.
function summariseSites(file, requests) {
  const { head } = JSON.parse(readFileSync(file, 'utf8'))
  const by = new Map()
  const own = new Map() // the sites in the measured build's dist (ALLOC_DIST)
  const distUrl = pathToFileURL(DIST).href + '/'
  let total = 0
  const walk = (node) => {
    const self = node.selfSize
    if (self > 0) {
      const f = node.callFrame
      const url = f.url.replace(pathToFileURL(repoRoot).href + '/', '').replace(/^file:\/\//, '')
      const key = `${f.functionName || '(anonymous)'} ${url || '(native)'}:${f.lineNumber + 1}`
      by.set(key, (by.get(key) ?? 0) + self)
      if (f.url.startsWith(distUrl)) own.set(key, (own.get(key) ?? 0) + self)
      total += self
    }
    for (const c of node.children) walk(c)
  }
  walk(head)
  console.log(`\nallocation sites (sampling heap profile, ${SITES_INTERVAL} B interval, freed objects kept): ${(total / requests).toFixed(0)} B/request sampled`)
  const rows = [...by].sort((a, b) => b[1] - a[1]).slice(0, TOP)
  for (const [k, v] of rows) console.log(`${(v / requests).toFixed(0).padStart(7)} B  ${k}`)
  const ownRows = [...own].sort((a, b) => b[1] - a[1])
  console.log(`Tether's own (${path.relative(repoRoot, DIST) || DIST}/): ${(ownRows.reduce((s, [, v]) => s + v, 0) / requests).toFixed(0)} B/request`)
  for (const [k, v] of ownRows.slice(0, TOP)) console.log(`${(v / requests).toFixed(0).padStart(7)} B  ${k}`)
}

async function main() {
  const { CookieCodec } = await import(pathToFileURL(path.join(DIST, 'affinity', 'cookie-codec.js')).href)
  const codec = new CookieCodec({ secrets: [SECRET], idleTimeout: 3 * 3_600_000 })
  const [port, adminPort] = [await freePort(), await freePort()]
  const reqBufs = Array.from({ length: USERS }, (_, i) =>
    Buffer.from(`GET /item?u=${i} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nCookie: tether=${codec.issue(`up-${i % 2}`, 0, Date.now()).value}\r\n\r\n`, 'latin1'),
  )
  const upstreams = await Promise.all([startUpstream('up-0'), startUpstream('up-1')])
  const tether = startTether(port, adminPort, upstreams)
  const deadline = Date.now() + 30_000
  for (;;) {
    const ok = await new Promise((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => (s.destroy(), resolve(true)))
      s.on('error', () => resolve(false))
    })
    if (ok) break
    if (Date.now() > deadline) throw new Error('tether did not listen within 30 s')
    await new Promise((r) => setTimeout(r, 100))
  }
  console.log(`tether ${path.relative(process.cwd(), DIST) || DIST}: ${USERS} users, ${CONNECTIONS} keep-alive connections, ${WARMUP} warm-up requests, ${ROUNDS} x ${REQUESTS} measured`)
  await runLoad(port, WARMUP, reqBufs)
  const results = []
  for (let r = 0; r < ROUNDS; r++) {
    await probe(tether, `mark start-${r}`, `start-${r}`)
    const n = await runLoad(port, REQUESTS, reqBufs)
    await probe(tether, `mark end-${r}`, `end-${r}`)
    // V8's trace lines may arrive after the mark (stdio buffering): wait for a GC past it.
    const until = Date.now() + 5_000
    while (!gcs.some((g) => g.t > marks.get(`end-${r}`)) && Date.now() < until) {
      await runLoad(port, 2_000, reqBufs)
    }
    const s = windowStats(marks.get(`start-${r}`), marks.get(`end-${r}`), n)
    results.push(s)
    console.log(`round ${r + 1}: ${s.bytes.toFixed(0)} B/request, ${s.scavenges.toFixed(1)} scavenges/100k requests, ${s.fullGcs} full GC(s)`)
  }
  const med = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]
  console.log(`median: ${med(results.map((s) => s.bytes)).toFixed(0)} B/request, ${med(results.map((s) => s.scavenges)).toFixed(1)} scavenges/100k requests`)
  if (SITES) {
    const file = process.env.ALLOC_PROFILE ? path.resolve(process.env.ALLOC_PROFILE) : path.join(tmp, 'sites.heapprofile')
    await probe(tether, `sites-start ${SITES_INTERVAL}`, 'sites-started')
    const n = await runLoad(port, REQUESTS, reqBufs)
    await probe(tether, `sites-stop ${file}`, 'sites')
    summariseSites(file, n)
  }
  stopping = true
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(err)
    process.exit(1)
  },
)
