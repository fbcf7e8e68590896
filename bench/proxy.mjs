#!/usr/bin/env node
// Proxy throughput/latency benchmark: direct vs tether vs http-proxy vs undici [vs nginx, haproxy].
// Plain ESM, no build step. See bench/README.md for what is measured and how.
//
// Env knobs: BENCH_ROUNDS (3), BENCH_DURATION seconds (5), BENCH_WARMUP seconds (1), BENCH_PREWARM seconds (5),
// BENCH_CONNECTIONS (50), BENCH_CONTESTANTS (comma list, default all available),
// BENCH_TETHER_CMD (shell command replacing `node dist/cli.js --config <file>`),
// BENCH_LOADGEN (wrk when installed, else autocannon), BENCH_WRK_THREADS (1), BENCH_PIN (0),
// BENCH_WORKERS (1), BENCH_USERS (1), BENCH_RATE (unset: no fixed-rate run; <req/s> or <N>%),
// BENCH_RATE_GEN (wrk2 when installed, else paced: bench/lib/paced-load.mjs; or autocannon),
// BENCH_TETHER_BASE (a second build's dist dir), BENCH_NODE_ARGS (node flags for Node contestants),
// BENCH_ISOLATE (1: the contestants not under load are frozen with SIGSTOP meanwhile; 0: left running),
// BENCH_SAME_HEADERS (1: nginx and haproxy add X-Forwarded-* and X-Request-ID as Tether does; 0: bare),
// BENCH_TLS (0; 1: HTTPS/1.1 to every contestant that can terminate TLS), BENCH_H2 (0; 1: HTTP/2 over
// TLS with h2load), BENCH_H2_STREAMS (10: h2load -m, concurrent streams per connection).
import { mkdirSync, mkdtempSync, writeFileSync, readFileSync, rmSync, existsSync, chmodSync } from 'node:fs'
import { spawnSync } from 'node:child_process'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { wrkRun, autocannonRun, h2loadRun, pacedRun, writeWrkScript } from './lib/loadgen.mjs'
import { makeBenchCertificate } from './lib/certs.mjs'
import {
  CLK_TCK,
  which,
  freePort,
  startChild,
  waitForJsonLine,
  waitHttpReady,
  cpuTicks,
  hostTicks,
  procAvailable,
  stopAll,
  killAllSync,
  freeze,
} from './lib/procs.mjs'
import { median, round, fmt, table } from './lib/stats.mjs'
import { tetherMoves } from './lib/tether-moves.mjs'

const benchDir = path.dirname(fileURLToPath(import.meta.url))
const repoRoot = path.resolve(benchDir, '..')
const t0 = Date.now()

function envNum(name, def, { min = 0, int = false } = {}) {
  const raw = process.env[name]
  if (raw == null || raw === '') return def
  const n = Number(raw)
  if (!Number.isFinite(n) || n < min || (int && !Number.isInteger(n))) {
    throw new Error(`${name}=${raw} is not a valid ${int ? 'integer' : 'number'} >= ${min}`)
  }
  return n
}

// Each simulated user (BENCH_USERS, default 1) has one cookie, sent on every one of its
// requests: a valid Tether affinity cookie (a returning user, Tether's common case: verify the
// HMAC, route to the pinned upstream) signed with the bench config's secret, users alternating
// between the upstreams. nginx and haproxy hash the same values. Without a built dist/, dummies.
const BENCH_SECRET = 'bench-secret-0123456789abcdef'
const USERS = envNum('BENCH_USERS', 1, { min: 1, int: true })
const COOKIES = await benchCookies(USERS)
const COOKIE = COOKIES[0]
const HEADERS = { cookie: COOKIE }

async function benchCookies(n) {
  try {
    const { CookieCodec } = await import('../dist/affinity/cookie-codec.js')
    const codec = new CookieCodec({ secrets: [BENCH_SECRET], idleTimeout: 3 * 3_600_000 })
    return Array.from({ length: n }, (_, i) => `tether=${codec.issue(`up-${i % 2}`, 0, Date.now()).value}`)
  } catch {
    return Array.from({ length: n }, (_, i) => (n === 1 ? 'tether=abc' : `tether=user-${i}`))
  }
}

// The V8 flags a Tether build's serving process is started with (none before they existed).
async function servingFlags(dist) {
  try {
    const { SERVING_V8_FLAGS } = await import(pathToFileURL(path.join(dist, 'workers', 'worker-flags.js')).href)
    return SERVING_V8_FLAGS ?? []
  } catch {
    return []
  }
}

// Whether this Tether build knows the `workers` key (issue 14); until then it runs 1 worker.
async function tetherHasWorkers(dist = '../dist') {
  try {
    const { DEFAULTS } = await import(`${dist}/config/schema.js`)
    return DEFAULTS != null && 'workers' in DEFAULTS
  } catch {
    return false
  }
}

/**
 * The `limits` line of a Tether build's bench config: nginx here never recycles a client
 * connection (keepalive_requests 10000000, nginx.conf.tmpl), so Tether is told the same
 * (limits.max_requests_per_connection: 0) when its build knows the key; older builds had no cap.
 */
async function tetherUnlimitedRequests(dist) {
  try {
    const { DEFAULTS } = await import(pathToFileURL(path.join(dist, 'config', 'schema.js')).href)
    return DEFAULTS?.limits != null && 'max_requests_per_connection' in DEFAULTS.limits ? ['limits: { max_requests_per_connection: 0 }'] : []
  } catch {
    return []
  }
}
const UPSTREAM_COUNT = 2

// Protocol between the load generator and the contestants: 'http' (plain HTTP/1.1, the
// default), 'tls' (BENCH_TLS=1: HTTPS/1.1 with wrk or autocannon) or 'h2' (BENCH_H2=1: HTTP/2
// over TLS by ALPN, with h2load). The upstreams always speak plain HTTP/1.1. CERT: the one
// self-signed certificate every TLS contestant serves (bench/lib/certs.mjs), made in main().
let MODE = 'http'
let CERT = null
const overTls = () => MODE !== 'http'
// Why a contestant is left out of the TLS modes.
const PLAIN_ONLY = 'its baseline script listens on plain HTTP only (BENCH_TLS/BENCH_H2 measure TLS-terminating proxies)'
const ERROR_THRESHOLD = 0.001 // 0.1 % of requests
/** A pinned nginx below this % of its core was not the bottleneck of its rounds (see the warning). */
const NGINX_CPU_BOUND = 85

let tmpDir = null
let exiting = false

function cleanupTmp() {
  if (tmpDir) {
    try {
      rmSync(tmpDir, { recursive: true, force: true })
    } catch {}
    tmpDir = null
  }
}

async function shutdown(code, message) {
  if (exiting) return
  exiting = true
  if (message) console.error(message)
  await stopAll()
  cleanupTmp()
  process.exit(code)
}

