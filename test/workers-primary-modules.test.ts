// The primary of `workers` > 1 serves no traffic and keeps no metrics registry of its own: it
// never loads prom-client (with @opentelemetry/api, which prom-client requires: about 12 MB of
// RSS in a bare node process, counted once more in the primary at every worker count; issue 14's
// memory target, docs/workers.md, Memory). Its workers do. And the exposition's content type the
// primary writes is prom-client's own.
import t from 'tap'
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Registry } from 'prom-client'
import { ROOT, tempFile } from './fixtures/cli.js'
import { request, startPrimary, twoWorkersYaml, workerPids } from './fixtures/primary-process.js'
import { startChildUpstream } from './fixtures/child-upstream.js'
import { freePorts } from './fixtures/ports.js'
import { waitFor } from './fixtures/wait.js'
import { METRICS_CONTENT_TYPE } from '../src/observability/metrics-wire.js'

t.test("the combined exposition's content type is prom-client's", async (t) => {
  t.equal(METRICS_CONTENT_TYPE, Registry.PROMETHEUS_CONTENT_TYPE)
})

t.test('a primary with two serving workers never loads prom-client; the workers do', async (t) => {
  const app = await startChildUpstream('app-0')
  t.teardown(() => app.kill())
  const [port, adminPort] = await freePorts(2)
  const dir = mkdtempSync(join(tmpdir(), 'tether-modules-'))
  const file = tempFile('proxy.yaml', twoWorkersYaml(port!, adminPort!, app.url))
  const preload = join(ROOT, 'test', 'fixtures', 'loaded-packages.cjs')
  const { proc } = await startPrimary(t, file, { NODE_OPTIONS: `--require=${preload}`, TETHER_LOADED_DIR: dir })
  await waitFor(() => workerPids(proc).length === 2, 60_000, 'two workers')
  const workers = workerPids(proc)
  for (let i = 0; i < 4; i++) t.equal((await request(`http://127.0.0.1:${port}/`, null)).status, 200, `request ${i} forwarded`)
  // the combined /metrics: the primary sums its workers' snapshots (still without prom-client)
  const metrics = await fetch(`http://127.0.0.1:${adminPort}/metrics`)
  t.equal(metrics.status, 200, '/metrics answered by the primary')
  t.equal(metrics.headers.get('content-type'), Registry.PROMETHEUS_CONTENT_TYPE, "with prom-client's content type")
  t.match(await metrics.text(), /^tether_http_requests_total\{[^}]*\} 4$/m, 'the requests summed over the workers')
  proc.kill('SIGTERM')
  await waitFor(() => proc.exitCode !== null, 60_000, 'the primary to stop')
  const loaded = new Map(readdirSync(dir).map((f) => [Number(f.replace('.json', '')), JSON.parse(readFileSync(join(dir, f), 'utf8')) as string[]]))
  const primary = loaded.get(proc.pid!)
  t.ok(primary !== undefined, 'the primary wrote what it loaded')
  t.ok(primary?.some((f) => f.includes('/node_modules/pino/')), 'the primary loaded pino (the preload sees its packages)')
  t.same(primary?.filter((f) => /\/node_modules\/(prom-client|@opentelemetry)\//.test(f)), [], 'the primary: no prom-client, no @opentelemetry/api')
  for (const pid of workers) t.ok(loaded.get(pid)?.some((f) => f.includes('/node_modules/prom-client/')), `worker ${pid} loaded prom-client`)
})
