// The health table as a specification: active thresholds, passive ejection with back-off, cap
// and decay, drain and admin flags, transitions and slow start. Time comes from a FakeClock;
// nothing sleeps.
import t from 'tap'
import { HealthTable, type HealthOptions, type HealthTransition, type PassiveResult } from '../src/health/health-table.js'
import { FakeClock } from './fixtures/clock.js'

const S = 1_000

const PASSIVE = { consecutive_failures: 3, count_5xx: true, base_ejection: 30 * S, max_ejection: 100 * S, max_ejection_percent: 50 }

function table(over: Partial<HealthOptions> = {}, ids = ['app-0', 'app-1', 'app-2']) {
  const clock = new FakeClock()
  const options: HealthOptions = { active: { healthy_threshold: 2, unhealthy_threshold: 2 }, passive: PASSIVE, slow_start: 0, ...over }
  const health = new HealthTable(options, clock)
  const events: HealthTransition[] = []
  health.onTransition((e) => events.push(e))
  health.setUpstreams(ids)
  events.length = 0
  return { clock, health, events }
}

function fail(health: HealthTable, id: string, times: number, result: PassiveResult = 'connect_failure'): void {
  for (let i = 0; i < times; i++) health.reportPassive(id, result)
}

t.test('invalid options are rejected with a precise message', async (t) => {
  const clock = new FakeClock()
  const base: HealthOptions = { active: { healthy_threshold: 2, unhealthy_threshold: 2 }, passive: PASSIVE, slow_start: 0 }
  const cases: [string, HealthOptions, RegExp][] = [
    ['zero healthy_threshold', { ...base, active: { healthy_threshold: 0, unhealthy_threshold: 2 } }, /healthy_threshold must be an integer >= 1/],
    ['fractional unhealthy_threshold', { ...base, active: { healthy_threshold: 1, unhealthy_threshold: 1.5 } }, /unhealthy_threshold must be an integer >= 1/],
    ['negative slow_start', { ...base, slow_start: -1 }, /slow_start must be >= 0/],
    ['zero consecutive_failures', { ...base, passive: { ...PASSIVE, consecutive_failures: 0 } }, /consecutive_failures/],
    ['zero base_ejection', { ...base, passive: { ...PASSIVE, base_ejection: 0 } }, /base_ejection must be > 0/],
    ['max_ejection below base', { ...base, passive: { ...PASSIVE, max_ejection: 1 } }, /max_ejection must be >= base_ejection/],
    ['percent above 100', { ...base, passive: { ...PASSIVE, max_ejection_percent: 101 } }, /max_ejection_percent must be within 0..100/],
  ]
  for (const [name, options, message] of cases) t.throws(() => new HealthTable(options, clock), { message }, name)
})

t.test('new upstreams start healthy, so traffic flows before the first probe', async (t) => {
  const { health } = table()
  for (const id of ['app-0', 'app-1', 'app-2']) {
    t.equal(health.state(id), 'healthy')
    t.ok(health.ready(id))
    t.ok(health.acceptsNew(id))
  }
  t.same(health.ids(), ['app-0', 'app-1', 'app-2'])
})

t.test('unknown upstreams are not ready and reports about them are ignored', async (t) => {
  const { health, events } = table()
  t.notOk(health.ready('nope'))
  t.notOk(health.acceptsNew('nope'))
  t.equal(health.state('nope'), undefined)
  health.reportActive('nope', false)
  fail(health, 'nope', 10)
  t.equal(health.drain('nope'), false)
  t.equal(health.undrain('nope'), false)
  t.equal(health.disable('nope'), false)
  t.equal(health.enable('nope'), false)
  t.equal(health.slowStartWeight('nope'), 1)
  t.same(events, [])
})

t.test('active results flip the state only after a run of thresholds', async (t) => {
  const cases: [string, boolean[], string][] = [
    ['one failure is not enough', [false], 'healthy'],
    ['two failures in a row flip it unhealthy', [false, false], 'unhealthy'],
    ['alternating results never flip it', [false, true, false, true, false, true, false], 'healthy'],
    ['one success after two failures is not enough', [false, false, true], 'unhealthy'],
    ['two successes in a row flip it back', [false, false, true, true], 'healthy'],
    ['a failure restarts the success run', [false, false, true, false, true], 'unhealthy'],
    ['successes while healthy do not bank credit', [true, true, true, false, false], 'unhealthy'],
  ]
  for (const [name, results, expected] of cases) {
    const { health } = table()
    for (const ok of results) health.reportActive('app-0', ok)
    t.equal(health.state('app-0'), expected, name)
    t.equal(health.ready('app-0'), expected === 'healthy', `${name}: ready`)
  }
})

t.test('consecutive connect failures eject the upstream; a success restarts the run', async (t) => {
  const { health } = table()
  fail(health, 'app-0', 2)
  health.reportPassive('app-0', 'success')
  fail(health, 'app-0', 2)
  t.equal(health.state('app-0'), 'healthy', 'the success broke the run')
  fail(health, 'app-0', 1)
  t.equal(health.state('app-0'), 'ejected')
  t.notOk(health.ready('app-0'))
  t.notOk(health.acceptsNew('app-0'))
  t.equal(health.snapshot()[0]!.ejectedUntil, new FakeClock().now() + 30 * S)
})

