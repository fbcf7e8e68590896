// Redis 6+ ACL users: `state.redis.username` for the standalone server, the Sentinel master and
// every Cluster node, `state.redis.sentinel_username` for the Sentinels (ioredis's questions and
// Tether's +switch-master watches). Each test gives the ACL user a password other than the
// `default` user's, so only the user gets in. A wrong user is named (the key, never its value)
// in /readyz and the warn line, without a hang; a user without a permission it needs (NOPERM)
// is named with what it may not do. Real redis-server and Sentinel processes; no fixed sleeps.
import t, { type Test } from 'tap'
import http from 'node:http'
import { startTether, type Tether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { DEFAULTS, type Config } from '../src/config/schema.js'
import { redisCli, startRedis, startRedisCluster, startSentinelSet, waitFor, type RedisServer } from './fixtures/redis-server.js'
import { testConfig, type DeepPartial } from './fixtures/upstream.js'
import { CookieJar, get } from './fixtures/users.js'
import { startCounter, type CounterAnswer } from './fixtures/counter-upstream.js'
import { LogCapture } from './fixtures/log-capture.js'
import { authHint } from '../src/redis/auth-hint.js'
import { refusesKey } from '../src/redis/reply-errors.js'

const SECRET = 'redis-acl-secret-0123456789abcdef'
const DEFAULT_PASSWORD = 'default-s3cret'
const USER = 'tether-app'
const USER_PASSWORD = 'app-s3cret'
const SENTINEL_PASSWORD = 'sentinel-s3cret'
const SENTINEL_USER = 'tether-watch'
const SENTINEL_USER_PASSWORD = 'watch-s3cret'
/** The data user's grant, as docs/redis.md gives it (with this test's key prefix). */
const USER_GRANT = ['on', `>${USER_PASSWORD}`, '~acl:*', '&*', '+@all', '-@dangerous', '+info', '+client']
/** The Sentinel user's grant, as docs/redis.md gives it. */
const SENTINEL_GRANT = ['on', `>${SENTINEL_USER_PASSWORD}`, '+@connection', '+sentinel', '+subscribe', '+ping', '&*']
const START_DEADLINE_MS = 5_000

/** Tether in-process with `redis` as state.redis (key prefix `acl:`); logs at info into `logs`. */
async function tether(t: Test, redis: DeepPartial<Config['state']['redis']>, logs: LogCapture): Promise<Tether> {
  const app = await startCounter('app-0')
  t.teardown(() => app.kill())
  const cfg = testConfig([app], {
    affinity: { cookie: { ...DEFAULTS.affinity.cookie, secret: [SECRET] } },
    state: { store: 'redis', timeout: 1_000, redis: { ...redis, key_prefix: 'acl:' } },
  })
  let timer: NodeJS.Timeout | undefined
  const hung = new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`start-up still waiting after ${START_DEADLINE_MS} ms`)), START_DEADLINE_MS) })
  const tt = await Promise.race([startTether(cfg, { logger: createLogger('info', logs) }), hung]).finally(() => clearTimeout(timer))
  t.teardown(() => tt.close(0))
  return tt
}

async function readyz(tt: Tether): Promise<{ ready: boolean; degraded: string[] }> {
  const r = await get(`${tt.adminUrl}/readyz`, new http.Agent())
  return JSON.parse(r.body) as { ready: boolean; degraded: string[] }
}

async function ask(tt: Tether, user: string): Promise<CounterAnswer> {
  const jar = new CookieJar()
  jar.cookies.set('user', user)
  const r = await get(tt.url, new http.Agent(), {}, jar)
  if (r.status !== 200) throw new Error(`status ${r.status}: ${r.body}`)
  return JSON.parse(r.body) as CounterAnswer
}

/** `port`'s checkpoint keys, as the `default` user. */
async function checkpoints(port: number): Promise<string[]> {
  return (await redisCli(port, '--no-auth-warning', '-a', DEFAULT_PASSWORD, '--scan', '--pattern', 'acl:cp:*')).split('\n').filter((l) => l !== '')
}

const asDefault = (port: number, ...args: string[]): Promise<string> => redisCli(port, '--no-auth-warning', '-a', DEFAULT_PASSWORD, ...args)
const asSentinel = (port: number, ...args: string[]): Promise<string> => redisCli(port, '--no-auth-warning', '-a', SENTINEL_PASSWORD, ...args)

