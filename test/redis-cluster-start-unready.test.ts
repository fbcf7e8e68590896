// A Redis Cluster whose ready check fails at Tether's start (ioredis's CLUSTER INFO says
// cluster_state:fail: a slot served by no master, as after a master lost without a replica):
// ioredis's connect() then neither resolves nor rejects (its first attempt's promise is left
// behind when the failed ready check makes it reconnect), and start() waited on it for good, so
// Tether never listened, even once the Cluster was whole again. start() must end its wait once
// the first attempt failed, as it does for a standalone server (about connectTimeout), and the
// connection turn ready in the background once the Cluster is. Review R3 (F3): and it must say
// why: every master was shown "unreachable: connection closed" (ioredis tells the failed ready
// check only in its debug output); the seeds are now asked CLUSTER INFO. Real 3-master Cluster.
import t from 'tap'
import net from 'node:net'
import { RedisConnection, unreadyReason, type RedisNodeEvent } from '../src/redis/connection.js'
import { redisCli, startRedisCluster, waitFor } from './fixtures/redis-server.js'
import { within } from './fixtures/wait.js'

t.test('a Cluster in state fail at the start: start() ends its wait, degraded, and the connection is ready once the Cluster is whole', async (t) => {
  const cluster = await startRedisCluster(3)
  t.teardown(() => cluster.stop())
  const owner = cluster.nodes[0]!
  // slot 0 served by no master, in every node's view: cluster_state:fail everywhere
  for (const n of cluster.nodes) await redisCli(n.port, 'CLUSTER', 'DELSLOTS', '0')
  await waitFor('cluster_state:fail on every node', async () => (await Promise.all(cluster.nodes.map((n) => redisCli(n.port, 'CLUSTER', 'INFO')))).every((i) => i.includes('cluster_state:fail')), 5_000)
  // and a seed that takes connections and never answers (a hung node), listed last: its silence
  // held the question to its deadline and the other seeds' reasons were lost (review R7)
  const held = new Set<net.Socket>()
  const silent = net.createServer((c) => { held.add(c); c.on('error', () => undefined) })
  await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { for (const c of held) c.destroy(); silent.close() })
  const hung = { host: '127.0.0.1', port: (silent.address() as net.AddressInfo).port }
  const conn = new RedisConnection({ nodes: [...cluster.addresses, hung], keyPrefix: 'unready:', timeout: 500, connectTimeout: 1_000, maxReconnectDelay: 200 })
  t.teardown(() => conn.stop())
  const details: string[] = []
  conn.onStatus((s, detail) => details.push(`${s}: ${detail}`))
  const events: RedisNodeEvent[] = []
  conn.onNode((e) => events.push(e))
  const t0 = performance.now()
  await within(conn.start(), 10_000, 'start() to end its wait')
  t.comment(`start() ended its wait after ${Math.round(performance.now() - t0)} ms`)
  t.equal(conn.status, 'degraded', 'degraded while the Cluster fails')
  // why, told by start()'s end: in each master's summary (/readyz) and in a down event (the log line)
  const why = /unreachable: connection closed: the Cluster's ready check fails: 127\.0\.0\.1:\d+ says cluster_state:fail \(1 slot served by no master\)$/
  const nodes = conn.nodes()
  t.ok(nodes.length === 3 && nodes.every((n) => why.test(n.summary)), `every master says why: ${nodes.map((n) => n.summary).join(' | ')}`)
  t.comment(events.map((e) => `${e.kind} ${e.node.summary}`).join(' | '))
  t.ok(events.some((e) => e.kind === 'down' && why.test(e.node.summary)), 'a down event says why')
  // the Cluster whole again: slot 0 back to its master
  await redisCli(owner.port, 'CLUSTER', 'ADDSLOTS', '0')
  await waitFor('cluster_state:ok on every node', async () => (await Promise.all(cluster.nodes.map((n) => redisCli(n.port, 'CLUSTER', 'INFO')))).every((i) => i.includes('cluster_state:ok')), 10_000)
  await waitFor('the connection ready', () => conn.status === 'ready', 10_000)
  t.comment(details.join(' | '))
  t.equal(await conn.run('unready:{a}', (c) => c.exists('unready:{a}')), 0, 'and it answers')
})

t.test('unreadyReason: what a CLUSTER INFO answer says about a failed ready check', async (t) => {
  t.equal(unreadyReason('cluster_state:ok\r\ncluster_slots_assigned:16384\r\n'), null)
  t.equal(unreadyReason('cluster_state:fail\r\ncluster_slots_assigned:16383\r\ncluster_slots_fail:0\r\n'), 'says cluster_state:fail (1 slot served by no master)')
  t.equal(unreadyReason('cluster_state:fail\r\ncluster_slots_assigned:0\r\n'), 'says cluster_state:fail (16384 slots served by no master)')
  t.equal(unreadyReason('cluster_state:fail\r\ncluster_slots_assigned:16384\r\ncluster_slots_fail:5461\r\n'), 'says cluster_state:fail (5461 slots of failed masters)')
  t.equal(unreadyReason('cluster_state:fail\r\n'), 'says cluster_state:fail')
  t.equal(unreadyReason('no such field'), null)
})