t.test('5xx answers count as failures only with count_5xx', async (t) => {
  const on = table()
  fail(on.health, 'app-0', 3, 'server_error')
  t.equal(on.health.state('app-0'), 'ejected', 'count_5xx: true')

  const mixed = table()
  fail(mixed.health, 'app-0', 1, 'connect_failure')
  fail(mixed.health, 'app-0', 1, 'server_error')
  fail(mixed.health, 'app-0', 1, 'connect_failure')
  t.equal(mixed.health.state('app-0'), 'ejected', 'connect failures and 5xx share one run')

  const off = table({ passive: { ...PASSIVE, count_5xx: false } })
  fail(off.health, 'app-0', 10, 'server_error')
  t.equal(off.health.state('app-0'), 'healthy', 'count_5xx: false')
  fail(off.health, 'app-0', 2, 'connect_failure')
  fail(off.health, 'app-0', 1, 'server_error')
  fail(off.health, 'app-0', 2, 'connect_failure')
  t.equal(off.health.state('app-0'), 'healthy', 'an uncounted 5xx is an answer: it breaks the run')
  fail(off.health, 'app-0', 1, 'connect_failure')
  t.equal(off.health.state('app-0'), 'ejected')
})

t.test('passive reports are ignored when passive detection is off', async (t) => {
  const { health, events } = table({ passive: null })
  fail(health, 'app-0', 100)
  t.equal(health.state('app-0'), 'healthy')
  t.same(events, [])
})

t.test('an ejection expires without timers, and the upstream is ready again', async (t) => {
  const { clock, health } = table()
  fail(health, 'app-0', 3)
  clock.advance(30 * S - 1)
  t.notOk(health.ready('app-0'), 'still ejected 1 ms before the end')
  clock.advance(1)
  t.ok(health.ready('app-0'), 'ready at the end')
  t.equal(health.state('app-0'), 'healthy')
  t.equal(health.snapshot()[0]!.ejectedUntil, null)
})

t.test('ejection time grows with each ejection, is capped, and decays when quiet', async (t) => {
  const { clock, health } = table()
  const durations: number[] = []
  for (let i = 0; i < 5; i++) {
    fail(health, 'app-0', 3)
    const until = health.snapshot()[0]!.ejectedUntil!
    durations.push(until - clock.now())
    clock.set(until)
  }
  t.same(durations, [30 * S, 60 * S, 90 * S, 100 * S, 100 * S], 'base x n, capped at max_ejection')
  t.equal(health.snapshot()[0]!.timesEjected, 5)

  clock.advance(2 * 30 * S) // two quiet base intervals: 5 -> 3, then this ejection is the 4th
  fail(health, 'app-0', 3)
  t.equal(health.snapshot()[0]!.timesEjected, 4)
  clock.set(health.snapshot()[0]!.ejectedUntil!)
  clock.advance(10 * 30 * S) // long quiet: back to the base time
  fail(health, 'app-0', 3)
  t.equal(health.snapshot()[0]!.ejectedUntil! - clock.now(), 30 * S)
})

t.test("an ejection ended by a passed active check here (another replica's verdict) does not lengthen the next one", async (t) => {
  const { clock, health, events } = table()
  fail(health, 'app-0', 3)
  clock.set(health.snapshot()[0]!.ejectedUntil!) // ejection 1 (30 s) served in full
  health.reportPassive('app-0', 'connect_refused', true, true) // another replica's probes failed
  t.equal(health.snapshot()[0]!.ejectedUntil! - clock.now(), 60 * S, 'ejection 2: base x 2')
  clock.advance(2 * S)
  health.reportActive('app-0', true) // this replica's probe passes: that verdict was wrong here
  t.equal(health.state('app-0'), 'healthy')
  t.equal(health.snapshot()[0]!.timesEjected, 1, 'the ejection a passed probe ended is not counted')
  events.length = 0
  fail(health, 'app-0', 3) // live traffic fails here
  t.equal(health.snapshot()[0]!.ejectedUntil! - clock.now(), 60 * S, 'the next ejection is the 2nd: base x 2, not x 3')
  t.match(events, [{ to: 'ejected', detail: /\(ejection 2\)$/ }])
})

t.test("an ejection a passed check here ended leaves the count's decay as it was (the next ejection as long as without it), also on a worker that copied it", async (t) => {
  // (app-1 serves meanwhile: the last upstream serving is not ejected for such failures)
  const { clock, health } = table({}, ['app-0', 'app-1'])
  fail(health, 'app-0', 3)
  clock.set(health.snapshot()[0]!.ejectedUntil!) // ejection 1 (30 s) served
  fail(health, 'app-0', 3)
  clock.set(health.snapshot()[0]!.ejectedUntil!) // ejection 2 (60 s) served: count 2, decaying from now
  clock.advance(50 * S) // one base_ejection of decay passed
  health.reportPassive('app-0', 'connect_refused', true, true) // another replica's probes failed
  // a worker starting now copies that ejection
  const sibling = new HealthTable({ active: { healthy_threshold: 2, unhealthy_threshold: 2 }, passive: PASSIVE, slow_start: 0 }, clock)
  sibling.setUpstreams(['app-0', 'app-1'])
  sibling.copy(health.copies())
  clock.advance(5 * S)
  for (const h of [health, sibling]) h.reportActive('app-0', true) // the probe passes here: that verdict was wrong
  t.same([health.state('app-0'), sibling.state('app-0')], ['healthy', 'healthy'])
  clock.advance(15 * S) // 70 s since ejection 2 ended: two base_ejections of decay, count 0
  for (const h of [health, sibling]) fail(h, 'app-0', 3)
  t.same([health, sibling].map((h) => h.snapshot()[0]!.ejectedUntil! - clock.now()), [30 * S, 30 * S], 'base x 1, as without the ejection the probe ended (not x 2: its decay was not restarted)')
})