process.on('exit', () => {
  killAllSync()
  cleanupTmp()
})
process.on('SIGINT', () => shutdown(130, '\ninterrupted (SIGINT): stopping children'))
process.on('SIGTERM', () => shutdown(143, '\nterminated (SIGTERM): stopping children'))
process.on('uncaughtException', (err) => shutdown(1, `bench failed: ${err.stack ?? err}`))
process.on('unhandledRejection', (err) => shutdown(1, `bench failed: ${err?.stack ?? err}`))

function toolVersion(bin, args) {
  const r = spawnSync(bin, args, { encoding: 'utf8' })
  return ((r.stdout || '') + (r.stderr || '')).split('\n')[0].trim() || null
}

// ---------------------------------------------------------------------------------------
// Contestants. Each: { name, check() -> null | reason-to-skip | throws, start(ctx) -> rec }
// ---------------------------------------------------------------------------------------

function tetherCommand() {
  if (process.env.BENCH_TETHER_CMD) return { custom: process.env.BENCH_TETHER_CMD }
  const cli = path.join(repoRoot, 'dist', 'cli.js')
  if (!existsSync(cli)) {
    throw new Error(
      `tether contestant: ${path.relative(process.cwd(), cli) || cli} not found. ` +
        'Build first (`npm run build`, or use `npm run bench` which builds), ' +
        'or set BENCH_TETHER_CMD, or leave tether out via BENCH_CONTESTANTS=direct,http-proxy,...',
    )
  }
  return { cli }
}

// BENCH_PIN=1: the proxy under test on CPU 0; the harness (and so its children: upstreams,
// wrk) was moved to CPU 1 in main(). Unpinned: every process may run on every core.
let PIN = false
function pinned(cmd, args) {
  return PIN ? ['taskset', ['-c', '0', cmd, ...args]] : [cmd, args]
}
let WORKERS = 1
// BENCH_SAME_HEADERS (1): nginx and HAProxy add the request headers Tether adds by default
// (X-Forwarded-For/-Proto/-Host/-Port, and X-Request-Id when the client sent none), as
// ingress-nginx does, so every proxy does the same work; 0: their bare configs
let SAME_HEADERS = true
// BENCH_NODE_ARGS: extra node flags for the Node contestants (tether, tether-base, undici,
// http-proxy), e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof" to profile them all in one run.
const NODE_ARGS = (process.env.BENCH_NODE_ARGS ?? '').split(/\s+/).filter(Boolean)
let TETHER_WORKERS = false
/** Whether the BENCH_TETHER_BASE build knows `workers` (an older one is given none). */
let BASE_WORKERS = false
/** BENCH_BASE_WORKERS: tether-base's `workers` (default BENCH_WORKERS), e.g. 1 against tether's 2 in one run. */
let BASE_WORKER_COUNT = 1

/** The TLS part of Tether's `listen` in the TLS modes: the bench certificate, h2 offered by ALPN in h2 mode only. */
function tetherTlsListen() {
  if (!overTls()) return ''
  return `, tls: { cert: "${CERT.certFile}", key: "${CERT.keyFile}" }, http2: { enabled: ${MODE === 'h2'} }`
}

/** Start one Tether build (`cmd`: { cli } or { custom }) with the bench config, as contestant `name`. */
async function startTether(ctx, name, cmd) {
  const port = await freePort()
  const adminPort = await freePort()
  const config = path.join(tmpDir, `${name}.yaml`)
  const limits = await tetherUnlimitedRequests(cmd.cli ? path.dirname(cmd.cli) : path.join(repoRoot, 'dist'))
  writeFileSync(
    config,
    [
      `listen: { host: 127.0.0.1, port: ${port}${tetherTlsListen()} }`,
      `admin: { listen: { host: 127.0.0.1, port: ${adminPort} } }`,
      'upstreams:',
      ...ctx.upstreams.map((u) => `  - { id: ${u.id}, url: "${u.url}" }`),
      `affinity: { key: cookie, cookie: { secret: "${BENCH_SECRET}", secure: false } }`,
      'log: { level: warn, access: false }',
      ...limits,
      ...((name === 'tether-base' ? BASE_WORKERS : TETHER_WORKERS) ? [`workers: ${name === 'tether-base' ? BASE_WORKER_COUNT : WORKERS}`] : []),
      '',
    ].join('\n'),
  )
  const env = {
    LOG_LEVEL: 'warn',
    BENCH_TETHER_CONFIG: config,
    BENCH_TETHER_PORT: String(port),
    BENCH_TETHER_ADMIN_PORT: String(adminPort),
    BENCH_UPSTREAMS: ctx.upstreams.map((u) => u.url).join(','),
    BENCH_WORKERS: String(name === 'tether-base' ? BASE_WORKER_COUNT : WORKERS),
  }
  let rec
  if (cmd.custom) {
    const line = cmd.custom.replaceAll('{config}', config).replaceAll('{port}', String(port))
    rec = startChild(name, ...pinned('sh', ['-c', line]), { env, cwd: repoRoot })
  } else {
    // node flags as the Docker image starts Tether (that build's SERVING_V8_FLAGS), then BENCH_NODE_ARGS
    const flags = await servingFlags(path.dirname(cmd.cli))
    rec = startChild(name, ...pinned(process.execPath, [...flags, ...NODE_ARGS, cmd.cli, '--config', config]), { env, cwd: repoRoot })
  }
  return { rec, port, info: { command: rec.cmdline, config: readFileSync(config, 'utf8'), adminPort } }
}

