// Hostile input, routing abuse: request-target forms (absolute, authority, asterisk), CONNECT,
// HTTP/2 preface and h2c, WebSocket upgrades with a request smuggled behind them, pipelining
// with upgrades, Host rules, HTTP/0.9 and 1.0. Each case checks the client's answer AND what
// the raw upstream received.
import t from 'tap'
import { ROUTING } from './fixtures/raw-cases.js'
import { caseTest, startHarness, type Harness } from './fixtures/raw-tether.js'
import { exchange, rawConnect } from './fixtures/raw-client.js'
import { ok, type RawScript } from './fixtures/raw-upstream.js'
import { header, headerValues } from './fixtures/raw-http.js'
import { waitFor } from './fixtures/upstream.js'

const WS_KEY = 'dGhlIHNhbXBsZSBub25jZQ=='
const WS_ACCEPT = 's3pPLMBiTxaQ9kYGzzhZRbK+xOo=' // RFC 6455 section 1.3's example pair
const wsHandshake = (path: string): string =>
  `GET ${path} HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n` +
  `Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${WS_KEY}\r\n\r\n`
const SWITCH = `HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: ${WS_ACCEPT}\r\n\r\n`

t.test('the routing table', async (t) => {
  let h: Harness
  t.before(async () => { h = await startHarness({ retries: { attempts: 0 } }) })
  t.teardown(() => h.close())
  for (const c of ROUTING) caseTest(t, () => h, c)
  t.test('nothing Tether logged along the way is an unhandled error', async (t) => {
    t.same(h.unhandled(), [])
  })
})

t.test('an h2c upgrade is served as HTTP/1.1: the upstream gets neither Upgrade nor HTTP2-Settings', async (t) => {
  const h = await startHarness()
  t.teardown(() => h.close())
  const r = await exchange(h.port,
    'GET /h2c HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n',
    { responses: 1 })
  t.equal(r.first, '200')
  t.notOk(r.responses.some((x) => x.status === 101), 'no 101: Tether does not speak h2c')
  t.equal(h.received().length, 1)
  const q = h.received()[0]!
  t.same([...headerValues(q, 'upgrade'), ...headerValues(q, 'http2-settings')], [], 'no Upgrade or HTTP2-Settings upstream')
  t.notMatch(headerValues(q, 'connection').join(','), /upgrade/i, 'Connection names no upgrade')
})

t.test('an HTTP/1.0 request with Upgrade: websocket is served as a plain request: HTTP/1.0 has no upgrades (RFC 9110 section 7.8)', async (t) => {
  const h = await startHarness()
  t.teardown(() => h.close())
  const r = await exchange(h.port, 'GET /ws HTTP/1.0\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n', { ms: 3000 })
  t.equal(r.first, '200', 'a plain answer, no 101')
  await h.barrier()
  t.equal(h.received().length, 1)
  const q = h.received()[0]!
  t.same(headerValues(q, 'upgrade'), [], 'no Upgrade upstream')
  t.same(h.violations(), [])
})

t.test('a WebSocket upgrade the upstream refuses (200) does not open a tunnel: a request smuggled behind it never reaches the upstream', async (t) => {
  const h = await startHarness({}, (_req, c) => c.write(ok('no upgrade here')))
  t.teardown(() => h.close())
  const r = await exchange(h.port, `${wsHandshake('/ws')}GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n`, { ms: 3000 })
  t.equal(r.first, '200', "the client gets the upstream's refusal")
  t.equal(r.finals.length, 1, 'and nothing else: the smuggled request is not answered')
  t.ok(r.ended, 'the connection is closed after the refusal')
  await h.barrier()
  t.same(h.received().map((q) => q.target), ['/ws'], 'the upstream received the handshake only')
  t.same(h.violations(), [])
  const bytes = h.up.connections.map((c) => c.bytes.toString('latin1')).join('')
  t.notMatch(bytes, /smuggled/, 'not one byte of the smuggled request reached the upstream')
  for (const s of h.openSockets()) s.destroy() // the next test checks that Tether closes such a socket itself
})

