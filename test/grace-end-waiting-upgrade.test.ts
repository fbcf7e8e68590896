// A WebSocket handshake waiting on a frozen Redis's shared-affinity lookup at a stop's grace end:
// logged once (status 0, TETHER_SHUTTING_DOWN, no upstream) and its client connection closed.
import t from 'tap'
import net from 'node:net'
import { cutBeforeRedisClosed, stopAtGraceEnd, tetherOnFrozenLookup } from './fixtures/grace-end-lookup.js'
import { within } from './fixtures/wait.js'

t.test('a WebSocket handshake waiting on a frozen Redis\'s lookup at a stop\'s grace end ends there, its connection closed', async (t) => {
  const { tether, logs } = await tetherOnFrozenLookup(t)
  const handed = new Promise<void>((resolve) => tether.listener.server.once('upgrade', () => resolve()))
  const client = net.connect(tether.port, '127.0.0.1')
  client.on('error', () => undefined)
  t.teardown(() => client.destroy())
  const closed = new Promise<void>((resolve) => client.once('close', () => resolve()))
  client.write('GET /ws HTTP/1.1\r\nHost: a\r\nX-Tenant: u1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n')
  await within(handed, 5000, 'the handshake handed to Tether')
  await stopAtGraceEnd(tether, logs, closed)
  t.ok(cutBeforeRedisClosed(logs), 'the handshake was cut before the stop closed Redis')
  t.match(logs.access()[0], { status: 0, outcome: 'TETHER_SHUTTING_DOWN', upstream: null }, 'no upstream decided')
})