const CONTESTANTS = [
  {
    name: 'direct',
    kind: 'direct',
    check: () => (overTls() ? 'the upstreams speak plain HTTP only, so there is no direct TLS baseline' : null),
    // No process of its own: load goes straight to upstream 0.
    start: async (ctx) => ({ rec: null, port: ctx.upstreams[0].port, info: { target: ctx.upstreams[0].url } }),
  },
  {
    name: 'tether',
    kind: 'proxy',
    check: () => (tetherCommand(), null),
    start: (ctx) => startTether(ctx, 'tether', tetherCommand()),
  },
  {
    // Another Tether build in the same run (BENCH_TETHER_BASE=<its dist dir>), for before/after
    // comparisons of a change under the same conditions; left out unless that is set.
    name: 'tether-base',
    kind: 'proxy',
    optional: () => !process.env.BENCH_TETHER_BASE,
    check: () => {
      if (!process.env.BENCH_TETHER_BASE) return 'BENCH_TETHER_BASE is not set'
      const cli = path.resolve(process.env.BENCH_TETHER_BASE, 'cli.js')
      if (!existsSync(cli)) throw new Error(`BENCH_TETHER_BASE: ${cli} not found`)
      return null
    },
    start: (ctx) => startTether(ctx, 'tether-base', { cli: path.resolve(process.env.BENCH_TETHER_BASE, 'cli.js') }),
  },
  {
    name: 'http-proxy',
    kind: 'proxy',
    check: () => (overTls() ? PLAIN_ONLY : null),
    start: async (ctx) => {
      const port = await freePort()
      const script = path.join(benchDir, 'http-proxy-baseline.mjs')
      const rec = startChild('http-proxy', ...pinned(process.execPath, [...NODE_ARGS, script, String(port), ...ctx.upstreams.map((u) => u.url)]), {
        cwd: repoRoot,
      })
      return { rec, port, info: { command: rec.cmdline } }
    },
  },
  {
    name: 'undici',
    kind: 'proxy',
    check: () => (overTls() ? PLAIN_ONLY : null),
    start: async (ctx) => {
      const port = await freePort()
      const script = path.join(benchDir, 'undici-baseline.mjs')
      const rec = startChild('undici', ...pinned(process.execPath, [...NODE_ARGS, script, String(port), ...ctx.upstreams.map((u) => u.url)]), {
        cwd: repoRoot,
        env: { BENCH_UNDICI_WORKERS: String(WORKERS) },
      })
      return { rec, port, info: { command: rec.cmdline } }
    },
  },
  // Ceiling contestants (bench/raw-baseline.mjs): raw `net` sockets on one or both sides, the
  // least HTTP/1 work a keep-alive GET needs. Run only when named in BENCH_CONTESTANTS.
  ...['raw', 'raw-server', 'raw-upstream'].map((name) => ({
    name,
    kind: 'proxy',
    optional: () => true,
    check: () => (overTls() ? PLAIN_ONLY : null),
    start: async (ctx) => {
      const port = await freePort()
      const script = path.join(benchDir, 'raw-baseline.mjs')
      const rec = startChild(name, ...pinned(process.execPath, [...NODE_ARGS, script, String(port), name, ...ctx.upstreams.map((u) => u.url)]), {
        cwd: repoRoot,
      })
      return { rec, port, info: { command: rec.cmdline } }
    },
  })),
  {
    name: 'nginx',
    kind: 'proxy',
    check: () => (which('nginx') ? null : 'nginx not found on PATH'),
    start: async (ctx) => {
      const bin = which('nginx')
      const port = await freePort()
      const prefix = path.join(tmpDir, 'nginx')
      mkdirSync(prefix, { recursive: true })
      const servers = ctx.upstreams.map((u) => `        server 127.0.0.1:${u.port};`).join('\n')
      const tls = overTls()
        ? { LISTEN_OPTS: MODE === 'h2' ? ' ssl http2' : ' ssl', TLS: `        ssl_certificate ${CERT.certFile};\n        ssl_certificate_key ${CERT.keyFile};` }
        : { LISTEN_OPTS: '', TLS: '' }
      const HEADERS = !SAME_HEADERS ? '' : [
        'proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;',
        'proxy_set_header X-Forwarded-Proto $scheme;',
        'proxy_set_header X-Forwarded-Host $http_host;',
        'proxy_set_header X-Forwarded-Port $server_port;',
        'proxy_set_header X-Request-ID $request_id_kept;',
      ].map((l) => `            ${l}`).join('\n')
      const conf = fill(readFileSync(path.join(benchDir, 'nginx.conf.tmpl'), 'utf8'), { PORT: port, PREFIX: prefix, SERVERS: servers, WORKERS, HEADERS, ...tls })
      const confPath = path.join(prefix, 'nginx.conf')
      writeFileSync(confPath, conf)
      const version = toolVersion(bin, ['-v'])
      // -e (startup error log) exists since 1.19.5; without it nginx touches its compiled-in log path.
      const m = /nginx\/(\d+)\.(\d+)\.(\d+)/.exec(version ?? '')
      const hasE = !m || Number(m[1]) * 1e6 + Number(m[2]) * 1e3 + Number(m[3]) >= 1019005
      const args = ['-p', prefix + '/', '-c', confPath, ...(hasE ? ['-e', 'stderr'] : [])]
      const rec = startChild('nginx', ...pinned(bin, args))
      return { rec, port, info: { command: rec.cmdline, version } }
    },
  },
  {
    name: 'haproxy',
    kind: 'proxy',
    check: () => (which('haproxy') ? null : 'haproxy not found on PATH'),
    start: async (ctx) => {
      const bin = which('haproxy')
      const port = await freePort()
      const prefix = path.join(tmpDir, 'haproxy')
      mkdirSync(prefix, { recursive: true })
      const servers = ctx.upstreams.map((u) => `    server ${u.id} 127.0.0.1:${u.port}`).join('\n')
      const BIND_OPTS = !overTls() ? '' : ` ssl crt ${CERT.pemFile}${MODE === 'h2' ? ' alpn h2,http/1.1' : ''}`
      const HEADERS = !SAME_HEADERS ? '' : [
        'option forwardfor',
        'http-request set-header X-Forwarded-Proto https if { ssl_fc }',
        'http-request set-header X-Forwarded-Proto http unless { ssl_fc }',
        'http-request set-header X-Forwarded-Host %[req.hdr(host)]',
        'http-request set-header X-Forwarded-Port %[dst_port]',
        'unique-id-format %[uuid()]',
        'http-request set-header X-Request-ID %[unique-id] unless { req.hdr(x-request-id) -m found }',
      ].map((l) => `    ${l}`).join('\n')
      const cfg = fill(readFileSync(path.join(benchDir, 'haproxy.cfg.tmpl'), 'utf8'), { PORT: port, PREFIX: prefix, SERVERS: servers, WORKERS, BIND_OPTS, HEADERS })
      const cfgPath = path.join(prefix, 'haproxy.cfg')
      writeFileSync(cfgPath, cfg)
      const rec = startChild('haproxy', ...pinned(bin, ['-db', '-f', cfgPath]))
      return { rec, port, info: { command: rec.cmdline, version: toolVersion(bin, ['-v']) } }
    },
  },
]

function envFlag(name) {
  const raw = process.env[name]
  if (raw == null || raw === '' || raw === '0') return false
  if (raw === '1') return true
  throw new Error(`${name}=${raw}: expected 0 or 1`)
}

/**
 * BENCH_UPSTREAM=nginx: one upstream as a single nginx process (no master, so its pid is the
 * one that serves and is measured) answering the same body as upstream-server.mjs.
 */
function startNginxUpstream(id, port) {
  const prefix = path.join(tmpDir, id)
  mkdirSync(prefix, { recursive: true })
  const conf = fill(readFileSync(path.join(benchDir, 'nginx-upstream.conf.tmpl'), 'utf8'), { PORT: port, PREFIX: prefix, BODY: `ok\\n${id}\\n` })
  const confPath = path.join(prefix, 'nginx.conf')
  writeFileSync(confPath, conf)
  return startChild(id, which('nginx'), ['-p', prefix + '/', '-c', confPath, '-e', 'stderr'])
}

