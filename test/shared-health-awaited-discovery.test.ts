// A drain applied when its upstream joined (SharedHealth's #awaiting) and undone later because
// its record is gone from Redis ends only the admin's side: whatever drain discovery holds on
// that upstream AT THE UNDO (a terminating pod listed meanwhile, also while the confirming read
// went unanswered) stands, and one discovery held at the join but ended since is not brought
// back (review R5 of the stop that made the confirmation wait 5 s and retry unanswered reads).
// A fake channel whose record the test edits, and timers that run only when the test fires them.
import t from 'tap'
import { waitFor } from './fixtures/wait.js'
import { channel, drainOf, records, startedOn } from './fixtures/shared-health-drains.js'

t.test('a discovery drain made after the join (heard drain pending confirmation) is kept when the heard drain is undone', async (t) => {
  const record = records()
  const c = channel(record)
  const { health, held, shared } = await startedOn(t, c)
  c.hear(drainOf('web-2'))
  health.setUpstreams(['a', 'web-2'])
  await Promise.resolve()
  t.equal(health.state('web-2'), 'draining', 'applied on join, as heard')
  // within the 5 s: discovery lists web-2 as terminating (what app.ts's discovery drain does)
  health.drain('web-2', false, undefined, 'discovery')
  held.fire()
  await waitFor(() => c.reads() >= 2, 2_000, 'the confirming read')
  await new Promise((r) => setImmediate(r))
  t.equal(health.state('web-2'), 'draining', `discovery says web-2 is terminating: still draining (state now: ${health.state('web-2')}, drainingSince: ${health.drainingSince('web-2')})`)
})

t.test('a discovery drain made while the confirming read goes unanswered is kept when the recorded drain is undone', async (t) => {
  const record = records([['web-2', 'stay']])
  let answering = true
  const c = channel(record, () => answering)
  const { health, held, shared } = await startedOn(t, c)
  record.get('drains')!.delete('web-2')
  answering = false
  health.setUpstreams(['a', 'web-2'])
  await Promise.resolve()
  await waitFor(() => held.waits().length === 1, 2_000, 'a retry due')
  // Redis down for a while; meanwhile the pod is terminating: discovery drains it
  health.drain('web-2', false, undefined, 'discovery')
  answering = true
  held.fire()
  await waitFor(() => held.waits().length === 0 && c.reads() >= 3, 2_000, 'answered')
  await new Promise((r) => setImmediate(r))
  t.equal(health.state('web-2'), 'draining', `discovery says web-2 is terminating: still draining (state now: ${health.state('web-2')}, drainingSince: ${health.drainingSince('web-2')})`)
})

t.test('an operator drain through this replica after the join is not undone by the pending confirmation', async (t) => {
  const record = records()
  const c = channel(record)
  const { health, held, shared } = await startedOn(t, c)
  c.hear(drainOf('web-2'))
  health.setUpstreams(['a', 'web-2'])
  await Promise.resolve()
  // what create-admin.ts's drain does
  t.ok(health.drain('web-2', false) && (shared.tell('drain', 'web-2', health.adminDrain('web-2')?.migrate ?? false), true))
  const reads = c.reads()
  while (held.waits().length > 0) held.fire()
  await new Promise((r) => setImmediate(r))
  t.equal(c.reads(), reads, 'no confirming read made')
  t.equal(health.state('web-2'), 'draining', 'operator drain stands')
})

t.test('a discovery drain held at the join and ended by discovery before the confirmation is not brought back by the undo', async (t) => {
  const record = records()
  const c = channel(record)
  const { health, held, shared } = await startedOn(t, c)
  c.hear(drainOf('web-2'))
  health.setUpstreams(['a', 'web-2'])
  health.drain('web-2', false, undefined, 'discovery') // listed draining when it joined (before the microtask)
  await Promise.resolve()
  t.equal(health.state('web-2'), 'draining')
  health.undrain('web-2', 'discovery') // discovery: no longer draining
  held.fire()
  await waitFor(() => c.reads() >= 2, 2_000, 'the confirming read')
  await new Promise((r) => setImmediate(r))
  t.equal(health.state('web-2'), 'healthy', `discovery ended its drain, the heard one is undone: serving (state now: ${health.state('web-2')})`)
})

t.test('a discovery drain made while the confirming read is in flight', async (t) => {
  const record = records([['web-2', 'stay']])
  let gate: (() => void) | null = null
  let holding = false
  const c = channel(record)
  const members = c.ch.members.bind(c.ch)
  c.ch.members = (set) => holding ? new Promise((r) => { gate = () => r(members(set)) }) : members(set)
  const { health, held, shared } = await startedOn(t, c)
  record.get('drains')!.delete('web-2')
  holding = true
  health.setUpstreams(['a', 'web-2'])
  await waitFor(() => gate !== null, 2_000, 'read in flight')
  health.drain('web-2', false, undefined, 'discovery')
  gate!()
  await new Promise((r) => setImmediate(r))
  await new Promise((r) => setImmediate(r))
  t.equal(health.state('web-2'), 'draining', `discovery drain kept (state now: ${health.state('web-2')})`)
})