t.test('a WebSocket refusal with a status outside 100-599 is a 502 of Tether\'s; one with control bytes in its reason phrase reaches the client without them', async (t) => {
  for (const status of ['099', '600', '999']) {
    const bad = await startHarness({ retries: { attempts: 0 } }, (_req, c) => c.end(`HTTP/1.1 ${status} Weird\r\nContent-Length: 2\r\n\r\nno`))
    t.teardown(() => bad.close())
    const r = await exchange(bad.port, wsHandshake('/ws'), { ms: 3000 })
    const text = r.bytes.toString('latin1')
    t.equal(r.first, '502', `${status}: not the upstream's status, no tunnel (${JSON.stringify(text.slice(0, 40))})`)
    t.match(text, /\r\n\r\nBad Gateway: invalid response from upstream\n$/, `${status}: Tether's 502 alone`)
    t.ok(r.ended, `${status}: the connection closed`)
  }
  const odd = await startHarness({}, (_req, c) => c.end('HTTP/1.1 403 No\x01pe\r\nContent-Length: 2\r\n\r\nno'))
  t.teardown(() => odd.close())
  const r2 = await exchange(odd.port, wsHandshake('/ws'), { ms: 3000 })
  t.equal(r2.first, '403', "the upstream's refusal")
  t.notMatch(r2.bytes.toString('latin1'), /\x01/, 'without the control byte')
})

t.test('after a refused WebSocket upgrade with bytes behind it, Tether still closes the connection (and so can shut down)', async (t) => {
  const h = await startHarness({}, (_req, c) => c.write(ok('no upgrade here')))
  t.teardown(() => h.close())
  const conn = await rawConnect(h.port)
  t.teardown(() => conn.destroy())
  conn.write(`${wsHandshake('/ws')}GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n`)
  t.ok(await conn.waitEnd(3000), 'the client sees the end of the answer')
  conn.destroy()
  // Tether lingers 2 s at most before destroying a socket it ended
  await waitFor(() => h.openSockets().length === 0, 4000, "Tether's side of the connection to close").catch((err: Error) => t.fail(err.message))
  const leaked = h.openSockets()
  t.equal(leaked.length, 0, 'no socket left open')
  for (const s of leaked) s.destroy()
  const t0 = Date.now()
  const closed = await Promise.race([h.tether.close(0).then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 2000).unref())])
  t.ok(closed, `tether.close(0) returned (${Date.now() - t0} ms)`)
})

t.test('a WebSocket upgrade the upstream accepts carries later bytes as WebSocket data, not as a request', async (t) => {
  const h = await startHarness({}, (req, c) => { if (header(req, 'upgrade') !== undefined) c.write(SWITCH); else c.write(ok()) })
  t.teardown(() => h.close())
  const conn = await rawConnect(h.port)
  t.teardown(() => conn.destroy())
  conn.write(wsHandshake('/ws'))
  t.ok(await conn.until(() => conn.finals().length === 1, 3000), 'the 101 arrives')
  t.equal(conn.finals()[0]!.status, 101)
  conn.write('GET /tunnelled HTTP/1.1\r\nHost: a\r\n\r\n')
  const up = h.up.connections.find((c) => c.requests.some((q) => q.target === '/ws'))!
  await waitFor(() => up.bytes.includes('/tunnelled'), 3000, 'the bytes on the upstream side of the tunnel')
  t.same(h.received().map((q) => q.target), ['/ws'], 'they were relayed raw (the upstream parser saw no second request)')
})

