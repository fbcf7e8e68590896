// The ejections recorded for replicas that did not hear the `down` (see SharedHealth's
// EJECTIONS): one lost on pub/sub is applied once the subscription is back, the sender removes
// its record when its ejection ends sooner, a reader skips and drops an ended one, waits for an
// id not in its set, refuses another pod's, keeps within max_ejection_percent (timed ones
// first), applies and counts each record once however often it reads it, tolerates a skew of
// SKEW_TOLERANCE_MS between replica clocks and drops a record impossible beyond it, and a failed
// read of them is made again (each kind's warn said once a spell). Replicas over an in-memory
// peer channel (a record of named sets, a broadcast that can lose messages), health tables on
// fake clocks (one for all but where a test skews one; records carry ends by them): no time
// passes but what the test advances.
import t, { type Test } from 'tap'
import { HealthTable } from '../src/health/health-table.js'
import { EJECTIONS_UNREAD_LOG, LEAD_PART_LOG, READ_RETRY_MS, SharedHealth, SKEW_TOLERANCE_MS, SKEWED_LOG, UNREAD_LOG, type AddressesOf } from '../src/health/shared-health.js'
import { createLogger } from '../src/observability/logger.js'
import type { PeerChannel } from '../src/peers/peer-channel.js'
import { FakeClock } from './fixtures/clock.js'
import { LogCapture } from './fixtures/log-capture.js'
import { heldTimers } from './fixtures/timers.js'
import { waitFor } from './fixtures/wait.js'

const IDS = ['a', 'b', 'c', 'd', 'e']
const BASE = 30_000

/**
 * The peers' Redis: named sets, and a broadcast that loses what is sent while `lost`; and each
 * group of workers' own channel (the primary's IPC: a broadcast to the group's other workers).
 */
function world(): { record: Map<string, Map<string, string>>; net: { lost: boolean; unreadable: Set<string>; held: (() => void)[] | null; unwritable: boolean }; channel: () => PeerChannel & { again: () => void }; relay: (group: string) => PeerChannel } {
  const record = new Map<string, Map<string, string>>()
  // `held`: the groups' channels hold what is sent (a primary slow to pass it on) until the test delivers it
  // `unwritable`: writes to the named sets fail (a command timed out, the connection lost)
  const net = { lost: false, unreadable: new Set<string>(), held: null as (() => void)[] | null, unwritable: false }
  const subs = new Set<(m: string) => void>()
  const groups = new Map<string, Set<(m: string) => void>>()
  const set = (name: string): Map<string, string> => record.get(name) ?? record.set(name, new Map()).get(name)!
  const channel = (): PeerChannel & { again: () => void } => {
    let again: () => void = () => undefined
    let mine: (m: string) => void = () => undefined
    return {
      publish: (m) => { if (!net.lost) for (const s of subs) if (s !== mine) s(m); return Promise.resolve(true) },
      subscribe: (fn, onSubscribed) => { mine = fn; subs.add(fn); again = onSubscribed ?? again; return Promise.resolve() },
      remember: (name, id, value) => {
        if (net.unwritable) return Promise.resolve(false)
        if (value === null) set(name).delete(id); else set(name).set(id, value)
        return Promise.resolve(true)
      },
      members: (name) => Promise.resolve(net.unreadable.has(name) ? null : new Map(set(name))),
      again: () => again(),
    }
  }
  const relay = (group: string): PeerChannel => {
    const members = groups.get(group) ?? groups.set(group, new Set()).get(group)!
    let mine: (m: string) => void = () => undefined
    return {
      publish: (m) => {
        const deliver = (): void => { for (const s of members) if (s !== mine) s(m) }
        if (net.held !== null) net.held.push(deliver)
        else deliver()
        return Promise.resolve(true)
      },
      subscribe: (fn) => { mine = fn; members.add(fn); return Promise.resolve() },
      remember: () => Promise.resolve(true),
      members: () => Promise.resolve(new Map()),
    }
  }
  return { record, net, channel, relay }
}

interface Replica { readonly health: HealthTable; readonly shared: SharedHealth; readonly channel: ReturnType<ReturnType<typeof world>['channel']>; readonly logs: LogCapture }

/**
 * A replica on `w` and `clock` (active checks on: a refusal ends at passed probes), started;
 * with `group`, a worker of that group, on its group's channel too (not its lead: no active
 * `down` of another group is relayed in these tests).
 */
async function replica(t: Test, w: ReturnType<typeof world>, clock: FakeClock, opts: { ids?: string[]; percent?: number; addressesOf?: AddressesOf; timers?: ReturnType<typeof heldTimers>['timers']; group?: string } = {}): Promise<Replica> {
  const health = new HealthTable({
    active: { healthy_threshold: 2, unhealthy_threshold: 2 },
    passive: { consecutive_failures: 1, count_5xx: true, base_ejection: BASE, max_ejection: 300_000, max_ejection_percent: opts.percent ?? 100 },
    slow_start: 0,
  }, clock)
  health.setUpstreams(opts.ids ?? IDS)
  const channel = w.channel()
  const logs = new LogCapture()
  const relay = opts.group === undefined ? null : { channel: w.relay(opts.group), lead: () => false }
  const shared = new SharedHealth(channel, health, createLogger('info', logs), opts.addressesOf, opts.group ?? null, relay, opts.timers, () => clock.now())
  t.teardown(() => shared.stop())
  await shared.start()
  return { health, shared, channel, logs }
}

