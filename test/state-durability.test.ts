// state.durability (issue 11): with `confirmed`, an answer goes out only once its checkpoint is
// stored; when the store cannot take it, the client gets 503 TETHER_STATE_UNAVAILABLE instead of
// an acknowledgement, and the request is not replayed elsewhere. With `best_effort` (the
// default) the same outage lets the answer through.
import t from 'tap'
import http from 'node:http'
import { request, startProxy, startUpstream, testConfig } from './fixtures/upstream.js'
import { startTether } from '../src/app.js'
import { DEFAULTS } from '../src/config/schema.js'
import { createLogger } from '../src/observability/logger.js'
import { LogCapture } from './fixtures/log-capture.js'
import { redisCli, startRedis, waitFor } from './fixtures/redis-server.js'

const redis = await startRedis()
let hits = 0
const up = await startUpstream('app-0', (_req, res) => {
  hits++
  res.setHeader('x-tether-state', `count=${hits}`)
  res.setHeader('x-tether-state-version', String(hits))
  res.end(`ok ${hits}\n`)
})
t.teardown(async () => { await up.close(); await redis.stop() })

for (const durability of ['confirmed', 'best_effort'] as const) {
  t.test(`durability: ${durability}`, async (t) => {
    const logs = new LogCapture()
    const px = await startTether(testConfig([{ id: 'app-0', url: up.url }], {
      affinity: { key: 'header', header: { name: 'x-user' } },
      // confirm_timeout is only a bound here (a killed Redis fails the write at once): 300 ms
      // turned the answer with the store up into a 503 on a loaded machine
      state: { store: 'redis', durability, confirm_timeout: 10_000, timeout: 50, redis: { url: redis.url } },
    }), { logger: createLogger('info', logs) })
    t.teardown(() => px.close(0))
    await waitFor('the store to be ready', async () => (await request(`${px.adminUrl}/readyz`)).body.includes('"degraded": []'))
    const before = hits
    const ok = await request(`${px.url}/`, { headers: { 'x-user': 'ann' } })
    t.equal(ok.status, 200, 'with the store up, the answer goes out')
    await redis.kill()
    const down = await request(`${px.url}/`, { headers: { 'x-user': 'ann' } })
    if (durability === 'confirmed') {
      t.equal(down.status, 503, 'with the store down, the update is not acknowledged')
      t.match(down.body, /session state could not be saved/)
      t.equal(down.headers['retry-after'], '1')
    } else {
      t.equal(down.status, 200, 'best effort: the answer goes out anyway')
    }
    t.equal(hits - before, 2, 'the upstream saw each request once (no replay)')
    t.same(logs.records.filter((r) => r['msg'] === 'upstream exchange failed'), [], 'the upstream answered: no warning blames it (the Redis node has its own lines)')
    await redis.restart()
  })
}

for (const durability of ['confirmed', 'best_effort'] as const) {
  t.test(`durability: ${durability}, a checkpoint refused because another upstream's of the same epoch, written later, is stored`, async (t) => {
    const px = await startProxy([{ id: 'app-0', url: up.url }], {
      affinity: { key: 'header', header: { name: 'x-user' } },
      state: { store: 'redis', durability, confirm_timeout: 5_000, timeout: 5_000, redis: { url: redis.url, key_prefix: `rival-${durability}:` } },
    })
    t.teardown(() => px.close(0))
    await waitFor('the store to be ready', async () => (await request(`${px.adminUrl}/readyz`)).body.includes('"degraded": []'))
    t.equal((await request(`${px.url}/`, { headers: { 'x-user': 'dee' } })).status, 200, 'placed on app-0 at epoch 0, checkpoint stored')
    // another Tether replica took app-1's answer for the same user at epoch 0 later (by its
    // clock) with a higher version: what the store holds now went its own way from app-0's state
    const key = `rival-${durability}:cp:{dee}`
    await redisCli(redis.port, 'HSET', key, 'value', 'from app-1', 'version', '1000000', 'upstream', 'app-1', 'epoch', '0', 'writtenAt', String(Date.now() + 60_000))
    const before = hits
    const r = await request(`${px.url}/`, { headers: { 'x-user': 'dee' } })
    t.equal((await redisCli(redis.port, 'HGET', key, 'value')).trim(), 'from app-1', "app-0's checkpoint was refused")
    if (durability === 'confirmed') {
      t.equal(r.status, 503, "confirmed: app-0's update is not stored (nor held by what is), so it is not acknowledged")
      t.match(r.body, /session state could not be saved/)
    } else {
      t.equal(r.status, 200, 'best effort: the answer goes out anyway')
    }
    t.equal(hits - before, 1, 'the upstream saw the request once (no replay)')
    t.match(await px.metrics.render(), /tether_checkpoints_total\{result="superseded"\} 1\b/, 'counted superseded, not stale')
  })
}

