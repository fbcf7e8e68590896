// A Redis that lost its keys (restarted without persistence, flushed) while Tether replicas kept
// routing by their own tables: they notice it through the marker key and write their bindings
// and admin drains back, so a replica started afterwards routes every user as they do. A real
// redis-server, real Tether replicas and child-process counter apps; nothing sleeps.
import t, { type Test } from 'tap'
import http from 'node:http'
import net from 'node:net'
import { once } from 'node:events'
import { startTether, type Tether } from '../src/app.js'
import { RedisBindings } from '../src/redis/binding-store.js'
import { RedisConnection } from '../src/redis/connection.js'
import { keySlot } from '../src/redis/key-slot.js'
import { KEYSPACE_CHECK_MS, KeyspaceWatch, MARKER, heldList, type HeldBinding, type WriteBack } from '../src/redis/keyspace-watch.js'
import { createLogger } from '../src/observability/logger.js'
import { DEFAULTS, type Config } from '../src/config/schema.js'
import { startRedis, startRedisCluster, redisCli, type RedisServer } from './fixtures/redis-server.js'
import { request, testConfig } from './fixtures/upstream.js'
import { waitFor } from './fixtures/wait.js'
import { CookieJar, agentFor, get } from './fixtures/users.js'
import { startCounter, type CounterAnswer } from './fixtures/counter-upstream.js'
import { tempFile } from './fixtures/cli.js'
import { freePort } from './fixtures/ports.js'
import { FakeTimers } from './fixtures/timers.js'
import { FakeClock } from './fixtures/clock.js'
import { LogCapture } from './fixtures/log-capture.js'
import { request as fresh, startPrimary, workersYaml } from './fixtures/primary-process.js'
import { startAll } from './fixtures/children.js'

let redis: RedisServer
t.before(async () => { redis = await startRedis() })
t.teardown(async () => { await redis.stop() })

const APP_COOKIE: Partial<Config['affinity']> = {
  key: 'app_cookie',
  app_cookie: { ...DEFAULTS.affinity.app_cookie, name: 'sid', fallback: 'random' },
}

const keysOf = async (pattern: string): Promise<string[]> =>
  (await redisCli(redis.port, '--scan', '--pattern', pattern)).trim().split('\n').filter(Boolean)

t.test('the watch: a marker absent or changed is a loss and writes the bindings back; unchanged is none', async (t) => {
  const conn = new RedisConnection({ url: redis.url, keyPrefix: 'kw:', timeout: 500 })
  const store = new RedisBindings(conn, 60_000)
  const held: HeldBinding[] = [
    { key: 'u1', upstream: 'app-1', epoch: 0, lastSeen: 1_000 },
    { key: 'u2', upstream: 'app-2', epoch: 1, lastSeen: 900 },
    { key: 'u3', upstream: 'app-0', epoch: 2, lastSeen: 800 },
  ]
  const lost: string[] = []
  const done: WriteBack[] = []
  let written = 0
  const watch = new KeyspaceWatch({
    redis: conn, bindings: store, held: () => heldList(held), idleTimeout: 60_000, now: () => 1_000, timers: { setTimeout, clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout) },
    onLost: (node) => lost.push(node), onWritten: (n) => { written += n }, onDone: (r) => done.push(r), batch: 2, pauseMs: 1,
  })
  await conn.start()
  t.teardown(async () => { watch.stop(); await conn.stop() })
  const marker = `kw:${MARKER}`

  await watch.check()
  const first = (await redisCli(redis.port, 'GET', marker)).trim()
  t.match(first, /^[0-9a-f-]{36}$/, 'the first check writes a random marker')
  t.same(lost, [], 'the first value seen is no loss')
  await watch.check()
  t.same(lost, [], 'an unchanged marker is no loss')
  t.equal((await redisCli(redis.port, 'GET', marker)).trim(), first, 'and stays as it was')

  // another replica moved u3 meanwhile (epoch 5): the write-back must not lower it
  await store.set('u3', 'app-1', 5)
  await redisCli(redis.port, 'DEL', marker)
  await watch.check()
  t.same(lost, [`127.0.0.1:${redis.port}`], 'an absent marker is a loss of the node')
  const second = (await redisCli(redis.port, 'GET', marker)).trim()
  t.not(second, first, 'a new marker is written')
  await waitFor(() => done.length === 1, 5_000, 'the write-back to finish')
  t.match(await Promise.all(['u1', 'u2', 'u3'].map((k) => store.lookup(k))), [
    { upstream: 'app-1', epoch: 0 }, { upstream: 'app-2', epoch: 1 }, { upstream: 'app-1', epoch: 5 },
  ], 'the bindings are back; the newer epoch another replica wrote stays')
  t.match(done[0], { written: 2, kept: 1 }, 'two written, one kept as Redis had it')
  t.equal(written, 2, 'onWritten counted the written ones')
  const ttl = Number((await redisCli(redis.port, 'PTTL', 'kw:af:{u3}')).trim())
  t.ok(Number((await redisCli(redis.port, 'PTTL', 'kw:af:{u2}')).trim()) <= 60_000 - 100, 'a binding written back keeps the idle time it has left')
  t.ok(ttl > 0, 'every binding has a TTL')

  await redisCli(redis.port, 'SET', marker, 'someone-else')
  await watch.check()
  t.equal(lost.length, 2, 'a marker with another value is a loss too')
  await waitFor(() => done.length === 2, 5_000, 'the second write-back')
  await watch.check()
  t.equal(lost.length, 2, 'and once seen, that value is no loss again')
})

