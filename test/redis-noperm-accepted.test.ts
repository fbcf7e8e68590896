// A command Redis refused (NOPERM) is told accepted again (onRefused, `error: null`) once a call of
// it gets a reply (src/redis/connection.ts): also a command a call sends after another (the peer
// set's PEXPIRE after its HSET), and with a Cluster only once no node refuses it any more (nodes keep their own
// ACLs: one node fixed before the others must not end and start the warn at each call; a node
// that serves no slot any more refuses nothing). A refused subcommand (`object|encoding`) is
// matched by its full name.
// Real redis-server(s) and the real RedisConnection.
import t, { type Test } from 'tap'
import { RedisConnection, type RedisRefusal } from '../src/redis/connection.js'
import { RedisPeerChannel } from '../src/redis/peer-channel.js'
import { redisCli, startRedis, startRedisCluster, type RedisServer } from './fixtures/redis-server.js'
import { waitFor } from './fixtures/wait.js'

const USER = 'tether-app'
const PASSWORD = 'app-s3cret'
const GRANT = ['on', `>${PASSWORD}`, '~na:*', '&*', '+@all', '-@dangerous']
const SCRIPT = "redis.call('SET', KEYS[1], ARGV[1]); return 1"

/** A standalone Redis whose ACL user is granted GRANT and `minus`, and a started connection as that user, its refusals in `told`. */
async function refusingServer(t: Test, minus: string): Promise<{ redis: RedisServer; conn: RedisConnection; told: RedisRefusal[] }> {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  await redisCli(redis.port, 'ACL', 'SETUSER', USER, ...GRANT, minus)
  const conn = new RedisConnection({ url: `redis://${USER}:${PASSWORD}@127.0.0.1:${redis.port}`, keyPrefix: 'na:', timeout: 2_000 })
  const told: RedisRefusal[] = []
  conn.onRefused((r) => told.push(r))
  await conn.start()
  t.teardown(() => conn.stop())
  return { redis, conn, told }
}

t.test('a PEXPIRE sent after an HSET (the peer set) refused, then granted: told accepted once a call of it succeeds', async (t) => {
  const { redis, conn, told } = await refusingServer(t, '-pexpire')
  const peers = new RedisPeerChannel(conn)
  t.equal(await peers.remember('drains', 'a', '1'), false, 'refused: the call fails')
  t.same(told.map((r) => [r.command, r.error === null]), [['PEXPIRE', false]], 'the refusal told')
  await redisCli(redis.port, 'ACL', 'SETUSER', USER, '+pexpire')
  t.equal(await peers.remember('drains', 'a', '1'), true, 'granted: the call succeeds')
  t.same(told.map((r) => [r.command, r.error === null]), [['PEXPIRE', false], ['PEXPIRE', true]], 'told accepted again')
})

t.test('a refused subcommand (Redis 7: "no permissions to run the \'object|encoding\' command"), then granted: told by its full name, and accepted again once a call of it succeeds', async (t) => {
  const { redis, conn, told } = await refusingServer(t, '-object|encoding')
  await redisCli(redis.port, 'SET', 'na:x', '1')
  // (Tether sends no subcommand itself today: a call of one through run(), as a role would)
  const encoding = (): Promise<unknown> => conn.run('na:x', (c) => (c as unknown as { object(sub: string, key: string): Promise<unknown> }).object('ENCODING', 'na:x'))
  t.equal(typeof (await encoding()), 'symbol', 'refused: the call fails')
  t.same(told.map((r) => r.command), ['OBJECT|ENCODING'], 'the refusal told by its full name')
  t.match(told[0]?.error, /may not run OBJECT\|ENCODING: grant it \(ACL SETUSER <user> \+object\|encoding\)/, 'the grant names the subcommand')
  await redisCli(redis.port, 'ACL', 'SETUSER', USER, '+object|encoding')
  t.equal(await encoding(), 'int', 'granted: the call succeeds')
  t.same(told.map((r) => [r.command, r.error === null]), [['OBJECT|ENCODING', false], ['OBJECT|ENCODING', true]], 'told accepted again')
})

