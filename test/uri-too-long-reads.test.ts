// The 414 for a request target that alone reaches limits.max_header_bytes where its line begins a
// read other than the connection's first: a kept-alive connection's next request, behind a PROXY
// header (review s65 r2); over TLS a target longer than a TLS record crosses the limit in a later
// read, and keeps the 431 (docs/errors.md).
import t, { type Test } from 'tap'
import tls from 'node:tls'
import { startHarness } from './fixtures/raw-tether.js'
import { exchange, rawConnect } from './fixtures/raw-client.js'
import { makeCertificateSet } from './fixtures/tls.js'
import { within } from './fixtures/wait.js'

const certs = makeCertificateSet()
t.teardown(() => certs.remove())
const LONG = `GET /${'x'.repeat(20_000)} HTTP/1.1\r\nHost: a\r\n\r\n`

t.test('plain (control): 414', async (t) => {
  const h = await startHarness({ retries: { attempts: 0 } })
  t.teardown(() => h.close())
  t.equal((await exchange(h.port, LONG)).first, '414')
})

t.test('listen.proxy_protocol, the PROXY v1 line and the request in one write: 414', async (t) => {
  const h = await startHarness({ retries: { attempts: 0 }, listen: { proxy_protocol: true } } as never)
  t.teardown(() => h.close())
  t.equal((await exchange(h.port, `PROXY TCP4 10.0.0.1 10.0.0.2 5000 80\r\n${LONG}`)).first, '414')
})

t.test('a long target as the second request on a kept-alive connection, in one write: 414', async (t) => {
  const h = await startHarness({ retries: { attempts: 0 } })
  t.teardown(() => h.close())
  const conn = await rawConnect(h.port)
  t.teardown(() => conn.destroy())
  conn.write('GET /first HTTP/1.1\r\nHost: a\r\n\r\n')
  t.ok(await conn.until(() => conn.finals().length === 1, 3000), 'the first answered')
  conn.write(`GET /${'x'.repeat(20_000)} HTTP/1.1\r\nHost: a\r\n\r\n`)
  t.ok(await conn.until(() => conn.finals().length === 2, 3000), 'the second answered')
  t.same(conn.finals().map((f) => f.status), [200, 414])
  // the same bytes on a new connection (the first read): 414
  t.equal((await exchange(h.port, `GET /${'x'.repeat(20_000)} HTTP/1.1\r\nHost: a\r\n\r\n`)).first, '414')
})

t.test('CONNECT with an authority-form target too long (a name that starts with a digit, an IPv6 address): 414 (review s65 r3)', async (t) => {
  const h = await startHarness({ retries: { attempts: 0 } })
  t.teardown(() => h.close())
  t.equal((await exchange(h.port, `CONNECT ${'1'.repeat(20_000)}.example:443 HTTP/1.1\r\nHost: a\r\n\r\n`)).first, '414')
  t.equal((await exchange(h.port, `CONNECT [${'0:'.repeat(10_000)}]:443 HTTP/1.1\r\nHost: a\r\n\r\n`)).first, '414')
})

const TLS = { cert: certs.server.certFile, key: certs.server.keyFile, certificates: [], min_version: 'TLSv1.2', hsts: null }

/** The status Tether's TLS listener (HTTP/1.1 only, `limits`) answers `request` written in one write with. */
async function overTls(t: Test, request: string, limits: object = {}): Promise<string> {
  const h = await startHarness({ retries: { attempts: 0 }, limits, listen: { tls: TLS, http2: { enabled: false } } } as never)
  t.teardown(() => h.close())
  const sock = tls.connect({ host: '127.0.0.1', port: h.port, ca: certs.ca, servername: 'localhost' })
  sock.on('error', () => undefined)
  t.teardown(() => sock.destroy())
  let bytes = ''
  sock.on('data', (d: Buffer) => { bytes += d.toString('latin1') })
  const closed = new Promise((resolve) => sock.once('close', resolve))
  await within(new Promise((resolve) => sock.once('secureConnect', resolve)), 5000, 'the TLS handshake')
  sock.write(request)
  await within(closed, 5000, 'the refused connection to close')
  return bytes.slice(9, 12)
}

t.test('listen.tls, the request in one write: the target crosses the limit in the second TLS record, 431 (documented)', async (t) => {
  t.equal(await overTls(t, LONG), '431')
})

t.test('listen.tls with limits.max_header_bytes 4096: the target crosses it in its first record, 414', async (t) => {
  t.equal(await overTls(t, `GET /${'x'.repeat(8_000)} HTTP/1.1\r\nHost: a\r\n\r\n`, { max_header_bytes: 4096 }), '414')
})