const realTimers = { setTimeout: (fn: () => void, ms: number): unknown => setTimeout(fn, ms), clearTimeout: (h: unknown): void => clearTimeout(h as NodeJS.Timeout) }
const heldMany = (n: number): HeldBinding[] => Array.from({ length: n }, (_, i) => ({ key: `user-${i}`, upstream: `app-${i % 3}`, epoch: 0, lastSeen: 1_000 }))

t.test('the watch: a write-back step that fails waits and writes those bindings again, until Redis takes them', async (t) => {
  const conn = new RedisConnection({ url: redis.url, keyPrefix: 'kr:', timeout: 500 })
  const store = new RedisBindings(conn, 60_000)
  const done: WriteBack[] = []
  const watch = new KeyspaceWatch({
    redis: conn, bindings: store, held: () => heldList(heldMany(300)), idleTimeout: 60_000, now: () => 1_000, timers: realTimers,
    onDone: (r) => done.push(r), pauseMs: 1, retryMs: 50,
  })
  await conn.start()
  t.teardown(async () => { watch.stop(); await redisCli(redis.port, 'CONFIG', 'SET', 'maxmemory', '0'); await conn.stop() })
  await watch.check()
  // Redis refuses every write (OOM) while the write-back runs; reading the marker writes nothing
  await redisCli(redis.port, 'SET', `kr:${MARKER}`, 'replaced')
  await redisCli(redis.port, 'CONFIG', 'RESETSTAT')
  await redisCli(redis.port, 'CONFIG', 'SET', 'maxmemory', '1')
  await watch.check()
  const refused = async (): Promise<number> => Number(/errorstat_OOM:count=(\d+)/.exec(await redisCli(redis.port, 'INFO', 'errorstats'))?.[1] ?? 0)
  await waitFor(async () => (await refused()) >= 300, 5_000, 'the first batch to be refused three times', 20)
  t.equal(done.length, 0, 'the write-back is not done while Redis refuses its writes')
  t.equal((await keysOf('kr:af:*')).length, 0, 'nothing written yet')
  await redisCli(redis.port, 'CONFIG', 'SET', 'maxmemory', '0')
  await waitFor(() => done.length === 1, 5_000, 'the write-back to finish once Redis takes writes')
  t.match(done[0], { written: 300, kept: 0 }, 'every binding written, once each')
  t.equal((await keysOf('kr:af:*')).length, 300, 'all 300 in Redis')
})

t.test('the watch: a binding unpinned or placed afresh here during the write-back is written as the table holds it now, not as copied', async (t) => {
  const conn = new RedisConnection({ url: redis.url, keyPrefix: 'ku:', timeout: 500 })
  const store = new RedisBindings(conn, 60_000)
  const timers = new FakeTimers()
  timers.clock.set(1_000)
  const table = new Map<string, HeldBinding>([
    ['u1', { key: 'u1', upstream: 'app-1', epoch: 0, lastSeen: 1_000 }],
    ['u2', { key: 'u2', upstream: 'app-1', epoch: 0, lastSeen: 1_000 }],
    ['u3', { key: 'u3', upstream: 'app-0', epoch: 0, lastSeen: 1_000 }],
  ])
  const done: WriteBack[] = []
  const watch = new KeyspaceWatch({
    redis: conn, bindings: store, held: () => { const keys = [...table.keys()]; return { length: keys.length, at: (i) => table.get(keys[i]!) ?? null } },
    idleTimeout: 60_000, now: () => timers.clock.now(), timers, onDone: (r) => done.push(r), batch: 1, pauseMs: 20,
  })
  await conn.start()
  t.teardown(async () => { watch.stop(); await conn.stop() })
  await watch.check()
  await redisCli(redis.port, 'DEL', `ku:${MARKER}`)
  await watch.check()
  await timers.scheduled(20) // u1 written, the pause before u2
  // meanwhile the application deleted u2's cookie (unpinned: its binding deleted), and u3 was
  // unpinned and placed afresh on app-2 at epoch 0 (written through): the copy is out of date
  table.delete('u2')
  await store.delete('u2')
  table.set('u3', { key: 'u3', upstream: 'app-2', epoch: 0, lastSeen: 1_010 })
  t.equal(await store.write('u3', 'app-2', 0), 'written')
  await waitFor(() => { timers.advance(20); return done.length === 1 }, 5_000, 'the write-back to finish')
  t.match(await Promise.all(['u1', 'u2', 'u3'].map((k) => store.lookup(k))), [
    { upstream: 'app-1', epoch: 0 }, null, { upstream: 'app-2', epoch: 0 },
  ], 'u2 is not brought back, u3 keeps the placement it has now (not the copied app-0 that would win the tie)')
})

