// timeouts.client_connection_max at the edges (review r2): a WebSocket upgrade asked for on a
// keep-alive connection past the bound is served, as nginx serves it (the bound ends keep-alive,
// not upgrades); `Upgrade: h2c`, 100-continue and HEAD answers past it say `Connection: close`;
// h2 streams opened in the same flight as the first past the bound are refused REFUSED_STREAM and
// never forwarded, with one GOAWAY naming that first stream (RFC 9113 section 6.8: no higher id
// in a later GOAWAY). With capStreams' `ended` flag removed the last test fails 2 asserts.
import t, { type Test } from 'tap'
import type http from 'node:http'
import http2 from 'node:http2'
import { startTether, type Tether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { FakeClock } from './fixtures/clock.js'
import { rawConnect, type RawConnection } from './fixtures/raw-client.js'
import { ask, connectionHeaders, echoUpstream, goaways, oneByOne } from './fixtures/connection-bounds.js'
import { testConfig } from './fixtures/upstream.js'

/** Tether with a 1-minute bound on a FakeClock, in front of an upstream answering with `handler`. */
async function boundedTether(t: Test, handler: http.RequestListener, options: { websocket?: boolean; h2c?: boolean } = {}): Promise<{ tether: Tether; clock: FakeClock }> {
  const url = await echoUpstream(t, handler, options.websocket)
  const clock = new FakeClock()
  const tether = await startTether(testConfig([{ id: 'app-0', url }], { ...(options.h2c ? { listen: { http2: { cleartext: true } } } : {}), timeouts: { client_connection_max: 60_000 } }), { logger: createLogger('silent'), clock })
  t.teardown(() => tether.close(0))
  return { tether, clock }
}

/** A keep-alive connection to `tether` that carried one request, then the bound passed. */
async function connectionPastBound(t: Test, tether: Tether, clock: FakeClock): Promise<RawConnection> {
  const c = await rawConnect(tether.port)
  t.teardown(() => c.destroy())
  await oneByOne(t, c, ['/1'])
  clock.advance(120_000)
  return c
}

t.test('upgrade past the bound on a keep-alive connection is served (101) and carries frames', async (t) => {
  const { tether, clock } = await boundedTether(t, (req, res) => res.end(req.url), { websocket: true })
  const c = await connectionPastBound(t, tether, clock)
  c.write('GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n')
  const ok = await c.until(() => c.bytes.toString('latin1').includes('101 Switching'), 5_000)
  t.ok(ok, '101 past the bound')
  // a masked text frame "hi"
  const mask = Buffer.from([1, 2, 3, 4]); const payload = Buffer.from('hi')
  const frame = Buffer.concat([Buffer.from([0x81, 0x80 | payload.length]), mask, Buffer.from(payload.map((b, i) => b ^ mask[i % 4]!))])
  c.write(frame)
  t.ok(await c.until(() => c.bytes.toString('latin1').includes('echo:hi'), 5_000), 'echo over the upgraded connection')
  t.notOk(c.ended, 'still open')
})

t.test('Upgrade: h2c (served plain) past the bound says Connection: close', async (t) => {
  const { tether, clock } = await boundedTether(t, (req, res) => res.end(req.url))
  const c = await connectionPastBound(t, tether, clock)
  c.write('GET /2 HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n')
  t.ok(await c.until(() => c.finals().length === 2, 5_000), 'answered')
  t.ok(await c.waitEnd(5_000), 'closed')
  t.same(connectionHeaders(c), ['keep-alive', 'close'])
})

t.test('h2c: streams opened in the same flight as the first past the bound are refused (REFUSED_STREAM), never forwarded', async (t) => {
  const paths: string[] = []
  const { tether, clock } = await boundedTether(t, (req, res) => { paths.push(req.url!); res.end(req.url) }, { h2c: true })
  const s = http2.connect(tether.url)
  t.teardown(() => s.destroy())
  s.on('error', () => undefined)
  const got = goaways(s)
  t.same(await ask(s, '/1'), { status: 200, body: '/1', error: null })
  clock.advance(120_000)
  const answers = await Promise.all(['/2', '/3', '/4'].map((p) => ask(s, p)))
  t.same(answers[0], { status: 200, body: '/2', error: null }, 'the first stream past the bound is served')
  t.ok(answers.slice(1).every((a) => a.status === 0 && /REFUSED_STREAM|GOAWAY/.test(a.error ?? '')), `the later ones refused: ${JSON.stringify(answers.slice(1))}`)
  t.same(paths, ['/1', '/2'], '/3 and /4 never forwarded')
  t.ok(got.length >= 1 && got.every(([code, last]) => code === 0 && last === 3), `every GOAWAY NO_ERROR names stream 3: ${JSON.stringify(got)}`)
})

t.test('100-continue then final, and HEAD, past the bound say Connection: close', async (t) => {
  for (const kind of ['continue', 'head']) {
    const { tether, clock } = await boundedTether(t, (req, res) => { req.resume(); req.on('end', () => res.end(req.url)) })
    const c = await connectionPastBound(t, tether, clock)
    if (kind === 'continue') {
      c.write('POST /2 HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n')
      t.ok(await c.until(() => c.bytes.toString('latin1').includes('100 Continue'), 5_000), '100 first')
      c.write('hello')
      t.ok(await c.until(() => c.finals().length === 2, 5_000), 'final')
    } else {
      c.write('HEAD /2 HTTP/1.1\r\nHost: a\r\n\r\n')
      t.ok(await c.until(() => c.bytes.toString('latin1').split('HTTP/1.1 200').length === 3, 5_000), 'HEAD answered')
    }
    t.ok(await c.waitEnd(5_000), `${kind}: closed`)
    t.match(c.bytes.toString('latin1').split('HTTP/1.1 200').at(-1), /connection: close/i, `${kind}: last answer says close`)
  }
})
