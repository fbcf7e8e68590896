// The writes probe of a node that refuses writes for two reasons at once (full and MISCONF), with
// no traffic: Redis answers the probe's script with OOM (processCommand checks maxmemory first),
// so MISCONF was seen only by Tether's own puts (a script without a shebang checks MISCONF first).
// Without puts, the reason turned 'oom' once MISCONF went unseen for REFUSED_QUIET_MS (renewals
// shown as unaffected while MISCONF refused them), and a MISCONF that began on a full node was
// never told. The probe also sends a PEXPIRE of a key that never exists (a write Redis does not
// refuse for memory: answered 0 by a full node, refused by a MISCONF one). And each warn line's
// error is the reply of its own reason, never another's. Real redis-server; found by review R2.
import t, { type Test } from 'tap'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { systemClock } from '../src/clock.js'
import { createLogger } from '../src/observability/logger.js'
import { RedisHealthLog } from '../src/observability/redis-health-log.js'
import { RedisCheckpointStore } from '../src/redis/checkpoint-store.js'
import { RedisConnection, type RedisNodeEvent } from '../src/redis/connection.js'
import { REFUSED_QUIET_MS } from '../src/redis/node-health.js'
import { writesRefusedBy } from '../src/redis/reply-errors.js'
import { LogCapture } from './fixtures/log-capture.js'
import { redisCli, startRedis, waitFor, type RedisServer } from './fixtures/redis-server.js'

const HOUR = 3_600_000
const cp = { value: 'x', version: 1, upstream: 'app-0', epoch: 0, writtenAt: 1 }

/** How many EVALs (the writes probe; puts go out as EVALSHA) the server saw, refused ones included. */
async function evals(port: number): Promise<number> {
  const line = /cmdstat_eval:([^\r\n]*)/.exec(await redisCli(port, 'INFO', 'commandstats'))?.[1] ?? ''
  return Number(/(?:^|,)calls=(\d+)/.exec(line)?.[1] ?? 0) + Number(/rejected_calls=(\d+)/.exec(line)?.[1] ?? 0)
}

/** Waits until the writes probe ran `n` more times (500 ms rounds). */
async function probes(port: number, n: number): Promise<void> {
  const before = await evals(port)
  await waitFor(`${n} writes probes`, async () => await evals(port) - before >= n, 10_000)
}

/** MISCONF: RDB saves into a dir that is deleted, and a BGSAVE that fails there. */
async function misconf(redis: RedisServer): Promise<void> {
  const gone = await mkdtemp(join(tmpdir(), 'tether-probe-'))
  await redisCli(redis.port, 'CONFIG', 'SET', 'save', '3600 1')
  await redisCli(redis.port, 'CONFIG', 'SET', 'dir', gone)
  await rm(gone, { recursive: true })
  await redisCli(redis.port, 'BGSAVE')
  await waitFor('the RDB save to fail', async () => /rdb_last_bgsave_status:err/.test(await redisCli(redis.port, 'INFO', 'persistence')), 5_000)
}

/** Ends MISCONF: `dir` back, and a save that succeeds. */
async function fixDisk(redis: RedisServer): Promise<void> {
  await redisCli(redis.port, 'CONFIG', 'SET', 'dir', redis.dir)
  await waitFor('a save that succeeds', async () => {
    await redisCli(redis.port, 'BGSAVE').catch(() => '') // (refused while one runs)
    return /rdb_last_bgsave_status:ok/.test(await redisCli(redis.port, 'INFO', 'persistence'))
  }, 5_000)
}

interface World {
  readonly redis: RedisServer
  readonly conn: RedisConnection
  readonly store: RedisCheckpointStore
  readonly events: RedisNodeEvent[]
  readonly logs: LogCapture
  /** Moves the connection's clock on (time passing without traffic). */
  skip(ms: number): void
}

