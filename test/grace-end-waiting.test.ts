// A graceful stop's grace period that ends while a request still waits before its attempt (here
// on a shared-affinity lookup held by a frozen Redis): the request is cut by the stop, logged
// once with status 0 and TETHER_SHUTTING_DOWN, and never sent into the pools the stop destroys
// (no 503 written into a closed socket, no "upstream exchange failed" warning). The same over
// h2 (TLS, ALPN): the wait is in the request path every transport shares, and an h2 stream
// must honour the cut as an HTTP/1.1 request does.
import t from 'tap'
import http2 from 'node:http2'
import net from 'node:net'
import { cutBeforeRedisClosed, stopAtGraceEnd, tetherOnFrozenLookup } from './fixtures/grace-end-lookup.js'
import { makeCertificateSet } from './fixtures/tls.js'
import { within } from './fixtures/wait.js'

const certs = makeCertificateSet()
t.teardown(() => certs.remove())
const TLS = { cert: certs.server.certFile, key: certs.server.keyFile, certificates: [], min_version: 'TLSv1.2', hsts: null } as const

for (const protocol of ['HTTP/1.1', 'h2'] as const) {
t.test(`${protocol}: a request waiting on a frozen Redis's shared-affinity lookup at a stop's grace end is logged TETHER_SHUTTING_DOWN, status 0, with no upstream decided`, async (t) => {
  const { tether, logs, forwarded } = await tetherOnFrozenLookup(t, protocol === 'h2' ? { listen: { tls: TLS } } : {})
  const handed = new Promise<void>((resolve) => tether.listener.server.once('request', () => resolve()))
  if (protocol === 'h2') {
    const session = http2.connect(tether.url, { ca: certs.ca })
    session.on('error', () => undefined)
    t.teardown(() => session.destroy())
    session.request({ ':path': '/x', 'x-tenant': 'u1' }).on('error', () => undefined)
  } else {
    const client = net.connect(tether.port, '127.0.0.1')
    client.on('error', () => undefined)
    t.teardown(() => client.destroy())
    client.write('GET /x HTTP/1.1\r\nHost: a\r\nX-Tenant: u1\r\n\r\n')
  }
  await within(handed, 5000, 'the request handed to Tether') // its path now waits for the shared table (Redis frozen)
  // the lookup holds the request past the grace period: Tether closes the connection at the grace
  // end, not at the lookup's own timeout, nor once the stop's end closed the Redis connection
  await stopAtGraceEnd(tether, logs)
  t.ok(cutBeforeRedisClosed(logs), 'the request was cut before the stop closed Redis')
  t.match(logs.access()[0], { status: 0, outcome: 'TETHER_SHUTTING_DOWN', upstream: null, route: null }, 'no upstream decided: no attempt into the destroyed pools')
  t.same(forwarded, [], 'nothing sent upstream')
  t.notOk(logs.records.some((r) => r['msg'] === 'upstream exchange failed'), 'no warning for an attempt into a destroyed pool')
})
}
