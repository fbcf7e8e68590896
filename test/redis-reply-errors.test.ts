// An error reply that concerns one command or one key (an ACL refusal of a key pattern or a
// command, a key of the wrong type) fails that call only: the node answered, so it is not
// counted toward down (tether_redis_node_up stays 1, /readyz lists no failing node, moved users
// are still rehydrated). Only what says the node cannot serve (no reply, a closed connection,
// LOADING, READONLY, MASTERDOWN, BUSY, ...) does: test/redis-nodes.test.ts (a killed master goes
// down) and test/redis-failover.test.ts (READONLY) cover those. Real redis-server, Tether
// in-process, the counter app as a child process; no fixed sleeps.
import t, { type Test } from 'tap'
import http from 'node:http'
import { startTether, type Tether } from '../src/app.js'
import { DEFAULTS, type Config } from '../src/config/schema.js'
import { createLogger } from '../src/observability/logger.js'
import { ReplyError } from 'ioredis'
import { RedisConnection, failsNode } from '../src/redis/connection.js'
import { withoutArguments } from '../src/redis/reply-errors.js'
import { startCounter, type Counter } from './fixtures/counter-upstream.js'
import { LogCapture } from './fixtures/log-capture.js'
import { redisCli, startRedis, waitFor, type RedisServer } from './fixtures/redis-server.js'
import { testConfig, type DeepPartial } from './fixtures/upstream.js'
import { CookieJar, get } from './fixtures/users.js'

const DEFAULT_PASSWORD = 'default-s3cret'
const USER = 'tether-rt'
const USER_PASSWORD = 'rt-s3cret'
/** docs/redis.md's grant without its key pattern (each test adds its own). */
const GRANT = ['on', `>${USER_PASSWORD}`, '&*', '+@all', '-@dangerous', '+info', '+client']

interface Setup { redis: RedisServer; tt: Tether; apps: Counter[]; logs: LogCapture; agent: http.Agent; node: string }

async function setup(t: Test, redisCfg: DeepPartial<Config['state']['redis']>, redis: RedisServer): Promise<Setup> {
  const apps = [await startCounter('app-0'), await startCounter('app-1')]
  t.teardown(() => Promise.all(apps.map((a) => a.kill())))
  const logs = new LogCapture()
  const cfg = testConfig(apps, {
    affinity: { cookie: { ...DEFAULTS.affinity.cookie, secret: ['redis-reply-errors-0123456789abcdef'] } },
    state: { store: 'redis', timeout: 1_000, redis: { ...redisCfg, key_prefix: 'rt:' } },
  })
  const tt = await startTether(cfg, { logger: createLogger('info', logs) })
  t.teardown(() => tt.close(0))
  const agent = new http.Agent({ keepAlive: true })
  t.teardown(() => agent.destroy())
  const node = `127.0.0.1:${redis.port}`
  await waitFor('the store to be ready', async () => (await readyz(tt, agent)).degraded.length === 0, 5_000)
  return { redis, tt, apps, logs, agent, node }
}

async function readyz(tt: Tether, agent: http.Agent): Promise<{ ready: boolean; degraded: string[] }> {
  return JSON.parse((await get(`${tt.adminUrl}/readyz`, agent)).body) as { ready: boolean; degraded: string[] }
}

async function ask(s: Setup, jar: CookieJar): Promise<{ id: string; n: number; rehydrated: boolean }> {
  const r = await get(s.tt.url, s.agent, {}, jar)
  if (r.status !== 200) throw new Error(`status ${r.status}: ${r.body}`)
  return JSON.parse(r.body) as { id: string; n: number; rehydrated: boolean }
}

function jarOf(user: string): CookieJar {
  const jar = new CookieJar()
  jar.cookies.set('user', user)
  return jar
}

