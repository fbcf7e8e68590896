// A client that keeps sending the Tether cookie it got first (it ignores the re-issued one, as
// a load generator or a hand-written API client does, or a burst left before the new cookie
// arrived). After its replica died, and again after the replica came back, such a user must be
// moved and rehydrated once, not on every request: each repeated move sent the state again over
// what the user built since, counted another failover, and (with workers) cost a trip to the
// primary's checkpoint store per request. Real counter replicas as child processes, SIGKILLed
// and started again on the same port.
import t from 'tap'
import { startTether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { testConfig } from './fixtures/upstream.js'
import { get, setCookieValue, userAgent } from './fixtures/users.js'
import { startCounter, type Counter, type CounterAnswer } from './fixtures/counter-upstream.js'
import { healthState } from './fixtures/wait.js'
import { startAll } from './fixtures/children.js'

t.test('a client replaying its first cookie is moved and rehydrated once when its replica dies, and once when it comes back', async (t) => {
  const apps = new Map<string, Counter>()
  for (const app of await startAll(['app-0', 'app-1'].map((id) => startCounter(id)))) apps.set(app.id, app)
  t.teardown(async () => { await Promise.all([...apps.values()].map((c) => c.kill())) })
  const tt = await startTether(testConfig([...apps.values()], {
    affinity: { key: 'cookie' },
    health: { active: { enabled: true, path: '/healthz', interval: 100, timeout: 1_000, unhealthy_threshold: 1, healthy_threshold: 1 } },
    state: { store: 'memory' },
  }), { logger: createLogger('silent') })
  t.teardown(() => tt.close(0))
  const agent = userAgent(4)
  t.teardown(() => agent.destroy())

  const first = await get(tt.url, agent, { cookie: 'user=u0' })
  t.equal(first.status, 200, 'first visit answered')
  const tether = setCookieValue(first.headers['set-cookie'], 'tether')
  t.ok(tether, 'a Tether cookie was issued')
  const home = (JSON.parse(first.body) as CounterAnswer).id
  const other = home === 'app-0' ? 'app-1' : 'app-0'
  // every request from here on carries that first cookie, whatever the answers set
  const ask = async (): Promise<CounterAnswer> => {
    const r = await get(tt.url, agent, { cookie: `user=u0; tether=${tether}` })
    t.equal(r.status, 200, 'answered')
    return JSON.parse(r.body) as CounterAnswer
  }
  const row = (a: CounterAnswer): unknown[] => [a.id, a.n, a.rehydrated, a.moved, a.epoch]
  t.same(row(await ask()), [home, 2, false, null, '0'], 'the same cookie again: an ordinary request at home')

  const pod = apps.get(home)!
  await pod.kill()
  await healthState(tt.health, home, 'unhealthy')
  t.same(row(await ask()), [other, 3, true, `from=${home}; reason=dead; epoch=1`, '1'], `${home} died: moved to ${other} and rehydrated (count 3, not 1)`)
  for (const n of [4, 5, 6]) {
    t.same(row(await ask()), [other, n, false, null, '1'], `the old cookie again (count ${n}): served on ${other}, not moved again`)
  }

  apps.set(home, await startCounter(home, { port: pod.port }))
  await healthState(tt.health, home, 'healthy')
  // the old cookie names the home replica again: the user goes back, with the state built on the other one
  t.same(row(await ask()), [home, 7, true, `from=${other}; reason=restart; epoch=2`, '2'],
    `${home} is back: the old cookie routes there, rehydrated with what ${other} stored (count 7), epoch after the first move's`)
  for (const n of [8, 9]) {
    t.same(row(await ask()), [home, n, false, null, '2'], `the old cookie again (count ${n}): an ordinary request at home`)
  }

  const metrics = await (await fetch(`${tt.adminUrl}/metrics`)).text()
  const moves = [...metrics.matchAll(/^tether_failovers_total\{from="([^"]+)",reason="([^"]+)"\} (\d+)$/gm)].map((m) => `${m[1]} ${m[2]} ${m[3]}`).sort()
  t.same(moves, [`${home} dead 1`, `${other} restart 1`].sort(), 'two moves counted, one for each event')
})
