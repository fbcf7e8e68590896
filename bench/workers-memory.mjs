#!/usr/bin/env node
// Memory of `workers: 2` holding N affinity entries (issue 14: 1,000,000 entries in <= 400 MB
// RSS over all processes). Starts an upstream, a Tether primary with two workers (header key,
// no checkpoints, no access log) on free loopback ports and sends N requests each with a new
// user over 20 keep-alive connections (the cluster spreads the connections over both workers;
// every pin reaches both), then prints each process's RSS split into anonymous memory (V8 heap,
// malloc, off-heap columns) and file-backed pages (the node binary's code, shared between the
// processes but counted in each one's RSS), the sum of PSS (shared pages counted once), the
// workers' V8 heap by space and their external memory (summed over workers by /metrics), and
// the table size; then the same again after BENCH_SETTLE seconds (10) without traffic, when V8
// has shrunk what the load left (its memory reducer); and the CPU time each process used during
// the load. The primary gets the image's node flags
// (SERVING_V8_FLAGS), its workers their own; NODE_OPTIONS in the environment reaches every
// Tether process.
// Usage: npm run build && node bench/workers-memory.mjs [N=1000000]   (WORKERS=n: other count)
import http from 'node:http'
import { spawn, execFileSync } from 'node:child_process'
import { readFileSync, writeFileSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import autocannon from 'autocannon'
import { freePort } from './lib/procs.mjs'

const N = Number(process.argv[2] ?? 1_000_000)
const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..')
const up = http.createServer((q, s) => s.end('ok')).listen(0, '127.0.0.1')
await new Promise((r) => up.once('listening', r))
const [port, adminPort] = [await freePort(), await freePort()]
const dir = mkdtempSync(path.join(tmpdir(), 'tether-mem-'))
const file = path.join(dir, 'proxy.yaml')
writeFileSync(file, [
  `listen: { host: 127.0.0.1, port: ${port} }`, `admin: { listen: { host: 127.0.0.1, port: ${adminPort} } }`, `workers: ${process.env.WORKERS ?? 2}`,
  'log: { level: warn, access: false }', 'state: { store: none }',
  `affinity: { key: header, header: { name: X-User }, max_entries: ${N + 1000}, idle_timeout: 3h }`,
  `upstreams: [{ id: app-0, url: "http://127.0.0.1:${up.address().port}" }, { id: app-1, url: "http://127.0.0.1:${up.address().port}" }]`, '',
].join('\n'))
// the primary starts as the Docker image starts it (node with SERVING_V8_FLAGS)
// and its environment (SERVING_ENV: MALLOC_ARENA_MAX=1), unless this one sets it
const { SERVING_V8_FLAGS, SERVING_ENV = {} } = await import(path.join(root, 'dist/workers/worker-flags.js'))
const proc = spawn(process.execPath, [...SERVING_V8_FLAGS, path.join(root, 'dist/cli.js'), '--config', file], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...SERVING_ENV, ...process.env } })
const deadline = Date.now() + 30_000
for (;;) {
  try { if ((await fetch(`http://127.0.0.1:${adminPort}/readyz`)).ok) break } catch {}
  if (Date.now() > deadline || proc.exitCode !== null) throw new Error('tether did not become ready')
  await new Promise((r) => setTimeout(r, 100))
}
/** Memory of one process (MB) from /proc/<pid>/smaps_rollup. */
const memory = (pid) => {
  const text = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8')
  const kb = (name) => Number(new RegExp(`^${name}:\\s+(\\d+)`, 'm').exec(text)[1]) / 1024
  return { rss: kb('Rss'), anon: kb('Anonymous'), file: kb('Rss') - kb('Anonymous'), pss: kb('Pss') }
}
const children = () => {
  try { return execFileSync('ps', ['-o', 'pid=', '--ppid', String(proc.pid)]).toString().trim().split(/\s+/).map(Number) } catch { return [] } // workers: 1 has none
}
/** CPU seconds (user + system) a process has used, from /proc/<pid>/stat (clock ticks of 10 ms). */
const cpu = (pid) => {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /, '').split(' ')
  return (Number(fields[11]) + Number(fields[12])) / 100
}
const idle = [proc.pid, ...children()].map(memory)
const cpuBefore = [proc.pid, ...children()].map(cpu)
let n = 0
const started = Date.now()
const result = await autocannon({
  url: `http://127.0.0.1:${port}/`, connections: 20, amount: N,
  requests: [{ setupRequest: (req) => ({ ...req, headers: { 'x-user': `user-${(n++).toString(36).padStart(8, '0')}-${'x'.repeat(16)}` } }) }],
})
const mb = (x) => x.toFixed(0)
console.log(`# workers memory: ${N} users (${result.non2xx + result.errors} failed: ${result.non2xx} non-2xx, ${result.errors} errors of which ${result.timeouts} timeouts) in ${((Date.now() - started) / 1000).toFixed(0)} s`)
const used = [proc.pid, ...children()].map((pid, i) => cpu(pid) - (cpuBefore[i] ?? 0))
console.log(`# CPU during the load (user + system): primary ${used[0].toFixed(1)} s, workers ${used.slice(1).map((c) => c.toFixed(1)).join(' + ')} s; ${(used.reduce((a, c) => a + c, 0) / N * 1e6).toFixed(0)} us a new user in all (a busy host inflates it)`)
const report = async (when) => {
  const metrics = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text()
  const entries = Number(/^tether_affinity_entries (\d+)/m.exec(metrics)?.[1])
  const gauge = (re) => [...metrics.matchAll(re)].map((m) => [m[1], Number(m[2]) / 2 ** 20])
  const spaces = gauge(/^nodejs_heap_space_size_total_bytes\{space="(\w+)"\} (\d+)/mg).filter(([, v]) => v >= 0.5)
  const external = gauge(/^nodejs_(external_memory)_bytes (\d+)/mg)
  const names = ['primary', ...children().map((_, i) => `worker ${i}`)]
  const parts = [proc.pid, ...children()].map(memory)
  const sum = (k) => parts.reduce((a, p) => a + p[k], 0)
  console.log(`# ${when}: affinity entries per worker ${entries}`)
  for (let i = 0; i < parts.length; i++) {
    const p = parts[i]
    console.log(`#   ${names[i].padEnd(9)} RSS ${mb(p.rss).padStart(4)} MB = anonymous ${mb(p.anon).padStart(4)} + file-backed ${mb(p.file).padStart(3)} (idle before the run: ${idle[i] === undefined ? '?' : mb(idle[i].rss)} MB RSS)`)
  }
  console.log(`#   workers' V8 heap (MB, summed): ${spaces.map(([k, v]) => `${k.replace('_space', '')} ${mb(v)}`).join(', ')}; external (array buffers, key and column bytes) ${mb(external[0]?.[1] ?? NaN)}`)
  console.log(`# RSS primary ${mb(parts[0].rss)} MB, workers ${parts.slice(1).map((p) => mb(p.rss)).join(' + ')} MB, total ${mb(sum('rss'))} MB (target <= 400 MB); PSS total ${mb(sum('pss'))} MB`)
}
await report('right after the load')
await new Promise((r) => setTimeout(r, Number(process.env.BENCH_SETTLE ?? 10) * 1000))
await report(`after ${process.env.BENCH_SETTLE ?? 10} s without traffic`)
proc.kill('SIGTERM')
up.close()
await new Promise((r) => proc.once('exit', r))
rmSync(dir, { recursive: true, force: true })
