// r4 review probes for limits.max_requests_per_connection
import t from 'tap'
import { startHarness } from './fixtures/raw-tether.js'
import { exchange, rawConnect } from './fixtures/raw-client.js'
import { ok } from './fixtures/raw-upstream.js'
import { header, headerValues } from './fixtures/raw-http.js'
import { waitFor } from './fixtures/upstream.js'

const WS_KEY = 'dGhlIHNhbXBsZSBub25jZQ=='
const WS_ACCEPT = 's3pPLMBiTxaQ9kYGzzhZRbK+xOo='
const wsHandshake = (path: string): string =>
  `GET ${path} HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${WS_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n`
const SWITCH = `HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: ${WS_ACCEPT}\r\n\r\n`
const conn = (r: { headers: readonly unknown[] }): string => headerValues(r as never, 'connection').join(',').toLowerCase()
const access = (h: { logs: { records: Record<string, unknown>[] } }) => h.logs.records.filter((r) => r['msg'] === 'access').map((r) => `${r['status']} ${r['path']}`)

t.test('HTTP/1.0 keep-alive, cap 2', async (t) => {
  const h = await startHarness({ limits: { max_requests_per_connection: 2 } })
  t.teardown(() => h.close())
  const c = await rawConnect(h.port)
  t.teardown(() => c.destroy())
  const q = (p: string) => `GET ${p} HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n`
  c.write(q('/1')); await c.until(() => c.finals().length === 1, 3000)
  c.write(q('/2')); await c.until(() => c.finals().length === 2, 3000)
  t.ok(await c.waitEnd(3000), 'closed')
  t.same(c.finals().map(conn), ['keep-alive', 'close'])
})

t.test('100-continue on the Nth (cap 1)', async (t) => {
  const h = await startHarness({ limits: { max_requests_per_connection: 1 } })
  t.teardown(() => h.close())
  const c = await rawConnect(h.port)
  t.teardown(() => c.destroy())
  c.write('POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n')
  t.ok(await c.until(() => c.responses().length === 1, 3000), '100 came')
  t.equal(c.responses()[0]!.status, 100)
  c.write('hello')
  t.ok(await c.until(() => c.finals().length === 1, 3000), 'final came')
  t.ok(await c.waitEnd(3000), 'closed')
  t.same(c.finals().map((r) => [r.status, conn(r)]), [[200, 'close']])
  t.same(c.responses().length, 2, 'exactly one 100 then one final')
})

t.test('HEAD and 304 as the Nth', async (t) => {
  const h = await startHarness({ limits: { max_requests_per_connection: 2 } }, (req, c) => c.write(req.target === '/nm' ? 'HTTP/1.1 304 Not Modified\r\nETag: "x"\r\n\r\n' : ok()))
  t.teardown(() => h.close())
  const c = await rawConnect(h.port)
  t.teardown(() => c.destroy())
  c.write('HEAD /h HTTP/1.1\r\nHost: a\r\n\r\n'); await c.until(() => c.finals([true]).length === 1, 3000)
  c.write('GET /nm HTTP/1.1\r\nHost: a\r\n\r\n'); await c.until(() => c.finals([true, false]).length === 2, 3000)
  t.ok(await c.waitEnd(3000), 'closed')
  t.same(c.finals([true, false]).map((r) => [r.status, conn(r)]), [[200, 'keep-alive'], [304, 'close']])
})

t.test('Tether-made 502 as the Nth (upstream answers garbage)', async (t) => {
  const h = await startHarness({ limits: { max_requests_per_connection: 2 }, retries: { attempts: 0 } }, (req, c) => c.write(req.target === '/bad' ? 'HTTP/1.1 999 x\r\n\r\n' : ok()))
  t.teardown(() => h.close())
  const c = await rawConnect(h.port)
  t.teardown(() => c.destroy())
  c.write('GET /1 HTTP/1.1\r\nHost: a\r\n\r\n'); await c.until(() => c.finals().length === 1, 3000)
  c.write('GET /bad HTTP/1.1\r\nHost: a\r\n\r\n'); await c.until(() => c.finals().length === 2, 3000)
  t.ok(await c.waitEnd(3000), 'closed')
  t.same(c.finals().map((r) => [r.status, conn(r)]), [[200, 'keep-alive'], [502, 'close']])
})

