// A frozen Sentinel (SIGSTOP: its TCP connections stay open, it says nothing): Tether's
// +switch-master watch on it goes silent, is given up after 2 s with one warn line and made
// again (until it answers), a failover announced by the other Sentinels meanwhile is followed,
// and after SIGCONT one info line says it listens again. Real redis-server and Sentinel
// processes; every wait polls with a deadline or waits for a log line.
import t from 'tap'
import http from 'node:http'
import { startTether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { DEFAULTS } from '../src/config/schema.js'
import { SENTINEL_SILENT_MS } from '../src/redis/sentinel-watch.js'
import { redisCli, startSentinelSet, waitFor } from './fixtures/redis-server.js'
import { testConfig } from './fixtures/upstream.js'
import { CookieJar, get } from './fixtures/users.js'
import { startCounter } from './fixtures/counter-upstream.js'
import { LogCapture } from './fixtures/log-capture.js'

t.test('a frozen Sentinel: its watch is given up (one warn) and made again, a failover is still followed, and it listens again after SIGCONT (one info)', async (t) => {
  const set = await startSentinelSet()
  t.teardown(() => set.stop())
  const app = await startCounter('app-0')
  t.teardown(() => app.kill())
  const logs = new LogCapture()
  const tt = await startTether(testConfig([app], {
    affinity: { cookie: { ...DEFAULTS.affinity.cookie, secret: ['sentinel-watch-secret-0123456789ab'] } },
    state: { store: 'redis', timeout: 1_000, redis: { sentinels: set.sentinels.map((s) => `127.0.0.1:${s.port}`), name: set.name, key_prefix: 'sw:' } },
  }), { logger: createLogger('info', logs) })
  t.teardown(() => tt.close(0))
  for (const s of set.sentinels) {
    await waitFor(`the switch watch on ${s.port} to subscribe`, async () => / name=tether-switch-watch .*sub=1/.test(await redisCli(s.port, 'CLIENT', 'LIST')), 5_000)
  }

  const frozen = set.sentinels[2]!
  const address = `127.0.0.1:${frozen.port}`
  // the watch's connection id on the frozen Sentinel: a remade watch has another
  const watchIds = async (): Promise<string[]> => (await redisCli(frozen.port, 'CLIENT', 'LIST')).split('\n').filter((l) => / name=tether-switch-watch .*sub=1/.test(l)).map((l) => /^id=(\d+)/.exec(l)![1]!)
  const before = await watchIds()
  t.equal(before.length, 1, 'one watch on the Sentinel to freeze')
  const lines = (msg: RegExp, sentinel = address): Record<string, unknown>[] => logs.records.filter((r) => msg.test(String(r['msg'])) && r['sentinel'] === sentinel)
  process.kill(frozen.pid, 'SIGSTOP')
  const stoppedAt = performance.now()
  t.teardown(() => { try { process.kill(frozen.pid, 'SIGCONT') } catch { /* already gone */ } })

  await waitFor('the warn "redis sentinel silent"', () => lines(/^redis sentinel silent/).length > 0, 3 * SENTINEL_SILENT_MS)
  const silentAfter = performance.now() - stoppedAt
  t.comment(`given up ${Math.round(silentAfter)} ms after SIGSTOP`)
  t.equal(lines(/^redis sentinel silent/)[0]!['level'], 40, 'a warn line naming the Sentinel')

  // a failover led by another Sentinel while this one is frozen: followed
  await set.failover()
  const jar = new CookieJar()
  jar.cookies.set('user', 'u1')
  await waitFor("a checkpoint on the new master (the old one is demoted ~10 s later)", async () => {
    const r = await get(tt.url, new http.Agent(), {}, jar)
    if (r.status !== 200) return false
    return (await redisCli(set.replica.port, '--scan', '--pattern', 'sw:cp:*')).trim() !== '' && (await redisCli(set.replica.port, 'ROLE')).startsWith('master')
  }, 8_000)
  t.pass('the failover was followed while a Sentinel was frozen')

  process.kill(frozen.pid, 'SIGCONT')
  await waitFor('the info "redis sentinel listening again"', () => lines(/^redis sentinel listening again$/).length > 0, 3 * SENTINEL_SILENT_MS)
  t.equal(lines(/^redis sentinel listening again$/)[0]!['level'], 30, 'an info line naming the Sentinel')
  t.equal(lines(/^redis sentinel silent/).length, 1, 'one warn for the whole silence')
  await waitFor('one subscribed watch on the resumed Sentinel', async () => (await watchIds()).length === 1)
  t.not((await watchIds())[0], before[0], 'the silent watch was destroyed and made again')
  for (const s of set.sentinels.slice(0, 2)) t.same(lines(/^redis sentinel/, `127.0.0.1:${s.port}`), [], `no line about the Sentinel on ${s.port} that answered`)
})