t.test('Cluster: EVALSHA refused by one node only is not told accepted by the others\' replies; told once that node takes it', async (t) => {
  const { cluster, conn, told } = await refusingCluster(t)
  // a key on each node
  const refusing = `127.0.0.1:${cluster.nodes[0]!.port}`
  const keys = new Map<string, string>()
  await waitFor(() => {
    for (let i = 0; i < 1_000 && keys.size < 3; i++) {
      const at = conn.nodeOf(`na:k${i}`)
      if (at !== null && !keys.has(at)) keys.set(at, `na:k${i}`)
    }
    return keys.size === 3
  }, 5_000, 'a key on each node')
  // each socket's first script call goes out as EVAL (allowed): the calls after it are EVALSHAs
  for (let round = 0; round < 4; round++) {
    for (const key of keys.values()) await conn.runScript('put', key, String(round))
  }
  t.ok(told.some((r) => r.command === 'EVALSHA' && r.error !== null), 'the refusal told')
  t.same(told.filter((r) => r.error === null), [], 'not told accepted while a node refuses it')
  await redisCli(cluster.nodes[0]!.port, 'ACL', 'SETUSER', USER, '+evalsha')
  for (const key of keys.values()) await conn.runScript('put', key, 'y')
  t.same(told.filter((r) => r.error === null).map((r) => r.command), ['EVALSHA'], 'told accepted once, when the refusing node took it')
})

t.test('Cluster: EVALSHA refused by a node that then serves no slot any more: told accepted once the node now serving them takes it', async (t) => {
  const { cluster, conn, told } = await refusingCluster(t)
  const refusing = `127.0.0.1:${cluster.nodes[0]!.port}`
  let key: string | null = null
  await waitFor(() => {
    for (let i = 0; i < 1_000 && key === null; i++) if (conn.nodeOf(`na:k${i}`) === refusing) key = `na:k${i}`
    return key !== null
  }, 5_000, 'a key on node 0')
  await waitFor(async () => { await conn.runScript('put', key!, 'a'); return told.length > 0 }, 5_000, 'the refusal')
  // node 0's slots handed to node 1 (as a resharding or a failover to a replica would; the keys
  // left behind do not matter here): every node forgets their owner, node 1 claims them
  const ranges = (conn.nodes().find((n) => n.address === refusing)?.slots ?? '').split(',').filter((r) => r !== '').map((r) => r.split('-'))
  t.ok(ranges.length > 0, `node 0's slots: ${ranges.join(' ')}`)
  const bounds = ranges.flatMap(([from, to]) => [from!, to ?? from!])
  for (const n of cluster.nodes) await redisCli(n.port, 'CLUSTER', 'DELSLOTSRANGE', ...bounds)
  await redisCli(cluster.nodes[1]!.port, 'CLUSTER', 'ADDSLOTSRANGE', ...bounds)
  await waitFor(async () => { await conn.runScript('put', key!, 'b'); return conn.nodes().every((n) => n.address !== refusing) }, 10_000, 'node 0 gone from the slot map')
  await waitFor(async () => { await conn.runScript('put', key!, 'c'); return told.some((r) => r.error === null) }, 5_000, 'told accepted')
  t.same(told.filter((r) => r.error === null).map((r) => r.command), ['EVALSHA'], 'told accepted once')
})

/** A 3-node Cluster whose node 0 refuses EVALSHA to USER, and a connection to it as USER telling its refusals into `told`. */
async function refusingCluster(t: Test) {
  const cluster = await startRedisCluster(3)
  t.teardown(() => cluster.stop())
  for (const [i, n] of cluster.nodes.entries()) {
    await redisCli(n.port, 'ACL', 'SETUSER', USER, ...GRANT, '+cluster', '+readonly', ...(i === 0 ? ['-evalsha'] : []))
  }
  const conn = new RedisConnection({ nodes: cluster.addresses, username: USER, password: PASSWORD, keyPrefix: 'na:', timeout: 2_000 })
  conn.defineScript('put', SCRIPT, 1)
  const told: RedisRefusal[] = []
  conn.onRefused((r) => told.push(r))
  await conn.start()
  t.teardown(() => conn.stop())
  return { cluster, conn, told }
}
