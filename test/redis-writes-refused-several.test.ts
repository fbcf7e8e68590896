// A node that refuses writes for two reasons at once (full and MISCONF, full and NOREPLICAS):
// Redis 7 answers Tether's scripts without a shebang with MISCONF or NOREPLICAS (it checks
// scriptVerifyWriteCommandAllow before scriptVerifyOOM) but the writes probe (a shebang script,
// denyoom) with OOM (processCommand checks maxmemory first). The node's reason must stay one
// (the one that refuses more: MISCONF and NOREPLICAS refuse PEXPIRE too), not flip with every put
// and probe (an event, a warn line, a gauge flip each time). Real redis-server; found by review R1.
import t, { type Test } from 'tap'
import { redisCli, waitFor } from './fixtures/redis-server.js'
import { breakDisk, commandCalls, cp, HOUR, refusingRedis, watchedStore } from './fixtures/redis-refusing.js'

/** How many EVALs (the writes probe: puts go out as EVALSHA) the server saw, refused ones included. */
const evals = (port: number): Promise<number> => commandCalls(port, 'eval')

async function run(t: Test, second: 'misconf' | 'noreplicas'): Promise<void> {
  const redis = await refusingRedis(t, ['--maxmemory-policy', 'noeviction'])
  const { conn, store, events, logs } = await watchedStore(t, redis, 'flap:')
  if (second === 'misconf') {
    // MISCONF: a failed BGSAVE into a deleted dir
    await breakDisk(redis.port)
  } else {
    await redisCli(redis.port, 'CONFIG', 'SET', 'min-replicas-to-write', '1')
  }
  // and full: maxmemory 1 under noeviction
  await redisCli(redis.port, 'CONFIG', 'SET', 'maxmemory', '1')
  // puts (each refused) until the writes probe ran 6 times (about 3 s of 500 ms rounds)
  const before = await evals(redis.port)
  const results = new Set<string>()
  let i = 0
  await waitFor('six writes probes', async () => {
    results.add(await store.put(`n-${i++}`, cp, HOUR))
    return await evals(redis.port) - before >= 6
  }, 15_000)
  t.same([...results], ['unavailable'])
  const kinds = events.map((e) => `${e.kind}:${e.node.writesRefused}`)
  const warns = logs.records.filter((r) => r['level'] === 40).map((r) => String(r['msg']))
  t.comment(`${i} puts; events: ${kinds.join(', ')}; ${warns.length} warn lines`)
  t.same(kinds, [`writes_refused:${second}`], `one event, for ${second} (it refuses renewals too), while nothing changes in Redis`)
  t.equal(warns.length, 1, 'one warn line')
  t.match(warns[0], /neither stored nor renewed/, 'that says renewals are refused too')
  const node = conn.nodes()[0]!
  t.equal(node.status, 'up')
  t.equal(node.writesRefused, second)
  t.equal(node.full, false, 'told by the reason that refuses more (full_state is for OOM alone)')
}

t.test('full and MISCONF: the reason is MISCONF, told once, not flipped by every put and probe', (t) => run(t, 'misconf'))
t.test('full and NOREPLICAS: the reason is NOREPLICAS, told once, not flipped by every put and probe', (t) => run(t, 'noreplicas'))
