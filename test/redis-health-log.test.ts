// The log lines about Redis nodes: a warn with the address and the error when a node goes down,
// at most one warn per node per interval while it stays down or flaps, an info line when it is
// up again. Fed node events as the connection emits them; time from a fake clock.
import t from 'tap'
import { createLogger } from '../src/observability/logger.js'
import { REDIS_WARN_INTERVAL_MS, RedisHealthLog } from '../src/observability/redis-health-log.js'
import type { RedisNodeEvent } from '../src/redis/connection.js'
import type { RedisNodeHealth } from '../src/redis/node-health.js'
import { FakeClock } from './fixtures/clock.js'
import { LogCapture } from './fixtures/log-capture.js'

const shard = (address: string, status: 'up' | 'down', lastError: string | null = null): RedisNodeHealth => ({
  address, role: 'shard', slots: '0-5460', status, calls: 20, failed: status === 'down' ? 12 : 0, lastError, writesRefused: null, writesRefusedError: null, full: false,
  summary: `redis shard ${address} (slots 0-5460) ...`,
})
const ev = (kind: RedisNodeEvent['kind'], node: RedisNodeHealth): RedisNodeEvent => ({ kind, node })

function setup(): { clock: FakeClock; capture: LogCapture; log: RedisHealthLog; lines: () => [string, unknown, string][] } {
  const clock = new FakeClock()
  const capture = new LogCapture()
  const log = new RedisHealthLog(createLogger('info', capture), clock)
  const lines = (): [string, unknown, string][] => capture.records.map((r) => [r['level'] === 40 ? 'warn' : r['level'] === 30 ? 'info' : String(r['level']), r['node'], String(r['msg'])])
  return { clock, capture, log, lines }
}

/** pino writes asynchronously to a stream: wait for the lines to arrive. */
const flush = (): Promise<void> => new Promise((r) => setImmediate(r))

t.test('a node going down is one warn with its address, slots and error; its recovery one info', async (t) => {
  const { log, capture, lines } = setup()
  log.observe(ev('up', shard('127.0.0.1:7001', 'up')))
  log.observe(ev('down', shard('127.0.0.1:7001', 'down', 'connect ECONNREFUSED 127.0.0.1:7001')))
  log.observe(ev('up', shard('127.0.0.1:7001', 'up')))
  await flush()
  t.same(lines(), [
    ['info', '127.0.0.1:7001', 'redis node up'],
    ['warn', '127.0.0.1:7001', 'redis node down: calls for its keys fail (checkpoints, shared affinity), routing unaffected'],
    ['info', '127.0.0.1:7001', 'redis node up again'],
  ])
  t.match(capture.records[1], { node: '127.0.0.1:7001', role: 'shard', slots: '0-5460', error: 'connect ECONNREFUSED 127.0.0.1:7001', failed: 12, calls: 20 })
  t.match(capture.records[2], { down_for_ms: 0 })
})

t.test('while a node stays down, one warn per interval, whatever the number of failures', async (t) => {
  const { log, clock, capture, lines } = setup()
  t.equal(REDIS_WARN_INTERVAL_MS, 30_000)
  log.observe(ev('down', shard('127.0.0.1:7001', 'down', 'no reply within 50 ms')))
  for (let s = 1; s < 30; s++) {
    clock.advance(1_000)
    log.observe(ev('still_down', shard('127.0.0.1:7001', 'down', 'no reply within 50 ms')))
  }
  await flush()
  t.equal(capture.records.length, 1, '29 s of failures: still the one warn')
  clock.advance(1_000)
  log.observe(ev('still_down', shard('127.0.0.1:7001', 'down', 'no reply within 50 ms')))
  clock.advance(1_000)
  log.observe(ev('still_down', shard('127.0.0.1:7001', 'down', 'no reply within 50 ms')))
  await flush()
  t.same(lines().map((l) => l[2]), ['redis node down: calls for its keys fail (checkpoints, shared affinity), routing unaffected', 'redis node still down'])
  t.match(capture.records[1], { level: 40, node: '127.0.0.1:7001', error: 'no reply within 50 ms', down_for_ms: 30_000 })
})

t.test('each node has its own interval', async (t) => {
  const { log, lines } = setup()
  log.observe(ev('down', shard('127.0.0.1:7001', 'down', 'e1')))
  log.observe(ev('down', shard('127.0.0.1:7002', 'down', 'e2')))
  log.observe(ev('still_down', shard('127.0.0.1:7001', 'down', 'e1')))
  await flush()
  t.same(lines().map((l) => [l[0], l[1]]), [['warn', '127.0.0.1:7001'], ['warn', '127.0.0.1:7002']])
})

