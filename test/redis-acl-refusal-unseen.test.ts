// An ACL refusal listed on /readyz (RedisConnection.refusals) ends when it is not seen again for
// REFUSAL_QUIET_MS, even when no call of what was refused ever succeeds (the ACL fixed for a
// command Tether rarely sends, or the feature that sent it turned off): told to onRefused as
// ended with `unseenFor`, so the log's throttling of it ends too; one that keeps happening stays
// listed. And a Redis whose NOPERM replies name ever new commands grows neither the list nor the
// connection's refusal bookkeeping beyond MAX_OPEN_REFUSALS. Real redis-server with an ACL user;
// the connection's clock is a number the test moves (no real 5-minute wait); the log lines through
// createState (src/state/create-state.ts) with a captured logger.
import t, { type Test } from 'tap'
import { RedisConnection, type RedisRefusal } from '../src/redis/connection.js'
import { MAX_OPEN_REFUSALS, REFUSAL_QUIET_MS } from '../src/redis/acl-refusals.js'
import { Redis } from 'ioredis'
import { redisCli, startRedis, type RedisServer } from './fixtures/redis-server.js'
import { createState } from '../src/state/create-state.js'
import { Metrics } from '../src/observability/metrics.js'
import { createLogger } from '../src/observability/logger.js'
import { systemClock, systemTimers } from '../src/clock.js'
import { LogCapture } from './fixtures/log-capture.js'
import { testConfig } from './fixtures/upstream.js'
import { waitFor } from './fixtures/wait.js'

const USER = 'tether-unseen'
const PASSWORD = 'unseen-s3cret'

/** A Redis whose ACL user has all commands but the dangerous and `deny`, a started connection as that user on clock `clock.now`, and what it told onRefused. */
async function asUser(t: Test, ...deny: string[]): Promise<{ redis: RedisServer; conn: RedisConnection; told: RedisRefusal[]; clock: { now: number } }> {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  await redisCli(redis.port, 'ACL', 'SETUSER', USER, 'on', `>${PASSWORD}`, '~*', '&*', '+@all', '-@dangerous', ...deny)
  const clock = { now: 1_000 }
  const conn = new RedisConnection({ url: `redis://${USER}:${PASSWORD}@127.0.0.1:${redis.port}`, keyPrefix: 'un:', timeout: 5_000, now: () => clock.now })
  const told: RedisRefusal[] = []
  conn.onRefused((r) => told.push(r))
  await conn.start()
  t.teardown(() => conn.stop())
  return { redis, conn, told, clock }
}

t.test('a refusal not seen again for REFUSAL_QUIET_MS ends without a success; one that keeps happening stays listed', async (t) => {
  const { redis, conn, told, clock } = await asUser(t, '-exists')
  const exists = (): Promise<unknown> => conn.run('un:k', (c) => c.exists('un:k'))
  t.equal(typeof (await exists()), 'symbol', 'EXISTS refused')
  t.match(conn.refusals(), [/^redis refuses the command EXISTS: NOPERM/], 'listed')

  // refused again just before the period ends: it keeps happening, so it stays
  clock.now += REFUSAL_QUIET_MS - 1
  await exists()
  clock.now += REFUSAL_QUIET_MS - 1
  t.equal(conn.refusals().length, 1, 'seen again within the period: still listed')
  t.same(told.filter((r) => r.error === null), [], 'not ended')

  // the ACL fixed, but EXISTS is not sent again (a rare command, or its feature turned off)
  await redisCli(redis.port, 'ACL', 'SETUSER', USER, '+exists')
  clock.now += 2
  t.same(conn.refusals(), [], 'not seen for REFUSAL_QUIET_MS: no longer listed')
  t.same(told.filter((r) => r.error === null), [{ command: 'EXISTS', error: null, kind: 'command', unseenFor: REFUSAL_QUIET_MS + 1 }], 'told ended once, as unseen (not as accepted)')
  t.equal(await exists(), 0, 'a later call succeeds')
  t.equal(told.filter((r) => r.error === null).length, 1, 'and tells nothing more: the refusal was already over')

  // refused again later: a new refusal, listed at once
  await redisCli(redis.port, 'ACL', 'SETUSER', USER, '-exists')
  await exists()
  t.equal(conn.refusals().length, 1, 'a later refusal is listed again')
  // the quiet end also comes with any other call's outcome (no /readyz read needed)
  clock.now += REFUSAL_QUIET_MS
  t.equal(await conn.run('un:k', (c) => c.get('un:k')), null)
  t.equal(told.filter((r) => r.error === null).length, 2, 'ended by the next call of anything')
})

