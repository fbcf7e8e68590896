// With `affinity.shared: redis` every Tether replica uses one placement time per binding (the
// `placedAt` its checkpoints carry): the one the binding's creator stored beside it in Redis,
// not the time another replica adopted it; of two replicas that placed one key at one epoch on
// two upstreams at once, the upstream they settle on takes the later time of the two, so its
// checkpoints are stored. Real redis-server, two in-process replicas with their own clocks.
import t, { type Test } from 'tap'
import type http from 'node:http'
import { startTether, type Tether } from '../src/app.js'
import { RedisBindings, type RedisBindingsOptions } from '../src/redis/binding-store.js'
import { RedisConnection, type RedisRefusal } from '../src/redis/connection.js'
import { createLogger } from '../src/observability/logger.js'
import { FakeClock, FAKE_EPOCH } from './fixtures/clock.js'
import { request, startUpstream, testConfig, type Upstream } from './fixtures/upstream.js'
import { redisCli, startRedis, startRedisCluster, waitFor } from './fixtures/redis-server.js'

const redis = await startRedis()
t.teardown(() => redis.stop())

/** Counts per `x-user` and checkpoints the count (as state and version); a request to /hold waits for release(). */
async function counter(t: Test, id: string): Promise<Upstream & { waiting: () => boolean; release: () => void }> {
  const counts = new Map<string, number>()
  let held: (() => void) | null = null
  const up = await startUpstream(id, (req: http.IncomingMessage, res: http.ServerResponse) => {
    const user = String(req.headers['x-user'])
    const restored = req.headers['x-tether-rehydrate']
    if (typeof restored === 'string') counts.set(user, Number(restored))
    const answer = (): void => {
      const n = (counts.get(user) ?? 0) + 1
      counts.set(user, n)
      res.writeHead(200, { 'x-tether-state': String(n), 'x-tether-state-version': String(n) }).end(`${id} ${n}`)
    }
    if (req.url === '/hold') held = answer
    else answer()
  })
  t.teardown(() => up.close())
  return Object.assign(up, { waiting: () => held !== null, release: () => { held?.(); held = null } })
}

/** A replica sharing bindings and checkpoints in Redis under `prefix`, on its own clock. */
async function replica(t: Test, ups: readonly Upstream[], prefix: string, clock: FakeClock): Promise<Tether> {
  const tether = await startTether(testConfig(ups, {
    affinity: { key: 'header', header: { name: 'x-user' }, shared: 'redis', idle_timeout: 60_000 },
    health: { active: { path: null } },
    state: { store: 'redis', timeout: 5_000, durability: 'confirmed', confirm_timeout: 5_000, redis: { url: redis.url, key_prefix: prefix } },
  }), { logger: createLogger('silent'), clock })
  t.teardown(() => tether.close(0))
  return tether
}

/** Bindings (idle TTL 60 s) under `prefix` on a connection of their own to the test's Redis; `refused`: what it told its onRefused listeners. */
async function bindingsAt(t: Test, prefix: string, user: { username?: string; password?: string } = {}, options: RedisBindingsOptions = {}): Promise<{ conn: RedisConnection; bindings: RedisBindings; refused: RedisRefusal[] }> {
  const conn = new RedisConnection({ url: redis.url, ...user, keyPrefix: prefix, timeout: 2_000 })
  const bindings = new RedisBindings(conn, 60_000, options)
  const refused: RedisRefusal[] = []
  conn.onRefused((r) => refused.push(r))
  await conn.start()
  t.teardown(() => conn.stop())
  return { conn, bindings, refused }
}

const ask = async (tether: Tether, user: string, path = '/'): Promise<{ status: number; body: string }> => {
  const r = await request(`${tether.url}${path}`, { headers: { 'x-user': user } })
  return { status: r.status, body: r.body }
}
const placedAt = async (prefix: string, user: string): Promise<number> => Number((await redisCli(redis.port, 'HGET', `${prefix}cp:{${user}}`, 'placedAt')).trim())
/** The sync period with idle_timeout 60 s: min(idle_timeout / 10, 5 s). */
const SYNC = 5_000

/**
 * Replicas A and C (C's clock a second ahead) that place new users differently (a rollout,
 * bounded loads: A on app-0, C on app-1) both place `u` at epoch 0 before either answers
 * (neither finds a binding in Redis); resolves once both have answered.
 */
