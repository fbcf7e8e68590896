// The liveness rule of the +switch-master watches, on fake timers (the watch tick) and a real
// Sentinel: a stall of Tether itself is no silence of its Sentinels. Every wait is for a
// re-armed fake timer or polls with a deadline; nothing sleeps.
import t from 'tap'
import net from 'node:net'
import { RedisConnection, type RedisSentinelEvent } from '../src/redis/connection.js'
import { SENTINEL_PING_MS } from '../src/redis/sentinel-watch.js'
import { redisCli, startRedis, startRedisSentinel, waitFor } from './fixtures/redis-server.js'
import { FakeTimers } from './fixtures/timers.js'

/** Resolves after at least one poll phase of the event loop (two check phases on). */
async function pollPhase(): Promise<void> {
  await new Promise((resolve) => setImmediate(resolve))
  await new Promise((resolve) => setImmediate(resolve))
}

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
  // (Sentinel wrote its reply before it answered CLIENT LIST: one poll phase reads it)
  await pollPhase()
  const before = await watchIds(sentinel.port)
  // one ordinary round: a PING sent and answered
  await timers.scheduled(SENTINEL_PING_MS)
  timers.advance(SENTINEL_PING_MS)
  await timers.scheduled(SENTINEL_PING_MS)
  await waitFor('the PING', async () => /cmd=ping/.test((await redisCli(sentinel.port, 'CLIENT', 'LIST')).split('\n').find((l) => l.startsWith(`id=${before[0]} `)) ?? ''))
  // (the fake tick below runs its deferred check in this loop turn's check phase, before the
  // next poll phase: the PONG must be read first)
  await pollPhase()
  // Tether's event loop stalls 3 s (the Sentinel answered everything it was asked before): the
  // first tick after it finds nothing outstanding, sends a PING and gives nothing up
  timers.advance(3 * SENTINEL_PING_MS)
  await timers.scheduled(SENTINEL_PING_MS)
  t.same(events, [], 'no watch said silent')
  t.same(await watchIds(sentinel.port), before, 'the watch was not made again')
})

t.test('a Sentinel down for long: its watch is made again with back-off (2, 4, 8, 16 s), one connection attempt each, and one silent event', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const sentinel = await startRedisSentinel(redis)
  t.teardown(() => sentinel.stop())
  // a Sentinel that is down: every connection is reset at once (counted)
  let attempts = 0
  const down = net.createServer((socket) => {
    attempts++
    socket.destroy()
  })
  await new Promise<void>((resolve) => down.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => down.close(() => resolve())))
  const downPort = (down.address() as net.AddressInfo).port
  const timers = new FakeTimers()
  // the answering Sentinel first: the client asks it and never the down one
  const conn = new RedisConnection({ sentinels: [{ host: '127.0.0.1', port: sentinel.port }, { host: '127.0.0.1', port: downPort }], name: sentinel.name, now: () => timers.clock.now(), timers })
  const events: RedisSentinelEvent[] = []
  conn.onSentinel((e) => events.push(e))
  t.teardown(() => conn.stop())
  await conn.start()
  await waitFor('the first watch connection to the down Sentinel', () => attempts >= 1)
  // 60 s of fake time, one tick a second
  for (let i = 0; i < 60; i++) {
    timers.advance(SENTINEL_PING_MS)
    await timers.scheduled(SENTINEL_PING_MS)
  }
  await waitFor('the attempt of the last remake', () => attempts >= 5)
  t.comment(`${attempts} connection attempts in 60 s`)
  // made at 0 (ioredis's own quick retries within the first 2 s: up to 6), remade at 2, 6, 14, 30, 46 s
  t.ok(attempts <= 12, `at most 12 connection attempts in 60 s, got ${attempts}`)
  // (the answering Sentinel's PONGs are not waited for here: only the down one's events count)
  t.same(events.filter((e) => e.sentinel === `127.0.0.1:${downPort}`).map((e) => e.kind), ['silent'], 'one silent event for the whole outage')
})