t.test('a Redis naming ever new refused commands: the list and its bookkeeping stay bounded, the least recently seen ends first', async (t) => {
  // whole categories refused: well over MAX_OPEN_REFUSALS distinct commands
  const cats = ['list', 'set', 'sortedset', 'stream', 'geo', 'hyperloglog', 'bitmap']
  const { redis, conn, told } = await asUser(t, ...cats.map((c) => `-@${c}`))
  const admin = new Redis({ port: redis.port, host: '127.0.0.1', lazyConnect: true })
  await admin.connect()
  t.teardown(() => admin.quit())
  const names = new Set<string>()
  for (const cat of cats) for (const n of await admin.call('COMMAND', 'LIST', 'FILTERBY', 'ACLCAT', cat) as string[]) if (!n.includes('|')) names.add(n)
  t.ok(names.size > MAX_OPEN_REFUSALS + 20, `${names.size} commands refused`)
  for (const name of names) {
    // (each with its arity's count of arguments: Redis checks the arity before the ACL)
    const [[, arity]] = await admin.call('COMMAND', 'INFO', name) as [[string, number]]
    const args = Array.from({ length: Math.abs(arity) - 1 }, () => 'un:k')
    t.equal(typeof (await conn.run('un:k', (c) => (c as unknown as Redis).call(name, ...args))), 'symbol', `${name} refused`)
  }
  const open = told.filter((r) => r.error !== null).length - told.filter((r) => r.error === null).length
  t.equal(told.filter((r) => r.error !== null).length, names.size, 'each refusal told')
  t.equal(conn.refusals().length, MAX_OPEN_REFUSALS, `at most ${MAX_OPEN_REFUSALS} listed`)
  t.equal(open, MAX_OPEN_REFUSALS, 'the others told ended, so a listener (the log throttling) forgets them too')
  const first = [...names][0]!.toUpperCase()
  t.match(told.find((r) => r.error === null), { command: first, unseenFor: Number }, 'the least recently seen ended first, as unseen')
  t.notOk(conn.refusals().some((l) => l.includes(`command ${first}:`)), 'and is no longer listed')
})

t.test("the log: a refusal that ends unseen gets its own info line (not 'accepts again'), and its warn throttling ends", async (t) => {
  const { redis, conn, clock } = await asUser(t, '-exists')
  const logs = new LogCapture()
  const cfg = testConfig([{ id: 'app-0', url: 'http://127.0.0.1:1' }], { state: { store: 'redis', redis: { url: `redis://127.0.0.1:${redis.port}`, key_prefix: 'un:' } } })
  const { stop } = await createState(cfg, conn, systemClock, systemTimers, new Metrics({ defaultMetrics: false }), createLogger('info', logs))
  t.teardown(stop)
  const exists = (): Promise<unknown> => conn.run('un:k', (c) => c.exists('un:k'))
  await exists()
  await waitFor(() => logs.records.some((l) => l['msg'] === 'redis refused a command: the ACL user may not run it, its calls fail'), 5_000, 'the warn')
  clock.now += REFUSAL_QUIET_MS
  t.same(conn.refusals(), [])
  await waitFor(() => logs.records.some((l) => String(l['msg']).startsWith('redis refusal not seen again')), 5_000, 'the info line')
  t.match(logs.records.find((l) => String(l['msg']).startsWith('redis refusal not seen again')), { level: 30, command: 'EXISTS', unseen_for_ms: REFUSAL_QUIET_MS })
  t.notOk(logs.records.some((l) => String(l['msg']).startsWith('redis accepts')), 'not told as accepted: no call of it succeeded')
  // refused again at once (within the 30 s throttle of the first warn): a new warn, as its spell ended
  await exists()
  await waitFor(() => logs.records.filter((l) => l['msg'] === 'redis refused a command: the ACL user may not run it, its calls fail').length === 2, 5_000, 'warned again')
  t.pass('a later refusal is warned again at once')
})
