// With two workers and `health.shared: redis`, the lead frozen (SIGSTOP) before its keyspace
// check noticed a FLUSHALL, then SIGKILLed: its sibling handled the loss as a sibling (its own
// ejections only), and, leading soon after, records the lead's part again: the drain made
// through the admin API and the old lead's own ejection (which it held as its sibling's). Else
// nobody wrote them back. A real redis-server, a real primary with two worker processes, real
// upstreams; nothing sleeps.
import t from 'tap'
import { LEAD_PART_LOG } from '../src/health/shared-health.js'
import { startRedis, redisCli } from './fixtures/redis-server.js'
import { request, startUpstream } from './fixtures/upstream.js'
import { slotOf, workerPids } from './fixtures/primary-process.js'
import { waitFor } from './fixtures/wait.js'
import { ejectedAndDrained, flushed, leadOf, workersOnRedis } from './fixtures/workers-keyspace.js'

t.test('with two workers, a lead gone before it noticed a FLUSHALL: its sibling, leading soon after, writes back the drain and the old lead\'s ejection', async (t) => {
  const { redis, w, ejections: key, drains } = await ejectedAndDrained(t, 'wkd:')
  const { lead, lines } = w
  const other = 1 - lead
  const recorded = (await redisCli(redis.port, 'HGETALL', key)).trim()

  // the lead freezes before the loss: its check never notices it; its sibling's does
  const leadPid = workerPids(w.proc).find((pid) => slotOf(pid) === lead)!
  process.kill(leadPid, 'SIGSTOP')
  const lost = await flushed(redis, lines, 1)
  t.match(lost[0], { worker: other, drains: 0, ejections: 0 }, 'the sibling wrote back its own ejections (none), not the lead\'s part')
  process.kill(leadPid, 'SIGKILL')
  await waitFor(() => leadOf(lines) === other, 30_000, 'the sibling to lead')
  const back = await waitFor(async () => (await redisCli(redis.port, 'HLEN', key)).trim() === '1' &&
    (await redisCli(redis.port, 'HEXISTS', drains, 'app-2')).trim() === '1', 5_000, 'the ejection and the drain to be back').then(() => true, () => false)
  t.ok(back, 'the old lead\'s ejection and the drain are back in Redis')
  t.equal((await redisCli(redis.port, 'HGETALL', key)).trim(), recorded, 'the ejection under its field, as recorded')
  // the line is written as the writes are sent, and reaches the pipe later (pino writes asynchronously): polled
  await waitFor(() => lines().some((l) => l['msg'] === LEAD_PART_LOG), 5_000, 'the new lead\'s line').catch(() => undefined)
  t.match(lines().find((l) => l['msg'] === LEAD_PART_LOG), { worker: other, drains: 1, ejections: 1 }, 'the new lead said what it recorded again')
})

t.test('with two workers, a lead that noticed a FLUSHALL and wrote its part, then killed: its sibling, leading, writes nothing again (whichever noticed the loss first)', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const prefix = 'wkn:'
  const apps = await Promise.all(['app-0', 'app-1', 'app-2'].map((id) => startUpstream(id, (_req, res) => res.end(`${id}\n`))))
  t.teardown(() => Promise.all(apps.map((a) => a.close())))
  const w = await workersOnRedis(t, redis, prefix, apps, '{ shared: redis, active: { enabled: false } }')
  const { lead, lines } = w
  const other = 1 - lead
  t.equal((await request(`http://127.0.0.1:${w.adminPort}/upstreams/app-2/drain`, { method: 'POST' })).status, 200, 'drained')
  const drains = `${prefix}peers:drains`
  // a few losses, each noticed by both (the lead's check first or its sibling's: their phases differ)
  for (let n = 0; n < 3; n++) {
    const lost = await flushed(redis, lines)
    t.match(lost.find((l) => l['worker'] === lead), { drains: 1 }, 'the lead wrote its part')
  }
  await waitFor(async () => (await redisCli(redis.port, 'HEXISTS', drains, 'app-2')).trim() === '1', 5_000, 'the drain back')
  const leadPid = workerPids(w.proc).find((pid) => slotOf(pid) === lead)!
  process.kill(leadPid, 'SIGKILL') // a crash, seconds after the losses (a roll replaces it as well)
  await waitFor(() => leadOf(lines) === other, 30_000, 'the sibling to lead')
  // a change made on the new lead: it took the lead (and wrote what it owed) before it
  t.equal((await request(`http://127.0.0.1:${w.adminPort}/upstreams/app-0/drain`, { method: 'POST' })).status, 200, 'drained on the new lead')
  await waitFor(async () => (await redisCli(redis.port, 'HEXISTS', drains, 'app-0')).trim() === '1', 5_000, 'that drain recorded')
  t.notOk(lines().some((l) => l['msg'] === LEAD_PART_LOG), 'the new lead did not record the lead\'s part again: its lead had said it did')
})
