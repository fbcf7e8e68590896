// Expect: 100-continue on a request Tether refuses from its head alone (RFC 9110 section
// 10.1.1: a server MUST either answer at once with the final status, when the method, target
// and header fields decide it, or send 100 Continue). A 100 before such a refusal tells the
// client to upload its body for nothing, and the refusal closes the connection, so a client
// still uploading gets a reset instead of the answer. nginx 1.22 answers these without a 100
// (it sends its 100 only once it reads a body). Raw sockets on loopback, a raw recording upstream.
import t from 'tap'
import { startTether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { h2cSession } from './fixtures/h2c.js'
import { startUpstream, testConfig } from './fixtures/upstream.js'
import { rawConnect } from './fixtures/raw-client.js'
import { startHarness, type Harness } from './fixtures/raw-tether.js'

let h: Harness
t.before(async () => { h = await startHarness({ retries: { attempts: 0 }, health: { passive: { enabled: false } } }) })
t.teardown(() => h.close())

const EXPECT = 'Expect: 100-continue\r\nContent-Length: 5\r\n'

/** The first answer to `head` (the body is sent only after a 100, as a waiting client does), and whether a 100 came first. */
async function firstAnswer(head: string, body = 'hello'): Promise<{ statuses: number[] }> {
  const c = await rawConnect(h.port)
  try {
    c.write(head)
    await c.until(() => c.ended || c.responses().length > 0, 3000)
    if (c.responses()[0]?.status === 100) c.write(body)
    await c.until(() => c.ended || c.finals().length > 0, 3000)
    return { statuses: c.responses().map((r) => r.status) }
  } finally {
    c.destroy()
  }
}

const REFUSED: readonly [name: string, head: string, status: number][] = [
  ['TRACE', `TRACE /x HTTP/1.1\r\nHost: a\r\n${EXPECT}\r\n`, 405],
  ['OPTIONS *', `OPTIONS * HTTP/1.1\r\nHost: a\r\n${EXPECT}\r\n`, 400],
  ['an absolute-form target that does not parse', `POST http://[bad/x HTTP/1.1\r\nHost: a\r\n${EXPECT}\r\n`, 400],
  ['an absolute-form target of another scheme (ftp://)', `POST ftp://a/x HTTP/1.1\r\nHost: a\r\n${EXPECT}\r\n`, 400],
  ['an absolute-form target with userinfo', `POST http://u@a/x HTTP/1.1\r\nHost: a\r\n${EXPECT}\r\n`, 400],
  ['Transfer-Encoding: gzip, chunked (a coding Tether cannot decode)', 'POST /x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nTransfer-Encoding: gzip, chunked\r\n\r\n', 501],
  ['Transfer-Encoding: chunked, chunked', 'POST /x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked, chunked\r\n\r\n', 400],
]

for (const [name, head, status] of REFUSED) {
  t.test(`${name} with Expect: 100-continue gets its ${status} at once, no 100 Continue first; nothing reaches the upstream`, async (t) => {
    const before = h.received().length
    t.same((await firstAnswer(head)).statuses, [status])
    await h.barrier()
    t.equal(h.received().length, before, 'nothing forwarded')
  })
}

t.test('a request Tether forwards still gets its 100 Continue, then the answer; a chunked one too', async (t) => {
  t.same((await firstAnswer(`POST /x HTTP/1.1\r\nHost: a\r\n${EXPECT}\r\n`)).statuses, [100, 200])
  t.same((await firstAnswer(`OPTIONS /x HTTP/1.1\r\nHost: a\r\n${EXPECT}\r\n`)).statuses, [100, 200])
  t.same((await firstAnswer('POST http://b.example/x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n', '5\r\nhello\r\n0\r\n\r\n')).statuses, [100, 200])
})

t.test('over h2c too: TRACE and a lower-case method with Expect get their refusal without a 100 Continue; a POST gets its 100', async (t) => {
  const up = await startUpstream('app-0')
  const tether = await startTether(testConfig([up], { listen: { http2: { cleartext: true } } }), { logger: createLogger('silent') })
  t.teardown(async () => { await tether.close(0); await up.close() })
  const s = h2cSession(t, tether)
  const send = (method: string): Promise<string[]> => new Promise((resolve) => {
    const events: string[] = []
    const r = s.request({ ':method': method, ':path': '/', expect: '100-continue', 'content-length': '5' }, { endStream: false })
    // the body only after a 100 Continue, as a client that waits for it sends it
    r.on('continue', () => { events.push('100'); r.end('hello') })
    r.on('response', (h) => events.push(String(h[':status'])))
    r.on('error', () => events.push('error'))
    r.resume()
    r.on('close', () => resolve(events))
  })
  t.same(await send('TRACE'), ['405'])
  t.same(await send('post'), ['400'])
  t.same(await send('POST'), ['100', '200'])
  t.equal(up.seen.length, 1, 'only the POST reached the upstream')
})

t.test('nothing along the way was logged as an unhandled error', async (t) => {
  t.same(h.unhandled(), [])
})