/** No secret (password or user name) in the log records or `degraded`. */
function noSecrets(t: Test, logs: LogCapture, degraded: string[], secrets: string[]): void {
  const text = JSON.stringify(logs.records) + degraded.join('\n')
  t.same(secrets.filter((s) => text.includes(s)), [], 'no user name or password in the logs or /readyz')
}

t.test('standalone: state.redis.username overrides the URL user and stores checkpoints as the ACL user', async (t) => {
  const redis = await startRedis({ args: ['--requirepass', DEFAULT_PASSWORD] })
  t.teardown(() => redis.stop())
  await asDefault(redis.port, 'ACL', 'SETUSER', USER, ...USER_GRANT)
  const logs = new LogCapture()
  // the URL's user and password are both overridden
  const tt = await tether(t, { url: `redis://nobody:wrong@127.0.0.1:${redis.port}`, username: USER, password: USER_PASSWORD }, logs)
  await waitFor('the store to be ready', async () => (await readyz(tt)).degraded.length === 0, 5_000)
  t.equal((await ask(tt, 'u1')).n, 1, 'routed')
  await waitFor('a checkpoint stored', async () => (await checkpoints(redis.port)).length > 0)
  t.match(await asDefault(redis.port, 'CLIENT', 'LIST'), new RegExp(` name=tether .*user=${USER} `), "Tether's connection is the ACL user's")
  noSecrets(t, logs, [], [USER, USER_PASSWORD])
})

t.test('standalone: a wrong username is named in /readyz and the warn line, without a hang', async (t) => {
  const redis = await startRedis({ args: ['--requirepass', DEFAULT_PASSWORD] })
  t.teardown(() => redis.stop())
  await asDefault(redis.port, 'ACL', 'SETUSER', USER, ...USER_GRANT)
  const logs = new LogCapture()
  const tt = await tether(t, { url: `redis://127.0.0.1:${redis.port}`, username: 'not-the-user', password: USER_PASSWORD }, logs)
  let degraded: string[] = []
  await waitFor('/readyz to name the keys', async () => /check state\.redis\.username and state\.redis\.password/.test((degraded = (await readyz(tt)).degraded).join('\n')), 5_000)
  t.comment(degraded.join('\n'))
  await waitFor('a warn line naming the key', () => logs.records.some((l) => l['level'] === 40 && /state\.redis\.username/.test(JSON.stringify(l))))
  t.pass('a warn line names state.redis.username')
  noSecrets(t, logs, degraded, ['not-the-user', USER_PASSWORD])
})