t.test('pipelined past the cap: a malformed head, a CONNECT, an upgrade: nothing answered, logged or forwarded', async (t) => {
  for (const tail of ['GET /2 HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n', 'CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n', wsHandshake('/ws'), 'GET /2 HTTP/1.1\r\n\r\n', 'GET /2 HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n']) {
    const h = await startHarness({ limits: { max_requests_per_connection: 1 } }, (req, c) => c.write(header(req, 'upgrade') !== undefined ? SWITCH : ok()))
    t.teardown(() => h.close())
    const r = await exchange(h.port, `GET /1 HTTP/1.1\r\nHost: a\r\n\r\n${tail}`, { ms: 3000 })
    await h.barrier()
    t.same(r.finals.map((f) => [f.status, conn(f)]), [[200, 'close']], `${JSON.stringify(tail.slice(0, 20))}: only the 1st answered`)
    t.ok(r.ended, 'closed')
    t.same(h.received().map((q) => q.target), ['/1'], 'upstream saw /1 only')
    t.same(access(h).filter((l) => !l.includes('__barrier')), ['200 /1'], 'access log: /1 only')
  }
})

t.test('WebSocket after N-1 requests (cap 2): the upgrade works and the tunnel stays', async (t) => {
  const h = await startHarness({ limits: { max_requests_per_connection: 2 } }, (req, c) => { if (header(req, 'upgrade') !== undefined) c.write(SWITCH); else c.write(ok()) })
  t.teardown(() => h.close())
  const c = await rawConnect(h.port)
  t.teardown(() => c.destroy())
  c.write('GET /1 HTTP/1.1\r\nHost: a\r\n\r\n'); await c.until(() => c.finals().length === 1, 3000)
  c.write(wsHandshake('/ws'))
  t.ok(await c.until(() => c.finals().length === 2, 3000), '101')
  t.equal(c.finals()[1]!.status, 101)
  c.write('abc')
  const up = h.up.connections.find((x) => x.requests.some((q) => q.target === '/ws'))!
  await waitFor(() => up.bytes.includes('abc'), 3000, 'tunnel bytes'); t.pass('tunnel carries bytes')
  t.notOk(c.ended, 'tunnel open')
})

t.test('h2c Upgrade request counted once (cap 2): plain, then Upgrade: h2c, closes after it', async (t) => {
  const h = await startHarness({ limits: { max_requests_per_connection: 2 } })
  t.teardown(() => h.close())
  const c = await rawConnect(h.port)
  t.teardown(() => c.destroy())
  c.write('GET /1 HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n'); await c.until(() => c.finals().length === 1, 3000)
  c.write('GET /2 HTTP/1.1\r\nHost: a\r\n\r\n'); await c.until(() => c.finals().length === 2, 3000)
  t.ok(await c.waitEnd(3000), 'closed after 2')
  t.same(c.finals().map((r) => [r.status, conn(r)]), [[200, 'keep-alive'], [200, 'close']])
})

t.test('pipelined past the cap with Expect: 100-continue: no 100 sent', async (t) => {
  const h = await startHarness({ limits: { max_requests_per_connection: 1 } })
  t.teardown(() => h.close())
  const r = await exchange(h.port, 'GET /1 HTTP/1.1\r\nHost: a\r\n\r\nPOST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n', { ms: 3000 })
  t.notMatch(r.bytes.toString('latin1'), /100 Continue/, 'no 100')
  t.ok(r.ended)
  t.same(r.finals.map((f) => f.status), [200])
})

t.test('reload between connect and the first request: docs say an open connection keeps its value', async (t) => {
  const h = await startHarness({ limits: { max_requests_per_connection: 2 } })
  t.teardown(() => h.close())
  const c = await rawConnect(h.port)
  t.teardown(() => c.destroy())
  await waitFor(() => h.openSockets().length === 1, 3000, 'accepted')
  h.tether.reload({ ...h.tether.config, limits: { ...h.tether.config.limits, max_requests_per_connection: 3 } })
  for (const p of ['/1', '/2']) { c.write(`GET ${p} HTTP/1.1\r\nHost: a\r\n\r\n`); await c.until(() => c.finals().length === Number(p.slice(1)), 3000) }
  t.equal(conn(c.finals()[1]!), 'close', 'opened before the reload: its 2nd answer closes (value 2)')
})