/** The recorded ejections, parsed, by field. */
const recorded = (w: ReturnType<typeof world>): Map<string, Record<string, unknown>> => new Map([...(w.record.get('ejections') ?? new Map<string, string>())].map(([f, v]) => [f, JSON.parse(v) as Record<string, unknown>]))

t.test('a down lost on pub/sub is applied once the subscription is back, for what is left of it, from the record', async (t) => {
  const w = world()
  const clock = new FakeClock(Date.now())
  const one = await replica(t, w, clock)
  const two = await replica(t, w, clock)
  w.net.lost = true // #2's subscription is down meanwhile
  one.health.reportPassive('c', 'server_error')
  const end = one.health.ejection('c')!.until
  t.equal(two.health.state('c'), 'healthy', '#2 did not hear the down')
  t.match([...recorded(w).values()], [{ id: 'c', ejectedFor: BASE, ejections: 1, reason: '5xx' }], 'recorded with its length, count and reason')
  const [value] = recorded(w).values()
  t.equal(value!.until, end, 'and its end by the wall clock')
  clock.advance(5_000) // #2's subscription is back 5 s later: for what is left of it
  w.net.lost = false
  two.channel.again()
  await waitFor(() => two.health.state('c') === 'ejected', 5_000, '#2 to apply the recorded ejection')
  t.equal(two.health.ejection('c')!.until, end, 'until the moment #1 ends it')
  t.equal(two.health.ejection('c')!.reason, '5xx', 'for the reason #1 found')
  t.equal(two.health.snapshot().find((r) => r.id === 'c')!.timesEjected, 1, "and counted as #1's first ejection")
  t.ok(two.logs.lines.some((l) => l.rec['msg'] === 'health event from another Tether replica' && l.rec['recorded'] === true), 'logged as read from the record')
  clock.advance(end - clock.now())
  t.same([one.health.state('c'), two.health.state('c')], ['healthy', 'healthy'], 'in again on both at its end')
  await waitFor(() => recorded(w).size === 0, 5_000, "#1's record removed once its ejection ended")
})

t.test('the sender removes its record when its ejection ends sooner (a refusal ended by passed probes, the upstream gone from its set) or a newer down replaces it', async (t) => {
  const w = world()
  const clock = new FakeClock(Date.now())
  const one = await replica(t, w, clock)
  one.health.reportPassive('c', 'connect_refused')
  t.match([...recorded(w).values()], [{ id: 'c', reason: 'refused', refused: true }], 'a refusal recorded as one (each reader ends it at its own passed probes)')
  const late = await replica(t, w, clock)
  t.same(late.health.ejection('c'), { reason: 'refused', until: late.health.ejection('c')!.until, ends: 'probes', passesLeft: 2 }, 'a replica started now ejects it until its own probes pass')
  one.health.reportActive('c', true)
  one.health.reportActive('c', true)
  t.equal(one.health.state('c'), 'healthy', 'passed probes ended it on #1')
  await waitFor(() => recorded(w).size === 0, 5_000, 'the record of the ended refusal removed')
  t.equal((await replica(t, w, clock)).health.state('c'), 'healthy', 'a replica started after that does not eject c')

  one.health.reportPassive('b', 'server_error')
  t.equal(recorded(w).size, 1)
  one.health.setUpstreams(IDS.filter((id) => id !== 'b'))
  await waitFor(() => recorded(w).size === 0, 5_000, 'the record of b removed when b left the set')

  one.health.reportPassive('d', 'server_error')
  const [first] = recorded(w).keys()
  clock.advance(BASE)
  one.health.reportPassive('d', 'server_error') // its second ejection: 60 s
  await waitFor(() => recorded(w).size === 1 && !recorded(w).has(first!), 5_000, 'the newer down replaces the record of the earlier one')
  t.match([...recorded(w).values()], [{ id: 'd', ejectedFor: 2 * BASE, ejections: 2 }])
})

t.test('a reader skips an ended record (dropped once it ended more than the skew tolerance ago), leaves alone a value that is no record, ignores another pod\'s and an impossible one, and applies a running one', async (t) => {
  const w = world()
  const clock = new FakeClock(Date.now())
  const now = clock.now()
  const ejections = new Map([
    ['gone:1', JSON.stringify({ id: 'a', until: now - SKEW_TOLERANCE_MS - 1, ejectedFor: BASE, ejections: 1 })],
    ['recent:1', JSON.stringify({ id: 'a', until: now - 1, ejectedFor: BASE, ejections: 1 })],
    ['other:1', 'not json'],
    ['other:2', JSON.stringify({ id: 'b', until: now + 20_000, ejectedFor: 0, ejections: 1 })],
    ['pod:1', JSON.stringify({ id: 'c', until: now + 20_000, ejectedFor: BASE, ejections: 1, url: 'http://10.0.0.9:80', uid: 'old' })],
    ['ahead:1', JSON.stringify({ id: 'd', until: now + 3_600_000, ejectedFor: 20_000, ejections: 1, reason: 'timeout' })],
    ['live:1', JSON.stringify({ id: 'e', until: now + 20_000, ejectedFor: BASE, ejections: 2, reason: '5xx', url: 'http://10.0.0.5:80' })],
  ])
  w.record.set('ejections', ejections)
  const r = await replica(t, w, clock, { addressesOf: (id) => ({ url: 'http://10.0.0.5:80', uid: id === 'c' ? 'new' : 'x' }) })
  t.same(IDS.map((id) => r.health.state(id)), ['healthy', 'healthy', 'healthy', 'healthy', 'ejected'], 'the ended ones, the values that are no record, the other pod\'s (another uid) and the impossible one are not applied')
  t.notOk(w.record.get('ejections')!.has('gone:1'), 'one ended more than the skew tolerance ago is dropped')
  t.ok(w.record.get('ejections')!.has('recent:1'), 'one ended less long ago is kept (this clock may be ahead: it may run on the others\')')
  t.ok(w.record.get('ejections')!.has('other:1') && w.record.get('ejections')!.has('other:2'), 'values that are no record are left alone (another version\'s: for that version)')
  t.notOk(w.record.get('ejections')!.has('ahead:1'), 'one whose sender clock was far ahead (an hour left of a told 20 s) is dropped: it would eject d at every start for an hour')
  t.equal(r.health.ejection('e')!.until, now + 20_000, 'a running one until its recorded end (less than its told length: what is left of it)')
  t.equal(r.health.ejection('e')!.reason, '5xx')
})