t.test('the watch: a step reads a bounded number of bindings, however many of the snapshot are gone', async (t) => {
  const conn = new RedisConnection({ url: redis.url, keyPrefix: 'kg:', timeout: 500 })
  const store = new RedisBindings(conn, 60_000)
  const timers = new FakeTimers()
  const N = 20_000
  let reads = 0
  const done: WriteBack[] = []
  // a snapshot whose bindings are all gone (expired, unpinned) but the last one
  const last: HeldBinding = { key: 'the-last', upstream: 'app-1', epoch: 0, lastSeen: 1_000 }
  const watch = new KeyspaceWatch({
    redis: conn, bindings: store, held: () => ({ length: N, at: (i) => { reads++; return i === N - 1 ? last : null } }),
    idleTimeout: 60_000, now: () => 1_000, timers, onDone: (r) => done.push(r), pauseMs: 20,
  })
  await conn.start()
  t.teardown(async () => { watch.stop(); await conn.stop() })
  await watch.check()
  await redisCli(redis.port, 'DEL', `kg:${MARKER}`)
  await watch.check()
  await timers.scheduled(20)
  t.ok(reads <= 2_000, `the first step read ${reads} of the ${N} (at most 2,000), then paused`)
  await waitFor(() => { timers.advance(20); return done.length === 1 }, 5_000, 'the write-back to finish')
  t.match(done[0], { written: 1 }, 'the one left is written back')
  t.match(await store.lookup('the-last'), { upstream: 'app-1', epoch: 0 })
})

t.test('the watch: a check that throws is told to onCheck, and the next tick still checks', async (t) => {
  const conn = new RedisConnection({ url: redis.url, keyPrefix: 'kt:', timeout: 500 })
  const timers = new FakeTimers()
  const lost: string[] = []
  const checks: (string | null)[] = []
  let copies = 0
  const watch = new KeyspaceWatch({
    redis: conn, bindings: new RedisBindings(conn, 60_000), idleTimeout: 60_000, now: () => 1_000, timers,
    // the first copy of the table throws (a seam the watch does not control: the caller's table)
    held: () => { if (++copies === 1) throw new Error('the table is gone'); return heldList([]) },
    onLost: (node) => lost.push(node), onCheck: (error) => checks.push(error),
  })
  await conn.start()
  t.teardown(async () => { watch.stop(); await conn.stop() })
  watch.start()
  await waitFor(() => checks.length === 1, 5_000, 'the first check')
  await redisCli(redis.port, 'DEL', `kt:${MARKER}`)
  timers.advance(KEYSPACE_CHECK_MS)
  await waitFor(() => checks.length === 2, 5_000, 'the tick\'s check to be told')
  t.same(checks, [null, 'the table is gone'], 'the throwing check is told with its error')
  await timers.scheduled(KEYSPACE_CHECK_MS)
  t.pass('the next tick is armed')
  await redisCli(redis.port, 'DEL', `kt:${MARKER}`)
  timers.advance(KEYSPACE_CHECK_MS)
  await waitFor(() => checks.length === 3, 5_000, 'the next tick\'s check')
  t.equal(checks[2], null, 'and it completes')
  t.same(lost, [`127.0.0.1:${redis.port}`, `127.0.0.1:${redis.port}`], 'both losses seen')
})

t.test('the watch: a loss whose check threw before its write-back started is written back by the next check (its loss told once)', async (t) => {
  const conn = new RedisConnection({ url: redis.url, keyPrefix: 'kh:', timeout: 500 })
  const store = new RedisBindings(conn, 60_000)
  const checks: (string | null)[] = []
  const done: WriteBack[] = []
  const lost: string[] = []
  let copies = 0
  const watch = new KeyspaceWatch({
    redis: conn, bindings: store, idleTimeout: 60_000, now: () => 1_000, timers: new FakeTimers(),
    // the first copy of the table, at the loss, throws
    held: () => { if (++copies === 1) throw new Error('the table is gone'); return heldList([{ key: 'u1', upstream: 'app-1', epoch: 0, lastSeen: 1_000 }]) },
    onCheck: (error) => checks.push(error), onDone: (r) => done.push(r), onLost: (node) => lost.push(node),
  })
  await conn.start()
  t.teardown(async () => { watch.stop(); await conn.stop() })
  await watch.check()
  await redisCli(redis.port, 'DEL', `kh:${MARKER}`)
  await watch.check()
  t.same(checks, [null, 'the table is gone'], 'the check at the loss threw')
  await watch.check() // the next one (nothing lost since)
  await waitFor(() => done.length === 1, 5_000, 'the write-back to finish')
  t.match(await store.lookup('u1'), { upstream: 'app-1', epoch: 0 }, 'the binding is back')
  await watch.check()
  t.same(lost, [`127.0.0.1:${redis.port}`], 'the loss told once (not again by each check after it)')
  t.same(checks, [null, 'the table is gone', null, null])
  t.equal(done.length, 1, 'written back once')
})

