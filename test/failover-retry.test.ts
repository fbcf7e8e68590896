// The retry rules end to end, with in-process upstreams on loopback: what is retried on the
// key's next upstream (connect failures always; dropped idempotent requests with a replayable
// body), what is not (a POST that may have reached the upstream, a body over the replay
// buffer), and what Tether answers when no upstream can take a request.
import t, { type Test } from 'tap'
import { randomBytes } from 'node:crypto'
import http from 'node:http'
import { freePort } from './fixtures/ports.js'
import { request, startUpstream, testConfig, type Handler, type Upstream } from './fixtures/upstream.js'
import { setCookieValue } from './fixtures/users.js'
import { startTether, type Tether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { DEFAULTS } from '../src/config/schema.js'
import { buildPlacement } from '../src/placement/rendezvous.js'
import { hashKey } from '../src/placement/hash.js'
import { LogCapture } from './fixtures/log-capture.js'

type Over = Parameters<typeof testConfig>[1]
type Target = { id: string; url: string }

/** An upstream that records each request's body and answers JSON { id, bytes, body }. */
function echo(id: string, bodies: Buffer[]): Handler {
  return (req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const body = Buffer.concat(chunks)
      bodies.push(body)
      res.setHeader('content-type', 'application/json')
      res.setHeader('x-tether-secret', 'must not leak')
      res.end(JSON.stringify({ id, bytes: body.length }))
    })
  }
}

/** Reads the whole request, then drops the connection without an answer. */
const resetAfterRead: Handler = (req) => {
  req.on('data', () => undefined)
  req.on('end', () => req.socket.destroy())
}

/** An http:// URL where nothing listens. */
async function closedPort(): Promise<string> {
  return `http://127.0.0.1:${await freePort()}`
}

/** A value of the `x-user` key whose hash order over `ids` starts with `order`. */
function keyWithOrder(ids: readonly string[], order: readonly string[]): string {
  const p = buildPlacement(ids.map((id) => ({ id, weight: 1 })))
  const out: number[] = []
  for (let i = 0; i < 100_000; i++) {
    const key = `user-${i}`
    p.order(hashKey(key), out)
    if (order.every((id, j) => p.ids[out[j]!] === id)) return key
  }
  throw new Error(`no key with order ${order.join(',')}`)
}

const HEADER_KEY: Over = { affinity: { key: 'header', header: { name: 'x-user' } } }

async function upstream(t: Test, id: string, handler?: Handler): Promise<Upstream> {
  const u = await startUpstream(id, handler)
  t.teardown(() => u.close())
  return u
}

async function tether(t: Test, ups: readonly Target[], over: Over = HEADER_KEY, log?: LogCapture): Promise<Tether> {
  const tt = await startTether(testConfig(ups, over), { logger: log ? createLogger('info', log) : createLogger('silent') })
  t.teardown(() => tt.close(0))
  return tt
}

t.test('a POST whose first upstream refuses the connection is retried on the next one with its body intact', async (t) => {
  const bodies: Buffer[] = []
  const others: Buffer[] = []
  const b = await upstream(t, 'b', echo('b', bodies))
  const c = await upstream(t, 'c', echo('c', others))
  const ups = [{ id: 'a', url: await closedPort() }, b, c]
  const log = new LogCapture()
  const tt = await tether(t, ups, HEADER_KEY, log)
  const payload = randomBytes(2048)
  const user = keyWithOrder(['a', 'b', 'c'], ['a', 'b', 'c'])
  const r = await request(`${tt.url}/submit`, {
    method: 'POST', body: payload,
    headers: { 'x-user': user, 'content-type': 'application/octet-stream', 'content-length': String(payload.length) },
  })
  t.equal(r.status, 200)
  t.same(JSON.parse(r.body), { id: 'b', bytes: 2048 }, 'answered by the next upstream in hash order')
  t.equal(bodies.length, 1)
  t.ok(bodies[0]!.equals(payload), 'the 2 KiB body arrived byte for byte')
  t.equal(others.length, 0, 'the third upstream was not involved')
  const access = log.access()
  t.equal(access.length, 1)
  // a new user: never served by 'a', so placed afresh on 'b' (not a move)
  t.match(access[0], { method: 'POST', status: 200, upstream: 'b', retries: 1, outcome: 'retried' })
})

t.test('a POST whose upstream resets after reading it is not retried: 502, the other upstream never sees it', async (t) => {
  const bodies: Buffer[] = []
  const a = await upstream(t, 'a', resetAfterRead)
  const b = await upstream(t, 'b', echo('b', bodies))
  const log = new LogCapture()
  const tt = await tether(t, [a, b], HEADER_KEY, log)
  const user = keyWithOrder(['a', 'b'], ['a', 'b'])
  const r = await request(`${tt.url}/pay`, { method: 'POST', body: 'amount=100', headers: { 'x-user': user } })
  t.equal(r.status, 502)
  t.equal(r.body, 'Bad Gateway: upstream closed the connection\n')
  t.equal(a.seen.length, 1, 'the first upstream got the POST')
  t.equal(b.seen.length, 0, 'the POST was never replayed on the second upstream')
  t.match(log.access()[0], { method: 'POST', status: 502, upstream: 'a', retries: 0, outcome: 'TETHER_UPSTREAM_RESET' })
})