t.test('a recorded ejection of an id not in the set waits for it to join, and applies for what is left of it then', async (t) => {
  const w = world()
  const clock = new FakeClock(Date.now())
  const one = await replica(t, w, clock)
  one.health.reportPassive('e', 'server_error')
  // a worker that reads before discovery's first list reaches it
  const two = await replica(t, w, clock, { ids: ['a', 'b'] })
  t.equal(two.health.state('e'), undefined)
  two.health.setUpstreams(IDS)
  await new Promise<void>((r) => queueMicrotask(r))
  t.equal(two.health.state('e'), 'ejected', 'ejected the moment it joins (before any request is placed)')
  t.equal(two.health.ejection('e')!.until, one.health.ejection('e')!.until, 'until the moment it ends on the sender')
})

t.test("max_ejection_percent applies on the reader: records of more upstreams than it may eject are refused there (but counted)", async (t) => {
  const w = world()
  const clock = new FakeClock(Date.now())
  const one = await replica(t, w, clock)
  one.health.reportPassive('b', 'server_error')
  one.health.reportPassive('c', 'server_error')
  const two = await replica(t, w, clock, { percent: 20 }) // one of five at most
  t.equal(IDS.filter((id) => two.health.state(id) === 'ejected').length, 1, 'one ejected on the reader')
  t.same(['b', 'c'].map((id) => two.health.snapshot().find((r) => r.id === id)!.timesEjected), [1, 1], 'both counted')
})

t.test('the drains read but not the ejections: the drains apply, a warn of its own is said once, and the read is made again until the ejections are read', async (t) => {
  const w = world()
  const clock = new FakeClock(Date.now())
  const one = await replica(t, w, clock)
  one.health.reportPassive('c', 'server_error')
  one.health.drain('a')
  one.shared.tell('drain', 'a')
  w.net.unreadable.add('ejections') // an ACL grant that leaves the key out, a reply too late
  const held = heldTimers()
  const two = await replica(t, w, clock, { timers: held.timers })
  t.equal(two.health.state('a'), 'draining', 'the drain applied')
  t.equal(two.health.state('c'), 'healthy', 'the ejection not (unread)')
  const said = (msg: string): number => two.logs.lines.filter((l) => l.rec['msg'] === msg).length
  await waitFor(() => said(EJECTIONS_UNREAD_LOG) === 1, 1_000, 'the warn')
  t.equal(said(UNREAD_LOG), 0, 'not the warn of unread drains')
  t.same(held.waits(), [READ_RETRY_MS.first], 'made again after 1 s')
  held.fire()
  await new Promise((r) => setImmediate(r))
  t.equal(said(EJECTIONS_UNREAD_LOG), 1, 'said once a spell')
  w.net.unreadable.clear()
  held.fire()
  await waitFor(() => two.health.state('c') === 'ejected', 1_000, 'the ejection applied once read')
  t.same(held.waits(), [], 'no read due once one succeeded')
})

t.test('after Redis lost its keys, the ejections recorded here that still run are recorded again (recordAgain), as recorded: they end when they did', async (t) => {
  const w = world()
  const clock = new FakeClock(Date.now())
  const one = await replica(t, w, clock)
  one.health.reportPassive('c', 'server_error')
  one.health.reportPassive('d', 'server_error')
  clock.advance(one.health.ejection('d')!.until - clock.now() - 1) // (both end together, 1 ms from now)
  const before = new Map(w.record.get('ejections'))
  w.record.clear() // a FLUSHALL
  one.shared.recordAgain()
  t.same(new Map(w.record.get('ejections')), before, 'both recorded again as they were')
  clock.advance(1)
  await waitFor(() => { one.health.tick(); return w.record.get('ejections')!.size === 0 }, 5_000, 'their records removed once they ended')
  one.shared.recordAgain()
  t.equal(w.record.get('ejections')!.size, 0, 'an ended one is not recorded again')
})