t.test('failures reported while ejected are ignored (late answers of old requests)', async (t) => {
  const { clock, health } = table()
  fail(health, 'app-0', 3)
  fail(health, 'app-0', 10)
  t.equal(health.snapshot()[0]!.timesEjected, 1)
  clock.advance(30 * S)
  fail(health, 'app-0', 2)
  t.equal(health.state('app-0'), 'healthy', 'a fresh run is needed after the ejection')
})

t.test('max_ejection_percent caps how many upstreams are ejected at once', async (t) => {
  const cases: [string, number, number, number][] = [
    // name, upstreams, percent, most ejected at once
    ['3 upstreams at 50% -> 1', 3, 50, 1],
    ['10 upstreams at 30% -> 3', 10, 30, 3],
    ['4 upstreams at 50% -> 2', 4, 50, 2],
    ['10 upstreams at 100% -> 10', 10, 100, 10],
    ['at least one, as Envoy: 2 upstreams at 10% -> 1', 2, 10, 1],
    ['0% -> never', 3, 0, 0],
  ]
  for (const [name, n, percent, most] of cases) {
    const ids = Array.from({ length: n }, (_, i) => `app-${i}`)
    const { health } = table({ passive: { ...PASSIVE, max_ejection_percent: percent } }, ids)
    for (const id of ids) fail(health, id, 3)
    t.equal(ids.filter((id) => health.state(id) === 'ejected').length, most, name)
  }
})

t.test('a refused ejection happens on the next failure once the cap has room', async (t) => {
  const { clock, health } = table()
  fail(health, 'app-0', 3)
  fail(health, 'app-1', 3)
  t.equal(health.state('app-1'), 'healthy', 'refused: app-0 is ejected')
  clock.advance(30 * S)
  fail(health, 'app-1', 1)
  t.equal(health.state('app-1'), 'ejected', 'app-0 expired, so the run continues into an ejection')
  t.equal(health.state('app-0'), 'healthy')
})

t.test('a draining upstream is ready for its sessions but accepts no new ones', async (t) => {
  const { clock, health } = table()
  const t0 = clock.now()
  t.ok(health.drain('app-1'))
  clock.advance(5 * S)
  t.ok(health.drain('app-1'), 'draining again is fine')
  t.equal(health.state('app-1'), 'draining')
  t.ok(health.ready('app-1'))
  t.notOk(health.acceptsNew('app-1'))
  t.equal(health.snapshot()[1]!.drainingSince, t0, 'drainingSince is the first drain')
  t.ok(health.undrain('app-1'))
  t.ok(health.acceptsNew('app-1'))
  t.equal(health.snapshot()[1]!.drainingSince, null)
})

t.test('flags are independent and the most severe one names the state', async (t) => {
  const { clock, health } = table()
  health.drain('app-0')
  fail(health, 'app-0', 3)
  t.equal(health.state('app-0'), 'ejected', 'ejected beats draining')
  health.reportActive('app-0', false)
  health.reportActive('app-0', false)
  t.equal(health.state('app-0'), 'unhealthy', 'unhealthy beats ejected')
  health.disable('app-0')
  t.equal(health.state('app-0'), 'disabled', 'disabled beats all')
  health.enable('app-0')
  t.equal(health.state('app-0'), 'unhealthy', 'enabling does not clear the failed checks')
  health.reportActive('app-0', true)
  health.reportActive('app-0', true)
  t.equal(health.state('app-0'), 'ejected', 'an active success does not end an ejection')
  clock.advance(30 * S)
  t.equal(health.state('app-0'), 'draining')
  health.undrain('app-0')
  t.equal(health.state('app-0'), 'healthy')
})

t.test('each state change is emitted exactly once, with its reason', async (t) => {
  const { clock, health, events } = table()
  const t0 = clock.now()
  health.reportActive('app-0', false)
  health.reportActive('app-0', false)
  health.reportActive('app-0', false) // no change: no event
  clock.advance(S)
  health.reportActive('app-0', true)
  health.reportActive('app-0', true)
  fail(health, 'app-1', 3)
  clock.advance(40 * S)
  t.ok(health.ready('app-1')) // noticed here
  t.ok(health.ready('app-1'))
  health.tick()
  health.drain('app-2')
  health.disable('app-2')
  health.enable('app-2')
  health.undrain('app-2')
  health.disable('app-2')
  health.disable('app-2') // no change: no event
  health.setUpstreams(['app-0', 'app-1', 'app-3'])
  const brief = events.map(({ id, from, to, reason, at }) => [id, from, to, reason, at - t0])
  t.same(brief, [
    ['app-0', 'healthy', 'unhealthy', 'active_failed', 0],
    ['app-0', 'unhealthy', 'healthy', 'active_recovered', S],
    ['app-1', 'healthy', 'ejected', 'ejected', S],
    ['app-1', 'ejected', 'healthy', 'ejection_expired', 31 * S], // `at` is the ejection's end
    ['app-2', 'healthy', 'draining', 'drain', 41 * S],
    ['app-2', 'draining', 'disabled', 'disable', 41 * S],
    ['app-2', 'disabled', 'draining', 'enable', 41 * S],
    ['app-2', 'draining', 'healthy', 'undrain', 41 * S],
    ['app-2', 'healthy', 'disabled', 'disable', 41 * S],
    ['app-2', 'disabled', null, 'removed', 41 * S],
    ['app-3', null, 'healthy', 'added', 41 * S],
  ])
  t.match(events[2]!.detail, /ejected for 30000 ms after 3 consecutive failures/)
})