t.test('a WebSocket handshake reaches the upstream with its path exactly as written, as a plain request does (no "\\" -> "/", no "//" collapsed: RFC 9110 section 7.7)', async (t) => {
  const h = await startHarness({}, (req, c) => c.write(headerValues(req, 'upgrade').length > 0 ? SWITCH : ok()))
  t.teardown(() => h.close())
  // [request-target as the client wrote it, the path the upstream must get]
  const cases: [string, string][] = [
    ['//ws//a///b', '//ws//a///b'],
    ['/ws\\..\\admin', '/ws\\..\\admin'],
    ['/ws/./x/%2e%2e/y/..//z?q=//a\\b&r=..%2f', '/ws/./x/%2e%2e/y/..//z?q=//a\\b&r=..%2f'],
    ["/ws/a'b\"c{d}|^`<>~!$&()*+,;=:@", "/ws/a'b\"c{d}|^`<>~!$&()*+,;=:@"],
    ['http://h.example//ws//x\\y?a=b', '//ws//x\\y?a=b'],
  ]
  for (const [target, path] of cases) {
    const plain = await exchange(h.port, `GET ${target} HTTP/1.1\r\nHost: h.example\r\n\r\n`, { responses: 1 })
    t.equal(plain.first, '200', `${target}: plain request answered`)
    const ws = await exchange(h.port, wsHandshake(target).replace('Host: a', 'Host: h.example'), { responses: 1 })
    t.equal(ws.first, '101', `${target}: handshake switched`)
    const [q, u] = h.received().slice(-2)
    t.equal(q?.target, path, `${target}: the plain request's path`)
    t.equal(u?.target, path, `${target}: the handshake's path, the same`)
    t.same(u === undefined ? [] : headerValues(u, 'upgrade'), ['websocket'], `${target}: and it was the handshake`)
  }
  t.same(h.violations(), [])
})

t.test('every Upgrade value gets an answer: a list naming websocket (any letter case, two Upgrade lines) switches, with Upgrade: websocket upstream; any other is a plain request', async (t) => {
  const h = await startHarness({}, (req, c) => c.write(headerValues(req, 'upgrade').length > 0 ? SWITCH : ok()))
  t.teardown(() => h.close())
  // [the client's Upgrade lines, a WebSocket upgrade (101) or a plain request (200)]
  const cases: [string[], boolean][] = [
    [['foo, websocket'], true],
    [['websocket, h2c'], true],
    [[', websocket ,'], true],
    [['WebSocket'], true],
    [['WEBSOCKET'], true],
    [['h2c', 'websocket'], true],
    [['websocket', 'foo/2'], true],
    [['h2c'], false],
    [['h2c, foo'], false],
    [['websocket/13'], false],
    [['foo'], false],
    [[''], false],
  ]
  for (const [lines, ws] of cases) {
    const label = JSON.stringify(lines)
    const upgrade = lines.map((l) => `Upgrade: ${l}\r\n`).join('')
    const r = await exchange(h.port, wsHandshake('/u').replace('Upgrade: websocket\r\n', upgrade), { responses: 1, ms: 3000 })
    t.equal(r.first, ws ? '101' : '200', `${label}: answered ${ws ? '101' : '200'} (got ${r.first}${r.ended ? ', connection closed' : ''})`)
    const q = h.received().at(-1)
    t.same(q === undefined ? null : headerValues(q, 'upgrade'), ws ? ['websocket'] : [], `${label}: the upstream got ${ws ? 'Upgrade: websocket alone' : 'no Upgrade'}`)
  }
  const websockets = cases.filter(([, ws]) => ws).length
  const access = (): Record<string, unknown>[] => h.logs.access().filter((r) => r['protocol'] === 'websocket')
  await waitFor(() => access().length >= websockets, 3000, 'access records of the upgrades').catch((err: Error) => t.fail(err.message))
  t.same(access().map((r) => [r['status'], r['outcome']]), Array.from({ length: websockets }, () => [101, 'ok']), 'each logged as a switch, none as client_abort')
  t.same(h.violations(), [])
})

/**
 * An upstream that answers GET /slow late: when the request `until` names arrives, or after
 * 300 ms. Forwarded in order, the later request comes only after /slow's answer, so the
 * deadline is what answers /slow then; forwarded early, it arrives first and is answered first.
 */
function slowFirst(until: (req: Parameters<RawScript>[0]) => boolean, answer: RawScript): RawScript {
  let release: (() => void) | null = null
  return (req, conn, n) => {
    if (req.target === '/slow') {
      const go = (): void => { clearTimeout(timer); release = null; conn.write(ok('slow')) }
      const timer = setTimeout(go, 300)
      release = go
      return
    }
    if (until(req)) {
      answer(req, conn, n)
      release?.()
      return
    }
    conn.write(ok())
  }
}

