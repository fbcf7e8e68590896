// ioredis's console.warn lines ("[WARN] Redis server does not require a password, but a
// password was supplied.") become one JSON warn line each, with the setting to change, once per
// process (not once per reconnect); every other console.warn passes through unchanged.
import t, { type Test } from 'tap'
import { redisCli, startRedis, startRedisSentinel } from './fixtures/redis-server.js'
import { startChildTether, type ChildTether } from './fixtures/raw-tether.js'
import { startUpstream } from './fixtures/upstream.js'
import { waitFor } from './fixtures/wait.js'
import { logRedisNotice, redisConsoleNotice, routeRedisConsole } from '../src/redis/console-notices.js'
import { createLogger } from '../src/observability/logger.js'
import { LogCapture } from './fixtures/log-capture.js'

const NOTICE = 'redis: the server does not require a password, but Tether sends one'

/** A Tether child in front of one upstream with `state` (config lines). */
async function start(t: Test, state: string[]): Promise<ChildTether> {
  const app = await startUpstream('app-0')
  t.teardown(() => app.close())
  const child = await startChildTether([
    'listen: { host: 127.0.0.1, port: 0 }',
    'admin: { listen: { host: 127.0.0.1, port: 0 } }', // not the default 9901: tests run side by side
    `upstreams: [ { id: app-0, url: "${app.url}" } ]`,
    ...state,
    'log: { level: info, access: false }',
  ].join('\n'))
  t.teardown(() => child.kill())
  return child
}

/** Whether `child` has said it (as the JSON notice, or as ioredis's plain line). */
const said = (child: ChildTether): boolean => child.stdout().includes(NOTICE) || child.stderr().includes('a password was supplied')

/** Stop `child` (SIGTERM, so every line is written) and check that each line it wrote is JSON; its lines. */
async function jsonLines(t: Test, child: ChildTether): Promise<Record<string, unknown>[]> {
  child.proc.kill('SIGTERM')
  await child.exited
  const lines = [...child.stdout().split('\n'), ...child.stderr().split('\n')].filter((l) => l.trim() !== '')
  const plain = lines.filter((l) => { try { JSON.parse(l); return false } catch { return true } })
  t.strictSame(plain, [], 'every line on stdout and stderr is JSON')
  return lines.filter((l) => !plain.includes(l)).map((l) => JSON.parse(l) as Record<string, unknown>)
}

t.test('a password Redis does not need: one JSON warn naming state.redis.password, not one per reconnect', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const child = await start(t, [`state: { store: redis, redis: { url: "${redis.url}", password: "not-needed" } }`])
  await waitFor(() => said(child), 10_000, 'the notice')
  // every connection of Tether's dropped: they connect again, each sending AUTH again
  await redisCli(redis.port, 'CLIENT', 'KILL', 'TYPE', 'normal')
  await waitFor(() => child.stdout().includes('redis node up again'), 10_000, 'Tether to connect again')
  const notices = (await jsonLines(t, child)).filter((l) => l['msg'] === NOTICE)
  t.equal(notices.length, 1, 'said once')
  t.match(notices[0], { level: 40, hint: 'the password in state.redis.password is not needed by this server; remove it or set requirepass', redis_said: /^\[WARN\] .*does not require a password/ })
})

t.test('with workers, the notice is logged once for all of them, by the primary, not once per worker', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const child = await start(t, ['workers: 2', `state: { store: redis, redis: { url: "${redis.url}", password: "not-needed" } }`])
  // each worker connects (sending AUTH, so ioredis says it) before it listens
  await waitFor(() => child.stdout().split('\n').filter((l) => l.includes('"tether listening"')).length >= 2, 15_000, 'both workers to start')
  await waitFor(() => said(child), 10_000, 'the notice')
  const notices = (await jsonLines(t, child)).filter((l) => l['msg'] === NOTICE)
  t.equal(notices.length, 1, 'said once')
  t.match(notices[0], { level: 40, worker: 'primary', child: Number, hint: /state\.redis\.password/, redis_said: /^\[WARN\] / })
})

t.test('a Sentinel password the Sentinels do not need: the warn names state.redis.sentinel_password', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const sentinel = await startRedisSentinel(redis)
  t.teardown(() => sentinel.stop())
  const child = await start(t, [`state: { store: redis, redis: { sentinels: ["127.0.0.1:${sentinel.port}"], name: mymaster, sentinel_password: "not-needed" } }`])
  await waitFor(() => said(child), 10_000, 'the notice')
  const notices = (await jsonLines(t, child)).filter((l) => l['msg'] === NOTICE)
  t.equal(notices.length, 1, 'said once')
  t.match(notices[0], { level: 40, hint: 'the password in state.redis.sentinel_password is not needed by this server; remove it or set requirepass' })
})

