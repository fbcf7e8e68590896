#!/usr/bin/env node
// Memory of `workers: 2` holding N affinity entries (issue 14: 1,000,000 entries in <= 400 MB
// RSS over all processes). Starts an upstream, a Tether primary with two workers (header key,
// no checkpoints, no access log) and sends N requests each with a new user over 20 keep-alive
// connections (the cluster spreads the connections over both workers; every pin reaches both),
// then prints the RSS of the primary and of each worker, and the table size from /metrics.
// Usage: npm run build && node bench/workers-memory.mjs [N=1000000]
import http from 'node:http'
import { spawn } from 'node:child_process'
import { readFileSync, writeFileSync, mkdtempSync } from 'node:fs'
import { execFileSync } from 'node:child_process'
import { tmpdir } from 'node:os'
import path from 'node:path'
import autocannon from 'autocannon'

const N = Number(process.argv[2] ?? 1_000_000)
const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..')
const up = http.createServer((q, s) => s.end('ok')).listen(0, '127.0.0.1')
await new Promise((r) => up.once('listening', r))
const dir = mkdtempSync(path.join(tmpdir(), 'tether-mem-'))
const file = path.join(dir, 'proxy.yaml')
writeFileSync(file, [
  'listen: { host: 127.0.0.1, port: 19300 }', 'admin: { listen: { host: 127.0.0.1, port: 19309 } }', `workers: ${process.env.WORKERS ?? 2}`,
  'log: { level: warn, access: false }', 'state: { store: none }',
  `affinity: { key: header, header: { name: X-User }, max_entries: ${N + 1000}, idle_timeout: 3h }`,
  `upstreams: [{ id: app-0, url: "http://127.0.0.1:${up.address().port}" }, { id: app-1, url: "http://127.0.0.1:${up.address().port}" }]`, '',
].join('\n'))
const proc = spawn(process.execPath, [path.join(root, 'dist/cli.js'), '--config', file], { stdio: ['ignore', 'pipe', 'inherit'] })
for (let i = 0; i < 200; i++) {
  try { if ((await fetch('http://127.0.0.1:19309/readyz')).ok) break } catch {}
  await new Promise((r) => setTimeout(r, 100))
}
let n = 0
const started = Date.now()
const result = await autocannon({
  url: 'http://127.0.0.1:19300/', connections: 20, amount: N,
  requests: [{ setupRequest: (req) => ({ ...req, headers: { 'x-user': `user-${(n++).toString(36).padStart(8, '0')}-${'x'.repeat(16)}` } }) }],
})
const rss = (pid) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]) / 1024
let children = []
try { children = execFileSync('ps', ['-o', 'pid=', '--ppid', String(proc.pid)]).toString().trim().split(/\s+/).map(Number) } catch {} // workers: 1 has none
const metrics = await (await fetch('http://127.0.0.1:19309/metrics')).text()
const entries = Number(/^tether_affinity_entries (\d+)/m.exec(metrics)?.[1])
const parts = [rss(proc.pid), ...children.map(rss)]
const total = parts.reduce((a, b) => a + b, 0)
console.log(`# workers memory: ${N} users (${result.non2xx + result.errors} failed) in ${((Date.now() - started) / 1000).toFixed(0)} s; affinity entries per worker ${entries}; RSS primary ${parts[0].toFixed(0)} MB, workers ${parts.slice(1).map((m) => m.toFixed(0)).join(' + ')} MB, total ${total.toFixed(0)} MB (target <= 400 MB)`)
proc.kill('SIGTERM')
up.close()
await new Promise((r) => proc.once('exit', r))
