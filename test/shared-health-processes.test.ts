// health.shared: redis between real Tether processes: a real redis-server, real upstreams on
// 127.0.0.1, and three CLI processes from dist/ sharing health through it:
// - `two`, the replica under test, with `workers: 2` (its workers each subscribe to Redis);
// - `passive`, active checks off: what it tells comes from its live traffic only;
// - `probing`, whose active checks (on another path than `two`'s) fail for app `d`.
// `two` never finds anything down itself: its unhealthy_threshold (100 failed probes, about 50 s
// at one per 500 ms after a failure) is out of reach within the test, and it gets no traffic. So an ejection there is another replica's, and one that ends well before the
// 5 minute ejection time ended at `two`'s own passed probe (its probes of c, refused while c is
// closed, are far from its unhealthy_threshold too).
import t from 'tap'
import { tempFile } from './fixtures/cli.js'
import { freePorts } from './fixtures/ports.js'
import { request, startPrimary, startSingle, workerAdmins, workersYaml } from './fixtures/primary-process.js'
import { startRedis } from './fixtures/redis-server.js'
import { startUpstream, type Upstream } from './fixtures/upstream.js'
import { waitFor } from './fixtures/wait.js'

interface Row { id: string; state: string }
interface Change { worker?: number; upstream: string; to: string; reason: string; detail: string }

/** One replica's yaml: `workers`, health shared through `redisUrl`, `health` lines added under `health:`. */
async function replicaYaml(apps: readonly Upstream[], redisUrl: string, workers: number, health: readonly string[]): Promise<{ file: string; listen: number; admin: string }> {
  const [listen, adminPort] = await freePorts(2)
  const file = tempFile('proxy.yaml', workersYaml({
    listen: listen!, adminPort: adminPort!, workers, upstreams: apps.map((a) => ({ id: a.id, url: a.url })),
    extra: [
      'affinity: { key: header, header: { name: X-Tenant } }',
      `state: { store: redis, redis: { url: "${redisUrl}", key_prefix: "procs:" } }`,
      'health:',
      '  shared: redis',
      '  passive: { base_ejection: 5m, max_ejection: 10m, max_ejection_percent: 100 }',
      ...health.map((l) => `  ${l}`),
    ],
  }))
  return { file, listen: listen!, admin: `http://127.0.0.1:${adminPort}` }
}

/** The `upstream health changed` lines in `out` about `id`. */
function changes(out: string, id: string): Change[] {
  return out.split('\n').slice(0, -1).filter((l) => l.includes('"upstream health changed"')).map((l) => JSON.parse(l) as Change).filter((c) => c.upstream === id)
}

/** Each row's state in `GET /upstreams` of the admin listener at `admin`. */
async function states(admin: string): Promise<Map<string, string>> {
  const r = await request(`${admin}/upstreams`, null)
  return new Map((JSON.parse(r.body) as Row[]).map((row) => [row.id, row.state]))
}

