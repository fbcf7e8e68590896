// WebSocket upgrades through Tether: placed by the same affinity decision as plain requests,
// frames, subprotocols, extensions and close codes passed untouched, headers rewritten by the
// same rules, failures answered on the raw socket.
import t from 'tap'
import net from 'node:net'
import { WebSocket } from 'ws'
import { randomBytes } from 'node:crypto'
import { closed, obtainCookie, openWs, roundTrip, startEchoPod, startWsTether, type Pod, type WsTether } from './fixtures/ws-harness.js'
import { waitFor, within } from './fixtures/wait.js'
import { request, startUpstream } from './fixtures/upstream.js'
import { DEFAULTS } from '../src/config/schema.js'
import { closeFrame, FrameTracker } from '../src/proxy/websocket-frames.js'

const pods: Pod[] = await Promise.all(['app-0', 'app-1', 'app-2'].map((id) => startEchoPod(id)))
const px: WsTether = await startWsTether(pods.map((p) => ({ id: p.id, url: p.url })), { forwarding: { upstream_header: true } })
t.teardown(async () => {
  await px.close()
  await Promise.all(pods.map((p) => p.kill()))
})

/** One raw upgrade request; resolves with the whole answer text once the server closes. */
function rawUpgrade(port: number, head: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1', () => s.write(head))
    let out = ''
    s.on('data', (c) => { out += c })
    s.on('end', () => resolve(out))
    s.on('error', reject)
  })
}
const UPGRADE = (extra = ''): string =>
  'GET /chat HTTP/1.1\r\nHost: example.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n' +
  `Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\n${extra}\r\n`

t.test('200 concurrent clients, each pinned by its cookie, are echoed by the upstream the cookie names', async (t) => {
  const clients = await Promise.all(Array.from({ length: 200 }, async (_, i) => {
    const { cookie, id } = await obtainCookie(`${px.tether.url}/login`)
    const ws = await openWs(`${px.wsUrl}/ws/${i}`, [], { headers: { cookie } })
    return { ws, id, i }
  }))
  const ids = new Set(clients.map((c) => c.id))
  t.equal(ids.size, 3, 'the 200 sessions are spread over all three upstreams')
  t.equal(px.upgrades.size, 200, 'all 200 tunnels are open')
  let mismatches = 0
  await Promise.all(clients.map(async ({ ws, id, i }) => {
    for (let n = 0; n < 3; n++) {
      const text = `hello ${i}.${n} ✓`
      const a = await roundTrip(ws, text)
      if (a.binary || a.data.toString() !== `${id}:${text}`) mismatches++
      const bin = randomBytes(1 + ((i * 7 + n) % 3000))
      const b = await roundTrip(ws, bin)
      if (!b.binary || !b.data.equals(Buffer.concat([Buffer.from(`${id}:`), bin]))) mismatches++
    }
  }))
  t.equal(mismatches, 0, 'every text and binary frame came back byte-exact from the cookie\'s upstream')
  for (const p of pods) t.equal(px.upgrades.countByUpstream(p.id), clients.filter((c) => c.id === p.id).length, `tunnels tracked per upstream (${p.id})`)
  await Promise.all(clients.map(({ ws }) => { const c = closed(ws); ws.close(1000); return c }))
  await waitFor(() => px.upgrades.size === 0, 5000, 'tunnels released') // polled: Upgrades announces no release
  t.equal(px.upgrades.size, 0, 'closed tunnels free their slots')
})

t.test('a large binary message (1 MiB) round-trips byte-exact', async (t) => {
  const { cookie, id } = await obtainCookie(`${px.tether.url}/`)
  const ws = await openWs(px.wsUrl, [], { headers: { cookie }, perMessageDeflate: false })
  const big = randomBytes(1 << 20)
  const r = await roundTrip(ws, big)
  t.ok(r.data.equals(Buffer.concat([Buffer.from(`${id}:`), big])))
  ws.close()
  await closed(ws)
})

t.test('the subprotocol negotiated with the upstream reaches the client', async (t) => {
  const ws = await openWs(px.wsUrl, ['chat.v2', 'chat.v1'])
  t.equal(ws.protocol, 'chat.v2')
  const info = JSON.parse((await roundTrip(ws, 'info')).data.toString()) as { protocol: string; headers: Record<string, string> }
  t.equal(info.protocol, 'chat.v2')
  t.equal(info.headers['sec-websocket-protocol'], 'chat.v2,chat.v1', 'the offer reached the upstream as sent')
  ws.close()
  await closed(ws)
})