t.test('a WebSocket upgrade pipelined after a slow request is answered after it: answers go out in request order', async (t) => {
  const h = await startHarness({}, slowFirst((q) => header(q, 'upgrade') !== undefined, (_q, c) => c.write(SWITCH)))
  t.teardown(() => h.close())
  const conn = await rawConnect(h.port)
  t.teardown(() => conn.destroy())
  conn.write(`GET /slow HTTP/1.1\r\nHost: a\r\n\r\n${wsHandshake('/ws')}`)
  await conn.until(() => conn.finals().length >= 2 || conn.ended, 1500)
  const finals = conn.finals()
  t.same(finals.map((r) => r.status), [200, 101], 'the 200 for /slow, then the 101')
  t.equal(finals[0]?.body.toString(), 'slow')
  t.same(h.received().map((q) => q.target), ['/slow', '/ws'], 'the upstream received both, /slow first')
})

t.test('an Upgrade: h2c request pipelined after a slow request is answered, after it', async (t) => {
  const h = await startHarness({}, slowFirst((q) => q.target === '/h2c', (_q, c) => c.write(ok('h2c'))))
  t.teardown(() => h.close())
  const conn = await rawConnect(h.port)
  t.teardown(() => conn.destroy())
  conn.write('GET /slow HTTP/1.1\r\nHost: a\r\n\r\nGET /h2c HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n')
  await conn.until(() => conn.finals().length >= 2 || conn.ended, 1500)
  t.same(conn.finals().map((r) => `${r.status} ${r.body.toString()}`), ['200 slow', '200 h2c'])
  t.same(h.received().map((q) => q.target), ['/slow', '/h2c'])
})

t.test('h2c requests on one keep-alive connection leak no listener (12 requests, no MaxListenersExceededWarning)', async (t) => {
  const h = await startHarness()
  t.teardown(() => h.close())
  const warnings: string[] = []
  const onWarning = (w: Error): void => { warnings.push(`${w.name}: ${w.message}`) }
  process.on('warning', onWarning)
  t.teardown(() => { process.off('warning', onWarning) })
  const conn = await rawConnect(h.port)
  t.teardown(() => conn.destroy())
  for (let i = 1; i <= 12; i++) {
    conn.write(`GET /h2c-${i} HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n`)
    await conn.waitFinals(i, 3000)
  }
  t.equal(conn.finals().length, 12, 'all 12 answered on the same connection')
  t.equal(h.received().length, 12)
  // the warning is emitted on the next tick after the 11th listener: let one turn pass
  await new Promise((r) => setImmediate(r))
  t.same(warnings.filter((w) => w.startsWith('MaxListenersExceededWarning')), [])
})

t.test('an HTTP/0.9 request (GET / with no version) gets no HTTP/0.9 answer, reaches nothing, and is closed within client_headers', async (t) => {
  const h = await startHarness({ timeouts: { client_headers: 300 } })
  t.teardown(() => h.close())
  const conn = await rawConnect(h.port)
  t.teardown(() => conn.destroy())
  conn.write('GET /\r\n')
  const ended = await conn.waitEnd(1300 + 1000)
  t.ok(ended, `closed (after ${conn.endedAfter} ms)`)
  t.ok(conn.endedAfter !== null && conn.endedAfter <= 300 + 1000, 'within client_headers + 1 s')
  const text = conn.bytes.toString('latin1')
  t.ok(text === '' || text.startsWith('HTTP/1.1 4'), `nothing, or an HTTP/1.1 4xx (got ${JSON.stringify(text.slice(0, 20))})`)
  await h.barrier()
  t.same(h.received(), [])
})

t.test('a malformed Host never counts against an upstream: four requests with Host [::1 eject nothing', async (t) => {
  const h = await startHarness({ retries: { attempts: 0 }, affinity: { key: 'none' } }, undefined, 2)
  t.teardown(() => h.close())
  const statuses: string[] = []
  for (let i = 0; i < 4; i++) statuses.push((await exchange(h.port, 'GET / HTTP/1.1\r\nHost: [::1\r\n\r\n', { responses: 1 })).first)
  t.same(statuses, ['400', '400', '400', '400'], 'each is a 400 (the client is at fault)')
  t.same(h.tether.health.snapshot().map((s) => `${s.id} ${s.state} ${s.passiveFailures}`), ['app-0 healthy 0', 'app-1 healthy 0'], 'no passive failure recorded')
})