t.test('tick() notices expired ejections without any traffic', async (t) => {
  const { clock, health, events } = table()
  fail(health, 'app-0', 3)
  clock.advance(31 * S)
  health.tick()
  t.same(events.map((e) => e.reason), ['ejected', 'ejection_expired'])
})

t.test('an unsubscribed listener hears nothing more', async (t) => {
  const { health } = table()
  const heard: string[] = []
  const off = health.onTransition((e) => heard.push(e.reason))
  health.drain('app-0')
  off()
  health.undrain('app-0')
  t.same(heard, ['drain'])
})

t.test('setUpstreams keeps state by id, adds healthy ones and forgets removed ones', async (t) => {
  const { health } = table()
  health.drain('app-0')
  fail(health, 'app-1', 3)
  health.disable('app-2')
  health.setUpstreams(['app-2', 'app-1', 'app-0', 'app-9'])
  t.same(['app-0', 'app-1', 'app-2', 'app-9'].map((id) => health.state(id)), ['draining', 'ejected', 'disabled', 'healthy'])
  health.setUpstreams(['app-9'])
  health.setUpstreams(['app-9', 'app-2'])
  t.equal(health.state('app-2'), 'healthy', 'a removed id comes back fresh')
  t.same(health.ids(), ['app-9', 'app-2'])
})

t.test('slow start ramps an upstream linearly from 10% over the window', async (t) => {
  const W = 60 * S
  const off = table({ slow_start: 0 })
  off.health.setUpstreams(['app-0', 'app-1', 'app-2', 'app-3'])
  t.equal(off.health.slowStartWeight('app-3'), 1, 'off: always 1')

  const { clock, health } = table({ slow_start: W })
  t.equal(health.slowStartWeight('app-0'), 1, 'the initial set does not ramp')
  health.setUpstreams(['app-0', 'app-1', 'app-2', 'app-3'])
  const t0 = clock.now()
  const ramp = [0, 3 * S, 6 * S, 15 * S, 30 * S, 45 * S, 60 * S, 120 * S].map((dt) => health.slowStartWeight('app-3', t0 + dt))
  t.same(ramp, [0.1, 0.1, 0.1, 0.25, 0.5, 0.75, 1, 1])
  t.equal(health.slowStartWeight('app-0', t0), 1, 'others are not affected')
})

t.test('slow start restarts when an upstream becomes ready again, not on drain', async (t) => {
  const W = 60 * S
  const { clock, health } = table({ slow_start: W })
  health.reportActive('app-0', false)
  health.reportActive('app-0', false)
  clock.advance(10 * S)
  health.reportActive('app-0', true)
  health.reportActive('app-0', true)
  t.equal(health.slowStartWeight('app-0', clock.now() + 30 * S), 0.5, 'recovered from unhealthy')

  fail(health, 'app-1', 3)
  clock.advance(30 * S + 15 * S) // ejection ended 15 s ago; noticed only now
  t.equal(health.slowStartWeight('app-1'), 0.25, 'ramps from the ejection end')

  health.disable('app-2')
  health.enable('app-2')
  t.equal(health.slowStartWeight('app-2'), 0.1, 're-enabled')

  clock.advance(W)
  health.drain('app-0')
  health.undrain('app-0')
  t.equal(health.slowStartWeight('app-0'), 1, 'drain keeps it ready: no ramp')
})

t.test('the snapshot is plain JSON with every flag', async (t) => {
  const { clock, health } = table({ slow_start: 60 * S })
  health.drain('app-0')
  fail(health, 'app-1', 3)
  const snap = health.snapshot()
  t.same(JSON.parse(JSON.stringify(snap)), snap)
  t.match(snap[0], { id: 'app-0', state: 'draining', ready: true, acceptsNew: false, draining: true, drainingSince: clock.now(), slowStartWeight: 1 })
  t.match(snap[1], { id: 'app-1', state: 'ejected', ready: false, ejectedUntil: clock.now() + 30 * S, timesEjected: 1, passiveFailures: 0 })
  t.match(snap[2], { id: 'app-2', state: 'healthy', ready: true, acceptsNew: true, activeFailed: false, disabled: false })
})

t.test("discovery ends only its own drain: an address that comes back does not undo an admin's", async (t) => {
  const { health } = table()
  health.drain('app-0', false) // an operator
  health.drain('app-0', true, undefined, 'discovery') // then the address leaves DNS (a drain that migrates)
  t.equal(health.drainMigrates('app-0'), true, 'both: migrating')
  health.undrain('app-0', 'discovery') // the address is back
  t.equal(health.state('app-0'), 'draining', "the admin's drain goes on")
  t.equal(health.drainMigrates('app-0'), false, 'as the admin asked it (not migrating)')
  t.same(health.adminDrain('app-0'), { migrate: false })
  health.undrain('app-0') // the operator's undrain ends it
  t.equal(health.state('app-0'), 'healthy')
  t.equal(health.adminDrain('app-0'), null)
  health.drain('app-1', false, undefined, 'discovery')
  health.undrain('app-1', 'discovery')
  t.equal(health.state('app-1'), 'healthy', "discovery's own drain, ended by discovery")
  health.drain('app-2', false, undefined, 'discovery')
  health.undrain('app-2')
  t.equal(health.state('app-2'), 'healthy', "an admin's undrain ends discovery's drain too, as before")
  // the other order: an admin's plain drain of an upstream discovery drains migrating (the
  // admin is answered migrate: true) goes on migrating once the address is back
  health.drain('app-1', true, undefined, 'discovery')
  health.drain('app-1', false)
  t.same(health.adminDrain('app-1'), { migrate: true }, "the admin's drain joins the migration")
  health.undrain('app-1', 'discovery')
  t.equal(health.drainMigrates('app-1'), true, 'and keeps it when discovery\'s drain ends')
})

