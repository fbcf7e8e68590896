// The liveness rule of the +switch-master watches, on fake timers (the watch tick) and a real
// Sentinel: a stall of Tether itself is no silence of its Sentinels. Every wait is for a
// re-armed fake timer or polls with a deadline; nothing sleeps.
import t from 'tap'
import { RedisConnection, SENTINEL_PING_MS, type RedisSentinelEvent } from '../src/redis/connection.js'
import { redisCli, startRedis, startRedisSentinel, waitFor } from './fixtures/redis-server.js'
import { FakeTimers } from './fixtures/timers.js'

const watchIds = async (port: number): Promise<string[]> =>
  (await redisCli(port, 'CLIENT', 'LIST')).split('\n').filter((l) => / name=tether-switch-watch .*sub=1/.test(l)).map((l) => /^id=(\d+)/.exec(l)![1]!)

t.test('a stall of Tether longer than the silence deadline, with no PING in flight, gives up no watch', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const sentinel = await startRedisSentinel(redis)
  t.teardown(() => sentinel.stop())
  const timers = new FakeTimers()
  const conn = new RedisConnection({ sentinels: [{ host: '127.0.0.1', port: sentinel.port }], name: sentinel.name, now: () => timers.clock.now(), timers })
  const events: RedisSentinelEvent[] = []
  conn.onSentinel((e) => events.push(e))
  t.teardown(() => conn.stop())
  await conn.start()
  await waitFor('the watch to subscribe', async () => (await watchIds(sentinel.port)).length === 1)
  const before = await watchIds(sentinel.port)
  // one ordinary round: a PING sent and answered
  await timers.scheduled(SENTINEL_PING_MS)
  timers.advance(SENTINEL_PING_MS)
  await timers.scheduled(SENTINEL_PING_MS)
  await waitFor('the PONG', async () => /cmd=ping/.test((await redisCli(sentinel.port, 'CLIENT', 'LIST')).split('\n').find((l) => l.startsWith(`id=${before[0]} `)) ?? ''))
  // Tether's event loop stalls 3 s (the Sentinel answered everything it was asked before)
  timers.advance(3 * SENTINEL_PING_MS)
  await timers.scheduled(SENTINEL_PING_MS)
  // the rounds after it: the PING sent after the stall is answered
  for (let i = 0; i < 3; i++) {
    timers.advance(SENTINEL_PING_MS)
    await timers.scheduled(SENTINEL_PING_MS)
  }
  t.same(events, [], 'no watch said silent')
  t.same(await watchIds(sentinel.port), before, 'the watch was not made again')
})