t.test('the watch: a check in flight at stop() is not told to onCheck once it ends', async (t) => {
  const conn = new RedisConnection({ url: redis.url, keyPrefix: 'kz:', timeout: 500 })
  const checks: (string | null)[] = []
  const watch = new KeyspaceWatch({
    redis: conn, bindings: null, held: () => heldList([]), idleTimeout: 60_000, now: () => 1_000, timers: new FakeTimers(), onCheck: (error) => checks.push(error),
  })
  await conn.start()
  t.teardown(() => conn.stop())
  await watch.check()
  const inFlight = watch.check()
  watch.stop()
  await inFlight
  t.same(checks, [null], 'only the check that ended before stop() is told')
})

t.test('the watch: a check asked for while one is in flight runs again right after it (one queued at most), so a loss after the in-flight read is seen', async (t) => {
  const own = await startRedis()
  t.teardown(() => own.stop())
  const pid = Number(/process_id:(\d+)/.exec(await redisCli(own.port, 'INFO', 'server'))![1])
  // fake timers: no command deadline runs out while Redis is stopped
  const conn = new RedisConnection({ url: own.url, keyPrefix: 'kq:', timers: new FakeTimers(), stallTimeout: 60_000 })
  const lost: string[] = []
  const watch = new KeyspaceWatch({
    redis: conn, bindings: null, held: () => heldList([]), idleTimeout: 60_000, now: () => 1_000, timers: new FakeTimers(), onLost: (node) => lost.push(node),
  })
  await conn.start()
  const raw = net.connect(own.port, '127.0.0.1')
  await once(raw, 'connect')
  t.teardown(async () => { try { process.kill(pid, 'SIGCONT') } catch { /* gone */ } raw.destroy(); watch.stop(); await conn.stop() })
  await watch.check() // the marker seen
  const reads = async (): Promise<number> => Number(/cmdstat_evalsha:calls=(\d+)/.exec(await redisCli(own.port, 'INFO', 'commandstats'))?.[1] ?? 0)
  const before = await reads()
  process.kill(pid, 'SIGSTOP')
  let firstDone = false
  const first = watch.check() // a tick's check: its read waits in the socket
  void first.then(() => { firstDone = true })
  raw.write(`DEL kq:${MARKER}\r\n`) // the keys are lost right after that read (Redis takes both in order once it runs)
  const again = watch.check() // the reconnect's check, asked while the first is in flight
  const third = watch.check()
  t.equal(third, again, 'a third ask joins the one queued')
  t.not(again, first, 'the ask is not joined to the check in flight')
  process.kill(pid, 'SIGCONT')
  await again
  t.ok(firstDone, 'the queued check ran after the one in flight')
  t.same(lost, [`127.0.0.1:${own.port}`], 'the loss is seen at once, not at the next tick')
  t.equal(await reads() - before, 2, 'two marker reads: the one in flight and one queued')
})

t.test('the watch: stop() while a write-back step waits for Redis leaves no timer behind', async (t) => {
  const conn = new RedisConnection({ url: redis.url, keyPrefix: 'ks:', timeout: 300 })
  const store = new RedisBindings(conn, 60_000)
  let settled = 0
  const counted = Object.assign(Object.create(store) as RedisBindings, {
    write: async (...a: Parameters<RedisBindings['write']>) => { try { return await store.write(...a) } finally { settled++ } },
  })
  const timers = new FakeTimers()
  const watch = new KeyspaceWatch({
    redis: conn, bindings: counted, held: () => heldList(heldMany(10)), idleTimeout: 60_000, now: () => 1_000, timers, batch: 5, pauseMs: 20, retryMs: 1_000,
  })
  await conn.start()
  t.teardown(async () => { watch.stop(); await redisCli(redis.port, 'CLIENT', 'UNPAUSE'); await conn.stop() })
  await watch.check()
  await redisCli(redis.port, 'SET', `ks:${MARKER}`, 'replaced')
  await watch.check()
  await timers.scheduled(20) // the first step written, the pause before the second
  await redisCli(redis.port, 'CLIENT', 'PAUSE', '2000', 'WRITE') // Redis stops answering writes (300 ms timeout)
  timers.advance(20) // the second step's writes go out...
  await waitFor(() => settled === 5, 2_000, 'the first step')
  await new Promise((resolve) => setImmediate(resolve))
  watch.stop() // ...and the watch stops while they wait
  await waitFor(() => settled === 10, 5_000, 'the second step\'s writes to time out')
  await new Promise((resolve) => setImmediate(resolve))
  t.same(timers.pending(), [], 'no retry timer set after stop()')
})