t.test('anotherPassing: another upstream whose last probe passed counts while healthy or draining (it still answers), not while out', async (t) => {
  const { health } = table({}, ['app-0', 'app-1'])
  t.equal(health.anotherPassing('app-0'), false, 'no probe has passed yet')
  health.reportActive('app-1', true)
  t.equal(health.anotherPassing('app-0'), true)
  health.drain('app-1')
  t.equal(health.anotherPassing('app-0'), true, 'a draining upstream that answers its probes is evidence too')
  health.disable('app-1')
  t.equal(health.anotherPassing('app-0'), false, 'a disabled one is not')
})

t.test("copy: a starting worker takes a sibling's view: active state and counts, an ejection in force until the same moment, when each became ready", async (t) => {
  const sibling = table({ slow_start: 60 * S })
  sibling.health.reportPassive('app-0', 'connect_refused') // ejected for 30 s
  const until = sibling.clock.now() + 30 * S
  sibling.health.reportActive('app-1', false)
  sibling.health.reportActive('app-1', false) // unhealthy
  sibling.health.reportActive('app-1', true) // one success of the two it needs
  sibling.health.reportActive('app-2', false)
  sibling.health.reportActive('app-2', false)
  sibling.clock.advance(10 * S)
  sibling.health.reportActive('app-2', true)
  sibling.health.reportActive('app-2', true) // ready again 10 s ago (a replica restarted in place)
  const back = sibling.clock.now()
  sibling.clock.advance(10 * S)
  const rows = sibling.health.copies()
  t.same(rows.map((r) => [r.id, r.ejectedUntil, r.readySince]), [['app-0', until, null], ['app-1', null, null], ['app-2', null, back]], 'plain JSON: never is null')
  t.same(JSON.parse(JSON.stringify(rows)), rows)

  const fresh = table({ slow_start: 60 * S })
  fresh.clock.set(sibling.clock.now())
  fresh.health.copy([...rows, { ...rows[0]!, id: 'unknown' }, null as never, { id: 'app-0', readySince: 'x' } as never])
  t.same(fresh.events.map((e) => [e.id, e.to, e.reason]), [['app-0', 'ejected', 'ejected'], ['app-1', 'unhealthy', 'active_failed']], 'transitions as for any change; unknown ids and rows that are not plain data are ignored')
  t.match(fresh.events[0]!.detail, /as on a sibling worker/)
  t.equal(fresh.health.readySince('app-2'), back, 'ready again since the same moment: a restart for users last seen before it')
  t.equal(fresh.health.slowStartWeight('app-2'), sibling.health.slowStartWeight('app-2'), 'slow start ramps alike')
  t.equal(fresh.health.readySince('app-1'), -Infinity)
  fresh.health.reportActive('app-1', true)
  t.equal(fresh.health.state('app-1'), 'healthy', "the lead's next success brings it back here as there (the count came with it)")
  fresh.clock.set(until - 1)
  t.equal(fresh.health.state('app-0'), 'ejected')
  fresh.clock.set(until)
  t.equal(fresh.health.state('app-0'), 'healthy', 'the ejection ends when it does on the sibling')
  t.equal(fresh.events.at(-1)!.at, until)
  fresh.health.reportPassive('app-0', 'connect_refused')
  t.equal(fresh.health.snapshot()[0]!.ejectedUntil, until + 60 * S, 'the ejection count came too: the next ejection lasts as long as there')

  // an ejection here that ends later stays; one that ended there is not copied
  const later = table()
  later.clock.set(sibling.clock.now())
  later.health.reportPassive('app-0', 'connect_refused')
  const own = later.clock.now() + 30 * S
  later.health.copy(rows)
  t.equal(later.health.snapshot()[0]!.ejectedUntil, own, 'an ejection of its own that ends later stays')
  const over = table()
  over.clock.set(until)
  over.health.copy(rows)
  t.equal(over.health.state('app-0'), 'healthy', 'an ejection over by now is not copied')
})

t.test('an upstream replaced at a new address starts as one just added: its old ejection and failed checks are forgotten, it is ready from now; a drain stays', async (t) => {
  const { clock, health, events } = table()
  fail(health, 'app-0', 3)
  t.equal(health.state('app-0'), 'ejected', 'the old replica died')
  health.reportActive('app-1', false)
  health.reportActive('app-1', false)
  t.equal(health.state('app-1'), 'unhealthy')
  health.drain('app-2')
  clock.advance(5 * S)
  events.length = 0
  for (const id of ['app-0', 'app-1', 'app-2']) health.replaced(id)
  t.equal(health.state('app-0'), 'healthy', 'no ejection carried over')
  t.equal(health.state('app-1'), 'healthy', 'no failed check carried over')
  t.equal(health.state('app-2'), 'draining', "an operator's drain stays")
  t.same(events.map((e) => [e.id, e.from, e.to, e.reason]), [['app-0', 'ejected', 'healthy', 'added'], ['app-1', 'unhealthy', 'healthy', 'added']])
  for (const id of ['app-0', 'app-1', 'app-2']) t.equal(health.readySince(id), clock.now(), `${id}: ready from now (its users are rehydrated there)`)
  fail(health, 'app-0', 2)
  t.equal(health.state('app-0'), 'healthy', 'its failure count starts again')
  fail(health, 'app-0', 1)
  t.equal(health.snapshot()[0]!.ejectedUntil, clock.now() + 30 * S, 'a first ejection again (not the back-off of the old replica)')
})

