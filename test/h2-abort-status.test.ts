// The access line's status is one rule on every transport: the status handed to the client's
// connection, 0 when none was. An h2 stream its client resets while the upstream has not
// answered yet is logged status 0, client_abort, as an HTTP/1.1 client that closes its
// connection then (test/attempt-connecting.test.ts); reset once the head went out, with the
// status it was sent (as nginx logs it; test/h2c-answer-delivery.test.ts for a held answer).
import t from 'tap'
import http2 from 'node:http2'
import { startTether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { LogCapture } from './fixtures/log-capture.js'
import { startUpstream, testConfig } from './fixtures/upstream.js'
import { waitFor, within } from './fixtures/wait.js'

t.test('h2c: a stream reset before its head is logged status 0, one reset after it with the status sent; both client_abort', async (t) => {
  let release!: () => void
  const released = new Promise<void>((resolve) => { release = resolve })
  const up = await startUpstream('app-0', (req, res) => {
    req.resume()
    if (req.url === '/before') return void released.then(() => res.end('late'))
    res.writeHead(200, { 'content-type': 'text/plain' })
    res.write('head and a first chunk') // the rest never comes: the client resets meanwhile
  })
  const logs = new LogCapture()
  const tether = await startTether(testConfig([up], { listen: { http2: { cleartext: true } } }), { logger: createLogger('info', logs) })
  t.teardown(async () => { release(); await tether.close(0); await up.close() })
  const client = http2.connect(tether.url)
  client.on('error', () => undefined)
  t.teardown(() => client.destroy())

  const before = client.request({ ':path': '/before' })
  before.on('error', () => undefined)
  await waitFor(() => up.seen.some((r) => r.url === '/before'), 10_000, 'the upstream to hold /before')
  before.close(http2.constants.NGHTTP2_CANCEL)
  await waitFor(() => logs.access().length === 1, 10_000, 'the access line of /before')
  release() // the upstream answers once the client left: nothing of it reaches the client

  const after = client.request({ ':path': '/after' })
  after.on('error', () => undefined)
  const [head] = await within(new Promise<[http2.IncomingHttpHeaders]>((resolve) => after.once('response', (h) => resolve([h]))), 10_000, 'the head of /after')
  t.equal(head[':status'], 200, 'the head went out')
  after.close(http2.constants.NGHTTP2_CANCEL)
  await waitFor(() => logs.access().length === 2, 10_000, 'the access line of /after')

  const line = (path: string): Record<string, unknown> | undefined => logs.access().find((r) => r['path'] === path)
  t.match(line('/before'), { status: 0, outcome: 'client_abort' }, 'reset before the head: status 0')
  t.match(line('/after'), { status: 200, outcome: 'client_abort' }, 'reset after it: the status sent')
})
