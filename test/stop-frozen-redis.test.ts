// A graceful stop whose Redis is frozen (SIGSTOP) while a checkpoint write waits for it: the
// stop ends a bounded time after its grace end (STOP_WAIT_MS, not `state.timeout`) and says in
// one warn line how many commands Redis left unanswered. A Redis that is only slow (it answers
// during that wait) loses nothing: the write is stored and no warning is logged.
import t from 'tap'
import type { Test } from 'tap'
import net from 'node:net'
import { FAILED, RedisConnection, STOP_WAIT_MS } from '../src/redis/connection.js'
import { heldHeadTether } from './fixtures/held-head.js'
import type { LogCapture } from './fixtures/log-capture.js'
import { frozenRedis, redisCli, startRedisCluster, waitFor } from './fixtures/redis-server.js'
import { onEvent, when, within } from './fixtures/wait.js'

const WARNING = 'redis did not answer before the stop: writes among these commands may not be stored'
/** Longer than any bound of the stop: a stop that waits for it fails the timing checks below. */
const STATE_TIMEOUT = 10_000

async function stopWithWriteWaiting(t: Test, slow: boolean): Promise<{ logs: LogCapture; stopMs: number; keys: () => Promise<string> }> {
  const { tether, logs, up, redis, freeze, thaw } = await heldHeadTether(t, STATE_TIMEOUT)
  freeze()
  const client = net.connect(tether.port, '127.0.0.1')
  client.on('error', () => undefined)
  t.teardown(() => client.destroy())
  client.write('GET /x HTTP/1.1\r\nHost: a\r\nX-Tenant: u1\r\n\r\n')
  // the upstream answered: the answer's head now waits for its checkpoint write (Redis frozen)
  await within(new Promise<void>((resolve) => up.server.once('request', (_req, res) => res.once('finish', () => resolve()))), 5000, 'the upstream answer')
  const started = performance.now()
  const stopped = tether.close(100)
  // the grace end cuts the request; its checkpoint write still waits for Redis
  await when(onEvent(logs, 'record'), () => logs.access().length === 1, 3000, 'the access line at the grace end')
  // a slow Redis: it answers 300 ms later, well within the stop's wait (a property of this
  // Redis, not a wait for something: the stop has sent its QUIT by then)
  if (slow) setTimeout(thaw, 300)
  await within(stopped, STATE_TIMEOUT, 'the stop')
  const stopMs = performance.now() - started
  if (!slow) thaw()
  return { logs, stopMs, keys: () => redisCli(redis.port, 'KEYS', '*') }
}

t.test('with Redis frozen, a stop ends about STOP_WAIT_MS after its grace end, not state.timeout, and warns once with the count of unanswered commands', async (t) => {
  const { logs, stopMs } = await stopWithWriteWaiting(t, false)
  t.ok(stopMs < 100 + STOP_WAIT_MS + 1500, `the stop ended ${Math.round(stopMs)} ms after it began (grace 100 ms, Redis wait ${STOP_WAIT_MS} ms; state.timeout ${STATE_TIMEOUT} ms)`)
  const warned = logs.records.filter((r) => r['msg'] === WARNING)
  t.equal(warned.length, 1, 'one warn line')
  t.match(warned[0], { level: 40, unanswered: 1 }, 'the checkpoint write, counted (no keys)')
  t.equal(logs.records.at(-1)?.['msg'], 'tether stopped', 'the stop logged its end')
})

t.test('with Redis only slow (answering during the stop\'s wait), the waiting checkpoint write is stored and nothing is warned', async (t) => {
  const { logs, keys } = await stopWithWriteWaiting(t, true)
  t.notOk(logs.records.some((r) => r['msg'] === WARNING), 'no warning: Redis answered everything')
  t.match(await keys(), /cp:/, 'the checkpoint is in Redis')
})

t.test('a write held by a frozen Redis still counts as unanswered when the connection\'s stall timeout closes it during the stop\'s wait', async (t) => {
  // the stall timeout (300 ms) ends the connection while stop() waits for QUIT (STOP_WAIT_MS):
  // the write and the QUIT fail with a closed connection, and no reply ever came for either
  const { redis, freeze } = await frozenRedis(t)
  const conn = new RedisConnection({ url: redis.url, timeout: 5_000, stallTimeout: 300 })
  t.teardown(() => conn.stop())
  await conn.start()
  freeze()
  const write = conn.run('tether:k', (c) => c.eval("return redis.call('SET', KEYS[1], 'v')", 1, 'tether:k'))
  t.equal(conn.waiting, 1, 'the write waits for the frozen Redis')
  t.equal(await conn.stop(), 1, 'the stop counts it unanswered')
  t.equal(await write, FAILED)
})

t.test('a Cluster with one frozen shard: the stop waits for QUIT once (not once a node in turn) and counts the write the frozen shard holds', async (t) => {
  const cluster = await startRedisCluster(3)
  t.teardown(() => cluster.stop())
  const conn = new RedisConnection({ nodes: [...cluster.addresses], timeout: 5_000, stallTimeout: 300 })
  t.teardown(() => conn.stop())
  await conn.start()
  await waitFor('every shard up', () => conn.nodes().length === 3 && conn.nodes().every((n) => n.status === 'up'), 10_000)
  const frozen = cluster.nodes[0]!
  const key = Array.from({ length: 1_000 }, (_, i) => `tether:k${i}`).find((k) => conn.nodeOf(k) === `127.0.0.1:${frozen.port}`)!
  const pid = Number(/process_id:(\d+)/.exec(await redisCli(frozen.port, 'INFO', 'server'))![1])
  process.kill(pid, 'SIGSTOP')
  t.teardown(() => { try { process.kill(pid, 'SIGCONT') } catch { /* gone */ } })
  const write = conn.run(key, (c) => c.eval("return redis.call('SET', KEYS[1], 'v')", 1, key))
  t.equal(conn.waiting, 1, 'the write waits for the frozen shard')
  const started = performance.now()
  t.equal(await conn.stop(), 1, 'the stop counts it unanswered')
  t.ok(performance.now() - started < STOP_WAIT_MS + 1_500, 'one wait for all the shards')
  t.equal(await write, FAILED)
})