async function race(t: Test, prefix: string) {
  const [up0, up1] = [await counter(t, 'app-0'), await counter(t, 'app-1')]
  const clockA = new FakeClock(FAKE_EPOCH)
  const clockC = new FakeClock(FAKE_EPOCH + 1_000) // C places the key a second after A
  const a = await replica(t, [up0, up1], prefix, clockA)
  const c = await replica(t, [up0, up1], prefix, clockC)
  t.equal((await request(`${a.adminUrl}/upstreams/app-1/drain`, { method: 'POST' })).status, 200)
  t.equal((await request(`${c.adminUrl}/upstreams/app-0/drain`, { method: 'POST' })).status, 200)
  const viaA = ask(a, 'u', '/hold')
  await waitFor('A to place u on app-0', () => up0.waiting())
  const viaC = ask(c, 'u', '/hold')
  await waitFor('C to place u on app-1', () => up1.waiting())
  up0.release()
  t.equal((await viaA).status, 200, "A's answer (app-0's checkpoint) is stored")
  up1.release()
  t.equal((await viaC).status, 200, "C's answer, placed later, is stored over it")
  return { a, c, clockA, clockC }
}

t.test('a replica that adopts another one\'s binding uses its placement time, not the time it adopted it', async (t) => {
  const prefix = 'pt-a:'
  const ups = [await counter(t, 'app-0'), await counter(t, 'app-1')]
  const clockA = new FakeClock(FAKE_EPOCH)
  const clockB = new FakeClock(FAKE_EPOCH + 7_000)
  const a = await replica(t, ups, prefix, clockA)
  const b = await replica(t, ups, prefix, clockB)
  const first = await ask(a, 'u1')
  t.equal(first.status, 200, 'placed by replica A')
  t.equal(await placedAt(prefix, 'u1'), FAKE_EPOCH, "A's checkpoint carries A's placement time")
  const next = await ask(b, 'u1')
  t.same([next.status, next.body.split(' ')[0]], [200, first.body.split(' ')[0]], 'replica B routes u1 where A placed it')
  t.equal(b.sessions.peek('u1', clockB.now())?.createdAt, FAKE_EPOCH, "B's pin has A's placement time")
  t.equal(await placedAt(prefix, 'u1'), FAKE_EPOCH, "B's checkpoint carries the same placement time")
})

t.test('two replicas that placed one key at one epoch on two upstreams at once: the settled upstream\'s checkpoints are stored from the next reconcile on', async (t) => {
  const prefix = 'pt-b:'
  const { a, c, clockA, clockC } = await race(t, prefix)
  t.equal((await redisCli(redis.port, 'GET', `${prefix}af:{u}`)).trim(), '0 app-0', 'the binding settles on the smaller upstream id')
  t.equal(await placedAt(prefix, 'u'), FAKE_EPOCH + 1_000, "the store holds app-1's checkpoint (C's placement)")
  // A reconciles u at its next request in a later sync period: its pin takes the later
  // placement time, so app-0's checkpoint is stored (before, each was refused as superseded:
  // 503 under durability: confirmed, until one was stored through C)
  clockA.advance(SYNC)
  clockC.advance(SYNC)
  const again = await ask(a, 'u')
  t.same([again.status, again.body], [200, 'app-0 2'], 'A: u goes on on app-0, its checkpoint stored')
  t.equal(await placedAt(prefix, 'u'), FAKE_EPOCH + 1_000, 'stored with the later placement time of the two')
  const viaCagain = await ask(c, 'u')
  t.same([viaCagain.status, viaCagain.body], [200, 'app-0 3'], 'C follows the settled binding, and its checkpoint is stored too')
})

t.test('a checkpoint refused as superseded: the replica reconciles the key at the user\'s next request, not a sync period later', async (t) => {
  const prefix = 'pt-e:'
  const { a, clockA, clockC } = await race(t, prefix)
  // C's pin has been written (a rival kept: the stored binding takes its later time)
  await waitFor('the binding to take C\'s placement time', async () => (await redisCli(redis.port, 'GET', `${prefix}ap:{u}`)).trim() === `${FAKE_EPOCH + 1_000} 0 app-0`)
  // A's next request, 2 s on (past C's placement), in the same sync period: its pin still has A's own, earlier time
  clockA.advance(2_000)
  clockC.advance(2_000)
  const refused = await ask(a, 'u')
  t.equal(refused.status, 503, "app-0's checkpoint with A's earlier time is refused (superseded, durability: confirmed)")
  const next = await ask(a, 'u')
  t.same([next.status, next.body.split(' ')[0]], [200, 'app-0'], 'the next request reconciles the key first: stored with the later time')
  t.equal(a.sessions.peek('u', clockA.now())?.createdAt, FAKE_EPOCH + 1_000, "A's pin took the stored placement time")
  t.equal(await placedAt(prefix, 'u'), FAKE_EPOCH + 1_000)
})

