// `affinity.shared: redis` with `absolute_timeout`: a binding Redis still holds (its idle TTL
// renewed) but placed longer than absolute_timeout ago is over on every replica, as a local
// one is: the user is placed afresh by the hash, and the stale binding is removed from Redis (its
// expiry there), so it cannot win over a fresh pin of the same epoch on a larger upstream id.
// An application cookie routed by its hash is not pinned (only a value an upstream sets is). Two in-process
// replicas over a real redis-server; time is one FakeClock for both (Redis's TTLs run in real
// time and do not end during the test).
import t, { type Test } from 'tap'
import { startTether, type Tether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { DEFAULTS, type Config } from '../src/config/schema.js'
import { buildPlacement } from '../src/placement/rendezvous.js'
import { hashKey } from '../src/placement/hash.js'
import { startRedis, redisCli, type RedisServer } from './fixtures/redis-server.js'
import { testConfig } from './fixtures/upstream.js'
import { upstreams } from './fixtures/routing-sticky.js'
import { waitFor } from './fixtures/wait.js'
import { FakeClock } from './fixtures/clock.js'
import { agentFor, get } from './fixtures/users.js'

const IDS = ['app-0', 'app-1']
const PREFIX = 'sa-abs:'

let redis: RedisServer
t.before(async () => { redis = await startRedis() })
t.teardown(async () => { await redis.stop() })

async function replica(t: Test, ups: readonly { id: string; url: string }[], clock: FakeClock): Promise<Tether> {
  const affinity: Partial<Config['affinity']> = {
    key: 'app_cookie', app_cookie: { ...DEFAULTS.affinity.app_cookie, name: 'sid', fallback: 'random' },
    idle_timeout: 60_000, absolute_timeout: 120_000, shared: 'redis',
  }
  const cfg = testConfig(ups, {
    affinity,
    health: { active: { path: null } },
    state: { store: 'redis', timeout: 1_000, redis: { url: redis.url, key_prefix: PREFIX } },
  })
  const tt = await startTether(cfg, { logger: createLogger('silent'), clock })
  t.teardown(() => tt.close(0))
  return tt
}

t.test('a binding in Redis placed longer than absolute_timeout ago is not followed: the user is placed by the hash, on every replica', async (t) => {
  const placement = buildPlacement(IDS.map((id) => ({ id, weight: 1 })))
  const hashedTo = (v: string): string => placement.ids[placement.pick(hashKey(v))]!
  // a new user's value hashes to the *other* upstream (app-1 for a user learned on app-0)
  let n = 0
  const ups = await upstreams(t, IDS, (id) => (req, res) => {
    if (!/(?:^|;\s*)sid=/.test(req.headers.cookie ?? '')) {
      let v: string
      do v = `u${++n}-${process.pid}`
      while (hashedTo(v) === id)
      res.setHeader('set-cookie', `sid=${v}; path=/`)
    }
    res.end(`${id}\n`)
  })
  const clock = new FakeClock()
  const r1 = await replica(t, ups, clock)
  const a = agentFor(t, 4)
  const via = async (tt: Tether, v: string | null): Promise<{ id: string; set: string | null }> => {
    const r = await get(tt.url, a, v === null ? {} : { cookie: `sid=${v}` })
    t.equal(r.status, 200)
    const set = r.headers['set-cookie']?.[0]
    return { id: r.body.trim(), set: set === undefined ? null : /^sid=([^;]*)/.exec(set)![1]! }
  }
  // new users until one is learned on app-0 (its value hashes to app-1)
  let v: string | null = null
  for (let i = 0; i < 40 && v === null; i++) {
    const r = await via(r1, null)
    if (r.id === 'app-0') v = r.set
  }
  t.ok(v !== null, 'a user learned on app-0')
  const key = v!
  t.equal(hashedTo(key), 'app-1', 'whose value hashes to app-1')
  const t0 = clock.now()
  await waitFor(async () => (await redisCli(redis.port, 'GET', `${PREFIX}ap:{${key}}`)).trim() === `${t0} 0 app-0`, 5_000, 'the binding and its placement time in Redis')
  t.equal((await via(r1, key)).id, 'app-0', 'the user returns to app-0')

  // 130 s later (absolute_timeout 120 s): Redis still holds the binding (its TTL is real time)
  clock.advance(130_000)
  const r2 = await replica(t, ups, clock)
  t.equal((await via(r2, key)).id, 'app-1', 'a replica that looks the user up is not led back by the stale binding: placed by the hash')
  await waitFor(async () => (await redisCli(redis.port, 'EXISTS', `${PREFIX}af:{${key}}`, `${PREFIX}ap:{${key}}`)).trim() === '0', 5_000, 'the stale binding to be removed from Redis')
  t.pass('the stale binding and its placement time were removed from Redis')
  t.equal((await via(r2, key)).id, 'app-1', 'the user stays there')
  t.equal((await via(r1, key)).id, 'app-1', 'the replica that learned the user places them by the hash too')
})
