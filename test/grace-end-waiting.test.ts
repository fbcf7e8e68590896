// A graceful stop's grace period that ends while a request still waits before its attempt (here
// on a shared-affinity lookup held by a frozen Redis): the request is cut by the stop, logged
// once with status 0 and TETHER_SHUTTING_DOWN, and never sent into the pools the stop destroys
// (no 503 written into a closed socket, no "upstream exchange failed" warning).
import t from 'tap'
import net from 'node:net'
import { startTether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { LogCapture } from './fixtures/log-capture.js'
import { startUpstream, testConfig } from './fixtures/upstream.js'
import { frozenRedis } from './fixtures/redis-server.js'
import { onEvent, when, within } from './fixtures/wait.js'

t.test('a request waiting on a frozen Redis\'s shared-affinity lookup at a stop\'s grace end is logged TETHER_SHUTTING_DOWN, status 0, with no upstream decided', async (t) => {
  const { redis, freeze } = await frozenRedis(t)
  const forwarded: string[] = []
  const up = await startUpstream('a', (req, res) => {
    req.resume()
    forwarded.push(req.url ?? '')
    res.end('a')
  })
  t.teardown(() => up.close())
  const logs = new LogCapture()
  const tether = await startTether(testConfig([up], {
    affinity: { key: 'header', header: { name: 'X-Tenant' }, shared: 'redis' },
    // the lookup outlasts the grace period below
    state: { store: 'redis', timeout: 3000, redis: { url: redis.url } },
  }), { logger: createLogger('info', logs) })
  t.teardown(() => tether.close(0))
  freeze()
  const handed = new Promise<void>((resolve) => tether.listener.server.once('request', () => resolve()))
  const client = net.connect(tether.port, '127.0.0.1')
  client.on('error', () => undefined)
  t.teardown(() => client.destroy())
  client.write('GET /x HTTP/1.1\r\nHost: a\r\nX-Tenant: u1\r\n\r\n')
  await within(handed, 5000, 'the request handed to Tether') // its path now waits for the shared table (Redis frozen)
  const stopped = tether.close(100) // the lookup holds the request past the grace period: Tether closes the connection
  // at the grace end, not at the lookup's own timeout (state.timeout, 3 s)
  await when(onEvent(logs, 'record'), () => logs.access().length === 1, 2000, 'the access line at the grace end')
  await stopped
  t.match(logs.access()[0], { status: 0, outcome: 'TETHER_SHUTTING_DOWN', upstream: null, route: null }, 'no upstream decided: no attempt into the destroyed pools')
  t.same(forwarded, [], 'nothing sent upstream')
  t.notOk(logs.records.some((r) => r['msg'] === 'upstream exchange failed'), 'no warning for an attempt into a destroyed pool')
})