t.test('two Tether processes (one with two workers) share health through a real Redis', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  // d fails the probes of `probing` (its path) once `dFails`, and passes those of `two`
  let dFails = false
  const apps = await Promise.all(['a', 'b', 'c', 'd'].map((id) => startUpstream(id, (req, res) => {
    res.statusCode = dFails && id === 'd' && req.url === '/health-probing' ? 503 : 200
    res.end(`${id}\n`)
  })))
  t.teardown(() => Promise.all(apps.map((a) => a.close())))
  const [, , c, d] = apps as [Upstream, Upstream, Upstream, Upstream]

  const twoConf = await replicaYaml(apps, redis.url, 2, ['active: { path: /health-two, interval: 2s, timeout: 2s, unhealthy_threshold: 100, healthy_threshold: 1 }'])
  const two = await startPrimary(t, twoConf.file)
  await waitFor(() => workerAdmins(two.out()).size === 2, 60_000, 'both workers of `two` to listen')
  const workers = [...workerAdmins(two.out()).values()]
  const onEvery = async (id: string, state: string, what: string): Promise<void> => {
    await waitFor(async () => {
      for (const w of workers) if ((await states(w)).get(id) !== state) return false
      return true
    }, 30_000, what, 50)
  }
  await onEvery('d', 'healthy', 'both workers of `two` to start with every app healthy')

  // (a) passive, shared: `passive` finds c refusing on live traffic; `two` ejects it on both workers
  const passiveConf = await replicaYaml(apps, redis.url, 1, ['active: { enabled: false }'])
  await startSingle(t, passiveConf.file)
  await c.close()
  await waitFor(async () => {
    for (let i = 0; i < 20; i++) await request(`http://127.0.0.1:${passiveConf.listen}/`, null, { headers: { 'x-tenant': `t${i}` } })
    return (await states(passiveConf.admin)).get('c') === 'ejected'
  }, 30_000, '`passive` to eject c on a refused connection (its subscription may come up after its first requests)', 100)
  await onEvery('c', 'ejected', 'both workers of `two` to eject c')
  t.pass('an upstream refusing on one replica is ejected on both workers of the other')
  for (const w of [0, 1]) {
    const ejected = changes(two.out(), 'c').filter((e) => e.worker === w && e.to === 'ejected')
    t.equal(ejected.length, 1, `worker ${w} of \`two\` ejected c once`)
    // the time told is what is left of the sender's 300000 ms when it arrives (a loaded host: 299999)
    const told = /^ejected for (\d+) ms or until its active checks pass \(1 in a row\) after/.exec(ejected[0]?.detail ?? '')
    t.ok(told !== null && Number(told[1]) > 290_000 && Number(told[1]) <= 300_000, `worker ${w}: a refusal on live traffic: for the ejection time or until its own probes pass (${ejected[0]?.detail})`)
  }
  // c listens again (a restarted pod): both workers of `two` take it back at their lead's passed
  // probe, long before the 5 minutes; `passive`, without active checks, keeps it out
  await new Promise<void>((resolve) => c.server.listen(c.port, '127.0.0.1', resolve))
  await onEvery('c', 'healthy', 'both workers of `two` to end the ejection of c at their passed probe')
  for (const w of [0, 1]) {
    const seen = changes(two.out(), 'c').filter((e) => e.worker === w && e.reason !== 'added')
    t.match(seen.map((e) => [e.to, e.reason]), [['ejected', 'ejected'], ['healthy', 'ejection_expired']], `worker ${w} of \`two\`: c back at a passed probe`)
    t.equal(seen[1]?.detail, 'ejection ended: passed 1 active checks in a row', `worker ${w}: ended by its lead's probe`)
  }
  t.equal((await states(passiveConf.admin)).get('c'), 'ejected', '`passive` (no active checks) keeps it out for its ejection time')

  // (b) active, shared: `probing`'s probes of d fail; `two` ejects d until its own probe passes
  const probingConf = await replicaYaml(apps, redis.url, 1, ['active: { path: /health-probing, interval: 500ms, timeout: 2s, unhealthy_threshold: 1 }'])
  const probing = await startSingle(t, probingConf.file)
  // what `probing` tells reaches `two` once its connection to Redis is up: nothing announces
  // that, so poll with a drain (and undrain it)
  await waitFor(async () => {
    await request(`${probingConf.admin}/upstreams/a/drain`, null, { method: 'POST' })
    return (await states(workers[0]!)).get('a') === 'draining'
  }, 30_000, 'a drain through `probing` to reach `two`', 100)
  await request(`${probingConf.admin}/upstreams/a/undrain`, null, { method: 'POST' })
  await onEvery('a', 'healthy', 'the undrain to reach both workers of `two`')
  dFails = true
  await waitFor(() => changes(probing.out(), 'd').some((e) => e.to === 'unhealthy'), 30_000, '`probing` to find d unhealthy', 50)
  // both workers of `two` were out for less than the ejection time (5 min): until a probe passed there
  await waitFor(() => [0, 1].every((w) => changes(two.out(), 'd').some((e) => e.worker === w && e.reason === 'ejection_expired')), 30_000, 'both workers of `two` to end the ejection of d', 50)
  for (const w of [0, 1]) {
    const seen = changes(two.out(), 'd').filter((e) => e.worker === w && e.reason !== 'added')
    t.match(seen.map((e) => e.to), ['ejected', 'healthy'], `worker ${w} of \`two\`: d ejected, then healthy again`)
    t.match(seen[0]?.detail, /or until an active check passes here/, `worker ${w}: until its own probe passes`)
    t.equal(seen[1]?.detail, 'ejection ended: an active check passed here', `worker ${w}: ended by \`two\`'s passed probe`)
  }
  await onEvery('d', 'healthy', 'both workers of `two` to route to d again')
  t.equal((await states(probingConf.admin)).get('d'), 'unhealthy', 'while `probing` still finds it down')
})
