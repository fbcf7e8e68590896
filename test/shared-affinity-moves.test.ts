// Shared affinity (`affinity.shared: redis`) with header keys: a user of an upstream that died
// is moved once, by whichever replica found it dead first, and announced once (X-Tether-Moved,
// with the rehydration). Another replica that still holds the user's old binding in its own
// table (used in this sync period, so not reconciled with Redis yet) finds the upstream dead
// too and decides the same move; before announcing it, it reads the shared binding (the move
// path's own Redis read, beside the state fetch): the move already stored there (at that epoch
// or later) is taken as it is, not announced again. Two in-process replicas (as two Tether
// pods, or two workers, each with its own table and Redis connection), one real redis-server,
// real counter apps as child processes.
import t from 'tap'
import http from 'node:http'
import { startTether, type Tether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { DEFAULTS } from '../src/config/schema.js'
import { buildPlacement } from '../src/placement/rendezvous.js'
import { hashKey } from '../src/placement/hash.js'
import { startRedis, redisCli } from './fixtures/redis-server.js'
import { testConfig } from './fixtures/upstream.js'
import { waitFor } from './fixtures/wait.js'
import { FakeClock } from './fixtures/clock.js'
import { agentFor, get, tally } from './fixtures/users.js'
import { startCounter, type CounterAnswer } from './fixtures/counter-upstream.js'
import { startAll } from './fixtures/children.js'

const IDS = ['app-0', 'app-1', 'app-2'] as const
const placement = buildPlacement(IDS.map((id) => ({ id, weight: 1 })))
const byHash = (key: string): string => placement.ids[placement.pick(hashKey(key))]!

t.test('header key, two replicas: a user of a dead upstream moved by one replica is announced moved once, not again by the other', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const apps = await startAll(IDS.map((id) => startCounter(id)))
  t.teardown(async () => { await Promise.all(apps.map((a) => a.kill())) })
  const replica = async (clock?: FakeClock): Promise<Tether> => {
    const cfg = testConfig(apps, {
      affinity: { key: 'header', header: { ...DEFAULTS.affinity.header, name: 'X-Tenant' }, shared: 'redis' },
      health: { active: { path: null }, passive: { base_ejection: 60_000, max_ejection: 60_000 } },
      state: { store: 'redis', timeout: 1_000, redis: { url: redis.url, key_prefix: 'mv:' } },
    })
    const tt = await startTether(cfg, { logger: createLogger('silent'), ...(clock ? { clock } : {}) })
    t.teardown(() => tt.close(0))
    return tt
  }
  // #2's clock stands still: every request of the test falls in one sync period there, so #2
  // never reconciles a tenant it holds by the period (a period boundary would hide the repeat)
  const [t1, t2] = await Promise.all([replica(), replica(new FakeClock(Date.now()))])
  const agent = agentFor(t)
  const via = async (tt: Tether, tenant: string): Promise<CounterAnswer> => {
    const r = await get(tt.url, agent as http.Agent, { 'x-tenant': tenant })
    if (r.status !== 200) throw new Error(`${tenant}: status ${r.status}: ${r.body.trim()}`)
    return JSON.parse(r.body) as CounterAnswer
  }
  const tenants = Array.from({ length: 30 }, (_, i) => `tenant-${i}`)
  for (const tenant of tenants) {
    await via(t1, tenant)
    await via(t2, tenant) // #2 holds every tenant's binding, used in its (only) sync period
  }
  const victimId = [...tally(tenants.map(byHash))].sort((a, b) => b[1] - a[1])[0]![0]
  const victims = tenants.filter((x) => byHash(x) === victimId)
  await apps.find((a) => a.id === victimId)!.kill('SIGKILL')

  const announced = new Map<string, string[]>(victims.map((v) => [v, []]))
  const homes = new Map<string, Set<string>>(victims.map((v) => [v, new Set()]))
  const count = (tenant: string, via: string, a: CounterAnswer): void => {
    if (a.moved !== null) announced.get(tenant)!.push(`${via}: ${a.moved}`)
    homes.get(tenant)!.add(a.id)
  }
  // #1 finds the upstream dead and moves its users (epoch 1), stored in Redis
  for (const tenant of victims) count(tenant, '#1', await via(t1, tenant))
  for (const tenant of victims) {
    await waitFor(async () => (await redisCli(redis.port, 'GET', `mv:af:{${tenant}}`)).startsWith('1 '), 5_000, `${tenant}'s move in Redis`)
  }
  // then each asks #2 and #1 by turns: #2 finds the upstream dead too, the move is already made
  for (let round = 0; round < 3; round++) {
    for (const tenant of victims) {
      count(tenant, '#2', await via(t2, tenant))
      count(tenant, '#1', await via(t1, tenant))
    }
  }
  const again = [...announced].filter(([, list]) => list.length !== 1).map(([tenant, list]) => `${tenant}: ${list.join(', ')}`)
  t.same(again, [], 'each moved user is announced moved once')
  const split = [...homes].filter(([, set]) => set.size !== 1 || set.has(victimId)).map(([tenant, set]) => `${tenant}: ${[...set].join(', ')}`)
  t.same(split, [], 'each moved user goes to one upstream, via either replica')
  t.equal((await via(t2, victims[0]!)).epoch, '1', "#2 sends the move's epoch")
  t.comment(`${victims.length} users of ${victimId} moved; announced ${[...announced.values()].reduce((n, l) => n + l.length, 0)} times`)
})
