// With workers, a WebSocket upgrade's 101 waits, as a plain answer's head does, until what it
// wrote through about its user (a new user's pin) reached the other workers: the user's next
// connection may land on another worker. Tether runs in-process as a worker whose link to the
// primary is scripted here, so the test decides when the primary acknowledges.
import t from 'tap'
import net from 'node:net'
import { startTether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { WorkerLink } from '../src/workers/worker-link.js'
import type { ToPrimary } from '../src/workers/messages.js'
import { startEchoPod } from './fixtures/ws-harness.js'
import { request, testConfig } from './fixtures/upstream.js'
import { waitFor } from './fixtures/wait.js'

t.test("a new user's 101 goes out once the primary acknowledged their pin", async (t) => {
  const pod = await startEchoPod('ws-0')
  t.teardown(() => pod.kill())
  const sent: ToPrimary[] = []
  let deliver: (m: unknown) => void = () => undefined
  const replies: Record<string, unknown> = { members: {}, remember: true }
  const link = new WorkerLink({
    send: (m) => {
      sent.push(m)
      // every call is answered (the snapshot: nothing to copy); writes are acknowledged below, by hand
      if (m.tether === 'call') setImmediate(() => deliver({ tether: 'reply', call: m.call, value: replies[m.op] ?? null }))
    },
    onMessage: (fn) => { deliver = fn },
  }, undefined, 600_000) // no wait ends by its timeout here (a slow machine): only the acknowledgement below
  const config = testConfig([{ id: pod.id, url: pod.url }], { affinity: { key: 'header', header: { name: 'X-User' } } })
  const tether = await startTether(config, { logger: createLogger('silent'), worker: link })
  t.teardown(() => tether.close(0))
  const port = Number(new URL(tether.url).port)

  const client = net.connect(port, '127.0.0.1')
  t.teardown(() => client.destroy())
  let got = ''
  client.on('data', (c: Buffer) => { got += c.toString('latin1') })
  client.write([
    'GET /chat HTTP/1.1', `Host: 127.0.0.1:${port}`, 'Upgrade: websocket', 'Connection: Upgrade',
    'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==', 'Sec-WebSocket-Version: 13', 'X-User: ws-user', '', '',
  ].join('\r\n'))
  const pinned = (): { seq: number } | undefined =>
    sent.find((m): m is ToPrimary & { tether: 'writes' } => m.tether === 'writes' && m.writes.some((w) => w[0] === 'b' && w[1] === 'ws-user'))
  await waitFor(() => pinned() !== undefined, 10_000, 'the pin of the new user to be sent to the primary')
  // a whole request through Tether on another connection (a user with no key: nothing to wait
  // for): had the 101 been written with the pin, its bytes would be here by the end of it
  const other = await request(tether.url + '/')
  t.equal(other.status, 200, 'an answer with nothing written through goes out at once')
  t.equal(got, '', 'no 101 while the pin is not acknowledged')
  deliver({ tether: 'ack', seq: pinned()!.seq })
  await waitFor(() => got.includes('\r\n\r\n'), 10_000, 'the 101')
  t.match(got, /^HTTP\/1\.1 101 /, 'then the 101')
})