t.test("recordAgain(false) (a worker that is not the lead) records again its own ejections but not the drains; the lead's (true) both", async (t) => {
  const w = world()
  const clock = new FakeClock(Date.now())
  const one = await replica(t, w, clock)
  const two = await replica(t, w, clock)
  one.health.reportPassive('c', 'server_error') // #1 found it: #2 holds it as heard
  one.health.drain('a')
  one.shared.tell('drain', 'a')
  t.equal(two.health.state('a'), 'draining', '#2 holds the drain')
  const before = new Map(w.record.get('ejections'))
  w.record.clear() // a FLUSHALL
  t.same(one.shared.recordAgain(false), { drains: 0, ejections: 1 }, 'one ejection recorded again, no drain')
  t.same(new Map(w.record.get('ejections')), before, 'as it was recorded')
  t.equal(w.record.get('drains'), undefined, 'the drain not recorded again')
  t.same(two.shared.recordAgain(false), { drains: 0, ejections: 0 }, "#2 has no record of #1's ejection to write")
  t.same(two.shared.recordAgain(true), { drains: 1, ejections: 0 }, 'the drains are recorded by the one asked to (the lead)')
  t.equal(w.record.get('drains')!.get('a'), 'stay')
})

const times = (r: Replica, id: string): number => r.health.snapshot().find((s) => s.id === id)!.timesEjected
const settle = (): Promise<void> => new Promise((r) => setImmediate(r))

t.test("the lead records again its sibling workers' ejections it holds (heard, or read at its start), as their finder recorded them: one whose finder exited since is not lost; another replica's, or one ended here, is not written", async (t) => {
  const w = world()
  const clock = new FakeClock(Date.now())
  const finder = await replica(t, w, clock, { group: 'g1' })
  const lead = await replica(t, w, clock, { group: 'g1' })
  const other = await replica(t, w, clock, { group: 'g2' }) // another replica's worker
  finder.health.reportPassive('c', 'server_error')
  finder.health.reportPassive('d', 'connect_refused') // a refusal: ends at passed probes
  t.same([lead.health.state('c'), lead.health.state('d'), other.health.state('c')], ['ejected', 'ejected', 'ejected'], 'heard by its sibling and by the other replica')
  finder.shared.stop() // the finder exits (SIGKILLed: it writes nothing more)
  const late = await replica(t, w, clock, { group: 'g1' }) // its replacement, started now: reads the records
  const before = new Map(w.record.get('ejections'))
  t.equal(before.size, 2)
  clock.advance(1_000)
  w.record.clear() // a FLUSHALL
  t.same(other.shared.recordAgain(true), { drains: 0, ejections: 0 }, "another replica's lead writes none of them (their group's lead does)")
  t.same(lead.shared.recordAgain(false), { drains: 0, ejections: 0 }, 'a worker that is not the lead writes none of its siblings\'')
  t.equal(w.record.get('ejections')?.size ?? 0, 0)
  t.same(lead.shared.recordAgain(true), { drains: 0, ejections: 2 }, 'the lead writes both back')
  t.same(new Map(w.record.get('ejections')), before, 'under their fields, as their finder recorded them (the same text)')
  w.record.clear()
  t.same(late.shared.recordAgain(true), { drains: 0, ejections: 2 }, 'so does a worker started after the finder exited, read at its start, once it leads')
  t.same(new Map(w.record.get('ejections')), before)

  // passed probes end the refusal on the lead (it runs them; its siblings apply its results)
  lead.health.reportActive('d', true)
  lead.health.reportActive('d', true)
  t.equal(lead.health.state('d'), 'healthy')
  await settle()
  w.record.clear()
  t.same(lead.shared.recordAgain(true), { drains: 0, ejections: 1 }, 'an ejection ended here is not written back')
  t.same([...recorded(w).values()].map((r) => r['id']), ['c'])
  clock.advance(lead.health.ejection('c')!.until - clock.now())
  lead.health.tick()
  await settle()
  w.record.clear()
  t.same(lead.shared.recordAgain(true), { drains: 0, ejections: 0 }, 'nor one past its end')
})


t.test('a record refused at the reader\'s max_ejection_percent is counted once, however often the subscription comes back: its next own ejection is not lengthened', async (t) => {
  const w = world()
  const clock = new FakeClock(Date.now())
  const one = await replica(t, w, clock)
  const two = await replica(t, w, clock, { percent: 20 }) // one of five at most
  two.health.reportPassive('a', 'server_error') // #2's own ejection of a: #2 is at its limit
  one.health.reportPassive('b', 'server_error') // #1's first ejection of b, recorded; refused on #2 (counted: 1)
  t.equal(two.health.state('b'), 'healthy')
  t.equal(times(two, 'b'), 1, 'the heard down counted once')
  for (let i = 0; i < 4; i++) {
    two.channel.again() // Redis blips: the record is read again
    await settle()
    await settle()
  }
  t.equal(times(two, 'b'), 1, "b's count on the reader stays 1 after four reads of its record (one ejection of b happened)")
  clock.advance(BASE) // a's and b's ejections end (on both)
  two.health.reportPassive('b', 'server_error') // #2 ejects b itself: its second ejection of b
  t.equal(two.health.ejection('b')!.until - clock.now(), 2 * BASE, "#2's own next ejection of b: 60 s (b's second)")
  t.equal(one.health.ejection('b')!.until - clock.now(), 2 * BASE, 'and #1, told it, ejects b for 60 s too')
})

t.test('a dead sender\'s refusal, ended by the reader\'s own probes, is not applied again when the subscription comes back', async (t) => {
  const w = world()
  const clock = new FakeClock(Date.now())
  const one = await replica(t, w, clock)
  const two = await replica(t, w, clock)
  one.health.reportPassive('c', 'connect_refused') // a refusal: until passed probes end it (or 30 s)
  one.shared.stop() // #1 dies: its record stays, until its end
  t.equal(two.health.state('c'), 'ejected')
  two.health.reportActive('c', true)
  two.health.reportActive('c', true)
  t.equal(two.health.state('c'), 'healthy', "#2's probes ended it")
  for (let i = 0; i < 3; i++) {
    two.channel.again()
    await settle()
    await settle()
    t.equal(two.health.state('c'), 'healthy', `read again (${i + 1}): c stays in (its probes ended the refusal here)`)
  }
  t.equal(times(two, 'c'), 1, 'counted once')
})

