// A Redis that refuses writes for a reason other than memory is not down either: `MISCONF`
// (`stop-writes-on-bgsave-error yes` after a failed RDB save: it refuses every write, and PING
// too, while it serves reads) and `NOREPLICAS` (`min-replicas-to-write` with fewer good replicas).
// Its refusals are answers of a live node: the node is told to refuse writes (with the reason
// and what to do), reads and rehydration go on, and it is told when it takes writes again. Real
// redis-server processes: MISCONF made by a BGSAVE into a directory that was deleted.
import t, { type Test } from 'tap'
import http from 'node:http'
import { startTether } from '../src/app.js'
import { DEFAULTS, type Config } from '../src/config/schema.js'
import { createLogger } from '../src/observability/logger.js'
import { RedisCheckpointStore } from '../src/redis/checkpoint-store.js'
import { RedisConnection, type RedisNodeEvent, type RedisStatus } from '../src/redis/connection.js'
import { writesRefusedBy, writesRefusedCause } from '../src/redis/reply-errors.js'
import { startCounter } from './fixtures/counter-upstream.js'
import { LogCapture } from './fixtures/log-capture.js'
import { redisCli, startRedisCluster, waitFor, type RedisServer } from './fixtures/redis-server.js'
import { breakDisk, fixDisk, HOUR, refusingRedis } from './fixtures/redis-refusing.js'
import { testConfig, type DeepPartial } from './fixtures/upstream.js'
import { CookieJar, get } from './fixtures/users.js'


/** A Redis whose `dir` may be changed (see refusingRedis). */
const redisFor = (t: Test): Promise<RedisServer> => refusingRedis(t)

/**
 * Makes `redis` refuse writes with MISCONF (see breakDisk); checks that a write and a PING are
 * refused and a read is served.
 */
async function misconf(t: Test, redis: RedisServer): Promise<void> {
  await breakDisk(redis.port)
  t.match(await redisCli(redis.port, 'SET', 'misconf:probe', '1'), /^MISCONF/, 'the server refuses writes (MISCONF)')
  t.match(await redisCli(redis.port, 'PING'), /^MISCONF/, 'and PING')
  t.equal(await redisCli(redis.port, 'GET', 'misconf:probe'), '\n', 'and serves reads')
}

/** Puts refused: at least `min`, over at least `ms` of real time (a node is judged failing on 5 failures in a row over 250 ms). */
async function refusedPuts(store: RedisCheckpointStore, min = 10, ms = 400): Promise<string[]> {
  const results: string[] = []
  const t0 = performance.now()
  for (let i = 0; results.length < min || performance.now() - t0 < ms; i++) {
    results.push(await store.put(`new-${i}`, { value: 'x', version: 1, upstream: 'app-0', epoch: 0, writtenAt: 1 }, HOUR))
  }
  return [...new Set(results)]
}

/** A connection and checkpoint store on `redis`, started, with one checkpoint stored under 'u'; its node events and status changes recorded. */
async function storeOn(t: Test, redis: RedisServer, timeout = 2_000): Promise<{ conn: RedisConnection; store: RedisCheckpointStore; events: RedisNodeEvent[]; statuses: RedisStatus[]; cp: { value: string; version: number; upstream: string; epoch: number; writtenAt: number } }> {
  const conn = new RedisConnection({ url: redis.url, keyPrefix: 'wr:', timeout })
  t.teardown(() => conn.stop())
  const store = new RedisCheckpointStore({ connection: conn })
  await conn.start()
  const cp = { value: 'cart=3', version: 4, upstream: 'app-0', epoch: 0, writtenAt: 1 }
  t.equal(await store.put('u', cp, HOUR), 'stored')
  const events: RedisNodeEvent[] = []
  const statuses: RedisStatus[] = []
  conn.onNode((e) => events.push(e))
  conn.onStatus((s) => statuses.push(s))
  return { conn, store, events, statuses, cp }
}

