// Metrics that tell the truth, against a real Tether (real upstreams, real sockets, scraped on
// its admin port): each test names what its metric must count. No sleeps: every wait is on an
// event or a deadline-bound poll.
import t from 'tap'
import http from 'node:http'
import type { Socket } from 'node:net'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { WebSocketServer, WebSocket } from 'ws'
import { startTether, type Tether } from '../src/app.js'
import { loadConfigFile } from '../src/config/index.js'
import { createLogger } from '../src/observability/logger.js'
import { hashKey as hashOf } from '../src/placement/hash.js'
import { HEDGE_AFTER, HedgeTimers } from './fixtures/hedge-timers.js'
import { exchange } from './fixtures/raw-client.js'
import { FakeClock } from './fixtures/clock.js'
import { request, startUpstream, testConfig, waitFor } from './fixtures/upstream.js'
import { tempFile } from './fixtures/cli.js'
import { freePorts } from './fixtures/ports.js'
import { request as primaryRequest, startPrimary, workersYaml } from './fixtures/primary-process.js'

/** The samples of `name` in Prometheus text: labels and value per line. */
function samples(text: string, name: string): { labels: Record<string, string>; value: number }[] {
  const out: { labels: Record<string, string>; value: number }[] = []
  for (const line of text.split('\n')) {
    const m = /^([a-z_]+)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (m === null || m[1] !== name) continue
    out.push({ labels: Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1]!, x[2]!])), value: Number(m[3]) })
  }
  return out
}

const sum = (text: string, name: string): number => samples(text, name).reduce((n, s) => n + s.value, 0)
const one = (text: string, name: string, labels: Record<string, string> = {}): number | undefined =>
  samples(text, name).find((s) => Object.entries(labels).every(([k, v]) => s.labels[k] === v))?.value

const scrape = async (tether: Tether): Promise<string> => (await request(`${tether.adminUrl}/metrics`)).body

t.test('requests refused before a head (400, 431, 505, a refused upgrade) are in tether_client_requests_total as in tether_http_requests_total', async (t) => {
  const app = await startUpstream('a')
  const tether = await startTether(testConfig([app], { limits: { max_header_bytes: 2048 } }), { logger: createLogger('silent') })
  t.teardown(async () => { await tether.close(0); await app.close() })
  t.equal((await request(tether.url)).status, 200)
  t.equal((await exchange(tether.port, 'GARBAGE\r\n\r\n', { responses: 1 })).first, '400', 'a malformed head: 400')
  t.equal((await exchange(tether.port, `GET / HTTP/1.1\r\nHost: a\r\nX-Big: ${'b'.repeat(4096)}\r\n\r\n`, { responses: 1 })).first, '431', 'a head over the limit: 431')
  t.equal((await exchange(tether.port, 'GET / HTTP/2.0\r\nHost: a\r\n\r\n', { responses: 1 })).first, '505', 'HTTP/2.0 in an HTTP/1 request line: 505')
  t.equal((await exchange(tether.port, 'POST / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\nContent-Length: 0\r\n\r\n', { responses: 1 })).first, '400', 'an upgrade that is not a GET: 400')
  const text = await scrape(tether)
  t.equal(sum(text, 'tether_http_requests_total'), 5, 'five requests answered')
  t.equal(sum(text, 'tether_client_requests_total'), 5, 'and five finished, by protocol')
  t.equal(one(text, 'tether_client_requests_total', { protocol: 'http/1.1' }), 1, 'the one read whole and proxied')
  t.equal(one(text, 'tether_client_requests_total', { protocol: 'websocket' }), 1, 'the upgrade refused before an upstream')
  t.equal(one(text, 'tether_client_requests_total', { protocol: 'none' }), 3, 'the three whose protocol was not read, or not one Tether speaks')
  t.equal(one(text, 'tether_http_requests_total', { upstream: 'none', method: 'OTHER', status_class: '4xx' }), 2, 'the heads not read: no upstream, method OTHER, as answered')
})

