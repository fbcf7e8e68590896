// With affinity.shared: redis, a move is read back from the shared store before it is announced
// only while the move's state fetch runs anyway (test/shared-affinity-moves.test.ts). A key
// without checkpoints (app_cookie's client_ip fallback: no state fetch) does not wait for that
// read: with Redis frozen and a state.timeout of 20 s, its move is answered long before.
import t from 'tap'
import { startTether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { startRedis, redisCli } from './fixtures/redis-server.js'
import { startUpstream, testConfig, request } from './fixtures/upstream.js'
import { FakeClock } from './fixtures/clock.js'

t.test('IP-fallback move with Redis frozen', async (t) => {
  const redis = await startRedis()
  const pid = Number(/process_id:(\d+)/.exec(await redisCli(redis.port, 'INFO', 'server'))![1])
  t.teardown(async () => { try { process.kill(pid, 'SIGCONT') } catch { /* gone */ } await redis.stop() })
  const ups = await Promise.all(['app-0', 'app-1', 'app-2'].map((id) => startUpstream(id, (_req, res) => res.end(id))))
  t.teardown(async () => { await Promise.all(ups.map((u) => u.close().catch(() => undefined))) })
  const cfg = testConfig(ups, {
    affinity: { key: 'app_cookie', app_cookie: { name: 'sid', fallback: 'client_ip' }, shared: 'redis' },
    health: { active: { path: null } },
    state: { store: 'redis', timeout: 20_000, redis: { url: redis.url, key_prefix: 'fb:' } },
  })
  const tether = await startTether(cfg, { logger: createLogger('silent'), clock: new FakeClock(Date.now()) })
  t.teardown(() => tether.close(0))
  const first = await request(tether.url)
  const home = first.body
  t.comment(`home ${home}`)
  t.equal((await request(tether.url)).body, home, 'pinned by IP')
  await ups.find((u) => u.id === home)!.close()
  process.kill(pid, 'SIGSTOP')
  const t0 = performance.now()
  const moved = await request(tether.url)
  const ms = Math.round(performance.now() - t0)
  t.comment(`moved to ${moved.body} (status ${moved.status}) in ${ms} ms with Redis frozen`)
  t.ok(ms < 10_000, `the move did not wait for the frozen Redis (${ms} ms; state.timeout 20 s)`)
  t.not(moved.body, home, 'it moved')
})
