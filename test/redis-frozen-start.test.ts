// Starting against a frozen Redis (SIGSTOP: connections accepted, nothing answered): the waits
// for Redis at the start (the connection's first ready check, the shared health's subscription
// and its read of the recorded drains) each end by their own deadline, and they run at once,
// so the start waits about one of them, not their sum; the ports listen after them, with a warn
// that the recorded drains were not read. A real redis-server, Tether as a child
// process (dist/cli.js), times from its own log lines.
import t from 'tap'
import { REDIS_DEFAULTS } from '../src/redis/connection.js'
import { startCliTether, drillYaml } from './fixtures/drill.js'
import { frozenRedis } from './fixtures/redis-server.js'
import { startUpstream } from './fixtures/upstream.js'

/** The start's waits for Redis, each bounded by the connection's connectTimeout (not configurable). */
const CONNECT_TIMEOUT = REDIS_DEFAULTS.connectTimeout

t.test('with Redis frozen, a Tether with state, shared affinity and shared health listens about one connectTimeout after its upstreams are set, not the sum of its waits', async (t) => {
  const { redis, freeze } = await frozenRedis(t)
  const up = await startUpstream('app-0')
  t.teardown(() => up.close())
  freeze()
  const tether = await startCliTether(t, 'frozen-start', drillYaml([{ id: 'app-0', url: up.url }], [
    'affinity: { key: header, header: { name: X-Tenant }, shared: redis }',
    'health: { shared: redis }',
    `state: { store: redis, timeout: 1s, redis: { url: "${redis.url}" } }`,
  ]))
  const at = (msg: string): number => Date.parse(String(tether.records().find((r) => r.rec['msg'] === msg)!.rec['time']))
  // "upstreams updated" comes just before the listener listens and the waits for Redis begin
  const waited = at('tether listening') - at('upstreams updated')
  t.comment(`listening ${waited} ms after its upstreams were set (connectTimeout ${CONNECT_TIMEOUT} ms)`)
  // sequential, the connection's wait and the subscription's (each up to connectTimeout) add up
  t.ok(waited < 2 * CONNECT_TIMEOUT, `listening ${waited} ms after the upstreams were set: less than two connectTimeouts (${2 * CONNECT_TIMEOUT} ms), the waits ran at once`)
  const unread = tether.records().find((r) => r.rec['msg'] === 'the recorded drains were not read (the peer channel did not answer): serving without them')
  t.ok(unread, 'it says that it serves without the drains recorded in Redis')
  t.equal(unread?.rec['level'], 40, 'as a warn')
  t.ok(at('tether listening') >= Date.parse(String(unread?.rec['time'])), 'before it listens')
  const res = await fetch(`${tether.url}/x`, { headers: { 'x-tenant': 'u1' } })
  t.equal(res.status, 200, 'it serves with Redis frozen')
  await res.arrayBuffer()
})