t.test("a drain told with an earlier start than the one in force counts from that start (a starting worker learns discovery's drain, then an admin's that began before it)", async (t) => {
  const { clock, health } = table()
  const adminStart = clock.now() - 5 * S // on the siblings: the admin drained first...
  const discoveryStart = clock.now() - 2 * S // ...then the pod was listed terminating (the drain went on, since adminStart)
  health.drain('app-0', false, discoveryStart, 'discovery') // the primary's lists come first
  health.drain('app-0', false, adminStart) // then the recorded admin drain
  t.equal(health.drainingSince('app-0'), adminStart, 'since the earlier start, as on the siblings')
  health.drain('app-0', false, clock.now() - 1 * S)
  t.equal(health.drainingSince('app-0'), adminStart, 'a later start changes nothing')
  health.drain('app-0', false, clock.now() + 10 * S)
  t.equal(health.drainingSince('app-0'), adminStart, 'nor one in the future')
})

t.test('passedAny: a new upstream is no evidence; the first check passed while ready is, told once to onFirstPass', async (t) => {
  const { health } = table()
  let told = 0
  health.onFirstPass(() => told++)
  t.equal(health.passedAny(), false, 'added: healthy, but never probed')
  health.reportActive('app-0', false)
  t.equal(health.passedAny(), false, 'a failed check')
  health.disable('app-1')
  health.reportActive('app-1', true)
  t.equal(health.passedAny(), false, 'a pass while disabled (not ready)')
  health.reportActive('app-2', true)
  health.reportActive('app-0', true)
  t.same([health.passedAny(), told], [true, 1], 'the first pass while ready, told once')
  let late = 0
  health.onFirstPass(() => late++)
  health.reportActive('app-2', true)
  t.equal(late, 0, 'a listener added after the first pass is never called')

  const sibling = table().health
  sibling.copy(health.copies())
  t.equal(sibling.passedAny(), true, "a worker that starts takes it from a sibling's copy (an upstream that passed its last check)")
  const none = table().health
  none.copy(table().health.copies())
  t.equal(none.passedAny(), false, 'a copy with no passed check')
})

/** `n` active check results of `ok` for `id`. */
function probes(health: HealthTable, id: string, ok: boolean, n: number): void {
  for (let i = 0; i < n; i++) health.reportActive(id, ok)
}

t.test('an ejection for a refused connection ends once healthy_threshold active checks in a row pass after it began (Envoy: successful_active_health_check_uneject_host)', async (t) => {
  const { clock, health, events } = table()
  probes(health, 'app-0', true, 5) // it passed its checks before it crashed
  health.reportPassive('app-0', 'connect_refused') // nothing listens: ejected for 30 s
  t.equal(health.state('app-0'), 'ejected')
  t.match(events.at(-1), { to: 'ejected', detail: /^ejected for 30000 ms or until its active checks pass \(2 in a row\) after 1 consecutive failures/ })
  health.reportActive('app-0', true)
  t.equal(health.state('app-0'), 'ejected', 'one pass is not enough (the passes before the ejection do not count)')
  health.reportActive('app-0', false) // a failed check restarts the run
  health.reportActive('app-0', true)
  t.equal(health.state('app-0'), 'ejected', 'the run restarted at the failed check')
  clock.advance(2 * S)
  health.reportActive('app-0', true)
  t.equal(health.state('app-0'), 'healthy', 'back at the second pass in a row, 28 s before the ejection time')
  t.match(events.at(-1), { id: 'app-0', from: 'ejected', to: 'healthy', reason: 'ejection_expired', detail: 'ejection ended: passed 2 active checks in a row', at: clock.now() })
  t.same([health.snapshot()[0]!.ejectedUntil, health.snapshot()[0]!.timesEjected], [null, 1], 'not ejected; the ejection still counts')
  t.equal(health.readySince('app-0'), clock.now(), 'ready from now (users last seen before are rehydrated there)')
})

t.test('back-off after an ejection that passed checks ended: ejected again right after, it is out longer; the count decays from when it really ended', async (t) => {
  const again = table()
  again.health.reportPassive('app-0', 'connect_refused')
  again.clock.advance(2 * S)
  probes(again.health, 'app-0', true, 2)
  t.equal(again.health.state('app-0'), 'healthy')
  again.clock.advance(1 * S)
  again.health.reportPassive('app-0', 'connect_refused') // a crash loop: it is gone again at once
  t.equal(again.health.snapshot()[0]!.ejectedUntil! - again.clock.now(), 60 * S, 'the second ejection: base x 2')
  again.clock.advance(1 * S)
  probes(again.health, 'app-0', true, 2)
  t.equal(again.health.state('app-0'), 'healthy', 'and ended by passed checks too')

  const quiet = table()
  quiet.health.reportPassive('app-0', 'connect_refused') // planned to end at 30 s
  quiet.clock.advance(2 * S)
  probes(quiet.health, 'app-0', true, 2) // ended at 2 s
  quiet.clock.advance(30 * S) // one base_ejection after it ended (but 2 s after its planned end)
  quiet.health.reportPassive('app-0', 'connect_refused')
  t.equal(quiet.health.snapshot()[0]!.ejectedUntil! - quiet.clock.now(), 30 * S, 'one base_ejection of good behaviour since the real end: back to base x 1')
})