/** BENCH_RATE: unset -> no fixed-rate run; "<n>" -> n req/s; "<p>%" -> p% of nginx's median req/s. */
function parseRate(raw) {
  if (raw == null || raw === '') return null
  const m = /^(\d+(?:\.\d+)?)(%?)$/.exec(raw.trim())
  const n = m ? Number(m[1]) : NaN
  if (!m || !(n > 0) || (m[2] && n > 1000)) throw new Error(`BENCH_RATE=${raw}: expected req/s (e.g. 20000) or a share of nginx (e.g. 50%)`)
  return m[2] ? { percent: n } : { rps: Math.round(n) }
}

function describeUsers() {
  return USERS === 1 ? `1 user (cookie "${COOKIE}")` : `${USERS} users (one tether cookie each, alternating upstreams)`
}

function describeLoadgen(cfg) {
  if (MODE === 'h2') return `h2load (${cfg.wrkThreads} thread${cfg.wrkThreads > 1 ? 's' : ''}, ${cfg.h2Streams} streams per connection)`
  return cfg.loadgen === 'wrk' ? `wrk (${cfg.wrkThreads} thread${cfg.wrkThreads > 1 ? 's' : ''})` : 'autocannon in-process'
}

function fill(tmpl, vars) {
  return tmpl.replace(/\{\{(\w+)\}\}/g, (all, k) => {
    if (!(k in vars)) throw new Error(`template placeholder ${all} has no value`)
    return String(vars[k])
  })
}

// ---------------------------------------------------------------------------------------

/** One window of load on `port` with the selected load generator (closed loop, or `rate` req/s). */
async function loadRun(port, cfg, { duration = cfg.duration, rate = 0 } = {}) {
  if (MODE === 'h2') {
    const logFile = path.join(tmpDir, 'h2load.log')
    return h2loadRun(cfg.h2loadBin, { port, duration, clients: cfg.connections, streams: cfg.h2Streams, threads: cfg.wrkThreads, cookie: COOKIE, logFile })
  }
  const common = { port, duration, connections: cfg.connections, rate, tls: MODE === 'tls' }
  if (rate ? cfg.rateGen === 'wrk2' : cfg.loadgen === 'wrk') {
    return wrkRun(rate ? cfg.wrk2Bin : cfg.wrkBin, { ...common, threads: cfg.wrkThreads, script: cfg.wrkScript })
  }
  if (rate && cfg.rateGen === 'paced') return pacedRun({ ...common, cookies: COOKIES, cookiesFile: path.join(tmpDir, 'paced-cookies.json'), warmup: cfg.warmup })
  return autocannonRun({ ...common, cookies: COOKIES })
}

/** One measured window: CPU snapshots of every child tree around a load generator run. */
async function measure(c, ctx, cfg, rate = 0) {
  const pids = [...(c.rec ? [c.rec.pid] : []), ...ctx.upstreams.map((u) => u.pid)]
  const before = cpuTicks(pids)
  const h0 = hostTicks()
  const w0 = process.hrtime.bigint()
  const r = await loadRun(c.port, cfg, { rate })
  const wallS = Number(process.hrtime.bigint() - w0) / 1e9
  const after = cpuTicks(pids)
  const h1 = hostTicks()
  const pct = (pid) => ((after.get(pid) - before.get(pid)) / CLK_TCK / wallS) * 100
  const upstreamCpu = Object.fromEntries(ctx.upstreams.map((u) => [u.id, round(pct(u.pid), 1)]))
  const ours = (c.rec ? pct(c.rec.pid) : 0) + ctx.upstreams.reduce((a, u) => a + pct(u.pid), 0)
  const loadgen = ((r.loadgenCpuS ?? 0) / wallS) * 100
  const host = ((h1.busy - h0.busy) / CLK_TCK / wallS) * 100
  const total = r.requests
  const bad = r.errors + r.timeouts + r.non2xx
  return {
    rps: r.rps,
    p50: r.p50,
    p99: r.p99,
    p999: r.p999,
    avgLatency: r.avgLatency,
    ...(r.h2load ? { h2load: r.h2load } : {}),
    requests: total,
    durationS: r.durationS,
    errors: r.errors,
    timeouts: r.timeouts,
    non2xx: r.non2xx,
    errorRate: total + r.errors > 0 ? bad / (total + r.errors) : 1,
    // CPU time of the proxy per completed request: steadier than req/s on a shared machine
    // (it does not move when a neighbour takes the proxy's core away, only when work changes)
    proxyUsPerReq: c.rec && total > 0 ? round(((after.get(c.rec.pid) - before.get(c.rec.pid)) / CLK_TCK / total) * 1e6, 1) : null,
    cpu: {
      proxy: c.rec ? round(pct(c.rec.pid), 1) : null,
      upstreams: upstreamCpu,
      upstreamsTotal: round(Object.values(upstreamCpu).reduce((a, b) => a + b, 0), 1),
      loadgen: round(loadgen, 1),
      // Whole machine, all cores, in one-core units (2 cores = 200%). `other` = host minus the
      // processes above: CPU used by something else (noise) or kernel work not charged to them.
      host: round(host, 1),
      other: round(Math.max(0, host - ours - loadgen), 1),
    },
  }
}

