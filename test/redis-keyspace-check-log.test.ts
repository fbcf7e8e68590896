// The keyspace watch's log of checks that throw (src/redis/keyspace-watch.ts logChecks): one warn
// a spell, however the error's numbers change from one check to the next, and one info line once a
// check completes. A real redis-server, the real watch and ProblemLog; fake timers drive the ticks.
import t from 'tap'
import { RedisBindings } from '../src/redis/binding-store.js'
import { RedisConnection } from '../src/redis/connection.js'
import { KEYSPACE_CHECK_MS, KeyspaceWatch, MARKER, heldList, logChecks } from '../src/redis/keyspace-watch.js'
import { createLogger } from '../src/observability/logger.js'
import { ProblemLog } from '../src/observability/problem-log.js'
import { startRedis, redisCli } from './fixtures/redis-server.js'
import { waitFor } from './fixtures/wait.js'
import { FakeTimers } from './fixtures/timers.js'
import { LogCapture } from './fixtures/log-capture.js'

t.test('checks throwing errors that differ only in their numbers: one warn, then one info when a check completes', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const conn = new RedisConnection({ url: redis.url, keyPrefix: 'kl:', timeout: 500 })
  const timers = new FakeTimers()
  const capture = new LogCapture()
  const tell = logChecks(new ProblemLog(createLogger('info', capture), timers.clock))
  let copies = 0
  let checks = 0
  const failing = 5
  const watch = new KeyspaceWatch({
    redis: conn, bindings: new RedisBindings(conn, 60_000), idleTimeout: 60_000, now: () => 1_000, timers,
    // the copy of the table throws, with a number that changes each time (a timeout in ms, a count)
    held: () => { copies++; if (copies <= failing) throw new Error(`the table timed out after ${100 + copies * 7} ms`); return heldList([]) },
    onCheck: (error) => { checks++; tell(error) },
  })
  await conn.start()
  t.teardown(async () => { watch.stop(); await conn.stop() })
  watch.start()
  await waitFor(() => checks === 1, 5_000, 'the first check')
  for (let i = 1; i <= failing + 1; i++) {
    await redisCli(redis.port, 'DEL', `kl:${MARKER}`) // a loss: the check copies the table
    timers.advance(KEYSPACE_CHECK_MS)
    await waitFor(() => checks === i + 1, 5_000, `check ${i + 1}`)
  }
  await waitFor(() => capture.records.some((r) => r['msg'] === 'redis keyspace check: completing again'), 5_000, 'the info line')
  const told = capture.records.filter((r) => String(r['msg']).startsWith('redis keyspace check'))
  t.same(told.map((r) => [r['level'], r['msg']]), [
    [40, 'redis keyspace check failed: the next one runs at its tick'],
    [30, 'redis keyspace check: completing again'],
  ], 'one warn for the five failed checks, one info at the end')
  t.equal(told[0]!['err'], 'the table timed out after 107 ms', 'the warn tells the first error as it was')
  t.match(told[1], { for_ms: failing * KEYSPACE_CHECK_MS, unlogged: failing - 1 }, 'the info counts the checks not logged')
})
