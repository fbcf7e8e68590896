// A full Redis under `maxmemory-policy noeviction` refuses every write that could grow its memory
// (OOM), but nothing stored is lost: what Tether stores for an active user keeps living there
// (its TTL renewed with PEXPIRE, which a full Redis allows), while new bindings and newer
// checkpoints wait for room. A real redis-server made full with `CONFIG SET maxmemory 1`.
import t, { type Test } from 'tap'
import { RedisBindings } from '../src/redis/binding-store.js'
import { RedisCheckpointStore } from '../src/redis/checkpoint-store.js'
import { RedisConnection } from '../src/redis/connection.js'
import { redisCli, startRedis, type RedisServer } from './fixtures/redis-server.js'

const MINUTE = 60_000
const HOUR = 3_600_000

/** A Redis with room, and `fill()` that makes it full; `conn` is started by the caller once its scripts are defined. */
async function fullRedis(t: Test): Promise<{ redis: RedisServer; conn: RedisConnection; fill: () => Promise<void> }> {
  const redis = await startRedis({ args: ['--maxmemory-policy', 'noeviction'] })
  t.teardown(() => redis.stop())
  const conn = new RedisConnection({ url: redis.url, keyPrefix: 'full:', timeout: 2_000 })
  t.teardown(() => conn.stop())
  return { redis, conn, fill: async () => { await redisCli(redis.port, 'CONFIG', 'SET', 'maxmemory', '1') } }
}

const pttl = async (redis: RedisServer, key: string): Promise<number> => Number((await redisCli(redis.port, 'PTTL', key)).trim())

t.test('a full Redis: an active user\'s shared binding is renewed (the same binding, its placement time too); a new one fails', async (t) => {
  const { redis, conn, fill } = await fullRedis(t)
  const bindings = new RedisBindings(conn, HOUR)
  await conn.start()
  t.equal(await bindings.write('timed', 'app-1', 2, MINUTE, 5_000), 'written')
  t.equal(await bindings.write('untimed', 'app-0', 0, MINUTE), 'written')
  await fill()
  t.equal(await bindings.write('new', 'app-0', 0), 'failed', 'a new binding needs room: refused (OOM)')
  t.match(await redisCli(redis.port, 'SET', 'probe', '1'), /OOM/, 'the server refuses writes')
  t.equal(await bindings.write('timed', 'app-1', 2, HOUR, 5_000), 'written', 'the same binding at the same placement time: renewed')
  t.equal(await bindings.write('timed', 'app-1', 2, HOUR), 'written', 'the same binding by a writer that does not know the time: renewed')
  t.equal(await bindings.write('untimed', 'app-0', 0, HOUR), 'written', 'a binding without a placement time: renewed')
  for (const key of ['full:af:{timed}', 'full:ap:{timed}', 'full:af:{untimed}']) {
    const left = await pttl(redis, key)
    t.ok(left > MINUTE, `${key} lives on (PTTL ${left} ms)`)
  }
  t.same(await bindings.lookup('timed'), { upstream: 'app-1', epoch: 2, placedAt: 5_000 }, 'unchanged')
  t.same(await bindings.lookup('untimed'), { upstream: 'app-0', epoch: 0, placedAt: null }, 'unchanged')
  t.equal(await bindings.write('timed', 'app-2', 3, HOUR, 9_000), 'failed', 'a move needs a write: refused (OOM), the binding stays')
  t.same(await bindings.lookup('timed'), { upstream: 'app-1', epoch: 2, placedAt: 5_000 })
})

t.test('a full Redis: an active user\'s checkpoint sent again unchanged lives on; a newer one is unavailable', async (t) => {
  const { redis, conn, fill } = await fullRedis(t)
  const store = new RedisCheckpointStore({ connection: conn })
  await conn.start()
  const cp = { value: 'cart=3', version: 4, upstream: 'app-0', epoch: 0, writtenAt: 1 }
  t.equal(await store.put('u', cp, MINUTE), 'stored')
  await fill()
  t.equal(await store.put('u', { ...cp, writtenAt: 2 }, HOUR), 'stale', 'the same state again: refused as stale, not as a failure')
  t.ok(await pttl(redis, 'full:cp:{u}') > MINUTE, 'and its TTL started again')
  t.equal(await store.put('u', { ...cp, value: 'cart=4', version: 5, writtenAt: 3 }, HOUR), 'unavailable', 'a newer checkpoint needs a write: refused (OOM)')
  t.same(await store.get('u'), { status: 'found', checkpoint: cp }, 'the stored one is unchanged')
})
