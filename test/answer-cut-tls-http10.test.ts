// An answer the upstream breaks off, to an HTTP/1.0 client over Tether's TLS listener (no chunks:
// delimited by the close): the client's connection ends without a close_notify, and Tether does
// not crash (Node's resetAndDestroy throws ERR_INVALID_HANDLE_TYPE for a TLS socket: review s65 r2).
import t from 'tap'
import tls from 'node:tls'
import { startTether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { makeCertificateSet } from './fixtures/tls.js'
import { LogCapture } from './fixtures/log-capture.js'
import { startRawUpstream } from './fixtures/raw-upstream.js'
import { testConfig } from './fixtures/upstream.js'
import { onEvent, when } from './fixtures/wait.js'

const certs = makeCertificateSet()
t.teardown(() => certs.remove())

t.test('an answer to an HTTP/1.0 client over TLS that the upstream breaks off mid-chunk: the client connection ends, Tether logs no error', async (t) => {
  const up = await startRawUpstream('a', (_q, c) => c.end('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n3\r\nab'))
  t.teardown(() => up.close())
  const logs = new LogCapture()
  const tether = await startTether(testConfig([{ id: 'a', url: up.url, weight: 1 }], {
    retries: { attempts: 0 }, log: { level: 'debug', access: true },
    listen: { tls: { cert: certs.server.certFile, key: certs.server.keyFile, certificates: [], min_version: 'TLSv1.2', hsts: null }, http2: { enabled: false } },
  } as never), { logger: createLogger('debug', logs) })
  t.teardown(() => tether.close(0))
  const sock = tls.connect({ host: '127.0.0.1', port: tether.port, ca: certs.ca, servername: 'localhost' })
  sock.on('error', () => undefined)
  let bytes = ''
  sock.on('data', (d: Buffer) => { bytes += d.toString('latin1') })
  const ended = new Promise<string>((resolve) => { sock.once('close', () => resolve('closed')); setTimeout(() => resolve('still open after 3 s'), 3000).unref() })
  sock.write('GET /x HTTP/1.0\r\nHost: a\r\n\r\n')
  t.equal(await ended, 'closed', `the client connection ends (got ${JSON.stringify(bytes.slice(0, 60))})`)
  sock.destroy()
  await when(onEvent(logs, 'record'), () => logs.access().some((l) => l['path'] === '/x'), 3000, 'the access line').catch(() => undefined)
  t.match(logs.access().find((l) => l['path'] === '/x'), { status: 200, outcome: 'TETHER_UPSTREAM_RESET' })
  const bad = logs.records.filter((r) => (r['level'] as number) >= 50 || /uncaught|unhandled|INVALID_HANDLE/i.test(JSON.stringify(r)))
  t.same(bad.map((r) => r['msg']), [], 'no error logged')
})
