// A rehydration fetch that got no answer is asked a second time unless the store cannot answer
// for that session's key (src/state/protocol.ts, fetch): a Redis Cluster with one shard down is
// 'degraded' as a whole, but the other shards' keys are answered, and a lost reply there must
// not start a moved user from an empty session. The store here is the real memory store with
// its first read of each session lost (as a reply lost or late), and an overall status and a
// per-key answer set by the test (what a Cluster with a dead shard reports); nothing sleeps.
import t from 'tap'
import { StateProtocol } from '../src/state/protocol.js'
import { MemoryCheckpointStore } from '../src/state/memory-store.js'
import type { CheckpointStore, CheckpointStoreStatus, GetResult } from '../src/state/checkpoint-store.js'

/** The memory store, 'degraded', answering for the keys in `answering` only, its first read of each key lost. */
function lossyStore(answering: Set<string>): CheckpointStore & { reads: string[] } {
  const inner = new MemoryCheckpointStore({ maxEntries: 10, clock: { now: () => 1 } })
  const lost = new Set<string>()
  const reads: string[] = []
  return {
    reads,
    put: (k, cp, ttl, timeout, replace) => inner.put(k, cp, ttl, timeout, replace),
    get: (k): Promise<GetResult> => {
      reads.push(k)
      if (!lost.has(k)) { lost.add(k); return Promise.resolve({ status: 'unavailable' }) }
      return inner.get(k)
    },
    delete: (k) => inner.delete(k),
    valueBytes: (v) => inner.valueBytes(v),
    answers: (k) => answering.has(k),
    status: 'degraded' as CheckpointStoreStatus,
    onStatus: () => () => undefined,
    start: () => Promise.resolve(),
    stop: () => Promise.resolve(),
  }
}

t.test('a lost fetch is asked again when the store answers for that key, though it is degraded as a whole (a Cluster shard down)', async (t) => {
  const store = lossyStore(new Set(['on-a-live-shard']))
  const p = new StateProtocol(store, { header: 'X-Tether-State', maxBytes: 1024, timeout: 1_000, ttl: 60_000 }, { now: () => 1 }, {
    checkpoint: () => undefined, rehydration: () => undefined, operation: () => undefined,
  })
  for (const k of ['on-a-live-shard', 'on-the-dead-shard']) t.equal(await p.write(k, { value: 'cart=3', version: 3 }, 'app-0', 0), 'stored')
  t.match(await p.fetch('on-a-live-shard'), { status: 'found', checkpoint: { value: 'cart=3' } }, 'asked again: found')
  t.same(await p.fetch('on-the-dead-shard'), { status: 'unavailable' }, 'its node is down: not asked again')
  t.same(store.reads, ['on-a-live-shard', 'on-a-live-shard', 'on-the-dead-shard'])
})

t.test('a Redis Cluster with one master dead: degraded as a whole, and answers() tells its keys from the live shards\' (a real 3-node Cluster)', async (t) => {
  const { RedisCheckpointStore, checkpointKey } = await import('../src/redis/checkpoint-store.js')
  const { keySlot } = await import('../src/redis/key-slot.js')
  const { redisCli, startRedisCluster } = await import('./fixtures/redis-server.js')
  const { waitFor } = await import('./fixtures/wait.js')
  const cluster = await startRedisCluster(3)
  t.teardown(() => cluster.stop())
  const store = new RedisCheckpointStore({ nodes: cluster.addresses, keyPrefix: 'tether:', timeout: 200 })
  await store.start()
  t.teardown(() => store.stop())
  const dead = cluster.nodes[0]!
  // the slot ranges the node to kill serves (CLUSTER NODES, its "myself" line, from the 9th field)
  const mine = (await redisCli(dead.port, 'CLUSTER', 'NODES')).split('\n').find((l) => l.includes('myself'))!.split(' ').slice(8)
    .map((r) => r.split('-').map(Number)).map(([a, b]) => [a!, b ?? a!] as const)
  const onDead = (session: string): boolean => mine.some(([a, b]) => keySlot(checkpointKey('tether:', session)) >= a && keySlot(checkpointKey('tether:', session)) <= b)
  let lost = ''
  let kept = ''
  for (let i = 0; lost === '' || kept === ''; i++) {
    if (onDead(`s${i}`)) lost ||= `s${i}`
    else kept ||= `s${i}`
  }
  t.equal(store.answers(lost), true, 'answered while all is up')
  await dead.kill()
  // calls for its keys fail until its master is judged down
  await waitFor(async () => { await store.get(lost); return !store.answers(lost) }, 10_000, 'the dead master judged down')
  t.equal(store.status, 'degraded', 'the store is degraded as a whole')
  t.equal(store.answers(kept), true, 'a key of a live shard is still answered')
  t.match(await store.get(kept), { status: 'missing' }, 'and read')
})
