// Sentinels with their own password (`requirepass`, not the master's): Tether asks them for the
// master and watches their +switch-master with `state.redis.sentinel_password`, routes and
// stores checkpoints through them, and follows a real SENTINEL FAILOVER; a wrong password is
// named in the warn line and /readyz, start-up does not hang on it, and Tether recovers once
// the Sentinels accept its password. Real redis-server and Sentinel processes; no fixed sleeps.
import t, { type Test } from 'tap'
import http from 'node:http'
import { startTether, type Tether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { DEFAULTS } from '../src/config/schema.js'
import { redisCli, startRedis, startRedisSentinel, startSentinelSet, waitFor, type RedisSentinelSet } from './fixtures/redis-server.js'
import { freePort } from './fixtures/ports.js'
import { testConfig } from './fixtures/upstream.js'
import { CookieJar, get } from './fixtures/users.js'
import { startCounter, type CounterAnswer } from './fixtures/counter-upstream.js'
import { LogCapture } from './fixtures/log-capture.js'

const SECRET = 'sentinel-auth-secret-0123456789ab'
const MASTER_PASSWORD = 'master-s3cret'
const SENTINEL_PASSWORD = 'sentinel-s3cret'
/** Longest start-up of Tether; with Sentinels that refuse it returns after their first round. */
const START_DEADLINE_MS = 5_000

/** Tether in-process, state in Redis through `set`'s Sentinels (or `sentinels`, `host:port`) with `sentinelPassword`; logs at info into `logs`. */
async function tether(t: Test, set: Pick<RedisSentinelSet, 'sentinels' | 'name'>, sentinelPassword: string | null, logs: LogCapture, sentinels = set.sentinels.map((s) => `127.0.0.1:${s.port}`)): Promise<{ tt: Tether; started: number }> {
  const app = await startCounter('app-0')
  t.teardown(() => app.kill())
  const cfg = testConfig([app], {
    affinity: { cookie: { ...DEFAULTS.affinity.cookie, secret: [SECRET] } },
    state: {
      store: 'redis', timeout: 1_000,
      redis: { sentinels, name: set.name, password: MASTER_PASSWORD, sentinel_password: sentinelPassword, key_prefix: 'sa:' },
    },
  })
  const before = performance.now()
  // a start-up that hangs fails here, not at the test's timeout
  let timer: NodeJS.Timeout | undefined
  const hung = new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`start-up still waiting after ${START_DEADLINE_MS} ms`)), START_DEADLINE_MS) })
  const tt = await Promise.race([startTether(cfg, { logger: createLogger('info', logs) }), hung]).finally(() => clearTimeout(timer))
  const started = performance.now() - before
  t.teardown(() => tt.close(0))
  return { tt, started }
}

async function readyz(tt: Tether): Promise<{ ready: boolean; degraded: string[] }> {
  const r = await get(`${tt.adminUrl}/readyz`, new http.Agent())
  return JSON.parse(r.body) as { ready: boolean; degraded: string[] }
}

/** `port`'s checkpoint keys (`sa:cp:*`), with the master's password. */
async function checkpoints(port: number): Promise<string[]> {
  return (await redisCli(port, '--no-auth-warning', '-a', MASTER_PASSWORD, '--scan', '--pattern', 'sa:cp:*')).split('\n').filter((l) => l !== '')
}

/** One user's request through Tether: the counter app's answer. */
async function ask(tt: Tether, jar: CookieJar): Promise<CounterAnswer> {
  const r = await get(tt.url, new http.Agent(), {}, jar)
  if (r.status !== 200) throw new Error(`status ${r.status}: ${r.body}`)
  return JSON.parse(r.body) as CounterAnswer
}

const sentinelCli = (port: number, ...args: string[]): Promise<string> => redisCli(port, '--no-auth-warning', '-a', SENTINEL_PASSWORD, ...args)

t.test('Sentinels with requirepass: Tether routes and stores state through them and follows a SENTINEL FAILOVER', async (t) => {
  const set = await startSentinelSet({ password: MASTER_PASSWORD }, { password: SENTINEL_PASSWORD, masterPassword: MASTER_PASSWORD })
  t.teardown(() => set.stop())
  t.match(await redisCli(set.sentinels[0]!.port, 'SENTINEL', 'MASTERS').catch((err: Error) => err.message), /NOAUTH/, 'the Sentinels refuse a client without their password')
  const logs = new LogCapture()
  const { tt } = await tether(t, set, SENTINEL_PASSWORD, logs)
  await waitFor('the store to be ready', async () => (await readyz(tt)).degraded.length === 0, 5_000)

  const jar = new CookieJar()
  jar.cookies.set('user', 'u1')
  t.equal((await ask(tt, jar)).n, 1, 'routed')
  t.equal((await ask(tt, jar)).n, 2, 'routed again')
  await waitFor('a checkpoint on the master', async () => (await checkpoints(set.master.port)).length > 0)
  t.pass('the checkpoint is stored on the master')
  // the switch watches authenticated: Sentinel lists them as subscribers
  await waitFor('the switch watches to subscribe', async () => / name=tether-switch-watch .*sub=1/.test(await sentinelCli(set.sentinels[0]!.port, 'CLIENT', 'LIST')), 5_000)

  await set.failover()
  // a new user's checkpoint lands on the new master within seconds (the old one is demoted ~10 s later)
  const after = new CookieJar()
  after.cookies.set('user', 'u2')
  await waitFor("a new user's checkpoint on the new master", async () => {
    await ask(tt, after)
    const keys = await checkpoints(set.replica.port)
    return (await redisCli(set.replica.port, '--no-auth-warning', '-a', MASTER_PASSWORD, 'ROLE')).startsWith('master') && keys.length >= 2
  }, 5_000)
  t.pass('the failover was followed: state is stored on the new master')
  t.same(logs.records.filter((r) => /sentinel/i.test(String(r['msg']))), [], 'no Sentinel complaint in the logs')
})

