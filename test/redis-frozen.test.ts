// A Redis that freezes (SIGSTOP: a paused VM, a partition that drops packets) keeps its TCP
// connections up and answers nothing. Commands sent to it must not pile up in Tether's memory
// (each holds its value until a reply comes), the connection must be remade once it has been
// silent for `stallTimeout`, and a start-up against it must end (its ready check has no limit
// of its own in ioredis). Real redis-server processes, stopped and continued; real time is
// only polled with a deadline.
import t from 'tap'
import net from 'node:net'
import { FAILED, RedisConnection } from '../src/redis/connection.js'
import { startTether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { frozenRedis, redisCli, startRedisCluster, waitFor } from './fixtures/redis-server.js'
import { keySlot } from '../src/redis/key-slot.js'
import { request, startUpstream, testConfig } from './fixtures/upstream.js'
import { LogCapture } from './fixtures/log-capture.js'
import { onEvent, when } from './fixtures/wait.js'

t.test('commands to a frozen Redis: at most maxWaiting are held, the rest fail unsent, and a silent connection is remade (they fail, nothing held)', async (t) => {
  const { redis, freeze, thaw } = await frozenRedis(t)
  const conn = new RedisConnection({ url: redis.url, timeout: 50, stallTimeout: 400, maxWaiting: 100 })
  t.teardown(() => conn.stop())
  await conn.start()
  t.equal(await conn.run('tether:k', (c) => c.get('tether:k')), null, 'Redis answers before the freeze')
  freeze()
  const value = 'x'.repeat(10_000)
  const calls = Array.from({ length: 500 }, (_, i) => conn.run(`tether:k${i}`, (c) => c.eval("return redis.call('SET', KEYS[1], ARGV[1])", 1, `tether:k${i}`, value)))
  t.equal(conn.waiting, 100, 'no more than maxWaiting commands are held')
  t.same(new Set(await Promise.all(calls)), new Set([FAILED]), 'every call fails (at once, or after its timeout)')
  await waitFor('the silent connection to be closed and its commands released', () => conn.waiting === 0, 5_000)
  t.equal(conn.status, 'degraded')
  thaw()
  await waitFor('Redis to be ready again', () => conn.status === 'ready', 10_000)
  t.equal(await conn.run('tether:k', (c) => c.get('tether:k')), null, 'and to answer')
  const exists = async (key: string): Promise<string> => (await redisCli(redis.port, 'EXISTS', key)).trim()
  t.equal(await exists('tether:k499'), '0', 'a command failed by the cap was never sent')
  t.comment(`commands held when Redis froze and applied when it resumed (the first of them): ${await exists('tether:k0')}`)
})

t.test('a Redis frozen before start-up: start() ends (the ready check is bounded), Tether serves, and Redis is used once it answers', async (t) => {
  const { redis, freeze, thaw } = await frozenRedis(t)
  freeze()
  const conn = new RedisConnection({ url: redis.url, timeout: 50, stallTimeout: 300 })
  t.teardown(() => conn.stop())
  const started = conn.start().then(() => 'started')
  t.equal(await Promise.race([started, new Promise((r) => setTimeout(r, 10_000, 'hung'))]), 'started', 'start() resolves while Redis is frozen')
  t.equal(conn.status, 'degraded')

  const app = await startUpstream('app-0')
  t.teardown(() => app.close())
  const cfg = testConfig([app], { state: { store: 'redis', timeout: 50, redis: { url: redis.url } } })
  const tether = await Promise.race([startTether(cfg, { logger: createLogger('silent') }), new Promise<null>((r) => setTimeout(r, 10_000, null))])
  t.ok(tether, 'Tether starts against a frozen Redis')
  if (tether === null) return
  t.teardown(() => tether.close(0))
  t.equal((await request(`${tether.url}/`)).status, 200, 'and serves')
  thaw()
  await waitFor('the connection to be ready once Redis answers', () => conn.status === 'ready', 10_000)
})

t.test('a frozen Cluster shard: its calls wait within its own room, and the other shards keep answering and stay up', async (t) => {
  const cluster = await startRedisCluster(3)
  t.teardown(() => cluster.stop())
  const conn = new RedisConnection({ nodes: [...cluster.addresses], timeout: 50, stallTimeout: 10_000, maxWaiting: 50 })
  t.teardown(() => conn.stop())
  await conn.start()
  await waitFor('every shard up', () => conn.nodes().length === 3 && conn.nodes().every((n) => n.status === 'up'), 10_000)
  // a key per shard, by CLUSTER NODES' slot ranges
  const ranges = (await redisCli(cluster.nodes[0]!.port, 'CLUSTER', 'NODES')).trim().split('\n').flatMap((line) => {
    const f = line.split(' ')
    const port = Number(/:(\d+)@/.exec(f[1]!)![1])
    return f.slice(8).map((r) => r.split('-').map(Number)).map(([from, to]) => ({ from: from!, to: to ?? from!, port }))
  })
  const keyOf = new Map<number, string>()
  for (let i = 0; keyOf.size < 3 && i < 1_000; i++) {
    const key = `tether:probe-${i}`
    const slot = keySlot(key)
    const port = ranges.find((r) => slot >= r.from && slot <= r.to)!.port
    if (!keyOf.has(port)) keyOf.set(port, key)
  }
  const frozen = cluster.nodes[0]!
  const pid = Number(/process_id:(\d+)/.exec(await redisCli(frozen.port, 'INFO', 'server'))![1])
  process.kill(pid, 'SIGSTOP')
  t.teardown(() => { try { process.kill(pid, 'SIGCONT') } catch { /* gone */ } })
  const stuck = keyOf.get(frozen.port)!
  const held = await Promise.all(Array.from({ length: 200 }, () => conn.run(stuck, (c) => c.get(stuck))))
  t.same(new Set(held), new Set([FAILED]), 'calls for the frozen shard fail')
  t.ok(conn.waiting <= 50, `no more than maxWaiting wait on it (${conn.waiting})`)
  for (const [port, key] of keyOf) {
    if (port === frozen.port) continue
    t.equal(await conn.run(key, (c) => c.get(key)), null, `shard ${port} still answers`)
  }
  const others = conn.nodes().filter((n) => n.address !== `127.0.0.1:${frozen.port}`)
  t.same(others.map((n) => n.status), ['up', 'up'], 'and stays up')
  process.kill(pid, 'SIGCONT')
})


t.test('a client that leaves during a graceful stop, while its request waits for a frozen Redis, is logged client_abort: the grace period did not end', async (t) => {
  // every connection closed before the grace period ended (the client left): nothing was cut
  // by Tether, yet the stop marked the forwarder cut off all the same, and the request, sent
  // on once the lookup gave up, was logged TETHER_SHUTTING_DOWN
  const { redis, freeze } = await frozenRedis(t)
  let reached = 0
  const app = await startUpstream('app-0', (_req, res) => { reached++; res.end('ok') })
  t.teardown(() => app.close())
  const logs = new LogCapture()
  const cfg = testConfig([app], { affinity: { key: 'header', header: { name: 'X-Tenant' }, shared: 'redis' }, state: { store: 'redis', timeout: 1_000, redis: { url: redis.url } } })
  const tether = await startTether(cfg, { logger: createLogger('info', logs) })
  freeze()
  const arrived = new Promise<void>((resolve) => tether.listener.server.once('request', () => resolve()))
  const c = net.connect(tether.port, '127.0.0.1')
  c.on('error', () => undefined)
  c.write('GET /wait HTTP/1.1\r\nHost: x\r\nX-Tenant: u1\r\n\r\n')
  await arrived // its path now waits for the shared table's lookup (Redis frozen)
  const stopped = tether.close(10_000)
  c.destroy()
  await stopped
  await when(onEvent(logs, 'record'), () => logs.access().length === 1, 5_000, 'the access line')
  t.match(logs.access()[0], { path: '/wait', status: 0, outcome: 'client_abort' }, 'its client left: not cut by the stop')
  t.equal(reached, 0)
})
