// Active probes and Tether's own stalls: a probe whose window Tether itself spent stalled (its
// timer fired late, or its event loop ran code for most of it) gets one more `timeout`, once,
// so a healthy upstream is not failed for Tether's pause, while a frozen one still fails, one
// `timeout` later at most. First against real child upstreams with a real synchronous stall of the test
// process (where the checker runs), then the rule itself on fake time with an injected measure
// of the loop's busy time. Waits are on probe events and timers being set, never fixed sleeps.
import t, { type Test } from 'tap'
import type http from 'node:http'
import type { Timers } from '../src/clock.js'
import { ActiveChecker, type ActiveCheckOptions, type ActiveCheckerDeps, type ProbeEvent } from '../src/health/active-checker.js'
import { startChildUpstream, type ChildUpstream } from './fixtures/child-upstream.js'
import { startUpstream } from './fixtures/upstream.js'
import { FakeTimers } from './fixtures/timers.js'
import { once, within } from './fixtures/wait.js'

/** A checker whose reports ([id, ok, timedOut]) and probe events are recorded. */
function recorded(options: ActiveCheckOptions, deps: ActiveCheckerDeps = {}) {
  const reports: [string, boolean, boolean | undefined][] = []
  const events: ProbeEvent[] = []
  const checker = new ActiveChecker(options, { reportActive: (id, ok, timedOut) => void reports.push([id, ok, timedOut]) }, deps)
  checker.onProbe((e) => events.push(e))
  /** The next probe event (the deadline also keeps the loop alive: the checker's timers are unref'd). */
  const next = (deadline = 10_000): Promise<ProbeEvent> => {
    let off = (): void => undefined
    const hit = new Promise<ProbeEvent>((resolve) => { off = checker.onProbe(resolve) })
    return within(hit, deadline, 'the next probe').finally(() => off())
  }
  return { checker, reports, events, next }
}

/** Blocks this process's event loop for `ms` (a synchronous stall, as a long GC or a CPU-bound turn). */
function stall(ms: number): void {
  const end = performance.now() + ms
  while (performance.now() < end) { /* busy */ }
}

async function pod(t: Test, id: string): Promise<ChildUpstream> {
  const p = await startChildUpstream(id)
  t.teardown(() => p.kill())
  return p
}

// long enough that a loaded 2-core host answers a loopback probe well within it
const TIMEOUT = 1_000
const REAL: ActiveCheckOptions = { path: '/healthz', interval: 60_000, timeout: TIMEOUT, jitter: 0 }

t.test("a healthy upstream is not failed when Tether's own process stalls right after the probe started, before its connect completed", async (t) => {
  const app = await pod(t, 'app-0')
  const { checker, reports, next } = recorded(REAL)
  checker.setUpstreams([{ id: 'app-0', url: app.url }])
  const first = next()
  checker.start()
  t.match(await first, { ok: true, stalled: false }, 'the scheduled probe passes; the next one is an interval away')
  const probed = next()
  checker.probeSoon('app-0') // starts the probe now; its connect is issued on the next tick
  stall(1.5 * TIMEOUT)
  const e = await probed
  await checker.stop()
  t.match(e, { id: 'app-0', ok: true, status: 200, code: null, stalled: true }, 'the stalled window did not count: the answer came in the one more given')
  t.same(reports.map((r) => r[1]), [true, true], 'no failure reported')
})

t.test('a frozen upstream (SIGSTOPped: the kernel accepts, nothing answers) is still failed as a timeout while Tether stalls, one timeout after the first', async (t) => {
  const app = await pod(t, 'frozen')
  const { checker, reports, next } = recorded(REAL)
  checker.setUpstreams([{ id: 'frozen', url: app.url }])
  const first = next()
  checker.start()
  t.match(await first, { ok: true }, 'alive at first')
  app.proc.kill('SIGSTOP')
  const probed = next(2 * TIMEOUT + 10_000) // a generous deadline: 2 x timeout and the stall, on a loaded host
  checker.probeSoon('frozen')
  stall(1.5 * TIMEOUT)
  const e = await probed
  await checker.stop()
  t.match(e, { id: 'frozen', ok: false, status: null, code: 'ETIMEDOUT', stalled: true }, 'one more window, then the timeout counts')
  t.same(reports.at(-1), ['frozen', false, true], 'reported as a timeout')
})

