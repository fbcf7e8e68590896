// Label values driven by client input stay bounded end to end: over HTTP/2 a client may send any
// token as its method (HTTP/1's parser takes only the known ones), and any Host; each is counted
// under the fixed method set, never as a new series, while the access line keeps what was sent.
import t from 'tap'
import http2 from 'node:http2'
import { startTether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { METHODS } from '../src/observability/metrics.js'
import { LogCapture } from './fixtures/log-capture.js'
import { startUpstream, testConfig, request } from './fixtures/upstream.js'

t.test('200 distinct HTTP/2 methods and Hosts from clients make no new series: they count as OTHER', async (t) => {
  const app = await startUpstream('a', (req, res) => { req.resume(); res.end('ok') })
  const cap = new LogCapture()
  const tether = await startTether(testConfig([app], { listen: { http2: { cleartext: true } } }), { logger: createLogger('info', cap) })
  const session = http2.connect(tether.url)
  t.teardown(async () => { session.close(); await tether.close(0); await app.close() })
  const send = (headers: http2.OutgoingHttpHeaders): Promise<void> => new Promise((resolve, reject) => {
    const stream = session.request(headers)
    stream.on('error', reject)
    stream.on('end', () => resolve())
    stream.resume()
    stream.end()
  })
  const n = 200
  for (let i = 0; i < n; i++) await send({ ':method': `M${i.toString(36).toUpperCase()}X`, ':path': `/p${i}`, host: `h${i}.example` })
  const text = (await request(`${tether.adminUrl}/metrics`)).body
  const series = text.split('\n').filter((l) => l.startsWith('tether_http_requests_total{'))
  t.equal(series.length, 1, `one series: ${series.join(' | ')}`)
  t.match(series[0], /^tether_http_requests_total\{upstream="a",method="OTHER",status_class="\dxx"\} 200$/)
  const labelled = new Set([...text.matchAll(/method="([^"]*)"/g)].map((m) => m[1]))
  t.ok([...labelled].every((m) => (METHODS as readonly string[]).includes(m!)), `only the fixed methods as label values: ${[...labelled].join(', ')}`)
  t.notMatch(text, /h\d+\.example/, 'no Host in any label')
  const access = cap.access()
  t.equal(access.length, n, 'one access line each')
  t.same(access.slice(0, 2).map((r) => r['method']), ['M0X', 'M1X'], 'the access line keeps the method as sent')
})
