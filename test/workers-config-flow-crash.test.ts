// What config a worker runs (`workers` > 1): the primary reads the file, and every worker runs the
// text the primary accepted (the sections that need new workers as its slot was started, the live
// ones as accepted last), never the file as it is on disk when the worker starts. Here: a bad edit
// followed by a crash does not leave a slot in a crash loop, and the restarted worker runs the live
// changes accepted before; a config warning is logged by the primary alone, not by each worker.
// Split from workers-config-flow.test.ts (shared setup in test/fixtures/workers-config-flow.ts),
// with workers-config-flow-failed-roll.test.ts and workers-config-flow-roll.test.ts.
import t from 'tap'
import { writeFileSync } from 'node:fs'
import { tempFile } from './fixtures/cli.js'
import { freePorts } from './fixtures/ports.js'
import { request, startPrimary, workerPids, workersYaml } from './fixtures/primary-process.js'
import { startChildUpstream } from './fixtures/child-upstream.js'
import { waitFor } from './fixtures/wait.js'
import { startRedis } from './fixtures/redis-server.js'
import { startAll } from './fixtures/children.js'
import { appAndPrimary, count } from './fixtures/workers-config-flow.js'

t.test('a worker restarted after a crash runs what the primary accepted (its live changes too), not a bad file left on disk', async (t) => {
  const [a, b] = await startAll([startChildUpstream('app-0'), startChildUpstream('app-1')])
  t.teardown(() => Promise.all([a.kill(), b.kill()]))
  const [port, adminPort] = await freePorts(2)
  const yaml = (ups: { id: string; url: string }[]): string => workersYaml({ listen: port, adminPort, workers: 2, upstreams: ups })
  const file = tempFile('workers-config-flow-crash.yaml', yaml([{ id: 'app-0', url: a.url }]))
  const { proc, out } = await startPrimary(t, file)
  // a live change (an upstream added), accepted; then an edit that does not parse
  writeFileSync(file, yaml([{ id: 'app-0', url: a.url }, { id: 'app-1', url: b.url }]))
  proc.kill('SIGHUP')
  await waitFor(() => count(out(), '"config reloaded"') >= 2, 60_000, 'both workers to apply the new upstream')
  writeFileSync(file, 'workers: 2\nupstreams: [oops\n')
  proc.kill('SIGHUP')
  await waitFor(() => out().includes('config reload rejected'), 60_000, 'the bad edit to be rejected')
  t.equal(count(out(), 'config reload rejected'), 1, 'rejected once, by the primary (the workers are not given it)')

  // a user on app-1, then one worker dies
  let cookie: string | null = null
  for (let i = 0; i < 40 && cookie === null; i++) {
    const r = await request(`http://127.0.0.1:${port}/`, null)
    if (JSON.parse(r.body).id === 'app-1') cookie = r.setCookie[0]!.split(';')[0]!
  }
  t.ok(cookie, 'a user placed on app-1')
  const [victim] = workerPids(proc)
  const listening = count(out(), '"tether listening"')
  process.kill(victim!, 'SIGKILL')
  await waitFor(() => count(out(), '"tether listening"') > listening, 60_000, 'the restarted worker to listen')
  t.equal(count(out(), '"worker died; restarting it"'), 1, 'one restart: it started (the bad file on disk is not what it runs)')
  t.equal(workerPids(proc).length, 2, 'two workers again')
  // each request on a new connection may reach either worker: both know app-1
  const ids = new Set<string>()
  for (let i = 0; i < 20; i++) ids.add(JSON.parse((await request(`http://127.0.0.1:${port}/`, cookie)).body).id)
  t.same([...ids], ['app-1'], "the user stays on app-1 on both workers: the restarted one runs the reload's live change")
  t.equal(count(out(), '"worker died; restarting it"'), 1, 'no crash loop')
  proc.kill('SIGTERM')
  await waitFor(() => proc.exitCode !== null, 30_000, 'the primary to stop')
})

t.test('a config warning (state.redis.name without sentinels) is logged by the primary alone, once at start and once per reload, not by each worker', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const line = `state: { store: redis, redis: { url: "${redis.url}", name: mymaster } }`
  const { proc, out, reloadWith } = await appAndPrimary(t, 'warning', (_req, res) => res.end('ok'), line)
  const warned = (): number => count(out(), '"config warning: a key has no effect as set"')
  t.equal(warned(), 1, 'once at start')
  const reloaded = count(out(), '"config reloaded"')
  reloadWith(line)
  await waitFor(() => count(out(), '"config reloaded"') >= reloaded + 2, 60_000, 'both workers to reload')
  // the primary logs it before it tells the workers, but the workers write their lines to the
  // same pipe themselves: theirs may come first (seen on a loaded CI host)
  await waitFor(() => warned() >= 2, 60_000, "the reload's warning")
  t.equal(warned(), 2, 'once more for the reload, by the primary')
  t.match(out(), /"worker":"primary"[^\n]*"config warning: a key has no effect as set"|"config warning: a key has no effect as set"[^\n]*"worker":"primary"/, 'the reload\'s line is the primary\'s')
  proc.kill('SIGTERM')
  await waitFor(() => proc.exitCode !== null, 30_000, 'the primary to stop')
})