t.test('at the reader\'s max_ejection_percent the timed records apply before the refusals: a dead sender\'s refusal does not take the slot of an ejection running elsewhere', async (t) => {
  const w = world()
  const clock = new FakeClock(Date.now())
  const one = await replica(t, w, clock, { percent: 20 })
  const two = await replica(t, w, clock, { percent: 20 })
  one.health.reportPassive('c', 'connect_refused') // #1's refusal of c, recorded
  one.shared.stop() // #1 is replaced: its record stays
  t.equal(two.health.state('c'), 'ejected')
  two.health.reportActive('c', true)
  two.health.reportActive('c', true) // c answers again: #2's probes end it
  t.equal(two.health.state('c'), 'healthy')
  two.health.reportPassive('d', 'server_error') // #2's traffic: d ejected for 30 s, recorded (after c's record)
  t.same([...recorded(w).values()].map((r) => r.id), ['c', 'd'], 'the refusal first in the hash')
  const three = await replica(t, w, clock, { percent: 20 })
  t.same(IDS.map((id) => three.health.state(id)), IDS.map((id) => two.health.state(id)), 'a replica started now has the same upstreams out as the live one (d, not c)')
  t.equal(three.health.ejection('d')!.until, two.health.ejection('d')!.until, 'd until its end on #2')
})

t.test('clock skew: a record whose remaining time exceeds its told length by more than the tolerance (its sender\'s clock far ahead) is not applied and is dropped, said once', async (t) => {
  const w = world()
  const truth = Date.now()
  const ahead = await replica(t, w, new FakeClock(truth + 3_600_000)) // a sender 1 h ahead
  ahead.health.reportPassive('c', 'server_error') // 30 s
  const [field] = recorded(w).keys()
  ahead.shared.stop() // dies mid-ejection: its record stays
  const late = await replica(t, w, new FakeClock(truth + 20 * 60_000)) // 20 min later, on a right clock
  t.equal(late.health.state('c'), 'healthy', 'a replica started 20 min after a 30 s ejection does not eject it')
  t.equal(recorded(w).size, 0, 'and the record is dropped')
  const said = late.logs.lines.filter((l) => l.rec['msg'] === SKEWED_LOG)
  t.equal(said.length, 1, 'said once')
  t.match(said[0]!.rec, { field, upstream: 'c', ahead_ms: 40 * 60_000 }, 'naming the field and how far ahead its sender\'s clock was at least')

  // a sender ahead by less than the tolerance: applied for its told length, at most
  const w2 = world()
  const near = await replica(t, w2, new FakeClock(truth + SKEW_TOLERANCE_MS - 1_000))
  near.health.reportPassive('c', 'server_error')
  const right = new FakeClock(truth)
  const reader = await replica(t, w2, right)
  t.equal(reader.health.ejection('c')!.until - right.now(), BASE, 'a sender within the tolerance: applied, for the told length')
  t.equal(recorded(w2).size, 1, 'and kept')
})

t.test('clock skew: a reader whose clock is ahead (within the tolerance) does not drop a record running on the others\' clocks', async (t) => {
  const w = world()
  const truth = Date.now()
  const clock = new FakeClock(truth)
  const one = await replica(t, w, clock)
  one.health.reportPassive('c', 'server_error') // 30 s
  const fast = await replica(t, w, new FakeClock(truth + 60_000)) // a replica 60 s ahead starts (and reads)
  t.equal(fast.health.state('c'), 'healthy', 'ended on its clock: not applied there')
  t.equal(recorded(w).size, 1, 'but not dropped')
  const late = await replica(t, w, clock) // a replica with a right clock starts then
  t.equal(late.health.state('c'), 'ejected', 'the right-clocked replica started during the ejection applies it')
  // ended longer ago than the tolerance on a reader's clock: dropped
  one.shared.stop()
  await replica(t, w, new FakeClock(truth + BASE + SKEW_TOLERANCE_MS + 1))
  t.equal(recorded(w).size, 0, 'one that ended more than the tolerance ago on the reader\'s clock is dropped')
})

