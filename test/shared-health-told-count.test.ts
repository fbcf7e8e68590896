// A `down`'s told ejection count is capped where the ejection time stops growing
// (ceil(max_ejection / base_ejection)). Unbounded, one buggy or hostile message (2^53-1) left
// every later ejection of that upstream at max_ejection on the receiver for good (the count
// decays one a base_ejection of quiet), showed on admin /upstreams, and spread with the
// receiver's own next `down`.
import t from 'tap'
import { HealthTable } from '../src/health/health-table.js'
import { SharedHealth } from '../src/health/shared-health.js'
import { createLogger } from '../src/observability/logger.js'
import { RedisConnection } from '../src/redis/connection.js'
import { RedisPeerChannel } from '../src/redis/peer-channel.js'
import { FakeClock } from './fixtures/clock.js'
import { startRedis } from './fixtures/redis-server.js'
import { waitFor } from './fixtures/wait.js'

const BASE = 30_000
const MAX = 300_000

t.test('a told count of 2^53-1 is capped, and a day later the next own ejection lasts base_ejection', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const clock = new FakeClock()
  const conn = new RedisConnection({ url: redis.url, keyPrefix: 'r2:', timeout: 2_000, connectTimeout: 1_000, maxReconnectDelay: 100 })
  await conn.start()
  t.teardown(() => conn.stop())
  const health = new HealthTable({
    active: { enabled: false, healthy_threshold: 2, unhealthy_threshold: 2 },
    passive: { consecutive_failures: 1, count_5xx: true, base_ejection: BASE, max_ejection: MAX, max_ejection_percent: 100 },
    slow_start: 0,
  }, clock)
  health.setUpstreams(['a', 'b', 'c'])
  const shared = new SharedHealth(new RedisPeerChannel(conn), health, createLogger('silent'))
  await shared.start()
  // a peer (buggy, hostile, or configured with another base) publishes on the same channel
  const conn2 = new RedisConnection({ url: redis.url, keyPrefix: 'r2:', timeout: 2_000, connectTimeout: 1_000, maxReconnectDelay: 100 })
  await conn2.start()
  t.teardown(() => conn2.stop())
  const peer = new RedisPeerChannel(conn2)
  const msg = JSON.stringify({ from: 'peer-x', seq: 1, kind: 'down', id: 'c', reason: '5xx', ejectedFor: 1000, ejections: Number.MAX_SAFE_INTEGER })
  await waitFor(async () => { await peer.publish(msg); return health.state('c') === 'ejected' }, 10_000, 'the down to be heard')
  const count = health.snapshot().find((r) => r.id === 'c')!.timesEjected
  t.comment(`timesEjected after one message: ${count}`)
  t.equal(count, Math.ceil(MAX / BASE), `the told count is capped where the time stops growing (got ${count})`)
  // a day without any failure of c
  clock.advance(24 * 3_600_000)
  health.tick()
  t.equal(health.state('c'), 'healthy')
  health.reportPassive('c', 'server_error')
  const lasts = health.ejection('c')!.until - clock.now()
  t.comment(`next own ejection, a day later: ${lasts} ms; told to others as ${JSON.stringify(health.toldLength('c'))}`)
  t.equal(lasts, BASE, 'a day of quiet later, its next own ejection lasts base_ejection (as on a replica that never heard the message)')
})
