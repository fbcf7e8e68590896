// A client that leaves while its WebSocket handshake is in progress (the upstream holds its
// 101, or Tether still posts the user's state to a rehydration hook): Tether stops what it
// sent upstream, logs the request once as the client's abort, frees its connection slot and
// does not blame the upstream. And what a client sends before the 101 is not lost.
import t, { type Test } from 'tap'
import { EventEmitter } from 'node:events'
import http from 'node:http'
import net from 'node:net'
import { startTether, type Tether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { EARLY_BYTES_MAX } from '../src/proxy/upgrade-transport.js'
import { LogCapture } from './fixtures/log-capture.js'
import { startUpstream, testConfig } from './fixtures/upstream.js'
import { CookieJar } from './fixtures/users.js'
import { metric } from './fixtures/drill.js'
import { onEvent, waitFor, when, within } from './fixtures/wait.js'
import { frozenRedis } from './fixtures/redis-server.js'

const HANDSHAKE = 'GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n'
const SWITCH = 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n'

interface Held { readonly socket: net.Socket; got: Buffer; ended: boolean; closed: boolean }

/** A raw upstream that reads handshakes and holds them unanswered (the test answers, or its teardown closes them). */
async function holdingUpstream(t: Test): Promise<{ server: net.Server; held: Held[]; url: string }> {
  const held: Held[] = []
  const server = net.createServer((socket) => {
    const entry: Held = { socket, got: Buffer.alloc(0), ended: false, closed: false }
    held.push(entry)
    socket.on('error', () => undefined)
    socket.on('data', (c: Buffer) => { entry.got = Buffer.concat([entry.got, c]); server.emit('got') })
    socket.on('end', () => { entry.ended = true; server.emit('got') })
    socket.on('close', () => { entry.closed = true; server.emit('gone') })
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  t.teardown(() => { for (const h of held) h.socket.destroy(); server.close() })
  return { server, held, url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}` }
}
type Holding = Awaited<ReturnType<typeof holdingUpstream>>

/**
 * Two holding upstreams (a retry would have somewhere to go) behind a Tether logging to `logs`,
 * with `timeouts.response_headers` a minute (only what the client does can stop a handshake in
 * time), one WebSocket slot and passive health ejecting on one failure.
 */
async function twoHolding(t: Test): Promise<{ a: Holding; b: Holding; tether: Tether; logs: LogCapture; held: () => Held[] }> {
  const a = await holdingUpstream(t)
  const b = await holdingUpstream(t)
  const logs = new LogCapture()
  const tether = await startTether(testConfig([{ id: 'a', url: a.url }, { id: 'b', url: b.url }], {
    timeouts: { response_headers: 60_000 }, retries: { attempts: 2 }, websocket: { max_connections: 1 }, health: { passive: { consecutive_failures: 1 } },
  }), { logger: createLogger('info', logs) })
  t.teardown(() => tether.close(0))
  return { a, b, tether, logs, held: () => [...a.held, ...b.held] }
}

/** After a handshake the client ended: its slot freed, not in flight, not retried, the upstream `id` neither blamed nor warned of. */
async function leftNoTrace(t: Test, { tether, logs, held }: Awaited<ReturnType<typeof twoHolding>>, id: string): Promise<void> {
  await waitFor(() => tether.upgrades.size === 0, 2000, 'the slot to be released') // polled: Upgrades announces no release
  t.equal(await metric(tether, `tether_upstream_in_flight{upstream="${id}"}`), 0, 'not in flight')
  t.equal(held().length, 1, 'no retry: one handshake sent upstream')
  t.equal(tether.health.state(id), 'healthy', 'no passive-health strike (one failure would eject)')
  t.notOk(logs.records.some((r) => r['msg'] === 'upstream exchange failed'), 'no upstream failure warned')
}

function rawClient(port: number): net.Socket {
  const client = net.connect(port, '127.0.0.1')
  client.on('error', () => undefined)
  return client
}

for (const how of ['end', 'reset'] as const) {
  t.test(`a client that leaves (${how === 'end' ? 'FIN' : 'RST'}) while the upstream holds its 101: the handshake is stopped at once, logged client_abort, its slot freed, the upstream not blamed`, async (t) => {
    // only the client's leaving can stop the handshake in time
    const setup = await twoHolding(t)
    const { a, b, tether, logs, held } = setup
    const client = rawClient(tether.port)
    client.write(HANDSHAKE)
    const got = (): boolean => held()[0]?.got.includes('\r\n\r\n') === true
    await Promise.race([a, b].map((u) => when(onEvent(u.server, 'got'), got, 5000, 'the handshake upstream')))
    const up = held()[0]!
    const id = a.held.includes(up) ? 'a' : 'b'
    t.equal(tether.upgrades.size, 1)
    t.equal(await metric(tether, `tether_upstream_in_flight{upstream="${id}"}`), 1)
    if (how === 'end') client.end()
    else client.resetAndDestroy()
    await when(onEvent(id === 'a' ? a.server : b.server, 'gone'), () => up.closed, 3000, "the upstream's handshake request to be closed")
    await when(onEvent(logs, 'record'), () => logs.access().length === 1, 3000, 'the access line')
    t.match(logs.access()[0], { method: 'GET', path: '/ws', protocol: 'websocket', status: 0, upstream: id, retries: 0, outcome: 'client_abort' })
    // (after the access line, the request's end: a retry or a health report would come before it)
    await leftNoTrace(t, setup, id)
    // the slot (max_connections: 1) takes the next client
    const next = rawClient(tether.port)
    t.teardown(() => next.destroy())
    next.write(HANDSHAKE)
    await Promise.race([a, b].map((u) => when(onEvent(u.server, 'got'), () => held().length === 2, 5000, 'the next handshake upstream')))
  })
}

t.test('bytes a client sends right after its handshake, before the 101, reach the upstream first and in order, up to the bound Tether holds', async (t) => {
  const up = await holdingUpstream(t)
  const tether = await startTether(testConfig([{ id: 'a', url: up.url }]), { logger: createLogger('silent') })
  t.teardown(() => tether.close(0))
  const client = rawClient(tether.port)
  const early = Buffer.alloc(EARLY_BYTES_MAX - 'first|'.length) // all of the bound, in several reads
  for (let i = 0; i < early.length; i++) early[i] = i % 251
  client.write(Buffer.concat([Buffer.from(HANDSHAKE), Buffer.from('first|')])) // in the same packet as the head
  client.write(early)
  let answer = ''
  client.on('data', (c: Buffer) => (answer += c.toString('latin1')))
  await when(onEvent(up.server, 'got'), () => up.held[0]?.got.includes('\r\n\r\n') === true, 5000, 'the handshake upstream')
  const h = up.held[0]!
  const headEnd = h.got.indexOf('\r\n\r\n') + 4
  t.equal(h.got.length, headEnd, 'nothing but the handshake before the 101')
  h.socket.write(SWITCH)
  await waitFor(() => answer.startsWith('HTTP/1.1 101'), 5000, 'the 101')
  client.write('|last')
  const want = Buffer.concat([Buffer.from('first|'), early, Buffer.from('|last')])
  await when(onEvent(up.server, 'got'), () => h.got.length >= headEnd + want.length, 5000, 'the early bytes upstream')
  t.ok(h.got.subarray(headEnd).equals(want), 'every byte, in order, once')
  client.end()
})

t.test('a client that sends more than the bound before the 101 (RFC 6455 section 4.1: it must wait) and then leaves: its handshake is stopped at once and it is answered 400; no retry, the upstream not blamed, its slot freed', async (t) => {
  // only the overflow can stop the handshake in time (a paused client socket tells neither its
  // FIN nor its reset)
  const setup = await twoHolding(t)
  const { a, b, tether, logs, held } = setup
  const client = rawClient(tether.port)
  let answer = ''
  client.on('data', (c: Buffer) => (answer += c.toString('latin1')))
  const closed = new Promise((r) => client.once('close', r))
  client.write(HANDSHAKE)
  await Promise.race([a, b].map((u) => when(onEvent(u.server, 'got'), () => held()[0]?.got.includes('\r\n\r\n') === true, 5000, 'the handshake upstream')))
  const up = held()[0]!
  const id = a.held.includes(up) ? 'a' : 'b'
  client.end(Buffer.alloc(EARLY_BYTES_MAX * 3, 0x82)) // frames past the bound, then the client leaves (FIN)
  await when(onEvent(id === 'a' ? a.server : b.server, 'gone'), () => up.closed, 5000, "the upstream's handshake request to be closed")
  await when(onEvent(logs, 'record'), () => logs.access().length === 1, 5000, 'the access line')
  t.match(logs.access()[0], { method: 'GET', path: '/ws', protocol: 'websocket', status: 400, upstream: id, retries: 0, outcome: 'TETHER_BAD_REQUEST' })
  await within(closed, 5000, 'the client connection to close')
  t.match(answer, /^HTTP\/1\.1 400 Bad Request\r\n/, 'the client got the 400')
  t.equal(afterHead(up).length, 0, 'no early byte upstream')
  await leftNoTrace(t, setup, id)
})

/** What `h` got after the handshake's head. */
const afterHead = (h: Held): Buffer => h.got.subarray(h.got.indexOf('\r\n\r\n') + 4)

t.test('a handshake retried after its first upstream reset it: the bytes the client sent before the 101 reach the second upstream only, once, after its 101; a FIN after the 101 is passed on, no abort', async (t) => {
  const a = await holdingUpstream(t)
  const b = await holdingUpstream(t)
  const logs = new LogCapture()
  const tether = await startTether(testConfig([{ id: 'a', url: a.url }, { id: 'b', url: b.url }], { retries: { attempts: 2 } }), { logger: createLogger('info', logs) })
  t.teardown(() => tether.close(0))
  const held = (): Held[] => [...a.held, ...b.held]
  const onEither = (l: () => void): (() => void) => {
    const off = [onEvent(a.server, 'got')(l), onEvent(b.server, 'got')(l)]
    return () => off.forEach((f) => f())
  }
  const got = (n: number): Promise<void> => when(onEither, () => held()[n]?.got.includes('\r\n\r\n') === true, 5000, `handshake ${n + 1} upstream`)
  const client = rawClient(tether.port)
  let answer = ''
  client.on('data', (c: Buffer) => (answer += c.toString('latin1')))
  client.write(HANDSHAKE + 'one|') // `head`
  client.write('two|') // read by Tether during the first attempt
  await got(0)
  const first = held()[0]!
  first.socket.resetAndDestroy() // before any answer: the handshake goes to the other upstream
  await got(1)
  const second = held()[1]!
  t.equal(afterHead(second).length, 0, 'nothing but the handshake before the 101')
  second.socket.write(SWITCH)
  await waitFor(() => answer.startsWith('HTTP/1.1 101'), 5000, 'the 101')
  client.write('three')
  await when(onEvent(second.socket, 'data'), () => afterHead(second).length >= 'one|two|three'.length, 5000, 'the early bytes upstream')
  t.equal(afterHead(second).toString(), 'one|two|three', 'every byte, in order, once')
  t.equal(afterHead(first).length, 0, 'none to the upstream that reset')
  client.end() // a FIN in the tunnel: passed on, the tunnel is not aborted
  await when(onEither, () => second.ended, 3000, 'the FIN upstream')
  t.notOk(second.closed, 'the upstream side is not closed by Tether at the FIN')
  second.socket.end()
  await when(onEvent(logs, 'record'), () => logs.access().length === 1, 5000, 'the access line')
  t.match(logs.access()[0], { protocol: 'websocket', status: 101, retries: 1 })
})

t.test('an upstream that refuses the handshake (401) after the client sent bytes behind it: the client gets the 401 whole, the refusing upstream none of the bytes', async (t) => {
  const up = await holdingUpstream(t)
  const tether = await startTether(testConfig([{ id: 'a', url: up.url }]), { logger: createLogger('silent') })
  t.teardown(() => tether.close(0))
  const client = rawClient(tether.port)
  let answer = ''
  client.on('data', (c: Buffer) => (answer += c.toString('latin1')))
  client.write(HANDSHAKE)
  client.write(Buffer.alloc(EARLY_BYTES_MAX, 7)) // all Tether holds
  await when(onEvent(up.server, 'got'), () => up.held[0]?.got.includes('\r\n\r\n') === true, 5000, 'the handshake upstream')
  up.held[0]!.socket.end('HTTP/1.1 401 Unauthorized\r\nContent-Length: 5\r\n\r\nnope!')
  await within(new Promise((r) => client.once('close', r)), 5000, 'the client connection to close')
  t.match(answer, /^HTTP\/1\.1 401 Unauthorized\r\n[\s\S]*\r\n\r\nnope!$/, 'the 401, whole')
  t.equal(afterHead(up.held[0]!).length, 0, 'no early byte to the refusing upstream')
})

t.test('a client that sends frames and then FIN before the 101 has left: the handshake is stopped (as nginx does)', async (t) => {
  const up = await holdingUpstream(t)
  const logs = new LogCapture()
  const tether = await startTether(testConfig([{ id: 'a', url: up.url }], { timeouts: { response_headers: 60_000 } }), { logger: createLogger('info', logs) })
  t.teardown(() => tether.close(0))
  const client = rawClient(tether.port)
  client.write(HANDSHAKE)
  await when(onEvent(up.server, 'got'), () => up.held[0]?.got.includes('\r\n\r\n') === true, 5000, 'the handshake upstream')
  client.end(Buffer.from([0x81, 0x82, 1, 2, 3, 4, 0x69 ^ 1, 0x21 ^ 2])) // a masked text frame "hi", then FIN
  await when(onEvent(up.server, 'gone'), () => up.held[0]!.closed, 3000, "the upstream's handshake request to be closed")
  await within(new Promise((r) => client.once('close', r)), 3000, 'the client connection to close')
  await when(onEvent(logs, 'record'), () => logs.access().length === 1, 3000, 'the access line')
  t.match(logs.access()[0], { protocol: 'websocket', upstream: 'a', outcome: 'client_abort' })
})

/**
 * Three apps behind Tether with a rehydration hook that never answers, and a user whose
 * upstream went away: `handshake()` sends that user's upgrade, which moves and waits in the hook.
 */
async function movedUserInHook(t: Test, logs: LogCapture): Promise<{ tether: Awaited<ReturnType<typeof startTether>>; hooks: http.ServerResponse[]; handshakes: string[]; handshake(): Promise<net.Socket> }> {
  const hookPath = '/_tether/rehydrate'
  const hooks: http.ServerResponse[] = []
  const hooked = new EventEmitter()
  const handshakes: string[] = []
  const app = (id: string) => startUpstream(id, (req, res) => {
    if (req.url === hookPath) {
      hooks.push(res) // held: the hook never answers
      hooked.emit('hook')
      return
    }
    if (req.headers.upgrade !== undefined) handshakes.push(id)
    res.writeHead(200, { 'x-tether-state': 'n' }).end(id)
  })
  const apps = [await app('a'), await app('b'), await app('c')]
  t.teardown(() => Promise.all(apps.map((a) => a.close())))
  for (const a of apps) a.server.on('upgrade', (_req, socket: net.Socket) => { handshakes.push('upgrade'); socket.destroy() })
  const tether = await startTether(testConfig(apps, {
    state: { rehydrate: 'hook', hook_path: hookPath }, timeouts: { response_headers: 60_000 }, retries: { attempts: 2 },
  }), { logger: createLogger('info', logs) })
  t.teardown(() => tether.close(0))
  // the user's upstream, and a checkpoint there
  const jar = new CookieJar()
  jar.cookies.set('user', 'u1')
  const home = await new Promise<string>((resolve, reject) => {
    http.get(tether.url, { agent: false, headers: { cookie: jar.header()! } }, (res) => {
      jar.apply(res.headers['set-cookie'])
      let s = ''
      res.on('data', (c) => (s += c))
      res.on('end', () => resolve(s))
    }).on('error', reject)
  })
  await apps.find((a) => a.id === home)!.close() // the user's upstream goes away: the next request moves
  const handshake = async (): Promise<net.Socket> => {
    const client = rawClient(tether.port)
    client.write(HANDSHAKE.replace('Host: a\r\n', `Host: a\r\nCookie: ${jar.header()!}\r\n`))
    await when(onEvent(hooked, 'hook'), () => hooks.length === 1, 5000, 'the state posted to the hook')
    return client
  }
  return { tether, hooks, handshakes, handshake }
}

t.test("a moved user's client that leaves while Tether posts its state to the rehydration hook: the hook is stopped, no handshake is sent, nothing retried", async (t) => {
  const logs = new LogCapture()
  const { tether, hooks, handshakes, handshake } = await movedUserInHook(t, logs)
  const before = logs.access().length
  const client = await handshake()
  const hook = hooks[0]!
  client.resetAndDestroy()
  await waitFor(() => hook.destroyed, 3000, 'the hook request to be stopped') // polled: the upstream's socket closes under it
  await when(onEvent(logs, 'record'), () => logs.access().length === before + 1, 3000, 'the access line')
  t.match(logs.access()[before], { protocol: 'websocket', outcome: 'client_abort', status: 0 })
  t.same(handshakes, [], 'no handshake reached any upstream')
  t.equal(hooks.length, 1, 'no other upstream tried')
  await waitFor(() => tether.upgrades.size === 0, 2000, 'the slot to be released')
})

t.test("a stop's grace period that ends while a moved user's handshake waits in the hook: logged TETHER_SHUTTING_DOWN, not the client's abort", async (t) => {
  const logs = new LogCapture()
  const { tether, handshakes, handshake } = await movedUserInHook(t, logs)
  const before = logs.access().length
  const client = await handshake()
  t.teardown(() => client.destroy())
  await tether.close(100) // the hook holds the handshake past the grace period: Tether closes the connection
  await when(onEvent(logs, 'record'), () => logs.access().length === before + 1, 3000, 'the access line')
  t.match(logs.access()[before], { protocol: 'websocket', status: 0, outcome: 'TETHER_SHUTTING_DOWN' })
  t.same(handshakes, [], 'no handshake reached any upstream')
  t.notOk(logs.records.some((r) => r['msg'] === 'rehydration hook did not accept the state'), 'the hook stopped by the stop is no refusal of the state')
})

t.test('a client that leaves (FIN) while its path waits for a frozen Redis, before its handshake is sent: nothing goes upstream, logged client_abort, and no tunnel stays counted on the upstream', async (t) => {
  const { redis, freeze } = await frozenRedis(t)
  const up = await holdingUpstream(t)
  const logs = new LogCapture()
  const tether = await startTether(testConfig([{ id: 'a', url: up.url }], {
    affinity: { key: 'header', header: { name: 'X-Tenant' }, shared: 'redis' }, state: { store: 'redis', timeout: 300, redis: { url: redis.url } },
  }), { logger: createLogger('info', logs) })
  t.teardown(() => tether.close(0))
  freeze()
  const handed = new Promise<void>((resolve) => tether.listener.server.once('upgrade', () => resolve()))
  const client = rawClient(tether.port)
  client.write(HANDSHAKE.replace('Host: a\r\n', 'Host: a\r\nX-Tenant: u1\r\n'))
  await within(handed, 5000, 'the upgrade handed to Tether') // its path now waits for the shared table (Redis frozen)
  client.end()
  await when(onEvent(logs, 'record'), () => logs.access().length === 1, 5000, 'the access line')
  t.match(logs.access()[0], { protocol: 'websocket', status: 0, outcome: 'client_abort' })
  t.equal(up.held.length, 0, 'no handshake sent upstream')
  await waitFor(() => tether.upgrades.size === 0, 2000, 'the slot to be released')
  t.equal(tether.upgrades.countByUpstream('a'), 0, 'no tunnel left counted on the upstream (admin API, drain_timeout closing)')
})

t.test("a client that sends more than the bound while its path waits for a frozen Redis, and a stop begins meanwhile: it is answered 400 once, logged 400 (not the stop's answer on top, which destroyed the connection draining the 400), nothing goes upstream", async (t) => {
  const { redis, freeze, thaw } = await frozenRedis(t)
  const up = await holdingUpstream(t)
  const logs = new LogCapture()
  // state.timeout a minute: the lookup ends when the test thaws Redis, not on its own
  const tether = await startTether(testConfig([{ id: 'a', url: up.url }], {
    affinity: { key: 'header', header: { name: 'X-Tenant' }, shared: 'redis' }, state: { store: 'redis', timeout: 60_000, redis: { url: redis.url } },
  }), { logger: createLogger('info', logs) })
  t.teardown(() => tether.close(0))
  freeze()
  const handed = new Promise<void>((resolve) => tether.listener.server.once('upgrade', () => resolve()))
  const client = rawClient(tether.port)
  let answer = ''
  client.on('data', (c: Buffer) => (answer += c.toString('latin1')))
  const closed = new Promise((r) => client.once('close', r))
  client.write(HANDSHAKE.replace('Host: a\r\n', 'Host: a\r\nX-Tenant: u1\r\n'))
  await within(handed, 5000, 'the upgrade handed to Tether') // its path now waits for the shared table (Redis frozen)
  client.write(Buffer.alloc(EARLY_BYTES_MAX * 3, 0x82)) // past the bound, the client keeps its side open
  await when(onEvent(client, 'data'), () => answer.includes('\r\n\r\n'), 5000, 'the 400')
  const stopping = tether.close(30_000) // a graceful stop begins while the path still waits
  thaw() // the lookup ends: the path goes on, the stop under way
  await when(onEvent(logs, 'record'), () => logs.access().length === 1, 10_000, 'the access line')
  t.match(logs.access()[0], { protocol: 'websocket', status: 400, outcome: 'TETHER_BAD_REQUEST' })
  t.match(answer, /^HTTP\/1\.1 400 Bad Request\r\n/, 'the client got the 400')
  t.notMatch(answer, /503/, 'and nothing else')
  client.end()
  await within(closed, 5000, 'the client connection to close')
  await within(stopping, 10_000, 'the stop')
  t.equal(up.held.length, 0, 'no handshake sent upstream')
})