t.test('an ejection for 5xx, resets or timeouts is not ended by passed active checks: a probe does not test what failed', async (t) => {
  for (const result of ['server_error', 'connect_failure'] as const) {
    const { health } = table()
    fail(health, 'app-0', 3, result)
    probes(health, 'app-0', true, 5)
    t.equal(health.state('app-0'), 'ejected', `${result}: still ejected after 5 passed checks`)
  }
})

t.test('an ejection for a refused connection while the active checks fail too: one transition back, at the pass that ends both', async (t) => {
  const { health, events } = table()
  health.reportPassive('app-0', 'connect_refused')
  probes(health, 'app-0', false, 2)
  t.equal(health.state('app-0'), 'unhealthy')
  probes(health, 'app-0', true, 2)
  t.equal(health.state('app-0'), 'healthy')
  t.same(events.filter((e) => e.id === 'app-0').map((e) => [e.to, e.reason]), [['ejected', 'ejected'], ['unhealthy', 'active_failed'], ['healthy', 'active_recovered']])
})

t.test('an upstream back early from an ejection ramps up under slow start', async (t) => {
  const { clock, health } = table({ slow_start: 60 * S })
  health.reportPassive('app-0', 'connect_refused')
  clock.advance(3 * S)
  probes(health, 'app-0', true, 2)
  t.equal(health.slowStartWeight('app-0'), 0.1, 'from the minimum share')
  t.equal(health.slowStartWeight('app-0', clock.now() + 30 * S), 0.5, 'half way through the window: half its share')
})

t.test('with active checks off here, an ejection for a refused connection lasts its time', async (t) => {
  const { clock, health } = table({ active: { healthy_threshold: 2, unhealthy_threshold: 2, enabled: false } })
  health.reportPassive('app-0', 'connect_refused')
  t.notMatch(health.snapshot()[0], { state: 'healthy' })
  probes(health, 'app-0', true, 5) // (another worker's results: none come without checks)
  t.equal(health.state('app-0'), 'ejected')
  clock.advance(30 * S)
  t.equal(health.state('app-0'), 'healthy')
})

t.test("another replica's refusal (a down marked refused) ends here the same way, at this table's own passed checks; one not so marked stays timed", async (t) => {
  const { health } = table({ passive: { ...PASSIVE, max_ejection_percent: 100 } })
  health.reportPassive('app-0', 'connect_refused', false, true, true) // another replica's traffic was refused
  health.reportPassive('app-1', 'connect_refused', false, true) // another replica's ejection for other failures (or an older Tether's)
  t.same([health.state('app-0'), health.state('app-1')], ['ejected', 'ejected'])
  probes(health, 'app-0', true, 2)
  probes(health, 'app-1', true, 2)
  t.same([health.state('app-0'), health.state('app-1')], ['healthy', 'ejected'], 'the refusal ends at the passes here; the other runs its time')

  // an ejection until one passed check here (another replica's active verdict), then another
  // replica's traffic is refused there: a real refusal now, ended by healthy_threshold passes, counted
  const { health: h2 } = table()
  h2.reportPassive('app-0', 'connect_refused', true, true)
  h2.reportPassive('app-0', 'connect_refused', false, true, true)
  h2.reportActive('app-0', true)
  t.equal(h2.state('app-0'), 'ejected', 'not ended by the first pass any more')
  h2.reportActive('app-0', true)
  t.equal(h2.state('app-0'), 'healthy')
  t.equal(h2.snapshot()[0]!.timesEjected, 1, 'counted')
})

t.test('copy: a starting worker takes an ejection for a refused connection with the passes counted so far, so it ends at the same check as on its sibling', async (t) => {
  const sibling = table()
  sibling.health.reportPassive('app-0', 'connect_refused')
  sibling.health.reportActive('app-0', true) // one pass of the two
  const fresh = table()
  fresh.clock.set(sibling.clock.now())
  fresh.health.copy(JSON.parse(JSON.stringify(sibling.health.copies())) as never)
  t.equal(fresh.health.state('app-0'), 'ejected')
  for (const h of [sibling.health, fresh.health]) h.reportActive('app-0', true) // the lead's next probe, applied by both
  t.same([sibling.health.state('app-0'), fresh.health.state('app-0')], ['healthy', 'healthy'], 'back on both at the same check')
  // a copy without these fields (an older worker's) is a timed ejection
  const older = table()
  older.clock.set(sibling.clock.now())
  const row = { ...sibling.health.copies()[0]!, ejectedUntil: sibling.clock.now() + 30 * S }
  delete (row as { refused?: boolean }).refused
  older.health.copy([row])
  probes(older.health, 'app-0', true, 3)
  t.equal(older.health.state('app-0'), 'ejected', "an older worker's copy: timed")
})

