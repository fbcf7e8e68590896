// Drill: a replica frozen with SIGSTOP (a GC pause, a CPU-throttled or stopped container: the
// kernel still accepts its connections, nothing answers) for longer than the probe window, then
// thawed with SIGCONT, under load from users pinned by Tether's cookie, with health checks at
// their defaults (OPTIONS * every 2 s, 500 ms timeout) and the memory checkpoint store.
// Targets (issue 11): clients that wait 10 s see no failed request, no acknowledged update is
// lost, no pinned user's request hangs longer than 3 s (1 s with retries.hedge_after: 250ms),
// every pinned user is moved and rehydrated, and none is sent back after SIGCONT.
import t, { type Test } from 'tap'
import { DEFAULTS } from '../../src/config/schema.js'
import { measure, succeeded } from '../fixtures/drill-figures.js'
import { Front } from '../fixtures/drill-load.js'
import { OUT, drillConfig, report, scaled, startDrillTether, startLoad, startReplicas } from '../fixtures/drill.js'

const USERS = scaled(40)
/** Mean think time between a user's requests, ms (40 users: about 400 requests/s). */
const THINK = 100
/** Requests every user makes before the fault, and after the replica is healthy again. */
const STEADY = scaled(10)
const AFTER = scaled(10)
const { interval, timeout } = DEFAULTS.health.active
/** The probe window: the longest a frozen replica can go unnoticed (interval + 10% jitter + timeout). */
const PROBE_WINDOW = interval * 1.1 + timeout

async function sigstop(t: Test, name: string, hedgeAfter: number | null, hangTarget: number): Promise<void> {
  const replicas = await startReplicas(t, ['app-0', 'app-1', 'app-2'])
  const dt = await startDrillTether(t, drillConfig(replicas.values(), { retries: { hedge_after: hedgeAfter } }))
  const load = startLoad(t, { users: USERS, front: new Front([dt.url]), key: 'cookie', thinkMs: THINK })
  await load.waitEach(2, 30_000) // warm-up: connections open, code paths hot
  const steadyFrom = performance.now()
  await load.waitEach(STEADY, 30_000)

  // freeze the replica serving the most users
  const { id, users: pinned } = load.busiest()
  const replica = replicas.get(id)!
  const at = performance.now()
  replica.freeze()
  const out = await dt.transition((e) => e.id === id && OUT.has(e.to), at, 15_000, `${id} to be taken out`)
  await load.waitUntil(() => pinned.every((u) => load.byUser[u]!.some((s) => s.end >= at && succeeded(s) && s.upstream !== id)), 15_000, 'every pinned user to be answered elsewhere')
  const allMoved = performance.now()
  // stay frozen past the probe window, every user served meanwhile
  const mark = load.mark()
  await load.waitUntil(() => performance.now() - at > PROBE_WINDOW + 300 && load.byUser.every((s, u) => s.length >= mark[u]! + 3), 15_000, 'the freeze to outlast the probe window')
  const thawAt = performance.now()
  replica.thaw()
  const back = await dt.transition((e) => e.id === id && e.to === 'healthy', thawAt, 15_000, `${id} to be healthy again`)
  await load.waitEach(AFTER, 30_000, load.mark())
  await load.stop()

  const f = measure(load.byUser, { at, end: allMoved, steadyFrom, detectedAt: out.at, upstream: id }, {})
  const m = f.moves!
  const lastMove = Math.max(...m.movedAt.values())
  const figures = {
    ...f,
    extra: {
      hedge_after_ms: hedgeAfter, frozen_ms: Math.round(thawAt - at), detected_by: `${out.to}(${out.reason})`,
      rehydrated: `${m.rehydrated.length}/${m.victims.length}`, sent_back: m.sentBack.length, strays: m.strays.length,
      healthy_after_sigcont_ms: Math.round(back.at - thawAt),
    },
  }
  report(t, name, { figures, at, timeline: { taken_out: out.at, first_moved: Math.min(...m.movedAt.values()), last_moved: lastMove, sigcont: thawAt, healthy: back.at }, samples: load.all(), logs: [dt] })
  const failures = load.all().filter((s) => !succeeded(s))
  t.equal(f.failed, 0, `no failed request for clients that wait 10 s (first: ${JSON.stringify(failures.slice(0, 3))})`)
  t.equal(f.lost, 0, `no lost acknowledged update (${f.lostWhy.slice(0, 3).join('; ')})`)
  t.ok(f.longestHangMs <= hangTarget, `longest hang ${f.longestHangMs} ms <= ${hangTarget} ms`)
  t.ok(m.victims.length > 0, `the frozen replica had pinned users (${m.victims.length})`)
  t.equal(m.moved.length, m.victims.length, 'every pinned user moved')
  t.equal(m.rehydrated.length, m.victims.length, 'every moved user was rehydrated on its new replica')
  t.same(m.sentBack, [], 'no moved user was sent back after SIGCONT')
  t.ok(thawAt - at > PROBE_WINDOW, `frozen for longer than the probe window (${Math.round(thawAt - at)} ms > ${PROBE_WINDOW} ms)`)
  // a hedge may move a user of a healthy replica whose answer was merely slow: counted, not asserted
  if (hedgeAfter === null) t.same(m.strays, [], 'no user of another replica moved')
}

t.test('SIGSTOP of a replica with default health settings: no failure, no loss, hang <= 3 s, pinned users moved and kept', async (t) => {
  await sigstop(t, 'sigstop-defaults', null, 3_000)
})

t.test('SIGSTOP of a replica with retries.hedge_after 250ms: the longest hang is at most 1 s', async (t) => {
  await sigstop(t, 'sigstop-hedge-250ms', 250, 1_000)
})
