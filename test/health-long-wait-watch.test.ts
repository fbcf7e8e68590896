// The long-wait watch (src/health/long-wait-watch.ts): an upstream on which a request has waited
// longer than the probe timeout is suspected (probed now), at most once per probe interval.
// Driven by fake timers and a table of waits: no real time.
import t from 'tap'
import { LongWaitWatch } from '../src/health/long-wait-watch.js'
import { FakeTimers } from './fixtures/timers.js'

const TIMEOUT = 500
const INTERVAL = 2_000

function watched(ids: string[] = ['app-0', 'app-1']) {
  const timers = new FakeTimers()
  const waits = new Map<string, number>()
  const suspected: string[] = []
  const watch = new LongWaitWatch({ timeout: TIMEOUT, interval: INTERVAL }, {
    ids: () => ids, longestWait: (id) => waits.get(id) ?? 0, suspect: (id) => void suspected.push(id), timers, now: () => timers.clock.now(),
  })
  return { timers, waits, suspected, watch }
}

t.test('invalid options are rejected with a precise message', async (t) => {
  const deps = { ids: () => [], longestWait: () => 0, suspect: () => undefined, timers: new FakeTimers(), now: () => 0 }
  t.throws(() => new LongWaitWatch({ timeout: 0, interval: 1 }, deps), /timeout and interval must be > 0, got 0, 1/)
  t.throws(() => new LongWaitWatch({ timeout: 1, interval: Number.NaN }, deps), /got 1, NaN/)
})

t.test('only a wait longer than the probe timeout raises a suspicion', async (t) => {
  const cases: [string, number, string[]][] = [
    ['nothing waiting', 0, []],
    ['a wait under the timeout', TIMEOUT - 1, []],
    ['a wait of exactly the timeout', TIMEOUT, []],
    ['a wait over the timeout', TIMEOUT + 1, ['app-1']],
  ]
  for (const [name, wait, expected] of cases) {
    const { waits, watch } = watched()
    waits.set('app-1', wait)
    t.same(watch.check(), expected, name)
  }
})

t.test('an upstream is suspected at most once per probe interval, each upstream on its own', async (t) => {
  const { timers, waits, suspected, watch } = watched()
  waits.set('app-0', 600)
  t.same(watch.check(), ['app-0'])
  timers.advance(INTERVAL - 1)
  waits.set('app-1', 600)
  t.same(watch.check(), ['app-1'], 'app-0 again within its interval: not suspected; app-1 is')
  timers.advance(1)
  t.same(watch.check(), ['app-0'], 'app-0 a whole interval later: suspected again')
  waits.clear()
  timers.advance(INTERVAL)
  t.same(watch.check(), [], 'nothing waits any more: no suspicion')
  t.same(suspected, ['app-0', 'app-1', 'app-0'])
})

t.test('started, it checks every half probe timeout until stopped', async (t) => {
  const { timers, waits, suspected, watch } = watched()
  watch.start()
  watch.start()
  t.same(timers.pending().map((p) => p.delay), [TIMEOUT / 2], 'one timer, however often started')
  waits.set('app-0', 501)
  timers.advance(TIMEOUT / 2)
  t.same(suspected, ['app-0'], 'a tick suspected app-0')
  t.same(timers.pending().map((p) => p.delay), [TIMEOUT / 2], 'and set the next tick')
  watch.stop()
  t.same(timers.pending(), [], 'stopped: no timer left')
  timers.advance(10 * INTERVAL)
  t.same(suspected, ['app-0'], 'and no more suspicions')
})
