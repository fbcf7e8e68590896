// Every data command Tether sends, refused by the ACL user (NOPERM), is told to the refusal
// listeners (the `redis refused a command` warn) with the command and a hint naming the grant
// to add: Tether's key pattern for a key (`~na:*`), its channel pattern for a channel
// (`&na:*`), including the peer channel's SUBSCRIBE on its own connection. Reply shapes of the
// redis-server here (7.0: "this user has no permissions to access one of the keys used as
// arguments", "... channels ...", and a script's refused command: "ERR The user executing the
// script can't run this command or subcommand"). A key prefix with glob characters is granted as
// told; a Cluster master's start-up PING refused keeps its hint; the peer set's HSET and PEXPIRE
// (sent together) both refused are each told. Real redis-server and the real
// RedisConnection.
import t, { type Test } from 'tap'
import { RedisConnection, type RedisRefusal } from '../src/redis/connection.js'
import { RedisBindings } from '../src/redis/binding-store.js'
import { RedisCheckpointStore } from '../src/redis/checkpoint-store.js'
import { RedisPeerChannel } from '../src/redis/peer-channel.js'
import { redisCli, startRedis, startRedisCluster } from './fixtures/redis-server.js'
import { waitFor } from './fixtures/wait.js'

const USER = 'tether-app'
const PASSWORD = 'app-s3cret'
const KEY_GRANT = /\(Redis's ACL user may not access the keys: grant them \(ACL SETUSER <user> ~na:\*\), or check url\)$/
const CHANNEL_GRANT = /\(Redis's ACL user may not use the channel: grant them \(ACL SETUSER <user> &na:\*\), or check url\)$/

/** A connection as an ACL user granted `grant` (all commands), its refusals in `told`. */
async function refusedUser(t: Test, ...grant: string[]): Promise<{ conn: RedisConnection; told: RedisRefusal[]; port: number }> {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  await redisCli(redis.port, 'ACL', 'SETUSER', USER, 'on', `>${PASSWORD}`, '+@all', '-@dangerous', ...grant)
  const conn = new RedisConnection({ url: `redis://${USER}:${PASSWORD}@127.0.0.1:${redis.port}`, keyPrefix: 'na:', timeout: 2_000, connectTimeout: 1_000, maxReconnectDelay: 250 })
  const told: RedisRefusal[] = []
  conn.onRefused((r) => told.push(r))
  return { conn, told, port: redis.port }
}

t.test('keys outside the grant: every binding, checkpoint and peer-set command is told with its command and the key pattern to grant', async (t) => {
  const { conn, told } = await refusedUser(t, '~other:*', '&*')
  const bindings = new RedisBindings(conn, 60_000)
  const checkpoints = new RedisCheckpointStore({ connection: conn })
  const peers = new RedisPeerChannel(conn)
  await conn.start()
  t.teardown(() => conn.stop())
  await bindings.lookup('u1')
  await bindings.set('u1', 'app-0', 1)
  await bindings.delete('u1')
  await checkpoints.put('u1', { value: 'v', version: null, upstream: 'app-0', epoch: 1, writtenAt: 1 }, 60_000)
  await checkpoints.get('u1')
  await checkpoints.delete('u1')
  await peers.remember('drains', 'a', '1')
  await peers.members('drains')
  t.same([...new Set(told.map((r) => r.command))].sort(), ['DEL', 'EVAL', 'MGET', 'HGETALL', 'HSET', 'PEXPIRE'].sort(), 'each command named (the peer set\'s HSET and PEXPIRE both; a binding is read with its placement time by MGET)')
  for (const r of told) t.match(r.error, KEY_GRANT, `${r.command}: the key pattern to grant`)
  t.notOk(JSON.stringify(told).includes(USER), 'the user name is never told')
})

t.test('channels outside the grant: the peer channel\'s PUBLISH and SUBSCRIBE are told with the channel pattern to grant; granted, the subscription comes without a reconnect', async (t) => {
  const { conn, told, port } = await refusedUser(t, '~na:*', 'resetchannels', '&other:*')
  const peers = new RedisPeerChannel(conn)
  await conn.start()
  t.teardown(() => conn.stop())
  t.equal(await peers.publish('{"kind":"drain"}'), false, 'PUBLISH refused: it fails')
  const received: string[] = []
  await peers.subscribe((m) => received.push(m))
  await waitFor(() => told.some((r) => r.command === 'SUBSCRIBE'), 5_000, 'the SUBSCRIBE refusal told')
  t.same([...new Set(told.map((r) => r.command))], ['PUBLISH', 'SUBSCRIBE'], 'each told')
  for (const r of told) t.match(r.error, CHANNEL_GRANT, `${r.command}: the channel pattern to grant`)
  await redisCli(port, 'ACL', 'SETUSER', USER, '&na:*')
  // (asked again every maxReconnectDelay: 250 ms here, 2 s by default; well inside the deadline on a loaded machine)
  await waitFor(async () => { await redisCli(port, 'PUBLISH', 'na:events', 'hello'); return received.includes('hello') }, 5_000, 'a message on the channel once granted')
  t.pass('subscribed once the channel is granted, on the same connection')
})

t.test('a command a script calls refused (Redis 7.0 answers ERR, not NOPERM): the binding and checkpoint writes are told with the commands Tether\'s scripts call', async (t) => {
  const { conn, told } = await refusedUser(t, '~na:*', '&*', '-set', '-hset')
  const bindings = new RedisBindings(conn, 60_000)
  const checkpoints = new RedisCheckpointStore({ connection: conn })
  await conn.start()
  t.teardown(() => conn.stop())
  t.equal(await bindings.set('u1', 'app-0', 1), false, 'the binding write fails')
  t.equal(await checkpoints.put('u1', { value: 'v', version: null, upstream: 'app-0', epoch: 1, writtenAt: 1 }, 60_000), 'unavailable', 'the checkpoint write fails')
  t.equal(told.length, 2, 'both told')
  for (const r of told) {
    t.match(r, { command: /^EVAL(SHA)?$/, error: /The user executing the script can't run this command.*\(Redis's ACL user may not run a command Tether's script calls: grant them \(ACL SETUSER <user> \+get \+set \+del \+pttl \+hmget \+hset \+pexpire\), or check url\)$/ }, 'the script command and the grant')
  }
})

t.test('the peer set\'s HSET and PEXPIRE (sent together) both refused: each refusal told with its grant, the call fails, no unhandled rejection', async (t) => {
  const { conn, told } = await refusedUser(t, '~na:*', '&*', '-hset', '-pexpire')
  const unhandled: unknown[] = []
  const onUnhandled = (reason: unknown): void => { unhandled.push(reason) }
  process.on('unhandledRejection', onUnhandled)
  t.teardown(() => { process.off('unhandledRejection', onUnhandled) })
  const peers = new RedisPeerChannel(conn)
  await conn.start()
  t.teardown(() => conn.stop())
  t.equal(await peers.remember('drains', 'a', '1'), false, 'refused: the call fails')
  t.same(told.map((r) => r.command).sort(), ['HSET', 'PEXPIRE'], 'both refusals told')
  t.match(told.find((r) => r.command === 'HSET')?.error, /may not run HSET: grant it \(ACL SETUSER <user> \+hset\)/, 'HSET\'s grant')
  t.match(told.find((r) => r.command === 'PEXPIRE')?.error, /may not run PEXPIRE: grant it \(ACL SETUSER <user> \+pexpire\)/, 'PEXPIRE\'s grant')
  // (an unhandled rejection is reported after the microtasks of the turn that left it)
  await new Promise((resolve) => setImmediate(resolve))
  t.same(unhandled, [], 'no unhandled rejection')
})

t.test('a key prefix with glob characters (`na[1]:`): the key and channel grants told match it literally, and applied as told, the calls succeed', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  await redisCli(redis.port, 'ACL', 'SETUSER', USER, 'on', `>${PASSWORD}`, '+@all', '-@dangerous', '~other:*', 'resetchannels', '&other:*')
  const conn = new RedisConnection({ url: `redis://${USER}:${PASSWORD}@127.0.0.1:${redis.port}`, keyPrefix: 'na[1]:', timeout: 2_000, connectTimeout: 1_000 })
  const told: RedisRefusal[] = []
  conn.onRefused((r) => told.push(r))
  await conn.start()
  t.teardown(() => conn.stop())
  const peers = new RedisPeerChannel(conn)
  t.equal(await peers.remember('drains', 'a', '1'), false, 'the key refused')
  t.equal(await peers.publish('{"kind":"drain"}'), false, 'the channel refused')
  // (the peer set's HSET and PEXPIRE each told the key's grant)
  const grants = [...new Set(told.map((r) => /\(ACL SETUSER <user> ([~&]\S+)\)/.exec(r.error ?? '')?.[1]))]
  t.same(grants, ['~na\\[1\\]:*', '&na\\[1\\]:*'], 'the glob characters escaped')
  for (const grant of grants) await redisCli(redis.port, 'ACL', 'SETUSER', USER, grant!)
  t.equal(await peers.remember('drains', 'a', '1'), true, 'the key granted as told')
  t.equal(await peers.publish('{"kind":"drain"}'), true, 'the channel granted as told')
})

t.test('Cluster: the PING start() sends each master, refused, is recorded with its hint (the grant, no user name) as the node\'s last error', async (t) => {
  const cluster = await startRedisCluster(3)
  t.teardown(() => cluster.stop())
  for (const n of cluster.nodes) await redisCli(n.port, 'ACL', 'SETUSER', USER, 'on', `>${PASSWORD}`, '~na:*', '&*', '+@all', '-@dangerous', '+cluster', '+readonly', '-ping')
  const conn = new RedisConnection({ nodes: cluster.addresses, username: USER, password: PASSWORD, keyPrefix: 'na:', timeout: 2_000, connectTimeout: 2_000 })
  await conn.start()
  t.teardown(() => conn.stop())
  const errors = conn.nodes().map((n) => n.lastError)
  t.equal(errors.length, 3, 'three masters')
  for (const error of errors) t.match(error, /NOPERM.*\(Redis's ACL user may not run PING: grant it \(ACL SETUSER <user> \+ping\), or check username\)$/, 'the refusal with its hint')
})
