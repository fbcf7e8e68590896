// With two workers and `health.shared: redis`, a worker that read the records at its start and
// whose first keyspace check came after a FLUSHALL its lead had not noticed (a rolling
// replacement, a restart after a crash, the loss in between) compares that check with the marker
// after which its group's lead last had its part in Redis (its primary keeps it), not with its
// own first read: leading once the old lead is gone, it writes back the drain and the old lead's
// ejection. Before, it took its first read as its baseline, owed nothing, and nothing was written
// back. Scripts are refused by the ACL (no worker's check reads the marker) from before the
// replacement starts until after the loss, the lead frozen (SIGSTOP) by then and SIGKILLed
// after. A real redis-server, a real primary with two worker processes, real upstreams; nothing
// sleeps.
import t from 'tap'
import { LEAD_PART_LOG } from '../src/health/shared-health.js'
import { redisCli } from './fixtures/redis-server.js'
import { slotOf, workerPids } from './fixtures/primary-process.js'
import { waitFor } from './fixtures/wait.js'
import { ejectedAndDrained, leadOf } from './fixtures/workers-keyspace.js'

t.test('a worker whose first keyspace check came after a loss its lead had not noticed, leading once that lead is gone, writes back the drain and the old lead\'s ejection', async (t) => {
  const prefix = 'wks:'
  const { redis, w, ejections: key, drains } = await ejectedAndDrained(t, prefix)
  const { lead, lines } = w
  const other = 1 - lead
  const recorded = (await redisCli(redis.port, 'HGETALL', key)).trim()
  const pidOf = (slot: number): number => workerPids(w.proc).find((pid) => slotOf(pid) === slot)!
  const leadPid = pidOf(lead)
  t.teardown(() => { try { process.kill(leadPid, 'SIGKILL') } catch { /* gone */ } })
  t.teardown(() => redisCli(redis.port, 'CLIENT', 'UNPAUSE').then(() => undefined, () => undefined))

  // no marker read from now on until the test allows scripts again (the check is one)
  await redisCli(redis.port, 'ACL', 'SETUSER', 'default', '-eval', '-evalsha')
  t.teardown(() => redisCli(redis.port, 'ACL', 'SETUSER', 'default', '+@all').then(() => undefined, () => undefined))
  // the sibling replaced: its replacement reads the drain and the lead's ejection from Redis as it starts
  const before = lines().length
  process.kill(pidOf(other), 'SIGKILL')
  await waitFor(() => lines().slice(before).some((l) => l['msg'] === 'tether listening' && l['worker'] === other), 30_000, 'the replacement to listen')
  // the loss, after its read and before its first keyspace check; the lead goes before its own check noticed it
  await redisCli(redis.port, 'FLUSHALL')
  process.kill(leadPid, 'SIGSTOP')
  await redisCli(redis.port, 'ACL', 'SETUSER', 'default', '+@all')
  await waitFor(async () => (await redisCli(redis.port, 'EXISTS', `${prefix}keyspace`)).trim() === '1', 5_000, 'a new marker')
  process.kill(leadPid, 'SIGKILL')
  await waitFor(() => leadOf(lines) === other, 30_000, 'the replacement to lead')
  const back = await waitFor(async () => (await redisCli(redis.port, 'HLEN', key)).trim() === '1' &&
    (await redisCli(redis.port, 'HEXISTS', drains, 'app-2')).trim() === '1', 5_000, 'the ejection and the drain to be back').then(() => true, () => false)
  for (const l of lines()) if (/keyspace|lead|worker|drain|health event|recorded/.test(String(l['msg']))) t.comment(JSON.stringify(l).slice(0, 300))
  t.ok(back, "the old lead's ejection and the drain are back in Redis")
  t.equal((await redisCli(redis.port, 'HGETALL', key)).trim(), recorded, 'the ejection under its field, as recorded')
  // its line reaches the pipe some time after it was logged (pino writes asynchronously; another process reads): polled
  await waitFor(() => lines().some((l) => l['msg'] === 'redis keyspace lost' && l['worker'] === other), 5_000, 'the replacement\'s loss line').catch(() => undefined)
  t.ok(lines().some((l) => l['msg'] === 'redis keyspace lost' && l['worker'] === other), 'the replacement saw the loss at its first read')
  t.notOk(lines().some((l) => l['msg'] === LEAD_PART_LOG && l['worker'] === lead), '(the old lead wrote nothing)')
})