t.test('the watch with Redis Cluster: one marker per master; a restarted master gets back only its own slots\' bindings', async (t) => {
  const cluster = await startRedisCluster(3)
  t.teardown(() => cluster.stop())
  const conn = new RedisConnection({ nodes: cluster.addresses, keyPrefix: 'kc:', timeout: 500 })
  const store = new RedisBindings(conn, 60_000)
  const lost: string[] = []
  const done: WriteBack[] = []
  const held = heldMany(90)
  const watch = new KeyspaceWatch({
    redis: conn, bindings: store, held: () => heldList(held), idleTimeout: 60_000, now: () => 1_000, timers: realTimers,
    onLost: (node) => lost.push(node), onDone: (r) => done.push(r), checkMs: 100,
  })
  await conn.start()
  t.teardown(async () => { watch.stop(); await conn.stop() })
  for (const b of held) t.equal(await store.write(b.key, b.upstream, b.epoch), 'written', `${b.key} stored`)
  await watch.check()
  const markers = conn.keysPerNode(MARKER)
  t.equal(markers.size, 3, 'one marker key per master')
  for (const [node, key] of markers) {
    const port = Number(node.split(':')[1])
    t.equal((await redisCli(port, 'EXISTS', key)).trim(), '1', `${key} lives on ${node}`)
  }
  const victim = cluster.nodes[1]!
  const address = `127.0.0.1:${victim.port}`
  const mine = held.filter((b) => conn.nodeOf(store.keyOf(b.key)) === address)
  t.ok(mine.length > 0 && mine.length < held.length, `${mine.length} of ${held.length} bindings live on ${address}`)
  watch.start()
  await victim.kill()
  await victim.restart() // its cluster config survives (the same slots), its data does not
  await waitFor(() => done.length === 1, 15_000, 'the restarted master to get its bindings back', 20)
  t.same(lost, [address], 'only the restarted master lost its keyspace')
  t.match(done[0], { node: address, written: mine.length, kept: 0 }, 'only its own slots\' bindings are written back')
  t.equal((await redisCli(victim.port, 'DBSIZE')).trim(), String(mine.length + 1), 'it holds them again, and its marker')
})

t.test('the watch with Redis Cluster: every master lost at once costs one copy of the table, each master gets its own bindings', async (t) => {
  const cluster = await startRedisCluster(3)
  t.teardown(() => cluster.stop())
  const conn = new RedisConnection({ nodes: cluster.addresses, keyPrefix: 'ka:', timeout: 500 })
  const store = new RedisBindings(conn, 60_000)
  const lost: string[] = []
  const done: WriteBack[] = []
  const held = heldMany(90)
  let copies = 0
  const watch = new KeyspaceWatch({
    redis: conn, bindings: store, held: () => { copies++; return heldList(held) }, idleTimeout: 60_000, now: () => 1_000, timers: realTimers,
    onLost: (node) => lost.push(node), onDone: (r) => done.push(r),
  })
  await conn.start()
  t.teardown(async () => { watch.stop(); await conn.stop() })
  await watch.check()
  t.equal(conn.keysPerNode(MARKER).size, 3)
  for (const node of cluster.nodes) await redisCli(node.port, 'FLUSHALL')
  await watch.check() // not started: this one check sees all three
  t.equal(lost.length, 3, 'every master lost its keys')
  await waitFor(() => done.length === 3, 5_000, 'the three write-backs')
  t.equal(copies, 1, 'the table was copied once for the three')
  t.equal(done.reduce((n, r) => n + r.written, 0), held.length, 'each binding written once, to its own master')
  for (const node of cluster.nodes) {
    const address = `127.0.0.1:${node.port}`
    const mine = held.filter((b) => conn.nodeOf(store.keyOf(b.key)) === address).length
    t.equal((await redisCli(node.port, 'DBSIZE')).trim(), String(mine + 1), `${address} holds its ${mine} and its marker`)
  }
})

