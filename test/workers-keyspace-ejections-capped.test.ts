// With two workers and `health.shared: redis`, each at its max_ejection_percent: the two found
// two upstreams failing before they heard each other (Redis held their `down`s: CLIENT PAUSE
// WRITE), so each ejects its own and refused its sibling's. The lead writes back after a
// FLUSHALL the record of the ejection it refused, its finder SIGKILLed (and restarted) before:
// the record is its finder's evidence, and each reader applies it within its own limit, so a
// replica started after the loss finds the records one started before it found. A real
// redis-server, a real primary with two worker processes, real upstreams; nothing sleeps.
import t from 'tap'
import http from 'node:http'
import { startTether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { startRedis, redisCli } from './fixtures/redis-server.js'
import { startUpstream, testConfig } from './fixtures/upstream.js'
import { slotOf, workerPids } from './fixtures/primary-process.js'
import { waitFor } from './fixtures/wait.js'
import { connectionTo, ejectedOn, ejectThrough, flushed, get, workersOnRedis } from './fixtures/workers-keyspace.js'

/** HGETALL's lines as field -> value. */
const hash = (raw: string): Map<string, string> => {
  const l = raw.trim().split('\n')
  return new Map(l.flatMap((_, i) => (i % 2 === 0 ? [[l[i]!, l[i + 1]!] as const] : [])))
}

t.test("with two workers at their max_ejection_percent, a sibling's ejection the lead refused is written back by the lead after a FLUSHALL once its finder was SIGKILLed: a replica started after the loss finds both records", async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const prefix = 'wkc:'
  // app-0 fails /fail-0, app-1 fails /fail-1 (a 500: timed by base_ejection), app-2 answers all
  const apps = await Promise.all(['app-0', 'app-1', 'app-2'].map((id) => startUpstream(id, (req, res) => {
    res.statusCode = req.url === `/fail-${id.slice(-1)}` ? 500 : 200
    res.end(`${id}\n`)
  })))
  t.teardown(() => Promise.all(apps.map((a) => a.close())))
  // one failure ejects, for a minute; one of three upstreams ejected at most (max(1, floor(3 * 50%)))
  const w = await workersOnRedis(t, redis, prefix, apps,
    '{ shared: redis, active: { enabled: false }, passive: { consecutive_failures: 1, base_ejection: 60s, max_ejection: 60s, max_ejection_percent: 50 } }', '5s')
  const { lead, lines } = w
  const other = 1 - lead
  const toLead = await connectionTo(t, w, lead)
  const toOther = await connectionTo(t, w, other)

  // both find an upstream failing before they hear each other: Redis holds the writes (their
  // `down`s and records) until both ejected, then passes them on in order
  await redisCli(redis.port, 'CLIENT', 'PAUSE', '30000', 'WRITE')
  t.teardown(() => redisCli(redis.port, 'CLIENT', 'UNPAUSE'))
  await ejectThrough(w, toLead, lead, '/fail-0', 'app-0')
  await ejectThrough(w, toOther, other, '/fail-1', 'app-1')
  await redisCli(redis.port, 'CLIENT', 'UNPAUSE')
  const key = `${prefix}peers:ejections`
  await waitFor(async () => (await redisCli(redis.port, 'HLEN', key)).trim() === '2', 5_000, 'both ejections to be recorded')
  const heard = (slot: number, id: string): boolean => lines().some((l) => l['msg'] === 'health event from another Tether replica' && l['upstream'] === id && l['worker'] === slot)
  await waitFor(() => heard(lead, 'app-1') && heard(other, 'app-0'), 5_000, "each worker to hear its sibling's down")
  t.ok(ejectedOn(lines, lead, 'app-0') && ejectedOn(lines, other, 'app-1'), 'each ejected the upstream it found failing')
  t.notOk(ejectedOn(lines, lead, 'app-1') || ejectedOn(lines, other, 'app-0'), "each refused its sibling's at its max_ejection_percent")
  const recorded = hash(await redisCli(redis.port, 'HGETALL', key))

  // the finder of app-1's ejection exits (SIGKILLed), restarted by the primary
  const listening = (): number => lines().filter((l) => l['msg'] === 'tether listening' && l['worker'] === other).length
  process.kill(workerPids(w.proc).find((pid) => slotOf(pid) === other)!, 'SIGKILL')
  await waitFor(() => listening() === 2, 60_000, "the finder's slot to be restarted")
  const lost = await flushed(redis, lines)
  t.match(lost.find((l) => l['worker'] === lead), { ejections: 2 }, "the lead wrote back its own ejection and its gone sibling's it refused")
  const back = await waitFor(async () => (await redisCli(redis.port, 'HLEN', key)).trim() === '2', 5_000, 'both records to be back').then(() => true, () => false)
  t.ok(back, 'both records are back in Redis after the loss')
  t.same(hash(await redisCli(redis.port, 'HGETALL', key)), recorded, 'under their fields, as recorded')

  // a replica started after the loss, with room for both (another config in a rolling change):
  // it ejects both, as one started before the loss did
  const r3 = await startTether(testConfig(apps, {
    affinity: { key: 'header', header: { name: 'X-User' } },
    health: { shared: 'redis', active: { enabled: false }, passive: { consecutive_failures: 1, base_ejection: 60_000, max_ejection: 60_000, max_ejection_percent: 100 } },
    state: { store: 'redis', timeout: 200, redis: { url: redis.url, key_prefix: prefix } },
  }), { logger: createLogger('silent') })
  t.teardown(() => r3.close(0))
  t.same([r3.health.state('app-0'), r3.health.state('app-1')], ['ejected', 'ejected'], 'a replica started after the loss ejects app-0 and app-1')
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
  t.teardown(() => agent.destroy())
  const placed = new Set<string>()
  for (let u = 0; u < 12; u++) placed.add((await get(agent, r3.port, '/', `new-${u}`)).body.trim())
  t.same([...placed], ['app-2'], 'and places new users on app-2 only')
})
