// Complete answers delimited by the close (no length, not chunked), ended in the ways an upstream
// really ends them (FIN, FIN then RST, TLS with and without close_notify): never cut (review s65 r2).
import t from 'tap'
import net from 'node:net'
import tls from 'node:tls'
import type { AddressInfo } from 'node:net'
import { startTether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { makeCertificateSet } from './fixtures/tls.js'
import { testConfig } from './fixtures/upstream.js'
import { LogCapture } from './fixtures/log-capture.js'
import { exchange } from './fixtures/raw-client.js'
import { onEvent, when } from './fixtures/wait.js'

const certs = makeCertificateSet()
t.teardown(() => certs.remove())
const ANSWER = 'HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nhello'

type Ending = (tcp: net.Socket, sec: tls.TLSSocket | null) => void
const endings: [string, boolean, Ending][] = [
  ['plain, FIN', false, (tcp) => tcp.end()],
  ['plain, FIN then RST', false, (tcp) => { tcp.end(); tcp.once('finish', () => setImmediate(() => tcp.resetAndDestroy())) }],
  ['TLS, close_notify then FIN', true, (_tcp, sec) => sec!.end()],
  ['TLS, FIN without close_notify', true, (tcp) => tcp.end()],
]
for (const [name, secure, ending] of endings) {
  t.test(`a close-delimited answer whose upstream ends it by ${name}: whole, with a last chunk`, async (t) => {
    const server = net.createServer((tcp) => {
      tcp.on('error', () => undefined)
      const sec = secure ? new tls.TLSSocket(tcp, { isServer: true, cert: certs.server.cert, key: certs.server.key }) : null
      const io: net.Socket = sec ?? tcp
      io.on('error', () => undefined)
      let got = ''
      io.on('data', (d: Buffer) => {
        got += d.toString('latin1')
        if (!got.includes('\r\n\r\n')) return
        got = ''
        io.write(ANSWER, () => setImmediate(() => ending(tcp, sec)))
      })
    })
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
    t.teardown(() => server.close())
    const port = (server.address() as AddressInfo).port
    const url = `${secure ? 'https' : 'http'}://127.0.0.1:${port}`
    const logs = new LogCapture()
    const tether = await startTether(testConfig([{ id: 'a', url, weight: 1, ...(secure ? { tls: { ca: certs.caFile, servername: null, cert: null, key: null, verify: true } } : {}) }], { retries: { attempts: 0 }, log: { level: 'info', access: true } } as never), { logger: createLogger('info', logs) })
    t.teardown(() => tether.close(0))
    const r = await exchange(tether.port, 'GET /x HTTP/1.1\r\nHost: a\r\n\r\n', { responses: 1, ms: 3000 })
    t.equal(r.first, '200', `a complete answer (bytes: ${JSON.stringify(r.bytes.toString('latin1').slice(-40))}, ended ${r.ended}, reset ${r.reset})`)
    await when(onEvent(logs, 'record'), () => logs.access().some((l) => l['path'] === '/x'), 3000, 'the access line')
    t.equal(logs.access().find((l) => l['path'] === '/x')?.['outcome'], 'ok')
  })
}
