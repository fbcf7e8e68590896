// The trust boundary end to end (issue 10 #1, #2, #13): a client cannot pass any spelling of a
// reserved header to an upstream, on plain requests and WebSocket handshakes; no upstream can
// pass the configured checkpoint header (or any X-Tether-* spelling) to a client; and
// X-Forwarded-Proto is believed only from a trusted proxy.
import t from 'tap'
import http from 'node:http'
import net from 'node:net'
import type { AddressInfo } from 'node:net'
import { createHash, randomBytes } from 'node:crypto'
import { request, startProxy } from './fixtures/upstream.js'

/** An upstream that records the headers of every request and handshake, and answers with reserved headers of its own. */
async function recordingUpstream(): Promise<{ url: string; seen: http.IncomingHttpHeaders[]; close(): Promise<void> }> {
  const seen: http.IncomingHttpHeaders[] = []
  const server = http.createServer((req, res) => {
    seen.push(req.headers)
    res.setHeader('x-app-state', 'the-whole-session')
    res.setHeader('x-app-state-version', '4')
    res.setHeader('x_tether_upstream', 'leak')
    res.setHeader('x-tether_epoch', 'leak')
    res.end('ok')
  })
  server.on('upgrade', (req, socket) => {
    seen.push(req.headers)
    // the accept of the handshake's key (RFC 6455 section 4.2.2): Tether passes on no 101 without it
    const accept = createHash('sha1').update(`${String(req.headers['sec-websocket-key'])}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64')
    socket.end(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n` +
      'X-App-State: the-whole-session\r\nX_Tether_Upstream: leak\r\n\r\n')
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    seen,
    close: () => new Promise<void>((r) => { server.closeAllConnections(); server.close(() => r()) }),
  }
}

const up = await recordingUpstream()
const FORGED = {
  'X_Tether_Rehydrate': 'eyJmb3JnZWQiOnRydWV9', 'X-Tether_State': 'forged', 'X_TETHER_PREVIOUS_UPSTREAM': 'app-9',
  'x-tether-rehydrate-status': 'delivered', 'X-App-State': 'forged', 'x_app_state_version': '99',
}
const leaks = (h: http.IncomingHttpHeaders): string[] =>
  Object.keys(h).filter((k) => { const f = k.replaceAll('_', '-'); return f.startsWith('x-tether-') && f !== 'x-tether-epoch' || f.startsWith('x-app-state') })

for (const allow of [false, true]) {
  t.test(`allow_underscores: ${allow}`, async (t) => {
    const px = await startProxy([{ id: 'app-0', url: up.url }], {
      state: { header: 'X-App-State' }, forwarding: { allow_underscores: allow }, affinity: { key: 'none' },
    })
    t.teardown(() => px.close(0))

    t.test('no spelling of a reserved header reaches the upstream on a plain request, and none comes back', async (t) => {
      up.seen.length = 0
      const r = await request(`${px.url}/`, { headers: FORGED })
      t.equal(r.status, 200)
      t.same(leaks(up.seen[0]!), [], 'the upstream saw none of the forged headers')
      t.equal(up.seen[0]!['x-tether-epoch'], '0', "Tether's own epoch header is there, once")
      t.same(Object.keys(r.headers).filter((k) => k.includes('tether') || k.includes('app-state') || k.includes('app_state')), [], 'the client saw no checkpoint and no reserved header')
    })

    t.test('the same on a WebSocket handshake and its 101', async (t) => {
      up.seen.length = 0
      const port = Number(new URL(px.url).port)
      const forged = Object.entries(FORGED).map(([k, v]) => `${k}: ${v}\r\n`).join('')
      const answer = await new Promise<string>((resolve, reject) => {
        const s = net.connect(port, '127.0.0.1', () => s.write(
          `GET /ws HTTP/1.1\r\nHost: a.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n` +
          `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\n${forged}\r\n`))
        let out = ''
        s.on('data', (c) => { out += c; if (out.includes('\r\n\r\n')) { s.destroy(); resolve(out) } })
        s.on('error', reject)
        s.on('close', () => resolve(out))
      })
      t.match(answer, /^HTTP\/1\.1 101 /)
      t.same(leaks(up.seen[0]!), [], 'the upstream saw none of the forged headers in the handshake')
      t.notMatch(answer.toLowerCase(), /x-app-state|x_tether|x-tether/, 'the 101 carried no reserved header to the client')
    })
  })
}

t.test('X-Forwarded-Proto https is believed from a trusted proxy only', async (t) => {
  const trusting = await startProxy([{ id: 'app-0', url: up.url }], { affinity: { key: 'none', client_ip: { trusted_proxies: ['127.0.0.0/8'] } } })
  const strict = await startProxy([{ id: 'app-0', url: up.url }], { affinity: { key: 'none' } })
  t.teardown(async () => { await trusting.close(0); await strict.close(0) })
  const headers = { 'x-forwarded-proto': 'https', 'x-forwarded-host': 'shop.example', 'x-forwarded-port': '443', forwarded: 'for=198.51.100.1;proto=https' }
  up.seen.length = 0
  await request(`${trusting.url}/`, { headers })
  t.equal(up.seen[0]!['x-forwarded-proto'], 'https')
  t.equal(up.seen[0]!['x-forwarded-host'], 'shop.example')
  t.equal(up.seen[0]!['x-forwarded-port'], '443')
  t.equal(up.seen[0]!['forwarded'], 'for=198.51.100.1;proto=https')
  up.seen.length = 0
  await request(`${strict.url}/`, { headers })
  t.equal(up.seen[0]!['x-forwarded-proto'], 'http')
  t.equal(up.seen[0]!['x-forwarded-port'], new URL(strict.url).port)
  t.equal(up.seen[0]!['forwarded'], undefined)
})

t.teardown(() => up.close())
