// r4: an early answer to an upload on the connection's last request: the rest of the body is
// no longer read and dropped (discardRest), the socket is destroyed once the answer is flushed,
// and the client still sending is reset, losing the answer it had not read yet
import t from 'tap'
import net from 'node:net'
import { startTether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { startUpstream, testConfig } from './fixtures/upstream.js'

const BODY = 8 * 1024 * 1024

/** POST an 8 MiB body without reading; once all is written (or the write failed) read what came. */
function upload(port: number): Promise<{ text: string; error: string | null; wrote: number }> {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1' })
    let error: string | null = null
    let wrote = 0
    s.on('error', (e: NodeJS.ErrnoException) => { error ??= e.code ?? e.message })
    s.write(`POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: ${BODY}\r\n\r\n`)
    const chunk = Buffer.alloc(64 * 1024, 120)
    const more = (): void => {
      if (error !== null || wrote >= BODY) return done()
      wrote += chunk.length
      s.write(chunk, (err) => { if (err) { error ??= (err as NodeJS.ErrnoException).code ?? err.message; done() } else more() })
    }
    let text = ''
    let finished = false
    const done = (): void => {
      if (finished) return
      finished = true
      s.setEncoding('latin1')
      s.on('data', (d: string) => { text += d; if (/\r\n\r\nno$/.test(text)) { s.destroy(); resolve({ text, error, wrote }) } })
      s.on('close', () => resolve({ text, error, wrote }))
      s.on('end', () => { s.destroy(); resolve({ text, error, wrote }) })
    }
    more()
  })
}

for (const cap of [0, 1]) {
  t.test(`cap ${cap}: the upstream answers 401 before the upload is done`, async (t) => {
    const up = await startUpstream('app-0', (_req, res) => { res.writeHead(401, { 'content-length': '2' }); res.end('no') })
    t.teardown(() => up.close())
    const tether = await startTether(testConfig([up], { limits: { max_requests_per_connection: cap } }), { logger: createLogger('silent') })
    t.teardown(() => tether.close(0))
    const results = []
    for (let i = 0; i < 10; i++) results.push(await upload(tether.port))
    const got = results.filter((r) => r.text.startsWith('HTTP/1.1 401')).length
    t.comment(JSON.stringify(results.map((r) => [r.text.slice(0, 12), r.error, r.wrote])))
    t.equal(got, 10, `the client read the 401 in ${got} of 10 uploads`)
    t.same(results.filter((r) => r.error !== null).map((r) => r.error), [], 'no upload was reset: the rest of the body was read and dropped (discardRest), as with no cap')
  })
}

import { makeCertificateSet } from './fixtures/tls.js'
const certs = makeCertificateSet()
t.teardown(() => certs.remove())
for (const cap of [0, 1]) {
  t.test(`redirect listener, cap ${cap}: a POST with an 8 MiB body gets its 308 without a reset (docs/tls.md)`, async (t) => {
    const up = await startUpstream('app-0', (_req, res) => res.end('app'))
    t.teardown(() => up.close())
    const tether = await startTether(testConfig([up], {
      listen: {
        tls: { cert: certs.server.certFile, key: certs.server.keyFile, certificates: [], min_version: 'TLSv1.2', hsts: null },
        redirect: { host: '127.0.0.1', port: 0, https_port: null },
      },
      limits: { max_requests_per_connection: cap },
    }), { logger: createLogger('silent') })
    t.teardown(() => tether.close(0))
    const results = []
    for (let i = 0; i < 5; i++) results.push(await upload(Number(new URL(tether.redirectUrl!).port)))
    t.comment(JSON.stringify(results.map((r) => [r.text.slice(0, 12), r.error, r.wrote])))
    t.same(results.filter((r) => r.error !== null).map((r) => r.error), [], 'no upload was reset')
  })
}
