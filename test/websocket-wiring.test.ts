// WebSockets through the real composition root (startTether): the upgrade follows the user's
// cookie, the gauge counts it, and a graceful stop closes it with 1001 after the grace period.
import t from 'tap'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { WebSocket, WebSocketServer } from 'ws'
import { startTether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { request, testConfig } from './fixtures/upstream.js'

/** An upstream answering HTTP with its id and echoing WebSocket messages as "<id>:<msg>". */
async function wsUpstream(id: string): Promise<{ id: string; url: string; handshakes: http.IncomingHttpHeaders[]; close(): Promise<void> }> {
  const server = http.createServer((_req, res) => res.end(`${id}\n`))
  const wss = new WebSocketServer({ server })
  const handshakes: http.IncomingHttpHeaders[] = []
  wss.on('connection', (ws, req) => {
    handshakes.push(req.headers)
    ws.on('message', (m) => ws.send(`${id}:${String(m)}`))
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  return {
    id, handshakes, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () => new Promise<void>((r) => { for (const c of wss.clients) c.terminate(); server.closeAllConnections(); server.close(() => r()) }),
  }
}

t.test('an upgrade lands on the upstream its cookie names; graceful stop closes it with 1001', async (t) => {
  const ups = await Promise.all(['a', 'b', 'c'].map(wsUpstream))
  const tether = await startTether(testConfig(ups), { logger: createLogger('silent') })
  t.teardown(async () => { await tether.close(0); await Promise.all(ups.map((u) => u.close())) })

  for (let user = 0; user < 6; user++) {
    const first = await request(tether.url)
    const cookie = (first.headers['set-cookie'] ?? []).map((c) => c.split(';')[0]).join('; ')
    const pinned = first.body.trim()
    const ws = new WebSocket(tether.url.replace('http', 'ws'), { headers: { cookie } })
    const echo = await new Promise<string>((resolve, reject) => {
      ws.once('open', () => ws.send(`hello-${user}`))
      ws.once('message', (m) => resolve(String(m)))
      ws.once('error', reject)
    })
    t.equal(echo, `${pinned}:hello-${user}`, `user ${user}'s WebSocket reached ${pinned}, like their HTTP requests`)
    ws.close()
    await new Promise((r) => ws.once('close', r))
  }
  const h = ups.flatMap((u) => u.handshakes)
  t.ok(h.every((x) => x['x-tether-epoch'] === '0' && x['x-forwarded-for'] === '127.0.0.1'), 'handshakes carry X-Tether-Epoch and X-Forwarded-For')

  const ws = new WebSocket(tether.url.replace('http', 'ws'))
  await new Promise((r) => ws.once('open', r))
  t.match(await tether.metrics.render(), /tether_websocket_connections 1/)
  const code = new Promise<number>((r) => ws.once('close', (c) => r(c)))
  await tether.close(200)
  t.equal(await code, 1001, 'closed with 1001 (going away) after the grace period')
})

t.test("a new user's first request is a WebSocket upgrade: the session its 101 starts is logged and found by GET /sessions, and their next request is the same session", async (t) => {
  const ups = await Promise.all(['a', 'b'].map(wsUpstream))
  const { LogCapture } = await import('./fixtures/log-capture.js')
  const logs = new LogCapture()
  const tether = await startTether(testConfig(ups), { logger: createLogger('info', logs) })
  t.teardown(async () => { await tether.close(0); await Promise.all(ups.map((u) => u.close())) })
  const ws = new WebSocket(tether.url.replace('http', 'ws'))
  let setCookie: string[] = []
  ws.once('upgrade', (res) => { setCookie = res.headers['set-cookie'] ?? [] })
  await new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject) })
  ws.close()
  await new Promise((r) => ws.once('close', r))
  const cookie = setCookie.map((c) => c.split(';')[0]).join('; ')
  t.ok(cookie.startsWith('tether='), 'the 101 starts a session')
  const first = logs.access().find((r) => r['protocol'] === 'websocket')
  t.type(first?.['session'], 'string', 'the upgrade is logged with its session')
  const lookup = await request(`${tether.adminUrl}/sessions/${encodeURIComponent(String(first?.['session']))}`)
  t.equal(lookup.status, 200, 'GET /sessions finds it')
  const next = await request(tether.url, { headers: { cookie } })
  const line = logs.access().find((r) => r['protocol'] === 'http')
  t.equal(line?.['session'], first?.['session'], 'the next request is the same session')
  t.equal(next.body.trim(), JSON.parse(lookup.body).upstream, 'on the upstream the lookup names')
})
