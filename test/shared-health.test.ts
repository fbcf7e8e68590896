// health.shared: redis — Tether replicas tell each other, through Redis pub/sub, which
// upstreams are down and which are drained, so they fail over and drain together.
import t from 'tap'
import { startTether, type Tether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { startUpstream, testConfig, request, type Upstream } from './fixtures/upstream.js'
import { healthState, waitFor } from './fixtures/wait.js'
import { startRedis } from './fixtures/redis-server.js'

t.test('a drain through one replica and an upstream found down by one replica reach the others', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const apps: Upstream[] = await Promise.all(['a', 'b', 'c'].map((id) => startUpstream(id)))
  t.teardown(() => Promise.all(apps.map((a) => a.close())))
  const replica = async (): Promise<Tether> => {
    const tether = await startTether(testConfig(apps, {
      affinity: { key: 'header', header: { name: 'X-Tenant' } },
      health: { shared: 'redis' },
      state: { store: 'redis', redis: { url: redis.url, key_prefix: 'sh:' } },
    }), { logger: createLogger('silent') })
    t.teardown(() => tether.close(0))
    return tether
  }
  const one = await replica()
  const two = await replica()
  // both subscribers are up once a published event reaches the other side: nothing announces a
  // subscription, so poll with drains
  await waitFor(async () => {
    await request(`${one.adminUrl}/upstreams/a/drain`, { method: 'POST' })
    return two.health.state('a') === 'draining'
  }, 10_000, 'the drain to reach the second replica')
  t.equal(two.health.state('a'), 'draining', 'a drain made through #1 applies on #2')
  await request(`${one.adminUrl}/upstreams/a/undrain`, { method: 'POST' })
  await healthState(two.health, 'a', 'healthy', 5_000)
  t.pass('and so does the undrain')

  // #1 finds c down (a refused connection); #2 never sends it a request
  const c = apps.find((u) => u.id === 'c')!
  await c.close()
  for (let i = 0; i < 40 && one.health.ready('c'); i++) await request(one.url, { headers: { 'x-tenant': `t${i}` } })
  t.equal(one.health.state('c'), 'ejected', '#1 ejected c after a refused connection')
  await healthState(two.health, 'c', 'ejected', 5_000)
  t.pass('#2 ejected c without sending it a request')
  t.equal(two.health.state('a'), 'healthy', 'nothing else changed on #2')
})
