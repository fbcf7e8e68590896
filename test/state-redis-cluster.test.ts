// The Redis checkpoint store against a real 3-node Redis Cluster: the shared CheckpointStore
// contract, hash-tag routing (one slot per session, sessions spread over every node), the loss
// of one master (seen per shard) and of every node. Real time is only ever polled with a
// deadline; nothing sleeps for a fixed time.
import t from 'tap'
import { RedisCheckpointStore, checkpointKey } from '../src/redis/checkpoint-store.js'
import { RedisConnection } from '../src/redis/connection.js'
import type { Checkpoint, CheckpointStoreStatus } from '../src/state/checkpoint-store.js'
import { checkpointStoreConformance } from './fixtures/checkpoint-store-conformance.js'
import { redisCli, startRedisCluster, waitFor } from './fixtures/redis-server.js'

const HOUR = 3_600_000
const cp = (value: string, version: number | null = null): Checkpoint => ({ value, version, upstream: 'app-0', epoch: 0, writtenAt: 0 })

const cluster = await startRedisCluster(3)
t.teardown(() => cluster.stop())
let prefixes = 0

t.test('RedisCheckpointStore (Cluster) meets the CheckpointStore contract', async (t) => {
  checkpointStoreConformance(t, {
    make: async ({ maxBytes }) => {
      const store = new RedisCheckpointStore({ nodes: cluster.addresses, keyPrefix: `c${++prefixes}:`, maxBytes, timeout: 1000 })
      await store.start()
      return store
    },
    shortTtl: 500, // real time: a few round trips fit in it on a loaded host (beforeExpiry retries one that did not)
    elapse: () => {},
    eventually: (what, check) => waitFor(what, check),
  })
})

t.test('a session key decides the slot, and sessions spread over every node', async (t) => {
  const store = new RedisCheckpointStore({ nodes: cluster.addresses.slice(0, 1), keyPrefix: 'spread:', timeout: 1000 })
  t.teardown(() => store.stop())
  await store.start()
  t.equal(store.status, 'ready', 'one seed node is enough to discover the cluster')
  const port = cluster.nodes[0]!.port
  for (const session of ['abc', '9f86d081884c7d659a2feaa0c55ad015']) {
    t.equal(
      await redisCli(port, 'CLUSTER', 'KEYSLOT', checkpointKey('spread:', session)),
      await redisCli(port, 'CLUSTER', 'KEYSLOT', session),
      `the key of ${session} hashes like the session key alone`,
    )
  }
  for (let i = 0; i < 30; i++) t.equal(await store.put(`user-${i}`, cp(`v${i}`, i), HOUR), 'stored')
  for (const node of cluster.nodes) {
    const keys = (await redisCli(node.port, 'KEYS', 'spread:*')).trim().split('\n').filter(Boolean).length
    t.ok(keys > 0, `node ${node.port} holds ${keys} of the 30 checkpoints`)
  }
  for (let i = 0; i < 30; i++) t.equal((await store.get(`user-${i}`)).status, 'found')
})

t.test('when one master dies, only its sessions are unavailable and only its shard is reported down; when it returns, it is up again', async (t) => {
  const redis = new RedisConnection({ nodes: cluster.addresses, keyPrefix: 'loss:', timeout: 300, maxReconnectDelay: 100 })
  const store = new RedisCheckpointStore({ connection: redis })
  const changes: { status: CheckpointStoreStatus; detail: string }[] = []
  store.onStatus((status, detail) => changes.push({ status, detail }))
  t.teardown(() => redis.stop())
  await redis.start()
  const victim = cluster.nodes[2]!
  const address = `127.0.0.1:${victim.port}`
  const shards = redis.nodes()
  t.same(shards.map((n) => [n.role, n.status]), [['shard', 'up'], ['shard', 'up'], ['shard', 'up']], 'three shards, all up')
  t.same(shards.map((n) => n.address).sort(), cluster.nodes.map((n) => `127.0.0.1:${n.port}`).sort(), 'named by host:port')
  const slots = shards.find((n) => n.address === address)!.slots
  t.match(slots, /^\d+-\d+$/, `the victim serves slots ${slots}`)

  const sessions = Array.from({ length: 30 }, (_, i) => `user-${i}`)
  for (const s of sessions) t.equal(await store.put(s, cp('v1', 1), HOUR), 'stored')
  const onVictim = new Set(
    (await redisCli(victim.port, 'KEYS', 'loss:*')).trim().split('\n').filter(Boolean).map((k) => k.slice('loss:cp:{'.length, -1)),
  )
  t.ok(onVictim.size > 0 && onVictim.size < sessions.length, `${onVictim.size} of ${sessions.length} sessions live on the victim`)

  await victim.kill()
  const killedAt = performance.now()
  // Unlike a standalone Redis, a dead Cluster node does not fail calls at once: ioredis retries
  // them (slot refresh, failover queue) until the store's timeout answers 'unavailable'.
  const results = await Promise.all(sessions.map((s) => store.put(s, cp('v2', 2), HOUR)))
  for (const [i, s] of sessions.entries()) {
    const expected = onVictim.has(s) ? 'unavailable' : 'stored'
    t.equal(results[i], expected, `${s}: ${expected}`)
  }
  await waitFor('the victim shard to be reported down', () => redis.nodes().find((n) => n.address === address)?.status === 'down')
  t.comment(`victim reported down ${Math.round(performance.now() - killedAt)} ms after the kill`)
  const down = redis.nodes().filter((n) => n.status === 'down')
  t.same(down.map((n) => n.address), [address], 'only the victim is down')
  t.match(down[0]!.summary, new RegExp(`^redis shard ${address} \\(slots ${slots}\\) failing: \\d+ of \\d+ calls in the last 5 s failed`), down[0]!.summary)
  t.equal(store.status, 'degraded', 'a shard down degrades the store')
  t.match(changes.at(-1), { status: 'degraded', detail: new RegExp(`^redis shard ${address} `) }, 'the change names the shard')
  const others = sessions.filter((s) => !onVictim.has(s))
  t.same(await Promise.all(others.map((s) => store.put(s, cp('v3', 3), HOUR))), others.map(() => 'stored'), 'the other shards keep storing')

  // The node comes back with its nodes.conf, so it owns the same slots again (no data: no persistence).
  await victim.restart()
  await waitFor('every session writable again', async () => {
    const results = await Promise.all(sessions.map((s) => store.put(s, cp('v4', null), HOUR)))
    return results.every((r) => r === 'stored')
  }, 10_000)
  await waitFor('the victim shard up again', () => redis.nodes().every((n) => n.status === 'up'), 10_000)
  t.equal(store.status, 'ready')
  t.same(changes.map((c) => c.status), ['ready', 'degraded', 'ready'], 'one degraded spell, no flapping')
})

