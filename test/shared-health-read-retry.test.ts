// The read of the recorded drains that fails (the peer channel did not answer) is made again:
// after 1 s, doubling up to 30 s, at once when the subscription is back, never after stop();
// the drains and undrains that did not reach the channel are sent after the first read that
// succeeds; the failure is said once a spell (a warn), its end once (an info); the start reads
// once, not once more for the first subscription. A fake channel and recorded timers (fired by
// the test): no time passes.
import t from 'tap'
import type { Test } from 'tap'
import { SharedHealth, READ_RETRY_MS, UNREAD_LOG } from '../src/health/shared-health.js'
import { HealthTable } from '../src/health/health-table.js'
import type { PeerChannel } from '../src/peers/peer-channel.js'
import { createLogger } from '../src/observability/logger.js'
import { FakeClock } from './fixtures/clock.js'
import { heldTimers } from './fixtures/timers.js'
import { LogCapture } from './fixtures/log-capture.js'
import { waitFor } from './fixtures/wait.js'


function parts(t: Test) {
  const health = new HealthTable({ active: { healthy_threshold: 2, unhealthy_threshold: 2 }, passive: { consecutive_failures: 3, count_5xx: true, base_ejection: 30_000, max_ejection: 100_000, max_ejection_percent: 50 }, slow_start: 0 }, new FakeClock())
  health.setUpstreams(['a', 'b'])
  const state = { up: true, readable: false, reads: 0, resubscribed: (): void => undefined }
  const record = new Map([['drains', new Map<string, string>()], ['drain-starts', new Map<string, string>()], ['drain-changes', new Map<string, string>()]])
  const channel: PeerChannel = {
    publish: () => Promise.resolve(state.up),
    // the first subscription is in place at once (before the start's read)
    subscribe: (_fn, onSubscribed) => { state.resubscribed = onSubscribed ?? state.resubscribed; onSubscribed?.(); return Promise.resolve() },
    remember: (set, id, value) => {
      if (state.up) { if (value === null) record.get(set)!.delete(id); else record.get(set)!.set(id, value) }
      return Promise.resolve(state.up)
    },
    members: (set) => { state.reads++; return Promise.resolve(state.up && state.readable ? new Map(record.get(set)) : null) },
  }
  const logs = new LogCapture()
  const held = heldTimers()
  const shared = new SharedHealth(channel, health, createLogger('info', logs), undefined, null, null, held.timers)
  t.teardown(() => shared.stop())
  const said = (msg: string): number => logs.lines.filter((l) => l.rec['msg'] === msg).length
  return { health, state, record, held, shared, said, logs }
}

const settle = (): Promise<void> => new Promise((r) => setImmediate(r))

t.test('a failed read is made again after 1 s, doubling up to 30 s, said once; the unsent drain goes after the first read that succeeds', async (t) => {
  const { health, state, record, held, shared, said } = parts(t)
  await shared.start()
  t.equal(state.reads, 4, 'the start reads its four sets once (the three of the drains, the ejections; the first subscription adds no read)')
  t.equal(said(UNREAD_LOG), 1, 'the failed read said once')
  t.same(held.waits(), [READ_RETRY_MS.first], 'made again after 1 s')
  // Redis down: a drain made here is not sent
  state.up = false
  health.drain('b')
  shared.tell('drain', 'b')
  await settle()
  const waits: number[] = []
  for (let i = 0; i < 7; i++) {
    waits.push(held.fire())
    await settle()
  }
  t.same(waits, [1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000], 'the waits double up to 30 s')
  t.equal(said(UNREAD_LOG), 1, 'still said once: one spell of failed reads')
  t.notOk(record.get('drains')!.has('b'), 'nothing sent while the records cannot be read')
  // Redis back, the subscription too; its read fails (a slow reply), then HGETALL answers
  state.up = true
  state.resubscribed()
  await settle()
  t.same(held.waits(), [READ_RETRY_MS.first], 'the subscription back: read at once, and again after 1 s when that fails')
  t.notOk(record.get('drains')!.has('b'), 'not sent after a failed read: which change is newer is not known')
  state.readable = true
  held.fire()
  await waitFor(() => record.get('drains')!.get('b') === 'stay', 1_000, 'the drain of b sent')
  t.same(held.waits(), [], 'no read due once one succeeded')
  t.equal(said('the recorded drains and ejections were read again: applied, and the drains and undrains made here meanwhile sent'), 1, 'the end of the spell said once')
})

t.test('stop() cancels the read due and makes none', async (t) => {
  const { state, held, shared } = parts(t)
  await shared.start()
  t.same(held.waits(), [READ_RETRY_MS.first])
  shared.stop()
  t.same(held.waits(), [], 'the retry cancelled')
  const reads = state.reads
  state.resubscribed()
  await settle()
  t.equal(state.reads, reads, 'a subscription back after stop() reads nothing')
})
