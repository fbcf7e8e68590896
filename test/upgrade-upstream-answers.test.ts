// WebSocket handshakes answered by a raw upstream at the protocol's edges: a 101 carrying
// Content-Length (no 1xx has content: RFC 9110 section 8.6, RFC 9112 section 6.3), and status
// lines whose HTTP-version no HTTP/1.1 server sends (HTTP/2.0, HTTP/0.9) on a 101 or on a
// refusal. What the client gets, and the warning that names the cause.
import t from 'tap'
import { ERRORS } from '../src/errors.js'
import { startHarness } from './fixtures/raw-tether.js'
import { rawConnect } from './fixtures/raw-client.js'
import { headerValues } from './fixtures/raw-http.js'

const HANDSHAKE = 'GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n'
const SWITCH = 'Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n'
const FRAME = Buffer.from([0x81, 0x05, ...Buffer.from('hello')])

t.test("a 101 with Content-Length: the client's 101 has none, and the bytes after the head are the tunnel's first (as HAProxy 2.6 does)", async (t) => {
  const h = await startHarness({}, (_q, c) => c.write(Buffer.concat([Buffer.from(`HTTP/1.1 101 Switching Protocols\r\n${SWITCH}Content-Length: 7\r\n\r\n`), FRAME])))
  t.teardown(() => h.close())
  const conn = await rawConnect(h.port)
  t.teardown(() => conn.destroy())
  conn.write(HANDSHAKE)
  t.ok(await conn.until(() => conn.bytes.includes(FRAME), 3000), 'the frame sent with the 101 arrived')
  const head = conn.bytes.toString('latin1').split('\r\n\r\n')[0]!
  t.match(head, /^HTTP\/1\.1 101 /, 'a 101')
  t.notMatch(head, /content-length/i, 'no Content-Length in it')
  t.ok(conn.bytes.subarray(head.length + 4).equals(FRAME), 'then exactly the frame')
})

const VERSIONS: readonly { readonly name: string; readonly answer: string; readonly version: string }[] = [
  { name: 'an HTTP/2.0 101', answer: `HTTP/2.0 101 Switching Protocols\r\n${SWITCH}\r\n`, version: 'HTTP/2.0' },
  { name: 'an HTTP/0.9 101', answer: `HTTP/0.9 101 Switching Protocols\r\n${SWITCH}\r\n`, version: 'HTTP/0.9' },
  { name: 'an HTTP/2.0 403 (a refusal)', answer: 'HTTP/2.0 403 Forbidden\r\nContent-Length: 2\r\n\r\nno', version: 'HTTP/2.0' },
]

for (const c of VERSIONS) {
  t.test(`${c.name} to a WebSocket handshake: 502, no tunnel, and a warning naming ${c.version}`, async (t) => {
    const h = await startHarness({ retries: { attempts: 0 } }, (_q, conn) => conn.write(c.answer))
    t.teardown(() => h.close())
    const conn = await rawConnect(h.port)
    t.teardown(() => conn.destroy())
    conn.write(HANDSHAKE)
    const [r] = await conn.waitFinals(1, 3000)
    t.equal(r?.status, 502)
    t.equal(r?.body.toString(), `${ERRORS.TETHER_UPSTREAM_PROTOCOL.message}\n`)
    t.ok(await conn.waitEnd(3000), 'the client connection is closed')
    const warned = h.logs.records.find((x) => x['msg'] === 'upstream exchange failed')
    t.match(JSON.stringify(warned?.['err'] ?? null), c.version, `the warning names ${c.version}`)
  })
}

t.test('HTTP/1.0 answers to a WebSocket handshake still pass: a 101 switches, a 403 reaches the client as HTTP/1.1', async (t) => {
  let refuse = false
  const h = await startHarness({}, (_q, c) => c.write(refuse ? 'HTTP/1.0 403 Forbidden\r\nContent-Length: 2\r\n\r\nno' : `HTTP/1.0 101 Switching Protocols\r\n${SWITCH}\r\n`))
  t.teardown(() => h.close())
  const a = await rawConnect(h.port)
  t.teardown(() => a.destroy())
  a.write(HANDSHAKE)
  t.ok(await a.until(() => a.finals()[0]?.status === 101, 3000), 'the 101 arrived')
  refuse = true
  const b = await rawConnect(h.port)
  t.teardown(() => b.destroy())
  b.write(HANDSHAKE)
  const [r] = await b.waitFinals(1, 3000)
  t.equal(r?.status, 403)
  t.match(b.bytes.toString('latin1'), /^HTTP\/1\.1 403 /)
  t.same(headerValues(r!, 'content-length'), ['2'])
})
