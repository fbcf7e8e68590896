// A Redis Cluster whose ready check fails at Tether's start (ioredis's CLUSTER INFO says
// cluster_state:fail: a slot served by no master, as after a master lost without a replica):
// ioredis's connect() then neither resolves nor rejects (its first attempt's promise is left
// behind when the failed ready check makes it reconnect), and start() waited on it for good, so
// Tether never listened, even once the Cluster was whole again. start() must end its wait once
// the first attempt failed, as it does for a standalone server (about connectTimeout), and the
// connection turn ready in the background once the Cluster is. Real 3-master Cluster.
import t from 'tap'
import { RedisConnection } from '../src/redis/connection.js'
import { redisCli, startRedisCluster, waitFor } from './fixtures/redis-server.js'
import { within } from './fixtures/wait.js'

t.test('a Cluster in state fail at the start: start() ends its wait, degraded, and the connection is ready once the Cluster is whole', async (t) => {
  const cluster = await startRedisCluster(3)
  t.teardown(() => cluster.stop())
  const owner = cluster.nodes[0]!
  // slot 0 served by no master, in every node's view: cluster_state:fail everywhere
  for (const n of cluster.nodes) await redisCli(n.port, 'CLUSTER', 'DELSLOTS', '0')
  await waitFor('cluster_state:fail on every node', async () => (await Promise.all(cluster.nodes.map((n) => redisCli(n.port, 'CLUSTER', 'INFO')))).every((i) => i.includes('cluster_state:fail')), 5_000)
  const conn = new RedisConnection({ nodes: cluster.addresses, keyPrefix: 'unready:', timeout: 500, connectTimeout: 1_000, maxReconnectDelay: 200 })
  t.teardown(() => conn.stop())
  const details: string[] = []
  conn.onStatus((s, detail) => details.push(`${s}: ${detail}`))
  await within(conn.start(), 10_000, 'start() to end its wait')
  t.equal(conn.status, 'degraded', 'degraded while the Cluster fails')
  // the Cluster whole again: slot 0 back to its master
  await redisCli(owner.port, 'CLUSTER', 'ADDSLOTS', '0')
  await waitFor('cluster_state:ok on every node', async () => (await Promise.all(cluster.nodes.map((n) => redisCli(n.port, 'CLUSTER', 'INFO')))).every((i) => i.includes('cluster_state:ok')), 10_000)
  await waitFor('the connection ready', () => conn.status === 'ready', 10_000)
  t.comment(details.join(' | '))
  t.equal(await conn.run('unready:{a}', (c) => c.exists('unready:{a}')), 0, 'and it answers')
})
