// One Tether process (workers: 1) on a Redis Cluster, health shared through Redis. A reshard
// moves the slot of a master's marker tag to another master (the marker key moves with it): the
// master gets a new tag, so a new marker key, which every process reads for the first time. The
// marker known for the node (the old key's) is no earlier value of the new key: that first read
// is a baseline, not a loss (49d4da8 compared it and reported a loss that never happened).
import t from 'tap'
import { startTether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { startRedisCluster, redisCli } from './fixtures/redis-server.js'
import { testConfig } from './fixtures/upstream.js'
import { startCounter } from './fixtures/counter-upstream.js'
import { waitFor } from './fixtures/wait.js'
import { LogCapture } from './fixtures/log-capture.js'

t.test('a reshard that moves a master\'s marker tag is not a keyspace loss', async (t) => {
  const cluster = await startRedisCluster(3)
  t.teardown(() => cluster.stop())
  const app = await startCounter('app-0')
  t.teardown(() => app.kill())
  const logs = new LogCapture()
  const cfg = testConfig([app], {
    health: { shared: 'redis', active: { path: null } },
    state: { store: 'redis', timeout: 1_000, redis: { nodes: cluster.nodes.map((n) => `127.0.0.1:${n.port}`), key_prefix: 'rt:' } },
  })
  const tt = await startTether(cfg, { logger: createLogger('info', logs) })
  t.teardown(() => tt.close(0))
  const [target, victim] = [cluster.nodes[0]!, cluster.nodes[1]!]
  const markers = async (port: number): Promise<string[]> => (await redisCli(port, 'KEYS', 'rt:keyspace*')).trim().split('\n').filter((l) => l !== '')
  await waitFor(async () => (await markers(victim.port)).length === 1, 10_000, 'the victim\'s marker')
  const key = (await markers(victim.port))[0]!
  const slot = (await redisCli(victim.port, 'CLUSTER', 'KEYSLOT', key)).trim()
  const id = async (port: number): Promise<string> => (await redisCli(port, 'CLUSTER', 'MYID')).trim()
  const [targetId, victimId] = [await id(target.port), await id(victim.port)]
  await redisCli(target.port, 'CLUSTER', 'SETSLOT', slot, 'IMPORTING', victimId)
  await redisCli(victim.port, 'CLUSTER', 'SETSLOT', slot, 'MIGRATING', targetId)
  await redisCli(victim.port, 'MIGRATE', '127.0.0.1', String(target.port), key, '0', '5000')
  for (const node of cluster.nodes) await redisCli(node.port, 'CLUSTER', 'SETSLOT', slot, 'NODE', targetId)
  // the victim gets a marker under a new tag once Tether learned the slot moved
  await waitFor(async () => (await markers(victim.port)).length === 1, 15_000, 'the victim\'s new marker')
  t.not((await markers(victim.port))[0], key, 'a new marker key on the victim')
  t.equal((await redisCli(target.port, 'EXISTS', key)).trim(), '1', 'the old marker moved with its slot (nothing lost)')
  // two more checks (1 s apart) after the new key exists
  const calls = async (): Promise<number> => Number(/cmdstat_evalsha:calls=(\d+)/.exec(await redisCli(victim.port, 'INFO', 'commandstats'))?.[1] ?? 0)
  const before = await calls()
  await waitFor(async () => (await calls()) >= before + 2, 5_000, 'two more checks of the victim')
  const lost = logs.records.filter((l) => l['msg'] === 'redis keyspace lost')
  for (const l of lost) t.comment(JSON.stringify(l).slice(0, 400))
  t.equal(lost.length, 0, 'no keyspace loss reported')
})