t.test("durability: confirmed, key: cookie: the 503 for a superseded checkpoint sets no cookie, so the client keeps the cookie of the answer whose checkpoint is stored", async (t) => {
  const px = await startProxy([{ id: 'app-0', url: up.url }], {
    affinity: { key: 'cookie', cookie: { ...DEFAULTS.affinity.cookie, secure: false } },
    state: { store: 'redis', durability: 'confirmed', confirm_timeout: 5_000, timeout: 5_000, redis: { url: redis.url, key_prefix: 'rival-cookie:' } },
  })
  t.teardown(() => px.close(0))
  await waitFor('the store to be ready', async () => (await request(`${px.adminUrl}/readyz`)).body.includes('"degraded": []'))
  const first = await request(`${px.url}/`)
  t.equal(first.status, 200, 'a new user placed on app-0, checkpoint stored')
  const issued = [first.headers['set-cookie'] ?? []].flat().find((c) => c.startsWith(`${DEFAULTS.affinity.cookie.name}=`))
  t.ok(issued, "Tether's cookie was issued")
  const cookie = issued!.split(';')[0]!
  const key = (await redisCli(redis.port, '--scan', '--pattern', 'rival-cookie:cp:*')).trim()
  t.match(key, /^rival-cookie:cp:\{[^\n]+\}$/, "the user's one checkpoint")
  const epoch = (await redisCli(redis.port, 'HGET', key, 'epoch')).trim()
  // another request of the same move was answered by app-1 through another replica, later by
  // its clock: that answer carried the cookie naming app-1, and its checkpoint is stored
  await redisCli(redis.port, 'HSET', key, 'value', 'from app-1', 'version', '1000000', 'upstream', 'app-1', 'epoch', epoch, 'writtenAt', String(Date.now() + 60_000))
  const r = await request(`${px.url}/`, { headers: { cookie } })
  t.equal(r.status, 503, "app-0's update is not acknowledged")
  t.equal(r.headers['set-cookie'], undefined, "the 503 sets no cookie: the client keeps app-1's, so its retry goes where the stored state is")
  t.equal((await redisCli(redis.port, 'HGET', key, 'value')).trim(), 'from app-1', "app-1's checkpoint is kept")
})

t.test('durability: confirmed, a checkpoint over state.max_bytes: the answer is a 503 (not acknowledged), as docs/configuration.md says', async (t) => {
  const px = await startProxy([{ id: 'app-0', url: up.url }], {
    affinity: { key: 'header', header: { name: 'x-user' } },
    state: { store: 'redis', durability: 'confirmed', max_bytes: 1, confirm_timeout: 5_000, timeout: 5_000, redis: { url: redis.url, key_prefix: 'too-large:' } },
  })
  t.teardown(() => px.close(0))
  await waitFor('the store to be ready', async () => (await request(`${px.adminUrl}/readyz`)).body.includes('"degraded": []'))
  const r = await request(`${px.url}/`, { headers: { 'x-user': 'eve' } })
  t.equal(r.status, 503, 'a checkpoint that cannot be stored is not acknowledged')
  t.match(await px.metrics.render(), /tether_checkpoints_total\{result="too_large"\} 1\b/, 'counted too_large')
})

t.test('a confirmed write waits for a slow store up to confirm_timeout, not the per-call state.timeout', async (t) => {
  const px = await startProxy([{ id: 'app-0', url: up.url }], {
    affinity: { key: 'header', header: { name: 'x-user' } },
    state: { store: 'redis', durability: 'confirmed', confirm_timeout: 10_000, timeout: 50, redis: { url: redis.url } },
  })
  t.teardown(() => px.close(0))
  await waitFor('the store to be ready', async () => (await request(`${px.adminUrl}/readyz`)).body.includes('"degraded": []'))
  // writes stall for 300 ms: longer than state.timeout, well within confirm_timeout
  await redisCli(redis.port, 'CLIENT', 'PAUSE', '300', 'WRITE')
  const slow = await request(`${px.url}/`, { headers: { 'x-user': 'bob' } })
  t.equal(slow.status, 200, 'the answer waited for the write and went out')
  const stored = await redisCli(redis.port, 'HGET', 'tether:cp:{bob}', 'value')
  t.match(stored, /count=\d+/, 'and its checkpoint is stored')
})

t.test('a client that leaves while its answer waits on a confirmed write: the attempt still ends (nothing stays in flight)', async (t) => {
  const px = await startProxy([{ id: 'app-0', url: up.url }], {
    affinity: { key: 'header', header: { name: 'x-user' } },
    // confirm_timeout and the pause are far longer than the test: neither may end on its own
    // while a loaded machine is slow to get the write into Redis and the client gone (with 1 s
    // and 600 ms, the answer could go out before the client left); CLIENT UNPAUSE settles the
    // write once the client has left
    state: { store: 'redis', durability: 'confirmed', confirm_timeout: 60_000, timeout: 50, redis: { url: redis.url } },
  })
  t.teardown(() => px.close(0))
  await waitFor('the store to be ready', async () => (await request(`${px.adminUrl}/readyz`)).body.includes('"degraded": []'))
  await redisCli(redis.port, 'CLIENT', 'PAUSE', '60000', 'WRITE')
  t.teardown(() => redisCli(redis.port, 'CLIENT', 'UNPAUSE'))
  const req = http.request(`${px.url}/`, { agent: false, headers: { 'x-user': 'cy' } })
  const outcome = new Promise<string>((resolve) => {
    req.on('response', (res) => resolve(`answered ${res.statusCode}`))
    req.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message))
  })
  req.end()
  // the upstream answered in full and Tether's checkpoint write waits in Redis (a paused client)
  await waitFor('the checkpoint write to wait in Redis', async () => /flags=b\b/.test(await redisCli(redis.port, 'CLIENT', 'LIST')))
  t.equal(px.inFlight.count('app-0'), 1, 'the request is in flight')
  req.destroy()
  t.not(await outcome, 'answered 200', 'the client left before any answer')
  await redisCli(redis.port, 'CLIENT', 'UNPAUSE')
  await waitFor('the attempt to end', () => px.inFlight.count('app-0') === 0, 15_000)
  t.pass('nothing stays in flight once the write is settled')
})
