// A refused SUBSCRIBE (NOPERM: the ACL user may not use the peer channel) is asked again every
// maxReconnectDelay on its connection (src/redis/connection.ts subscribe()): one retry timer per
// subscription at a time, whatever reconnects happen meanwhile, and none left after stop().
// Real redis-server, the real RedisConnection, fake timers for the retry (ioredis's own
// reconnects run on real timers).
import t, { type Test } from 'tap'
import { RedisConnection, type RedisRefusal } from '../src/redis/connection.js'
import { RedisPeerChannel } from '../src/redis/peer-channel.js'
import { redisCli, startRedis, type RedisServer } from './fixtures/redis-server.js'
import { FakeTimers } from './fixtures/timers.js'
import { waitFor } from './fixtures/wait.js'

const USER = 'tether-app'
const PASSWORD = 'app-s3cret'
/** maxReconnectDelay: the retry's delay (no other timer of the connection has it). */
const RETRY_MS = 1_234

async function refusedChannel(t: Test): Promise<{ redis: RedisServer; conn: RedisConnection; told: RedisRefusal[]; timers: FakeTimers }> {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  await redisCli(redis.port, 'ACL', 'SETUSER', USER, 'on', `>${PASSWORD}`, '~na:*', 'resetchannels', '&other:*', '+@all', '-@dangerous')
  const timers = new FakeTimers()
  const conn = new RedisConnection({ url: `redis://${USER}:${PASSWORD}@127.0.0.1:${redis.port}`, keyPrefix: 'na:', timeout: 5_000, connectTimeout: 3_000, maxReconnectDelay: RETRY_MS, timers })
  const told: RedisRefusal[] = []
  conn.onRefused((r) => told.push(r))
  await conn.start()
  t.teardown(() => conn.stop())
  return { redis, conn, told, timers }
}

const subscribes = (told: RedisRefusal[]): number => told.filter((r) => r.command === 'SUBSCRIBE' && r.error !== null).length

t.test('a refused SUBSCRIBE whose connection is remade before its retry: still one retry pending, one SUBSCRIBE per maxReconnectDelay', async (t) => {
  const { redis, conn, told, timers } = await refusedChannel(t)
  void new RedisPeerChannel(conn).subscribe(() => undefined)
  await waitFor(() => subscribes(told) === 1, 5_000, 'the SUBSCRIBE refusal told')
  for (let kill = 1; kill <= 3; kill++) {
    // Tether's connections dropped (a Redis restart, a proxy's idle cut): they reconnect at once,
    // before the retry is due, and the new connection's SUBSCRIBE is refused again
    await redisCli(redis.port, 'CLIENT', 'KILL', 'USER', USER)
    await waitFor(() => subscribes(told) === 1 + kill, 5_000, `the SUBSCRIBE refused again after reconnect ${kill}`)
  }
  t.equal(timers.pending(RETRY_MS).length, 1, 'one retry pending')
  timers.advance(RETRY_MS)
  await waitFor(() => subscribes(told) >= 5, 5_000, 'the retry refused')
  await timers.scheduled(RETRY_MS)
  t.equal(subscribes(told), 5, 'one SUBSCRIBE asked per maxReconnectDelay')
  t.equal(timers.pending(RETRY_MS).length, 1, 'one retry pending after it')
  await conn.stop()
  t.equal(timers.pending(RETRY_MS).length, 0, 'none after stop()')
})

t.test('a refused SUBSCRIBE command (a grant without +subscribe) leaves the calls on their fast path; told accepted once granted', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  await redisCli(redis.port, 'ACL', 'SETUSER', USER, 'on', `>${PASSWORD}`, '~na:*', '&*', '+@all', '-@dangerous', '-subscribe')
  const conn = new RedisConnection({ url: `redis://${USER}:${PASSWORD}@127.0.0.1:${redis.port}`, keyPrefix: 'na:', timeout: 5_000, maxReconnectDelay: 200 })
  const told: RedisRefusal[] = []
  conn.onRefused((r) => told.push(r))
  await conn.start()
  t.teardown(() => conn.stop())
  void new RedisPeerChannel(conn).subscribe(() => undefined)
  await waitFor(() => subscribes(told) >= 1, 5_000, 'the SUBSCRIBE refusal told')
  t.match(told[0], { command: 'SUBSCRIBE', error: /may not run SUBSCRIBE: grant it \(ACL SETUSER <user> \+subscribe\)/ })
  // (while a command run() sends is refused, run() notes what each call sends: ioredis's
  // sendCommand shadowed on the client; SUBSCRIBE is never sent through run())
  let noted: boolean | null = null
  await conn.run('na:x', (c) => { noted = Object.hasOwn(c, 'sendCommand'); return c.get('na:x') })
  t.equal(noted, false, 'a call is not noted while only the SUBSCRIBE is refused')
  await redisCli(redis.port, 'ACL', 'SETUSER', USER, '+subscribe')
  await waitFor(() => told.some((r) => r.command === 'SUBSCRIBE' && r.error === null), 5_000, 'the SUBSCRIBE told accepted again')
})
