// The Redis checkpoint store against a real standalone redis-server: the shared CheckpointStore
// contract, the key layout, RESP2, URL credentials, and what happens when Redis dies, stalls or
// comes back. Real time is only ever polled with a deadline; nothing sleeps for a fixed time.
import t from 'tap'
import { RedisCheckpointStore, checkpointKey } from '../src/redis/checkpoint-store.js'
import type { RedisCheckpointStoreOptions } from '../src/redis/checkpoint-store.js'
import type { Checkpoint, CheckpointStoreStatus } from '../src/state/checkpoint-store.js'
import { checkpointStoreConformance } from './fixtures/checkpoint-store-conformance.js'
import { redisCli, startRedis, startRedisSentinel, waitFor } from './fixtures/redis-server.js'
import { FakeTimers } from './fixtures/timers.js'
import type { Test } from 'tap'

const HOUR = 3_600_000
const cp = (value: string, version: number | null = null): Checkpoint => ({ value, version, upstream: 'app-0', epoch: 1, writtenAt: 1_764_086_400_000 })

let prefixes = 0
/** A store with a key prefix of its own, stopped at the end of `t`. */
function storeFor(t: Test, options: RedisCheckpointStoreOptions): RedisCheckpointStore {
  const store = new RedisCheckpointStore({ keyPrefix: `t${++prefixes}:`, ...options })
  t.teardown(() => store.stop())
  return store
}

/** Records every status change of `store`. */
function statusLog(store: RedisCheckpointStore): { status: CheckpointStoreStatus; detail: string }[] {
  const log: { status: CheckpointStoreStatus; detail: string }[] = []
  store.onStatus((status, detail) => log.push({ status, detail }))
  return log
}

t.test('RedisCheckpointStore (standalone) meets the CheckpointStore contract', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  checkpointStoreConformance(t, {
    make: async ({ maxBytes }) => {
      const store = new RedisCheckpointStore({ url: redis.url, keyPrefix: `c${++prefixes}:`, maxBytes, timeout: 1000 })
      await store.start()
      return store
    },
    shortTtl: 500, // real time: a few round trips fit in it on a loaded host (beforeExpiry retries one that did not)
    elapse: () => {},
    eventually: (what, check) => waitFor(what, check),
  })
})

t.test('a checkpoint is a hash under <prefix>cp:{<session>} with a millisecond TTL', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const store = storeFor(t, { url: redis.url, keyPrefix: 'tether:', timeout: 1000 })
  await store.start()
  t.equal(checkpointKey('tether:', 'abc'), 'tether:cp:{abc}')
  t.equal(await store.put('abc', { value: 'v', version: 4, upstream: 'app-3', epoch: 2, writtenAt: 5 }, 60_000), 'stored')
  t.same((await redisCli(redis.port, 'KEYS', '*')).trim().split('\n'), ['tether:cp:{abc}'])
  t.equal(
    (await redisCli(redis.port, 'HGETALL', 'tether:cp:{abc}')).trim(),
    ['value', 'v', 'version', '4', 'upstream', 'app-3', 'epoch', '2', 'writtenAt', '5', 'placedAt', '', 'placedWith', '5'].join('\n'), // placedAt '' (none)
  )
  const pttl = Number(await redisCli(redis.port, 'PTTL', 'tether:cp:{abc}'))
  t.ok(pttl > 50_000 && pttl <= 60_000, `PTTL ${pttl} is the TTL of the put`)
  t.equal(await store.put('abc', { value: 'old', version: 3, upstream: 'app-3', epoch: 2, writtenAt: 6 }, HOUR), 'stale')
  const extended = Number(await redisCli(redis.port, 'PTTL', 'tether:cp:{abc}'))
  t.ok(extended > 60_000 && extended <= HOUR, `a stale put extends the TTL to its own (the user is active): PTTL ${extended}`)
  t.match(await redisCli(redis.port, 'HGET', 'tether:cp:{abc}', 'value'), /^v\n?$/, 'and leaves the checkpoint as it was')
  t.equal(await store.put('abc', { value: 'old', version: 3, upstream: 'app-3', epoch: 2, writtenAt: 7 }, 60_000), 'stale')
  t.ok(Number(await redisCli(redis.port, 'PTTL', 'tether:cp:{abc}')) > 60_000, 'a stale put with a shorter TTL never shortens it')
  const line = (await redisCli(redis.port, 'CLIENT', 'LIST')).split('\n').find((l) => l.includes('name=tether '))
  t.match(line, /resp=2/, 'the client is named and speaks RESP2')
})

