// The listener's idle close (a client silent both ways for the client bound) that lands while
// the answer's head is held for a checkpoint write (here to a frozen Redis): the client got
// nothing, so the access line says status 0, and the reason is still the client's timeout
// (TETHER_CLIENT_TIMEOUT), not a client that left nor an upstream failure.
import t from 'tap'
import http2 from 'node:http2'
import net from 'node:net'
import { heldHeadTether } from './fixtures/held-head.js'
import { onEvent, when, within } from './fixtures/wait.js'

for (const protocol of ['HTTP/1.1', 'h2'] as const) {
t.test(`${protocol}: an idle close while a checkpoint write holds the answer head is logged TETHER_CLIENT_TIMEOUT with status 0 (nothing was sent)`, async (t) => {
  // the client bound is 1.2 s (see clientIdleTimeout); the checkpoint write may hold the head 5 s
  const { tether, logs, freeze } = await heldHeadTether(t, 5000, {
    timeouts: { response_headers: 200, body_idle: 200 },
    ...(protocol === 'h2' ? { listen: { http2: { cleartext: true } } } : {}),
  })
  freeze()
  let got = ''
  let closed: Promise<void>
  if (protocol === 'h2') {
    const session = http2.connect(tether.url)
    session.on('error', () => undefined)
    t.teardown(() => session.destroy())
    const stream = session.request({ ':path': '/x', 'x-tenant': 'u1' })
    stream.on('error', () => undefined)
    stream.on('response', (headers) => { got += String(headers[':status']) })
    stream.on('data', (chunk: Buffer) => { got += chunk.toString('latin1') })
    closed = new Promise<void>((resolve) => session.once('close', () => resolve()))
  } else {
    const client = net.connect(tether.port, '127.0.0.1')
    client.on('error', () => undefined)
    t.teardown(() => client.destroy())
    client.on('data', (chunk: Buffer) => { got += chunk.toString('latin1') })
    closed = new Promise<void>((resolve) => client.once('close', () => resolve()))
    client.write('GET /x HTTP/1.1\r\nHost: a\r\nX-Tenant: u1\r\n\r\n')
  }
  await within(closed, 5000, 'the idle close')
  await when(onEvent(logs, 'record'), () => logs.access().length === 1, 5000, 'the access line')
  t.equal(got, '', 'nothing was sent to the client')
  t.match(logs.access()[0], { status: 0, outcome: 'TETHER_CLIENT_TIMEOUT', upstream: 'a' })
  t.notOk(logs.records.some((r) => r['msg'] === 'upstream exchange failed'), 'the upstream is not blamed')
})
}
