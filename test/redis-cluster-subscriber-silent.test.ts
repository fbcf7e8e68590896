// A Redis Cluster's subscriber connection (the one ioredis's Cluster makes itself for pub/sub,
// ClusterSubscriber) is PINGed as the standalone and Sentinel ones are (SUBSCRIBER_PING_MS in
// src/redis/connection.ts): one that goes silent (here: its node holds every command of its
// clients, CLIENT PAUSE ALL, as a frozen node or a dropped NAT entry would) is closed after the
// stall timeout and made again (ioredis picks a node again), subscribed again, and
// `onSubscribed` re-reads what was missed. Before, a silent Cluster subscriber was never noticed.
// A real 3-node redis-server Cluster; nothing sleeps for a fixed time.
import t from 'tap'
import { RedisConnection, SUBSCRIBER_PING_MS } from '../src/redis/connection.js'
import { RedisPeerChannel } from '../src/redis/peer-channel.js'
import { redisCli, startRedisCluster, type RedisServer } from './fixtures/redis-server.js'
import { waitFor } from './fixtures/wait.js'

/** The node whose client list has the Cluster subscriber connection, and that line. */
async function subscriberOn(nodes: readonly RedisServer[]): Promise<{ node: RedisServer; line: string } | null> {
  for (const node of nodes) {
    const line = (await redisCli(node.port, 'CLIENT', 'LIST')).split('\n').find((l) => /\bsub=1\b/.test(l))
    if (line !== undefined) return { node, line }
  }
  return null
}

t.test('a Cluster subscriber gone silent is noticed by its PING and made again, subscribed again, and hears the messages published after', async (t) => {
  const cluster = await startRedisCluster(3)
  t.teardown(() => cluster.stop())
  const conn = new RedisConnection({ nodes: cluster.addresses, timeout: 1_000, connectTimeout: 1_000, stallTimeout: 500, maxReconnectDelay: 100 })
  await conn.start()
  t.teardown(() => conn.stop())
  const heard: string[] = []
  let subscribed = 0
  const channel = new RedisPeerChannel(conn)
  await channel.subscribe((m) => heard.push(m), () => subscribed++)
  await waitFor(() => subscribed === 1, 5_000, 'subscribed')
  const first = await subscriberOn(cluster.nodes)
  t.ok(first, 'the subscriber connection is on a node')
  await redisCli(cluster.nodes[0]!.port, 'PUBLISH', 'tether:events', 'before')
  await waitFor(() => heard.includes('before'), 5_000, 'the first message')
  // its node holds every command of its clients past the subscriber's next PING (at most
  // SUBSCRIBER_PING_MS away) and its stall timeout: that PING gets no answer, and nothing else
  // ends that connection (its node's TCP stays up, as a frozen node's or behind a dropped NAT entry)
  const silent = first!.node
  await redisCli(silent.port, 'CLIENT', 'PAUSE', String(SUBSCRIBER_PING_MS + 2_000), 'ALL')
  const other = cluster.nodes.find((n) => n !== silent)!
  await waitFor(() => subscribed === 2, SUBSCRIBER_PING_MS + 10_000, 'subscribed again on a new connection')
  await redisCli(other.port, 'PUBLISH', 'tether:events', 'after')
  await waitFor(() => heard.includes('after'), 10_000, 'a message published after the silence')
})