async function main() {
  const cfg = {
    rounds: envNum('BENCH_ROUNDS', 3, { min: 1, int: true }),
    duration: envNum('BENCH_DURATION', 5, { min: 1, int: true }),
    warmup: envNum('BENCH_WARMUP', 1, { min: 0, int: true }),
    prewarm: envNum('BENCH_PREWARM', 5, { min: 0, int: true }),
    // h2: 10 connections x BENCH_H2_STREAMS (10) = 100 requests in flight, twice plain mode's 50
    connections: envNum('BENCH_CONNECTIONS', envFlag('BENCH_H2') ? 10 : 50, { min: 1, int: true }),
    users: USERS,
    workers: envNum('BENCH_WORKERS', 1, { min: 1, int: true }),
    baseWorkers: envNum('BENCH_BASE_WORKERS', envNum('BENCH_WORKERS', 1, { min: 1, int: true }), { min: 1, int: true }),
    wrkThreads: envNum('BENCH_WRK_THREADS', 1, { min: 1, int: true }),
    pin: envFlag('BENCH_PIN'),
    // 1 (default): the contestants not under load are frozen (SIGSTOP) while one is warmed up
    // and measured, so their idle work (timers, V8's idle GCs) does not land in its window
    isolate: process.env.BENCH_ISOLATE === undefined ? true : envFlag('BENCH_ISOLATE'),
    sameHeaders: process.env.BENCH_SAME_HEADERS === undefined ? true : envFlag('BENCH_SAME_HEADERS'),
    wrkBin: which('wrk'),
    wrk2Bin: which('wrk2'),
    tls: envFlag('BENCH_TLS'),
    h2: envFlag('BENCH_H2'),
    h2Streams: envNum('BENCH_H2_STREAMS', 10, { min: 1, int: true }),
    h2loadBin: which('h2load'),
    // the upstreams: node (bench/lib/upstream-server.mjs, default) or nginx (`return 200`, one
    // process each: the cheapest HTTP/1.1 server here, so more of the host is left to the proxies)
    upstream: process.env.BENCH_UPSTREAM || 'node',
  }
  if (!['node', 'nginx'].includes(cfg.upstream)) throw new Error(`BENCH_UPSTREAM=${cfg.upstream}: expected node or nginx`)
  if (cfg.upstream === 'nginx' && !which('nginx')) throw new Error('BENCH_UPSTREAM=nginx but nginx is not on PATH')
  // BENCH_H2 is HTTP/2 over TLS, so BENCH_TLS=1 with it changes nothing.
  MODE = cfg.h2 ? 'h2' : cfg.tls ? 'tls' : 'http'
  cfg.mode = MODE
  if (overTls() && !which('openssl')) throw new Error(`BENCH_${MODE === 'h2' ? 'H2' : 'TLS'}=1 needs openssl on PATH to make the certificate`)
  if (MODE === 'h2') {
    if (!cfg.h2loadBin) throw new Error('BENCH_H2=1 needs h2load on PATH (apt-get install nghttp2-client)')
    if (process.env.BENCH_RATE) throw new Error('BENCH_RATE is not supported with BENCH_H2=1 (the fixed-rate run uses wrk2 or autocannon, which speak HTTP/1.1)')
    if (process.env.BENCH_LOADGEN) throw new Error('BENCH_LOADGEN does not apply with BENCH_H2=1 (the load generator is h2load)')
  }
  const lg = process.env.BENCH_LOADGEN || (cfg.wrkBin ? 'wrk' : 'autocannon')
  if (lg !== 'wrk' && lg !== 'autocannon') throw new Error(`BENCH_LOADGEN=${lg}: expected wrk or autocannon`)
  if (lg === 'wrk' && !cfg.wrkBin) throw new Error('BENCH_LOADGEN=wrk but wrk is not on PATH (apt-get install wrk)')
  cfg.loadgen = lg
  cfg.rate = parseRate(process.env.BENCH_RATE)
  // the paced generator speaks plain HTTP/1.1: over TLS the default is autocannon
  const rg = process.env.BENCH_RATE_GEN || (cfg.wrk2Bin ? 'wrk2' : MODE === 'tls' ? 'autocannon' : 'paced')
  if (!['wrk2', 'paced', 'autocannon'].includes(rg)) throw new Error(`BENCH_RATE_GEN=${rg}: expected wrk2, paced or autocannon`)
  if (rg === 'wrk2' && !cfg.wrk2Bin) throw new Error('BENCH_RATE_GEN=wrk2 but wrk2 is not on PATH')
  if (rg === 'paced' && MODE === 'tls' && process.env.BENCH_RATE) throw new Error('BENCH_RATE with BENCH_TLS=1 needs BENCH_RATE_GEN=autocannon (or wrk2): the paced generator speaks plain HTTP/1.1')
  cfg.rateGen = rg
  if (!procAvailable()) throw new Error('/proc is required for CPU accounting (Linux only)')
  const wanted = process.env.BENCH_CONTESTANTS
    ? process.env.BENCH_CONTESTANTS.split(',').map((s) => s.trim()).filter(Boolean)
    : null
  if (wanted) {
    const unknown = wanted.filter((w) => !CONTESTANTS.some((c) => c.name === w))
    if (unknown.length) throw new Error(`BENCH_CONTESTANTS: unknown ${unknown.join(', ')} (known: ${CONTESTANTS.map((c) => c.name).join(', ')})`)
  }
  if (cfg.pin) {
    if (!which('taskset')) throw new Error('BENCH_PIN=1 needs taskset (util-linux)')
    if (os.cpus().length < 2) throw new Error('BENCH_PIN=1 needs at least 2 CPUs')
    // The harness and everything it starts from now on (upstreams, wrk) on CPU 1; each
    // proxy under test is started on CPU 0 through `taskset -c 0`.
    const r = spawnSync(which('taskset'), ['-a', '-p', '-c', '1', String(process.pid)], { encoding: 'utf8' })
    if (r.status !== 0) throw new Error(`taskset failed: ${r.stderr}`)
    PIN = true
  }
  WORKERS = cfg.workers
  BASE_WORKER_COUNT = cfg.baseWorkers
  SAME_HEADERS = cfg.sameHeaders
  TETHER_WORKERS = await tetherHasWorkers()
  BASE_WORKERS = process.env.BENCH_TETHER_BASE ? await tetherHasWorkers(path.resolve(process.env.BENCH_TETHER_BASE)) : false

  console.log(
    `tether proxy bench${MODE === 'http' ? '' : MODE === 'tls' ? ' over TLS (HTTPS/1.1)' : ' over HTTP/2 + TLS'}: ${cfg.rounds} rounds x ${cfg.duration}s (+${cfg.warmup}s warm-up; ${cfg.prewarm}s pre-warm once), ` +
      `${cfg.connections} connections, ${MODE === 'h2' ? `${cfg.h2Streams} streams each` : 'pipelining 1'}, ${describeUsers()}, ${describeLoadgen(cfg)}; ` +
      `${os.cpus().length} CPUs, node ${process.version}`,
  )
  console.log(
    (cfg.pin ? 'pinned: proxy under test on CPU 0, load generator and upstreams on CPU 1' : 'unpinned: every process on every CPU') +
      `; workers: nginx worker_processes ${cfg.workers}, haproxy nbthread ${cfg.workers}, undici processes ${cfg.workers}, ` +
      (TETHER_WORKERS ? `tether workers ${cfg.workers}` : 'tether 1 (this build has no `workers` key yet)') +
      (process.env.BENCH_TETHER_BASE ? (BASE_WORKERS ? `, tether-base workers ${cfg.baseWorkers}` : ', tether-base 1 (that build has no `workers` key)') : '') +
      (cfg.isolate ? '; idle contestants frozen while one is measured' : '; idle contestants left running (BENCH_ISOLATE=0)') +
      (cfg.sameHeaders ? '; nginx and haproxy add X-Forwarded-* and X-Request-Id as Tether does' : '; nginx and haproxy bare (BENCH_SAME_HEADERS=0): no X-Forwarded-* or X-Request-Id, which Tether adds'),
  )
  if (cfg.rate) {
    console.log(
      `fixed-rate run after the rounds: ${cfg.rate.percent != null ? `${cfg.rate.percent}% of nginx's median req/s` : `${cfg.rate.rps} req/s`}` +
        ` with ${cfg.rateGen === 'wrk2' ? 'wrk2 -R' : cfg.rateGen === 'paced' ? 'bench/lib/paced-load.mjs (evenly paced connections, a child process)' : 'autocannon overallRate (in-process)'}`,
    )
  }

  if (MODE === 'h2' && USERS > 1) {
    console.log(`note: h2load sends the same headers on every request, so every request carries user 0's cookie (BENCH_USERS=${USERS} is not simulated)`)
  }

  const skipped = []
  const selected = []
  for (const c of CONTESTANTS) {
    if (wanted ? !wanted.includes(c.name) : c.optional?.()) continue
    const reason = c.check() // throws for a hard failure (e.g. dist/cli.js missing)
    if (reason) {
      skipped.push({ name: c.name, reason })
      console.log(`skipping ${c.name}: ${reason}`)
    } else selected.push(c)
  }

  if (cfg.rate?.percent != null && !selected.some((c) => c.name === 'nginx')) {
    throw new Error(`BENCH_RATE=${cfg.rate.percent}% is relative to nginx, which is not in this run`)
  }

  tmpDir = mkdtempSync(path.join(os.tmpdir(), 'tether-bench-'))
  chmodSync(tmpDir, 0o755) // nginx workers may run as an unprivileged user when we are root
  cfg.wrkScript = path.join(tmpDir, 'cookies.lua')
  writeWrkScript(cfg.wrkScript, COOKIES)
  if (overTls()) {
    CERT = makeBenchCertificate(tmpDir)
    console.log(`certificate: self-signed EC P-256 for 127.0.0.1 (${CERT.certFile}), served by every contestant`)
  }

  // Upstreams: each its own process on an ephemeral port.
  const upstreams = []
  for (let i = 0; i < UPSTREAM_COUNT; i++) {
    const id = `up-${i}`
    let rec, port
    if (cfg.upstream === 'nginx') {
      port = await freePort()
      rec = startNginxUpstream(id, port)
    } else {
      rec = startChild(id, process.execPath, [path.join(benchDir, 'lib', 'upstream-server.mjs'), id])
      ;({ port } = await waitForJsonLine(rec))
    }
    await waitHttpReady(rec, port)
    upstreams.push({ id, port, pid: rec.pid, url: `http://127.0.0.1:${port}`, rec })
  }
  const ctx = { upstreams }
  console.log(`upstreams (${cfg.upstream}): ${upstreams.map((u) => `${u.id}=${u.url} (pid ${u.pid})`).join(', ')}`)

  // Contestants, started once and kept running across rounds.
  const running = []
  for (const c of selected) {
    const { rec, port, info } = await c.start(ctx)
    if (rec) await waitHttpReady(rec, port, HEADERS, 10_000, { tls: overTls() })
    running.push({ name: c.name, kind: c.kind, rec, port, info, rounds: [] })
    console.log(`ready: ${c.name} on 127.0.0.1:${port}${rec ? ` (pid ${rec.pid})` : ''}`)
  }

  // Pre-warm, once: a Node proxy's first seconds under load cost several times its steady
  // state per request (JIT compilation; Tether measured 850 us/req in its first 3 s, then
  // 210, then ~130), which would skew round 1 far more than the per-window warm-up can fix.
  // One contestant under load at a time; with BENCH_ISOLATE the others are frozen meanwhile.
  const alone = async (c, work) => {
    const thaw = cfg.isolate ? freeze(running.filter((o) => o !== c).map((o) => o.rec)) : () => {}
    try {
      return await work()
    } finally {
      thaw()
    }
  }
  if (cfg.prewarm > 0) {
    console.log(`pre-warm: ${cfg.prewarm}s of load per contestant`)
    for (const c of running) await alone(c, () => loadRun(c.port, cfg, { duration: cfg.prewarm }))
  }

  // Interleaved rounds: every contestant once per round, same order each round.
  for (let r = 1; r <= cfg.rounds; r++) {
    for (const c of running) {
      if (c.rec?.exited) throw new Error(`${c.name} died during the run (${JSON.stringify(c.rec.exited)}):\n${c.rec.output}`)
      const m = await alone(c, async () => {
        if (cfg.warmup > 0) await loadRun(c.port, cfg, { duration: cfg.warmup })
        return measure(c, ctx, cfg)
      })
      c.rounds.push({ round: r, ...m })
      console.log(
        `round ${r}/${cfg.rounds} ${c.name.padEnd(10)} ${fmt(m.rps, 0).padStart(7)} req/s  ` +
          `p50 ${fmt(m.p50, 2)}ms p99 ${fmt(m.p99, 2)}ms` +
          (m.h2load ? ` (h2load: mean ${fmt(m.h2load.mean, 2)}ms sd ${fmt(m.h2load.sd, 2)}ms max ${fmt(m.h2load.max, 2)}ms)` : '') +
          `  cpu proxy ${fmt(m.cpu.proxy, 0, '%')} (${fmt(m.proxyUsPerReq, 1)}us/req) ` +
          `upstreams ${fmt(m.cpu.upstreamsTotal, 0, '%')} loadgen ${fmt(m.cpu.loadgen, 0, '%')} ` +
          `host ${fmt(m.cpu.host, 0, '%')}/${os.cpus().length * 100}%` +
          (m.errors + m.timeouts + m.non2xx ? `  errors ${m.errors} timeouts ${m.timeouts} non2xx ${m.non2xx}` : ''),
      )
    }
  }

  // Medians per contestant, then ratios.
  for (const c of running) {
    const col = (f) => median(c.rounds.map(f))
    c.median = {
      rps: round(col((x) => x.rps), 0),
      p50: col((x) => x.p50),
      p99: col((x) => x.p99),
      p999: col((x) => x.p999),
      proxyUsPerReq: col((x) => x.proxyUsPerReq),
      ...(MODE === 'h2'
        ? { h2load: { mean: col((x) => x.h2load?.mean), sd: col((x) => x.h2load?.sd), max: col((x) => x.h2load?.max) } }
        : {}),
      cpu: {
        proxy: round(col((x) => x.cpu.proxy), 1),
        upstreamsTotal: round(col((x) => x.cpu.upstreamsTotal), 1),
        loadgen: round(col((x) => x.cpu.loadgen), 1),
        host: round(col((x) => x.cpu.host), 1),
        other: round(col((x) => x.cpu.other), 1),
      },
      errorRate: col((x) => x.errorRate),
    }
    c.rpsRange = [Math.min(...c.rounds.map((x) => x.rps)), Math.max(...c.rounds.map((x) => x.rps))]
    // the host's noise only ever adds CPU (a busy neighbour, a slow core), so the cheapest round
    // is the closest to what the code costs: the median and the best side by side show the spread
    const usPerReq = c.rounds.map((x) => x.proxyUsPerReq).filter((x) => Number.isFinite(x) && x > 0)
    c.bestUsPerReq = usPerReq.length > 0 ? Math.min(...usPerReq) : null
  }
  const by = Object.fromEntries(running.map((c) => [c.name, c]))
  const ratio = (a, b) => (by[a] && by[b] && by[b].median.rps ? round(by[a].median.rps / by[b].median.rps, 2) : null)
  // closed-loop p99 over nginx's: at each contestant's own maximum rate, so read it with the req/s ratio
  const p99Ratio = (a) => (by[a]?.median.p99 != null && by.nginx?.median.p99 ? round(by[a].median.p99 / by.nginx.median.p99, 2) : null)
  // nginx's CPU per request over the contestant's: the req/s ratio both would have if each
  // were limited by its own core (the fair reading when nginx is not: see the warning below)
  const cpuRatio = (a) => (by[a]?.median.proxyUsPerReq && by.nginx?.median.proxyUsPerReq ? round(by.nginx.median.proxyUsPerReq / by[a].median.proxyUsPerReq, 2) : null)
  const bestCpuRatio = (a) => (by[a]?.bestUsPerReq && by.nginx?.bestUsPerReq ? round(by.nginx.bestUsPerReq / by[a].bestUsPerReq, 2) : null)
  for (const c of running) {
    c.ratio = { vsDirect: ratio(c.name, 'direct'), vsHttpProxy: ratio(c.name, 'http-proxy'), vsNginx: ratio(c.name, 'nginx'), p99VsNginx: p99Ratio(c.name), cpuVsNginx: cpuRatio(c.name), bestCpuVsNginx: bestCpuRatio(c.name) }
  }
  // a pinned nginx well below its core was held back by the other core (load generator and
  // upstreams): its req/s is then the harness's ceiling, and req/s ratios to it flatter the others
  const nginxBound = by.nginx && cfg.pin && by.nginx.median.cpu.proxy < NGINX_CPU_BOUND
    ? `nginx used ${fmt(by.nginx.median.cpu.proxy, 0, '%')} of its core (< ${NGINX_CPU_BOUND}%): its req/s was limited by the other core (load generator, upstreams), ` +
      `so "x nginx" overstates the others; "cpu x nginx" (nginx's CPU per request over theirs) is the fair ratio for this run`
    : null

  const rows = [
    [
      'contestant', 'req/s', 'rounds min..max', 'p50 ms', 'p99 ms',
      ...(MODE === 'h2' ? ['mean ms', 'sd ms', 'max ms'] : []),
      'x nginx', 'cpu x nginx', 'p99 x nginx', 'x direct', 'x http-proxy', 'proxy cpu', 'proxy us/req', 'best us/req', 'upstr cpu', 'loadgen cpu', 'other cpu', 'err %',
    ],
    ...running.map((c) => [
      c.name,
      fmt(c.median.rps),
      `${fmt(c.rpsRange[0])}..${fmt(c.rpsRange[1])}`,
      fmt(c.median.p50, 2),
      fmt(c.median.p99, 2),
      ...(MODE === 'h2' ? [fmt(c.median.h2load.mean, 2), fmt(c.median.h2load.sd, 2), fmt(c.median.h2load.max, 2)] : []),
      fmt(c.ratio.vsNginx, 2),
      fmt(c.ratio.cpuVsNginx, 2),
      fmt(c.ratio.p99VsNginx, 2),
      fmt(c.ratio.vsDirect, 2),
      fmt(c.ratio.vsHttpProxy, 2),
      fmt(c.median.cpu.proxy, 0, '%'),
      fmt(c.median.proxyUsPerReq, 1),
      fmt(c.bestUsPerReq, 1),
      fmt(c.median.cpu.upstreamsTotal, 0, '%'),
      fmt(c.median.cpu.loadgen, 0, '%'),
      fmt(c.median.cpu.other, 0, '%'),
      fmt(c.median.errorRate * 100, 3),
    ]),
  ]
  console.log(
    `\nmedian of ${cfg.rounds} rounds (cpu = % of one core over the measured window; upstr = both upstreams summed;\n` +
      `other = host-wide busy CPU not charged to these processes: other tenants or kernel work; high = noisy run)\n` +
      (MODE === 'h2'
        ? `(h2: p50/p99 from h2load's per-request log; mean/sd/max are h2load's own "time for request" figures, medians over rounds)\n`
        : ''),
  )
  console.log(table(rows, (i) => i !== 0))
  for (const s of skipped) console.log(`(${s.name} skipped: ${s.reason})`)
  if (nginxBound) console.log(`warning: ${nginxBound}`)

  // Fixed-rate latency run: every contestant at the same offered rate, interleaved rounds
  // again. Each waits idle while the others run; the paced generator gives it BENCH_WARMUP s of
  // the same rate first, unmeasured (wrk2 and autocannon windows start cold).
  let rateRun = null
  if (cfg.rate) {
    const target = cfg.rate.rps ?? Math.max(1, Math.round((by.nginx.median.rps * cfg.rate.percent) / 100))
    rateRun = { offered: target, generator: cfg.rateGen, warmupS: cfg.rateGen === 'paced' ? cfg.warmup : 0, ...(cfg.rate.percent != null ? { percentOfNginx: cfg.rate.percent } : {}) }
    const rateWarmup = cfg.rateGen === 'paced' && cfg.warmup > 0 ? ` (+${cfg.warmup}s at the rate, unmeasured)` : ''
    console.log(`\nfixed rate: ${fmt(target)} req/s offered to each contestant, ${cfg.rounds} rounds x ${cfg.duration}s${rateWarmup}`)
    for (const c of running) c.rateRounds = []
    for (let r = 1; r <= cfg.rounds; r++) {
      for (const c of running) {
        if (c.rec?.exited) throw new Error(`${c.name} died during the run (${JSON.stringify(c.rec.exited)}):\n${c.rec.output}`)
        const m = await alone(c, () => measure(c, ctx, cfg, target))
        c.rateRounds.push({ round: r, ...m })
        console.log(
          `rate round ${r}/${cfg.rounds} ${c.name.padEnd(10)} ${fmt(m.rps, 0).padStart(7)} req/s  ` +
            `p50 ${fmt(m.p50, 2)}ms p99 ${fmt(m.p99, 2)}ms p99.9 ${fmt(m.p999, 2)}ms  cpu proxy ${fmt(m.cpu.proxy, 0, '%')}` +
            (m.errors + m.timeouts + m.non2xx ? `  errors ${m.errors} timeouts ${m.timeouts} non2xx ${m.non2xx}` : ''),
        )
      }
    }
    for (const c of running) {
      const col = (f) => median(c.rateRounds.map(f))
      c.rateMedian = { rps: round(col((x) => x.rps), 0), p50: col((x) => x.p50), p99: col((x) => x.p99), p999: col((x) => x.p999), proxyCpu: round(col((x) => x.cpu.proxy), 1), errorRate: col((x) => x.errorRate) }
    }
    const p99Ratio = (c) => (by.nginx?.rateMedian?.p99 ? round(c.rateMedian.p99 / by.nginx.rateMedian.p99, 2) : null)
    for (const c of running) c.rateMedian.p99VsNginx = p99Ratio(c)
    console.log(`\nfixed rate ${fmt(target)} req/s, median of ${cfg.rounds} rounds (latency in ms${cfg.rateGen !== 'wrk2' ? ', corrected for coordinated omission' : ''})\n`)
    console.log(
      table(
        [
          ['contestant', 'req/s', 'p50 ms', 'p99 ms', 'p99.9 ms', 'p99 x nginx', 'proxy cpu', 'err %'],
          ...running.map((c) => [
            c.name,
            fmt(c.rateMedian.rps),
            fmt(c.rateMedian.p50, 2),
            fmt(c.rateMedian.p99, 2),
            fmt(c.rateMedian.p999, 2),
            fmt(c.rateMedian.p99VsNginx, 2),
            fmt(c.rateMedian.proxyCpu, 0, '%'),
            fmt(c.rateMedian.errorRate * 100, 3),
          ]),
        ],
        (i) => i !== 0,
      ),
    )
    const short = running.filter((c) => c.rateMedian.rps < 0.95 * target)
    if (short.length) {
      console.log(
        `(below the offered rate: ${short.map((c) => `${c.name} ${fmt(c.rateMedian.rps)}`).join(', ')}: that contestant ` +
          `or the load generator could not keep up, so its latencies are not at the same rate)`,
      )
    }
  }

  // A Tether that moved users or retried requests during the run (an upstream marked down or
  // ejected, under load or by the freezing) measured that work too: say so.
  for (const c of running) {
    if (c.info?.adminPort == null) continue
    c.moves = await tetherMoves(c.info.adminPort)
    if (c.moves !== null && (c.moves.moved > 0 || c.moves.retries > 0)) {
      const by = Object.entries(c.moves.moves).map(([k, n]) => `${k} ${n}`).join(', ')
      console.log(`warning: ${c.name} moved ${c.moves.moved} users (${by || 'none'}) and retried ${c.moves.retries} requests during the run: an upstream was marked down or ejected, so its figures include failover work`)
      // why: Tether logs an upstream lost to failures at warn (the bench's log level), with its reason
      const lost = (c.rec?.output ?? '').split('\n').filter((l) => l.includes('"upstream health changed"'))
      for (const line of lost.slice(-6)) console.log(`  ${c.name}: ${line}`)
    }
  }

  // Summary line.
  const parts = []
  const focus = by.tether ? 'tether' : null
  if (focus) {
    for (const other of ['tether-base', 'direct', 'http-proxy', 'undici', 'nginx', 'haproxy']) {
      const x = ratio(focus, other)
      if (x != null) parts.push(`${focus}/${other}=${x.toFixed(2)}`)
    }
  } else if (by['http-proxy'] && by.direct) parts.push(`http-proxy/direct=${ratio('http-proxy', 'direct').toFixed(2)}`)
  if (focus && by[focus].ratio.cpuVsNginx != null) parts.push(`cpu ${focus}/nginx=${by[focus].ratio.cpuVsNginx.toFixed(2)}${nginxBound ? ' (nginx not CPU-bound)' : ''}`)
  if (focus && by[focus].ratio.bestCpuVsNginx != null) parts.push(`best-round cpu ${focus}/nginx=${by[focus].ratio.bestCpuVsNginx.toFixed(2)}`)
  const p99s = running.filter((c) => c.kind === 'proxy').map((c) => `${c.name}=${fmt(c.median.p99, 2)}ms`)
  if (p99s.length) parts.push(`p99 ${p99s.join(' ')}`)
  if (rateRun) {
    const rp = running.filter((c) => c.kind === 'proxy').map((c) => `${c.name}=${fmt(c.rateMedian.p99, 2)}ms`)
    parts.push(`at ${rateRun.offered} req/s p99 ${rp.join(' ')}`)
    if (focus && by.nginx) parts.push(`p99 ${focus}/nginx=${fmt(by[focus].rateMedian.p99VsNginx, 2)}`)
  }
  if (focus && by.nginx && by[focus].ratio.p99VsNginx != null) parts.push(`closed-loop p99 ${focus}/nginx=${fmt(by[focus].ratio.p99VsNginx, 2)}`)
  if (MODE !== 'http') parts.unshift(MODE === 'h2' ? '[h2 over TLS]' : '[HTTPS/1.1]')
  const summary = parts.join(' ')

  // Failure conditions: any measured window above the error threshold, or no requests at all.
  const failures = []
  for (const c of running) {
    for (const x of [...c.rounds, ...(c.rateRounds ?? []).map((r) => ({ ...r, round: `${r.round} (fixed rate)` }))]) {
      if (x.requests === 0) failures.push(`${c.name} round ${x.round}: no successful requests`)
      else if (x.errorRate > ERROR_THRESHOLD) {
        failures.push(
          `${c.name} round ${x.round}: ${(x.errorRate * 100).toFixed(3)}% bad ` +
            `(errors ${x.errors}, timeouts ${x.timeouts}, non2xx ${x.non2xx} of ${x.requests})`,
        )
      }
    }
  }

  const totalSeconds = round((Date.now() - t0) / 1000, 1)
  const startedAt = new Date(t0).toISOString()
  const result = {
    bench: 'proxy',
    startedAt,
    totalSeconds,
    config: {
      ...cfg,
      pipelining: 1,
      cookie: COOKIE,
      errorThreshold: ERROR_THRESHOLD,
      loadgen: describeLoadgen(cfg),
      tetherWorkers: TETHER_WORKERS ? cfg.workers : 1,
    },
    rateRun,
    host: {
      node: process.version,
      platform: `${os.platform()} ${os.release()}`,
      cpus: os.cpus().length,
      cpuModel: os.cpus()[0]?.model,
      clockTicks: CLK_TCK,
    },
    upstreams: upstreams.map(({ id, url, pid }) => ({ id, url, pid })),
    contestants: Object.fromEntries(
      running.map((c) => [
        c.name,
        {
          port: c.port,
          pid: c.rec?.pid ?? null,
          info: c.info,
          median: c.median,
          bestUsPerReq: c.bestUsPerReq,
          ratio: c.ratio,
          rounds: c.rounds,
          ...(c.rateRounds ? { rateMedian: c.rateMedian, rateRounds: c.rateRounds } : {}),
          ...(c.moves !== undefined ? { moves: c.moves } : {}),
        },
      ]),
    ),
    skipped,
    summary,
    failures,
    ok: failures.length === 0,
  }
  const outDir = path.join(benchDir, 'results')
  mkdirSync(outDir, { recursive: true })
  const outFile = path.join(outDir, `proxy-${startedAt.replace(/:/g, '-')}.json`)
  writeFileSync(outFile, JSON.stringify(result, null, 2) + '\n')

  console.log(`\nresults: ${path.relative(process.cwd(), outFile)}`)
  console.log(`total run time: ${totalSeconds}s`)
  console.log(summary)
  if (failures.length) console.error(`\nFAILED: error rate above ${ERROR_THRESHOLD * 100}%:\n  ${failures.join('\n  ')}`)
  await shutdown(failures.length ? 1 : 0)
}

main().catch((err) => shutdown(1, `bench failed: ${err?.message ?? err}`))
