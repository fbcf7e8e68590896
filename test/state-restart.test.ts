// A replica restarted in place (same id and address, as a StatefulSet pod or a container
// restart) has lost its users' in-memory state; users who did not come back while it was down
// stay on it (no move), and must get their state back there. Real counter replicas as child
// processes, SIGKILLed and started again on the same port.
import t from 'tap'
import { startTether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { testConfig } from './fixtures/upstream.js'
import { get, userAgent } from './fixtures/users.js'
import { startCounter, type Counter, type CounterAnswer } from './fixtures/counter-upstream.js'
import { healthState } from './fixtures/wait.js'
import { startAll } from './fixtures/children.js'

t.test('users of a replica restarted in place are rehydrated there on their next request (reason=restart), once; others are untouched', async (t) => {
  const apps = new Map<string, Counter>()
  for (const app of await startAll(['app-0', 'app-1'].map((id) => startCounter(id)))) apps.set(app.id, app)
  t.teardown(async () => { await Promise.all([...apps.values()].map((c) => c.kill())) })
  const tt = await startTether(testConfig([...apps.values()], {
    affinity: { key: 'header', header: { name: 'X-Tenant' } },
    health: { active: { enabled: true, path: '/healthz', interval: 100, timeout: 1_000, unhealthy_threshold: 1, healthy_threshold: 1 } },
    state: { store: 'memory' },
  }), { logger: createLogger('silent') })
  t.teardown(() => tt.close(0))
  const agent = userAgent(10)
  t.teardown(() => agent.destroy())
  const ask = async (user: string): Promise<CounterAnswer> => {
    const r = await get(tt.url, agent, { 'x-tenant': user })
    t.equal(r.status, 200, `${user}: answered`)
    return JSON.parse(r.body) as CounterAnswer
  }

  const users = Array.from({ length: 20 }, (_, i) => `user-${i}`)
  const home = new Map<string, string>()
  for (const u of users) for (let n = 1; n <= 3; n++) home.set(u, (await ask(u)).id)
  const restarted = home.get(users[0]!)!
  const theirs = users.filter((u) => home.get(u) === restarted)
  const others = users.filter((u) => home.get(u) !== restarted)
  t.ok(theirs.length > 0 && others.length > 0, `both replicas have users (${theirs.length} on ${restarted})`)

  // the pod dies and comes back at the same address while its users are away
  const pod = apps.get(restarted)!
  await pod.kill()
  await healthState(tt.health, restarted, 'unhealthy')
  apps.set(restarted, await startCounter(restarted, { port: pod.port }))
  await healthState(tt.health, restarted, 'healthy')

  for (const u of theirs) {
    const a = await ask(u)
    t.same([a.id, a.n, a.rehydrated, a.moved, a.epoch], [restarted, 4, true, `from=${restarted}; reason=restart; epoch=1`, '1'],
      `${u}: stays on ${restarted}, which gets the state back (counter 4, not 1)`)
    const b = await ask(u)
    t.same([b.id, b.n, b.rehydrated, b.moved, b.epoch], [restarted, 5, false, null, '1'], `${u}: the next request is an ordinary one`)
  }
  for (const u of others) {
    const a = await ask(u)
    t.same([a.id, a.n, a.rehydrated, a.moved, a.epoch], [home.get(u), 4, false, null, '0'], `${u}: on the other replica, untouched`)
  }
})

t.test('users of an upstream id given another address by a reload are rehydrated on the new replica (reason=restart), once; others are untouched', async (t) => {
  const apps = new Map<string, Counter>()
  for (const app of await startAll(['app-0', 'app-1'].map((id) => startCounter(id)))) apps.set(app.id, app)
  t.teardown(async () => { await Promise.all([...apps.values()].map((c) => c.kill())) })
  const config = testConfig([...apps.values()], { affinity: { key: 'header', header: { name: 'X-Tenant' } }, state: { store: 'memory' } })
  const tt = await startTether(config, { logger: createLogger('silent') })
  t.teardown(() => tt.close(0))
  const agent = userAgent(10)
  t.teardown(() => agent.destroy())
  const ask = async (user: string): Promise<CounterAnswer> => JSON.parse((await get(tt.url, agent, { 'x-tenant': user })).body) as CounterAnswer

  const users = Array.from({ length: 20 }, (_, i) => `user-${i}`)
  const home = new Map<string, string>()
  for (const u of users) for (let n = 1; n <= 3; n++) home.set(u, (await ask(u)).id)
  const replaced = home.get(users[0]!)!
  const theirs = users.filter((u) => home.get(u) === replaced)
  const others = users.filter((u) => home.get(u) !== replaced)
  // a new replica at a new address takes the id (the old one is still up, with the old counts)
  const next = await startCounter(replaced)
  const old = apps.get(replaced)!
  apps.set(`${replaced}-old`, old)
  apps.set(replaced, next)
  tt.reload({ ...config, upstreams: config.upstreams.map((u) => u.id === replaced ? { ...u, url: next.url } : u) })
  for (const u of theirs) {
    const a = await ask(u)
    t.same([a.id, a.n, a.rehydrated, a.moved], [replaced, 4, true, `from=${replaced}; reason=restart; epoch=1`], `${u}: the new replica gets the state back (counter 4, not 1)`)
    const b = await ask(u)
    t.same([b.n, b.rehydrated, b.moved], [5, false, null], `${u}: the next request is an ordinary one`)
  }
  for (const u of others) {
    const a = await ask(u)
    t.same([a.id, a.n, a.rehydrated, a.moved], [home.get(u), 4, false, null], `${u}: untouched`)
  }
})
