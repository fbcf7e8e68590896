// Drill: SIGTERM to one of two Tether processes (dist/cli.js, one cookie secret) while slow
// uploads are in flight through it, under load (a quarter of the users upload a body that
// trickles in over 2 s). As Kubernetes does with deploy/'s preStop, the Tether first leaves the
// Service's endpoints (the front stops sending it new requests) and gets SIGTERM once the
// requests already sent to it are only the slow uploads. Every request in flight on it
// completes (200, Connection: close), it exits 0 within shutdown.grace_period (10 s), the
// other Tether carries on with the same upstreams (the cookie pins them), no request fails and
// no acknowledged update is lost.
// SIGTERM at the moment of the endpoint removal (no preStop) is not this drill: Tether resets a
// request that reached a kept-alive connection just before and that it had not read yet, as
// the shutdown closes idle connections (7 of 30 requests in flight, in a run on a loaded machine).
import t from 'tap'
import { DEFAULTS } from '../../src/config/schema.js'
import { changedAfter, measure, succeeded } from '../fixtures/drill-figures.js'
import { Front } from '../fixtures/drill-load.js'
import { assertKept, drillYaml, report, scaled, startCliTether, startLoad, startReplicas } from '../fixtures/drill.js'
import { request } from '../fixtures/upstream.js'
import { waitFor } from '../fixtures/wait.js'

const USERS = scaled(40)
const THINK = 100
const STEADY = scaled(2)
const AFTER = scaled(2)
const SLOW_MS = 2_000
/** Slow uploads that must be in flight through the Tether when it gets SIGTERM. */
const SLOW_IN_FLIGHT = 3

t.test('SIGTERM with slow uploads in flight: they complete, the process exits 0 in the grace period, nothing fails or is lost', async (t) => {
  const replicas = await startReplicas(t, ['app-0', 'app-1', 'app-2'])
  const yaml = drillYaml(replicas.values(), ['affinity: { cookie: { secret: [drill-sigterm-secret-0123456789] } }'])
  const [a, b] = await Promise.all([startCliTether(t, 'tether-a', yaml), startCliTether(t, 'tether-b', yaml)])
  const front = new Front([a!.url, b!.url])
  const load = startLoad(t, { users: USERS, front, key: 'cookie', thinkMs: THINK, slow: (u) => u % 4 === 0, slowMs: SLOW_MS })
  const steadyFrom = await load.steady(STEADY, 60_000)
  // slow uploads under way through Tether a, with more than half their body still to come
  const throughA = (): { slow: boolean; start: number }[] => [...load.current.values()].filter((c) => c.via === 0)
  await load.waitUntil(() => throughA().filter((c) => c.slow && performance.now() - c.start < SLOW_MS * 0.4).length >= SLOW_IN_FLIGHT, 30_000, `${SLOW_IN_FLIGHT} slow uploads starting through Tether a`)

  // the endpoint is removed; the preStop lasts until only the slow uploads are left on Tether a
  const removedAt = performance.now()
  front.remove(0)
  await load.waitUntil(() => throughA().every((c) => c.slow), 10_000, 'the quick requests through Tether a to finish')
  const at = performance.now()
  a!.signal('SIGTERM')
  // polled: nothing announces readiness to another process but /readyz itself
  let notReady = 0
  await waitFor(async () => (await request(`${a!.adminUrl}/readyz`).catch(() => ({ status: 0 }))).status === 503 && (notReady = performance.now()) > 0, 5_000, 'Tether a\'s /readyz to turn 503')
  const exit = await a!.exited
  const exitedAt = performance.now()
  await load.waitEach(AFTER, 60_000, load.mark())
  const everyoneServed = performance.now()
  await load.stop()

  const inFlight = load.all().filter((s) => s.via === 0 && s.start < at && s.end >= at)
  const slow = inFlight.filter((s) => s.slow)
  const closed = inFlight.filter((s) => s.connection === 'close')
  const strays = changedAfter(load.byUser, at)
  const f = measure(load.byUser, { at, end: exitedAt, steadyFrom, detectedAt: notReady, upstream: null })
  const figures = {
    ...f,
    extra: {
      detected_by: 'readyz(503)', in_flight_at_sigterm: inFlight.length, slow_in_flight: slow.length,
      completed: `${inFlight.filter(succeeded).length}/${inFlight.length}`, connection_close: `${closed.length}/${inFlight.length}`,
      slow_longest_ms: Math.round(Math.max(...slow.map((s) => s.end - s.start))), exit_code: exit.code, exit_ms: Math.round(exitedAt - at), strays: strays.length,
    },
  }
  report(t, 'sigterm-slow', { figures, at, timeline: { endpoint_removed: removedAt, not_ready: notReady, exited: exitedAt, everyone_served: everyoneServed }, samples: load.all(), logs: [a!, b!] })
  assertKept(t, f, load.all())
  t.ok(slow.length >= SLOW_IN_FLIGHT, `slow uploads were in flight at SIGTERM (${slow.length})`)
  t.equal(inFlight.filter(succeeded).length, inFlight.length, 'every request in flight on the stopping Tether completed')
  t.same(inFlight.filter((s) => s.end > notReady && s.connection !== 'close').map((s) => `user ${s.user} #${s.seq}`), [], 'those answered after SIGTERM carry Connection: close')
  t.same(exit, { code: 0, signal: null }, 'the stopping Tether exits 0')
  t.ok(exitedAt - at < DEFAULTS.shutdown.grace_period, `within the grace period (${Math.round(exitedAt - at)} ms)`)
  t.same(strays, [], 'nobody moved')
})
