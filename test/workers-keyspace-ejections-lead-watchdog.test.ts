// With two workers and `health.shared: redis`, the lead frozen (SIGSTOP) just after a FLUSHALL,
// before its keyspace check noticed it, and killed by the primary's watchdog (10 s of silence,
// not by the test): its sibling leads 10 s and more after it handled the loss as a sibling, and
// records the lead's part then (the drain, the old lead's ejection), for the lead never said it
// wrote it. A 10 s window after the loss (review r2) had passed: nothing was written back. A
// real redis-server, a real primary with two worker processes, real upstreams; nothing sleeps.
import t from 'tap'
import { LEAD_PART_LOG } from '../src/health/shared-health.js'
import { redisCli } from './fixtures/redis-server.js'
import { slotOf, workerPids } from './fixtures/primary-process.js'
import { waitFor } from './fixtures/wait.js'
import { ejectedAndDrained, leadOf } from './fixtures/workers-keyspace.js'

/** Ordering the scenario's events, not waiting for anything (ms): see the retry below. */
const LAG = 800
const FREEZE = 500

t.test('a lead frozen after a FLUSHALL and killed by the watchdog: the drain and its ejection are back', async (t) => {
  const { redis, w, ejections: key, drains } = await ejectedAndDrained(t, 'wkw:')
  const { lead, lines } = w
  const other = 1 - lead
  const leadPid = workerPids(w.proc).find((pid) => slotOf(pid) === lead)!
  // the loss; the lead freezes (a stuck event loop, a stalled host) just after its sibling's
  // check saw it, before its own check did (tried again while the lead's check came first)
  let lostLine: Record<string, unknown> | undefined
  for (let attempt = 0; attempt < 3 && lostLine === undefined; attempt++) {
    const before = lines().length
    await redisCli(redis.port, 'FLUSHALL')
    await waitFor(() => lines().slice(before).some((l) => l['msg'] === 'redis keyspace lost' && l['worker'] === other), 10_000, 'the sibling to see the loss')
    // on a retry the lead's check runs LAG ms after its sibling's: frozen FREEZE ms after the
    // sibling's, before its own, the watchdog kills it over 10 s after the sibling saw the loss
    if (attempt > 0) await new Promise((r) => setTimeout(r, FREEZE))
    process.kill(leadPid, 'SIGSTOP')
    const leadSaw = lines().slice(before).some((l) => l['msg'] === 'redis keyspace lost' && l['worker'] === lead) || (await redisCli(redis.port, 'HEXISTS', drains, 'app-2')).trim() === '1'
    if (!leadSaw) { lostLine = lines().slice(before).find((l) => l['msg'] === 'redis keyspace lost' && l['worker'] === other); break }
    t.comment(`attempt ${attempt}: the lead saw the loss first; its check is moved after its sibling's`)
    // frozen over two of the sibling's checks, then let go just after the second: its overdue check runs then
    for (let n = 0; n < 2; n++) {
      const at = lines().length
      await redisCli(redis.port, 'FLUSHALL')
      await waitFor(() => lines().slice(at).some((l) => l['msg'] === 'redis keyspace lost' && l['worker'] === other), 10_000, 'the sibling to see the loss')
    }
    await new Promise((r) => setTimeout(r, LAG)) // the scenario: the lead's check phase lags its sibling's
    process.kill(leadPid, 'SIGCONT')
    await waitFor(async () => (await redisCli(redis.port, 'HEXISTS', drains, 'app-2')).trim() === '1', 5_000, 'the drain back')
  }
  t.ok(lostLine !== undefined, 'the lead froze before it saw the loss')
  t.teardown(() => { try { process.kill(leadPid, 'SIGKILL') } catch { /* gone */ } })
  // the primary's watchdog kills it (not the test)
  await waitFor(() => lines().some((l) => l['msg'] === 'worker stopped answering; killing it'), 20_000, 'the watchdog')
  await waitFor(() => leadOf(lines) === other, 30_000, 'the sibling to lead')
  const led = lines().filter((l) => l['msg'] === 'worker runs the active health checks').at(-1)!
  t.comment(`sibling lost line at ${String(lostLine!['time'])}, promoted at ${String(led['time'])}: ${Date.parse(String(led['time'])) - Date.parse(String(lostLine!['time']))} ms`)
  const back = await waitFor(async () => (await redisCli(redis.port, 'HLEN', key)).trim() === '1' &&
    (await redisCli(redis.port, 'HEXISTS', drains, 'app-2')).trim() === '1', 5_000, 'back').then(() => true, () => false)
  t.ok(back, 'the old lead\'s ejection and the drain are back in Redis')
  // the line is written as the writes are sent, and reaches the pipe later (pino writes asynchronously): polled
  await waitFor(() => lines().some((l) => l['msg'] === LEAD_PART_LOG), 5_000, 'the new lead\'s line').catch(() => undefined)
  t.ok(lines().some((l) => l['msg'] === LEAD_PART_LOG), 'the new lead recorded the lead\'s part')
})