t.test('a replica whose binding Redis kept another one over reconciles the key at the user\'s next request', async (t) => {
  const prefix = 'pt-f:'
  const { c, clockC } = await race(t, prefix)
  await waitFor('the binding to take C\'s placement time', async () => (await redisCli(redis.port, 'GET', `${prefix}ap:{u}`)).trim() === `${FAKE_EPOCH + 1_000} 0 app-0`)
  // (C has had Redis's reply: its key is marked; without the mark it waits for the next sync period)
  await waitFor('C to hear that Redis kept another binding', () => c.sessions.needsSync('u', clockC.now()), 10_000).catch(() => {})
  // C's pin of app-1 was not stored (A's app-0 is kept, the smaller id): C's next request, in
  // the same sync period, follows the settled binding (app-0 is drained at C, but a pin still routes there)
  const next = await ask(c, 'u')
  t.same([next.status, next.body.split(' ')[0]], [200, 'app-0'], 'C routes u where A and Redis do, not a sync period later')
  t.equal(c.sessions.peek('u', clockC.now())?.upstream, 'app-0')
})

t.test('the binding value stays "<epoch> <upstream>" (older Tethers read it); the placement time beside it counts only for the binding it was written with', async (t) => {
  const prefix = 'pt-c:'
  const { bindings } = await bindingsAt(t, prefix)
  t.ok(await bindings.set('k', 'app-1', 2, 5_000))
  t.equal((await redisCli(redis.port, 'GET', `${prefix}af:{k}`)).trim(), '2 app-1', 'the binding as every Tether reads it')
  t.same(await bindings.lookup('k'), { upstream: 'app-1', epoch: 2, placedAt: 5_000 })
  t.ok(await bindings.set('k', 'app-1', 2, 4_000), 'the same binding again, placed earlier elsewhere: renewed')
  t.equal((await bindings.lookup('k') as { placedAt: number }).placedAt, 5_000, 'it keeps the later time')
  t.notOk(await bindings.set('k', 'app-2', 2, 9_000), 'a rival at the same epoch on a larger id is refused')
  t.same(await bindings.lookup('k'), { upstream: 'app-1', epoch: 2, placedAt: 9_000 }, 'the kept one takes the later time of the two')
  t.ok(await bindings.set('k', 'app-0', 2, 1_000), 'a rival on a smaller id replaces it')
  t.same(await bindings.lookup('k'), { upstream: 'app-0', epoch: 2, placedAt: 9_000 }, 'with the later time of the two')
  // an older Tether rewrites the binding alone (its script knows no placement time)
  await redisCli(redis.port, 'SET', `${prefix}af:{k}`, '3 app-2', 'PX', '60000')
  t.same(await bindings.lookup('k'), { upstream: 'app-2', epoch: 3, placedAt: null }, "a time written with another binding is not this one's: unknown")
  await redisCli(redis.port, 'SET', `${prefix}af:{old}`, '0 app-1', 'PX', '60000')
  t.same(await bindings.lookup('old'), { upstream: 'app-1', epoch: 0, placedAt: null }, 'a binding from an older Tether: time unknown')
  await bindings.delete('k')
  t.equal((await redisCli(redis.port, 'EXISTS', `${prefix}af:{k}`, `${prefix}ap:{k}`)).trim(), '0', 'a deletion removes both keys')
})