t.test('a GET in the same situation is retried: 200 from the next upstream', async (t) => {
  const bodies: Buffer[] = []
  const a = await upstream(t, 'a', resetAfterRead)
  const b = await upstream(t, 'b', echo('b', bodies))
  const log = new LogCapture()
  const tt = await tether(t, [a, b], HEADER_KEY, log)
  const user = keyWithOrder(['a', 'b'], ['a', 'b'])
  const r = await request(`${tt.url}/page`, { headers: { 'x-user': user } })
  t.equal(r.status, 200)
  t.same(JSON.parse(r.body), { id: 'b', bytes: 0 })
  t.equal(a.seen.length, 1)
  t.equal(b.seen.length, 1)
  t.match(log.access()[0], { method: 'GET', status: 200, upstream: 'b', retries: 1 })
})

t.test('a PUT with a body over the replay buffer is not retried after a reset: 502', async (t) => {
  const bodies: Buffer[] = []
  const a = await upstream(t, 'a', resetAfterRead)
  const b = await upstream(t, 'b', echo('b', bodies))
  const tt = await tether(t, [a, b])
  const user = keyWithOrder(['a', 'b'], ['a', 'b'])
  const big = randomBytes(200 * 1024)
  t.ok(big.length > DEFAULTS.retries.replay_buffer_bytes, 'the body is larger than the 64 KiB replay buffer')
  const r = await request(`${tt.url}/upload`, { method: 'PUT', body: big, headers: { 'x-user': user, 'content-length': String(big.length) } })
  t.equal(r.status, 502)
  t.equal(r.body, 'Bad Gateway: upstream closed the connection\n')
  t.equal(b.seen.length, 0, 'never replayed')

  // the same PUT within the buffer is retried (the control)
  const small = randomBytes(16 * 1024)
  const ok = await request(`${tt.url}/upload`, { method: 'PUT', body: small, headers: { 'x-user': user, 'content-length': String(small.length) } })
  t.equal(ok.status, 200)
  t.ok(bodies.at(-1)?.equals(small), 'a 16 KiB PUT is replayed intact')
})

t.test('retries.attempts: 0 disables retries', async (t) => {
  const bodies: Buffer[] = []
  const a = await upstream(t, 'a', resetAfterRead)
  const b = await upstream(t, 'b', echo('b', bodies))
  const ups = [a, b, { id: 'c', url: await closedPort() }]
  const tt = await tether(t, ups, { ...HEADER_KEY, retries: { attempts: 0 } })
  const reset = await request(`${tt.url}/x`, { headers: { 'x-user': keyWithOrder(['a', 'b', 'c'], ['a', 'b']) } })
  t.equal(reset.status, 502, 'a dropped GET is not retried')
  const refused = await request(`${tt.url}/x`, { headers: { 'x-user': keyWithOrder(['a', 'b', 'c'], ['c', 'b']) } })
  t.equal(refused.status, 502, 'a refused connection is not retried')
  t.equal(refused.body, 'Bad Gateway: upstream connection failed\n')
  t.equal(b.seen.length, 0, 'the other upstream never saw either request')
})

t.test('every upstream refusing gives a 502 quickly, not a hang', async (t) => {
  const ups = [
    { id: 'a', url: await closedPort() },
    { id: 'b', url: await closedPort() },
    { id: 'c', url: await closedPort() },
  ]
  const log = new LogCapture()
  // a refusal ends its attempt at once; a hang would be an attempt waiting on timeouts.connect:
  // the answer must come sooner than one such wait (a wide bound, for a loaded host)
  const CONNECT = 5_000
  const tt = await tether(t, ups, { affinity: { key: 'cookie' }, timeouts: { connect: CONNECT } }, log)
  const start = performance.now()
  const r = await request(tt.url)
  const ms = Math.round(performance.now() - start)
  t.equal(r.status, 502)
  t.equal(r.body, 'Bad Gateway: upstream connection failed\n')
  t.ok(ms < CONNECT, `answered in ${ms} ms, sooner than one connect timeout (${CONNECT} ms) of its three attempts`)
  t.match(log.access()[0], { status: 502, retries: 2, outcome: 'TETHER_UPSTREAM_CONNECT' })
})

