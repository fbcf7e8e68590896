// GET /upstreams says which kind of ejection an upstream is under and what ends it: one that
// refused connections (nothing listens) is back after `healthy_threshold` passed active checks
// (`ends: probes`), one that answered 503s runs its time (`ends: time`). Real upstreams on
// 127.0.0.1 ejected through real requests: one on a closed port, one answering 503; one
// Tether in process, then a real primary with `workers: 2` (whose /upstreams is its leading
// worker's rows, the ejection possibly found by the other worker and told over the primary).
import t, { type Test } from 'tap'
import { freePorts } from './fixtures/ports.js'
import { proxyFor, request, startUpstream, type Upstream } from './fixtures/upstream.js'
import { waitFor } from './fixtures/wait.js'
import { tempFile } from './fixtures/cli.js'
import { request as newConnection, startPrimary, workersYaml } from './fixtures/primary-process.js'

const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/
const EJECTION = 60_000

type Row = Record<string, unknown> & { id: string; state: string; ejected_until: string | null; ejection: unknown }

async function rows(adminUrl: string): Promise<Map<string, Row>> {
  const list = JSON.parse((await request(`${adminUrl}/upstreams`)).body) as Row[]
  return new Map(list.map((r) => [r.id, r]))
}

/** `ok` (answers), `refusing` (a closed port: nothing listens) and `failing` (answers 503). */
async function upstreams(t: Test): Promise<{ ok: Upstream; refusing: { id: string; url: string }; failing: Upstream }> {
  const ok = await startUpstream('ok')
  const failing = await startUpstream('failing', (_req, res) => { res.statusCode = 503; res.end('busy\n') })
  t.teardown(async () => { await ok.close(); await failing.close() })
  const [closed] = await freePorts(1) // free now, and nothing listens there
  return { ok, refusing: { id: 'refusing', url: `http://127.0.0.1:${closed!}` }, failing }
}

function checkRows(t: Test, got: Map<string, Row>, healthyThreshold: number): void {
  const refusing = got.get('refusing')!
  t.match(refusing, { state: 'ejected', ejected_until: ISO }, 'the refusing upstream is ejected')
  t.same(refusing.ejection, { reason: 'refused', until: refusing.ejected_until, ends: 'probes', passes_left: healthyThreshold },
    'for refused connections: back after healthy_threshold passed probes (or its time)')
  const failing = got.get('failing')!
  t.match(failing, { state: 'ejected', ejected_until: ISO }, 'the 503 upstream is ejected')
  t.same(failing.ejection, { reason: '5xx', until: failing.ejected_until, ends: 'time', passes_left: null },
    'for 5xx answers: it runs its time, whatever the probes say')
  t.ok(Date.parse(failing.ejected_until!) > Date.now(), 'until a time to come')
  t.match(got.get('ok'), { state: 'healthy', ejected_until: null, ejection: null }, 'an upstream not ejected: null')
}

t.test('one process: /upstreams names the kind of each ejection and what ends it', async (t) => {
  const { ok, refusing, failing } = await upstreams(t)
  const tether = await proxyFor(t, [ok, refusing, failing], {
    health: {
      // probes run (they end a refusal's ejection), but too seldom to mark the closed port
      // unhealthy before a request is refused there (5 failures, a quarter interval apart)
      active: { enabled: true, interval: 30_000, timeout: 500, healthy_threshold: 2, unhealthy_threshold: 5 },
      passive: { consecutive_failures: 2, count_5xx: true, base_ejection: EJECTION, max_ejection: 5 * EJECTION, max_ejection_percent: 100 },
    },
  })
  // new users (no cookie) land all over the hash ring: until both are ejected
  await waitFor(async () => {
    await request(tether.url)
    return tether.health.state('refusing') === 'ejected' && tether.health.state('failing') === 'ejected'
  }, 15_000, 'both the refusing and the 503 upstream to be ejected', 0)
  checkRows(t, await rows(tether.adminUrl), 2)
})

t.test('with workers: 2, the primary\'s /upstreams names them alike, whichever worker found them', async (t) => {
  const { ok, refusing, failing } = await upstreams(t)
  const [port, adminPort] = await freePorts(2)
  await startPrimary(t, tempFile('health-ejection-kind.yaml', workersYaml({
    listen: port!, adminPort: adminPort!, workers: 2,
    upstreams: [{ id: 'ok', url: ok.url }, refusing, { id: 'failing', url: failing.url }],
    extra: [
      'health:',
      '  active: { interval: 30s, timeout: 500ms, healthy_threshold: 3, unhealthy_threshold: 5 }',
      '  passive: { consecutive_failures: 2, count_5xx: true, base_ejection: 60s, max_ejection: 5m, max_ejection_percent: 100 }',
    ],
  })))
  const admin = `http://127.0.0.1:${adminPort!}`
  await waitFor(async () => {
    await newConnection(`http://127.0.0.1:${port!}/`, null) // a new connection each: either worker
    const got = await rows(admin)
    return got.get('refusing')?.state === 'ejected' && got.get('failing')?.state === 'ejected'
  }, 20_000, 'both the refusing and the 503 upstream to be ejected', 0)
  checkRows(t, await rows(admin), 3)
})
