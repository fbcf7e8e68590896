// The HTTP/1.1 view of an h2 request head (proxy/h2-messages.ts) and the SNI choice of the
// listener's certificates (tls/server-certificates.ts), as pure functions of their inputs.
import t from 'tap'
import { http1Head } from '../src/proxy/h2-messages.js'
import { ServerCertificates } from '../src/tls/server-certificates.js'
import { createLogger } from '../src/observability/logger.js'
import { makeCertificateSet } from './fixtures/tls.js'

t.test('pseudo-headers go, Host comes from :authority, cookie crumbs are joined, a body without length is chunked', async (t) => {
  const h = http1Head([':method', 'POST', ':scheme', 'https', ':authority', 'a.example', ':path', '/x', 'cookie', 'a=1', 'accept', '*/*', 'cookie', 'b=2'], true)
  t.same(h.raw, ['host', 'a.example', 'cookie', 'a=1; b=2', 'accept', '*/*', 'transfer-encoding', 'chunked'])
  t.same({ ...h.headers }, { host: 'a.example', cookie: 'a=1; b=2', accept: '*/*', 'transfer-encoding': 'chunked' })
  const sized = http1Head([':method', 'PUT', ':authority', 'a.example', ':path', '/', 'content-length', '4'], true)
  t.same(sized.raw, ['host', 'a.example', 'content-length', '4'], 'a declared length is kept, no chunked')
})

t.test('a Host that disagrees with :authority is kept beside it, so the Host rule refuses the request', async (t) => {
  const h = http1Head([':method', 'GET', ':authority', 'a.example', ':path', '/', 'host', 'evil.example'], false)
  t.same(h.raw, ['host', 'a.example', 'host', 'evil.example'])
  const same = http1Head([':method', 'GET', ':authority', 'A.example', ':path', '/', 'host', 'a.example'], false)
  t.same(same.raw, ['host', 'a.example'], 'the same name in another case is one Host')
})

t.test('SNI: an exact name first, then a wildcard one label deep, else the default certificate', async (t) => {
  const certs = makeCertificateSet()
  t.teardown(() => certs.remove())
  const wild = certs.issue('wild', 'DNS:*.shop.example')
  const c = new ServerCertificates({ cert: certs.server.certFile, key: certs.server.keyFile, certificates: [{ cert: certs.api.certFile, key: certs.api.keyFile }, { cert: wild.certFile, key: wild.keyFile }], min_version: 'TLSv1.2', hsts: null }, { logger: createLogger('silent'), onDefault: () => undefined })
  t.ok(c.contextFor('api.example'))
  t.equal(c.contextFor('API.example.'), c.contextFor('api.example'), 'case and a trailing dot do not matter')
  t.ok(c.contextFor('www.shop.example'), 'a wildcard serves one label')
  t.not(c.contextFor('www.shop.example'), c.contextFor('api.example'))
  t.equal(c.contextFor('a.b.shop.example'), undefined, 'but not two')
  t.equal(c.contextFor('other.example'), undefined, 'anything else: the default certificate')
})
