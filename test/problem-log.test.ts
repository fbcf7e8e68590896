// The log lines about lasting problems (src/observability/problem-log.ts): a warn when a problem
// starts or changes, at most one warn per interval while it lasts (with a count), one info when it
// is over, each key on its own. Time from a fake clock.
import t from 'tap'
import { createLogger } from '../src/observability/logger.js'
import { PROBLEM_WARN_INTERVAL_MS, ProblemLog, withoutNumbers } from '../src/observability/problem-log.js'
import { FakeClock } from './fixtures/clock.js'
import { LogCapture } from './fixtures/log-capture.js'

/** pino writes asynchronously to a stream: wait for the lines to arrive. */
const flush = (): Promise<void> => new Promise((r) => setImmediate(r))

function setup(): { clock: FakeClock; capture: LogCapture; log: ProblemLog } {
  const clock = new FakeClock()
  const capture = new LogCapture()
  return { clock, capture, log: new ProblemLog(createLogger('info', capture), clock) }
}

const level = (r: Record<string, unknown>): string => (r['level'] === 40 ? 'warn' : r['level'] === 30 ? 'info' : String(r['level']))

t.test('the same problem reported every second: one warn, then one per interval with the count and duration, and one info at its end', async (t) => {
  const { clock, capture, log } = setup()
  t.equal(PROBLEM_WARN_INTERVAL_MS, 30_000)
  t.equal(log.report('k', 'EEMPTY none ready', { err: 'none ready' }, 'problem'), true, 'the start is logged')
  for (let s = 1; s < 30; s++) {
    clock.advance(1_000)
    t.equal(log.report('k', 'EEMPTY none ready', { err: 'none ready' }, 'problem'), false)
  }
  clock.advance(1_000)
  t.equal(log.report('k', 'EEMPTY none ready', { err: 'none ready' }, 'problem'), true, '30 s after the first warn')
  clock.advance(1_000)
  log.report('k', 'EEMPTY none ready', { err: 'none ready' }, 'problem')
  clock.advance(1_000)
  t.equal(log.resolve('k', { area: 'endpoints' }, 'over'), true)
  t.equal(log.resolve('k', {}, 'over'), false, 'told once')
  await flush()
  t.same(capture.records.map((r) => [level(r), r['msg']]), [['warn', 'problem'], ['warn', 'problem'], ['info', 'over']])
  t.notOk('repeated' in capture.records[0]!, 'the first line has no count')
  t.match(capture.records[1], { err: 'none ready', repeated: 30, for_ms: 30_000 }, '29 unlogged + this one')
  t.match(capture.records[2], { area: 'endpoints', for_ms: 32_000, unlogged: 1 })
})

t.test('a changed problem is logged at once; keys are independent; an end without a problem logs nothing', async (t) => {
  const { clock, capture, log } = setup()
  t.equal(log.resolve('api', {}, 'over'), false)
  log.report('api', 'ECONNREFUSED', { code: 'ECONNREFUSED' }, 'problem')
  clock.advance(1_000)
  t.equal(log.report('api', 'EHTTP 429', { code: 'EHTTP' }, 'problem'), true, 'another code: logged at once')
  t.equal(log.report('endpoints', 'EEMPTY', { code: 'EEMPTY' }, 'problem'), true, 'another key: logged at once')
  t.equal(log.report('api', 'EHTTP 429', { code: 'EHTTP' }, 'problem'), false, 'not reset by the other key')
  clock.advance(1_000)
  log.resolve('api', {}, 'api over')
  await flush()
  t.same(capture.records.map((r) => [level(r), r['code'] ?? null, r['msg']]), [['warn', 'ECONNREFUSED', 'problem'], ['warn', 'EHTTP', 'problem'], ['warn', 'EEMPTY', 'problem'], ['info', null, 'api over']])
  t.match(capture.records[3], { for_ms: 1_000, unlogged: 1 }, 'the duration of the problem as it last was')
})

t.test('a wall clock stepped back neither silences a lasting problem nor makes its duration read 0: durations are monotonic', async (t) => {
  const { clock, capture, log } = setup()
  log.report('k', 'E one', {}, 'problem')
  clock.advance(10_000)
  clock.set(clock.now() - 3_600_000) // NTP steps the wall clock back an hour
  t.equal(log.report('k', 'E one', {}, 'problem'), false, 'the interval is counted in time passed, not in wall-clock readings')
  clock.advance(20_000)
  t.equal(log.report('k', 'E one', {}, 'problem'), true, '30 s after the first warn, not an hour later')
  clock.advance(5_000)
  t.equal(log.resolve('k', {}, 'over'), true)
  await flush()
  t.match(capture.records[1], { repeated: 2, for_ms: 30_000 }, 'the time it lasted, not 0')
  t.match(capture.records[2], { for_ms: 35_000 })
})

t.test('a clock without monotonic time (a plain { now }) still measures durations, never negative', async (t) => {
  const capture = new LogCapture()
  let now = 10_000_000
  const log = new ProblemLog(createLogger('info', capture), { now: () => now })
  log.report('k', 'E one', {}, 'problem')
  now -= 3_600_000
  t.equal(log.report('k', 'E one', {}, 'problem'), true, 'a step back counts as the interval passed')
  now += 3_600_000 + 40_000
  log.resolve('k', {}, 'over')
  await flush()
  t.equal(capture.records[1]?.['for_ms'], 0)
  t.equal(capture.records[2]?.['for_ms'], 40_000)
})

t.test('withoutNumbers: a problem\'s text with its numbers masked, the rest kept', async (t) => {
  t.equal(withoutNumbers('timed out after 512 ms (3 tries, port 6379)'), 'timed out after # ms (# tries, port #)')
  t.equal(withoutNumbers('no numbers here'), 'no numbers here')
})

t.test('retain forgets, without a line, the problems whose key is refused: a forgotten key reported again is warned at once', async (t) => {
  const { clock, capture, log } = setup()
  log.report('web-0', 'http://10.0.0.5:80', {}, 'refused')
  log.report('web-1', 'http://10.0.0.6:80', {}, 'refused')
  t.equal(log.size, 2, 'one problem per key')
  log.retain((key) => key !== 'web-0') // web-0 left the set
  t.equal(log.size, 1, "web-0's problem forgotten")
  clock.advance(1_000)
  t.equal(log.report('web-1', 'http://10.0.0.6:80', {}, 'refused'), false, 'a kept one is still limited')
  t.equal(log.report('web-0', 'http://10.0.0.5:80', {}, 'refused'), true, 'a forgotten one is new again')
  await flush()
  t.same(capture.records.map((r) => level(r)), ['warn', 'warn', 'warn'], 'no line for forgetting')
})