t.test('a flapping node is warned about once per interval; its unannounced down spells are counted in the next warn', async (t) => {
  const { log, clock, capture, lines } = setup()
  const a = '127.0.0.1:7001'
  log.observe(ev('up', shard(a, 'up')))
  for (let i = 0; i < 5; i++) {
    log.observe(ev('down', shard(a, 'down', 'timeout')))
    clock.advance(2_000)
    log.observe(ev('up', shard(a, 'up')))
    clock.advance(2_000)
  }
  await flush()
  t.same(lines().map((l) => l[0] + ' ' + l[2]), [
    'info redis node up',
    'warn redis node down: calls for its keys fail (checkpoints, shared affinity), routing unaffected',
    'info redis node up again',
  ], 'the first spell is told; the next four (within 30 s) are not, nor their ends')
  clock.advance(30_000)
  log.observe(ev('down', shard(a, 'down', 'timeout')))
  await flush()
  t.match(capture.records.at(-1), { level: 40, node: a, unannounced_down_spells: 4 })
})

t.test('a node that left the slot map is told once, and only if it was logged before', async (t) => {
  const { log, lines } = setup()
  log.observe(ev('removed', shard('10.0.0.9:7000', 'down')))
  log.observe(ev('down', shard('127.0.0.1:7001', 'down', 'gone')))
  log.observe(ev('removed', shard('127.0.0.1:7001', 'down')))
  log.observe(ev('removed', shard('127.0.0.1:7001', 'down')))
  await flush()
  t.same(lines().map((l) => [l[0], l[1], l[2]]), [
    ['warn', '127.0.0.1:7001', 'redis node down: calls for its keys fail (checkpoints, shared affinity), routing unaffected'],
    ['info', '127.0.0.1:7001', 'redis node left the slot map (its slots moved to another node)'],
  ])
})

t.test('a wall clock stepped back (NTP) neither holds a warn back nor makes a down spell read 0 ms: intervals are on monotonic time', async (t) => {
  const { clock, capture, log } = setup()
  const a = '127.0.0.1:7001'
  log.observe(ev('down', shard(a, 'down', 'timeout')))
  clock.advance(REDIS_WARN_INTERVAL_MS)
  clock.set(clock.now() - 3_600_000) // NTP steps the wall clock back an hour
  log.observe(ev('still_down', shard(a, 'down', 'timeout')))
  await flush()
  t.match(capture.records.at(-1), { level: 40, msg: 'redis node still down', down_for_ms: REDIS_WARN_INTERVAL_MS }, 'the still-down warn is written, with how long it has been down')
  clock.advance(5_000)
  log.observe(ev('up', shard(a, 'up')))
  await flush()
  t.match(capture.records.at(-1), { level: 30, down_for_ms: REDIS_WARN_INTERVAL_MS + 5_000 }, 'the time it was down, not 0')
  clock.advance(REDIS_WARN_INTERVAL_MS)
  log.observe(ev('down', shard(a, 'down', 'refused')))
  await flush()
  t.match(capture.records.at(-1), { level: 40, error: 'refused' }, 'a new down spell an interval later is warned of')
})

t.test('a full node is one warn (not a down one) and an info once it has room; a flapping one at most one warn per interval', async (t) => {
  const { log, clock, capture, lines } = setup()
  const a = '127.0.0.1:7001'
  const oom = "OOM command not allowed when used memory > 'maxmemory'."
  const full = { ...shard(a, 'up', oom), full: true, writesRefused: 'oom' as const, writesRefusedError: oom }
  log.observe(ev('up', shard(a, 'up')))
  log.observe(ev('writes_refused', full))
  clock.advance(2_000)
  log.observe(ev('writes_taken', shard(a, 'up')))
  clock.advance(1_000)
  log.observe(ev('writes_refused', full))
  log.observe(ev('writes_taken', shard(a, 'up')))
  clock.advance(REDIS_WARN_INTERVAL_MS)
  log.observe(ev('writes_refused', full))
  await flush()
  const FULL = 'redis node full: it refuses writes (OOM: maxmemory reached under maxmemory-policy noeviction); new checkpoints and shared bindings are not stored, reads (rehydration), renewals and routing unaffected'
  t.same(lines(), [
    ['info', a, 'redis node up'],
    ['warn', a, FULL],
    ['info', a, 'redis node has room again: writes are taken'],
    ['warn', a, FULL],
  ], 'the second spell, within the interval, is not told (nor its end); the third is')
  t.match(capture.records[1], { node: a, role: 'shard', slots: '0-5460', error: oom })
  t.match(capture.records[2], { full_for_ms: 2_000 })
})

