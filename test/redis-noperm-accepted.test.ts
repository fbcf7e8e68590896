// A command Redis refused (NOPERM) is told accepted again (onRefused, `error: null`) once a call of
// it gets a reply (src/redis/connection.ts): also a command a call sends second (the peer set's
// PEXPIRE). Real redis-server(s) and the real RedisConnection.
import t from 'tap'
import { RedisConnection, type RedisRefusal } from '../src/redis/connection.js'
import { RedisPeerChannel } from '../src/redis/peer-channel.js'
import { redisCli, startRedis } from './fixtures/redis-server.js'

const USER = 'tether-app'
const PASSWORD = 'app-s3cret'
const GRANT = ['on', `>${PASSWORD}`, '~na:*', '&*', '+@all', '-@dangerous']

t.test('a PEXPIRE sent after an await (the peer set) refused, then granted: told accepted once a call of it succeeds', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  await redisCli(redis.port, 'ACL', 'SETUSER', USER, ...GRANT, '-pexpire')
  const conn = new RedisConnection({ url: `redis://${USER}:${PASSWORD}@127.0.0.1:${redis.port}`, keyPrefix: 'na:', timeout: 2_000 })
  const told: RedisRefusal[] = []
  conn.onRefused((r) => told.push(r))
  await conn.start()
  t.teardown(() => conn.stop())
  const peers = new RedisPeerChannel(conn)
  t.equal(await peers.remember('drains', 'a', '1'), false, 'refused: the call fails')
  t.same(told.map((r) => [r.command, r.error === null]), [['PEXPIRE', false]], 'the refusal told')
  await redisCli(redis.port, 'ACL', 'SETUSER', USER, '+pexpire')
  t.equal(await peers.remember('drains', 'a', '1'), true, 'granted: the call succeeds')
  t.same(told.map((r) => [r.command, r.error === null]), [['PEXPIRE', false], ['PEXPIRE', true]], 'told accepted again')
})

