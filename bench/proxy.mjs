#!/usr/bin/env node
// Proxy throughput/latency benchmark: direct vs tether vs http-proxy [vs nginx, haproxy].
// Plain ESM, no build step. See bench/README.md for what is measured and how.
//
// Env knobs: BENCH_ROUNDS (3), BENCH_DURATION seconds (5), BENCH_WARMUP seconds (1),
// BENCH_CONNECTIONS (50), BENCH_CONTESTANTS (comma list, default all available),
// BENCH_TETHER_CMD (shell command replacing `node dist/cli.js --config <file>`).
import { mkdirSync, mkdtempSync, writeFileSync, readFileSync, rmSync, existsSync, chmodSync } from 'node:fs'
import { spawnSync } from 'node:child_process'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import autocannon from 'autocannon'
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
} from './lib/procs.mjs'
import { median, round, fmt, table } from './lib/stats.mjs'

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

// Every request carries the same cookie: a valid Tether affinity cookie (a returning user,
// Tether's common case: verify the HMAC, route to the pinned upstream) signed with the bench
// config's secret. nginx and haproxy hash the same value. Without a built dist/, a dummy one.
const BENCH_SECRET = 'bench-secret-0123456789abcdef'
const COOKIE = await benchCookie()
const HEADERS = { cookie: COOKIE }

async function benchCookie() {
  try {
    const { CookieCodec } = await import('../dist/affinity/cookie-codec.js')
    const codec = new CookieCodec({ secrets: [BENCH_SECRET], idleTimeout: 3 * 3_600_000 })
    return `tether=${codec.issue('up-0', 0, Date.now()).value}`
  } catch {
    return 'tether=abc'
  }
}
const UPSTREAM_COUNT = 2
const ERROR_THRESHOLD = 0.001 // 0.1 % of requests

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

const CONTESTANTS = [
  {
    name: 'direct',
    kind: 'direct',
    check: () => null,
    // No process of its own: load goes straight to upstream 0.
    start: async (ctx) => ({ rec: null, port: ctx.upstreams[0].port, info: { target: ctx.upstreams[0].url } }),
  },
  {
    name: 'tether',
    kind: 'proxy',
    check: () => (tetherCommand(), null),
    start: async (ctx) => {
      const port = await freePort()
      const adminPort = await freePort()
      const config = path.join(tmpDir, 'tether.yaml')
      writeFileSync(
        config,
        [
          `listen: { host: 127.0.0.1, port: ${port} }`,
          `admin: { listen: { host: 127.0.0.1, port: ${adminPort} } }`,
          'upstreams:',
          ...ctx.upstreams.map((u) => `  - { id: ${u.id}, url: "${u.url}" }`),
          `affinity: { key: cookie, cookie: { secret: "${BENCH_SECRET}", secure: false } }`,
          'log: { level: warn, access: false }',
          '',
        ].join('\n'),
      )
      const cmd = tetherCommand()
      const env = {
        LOG_LEVEL: 'warn',
        BENCH_TETHER_CONFIG: config,
        BENCH_TETHER_PORT: String(port),
        BENCH_TETHER_ADMIN_PORT: String(adminPort),
        BENCH_UPSTREAMS: ctx.upstreams.map((u) => u.url).join(','),
      }
      let rec
      if (cmd.custom) {
        const line = cmd.custom.replaceAll('{config}', config).replaceAll('{port}', String(port))
        rec = startChild('tether', line, [], { shell: true, env, cwd: repoRoot })
      } else {
        rec = startChild('tether', process.execPath, [cmd.cli, '--config', config], { env, cwd: repoRoot })
      }
      return { rec, port, info: { command: rec.cmdline, config: readFileSync(config, 'utf8'), adminPort } }
    },
  },
  {
    name: 'http-proxy',
    kind: 'proxy',
    check: () => null,
    start: async (ctx) => {
      const port = await freePort()
      const script = path.join(benchDir, 'http-proxy-baseline.mjs')
      const rec = startChild('http-proxy', process.execPath, [script, String(port), ...ctx.upstreams.map((u) => u.url)], {
        cwd: repoRoot,
      })
      return { rec, port, info: { command: rec.cmdline } }
    },
  },
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
      const conf = fill(readFileSync(path.join(benchDir, 'nginx.conf.tmpl'), 'utf8'), { PORT: port, PREFIX: prefix, SERVERS: servers })
      const confPath = path.join(prefix, 'nginx.conf')
      writeFileSync(confPath, conf)
      const version = toolVersion(bin, ['-v'])
      // -e (startup error log) exists since 1.19.5; without it nginx touches its compiled-in log path.
      const m = /nginx\/(\d+)\.(\d+)\.(\d+)/.exec(version ?? '')
      const hasE = !m || Number(m[1]) * 1e6 + Number(m[2]) * 1e3 + Number(m[3]) >= 1019005
      const args = ['-p', prefix + '/', '-c', confPath, ...(hasE ? ['-e', 'stderr'] : [])]
      const rec = startChild('nginx', bin, args)
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
      const cfg = fill(readFileSync(path.join(benchDir, 'haproxy.cfg.tmpl'), 'utf8'), { PORT: port, PREFIX: prefix, SERVERS: servers })
      const cfgPath = path.join(prefix, 'haproxy.cfg')
      writeFileSync(cfgPath, cfg)
      const rec = startChild('haproxy', bin, ['-db', '-f', cfgPath])
      return { rec, port, info: { command: rec.cmdline, version: toolVersion(bin, ['-v']) } }
    },
  },
]