t.test('maxBytes counts the bytes Redis holds: a header value of latin1 bytes 0x80-0xFF is stored as two UTF-8 bytes each', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const store = storeFor(t, { url: redis.url, keyPrefix: 'tether:', maxBytes: 16, timeout: 1000 })
  await store.start()
  // what Node's HTTP parser gives for the bytes E9 E9 ... of a header line (latin1, a char a byte)
  const eight = '\xe9'.repeat(8)
  t.equal(store.valueBytes(eight), 16, 'each such character takes two bytes in Redis (ioredis sends UTF-8)')
  t.equal(store.valueBytes('x'.repeat(16)), 16, 'ASCII: a byte a character')
  t.equal(await store.put('at', cp(eight, 1), HOUR), 'stored', 'exactly maxBytes as stored fits')
  t.equal(Number(await redisCli(redis.port, 'HSTRLEN', 'tether:cp:{at}', 'value')), 16, 'Redis holds 16 bytes')
  t.same(await store.get('at'), { status: 'found', checkpoint: cp(eight, 1) }, 'and it reads back unchanged')
  t.equal(await store.put('over', cp('\xe9'.repeat(9), 1), HOUR), 'too_large', '9 characters, 18 bytes in Redis: over maxBytes')
  t.equal(await store.put('over', cp(`${'x'.repeat(15)}\xe9`, 1), HOUR), 'too_large', '16 characters, 17 bytes: over by one')
  t.equal((await redisCli(redis.port, 'EXISTS', 'tether:cp:{over}')).trim(), '0', 'nothing stored')
})

t.test('state.max_bytes over Redis: the protocol refuses a checkpoint by its bytes in Redis and logs that size', async (t) => {
  const { StateProtocol } = await import('../src/state/protocol.js')
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const store = storeFor(t, { url: redis.url, keyPrefix: 'tether:', maxBytes: 16, timeout: 1000 })
  await store.start()
  const told: [string, number][] = []
  const p = new StateProtocol(store, { header: 'X-Tether-State', maxBytes: 16, timeout: 1000, ttl: HOUR }, { now: () => 1 }, {
    checkpoint: (result, _key, bytes) => told.push([result, bytes]), rehydration: () => undefined, operation: () => undefined,
  })
  t.equal(await p.write('a', { value: '\xe9'.repeat(8), version: 1 }, 'app-0', 0), 'stored', '8 characters, 16 bytes: at the limit')
  t.equal(await p.write('b', { value: '\xe9'.repeat(9), version: 1 }, 'app-0', 0), 'too_large', '9 characters, 18 bytes in Redis')
  t.same(told, [['stored', 16], ['too_large', 18]], 'the sizes told (the too_large log line) are the bytes Redis would hold')
})

t.test('password and db come from the URL; an explicit password replaces the URL one', async (t) => {
  const redis = await startRedis({ args: ['--requirepass', 's3cret'] })
  t.teardown(() => redis.stop())
  const fromUrl = storeFor(t, { url: `redis://:s3cret@127.0.0.1:${redis.port}/3`, keyPrefix: 'u:', timeout: 1000 })
  await fromUrl.start()
  t.equal(fromUrl.status, 'ready')
  t.equal(await fromUrl.put('k', cp('v'), HOUR), 'stored')
  t.equal((await redisCli(redis.port, '--no-auth-warning', '-a', 's3cret', '-n', '3', 'EXISTS', 'u:cp:{k}')).trim(), '1', 'written to db 3')
  const explicit = storeFor(t, { url: `redis://:wrong@127.0.0.1:${redis.port}`, password: 's3cret', timeout: 1000 })
  await explicit.start()
  t.equal(await explicit.put('k', cp('v'), HOUR), 'stored')

  const wrong = storeFor(t, { url: `redis://:wrong@127.0.0.1:${redis.port}`, timeout: 1000, maxReconnectDelay: 100 })
  const log = statusLog(wrong)
  await t.resolves(wrong.start(), 'start resolves with a wrong password')
  t.equal(await wrong.put('k', cp('v'), HOUR), 'unavailable')
  t.same((await wrong.get('k')).status, 'unavailable')
  t.equal(wrong.status, 'degraded')
  t.notOk(log.some((e) => e.status === 'ready'), 'never ready')
})

t.test('with sentinels, the master is found through Sentinel', async (t) => {
  const redis = await startRedis({ args: ['--requirepass', 's3cret'] })
  t.teardown(() => redis.stop())
  const sentinel = await startRedisSentinel(redis, 'mymaster')
  t.teardown(() => sentinel.stop())
  const store = storeFor(t, { sentinels: [{ host: sentinel.host, port: sentinel.port }], name: 'mymaster', password: 's3cret', keyPrefix: 's:', timeout: 1000 })
  await store.start()
  t.equal(store.status, 'ready')
  t.equal(await store.put('k', cp('via sentinel', 1), HOUR), 'stored')
  t.equal((await redisCli(redis.port, '--no-auth-warning', '-a', 's3cret', 'HGET', 's:cp:{k}', 'value')).trim(), 'via sentinel', 'written to the master')
})

