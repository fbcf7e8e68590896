#!/usr/bin/env node
// /metrics with many upstreams: starts Tether (WORKERS=2 by default) with N upstreams (10,000)
// that all point at one real loopback server (so every upstream is healthy and gets traffic),
// sends REQUESTS requests (N * 2 by default) each with a new user so placement spreads them over
// every upstream in every worker (each upstream then has request, duration-histogram and state
// series in each worker), then scrapes /metrics SCRAPES times (5) and prints each scrape's
// time, bytes and the primary's longest event-loop block during it (perf_hooks, from
// bench/lib/loop-block.mjs preloaded into the primary) and CPU time (/proc: on a loaded host
// the times stretch, the CPU time does not). PROF=<dir>: the primary and workers
// write --cpu-prof profiles there (summarise with bench/profile-summary.mjs).
// Usage: npm run build && node bench/metrics-scrape.mjs [N=10000]   (WORKERS=1: one process)
import http from 'node:http'
import { spawn } from 'node:child_process'
import { readFileSync, writeFileSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import autocannon from 'autocannon'
import { freePort, CLK_TCK } from './lib/procs.mjs'

const N = Number(process.argv[2] ?? 10_000)
const WORKERS = Number(process.env.WORKERS ?? 2)
const REQUESTS = Number(process.env.REQUESTS ?? N * 2)
const SCRAPES = Number(process.env.SCRAPES ?? 5)
const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..')
const up = http.createServer((q, s) => s.end('ok')).listen(0, '127.0.0.1')
await new Promise((r) => up.once('listening', r))
const [port, adminPort] = [await freePort(), await freePort()]
const dir = mkdtempSync(path.join(tmpdir(), 'tether-scrape-'))
const file = path.join(dir, 'proxy.yaml')
const url = `http://127.0.0.1:${up.address().port}`
writeFileSync(file, [
  `listen: { host: 127.0.0.1, port: ${port} }`, `admin: { listen: { host: 127.0.0.1, port: ${adminPort} } }`, `workers: ${WORKERS}`,
  'log: { level: warn, access: false }', 'state: { store: none }', 'health: { active: { enabled: false } }',
  'affinity: { key: header, header: { name: X-User } }',
  'upstreams:', ...Array.from({ length: N }, (_, i) => `  - { id: app-${i}, url: "${url}" }`), '',
].join('\n'))
const prof = process.env.PROF ? ['--cpu-prof', `--cpu-prof-dir=${path.resolve(process.env.PROF)}`] : []
const proc = spawn(process.execPath, [...prof, '--import', path.join(root, 'bench/lib/loop-block.mjs'), path.join(root, 'dist/cli.js'), '--config', file], {
  stdio: ['ignore', 'inherit', 'inherit'], env: { ...process.env, LOOP_BLOCK_DIR: dir },
})
const stop = () => { try { proc.kill('SIGTERM') } catch {} rmSync(dir, { recursive: true, force: true }) }
process.on('exit', stop)
const deadline = Date.now() + 60_000
for (;;) {
  try { if ((await fetch(`http://127.0.0.1:${adminPort}/readyz`)).ok) break } catch {}
  if (Date.now() > deadline || proc.exitCode !== null) throw new Error('tether did not become ready')
  await new Promise((r) => setTimeout(r, 100))
}
let n = 0
const load = await autocannon({
  url: `http://127.0.0.1:${port}/`, connections: 20, amount: REQUESTS,
  requests: [{ setupRequest: (req) => ({ ...req, headers: { 'x-user': `user-${n++}` } }) }],
})
/** The primary's longest event-loop block (ms) since the last call. */
const block = async () => {
  proc.kill('SIGUSR2')
  const f = path.join(dir, String(proc.pid))
  for (const until = Date.now() + 5_000; Date.now() < until; await new Promise((r) => setTimeout(r, 20))) {
    try { const v = Number(readFileSync(f, 'utf8')); rmSync(f); return v } catch {}
  }
  return NaN
}
/** The primary's CPU time so far (ms, user + system), from /proc. */
const cpu = () => {
  const f = readFileSync(`/proc/${proc.pid}/stat`, 'utf8').slice(readFileSync(`/proc/${proc.pid}/stat`, 'utf8').lastIndexOf(')') + 2).split(' ')
  return (Number(f[11]) + Number(f[12])) * 1000 / CLK_TCK
}
console.log(`# /metrics: ${N} upstreams, workers ${WORKERS}, ${REQUESTS} requests (${load.non2xx + load.errors} failed)`)
const times = []
for (let i = 0; i < SCRAPES; i++) {
  await block()
  const c = cpu()
  const t = performance.now()
  const body = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text()
  const ms = performance.now() - t
  const used = cpu() - c
  const blocked = await block()
  times.push(ms)
  console.log(`#   scrape ${i + 1}: ${ms.toFixed(0)} ms, ${(Buffer.byteLength(body) / 2 ** 20).toFixed(1)} MB, ${body.split('\n').length} lines; primary CPU ${used.toFixed(0)} ms, its longest event-loop block ${blocked.toFixed(0)} ms`)
}
times.sort((a, b) => a - b)
console.log(`# median scrape ${times[Math.floor(times.length / 2)].toFixed(0)} ms`)
proc.kill('SIGTERM')
await new Promise((r) => proc.once('exit', r))
up.close()
rmSync(dir, { recursive: true, force: true })