t.test('when every node is down the store turns degraded, and ready again once calls succeed', async (t) => {
  const store = new RedisCheckpointStore({ nodes: cluster.addresses, keyPrefix: 'all:', timeout: 100, maxReconnectDelay: 100 })
  const changes: { status: CheckpointStoreStatus; detail: string }[] = []
  store.onStatus((status, detail) => changes.push({ status, detail }))
  t.teardown(() => store.stop())
  await store.start()
  t.equal(await store.put('k', cp('v'), HOUR), 'stored')

  for (const node of cluster.nodes) await node.kill()
  // ioredis keeps a Cluster 'ready' until it notices every node gone; the calls tell at once.
  const results = await Promise.all(Array.from({ length: 20 }, (_, i) => store.put(`k${i}`, cp('v'), HOUR)))
  t.ok(results.every((r) => r === 'unavailable'), 'every call resolves unavailable')
  await waitFor('the degraded status', () => store.status === 'degraded')
  t.equal(changes.at(-1)?.status, 'degraded')
  t.ok(changes.at(-1)?.detail, `with a detail: ${changes.at(-1)?.detail}`)

  for (const node of cluster.nodes) await node.restart()
  await waitFor('a stored put', async () => (await store.put('k', cp('v'), HOUR)) === 'stored', 10_000)
  // Every shard is judged by its own calls: the failures of the outage leave its window first
  // (or are outweighed by successes), so there is one recovery, not a ready/degraded flip.
  // (about NODE_WINDOW_MS, 5 s, here; a deadline of 20 s: a clean-clone CI run once went past
  // 10 s, a shard's probes waiting on the restarted cluster)
  await waitFor('the ready status', () => store.status === 'ready', 20_000)
  t.same(changes.map((c) => c.status), ['ready', 'degraded', 'ready'])
})

t.test('after every node is back the connection turns ready with no call at all: the masters still failing are probed', async (t) => {
  // An idle Tether (no traffic to some shards) stayed degraded for ever: the outage's failures
  // kept every master failing, and only a failed call armed the probes.
  const redis = new RedisConnection({ nodes: cluster.addresses, keyPrefix: 'idle:', timeout: 100, maxReconnectDelay: 100 })
  const store = new RedisCheckpointStore({ connection: redis })
  t.teardown(() => redis.stop())
  await redis.start()
  t.equal(await store.put('k', cp('v'), HOUR), 'stored')
  for (const node of cluster.nodes) await node.kill()
  await Promise.all(Array.from({ length: 20 }, (_, i) => store.put(`k${i}`, cp('v'), HOUR)))
  const unreachable = (): boolean => redis.nodes().every((n) => n.summary.includes('unreachable'))
  await waitFor('every master unreachable', unreachable, 10_000)
  for (const node of cluster.nodes) await node.restart()
  await waitFor('the client connected again', () => !redis.nodes().some((n) => n.summary.includes('unreachable')), 10_000)
  // no call from here on: the failures leave the 5 s window and a probe judges each master again
  await waitFor('the ready status', () => redis.status === 'ready', 20_000)
  t.ok(redis.nodes().every((n) => n.status === 'up'), 'every master up')
})

t.test('a re-key (rotated application cookie) carries the checkpoint between keys of different slots', async (t) => {
  const { StateProtocol } = await import('../src/state/protocol.js')
  const store = new RedisCheckpointStore({ nodes: cluster.addresses, keyPrefix: 'rekey:', timeout: 1000 })
  t.teardown(() => store.stop())
  await store.start()
  const p = new StateProtocol(store, { header: 'X-Tether-State', maxBytes: 1024, timeout: 1000, ttl: HOUR }, { now: () => 0 }, {
    checkpoint: () => undefined, rehydration: () => undefined, operation: () => undefined,
  })
  const port = cluster.nodes[0]!.port
  const [from, to] = ['laravel-value-1', 'laravel-value-2']
  t.not(await redisCli(port, 'CLUSTER', 'KEYSLOT', from), await redisCli(port, 'CLUSTER', 'KEYSLOT', to), 'the two values hash to different slots')
  t.equal(await p.write(from, { value: 'state 3', version: 3 }, 'app-1', 1), 'stored')
  t.equal(await p.rekey(from, to), 'copied')
  t.match(await p.fetch(to), { status: 'found', checkpoint: { value: 'state 3', version: 3, upstream: 'app-1', epoch: 1 } })
  t.equal(await p.write(to, { value: 'state 4', version: 4 }, 'app-1', 1), 'stored')
  t.equal(await p.rekey(from, to), 'stale', 'a later copy of the older one changes nothing')
  t.match(await p.fetch(to), { status: 'found', checkpoint: { value: 'state 4' } })
})
