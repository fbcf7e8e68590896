// What a Redis failover does to Tether's connection: the connections killed the way Sentinel
// kills a demoted master's clients (no stray rejection, the subscription keeps delivering), a
// primary demoted behind one endpoint (writes come back once the endpoint names the new
// primary), and a Sentinel switch (followed at once, not when the old master drops us).
// Real redis-server processes; real time is only polled with a deadline.
import net from 'node:net'
import t from 'tap'
import { Redis } from 'ioredis'
import { FAILED, RedisConnection } from '../src/redis/connection.js'
import { redisCli, startRedis, waitFor } from './fixtures/redis-server.js'

t.test('connections killed again and again (CLIENT KILL TYPE normal, then pubsub, as Sentinel does to a demoted master): no unhandled rejection, and the subscription still delivers', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const stray: unknown[] = []
  const onStray = (err: unknown): void => { stray.push(err) }
  process.on('unhandledRejection', onStray)
  t.teardown(() => { process.off('unhandledRejection', onStray) })

  const conn = new RedisConnection({ url: redis.url, timeout: 200, maxReconnectDelay: 1 })
  t.teardown(() => conn.stop())
  await conn.start()
  const received: string[] = []
  let subscriptions = 0
  await conn.subscribe('tether:test-events', (m) => received.push(m), () => { subscriptions++ })
  await waitFor('the first subscription', () => subscriptions >= 1)

  // The killer's own connection is spared (SKIPME yes is the default). Each pair waits for its
  // replies, so the kills follow one another as fast as Redis answers, for a few seconds: the
  // subscriber reconnects every ~50 ms, and some kills land while its SUBSCRIBE is unanswered.
  const killer = new Redis({ port: redis.port, host: '127.0.0.1', lazyConnect: true })
  t.teardown(() => killer.disconnect())
  await killer.connect()
  const started = performance.now()
  let pairs = 0
  let killed = 0
  while (performance.now() - started < 3_000) {
    killed += Number(await killer.call('CLIENT', 'KILL', 'TYPE', 'normal'))
    killed += Number(await killer.call('CLIENT', 'KILL', 'TYPE', 'pubsub'))
    pairs++
  }
  t.comment(`${pairs} kill pairs killed ${killed} connections`)
  t.ok(killed > 40, 'Tether\'s connections were killed and came back many times')

  await waitFor('the subscription to be in place again', async () => (await redisCli(redis.port, 'PUBSUB', 'NUMSUB', 'tether:test-events')).split('\n')[1]?.trim() === '1')
  await waitFor('the main connection to be ready again', () => conn.status === 'ready')
  await waitFor('a message published after the kills to arrive', async () => {
    await redisCli(redis.port, 'PUBLISH', 'tether:test-events', 'after')
    return received.includes('after')
  })
  t.not(await conn.run('tether:k', (c) => c.get('tether:k')), FAILED, 'the main connection answers')
  // a rejection is reported after the microtask queue drains: give it one macrotask
  await new Promise((r) => setImmediate(r))
  t.same(stray.map((e) => String(e)).slice(0, 3), [], `no promise rejection was left unhandled (${stray.length} were)`)
})
