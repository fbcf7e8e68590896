// The redirect listener kept Node's default maxHeadersCount (Node keeps ~1000 header pairs and
// drops the rest silently): a POST whose Content-Length came after 1100 header lines had none in
// rawHeaders, the refused-line logging took it for a request without a body, and a request line
// refused behind it (HPE_INVALID_METHOD: no method guard) was logged with the body's last line
// glued on (`"path":"/?password=hunter2X"`; review r5). Every header line counts now, as on the
// proxy listener, and a head of Node's default count is taken as one that may have been cut.
import t from 'tap'
import { startTether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { makeCertificateSet } from './fixtures/tls.js'
import { LogCapture } from './fixtures/log-capture.js'
import { rawConnect } from './fixtures/raw-client.js'
import { within } from './fixtures/wait.js'
import { startUpstream, testConfig } from './fixtures/upstream.js'

const certs = makeCertificateSet()
t.teardown(() => certs.remove())

t.test('redirect listener: no body byte logged behind a POST whose Content-Length Node dropped', async (t) => {
  const up = await startUpstream('a')
  const logs = new LogCapture()
  const config = testConfig([up], { limits: { max_header_bytes: 16384 }, listen: {
    tls: { cert: certs.server.certFile, key: certs.server.keyFile, certificates: [], min_version: 'TLSv1.2', hsts: { max_age: 1000, include_subdomains: false, preload: false } },
    redirect: { host: '127.0.0.1', port: 0, https_port: null },
  } })
  const tether = await startTether(config, { logger: createLogger('info', logs) })
  t.teardown(async () => { await tether.close(0); await up.close() })
  const body = 'user=bob\nGET /?password=hunter2'
  const first = `POST /login HTTP/1.1\r\nHost: a\r\n${'a: 1\r\n'.repeat(1100)}Content-Length: ${body.length}\r\n\r\n${body}`
  const before = logs.access().length
  const c = await rawConnect(Number(new URL(tether.redirectUrl!).port))
  c.write(first + 'X HTTP/1.1\r\nHost: a\r\n\r\n') // one write: one read
  t.ok(await c.waitEnd(5000), 'refused and closed')
  c.destroy()
  await within(new Promise<void>((done) => { const check = (): void => { if (logs.access().slice(before).some((l) => (l.status as number) >= 400)) done() }; check(); logs.on('record', check) }), 10_000, 'the refused line logged')
  const refused = logs.access().slice(before).find((l) => (l.status as number) >= 400)!
  t.notOk(JSON.stringify(refused).includes('hunter2'), `no body byte logged: ${JSON.stringify(refused)}`)
})
