// r3 review: a request line refused behind a pipelined request whose body does not end in LF is
// taken to begin at the body's last LF: body bytes are logged as (part of) the method
import t from 'tap'
import { startTether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { LogCapture } from './fixtures/log-capture.js'
import { rawConnect } from './fixtures/raw-client.js'
import { startUpstream, testConfig } from './fixtures/upstream.js'

t.test('a refused request line behind a POST whose body does not end in LF: no body byte is logged', async (t) => {
  const up = await startUpstream('a')
  const logs = new LogCapture()
  const tether = await startTether(testConfig([up]), { logger: createLogger('info', logs) })
  t.teardown(async () => { await tether.close(0); await up.close() })
  const body = 'user=bob\npassword9'
  const post = `POST /login HTTP/1.1\r\nHost: a\r\nContent-Length: ${body.length}\r\n\r\n${body}`
  for (const next of ['ANNOUNCE /z HTTP/1.1\r\nHost: a\r\n\r\n', 'GET /x HTTP/1.1\rHost: a\r\n\r\n', 'GET /y HTTP/1.1\r\n Host: a\r\n\r\n', 'GET /v HTTP/9.1\r\nHost: a\r\n\r\n']) {
    const before = logs.access().length
    const c = await rawConnect(tether.port)
    c.write(post + next) // one write: both in one read
    t.ok(await c.waitEnd(5000), 'refused and closed')
    c.destroy()
    await new Promise<void>((done) => { const ck = (): void => { if (logs.access().length >= before + 2) done() }; ck(); logs.on('record', ck) })
    const refused = logs.access().at(-1)!
    t.comment(JSON.stringify(next), JSON.stringify({ method: refused.method, path: refused.path, status: refused.status }))
    t.notOk(JSON.stringify(refused).includes('password9'), `no body byte logged: ${JSON.stringify(next)}`)
  }
})