t.test('Redis Cluster: a key whose binding has no hash tag (it begins with "}") is shared without a placement time, not refused CROSSSLOT', async (t) => {
  const cluster = await startRedisCluster(3)
  t.teardown(() => cluster.stop())
  const conn = new RedisConnection({ nodes: cluster.addresses, keyPrefix: 'pt-d:', timeout: 2_000 })
  const bindings = new RedisBindings(conn, 60_000)
  await conn.start()
  t.teardown(() => conn.stop())
  // `pt-d:af:{}x}` hashes whole (an empty tag), `pt-d:ap:{}x}` too: two slots; a header value or cookie a client chose
  for (const key of ['}x', '}', '}{y}']) {
    t.ok(await bindings.set(key, 'app-1', 0, 5_000), `${key}: written`)
    t.same(await bindings.lookup(key), { upstream: 'app-1', epoch: 0, placedAt: null }, `${key}: read back, its placement time unknown`)
    t.notOk(await bindings.set(key, 'app-2', 0, 9_000), `${key}: a rival on a larger id is refused`)
    await bindings.delete(key)
    t.equal(await bindings.lookup(key), null, `${key}: deleted`)
  }
  t.ok(await bindings.set('k}x', 'app-1', 0, 5_000), 'a key with a "}" further in has a tag (its part before it), shared by both keys')
  t.same(await bindings.lookup('k}x'), { upstream: 'app-1', epoch: 0, placedAt: 5_000 }, 'with its placement time')
  t.equal(conn.status, 'ready', 'no call failed: the Cluster stays ready')
})

/** The remaining TTLs (ms) of `prefix`'s binding of `key` and of its placement time, read at one instant (one script). */
const ttls = async (prefix: string, key: string): Promise<{ binding: number; placed: number }> => {
  const [binding, placed] = (await redisCli(redis.port, 'EVAL', "return {redis.call('PTTL', KEYS[1]), redis.call('PTTL', KEYS[2])}", '2', `${prefix}af:{${key}}`, `${prefix}ap:{${key}}`)).trim().split('\n').map(Number)
  return { binding: binding!, placed: placed! }
}

t.test('the placement time never outlives its binding: beside a rival kept it gets that binding\'s remaining TTL, so a binding deleted by an older Tether (the binding alone) leaves it no longer than the binding would have lived', async (t) => {
  const prefix = 'pt-g:'
  const { bindings } = await bindingsAt(t, prefix)
  t.ok(await bindings.set('k', 'app-0', 0, 5_000))
  // the binding was written 40 s ago: 20 s of its 60 s idle TTL left (a wide margin: nothing
  // here waits for it to expire)
  await redisCli(redis.port, 'PEXPIRE', `${prefix}af:{k}`, '20000')
  t.notOk(await bindings.set('k', 'app-1', 0, 9_000), 'a rival at the same epoch on a larger id is refused')
  t.equal((await redisCli(redis.port, 'GET', `${prefix}ap:{k}`)).trim(), '9000 0 app-0', 'the kept binding takes the later time')
  const left = await ttls(prefix, 'k')
  t.ok(left.placed > 0 && left.placed <= left.binding && left.binding <= 20_000, `its placement time lives no longer than the binding (${left.placed} <= ${left.binding} <= 20000 ms)`)
  // a Tether from before the placement time deletes the binding alone
  await redisCli(redis.port, 'DEL', `${prefix}af:{k}`)
  t.equal(await bindings.lookup('k'), null, 'no binding, no placement time')
  const placed = Number((await redisCli(redis.port, 'PTTL', `${prefix}ap:{k}`)).trim())
  t.ok(placed > 0 && placed <= 20_000, `the placement time expires when the binding would have (${placed} <= 20000 ms), not a full idle TTL later`)
})

t.test('a binding write without a placement time keeps the same binding\'s stored time (with the binding\'s TTL) and deletes one left by another binding', async (t) => {
  const prefix = 'pt-h:'
  const { bindings } = await bindingsAt(t, prefix)
  t.ok(await bindings.set('same', 'app-1', 0, 5_000))
  // (30 s: shorter than the 60 s it was written with, and far longer than this test takes)
  t.equal(await bindings.write('same', 'app-1', 0, 30_000), 'written', 'renewed by a writer that does not know the time, for 30 s')
  t.same(await bindings.lookup('same'), { upstream: 'app-1', epoch: 0, placedAt: 5_000 }, 'the same binding keeps its time')
  const left = await ttls(prefix, 'same')
  t.ok(left.placed > 0 && left.placed <= left.binding && left.binding <= 30_000, `with the binding's TTL (${left.placed} <= ${left.binding} ms)`)
  t.ok(await bindings.set('other', 'app-1', 0, 5_000))
  // a Tether from before the placement time moves the user (the binding alone)
  await redisCli(redis.port, 'SET', `${prefix}af:{other}`, '1 app-2', 'PX', '60000')
  t.ok(await bindings.set('other', 'app-3', 2), 'a later move whose placement time is unknown')
  t.equal((await redisCli(redis.port, 'EXISTS', `${prefix}ap:{other}`)).trim(), '0', 'the time of the earlier binding is deleted with it')
  t.same(await bindings.lookup('other'), { upstream: 'app-3', epoch: 2, placedAt: null })
})

