// With workers and `health.shared: redis`, an ejection found on live traffic by a worker that
// is not the lead is recorded in Redis under that worker's own field; after Redis lost its keys
// (FLUSHALL) that worker writes it back itself, and the lead too (it holds its sibling's record,
// heard), also once the worker that found it is gone (SIGKILLed, restarted by the primary), so
// a Tether replica started after the loss ejects the upstream too; and when the lead changes
// afterwards (the new lead read the record at its start). A real redis-server, a real
// primary with two worker processes, real upstreams; nothing sleeps.
import t, { type Test } from 'tap'
import http from 'node:http'
import type { ChildProcess } from 'node:child_process'
import { startTether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { startRedis, redisCli, type RedisServer } from './fixtures/redis-server.js'
import { startUpstream, testConfig, type Upstream } from './fixtures/upstream.js'
import { slotOf, workerPids } from './fixtures/primary-process.js'
import { waitFor } from './fixtures/wait.js'
import { connectionTo, ejectThrough, flushed as flushedOn, get, workersOnRedis, type Lines } from './fixtures/workers-keyspace.js'

let redis: RedisServer
t.before(async () => { redis = await startRedis() })
t.teardown(async () => { await redis.stop() })

/**
 * A primary with two workers on Redis (key prefix `prefix`) over app-0 and app-1 (app-1 fails
 * /fail with a 500: one failure ejects it for a minute), and app-1 ejected by the worker that
 * is not the lead, recorded in Redis and applied by the lead, heard: the record as HGETALL
 * gives it, and the slot of the lead.
 */
async function ejectedByNonLead(t: Test, prefix: string): Promise<{ proc: ChildProcess; lines: Lines; lead: number; key: string; recorded: string; good: Upstream; bad: Upstream }> {
  const good = await startUpstream('app-0')
  // app-1 fails the requests for /fail (5xx: an ejection timed by base_ejection), answers the rest
  const bad = await startUpstream('app-1', (req, res) => {
    res.statusCode = req.url === '/fail' ? 500 : 200
    res.end('app-1\n')
  })
  t.teardown(async () => { await Promise.all([good.close(), bad.close()]) })
  // one failure ejects, for a minute (well past the test's end)
  const w = await workersOnRedis(t, redis, prefix, [good, bad], '{ shared: redis, active: { enabled: false }, passive: { consecutive_failures: 1, base_ejection: 60s, max_ejection: 60s } }')
  const { proc, lines, lead } = w
  // users on a connection the other worker took until one is placed on app-1: that worker finds it failing and ejects it
  const agent = await connectionTo(t, w, 1 - lead)
  await ejectThrough(w, agent, 1 - lead, '/fail', 'app-1')
  t.ok(lines().some((l) => l['msg'] === 'upstream health changed' && l['upstream'] === 'app-1' && l['to'] === 'ejected' && l['worker'] === 1 - lead), 'the worker that is not the lead ejected app-1')
  t.same(new Set(lines().filter((l) => l['path'] === '/fail').map((l) => l['worker'])), new Set([1 - lead]), 'it answered every failed request: the lead found none')
  const key = `${prefix}peers:ejections`
  await waitFor(async () => (await redisCli(redis.port, 'HLEN', key)).trim() === '1', 5_000, 'the ejection to be recorded')
  await waitFor(() => lines().some((l) => l['msg'] === 'health event from another Tether replica' && l['upstream'] === 'app-1' && l['worker'] === lead), 5_000, 'the lead to apply it, heard')
  return { proc, lines, lead, key, recorded: (await redisCli(redis.port, 'HGETALL', key)).trim(), good, bad }
}

/** FLUSHALL, then the `redis keyspace lost` lines of the two workers running (logged after it). */
const flushed = (lines: Lines): Promise<Record<string, unknown>[]> => flushedOn(redis, lines)

/** The record is back in Redis after the loss, as it was, and a replica started then ejects app-1 and places new users on app-0 only. */
async function backAfterLoss(t: Test, prefix: string, s: { key: string; recorded: string; good: Upstream; bad: Upstream }): Promise<void> {
  const back = await waitFor(async () => (await redisCli(redis.port, 'HLEN', s.key)).trim() === '1', 5_000, 'the ejection to be back in Redis').then(() => true, () => false)
  t.ok(back, 'the recorded ejection is back in Redis after the loss')
  t.equal((await redisCli(redis.port, 'HGETALL', s.key)).trim(), s.recorded, 'under its field, as it was recorded (it ends when it did)')

  // a replica started after the loss
  const r3 = await startTether(testConfig([s.good, s.bad], {
    affinity: { key: 'header', header: { name: 'X-User' } },
    health: { shared: 'redis', active: { enabled: false }, passive: { consecutive_failures: 1, base_ejection: 60_000, max_ejection: 60_000 } },
    state: { store: 'redis', timeout: 200, redis: { url: redis.url, key_prefix: prefix } },
  }), { logger: createLogger('silent') })
  t.teardown(() => r3.close(0))
  t.equal(r3.health.state('app-1'), 'ejected', 'a replica started after the loss ejects app-1')
  const r3Agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
  t.teardown(() => r3Agent.destroy())
  const placed = new Set<string>()
  for (let u = 0; u < 12; u++) placed.add((await get(r3Agent, r3.port, '/', `new-${u}`)).body.trim())
  t.same([...placed], ['app-0'], 'and places new users on app-0 only')
}

t.test('with two workers, an ejection found by the worker that is not the lead is written back by it after a FLUSHALL: a replica started after the loss ejects the upstream too', async (t) => {
  const prefix = 'wke:'
  const s = await ejectedByNonLead(t, prefix)
  const lost = await flushed(s.lines)
  t.match(lost.find((l) => l['worker'] === 1 - s.lead), { ejections: 1 }, 'the worker that found it wrote its ejection back')
  t.match(lost.find((l) => l['worker'] === s.lead), { ejections: 1 }, 'and the lead, which holds its sibling\'s record (the same field and value: one record)')
  await backAfterLoss(t, prefix, s)
})

t.test('with two workers, an ejection whose finder was SIGKILLed (and restarted) before the FLUSHALL is written back by the lead: a replica started after the loss ejects the upstream too', async (t) => {
  const prefix = 'wkg:'
  const s = await ejectedByNonLead(t, prefix)
  const finder = workerPids(s.proc).find((pid) => slotOf(pid) === 1 - s.lead)
  t.ok(finder !== undefined, 'the finder\'s pid')
  const listening = (): number => s.lines().filter((l) => l['msg'] === 'tether listening' && l['worker'] === 1 - s.lead).length
  process.kill(finder!, 'SIGKILL')
  await waitFor(() => listening() === 2, 60_000, 'the finder\'s slot to be restarted')
  t.equal((await redisCli(redis.port, 'HGETALL', s.key)).trim(), s.recorded, 'the record stays in Redis while it runs (its finder is gone)')
  const lost = await flushed(s.lines)
  t.match(lost.find((l) => l['worker'] === s.lead), { ejections: 1 }, 'the lead wrote back its gone sibling\'s ejection')
  t.match(lost.find((l) => l['worker'] === 1 - s.lead), { ejections: 0 }, 'the restarted worker none (the lead does)')
  await backAfterLoss(t, prefix, s)
})

t.test('with two workers, the finder SIGKILLed and restarted, then the lead SIGKILLed: the restarted finder, now the lead, writes the record back after a FLUSHALL (it read it at its start)', async (t) => {
  const prefix = 'wkl:'
  const s = await ejectedByNonLead(t, prefix)
  const slot = 1 - s.lead // the finder's slot
  const listening = (w: number): number => s.lines().filter((l) => l['msg'] === 'tether listening' && l['worker'] === w).length
  const leads = (): number => s.lines().filter((l) => l['msg'] === 'worker runs the active health checks').at(-1)!['child'] as number
  process.kill(workerPids(s.proc).find((pid) => slotOf(pid) === slot)!, 'SIGKILL')
  await waitFor(() => listening(slot) === 2, 60_000, 'the finder\'s slot to be restarted')
  process.kill(workerPids(s.proc).find((pid) => slotOf(pid) === s.lead)!, 'SIGKILL')
  await waitFor(() => leads() === slot, 30_000, 'the restarted finder to lead')
  await waitFor(() => listening(s.lead) === 2, 60_000, 'the old lead\'s slot to be restarted')
  t.equal((await redisCli(redis.port, 'HGETALL', s.key)).trim(), s.recorded, 'the record stays in Redis while it runs')
  const lost = await flushed(s.lines)
  t.match(lost.find((l) => l['worker'] === slot), { ejections: 1 }, 'the new lead (the restarted finder\'s slot) wrote it back')
  await backAfterLoss(t, prefix, s)
})