t.test('logs: a spell of failed reads that began with the ejections alone still says the drains\' warn once they fail too; the end says what was read', async (t) => {
  const w = world()
  const clock = new FakeClock(Date.now())
  const held = heldTimers()
  w.net.unreadable.add('ejections')
  const two = await replica(t, w, clock, { timers: held.timers })
  const said = (msg: string): number => two.logs.lines.filter((l) => l.rec['msg'] === msg).length
  await waitFor(() => said(EJECTIONS_UNREAD_LOG) === 1, 1_000, 'the ejections warn')
  w.net.unreadable.add('drains') // Redis answers nothing now: the drains are not read either
  held.fire()
  await settle()
  await settle()
  t.equal(said(UNREAD_LOG), 1, 'the drains warn said once the drains are not read')
  held.fire()
  await settle()
  await settle()
  t.same([said(UNREAD_LOG), said(EJECTIONS_UNREAD_LOG)], [1, 1], 'each said once a spell')
  w.net.unreadable.clear()
  held.fire()
  await waitFor(() => two.logs.lines.some((l) => String(l.rec['msg']).includes('read again')), 1_000, 'the end of the spell')
  t.same(two.logs.lines.filter((l) => String(l.rec['msg']).includes('read again')).map((l) => l.rec['msg']), ['the recorded drains and ejections were read again: applied, and the drains and undrains made here meanwhile sent'])

  // a spell of the ejections alone: its end speaks of them alone
  const w2 = world()
  const held2 = heldTimers()
  w2.net.unreadable.add('ejections')
  const three = await replica(t, w2, clock, { timers: held2.timers })
  await waitFor(() => three.logs.lines.some((l) => l.rec['msg'] === EJECTIONS_UNREAD_LOG), 1_000, 'the ejections warn')
  w2.net.unreadable.clear()
  held2.fire()
  await waitFor(() => three.logs.lines.some((l) => String(l.rec['msg']).includes('read again')), 1_000, 'the end of the spell')
  t.same(three.logs.lines.filter((l) => String(l.rec['msg']).includes('read again')).map((l) => l.rec['msg']), ['the recorded ejections were read again: applied'])
})

t.test('a down heard for an id not in the set does not stand for its record: read again, the record waits for the id to join; an id that left and joined again applies it again', async (t) => {
  const w = world()
  const clock = new FakeClock(Date.now())
  const one = await replica(t, w, clock)
  const two = await replica(t, w, clock, { ids: ['a', 'b'] }) // discovery's list without e yet
  one.health.reportPassive('e', 'server_error') // heard on #2: e is not in its set
  two.channel.again() // the subscription comes back: the record is read
  await settle()
  await settle()
  two.health.setUpstreams(IDS)
  await new Promise<void>((r) => queueMicrotask(r))
  t.equal(two.health.state('e'), 'ejected', 'ejected when it joins, from the record')
  two.health.setUpstreams(['a', 'b']) // e leaves #2's set (its state with it) and comes back
  two.health.setUpstreams(IDS)
  t.equal(two.health.state('e'), 'healthy')
  two.channel.again()
  await settle()
  await settle()
  t.equal(two.health.state('e'), 'ejected', 'read again: applied again (its state left with it)')
  t.equal(two.health.ejection('e')!.until, one.health.ejection('e')!.until, 'until its end on #1')
})

t.test("a record written back under its field after Redis lost its keys (recordAgain) is not applied or counted again by a reader whose read in between did not list it (review R6)", async (t) => {
  // a field was forgotten when a read no longer listed it: a reader that read the emptied
  // Redis before the sender wrote its running ejection back applied it again at its next read
  const settled = async (): Promise<void> => { for (let i = 0; i < 3; i++) await settle() }
  for (const [what, percent, id] of [['a refusal its probes ended', 100, 'c'], ['a record refused at max_ejection_percent', 20, 'b']] as const) {
    const w = world()
    const clock = new FakeClock(Date.now())
    const one = await replica(t, w, clock)
    const two = await replica(t, w, clock, { percent })
    if (percent === 100) {
      one.health.reportPassive(id, 'connect_refused') // heard live by #2
      t.equal(two.health.state(id), 'ejected')
      two.health.reportActive(id, true)
      two.health.reportActive(id, true)
      t.equal(two.health.state(id), 'healthy', `${what}: #2's probes ended it`)
    } else {
      two.health.reportPassive('a', 'server_error') // #2 at its limit
      one.health.reportPassive(id, 'server_error') // refused on #2, counted once
    }
    t.equal(times(two, id), 1)
    clock.advance(6_000)
    t.equal(one.health.state(id), 'ejected', `${what}: still running on the sender`)
    w.record.clear() // Redis restarted empty
    two.channel.again() // #2 reads the empty record
    await settled()
    one.shared.recordAgain() // the sender writes its running ejection back, same field
    two.channel.again()
    await settled()
    t.equal(two.health.state(id), 'healthy', `${what}: not applied again on #2`)
    t.equal(times(two, id), 1, `${what}: counted once on #2`)
  }
})

t.test("a sibling's refusal its finder ended a probe before the lead (a probe the lead passed before it heard the down counts on the finder only) is not written back by the lead after a loss: the finder told its siblings it removed the record (review r1)", async (t) => {
  const w = world()
  const clock = new FakeClock(Date.now())
  const finder = await replica(t, w, clock, { group: 'g1' })
  const lead = await replica(t, w, clock, { group: 'g1' })
  finder.health.reportPassive('d', 'connect_refused') // refused on the finder's traffic; the lead hears it at once
  t.same([finder.health.state('d'), lead.health.state('d')], ['ejected', 'ejected'])
  // the lead's probe that passed just before it heard the down reaches the finder (IPC) just after its ejection
  finder.health.reportActive('d', true)
  // the next probe passes: the lead applies it, then relays it
  lead.health.reportActive('d', true)
  finder.health.reportActive('d', true)
  await settle()
  t.equal(finder.health.state('d'), 'healthy', 'the finder ended the refusal (2 passes)')
  t.equal(lead.health.state('d'), 'ejected', 'the lead has one pass to go (one probe interval)')
  t.equal(w.record.get('ejections')?.size ?? 0, 0, 'the finder removed its record')
  w.record.clear() // Redis loses its keys in this probe interval
  t.same(lead.shared.recordAgain(true), { drains: 0, ejections: 0 }, 'the lead does not bring back the record its finder removed')
  lead.health.reportActive('d', true)
  await settle()
  t.equal(lead.health.state('d'), 'healthy')
  t.equal(w.record.get('ejections')?.size ?? 0, 0, 'nothing left in Redis once the ejection ended everywhere')
  const late = await replica(t, w, clock, { group: 'g2' })
  t.equal(late.health.state('d'), 'healthy', 'a replica started now does not eject d')
})