t.test('permessage-deflate is negotiated end to end when both sides support it, and not when the client does not', async (t) => {
  const a = await openWs(px.wsUrl)
  t.match(a.extensions, /permessage-deflate/, 'negotiated')
  const text = 'compressible '.repeat(500)
  const ra = await roundTrip(a, text)
  t.equal(ra.data.toString(), `${JSON.parse((await roundTrip(a, 'info')).data.toString()).id}:${text}`)
  a.close()
  const b = await openWs(px.wsUrl, [], { perMessageDeflate: false })
  t.equal(b.extensions, '', 'no extension without the client offer')
  t.match((await roundTrip(b, 'x')).data.toString(), /^app-\d:x$/)
  b.close()
  await Promise.all([closed(a), closed(b)])
})

t.test('a close code sent by the upstream (4001) reaches the client, with its reason', async (t) => {
  const ws = await openWs(px.wsUrl)
  const c = closed(ws)
  ws.send('close:4001')
  t.same(await within(c, 2000, 'close'), { code: 4001, reason: 'bye' })
})

t.test('the handshake carries X-Forwarded-*, X-Tether-Epoch, keeps the Host, and drops the client\'s X-Tether-*', async (t) => {
  const { cookie } = await obtainCookie(`${px.tether.url}/`)
  const ws = await openWs(`${px.wsUrl}/room?x=1`, [], {
    headers: { cookie, 'x-forwarded-for': '198.51.100.7', 'x-tether-epoch': '99', 'x-tether-moved': 'evil', 'x-tether-upstream': 'app-9', 'x-request-id': 'req-42' },
  })
  const info = JSON.parse((await roundTrip(ws, 'info')).data.toString()) as { headers: Record<string, string> }
  const h = info.headers
  t.equal(h['x-forwarded-for'], '198.51.100.7, 127.0.0.1')
  t.equal(h['x-forwarded-proto'], 'http')
  t.equal(h['x-forwarded-host'], new URL(px.tether.url).host)
  t.equal(h['host'], new URL(px.tether.url).host, 'preserve_host: the client\'s Host')
  t.equal(h['x-tether-epoch'], '0', 'Tether\'s epoch, not the client\'s')
  t.notOk('x-tether-moved' in h)
  t.notOk('x-tether-upstream' in h)
  t.equal(h['x-request-id'], 'req-42', 'a well-formed client request id is kept')
  t.equal(h['upgrade'], 'websocket')
  t.match(h['connection'], /upgrade/i)
  t.ok(h['sec-websocket-key'])
  ws.close()
  await closed(ws)
})

t.test('the 101 carries the routing decision (X-Tether-Upstream) and a new user\'s cookie', async (t) => {
  const ws = new WebSocket(px.wsUrl)
  const upgraded = new Promise<import('node:http').IncomingMessage>((resolve) => ws.once('upgrade', resolve))
  const opened = new Promise((r) => ws.once('open', r))
  const res = await upgraded
  await opened
  t.match(res.headers['x-tether-upstream'], /^app-\d$/)
  t.match(String(res.headers['set-cookie']), /^tether=/)
  t.equal(res.headers['upgrade'], 'websocket')
  const info = JSON.parse((await roundTrip(ws, 'info')).data.toString()) as { id: string }
  t.equal(info.id, res.headers['x-tether-upstream'])
  t.match((JSON.parse((await roundTrip(ws, 'info')).data.toString()) as { headers: Record<string, string> }).headers['x-request-id'], /^[0-9a-f-]{36}$/, 'Tether made a request id')
  ws.close()
  await closed(ws)
})

t.test('an upstream that refuses the handshake: its answer is passed on, internal headers removed', async (t) => {
  const err = await openWs(`${px.wsUrl}/reject`).then(() => null, (e: { status: number; headers: Record<string, string>; body: string }) => e)
  t.equal(err?.status, 403)
  t.equal(err?.body, 'not you')
  t.notOk(err !== null && 'x-tether-secret' in err.headers)
})

t.test('a non-WebSocket Upgrade (h2c) is served as a plain request', async (t) => {
  const r = await request(`${px.tether.url}/plain`, { headers: { connection: 'Upgrade, HTTP2-Settings', upgrade: 'h2c', 'http2-settings': 'AAMAAABkAARAAAAAAAIAAAAA' } })
  t.equal(r.status, 200)
  t.match(JSON.parse(r.body), { url: '/plain' })
  // with a body, and a second request on the same connection
  const out = await rawUpgrade(px.tether.port,
    'POST /one HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\nContent-Length: 5\r\n\r\nhello' +
    'GET /two HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n')
  t.match(out, /^HTTP\/1\.1 200 OK\r\n[^]*"url":"\/one"[^]*HTTP\/1\.1 200 OK\r\n[^]*"url":"\/two"/, 'both answered in order')
  t.notMatch(out, /101|upgrade: h2c/i, 'not upgraded')
})