// The rule on fake time: `busy` is what performance.eventLoopUtilization().active would say.
const FAKE: ActiveCheckOptions = { path: '/healthz', interval: 60_000, timeout: 400, jitter: 0 }

/** A hanging upstream in this process (accepts, reads, never answers), a fake-timed checker and its busy gauge. */
async function fakeTimed(t: Test, fake = new FakeTimers(), timers: Timers = fake) {
  const up = await startUpstream('hang', () => { /* never answers */ })
  t.teardown(() => up.close())
  let busy = 0
  const probe = recorded(FAKE, { timers, random: () => 0, clock: fake.clock, busy: () => busy })
  probe.checker.setUpstreams([{ id: 'hang', url: up.url }])
  probe.checker.start()
  const arrived = once<[http.IncomingMessage]>(up.server, 'request', 5_000, 'the probe at the upstream')
  fake.advance(0)
  await arrived
  t.teardown(() => probe.checker.stop())
  return { ...probe, fake, run: (ms: number) => { busy += ms } }
}

const windows = (fake: FakeTimers): number => fake.pending(FAKE.timeout).length

t.test('a window Tether spent running code (a saturated loop) gets one more timeout; a Tether stalled for good still fails the upstream after it', async (t) => {
  const { fake, events, reports, next, run } = await fakeTimed(t)
  run(FAKE.timeout) // the loop ran code the whole window
  fake.advance(FAKE.timeout)
  await fake.settled(() => windows(fake) === 1, 5_000, 'one more window to be set')
  t.same(events, [], 'no verdict yet')
  run(FAKE.timeout) // and the next one too
  const failed = next()
  fake.advance(FAKE.timeout)
  t.match(await failed, { ok: false, code: 'ETIMEDOUT', stalled: true, duration: 2 * FAKE.timeout })
  t.same(reports, [['hang', false, true]], 'a timeout, after exactly one more window')
  t.equal(windows(fake), 0, 'no third window')
})

t.test('a timer that fired half a timeout late (the process was stopped or not scheduled) gets one more timeout', async (t) => {
  const fake = new FakeTimers()
  // every probe timer fires LATE ms after its time: the clock moves on before its callback runs
  const LATE = FAKE.timeout / 2
  const late: Timers = {
    setTimeout: (fn, ms) => fake.setTimeout(ms === FAKE.timeout ? () => { fake.clock.advance(LATE); fn() } : fn, ms),
    clearTimeout: (h) => fake.clearTimeout(h),
  }
  const { events, reports, next } = await fakeTimed(t, fake, late)
  fake.advance(FAKE.timeout)
  await fake.settled(() => windows(fake) === 1, 5_000, 'one more window to be set')
  t.same(events, [], 'no verdict yet')
  const failed = next()
  fake.advance(FAKE.timeout)
  t.match(await failed, { ok: false, code: 'ETIMEDOUT', stalled: true, duration: 2 * (FAKE.timeout + LATE) })
  t.same(reports, [['hang', false, true]])
})

t.test('a window Tether was mostly free for decides at once: a frozen upstream fails after one timeout', async (t) => {
  for (const busy of [0, FAKE.timeout / 2 - 1]) {
    const { fake, reports, next, run, checker } = await fakeTimed(t)
    run(busy)
    const failed = next()
    fake.advance(FAKE.timeout)
    t.match(await failed, { ok: false, code: 'ETIMEDOUT', stalled: false, duration: FAKE.timeout }, `loop busy ${busy} ms of ${FAKE.timeout}`)
    t.same(reports, [['hang', false, true]])
    t.equal(windows(fake), 0, 'no other window')
    await checker.stop()
  }
})

t.test('stop() during the extra window leaves nothing behind and reports nothing', async (t) => {
  const { fake, events, reports, run, checker } = await fakeTimed(t)
  run(FAKE.timeout)
  fake.advance(FAKE.timeout)
  await fake.settled(() => windows(fake) === 1, 5_000, 'one more window to be set')
  await checker.stop()
  t.same(fake.pending(), [], 'no timer left')
  t.same(events, [])
  t.same(reports, [])
})