t.test('the watch with Redis Cluster: a binding of the lost master whose slot moves to another master during the write-back is still written back', async (t) => {
  const cluster = await startRedisCluster(3)
  t.teardown(() => cluster.stop())
  const conn = new RedisConnection({ nodes: cluster.addresses, keyPrefix: 'km:', timeout: 500 })
  const store = new RedisBindings(conn, 60_000)
  const done: WriteBack[] = []
  const held = heldMany(90)
  const timers = new FakeTimers()
  const watch = new KeyspaceWatch({
    redis: conn, bindings: store, held: () => heldList(held), idleTimeout: 60_000, now: () => 1_000, timers,
    onDone: (r) => done.push(r), batch: 1, pauseMs: 20,
  })
  await conn.start()
  t.teardown(async () => { watch.stop(); await conn.stop() })
  await watch.check()
  const [target, victim] = [cluster.nodes[0]!, cluster.nodes[1]!]
  const address = `127.0.0.1:${victim.port}`
  const mine = held.filter((b) => conn.nodeOf(store.keyOf(b.key)) === address)
  const moving = mine[mine.length - 1]!
  const slot = keySlot(store.keyOf(moving.key))
  t.ok(mine.filter((b) => keySlot(store.keyOf(b.key)) === slot).length === 1, 'the last of the victim\'s bindings is alone in its slot')
  await redisCli(victim.port, 'FLUSHALL')
  await watch.check()
  await timers.scheduled(20) // the first of its bindings written; the rest wait
  // the slot of its last binding moves to another master (empty: nothing to migrate)
  const id = async (port: number): Promise<string> => (await redisCli(port, 'CLUSTER', 'MYID')).trim()
  const [targetId, victimId] = [await id(target.port), await id(victim.port)]
  await redisCli(target.port, 'CLUSTER', 'SETSLOT', String(slot), 'IMPORTING', victimId)
  await redisCli(victim.port, 'CLUSTER', 'SETSLOT', String(slot), 'MIGRATING', targetId)
  for (const node of cluster.nodes) await redisCli(node.port, 'CLUSTER', 'SETSLOT', String(slot), 'NODE', targetId)
  // the connection learns it from the MOVED answer
  const key = store.keyOf(moving.key)
  await waitFor(async () => { await conn.run(key, (c) => c.exists(key)); return conn.nodeOf(key) === `127.0.0.1:${target.port}` }, 5_000, 'the connection to see the slot moved')
  await waitFor(() => { timers.advance(20); return done.length === 1 }, 10_000, 'the write-back to finish')
  t.match(await store.lookup(moving.key), { upstream: moving.upstream, epoch: moving.epoch }, 'the binding is back, on the master that serves its slot now')
  t.match(done[0], { node: address, written: mine.length }, 'every binding the victim held is written back')
})

/** A Tether replica sharing affinity and health through Redis under `prefix`. */
async function replica(t: Test, ups: readonly { id: string; url: string }[], prefix: string): Promise<Tether> {
  const cfg = testConfig(ups, {
    affinity: { ...APP_COOKIE, shared: 'redis' },
    health: { shared: 'redis', active: { path: null }, passive: { base_ejection: 300, max_ejection: 300 } },
    state: { store: 'redis', timeout: 200, redis: { url: redis.url, key_prefix: prefix } },
  })
  const tt = await startTether(cfg, { logger: createLogger('silent') })
  t.teardown(() => tt.close(0))
  return tt
}

async function ask(url: string, agent: http.Agent, jar: CookieJar): Promise<CounterAnswer> {
  const r = await get(url, agent, {}, jar)
  if (r.status !== 200) throw new Error(`${url}: status ${r.status}: ${r.body.trim()}`)
  return JSON.parse(r.body) as CounterAnswer
}