t.test("two siblings that found one upstream failing at once (one timed, one a refusal): the lead holds both records and writes both back after a loss, also once the timed one's finder exited (review r1)", async (t) => {
  const w = world()
  const clock = new FakeClock(Date.now())
  const s1 = await replica(t, w, clock, { group: 'g1' })
  const s2 = await replica(t, w, clock, { group: 'g1' })
  const lead = await replica(t, w, clock, { group: 'g1' })
  // both find c failing before hearing each other (pub/sub latency): s1's down is not heard yet
  w.net.lost = true
  s1.health.reportPassive('c', 'server_error')
  w.net.lost = false
  clock.advance(1)
  s2.health.reportPassive('c', 'connect_refused')
  s1.channel.again(); s2.channel.again(); lead.channel.again() // each reads the records (s1's 5xx is heard that way)
  await settle()
  t.same([s1.health.ejection('c')?.ends, s2.health.ejection('c')?.ends, lead.health.ejection('c')?.ends], ['time', 'time', 'time'], 'every worker holds c timed (the 5xx)')
  const before = new Map(w.record.get('ejections'))
  t.same([...recorded(w).values()].map((r) => r['refused'] === true).sort(), [false, true], 'two records: the 5xx and the refusal')
  const early = await replica(t, w, clock, { group: 'g3' })
  t.equal(early.health.ejection('c')?.ends, 'time', 'a replica started before the loss holds c timed (it reads both records)')
  s1.shared.stop() // the 5xx finder exits
  w.record.clear() // FLUSHALL
  t.same(lead.shared.recordAgain(true), { drains: 0, ejections: 2 }, 'the lead writes both back')
  s2.shared.recordAgain(false)
  t.same(new Map(w.record.get('ejections')), before, 'both records back, as their finders wrote them')
  const late = await replica(t, w, clock, { group: 'g2' })
  t.equal(late.health.ejection('c')?.ends, 'time', 'a replica started after the loss holds c timed, as the group does')
})

t.test("a sibling's ejection the lead refused at its max_ejection_percent is written back by the lead after a loss once its finder exited: the record is the finder's, and each reader applies it within its own limit", async (t) => {
  const w = world()
  const clock = new FakeClock(Date.now())
  const lead = await replica(t, w, clock, { group: 'g1', percent: 20 }) // one of five at most
  const finder = await replica(t, w, clock, { group: 'g1', percent: 20 })
  // both find an upstream failing before they hear each other (pub/sub latency): each at its limit
  w.net.lost = true
  lead.health.reportPassive('a', 'server_error')
  finder.health.reportPassive('b', 'server_error')
  w.net.lost = false
  lead.channel.again(); finder.channel.again() // each reads the other's record: refused at its limit (counted)
  await settle()
  t.same([lead.health.state('a'), lead.health.state('b'), finder.health.state('a'), finder.health.state('b')], ['ejected', 'healthy', 'healthy', 'ejected'], "each ejects its own and refused its sibling's")
  t.equal(times(lead, 'b'), 1, "the lead counted the finder's")
  lead.health.drain('b') // a transition of b on the lead: nothing ended here
  lead.health.undrainAdmin('b')
  await settle()
  const before = new Map(w.record.get('ejections'))
  t.equal(before.size, 2)
  finder.shared.stop() // the finder exits (SIGKILLed: it writes nothing more)
  w.record.clear() // a FLUSHALL
  t.same(lead.shared.recordAgain(true), { drains: 0, ejections: 2 }, "the lead writes back its own and the finder's it refused")
  t.same(new Map(w.record.get('ejections')), before, 'both records back, as written')
  const roomy = await replica(t, w, clock, { group: 'g2' })
  t.same([roomy.health.state('a'), roomy.health.state('b')], ['ejected', 'ejected'], 'a replica with room started after the loss ejects both, as one started before it')
  const full = await replica(t, w, clock, { group: 'g3', percent: 20 })
  t.equal(['a', 'b'].filter((id) => full.health.state(id) === 'ejected').length, 1, 'one at the same limit ejects one of them')
  clock.advance(BASE)
  lead.health.tick()
  await settle()
  w.record.clear()
  t.same(lead.shared.recordAgain(true), { drains: 0, ejections: 0 }, 'neither once its end passed')
})