t.test('when Redis is killed, calls resolve unavailable; when it returns, the store recovers', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const store = storeFor(t, { url: redis.url, timeout: 200, maxReconnectDelay: 100 })
  const log = statusLog(store)
  await store.start()
  t.equal(store.status, 'ready')
  t.equal(await store.put('k', cp('before', 1), HOUR), 'stored')

  await redis.kill()
  await waitFor('the degraded status', () => store.status === 'degraded')
  t.match(log.at(-1), { status: 'degraded' })
  t.ok(log.at(-1)?.detail, `the change carries a detail: ${log.at(-1)?.detail}`)
  t.equal(await store.put('k', cp('during', 2), HOUR), 'unavailable')
  t.same(await store.get('k'), { status: 'unavailable' })
  await t.resolves(store.delete('k'))

  await redis.restart()
  await waitFor('the ready status', () => store.status === 'ready')
  t.same(log.at(-1), { status: 'ready', detail: 'connected' })
  // --save '' means a restarted Redis is empty: persistence is Redis's job (RDB/AOF, replicas).
  t.same(await store.get('k'), { status: 'missing' }, 'this Redis kept nothing across the restart')
  t.equal(await store.put('k', cp('after', 1), HOUR), 'stored', 'the put script is loaded again (NOSCRIPT -> EVAL)')
  t.equal(await store.put('k', cp('after 2', 2), HOUR), 'stored')
  t.equal((await store.get('k')).status, 'found')
})

t.test('start resolves while Redis is down, and the store becomes ready when Redis comes up', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  await redis.kill()
  const store = storeFor(t, { url: redis.url, timeout: 200, maxReconnectDelay: 100 })
  const log = statusLog(store)
  await t.resolves(store.start())
  t.equal(store.status, 'degraded')
  t.equal(await store.put('k', cp('v'), HOUR), 'unavailable')
  await redis.restart()
  await waitFor('the ready status', () => store.status === 'ready')
  t.equal(await store.put('k', cp('v'), HOUR), 'stored')
  t.same(log.map((e) => e.status), ['ready'], 'one change, from the initial degraded to ready')
})

t.test('a stalled Redis costs a call no more than the timeout; the timed-out put may still apply later', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const store = storeFor(t, { url: redis.url, timeout: 50 })
  await store.start()
  t.equal(await store.put('k', cp('v1', 1), HOUR), 'stored')
  // Pauses every client's commands for 1 s (redis-cli itself included, so no UNPAUSE).
  await redisCli(redis.port, 'CLIENT', 'PAUSE', '1000', 'ALL')
  const started = performance.now()
  const [put, get] = await Promise.all([store.put('k', cp('v2', 2), HOUR), store.get('k')])
  const elapsed = performance.now() - started
  t.equal(put, 'unavailable')
  t.same(get, { status: 'unavailable' })
  // Generous bound: it only proves the calls did not wait for the 1 s pause.
  t.ok(elapsed < 800, `both resolved after ${Math.round(elapsed)} ms, not after the pause`)
  // The timed-out put reaches Redis late; it may apply (a put reported 'unavailable' may or may
  // not have happened), and the store keeps working.
  await waitFor('the paused put to be applied', async () => {
    const r = await store.get('k')
    return r.status === 'found' && r.checkpoint.version === 2
  })
  t.pass("the put reported 'unavailable' was applied late: unavailable means unknown, not failed")
  // The polls above timed out for the whole pause: the node may be reported failing, and is up
  // again once its failures leave the 5 s window.
  await waitFor('ready again after the stall', () => store.status === 'ready', 10_000)
  t.equal(await store.put('k', cp('v3', 3), HOUR), 'stored')
})

t.test('command deadlines run on the injected timers: a stalled call fails when its timer fires, not before', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const timers = new FakeTimers()
  const store = storeFor(t, { url: redis.url, timeout: 50, timers })
  await store.start()
  await redisCli(redis.port, 'CLIENT', 'PAUSE', '2000', 'WRITE')
  let result: string | null = null
  const put = store.put('k', cp('v', 1), HOUR).then((r) => (result = r))
  await timers.scheduled(50)
  t.equal(result, null, 'the call waits while its deadline timer has not fired')
  timers.advance(50)
  await put
  t.equal(result, 'unavailable', 'the fake deadline ended it')
})