t.test('a node that refuses writes for MISCONF or NOREPLICAS: one warn naming the reason and what to do, again when the reason changes; one info once it takes writes', async (t) => {
  const { log, clock, capture, lines } = setup()
  const a = '127.0.0.1:7001'
  const misconf = "MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist to disk."
  const refusing = (reason: 'misconf' | 'noreplicas', error: string): RedisNodeHealth => ({ ...shard(a, 'up', error), writesRefused: reason, writesRefusedError: error })
  log.observe(ev('up', shard(a, 'up')))
  log.observe(ev('writes_refused', refusing('noreplicas', 'NOREPLICAS Not enough good replicas to write.')))
  clock.advance(1_000)
  log.observe(ev('writes_refused', refusing('misconf', misconf)))
  clock.advance(1_000)
  log.observe(ev('writes_taken', shard(a, 'up')))
  clock.advance(1_000)
  log.observe(ev('writes_refused', refusing('misconf', misconf)))
  log.observe(ev('writes_taken', shard(a, 'up')))
  await flush()
  t.same(lines(), [
    ['info', a, 'redis node up'],
    ['warn', a, 'redis node refuses writes (NOREPLICAS: fewer good replicas than min-replicas-to-write; bring its replicas back (in sync within min-replicas-max-lag) or lower min-replicas-to-write); checkpoints and shared bindings are neither stored nor renewed (what active users hold expires after affinity.idle_timeout), reads (rehydration) and routing unaffected'],
    ['warn', a, 'redis node refuses writes (MISCONF: the last RDB save failed; fix the disk (free space, the permissions of its dir: see its log) or set stop-writes-on-bgsave-error no); checkpoints and shared bindings are neither stored nor renewed (what active users hold expires after affinity.idle_timeout), reads (rehydration) and routing unaffected'],
    ['info', a, 'redis node takes writes again (MISCONF ended): checkpoints and shared bindings are stored again'],
  ], 'a new reason within a spell is warned; a second MISCONF spell within the interval is not (nor its end)')
  t.match(capture.records[1], { reason: 'noreplicas', error: /^NOREPLICAS/ })
  t.match(capture.records[2], { reason: 'misconf', error: misconf })
  t.match(capture.records[3], { reason: 'misconf', refused_for_ms: 2_000 })
  t.notOk('full_for_ms' in capture.records[3]!, 'full_for_ms only after a full spell')
})

t.test('a node whose reason goes back and forth (full and MISCONF) warns at most once per reason per interval', async (t) => {
  const { log, clock, lines } = setup()
  const a = '127.0.0.1:7001'
  const misconf = "MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist to disk."
  const oom = "OOM command not allowed when used memory > 'maxmemory'."
  log.observe(ev('up', shard(a, 'up')))
  for (let i = 0; i < 4; i++) {
    log.observe(ev('writes_refused', { ...shard(a, 'up', oom), writesRefused: 'oom', writesRefusedError: oom, full: true }))
    clock.advance(250)
    log.observe(ev('writes_refused', { ...shard(a, 'up', misconf), writesRefused: 'misconf', writesRefusedError: misconf }))
    clock.advance(250)
  }
  await flush()
  t.same(lines().map((l) => l[0]), ['info', 'warn', 'warn'], 'one warn for each reason, not one per change')
  clock.advance(30_000)
  log.observe(ev('writes_refused', { ...shard(a, 'up', oom), writesRefused: 'oom', writesRefusedError: oom, full: true }))
  await flush()
  t.same(lines().map((l) => l[0]), ['info', 'warn', 'warn', 'warn'], 'and again once the interval passed')
})

t.test('a writes-refused warn line has its own reason\'s reply, not the last call\'s (full and MISCONF: an OOM next to reason misconf)', async (t) => {
  const { log, capture } = setup()
  const a = '127.0.0.1:7001'
  const misconf = "MISCONF Errors writing to the AOF file: No space left on device"
  const oom = "OOM command not allowed when used memory > 'maxmemory'."
  log.observe(ev('up', shard(a, 'up')))
  log.observe(ev('writes_refused', { ...shard(a, 'up', oom), writesRefused: 'misconf', writesRefusedError: misconf }))
  log.observe(ev('writes_refused', { ...shard('127.0.0.1:7002', 'up', misconf), writesRefused: 'oom', writesRefusedError: oom, full: true }))
  await flush()
  t.match(capture.records[1], { reason: 'misconf', error: misconf, msg: /^redis node refuses writes \(MISCONF: a write to its append-only file failed;/ }, 'MISCONF\'s reply, and the cause told from it (AOF)')
  t.match(capture.records[2], { reason: 'oom', error: oom })
})