t.test("a record its finder removed while the lead wrote back after a loss (the finder's `unrecorded` still on its way through the primary) is removed again when that message comes", async (t) => {
  const w = world()
  const clock = new FakeClock(Date.now())
  const finder = await replica(t, w, clock, { group: 'g1' })
  const lead = await replica(t, w, clock, { group: 'g1' })
  finder.health.reportPassive('d', 'connect_refused') // a refusal: passed probes end it
  // a probe the lead passed before it heard the down counts on the finder only (see review r1)
  finder.health.reportActive('d', true)
  w.net.held = [] // the primary is slow to pass the group's messages on
  lead.health.reportActive('d', true)
  finder.health.reportActive('d', true)
  await settle()
  t.same([finder.health.state('d'), lead.health.state('d')], ['healthy', 'ejected'], 'the finder ended the refusal, the lead has a pass to go')
  t.equal(w.record.get('ejections')?.size ?? 0, 0, 'the finder removed its record (its message to its siblings on the way)')
  w.record.clear() // Redis loses its keys now
  t.same(lead.shared.recordAgain(true), { drains: 0, ejections: 1 }, 'the lead, not told yet, writes it back')
  t.equal(w.record.get('ejections')?.size ?? 0, 1)
  const held = w.net.held
  w.net.held = null
  for (const deliver of held) deliver() // the finder's `unrecorded` comes
  await settle()
  t.equal(w.record.get('ejections')?.size ?? 0, 0, 'the lead removed it again: nothing left for a replica started now')
  const late = await replica(t, w, clock, { group: 'g2' })
  t.equal(late.health.state('d'), 'healthy', 'a replica started now does not eject d')
})

t.test("a worker that handled a loss as a sibling and becomes the lead before its lead said it wrote its part records the lead's part again, however late (the lead before it went before it noticed the loss)", async (t) => {
  for (const after of [0, 20_000]) { // at once, or 20 s later (the watchdog took 10 s and more; the ejection runs 30 s)
    const w = world()
    const clock = new FakeClock(Date.now())
    const lead = await replica(t, w, clock, { group: 'g1' })
    const next = await replica(t, w, clock, { group: 'g1' })
    lead.health.reportPassive('c', 'server_error') // the lead's own ejection, held by its sibling
    const before = new Map(w.record.get('ejections'))
    lead.shared.stop() // the lead is frozen, then killed, before its keyspace check noticed the loss
    w.record.clear() // a FLUSHALL
    t.same(next.shared.recordAgain(false, { node: 'n', marker: 'm1' }), { drains: 0, ejections: 0 }, 'the sibling, not the lead, writes only its own (none)')
    clock.advance(after)
    next.shared.becameLead()
    t.same(new Map(w.record.get('ejections')), before, `${after} ms later: the new lead wrote its sibling's record back, as written`)
    t.match(next.logs.lines.find((l) => l.rec['msg'] === LEAD_PART_LOG)?.rec, { drains: 0, ejections: 1, nodes: ['n'], lost_ms_ago: after }, 'and said so')
  }
})

t.test("a worker whose lead said it wrote its part after the loss writes nothing when it leads later (a roll), whichever of them noticed the loss first", async (t) => {
  for (const leadFirst of [true, false]) {
    const w = world()
    const clock = new FakeClock(Date.now())
    const lead = await replica(t, w, clock, { group: 'g1' })
    const next = await replica(t, w, clock, { group: 'g1' })
    const third = await replica(t, w, clock, { group: 'g1' })
    lead.health.reportPassive('c', 'server_error')
    w.record.clear() // a FLUSHALL
    const loss = { node: 'n', marker: 'm1' }
    if (!leadFirst) next.shared.recordAgain(false, loss)
    t.same(lead.shared.recordAgain(true, loss), { drains: 0, ejections: 1 }, 'the lead writes its part')
    if (leadFirst) next.shared.recordAgain(false, loss)
    // an older loss of that node, told after: what a sibling that noticed only it owes is not this one
    third.shared.recordAgain(false, { node: 'n', marker: 'm0' })
    await settle() // the lead's word goes once its writes are acknowledged
    lead.shared.stop()
    w.record.clear() // to see what the next lead writes
    clock.advance(1_000)
    next.shared.becameLead()
    t.equal(w.record.get('ejections')?.size ?? 0, 0, `lead first: ${leadFirst}: the next lead writes nothing`)
    t.notOk(next.logs.lines.some((l) => l.rec['msg'] === LEAD_PART_LOG), 'nor says so')
    third.shared.becameLead()
    t.ok(third.logs.lines.some((l) => l.rec['msg'] === LEAD_PART_LOG), 'a sibling that noticed another loss than the one told writes it (the same fields and values)')
  }
})

t.test("a record the lead wrote back whose removal again (its finder's `unrecorded` come) failed is removed at a later try, or when the subscription is back", async (t) => {
  for (const back of ['timer', 'subscription'] as const) {
    const w = world()
    const clock = new FakeClock(Date.now())
    const held = heldTimers()
    const finder = await replica(t, w, clock, { group: 'g1' })
    const lead = await replica(t, w, clock, { group: 'g1', timers: held.timers })
    finder.health.reportPassive('d', 'connect_refused')
    finder.health.reportActive('d', true)
    w.net.held = []
    lead.health.reportActive('d', true)
    finder.health.reportActive('d', true)
    await settle()
    w.record.clear() // Redis loses its keys now
    t.same(lead.shared.recordAgain(true), { drains: 0, ejections: 1 }, 'the lead, not told yet, writes it back')
    await settle()
    const messages = w.net.held
    w.net.held = null
    w.net.unwritable = true // the lead's connection fails its commands now
    for (const deliver of messages) deliver() // the finder's `unrecorded` comes
    await settle()
    t.equal(w.record.get('ejections')?.size ?? 0, 1, `${back}: the removal failed: the record is still there`)
    w.net.unwritable = false
    if (back === 'timer') t.equal(held.fire(), READ_RETRY_MS.first, 'tried again after 1 s')
    else lead.channel.again()
    await settle()
    t.equal(w.record.get('ejections')?.size ?? 0, 0, `${back}: removed at the next try`)
  }
})
