// A request with Expect: 100-continue and no body (a GET, Content-Length: 0) gets its 100 and
// keeps its connection: Node's ServerResponse closes after an expect-continue answer sent
// without a 100 (the client might still send a body), so the request path sends one whenever
// the head passed its checks, body or not (a review finding: such requests had lost keep-alive).
import t from 'tap'
import { startTether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { startUpstream, testConfig } from './fixtures/upstream.js'
import { rawConnect } from './fixtures/raw-client.js'

t.test('main listener: bodiless requests with Expect keep the connection', async (t) => {
  const up = await startUpstream('app-0', (req, res) => { req.resume().on('end', () => res.end('ok')) })
  const tether = await startTether(testConfig([up]), { logger: createLogger('silent') })
  t.teardown(async () => { await tether.close(0); await up.close() })
  for (const head of ['GET /x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n', 'POST /x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n']) {
    const c = await rawConnect(tether.port)
    t.teardown(() => c.destroy())
    c.write(head)
    await c.until(() => c.ended || c.finals().length >= 1, 3000)
    c.write('GET /y HTTP/1.1\r\nHost: a\r\n\r\n')
    await c.until(() => c.ended || c.finals().length >= 2, 3000)
    t.equal(c.finals().length, 2, `${head.split('\r\n')[0]} + ${head.includes('Content-Length') ? 'CL 0' : 'no body'}: the next request on the connection answered (got ${JSON.stringify(c.responses().map((r) => r.status))}, ended=${c.ended})`)
  }
})
