// A request waiting in its upstream's queue (limits.max_upstream_connections busy) is silent
// on its client connection; the client idle bound (max(body_idle, response_headers) + 1 s) cut
// that connection under it, so the client got a closed connection instead of the queue's 503
// (with Retry-After) at timeouts.queue (review s64 r2; also before the queue moved into Tether).
// With an upstream bound, the idle bound counts timeouts.queue on top of response_headers. The
// one connection is kept busy by an answer the upstream streams a chunk every 200 ms (inside
// body_idle). Without the fix: "socket hang up" after 2 s, before the queue's 3 s. The bound
// follows a reload that adds the first upstream bound too (review s64 r3: it was read at start).
import t from 'tap'
import { request, startUpstream, waitFor } from './fixtures/upstream.js'
import { tether, queued } from './fixtures/upstream-queue.js'

t.test('timeouts.queue 3s, response_headers and body_idle 1s: the waiting request gets the queue\'s 503, not a cut connection', async (t) => {
  const streams = new Set<NodeJS.Timeout>()
  const up = await startUpstream('a', (req, res) => {
    req.resume()
    if (req.url !== '/stream') return void res.end('ok')
    res.writeHead(200)
    const chunk = setInterval(() => res.write('.'), 200) // the upstream's own pace
    streams.add(chunk)
    res.on('close', () => clearInterval(chunk))
  })
  t.teardown(() => { for (const s of streams) clearInterval(s); return up.close() })
  const tt = await tether(t, [up], { limits: { max_upstream_connections: 1 }, timeouts: { queue: 3000, response_headers: 1000, body_idle: 1000 } })
  const streaming = request(`${tt.url}/stream`)
  streaming.catch(() => undefined)
  await waitFor(() => streams.size === 1, 5000, '/stream at the upstream')
  const next = request(`${tt.url}/next`).then((r) => ({ status: r.status, retry: r.headers['retry-after'] }), (e: Error) => ({ status: 0, retry: e.message }))
  await waitFor(async () => await queued(tt, 'a') === 1, 5000, '/next waiting')
  t.same(await next, { status: 503, retry: '1' }, 'the queue\'s 503 with Retry-After: 1')
  for (const s of streams) clearInterval(s)
})

t.test('no bound at start, reload adds max_connections 1: the waiting request gets the queue\'s 503', async (t) => {
  const streams = new Set<NodeJS.Timeout>()
  const up = await startUpstream('a', (req, res) => {
    req.resume()
    if (req.url !== '/stream') return void res.end('ok')
    res.writeHead(200)
    const chunk = setInterval(() => res.write('.'), 200)
    streams.add(chunk)
    res.on('close', () => clearInterval(chunk))
  })
  t.teardown(() => { for (const s of streams) clearInterval(s); return up.close() })
  const tt = await tether(t, [up], { timeouts: { queue: 3000, response_headers: 1000, body_idle: 1000 } })
  tt.reload({ ...tt.config, upstreams: tt.config.upstreams.map((u) => ({ ...u, max_connections: 1 })) })
  const streaming = request(`${tt.url}/stream`)
  streaming.catch(() => undefined)
  await waitFor(() => streams.size === 1, 5000, '/stream at the upstream')
  const next = request(`${tt.url}/next`).then((r) => ({ status: r.status, retry: r.headers['retry-after'] }), (e: Error) => ({ status: 0, retry: e.message }))
  await waitFor(async () => await queued(tt, 'a') === 1, 5000, '/next waiting')
  t.same(await next, { status: 503, retry: '1' }, 'the queue\'s 503 with Retry-After: 1')
  for (const s of streams) clearInterval(s)
})