t.test('the snapshot names the kind of each ejection and what ends it: probes (and how many more passes) or time', async (t) => {
  const { clock, health } = table({ passive: { ...PASSIVE, max_ejection_percent: 100 } }, ['app-0', 'app-1', 'app-2', 'app-3', 'app-4', 'app-5'])
  health.reportPassive('app-0', 'connect_refused')
  fail(health, 'app-1', 3, 'connect_failure')
  fail(health, 'app-2', 3, 'server_error')
  health.reportPassive('app-3', 'connect_refused', true, true) // another replica's active checks found it down
  health.reportPassive('app-4', 'connect_refused', false, true, false, '5xx') // another replica's 5xx ejection
  health.reportPassive('app-5', 'connect_refused', false, true) // an older Tether's down: it does not say why
  const until = clock.now() + 30 * S
  t.same(health.snapshot().map((e) => e.ejection), [
    { reason: 'refused', until, ends: 'probes', passesLeft: 2 },
    { reason: 'error', until, ends: 'time', passesLeft: null },
    { reason: '5xx', until, ends: 'time', passesLeft: null },
    { reason: 'probes', until, ends: 'probes', passesLeft: 1 },
    { reason: '5xx', until, ends: 'time', passesLeft: null },
    { reason: 'unknown', until, ends: 'time', passesLeft: null },
  ])
  health.reportActive('app-0', true)
  t.match(health.ejection('app-0'), { ends: 'probes', passesLeft: 1 }, 'one pass of two: one left')
  health.reportActive('app-0', true)
  t.equal(health.ejection('app-0'), null, 'ended: null, as the snapshot row')
  t.equal(health.snapshot()[0]!.ejection, null)
  clock.advance(30 * S)
  t.same(health.snapshot().map((e) => e.ejection), [null, null, null, null, null, null], 'expired: null')

  const off = table({ active: { healthy_threshold: 2, unhealthy_threshold: 2, enabled: false } })
  off.health.reportPassive('app-0', 'connect_refused')
  t.match(off.health.ejection('app-0'), { reason: 'refused', ends: 'time', passesLeft: null }, 'without active checks here a refusal runs its time: it says so')
})

t.test("out here for a refusal, another replica's ejection for 5xx (or an older Tether's) makes it timed: both end at their time, not one at the probes", async (t) => {
  for (const [told, reason] of [['5xx', '5xx'], ['error', 'error'], [null, 'unknown']] as const) {
    const { health } = table({ passive: { ...PASSIVE, max_ejection_percent: 100 } })
    health.reportPassive('app-0', 'connect_refused') // refused here: would end at 2 passes
    const until = health.snapshot()[0]!.ejectedUntil
    health.reportPassive('app-0', 'connect_refused', false, true, false, told) // another replica ejected it for 5xx
    t.same(health.ejection('app-0'), { reason, until, ends: 'time', passesLeft: null }, `told ${told}: timed, its time unchanged`)
    probes(health, 'app-0', true, 5)
    t.equal(health.state('app-0'), 'ejected', `told ${told}: passed probes do not end it`)
  }
})

t.test("out here for 5xx, another replica's refusal changes nothing: it runs its time (a restarted process is no evidence its answers are good)", async (t) => {
  const { clock, health } = table({ passive: { ...PASSIVE, max_ejection_percent: 100 } })
  fail(health, 'app-0', 3, 'server_error')
  clock.advance(5 * S)
  health.reportPassive('app-0', 'connect_refused', false, true, true, 'refused') // another replica's traffic was refused
  t.same(health.ejection('app-0'), { reason: '5xx', until: clock.now() + 25 * S, ends: 'time', passesLeft: null }, 'still the 5xx ejection, its time unchanged')
  probes(health, 'app-0', true, 5)
  t.equal(health.state('app-0'), 'ejected', 'passed probes do not end it')
  clock.advance(25 * S)
  t.equal(health.state('app-0'), 'healthy', 'back at its time')
  // out until a probe passes here (another replica's probes), then refused there: a refusal
  const { health: h2 } = table()
  h2.reportPassive('app-0', 'connect_refused', true, true)
  h2.reportPassive('app-0', 'connect_refused', false, true, true, 'refused')
  t.match(h2.ejection('app-0'), { reason: 'refused', ends: 'probes', passesLeft: 2 })
})

t.test("copy: a starting worker takes the ejection's reason; an older worker's copy, without one, what its flags say", async (t) => {
  const sibling = table({ passive: { ...PASSIVE, max_ejection_percent: 100 } })
  fail(sibling.health, 'app-0', 3, 'server_error')
  sibling.health.reportPassive('app-1', 'connect_refused')
  sibling.health.reportPassive('app-2', 'connect_refused', true, true)
  const rows = JSON.parse(JSON.stringify(sibling.health.copies())) as Record<string, unknown>[]
  t.same(rows.map((r) => r['reason']), ['5xx', 'refused', 'probes'])
  const fresh = table({ passive: { ...PASSIVE, max_ejection_percent: 100 } })
  fresh.clock.set(sibling.clock.now())
  fresh.health.copy(rows as never)
  t.same(fresh.health.snapshot().map((e) => e.ejection), sibling.health.snapshot().map((e) => e.ejection), 'the same ejections, kinds and ends')
  const older = table({ passive: { ...PASSIVE, max_ejection_percent: 100 } })
  older.clock.set(sibling.clock.now())
  older.health.copy(rows.map(({ reason: _, ...r }) => r) as never)
  t.same(older.health.snapshot().map((e) => e.ejection?.reason), ['unknown', 'refused', 'probes'])
})
