// A node that refuses writes for two reasons at once (full and MISCONF, full and NOREPLICAS):
// Redis 7 answers Tether's scripts without a shebang with MISCONF or NOREPLICAS (it checks
// scriptVerifyWriteCommandAllow before scriptVerifyOOM) but the writes probe (a shebang script,
// denyoom) with OOM (processCommand checks maxmemory first). The node's reason must stay one
// (the one that refuses more: MISCONF and NOREPLICAS refuse PEXPIRE too), not flip with every put
// and probe (an event, a warn line, a gauge flip each time). Real redis-server; found by review R1.
import t, { type Test } from 'tap'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { systemClock } from '../src/clock.js'
import { createLogger } from '../src/observability/logger.js'
import { RedisHealthLog } from '../src/observability/redis-health-log.js'
import { RedisCheckpointStore } from '../src/redis/checkpoint-store.js'
import { RedisConnection, type RedisNodeEvent } from '../src/redis/connection.js'
import { LogCapture } from './fixtures/log-capture.js'
import { redisCli, startRedis, waitFor } from './fixtures/redis-server.js'

const HOUR = 3_600_000
const cp = { value: 'x', version: 1, upstream: 'app-0', epoch: 0, writtenAt: 1 }

/** How many EVALs (the writes probe: puts go out as EVALSHA) the server saw, refused ones included. */
async function evals(port: number): Promise<number> {
  const line = /cmdstat_eval:([^\r\n]*)/.exec(await redisCli(port, 'INFO', 'commandstats'))?.[1] ?? ''
  return Number(/(?:^|,)calls=(\d+)/.exec(line)?.[1] ?? 0) + Number(/rejected_calls=(\d+)/.exec(line)?.[1] ?? 0)
}

async function run(t: Test, second: 'misconf' | 'noreplicas'): Promise<void> {
  const redis = await startRedis({ args: ['--enable-protected-configs', 'yes', '--maxmemory-policy', 'noeviction'] })
  t.teardown(async () => {
    await redisCli(redis.port, 'CONFIG', 'SET', 'save', '').catch(() => undefined)
    await redis.stop()
  })
  const conn = new RedisConnection({ url: redis.url, keyPrefix: 'flap:', timeout: 2_000 })
  t.teardown(() => conn.stop())
  const store = new RedisCheckpointStore({ connection: conn })
  await conn.start()
  t.equal(await store.put('u', cp, HOUR), 'stored')
  const events: RedisNodeEvent[] = []
  const logs = new LogCapture()
  const log = new RedisHealthLog(createLogger('info', logs), systemClock)
  conn.onNode((e) => { events.push(e); log.observe(e) })
  if (second === 'misconf') {
    // MISCONF: a failed BGSAVE into a deleted dir
    const gone = await mkdtemp(join(tmpdir(), 'tether-several-'))
    await redisCli(redis.port, 'CONFIG', 'SET', 'save', '3600 1')
    await redisCli(redis.port, 'CONFIG', 'SET', 'dir', gone)
    await rm(gone, { recursive: true })
    await redisCli(redis.port, 'BGSAVE')
    await waitFor('the RDB save to fail', async () => /rdb_last_bgsave_status:err/.test(await redisCli(redis.port, 'INFO', 'persistence')), 5_000)
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
