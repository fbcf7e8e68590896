// Drains kept for an upstream id not in this replica's set (SharedHealth's #awaiting), applied
// when the id joins, are confirmed by a read of the record: a HEARD one too, once its sender has
// surely recorded it (HEARD_RECORDED_MS after it was heard), else a heard drain whose sender's
// upstream left its set (record dropped, nothing told) drained, on this replica alone, a new pod
// that reuses the id later (a StatefulSet name), which a replica started then does not drain;
// and a confirming read not answered is made again (READ_RETRY_MS back-off), not taken as "stands".
// A fake channel whose record the test edits, and timers that run only when the test fires them.
import t from 'tap'
import { waitFor } from './fixtures/wait.js'
import { heldTimers } from './fixtures/timers.js'
import { channel, drainOf, records, startedOn, table } from './fixtures/shared-health-drains.js'
import { createLogger } from '../src/observability/logger.js'
import { HEARD_RECORDED_MS, READ_RETRY_MS, SharedHealth } from '../src/health/shared-health.js'

t.test('a heard drain of an id not in the set is undone after the join once a read (after its sender surely recorded it) finds no record', async (t) => {
  const record = records()
  const c = channel(record)
  const { health, held, shared } = await startedOn(t, c)
  // replica A drains web-2 (preStop) while web-2 is out of this replica's list; web-2 then
  // leaves A's set: A forgets the drain and its record, and tells nobody (the record stays empty)
  c.hear(drainOf('web-2'))
  // later a NEW pod web-2 (StatefulSet) joins this replica's set: drained at once, as heard
  health.setUpstreams(['a', 'web-2'])
  await Promise.resolve()
  t.equal(health.state('web-2'), 'draining', 'applied on join, as heard')
  const readsBefore = c.reads()
  t.same(held.waits().length, 1, 'one confirming read due')
  t.ok(held.waits()[0]! > 0 && held.waits()[0]! <= HEARD_RECORDED_MS, `not read at once (the sender records after it publishes): after ${held.waits()[0]} ms`)
  t.equal(c.reads(), readsBefore, 'no read yet')
  held.fire()
  await waitFor(() => health.state('web-2') === 'healthy', 2_000, 'undone after the read')
  // a replica started now, same Redis contents (no record), agrees
  const fresh = table()
  fresh.setUpstreams(['a', 'web-2'])
  const other = new SharedHealth(channel(record).ch, fresh, createLogger('silent'), undefined, null, null, heldTimers().timers)
  await other.start()
  t.equal(fresh.state('web-2'), 'healthy', 'a replica started now: the new pod is not drained either')
})

t.test('a heard drain of an id not in the set stands after the join when its record is there (the lagging worker)', async (t) => {
  const record = records()
  const c = channel(record)
  const { health, held, shared } = await startedOn(t, c)
  c.hear(drainOf('web-2'))
  health.setUpstreams(['a', 'web-2'])
  await Promise.resolve()
  t.equal(health.state('web-2'), 'draining', 'applied on join')
  // the sender records it right after it publishes
  record.get('drains')!.set('web-2', 'stay')
  const readsBefore = c.reads()
  held.fire()
  await waitFor(() => c.reads() > readsBefore, 2_000, 'the confirming read')
  await new Promise((r) => setImmediate(r))
  t.equal(health.state('web-2'), 'draining', 'stands: recorded')
  t.same(held.waits(), [], 'nothing more due')
})

t.test('a recorded drain applied on join is read again when the confirming read is not answered, and undone when the record is gone', async (t) => {
  const record = records([['web-2', 'stay']])
  let answering = true
  const c = channel(record, () => answering)
  const { health, held, shared } = await startedOn(t, c)
  record.get('drains')!.delete('web-2') // web-2 left the other replica's set: record forgotten
  answering = false // Redis slow/down for the confirming read
  health.setUpstreams(['a', 'web-2'])
  await Promise.resolve()
  t.equal(health.state('web-2'), 'draining', 'applied on join')
  await waitFor(() => held.waits().length === 1, 2_000, 'a retry due after the unanswered read')
  t.same(held.waits(), [READ_RETRY_MS.first], 'after the first retry wait')
  t.equal(held.fire(), READ_RETRY_MS.first)
  await waitFor(() => held.waits().length === 1, 2_000, 'another retry due')
  t.same(held.waits(), [READ_RETRY_MS.first * 2], 'doubled')
  t.equal(health.state('web-2'), 'draining', 'stands while unread')
  answering = true
  held.fire()
  await waitFor(() => health.state('web-2') === 'healthy', 2_000, 'undone')
  t.same(held.waits(), [], 'nothing more due')
})

t.test('stop() cancels a confirming read due', async (t) => {
  const c = channel(records())
  const { health, held, shared } = await startedOn(t, c)
  c.hear(drainOf('web-2'))
  health.setUpstreams(['a', 'web-2'])
  await Promise.resolve()
  t.equal(held.waits().length, 1)
  shared.stop()
  t.same(held.waits(), [], 'cancelled')
})