t.test('an ACL user whose key patterns allow the bindings but not their placement times: bindings are still shared, without them, told once naming the grant; granted, they are stored again within a minute', async (t) => {
  const prefix = 'pt-i:'
  await redisCli(redis.port, 'ACL', 'SETUSER', 'pt-narrow', 'on', '>narrow-s3cret', `~${prefix}af:*`, `~${prefix}cp:*`, `~${prefix}keyspace*`, '&*', '+@all', '-@dangerous', '+info')
  t.teardown(() => redisCli(redis.port, 'ACL', 'DELUSER', 'pt-narrow'))
  let now = 1_000_000
  const told: [string | null, number][] = []
  const { conn, bindings, refused } = await bindingsAt(t, prefix, { username: 'pt-narrow', password: 'narrow-s3cret' }, { now: () => now, onPlacementTimes: (err, forMs) => told.push([err, forMs]) })
  t.ok(await bindings.set('k', 'app-1', 0, 5_000), 'the binding is written')
  t.equal((await redisCli(redis.port, 'GET', `${prefix}af:{k}`)).trim(), '0 app-1', 'shared as every Tether reads it')
  t.same(await bindings.lookup('k'), { upstream: 'app-1', epoch: 0, placedAt: null }, 'read back, its placement time unknown')
  t.same(await bindings.lookup('other'), null, 'a key without a binding: none (not unavailable)')
  t.match(told, [[/NOPERM.*\(Redis's ACL user may not access the keys: grant them \(ACL SETUSER <user> ~pt-i:ap:\*\), or check username\)$/, 0]], 'told once, naming the grant to add')
  t.ok(await bindings.set('k', 'app-0', 1, 6_000), 'a later write goes without the placement time')
  await bindings.delete('k')
  t.equal(await bindings.lookup('k'), null, 'a deletion of the binding alone')
  t.equal(told.length, 1, 'told once')
  t.same(refused, [], "no call failed: nothing told as a refusal of the bindings' key")
  t.equal(conn.status, 'ready', 'the node stays up')
  await redisCli(redis.port, 'ACL', 'SETUSER', 'pt-narrow', `~${prefix}ap:*`)
  t.ok(await bindings.set('k2', 'app-1', 0, 7_000), 'granted: a write within the minute still goes without it')
  t.equal((await redisCli(redis.port, 'EXISTS', `${prefix}ap:{k2}`)).trim(), '0')
  now += 60_000
  t.ok(await bindings.set('k2', 'app-1', 0, 7_000), 'a minute on, a write tries the placement time again')
  t.same(await bindings.lookup('k2'), { upstream: 'app-1', epoch: 0, placedAt: 7_000 }, 'stored and read again')
  t.same(told[1], [null, 60_000], 'told accepted again')
})

t.test('a lookup whose binding-alone read fails too is told as that read\'s own refusal (a user without +get), not as the placement times\' refusal', async (t) => {
  const prefix = 'pt-j:'
  await redisCli(redis.port, 'ACL', 'SETUSER', 'pt-noget', 'on', '>noget-s3cret', `~${prefix}af:*`, `~${prefix}cp:*`, `~${prefix}keyspace*`, '&*', '+@all', '-@dangerous', '+info', '-get')
  t.teardown(() => redisCli(redis.port, 'ACL', 'DELUSER', 'pt-noget'))
  const told: [string | null, number][] = []
  const { bindings, refused } = await bindingsAt(t, prefix, { username: 'pt-noget', password: 'noget-s3cret' }, { onPlacementTimes: (err, forMs) => told.push([err, forMs]) })
  t.equal(await bindings.lookup('k'), 'unavailable', 'the binding cannot be read')
  t.match(refused, [{ kind: 'command', command: 'GET', error: /\+get/ }], 'told as the GET refused, naming the grant to add')
  t.notOk(refused.some((r) => r.kind === 'key'), 'not as a refusal of the bindings\' key')
  t.same(told, [], 'nor as the placement times\' refusal')
})
