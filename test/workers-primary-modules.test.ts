// The primary of `workers` > 1 serves no traffic and keeps no metrics registry of its own: it
// never loads prom-client (with @opentelemetry/api, which prom-client requires: about 12 MB of
// RSS in a bare node process, counted once more in the primary at every worker count; issue 14's
// memory target, docs/workers.md, Memory). Its workers do. And the exposition's content type the
// primary writes is prom-client's own.
import t from 'tap'
import { Registry } from 'prom-client'
import { loadedPackages } from './fixtures/loaded-packages.js'
import { METRICS_CONTENT_TYPE } from '../src/observability/metrics-wire.js'

t.test("the combined exposition's content type is prom-client's", async (t) => {
  t.equal(METRICS_CONTENT_TYPE, Registry.PROMETHEUS_CONTENT_TYPE)
})

t.test('a primary with two serving workers never loads prom-client; the workers do', async (t) => {
  const { loaded, primary: pid, workers } = await loadedPackages(t, 4, async (adminPort) => {
    // the combined /metrics: the primary sums its workers' snapshots (still without prom-client)
    const metrics = await fetch(`http://127.0.0.1:${adminPort}/metrics`)
    t.equal(metrics.status, 200, '/metrics answered by the primary')
    t.equal(metrics.headers.get('content-type'), Registry.PROMETHEUS_CONTENT_TYPE, "with prom-client's content type")
    t.match(await metrics.text(), /^tether_http_requests_total\{[^}]*\} 4$/m, 'the requests summed over the workers')
  })
  const primary = loaded.get(pid)
  t.ok(primary !== undefined, 'the primary wrote what it loaded')
  t.ok(primary?.some((f) => f.includes('/node_modules/pino/')), 'the primary loaded pino (the preload sees its packages)')
  t.same(primary?.filter((f) => /\/node_modules\/(prom-client|@opentelemetry)\//.test(f)), [], 'the primary: no prom-client, no @opentelemetry/api')
  for (const w of workers) t.ok(loaded.get(w)?.some((f) => f.includes('/node_modules/prom-client/')), `worker ${w} loaded prom-client`)
})