function fill(tmpl, vars) {
  return tmpl.replace(/\{\{(\w+)\}\}/g, (all, k) => {
    if (!(k in vars)) throw new Error(`template placeholder ${all} has no value`)
    return String(vars[k])
  })
}

// ---------------------------------------------------------------------------------------

async function loadRun(port, duration, connections) {
  return autocannon({
    url: `http://127.0.0.1:${port}/`,
    connections,
    pipelining: 1,
    duration,
    headers: HEADERS,
    timeout: 10,
  })
}

/** One measured window: CPU snapshots of every child tree around an autocannon run. */
async function measure(c, ctx, cfg) {
  const pids = [...(c.rec ? [c.rec.pid] : []), ...ctx.upstreams.map((u) => u.pid)]
  const before = cpuTicks(pids)
  const h0 = hostTicks()
  const lg0 = process.cpuUsage()
  const w0 = process.hrtime.bigint()
  const r = await loadRun(c.port, cfg.duration, cfg.connections)
  const wallS = Number(process.hrtime.bigint() - w0) / 1e9
  const lg = process.cpuUsage(lg0)
  const after = cpuTicks(pids)
  const h1 = hostTicks()
  const pct = (pid) => ((after.get(pid) - before.get(pid)) / CLK_TCK / wallS) * 100
  const upstreamCpu = Object.fromEntries(ctx.upstreams.map((u) => [u.id, round(pct(u.pid), 1)]))
  const ours = (c.rec ? pct(c.rec.pid) : 0) + ctx.upstreams.reduce((a, u) => a + pct(u.pid), 0)
  const loadgen = ((lg.user + lg.system) / 1e6 / wallS) * 100
  const host = ((h1.busy - h0.busy) / CLK_TCK / wallS) * 100
  const total = r.requests.total
  const bad = r.errors + r.timeouts + r.non2xx
  return {
    rps: round(total / r.duration, 0),
    p50: r.latency.p50,
    p99: r.latency.p99,
    avgLatency: r.latency.average,
    requests: total,
    durationS: r.duration,
    errors: r.errors,
    timeouts: r.timeouts,
    non2xx: r.non2xx,
    errorRate: total + r.errors > 0 ? bad / (total + r.errors) : 1,
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
    connections: envNum('BENCH_CONNECTIONS', 50, { min: 1, int: true }),
  }
  if (!procAvailable()) throw new Error('/proc is required for CPU accounting (Linux only)')
  const wanted = process.env.BENCH_CONTESTANTS
    ? process.env.BENCH_CONTESTANTS.split(',').map((s) => s.trim()).filter(Boolean)
    : null
  if (wanted) {
    const unknown = wanted.filter((w) => !CONTESTANTS.some((c) => c.name === w))
    if (unknown.length) throw new Error(`BENCH_CONTESTANTS: unknown ${unknown.join(', ')} (known: ${CONTESTANTS.map((c) => c.name).join(', ')})`)
  }

  console.log(
    `tether proxy bench: ${cfg.rounds} rounds x ${cfg.duration}s (+${cfg.warmup}s warm-up), ` +
      `${cfg.connections} connections, pipelining 1, cookie "${COOKIE}", autocannon in-process; ` +
      `${os.cpus().length} CPUs, node ${process.version}`,
  )

  const skipped = []
  const selected = []
  for (const c of CONTESTANTS) {
    if (wanted && !wanted.includes(c.name)) continue
    const reason = c.check() // throws for a hard failure (e.g. dist/cli.js missing)
    if (reason) {
      skipped.push({ name: c.name, reason })
      console.log(`skipping ${c.name}: ${reason}`)
    } else selected.push(c)
  }

  tmpDir = mkdtempSync(path.join(os.tmpdir(), 'tether-bench-'))
  chmodSync(tmpDir, 0o755) // nginx workers may run as an unprivileged user when we are root

  // Upstreams: each its own process on an ephemeral port.
  const upstreams = []
  for (let i = 0; i < UPSTREAM_COUNT; i++) {
    const id = `up-${i}`
    const rec = startChild(id, process.execPath, [path.join(benchDir, 'lib', 'upstream-server.mjs'), id])
    const { port } = await waitForJsonLine(rec)
    await waitHttpReady(rec, port)
    upstreams.push({ id, port, pid: rec.pid, url: `http://127.0.0.1:${port}`, rec })
  }
  const ctx = { upstreams }
  console.log(`upstreams: ${upstreams.map((u) => `${u.id}=${u.url} (pid ${u.pid})`).join(', ')}`)

  // Contestants, started once and kept running across rounds.
  const running = []
  for (const c of selected) {
    const { rec, port, info } = await c.start(ctx)
    if (rec) await waitHttpReady(rec, port, HEADERS)
    running.push({ name: c.name, kind: c.kind, rec, port, info, rounds: [] })
    console.log(`ready: ${c.name} on 127.0.0.1:${port}${rec ? ` (pid ${rec.pid})` : ''}`)
  }

  // Interleaved rounds: every contestant once per round, same order each round.
  for (let r = 1; r <= cfg.rounds; r++) {
    for (const c of running) {
      if (c.rec?.exited) throw new Error(`${c.name} died during the run (${JSON.stringify(c.rec.exited)}):\n${c.rec.output}`)
      if (cfg.warmup > 0) await loadRun(c.port, cfg.warmup, cfg.connections)
      const m = await measure(c, ctx, cfg)
      c.rounds.push({ round: r, ...m })
      console.log(
        `round ${r}/${cfg.rounds} ${c.name.padEnd(10)} ${fmt(m.rps, 0).padStart(7)} req/s  ` +
          `p50 ${m.p50}ms p99 ${m.p99}ms  cpu proxy ${fmt(m.cpu.proxy, 0, '%')} ` +
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
  }
  const by = Object.fromEntries(running.map((c) => [c.name, c]))
  const ratio = (a, b) => (by[a] && by[b] && by[b].median.rps ? round(by[a].median.rps / by[b].median.rps, 2) : null)
  for (const c of running) c.ratio = { vsDirect: ratio(c.name, 'direct'), vsHttpProxy: ratio(c.name, 'http-proxy') }

  const rows = [
    ['contestant', 'req/s', 'rounds min..max', 'p50 ms', 'p99 ms', 'x direct', 'x http-proxy', 'proxy cpu', 'upstr cpu', 'loadgen cpu', 'other cpu', 'err %'],
    ...running.map((c) => [
      c.name,
      fmt(c.median.rps),
      `${fmt(c.rpsRange[0])}..${fmt(c.rpsRange[1])}`,
      fmt(c.median.p50),
      fmt(c.median.p99),
      fmt(c.ratio.vsDirect, 2),
      fmt(c.ratio.vsHttpProxy, 2),
      fmt(c.median.cpu.proxy, 0, '%'),
      fmt(c.median.cpu.upstreamsTotal, 0, '%'),
      fmt(c.median.cpu.loadgen, 0, '%'),
      fmt(c.median.cpu.other, 0, '%'),
      fmt(c.median.errorRate * 100, 3),
    ]),
  ]
  console.log(
    `\nmedian of ${cfg.rounds} rounds (cpu = % of one core over the measured window; upstr = both upstreams summed;\n` +
      `other = host-wide busy CPU not charged to these processes: other tenants or kernel work; high = noisy run)\n`,
  )
  console.log(table(rows, (i) => i !== 0))
  for (const s of skipped) console.log(`(${s.name} skipped: ${s.reason})`)

  // Summary line.
  const parts = []
  const focus = by.tether ? 'tether' : null
  if (focus) {
    for (const other of ['direct', 'http-proxy', 'nginx', 'haproxy']) {
      const x = ratio(focus, other)
      if (x != null) parts.push(`${focus}/${other}=${x.toFixed(2)}`)
    }
  } else if (by['http-proxy'] && by.direct) parts.push(`http-proxy/direct=${ratio('http-proxy', 'direct').toFixed(2)}`)
  const p99s = running.filter((c) => c.kind === 'proxy').map((c) => `${c.name}=${c.median.p99}ms`)
  if (p99s.length) parts.push(`p99 ${p99s.join(' ')}`)
  const summary = parts.join(' ')

  // Failure conditions: any measured window above the error threshold, or no requests at all.
  const failures = []
  for (const c of running) {
    for (const x of c.rounds) {
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
    config: { ...cfg, pipelining: 1, cookie: COOKIE, errorThreshold: ERROR_THRESHOLD, loadgen: 'autocannon in-process' },
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
        { port: c.port, pid: c.rec?.pid ?? null, info: c.info, median: c.median, ratio: c.ratio, rounds: c.rounds },
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