/** The node is up in /metrics (its gauge and tether_redis_up) and /readyz names no node failing or unreachable. */
async function nodeUp(t: Test, s: Setup): Promise<string[]> {
  const metrics = (await get(`${s.tt.adminUrl}/metrics`, s.agent)).body
  t.match(metrics, new RegExp(`^tether_redis_node_up\\{node="${s.node}"\\} 1$`, 'm'), 'tether_redis_node_up stays 1')
  t.match(metrics, /^tether_redis_up 1$/m, 'tether_redis_up stays 1')
  const r = await readyz(s.tt, s.agent)
  t.equal(r.ready, true, '/readyz ready')
  t.same(r.degraded.filter((l) => /failing|unreachable|paused/.test(l)), [], '/readyz names no node down')
  t.same(s.logs.records.filter((l) => /^redis node (down|still down)/.test(String(l['msg']))), [], 'no "redis node down" line')
  return r.degraded
}

/** `jar`'s requests, at least `n` of them and over at least 400 ms (a streak of failures counts once it spans 250 ms). */
async function spell(s: Setup, jars: CookieJar[], n = 30): Promise<void> {
  const t0 = performance.now()
  for (let i = 0; i < n || performance.now() - t0 < 400; i++) await ask(s, jars[i % jars.length]!)
}

const keys = async (port: number, pattern: string, ...auth: string[]): Promise<string[]> =>
  (await redisCli(port, ...auth, '--scan', '--pattern', pattern)).split('\n').filter((l) => l !== '')

t.test('one bad key (WRONGTYPE on one user\'s checkpoint): that user\'s writes fail, the node stays up, one warn; other users are stored and rehydrated', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const s = await setup(t, { url: `redis://127.0.0.1:${redis.port}` }, redis)
  const bad = jarOf('bad')
  await ask(s, bad)
  await waitFor('the bad user\'s checkpoint stored', async () => (await keys(redis.port, 'rt:cp:*')).length === 1)
  const [badKey] = await keys(redis.port, 'rt:cp:*')
  // the user's checkpoint key made a string: every write of it (a script's HMGET) is WRONGTYPE
  await redisCli(redis.port, 'DEL', badKey!)
  await redisCli(redis.port, 'SET', badKey!, 'not a hash')
  const good = jarOf('good')
  const before = await ask(s, good)
  await waitFor('the good user\'s checkpoint stored', async () => (await keys(redis.port, 'rt:cp:*')).length === 2)
  await spell(s, [bad])
  await waitFor('the failed writes told', () => s.logs.records.some((l) => l['msg'] === 'redis answered a call with an error: that call fails, the node is up'))
  await nodeUp(t, s)
  const told = s.logs.records.filter((l) => l['msg'] === 'redis answered a call with an error: that call fails, the node is up')
  t.equal(told.length, 1, 'one warn line for the refused writes, not one per request')
  t.match(told[0], { level: 40, node: s.node, err: /^WRONGTYPE/ }, 'naming the node and the error')
  t.notMatch(JSON.stringify(told), /\{bad|good\}/, 'no session key in the line')
  // another user moved off their upstream is still rehydrated from Redis
  await s.apps.find((a) => a.id === before.id)!.kill()
  const moved = await ask(s, good)
  t.not(moved.id, before.id, 'moved')
  t.equal(moved.rehydrated, true, 'rehydrated from Redis')
  t.equal(moved.n, before.n + 1, 'with the state it held')
})

t.test('an ACL whose key patterns leave the checkpoints out: their calls fail, the node stays up; /readyz tells the refusal until the ACL is fixed', async (t) => {
  const redis = await startRedis({ args: ['--requirepass', DEFAULT_PASSWORD] })
  t.teardown(() => redis.stop())
  const auth = ['--no-auth-warning', '-a', DEFAULT_PASSWORD]
  // every key of Tether's but rt:cp:* (Redis 7 key patterns have no negation: two globs)
  await redisCli(redis.port, ...auth, 'ACL', 'SETUSER', USER, ...GRANT, '~rt:[^c]*', '~rt:c[^p]*')
  const s = await setup(t, { url: `redis://127.0.0.1:${redis.port}`, username: USER, password: USER_PASSWORD }, redis)
  const jars = Array.from({ length: 10 }, (_, i) => jarOf(`u${i}`))
  await spell(s, jars)
  await waitFor('the refusal told', () => s.logs.records.some((l) => /^redis refused a key/.test(String(l['msg']))))
  const degraded = await nodeUp(t, s)
  t.match(degraded, [/^redis refuses .*NOPERM.*ACL SETUSER <user> ~rt:\*\).*state\.redis\.username/], '/readyz tells the refusal, naming the grant and the setting')
  t.same(await keys(redis.port, 'rt:cp:*', ...auth), [], 'no checkpoint stored')
  await redisCli(redis.port, ...auth, 'ACL', 'SETUSER', USER, '~rt:*')
  await waitFor('the refusal ended in /readyz', async () => {
    await spell(s, jars, 2)
    return (await readyz(s.tt, s.agent)).degraded.length === 0
  }, 10_000)
  t.not((await keys(redis.port, 'rt:cp:*', ...auth)).length, 0, 'checkpoints stored once granted')
})

