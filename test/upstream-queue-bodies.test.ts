// Request bodies of requests waiting in an upstream's queue (limits.max_upstream_connections),
// from review s62 r4: a body that fails while its request waits (the client leaves mid-upload,
// limits.max_body_bytes) ended the process (undici's pool holds no listener on it yet); POSTs
// that time out in the queue leave the client's and the upstream's connections usable.
import t from 'tap'
import http from 'node:http'
import type { ServerResponse } from 'node:http'
import { startTether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { request, startUpstream, testConfig, waitFor } from './fixtures/upstream.js'
import { LogCapture } from './fixtures/log-capture.js'

async function setup(t: { teardown(f: () => unknown): void }, queue = 200) {
  const held: ServerResponse[] = []
  let connections = 0
  const up = await startUpstream('a', (req, res) => { req.resume(); if (req.url === '/hold') return void held.push(res); req.on('end', () => res.end('a\n')) })
  up.server.on('connection', () => { connections++ })
  t.teardown(() => { for (const h of held) h.destroy(); return up.close() })
  const logs = new LogCapture()
  const tt = await startTether(testConfig([up], { limits: { max_upstream_connections: 1 }, timeouts: { queue } }), { logger: createLogger('info', logs) })
  t.teardown(() => tt.close(0))
  const holding = request(`${tt.url}/hold`)
  await waitFor(() => held.length === 1, 5000, 'held')
  const queued = async (): Promise<unknown> => (JSON.parse((await request(`${tt.adminUrl}/upstreams`)).body) as Record<string, unknown>[])[0]!.queued
  return { up, tt, held, holding, queued, logs, conns: () => connections }
}

t.test('a POST whose client leaves mid-body while queued: the connection it is given survives', async (t) => {
  const s = await setup(t, 5000)
  const up = http.request(`${s.tt.url}/upload`, { method: 'POST', agent: false, headers: { 'content-length': '100' } })
  up.on('error', () => undefined)
  up.write('0123456789')
  await waitFor(async () => await s.queued() === 1, 5000, '/upload waiting')
  up.destroy()
  await waitFor(async () => await s.queued() === 0, 5000, '/upload no longer counted')
  s.held.shift()!.end('a\n')
  await s.holding
  for (let i = 0; i < 3; i++) t.equal((await request(`${s.tt.url}/next${i}`)).status, 200)
  t.same(s.up.seen.map((r) => r.url), ['/hold', '/next0', '/next1', '/next2'])
  t.equal(s.conns(), 1, `upstream accepted ${s.conns()} connections`)
})

t.test('40 complete POSTs time out in the queue on one keep-alive client connection', async (t) => {
  const s = await setup(t, 50)
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
  t.teardown(() => agent.destroy())
  const sockets = new Set<unknown>()
  const post = (path: string) => new Promise<number>((resolve, reject) => {
    const r = http.request(`${s.tt.url}${path}`, { method: 'POST', agent, headers: { 'content-length': '1000' } }, (res) => { sockets.add(res.socket); res.resume(); res.on('end', () => resolve(res.statusCode!)) })
    r.on('error', reject)
    r.end(Buffer.alloc(1000, 120))
  })
  const statuses: number[] = []
  for (let i = 0; i < 40; i++) statuses.push(await post(`/p${i}`))
  t.same([...new Set(statuses)], [503])
  t.equal(sockets.size, 1, `client connections used: ${sockets.size}`)
  s.held.shift()!.end('a\n')
  await s.holding
  for (let i = 0; i < 3; i++) t.equal(await post(`/next${i}`), 200)
  t.equal(s.conns(), 1, `upstream accepted ${s.conns()} connections`)
  t.equal(sockets.size, 1, `client connections used: ${sockets.size}`)
  const bad = s.logs.lines.filter((l) => (l.rec.level as number) >= 40 && !String(l.rec.msg).startsWith('affinity.cookie.secret')).map((l) => l.rec.msg)
  t.same(bad, [], 'no warn/error lines')
})

t.test('a chunked POST over max_body_bytes while queued', async (t) => {
  const held: ServerResponse[] = []
  const up = await startUpstream('a', (req, res) => { req.resume(); if (req.url === '/hold') return void held.push(res); res.end('a\n') })
  t.teardown(() => { for (const h of held) h.destroy(); return up.close() })
  const tt = await startTether(testConfig([up], { limits: { max_upstream_connections: 1, max_body_bytes: 100 }, timeouts: { queue: 5000 } }), { logger: createLogger('silent') })
  t.teardown(() => tt.close(0))
  const holding = request(`${tt.url}/hold`); holding.catch(() => undefined)
  await waitFor(() => held.length === 1, 5000, 'held')
  const queued = async (): Promise<unknown> => (JSON.parse((await request(`${tt.adminUrl}/upstreams`)).body) as Record<string, unknown>[])[0]!.queued
  const c = http.request(`${tt.url}/big`, { method: 'POST', agent: false })
  c.on('error', () => undefined)
  c.write('x'.repeat(10))
  await waitFor(async () => await queued() === 1, 5000, 'queued')
  const answered = new Promise<number>((r) => c.on('response', (res) => { res.resume(); r(res.statusCode!) }))
  c.write('x'.repeat(1000))
  t.equal(await answered, 413)
})