t.test('standalone: a password refused from state.redis.url names state.redis.url, never the URL\'s credentials', async (t) => {
  const redis = await startRedis({ args: ['--requirepass', DEFAULT_PASSWORD] })
  t.teardown(() => redis.stop())
  const logs = new LogCapture()
  const tt = await tether(t, { url: `redis://:url-wrong-s3cret@127.0.0.1:${redis.port}` }, logs)
  let degraded: string[] = []
  await waitFor('/readyz to name the key', async () => /WRONGPASS.*refused Tether's password for the default user: check state\.redis\.url, or set state\.redis\.username for an ACL user\)/.test((degraded = (await readyz(tt)).degraded).join('\n')), 5_000)
  t.comment(degraded.join('\n'))
  t.notMatch(degraded.join('\n'), /state\.redis\.password/, 'not the key that is not set')
  await waitFor('a warn line naming the key', () => logs.records.some((l) => l['level'] === 40 && /check state\.redis\.url/.test(JSON.stringify(l))))
  t.pass('a warn line names state.redis.url')
  noSecrets(t, logs, degraded, ['url-wrong-s3cret'])
})

t.test('standalone: a user and password refused from state.redis.url name state.redis.url once; a URL user with state.redis.password names both', async (t) => {
  const redis = await startRedis({ args: ['--requirepass', DEFAULT_PASSWORD] })
  t.teardown(() => redis.stop())
  await asDefault(redis.port, 'ACL', 'SETUSER', USER, ...USER_GRANT)
  const fromUrl = new LogCapture()
  const both = await tether(t, { url: `redis://url-not-the-user:${USER_PASSWORD}@127.0.0.1:${redis.port}` }, fromUrl)
  let degraded: string[] = []
  await waitFor('/readyz to name the URL', async () => /WRONGPASS.*refused Tether's username or password: check state\.redis\.url\)/.test((degraded = (await readyz(both)).degraded).join('\n')), 5_000)
  t.comment(degraded.join('\n'))
  noSecrets(t, fromUrl, degraded, ['url-not-the-user', USER_PASSWORD])

  const mixed = new LogCapture()
  const tt = await tether(t, { url: `redis://url-not-the-user@127.0.0.1:${redis.port}`, password: USER_PASSWORD }, mixed)
  await waitFor('/readyz to name both', async () => /check state\.redis\.url and state\.redis\.password\)/.test((degraded = (await readyz(tt)).degraded).join('\n')), 5_000)
  t.comment(degraded.join('\n'))
  noSecrets(t, mixed, degraded, ['url-not-the-user', USER_PASSWORD])
})

/** A standalone Redis whose ACL user may not run EVALSHA, and Tether on it as that user, its store ready. */
async function withoutEvalsha(t: Test): Promise<{ redis: RedisServer; logs: LogCapture; tt: Tether }> {
  const redis = await startRedis({ args: ['--requirepass', DEFAULT_PASSWORD] })
  t.teardown(() => redis.stop())
  await asDefault(redis.port, 'ACL', 'SETUSER', USER, ...USER_GRANT, '-evalsha')
  const logs = new LogCapture()
  const tt = await tether(t, { url: `redis://127.0.0.1:${redis.port}`, username: USER, password: USER_PASSWORD }, logs)
  await waitFor('the store to be ready', async () => (await readyz(tt)).degraded.length === 0, 5_000)
  return { redis, logs, tt }
}

t.test('standalone: a user that may not run EVALSHA: requests still answered, one warn naming the command and the key, /readyz tells it', async (t) => {
  const { logs, tt } = await withoutEvalsha(t)
  for (let i = 0; i < 20; i++) t.equal((await ask(tt, `u${i}`)).n, 1, `user ${i} answered`)
  const refused = (): Record<string, unknown>[] => logs.records.filter((l) => l['msg'] === 'redis refused a command: the ACL user may not run it, its calls fail')
  await waitFor('the refusal told', () => refused().length > 0)
  t.equal(refused().length, 1, 'one warn line for the 20 refused checkpoints')
  t.match(refused()[0], { level: 40, command: 'EVALSHA', err: /NOPERM.*may not run EVALSHA: grant it \(ACL SETUSER <user> \+evalsha\), or check state\.redis\.username/ }, 'naming the command and the key')
  let degraded: string[] = []
  await waitFor('/readyz to tell the refusal', async () => /NOPERM.*state\.redis\.username/.test((degraded = (await readyz(tt)).degraded).join('\n')), 5_000)
  t.comment(degraded.join('\n'))
  noSecrets(t, logs, degraded, [USER, USER_PASSWORD])
})

t.test('standalone: a refused EVALSHA granted again is told once a checkpoint write succeeds; refused again, it is warned again', async (t) => {
  const { redis, logs, tt } = await withoutEvalsha(t)
  const told = (): unknown[][] => logs.records.filter((l) => l['command'] === 'EVALSHA').map((l) => [l['level'], l['msg']])
  const REFUSED = [40, 'redis refused a command: the ACL user may not run it, its calls fail']
  const ACCEPTED = [30, 'redis accepts the command again: its calls succeed']
  let n = 0
  // (a connection's first script call is an EVAL: the checkpoint writes after it are refused)
  await waitFor('the refusal told', async () => { await ask(tt, `u${n++}`); return told().length === 1 })
  await asDefault(redis.port, 'ACL', 'SETUSER', USER, '+evalsha')
  await waitFor('the acceptance told', async () => { await ask(tt, `u${n++}`); return told().length === 2 })
  t.same(told(), [REFUSED, ACCEPTED], 'the refusal, then the info line once a write succeeded')
  t.match(logs.records.find((l) => l['msg'] === ACCEPTED[1]), { command: 'EVALSHA', for_ms: Number }, 'with the command and how long it was refused')
  for (let i = 0; i < 5; i++) await ask(tt, `u${n++}`)
  t.equal(told().length, 2, 'told once: later writes add nothing')
  await asDefault(redis.port, 'ACL', 'SETUSER', USER, '-evalsha')
  await waitFor('the new refusal told', async () => { await ask(tt, `u${n++}`); return told().length === 3 })
  t.same(told()[2], REFUSED, 'a refusal after the fix is warned again, at once')
})

t.test('Sentinel: username and sentinel_username, a real failover followed by the watches', async (t) => {
  const set = await startSentinelSet({ password: DEFAULT_PASSWORD }, { password: SENTINEL_PASSWORD, masterPassword: DEFAULT_PASSWORD })
  t.teardown(() => set.stop())
  for (const r of [set.master, set.replica]) await asDefault(r.port, 'ACL', 'SETUSER', USER, ...USER_GRANT)
  for (const s of set.sentinels) await asSentinel(s.port, 'ACL', 'SETUSER', SENTINEL_USER, ...SENTINEL_GRANT)
  const logs = new LogCapture()
  const tt = await tether(t, {
    sentinels: set.sentinels.map((s) => `127.0.0.1:${s.port}`), name: set.name,
    username: USER, password: USER_PASSWORD, sentinel_username: SENTINEL_USER, sentinel_password: SENTINEL_USER_PASSWORD,
  }, logs)
  await waitFor('the store to be ready', async () => (await readyz(tt)).degraded.length === 0, 5_000)
  t.equal((await ask(tt, 'u1')).n, 1, 'routed')
  await waitFor('a checkpoint on the master', async () => (await checkpoints(set.master.port)).length > 0)
  t.pass('the checkpoint is stored on the master')
  // the watches authenticated as the Sentinel user and subscribed
  await waitFor('the switch watches to subscribe as the Sentinel user', async () =>
    new RegExp(` name=tether-switch-watch .*sub=1 .*user=${SENTINEL_USER} `).test(await asSentinel(set.sentinels[0]!.port, 'CLIENT', 'LIST')), 5_000)
  t.pass('the watches are the Sentinel user\'s')

  await set.failover()
  await waitFor("a new user's checkpoint on the new master", async () => {
    await ask(tt, 'u2')
    return (await asDefault(set.replica.port, 'ROLE')).startsWith('master') && (await checkpoints(set.replica.port)).length >= 2
  }, 5_000)
  t.pass('the failover was followed: state is stored on the new master')
  t.match(await asDefault(set.replica.port, 'CLIENT', 'LIST'), new RegExp(` name=tether .*user=${USER} `), 'as the ACL user')
  t.same(logs.records.filter((r) => /sentinel/i.test(String(r['msg']))), [], 'no Sentinel complaint in the logs')
  noSecrets(t, logs, [], [USER_PASSWORD, SENTINEL_USER, SENTINEL_USER_PASSWORD])
})

t.test('Sentinel: a wrong sentinel_username names both keys, a user without SUBSCRIBE is told as NOPERM, no hang', async (t) => {
  const set = await startSentinelSet({ password: DEFAULT_PASSWORD }, { password: SENTINEL_PASSWORD, masterPassword: DEFAULT_PASSWORD })
  t.teardown(() => set.stop())
  for (const s of set.sentinels) await asSentinel(s.port, 'ACL', 'SETUSER', SENTINEL_USER, ...SENTINEL_GRANT, '-subscribe')
  const logs = new LogCapture()
  const tt = await tether(t, {
    sentinels: set.sentinels.map((s) => `127.0.0.1:${s.port}`), name: set.name,
    password: DEFAULT_PASSWORD, sentinel_username: 'not-the-user', sentinel_password: SENTINEL_USER_PASSWORD,
  }, logs)
  const r = await readyz(tt)
  t.comment(r.degraded.join('\n'))
  t.match(r.degraded.join('\n'), /WRONGPASS.*check state\.redis\.sentinel_username and state\.redis\.sentinel_password/, '/readyz names both keys')
  noSecrets(t, logs, r.degraded, ['not-the-user', SENTINEL_USER_PASSWORD])

  // the Sentinels now know the user, which may not SUBSCRIBE: the master is found, the watches are told NOPERM
  for (const s of set.sentinels) await asSentinel(s.port, 'ACL', 'SETUSER', 'not-the-user', ...SENTINEL_GRANT, '-subscribe')
  await waitFor('the store to be ready', async () => (await readyz(tt)).degraded.length === 0, 10_000)
  await waitFor('a warn line telling the watches NOPERM', () => logs.records.some((l) => l['level'] === 40 && /NOPERM.*may not run SUBSCRIBE.*state\.redis\.sentinel_username/.test(JSON.stringify(l))), 15_000)
  t.pass('the watches\' NOPERM names SUBSCRIBE and state.redis.sentinel_username')
  noSecrets(t, logs, [], ['not-the-user', SENTINEL_USER_PASSWORD])
})

t.test('Cluster: state.redis.username on every node', async (t) => {
  const cluster = await startRedisCluster(3)
  t.teardown(() => cluster.stop())
  for (const n of cluster.nodes) {
    await redisCli(n.port, 'ACL', 'SETUSER', USER, ...USER_GRANT, '+cluster', '+readonly')
    await redisCli(n.port, 'ACL', 'SETUSER', 'default', 'resetpass', `>${DEFAULT_PASSWORD}`)
  }
  const logs = new LogCapture()
  const tt = await tether(t, { nodes: cluster.nodes.map((n) => `127.0.0.1:${n.port}`), username: USER, password: USER_PASSWORD }, logs)
  await waitFor('the store to be ready', async () => (await readyz(tt)).degraded.length === 0, 5_000)
  for (let i = 0; i < 6; i++) t.equal((await ask(tt, `u${i}`)).n, 1, `user ${i} routed`)
  await waitFor('the checkpoints stored across the nodes', async () => (await Promise.all(cluster.nodes.map((n) => checkpoints(n.port)))).flat().length === 6)
  t.pass('six checkpoints stored')
  noSecrets(t, logs, [], [USER, USER_PASSWORD])
})

t.test('authHint: a Redis 7.2+ NOPERM reply that names the user is told with the key instead; without a user a refused password is told as the default user\'s, naming the user key', (t) => {
  const told = authHint("NOPERM User tether-watch has no permissions to run the 'subscribe' command", 'the Sentinel', 'tether-watch', 'state.redis.sentinel_username', 'state.redis.sentinel_password')
  t.equal(told, "NOPERM User <state.redis.sentinel_username> has no permissions to run the 'subscribe' command (the Sentinel's ACL user may not run SUBSCRIBE: grant it (ACL SETUSER <user> +subscribe), or check state.redis.sentinel_username)")
  t.equal(authHint('NOPERM No permissions to access a key', 'Redis', 'u', 'state.redis.username', 'state.redis.password'), 'NOPERM No permissions to access a key (Redis\'s ACL user may not access the keys: grant it, or check state.redis.username)', 'no key pattern given: no grant told')
  t.equal(authHint('WRONGPASS invalid username-password pair or user is disabled.', 'the Sentinel', null, 'state.redis.sentinel_username', 'state.redis.sentinel_password'), "WRONGPASS invalid username-password pair or user is disabled. (the Sentinel refused Tether's password for the default user: check state.redis.sentinel_password, or set state.redis.sentinel_username for an ACL user)", 'the Sentinels: no sentinel_username may be the cause, named too')
  t.equal(authHint('connect ECONNREFUSED 127.0.0.1:1', 'Redis', 'u', 'state.redis.username', 'state.redis.password'), 'connect ECONNREFUSED 127.0.0.1:1', 'other errors as told')
  t.end()
})

t.test('authHint: each NOPERM reply shape names the grant to add (command, subcommand, Tether\'s key and channel patterns); <user>, or default when no user is set', (t) => {
  const grants = { keys: 'tether:*', channels: 'tether:*' }
  const hint = (error: string, user: string | null = 'u'): string => authHint(error, 'Redis', user, 'state.redis.username', 'state.redis.password', grants).slice(error.length)
  // (the texts of Redis 6.0-6.2, 7.0 (checked against redis-server 7.0.15 here) and 7.2+)
  const cases: [string, string][] = [
    ["NOPERM this user has no permissions to run the 'evalsha' command or its subcommand", " (Redis's ACL user may not run EVALSHA: grant it (ACL SETUSER <user> +evalsha), or check state.redis.username)"],
    ["NOPERM this user has no permissions to run the 'evalsha' command", " (Redis's ACL user may not run EVALSHA: grant it (ACL SETUSER <user> +evalsha), or check state.redis.username)"],
    ["NOPERM this user has no permissions to run the 'client|setname' command", " (Redis's ACL user may not run CLIENT|SETNAME: grant it (ACL SETUSER <user> +client|setname), or check state.redis.username)"],
    ['NOPERM this user has no permissions to access one of the keys used as arguments', " (Redis's ACL user may not access the keys: grant them (ACL SETUSER <user> ~tether:*), or check state.redis.username)"],
    ['NOPERM No permissions to access a key', " (Redis's ACL user may not access the keys: grant them (ACL SETUSER <user> ~tether:*), or check state.redis.username)"],
    ['NOPERM this user has no permissions to access one of the channels used as arguments', " (Redis's ACL user may not use the channel: grant them (ACL SETUSER <user> &tether:*), or check state.redis.username)"],
    ['NOPERM No permissions to access a channel', " (Redis's ACL user may not use the channel: grant them (ACL SETUSER <user> &tether:*), or check state.redis.username)"],
  ]
  for (const [error, told] of cases) t.equal(hint(error), told, error)
  t.equal(hint("NOPERM this user has no permissions to run the 'hset' command", null), " (Redis's ACL user may not run HSET: grant it (ACL SETUSER default +hset), or check state.redis.username)", 'no user set: the default user is the one to grant')
  t.end()
})

t.test('authHint: NOAUTH (no password sent) is told as a password required, naming the keys to set, not as a refused password', (t) => {
  t.equal(authHint('NOAUTH Authentication required.', 'Redis', null, 'state.redis.username', 'state.redis.password'), 'NOAUTH Authentication required. (Redis requires a password: set state.redis.password, and state.redis.username for an ACL user)')
  t.equal(authHint('NOAUTH Authentication required.', 'Redis', 'u', 'state.redis.username', 'state.redis.password'), 'NOAUTH Authentication required. (Redis requires a password: set state.redis.password)', 'a user set: only the password is missing')
  t.end()
})

t.test('authHint: Redis < 6 (no ACL users) answers "ERR invalid password": told as the password refused, without the ACL user advice', (t) => {
  t.equal(authHint('ERR invalid password', 'Redis', null, 'state.redis.username', 'state.redis.password'), "ERR invalid password (Redis refused Tether's password: check state.redis.password)")
  t.equal(authHint('ERR invalid password', 'the Sentinel', null, 'state.redis.sentinel_username', 'state.redis.sentinel_password'), "ERR invalid password (the Sentinel refused Tether's password: check state.redis.sentinel_password)", 'a Sentinel < 6 the same')
  t.end()
})

t.test('authHint: Redis < 6 refusing AUTH with a username (its exact arity error, from Redis 5.0.14\'s source), or a NOAUTH while a username and a password are sent, is told as a server without ACL users: remove the username', (t) => {
  // (the text of Redis 5.0.14's processCommand, checked against its source: no Redis 5 runs here)
  const arity = "ERR wrong number of arguments for 'auth' command"
  const noAcl = " (Redis has no ACL users (Redis < 6) and refused AUTH with a username: remove state.redis.username, or upgrade)"
  t.equal(authHint(arity, 'Redis', 'u', 'state.redis.username', 'state.redis.password'), arity + noAcl)
  t.equal(authHint('NOAUTH Authentication required.', 'Redis', 'u', 'state.redis.username', 'state.redis.password', {}, { passwordSent: true }), 'NOAUTH Authentication required.' + noAcl, 'the client went on after the refused AUTH: the NOAUTH that follows is told the same')
  t.equal(authHint('NOAUTH Authentication required.', 'Redis', 'u', 'state.redis.username', 'state.redis.password', {}, { passwordSent: false }), 'NOAUTH Authentication required. (Redis requires a password: set state.redis.password)', 'no password sent: the password is what is missing')
  t.equal(authHint('NOAUTH Authentication required.', 'Redis', 'u', 'state.redis.username', 'state.redis.password', {}, { passwordSent: true, aclUsers: true }), "NOAUTH Authentication required. (Redis refused Tether's AUTH: check state.redis.username and state.redis.password)", 'a server known to be 6+ (its ready check) is never told as Redis < 6 for a NOAUTH (e.g. a SELECT answered after a refused AUTH)')
  t.equal(authHint(arity, 'Redis', 'u', 'state.redis.username', 'state.redis.password', {}, { passwordSent: true, aclUsers: true }), arity + noAcl, "the arity error itself is Redis < 6's own: told so whatever was known")
  t.equal(authHint(arity, 'the Sentinel', 'w', 'state.redis.sentinel_username', 'state.redis.sentinel_password', {}, { aclSince: '6.2' }), `${arity} (the Sentinel has no ACL users (Redis < 6.2) and refused AUTH with a username: remove state.redis.sentinel_username, or upgrade)`, 'a Sentinel: users since 6.2')
  t.end()
})

t.test('authHint: a server known to be Redis < 6 (its ready check\'s redis_version) is never told to set a username; one known to be 6+ or not known still is', (t) => {
  const noauth = 'NOAUTH Authentication required.'
  t.equal(authHint(noauth, 'Redis', null, 'state.redis.username', 'state.redis.password', {}, { aclUsers: false }), `${noauth} (Redis requires a password: set state.redis.password)`)
  t.equal(authHint(noauth, 'Redis', null, 'state.redis.username', 'state.redis.password', {}, { aclUsers: true }), `${noauth} (Redis requires a password: set state.redis.password, and state.redis.username for an ACL user)`)
  t.equal(authHint(noauth, 'Redis', null, 'state.redis.username', 'state.redis.password'), `${noauth} (Redis requires a password: set state.redis.password, and state.redis.username for an ACL user)`, 'version not known: as before')
  t.equal(authHint('WRONGPASS invalid username-password pair or user is disabled.', 'Redis', null, 'state.redis.username', 'state.redis.password', {}, { aclUsers: false }), "WRONGPASS invalid username-password pair or user is disabled. (Redis refused Tether's password: check state.redis.password)")
  t.end()
})

t.test('standalone: the password of an ACL user without state.redis.username (AUTH as default) names state.redis.username; no password at all is told as required', async (t) => {
  const redis = await startRedis({ args: ['--requirepass', DEFAULT_PASSWORD] })
  t.teardown(() => redis.stop())
  await asDefault(redis.port, 'ACL', 'SETUSER', USER, ...USER_GRANT)
  const asDefaultUser = new LogCapture()
  const tt = await tether(t, { url: `redis://127.0.0.1:${redis.port}`, password: USER_PASSWORD }, asDefaultUser)
  let degraded: string[] = []
  await waitFor('/readyz to name the user key', async () => /WRONGPASS.*\(Redis refused Tether's password for the default user: check state\.redis\.password, or set state\.redis\.username for an ACL user\)/.test((degraded = (await readyz(tt)).degraded).join('\n')), 5_000)
  t.comment(degraded.join('\n'))
  noSecrets(t, asDefaultUser, degraded, [USER_PASSWORD])

  const none = new LogCapture()
  const tn = await tether(t, { url: `redis://127.0.0.1:${redis.port}` }, none)
  await waitFor('/readyz to tell a password is required', async () => /NOAUTH.*\(Redis requires a password: set state\.redis\.password, and state\.redis\.username for an ACL user\)/.test((degraded = (await readyz(tn)).degraded).join('\n')), 5_000)
  t.comment(degraded.join('\n'))
  t.notMatch(degraded.join('\n'), /refused Tether's password/, 'no password was sent: none was refused')
})

t.test('standalone: a user whose key patterns leave out the keyspace marker: the watch\'s refused read is one warn naming the marker key', async (t) => {
  const redis = await startRedis({ args: ['--requirepass', DEFAULT_PASSWORD] })
  t.teardown(() => redis.stop())
  // every key of the prefix but those starting with `k`: the marker `acl:keyspace` among them
  await asDefault(redis.port, 'ACL', 'SETUSER', USER, 'on', `>${USER_PASSWORD}`, '~acl:[^k]*', '&*', '+@all', '-@dangerous', '+info', '+client')
  const logs = new LogCapture()
  const app = await startCounter('app-0')
  t.teardown(() => app.kill())
  const cfg = testConfig([app], {
    affinity: { cookie: { ...DEFAULTS.affinity.cookie, secret: [SECRET] }, shared: 'redis' },
    state: { store: 'redis', timeout: 1_000, redis: { url: `redis://127.0.0.1:${redis.port}`, username: USER, password: USER_PASSWORD, key_prefix: 'acl:' } },
  })
  const tt = await startTether(cfg, { logger: createLogger('info', logs) })
  t.teardown(() => tt.close(0))
  const refused = (): Record<string, unknown>[] => logs.records.filter((l) => String(l['msg']).startsWith('redis refused'))
  await waitFor('the refusal told', () => refused().length > 0)
  t.match(refused(), [{ level: 40, msg: "redis refused a key: the ACL user's key patterns leave it out, its calls fail", command: /^EVAL(SHA)?$/, key: 'acl:keyspace', err: /NOPERM.*keys.*check state\.redis\.username/ }], 'one warn, naming the marker key')
  for (let i = 0; i < 3; i++) t.equal((await ask(tt, `u${i}`)).n, 1, `user ${i} answered (bindings and checkpoints are allowed)`)
  // polled: the ACL log is where Redis tells each refusal. A third refused read means the second
  // one's reply reached Tether (the next check is armed only once a check ended).
  const refusals = async (): Promise<number> => [...(await asDefault(redis.port, 'ACL', 'LOG')).matchAll(/count\n(\d+)/g)].reduce((n, m) => n + Number(m[1]), 0)
  await waitFor('two more checks refused', async () => await refusals() >= 3, 5_000)
  t.equal(refused().length, 1, 'the next check\'s refusal (an EVALSHA, the first was an EVAL) adds no line (rate-limited)')
  noSecrets(t, logs, [], [USER, USER_PASSWORD])
})

/**
 * A Redis whose ACL user has the key patterns `keys` (and `USER_GRANT`'s others), and a Tether
 * sharing `X-Tenant` bindings there as that user, logging at info into `logs`.
 */
async function tenantTether(t: Test, keys: string[]): Promise<{ redis: RedisServer; tt: Tether; logs: LogCapture }> {
  const redis = await startRedis({ args: ['--requirepass', DEFAULT_PASSWORD] })
  t.teardown(() => redis.stop())
  await asDefault(redis.port, 'ACL', 'SETUSER', USER, 'on', `>${USER_PASSWORD}`, ...keys, '&*', '+@all', '-@dangerous', '+info', '+client')
  const logs = new LogCapture()
  const app = await startCounter('app-0')
  t.teardown(() => app.kill())
  const cfg = testConfig([app], {
    affinity: { key: 'header', header: { name: 'X-Tenant' }, shared: 'redis' },
    state: { store: 'redis', timeout: 1_000, redis: { url: `redis://127.0.0.1:${redis.port}`, username: USER, password: USER_PASSWORD, key_prefix: 'acl:' } },
  })
  const tt = await startTether(cfg, { logger: createLogger('info', logs) })
  t.teardown(() => tt.close(0))
  return { redis, tt, logs }
}

t.test('standalone: a refused session key is named without the user\'s part (an application cookie or header value is never logged)', async (t) => {
  // every key of the prefix but the bindings (`acl:af:{<key>}`): the marker and checkpoints allowed
  const { tt, logs } = await tenantTether(t, ['~acl:[^a]*'])
  const value = 'tenant-s3cret-4711'
  const r = await get(tt.url, new http.Agent(), { 'x-tenant': value })
  t.equal(r.status, 200, 'answered (a refused binding write does not fail the request)')
  const refused = (): Record<string, unknown>[] => logs.records.filter((l) => String(l['msg']).startsWith('redis refused a key'))
  await waitFor('the refusal told', () => refused().length > 0)
  t.match(refused(), [{ level: 40, key: 'acl:af:{…}' }], 'the key named by its kind, the user\'s part left out')
  t.notOk(JSON.stringify(logs.records).includes(value), 'the header value is in no log line')
})

t.test('standalone: a grant that allows the bindings but not their placement times: bindings shared without them, one warn naming ~acl:ap:*, no refusal of the bindings\' key', async (t) => {
  // a grant naming each kind of key, from before placement times were stored (no `~acl:ap:*`)
  const { redis, tt, logs } = await tenantTether(t, ['~acl:af:*', '~acl:cp:*', '~acl:keyspace*'])
  for (const tenant of ['t1', 't2']) t.equal((await get(tt.url, new http.Agent(), { 'x-tenant': tenant })).status, 200, `${tenant} answered`)
  await waitFor('both bindings shared', async () => (await asDefault(redis.port, 'EXISTS', 'acl:af:{t1}', 'acl:af:{t2}')).trim() === '2')
  const told = logs.records.filter((l) => String(l['msg']).startsWith('redis refused'))
  t.match(told, [{ level: 40, msg: /^redis refused the placement-time keys .*: bindings are shared without their placement times$/, key: 'acl:ap:{…}', err: /grant them \(ACL SETUSER <user> ~acl:ap:\*\), or check state\.redis\.username\)$/ }], 'one warn, naming the grant to add; no refusal of a key told')
  // (t.match lets an array have more elements than the pattern's)
  t.equal(told.length, 1, 'one line: told once, and no refusal of the bindings\' key')
  t.match(await readyz(tt), { ready: true, degraded: [] }, 'ready, nothing degraded')
  noSecrets(t, logs, [], [USER, USER_PASSWORD])
})

t.test('refusesKey: a key refusal in each Redis version\'s words (6.2/7.0 "one of the keys", 7.2+ and Valkey "a key"); not a channel\'s or a command\'s', (t) => {
  const cases: [string, boolean][] = [
    ['NOPERM this user has no permissions to access one of the keys used as arguments', true],
    ['NOPERM No permissions to access a key', true],
    ['NOPERM this user has no permissions to access one of the channels used as arguments', false],
    ['NOPERM No permissions to access a channel', false],
    ["NOPERM User u has no permissions to run the 'keys' command", false],
    ["NOPERM this user has no permissions to run the 'get' command", false],
  ]
  t.same(cases.map(([error]) => [error, refusesKey(error)]), cases)
  t.end()
})