t.test('an ACL that refuses every data command: the node answers, /readyz tells each refusal', async (t) => {
  const redis = await startRedis({ args: ['--requirepass', DEFAULT_PASSWORD] })
  t.teardown(() => redis.stop())
  const auth = ['--no-auth-warning', '-a', DEFAULT_PASSWORD]
  await redisCli(redis.port, ...auth, 'ACL', 'SETUSER', USER, 'on', `>${USER_PASSWORD}`, '~rt:*', '&*', '+@connection', '+info', '+client')
  const apps = [await startCounter('app-0')]
  t.teardown(() => apps[0]!.kill())
  const logs = new LogCapture()
  const cfg = testConfig(apps, {
    affinity: { cookie: { ...DEFAULTS.affinity.cookie, secret: ['redis-reply-errors-0123456789abcdef'] } },
    state: { store: 'redis', timeout: 1_000, redis: { url: `redis://127.0.0.1:${redis.port}`, username: USER, password: USER_PASSWORD, key_prefix: 'rt:' } },
  })
  const tt = await startTether(cfg, { logger: createLogger('info', logs) })
  t.teardown(() => tt.close(0))
  const agent = new http.Agent({ keepAlive: true })
  t.teardown(() => agent.destroy())
  const s: Setup = { redis, tt, apps, logs, agent, node: `127.0.0.1:${redis.port}` }
  await spell(s, [jarOf('u0'), jarOf('u1')])
  let degraded: string[] = []
  await waitFor('/readyz to tell the refusals', async () => (degraded = (await readyz(tt, agent)).degraded).some((l) => /^redis refuses .*NOPERM.*EVALSHA|EVAL\b/.test(l)), 5_000)
  t.comment(degraded.join('\n'))
  await nodeUp(t, s)
})

