// A stale keep-alive resend (see upstream-queue-stale-reload) on a pool a reload replaced, with
// every connection of the new pool busy, goes first in the new pool's queue, as it does in its
// own pool: it was handed over before the requests waiting there (review s64 r3: it went behind
// them, /w3 sent before it, and could wait a whole timeouts.queue for a 503).
import t from 'tap'
import type { ServerResponse } from 'node:http'
import { request, startUpstream, waitFor } from './fixtures/upstream.js'
import { tether, queued } from './fixtures/upstream-queue.js'

t.test('after a reload replaced the pool: the resend goes before the requests that waited there', async (t) => {
  let stale: (() => void) | null = null
  let held: ServerResponse | null = null
  let held2: ServerResponse | null = null
  const up = await startUpstream('a', (req, res) => {
    req.resume()
    if (req.url === '/stale' && stale === null) return void (stale = () => req.socket.destroy())
    if (req.url === '/w') return void (held = res)
    if (req.url === '/w2') return void (held2 = res)
    res.end('a\n')
  })
  t.teardown(() => up.close())
  const tt = await tether(t, [up], { limits: { max_upstream_connections: 2 }, timeouts: { queue: 5000 } })
  await Promise.all([request(`${tt.url}/warm1`), request(`${tt.url}/warm2`)])
  const x = request(`${tt.url}/stale`)
  await waitFor(() => stale !== null, 5000, '/stale at the upstream')
  const w = request(`${tt.url}/w`)
  await waitFor(() => held !== null, 5000, '/w held')
  const w2 = request(`${tt.url}/w2`)
  await waitFor(async () => await queued(tt, 'a') === 1, 5000, '/w2 waiting')
  const w3 = request(`${tt.url}/w3`)
  await waitFor(async () => await queued(tt, 'a') === 2, 5000, '/w2 /w3 waiting')
  tt.reload({ ...tt.config, upstreams: [{ id: 'a', url: up.url.replace('127.0.0.1', 'localhost'), weight: 1, max_connections: 1 }] })
  await waitFor(() => held2 !== null, 5000, '/w2 admitted to the new pool and held')
  stale!()
  await new Promise((r) => setImmediate(r))
  await waitFor(async () => await queued(tt, 'a') === 2 || up.seen.filter((s) => s.url === '/stale').length === 2, 5000, 'resend placed')
  held!.end('w\n'); held2!.end('w2\n')
  await Promise.all([x, w, w2, w3])
  const order = up.seen.map((s) => s.url).filter((u) => u !== '/warm1' && u !== '/warm2')
  t.same(order, ['/stale', '/w', '/w2', '/stale', '/w3'], `upstream order ${order.join(' ')}`)
})