t.test('no upstream ready (all disabled): 503 with Retry-After', async (t) => {
  const a = await upstream(t, 'a')
  const b = await upstream(t, 'b')
  const tt = await tether(t, [a, b], { affinity: { key: 'cookie' } })
  t.equal((await request(tt.url)).status, 200, 'served while enabled')
  t.ok(tt.health.disable('a'))
  t.ok(tt.health.disable('b'))
  const r = await request(tt.url)
  t.equal(r.status, 503)
  t.equal(r.headers['retry-after'], '1')
  t.equal(r.body, 'Service Unavailable: no upstream available\n')
  const before = a.seen.length + b.seen.length
  t.equal((await request(tt.url, { headers: { 'x-user': 'k' } })).status, 503)
  t.equal(a.seen.length + b.seen.length, before, 'nothing was forwarded')
  tt.health.enable('b')
  t.equal((await request(tt.url)).status, 200, 'served again once one is enabled')
})

t.test('affinity.strict: a user whose upstream is unavailable gets 503 instead of moving', async (t) => {
  const ups = await Promise.all(['a', 'b', 'c'].map((id) => upstream(t, id)))
  const tt = await tether(t, ups, { affinity: { key: 'cookie', strict: true } })
  const first = await request(tt.url)
  t.equal(first.status, 200)
  const home = first.body.trim()
  const cookie = `tether=${setCookieValue(first.headers['set-cookie'], 'tether')}`
  t.ok(tt.health.disable(home))
  const r = await request(tt.url, { headers: { cookie } })
  t.equal(r.status, 503)
  t.equal(r.body, 'Service Unavailable: your upstream is unavailable\n', 'TETHER_AFFINITY_UNAVAILABLE')
  t.equal(r.headers['retry-after'], '1')
  t.equal(r.headers['set-cookie'], undefined, 'the cookie is not rewritten')
  const fresh = await request(tt.url)
  t.equal(fresh.status, 200, 'a new user is still placed')
  t.not(fresh.body.trim(), home, 'and not on the disabled upstream')
  tt.health.enable(home)
  const back = await request(tt.url, { headers: { cookie } })
  t.equal(back.status, 200)
  t.equal(back.body.trim(), home, 'the user returns to their upstream once it is back')
})

t.test('X-Tether-* request headers from the client are stripped on a retry too', async (t) => {
  const b = await upstream(t, 'b', echo('b', []))
  const ups = [{ id: 'a', url: await closedPort() }, b]
  const tt = await tether(t, ups)
  const user = keyWithOrder(['a', 'b'], ['a', 'b'])
  const r = await request(`${tt.url}/h`, {
    headers: {
      'x-user': user,
      'x-tether-moved': 'from=evil; reason=drain; epoch=7',
      'x-tether-epoch': '99',
      'x-tether-upstream': 'a',
      'x-tether-anything': 'x',
    },
  })
  t.equal(r.status, 200)
  t.equal(JSON.parse(r.body).id, 'b', 'served after a retry')
  const seen = b.seen[0]!
  const names = seen.rawHeaders.filter((_, i) => i % 2 === 0).map((n) => n.toLowerCase())
  // a new user whose first upstream refused was never served there: placed afresh, not "moved"
  t.same(names.filter((n) => n.startsWith('x-tether-')).sort(), ['x-tether-epoch'], 'only Tether\'s own, once')
  t.equal(seen.headers['x-tether-epoch'], '0', 'Tether\'s epoch, not the client\'s')
  t.notOk(Object.keys(r.headers).some((n) => n.startsWith('x-tether-')), 'no X-Tether-* header reaches the client')
})


t.test('a chunked POST body arriving in pieces is replayed intact after a refused connection', async (t) => {
  const bodies: Buffer[] = []
  const b = await upstream(t, 'b', echo('b', bodies))
  const tt = await tether(t, [{ id: 'a', url: await closedPort() }, b], { ...HEADER_KEY, health: { passive: { enabled: false } } })
  const user = keyWithOrder(['a', 'b'], ['a', 'b'])
  const payload = randomBytes(60_000) // within the 64 KiB replay buffer
  const status = await new Promise<number>((resolve, reject) => {
    const req = http.request(`${tt.url}/chunked`, { method: 'POST', agent: false, headers: { 'x-user': user } }, (res) => {
      res.resume()
      res.on('end', () => resolve(res.statusCode ?? 0))
    })
    req.on('error', reject)
    // 16000-byte chunks, one per event-loop turn, no Content-Length: chunked encoding
    let at = 0
    const next = (): void => {
      if (at >= payload.length) { req.end(); return }
      req.write(payload.subarray(at, at + 16_000))
      at += 16_000
      setImmediate(next)
    }
    next()
  })
  t.equal(status, 200)
  t.equal(bodies.length, 1, 'the second upstream got it once')
  t.equal(bodies[0]?.length, payload.length, 'every byte arrived')
  t.ok(bodies[0]?.equals(payload), 'the body is intact')
})