t.test('a wrong sentinel_password: start-up does not hang, the warn line and /readyz name the key, and Tether recovers once the Sentinels take its password', async (t) => {
  const set = await startSentinelSet({ password: MASTER_PASSWORD }, { password: SENTINEL_PASSWORD, masterPassword: MASTER_PASSWORD })
  t.teardown(() => set.stop())
  const logs = new LogCapture()
  const { tt, started } = await tether(t, set, 'not-the-password', logs)
  t.comment(`started in ${Math.round(started)} ms`)
  t.ok(started < START_DEADLINE_MS, `start-up returned after the first refused round (${Math.round(started)} ms)`)
  const r = await readyz(tt)
  t.comment(r.degraded.join('\n'))
  t.match(r.degraded.join('\n'), /refused Tether's password for the default user: check state\.redis\.sentinel_password, or set state\.redis\.sentinel_username for an ACL user/, '/readyz names the key, and the user key the Sentinels may want')
  t.match(r.degraded.join('\n'), /WRONGPASS|invalid password/, "/readyz gives the Sentinel's refusal")
  await waitFor('a warn line naming the key', () => logs.records.some((l) => l['level'] === 40 && /state\.redis\.sentinel_password/.test(JSON.stringify(l))))
  t.pass('a warn line names state.redis.sentinel_password')

  // the Sentinels now take Tether's password: it finds the master and is ready
  for (const s of set.sentinels) await sentinelCli(s.port, 'ACL', 'SETUSER', 'default', 'resetpass', '>not-the-password')
  await waitFor('the store to be ready', async () => (await readyz(tt)).degraded.length === 0, 10_000)
  t.pass('recovered once the Sentinels accept the password')
  t.notOk(JSON.stringify(logs.records).includes('not-the-password') || r.degraded.join('\n').includes('not-the-password'), 'the password is never printed (logs, /readyz)')
})

t.test('Sentinels that require a password when no sentinel_password is set: told as requiring one (NOAUTH), naming state.redis.sentinel_password and sentinel_username, not as a refused password', async (t) => {
  const set = await startSentinelSet({ password: MASTER_PASSWORD }, { password: SENTINEL_PASSWORD, masterPassword: MASTER_PASSWORD })
  t.teardown(() => set.stop())
  const logs = new LogCapture()
  const { tt } = await tether(t, set, null, logs)
  let degraded = ''
  await waitFor('/readyz to name the key', async () => /state\.redis\.sentinel_password/.test(degraded = (await readyz(tt)).degraded.join('\n')))
  t.comment(degraded)
  t.match(degraded, /NOAUTH.*\(the Sentinel requires a password: set state\.redis\.sentinel_password, and state\.redis\.sentinel_username for an ACL user\)/, 'the Sentinel requires a password, both keys named')
  t.notMatch(degraded, /refused Tether's password/, 'no password was sent: none was refused')
  t.notOk(JSON.stringify(logs.records).includes(SENTINEL_PASSWORD), 'the Sentinels\' password is never printed')
})

t.test('a Sentinel that refuses the password, then one that is unreachable: the hint names state.redis.sentinel_password although ioredis tells only the last error', async (t) => {
  const master = await startRedis({ args: ['--requirepass', MASTER_PASSWORD] })
  t.teardown(() => master.stop())
  const refusing = await startRedisSentinel(master, 'mymaster', { password: SENTINEL_PASSWORD, masterPassword: MASTER_PASSWORD })
  t.teardown(() => refusing.stop())
  const closed = await freePort() // nothing listens there: asked last, its failure is the round's last error
  const logs = new LogCapture()
  const { tt } = await tether(t, { sentinels: [refusing], name: 'mymaster' }, 'not-the-password', logs, [`127.0.0.1:${refusing.port}`, `127.0.0.1:${closed}`])
  let degraded = ''
  await waitFor('/readyz to name the key', async () => /state\.redis\.sentinel_password/.test(degraded = (await readyz(tt)).degraded.join('\n')))
  t.comment(degraded)
  t.match(degraded, new RegExp(`Last error: [^;]*(ECONNREFUSED|closed)[^;]*; Sentinel 127\\.0\\.0\\.1:${refusing.port}: (WRONGPASS|.*invalid).*the Sentinel refused Tether's password for the default user: check state\\.redis\\.sentinel_password, or set state\\.redis\\.sentinel_username for an ACL user`), 'the last error, then the refusal with its Sentinel and the hint')
  const down = logs.records.find((l) => l['level'] === 40 && String(l['msg']).startsWith('redis node down'))
  t.match(down?.['error'], /check state\.redis\.sentinel_password, or set state\.redis\.sentinel_username/, 'the redis node down warn gives the hint')
  t.notOk(JSON.stringify(logs.records).includes('not-the-password') || degraded.includes('not-the-password'), 'the password is never printed')
})
