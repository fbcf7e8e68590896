// Key, channel and script refusals (NOPERM for a key or a channel, a script's own refused call)
// are told accepted again (onRefused, `error: null`, with their `kind`) once the refused thing is
// next accepted (src/redis/connection.ts): a key by its kind (`na:af:{…}`: a session's part never
// told), a channel by the command it was refused to, a script by its name. And a script's
// refusal on Redis 7.0 (which names no command: told under the EVALSHA sent) and a refused
// EVALSHA are two warns, not one rate-limited one (src/state/create-state.ts).
// Real redis-server (7.0 here), the real RedisConnection, Tether in-process for the log lines.
import t, { type Test } from 'tap'
import http from 'node:http'
import { RedisConnection, type RedisRefusal } from '../src/redis/connection.js'
import { RedisPeerChannel } from '../src/redis/peer-channel.js'
import { startTether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { DEFAULTS } from '../src/config/schema.js'
import { redisCli, startRedis, type RedisServer } from './fixtures/redis-server.js'
import { testConfig } from './fixtures/upstream.js'
import { CookieJar, get } from './fixtures/users.js'
import { startCounter } from './fixtures/counter-upstream.js'
import { LogCapture } from './fixtures/log-capture.js'
import { waitFor } from './fixtures/wait.js'

const USER = 'tether-app'
const PASSWORD = 'app-s3cret'
const SCRIPT = "redis.call('SET', KEYS[1], ARGV[1]); return 1"

/** A standalone Redis whose ACL user has `grant` (all commands but the dangerous), and a started connection as that user, its refusals in `told`. */
async function asUser(t: Test, ...grant: string[]): Promise<{ redis: RedisServer; conn: RedisConnection; told: RedisRefusal[] }> {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  await redisCli(redis.port, 'ACL', 'SETUSER', USER, 'on', `>${PASSWORD}`, '+@all', '-@dangerous', ...grant)
  const conn = new RedisConnection({ url: `redis://${USER}:${PASSWORD}@127.0.0.1:${redis.port}`, keyPrefix: 'na:', timeout: 2_000, maxReconnectDelay: 200 })
  conn.defineScript('put', SCRIPT, 1)
  const told: RedisRefusal[] = []
  conn.onRefused((r) => told.push(r))
  await conn.start()
  t.teardown(() => conn.stop())
  return { redis, conn, told }
}

const ends = (told: RedisRefusal[]): RedisRefusal[] => told.filter((r) => r.error === null)

t.test('a refused key kind is told accepted once a call of that kind succeeds, by its kind only; not while another kind is still refused', async (t) => {
  // the keyspace marker (`na:k...`) refused, then the bindings too
  const { redis, conn, told } = await asUser(t, '~na:[^ak]*', '&*')
  const session = 'na:af:{PHPSESSID-s3cret}'
  t.equal(typeof (await conn.run('na:keyspace', (c) => c.get('na:keyspace'))), 'symbol', 'the marker refused')
  t.equal(typeof (await conn.run(session, (c) => c.get(session))), 'symbol', 'a binding refused')
  t.same(told.map((r) => [r.kind, r.key, r.error === null]), [['key', 'na:keyspace', false], ['key', 'na:af:{…}', false]], 'both told, by kind')
  await redisCli(redis.port, 'ACL', 'SETUSER', USER, '~na:af:*')
  t.equal(await conn.run(session, (c) => c.get(session)), null, 'the binding granted: its call succeeds')
  t.same(ends(told), [], 'not told accepted while the marker is still refused (the keys are one warn)')
  await redisCli(redis.port, 'ACL', 'SETUSER', USER, '~na:keyspace')
  t.equal(await conn.run('na:keyspace', (c) => c.get('na:keyspace')), null, 'the marker granted')
  t.same(ends(told), [{ command: 'GET', error: null, kind: 'key', key: 'na:keyspace' }], 'told accepted once, naming the last kind')
  await conn.run('na:keyspace', (c) => c.get('na:keyspace'))
  t.equal(ends(told).length, 1, 'later calls add nothing')
  t.notOk(JSON.stringify(told).includes('s3cret'), "the session's part is never told")
})

t.test('a key kind refused to one command and allowed to another (Redis 7 read-only key permission) is not told accepted by the allowed one: no warn and info per request', async (t) => {
  // bindings readable (GET) but not writable (DEL): each request reads, then its write is refused
  const { redis, conn, told } = await asUser(t, '~na:[^a]*', '%R~na:af:*', '&*')
  const session = 'na:af:{s}'
  for (let i = 0; i < 3; i++) {
    t.equal(await conn.run(session, (c) => c.get(session)), null, 'the read allowed')
    t.equal(typeof (await conn.run(session, (c) => c.del(session))), 'symbol', 'the write (DEL) refused')
  }
  t.equal(told.filter((r) => r.error !== null).length, 3, 'each write refused')
  t.same(ends(told), [], 'never told accepted: the refused command never succeeded')
  await redisCli(redis.port, 'ACL', 'SETUSER', USER, '~na:af:*')
  t.equal(await conn.run(session, (c) => c.get(session)), null)
  t.same(ends(told), [], 'a read still does not end it')
  t.equal(await conn.run(session, (c) => c.del(session)), 0, 'the write granted')
  t.same(ends(told), [{ command: 'DEL', error: null, kind: 'key', key: 'na:af:{…}' }], 'told accepted once the refused command succeeds on that kind')
})

t.test('a key refused to a script (EVAL on a new socket, EVALSHA after) is told accepted once a call of the script succeeds on that key kind', async (t) => {
  const { redis, conn, told } = await asUser(t, '~na:[^a]*', '&*')
  const session = 'na:af:{s}'
  t.equal(typeof (await conn.runScript('put', session, '1')), 'symbol', 'refused')
  t.equal(typeof (await conn.runScript('put', session, '1')), 'symbol', 'refused again')
  t.same(told.map((r) => [r.kind, r.key]), [['key', 'na:af:{…}'], ['key', 'na:af:{…}']])
  await redisCli(redis.port, 'ACL', 'SETUSER', USER, '~na:af:*')
  t.equal(await conn.runScript('put', session, '2'), 1, 'granted')
  t.match(ends(told), [{ kind: 'key', key: 'na:af:{…}', error: null, command: /^EVAL(SHA)?$/ }], 'told accepted once')
  t.equal(ends(told).length, 1)
})

t.test('a refused channel is told accepted once a PUBLISH, or the SUBSCRIBE asked again, succeeds', async (t) => {
  const { redis, conn, told } = await asUser(t, '~na:*', 'resetchannels', '&other:*')
  const peers = new RedisPeerChannel(conn)
  t.equal(await peers.publish('x'), false, 'PUBLISH refused')
  void peers.subscribe(() => undefined)
  await waitFor(() => told.some((r) => r.command === 'SUBSCRIBE'), 5_000, 'the SUBSCRIBE refused')
  t.same(told.map((r) => [r.command, r.kind]).slice(0, 2), [['PUBLISH', 'channel'], ['SUBSCRIBE', 'channel']], 'both told as a channel')
  await redisCli(redis.port, 'ACL', 'SETUSER', USER, '&na:*')
  t.equal(await peers.publish('x'), true, 'granted: PUBLISH succeeds')
  await waitFor(() => ends(told).length === 2, 5_000, 'the SUBSCRIBE asked again')
  t.same(ends(told), [{ command: 'PUBLISH', error: null, kind: 'channel' }, { command: 'SUBSCRIBE', error: null, kind: 'channel' }], 'each told accepted once')
})

t.test('PUBLISH refused for its channel, then as a command: once it succeeds both are told accepted, each by its kind', async (t) => {
  const { redis, conn, told } = await asUser(t, '~na:*', 'resetchannels', '&other:*')
  const peers = new RedisPeerChannel(conn)
  t.equal(await peers.publish('x'), false, 'refused: the channel')
  await redisCli(redis.port, 'ACL', 'SETUSER', USER, '-publish')
  t.equal(await peers.publish('x'), false, 'refused: the command')
  t.same(told.map((r) => [r.command, r.kind]), [['PUBLISH', 'channel'], ['PUBLISH', 'command']])
  await redisCli(redis.port, 'ACL', 'SETUSER', USER, '+publish', '&na:*')
  t.equal(await peers.publish('x'), true, 'granted')
  t.same(ends(told).map((r) => r.kind).sort(), ['channel', 'command'], 'each warn has its end (else the channel warn stays open for good)')
})

t.test("a script's refused call (Redis 7.0: names no command) is told accepted once a call of that script succeeds", async (t) => {
  const { redis, conn, told } = await asUser(t, '~na:*', '&*', '-set')
  t.equal(typeof (await conn.runScript('put', 'na:x', '1')), 'symbol', 'the script refused')
  t.match(told, [{ kind: 'script', script: 'put', command: /^EVAL(SHA)?$/, error: /script can't run/ }], 'told as the script\'s')
  await redisCli(redis.port, 'ACL', 'SETUSER', USER, '+set')
  t.equal(await conn.runScript('put', 'na:x', '2'), 1, 'granted: the script succeeds')
  t.match(ends(told), [{ kind: 'script', script: 'put', error: null }], 'told accepted once')
  t.equal(ends(told).length, 1)
})

t.test("Redis 7.0: a script's refused call and then a refused EVALSHA are two warns, not one rate-limited warn; each ends with its own info line", async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  await redisCli(redis.port, 'ACL', 'SETUSER', USER, 'on', `>${PASSWORD}`, '~acl:*', '&*', '+@all', '-@dangerous')
  const app = await startCounter('app-0')
  t.teardown(() => app.kill())
  const logs = new LogCapture()
  const cfg = testConfig([app], {
    affinity: { cookie: { ...DEFAULTS.affinity.cookie, secret: ['redis-refusal-ends-0123456789abcdef'] } },
    state: { store: 'redis', timeout: 1_000, redis: { url: `redis://127.0.0.1:${redis.port}`, username: USER, password: PASSWORD, key_prefix: 'acl:' } },
  })
  const tt = await startTether(cfg, { logger: createLogger('info', logs) })
  t.teardown(() => tt.close(0))
  let n = 0
  const ask = async (): Promise<void> => {
    const jar = new CookieJar()
    jar.cookies.set('user', `u${n++}`)
    await get(tt.url, new http.Agent(), {}, jar)
  }
  const refusals = (): Record<string, unknown>[] => logs.records.filter((l) => String(l['msg']).startsWith('redis refused'))
  const evalshaRefused = (): Record<string, unknown>[] => refusals().filter((l) => /no permissions to run the 'evalsha' command/.test(String(l['err'])))
  // the script loaded (a connection's first script call is an EVAL), then HSET revoked: the next
  // writes are EVALSHAs whose HSET is refused, told under EVALSHA (7.0 names no command)
  for (let i = 0; i < 3; i++) await ask()
  await redisCli(redis.port, 'ACL', 'SETUSER', USER, '-hset')
  await waitFor(async () => { await ask(); return refusals().some((l) => l['command'] === 'EVALSHA') }, 5_000, "the script's refusal under EVALSHA warned")
  t.match(refusals().find((l) => l['command'] === 'EVALSHA'), { level: 40, msg: "redis refused a command a script calls: the ACL user may not run it, the script's calls fail", script: 'tetherPutCheckpoint', err: /script can't run/ }, "the script's refusal, with the script's name")
  await redisCli(redis.port, 'ACL', 'SETUSER', USER, '-evalsha')
  await waitFor(async () => { await ask(); return evalshaRefused().length > 0 }, 5_000, 'the refused EVALSHA warned too, within the 30 s window')
  t.match(evalshaRefused(), [{ level: 40, msg: 'redis refused a command: the ACL user may not run it, its calls fail', command: 'EVALSHA' }], 'its own warn')
  await redisCli(redis.port, 'ACL', 'SETUSER', USER, '+evalsha', '+hset')
  const accepted = (): string[] => logs.records.filter((l) => String(l['msg']).startsWith('redis accepts')).map((l) => String(l['msg']))
  await waitFor(async () => { await ask(); return accepted().includes('redis accepts the command again: its calls succeed') && accepted().includes("redis accepts the script's commands again: its calls succeed") }, 5_000, 'both told accepted again')
  t.pass('each ended by its own info line')
})