t.test('the replies that refuse writes as a whole, by reason; what each tells the operator to do', async (t) => {
  const rdb = "MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist to disk. Commands that may modify the data set are disabled, because this instance is configured to report errors during writes if RDB snapshotting fails (stop-writes-on-bgsave-error option). Please check the Redis logs for details about the RDB error."
  const aof = 'MISCONF Errors writing to the AOF file: No space left on device'
  const cases: [string, string | null][] = [
    ["OOM command not allowed when used memory > 'maxmemory'.", 'oom'],
    [rdb, 'misconf'],
    [`${rdb} script: 756928dd1246249109cfe8475bfa267e967ea948, on @user_script:1.`, 'misconf'],
    [aof, 'misconf'],
    ['NOREPLICAS Not enough good replicas to write.', 'noreplicas'],
    // Redis < 7 wraps what a script's call got
    ['ERR Error running script (call to f_45e87c07f6aff394093b73766a458691d0460655): @user_script:1: @user_script: 1: -MISCONF Redis is configured to save RDB snapshots', 'misconf'],
    ['READONLY You can\'t write against a read only replica.', null],
    ['ERR something about MISCONF', null],
    ['NOPERM No permissions to access a key', null],
  ]
  for (const [error, reason] of cases) t.equal(writesRefusedBy(error), reason, error)
  t.equal(writesRefusedCause('misconf', rdb), 'MISCONF: the last RDB save failed; fix the disk (free space, the permissions of its dir: see its log) or set stop-writes-on-bgsave-error no')
  t.match(writesRefusedCause('misconf', aof), /^MISCONF: a write to its append-only file failed; fix the disk/, 'an AOF write error: stop-writes-on-bgsave-error would not help')
  t.notMatch(writesRefusedCause('misconf', aof), /stop-writes-on-bgsave-error/)
  t.match(writesRefusedCause('noreplicas', 'NOREPLICAS Not enough good replicas to write.'), /min-replicas-to-write/)
})