t.test('an ACL user that may not run INFO: ioredis\'s "Skipping the ready check" line is one JSON warn with the grant, not plain text', async (t) => {
  const redis = await startRedis({ args: ['--requirepass', 'default-s3cret'] })
  t.teardown(() => redis.stop())
  await redisCli(redis.port, '--no-auth-warning', '-a', 'default-s3cret', 'ACL', 'SETUSER', 'no-info', 'on', '>app-s3cret', '~*', '&*', '+@all', '-info')
  const child = await start(t, [`state: { store: redis, redis: { url: "${redis.url}", username: no-info, password: app-s3cret } }`])
  const READY = 'redis: the ACL user may not run INFO, so the client skips its ready check'
  await waitFor(() => child.stdout().includes(READY) || child.stdout().includes('Skipping the ready check') || child.stderr().includes('Skipping the ready check'), 10_000, 'the ready check line')
  // every connection of Tether's dropped: each connects again and runs its ready check again
  await redisCli(redis.port, '--no-auth-warning', '-a', 'default-s3cret', 'CLIENT', 'KILL', 'TYPE', 'normal')
  await waitFor(() => child.stdout().includes('redis node up again'), 10_000, 'Tether to connect again')
  const lines = await jsonLines(t, child)
  const notices = lines.filter((l) => l['msg'] === READY)
  t.equal(notices.length, 1, 'said once')
  t.match(notices[0], { level: 40, hint: /grant \+info/, redis_said: /^Skipping the ready check because INFO command fails: "NOPERM/ })
  t.notMatch(JSON.stringify(lines), /app-s3cret|default-s3cret/, 'no password in any line')
})

t.test('a Redis 7.2+ refusal quoted in a notice leaves the ACL user\'s name out', async (t) => {
  const line = 'Skipping the ready check because INFO command fails: "NOPERM User tether-app has no permissions to run the \'info\' command". You can disable ready check with "enableReadyCheck".'
  const notice = redisConsoleNotice(line, [])
  t.ok(notice !== null, 'routed')
  const log = new LogCapture()
  logRedisNotice(createLogger('info', log), notice!, line)
  t.equal(log.records.length, 1)
  t.match(log.records[0], { redis_said: /NOPERM User <user> has no permissions/ })
  t.notMatch(JSON.stringify(log.records), /tether-app/, 'the user name is not logged')
})

t.test('any other console.warn passes through unchanged', async (t) => {
  const seen: unknown[][] = []
  const original = console.warn
  console.warn = (...args: unknown[]) => { seen.push(args) }
  const log = new LogCapture()
  const undo = routeRedisConsole(() => createLogger('info', log), () => ['state.redis.password'])
  try {
    console.warn('[WARN] not from ioredis', 2)
    console.warn('[WARN] Redis server does not require a password, but a password was supplied.') // this file is not ioredis
    console.warn('something else')
  } finally {
    undo()
    console.warn = original
  }
  t.strictSame(seen, [['[WARN] not from ioredis', 2], ['[WARN] Redis server does not require a password, but a password was supplied.'], ['something else']])
  t.equal(log.lines.length, 0, 'nothing logged')
})

t.test('a console.warn that is not one `[WARN] `/`[ERROR] ` string passes through as given, without a stack captured', async (t) => {
  const seen: unknown[][] = []
  const original = console.warn
  console.warn = (...args: unknown[]) => { seen.push(args) }
  const log = new LogCapture()
  const undo = routeRedisConsole(() => createLogger('info', log), () => ['state.redis.password'])
  // V8 formats a stack (calls prepareStackTrace) only when `.stack` is read: counted here
  const prepare = Error.prepareStackTrace
  let stacks = 0
  Error.prepareStackTrace = (error, frames) => { stacks++; return prepare === undefined ? `${String(error)}\n${frames.map((f) => `    at ${String(f)}`).join('\n')}` : prepare(error, frames) }
  const error = new Error('boom')
  const calls: unknown[][] = [
    [error],
    [{ warn: '[WARN] an object' }],
    ['%s: %d', '[WARN] formatted', 3],
    ['[WARN] two args', { a: 1 }],
    ['a plain line'],
    ['[WARNING] not the prefix'],
    [],
  ]
  try {
    for (const args of calls) console.warn(...args)
  } finally {
    Error.prepareStackTrace = prepare
    undo()
    console.warn = original
  }
  t.equal(stacks, 0, 'no stack captured for any of them')
  t.equal(seen.length, calls.length, 'each passed through')
  for (const [i, args] of calls.entries()) t.equal(seen[i]?.length, args.length, `call ${i}: the same number of args`)
  for (const [i, args] of calls.entries()) for (const [j, a] of args.entries()) t.equal(seen[i]?.[j], a, `call ${i}: arg ${j} the same value`)
  t.equal(log.lines.length, 0, 'nothing logged')
})

t.test("ioredis's line for Redis < 6 refusing AUTH with a username is one warn: the server has no ACL users, remove the username or upgrade", (t) => {
  // (ioredis's event_handler.js text, which quotes Redis < 6's "wrong number of arguments for 'auth' command")
  const said = `[ERROR] The server returned "wrong number of arguments for 'auth' command". You are probably passing both username and password to Redis version 5 or below. You should only pass the 'password' option for Redis version 5 and under.`
  t.same(redisConsoleNotice(said, ['state.redis.password']), {
    level: 'warn',
    msg: 'redis: the server has no ACL users (Redis < 6) and refused AUTH with a username',
    hint: 'remove state.redis.username (or state.redis.sentinel_username), or upgrade to Redis 6+ (Sentinels 6.2+)',
  })
  t.end()
})
