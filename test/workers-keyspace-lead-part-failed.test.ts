// With two workers and `health.shared: redis`, a lead whose writes of the lead's part after a
// FLUSHALL fail (the ACL user may read the keyspace marker but not write the records: the same
// as a timeout or a lost connection for these writes) does not tell its siblings it wrote it:
// SIGKILLed then, its sibling still owes it, leads, and writes it once Redis takes the writes
// (tried again). Before, the lead's word went out whatever its writes did, and nothing was
// written back. A real redis-server, a real primary with two worker processes, real upstreams;
// nothing sleeps.
import t from 'tap'
import { LEAD_PART_FAILED_LOG, LEAD_PART_LOG } from '../src/health/shared-health.js'
import { redisCli } from './fixtures/redis-server.js'
import { slotOf, workerPids } from './fixtures/primary-process.js'
import { waitFor } from './fixtures/wait.js'
import { ejectedAndDrained, flushed, leadOf } from './fixtures/workers-keyspace.js'

t.test("a lead whose writes of its part failed does not say it wrote it: its sibling, leading, writes it once Redis takes writes again", async (t) => {
  const prefix = 'wkf:'
  const { redis, w, ejections: key, drains } = await ejectedAndDrained(t, prefix)
  const { lead, lines } = w
  const other = 1 - lead
  const recorded = (await redisCli(redis.port, 'HGETALL', key)).trim()
  // the marker may be read and created, nothing else written
  await redisCli(redis.port, 'ACL', 'SETUSER', 'default', 'resetkeys', `~${prefix}keyspace*`)
  t.teardown(() => redisCli(redis.port, 'ACL', 'SETUSER', 'default', 'allkeys').then(() => undefined, () => undefined))
  const lost = await flushed(redis, lines)
  t.match(lost.find((l) => l['worker'] === lead), { drains: 1, ejections: 1 }, 'the lead tried to write its part')
  await waitFor(() => lines().some((l) => l['msg'] === LEAD_PART_FAILED_LOG && l['worker'] === lead), 5_000, 'the lead to see its writes fail').catch(() => undefined)
  const leadPid = workerPids(w.proc).find((pid) => slotOf(pid) === lead)!
  process.kill(leadPid, 'SIGKILL') // gone before Redis takes writes again
  await waitFor(() => leadOf(lines) === other, 30_000, 'the sibling to lead')
  await redisCli(redis.port, 'ACL', 'SETUSER', 'default', 'allkeys')
  const back = await waitFor(async () => (await redisCli(redis.port, 'HLEN', key)).trim() === '1' &&
    (await redisCli(redis.port, 'HEXISTS', drains, 'app-2')).trim() === '1', 10_000, 'the ejection and the drain to be back').then(() => true, () => false)
  t.ok(back, "the old lead's ejection and the drain are back in Redis")
  t.equal((await redisCli(redis.port, 'HGETALL', key)).trim(), recorded, 'the ejection under its field, as recorded')
  // the line is written as the writes are sent, and reaches the pipe later (pino writes asynchronously): polled
  await waitFor(() => lines().some((l) => l['msg'] === LEAD_PART_LOG), 5_000, 'the new lead\'s line').catch(() => undefined)
  t.match(lines().find((l) => l['msg'] === LEAD_PART_LOG), { worker: other, drains: 1, ejections: 1 }, 'the new lead recorded the lead\'s part')
})