async function world(t: Test): Promise<World> {
  const redis = await startRedis({ args: ['--enable-protected-configs', 'yes', '--maxmemory-policy', 'noeviction'] })
  t.teardown(async () => {
    await redisCli(redis.port, 'CONFIG', 'SET', 'save', '').catch(() => undefined)
    await redis.stop()
  })
  let skew = 0
  const conn = new RedisConnection({ url: redis.url, keyPrefix: 'probe-test:', timeout: 2_000, now: () => performance.now() + skew })
  t.teardown(() => conn.stop())
  const store = new RedisCheckpointStore({ connection: conn })
  await conn.start()
  t.equal(await store.put('u', cp, HOUR), 'stored')
  const events: RedisNodeEvent[] = []
  const logs = new LogCapture()
  const log = new RedisHealthLog(createLogger('info', logs), systemClock)
  conn.onNode((e) => { events.push(e); log.observe(e) })
  return { redis, conn, store, events, logs, skip: (ms) => { skew += ms } }
}

const kinds = (events: readonly RedisNodeEvent[]): string[] => events.map((e) => `${e.kind}:${e.node.writesRefused}`)

/** Every writes-refused warn line's error is a reply of its own reason. */
function warnsMatch(t: Test, logs: LogCapture): void {
  const warns = logs.records.filter((r) => r['level'] === 40 && r['reason'] !== undefined)
  t.ok(warns.length > 0, 'a warn line')
  for (const w of warns) t.equal(writesRefusedBy(String(w['error'])), w['reason'], `the warn line of reason ${String(w['reason'])} has its error: ${String(w['error']).slice(0, 40)}...`)
}

t.test('full and MISCONF without traffic: MISCONF stays the reason past REFUSED_QUIET_MS (the probe sees it)', async (t) => {
  const w = await world(t)
  await misconf(w.redis)
  await redisCli(w.redis.port, 'CONFIG', 'SET', 'maxmemory', '1')
  t.equal(await w.store.put('v', cp, HOUR), 'unavailable', 'a put is refused (MISCONF: a script checks it first)')
  t.same(kinds(w.events), ['writes_refused:misconf'])
  // no traffic from here: time passes (the connection's clock), and the probe runs
  w.skip(REFUSED_QUIET_MS)
  await probes(w.redis.port, 3)
  const n = w.conn.nodes()[0]!
  t.comment(`events: ${kinds(w.events).join(', ')}; now ${n.summary}`)
  t.same(kinds(w.events), ['writes_refused:misconf'], 'no turn to oom while MISCONF holds')
  t.equal(n.writesRefused, 'misconf')
  t.match(n.writesRefusedError, /^MISCONF/)
  warnsMatch(t, w.logs)
})

t.test('a full node that turns MISCONF without traffic is told MISCONF, with MISCONF\'s reply, then full again once the disk is fixed', async (t) => {
  const w = await world(t)
  await redisCli(w.redis.port, 'CONFIG', 'SET', 'maxmemory', '1')
  t.equal(await w.store.put('v', cp, HOUR), 'unavailable', 'a put is refused (OOM)')
  t.same(kinds(w.events), ['writes_refused:oom'])
  await misconf(w.redis)
  await waitFor('MISCONF told', () => w.conn.nodes()[0]!.writesRefused === 'misconf', 10_000)
  t.same(kinds(w.events), ['writes_refused:oom', 'writes_refused:misconf'])
  t.match(w.events.at(-1)!.node.writesRefusedError, /^MISCONF/, 'the event carries MISCONF\'s reply')
  await waitFor('the misconf warn line', () => w.logs.records.some((r) => r['reason'] === 'misconf'), 5_000)
  warnsMatch(t, w.logs)
  // the disk fixed while still full: told full again at the next probe, not REFUSED_QUIET_MS later
  await fixDisk(w.redis)
  const before = await evals(w.redis.port)
  await waitFor('full again', () => w.conn.nodes()[0]!.writesRefused === 'oom', 10_000)
  const rounds = await evals(w.redis.port) - before
  t.ok(rounds <= 2, `told within ${rounds} probe rounds of the fix (at most 2; MISCONF unseen for 5 s would be 10)`)
  t.same(kinds(w.events), ['writes_refused:oom', 'writes_refused:misconf', 'writes_refused:oom'])
  t.match(w.events.at(-1)!.node.writesRefusedError, /^OOM/)
})
