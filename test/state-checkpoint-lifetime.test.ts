// How long a checkpoint lives: as long as its user's affinity (`affinity.idle_timeout` after their
// last request), also when their state does not change. A real redis-server, real upstream
// servers on 127.0.0.1, a real Tether; time passes by requests polled with a deadline.
import t, { type Test } from 'tap'
import type http from 'node:http'
import { startTether, type Tether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { DEFAULTS } from '../src/config/schema.js'
import { redisCli, startRedis, type RedisServer } from './fixtures/redis-server.js'
import { startUpstream, testConfig, waitFor, type Upstream } from './fixtures/upstream.js'
import { CookieJar, get, agentFor } from './fixtures/users.js'

const IDLE = 4_000

let redis: RedisServer
t.before(async () => { redis = await startRedis() })
t.teardown(async () => { await redis.stop() })

/**
 * An app replica whose state never changes: every answer carries the same checkpoint, at the
 * same version (as an app that versions its state by revision sends it); an answer to a moved
 * user names what it was given.
 */
function app(id: string): Promise<Upstream> {
  return startUpstream(id, (req: http.IncomingMessage, res: http.ServerResponse) => {
    const given = req.headers['x-tether-rehydrate']
    res.setHeader('x-tether-state', 'cart=3')
    res.setHeader('x-tether-state-version', '1')
    res.end(`${id} ${typeof given === 'string' ? `rehydrated ${given}` : `status ${String(req.headers['x-tether-rehydrate-status'] ?? 'not moved')}`}`)
  })
}

async function tether(t: Test, ups: readonly Upstream[]): Promise<Tether> {
  const cfg = testConfig(ups, {
    affinity: { idle_timeout: IDLE, cookie: { ...DEFAULTS.affinity.cookie, secret: ['checkpoint-lifetime-secret-0123456789'] } },
    state: { store: 'redis', timeout: 1_000, redis: { url: redis.url, key_prefix: 'life:' } },
  })
  const tt = await startTether(cfg, { logger: createLogger('silent') })
  t.teardown(() => tt.close(0))
  return tt
}

t.test("a checkpoint lives idle_timeout after the user's last request, also when their state did not change: their replica dies during a pause, the next one gets it", async (t) => {
  const ups = [await app('app-0'), await app('app-1')]
  t.teardown(() => Promise.all(ups.map((u) => u.close())))
  const tt = await tether(t, ups)
  const agent = agentFor(t)
  const jar = new CookieJar()
  const first = await get(tt.url, agent, {}, jar)
  t.equal(first.status, 200)
  const home = first.body.split(' ')[0]!
  // a key written with the checkpoint's TTL at its first write: gone when that TTL ends
  t.equal((await redisCli(redis.port, 'SET', 'life:control', '1', 'PX', String(IDLE))).trim(), 'OK')
  const since = Date.now()
  // the user goes on (a request every 50 ms) for three quarters of an idle timeout: each answer
  // carries the same checkpoint again, refused as stale (nothing changed)
  let answered = 0
  await waitFor(async () => {
    const r = await get(tt.url, agent, {}, jar)
    if (r.status === 200 && r.body.startsWith(`${home} `)) answered++
    return Date.now() - since > 0.75 * IDLE
  }, 20_000, 'three quarters of an idle timeout of requests', 50)
  t.ok(answered >= 3, `the user stayed on ${home} (${answered} answers)`)
  // then a pause, shorter than idle_timeout, past the first write's TTL
  await waitFor(async () => (await redisCli(redis.port, 'EXISTS', 'life:control')).trim() === '0', 20_000, 'the first write\'s TTL to end', 50)
  await ups.find((u) => u.id === home)!.close()
  const moved = await get(tt.url, agent, {}, jar)
  t.equal(moved.status, 200)
  t.equal(moved.body, `${home === 'app-0' ? 'app-1' : 'app-0'} rehydrated cart=3`, 'the replica the user moved to got their state')
})