const counter = async (tt: Tether, re: RegExp): Promise<number> => Number(re.exec(await tt.metrics.render())?.[1] ?? 0)
const losses = (tt: Tether): Promise<number> => counter(tt, /^tether_redis_keyspace_losses_total\{node="[^"]+"\} (\d+)$/m)
const writtenBack = (tt: Tether): Promise<number> => counter(tt, /^tether_affinity_written_back_total (\d+)$/m)

for (const loss of ['restart', 'flushall'] as const) {
  t.test(`after a ${loss === 'restart' ? 'restart without persistence' : 'FLUSHALL'}, a new replica routes every user as the others, and sees the drain`, async (t) => {
    const USERS = 40
    const prefix = `kl-${loss}:`
    const apps = await startAll(['app-0', 'app-1', 'app-2'].map((id) => startCounter(id, { sid: true })))
    t.teardown(async () => { await Promise.all(apps.map((c) => c.kill())) })
    const [r1, r2] = await Promise.all([replica(t, apps, prefix), replica(t, apps, prefix)])
    const agent = agentFor(t)
    const jars = Array.from({ length: USERS }, () => new CookieJar())
    const creators: string[] = []
    // half the users learned through each replica
    for (const [i, jar] of jars.entries()) creators.push((await ask((i % 2 === 0 ? r1 : r2)!.url, agent, jar)).id)
    t.equal((await keysOf(`${prefix}af:*`)).length, USERS, 'one shared binding per user')
    t.equal((await request(`${r1!.adminUrl}/upstreams/app-2/drain`, { method: 'POST' })).status, 200)
    await waitFor(async () => (await redisCli(redis.port, 'HEXISTS', `${prefix}peers:drains`, 'app-2')).trim() === '1', 5_000, 'the drain to be recorded')
    await waitFor(() => r2!.health.state('app-2') === 'draining', 5_000, 'the drain to reach #2')

    const lostAt = performance.now()
    if (loss === 'restart') {
      await redis.kill()
      await redis.restart()
    } else {
      await redisCli(redis.port, 'FLUSHALL')
    }
    // no "Redis holds none of the keys" here: a replica that reconnected at once may have
    // written some back already (the loss counted once below tells that the keys were gone)
    const repaired = await waitFor(async () => (await keysOf(`${prefix}af:*`)).length === USERS &&
      (await redisCli(redis.port, 'HEXISTS', `${prefix}peers:drains`, 'app-2')).trim() === '1', 5_000, 'the bindings and the drain to be back', 20).then(() => true, () => false)
    const ms = Math.round(performance.now() - lostAt)
    t.comment(`${loss}: ${USERS} bindings and the drain back in Redis ${ms} ms after the loss (checks every 1 s)`)
    t.ok(repaired, `the bindings and the drain are back in Redis within 5 s (${ms} ms)`)
    t.equal(await losses(r1!), 1, '#1 counted the loss once')
    t.equal(await losses(r2!), 1, '#2 counted the loss once')
    t.equal(await writtenBack(r1!) + await writtenBack(r2!) >= USERS, true, 'the written-back counters moved')

    const r3 = await replica(t, apps, prefix)
    t.equal(r3.health.state('app-2'), 'draining', 'a replica started after the loss has the drain made before it')
    const wrong: string[] = []
    for (const [i, jar] of jars.entries()) {
      const a = await ask(r3.url, agent, jar)
      if (a.id !== creators[i] || a.n !== 2) wrong.push(`user ${i}: ${a.id} n=${a.n}, created on ${creators[i]}`)
    }
    t.same(wrong, [], 'the new replica routes every user to the upstream that has their session')
    const wrongOld: string[] = []
    for (const [i, jar] of jars.entries()) {
      const a = await ask((i % 2 === 0 ? r2 : r1)!.url, agent, jar)
      if (a.id !== creators[i]) wrongOld.push(`user ${i} via the old replicas: ${a.id}, created on ${creators[i]}`)
    }
    t.same(wrongOld, [], 'and so do the first two')
  })
}

t.test('with affinity.key cookie (the table only counts sessions) a loss writes no bindings back, and the log line says none', async (t) => {
  const prefix = 'kl-cookie:'
  const apps = await startAll(['app-0', 'app-1', 'app-2'].map((id) => startCounter(id)))
  t.teardown(async () => { await Promise.all(apps.map((c) => c.kill())) })
  const logs = new LogCapture()
  const tt = await startTether(testConfig(apps, {
    affinity: { key: 'cookie', shared: 'redis', balance_factor: 1.5 },
    health: { shared: 'redis', active: { path: null } },
    state: { store: 'redis', timeout: 200, redis: { url: redis.url, key_prefix: prefix } },
  }), { logger: createLogger('info', logs) })
  t.teardown(() => tt.close(0))
  const agent = agentFor(t)
  for (let i = 0; i < 10; i++) await ask(tt.url, agent, new CookieJar())
  t.equal(await counter(tt, /^tether_affinity_entries (\d+)$/m), 10, 'the table counts the 10 sessions')
  await redisCli(redis.port, 'FLUSHALL')
  await waitFor(() => logs.records.some((r) => r['msg'] === 'redis keyspace lost'), 5_000, 'the loss to be seen')
  t.match(logs.records.find((r) => r['msg'] === 'redis keyspace lost'), { bindings: 0 }, 'no bindings to write back')
  t.same(await keysOf(`${prefix}af:*`), [], 'none written back')
  t.equal(await writtenBack(tt), 0)
})

t.test('a drain held for more than the 7 days records are kept is recorded again as current: a replica started after the loss applies it', async (t) => {
  const prefix = 'kl-olddrain:'
  const apps = await startAll(['app-0', 'app-1', 'app-2'].map((id) => startCounter(id)))
  t.teardown(async () => { await Promise.all(apps.map((c) => c.kill())) })
  const cfg = testConfig(apps, {
    health: { shared: 'redis', active: { path: null } },
    state: { store: 'redis', timeout: 200, redis: { url: redis.url, key_prefix: prefix } },
  })
  // the first replica's clock: its drain began eight days ago
  const r1 = await startTether(cfg, { logger: createLogger('silent'), clock: new FakeClock(Date.now() - 8 * 24 * 3_600_000) })
  t.teardown(() => r1.close(0))
  t.equal((await request(`${r1.adminUrl}/upstreams/app-2/drain`, { method: 'POST' })).status, 200)
  await waitFor(async () => (await redisCli(redis.port, 'HEXISTS', `${prefix}peers:drains`, 'app-2')).trim() === '1', 5_000, 'the drain to be recorded')
  await redisCli(redis.port, 'FLUSHALL')
  await waitFor(async () => (await redisCli(redis.port, 'HEXISTS', `${prefix}peers:drains`, 'app-2')).trim() === '1', 5_000, 'the drain to be recorded again')
  const r2 = await startTether(cfg, { logger: createLogger('silent') })
  t.teardown(() => r2.close(0))
  t.equal(r2.health.state('app-2'), 'draining', 'a replica started after the loss has the drain')
  t.equal((await redisCli(redis.port, 'HEXISTS', `${prefix}peers:drains`, 'app-2')).trim(), '1', 'and its record stays')
})

t.test('with two workers on one Redis, each writes back its own bindings and only the lead records the drain again', async (t) => {
  const USERS = 24
  const prefix = 'kl-workers:'
  const apps = await startAll(['app-0', 'app-1', 'app-2'].map((id) => startCounter(id, { sid: true })))
  t.teardown(async () => { await Promise.all(apps.map((c) => c.kill())) })
  const [port, adminPort] = [await freePort(), await freePort()]
  const file = tempFile('keyspace-workers.yaml', workersYaml({
    listen: port, adminPort, workers: 2, upstreams: apps, extra: [
      'affinity: { key: app_cookie, shared: redis, app_cookie: { name: sid, fallback: random } }',
      'health: { shared: redis, active: { path: null } }',
      `state: { store: redis, timeout: 200ms, redis: { url: "${redis.url}", key_prefix: "${prefix}" } }`,
    ],
  }))
  const { proc, out } = await startPrimary(t, file)
  const cookies: string[] = []
  const creators: string[] = []
  // each request on a new connection: the users are spread over both workers
  for (let i = 0; i < USERS; i++) {
    const r = await fresh(`http://127.0.0.1:${port}/`, null)
    const a = JSON.parse(r.body) as CounterAnswer
    cookies.push(`sid=${a.sid}`)
    creators.push(a.id)
  }
  t.equal((await keysOf(`${prefix}af:*`)).length, USERS, 'one shared binding per user')
  t.equal((await fresh(`http://127.0.0.1:${adminPort}/upstreams/app-2/drain`, null, { method: 'POST' })).status, 200)
  await waitFor(async () => (await redisCli(redis.port, 'HEXISTS', `${prefix}peers:drains`, 'app-2')).trim() === '1', 5_000, 'the drain to be recorded')

  await redisCli(redis.port, 'FLUSHALL')
  type Lost = { worker: number; node: string; bindings: number; drains: number }
  const lostLines = (): Lost[] => out().split('\n').slice(0, -1).filter((l) => l.includes('"redis keyspace lost"')).map((l) => JSON.parse(l) as Lost)
  await waitFor(() => lostLines().length === 2, 10_000, 'both workers to see the loss')
  await waitFor(async () => (await keysOf(`${prefix}af:*`)).length === USERS &&
    (await redisCli(redis.port, 'HEXISTS', `${prefix}peers:drains`, 'app-2')).trim() === '1', 5_000, 'the bindings and the drain to be back', 20)
  const lines = lostLines().sort((a, b) => a.worker - b.worker)
  t.same(lines.map((l) => l.worker), [0, 1], 'each worker saw the loss once')
  t.same(lines.map((l) => l.drains).sort(), [0, 1], 'one worker (the lead) recorded the drain again, the other did not')
  t.ok(lines.every((l) => l.bindings > 0), `each worker had bindings of its own to write back (${lines.map((l) => l.bindings).join(', ')})`)
  const metrics = (await fresh(`http://127.0.0.1:${adminPort}/metrics`, null)).body
  t.match(metrics, /^tether_redis_keyspace_losses_total\{node="[^"]+"\} 1$/m, 'the loss counts once over both workers')
  t.ok(Number(/^tether_affinity_written_back_total (\d+)$/m.exec(metrics)?.[1]) >= USERS, 'every binding was written back by one worker or another')

  const r3 = await replica(t, apps, prefix)
  t.equal(r3.health.state('app-2'), 'draining', 'a replica started after the loss has the drain')
  const wrong: string[] = []
  for (const [i, cookie] of cookies.entries()) {
    const a = JSON.parse((await fresh(r3.url, cookie)).body) as CounterAnswer
    if (a.id !== creators[i]) wrong.push(`user ${i}: ${a.id}, created on ${creators[i]}`)
  }
  t.same(wrong, [], 'and routes every user as the workers did')
  proc.kill('SIGTERM')
  await waitFor(() => proc.exitCode !== null, 15_000, 'the primary to stop')
})
