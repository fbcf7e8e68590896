// Drill: hot reload adding an upstream under load. Tether runs from a config file it watches;
// the file is rewritten with a fourth replica. The reload applies without touching the
// listener, no request fails, no acknowledged update is lost, no pinned user moves
// (on_scale_up: persistent), and new users land on the new replica too.
import t from 'tap'
import { writeFileSync } from 'node:fs'
import { loadConfigFile } from '../../src/config/index.js'
import { tempFile } from '../fixtures/cli.js'
import { changedAfter, measure } from '../fixtures/drill-figures.js'
import { Front } from '../fixtures/drill-load.js'
import { assertKept, drillYaml, metric, report, scaled, startDrillTether, startLoad, startReplicas } from '../fixtures/drill.js'

const USERS = scaled(40)
const NEWCOMERS = scaled(40)
const THINK = 100
const STEADY = scaled(5)
const AFTER = scaled(5)

t.test('hot reload adding an upstream under load: no failure, no loss, nobody moves, new users reach the new upstream', async (t) => {
  const replicas = await startReplicas(t, ['app-0', 'app-1', 'app-2', 'app-3'])
  const first = [...replicas.values()].slice(0, 3)
  const file = tempFile('proxy.yaml', drillYaml(first))
  const dt = await startDrillTether(t, loadConfigFile(file, {}), { configPath: file })
  const port = dt.tether.port
  const load = startLoad(t, { users: USERS, front: new Front([dt.url]), key: 'cookie', thinkMs: THINK })
  const steadyFrom = await load.steady(STEADY)

  const at = performance.now()
  writeFileSync(file, drillYaml(replicas.values()))
  const added = await dt.transition((e) => e.id === 'app-3' && e.reason === 'added', at, 10_000, 'app-3 to be added')
  const newcomers = startLoad(t, { users: NEWCOMERS, front: new Front([dt.url]), key: 'cookie', thinkMs: THINK, prefix: 'n', seed: 12 })
  await newcomers.waitEach(AFTER, 30_000)
  await load.waitEach(AFTER, 30_000, load.mark())
  const everyoneServed = performance.now()
  await Promise.all([load.stop(), newcomers.stop()])

  const byUser = [...load.byUser, ...newcomers.byUser]
  const f = measure(byUser, { at, end: everyoneServed, steadyFrom, detectedAt: added.at, upstream: null })
  const strays = changedAfter(load.byUser, at)
  const onNew = newcomers.byUser.filter((s) => s[0]?.upstream === 'app-3').length
  const reloads = await metric(dt.tether, 'tether_config_reloads_total{result="ok"}')
  const figures = { ...f, extra: { detected_by: 'health(added)', reloads, strays: strays.length, newcomers_on_new: `${onNew}/${NEWCOMERS}` } }
  report(t, 'hot-reload-add', { figures, at, timeline: { applied: added.at, everyone_served: everyoneServed }, samples: byUser.flat(), logs: [dt] })
  assertKept(t, f, byUser.flat())
  t.equal(dt.tether.port, port, 'the listener is untouched')
  t.same(dt.tether.router.ids, ['app-0', 'app-1', 'app-2', 'app-3'], 'the new upstream is in the set')
  t.same(strays, [], 'no pinned user moved')
  t.ok(onNew > 0, `new users land on the new upstream (${onNew}/${NEWCOMERS})`)
  t.ok(newcomers.byUser.every((s) => s.every((x) => x.upstream === s[0]!.upstream)), 'new users are pinned too')
})