t.test('a WebSocket upgrade with another method than GET is a 400', async (t) => {
  const out = await rawUpgrade(px.tether.port, UPGRADE().replace('GET', 'POST'))
  t.match(out, /^HTTP\/1\.1 400 Bad Request\r\n/)
})

t.test('an upstream that is down: 502 Bad Gateway on the raw socket, no crash; with a retry the next upstream takes it', async (t) => {
  const dead = await startUpstream('dead')
  const url = dead.url
  await dead.close()
  const one = await startWsTether([{ id: 'dead', url }], {}, { retries: 0 })
  t.teardown(() => one.close())
  const out = await rawUpgrade(one.tether.port, UPGRADE())
  t.match(out, /^HTTP\/1\.1 502 Bad Gateway\r\n/)
  t.match(out, /upstream connection failed/)
  t.equal(one.tether.health.state('dead'), 'ejected', 'the refused connect fed passive health')
  const none = await rawUpgrade(one.tether.port, UPGRADE())
  t.match(none, /^HTTP\/1\.1 503 Service Unavailable\r\n/, 'then no upstream is left: 503')
  t.match(none, /retry-after: 1/)

  const two = await startWsTether([{ id: 'dead', url }, { id: 'app-0', url: pods[0]!.url }], {}, { retries: 1 })
  t.teardown(() => two.close())
  // every new session lands on app-0; one whose (random) hash prefers `dead` is retried once
  // on app-0 and ejects `dead`: keep opening sessions until that happened (each new session
  // prefers `dead` with probability 1/2, so 60 tries leave a 2^-60 chance of never seeing it)
  let answers = 0
  for (let i = 0; i < 60 && two.tether.health.state('dead') !== 'ejected'; i++) {
    const ws = await openWs(two.wsUrl)
    if ((await roundTrip(ws, 'x')).data.toString() === 'app-0:x') answers++
    ws.close()
    await closed(ws)
    t.equal(answers, i + 1, `session ${i + 1} was answered by app-0`)
  }
  t.equal(two.tether.health.state('dead'), 'ejected')
})

t.test("a new user's upgrade is placed by the client IP; a cookie user still by the cookie", async (t) => {
  // from one address every new session's upgrade lands on the same upstream (a cookie set on a
  // 101 is unreliable, so the IP is the stable key); the IP's hash order decides which
  const viaIp = await startWsTether(pods.map((p) => ({ id: p.id, url: p.url })), { affinity: { cookie: { ...DEFAULTS.affinity.cookie, secret: ['ws-placement-secret-0123456789'] } } })
  t.teardown(() => viaIp.close())
  const ids = new Set<string>()
  for (let i = 0; i < 5; i++) {
    const ws = await openWs(viaIp.wsUrl)
    ids.add((await roundTrip(ws, 'n')).data.toString().split(':')[0]!)
    ws.close()
    await closed(ws)
  }
  t.equal(ids.size, 1, 'five new sessions from one address, one upstream')
  const byIp = [...ids][0]!
  let cookie = ''
  for (let id = ''; id === '' || id === byIp;) ({ cookie, id } = await obtainCookie(`${viaIp.tether.url}/`))
  const ws = await openWs(viaIp.wsUrl, [], { headers: { cookie } })
  t.not((await roundTrip(ws, 'c')).data.toString().split(':')[0], byIp, 'the cookie decides')
  ws.close()
  await closed(ws)
})

t.test('FrameTracker follows frame heads split across chunks, and sees a close frame', async (t) => {
  const f = new FrameTracker()
  t.ok(f.atBoundary)
  const long = Buffer.concat([Buffer.from([0x82, 126, 0x01, 0x00]), Buffer.alloc(256, 7)])
  const frame64 = Buffer.concat([Buffer.from([0x82, 127, 0, 0, 0, 0, 0, 0, 0x01, 0x00]), Buffer.alloc(256, 7)])
  const all = Buffer.concat([Buffer.from([0x81, 2, 0x68, 0x69]), long, frame64, Buffer.from([0x89, 0x80, 1, 2, 3, 4])])
  for (let i = 0; i < all.length; i++) {
    f.push(all.subarray(i, i + 1))
    if (i === 0 || i === 5 || i === 100) t.notOk(f.atBoundary, `byte ${i}: inside a frame`)
  }
  t.ok(f.atBoundary, 'after the last frame')
  t.notOk(f.closeSeen)
  f.push(Buffer.concat([Buffer.from([0x01, 1, 0x61]), closeFrame(4001)]))
  t.ok(f.closeSeen, 'close frame seen between fragments')
  t.same([...closeFrame(1012)], [0x88, 0x02, 0x03, 0xf4])
})
