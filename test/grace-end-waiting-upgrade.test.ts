// A WebSocket handshake waiting on a frozen Redis's shared-affinity lookup at a stop's grace end:
// logged once (status 0, TETHER_SHUTTING_DOWN, no upstream) and its client connection closed.
import t from 'tap'
import net from 'node:net'
import { startTether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { LogCapture } from './fixtures/log-capture.js'
import { startUpstream, testConfig } from './fixtures/upstream.js'
import { frozenRedis } from './fixtures/redis-server.js'
import { onEvent, when, within } from './fixtures/wait.js'

t.test('a WebSocket handshake waiting on a frozen Redis\'s lookup at a stop\'s grace end ends there, its connection closed', async (t) => {
  const { redis, freeze } = await frozenRedis(t)
  const up = await startUpstream('a', (req, res) => { req.resume(); res.end('a') })
  t.teardown(() => up.close())
  const logs = new LogCapture()
  const tether = await startTether(testConfig([up], {
    affinity: { key: 'header', header: { name: 'X-Tenant' }, shared: 'redis' },
    state: { store: 'redis', timeout: 3000, redis: { url: redis.url } },
  }), { logger: createLogger('info', logs) })
  t.teardown(() => tether.close(0))
  freeze()
  const handed = new Promise<void>((resolve) => tether.listener.server.once('upgrade', () => resolve()))
  const client = net.connect(tether.port, '127.0.0.1')
  client.on('error', () => undefined)
  t.teardown(() => client.destroy())
  const closed = new Promise<void>((resolve) => client.once('close', () => resolve()))
  client.write('GET /ws HTTP/1.1\r\nHost: a\r\nX-Tenant: u1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n')
  await within(handed, 5000, 'the handshake handed to Tether')
  const stopped = tether.close(100)
  await when(onEvent(logs, 'record'), () => logs.access().length === 1, 2000, 'the access line at the grace end')
  await within(closed, 2000, 'the client connection closed at the grace end')
  await stopped
  // at the grace end, not once the stop's end closed the Redis connection (which fails the
  // lookup: up to STOP_WAIT_MS later, its unanswered command then warned of)
  const line = (msg: string): number => logs.records.findIndex((r) => r['msg'] === msg)
  t.ok(line('access') < line('redis did not answer before the stop: writes among these commands may not be stored'), 'the handshake was cut before the stop closed Redis')
  t.match(logs.access()[0], { status: 0, outcome: 'TETHER_SHUTTING_DOWN', upstream: null }, 'no upstream decided')
})
