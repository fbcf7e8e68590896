// The server's major version (src/redis/connection.ts, #noteVersion) is read from the INFO of
// ioredis's own ready check, by wrapping its private `_readyCheck`: these tests fail loudly if an
// ioredis upgrade renames it or changes what its callback gets (the wrap would then be skipped
// quietly, and the Redis < 6 hints of authHint would go blind). Real redis-server and Sentinels.
import t from 'tap'
import { RedisConnection } from '../src/redis/connection.js'
import { redisCli, startRedis, startSentinelSet } from './fixtures/redis-server.js'

const major = async (port: number): Promise<number> => Number.parseInt(/redis_version:(\d+)/.exec(await redisCli(port, 'INFO', 'server'))?.[1] ?? 'NaN', 10)

t.test("standalone: the server's major version is known once connected, from the ready check's INFO", async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const conn = new RedisConnection({ url: `redis://127.0.0.1:${redis.port}`, keyPrefix: 'v:', timeout: 1_000, maxReconnectDelay: 200 })
  t.equal(conn.serverMajor, null, 'not known before a connection')
  await conn.start()
  t.teardown(() => conn.stop())
  t.equal(conn.serverMajor, await major(redis.port))
})

t.test("Sentinel: the master's major version is known once connected", async (t) => {
  const set = await startSentinelSet()
  t.teardown(() => set.stop())
  const conn = new RedisConnection({ sentinels: set.sentinels.map((s) => ({ host: '127.0.0.1', port: s.port })), name: set.name, keyPrefix: 'v:', timeout: 1_000, maxReconnectDelay: 200 })
  await conn.start()
  t.teardown(() => conn.stop())
  t.equal(conn.serverMajor, await major(set.master.port))
})

t.test('the known version is forgotten when the connection is lost, and stays unknown after a reconnect whose INFO cannot be read', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const conn = new RedisConnection({ url: `redis://127.0.0.1:${redis.port}`, keyPrefix: 'v:', timeout: 1_000, maxReconnectDelay: 200 })
  await conn.start()
  t.teardown(() => conn.stop())
  t.equal(conn.serverMajor, await major(redis.port), 'known once connected')
  // the next server behind the address (here the same one) lets the default user run no INFO:
  // the Redis client's ready check goes on without it (NOPERM), and reads no version
  await redisCli(redis.port, 'ACL', 'SETUSER', 'default', '-info')
  const seen: { status: string; major: number | null }[] = []
  const back = new Promise<void>((resolve) => conn.onStatus((status) => {
    seen.push({ status, major: conn.serverMajor })
    if (status === 'ready') resolve()
  }))
  await redisCli(redis.port, 'CLIENT', 'KILL', 'TYPE', 'normal')
  await back
  t.strictSame(seen[0], { status: 'degraded', major: null }, 'unknown once the connection is lost')
  t.equal(conn.serverMajor, null, 'unknown after the reconnect: never the last server\'s')
})
