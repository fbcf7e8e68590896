// With `health.shared: redis`, the drains recorded in Redis (an operator's, made through another
// replica's admin API) apply before the proxy port takes a request: a Tether started against a
// slow Redis (every reply held 300 ms by a relay, so the start's waits are wide) never routes a
// new user to the drained upstream, not even a request sent the moment its port accepts. As
// Envoy adds no listener before its init targets are done. `workers: 1` and `workers: 2`: a real
// redis-server, Tether as child processes (dist/cli.js), real upstreams.
import t from 'tap'
import http from 'node:http'
import { tempFile } from './fixtures/cli.js'
import { freePorts } from './fixtures/ports.js'
import { startPrimary, startSingle, workersYaml } from './fixtures/primary-process.js'
import { redisCli, startRedis } from './fixtures/redis-server.js'
import { slowRelay } from './fixtures/slow-relay.js'
import { startProxy, startUpstream } from './fixtures/upstream.js'
import { waitFor } from './fixtures/wait.js'

/** Each reply of Redis reaches the Tether under test this long after Redis sent it. */
const HOLD_MS = 300

/** A request of user `tenant` on a new connection: the answering upstream's id, or null when the port refused it. */
function ask(port: number, tenant: string): Promise<string | null> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/', agent: false, headers: { 'x-tenant': tenant, connection: 'close' } }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => (body += c))
      res.on('end', () => resolve(res.statusCode === 200 ? body.trim() : `status ${res.statusCode}`))
    })
    req.setTimeout(10_000, () => req.destroy(new Error('no answer in 10 s')))
    req.on('error', (err: NodeJS.ErrnoException) => (err.code === 'ECONNREFUSED' ? resolve(null) : reject(err)))
  })
}

for (const workers of [1, 2]) {
  t.test(`workers: ${workers}: a request sent as soon as the port accepts is not placed on an upstream drained in Redis`, async (t) => {
    const redis = await startRedis()
    t.teardown(() => redis.stop())
    const apps = await Promise.all(['app-0', 'app-1'].map((id) => startUpstream(id)))
    t.teardown(() => Promise.all(apps.map((a) => a.close())))
    const state = { store: 'redis', redis: { url: redis.url } } as const

    // an operator drains app-1 through another replica's admin API: the drain is recorded in Redis
    const other = await startProxy(apps, { state, health: { shared: 'redis' } })
    t.teardown(() => other.close(0))
    const drained = await fetch(`${other.adminUrl}/upstreams/app-1/drain`, { method: 'POST' })
    t.equal(drained.status, 200, 'drained through the admin API')
    await drained.arrayBuffer()
    await waitFor(async () => (await redisCli(redis.port, 'HGET', 'tether:peers:drains', 'app-1')).trim() === 'stay', 5_000, 'the drain recorded in Redis')
    await other.close(0)

    const relay = await slowRelay(redis.port, HOLD_MS)
    t.teardown(() => relay.close())
    const [listen, adminPort] = await freePorts(2)
    const file = tempFile('drains-before-listen.yaml', workersYaml({
      listen: listen!, adminPort: adminPort!, workers, upstreams: apps,
      extra: ['affinity: { key: header, header: { name: X-Tenant } }', 'health: { shared: redis, active: { enabled: false } }', `state: { store: redis, redis: { url: "${relay.url}" } }`],
    }))
    const starting = (workers === 1 ? startSingle : startPrimary)(t, file)
    let started = false
    const done = starting.finally(() => { started = true })
    // new users, one after the other, from before the port accepts until the start is reported
    const answers: string[] = []
    let refused = 0
    let n = 0
    while (!started) {
      const answer = await ask(listen!, `early-${n++}`)
      if (answer === null) refused++
      else answers.push(answer)
      // (a short poll: nothing tells a client when a port starts to accept)
      if (answer === null) await new Promise((r) => setTimeout(r, 5))
    }
    const { out } = await done
    t.comment(`${answers.length} requests answered while starting (${refused} refused before the port accepted)`)
    t.ok(relay.sent() > 0, 'the Tether under test talked to Redis through the relay')
    for (let i = 0; i < 20; i++) answers.push((await ask(listen!, `late-${i}`)) ?? 'refused')
    t.same(answers.filter((a) => a !== 'app-0'), [], 'every new user, the earliest included, placed on app-0: none on the drained app-1')
    t.notOk(/recorded drains were not read/.test(out()), 'the drains were read (not the warn of a Redis that did not answer)')
  })
}
