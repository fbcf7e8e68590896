// Passive health never takes out the last upstream that still serves: with every other upstream
// already out (failing its active checks, disabled), a run of 5xx or timeouts on the one left
// does not eject it (its users would get Tether's 503 instead of its answers, most of them
// fine), as a global outage must not eject everything (`max_ejection_percent` below 100; at 100
// an operator allows every upstream out). A refused connection still ejects it: nothing listens
// there, and the ejection marks it down so its users are rehydrated when it is back. End to end
// through Tether with real upstreams on loopback; ejections on a FakeClock.
import t, { type Test } from 'tap'
import { proxyFor, startUpstream, type Handler, type Upstream } from './fixtures/upstream.js'
import { healthState } from './fixtures/wait.js'
import { agentFor, get } from './fixtures/users.js'
import { FakeClock } from './fixtures/clock.js'

const PASSIVE = { consecutive_failures: 3, base_ejection: 10_000, max_ejection: 60_000 }

/** Answers 500 on /broken (a page with a bug), `<id>` elsewhere; /healthz 200 unless `sick()`. */
const app = (id: string, sick: () => boolean = () => false): Handler => (req, res) => {
  if (req.url === '/healthz') { res.statusCode = sick() ? 503 : 200; res.end(); return }
  if (req.url === '/broken') { res.statusCode = 500; res.end('bug\n'); return }
  res.end(`${id}\n`)
}

async function upstreams(t: Test, spec: Record<string, Handler>): Promise<Upstream[]> {
  const ups = await Promise.all(Object.entries(spec).map(([id, h]) => startUpstream(id, h)))
  t.teardown(async () => { await Promise.all(ups.map((u) => u.close())) })
  return ups
}

t.test('the other upstream failing its checks, 3 answers of 500 on one page do not eject the last one serving', async (t) => {
  const ups = await upstreams(t, { a: app('a', () => true), b: app('b') })
  const tt = await proxyFor(t, ups, { health: { passive: PASSIVE, active: { path: '/healthz', interval: 100, timeout: 200 } } })
  await healthState(tt.health, 'a', 'unhealthy', 5_000)
  const agent = agentFor(t)
  for (let i = 0; i < 3; i++) t.equal((await get(`${tt.url}/broken`, agent)).status, 500, `the page's own 500 (${i})`)
  t.equal(tt.health.state('b'), 'healthy', 'b, the last upstream serving, is not ejected')
  const r = await get(tt.url, agent)
  t.same([r.status, r.body.trim()], [200, 'b'], 'the next request is answered by b, not a 503')
})

t.test('one upstream: a run of 500s does not eject it; with max_ejection_percent 100 it does', async (t) => {
  for (const percent of [50, 100]) {
    const ups = await upstreams(t, { solo: app('solo') })
    const tt = await proxyFor(t, ups, { health: { passive: { ...PASSIVE, max_ejection_percent: percent } } }, new FakeClock())
    const agent = agentFor(t)
    for (let i = 0; i < 3; i++) await get(`${tt.url}/broken`, agent)
    const r = await get(tt.url, agent)
    if (percent === 50) t.same([tt.health.state('solo'), r.status], ['healthy', 200], '50%: not ejected, still answering')
    else t.same([tt.health.state('solo'), r.status], ['ejected', 503], '100%: ejected as the operator allows')
  }
})

t.test('a refused connection still ejects the last upstream (nothing listens there)', async (t) => {
  const ups = await upstreams(t, { solo: app('solo') })
  const tt = await proxyFor(t, ups, { health: { passive: PASSIVE } }, new FakeClock())
  await ups[0]!.close()
  const r = await get(tt.url, agentFor(t))
  t.ok(r.status >= 500, `answered ${r.status}`)
  t.equal(tt.health.state('solo'), 'ejected')
})