t.test('tether_websocket_connections counts established tunnels, not handshakes waiting for their 101', async (t) => {
  const held: Socket[] = []
  const wss = new WebSocketServer({ noServer: true })
  const app = await startUpstream('a')
  app.server.on('upgrade', (req: http.IncomingMessage, socket: Socket, head: Buffer) => {
    if (req.url === '/hold') held.push(socket) // no answer: the handshake stays in progress
    else wss.handleUpgrade(req, socket, head, (ws) => ws.on('message', (m) => ws.send(m)))
  })
  const tether = await startTether(testConfig([app], { affinity: { key: 'none' } }), { logger: createLogger('silent') })
  t.teardown(async () => {
    for (const s of held) s.destroy()
    for (const c of wss.clients) c.terminate()
    wss.close()
    await tether.close(0)
    await app.close()
  })
  const waiting = http.request(`${tether.url}/hold`, { agent: false, headers: { connection: 'upgrade', upgrade: 'websocket', 'sec-websocket-version': '13', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==' } })
  waiting.on('error', () => undefined)
  waiting.end()
  t.teardown(() => waiting.destroy())
  await waitFor(() => held.length === 1, 10_000, 'the upstream holding the handshake')
  t.equal(one(await scrape(tether), 'tether_websocket_connections'), 0, 'a handshake not answered yet is no connection')
  const ws = new WebSocket(`${tether.url.replace('http', 'ws')}/echo`)
  t.teardown(() => ws.terminate())
  await new Promise<void>((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject) })
  t.equal(one(await scrape(tether), 'tether_websocket_connections'), 1, 'the established tunnel counts; the waiting handshake still does not')
  const closed = new Promise<void>((resolve) => ws.once('close', () => resolve()))
  ws.close()
  await closed
  await waitFor(async () => one(await scrape(tether), 'tether_websocket_connections') === 0, 10_000, 'the closed tunnel no longer counted')
})

t.test('the last reload\'s result and the time of the last good one are gauges, set at the start too', async (t) => {
  const app = await startUpstream('a')
  const dir = mkdtempSync(join(tmpdir(), 'tether-metrics-reload-'))
  const file = join(dir, 'proxy.yaml')
  const yaml = (retries: number): string => `listen: { host: 127.0.0.1, port: 0 }\nadmin: { listen: { host: 127.0.0.1, port: 0 } }\naffinity: { key: none }\nretries: { attempts: ${retries} }\nupstreams:\n  - { id: a, url: "${app.url}" }\n`
  writeFileSync(file, yaml(1))
  const clock = new FakeClock(1_764_000_000_000)
  const tether = await startTether(loadConfigFile(file, {}), { logger: createLogger('silent'), configPath: file, clock })
  t.teardown(async () => { await tether.close(0); await app.close() })
  let text = await scrape(tether)
  t.equal(one(text, 'tether_config_last_reload_successful'), 1, 'the config read at the start is a good one')
  t.equal(one(text, 'tether_config_last_reload_success_timestamp_seconds'), 1_764_000_000, 'at the start')
  clock.advance(60_000)
  writeFileSync(file, 'retries: [')
  t.not(tether.reloadFile(), undefined)
  text = await scrape(tether)
  t.equal(one(text, 'tether_config_reloads_total', { result: 'failed' }), 1)
  t.equal(one(text, 'tether_config_last_reload_successful'), 0, 'the last reload failed')
  t.equal(one(text, 'tether_config_last_reload_success_timestamp_seconds'), 1_764_000_000, 'the last good one is still the start')
  clock.advance(60_000)
  writeFileSync(file, yaml(2))
  tether.reloadFile()
  text = await scrape(tether)
  t.equal(one(text, 'tether_config_reloads_total', { result: 'ok' }), 1)
  t.equal(one(text, 'tether_config_last_reload_successful'), 1, 'the last reload was accepted')
  t.equal(one(text, 'tether_config_last_reload_success_timestamp_seconds'), 1_764_000_120, 'at its time')
})

/** A key the hash places on `id` (header affinity). */
function userOn(px: Tether, id: string): string {
  for (let i = 0; ; i++) if (px.router.placement.ids[px.router.placement.pick(hashOf(`u${i}`))] === id) return `u${i}`
}

t.test('hedges sent are counted, by whether the hedge answered (won) or the first attempt did (lost)', async (t) => {
  const waiting = new Map<string, http.ServerResponse[]>([['a', []], ['b', []]])
  const holding = (id: string) => (req: http.IncomingMessage, res: http.ServerResponse): void => {
    req.resume()
    if (String(req.headers['x-hold'] ?? '').split(',').includes(id)) waiting.get(id)!.push(res)
    else res.end(id)
  }
  const a = await startUpstream('a', holding('a'))
  const b = await startUpstream('b', holding('b'))
  const timers = new HedgeTimers()
  const px = await startTether(testConfig([a, b], {
    affinity: { key: 'header', header: { name: 'x-user' } },
    retries: { hedge_after: HEDGE_AFTER, attempts: 1 }, // a hedge uses one of retries.attempts
    health: { active: { enabled: false } },
  }), { logger: createLogger('silent'), timers })
  t.teardown(async () => { for (const list of waiting.values()) for (const r of list) r.destroy(); await px.close(0); await a.close(); await b.close() })
  const user = userOn(px, 'a')
  t.equal((await request(`${px.url}/`, { headers: { 'x-user': user } })).body, 'a', 'answered before hedge_after: not hedged')
  t.equal(sum(await scrape(px), 'tether_hedges_total'), 0, 'no hedge sent')

  // won: a holds the request, the hedge to b answers
  const won = request(`${px.url}/`, { headers: { 'x-user': user, 'x-hold': 'a' } })
  await waitFor(() => waiting.get('a')!.length === 1, 10_000, 'a holding the first attempt')
  await timers.hedge()
  t.equal((await won).body, 'b', 'the hedge answered')
  // counted once both attempts have ended (the stopped one's end may come after the client's)
  await waitFor(async () => sum(await scrape(px), 'tether_hedges_total') === 1, 10_000, 'the hedge counted')
  let text = await scrape(px)
  t.equal(one(text, 'tether_hedges_total', { result: 'won' }), 1, 'a hedge that answered')
  t.equal(one(text, 'tether_hedges_total', { result: 'lost' }) ?? 0, 0)

  // lost: the user moved to b with the hedge that answered; both hold, the hedge reaches a,
  // then b answers the first attempt
  const lost = request(`${px.url}/`, { headers: { 'x-user': user, 'x-hold': 'a,b' } })
  await waitFor(() => waiting.get('b')!.length === 1, 10_000, 'b (the user\'s upstream now) holding the first attempt')
  await timers.hedge()
  await waitFor(() => waiting.get('a')!.length === 2, 10_000, 'a holding the hedge')
  waiting.get('b')![0]!.end('b')
  t.equal((await lost).body, 'b', 'the first attempt answered')
  await waitFor(async () => sum(await scrape(px), 'tether_hedges_total') === 2, 10_000, 'the second hedge counted')
  text = await scrape(px)
  t.equal(one(text, 'tether_hedges_total', { result: 'won' }), 1)
  t.equal(one(text, 'tether_hedges_total', { result: 'lost' }), 1, 'a hedge that did not answer')
})

t.test('with workers, the last reload\'s gauges are the primary\'s (its view of the file), not a sum over workers', async (t) => {
  const app = await startUpstream('app-0')
  t.teardown(() => app.close())
  const [port, adminPort] = await freePorts(2)
  const admin = `http://127.0.0.1:${adminPort}`
  const good = workersYaml({ listen: port!, adminPort: adminPort!, workers: 2, upstreams: [{ id: 'app-0', url: app.url }] })
  const file = tempFile('metrics-truth-workers.yaml', good)
  const startedAt = Date.now() / 1000
  const { proc } = await startPrimary(t, file)
  const metrics = async (): Promise<string> => (await primaryRequest(`${admin}/metrics`, null)).body
  let text = await metrics()
  t.equal(one(text, 'tether_config_last_reload_successful'), 1, 'one: the file the primary started with was accepted')
  const at = one(text, 'tether_config_last_reload_success_timestamp_seconds')!
  t.ok(at >= Math.floor(startedAt) && at <= Date.now() / 1000, `the primary's start (${at})`)
  writeFileSync(file, 'workers: [')
  proc.kill('SIGHUP')
  await waitFor(async () => one(await metrics(), 'tether_config_reloads_total', { result: 'failed' }) === 1, 10_000, 'the refused reload counted')
  text = await metrics()
  t.equal(one(text, 'tether_config_last_reload_successful'), 0, 'the primary refused the last reload')
  t.equal(one(text, 'tether_config_last_reload_success_timestamp_seconds'), at, 'the last good one is still the start')
  const before = Date.now() / 1000
  writeFileSync(file, good.replace('log: { level: info, access: false }', 'log: { level: info, access: true }'))
  proc.kill('SIGHUP')
  await waitFor(async () => one(await metrics(), 'tether_config_reloads_total', { result: 'ok' }) === 1, 10_000, 'the accepted reload counted')
  text = await metrics()
  t.equal(one(text, 'tether_config_last_reload_successful'), 1, 'the primary accepted the last reload')
  const after = one(text, 'tether_config_last_reload_success_timestamp_seconds')!
  t.ok(after >= Math.floor(before) && after <= Date.now() / 1000, `its time (${after})`)
})