t.test('stop closes the connection, stops reconnecting and leaves no timers or sockets', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const resources = (): string[] => process.getActiveResourcesInfo().filter((r) => r === 'Timeout' || r === 'TCPSocketWrap').sort()
  const before = resources()

  const store = new RedisCheckpointStore({ url: redis.url, timeout: 1000 })
  const log = statusLog(store)
  await store.start()
  t.equal(await store.put('k', cp('v'), HOUR), 'stored')
  await store.stop()
  t.equal(store.status, 'degraded')
  t.same(log.at(-1), { status: 'degraded', detail: 'stopped' })
  t.equal(await store.put('k', cp('v'), HOUR), 'unavailable')
  t.same(await store.get('k'), { status: 'unavailable' })
  await store.stop()

  const reconnecting = new RedisCheckpointStore({ url: redis.url, timeout: 1000, maxReconnectDelay: 5000 })
  await reconnecting.start()
  await redis.kill()
  await waitFor('the degraded status', () => reconnecting.status === 'degraded')
  await reconnecting.stop()
  await waitFor('no leftover timers or sockets', () => resources().join() === before.join())
  t.same(resources(), before)
})

t.test('invalid options are rejected with a precise message', async (t) => {
  const cases: [RedisCheckpointStoreOptions, RegExp][] = [
    [{}, /exactly one of url, sentinels \(with name\) or nodes/],
    [{ url: 'redis://a', nodes: [{ host: 'b', port: 1 }] }, /exactly one of/],
    [{ url: 'http://a' }, /must start with redis:\/\/ or rediss:\/\//],
    [{ url: 'not a url' }, /url is not a URL/],
    [{ url: 'redis://a/x' }, /db number/],
    [{ url: 'redis://a:6379/0?password=s3cret' }, /^RedisCheckpointStore: url must have no query \(\?\.\.\.\): none of its parameters is read; [^]*$/],
    [{ sentinels: [{ host: 'a', port: 26379 }] }, /master name/],
    [{ nodes: [] }, /at least one address/],
    [{ url: 'redis://a', keyPrefix: 'x{' }, /keyPrefix must not contain/],
    [{ url: 'redis://a', timeout: 0 }, /timeout must be a number > 0/],
    [{ url: 'redis://a', maxBytes: -1 }, /maxBytes must be an integer >= 0/],
  ]
  for (const [options, message] of cases) t.throws(() => new RedisCheckpointStore(options), message, JSON.stringify(options))
  const store = new RedisCheckpointStore({ url: 'rediss://user:p%40ss@[::1]:6380/2' })
  t.equal(store.status, 'degraded', 'a store is degraded until started')
  t.equal(await store.put('k', cp('v'), HOUR), 'unavailable', 'and answers unavailable')
})

t.test('the fixture refuses to run without redis-server and says how to install it', async (t) => {
  const path = process.env.PATH
  process.env.PATH = '/nonexistent'
  try {
    await t.rejects(startRedis(), /^redis-server not found on PATH: install it \(Debian\/Ubuntu: apt-get install -y redis-server/)
  } finally {
    process.env.PATH = path
  }
})

t.test("rolling upgrade: a placedAt left by a checkpoint that an older Tether's script wrote over (it rewrites the other fields only) orders nothing", async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const store = storeFor(t, { url: redis.url, keyPrefix: 'tether:', timeout: 1000 })
  await store.start()
  // app-1's checkpoint of a placement at 5000, through a new Tether
  t.equal(await store.put('k', { value: 'app-1 v1', version: 1, upstream: 'app-1', epoch: 0, writtenAt: 5_100, placedAt: 5_000 }, HOUR), 'stored')
  // an older Tether stores app-0's checkpoint of epoch 0 (what its script writes: HSET of these fields, PEXPIRE)
  await redisCli(redis.port, 'HSET', 'tether:cp:{k}', 'value', 'app-0 v9', 'version', '9', 'upstream', 'app-0', 'epoch', '0', 'writtenAt', '6000')
  t.same(await store.get('k'), { status: 'found', checkpoint: { value: 'app-0 v9', version: 9, upstream: 'app-0', epoch: 0, writtenAt: 6_000 } }, "read without app-1's placedAt")
  // app-0's placement is unknown: a rival of another placement is ordered as over any record
  // without placedAt (written later, of a higher version: stored), not by app-1's placement
  t.equal(await store.put('k', { value: 'app-1 v10', version: 10, upstream: 'app-1', epoch: 0, writtenAt: 6_100, placedAt: 3_000 }, HOUR), 'stored')
})
