// Drill: three Tether processes (dist/cli.js) sharing one Redis (checkpoints, affinity.shared,
// health.shared) in front of three counter replicas, users keyed by an X-Tenant header and
// spread over every Tether request by request (a Service in front). First the busiest replica
// is killed (`kill -9`): its users move once, and every Tether agrees where. Then one Tether is
// killed (`kill -9`): the front takes it out at its first refused connection and retries, once,
// a GET whose connection was reset before any answer (as an ingress retrying on reset would);
// nobody moves. Finally every user is asked through each surviving Tether and through a new one
// started afterwards: all agree on the user's upstream, and the counts go on without a loss.
import t from 'tap'
import { changedAfter, measure, moveFigures, succeeded } from '../fixtures/drill-figures.js'
import { Front } from '../fixtures/drill-load.js'
import { OUT, assertKept, assertMoves, drillYaml, firstOf, report, scaled, startCliTether, startLoad, startReplicas, type CliTether } from '../fixtures/drill.js'
import { startRedis } from '../fixtures/redis-server.js'

const USERS = scaled(40)
const THINK = 100
const STEADY = scaled(5)
const AFTER = scaled(5)

t.test('three Tethers sharing Redis: a replica killed, then a Tether killed; no failure, no loss, every Tether agrees on every user', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const replicas = await startReplicas(t, ['app-0', 'app-1', 'app-2'])
  const yaml = drillYaml(replicas.values(), [
    'affinity: { key: header, header: { name: X-Tenant }, shared: redis }',
    'health: { shared: redis }',
    `state: { store: redis, timeout: 1s, redis: { url: "${redis.url}", key_prefix: "drill:" } }`,
  ])
  const tethers: CliTether[] = await Promise.all([0, 1, 2].map((i) => startCliTether(t, `tether-${i}`, yaml)))
  const front = new Front(tethers.map((x) => x.url), { retryResets: true })
  const load = startLoad(t, { users: USERS, front, key: 'header', thinkMs: THINK })
  const steadyFrom = await load.steady(STEADY)

  // 1. kill -9 of the busiest replica
  const { id, users: pinned } = load.busiest()
  const at = performance.now()
  await replicas.get(id)!.kill()
  const anyLog = (l: () => void): (() => void) => { const offs = tethers.map((x) => x.onLog(l)); return () => offs.forEach((off) => off()) }
  const out = await firstOf(anyLog, () => tethers.flatMap((x) => x.transitions()).filter((e) => e.id === id && e.at >= at - 5 && OUT.has(e.to)).sort((a, b) => a.at - b.at)[0], 15_000, `a Tether to take ${id} out`)
  await load.waitMovedOff(pinned, id, at, 15_000)
  const allMoved = performance.now()
  await load.waitEach(AFTER, 30_000, load.mark())
  const f1 = measure(load.byUser, { at, end: allMoved, steadyFrom, detectedAt: out.at, upstream: id })
  const m = f1.moves!
  const outOn = tethers.map((x) => x.transitions().some((e) => e.id === id && e.at >= at - 5 && OUT.has(e.to)))

  // 2. kill -9 of a Tether
  const at2 = performance.now()
  tethers[0]!.signal('SIGKILL')
  await tethers[0]!.exited
  await load.waitEach(AFTER, 30_000, load.mark())
  const everyoneServed = performance.now()
  await load.stop()
  const strays2 = changedAfter(load.byUser, at2)
  const retried = load.all().filter((s) => s.start >= at2 - 1_000 && s.attempts > 1).length

  // 3. every user through each surviving Tether, and through a new one
  const fresh = await startCliTether(t, 'tether-3', yaml)
  front.add(fresh.url)
  const all = [...tethers.slice(1), fresh]
  const disagree: string[] = []
  await Promise.all(load.byUser.map(async (samples, u) => {
    const home = samples.findLast(succeeded)?.upstream
    for (const x of all) { // one user's requests one after the other, as its counter needs
      const s = await load.ask(u, front.urls.indexOf(x.url))
      if (!succeeded(s) || s.upstream !== home) disagree.push(`${load.name(u)} via ${x.name}: ${s.upstream ?? s.error} (home ${home})`)
    }
  }))
  const f2 = measure(load.byUser, { at: at2, end: everyoneServed, steadyFrom, steadyTo: at, detectedAt: front.removedAt.get(0) ?? null, upstream: null })

  const figures = {
    ...f1,
    extra: {
      tethers: 3, detected_by: `${out.to}(${out.reason})`, taken_out_on: `${outOn.filter(Boolean).length}/3`,
      ...moveFigures(m),
    },
  }
  report(t, 'shared-tethers-replica-kill', { figures, at, timeline: { taken_out: out.at, first_moved: Math.min(...m.movedAt.values()), last_moved: Math.max(...m.movedAt.values()) }, logs: [...tethers, fresh] })
  const figures2 = {
    ...f2,
    extra: { detected_by: 'front(refused)', front_retries: retried, strays: strays2.length, agreement: `${USERS * all.length - disagree.length}/${USERS * all.length}` },
  }
  report(t, 'shared-tethers-tether-kill', { figures: figures2, at: at2, timeline: { front_removed: front.removedAt.get(0) ?? null, everyone_served: everyoneServed }, samples: load.all() })

  assertKept(t, f2, load.all())
  assertMoves(t, m, id)
  t.same(strays2, [], 'nobody moved when a Tether died')
  t.same(disagree, [], 'every surviving Tether and a new one send every user to the same upstream')
})
