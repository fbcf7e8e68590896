// A full Redis under `maxmemory-policy noeviction` refuses every write that could grow its memory
// (OOM), but nothing stored is lost: what Tether stores for an active user keeps living there
// (its TTL renewed with PEXPIRE, which a full Redis allows), while new bindings and newer
// checkpoints wait for room. A real redis-server made full with `CONFIG SET maxmemory 1`.
import t, { type Test } from 'tap'
import http from 'node:http'
import { startTether } from '../src/app.js'
import { DEFAULTS, type Config } from '../src/config/schema.js'
import { createLogger } from '../src/observability/logger.js'
import { RedisBindings } from '../src/redis/binding-store.js'
import { RedisCheckpointStore } from '../src/redis/checkpoint-store.js'
import { RedisConnection, type RedisNodeEvent, type RedisStatus } from '../src/redis/connection.js'
import { startCounter } from './fixtures/counter-upstream.js'
import { LogCapture } from './fixtures/log-capture.js'
import { redisCli, startRedis, waitFor, type RedisServer } from './fixtures/redis-server.js'
import { testConfig, type DeepPartial } from './fixtures/upstream.js'
import { CookieJar, get } from './fixtures/users.js'

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

/** Puts refused by a full Redis: at least `min`, over at least `ms` of real time (a node is judged failing on 5 failures in a row over 250 ms). */
async function refusedPuts(store: RedisCheckpointStore, min = 10, ms = 400): Promise<string[]> {
  const results: string[] = []
  const t0 = performance.now()
  for (let i = 0; results.length < min || performance.now() - t0 < ms; i++) {
    results.push(await store.put(`new-${i}`, { value: 'x', version: 1, upstream: 'app-0', epoch: 0, writtenAt: 1 }, HOUR))
  }
  return [...new Set(results)]
}

t.test('a full Redis is not down: its OOM refusals are answers; the node is told full, reads go on, and room is told once it has some', async (t) => {
  const { redis, conn, fill } = await fullRedis(t)
  const store = new RedisCheckpointStore({ connection: conn })
  await conn.start()
  const cp = { value: 'cart=3', version: 4, upstream: 'app-0', epoch: 0, writtenAt: 1 }
  t.equal(await store.put('u', cp, HOUR), 'stored')
  const events: RedisNodeEvent[] = []
  const statuses: RedisStatus[] = []
  conn.onNode((e) => events.push(e))
  conn.onStatus((s) => statuses.push(s))
  await fill()
  t.same(await refusedPuts(store), ['unavailable'], 'every new checkpoint refused (OOM)')
  t.equal(conn.status, 'ready', 'the connection stays ready')
  t.same(statuses, [], 'no status change')
  t.match(conn.nodes(), [{ status: 'up', full: true, summary: /full/ }], 'the node is up, and full')
  t.same(events.map((e) => e.kind), ['writes_refused'], 'told once: full (writes refused), never down')
  t.match(events[0]?.node, { address: `127.0.0.1:${redis.port}`, full: true, writesRefused: 'oom', lastError: /^OOM/ })
  t.same(await store.get('u'), { status: 'found', checkpoint: cp }, 'reads (rehydration) go on')
  await redisCli(redis.port, 'CONFIG', 'SET', 'maxmemory', '0')
  await waitFor('room told', () => events.some((e) => e.kind === 'writes_taken'), 5_000)
  t.same(events.map((e) => e.kind), ['writes_refused', 'writes_taken'], 'room told once, with no write needed (the node is probed)')
  t.match(conn.nodes(), [{ status: 'up', full: false }])
  t.equal(await store.put('v', cp, HOUR), 'stored', 'writes are taken again')
})

t.test('Tether over a full Redis: ready, tether_redis_up 1, the node full in /readyz, a metric and a log line; a moved user still gets their state', async (t) => {
  const server = await startRedis({ args: ['--maxmemory-policy', 'noeviction'] })
  t.teardown(() => server.stop())
  const apps = [await startCounter('app-0'), await startCounter('app-1')]
  t.teardown(() => Promise.all(apps.map((a) => a.kill())))
  const logs = new LogCapture()
  const cfg = testConfig(apps, {
    affinity: { cookie: { ...DEFAULTS.affinity.cookie, secret: ['redis-full-secret-0123456789abcdef'] } },
    state: { store: 'redis', timeout: 1_000, redis: { url: `redis://127.0.0.1:${server.port}` } satisfies DeepPartial<Config['state']['redis']> },
  })
  const tt = await startTether(cfg, { logger: createLogger('info', logs) })
  t.teardown(() => tt.close(0))
  const agent = new http.Agent({ keepAlive: true })
  t.teardown(() => agent.destroy())
  const jar = new CookieJar()
  const first = JSON.parse((await get(tt.url, agent, {}, jar)).body) as { id: string; n: number }
  const second = JSON.parse((await get(tt.url, agent, {}, jar)).body) as { id: string; n: number }
  t.equal(second.id, first.id, 'sticky')
  await redisCli(server.port, 'CONFIG', 'SET', 'maxmemory', '1')
  // other users' first checkpoints are refused (OOM), over more than the 250 ms a streak needs
  const t0 = performance.now()
  for (let i = 0; i < 10 || performance.now() - t0 < 400; i++) await get(tt.url, agent, { 'x-tenant': `other-${i}` })
  const metrics = (await get(`${tt.adminUrl}/metrics`, agent)).body
  const node = `127.0.0.1:${server.port}`
  t.match(metrics, /^tether_redis_up 1$/m, 'tether_redis_up stays 1')
  t.match(metrics, new RegExp(`^tether_redis_node_up\\{node="${node}"\\} 1$`, 'm'))
  t.match(metrics, new RegExp(`^tether_redis_node_full_state\\{node="${node}"\\} 1$`, 'm'), 'tether_redis_node_full_state 1')
  t.match(metrics, /^tether_checkpoints_total\{result="unavailable"\} [1-9]/m, 'the refused checkpoints counted as unavailable')
  const ready = await get(`${tt.adminUrl}/readyz`, agent)
  t.equal(ready.status, 200, '/readyz stays ready')
  t.match(JSON.parse(ready.body), { ready: true, degraded: [new RegExp(`^redis ${node} full`)] }, 'and lists the node full')
  t.match(logs.records.filter((r) => r['level'] === 40 && /redis node/.test(String(r['msg']))), [{ node, msg: /^redis node full/ }], 'one warn: full, not down')
  // the user's upstream goes: the move is forced, the state comes from the full Redis
  await apps.find((a) => a.id === first.id)!.kill()
  const moved = JSON.parse((await get(tt.url, agent, {}, jar)).body) as { id: string; n: number; rehydrated: boolean }
  t.not(moved.id, first.id)
  t.equal(moved.rehydrated, true, 'rehydrated from the full Redis')
  t.equal(moved.n, second.n + 1, 'with the state it held')
  await redisCli(server.port, 'CONFIG', 'SET', 'maxmemory', '0')
  await waitFor('the info line', () => logs.records.some((r) => r['msg'] === 'redis node has room again: writes are taken'), 5_000)
  const after = await get(`${tt.adminUrl}/readyz`, agent)
  t.same(JSON.parse(after.body).degraded, [], 'nothing degraded')
  t.match((await get(`${tt.adminUrl}/metrics`, agent)).body, new RegExp(`^tether_redis_node_full_state\\{node="${node}"\\} 0$`, 'm'))
})