t.test('MISCONF is not down: the refusals are answers; the node is told refusing writes, reads go on, and writes taken is told once the disk is fixed', async (t) => {
  const redis = await redisFor(t)
  const { conn, store, events, statuses, cp } = await storeOn(t, redis)
  await misconf(t, redis)
  t.same(await refusedPuts(store), ['unavailable'], 'every new checkpoint refused (MISCONF)')
  t.equal(conn.status, 'ready', 'the connection stays ready')
  t.same(statuses, [], 'no status change')
  t.match(conn.nodes(), [{ status: 'up', full: false, writesRefused: 'misconf', failed: 0, summary: /refuses writes \(MISCONF: .*stop-writes-on-bgsave-error no/ }], 'the node is up, refusing writes for MISCONF (not full)')
  t.same(events.map((e) => e.kind), ['writes_refused'], 'told once, never down')
  t.match(events[0]?.node, { address: `127.0.0.1:${redis.port}`, writesRefused: 'misconf', lastError: /^MISCONF/ })
  t.same(await store.get('u'), { status: 'found', checkpoint: cp }, 'reads (rehydration) go on')
  await fixDisk(redis)
  await waitFor('writes taken told', () => events.some((e) => e.kind === 'writes_taken'), 5_000)
  t.same(events.map((e) => e.kind), ['writes_refused', 'writes_taken'], 'told once, with no write needed (the node is probed)')
  t.match(conn.nodes(), [{ status: 'up', writesRefused: null }])
  t.equal(await store.put('v', cp, HOUR), 'stored', 'writes are taken again')
})

t.test('MISCONF refuses PING too: the PING probes of a node with a failure in its window, all refused, keep it up', async (t) => {
  const redis = await redisFor(t)
  const { conn, store, events, statuses } = await storeOn(t, redis, 100)
  await misconf(t, redis)
  // one read with no reply in time (every client paused): the node has a failure in its window
  // and is probed with PING every 500 ms for 5 s, each PING refused (MISCONF)
  await redisCli(redis.port, 'CLIENT', 'PAUSE', '300', 'ALL')
  t.same(await store.get('u'), { status: 'unavailable' }, 'no reply within 100 ms')
  const refusedPings = async (): Promise<number> => Number(/cmdstat_ping:.*rejected_calls=(\d+)/.exec(await redisCli(redis.port, 'INFO', 'commandstats'))?.[1] ?? 0)
  await waitFor('6 PING probes refused', async () => await refusedPings() >= 6, 10_000)
  t.equal(conn.status, 'ready', 'the connection stays ready')
  t.same(statuses, [], 'no status change')
  t.match(conn.nodes(), [{ status: 'up', writesRefused: 'misconf' }], 'the node is up, refusing writes')
  t.same(events.map((e) => e.kind), ['writes_refused'], 'never down')
})

t.test('NOREPLICAS is not down: too few replicas for min-replicas-to-write; told, reads go on, and writes taken once it is lowered', async (t) => {
  const redis = await redisFor(t)
  const { conn, store, events, statuses, cp } = await storeOn(t, redis)
  await redisCli(redis.port, 'CONFIG', 'SET', 'min-replicas-to-write', '1')
  t.same(await refusedPuts(store), ['unavailable'], 'every new checkpoint refused (NOREPLICAS)')
  t.equal(conn.status, 'ready', 'the connection stays ready')
  t.same(statuses, [], 'no status change')
  t.match(conn.nodes(), [{ status: 'up', full: false, writesRefused: 'noreplicas', failed: 0, summary: /refuses writes \(NOREPLICAS: .*min-replicas-to-write/ }])
  t.same(events.map((e) => e.kind), ['writes_refused'], 'told once, never down')
  t.same(await store.get('u'), { status: 'found', checkpoint: cp }, 'reads (rehydration) go on')
  await redisCli(redis.port, 'CONFIG', 'SET', 'min-replicas-to-write', '0')
  await waitFor('writes taken told', () => events.some((e) => e.kind === 'writes_taken'), 5_000)
  t.same(events.map((e) => e.kind), ['writes_refused', 'writes_taken'])
  t.equal(await store.put('v', cp, HOUR), 'stored', 'writes are taken again')
})

t.test('a Cluster shard with too few replicas refuses writes for its slots only: it stays up, the others store; writes taken is found by probing that shard', async (t) => {
  const cluster = await startRedisCluster(3)
  t.teardown(() => cluster.stop())
  const conn = new RedisConnection({ nodes: [...cluster.addresses], keyPrefix: 'wr:', timeout: 2_000 })
  t.teardown(() => conn.stop())
  const store = new RedisCheckpointStore({ connection: conn })
  await conn.start()
  const refusing = `127.0.0.1:${cluster.nodes[0]!.port}`
  /** The next session whose checkpoint is on that shard (`on`), or on another (each session once). */
  let i = 0
  const session = (on: boolean): string => {
    while ((conn.nodeOf(`wr:cp:{s-${i}}`) === refusing) !== on) i++
    return `s-${i++}`
  }
  const events: RedisNodeEvent[] = []
  const statuses: RedisStatus[] = []
  conn.onNode((e) => events.push(e))
  conn.onStatus((s) => statuses.push(s))
  await redisCli(cluster.nodes[0]!.port, 'CONFIG', 'SET', 'min-replicas-to-write', '1')
  const cp = { value: 'x', version: 1, upstream: 'app-0', epoch: 0, writtenAt: 1 }
  const results = new Set<string>()
  const t0 = performance.now()
  for (let n = 0; n < 10 || performance.now() - t0 < 400; n++) results.add(await store.put(session(true), cp, HOUR))
  t.same([...results], ['unavailable'], 'every checkpoint of that shard refused (NOREPLICAS)')
  t.equal(await store.put(session(false), cp, HOUR), 'stored', 'another shard stores')
  t.equal(conn.status, 'ready', 'the connection stays ready')
  t.same(statuses, [], 'no status change')
  t.match(conn.nodes().find((n) => n.address === refusing), { status: 'up', writesRefused: 'noreplicas', role: 'shard' })
  t.same(events.map((e) => [e.kind, e.node.address]), [['writes_refused', refusing]], 'that shard told, never down')
  await redisCli(cluster.nodes[0]!.port, 'CONFIG', 'SET', 'min-replicas-to-write', '0')
  await waitFor('writes taken told', () => events.some((e) => e.kind === 'writes_taken'), 5_000)
  t.same(events.map((e) => [e.kind, e.node.address]), [['writes_refused', refusing], ['writes_taken', refusing]])
  t.equal(await store.put(session(true), cp, HOUR), 'stored', 'writes are taken again')
})

t.test('a node that refuses writes for another reason than the one it was told for is told again with the new reason', async (t) => {
  const redis = await redisFor(t)
  const { conn, store, events } = await storeOn(t, redis)
  await redisCli(redis.port, 'CONFIG', 'SET', 'min-replicas-to-write', '1')
  t.same(await refusedPuts(store, 1, 0), ['unavailable'])
  await misconf(t, redis)
  await redisCli(redis.port, 'CONFIG', 'SET', 'min-replicas-to-write', '0')
  // (no call: the probe finds MISCONF)
  await waitFor('MISCONF told', () => events.some((e) => e.node.writesRefused === 'misconf'), 5_000)
  t.same(events.map((e) => [e.kind, e.node.writesRefused]), [['writes_refused', 'noreplicas'], ['writes_refused', 'misconf']])
  t.match(conn.nodes(), [{ status: 'up', writesRefused: 'misconf' }])
  await redisCli(redis.port, 'CONFIG', 'SET', 'stop-writes-on-bgsave-error', 'no')
  await waitFor('writes taken told', () => events.some((e) => e.kind === 'writes_taken'), 5_000)
  t.equal(await store.put('v', { value: 'x', version: 1, upstream: 'app-0', epoch: 0, writtenAt: 1 }, HOUR), 'stored', 'stop-writes-on-bgsave-error no: writes taken')
})

t.test('Tether over a MISCONF Redis: ready, tether_redis_up 1, /readyz and a warn name the reason and the fix; requests and a moved user\'s rehydration unaffected; an info line once fixed', async (t) => {
  const server = await redisFor(t)
  const apps = [await startCounter('app-0'), await startCounter('app-1')]
  t.teardown(() => Promise.all(apps.map((a) => a.kill())))
  const logs = new LogCapture()
  const cfg = testConfig(apps, {
    affinity: { cookie: { ...DEFAULTS.affinity.cookie, secret: ['redis-misconf-secret-0123456789abcdef'] } },
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
  await misconf(t, server)
  // other users' first checkpoints are refused (MISCONF), over more than the 250 ms a streak needs
  const t0 = performance.now()
  const statuses = new Set<number>()
  for (let i = 0; i < 10 || performance.now() - t0 < 400; i++) statuses.add((await get(tt.url, agent, { 'x-tenant': `other-${i}` })).status)
  t.same([...statuses], [200], 'every request answered (a refused checkpoint fails no request)')
  const metrics = (await get(`${tt.adminUrl}/metrics`, agent)).body
  const node = `127.0.0.1:${server.port}`
  t.match(metrics, /^tether_redis_up 1$/m, 'tether_redis_up stays 1')
  t.match(metrics, new RegExp(`^tether_redis_node_up\\{node="${node}"\\} 1$`, 'm'))
  t.match(metrics, new RegExp(`^tether_redis_node_writes_refused_state\\{node="${node}",reason="misconf"\\} 1$`, 'm'), 'writes refused, reason misconf')
  t.match(metrics, new RegExp(`^tether_redis_node_writes_refused_state\\{node="${node}",reason="oom"\\} 0$`, 'm'))
  t.match(metrics, new RegExp(`^tether_redis_node_full_state\\{node="${node}"\\} 0$`, 'm'), 'not full')
  t.match(metrics, /^tether_checkpoints_total\{result="unavailable"\} [1-9]/m, 'the refused checkpoints counted as unavailable')
  const ready = await get(`${tt.adminUrl}/readyz`, agent)
  t.equal(ready.status, 200, '/readyz stays ready')
  t.match(JSON.parse(ready.body), { ready: true, degraded: [new RegExp(`^redis ${node} refuses writes \\(MISCONF: the last RDB save failed; fix the disk .*or set stop-writes-on-bgsave-error no\\).*reads \\(rehydration\\) and routing unaffected`)] }, 'and lists the node refusing writes, why and what to do')
  t.match(logs.records.filter((r) => r['level'] === 40 && /redis node/.test(String(r['msg']))), [{ node, reason: 'misconf', msg: /^redis node refuses writes \(MISCONF: the last RDB save failed; fix the disk .*or set stop-writes-on-bgsave-error no\)/ }], 'one warn: writes refused, not down')
  // the user's upstream goes: the move is forced, the state comes from the Redis that refuses writes
  await apps.find((a) => a.id === first.id)!.kill()
  const moved = JSON.parse((await get(tt.url, agent, {}, jar)).body) as { id: string; n: number; rehydrated: boolean }
  t.not(moved.id, first.id)
  t.equal(moved.rehydrated, true, 'rehydrated from the Redis that refuses writes')
  t.equal(moved.n, second.n + 1, 'with the state it held')
  await fixDisk(server)
  await waitFor('the info line', () => logs.records.some((r) => /^redis node takes writes again/.test(String(r['msg']))), 5_000)
  t.match(logs.records.find((r) => /^redis node takes writes again/.test(String(r['msg']))), { node, reason: 'misconf', refused_for_ms: Number })
  const after = await get(`${tt.adminUrl}/readyz`, agent)
  t.same(JSON.parse(after.body).degraded, [], 'nothing degraded')
  t.match((await get(`${tt.adminUrl}/metrics`, agent)).body, new RegExp(`^tether_redis_node_writes_refused_state\\{node="${node}",reason="misconf"\\} 0$`, 'm'))
})