t.test('what fails a node: no reply, a closed connection, LOADING, READONLY, MASTERDOWN, BUSY, CLUSTERDOWN; not NOPERM, WRONGTYPE, ERR, NOSCRIPT, BUSYKEY', async (t) => {
  const reply = (message: string): Error => new ReplyError(message)
  for (const m of ['LOADING Redis is loading the dataset in memory', 'READONLY You can\'t write against a read only replica.', 'MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to \'no\'.',
    'BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSCRIPT.', 'CLUSTERDOWN The cluster is down', 'TRYAGAIN Multiple keys request during rehashing of slot',
    'NOAUTH Authentication required.',
    'ERR max number of clients reached', 'MOVED 3999 127.0.0.1:6381', 'ERR unknown command \'EVALSHA\', with args beginning with: \'ab\' ',
    // Redis < 7 wraps what a script's call got (the review's note; the text as Redis 6.2 sends it)
    'ERR Error running script (call to f_45e87c07f6aff394093b73766a458691d0460655): @user_script:1: @user_script: 1: -READONLY You can\'t write against a read only replica.']) t.equal(failsNode(reply(m)), true, m)
  for (const m of ['NOPERM No permissions to access a key', 'WRONGTYPE Operation against a key holding the wrong kind of value', 'ERR unknown subcommand \'foo\'.',
    'NOSCRIPT No matching script. Please use EVAL.', 'BUSYKEY Target key name already exists.', 'EXECABORT Transaction discarded because of previous errors.',
    'CROSSSLOT Keys in request don\'t hash to the same slot', 'ERR Error running script (call to f_0): @user_script:1: user_script:1: attempt to call a nil value',
    // writes refused as a whole by a live node that serves reads: answers (see writesRefusedBy)
    'MISCONF Redis is configured to save RDB snapshots, but it\'s currently unable to persist to disk.', 'NOREPLICAS Not enough good replicas to write.']) t.equal(failsNode(reply(m)), false, m)
  t.equal(failsNode(new Error('Connection is closed.')), true, 'a closed connection')
  t.equal(failsNode(new AggregateError([reply('NOPERM x'), new Error('Connection is closed.')])), true, 'several: any that fails the node')
  t.equal(failsNode(new AggregateError([reply('NOPERM x'), reply('WRONGTYPE y')])), false, 'several replies')
  // a script that keeps a real Redis busy: its other calls are BUSY, and the node goes down
  const redis = await startRedis({ args: ['--busy-reply-threshold', '100'] })
  t.teardown(() => redis.stop())
  const conn = new RedisConnection({ url: redis.url, keyPrefix: 'rt:', timeout: 1_000 })
  t.teardown(() => conn.stop())
  await conn.start()
  const blocker = new RedisConnection({ url: redis.url, keyPrefix: 'rt:', timeout: 60_000 })
  t.teardown(() => blocker.stop())
  await blocker.start()
  const busy = blocker.run(null, (c) => c.eval('while true do end', 0))
  await waitFor('a BUSY reply', async () => /BUSY/.test(await redisCli(redis.port, 'PING')))
  await waitFor('the node down for BUSY', async () => {
    await conn.run('rt:x', (c) => c.get('rt:x'))
    return conn.nodes()[0]?.status === 'down'
  }, 5_000)
  t.match(conn.nodes()[0]?.lastError, /^BUSY/, 'naming BUSY')
  await redisCli(redis.port, 'SCRIPT', 'KILL')
  await busy
  await waitFor('the node up again once the script is killed', async () => {
    await conn.run('rt:x', (c) => c.get('rt:x'))
    return conn.nodes()[0]?.status === 'up'
  }, 10_000)
})

t.test('an unknown command (EVALSHA renamed away) takes the node down, as every call of it fails; the arguments Redis quotes (keys) are logged nowhere', async (t) => {
  // Redis >= 6.2 quotes the first arguments of an unknown command, a session's key among them
  // (found by the review of this change: a warn per user, each with the user's key, while the
  // node was shown up and no checkpoint could be stored)
  const redis = await startRedis({ args: ['--rename-command', 'EVALSHA', 'EVALSHA_OFF', '--rename-command', 'EVAL', 'EVAL_OFF'] })
  t.teardown(() => redis.stop())
  const real = await redisCli(redis.port, 'EVALSHA', 'ab12', '1', 'rt:cp:{secret-user}')
  t.match(real, /with args beginning with: .*secret-user/, 'the real reply quotes the key')
  t.notMatch(withoutArguments(real), /secret-user/, 'left out of what Tether tells')
  const s = await setup(t, { url: redis.url }, redis)
  const users = ['u-1', 'u-2', 'u-3', 'u-4'].map(jarOf)
  // best_effort: each answer waits for its checkpoint write (failed here) before it goes out
  for (let i = 0; i < 12; i++) await ask(s, users[i % users.length]!)
  await waitFor('the node down for the unknown command', async () => {
    if (s.logs.records.some((l) => /^redis node down/.test(String(l['msg'])))) return true
    await ask(s, users[0]!)
    return false
  }, 10_000)
  t.match(JSON.stringify(s.logs.records.find((l) => /^redis node down/.test(String(l['msg'])))), /unknown command 'evalsha', with args beginning with: \(not shown\)/i, 'the down line names the unknown command')
  t.notMatch(JSON.stringify(s.logs.records), /rt:[a-z]+:\{/, 'no key (a session\'s) in any log line')
  t.notMatch(JSON.stringify(await readyz(s.tt, s.agent)), /rt:[a-z]+:\{/, 'nor on /readyz')
})
